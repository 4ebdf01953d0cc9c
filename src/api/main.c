/* vmsnapd: the host daemon. Opens the sandbox host (recovering what a crash left), serves the
 * REST API on a Unix socket and on TCP, runs the periodic tick (crash watcher, idle
 * auto-pause), and on SIGTERM/SIGINT stops accepting, lets the requests in flight finish and
 * closes the host, leaving sandboxes running for the next start to re-attach. */
#include "api/cluster.h"
#include "api/demo.h"
#include "api/notify.h"
#include "api/remote-routes.h"
#include "api/routes.h"
#include "api/server.h"
#include "api/token.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/log.h"

#include <vmsnap/chunk-cache.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LISTEN        "127.0.0.1:7420"
#define DEFAULT_TICK_INTERVAL 5
#define SOCKET_NAME           "vmsnapd.sock"

/* Two strings: C11 compilers need support only 4095 characters in one literal. */
static const char usage_text[] =
        "usage: vmsnapd [OPTIONS]\n\n"
        "The vmsnap host daemon: the sandbox REST API (docs/api.md) on a Unix socket (no token)\n"
        "and on TCP (a bearer token, made on first start and kept in <root>/token).\n\n"
        "options:\n"
        "  --root DIR            store root (default: $VMSNAP_ROOT, else " VMSNAP_STORE_DEFAULT_ROOT
        ")\n"
        "  --socket PATH         Unix socket, mode 0600 (default: <root>/" SOCKET_NAME ")\n"
        "  --listen HOST:PORT    TCP address (default: " DEFAULT_LISTEN "; port 0 picks one)\n"
        "  --no-tcp              serve on the Unix socket only\n"
        "  --per-address-limit N TCP connections one client address may hold before it has\n"
        "                        sent the token (default: 32; over it, new ones are refused)\n"
        "  --header-timeout SECS seconds a TCP connection has from accept to a request with\n"
        "                        the token, or it is closed (default: 10)\n"
        "  --vmm NAME            default VMM driver (default: qemu)\n"
        "  --guest-dir DIR       guest kernel, initramfs and rootfs (default: <root>/guest)\n"
        "  --mem-root DIR        guest memory files (default: /dev/shm/vmsnap-<16 hex of a hash of\n"
        "                        the root>, one per root); must be this user's and 0700\n"
        "  --merge-cap N         memory generations before a merge (default: 8)\n"
        "  --tick-interval SECS  crash watcher and idle auto-pause period (default: 5; 0: off)\n"
        "  --jail-uids FIRST:COUNT  uids (and gids) handed to the VMMs' jails, one per sandbox\n"
        "                        (default: 1879113728:65536, docs/jail.md)\n"
        "  --jail-gid GID        group of the read-only files the jails share\n"
        "                        (default: 1879048192)\n"
        "  --cgroup-version auto|1|2  cgroup hierarchy of the jails (default: auto)\n"
        "  --insecure-no-jail    run VMMs as the daemon's user, unconfined (tests of that mode\n"
        "                        only: a guest that escapes its VMM then owns the host)\n"
        "  --network             give every sandbox a network (docs/network.md): its own\n"
        "                        network namespace, egress policy and address; needs jails.\n"
        "                        One --network daemon per host network namespace\n"
        "  --net-pool CIDR       the sandboxes' addresses (default: " VMSNAP_NET_DEFAULT_POOL ")\n"
        "  --netns-dir DIR       where the namespaces are pinned (default: " VMSNAP_NET_DEFAULT_DIR ")\n"
        "  --cluster URL|@FILE   cluster mode (docs/cluster.md): register this host in the\n"
        "                        Postgres control plane and heart-beat; URL is a libpq URL or\n"
        "                        conninfo without a password, @FILE reads one from a 0600 file\n"
        "  --host-id ID          this host's id in the cluster (default: a UUID kept in\n"
        "                        <root>/cluster-host-id)\n"
        "  --advertise HOST:PORT where other hosts reach this API (default: the --listen address)\n"
        "  --capacity VCPUS,MEMORY_MIB,DISK_MIB  what this host offers the cluster (default:\n"
        "                        online CPUs, physical memory, free space of the root)\n"
        "  --cluster-token FILE  the cluster's shared API token (a 0600 file, 64 hex digits):\n"
        "                        the TCP API takes it instead of <root>/token, and requests\n"
        "                        about another host's sandbox are forwarded there with it\n"
        "  --heartbeat-interval MS  cluster heartbeat period (default: 2000)\n"
        "  --lost-after MS       a host silent this long is marked lost (default: 10000)\n";

static const char usage_text2[] =
        "  --remote NAME         the remote store (docs/remote.md) of push/pull/ls/rm/gc and of\n"
        "                        spawns of a snapshot that is not here: <root>/remotes/NAME.conf\n"
        "                        (0600). Default: the VMSNAP_S3_* environment, else\n"
        "                        <root>/remotes/default.conf when it exists, else none\n"
        "  --chunk-cache-size BYTES  limit of the chunk cache of pulls, <root>/chunk-cache\n"
        "                        (K/M/G allowed; 0: none; default: VMSNAP_CHUNK_CACHE_SIZE, else 8G)\n"
        "  --demo                after start, create a sandbox, run a command in it, pause and\n"
        "                        resume it, and show that its state survived\n"
        "  --print-routes        print the API's routes (METHOD PATH) and exit\n"
        "  -h, --help            show this help\n\n"
        "SIGTERM or SIGINT: stop accepting, finish the requests in flight, exit 0; sandboxes\n"
        "keep running. A second signal exits at once.\n"
        "Environment: VMSNAP_ROOT, VMSNAP_LOG=error|warn|info|debug; in cluster mode libpq's\n"
        "PGPASSFILE, PGSSLMODE, ... apply.\n"
        "Exit codes: 0 clean shutdown, 1 failure, 2 usage error.\n";

struct options {
        const char *root, *socket, *listen, *vmm, *guest_dir, *mem_root, *remote;
        const char *chunk_cache_size;
        unsigned merge_cap, tick_interval;
        struct api_gate_limits gate;
        bool no_tcp, demo, print_routes;
        struct vmsnap_jail_config jail; /* disabled by --insecure-no-jail */
        bool network;
        struct vmsnap_net_config net;
        struct api_cluster_options cluster; /* .source NULL: single-host mode */
        const char *cluster_token;          /* --cluster-token FILE */
};

/* The periodic vmsnap_host_tick, in its own thread, woken early to stop. */
struct ticker {
        struct api_server *srv;
        unsigned interval;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stop, started;
        pthread_t thread;
};

/* ---- options ------------------------------------------------------------------------------ */

static int parse_uint(const char *s, unsigned max, unsigned *ret)
{
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v > max)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "vmsnapd: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see `vmsnapd --help`)\n");
        va_end(ap);
        return 2;
}

enum {
        OPT_ROOT = 1000,
        OPT_SOCKET,
        OPT_LISTEN,
        OPT_NO_TCP,
        OPT_VMM,
        OPT_GUEST_DIR,
        OPT_MEM_ROOT,
        OPT_MERGE_CAP,
        OPT_TICK,
        OPT_DEMO,
        OPT_PRINT_ROUTES,
        OPT_PER_ADDRESS_LIMIT,
        OPT_HEADER_TIMEOUT,
        OPT_NO_JAIL,
        OPT_JAIL_UIDS,
        OPT_JAIL_GID,
        OPT_CGROUP_VERSION,
        OPT_NETWORK,
        OPT_NET_POOL,
        OPT_NETNS_DIR,
        OPT_CLUSTER,
        OPT_HOST_ID,
        OPT_ADVERTISE,
        OPT_CAPACITY,
        OPT_HEARTBEAT,
        OPT_LOST_AFTER,
        OPT_REMOTE,
        OPT_CLUSTER_TOKEN,
        OPT_CHUNK_CACHE_SIZE,
};

static const struct option long_options[] = {
        {"root", required_argument, NULL, OPT_ROOT},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"no-tcp", no_argument, NULL, OPT_NO_TCP},
        {"vmm", required_argument, NULL, OPT_VMM},
        {"guest-dir", required_argument, NULL, OPT_GUEST_DIR},
        {"mem-root", required_argument, NULL, OPT_MEM_ROOT},
        {"merge-cap", required_argument, NULL, OPT_MERGE_CAP},
        {"tick-interval", required_argument, NULL, OPT_TICK},
        {"demo", no_argument, NULL, OPT_DEMO},
        {"print-routes", no_argument, NULL, OPT_PRINT_ROUTES},
        {"per-address-limit", required_argument, NULL, OPT_PER_ADDRESS_LIMIT},
        {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
        {"insecure-no-jail", no_argument, NULL, OPT_NO_JAIL},
        {"jail-uids", required_argument, NULL, OPT_JAIL_UIDS},
        {"jail-gid", required_argument, NULL, OPT_JAIL_GID},
        {"cgroup-version", required_argument, NULL, OPT_CGROUP_VERSION},
        {"network", no_argument, NULL, OPT_NETWORK},
        {"net-pool", required_argument, NULL, OPT_NET_POOL},
        {"netns-dir", required_argument, NULL, OPT_NETNS_DIR},
        {"cluster", required_argument, NULL, OPT_CLUSTER},
        {"host-id", required_argument, NULL, OPT_HOST_ID},
        {"advertise", required_argument, NULL, OPT_ADVERTISE},
        {"capacity", required_argument, NULL, OPT_CAPACITY},
        {"heartbeat-interval", required_argument, NULL, OPT_HEARTBEAT},
        {"lost-after", required_argument, NULL, OPT_LOST_AFTER},
        {"remote", required_argument, NULL, OPT_REMOTE},
        {"cluster-token", required_argument, NULL, OPT_CLUSTER_TOKEN},
        {"chunk-cache-size", required_argument, NULL, OPT_CHUNK_CACHE_SIZE},
        {"help", no_argument, NULL, 'h'},
        {0},
};

/* The jail options (--jail-uids, --jail-gid, --cgroup-version, --insecure-no-jail). Returns
 * 0, -1 when c is not one of them, or the usage exit code 2. */
static int parse_jail_option(int c, const char *arg, struct vmsnap_jail_config *j)
{
        struct vmsnap_diag d = {0};
        unsigned gid;
        switch (c) {
        case OPT_NO_JAIL:
                j->disabled = true;
                return 0;
        case OPT_JAIL_UIDS:
                return vmsnap_jail_parse_uids(arg, &j->uid_first, &j->uid_count, &d) < 0
                               ? usage_error("--jail-uids: %s", d.msg)
                               : 0;
        case OPT_JAIL_GID:
                if (parse_uint(arg, 0x7fffffffu, &gid) < 0 || gid == 0)
                        return usage_error("--jail-gid: '%s' is not a non-zero group id", arg);
                j->shared_gid = (gid_t)gid;
                return 0;
        case OPT_CGROUP_VERSION:
                return vmsnap_jail_parse_cgroup_version(arg, &j->cgroup_version, &d) < 0
                               ? usage_error("--cgroup-version: %s", d.msg)
                               : 0;
        }
        return -1;
}

/* The cluster options (--cluster, --host-id, --advertise, --capacity, --heartbeat-interval,
 * --lost-after). Returns 0, -1 when c is not one of them, or the usage exit code 2. */
static int parse_cluster_option(int c, const char *arg, struct api_cluster_options *o)
{
        struct vmsnap_diag d = {0};
        switch (c) {
        case OPT_CLUSTER:
                o->source = arg;
                return 0;
        case OPT_HOST_ID:
                o->host_id = arg;
                return 0;
        case OPT_ADVERTISE:
                o->advertise = arg;
                return 0;
        case OPT_CAPACITY:
                return api_cluster_parse_capacity(arg, o, &d) < 0
                               ? usage_error("--capacity: %s", d.msg)
                               : 0;
        case OPT_HEARTBEAT:
                return parse_uint(arg, 600000, &o->heartbeat_ms) < 0 || o->heartbeat_ms < 10
                               ? usage_error("--heartbeat-interval: '%s' is not a number of "
                                             "milliseconds from 10 to 600000", arg)
                               : 0;
        case OPT_LOST_AFTER:
                return parse_uint(arg, 3600000, &o->lost_after_ms) < 0 || o->lost_after_ms < 10
                               ? usage_error("--lost-after: '%s' is not a number of "
                                             "milliseconds from 10 to 3600000", arg)
                               : 0;
        }
        return -1;
}

/* Returns 0, 1 for --help (done), or the usage exit code 2. */
static int parse_options(int argc, char **argv, struct options *o)
{
        *o = (struct options){
                .listen = DEFAULT_LISTEN,
                .tick_interval = DEFAULT_TICK_INTERVAL,
                .gate = {API_GATE_PER_ADDRESS_DEFAULT, API_GATE_DEADLINE_DEFAULT},
        };
        int c;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
                switch (c) {
                case OPT_ROOT:
                        o->root = optarg;
                        break;
                case OPT_SOCKET:
                        o->socket = optarg;
                        break;
                case OPT_LISTEN:
                        o->listen = optarg;
                        break;
                case OPT_NO_TCP:
                        o->no_tcp = true;
                        break;
                case OPT_VMM:
                        o->vmm = optarg;
                        break;
                case OPT_GUEST_DIR:
                        o->guest_dir = optarg;
                        break;
                case OPT_MEM_ROOT:
                        o->mem_root = optarg;
                        break;
                case OPT_REMOTE:
                        o->remote = optarg;
                        break;
                case OPT_CHUNK_CACHE_SIZE: {
                        uint64_t v;
                        if (vmsnap_chunk_cache_parse_size(optarg, &v) < 0)
                                return usage_error("--chunk-cache-size: '%s' is not a size in "
                                                   "bytes (K, M or G allowed)",
                                                   optarg);
                        o->chunk_cache_size = optarg;
                        break;
                }
                case OPT_DEMO:
                        o->demo = true;
                        break;
                case OPT_PRINT_ROUTES:
                        o->print_routes = true;
                        break;
                case OPT_MERGE_CAP:
                        if (parse_uint(optarg, 1024, &o->merge_cap) < 0 || o->merge_cap == 0)
                                return usage_error(
                                        "--merge-cap: '%s' is not a number from 1 to 1024", optarg);
                        break;
                case OPT_TICK:
                        if (parse_uint(optarg, 86400, &o->tick_interval) < 0)
                                return usage_error(
                                        "--tick-interval: '%s' is not a number of seconds "
                                        "from 0 to 86400",
                                        optarg);
                        break;
                case OPT_PER_ADDRESS_LIMIT:
                        if (parse_uint(optarg, 512, &o->gate.per_address) < 0 ||
                            o->gate.per_address == 0)
                                return usage_error("--per-address-limit: '%s' is not a number "
                                                   "from 1 to 512",
                                                   optarg);
                        break;
                case OPT_HEADER_TIMEOUT:
                        if (parse_uint(optarg, 3600, &o->gate.deadline_s) < 0 ||
                            o->gate.deadline_s == 0)
                                return usage_error("--header-timeout: '%s' is not a number of "
                                                   "seconds from 1 to 3600",
                                                   optarg);
                        break;
                case OPT_NETWORK:
                        o->network = true;
                        break;
                case OPT_NET_POOL: {
                        struct vmsnap_diag d = {0};
                        if (vmsnap_cidr_parse(optarg, &o->net.pool, &d) < 0)
                                return usage_error("--net-pool: %s", d.msg);
                        break;
                }
                case OPT_NETNS_DIR:
                        if (optarg[0] != '/')
                                return usage_error("--netns-dir: '%s' is not absolute", optarg);
                        o->net.netns_dir = optarg;
                        break;
                case 'h':
                        fputs(usage_text, stdout);
                        fputs(usage_text2, stdout);
                        return 1;
                case OPT_NO_JAIL:
                case OPT_JAIL_UIDS:
                case OPT_JAIL_GID:
                case OPT_CGROUP_VERSION:
                        if (parse_jail_option(c, optarg, &o->jail) != 0)
                                return 2;
                        break;
                case OPT_CLUSTER_TOKEN:
                        o->cluster_token = optarg;
                        break;
                case OPT_CLUSTER:
                case OPT_HOST_ID:
                case OPT_ADVERTISE:
                case OPT_CAPACITY:
                case OPT_HEARTBEAT:
                case OPT_LOST_AFTER:
                        if (parse_cluster_option(c, optarg, &o->cluster) != 0)
                                return 2;
                        break;
                default:
                        return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
                }
        }
        if (optind < argc)
                return usage_error("unexpected argument '%s'", argv[optind]);
        if (!o->root)
                o->root = vmsnap_store_default_root();
        if (!o->cluster.source && (o->cluster.host_id || o->cluster.advertise ||
                                   o->cluster.vcpus || o->cluster.heartbeat_ms ||
                                   o->cluster.lost_after_ms || o->cluster_token))
                return usage_error("--host-id, --advertise, --capacity, --heartbeat-interval, "
                                   "--lost-after and --cluster-token need --cluster");
        unsigned hb = o->cluster.heartbeat_ms ? o->cluster.heartbeat_ms
                                               : API_CLUSTER_HEARTBEAT_MS_DEFAULT;
        unsigned lost = o->cluster.lost_after_ms ? o->cluster.lost_after_ms
                                                 : API_CLUSTER_LOST_AFTER_MS_DEFAULT;
        if (o->cluster.source && lost < 2 * hb)
                return usage_error("--lost-after (%u ms) must be at least two heartbeat intervals "
                                   "(%u ms)", lost, 2 * hb);
        return 0;
}

static void print_routes(void)
{
        for (unsigned i = 0; i < API_ROUTE_COUNT; i++) {
                const struct api_route_info *ri = api_route_info((enum api_route)i);
                printf("%s %s%s\n", ri->method, ri->pattern, ri->public ? " public" : "");
        }
}

/* ---- the tick ----------------------------------------------------------------------------- */

static void *ticker_main(void *p)
{
        struct ticker *t = p;
        pthread_mutex_lock(&t->lock);
        while (!t->stop) {
                struct timespec until;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_sec += t->interval;
                while (!t->stop && pthread_cond_timedwait(&t->cond, &t->lock, &until) != ETIMEDOUT)
                        ;
                if (t->stop)
                        break;
                pthread_mutex_unlock(&t->lock);
                int n = vmsnap_host_tick(t->srv->host);
                if (n > 0)
                        log_info("tick: %d sandbox%s changed state (crashed VMM or idle "
                                 "auto-pause)",
                                 n, n == 1 ? "" : "es");
                else if (n < 0)
                        log_warn("tick: %s", strerror(-n));
                pthread_mutex_lock(&t->lock);
        }
        pthread_mutex_unlock(&t->lock);
        return NULL;
}

static int ticker_start(struct ticker *t, struct api_server *srv, unsigned interval)
{
        pthread_condattr_t ca;
        *t = (struct ticker){.srv = srv, .interval = interval};
        pthread_mutex_init(&t->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&t->cond, &ca);
        pthread_condattr_destroy(&ca);
        if (interval == 0)
                return 0;
        int r = pthread_create(&t->thread, NULL, ticker_main, t);
        t->started = r == 0;
        return -r;
}

static void ticker_stop(struct ticker *t)
{
        pthread_mutex_lock(&t->lock);
        t->stop = true;
        pthread_cond_signal(&t->cond);
        pthread_mutex_unlock(&t->lock);
        if (t->started)
                pthread_join(t->thread, NULL);
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->lock);
}

/* ---- start and stop ----------------------------------------------------------------------- */

/* Checks that VMMs can be jailed here (unless --insecure-no-jail) and says which it is. */
static int check_jail(const struct vmsnap_jail_config *j, struct vmsnap_diag *d)
{
        if (j->disabled) {
                log_warn("VMMs run UNJAILED (--insecure-no-jail): as the daemon's user, with "
                         "its capabilities, its files and no cgroup limits");
                return 0;
        }
        int r = vmsnap_jail_probe(j, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "refusing to start: VMMs cannot be jailed on this "
                                          "host");
        int v = vmsnap_jail_cgroup_version(j, NULL);
        log_info("VMMs run jailed: uids %u..%u, shared gid %u, cgroup v%d",
                 (unsigned)(j->uid_first ? j->uid_first : VMSNAP_JAIL_DEFAULT_UID_FIRST),
                 (unsigned)((j->uid_first ? j->uid_first : VMSNAP_JAIL_DEFAULT_UID_FIRST) +
                            (j->uid_count ? j->uid_count : VMSNAP_JAIL_DEFAULT_UID_COUNT) - 1),
                 (unsigned)(j->shared_gid ? j->shared_gid : VMSNAP_JAIL_DEFAULT_SHARED_GID), v);
        return 0;
}

/* Opens the host and fills srv. */
/* One log line per action recovery took at start (docs/sandbox.md "The journal"). */
static void log_recovery(void *ctx, const char *id, const char *name, const char *action)
{
        (void)ctx;
        log_info("recovery: sandbox %s (%s): %s", id, *name ? name : "no name", action);
}

static int open_host(struct api_server *srv, const struct options *o, struct vmsnap_diag *d)
{
        struct vmsnap_host_config cfg = {
                .root = o->root,
                .mem_root = o->mem_root,
                .guest_dir = o->guest_dir,
                .vmm = o->vmm,
                .merge_cap = o->merge_cap,
                .jail = &o->jail,
                .on_recovery = log_recovery,
                .net = o->network ? &o->net : NULL,
        };
        int r = check_jail(&o->jail, d);
        if (r == 0)
                r = vmsnap_host_open(&cfg, &srv->host, d);
        if (r < 0)
                return r;
        /* The root path is fixed for the store's life: no lock needed to read it. */
        snprintf(srv->root, sizeof(srv->root), "%s",
                 vmsnap_store_root(vmsnap_host_store(srv->host)));
        char accel[8], why[256];
        vmsnap_host_accel(srv->host, accel, why);
        log_info("accelerator: %s (%s)", accel, why);
        log_info("guest memory in %s", vmsnap_host_mem_root(srv->host));
        if ((r = api_remote_setup(srv, o->remote, d)) < 0)
                return r;
        if (o->chunk_cache_size)
                vmsnap_chunk_cache_parse_size(o->chunk_cache_size, &srv->chunk_cache_size);
        else if (vmsnap_chunk_cache_size_from_env(&srv->chunk_cache_size) < 0)
                return vmsnap_diag(d, -EINVAL, "VMSNAP_CHUNK_CACHE_SIZE: not a size in bytes");
        if (srv->have_remote) /* endpoint and bucket only: never the keys */
                log_info("remote store: %s/%s", srv->remote.endpoint, srv->remote.bucket);
        return 0;
}

/* Starts the TCP listener with the token of <root>/token. On the first start the token is
 * made first, and stored and printed (once) only when the listener is up, so a start that
 * fails to bind leaves no token behind that nobody was shown. */
static int start_tcp(struct api_server *srv, const char *listen, const char *cluster_token,
                     char *url, size_t url_size, struct vmsnap_diag *d)
{
        if (cluster_token) { /* one token for every host of the cluster */
                int r = api_cluster_token_load(cluster_token, srv->token, d);
                if (r == 0)
                        r = api_listen_tcp(srv, listen, url, url_size, d);
                if (r == 0) {
                        srv->forward = true;
                        log_info("serving on %s (the cluster's bearer token of %s)", url,
                                 cluster_token);
                }
                return r;
        }
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(srv->root);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: %s", srv->root, strerror(-dirfd));
        int r = api_token_load(dirfd, srv->token, d);
        bool made = r == -ENOENT;
        if (made)
                r = api_token_generate(srv->token, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "%s", srv->root);
        if ((r = api_listen_tcp(srv, listen, url, url_size, d)) < 0)
                return r;
        if (made && (r = api_token_store(dirfd, srv->token, d)) < 0)
                return vmsnap_diag_prefix(d, "%s", srv->root);
        if (made) {
                printf("vmsnapd: made the API token for TCP clients. It is shown once here and "
                       "kept in %s/" API_TOKEN_FILE " (mode 0600):\n%s\n",
                       srv->root, srv->token);
                fflush(stdout);
        }
        log_info("serving on %s (bearer token in %s/" API_TOKEN_FILE ")", url, srv->root);
        return 0;
}

/* Starts the (unless --no-tcp) TCP listener, then the Unix socket; the TCP URL bound goes
 * into tcp_url ("" without TCP). TCP first: on the first start it makes <root>/token, and a
 * script that waits for the socket's /healthz and then reads the token must find it. */
static int start_listeners(struct api_server *srv, const struct options *o, char *socket_path,
                           size_t size, char tcp_url[300], struct vmsnap_diag *d)
{
        tcp_url[0] = '\0';
        int n = o->socket ? snprintf(socket_path, size, "%s", o->socket)
                          : snprintf(socket_path, size, "%s/" SOCKET_NAME, srv->root);
        if (n < 0 || (size_t)n >= size)
                return vmsnap_diag(d, -ENAMETOOLONG,
                                   "%s/" SOCKET_NAME ": the socket path is too "
                                   "long; pass a shorter --socket",
                                   o->socket ? o->socket : srv->root);
        int r = o->no_tcp ? 0 : start_tcp(srv, o->listen, o->cluster_token, tcp_url, 300, d);
        if (r == 0)
                r = api_listen_unix(srv, socket_path, d);
        if (r == 0)
                log_info("serving on unix:%s (no token)", socket_path);
        return r;
}

/* Waits for the requests in flight after quiesce; a second signal gives up at once. */
static void drain(struct api_server *srv, const sigset_t *signals)
{
        unsigned waited = 0, n;
        while ((n = api_server_in_flight(srv)) > 0) {
                if (waited % 10 == 0)
                        log_info("waiting for %u request%s in flight", n, n == 1 ? "" : "s");
                struct timespec one = {.tv_sec = 1};
                int sig = sigtimedwait(signals, NULL, &one);
                if (sig > 0) {
                        log_warn("%s again: exiting without waiting for %u request%s; their "
                                 "sandboxes are recovered on the next start",
                                 strsignal(sig), n, n == 1 ? "" : "s");
                        _exit(1);
                }
                waited++;
        }
}

static int wait_signal(const sigset_t *signals)
{
        int sig;
        while ((sig = sigwaitinfo(signals, NULL)) < 0 && errno == EINTR)
                ;
        return sig;
}

static void close_host(struct api_server *srv)
{
        api_remote_teardown(srv);
        vmsnap_host_close(srv->host);
        api_metrics_destroy(&srv->metrics);
}

/* Runs the daemon until a signal; returns the exit code. */
static int run(struct api_server *srv, const struct options *o, const sigset_t *signals)
{
        struct vmsnap_diag d = {0};
        char socket_path[PATH_MAX], tcp_url[300];
        struct ticker ticker;
        struct api_cluster *cluster = NULL;
        pthread_t demo;
        bool demo_started = false;
        int r = open_host(srv, o, &d);
        if (r == 0)
                r = start_listeners(srv, o, socket_path, sizeof(socket_path), tcp_url, &d);
        if (r == 0 && o->cluster.source)
                r = api_cluster_start(&o->cluster, srv->root, tcp_url[0] ? tcp_url : NULL,
                                      &cluster, &d);
        if (r == 0 && cluster)
                __atomic_store_n(&srv->cluster, cluster, __ATOMIC_RELEASE);
        if (r == 0 && (r = ticker_start(&ticker, srv, o->tick_interval)) < 0)
                vmsnap_diag(&d, r, "cannot start the tick thread: %s", strerror(-r));
        if (r < 0) {
                log_error("%s", d.msg[0] ? d.msg : strerror(-r));
                api_cluster_stop(cluster);
                api_server_stop(srv);
                close_host(srv);
                return 1;
        }
        if (o->demo && api_demo_start(srv, socket_path, &demo) == 0)
                demo_started = true;
        api_notify("READY=1");
        int sig = wait_signal(signals);
        log_info("%s: stopping (no new connections; requests in flight finish)", strsignal(sig));
        api_notify("STOPPING=1");
        api_server_quiesce(srv);
        drain(srv, signals);
        api_server_stop(srv);
        ticker_stop(&ticker);
        api_cluster_stop(cluster);
        if (demo_started)
                pthread_join(demo, NULL);
        close_host(srv);
        log_info("stopped; sandboxes keep running");
        return 0;
}

int main(int argc, char **argv)
{
        vmsnap_log_set_ident("vmsnapd");
        struct options o;
        int r = parse_options(argc, argv, &o);
        if (r)
                return r == 1 ? 0 : r;
        if (o.print_routes) {
                print_routes();
                return 0;
        }
        api_notify_init(); /* before any thread exists: it edits the environment */
        /* The first log call reads $VMSNAP_LOG; made here, before any thread exists. */
        log_debug("root %s, vmm %s, tick every %us", o.root, o.vmm ? o.vmm : "(default)",
                  o.tick_interval);
        /* Signals are taken synchronously by the main thread; every thread started later
         * inherits the mask. */
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &signals, NULL);
        signal(SIGPIPE, SIG_IGN);

        struct api_server *srv = calloc(1, sizeof(*srv));
        if (!srv) {
                log_error("out of memory");
                return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &srv->started);
        srv->gate_limits = o.gate;
        srv->cluster_mode = o.cluster.source != NULL;
        pthread_mutex_init(&srv->pull_lock, NULL);
        api_metrics_init(&srv->metrics);
        r = run(srv, &o, &signals);
        free(srv);
        return r;
}
