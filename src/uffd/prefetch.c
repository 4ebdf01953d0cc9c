/* The prefetch thread (see prefetch.h). It claims pages like any installer, so a fault on a
 * page it is installing is simply woken by its copy, and it never installs snapshot data
 * into a page the VMM dropped (those are claimed as zeros). */
#include "uffd/prefetch.h"
#include "uffd/server.h"
#include "util/cleanup.h"

#include <errno.h>
#include <string.h>

#define PREFETCH_MIN_CHUNK (64u << 10)

/* Installs the address-space range [off, off + len) wherever a region maps it, in pieces of
 * at most `chunk` bytes. */
static void install_range(struct installer *in, uint64_t off, uint64_t len, uint64_t chunk,
                          enum install_origin origin)
{
        struct vmsnap_uffd_server *s = in->srv;
        for (size_t i = 0; i < s->n_regions && !server_stopping(s); i++) {
                struct served_region *sr = &s->regions[i];
                uint64_t a = MAX(off, sr->r.offset), b = MIN(off + len, sr->r.offset + sr->r.size);
                /* Whole pages only: a page partly inside the range is installed entirely. */
                uint64_t ps = sr->r.page_size;
                a = (a - sr->r.offset) / ps * ps + sr->r.offset;
                for (uint64_t o = a; o < b && !server_stopping(s);) {
                        uint64_t n = MIN(chunk, b - o);
                        struct job j = {.region = (uint32_t)i, .origin = (uint8_t)origin,
                                        .first = (o - sr->r.offset) >> sr->page_shift,
                                        .count = (n + ps - 1) >> sr->page_shift,
                                        .fault_page = UINT64_MAX};
                        install_job(in, &j);
                        o += j.count << sr->page_shift;
                }
        }
}

/* Replays the working set in its recorded order. */
static void replay(struct installer *in)
{
        struct vmsnap_uffd_server *s = in->srv;
        const struct ws_set *ws = s->replay;
        for (size_t i = 0; ws && i < ws->n_runs && !server_stopping(s); i++)
                install_range(in, ws->runs[i].first_block * ws->block_size,
                              ws->runs[i].n_blocks * ws->block_size, UFFD_BULK, ORIGIN_WS);
}

/* Installs every data extent of [off, end) in chunks growing from 64 KiB to UFFD_BULK,
 * back to 64 KiB after each demand fault (CRIU's lazy-pages policy). ZERO extents are left
 * to demand: installing them would only make the whole guest resident (wrenn W14). */
static void prefetch_region(struct installer *in, uint64_t off, uint64_t end)
{
        struct vmsnap_uffd_server *s = in->srv;
        uint64_t chunk = PREFETCH_MIN_CHUNK, seen = atomic_load(&s->fault_seq);
        while (off < end && !server_stopping(s)) {
                struct vmsnap_mem_location loc;
                if (vmsnap_mem_locate(s->snap, off, &loc) < 0) {
                        server_fail(s, -EIO, "cannot locate offset 0x%llx in the snapshot",
                                    (unsigned long long)off);
                        return;
                }
                uint64_t n = MIN(loc.run, end - off);
                if (!loc.zero) {
                        uint64_t now = atomic_load(&s->fault_seq);
                        chunk = now != seen ? PREFETCH_MIN_CHUNK : MIN(chunk * 2, UFFD_BULK);
                        seen = now;
                        n = MIN(n, chunk);
                        install_range(in, off, n, chunk, ORIGIN_PREFETCH);
                }
                off += n;
        }
}

static void *prefetch_main(void *arg)
{
        struct vmsnap_uffd_server *s = arg;
        struct installer in;
        if (installer_init(&in, s, UFFD_BULK) < 0) {
                server_fail(s, -ENOMEM, "out of memory for the prefetch buffer");
                return NULL;
        }
        replay(&in);
        atomic_store(&s->stats.ws_done, true);
        if (s->opts.prefetch && !server_stopping(s)) {
                for (size_t i = 0; i < s->n_regions; i++)
                        prefetch_region(&in, s->regions[i].r.offset,
                                        s->regions[i].r.offset + s->regions[i].r.size);
                if (!server_stopping(s))
                        server_note(s, VMSNAP_UFFD_NOTE_INFO, "background prefetch done");
        }
        atomic_store(&s->stats.prefetch_done, true);
        installer_free(&in);
        return NULL;
}

int prefetch_start(struct vmsnap_uffd_server *s)
{
        if (!s->replay && !s->opts.prefetch) {
                atomic_store(&s->stats.ws_done, true);
                atomic_store(&s->stats.prefetch_done, true);
                return 0;
        }
        int r = pthread_create(&s->prefetch_thread, NULL, prefetch_main, s);
        if (r != 0)
                return -r;
        s->prefetch_started = true;
        return 0;
}

void prefetch_join(struct vmsnap_uffd_server *s)
{
        if (!s->prefetch_started)
                return;
        pthread_join(s->prefetch_thread, NULL);
        s->prefetch_started = false;
}
