/* The seed system's v1 header (wrenn, E2B before V4): 64-byte metadata + 40-byte entries,
 * no magic, count or checksum. Read only; validated with the v2 structural rules.
 *
 * The build table is not stored: it is every distinct build id the entries name, in order
 * of first appearance (the header's own build first). A hostile header may name up to 4096
 * builds over 2^24 entries, so each entry's id is found by binary search in a table of the
 * ids seen so far, kept sorted (O(n log b) comparisons, plus O(b^2) moves for b <= 4096
 * insertions), never by a scan of the build table per entry (n * b). */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define V1_META  64u
#define V1_ENTRY 40u

uint64_t mem_build_id_compares;

/* A build id as two integers (compared as such: any total order will do), and its index in
 * the build table. */
struct id_key {
        uint64_t hi, lo;
        uint32_t build;
};

/* The ids seen so far, sorted. */
struct id_table {
        struct id_key *v;
        uint32_t n;
        uint64_t compares;
};

static struct id_key key_of(const uint8_t *id)
{
        struct id_key k = {0};
        memcpy(&k.hi, id, 8);
        memcpy(&k.lo, id + 8, 8);
        return k;
}

static int key_cmp(const struct id_key *a, const struct id_key *b)
{
        if (a->hi != b->hi)
                return a->hi < b->hi ? -1 : 1;
        return a->lo < b->lo ? -1 : a->lo > b->lo;
}

/* Position of k in t: where it is (*found) or where it would be inserted. */
static uint32_t table_find(struct id_table *t, const struct id_key *k, bool *found)
{
        uint32_t lo = 0, hi = t->n;
        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                int c = key_cmp(&t->v[mid], k);
                t->compares++;
                if (c == 0) {
                        *found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = false;
        return lo;
}

/* The build index of id, adding it to h's table (and to t) the first time it is seen.
 * Returns the index, -EBADMSG past the cap, or -ENOMEM. */
static int intern_build(struct vmsnap_mem_header *h, struct id_table *t, const uint8_t *id)
{
        struct id_key k = key_of(id);
        bool found;
        uint32_t pos = table_find(t, &k, &found);
        if (found)
                return (int)t->v[pos].build;
        if (h->n_builds >= VMSNAP_MEM_MAX_BUILDS)
                return -EBADMSG;
        struct vmsnap_mem_build *nb = realloc(h->builds, (h->n_builds + 1) * sizeof(*nb));
        if (!nb)
                return -ENOMEM;
        h->builds = nb;
        memset(&nb[h->n_builds], 0, sizeof(*nb));
        memcpy(nb[h->n_builds].id.b, id, 16);
        nb[h->n_builds].file_size = UINT64_MAX; /* known once the file is opened */
        memmove(&t->v[pos + 1], &t->v[pos], (t->n - pos) * sizeof(*t->v));
        k.build = h->n_builds;
        t->v[pos] = k;
        t->n++;
        return (int)h->n_builds++;
}

static int parse_entry(struct vmsnap_mem_header *h, struct id_table *t, const uint8_t *p,
                       uint64_t i, const char *name, struct vmsnap_diag *d)
{
        struct vmsnap_mem_extent *e = &h->extents[i];
        struct vmsnap_uuid id;
        memcpy(id.b, p + 16, 16);
        e->offset = get_le64(p);
        e->length = get_le64(p + 8);
        e->storage_offset = get_le64(p + 32);
        if (vmsnap_uuid_is_nil(&id)) {
                e->build = VMSNAP_MEM_ZERO;
                e->storage_offset = 0; /* meaningless for nil entries in v1 */
                return 0;
        }
        int b = intern_build(h, t, id.b);
        if (b < 0)
                return vmsnap_diag(d, b == -ENOMEM ? -ENOMEM : -EBADMSG,
                                   "%s: more than %u builds", name, VMSNAP_MEM_MAX_BUILDS);
        e->build = (uint32_t)b;
        return 0;
}

static int parse_entries(struct vmsnap_mem_header *h, const uint8_t *buf, uint64_t n,
                         const char *name, struct vmsnap_diag *d)
{
        struct id_table t = {.v = malloc((VMSNAP_MEM_MAX_BUILDS + 1) * sizeof(*t.v))};
        if (!t.v)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        int r = intern_build(h, &t, h->build_id.b);
        if (r < 0)
                r = vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        if (n == 0 && r >= 0) /* the seed's convention: no entries = one extent of the own
                                 build */
                h->extents[0] = (struct vmsnap_mem_extent){0, h->size, 0, 0};
        for (uint64_t i = 0; i < n && r >= 0; i++)
                r = parse_entry(h, &t, buf + V1_META + i * V1_ENTRY, i, name, d);
        __atomic_fetch_add(&mem_build_id_compares, t.compares, __ATOMIC_RELAXED);
        free(t.v);
        return r;
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
        int r = h->extents ? parse_entries(h, buf, n, name, d)
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
