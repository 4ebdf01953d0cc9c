/* bench-mem: each memory-snapshot operation against its physical floor, measured in the same
 * run on the same files (issue #11):
 *   floor = reading the bytes the operation must read (8 MiB reads from the page cache, as
 *           the operation finds them) + writing the bytes it stores (O_DIRECT, 8 MiB) + fsync:
 *           the data blocks plus the header and the new build's hash table it writes.
 *   process, diff: the input's data ranges (holes skipped, found with FIEMAP as any tool
 *                  can; one pread per range).
 *   merge:         only the live extents of the chain (the cheaper of reading each live run
 *                  and reading the referenced files whole).
 *   materialize:   the merged diff file.
 * Each operation runs in a child process so its CPU time and peak RSS are its own.
 * Default scenario: 1 GiB of guest memory, 30 % random-data pages, the rest holes; then a
 * chain of 8 generations, each diff dirtying 5 % of the pages (1 in 8 of them zeroed).
 * Medians over --runs runs; the ratio is the median of each run's op/floor.
 * usage: bench-mem [--dir DIR] [--size-mib N] [--gens N] [--runs N] */
#include <vmsnap/mem.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/fs.h"

#define PAGE  4096u
#define CHUNK ((size_t)8 << 20)
#define MAX_RUNS 15

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

static void die(const char *what, const char *msg)
{
        fprintf(stderr, "bench-mem: %s: %s\n", what, msg ? msg : strerror(errno));
        exit(1);
}

static void fill_page(uint8_t *p)
{
        for (unsigned i = 0; i < PAGE; i += 8) {
                uint64_t v = rnd() | 1;
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
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
                die(path, NULL);
        return fd;
}

/* ---- the floor: reads of given ranges + O_DIRECT writes + fsync ---- */
struct range {
        int fd;
        uint64_t off, len;
};

struct ranges {
        struct range *v;
        size_t n, cap;
};

static void add_range(struct ranges *r, int fd, uint64_t off, uint64_t len)
{
        if (r->n && r->v[r->n - 1].fd == fd && r->v[r->n - 1].off + r->v[r->n - 1].len == off) {
                r->v[r->n - 1].len += len;
                return;
        }
        if (r->n == r->cap) {
                r->cap = r->cap ? r->cap * 2 : 1024;
                r->v = realloc(r->v, r->cap * sizeof(*r->v));
                if (!r->v)
                        die("ranges", "out of memory");
        }
        r->v[r->n++] = (struct range){fd, off, len};
}

/* The data ranges of fd by SEEK_DATA/SEEK_HOLE, from off on. */
static void seek_ranges(int fd, off_t off, struct ranges *r)
{
        off_t end = lseek(fd, 0, SEEK_END);
        while (off < end) {
                off_t data = lseek(fd, off, SEEK_DATA);
                if (data < 0)
                        break;
                off_t hole = lseek(fd, data, SEEK_HOLE);
                add_range(r, fd, (uint64_t)data, (uint64_t)(hole - data));
                off = hole;
        }
}

/* The data ranges of fd (holes skipped), found the cheapest way a tool can: FIEMAP, 512
 * extents a call, as vmsnap does (unwritten extents, which the bench never makes, count as
 * data here), else SEEK_DATA/SEEK_HOLE. Part of the floor's time. */
static void data_ranges(int fd, struct ranges *r)
{
        enum { BATCH = 512 };
        _Alignas(8) uint8_t buf[sizeof(struct fiemap) + BATCH * sizeof(struct fiemap_extent)];
        struct fiemap *q = (struct fiemap *)buf;
        uint64_t off = 0, end = (uint64_t)lseek(fd, 0, SEEK_END);
        while (off < end) {
                memset(q, 0, sizeof(*q));
                q->fm_start = off;
                q->fm_length = end - off;
                q->fm_extent_count = BATCH;
                if (ioctl(fd, FS_IOC_FIEMAP, q) < 0) {
                        seek_ranges(fd, (off_t)off, r);
                        return;
                }
                if (q->fm_mapped_extents == 0)
                        return;
                for (uint32_t i = 0; i < q->fm_mapped_extents; i++) {
                        const struct fiemap_extent *x = &q->fm_extents[i];
                        uint64_t s = x->fe_logical > off ? x->fe_logical : off;
                        uint64_t e = x->fe_logical + x->fe_length;
                        e = e < end ? e : end;
                        if (s < e)
                                add_range(r, fd, s, e - s);
                        off = e > off ? e : off;
                        if (x->fe_flags & FIEMAP_EXTENT_LAST)
                                return;
                }
        }
}

static uint8_t *chunk_buf(void)
{
        static uint8_t *buf;
        if (!buf) {
                buf = aligned_alloc(4096, CHUNK);
                if (!buf)
                        die("buffer", "out of memory");
                for (size_t i = 0; i < CHUNK; i += PAGE)
                        fill_page(buf + i);
        }
        return buf;
}

/* Seconds to read every range in reads of at most 8 MiB. */
static double time_reads(const struct ranges *r)
{
        uint8_t *buf = chunk_buf();
        double t0 = now();
        for (size_t i = 0; i < r->n; i++)
                for (uint64_t o = 0; o < r->v[i].len; o += CHUNK) {
                        size_t n = (size_t)(r->v[i].len - o < CHUNK ? r->v[i].len - o : CHUNK);
                        if (vmsnap_fs_pread_full(r->v[i].fd, buf, n, r->v[i].off + o) < 0)
                                die("floor read", NULL);
                }
        return now() - t0;
}

/* Seconds to write `bytes` to a new file in dir (O_DIRECT, 8 MiB writes) and fsync it. */
static double time_write(const char *dir, uint64_t bytes)
{
        char p[4200];
        snprintf(p, sizeof(p), "%s/floor-out", dir);
        uint8_t *buf = chunk_buf();
        double t0 = now();
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0600);
        if (fd < 0)
                fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                die(p, NULL);
        for (uint64_t o = 0; o < bytes; o += CHUNK) {
                size_t n = (size_t)(bytes - o < CHUNK ? bytes - o : CHUNK);
                n = (n + PAGE - 1) / PAGE * PAGE;
                if (vmsnap_fs_pwrite_full(fd, buf, n, o) < 0)
                        die("floor write", NULL);
        }
        if (fsync(fd) < 0)
                die("fsync", NULL);
        double t = now() - t0;
        close(fd);
        unlink(p);
        return t;
}

/* ---- running one operation in a child ---- */
struct op_stats {
        double wall, cpu, floor;
        long rss_kb;
        struct vmsnap_mem_result res;
};

struct op_args {
        int kind; /* 0 process, 1 diff, 2 merge, 3 materialize */
        const char *in, *snap, *out;
        struct vmsnap_mem_opts opts;
};

static int call(const struct op_args *a, struct vmsnap_mem_result *res, struct vmsnap_diag *d)
{
        switch (a->kind) {
        case 0:
                return vmsnap_mem_process(a->in, a->snap, NULL, res, d);
        case 1:
                return vmsnap_mem_diff(a->in, a->snap, a->snap, &a->opts, res, d);
        case 2:
                return vmsnap_mem_merge(a->snap, res, d);
        default:
                return vmsnap_mem_materialize(a->snap, a->out, res, d);
        }
}

static struct op_stats run_op(const struct op_args *a)
{
        struct op_stats s = {0};
        int p[2];
        if (pipe(p) < 0)
                die("pipe", NULL);
        fflush(stdout);
        double t0 = now();
        pid_t pid = fork();
        if (pid < 0)
                die("fork", NULL);
        if (pid == 0) {
                close(p[0]);
                struct vmsnap_mem_result res = {0};
                struct vmsnap_diag d = {0};
                if (call(a, &res, &d) < 0) {
                        fprintf(stderr, "bench-mem: %s\n", d.msg);
                        _exit(1);
                }
                _exit(write(p[1], &res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 1);
        }
        close(p[1]);
        struct rusage ru;
        int st;
        ssize_t n = read(p[0], &s.res, sizeof(s.res));
        if (wait4(pid, &st, 0, &ru) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
            n != (ssize_t)sizeof(s.res))
                die("operation", "failed");
        s.wall = now() - t0;
        close(p[0]);
        s.cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        s.rss_kb = ru.ru_maxrss;
        return s;
}

/* ---- the scenario ---- */
enum { OP_PROCESS, OP_DIFF_CONTENT, OP_DIFF_SPARSE, OP_MERGE, OP_MATERIALIZE, N_OPS };
static const char *const op_names[N_OPS] = {"process", "diff --source content",
                                            "diff --source sparse", "merge (whole chain)",
                                            "materialize"};
static const double op_targets[N_OPS] = {1.15, 1.15, 1.15, 1.3, 0};

struct cfg {
        const char *dir;
        uint64_t size;
        unsigned gens, runs;
};

static char *path(const struct cfg *c, const char *name)
{
        char *p;
        if (asprintf(&p, "%s/%s", c->dir, name) < 0)
                exit(1);
        return p;
}

/* Bytes of the metadata an operation stored in snap besides its data blocks: the header
 * (rewritten whole by every operation) and the hash table of the build it wrote. */
static uint64_t meta_bytes(const char *snap, const struct vmsnap_mem_result *res)
{
        char name[64], p[4200];
        struct stat st;
        uint64_t n = 0;
        vmsnap_mem_diff_name(&res->build_id, name);
        snprintf(p, sizeof(p), "%s/%s.hashes", snap, name);
        if (stat(p, &st) < 0)
                die(p, NULL);
        n += (uint64_t)st.st_size;
        snprintf(p, sizeof(p), "%s/memfile.header", snap);
        if (stat(p, &st) < 0)
                die(p, NULL);
        return n + (uint64_t)st.st_size;
}

/* Floor of an operation that reads the data ranges of `in` and stores `bytes`. */
static double floor_of_input(const char *in, const char *dir, uint64_t bytes)
{
        int fd = open(in, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                die(in, NULL);
        struct ranges r = {0};
        data_ranges(fd, &r);
        double t = time_reads(&r) + time_write(dir, bytes);
        free(r.v);
        close(fd);
        return t;
}

static int cmp_range(const void *a, const void *b)
{
        const struct range *x = a, *y = b;
        if (x->fd != y->fd)
                return x->fd < y->fd ? -1 : 1;
        return x->off < y->off ? -1 : x->off > y->off;
}

/* Seconds to read the live extents of snap (or its referenced files whole, whichever is
 * cheaper). Sets *live to the live byte count. */
static double time_live_reads(const char *snap, uint64_t *live)
{
        struct vmsnap_mem_snapshot *s;
        struct vmsnap_diag d = {0};
        if (vmsnap_mem_open(snap, &s, &d) < 0)
                die("open", d.msg);
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        int *fds = calloc(h->n_builds, sizeof(int));
        struct ranges runs = {0}, whole = {0};
        for (uint32_t i = 0; i < h->n_builds; i++) {
                char name[64], *p;
                vmsnap_mem_diff_name(&h->builds[i].id, name);
                if (asprintf(&p, "%s/%s", snap, name) < 0 || (fds[i] = open(p, O_RDONLY)) < 0)
                        die(name, NULL);
                free(p);
                add_range(&whole, fds[i], 0, h->builds[i].file_size);
        }
        struct ranges ext = {0};
        *live = 0;
        for (uint64_t i = 0; i < h->n_extents; i++) {
                const struct vmsnap_mem_extent *e = &h->extents[i];
                if (e->build == VMSNAP_MEM_ZERO)
                        continue;
                add_range(&runs, fds[e->build], e->storage_offset, e->length);
                *live += e->length;
        }
        qsort(runs.v, runs.n, sizeof(*runs.v), cmp_range);
        for (size_t i = 0; i < runs.n; i++) /* join storage-contiguous runs */
                add_range(&ext, runs.v[i].fd, runs.v[i].off, runs.v[i].len);
        double t_runs = time_reads(&ext), t_whole = time_reads(&whole);
        double t = t_runs < t_whole ? t_runs : t_whole;
        for (uint32_t i = 0; i < h->n_builds; i++)
                close(fds[i]);
        free(fds);
        free(runs.v);
        free(whole.v);
        free(ext.v);
        vmsnap_mem_close(s);
        return t;
}

static void one_run(const struct cfg *c, struct op_stats out[N_OPS])
{
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", c->dir, c->dir);
        if (system(cmd) != 0)
                die("mkdir", NULL);
        uint64_t pages = c->size / PAGE;
        char *mem = path(c, "memory"), *snap = path(c, "snap"), *sparse_snap = path(c, "snap-sparse");
        char *diffmem = path(c, "diff-memory"), *mat = path(c, "materialized");
        memset(out, 0, N_OPS * sizeof(*out));
        int fd = create_file(mem, c->size);
        dirty_pages(fd, pages, 0.30, false);
        fsync(fd);

        struct op_args a = {.kind = 0, .in = mem, .snap = snap};
        out[OP_PROCESS] = run_op(&a);
        out[OP_PROCESS].floor = floor_of_input(mem, c->dir, out[OP_PROCESS].res.bytes_written +
                                                   meta_bytes(snap, &out[OP_PROCESS].res));
        a.snap = sparse_snap;
        run_op(&a);

        struct op_args content = {.kind = 1, .in = mem, .snap = snap,
                                  .opts = {.source = VMSNAP_MEM_SOURCE_CONTENT, .merge_cap = 1000}};
        struct op_args sparse = {.kind = 1, .in = diffmem, .snap = sparse_snap,
                                 .opts = {.source = VMSNAP_MEM_SOURCE_SPARSE, .merge_cap = 1000}};
        for (unsigned g = 1; g < c->gens; g++) {
                dirty_pages(fd, pages, 0.05, true);
                struct op_stats s = run_op(&content);
                s.floor = floor_of_input(mem, c->dir,
                                         s.res.bytes_written + meta_bytes(snap, &s.res));
                int dfd = create_file(diffmem, c->size);
                dirty_pages(dfd, pages, 0.05, true);
                close(dfd);
                struct op_stats t = run_op(&sparse);
                t.floor = floor_of_input(diffmem, c->dir,
                                         t.res.bytes_written + meta_bytes(sparse_snap, &t.res));
                struct op_stats *sums[2] = {&out[OP_DIFF_CONTENT], &out[OP_DIFF_SPARSE]};
                struct op_stats *ones[2] = {&s, &t};
                for (int k = 0; k < 2; k++) {
                        sums[k]->wall += ones[k]->wall;
                        sums[k]->cpu += ones[k]->cpu;
                        sums[k]->floor += ones[k]->floor;
                        sums[k]->res.bytes_written += ones[k]->res.bytes_written;
                        if (ones[k]->rss_kb > sums[k]->rss_kb)
                                sums[k]->rss_kb = ones[k]->rss_kb;
                }
        }
        close(fd);

        uint64_t live;
        double merge_reads = time_live_reads(snap, &live); /* of the chain, before it goes */
        struct op_args m = {.kind = 2, .snap = snap};
        out[OP_MERGE] = run_op(&m);
        out[OP_MERGE].floor = merge_reads +
                              time_write(c->dir, live + meta_bytes(snap, &out[OP_MERGE].res));
        if (out[OP_MERGE].res.bytes_written != live)
                die("merge", "wrote a different byte count than the chain's live data");

        struct op_args mt = {.kind = 3, .snap = snap, .out = mat};
        out[OP_MATERIALIZE] = run_op(&mt);
        struct stat st;
        if (stat(mat, &st) < 0)
                die(mat, NULL);
        out[OP_MATERIALIZE].res.bytes_written = (uint64_t)st.st_blocks * 512;
        out[OP_MATERIALIZE].floor = time_live_reads(snap, &live) +
                                    time_write(c->dir, (uint64_t)st.st_blocks * 512);
        free(mem);
        free(snap);
        free(sparse_snap);
        free(diffmem);
        free(mat);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
        qsort(v, n, sizeof(*v), cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void report(const struct cfg *c, struct op_stats runs[][N_OPS])
{
        printf("%-22s %9s %9s %8s %7s %7s %8s %9s\n", "operation", "time s", "floor s", "ratio",
               "target", "cpu s", "rss MB", "MB stored");
        for (int op = 0; op < N_OPS; op++) {
                double wall[MAX_RUNS], floor[MAX_RUNS], ratio[MAX_RUNS], cpu[MAX_RUNS], mb[MAX_RUNS];
                long rss = 0;
                for (unsigned r = 0; r < c->runs; r++) {
                        wall[r] = runs[r][op].wall;
                        floor[r] = runs[r][op].floor;
                        ratio[r] = wall[r] / floor[r];
                        cpu[r] = runs[r][op].cpu;
                        mb[r] = (double)runs[r][op].res.bytes_written / 1e6;
                        if (runs[r][op].rss_kb > rss)
                                rss = runs[r][op].rss_kb;
                }
                char target[16] = "-";
                if (op_targets[op] > 0)
                        snprintf(target, sizeof(target), "%.2f", op_targets[op]);
                printf("%-22s %9.3f %9.3f %7.2fx %7s %7.2f %8.0f %9.0f\n", op_names[op],
                       median(wall, c->runs), median(floor, c->runs), median(ratio, c->runs),
                       target, median(cpu, c->runs), (double)rss / 1024, median(mb, c->runs));
        }
        printf("(diff rows: the sum over %u generations; ratio = median over runs of time/floor "
               "measured in the same run; rss = peak over runs; MB stored = data blocks, the "
               "floor also writes the header and hash table each operation wrote)\n",
               c->gens - 1);
}

static void parse(int argc, char **argv, struct cfg *c)
{
        static const struct option o[] = {{"dir", required_argument, NULL, 'd'},
                                          {"size-mib", required_argument, NULL, 's'},
                                          {"gens", required_argument, NULL, 'g'},
                                          {"runs", required_argument, NULL, 'r'},
                                          {0}};
        int ch;
        while ((ch = getopt_long(argc, argv, "", o, NULL)) != -1) {
                if (ch == 'd')
                        c->dir = optarg;
                else if (ch == 's')
                        c->size = strtoull(optarg, NULL, 0) << 20;
                else if (ch == 'g')
                        c->gens = (unsigned)strtoul(optarg, NULL, 0);
                else if (ch == 'r')
                        c->runs = (unsigned)strtoul(optarg, NULL, 0);
                else
                        exit(2);
        }
        if (c->gens < 2 || c->runs < 1 || c->runs > MAX_RUNS || c->size < (1u << 20))
                die("usage", "--gens >= 2, 1 <= --runs <= 15, --size-mib >= 1");
}

int main(int argc, char **argv)
{
        struct cfg c = {.dir = "/var/tmp/vmsnap-bench-mem", .size = 1ull << 30, .gens = 8,
                        .runs = 3};
        parse(argc, argv, &c);
        printf("bench-mem: %llu MiB guest memory, 30%% data pages, chain of %u generations "
               "(5%% dirty each), %u runs, in %s\n", (unsigned long long)(c.size >> 20),
               c.gens, c.runs, c.dir);
        static struct op_stats runs[MAX_RUNS][N_OPS];
        for (unsigned r = 0; r < c.runs; r++)
                one_run(&c, runs[r]);
        report(&c, runs);
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c.dir);
        return system(cmd) == 0 ? 0 : 1;
}
