/* Header v2 (ours): magic, version, geometry, build table, extents, XXH3-128 trailer.
 * Layout byte by byte in docs/format.md. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"
#include "util/prefault.h"

#include <errno.h>
#include <string.h>

_Static_assert(HEADER_V2_FIXED == 96 && HEADER_V2_BUILD == 48 && HEADER_V2_EXTENT == 32,
               "header v2 record sizes are part of the on-disk format");

static uint64_t v2_length(uint64_t n_builds, uint64_t n_extents)
{
        return HEADER_V2_FIXED + HEADER_V2_BUILD * n_builds + HEADER_V2_EXTENT * n_extents +
               HEADER_TRAILER;
}

static int check_fixed(const uint8_t *buf, size_t len, const char *name, struct vmsnap_diag *d)
{
        if (len < HEADER_V2_FIXED + HEADER_TRAILER)
                return vmsnap_diag(d, -EBADMSG, "%s: truncated header (%zu bytes)", name, len);
        uint32_t version = get_le32(buf + 8);
        if (version != VMSNAP_MEM_VERSION)
                return vmsnap_diag(d, -EBADMSG, "%s: unsupported header version %u (this vmsnap "
                                   "reads 1 and 2)", name, version);
        if (get_le32(buf + 12) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: unknown header flags 0x%x", name,
                                   get_le32(buf + 12));
        if (get_le32(buf + 76) != 0 || get_le64(buf + 88) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: reserved header fields are not zero", name);
        uint64_t nb = get_le32(buf + 72), ne = get_le64(buf + 80);
        if (nb > VMSNAP_MEM_MAX_BUILDS || ne > VMSNAP_MEM_MAX_EXTENTS)
                return vmsnap_diag(d, -EBADMSG, "%s: %llu builds / %llu extents exceed the caps",
                                   name, (unsigned long long)nb, (unsigned long long)ne);
        if (len != v2_length(nb, ne))
                return vmsnap_diag(d, -EBADMSG, "%s: header is %zu bytes but its counts (%llu "
                                   "builds, %llu extents) need %llu (truncated or padded)",
                                   name, len, (unsigned long long)nb, (unsigned long long)ne,
                                   (unsigned long long)v2_length(nb, ne));
        struct vmsnap_hash want;
        vmsnap_hash128(buf, len - HEADER_TRAILER, &want);
        if (memcmp(want.b, buf + len - HEADER_TRAILER, 16) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: header checksum mismatch (corrupt file)",
                                   name);
        return 0;
}

static int decode_tables(struct vmsnap_mem_header *h, const uint8_t *buf, const char *name,
                         struct vmsnap_diag *d)
{
        const uint8_t *p = buf + HEADER_V2_FIXED;
        for (uint32_t i = 0; i < h->n_builds; i++, p += HEADER_V2_BUILD) {
                memcpy(h->builds[i].id.b, p, 16);
                h->builds[i].file_size = get_le64(p + 16);
                memcpy(h->builds[i].checksum.b, p + 24, 16);
                if (get_le64(p + 40) != 0)
                        return vmsnap_diag(d, -EBADMSG, "%s: build %u reserved field not zero",
                                           name, i);
        }
        for (uint64_t i = 0; i < h->n_extents; i++, p += HEADER_V2_EXTENT) {
                struct vmsnap_mem_extent *e = &h->extents[i];
                e->offset = get_le64(p);
                e->length = get_le64(p + 8);
                e->build = get_le32(p + 16);
                e->storage_offset = get_le64(p + 24);
                if (get_le32(p + 20) != 0 ||
                    (e->build == VMSNAP_MEM_ZERO && e->storage_offset != 0))
                        return vmsnap_diag(d, -EBADMSG, "%s: extent %llu has non-zero reserved "
                                           "or zero-extent storage fields", name,
                                           (unsigned long long)i);
        }
        return 0;
}

int header_parse_v2(const uint8_t *buf, size_t len, const char *name,
                    struct vmsnap_mem_header **ret, struct vmsnap_diag *d)
{
        int r = check_fixed(buf, len, name, d);
        if (r < 0)
                return r;
        struct vmsnap_mem_header *h = calloc(1, sizeof(*h));
        if (!h)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        h->version = 2;
        h->block_size = get_le64(buf + 16);
        h->size = get_le64(buf + 24);
        h->generation = get_le64(buf + 32);
        memcpy(h->build_id.b, buf + 40, 16);
        memcpy(h->base_build_id.b, buf + 56, 16);
        h->n_builds = get_le32(buf + 72);
        h->n_extents = get_le64(buf + 80);
        h->builds = calloc(h->n_builds ? h->n_builds : 1, sizeof(*h->builds));
        h->extents = vmsnap_calloc_big(h->n_extents * sizeof(*h->extents));
        if (!h->builds || !h->extents)
                r = vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        if (r >= 0)
                r = decode_tables(h, buf, name, d);
        if (r >= 0)
                r = vmsnap_mem_header_validate(h, name, d);
        if (r < 0) {
                vmsnap_mem_header_free(h);
                return r;
        }
        *ret = h;
        return 0;
}

static void encode(const struct vmsnap_mem_header *h, uint8_t *buf, size_t len)
{
        memset(buf, 0, len);
        memcpy(buf, HEADER_V2_MAGIC, 8);
        put_le32(buf + 8, VMSNAP_MEM_VERSION);
        put_le64(buf + 16, h->block_size);
        put_le64(buf + 24, h->size);
        put_le64(buf + 32, h->generation);
        memcpy(buf + 40, h->build_id.b, 16);
        memcpy(buf + 56, h->base_build_id.b, 16);
        put_le32(buf + 72, h->n_builds);
        put_le64(buf + 80, h->n_extents);
        uint8_t *p = buf + HEADER_V2_FIXED;
        for (uint32_t i = 0; i < h->n_builds; i++, p += HEADER_V2_BUILD) {
                memcpy(p, h->builds[i].id.b, 16);
                put_le64(p + 16, h->builds[i].file_size);
                memcpy(p + 24, h->builds[i].checksum.b, 16);
        }
        for (uint64_t i = 0; i < h->n_extents; i++, p += HEADER_V2_EXTENT) {
                const struct vmsnap_mem_extent *e = &h->extents[i];
                put_le64(p, e->offset);
                put_le64(p + 8, e->length);
                put_le32(p + 16, e->build);
                put_le64(p + 24, e->build == VMSNAP_MEM_ZERO ? 0 : e->storage_offset);
        }
        struct vmsnap_hash sum;
        vmsnap_hash128(buf, len - HEADER_TRAILER, &sum);
        memcpy(buf + len - HEADER_TRAILER, sum.b, 16);
}

int vmsnap_mem_header_serialize(const struct vmsnap_mem_header *h, uint8_t **ret_buf,
                                size_t *ret_len, struct vmsnap_diag *d)
{
        if (!h || !ret_buf || !ret_len)
                return vmsnap_diag(d, -EINVAL, "header serialize: missing argument");
        struct vmsnap_mem_header v2 = *h;
        v2.version = 2; /* we only write v2, so check the v2 rules */
        for (uint32_t i = 0; i < h->n_builds; i++)
                if (h->builds[i].file_size == UINT64_MAX)
                        return vmsnap_diag(d, -EINVAL, "header serialize: build %u has no known "
                                           "file size", i);
        int r = vmsnap_mem_header_validate(&v2, VMSNAP_MEM_HEADER_NAME " (being written)", d);
        if (r < 0)
                return r;
        size_t len = (size_t)v2_length(h->n_builds, h->n_extents);
        uint8_t *buf = vmsnap_malloc_big(len);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "header serialize: out of memory");
        encode(h, buf, len);
        *ret_buf = buf;
        *ret_len = len;
        return 0;
}
