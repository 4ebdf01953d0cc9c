/* bench-store: export and import of a 1 GiB guest snapshot (30 % of its blocks hold data,
 * half of that compressible) with each compression, against GNU tar + gzip/zstd on the very
 * same snapshot files in the same run. Prints MB/s (of snapshot bytes) and archive sizes,
 * with ratios ours / baseline.
 *
 * Fairness: both sides read warm page cache; neither fsyncs the archive; both fsync the
 * extracted files (ours does so on import, the baseline runs `sync FILE...`). Our import
 * also checks every checksum and the memory snapshot before committing, which the
 * baseline does not do; our export hashes every byte it sends. Best of REPS runs each,
 * ours and the baseline interleaved (the machine may be shared).
 *
 * usage: bench-store [WORKDIR]   (needs ~3 GiB free; default $TMPDIR or /tmp) */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vmsnap/store.h>

#include "util/fs.h"

#define GUEST_SIZE (1ull << 30)
#define BLOCK      4096u
#define REPS       3

static double now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
        uint64_t x = *s;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *s = x;
        return x * 0x2545f4914f6cdd1dull;
}

/* One data block: random bytes (incompressible) or a page of repeated records with a
 * counter (compresses like heap full of small structs). */
static void fill_block(uint8_t *b, uint64_t *s)
{
        if (rnd(s) & 1) {
                for (unsigned i = 0; i < BLOCK; i += 8) {
                        uint64_t v = rnd(s);
                        memcpy(b + i, &v, 8);
                }
                return;
        }
        uint64_t tag = rnd(s);
        for (unsigned i = 0; i < BLOCK; i += 32) {
                uint64_t rec[4] = {tag, i, tag ^ 0xffff, 0x6f6c6c6568};
                memcpy(b + i, rec, 32);
        }
}

/* Writes a sparse 1 GiB guest image whose data blocks come in runs and add up to 30 %. */
static int make_guest(const char *path)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        uint8_t *run = malloc(64 * BLOCK);
        uint64_t s = 0x5eed, blocks = GUEST_SIZE / BLOCK, b = 0, data = 0;
        int r = 0;
        while (r == 0 && b < blocks) {
                uint64_t len = 1 + rnd(&s) % 64;
                if (len > blocks - b)
                        len = blocks - b;
                /* data runs while below 30 % of what has been laid out so far */
                if (data * 10 < (b + len) * 3) {
                        for (uint64_t i = 0; i < len; i++)
                                fill_block(run + i * BLOCK, &s);
                        r = vmsnap_fs_pwrite_full(fd, run, len * BLOCK, b * BLOCK);
                        data += len;
                }
                b += len;
        }
        if (r == 0 && ftruncate(fd, (off_t)GUEST_SIZE) < 0)
                r = -errno;
        free(run);
        close(fd);
        return r;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
        char cmd[8192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        return system(cmd);
}

static uint64_t file_size(const char *p)
{
        struct stat st;
        return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

struct result {
        double exp_s, imp_s;
        uint64_t size;
};

static double mbps(uint64_t bytes, double s)
{
        return s > 0 ? (double)bytes / 1e6 / s : 0;
}

/* Ours: library export to a file, then import of that file; keeps the best times in res. */
static int run_ours(struct vmsnap_store *st, const char *id, enum vmsnap_compression c,
                    const char *work, struct result *res)
{
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/ours.tar", work);
        struct vmsnap_diag d = {0};
        struct vmsnap_export_opts eo = {.compression = c};
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        double t0 = now();
        if (fd < 0 || vmsnap_store_export_fd(st, id, fd, &eo, &d) < 0) {
                fprintf(stderr, "export: %s\n", d.msg);
                return 1;
        }
        double t1 = now();
        close(fd);
        res->size = file_size(path);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        struct vmsnap_import_opts io = {.name = "imported"};
        struct vmsnap_snapshot r;
        double t2 = now();
        if (vmsnap_store_import_fd(st, fd, &io, &r, &d) < 0) {
                fprintf(stderr, "import: %s\n", d.msg);
                return 1;
        }
        double t3 = now();
        close(fd);
        vmsnap_store_delete(st, r.id, 0, NULL);
        res->exp_s = t1 - t0 < res->exp_s ? t1 - t0 : res->exp_s;
        res->imp_s = t3 - t2 < res->imp_s ? t3 - t2 : res->imp_s;
        unlink(path);
        return 0;
}

/* Baseline: GNU tar (sparse-aware) piped through the compressor's command-line tool. */
static int run_tools(const char *dir, enum vmsnap_compression c, const char *work,
                     struct result *res)
{
        static const char *const pack[] = {"| zstd -3 -q", "| gzip -6", ""};
        static const char *const unpack[] = {"zstd -dc", "gzip -dc", "cat"};
        char path[PATH_MAX + 16], out[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/tools.tar", work);
        snprintf(out, sizeof(out), "%s/untar", work);
        double t0 = now();
        if (sh("tar -C '%s' --sparse -cf - . %s > '%s'", dir, pack[c], path) != 0)
                return 1;
        double t1 = now();
        res->size = file_size(path);
        if (sh("rm -rf '%s' && mkdir '%s'", out, out) != 0)
                return 1;
        double t2 = now();
        if (sh("%s '%s' | tar -C '%s' -xf - && sync '%s'/*", unpack[c], path, out, out) != 0)
                return 1;
        double t3 = now();
        res->exp_s = t1 - t0 < res->exp_s ? t1 - t0 : res->exp_s;
        res->imp_s = t3 - t2 < res->imp_s ? t3 - t2 : res->imp_s;
        sh("rm -rf '%s' '%s'", out, path);
        return 0;
}

static uint64_t snapshot_bytes(struct vmsnap_store *st, const char *id)
{
        struct vmsnap_snapshot_file *f;
        size_t n;
        uint64_t sum = 0;
        if (vmsnap_store_files(st, id, &f, &n, NULL) < 0)
                return 0;
        for (size_t i = 0; i < n; i++)
                sum += f[i].size;
        free(f);
        return sum;
}

static int bench(const char *work)
{
        char guest[PATH_MAX + 16], root[PATH_MAX + 16], dir[PATH_MAX];
        snprintf(guest, sizeof(guest), "%s/guest.mem", work);
        snprintf(root, sizeof(root), "%s/store", work);
        if (make_guest(guest) < 0)
                return 1;
        struct vmsnap_store *st;
        struct vmsnap_snapshot snap;
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot_spec spec = {.name = "bench", .kind = VMSNAP_SNAPSHOT_TEMPLATE};
        if (vmsnap_store_open(root, &st, &d) < 0 ||
            vmsnap_store_add(st, &spec, guest, NULL, NULL, &snap, &d) < 0) {
                fprintf(stderr, "bench-store: %s\n", d.msg);
                return 1;
        }
        unlink(guest);
        vmsnap_store_snapshot_dir(st, snap.id, dir, sizeof(dir));
        uint64_t bytes = snapshot_bytes(st, snap.id);
        printf("bench-store: 1 GiB guest, 30%% data blocks (half compressible) -> snapshot of "
               "%.1f MiB in %s\nbest of %d; MB/s = snapshot bytes / wall time; ratio = ours / "
               "GNU tar + gzip/zstd CLI on the same files\n\n",
               (double)bytes / (1 << 20), dir, REPS);
        printf("%-6s | %9s %9s %6s | %9s %9s %6s | %9s %9s %6s\n", "codec", "export", "tar+tool",
               "ratio", "import", "tool+tar", "ratio", "archive", "tools", "size");
        static const char *const names[] = {"zstd", "gzip", "none"};
        int rc = 0;
        for (int c = 0; c < 3 && rc == 0; c++) {
                struct result o = {1e9, 1e9, 0}, t = {1e9, 1e9, 0};
                /* interleaved, so that a burst of load elsewhere hits both sides alike */
                for (int rep = 0; rep < REPS && rc == 0; rep++) {
                        rc = run_ours(st, snap.id, (enum vmsnap_compression)c, work, &o);
                        if (rc == 0)
                                rc = run_tools(dir, (enum vmsnap_compression)c, work, &t);
                }
                if (rc)
                        break;
                printf("%-6s | %9.0f %9.0f %6.2f | %9.0f %9.0f %6.2f | %8.1fM %8.1fM %6.3f\n",
                       names[c], mbps(bytes, o.exp_s), mbps(bytes, t.exp_s), t.exp_s / o.exp_s,
                       mbps(bytes, o.imp_s), mbps(bytes, t.imp_s), t.imp_s / o.imp_s,
                       (double)o.size / (1 << 20), (double)t.size / (1 << 20),
                       (double)o.size / (double)t.size);
        }
        vmsnap_store_close(st);
        return rc;
}

int main(int argc, char **argv)
{
        if (system("tar --version >/dev/null 2>&1 && zstd --version >/dev/null 2>&1 && "
                   "gzip --version >/dev/null 2>&1") != 0) {
                fprintf(stderr, "bench-store: needs tar, zstd and gzip on PATH\n");
                return 77;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        const char *base = argc > 1 ? argv[1] : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        char work[PATH_MAX];
        snprintf(work, sizeof(work), "%s/vmsnap-bench-store-XXXXXX", base);
        if (!mkdtemp(work)) {
                perror(work);
                return 1;
        }
        int rc = bench(work);
        sh("rm -rf '%s'", work);
        return rc;
}
