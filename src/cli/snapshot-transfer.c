/* `vmsnap snapshot export | import`: snapshots as tar streams or directories, with a
 * progress bar on stderr when it is a terminal. */
#include "cli/progress.h"
#include "cli/snapshot.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/text.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    "  --json                 {\"id\", \"name\", \"output\" and \"bytes\", or \"dir\"} (needs -o\n"
    "                         FILE or --to-dir: stdout carries the archive)\n"
    "On a terminal, stderr shows progress once it runs a second, then the time it took.\n";

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

/* --json of an export: what was written where; for an archive also its size. */
static void print_exported(const struct vmsnap_snapshot *r, const char *path, bool dir)
{
        json_t *o = json_pack("{s:s, s:s?, s:o}", "id", r->id, "name", r->name,
                              dir ? "dir" : "output", vmsnap_json_string_lossy(path));
        struct stat st;
        if (o && !dir && stat(path, &st) == 0)
                json_object_set_new(o, "bytes", json_integer((json_int_t)st.st_size));
        snapshot_print_json(o);
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
        if (to_stdout && a->json)
                return snapshot_usage_error(a, "--json needs -o FILE or --to-dir (stdout carries the "
                                               "archive)");
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        if (vmsnap_store_resolve(s, a->args[0], &r, &d) < 0)
                return snapshot_fail(a, &d);
        struct cli_progress b;
        cli_progress_start(&b, "export %s", a->args[0]);
        a->exp.progress = cli_progress_tick;
        a->exp.progress_ctx = &b;
        int e = a->to_dir   ? vmsnap_store_export_dir(s, r.id, a->to_dir, &a->exp, &d)
                : to_stdout ? vmsnap_store_export_fd(s, r.id, STDOUT_FILENO, &a->exp, &d)
                            : export_file(s, r.id, a->output, &a->exp, &d);
        cli_progress_end(&b, e == 0);
        if (e < 0)
                return snapshot_fail(a, &d);
        if (a->json)
                print_exported(&r, a->to_dir ? a->to_dir : a->output, !!a->to_dir);
        return CLI_OK;
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
        struct cli_progress b;
        cli_progress_start(&b, "import %s", src);
        o.progress = cli_progress_tick;
        o.progress_ctx = &b;
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
        cli_progress_end(&b, e == 0);
        if (e < 0)
                return snapshot_fail(a, &d);
        snapshot_print_added(s, a, &r, "imported");
        return CLI_OK;
}
