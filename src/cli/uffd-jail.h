/* `vmsnap uffd-serve --jail-uid ...`: the page server jails itself once its inputs are open
 * (docs/uffd.md "Jailed", docs/jail.md). */
#ifndef VMSNAP_CLI_UFFD_JAIL_H
#define VMSNAP_CLI_UFFD_JAIL_H

#include <stdbool.h>
#include <sys/types.h>

#include <vmsnap/jail.h>

struct uffd_jail_args {
        bool on; /* --jail-uid given */
        uid_t uid;
        const char *root; /* --jail-root */
        const char *name; /* --jail-cgroup */
        struct vmsnap_jail_config config;
        struct vmsnap_jail_limits limits;
};

/* getopt_long codes of the --jail-* options (uffd.c lists them in its option table). */
enum {
        UFFD_OPT_JAIL_UID = 1000,
        UFFD_OPT_JAIL_ROOT,
        UFFD_OPT_JAIL_CGROUP,
        UFFD_OPT_JAIL_UIDS,
        UFFD_OPT_JAIL_GID,
        UFFD_OPT_JAIL_CGROUP_VERSION,
        UFFD_OPT_JAIL_CGROUP_ROOT,
        UFFD_OPT_JAIL_CGROUP_PARENT,
        UFFD_OPT_JAIL_MEMORY,
        UFFD_OPT_JAIL_PIDS,
};

/* The help text of those options. */
extern const char uffd_jail_usage[];

/* Takes one --jail-* option. Returns CLI_OK or CLI_USAGE (message printed). */
int uffd_jail_option(int opt, const char *arg, struct uffd_jail_args *j);

/* Checks the --jail-* options together with the rest. Returns CLI_OK or CLI_USAGE. */
int uffd_jail_check(const struct uffd_jail_args *j, bool ws_record, const char *ws_dir);

/* Gives the listening socket to the jail's uid (so that its VMM, same uid, can connect) and
 * jails the calling process: ws_dir (may be NULL) bound writable at the same path, seccomp
 * on, every open fd kept. Returns 0 or -errno with d; on failure the process must exit. */
int uffd_jail_enter(const struct uffd_jail_args *j, const char *socket, const char *ws_dir,
                    unsigned workers, struct vmsnap_diag *d);

#endif
