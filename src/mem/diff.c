/* diff: the next generation over a parent snapshot. Changed blocks come from one of two
 * sources: a Firecracker Diff file (data regions changed, holes unchanged) or, for VMMs
 * without dirty tracking, a full memory file compared block by block against the parent's
 * recorded hashes (no parent data is read) -- all of it, or only the blocks of a list of
 * pages the caller knows hold every change (vmsnap_mem_diff_pages). A block written to all
 * zeros becomes ZERO: it never falls back to the parent's stale bytes (seed bug W1). */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

struct diff_ctx {
        struct gen_builder g;
        struct vmsnap_mem_snapshot *parent;
        enum vmsnap_mem_source source;
        uint64_t cursor; /* monotonic index into the parent's extents */
        bool defer_sync; /* vmsnap_mem_opts.defer_sync */
        const uint8_t *pages; /* vmsnap_mem_diff_pages: the only pages that may differ */
};

/* The parent's extent holding offset, advancing the cursor. */
static const struct vmsnap_mem_extent *parent_at(struct diff_ctx *c, uint64_t offset)
{
        const struct vmsnap_mem_header *ph = c->parent->h;
        while (ph->extents[c->cursor].offset + ph->extents[c->cursor].length <= offset)
                c->cursor++;
        return &ph->extents[c->cursor];
}

static int on_hole(void *ctx, uint64_t offset, uint64_t len, struct vmsnap_diag *d)
{
        struct diff_ctx *c = ctx;
        /* a hole in a Diff file, or pages not listed: not dirty */
        if (c->source == VMSNAP_MEM_SOURCE_SPARSE || c->pages)
                return gen_add_parent(&c->g, c->parent->h, &c->cursor, offset, len, d);
        /* A hole in a full file reads as zeros: count what changes, map it all ZERO. */
        for (uint64_t off = offset; off < offset + len;) {
                const struct vmsnap_mem_extent *e = parent_at(c, off);
                uint64_t n = MIN(offset + len, e->offset + e->length) - off;
                if (e->build == VMSNAP_MEM_ZERO)
                        c->g.res->same_blocks += n / c->g.h.block_size;
                else
                        c->g.res->zero_blocks += n / c->g.h.block_size;
                off += n;
        }
        return gen_add_zero(&c->g, offset, len, d);
}

/* One block of a full memory file: unchanged (same hash as the parent's block) keeps the
 * parent's mapping; otherwise it is stored (or mapped ZERO when all zeros). */
static int content_block(struct diff_ctx *c, uint64_t offset, const uint8_t *block,
                         struct vmsnap_diag *d)
{
        uint64_t bs = c->g.h.block_size;
        const struct vmsnap_mem_extent *e = parent_at(c, offset);
        bool parent_zero = e->build == VMSNAP_MEM_ZERO;
        if (block_is_zero(block, bs)) {
                if (parent_zero)
                        c->g.res->same_blocks++;
                else
                        c->g.res->zero_blocks++;
                return gen_add_zero(&c->g, offset, bs, d);
        }
        struct vmsnap_hash h;
        vmsnap_hash128(block, bs, &h);
        if (!parent_zero) {
                uint64_t storage = e->storage_offset + (offset - e->offset);
                const struct vmsnap_hash *ph = &c->parent->hashes[e->build][storage / bs];
                if (memcmp(ph->b, h.b, 16) == 0)
                        return gen_add_parent(&c->g, c->parent->h, &c->cursor, offset, bs, d);
        }
        if (c->pages) /* scan_listed_pages reuses its buffer */
                return gen_add_data_copy(&c->g, offset, block, &h, d);
        return gen_add_data(&c->g, offset, block, &h, d);
}

static int on_data(void *ctx, uint64_t offset, const uint8_t *buf, size_t len,
                   struct vmsnap_diag *d)
{
        struct diff_ctx *c = ctx;
        uint64_t bs = c->g.h.block_size;
        c->g.res->bytes_scanned += len;
        for (size_t i = 0; i < len; i += bs) {
                int r;
                if (c->source == VMSNAP_MEM_SOURCE_CONTENT)
                        r = content_block(c, offset + i, buf + i, d);
                else if (block_is_zero(buf + i, bs)) {
                        c->g.res->zero_blocks++;
                        r = gen_add_zero(&c->g, offset + i, bs, d);
                } else
                        r = gen_add_data(&c->g, offset + i, buf + i, NULL, d);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int on_done(void *ctx, struct vmsnap_diag *d)
{
        struct diff_ctx *c = ctx;
        return gen_flush(&c->g, d);
}

/* The target directory must be the parent's own, or hold no snapshot yet. */
static int check_target(int dirfd, const struct vmsnap_mem_snapshot *parent, const char *dir,
                        struct vmsnap_diag *d)
{
        if (vmsnap_fs_same_file(dirfd, parent->dirfd))
                return 0;
        if (faccessat(dirfd, VMSNAP_MEM_HEADER_NAME, F_OK, 0) == 0)
                return vmsnap_diag(d, -EEXIST, "%s: already holds a different memory snapshot",
                                   dir);
        return 0;
}

static int run_diff(struct diff_ctx *c, int in, const char *memfile, uint64_t size, int dirfd,
                    const char *snapdir, struct vmsnap_mem_result *res, struct vmsnap_diag *d)
{
        const struct vmsnap_mem_header *ph = c->parent->h;
        if (size != ph->size)
                return vmsnap_diag(d, -EINVAL, "%s: is %llu bytes but the parent snapshot has "
                                   "%llu bytes of memory", memfile, (unsigned long long)size,
                                   (unsigned long long)ph->size);
        int r = 0;
        if (ph->version < 2) /* seed parent: no hash tables yet; computed once here */
                r = snapshot_compute_hashes(c->parent, d);
        if (r >= 0)
                r = gen_begin(&c->g, dirfd, snapdir, ph->block_size, size, ph, res, d);
        c->g.drop_seed_name = ph->version < 2 && vmsnap_fs_same_file(dirfd, c->parent->dirfd);
        /* in place, the previous generation must stay readable at every step: always synced */
        c->g.nosync = c->defer_sync && !vmsnap_fs_same_file(dirfd, c->parent->dirfd);
        struct scan_visitor v = {.hole = on_hole, .data = on_data, .done = on_done, .ctx = c};
        if (r >= 0 && c->pages)
                r = scan_listed_pages(in, memfile, size, ph->block_size, c->pages, &v, d);
        else if (r >= 0)
                r = scan_memfile(in, memfile, size, ph->block_size, &v, d);
        if (r >= 0)
                r = gen_commit(&c->g, c->parent, "diff", d);
        gen_free(&c->g);
        return r;
}

/* vmsnap_mem_diff, or vmsnap_mem_diff_pages when pages is set. */
static int diff(const char *memfile, const uint8_t *pages, const char *snapdir,
                const char *parentdir, const struct vmsnap_mem_opts *opts,
                struct vmsnap_mem_result *ret, struct vmsnap_diag *d)
{
        if (!memfile || !snapdir || !parentdir)
                return vmsnap_diag(d, -EINVAL, "mem diff: missing argument");
        struct diff_ctx c = {.source = opts ? opts->source : VMSNAP_MEM_SOURCE_CONTENT,
                             .defer_sync = opts && opts->defer_sync,
                             .pages = pages};
        if (pages)
                c.source = VMSNAP_MEM_SOURCE_CONTENT;
        int r = vmsnap_mem_open(parentdir, &c.parent, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "parent");
        uint64_t size;
        _cleanup_close_ int in = open_memfile(memfile, c.parent->h->block_size, &size, d);
        _cleanup_close_ int dirfd = in < 0 ? -1 : open_snapdir_for_write(snapdir, d);
        r = in < 0 ? in : dirfd;
        if (r >= 0)
                r = lock_snapdir(dirfd, snapdir, d);
        if (r >= 0)
                r = check_target(dirfd, c.parent, snapdir, d);
        struct vmsnap_mem_result res;
        if (r >= 0)
                r = run_diff(&c, in, memfile, size, dirfd, snapdir, &res, d);
        vmsnap_mem_close(c.parent);
        unsigned cap = opts && opts->merge_cap ? opts->merge_cap : VMSNAP_MEM_DEFAULT_CAP;
        if (r >= 0 && res.generation >= cap) {
                /* Our lock is released by closing dirfd first (merge takes its own). */
                close(TAKE_FD(dirfd));
                struct vmsnap_mem_result m;
                r = vmsnap_mem_merge(snapdir, &m, d);
                res.merged = r >= 0;
                res.generation = m.generation;
                res.build_id = m.build_id;
        }
        if (r >= 0 && ret)
                *ret = res;
        return r;
}

int vmsnap_mem_diff(const char *memfile, const char *snapdir, const char *parentdir,
                    const struct vmsnap_mem_opts *opts, struct vmsnap_mem_result *ret,
                    struct vmsnap_diag *d)
{
        return diff(memfile, NULL, snapdir, parentdir, opts, ret, d);
}

int vmsnap_mem_diff_pages(const char *memfile, const uint8_t *pages, const char *snapdir,
                          const char *parentdir, const struct vmsnap_mem_opts *opts,
                          struct vmsnap_mem_result *ret, struct vmsnap_diag *d)
{
        if (!pages)
                return vmsnap_diag(d, -EINVAL, "mem diff: missing page list");
        return diff(memfile, pages, snapdir, parentdir, opts, ret, d);
}
