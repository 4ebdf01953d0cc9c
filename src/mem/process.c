/* process: a full memory file becomes generation 0. All-zero blocks and holes become ZERO
 * extents; every other block is stored once, in address order. */
#include "mem/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

static int on_hole(void *ctx, uint64_t offset, uint64_t len, struct vmsnap_diag *d)
{
        struct gen_builder *g = ctx;
        g->res->zero_blocks += len / g->h.block_size;
        return gen_add_zero(g, offset, len, d);
}

static int on_data(void *ctx, uint64_t offset, const uint8_t *buf, size_t len,
                   struct vmsnap_diag *d)
{
        struct gen_builder *g = ctx;
        uint64_t bs = g->h.block_size;
        g->res->bytes_scanned += len;
        for (size_t i = 0; i < len; i += bs) {
                int r;
                if (block_is_zero(buf + i, bs)) {
                        g->res->zero_blocks++;
                        r = gen_add_zero(g, offset + i, bs, d);
                } else {
                        r = gen_add_data(g, offset + i, buf + i, NULL, d);
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

static int on_done(void *ctx, struct vmsnap_diag *d)
{
        return gen_flush(ctx, d);
}

/* Opens the input memory file and checks its size against the block size. */
int open_memfile(const char *path, uint64_t block_size, uint64_t *ret_size,
                 struct vmsnap_diag *d)
{
        struct stat st;
        int fd = vmsnap_fs_open_input(path, &st);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: cannot open memory file: %s", path,
                                   vmsnap_fs_open_error(fd));
        uint64_t size = (uint64_t)st.st_size;
        if (size == 0 || size % block_size != 0 || size > VMSNAP_MEM_MAX_SIZE) {
                close(fd);
                return vmsnap_diag(d, -EINVAL, "%s: size %llu is not a positive multiple of the "
                                   "block size %llu (or exceeds 16 TiB)", path,
                                   (unsigned long long)size, (unsigned long long)block_size);
        }
        *ret_size = size;
        return fd;
}

/* Refuses a directory that already holds a snapshot: process never replaces one. */
static int check_empty_snapdir(int dirfd, const char *dir, struct vmsnap_diag *d)
{
        if (faccessat(dirfd, VMSNAP_MEM_HEADER_NAME, F_OK, 0) == 0)
                return vmsnap_diag(d, -EEXIST, "%s: already holds a memory snapshot; use "
                                   "`vmsnap mem diff` to add a generation", dir);
        return 0;
}

int vmsnap_mem_process(const char *memfile, const char *snapdir,
                       const struct vmsnap_mem_opts *opts, struct vmsnap_mem_result *ret,
                       struct vmsnap_diag *d)
{
        if (!memfile || !snapdir)
                return vmsnap_diag(d, -EINVAL, "mem process: missing argument");
        uint64_t bs = opts && opts->block_size ? opts->block_size : 4096;
        if (bs != 4096 && bs != (2u << 20))
                return vmsnap_diag(d, -EINVAL, "block size must be 4096 or 2097152, not %llu",
                                   (unsigned long long)bs);
        uint64_t size = 0;
        _cleanup_close_ int in = open_memfile(memfile, bs, &size, d);
        if (in < 0)
                return in;
        _cleanup_close_ int dirfd = open_snapdir_for_write(snapdir, d);
        if (dirfd < 0)
                return dirfd;
        int r = lock_snapdir(dirfd, snapdir, d);
        if (r >= 0)
                r = check_empty_snapdir(dirfd, snapdir, d);
        if (r < 0)
                return r;
        struct vmsnap_mem_result res;
        struct gen_builder g;
        r = gen_begin(&g, dirfd, snapdir, bs, size, NULL, &res, d);
        g.nosync = opts && opts->defer_sync;
        struct scan_visitor v = {.hole = on_hole, .data = on_data, .done = on_done, .ctx = &g};
        if (r >= 0)
                r = scan_memfile(in, memfile, size, bs, &v, d);
        if (r >= 0)
                r = gen_commit(&g, NULL, "process", d);
        gen_free(&g);
        if (r >= 0 && ret)
                *ret = res;
        return r;
}
