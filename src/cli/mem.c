/* `vmsnap mem …`: the memory-snapshot operations from the command line. */
#include "cli/cli.h"
#include "util/ids.h"

#include <vmsnap/mem.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char mem_usage[] =
        "usage: vmsnap mem VERB [OPTIONS] ARGS...\n\n"
        "Memory snapshots: a block-mapping header plus one diff file per generation.\n\n"
        "verbs:\n"
        "  process MEMFILE SNAPDIR          full memory file -> generation 0\n"
        "      --block-size N               4096 (default) or 2097152 for hugepage guests\n"
        "  diff MEMFILE SNAPDIR --parent DIR  next generation over the snapshot in DIR\n"
        "                                   (SNAPDIR may be DIR itself: updated in place)\n"
        "      --source content|sparse      content (default): full memory file, changed\n"
        "                                   blocks found by hash (QEMU, Firecracker Full);\n"
        "                                   sparse: Firecracker Diff file, holes = unchanged\n"
        "      --merge-cap N                merge when the generation reaches N (default 8)\n"
        "  merge SNAPDIR                    collapse the chain into one diff file\n"
        "  materialize SNAPDIR OUTFILE      write the complete (sparse) memory file\n"
        "  verify SNAPDIR                   check structure, sizes and every block's hash\n"
        "  inspect SNAPDIR                  summary: size, generation, builds, extents\n\n"
        "options for every verb:\n"
        "  --json                           machine-readable output on stdout\n"
        "  -h, --help                       this help\n\n"
        "exit codes: 0 ok, 1 failure (message on stderr), 2 usage error\n";

struct mem_args {
        bool json, help;
        const char *parent;
        struct vmsnap_mem_opts opts;
        int nargs;
        char **args;
};

static double now_seconds(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A positive decimal (or 0x hex) number; anything else is a usage error. */
static int parse_number(const char *s, const char *opt, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 0);
        if (errno || end == s || *end || v == 0 || s[0] == '-') {
                fprintf(stderr, "vmsnap mem: %s takes a positive number, not '%s'\n", opt, s);
                return -1;
        }
        *ret = v;
        return 0;
}

static int parse_args(int argc, char **argv, struct mem_args *a)
{
        static const struct option longopts[] = {
                {"json", no_argument, NULL, 'j'},
                {"parent", required_argument, NULL, 'p'},
                {"source", required_argument, NULL, 's'},
                {"block-size", required_argument, NULL, 'b'},
                {"merge-cap", required_argument, NULL, 'm'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (c) {
                case 'j':
                        a->json = true;
                        break;
                case 'p':
                        a->parent = optarg;
                        break;
                case 's':
                        if (strcmp(optarg, "content") == 0)
                                a->opts.source = VMSNAP_MEM_SOURCE_CONTENT;
                        else if (strcmp(optarg, "sparse") == 0)
                                a->opts.source = VMSNAP_MEM_SOURCE_SPARSE;
                        else {
                                fprintf(stderr, "vmsnap mem: --source is content or sparse, "
                                                "not '%s'\n", optarg);
                                return CLI_USAGE;
                        }
                        break;
                case 'b':
                        if (parse_number(optarg, "--block-size", &a->opts.block_size) < 0)
                                return CLI_USAGE;
                        break;
                case 'm': {
                        uint64_t cap;
                        if (parse_number(optarg, "--merge-cap", &cap) < 0 || cap > 1000000) {
                                fprintf(stderr, "vmsnap mem: --merge-cap takes 1 to 1000000\n");
                                return CLI_USAGE;
                        }
                        a->opts.merge_cap = (unsigned)cap;
                        break;
                }
                case 'h':
                        a->help = true;
                        break;
                default:
                        fputs(mem_usage, stderr);
                        return CLI_USAGE;
                }
        }
        a->nargs = argc - optind;
        a->args = argv + optind;
        return CLI_OK;
}

static int need_args(const struct mem_args *a, int n, const char *verb)
{
        if (a->nargs == n)
                return CLI_OK;
        fprintf(stderr, "vmsnap mem %s: expected %d argument%s, got %d (see --help)\n", verb, n,
                n == 1 ? "" : "s", a->nargs);
        return CLI_USAGE;
}

static int fail(const char *verb, const struct vmsnap_diag *d)
{
        fprintf(stderr, "vmsnap mem %s: %s\n", verb, d->msg[0] ? d->msg : "failed");
        return CLI_FAIL;
}

static void print_result(const char *verb, const struct mem_args *a,
                         const struct vmsnap_mem_result *r, double secs)
{
        char id[37];
        vmsnap_uuid_format(&r->build_id, id);
        double mbs = secs > 0 ? (double)r->bytes_scanned / 1e6 / secs : 0;
        if (!a->json) {
                printf("%s: generation %llu, build %s%s\n", verb,
                       (unsigned long long)r->generation, id, r->merged ? " (merged)" : "");
                printf("  stored %llu blocks (%llu bytes), zero %llu, unchanged %llu; "
                       "%.3f s, %.0f MB/s scanned\n",
                       (unsigned long long)r->data_blocks, (unsigned long long)r->bytes_written,
                       (unsigned long long)r->zero_blocks, (unsigned long long)r->same_blocks,
                       secs, mbs);
                return;
        }
        json_t *o = json_pack("{s:s, s:I, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:f}", "op", verb,
                              "generation", (json_int_t)r->generation, "build_id", id, "merged",
                              r->merged, "bytes_scanned", (json_int_t)r->bytes_scanned,
                              "bytes_written", (json_int_t)r->bytes_written, "data_blocks",
                              (json_int_t)r->data_blocks, "zero_blocks",
                              (json_int_t)r->zero_blocks, "same_blocks",
                              (json_int_t)r->same_blocks, "seconds", secs);
        json_dumpf(o, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(o);
}

static int run_op(const char *verb, struct mem_args *a)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res = {0};
        double t0 = now_seconds();
        int r;
        if (strcmp(verb, "process") == 0)
                r = vmsnap_mem_process(a->args[0], a->args[1], &a->opts, &res, &d);
        else if (strcmp(verb, "diff") == 0)
                r = vmsnap_mem_diff(a->args[0], a->args[1], a->parent, &a->opts, &res, &d);
        else if (strcmp(verb, "merge") == 0)
                r = vmsnap_mem_merge(a->args[0], &res, &d);
        else
                r = vmsnap_mem_materialize(a->args[0], a->args[1], &res, &d);
        if (r < 0)
                return fail(verb, &d);
        if (strcmp(verb, "merge") == 0 || strcmp(verb, "materialize") == 0)
                res.bytes_scanned = res.bytes_written;
        print_result(verb, a, &res, now_seconds() - t0);
        return CLI_OK;
}

static void print_problem(void *ctx, const char *problem)
{
        json_t *list = ctx;
        if (list)
                json_array_append_new(list, json_string(problem));
        else
                fprintf(stderr, "problem: %s\n", problem);
}

static int run_verify(struct mem_args *a)
{
        struct vmsnap_diag d = {0};
        json_t *list = a->json ? json_array() : NULL;
        int r = vmsnap_mem_verify(a->args[0], print_problem, list, &d);
        if (a->json) {
                json_t *o = json_pack("{s:s, s:b, s:o}", "snapshot", a->args[0], "ok", r == 0,
                                      "problems", list);
                json_dumpf(o, stdout, JSON_COMPACT);
                putchar('\n');
                json_decref(o);
        } else if (r == 0) {
                printf("%s: ok\n", a->args[0]);
        }
        if (r < 0 && r != -EBADMSG && !a->json)
                return fail("verify", &d);
        return r == 0 ? CLI_OK : CLI_FAIL;
}

int cmd_mem(int argc, char **argv)
{
        if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
                fputs(mem_usage, argc < 2 ? stderr : stdout);
                return argc < 2 ? CLI_USAGE : CLI_OK;
        }
        const char *verb = argv[1];
        struct mem_args a = {0};
        int r = parse_args(argc - 1, argv + 1, &a);
        if (r != CLI_OK)
                return r;
        if (a.help) {
                fputs(mem_usage, stdout);
                return CLI_OK;
        }
        if (strcmp(verb, "process") == 0 || strcmp(verb, "materialize") == 0)
                return need_args(&a, 2, verb) != CLI_OK ? CLI_USAGE : run_op(verb, &a);
        if (strcmp(verb, "diff") == 0) {
                if (!a.parent) {
                        fprintf(stderr, "vmsnap mem diff: --parent DIR is required\n");
                        return CLI_USAGE;
                }
                return need_args(&a, 2, verb) != CLI_OK ? CLI_USAGE : run_op(verb, &a);
        }
        if (strcmp(verb, "merge") == 0)
                return need_args(&a, 1, verb) != CLI_OK ? CLI_USAGE : run_op(verb, &a);
        if (strcmp(verb, "verify") == 0)
                return need_args(&a, 1, verb) != CLI_OK ? CLI_USAGE : run_verify(&a);
        if (strcmp(verb, "inspect") == 0)
                return need_args(&a, 1, verb) != CLI_OK ? CLI_USAGE : cmd_mem_inspect(a.args[0], a.json);
        fprintf(stderr, "vmsnap mem: unknown verb '%s'\n\n%s", verb, mem_usage);
        return CLI_USAGE;
}
