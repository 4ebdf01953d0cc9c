/* The disk module against real qemu-img images: overlays are made with the canonical backing
 * reference and mode 0600 (what qemu-img and our strict reader both agree on); the qcow2
 * reader refuses every way an image can name another file (external data file, a probed or
 * non-raw backing format, encryption, unknown features and extensions) and every malformed
 * header; a directory's disks are checked against rootfs.meta, legacy absolute references
 * are rewritten only when asked; base images are pinned 0600, never replaced, and a planted
 * file under a base name is refused. Needs qemu-img (skipped without it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmsnap/disk.h>

#include "testlib.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

struct fx {
        char *tmp, *root, *images, *snap; /* root/images, root/snapshots/x */
        char base_name[VMSNAP_BASE_NAME_LEN + 1];
        char *base; /* root/images/<base_name> */
};

static bool have_qemu_img(void)
{
        return system("qemu-img --version >/dev/null 2>&1") == 0;
}

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

static int setup(void **state)
{
        if (!have_qemu_img()) {
                fprintf(stderr, "test-disk: qemu-img is needed (qemu-utils); skipping\n");
                exit(77);
        }
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("disk");
        f->root = test_path(f->tmp, "root");
        f->images = test_path(f->root, "images");
        char *snaps = test_path(f->root, "snapshots");
        f->snap = test_path(snaps, "x");
        mkdir(f->root, 0700);
        mkdir(snaps, 0700);
        mkdir(f->snap, 0700);
        free(snaps);
        /* a base image (1 MiB of pseudo-random data) pinned under its content name */
        char *src = test_path(f->tmp, "rootfs.ext4");
        uint8_t *buf = malloc(1 << 20);
        uint64_t rng = 42;
        test_fill_random(&rng, buf, 1 << 20);
        test_write_file(src, buf, 1 << 20);
        free(buf);
        struct vmsnap_diag d = {0};
        int idir = vmsnap_disk_images_open(f->root, true, &d);
        int sdir = vmsnap_fs_open_dir(f->tmp);
        assert_true(idir >= 0 && sdir >= 0);
        if (vmsnap_disk_pin_base(idir, sdir, "rootfs.ext4", f->base_name, &d) < 0)
                fail_msg("pin: %s", d.msg);
        close(idir);
        close(sdir);
        free(src);
        f->base = test_path(f->images, f->base_name);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        test_rmtree(f->tmp);
        free(f->tmp);
        free(f->root);
        free(f->images);
        free(f->snap);
        free(f->base);
        free(f);
        return 0;
}

static uint8_t *read_head(const char *path, size_t *len)
{
        uint8_t *buf = test_read_file(path, len);
        assert_non_null(buf);
        return buf;
}

static int parse_file(const char *path, struct vmsnap_qcow2_info *q, struct vmsnap_diag *d)
{
        size_t len;
        uint8_t *buf = read_head(path, &len);
        int r = vmsnap_qcow2_parse(buf, len, path, q, d);
        free(buf);
        return r;
}

static void assert_refused(const char *path, const char *needle)
{
        struct vmsnap_qcow2_info q;
        struct vmsnap_diag d = {0};
        int r = parse_file(path, &q, &d);
        if (r != -EBADMSG || !strstr(d.msg, needle))
                fail_msg("%s: got %d '%s', want -EBADMSG '%s'", path, r, d.msg, needle);
}

/* Edits big-endian fields of an image's header in place. */
static void poke(const char *path, size_t off, const void *bytes, size_t n)
{
        int fd = open(path, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
        close(fd);
}

static void test_overlay_create(void **state)
{
        struct fx *f = *state;
        char *ov = test_path(f->snap, "rootfs.qcow2");
        struct vmsnap_diag d = {0};
        mode_t old = umask(0);
        int r = vmsnap_disk_overlay_create(f->base, ov, &d);
        umask(old);
        if (r < 0)
                fail_msg("overlay: %s", d.msg);
        struct stat st;
        assert_int_equal(stat(ov, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        struct vmsnap_qcow2_info q;
        assert_int_equal(parse_file(ov, &q, &d), 0);
        char want[64];
        snprintf(want, sizeof(want), "../../images/%s", f->base_name);
        assert_string_equal(q.backing, want);
        assert_string_equal(q.backing_format, "raw");
        assert_int_equal(q.size, 1 << 20);
        /* qemu-img follows it (from the snapshot directory) to the very pinned file */
        run("qemu-img compare -q '%s' '%s'", ov, f->base);
        /* not a pinned base: named as given (and refused by an import's check) */
        unlink(ov);
        assert_int_equal(vmsnap_disk_overlay_create(f->base, ov, &d), 0);
        char *other = test_path(f->tmp, "rootfs.ext4");
        assert_int_equal(vmsnap_disk_overlay_create(other, ov, &d), 0);
        assert_int_equal(parse_file(ov, &q, &d), 0);
        assert_string_equal(q.backing, other);
        free(other);
        free(ov);
}

static void test_qcow2_refusals(void **state)
{
        struct fx *f = *state;
        char *p = test_path(f->tmp, "t.qcow2");
        struct vmsnap_qcow2_info q;
        struct vmsnap_diag d = {0};
        /* the attack: a backing file naming a host file parses (the name is policy, below) */
        run("qemu-img create -q -f qcow2 -u -F raw -b /etc/shadow '%s' 1M", p);
        assert_int_equal(parse_file(p, &q, &d), 0);
        assert_string_equal(q.backing, "/etc/shadow");
        /* an external data file names another file: refused */
        char *data = test_path(f->tmp, "data.raw");
        run("qemu-img create -q -f qcow2 -o data_file='%s' '%s' 1M", data, p);
        assert_refused(p, "external data file");
        /* the data file name extension alone (feature bit cleared) is refused too */
        uint8_t zero8[8] = {0};
        poke(p, 72, zero8, 8);
        assert_refused(p, "external data file");
        /* backing formats: none (probed), qcow2 */
        run("qemu-img create -q -f qcow2 -u -F raw -b x '%s' 1M && qemu-img rebase -q -u -b x "
            "-F qcow2 '%s'", p, p);
        assert_refused(p, "backing format is 'qcow2'");
        run("rm -f '%s' && qemu-img create -q -f qcow2 '%s' 1M", p, p);
        assert_int_equal(parse_file(p, &q, &d), 0);
        assert_false(q.has_backing);
        /* an unknown incompatible feature, the corrupt bit, encryption, internal snapshots */
        uint8_t bit5[8] = {0, 0, 0, 0, 0, 0, 0, 0x20}, corrupt[8] = {0, 0, 0, 0, 0, 0, 0, 2};
        uint8_t one[4] = {0, 0, 0, 1};
        poke(p, 72, bit5, 8);
        assert_refused(p, "unknown incompatible features 0x20");
        poke(p, 72, corrupt, 8);
        assert_refused(p, "corrupt");
        poke(p, 72, zero8, 8);
        poke(p, 32, one, 4);
        assert_refused(p, "encrypted");
        run("rm -f '%s' && qemu-img create -q -f qcow2 '%s' 1M", p, p);
        poke(p, 60, one, 4);
        assert_refused(p, "internal snapshots");
        /* an unknown header extension in place of the feature table */
        run("rm -f '%s' && qemu-img create -q -f qcow2 '%s' 1M", p, p);
        uint8_t ext[4] = {0x12, 0x34, 0x56, 0x78};
        size_t len;
        uint8_t *buf = read_head(p, &len);
        size_t hl = (size_t)buf[100] << 24 | buf[101] << 16 | buf[102] << 8 | buf[103];
        free(buf);
        poke(p, hl, ext, 4);
        assert_refused(p, "unknown header extension 0x12345678");
        /* a backing name outside the header cluster, or overlapping the header */
        run("rm -f '%s' && qemu-img create -q -f qcow2 -u -F raw -b x '%s' 1M", p, p);
        uint8_t far[8] = {0, 0, 0, 0, 0, 0x01, 0, 0}, low[8] = {0, 0, 0, 0, 0, 0, 0, 8};
        poke(p, 8, far, 8);
        assert_refused(p, "not inside the header cluster");
        poke(p, 8, low, 8);
        assert_refused(p, "not inside the header cluster");
        /* truncated, wrong magic, wrong version, bad cluster_bits */
        buf = read_head(p, &len);
        assert_int_equal(vmsnap_qcow2_parse(buf, 50, "short", &q, &d), -EBADMSG);
        buf[0] = 'X';
        assert_int_equal(vmsnap_qcow2_parse(buf, len, "magic", &q, &d), -EBADMSG);
        buf[0] = 'Q';
        buf[7] = 4;
        assert_int_equal(vmsnap_qcow2_parse(buf, len, "version", &q, &d), -EBADMSG);
        buf[7] = 3;
        buf[23] = 30;
        assert_int_equal(vmsnap_qcow2_parse(buf, len, "cluster", &q, &d), -EBADMSG);
        free(buf);
        /* version 2 (compat=0.10) images are read */
        run("rm -f '%s' && qemu-img create -q -f qcow2 -o compat=0.10 -u -F raw -b x '%s' 1M", p,
            p);
        assert_int_equal(parse_file(p, &q, &d), 0);
        assert_int_equal(q.version, 2);
        assert_string_equal(q.backing, "x");
        free(data);
        free(p);
}

static void write_meta_text(const char *dir, const char *text)
{
        char *p = test_path(dir, "rootfs.meta");
        test_write_file(p, text, strlen(text));
        free(p);
}

static int check(struct fx *f, unsigned flags, unsigned *rewrote, struct vmsnap_diag *d)
{
        int fd = vmsnap_fs_open_dir(f->snap);
        assert_true(fd >= 0);
        struct vmsnap_disk_meta m;
        bool has;
        int r = vmsnap_disk_check_dir(fd, f->snap, flags, &m, &has, rewrote, d);
        close(fd);
        return r;
}

static void test_check_dir(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        unsigned rw = 0;
        char *ov = test_path(f->snap, "rootfs.qcow2"), *raw = test_path(f->snap, "rootfs.raw");
        assert_int_equal(vmsnap_disk_overlay_create(f->base, ov, &d), 0);
        /* no rootfs.meta: which base is unknown */
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "rootfs.meta"));
        assert_int_equal(vmsnap_disk_write_meta(f->snap, f->base, "qcow2", &d), 0);
        assert_int_equal(check(f, 0, &rw, &d), 0);
        /* meta naming a host file, or not a base image, or another format */
        write_meta_text(f->snap, "{\"base\":\"/etc/shadow\",\"format\":\"qcow2\"}");
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        write_meta_text(f->snap, "{\"base\":\"../rootfs-0123456789abcdef.ext4\",\"format\":"
                                 "\"qcow2\"}");
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        write_meta_text(f->snap, "{\"base\":\"rootfs-0123456789abcdef.ext4\",\"format\":\"vmdk\"}");
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        /* the overlay names another base than the meta */
        write_meta_text(f->snap, "{\"base\":\"rootfs-0123456789abcdef.ext4\",\"format\":\"qcow2\"}");
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "names backing file"));
        /* the attack: a backing file naming a host file */
        assert_int_equal(vmsnap_disk_write_meta(f->snap, f->base, "qcow2", &d), 0);
        run("qemu-img rebase -q -u -F raw -b /etc/shadow '%s'", ov);
        assert_int_equal(check(f, VMSNAP_DISK_NORMALIZE, &rw, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "'/etc/shadow'"));
        /* legacy absolute references: refused unless normalizing, then rewritten */
        char legacy[4096];
        snprintf(legacy, sizeof(legacy), "/var/lib/vmsnap/images/%s", f->base_name);
        run("qemu-img rebase -q -u -F raw -b '%s' '%s'", legacy, ov);
        char text[4200];
        snprintf(text, sizeof(text), "{\"base\":\"%s\",\"format\":\"qcow2\"}", legacy);
        write_meta_text(f->snap, text);
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "absolute path"));
        assert_int_equal(check(f, VMSNAP_DISK_NORMALIZE, &rw, &d), 0);
        assert_int_equal(rw, VMSNAP_DISK_REWROTE_META | VMSNAP_DISK_REWROTE_OVERLAY);
        assert_int_equal(check(f, 0, &rw, &d), 0); /* canonical now */
        assert_int_equal(rw, 0);
        run("qemu-img check -q '%s'", ov);     /* still a sound image for QEMU */
        /* a legacy path to another image directory's file of the same name is no base */
        run("qemu-img rebase -q -u -F raw -b '/etc/%s' '%s'", f->base_name, ov);
        assert_int_equal(check(f, VMSNAP_DISK_NORMALIZE, &rw, &d), -EBADMSG);
        unlink(ov);
        /* a raw disk that starts like an image format with a backing file */
        run("qemu-img create -q -f qcow2 -u -F raw -b /etc/shadow '%s' 1M", raw);
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "qcow2"));
        uint8_t block[4096] = {1, 2, 3};
        test_write_file(raw, block, sizeof(block));
        assert_int_equal(check(f, 0, &rw, &d), 0);
        /* a symlink in place of a disk is refused, never followed */
        unlink(raw);
        assert_int_equal(symlink(f->base, raw), 0);
        assert_int_equal(check(f, 0, &rw, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "symlink"));
        free(ov);
        free(raw);
}

static void test_pin_base(void **state)
{
        struct fx *f = *state;
        struct stat st;
        assert_int_equal(stat(f->base, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(stat(f->images, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
        struct vmsnap_diag d = {0};
        int idir = vmsnap_disk_images_open(f->root, false, &d);
        int sdir = vmsnap_fs_open_dir(f->tmp);
        char name[VMSNAP_BASE_NAME_LEN + 1];
        /* again: the same content is fine */
        assert_int_equal(vmsnap_disk_pin_base(idir, sdir, "rootfs.ext4", name, &d), 0);
        assert_string_equal(name, f->base_name);
        /* a planted file under that name (another content) is never used */
        char *src = test_path(f->tmp, "rootfs.ext4");
        size_t len;
        uint8_t *buf = test_read_file(src, &len);
        unlink(f->base);
        buf[len - 1] ^= 0xff;
        test_write_file(f->base, buf, len);
        assert_int_equal(vmsnap_disk_pin_base(idir, sdir, "rootfs.ext4", name, &d), -EEXIST);
        assert_non_null(strstr(d.msg, "different image"));
        /* shared with a group for the jails: 0640 */
        assert_int_equal(vmsnap_disk_image_share(idir, f->base_name, 4242, &d), 0);
        assert_int_equal(stat(f->base, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0640);
        assert_int_equal(st.st_gid, 4242);
        assert_int_equal(vmsnap_disk_image_share(idir, "../x", 4242, &d), -EINVAL);
        free(buf);
        free(src);
        close(idir);
        close(sdir);
}

static void test_names(void **state)
{
        (void)state;
        assert_true(vmsnap_disk_base_name_valid("rootfs-0123456789abcdef.ext4"));
        assert_false(vmsnap_disk_base_name_valid("rootfs-0123456789ABCDEF.ext4"));
        assert_false(vmsnap_disk_base_name_valid("rootfs-0123456789abcde.ext4"));
        assert_false(vmsnap_disk_base_name_valid("rootfs-0123456789abcdef.ext4/"));
        assert_false(vmsnap_disk_base_name_valid("../rootfs-0123456789abcdef.ext4"));
        assert_false(vmsnap_disk_base_name_valid(NULL));
        char ref[64];
        assert_int_equal(vmsnap_disk_backing_ref("rootfs-0123456789abcdef.ext4", ref, sizeof(ref)),
                         0);
        assert_string_equal(ref, "../../images/rootfs-0123456789abcdef.ext4");
        assert_int_equal(vmsnap_disk_backing_ref("/etc/shadow", ref, sizeof(ref)), -EINVAL);
        struct vmsnap_disk_meta m;
        struct vmsnap_diag d = {0};
        const char *ok = "{\"base\":\"rootfs-0123456789abcdef.ext4\",\"format\":\"raw\"}";
        assert_int_equal(vmsnap_disk_meta_parse(ok, strlen(ok), "m", &m, &d), 0);
        assert_false(m.legacy);
        const char *dup = "{\"base\":\"rootfs-0123456789abcdef.ext4\",\"base\":\"x\",\"format\":"
                          "\"raw\"}";
        assert_int_equal(vmsnap_disk_meta_parse(dup, strlen(dup), "m", &m, &d), -EBADMSG);
        const char nul[] = "{\"base\":\"rootfs-0123456789abcdef.ext4\\u0000x\",\"format\":\"raw\"}";
        assert_int_equal(vmsnap_disk_meta_parse(nul, strlen(nul), "m", &m, &d), -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_overlay_create, setup, teardown),
            cmocka_unit_test_setup_teardown(test_qcow2_refusals, setup, teardown),
            cmocka_unit_test_setup_teardown(test_check_dir, setup, teardown),
            cmocka_unit_test_setup_teardown(test_pin_base, setup, teardown),
            cmocka_unit_test(test_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
