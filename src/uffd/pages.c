/* Page-state tables (see pages.h). */
#include "uffd/pages.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int pages_init(struct served_region *sr, const struct uffd_region *r)
{
        memset(sr, 0, sizeof(*sr));
        sr->r = *r;
        sr->page_shift = (unsigned)__builtin_ctzll(r->page_size);
        sr->n_pages = r->size >> sr->page_shift;
        sr->state = calloc(sr->n_pages, sizeof(*sr->state));
        return sr->state ? 0 : -ENOMEM;
}

void pages_free(struct served_region *sr)
{
        free((void *)sr->state);
        sr->state = NULL;
}

bool page_claim(struct served_region *sr, uint64_t idx, uint8_t *ret_claimed)
{
        uint8_t old = page_get(sr, idx);
        for (;;) {
                if ((old & PAGE_STATE) != PAGE_MISSING)
                        return false;
                uint8_t want = (uint8_t)(PAGE_INFLIGHT | (old & PAGE_REMOVED));
                if (atomic_compare_exchange_weak_explicit(&sr->state[idx], &old, want,
                                                          memory_order_acq_rel,
                                                          memory_order_acquire)) {
                        *ret_claimed = want;
                        return true;
                }
        }
}

void page_installed(struct served_region *sr, uint64_t idx)
{
        uint8_t old = page_get(sr, idx);
        for (;;) {
                uint8_t want = (old & PAGE_RACED) ? (uint8_t)(PAGE_MISSING | PAGE_REMOVED)
                                                  : (uint8_t)PAGE_PRESENT;
                if (atomic_compare_exchange_weak_explicit(&sr->state[idx], &old, want,
                                                          memory_order_acq_rel,
                                                          memory_order_acquire))
                        return;
        }
}

void page_release(struct served_region *sr, uint64_t idx)
{
        atomic_fetch_and_explicit(&sr->state[idx], (uint8_t)PAGE_REMOVED, memory_order_acq_rel);
}

uint64_t pages_remove(struct served_region *sr, uint64_t first, uint64_t end)
{
        end = end < sr->n_pages ? end : sr->n_pages;
        for (uint64_t i = first; i < end; i++) {
                uint8_t old = page_get(sr, i);
                for (;;) {
                        uint8_t st = old & PAGE_STATE;
                        uint8_t want = st == PAGE_INFLIGHT
                                               ? (uint8_t)(PAGE_INFLIGHT | PAGE_REMOVED |
                                                           PAGE_RACED)
                                               : (uint8_t)(PAGE_MISSING | PAGE_REMOVED);
                        if (atomic_compare_exchange_weak_explicit(&sr->state[i], &old, want,
                                                                  memory_order_acq_rel,
                                                                  memory_order_acquire))
                                break;
                }
        }
        return end > first ? end - first : 0;
}
