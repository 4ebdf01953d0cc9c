/* Fuzz target for vmsnapd's request-body parsers (src/api/body.c): every input goes through
 * each parser; each either refuses it with -EBADMSG/-EINVAL and a message, or returns a
 * request whose every field is within the limits the parser promises. Seeds:
 * tests/fuzz/corpus/api-body/ (valid bodies of each route and near misses). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/body.c"
#include "api/exec-body.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
        if (!ok)
                abort();
}

/* A refusal carries a known errno and a message. */
static void check_refusal(int r, const struct vmsnap_diag *d)
{
        check(r == -EBADMSG || r == -EINVAL || r == -ENOMEM);
        check(d->err == r && d->msg[0] != '\0');
}

static void check_valid_name(const char *name)
{
        check(strlen(name) <= VMSNAP_NAME_MAX);
        check(!name[0] || vmsnap_store_name_valid(name));
}

static void fuzz_sandbox(const char *text, size_t size, bool allow_template)
{
        struct vmsnap_diag d = {0};
        struct api_sandbox_body b;
        int r = api_parse_sandbox_body(text, size, allow_template, &b, &d);
        if (r < 0) {
                check_refusal(r, &d);
                return;
        }
        check_valid_name(b.name);
        check(b.vcpus <= API_VCPUS_MAX);
        check(b.memory % (1u << 20) == 0 && b.memory <= (uint64_t)API_MEMORY_MIB_MAX << 20);
        check(strlen(b.vmm) <= API_VMM_NAME_MAX && strlen(b.template_ref) <= API_REF_MAX);
        check(allow_template || !b.template_ref[0]);
        check(!strchr(b.template_ref, '/'));
}

static void fuzz_exec(const char *text, size_t size)
{
        struct vmsnap_diag d = {0};
        struct api_exec_body b = {0};
        int r = api_parse_exec_body(text, size, &b, &d);
        if (r < 0) {
                check(b.argv == NULL);
                check_refusal(r, &d);
                return;
        }
        check(b.argv && b.argv[0] && b.argv[0][0]);
        check(!b.has_timeout || (b.timeout_ms >= 1 && b.timeout_ms <= API_EXEC_TIMEOUT_MAX));
        check(b.rows >= 1 && b.cols >= 1);
        check(!b.background || (!b.tty && !b.in));
        api_exec_body_clear(&b);
}

static void fuzz_snapshot(const char *text, size_t size)
{
        struct vmsnap_diag d = {0};
        struct api_snapshot_body s;
        int r = api_parse_snapshot_body(text, size, &s, &d);
        if (r < 0)
                check_refusal(r, &d);
        else
                check(s.name[0] && vmsnap_store_name_valid(s.name));

        struct api_snapshot_create_body *c = malloc(sizeof(*c));
        if (!c)
                return;
        vmsnap_diag_clear(&d);
        r = api_parse_snapshot_create_body(text, size, c, &d);
        if (r < 0) {
                check_refusal(r, &d);
        } else {
                check(!c->sandbox[0] != !c->path[0]);
                check(!c->path[0] || c->path[0] == '/');
                check(!c->sandbox[0] || c->name[0]);
                check_valid_name(c->name);
        }
        free(c);
        vmsnap_diag_clear(&d);
        r = api_parse_empty_body(text, size, &d);
        if (r < 0)
                check_refusal(r, &d);
}

/* The remote routes' bodies (docs/remote.md "REST"). */
static void fuzz_remote(const char *text, size_t size)
{
        struct vmsnap_diag d = {0};
        struct api_remote_push_body p;
        int r = api_parse_remote_push_body(text, size, &p, &d);
        if (r < 0)
                check_refusal(r, &d);
        else
                check(p.snapshot[0] && strlen(p.snapshot) <= API_REF_MAX && !strchr(p.snapshot, '/'));
        memset(&d, 0, sizeof(d));
        struct api_remote_pull_body q;
        r = api_parse_remote_pull_body(text, size, &q, &d);
        if (r < 0)
                check_refusal(r, &d);
        else
                check_valid_name(q.name);
        memset(&d, 0, sizeof(d));
        struct api_remote_gc_body g;
        r = api_parse_remote_gc_body(text, size, &g, &d);
        if (r < 0)
                check_refusal(r, &d);
        else
                check(g.grace_seconds <= API_REMOTE_GC_GRACE_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > API_BODY_MAX)
                return 0; /* the server refuses these before parsing */
        /* The server hands the parsers a NUL-terminated buffer; the parsers go by size. */
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        fuzz_sandbox(text, size, true);
        fuzz_sandbox(text, size, false);
        fuzz_exec(text, size);
        fuzz_snapshot(text, size);
        fuzz_remote(text, size);
        free(text);
        return 0;
}
