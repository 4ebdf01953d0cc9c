/* `vmsnap mem-serve`: a snapshot's guest RAM as a read-only FUSE file for a VMM that maps a
 * file (QEMU), its own process, one per lazily spawned template on a host (vmsnapd starts
 * it). docs/remote.md "Lazy restore for QEMU". */
#include "cli/cli.h"
#include "util/log.h"

#include <vmsnap/chunk-cache.h>
#include <vmsnap/memfs.h>
#include <vmsnap/remote.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char mem_serve_usage[] =
        "usage: vmsnap mem-serve SNAPDIR --mount MNT [--remote-lazy [--chunk-cache DIR]] [--json]\n\n"
        "Mount a FUSE file system on MNT holding `memory`, the guest RAM of the snapshot in\n"
        "SNAPDIR (read-only; opens for writing are accepted, every write is refused), and\n"
        "`status`, its counters as JSON. Every byte read is checked against the snapshot's\n"
        "block hashes; a read that cannot be served correctly fails with EIO (a VMM mapping\n"
        "the file dies with SIGBUS), never with wrong bytes. Mounted allow_other.\n\n"
        "options:\n"
        "  --mount MNT        the directory to mount on (required)\n"
        "  --remote-lazy      SNAPDIR was made by `snapshot pull --to-dir`: fetch its memory\n"
        "                     chunks from the remote (VMSNAP_S3_* environment) when first\n"
        "                     read, each checked against the manifest's SHA-256\n"
        "  --chunk-cache DIR  with --remote-lazy: the chunk cache (VMSNAP_CHUNK_CACHE_SIZE)\n"
        "  --json             print the status as one JSON line on stdout at exit\n"
        "  -h, --help         this help\n\n"
        "Runs until MNT is unmounted or SIGTERM/SIGINT/SIGHUP (then unmounts).\n"
        "exit codes: 0 served until the end, 1 failure (cannot mount, bad snapshot, or a read\n"
        "failed: the first failure is on stderr and in the status), 2 usage error\n";

struct mem_serve_args {
        const char *snapdir, *mnt, *chunk_cache;
        bool json, remote_lazy;
};

static int usage_error(const char *msg, const char *arg)
{
        fprintf(stderr, "vmsnap mem-serve: %s%s (see --help)\n", msg, arg ? arg : "");
        return CLI_USAGE;
}

static int parse_args(int argc, char **argv, struct mem_serve_args *a)
{
        static const struct option longopts[] = {
                {"mount", required_argument, NULL, 'm'},
                {"remote-lazy", no_argument, NULL, 'L'},
                {"chunk-cache", required_argument, NULL, 'C'},
                {"json", no_argument, NULL, 'j'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                if (c == 'm')
                        a->mnt = optarg;
                else if (c == 'L')
                        a->remote_lazy = true;
                else if (c == 'C')
                        a->chunk_cache = optarg;
                else if (c == 'j')
                        a->json = true;
                else
                        return usage_error("unknown option", NULL);
        }
        if (optind + 1 != argc)
                return usage_error("give exactly one SNAPDIR", NULL);
        a->snapdir = argv[optind];
        if (!a->mnt)
                return usage_error("--mount is required", NULL);
        if (a->chunk_cache && !a->remote_lazy)
                return usage_error("--chunk-cache needs --remote-lazy", NULL);
        return CLI_OK;
}

static void on_error(void *ctx, const char *msg)
{
        (void)ctx;
        log_error("read of the memory failed (EIO): %s", msg);
}

/* The remote (VMSNAP_S3_* environment) and chunk cache of --remote-lazy. */
static int lazy_setup(const struct mem_serve_args *a, struct vmsnap_remote_config *rc,
                      struct vmsnap_memfs_opts *o, struct vmsnap_diag *d)
{
        if (!getenv("VMSNAP_S3_ENDPOINT"))
                return vmsnap_diag(d, -EINVAL, "--remote-lazy: VMSNAP_S3_ENDPOINT is not set");
        int r = vmsnap_remote_config_load("/nonexistent", NULL, rc, d);
        if (r < 0)
                return r;
        o->remote_lazy = rc;
        if (a->chunk_cache) {
                o->chunk_cache = a->chunk_cache;
                if (vmsnap_chunk_cache_size_from_env(&o->chunk_cache_size) < 0)
                        return vmsnap_diag(d, -EINVAL, "VMSNAP_CHUNK_CACHE_SIZE: not a size");
        }
        return 0;
}

/* Logs (or prints with --json) the status at exit; returns 1 when a read failed. */
static int report(struct vmsnap_memfs *m, bool json)
{
        struct vmsnap_memfs_stats st;
        char err[1024];
        vmsnap_memfs_stats(m, &st, err);
        char *line = NULL;
        if (json && vmsnap_memfs_stats_json(m, &line) == 0) {
                fputs(line, stdout);
                free(line);
        } else {
                log_info("served %llu reads, %.1f MiB; %llu chunks fetched, %llu from the cache; "
                         "%llu writes refused", (unsigned long long)st.reads,
                         (double)st.bytes / (1 << 20), (unsigned long long)st.chunks_fetched,
                         (unsigned long long)st.chunks_cached,
                         (unsigned long long)st.writes_refused);
        }
        return st.errors ? 1 : 0;
}

int cmd_mem_serve(int argc, char **argv)
{
        vmsnap_log_set_ident("vmsnap mem-serve");
        if (cli_wants_help(argc, argv)) {
                fputs(mem_serve_usage, stdout);
                return CLI_OK;
        }
        struct mem_serve_args a = {0};
        int r = parse_args(argc, argv, &a);
        if (r != CLI_OK)
                return r;
        struct vmsnap_diag d = {0};
        struct vmsnap_remote_config rc = {0};
        struct vmsnap_memfs_opts o = {.on_error = on_error};
        struct vmsnap_memfs *m = NULL;
        r = a.remote_lazy ? lazy_setup(&a, &rc, &o, &d) : 0;
        if (r == 0)
                r = vmsnap_memfs_new(a.snapdir, a.mnt, &o, &m, &d);
        vmsnap_remote_config_clear(&rc); /* the lazy client holds its own copy */
        if (r == 0) {
                log_info("serving %s/%s", a.mnt, VMSNAP_MEMFS_FILE);
                r = vmsnap_memfs_run(m, &d);
        }
        if (r < 0)
                log_error("%s", d.msg);
        int failed = m ? report(m, a.json) : 0;
        vmsnap_memfs_free(m);
        return r < 0 || failed ? CLI_FAIL : CLI_OK;
}
