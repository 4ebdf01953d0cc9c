/* Per-page state of one served region: who installs each page, and which pages the VMM
 * dropped (REMOVE) so that they come back as zeros. One byte per page, changed by CAS, so
 * the event loop, the workers and the prefetcher never take a lock on the fault path. */
#ifndef VMSNAP_UFFD_PAGES_H
#define VMSNAP_UFFD_PAGES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "uffd/handshake.h"

enum {
        PAGE_MISSING = 0,  /* not installed, nobody installing it */
        PAGE_INFLIGHT = 1, /* claimed by exactly one installer */
        PAGE_PRESENT = 2,  /* installed */
        PAGE_STATE = 3,    /* mask of the three states above */
        PAGE_REMOVED = 4,  /* dropped by the VMM: install zeros, never snapshot data */
        PAGE_RACED = 8,    /* a REMOVE arrived while the page was in flight */
};

struct served_region {
        struct uffd_region r;
        unsigned page_shift;
        uint64_t n_pages;
        _Atomic uint8_t *state;
};

/* Sets up the state table of r (all pages MISSING). Returns 0 or -ENOMEM. */
int pages_init(struct served_region *sr, const struct uffd_region *r);

/* Frees the table; accepts a zeroed or half-built region. */
void pages_free(struct served_region *sr);

/* Current state byte of page idx. */
static inline uint8_t page_get(const struct served_region *sr, uint64_t idx)
{
        return atomic_load_explicit(&sr->state[idx], memory_order_acquire);
}

/* Claims a MISSING page for the caller (keeping its REMOVED bit). Returns true when the
 * caller now owns it; *ret_claimed is the byte it set (INFLIGHT, maybe | REMOVED). */
bool page_claim(struct served_region *sr, uint64_t idx, uint8_t *ret_claimed);

/* Marks an owned page installed. When a REMOVE arrived while it was in flight (RACED), the
 * page is left MISSING | REMOVED instead: the copy may have landed before the VMM's zap, so
 * the page may be gone again, and a later fault must then install zeros. */
void page_installed(struct served_region *sr, uint64_t idx);

/* Gives an owned page back as MISSING (its install did not happen). */
void page_release(struct served_region *sr, uint64_t idx);

/* Applies a REMOVE of the pages [first, end): each becomes MISSING | REMOVED, or for a page
 * in flight INFLIGHT | REMOVED | RACED. Returns the number of pages marked. */
uint64_t pages_remove(struct served_region *sr, uint64_t first, uint64_t end);

#endif
