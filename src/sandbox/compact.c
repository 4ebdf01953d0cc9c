/* Background merge: a paused sandbox whose memory chain reached the merge cap gets it folded
 * into one generation by a low-priority thread, off the pause path (docs/sandbox.md,
 * "Background merge"). The merge builds a new pause snapshot beside the sandbox's (hard
 * links of its files, merged in place there, committed by the store) and moves the sandbox
 * onto it only if the sandbox still stands on the snapshot the merge started from (paused
 * on it, or running from it): a pause or destroy that came meanwhile wins and the merged
 * snapshot is dropped. */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IOPRIO_CLASS_IDLE   3
#define IOPRIO_CLASS_SHIFT  13
#define IOPRIO_WHO_PROCESS  1

/* One merge in progress: the sandbox, the snapshot it started from, the pending one. */
struct merge {
        struct vmsnap_sandbox sb;
        char from[VMSNAP_ID_LEN + 1];
        char from_dir[PATH_LEN];
        struct vmsnap_store_txn *txn;
        struct journal j;
};


unsigned sync_merge_cap(const struct vmsnap_host *h)
{
        unsigned cap = h->merge_cap * 4;
        return cap < VMSNAP_MEM_MAX_BUILDS - 1 ? cap : VMSNAP_MEM_MAX_BUILDS - 1;
}

/* Whether the sandbox may stand on a merged copy of its snapshot: paused on it, or running
 * on a private copy of its memory made from it (the next pause diffs against whichever of
 * the two it stands on: same content, same result). A lazily restored VM is not: its page
 * server still reads the snapshot's files. */
static bool swappable(const struct vmsnap_sandbox *sb)
{
        if (sb->state == VMSNAP_SANDBOX_PAUSED)
                return true;
        const struct vmsnap_vmm_driver *drv = vmsnap_vmm_find(sb->vmm);
        return sb->state == VMSNAP_SANDBOX_RUNNING && drv && !drv->lazy_uffd;
}

static bool wants_merge(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb)
{
        return swappable(sb) && sb->snapshot_id[0] && sb->generation >= h->merge_cap;
}

/* Brings every file of the snapshot in from_dir but its envelope into the pending dir, by
 * hard link (the snapshot's files are never modified, so sharing their inodes is safe). */
static int link_files(const char *from_dir, int to_fd, struct vmsnap_diag *d)
{
        _cleanup_close_ int from_fd = vmsnap_fs_open_dir(from_dir);
        if (from_fd < 0)
                return vmsnap_diag(d, from_fd, "%s: cannot open: %s", from_dir,
                                   strerror(-from_fd));
        DIR *dh = vmsnap_fs_list_dir(from_fd);
        if (!dh)
                return vmsnap_diag(d, -errno, "%s: cannot list: %s", from_dir, strerror(errno));
        int r = 0;
        struct dirent *e;
        while (r == 0 && (e = readdir(dh))) {
                if (e->d_name[0] == '.' || strcmp(e->d_name, VMSNAP_ENVELOPE_NAME) == 0)
                        continue; /* ".", "..", the store's temp files; the store writes ours */
                r = vmsnap_fs_link_or_copy(from_fd, e->d_name, to_fd, e->d_name, d);
        }
        closedir(dh);
        return r;
}

/* Under the sandbox's lock: checks it still wants a merge, begins the pending snapshot and
 * the journal entry. Returns 1 when a merge began, 0 when there is nothing to do, -errno. */
static int merge_begin(struct vmsnap_host *h, struct live *l, struct merge *m,
                       struct vmsnap_diag *d)
{
        pthread_mutex_lock(&h->db_lock);
        int r = row_get(h, l->id, &m->sb, d);
        pthread_mutex_unlock(&h->db_lock);
        if (r < 0 || !wants_merge(h, &m->sb))
                return r < 0 ? r : 0;
        struct vmsnap_snapshot from;
        snprintf(m->from, sizeof(m->from), "%s", m->sb.snapshot_id);
        r = snapshot_lookup(h, m->from, &from, m->from_dir, d);
        if (r < 0)
                return r;
        struct vmsnap_snapshot_spec spec = {
                .kind = VMSNAP_SNAPSHOT_PAUSE,
                .template_id = from.template_id,
                .vmm = from.vmm,
                .vmm_version = from.vmm_version,
                .vcpus = from.vcpus,
                .memory = from.memory,
        };
        pthread_mutex_lock(&h->db_lock);
        r = vmsnap_store_create_begin(h->store, &spec, &m->txn, d);
        pthread_mutex_unlock(&h->db_lock);
        if (r < 0)
                return r;
        char data[256];
        snprintf(data, sizeof(data), "{\"txn\":\"%s\",\"snapshot\":\"%s\"}",
                 vmsnap_store_txn_id(m->txn), m->from);
        r = db_journal_begin(h, &m->j, m->sb.id, "merge", data, NULL, false, d);
        if (r < 0) {
                db_txn_abort(h, &m->txn);
                return r;
        }
        return 1;
}

/* Without the sandbox's lock: links, merges and commits the new snapshot. */
static int merge_build(struct vmsnap_host *h, struct merge *m, struct vmsnap_snapshot *ret,
                       struct vmsnap_diag *d)
{
        vmsnap_crashpoint("merge.begun");
        int r = link_files(m->from_dir, vmsnap_store_txn_dirfd(m->txn), d);
        if (r == 0)
                r = vmsnap_mem_merge(vmsnap_store_txn_dir(m->txn), NULL, d);
        if (r == 0)
                r = db_journal_step(h, &m->j, "merged", NULL, NULL, d);
        vmsnap_crashpoint("merge.merged");
        pthread_mutex_lock(&h->db_lock);
        if (r == 0) /* all but the merged memory are links of `from`'s files */
                vmsnap_store_txn_reuse_checksums(m->txn, m->from, NULL);
        if (r == 0)
                r = vmsnap_store_txn_commit(m->txn, ret, d);
        else
                vmsnap_store_txn_abort(m->txn, NULL);
        vmsnap_store_txn_free(TAKE_PTR(m->txn));
        pthread_mutex_unlock(&h->db_lock);
        if (r == 0) /* committed whatever this write does: recovery finds it ready */
                db_journal_step(h, &m->j, "committed", NULL, NULL, NULL);
        vmsnap_crashpoint("merge.committed");
        return r;
}

/* Moves the sandbox from snapshot `from` onto `to` when its row, read under its lock, still
 * stands on `from` (swappable; the journal step and the row in one transaction); then drops
 * the snapshot that lost. Returns true when the sandbox moved. */
static bool merge_swap(struct vmsnap_host *h, struct live *l, struct journal *j,
                       const char *from, const struct vmsnap_snapshot *to)
{
        struct vmsnap_sandbox sb;
        bool swap = false;
        pthread_mutex_lock(&l->op_lock);
        pthread_mutex_lock(&h->db_lock);
        if (row_get(h, l->id, &sb, NULL) == 0 && swappable(&sb) &&
            strcmp(sb.snapshot_id, from) == 0) {
                snprintf(sb.snapshot_id, sizeof(sb.snapshot_id), "%s", to->id);
                sb.generation = to->generation;
                swap = journal_step(h, j, "swapped", NULL, &sb, NULL) == 0;
        }
        pthread_mutex_unlock(&h->db_lock);
        pthread_mutex_unlock(&l->op_lock);
        if (swap)
                vmsnap_crashpoint("merge.swapped");
        drop_snapshot(h, swap ? from : to->id);
        return swap;
}

/* Merges one sandbox's chain if it still wants it; counts the outcome. */
static void merge_one(struct vmsnap_host *h, const char *id)
{
        struct live *l = live_get(h, id);
        if (!l)
                return;
        struct merge m = {0};
        struct vmsnap_diag d = {0};
        pthread_mutex_lock(&l->op_lock);
        int r = merge_begin(h, l, &m, &d);
        pthread_mutex_unlock(&l->op_lock);
        if (r <= 0) {
                if (r < 0)
                        trace_merge(h, VMSNAP_MERGE_FAILED);
                return;
        }
        struct vmsnap_snapshot made;
        r = merge_build(h, &m, &made, &d);
        bool swapped = r == 0 && merge_swap(h, l, &m.j, m.from, &made);
        db_journal_done(h, &m.j, NULL, NULL);
        trace_merge(h, r < 0 ? VMSNAP_MERGE_FAILED
                             : swapped ? VMSNAP_MERGE_DONE : VMSNAP_MERGE_RACED);
}

/* Whether a listed sandbox may want a merge once its running operation ends: a resume
 * seen half-way (resuming) becomes running, which wants_merge may accept. merge_one decides
 * under the sandbox's lock, after that operation. */
static bool may_want_merge(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb)
{
        if (sb->state == VMSNAP_SANDBOX_RESUMING)
                return sb->snapshot_id[0] && sb->generation >= h->merge_cap;
        return wants_merge(h, sb);
}

/* One pass over the sandboxes whose chain reached the cap. */
static void merge_pass(struct vmsnap_host *h)
{
        struct vmsnap_sandbox *v = NULL;
        size_t n = 0;
        if (vmsnap_sandbox_list(h, false, &v, &n, NULL) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                pthread_mutex_lock(&h->compact_lock);
                bool stop = h->compact_stop;
                pthread_mutex_unlock(&h->compact_lock);
                if (stop)
                        break;
                compact_run_drops(h); /* a pause that came meanwhile waits for no merge */
                if (may_want_merge(h, &v[i]))
                        merge_one(h, v[i].id);
        }
        free(v);
}

/* ---- what a pause leaves for after its answer ---- */

/* A superseded snapshot to delete and its pause's entry to close (previous set), or a
 * released memory directory to remove (trash set). */
struct deferred_drop {
        struct journal j;
        char previous[VMSNAP_ID_LEN + 1];
        char trash[PATH_LEN];
        struct deferred_drop *next;
};

static void drop_now(struct vmsnap_host *h, struct deferred_drop *x)
{
        if (x->trash[0])
                remove_private_dir(x->trash);
        if (!x->previous[0])
                return;
        vmsnap_crashpoint("pause.drop");
        drop_snapshot(h, x->previous);
        db_journal_done(h, &x->j, NULL, NULL);
}

void compact_run_drops(struct vmsnap_host *h)
{
        pthread_mutex_lock(&h->compact_lock);
        struct deferred_drop *x = h->drops;
        h->drops = NULL;
        pthread_mutex_unlock(&h->compact_lock);
        while (x) {
                struct deferred_drop *next = x->next;
                drop_now(h, x);
                free(x);
                x = next;
        }
}

static void *compactor(void *arg);

/* Queues x for the background thread (started on first need), or runs it here when the
 * thread cannot take it (stopping, or x is the caller's `now` because memory ran out). */
static void defer(struct vmsnap_host *h, struct deferred_drop *x, struct deferred_drop *now)
{
        pthread_mutex_lock(&h->compact_lock);
        if (x && !h->compact_started && !h->compact_stop)
                h->compact_started = pthread_create(&h->compact_thread, NULL, compactor, h) == 0;
        bool queued = x && h->compact_started && !h->compact_stop;
        if (queued) {
                struct deferred_drop **tail = &h->drops;
                while (*tail)
                        tail = &(*tail)->next;
                *tail = x;
                pthread_cond_signal(&h->compact_cond);
        }
        pthread_mutex_unlock(&h->compact_lock);
        if (queued)
                return;
        drop_now(h, x ? x : now); /* no memory for the queue: the same work, here */
        free(x);
}

void compact_defer_drop(struct vmsnap_host *h, const struct journal *j, const char *previous)
{
        struct deferred_drop *x = calloc(1, sizeof(*x)), now = {.j = *j};
        snprintf(now.previous, sizeof(now.previous), "%s", previous);
        if (x)
                *x = now;
        defer(h, x, &now);
}

void compact_defer_remove(struct vmsnap_host *h, const char *dir)
{
        struct deferred_drop *x = calloc(1, sizeof(*x)), now = {0};
        snprintf(now.trash, sizeof(now.trash), "%s", dir);
        if (x)
                *x = now;
        defer(h, x, &now);
}

static void *compactor(void *arg)
{
        struct vmsnap_host *h = arg;
        pid_t tid = (pid_t)syscall(SYS_gettid);
        setpriority(PRIO_PROCESS, (id_t)tid, 10); /* per thread on Linux */
        syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT);
        pthread_mutex_lock(&h->compact_lock);
        while (!h->compact_stop) {
                if (h->drops) { /* first: they are quick, and a merge may take long */
                        pthread_mutex_unlock(&h->compact_lock);
                        compact_run_drops(h);
                        pthread_mutex_lock(&h->compact_lock);
                        continue;
                }
                if (!h->compact_kicked) {
                        pthread_cond_wait(&h->compact_cond, &h->compact_lock);
                        continue;
                }
                h->compact_kicked = false;
                pthread_mutex_unlock(&h->compact_lock);
                base_pass(h); /* first: a booted VM may pause any moment */
                merge_pass(h);
                pthread_mutex_lock(&h->compact_lock);
        }
        pthread_mutex_unlock(&h->compact_lock);
        return NULL;
}

void compact_kick(struct vmsnap_host *h)
{
        pthread_mutex_lock(&h->compact_lock);
        if (!h->compact_started && !h->compact_stop)
                h->compact_started = pthread_create(&h->compact_thread, NULL, compactor, h) == 0;
        h->compact_kicked = true;
        pthread_cond_signal(&h->compact_cond);
        pthread_mutex_unlock(&h->compact_lock);
}

void compact_stop(struct vmsnap_host *h)
{
        pthread_mutex_lock(&h->compact_lock);
        h->compact_stop = true;
        bool started = h->compact_started;
        pthread_cond_signal(&h->compact_cond);
        pthread_mutex_unlock(&h->compact_lock);
        if (started)
                pthread_join(h->compact_thread, NULL);
        compact_run_drops(h); /* queued after the thread's last look: here, before the host goes */
}

void compact_kick_if_due(struct vmsnap_host *h)
{
        struct vmsnap_sandbox *v = NULL;
        size_t n = 0;
        bool due = false;
        if (vmsnap_sandbox_list(h, false, &v, &n, NULL) < 0)
                return;
        for (size_t i = 0; i < n && !due; i++)
                due = wants_merge(h, &v[i]);
        free(v);
        if (due)
                compact_kick(h);
}

/* ---- recovery of an open merge entry ---- */

static void entry_ids(const struct journal *j, char txn[VMSNAP_ID_LEN + 1],
                      char from[VMSNAP_ID_LEN + 1])
{
        json_t *o = json_loads(j->data, 0, NULL);
        const char *t = json_string_value(json_object_get(o, "txn"));
        const char *f = json_string_value(json_object_get(o, "snapshot"));
        snprintf(txn, VMSNAP_ID_LEN + 1, "%s", t ? t : "");
        snprintf(from, VMSNAP_ID_LEN + 1, "%s", f ? f : "");
        json_decref(o);
}

void recover_merge(struct vmsnap_host *h, const struct journal *j)
{
        struct journal done = *j;
        char txn[VMSNAP_ID_LEN + 1], from[VMSNAP_ID_LEN + 1];
        entry_ids(j, txn, from);
        struct vmsnap_snapshot made;
        bool committed = txn[0] && vmsnap_store_get(h->store, txn, &made, NULL) == 0 &&
                         made.state == VMSNAP_SNAPSHOT_READY;
        struct live *l = live_get(h, j->sandbox_id);
        if (strcmp(j->step, "swapped") == 0) {
                struct vmsnap_sandbox sb; /* the row moved with the step: `from` lost */
                if (row_get(h, j->sandbox_id, &sb, NULL) < 0 || strcmp(sb.snapshot_id, from))
                        drop_snapshot(h, from);
                recovery_say(h, j->sandbox_id, "merge finished (stopped at step swapped): "
                             "the merged-away snapshot removed");
        } else if (committed && l) {
                merge_swap(h, l, &done, from, &made);
                recovery_say(h, j->sandbox_id, "merge finished (stopped at step %s): its "
                             "merged snapshot %s taken over", j->step, made.id);
        } else if (txn[0]) {
                recovery_say(h, j->sandbox_id, "merge rolled back (stopped at step %s): its "
                             "pending snapshot aborted", j->step);
                struct vmsnap_store_txn *t = NULL; /* never committed: the pending one goes */
                if (vmsnap_store_create_resume(h->store, txn, &t, NULL) == 0)
                        vmsnap_store_txn_abort(t, NULL);
                vmsnap_store_txn_free(t);
        }
        journal_done(h, &done, NULL, NULL);
}
