/* libvmsnap jails: every VMM process and every page server runs confined, with the
 * guarantees of Firecracker's jailer and for all three drivers: its own unprivileged uid and
 * gid, a private mount namespace whose root holds only the files it was given, no
 * capabilities, no_new_privs, a seccomp filter, and a cgroup (v1 or v2) with memory, CPU
 * and pid limits. docs/jail.md has the design; docs/security.md the threat model.
 *
 * Two ways in, one implementation:
 * - a VMM (an outside binary) is started through the jailer program `vmsnap-jailer`, whose
 *   command line vmsnap_jail_argv() builds: it enters the jail and then execs the VMM, so
 *   the VMM keeps the jailer's pid;
 * - our own page server opens every input it needs first and then calls vmsnap_jail_enter()
 *   on itself, before it reads a byte a VMM sent. */
#ifndef VMSNAP_JAIL_H
#define VMSNAP_JAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmsnap/error.h>

/* Defaults for the zero fields of vmsnap_jail_config; docs/jail.md says why these. */
#define VMSNAP_JAIL_DEFAULT_UID_FIRST     1879113728u /* 0x70010000 */
#define VMSNAP_JAIL_DEFAULT_UID_COUNT     65536u
#define VMSNAP_JAIL_DEFAULT_SHARED_GID    1879048192u /* 0x70000000 */
#define VMSNAP_JAIL_DEFAULT_CGROUP_ROOT   "/sys/fs/cgroup"
#define VMSNAP_JAIL_DEFAULT_CGROUP_PARENT "vmsnap"
#define VMSNAP_JAIL_JAILER_NAME           "vmsnap-jailer"
/* The jailer's exit status when it could not start the VMM (one line on stderr says why). */
#define VMSNAP_JAIL_JAILER_FAILED         125

enum vmsnap_cgroup_version {
        VMSNAP_CGROUP_AUTO = 0, /* v2 when its root lists memory, cpu and pids; else v1 */
        VMSNAP_CGROUP_V1 = 1,   /* one hierarchy per controller (memory, cpu, pids) */
        VMSNAP_CGROUP_V2 = 2,   /* the unified hierarchy */
};

/* Host-wide jail settings (vmsnapd flags). Zero fields take the defaults in docs/jail.md. */
struct vmsnap_jail_config {
        bool disabled;          /* --insecure-no-jail: VMMs run as the daemon, unconfined */
        uid_t uid_first;        /* first uid (and gid) of the range handed to jails */
        uint32_t uid_count;     /* how many */
        gid_t shared_gid;       /* supplementary group of every jail: the read-only inputs
                                   that several jails share (base images, kernels) are
                                   0640 root:shared_gid */
        enum vmsnap_cgroup_version cgroup_version;
        const char *cgroup_root;   /* where cgroupfs is mounted (default /sys/fs/cgroup) */
        const char *cgroup_parent; /* our group under each hierarchy (default "vmsnap") */
        const char *jailer;        /* the jailer program (default: vmsnap-jailer beside the
                                      running executable) */
};

/* One path the jailed process may reach: `source` (absolute, on the host, resolved by
 * root without following a final symlink) appears at `target` (absolute, inside the jail). */
struct vmsnap_jail_bind {
        const char *source;
        const char *target;
        bool writable; /* else mounted read-only (and always nosuid, nodev) */
};

struct vmsnap_jail_limits {
        uint64_t memory_max; /* bytes; 0: no limit */
        uint32_t cpus;       /* CPU quota in whole CPUs per period; 0: no limit */
        uint32_t pids_max;   /* tasks (processes and threads); 0: no limit */
};

/* One jailed process. */
struct vmsnap_jail_spec {
        const struct vmsnap_jail_config *config;
        const char *name;     /* cgroup name and messages: the sandbox id, or "<id>.pager" */
        const char *root_dir; /* an existing empty host directory; the jail's / is a tmpfs
                                 mounted on it inside the jail's own mount namespace only */
        uid_t uid;            /* non-zero, inside the config's range; gid = uid */
        const struct vmsnap_jail_bind *binds;
        size_t n_binds;
        const char *const *devices; /* NULL-terminated ("/dev/null", "/dev/kvm", ...): made
                                       as nodes inside the jail, owned by uid */
        struct vmsnap_jail_limits limits;
        bool seccomp;         /* install vmsnap's own filter (the page server); VMMs bring
                                 their own (QEMU -sandbox, Firecracker's, CH --seccomp) */
        bool system_dirs;     /* bind the host's /usr read-only with the merged-/usr links
                                 (/bin, /sbin, /lib, /lib64): for a dynamically linked VMM */
        bool proc;            /* mount a procfs that shows only the jail's own processes
                                 (hidepid=invisible,subset=pid); else the jail has no /proc */
        bool keep_fds;        /* keep every open fd (a process jailing itself after opening
                                 its inputs); else every fd above 2 is closed */
        const char *const *env; /* NULL-terminated "NAME=VALUE" list: the VMM's whole
                                   environment when started by the jailer (NULL: empty) */
        const char *netns_path; /* a pinned network namespace (a sandbox's, docs/network.md)
                                   to join, checked to be one; NULL: a new, empty one */
        const char *readonly_memory; /* the target of a read-only bind (a template's memory
                                   file) whose every open by the VMM returns a read-only
                                   descriptor of it, whatever access it asks for (QEMU 7.2
                                   opens mem-path O_RDWR even for share=off; docs/jail.md
                                   "Read-only memory"); jailer only; NULL: none */
};

/* Checks that every piece of the jail works on this host (mount namespaces, the uid range,
 * each cgroup controller, the jailer program). Returns 0, or -errno with d naming the
 * first missing piece and what to do (or `--insecure-no-jail`). */
int vmsnap_jail_probe(const struct vmsnap_jail_config *c, struct vmsnap_diag *d);

/* Checks that this kernel can hand a jailed VMM a read-only descriptor of its memory file
 * (readonly_memory: seccomp user notification with SECCOMP_ADDFD_FLAG_SEND) by running the
 * jailer's --probe-handover. Returns 0, or -errno with d saying what is missing. */
int vmsnap_jail_probe_handover(const struct vmsnap_jail_config *c, struct vmsnap_diag *d);

/* The cgroup version the config resolves to on this host (AUTO decided), or -errno. */
int vmsnap_jail_cgroup_version(const struct vmsnap_jail_config *c, struct vmsnap_diag *d);

/* Creates (or updates) the cgroup `name` with limits under every hierarchy the version
 * uses. Idempotent. Returns 0 or -errno with d. */
int vmsnap_jail_cgroup_create(const struct vmsnap_jail_config *c, const char *name,
                              const struct vmsnap_jail_limits *limits, struct vmsnap_diag *d);

/* Removes the cgroup `name` everywhere; a missing group is fine. Returns 0, -EBUSY while a
 * process still runs in it, or -errno with d. */
int vmsnap_jail_cgroup_remove(const struct vmsnap_jail_config *c, const char *name,
                              struct vmsnap_diag *d);

/* Kills (SIGKILL) every process of the cgroup `name` and waits until the group is empty; a
 * missing or empty group is fine. A jail's uid may be handed to a new jail only after this
 * and vmsnap_jail_cgroup_remove: a process left behind (setsid, its VMM gone) would keep
 * that uid and could ptrace or signal the next jail. Returns 0 or -errno with d (-EBUSY
 * when processes are still there after a few seconds). */
int vmsnap_jail_cgroup_kill(const struct vmsnap_jail_config *c, const char *name,
                            struct vmsnap_diag *d);

/* Confines the calling process as s says: joins the cgroup, forbids core dumps, joins
 * s->netns_path (or a new, empty network namespace), enters new mount, IPC and UTS
 * namespaces, builds the root from s->binds and
 * s->devices, pivots into it, drops every capability, switches to s->uid, sets
 * no_new_privs, and installs the seccomp filter when s->seccomp. Must run as root in a
 * single-threaded process. Returns 0 or -errno with d (the process is then in an undefined
 * state and must exit). */
int vmsnap_jail_enter(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d);

/* The jailer command line that runs vmm_argv (argv[0] absolute, as seen inside the jail)
 * inside s: malloc'd, NULL-terminated; free with vmsnap_jail_argv_free. Returns 0 or -errno
 * (-EINVAL for s->seccomp, which is the page server's filter, or a path holding ':'). */
int vmsnap_jail_argv(const struct vmsnap_jail_spec *s, char *const vmm_argv[], char ***ret,
                     struct vmsnap_diag *d);

void vmsnap_jail_argv_free(char **argv);

/* Parses "FIRST:COUNT" (a uid range, as vmsnapd's --jail-uids and the jailer's --uids take
 * it). Returns 0, or -EINVAL with d saying what is wrong. */
int vmsnap_jail_parse_uids(const char *s, uid_t *ret_first, uint32_t *ret_count,
                           struct vmsnap_diag *d);

/* Parses "auto", "1" or "2" (also "v1", "v2"). Returns 0, or -EINVAL with d. */
int vmsnap_jail_parse_cgroup_version(const char *s, enum vmsnap_cgroup_version *ret,
                                     struct vmsnap_diag *d);

#endif
