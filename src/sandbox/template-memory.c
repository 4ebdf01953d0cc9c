/* template-memory: a template's memory materialized once per host, in
 * <mem_root>/templates/<id>/memory, which clones map private (copy-on-write) so that its
 * clean pages sit once in the page cache for all of them (docs/sandbox.md "Clones that
 * share memory"). Each clone holds a hard link of it in its own memory directory: that
 * link is what its VMM maps, so the cache's name may go (sweep) while clones run. */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/mem.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_DIR "templates"

static int make_dir(const char *path, struct vmsnap_diag *d)
{
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", path, strerror(errno));
        return 0;
}

/* Links the cached file to dst when it is there with the right size: 1 linked, 0 not there. */
static int link_cached(const char *cache, const char *dst, uint64_t size)
{
        struct stat st;
        unlink(dst); /* left by a spawn that died */
        if (link(cache, dst) < 0)
                return 0;
        if (lstat(dst, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size)
                return 1;
        unlink(dst);
        unlink(cache); /* not what it should be: made again */
        return 0;
}

/* <mem_root>/templates/<id>/, made when missing (a sweep removes it once empty). */
static int make_cache_dir(struct vmsnap_host *h, const char *template_id, struct vmsnap_diag *d)
{
        char dir[PATH_LEN];
        snprintf(dir, sizeof(dir), "%.3000s/" CACHE_DIR, h->mem_root);
        int r = make_dir(dir, d);
        snprintf(dir, sizeof(dir), "%.3000s/" CACHE_DIR "/%s", h->mem_root, template_id);
        return r < 0 ? r : make_dir(dir, d);
}

int template_memory_link(struct vmsnap_host *h, const char *template_id, uint64_t size,
                         const char *snapdir, const char *dst, struct vmsnap_diag *d)
{
        char cache[PATH_LEN];
        path_template_memory(h, template_id, cache);
        int r = 0;
        for (int attempt = 0; attempt < 3; attempt++) {
                /* again each time: a sweep (another sandbox's destroy) may remove the empty
                 * directory between its making and the materialize's rename into it */
                if ((r = make_cache_dir(h, template_id, d)) < 0)
                        return r;
                if (link_cached(cache, dst, size))
                        return 0;
                /* atomic (temp + rename): a concurrent spawn sees the old file or this one */
                r = vmsnap_mem_materialize(snapdir, cache, NULL, d);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        return r < 0 ? r : vmsnap_diag(d, -EAGAIN, "%s: cannot link the template's memory",
                                       cache);
}

void template_memory_sweep(struct vmsnap_host *h)
{
        char dir[PATH_LEN];
        snprintf(dir, sizeof(dir), "%.3000s/" CACHE_DIR, h->mem_root);
        _cleanup_close_ int fd = vmsnap_fs_open_dir(dir);
        DIR *dh = vmsnap_fs_list_dir(fd);
        if (!dh)
                return;
        struct dirent *e;
        while ((e = readdir(dh))) {
                if (e->d_name[0] == '.')
                        continue;
                char cache[PATH_LEN];
                struct stat st;
                path_template_memory(h, e->d_name, cache);
                /* one link: no clone maps it; a spawn linking it now keeps its own link */
                if (stat(cache, &st) == 0 && st.st_nlink == 1)
                        unlink(cache);
                if (stat(cache, &st) < 0 && errno == ENOENT)
                        unlinkat(fd, e->d_name, AT_REMOVEDIR); /* fails while not empty */
        }
        closedir(dh);
}
