/* The page server object shared by the uffd/ files. The event loop (loop.c, fault.c,
 * control.c) runs on the thread that called vmsnap_uffd_server_run(); installers run on the
 * pool's threads (pool.c) and the prefetch thread (prefetch.c). Fields are grouped by who
 * writes them. */
#ifndef VMSNAP_UFFD_SERVER_H
#define VMSNAP_UFFD_SERVER_H

#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include <vmsnap/mem.h>
#include <vmsnap/uffd.h>

#include "uffd/handshake.h"
#include "uffd/install.h"
#include "uffd/pages.h"
#include "uffd/pool.h"
#include "uffd/stats.h"
#include "uffd/ws.h"

#define UFFD_MAX_CONNS      16u
#define UFFD_BATCH          1024u     /* fault messages handled per drain */
#define UFFD_RING           4096u     /* queued jobs; beyond, the loop installs inline */
#define UFFD_BULK           (4u << 20) /* replay / prefetch piece */

struct uffd_conn {
        int fd; /* -1 when the slot is free */
        struct uffd_inbox box;
};

enum server_phase { PHASE_WAITING, PHASE_SERVING, PHASE_DONE };

struct vmsnap_uffd_server {
        /* Set by new(), read-only afterwards. */
        struct vmsnap_uffd_opts opts;
        char *snapdir, *socket_path;
        struct vmsnap_mem_snapshot *snap;
        uint64_t block_size, mem_size, fault_around;
        struct ws_set *replay; /* the working set to replay, NULL when none */
        struct uffd_lazy *lazy; /* lazy restore from a remote, NULL otherwise */
        dev_t sock_dev;
        ino_t sock_ino;
        int listen_fd, stop_fd, wake_fd;

        /* The event loop's own state. */
        int epoll_fd, timer_fd;
        struct uffd_conn conns[UFFD_MAX_CONNS];
        struct uffd_msg *batch;
        struct installer inline_inst;
        bool ran;
        _Atomic int phase; /* enum server_phase; read by control requests */

        /* Set when the handshake completes; immutable until run() has joined every thread. */
        int uffd, pidfd;
        pid_t peer_pid;
        struct served_region *regions;
        size_t n_regions;
        uint64_t max_page; /* largest region page size */
        uint8_t *zeros; /* UFFD_BULK bytes of read-only zeros (hugetlb zero fills) */
        struct pool pool;
        pthread_t prefetch_thread;
        bool prefetch_started;

        /* Shared by every thread. */
        atomic_bool stopping;
        atomic_bool peer_gone;
        _Atomic int fatal;             /* first fatal -errno, 0 while healthy */
        _Atomic uint64_t fault_seq;    /* bumped per demand fault (prefetch backs off) */
        pthread_mutex_t mu;            /* fatal_diag and note calls */
        struct vmsnap_diag fatal_diag;
        struct uffd_stats stats;
        struct ws_recorder rec;        /* zeroed unless opts.ws_record */
};

/* Records the first fatal error, kills the VMM (it must not read memory we cannot serve)
 * and wakes the loop, which then shuts down and returns err. */
void server_fail(struct vmsnap_uffd_server *s, int err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Notes that the VMM is gone (ESRCH from the kernel) and wakes the loop. */
void server_peer_gone(struct vmsnap_uffd_server *s);

/* Wakes the event loop (retries parked, fatal error, peer gone). */
void server_wake(struct vmsnap_uffd_server *s);

/* Passes a message to opts.note, one call at a time. */
void server_note(struct vmsnap_uffd_server *s, enum vmsnap_uffd_note level, const char *fmt,
                 ...) __attribute__((format(printf, 3, 4)));

/* True once shutdown started (fatal, peer gone or stop requested). */
static inline bool server_stopping(const struct vmsnap_uffd_server *s)
{
        return atomic_load_explicit(&s->stopping, memory_order_acquire);
}

/* The region holding VMM address addr, or NULL. */
struct served_region *server_region_at(struct vmsnap_uffd_server *s, uint64_t addr);

/* Wakes threads waiting on [addr, addr + len) (after EEXIST). Returns 0 or -errno. */
int server_wake_range(struct vmsnap_uffd_server *s, uint64_t addr, uint64_t len);

/* Drains the userfaultfd: applies REMOVE events at once, then requeues parked retries and
 * dispatches the faults (fault.c). */
void fault_drain(struct vmsnap_uffd_server *s);

/* Answers one control request (a complete JSON object in buf) on fd (control.c). */
void control_handle(struct vmsnap_uffd_server *s, int fd, const char *buf, size_t len);

#endif
