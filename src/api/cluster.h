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

#endif
