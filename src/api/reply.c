/* Reply helpers: every error body goes through api_reply_error, so the shape
 * {"error":{"code","message"}} and the status table of errors.c cannot drift per route. */
#include "api/reply.h"
#include "api/json.h"
#include "api/stream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_reply_error(struct api_reply *rep, struct api_error e, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rep->message, sizeof(rep->message), fmt, ap);
        va_end(ap);
        json_decref(rep->json);
        free(rep->text);
        rep->text = NULL;
        rep->status = e.status;
        rep->code = e.code;
        rep->json = api_json_error(e.code, rep->message);
}

void api_reply_errno_as(struct api_reply *rep, enum api_subject subject, int err,
                        const struct vmsnap_diag *d)
{
        const char *msg = d && d->msg[0] ? d->msg : strerror(err < 0 ? -err : err);
        api_reply_error(rep, api_error_from_errno(err, subject), "%s", msg);
}

void api_reply_errno(struct api_reply *rep, int err, const struct vmsnap_diag *d)
{
        api_reply_errno_as(rep, API_SUBJECT_REF, err, d);
}

void api_reply_body_error(struct api_reply *rep, int err, const struct vmsnap_diag *d)
{
        const char *msg = d && d->msg[0] ? d->msg : strerror(err < 0 ? -err : err);
        api_reply_error(rep, api_error_from_body(err), "%s", msg);
}

void api_reply_json(struct api_reply *rep, unsigned status, json_t *j)
{
        if (!j && status != 204) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "out of memory");
                return;
        }
        json_decref(rep->json);
        rep->json = j;
        rep->status = status;
        rep->code = NULL;
        rep->message[0] = '\0';
}

void api_reply_clear(struct api_reply *rep)
{
        json_decref(rep->json);
        rep->json = NULL;
        free(rep->text);
        rep->text = NULL;
        api_stream_free(rep->stream);
        rep->stream = NULL;
}
