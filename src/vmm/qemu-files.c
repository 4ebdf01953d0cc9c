/* The files a QEMU VM runs from (see qemu-internal.h): the run directory's vmm.json, the
 * kernel and initramfs linked into it, the guest RAM file, and its log. */
#include "vmm/qemu-internal.h"

#include "util/cleanup.h"
#include "util/fs.h"
#include "util/log.h"
#include "vmm/pvh.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int qemu_boot_files_in(const char *dir, struct boot_files *ret, struct vmsnap_diag *d)
{
        if (path_join(ret->kernel, sizeof(ret->kernel), dir, QEMU_KERNEL) < 0 ||
            path_join(ret->initrd, sizeof(ret->initrd), dir, QEMU_INITRD) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", dir);
        return 0;
}

/* run_dir/vmm.json: the machine plus this run's memory file and mapping. */
int qemu_write_run_config(const struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        json_t *o = qemu_machine_to_json(&vm->machine);
        if (o && json_object_update_new(o, json_pack("{s:s, s:b}", "memory_file", vm->memory_file,
                                                     "share", vm->memory_shared)) < 0) {
                json_decref(o);
                o = NULL;
        }
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(vm->run_dir);
        if (dfd < 0) {
                json_decref(o);
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", vm->run_dir, strerror(-dfd));
        }
        return qemu_machine_write_file(dfd, vm->run_dir, o, d);
}

int qemu_read_run_config(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        json_t *o = NULL;
        int r = qemu_machine_read_file(vm->run_dir, &o, d);
        if (r == 0)
                r = qemu_machine_from_json(o, vm->run_dir, &vm->machine, d);
        const char *mem = json_string_value(json_object_get(o, "memory_file"));
        if (r == 0 && (!mem || strlen(mem) >= sizeof(vm->memory_file)))
                r = vmsnap_diag(d, -EBADMSG, "%s/%s: no memory_file", vm->run_dir, QEMU_CONFIG);
        if (r == 0)
                memcpy(vm->memory_file, mem, strlen(mem) + 1);
        vm->memory_shared = json_is_true(json_object_get(o, "share"));
        json_decref(o);
        return r;
}

/* ---- files ----------------------------------------------------------------------------------- */

/* Makes dst_dirfd/name the same file as src_path (hard link, else reflink or copy), replacing
 * an older file of that name atomically. */
int qemu_install_file(const char *src_path, bool follow, int dst_dirfd, const char *name,
                      struct vmsnap_diag *d)
{
        _cleanup_free_ char *dir = strdup(src_path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (!slash)
                return vmsnap_diag(d, -EINVAL, "%s: not an absolute path", src_path);
        *slash = '\0';
        _cleanup_close_ int sfd = vmsnap_fs_open_dir(dir[0] ? dir : "/");
        if (sfd < 0)
                return vmsnap_diag(d, sfd, "%s: cannot open its directory: %s", src_path,
                                   strerror(-sfd));
        _cleanup_close_ int a = openat(sfd, slash + 1,
                                       O_RDONLY | O_NONBLOCK | O_CLOEXEC |
                                           (follow ? 0 : O_NOFOLLOW));
        struct stat st;
        if (a < 0 || fstat(a, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", src_path, strerror(errno));
        if (!S_ISREG(st.st_mode)) /* a FIFO or device a jailed VMM put in its run dir */
                return vmsnap_diag(d, -EPERM, "%s: not a regular file", src_path);
        char self[64]; /* exactly the inode checked, whatever the name points at now */
        snprintf(self, sizeof(self), "/proc/self/fd/%d", a);
        _cleanup_close_ int b = openat(dst_dirfd, name, O_RDONLY | O_CLOEXEC);
        if (b >= 0 && vmsnap_fs_same_file(a, b))
                return 0; /* rename() would do nothing and leave the temporary behind */
        char tmp[300];
        snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
        unlinkat(dst_dirfd, tmp, 0);
        int r = linkat(AT_FDCWD, self, dst_dirfd, tmp, AT_SYMLINK_FOLLOW) == 0
                    ? 0
                    : vmsnap_fs_copy_fd(a, src_path, dst_dirfd, tmp, d);
        if (r < 0) {
                vmsnap_diag_prefix(d, "%s", src_path);
                return r;
        }
        if (renameat(dst_dirfd, tmp, dst_dirfd, name) < 0) {
                r = -errno;
                unlinkat(dst_dirfd, tmp, 0);
                return vmsnap_diag(d, r, "%s: cannot rename into place: %s", name, strerror(-r));
        }
        return 0;
}

const char *qemu_boot_kernel(const char *kernel, char *buf, size_t size)
{
        const char *want = getenv("VMSNAP_PVH");
        if (!want || strcmp(want, "1") != 0)
                return kernel;
        const char *slash = strrchr(kernel, '/');
        int n = slash ? (int)(slash - kernel) : 0;
        if (snprintf(buf, size, "%.*s/vmlinux", n, kernel) >= (int)size)
                return kernel;
        struct vmsnap_diag d = {0};
        uint32_t entry;
        if (vmm_pvh_entry_file(buf, &entry, &d) < 0) {
                vmsnap_log(LOG_LEVEL_WARN, "VMSNAP_PVH=1 but %s: booting %s", d.msg, kernel);
                return kernel;
        }
        vmsnap_log(LOG_LEVEL_DEBUG, "PVH boot: %s (entry 0x%x)", buf, entry);
        return buf;
}

/* Links the kernel and initramfs a VM starts from into its run directory: the VM then
 * depends on nothing outside it, and save() links these very files into the snapshot even
 * when the guest image was rebuilt meanwhile. */
int qemu_install_boot_files(const char *run_dir, const char *kernel, const char *initrd,
                            bool follow, struct vmsnap_diag *d)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(run_dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", run_dir, strerror(-dfd));
        int r = qemu_install_file(kernel, follow, dfd, QEMU_KERNEL, d);
        if (r == 0 && initrd)
                r = qemu_install_file(initrd, follow, dfd, QEMU_INITRD, d);
        return r;
}

/* Creates the memory file of a boot (sparse, the guest's size) or checks an existing one. */
int qemu_prepare_memory_file(const char *path, uint64_t size, bool create, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: memory file: %s", path, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        if (create && st.st_size == 0 && ftruncate(fd, (off_t)size) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot size to %llu bytes: %s", path,
                                   (unsigned long long)size, strerror(errno));
        if (create && st.st_size == 0)
                return 0;
        if ((uint64_t)st.st_size != size)
                return vmsnap_diag(d, -EINVAL, "%s: memory file has %lld bytes, the VM %llu", path,
                                   (long long)st.st_size, (unsigned long long)size);
        return 0;
}

/* The qcow2 header fields read here (docs/vmm.md "Disks"), big-endian. */
#define QCOW2_MAGIC             0x514649fbu /* "QFI\xfb" */
#define QCOW2_INCOMPAT_OFFSET   72          /* version 3 and later */
#define QCOW2_INCOMPAT_DATAFILE (1ull << 2) /* the guest's data lives in an external file */

static uint32_t load32(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return v;
}

int qemu_check_overlay(const char *path, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: disk overlay: %s", path, strerror(errno));
        uint8_t h[QCOW2_INCOMPAT_OFFSET + 8];
        ssize_t n = vmsnap_fs_pread_full(fd, h, sizeof(h), 0);
        if (n < 8 || be32toh(load32(h)) != QCOW2_MAGIC)
                return vmsnap_diag(d, -EBADMSG, "%s: not a qcow2 image", path);
        uint32_t version = be32toh(load32(h + 4));
        if (version < 3)
                return 0; /* version 2 has no feature bits and no external data file */
        if (n < (ssize_t)sizeof(h))
                return vmsnap_diag(d, -EBADMSG, "%s: truncated qcow2 header", path);
        uint64_t incompat;
        memcpy(&incompat, h + QCOW2_INCOMPAT_OFFSET, sizeof(incompat));
        if (be64toh(incompat) & QCOW2_INCOMPAT_DATAFILE)
                return vmsnap_diag(d, -EPERM,
                                   "%s: the qcow2 header names an external data file; a "
                                   "sandbox disk keeps its data in the overlay itself",
                                   path);
        return 0;
}

/* Removes the regular files of a scratch directory we made, then the directory. */
void qemu_remove_scratch(const char *dir)
{
        static const char *const names[] = {QEMU_QMP_SOCK, QEMU_AGENT_SOCK, QEMU_LOG,
                                            QEMU_PIDFILE,  QEMU_CONSOLE,    "memory"};
        char p[PATH_MAX];
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (path_join(p, sizeof(p), dir, names[i]) == 0)
                        unlink(p);
        rmdir(dir);
}

/* The last lines (up to 3) of a log, joined with "|", into out. */
void qemu_log_tail(const char *path, char *out, size_t size)
{
        out[0] = '\0';
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
        if (end <= 0)
                return;
        char buf[2049];
        uint64_t off = end > 2048 ? (uint64_t)end - 2048 : 0;
        ssize_t n = vmsnap_fs_pread_full(fd, buf, sizeof(buf) - 1, off);
        if (n <= 0)
                return;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                n--;
        buf[n] = '\0';
        char *first = buf + n;
        for (int lines = 0; first > buf && lines < 3; lines += *first == '\n')
                first--;
        if (*first == '\n')
                first++;
        for (char *p = first; *p; p++)
                if (*p == '\n')
                        *p = '|';
        size_t len = MIN(strlen(first), size - 1);
        memcpy(out, first, len);
        out[len] = '\0';
}
