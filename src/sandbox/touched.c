/* touched: a pause of a VM restored from a snapshot stores the blocks its guest changed. A
 * content diff finds them by hashing the whole memory file (256 MiB per pause for 256 MiB
 * of guest RAM). But the VMM maps its memory file (MAP_SHARED) into a process that started
 * after the file was written, so a page it has not mapped since cannot have been written
 * through it: its page table (/proc/<pid>/pagemap) lists a superset of the written pages,
 * typically a few percent of RAM. Only those blocks are read and hashed against the parent
 * (vmsnap_mem_diff_pages, straight into the new generation).
 *
 * This holds as long as no mapped page left the VMM's page table without the VMM asking:
 * for a file on tmpfs, reclaim of shmem (needs swap) and khugepaged collapsing shmem into
 * huge pages (needs shmem THP) are the kernel's only such paths (a file on a disk file system
 * is reclaimed once written back, so it never takes the shortcut); page migration keeps the entry (pagemap
 * reports it as swapped, counted as touched). touch_mark_take/holds refuse the shortcut
 * whenever either could have happened; the caller then diffs by content as before. A VMM
 * that unmaps its own pages can only make its own snapshot wrong, which it can anyway. */
#include "sandbox/touched.h"

#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/mem.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#define PM_PRESENT (1ull << 63)
#define PM_SWAP    (1ull << 62) /* swapped, or a migration entry: the page is in use */
#define PM_BATCH   4096         /* pagemap entries read at once */

/* True when /proc/swaps lists a device (or cannot be read). */
static bool swap_active(void)
{
        FILE *f = fopen("/proc/swaps", "re");
        if (!f)
                return true;
        char line[512];
        int lines = 0;
        while (fgets(line, sizeof(line), f))
                lines++;
        fclose(f);
        return lines > 1; /* the header alone: no swap */
}

/* pswpout + zswpout (pages swapped out since boot); UINT64_MAX when unreadable. */
static uint64_t swap_outs(void)
{
        FILE *f = fopen("/proc/vmstat", "re");
        if (!f)
                return UINT64_MAX;
        char name[64];
        uint64_t v, sum = 0;
        while (fscanf(f, "%63s %" SCNu64, name, &v) == 2)
                if (strcmp(name, "pswpout") == 0 || strcmp(name, "zswpout") == 0)
                        sum += v;
        fclose(f);
        return sum;
}

/* True when shmem may get transparent huge pages: the global policy, or a huge= option on
 * the mount that holds memfile (its super options in /proc/self/mountinfo). */
static bool shmem_thp_possible(const char *memfile)
{
        char buf[256] = "";
        FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
        if (f) {
                if (!fgets(buf, sizeof(buf), f))
                        buf[0] = '\0';
                fclose(f);
                if (!strstr(buf, "[never]") && !strstr(buf, "[deny]"))
                        return true;
                if (strstr(buf, "[deny]"))
                        return false; /* off for every mount */
        }
        struct stat st;
        if (stat(memfile, &st) < 0 || !(f = fopen("/proc/self/mountinfo", "re")))
                return true;
        char want[32], line[4096];
        snprintf(want, sizeof(want), " %u:%u ", major(st.st_dev), minor(st.st_dev));
        bool huge = false;
        while (fgets(line, sizeof(line), f)) {
                const char *sep = strstr(line, " - ");
                const char *opt = sep ? strstr(sep, "huge=") : NULL;
                if (strstr(line, want) && opt && strncmp(opt, "huge=never", 10) != 0)
                        huge = true;
        }
        fclose(f);
        return huge;
}

/* True when memfile is on tmpfs: shmem pages leave a page table only through swap or huge
 * page collapse (checked apart). A file on a disk file system is not: written back, its dirty
 * pages can be reclaimed from the VMM's page table at any time, and their changes missed. */
static bool on_tmpfs(const char *memfile)
{
        struct statfs fs;
        return statfs(memfile, &fs) == 0 && fs.f_type == TMPFS_MAGIC;
}

void touch_mark_take(const char *memfile, struct touch_mark *ret)
{
        ret->swap_outs = swap_outs();
        ret->valid = ret->swap_outs != UINT64_MAX && on_tmpfs(memfile) && !swap_active() &&
                     !shmem_thp_possible(memfile);
}

bool touch_mark_holds(const struct touch_mark *m)
{
        return m->valid && !swap_active() && swap_outs() == m->swap_outs;
}

/* One mapping of the memory file in the VMM: [start, end) at file offset `offset`. */
struct mapping {
        uint64_t start, end, offset;
};

/* The mappings of the file (dev, ino) in /proc/<pid>/maps, up to max; returns the count or
 * -errno. */
static int find_mappings(pid_t pid, dev_t dev, ino_t ino, struct mapping *out, int max)
{
        char path[64], line[4096];
        snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        int n = 0;
        while (fgets(line, sizeof(line), f)) {
                uint64_t start, end, off, inode;
                unsigned maj, min;
                if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %*s %" SCNx64 " %x:%x %" SCNu64, &start,
                           &end, &off, &maj, &min, &inode) != 6)
                        continue;
                if (inode != (uint64_t)ino || makedev(maj, min) != dev || n == max)
                        continue;
                out[n++] = (struct mapping){.start = start, .end = end, .offset = off};
        }
        fclose(f);
        return n;
}

/* Marks in `touched` (one bit per block) every block with a page that m has in its page
 * table; `covered` gets one bit per page of the file that m maps at all. */
static int scan_mapping(int pagemap, const struct mapping *m, uint64_t size, uint64_t bs,
                        uint8_t *touched, uint8_t *covered)
{
        const uint64_t ps = 4096;
        uint64_t entries[PM_BATCH];
        for (uint64_t va = m->start; va < m->end;) {
                uint64_t n = MIN((m->end - va) / ps, (uint64_t)PM_BATCH);
                ssize_t got = vmsnap_fs_pread_full(pagemap, entries, n * 8, va / ps * 8);
                if (got != (ssize_t)(n * 8))
                        return got < 0 ? (int)got : -EIO;
                for (uint64_t i = 0; i < n; i++) {
                        uint64_t off = m->offset + (va - m->start) + i * ps;
                        if (off >= size)
                                break;
                        covered[off / ps / 8] |= (uint8_t)(1u << (off / ps % 8));
                        if (entries[i] & (PM_PRESENT | PM_SWAP))
                                touched[off / bs / 8] |= (uint8_t)(1u << (off / bs % 8));
                }
                va += n * ps;
        }
        return 0;
}

static bool all_set(const uint8_t *bits, uint64_t n)
{
        for (uint64_t i = 0; i < n; i++)
                if (!(bits[i / 8] & (1u << (i % 8))))
                        return false;
        return true;
}

/* Which blocks pid has touched: a bitmap (one bit per block of bs) in *ret. */
static int touched_blocks(pid_t pid, int memfd, uint64_t size, uint64_t bs, uint8_t **ret,
                          struct vmsnap_diag *d)
{
        struct stat st;
        if (fstat(memfd, &st) < 0)
                return vmsnap_diag(d, -errno, "memory file: %s", strerror(errno));
        struct mapping maps[64];
        int n = find_mappings(pid, st.st_dev, st.st_ino, maps, 64);
        if (n <= 0)
                return vmsnap_diag(d, n < 0 ? n : -ENOENT, "process %d does not map its "
                                   "memory file", (int)pid);
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
        _cleanup_close_ int pm = open(path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ uint8_t *bits = calloc(size / bs / 8 + 1, 1);
        _cleanup_free_ uint8_t *covered = calloc(size / 4096 / 8 + 1, 1);
        if (pm < 0 || !bits || !covered)
                return vmsnap_diag(d, pm < 0 ? -errno : -ENOMEM, "%s: %s", path,
                                   pm < 0 ? strerror(errno) : "out of memory");
        for (int i = 0; i < n; i++) {
                int r = scan_mapping(pm, &maps[i], size, bs, bits, covered);
                if (r < 0)
                        return vmsnap_diag(d, r, "%s: %s", path, strerror(-r));
        }
        if (!all_set(covered, size / 4096))
                return vmsnap_diag(d, -ENOENT, "process %d maps only part of its memory file",
                                   (int)pid);
        *ret = TAKE_PTR(bits);
        return 0;
}

static uint64_t count_bits(const uint8_t *bits, uint64_t n)
{
        uint64_t c = 0;
        for (uint64_t i = 0; i < n; i++)
                c += (bits[i / 8] >> (i % 8)) & 1u;
        return c;
}

int touch_pages(pid_t pid, const char *memfile, uint8_t **ret_pages, uint64_t *ret_touched,
                struct vmsnap_diag *d)
{
        if (pid <= 0 || !memfile || !ret_pages || !ret_touched)
                return vmsnap_diag(d, -EINVAL, "touch_pages: missing argument");
        _cleanup_close_ int memfd = open(memfile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (memfd < 0 || fstat(memfd, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", memfile, strerror(errno));
        uint64_t size = (uint64_t)st.st_size;
        if (size == 0 || size % 4096)
                return vmsnap_diag(d, -EINVAL, "%s: size %" PRIu64 " is not whole pages",
                                   memfile, size);
        uint8_t *pages = NULL;
        int r = touched_blocks(pid, memfd, size, 4096, &pages, d);
        if (r < 0)
                return r;
        *ret_touched = count_bits(pages, size / 4096);
        *ret_pages = pages;
        return 0;
}

/* process_madvise(MADV_PAGEOUT) of [start, end) in the process behind pidfd; every byte is
 * advised unless the kernel refuses (a partial answer goes on from where it stopped). */
static int pageout_range(int pidfd, uint64_t start, uint64_t end)
{
        while (start < end) {
                struct iovec iov = {.iov_base = (void *)(uintptr_t)start,
                                    .iov_len = (size_t)(end - start)};
                long got = syscall(SYS_process_madvise, pidfd, &iov, 1, MADV_PAGEOUT, 0);
                if (got <= 0)
                        return got < 0 ? -errno : -EIO;
                start += (uint64_t)got;
        }
        return 0;
}

int touch_pageout(pid_t pid, const char *memfile, struct vmsnap_diag *d)
{
        if (pid <= 0 || !memfile)
                return vmsnap_diag(d, -EINVAL, "touch_pageout: missing argument");
        struct stat st;
        if (stat(memfile, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", memfile, strerror(errno));
        struct mapping maps[64];
        int n = find_mappings(pid, st.st_dev, st.st_ino, maps, 64);
        if (n <= 0)
                return vmsnap_diag(d, n < 0 ? n : -ENOENT, "process %d does not map %s",
                                   (int)pid, memfile);
        _cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0)
                return vmsnap_diag(d, -errno, "process %d: pidfd_open: %s", (int)pid,
                                   strerror(errno));
        for (int i = 0; i < n; i++) {
                int r = pageout_range(pidfd, maps[i].start, maps[i].end);
                if (r < 0)
                        return vmsnap_diag(d, r, "process %d: MADV_PAGEOUT of %s: %s", (int)pid,
                                           memfile, strerror(-r));
        }
        return 0;
}
