/* Remote manifests (docs/remote.md "The manifest"): parse with every rule checked before
 * anything is allocated from a claim, and format. Manifests are hostile input. */
#include "store/internal.h"
#include "util/cleanup.h"

#include <vmsnap/remote.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE_LIMIT (1ull << 50)

void vmsnap_remote_hex(const uint8_t sha256[32], char out[65])
{
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 32; i++) {
                out[2 * i] = hex[sha256[i] >> 4];
                out[2 * i + 1] = hex[sha256[i] & 15];
        }
        out[64] = 0;
}

/* 64 lowercase hex digits -> 32 bytes; false when s is not exactly that. */
static bool hex_parse(const char *s, uint8_t out[32])
{
        if (strlen(s) != 64)
                return false;
        for (int i = 0; i < 64; i++) {
                char c = s[i];
                int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (v < 0)
                        return false;
                if (i % 2 == 0)
                        out[i / 2] = (uint8_t)(v << 4);
                else
                        out[i / 2] |= (uint8_t)v;
        }
        return true;
}

void vmsnap_remote_manifest_free(struct vmsnap_remote_manifest *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->nfiles; i++)
                free(m->files[i].chunks);
        free(m->files);
        memset(m, 0, sizeof(*m));
}

uint64_t vmsnap_remote_manifest_size(const struct vmsnap_remote_manifest *m)
{
        uint64_t t = 0;
        for (size_t i = 0; i < m->nfiles; i++)
                t += m->files[i].size;
        return t;
}

/* A path a manifest may name: a flat snapshot file name, or images/<flat name>. */
static bool path_valid(const char *p)
{
        if (strncmp(p, "images/", 7) == 0)
                return store_file_name_valid(p + 7);
        return strcmp(p, VMSNAP_ENVELOPE_NAME) == 0 || store_file_name_valid(p);
}

/* An optional id field: null or a canonical UUID. */
static int opt_id(json_t *o, const char *key, char out[VMSNAP_ID_LEN + 1])
{
        json_t *v = json_object_get(o, key);
        out[0] = 0;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v) || !store_id_valid(json_string_value(v)))
                return -1;
        strcpy(out, json_string_value(v));
        return 0;
}

static int parse_file(json_t *f, size_t i, struct vmsnap_remote_file *out, uint64_t *total,
                      const char *what, struct vmsnap_diag *d)
{
        json_t *p = json_object_get(f, "path"), *sz = json_object_get(f, "size"),
               *ch = json_object_get(f, "chunks");
        if (!json_is_object(f) || !json_is_string(p) || !path_valid(json_string_value(p)))
                return vmsnap_diag(d, -EBADMSG, "%s: files[%zu]: path is not a valid snapshot "
                                   "file name or images/<name>", what, i);
        strcpy(out->path, json_string_value(p));
        if (!json_is_integer(sz) || json_integer_value(sz) < 0 ||
            (uint64_t)json_integer_value(sz) > SIZE_LIMIT)
                return vmsnap_diag(d, -EBADMSG, "%s: %s: size is not an integer in 0..2^50", what,
                                   out->path);
        out->size = (uint64_t)json_integer_value(sz);
        *total += out->size;
        if (*total > SIZE_LIMIT)
                return vmsnap_diag(d, -EBADMSG, "%s: the files add up to more than 2^50 bytes",
                                   what);
        size_t want = (size_t)((out->size + VMSNAP_REMOTE_CHUNK_SIZE - 1) / VMSNAP_REMOTE_CHUNK_SIZE);
        if (!json_is_array(ch) || json_array_size(ch) != want)
                return vmsnap_diag(d, -EBADMSG, "%s: %s: chunks must be an array of %zu entries "
                                   "(size / chunk_size)", what, out->path, want);
        out->nchunks = want;
        out->chunks = want ? calloc(want, sizeof(*out->chunks)) : NULL;
        if (want && !out->chunks)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        for (size_t k = 0; k < want; k++) {
                json_t *c = json_array_get(ch, k);
                if (json_is_null(c)) {
                        out->chunks[k].zero = true;
                        continue;
                }
                if (!json_is_string(c) || !hex_parse(json_string_value(c), out->chunks[k].sha256))
                        return vmsnap_diag(d, -EBADMSG, "%s: %s: chunk %zu is neither null nor 64 "
                                           "lowercase hex digits", what, out->path, k);
        }
        return 0;
}

static int path_cmp(const void *a, const void *b)
{
        return strcmp(((const struct vmsnap_remote_file *)a)->path,
                      ((const struct vmsnap_remote_file *)b)->path);
}

static int parse_files(json_t *files, struct vmsnap_remote_manifest *m, const char *what,
                       struct vmsnap_diag *d)
{
        size_t n = json_is_array(files) ? json_array_size(files) : 0;
        if (n < 1 || n > VMSNAP_REMOTE_FILES_MAX)
                return vmsnap_diag(d, -EBADMSG, "%s: files must be an array of 1..%d entries", what,
                                   VMSNAP_REMOTE_FILES_MAX);
        m->files = calloc(n, sizeof(*m->files));
        if (!m->files)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        uint64_t total = 0;
        for (size_t i = 0; i < n; i++) {
                m->nfiles = i + 1;
                int r = parse_file(json_array_get(files, i), i, &m->files[i], &total, what, d);
                if (r < 0)
                        return r;
        }
        /* unique paths, snapshot.json among them (checked on a sorted copy of the names) */
        _cleanup_free_ struct vmsnap_remote_file *sorted = malloc(n * sizeof(*sorted));
        if (!sorted)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        memcpy(sorted, m->files, n * sizeof(*sorted));
        qsort(sorted, n, sizeof(*sorted), path_cmp);
        bool envelope = false;
        for (size_t i = 0; i < n; i++) {
                if (i > 0 && strcmp(sorted[i - 1].path, sorted[i].path) == 0)
                        return vmsnap_diag(d, -EBADMSG, "%s: file '%s' listed twice", what,
                                           sorted[i].path);
                envelope |= strcmp(sorted[i].path, VMSNAP_ENVELOPE_NAME) == 0;
        }
        if (!envelope)
                return vmsnap_diag(d, -EBADMSG, "%s: no %s among the files", what,
                                   VMSNAP_ENVELOPE_NAME);
        return 0;
}

static int parse_head(json_t *o, struct vmsnap_remote_manifest *m, const char *what,
                      const char *expect_id, struct vmsnap_diag *d)
{
        json_t *fmt = json_object_get(o, "format"), *ver = json_object_get(o, "version");
        if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "vmsnap-remote") != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: not a vmsnap remote manifest", what);
        if (!json_is_integer(ver) || json_integer_value(ver) < 1)
                return vmsnap_diag(d, -EBADMSG, "%s: version must be an integer >= 1", what);
        if (json_integer_value(ver) > 1)
                return vmsnap_diag(d, -EBADMSG, "%s: version %lld, written by a newer vmsnap", what,
                                   (long long)json_integer_value(ver));
        json_t *id = json_object_get(o, "id"), *name = json_object_get(o, "name"),
               *kind = json_object_get(o, "kind"), *cs = json_object_get(o, "chunk_size");
        if (!json_is_string(id) || !store_id_valid(json_string_value(id)))
                return vmsnap_diag(d, -EBADMSG, "%s: id is not a canonical UUID", what);
        strcpy(m->id, json_string_value(id));
        if (expect_id && strcmp(expect_id, m->id) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: holds the manifest of %s, not of %s", what,
                                   m->id, expect_id);
        if (name && !json_is_null(name)) {
                if (!json_is_string(name) || !vmsnap_store_name_valid(json_string_value(name)))
                        return vmsnap_diag(d, -EBADMSG, "%s: name is not a valid snapshot name", what);
                strcpy(m->name, json_string_value(name));
        }
        if (!json_is_string(kind) || vmsnap_snapshot_kind_parse(json_string_value(kind), &m->kind) < 0)
                return vmsnap_diag(d, -EBADMSG, "%s: kind must be pause or template", what);
        if (opt_id(o, "parent", m->parent_id) < 0 || opt_id(o, "template", m->template_id) < 0)
                return vmsnap_diag(d, -EBADMSG, "%s: parent/template must be null or a UUID", what);
        json_t *cr = json_object_get(o, "created"), *pu = json_object_get(o, "pushed");
        if (!json_is_string(cr) || store_time_parse(json_string_value(cr), &m->created) < 0 ||
            !json_is_string(pu) || store_time_parse(json_string_value(pu), &m->pushed) < 0)
                return vmsnap_diag(d, -EBADMSG, "%s: created/pushed must be RFC 3339 UTC times",
                                   what);
        if (!json_is_integer(cs) || json_integer_value(cs) != VMSNAP_REMOTE_CHUNK_SIZE)
                return vmsnap_diag(d, -EBADMSG, "%s: chunk_size must be %u", what,
                                   VMSNAP_REMOTE_CHUNK_SIZE);
        m->chunk_size = VMSNAP_REMOTE_CHUNK_SIZE;
        return 0;
}

int vmsnap_remote_manifest_parse(const char *text, size_t len, const char *what,
                                 const char *expect_id, struct vmsnap_remote_manifest *ret,
                                 struct vmsnap_diag *d)
{
        if (len > VMSNAP_REMOTE_MANIFEST_MAX)
                return vmsnap_diag(d, -EBADMSG, "%s: manifest larger than %u bytes", what,
                                   VMSNAP_REMOTE_MANIFEST_MAX);
        json_error_t je;
        json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (!o)
                return vmsnap_diag(d, -EBADMSG, "%s: not JSON: %s (line %d)", what, je.text,
                                   je.line);
        struct vmsnap_remote_manifest m = {0};
        int r = json_is_object(o) ? 0 : vmsnap_diag(d, -EBADMSG, "%s: not a JSON object", what);
        if (r == 0)
                r = parse_head(o, &m, what, expect_id, d);
        if (r == 0)
                r = parse_files(json_object_get(o, "files"), &m, what, d);
        json_decref(o);
        if (r < 0) {
                vmsnap_remote_manifest_free(&m);
                return r;
        }
        *ret = m;
        return 0;
}

static json_t *str_or_null(const char *s)
{
        return s[0] ? json_string(s) : json_null();
}

static json_t *time_json(int64_t t)
{
        char buf[21];
        vmsnap_time_format(t, buf);
        return json_string(buf);
}

static json_t *file_json(const struct vmsnap_remote_file *f)
{
        json_t *chunks = json_array();
        for (size_t k = 0; chunks && k < f->nchunks; k++) {
                char hex[65];
                vmsnap_remote_hex(f->chunks[k].sha256, hex);
                json_array_append_new(chunks, f->chunks[k].zero ? json_null() : json_string(hex));
        }
        return json_pack("{s:s, s:I, s:o}", "path", f->path, "size", (json_int_t)f->size,
                         "chunks", chunks);
}

int vmsnap_remote_manifest_format(const struct vmsnap_remote_manifest *m, char **ret)
{
        json_t *files = json_array();
        for (size_t i = 0; files && i < m->nfiles; i++)
                json_array_append_new(files, file_json(&m->files[i]));
        json_t *o = json_pack("{s:s, s:i, s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:I, s:o}",
                              "format", "vmsnap-remote", "version", 1, "id", m->id, "name",
                              str_or_null(m->name), "kind", vmsnap_snapshot_kind_name(m->kind),
                              "parent", str_or_null(m->parent_id), "template",
                              str_or_null(m->template_id), "created", time_json(m->created),
                              "pushed", time_json(m->pushed), "chunk_size",
                              (json_int_t)VMSNAP_REMOTE_CHUNK_SIZE, "files", files);
        if (!o)
                return -ENOMEM;
        char *s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}
