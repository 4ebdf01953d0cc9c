/* Page-server counters and the fault-latency histogram: relaxed atomics, updated by every
 * thread, read by the control request and at exit. */
#ifndef VMSNAP_UFFD_STATS_H
#define VMSNAP_UFFD_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <vmsnap/uffd.h>

/* Log-linear buckets: 16 per power of two, so a percentile is within ~7 % of the truth. */
#define LAT_SUB_BITS 4
#define LAT_SUB      (1u << LAT_SUB_BITS)
#define LAT_BUCKETS  (64u * LAT_SUB)

struct uffd_stats {
        _Atomic uint64_t faults, fault_dups, fault_present, fault_pages;
        _Atomic uint64_t ws_pages, prefetched_pages, zero_pages, bytes;
        _Atomic uint64_t removed_pages, eagain, eexist, unverified;
        _Atomic uint64_t lat[LAT_BUCKETS];
        _Atomic uint64_t lat_max;
        _Atomic uint64_t ws_blocks;
        atomic_bool connected, ws_done, prefetch_done;
        _Atomic int32_t peer_pid;
        _Atomic uint32_t regions;
};

static inline void stat_add(_Atomic uint64_t *c, uint64_t n)
{
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Records one fault's service time. */
void stats_latency(struct uffd_stats *st, uint64_t ns);

/* Fills the public view (percentiles computed from the histogram). */
void stats_read(const struct uffd_stats *st, struct vmsnap_uffd_stats *ret);

/* Monotonic clock in nanoseconds. */
uint64_t stats_now_ns(void);

#endif
