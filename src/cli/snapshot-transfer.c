/* `vmsnap snapshot export | import`: snapshots as tar streams or directories, with a
 * progress bar on stderr when it is a terminal. */
#include "cli/snapshot.h"
#include "util/fs.h"
#include "util/text.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- progress bar (a terminal only) ------------------------------------------------------- */

struct bar {
        bool on;
        double start, last;
        const char *what;
};

static double now_seconds(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bar_draw(void *ctx, uint64_t done, uint64_t total)
{
        struct bar *b = ctx;
        double t = now_seconds();
        if (!b->on || (t - b->last < 0.1 && done < total))
                return;
        b->last = t;
        double el = t - b->start, rate = el > 0 ? (double)done / el : 0;
        int pct = total ? (int)(100.0 * (double)done / (double)total) : 0, fill = pct / 4;
        char d[16], tot[16], r[16];
        vmsnap_format_bytes(done, d);
        vmsnap_format_bytes(total, tot);
        vmsnap_format_bytes((uint64_t)rate, r);
        long eta = rate > 0 && total > done ? (long)((double)(total - done) / rate) : 0;
        fprintf(stderr, "\r%s [%.*s%*s] %3d%% %s/%s %s/s ETA %ld:%02ld ", b->what, fill,
                "=========================", 25 - fill, "", pct, d, tot, r, eta / 60, eta % 60);
}

static void bar_init(struct bar *b, const char *what, struct vmsnap_export_opts *e,
                     struct vmsnap_import_opts *i)
{
        b->on = isatty(STDERR_FILENO);
        b->start = now_seconds();
        b->last = 0;
        b->what = what;
        if (e) {
                e->progress = bar_draw;
                e->progress_ctx = b;
        }
        if (i) {
                i->progress = bar_draw;
                i->progress_ctx = b;
        }
}

static void bar_done(struct bar *b)
{
        if (b->on)
                fprintf(stderr, "\r\033[K");
}

const char snapshot_export_usage[] =
    "usage: vmsnap snapshot export REF [-o FILE|-] [--to-dir DIR] [OPTIONS]\n\n"
    "Writes a snapshot as a tar stream (snapshot.json first, sparse files kept sparse) to\n"
    "FILE, or to stdout with `-o -` or when stdout is not a terminal; or, with --to-dir,\n"
    "as plain files in DIR (must be empty or not exist; snapshot.json written last).\n"
    "A snapshot with a disk overlay carries the base image the overlay stands on\n"
    "(images/rootfs-<hash>.ext4, once), so that it restores on another host.\n"
    "Every byte is checked against the snapshot's checksums on the way out.\n"
    "  -o, --output FILE      the archive (written to FILE.partial, then renamed)\n"
    "  --compression C        none, gzip or zstd (default zstd)\n"
    "  --level N              compression level (default: zstd 3, gzip 6)\n"
    "  --no-base              leave the base image out (the importing host must have it;\n"
    "                         also what vmsnap versions without base images can read)\n"
    "A progress bar is drawn on stderr when it is a terminal.\n";

/* Exports into path through a temporary name, so a failed export leaves no partial file. */
static int export_file(struct vmsnap_store *s, const char *id, const char *path,
                       const struct vmsnap_export_opts *o, struct vmsnap_diag *d)
{
        char tmp[PATH_MAX];
        if (snprintf(tmp, sizeof(tmp), "%s.partial.%d", path, (int)getpid()) >= (int)sizeof(tmp))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", path);
        int fd = vmsnap_fs_create_private(AT_FDCWD, tmp, O_WRONLY);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: %s", tmp, strerror(-fd));
        int r = vmsnap_store_export_fd(s, id, fd, o, d);
        if (r == 0 && fsync(fd) < 0)
                r = vmsnap_diag(d, -errno, "%s: fsync: %s", tmp, strerror(errno));
        close(fd);
        if (r == 0 && rename(tmp, path) < 0)
                r = vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        if (r < 0)
                unlink(tmp);
        return r;
}

int snapshot_export(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs != 1)
                return snapshot_usage_error(a, "expects one REF");
        if (a->output && a->to_dir)
                return snapshot_usage_error(a, "give -o or --to-dir, not both");
        bool to_stdout = !a->to_dir && (!a->output || strcmp(a->output, "-") == 0);
        if (to_stdout && isatty(STDOUT_FILENO))
                return snapshot_usage_error(a, "refusing to write an archive to a terminal; use -o FILE "
                                      "or a pipe");
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        if (vmsnap_store_resolve(s, a->args[0], &r, &d) < 0)
                return snapshot_fail(a, &d);
        struct bar b;
        bar_init(&b, "export", &a->exp, NULL);
        int e = a->to_dir   ? vmsnap_store_export_dir(s, r.id, a->to_dir, &a->exp, &d)
                : to_stdout ? vmsnap_store_export_fd(s, r.id, STDOUT_FILENO, &a->exp, &d)
                            : export_file(s, r.id, a->output, &a->exp, &d);
        bar_done(&b);
        return e < 0 ? snapshot_fail(a, &d) : CLI_OK;
}

const char snapshot_import_usage[] =
    "usage: vmsnap snapshot import [FILE|-|DIR] [--name NAME] [--description TEXT]\n"
    "                              [--max-size SIZE] [--max-logical-size SIZE] [--json]\n\n"
    "Reads an export: a tar stream from FILE or stdin (none, gzip or zstd: detected), or\n"
    "a directory written by `export --to-dir`. Links, devices, paths out of the\n"
    "snapshot, oversized or truncated archives are refused, and every checksum is\n"
    "verified before the snapshot becomes visible. A disk must name no file but its\n"
    "pinned base image, which the archive carries (checked against its hash, then pinned\n"
    "under ROOT/images) or which is pinned here already. The archive's id is kept when\n"
    "free; its parent/template only when verified here (a note says when one is dropped).\n"
    "  --name NAME          store it under another name (needed when the archive's name\n"
    "                       is taken here)\n"
    "  --description TEXT   replace the archive's description\n"
    "  --max-size SIZE      refuse once more data than this would be written (runs of\n"
    "                       zeros become holes and do not count; default 256G)\n"
    "  --max-logical-size SIZE  refuse archives declaring more bytes in all, holes\n"
    "                       included (default 1T)\n"
    "  --json               the new record as JSON\n";

/* Notes (a lineage link dropped, a base image pinned) go to stderr: stdout stays the
 * record. */
static void print_note(void *ctx, const char *note)
{
        (void)ctx;
        fprintf(stderr, "note: %s\n", note);
}

int snapshot_import(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs > 1)
                return snapshot_usage_error(a, "expects at most one FILE or DIR");
        const char *src = a->nargs ? a->args[0] : "-";
        bool from_stdin = strcmp(src, "-") == 0;
        if (from_stdin && isatty(STDIN_FILENO))
                return snapshot_usage_error(a, "give a FILE or DIR, or pipe an archive into stdin");
        struct vmsnap_import_opts o = {
            .name = a->name,
            .description = a->description,
            .max_bytes = a->max_size,
            .max_logical = a->max_logical,
            .note = print_note};
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        struct stat st;
        struct bar b;
        bar_init(&b, "import", NULL, &o);
        int e;
        if (!from_stdin && stat(src, &st) == 0 && S_ISDIR(st.st_mode)) {
                e = vmsnap_store_import_dir(s, src, &o, &r, &d);
        } else {
                int fd = from_stdin ? STDIN_FILENO : open(src, O_RDONLY | O_CLOEXEC);
                e = fd < 0 ? vmsnap_diag(&d, -errno, "%s: %s", src, strerror(errno))
                           : vmsnap_store_import_fd(s, fd, &o, &r, &d);
                if (fd > STDIN_FILENO)
                        close(fd);
        }
        bar_done(&b);
        if (e < 0)
                return snapshot_fail(a, &d);
        snapshot_print_added(s, a, &r, "imported");
        return CLI_OK;
}
