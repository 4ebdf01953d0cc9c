/* libvmsnap sandboxes: the lifecycle of microVMs on one host — create, pause (snapshot and
 * free every host resource), resume (lazy restore), snapshot to a template, spawn from a
 * template, exec through the guest agent, destroy. Durable in SQLite, journaled before each
 * step. Design and state machine: docs/sandbox.md. */
#ifndef VMSNAP_SANDBOX_H
#define VMSNAP_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmsnap/error.h>
#include <vmsnap/jail.h>
#include <vmsnap/net.h>
#include <vmsnap/store.h>

enum vmsnap_sandbox_state {
        VMSNAP_SANDBOX_CREATING,
        VMSNAP_SANDBOX_RUNNING,
        VMSNAP_SANDBOX_PAUSING,
        VMSNAP_SANDBOX_PAUSED,
        VMSNAP_SANDBOX_RESUMING,
        VMSNAP_SANDBOX_STOPPING,
        VMSNAP_SANDBOX_STOPPED,
        VMSNAP_SANDBOX_ERROR,
};

/* One sandbox row (a value). */
struct vmsnap_sandbox {
        char id[VMSNAP_ID_LEN + 1];
        char name[VMSNAP_NAME_MAX + 1];
        enum vmsnap_sandbox_state state;
        char vmm[33];
        uint32_t vcpus;
        uint64_t memory;                      /* bytes */
        char template_id[VMSNAP_ID_LEN + 1];  /* spawned from this template, "" = booted */
        char snapshot_id[VMSNAP_ID_LEN + 1];  /* its newest pause snapshot, "" = none */
        uint64_t generation;                  /* of that snapshot's memory */
        pid_t pid;                            /* VMM pid while running, 0 otherwise */
        int64_t created, updated, last_active; /* unix seconds */
        int64_t started;                      /* when its current VMM started (unix s), 0
                                                 while it has none (kept in the row) */
        int64_t last_paused;                  /* when it last became paused, 0 = never */
        uint32_t idle_timeout;                /* seconds; 0 = never auto-pause */
        uint32_t jail_uid;                    /* uid (and gid) of its VMM's jail, unique among
                                                 the sandboxes that hold one; 0 = unjailed or
                                                 stopped (freed at destroy) */
        char error[512];                      /* why it is in ERROR, "" otherwise */
        char accel[8];                        /* "kvm"/"tcg": what its VMM runs under, ""
                                                 when no VMM started since the host opened
                                                 or the driver cannot tell (get/list only) */
        char accel_reason[256];               /* why that accelerator, for people */
};

/* Told by vmsnap_host_open's recovery, once per action it took on a sandbox (an operation
 * a crash left open, rolled back or finished; a leftover VMM killed; a VMM found gone):
 * id, name ("" when none) and one sentence saying what it did and the state now. */
typedef void (*vmsnap_recovery_fn)(void *ctx, const char *id, const char *name,
                                   const char *action);

/* Host-wide settings; NULL/0 fields take the defaults in docs/sandbox.md. */
struct vmsnap_host_config {
        const char *root;      /* store root (vmsnap.db, snapshots/, sandboxes/) */
        const char *mem_root;  /* guest memory files (default /dev/shm/vmsnap-<16 hex of a
                                  hash of root>: one per root; docs/sandbox.md) */
        const char *guest_dir; /* vmlinuz, initramfs, rootfs.ext4 (default <root>/guest) */
        const char *vmm;       /* default driver: "qemu" */
        unsigned merge_cap;    /* memory generations before a merge (default 8) */
        const struct vmsnap_jail_config *jail; /* NULL or ->disabled: VMMs run unjailed;
                                                  else every VMM starts in its sandbox's jail
                                                  (docs/sandbox.md "Jails"); copied */
        vmsnap_recovery_fn on_recovery; /* NULL: recovery acts silently */
        void *recovery_ctx;
        const struct vmsnap_net_config *net; /* NULL: no sandbox networking; else every new
                                                sandbox gets a network (docs/network.md) and
                                                the host must jail its VMMs; copied */
};

/* opaque: store, drivers, live VMs, per-sandbox locks. Every vmsnap_sandbox_* call and
 * vmsnap_host_tick may run from many threads at once: operations on one sandbox are
 * serialized, operations on different sandboxes run in parallel. */
struct vmsnap_host;

/* Opens the host: the store and the sandbox tables, then recovery — every journaled step
 * left unfinished by a crash is finished or rolled back, and running VMs are re-attached.
 * Returns 0 and *ret, or -errno with d. */
int vmsnap_host_open(const struct vmsnap_host_config *cfg, struct vmsnap_host **ret,
                     struct vmsnap_diag *d);

/* The accelerator new VMs of the host's default driver get ("kvm", "tcg" or "unknown" until
 * the first boot probes KVM) and why, as far as known without booting anything; name and
 * reason are NUL-terminated ("" and a note when the driver cannot tell). */
void vmsnap_host_accel(struct vmsnap_host *h, char name[8], char reason[256]);

/* Closes the host and leaves running VMs running (they are re-attached on the next open);
 * accepts NULL. */
void vmsnap_host_close(struct vmsnap_host *h);

/* The directory of the host's guest memory files (chosen at open). */
const char *vmsnap_host_mem_root(const struct vmsnap_host *h);

/* The store underneath (snapshots, templates). The store handle is shared with the
 * lifecycle threads: wrap every use in vmsnap_host_store_lock / vmsnap_host_store_unlock. */
struct vmsnap_store *vmsnap_host_store(struct vmsnap_host *h);
void vmsnap_host_store_lock(struct vmsnap_host *h);
void vmsnap_host_store_unlock(struct vmsnap_host *h);

/* Periodic work: notices VMMs that died (sandbox → error), auto-pauses idle sandboxes.
 * Returns the number of sandboxes it changed. */
int vmsnap_host_tick(struct vmsnap_host *h);

/* Where pause time goes (src/sandbox/trace.c): the phases a pause is cut into. */
enum vmsnap_pause_phase {
        VMSNAP_PAUSE_AGENT_SYNC,    /* the guest agent flushes its filesystems */
        VMSNAP_PAUSE_VCPU_STOP,     /* the VMM stops the vCPUs */
        VMSNAP_PAUSE_VMM_SAVE,      /* the VMM writes device state and guest RAM */
        VMSNAP_PAUSE_MEM_DIFF,      /* the new memory generation (docs/format.md) */
        VMSNAP_PAUSE_MEM_TOUCHED,   /* finding the blocks the VMM touched and changed */
        VMSNAP_PAUSE_DISK,          /* the disk overlay (and working set) into the snapshot */
        VMSNAP_PAUSE_STORE_COMMIT,  /* the store seals the files: fsync, checksums, envelope */
        VMSNAP_PAUSE_DB,            /* journal and row writes, the store's pending row */
        VMSNAP_PAUSE_VMM_RELEASE,   /* the VMM process ends, its files and jail go */
        VMSNAP_PAUSE_DROP_PREVIOUS, /* unused: the superseded snapshot goes after the answer */
        VMSNAP_PAUSE_PHASES
};

/* Background merges of paused sandboxes' memory chains, by how they ended. */
enum vmsnap_merge_outcome {
        VMSNAP_MERGE_DONE,   /* the sandbox now stands on the merged snapshot */
        VMSNAP_MERGE_RACED,  /* a pause or destroy came first: the merge was dropped */
        VMSNAP_MERGE_FAILED, /* an error: the sandbox stays on its chain */
        VMSNAP_MERGE_OUTCOMES
};

/* Bases for the first pause after a boot (docs/sandbox.md "The first pause after a boot"),
 * by what happened to them. */
enum vmsnap_base_event {
        VMSNAP_BASE_BUILT,   /* a copy of a booted VM's memory is ready for its first pause */
        VMSNAP_BASE_USED,    /* a first pause wrote only the pages touched since over it */
        VMSNAP_BASE_DROPPED, /* not used: the VM went away or paused before it was ready */
        VMSNAP_BASE_FAILED,  /* an error building it: the first pause copies the whole RAM */
        VMSNAP_BASE_EVENTS
};

/* Counters since the host was opened. */
struct vmsnap_pause_stats {
        uint64_t pauses; /* pauses that completed */
        double phase_seconds[VMSNAP_PAUSE_PHASES];
        uint64_t merges[VMSNAP_MERGE_OUTCOMES];
        uint64_t bases[VMSNAP_BASE_EVENTS];
        /* Now, not counters: bases built and not yet released (waiting for a first pause,
         * or used and not yet released), and the data bytes their copies hold on disk. */
        uint64_t bases_waiting, bases_waiting_bytes;
};

/* Reads the host's pause and merge counters. */
void vmsnap_host_pause_stats(struct vmsnap_host *h, struct vmsnap_pause_stats *ret);

/* The label of a phase ("agent_sync", "vmm_save", ...); NULL when out of range. */
const char *vmsnap_pause_phase_name(unsigned phase);

/* The label of a merge outcome ("done", "raced", "failed"); NULL when out of range. */
const char *vmsnap_merge_outcome_name(unsigned outcome);

/* The label of a base event ("built", "used", "dropped", "failed"); NULL when out of range. */
const char *vmsnap_base_event_name(unsigned event);

struct vmsnap_sandbox_spec {
        const char *id;        /* NULL: a new UUID; else this UUID (a cluster placed the
                                  sandbox under it, or it moves here from a lost host) */
        const char *name;      /* optional, unique among sandboxes */
        const char *vmm;       /* NULL: the host default */
        uint32_t vcpus;        /* 0: 1 (from a template: the template's; other values → -EINVAL…) */
        uint64_t memory;       /* 0: 256 MiB (from a template: the template's) */
        uint32_t idle_timeout; /* seconds, 0 = never */
        bool no_network;       /* on a networked host: this sandbox gets no network */
        const struct vmsnap_net_egress *egress; /* NULL: allow (docs/network.md) */
};

/* A sandbox's network (a value): on = false when it has none. */
struct vmsnap_sandbox_net {
        bool on;
        struct vmsnap_net_addrs addrs; /* addrs.sandbox: where the host reaches the guest */
        struct vmsnap_net_egress egress;
};

/* The network of the sandbox ref (by id, name or prefix) into *ret. Returns 0 or -errno. */
int vmsnap_sandbox_network(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox_net *ret,
                           struct vmsnap_diag *d);

/* Boots a new sandbox from the host's guest image. Returns 0 and *ret, or -errno (-ENOENT
 * when the host has no guest image; nothing is left behind by a failed create). */
int vmsnap_sandbox_create(struct vmsnap_host *h, const struct vmsnap_sandbox_spec *spec,
                          struct vmsnap_sandbox *ret, struct vmsnap_diag *d);

/* Starts a sandbox from a template's frozen state. A spec asking for other vcpus/memory than
 * the template's is refused with -EMLINK (a conflict: templates fix both). */
int vmsnap_sandbox_spawn(struct vmsnap_host *h, const char *template_ref,
                         const struct vmsnap_sandbox_spec *spec, struct vmsnap_sandbox *ret,
                         struct vmsnap_diag *d);

/* Makes a paused sandbox of a pause snapshot that nothing here holds (one pulled or imported
 * from another host), so that vmsnap_sandbox_resume continues that guest here: the row
 * takes the snapshot's vmm, vcpus and memory (a spec asking for others: -EMLINK) and spec's
 * name, idle_timeout and network. The sandbox then owns the snapshot (destroy drops it).
 * -EINVAL for a template (spawn from it), -EBUSY while a sandbox or a newer generation here
 * holds it. Nothing is left on failure. */
int vmsnap_sandbox_adopt(struct vmsnap_host *h, const char *snapshot_ref,
                         const struct vmsnap_sandbox_spec *spec, struct vmsnap_sandbox *ret,
                         struct vmsnap_diag *d);

/* Looks a sandbox up by id, name or unique id prefix (>= 3 chars). */
int vmsnap_sandbox_get(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                       struct vmsnap_diag *d);

/* Lists sandboxes that are not stopped (all when `all`), oldest first (malloc'd). */
int vmsnap_sandbox_list(struct vmsnap_host *h, bool all, struct vmsnap_sandbox **ret,
                        size_t *ret_n, struct vmsnap_diag *d);

/* Pauses a running sandbox into a new snapshot generation and frees its VMM process, memory
 * and sockets. -EBUSY (wrong state / operation in progress) or -errno. */
int vmsnap_sandbox_pause(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                         struct vmsnap_diag *d);

/* Resumes a paused sandbox from its newest generation. */
int vmsnap_sandbox_resume(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                          struct vmsnap_diag *d);

/* Makes a named template from a running or paused sandbox (which keeps running/paused). */
int vmsnap_sandbox_snapshot(struct vmsnap_host *h, const char *ref, const char *name,
                            struct vmsnap_snapshot *ret, struct vmsnap_diag *d);

/* Destroys a sandbox in any state: VMM killed, files released, the pause snapshots only it
 * owns removed. */
int vmsnap_sandbox_destroy(struct vmsnap_host *h, const char *ref, struct vmsnap_diag *d);

/* Frees the name of a destroyed (stopped) sandbox so that a new one may take it; the row stays
 * under its id (src/sandbox/names.c). -EBUSY when it is not stopped. */
int vmsnap_sandbox_release_name(struct vmsnap_host *h, const char *ref, struct vmsnap_diag *d);

struct vmsnap_exec_result {
        int exit_code;         /* 128+N when signal N killed it */
        int signal;            /* 0 when it exited by itself */
        bool timed_out;        /* the timeout fired */
        char *out;             /* malloc'd, NUL-terminated (may hold NULs: see out_len) */
        char *err;             /* malloc'd, NUL-terminated */
        size_t out_len, err_len;
        bool truncated;        /* more than 1 MiB on a stream: the rest was dropped */
};

/* Runs a shell command line (`/bin/sh -c cmd`) in a running sandbox through the guest agent
 * and collects its output (include/vmsnap/exec.h has argv, streams and stdin). */
int vmsnap_sandbox_exec(struct vmsnap_host *h, const char *ref, const char *cmd,
                        unsigned timeout_ms, struct vmsnap_exec_result *ret,
                        struct vmsnap_diag *d);

/* Frees the strings of an exec result. */
void vmsnap_exec_result_free(struct vmsnap_exec_result *r);

const char *vmsnap_sandbox_state_name(enum vmsnap_sandbox_state s);

#endif
