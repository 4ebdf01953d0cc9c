/* The seed system's v1 header (wrenn, E2B before V4): 64-byte metadata + 40-byte entries,
 * no magic, count or checksum. Read only; validated with the v2 structural rules.
 *
 * The build table is not stored: it is every distinct build id the entries name, in order
 * of first appearance (the header's own build first). A hostile header may name up to 4096
 * builds over 2^24 entries, so the ids are sorted once (O(n log n) comparisons) instead of
 * looking each entry's id up in the table (entries × builds). */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define V1_META  64u
#define V1_ENTRY 40u

uint64_t mem_build_id_compares;

static const uint8_t *entry_id(const uint8_t *buf, uint32_t i)
{
        return buf + V1_META + (size_t)i * V1_ENTRY + 16;
}

/* Orders entry indices by build id, then by index (so each id's first entry leads). */
static int cmp_entries(const void *a, const void *b, void *ctx)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        __atomic_fetch_add(&mem_build_id_compares, 1, __ATOMIC_RELAXED);
        int c = memcmp(entry_id(ctx, x), entry_id(ctx, y), 16);
        return c ? c : (x > y) - (x < y);
}

/* One distinct build id: its first entry, and the build index it gets. */
struct id_group {
        uint32_t first;
        uint32_t build;
};

static int cmp_first(const void *a, const void *b)
{
        const struct id_group *x = a, *y = b;
        return (x->first > y->first) - (x->first < y->first);
}

/* Sorts the indices of the entries that name a build; returns how many there are. */
static int sort_data_entries(const uint8_t *buf, uint32_t n, uint32_t **ret, uint32_t *ret_n)
{
        static const uint8_t nil[16];
        uint32_t *idx = malloc((n ? n : 1) * sizeof(*idx)), k = 0;
        if (!idx)
                return -ENOMEM;
        for (uint32_t i = 0; i < n; i++)
                if (memcmp(entry_id(buf, i), nil, 16) != 0)
                        idx[k++] = i;
        qsort_r(idx, k, sizeof(*idx), cmp_entries, (void *)buf);
        *ret = idx;
        *ret_n = k;
        return 0;
}

/* Builds h's table from the sorted entries: the header's own build is build 0, then each
 * other id in order of its first entry. Sets every data entry's build index. */
static int number_builds(struct vmsnap_mem_header *h, const uint8_t *buf, const uint32_t *idx,
                         uint32_t k, const char *name, struct vmsnap_diag *d)
{
        _cleanup_free_ struct id_group *g = malloc((k ? k : 1) * sizeof(*g));
        _cleanup_free_ uint32_t *group_of = malloc((k ? k : 1) * sizeof(*group_of));
        if (!g || !group_of)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        uint32_t ng = 0, others = 0;
        for (uint32_t j = 0; j < k; j++) {
                if (j == 0 || memcmp(entry_id(buf, idx[j - 1]), entry_id(buf, idx[j]), 16)) {
                        bool own = memcmp(entry_id(buf, idx[j]), h->build_id.b, 16) == 0;
                        g[ng] = (struct id_group){own ? 0 : idx[j], own ? 0 : UINT32_MAX};
                        others += !own;
                        if (others + 1 > VMSNAP_MEM_MAX_BUILDS)
                                return vmsnap_diag(d, -EBADMSG, "%s: more than %u builds", name,
                                                   VMSNAP_MEM_MAX_BUILDS);
                        ng++;
                }
                group_of[j] = ng - 1;
        }
        h->builds = calloc(others + 1, sizeof(*h->builds));
        _cleanup_free_ struct id_group *order = malloc((ng ? ng : 1) * sizeof(*order));
        if (!h->builds || !order)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        h->n_builds = others + 1;
        h->builds[0].id = h->build_id;
        uint32_t no = 0;
        for (uint32_t i = 0; i < ng; i++)
                if (g[i].build == UINT32_MAX)
                        order[no++] = (struct id_group){g[i].first, i};
        qsort(order, no, sizeof(*order), cmp_first);
        for (uint32_t i = 0; i < no; i++) {
                g[order[i].build].build = i + 1;
                memcpy(h->builds[i + 1].id.b, entry_id(buf, order[i].first), 16);
        }
        for (uint32_t i = 0; i < h->n_builds; i++)
                h->builds[i].file_size = UINT64_MAX; /* known once the file is opened */
        for (uint32_t j = 0; j < k; j++)
                h->extents[idx[j]].build = g[group_of[j]].build;
        return 0;
}

/* Reads offsets and lengths of every entry; nil entries become ZERO. */
static void read_entries(struct vmsnap_mem_header *h, const uint8_t *buf, uint32_t n)
{
        static const uint8_t nil[16];
        for (uint32_t i = 0; i < n; i++) {
                const uint8_t *p = buf + V1_META + (size_t)i * V1_ENTRY;
                struct vmsnap_mem_extent *e = &h->extents[i];
                e->offset = get_le64(p);
                e->length = get_le64(p + 8);
                bool zero = memcmp(p + 16, nil, 16) == 0;
                e->build = zero ? VMSNAP_MEM_ZERO : 0; /* data: numbered by number_builds */
                e->storage_offset = zero ? 0 : get_le64(p + 32); /* meaningless for nil */
        }
}

static int parse_body(struct vmsnap_mem_header *h, const uint8_t *buf, uint32_t n,
                      const char *name, struct vmsnap_diag *d)
{
        if (n == 0) { /* the seed's convention: no entries = one extent of the own build */
                h->extents[0] = (struct vmsnap_mem_extent){0, h->size, 0, 0};
                h->builds = calloc(1, sizeof(*h->builds));
                if (!h->builds)
                        return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
                h->n_builds = 1;
                h->builds[0] = (struct vmsnap_mem_build){.id = h->build_id,
                                                         .file_size = UINT64_MAX};
                return 0;
        }
        read_entries(h, buf, n);
        _cleanup_free_ uint32_t *idx = NULL;
        uint32_t k;
        if (sort_data_entries(buf, n, &idx, &k) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        return number_builds(h, buf, idx, k, name, d);
}

int header_parse_v1(const uint8_t *buf, size_t len, const char *name,
                    struct vmsnap_mem_header **ret, struct vmsnap_diag *d)
{
        if (len < V1_META)
                return vmsnap_diag(d, -EBADMSG, "%s: truncated header (%zu bytes, need 64)", name,
                                   len);
        if ((len - V1_META) % V1_ENTRY != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: v1 header ends inside an entry (%zu bytes "
                                   "after the 64-byte metadata)", name, len - V1_META);
        uint64_t n = (len - V1_META) / V1_ENTRY;
        if (n > VMSNAP_MEM_MAX_EXTENTS)
                return vmsnap_diag(d, -EBADMSG, "%s: %llu entries exceed the cap", name,
                                   (unsigned long long)n);
        struct vmsnap_mem_header *h = calloc(1, sizeof(*h));
        if (!h)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        h->version = 1;
        h->block_size = get_le64(buf + 8);
        h->size = get_le64(buf + 16);
        h->generation = get_le64(buf + 24);
        memcpy(h->build_id.b, buf + 32, 16);
        memcpy(h->base_build_id.b, buf + 48, 16);
        h->n_extents = n ? n : 1;
        h->extents = calloc(h->n_extents, sizeof(*h->extents));
        int r = h->extents ? parse_body(h, buf, (uint32_t)n, name, d)
                           : vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        if (r >= 0)
                r = vmsnap_mem_header_validate(h, name, d);
        if (r < 0) {
                vmsnap_mem_header_free(h);
                return r;
        }
        *ret = h;
        return 0;
}
