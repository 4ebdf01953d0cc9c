/* sd_notify(3) for vmsnapd (see notify.h): one datagram on a Unix socket whose path is in
 * $NOTIFY_SOCKET, "@" standing for the abstract namespace. */
#include "api/notify.h"
#include "util/cleanup.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static struct sockaddr_un notify_addr;
static socklen_t notify_len; /* 0: no service manager asked to be told */

void api_notify_init(void)
{
        const char *path = getenv("NOTIFY_SOCKET");
        size_t n = path ? strlen(path) : 0;
        if (n >= 2 && n < sizeof(notify_addr.sun_path) && (path[0] == '/' || path[0] == '@')) {
                notify_addr.sun_family = AF_UNIX;
                memcpy(notify_addr.sun_path, path, n);
                if (path[0] == '@')
                        notify_addr.sun_path[0] = '\0';
                notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        }
        unsetenv("NOTIFY_SOCKET");
}

int api_notify(const char *state)
{
        if (notify_len == 0)
                return 0;
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        ssize_t w = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                           (const struct sockaddr *)&notify_addr, notify_len);
        return w < 0 ? -errno : 0;
}
