/* Internals of the jail module (include/vmsnap/jail.h; design in docs/jail.md): the config
 * with its defaults applied, the spec checks, and one entry point per step of
 * vmsnap_jail_enter (cgroup.c, mount.c, privs.c, seccomp.c), plus the jailer's command line
 * (argv.c) shared by vmsnap_jail_argv and the vmsnap-jailer program. */
#ifndef VMSNAP_JAIL_INTERNAL_H
#define VMSNAP_JAIL_INTERNAL_H

#include <vmsnap/jail.h>

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/* Builds with a sanitizer runtime: LeakSanitizer's exit-time check needs a few more
 * syscalls and a dumpable process (docs/jail.md, "Sanitizer builds"). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define JAIL_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define JAIL_SANITIZER 1
#endif
#endif
#ifndef JAIL_SANITIZER
#define JAIL_SANITIZER 0
#endif

#define JAIL_NAME_MAX 64

/* A vmsnap_jail_config with every default applied. */
struct jail_conf {
        uid_t uid_first;
        uint32_t uid_count;
        gid_t shared_gid;
        enum vmsnap_cgroup_version cgroup_version; /* may still be AUTO */
        const char *cgroup_root;
        const char *cgroup_parent;
        const char *jailer; /* NULL: beside the running executable */
};

/* config.c */

/* Applies the defaults to c (NULL = all defaults) and checks the uid range and the shared
 * gid. Returns 0 or -EINVAL with d. */
int jail_conf_resolve(const struct vmsnap_jail_config *c, struct jail_conf *ret,
                      struct vmsnap_diag *d);

/* True when uid lies in the configured range. */
bool jail_uid_in_range(const struct jail_conf *c, uid_t uid);

/* Absolute path of the jailer program: c->jailer, else vmsnap-jailer in the directory of
 * the running executable. Returns 0 or -errno with d. */
int jail_jailer_path(const struct jail_conf *c, char out[PATH_MAX], struct vmsnap_diag *d);

/* spec.c */

/* True for an absolute path without empty, "." or ".." components, shorter than PATH_MAX. */
bool jail_path_ok(const char *p);

/* True for a jail name: [A-Za-z0-9._-]{1,64}, not starting with '.'. */
bool jail_name_ok(const char *name);

/* Checks everything vmsnap_jail_enter relies on before it changes anything: name, paths,
 * uid in range, targets neither nested nor under a directory the jail builds itself,
 * devices under /dev. Returns 0 or -EINVAL with d naming the offending field. */
int jail_spec_check(const struct vmsnap_jail_spec *s, const struct jail_conf *c,
                    struct vmsnap_diag *d);

/* cgroup.c */

/* The cgroup version c resolves to on this host (AUTO decided). */
int jail_cgroup_resolve(const struct jail_conf *c, struct vmsnap_diag *d);

/* Creates the group with limits (as vmsnap_jail_cgroup_create) for a resolved conf. */
int jail_cgroup_create(const struct jail_conf *c, const char *name,
                       const struct vmsnap_jail_limits *limits, struct vmsnap_diag *d);

/* Moves the process pid into the group name in every hierarchy. Returns 0 or -errno. */
int jail_cgroup_join(const struct jail_conf *c, const char *name, pid_t pid, struct vmsnap_diag *d);

/* mount.c */

/* Builds the jail's root on s->root_dir in the current (already private) mount namespace:
 * tmpfs, targets, binds, devices, system dirs, /proc; then pivots into it and seals / and
 * /dev read-only. Returns 0 or -errno with d. */
int jail_build_root(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d);

/* privs.c */

/* Drops every capability (bounding, ambient, inheritable, then permitted and effective by
 * switching ids), locks the securebits, joins shared_gid only and becomes uid:uid; checks
 * the result. Returns 0 or -errno with d. */
int jail_drop_privileges(uid_t uid, gid_t shared_gid, struct vmsnap_diag *d);

/* seccomp.c */

/* Installs the page server's seccomp filter on the calling process (inherited by threads it
 * starts later). Returns 0 or -errno with d. */
int jail_seccomp_install(struct vmsnap_diag *d);

/* True when this kernel can load seccomp filters. */
bool jail_seccomp_available(void);

/* handover.c */

/* Opens `path` (inside the jail) read-only, forks the supervisor that answers every open of
 * exactly that path by the calling process and its later threads and children with that
 * descriptor, and installs the notification filter on the calling process (which must have
 * no_new_privs). Call last before execve. Returns 0 or -errno with d. */
int jail_handover_start(const char *path, struct vmsnap_diag *d);

/* Checks in a child process that this kernel hands over a read-only descriptor of `path`
 * for an O_RDWR open (as jail_handover_start arranges). Returns 0 or -EOPNOTSUPP with d. */
int jail_handover_probe(const char *path, struct vmsnap_diag *d);

/* argv.c: the jailer's command line, parsed. Arrays are malloc'd; strings point into argv. */
struct jail_cmdline {
        struct vmsnap_jail_config config;
        struct vmsnap_jail_spec spec;
        struct vmsnap_jail_bind *binds;
        const char **devices; /* NULL-terminated */
        const char **env;     /* NULL-terminated */
        bool probe;           /* --probe: enter, check, exit (no VMM) */
        bool probe_handover;  /* --probe-handover: jail_handover_probe, exit (no jail) */
        bool help;
        char **vmm_argv; /* after "--"; NULL with --probe or --help */
};

/* The jailer command line for s (as vmsnap_jail_argv); vmm_argv NULL makes a --probe
 * command line instead. */
int jail_argv_build(const struct vmsnap_jail_spec *s, char *const vmm_argv[], char ***ret,
                    struct vmsnap_diag *d);

/* Parses the jailer's arguments (argv[0] is the program). Returns 0, or -EINVAL with d
 * saying which argument is wrong. */
int jail_cmdline_parse(int argc, char **argv, struct jail_cmdline *ret, struct vmsnap_diag *d);

/* Frees the arrays of a parsed command line. */
void jail_cmdline_free(struct jail_cmdline *cl);

/* netns.c */

/* Joins the network namespace pinned at path (opened without following symlinks; must be
 * an nsfs file of type CLONE_NEWNET). Returns 0 or -errno with d. */
int jail_netns_join(const char *name, const char *path, struct vmsnap_diag *d);

/* enter.c */

/* The checks the jailer's --probe makes from inside a jail it entered: the uid, no
 * capability left, no_new_privs, no core dumps, no host directory in /. Returns 0 or -errno
 * with d. */
int jail_check_inside(uid_t uid, struct vmsnap_diag *d);

#endif
