/* A snapshot's disk usage and what of it is shared (docs/store.md "Usage"): measured from
 * the directory as it is now, by inode. A child generation hard-links the diff files of the
 * snapshot it stands on (its parent, or the template a sandbox was spawned from), so the
 * same inode in both directories is bytes stored once. */
#include "store/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The inodes of a directory's regular files, to compare with. */
struct inodes {
        ino_t *v;
        size_t n;
        dev_t dev;
};

static int inodes_read(int dirfd, struct inodes *ret)
{
        char **names;
        size_t n;
        struct stat self;
        *ret = (struct inodes){0};
        if (fstat(dirfd, &self) < 0)
                return -errno;
        int r = store_list_names(dirfd, &names, &n);
        if (r < 0)
                return r;
        ret->v = calloc(n ? n : 1, sizeof(*ret->v));
        ret->dev = self.st_dev;
        for (size_t i = 0; ret->v && i < n; i++) {
                struct stat st;
                if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                        ret->v[ret->n++] = st.st_ino;
        }
        store_strv_free(names);
        return ret->v ? 0 : -ENOMEM;
}

static bool inodes_have(const struct inodes *in, const struct stat *st)
{
        for (size_t i = 0; in->v && st->st_dev == in->dev && i < in->n; i++)
                if (in->v[i] == st->st_ino)
                        return true;
        return false;
}

/* The base image under the disk overlay, when there is one (none: base stays ""). */
static void base_usage(struct vmsnap_store *s, int dirfd, const char *id,
                       struct vmsnap_snapshot_usage *u)
{
        struct vmsnap_disk_meta m;
        if (vmsnap_disk_meta_read(dirfd, id, &m, NULL) < 0)
                return;
        _cleanup_close_ int images = vmsnap_disk_images_open(s->root, false, NULL);
        struct stat st;
        if (images < 0 || fstatat(images, m.base, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode))
                return;
        memcpy(u->base, m.base, sizeof(u->base));
        u->base_allocated = (uint64_t)st.st_blocks * 512;
}

int vmsnap_store_usage(struct vmsnap_store *s, const struct vmsnap_snapshot *snap,
                       struct vmsnap_snapshot_usage *ret, struct vmsnap_diag *d)
{
        memset(ret, 0, sizeof(*ret));
        _cleanup_close_ int dirfd = store_open_snapdir(s, snap->id);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s/" STORE_SNAPSHOTS_DIR "/%s: cannot open: %s",
                                   s->root, snap->id, strerror(-dirfd));
        struct inodes parent = {0};
        const char *from = snap->parent_id[0] ? snap->parent_id : snap->template_id;
        if (from[0]) {
                _cleanup_close_ int pfd = store_open_snapdir(s, from);
                if (pfd >= 0 && inodes_read(pfd, &parent) < 0)
                        parent.n = 0;
        }
        char **names;
        size_t n;
        int r = store_list_names(dirfd, &names, &n);
        if (r < 0) {
                free(parent.v);
                return vmsnap_diag(d, r, "%s/" STORE_SNAPSHOTS_DIR "/%s: %s", s->root, snap->id,
                                   strerror(-r));
        }
        struct stat self;
        if (fstat(dirfd, &self) == 0) /* the directory itself, as size_bytes counts it */
                ret->allocated = (uint64_t)self.st_blocks * 512;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                uint64_t bytes = (uint64_t)st.st_blocks * 512;
                ret->allocated += bytes;
                if (st.st_nlink > 1)
                        ret->shared += bytes;
                if (inodes_have(&parent, &st))
                        ret->parent_shared += bytes;
        }
        store_strv_free(names);
        free(parent.v);
        base_usage(s, dirfd, snap->id, ret);
        return 0;
}
