/* Listening sockets (see sockets.h). */
#include "api/sockets.h"
#include "util/cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A socket file at path: removed when stale, -EADDRINUSE when a daemon answers on it. */
static int clear_stale_socket(const char *path, struct vmsnap_diag *d)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0
                                       : vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        if (!S_ISSOCK(st.st_mode))
                return vmsnap_diag(d, -EEXIST,
                                   "%s exists and is not a socket; remove it or "
                                   "pass --socket",
                                   path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                return vmsnap_diag(d, -EADDRINUSE, "%s: another vmsnapd is serving on it", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return vmsnap_diag(d, -errno, "%s: cannot remove the stale socket: %s", path,
                                   strerror(errno));
        return 0;
}

int api_bind_unix(const char *path, struct vmsnap_diag *d)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: a Unix socket path is at most %zu bytes",
                                   path, sizeof(sa.sun_path) - 1);
        int r = clear_stale_socket(path, d);
        if (r < 0)
                return r;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "socket: %s", strerror(errno));
        /* Bound with mode 0600 from the start (no window where others may connect); the
         * umask is process-wide, so this runs before any thread starts. */
        mode_t old = umask(0177);
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        int saved = errno;
        umask(old);
        if (r < 0)
                return vmsnap_diag(d, -saved, "%s: cannot bind: %s", path, strerror(saved));
        if (chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
                saved = errno;
                unlink(path);
                return vmsnap_diag(d, -saved, "%s: %s", path, strerror(saved));
        }
        return TAKE_FD(fd);
}

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port. */
static int split_addr(const char *addr, char *host, size_t hsize, char *port, size_t psize)
{
        const char *colon = strrchr(addr, ':');
        if (!colon || !colon[1])
                return -EINVAL;
        const char *h = addr, *hend = colon;
        if (addr[0] == '[') {
                if (colon == addr || colon[-1] != ']')
                        return -EINVAL;
                h = addr + 1;
                hend = colon - 1;
        }
        if ((size_t)(hend - h) >= hsize || strlen(colon + 1) >= psize || hend == h)
                return -EINVAL;
        snprintf(host, hsize, "%.*s", (int)(hend - h), h);
        snprintf(port, psize, "%s", colon + 1);
        for (const char *p = port; *p; p++)
                if (!isdigit((unsigned char)*p))
                        return -EINVAL;
        return 0;
}

int api_bind_tcp(const char *addr, char *url, size_t url_size, struct vmsnap_diag *d)
{
        char host[256], port[16];
        if (split_addr(addr, host, sizeof(host), port, sizeof(port)) < 0)
                return vmsnap_diag(d, -EINVAL,
                                   "--listen %s: expected HOST:PORT, e.g. "
                                   "127.0.0.1:7420 or [::1]:7420",
                                   addr);
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *ai;
        int e = getaddrinfo(host, port, &hints, &ai);
        if (e)
                return vmsnap_diag(d, -EINVAL, "--listen %s: %s", addr, gai_strerror(e));
        _cleanup_close_ int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        int one = 1, r = fd < 0 ? -errno : 0;
        if (r == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                r = -errno;
        if (r == 0 && (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0))
                r = -errno;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (r == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
                r = -errno;
        freeaddrinfo(ai);
        if (r < 0)
                return vmsnap_diag(d, r, "--listen %s: %s", addr, strerror(-r));
        char h[NI_MAXHOST], p[NI_MAXSERV];
        if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
                        NI_NUMERICHOST | NI_NUMERICSERV) != 0)
                snprintf(h, sizeof(h), "%s", host), snprintf(p, sizeof(p), "%s", port);
        snprintf(url, url_size, ss.ss_family == AF_INET6 ? "http://[%s]:%s" : "http://%s:%s", h, p);
        return TAKE_FD(fd);
}
