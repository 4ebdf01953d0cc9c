/* The block-mapping header as a value: validation, lookup, naming. Every rule here is
 * enforced both when a header is read and before one is written (docs/format.md). */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vmsnap_mem_header_free(struct vmsnap_mem_header *h)
{
        if (!h)
                return;
        free(h->builds);
        free(h->extents);
        free(h);
}

int header_build_index(const struct vmsnap_mem_header *h, const struct vmsnap_uuid *id)
{
        for (uint32_t i = 0; i < h->n_builds; i++)
                if (memcmp(h->builds[i].id.b, id->b, 16) == 0)
                        return (int)i;
        return -1;
}

void vmsnap_mem_diff_name(const struct vmsnap_uuid *id, char out[64])
{
        char s[37];
        vmsnap_uuid_format(id, s);
        snprintf(out, 64, "memfile.%s", s);
}

static int validate_geometry(const struct vmsnap_mem_header *h, const char *name,
                             struct vmsnap_diag *d)
{
        if (h->block_size != 4096 && h->block_size != (2u << 20))
                return vmsnap_diag(d, -EBADMSG, "%s: block size %llu is not 4096 or 2 MiB",
                                   name, (unsigned long long)h->block_size);
        if (h->size == 0 || h->size % h->block_size != 0)
                return vmsnap_diag(d, -EBADMSG,
                                   "%s: size %llu is not a positive multiple of the block size",
                                   name, (unsigned long long)h->size);
        if (h->size > VMSNAP_MEM_MAX_SIZE)
                return vmsnap_diag(d, -EBADMSG, "%s: size %llu exceeds the 16 TiB cap", name,
                                   (unsigned long long)h->size);
        if (h->n_builds < 1 || h->n_builds > VMSNAP_MEM_MAX_BUILDS)
                return vmsnap_diag(d, -EBADMSG, "%s: %u builds (must be 1 to %u)", name,
                                   h->n_builds, VMSNAP_MEM_MAX_BUILDS);
        if (h->n_extents < 1 || h->n_extents > VMSNAP_MEM_MAX_EXTENTS)
                return vmsnap_diag(d, -EBADMSG, "%s: %llu extents (must be 1 to %llu)", name,
                                   (unsigned long long)h->n_extents, VMSNAP_MEM_MAX_EXTENTS);
        return 0;
}

/* UINT64_MAX marks a v1 build whose file has not been opened yet; in v2 it is a value. */
static bool size_unknown(const struct vmsnap_mem_header *h, uint64_t file_size)
{
        return h->version == 1 && file_size == UINT64_MAX;
}

static int cmp_builds(const void *a, const void *b, void *ctx)
{
        const struct vmsnap_mem_build *v = ctx;
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        __atomic_fetch_add(&mem_build_id_compares, 1, __ATOMIC_RELAXED);
        int c = memcmp(v[x].id.b, v[y].id.b, 16);
        return c ? c : (x > y) - (x < y);
}

/* The first build listed twice, or -1: one sort (O(b log b)), not a lookup per build. */
static int64_t duplicate_build(const struct vmsnap_mem_header *h, int *ret_err)
{
        _cleanup_free_ uint32_t *idx = malloc(h->n_builds * sizeof(*idx));
        if (!idx) {
                *ret_err = -ENOMEM;
                return -1;
        }
        for (uint32_t i = 0; i < h->n_builds; i++)
                idx[i] = i;
        qsort_r(idx, h->n_builds, sizeof(*idx), cmp_builds, h->builds);
        for (uint32_t i = 1; i < h->n_builds; i++)
                if (memcmp(h->builds[idx[i - 1]].id.b, h->builds[idx[i]].id.b, 16) == 0)
                        return idx[i];
        return -1;
}

static int validate_builds(const struct vmsnap_mem_header *h, const char *name,
                           struct vmsnap_diag *d)
{
        if (vmsnap_uuid_is_nil(&h->build_id))
                return vmsnap_diag(d, -EBADMSG, "%s: build id is nil", name);
        if (header_build_index(h, &h->build_id) < 0)
                return vmsnap_diag(d, -EBADMSG, "%s: build id is missing from the build table",
                                   name);
        int err = 0;
        int64_t dup = duplicate_build(h, &err);
        if (err)
                return vmsnap_diag(d, err, "%s: out of memory", name);
        if (dup >= 0)
                return vmsnap_diag(d, -EBADMSG, "%s: build %lld is listed twice", name,
                                   (long long)dup);
        for (uint32_t i = 0; i < h->n_builds; i++) {
                const struct vmsnap_mem_build *b = &h->builds[i];
                if (vmsnap_uuid_is_nil(&b->id))
                        return vmsnap_diag(d, -EBADMSG, "%s: build %u has a nil id", name, i);
                if (!size_unknown(h, b->file_size) && b->file_size % h->block_size != 0)
                        return vmsnap_diag(d, -EBADMSG,
                                           "%s: build %u file size %llu is not block-aligned",
                                           name, i, (unsigned long long)b->file_size);
        }
        return 0;
}

static int validate_extent(const struct vmsnap_mem_header *h, uint64_t i, uint64_t expect_off,
                           const char *name, struct vmsnap_diag *d)
{
        const struct vmsnap_mem_extent *e = &h->extents[i];
        unsigned long long ui = (unsigned long long)i;
        if (e->offset != expect_off)
                return vmsnap_diag(d, -EBADMSG,
                                   "%s: extent %llu starts at %llu, expected %llu (extents must "
                                   "be sorted, contiguous and non-overlapping)",
                                   name, ui, (unsigned long long)e->offset,
                                   (unsigned long long)expect_off);
        if (e->length == 0 || e->length % h->block_size != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: extent %llu has length %llu (not a positive "
                                   "multiple of the block size)", name, ui,
                                   (unsigned long long)e->length);
        if (e->length > h->size - e->offset)
                return vmsnap_diag(d, -EBADMSG, "%s: extent %llu runs past the end of memory",
                                   name, ui);
        if (e->build == VMSNAP_MEM_ZERO)
                return 0;
        if (e->build >= h->n_builds)
                return vmsnap_diag(d, -EBADMSG, "%s: extent %llu names unknown build %u", name,
                                   ui, e->build);
        if (e->storage_offset % h->block_size != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: extent %llu storage offset is not "
                                   "block-aligned", name, ui);
        uint64_t fsize = h->builds[e->build].file_size;
        if (!size_unknown(h, fsize) &&
            (e->storage_offset > fsize || e->length > fsize - e->storage_offset))
                return vmsnap_diag(d, -EBADMSG,
                                   "%s: extent %llu reads [%llu, +%llu) beyond the %llu bytes of "
                                   "its diff file", name, ui,
                                   (unsigned long long)e->storage_offset,
                                   (unsigned long long)e->length, (unsigned long long)fsize);
        return 0;
}

static int validate_extents(const struct vmsnap_mem_header *h, const char *name,
                            struct vmsnap_diag *d)
{
        uint64_t off = 0;
        for (uint64_t i = 0; i < h->n_extents; i++) {
                int r = validate_extent(h, i, off, name, d);
                if (r < 0)
                        return r;
                off += h->extents[i].length;
        }
        if (off != h->size)
                return vmsnap_diag(d, -EBADMSG, "%s: extents cover %llu of %llu bytes", name,
                                   (unsigned long long)off, (unsigned long long)h->size);
        return 0;
}

/* v2 tables list exactly what the generation needs: an unreferenced build (other than the
 * generation's own) would keep a file alive for nothing, and usually means a writer bug. */
static int validate_references(const struct vmsnap_mem_header *h, const char *name,
                               struct vmsnap_diag *d)
{
        _cleanup_free_ bool *used = calloc(h->n_builds, sizeof(bool));
        if (!used)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        for (uint64_t i = 0; i < h->n_extents; i++)
                if (h->extents[i].build != VMSNAP_MEM_ZERO)
                        used[h->extents[i].build] = true;
        int own = header_build_index(h, &h->build_id);
        for (uint32_t i = 0; i < h->n_builds; i++)
                if (!used[i] && (int)i != own)
                        return vmsnap_diag(d, -EBADMSG,
                                           "%s: build %u is in the table but no extent uses it",
                                           name, i);
        return 0;
}

int vmsnap_mem_header_validate(const struct vmsnap_mem_header *h, const char *name,
                               struct vmsnap_diag *d)
{
        if (!h || !name)
                return vmsnap_diag(d, -EINVAL, "header validate: missing argument");
        int r = validate_geometry(h, name, d);
        if (r >= 0)
                r = validate_builds(h, name, d);
        if (r >= 0)
                r = validate_extents(h, name, d);
        if (r >= 0 && h->version >= 2)
                r = validate_references(h, name, d);
        return r;
}

uint64_t vmsnap_mem_header_find(const struct vmsnap_mem_header *h, uint64_t offset)
{
        uint64_t lo = 0, hi = h->n_extents; /* invariant: extents[lo].offset <= offset */
        while (hi - lo > 1) {
                uint64_t mid = lo + (hi - lo) / 2;
                if (h->extents[mid].offset <= offset)
                        lo = mid;
                else
                        hi = mid;
        }
        return lo;
}

int vmsnap_mem_header_parse(const uint8_t *buf, size_t len, const char *name,
                            struct vmsnap_mem_header **ret, struct vmsnap_diag *d)
{
        if (!buf || !name || !ret)
                return vmsnap_diag(d, -EINVAL, "header parse: missing argument");
        if (len >= 8 && memcmp(buf, HEADER_V2_MAGIC, 8) == 0)
                return header_parse_v2(buf, len, name, ret, d);
        if (len >= 1 && buf[0] == 'V')
                return vmsnap_diag(d, -EBADMSG, "%s: not a vmsnap header (bad magic)", name);
        return header_parse_v1(buf, len, name, ret, d);
}
