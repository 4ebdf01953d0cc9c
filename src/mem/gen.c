/* Building one generation: the new diff file, the new extent list and build table, the
 * parent's files brought in, and the commit. Shared by process, diff and merge. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int gen_begin(struct gen_builder *g, int dirfd, const char *dir, uint64_t block_size,
              uint64_t size, const struct vmsnap_mem_header *parent,
              struct vmsnap_mem_result *res, struct vmsnap_diag *d)
{
        memset(g, 0, sizeof(*g));
        g->w.file.fd = -1;
        g->dirfd = dirfd;
        g->dir = dir;
        g->res = res;
        uint32_t n_parent = parent ? parent->n_builds : 0;
        g->h.version = VMSNAP_MEM_VERSION;
        g->h.block_size = block_size;
        g->h.size = size;
        g->h.generation = parent ? parent->generation + 1 : 0;
        vmsnap_uuid_new(&g->h.build_id);
        g->h.base_build_id = parent ? parent->base_build_id : g->h.build_id;
        g->h.builds = calloc(n_parent + 1, sizeof(*g->h.builds));
        if (!g->h.builds)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", dir);
        if (n_parent)
                memcpy(g->h.builds, parent->builds, n_parent * sizeof(*g->h.builds));
        g->new_build = n_parent;
        g->h.builds[n_parent].id = g->h.build_id;
        g->h.n_builds = n_parent + 1;
        /* a diff has about its parent's extents, plus some where new data splits them */
        if (parent && extents_reserve(&g->ext, parent->n_extents + parent->n_extents / 8 +
                                                   1024) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", dir);
        memset(res, 0, sizeof(*res));
        res->generation = g->h.generation;
        res->build_id = g->h.build_id;
        int r = writer_open(&g->w, dirfd, &g->h.build_id, block_size, d);
        return r < 0 ? vmsnap_diag_prefix(d, "%s", dir) : 0;
}

static int add_data(struct gen_builder *g, uint64_t offset, const uint8_t *block,
                    const struct vmsnap_hash *hash, bool copy, struct vmsnap_diag *d)
{
        uint64_t storage = g->w.size;
        int r = copy ? writer_append(&g->w, block, g->h.block_size, hash, d)
                     : writer_append_ref(&g->w, block, g->h.block_size, hash, d);
        if (r < 0)
                return r;
        if (extents_emit(&g->ext, offset, g->h.block_size, g->new_build, storage) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", g->dir);
        g->res->data_blocks++;
        g->res->bytes_written += g->h.block_size;
        return 0;
}

int gen_add_data(struct gen_builder *g, uint64_t offset, const uint8_t *block,
                 const struct vmsnap_hash *hash, struct vmsnap_diag *d)
{
        return add_data(g, offset, block, hash, false, d);
}

int gen_add_data_copy(struct gen_builder *g, uint64_t offset, const uint8_t *block,
                      const struct vmsnap_hash *hash, struct vmsnap_diag *d)
{
        return add_data(g, offset, block, hash, true, d);
}

int gen_flush(struct gen_builder *g, struct vmsnap_diag *d)
{
        return writer_submit(&g->w, d);
}

int gen_add_zero(struct gen_builder *g, uint64_t offset, uint64_t len, struct vmsnap_diag *d)
{
        if (extents_emit(&g->ext, offset, len, VMSNAP_MEM_ZERO, 0) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", g->dir);
        return 0;
}

int gen_add_parent(struct gen_builder *g, const struct vmsnap_mem_header *parent,
                   uint64_t *cursor, uint64_t offset, uint64_t len, struct vmsnap_diag *d)
{
        uint64_t end = offset + len;
        while (offset < end) {
                while (parent->extents[*cursor].offset + parent->extents[*cursor].length <= offset)
                        (*cursor)++;
                const struct vmsnap_mem_extent *e = &parent->extents[*cursor];
                uint64_t shift = offset - e->offset;
                uint64_t n = MIN(end, e->offset + e->length) - offset;
                if (extents_emit(&g->ext, offset, n, e->build, e->storage_offset + shift) < 0)
                        return vmsnap_diag(d, -ENOMEM, "%s: out of memory", g->dir);
                g->res->same_blocks += n / g->h.block_size;
                offset += n;
        }
        return 0;
}

/* Makes the parent's diff file and hash table of every build still referenced (other than
 * the new one) present in our directory: a link (or copy) of the parent's file; for a v1
 * parent, which has no hash tables, the ones computed when it was opened are written. */
static int bring_in_parent_files(struct gen_builder *g, struct vmsnap_mem_snapshot *parent,
                                 struct vmsnap_diag *d)
{
        for (uint32_t i = 0; i < g->h.n_builds; i++) {
                const struct vmsnap_mem_build *b = &g->h.builds[i];
                if (i == g->new_build)
                        continue;
                int p = header_build_index(parent->h, &b->id);
                char name[64], hname[80];
                vmsnap_mem_diff_name(&b->id, name);
                hashes_name(&b->id, hname);
                int r = vmsnap_fs_link_or_copy(parent->dirfd, parent->names[p], g->dirfd,
                                               name, d);
                if (r < 0)
                        return vmsnap_diag_prefix(d, "%s: bringing in %s from %s", g->dir,
                                                  parent->names[p], parent->dir);
                if (parent->h->version >= 2)
                        r = vmsnap_fs_link_or_copy(parent->dirfd, hname, g->dirfd, hname, d);
                else
                        r = hashes_write(g->dirfd, &b->id, g->h.block_size, parent->hashes[p],
                                         b->file_size / g->h.block_size, !g->nosync, d);
                if (r < 0)
                        return vmsnap_diag_prefix(d, "%s", g->dir);
        }
        return 0;
}

int gen_commit(struct gen_builder *g, struct vmsnap_mem_snapshot *parent, const char *op,
               struct vmsnap_diag *d)
{
        g->w.file.nosync = g->nosync;
        int r = writer_finish(&g->w, op, &g->h.builds[g->new_build], d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "%s", g->dir);
        g->h.extents = g->ext.v;
        g->h.n_extents = g->ext.n;
        header_drop_unused_builds(&g->h, g->new_build);
        g->new_build = (uint32_t)header_build_index(&g->h, &g->h.build_id);
        if (parent && (r = bring_in_parent_files(g, parent, d)) < 0)
                return r;
        return commit_header(g->dirfd, g->dir, &g->h, op, g->drop_seed_name, !g->nosync,
                             &g->committed, d);
}

void gen_free(struct gen_builder *g)
{
        if (!g->committed) {
                /* Fresh names nothing refers to: removing them loses nothing. */
                char name[64], hname[80];
                vmsnap_mem_diff_name(&g->h.build_id, name);
                hashes_name(&g->h.build_id, hname);
                unlinkat(g->dirfd, name, 0);
                unlinkat(g->dirfd, hname, 0);
        }
        writer_close(&g->w);
        free(g->h.builds);
        free(g->ext.v);
        g->h.builds = NULL;
        g->ext.v = NULL;
}
