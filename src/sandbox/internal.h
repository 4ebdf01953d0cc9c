/* Internals of the sandbox layer: the host object, sandbox rows, the journal, the guest
 * agent client. Not part of the public API. */
#ifndef VMSNAP_SANDBOX_INTERNAL_H
#define VMSNAP_SANDBOX_INTERNAL_H

#include <vmsnap/sandbox.h>
#include <vmsnap/vmm.h>

#include "sandbox/touched.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>

#define DEFAULT_MEM_ROOT "/dev/shm/vmsnap"
#define DEFAULT_MEMORY   (256ull << 20)
#define PATH_LEN         4096

/* An open journal entry. */
struct journal {
        int64_t seq;
        char sandbox_id[VMSNAP_ID_LEN + 1];
        char op[16];
        char step[16];
        char data[1024]; /* JSON object text */
        /* The entry's opening and steps commit without waiting for the WAL's fsync; only
         * its closing commit does (docs/sandbox.md "Relaxed journal commits"). */
        bool relaxed;
};

/* The base a booted VM's first pause writes over (base.c): a copy of its memory taken in the
 * background after the boot, in a pending store snapshot. Guarded by the host's
 * compact_lock. */
enum base_state {
        BASE_NONE,
        BASE_WANTED,   /* the background thread is to build it */
        BASE_BUILDING, /* the background thread is building it (cancel: drop it when done) */
        BASE_READY,    /* built: txn, j and mark are set, for the first pause to take */
        BASE_DROP,     /* built but no longer wanted, or used by the pause that took it: the
                          background thread releases it */
};
struct live_base {
        enum base_state state;
        bool cancel;
        bool used;      /* BASE_DROP: a pause wrote over it (counted so) */
        uint64_t bytes; /* the data bytes of the copy (READY, DROP) */
        struct vmsnap_store_txn *txn; /* the pending snapshot holding the copy */
        struct journal j;             /* its open `base` entry */
        struct touch_mark mark;       /* taken before the PAGEOUT that preceded the copy */
};

/* A sandbox the host knows in this process: its operation lock and live VM handle. */
struct live {
        char id[VMSNAP_ID_LEN + 1];
        pthread_mutex_t op_lock; /* held for a whole operation on this sandbox */
        struct vmsnap_vm *vm;    /* NULL when no VMM process is attached */
        const struct vmsnap_vmm_driver *driver;
        int agent_fd;            /* connection to the guest agent, -1 when none */
        pid_t pager_pid;         /* the sandbox's page server (lazy restore), 0 when none */
        bool pager_jailed;       /* it runs in its own jail (writes only into the run dir) */
        char accel[8], accel_reason[256]; /* of the last VMM started or attached (live_lock) */
        struct touch_mark touch; /* taken when vm was restored onto a fresh memory file */
        struct live_base base;   /* after a boot: the first pause's base (h->compact_lock) */
        struct vmsnap_host *host;
        struct live *next;
};

struct vmsnap_host {
        char root[PATH_LEN], mem_root[PATH_LEN], guest_dir[PATH_LEN];
        bool jailed;                    /* every VMM starts in its sandbox's jail */
        struct vmsnap_jail_config jail; /* its strings point into jail_strings */
        int jail_handover;              /* jail_handover_ok: 0 not probed, 1 works, -1 not */
        char jail_strings[3][PATH_LEN]; /* cgroup_root, cgroup_parent, jailer */
        bool net_on;                    /* sandboxes get networks (net.c) */
        struct vmsnap_net_config net;   /* netns_dir points into net_dir */
        char net_dir[PATH_LEN];
        char vmm[33];
        unsigned merge_cap;
        vmsnap_recovery_fn on_recovery; /* recovery's reports (may be NULL) */
        void *recovery_ctx;
        struct vmsnap_store *store;
        sqlite3 *db;
        pthread_mutex_t db_lock;   /* one SQL statement sequence at a time */
        pthread_mutex_t live_lock; /* guards the `lives` list (not the entries' contents) */
        struct live *lives;
        pthread_mutex_t stats_lock; /* guards stats */
        struct vmsnap_pause_stats stats;
        pthread_mutex_t compact_lock; /* guards the compact_ fields */
        pthread_cond_t compact_cond;
        pthread_t compact_thread; /* the background merge thread, started on first need */
        bool compact_started, compact_stop, compact_kicked;
        struct deferred_drop *drops; /* a pause's leftovers for that thread (compact_lock) */
};

/* ---- rows and journal (db.c) ---- */

/* Creates or migrates the sandbox tables and extends the store's dependents view. */
int sandbox_schema(struct vmsnap_host *h, struct vmsnap_diag *d);

/* Reads the row of an exact id. Returns 0, -ENOENT or -errno. */
int row_get(struct vmsnap_host *h, const char *id, struct vmsnap_sandbox *ret,
            struct vmsnap_diag *d);

/* Inserts or replaces a row (updated = now). */
int row_put(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d);

/* Resolves an id, name or unique id prefix. */
int row_resolve(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                struct vmsnap_diag *d);

/* Removes a row (a create that failed); its journal entries stay as history. */
void row_delete(struct vmsnap_host *h, const char *id);

/* Lists rows (all, or those not stopped), oldest first. */
int row_list(struct vmsnap_host *h, bool all, struct vmsnap_sandbox **ret, size_t *ret_n,
             struct vmsnap_diag *d);


/* Opens a journal entry (before the operation acts) and, when sb is non-NULL, writes the
 * sandbox row in the same transaction. relaxed: see struct journal. Returns 0 and
 * ret->seq, or -errno. */
int journal_begin(struct vmsnap_host *h, struct journal *j, const char *sandbox_id,
                  const char *op, const char *data, struct vmsnap_sandbox *sb, bool relaxed,
                  struct vmsnap_diag *d);

/* Records progress: the entry's step (and data when non-NULL) and, when sb is non-NULL,
 * the sandbox row, in one transaction. */
int journal_step(struct vmsnap_host *h, struct journal *j, const char *step, const char *data,
                 struct vmsnap_sandbox *sb, struct vmsnap_diag *d);

/* Closes the entry (and writes sb when non-NULL) in one transaction. */
int journal_done(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                 struct vmsnap_diag *d);

/* Lists the open entries, oldest first (malloc'd). */
int journal_open_entries(struct vmsnap_host *h, struct journal **ret, size_t *ret_n,
                         struct vmsnap_diag *d);

/* ---- the host (host.c) ---- */

/* The live entry of a sandbox id (created on first use; never freed before close). */
struct live *live_get(struct vmsnap_host *h, const char *id);

/* Records which accelerator l's new VM got and why (after boot, restore or attach). */
void live_note_accel(struct vmsnap_host *h, struct live *l);

/* Fills sb->accel and sb->accel_reason from its live entry (empty when none is known). */
void live_accel_fill(struct vmsnap_host *h, struct vmsnap_sandbox *sb);

/* ---- recovery (recover.c) ---- */

/* Reports one recovery action on sandbox id to the host's on_recovery (printf format). */
void recovery_say(struct vmsnap_host *h, const char *id, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* ---- the memory root (mem-root.c) ---- */

/* The default memory root of a store root: DEFAULT_MEM_ROOT-<16 hex of XXH3-128(root)>. */
void mem_root_default(const char *root, char out[PATH_LEN]);

/* Sets h->mem_root: configured when given; else the pre-1.0 shared DEFAULT_MEM_ROOT while
 * one of h's running sandboxes has its memory there; else mem_root_default(h->root). Needs
 * the sandbox tables. */
void mem_root_choose(struct vmsnap_host *h, const char *configured);

/* Makes path a directory of this euid, mode 0700, neither a symlink nor sticky; an existing
 * one of another owner is refused (-EPERM), and so is one not 0700 when
 * existing_must_be_0700 (else it is made 0700). Returns 0 or -errno with d naming path. */
int private_dir(const char *path, bool existing_must_be_0700, struct vmsnap_diag *d);

/* Paths of a sandbox: run dir, memory file, template memory file. */
void path_run_dir(const struct vmsnap_host *h, const char *id, char out[PATH_LEN]);
void path_memory(const struct vmsnap_host *h, const char *id, char out[PATH_LEN]);
void path_template_memory(const struct vmsnap_host *h, const char *snapshot_id,
                          char out[PATH_LEN]);

/* ---- template-memory.c ---- */

/* Makes dst (in a clone's own memory directory) a hard link of the template's memory
 * materialized once per host (made from snapdir when missing or of another size than
 * `size`). Returns 0 or -errno (with d). */
int template_memory_link(struct vmsnap_host *h, const char *template_id, uint64_t size,
                         const char *snapdir, const char *dst, struct vmsnap_diag *d);

/* Removes the materialized template memories that no clone links any more. */
void template_memory_sweep(struct vmsnap_host *h);

/* A spec for the driver from a sandbox row, with paths in `buf` (owned by the caller). */
struct spec_buf {
        char run_dir[PATH_LEN], kernel[PATH_LEN], initrd[PATH_LEN], rootfs[PATH_LEN],
                memory[PATH_LEN], jail_root[PATH_LEN], netns_path[PATH_LEN];
        struct vmsnap_jail_spec jail; /* spec.jail points here when the sandbox is jailed */
};
void build_spec(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                struct spec_buf *buf, struct vmsnap_vm_spec *ret);

/* ---- networks (net.c, docs/network.md) ---- */

/* Creates the sandbox_net table. */
int net_schema_create(struct vmsnap_host *h, struct vmsnap_diag *d);

/* On a networked host, unless spec says none: takes the lowest free slot of the pool for sb
 * and records it with the egress policy (-ENOSPC: the pool is used up). Before any VMM. */
int net_alloc(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
              const struct vmsnap_sandbox_spec *spec, struct vmsnap_diag *d);

/* Before a VMM starts (boot or restore, after jail_prepare): when sb holds a network, makes
 * its namespace if missing (a first start, or after a host reboot), points the jail at it
 * and gives the VM its NIC. No-op for a sandbox without one. */
int net_prepare(struct vmsnap_host *h, const struct vmsnap_sandbox *sb, struct spec_buf *buf,
                struct vmsnap_vm_spec *spec, struct vmsnap_diag *d);

/* Before a template's store commit, db lock held: records the network of the sandbox it is
 * made from (its egress policy, or none) under the pending snapshot id, for spawns to
 * inherit. No-op on a host without --network. */
int net_template_record(struct vmsnap_host *h, const char *sandbox_id, const char *snapshot_id,
                        struct vmsnap_diag *d);

/* The network a template's spawns inherit: *ret_none, or the policy in *ret. -ENOENT when
 * the template has no record (made without --network, or before templates recorded one). */
int net_template_policy(struct vmsnap_host *h, const char *snapshot_id, bool *ret_none,
                        struct vmsnap_net_egress *ret, struct vmsnap_diag *d);

/* After the VMM is dead (destroy, failed create): removes id's network and its row. */
void net_release(struct vmsnap_host *h, const char *id);

/* Host open, after recovery: releases the networks of stopped or missing sandboxes and sweeps
 * what a crash left of unknown ids. */
int net_recover(struct vmsnap_host *h, struct vmsnap_diag *d);

/* ---- jails (jail.c) ---- */

/* The next free jail uid of the configured range for sb (sb->jail_uid set), when the host
 * jails VMMs and sb holds none yet. Called with the db lock held, before sb's row is
 * written in the same critical section. Returns 0, -EAGAIN (the range is used up) or
 * -errno with d. */
int jail_uid_alloc(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d);

/* Gives a sandbox made while VMMs ran unjailed a jail uid (a daemon restarted without
 * --insecure-no-jail), and writes its row, under the db lock. No-op when it has one. */
int jail_uid_claim(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d);

/* Fills buf->jail (and spec->jail) for sb's VMM: config, name (the id), root dir
 * <root>/jails/<id>, uid, limits. No I/O. Unjailed hosts and sandboxes: spec->jail NULL. */
void jail_spec_fill(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                    struct spec_buf *buf, struct vmsnap_vm_spec *spec);

/* Makes what a VMM's jail needs before it starts: the jail root dir (0700), the cgroup with
 * its limits, the run dir owned by the jail's uid (0700), and the shared read-only inputs
 * (kernel, initramfs, base image) 0640 root:shared_gid. Unjailed: the run dir 0700. */
int jail_prepare(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                 const struct vmsnap_vm_spec *spec, struct vmsnap_diag *d);

/* True when a jailed VMM can be handed a read-only descriptor of a template's memory (the
 * jailer's --probe-handover, run once per host); jailed clones share memory only then. */
bool jail_handover_ok(struct vmsnap_host *h);

/* Hands a file the VMM opens (its memory file, its disk) to sb's jail uid, mode 0600
 * whatever the umask. Unjailed: only the mode. */
int jail_own(struct vmsnap_host *h, const struct vmsnap_sandbox *sb, const char *path,
             struct vmsnap_diag *d);

/* After the VMM is gone: removes its cgroup (killing anything left in it) and the jail
 * root dir. Safe to call when there is nothing to remove. */
void jail_release(struct vmsnap_host *h, const char *id);

/* ---- base images (base-image.c) ---- */

/* Pins the guest image's rootfs.ext4 as <root>/images/rootfs-<hash>.ext4 (hard link or
 * copy, never replaced) and writes that path into out. Returns 0 or -errno with d. */
int base_image_pin(struct vmsnap_host *h, char out[PATH_LEN], struct vmsnap_diag *d);

/* The pinned base image the disk in disk_dir stands on: the file name that
 * disk_dir/rootfs.meta gives, which must be rootfs-<hash>.ext4, taken from <root>/images/
 * whatever directory the meta names. Returns 0, -ENOENT or -EBADMSG (with d). */
int base_image_of(const struct vmsnap_host *h, const char *disk_dir, char out[PATH_LEN],
                  struct vmsnap_diag *d);

/* The driver of a sandbox's VMM, or NULL with d. */
const struct vmsnap_vmm_driver *driver_for(const char *vmm, struct vmsnap_diag *d);

/* Removes a sandbox's run dir and memory files (only files this layer created). */
void release_files(struct vmsnap_host *h, const char *id);

/* Memory directories released by a pause wait here for the background thread:
 * <mem_root>/.released-<id>.<n>; the daemon's start removes any left. */
#define RELEASED_PREFIX ".released-"

/* release_files for a pause, whose answer should not wait for the kernel to free the guest's
 * RAM (unlinking 150 MB of tmpfs takes ~14 ms): the memory directory is renamed out of the
 * sandbox's name (a resume makes a new one) and removed by the background thread. */
void release_files_later(struct vmsnap_host *h, const char *id);

/* Removes dir's entries and dir itself, best effort (a sandbox's run or memory directory:
 * flat, ours). */
void remove_private_dir(const char *dir);

/* Timeouts that grow with guest memory: base + 1 s per 128 MiB. */
int timeout_ms_for(uint64_t memory, int base_ms);

/* ---- the guest agent (agent.c) ---- */

/* Sends one request and reads one response line (timeout in ms). Returns 0 and the parsed
 * object (caller decrefs) when the agent answered ok:true, -EIO with its error otherwise. */
int agent_call(struct live *l, json_t *req, int timeout_ms, json_t **ret, struct vmsnap_diag *d);

/* Waits until the agent answers health (boot/restore), up to timeout_ms. */
int agent_wait_healthy(struct live *l, int timeout_ms, struct vmsnap_diag *d);

/* Flushes guest filesystems (before a snapshot). */
int agent_sync(struct live *l, struct vmsnap_diag *d);

/* After a restore: sets the guest clock to now and reseeds its RNG with fresh bytes. */
int agent_restore_hook(struct live *l, struct vmsnap_diag *d);

/* ---- pause timing (trace.c) ---- */

/* One pause's time so far, by phase. */
struct pause_trace {
        double mark; /* CLOCK_MONOTONIC seconds of the last mark */
        double seconds[VMSNAP_PAUSE_PHASES];
};

/* Starts timing a pause now. */
void trace_begin(struct pause_trace *t);

/* Charges the time since the last mark to phase; t may be NULL (not a pause: no-op). */
void trace_mark(struct pause_trace *t, enum vmsnap_pause_phase phase);

/* Adds a completed pause's phases to the host's counters. */
void trace_commit(struct vmsnap_host *h, const struct pause_trace *t);

/* Counts one background merge by outcome. */
void trace_merge(struct vmsnap_host *h, enum vmsnap_merge_outcome outcome);

/* ---- background merge (compact.c) ---- */

/* The generation at which a pause merges its chain itself, because background merges did
 * not keep up (4 x the merge cap, within the format's limit). */
unsigned sync_merge_cap(const struct vmsnap_host *h);

/* Runs every drop a pause queued (compact_defer_drop), oldest first; without compact_lock. */
void compact_run_drops(struct vmsnap_host *h);
/* Wakes the background merge thread (starting it on first use). */
void compact_kick(struct vmsnap_host *h);

/* Wakes it when a paused sandbox's chain is at the cap (at host open). */
void compact_kick_if_due(struct vmsnap_host *h);

/* Stops the thread after the merge it is doing, and joins it. */
void compact_stop(struct vmsnap_host *h);

/* After a pause's answer: the background thread deletes the snapshot the pause superseded
 * and closes the pause's journal entry, whose step `released` (row paused on the new
 * snapshot) is durable (docs/sandbox.md "Pause: what comes after the answer"). Done at once
 * when the thread cannot take it (stopping, out of memory). */
void compact_defer_drop(struct vmsnap_host *h, const struct journal *j, const char *previous);

/* After a pause's answer: the background thread removes dir (release_files_later). Done at
 * once when the thread cannot take it. */
void compact_defer_remove(struct vmsnap_host *h, const char *dir);

/* Finishes or rolls back an open `merge` journal entry (recovery, no lock held). */
void recover_merge(struct vmsnap_host *h, const struct journal *j);
/* ---- the first pause's base (base.c) ---- */
/* After a boot (l's VM running on its own memory file): asks the background thread for a
 * base. No-op for a VMM whose memory is not a file this host can track (lazy_uffd). */
void base_want(struct vmsnap_host *h, struct live *l);
/* In the background thread: builds every wanted base, releases every dropped one. */
void base_pass(struct vmsnap_host *h);
/* A base a first pause took from its sandbox (base_take); used: the pause wrote over it. */
struct base_taken {
        struct vmsnap_store_txn *txn;
        struct journal j;
        struct touch_mark mark;
        bool used;
        uint64_t bytes; /* the data bytes of the copy */
};
/* The first pause of a booted VM, under its lock: takes the ready base into *ret (true), or
 * cancels one being built (false: the pause copies the whole RAM and waits for nothing). */
bool base_take(struct vmsnap_host *h, struct live *l, struct base_taken *ret);
/* After the pause committed or failed: hands the base back to the background thread, which
 * aborts its pending snapshot (a committed pause holds links of its files), closes its
 * entry and counts the event, after the pause's answer. */
void base_release(struct vmsnap_host *h, struct live *l, struct base_taken *b);
/* l's VM is gone (vm_kill): a ready base is left to the background thread to release, one
 * being built is cancelled. */
void base_forget(struct live *l);
/* Host close, after the background thread stopped: releases every base left. */
void base_close(struct vmsnap_host *h);
/* Recovery: the pending snapshot an open entry had begun (its data's "txn"), aborted. */
void recover_abort_txn(struct vmsnap_host *h, const struct journal *j);
/* Recovery: an open `base` entry's pending snapshot aborted, the entry closed. */
void recover_base(struct vmsnap_host *h, const struct journal *j);
/* The bases built and not yet released, and the data bytes their copies hold. */
void base_waiting(struct vmsnap_host *h, uint64_t *ret_count, uint64_t *ret_bytes);
/* Counts one base event. */
void trace_base(struct vmsnap_host *h, enum vmsnap_base_event event);

/* ---- shared steps of the operations ---- */

/* The tick's idle auto-pause of sandbox id (pause.c): pauses it when, under its lock, it
 * still runs, its idle timeout has run out and no command runs in it (then its idle time
 * restarts). 0 when paused, -EAGAIN when not idle, or -errno. */
int pause_if_idle(struct vmsnap_host *h, const char *id);

/* Captures a paused VM into a new store snapshot of `kind` (pause or template); a pause
 * passes its trace t (else NULL). */
int capture(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
            enum vmsnap_snapshot_kind kind, const char *name, struct journal *j,
            struct pause_trace *t, struct vmsnap_snapshot *ret, struct vmsnap_diag *d);

/* Starts a VM from a snapshot (pause or template) into sb's run dir; leaves it running. */
int restore_into(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                 const struct vmsnap_snapshot *snap, bool shared_template, struct journal *j,
                 struct vmsnap_diag *d);

/* Starts `vmsnap uffd-serve` for snapdir in its own session, listening on
 * <run_dir>/uffd.sock (written into socket_out); records its pid in l. */
int pager_start(struct vmsnap_host *h, struct live *l, const struct vmsnap_sandbox *sb,
                const char *snapdir, char socket_out[PATH_LEN], struct vmsnap_diag *d);

/* Stops the sandbox's page server, if any, and reaps it. */
void pager_stop(struct live *l);

/* Asks the page server to write the working set it recorded into dir (the VM is paused).
 * A sandbox without a page server has nothing to save: 0. */
int pager_save_ws(struct vmsnap_host *h, struct live *l, const char *sandbox_id, const char *dir,
                  struct vmsnap_diag *d);

/* Waits (bounded) until the page server has replayed the snapshot's working set, so that
 * the guest starts with the pages it will touch first already in place. */
void pager_wait_ws(struct vmsnap_host *h, struct live *l, const char *sandbox_id);

/* Recovery of open journal entries and re-attachment of running VMs (recover.c). */
int recover(struct vmsnap_host *h, struct vmsnap_diag *d);

#endif

#ifndef VMSNAP_SANDBOX_INTERNAL_OPS
#define VMSNAP_SANDBOX_INTERNAL_OPS
/* Resolves ref, takes the sandbox's operation lock and re-reads its row under the lock.
 * Returns 0 with *ret_l locked, or -errno. */
int op_begin(struct vmsnap_host *h, const char *ref, struct live **ret_l,
             struct vmsnap_sandbox *sb, struct vmsnap_diag *d);

/* Releases the operation lock. */
void op_end(struct live *l);

/* An operation on one sandbox, run with its lock held and its row fresh. */
typedef int (*locked_op_fn)(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                            struct vmsnap_diag *d);

/* Resolves ref, runs fn under the sandbox's lock, and copies the row to ret (may be NULL) on
 * success. */
int run_locked(struct vmsnap_host *h, const char *ref, locked_op_fn fn,
               struct vmsnap_sandbox *ret, struct vmsnap_diag *d);

/* Starts a journaled operation: the row moves to `state` in the same transaction that
 * opens the journal entry's first step (relaxed: see struct journal). */
int transition_begin(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                     const char *op, enum vmsnap_sandbox_state state, const char *data,
                     bool relaxed, struct vmsnap_diag *d);

/* The row writers and journal calls above, each under the db lock. */
int db_put(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d);
/* Aborts a pending store snapshot nothing will commit and frees it (*t NULL after). */
void db_txn_abort(struct vmsnap_host *h, struct vmsnap_store_txn **t);
void db_delete(struct vmsnap_host *h, const char *id);
int db_journal_begin(struct vmsnap_host *h, struct journal *j, const char *id, const char *op,
                     const char *data, struct vmsnap_sandbox *sb, bool relaxed,
                     struct vmsnap_diag *d);
int db_journal_step(struct vmsnap_host *h, struct journal *j, const char *step,
                    const char *data, struct vmsnap_sandbox *sb, struct vmsnap_diag *d);
int db_journal_done(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                    struct vmsnap_diag *d);

/* Reads a ready snapshot row and its directory (under the db lock). */
int snapshot_lookup(struct vmsnap_host *h, const char *ref, struct vmsnap_snapshot *ret,
                    char dir[PATH_LEN], struct vmsnap_diag *d);

/* Deletes a pause snapshot nothing needs any more; failures are left to GC. */
void drop_snapshot(struct vmsnap_host *h, const char *id);

/* Kills and releases a sandbox's VMM, if any. */
void vm_kill(struct live *l);
#endif
