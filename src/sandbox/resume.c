/* resume: a new VMM process from the sandbox's newest snapshot. The snapshot is only read;
 * a failed resume leaves the sandbox paused on it. */
#include "sandbox/internal.h"
#include "util/sys.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

static int resume_locked(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                         struct vmsnap_diag *d)
{
        if (sb->state != VMSNAP_SANDBOX_PAUSED)
                return vmsnap_diag(d, -EBUSY, "sandbox %s is %s, not paused", sb->id,
                                   vmsnap_sandbox_state_name(sb->state));
        struct vmsnap_snapshot snap;
        char dir[PATH_LEN];
        int r = snapshot_lookup(h, sb->snapshot_id, &snap, dir, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "sandbox %s: its snapshot", sb->id);
        if (!(l->driver = driver_for(sb->vmm, d)))
                return -EINVAL;
        struct journal j;
        r = transition_begin(h, &j, sb, "resume", VMSNAP_SANDBOX_RESUMING, NULL, false, d);
        if (r < 0)
                return r;
        r = restore_into(h, l, sb, &snap, false, &j, d);
        vmsnap_crashpoint("resume.restored");
        if (r < 0) {
                sb->state = VMSNAP_SANDBOX_PAUSED;
                db_journal_done(h, &j, sb, NULL);
                return r;
        }
        sb->state = VMSNAP_SANDBOX_RUNNING;
        sb->last_active = (int64_t)time(NULL);
        sb->error[0] = '\0';
        return db_journal_done(h, &j, sb, d);
}

int vmsnap_sandbox_resume(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                          struct vmsnap_diag *d)
{
        return run_locked(h, ref, resume_locked, ret, d);
}
