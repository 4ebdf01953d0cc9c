/* The host side of `vmsnap sandbox cp`: tar streams read from a guest, unpacked so that no
 * entry lands outside the destination the user named or passes through a symlink (the guest
 * may be hostile: it makes the archive), and tar streams of host files made for a guest.
 * libarchive parses and writes the tar format; every path is created here, component by
 * component, with O_NOFOLLOW. */
#ifndef VMSNAP_CLI_TARX_H
#define VMSNAP_CLI_TARX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tarx_opts {
        int dest_fd;          /* the directory the copy lands in (the user's choice) */
        const char *top_from; /* the archive's top-level name: every entry must be under it */
        const char *top_to;   /* the name it gets in dest_fd */
};

struct tarx_stats {
        uint64_t files, dirs, symlinks, skipped, bytes;
};

/* Unpacks the tar read from in_fd. Regular files are written to a temporary name, fsync'd
 * and renamed; modes and mtimes are kept (owners are not). Refused, with why in err, and
 * nothing written for it or after it: an entry outside top_from, absolute or with "..", one
 * whose path runs through a symlink or a non-directory, a hard link to outside. Returns 0 or
 * -errno. */
int tarx_extract(int in_fd, const struct tarx_opts *o, struct tarx_stats *st, char *err,
                 size_t size);

/* Writes a tar of path (a file, or a directory recursively; symlinks as symlinks) to out_fd,
 * its top-level entry named top, owned by root. Returns 0 or -errno with why in err. */
int tarx_create(const char *path, const char *top, int out_fd, struct tarx_stats *st, char *err,
                size_t size);

#endif
