/* The fields of an ExecRequest (exec-body.h): exactly one of argv, argv_b64 (for arguments
 * that are not UTF-8) and cmd (a shell line); env as an object of strings; everything
 * range-checked, nothing silently dropped. */
#include "api/exec-body.h"
#include "util/cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ARGS_MAX 4096 /* argv and env entries each (the START frame bounds the bytes) */
#define CWD_MAX  4096

static int b64_value(unsigned char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        return c == '+' ? 62 : c == '/' ? 63 : -1;
}

int api_base64_decode(const char *in, size_t n, unsigned char **ret, size_t *ret_len)
{
        while (n > 0 && in[n - 1] == '=')
                n--;
        if (n % 4 == 1)
                return -EINVAL;
        unsigned char *out = malloc(n / 4 * 3 + 3);
        if (!out)
                return -ENOMEM;
        uint32_t acc = 0;
        size_t o = 0;
        int bits = 0;
        for (size_t i = 0; i < n; i++) {
                int v = b64_value((unsigned char)in[i]);
                if (v < 0) {
                        free(out);
                        return -EINVAL;
                }
                acc = (acc << 6 | (uint32_t)v) & 0xFFFFFF;
                if ((bits += 6) >= 8) {
                        bits -= 8;
                        out[o++] = (unsigned char)(acc >> bits);
                }
        }
        out[o] = '\0';
        *ret = out;
        *ret_len = o;
        return 0;
}

static void free_vector(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

/* One argv element: a JSON string, or with b64 its base64 (no NUL inside either way). */
static int arg_of(json_t *v, bool b64, size_t i, char **ret, struct vmsnap_diag *d)
{
        const char *key = b64 ? "argv_b64" : "argv";
        if (!json_is_string(v))
                return vmsnap_diag(d, -EINVAL, "field '%s': element %zu must be a string", key, i);
        if (!b64)
                return (*ret = strdup(json_string_value(v))) ? 0 : -ENOMEM;
        unsigned char *bytes;
        size_t len;
        int r = api_base64_decode(json_string_value(v), json_string_length(v), &bytes, &len);
        if (r == -EINVAL)
                return vmsnap_diag(d, -EINVAL, "field 'argv_b64': element %zu is not base64", i);
        if (r < 0)
                return r;
        if (memchr(bytes, '\0', len)) {
                free(bytes);
                return vmsnap_diag(d, -EINVAL, "field 'argv_b64': element %zu holds a NUL byte "
                                   "(an argument cannot)", i);
        }
        *ret = (char *)bytes;
        return 0;
}

static int argv_of(json_t *a, bool b64, char ***ret, struct vmsnap_diag *d)
{
        const char *key = b64 ? "argv_b64" : "argv";
        size_t n = json_array_size(a);
        if (!json_is_array(a) || n == 0 || n > ARGS_MAX)
                return vmsnap_diag(d, -EINVAL, "field '%s' must be an array of 1 to %d strings",
                                   key, ARGS_MAX);
        char **v = calloc(n + 1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                int r = arg_of(json_array_get(a, i), b64, i, &v[i], d);
                if (r < 0) {
                        free_vector(v);
                        return r == -ENOMEM ? vmsnap_diag(d, r, "out of memory") : r;
                }
        }
        if (!v[0][0]) {
                free_vector(v);
                return vmsnap_diag(d, -EINVAL, "field '%s': the program (element 0) is empty",
                                   key);
        }
        *ret = v;
        return 0;
}

/* The program: exactly one of argv, argv_b64, cmd. */
static int program_of(json_t *obj, struct api_exec_body *b, struct vmsnap_diag *d)
{
        json_t *argv = json_object_get(obj, "argv"), *argv_b64 = json_object_get(obj, "argv_b64");
        json_t *cmd = json_object_get(obj, "cmd");
        int given = (argv && !json_is_null(argv)) + (argv_b64 && !json_is_null(argv_b64)) +
                    (cmd && !json_is_null(cmd));
        if (given != 1)
                return vmsnap_diag(d, -EINVAL, "exactly one of the fields 'argv' (the program "
                                   "and its arguments), 'argv_b64' (the same in base64) or "
                                   "'cmd' is required ('cmd': a shell command line)");
        if (cmd && !json_is_null(cmd)) {
                if (!json_is_string(cmd) || json_string_length(cmd) == 0)
                        return vmsnap_diag(d, -EINVAL, "field 'cmd' must be a non-empty string "
                                           "(a shell command)");
                const char *sh[] = {"/bin/sh", "-c", json_string_value(cmd)};
                b->argv = calloc(4, sizeof(char *));
                for (size_t i = 0; b->argv && i < 3; i++)
                        if (!(b->argv[i] = strdup(sh[i])))
                                return vmsnap_diag(d, -ENOMEM, "out of memory");
                return b->argv ? 0 : vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        return argv && !json_is_null(argv) ? argv_of(argv, false, &b->argv, d)
                                           : argv_of(argv_b64, true, &b->argv, d);
}

static bool env_name_ok(const char *s)
{
        if (!isalpha((unsigned char)s[0]) && s[0] != '_')
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && *s != '_')
                        return false;
        return true;
}

static int env_of(json_t *obj, struct api_exec_body *b, struct vmsnap_diag *d)
{
        json_t *env = json_object_get(obj, "env"), *v;
        const char *name;
        if (!env || json_is_null(env))
                return 0;
        if (!json_is_object(env) || json_object_size(env) > ARGS_MAX)
                return vmsnap_diag(d, -EINVAL, "field 'env' must be an object of at most %d "
                                   "NAME: value strings", ARGS_MAX);
        if (!(b->env = calloc(json_object_size(env) + 1, sizeof(char *))))
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        size_t i = 0;
        json_object_foreach(env, name, v)
        {
                if (!env_name_ok(name) || !json_is_string(v))
                        return vmsnap_diag(d, -EINVAL, "field 'env': each name is letters, "
                                           "digits and '_' (not starting with a digit) and each "
                                           "value a string");
                size_t len = strlen(name) + json_string_length(v) + 2;
                if (!(b->env[i] = malloc(len)))
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
                snprintf(b->env[i++], len, "%s=%s", name, json_string_value(v));
        }
        return 0;
}

static int bool_of(json_t *obj, const char *key, bool *ret, struct vmsnap_diag *d)
{
        json_t *v = json_object_get(obj, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_boolean(v))
                return vmsnap_diag(d, -EINVAL, "field '%s' must be true or false", key);
        *ret = json_is_true(v);
        return 0;
}

static int uint_of(json_t *obj, const char *key, unsigned max, unsigned *ret, bool *present,
                   struct vmsnap_diag *d)
{
        json_t *v = json_object_get(obj, key);
        if (!v || json_is_null(v))
                return 0;
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
        if (x < 1 || (uint64_t)x > max)
                return vmsnap_diag(d, -EINVAL, "field '%s' must be an integer from 1 to %u", key,
                                   max);
        *ret = (unsigned)x;
        if (present)
                *present = true;
        return 0;
}

/* cwd (absolute), stdin_b64 and the terminal's size. */
static int extras_of(json_t *obj, struct api_exec_body *b, struct vmsnap_diag *d)
{
        json_t *cwd = json_object_get(obj, "cwd"), *in = json_object_get(obj, "stdin_b64");
        if (cwd && !json_is_null(cwd)) {
                const char *s = json_string_value(cwd);
                if (!s || s[0] != '/' || strlen(s) > CWD_MAX)
                        return vmsnap_diag(d, -EINVAL, "field 'cwd' must be an absolute path in "
                                           "the guest");
                if (!(b->cwd = strdup(s)))
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        if (in && !json_is_null(in)) {
                int r = json_is_string(in) ? api_base64_decode(json_string_value(in),
                                                               json_string_length(in), &b->in,
                                                               &b->in_len)
                                           : -EINVAL;
                if (r < 0)
                        return vmsnap_diag(d, r, "field 'stdin_b64' must be base64");
        }
        unsigned rows = API_EXEC_ROWS_DEFAULT, cols = API_EXEC_COLS_DEFAULT;
        int r = uint_of(obj, "rows", UINT16_MAX, &rows, NULL, d);
        if (r == 0)
                r = uint_of(obj, "cols", UINT16_MAX, &cols, NULL, d);
        b->rows = (uint16_t)rows;
        b->cols = (uint16_t)cols;
        return r;
}

int api_exec_body_from_json(json_t *obj, struct api_exec_body *ret, struct vmsnap_diag *d)
{
        struct api_exec_body b = {.timeout_ms = 0};
        int r = program_of(obj, &b, d);
        if (r == 0)
                r = env_of(obj, &b, d);
        if (r == 0)
                r = extras_of(obj, &b, d);
        if (r == 0)
                r = uint_of(obj, "timeout_ms", 86400000u, &b.timeout_ms, &b.has_timeout, d);
        if (r == 0)
                r = bool_of(obj, "tty", &b.tty, d);
        if (r == 0)
                r = bool_of(obj, "background", &b.background, d);
        if (r == 0 && b.background && (b.tty || b.in))
                r = vmsnap_diag(d, -EINVAL, "a background process has no terminal and no "
                                "stdin: 'background' excludes 'tty' and 'stdin_b64'");
        if (r < 0) {
                api_exec_body_clear(&b);
                return r;
        }
        *ret = b;
        return 0;
}

void api_exec_body_clear(struct api_exec_body *b)
{
        if (!b)
                return;
        free_vector(b->argv);
        free_vector(b->env);
        free(b->cwd);
        free(b->in);
        memset(b, 0, sizeof(*b));
}
