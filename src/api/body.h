/* Request-body parsers of vmsnapd: JSON text → a request struct, or a 400 with a message
 * naming the field. Pure functions (no server, no library state) so the fuzzer
 * (tests/fuzz/fuzz-api-body.c) and the unit tests call them directly. An empty body (or only
 * whitespace) is an empty object; `null` values count as absent; unknown fields are refused
 * so that a typo does not silently fall back to a default. */
#ifndef VMSNAP_API_BODY_H
#define VMSNAP_API_BODY_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/net.h>
#include <vmsnap/store.h>

#include "api/routes.h"

#define API_BODY_MAX         (64u * 1024) /* bytes of a request body */
#define API_VCPUS_MAX        256
#define API_MEMORY_MIB_MAX   (1u << 20) /* 1 TiB */
#define API_EXEC_TIMEOUT_MS  60000u     /* when the request gives none */
#define API_EXEC_TIMEOUT_MAX 86400000u  /* 24 h */
#define API_VMM_NAME_MAX     32

/* POST /v1/sandboxes, POST /v1/snapshots/{ref}/sandboxes. Unset fields are 0 / "". */
struct api_sandbox_body {
        char name[VMSNAP_NAME_MAX + 1];
        char vmm[API_VMM_NAME_MAX + 1];
        char template_ref[API_REF_MAX + 1]; /* "template": spawn instead of boot */
        uint32_t vcpus;
        uint64_t memory; /* bytes (the body says memory_mib) */
        uint32_t idle_timeout;
        bool no_network;                /* "network": "none" */
        bool has_egress;                /* "network": {"egress": ...} */
        struct vmsnap_net_egress egress;
};

/* POST /v1/sandboxes/{ref}/exec: api/exec-body.h. */
struct api_exec_body;

/* POST /v1/sandboxes/{ref}/snapshot. */
struct api_snapshot_body {
        char name[VMSNAP_NAME_MAX + 1];
};

/* POST /v1/snapshots: exactly one of sandbox (make a template from it) or path (import an
 * export from the daemon's host: a tar file or an export directory). */
struct api_snapshot_create_body {
        char sandbox[API_REF_MAX + 1];
        char path[PATH_MAX];
        char name[VMSNAP_NAME_MAX + 1];
        char description[VMSNAP_DESCRIPTION_MAX + 1];
};

/* Each parser returns 0 and fills *ret, or -EBADMSG (the text is not a JSON object) or
 * -EINVAL (a field is unknown, missing, of the wrong type or out of range) with d saying
 * which. `allow_template` says whether the "template" field is accepted. */
int api_parse_sandbox_body(const char *text, size_t len, bool allow_template,
                           struct api_sandbox_body *ret, struct vmsnap_diag *d);
int api_parse_exec_body(const char *text, size_t len, struct api_exec_body *ret,
                        struct vmsnap_diag *d);
int api_parse_snapshot_body(const char *text, size_t len, struct api_snapshot_body *ret,
                            struct vmsnap_diag *d);
int api_parse_snapshot_create_body(const char *text, size_t len,
                                   struct api_snapshot_create_body *ret, struct vmsnap_diag *d);

/* POST /v1/remote/snapshots: the local snapshot to push (required). */
struct api_remote_push_body {
        char snapshot[API_REF_MAX + 1];
};

/* POST /v1/remote/snapshots/{ref}/pull: the local name ("" = the remote one). */
struct api_remote_pull_body {
        char name[VMSNAP_NAME_MAX + 1];
};

#define API_REMOTE_GC_GRACE_DEFAULT 3600u
#define API_REMOTE_GC_GRACE_MAX     (366u * 86400)

/* POST /v1/remote/gc. */
struct api_remote_gc_body {
        uint64_t grace_seconds; /* default API_REMOTE_GC_GRACE_DEFAULT */
        bool dry_run;
};

/* Parsers of the remote routes' bodies (docs/remote.md "REST"); same contract as above. */
int api_parse_remote_push_body(const char *text, size_t len, struct api_remote_push_body *ret,
                               struct vmsnap_diag *d);
int api_parse_remote_pull_body(const char *text, size_t len, struct api_remote_pull_body *ret,
                               struct vmsnap_diag *d);
int api_parse_remote_gc_body(const char *text, size_t len, struct api_remote_gc_body *ret,
                             struct vmsnap_diag *d);

/* Bodies of routes that take none (pause, resume): empty or {}. Returns 0, -EBADMSG or
 * -EINVAL. */
int api_parse_empty_body(const char *text, size_t len, struct vmsnap_diag *d);

#endif
