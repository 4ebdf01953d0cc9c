/* The route table of vmsnapd: method + path pattern → route id. Pure (no server, no
 * library state) so tests, the fuzzer and `vmsnapd --print-routes` share it. */
#ifndef VMSNAP_API_ROUTES_H
#define VMSNAP_API_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#define API_REF_MAX 128 /* longest {ref} path segment accepted */

enum api_route {
        API_ROUTE_HEALTHZ,
        API_ROUTE_METRICS,
        API_ROUTE_SANDBOX_CREATE,
        API_ROUTE_SANDBOX_LIST,
        API_ROUTE_SANDBOX_GET,
        API_ROUTE_SANDBOX_DESTROY,
        API_ROUTE_SANDBOX_PAUSE,
        API_ROUTE_SANDBOX_RESUME,
        API_ROUTE_SANDBOX_EXEC,
        API_ROUTE_SANDBOX_SNAPSHOT,
        API_ROUTE_SANDBOX_PORTS,
        API_ROUTE_SNAPSHOT_CREATE,
        API_ROUTE_SNAPSHOT_LIST,
        API_ROUTE_SNAPSHOT_GET,
        API_ROUTE_SNAPSHOT_DELETE,
        API_ROUTE_SNAPSHOT_SPAWN,
        API_ROUTE_SNAPSHOT_EXPORT, /* api/transfer.c */
        API_ROUTE_PROCESS_LIST, /* working inside a sandbox (api/exec-routes.c, files.c) */
        API_ROUTE_PROCESS_KILL,
        API_ROUTE_FILE_READ,
        API_ROUTE_FILE_WRITE,
        API_ROUTE_FILE_REMOVE,
        API_ROUTE_FILE_STAT,
        API_ROUTE_FILE_LIST,
        API_ROUTE_ARCHIVE_GET,
        API_ROUTE_ARCHIVE_PUT,
        API_ROUTE_REMOTE_LIST, /* the remote store (api/remote-routes.c) */
        API_ROUTE_REMOTE_PUSH,
        API_ROUTE_REMOTE_DELETE,
        API_ROUTE_REMOTE_PULL,
        API_ROUTE_REMOTE_GC,
        API_ROUTE_COUNT,
        API_ROUTE_NONE = API_ROUTE_COUNT, /* no route matched (metrics label "unmatched") */
        API_ROUTE_UI, /* the dashboard's static files (metrics label "/ui/{file}"; never
                         matched by api_route_match: server.c picks the dashboard paths) */
};

struct api_route_info {
        const char *method;  /* "GET", "POST", "PUT", "DELETE" */
        const char *pattern; /* "/v1/sandboxes/{ref}/pause" */
        bool public;         /* served without a token on TCP too */
};

/* What api_target_check found in a raw request target. */
enum api_target {
        API_TARGET_OK,
        API_TARGET_BAD_PATH,  /* a control character or an encoded '/' in the path */
        API_TARGET_BAD_QUERY, /* a control character in the query */
};

/* The method and pattern of route r (API_ROUTE_NONE gives "-" and "unmatched",
 * API_ROUTE_UI "GET" and "/ui/{file}"). */
const struct api_route_info *api_route_info(enum api_route r);

/* Matches a request. HEAD is matched as GET. On a match returns 0, *ret and the {ref}
 * segment (or "") in ref. Returns -ENOENT when no pattern matches the path, -ENAMETOOLONG
 * when a {ref} segment is longer than API_REF_MAX, and -EOPNOTSUPP when the path matches but
 * not the method; allow then lists the methods that would ("GET, DELETE"). */
int api_route_match(const char *method, const char *path, enum api_route *ret,
                    char ref[API_REF_MAX + 1], char *allow, size_t allow_size);

/* Checks a raw request target (the path and query as the client sent them, before
 * percent-decoding) for what no route, ref, name or query value holds and what decoding
 * would silently change: NUL and other control characters anywhere, raw or percent-encoded
 * (%00-%1F, %7F; a decoded NUL would cut a ref short), and an encoded '/' (%2F) in the path
 * (it would split one ref into two segments). Returns API_TARGET_OK, or the part at fault
 * with why ("%00 (NUL) at byte 17 of the path: ...") written for the error message. */
enum api_target api_target_check(const char *raw, char *why, size_t why_size);

#endif
