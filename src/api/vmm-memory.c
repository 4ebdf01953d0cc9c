/* Rss and Pss of the running VMMs from /proc/PID/smaps_rollup (vmm-memory.h). The file is
 * the kernel's own sum over the process's mappings, read in one go; a process that exits
 * between the sandbox list and the read is skipped. */
#include "api/vmm-memory.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The value of the line starting with key ("Rss:"), in kB, or -1. */
static long long field_kb(const char *text, const char *key)
{
        size_t kl = strlen(key);
        const char *p = text;
        while (p && strncmp(p, key, kl) != 0) {
                p = strchr(p, '\n');
                p = p ? p + 1 : NULL;
        }
        if (!p)
                return -1;
        char *end;
        errno = 0;
        long long v = strtoll(p + kl, &end, 10);
        if (errno || end == p + kl || v < 0 || strncmp(end, " kB", 3) != 0)
                return -1;
        return v;
}

int api_vmm_memory_parse(const char *text, struct api_vmm_memory *ret)
{
        long long rss = field_kb(text, "Rss:"), pss = field_kb(text, "Pss:");
        if (rss < 0 || pss < 0)
                return -EBADMSG;
        ret->rss += (uint64_t)rss * 1024;
        ret->pss += (uint64_t)pss * 1024;
        ret->processes++;
        return 0;
}

/* Reads /proc/pid/smaps_rollup (a few hundred bytes) into buf. */
static int read_rollup(pid_t pid, char *buf, size_t size)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        size_t n = 0;
        while (n + 1 < size) {
                ssize_t r = read(fd, buf + n, size - 1 - n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0) {
                        int e = -errno;
                        close(fd);
                        return e;
                }
                if (r == 0)
                        break;
                n += (size_t)r;
        }
        close(fd);
        buf[n] = '\0';
        return 0;
}

int api_vmm_memory(const pid_t *pids, size_t n, struct api_vmm_memory *ret)
{
        memset(ret, 0, sizeof(*ret));
        char buf[4096];
        for (size_t i = 0; i < n; i++) {
                if (pids[i] <= 0)
                        continue;
                int r = read_rollup(pids[i], buf, sizeof(buf));
                if (r == -ENOENT || r == -ESRCH)
                        continue; /* it exited since the list was read */
                if (r == 0 && buf[0] == '\0')
                        continue; /* a zombie: no mappings left */
                if (r == 0)
                        r = api_vmm_memory_parse(buf, ret);
                if (r < 0)
                        return r;
        }
        return 0;
}
