/* Hybrid vsock connect (see hvsock.h): the handshake reads the answer one byte at a time so
 * that nothing the guest sends right after "OK" is swallowed. */
#include "vmm/hvsock.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads one '\n'-terminated line (without the newline) before the deadline. */
static int read_line(int fd, int64_t deadline, char *line, size_t size)
{
        size_t n = 0;
        for (;;) {
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int p = poll(&pfd, 1, (int)left);
                if (p < 0 && errno == EINTR)
                        continue;
                if (p < 0)
                        return -errno;
                if (p == 0)
                        return -ETIMEDOUT;
                char c;
                ssize_t got = read(fd, &c, 1);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return -errno;
                if (got == 0)
                        return -ECONNRESET;
                if (c == '\n')
                        break;
                if (n + 1 < size)
                        line[n++] = c;
        }
        line[n] = '\0';
        return 0;
}

int vmm_hvsock_connect(const char *uds_path, uint32_t port, int timeout_ms, int *ret_fd,
                       struct vmsnap_diag *d)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (!uds_path || !ret_fd || timeout_ms <= 0)
                return vmsnap_diag(d, -EINVAL, "vmm_hvsock_connect: bad argument");
        if (strlen(uds_path) >= sizeof(sa.sun_path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: socket path too long", uds_path);
        strcpy(sa.sun_path, uds_path);
        int64_t deadline = now_ms() + timeout_ms;
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot connect to the VMM's vsock socket: %s",
                                   uds_path, strerror(errno));
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "CONNECT %u\n", port);
        if (send(fd, msg, (size_t)n, MSG_NOSIGNAL) != n)
                return vmsnap_diag(d, -ECONNRESET, "%s: cannot send CONNECT %u: %s", uds_path, port,
                                   strerror(errno));
        char line[128];
        int r = read_line(fd, deadline, line, sizeof(line));
        if (r == -ECONNRESET)
                return vmsnap_diag(d, -ECONNREFUSED,
                                   "%s: nothing listens on guest vsock port %u (the VMM closed "
                                   "the connection)",
                                   uds_path, port);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: no answer to CONNECT %u: %s", uds_path, port,
                                   strerror(-r));
        if (strncmp(line, "OK ", 3) != 0)
                return vmsnap_diag(d, -EPROTO, "%s: unexpected answer to CONNECT %u: %.64s",
                                   uds_path, port, line);
        *ret_fd = TAKE_FD(fd);
        return 0;
}
