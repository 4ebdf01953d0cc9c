/* errno → HTTP status. The library's contract (include/vmsnap/sandbox.h, store.h) says what
 * each errno means; this table turns that meaning into the status a client can act on:
 * 4xx when the request can be fixed, 409 when the state of things is in the way, 5xx when
 * the host failed. Kept in one table so the API stays consistent across routes. */
#include "api/errors.h"

#include <errno.h>

static const struct {
        int err;
        struct api_error e;
} errno_table[] = {
        {-EINVAL, {400, "invalid_argument"}},
        {-ENAMETOOLONG, {400, "invalid_argument"}},
        {-ERANGE, {400, "invalid_argument"}},
        {-ENOENT, {404, "not_found"}},
        {-EEXIST, {409, "already_exists"}},
        {-EBUSY, {409, "invalid_state"}},      /* wrong state, operation in progress, in use */
        {-EMLINK, {409, "template_mismatch"}}, /* vcpus/memory differ from the template's */
        {-EADDRNOTAVAIL, {409, "pool_exhausted"}}, /* every address of --net-pool is held */
        {-ENOTUNIQ, {409, "ambiguous_ref"}},   /* an id prefix that matches several */
        {-EALREADY, {409, "invalid_state"}},
        {-EOPNOTSUPP, {501, "not_supported"}}, /* e.g. a VMM driver this host lacks */
        {-ENOSYS, {501, "not_supported"}},
        {-EAGAIN, {503, "unavailable"}},
        {-ENOMEM, {503, "insufficient_memory"}},
        {-ESHUTDOWN, {503, "shutting_down"}},
        {-ETIMEDOUT, {504, "timeout"}},
        {-ETIME, {504, "timeout"}},
        {-ENOSPC, {507, "insufficient_storage"}},
        {-EDQUOT, {507, "insufficient_storage"}},
        {-ENOTCONN, {409, "invalid_state"}},           /* no running VM to talk to */
        {-EPROTONOSUPPORT, {409, "incompatible_vmm"}}, /* saved by a VMM version that this
                                                         host's cannot load */
        {-EPROTO, {502, "guest_agent_error"}},         /* the guest agent answered nonsense */
        {-EBADMSG, {500, "corrupt_data"}},             /* a stored snapshot failed validation */
};

/* Where the subject of the request changes the meaning; checked before errno_table. */
static const struct {
        enum api_subject subject;
        int err;
        struct api_error e;
} subject_table[] = {
        {API_SUBJECT_NEW, -ENOENT, {503, "host_not_ready"}},      /* no guest image, no VMM */
        {API_SUBJECT_IMPORT, -EBADMSG, {400, "invalid_archive"}}, /* refused by import's checks */
        /* The remote store answered an error, nonsense, a corrupt or missing chunk, or not
         * at all (after its retries): the gateway's fault, with the remote's message. */
        {API_SUBJECT_REMOTE, -EIO, {502, "remote_error"}},
        {API_SUBJECT_REMOTE, -EACCES, {502, "remote_error"}},
        {API_SUBJECT_REMOTE, -EBADMSG, {502, "remote_error"}},
        {API_SUBJECT_REMOTE, -EFBIG, {502, "remote_error"}},
        {API_SUBJECT_REMOTE, -ETIMEDOUT, {502, "remote_error"}},
};

static const struct api_error problems[] = {
        [API_PROBLEM_MALFORMED_JSON] = {400, "malformed_json"},
        [API_PROBLEM_INVALID_FIELD] = {400, "invalid_field"},
        [API_PROBLEM_INVALID_QUERY] = {400, "invalid_query"},
        [API_PROBLEM_INVALID_PATH] = {400, "invalid_path"},
        [API_PROBLEM_UNAUTHORIZED] = {401, "unauthorized"},
        [API_PROBLEM_NO_ROUTE] = {404, "no_such_route"},
        [API_PROBLEM_METHOD] = {405, "method_not_allowed"},
        [API_PROBLEM_TOO_LARGE] = {413, "body_too_large"},
        [API_PROBLEM_MEDIA_TYPE] = {415, "unsupported_media_type"},
        [API_PROBLEM_SHUTTING_DOWN] = {503, "shutting_down"},
        [API_PROBLEM_INTERNAL] = {500, "internal"},
        [API_PROBLEM_NO_REMOTE] = {409, "no_remote"},
        [API_PROBLEM_NO_CAPACITY] = {507, "no_capacity"},
};

struct api_error api_error_from_errno(int err, enum api_subject subject)
{
        for (unsigned i = 0; i < sizeof(subject_table) / sizeof(subject_table[0]); i++)
                if (subject_table[i].subject == subject && subject_table[i].err == err)
                        return subject_table[i].e;
        for (unsigned i = 0; i < sizeof(errno_table) / sizeof(errno_table[0]); i++)
                if (errno_table[i].err == err)
                        return errno_table[i].e;
        return problems[API_PROBLEM_INTERNAL];
}

struct api_error api_error_from_body(int err)
{
        if (err == -EBADMSG)
                return problems[API_PROBLEM_MALFORMED_JSON];
        if (err == -EINVAL)
                return problems[API_PROBLEM_INVALID_FIELD];
        return api_error_from_errno(err, API_SUBJECT_REF);
}

struct api_error api_error_problem(enum api_problem p)
{
        if ((unsigned)p >= sizeof(problems) / sizeof(problems[0]))
                p = API_PROBLEM_INTERNAL;
        return problems[p];
}
