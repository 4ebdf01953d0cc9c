/* Small values of the store: kinds and states, names, ids, times, checksum text, labels. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LABELS_MAX_COUNT 64
#define LABEL_VALUE_MAX  255

const char *vmsnap_snapshot_kind_name(enum vmsnap_snapshot_kind k)
{
        return k == VMSNAP_SNAPSHOT_TEMPLATE ? "template" : "pause";
}

int vmsnap_snapshot_kind_parse(const char *s, enum vmsnap_snapshot_kind *ret)
{
        if (!s)
                return -EINVAL;
        if (strcmp(s, "pause") == 0)
                *ret = VMSNAP_SNAPSHOT_PAUSE;
        else if (strcmp(s, "template") == 0)
                *ret = VMSNAP_SNAPSHOT_TEMPLATE;
        else
                return -EINVAL;
        return 0;
}

const char *vmsnap_snapshot_state_name(enum vmsnap_snapshot_state st)
{
        switch (st) {
        case VMSNAP_SNAPSHOT_PENDING:
                return "pending";
        case VMSNAP_SNAPSHOT_DELETING:
                return "deleting";
        case VMSNAP_SNAPSHOT_READY:
                break;
        }
        return "ready";
}

int64_t store_now(void)
{
        return (int64_t)time(NULL);
}

/* Canonical lowercase UUID: 8-4-4-4-12 hex digits. */
bool store_id_valid(const char *id)
{
        if (!id || strlen(id) != VMSNAP_ID_LEN)
                return false;
        for (int i = 0; i < VMSNAP_ID_LEN; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                if (dash ? id[i] != '-'
                         : !(isdigit((unsigned char)id[i]) || (id[i] >= 'a' && id[i] <= 'f')))
                        return false;
        }
        return true;
}

static bool name_char_ok(char c)
{
        return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

/* ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$, and not a UUID in any case (it would shadow an id). */
bool vmsnap_store_name_valid(const char *name)
{
        if (!name || !isalnum((unsigned char)name[0]))
                return false;
        size_t n = strlen(name);
        if (n > VMSNAP_NAME_MAX)
                return false;
        for (size_t i = 1; i < n; i++)
                if (!name_char_ok(name[i]))
                        return false;
        if (n == VMSNAP_ID_LEN) {
                char low[VMSNAP_ID_LEN + 1];
                for (size_t i = 0; i <= n; i++)
                        low[i] = (char)tolower((unsigned char)name[i]);
                if (store_id_valid(low))
                        return false;
        }
        return true;
}

/* ^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$ and not the envelope itself. */
bool store_file_name_valid(const char *name)
{
        if (!name || !isalnum((unsigned char)name[0]))
                return false;
        size_t n = strlen(name);
        if (n > VMSNAP_FILE_NAME_MAX)
                return false;
        for (size_t i = 1; i < n; i++)
                if (!name_char_ok(name[i]))
                        return false;
        return strcmp(name, VMSNAP_ENVELOPE_NAME) != 0;
}

void vmsnap_time_format(int64_t t, char out[21])
{
        time_t tt = (time_t)t;
        struct tm tm;
        if (!gmtime_r(&tt, &tm) || strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) != 20)
                snprintf(out, 21, "1970-01-01T00:00:00Z");
}

/* Parses exactly "YYYY-MM-DDTHH:MM:SSZ" (years 1970..9999); the text must be canonical. */
int store_time_parse(const char *s, int64_t *ret)
{
        if (!s || strlen(s) != 20)
                return -EINVAL;
        for (int i = 0; i < 20; i++) {
                bool digit = !(i == 4 || i == 7 || i == 10 || i == 13 || i == 16 || i == 19);
                if (digit && !isdigit((unsigned char)s[i]))
                        return -EINVAL;
        }
        if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
            s[19] != 'Z')
                return -EINVAL;
        struct tm tm = {0};
        tm.tm_year = atoi(s) - 1900;
        tm.tm_mon = atoi(s + 5) - 1;
        tm.tm_mday = atoi(s + 8);
        tm.tm_hour = atoi(s + 11);
        tm.tm_min = atoi(s + 14);
        tm.tm_sec = atoi(s + 17);
        if (tm.tm_year < 70)
                return -EINVAL;
        time_t t = timegm(&tm);
        char back[21];
        vmsnap_time_format((int64_t)t, back);
        if (strcmp(back, s) != 0)
                return -EINVAL; /* Feb 30, 25:00, ... */
        *ret = (int64_t)t;
        return 0;
}

static int hex_digit(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

#define HASH_PREFIX "xxh3-128:"

int store_hash_parse(const char *s, struct vmsnap_hash *ret)
{
        size_t p = strlen(HASH_PREFIX);
        if (!s || strncmp(s, HASH_PREFIX, p) != 0 || strlen(s) != p + 32)
                return -EINVAL;
        struct vmsnap_hash h;
        for (int i = 0; i < 16; i++) {
                int hi = hex_digit(s[p + 2 * i]), lo = hex_digit(s[p + 2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                h.b[i] = (uint8_t)(hi << 4 | lo);
        }
        *ret = h;
        return 0;
}

void store_hash_format(const struct vmsnap_hash *h, char out[42])
{
        char hex[33];
        vmsnap_hash_format(h, hex);
        snprintf(out, 42, HASH_PREFIX "%s", hex);
}

static bool label_key_ok(const char *k)
{
        size_t n = strlen(k);
        if (n == 0 || n > 63)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!name_char_ok(k[i]) && k[i] != '/')
                        return false;
        return true;
}

/* Checks a labels object (string values, valid keys, caps); returns 0 or -EINVAL with d. */
static int labels_check(json_t *o, struct vmsnap_diag *d)
{
        if (!json_is_object(o))
                return vmsnap_diag(d, -EINVAL, "labels must be a JSON object");
        if (json_object_size(o) > LABELS_MAX_COUNT)
                return vmsnap_diag(d, -EINVAL, "more than %d labels", LABELS_MAX_COUNT);
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v)
        {
                if (!label_key_ok(k))
                        return vmsnap_diag(
                            d, -EINVAL, "label key '%.80s' is invalid (1-63 of A-Za-z0-9._/-)", k);
                if (!json_is_string(v) || json_string_length(v) > LABEL_VALUE_MAX ||
                    strlen(json_string_value(v)) != json_string_length(v))
                        return vmsnap_diag(d, -EINVAL,
                                           "label '%s' must be a string of at most %d bytes", k,
                                           LABEL_VALUE_MAX);
        }
        return 0;
}

int store_labels_from_json(json_t *o, char out[VMSNAP_LABELS_MAX + 1], struct vmsnap_diag *d)
{
        int r = labels_check(o, d);
        if (r < 0)
                return r;
        _cleanup_free_ char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        if (!text)
                return vmsnap_diag(d, -ENOMEM, "labels: out of memory");
        return store_copy_str(out, VMSNAP_LABELS_MAX + 1, text, "labels", d);
}

int store_labels_normalize(const char *labels, char out[VMSNAP_LABELS_MAX + 1],
                           struct vmsnap_diag *d)
{
        if (!labels || !labels[0]) {
                strcpy(out, "{}");
                return 0;
        }
        json_error_t err;
        json_t *o = json_loads(labels, JSON_REJECT_DUPLICATES, &err);
        if (!o)
                return vmsnap_diag(d, -EINVAL, "labels: %s", err.text);
        int r = store_labels_from_json(o, out, d);
        json_decref(o);
        return r;
}

int store_copy_str(char *dst, size_t size, const char *src, const char *what, struct vmsnap_diag *d)
{
        if (!src)
                src = "";
        size_t n = strlen(src);
        if (n >= size)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s is too long (%zu bytes, at most %zu)",
                                   what, n, size - 1);
        memcpy(dst, src, n + 1);
        return 0;
}
