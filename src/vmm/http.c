/* HTTP/1.1 over a Unix socket with libcurl (see http.h). A fresh easy handle per request:
 * VMM API calls are few, and a handle that never outlives a call cannot carry a stale
 * connection to a VMM that was replaced. */
#include "vmm/http.h"
#include "util/cleanup.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init(void)
{
        curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

long vmm_http_memory_timeout_ms(uint64_t memory)
{
        const uint64_t step = 256ull << 20;
        return 10000 + (long)((memory + step - 1) / step) * 1000;
}

int vmm_http_status_errno(long status)
{
        switch (status) {
        case 400:
                return -EINVAL;
        case 404:
                return -ENOENT;
        case 405:
        case 409:
                return -EBUSY;
        case 413:
                return -E2BIG;
        case 429:
                return -EAGAIN;
        default:
                return -EIO;
        }
}

struct sink {
        char *buf;
        size_t len, cap;
        bool overflow;
};

static size_t sink_write(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct sink *s = userdata;
        size_t n = size * nmemb;
        if (s->len + n + 1 > VMM_HTTP_MAX_BODY) {
                s->overflow = true;
                return 0; /* makes curl fail with CURLE_WRITE_ERROR */
        }
        if (s->len + n + 1 > s->cap) {
                size_t cap = MAX(s->cap * 2, s->len + n + 1);
                char *nb = realloc(s->buf, cap);
                if (!nb)
                        return 0;
                s->buf = nb;
                s->cap = cap;
        }
        memcpy(s->buf + s->len, data, n);
        s->len += n;
        s->buf[s->len] = '\0';
        return n;
}

static int curl_errno(CURLcode c)
{
        switch (c) {
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        default:
                return -EIO;
        }
}

/* Appends a header; on failure the list stays as it was (still owned by the caller). */
static bool add_header(struct curl_slist **list, const char *header)
{
        struct curl_slist *n = curl_slist_append(*list, header);
        if (n)
                *list = n;
        return n != NULL;
}

/* Sets up an easy handle for one request; the caller owns headers and body_text. */
static int setup(CURL *h, const char *socket_path, const char *method, const char *path,
                 const char *body_text, long timeout_ms, struct curl_slist **headers,
                 struct sink *sink, char *errbuf)
{
        char url[1024];
        if (snprintf(url, sizeof(url), "http://localhost%s", path) >= (int)sizeof(url))
                return -ENAMETOOLONG;
        CURLcode c = CURLE_OK;
#define SET(opt, val)                                                                              \
        do {                                                                                       \
                if (c == CURLE_OK)                                                                 \
                        c = curl_easy_setopt(h, opt, val);                                         \
        } while (0)
        SET(CURLOPT_UNIX_SOCKET_PATH, socket_path);
        SET(CURLOPT_URL, url);
        SET(CURLOPT_NOSIGNAL, 1L);
        SET(CURLOPT_TIMEOUT_MS, timeout_ms);
        SET(CURLOPT_CONNECTTIMEOUT_MS, MIN(timeout_ms, 5000L));
        SET(CURLOPT_ERRORBUFFER, errbuf);
        SET(CURLOPT_WRITEFUNCTION, sink_write);
        SET(CURLOPT_WRITEDATA, sink);
        SET(CURLOPT_FORBID_REUSE, 1L);
        bool ok = add_header(headers, "Accept: application/json") &&
                  add_header(headers, "Expect:"); /* no 100-continue round trip */
        if (strcmp(method, "GET") == 0) {
                SET(CURLOPT_HTTPGET, 1L);
        } else {
                ok = ok && add_header(headers, body_text ? "Content-Type: application/json"
                                                         : "Content-Type:");
                SET(CURLOPT_CUSTOMREQUEST, method);
                SET(CURLOPT_POSTFIELDS, body_text ? body_text : "");
                SET(CURLOPT_POSTFIELDSIZE, (long)(body_text ? strlen(body_text) : 0));
        }
        if (!ok)
                return -ENOMEM;
        SET(CURLOPT_HTTPHEADER, *headers);
#undef SET
        return c == CURLE_OK ? 0 : -EINVAL;
}

int vmm_http_request(const char *socket_path, const char *method, const char *path,
                     const json_t *body, long timeout_ms, struct vmm_http_reply *ret,
                     struct vmsnap_diag *d)
{
        if (!socket_path || !method || !path || path[0] != '/' || !ret || timeout_ms <= 0)
                return vmsnap_diag(d, -EINVAL, "vmm_http_request: bad argument");
        if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: socket path too long", socket_path);
        pthread_once(&curl_once, curl_init);
        if (curl_init_result != CURLE_OK)
                return vmsnap_diag(d, -EIO, "libcurl initialisation failed: %s",
                                   curl_easy_strerror(curl_init_result));

        _cleanup_free_ char *body_text = NULL;
        if (body && !(body_text = json_dumps(body, JSON_COMPACT)))
                return vmsnap_diag(d, -ENOMEM, "%s %s: cannot encode the JSON body", method, path);
        CURL *h = curl_easy_init();
        if (!h)
                return vmsnap_diag(d, -ENOMEM, "curl_easy_init failed");
        struct curl_slist *headers = NULL;
        struct sink sink = {0};
        char errbuf[CURL_ERROR_SIZE] = "";
        int r = setup(h, socket_path, method, path, body_text, timeout_ms, &headers, &sink, errbuf);
        CURLcode c = CURLE_OK;
        if (r == 0)
                c = curl_easy_perform(h);
        long status = 0;
        if (r == 0 && c == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(headers);
        curl_easy_cleanup(h);
        if (r < 0) {
                free(sink.buf);
                return vmsnap_diag(d, r, "%s %s: cannot set up the request", method, path);
        }
        if (c != CURLE_OK) {
                free(sink.buf);
                r = sink.overflow ? -EMSGSIZE : curl_errno(c);
                return vmsnap_diag(d, r, "%s %s on %s: %s", method, path, socket_path,
                                   sink.overflow ? "reply larger than 4 MiB"
                                   : errbuf[0]   ? errbuf
                                                 : curl_easy_strerror(c));
        }
        ret->status = status;
        ret->body = sink.buf ? sink.buf : strdup("");
        ret->len = sink.len;
        if (!ret->body)
                return -ENOMEM;
        return 0;
}

void vmm_http_reply_free(struct vmm_http_reply *r)
{
        if (!r)
                return;
        free(r->body);
        r->body = NULL;
        r->len = 0;
}

/* Joins a JSON array of strings (Cloud Hypervisor's error chain) into buf. */
static void join_strings(const json_t *arr, char *buf, size_t size)
{
        size_t i, n = 0;
        json_t *v;
        buf[0] = '\0';
        json_array_foreach(arr, i, v)
        {
                if (!json_is_string(v) || n >= size)
                        continue;
                n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ": " : "",
                                      json_string_value(v));
        }
}

/* Copies text into buf as one line: control characters become spaces. */
static void one_line(const char *text, char *buf, size_t size)
{
        size_t n = 0;
        for (; text[n] && n + 1 < size; n++)
                buf[n] = (text[n] == '\n' || text[n] == '\r' || text[n] == '\t') ? ' ' : text[n];
        while (n > 0 && buf[n - 1] == ' ')
                n--;
        buf[n] = '\0';
}

void vmm_http_fault(const struct vmm_http_reply *r, char *buf, size_t size)
{
        buf[0] = '\0';
        json_t *j = r->body && r->len ? json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL) : NULL;
        json_t *fm = json_is_object(j) ? json_object_get(j, "fault_message") : NULL;
        if (json_is_string(fm))
                snprintf(buf, size, "%s", json_string_value(fm));
        else if (json_is_array(j))
                join_strings(j, buf, size);
        else if (json_is_string(j))
                snprintf(buf, size, "%s", json_string_value(j));
        json_decref(j);
        if (!buf[0] && r->body && r->len)
                one_line(r->body, buf, MIN(size, (size_t)512));
        if (!buf[0])
                snprintf(buf, size, "HTTP status %ld with no message", r->status);
}

int vmm_http_call(const char *socket_path, const char *method, const char *path, const json_t *body,
                  long timeout_ms, json_t **ret_json, struct vmsnap_diag *d)
{
        struct vmm_http_reply rep = {0};
        int r = vmm_http_request(socket_path, method, path, body, timeout_ms, &rep, d);
        if (r < 0)
                return r;
        if (rep.status < 200 || rep.status > 299) {
                char fault[800];
                vmm_http_fault(&rep, fault, sizeof(fault));
                r = vmsnap_diag(d, vmm_http_status_errno(rep.status), "%s %s: %ld: %s", method,
                                path, rep.status, fault);
                vmm_http_reply_free(&rep);
                return r;
        }
        if (ret_json) {
                json_error_t err;
                json_t *j = NULL;
                if (rep.len && !(j = json_loadb(rep.body, rep.len, 0, &err))) {
                        r = vmsnap_diag(d, -EBADMSG, "%s %s: reply is not JSON: %s", method, path,
                                        err.text);
                        vmm_http_reply_free(&rep);
                        return r;
                }
                *ret_json = j;
        }
        vmm_http_reply_free(&rep);
        return 0;
}
