/* `vmsnap snapshot …`: the snapshot store from the command line. This file parses the
 * options and dispatches to the verbs (snapshot-show.c: ls, inspect, verify;
 * snapshot-change.c: add, rm; snapshot-transfer.c: export, import; snapshot-gc.c: gc,
 * reindex). Tables for people, --json for programs, a progress bar on a terminal only;
 * exit codes 0 / 1 / 2. */
#include "cli/snapshot.h"
#include "util/cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char main_usage[] =
    "usage: vmsnap snapshot VERB [OPTIONS] ARGS...\n\n"
    "The snapshot store: an index of snapshots and templates under a root directory.\n\n"
    "verbs:\n"
    "  ls                      list snapshots\n"
    "  inspect REF...          show one snapshot: record, files, dependents\n"
    "  add MEMFILE --name N    make a snapshot from a memory file\n"
    "  rm REF...               delete snapshots\n"
    "  export REF              write a snapshot as a tar stream or a directory\n"
    "  import [FILE|-|DIR]     read a snapshot from an export\n"
    "  gc                      remove leftovers; evict templates under a budget\n"
    "  reindex                 rebuild the index from the snapshot directories\n"
    "  verify REF...           check every file's checksum and the memory snapshot\n"
    "  push REF                upload a snapshot to S3 object storage (docs/remote.md)\n"
    "  pull REF                download a snapshot from S3 object storage\n"
    "ls, rm and gc take --remote[=NAME] to act on the object storage instead.\n\n"
    "A REF is an id, a name, or a unique id prefix of at least 3 characters.\n"
    "Every verb takes --root DIR (default: $VMSNAP_ROOT, else " VMSNAP_STORE_DEFAULT_ROOT
    ")\nand -h/--help. Run `vmsnap snapshot VERB --help` for a verb's options.\n\n"
    "exit codes: 0 ok, 1 failure (message on stderr), 2 usage error\n";

/* ---- small parsers ------------------------------------------------------------------------ */

static int parse_size(const char *s, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || s[0] == '-')
                return -EINVAL;
        unsigned shift = 0;
        switch (toupper((unsigned char)*end)) {
        case 'K':
                shift = 10;
                break;
        case 'M':
                shift = 20;
                break;
        case 'G':
                shift = 30;
                break;
        case 'T':
                shift = 40;
                break;
        case '\0':
                break;
        default:
                return -EINVAL;
        }
        if (*end && end[1] && !(toupper((unsigned char)end[1]) == 'B' && !end[2]) &&
            !(toupper((unsigned char)end[1]) == 'I' && toupper((unsigned char)end[2]) == 'B' &&
              !end[3]))
                return -EINVAL;
        if (shift && v > (UINT64_MAX >> shift))
                return -EINVAL;
        *ret = (uint64_t)v << shift;
        return 0;
}

/* "90", "90s", "15m", "1h", "7d". Returns 0 or -EINVAL. */
static int parse_duration(const char *s, int64_t *ret)
{
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || v < 0)
                return -EINVAL;
        long long mult = 1;
        if (*end == 'm')
                mult = 60;
        else if (*end == 'h')
                mult = 3600;
        else if (*end == 'd')
                mult = 86400;
        else if (*end && *end != 's')
                return -EINVAL;
        if (*end && end[1])
                return -EINVAL;
        *ret = (int64_t)(v * mult);
        return 0;
}

/* ---- option parsing ----------------------------------------------------------------------- */

static const struct option all_options[] = {
    {"root", required_argument, NULL, OPT_ROOT},
    {"json", no_argument, NULL, OPT_JSON},
    {"all", no_argument, NULL, OPT_ALL},
    {"kind", required_argument, NULL, OPT_KIND},
    {"no-trunc", no_argument, NULL, OPT_NO_TRUNC},
    {"name", required_argument, NULL, OPT_NAME},
    {"parent", required_argument, NULL, OPT_PARENT},
    {"snapfile", required_argument, NULL, OPT_SNAPFILE},
    {"description", required_argument, NULL, OPT_DESCRIPTION},
    {"label", required_argument, NULL, OPT_LABEL},
    {"vmm", required_argument, NULL, OPT_VMM},
    {"vmm-version", required_argument, NULL, OPT_VMM_VERSION},
    {"vcpus", required_argument, NULL, OPT_VCPUS},
    {"block-size", required_argument, NULL, OPT_BLOCK_SIZE},
    {"source", required_argument, NULL, OPT_SOURCE},
    {"force", no_argument, NULL, OPT_FORCE},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"to-dir", required_argument, NULL, OPT_TO_DIR},
    {"compression", required_argument, NULL, OPT_COMPRESSION},
    {"level", required_argument, NULL, OPT_LEVEL},
    {"max-size", required_argument, NULL, OPT_MAX_SIZE},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"grace", required_argument, NULL, OPT_GRACE},
    {"budget", required_argument, NULL, OPT_BUDGET},
    {"verify", no_argument, NULL, OPT_VERIFY},
    {"no-base", no_argument, NULL, OPT_NO_BASE},
    {"max-logical-size", required_argument, NULL, OPT_MAX_LOGICAL},
    {"remote", optional_argument, NULL, OPT_REMOTE},
    {"help", no_argument, NULL, 'h'},
    {0},
};

int snapshot_usage_error(const struct args *a, const char *fmt, ...)
{
        va_list ap;
        fprintf(stderr, "vmsnap snapshot %s: ", a->verb);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, " (see `vmsnap snapshot %s --help`)\n", a->verb);
        return CLI_USAGE;
}

static int set_value(struct args *a, int c, const char *v)
{
        uint64_t n;
        switch (c) {
        case OPT_KIND:
                a->kind_set = true;
                return vmsnap_snapshot_kind_parse(v, &a->kind) < 0
                           ? snapshot_usage_error(a, "--kind is pause or template, not '%s'", v)
                           : 0;
        case OPT_LABEL:
                if (a->n_labels == MAX_LABELS || !strchr(v, '='))
                        return snapshot_usage_error(a, "--label takes KEY=VALUE (at most 64), not '%s'", v);
                a->labels[a->n_labels++] = v;
                return 0;
        case OPT_VCPUS:
                if (parse_size(v, &n) < 0 || n == 0 || n > 4096)
                        return snapshot_usage_error(a, "--vcpus must be 1..4096, not '%s'", v);
                a->vcpus = (uint32_t)n;
                return 0;
        case OPT_BLOCK_SIZE:
                if (parse_size(v, &a->mem.block_size) < 0)
                        return snapshot_usage_error(a, "--block-size must be 4096 or 2M, not '%s'", v);
                return 0;
        case OPT_SOURCE:
                if (strcmp(v, "content") && strcmp(v, "sparse"))
                        return snapshot_usage_error(a, "--source is content or sparse, not '%s'", v);
                a->mem.source =
                    strcmp(v, "sparse") == 0 ? VMSNAP_MEM_SOURCE_SPARSE : VMSNAP_MEM_SOURCE_CONTENT;
                return 0;
        case OPT_COMPRESSION:
                return vmsnap_compression_parse(v, &a->exp.compression) < 0
                           ? snapshot_usage_error(a, "--compression is none, gzip or zstd, not '%s'", v)
                           : 0;
        case OPT_LEVEL:
                if (parse_size(v, &n) < 0 || n < 1 || n > 22)
                        return snapshot_usage_error(a, "--level must be 1..22, not '%s'", v);
                a->exp.level = (int)n;
                return 0;
        case OPT_MAX_SIZE:
        case OPT_MAX_LOGICAL:
        case OPT_BUDGET:
                if (parse_size(v, c == OPT_BUDGET        ? &a->budget
                                  : c == OPT_MAX_LOGICAL ? &a->max_logical
                                                         : &a->max_size) < 0)
                        return snapshot_usage_error(a, "expected a size like 512M or 20G, not '%s'", v);
                return 0;
        case OPT_GRACE:
                return parse_duration(v, &a->grace) < 0
                           ? snapshot_usage_error(a,
                                         "--grace takes a duration like 0, 90s, 15m, "
                                         "1h or 7d, not '%s'",
                                         v)
                           : 0;
        }
        return 0;
}

static int set_option(struct args *a, int c, const char *v)
{
        switch (c) {
        case OPT_ROOT:
                a->root = v;
                break;
        case OPT_JSON:
                a->json = true;
                break;
        case OPT_ALL:
                a->all = true;
                break;
        case OPT_NO_TRUNC:
                a->no_trunc = true;
                break;
        case OPT_NAME:
                a->name = v;
                break;
        case OPT_PARENT:
                a->parent = v;
                break;
        case OPT_SNAPFILE:
                a->snapfile = v;
                break;
        case OPT_DESCRIPTION:
                a->description = v;
                break;
        case OPT_VMM:
                a->vmm = v;
                break;
        case OPT_VMM_VERSION:
                a->vmm_version = v;
                break;
        case OPT_FORCE:
                a->force = true;
                break;
        case OPT_OUTPUT:
                a->output = v;
                break;
        case OPT_TO_DIR:
                a->to_dir = v;
                break;
        case OPT_DRY_RUN:
                a->dry_run = true;
                break;
        case OPT_VERIFY:
                a->verify = true;
                break;
        case OPT_NO_BASE:
                a->exp.no_base = true;
                break;
        case OPT_REMOTE:
                a->remote = true;
                a->remote_name = v;
                break;
        default:
                return set_value(a, c, v);
        }
        return 0;
}

/* True when option c is one this verb takes (allowed lists the option ids). */
static bool allowed(const int *ok, int c)
{
        if (c == OPT_ROOT || c == 'h')
                return true;
        for (; *ok; ok++)
                if (*ok == c)
                        return true;
        return false;
}

static int parse(int argc, char **argv, const int *ok, const char *usage, struct args *a)
{
        int c, idx;
        optind = 1;
        opterr = 1;
        while ((c = getopt_long(argc, argv, "ho:", all_options, &idx)) != -1) {
                if (c == 'o')
                        c = OPT_OUTPUT;
                if (c == '?')
                        return CLI_USAGE;
                if (c == 'h') {
                        fputs(usage, stdout);
                        return -1;
                }
                if (!allowed(ok, c))
                        return snapshot_usage_error(a, "option --%s does not apply here",
                                           all_options[idx].name);
                int r = set_option(a, c, optarg);
                if (r)
                        return r;
        }
        a->nargs = argc - optind;
        a->args = argv + optind;
        return 0;
}

int snapshot_fail(const struct args *a, const struct vmsnap_diag *d)
{
        fprintf(stderr, "vmsnap snapshot %s: %s\n", a->verb, d->msg[0] ? d->msg : "failed");
        return CLI_FAIL;
}

static int open_store(const struct args *a, struct vmsnap_store **ret)
{
        struct vmsnap_diag d = {0};
        const char *root = a->root ? a->root : vmsnap_store_default_root();
        if (vmsnap_store_open(root, ret, &d) < 0)
                return snapshot_fail(a, &d);
        return CLI_OK;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

struct verb {
        const char *name;
        int (*run)(struct vmsnap_store *s, struct args *a);
        const char *usage;
        int options[16];
};

static const struct verb verbs[] = {
    {"ls", snapshot_ls, snapshot_ls_usage, {OPT_JSON, OPT_ALL, OPT_KIND, OPT_NO_TRUNC, OPT_REMOTE}},
    {"inspect", snapshot_inspect, snapshot_inspect_usage, {OPT_JSON}},
    {"add",
     snapshot_add,
     snapshot_add_usage,
     {OPT_JSON, OPT_NAME, OPT_KIND, OPT_PARENT, OPT_SNAPFILE, OPT_DESCRIPTION, OPT_LABEL, OPT_VMM,
      OPT_VMM_VERSION, OPT_VCPUS, OPT_BLOCK_SIZE, OPT_SOURCE}},
    {"rm", snapshot_rm, snapshot_rm_usage, {OPT_JSON, OPT_FORCE, OPT_REMOTE}},
    {"export",
     snapshot_export,
     snapshot_export_usage,
     {OPT_JSON, OPT_OUTPUT, OPT_TO_DIR, OPT_COMPRESSION, OPT_LEVEL, OPT_NO_BASE}},
    {"import",
     snapshot_import,
     snapshot_import_usage,
     {OPT_JSON, OPT_NAME, OPT_DESCRIPTION, OPT_MAX_SIZE, OPT_MAX_LOGICAL}},
    {"gc", snapshot_gc, snapshot_gc_usage, {OPT_JSON, OPT_DRY_RUN, OPT_GRACE, OPT_BUDGET, OPT_REMOTE}},
    {"reindex", snapshot_reindex, snapshot_reindex_usage, {OPT_JSON, OPT_VERIFY}},
    {"verify", snapshot_verify, snapshot_verify_usage, {OPT_JSON}},
    {"push", snapshot_push, snapshot_push_usage, {OPT_JSON, OPT_REMOTE}},
    {"pull", snapshot_pull, snapshot_pull_usage, {OPT_JSON, OPT_REMOTE, OPT_NAME, OPT_TO_DIR}},
};

/* ls, rm and gc with --remote act on the object storage (snapshot-remote.c). */
static int (*remote_variant(const struct verb *v, const struct args *a))(struct vmsnap_store *,
                                                                         struct args *)
{
        if (!a->remote)
                return v->run;
        if (strcmp(v->name, "ls") == 0)
                return snapshot_remote_ls;
        if (strcmp(v->name, "rm") == 0)
                return snapshot_remote_rm;
        if (strcmp(v->name, "gc") == 0)
                return snapshot_remote_gc;
        return v->run;
}

/* `vmsnap snapshot --root DIR VERB ...` works too: takes the root given before the verb. */
static const char *leading_root(int *argc, char ***argv)
{
        const char *root = NULL;
        while (*argc >= 2 && strncmp((*argv)[1], "--root", 6) == 0) {
                int skip = (*argv)[1][6] == '=' ? 1 : (*argc >= 3 && !(*argv)[1][6]) ? 2 : 0;
                if (!skip)
                        break;
                root = skip == 1 ? (*argv)[1] + 7 : (*argv)[2];
                *argc -= skip;
                *argv += skip;
        }
        return root;
}

int cmd_snapshot(int argc, char **argv)
{
        const char *root = leading_root(&argc, &argv);
        if (argc < 2) {
                fputs(main_usage, stderr);
                return CLI_USAGE;
        }
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
            strcmp(argv[1], "help") == 0) {
                fputs(main_usage, stdout);
                return CLI_OK;
        }
        for (size_t i = 0; i < ARRAY_SIZE(verbs); i++) {
                if (strcmp(argv[1], verbs[i].name) != 0)
                        continue;
                struct args a = {.verb = verbs[i].name, .grace = -1, .root = root};
                char prog[48];
                snprintf(prog, sizeof(prog), "vmsnap snapshot %s", verbs[i].name);
                char *saved = argv[1];
                argv[1] = prog; /* what getopt names in its messages */
                int r = parse(argc - 1, argv + 1, verbs[i].options, verbs[i].usage, &a);
                argv[1] = saved;
                if (r)
                        return r < 0 ? CLI_OK : r;
                struct vmsnap_store *s;
                if ((r = open_store(&a, &s)) != CLI_OK)
                        return r;
                r = remote_variant(&verbs[i], &a)(s, &a);
                vmsnap_store_close(s);
                return r;
        }
        fprintf(stderr, "vmsnap snapshot: unknown verb '%s'\n\n%s", argv[1], main_usage);
        return CLI_USAGE;
}

