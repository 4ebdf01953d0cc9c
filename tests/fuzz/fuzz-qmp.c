/* Fuzz target: the QMP reply parser (outside input: whatever QEMU's monitor socket sends).
 * The input is split into lines as the client's stream reader does; each line is classified
 * for the command with id 1. Any line must be skipped, accepted or refused cleanly, and a
 * refusal always says why. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_line(const char *line, size_t len)
{
        struct vmsnap_diag d = {0};
        json_t *ret = NULL;
        int r = vmm_qmp_parse_reply(line, len, 1, "fuzz", &ret, &d);
        if (r == 1 && !ret)
                abort(); /* an accepted reply has its return value */
        if (r != 1 && ret)
                abort(); /* nothing is handed out otherwise */
        if (r < 0 && (r != -EIO && r != -EPROTO))
                abort();
        if (r < 0 && (d.err != r || !d.msg[0]))
                abort();
        if (r > 1)
                abort();
        json_decref(ret);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *p = (const char *)data, *end = p + size;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
                one_line(p, len);
                p += len + (nl != NULL);
        }
        return 0;
}
