/* vmsnap cluster control plane on Postgres (libpq): schema, hosts, placement, sandbox leases.
 * Design: docs/cluster.md. Every call is one Postgres transaction (or one statement); a
 * failure leaves nothing half-applied. Errors are negative errno plus a diagnostic:
 * -ECONNRESET when the server connection broke (the next call reconnects), -EBUSY for a
 * lease someone else holds, -ESTALE for a host or lease that is no longer the caller's. */
#ifndef VMSNAP_CLUSTER_H
#define VMSNAP_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>

#define VMSNAP_CLUSTER_ID_MAX       64  /* ids (host, sandbox, template): 1..63 bytes */
#define VMSNAP_CLUSTER_ENDPOINT_MAX 256 /* host endpoint, e.g. "10.0.0.5:7420" */

/* An open connection to the cluster database (opaque; one per thread). */
struct vmsnap_cluster;

/* Connects to url (a libpq URI or key=value string) and applies any pending schema
 * migration, each in its own transaction. Returns 0 and *ret_c, or -ECONNREFUSED (server
 * unreachable), -EPROTONOSUPPORT (schema newer than this build), -ECONNRESET, -EIO. */
int vmsnap_cluster_open(const char *url, struct vmsnap_cluster **ret_c, struct vmsnap_diag *d);

/* Closes the connection; NULL is fine. */
void vmsnap_cluster_close(struct vmsnap_cluster *c);

/* The schema version this build migrates to. */
int vmsnap_cluster_schema_latest(void);

/* Reads the newest applied migration into *ret_version (0: none). */
int vmsnap_cluster_schema_version(struct vmsnap_cluster *c, int *ret_version,
                                  struct vmsnap_diag *d);

/* A host as it registers: identity, where its API is, and its capacity. */
struct vmsnap_cluster_host_info {
        char id[VMSNAP_CLUSTER_ID_MAX];
        char endpoint[VMSNAP_CLUSTER_ENDPOINT_MAX];
        uint32_t vcpus;
        uint64_t memory_mib;
        uint64_t disk_mib;
};

/* Registers (or re-registers) a host: alive, heartbeat now, a new epoch (its incarnation;
 * leases of older epochs are void). Returns 0 and *ret_epoch; -EINVAL for a bad info. */
int vmsnap_cluster_host_register(struct vmsnap_cluster *c, const struct vmsnap_cluster_host_info *h,
                                 int64_t *ret_epoch, struct vmsnap_diag *d);

/* Records a heartbeat of host id in epoch. Returns 0, or -ESTALE when the host was marked
 * lost or re-registered since (it must register again and reconcile). */
int vmsnap_cluster_host_heartbeat(struct vmsnap_cluster *c, const char *id, int64_t epoch,
                                  struct vmsnap_diag *d);

/* Marks lost every alive host but except_id (may be NULL) whose last heartbeat is older than
 * timeout_ms by the server's clock, and in the same statement their sandboxes that held
 * memory (creating, running, pausing, resuming, stopping) lost; paused ones stay paused.
 * Returns how many hosts it marked (>= 0) or a negative errno. */
int vmsnap_cluster_hosts_mark_lost(struct vmsnap_cluster *c, uint32_t timeout_ms,
                                   const char *except_id, struct vmsnap_diag *d);

/* Reads whether host id is alive into *ret_alive and its epoch into *ret_epoch; -ENOENT. */
int vmsnap_cluster_host_state(struct vmsnap_cluster *c, const char *id, bool *ret_alive,
                              int64_t *ret_epoch, struct vmsnap_diag *d);

/* Reads host id's advertised endpoint ("HOST:PORT") and whether it is alive; -ENOENT. */
int vmsnap_cluster_host_endpoint(struct vmsnap_cluster *c, const char *id,
                                 char endpoint[VMSNAP_CLUSTER_ENDPOINT_MAX], bool *ret_alive,
                                 struct vmsnap_diag *d);

/* A placement candidate: capacity, what its sandboxes hold, template locality. */
struct vmsnap_cluster_host {
        char id[VMSNAP_CLUSTER_ID_MAX];
        bool alive;
        bool has_template; /* caches the requested template's chunks */
        uint32_t vcpus;
        uint64_t memory_mib;
        uint64_t disk_mib;
        uint64_t used_vcpus;
        uint64_t used_memory_mib;
        uint64_t used_disk_mib;
};

/* What a new sandbox needs, and an optional pin (`--host`). */
struct vmsnap_cluster_request {
        uint32_t vcpus;
        uint64_t memory_mib;
        uint64_t disk_mib;
        const char *pin_host; /* NULL: any host */
};

/* Chooses a host for r among hosts[0..n) (pure; docs/cluster.md §4). Returns 0 and
 * *ret_index; -ENOENT (pinned host unknown or lost), -ENOSPC (no host fits), -EINVAL. */
int vmsnap_cluster_place(const struct vmsnap_cluster_host *hosts, size_t n,
                         const struct vmsnap_cluster_request *r, size_t *ret_index,
                         struct vmsnap_diag *d);

/* Loads every host with its usage and whether it caches template_id (may be NULL) into a
 * malloc'ed array *ret_hosts (free()) of *ret_n entries, ordered by id. */
int vmsnap_cluster_hosts_load(struct vmsnap_cluster *c, const char *template_id,
                              struct vmsnap_cluster_host **ret_hosts, size_t *ret_n,
                              struct vmsnap_diag *d);

/* Records that host_id caches template_id's chunks (idempotent). */
int vmsnap_cluster_template_cached(struct vmsnap_cluster *c, const char *host_id,
                                   const char *template_id, struct vmsnap_diag *d);

/* A sandbox as the cluster sees it. */
struct vmsnap_cluster_sandbox {
        char id[VMSNAP_CLUSTER_ID_MAX];
        char host_id[VMSNAP_CLUSTER_ID_MAX];
        char state[16]; /* creating running pausing paused resuming stopping stopped error lost */
        char template_id[VMSNAP_CLUSTER_ID_MAX]; /* "" when none */
        uint32_t vcpus;
        uint64_t memory_mib;
        uint64_t disk_mib;
        char lease_host[VMSNAP_CLUSTER_ID_MAX]; /* "" when free */
        int64_t lease_token;
        char pause_snapshot[VMSNAP_CLUSTER_ID_MAX]; /* in the remote store; "" when none */
};

/* Places a new sandbox (state `creating`) for r: chooses a host, then in one transaction
 * locks that host's row, re-checks its free capacity and inserts the row (racing creates
 * never overfill a host; a lost race re-places). Writes the chosen host into
 * ret_host_id. -EEXIST (id taken), -ENOENT, -ENOSPC, -EAGAIN (kept losing races). */
int vmsnap_cluster_sandbox_create(struct vmsnap_cluster *c, const char *id,
                                  const char *template_id, const struct vmsnap_cluster_request *r,
                                  char ret_host_id[VMSNAP_CLUSTER_ID_MAX], struct vmsnap_diag *d);

/* Records a sandbox that already exists on host_id (created there, or made before the host
 * joined the cluster) in state, owned by host_id, no lease. -EEXIST when the cluster has a
 * row for id already (left unchanged), -ESTALE when host_id is not alive in epoch. */
int vmsnap_cluster_sandbox_adopt(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                 int64_t epoch, const char *state, const char *template_id,
                                 uint32_t vcpus, uint64_t memory_mib, struct vmsnap_diag *d);

/* Reads sandbox id into *ret; -ENOENT. */
int vmsnap_cluster_sandbox_get(struct vmsnap_cluster *c, const char *id,
                               struct vmsnap_cluster_sandbox *ret, struct vmsnap_diag *d);

/* Reads every sandbox of the cluster (stopped ones only when all) into a malloc'ed array
 * *ret (free()) of *ret_n rows, oldest first. */
int vmsnap_cluster_sandbox_list(struct vmsnap_cluster *c, bool all,
                                struct vmsnap_cluster_sandbox **ret, size_t *ret_n,
                                struct vmsnap_diag *d);

/* Ends the creation of a placed sandbox (a row in `creating` on host_id, no lease): sets
 * state and the vCPUs and memory it really has (the reservation may have guessed; 0 keeps
 * them) — or, state NULL, deletes the row (the create failed and holds nothing). -ESTALE
 * when no such row is in `creating` on host_id any more. */
int vmsnap_cluster_sandbox_created(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                   const char *state, uint32_t vcpus, uint64_t memory_mib,
                                   struct vmsnap_diag *d);

/* Records under the lease token the pause snapshot of sandbox id that is in the remote
 * store (NULL or "": none; a resume elsewhere is then impossible). -ESTALE as
 * vmsnap_cluster_sandbox_set_state. */
int vmsnap_cluster_sandbox_set_snapshot(struct vmsnap_cluster *c, const char *id,
                                        const char *host_id, int64_t token, const char *snapshot,
                                        struct vmsnap_diag *d);

/* Takes sandbox id's lease for operation op ("pause", "resume", …) as host_id in epoch.
 * Exactly one of racing callers wins. Returns 0 and *ret_token (the fencing token);
 * -EBUSY (held by a live holder), -ENOENT (no such sandbox), -ESTALE (the caller is not
 * alive in that epoch). */
int vmsnap_cluster_lease_acquire(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                 int64_t epoch, const char *op, int64_t *ret_token,
                                 struct vmsnap_diag *d);

/* Sets sandbox id's state (and its owner to host_id) under the lease token. -ESTALE when
 * the lease is no longer host_id's with that token; -EINVAL for an unknown state. */
int vmsnap_cluster_sandbox_set_state(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                     int64_t token, const char *state, struct vmsnap_diag *d);

/* Sets the final state of an operation and releases its lease, in one statement, under the
 * token; -ESTALE as vmsnap_cluster_sandbox_set_state. */
int vmsnap_cluster_sandbox_finish(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                  int64_t token, const char *state, struct vmsnap_diag *d);

/* Releases the lease under its token; -ESTALE when it is no longer the caller's. */
int vmsnap_cluster_lease_release(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                 int64_t token, struct vmsnap_diag *d);

#endif
