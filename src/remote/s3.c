/* A small S3 client over libcurl (see s3.h): SigV4 by libcurl, one multi handle, retries. */
#include "remote/s3.h"
#include "util/cleanup.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { REQ_WAITING, REQ_RUNNING, REQ_DONE };

struct s3 {
        struct vmsnap_remote_config c;
        char sigv4[96];
        char where[600];
        CURLM *multi;
};

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int s3_new(const struct vmsnap_remote_config *c, struct s3 **ret, struct vmsnap_diag *d)
{
        static bool global_done;
        if (!global_done) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return vmsnap_diag(d, -EIO, "libcurl initialization failed");
                global_done = true;
        }
        struct s3 *s = calloc(1, sizeof(*s));
        if (!s)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        s->c = *c;
        snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", c->region);
        snprintf(s->where, sizeof(s->where), "%s/%s", c->endpoint, c->bucket);
        s->multi = curl_multi_init();
        if (!s->multi) {
                s3_free(s);
                return vmsnap_diag(d, -ENOMEM, "libcurl: cannot make a multi handle");
        }
        curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)VMSNAP_REMOTE_PARALLEL);
        *ret = s;
        return 0;
}

void s3_free(struct s3 *s)
{
        if (!s)
                return;
        if (s->multi)
                curl_multi_cleanup(s->multi);
        vmsnap_remote_config_clear(&s->c);
        explicit_bzero(s, sizeof(*s));
        free(s);
}

const char *s3_where(const struct s3 *s)
{
        return s->where;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ctx)
{
        struct s3_req *q = ctx;
        size_t n = size * nmemb, max = q->max_response ? q->max_response : 64 * 1024;
        if (q->resp_len + n > max)
                return 0; /* CURLE_WRITE_ERROR: too large */
        if (q->resp_len + n + 1 > q->resp_cap) {
                size_t cap = MAX(q->resp_cap * 2, q->resp_len + n + 1);
                cap = MAX(cap, (size_t)16384);
                uint8_t *b = realloc(q->resp, cap);
                if (!b)
                        return 0;
                q->resp = b;
                q->resp_cap = cap;
        }
        memcpy(q->resp + q->resp_len, p, n);
        q->resp_len += n;
        q->resp[q->resp_len] = 0;
        return n;
}

/* Per-request private state that must live while the transfer runs. */
struct req_priv {
        struct curl_slist *headers;
        size_t sent;
};

static size_t on_read_body(char *buf, size_t size, size_t nmemb, void *ctx)
{
        struct s3_req *q = ctx;
        struct req_priv *p = q->priv;
        size_t n = MIN(size * nmemb, q->body_len - p->sent);
        memcpy(buf, (const uint8_t *)q->body + p->sent, n);
        p->sent += n;
        return n;
}

static int start_one(struct s3 *s, struct s3_req *q)
{
        char url[1400], h[128];
        if (snprintf(url, sizeof(url), "%s/%s/%s%s%s", s->c.endpoint, s->c.bucket, q->key,
                     q->query[0] ? "?" : "", q->query) >= (int)sizeof(url))
                return -ENAMETOOLONG;
        struct req_priv *p = calloc(1, sizeof(*p));
        CURL *e = curl_easy_init();
        if (!p || !e) {
                free(p);
                if (e)
                        curl_easy_cleanup(e);
                return -ENOMEM;
        }
        snprintf(h, sizeof(h), "x-amz-content-sha256: %s",
                 q->payload_sha256[0] ? q->payload_sha256 : "UNSIGNED-PAYLOAD");
        p->headers = curl_slist_append(NULL, h);
        q->priv = p;
        q->easy = e;
        q->resp_len = 0;
        q->status = 0;
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(e, CURLOPT_USERNAME, s->c.access_key);
        curl_easy_setopt(e, CURLOPT_PASSWORD, s->c.secret_key);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->headers);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
        curl_easy_setopt(e, CURLOPT_PRIVATE, q);
        if (strcmp(q->method, "HEAD") == 0) {
                curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        } else if (strcmp(q->method, "PUT") == 0) {
                curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read_body);
                curl_easy_setopt(e, CURLOPT_READDATA, q);
                curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body_len);
        } else if (strcmp(q->method, "GET") != 0) {
                curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method);
        }
        if (curl_multi_add_handle(s->multi, e) != CURLM_OK)
                return -EIO;
        q->state = REQ_RUNNING;
        q->attempts++;
        return 0;
}

static void release_one(struct s3 *s, struct s3_req *q)
{
        struct req_priv *p = q->priv;
        if (q->easy) {
                curl_multi_remove_handle(s->multi, q->easy);
                curl_easy_cleanup(q->easy);
        }
        if (p) {
                curl_slist_free_all(p->headers);
                free(p);
        }
        q->easy = NULL;
        q->priv = NULL;
}

static bool transient(CURLcode cc, long status)
{
        switch (cc) {
        case CURLE_OK:
                return status >= 500 || status == 429;
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_SSL_CONNECT_ERROR:
                return true;
        default:
                return false;
        }
}

/* Delay before attempt n+1: 0.2 s doubling, at most 3.2 s, +-25 % jitter. */
static double backoff(unsigned attempts)
{
        double base = 0.2 * (double)(1u << MIN(attempts - 1, 4u));
        return base * (0.75 + 0.5 * ((double)rand() / (double)RAND_MAX));
}

/* A finished transfer: done for good, or back to waiting for a retry. Returns 1 if retried. */
static int finish_one(struct s3 *s, struct s3_req *q, CURLcode cc)
{
        long status = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
        release_one(s, q);
        q->status = status;
        if (transient(cc, status) && q->attempts < S3_ATTEMPTS) {
                q->state = REQ_WAITING;
                q->not_before = now_s() + backoff(q->attempts);
                return 1;
        }
        q->state = REQ_DONE;
        q->err = 0;
        if (cc == CURLE_WRITE_ERROR) {
                q->err = -EFBIG;
                snprintf(q->errmsg, sizeof(q->errmsg), "answer larger than %zu bytes",
                         q->max_response);
        } else if (cc != CURLE_OK) {
                q->err = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
                snprintf(q->errmsg, sizeof(q->errmsg), "%s (after %u attempts)",
                         curl_easy_strerror(cc), q->attempts);
        }
        return 0;
}

int s3_run(struct s3 *s, struct s3_req *reqs, size_t n, unsigned parallel,
           uint64_t *ret_retries, struct vmsnap_diag *d)
{
        size_t done = 0, inflight = 0, first = 0;
        uint64_t retries = 0;
        for (size_t i = 0; i < n; i++) {
                reqs[i].state = REQ_WAITING;
                reqs[i].attempts = 0;
                reqs[i].not_before = 0;
                reqs[i].err = 0;
                reqs[i].errmsg[0] = 0;
        }
        while (done < n) {
                double t = now_s();
                while (first < n && reqs[first].state == REQ_DONE)
                        first++;
                for (size_t i = first; i < n && inflight < parallel; i++) {
                        if (reqs[i].state != REQ_WAITING || reqs[i].not_before > t)
                                continue;
                        int r = start_one(s, &reqs[i]);
                        if (r < 0) {
                                release_one(s, &reqs[i]);
                                reqs[i].state = REQ_DONE;
                                reqs[i].err = r;
                                snprintf(reqs[i].errmsg, sizeof(reqs[i].errmsg), "%s",
                                         strerror(-r));
                                done++;
                                continue;
                        }
                        inflight++;
                }
                int running = 0;
                if (curl_multi_perform(s->multi, &running) != CURLM_OK)
                        return vmsnap_diag(d, -EIO, "%s: libcurl multi failed", s->where);
                CURLMsg *msg;
                int left;
                while ((msg = curl_multi_info_read(s->multi, &left))) {
                        if (msg->msg != CURLMSG_DONE)
                                continue;
                        struct s3_req *q = NULL;
                        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&q);
                        CURLcode cc = msg->data.result;
                        inflight--;
                        if (finish_one(s, q, cc))
                                retries++;
                        else
                                done++;
                }
                if (done < n)
                        curl_multi_poll(s->multi, NULL, 0, inflight ? 100 : 20, NULL);
        }
        if (ret_retries)
                *ret_retries += retries;
        return 0;
}

void s3_req_reset(struct s3_req *reqs, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(reqs[i].resp);
                reqs[i].resp = NULL;
                reqs[i].resp_len = reqs[i].resp_cap = 0;
        }
}

/* The <Code> of an S3 error answer, or "". */
static void error_code(const struct s3_req *q, char out[64])
{
        out[0] = 0;
        if (!q->resp)
                return;
        const char *a = strstr((const char *)q->resp, "<Code>");
        const char *b = a ? strstr(a, "</Code>") : NULL;
        if (!a || !b || b - a - 6 >= 64 || b - a - 6 <= 0)
                return;
        size_t n = (size_t)(b - a - 6);
        for (size_t i = 0; i < n; i++) {
                char ch = a[6 + i];
                out[i] = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ? ch : '?';
        }
        out[n] = 0;
}

int s3_req_diag(const struct s3 *s, const struct s3_req *q, struct vmsnap_diag *d)
{
        if (q->err)
                return vmsnap_diag(d, q->err, "%s/%s: %s %s", s->where, q->key, q->method,
                                   q->errmsg);
        char code[64];
        error_code(q, code);
        int err = q->status == 404 ? -ENOENT : q->status == 403 ? -EACCES : -EIO;
        return vmsnap_diag(d, err, "%s/%s: %s answered HTTP %ld%s%s%s", s->where, q->key,
                           q->method, q->status, code[0] ? " (" : "", code, code[0] ? ")" : "");
}

/* Text between <tag> and </tag> after *pos (NUL-terminated copy into out); advances *pos. */
static bool xml_take(const char **pos, const char *end, const char *tag, char *out, size_t size)
{
        char open[64], close[64];
        snprintf(open, sizeof(open), "<%s>", tag);
        snprintf(close, sizeof(close), "</%s>", tag);
        const char *a = strstr(*pos, open);
        if (!a || a >= end)
                return false;
        a += strlen(open);
        const char *b = strstr(a, close);
        if (!b || b > end || (size_t)(b - a) >= size)
                return false;
        memcpy(out, a, (size_t)(b - a));
        out[b - a] = 0;
        *pos = b + strlen(close);
        return true;
}

/* "2026-12-05T03:07:12.441Z" -> unix seconds; 0 when unreadable. */
static int64_t parse_modified(const char *t)
{
        struct tm tm = {0};
        if (sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
                return 0;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        return (int64_t)timegm(&tm);
}

/* Appends the <Contents> of one listing page to *arr; sets token ("" when the last page). */
static int parse_page(const char *xml, struct s3_object **arr, size_t *n, size_t *cap,
                      char *token, size_t token_size)
{
        const char *pos = xml;
        char trunc[16] = "";
        const char *tp = xml;
        xml_take(&tp, xml + strlen(xml), "IsTruncated", trunc, sizeof(trunc));
        token[0] = 0;
        if (strcmp(trunc, "true") == 0) {
                tp = xml;
                if (!xml_take(&tp, xml + strlen(xml), "NextContinuationToken", token, token_size))
                        return -EBADMSG;
        }
        const char *c;
        while ((c = strstr(pos, "<Contents>"))) {
                const char *end = strstr(c, "</Contents>");
                if (!end)
                        return -EBADMSG;
                struct s3_object o = {0};
                char size[32] = "", mod[64] = "";
                const char *p = c;
                if (!xml_take(&p, end, "Key", o.key, sizeof(o.key))) {
                        pos = end; /* a key too long for us is none of ours */
                        continue;
                }
                p = c;
                xml_take(&p, end, "Size", size, sizeof(size));
                p = c;
                xml_take(&p, end, "LastModified", mod, sizeof(mod));
                o.size = strtoull(size, NULL, 10);
                o.modified = parse_modified(mod);
                if (*n == *cap) {
                        size_t nc = *cap ? *cap * 2 : 256;
                        struct s3_object *a = realloc(*arr, nc * sizeof(*a));
                        if (!a)
                                return -ENOMEM;
                        *arr = a;
                        *cap = nc;
                }
                (*arr)[(*n)++] = o;
                pos = end;
        }
        return 0;
}

int s3_list(struct s3 *s, const char *prefix, struct s3_object **ret, size_t *ret_n,
            uint64_t *retries, struct vmsnap_diag *d)
{
        _cleanup_free_ struct s3_object *arr = NULL;
        size_t n = 0, cap = 0;
        char token[1024] = "";
        CURL *esc = curl_easy_init();
        if (!esc)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = 0;
        for (unsigned page = 0; r == 0; page++) {
                struct s3_req q = {.method = "GET", .max_response = 16u << 20};
                char *p = curl_easy_escape(esc, prefix, 0);
                char *t = token[0] ? curl_easy_escape(esc, token, 0) : NULL;
                /* query parameters in canonical (sorted) order */
                if (t)
                        snprintf(q.query, sizeof(q.query),
                                 "continuation-token=%s&list-type=2&prefix=%s", t, p ? p : "");
                else
                        snprintf(q.query, sizeof(q.query), "list-type=2&prefix=%s", p ? p : "");
                curl_free(p);
                curl_free(t);
                r = s3_run(s, &q, 1, 1, retries, d);
                if (r == 0 && (q.err || q.status != 200))
                        r = s3_req_diag(s, &q, d);
                if (r == 0) {
                        r = parse_page(q.resp ? (const char *)q.resp : "", &arr, &n, &cap, token,
                                       sizeof(token));
                        if (r < 0)
                                vmsnap_diag(d, r, "%s: unreadable listing of '%s'", s->where,
                                            prefix);
                }
                s3_req_reset(&q, 1);
                if (r < 0 || !token[0])
                        break;
        }
        curl_easy_cleanup(esc);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(arr);
        *ret_n = n;
        return 0;
}
