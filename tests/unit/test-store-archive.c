/* Export and import: round trips of a real multi-generation snapshot (with a sparse file)
 * through every compression and through a directory, compared byte by byte; interop with
 * GNU tar; hostile archives, built here with libarchive's writer, each refused with a clear
 * message and nothing left behind; runs of zeros becoming holes and the caps on declared and
 * really written bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <jansson.h>

#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "store/internal.h"
#include "test-store-lib.h"
#include "util/cleanup.h"
#include "util/fs.h"

#define SPARSE_SIZE (64u << 20)

struct fx {
        char *tmp, *root_a, *root_b;
        struct vmsnap_store *a, *b;
        struct vmsnap_snapshot base, gen1, gen2; /* in a */
};

/* gen2 through the txn API, the way the sandbox layer will do it: begin over the parent,
 * mem diff into the pending directory, more files (a sparse disk overlay), commit. */
static void make_gen2(struct fx *f, const char *mem)
{
        struct vmsnap_snapshot_spec spec = {.name = "gen2",
                                            .parent_id = f->gen1.id,
                                            .vmm = "qemu",
                                            .vmm_version = "7.2.0",
                                            .vcpus = 2,
                                            .description = "third generation",
                                            .labels = "{\"team\":\"ml\"}"};
        struct vmsnap_store_txn *t;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_create_begin(f->a, &spec, &t, &d) < 0)
                die("begin: %s", d.msg);
        char parent[PATH_MAX];
        vmsnap_store_snapshot_dir(f->a, f->gen1.id, parent, sizeof(parent));
        if (vmsnap_mem_diff(mem, vmsnap_store_txn_dir(t), parent, NULL, NULL, &d) < 0)
                die("diff: %s", d.msg);
        char *cow = test_path(vmsnap_store_txn_dir(t), "rootfs.cow");
        int fd = open(cow, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        uint8_t block[8192];
        uint64_t st = 99;
        test_fill_random(&st, block, sizeof(block));
        if (pwrite(fd, block, sizeof(block), 1 << 20) != (ssize_t)sizeof(block) ||
            pwrite(fd, block, 4096, 40u << 20) != 4096 || ftruncate(fd, SPARSE_SIZE) < 0)
                die("%s: write failed", cow);
        close(fd);
        char *sf = test_path(vmsnap_store_txn_dir(t), "snapfile");
        test_write_file(sf, "vm state", 8);
        if (vmsnap_store_txn_commit(t, &f->gen2, &d) < 0)
                die("commit: %s", d.msg);
        vmsnap_store_txn_free(t);
        free(cow);
        free(sf);
}

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("store-archive");
        f->root_a = test_path(f->tmp, "a");
        f->root_b = test_path(f->tmp, "b");
        f->a = store_open_or_die(f->root_a);
        f->b = store_open_or_die(f->root_b);
        char *mem = test_path(f->tmp, "mem");
        struct vmsnap_diag d = {0};
        make_memfile(mem, 11, 4);
        if (add_snapshot(f->a, mem, "base", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &f->base, &d) < 0)
                die("base: %s", d.msg);
        mutate_memfile(mem, 12);
        if (add_snapshot(f->a, mem, "gen1", VMSNAP_SNAPSHOT_PAUSE, f->base.id, &f->gen1, &d) < 0)
                die("gen1: %s", d.msg);
        mutate_memfile(mem, 13);
        make_gen2(f, mem);
        free(mem);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        vmsnap_store_close(f->a);
        vmsnap_store_close(f->b);
        test_rmtree(f->tmp);
        free(f->root_a);
        free(f->root_b);
        free(f->tmp);
        free(f);
        return 0;
}

static char *export_to(struct fx *f, const char *id, enum vmsnap_compression c, const char *name)
{
        char *path = test_path(f->tmp, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        struct vmsnap_export_opts o = {.compression = c};
        struct vmsnap_diag d = {0};
        if (vmsnap_store_export_fd(f->a, id, fd, &o, &d) < 0)
                fail_msg("export: %s", d.msg);
        close(fd);
        return path;
}

static int import_from(struct vmsnap_store *s, const char *path, const struct vmsnap_import_opts *o,
                       struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        int r = vmsnap_store_import_fd(s, fd, o, ret, d);
        close(fd);
        return r;
}

/* Every file of a's snapshot equals b's, byte by byte; sparse files stay sparse. */
static void assert_same_snapshot(struct vmsnap_store *a, const char *ida, struct vmsnap_store *b,
                                 const char *idb)
{
        struct vmsnap_snapshot_file *fa, *fb;
        size_t na, nb;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_files(a, ida, &fa, &na, &d), 0);
        assert_int_equal(vmsnap_store_files(b, idb, &fb, &nb, &d), 0);
        assert_int_equal(na, nb);
        char da[PATH_MAX], db[PATH_MAX];
        vmsnap_store_snapshot_dir(a, ida, da, sizeof(da));
        vmsnap_store_snapshot_dir(b, idb, db, sizeof(db));
        for (size_t i = 0; i < na; i++) {
                assert_string_equal(fa[i].name, fb[i].name);
                assert_memory_equal(&fa[i].checksum, &fb[i].checksum, sizeof(fa[i].checksum));
                char *x = test_path(da, fa[i].name), *y = test_path(db, fb[i].name);
                if (!files_equal(x, y))
                        fail_msg("%s differs after the round trip", fa[i].name);
                struct stat sx, sy;
                stat(x, &sx);
                stat(y, &sy);
                if (sy.st_blocks > sx.st_blocks + 64) /* holes kept (within a few blocks) */
                        fail_msg("%s: %lld blocks, was %lld", fa[i].name, (long long)sy.st_blocks,
                                 (long long)sx.st_blocks);
                free(x);
                free(y);
        }
        free(fa);
        free(fb);
        assert_int_equal(vmsnap_store_verify(b, idb, NULL, NULL, &d), 0);
        char *ma = test_path(da, "../../../mat-a"), *mb = test_path(da, "../../../mat-b");
        assert_int_equal(vmsnap_mem_materialize(da, ma, NULL, &d), 0);
        assert_int_equal(vmsnap_mem_materialize(db, mb, NULL, &d), 0);
        assert_true(files_equal(ma, mb));
        unlink(ma);
        unlink(mb);
        free(ma);
        free(mb);
}

static void test_round_trip(void **state)
{
        struct fx *f = *state;
        static const struct {
                enum vmsnap_compression c;
                const char *file;
        } kinds[] = {{VMSNAP_COMPRESSION_ZSTD, "x.tar.zst"},
                     {VMSNAP_COMPRESSION_GZIP, "x.tar.gz"},
                     {VMSNAP_COMPRESSION_NONE, "x.tar"}};
        struct vmsnap_diag d = {0};
        for (size_t i = 0; i < 3; i++) {
                char *path = export_to(f, f->gen2.id, kinds[i].c, kinds[i].file);
                struct stat st;
                stat(path, &st);
                assert_true(st.st_size < SPARSE_SIZE / 4); /* the holes are not in it */
                char name[32];
                snprintf(name, sizeof(name), "copy-%zu", i);
                struct vmsnap_import_opts o = {.name = i ? name : NULL};
                struct vmsnap_snapshot r;
                if (import_from(f->b, path, &o, &r, &d) < 0)
                        fail_msg("import %s: %s", kinds[i].file, d.msg);
                assert_string_equal(r.name, i ? name : "gen2");
                /* the id travels when it is free here; later copies get new ones */
                if (i == 0)
                        assert_string_equal(r.id, f->gen2.id);
                else
                        assert_string_not_equal(r.id, f->gen2.id);
                assert_string_equal(r.parent_id, ""); /* its parent is not here */
                assert_int_equal(r.generation, 2);
                assert_string_equal(r.description, "third generation");
                assert_string_equal(r.labels, "{\"team\":\"ml\"}");
                assert_same_snapshot(f->a, f->gen2.id, f->b, r.id);
                free(path);
        }
        /* exporting the same snapshot again gives the same bytes */
        char *p1 = export_to(f, f->gen2.id, VMSNAP_COMPRESSION_GZIP, "1.tgz");
        char *p2 = export_to(f, f->gen2.id, VMSNAP_COMPRESSION_GZIP, "2.tgz");
        assert_true(files_equal(p1, p2));
        /* into the same store: a new id, its parent kept (it is here) and depended on */
        struct vmsnap_import_opts o = {.name = "again", .description = "copied"};
        struct vmsnap_snapshot r;
        assert_int_equal(import_from(f->a, p1, &o, &r, &d), 0);
        assert_string_equal(r.parent_id, f->gen1.id);
        assert_string_equal(r.description, "copied");
        assert_int_equal(vmsnap_store_delete(f->a, f->gen1.id, 0, &d), -EBUSY);
        assert_non_null(strstr(d.msg, "again"));
        free(p1);
        free(p2);
}

static void test_dir_round_trip(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        char *out = test_path(f->tmp, "exported");
        assert_int_equal(vmsnap_store_export_dir(f->a, f->gen2.id, out, NULL, &d), 0);
        char *env = test_path(out, "snapshot.json");
        assert_int_equal(access(env, F_OK), 0);
        /* into a non-empty directory: refused */
        assert_int_equal(vmsnap_store_export_dir(f->a, f->gen1.id, out, NULL, &d), -ENOTEMPTY);
        struct vmsnap_snapshot r;
        assert_int_equal(vmsnap_store_import_dir(f->b, out, NULL, &r, &d), 0);
        assert_same_snapshot(f->a, f->gen2.id, f->b, r.id);
        /* a symlink in place of a listed file is refused */
        char *snapf = test_path(out, "snapfile");
        unlink(snapf);
        assert_int_equal(symlink("/etc/hostname", snapf), 0);
        struct vmsnap_import_opts o = {.name = "linked"};
        assert_int_equal(vmsnap_store_import_dir(f->b, out, &o, &r, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "symlink"));
        assert_int_equal(count_rows(f->b, VMSNAP_LIST_ALL), 1);
        free(snapf);
        free(env);
        free(out);
}

static void test_gnu_tar_reads_it(void **state)
{
        struct fx *f = *state;
        if (system("tar --version >/dev/null 2>&1") != 0)
                skip();
        char *path = export_to(f, f->gen2.id, VMSNAP_COMPRESSION_NONE, "plain.tar");
        char *dir = test_path(f->tmp, "untarred");
        mkdir(dir, 0755);
        char cmd[2 * PATH_MAX + 64];
        snprintf(cmd, sizeof(cmd), "tar -xf '%s' -C '%s'", path, dir);
        assert_int_equal(system(cmd), 0);
        snprintf(cmd, sizeof(cmd), "tar -tf '%s' | head -1 | grep -qx snapshot.json", path);
        assert_int_equal(system(cmd), 0);
        char src[PATH_MAX];
        vmsnap_store_snapshot_dir(f->a, f->gen2.id, src, sizeof(src));
        char *a = test_path(src, "rootfs.cow"), *b = test_path(dir, "rootfs.cow");
        assert_true(files_equal(a, b));
        struct stat st;
        stat(b, &st);
        assert_true((uint64_t)st.st_blocks * 512 < SPARSE_SIZE / 8);
        free(a);
        free(b);
        free(dir);
        free(path);
}

static void test_name_clash(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        char *path = export_to(f, f->gen1.id, VMSNAP_COMPRESSION_ZSTD, "g1.tar.zst");
        struct vmsnap_snapshot r;
        assert_int_equal(import_from(f->a, path, NULL, &r, &d), -EEXIST);
        assert_non_null(strstr(d.msg, "name 'gen1' is already used"));
        assert_non_null(strstr(d.msg, "--name"));
        struct vmsnap_import_opts o = {.name = "base"};
        assert_int_equal(import_from(f->a, path, &o, &r, &d), -EEXIST);
        o.name = "gen1-copy";
        assert_int_equal(import_from(f->a, path, &o, &r, &d), 0);
        assert_string_not_equal(r.id, f->gen1.id);
        free(path);
}

static void test_export_refuses_corruption(void **state)
{
        struct fx *f = *state;
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(f->a, f->gen2.id, dir, sizeof(dir));
        char *sf = test_path(dir, "snapfile");
        test_write_file(sf, "VM state", 8);
        char *path = test_path(f->tmp, "bad.tar");
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_export_fd(f->a, f->gen2.id, fd, NULL, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "snapfile: checksum mismatch"));
        close(fd);
        char *out = test_path(f->tmp, "badout");
        assert_int_equal(vmsnap_store_export_dir(f->a, f->gen2.id, out, NULL, &d), -EBADMSG);
        assert_int_equal(access(out, F_OK), -1); /* nothing left behind */
        free(out);
        free(sf);
        free(path);
}

/* ---- hostile archives --------------------------------------------------------------------- */

struct entry {
        const char *name;
        mode_t type; /* 0 = regular */
        const char *data;
        int64_t size;     /* declared; -1 = strlen(data) */
        const char *link; /* symlink target, or hard link target with type = AE_IFREG */
        int64_t sparse_off, sparse_len; /* one data region when sparse_len > 0 */
};

struct listed {
        const char *name;
        const char *data;
        int64_t size; /* -1 = strlen(data) */
        bool bad_sum;
};

/* A valid envelope listing files (sorted by the caller) with their real checksums. */
static char *envelope_for(const struct listed *l, size_t n)
{
        json_t *files = json_array();
        for (size_t i = 0; i < n; i++) {
                struct vmsnap_hash h;
                vmsnap_hash128(l[i].data, strlen(l[i].data), &h);
                if (l[i].bad_sum)
                        h.b[0] ^= 1;
                char sum[42];
                store_hash_format(&h, sum);
                json_array_append_new(
                    files,
                    json_pack("{s:s, s:I, s:s}", "name", l[i].name, "size",
                              (json_int_t)(l[i].size >= 0 ? l[i].size : (int64_t)strlen(l[i].data)),
                              "checksum", sum));
        }
        json_t *o =
            json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:o}", "format", "vmsnap-snapshot", "version",
                      1, "id", "0d4e1f7a-5b6c-4d8e-9f0a-1b2c3d4e5f60", "name", "hostile", "kind",
                      "pause", "created", "2025-01-01T00:00:00Z", "files", files);
        char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        return text;
}

static void write_entry(struct archive *a, const struct entry *e)
{
        struct archive_entry *ae = archive_entry_new();
        int64_t len = e->data ? (int64_t)strlen(e->data) : 0;
        archive_entry_set_pathname(ae, e->name);
        archive_entry_set_filetype(ae, e->type ? e->type : AE_IFREG);
        archive_entry_set_perm(ae, 0644);
        archive_entry_set_size(ae, e->size >= 0 ? e->size : len);
        if (e->type == AE_IFLNK)
                archive_entry_set_symlink(ae, e->link);
        else if (e->link)
                archive_entry_set_hardlink(ae, e->link);
        if (e->type == AE_IFCHR)
                archive_entry_set_rdev(ae, makedev(1, 3));
        if (e->sparse_len > 0)
                archive_entry_sparse_add_entry(ae, e->sparse_off, e->sparse_len);
        assert_true(archive_write_header(a, ae) >= ARCHIVE_WARN);
        if (e->sparse_len > 0) {
                /* the writer skips the declared hole: feed only up to the data's end */
                static const char zeros[1 << 20];
                for (int64_t pos = 0; pos < e->sparse_off; pos += (int64_t)sizeof(zeros))
                        archive_write_data(
                            a, zeros, (size_t)MIN((int64_t)sizeof(zeros), e->sparse_off - pos));
        }
        if (e->data && (!e->type || e->type == AE_IFREG) && !e->link)
                archive_write_data(a, e->data, (size_t)len);
        archive_entry_free(ae);
}

static char *write_archive(struct fx *f, const char *file, const struct entry *e, size_t n)
{
        char *path = test_path(f->tmp, file);
        struct archive *a = archive_write_new();
        archive_write_set_format_pax_restricted(a);
        assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
        for (size_t i = 0; i < n; i++)
                write_entry(a, &e[i]);
        archive_write_close(a);
        archive_write_free(a);
        return path;
}

/* Imports path into b and checks the refusal: the error, a message naming the problem,
 * and nothing left behind (no row, no directory, no lock file, nothing outside). */
static void assert_refused(struct fx *f, const char *path, int err, const char *needle)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        size_t rows = count_rows(f->b, VMSNAP_LIST_ALL);
        char *snaps = test_path(f->root_b, "snapshots"), *locks = test_path(f->root_b, "locks");
        int before = count_entries(snaps);
        int rc = import_from(f->b, path, NULL, &r, &d);
        if (rc != err || !strstr(d.msg, needle))
                fail_msg("%s: got %d '%s', wanted %d '%s'", path, rc, d.msg, err, needle);
        assert_int_equal(count_rows(f->b, VMSNAP_LIST_ALL), rows);
        assert_int_equal(count_entries(snaps), before);
        assert_int_equal(count_entries(locks), 0);
        char *evil = test_path(f->root_b, "evil"), *evil2 = test_path(snaps, "evil");
        assert_int_equal(access(evil, F_OK), -1);
        assert_int_equal(access(evil2, F_OK), -1);
        free(evil);
        free(evil2);
        free(snaps);
        free(locks);
}

static void test_hostile_paths_and_types(void **state)
{
        struct fx *f = *state;
        const struct listed one[] = {{"data", "hello", -1, false}};
        char *env = envelope_for(one, 1);
        const struct entry head = {"snapshot.json", 0, env, -1, NULL, 0, 0};
        const struct entry good = {"data", 0, "hello", -1, NULL, 0, 0};
        static const struct {
                struct entry bad;
                const char *needle;
        } cases[] = {
            {{"../evil", 0, "x", -1, NULL, 0, 0}, "not a plain file name"},
            {{"/tmp/evil", 0, "x", -1, NULL, 0, 0}, "not a plain file name"},
            {{"sub/evil", 0, "x", -1, NULL, 0, 0}, "not a plain file name"},
            {{"evil", AE_IFLNK, NULL, 0, "/etc/passwd", 0, 0}, "is a symlink"},
            {{"evil", AE_IFLNK, NULL, 0, "..", 0, 0}, "is a symlink"},
            {{"evil", 0, NULL, 0, "../../etc/passwd", 0, 0}, "is a hard link"},
            {{"evil", 0, NULL, 0, "data", 0, 0}, "is a hard link"},
            {{"evil", AE_IFCHR, NULL, 0, NULL, 0, 0}, "is a device file"},
            {{"evil", AE_IFIFO, NULL, 0, NULL, 0, 0}, "is a FIFO"},
            {{"evil", AE_IFDIR, NULL, 0, NULL, 0, 0}, "is a directory"},
            {{"unlisted", 0, "x", -1, NULL, 0, 0}, "not listed in snapshot.json"},
            {{"data", 0, "hello", -1, NULL, 0, 0}, "appears twice"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                /* the hostile entry both before and after the good one */
                struct entry before[] = {head, cases[i].bad, good};
                struct entry after[] = {head, good, cases[i].bad};
                char *p = write_archive(f, "hostile.tar", before, 3);
                assert_refused(f, p, -EBADMSG, cases[i].needle);
                free(p);
                p = write_archive(f, "hostile.tar", after, 3);
                assert_refused(f, p, -EBADMSG, cases[i].needle);
                free(p);
        }
        /* a symlink followed by a file through it */
        struct entry escape[] = {head,
                                 {"evil", AE_IFLNK, NULL, 0, ".", 0, 0},
                                 {"evil/data", 0, "hello", -1, NULL, 0, 0}};
        char *p = write_archive(f, "escape.tar", escape, 3);
        assert_refused(f, p, -EBADMSG, "is a symlink");
        free(p);
        free(env);
}

static void test_hostile_content(void **state)
{
        struct fx *f = *state;
        const struct listed one[] = {{"data", "hello", -1, false}};
        const struct listed two[] = {{"data", "hello", -1, false}, {"more", "x", -1, false}};
        const struct listed badsum[] = {{"data", "hello", -1, true}};
        const struct listed huge[] = {{"big", "", 1ll << 49, false}};
        const struct listed size[] = {{"data", "hello", 6, false}};
        char *e1 = envelope_for(one, 1), *e2 = envelope_for(two, 2), *e3 = envelope_for(badsum, 1),
             *e4 = envelope_for(huge, 1), *e5 = envelope_for(size, 1);
        const struct entry good = {"data", 0, "hello", -1, NULL, 0, 0};
        struct {
                struct entry e[3];
                size_t n;
                const char *needle;
        } cases[] = {
            {{good, {"snapshot.json", 0, e1, -1, NULL, 0, 0}}, 2, "first entry is 'data'"},
            {{{"snapshot.json", 0, e2, -1, NULL, 0, 0}, good}, 2, "more is listed"},
            {{{"snapshot.json", 0, e3, -1, NULL, 0, 0}, good}, 2, "checksum mismatch"},
            {{{"snapshot.json", 0, e4, -1, NULL, 0, 0}, {"big", 0, "x", 1ll << 49, NULL, 0, 1}},
             2,
             "declares more than"},
            {{{"snapshot.json", 0, e5, -1, NULL, 0, 0}, good}, 2, "snapshot.json says 6"},
            {{{"snapshot.json", 0, "{not json", -1, NULL, 0, 0}}, 1, "snapshot.json: line"},
            {{{"snapshot.json", AE_IFLNK, NULL, 0, "/etc/passwd", 0, 0}},
             1,
             "must be a regular file"},
            {{{"snapshot.json", 0, e1, -1, NULL, 0, 0}}, 1, "data is listed"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *p = write_archive(f, "content.tar", cases[i].e, cases[i].n);
                assert_refused(f, p, -EBADMSG, cases[i].needle);
                free(p);
        }
        /* not a tar stream at all, and an empty input */
        char *p = test_path(f->tmp, "garbage");
        test_write_file(p, "this is not an archive, just some text\n", 39);
        assert_refused(f, p, -EBADMSG, "refusing the import");
        test_write_file(p, "", 0);
        assert_refused(f, p, -EBADMSG, "refusing the import");
        free(p);
        free(e1);
        free(e2);
        free(e3);
        free(e4);
        free(e5);
}

/* A huge sparse claim is refused above the logical limit, fine within it, and costs no
 * disk; the cap on bytes really written does not count its hole. */
static void test_sparse_claim_within_limit(void **state)
{
        struct fx *f = *state;
        char *data = calloc(1, 8);
        strcpy(data, "x");
        /* checksum of 1 GiB holding "x" at 512 MiB */
        struct vmsnap_hasher *h = vmsnap_hasher_new();
        static uint8_t zeros[1 << 20];
        for (int i = 0; i < 512; i++)
                vmsnap_hasher_update(h, zeros, sizeof(zeros));
        vmsnap_hasher_update(h, "x", 1);
        for (int i = 0; i < 512; i++)
                vmsnap_hasher_update(h, zeros, i == 0 ? sizeof(zeros) - 1 : sizeof(zeros));
        struct vmsnap_hash sum;
        vmsnap_hasher_final(h, &sum);
        vmsnap_hasher_free(h);
        char text[42];
        store_hash_format(&sum, text);
        char env[1024];
        snprintf(env, sizeof(env),
                 "{\"format\":\"vmsnap-snapshot\",\"version\":1,\"id\":"
                 "\"0d4e1f7a-5b6c-4d8e-9f0a-1b2c3d4e5f61\",\"kind\":\"pause\",\"created\":"
                 "\"2025-01-01T00:00:00Z\",\"files\":[{\"name\":\"big\",\"size\":%llu,"
                 "\"checksum\":\"%s\"}]}",
                 1ull << 30, text);
        struct entry e[] = {{"snapshot.json", 0, env, -1, NULL, 0, 0},
                            {"big", 0, "x", 1ll << 30, NULL, 512ll << 20, 1}};
        char *p = write_archive(f, "sparse.tar", e, 2);
        struct vmsnap_import_opts small = {.max_logical = 1 << 29};
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        assert_int_equal(import_from(f->b, p, &small, &r, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "declares more than"));
        struct vmsnap_import_opts written = {.max_bytes = 1 << 20};
        assert_int_equal(import_from(f->b, p, &written, &r, &d), 0);
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(f->b, r.id, dir, sizeof(dir));
        char *big = test_path(dir, "big");
        struct stat st;
        stat(big, &st);
        assert_int_equal(st.st_size, 1ll << 30);
        assert_true(st.st_blocks * 512 <= 1 << 20);
        free(big);
        free(p);
        free(data);
}

/* ---- sizes: holes and the cap on bytes really written --------------------------------------- */

static char *envelope_one(const char *file, uint64_t size, const struct vmsnap_hash *h)
{
        char sum[42], *text = malloc(1024);
        store_hash_format(h, sum);
        snprintf(text, 1024,
                 "{\"format\":\"vmsnap-snapshot\",\"version\":1,\"id\":"
                 "\"0d4e1f7a-5b6c-4d8e-9f0a-1b2c3d4e5f62\",\"kind\":\"pause\",\"created\":"
                 "\"2025-01-01T00:00:00Z\",\"files\":[{\"name\":\"%s\",\"size\":%llu,"
                 "\"checksum\":\"%s\"}]}",
                 file, (unsigned long long)size, sum);
        return text;
}

/* A .tar.zst holding one dense (not sparse) entry of `size` bytes made by fill. */
static char *dense_archive(struct fx *f, const char *file, uint64_t size, bool zeros)
{
        uint8_t *chunk = calloc(1, 1 << 20);
        uint64_t rng = 3;
        struct vmsnap_hasher *h = vmsnap_hasher_new();
        for (uint64_t off = 0; off < size; off += 1 << 20) {
                if (!zeros)
                        test_fill_random(&rng, chunk, 1 << 20);
                vmsnap_hasher_update(h, chunk, 1 << 20);
        }
        struct vmsnap_hash sum;
        vmsnap_hasher_final(h, &sum);
        vmsnap_hasher_free(h);
        char *env = envelope_one("data", size, &sum), *path = test_path(f->tmp, file);
        struct archive *a = archive_write_new();
        archive_write_set_format_pax_restricted(a);
        archive_write_add_filter_zstd(a);
        assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, "snapshot.json");
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, (la_int64_t)strlen(env));
        archive_write_header(a, e);
        archive_write_data(a, env, strlen(env));
        archive_entry_clear(e);
        archive_entry_set_pathname(e, "data");
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, (la_int64_t)size);
        archive_write_header(a, e);
        rng = 3;
        for (uint64_t off = 0; off < size; off += 1 << 20) {
                if (!zeros)
                        test_fill_random(&rng, chunk, 1 << 20);
                assert_int_equal(archive_write_data(a, chunk, 1 << 20), 1 << 20);
        }
        archive_entry_free(e);
        archive_write_close(a);
        archive_write_free(a);
        free(env);
        free(chunk);
        return path;
}

static void test_zero_runs_become_holes(void **state)
{
        struct fx *f = *state;
        char *tar = dense_archive(f, "zeros.tar.zst", 1ull << 30, true);
        struct stat st;
        assert_int_equal(stat(tar, &st), 0);
        assert_true(st.st_size < 256 << 10); /* ~33 KB of zstd for 1 GiB of zeros */
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        struct vmsnap_import_opts o = {.max_bytes = 1 << 20}; /* zeros cost nothing */
        if (import_from(f->b, tar, &o, &r, &d) < 0)
                fail_msg("import: %s", d.msg);
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(f->b, r.id, dir, sizeof(dir));
        char *data = test_path(dir, "data");
        assert_int_equal(stat(data, &st), 0);
        assert_int_equal(st.st_size, 1ll << 30);
        if ((uint64_t)st.st_blocks * 512 > (1u << 20))
                fail_msg("1 GiB of zeros took %llu bytes of data blocks",
                         (unsigned long long)st.st_blocks * 512);
        struct stat ast;
        stat(tar, &ast);
        printf("1 GiB of zeros: a %lld-byte archive, %llu bytes allocated once imported\n",
               (long long)ast.st_size, (unsigned long long)st.st_blocks * 512);
        assert_int_equal(vmsnap_store_verify(f->b, r.id, NULL, NULL, &d), 0);
        assert_int_equal(vmsnap_store_delete(f->b, r.id, 0, &d), 0);
        /* 3 MiB of real data over a 1 MiB cap: refused while writing, nothing left */
        char *dense = dense_archive(f, "dense.tar.zst", 3u << 20, false);
        struct vmsnap_import_opts cap = {.max_bytes = 1 << 20};
        assert_int_equal(import_from(f->b, dense, &cap, &r, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "more than 1048576 bytes of data"));
        assert_int_equal(count_rows(f->b, VMSNAP_LIST_ALL), 0);
        char *snaps = test_path(f->root_b, "snapshots");
        assert_int_equal(count_entries(snaps), 0);
        free(snaps);
        assert_int_equal(import_from(f->b, dense, NULL, &r, &d), 0);
        free(dense);
        free(data);
        free(tar);
}

static void test_truncated(void **state)
{
        struct fx *f = *state;
        static const enum vmsnap_compression kinds[] = {
            VMSNAP_COMPRESSION_NONE, VMSNAP_COMPRESSION_ZSTD, VMSNAP_COMPRESSION_GZIP};
        for (size_t k = 0; k < 3; k++) {
                char *path = export_to(f, f->gen1.id, kinds[k], "full");
                size_t len;
                uint8_t *buf = test_read_file(path, &len);
                static const double cuts[] = {0.001, 0.1, 0.5, 0.9, 0.97};
                for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
                        char *cut = test_path(f->tmp, "cut");
                        test_write_file(cut, buf, (size_t)((double)len * cuts[i]));
                        assert_refused(f, cut, -EBADMSG, "refusing the import");
                        free(cut);
                }
                free(buf);
                free(path);
        }
}

/* stdin-like input: a pipe, not a seekable file. */
static void test_import_from_pipe(void **state)
{
        struct fx *f = *state;
        char *path = export_to(f, f->gen1.id, VMSNAP_COMPRESSION_ZSTD, "pipe.tar.zst");
        size_t len;
        uint8_t *buf = test_read_file(path, &len);
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        if (pid == 0) {
                close(p[0]);
                vmsnap_fs_write_full(p[1], buf, len);
                _exit(0);
        }
        close(p[1]);
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_import_fd(f->b, p[0], NULL, &r, &d), 0);
        close(p[0]);
        waitpid(pid, NULL, 0);
        assert_same_snapshot(f->a, f->gen1.id, f->b, r.id);
        free(buf);
        free(path);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_dir_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gnu_tar_reads_it, setup, teardown),
    cmocka_unit_test_setup_teardown(test_name_clash, setup, teardown),
    cmocka_unit_test_setup_teardown(test_export_refuses_corruption, setup, teardown),
    cmocka_unit_test_setup_teardown(test_hostile_paths_and_types, setup, teardown),
    cmocka_unit_test_setup_teardown(test_hostile_content, setup, teardown),
    cmocka_unit_test_setup_teardown(test_sparse_claim_within_limit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_zero_runs_become_holes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
    cmocka_unit_test_setup_teardown(test_import_from_pipe, setup, teardown),
};

int main(void)
{
        return cmocka_run_group_tests(tests, NULL, NULL);
}
