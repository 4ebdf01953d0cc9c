/* vmsnapd's Prometheus metrics: request counts by route and status, latency histograms of
 * the long sandbox operations, and gauges read at scrape time. */
#ifndef VMSNAP_API_METRICS_H
#define VMSNAP_API_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/routes.h"

#include <vmsnap/sandbox.h>

enum api_op { API_OP_CREATE, API_OP_PAUSE, API_OP_RESUME, API_OP_SPAWN, API_OP_COUNT };

#define API_METRICS_BUCKETS 15
#define API_METRICS_STATES  16 /* room for every sandbox state */
#define API_METRICS_METHODS 8  /* GET HEAD POST PUT DELETE PATCH OPTIONS, and "other" */
#define API_METRICS_CODES   18 /* the statuses the API sends, 0 (no response) and "other" */

struct api_histogram {
        uint64_t buckets[API_METRICS_BUCKETS]; /* cumulative counts are made at render */
        uint64_t count;
        double sum;
};

/* Counters shared by all connection threads (initialize with api_metrics_init). */
struct api_metrics {
        pthread_mutex_t lock;
        /* [route][method slot][status slot]: see method_slot and status_slot */
        uint64_t requests[API_ROUTE_UI + 1][API_METRICS_METHODS][API_METRICS_CODES];
        struct api_histogram ops[API_OP_COUNT][2]; /* [op][0 ok, 1 error] */
};

/* Values read at scrape time; a `have_` flag is false when reading them failed (the series
 * are then left out rather than reported as zero). */
struct api_gauges {
        bool have_sandboxes;
        size_t n_states;
        const char *state_names[API_METRICS_STATES];
        uint64_t sandboxes[API_METRICS_STATES];
        bool have_snapshots;
        uint64_t snapshots[2], snapshot_bytes[2]; /* [enum vmsnap_snapshot_kind] */
        uint64_t in_flight;
        double uptime_seconds;
        bool have_pause; /* the host's pause phases and merge counts */
        struct vmsnap_pause_stats pause;
        bool have_vmm_memory; /* the running VMMs' Rss and Pss (api/vmm-memory.h) */
        uint64_t vmm_rss, vmm_pss;
        unsigned vmm_processes;
        bool have_gate; /* a TCP listener: its connection gate's counters */
        uint64_t gate_refused, gate_expired, gate_untrusted;
};

void api_metrics_init(struct api_metrics *m);
void api_metrics_destroy(struct api_metrics *m);

/* Counts one finished request by route, method (as the client sent it; unknown methods
 * count as "other") and status (0: the client went away before a response). */
void api_metrics_request(struct api_metrics *m, enum api_route route, const char *method,
                         unsigned status);

/* Whether status has a series of its own (else it is counted as code="other"). */
bool api_metrics_status_known(unsigned status);

/* Records how long one operation took and whether it succeeded. */
void api_metrics_op(struct api_metrics *m, enum api_op op, double seconds, bool ok);

/* Renders the Prometheus text exposition format (version 0.0.4) into a malloc'd string.
 * Returns NULL when out of memory. */
char *api_metrics_render(struct api_metrics *m, const struct api_gauges *g, size_t *ret_len);

#endif
