/* The jail's root being built (mount.c, binds.c, devices.c): shared between the files
 * that build it, private to the jail module. */
#ifndef VMSNAP_JAIL_MOUNT_H
#define VMSNAP_JAIL_MOUNT_H

#include "jail/internal.h"

#include <sys/stat.h>
#include <sys/types.h>

/* One bind mount: a host source resolved by root, and where it appears in the jail. */
struct jail_bind {
        const char *source; /* host path (absolute, canonical) */
        const char *target; /* path inside the jail */
        bool writable;
        int src_fd;         /* O_PATH of the source, opened with no symlink; -1 until opened */
        struct stat src_st; /* what src_fd is */
        unsigned long keep; /* MS_RDONLY/NOEXEC/atime flags of the source's mount, kept */
};

/* A merged-/usr link copied from the host (/bin -> usr/bin). */
struct jail_link {
        char name[16];
        char target[64];
};

#define JAIL_MAX_LINKS 8

struct jail_root {
        struct jail_bind *binds; /* the spec's binds, then the system dirs */
        size_t n_binds;
        struct jail_link links[JAIL_MAX_LINKS];
        size_t n_links;
        int root_fd; /* O_PATH of the jail's tmpfs root, -1 before */
};

/* Opens path (absolute) with O_PATH|O_NOFOLLOW|O_CLOEXEC (| extra) refusing any symlink in
 * it (openat2 RESOLVE_NO_SYMLINKS), relative to dirfd when path is relative. Returns the fd
 * or -errno. */
int jail_open_nosymlinks(int dirfd, const char *path, int extra);

/* The magic link of fd, "/proc/self/fd/N": mount(2) given it acts on exactly that inode. */
void jail_fd_path(int fd, char out[32]);

/* binds.c: fills root->binds from the spec (and the system dirs when asked); opens every
 * source. Returns 0 or -errno with d. */
int jail_binds_plan(const struct vmsnap_jail_spec *s, struct jail_root *root,
                    struct vmsnap_diag *d);

/* binds.c: creates each target under root->root_fd, the links, and bind-mounts each source
 * with its final flags. Returns 0 or -errno with d. */
int jail_binds_mount(const struct vmsnap_jail_spec *s, struct jail_root *root,
                     struct vmsnap_diag *d);

/* binds.c: closes the source fds and frees the plan. */
void jail_binds_free(struct jail_root *root);

/* mount.c: creates the directories of path (relative to dirfd, no symlink followed) up to
 * but not including its last component; returns an O_PATH fd of the last directory and
 * sets *ret_last to the last component, or -errno. */
int jail_make_parents(int dirfd, const char *path, const char **ret_last);

/* devices.c: the /dev tmpfs with a node for each device, owned by uid. Returns 0 or -errno. */
int jail_make_devices(const struct vmsnap_jail_spec *s, int root_fd, struct vmsnap_diag *d);

/* devices.c: the restricted /proc (hidepid=invisible,subset=pid). Returns 0 or -errno. */
int jail_mount_proc(const struct vmsnap_jail_spec *s, int root_fd, struct vmsnap_diag *d);

#endif
