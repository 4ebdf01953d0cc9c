/* A small, strict reader of qcow2 headers, for overlays that arrive from outside (imports):
 * the first cluster only (header, header extensions, backing file name), every field
 * checked, and anything that could make QEMU (or a tool) open another file refused: an
 * external data file, encryption, unknown incompatible features or header extensions, a
 * backing format other than raw. Whether the backing name itself is acceptable is the
 * caller's policy (disk/policy.c). Layout: QEMU docs/interop/qcow2.txt; rules:
 * docs/format.md "Disk overlays". Fuzzed by tests/fuzz/fuzz-qcow2.c. */
#include <vmsnap/disk.h>

#include "util/cleanup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define QCOW2_MAGIC         "QFI\xfb"
#define V2_HEADER_LENGTH    72u
#define V3_HEADER_MIN       104u
#define MIN_CLUSTER_BITS    9u
#define MAX_CLUSTER_BITS    21u
#define BACKING_NAME_MAX    1023u

#define EXT_END             0x00000000u
#define EXT_BACKING_FORMAT  0xe2792acau
#define EXT_FEATURE_TABLE   0x6803f857u
#define EXT_BITMAPS         0x23852875u
#define EXT_ENCRYPTION      0x0537be77u
#define EXT_DATA_FILE       0x44415441u

#define INCOMPAT_DIRTY       (1ull << 0)
#define INCOMPAT_CORRUPT     (1ull << 1)
#define INCOMPAT_DATA_FILE   (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTENDED_L2 (1ull << 4)
#define AUTOCLEAR_RAW_DATA   (1ull << 1)

#define BAD(d, ...) vmsnap_diag(d, -EBADMSG, __VA_ARGS__)

static uint32_t be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
        return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* The fixed header fields (v2 part, then the v3 additions). */
static int parse_fixed(const uint8_t *c, size_t len, const char *name,
                       struct vmsnap_qcow2_info *q, struct vmsnap_diag *d)
{
        if (len < V2_HEADER_LENGTH || memcmp(c, QCOW2_MAGIC, 4) != 0)
                return BAD(d, "%s: not a qcow2 image (bad magic or shorter than its "
                                          "header)", name);
        q->version = be32(c + 4);
        if (q->version != 2 && q->version != 3)
                return BAD(d, "%s: qcow2 version %u (only 2 and 3 are read)", name,
                           q->version);
        q->backing_offset = be64(c + 8);
        q->backing_len = be32(c + 16);
        q->cluster_bits = be32(c + 20);
        if (q->cluster_bits < MIN_CLUSTER_BITS || q->cluster_bits > MAX_CLUSTER_BITS)
                return BAD(d, "%s: cluster_bits %u out of range %u..%u", name,
                           q->cluster_bits, MIN_CLUSTER_BITS, MAX_CLUSTER_BITS);
        q->size = be64(c + 24);
        if (be32(c + 32) != 0)
                return BAD(d, "%s: encrypted images are refused (crypt_method %u)", name,
                           be32(c + 32));
        if (be32(c + 60) != 0)
                return BAD(d, "%s: %u internal snapshots (vmsnap overlays have none)", name,
                           be32(c + 60));
        q->header_length = V2_HEADER_LENGTH;
        if (q->version == 2)
                return 0;
        if (len < V3_HEADER_MIN)
                return BAD(d, "%s: truncated qcow2 v3 header", name);
        q->incompatible = be64(c + 72);
        q->compatible = be64(c + 80);
        q->autoclear = be64(c + 88);
        q->header_length = be32(c + 100);
        if (q->header_length < V3_HEADER_MIN || q->header_length > (1u << q->cluster_bits))
                return BAD(d, "%s: header_length %u out of range", name, q->header_length);
        return 0;
}

/* Feature bits: only what a plain local overlay can carry. */
static int check_features(const uint8_t *c, const char *name, const struct vmsnap_qcow2_info *q,
                          struct vmsnap_diag *d)
{
        if (q->incompatible & INCOMPAT_DATA_FILE)
                return BAD(d, "%s: refers to an external data file (incompatible "
                                          "feature bit 2): it would name another file", name);
        if (q->incompatible & INCOMPAT_CORRUPT)
                return BAD(d, "%s: is marked corrupt (incompatible feature bit 1)", name);
        uint64_t known = INCOMPAT_DIRTY | INCOMPAT_COMPRESSION | INCOMPAT_EXTENDED_L2;
        if (q->incompatible & ~known)
                return BAD(d, "%s: unknown incompatible features 0x%llx", name,
                           (unsigned long long)(q->incompatible & ~known));
        if (q->autoclear & AUTOCLEAR_RAW_DATA)
                return BAD(d, "%s: the raw external data bit is set (autoclear bit 1)", name);
        if (q->incompatible & INCOMPAT_COMPRESSION) {
                if (q->header_length <= V3_HEADER_MIN || c[104] > 1)
                        return BAD(d, "%s: unknown compression type", name);
        }
        return 0;
}

/* The backing file name, when there is one: inside the first cluster, after the header,
 * 1..1023 bytes of printable characters. */
static int read_backing(const uint8_t *c, uint64_t cluster, const char *name,
                        struct vmsnap_qcow2_info *q, struct vmsnap_diag *d)
{
        if (q->backing_offset == 0) {
                if (q->backing_len != 0)
                        return BAD(d, "%s: backing_file_size %u without a backing file", name,
                                   q->backing_len);
                return 0;
        }
        if (q->backing_len == 0 || q->backing_len > BACKING_NAME_MAX ||
            q->backing_offset < q->header_length || q->backing_offset > cluster ||
            q->backing_len > cluster - q->backing_offset)
                return BAD(d, "%s: backing file name (offset %llu, %u bytes) is not "
                                          "inside the header cluster", name,
                           (unsigned long long)q->backing_offset, q->backing_len);
        for (uint32_t i = 0; i < q->backing_len; i++) {
                uint8_t ch = c[q->backing_offset + i];
                if (ch < 0x20 || ch >= 0x7f)
                        return BAD(d, "%s: backing file name holds byte 0x%02x", name, ch);
        }
        memcpy(q->backing, c + q->backing_offset, q->backing_len);
        q->backing[q->backing_len] = '\0';
        q->has_backing = true;
        return 0;
}

static int check_extension(const uint8_t *p, uint32_t type, uint32_t len, const char *name,
                           struct vmsnap_qcow2_info *q, struct vmsnap_diag *d)
{
        switch (type) {
        case EXT_BACKING_FORMAT:
                if (q->backing_format[0])
                        return BAD(d, "%s: two backing format extensions", name);
                if (len == 0 || len >= sizeof(q->backing_format) || memchr(p, 0, len))
                        return BAD(d, "%s: malformed backing format extension", name);
                memcpy(q->backing_format, p, len);
                q->backing_format[len] = '\0';
                return 0;
        case EXT_FEATURE_TABLE:
        case EXT_BITMAPS:
                return 0;
        case EXT_DATA_FILE:
                return BAD(d, "%s: names an external data file (header extension "
                                          "0x%08x)", name, type);
        case EXT_ENCRYPTION:
                return BAD(d, "%s: carries an encryption header (refused)", name);
        default:
                return BAD(d, "%s: unknown header extension 0x%08x", name, type);
        }
}

/* Header extensions, as QEMU reads them: from the end of the header up to the backing name
 * (or the end of the cluster), until an end marker. */
static int walk_extensions(const uint8_t *c, uint64_t cluster, const char *name,
                           struct vmsnap_qcow2_info *q, struct vmsnap_diag *d)
{
        uint64_t off = q->header_length;
        uint64_t end = q->backing_offset ? q->backing_offset : cluster;
        while (off < end) {
                if (end - off < 8)
                        return BAD(d, "%s: header extension at %llu crosses %llu", name,
                                   (unsigned long long)off, (unsigned long long)end);
                uint32_t type = be32(c + off), len = be32(c + off + 4);
                off += 8;
                if (len > end - off)
                        return BAD(d, "%s: header extension 0x%08x is too large (%u "
                                                  "bytes)", name, type, len);
                if (type == EXT_END)
                        return 0;
                int r = check_extension(c + off, type, len, name, q, d);
                if (r < 0)
                        return r;
                off += ((uint64_t)len + 7) & ~(uint64_t)7;
        }
        return 0;
}

int vmsnap_qcow2_parse(const uint8_t *buf, size_t len, const char *name,
                       struct vmsnap_qcow2_info *ret, struct vmsnap_diag *d)
{
        if (!buf || !name || !ret)
                return vmsnap_diag(d, -EINVAL, "qcow2 parse: missing argument");
        struct vmsnap_qcow2_info q = {0};
        int r = parse_fixed(buf, len, name, &q, d);
        if (r < 0)
                return r;
        /* QEMU reads the first cluster; bytes past the end of a short file read as zeros. */
        uint64_t cluster = 1ull << q.cluster_bits;
        _cleanup_free_ uint8_t *c = calloc(1, cluster);
        if (!c)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        memcpy(c, buf, (size_t)MIN((uint64_t)len, cluster));
        if ((r = check_features(c, name, &q, d)) < 0 ||
            (r = read_backing(c, cluster, name, &q, d)) < 0 ||
            (r = walk_extensions(c, cluster, name, &q, d)) < 0)
                return r;
        if (q.has_backing && strcmp(q.backing_format, "raw") != 0)
                return BAD(d, "%s: backing format is '%s'%s; only an explicit raw "
                                          "backing is accepted (a probed one could be "
                                          "anything)", name, q.backing_format,
                           q.backing_format[0] ? "" : " (none given)");
        if (!q.has_backing && q.backing_format[0])
                return BAD(d, "%s: a backing format without a backing file", name);
        *ret = q;
        return 0;
}
