/* `vmsnap sandbox`: the connection to vmsnapd (libcurl over its Unix socket, or TCP with a
 * bearer token) and the JSON request/response cycle. */
#include "cli/progress.h"
#include "cli/sandbox.h"
#include "util/cleanup.h"

#include <vmsnap/store.h>

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the connection ----------------------------------------------------------------------- */

/* Reads <root>/token when this user may (root, usually); "" otherwise. */
static void token_from_root(const char *root, char out[128])
{
        char path[4096];
        out[0] = '\0';
        snprintf(path, sizeof(path), "%s/token", root);
        FILE *f = fopen(path, "re");
        if (!f)
                return;
        if (fgets(out, 128, f))
                out[strcspn(out, "\r\n")] = '\0';
        fclose(f);
}

int client_open(struct client *c, const struct args *a)
{
        const char *root = a->root ? a->root : vmsnap_store_default_root();
        c->a = a;
        c->curl = curl_easy_init();
        if (!c->curl)
                return fail(a, "cannot initialize libcurl");
        if (a->url) {
                snprintf(c->base, sizeof(c->base), "%.*s", (int)strcspn(a->url, "?#"), a->url);
                size_t n = strlen(c->base);
                while (n && c->base[n - 1] == '/')
                        c->base[--n] = '\0';
                snprintf(c->where, sizeof(c->where), "%s", c->base);
                char token[128] = "";
                const char *t = a->token ? a->token : getenv("VMSNAP_TOKEN");
                if (!t || !t[0]) {
                        token_from_root(root, token);
                        t = token;
                }
                if (t[0])
                        snprintf(c->auth, sizeof(c->auth), "Authorization: Bearer %s", t);
                return CLI_OK;
        }
        char path[4096];
        if (a->socket)
                snprintf(path, sizeof(path), "%s", a->socket);
        else
                snprintf(path, sizeof(path), "%s/" SOCKET_NAME, root);
        if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                return fail(a, "%s: a Unix socket path is at most 107 bytes", path);
        memcpy(c->socket, path, strlen(path) + 1); /* fits: checked above */
        snprintf(c->base, sizeof(c->base), "http://localhost");
        snprintf(c->where, sizeof(c->where), "unix:%s", path);
        return CLI_OK;
}

void client_close(struct client *c)
{
        curl_easy_cleanup(c->curl);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *p)
{
        struct response *r = p;
        size_t n = size * nmemb;
        if (r->len + n > RESPONSE_MAX) {
                r->too_big = true;
                return 0;
        }
        char *b = realloc(r->body, r->len + n + 1);
        if (!b)
                return 0;
        memcpy(b + r->len, data, n);
        r->len += n;
        b[r->len] = '\0';
        r->body = b;
        return n;
}

void client_progress(struct client *c, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->progress, sizeof(c->progress), fmt, ap);
        va_end(ap);
}

/* libcurl calls this about once a second while the daemon works: "pausing web-1… 3s". */
static int on_progress(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
        (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
        cli_progress_tick(p, 0, 0);
        return 0;
}

/* Sends one request (body: JSON or NULL). Returns 0 when a response came back (any status),
 * or CLI_FAIL with the message printed. */
int request(struct client *c, const char *method, const char *path, json_t *body,
                   struct response *ret)
{
        struct cli_progress pr;
        cli_progress_start(&pr, "%s", c->progress);
        char url[1200];
        snprintf(url, sizeof(url), "%s%s", c->base, path);
        _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        struct curl_slist *headers = NULL;
        headers = curl_slist_append(headers, "Accept: application/json");
        if (text)
                headers = curl_slist_append(headers, "Content-Type: application/json");
        if (c->auth[0])
                headers = curl_slist_append(headers, c->auth);
        CURL *h = c->curl;
        *ret = (struct response){0};
        curl_easy_reset(h); /* nothing of the previous request carries over */
        if (c->socket[0])
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (text || strcmp(method, "POST") == 0) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, text ? text : "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(text ? strlen(text) : 0));
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, ret);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        if (c->progress[0] && isatty(STDERR_FILENO)) {
                curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
                curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
                curl_easy_setopt(h, CURLOPT_XFERINFODATA, &pr);
        }
        CURLcode rc = curl_easy_perform(h);
        curl_slist_free_all(headers);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        cli_progress_end(&pr, rc == CURLE_OK && status >= 200 && status < 300);
        c->progress[0] = '\0';
        if (rc == CURLE_OK) {
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status);
                return 0;
        }
        free(ret->body);
        ret->body = NULL;
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
                return fail(c->a,
                            "cannot reach vmsnapd at %s: is it running? start it with "
                            "`vmsnapd`%s",
                            c->where, c->a->url ? "" : " (or pass --socket/--root)");
        if (ret->too_big)
                return fail(c->a, "the response from %s is over %u MiB", c->where,
                            RESPONSE_MAX >> 20);
        return fail(c->a, "request to %s failed: %s", c->where, curl_easy_strerror(rc));
}

/* Prints an error response {"error":{"code","message"}} (any other body as text). */
int report_error(struct client *c, const struct response *r)
{
        json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
        const char *code = NULL, *msg = NULL;
        json_unpack(j, "{s:{s:s, s:s}}", "error", "code", &code, "message", &msg);
        if (c->a->json && j)
                printf("%s\n", r->body);
        int ret;
        if (code && msg)
                ret = fail(c->a, "%s [%s, HTTP %ld]", msg, code, r->status);
        else if (r->status == 401)
                ret = fail(c->a, "HTTP 401 from %s: pass --token or set $VMSNAP_TOKEN", c->where);
        else
                ret = fail(c->a, "HTTP %ld from %s: %.200s", r->status, c->where,
                           r->body ? r->body : "");
        json_decref(j);
        return ret;
}

/* Runs a request and parses a JSON 2xx response into *ret (NULL for 204). Returns CLI_OK or
 * CLI_FAIL with the message printed. */
int call(struct client *c, const char *method, const char *path, json_t *body, json_t **ret)
{
        struct response r;
        int rc = request(c, method, path, body, &r);
        if (rc)
                return rc;
        if (r.status < 200 || r.status > 299) {
                rc = report_error(c, &r);
                free(r.body);
                return rc;
        }
        json_error_t e;
        *ret = r.status == 204 || !r.len ? NULL : json_loadb(r.body, r.len, 0, &e);
        if (r.status != 204 && r.len && !*ret)
                rc = fail(c->a, "unreadable response from %s: %s", c->where, e.text);
        free(r.body);
        return rc;
}

/* path prefix + escaped ref + suffix. */
int ref_path(struct client *c, const char *prefix, const char *ref, const char *suffix,
                    char *out, size_t size)
{
        char *esc = curl_easy_escape(c->curl, ref, 0);
        if (!esc)
                return fail(c->a, "out of memory");
        snprintf(out, size, "%s/%s%s", prefix, esc, suffix);
        curl_free(esc);
        return CLI_OK;
}

