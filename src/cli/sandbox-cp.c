/* `vmsnap sandbox cp`, `ps`, `kill`. cp streams a tar through the daemon's archive routes
 * (docs/api.md, Files) in both directions with a thread between libcurl and libarchive over
 * a pipe, so that any size moves in bounded memory; what comes out of a guest is unpacked by
 * tarx.c, which never follows a symlink the guest sent nor writes outside the destination. */
#include "cli/sandbox.h"
#include "cli/tarx.h"
#include "util/cleanup.h"
#include "util/json.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ERROR_BODY_MAX (64u << 10)

/* One side of a copy: a guest path (ref set) or a local one. */
struct place {
        char ref[256];
        const char *path;
};

/* "REF:/path" names a guest path; anything else (also "./a:b") is local. */
static void parse_place(const char *arg, struct place *ret)
{
        const char *colon = strchr(arg, ':');
        size_t n = colon ? (size_t)(colon - arg) : 0;
        *ret = (struct place){.path = arg};
        if (colon && n > 0 && n < sizeof(ret->ref) && !memchr(arg, '/', n)) {
                snprintf(ret->ref, sizeof(ret->ref), "%.*s", (int)n, arg);
                ret->path = colon + 1;
        }
}

/* The last component of path ("." for "/"), and its directory. */
static void split(const char *path, char dir[4096], char base[4096])
{
        char a[4096], b[4096];
        snprintf(a, sizeof(a), "%s", path);
        snprintf(b, sizeof(b), "%s", path);
        snprintf(dir, 4096, "%s", dirname(a));
        const char *name = basename(b);
        snprintf(base, 4096, "%s", strcmp(name, "/") == 0 ? "." : name);
}

/* ---- a transfer: libcurl on one side of a pipe, libarchive on the other --------------------- */

struct transfer {
        struct client *c;
        char url[8192];
        bool upload;
        int fd;                 /* the pipe end libcurl uses */
        long status;
        CURLcode rc;
        char *error_body;       /* a refusal's body (JSON) */
        size_t error_len;
};

static size_t on_download(char *data, size_t size, size_t nmemb, void *p)
{
        struct transfer *t = p;
        size_t n = size * nmemb;
        if (!t->status)
                curl_easy_getinfo(t->c->curl, CURLINFO_RESPONSE_CODE, &t->status);
        if (t->status != 200) { /* keep the error for the message, never unpack it */
                size_t take = MIN(n, ERROR_BODY_MAX - t->error_len);
                char *b = realloc(t->error_body, t->error_len + take + 1);
                if (!b)
                        return 0;
                memcpy(b + t->error_len, data, take);
                t->error_len += take;
                b[t->error_len] = '\0';
                t->error_body = b;
                return n;
        }
        for (size_t o = 0; o < n;) {
                ssize_t w = write(t->fd, data + o, n - o);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return 0; /* the unpacker stopped: abort */
                o += (size_t)w;
        }
        return n;
}

static size_t on_upload(char *buf, size_t size, size_t nmemb, void *p)
{
        struct transfer *t = p;
        for (;;) {
                ssize_t n = read(t->fd, buf, size * nmemb);
                if (n < 0 && errno == EINTR)
                        continue;
                return n < 0 ? CURL_READFUNC_ABORT : (size_t)n;
        }
}

static size_t on_reply(char *data, size_t size, size_t nmemb, void *p)
{
        struct transfer *t = p;
        size_t n = size * nmemb, take = MIN(n, ERROR_BODY_MAX - t->error_len);
        char *b = realloc(t->error_body, t->error_len + take + 1);
        if (!b)
                return 0;
        memcpy(b + t->error_len, data, take);
        t->error_len += take;
        b[t->error_len] = '\0';
        t->error_body = b;
        return n;
}

static void *transfer_main(void *arg)
{
        struct transfer *t = arg;
        CURL *h = t->c->curl;
        struct curl_slist *headers = NULL;
        curl_easy_reset(h);
        if (t->c->socket[0])
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, t->c->socket);
        if (t->c->auth[0])
                headers = curl_slist_append(headers, t->c->auth);
        curl_easy_setopt(h, CURLOPT_URL, t->url);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        if (t->upload) {
                headers = curl_slist_append(headers, "Content-Type: application/x-tar");
                headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
                curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
                curl_easy_setopt(h, CURLOPT_READDATA, t);
                curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_reply);
        } else {
                curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_download);
        }
        curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        t->rc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->status);
        curl_slist_free_all(headers);
        close(t->fd); /* EOF (or EPIPE) for the other side */
        return NULL;
}

/* Reports how the transfer ended when it did not succeed. */
static int transfer_result(struct transfer *t, long want)
{
        if (t->status == want && t->rc == CURLE_OK)
                return CLI_OK;
        if (t->status >= 400) {
                struct response r = {.status = t->status, .body = t->error_body,
                                     .len = t->error_len};
                return report_error(t->c, &r);
        }
        return fail(t->c->a, "the transfer with %s failed: %s", t->c->where,
                    t->rc ? curl_easy_strerror(t->rc) : "the daemon cut it off (see its log)");
}

static int archive_url(struct client *c, const struct place *g, const char *path, char *out,
                       size_t size)
{
        char prefix[512];
        char *esc = curl_easy_escape(c->curl, path, 0);
        int r = esc ? ref_path(c, "/v1/sandboxes", g->ref, "/archive?path=", prefix,
                               sizeof(prefix))
                    : fail(c->a, "out of memory");
        if (r == CLI_OK)
                snprintf(out, size, "%s%s%s", c->base, prefix, esc);
        curl_free(esc);
        return r;
}

static void say_copied(const struct args *a, const char *from, const char *to,
                       const struct tarx_stats *st, const struct timespec *t0)
{
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
        if (a->json) { /* jansson escapes; bytes that are not UTF-8 become U+FFFD */
                json_t *o = json_pack("{s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:f}", "from",
                                      vmsnap_json_string_lossy(from), "to",
                                      vmsnap_json_string_lossy(to), "files",
                                      (json_int_t)st->files, "dirs", (json_int_t)st->dirs,
                                      "symlinks", (json_int_t)st->symlinks, "skipped",
                                      (json_int_t)st->skipped, "bytes", (json_int_t)st->bytes,
                                      "seconds", s);
                print_json(o);
                json_decref(o);
                return;
        }
        fprintf(stderr, "copied %s to %s: %llu file(s), %llu dir(s), %llu symlink(s), %llu bytes "
                "in %.1fs%s\n", from, to, (unsigned long long)st->files,
                (unsigned long long)st->dirs, (unsigned long long)st->symlinks,
                (unsigned long long)st->bytes, s, st->skipped ? " (devices and fifos skipped)" : "");
}

/* ---- out of a guest ----------------------------------------------------------------------- */

/* Where a copy out lands: into DEST when it is a directory, else as DEST (its parent must
 * exist). Returns the directory fd and the top-level name. */
static int local_target(const struct args *a, const char *dest, const char *src_base,
                        char top[4096])
{
        struct stat sb;
        char dir[4096], base[4096];
        if (stat(dest, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                snprintf(top, 4096, "%s", src_base);
                dir[0] = '\0';
        } else {
                split(dest, dir, base);
                snprintf(top, 4096, "%s", base);
        }
        if (!strcmp(top, ".") || !strcmp(top, ".."))
                return -fail(a, "%s: name the destination (not . or ..)", dest);
        int fd = open(dir[0] ? dir : dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -fail(a, "%s: %s", dir[0] ? dir : dest, strerror(errno));
        return fd;
}

static int copy_out(struct client *c, const struct args *a, const struct place *g,
                    const char *dest)
{
        char dir[4096], base[4096], top[4096];
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        split(g->path, dir, base);
        _cleanup_close_ int dest_fd = local_target(a, dest, base, top);
        if (dest_fd < 0)
                return -dest_fd;
        struct transfer t = {.c = c};
        int p[2];
        if (archive_url(c, g, g->path, t.url, sizeof(t.url)) || pipe2(p, O_CLOEXEC) < 0)
                return CLI_FAIL;
        t.fd = p[1];
        pthread_t th;
        if (pthread_create(&th, NULL, transfer_main, &t) != 0) {
                close(p[0]);
                close(p[1]);
                return fail(a, "cannot start the transfer");
        }
        struct tarx_opts o = {.dest_fd = dest_fd, .top_from = base, .top_to = top};
        struct tarx_stats st;
        char err[512] = "";
        int r = tarx_extract(p[0], &o, &st, err, sizeof(err));
        close(p[0]); /* stops a transfer the unpacker refused */
        pthread_join(th, NULL);
        int tr = transfer_result(&t, 200);
        free(t.error_body);
        if (tr != CLI_OK)
                return tr;
        if (r < 0)
                return fail(a, "%s (copying %s:%s to %s)", err, g->ref, g->path, dest);
        say_copied(a, g->path, dest, &st, &t0);
        return CLI_OK;
}

/* ---- into a guest ------------------------------------------------------------------------- */

/* The guest directory a copy in is unpacked into, and the name it gets there. */
static int guest_target(struct client *c, const struct place *g, const char *src,
                        char dir[4096], char top[4096])
{
        char path[8192], sdir[4096], sbase[4096];
        char *esc = curl_easy_escape(c->curl, g->path, 0);
        int r = esc ? ref_path(c, "/v1/sandboxes", g->ref, "/files/stat?path=", path,
                               sizeof(path))
                    : CLI_FAIL;
        struct response resp;
        if (r == CLI_OK) {
                strncat(path, esc, sizeof(path) - strlen(path) - 1);
                r = request(c, "GET", path, NULL, &resp);
        }
        curl_free(esc);
        if (r)
                return r;
        json_t *j = resp.status == 200 ? json_loadb(resp.body, resp.len, 0, NULL) : NULL;
        bool is_dir = j && strcmp(sget(j, "type"), "dir") == 0;
        json_decref(j);
        if (resp.status != 200 && resp.status != 404) {
                r = report_error(c, &resp);
                free(resp.body);
                return r;
        }
        free(resp.body);
        split(src, sdir, sbase);
        if (is_dir) {
                snprintf(dir, 4096, "%s", g->path);
                snprintf(top, 4096, "%s", sbase);
        } else {
                split(g->path, dir, top);
        }
        return CLI_OK;
}

struct creator {
        const char *src, *top;
        int fd;
        struct tarx_stats st;
        char err[512];
        int r;
};

static void *create_main(void *arg)
{
        struct creator *k = arg;
        k->r = tarx_create(k->src, k->top, k->fd, &k->st, k->err, sizeof(k->err));
        close(k->fd);
        return NULL;
}

static int copy_in(struct client *c, const struct args *a, const char *src,
                   const struct place *g)
{
        char dir[4096], top[4096];
        struct stat sb;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (lstat(src, &sb) < 0)
                return fail(a, "%s: %s", src, strerror(errno));
        int r = guest_target(c, g, src, dir, top);
        if (r)
                return r;
        struct transfer t = {.c = c, .upload = true};
        int p[2];
        if (archive_url(c, g, dir, t.url, sizeof(t.url)) || pipe2(p, O_CLOEXEC) < 0)
                return CLI_FAIL;
        struct creator k = {.src = src, .top = top, .fd = p[1]};
        t.fd = p[0];
        pthread_t th;
        if (pthread_create(&th, NULL, create_main, &k) != 0) {
                close(p[0]);
                close(p[1]);
                return fail(a, "cannot start the archive");
        }
        transfer_main(&t); /* closes p[0]: a creator still writing gets EPIPE */
        pthread_join(th, NULL);
        r = transfer_result(&t, 204);
        free(t.error_body);
        if (r == CLI_OK && k.r < 0)
                r = fail(a, "%s", k.err);
        if (r == CLI_OK)
                say_copied(a, src, g->path, &k.st, &t0);
        return r;
}

int run_cp(struct client *c, const struct args *a)
{
        struct place from, to;
        int r = need_args(a, 2, 2, "SRC DEST, one of them SANDBOX:PATH");
        if (r)
                return r;
        parse_place(a->args[0], &from);
        parse_place(a->args[1], &to);
        if (!!from.ref[0] == !!to.ref[0])
                return usage_error(a, "exactly one of SRC and DEST is SANDBOX:PATH (write a local "
                                   "path with a ':' as ./a:b)");
        const struct place *g = from.ref[0] ? &from : &to;
        if (g->path[0] != '/')
                return usage_error(a, "%s: the guest path must be absolute", g->path);
        signal(SIGPIPE, SIG_IGN); /* a refused archive closes the pipe under libcurl */
        return from.ref[0] ? copy_out(c, a, &from, to.path) : copy_in(c, a, from.path, &to);
}

/* ---- ps, kill ----------------------------------------------------------------------------- */

int run_ps(struct client *c, const struct args *a)
{
        char path[512];
        json_t *res = NULL, *p;
        size_t i;
        int r = need_args(a, 1, 1, "REF");
        if (r || (r = ref_path(c, "/v1/sandboxes", a->args[0], "/processes", path, sizeof(path))) ||
            (r = call(c, "GET", path, NULL, &res)))
                return r;
        json_t *list = json_object_get(res, "processes");
        if (a->json) {
                print_json(list);
        } else {
                printf("%-7s  %-9s  %-20s  %-4s  %s\n", "PID", "STATE", "STARTED", "TTY", "COMMAND");
                json_array_foreach(list, i, p)
                {
                        char state[16];
                        if (json_is_true(json_object_get(p, "running")))
                                snprintf(state, sizeof(state), "running");
                        else
                                snprintf(state, sizeof(state), "exit %lld", iget(p, "exit_code"));
                        printf("%-7lld  %-9s  %-20s  %-4s  %s%s\n", iget(p, "pid"), state,
                               sget(p, "started"),
                               json_is_true(json_object_get(p, "tty")) ? "yes" : "no",
                               sget(p, "command"),
                               json_is_true(json_object_get(p, "detached")) ? "  (background)"
                                                                             : "");
                }
        }
        json_decref(res);
        return CLI_OK;
}

int run_kill(struct client *c, const struct args *a)
{
        char path[512];
        int r = need_args(a, 2, 2, "REF PID");
        char *end;
        long pid = a->nargs == 2 ? strtol(a->args[1], &end, 10) : 0;
        if (r)
                return r;
        if (pid <= 0 || *end)
                return usage_error(a, "PID must be a process id from `vmsnap sandbox ps`");
        if ((r = ref_path(c, "/v1/sandboxes", a->args[0], "/processes/kill", path, sizeof(path))))
                return r;
        json_t *body = json_pack("{s:I}", "pid", (json_int_t)pid), *res = NULL;
        if (a->signal_name) {
                char *send;
                long n = strtol(a->signal_name, &send, 10);
                json_object_set_new(body, "signal",
                                    *send ? json_string(a->signal_name) : json_integer(n));
        }
        r = call(c, "POST", path, body, &res);
        json_decref(body);
        json_decref(res);
        if (r == CLI_OK && a->json) {
                json_t *o = json_pack("{s:o, s:I, s:o}", "sandbox",
                                      vmsnap_json_string_lossy(a->args[0]), "pid",
                                      (json_int_t)pid, "signal",
                                      vmsnap_json_string_lossy(a->signal_name ? a->signal_name
                                                                              : "TERM"));
                print_json(o);
                json_decref(o);
        }
        else if (r == CLI_OK)
                printf("signalled process %ld in %s (%s)\n", pid, a->args[0],
                       a->signal_name ? a->signal_name : "TERM");
        return r;
}
