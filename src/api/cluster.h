/* vmsnapd in cluster mode (docs/cluster.md §3, "vmsnapd --cluster"): where the cluster
 * database is (never a password on the command line), this host's identity, endpoint and
 * capacity, its registration, and the heartbeat thread that also marks silent hosts lost. */
#ifndef VMSNAP_API_CLUSTER_H
#define VMSNAP_API_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>

#define API_CLUSTER_HEARTBEAT_MS_DEFAULT 2000
#define API_CLUSTER_LOST_AFTER_MS_DEFAULT 10000

/* The cluster options of vmsnapd. source NULL: single-host mode. */
struct api_cluster_options {
        const char *source;    /* --cluster: a libpq URL/conninfo without password, or @FILE */
        const char *host_id;   /* --host-id; NULL: <root>/cluster-host-id, made once */
        const char *advertise; /* --advertise HOST:PORT; NULL: the TCP address bound */
        uint32_t vcpus;        /* --capacity; 0: measured */
        uint64_t memory_mib, disk_mib;
        unsigned heartbeat_ms, lost_after_ms; /* 0: the defaults */
};

/* A running cluster member (opaque). */
struct api_cluster;

/* Parses --capacity "VCPUS,MEMORY_MIB,DISK_MIB" into o. -EINVAL naming the bad part. */
int api_cluster_parse_capacity(const char *s, struct api_cluster_options *o, struct vmsnap_diag *d);

/* Reads the connection string o->source names: "@FILE" reads FILE (a regular file of this
 * user, not readable by group or others: it may hold a password); anything else is taken as
 * given and refused when it carries a password (argv is visible to every local user).
 * Writes it NUL-terminated into out. */
int api_cluster_conninfo(const char *source, char *out, size_t size, struct vmsnap_diag *d);

/* Reads the cluster's shared API token from path (a 0600 file of this user: 64 lowercase
 * hex digits, a trailing newline allowed) into out. */
int api_cluster_token_load(const char *path, char out[65], struct vmsnap_diag *d);

/* Joins the cluster: connects (migrating the schema), registers this host with its capacity
 * and endpoint (tcp_url: "http://HOST:PORT" the daemon bound, NULL without TCP), and starts
 * the heartbeat thread. root is the store root (for the host id file and disk capacity). */
int api_cluster_start(const struct api_cluster_options *o, const char *root, const char *tcp_url,
                      struct api_cluster **ret, struct vmsnap_diag *d);

/* Stops the heartbeat thread and disconnects; NULL is fine. The host stays registered: it is
 * marked lost after the timeout unless it starts again (a new epoch) before. */
void api_cluster_stop(struct api_cluster *c);

/* Cluster bookkeeping of one operation on a local sandbox: its lease and fencing token. */
struct api_cluster_op {
        struct api_cluster *c; /* NULL: single-host mode, nothing to do */
        char id[64];
        int64_t token; /* 0: no lease held */
        bool pause;    /* a pause: op_end records `pushed` as the row's pause snapshot */
        char pushed[64]; /* the pause snapshot now in the remote store; "" when none */
};

struct vmsnap_sandbox;
struct vmsnap_host;

/* Records a sandbox this host just made (create/spawn) in the cluster, owned by this host.
 * c NULL: nothing. -EAGAIN (503) when the database cannot be reached. */
int api_cluster_publish(struct api_cluster *c, const struct vmsnap_sandbox *sb,
                        struct vmsnap_diag *d);

/* Before operation op ("pause", "resume", "destroy") on local sandbox sb: takes its cluster
 * lease (adopting a sandbox the cluster does not know yet) and publishes the transitional
 * state. -EBUSY (409) when another operation, on any host, holds it; -EAGAIN (503) when the
 * database cannot be reached (nothing was started). c NULL: nothing (single-host mode). */
int api_cluster_op_begin(struct api_cluster *c, const struct vmsnap_sandbox *sb, const char *op,
                         const char *transitional, struct api_cluster_op *ret,
                         struct vmsnap_diag *d);

/* After the operation, whatever its outcome: publishes the state the local sandbox is in
 * now ("stopped" when destroyed) and releases the lease under its token. A failure to
 * publish is logged; the row then keeps the transitional state under this host's lease. */
void api_cluster_op_end(struct api_cluster_op *op, struct vmsnap_host *host, bool destroyed);

/* Which other host owns sandbox ref (an id) in the cluster: returns 1 with its id, its
 * endpoint and whether it is alive; 0 when the cluster does not know ref or it is this
 * host's (c NULL too); -EAGAIN (503) when the database cannot be reached. */
int api_cluster_owner(struct api_cluster *c, const char *ref, char owner[64],
                      char endpoint[256], bool *ret_alive, struct vmsnap_diag *d);

/* This host's id in the cluster. */
const char *api_cluster_self(const struct api_cluster *c);

/* Where a new sandbox goes (docs/cluster.md §4): reserves a row `creating` under a new id
 * (written into id) on the host placement chooses for vcpus/memory_mib and template_id
 * (NULL or "": none; a host that caches it wins), or on pin (NULL: any). Writes the chosen
 * host's id and endpoint. -ENOSPC (no host has room), -ENOENT (the pinned host is unknown
 * or lost), -EAGAIN (503). */
int api_cluster_place(struct api_cluster *c, const char *template_id, uint32_t vcpus,
                      uint64_t memory_mib, const char *pin, char id[64], char host[64],
                      char endpoint[256], struct vmsnap_diag *d);

/* Whether id is a row placed on this host and still `creating` (a forwarded create may use
 * that id). 1 yes, 0 no, -EAGAIN (503). */
int api_cluster_placed_here(struct api_cluster *c, const char *id, struct vmsnap_diag *d);

/* Ends a placed create: the row takes sb's state (sb NULL: the create failed and the row is
 * dropped). A failure is logged. */
void api_cluster_created(struct api_cluster *c, const char *id, const struct vmsnap_sandbox *sb);

/* Which alive host placement would choose now for vcpus/memory_mib and template_id (a read:
 * nothing is reserved). -ENOSPC when none has room, -EAGAIN (503). */
int api_cluster_choose(struct api_cluster *c, const char *template_id, uint32_t vcpus,
                       uint64_t memory_mib, char host[64], char endpoint[256],
                       struct vmsnap_diag *d);

/* Drops the reservation of a placed sandbox on host that never got made there (logged). */
void api_cluster_unplace(struct api_cluster *c, const char *id, const char *host);

/* Records that this host caches template_id (for placement's locality); logged on failure. */
void api_cluster_template_here(struct api_cluster *c, const char *template_id);

struct vmsnap_cluster_sandbox;

/* Reads the cluster's sandboxes (stopped ones only when all) into *ret (free()), oldest
 * first. -EAGAIN (503). */
int api_cluster_list(struct api_cluster *c, bool all, struct vmsnap_cluster_sandbox **ret,
                     size_t *ret_n, struct vmsnap_diag *d);

/* Resume of sandbox id whose owner is lost (docs/cluster.md §6.5): takes its lease (lease_op
 * `resume`) and checks that it is paused with a pause snapshot in the remote store; the row
 * is left as it is until api_cluster_op_end publishes the outcome, which makes this host its
 * owner (or api_cluster_op_abandon, which leaves it to the lost host). Writes the row into
 * *ret. -EBUSY (409: busy, not paused, no pushed snapshot, or its owner is alive), -ENOENT,
 * -EAGAIN (503). */
int api_cluster_takeover(struct api_cluster *c, const char *id, struct vmsnap_cluster_sandbox *ret,
                         struct api_cluster_op *op, struct vmsnap_diag *d);

/* Releases op's lease without publishing anything (the operation did not start). */
void api_cluster_op_abandon(struct api_cluster_op *op);

#endif
