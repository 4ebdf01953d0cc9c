/* pause: the VM is saved into a new snapshot generation and every host resource it held is
 * released. The previous snapshot is dropped only after the new one is ready and the row
 * points at it, durably; that drop comes after the answer (docs/sandbox.md). */
#include "sandbox/channel.h"
#include "sandbox/internal.h"
#include "util/sys.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Puts a VM whose pause failed back to running; returns the state the row should say. A VM
 * that cannot run again leaves the sandbox paused on its previous snapshot when it has one. */
static enum vmsnap_sandbox_state roll_back(struct vmsnap_host *h, struct live *l,
                                           struct vmsnap_sandbox *sb)
{
        struct vmsnap_diag ignore = {0};
        if (l->vm && l->driver->resume(l->vm, &ignore) == 0)
                return VMSNAP_SANDBOX_RUNNING;
        vm_kill(l);
        release_files(h, sb->id);
        sb->pid = 0;
        snprintf(sb->error, sizeof(sb->error), "pause failed and the VM could not be resumed: %.400s",
                 ignore.msg);
        return sb->snapshot_id[0] ? VMSNAP_SANDBOX_PAUSED : VMSNAP_SANDBOX_ERROR;
}

/* The superseded snapshot deleted and the entry closed with the row, here, best effort:
 * after a failed write of the row (the entry left open is finished by recovery). */
static void finish_now(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                       const char *previous)
{
        vmsnap_crashpoint("pause.released");
        drop_snapshot(h, previous);
        db_journal_done(h, j, sb, NULL);
}

/* The row says paused on the new snapshot, durably, before the answer. With nothing to
 * drop, in the commit that closes the entry; else in the full commit of step `released`,
 * and the superseded snapshot's deletion and the entry's close come after the answer
 * (compact_defer_drop): a crash before they are done finds the entry at `released` and
 * finishes them (recover.c). */
static int finish(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                  const char *previous, struct vmsnap_diag *d)
{
        j->relaxed = false; /* this commit is the promise the answer makes */
        if (!previous[0] || strcmp(previous, sb->snapshot_id) == 0)
                return db_journal_done(h, j, sb, d);
        int r = db_journal_step(h, j, "released", NULL, sb, d);
        if (r < 0) {
                finish_now(h, j, sb, previous);
                return r;
        }
        vmsnap_crashpoint("pause.released");
        compact_defer_drop(h, j, previous);
        return 0;
}

static int pause_locked(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                        struct vmsnap_diag *d)
{
        if (sb->state != VMSNAP_SANDBOX_RUNNING || !l->vm)
                return vmsnap_diag(d, -EBUSY, "sandbox %s is %s, not running", sb->id,
                                   vmsnap_sandbox_state_name(sb->state));
        struct pause_trace t;
        trace_begin(&t);
        struct journal j;
        char previous[VMSNAP_ID_LEN + 1];
        snprintf(previous, sizeof(previous), "%s", sb->snapshot_id);
        int r = transition_begin(h, &j, sb, "pause", VMSNAP_SANDBOX_PAUSING, NULL, true, d);
        trace_mark(&t, VMSNAP_PAUSE_DB);
        if (r < 0)
                return r;
        struct vmsnap_diag ignore = {0};
        agent_sync(l, &ignore); /* best effort: a hung agent must not block the pause */
        trace_mark(&t, VMSNAP_PAUSE_AGENT_SYNC);
        struct vmsnap_snapshot snap;
        r = l->driver->pause(l->vm, d);
        trace_mark(&t, VMSNAP_PAUSE_VCPU_STOP);
        if (r == 0)
                r = capture(h, l, sb, VMSNAP_SNAPSHOT_PAUSE, NULL, &j, &t, &snap, d);
        if (r < 0) {
                sb->state = roll_back(h, l, sb);
                db_journal_done(h, &j, sb, NULL);
                return r;
        }
        /* Committed: the sandbox now is that snapshot. */
        snprintf(sb->snapshot_id, sizeof(sb->snapshot_id), "%s", snap.id);
        sb->generation = snap.generation;
        r = db_journal_step(h, &j, "committed", NULL, sb, d);
        trace_mark(&t, VMSNAP_PAUSE_DB);
        vmsnap_crashpoint("pause.committed");
        vm_kill(l);
        release_files_later(h, sb->id);
        trace_mark(&t, VMSNAP_PAUSE_VMM_RELEASE);
        sb->state = VMSNAP_SANDBOX_PAUSED;
        sb->pid = 0;
        sb->error[0] = '\0';
        if (r == 0)
                r = finish(h, &j, sb, previous, d);
        else
                finish_now(h, &j, sb, previous);
        trace_mark(&t, VMSNAP_PAUSE_DB);
        if (r == 0)
                trace_commit(h, &t);
        if (sb->generation >= h->merge_cap)
                compact_kick(h);
        return r;
}

int vmsnap_sandbox_pause(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                         struct vmsnap_diag *d)
{
        return run_locked(h, ref, pause_locked, ret, d);
}

/* The idle auto-pause, decided under the sandbox's lock so that nothing starts between the
 * decision and the pause: a sandbox running a command (its agent channel open) is busy, and
 * its idle time restarts from now, so the timeout counts from the command's end. */
static int pause_if_idle_locked(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                                struct vmsnap_diag *d)
{
        time_t now = time(NULL);
        if (sb->state != VMSNAP_SANDBOX_RUNNING || !l->vm || !sb->idle_timeout ||
            now - sb->last_active < sb->idle_timeout)
                return -EAGAIN; /* changed since the tick looked: not idle (any more) */
        if (chan_in_use(l)) {
                sb->last_active = (int64_t)now;
                db_put(h, sb, NULL);
                return -EAGAIN;
        }
        return pause_locked(h, l, sb, d);
}

int pause_if_idle(struct vmsnap_host *h, const char *id)
{
        struct vmsnap_diag ignore = {0};
        return run_locked(h, id, pause_if_idle_locked, NULL, &ignore);
}
