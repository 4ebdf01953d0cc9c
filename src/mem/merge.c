/* merge: the whole chain becomes one diff file and a generation-0 header. Extents are
 * walked in address order; each build's file is read front to back through a large window
 * (small extents) or copied in-kernel (long runs), and block hashes move with their blocks,
 * so merge never re-hashes data. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <string.h>

/* Appends one data extent of the old header to the new build. */
static int move_extent(struct gen_builder *g, struct vmsnap_mem_snapshot *s,
                       struct build_stream *streams, const struct vmsnap_mem_extent *e,
                       struct vmsnap_diag *d)
{
        uint64_t bs = s->h->block_size;
        const struct vmsnap_hash *hashes = s->hashes[e->build] + e->storage_offset / bs;
        uint64_t storage = g->w.size;
        int r = 0;
        if (e->length >= COPY_RANGE_MIN || e->length > streams[e->build].cap) {
                r = writer_copy(&g->w, s->fds[e->build], e->storage_offset, e->length, hashes,
                                d);
        } else {
                struct build_stream *st = &streams[e->build];
                int err = 0;
                const uint8_t *p = stream_get(st, e->storage_offset, (size_t)e->length, &err);
                if (!p)
                        return vmsnap_diag(d, err, "%s/%s: cannot read %llu bytes at %llu: %s",
                                           s->dir, s->names[e->build],
                                           (unsigned long long)e->length,
                                           (unsigned long long)e->storage_offset,
                                           strerror(-err));
                r = writer_append(&g->w, p, (size_t)e->length, hashes, d);
        }
        if (r < 0)
                return r;
        if (extents_emit(&g->ext, e->offset, e->length, g->new_build, storage) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", s->dir);
        g->res->data_blocks += e->length / bs;
        g->res->bytes_written += e->length;
        return 0;
}

static int move_all(struct gen_builder *g, struct vmsnap_mem_snapshot *s,
                    struct vmsnap_diag *d)
{
        uint32_t nb = s->h->n_builds;
        struct build_stream *streams = calloc(nb, sizeof(*streams));
        if (!streams)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", s->dir);
        int r = 0;
        size_t win = stream_window_size(nb, s->h->block_size);
        for (uint32_t i = 0; i < nb && r == 0; i++)
                if (stream_init(&streams[i], s->fds[i], win) < 0)
                        r = vmsnap_diag(d, -ENOMEM, "%s: out of memory", s->dir);
        for (uint64_t i = 0; i < s->h->n_extents && r == 0; i++) {
                const struct vmsnap_mem_extent *e = &s->h->extents[i];
                if (e->build == VMSNAP_MEM_ZERO) {
                        g->res->zero_blocks += e->length / s->h->block_size;
                        r = gen_add_zero(g, e->offset, e->length, d);
                } else {
                        r = move_extent(g, s, streams, e, d);
                }
        }
        for (uint32_t i = 0; i < nb; i++)
                stream_free(&streams[i]);
        free(streams);
        return r;
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
