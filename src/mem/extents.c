/* Building extent lists: normalized appends and build-table compaction. */
#include "mem/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <string.h>

static bool joinable(const struct vmsnap_mem_extent *last, uint64_t offset, uint32_t build,
                     uint64_t storage_offset)
{
        if (last->offset + last->length != offset || last->build != build)
                return false;
        /* Same build is not enough: the storage must continue too (seed bug W2). */
        return build == VMSNAP_MEM_ZERO || last->storage_offset + last->length == storage_offset;
}

int extents_reserve(struct extent_list *l, uint64_t n)
{
        if (n <= l->cap)
                return 0;
        struct vmsnap_mem_extent *v = realloc(l->v, n * sizeof(*v));
        if (!v)
                return -ENOMEM;
        vmsnap_prefault(v + l->n, (n - l->n) * sizeof(*v));
        l->v = v;
        l->cap = n;
        return 0;
}

int extents_emit(struct extent_list *l, uint64_t offset, uint64_t length, uint32_t build,
                 uint64_t storage_offset)
{
        if (length == 0)
                return 0;
        if (build == VMSNAP_MEM_ZERO)
                storage_offset = 0;
        if (l->n > 0 && joinable(&l->v[l->n - 1], offset, build, storage_offset)) {
                l->v[l->n - 1].length += length;
                return 0;
        }
        if (l->n == l->cap && extents_reserve(l, l->cap ? l->cap * 2 : 1024) < 0)
                return -ENOMEM;
        l->v[l->n++] = (struct vmsnap_mem_extent){offset, length, build, storage_offset};
        return 0;
}

void header_drop_unused_builds(struct vmsnap_mem_header *h, uint32_t keep)
{
        uint32_t *map = calloc(h->n_builds, sizeof(uint32_t));
        if (!map)
                return; /* leaves unused builds: validation will refuse to write it */
        for (uint64_t i = 0; i < h->n_extents; i++)
                if (h->extents[i].build != VMSNAP_MEM_ZERO)
                        map[h->extents[i].build] = 1;
        map[keep] = 1;
        uint32_t n = 0;
        for (uint32_t i = 0; i < h->n_builds; i++) {
                if (!map[i])
                        continue;
                h->builds[n] = h->builds[i];
                map[i] = n++;
        }
        for (uint64_t i = 0; i < h->n_extents; i++)
                if (h->extents[i].build != VMSNAP_MEM_ZERO)
                        h->extents[i].build = map[h->extents[i].build];
        h->n_builds = n;
        free(map);
}
