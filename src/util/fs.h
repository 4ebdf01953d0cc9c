/* File helpers: full reads/writes, durable (atomic) writes, staged files, range copies. */
#ifndef VMSNAP_UTIL_FS_H
#define VMSNAP_UTIL_FS_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <sys/types.h>

#include <vmsnap/error.h>

/* Reads up to len bytes at off, looping over EINTR and short reads; returns the byte count
 * (less than len only at end of file) or -errno. */
ssize_t vmsnap_fs_pread_full(int fd, void *buf, size_t len, uint64_t off);

/* Writes all len bytes at off; returns 0 or -errno. */
int vmsnap_fs_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* pwritev until every byte of iov[0..n) is written at off (iov is advanced in place on a
 * short write); returns 0 or -errno. */
int vmsnap_fs_pwritev_full(int fd, struct iovec *iov, int n, uint64_t off);

/* Sends all len bytes on socket fd without SIGPIPE (a peer gone is -EPIPE); returns 0 or
 * -errno. */
int vmsnap_fs_send_full(int fd, const void *buf, size_t len);

/* A directory stream over a duplicate of directory fd (fd stays the caller's to close), or
 * NULL with errno set. */
DIR *vmsnap_fs_list_dir(int fd);

/* Writes all len bytes at the current position; returns 0 or -errno. */
int vmsnap_fs_write_full(int fd, const void *buf, size_t len);

/* Modes of everything vmsnap writes: private to its owner, whatever the umask. */
#define VMSNAP_FILE_MODE 0600
#define VMSNAP_DIR_MODE  0700

struct stat;

/* Opens dirfd/name read-only the way every snapshot file is opened (follow false): O_NOFOLLOW
 * (a symlink is -ELOOP, never followed), O_NONBLOCK while opening (a FIFO never hangs us), then fstat: a
 * regular file only (-EINVAL otherwise). Returns the fd (blocking again) and *ret_st (may
 * be NULL), or -errno. */
int vmsnap_fs_open_regular(int dirfd, const char *name, struct stat *ret_st, bool follow);

/* Opens a file a user named on the command line (symlinks followed: the user chose it),
 * never blocking on a FIFO, a regular file only. Returns the fd or -errno. */
int vmsnap_fs_open_input(const char *path, struct stat *ret_st);

/* Words for an error of vmsnap_fs_open_regular ("is a symlink (never followed)", ...). */
const char *vmsnap_fs_open_error(int err);

/* Creates dirfd/name (O_EXCL, never through a symlink) with mode exactly 0600; flags add
 * O_WRONLY or O_RDWR. Returns the fd or -errno. */
int vmsnap_fs_create_private(int dirfd, const char *name, int flags);

/* Makes directory dirfd/name with mode exactly 0700; -EEXIST when it exists (untouched). */
int vmsnap_fs_mkdir_private(int dirfd, const char *name);

/* Sets an existing directory dirfd/name (not a symlink) to mode 0700. Returns 0 or -errno. */
int vmsnap_fs_make_private_dir(int dirfd, const char *name);

/* Writes buf at off into a file whose range reads as zeros (new or truncated), skipping
 * every file page (4 KiB) that is all zeros so it stays a hole. Adds the bytes really
 * written to *ret_written (may be NULL). Returns 0 or -errno. */
int vmsnap_fs_pwrite_sparse(int fd, const void *buf, size_t len, uint64_t off,
                            uint64_t *ret_written);

/* Reads a whole (small) regular file into a malloc'd, NUL-terminated buffer, capped at max
 * bytes, opened with vmsnap_fs_open_regular; returns 0 and sets *ret_buf and *ret_len, -EFBIG
 * when larger than max, -ELOOP for a symlink, -EINVAL for a non-regular file, or -errno. */
int vmsnap_fs_read_file(int dirfd, const char *name, size_t max, uint8_t **ret_buf,
                        size_t *ret_len);

/* fsyncs the directory dirfd (a directory fd); returns 0 or -errno. */
int vmsnap_fs_fsync_dir(int dirfd);

/* Durably replaces dirfd/name with buf: temp file, write, fsync, rename, fsync dir.
 * The old file stays intact until the new one is complete. Returns 0 or -errno (with d). */
int vmsnap_fs_atomic_write(int dirfd, const char *name, const void *buf, size_t len,
                           struct vmsnap_diag *d);

/* A file being written under a temporary name in its final directory. */
struct vmsnap_staged {
        int dirfd;      /* borrowed */
        int fd;         /* owned, O_RDWR */
        char tmp[300];  /* temporary name in dirfd */
        char name[256]; /* final name */
        bool nosync;    /* commit without the fsync: the caller makes it durable later */
};

/* Creates a temporary file (mode 0600) in dirfd that will become name; returns 0 or -errno
 * (with d). */
int vmsnap_staged_open(struct vmsnap_staged *s, int dirfd, const char *name,
                       struct vmsnap_diag *d);

/* fsyncs the staged file and renames it to its final name (replacing any file of that name).
 * The caller fsyncs the directory once all renames of a step are done. */
int vmsnap_staged_commit(struct vmsnap_staged *s, struct vmsnap_diag *d);

/* Like vmsnap_staged_commit, but never replaces: -EEXIST (no diagnostic; the staged file
 * stays for the caller to abort) when name already exists. */
int vmsnap_staged_commit_new(struct vmsnap_staged *s, struct vmsnap_diag *d);

/* Closes and unlinks a staged file that was not committed; safe to call twice. */
void vmsnap_staged_abort(struct vmsnap_staged *s);

/* Writes buf as dirfd/name through a staged file (fsynced unless !sync) renamed into place;
 * the directory is not fsynced (the caller does, once its step is done). 0 or -errno (d). */
int vmsnap_staged_write(int dirfd, const char *name, const void *buf, size_t len, bool sync,
                        struct vmsnap_diag *d);

/* Copies len bytes from in@in_off to out@out_off: copy_file_range (reflink/server-side where
 * the filesystem can), falling back to read/write. Returns 0 or -errno. */
int vmsnap_fs_copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len);

/* Copies the regular file open as `in` (named `what` in messages) to dst_dirfd/dst_name as a
 * staged, fsynced file (reflink where the filesystem can): for a source already opened and
 * checked, whose name may since point elsewhere. Returns 0 or -errno (with d). */
int vmsnap_fs_copy_fd(int in, const char *what, int dst_dirfd, const char *dst_name,
                      struct vmsnap_diag *d);

/* Makes dst_dirfd/dst_name the same content as src_dirfd/src_name (a regular file: a symlink
 * or special file is refused) without touching the source: hard link, else reflink (FICLONE), else a staged copy. An existing dst that is the
 * same file is fine. Returns 0 or -errno (with d). */
int vmsnap_fs_link_or_copy(int src_dirfd, const char *src_name, int dst_dirfd,
                           const char *dst_name, struct vmsnap_diag *d);

/* Turns O_DIRECT on or off for fd; false when the filesystem refuses it. */
bool vmsnap_fs_set_direct(int fd, bool on);

/* True when both fds refer to the same inode. */
bool vmsnap_fs_same_file(int a, int b);

/* Opens a directory (O_DIRECTORY|O_CLOEXEC); returns the fd or -errno. */
int vmsnap_fs_open_dir(const char *path);

#endif
