/* vmsnapd's HTTP server: listeners (Unix socket without auth, TCP with a bearer token and a
 * connection gate against slow strangers) on libmicrohttpd with one thread per connection,
 * so a long pause on one sandbox never holds up requests for another (the sandbox layer
 * serializes per sandbox). */
#ifndef VMSNAP_API_SERVER_H
#define VMSNAP_API_SERVER_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include <vmsnap/error.h>
#include <vmsnap/remote.h>
#include <vmsnap/sandbox.h>
#include <vmsnap/store.h>

#include "api/gate.h"
#include "api/metrics.h"

#define API_TOKEN_HEX 64 /* 32 random bytes in hex */

struct api_listener;
struct api_cluster;

/* The daemon's state shared by every connection thread. */
struct api_server {
        struct vmsnap_host *host; /* its store is used under vmsnap_host_store_lock */
        char root[PATH_MAX];
        char token[API_TOKEN_HEX + 1]; /* required on TCP */
        struct api_metrics metrics;
        struct api_gate_limits gate_limits; /* of the TCP listener; set before api_listen_tcp */
        struct timespec started;            /* CLOCK_MONOTONIC */
        bool have_remote;                   /* remote set at start (api/remote-routes.h) */
        struct vmsnap_remote_config remote; /* holds a secret: never logged, wiped at exit */
        uint64_t chunk_cache_size;          /* limit of <root>/chunk-cache; 0 = none */
        pthread_mutex_t pull_lock;          /* one pull of a missing snapshot at a time */
        bool shutting_down;                 /* __atomic */
        unsigned in_flight;    /* __atomic: requests between first byte and completion */
        struct api_gate *gate; /* __atomic: the TCP listener's, for /metrics; NULL without */
        struct api_listener *listeners[2]; /* written by the main thread only */
        bool cluster_mode;              /* --cluster given: operations wait for cluster */
        bool forward;                   /* --cluster-token: token is the cluster's; forward */
        struct api_cluster *cluster;    /* __atomic: set once joined (api/cluster.h) */
        unsigned n_listeners;
};

/* Starts serving on a Unix socket at path (mode 0600, no auth). A stale socket file is
 * replaced; a live one (another daemon answers) is -EADDRINUSE. Returns 0 or -errno. */
int api_listen_unix(struct api_server *srv, const char *path, struct vmsnap_diag *d);

/* Starts serving on TCP "HOST:PORT" ("[v6]:PORT" too; PORT 0 picks a free one) with the
 * bearer token required, behind a connection gate with srv->gate_limits (gate.h). Writes
 * "http://HOST:PORT" actually bound into url. Returns 0 or -errno. */
int api_listen_tcp(struct api_server *srv, const char *addr, char *url, size_t url_size,
                   struct vmsnap_diag *d);

/* Stops accepting connections (requests on open connections get 503) and removes the Unix
 * socket file. */
void api_server_quiesce(struct api_server *srv);

/* Requests in flight now. */
unsigned api_server_in_flight(struct api_server *srv);

/* Closes every connection and frees the listeners; call after the requests in flight are
 * done. */
void api_server_stop(struct api_server *srv);

/* The TCP listener's gate counters; false when there is no TCP listener. */
bool api_server_gate_stats(struct api_server *srv, struct api_gate_stats *ret);

/* Seconds since t on CLOCK_MONOTONIC. */
double api_elapsed(const struct timespec *t);

#endif
