/* Dropping root for good (docs/jail.md step 12): securebits locked so that uid 0 never means
 * capabilities again, the bounding, ambient and inheritable sets emptied while we still may,
 * then one supplementary group and the jail's uid and gid (which empties the permitted and
 * effective sets). The result is checked, not assumed. */
#include "jail/internal.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LOCKED_SECUREBITS                                                                          \
        (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |                    \
         SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |                                   \
         SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)

static int cap_get(struct __user_cap_data_struct data[2])
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        return syscall(SYS_capget, &h, data) < 0 ? -errno : 0;
}

static int cap_set(const struct __user_cap_data_struct data[2])
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        return syscall(SYS_capset, &h, data) < 0 ? -errno : 0;
}

/* Every capability out of the bounding set: 0 up to the first the kernel does not know. */
static int drop_bounding_set(struct vmsnap_diag *d)
{
        for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
                        return vmsnap_diag(d, -errno,
                                           "jail: cannot drop capability %d from the "
                                           "bounding set: %s",
                                           cap, strerror(errno));
        return 0;
}

/* Empties the ambient and inheritable sets (setresuid leaves the inheritable set alone). */
static int clear_ambient_inheritable(struct vmsnap_diag *d)
{
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
                return vmsnap_diag(d, -errno, "jail: cannot clear the ambient capabilities: %s",
                                   strerror(errno));
        struct __user_cap_data_struct data[2];
        int r = cap_get(data);
        if (r == 0) {
                data[0].inheritable = data[1].inheritable = 0;
                r = cap_set(data);
        }
        if (r < 0)
                return vmsnap_diag(d, r, "jail: cannot clear the inheritable capabilities: %s",
                                   strerror(-r));
        return 0;
}

static int switch_ids(uid_t uid, gid_t shared_gid, struct vmsnap_diag *d)
{
        if (setgroups(1, &shared_gid) < 0)
                return vmsnap_diag(d, -errno, "jail: setgroups([%u]): %s", (unsigned)shared_gid,
                                   strerror(errno));
        if (setresgid(uid, uid, uid) < 0)
                return vmsnap_diag(d, -errno, "jail: setresgid(%u): %s", (unsigned)uid,
                                   strerror(errno));
        if (setresuid(uid, uid, uid) < 0)
                return vmsnap_diag(d, -errno, "jail: setresuid(%u): %s", (unsigned)uid,
                                   strerror(errno));
        return 0;
}

/* The ids are the jail's, root cannot be regained, and no capability is left in any set. */
static int verify(uid_t uid, struct vmsnap_diag *d)
{
        uid_t ru, eu, su;
        gid_t rg, eg, sg;
        if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != uid ||
            eu != uid || su != uid || rg != uid || eg != uid || sg != uid)
                return vmsnap_diag(d, -EPERM, "jail: the ids are not %u after switching",
                                   (unsigned)uid);
        if (setresuid(0, 0, 0) == 0)
                return vmsnap_diag(d, -EPERM, "jail: uid 0 could be regained");
        struct __user_cap_data_struct data[2];
        int r = cap_get(data);
        if (r < 0)
                return vmsnap_diag(d, r, "jail: capget: %s", strerror(-r));
        for (int i = 0; i < 2; i++)
                if (data[i].effective || data[i].permitted || data[i].inheritable)
                        return vmsnap_diag(d, -EPERM,
                                           "jail: capabilities left after dropping "
                                           "root");
        if (prctl(PR_CAPBSET_READ, 0, 0, 0, 0) != 0)
                return vmsnap_diag(d, -EPERM, "jail: bounding set not empty");
        return 0;
}

int jail_drop_privileges(uid_t uid, gid_t shared_gid, struct vmsnap_diag *d)
{
        if (prctl(PR_SET_SECUREBITS, LOCKED_SECUREBITS, 0, 0, 0) < 0)
                return vmsnap_diag(d, -errno, "jail: cannot lock the securebits: %s",
                                   strerror(errno));
        int r = drop_bounding_set(d);
        if (r == 0)
                r = clear_ambient_inheritable(d);
        if (r == 0)
                r = switch_ids(uid, shared_gid, d);
        return r == 0 ? verify(uid, d) : r;
}
