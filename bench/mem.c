/* bench-mem: throughput of the memory-snapshot operations, each against a baseline measured
 * in the same run on the same machine:
 *   process, diff (content + sparse), materialize  vs  `cat FILE > /dev/null` of that file
 *   merge of an N-generation chain                  vs  a plain copy (read+write+fsync) of
 *                                                       the bytes the merge moves
 * Default scenario (issue #2): 1 GiB of guest memory, 30 % random-data pages, the rest never
 * touched (holes); a chain of 8 generations each dirtying 5 % of the pages.
 * usage: bench-mem [--dir DIR] [--size-mib N] [--gens N] */
#include <vmsnap/mem.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/fs.h"

#define PAGE 4096u

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return rng * 0x2545f4914f6cdd1dull;
}

static double now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct vmsnap_diag *d)
{
        fprintf(stderr, "bench-mem: %s: %s\n", what, d ? d->msg : strerror(errno));
        exit(1);
}

static void fill_page(uint8_t *p)
{
        for (unsigned i = 0; i < PAGE; i += 8) {
                uint64_t v = rnd();
                memcpy(p + i, &v, 8);
        }
}

/* Writes `frac` of the pages of fd with random data (or zeros, 1 in 8, when zeros). */
static void dirty_pages(int fd, uint64_t pages, double frac, bool zeros)
{
        uint8_t page[PAGE];
        uint64_t n = (uint64_t)((double)pages * frac);
        for (uint64_t i = 0; i < n; i++) {
                if (zeros && rnd() % 8 == 0)
                        memset(page, 0, PAGE);
                else
                        fill_page(page);
                if (vmsnap_fs_pwrite_full(fd, page, PAGE, (rnd() % pages) * PAGE) < 0)
                        die("write", NULL);
        }
}

static int create_file(const char *path, uint64_t size)
{
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
                die(path, NULL);
        return fd;
}

/* Seconds `cat path > /dev/null` takes (the page cache warmed by a first run). */
static double time_cat(const char *path)
{
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "cat '%s' > /dev/null", path);
        if (system(cmd) != 0)
                die("cat", NULL);
        double t0 = now();
        if (system(cmd) != 0)
                die("cat", NULL);
        return now() - t0;
}

/* Seconds a plain read+write+fsync copy of len bytes of src takes. */
static double time_copy(const char *src, const char *dst, uint64_t len)
{
        static uint8_t buf[1 << 20];
        int in = open(src, O_RDONLY | O_CLOEXEC), out = create_file(dst, 0);
        double t0 = now();
        for (uint64_t off = 0; off < len; off += sizeof(buf)) {
                size_t n = (size_t)(len - off < sizeof(buf) ? len - off : sizeof(buf));
                if (vmsnap_fs_pread_full(in, buf, n, off) < 0 || vmsnap_fs_write_full(out, buf, n) < 0)
                        die("copy", NULL);
        }
        fsync(out);
        double t = now() - t0;
        close(in);
        close(out);
        unlink(dst);
        return t;
}

static void row(const char *name, uint64_t bytes, double secs, double base_secs,
                const char *base)
{
        double mbs = (double)bytes / 1e6 / secs, base_mbs = (double)bytes / 1e6 / base_secs;
        printf("%-26s %9.0f MB/s  %8.3f s   baseline %-22s %9.0f MB/s   ratio %.2f\n", name,
               mbs, secs, base, base_mbs, mbs / base_mbs);
}

struct cfg {
        const char *dir;
        uint64_t size;
        unsigned gens;
};

static void parse(int argc, char **argv, struct cfg *c)
{
        static const struct option o[] = {{"dir", required_argument, NULL, 'd'},
                                          {"size-mib", required_argument, NULL, 's'},
                                          {"gens", required_argument, NULL, 'g'},
                                          {0}};
        int ch;
        while ((ch = getopt_long(argc, argv, "", o, NULL)) != -1) {
                if (ch == 'd')
                        c->dir = optarg;
                else if (ch == 's')
                        c->size = strtoull(optarg, NULL, 0) << 20;
                else if (ch == 'g')
                        c->gens = (unsigned)strtoul(optarg, NULL, 0);
                else
                        exit(2);
        }
}

static char *path(const struct cfg *c, const char *name)
{
        char *p;
        if (asprintf(&p, "%s/%s", c->dir, name) < 0)
                exit(1);
        return p;
}

int main(int argc, char **argv)
{
        struct cfg c = {.dir = "/var/tmp/vmsnap-bench-mem", .size = 1ull << 30, .gens = 8};
        parse(argc, argv, &c);
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", c.dir, c.dir);
        if (system(cmd) != 0)
                die("mkdir", NULL);
        uint64_t pages = c.size / PAGE;
        char *mem = path(&c, "memory"), *snap = path(&c, "snap"), *sparse_snap = path(&c, "snap-sparse");
        char *diffmem = path(&c, "diff-memory"), *out = path(&c, "materialized");
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        struct vmsnap_mem_opts content = {.source = VMSNAP_MEM_SOURCE_CONTENT, .merge_cap = 1000};
        struct vmsnap_mem_opts sparse = {.source = VMSNAP_MEM_SOURCE_SPARSE, .merge_cap = 1000};

        printf("bench-mem: %llu MiB guest memory, 30%% data pages, %u generations x 5%% dirty, "
               "in %s\n", (unsigned long long)(c.size >> 20), c.gens, c.dir);
        int fd = create_file(mem, c.size);
        dirty_pages(fd, pages, 0.30, false);
        fsync(fd);

        double base = time_cat(mem), t0 = now();
        if (vmsnap_mem_process(mem, snap, NULL, &res, &d) < 0)
                die("process", &d);
        row("process", c.size, now() - t0, base, "cat memory");
        if (vmsnap_mem_process(mem, sparse_snap, NULL, &res, &d) < 0)
                die("process", &d);

        double content_secs = 0, content_base = 0, sparse_secs = 0, sparse_base = 0;
        for (unsigned g = 1; g <= c.gens; g++) {
                dirty_pages(fd, pages, 0.05, true);
                content_base += time_cat(mem);
                t0 = now();
                if (vmsnap_mem_diff(mem, snap, snap, &content, &res, &d) < 0)
                        die("diff content", &d);
                content_secs += now() - t0;

                int dfd = create_file(diffmem, c.size);
                dirty_pages(dfd, pages, 0.05, true);
                close(dfd);
                sparse_base += time_cat(diffmem);
                t0 = now();
                if (vmsnap_mem_diff(diffmem, sparse_snap, sparse_snap, &sparse, &res, &d) < 0)
                        die("diff sparse", &d);
                sparse_secs += now() - t0;
        }
        row("diff --source content", c.size * c.gens, content_secs, content_base, "cat memory");
        row("diff --source sparse", c.size * c.gens, sparse_secs, sparse_base, "cat diff file");

        t0 = now();
        if (vmsnap_mem_merge(snap, &res, &d) < 0)
                die("merge", &d);
        double merge_secs = now() - t0;
        char *copy = path(&c, "copy");
        char *merged = NULL;
        struct vmsnap_mem_snapshot *s;
        if (vmsnap_mem_open(snap, &s, &d) < 0)
                die("open", &d);
        char name[64];
        vmsnap_mem_diff_name(&vmsnap_mem_header(s)->build_id, name);
        merged = path(&c, "snap");
        free(merged);
        merged = NULL;
        if (asprintf(&merged, "%s/%s", snap, name) < 0)
                return 1;
        vmsnap_mem_close(s);
        double copy_secs = time_copy(merged, copy, res.bytes_written);
        row("merge (8-gen chain)", res.bytes_written, merge_secs, copy_secs, "copy+fsync same bytes");
        printf("%-26s merge/copy time ratio %.2f (target <= 2)\n", "", merge_secs / copy_secs);

        t0 = now();
        if (vmsnap_mem_materialize(snap, out, &res, &d) < 0)
                die("materialize", &d);
        double mat_secs = now() - t0;
        row("materialize", c.size, mat_secs, time_cat(out), "cat materialized");

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c.dir);
        return system(cmd) == 0 ? 0 : 1;
}
