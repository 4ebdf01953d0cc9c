/* A small QMP client: QEMU's JSON monitor over a Unix socket. One connection, one command at
 * a time; asynchronous events are skipped. Commands carry an "id" so that a reply that comes
 * after its command timed out is never taken for the answer to a later one. */
#ifndef VMSNAP_VMM_QMP_H
#define VMSNAP_VMM_QMP_H

#include <stddef.h>

#include <jansson.h>
#include <vmsnap/error.h>

#define VMM_QMP_TIMEOUT_MS 10000 /* default for quick commands (stop, cont, query-*) */

struct vmm_qmp; /* opaque */

/* Connects to the monitor at path, reads the greeting and negotiates capabilities, all
 * within timeout_ms. Returns 0 and *ret, -ECONNRESET when QEMU closed the connection (it
 * exited), -ETIMEDOUT, or -errno (with d). */
int vmm_qmp_connect(const char *path, int timeout_ms, struct vmm_qmp **ret, struct vmsnap_diag *d);

/* Runs command with args (stolen; NULL for none) and, when fd >= 0, passes fd with it
 * (SCM_RIGHTS, for getfd). Returns 0 and the "return" value in *ret (caller decrefs; ret may
 * be NULL), -EIO when QEMU answered an error (d has its class and description),
 * -ECONNRESET, -ETIMEDOUT, or -errno. */
int vmm_qmp_execute(struct vmm_qmp *q, const char *command, json_t *args, int fd, int timeout_ms,
                    json_t **ret, struct vmsnap_diag *d);

/* Closes the connection; accepts NULL. */
void vmm_qmp_close(struct vmm_qmp *q);

/* Classifies one line of the QMP stream for the command with id `id`. Returns 1 with the
 * "return" value (new reference) in *ret for its success, -EIO (with d) for its error, 0 for
 * anything to skip (an event, the greeting, another id), -EPROTO (with d) when the line is
 * not a JSON object. Exposed for the fuzz target. */
int vmm_qmp_parse_reply(const char *line, size_t len, json_int_t id, const char *command,
                        json_t **ret, struct vmsnap_diag *d);

#endif
