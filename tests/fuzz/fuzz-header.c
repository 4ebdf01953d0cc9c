/* Fuzz target for the memory-snapshot header parser (v2 and the seed's v1): any input either
 * fails cleanly or parses into a header that serializes and parses back to the same value.
 * Seeds: tests/fuzz/corpus/header/ (valid v2 and v1 headers, and broken ones). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <vmsnap/mem.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
        if (!ok)
                abort();
}

static void check_equal(const struct vmsnap_mem_header *a, const struct vmsnap_mem_header *b)
{
        check(a->block_size == b->block_size && a->size == b->size &&
              a->generation == b->generation);
        check(memcmp(a->build_id.b, b->build_id.b, 16) == 0);
        check(memcmp(a->base_build_id.b, b->base_build_id.b, 16) == 0);
        check(a->n_builds == b->n_builds && a->n_extents == b->n_extents);
        for (uint32_t i = 0; i < a->n_builds; i++) {
                check(memcmp(a->builds[i].id.b, b->builds[i].id.b, 16) == 0);
                check(a->builds[i].file_size == b->builds[i].file_size);
                check(memcmp(a->builds[i].checksum.b, b->builds[i].checksum.b, 16) == 0);
        }
        for (uint64_t i = 0; i < a->n_extents; i++) {
                const struct vmsnap_mem_extent *x = &a->extents[i], *y = &b->extents[i];
                check(x->offset == y->offset && x->length == y->length && x->build == y->build &&
                      x->storage_offset == y->storage_offset);
        }
}

/* A parsed v1 header has unknown file sizes; give each build the smallest size its extents
 * need (as opening the directory would, with exactly-sized files). Returns false when no
 * size fits (storage offsets that overflow), which opening would refuse anyway. */
static bool give_v1_sizes(struct vmsnap_mem_header *h)
{
        for (uint32_t i = 0; i < h->n_builds; i++)
                h->builds[i].file_size = 0;
        for (uint64_t i = 0; i < h->n_extents; i++) {
                const struct vmsnap_mem_extent *e = &h->extents[i];
                if (e->build == VMSNAP_MEM_ZERO)
                        continue;
                if (e->storage_offset > UINT64_MAX - e->length)
                        return false;
                uint64_t end = e->storage_offset + e->length;
                if (end > h->builds[e->build].file_size)
                        h->builds[e->build].file_size = end;
        }
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_header *h = NULL, *again = NULL;
        if (vmsnap_mem_header_parse(data, size, "fuzz", &h, &d) < 0) {
                check(h == NULL && d.err < 0 && d.msg[0] != '\0');
                return 0;
        }
        check(h != NULL);
        check(vmsnap_mem_header_validate(h, "fuzz", &d) == 0);
        if (h->version == 1 && !give_v1_sizes(h)) {
                vmsnap_mem_header_free(h);
                return 0;
        }
        uint8_t *buf = NULL, *buf2 = NULL;
        size_t len = 0, len2 = 0;
        /* Whatever parsed (with known sizes) must be writable, and read back the same. */
        check(vmsnap_mem_header_serialize(h, &buf, &len, &d) == 0);
        check(vmsnap_mem_header_parse(buf, len, "fuzz (again)", &again, &d) == 0);
        check(again->version == 2);
        check_equal(h, again);
        /* A v2 input is already canonical: the bytes come back unchanged. */
        if (h->version == 2)
                check(len == size && memcmp(buf, data, size) == 0);
        check(vmsnap_mem_header_serialize(again, &buf2, &len2, &d) == 0);
        check(len2 == len && memcmp(buf2, buf, len) == 0);
        free(buf2);
        free(buf);
        vmsnap_mem_header_free(again);
        vmsnap_mem_header_free(h);
        return 0;
}
