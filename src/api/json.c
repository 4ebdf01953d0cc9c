/* JSON helpers: jansson requires valid UTF-8 in every string, and what a guest prints or a
 * path holds need not be; these helpers make any byte string safe to send. */
#include "api/json.h"
#include "util/json.h"

#include <vmsnap/store.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

json_t *api_json_string_or_null(const char *s)
{
        return s && s[0] ? vmsnap_json_string_lossy(s) : json_null();
}

json_t *api_json_time(int64_t t)
{
        if (t == 0)
                return json_null();
        char buf[21];
        vmsnap_time_format(t, buf);
        return json_string(buf);
}

int api_json_set(json_t *obj, const char *key, json_t *v)
{
        if (!v)
                v = json_null();
        return json_object_set_new(obj, key, v) == 0 ? 0 : -ENOMEM;
}

json_t *api_json_error(const char *code, const char *message)
{
        json_t *inner = json_object(), *outer = json_object();
        if (!inner || !outer) {
                json_decref(inner);
                json_decref(outer);
                return NULL;
        }
        api_json_set(inner, "code", json_string(code));
        api_json_set(inner, "message", vmsnap_json_string_lossy(message));
        api_json_set(outer, "error", inner);
        return outer;
}

char *api_json_dump(const json_t *j, size_t *ret_len)
{
        char *text = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
        if (!text)
                return NULL;
        size_t n = strlen(text);
        char *out = realloc(text, n + 2);
        if (!out) {
                free(text);
                return NULL;
        }
        out[n] = '\n';
        out[n + 1] = '\0';
        *ret_len = n + 1;
        return out;
}
