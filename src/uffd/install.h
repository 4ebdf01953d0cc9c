/* Installing pages: claim a range of pages, read their blocks from the snapshot, check each
 * block against its hash, and hand them to the kernel with UFFDIO_COPY (UFFDIO_ZEROPAGE for
 * zeros on 4 KiB pages). EEXIST means the page is already there (woken); EAGAIN defers the
 * rest of the range to the retry queue; a bad block or an I/O error kills the VMM. */
#ifndef VMSNAP_UFFD_INSTALL_H
#define VMSNAP_UFFD_INSTALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmsnap_uffd_server;

enum install_origin {
        ORIGIN_FAULT,    /* a demand fault and its fault-around chunk */
        ORIGIN_WS,       /* working-set replay */
        ORIGIN_PREFETCH, /* background prefetch */
};

/* A range of pages of one region to install. */
struct job {
        uint32_t region;
        uint8_t origin;      /* enum install_origin */
        bool owned;          /* every page of the range is already claimed (a retry) */
        uint64_t first;      /* first page (index in the region) */
        uint64_t count;      /* pages */
        uint64_t fault_page; /* page the event loop claimed for a fault, else UINT64_MAX */
        uint64_t t0_ns;      /* when that fault was read */
};

/* What one installing thread owns: a read buffer for one piece of a range. */
struct installer {
        struct vmsnap_uffd_server *srv;
        uint8_t *buf;
        size_t buf_size;
        size_t max_piece; /* bytes of pages per piece (buf_size minus block slack) */
};

/* Sets up an installer whose pieces hold at least `piece` bytes of pages. Returns 0 or
 * -ENOMEM. */
int installer_init(struct installer *in, struct vmsnap_uffd_server *srv, size_t piece);

/* Frees the buffer; accepts a zeroed installer. */
void installer_free(struct installer *in);

/* Installs what it can claim of the job's range (everything for an owned job), the run
 * around the faulting page first. Failures are reported to the server (server_fail,
 * server_peer_gone) or deferred (pool_defer); nothing is returned. */
void install_job(struct installer *in, const struct job *job);

#endif
