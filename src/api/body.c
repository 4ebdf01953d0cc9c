/* Request-body parsers: strict, bounded, allocation-light. jansson parses (duplicate keys
 * refused, NUL in strings refused); these functions check the shape, every field's type
 * and range, and copy into fixed-size request structs. Messages quote at most a short,
 * printable excerpt of what the client sent. */
#include "api/body.h"
#include "api/exec-body.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies at most 48 characters of s into out, printable ASCII only, for messages. */
static const char *excerpt(const char *s, char out[52])
{
        size_t i = 0;
        for (; s[i] && i < 48; i++)
                out[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
        if (s[i]) {
                memcpy(out + i, "...", 3);
                i += 3;
        }
        out[i] = '\0';
        return out;
}

static bool all_space(const char *text, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (!isspace((unsigned char)text[i]))
                        return false;
        return true;
}

/* Parses text as one JSON object (empty text: {}). Returns 0 and *ret, or -EBADMSG. */
static int load_object(const char *text, size_t len, json_t **ret, struct vmsnap_diag *d)
{
        if (len == 0 || all_space(text, len)) {
                *ret = json_object();
                return *ret ? 0 : vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        json_error_t e;
        json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
        if (!j)
                return vmsnap_diag(d, -EBADMSG,
                                   "request body is not valid JSON: %s (line %d, column %d)",
                                   e.text, e.line, e.column);
        if (!json_is_object(j)) {
                json_decref(j);
                return vmsnap_diag(d, -EBADMSG, "request body must be a JSON object");
        }
        *ret = j;
        return 0;
}

/* Refuses any key not in allowed (NULL-terminated); the message lists the known ones. */
static int check_keys(json_t *obj, const char *const *allowed, struct vmsnap_diag *d)
{
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v)
        {
                bool ok = false;
                for (const char *const *a = allowed; *a && !ok; a++)
                        ok = strcmp(*a, key) == 0;
                if (ok)
                        continue;
                char list[256] = "", ex[52];
                for (const char *const *a = allowed; *a; a++) {
                        size_t n = strlen(list);
                        snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", *a);
                }
                return vmsnap_diag(d, -EINVAL, "unknown field '%s' (known fields: %s)",
                                   excerpt(key, ex), list[0] ? list : "none");
        }
        return 0;
}

/* Reads string field key into out (size bytes with the NUL). Returns 1 when present, 0 when
 * absent (missing, null or "" — an error instead when required), or -EINVAL. */
static int get_string(json_t *obj, const char *key, bool required, char *out, size_t size,
                      struct vmsnap_diag *d)
{
        json_t *v = json_object_get(obj, key);
        if (v && !json_is_null(v) && !json_is_string(v))
                return vmsnap_diag(d, -EINVAL, "field '%s' must be a string", key);
        size_t n = v && json_is_string(v) ? json_string_length(v) : 0;
        if (n == 0) {
                if (required)
                        return vmsnap_diag(d, -EINVAL, "field '%s' is required", key);
                return 0;
        }
        if (n >= size)
                return vmsnap_diag(d, -EINVAL, "field '%s' is too long (%zu bytes, at most %zu)",
                                   key, n, size - 1);
        memcpy(out, json_string_value(v), n + 1);
        return 1;
}

/* Reads integer field key in [min, max] into *ret. Returns 1 when present, 0 when absent
 * (missing or null), or -EINVAL. */
static int get_uint(json_t *obj, const char *key, uint64_t min, uint64_t max, uint64_t *ret,
                    struct vmsnap_diag *d)
{
        json_t *v = json_object_get(obj, key);
        if (!v || json_is_null(v))
                return 0;
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (!json_is_integer(v) || x < 0 || (uint64_t)x < min || (uint64_t)x > max)
                return vmsnap_diag(d, -EINVAL, "field '%s' must be an integer from %llu to %llu",
                                   key, (unsigned long long)min, (unsigned long long)max);
        *ret = (uint64_t)x;
        return 1;
}

static int check_name(const char *key, const char *name, struct vmsnap_diag *d)
{
        char ex[52];
        if (!name[0] || vmsnap_store_name_valid(name))
                return 0;
        return vmsnap_diag(d, -EINVAL,
                           "field '%s': '%s' is not a valid name (1-%d letters, digits, '.', "
                           "'_' or '-', starting with a letter or digit, not shaped like an id)",
                           key, excerpt(name, ex), VMSNAP_NAME_MAX);
}

/* A VMM driver name: lowercase letters, digits, '-' and '_'. */
static int check_vmm(const char *vmm, struct vmsnap_diag *d)
{
        char ex[52];
        for (const char *p = vmm; *p; p++)
                if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-' &&
                    *p != '_')
                        return vmsnap_diag(d, -EINVAL,
                                           "field 'vmm': '%s' is not a VMM name (e.g. qemu, "
                                           "firecracker, cloud-hypervisor)",
                                           excerpt(vmm, ex));
        return 0;
}

/* A ref: an id, a name or an id prefix; printable, no '/' (it names a path segment). */
static int check_ref(const char *key, const char *ref, struct vmsnap_diag *d)
{
        char ex[52];
        for (const char *p = ref; *p; p++)
                if (!isgraph((unsigned char)*p) || *p == '/')
                        return vmsnap_diag(d, -EINVAL,
                                           "field '%s': '%s' is not an id, name or id prefix", key,
                                           excerpt(ref, ex));
        return 0;
}

/* "network": "none", or {"egress": "allow" | "deny" | ["CIDR", ...]} (docs/network.md). */
static int parse_network(json_t *v, struct api_sandbox_body *b, struct vmsnap_diag *d)
{
        if (!v)
                return 0;
        if (json_is_string(v) && strcmp(json_string_value(v), "none") == 0) {
                b->no_network = true;
                return 0;
        }
        json_t *eg = json_is_object(v) ? json_object_get(v, "egress") : NULL;
        if (!json_is_object(v) || json_object_size(v) != (eg ? 1u : 0u))
                return vmsnap_diag(d, -EINVAL,
                                   "field 'network': expected \"none\" or {\"egress\": "
                                   "\"allow\" | \"deny\" | [CIDR, ...]}");
        if (!eg)
                return 0;
        b->has_egress = true;
        b->egress = (struct vmsnap_net_egress){.kind = VMSNAP_NET_EGRESS_ALLOW};
        const char *s = json_string_value(eg);
        if (s && (strcmp(s, "allow") == 0 || strcmp(s, "deny") == 0)) {
                b->egress.kind = s[0] == 'd' ? VMSNAP_NET_EGRESS_DENY : VMSNAP_NET_EGRESS_ALLOW;
                return 0;
        }
        if (!json_is_array(eg) || json_array_size(eg) == 0)
                return vmsnap_diag(d, -EINVAL,
                                   "field 'network.egress': expected \"allow\", \"deny\" or a "
                                   "non-empty list of CIDRs");
        size_t i;
        json_t *c;
        json_array_foreach(eg, i, c) {
                if (!json_is_string(c))
                        return vmsnap_diag(d, -EINVAL, "field 'network.egress'[%zu]: not a string",
                                           i);
                int r = vmsnap_net_egress_add(&b->egress, json_string_value(c), d);
                if (r < 0) {
                        vmsnap_diag_prefix(d, "field 'network.egress'[%zu]", i);
                        return -EINVAL;
                }
        }
        return 0;
}

int api_parse_sandbox_body(const char *text, size_t len, bool allow_template,
                           struct api_sandbox_body *ret, struct vmsnap_diag *d)
{
        static const char *const with_template[] = {"name",         "vcpus",    "memory_mib", "vmm",
                                                    "idle_timeout", "template", "network", NULL};
        static const char *const without_template[] = {"name", "vcpus",        "memory_mib",
                                                       "vmm",  "idle_timeout", "network", NULL};
        json_auto_t *obj = NULL;
        int r = load_object(text, len, &obj, d);
        if (r < 0)
                return r;
        const char *const *allowed = allow_template ? with_template : without_template;
        if ((r = check_keys(obj, allowed, d)) < 0)
                return r;

        struct api_sandbox_body b = {0};
        uint64_t vcpus = 0, mib = 0, idle = 0;
        if ((r = get_string(obj, "name", false, b.name, sizeof(b.name), d)) < 0 ||
            (r = check_name("name", b.name, d)) < 0 ||
            (r = get_string(obj, "vmm", false, b.vmm, sizeof(b.vmm), d)) < 0 ||
            (r = check_vmm(b.vmm, d)) < 0 ||
            (r = get_string(obj, "template", false, b.template_ref, sizeof(b.template_ref), d)) <
                    0 ||
            (r = check_ref("template", b.template_ref, d)) < 0 ||
            (r = get_uint(obj, "vcpus", 1, API_VCPUS_MAX, &vcpus, d)) < 0 ||
            (r = get_uint(obj, "memory_mib", 1, API_MEMORY_MIB_MAX, &mib, d)) < 0 ||
            (r = get_uint(obj, "idle_timeout", 0, UINT32_MAX, &idle, d)) < 0 ||
            (r = parse_network(json_object_get(obj, "network"), &b, d)) < 0)
                return r;
        b.vcpus = (uint32_t)vcpus;
        b.memory = mib << 20;
        b.idle_timeout = (uint32_t)idle;
        *ret = b;
        return 0;
}

int api_parse_exec_body(const char *text, size_t len, struct api_exec_body *ret,
                        struct vmsnap_diag *d)
{
        static const char *const allowed[] = {"cmd",        "argv", "argv_b64",  "env",
                                              "cwd",        "timeout_ms", "stdin_b64", "tty",
                                              "rows",       "cols", "background", NULL};
        json_auto_t *obj = NULL;
        int r = load_object(text, len, &obj, d);
        if (r < 0)
                return r;
        if ((r = check_keys(obj, allowed, d)) < 0)
                return r;
        return api_exec_body_from_json(obj, ret, d); /* exec-body.c */
}

int api_parse_snapshot_body(const char *text, size_t len, struct api_snapshot_body *ret,
                            struct vmsnap_diag *d)
{
        static const char *const allowed[] = {"name", NULL};
        json_auto_t *obj = NULL;
        int r = load_object(text, len, &obj, d);
        if (r < 0)
                return r;
        struct api_snapshot_body b = {{0}};
        if ((r = check_keys(obj, allowed, d)) < 0 ||
            (r = get_string(obj, "name", true, b.name, sizeof(b.name), d)) < 0 ||
            (r = check_name("name", b.name, d)) < 0)
                return r;
        *ret = b;
        return 0;
}

static int check_source(const struct api_snapshot_create_body *b, struct vmsnap_diag *d)
{
        if (!b->sandbox[0] && !b->path[0])
                return vmsnap_diag(d, -EINVAL,
                                   "one of the fields 'sandbox' (make a template "
                                   "from it) or 'path' (import) is required");
        if (b->sandbox[0] && b->path[0])
                return vmsnap_diag(d, -EINVAL, "fields 'sandbox' and 'path' exclude each other");
        if (b->sandbox[0] && !b->name[0])
                return vmsnap_diag(d, -EINVAL, "field 'name' is required with 'sandbox'");
        if (b->sandbox[0] && b->description[0])
                return vmsnap_diag(d, -EINVAL, "field 'description' goes with 'path' only");
        if (b->path[0] && b->path[0] != '/')
                return vmsnap_diag(d, -EINVAL,
                                   "field 'path' must be an absolute path on the "
                                   "daemon's host");
        return 0;
}

int api_parse_snapshot_create_body(const char *text, size_t len,
                                   struct api_snapshot_create_body *ret, struct vmsnap_diag *d)
{
        static const char *const allowed[] = {"sandbox", "path", "name", "description", NULL};
        json_auto_t *obj = NULL;
        int r = load_object(text, len, &obj, d);
        if (r < 0)
                return r;
        struct api_snapshot_create_body *b = calloc(1, sizeof(*b));
        if (!b)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        if ((r = check_keys(obj, allowed, d)) < 0 ||
            (r = get_string(obj, "sandbox", false, b->sandbox, sizeof(b->sandbox), d)) < 0 ||
            (r = check_ref("sandbox", b->sandbox, d)) < 0 ||
            (r = get_string(obj, "path", false, b->path, sizeof(b->path), d)) < 0 ||
            (r = get_string(obj, "name", false, b->name, sizeof(b->name), d)) < 0 ||
            (r = check_name("name", b->name, d)) < 0 ||
            (r = get_string(obj, "description", false, b->description, sizeof(b->description), d)) <
                    0 ||
            (r = check_source(b, d)) < 0) {
                free(b);
                return r;
        }
        memcpy(ret, b, sizeof(*b));
        free(b);
        return 0;
}

int api_parse_empty_body(const char *text, size_t len, struct vmsnap_diag *d)
{
        static const char *const allowed[] = {NULL};
        json_auto_t *obj = NULL;
        int r = load_object(text, len, &obj, d);
        if (r < 0)
                return r;
        return check_keys(obj, allowed, d);
}

int api_parse_remote_push_body(const char *text, size_t len, struct api_remote_push_body *ret,
                               struct vmsnap_diag *d)
{
        static const char *const allowed[] = {"snapshot", NULL};
        json_auto_t *obj = NULL;
        struct api_remote_push_body b = {0};
        int r = load_object(text, len, &obj, d);
        if (r == 0)
                r = check_keys(obj, allowed, d);
        if (r == 0)
                r = get_string(obj, "snapshot", true, b.snapshot, sizeof(b.snapshot), d);
        if (r >= 0)
                r = check_ref("snapshot", b.snapshot, d);
        if (r < 0)
                return r;
        *ret = b;
        return 0;
}

int api_parse_remote_pull_body(const char *text, size_t len, struct api_remote_pull_body *ret,
                               struct vmsnap_diag *d)
{
        static const char *const allowed[] = {"name", NULL};
        json_auto_t *obj = NULL;
        struct api_remote_pull_body b = {0};
        int r = load_object(text, len, &obj, d);
        if (r == 0)
                r = check_keys(obj, allowed, d);
        if (r == 0)
                r = get_string(obj, "name", false, b.name, sizeof(b.name), d);
        if (r >= 0)
                r = check_name("name", b.name, d);
        if (r < 0)
                return r;
        *ret = b;
        return 0;
}

int api_parse_remote_gc_body(const char *text, size_t len, struct api_remote_gc_body *ret,
                             struct vmsnap_diag *d)
{
        static const char *const allowed[] = {"grace_seconds", "dry_run", NULL};
        json_auto_t *obj = NULL;
        struct api_remote_gc_body b = {.grace_seconds = API_REMOTE_GC_GRACE_DEFAULT};
        int r = load_object(text, len, &obj, d);
        if (r == 0)
                r = check_keys(obj, allowed, d);
        if (r == 0)
                r = get_uint(obj, "grace_seconds", 0, API_REMOTE_GC_GRACE_MAX, &b.grace_seconds,
                             d);
        json_t *v = r >= 0 ? json_object_get(obj, "dry_run") : NULL;
        if (v && !json_is_null(v) && !json_is_boolean(v))
                r = vmsnap_diag(d, -EINVAL, "field 'dry_run' must be true or false");
        if (r < 0)
                return r;
        b.dry_run = json_is_true(v);
        *ret = b;
        return 0;
}
