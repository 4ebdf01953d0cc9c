/* Syscall seams and crash points: the risky calls go through a table tests can replace,
 * and multi-step flows name their steps so a test can SIGKILL the process at each one. */
#ifndef VMSNAP_UTIL_SYS_H
#define VMSNAP_UTIL_SYS_H

#include <stdint.h>
#include <sys/types.h>

struct vmsnap_syscalls {
        int (*fsync)(int fd);
        int (*renameat)(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
        ssize_t (*copy_file_range)(int fd_in, off_t *off_in, int fd_out, off_t *off_out,
                                   size_t len, unsigned int flags);
        int (*ioctl)(int fd, unsigned long req, void *arg);
};

/* The live table; tests overwrite entries to inject failures and restore them after. */
extern struct vmsnap_syscalls vmsnap_sys;

/* Restores every entry of vmsnap_sys to the real syscall. */
void vmsnap_sys_reset(void);

/* Named step of a multi-step flow. When the environment variable VMSNAP_CRASH_AT equals
 * name, the process kills itself with SIGKILL right here (a simulated crash). */
void vmsnap_crashpoint(const char *name);

#endif
