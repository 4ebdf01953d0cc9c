/* Fuzz target: the snapshot.json parser (outside input: every import reads one). Any input
 * must be refused cleanly or parsed; a parsed envelope must serialize, and parse back to
 * the same values (the parser is the single definition of valid, for writes too). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_or_abort(const struct store_envelope *a, const struct store_envelope *b)
{
        const struct vmsnap_snapshot *x = &a->rec, *y = &b->rec;
        if (strcmp(x->id, y->id) || strcmp(x->name, y->name) || x->kind != y->kind ||
            strcmp(x->parent_id, y->parent_id) || strcmp(x->template_id, y->template_id) ||
            strcmp(x->vmm, y->vmm) || strcmp(x->vmm_version, y->vmm_version) ||
            x->vcpus != y->vcpus || x->memory != y->memory || x->generation != y->generation ||
            x->created != y->created || strcmp(x->description, y->description) ||
            strcmp(x->labels, y->labels) || a->n_files != b->n_files)
                abort();
        for (size_t i = 0; i < a->n_files; i++)
                if (strcmp(a->files[i].name, b->files[i].name) ||
                    a->files[i].size != b->files[i].size ||
                    memcmp(&a->files[i].checksum, &b->files[i].checksum, 16))
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct store_envelope e, back;
        struct vmsnap_diag d = {0};
        if (store_envelope_parse((const char *)data, size, &e, &d) < 0) {
                if (d.err == 0 || !d.msg[0])
                        abort(); /* a refusal always says why */
                return 0;
        }
        char *text;
        size_t len;
        if (store_envelope_serialize(&e, &text, &len, &d) < 0)
                abort();
        if (store_envelope_parse(text, len, &back, &d) < 0)
                abort();
        same_or_abort(&e, &back);
        store_envelope_clear(&back);
        store_envelope_clear(&e);
        free(text);
        return 0;
}
