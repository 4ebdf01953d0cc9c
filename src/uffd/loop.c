/* The event loop: one epoll over the listening socket, accepted connections (the VMM's
 * handshake, control clients), the stop and wake eventfds, the accept timer, and after the
 * handshake the userfaultfd and the VMM's pidfd. A userfaultfd reports no hangup when its
 * VMM exits, so the pidfd (from SO_PEERCRED) is how the end of the VMM is seen. */
#include "uffd/prefetch.h"
#include "uffd/server.h"
#include "util/cleanup.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

enum {
        TAG_LISTEN = 1,
        TAG_STOP,
        TAG_WAKE,
        TAG_TIMER,
        TAG_UFFD,
        TAG_PIDFD,
        TAG_CONN, /* + slot */
};

static int watch(struct vmsnap_uffd_server *s, int fd, uint64_t tag, uint32_t events)
{
        struct epoll_event ev = {.events = events, .data.u64 = tag};
        return epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void drain_eventfd(int fd)
{
        uint64_t v;
        ssize_t n = read(fd, &v, sizeof(v));
        (void)n;
}

/* Arms the accept timeout (none when negative). */
static int arm_timer(struct vmsnap_uffd_server *s, int ms)
{
        struct itimerspec its = {0};
        if (ms > 0) {
                its.it_value.tv_sec = ms / 1000;
                its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
        }
        return timerfd_settime(s->timer_fd, 0, &its, NULL) < 0 ? -errno : 0;
}

static int loop_setup(struct vmsnap_uffd_server *s, struct vmsnap_diag *d)
{
        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        s->batch = calloc(UFFD_BATCH, sizeof(*s->batch));
        if (s->epoll_fd < 0 || s->timer_fd < 0 || !s->batch) {
                int e = s->batch ? errno : ENOMEM;
                return vmsnap_diag(d, -e, "page server setup: %s", strerror(e));
        }
        int r = watch(s, s->listen_fd, TAG_LISTEN, EPOLLIN);
        if (r == 0)
                r = watch(s, s->stop_fd, TAG_STOP, EPOLLIN);
        if (r == 0)
                r = watch(s, s->wake_fd, TAG_WAKE, EPOLLIN);
        if (r == 0)
                r = watch(s, s->timer_fd, TAG_TIMER, EPOLLIN);
        if (r == 0)
                r = arm_timer(s, s->opts.accept_timeout_ms);
        if (r < 0)
                return vmsnap_diag(d, r, "page server setup: %s", strerror(-r));
        return 0;
}

static void conn_close(struct vmsnap_uffd_server *s, struct uffd_conn *c)
{
        if (c->fd < 0)
                return;
        epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        uffd_inbox_clear(&c->box);
}

static void accept_all(struct vmsnap_uffd_server *s)
{
        for (;;) {
                int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0)
                        return; /* EAGAIN, or a connection that vanished */
                unsigned i = 0;
                while (i < UFFD_MAX_CONNS && s->conns[i].fd >= 0)
                        i++;
                if (i == UFFD_MAX_CONNS || watch(s, fd, TAG_CONN + i, EPOLLIN | EPOLLRDHUP) < 0) {
                        close(fd);
                        continue;
                }
                s->conns[i].fd = fd;
        }
}

/* Sets up serving for a validated handshake; takes ownership of regions and uffd. */
static int start_serving(struct vmsnap_uffd_server *s, struct uffd_region *regions, size_t n,
                         int uffd)
{
        s->uffd = uffd;
        s->regions = calloc(n, sizeof(*s->regions));
        if (!s->regions)
                return -ENOMEM;
        s->n_regions = n;
        for (size_t i = 0; i < n; i++) {
                if (pages_init(&s->regions[i], &regions[i]) < 0)
                        return -ENOMEM;
                s->max_page = MAX(s->max_page, regions[i].page_size);
        }
        void *z = mmap(NULL, UFFD_BULK, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (z == MAP_FAILED)
                return -ENOMEM;
        s->zeros = z;
        int r = installer_init(&s->inline_inst, s, s->fault_around);
        if (r == 0)
                r = pool_start(&s->pool, s, s->opts.workers, s->fault_around, UFFD_RING);
        if (r == 0)
                r = watch(s, s->uffd, TAG_UFFD, EPOLLIN);
        if (r == 0 && s->pidfd >= 0)
                r = watch(s, s->pidfd, TAG_PIDFD, EPOLLIN);
        if (r == 0)
                r = arm_timer(s, 0);
        if (r < 0)
                return r;
        atomic_store(&s->stats.peer_pid, (int32_t)s->peer_pid);
        atomic_store(&s->stats.regions, (uint32_t)n);
        atomic_store(&s->stats.connected, true);
        atomic_store(&s->phase, PHASE_SERVING);
        return prefetch_start(s);
}

/* Takes the VMM's peer credentials: its pid, and a pidfd to watch and to kill it with. */
static void take_peer(struct vmsnap_uffd_server *s, int sock)
{
        pid_t pid = 0;
        if (uffd_peer_pid(sock, &pid) < 0 || pid <= 0)
                return;
        s->peer_pid = pid;
        if (pid == getpid())
                return; /* an in-process VMM: never watched, never killed */
        s->pidfd = pidfd_open(pid, 0);
        if (s->pidfd < 0)
                server_note(s, VMSNAP_UFFD_NOTE_WARN, "pidfd_open(%d) failed: %s; the VMM's "
                            "exit is only seen when its faults fail", (int)pid,
                            strerror(errno));
}

static void describe(struct vmsnap_uffd_server *s)
{
        uint64_t bytes = 0;
        for (size_t i = 0; i < s->n_regions; i++)
                bytes += s->regions[i].r.size;
        server_note(s, VMSNAP_UFFD_NOTE_INFO, "VMM pid %d connected: %zu region(s), %llu MiB, "
                    "%s pages; working set %llu blocks; fault-around %llu KiB",
                    (int)s->peer_pid, s->n_regions, (unsigned long long)(bytes >> 20),
                    s->regions[0].r.page_size == UFFD_PAGE_4K ? "4 KiB" : "2 MiB",
                    (unsigned long long)(s->replay ? s->replay->n_blocks : 0),
                    (unsigned long long)(s->fault_around >> 10));
}

/* One server serves one VMM. Another one that sends a handshake would block forever on its
 * first access, so it is killed like any VMM that cannot be served. */
static void refuse_second_vmm(struct vmsnap_uffd_server *s, int sock)
{
        pid_t pid = 0;
        if (uffd_peer_pid(sock, &pid) < 0 || pid <= 0 || pid == getpid() ||
            pid == s->peer_pid) {
                server_note(s, VMSNAP_UFFD_NOTE_WARN, "a second VMM handshake was refused");
                return;
        }
        int pfd = pidfd_open(pid, 0);
        if (pfd >= 0) {
                pidfd_send_signal(pfd, SIGKILL, NULL, 0);
                close(pfd);
        }
        server_note(s, VMSNAP_UFFD_NOTE_WARN, "a second VMM (pid %d) sent a handshake; this "
                    "server already serves pid %d: killed it", (int)pid, (int)s->peer_pid);
}

/* A JSON array arrived on c: the VMM's handshake. Anything wrong with it means the VMM
 * cannot be served, and it is killed (server_fail) rather than left hanging. */
static void handshake(struct vmsnap_uffd_server *s, struct uffd_conn *c, size_t len)
{
        if (atomic_load(&s->phase) != PHASE_WAITING) {
                refuse_second_vmm(s, c->fd);
                return;
        }
        take_peer(s, c->fd);
        struct vmsnap_diag hd = {0};
        _cleanup_free_ struct uffd_region *regions = NULL;
        _cleanup_close_ int ufd = uffd_inbox_take_fd(&c->box);
        size_t n = 0;
        int r = uffd_handshake_parse(c->box.data, len, &regions, &n, &hd);
        if (r == 0 && ufd < 0)
                r = vmsnap_diag(&hd, -EPROTO, "handshake carried no userfaultfd (SCM_RIGHTS)");
        if (r == 0 && uffd_check_fd(ufd) < 0)
                r = vmsnap_diag(&hd, -EPROTO, "the fd sent in the handshake is not a "
                                "userfaultfd");
        if (r == 0)
                r = uffd_regions_fit(regions, n, s->mem_size, s->block_size, &hd);
        if (r == 0) {
                r = start_serving(s, regions, n, TAKE_FD(ufd));
                if (r < 0)
                        vmsnap_diag(&hd, r, "cannot start serving: %s", strerror(-r));
        }
        if (r < 0) {
                server_fail(s, r, "handshake from pid %d: %s", (int)s->peer_pid, hd.msg);
                return;
        }
        describe(s);
}

/* Handles the complete messages buffered on c; returns false when c is to be closed. */
static bool conn_messages(struct vmsnap_uffd_server *s, struct uffd_conn *c)
{
        for (;;) {
                size_t len;
                int k = uffd_inbox_complete(&c->box, &len);
                if (k == 0)
                        return true;
                const char *p = c->box.data;
                while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
                        p++;
                if (k < 0 || (*p != '[' && *p != '{'))
                        return false;
                if (*p == '[') {
                        handshake(s, c, len);
                        return false; /* nothing more is said on the VMM's connection */
                }
                control_handle(s, c->fd, c->box.data, len);
                uffd_inbox_consume(&c->box, len);
                while (c->box.n_fds) /* fds have no business on a control request */
                        close(uffd_inbox_take_fd(&c->box));
        }
}

static void conn_event(struct vmsnap_uffd_server *s, struct uffd_conn *c, uint32_t events)
{
        bool eof = false, ok = true;
        for (;;) {
                ssize_t n = uffd_inbox_recv(c->fd, &c->box);
                if (n == -EAGAIN)
                        break;
                if (n <= 0) {
                        eof = true;
                        ok = n == 0;
                        break;
                }
        }
        if (ok)
                ok = conn_messages(s, c);
        if (!ok || eof || (events & (EPOLLERR | EPOLLHUP)))
                conn_close(s, c);
}

/* Result of one event: keep going, or end run() with a return code. */
struct outcome {
        bool done;
        int r;
};

static struct outcome handle_event(struct vmsnap_uffd_server *s, uint64_t tag, uint32_t events,
                                   struct vmsnap_diag *d)
{
        switch (tag) {
        case TAG_LISTEN:
                accept_all(s);
                break;
        case TAG_STOP:
                drain_eventfd(s->stop_fd);
                if (atomic_load(&s->phase) == PHASE_WAITING)
                        return (struct outcome){true, vmsnap_diag(d, -ECANCELED, "stopped "
                                                "before a VMM connected to %s",
                                                s->socket_path)};
                server_note(s, VMSNAP_UFFD_NOTE_INFO, "stopping");
                return (struct outcome){true, 0};
        case TAG_WAKE:
                drain_eventfd(s->wake_fd);
                break;
        case TAG_TIMER:
                drain_eventfd(s->timer_fd);
                if (atomic_load(&s->phase) == PHASE_WAITING)
                        return (struct outcome){true, vmsnap_diag(d, -ETIMEDOUT, "no VMM "
                                                "connected to %s within %d ms",
                                                s->socket_path, s->opts.accept_timeout_ms)};
                break;
        case TAG_UFFD:
                if (events & (EPOLLERR | EPOLLHUP)) {
                        server_note(s, VMSNAP_UFFD_NOTE_INFO, "userfaultfd hung up");
                        return (struct outcome){true, 0};
                }
                fault_drain(s);
                break;
        case TAG_PIDFD:
                server_note(s, VMSNAP_UFFD_NOTE_INFO, "VMM pid %d exited", (int)s->peer_pid);
                return (struct outcome){true, 0};
        default:
                conn_event(s, &s->conns[tag - TAG_CONN], events);
        }
        return (struct outcome){false, 0};
}

/* Parked retries go back to the workers right after a drain (fault_drain: the REMOVE that
 * made them fail has then been read) or, failing that, once per millisecond: requeueing on
 * every wakeup would spin while the VMM's madvise is still finishing. */
#define RETRY_NS 1000000ull

static int loop(struct vmsnap_uffd_server *s, struct vmsnap_diag *d)
{
        size_t parked = 0;
        uint64_t last_requeue = 0;
        for (;;) {
                struct epoll_event ev[16];
                int n = epoll_wait(s->epoll_fd, ev, 16, parked ? 1 : -1);
                if (n < 0 && errno != EINTR)
                        return vmsnap_diag(d, -errno, "epoll_wait: %s", strerror(errno));
                for (int i = 0; i < n; i++) {
                        struct outcome o = handle_event(s, ev[i].data.u64, ev[i].events, d);
                        if (o.done && atomic_load(&s->fatal) == 0)
                                return o.r;
                }
                int fatal = atomic_load(&s->fatal);
                if (fatal) {
                        pthread_mutex_lock(&s->mu);
                        if (d)
                                *d = s->fatal_diag;
                        pthread_mutex_unlock(&s->mu);
                        return fatal;
                }
                if (atomic_load(&s->peer_gone)) {
                        server_note(s, VMSNAP_UFFD_NOTE_INFO, "VMM pid %d is gone",
                                    (int)s->peer_pid);
                        return 0;
                }
                if (atomic_load(&s->phase) != PHASE_SERVING)
                        continue;
                uint64_t now = stats_now_ns();
                if (now - last_requeue >= RETRY_NS) {
                        pool_requeue(&s->pool);
                        last_requeue = now;
                }
                parked = pool_parked(&s->pool);
        }
}

/* Stops every thread, then closes what run() opened; the server can then only be freed. */
static void teardown(struct vmsnap_uffd_server *s)
{
        atomic_store(&s->stopping, true);
        pool_stop(&s->pool);
        prefetch_join(s);
        installer_free(&s->inline_inst);
        for (unsigned i = 0; i < UFFD_MAX_CONNS; i++)
                conn_close(s, &s->conns[i]);
        int *fds[] = {&s->uffd, &s->pidfd, &s->epoll_fd, &s->timer_fd};
        for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
                if (*fds[i] >= 0) {
                        close(*fds[i]);
                        *fds[i] = -1;
                }
        for (size_t i = 0; s->regions && i < s->n_regions; i++)
                pages_free(&s->regions[i]);
        free(s->regions);
        s->regions = NULL;
        s->n_regions = 0;
        if (s->zeros)
                munmap(s->zeros, UFFD_BULK);
        s->zeros = NULL;
        free(s->batch);
        s->batch = NULL;
        atomic_store(&s->phase, PHASE_DONE);
}

int vmsnap_uffd_server_run(struct vmsnap_uffd_server *s, struct vmsnap_diag *d)
{
        if (!s)
                return vmsnap_diag(d, -EINVAL, "no page server");
        if (s->ran)
                return vmsnap_diag(d, -EALREADY, "this page server already ran; create a new "
                                   "one per restore");
        s->ran = true;
        int r = loop_setup(s, d);
        if (r == 0)
                r = loop(s, d);
        teardown(s);
        return r;
}
