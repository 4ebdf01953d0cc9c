/* The syscall table and crash points (see sys.h). */
#include "util/sys.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int real_ioctl(int fd, unsigned long req, void *arg)
{
        return ioctl(fd, req, arg);
}

struct vmsnap_syscalls vmsnap_sys = {
        .fsync = fsync,
        .renameat = renameat,
        .copy_file_range = copy_file_range,
        .ioctl = real_ioctl,
};

void vmsnap_sys_reset(void)
{
        vmsnap_sys.fsync = fsync;
        vmsnap_sys.renameat = renameat;
        vmsnap_sys.copy_file_range = copy_file_range;
        vmsnap_sys.ioctl = real_ioctl;
}

void vmsnap_crashpoint(const char *name)
{
        /* Read each time: cheap next to the I/O around every crash point, and lets a test
         * process change the variable between steps. */
        const char *at = getenv("VMSNAP_CRASH_AT");
        if (at && strcmp(at, name) == 0)
                raise(SIGKILL);
}
