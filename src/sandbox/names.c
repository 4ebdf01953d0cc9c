/* A removed sandbox's name: freed for a new sandbox (the row stays, without its name, as the
 * history of the id). The destroy itself keeps the row as it was (destroy.c). */
#include "sandbox/internal.h"

#include <errno.h>

static int release_locked(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                          struct vmsnap_diag *d)
{
        (void)l;
        if (sb->state != VMSNAP_SANDBOX_STOPPED)
                return vmsnap_diag(d, -EBUSY, "sandbox %s is %s: only a removed sandbox gives "
                                   "its name up", sb->id, vmsnap_sandbox_state_name(sb->state));
        if (!sb->name[0])
                return 0;
        sb->name[0] = '\0';
        return db_put(h, sb, d);
}

int vmsnap_sandbox_release_name(struct vmsnap_host *h, const char *ref, struct vmsnap_diag *d)
{
        return run_locked(h, ref, release_locked, NULL, d);
}
