/* The TAP a sandbox's VMM attaches to: created persistent by root in the sandbox namespace,
 * owned by the jail's uid, so the unprivileged VMM can open it by name and open nothing
 * else. The kernel cannot make tun devices over rtnetlink, hence the ioctls. */
#include "net/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/cleanup.h"

int net_tap_create(const char *name, uid_t owner, bool multi_queue, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "/dev/net/tun: %s", strerror(errno));
        struct ifreq ifr = {0};
        strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0)
                return vmsnap_diag(d, -errno, "tap %s: TUNSETIFF: %s", name, strerror(errno));
        if (ioctl(fd, TUNSETOWNER, (unsigned long)owner) < 0)
                return vmsnap_diag(d, -errno, "tap %s: TUNSETOWNER %u: %s", name, (unsigned)owner,
                                   strerror(errno));
        if (ioctl(fd, TUNSETPERSIST, 1ul) < 0)
                return vmsnap_diag(d, -errno, "tap %s: TUNSETPERSIST: %s", name, strerror(errno));
        return 0;
}
