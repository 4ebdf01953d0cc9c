/* Relaying an upgraded exec connection to the owning host (forward-upgrade.h). libcurl does
 * not hand over an upgraded connection, so the request is written by hand on a socket, as
 * the CLI does (src/cli/sandbox-upgrade.c). */
#include "api/forward-upgrade.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <vmsnap/sandbox.h>

#include "api/exec-routes.h"
#include "api/forward.h"
#include "api/stream.h"
#include "util/fs.h"
#include "util/log.h"

#define HEAD_MAX (16u << 10)  /* the owner's status line and headers */
#define JSON_MAX (1u << 20)   /* the owner's refusal */
#define RELAY_BLOCK (64u << 10)

struct joined {
        int owner;   /* the socket to the owner, after its 101 */
        char *early; /* bytes the owner sent after its headers, for the client */
        size_t early_len;
};


static void set_timeout(int fd, int seconds)
{
        struct timeval tv = {.tv_sec = seconds};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* A TCP connection to endpoint "HOST:PORT" (10 s to connect); -errno. */
static int dial(const char *endpoint)
{
        char host[256];
        const char *colon = strrchr(endpoint, ':');
        if (!colon || colon == endpoint || (size_t)(colon - endpoint) >= sizeof(host))
                return -EINVAL;
        snprintf(host, sizeof(host), "%.*s", (int)(colon - endpoint), endpoint);
        if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [v6]:port */
                memmove(host, host + 1, strlen(host));
                host[strlen(host) - 1] = '\0';
        }
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
                return -EHOSTUNREACH;
        int fd = -ECONNREFUSED;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (s < 0)
                        continue;
                set_timeout(s, 10); /* Linux applies SO_SNDTIMEO to connect */
                if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
                        fd = s;
                        break;
                }
                fd = -errno;
                close(s);
        }
        freeaddrinfo(res);
        return fd;
}

/* Reads the owner's head (to the blank line) into buf; returns its length (the bytes after
 * it stay in buf, *got in all), or -1. */
static ssize_t read_head(int fd, char *buf, size_t size, size_t *got)
{
        *got = 0;
        while (*got < size - 1) {
                ssize_t r = recv(fd, buf + *got, size - 1 - *got, 0);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return -1;
                *got += (size_t)r;
                buf[*got] = '\0';
                char *end = strstr(buf, "\r\n\r\n");
                if (end)
                        return end + 4 - buf;
        }
        return -1;
}

/* The owner refused the upgrade: its JSON body (Content-Length of head), relayed. */
static void relay_refusal(int fd, long status, char *head, size_t head_len, size_t got,
                          const char *owner, struct api_reply *rep)
{
        size_t want = 0;
        head[head_len - 2] = '\0';
        for (char *l = strstr(head, "\r\n"); l; l = strstr(l + 2, "\r\n"))
                if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
                        want = strtoul(l + 17, NULL, 10);
        char *body = want <= JSON_MAX ? malloc(want + 1) : NULL;
        size_t have = got - head_len < want ? got - head_len : want;
        if (body)
                memcpy(body, head + head_len, have);
        while (body && have < want) {
                ssize_t r = recv(fd, body + have, want - have, 0);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        break;
                have += (size_t)r;
        }
        if (!body || have < want)
                api_reply_error(rep, (struct api_error){502, "upstream_error"},
                                "host %s refused the upgrade (%ld) with a body cut off or too "
                                "large", owner, status);
        else
                api_forward_relay(rep, status, body, want, owner);
        free(body);
}

/* Copies what is readable on from to to; false at its end or on an error. */
static bool pass(int from, int to, char *buf)
{
        ssize_t r = recv(from, buf, RELAY_BLOCK, 0);
        if (r < 0 && errno == EINTR)
                return true;
        return r > 0 && vmsnap_fs_send_full(to, buf, (size_t)r) == 0;
}

/* The session, in the client connection's thread: both ways until either side ends. */
static void run_joined(void *ctx, int client, const char *extra, size_t extra_len)
{
        struct joined *j = ctx;
        char *buf = malloc(RELAY_BLOCK);
        set_timeout(j->owner, 0); /* an interactive shell may be idle for hours */
        bool ok = buf && vmsnap_fs_send_full(client, j->early, j->early_len) == 0 &&
                  vmsnap_fs_send_full(j->owner, extra, extra_len) == 0;
        struct pollfd p[2] = {{.fd = client, .events = POLLIN}, {.fd = j->owner, .events = POLLIN}};
        while (ok) {
                if (poll(p, 2, -1) < 0) {
                        ok = errno == EINTR;
                        continue;
                }
                if (p[0].revents)
                        ok = pass(client, j->owner, buf);
                if (ok && p[1].revents)
                        ok = pass(j->owner, client, buf);
        }
        shutdown(j->owner, SHUT_RDWR);
        free(buf);
}

static void joined_free(void *ctx)
{
        struct joined *j = ctx;
        if (!j)
                return;
        if (j->owner >= 0)
                close(j->owner);
        free(j->early);
        free(j);
}

/* The request, as the owner must see it: the call's body, the cluster token, the loop
 * guard. */
static char *request_of(struct api_server *srv, const struct api_call *call, const char *host,
                        const char *endpoint)
{
        char path[400], *req = NULL;
        api_forward_path(call, call->raw_query, path, sizeof(path));
        if (asprintf(&req,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
                     "Authorization: Bearer %s\r\n" API_FORWARDED_HEADER ": %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     path, endpoint, API_EXEC_UPGRADE, srv->token, host, call->body_len) < 0)
                return NULL;
        return req;
}

/* Asks the owner at fd for the upgrade and fills rep. */
static void ask(int fd, const char *req, const struct api_call *call, const char *host,
                const char *endpoint, struct api_reply *rep)
{
        char *head = malloc(HEAD_MAX);
        size_t got = 0;
        ssize_t head_len = -1;
        set_timeout(fd, 60);
        if (head && vmsnap_fs_send_full(fd, req, strlen(req)) == 0 &&
            vmsnap_fs_send_full(fd, call->body, call->body_len) == 0)
                head_len = read_head(fd, head, HEAD_MAX, &got);
        long status = head_len > 0 && strncmp(head, "HTTP/1.", 7) == 0
                              ? strtol(head + 9, NULL, 10) : 0;
        struct joined *j = status == 101 ? calloc(1, sizeof(*j)) : NULL;
        struct api_stream *st = j ? calloc(1, sizeof(*st)) : NULL;
        if (status == 0)
                api_reply_error(rep, (struct api_error){503, "unavailable"},
                                "exec upgrade: host %s at %s: no HTTP answer", host, endpoint);
        else if (status != 101)
                relay_refusal(fd, status, head, (size_t)head_len, got, host, rep);
        else if (!st || (got > (size_t)head_len && !(j->early = malloc(got - (size_t)head_len))))
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "out of memory");
        if (status == 101 && rep->status == 0) {
                j->early_len = got - (size_t)head_len;
                if (j->early_len)
                        memcpy(j->early, head + head_len, j->early_len);
                j->owner = dup(fd);
                *st = (struct api_stream){.run_upgraded = run_joined, .upgrade = API_EXEC_UPGRADE,
                                          .free = joined_free, .ctx = j};
                if (j->owner >= 0) {
                        api_reply_stream(rep, 101, st);
                        j = NULL;
                        st = NULL;
                } else {
                        api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "dup: %s",
                                        strerror(errno));
                }
        }
        if (j)
                j->owner = -1;
        joined_free(j);
        free(st);
        free(head);
}

bool api_forward_upgrade(struct api_server *srv, const struct api_call *call,
                         struct api_reply *rep)
{
        struct vmsnap_sandbox sb;
        char host[64], endpoint[256];
        if (!__atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE) ||
            vmsnap_sandbox_get(srv->host, call->ref, &sb, NULL) != -ENOENT)
                return false;
        int r = api_forward_owner(srv, call, host, endpoint, rep);
        if (r <= 0)
                return r < 0;
        char *req = request_of(srv, call, host, endpoint);
        int fd = req ? dial(endpoint) : -ENOMEM;
        if (fd < 0)
                api_reply_error(rep, (struct api_error){503, "unavailable"},
                                "exec upgrade: host %s at %s: %s", host, endpoint, strerror(-fd));
        else
                ask(fd, req, call, host, endpoint, rep);
        if (fd >= 0)
                close(fd);
        free(req);
        log_debug("forwarded an exec upgrade to host %s: %u", host, rep->status);
        return true;
}
