/* Metrics as plain counters under one mutex: a scrape copies them and renders text with
 * open_memstream. Label values come only from fixed tables (route patterns, methods, state
 * and kind names), never from request text, so nothing needs escaping. */
#include "api/metrics.h"

#include <vmsnap/store.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_le[API_METRICS_BUCKETS] = {
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
};

static const char *const op_names[API_OP_COUNT] = {"create", "pause", "resume", "spawn"};

/* The method label: the request's own method, or "other" (the last slot) for one outside
 * this list, so that a client cannot make up label values. */
static const char *const method_names[API_METRICS_METHODS] = {
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
};

/* The statuses vmsnapd sends (errors.c and the handlers' 200/201/204), and 0; anything else
 * is counted in the last slot, code="other". */
static const unsigned status_codes[API_METRICS_CODES - 1] = {
        0, 200, 201, 204, 400, 401, 404, 405, 409, 413, 415, 500, 501, 502, 503, 504, 507,
};

static unsigned method_slot(const char *method)
{
        for (unsigned i = 0; method && i + 1 < API_METRICS_METHODS; i++)
                if (strcmp(method, method_names[i]) == 0)
                        return i;
        return API_METRICS_METHODS - 1;
}

static unsigned status_slot(unsigned status)
{
        for (unsigned i = 0; i < API_METRICS_CODES - 1; i++)
                if (status_codes[i] == status)
                        return i;
        return API_METRICS_CODES - 1;
}

bool api_metrics_status_known(unsigned status)
{
        return status_slot(status) < API_METRICS_CODES - 1;
}

void api_metrics_init(struct api_metrics *m)
{
        memset(m, 0, sizeof(*m));
        pthread_mutex_init(&m->lock, NULL);
}

void api_metrics_destroy(struct api_metrics *m)
{
        pthread_mutex_destroy(&m->lock);
}

void api_metrics_request(struct api_metrics *m, enum api_route route, const char *method,
                         unsigned status)
{
        if ((unsigned)route > API_ROUTE_UI)
                route = API_ROUTE_NONE;
        unsigned ms = method_slot(method), ss = status_slot(status);
        pthread_mutex_lock(&m->lock);
        m->requests[route][ms][ss]++;
        pthread_mutex_unlock(&m->lock);
}

void api_metrics_op(struct api_metrics *m, enum api_op op, double seconds, bool ok)
{
        if ((unsigned)op >= API_OP_COUNT)
                return;
        if (seconds < 0)
                seconds = 0;
        pthread_mutex_lock(&m->lock);
        struct api_histogram *h = &m->ops[op][ok ? 0 : 1];
        for (unsigned i = 0; i < API_METRICS_BUCKETS; i++)
                if (seconds <= bucket_le[i]) {
                        h->buckets[i]++;
                        break;
                }
        h->count++;
        h->sum += seconds;
        pthread_mutex_unlock(&m->lock);
}

static void render_request_count(FILE *f, const char *route, const char *method, unsigned ss,
                                 uint64_t n)
{
        if (!n)
                return;
        fprintf(f, "vmsnapd_http_requests_total{route=\"%s\",method=\"%s\",", route, method);
        if (ss < API_METRICS_CODES - 1)
                fprintf(f, "code=\"%u\"} %llu\n", status_codes[ss], (unsigned long long)n);
        else
                fprintf(f, "code=\"other\"} %llu\n", (unsigned long long)n);
}

static void render_requests(FILE *f, const struct api_metrics *m)
{
        fputs("# HELP vmsnapd_http_requests_total HTTP requests served, by route and status "
              "(code 0: the client left before a response).\n"
              "# TYPE vmsnapd_http_requests_total counter\n",
              f);
        for (unsigned r = 0; r <= API_ROUTE_UI; r++) {
                const char *route = api_route_info((enum api_route)r)->pattern;
                for (unsigned ms = 0; ms < API_METRICS_METHODS; ms++)
                        for (unsigned ss = 0; ss < API_METRICS_CODES; ss++)
                                render_request_count(f, route, method_names[ms], ss,
                                                     m->requests[r][ms][ss]);
        }
}

static void render_histogram(FILE *f, const char *op, const char *result,
                             const struct api_histogram *h)
{
        uint64_t cum = 0;
        for (unsigned i = 0; i < API_METRICS_BUCKETS; i++) {
                cum += h->buckets[i];
                fprintf(f,
                        "vmsnap_operation_duration_seconds_bucket{op=\"%s\",result=\"%s\","
                        "le=\"%g\"} %llu\n",
                        op, result, bucket_le[i], (unsigned long long)cum);
        }
        fprintf(f,
                "vmsnap_operation_duration_seconds_bucket{op=\"%s\",result=\"%s\",le=\"+Inf\"} "
                "%llu\n",
                op, result, (unsigned long long)h->count);
        fprintf(f, "vmsnap_operation_duration_seconds_sum{op=\"%s\",result=\"%s\"} %.6f\n", op,
                result, h->sum);
        fprintf(f, "vmsnap_operation_duration_seconds_count{op=\"%s\",result=\"%s\"} %llu\n", op,
                result, (unsigned long long)h->count);
}

static void render_ops(FILE *f, const struct api_metrics *m)
{
        fputs("# HELP vmsnap_operation_duration_seconds Duration of sandbox operations "
              "served by the API.\n"
              "# TYPE vmsnap_operation_duration_seconds histogram\n",
              f);
        for (unsigned op = 0; op < API_OP_COUNT; op++) {
                render_histogram(f, op_names[op], "ok", &m->ops[op][0]);
                render_histogram(f, op_names[op], "error", &m->ops[op][1]);
        }
}

static void render_gate(FILE *f, const struct api_gauges *g)
{
        fprintf(f,
                "# HELP vmsnapd_tcp_connections_refused_total TCP connections refused at accept: "
                "their client address had its limit of connections without a token.\n"
                "# TYPE vmsnapd_tcp_connections_refused_total counter\n"
                "vmsnapd_tcp_connections_refused_total %llu\n",
                (unsigned long long)g->gate_refused);
        fprintf(f,
                "# HELP vmsnapd_tcp_connections_expired_total TCP connections closed because "
                "no request with the token came in time.\n"
                "# TYPE vmsnapd_tcp_connections_expired_total counter\n"
                "vmsnapd_tcp_connections_expired_total %llu\n",
                (unsigned long long)g->gate_expired);
        fprintf(f,
                "# HELP vmsnapd_tcp_connections_untrusted TCP connections open that have not "
                "sent the token yet.\n"
                "# TYPE vmsnapd_tcp_connections_untrusted gauge\n"
                "vmsnapd_tcp_connections_untrusted %llu\n",
                (unsigned long long)g->gate_untrusted);
}

static void render_pause(FILE *f, const struct vmsnap_pause_stats *p)
{
        fprintf(f,
                "# HELP vmsnap_pauses_total Pauses that completed.\n"
                "# TYPE vmsnap_pauses_total counter\nvmsnap_pauses_total %llu\n",
                (unsigned long long)p->pauses);
        fputs("# HELP vmsnap_pause_phase_seconds_total Time the completed pauses spent in each "
              "phase.\n# TYPE vmsnap_pause_phase_seconds_total counter\n",
              f);
        for (unsigned i = 0; i < VMSNAP_PAUSE_PHASES; i++)
                fprintf(f, "vmsnap_pause_phase_seconds_total{phase=\"%s\"} %.6f\n",
                        vmsnap_pause_phase_name(i), p->phase_seconds[i]);
        fputs("# HELP vmsnap_merges_total Background merges of paused sandboxes' memory "
              "chains, by outcome.\n# TYPE vmsnap_merges_total counter\n",
              f);
        for (unsigned i = 0; i < VMSNAP_MERGE_OUTCOMES; i++)
                fprintf(f, "vmsnap_merges_total{outcome=\"%s\"} %llu\n",
                        vmsnap_merge_outcome_name(i), (unsigned long long)p->merges[i]);
        fputs("# HELP vmsnap_pause_bases_total Copies of a booted VM's memory taken in the "
              "background for its first pause, by event.\n"
              "# TYPE vmsnap_pause_bases_total counter\n",
              f);
        for (unsigned i = 0; i < VMSNAP_BASE_EVENTS; i++)
                fprintf(f, "vmsnap_pause_bases_total{event=\"%s\"} %llu\n",
                        vmsnap_base_event_name(i), (unsigned long long)p->bases[i]);
        fprintf(f,
                "# HELP vmsnap_pause_bases_waiting Bases built and not yet released (a pending "
                "snapshot each, on the store's disk).\n"
                "# TYPE vmsnap_pause_bases_waiting gauge\nvmsnap_pause_bases_waiting %llu\n"
                "# HELP vmsnap_pause_bases_waiting_bytes The data bytes those bases hold.\n"
                "# TYPE vmsnap_pause_bases_waiting_bytes gauge\n"
                "vmsnap_pause_bases_waiting_bytes %llu\n",
                (unsigned long long)p->bases_waiting,
                (unsigned long long)p->bases_waiting_bytes);
}

static void render_vmm_memory(FILE *f, const struct api_gauges *g)
{
        fprintf(f,
                "# HELP vmsnap_vmm_processes Running VMM processes whose memory was read.\n"
                "# TYPE vmsnap_vmm_processes gauge\nvmsnap_vmm_processes %u\n"
                "# HELP vmsnap_vmm_memory_bytes Memory of the running VMMs, summed over them: "
                "rss (resident) and pss (each shared page divided among its sharers).\n"
                "# TYPE vmsnap_vmm_memory_bytes gauge\n"
                "vmsnap_vmm_memory_bytes{kind=\"rss\"} %llu\n"
                "vmsnap_vmm_memory_bytes{kind=\"pss\"} %llu\n"
                "# HELP vmsnap_memory_saved_bytes What page sharing saves the running VMMs: "
                "the sum of their Rss minus the sum of their Pss.\n"
                "# TYPE vmsnap_memory_saved_bytes gauge\nvmsnap_memory_saved_bytes %llu\n",
                g->vmm_processes, (unsigned long long)g->vmm_rss, (unsigned long long)g->vmm_pss,
                (unsigned long long)(g->vmm_rss > g->vmm_pss ? g->vmm_rss - g->vmm_pss : 0));
}

static void render_gauges(FILE *f, const struct api_gauges *g)
{
        fprintf(f, "# HELP vmsnapd_up 1 while the daemon serves.\n# TYPE vmsnapd_up gauge\n"
                   "vmsnapd_up 1\n");
        fprintf(f,
                "# HELP vmsnapd_uptime_seconds Seconds since the daemon started.\n"
                "# TYPE vmsnapd_uptime_seconds gauge\nvmsnapd_uptime_seconds %.3f\n",
                g->uptime_seconds);
        fprintf(f,
                "# HELP vmsnapd_http_requests_in_flight Requests being served.\n"
                "# TYPE vmsnapd_http_requests_in_flight gauge\n"
                "vmsnapd_http_requests_in_flight %llu\n",
                (unsigned long long)g->in_flight);
        if (g->have_sandboxes) {
                fputs("# HELP vmsnap_sandboxes Sandboxes by state.\n"
                      "# TYPE vmsnap_sandboxes gauge\n",
                      f);
                for (size_t i = 0; i < g->n_states && i < API_METRICS_STATES; i++)
                        fprintf(f, "vmsnap_sandboxes{state=\"%s\"} %llu\n", g->state_names[i],
                                (unsigned long long)g->sandboxes[i]);
        }
        if (g->have_vmm_memory)
                render_vmm_memory(f, g);
        if (g->have_gate)
                render_gate(f, g);
        if (g->have_pause)
                render_pause(f, &g->pause);
        if (!g->have_snapshots)
                return;
        fputs("# HELP vmsnap_snapshots Ready snapshots by kind.\n# TYPE vmsnap_snapshots gauge\n",
              f);
        for (int k = 0; k < 2; k++)
                fprintf(f, "vmsnap_snapshots{kind=\"%s\"} %llu\n",
                        vmsnap_snapshot_kind_name((enum vmsnap_snapshot_kind)k),
                        (unsigned long long)g->snapshots[k]);
        fputs("# HELP vmsnap_snapshot_bytes Disk bytes allocated by ready snapshots, by kind.\n"
              "# TYPE vmsnap_snapshot_bytes gauge\n",
              f);
        for (int k = 0; k < 2; k++)
                fprintf(f, "vmsnap_snapshot_bytes{kind=\"%s\"} %llu\n",
                        vmsnap_snapshot_kind_name((enum vmsnap_snapshot_kind)k),
                        (unsigned long long)g->snapshot_bytes[k]);
}

char *api_metrics_render(struct api_metrics *m, const struct api_gauges *g, size_t *ret_len)
{
        struct api_metrics *copy = malloc(sizeof(*copy));
        if (!copy)
                return NULL;
        pthread_mutex_lock(&m->lock);
        memcpy(copy->requests, m->requests, sizeof(m->requests));
        memcpy(copy->ops, m->ops, sizeof(m->ops));
        pthread_mutex_unlock(&m->lock);

        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) {
                free(copy);
                return NULL;
        }
        render_gauges(f, g);
        render_requests(f, copy);
        render_ops(f, copy);
        free(copy);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        *ret_len = len;
        return text;
}
