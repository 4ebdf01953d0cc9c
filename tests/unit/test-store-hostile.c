/* Imports that must not trust the archive, through the store API (what the CLI and
 * POST /v1/snapshots call) and the real CLI: a disk overlay whose qcow2 header names a host
 * file (qemu-img rebase -u -b /etc/shadow, sizes and checksums fixed up) is refused, as is
 * every other way a disk can name a file; the base image travels with the export (once),
 * is checked against its hash and pinned, and an archive without one imports only where the
 * base is pinned already; references an older vmsnap wrote are normalized; an archive's
 * parent/template claims
 * are kept only when its memory really contains their builds; FIFOs in a snapshot never
 * hang verify or export. Every refusal leaves the store as it was. Needs qemu-img. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <sys/wait.h>

#include <vmsnap/disk.h>

#include "store/internal.h"
#include "test-store-lib.h"
#include "util/cleanup.h"
#include "util/fs.h"

struct fx {
        char *tmp, *root_a, *root_b;
        struct vmsnap_store *a, *b;
        char base_name[VMSNAP_BASE_NAME_LEN + 1];
        char *base; /* root_a/images/<base_name> */
        struct vmsnap_snapshot disk; /* in a: memory + rootfs.qcow2 + rootfs.meta */
};

/* ---- helpers ------------------------------------------------------------------------------ */

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void run(const char *fmt, ...)
{
        char cmd[8192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        if (system(cmd) != 0)
                fail_msg("command failed: %s", cmd);
}

static void pin_into(const char *root, const char *src_dir, const char *src_name,
                     char name[VMSNAP_BASE_NAME_LEN + 1])
{
        struct vmsnap_diag d = {0};
        int idir = vmsnap_disk_images_open(root, true, &d), sdir = vmsnap_fs_open_dir(src_dir);
        if (idir < 0 || sdir < 0 || vmsnap_disk_pin_base(idir, sdir, src_name, name, &d) < 0)
                fail_msg("pin into %s: %s", root, d.msg);
        close(idir);
        close(sdir);
}

/* A snapshot with memory, a qcow2 overlay and rootfs.meta, made the way a pause makes one.
 * backing: NULL for what vmsnap writes, else the backing name (and meta base) to write. */
static void make_disk_snapshot(struct fx *f, struct vmsnap_store *s, const char *name,
                               const char *legacy_base, struct vmsnap_snapshot *ret)
{
        struct vmsnap_snapshot_spec spec = {.name = name, .kind = VMSNAP_SNAPSHOT_PAUSE,
                                            .vmm = "qemu", .vcpus = 1};
        struct vmsnap_store_txn *t;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_create_begin(s, &spec, &t, &d) < 0)
                fail_msg("begin: %s", d.msg);
        const char *dir = vmsnap_store_txn_dir(t);
        char *mem = test_path(f->tmp, "mem-disk"), *ov = test_path(dir, "rootfs.qcow2");
        make_memfile(mem, 77, 3);
        if (vmsnap_mem_process(mem, dir, NULL, NULL, &d) < 0)
                fail_msg("process: %s", d.msg);
        if (!legacy_base) {
                if (vmsnap_disk_overlay_create(f->base, ov, &d) < 0 ||
                    vmsnap_disk_write_meta(dir, f->base, "qcow2", &d) < 0)
                        fail_msg("disk: %s", d.msg);
        } else {
                run("qemu-img create -q -f qcow2 -u -F raw -b '%s' '%s' 1M", legacy_base, ov);
                char text[4200], *meta = test_path(dir, "rootfs.meta");
                snprintf(text, sizeof(text), "{\"base\":\"%s\",\"format\":\"qcow2\"}", legacy_base);
                test_write_file(meta, text, strlen(text));
                free(meta);
        }
        run("qemu-io -c 'write -P 0x5a 64k 64k' '%s' >/dev/null 2>&1 || true", ov);
        if (vmsnap_store_txn_commit(t, ret, &d) < 0)
                fail_msg("commit: %s", d.msg);
        vmsnap_store_txn_free(t);
        free(mem);
        free(ov);
}

static int setup(void **state)
{
        if (system("qemu-img --version >/dev/null 2>&1") != 0) {
                fprintf(stderr, "test-store-hostile: qemu-img is needed (qemu-utils); skipping\n");
                exit(77);
        }
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("store-hostile");
        f->root_a = test_path(f->tmp, "a");
        f->root_b = test_path(f->tmp, "b");
        f->a = store_open_or_die(f->root_a);
        f->b = store_open_or_die(f->root_b);
        char *src = test_path(f->tmp, "rootfs.ext4");
        uint8_t *buf = malloc(1 << 20);
        uint64_t rng = 5;
        test_fill_random(&rng, buf, 1 << 20);
        test_write_file(src, buf, 1 << 20);
        free(buf);
        free(src);
        pin_into(f->root_a, f->tmp, "rootfs.ext4", f->base_name);
        char *images = test_path(f->root_a, "images");
        f->base = test_path(images, f->base_name);
        free(images);
        make_disk_snapshot(f, f->a, "disk", NULL, &f->disk);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        vmsnap_store_close(f->a);
        vmsnap_store_close(f->b);
        test_rmtree(f->tmp);
        free(f->tmp);
        free(f->root_a);
        free(f->root_b);
        free(f->base);
        free(f);
        return 0;
}

static char *export_tar(struct fx *f, const char *id, bool no_base, const char *file)
{
        char *path = test_path(f->tmp, file);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        struct vmsnap_export_opts o = {.no_base = no_base};
        struct vmsnap_diag d = {0};
        if (vmsnap_store_export_fd(f->a, id, fd, &o, &d) < 0)
                fail_msg("export: %s", d.msg);
        close(fd);
        return path;
}

static char *export_to_dir(struct fx *f, const char *id, bool no_base, const char *name)
{
        char *dir = test_path(f->tmp, name);
        struct vmsnap_export_opts o = {.no_base = no_base};
        struct vmsnap_diag d = {0};
        if (vmsnap_store_export_dir(f->a, id, dir, &o, &d) < 0)
                fail_msg("export dir: %s", d.msg);
        return dir;
}

struct notes {
        char text[4096];
};

static void collect_note(void *ctx, const char *note)
{
        struct notes *n = ctx;
        size_t len = strlen(n->text);
        snprintf(n->text + len, sizeof(n->text) - len, "%s\n", note);
}

static int import_any(struct vmsnap_store *s, const char *path, struct vmsnap_import_opts *o,
                      struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        if (S_ISDIR(st.st_mode))
                return vmsnap_store_import_dir(s, path, o, ret, d);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        int r = vmsnap_store_import_fd(s, fd, o, ret, d);
        close(fd);
        return r;
}

static int count_in(const char *root, const char *sub)
{
        char *p = test_path(root, sub);
        int n = count_entries(p);
        free(p);
        return n < 0 ? 0 : n;
}

/* Imports path into store b and checks the refusal: the error, the message, and nothing
 * left behind (rows, directories, locks, base images and their temporary files). */
static void assert_refused(struct fx *f, const char *path, const char *needle)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        size_t rows = count_rows(f->b, VMSNAP_LIST_ALL);
        int snaps = count_in(f->root_b, "snapshots"), images = count_in(f->root_b, "images");
        int rc = import_any(f->b, path, NULL, &r, &d);
        if (rc != -EBADMSG || !strstr(d.msg, needle))
                fail_msg("%s: got %d '%s', wanted -EBADMSG '%s'", path, rc, d.msg, needle);
        assert_int_equal(count_rows(f->b, VMSNAP_LIST_ALL), rows);
        assert_int_equal(count_in(f->root_b, "snapshots"), snaps);
        assert_int_equal(count_in(f->root_b, "locks"), 0);
        assert_int_equal(count_in(f->root_b, "images"), images);
}

/* Re-describes every file of an exported directory in its snapshot.json (size and
 * checksum), as an attacker who edits a file would. */
static void reseal(const char *dir)
{
        int fd = vmsnap_fs_open_dir(dir);
        struct store_envelope env;
        struct vmsnap_diag d = {0};
        if (fd < 0 || store_envelope_load(fd, &env, &d) < 0)
                fail_msg("%s: %s", dir, d.msg);
        for (size_t i = 0; i < env.n_files; i++) {
                struct stat st;
                int in = openat(fd, env.files[i].name, O_RDONLY | O_CLOEXEC);
                assert_true(in >= 0 && fstat(in, &st) == 0);
                env.files[i].size = (uint64_t)st.st_size;
                assert_int_equal(store_hash_fd(in, env.files[i].size, &env.files[i].checksum,
                                               NULL, NULL), 0);
                close(in);
        }
        char *text;
        size_t len;
        assert_int_equal(store_envelope_serialize(&env, &text, &len, &d), 0);
        unlinkat(fd, "snapshot.json", 0);
        assert_int_equal(vmsnap_fs_atomic_write(fd, "snapshot.json", text, len, &d), 0);
        free(text);
        store_envelope_clear(&env);
        close(fd);
}

static void add_file_entry(struct archive *a, const char *name, const char *path, mode_t type,
                           const char *link)
{
        size_t len = 0;
        uint8_t *buf = path ? test_read_file(path, &len) : NULL;
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, type ? type : AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)len);
        if (link)
                archive_entry_set_symlink(e, link);
        assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
        if (len)
                assert_int_equal(archive_write_data(a, buf, len), (la_ssize_t)len);
        archive_entry_free(e);
        free(buf);
}

/* An extra entry for tar_from_dir: name, file to take the bytes from, type, link. */
struct extra {
        const char *name, *path;
        mode_t type;
        const char *link;
        bool first; /* before the snapshot's files (just after snapshot.json) */
};

/* A plain tar of an exported directory (snapshot.json, then the files it lists), with
 * extra entries. */
static char *tar_from_dir(struct fx *f, const char *dir, const char *file,
                          const struct extra *x, size_t nx)
{
        int fd = vmsnap_fs_open_dir(dir);
        struct store_envelope env;
        assert_int_equal(store_envelope_load(fd, &env, NULL), 0);
        close(fd);
        char *out = test_path(f->tmp, file), *p = test_path(dir, "snapshot.json");
        struct archive *a = archive_write_new();
        archive_write_set_format_pax_restricted(a);
        assert_int_equal(archive_write_open_filename(a, out), ARCHIVE_OK);
        add_file_entry(a, "snapshot.json", p, 0, NULL);
        free(p);
        for (size_t i = 0; i < nx; i++)
                if (x[i].first)
                        add_file_entry(a, x[i].name, x[i].path, x[i].type, x[i].link);
        for (size_t i = 0; i < env.n_files; i++) {
                p = test_path(dir, env.files[i].name);
                add_file_entry(a, env.files[i].name, p, 0, NULL);
                free(p);
        }
        for (size_t i = 0; i < nx; i++)
                if (!x[i].first)
                        add_file_entry(a, x[i].name, x[i].path, x[i].type, x[i].link);
        archive_write_close(a);
        archive_write_free(a);
        store_envelope_clear(&env);
        return out;
}

/* The entry names of a tar file, one per line. */
static char *list_tar(const char *path)
{
        struct archive *a = archive_read_new();
        archive_read_support_format_tar(a);
        archive_read_support_filter_all(a);
        assert_int_equal(archive_read_open_filename(a, path, 1 << 16), ARCHIVE_OK);
        char *out = calloc(1, 8192);
        struct archive_entry *e;
        while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
                strcat(out, archive_entry_pathname(e));
                strcat(out, "\n");
        }
        archive_read_free(a);
        return out;
}

static char *snap_file(struct vmsnap_store *s, const char *id, const char *name)
{
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(s, id, dir, sizeof(dir));
        return test_path(dir, name);
}

static void assert_canonical_overlay(struct fx *f, struct vmsnap_store *s, const char *id)
{
        char *ov = snap_file(s, id, "rootfs.qcow2");
        size_t len;
        uint8_t *buf = test_read_file(ov, &len);
        struct vmsnap_qcow2_info q;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_qcow2_parse(buf, len, ov, &q, &d), 0);
        char want[64];
        snprintf(want, sizeof(want), "../../images/%s", f->base_name);
        assert_string_equal(q.backing, want);
        free(buf);
        free(ov);
}

/* ---- the base image travels --------------------------------------------------------------- */

static void test_base_travels(void **state)
{
        struct fx *f = *state;
        char *tar = export_tar(f, f->disk.id, false, "disk.tar");
        char *names = list_tar(tar), want[128];
        snprintf(want, sizeof(want), "\nimages/%s\n", f->base_name);
        assert_non_null(strstr(names, want));
        assert_null(strstr(strstr(names, want) + 1, want)); /* once */
        assert_int_equal(strncmp(names, "snapshot.json\n", 14), 0);
        struct notes n = {""};
        struct vmsnap_import_opts o = {.note = collect_note, .note_ctx = &n};
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        if (import_any(f->b, tar, &o, &r, &d) < 0)
                fail_msg("import: %s", d.msg);
        assert_non_null(strstr(n.text, "pinned"));
        char *images = test_path(f->root_b, "images"), *pinned = test_path(images, f->base_name);
        assert_true(files_equal(pinned, f->base));
        struct stat st;
        assert_int_equal(stat(pinned, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(stat(images, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
        assert_int_equal(vmsnap_store_verify(f->b, r.id, NULL, NULL, &d), 0);
        assert_canonical_overlay(f, f->b, r.id);
        /* QEMU's view of the imported disk stands on the pinned base (followed from the
         * snapshot directory: the reference resolves inside the store) */
        char *ov = snap_file(f->b, r.id, "rootfs.qcow2"), *ova = snap_file(f->a, f->disk.id,
                                                                            "rootfs.qcow2");
        run("qemu-img compare -q '%s' '%s'", ov, ova);
        /* again, under another name: the base is found, not pinned twice */
        o.name = "again";
        n.text[0] = '\0';
        assert_int_equal(import_any(f->b, tar, &o, &r, &d), 0);
        assert_null(strstr(n.text, "pinned"));
        assert_int_equal(count_in(f->root_b, "images"), 1);
        /* the directory form carries it too */
        char *dir = export_to_dir(f, f->disk.id, false, "disk.dir");
        char *dimg = test_path(dir, "images"), *dbase = test_path(dimg, f->base_name);
        assert_true(files_equal(dbase, f->base));
        char *root_c = test_path(f->tmp, "c");
        struct vmsnap_store *c = store_open_or_die(root_c);
        assert_int_equal(vmsnap_store_import_dir(c, dir, NULL, &r, &d), 0);
        char *cbase = test_path(root_c, "images");
        char *cpinned = test_path(cbase, f->base_name);
        assert_true(files_equal(cpinned, f->base));
        vmsnap_store_close(c);
        free(root_c);
        free(cbase);
        free(cpinned);
        free(dimg);
        free(dbase);
        free(dir);
        free(ov);
        free(ova);
        free(images);
        free(pinned);
        free(names);
        free(tar);
}

/* --no-base: the importing host must have the base; old archives import where it is. */
static void test_no_base(void **state)
{
        struct fx *f = *state;
        char *tar = export_tar(f, f->disk.id, true, "nobase.tar");
        char *names = list_tar(tar);
        assert_null(strstr(names, "images/"));
        char hash[17];
        snprintf(hash, sizeof(hash), "%.16s", f->base_name + 7);
        assert_refused(f, tar, hash);
        assert_refused(f, tar, "neither in the archive nor in");
        char *images = test_path(f->root_a, "images");
        char name[VMSNAP_BASE_NAME_LEN + 1];
        pin_into(f->root_b, images, f->base_name, name);
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        assert_int_equal(import_any(f->b, tar, NULL, &r, &d), 0);
        assert_int_equal(vmsnap_store_verify(f->b, r.id, NULL, NULL, &d), 0);
        free(images);
        free(names);
        free(tar);
}

/* ---- disks that name host files ---------------------------------------------------------- */

/* The attack of issue 8: rebase the overlay onto a host file, fix sizes and checksums. */
static void test_backing_names_a_host_file(void **state)
{
        struct fx *f = *state;
        char *dir = export_to_dir(f, f->disk.id, true, "evil.dir");
        char *ov = test_path(dir, "rootfs.qcow2");
        run("qemu-img rebase -q -u -F raw -b /etc/shadow '%s'", ov);
        reseal(dir);
        assert_refused(f, dir, "names backing file '/etc/shadow'");
        char *tar = tar_from_dir(f, dir, "evil.tar", NULL, 0);
        assert_refused(f, tar, "names backing file '/etc/shadow'");
        /* the real CLI says the same and exits 1 */
        const char *cli = getenv("VMSNAP_CLI");
        if (cli && access(cli, X_OK) == 0) {
                char cmd[8192];
                snprintf(cmd, sizeof(cmd), "'%s' snapshot --root '%s' import '%s' 2>&1 | grep -q "
                         "\"names backing file '/etc/shadow'\"", cli, f->root_b, tar);
                assert_int_equal(system(cmd), 0);
                snprintf(cmd, sizeof(cmd), "'%s' snapshot --root '%s' import '%s' 2>/dev/null",
                         cli, f->root_b, dir);
                assert_int_equal(WEXITSTATUS(system(cmd)), 1);
        }
        /* an absolute path ending in images/<the base>: the form an older vmsnap wrote, which
         * names only the pinned base: rewritten to the canonical reference, never opened */
        char other[4200], name[VMSNAP_BASE_NAME_LEN + 1], *images = test_path(f->root_a, "images");
        pin_into(f->root_b, images, f->base_name, name);
        free(images);
        snprintf(other, sizeof(other), "/tmp/images/%s", f->base_name);
        run("qemu-img rebase -q -u -F raw -b '%s' '%s'", other, ov);
        reseal(dir);
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        if (import_any(f->b, dir, NULL, &r, &d) < 0)
                fail_msg("legacy form: %s", d.msg);
        assert_canonical_overlay(f, f->b, r.id);
        assert_int_equal(vmsnap_store_delete(f->b, r.id, 0, &d), 0);
        /* a relative escape to a file of the base's name elsewhere */
        snprintf(other, sizeof(other), "../../../../etc/%s", f->base_name);
        run("qemu-img rebase -q -u -F raw -b '%s' '%s'", other, ov);
        reseal(dir);
        assert_refused(f, dir, "names backing file");
        free(tar);
        free(ov);
        free(dir);
}

static void test_other_disk_attacks(void **state)
{
        struct fx *f = *state;
        char *dir = export_to_dir(f, f->disk.id, false, "evil2.dir");
        char *ov = test_path(dir, "rootfs.qcow2"), *meta = test_path(dir, "rootfs.meta");
        char *data = test_path(f->tmp, "host-data.raw"), *raw = test_path(dir, "rootfs.raw");
        /* an external data file */
        unlink(ov);
        run("qemu-img create -q -f qcow2 -o data_file='%s' '%s' 1M", data, ov);
        reseal(dir);
        assert_refused(f, dir, "external data file");
        /* a probed backing format */
        unlink(ov);
        char ref[64];
        snprintf(ref, sizeof(ref), "../../images/%s", f->base_name);
        run("qemu-img create -q -f qcow2 -u -F raw -b '%s' '%s' 1M && "
            "qemu-img rebase -q -u -F qcow2 -b '%s' '%s'", ref, ov, ref, ov);
        reseal(dir);
        assert_refused(f, dir, "backing format is 'qcow2'");
        /* rootfs.meta naming a host file (the sandbox layer resolves the base from it) */
        run("qemu-img rebase -q -u -F raw -b '%s' '%s'", ref, ov);
        test_write_file(meta, "{\"base\":\"/etc/shadow\",\"format\":\"qcow2\"}", 40);
        reseal(dir);
        assert_refused(f, dir, "rootfs.meta");
        assert_int_equal(vmsnap_disk_write_meta(dir, f->base, "qcow2", NULL), 0);
        /* a raw disk holding a qcow2 header (a VMM that probes would follow its backing) */
        run("qemu-img create -q -f qcow2 -u -F raw -b /etc/shadow '%s' 1M", raw);
        char *env = test_path(dir, "snapshot.json");
        json_t *o = json_load_file(env, 0, NULL);
        json_array_append_new(json_object_get(o, "files"),
                              json_pack("{s:s, s:i, s:s}", "name", "rootfs.raw", "size", 0,
                                        "checksum", "xxh3-128:00000000000000000000000000000000"));
        json_t *files = json_object_get(o, "files");
        /* keep "files" sorted: rootfs.raw goes before snapshot's other rootfs.* names */
        size_t n = json_array_size(files);
        for (size_t i = n - 1; i > 0; i--) {
                const char *a = json_string_value(json_object_get(json_array_get(files, i - 1),
                                                                  "name"));
                const char *b = json_string_value(json_object_get(json_array_get(files, i),
                                                                  "name"));
                if (strcmp(a, b) < 0)
                        break;
                json_t *x = json_incref(json_array_get(files, i - 1));
                json_array_remove(files, i - 1);
                json_array_insert_new(files, i, x);
        }
        json_dump_file(o, env, JSON_INDENT(2));
        json_decref(o);
        reseal(dir);
        assert_refused(f, dir, "rootfs.raw");
        free(env);
        free(raw);
        free(data);
        free(meta);
        free(ov);
        free(dir);
}

/* The base image entry itself: its content, its name, its kind, its place. */
static void test_base_entry_attacks(void **state)
{
        struct fx *f = *state;
        char *dir = export_to_dir(f, f->disk.id, true, "entries.dir");
        char name[128], other[128];
        snprintf(name, sizeof(name), "images/%s", f->base_name);
        snprintf(other, sizeof(other), "images/rootfs-%016x.ext4", 0x1234u);
        char *fake = test_path(f->tmp, "fake-base");
        uint8_t junk[8192] = {9, 9, 9};
        test_write_file(fake, junk, sizeof(junk));
        const struct {
                struct extra x[2];
                size_t n;
                const char *needle;
        } cases[] = {
            {{{name, "fake-base", 0, NULL, false}}, 1, "hashes to"},
            {{{other, "base", 0, NULL, false}}, 1, "is not the base image"},
            {{{"images/../evil", "base", 0, NULL, false}}, 1, "not a base image name"},
            {{{"images/evil", "base", 0, NULL, false}}, 1, "not a base image name"},
            {{{name, "base", 0, NULL, false}, {name, "base", 0, NULL, false}},
             2,
             "a second base image"},
            {{{name, NULL, AE_IFLNK, "/etc/shadow", false}}, 1, "is a symlink"},
            {{{name, "base", 0, NULL, true}}, 1, "is not the base image"}, /* before meta */
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                struct extra x[2];
                for (size_t k = 0; k < cases[i].n; k++) {
                        x[k] = cases[i].x[k];
                        if (x[k].path)
                                x[k].path = strcmp(x[k].path, "base") == 0 ? f->base : fake;
                }
                char *tar = tar_from_dir(f, dir, "entries.tar", x, cases[i].n);
                assert_refused(f, tar, cases[i].needle);
                free(tar);
        }
        /* the good one, for contrast */
        struct extra good = {name, f->base, 0, NULL, false};
        char *tar = tar_from_dir(f, dir, "good.tar", &good, 1);
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        if (import_any(f->b, tar, NULL, &r, &d) < 0)
                fail_msg("good: %s", d.msg);
        free(tar);
        free(fake);
        free(dir);
}

/* A snapshot an older vmsnap made (absolute references into its root): imported, it is
 * rewritten to the canonical reference and verifies. */
static void test_legacy_references_normalized(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot old;
        make_disk_snapshot(f, f->a, "old", f->base, &old);
        char *tar = export_tar(f, old.id, false, "old.tar");
        struct notes n = {""};
        struct vmsnap_import_opts o = {.note = collect_note, .note_ctx = &n};
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        if (import_any(f->b, tar, &o, &r, &d) < 0)
                fail_msg("import: %s", d.msg);
        assert_non_null(strstr(n.text, "rewritten"));
        assert_canonical_overlay(f, f->b, r.id);
        char *meta = snap_file(f->b, r.id, "rootfs.meta");
        size_t len;
        char *text = (char *)test_read_file(meta, &len);
        assert_null(strchr(text, '/'));
        assert_int_equal(vmsnap_store_verify(f->b, r.id, NULL, NULL, &d), 0);
        char *ov = snap_file(f->b, r.id, "rootfs.qcow2");
        run("qemu-img check -q '%s'", ov);
        free(ov);
        free(text);
        free(meta);
        free(tar);
}

/* ---- lineage claims ----------------------------------------------------------------------- */

static void test_lineage_claims_verified(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot t, child, unrelated, r;
        struct vmsnap_diag d = {0};
        char *mem = test_path(f->tmp, "mem-l");
        make_memfile(mem, 1, 2);
        assert_int_equal(add_snapshot(f->a, mem, "tmpl", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &t, &d),
                         0);
        mutate_memfile(mem, 2);
        assert_int_equal(add_snapshot(f->a, mem, "child", VMSNAP_SNAPSHOT_PAUSE, t.id, &child, &d),
                         0);
        make_memfile(mem, 3, 2);
        assert_int_equal(add_snapshot(f->a, mem, "other", VMSNAP_SNAPSHOT_PAUSE, NULL, &unrelated,
                                      &d), 0);
        /* a genuine child keeps its parent */
        char *tar = export_tar(f, child.id, false, "child.tar");
        struct vmsnap_import_opts o = {.name = "child2"};
        assert_int_equal(import_any(f->a, tar, &o, &r, &d), 0);
        assert_string_equal(r.parent_id, t.id);
        assert_int_equal(vmsnap_store_delete(f->a, r.id, 0, &d), 0);
        /* an unrelated snapshot claiming tmpl as parent and template: both dropped, noted */
        char *dir = export_to_dir(f, unrelated.id, false, "claims.dir");
        char *env = test_path(dir, "snapshot.json");
        json_t *j = json_load_file(env, 0, NULL);
        json_object_set_new(j, "parent", json_string(t.id));
        json_object_set_new(j, "template", json_string(t.id));
        json_dump_file(j, env, JSON_INDENT(2));
        json_decref(j);
        struct notes n = {""};
        struct vmsnap_import_opts claim = {.name = "claimer", .note = collect_note,
                                           .note_ctx = &n};
        assert_int_equal(import_any(f->a, dir, &claim, &r, &d), 0);
        assert_string_equal(r.parent_id, "");
        assert_string_equal(r.template_id, "");
        assert_non_null(strstr(n.text, "parent"));
        assert_non_null(strstr(n.text, "template"));
        assert_non_null(strstr(n.text, "does not contain its builds"));
        struct vmsnap_snapshot row;
        assert_int_equal(vmsnap_store_get(f->a, r.id, &row, &d), 0);
        assert_string_equal(row.parent_id, "");
        /* so tmpl can go once its real child is gone: nothing hostile pins it */
        assert_int_equal(vmsnap_store_delete(f->a, child.id, 0, &d), 0);
        assert_int_equal(vmsnap_store_delete(f->a, t.id, 0, &d), 0);
        free(env);
        free(dir);
        free(tar);
        free(mem);
}

/* ---- FIFOs --------------------------------------------------------------------------------- */

static struct fx *child_fx;
static const char *child_id;

static int verify_in_child(void)
{
        struct vmsnap_diag d = {0};
        return vmsnap_store_verify(child_fx->a, child_id, NULL, NULL, &d) < 0 ? 0 : 1;
}

static int export_in_child(void)
{
        struct vmsnap_diag d = {0};
        int fd = open("/dev/null", O_WRONLY);
        int r = vmsnap_store_export_fd(child_fx->a, child_id, fd, NULL, &d);
        return r < 0 ? 0 : 1;
}

static void assert_fails_in_child(int (*fn)(void))
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                alarm(60);
                _exit(fn());
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status))
                fail_msg("hung on a FIFO (signal %d)", WTERMSIG(status));
        assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_fifo_in_a_snapshot(void **state)
{
        struct fx *f = *state;
        child_fx = f;
        child_id = f->disk.id;
        const char *names[] = {"rootfs.meta", "memfile.header", "snapshot.json"};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                char *p = snap_file(f->a, f->disk.id, names[i]), *saved = test_path(f->tmp, "sv");
                assert_int_equal(rename(p, saved), 0);
                assert_int_equal(mkfifo(p, 0600), 0);
                assert_fails_in_child(verify_in_child);
                assert_fails_in_child(export_in_child);
                unlink(p);
                assert_int_equal(rename(saved, p), 0);
                free(p);
                free(saved);
        }
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_verify(f->a, f->disk.id, NULL, NULL, &d), 0);
        /* a directory import whose listed file is a FIFO */
        char *dir = export_to_dir(f, f->disk.id, false, "fifo.dir");
        char *p = test_path(dir, "rootfs.meta");
        unlink(p);
        assert_int_equal(mkfifo(p, 0600), 0);
        assert_refused(f, dir, "not a regular file");
        free(p);
        free(dir);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
            T(test_base_travels),
            T(test_no_base),
            T(test_backing_names_a_host_file),
            T(test_other_disk_attacks),
            T(test_base_entry_attacks),
            T(test_legacy_references_normalized),
            T(test_lineage_claims_verified),
            T(test_fifo_in_a_snapshot),
        };
#undef T
        return cmocka_run_group_tests(tests, NULL, NULL);
}
