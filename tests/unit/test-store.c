/* Store unit tests on real SQLite files and real directories: names and values, the
 * envelope, schema and migrations, refs, two-phase create, delete and dependencies, recovery
 * on open, verify. Archives: test-store-archive.c; crashes and concurrency:
 * test-store-crash.c; GC and reindex: test-store-gc.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include "store/internal.h"
#include "test-store-lib.h"
#include "util/cleanup.h"

struct fx {
        char *root;
        struct vmsnap_store *s;
        char *tmp;
};

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("store");
        f->root = test_path(f->tmp, "root");
        f->s = store_open_or_die(f->root);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        vmsnap_store_close(f->s);
        test_rmtree(f->tmp);
        free(f->root);
        free(f->tmp);
        free(f);
        return 0;
}

/* ---- values ------------------------------------------------------------------------------- */

static void test_names(void **state)
{
        (void)state;
        assert_true(vmsnap_store_name_valid("a"));
        assert_true(vmsnap_store_name_valid("py-3.11_warm"));
        assert_true(vmsnap_store_name_valid("0abc"));
        char n64[65], n65[66];
        memset(n64, 'x', 64), n64[64] = 0;
        memset(n65, 'x', 65), n65[65] = 0;
        assert_true(vmsnap_store_name_valid(n64));
        assert_false(vmsnap_store_name_valid(n65));
        assert_false(vmsnap_store_name_valid(""));
        assert_false(vmsnap_store_name_valid("-a"));
        assert_false(vmsnap_store_name_valid(".a"));
        assert_false(vmsnap_store_name_valid("a/b"));
        assert_false(vmsnap_store_name_valid("a b"));
        assert_false(vmsnap_store_name_valid("é"));
        /* a name may not look like an id (it would shadow one) */
        assert_false(vmsnap_store_name_valid("2b9c3c5e-8c1f-4a53-9d0b-6c1b8f0e7a41"));
        assert_false(vmsnap_store_name_valid("2B9C3C5E-8C1F-4A53-9D0B-6C1B8F0E7A41"));
        assert_true(vmsnap_store_name_valid("2b9c3c5e-8c1f-4a53-9d0b-6c1b8f0e7a4"));
        assert_true(store_file_name_valid("memfile.header"));
        assert_false(store_file_name_valid("snapshot.json"));
        assert_false(store_file_name_valid(".hidden"));
        assert_false(store_file_name_valid("../x"));
        assert_false(store_file_name_valid("a/b"));
        assert_false(store_file_name_valid(".."));
}

static void test_times_and_hashes(void **state)
{
        (void)state;
        int64_t t;
        assert_int_equal(store_time_parse("2025-11-26T08:31:00Z", &t), 0);
        char back[21];
        vmsnap_time_format(t, back);
        assert_string_equal(back, "2025-11-26T08:31:00Z");
        assert_int_equal(store_time_parse("2025-02-30T00:00:00Z", &t), -EINVAL);
        assert_int_equal(store_time_parse("2025-11-26 08:31:00Z", &t), -EINVAL);
        assert_int_equal(store_time_parse("1969-12-31T23:59:59Z", &t), -EINVAL);
        assert_int_equal(store_time_parse("2025-11-26T08:31:00+01", &t), -EINVAL);
        struct vmsnap_hash h, h2;
        vmsnap_hash128("abc", 3, &h);
        char text[42];
        store_hash_format(&h, text);
        assert_int_equal(strncmp(text, "xxh3-128:", 9), 0);
        assert_int_equal(store_hash_parse(text, &h2), 0);
        assert_memory_equal(&h, &h2, sizeof(h));
        text[12] = 'G';
        assert_int_equal(store_hash_parse(text, &h2), -EINVAL);
        assert_int_equal(store_hash_parse("sha256:00", &h2), -EINVAL);
        char labels[VMSNAP_LABELS_MAX + 1];
        assert_int_equal(store_labels_normalize("{\"b\":\"2\",\"a\":\"1\"}", labels, NULL), 0);
        assert_string_equal(labels, "{\"a\":\"1\",\"b\":\"2\"}");
        assert_int_equal(store_labels_normalize("{\"a\":1}", labels, NULL), -EINVAL);
        assert_int_equal(store_labels_normalize("[]", labels, NULL), -EINVAL);
        assert_int_equal(store_labels_normalize("{\"a b\":\"x\"}", labels, NULL), -EINVAL);
}

/* ---- the envelope ------------------------------------------------------------------------- */

static const char good_envelope[] =
    "{\"format\":\"vmsnap-snapshot\",\"version\":1,"
    "\"id\":\"2b9c3c5e-8c1f-4a53-9d0b-6c1b8f0e7a41\",\"name\":\"py-warm\","
    "\"kind\":\"template\",\"parent\":null,\"template\":null,\"generation\":3,"
    "\"vmm\":{\"type\":\"qemu\",\"version\":\"7.2.0\"},\"vcpus\":2,\"memory\":536870912,"
    "\"created\":\"2025-11-26T08:31:00Z\",\"description\":\"d\",\"labels\":{\"k\":\"v\"},"
    "\"files\":[{\"name\":\"a\",\"size\":1,\"checksum\":"
    "\"xxh3-128:00112233445566778899aabbccddeeff\"},{\"name\":\"b\",\"size\":0,"
    "\"checksum\":\"xxh3-128:00112233445566778899aabbccddeeff\"}]}";

static void test_envelope_round_trip(void **state)
{
        (void)state;
        struct store_envelope e, back;
        struct vmsnap_diag d = {0};
        assert_int_equal(store_envelope_parse(good_envelope, strlen(good_envelope), &e, &d), 0);
        assert_string_equal(e.rec.name, "py-warm");
        assert_int_equal(e.rec.kind, VMSNAP_SNAPSHOT_TEMPLATE);
        assert_int_equal(e.rec.generation, 3);
        assert_int_equal(e.rec.memory, 536870912);
        assert_string_equal(e.rec.vmm_version, "7.2.0");
        assert_int_equal(e.n_files, 2);
        assert_non_null(store_envelope_find(&e, "b"));
        assert_null(store_envelope_find(&e, "c"));
        char *text;
        size_t len;
        assert_int_equal(store_envelope_serialize(&e, &text, &len, &d), 0);
        assert_int_equal(store_envelope_parse(text, len, &back, &d), 0);
        assert_memory_equal(&e.rec, &back.rec, sizeof(e.rec));
        assert_memory_equal(e.files, back.files, e.n_files * sizeof(*e.files));
        free(text);
        store_envelope_clear(&e);
        store_envelope_clear(&back);
}

/* Replaces the first occurrence of from in good_envelope and parses; returns the result. */
static int parse_edit(const char *from, const char *to, struct vmsnap_diag *d)
{
        const char *p = strstr(good_envelope, from);
        assert_non_null(p);
        char buf[4096];
        snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - good_envelope), good_envelope, to,
                 p + strlen(from));
        struct store_envelope e;
        int r = store_envelope_parse(buf, strlen(buf), &e, d);
        if (r == 0)
                store_envelope_clear(&e);
        return r;
}

static void test_envelope_rejects(void **state)
{
        (void)state;
        struct vmsnap_diag d = {0};
        static const char *const bad[][2] = {
            {"vmsnap-snapshot", "other"},
            {"\"version\":1", "\"version\":0"},
            {"\"version\":1", "\"version\":\"1\""},
            {"2b9c3c5e-8c1f", "2B9C3C5E-8c1f"},
            {"\"py-warm\"", "\"-bad\""},
            {"\"template\",", "\"vm\","},
            {"\"parent\":null", "\"parent\":\"x\""},
            {"\"generation\":3", "\"generation\":-1"},
            {"\"vcpus\":2", "\"vcpus\":2.5"},
            {"\"vcpus\":2", "\"vcpus\":100000"},
            {"2025-11-26T08:31:00Z", "yesterday"},
            {"{\"k\":\"v\"}", "{\"k\":1}"},
            {"\"name\":\"a\"", "\"name\":\"../a\""},
            {"\"name\":\"a\"", "\"name\":\"snapshot.json\""},
            {"\"name\":\"b\"", "\"name\":\"a\""}, /* duplicate */
            {"\"name\":\"a\"", "\"name\":\"c\""}, /* unsorted */
            {"\"size\":1", "\"size\":-1"},
            {"\"size\":1", "\"size\":2251799813685249"}, /* > 2^50 */
            {"xxh3-128:0011", "sha256:0011"},
            {"\"files\":[", "\"files\":[],\"x\":["},
            {"\"id\"", "\"id\":1,\"id\""}, /* duplicate key */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int r = parse_edit(bad[i][0], bad[i][1], &d);
                if (r != -EBADMSG)
                        fail_msg("case %zu (%s -> %s) gave %d", i, bad[i][0], bad[i][1], r);
                if (strncmp(d.msg, "snapshot.json", 13) != 0)
                        fail_msg("case %zu: message '%s'", i, d.msg);
        }
        assert_int_equal(parse_edit("\"version\":1", "\"version\":2", &d), -EPROTONOSUPPORT);
        assert_non_null(strstr(d.msg, "newer vmsnap"));
        /* unknown keys are ignored: a minor addition stays readable */
        assert_int_equal(parse_edit("\"vcpus\":2", "\"vcpus\":2,\"future\":{\"x\":1}", &d), 0);
        struct store_envelope e;
        assert_int_equal(store_envelope_parse("", 0, &e, &d), -EBADMSG);
        assert_int_equal(store_envelope_parse("[]", 2, &e, &d), -EBADMSG);
}

/* ---- schema ------------------------------------------------------------------------------- */

static int user_version(const char *root)
{
        char *db = test_path(root, "vmsnap.db");
        sqlite3 *h;
        assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
        sqlite3_stmt *st;
        sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL);
        sqlite3_step(st);
        int v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        free(db);
        return v;
}

static void test_schema(void **state)
{
        struct fx *f = *state;
        assert_int_equal(user_version(f->root), 1);
        sqlite3 *db = vmsnap_store_db(f->s);
        sqlite3_stmt *st;
        sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        /* reopening migrates nothing and keeps the data */
        struct vmsnap_snapshot r;
        assert_int_equal(add_plain(f->s, "keep", VMSNAP_SNAPSHOT_PAUSE, NULL, &r, NULL), 0);
        vmsnap_store_close(f->s);
        f->s = store_open_or_die(f->root);
        assert_int_equal(count_rows(f->s, 0), 1);
        /* a database from a newer vmsnap is refused, not damaged */
        assert_int_equal(
            sqlite3_exec(vmsnap_store_db(f->s), "PRAGMA user_version = 99", NULL, NULL, NULL),
            SQLITE_OK);
        vmsnap_store_close(f->s);
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_open(f->root, &f->s, &d), -EPROTONOSUPPORT);
        assert_non_null(strstr(d.msg, "upgrade vmsnap"));
        f->s = NULL;
        char *db_path = test_path(f->root, "vmsnap.db");
        sqlite3 *h;
        sqlite3_open(db_path, &h);
        sqlite3_exec(h, "PRAGMA user_version = 1", NULL, NULL, NULL);
        sqlite3_close(h);
        free(db_path);
        f->s = store_open_or_die(f->root);
}

/* ---- refs --------------------------------------------------------------------------------- */

/* Inserts a ready row with a chosen id (prefix tests need controlled ids). */
static void add_with_id(struct fx *f, const char *id, const char *name)
{
        struct vmsnap_snapshot_spec spec = {.id = id, .name = name};
        struct vmsnap_store_txn *t;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_create_begin(f->s, &spec, &t, &d) < 0)
                fail_msg("begin %s: %s", id, d.msg);
        char *p = test_path(vmsnap_store_txn_dir(t), "snapfile");
        test_write_file(p, "x", 1);
        free(p);
        assert_int_equal(vmsnap_store_txn_commit(t, NULL, &d), 0);
        vmsnap_store_txn_free(t);
}

static void test_refs(void **state)
{
        struct fx *f = *state;
        add_with_id(f, "abc00000-0000-4000-8000-000000000001", "one");
        add_with_id(f, "abc00000-0000-4000-8000-000000000002", "two");
        add_with_id(f, "abd00000-0000-4000-8000-000000000003", "abc"); /* name = a prefix */
        add_with_id(f, "f0000000-0000-4000-8000-000000000004", NULL);
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_resolve(f->s, "abc00000-0000-4000-8000-000000000002", &r, &d),
                         0);
        assert_string_equal(r.name, "two");
        /* exact id is case-insensitive */
        assert_int_equal(vmsnap_store_resolve(f->s, "ABC00000-0000-4000-8000-000000000002", &r, &d),
                         0);
        assert_int_equal(vmsnap_store_resolve(f->s, "one", &r, &d), 0);
        assert_string_equal(r.id, "abc00000-0000-4000-8000-000000000001");
        /* a name wins over a prefix */
        assert_int_equal(vmsnap_store_resolve(f->s, "abc", &r, &d), 0);
        assert_string_equal(r.id, "abd00000-0000-4000-8000-000000000003");
        /* ambiguous prefix lists every candidate */
        assert_int_equal(vmsnap_store_resolve(f->s, "abc0", &r, &d), -ENOTUNIQ);
        assert_non_null(strstr(d.msg, "abc00000-0000-4000-8000-000000000001 (one)"));
        assert_non_null(strstr(d.msg, "abc00000-0000-4000-8000-000000000002 (two)"));
        assert_int_equal(vmsnap_store_resolve(f->s, "ABC00000-0000-4000-8000-00000000000", &r, &d),
                         -ENOTUNIQ);
        /* unique prefixes, with and without the dash */
        assert_int_equal(vmsnap_store_resolve(f->s, "abd", &r, &d), 0);
        assert_int_equal(vmsnap_store_resolve(f->s, "F00", &r, &d), 0);
        assert_string_equal(r.id, "f0000000-0000-4000-8000-000000000004");
        assert_int_equal(vmsnap_store_resolve(f->s, "abc00000-0000-4000-8000-00000000000", &r, &d),
                         -ENOTUNIQ);
        assert_int_equal(
            vmsnap_store_resolve(f->s, "abc00000-0000-4000-8000-0000000000011", &r, &d), -ENOENT);
        /* fewer than 3 characters is never a prefix */
        assert_int_equal(vmsnap_store_resolve(f->s, "f0", &r, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "at least 3"));
        assert_int_equal(vmsnap_store_resolve(f->s, "zzz", &r, &d), -ENOENT);
        assert_int_equal(vmsnap_store_resolve(f->s, "", &r, &d), -EINVAL);
        /* glob characters are not patterns */
        assert_int_equal(vmsnap_store_resolve(f->s, "ab*", &r, &d), -ENOENT);
        assert_int_equal(vmsnap_store_resolve(f->s, "a?c", &r, &d), -ENOENT);
        /* batch: duplicates removed, order kept; one bad ref fails the batch */
        const char *refs[] = {"two", "abc00000-0000-4000-8000-000000000002", "f00", "two"};
        struct vmsnap_snapshot *v;
        size_t n;
        assert_int_equal(vmsnap_store_resolve_many(f->s, refs, 4, &v, &n, &d), 0);
        assert_int_equal(n, 2);
        assert_string_equal(v[0].name, "two");
        assert_string_equal(v[1].id, "f0000000-0000-4000-8000-000000000004");
        free(v);
        const char *bad[] = {"two", "nope"};
        assert_int_equal(vmsnap_store_resolve_many(f->s, bad, 2, &v, &n, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "nope"));
}

/* A ref with a control character is refused (-EINVAL, shown escaped), never looked up; a
 * ref as received with a NUL inside ("one\0x", a decoded %00) is refused by its length. */
static void test_refs_control_characters(void **state)
{
        struct fx *f = *state;
        add_with_id(f, "abc00000-0000-4000-8000-000000000001", "one");
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        static const char *const bad[] = {"one\tx", "one\n", "\x1b[2Jone", "one\x7f", "abc\x01",
                                           "\t"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                d.msg[0] = '\0';
                assert_int_equal(vmsnap_store_resolve(f->s, bad[i], &r, &d), -EINVAL);
                assert_non_null(strstr(d.msg, "control character"));
                for (const char *p = d.msg; *p; p++) /* the message itself stays printable */
                        assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
        }
        assert_non_null(strstr(d.msg, "\\x09"));
        const char *refs[] = {"one", "one\tx"};
        struct vmsnap_snapshot *v;
        size_t n;
        assert_int_equal(vmsnap_store_resolve_many(f->s, refs, 2, &v, &n, &d), -EINVAL);
        assert_int_equal(vmsnap_store_ref_check("one\0x", 5, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "NUL"));
        assert_int_equal(vmsnap_store_ref_check("one", 3, &d), 0);
        assert_int_equal(vmsnap_store_ref_check("", 0, &d), -EINVAL);
        assert_int_equal(vmsnap_store_resolve(f->s, "one", &r, &d), 0);
}

static void test_refs_skip_pending(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot_spec spec = {.id = "abc00000-0000-4000-8000-000000000009",
                                            .name = "later"};
        struct vmsnap_store_txn *t;
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, NULL), 0);
        struct vmsnap_snapshot r;
        assert_int_equal(vmsnap_store_resolve(f->s, "later", &r, NULL), -ENOENT);
        assert_int_equal(vmsnap_store_resolve(f->s, "abc", &r, NULL), -ENOENT);
        assert_int_equal(vmsnap_store_resolve(f->s, spec.id, &r, NULL), -ENOENT);
        assert_int_equal(count_rows(f->s, 0), 0);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 1);
        vmsnap_store_txn_free(t);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 0);
}

/* ---- create ------------------------------------------------------------------------------- */

static void test_create_commit(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot_spec spec = {.name = "box",
                                            .kind = VMSNAP_SNAPSHOT_TEMPLATE,
                                            .vmm = "firecracker",
                                            .vcpus = 4,
                                            .description = "hello",
                                            .labels = "{\"z\":\"1\"}"};
        struct vmsnap_store_txn *t;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, &d), 0);
        /* the name is reserved while pending */
        struct vmsnap_store_txn *t2;
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t2, &d), -EEXIST);
        assert_non_null(strstr(d.msg, "(being created)"));
        char *dir = strdup(vmsnap_store_txn_dir(t));
        char *a = test_path(dir, "snapfile"), *b = test_path(dir, ".snapfile.tmp.1.1");
        test_write_file(a, "abc", 3);
        test_write_file(b, "leftover", 8);
        struct vmsnap_snapshot r;
        assert_int_equal(vmsnap_store_txn_commit(t, &r, &d), 0);
        vmsnap_store_txn_free(t);
        assert_int_equal(access(b, F_OK), -1); /* temp files do not survive commit */
        assert_int_equal(r.state, VMSNAP_SNAPSHOT_READY);
        assert_string_equal(r.labels, "{\"z\":\"1\"}");
        assert_true(r.size_bytes > 0);
        struct vmsnap_snapshot_file *files;
        size_t n;
        assert_int_equal(vmsnap_store_files(f->s, r.id, &files, &n, &d), 0);
        assert_int_equal(n, 1);
        assert_string_equal(files[0].name, "snapfile");
        struct vmsnap_hash h;
        vmsnap_hash128("abc", 3, &h);
        assert_memory_equal(&files[0].checksum, &h, sizeof(h));
        free(files);
        /* the envelope alone describes the snapshot */
        int fd = open(dir, O_RDONLY | O_DIRECTORY);
        struct store_envelope env;
        assert_int_equal(store_envelope_load(fd, &env, &d), 0);
        assert_string_equal(env.rec.id, r.id);
        assert_string_equal(env.rec.description, "hello");
        assert_int_equal(env.rec.vcpus, 4);
        store_envelope_clear(&env);
        close(fd);
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t2, &d), -EEXIST);
        free(a);
        free(b);
        free(dir);
}

/* A commit makes the snapshot's files 0600, except a 0640 file of the store's owner (a
 * shared read-only input such as the guest kernel, linked in): its inode keeps 0640. */
static void test_commit_modes(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot_spec spec = {.kind = VMSNAP_SNAPSHOT_PAUSE, .vmm = "qemu"};
        struct vmsnap_store_txn *t;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, &d), 0);
        const char *dir = vmsnap_store_txn_dir(t);
        static const struct {
                const char *name;
                mode_t mode;
                bool other_owner;
                mode_t want;
        } files[] = {
                {"vmlinuz", 0640, false, 0640}, {"snapfile", 0644, false, 0600},
                {"vmm.json", 0660, false, 0600}, {"rootfs.qcow2", 0640, true, 0600},
        };
        char *paths[4];
        for (int i = 0; i < 4; i++) {
                paths[i] = test_path(dir, files[i].name);
                test_write_file(paths[i], "x", 1);
                assert_int_equal(chmod(paths[i], files[i].mode), 0);
                if (files[i].other_owner && geteuid() == 0) /* a jailed VMM's file */
                        assert_int_equal(chown(paths[i], 12345, 12345), 0);
        }
        assert_int_equal(vmsnap_store_txn_commit(t, NULL, &d), 0);
        vmsnap_store_txn_free(t);
        for (int i = 0; i < 4; i++) {
                struct stat st;
                assert_int_equal(stat(paths[i], &st), 0);
                mode_t want = files[i].other_owner && geteuid() != 0 ? 0640 : files[i].want;
                if ((st.st_mode & 07777) != want)
                        fail_msg("%s: mode %o, want %o", files[i].name,
                                 (unsigned)(st.st_mode & 07777), (unsigned)want);
                free(paths[i]);
        }
}

/* Checksums are taken over from a ready snapshot only for the very same inode: a file of the
 * same name and size but other content is hashed. */
static void test_reuse_checksums(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot_spec spec = {.kind = VMSNAP_SNAPSHOT_PAUSE, .vmm = "qemu"};
        struct vmsnap_store_txn *t;
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot a, b;
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, &d), 0);
        char *a_linked = test_path(vmsnap_store_txn_dir(t), "linked");
        char *a_other = test_path(vmsnap_store_txn_dir(t), "other");
        test_write_file(a_linked, "same", 4);
        test_write_file(a_other, "aaaa", 4);
        assert_int_equal(vmsnap_store_txn_commit(t, &a, &d), 0);
        vmsnap_store_txn_free(t);
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, &d), 0);
        char *b_linked = test_path(vmsnap_store_txn_dir(t), "linked");
        char *b_other = test_path(vmsnap_store_txn_dir(t), "other");
        assert_int_equal(link(a_linked, b_linked), 0);
        test_write_file(b_other, "bbbb", 4); /* same name and size, another inode */
        assert_int_equal(vmsnap_store_txn_reuse_checksums(t, a.id, &d), 0);
        assert_int_equal(vmsnap_store_txn_commit(t, &b, &d), 0);
        vmsnap_store_txn_free(t);
        struct vmsnap_snapshot_file *files;
        size_t n;
        assert_int_equal(vmsnap_store_files(f->s, b.id, &files, &n, &d), 0);
        assert_int_equal(n, 2);
        for (size_t i = 0; i < n; i++) {
                struct vmsnap_hash h;
                vmsnap_hash128(strcmp(files[i].name, "linked") == 0 ? "same" : "bbbb", 4, &h);
                assert_memory_equal(&files[i].checksum, &h, sizeof(h));
        }
        free(files);
        assert_int_equal(vmsnap_store_verify(f->s, b.id, NULL, NULL, &d), 0);
        free(a_linked);
        free(a_other);
        free(b_linked);
        free(b_other);
}

static void test_create_abort(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot_spec spec = {.name = "gone"};
        struct vmsnap_store_txn *t;
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, NULL), 0);
        char *p = test_path(vmsnap_store_txn_dir(t), "data");
        test_write_file(p, "x", 1);
        free(p);
        assert_int_equal(vmsnap_store_txn_abort(t, NULL), 0);
        vmsnap_store_txn_free(t);
        char *snaps = test_path(f->root, "snapshots"), *locks = test_path(f->root, "locks");
        assert_int_equal(count_entries(snaps), 0);
        assert_int_equal(count_entries(locks), 0);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 0);
        /* the name is free again; an empty create is refused */
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, NULL), 0);
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_txn_commit(t, NULL, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "no files"));
        vmsnap_store_txn_free(t);
        assert_int_equal(count_entries(snaps), 0);
        free(snaps);
        free(locks);
}

static void test_create_rules(void **state)
{
        struct fx *f = *state;
        struct vmsnap_store_txn *t;
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot_spec bad_name = {.name = "no spaces"};
        assert_int_equal(vmsnap_store_create_begin(f->s, &bad_name, &t, &d), -EINVAL);
        struct vmsnap_snapshot_spec no_parent = {
            .name = "orphan", .parent_id = "abc00000-0000-4000-8000-000000000001"};
        assert_int_equal(vmsnap_store_create_begin(f->s, &no_parent, &t, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "parent"));
        struct vmsnap_snapshot p;
        assert_int_equal(add_plain(f->s, "pause1", VMSNAP_SNAPSHOT_PAUSE, NULL, &p, NULL), 0);
        struct vmsnap_snapshot_spec tmpl = {.name = "x", .template_id = p.id};
        assert_int_equal(vmsnap_store_create_begin(f->s, &tmpl, &t, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "template"));
        struct vmsnap_snapshot_spec labels = {.name = "y", .labels = "{\"a\":[]}"};
        assert_int_equal(vmsnap_store_create_begin(f->s, &labels, &t, &d), -EINVAL);
        char long_desc[2000];
        memset(long_desc, 'a', sizeof(long_desc) - 1);
        long_desc[sizeof(long_desc) - 1] = 0;
        struct vmsnap_snapshot_spec desc = {.name = "z", .description = long_desc};
        assert_int_equal(vmsnap_store_create_begin(f->s, &desc, &t, &d), -ENAMETOOLONG);
        /* the failed begins left nothing */
        char *snaps = test_path(f->root, "snapshots");
        assert_int_equal(count_entries(snaps), 1);
        free(snaps);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 1);
}

/* ---- add (real memory snapshots) ---------------------------------------------------------- */

static void test_add_generations(void **state)
{
        struct fx *f = *state;
        char *mem = test_path(f->tmp, "mem"), *snapf = test_path(f->tmp, "state");
        make_memfile(mem, 1, 5);
        test_write_file(snapf, "device-state", 12);
        struct vmsnap_snapshot base, child;
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot_spec spec = {
            .name = "base", .kind = VMSNAP_SNAPSHOT_TEMPLATE, .vmm = "qemu", .vcpus = 2};
        assert_int_equal(vmsnap_store_add(f->s, &spec, mem, snapf, NULL, &base, &d), 0);
        assert_int_equal(base.generation, 0);
        assert_int_equal(base.memory, MEM_SIZE);
        mutate_memfile(mem, 2);
        struct vmsnap_snapshot_spec cspec = {.name = "child", .parent_id = base.id};
        assert_int_equal(vmsnap_store_add(f->s, &cspec, mem, NULL, NULL, &child, &d), 0);
        assert_int_equal(child.generation, 1);
        assert_string_equal(child.vmm, "qemu"); /* inherited */
        assert_int_equal(child.vcpus, 2);
        assert_string_equal(child.parent_id, base.id);
        assert_int_equal(vmsnap_store_verify(f->s, child.id, NULL, NULL, &d), 0);
        /* the child's directory stands alone: materialize equals the input */
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(f->s, child.id, dir, sizeof(dir));
        char *out = test_path(f->tmp, "out");
        assert_int_equal(vmsnap_mem_materialize(dir, out, NULL, &d), 0);
        assert_true(files_equal(mem, out));
        /* a missing memory file fails and leaves nothing */
        struct vmsnap_snapshot_spec bad = {.name = "bad"};
        assert_int_equal(vmsnap_store_add(f->s, &bad, "/nonexistent", NULL, NULL, NULL, &d),
                         -ENOENT);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 2);
        free(mem);
        free(snapf);
        free(out);
}

/* ---- delete and dependencies -------------------------------------------------------------- */

static void test_delete_dependents(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot p, c, t, from;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_plain(f->s, "parent", VMSNAP_SNAPSHOT_PAUSE, NULL, &p, &d), 0);
        assert_int_equal(add_plain(f->s, "child", VMSNAP_SNAPSHOT_PAUSE, p.id, &c, &d), 0);
        assert_int_equal(add_plain(f->s, "tmpl", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &t, &d), 0);
        struct vmsnap_snapshot_spec spec = {.name = "spawned", .template_id = t.id};
        struct vmsnap_store_txn *tx;
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &tx, &d), 0);
        char *q = test_path(vmsnap_store_txn_dir(tx), "snapfile");
        test_write_file(q, "s", 1);
        free(q);
        assert_int_equal(vmsnap_store_txn_commit(tx, &from, &d), 0);
        vmsnap_store_txn_free(tx);

        assert_int_equal(vmsnap_store_delete(f->s, p.id, 0, &d), -EBUSY);
        assert_non_null(strstr(d.msg, "child snapshot"));
        assert_non_null(strstr(d.msg, c.id));
        assert_non_null(strstr(d.msg, "(child)"));
        assert_int_equal(vmsnap_store_delete(f->s, t.id, 0, &d), -EBUSY);
        assert_non_null(strstr(d.msg, "spawned from template"));
        struct vmsnap_dependent *deps;
        size_t n;
        assert_int_equal(vmsnap_store_dependents(f->s, p.id, &deps, &n, &d), 0);
        assert_int_equal(n, 1);
        assert_string_equal(deps[0].id, c.id);
        free(deps);
        /* children first, then the parent goes */
        assert_int_equal(vmsnap_store_delete(f->s, c.id, 0, &d), 0);
        assert_int_equal(vmsnap_store_delete(f->s, p.id, 0, &d), 0);
        /* --force: the dependent keeps its files; its template field stays as history */
        assert_int_equal(vmsnap_store_delete(f->s, t.id, VMSNAP_DELETE_FORCE, &d), 0);
        struct vmsnap_snapshot r;
        assert_int_equal(vmsnap_store_resolve(f->s, "spawned", &r, &d), 0);
        assert_string_equal(r.template_id, t.id);
        assert_int_equal(vmsnap_store_verify(f->s, r.id, NULL, NULL, &d), 0);
        assert_int_equal(vmsnap_store_delete(f->s, r.id, 0, &d), 0);
        assert_int_equal(vmsnap_store_delete(f->s, r.id, 0, &d), -ENOENT);
        char *snaps = test_path(f->root, "snapshots"), *locks = test_path(f->root, "locks");
        assert_int_equal(count_entries(snaps), 0);
        assert_int_equal(count_entries(locks), 0);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 0);
        free(snaps);
        free(locks);
}

/* A later layer plugs its table into the dependency view; delete and the message follow. */
static void test_dependency_view_extends(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot t;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_plain(f->s, "tmpl", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &t, &d), 0);
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, name TEXT, snapshot_id TEXT, "
                 "state TEXT);"
                 "INSERT INTO sandboxes VALUES ('sb-1', 'web', '%s', 'paused');"
                 "DROP VIEW snapshot_dependents;"
                 "CREATE VIEW snapshot_dependents(snapshot_id, kind, dependent_id, label) AS "
                 "  SELECT parent_id, 'child snapshot', id, coalesce(name, '') FROM snapshots "
                 "   WHERE parent_id IS NOT NULL AND state != 'deleting' "
                 "  UNION ALL SELECT template_id, 'snapshot spawned from template', id, "
                 "   coalesce(name, '') FROM snapshots WHERE template_id IS NOT NULL "
                 "   AND state != 'deleting' "
                 "  UNION ALL SELECT snapshot_id, 'sandbox', id, name FROM sandboxes "
                 "   WHERE state != 'destroyed';",
                 t.id);
        assert_int_equal(sqlite3_exec(vmsnap_store_db(f->s), sql, NULL, NULL, NULL), SQLITE_OK);
        assert_int_equal(vmsnap_store_delete(f->s, t.id, 0, &d), -EBUSY);
        assert_non_null(strstr(d.msg, "sandbox sb-1 (web)"));
        sqlite3_exec(vmsnap_store_db(f->s), "UPDATE sandboxes SET state = 'destroyed'", NULL, NULL,
                     NULL);
        assert_int_equal(vmsnap_store_delete(f->s, t.id, 0, &d), 0);
}

/* Readers hold the shared lock: even --force waits for them. */
static void test_delete_while_in_use(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot p;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_plain(f->s, "busy", VMSNAP_SNAPSHOT_PAUSE, NULL, &p, &d), 0);
        int reader = store_lock_take(f->s, p.id, false);
        assert_true(reader >= 0);
        assert_int_equal(vmsnap_store_delete(f->s, p.id, VMSNAP_DELETE_FORCE, &d), -EBUSY);
        assert_non_null(strstr(d.msg, "in use"));
        store_lock_release(f->s, p.id, reader);
        assert_int_equal(vmsnap_store_delete(f->s, p.id, 0, &d), 0);
}

/* ---- recovery and resume ------------------------------------------------------------------ */

/* Sets a row's state directly (what a crash leaves). */
static void force_state(struct fx *f, const char *id, const char *state)
{
        char sql[256];
        snprintf(sql, sizeof(sql), "UPDATE snapshots SET state = '%s' WHERE id = '%s'", state, id);
        assert_int_equal(sqlite3_exec(vmsnap_store_db(f->s), sql, NULL, NULL, NULL), SQLITE_OK);
}

/* A child process begins a create, writes a file and dies without aborting. Returns the
 * pending id (malloc'd). The parent holds no store handle across the fork. */
static char *dead_creator(struct fx *f, const char *name)
{
        int pipefd[2];
        assert_int_equal(pipe(pipefd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct vmsnap_store *s = store_open_or_die(f->root);
                struct vmsnap_snapshot_spec spec = {.name = name};
                struct vmsnap_store_txn *t;
                if (vmsnap_store_create_begin(s, &spec, &t, NULL) < 0)
                        _exit(1);
                char *p = test_path(vmsnap_store_txn_dir(t), "memdump");
                test_write_file(p, "precious", 8);
                if (write(pipefd[1], vmsnap_store_txn_id(t), VMSNAP_ID_LEN) != VMSNAP_ID_LEN)
                        _exit(1);
                _exit(0); /* dies holding a pending create */
        }
        close(pipefd[1]);
        char *id = calloc(1, VMSNAP_ID_LEN + 1);
        assert_int_equal(read(pipefd[0], id, VMSNAP_ID_LEN), VMSNAP_ID_LEN);
        close(pipefd[0]);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        return id;
}

static void test_recovery(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot done, del, r;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_plain(f->s, "complete", VMSNAP_SNAPSHOT_PAUSE, NULL, &done, &d), 0);
        assert_int_equal(add_plain(f->s, "deleting", VMSNAP_SNAPSHOT_PAUSE, NULL, &del, &d), 0);
        force_state(f, done.id, "pending"); /* as if it crashed after its envelope */
        force_state(f, del.id, "deleting"); /* as if it crashed while deleting */
        vmsnap_store_close(f->s);
        char *dead = dead_creator(f, "incomplete");
        f->s = store_open_or_die(f->root); /* recovery runs here */

        /* a live creator in this process: the next open must leave it alone */
        struct vmsnap_snapshot_spec live = {.name = "live"};
        struct vmsnap_store_txn *t;
        assert_int_equal(vmsnap_store_create_begin(f->s, &live, &t, &d), 0);
        char *p = test_path(vmsnap_store_txn_dir(t), "snapfile");
        test_write_file(p, "x", 1);
        free(p);
        struct vmsnap_store *other = store_open_or_die(f->root);

        assert_int_equal(vmsnap_store_resolve(other, "complete", &r, &d), 0); /* rolled forward */
        assert_int_equal(vmsnap_store_get(other, del.id, &r, &d), -ENOENT);   /* finished */
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(other, del.id, dir, sizeof(dir));
        assert_int_equal(access(dir, F_OK), -1);
        /* incomplete: kept for its owner's successor, its data intact */
        assert_int_equal(vmsnap_store_get(other, dead, &r, &d), 0);
        assert_int_equal(r.state, VMSNAP_SNAPSHOT_PENDING);
        struct vmsnap_store_txn *t2;
        assert_int_equal(vmsnap_store_create_resume(other, vmsnap_store_txn_id(t), &t2, &d),
                         -EBUSY);
        assert_int_equal(vmsnap_store_create_resume(other, dead, &t2, &d), 0);
        struct vmsnap_snapshot resumed;
        assert_int_equal(vmsnap_store_txn_commit(t2, &resumed, &d), 0);
        vmsnap_store_txn_free(t2);
        assert_string_equal(resumed.name, "incomplete");
        struct vmsnap_snapshot_file *files;
        size_t n;
        assert_int_equal(vmsnap_store_files(other, dead, &files, &n, &d), 0);
        assert_int_equal(n, 1);
        assert_string_equal(files[0].name, "memdump");
        free(files);
        assert_int_equal(vmsnap_store_get(other, vmsnap_store_txn_id(t), &r, &d), 0);
        assert_int_equal(r.state, VMSNAP_SNAPSHOT_PENDING);
        assert_int_equal(vmsnap_store_txn_commit(t, NULL, &d), 0);
        vmsnap_store_txn_free(t);
        assert_int_equal(check_consistent(other), 3);
        vmsnap_store_close(other);
        free(dead);
}

/* A pending envelope that does not verify is not rolled forward. */
static void test_recovery_refuses_corrupt(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_plain(f->s, "bad", VMSNAP_SNAPSHOT_PAUSE, NULL, &r, &d), 0);
        force_state(f, r.id, "pending");
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(f->s, r.id, dir, sizeof(dir));
        char *p = test_path(dir, "snapfile");
        test_write_file(p, "state of Bad", 12); /* same size, other bytes */
        free(p);
        vmsnap_store_close(f->s);
        f->s = store_open_or_die(f->root);
        assert_int_equal(vmsnap_store_get(f->s, r.id, &r, &d), 0);
        assert_int_equal(r.state, VMSNAP_SNAPSHOT_PENDING);
}

/* ---- verify, touch ------------------------------------------------------------------------ */

static void test_verify_and_touch(void **state)
{
        struct fx *f = *state;
        char *mem = test_path(f->tmp, "mem");
        make_memfile(mem, 7, 3);
        struct vmsnap_snapshot r, r2;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_snapshot(f->s, mem, "v", VMSNAP_SNAPSHOT_PAUSE, NULL, &r, &d), 0);
        assert_int_equal(vmsnap_store_verify(f->s, r.id, NULL, NULL, &d), 0);
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(f->s, r.id, dir, sizeof(dir));
        char *hdr = test_path(dir, "memfile.header");
        size_t len;
        uint8_t *buf = test_read_file(hdr, &len);
        buf[len / 2] ^= 1;
        test_write_file(hdr, buf, len);
        free(buf);
        assert_int_equal(vmsnap_store_verify(f->s, r.id, NULL, NULL, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "memfile.header: checksum mismatch"));
        sqlite3_exec(vmsnap_store_db(f->s), "UPDATE snapshots SET last_accessed = 5", NULL, NULL,
                     NULL);
        assert_int_equal(vmsnap_store_touch(f->s, r.id, &d), 0);
        assert_int_equal(vmsnap_store_get(f->s, r.id, &r2, &d), 0);
        assert_true(r2.last_accessed > 5);
        assert_int_equal(vmsnap_store_touch(f->s, "abc00000-0000-4000-8000-000000000001", &d),
                         -ENOENT);
        free(hdr);
        free(mem);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_names),
    cmocka_unit_test(test_times_and_hashes),
    cmocka_unit_test(test_envelope_round_trip),
    cmocka_unit_test(test_envelope_rejects),
    cmocka_unit_test_setup_teardown(test_schema, setup, teardown),
    cmocka_unit_test_setup_teardown(test_refs, setup, teardown),
    cmocka_unit_test_setup_teardown(test_refs_control_characters, setup, teardown),
    cmocka_unit_test_setup_teardown(test_refs_skip_pending, setup, teardown),
    cmocka_unit_test_setup_teardown(test_create_commit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_commit_modes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reuse_checksums, setup, teardown),
    cmocka_unit_test_setup_teardown(test_create_abort, setup, teardown),
    cmocka_unit_test_setup_teardown(test_create_rules, setup, teardown),
    cmocka_unit_test_setup_teardown(test_add_generations, setup, teardown),
    cmocka_unit_test_setup_teardown(test_delete_dependents, setup, teardown),
    cmocka_unit_test_setup_teardown(test_dependency_view_extends, setup, teardown),
    cmocka_unit_test_setup_teardown(test_delete_while_in_use, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recovery_refuses_corrupt, setup, teardown),
    cmocka_unit_test_setup_teardown(test_verify_and_touch, setup, teardown),
};

int main(void)
{
        return cmocka_run_group_tests(tests, NULL, NULL);
}
