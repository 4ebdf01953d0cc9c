/* The QMP client (see qmp.h). */
#include "vmm/qmp.h"
#include "util/cleanup.h"

#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (1u << 20) /* replies we read are small; a longer line is an error */

struct vmm_qmp {
        int fd;
        char *buf; /* bytes received and not yet consumed */
        size_t len, cap;
        json_int_t next_id;
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Receives more bytes into q->buf before the deadline. Returns 0, -ETIMEDOUT, -ECONNRESET
 * (EOF) or -errno. */
static int fill(struct vmm_qmp *q, int64_t deadline)
{
        if (q->cap - q->len < 4096) {
                if (q->cap >= MAX_LINE)
                        return -EMSGSIZE;
                size_t cap = q->cap ? q->cap * 2 : 8192;
                char *nb = realloc(q->buf, cap);
                if (!nb)
                        return -ENOMEM;
                q->buf = nb;
                q->cap = cap;
        }
        for (;;) {
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd p = {.fd = q->fd, .events = POLLIN};
                int n = poll(&p, 1, (int)left);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -ETIMEDOUT;
                ssize_t got = read(q->fd, q->buf + q->len, q->cap - q->len);
                if (got < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (got < 0)
                        return errno == ECONNRESET ? -ECONNRESET : -errno;
                if (got == 0)
                        return -ECONNRESET;
                q->len += (size_t)got;
                return 0;
        }
}

/* Reads one line (without its newline) into a malloc'd string. */
static int read_line(struct vmm_qmp *q, int64_t deadline, char **ret, size_t *ret_len)
{
        for (;;) {
                char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
                if (nl) {
                        size_t n = (size_t)(nl - q->buf);
                        char *line = strndup(q->buf, n);
                        if (!line)
                                return -ENOMEM;
                        memmove(q->buf, nl + 1, q->len - n - 1);
                        q->len -= n + 1;
                        *ret = line;
                        *ret_len = n;
                        return 0;
                }
                int r = fill(q, deadline);
                if (r < 0)
                        return r;
        }
}

/* Sends all of text, with fd attached to the first bytes when fd >= 0. */
static int send_all(int sock, const char *text, size_t len, int fd)
{
        while (len > 0) {
                struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
                union {
                        char buf[CMSG_SPACE(sizeof(int))];
                        struct cmsghdr align;
                } u;
                struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
                if (fd >= 0) {
                        memset(&u, 0, sizeof(u));
                        m.msg_control = u.buf;
                        m.msg_controllen = sizeof(u.buf);
                        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(c), &fd, sizeof(int));
                }
                ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return errno == EPIPE ? -ECONNRESET : -errno;
                text += n;
                len -= (size_t)n;
                fd = -1; /* passed with the first bytes */
        }
        return 0;
}

int vmm_qmp_parse_reply(const char *line, size_t len, json_int_t id, const char *command,
                        json_t **ret, struct vmsnap_diag *d)
{
        json_error_t je;
        json_t *o = json_loadb(line, len, 0, &je);
        if (!json_is_object(o)) {
                json_decref(o);
                return vmsnap_diag(d, -EPROTO,
                                   "QMP %s: QEMU sent a line that is not a JSON "
                                   "object (%s)",
                                   command, je.text);
        }
        json_t *jid = json_object_get(o, "id");
        json_t *err = json_object_get(o, "error");
        json_t *val = json_object_get(o, "return");
        int r = 0;
        if (!json_is_integer(jid) || json_integer_value(jid) != id) {
                r = 0; /* an event, the greeting, or the late answer to an earlier command */
        } else if (err) {
                const char *cls = json_string_value(json_object_get(err, "class"));
                const char *desc = json_string_value(json_object_get(err, "desc"));
                r = vmsnap_diag(d, -EIO, "QMP %s: %s: %s", command, cls ? cls : "Error",
                                desc ? desc : "(no description)");
        } else if (val) {
                *ret = json_incref(val);
                r = 1;
        } else {
                r = vmsnap_diag(d, -EPROTO, "QMP %s: a reply with neither return nor error",
                                command);
        }
        json_decref(o);
        return r;
}

/* Reads lines until the reply to id; events and stale replies are skipped. */
static int await_reply(struct vmm_qmp *q, json_int_t id, const char *command, int64_t deadline,
                       json_t **ret, struct vmsnap_diag *d)
{
        for (;;) {
                _cleanup_free_ char *line = NULL;
                size_t len = 0;
                int r = read_line(q, deadline, &line, &len);
                if (r == -ETIMEDOUT)
                        return vmsnap_diag(d, r, "QMP %s on %s: no reply in time", command,
                                           q->path);
                if (r < 0)
                        return vmsnap_diag(d, r, "QMP %s on %s: %s", command, q->path,
                                           r == -ECONNRESET ? "QEMU closed the connection"
                                                            : strerror(-r));
                json_t *val = NULL;
                r = vmm_qmp_parse_reply(line, len, id, command, &val, d);
                if (r < 0)
                        return r;
                if (r == 1) {
                        if (ret)
                                *ret = val;
                        else
                                json_decref(val);
                        return 0;
                }
        }
}

int vmm_qmp_execute(struct vmm_qmp *q, const char *command, json_t *args, int fd, int timeout_ms,
                    json_t **ret, struct vmsnap_diag *d)
{
        if (!q || !command) {
                json_decref(args);
                return vmsnap_diag(d, -EINVAL, "QMP: no connection or command");
        }
        int64_t deadline = now_ms() + timeout_ms;
        json_int_t id = q->next_id++;
        json_t *msg = json_pack("{s:s, s:I}", "execute", command, "id", id);
        if (msg && args)
                json_object_set(msg, "arguments", args);
        json_decref(args);
        _cleanup_free_ char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
        json_decref(msg);
        if (!text)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = send_all(q->fd, text, strlen(text), fd);
        if (r == 0)
                r = send_all(q->fd, "\n", 1, -1);
        if (r < 0)
                return vmsnap_diag(d, r, "QMP %s on %s: cannot send: %s", command, q->path,
                                   r == -ECONNRESET ? "QEMU closed the connection" : strerror(-r));
        return await_reply(q, id, command, deadline, ret, d);
}

static int connect_unix(const char *path, struct vmsnap_diag *d)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long for a Unix socket", path);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                return vmsnap_diag(d, -e, "%s: cannot connect: %s", path, strerror(e));
        }
        return fd;
}

/* Reads the greeting ({"QMP": {...}}) that QEMU sends first. */
static int read_greeting(struct vmm_qmp *q, int64_t deadline, struct vmsnap_diag *d)
{
        _cleanup_free_ char *line = NULL;
        size_t len = 0;
        int r = read_line(q, deadline, &line, &len);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: no QMP greeting: %s", q->path,
                                   r == -ECONNRESET  ? "QEMU closed the connection"
                                   : r == -ETIMEDOUT ? "timed out (QMP serves one client at a "
                                                       "time: is another one connected?)"
                                                     : strerror(-r));
        json_t *o = json_loadb(line, len, 0, NULL);
        bool ok = json_is_object(json_object_get(o, "QMP"));
        json_decref(o);
        return ok ? 0
                  : vmsnap_diag(d, -EPROTO, "%s: not a QMP monitor (greeting %.100s)", q->path,
                                line);
}

int vmm_qmp_connect(const char *path, int timeout_ms, struct vmm_qmp **ret, struct vmsnap_diag *d)
{
        int64_t deadline = now_ms() + timeout_ms;
        int fd = connect_unix(path, d);
        if (fd < 0)
                return fd;
        struct vmm_qmp *q = calloc(1, sizeof(*q));
        if (!q) {
                close(fd);
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        q->fd = fd;
        q->next_id = 1;
        snprintf(q->path, sizeof(q->path), "%s", path);
        int r = read_greeting(q, deadline, d);
        if (r == 0)
                r = vmm_qmp_execute(q, "qmp_capabilities", NULL, -1,
                                    (int)MAX(deadline - now_ms(), 1), NULL, d);
        if (r < 0) {
                vmm_qmp_close(q);
                return r;
        }
        *ret = q;
        return 0;
}

void vmm_qmp_close(struct vmm_qmp *q)
{
        if (!q)
                return;
        close(q->fd);
        free(q->buf);
        free(q);
}
