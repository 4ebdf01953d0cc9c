/* Forwarding a request about another host's sandbox to that host (libcurl). */
#include "api/forward.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cluster.h"
#include "api/errors.h"
#include "api/routes.h"
#include "util/log.h"

#define ANSWER_MAX (16u << 20) /* an answer larger than this is not a sandbox's JSON */

struct answer {
        char *buf;
        size_t len;
        bool too_big;
};

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
        struct answer *a = ctx;
        size_t add = size * n;
        if (a->len + add > ANSWER_MAX) {
                a->too_big = true;
                return 0;
        }
        char *b = realloc(a->buf, a->len + add + 1);
        if (!b)
                return 0;
        memcpy(b + a->len, p, add);
        a->buf = b;
        a->len += add;
        b[a->len] = '\0';
        return add;
}

void api_forward_path(const struct api_call *call, const char *query, char *out, size_t size)
{
        const char *pattern = api_route_info(call->route)->pattern;
        const char *at = strstr(pattern, "{ref}");
        if (!at)
                snprintf(out, size, "%s", pattern);
        else
                snprintf(out, size, "%.*s%s%s", (int)(at - pattern), pattern, call->ref, at + 5);
        if (query && *query) {
                size_t n = strlen(out);
                snprintf(out + n, size - n, "?%s", query);
        }
}

/* Sends the request; returns the HTTP status, or 0 with why in err. */
static long send_to(const char *url, const char *method, const struct api_call *call,
                    const char *token, const char *from, struct answer *a, char *err)
{
        CURL *h = curl_easy_init();
        if (!h) {
                snprintf(err, CURL_ERROR_SIZE, "libcurl: out of memory");
                return 0;
        }
        char auth[128], fwd[128];
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        snprintf(fwd, sizeof(fwd), API_FORWARDED_HEADER ": %s", from);
        struct curl_slist *hdr = curl_slist_append(NULL, auth);
        hdr = curl_slist_append(hdr, fwd);
        if (call->body_len)
                hdr = curl_slist_append(hdr, "Content-Type: application/json");
        err[0] = '\0';
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (strcmp(method, "GET") != 0) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, call->body_len ? call->body : "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)call->body_len);
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 900L); /* a pause or resume may take minutes */
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        long status = 0;
        CURLcode rc = curl_easy_perform(h);
        if (rc == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        else if (!err[0])
                snprintf(err, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
        curl_slist_free_all(hdr);
        curl_easy_cleanup(h);
        return status;
}

void api_forward_relay(struct api_reply *rep, long status, const char *buf, size_t len,
                       const char *owner)
{
        json_t *j = len ? json_loadb(buf, len, 0, NULL) : NULL;
        if (len && !j) {
                api_reply_error(rep, (struct api_error){502, "upstream_error"},
                                "host %s answered %ld with a body that is not JSON", owner, status);
                return;
        }
        json_t *e = j ? json_object_get(json_object_get(j, "error"), "message") : NULL;
        if (e)
                snprintf(rep->message, sizeof(rep->message), "(from host %s) %s", owner,
                         json_string_value(e));
        rep->code = status >= 400 ? "forwarded" : NULL;
        api_reply_json(rep, (unsigned)status, j);
}

int api_forward_owner(struct api_server *srv, const struct api_call *call, char host[64],
                      char endpoint[256], struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_cluster *c = __atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE);
        if (!c || !call->ref[0] ||
            (call->header && call->header(call->query_ctx, API_FORWARDED_HEADER)))
                return 0; /* single host, or already forwarded once: the local answer */
        bool alive = false;
        int r = api_cluster_owner(c, call->ref, host, endpoint, &alive, &d);
        if (r <= 0) {
                if (r < 0)
                        api_reply_errno(rep, r, &d);
                return r < 0 ? -1 : 0;
        }
        if (!alive) {
                api_reply_error(rep, api_error_from_errno(-EBUSY, API_SUBJECT_REF),
                                "sandbox %s belongs to host %s, which is lost", call->ref, host);
                return -1;
        }
        if (!srv->forward) {
                api_reply_error(rep, api_error_from_errno(-EBUSY, API_SUBJECT_REF),
                                "sandbox %s belongs to host %s (%s); this host forwards only "
                                "with --cluster-token", call->ref, host, endpoint);
                return -1;
        }
        return 1;
}

bool api_forward(struct api_server *srv, const struct api_call *call, const char *method,
                 const char *query, struct api_reply *rep)
{
        char owner[64], endpoint[256];
        int r = api_forward_owner(srv, call, owner, endpoint, rep);
        if (r > 0)
                api_forward_to(srv, call, method, query, owner, endpoint, rep);
        return r != 0;
}

long api_forward_to(struct api_server *srv, const struct api_call *call, const char *method,
                    const char *query, const char *host, const char *endpoint,
                    struct api_reply *rep)
{
        char url[700], path[400], err[CURL_ERROR_SIZE];
        api_forward_path(call, query, path, sizeof(path));
        snprintf(url, sizeof(url), "http://%s%s", endpoint, path);
        struct answer a = {0};
        long status = send_to(url, method, call, srv->token, host, &a, err);
        if (status == 0)
                api_reply_error(rep, (struct api_error){a.too_big ? 502 : 503,
                                                        a.too_big ? "upstream_error" : "unavailable"},
                                "%s %s: host %s at %s: %s", method, path, host, endpoint,
                                a.too_big ? "answer too large" : err);
        else
                api_forward_relay(rep, status, a.buf, a.len, host);
        free(a.buf);
        log_debug("forwarded %s %s to host %s: %ld", method, path, host, status);
        return a.too_big ? 502 : status;
}
