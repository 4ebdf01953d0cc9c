/* Reading the userfaultfd (see server.h: fault_drain). Every wakeup drains all pending
 * messages. REMOVE events are applied as they are read, before any fault of the same drain
 * is dispatched: events can arrive out of causal order (a vCPU's fault before the VMM
 * thread's REMOVE), and a fault in a removed range must get zeros, not snapshot data. */
#include "uffd/server.h"
#include "util/cleanup.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* Marks the pages of [start, end) (VMM addresses) in every region as removed. */
static void apply_remove(struct vmsnap_uffd_server *s, uint64_t start, uint64_t end)
{
        for (size_t i = 0; i < s->n_regions; i++) {
                struct served_region *sr = &s->regions[i];
                uint64_t a = MAX(start, sr->r.base), b = MIN(end, sr->r.base + sr->r.size);
                if (a >= b)
                        continue;
                uint64_t first = (a - sr->r.base) >> sr->page_shift;
                uint64_t last = (b - sr->r.base + sr->r.page_size - 1) >> sr->page_shift;
                stat_add(&s->stats.removed_pages, pages_remove(sr, first, last));
        }
}

/* Reads messages until the queue is empty or the batch is full. Returns the number of
 * fault messages in s->batch, or -1 after a fatal error. */
static ssize_t read_batch(struct vmsnap_uffd_server *s)
{
        size_t n = 0;
        while (n < UFFD_BATCH) {
                struct uffd_msg msgs[64];
                size_t want = MIN((size_t)64, UFFD_BATCH - n);
                ssize_t got = read(s->uffd, msgs, want * sizeof(msgs[0]));
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0 && errno == EAGAIN)
                        break;
                if (got < 0) {
                        server_fail(s, -errno, "reading the userfaultfd failed: %s",
                                    strerror(errno));
                        return -1;
                }
                for (size_t i = 0; i < (size_t)got / sizeof(msgs[0]); i++) {
                        struct uffd_msg *m = &msgs[i];
                        if (m->event == UFFD_EVENT_PAGEFAULT)
                                s->batch[n++] = *m;
                        else if (m->event == UFFD_EVENT_REMOVE)
                                apply_remove(s, m->arg.remove.start, m->arg.remove.end);
                        else {
                                server_fail(s, -EPROTO, "unexpected userfaultfd event 0x%x "
                                            "(only page faults and REMOVE are served)",
                                            m->event);
                                return -1;
                        }
                }
                if ((size_t)got < want * sizeof(msgs[0]))
                        break;
        }
        return (ssize_t)n;
}

/* The fault-around chunk of page idx: aligned in the address space, clipped to the region. */
static void fault_chunk(const struct vmsnap_uffd_server *s, const struct served_region *sr,
                        uint64_t idx, uint64_t *ret_first, uint64_t *ret_count)
{
        uint64_t fa = MAX(s->fault_around, sr->r.page_size);
        uint64_t off = sr->r.offset + (idx << sr->page_shift);
        uint64_t a = MAX(off / fa * fa, sr->r.offset);
        uint64_t b = MIN(off / fa * fa + fa, sr->r.offset + sr->r.size);
        *ret_first = (a - sr->r.offset) >> sr->page_shift;
        *ret_count = (b - a) >> sr->page_shift;
}

/* A fault on a page nobody owns: this fault now owns it. Its chunk goes to the pool, or is
 * installed right here (`here`: the last fault of a drain). Handing a fault to a worker
 * costs a thread wakeup, about as much as the install itself, so the loop takes one fault
 * per drain and a lone vCPU never pays for the handoff. */
static void start_fault(struct vmsnap_uffd_server *s, struct served_region *sr, uint64_t idx,
                        uint64_t t0, bool here)
{
        struct job j = {.region = (uint32_t)(sr - s->regions), .origin = ORIGIN_FAULT,
                        .fault_page = idx, .t0_ns = t0};
        fault_chunk(s, sr, idx, &j.first, &j.count);
        stat_add(&s->stats.faults, 1);
        atomic_fetch_add(&s->fault_seq, 1);
        if (s->rec.seen &&
            ws_recorder_add(&s->rec, sr->r.offset + (j.first << sr->page_shift),
                            j.count << sr->page_shift) == -ENOMEM)
                server_note(s, VMSNAP_UFFD_NOTE_WARN, "working set: out of memory, "
                            "recording is incomplete");
        if (here || !pool_push(&s->pool, &j))
                install_job(&s->inline_inst, &j); /* also when the ring is full */
}

static void dispatch(struct vmsnap_uffd_server *s, const struct uffd_msg *m, uint64_t t0,
                     bool here)
{
        uint64_t flags = m->arg.pagefault.flags, addr = m->arg.pagefault.address;
        if (flags & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR)) {
                server_fail(s, -EPROTO, "unexpected %s fault at 0x%llx (regions must be "
                            "registered in MISSING mode only)",
                            flags & UFFD_PAGEFAULT_FLAG_WP ? "write-protect" : "minor",
                            (unsigned long long)addr);
                return;
        }
        struct served_region *sr = server_region_at(s, addr);
        if (!sr) {
                server_fail(s, -EPROTO, "fault at 0x%llx is outside every region of the "
                            "handshake", (unsigned long long)addr);
                return;
        }
        uint64_t idx = (addr - sr->r.base) >> sr->page_shift;
        for (;;) {
                uint8_t claimed, st = page_get(sr, idx) & PAGE_STATE;
                if (st == PAGE_MISSING && page_claim(sr, idx, &claimed)) {
                        start_fault(s, sr, idx, t0, here);
                        return;
                }
                if (st == PAGE_INFLIGHT) { /* its installer's copy wakes this fault */
                        stat_add(&s->stats.fault_dups, 1);
                        return;
                }
                if (st == PAGE_PRESENT) { /* installed after the fault was raised */
                        stat_add(&s->stats.fault_present, 1);
                        if (server_wake_range(s, sr->r.base + (idx << sr->page_shift),
                                              sr->r.page_size) == -ESRCH)
                                server_peer_gone(s);
                        return;
                }
        }
}

void fault_drain(struct vmsnap_uffd_server *s)
{
        ssize_t n = read_batch(s);
        if (n < 0)
                return;
        pool_requeue(&s->pool); /* after the REMOVEs that made them fail */
        uint64_t t0 = stats_now_ns();
        for (ssize_t i = 0; i < n && !server_stopping(s); i++)
                dispatch(s, &s->batch[i], t0, i == n - 1);
}
