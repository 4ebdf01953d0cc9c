/* vmsnapd in cluster mode: connection string, host identity and capacity, registration, and
 * the heartbeat thread (docs/cluster.md §3). */
#include "api/cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <vmsnap/cluster.h>
#include <vmsnap/sandbox.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"
#include "util/log.h"

#define HOST_ID_FILE   "cluster-host-id"
#define CONNINFO_MAX   4096
#define POOL_SIZE      4 /* connections of the request threads (each reconnects by itself) */

struct api_cluster {
        struct vmsnap_cluster *db; /* the heartbeat thread's once started */
        struct vmsnap_cluster_host_info info;
        int64_t epoch;
        unsigned heartbeat_ms, lost_after_ms;
        struct timespec healthy_since; /* CLOCK_MONOTONIC: first beat of the current good run */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stop, started;
        pthread_t thread;
        /* The request threads' connections: taken and given back under lock. */
        struct vmsnap_cluster *pool[POOL_SIZE];
        bool pool_busy[POOL_SIZE];
        pthread_cond_t pool_cond;
};

/* ---- options ------------------------------------------------------------------------------ */

static int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *ret)
{
        char buf[32], *end;
        if (len == 0 || len >= sizeof(buf) || s[0] == '-' || s[0] == '+')
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        if (errno || *end || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

int api_cluster_parse_capacity(const char *s, struct api_cluster_options *o, struct vmsnap_diag *d)
{
        uint64_t v[3];
        const char *p = s;
        for (int i = 0; i < 3; i++) {
                size_t len = strcspn(p, ",");
                if (parse_u64(p, len, i == 0 ? INT32_MAX : INT64_MAX / 2, &v[i]) < 0 ||
                    (i < 2 && v[i] == 0) || (i < 2 && p[len] != ',') || (i == 2 && p[len]))
                        return vmsnap_diag(d, -EINVAL, "'%s' is not VCPUS,MEMORY_MIB,DISK_MIB "
                                           "(vCPUs and memory above 0)", s);
                p += len + 1;
        }
        o->vcpus = (uint32_t)v[0];
        o->memory_mib = v[1];
        o->disk_mib = v[2];
        return 0;
}

/* Reads the whole connection file: a regular file of this user, mode without group/other
 * bits (it may hold a password), at most CONNINFO_MAX - 1 bytes, trailing space cut. */
static int read_conninfo_file(const char *path, char *out, size_t size, struct vmsnap_diag *d)
{
        struct stat st;
        _cleanup_close_ int fd = vmsnap_fs_open_input(path, &st);
        if (fd < 0)
                return vmsnap_diag(d, fd, "--cluster @%s: %s", path, strerror(-fd));
        if (st.st_uid != geteuid() || (st.st_mode & 077))
                return vmsnap_diag(d, -EPERM, "--cluster @%s: must be this user's and mode 0600 "
                                   "(it may hold a password; it is uid %u mode %04o)",
                                   path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
        if ((uint64_t)st.st_size >= size)
                return vmsnap_diag(d, -EFBIG, "--cluster @%s: longer than %zu bytes", path, size - 1);
        ssize_t n = vmsnap_fs_pread_full(fd, out, (size_t)st.st_size, 0);
        if (n < 0)
                return vmsnap_diag(d, (int)n, "--cluster @%s: %s", path, strerror((int)-n));
        out[n] = '\0';
        while (n > 0 && strchr(" \t\r\n", out[n - 1]))
                out[--n] = '\0';
        if (n == 0 || memchr(out, '\0', (size_t)n))
                return vmsnap_diag(d, -EINVAL, "--cluster @%s: empty or not text", path);
        return 0;
}

int api_cluster_token_load(const char *path, char out[65], struct vmsnap_diag *d)
{
        char buf[CONNINFO_MAX];
        struct vmsnap_diag d2 = {0};
        int r = read_conninfo_file(path, buf, sizeof(buf), &d2);
        if (r < 0)
                return vmsnap_diag(d, r, "--cluster-token: %s", d2.msg + strlen("--cluster @"));
        size_t n = strlen(buf);
        bool hex = n == 64;
        for (size_t i = 0; hex && i < n; i++)
                hex = strchr("0123456789abcdef", buf[i]) != NULL;
        if (!hex) {
                explicit_bzero(buf, sizeof(buf));
                return vmsnap_diag(d, -EINVAL, "--cluster-token %s: not 64 lowercase hex digits "
                                   "(make one with `openssl rand -hex 32`)", path);
        }
        memcpy(out, buf, 65);
        explicit_bzero(buf, sizeof(buf));
        return 0;
}

/* Checks that libpq understands s and that it names no password. */
static int check_conninfo(const char *s, bool from_argv, struct vmsnap_diag *d)
{
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(s, &err);
        if (!opts) {
                int r = vmsnap_diag(d, -EINVAL, "--cluster: not a connection string: %s",
                                    err ? err : "out of memory");
                PQfreemem(err);
                return r;
        }
        bool password = false;
        for (PQconninfoOption *o = opts; o->keyword; o++)
                if (strcmp(o->keyword, "password") == 0 && o->val && o->val[0])
                        password = true;
        PQconninfoFree(opts);
        if (password && from_argv)
                return vmsnap_diag(d, -EPERM, "--cluster: a password on the command line is seen "
                                   "by every local user (ps): put the connection string in a "
                                   "0600 file and pass --cluster @FILE, or use a PGPASSFILE");
        return 0;
}

int api_cluster_conninfo(const char *source, char *out, size_t size, struct vmsnap_diag *d)
{
        if (!source || !*source)
                return vmsnap_diag(d, -EINVAL, "--cluster: empty");
        if (source[0] == '@') {
                int r = read_conninfo_file(source + 1, out, size, d);
                return r < 0 ? r : check_conninfo(out, false, d);
        }
        if (strlen(source) >= size)
                return vmsnap_diag(d, -E2BIG, "--cluster: longer than %zu bytes", size - 1);
        snprintf(out, size, "%s", source);
        return check_conninfo(out, true, d);
}

/* ---- identity and capacity ---------------------------------------------------------------- */

/* The host id: --host-id, else <root>/cluster-host-id (a UUID made and stored on first use,
 * so a restart keeps its identity and takes a new epoch). */
static int host_id(const char *given, const char *root, char out[VMSNAP_CLUSTER_ID_MAX],
                   struct vmsnap_diag *d)
{
        if (given) {
                if (strlen(given) >= VMSNAP_CLUSTER_ID_MAX)
                        return vmsnap_diag(d, -EINVAL, "--host-id: longer than %d bytes",
                                           VMSNAP_CLUSTER_ID_MAX - 1);
                snprintf(out, VMSNAP_CLUSTER_ID_MAX, "%s", given);
                return 0;
        }
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(root);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: %s", root, strerror(-dirfd));
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        int r = vmsnap_fs_read_file(dirfd, HOST_ID_FILE, 64, &buf, &len);
        if (r == 0) {
                while (len && strchr(" \t\r\n", buf[len - 1]))
                        buf[--len] = '\0';
                if (len == 0 || len >= VMSNAP_CLUSTER_ID_MAX)
                        return vmsnap_diag(d, -EINVAL, "%s/" HOST_ID_FILE ": not a host id", root);
                snprintf(out, VMSNAP_CLUSTER_ID_MAX, "%s", (const char *)buf);
                return 0;
        }
        if (r != -ENOENT)
                return vmsnap_diag(d, r, "%s/" HOST_ID_FILE ": %s", root, strerror(-r));
        struct vmsnap_uuid u;
        char text[40];
        vmsnap_uuid_new(&u);
        vmsnap_uuid_format(&u, text);
        size_t n = strlen(text);
        text[n] = '\n';
        r = vmsnap_fs_atomic_write(dirfd, HOST_ID_FILE, text, n + 1, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "%s", root);
        text[n] = '\0';
        snprintf(out, VMSNAP_CLUSTER_ID_MAX, "%s", text);
        return 0;
}

/* Where other hosts reach this one: --advertise, else the TCP address bound (not a wildcard). */
static int endpoint(const char *advertise, const char *tcp_url, char *out, size_t size,
                    struct vmsnap_diag *d)
{
        if (advertise) {
                if (!strchr(advertise, ':') || strlen(advertise) >= size)
                        return vmsnap_diag(d, -EINVAL, "--advertise: '%s' is not HOST:PORT",
                                           advertise);
                snprintf(out, size, "%s", advertise);
                return 0;
        }
        if (!tcp_url)
                return vmsnap_diag(d, -EINVAL, "--cluster needs the TCP API (other hosts forward "
                                   "to it): drop --no-tcp");
        const char *hostport = strncmp(tcp_url, "http://", 7) == 0 ? tcp_url + 7 : tcp_url;
        if (strncmp(hostport, "0.0.0.0:", 8) == 0 || strncmp(hostport, "[::]:", 5) == 0)
                return vmsnap_diag(d, -EINVAL, "--cluster: the API listens on every address "
                                   "(%s): pass --advertise HOST:PORT so other hosts know which",
                                   hostport);
        snprintf(out, size, "%s", hostport);
        return 0;
}

/* Fills what --capacity left 0 from the machine: online CPUs, physical memory, the free
 * space of the root's file system. */
static void measure_capacity(const char *root, struct vmsnap_cluster_host_info *h)
{
        if (!h->vcpus) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                h->vcpus = n > 0 ? (uint32_t)n : 1;
        }
        if (!h->memory_mib) {
                long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
                h->memory_mib = pages > 0 && page > 0 ? ((uint64_t)pages * (uint64_t)page) >> 20 : 1;
        }
        struct statvfs sv;
        if (!h->disk_mib && statvfs(root, &sv) == 0)
                h->disk_mib = ((uint64_t)sv.f_bavail * sv.f_frsize) >> 20;
}

/* ---- the heartbeat thread ----------------------------------------------------------------- */

static uint64_t ms_since(const struct timespec *t)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (uint64_t)(now.tv_sec - t->tv_sec) * 1000 + (uint64_t)(now.tv_nsec / 1000000) -
               (uint64_t)(t->tv_nsec / 1000000);
}

/* One beat: heartbeat (re-register when the cluster declared this host lost), then the sweep
 * of silent hosts — only once this host has itself reached the database for a whole timeout:
 * after an outage of the database every host was silent, and each must get the chance to
 * beat again before anyone judges it. *reachable tracks the database's state so each change
 * is logged once. */
static void beat(struct api_cluster *c, bool *reachable)
{
        struct vmsnap_diag d = {0};
        int r = vmsnap_cluster_host_heartbeat(c->db, c->info.id, c->epoch, &d);
        if (r == -ESTALE) {
                log_warn("cluster: %s; registering again", d.msg);
                int64_t epoch;
                r = vmsnap_cluster_host_register(c->db, &c->info, &epoch, &d);
                if (r == 0) {
                        log_info("cluster: host %s registered again, epoch %" PRId64, c->info.id,
                                 epoch);
                        __atomic_store_n(&c->epoch, epoch, __ATOMIC_RELEASE);
                }
        }
        if (r == 0 && !*reachable)
                clock_gettime(CLOCK_MONOTONIC, &c->healthy_since);
        if (r == 0 && ms_since(&c->healthy_since) >= c->lost_after_ms) {
                r = vmsnap_cluster_hosts_mark_lost(c->db, c->lost_after_ms, c->info.id, &d);
                if (r > 0)
                        log_warn("cluster: marked %d host%s lost (no heartbeat for %u ms)", r,
                                 r == 1 ? "" : "s", c->lost_after_ms);
        }
        if (r < 0 && *reachable)
                log_warn("cluster: %s", d.msg);
        else if (r >= 0 && !*reachable)
                log_info("cluster: database reachable again");
        *reachable = r >= 0;
}

static void *heartbeat_main(void *p)
{
        struct api_cluster *c = p;
        bool reachable = true;
        pthread_mutex_lock(&c->lock);
        while (!c->stop) {
                struct timespec until;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_sec += c->heartbeat_ms / 1000;
                until.tv_nsec += (long)(c->heartbeat_ms % 1000) * 1000000L;
                if (until.tv_nsec >= 1000000000L) {
                        until.tv_sec++;
                        until.tv_nsec -= 1000000000L;
                }
                while (!c->stop && pthread_cond_timedwait(&c->cond, &c->lock, &until) != ETIMEDOUT)
                        ;
                if (c->stop)
                        break;
                pthread_mutex_unlock(&c->lock);
                beat(c, &reachable);
                pthread_mutex_lock(&c->lock);
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* ---- start and stop ----------------------------------------------------------------------- */

static int fill_info(const struct api_cluster_options *o, const char *root, const char *tcp_url,
                     struct vmsnap_cluster_host_info *h, struct vmsnap_diag *d)
{
        int r = host_id(o->host_id, root, h->id, d);
        if (r == 0)
                r = endpoint(o->advertise, tcp_url, h->endpoint, sizeof(h->endpoint), d);
        if (r < 0)
                return r;
        h->vcpus = o->vcpus;
        h->memory_mib = o->memory_mib;
        h->disk_mib = o->disk_mib;
        measure_capacity(root, h);
        return 0;
}

int api_cluster_start(const struct api_cluster_options *o, const char *root, const char *tcp_url,
                      struct api_cluster **ret, struct vmsnap_diag *d)
{
        _cleanup_free_ char *conninfo = malloc(CONNINFO_MAX);
        struct api_cluster *c = calloc(1, sizeof(*c));
        if (!conninfo || !c) {
                free(c);
                return vmsnap_diag(d, -ENOMEM, "cluster: out of memory");
        }
        c->heartbeat_ms = o->heartbeat_ms ? o->heartbeat_ms : API_CLUSTER_HEARTBEAT_MS_DEFAULT;
        c->lost_after_ms = o->lost_after_ms ? o->lost_after_ms : API_CLUSTER_LOST_AFTER_MS_DEFAULT;
        int r = api_cluster_conninfo(o->source, conninfo, CONNINFO_MAX, d);
        if (r == 0)
                r = fill_info(o, root, tcp_url, &c->info, d);
        if (r == 0)
                r = vmsnap_cluster_open(conninfo, &c->db, d);
        for (int i = 0; r == 0 && i < POOL_SIZE; i++)
                r = vmsnap_cluster_open(conninfo, &c->pool[i], d);
        explicit_bzero(conninfo, CONNINFO_MAX);
        if (r == 0)
                r = vmsnap_cluster_host_register(c->db, &c->info, &c->epoch, d);
        if (r < 0) {
                vmsnap_cluster_close(c->db);
                for (int i = 0; i < POOL_SIZE; i++)
                        vmsnap_cluster_close(c->pool[i]);
                free(c);
                return r;
        }
        clock_gettime(CLOCK_MONOTONIC, &c->healthy_since);
        pthread_condattr_t ca;
        pthread_mutex_init(&c->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&c->cond, &ca);
        pthread_condattr_destroy(&ca);
        pthread_cond_init(&c->pool_cond, NULL);
        r = -pthread_create(&c->thread, NULL, heartbeat_main, c);
        c->started = r == 0;
        if (r < 0) {
                api_cluster_stop(c);
                return vmsnap_diag(d, r, "cluster: cannot start the heartbeat thread: %s",
                                   strerror(-r));
        }
        log_info("cluster: host %s at %s registered (epoch %" PRId64 "; %" PRIu32 " vCPUs, "
                 "%" PRIu64 " MiB memory, %" PRIu64 " MiB disk); heartbeat every %u ms, hosts "
                 "silent for %u ms are marked lost",
                 c->info.id, c->info.endpoint, c->epoch, c->info.vcpus, c->info.memory_mib,
                 c->info.disk_mib, c->heartbeat_ms, c->lost_after_ms);
        *ret = c;
        return 0;
}

void api_cluster_stop(struct api_cluster *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
        if (c->started)
                pthread_join(c->thread, NULL);
        pthread_cond_destroy(&c->cond);
        pthread_cond_destroy(&c->pool_cond);
        pthread_mutex_destroy(&c->lock);
        vmsnap_cluster_close(c->db);
        for (int i = 0; i < POOL_SIZE; i++)
                vmsnap_cluster_close(c->pool[i]);
        free(c);
}

/* ---- operations on local sandboxes (docs/cluster.md §5, §6) ------------------------------ */

/* The cluster's word for a local state (same order as enum vmsnap_sandbox_state). */
static const char *cluster_state(enum vmsnap_sandbox_state s)
{
        static const char *const names[] = { "creating", "running", "pausing", "paused",
                                             "resuming", "stopping", "stopped", "error" };
        return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "error";
}

/* Takes a connection of the pool, waiting while all are in use. */
static int pool_take(struct api_cluster *c)
{
        pthread_mutex_lock(&c->lock);
        for (;;) {
                for (int i = 0; i < POOL_SIZE; i++)
                        if (!c->pool_busy[i]) {
                                c->pool_busy[i] = true;
                                pthread_mutex_unlock(&c->lock);
                                return i;
                        }
                pthread_cond_wait(&c->pool_cond, &c->lock);
        }
}

static void pool_give(struct api_cluster *c, int i)
{
        pthread_mutex_lock(&c->lock);
        c->pool_busy[i] = false;
        pthread_cond_signal(&c->pool_cond);
        pthread_mutex_unlock(&c->lock);
}

/* The host's current epoch (the heartbeat thread may have re-registered). */
static int64_t epoch_now(struct api_cluster *c)
{
        return __atomic_load_n(&c->epoch, __ATOMIC_ACQUIRE);
}

/* A database failure as the API reports it: the cluster is unavailable (503), the operation
 * was not started. Lease and state answers (-EBUSY, -ESTALE, -ENOENT) pass through. */
static int db_error(int r, struct vmsnap_diag *d)
{
        char why[sizeof(d->msg)];
        snprintf(why, sizeof(why), "%s", d->msg);
        if (r == -ECONNRESET || r == -ECONNREFUSED || r == -EIO)
                return vmsnap_diag(d, -EAGAIN, "cluster unavailable: %s", why);
        if (r == -ESTALE)
                return vmsnap_diag(d, -EAGAIN, "cluster: %s (this host is re-registering; retry)",
                                   why);
        return r;
}

int api_cluster_publish(struct api_cluster *c, const struct vmsnap_sandbox *sb,
                        struct vmsnap_diag *d)
{
        if (!c)
                return 0;
        int i = pool_take(c);
        int r = vmsnap_cluster_sandbox_adopt(c->pool[i], sb->id, c->info.id, epoch_now(c),
                                             cluster_state(sb->state), sb->template_id, sb->vcpus,
                                             sb->memory >> 20 ? sb->memory >> 20 : 1, d);
        pool_give(c, i);
        return r == -EEXIST ? 0 : db_error(r, d);
}

int api_cluster_op_begin(struct api_cluster *c, const struct vmsnap_sandbox *sb, const char *op,
                         const char *transitional, struct api_cluster_op *ret,
                         struct vmsnap_diag *d)
{
        *ret = (struct api_cluster_op){ .c = c };
        if (!c)
                return 0;
        int i = pool_take(c);
        struct vmsnap_cluster *db = c->pool[i];
        int64_t epoch = epoch_now(c);
        int r = vmsnap_cluster_lease_acquire(db, sb->id, c->info.id, epoch, op, &ret->token, d);
        if (r == -ENOENT) { /* made before this host joined the cluster: adopt it first */
                r = vmsnap_cluster_sandbox_adopt(db, sb->id, c->info.id, epoch,
                                                 cluster_state(sb->state), sb->template_id,
                                                 sb->vcpus, sb->memory >> 20 ? sb->memory >> 20 : 1,
                                                 d);
                if (r == 0 || r == -EEXIST)
                        r = vmsnap_cluster_lease_acquire(db, sb->id, c->info.id, epoch, op,
                                                         &ret->token, d);
        }
        struct vmsnap_cluster_sandbox row;
        if (r == 0 && (r = vmsnap_cluster_sandbox_get(db, sb->id, &row, d)) == 0 &&
            strcmp(row.host_id, c->info.id) != 0)
                r = vmsnap_diag(d, -EBUSY, "sandbox %s belongs to host %s in the cluster, not "
                                "to this one (%s)", sb->id, row.host_id, c->info.id);
        if (r == 0)
                r = vmsnap_cluster_sandbox_set_state(db, sb->id, c->info.id, ret->token,
                                                     transitional, d);
        if (r < 0 && ret->token) /* the lease was taken: give it back */
                vmsnap_cluster_lease_release(db, sb->id, c->info.id, ret->token, NULL);
        pool_give(c, i);
        if (r < 0) {
                ret->token = 0;
                return r == -EBUSY ? r : db_error(r, d);
        }
        snprintf(ret->id, sizeof(ret->id), "%s", sb->id);
        return 0;
}

void api_cluster_op_end(struct api_cluster_op *op, struct vmsnap_host *host, bool destroyed)
{
        if (!op->c || !op->token)
                return;
        struct vmsnap_diag d = {0};
        struct vmsnap_sandbox sb;
        const char *state = "stopped";
        if (!destroyed) /* the state the local operation reached, success or not */
                state = vmsnap_sandbox_get(host, op->id, &sb, NULL) == 0 ? cluster_state(sb.state)
                                                                        : "error";
        int i = pool_take(op->c);
        int r = 0;
        if (op->pause) /* the snapshot another host may resume it from, or none */
                r = vmsnap_cluster_sandbox_set_snapshot(op->c->pool[i], op->id, op->c->info.id,
                                                        op->token, op->pushed, &d);
        if (r == 0)
                r = vmsnap_cluster_sandbox_finish(op->c->pool[i], op->id, op->c->info.id,
                                                  op->token, state, &d);
        pool_give(op->c, i);
        if (r < 0)
                log_warn("cluster: sandbox %s: publishing '%s' failed: %s", op->id, state, d.msg);
        op->token = 0;
}

int api_cluster_owner(struct api_cluster *c, const char *ref, char owner[64],
                      char endpoint[VMSNAP_CLUSTER_ENDPOINT_MAX], bool *ret_alive,
                      struct vmsnap_diag *d)
{
        struct vmsnap_cluster_sandbox row;
        if (!c || strlen(ref) >= VMSNAP_CLUSTER_ID_MAX)
                return 0;
        int i = pool_take(c);
        int r = vmsnap_cluster_sandbox_get(c->pool[i], ref, &row, d);
        if (r == 0 && strcmp(row.host_id, c->info.id) != 0)
                r = vmsnap_cluster_host_endpoint(c->pool[i], row.host_id, endpoint, ret_alive, d);
        else if (r == 0)
                r = -ENOENT; /* ours: the local answer stands */
        pool_give(c, i);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return db_error(r, d);
        snprintf(owner, 64, "%s", row.host_id);
        return 1;
}

/* ---- placement, listing, takeover (docs/cluster.md §4, §6.5) ----------------------------- */

const char *api_cluster_self(const struct api_cluster *c)
{
        return c->info.id;
}

int api_cluster_place(struct api_cluster *c, const char *template_id, uint32_t vcpus,
                      uint64_t memory_mib, const char *pin, char id[64], char host[64],
                      char endpoint[VMSNAP_CLUSTER_ENDPOINT_MAX], struct vmsnap_diag *d)
{
        struct vmsnap_uuid u;
        vmsnap_uuid_new(&u);
        vmsnap_uuid_format(&u, id);
        struct vmsnap_cluster_request req = { .vcpus = vcpus ? vcpus : 1,
                                              .memory_mib = memory_mib ? memory_mib : 256,
                                              .pin_host = pin };
        bool alive = false;
        int i = pool_take(c);
        int r = vmsnap_cluster_sandbox_create(c->pool[i], id,
                                              template_id && *template_id ? template_id : NULL,
                                              &req, host, d);
        if (r == 0)
                r = vmsnap_cluster_host_endpoint(c->pool[i], host, endpoint, &alive, d);
        pool_give(c, i);
        if (r == -ENOSPC || (r == -ENOENT && pin))
                return r;
        return r < 0 ? db_error(r == -ENOENT ? -EIO : r, d) : 0;
}

int api_cluster_placed_here(struct api_cluster *c, const char *id, struct vmsnap_diag *d)
{
        struct vmsnap_cluster_sandbox row;
        if (strlen(id) >= VMSNAP_CLUSTER_ID_MAX)
                return 0;
        int i = pool_take(c);
        int r = vmsnap_cluster_sandbox_get(c->pool[i], id, &row, d);
        pool_give(c, i);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return db_error(r, d);
        return strcmp(row.host_id, c->info.id) == 0 && strcmp(row.state, "creating") == 0;
}

void api_cluster_created(struct api_cluster *c, const char *id, const struct vmsnap_sandbox *sb)
{
        struct vmsnap_diag d = {0};
        int i = pool_take(c);
        int r = vmsnap_cluster_sandbox_created(c->pool[i], id, c->info.id,
                                               sb ? cluster_state(sb->state) : NULL,
                                               sb ? sb->vcpus : 0, sb ? sb->memory >> 20 : 0, &d);
        pool_give(c, i);
        if (r < 0)
                log_warn("cluster: placed sandbox %s: %s", id, d.msg);
}

void api_cluster_template_here(struct api_cluster *c, const char *template_id)
{
        struct vmsnap_diag d = {0};
        int i = pool_take(c);
        int r = vmsnap_cluster_template_cached(c->pool[i], c->info.id, template_id, &d);
        pool_give(c, i);
        if (r < 0)
                log_warn("cluster: recording template %s here: %s", template_id, d.msg);
}

int api_cluster_list(struct api_cluster *c, bool all, struct vmsnap_cluster_sandbox **ret,
                     size_t *ret_n, struct vmsnap_diag *d)
{
        int i = pool_take(c);
        int r = vmsnap_cluster_sandbox_list(c->pool[i], all, ret, ret_n, d);
        pool_give(c, i);
        return r < 0 ? db_error(r, d) : 0;
}

/* Under the lease just taken: whether the row may move here (paused, pushed, owner lost). */
static int takeover_check(struct vmsnap_cluster *db, const struct vmsnap_cluster_sandbox *row,
                          struct vmsnap_diag *d)
{
        char endpoint[VMSNAP_CLUSTER_ENDPOINT_MAX];
        bool alive = true;
        int r = vmsnap_cluster_host_endpoint(db, row->host_id, endpoint, &alive, d);
        if (r < 0)
                return r;
        if (alive)
                return vmsnap_diag(d, -EBUSY, "sandbox %s belongs to host %s, which is alive: "
                                   "ask it", row->id, row->host_id);
        if (strcmp(row->state, "paused") != 0)
                return vmsnap_diag(d, -EBUSY, "sandbox %s was %s on host %s, which is lost: only "
                                   "a paused sandbox can resume elsewhere", row->id, row->state,
                                   row->host_id);
        if (!row->pause_snapshot[0])
                return vmsnap_diag(d, -EBUSY, "sandbox %s is paused on host %s, which is lost, "
                                   "and its pause snapshot is not in the remote store", row->id,
                                   row->host_id);
        return 0;
}

int api_cluster_takeover(struct api_cluster *c, const char *id, struct vmsnap_cluster_sandbox *ret,
                         struct api_cluster_op *op, struct vmsnap_diag *d)
{
        *op = (struct api_cluster_op){ .c = c };
        if (strlen(id) >= VMSNAP_CLUSTER_ID_MAX)
                return vmsnap_diag(d, -ENOENT, "no such sandbox");
        int i = pool_take(c);
        struct vmsnap_cluster *db = c->pool[i];
        int r = vmsnap_cluster_lease_acquire(db, id, c->info.id, epoch_now(c), "resume",
                                             &op->token, d);
        if (r == 0)
                r = vmsnap_cluster_sandbox_get(db, id, ret, d);
        if (r == 0)
                r = takeover_check(db, ret, d);
        if (r < 0 && op->token)
                vmsnap_cluster_lease_release(db, id, c->info.id, op->token, NULL);
        pool_give(c, i);
        if (r < 0) {
                op->token = 0;
                return r == -EBUSY || r == -ENOENT ? r : db_error(r, d);
        }
        snprintf(op->id, sizeof(op->id), "%s", id);
        return 0;
}

void api_cluster_op_abandon(struct api_cluster_op *op)
{
        if (!op->c || !op->token)
                return;
        struct vmsnap_diag d = {0};
        int i = pool_take(op->c);
        int r = vmsnap_cluster_lease_release(op->c->pool[i], op->id, op->c->info.id, op->token,
                                             &d);
        pool_give(op->c, i);
        if (r < 0)
                log_warn("cluster: sandbox %s: releasing its lease failed: %s", op->id, d.msg);
        op->token = 0;
}

void api_cluster_unplace(struct api_cluster *c, const char *id, const char *host)
{
        struct vmsnap_diag d = {0};
        int i = pool_take(c);
        int r = vmsnap_cluster_sandbox_created(c->pool[i], id, host, NULL, 0, 0, &d);
        pool_give(c, i);
        if (r < 0)
                log_warn("cluster: dropping the placement of sandbox %s on host %s: %s", id, host,
                         d.msg);
}

int api_cluster_choose(struct api_cluster *c, const char *template_id, uint32_t vcpus,
                       uint64_t memory_mib, char host[64],
                       char endpoint[VMSNAP_CLUSTER_ENDPOINT_MAX], struct vmsnap_diag *d)
{
        _cleanup_free_ struct vmsnap_cluster_host *hosts = NULL;
        size_t n = 0, index;
        bool alive;
        struct vmsnap_cluster_request req = { .vcpus = vcpus ? vcpus : 1,
                                              .memory_mib = memory_mib ? memory_mib : 256 };
        int i = pool_take(c);
        int r = vmsnap_cluster_hosts_load(c->pool[i],
                                          template_id && *template_id ? template_id : NULL,
                                          &hosts, &n, d);
        if (r == 0)
                r = vmsnap_cluster_place(hosts, n, &req, &index, d);
        if (r == 0)
                r = vmsnap_cluster_host_endpoint(c->pool[i], hosts[index].id, endpoint, &alive, d);
        pool_give(c, i);
        if (r == 0)
                snprintf(host, 64, "%s", hosts[index].id);
        return r == -ENOSPC ? r : r < 0 ? db_error(r, d) : 0;
}
