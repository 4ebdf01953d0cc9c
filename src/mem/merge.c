/* merge: the whole chain becomes one diff file and a generation-0 header. Extents are
 * walked in address order, which reads each build's file front to back. Each build's file is
 * mapped read-only and its live blocks are handed to the writer by reference: the writer
 * thread writes them with gathered O_DIRECT writes straight from the page cache, so merge
 * copies no data in user space and reads nothing it does not write. Where the file system
 * shares extents (XFS, btrfs), runs of REFLINK_MIN or more are cloned instead (metadata
 * only). Block hashes move with their blocks, so merge never re-hashes data. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"
#include "util/sys.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

/* One build's diff file, mapped. `mark`/`prev_mark`: how far the writer had been given its
 * blocks at the last two job submissions; below prev_mark the bytes are written, and their
 * pages are dropped from our mapping (the page cache keeps them) so that the peak RSS stays
 * at a few jobs, not the size of the chain. */
struct src_map {
        const uint8_t *base;
        uint64_t size, pos, mark, prev_mark, released;
};

/* The merge's own state: the mapped sources and the writer job count last seen. */
struct merge_ctx {
        struct gen_builder *g;
        struct vmsnap_mem_snapshot *s;
        struct src_map *maps;
        uint64_t jobs_seen;
        bool no_reflink; /* the directory's file system cannot share extents */
        bool cloned;     /* a run was shared (crash point merge.reflink passed) */
};

#define RELEASE_MIN ((uint64_t)4 << 20) /* madvise no more often than this per build */

static int map_sources(struct merge_ctx *m, struct vmsnap_diag *d)
{
        const struct vmsnap_mem_header *h = m->s->h;
        m->maps = calloc(h->n_builds, sizeof(*m->maps));
        if (!m->maps)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", m->s->dir);
        for (uint32_t i = 0; i < h->n_builds; i++) {
                uint64_t size = h->builds[i].file_size;
                if (size == 0)
                        continue; /* no extent can point into it */
                void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, m->s->fds[i], 0);
                if (p == MAP_FAILED)
                        return vmsnap_diag(d, -errno, "%s/%s: cannot map: %s", m->s->dir,
                                           m->s->names[i], strerror(errno));
                madvise(p, (size_t)size, MADV_SEQUENTIAL);
                m->maps[i] = (struct src_map){.base = p, .size = size};
        }
        return 0;
}

static void unmap_sources(struct merge_ctx *m)
{
        for (uint32_t i = 0; m->maps && i < m->s->h->n_builds; i++)
                if (m->maps[i].base)
                        munmap((void *)m->maps[i].base, (size_t)m->maps[i].size);
        free(m->maps);
        m->maps = NULL;
}

/* After each job submission: drops the mapped pages the finished jobs used. */
static void release_written(struct merge_ctx *m)
{
        if (m->g->w.jobs == m->jobs_seen)
                return;
        m->jobs_seen = m->g->w.jobs;
        for (uint32_t i = 0; i < m->s->h->n_builds; i++) {
                struct src_map *sm = &m->maps[i];
                uint64_t upto = sm->prev_mark / 4096 * 4096;
                if (sm->base && upto >= sm->released + RELEASE_MIN) {
                        madvise((void *)(sm->base + sm->released), (size_t)(upto - sm->released),
                                MADV_DONTNEED);
                        sm->released = upto;
                }
                sm->prev_mark = sm->mark;
                sm->mark = sm->pos;
        }
}

/* Appends one data extent of the old header to the new build. */
static int move_extent(struct merge_ctx *m, const struct vmsnap_mem_extent *e,
                       struct vmsnap_diag *d)
{
        struct gen_builder *g = m->g;
        uint64_t bs = m->s->h->block_size;
        struct src_map *sm = &m->maps[e->build];
        if (!sm->base || e->storage_offset + e->length > sm->size) /* checked at open */
                return vmsnap_diag(d, -EBADMSG, "%s/%s: extent beyond the end of the file",
                                   m->s->dir, m->s->names[e->build]);
        const struct vmsnap_hash *hashes = m->s->hashes[e->build] + e->storage_offset / bs;
        uint64_t storage = g->w.size;
        int r = -EOPNOTSUPP;
        if (!m->no_reflink && e->length >= REFLINK_MIN) { /* long run: share, do not copy */
                r = writer_clone(&g->w, m->s->fds[e->build], e->storage_offset, e->length,
                                 hashes, d);
                m->no_reflink = r == -EOPNOTSUPP;
                if (r >= 0 && !m->cloned) {
                        m->cloned = true;
                        vmsnap_crashpoint("merge.reflink");
                }
        }
        if (r == -EOPNOTSUPP)
                r = writer_append_ref(&g->w, sm->base + e->storage_offset, (size_t)e->length,
                                      hashes, d);
        if (r < 0)
                return r;
        sm->pos = e->storage_offset + e->length;
        release_written(m);
        if (extents_emit(&g->ext, e->offset, e->length, g->new_build, storage) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", m->s->dir);
        g->res->data_blocks += e->length / bs;
        g->res->bytes_written += e->length;
        return 0;
}

static int move_all(struct gen_builder *g, struct vmsnap_mem_snapshot *s,
                    struct vmsnap_diag *d)
{
        struct merge_ctx m = {.g = g, .s = s};
        int r = map_sources(&m, d);
        for (uint64_t i = 0; i < s->h->n_extents && r == 0; i++) {
                const struct vmsnap_mem_extent *e = &s->h->extents[i];
                if (e->build == VMSNAP_MEM_ZERO) {
                        g->res->zero_blocks += e->length / s->h->block_size;
                        r = gen_add_zero(g, e->offset, e->length, d);
                } else {
                        r = move_extent(&m, e, d);
                }
        }
        /* The writer still refers to the mappings: everything is written before unmapping. */
        int w = writer_submit(&g->w, d);
        if (w >= 0 && (w = vmsnap_aio_drain(&g->w.aio)) < 0)
                w = vmsnap_diag(d, w, "%s: write failed: %s", g->w.file.name, strerror(-w));
        unmap_sources(&m);
        return r < 0 ? r : w;
}

static int run_merge(struct vmsnap_mem_snapshot *s, struct vmsnap_mem_result *res,
                     struct vmsnap_diag *d)
{
        int r = 0;
        if (s->h->version < 2)
                r = snapshot_compute_hashes(s, d);
        struct gen_builder g;
        if (r >= 0)
                r = gen_begin(&g, s->dirfd, s->dir, s->h->block_size, s->h->size, NULL, res, d);
        if (r < 0)
                return r;
        g.h.generation = 0; /* a new chain: base = this build */
        g.drop_seed_name = s->h->version < 2;
        if ((r = move_all(&g, s, d)) >= 0)
                r = gen_commit(&g, NULL, "merge", d);
        gen_free(&g);
        return r;
}

int vmsnap_mem_merge(const char *snapdir, struct vmsnap_mem_result *ret, struct vmsnap_diag *d)
{
        if (!snapdir)
                return vmsnap_diag(d, -EINVAL, "mem merge: missing argument");
        struct vmsnap_mem_snapshot *s;
        int r = vmsnap_mem_open(snapdir, &s, d);
        if (r < 0)
                return r;
        r = lock_snapdir(s->dirfd, snapdir, d);
        struct vmsnap_mem_result res;
        if (r >= 0)
                r = run_merge(s, &res, d);
        vmsnap_mem_close(s);
        if (r >= 0 && ret)
                *ret = res;
        return r;
}
