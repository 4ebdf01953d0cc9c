/* Fuzz target for the qcow2 header reader (src/disk/qcow2.c), which sees every disk overlay
 * an import delivers: any input either fails cleanly with a message, or describes a header
 * that names nothing but (at most) one backing file with an explicit raw format, inside the
 * header cluster, and no external data file. Seeds: tests/fuzz/corpus/qcow2/ (the first KiB
 * of images qemu-img made: canonical overlays, v2, zstd, extended L2, 512-byte clusters,
 * and the refused kinds: external data file, qcow2/probed backing formats, unknown
 * extension, bad compression type, truncated). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <vmsnap/disk.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
        if (!ok)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct vmsnap_qcow2_info q;
        struct vmsnap_diag d = {0};
        int r = vmsnap_qcow2_parse(data, size, "fuzz", &q, &d);
        if (r < 0) {
                check(r == -EBADMSG || r == -ENOMEM);
                check(d.msg[0] != '\0'); /* a refusal always says why */
                return 0;
        }
        check(q.version == 2 || q.version == 3);
        check(q.cluster_bits >= 9 && q.cluster_bits <= 21);
        check(!(q.incompatible & (1ull << 2)) && !(q.incompatible & ~0x19ull));
        if (q.has_backing) {
                check(strcmp(q.backing_format, "raw") == 0);
                check(q.backing_len == strlen(q.backing) && q.backing_len > 0);
                check(q.backing_offset >= q.header_length &&
                      q.backing_offset + q.backing_len <= (1ull << q.cluster_bits));
                for (const char *p = q.backing; *p; p++)
                        check(*p >= 0x20 && *p < 0x7f);
        } else {
                check(q.backing[0] == '\0' && q.backing_format[0] == '\0');
        }
        /* deterministic: the same bytes, the same answer */
        struct vmsnap_qcow2_info again;
        check(vmsnap_qcow2_parse(data, size, "fuzz", &again, NULL) == 0);
        check(again.has_backing == q.has_backing && again.size == q.size &&
              strcmp(again.backing, q.backing) == 0 &&
              strcmp(again.backing_format, q.backing_format) == 0);
        return 0;
}
