/* Recovery at start: every journal entry a crash left open is finished or rolled back
 * (docs/sandbox.md, "The journal"), then running VMs are re-attached. */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void recovery_say(struct vmsnap_host *h, const char *id, const char *fmt, ...)
{
        if (!h->on_recovery)
                return;
        char action[768];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(action, sizeof(action), fmt, ap);
        va_end(ap);
        struct vmsnap_sandbox sb;
        h->on_recovery(h->recovery_ctx, id,
                       row_get(h, id, &sb, NULL) == 0 ? sb.name : "", action);
}

/* Kills the VMM a crash left behind and says so in out ("" when there was none). */
static void kill_leftover(struct live *l, char out[64])
{
        pid_t pid = l->vm ? l->driver->pid(l->vm) : 0;
        vm_kill(l);
        if (pid > 0)
                snprintf(out, 64, "killed its leftover VMM (pid %d); ", (int)pid);
        else
                out[0] = '\0';
}

/* Re-attaches to the sandbox's VMM: the row's pid, else the driver's pid file. */
static void try_attach(struct vmsnap_host *h, struct live *l, const struct vmsnap_sandbox *sb)
{
        pid_t pid = sb->pid;
        if (!pid) {
                char run[PATH_LEN], *text = NULL;
                size_t len;
                path_run_dir(h, sb->id, run);
                _cleanup_close_ int fd = vmsnap_fs_open_dir(run);
                if (fd >= 0 && vmsnap_fs_read_file(fd, "vmm.pid", 64, (uint8_t **)&text, &len) == 0)
                        pid = (pid_t)atoi(text);
                free(text);
        }
        struct spec_buf buf;
        struct vmsnap_vm_spec spec;
        build_spec(h, sb, &buf, &spec);
        if (pid > 0 && l->driver && !l->vm && l->driver->attach(&spec, pid, &l->vm, NULL) == 0)
                live_note_accel(h, l);
}

void recover_abort_txn(struct vmsnap_host *h, const struct journal *j)
{
        json_t *o = json_loads(j->data, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "txn"));
        struct vmsnap_store_txn *t = NULL;
        if (id && vmsnap_store_create_resume(h->store, id, &t, NULL) == 0)
                vmsnap_store_txn_abort(t, NULL);
        vmsnap_store_txn_free(t);
        json_decref(o);
}

static const char *previous_of(const struct journal *j, char out[VMSNAP_ID_LEN + 1])
{
        json_t *o = json_loads(j->data, 0, NULL);
        const char *p = json_string_value(json_object_get(o, "previous"));
        snprintf(out, VMSNAP_ID_LEN + 1, "%s", p ? p : "");
        json_decref(o);
        return out;
}

static bool step_before(const struct journal *j, const char *step)
{
        static const char *const order[] = {"begin", "booted", "restored", "saved",
                                            "committed", "released", "running", "stopped"};
        int a = 0, b = 0;
        for (int i = 0; i < 8; i++) {
                if (strcmp(j->step, order[i]) == 0)
                        a = i;
                if (strcmp(step, order[i]) == 0)
                        b = i;
        }
        return a < b;
}

/* The snapshot a pause or snapshot step was making, when the store committed it already
 * (a crash between the store's commit and the journal's "committed" step). */
static bool txn_ready(struct vmsnap_host *h, const struct journal *j, struct vmsnap_snapshot *ret)
{
        json_t *o = json_loads(j->data, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "txn"));
        bool ready = id && vmsnap_store_get(h->store, id, ret, NULL) == 0 &&
                     ret->state == VMSNAP_SNAPSHOT_READY;
        json_decref(o);
        return ready;
}

static void recover_pause(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                          const struct journal *j)
{
        char previous[VMSNAP_ID_LEN + 1], killed[64];
        struct vmsnap_snapshot made;
        previous_of(j, previous);
        if (step_before(j, "committed") && txn_ready(h, j, &made)) {
                /* Committed by the store: roll forward, the new snapshot is the sandbox. */
                snprintf(sb->snapshot_id, sizeof(sb->snapshot_id), "%s", made.id);
                sb->generation = made.generation;
        } else if (step_before(j, "committed")) {
                recover_abort_txn(h, j);
                struct vmsnap_diag ignore = {0};
                if (l->vm && l->driver->resume(l->vm, &ignore) == 0) {
                        sb->state = VMSNAP_SANDBOX_RUNNING;
                        recovery_say(h, sb->id, "pause rolled back (stopped at step %s): its "
                                     "pending snapshot aborted, the VMM resumed; running",
                                     j->step);
                        return;
                }
                kill_leftover(l, killed);
                sb->state = sb->snapshot_id[0] ? VMSNAP_SANDBOX_PAUSED : VMSNAP_SANDBOX_ERROR;
                if (!sb->snapshot_id[0])
                        snprintf(sb->error, sizeof(sb->error), "the daemon stopped during the "
                                 "first pause and the VMM is gone");
                release_files(h, sb->id);
                recovery_say(h, sb->id, "pause rolled back (stopped at step %s): its pending "
                             "snapshot aborted, %sthe VMM could not resume; %s", j->step, killed,
                             sb->snapshot_id[0] ? "paused on its previous snapshot" : "error");
                return;
        }
        kill_leftover(l, killed); /* committed: the snapshot is the sandbox now */
        release_files(h, sb->id);
        sb->state = VMSNAP_SANDBOX_PAUSED;
        sb->pid = 0;
        if (strcmp(previous, sb->snapshot_id) != 0)
                drop_snapshot(h, previous);
        recovery_say(h, sb->id, "pause finished (stopped at step %s, after the store's commit): "
                     "%skept snapshot %s; paused", j->step, killed, sb->snapshot_id);
}

/* A pause that answered (its row paused on the new snapshot, durably, at step `released`)
 * but stopped before its superseded snapshot was deleted: that is done now. Whatever the
 * sandbox did since (a resume, another pause), it no longer stands on that snapshot;
 * drop_snapshot deletes only a pause snapshot nothing depends on. */
static void finish_released(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                            const struct journal *j)
{
        char previous[VMSNAP_ID_LEN + 1];
        previous_of(j, previous);
        if (!previous[0] || strcmp(previous, sb->snapshot_id) == 0)
                return;
        drop_snapshot(h, previous);
        recovery_say(h, sb->id, "pause finished (stopped at step released, after its answer): "
                     "its superseded snapshot %s removed", previous);
}

/* The state an open entry of `op` leaves its sandbox in; an entry whose sandbox is not in
 * it was already finished (its closing write failed) and must not be replayed. */
static bool entry_current(const struct journal *j, const struct vmsnap_sandbox *sb)
{
        static const struct {
                const char *op;
                enum vmsnap_sandbox_state state;
        } in[] = {{"create", VMSNAP_SANDBOX_CREATING},
                  {"pause", VMSNAP_SANDBOX_PAUSING},
                  {"resume", VMSNAP_SANDBOX_RESUMING},
                  {"destroy", VMSNAP_SANDBOX_STOPPING}};
        for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
                if (strcmp(j->op, in[i].op) == 0)
                        return sb->state == in[i].state;
        return true; /* snapshot: the state does not change; the newest entry is current */
}

/* Finishes a destroy: the row says stopped first, then the snapshot only it held goes. */
static void recover_destroy(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                            const struct journal *j)
{
        json_t *o = json_loads(j->data, 0, NULL);
        const char *snap = json_string_value(json_object_get(o, "snapshot"));
        char id[VMSNAP_ID_LEN + 1];
        snprintf(id, sizeof(id), "%s", snap && *snap ? snap : sb->snapshot_id);
        json_decref(o);
        char killed[64];
        kill_leftover(l, killed);
        recovery_say(h, sb->id, "destroy finished (stopped at step %s): %sstopped", j->step,
                     killed);
        release_files(h, sb->id);
        sb->state = VMSNAP_SANDBOX_STOPPED;
        sb->snapshot_id[0] = '\0';
        sb->pid = 0;
        sb->jail_uid = 0;
        row_put(h, sb, NULL);
        drop_snapshot(h, id);
}

static void recover_entry(struct vmsnap_host *h, const struct journal *j, bool newest)
{
        struct vmsnap_sandbox sb;
        struct journal done = *j;
        if (row_get(h, j->sandbox_id, &sb, NULL) < 0 || !newest || !entry_current(j, &sb)) {
                if (strcmp(j->op, "pause") == 0 && strcmp(j->step, "released") == 0)
                        finish_released(h, &sb, j);
                journal_done(h, &done, NULL, NULL); /* stale: closed, not replayed */
                return;
        }
        struct live *l = live_get(h, sb.id);
        l->driver = vmsnap_vmm_find(sb.vmm);
        try_attach(h, l, &sb);
        struct vmsnap_diag ignore = {0};
        char killed[64];
        if (strcmp(j->op, "pause") == 0) {
                recover_pause(h, l, &sb, j);
        } else if (strcmp(j->op, "create") == 0 && !step_before(j, "booted") && l->vm) {
                sb.state = VMSNAP_SANDBOX_RUNNING;
                recovery_say(h, sb.id, "create finished (stopped at step %s): its VMM had "
                             "booted; running", j->step);
        } else if (strcmp(j->op, "create") == 0) {
                kill_leftover(l, killed);
                release_files(h, sb.id);
                net_release(h, sb.id); /* it never ran: its address goes back to the pool */
                sb.state = VMSNAP_SANDBOX_ERROR;
                snprintf(sb.error, sizeof(sb.error), "the daemon stopped while creating it");
                recovery_say(h, sb.id, "create rolled back (stopped at step %s): %serror",
                             j->step, killed);
        } else if (strcmp(j->op, "resume") == 0) {
                kill_leftover(l, killed); /* the snapshot was only read: back to paused on it */
                release_files(h, sb.id);
                sb.state = VMSNAP_SANDBOX_PAUSED;
                recovery_say(h, sb.id, "resume rolled back (stopped at step %s): %spaused on "
                             "snapshot %s", j->step, killed, sb.snapshot_id);
        } else if (strcmp(j->op, "snapshot") == 0) {
                bool aborted = step_before(j, "committed");
                if (aborted)
                        recover_abort_txn(h, j);
                bool resumed = l->vm && l->driver->resume(l->vm, &ignore) == 0;
                recovery_say(h, sb.id, "template snapshot %s (stopped at step %s)%s",
                             aborted ? "rolled back" : "kept", j->step,
                             resumed ? ": the VMM resumed" : "");
        } else if (strcmp(j->op, "destroy") == 0) {
                recover_destroy(h, l, &sb, j);
        }
        if (sb.state != VMSNAP_SANDBOX_RUNNING)
                sb.pid = 0;
        else if (l->vm)
                sb.pid = l->driver->pid(l->vm);
        journal_done(h, &done, &sb, NULL);
}

/* Running sandboxes without an open entry: re-attach, or record that the VMM is gone. */
static void reattach_running(struct vmsnap_host *h)
{
        struct vmsnap_sandbox *v = NULL;
        size_t n = 0;
        if (row_list(h, false, &v, &n, NULL) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                if (v[i].state != VMSNAP_SANDBOX_RUNNING) {
                        jail_release(h, v[i].id); /* no VMM: no cgroup, no jail dir */
                        continue;
                }
                struct live *l = live_get(h, v[i].id);
                l->driver = vmsnap_vmm_find(v[i].vmm);
                try_attach(h, l, &v[i]);
                if (l->vm)
                        continue;
                jail_release(h, v[i].id);
                recovery_say(h, v[i].id, "its VMM exited while the daemon was not running; "
                             "error%s", v[i].snapshot_id[0] ? " (its last pause snapshot is kept)"
                                                            : "");
                v[i].state = VMSNAP_SANDBOX_ERROR;
                v[i].pid = 0;
                snprintf(v[i].error, sizeof(v[i].error), "the VMM exited while the daemon was "
                         "not running%s", v[i].snapshot_id[0] ? "; its last pause snapshot is "
                                                               "kept" : "");
                row_put(h, &v[i], NULL);
        }
        free(v);
}

/* An entry of the background thread's (merge, base): it never moves the row's state. */
static bool background_entry(const struct journal *j)
{
        return strcmp(j->op, "merge") == 0 || strcmp(j->op, "base") == 0;
}

int recover(struct vmsnap_host *h, struct vmsnap_diag *d)
{
        /* Runs inside vmsnap_host_open, before any other thread can use the host: the db
         * lock is not taken here (drop_snapshot takes it itself). */
        struct journal *entries = NULL;
        size_t n = 0;
        int r = journal_open_entries(h, &entries, &n, d);
        for (size_t i = 0; r == 0 && i < n; i++) {
                if (background_entry(&entries[i]))
                        continue; /* after the lifecycle entries: the row is settled then */
                bool newest = true; /* no later open entry for the same sandbox */
                for (size_t k = i + 1; k < n; k++)
                        newest &= strcmp(entries[k].sandbox_id, entries[i].sandbox_id) != 0 ||
                                  background_entry(&entries[k]);
                recover_entry(h, &entries[i], newest);
        }
        for (size_t i = 0; r == 0 && i < n; i++)
                if (strcmp(entries[i].op, "merge") == 0)
                        recover_merge(h, &entries[i]);
                else if (strcmp(entries[i].op, "base") == 0)
                        recover_base(h, &entries[i]);
        if (r == 0)
                reattach_running(h);
        free(entries);
        return r;
}
