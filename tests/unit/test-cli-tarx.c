/* The host side of `vmsnap sandbox cp` (src/cli/tarx.c) against archives a hostile guest
 * could send: "..", absolute names, entries outside the asked-for top, symlinks sent earlier
 * in the archive or already in the destination, hard links out; each must be refused with
 * nothing written outside the destination. Plus a normal tree round trip (tarx_create then
 * tarx_extract) with modes, symlinks and hard links. Real files, real libarchive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cli/tarx.c"
#include "testlib.h"

#include <dirent.h>

struct entry {
        const char *name;
        mode_t type;        /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR; 0: a hard link */
        const char *target; /* symlink or hard link target; file content */
        mode_t perm;
};

/* Writes a tar of the entries to a temporary file; returns an fd at its start. */
static int make_tar(const struct entry *e, size_t n)
{
        char path[] = "/tmp/vmsnap-tarx-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        unlink(path);
        struct archive *w = archive_write_new();
        archive_write_set_format_gnutar(w);
        assert_int_equal(archive_write_open_fd(w, fd), ARCHIVE_OK);
        for (size_t i = 0; i < n; i++) {
                struct archive_entry *ae = archive_entry_new();
                archive_entry_set_pathname(ae, e[i].name);
                archive_entry_set_perm(ae, e[i].perm ? e[i].perm : 0644);
                if (e[i].type == 0) {
                        archive_entry_set_filetype(ae, AE_IFREG);
                        archive_entry_set_hardlink(ae, e[i].target);
                } else {
                        archive_entry_set_filetype(ae, e[i].type);
                }
                if (e[i].type == AE_IFLNK)
                        archive_entry_set_symlink(ae, e[i].target);
                size_t len = e[i].type == AE_IFREG && e[i].target ? strlen(e[i].target) : 0;
                archive_entry_set_size(ae, (la_int64_t)len);
                assert_int_equal(archive_write_header(w, ae), ARCHIVE_OK);
                if (len)
                        archive_write_data(w, e[i].target, len);
                archive_entry_free(ae);
        }
        archive_write_close(w);
        archive_write_free(w);
        lseek(fd, 0, SEEK_SET);
        return fd;
}

struct fx {
        char *base, *dest, *outside;
        int dest_fd;
};

static void fx_init(struct fx *f)
{
        f->base = test_mkdtemp("tarx");
        f->dest = test_path(f->base, "dest");
        f->outside = test_path(f->base, "outside");
        assert_int_equal(mkdir(f->dest, 0755), 0);
        assert_int_equal(mkdir(f->outside, 0755), 0);
        f->dest_fd = open(f->dest, O_RDONLY | O_DIRECTORY);
        assert_true(f->dest_fd >= 0);
}

static void fx_free(struct fx *f)
{
        close(f->dest_fd);
        test_rmtree(f->base);
        free(f->base);
        free(f->dest);
        free(f->outside);
}

static size_t count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        size_t n = 0;
        struct dirent *e;
        while (d && (e = readdir(d)))
                n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
        if (d)
                closedir(d);
        return n;
}

/* Extracts the entries with top "top" → "copy"; returns tarx_extract's result and err. */
static int run(struct fx *f, const struct entry *e, size_t n, char *err, size_t size)
{
        int fd = make_tar(e, n);
        struct tarx_opts o = {.dest_fd = f->dest_fd, .top_from = "top", .top_to = "copy"};
        struct tarx_stats st;
        int r = tarx_extract(fd, &o, &st, err, size);
        close(fd);
        return r;
}

/* An attack: refused, its message mentions why, and nothing landed outside dest. */
static void refused(const struct entry *e, size_t n, const char *why)
{
        struct fx f;
        char err[512] = "";
        fx_init(&f);
        char *symlink_out = test_path(f.base, "dest/copy");
        (void)symlink_out;
        int r = run(&f, e, n, err, sizeof(err));
        if (r >= 0 || !strstr(err, why))
                fail_msg("not refused as '%s': r=%d, err='%s'", why, r, err);
        assert_int_equal(count_entries(f.outside), 0);
        char *evil = test_path(f.base, "evil");
        assert_int_equal(access(evil, F_OK), -1);
        free(evil);
        free(symlink_out);
        fx_free(&f);
}

static void test_dotdot(void **state)
{
        (void)state;
        const struct entry a[] = {{"top/../../evil", AE_IFREG, "x", 0}};
        refused(a, 1, "'..'");
        const struct entry b[] = {{"../evil", AE_IFREG, "x", 0}};
        refused(b, 1, "'..'");
}

static void test_absolute(void **state)
{
        (void)state;
        char abs[256];
        struct fx f;
        fx_init(&f);
        snprintf(abs, sizeof(abs), "%s/evil", f.base);
        const struct entry a[] = {{abs, AE_IFREG, "x", 0}};
        refused(a, 1, "absolute");
        fx_free(&f);
}

static void test_outside_top(void **state)
{
        (void)state;
        const struct entry a[] = {{"top/ok", AE_IFREG, "x", 0}, {"other/file", AE_IFREG, "x", 0}};
        refused(a, 2, "not under 'top'");
}

/* A symlink the guest sent, then a file "through" it: the link must not be followed. */
static void test_through_sent_symlink(void **state)
{
        (void)state;
        struct fx f;
        fx_init(&f);
        const struct entry a[] = {{"top", AE_IFDIR, NULL, 0755},
                                  {"top/link", AE_IFLNK, f.outside, 0777},
                                  {"top/link/pwned", AE_IFREG, "x", 0}};
        refused(a, 3, "symlink");
        const struct entry b[] = {{"top/up", AE_IFLNK, "../..", 0777},
                                  {"top/up/evil", AE_IFREG, "x", 0}};
        refused(b, 2, "symlink");
        fx_free(&f);
}

/* A symlink already in the destination where the copy's top goes. */
static void test_through_existing_symlink(void **state)
{
        (void)state;
        struct fx f;
        char err[512] = "";
        fx_init(&f);
        char *link = test_path(f.dest, "copy");
        assert_int_equal(symlink(f.outside, link), 0);
        const struct entry a[] = {{"top/pwned", AE_IFREG, "x", 0}};
        assert_true(run(&f, a, 1, err, sizeof(err)) < 0);
        assert_non_null(strstr(err, "symlink"));
        assert_int_equal(count_entries(f.outside), 0);
        free(link);
        fx_free(&f);
}

/* A file entry over a symlink sent earlier replaces the link, never writes through it. */
static void test_file_over_symlink(void **state)
{
        (void)state;
        struct fx f;
        char err[512] = "", target[512];
        fx_init(&f);
        snprintf(target, sizeof(target), "%s/victim", f.outside);
        test_write_file(target, "safe", 4);
        const struct entry a[] = {{"top", AE_IFDIR, NULL, 0755},
                                  {"top/s", AE_IFLNK, target, 0777},
                                  {"top/s", AE_IFREG, "overwritten", 0644}};
        assert_int_equal(run(&f, a, 3, err, sizeof(err)), 0);
        size_t len;
        uint8_t *got = test_read_file(target, &len);
        assert_int_equal(len, 4);
        assert_memory_equal(got, "safe", 4);
        free(got);
        char *s = test_path(f.dest, "copy/s");
        struct stat sb;
        assert_int_equal(lstat(s, &sb), 0);
        assert_true(S_ISREG(sb.st_mode));
        free(s);
        fx_free(&f);
}

static void test_hardlink_out(void **state)
{
        (void)state;
        const struct entry a[] = {{"top", AE_IFDIR, NULL, 0755},
                                  {"top/h", 0, "top/../../evil", 0}};
        refused(a, 2, "'..'");
        const struct entry b[] = {{"top", AE_IFDIR, NULL, 0755},
                                  {"top/l", AE_IFLNK, "/etc/hostname", 0777},
                                  {"top/h", 0, "top/l", 0}};
        refused(b, 3, "hard link");
}

/* A normal tree: made by tarx_create, unpacked by tarx_extract under another name. */
static void test_round_trip(void **state)
{
        (void)state;
        struct fx f;
        char err[512] = "";
        fx_init(&f);
        char *src = test_path(f.base, "src");
        char *sub = test_path(src, "sub");
        char *file = test_path(sub, "f");
        char *slink = test_path(src, "l");
        char *hard = test_path(src, "h");
        assert_int_equal(mkdir(src, 0755), 0);
        assert_int_equal(mkdir(sub, 0750), 0);
        test_write_file(file, "data\0more", 9);
        chmod(file, 0640);
        assert_int_equal(symlink("sub/f", slink), 0);
        assert_int_equal(link(file, hard), 0);
        int p[2];
        assert_int_equal(pipe(p), 0);
        struct tarx_stats st;
        /* a few KiB: fits the pipe, so one thread does both ends */
        assert_int_equal(tarx_create(src, "top", p[1], &st, err, sizeof(err)), 0);
        close(p[1]);
        struct tarx_opts o = {.dest_fd = f.dest_fd, .top_from = "top", .top_to = "copy"};
        assert_int_equal(tarx_extract(p[0], &o, &st, err, sizeof(err)), 0);
        close(p[0]);
        char *cf = test_path(f.dest, "copy/sub/f");
        char *cl = test_path(f.dest, "copy/l");
        char *ch = test_path(f.dest, "copy/h");
        char *cs = test_path(f.dest, "copy/sub");
        size_t len;
        uint8_t *got = test_read_file(cf, &len);
        assert_int_equal(len, 9);
        assert_memory_equal(got, "data\0more", 9);
        free(got);
        struct stat sb;
        assert_int_equal(stat(cf, &sb), 0);
        assert_int_equal(sb.st_mode & 07777, 0640);
        assert_int_equal(stat(cs, &sb), 0);
        assert_int_equal(sb.st_mode & 07777, 0750);
        char t[64] = "";
        assert_int_equal(readlink(cl, t, sizeof(t) - 1), 5);
        assert_string_equal(t, "sub/f");
        got = test_read_file(ch, &len);
        assert_int_equal(len, 9);
        free(got);
        free(cf), free(cl), free(ch), free(cs);
        free(src), free(sub), free(file), free(slink), free(hard);
        fx_free(&f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_dotdot),
                cmocka_unit_test(test_absolute),
                cmocka_unit_test(test_outside_top),
                cmocka_unit_test(test_through_sent_symlink),
                cmocka_unit_test(test_through_existing_symlink),
                cmocka_unit_test(test_file_over_symlink),
                cmocka_unit_test(test_hardlink_out),
                cmocka_unit_test(test_round_trip),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
