/* The page server's lifecycle: create (open the snapshot, load the working set, listen),
 * stop, stats, save the working set, free; and the helpers every thread uses to report
 * (see server.h). The event loop itself is in loop.c. */
#include "uffd/lazy.h"
#include "uffd/server.h"
#include "util/cleanup.h"
#include "util/sys.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void server_note(struct vmsnap_uffd_server *s, enum vmsnap_uffd_note level, const char *fmt,
                 ...)
{
        if (!s->opts.note)
                return;
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&s->mu);
        s->opts.note(s->opts.note_ctx, level, msg);
        pthread_mutex_unlock(&s->mu);
}

void server_wake(struct vmsnap_uffd_server *s)
{
        uint64_t one = 1;
        ssize_t n = write(s->wake_fd, &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is already non-zero, the loop will wake */
}

/* Kills the VMM through its pidfd (immune to pid reuse), else by pid. */
static void kill_peer(struct vmsnap_uffd_server *s)
{
        if (s->pidfd >= 0)
                pidfd_send_signal(s->pidfd, SIGKILL, NULL, 0);
        else if (s->peer_pid > 0 && s->peer_pid != getpid())
                kill(s->peer_pid, SIGKILL);
}

void server_fail(struct vmsnap_uffd_server *s, int err, const char *fmt, ...)
{
        char msg[sizeof(s->fatal_diag.msg) - 64];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&s->mu);
        bool first = atomic_load(&s->fatal) == 0;
        if (first) {
                /* Publish, then kill: the loop must see the error before the VMM's exit,
                 * or it would report a clean end. */
                if (s->peer_pid > 0 && s->peer_pid != getpid())
                        vmsnap_diag(&s->fatal_diag, err, "%s; killed VMM pid %d", msg,
                                    (int)s->peer_pid);
                else
                        vmsnap_diag(&s->fatal_diag, err, "%s", msg);
                atomic_store(&s->fatal, err);
                kill_peer(s);
        }
        pthread_mutex_unlock(&s->mu);
        atomic_store(&s->stopping, true);
        server_wake(s);
}

void server_peer_gone(struct vmsnap_uffd_server *s)
{
        atomic_store(&s->peer_gone, true);
        atomic_store(&s->stopping, true);
        server_wake(s);
}

struct served_region *server_region_at(struct vmsnap_uffd_server *s, uint64_t addr)
{
        size_t lo = 0, hi = s->n_regions;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                struct served_region *sr = &s->regions[mid];
                if (addr < sr->r.base)
                        hi = mid;
                else if (addr - sr->r.base >= sr->r.size)
                        lo = mid + 1;
                else
                        return sr;
        }
        return NULL;
}

int server_wake_range(struct vmsnap_uffd_server *s, uint64_t addr, uint64_t len)
{
        struct uffdio_range range = {addr, len};
        return vmsnap_sys.ioctl(s->uffd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

/* Applies defaults and checks the options. */
static int normalize_opts(struct vmsnap_uffd_opts *o, struct vmsnap_diag *d)
{
        if (o->fault_around == 0)
                o->fault_around = VMSNAP_UFFD_DEFAULT_FAULT_AROUND;
        if (o->fault_around < 4096 || o->fault_around > VMSNAP_UFFD_MAX_FAULT_AROUND ||
            (o->fault_around & (o->fault_around - 1)))
                return vmsnap_diag(d, -EINVAL, "fault-around %llu must be a power of two "
                                   "between 4096 and %u bytes",
                                   (unsigned long long)o->fault_around,
                                   VMSNAP_UFFD_MAX_FAULT_AROUND);
        if (o->workers == 0)
                o->workers = VMSNAP_UFFD_DEFAULT_WORKERS;
        if (o->workers > VMSNAP_UFFD_MAX_WORKERS)
                return vmsnap_diag(d, -EINVAL, "%u workers is more than the %u allowed",
                                   o->workers, VMSNAP_UFFD_MAX_WORKERS);
        if (o->accept_timeout_ms == 0)
                o->accept_timeout_ms = VMSNAP_UFFD_DEFAULT_ACCEPT_TIMEOUT_MS;
        return 0;
}

/* Binds and listens on path, replacing a stale socket (never any other kind of file). */
static int listen_on(struct vmsnap_uffd_server *s, const char *path, struct vmsnap_diag *d)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: socket path longer than %zu bytes",
                                   path, sizeof(sa.sun_path) - 1);
        strcpy(sa.sun_path, path);
        struct stat st;
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return vmsnap_diag(d, -EEXIST, "%s exists and is not a socket", path);
                unlink(path);
        }
        s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s->listen_fd < 0)
                return vmsnap_diag(d, -errno, "socket: %s", strerror(errno));
        if (bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            listen(s->listen_fd, 16) < 0 || stat(path, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot listen: %s", path, strerror(errno));
        s->sock_dev = st.st_dev;
        s->sock_ino = st.st_ino;
        return 0;
}

/* Loads memfile.ws for replay; a missing or unusable one only costs speed, so it is noted
 * and ignored. A recording starts from the replayed set, so that the next snapshot keeps
 * the blocks this guest no longer needed to fault on. */
static int load_ws(struct vmsnap_uffd_server *s, const struct vmsnap_uuid *build)
{
        struct vmsnap_diag wd = {0};
        if (!s->opts.no_ws_replay) {
                int r = ws_load(s->snapdir, s->block_size, s->mem_size, &s->replay, &wd);
                if (r < 0 && r != -ENOENT)
                        server_note(s, VMSNAP_UFFD_NOTE_WARN, "ignoring the working set: %s",
                                    wd.msg);
                if (s->replay)
                        atomic_store(&s->stats.ws_blocks, s->replay->n_blocks);
        }
        if (!s->opts.ws_record)
                return 0;
        int r = ws_recorder_init(&s->rec, s->block_size, s->mem_size, build);
        for (size_t i = 0; r == 0 && s->replay && i < s->replay->n_runs; i++)
                r = ws_recorder_add(&s->rec, s->replay->runs[i].first_block * s->block_size,
                                    s->replay->runs[i].n_blocks * s->block_size);
        return r;
}

/* Everything of new() after the struct exists; on failure the caller frees s. */
static int setup(struct vmsnap_uffd_server *s, const char *snapdir, const char *socket_path,
                 struct vmsnap_diag *d)
{
        s->snapdir = strdup(snapdir);
        s->socket_path = strdup(socket_path);
        if (!s->snapdir || !s->socket_path)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = s->opts.remote_lazy ? uffd_lazy_open(snapdir, s->opts.remote_lazy,
                                                     s->opts.chunk_cache,
                                                     s->opts.chunk_cache_size, &s->lazy, d)
                                    : 0;
        if (r == 0)
                r = vmsnap_mem_open(snapdir, &s->snap, d);
        if (r < 0)
                return r;
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s->snap);
        s->block_size = h->block_size;
        s->mem_size = h->size;
        s->fault_around = MAX(s->opts.fault_around, h->block_size);
        r = load_ws(s, &h->build_id);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: cannot start the working-set recording: %s",
                                   snapdir, strerror(-r));
        s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->stop_fd < 0 || s->wake_fd < 0)
                return vmsnap_diag(d, -errno, "eventfd: %s", strerror(errno));
        return listen_on(s, socket_path, d);
}

int vmsnap_uffd_server_new(const char *snapdir, const char *socket_path,
                           const struct vmsnap_uffd_opts *opts,
                           struct vmsnap_uffd_server **ret, struct vmsnap_diag *d)
{
        if (!snapdir || !socket_path || !ret)
                return vmsnap_diag(d, -EINVAL, "page server: snapshot directory and socket "
                                   "path are required");
        struct vmsnap_uffd_opts o = opts ? *opts : (struct vmsnap_uffd_opts){0};
        int r = normalize_opts(&o, d);
        if (r < 0)
                return r;
        struct vmsnap_uffd_server *s = calloc(1, sizeof(*s));
        if (!s)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        s->opts = o;
        s->listen_fd = s->stop_fd = s->wake_fd = s->epoll_fd = s->timer_fd = -1;
        s->uffd = s->pidfd = -1;
        for (unsigned i = 0; i < UFFD_MAX_CONNS; i++)
                s->conns[i].fd = -1;
        pthread_mutex_init(&s->mu, NULL);
        r = setup(s, snapdir, socket_path, d);
        if (r < 0) {
                vmsnap_uffd_server_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

void vmsnap_uffd_server_stop(struct vmsnap_uffd_server *s)
{
        if (!s || s->stop_fd < 0)
                return;
        uint64_t one = 1;
        ssize_t n = write(s->stop_fd, &one, sizeof(one));
        (void)n;
}

void vmsnap_uffd_server_stats(const struct vmsnap_uffd_server *s, struct vmsnap_uffd_stats *ret)
{
        stats_read(&s->stats, ret);
        if (s->lazy)
                uffd_lazy_counts(s->lazy, &ret->remote_chunks_fetched, &ret->remote_chunks_cached);
}

int vmsnap_uffd_server_save_ws(struct vmsnap_uffd_server *s, const char *dir,
                               struct vmsnap_diag *d)
{
        if (!s)
                return vmsnap_diag(d, -EINVAL, "no page server");
        if (!s->rec.seen)
                return vmsnap_diag(d, -EINVAL, "working-set recording is off (start the page "
                                   "server with ws_record / --ws-record)");
        struct ws_set *ws;
        if (ws_recorder_copy(&s->rec, &ws) < 0)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = ws_save(dir ? dir : s->snapdir, ws, d);
        ws_free(ws);
        return r;
}

void vmsnap_uffd_server_free(struct vmsnap_uffd_server *s)
{
        if (!s)
                return;
        struct stat st;
        if (s->listen_fd >= 0) {
                close(s->listen_fd);
                /* Remove the socket only if it is still ours (not replaced by a new server). */
                if (stat(s->socket_path, &st) == 0 && st.st_dev == s->sock_dev &&
                    st.st_ino == s->sock_ino)
                        unlink(s->socket_path);
        }
        if (s->stop_fd >= 0)
                close(s->stop_fd);
        if (s->wake_fd >= 0)
                close(s->wake_fd);
        vmsnap_mem_close(s->snap);
        uffd_lazy_free(s->lazy);
        ws_free(s->replay);
        ws_recorder_free(&s->rec);
        pthread_mutex_destroy(&s->mu);
        free(s->snapdir);
        free(s->socket_path);
        free(s);
}
