/* Where pause time goes: a pause cuts its wall time into phases as it runs (each mark charges
 * the time since the previous mark to one phase), and a completed pause adds its phases to
 * the host's counters, which /metrics and bench/sandbox.py read. */
#include "sandbox/internal.h"

#include <string.h>
#include <time.h>

static const char *const phase_names[VMSNAP_PAUSE_PHASES] = {
        "agent_sync", "vcpu_stop", "vmm_save", "mem_diff", "mem_touched", "disk",
        "store_commit", "db", "vmm_release", "drop_previous",
};

static const char *const outcome_names[VMSNAP_MERGE_OUTCOMES] = {"done", "raced", "failed"};

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void trace_begin(struct pause_trace *t)
{
        memset(t, 0, sizeof(*t));
        t->mark = now_s();
}

void trace_mark(struct pause_trace *t, enum vmsnap_pause_phase phase)
{
        if (!t || (unsigned)phase >= VMSNAP_PAUSE_PHASES)
                return;
        double now = now_s();
        t->seconds[phase] += now - t->mark;
        t->mark = now;
}

void trace_commit(struct vmsnap_host *h, const struct pause_trace *t)
{
        pthread_mutex_lock(&h->stats_lock);
        h->stats.pauses++;
        for (unsigned i = 0; i < VMSNAP_PAUSE_PHASES; i++)
                h->stats.phase_seconds[i] += t->seconds[i];
        pthread_mutex_unlock(&h->stats_lock);
}

void trace_merge(struct vmsnap_host *h, enum vmsnap_merge_outcome outcome)
{
        pthread_mutex_lock(&h->stats_lock);
        if ((unsigned)outcome < VMSNAP_MERGE_OUTCOMES)
                h->stats.merges[outcome]++;
        pthread_mutex_unlock(&h->stats_lock);
}

void vmsnap_host_pause_stats(struct vmsnap_host *h, struct vmsnap_pause_stats *ret)
{
        pthread_mutex_lock(&h->stats_lock);
        *ret = h->stats;
        pthread_mutex_unlock(&h->stats_lock);
        base_waiting(h, &ret->bases_waiting, &ret->bases_waiting_bytes);
}

const char *vmsnap_pause_phase_name(unsigned phase)
{
        return phase < VMSNAP_PAUSE_PHASES ? phase_names[phase] : NULL;
}

const char *vmsnap_merge_outcome_name(unsigned outcome)
{
        return outcome < VMSNAP_MERGE_OUTCOMES ? outcome_names[outcome] : NULL;
}

const char *vmsnap_base_event_name(unsigned event)
{
        static const char *const names[VMSNAP_BASE_EVENTS] = {"built", "used", "dropped",
                                                              "failed"};
        return event < VMSNAP_BASE_EVENTS ? names[event] : NULL;
}

void trace_base(struct vmsnap_host *h, enum vmsnap_base_event event)
{
        pthread_mutex_lock(&h->stats_lock);
        if ((unsigned)event < VMSNAP_BASE_EVENTS)
                h->stats.bases[event]++;
        pthread_mutex_unlock(&h->stats_lock);
}
