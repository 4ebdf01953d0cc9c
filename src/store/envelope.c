/* The envelope, snapshot.json: what a snapshot is and every file with its size and
 * XXH3-128 checksum, so a directory describes itself without the index. The parser is fed
 * outside input (imports), so it checks every field and enforces the same limits as the
 * writer. Layout and rules: docs/store.md. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ENVELOPE_FORMAT  "vmsnap-snapshot"
#define ENVELOPE_VERSION 1
#define MAX_VCPUS        4096

void store_envelope_clear(struct store_envelope *e)
{
        if (!e)
                return;
        free(e->files);
        e->files = NULL;
        e->n_files = 0;
}

/* jansson.h provides json_decrefp for json_auto_t */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

#define BAD(d, ...) vmsnap_diag(d, -EBADMSG, VMSNAP_ENVELOPE_NAME ": " __VA_ARGS__)

/* An optional string member: NULL (missing or null) is "", else a string that fits. */
static int get_str(json_t *o, const char *key, char *out, size_t size, struct vmsnap_diag *d)
{
        json_t *v = json_object_get(o, key);
        if (!v || json_is_null(v)) {
                out[0] = '\0';
                return 0;
        }
        if (!json_is_string(v))
                return BAD(d, "\"%s\" must be a string", key);
        if (json_string_length(v) >= size)
                return BAD(d, "\"%s\" is longer than %zu bytes", key, size - 1);
        memcpy(out, json_string_value(v), json_string_length(v) + 1);
        return 0;
}

static int get_id(json_t *o, const char *key, bool required, char out[VMSNAP_ID_LEN + 1],
                  struct vmsnap_diag *d)
{
        json_t *v = json_object_get(o, key);
        if (!required && (!v || json_is_null(v))) {
                out[0] = '\0';
                return 0;
        }
        if (!json_is_string(v) || !store_id_valid(json_string_value(v)))
                return BAD(d, "\"%s\" must be a lowercase canonical UUID", key);
        memcpy(out, json_string_value(v), VMSNAP_ID_LEN + 1);
        return 0;
}

/* An optional non-negative integer member no larger than max (missing = 0). */
static int get_uint(json_t *o, const char *key, uint64_t max, uint64_t *ret, struct vmsnap_diag *d)
{
        json_t *v = json_object_get(o, key);
        if (!v) {
                *ret = 0;
                return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            (uint64_t)json_integer_value(v) > max)
                return BAD(d, "\"%s\" must be an integer from 0 to %llu", key,
                           (unsigned long long)max);
        *ret = (uint64_t)json_integer_value(v);
        return 0;
}

static int parse_head(json_t *root, struct vmsnap_diag *d)
{
        if (!json_is_object(root))
                return BAD(d, "not a JSON object");
        json_t *f = json_object_get(root, "format");
        if (!json_is_string(f) || strcmp(json_string_value(f), ENVELOPE_FORMAT) != 0)
                return BAD(d, "\"format\" is not \"%s\" (not a vmsnap snapshot envelope)",
                           ENVELOPE_FORMAT);
        json_t *v = json_object_get(root, "version");
        if (!json_is_integer(v) || json_integer_value(v) < 1)
                return BAD(d, "\"version\" must be a positive integer");
        if (json_integer_value(v) > ENVELOPE_VERSION)
                return vmsnap_diag(d, -EPROTONOSUPPORT,
                                   VMSNAP_ENVELOPE_NAME
                                   ": version %lld was written by a newer "
                                   "vmsnap (this one reads version %d); upgrade vmsnap",
                                   (long long)json_integer_value(v), ENVELOPE_VERSION);
        return 0;
}

static int parse_identity(json_t *root, struct vmsnap_snapshot *r, struct vmsnap_diag *d)
{
        int ret = get_id(root, "id", true, r->id, d);
        if (ret < 0)
                return ret;
        if ((ret = get_str(root, "name", r->name, sizeof(r->name), d)) < 0)
                return ret;
        if (r->name[0] && !vmsnap_store_name_valid(r->name))
                return BAD(d, "\"name\" '%s' is not a valid snapshot name", r->name);
        json_t *k = json_object_get(root, "kind");
        if (!json_is_string(k) || vmsnap_snapshot_kind_parse(json_string_value(k), &r->kind) < 0)
                return BAD(d, "\"kind\" must be \"pause\" or \"template\"");
        if ((ret = get_id(root, "parent", false, r->parent_id, d)) < 0 ||
            (ret = get_id(root, "template", false, r->template_id, d)) < 0)
                return ret;
        json_t *c = json_object_get(root, "created");
        if (!json_is_string(c) || store_time_parse(json_string_value(c), &r->created) < 0)
                return BAD(d, "\"created\" must be a UTC time like 2025-01-31T12:00:00Z");
        return 0;
}

static int parse_machine(json_t *root, struct vmsnap_snapshot *r, struct vmsnap_diag *d)
{
        uint64_t v = 0;
        int ret;
        json_t *vmm = json_object_get(root, "vmm");
        if (vmm && !json_is_null(vmm)) {
                if (!json_is_object(vmm))
                        return BAD(d, "\"vmm\" must be an object {\"type\", \"version\"}");
                if ((ret = get_str(vmm, "type", r->vmm, sizeof(r->vmm), d)) < 0 ||
                    (ret = get_str(vmm, "version", r->vmm_version, sizeof(r->vmm_version), d)) < 0)
                        return ret;
        }
        if ((ret = get_uint(root, "vcpus", MAX_VCPUS, &v, d)) < 0)
                return ret;
        r->vcpus = (uint32_t)v;
        if ((ret = get_uint(root, "memory", VMSNAP_MEM_MAX_SIZE, &r->memory, d)) < 0 ||
            (ret = get_uint(root, "generation", UINT32_MAX, &r->generation, d)) < 0)
                return ret;
        if ((ret = get_str(root, "description", r->description, sizeof(r->description), d)) < 0)
                return ret;
        json_t *labels = json_object_get(root, "labels");
        if (!labels || json_is_null(labels)) {
                strcpy(r->labels, "{}");
                return 0;
        }
        if (store_labels_from_json(labels, r->labels, d) < 0) {
                vmsnap_diag_prefix(d, VMSNAP_ENVELOPE_NAME);
                if (d)
                        d->err = -EBADMSG;
                return -EBADMSG;
        }
        return 0;
}

static int parse_file(json_t *f, size_t i, struct vmsnap_snapshot_file *out, struct vmsnap_diag *d)
{
        if (!json_is_object(f))
                return BAD(d, "files[%zu] is not an object", i);
        json_t *name = json_object_get(f, "name");
        if (!json_is_string(name) || !store_file_name_valid(json_string_value(name)))
                return BAD(d,
                           "files[%zu]: \"name\" must be a plain file name "
                           "([A-Za-z0-9][A-Za-z0-9._-]*, at most %d bytes, not %s)",
                           i, VMSNAP_FILE_NAME_MAX, VMSNAP_ENVELOPE_NAME);
        strcpy(out->name, json_string_value(name));
        json_t *size = json_object_get(f, "size");
        if (!json_is_integer(size) || json_integer_value(size) < 0 ||
            (uint64_t)json_integer_value(size) > STORE_MAX_FILE_SIZE)
                return BAD(d, "%s: \"size\" must be an integer from 0 to 2^50", out->name);
        out->size = (uint64_t)json_integer_value(size);
        json_t *c = json_object_get(f, "checksum");
        if (!json_is_string(c) || store_hash_parse(json_string_value(c), &out->checksum) < 0)
                return BAD(d, "%s: \"checksum\" must be \"xxh3-128:\" and 32 lowercase hex digits",
                           out->name);
        return 0;
}

static int parse_files(json_t *root, struct store_envelope *e, struct vmsnap_diag *d)
{
        json_t *files = json_object_get(root, "files");
        if (!json_is_array(files))
                return BAD(d, "\"files\" must be an array");
        size_t n = json_array_size(files);
        if (n == 0 || n > STORE_MAX_FILES)
                return BAD(d, "\"files\" must list 1 to %u files", STORE_MAX_FILES);
        e->files = calloc(n, sizeof(*e->files));
        if (!e->files)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                int r = parse_file(json_array_get(files, i), i, &e->files[i], d);
                if (r < 0)
                        return r;
                if (i > 0 && strcmp(e->files[i - 1].name, e->files[i].name) >= 0)
                        return BAD(d,
                                   "\"files\" must be sorted by name without duplicates "
                                   "('%s' after '%s')",
                                   e->files[i].name, e->files[i - 1].name);
        }
        e->n_files = n;
        return 0;
}

int store_envelope_parse(const char *buf, size_t len, struct store_envelope *ret,
                         struct vmsnap_diag *d)
{
        if (len > STORE_ENVELOPE_MAX)
                return BAD(d, "larger than %u bytes", STORE_ENVELOPE_MAX);
        json_error_t err;
        _cleanup_json_ json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
        if (!root)
                return BAD(d, "line %d: %s", err.line, err.text);
        struct store_envelope e = {0};
        e.rec.state = VMSNAP_SNAPSHOT_READY;
        int r = parse_head(root, d);
        if (r == 0)
                r = parse_identity(root, &e.rec, d);
        if (r == 0)
                r = parse_machine(root, &e.rec, d);
        if (r == 0)
                r = parse_files(root, &e, d);
        if (r < 0) {
                store_envelope_clear(&e);
                return r;
        }
        *ret = e;
        return 0;
}

static json_t *str_or_null(const char *s)
{
        return s && s[0] ? json_string(s) : json_null();
}

static json_t *files_json(const struct store_envelope *e)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < e->n_files; i++) {
                char sum[42];
                store_hash_format(&e->files[i].checksum, sum);
                json_t *f = json_object();
                json_object_set_new(f, "name", json_string(e->files[i].name));
                json_object_set_new(f, "size", json_integer((json_int_t)e->files[i].size));
                json_object_set_new(f, "checksum", json_string(sum));
                if (json_array_append_new(a, f) < 0) {
                        json_decref(a);
                        return NULL;
                }
        }
        return a;
}

/* Builds the JSON document; members in the documented order. */
static json_t *envelope_json(const struct store_envelope *e)
{
        const struct vmsnap_snapshot *r = &e->rec;
        char created[21];
        vmsnap_time_format(r->created, created);
        json_t *o = json_object();
        json_object_set_new(o, "format", json_string(ENVELOPE_FORMAT));
        json_object_set_new(o, "version", json_integer(ENVELOPE_VERSION));
        json_object_set_new(o, "id", json_string(r->id));
        json_object_set_new(o, "name", str_or_null(r->name));
        json_object_set_new(o, "kind", json_string(vmsnap_snapshot_kind_name(r->kind)));
        json_object_set_new(o, "parent", str_or_null(r->parent_id));
        json_object_set_new(o, "template", str_or_null(r->template_id));
        json_object_set_new(o, "generation", json_integer((json_int_t)r->generation));
        json_object_set_new(o, "vmm",
                            json_pack("{s:s, s:s}", "type", r->vmm, "version", r->vmm_version));
        json_object_set_new(o, "vcpus", json_integer(r->vcpus));
        json_object_set_new(o, "memory", json_integer((json_int_t)r->memory));
        json_object_set_new(o, "created", json_string(created));
        json_object_set_new(o, "description", json_string(r->description));
        json_object_set_new(o, "labels", json_loads(r->labels[0] ? r->labels : "{}", 0, NULL));
        json_object_set_new(o, "files", files_json(e));
        return o;
}

int store_envelope_serialize(const struct store_envelope *e, char **ret, size_t *ret_len,
                             struct vmsnap_diag *d)
{
        _cleanup_json_ json_t *o = envelope_json(e);
        _cleanup_free_ char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (!text)
                return vmsnap_diag(d, -ENOMEM, "cannot serialize %s", VMSNAP_ENVELOPE_NAME);
        size_t n = strlen(text);
        char *out = malloc(n + 2);
        if (!out)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        memcpy(out, text, n);
        out[n] = '\n';
        out[n + 1] = '\0';
        /* What we write must read back: the parser is the single definition of valid. */
        struct store_envelope back;
        int r = store_envelope_parse(out, n + 1, &back, d);
        if (r < 0) {
                free(out);
                return vmsnap_diag_prefix(d, "refusing to write an invalid envelope");
        }
        store_envelope_clear(&back);
        *ret = out;
        *ret_len = n + 1;
        return 0;
}

int store_envelope_read(int dirfd, char **ret, size_t *ret_len, struct vmsnap_diag *d)
{
        int r = vmsnap_fs_read_file(dirfd, VMSNAP_ENVELOPE_NAME, STORE_ENVELOPE_MAX,
                                    (uint8_t **)ret, ret_len);
        if (r == -ENOENT)
                return vmsnap_diag(d, r, VMSNAP_ENVELOPE_NAME " is missing");
        if (r < 0)
                return vmsnap_diag(d, r == -EFBIG ? -EBADMSG : r,
                                   VMSNAP_ENVELOPE_NAME ": cannot read: %s",
                                   vmsnap_fs_open_error(r));
        return 0;
}

int store_envelope_load(int dirfd, struct store_envelope *ret, struct vmsnap_diag *d)
{
        _cleanup_free_ char *buf = NULL;
        size_t len;
        int r = store_envelope_read(dirfd, &buf, &len, d);
        if (r < 0)
                return r;
        return store_envelope_parse(buf, len, ret, d);
}

int store_envelope_write(int dirfd, const struct store_envelope *e, struct vmsnap_diag *d)
{
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = store_envelope_serialize(e, &text, &len, d);
        if (r < 0)
                return r;
        return vmsnap_fs_atomic_write(dirfd, VMSNAP_ENVELOPE_NAME, text, len, d);
}

const struct vmsnap_snapshot_file *store_envelope_find(const struct store_envelope *e,
                                                       const char *name)
{
        size_t lo = 0, hi = e->n_files;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(e->files[mid].name, name);
                if (c == 0)
                        return &e->files[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* Checks one listed file; writes a problem into msg (size bytes) and returns false. */
static bool check_file(int dirfd, const struct vmsnap_snapshot_file *f, bool checksums, char *msg,
                       size_t size)
{
        struct stat st;
        _cleanup_close_ int fd = vmsnap_fs_open_regular(dirfd, f->name, &st, false);
        if (fd < 0) {
                snprintf(msg, size, "%s: %s", f->name, vmsnap_fs_open_error(fd));
                return false;
        }
        if ((uint64_t)st.st_size != f->size) {
                snprintf(msg, size, "%s: size %llu, the envelope says %llu", f->name,
                         (unsigned long long)st.st_size, (unsigned long long)f->size);
                return false;
        }
        if (!checksums)
                return true;
        struct vmsnap_hash h;
        int r = store_hash_fd(fd, f->size, &h, NULL, NULL);
        if (r < 0) {
                snprintf(msg, size, "%s: cannot read: %s", f->name, strerror(-r));
                return false;
        }
        if (memcmp(&h, &f->checksum, sizeof(h)) != 0) {
                char want[42], got[42];
                store_hash_format(&f->checksum, want);
                store_hash_format(&h, got);
                snprintf(msg, size, "%s: checksum mismatch (content is %s, the envelope says %s)",
                         f->name, got, want);
                return false;
        }
        return true;
}

int store_envelope_check(int dirfd, const struct store_envelope *e, bool checksums,
                         vmsnap_store_problem_fn fn, void *ctx, struct vmsnap_diag *d)
{
        int r = 0;
        for (size_t i = 0; i < e->n_files; i++) {
                char msg[512];
                if (check_file(dirfd, &e->files[i], checksums, msg, sizeof(msg)))
                        continue;
                if (fn)
                        fn(ctx, msg);
                if (r == 0)
                        r = vmsnap_diag(d, -EBADMSG, "%s", msg);
        }
        return r;
}
