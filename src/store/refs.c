/* Refs: what users type to name a snapshot. Exact id, then exact name, then a unique id
 * prefix of at least 3 characters; only ready rows. An ambiguous prefix lists every
 * candidate so the user can pick a longer one. */
#include "store/internal.h"
#include "util/cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX_MIN     3
#define MAX_CANDIDATES 10

static int lookup(struct vmsnap_store *s, const char *sql, const char *arg,
                  struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s, sql, &st, d);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return store_sql_error(s, rc, "resolving a snapshot ref", d);
        store_row_read(st, ret);
        return 0;
}

static bool prefix_chars(const char *p)
{
        for (; *p; p++)
                if (!isxdigit((unsigned char)*p) && *p != '-')
                        return false;
        return true;
}

/* Appends "id (name)" of each candidate to msg. */
static void list_candidates(sqlite3_stmt *st, char *msg, size_t size, int *count)
{
        size_t len = strlen(msg);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *id = (const char *)sqlite3_column_text(st, 0);
                const char *name = (const char *)sqlite3_column_text(st, 1);
                if (++*count > MAX_CANDIDATES) {
                        snprintf(msg + len, size - len, ", ...");
                        return;
                }
                int n = snprintf(msg + len, size - len, "%s%s%s%s%s", *count > 1 ? ", " : "",
                                 id ? id : "", name ? " (" : "", name ? name : "", name ? ")" : "");
                if (n < 0 || (size_t)n >= size - len)
                        return;
                len += (size_t)n;
        }
}

/* Resolves a lowercase id prefix; -ENOENT, -ENOTUNIQ (d lists candidates) or 0. */
static int by_prefix(struct vmsnap_store *s, const char *ref, const char *prefix,
                     struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s,
                              "SELECT id, name FROM snapshots WHERE state = 'ready' "
                              "AND id GLOB ?1 || '*' ORDER BY id LIMIT "
                              "11",
                              &st, d);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
        char list[768] = "";
        int count = 0;
        list_candidates(st, list, sizeof(list), &count);
        if (count == 0)
                return -ENOENT;
        if (count > 1)
                return vmsnap_diag(d, -ENOTUNIQ,
                                   "'%s' is ambiguous: it is a prefix of %s%d snapshot ids: %s; "
                                   "use more characters",
                                   ref, count > MAX_CANDIDATES ? "more than " : "",
                                   MIN(count, MAX_CANDIDATES), list);
        char id[VMSNAP_ID_LEN + 1];
        snprintf(id, sizeof(id), "%.*s", VMSNAP_ID_LEN, list);
        return store_row_get(s, id, ret, d);
}

/* Writes ref into out with every byte that is not printable ASCII as \xNN (a message must
 * not carry control characters to a terminal or a log). */
static void escape_ref(const char *ref, size_t len, char *out, size_t size)
{
        size_t k = 0;
        for (size_t i = 0; i < len && k + 5 < size; i++) {
                unsigned char c = (unsigned char)ref[i];
                if (c >= 0x20 && c < 0x7f && c != '\\')
                        out[k++] = (char)c;
                else
                        k += (size_t)snprintf(out + k, size - k, "\\x%02x", c);
        }
        out[k] = '\0';
}

int vmsnap_store_ref_check(const char *ref, size_t len, struct vmsnap_diag *d)
{
        if (!ref || len == 0)
                return vmsnap_diag(d, -EINVAL, "empty snapshot ref");
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)ref[i];
                if (c >= 0x20 && c != 0x7f)
                        continue;
                char shown[128];
                escape_ref(ref, MIN(len, (size_t)24), shown, sizeof(shown));
                return vmsnap_diag(d, -EINVAL,
                                   "snapshot ref '%s%s' contains %s (byte 0x%02x at offset "
                                   "%zu); a ref is an id, a name or an id prefix",
                                   shown, len > 24 ? "..." : "",
                                   c ? "a control character" : "a NUL byte", c, i);
        }
        return 0;
}

int vmsnap_store_resolve(struct vmsnap_store *s, const char *ref, struct vmsnap_snapshot *ret,
                         struct vmsnap_diag *d)
{
        size_t n = ref ? strlen(ref) : 0;
        int r = vmsnap_store_ref_check(ref, n, d);
        if (r < 0)
                return r;
        char lower[VMSNAP_ID_LEN + 1] = "";
        if (n <= VMSNAP_ID_LEN)
                for (size_t i = 0; i <= n; i++)
                        lower[i] = (char)tolower((unsigned char)ref[i]);

        r = -ENOENT;
        if (store_id_valid(lower))
                r = lookup(s,
                           "SELECT " STORE_COLUMNS " FROM snapshots "
                           "WHERE id = ?1 AND state = 'ready'",
                           lower, ret, d);
        if (r == -ENOENT)
                r = lookup(s,
                           "SELECT " STORE_COLUMNS " FROM snapshots "
                           "WHERE name = ?1 AND state = 'ready'",
                           ref, ret, d);
        if (r == -ENOENT && n >= PREFIX_MIN && n < VMSNAP_ID_LEN && prefix_chars(lower))
                r = by_prefix(s, ref, lower, ret, d);
        if (r != -ENOENT)
                return r;
        if (n < PREFIX_MIN && prefix_chars(lower))
                return vmsnap_diag(d, -ENOENT,
                                   "no snapshot named '%s' (an id prefix needs at least %d "
                                   "characters)",
                                   ref, PREFIX_MIN);
        return vmsnap_diag(d, -ENOENT, "no snapshot matches '%s' (not an id, name or id prefix)",
                           ref);
}

int vmsnap_store_resolve_many(struct vmsnap_store *s, const char *const *refs, size_t n,
                              struct vmsnap_snapshot **ret, size_t *ret_n, struct vmsnap_diag *d)
{
        _cleanup_free_ struct vmsnap_snapshot *v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                int r = vmsnap_store_resolve(s, refs[i], &v[k], d);
                if (r < 0)
                        return r;
                bool dup = false;
                for (size_t j = 0; j < k && !dup; j++)
                        dup = strcmp(v[j].id, v[k].id) == 0;
                if (!dup)
                        k++;
        }
        *ret = TAKE_PTR(v);
        *ret_n = k;
        return 0;
}
