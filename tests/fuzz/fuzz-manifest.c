/* Fuzz target: the remote manifest parser (hostile input: anyone who can write the bucket
 * writes manifests). Any input is refused with a message or parsed; a parsed manifest
 * formats and parses back to the same values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <vmsnap/remote.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct vmsnap_remote_manifest m, back;
        struct vmsnap_diag d = {0};
        if (vmsnap_remote_manifest_parse((const char *)data, size, "fuzz", NULL, &m, &d) < 0) {
                if (d.err == 0 || !d.msg[0])
                        abort(); /* a refusal always says why */
                return 0;
        }
        char *text;
        if (vmsnap_remote_manifest_format(&m, &text) < 0)
                abort();
        if (vmsnap_remote_manifest_parse(text, strlen(text), "fuzz", m.id, &back, &d) < 0)
                abort();
        if (back.nfiles != m.nfiles || back.kind != m.kind || back.created != m.created ||
            strcmp(back.name, m.name) || strcmp(back.parent_id, m.parent_id))
                abort();
        for (size_t i = 0; i < m.nfiles; i++)
                if (strcmp(back.files[i].path, m.files[i].path) ||
                    back.files[i].size != m.files[i].size || (m.files[i].nchunks &&
                    memcmp(back.files[i].chunks, m.files[i].chunks,
                           m.files[i].nchunks * sizeof(*m.files[i].chunks))))
                        abort();
        free(text);
        vmsnap_remote_manifest_free(&m);
        vmsnap_remote_manifest_free(&back);
        return 0;
}
