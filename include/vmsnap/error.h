/* vmsnap error diagnostics: negative errno plus a message a person can act on. */
#ifndef VMSNAP_ERROR_H
#define VMSNAP_ERROR_H

#include <stddef.h>

/* Caller-owned diagnostic. Library calls that fail fill it (when non-NULL) with a message
 * naming the file, the id and the problem; the return value carries the errno. */
struct vmsnap_diag {
        int err;        /* negative errno of the last failure, 0 when none */
        char msg[1024]; /* NUL-terminated, empty when none */
};

/* Records a failure in d (may be NULL) and returns err, so callers write
 * `return vmsnap_diag(d, -EBADMSG, "%s: header checksum mismatch", path);`. */
int vmsnap_diag(struct vmsnap_diag *d, int err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in d with more context ("ctx: old message"); returns d->err.
 * Never returns success: with d == NULL (or no error recorded) it returns -EIO, so
 * `return vmsnap_diag_prefix(d, ...)` on an error path stays an error. */
int vmsnap_diag_prefix(struct vmsnap_diag *d, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* Clears d (may be NULL). */
void vmsnap_diag_clear(struct vmsnap_diag *d);

#endif
