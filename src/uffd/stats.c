/* Counters and latency percentiles (see stats.h). */
#include "uffd/stats.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t stats_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Values below LAT_SUB get one bucket each; above, bucket = (exponent, top 4 mantissa bits). */
static unsigned bucket_of(uint64_t ns)
{
        if (ns < LAT_SUB)
                return (unsigned)ns;
        unsigned e = 63u - (unsigned)__builtin_clzll(ns);
        unsigned sub = (unsigned)(ns >> (e - LAT_SUB_BITS)) & (LAT_SUB - 1);
        return (e - LAT_SUB_BITS + 1) * LAT_SUB + sub;
}

/* Middle of a bucket's value range (inverse of bucket_of). */
static uint64_t bucket_value(unsigned b)
{
        if (b < LAT_SUB)
                return b;
        unsigned e = b / LAT_SUB + LAT_SUB_BITS - 1, sub = b % LAT_SUB;
        uint64_t lo = (1ull << e) | ((uint64_t)sub << (e - LAT_SUB_BITS));
        return lo + (1ull << (e - LAT_SUB_BITS)) / 2;
}

void stats_latency(struct uffd_stats *st, uint64_t ns)
{
        stat_add(&st->lat[bucket_of(ns)], 1);
        uint64_t max = atomic_load_explicit(&st->lat_max, memory_order_relaxed);
        while (ns > max && !atomic_compare_exchange_weak_explicit(
                                   &st->lat_max, &max, ns, memory_order_relaxed,
                                   memory_order_relaxed))
                ;
}

/* The q-th quantile (0 < q < 1) of the histogram counts, 0 when empty. */
static uint64_t quantile(const uint64_t *counts, uint64_t total, double q)
{
        if (total == 0)
                return 0;
        uint64_t rank = (uint64_t)(q * (double)(total - 1)), seen = 0;
        for (unsigned b = 0; b < LAT_BUCKETS; b++) {
                seen += counts[b];
                if (seen > rank)
                        return bucket_value(b);
        }
        return 0;
}

static uint64_t ld(const _Atomic uint64_t *c)
{
        return atomic_load_explicit(c, memory_order_relaxed);
}

void stats_read(const struct uffd_stats *st, struct vmsnap_uffd_stats *ret)
{
        memset(ret, 0, sizeof(*ret));
        ret->connected = atomic_load(&st->connected);
        ret->peer_pid = atomic_load(&st->peer_pid);
        ret->regions = atomic_load(&st->regions);
        ret->faults = ld(&st->faults);
        ret->fault_dups = ld(&st->fault_dups);
        ret->fault_present = ld(&st->fault_present);
        ret->fault_pages = ld(&st->fault_pages);
        ret->ws_pages = ld(&st->ws_pages);
        ret->prefetched_pages = ld(&st->prefetched_pages);
        ret->zero_pages = ld(&st->zero_pages);
        ret->bytes = ld(&st->bytes);
        ret->removed_pages = ld(&st->removed_pages);
        ret->eagain_retries = ld(&st->eagain);
        ret->eexist = ld(&st->eexist);
        ret->unverified_blocks = ld(&st->unverified);
        ret->ws_blocks = ld(&st->ws_blocks);
        ret->ws_done = atomic_load(&st->ws_done);
        ret->prefetch_done = atomic_load(&st->prefetch_done);
        uint64_t counts[LAT_BUCKETS], total = 0; /* 8 KiB */
        for (unsigned b = 0; b < LAT_BUCKETS; b++)
                total += (counts[b] = ld(&st->lat[b]));
        ret->fault_p50_ns = quantile(counts, total, 0.50);
        ret->fault_p99_ns = quantile(counts, total, 0.99);
        ret->fault_max_ns = ld(&st->lat_max);
}

int vmsnap_uffd_stats_json(const struct vmsnap_uffd_stats *st, char **ret_json)
{
        json_t *o = json_pack(
                "{s:b, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                " s:{s:I, s:I, s:I}, s:{s:I, s:b}, s:b}",
                "connected", st->connected, "peer_pid", (int)st->peer_pid,
                "regions", (json_int_t)st->regions, "faults", (json_int_t)st->faults,
                "fault_dups", (json_int_t)st->fault_dups,
                "fault_present", (json_int_t)st->fault_present,
                "fault_pages", (json_int_t)st->fault_pages,
                "prefetched_pages", (json_int_t)st->prefetched_pages,
                "ws_pages", (json_int_t)st->ws_pages, "zero_pages", (json_int_t)st->zero_pages,
                "bytes", (json_int_t)st->bytes, "removed_pages", (json_int_t)st->removed_pages,
                "eagain_retries", (json_int_t)st->eagain_retries,
                "eexist", (json_int_t)st->eexist,
                "unverified_blocks", (json_int_t)st->unverified_blocks,
                "fault_latency_ns", "p50", (json_int_t)st->fault_p50_ns,
                "p99", (json_int_t)st->fault_p99_ns, "max", (json_int_t)st->fault_max_ns,
                "working_set", "blocks", (json_int_t)st->ws_blocks, "done", st->ws_done,
                "prefetch_done", st->prefetch_done);
        if (o && (st->remote_chunks_fetched || st->remote_chunks_cached))
                json_object_set_new(o, "remote", json_pack("{s:I, s:I}", "chunks_fetched",
                                                           (json_int_t)st->remote_chunks_fetched,
                                                           "chunks_cached",
                                                           (json_int_t)st->remote_chunks_cached));
        if (!o)
                return -ENOMEM;
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (!s)
                return -ENOMEM;
        *ret_json = s;
        return 0;
}
