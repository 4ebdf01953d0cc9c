/* destroy: the VMM killed, the run files released, the pause snapshots only this sandbox
 * owned removed; the row stays as `stopped` for history. */
#include "sandbox/internal.h"

#include <stdio.h>

static int destroy_locked(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                          struct vmsnap_diag *d)
{
        struct journal j;
        char snapshot[VMSNAP_ID_LEN + 1];
        snprintf(snapshot, sizeof(snapshot), "%s", sb->snapshot_id);
        if (sb->state == VMSNAP_SANDBOX_STOPPED)
                return 0; /* idempotent */
        char data[96];
        snprintf(data, sizeof(data), "{\"snapshot\":\"%s\"}", snapshot);
        int r = transition_begin(h, &j, sb, "destroy", VMSNAP_SANDBOX_STOPPING, data, false, d);
        if (r < 0)
                return r;
        vm_kill(l);
        release_files(h, sb->id);
        net_release(h, sb->id);
        sb->state = VMSNAP_SANDBOX_STOPPED;
        sb->pid = 0;
        sb->jail_uid = 0; /* free for the next sandbox */
        sb->snapshot_id[0] = '\0';
        r = db_journal_step(h, &j, "stopped", NULL, sb, d);
        drop_snapshot(h, snapshot); /* nothing refers to it any more */
        db_journal_done(h, &j, NULL, NULL);
        return r;
}

int vmsnap_sandbox_destroy(struct vmsnap_host *h, const char *ref, struct vmsnap_diag *d)
{
        return run_locked(h, ref, destroy_locked, NULL, d);
}
