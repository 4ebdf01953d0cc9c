/* `vmsnap uffd-serve`: the lazy-restore page server as its own process, one per sandbox.
 * The daemon starts it with setsid before loading the snapshot into the VMM, so that a
 * daemon restart never stalls a running guest. */
#include "cli/cli.h"
#include "cli/uffd-jail.h"
#include "util/log.h"

#include <vmsnap/chunk-cache.h>
#include <vmsnap/remote.h>
#include <vmsnap/uffd.h>

#include <jansson.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char uffd_usage[] =
        "usage: vmsnap uffd-serve SNAPDIR --socket PATH [OPTIONS]\n\n"
        "Serve the guest memory of the snapshot in SNAPDIR to a VMM restoring it with a\n"
        "userfaultfd (Firecracker's Uffd memory backend protocol): listen on PATH, take the\n"
        "VMM's regions and userfaultfd, install each page the first time the guest touches\n"
        "it. Every data block is checked against the snapshot's block hashes; when a page\n"
        "cannot be served correctly the VMM is killed, never fed wrong memory.\n\n"
        "options:\n"
        "  --socket PATH          Unix socket to listen on (required; a stale socket is\n"
        "                         replaced). Later connections may send control requests:\n"
        "                         {\"request\":\"stats\"|\"save-ws\"|\"stop\"} (docs/uffd.md)\n"
        "  --fault-around BYTES   install this aligned chunk around each fault (power of\n"
        "                         two, 4096 = off; default 65536; suffixes K, M)\n"
        "  --ws-record            record the working set; written as memfile.ws at exit\n"
        "  --ws-dir DIR           write memfile.ws there instead of SNAPDIR\n"
        "  --no-ws-replay         ignore SNAPDIR/memfile.ws (replayed by default)\n"
        "  --prefetch             after the working set, install every other data block in\n"
        "                         the background\n"
        "  --workers N            installer threads (default 2)\n"
        "  --accept-timeout MS    give up when no VMM connects in time (default 10000;\n"
        "                         -1 waits forever)\n"
        "  --remote-lazy          SNAPDIR was made by `snapshot pull --lazy`: fetch its memory\n"
        "                         chunks from the remote (VMSNAP_S3_* environment) on fault,\n"
        "                         each checked against the manifest's SHA-256 (not jailed)\n"
        "  --chunk-cache DIR      with --remote-lazy: the chunk cache (VMSNAP_CHUNK_CACHE_SIZE)\n"
        "  --json                 print the stats as one JSON line on stdout at exit\n"
        "  -h, --help             this help\n\n";

static const char uffd_usage_end[] =
        "\nRuns until the VMM exits, SIGTERM/SIGINT, or a \"stop\" request.\n"
        "exit codes: 0 served until the end, 1 failure (VMM killed, timeout, bad snapshot),\n"
        "2 usage error\n";

struct serve_args {
        const char *snapdir, *socket, *ws_dir, *chunk_cache;
        bool json, remote_lazy;
        struct vmsnap_uffd_opts opts;
        struct uffd_jail_args jail;
};

static void print_usage(FILE *f)
{
        fputs(uffd_usage, f);
        fputs(uffd_jail_usage, f);
        fputs(uffd_usage_end, f);
}

static struct vmsnap_uffd_server *volatile g_server;

static void on_signal(int sig)
{
        (void)sig;
        vmsnap_uffd_server_stop(g_server); /* one write(2) to an eventfd */
}

static void on_note(void *ctx, enum vmsnap_uffd_note level, const char *msg)
{
        (void)ctx;
        if (level == VMSNAP_UFFD_NOTE_ERROR)
                log_error("%s", msg);
        else if (level == VMSNAP_UFFD_NOTE_WARN)
                log_warn("%s", msg);
        else
                log_info("%s", msg);
}

/* Parses a byte count with an optional K/M/G suffix; -1 when malformed. */
static long long parse_bytes(const char *s)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 0);
        if (errno || end == s || s[0] == '-')
                return -1;
        unsigned shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
                                                       : *end == 'G' || *end == 'g' ? 30 : 0;
        if (shift)
                end++;
        if (*end || v > (1ull << 40))
                return -1;
        return (long long)(v << shift);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "vmsnap uffd-serve: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see --help)\n");
        va_end(ap);
        return CLI_USAGE;
}

static int parse_int_opt(int c, const char *arg, struct serve_args *a)
{
        char *end;
        errno = 0;
        long v = strtol(arg, &end, 10);
        if (errno || end == arg || *end)
                return usage_error("'%s' is not a number", arg);
        if (c == 'w') {
                if (v < 1 || v > (long)VMSNAP_UFFD_MAX_WORKERS)
                        return usage_error("--workers %s is out of range (1-64)", arg);
                a->opts.workers = (unsigned)v;
        } else if (v < 0)
                a->opts.accept_timeout_ms = -1;
        else if (v == 0 || v > 86400000L)
                return usage_error("--accept-timeout %s: give 1 to 86400000 ms, or -1", arg);
        else
                a->opts.accept_timeout_ms = (int)v;
        return CLI_OK;
}

static int parse_args(int argc, char **argv, struct serve_args *a)
{
        static const struct option longopts[] = {
                {"socket", required_argument, NULL, 's'},
                {"fault-around", required_argument, NULL, 'f'},
                {"ws-record", no_argument, NULL, 'r'},
                {"ws-dir", required_argument, NULL, 'D'},
                {"no-ws-replay", no_argument, NULL, 'n'},
                {"prefetch", no_argument, NULL, 'p'},
                {"workers", required_argument, NULL, 'w'},
                {"accept-timeout", required_argument, NULL, 't'},
                {"json", no_argument, NULL, 'j'},
                {"remote-lazy", no_argument, NULL, 'L'},
                {"chunk-cache", required_argument, NULL, 'C'},
                {"help", no_argument, NULL, 'h'},
                {"jail-uid", required_argument, NULL, UFFD_OPT_JAIL_UID},
                {"jail-root", required_argument, NULL, UFFD_OPT_JAIL_ROOT},
                {"jail-cgroup", required_argument, NULL, UFFD_OPT_JAIL_CGROUP},
                {"jail-uids", required_argument, NULL, UFFD_OPT_JAIL_UIDS},
                {"jail-gid", required_argument, NULL, UFFD_OPT_JAIL_GID},
                {"jail-cgroup-version", required_argument, NULL, UFFD_OPT_JAIL_CGROUP_VERSION},
                {"jail-cgroup-root", required_argument, NULL, UFFD_OPT_JAIL_CGROUP_ROOT},
                {"jail-cgroup-parent", required_argument, NULL, UFFD_OPT_JAIL_CGROUP_PARENT},
                {"jail-memory", required_argument, NULL, UFFD_OPT_JAIL_MEMORY},
                {"jail-pids", required_argument, NULL, UFFD_OPT_JAIL_PIDS},
                {0},
        };
        int c, r;
        long long v;
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (c) {
                case 's':
                        a->socket = optarg;
                        break;
                case 'f':
                        v = parse_bytes(optarg);
                        if (v < 4096 || v > VMSNAP_UFFD_MAX_FAULT_AROUND || (v & (v - 1)))
                                return usage_error("--fault-around '%s': give a power of two "
                                                   "from 4096 to 64M", optarg);
                        a->opts.fault_around = (uint64_t)v;
                        break;
                case 'r':
                        a->opts.ws_record = true;
                        break;
                case 'D':
                        a->ws_dir = optarg;
                        break;
                case 'n':
                        a->opts.no_ws_replay = true;
                        break;
                case 'p':
                        a->opts.prefetch = true;
                        break;
                case 'w':
                case 't':
                        if ((r = parse_int_opt(c, optarg, a)) != CLI_OK)
                                return r;
                        break;
                case 'j':
                        a->json = true;
                        break;
                case 'L':
                        a->remote_lazy = true;
                        break;
                case 'C':
                        a->chunk_cache = optarg;
                        break;
                case UFFD_OPT_JAIL_UID:
                case UFFD_OPT_JAIL_ROOT:
                case UFFD_OPT_JAIL_CGROUP:
                case UFFD_OPT_JAIL_UIDS:
                case UFFD_OPT_JAIL_GID:
                case UFFD_OPT_JAIL_CGROUP_VERSION:
                case UFFD_OPT_JAIL_CGROUP_ROOT:
                case UFFD_OPT_JAIL_CGROUP_PARENT:
                case UFFD_OPT_JAIL_MEMORY:
                case UFFD_OPT_JAIL_PIDS:
                        if ((r = uffd_jail_option(c, optarg, &a->jail)) != CLI_OK)
                                return r;
                        break;
                default:
                        print_usage(stderr);
                        return CLI_USAGE;
                }
        }
        if (argc - optind != 1)
                return usage_error("expected one SNAPDIR");
        a->snapdir = argv[optind];
        if (!a->socket)
                return usage_error("--socket PATH is required");
        if (a->ws_dir && !a->opts.ws_record)
                return usage_error("--ws-dir needs --ws-record");
        if (a->chunk_cache && !a->remote_lazy)
                return usage_error("--chunk-cache needs --remote-lazy");
        if (a->remote_lazy && a->jail.on) /* the jail's seccomp filter allows no sockets */
                return usage_error("--remote-lazy cannot be jailed yet");
        return uffd_jail_check(&a->jail, a->opts.ws_record, a->ws_dir);
}

static void print_stats(const struct vmsnap_uffd_server *s, bool json)
{
        struct vmsnap_uffd_stats st;
        vmsnap_uffd_server_stats(s, &st);
        char *line = NULL;
        if (json && vmsnap_uffd_stats_json(&st, &line) == 0) {
                printf("%s\n", line);
                free(line);
                return;
        }
        log_info("served %llu faults (%llu pages, p50 %.1f us, p99 %.1f us), %llu pages "
                 "ahead of faults (%llu from the working set), %llu zero pages, %.1f MiB",
                 (unsigned long long)st.faults, (unsigned long long)st.fault_pages,
                 (double)st.fault_p50_ns / 1e3, (double)st.fault_p99_ns / 1e3,
                 (unsigned long long)st.prefetched_pages, (unsigned long long)st.ws_pages,
                 (unsigned long long)st.zero_pages, (double)st.bytes / (1 << 20));
        if (st.remote_chunks_fetched || st.remote_chunks_cached)
                log_info("lazy restore: %llu chunks fetched from the remote, %llu from the "
                         "chunk cache", (unsigned long long)st.remote_chunks_fetched,
                         (unsigned long long)st.remote_chunks_cached);
}

/* SIGTERM/SIGINT stop the server; SIGPIPE is ignored (control clients may vanish). */
static void install_signals(void)
{
        struct sigaction sa = {.sa_handler = on_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
}

static void restore_signals(void)
{
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
}

/* Serves until the end, then reports and saves the working set. Returns an exit code. */
static int serve(struct vmsnap_uffd_server *s, const struct serve_args *a)
{
        struct vmsnap_diag d = {0};
        g_server = s;
        install_signals();
        int r = vmsnap_uffd_server_run(s, &d);
        restore_signals();
        g_server = NULL;
        if (r < 0)
                log_error("%s", d.msg[0] ? d.msg : strerror(-r));
        struct vmsnap_uffd_stats st;
        vmsnap_uffd_server_stats(s, &st);
        if (st.connected)
                print_stats(s, a->json);
        if (a->opts.ws_record && st.connected && r == 0) {
                struct vmsnap_diag wd = {0};
                if (vmsnap_uffd_server_save_ws(s, a->ws_dir, &wd) < 0) {
                        log_error("cannot save the working set: %s", wd.msg);
                        return CLI_FAIL;
                }
                log_info("working set saved in %s/%s", a->ws_dir ? a->ws_dir : a->snapdir,
                         VMSNAP_UFFD_WS_NAME);
        }
        return r < 0 ? CLI_FAIL : CLI_OK;
}

/* Confines this process once its inputs are open and before a VMM's byte is read. */
static int jail_self(const struct serve_args *a)
{
        struct vmsnap_diag d = {0};
        json_object_seed(0); /* now: inside the jail there is no /dev/urandom to seed from */
        int r = uffd_jail_enter(&a->jail, a->socket, a->ws_dir, a->opts.workers, &d);
        if (r < 0)
                log_error("cannot jail the page server: %s", d.msg);
        return r;
}

/* The remote (VMSNAP_S3_* environment) and chunk cache of --remote-lazy. */
static int lazy_setup(struct serve_args *a, struct vmsnap_remote_config *rc, struct vmsnap_diag *d)
{
        if (!getenv("VMSNAP_S3_ENDPOINT"))
                return vmsnap_diag(d, -EINVAL, "--remote-lazy: VMSNAP_S3_ENDPOINT is not set");
        int r = vmsnap_remote_config_load("/nonexistent", NULL, rc, d);
        if (r < 0)
                return r;
        a->opts.remote_lazy = rc;
        if (a->chunk_cache) {
                a->opts.chunk_cache = a->chunk_cache;
                if (vmsnap_chunk_cache_size_from_env(&a->opts.chunk_cache_size) < 0)
                        return vmsnap_diag(d, -EINVAL, "VMSNAP_CHUNK_CACHE_SIZE: not a size");
        }
        return 0;
}

int cmd_uffd_serve(int argc, char **argv)
{
        vmsnap_log_set_ident("vmsnap uffd-serve");
        if (cli_wants_help(argc, argv)) {
                print_usage(stdout);
                return CLI_OK;
        }
        struct serve_args a = {0};
        int r = parse_args(argc, argv, &a);
        if (r != CLI_OK)
                return r;
        a.opts.note = on_note;
        if (a.jail.on && uffd_jail_close_inherited() < 0) {
                log_error("cannot close the inherited fds: %s", strerror(errno));
                return CLI_FAIL;
        }
        struct vmsnap_diag d = {0};
        struct vmsnap_remote_config rc = {0};
        if (a.remote_lazy && lazy_setup(&a, &rc, &d) < 0) {
                log_error("%s", d.msg);
                vmsnap_remote_config_clear(&rc);
                return CLI_FAIL;
        }
        struct vmsnap_uffd_server *s;
        r = vmsnap_uffd_server_new(a.snapdir, a.socket, &a.opts, &s, &d);
        vmsnap_remote_config_clear(&rc); /* the server's client holds its own copy */
        if (r < 0) {
                log_error("%s", d.msg);
                return CLI_FAIL;
        }
        if (a.jail.on && jail_self(&a) < 0) {
                vmsnap_uffd_server_free(s);
                return CLI_FAIL;
        }
        log_info("listening on %s for the VMM's handshake%s", a.socket,
                 a.jail.on ? " (jailed)" : "");
        r = serve(s, &a);
        vmsnap_uffd_server_free(s);
        return r;
}
