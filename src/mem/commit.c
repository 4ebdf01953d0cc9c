/* Committing a generation: the header rename is the single commit point; files the new
 * header no longer references are removed only after it is durable. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"
#include "util/sys.h"

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

int open_snapdir_for_write(const char *dir, struct vmsnap_diag *d)
{
        int r = vmsnap_fs_mkdir_private(AT_FDCWD, dir);
        if (r < 0 && r != -EEXIST)
                return vmsnap_diag(d, r, "%s: cannot create directory: %s", dir, strerror(-r));
        int fd = vmsnap_fs_open_dir(dir);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: cannot open directory: %s", dir, strerror(-fd));
        return fd;
}

int lock_snapdir(int dirfd, const char *dir, struct vmsnap_diag *d)
{
        if (flock(dirfd, LOCK_EX | LOCK_NB) == 0)
                return 0;
        if (errno == EWOULDBLOCK)
                return vmsnap_diag(d, -EBUSY, "%s: another vmsnap operation is writing this "
                                   "snapshot; try again when it has finished", dir);
        return vmsnap_diag(d, -errno, "%s: cannot lock: %s", dir, strerror(errno));
}

/* True for names this module owns: memfile, memfile.<uuid>, memfile.<uuid>.hashes, and our
 * temporary files. Everything else in the directory (snapshot.json, snapfile, memfile.ws,
 * rootfs files) belongs to other layers and is never touched here. */
static bool owned_name(const char *name, struct vmsnap_uuid *ret_id, bool *ret_temp)
{
        *ret_temp = strncmp(name, ".memfile", 8) == 0 && strstr(name, ".tmp.") != NULL;
        if (*ret_temp)
                return true;
        if (strcmp(name, SEED_BASE_NAME) == 0) {
                memset(ret_id, 0, sizeof(*ret_id));
                return true;
        }
        if (strncmp(name, "memfile.", 8) != 0 || strlen(name) < 8 + 36)
                return false;
        char id[37];
        memcpy(id, name + 8, 36);
        id[36] = '\0';
        const char *rest = name + 8 + 36;
        if (*rest != '\0' && strcmp(rest, ".hashes") != 0)
                return false;
        return vmsnap_uuid_parse(id, ret_id) == 0;
}

/* The seed's "memfile" may go only when it is the very file now named memfile.<base id>
 * (a v1 snapshot carried forward in place): any other file of that name is not ours. */
static bool seed_name_converted(int dirfd, const struct vmsnap_mem_header *h)
{
        struct stat a, b;
        char name[64];
        if (fstatat(dirfd, SEED_BASE_NAME, &a, AT_SYMLINK_NOFOLLOW) < 0)
                return false;
        for (uint32_t i = 0; i < h->n_builds; i++) {
                vmsnap_mem_diff_name(&h->builds[i].id, name);
                if (fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino &&
                    a.st_dev == b.st_dev)
                        return true;
        }
        return false;
}

static void remove_unreferenced(int dirfd, const struct vmsnap_mem_header *h, bool drop_seed)
{
        int fd = dup(dirfd);
        DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
        if (!dir) {
                if (fd >= 0)
                        close(fd);
                return; /* leftovers are harmless; GC finds them */
        }
        struct dirent *e;
        while ((e = readdir(dir))) {
                struct vmsnap_uuid id;
                bool temp;
                if (!owned_name(e->d_name, &id, &temp))
                        continue;
                if (temp || (vmsnap_uuid_is_nil(&id) ? drop_seed || seed_name_converted(dirfd, h)
                                                      : header_build_index(h, &id) < 0))
                        unlinkat(dirfd, e->d_name, 0);
        }
        closedir(dir);
}

int commit_header(int dirfd, const char *dir, const struct vmsnap_mem_header *h,
                  const char *op, bool drop_seed_name, bool sync, bool *ret_renamed,
                  struct vmsnap_diag *d)
{
        char point[64];
        *ret_renamed = false;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        int r = sync ? vmsnap_fs_fsync_dir(dirfd) : 0; /* the new files' names are durable */
        if (r < 0)
                return vmsnap_diag(d, r, "%s: fsync failed: %s", dir, strerror(-r));
        snprintf(point, sizeof(point), "%s.linked", op);
        vmsnap_crashpoint(point);
        r = vmsnap_mem_header_serialize(h, &buf, &len, d);
        if (r < 0)
                return r;
        r = vmsnap_staged_write(dirfd, VMSNAP_MEM_HEADER_NAME, buf, len, sync, d);
        if (r < 0)
                return r;
        *ret_renamed = true;
        snprintf(point, sizeof(point), "%s.header", op);
        vmsnap_crashpoint(point);
        r = sync ? vmsnap_fs_fsync_dir(dirfd) : 0;
        if (r < 0)
                return vmsnap_diag(d, r, "%s: fsync failed after the header rename: %s", dir,
                                   strerror(-r));
        snprintf(point, sizeof(point), "%s.committed", op);
        vmsnap_crashpoint(point);
        remove_unreferenced(dirfd, h, drop_seed_name);
        snprintf(point, sizeof(point), "%s.cleaned", op);
        vmsnap_crashpoint(point);
        return 0;
}
