/* Route matching: a short table walked segment by segment; "{ref}" matches one non-empty
 * segment. Two dozen routes do not need a trie. And the check of the raw request target that
 * runs before percent-decoding can hide what the client sent. */
#include "api/routes.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct api_route_info routes[API_ROUTE_UI + 1] = {
        [API_ROUTE_HEALTHZ] = {"GET", "/healthz", true},
        [API_ROUTE_METRICS] = {"GET", "/metrics", false},
        [API_ROUTE_SANDBOX_CREATE] = {"POST", "/v1/sandboxes", false},
        [API_ROUTE_SANDBOX_LIST] = {"GET", "/v1/sandboxes", false},
        [API_ROUTE_SANDBOX_GET] = {"GET", "/v1/sandboxes/{ref}", false},
        [API_ROUTE_SANDBOX_DESTROY] = {"DELETE", "/v1/sandboxes/{ref}", false},
        [API_ROUTE_SANDBOX_PAUSE] = {"POST", "/v1/sandboxes/{ref}/pause", false},
        [API_ROUTE_SANDBOX_RESUME] = {"POST", "/v1/sandboxes/{ref}/resume", false},
        [API_ROUTE_SANDBOX_EXEC] = {"POST", "/v1/sandboxes/{ref}/exec", false},
        [API_ROUTE_SANDBOX_SNAPSHOT] = {"POST", "/v1/sandboxes/{ref}/snapshot", false},
        [API_ROUTE_SANDBOX_PORTS] = {"POST", "/v1/sandboxes/{ref}/ports", false},
        [API_ROUTE_SNAPSHOT_CREATE] = {"POST", "/v1/snapshots", false},
        [API_ROUTE_SNAPSHOT_LIST] = {"GET", "/v1/snapshots", false},
        [API_ROUTE_SNAPSHOT_GET] = {"GET", "/v1/snapshots/{ref}", false},
        [API_ROUTE_SNAPSHOT_DELETE] = {"DELETE", "/v1/snapshots/{ref}", false},
        [API_ROUTE_SNAPSHOT_SPAWN] = {"POST", "/v1/snapshots/{ref}/sandboxes", false},
        [API_ROUTE_SNAPSHOT_EXPORT] = {"GET", "/v1/snapshots/{ref}/export", false},
        [API_ROUTE_PROCESS_LIST] = {"GET", "/v1/sandboxes/{ref}/processes", false},
        [API_ROUTE_PROCESS_KILL] = {"POST", "/v1/sandboxes/{ref}/processes/kill", false},
        [API_ROUTE_FILE_READ] = {"GET", "/v1/sandboxes/{ref}/files", false},
        [API_ROUTE_FILE_WRITE] = {"PUT", "/v1/sandboxes/{ref}/files", false},
        [API_ROUTE_FILE_REMOVE] = {"DELETE", "/v1/sandboxes/{ref}/files", false},
        [API_ROUTE_FILE_STAT] = {"GET", "/v1/sandboxes/{ref}/files/stat", false},
        [API_ROUTE_FILE_LIST] = {"GET", "/v1/sandboxes/{ref}/files/list", false},
        [API_ROUTE_ARCHIVE_GET] = {"GET", "/v1/sandboxes/{ref}/archive", false},
        [API_ROUTE_ARCHIVE_PUT] = {"PUT", "/v1/sandboxes/{ref}/archive", false},
        [API_ROUTE_REMOTE_LIST] = {"GET", "/v1/remote/snapshots", false},
        [API_ROUTE_REMOTE_PUSH] = {"POST", "/v1/remote/snapshots", false},
        [API_ROUTE_REMOTE_DELETE] = {"DELETE", "/v1/remote/snapshots/{ref}", false},
        [API_ROUTE_REMOTE_PULL] = {"POST", "/v1/remote/snapshots/{ref}/pull", false},
        [API_ROUTE_REMOTE_GC] = {"POST", "/v1/remote/gc", false},
        [API_ROUTE_NONE] = {"-", "unmatched", false},
        [API_ROUTE_UI] = {"GET", "/ui/{file}", true},
};

const struct api_route_info *api_route_info(enum api_route r)
{
        if ((unsigned)r > API_ROUTE_UI)
                r = API_ROUTE_NONE;
        return &routes[r];
}

/* Length of the segment starting at s (up to the next '/' or the end). */
static size_t segment_len(const char *s)
{
        return strcspn(s, "/");
}

/* Matches path against pattern. Returns 1 on a match (ref filled), 0 when it does not
 * match, -ENAMETOOLONG when it would match but the {ref} segment is too long. */
static int match_pattern(const char *pattern, const char *path, char ref[API_REF_MAX + 1])
{
        const char *p = pattern, *s = path;
        bool ref_too_long = false;
        ref[0] = '\0';
        while (*p && *s) {
                if (*p != '/' || *s != '/')
                        return 0;
                p++, s++;
                size_t pl = segment_len(p), sl = segment_len(s);
                if (sl == 0)
                        return 0;
                if (pl == 5 && strncmp(p, "{ref}", 5) == 0) {
                        if (sl > API_REF_MAX)
                                ref_too_long = true;
                        else
                                snprintf(ref, API_REF_MAX + 1, "%.*s", (int)sl, s);
                } else if (pl != sl || strncmp(p, s, pl) != 0) {
                        return 0;
                }
                p += pl, s += sl;
        }
        if (*p || *s)
                return 0;
        return ref_too_long ? -ENAMETOOLONG : 1;
}

static void allow_add(char *allow, size_t size, const char *method)
{
        size_t n = strlen(allow);
        if (strstr(allow, method))
                return;
        snprintf(allow + n, size - n, "%s%s", n ? ", " : "", method);
}

int api_route_match(const char *method, const char *path, enum api_route *ret,
                    char ref[API_REF_MAX + 1], char *allow, size_t allow_size)
{
        const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;
        bool path_matched = false, too_long = false;
        if (allow_size)
                allow[0] = '\0';
        for (unsigned i = 0; i < API_ROUTE_COUNT; i++) {
                char seg[API_REF_MAX + 1];
                int m = match_pattern(routes[i].pattern, path, seg);
                if (m == 0)
                        continue;
                if (m < 0) {
                        too_long = true;
                        continue;
                }
                path_matched = true;
                if (allow_size) {
                        allow_add(allow, allow_size, routes[i].method);
                        if (strcmp(routes[i].method, "GET") == 0)
                                allow_add(allow, allow_size, "HEAD");
                }
                if (strcmp(routes[i].method, want) == 0) {
                        memcpy(ref, seg, sizeof(seg));
                        *ret = (enum api_route)i;
                        return 0;
                }
        }
        if (path_matched)
                return -EOPNOTSUPP;
        return too_long ? -ENAMETOOLONG : -ENOENT;
}

static bool is_control(unsigned char c)
{
        return c < 0x20 || c == 0x7f;
}

/* The byte that "%XY" at s encodes, or -1 when s is not a percent escape. */
static int escaped_byte(const char *s)
{
        if (s[0] != '%' || !isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2]))
                return -1;
        char hex[3] = {s[1], s[2], '\0'};
        return (int)strtol(hex, NULL, 16);
}

enum api_target api_target_check(const char *raw, char *why, size_t why_size)
{
        bool in_query = false;
        for (size_t i = 0; raw[i]; i++) {
                const char *part = in_query ? "query" : "path";
                enum api_target bad = in_query ? API_TARGET_BAD_QUERY : API_TARGET_BAD_PATH;
                unsigned char c = (unsigned char)raw[i];
                int e = escaped_byte(raw + i);
                if (c == '?' && !in_query) {
                        in_query = true;
                } else if (is_control(c)) {
                        snprintf(why, why_size,
                                 "the %s holds the control character 0x%02x at byte %zu: ids, "
                                 "names and query values never contain NUL or control "
                                 "characters",
                                 part, c, i);
                        return bad;
                } else if (e >= 0 && is_control((unsigned char)e)) {
                        snprintf(why, why_size,
                                 "the %s holds %.3s (%s) at byte %zu: ids, names and query "
                                 "values never contain NUL or control characters",
                                 part, raw + i, e == 0 ? "NUL" : "a control character", i);
                        return bad;
                } else if (e == '/' && !in_query) {
                        snprintf(why, why_size,
                                 "the path holds %.3s (an encoded '/') at byte %zu: an id or "
                                 "name never contains '/'",
                                 raw + i, i);
                        return bad;
                }
        }
        return API_TARGET_OK;
}
