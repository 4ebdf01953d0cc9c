/* A small HTTP/1.1 JSON client for VMM API sockets (Firecracker, Cloud Hypervisor): one
 * request per connection over a Unix socket, via libcurl. The caller sets every timeout;
 * steps that copy guest memory use vmm_http_memory_timeout_ms(). */
#ifndef VMSNAP_VMM_HTTP_H
#define VMSNAP_VMM_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>

#define VMM_HTTP_TIMEOUT_MS 10000      /* configuration calls that touch no guest memory */
#define VMM_HTTP_MAX_BODY   (4u << 20) /* longest reply body accepted */

struct vmm_http_reply {
        long status; /* HTTP status code */
        char *body;  /* NUL-terminated, malloc'd ("" when empty) */
        size_t len;
};

/* Sends `method path` with body (NULL: none; a PUT without a body sends Content-Length: 0)
 * to the server on socket_path and reads the whole reply. Returns 0 and *ret for any HTTP
 * status, or a transport error: -ECONNREFUSED/-ENOENT (nobody listens), -ETIMEDOUT,
 * -ECONNRESET (the server closed without answering), -EMSGSIZE, -EIO; d says which. */
int vmm_http_request(const char *socket_path, const char *method, const char *path,
                     const json_t *body, long timeout_ms, struct vmm_http_reply *ret,
                     struct vmsnap_diag *d);

/* Frees the body; accepts a zeroed reply. */
void vmm_http_reply_free(struct vmm_http_reply *r);

/* Like vmm_http_request, but a non-2xx status is an error too: its message is the VMM's
 * own (see vmm_http_fault) and the errno follows vmm_http_status_errno. On success, when
 * ret_json is not NULL, the body is parsed (NULL for an empty body). */
int vmm_http_call(const char *socket_path, const char *method, const char *path, const json_t *body,
                  long timeout_ms, json_t **ret_json, struct vmsnap_diag *d);

/* The error text of a failed reply: Firecracker's {"fault_message": "..."}, Cloud
 * Hypervisor's ["outer error", "cause", ...] joined with ": ", else the body itself (one
 * line, truncated), or the status when the body is empty. */
void vmm_http_fault(const struct vmm_http_reply *r, char *buf, size_t size);

/* The negative errno for an HTTP error status: 400 -EINVAL, 404 -ENOENT, 405/409 -EBUSY,
 * 413 -E2BIG, 429 -EAGAIN, anything else -EIO. */
int vmm_http_status_errno(long status);

/* Timeout for a call that moves guest memory (snapshot create/load, boot): 10 s plus 1 s
 * per started 256 MiB, so a 16 GiB guest gets 74 s instead of a fixed 10 s. */
long vmm_http_memory_timeout_ms(uint64_t memory);

#endif
