/* `vmsnap sandbox`: an HTTP/1.1 connection upgraded to vmsnap-exec.v1 (docs/api.md, Exec),
 * written by hand on a plain socket: libcurl does not hand over an upgraded connection. Only
 * http:// (the daemon's Unix socket or TCP); the request is one POST with a JSON body. */
#include "cli/sandbox.h"
#include "util/fs.h"
#include "util/cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEADERS_MAX (16u << 10)

/* Connects to the daemon: its Unix socket, or host:port of an http:// --url. */
static int connect_daemon(struct client *c, int *ret_fd)
{
        if (c->socket[0]) {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->socket);
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        *ret_fd = fd;
                        return CLI_OK;
                }
                if (fd >= 0)
                        close(fd);
                return fail(c->a, "cannot reach vmsnapd at %s: is it running? start it with "
                            "`vmsnapd` (or pass --socket/--root)", c->where);
        }
        char host[256], port[16] = "80";
        const char *h = c->base + strlen("http://");
        if (strncmp(c->base, "http://", 7) != 0)
                return fail(c->a, "%s: only http:// URLs are supported", c->base);
        size_t hl = *h == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/");
        snprintf(host, sizeof(host), "%.*s", (int)(*h == '[' ? hl - 2 : hl), *h == '[' ? h + 1 : h);
        if (h[hl] == ':')
                snprintf(port, sizeof(port), "%.*s", (int)strcspn(h + hl + 1, "/"), h + hl + 1);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (getaddrinfo(host, port, &hints, &ai) != 0)
                return fail(c->a, "%s: cannot resolve %s", c->base, host);
        int fd = -1;
        for (struct addrinfo *p = ai; p && fd < 0; p = p->ai_next) {
                fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, 0);
                if (fd >= 0 && connect(fd, p->ai_addr, p->ai_addrlen) < 0) {
                        close(fd);
                        fd = -1;
                }
        }
        freeaddrinfo(ai);
        if (fd < 0)
                return fail(c->a, "cannot reach vmsnapd at %s: is it running?", c->where);
        *ret_fd = fd;
        return CLI_OK;
}


/* Reads the response headers (and what came after them, kept in *ret_extra). */
static int read_headers(int fd, char **ret_headers, char **ret_extra, size_t *ret_extra_len)
{
        char *buf = malloc(HEADERS_MAX + 1);
        size_t len = 0;
        char *end = NULL;
        while (buf && !end && len < HEADERS_MAX) {
                ssize_t n = read(fd, buf + len, HEADERS_MAX - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
                buf[len] = '\0';
                end = strstr(buf, "\r\n\r\n");
        }
        if (!end) {
                free(buf);
                return -EPROTO;
        }
        size_t head = (size_t)(end - buf) + 4;
        *ret_extra_len = len - head;
        *ret_extra = malloc(*ret_extra_len + 1);
        if (!*ret_extra) {
                free(buf);
                return -ENOMEM;
        }
        memcpy(*ret_extra, buf + head, *ret_extra_len);
        buf[head] = '\0';
        *ret_headers = buf;
        return 0;
}

/* A refusal: the JSON error body after the headers (Content-Length), reported as usual. */
static int refused(struct client *c, int fd, long status, const char *headers, char *extra,
                   size_t extra_len)
{
        const char *cl = strcasestr(headers, "\r\nContent-Length:");
        size_t want = cl ? strtoul(cl + 17, NULL, 10) : extra_len;
        if (want > RESPONSE_MAX)
                want = RESPONSE_MAX;
        struct response r = {.status = status, .body = malloc(want + 1), .len = extra_len};
        if (!r.body)
                return fail(c->a, "out of memory");
        memcpy(r.body, extra, MIN(extra_len, want));
        while (r.len < want) {
                ssize_t n = read(fd, r.body + r.len, want - r.len);
                if (n <= 0)
                        break;
                r.len += (size_t)n;
        }
        r.body[MIN(r.len, want)] = '\0';
        int ret = report_error(c, &r);
        free(r.body);
        return ret;
}

int client_upgrade(struct client *c, const char *path, json_t *body, const char *proto,
                   int *ret_fd, char **ret_extra, size_t *ret_extra_len)
{
        _cleanup_free_ char *text = json_dumps(body, JSON_COMPACT), *req = NULL;
        _cleanup_free_ char *headers = NULL, *extra = NULL;
        _cleanup_close_ int fd = -1;
        int r = text ? connect_daemon(c, &fd) : fail(c->a, "out of memory");
        if (r)
                return r;
        const char *host = c->socket[0] ? "localhost" : c->base + 7;
        if (asprintf(&req,
                     "POST %s HTTP/1.1\r\nHost: %.*s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s\r\n%s",
                     path, (int)strcspn(host, "/"), host, proto, strlen(text), c->auth,
                     c->auth[0] ? "\r\n" : "", text) < 0) {
                req = NULL;
                return fail(c->a, "out of memory");
        }
        size_t extra_len = 0;
        if (vmsnap_fs_send_full(fd, req, strlen(req)) < 0 ||
            read_headers(fd, &headers, &extra, &extra_len) < 0)
                return fail(c->a, "%s: no HTTP answer to the exec request", c->where);
        long status = strncmp(headers, "HTTP/1.", 7) == 0 ? strtol(headers + 9, NULL, 10) : 0;
        if (status != 101)
                return refused(c, fd, status, headers, extra, extra_len);
        *ret_fd = TAKE_FD(fd);
        *ret_extra = TAKE_PTR(extra);
        *ret_extra_len = extra_len;
        return CLI_OK;
}
