/* The seed system's v1 header (wrenn, E2B before V4): 64-byte metadata + 40-byte entries,
 * no magic, count or checksum. Read only; validated with the v2 structural rules. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <string.h>

#define V1_META  64u
#define V1_ENTRY 40u

/* Finds or appends build id in h's table; returns its index or -ENOMEM/-EBADMSG. */
static int intern_build(struct vmsnap_mem_header *h, const struct vmsnap_uuid *id)
{
        int i = header_build_index(h, id);
        if (i >= 0)
                return i;
        if (h->n_builds >= VMSNAP_MEM_MAX_BUILDS)
                return -EBADMSG;
        struct vmsnap_mem_build *nb = realloc(h->builds, (h->n_builds + 1) * sizeof(*nb));
        if (!nb)
                return -ENOMEM;
        h->builds = nb;
        memset(&nb[h->n_builds], 0, sizeof(*nb));
        nb[h->n_builds].id = *id;
        nb[h->n_builds].file_size = UINT64_MAX; /* known once the file is opened */
        return (int)h->n_builds++;
}

static int parse_entry(struct vmsnap_mem_header *h, const uint8_t *p, uint64_t i,
                       const char *name, struct vmsnap_diag *d)
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
        int b = intern_build(h, &id);
        if (b < 0)
                return vmsnap_diag(d, b == -ENOMEM ? -ENOMEM : -EBADMSG,
                                   "%s: more than %u builds", name, VMSNAP_MEM_MAX_BUILDS);
        e->build = (uint32_t)b;
        return 0;
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
        int r = intern_build(h, &h->build_id);
        h->n_extents = n ? n : 1;
        h->extents = calloc(h->n_extents, sizeof(*h->extents));
        if (r < 0 || !h->extents) {
                vmsnap_mem_header_free(h);
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        }
        if (n == 0) /* the seed's convention: no entries = one extent of the own build */
                h->extents[0] = (struct vmsnap_mem_extent){0, h->size, 0, 0};
        for (uint64_t i = 0; i < n && r >= 0; i++)
                r = parse_entry(h, buf + V1_META + i * V1_ENTRY, i, name, d);
        if (r >= 0)
                r = vmsnap_mem_header_validate(h, name, d);
        if (r < 0) {
                vmsnap_mem_header_free(h);
                return r;
        }
        *ret = h;
        return 0;
}
