/* `vmsnap snapshot …`: the snapshot store from the command line. Tables for people,
 * --json for programs, a progress bar on a terminal only; exit codes 0 / 1 / 2. */
#include "cli/cli.h"
#include "util/text.h"
#include "util/cleanup.h"

#include <vmsnap/store.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LABELS 64

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
    "  verify REF...           check every file's checksum and the memory snapshot\n\n"
    "A REF is an id, a name, or a unique id prefix of at least 3 characters.\n"
    "Every verb takes --root DIR (default: $VMSNAP_ROOT, else " VMSNAP_STORE_DEFAULT_ROOT
    ")\nand -h/--help. Run `vmsnap snapshot VERB --help` for a verb's options.\n\n"
    "exit codes: 0 ok, 1 failure (message on stderr), 2 usage error\n";

struct args {
        const char *verb;
        const char *root;
        bool json, all, no_trunc, force, dry_run, verify;
        const char *name, *parent, *snapfile, *description, *vmm, *vmm_version, *output, *to_dir;
        const char *labels[MAX_LABELS];
        int n_labels;
        bool kind_set;
        enum vmsnap_snapshot_kind kind;
        uint32_t vcpus;
        struct vmsnap_mem_opts mem;
        struct vmsnap_export_opts exp;
        uint64_t max_size, budget;
        int64_t grace;
        int nargs;
        char **args;
};

/* ---- small parsers ------------------------------------------------------------------------ */

/* "4096", "512K", "2M", "10G", "1T" (binary units). Returns 0 or -EINVAL. */
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

static void local_time(int64_t t, char out[20])
{
        time_t tt = (time_t)t;
        struct tm tm;
        if (!localtime_r(&tt, &tm) || strftime(out, 20, "%Y-%m-%d %H:%M", &tm) == 0)
                snprintf(out, 20, "-");
}

/* ---- option parsing ----------------------------------------------------------------------- */

enum {
        OPT_ROOT = 1000,
        OPT_JSON,
        OPT_ALL,
        OPT_KIND,
        OPT_NO_TRUNC,
        OPT_NAME,
        OPT_PARENT,
        OPT_SNAPFILE,
        OPT_DESCRIPTION,
        OPT_LABEL,
        OPT_VMM,
        OPT_VMM_VERSION,
        OPT_VCPUS,
        OPT_BLOCK_SIZE,
        OPT_SOURCE,
        OPT_FORCE,
        OPT_OUTPUT,
        OPT_TO_DIR,
        OPT_COMPRESSION,
        OPT_LEVEL,
        OPT_MAX_SIZE,
        OPT_DRY_RUN,
        OPT_GRACE,
        OPT_BUDGET,
        OPT_VERIFY,
};

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
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int usage_error(const struct args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const struct args *a, const char *fmt, ...)
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
                           ? usage_error(a, "--kind is pause or template, not '%s'", v)
                           : 0;
        case OPT_LABEL:
                if (a->n_labels == MAX_LABELS || !strchr(v, '='))
                        return usage_error(a, "--label takes KEY=VALUE (at most 64), not '%s'", v);
                a->labels[a->n_labels++] = v;
                return 0;
        case OPT_VCPUS:
                if (parse_size(v, &n) < 0 || n == 0 || n > 4096)
                        return usage_error(a, "--vcpus must be 1..4096, not '%s'", v);
                a->vcpus = (uint32_t)n;
                return 0;
        case OPT_BLOCK_SIZE:
                if (parse_size(v, &a->mem.block_size) < 0)
                        return usage_error(a, "--block-size must be 4096 or 2M, not '%s'", v);
                return 0;
        case OPT_SOURCE:
                if (strcmp(v, "content") && strcmp(v, "sparse"))
                        return usage_error(a, "--source is content or sparse, not '%s'", v);
                a->mem.source =
                    strcmp(v, "sparse") == 0 ? VMSNAP_MEM_SOURCE_SPARSE : VMSNAP_MEM_SOURCE_CONTENT;
                return 0;
        case OPT_COMPRESSION:
                return vmsnap_compression_parse(v, &a->exp.compression) < 0
                           ? usage_error(a, "--compression is none, gzip or zstd, not '%s'", v)
                           : 0;
        case OPT_LEVEL:
                if (parse_size(v, &n) < 0 || n < 1 || n > 22)
                        return usage_error(a, "--level must be 1..22, not '%s'", v);
                a->exp.level = (int)n;
                return 0;
        case OPT_MAX_SIZE:
        case OPT_BUDGET:
                if (parse_size(v, c == OPT_BUDGET ? &a->budget : &a->max_size) < 0)
                        return usage_error(a, "expected a size like 512M or 20G, not '%s'", v);
                return 0;
        case OPT_GRACE:
                return parse_duration(v, &a->grace) < 0
                           ? usage_error(a,
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
                        return usage_error(a, "option --%s does not apply here",
                                           all_options[idx].name);
                int r = set_option(a, c, optarg);
                if (r)
                        return r;
        }
        a->nargs = argc - optind;
        a->args = argv + optind;
        return 0;
}

static int fail(const struct args *a, const struct vmsnap_diag *d)
{
        fprintf(stderr, "vmsnap snapshot %s: %s\n", a->verb, d->msg[0] ? d->msg : "failed");
        return CLI_FAIL;
}

static int open_store(const struct args *a, struct vmsnap_store **ret)
{
        struct vmsnap_diag d = {0};
        const char *root = a->root ? a->root : vmsnap_store_default_root();
        if (vmsnap_store_open(root, ret, &d) < 0)
                return fail(a, &d);
        return CLI_OK;
}

/* ---- JSON and tables ---------------------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
        return s && s[0] ? json_string(s) : json_null();
}

static json_t *record_json(struct vmsnap_store *s, const struct vmsnap_snapshot *r)
{
        char created[21], accessed[21], dir[PATH_MAX];
        vmsnap_time_format(r->created, created);
        vmsnap_time_format(r->last_accessed, accessed);
        vmsnap_store_snapshot_dir(s, r->id, dir, sizeof(dir));
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(r->id));
        json_object_set_new(o, "name", str_or_null(r->name));
        json_object_set_new(o, "kind", json_string(vmsnap_snapshot_kind_name(r->kind)));
        json_object_set_new(o, "state", json_string(vmsnap_snapshot_state_name(r->state)));
        json_object_set_new(o, "parent", str_or_null(r->parent_id));
        json_object_set_new(o, "template", str_or_null(r->template_id));
        json_object_set_new(o, "generation", json_integer((json_int_t)r->generation));
        json_object_set_new(o, "vmm",
                            json_pack("{s:s, s:s}", "type", r->vmm, "version", r->vmm_version));
        json_object_set_new(o, "vcpus", json_integer(r->vcpus));
        json_object_set_new(o, "memory", json_integer((json_int_t)r->memory));
        json_object_set_new(o, "size_bytes", json_integer((json_int_t)r->size_bytes));
        json_object_set_new(o, "created", json_string(created));
        json_object_set_new(o, "last_accessed", json_string(accessed));
        json_object_set_new(o, "description", json_string(r->description));
        json_t *labels = json_loads(r->labels, 0, NULL);
        json_object_set_new(o, "labels", labels ? labels : json_object());
        json_object_set_new(o, "dir", json_string(dir));
        return o;
}

static void print_json(json_t *j)
{
        char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text) {
                puts(text);
                free(text);
        }
        json_decref(j);
}

static void short_id(const char *id, bool full, char out[37])
{
        snprintf(out, 37, "%.*s", full ? 36 : 12, id[0] ? id : "-");
}

static void print_table(const struct args *a, const struct vmsnap_snapshot *v, size_t n)
{
        int w = a->no_trunc ? 36 : 12;
        printf("%-*s  %-20s %-8s %s%4s %6s %7s %7s  %-16s  %s\n", w, "ID", "NAME", "KIND",
               a->all ? "STATE    " : "", "GEN", "VCPUS", "MEMORY", "SIZE", "CREATED", "PARENT");
        for (size_t i = 0; i < n; i++) {
                char id[37], parent[37], mem[16], size[16], created[20];
                short_id(v[i].id, a->no_trunc, id);
                short_id(v[i].parent_id, a->no_trunc, parent);
                vmsnap_format_bytes(v[i].memory, mem);
                vmsnap_format_bytes(v[i].size_bytes, size);
                local_time(v[i].created, created);
                printf("%-*s  %-20s %-8s ", w, id, v[i].name[0] ? v[i].name : "-",
                       vmsnap_snapshot_kind_name(v[i].kind));
                if (a->all)
                        printf("%-9s", vmsnap_snapshot_state_name(v[i].state));
                printf("%4llu %6u %7s %7s  %-16s  %s\n", (unsigned long long)v[i].generation,
                       v[i].vcpus, mem, size, created, parent);
        }
}

/* ---- progress bar (a terminal only) ------------------------------------------------------- */

struct bar {
        bool on;
        double start, last;
        const char *what;
};

static double now_seconds(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bar_draw(void *ctx, uint64_t done, uint64_t total)
{
        struct bar *b = ctx;
        double t = now_seconds();
        if (!b->on || (t - b->last < 0.1 && done < total))
                return;
        b->last = t;
        double el = t - b->start, rate = el > 0 ? (double)done / el : 0;
        int pct = total ? (int)(100.0 * (double)done / (double)total) : 0, fill = pct / 4;
        char d[16], tot[16], r[16];
        vmsnap_format_bytes(done, d);
        vmsnap_format_bytes(total, tot);
        vmsnap_format_bytes((uint64_t)rate, r);
        long eta = rate > 0 && total > done ? (long)((double)(total - done) / rate) : 0;
        fprintf(stderr, "\r%s [%.*s%*s] %3d%% %s/%s %s/s ETA %ld:%02ld ", b->what, fill,
                "=========================", 25 - fill, "", pct, d, tot, r, eta / 60, eta % 60);
}

static void bar_init(struct bar *b, const char *what, struct vmsnap_export_opts *e,
                     struct vmsnap_import_opts *i)
{
        b->on = isatty(STDERR_FILENO);
        b->start = now_seconds();
        b->last = 0;
        b->what = what;
        if (e) {
                e->progress = bar_draw;
                e->progress_ctx = b;
        }
        if (i) {
                i->progress = bar_draw;
                i->progress_ctx = b;
        }
}

static void bar_done(struct bar *b)
{
        if (b->on)
                fprintf(stderr, "\r\033[K");
}

/* ---- verbs -------------------------------------------------------------------------------- */

static const char ls_usage[] =
    "usage: vmsnap snapshot ls [--all] [--kind pause|template] [--no-trunc] [--json]\n\n"
    "Lists ready snapshots, oldest first.\n"
    "  --all          include snapshots being created or deleted (STATE column)\n"
    "  --kind K       only pause snapshots or only templates\n"
    "  --no-trunc     full ids\n"
    "  --json         a JSON array of records\n";

static int verb_ls(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return usage_error(a, "takes no arguments, got '%s'", a->args[0]);
        struct vmsnap_diag d = {0};
        _cleanup_free_ struct vmsnap_snapshot *v = NULL;
        size_t n;
        if (vmsnap_store_list(s, a->all ? VMSNAP_LIST_ALL : 0, &v, &n, &d) < 0)
                return fail(a, &d);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                if (!a->kind_set || v[i].kind == a->kind)
                        v[k++] = v[i];
        if (a->json) {
                json_t *arr = json_array();
                for (size_t i = 0; i < k; i++)
                        json_array_append_new(arr, record_json(s, &v[i]));
                print_json(arr);
        } else {
                print_table(a, v, k);
        }
        return CLI_OK;
}

static const char inspect_usage[] =
    "usage: vmsnap snapshot inspect REF... [--json]\n\n"
    "Shows each snapshot's record, its files (size, checksum) and what depends on it.\n"
    "  --json         one JSON object per REF, in an array\n";

static void print_files(const struct vmsnap_snapshot_file *f, size_t n, json_t *arr)
{
        for (size_t i = 0; i < n; i++) {
                char hex[33], size[16];
                static const char digits[] = "0123456789abcdef";
                for (int j = 0; j < 16; j++) {
                        hex[2 * j] = digits[f[i].checksum.b[j] >> 4];
                        hex[2 * j + 1] = digits[f[i].checksum.b[j] & 15];
                }
                hex[32] = '\0';
                if (arr) {
                        json_array_append_new(arr, json_pack("{s:s, s:I, s:s+}", "name", f[i].name,
                                                             "size", (json_int_t)f[i].size,
                                                             "checksum", "xxh3-128:", hex));
                        continue;
                }
                vmsnap_format_bytes(f[i].size, size);
                printf("  %-52s %8s  xxh3-128:%s\n", f[i].name, size, hex);
        }
}

static void print_record(const struct vmsnap_snapshot *r, const char *dir)
{
        char mem[16], size[16], created[21], accessed[21];
        vmsnap_format_bytes(r->memory, mem);
        vmsnap_format_bytes(r->size_bytes, size);
        vmsnap_time_format(r->created, created);
        vmsnap_time_format(r->last_accessed, accessed);
        printf("id:            %s\n", r->id);
        printf("name:          %s\n", r->name[0] ? r->name : "-");
        printf("kind:          %s\n", vmsnap_snapshot_kind_name(r->kind));
        printf("state:         %s\n", vmsnap_snapshot_state_name(r->state));
        printf("parent:        %s\n", r->parent_id[0] ? r->parent_id : "-");
        printf("template:      %s\n", r->template_id[0] ? r->template_id : "-");
        printf("generation:    %llu\n", (unsigned long long)r->generation);
        printf("vmm:           %s %s\n", r->vmm[0] ? r->vmm : "-", r->vmm_version);
        printf("vcpus:         %u\n", r->vcpus);
        printf("memory:        %s (%llu bytes)\n", mem, (unsigned long long)r->memory);
        printf("size on disk:  %s\n", size);
        printf("created:       %s\n", created);
        printf("last accessed: %s\n", accessed);
        printf("description:   %s\n", r->description[0] ? r->description : "-");
        printf("labels:        %s\n", r->labels);
        printf("directory:     %s\n", dir);
}

static int inspect_one(struct vmsnap_store *s, struct args *a, const char *ref, json_t *out)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        _cleanup_free_ struct vmsnap_snapshot_file *files = NULL;
        _cleanup_free_ struct vmsnap_dependent *deps = NULL;
        size_t n_files, n_deps;
        if (vmsnap_store_resolve(s, ref, &r, &d) < 0 ||
            vmsnap_store_files(s, r.id, &files, &n_files, &d) < 0 ||
            vmsnap_store_dependents(s, r.id, &deps, &n_deps, &d) < 0)
                return fail(a, &d);
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(s, r.id, dir, sizeof(dir));
        if (out) {
                json_t *o = record_json(s, &r), *fa = json_array(), *da = json_array();
                print_files(files, n_files, fa);
                for (size_t i = 0; i < n_deps; i++)
                        json_array_append_new(da,
                                              json_pack("{s:s, s:s, s:s}", "kind", deps[i].kind,
                                                        "id", deps[i].id, "label", deps[i].label));
                json_object_set_new(o, "files", fa);
                json_object_set_new(o, "dependents", da);
                json_array_append_new(out, o);
                return CLI_OK;
        }
        print_record(&r, dir);
        printf("files:\n");
        print_files(files, n_files, NULL);
        printf("dependents:%s\n", n_deps ? "" : "    none");
        for (size_t i = 0; i < n_deps; i++)
                printf("  %s %s%s%s%s\n", deps[i].kind, deps[i].id, deps[i].label[0] ? " (" : "",
                       deps[i].label, deps[i].label[0] ? ")" : "");
        return CLI_OK;
}

static int verb_inspect(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs < 1)
                return usage_error(a, "expects at least one REF");
        json_t *arr = a->json ? json_array() : NULL;
        int ret = CLI_OK;
        for (int i = 0; i < a->nargs; i++) {
                if (!a->json && i > 0)
                        printf("\n");
                if (inspect_one(s, a, a->args[i], arr) != CLI_OK)
                        ret = CLI_FAIL;
        }
        if (arr)
                print_json(arr);
        return ret;
}

static const char add_usage[] =
    "usage: vmsnap snapshot add MEMFILE --name NAME [OPTIONS]\n\n"
    "Makes a snapshot from a full guest-memory file (generation 0), or, with --parent, the\n"
    "next generation over a snapshot in the store (only changed blocks are stored; the\n"
    "parent's diff files are hard-linked). Two-phase: nothing is visible until complete.\n"
    "  --name NAME           unique name (1-64 of A-Z a-z 0-9 . _ -)\n"
    "  --kind pause|template default pause\n"
    "  --parent REF          make the next generation of REF\n"
    "  --snapfile FILE       VMM device-state file, copied in as `snapfile`\n"
    "  --description TEXT    free text (at most 1024 bytes)\n"
    "  --label KEY=VALUE     a label (repeatable)\n"
    "  --vmm TYPE, --vmm-version V, --vcpus N   what the snapshot was taken from\n"
    "                        (inherited from --parent when not given)\n"
    "  --block-size 4096|2M  for a new chain (default 4096)\n"
    "  --source content|sparse  with --parent: full file (content, default) or a\n"
    "                        Firecracker Diff file whose holes are unchanged (sparse)\n"
    "  --json                the new record as JSON\n";

/* Builds the labels JSON object from KEY=VALUE arguments. */
static char *labels_text(const struct args *a)
{
        json_t *o = json_object();
        for (int i = 0; i < a->n_labels; i++) {
                const char *eq = strchr(a->labels[i], '=');
                char key[128];
                snprintf(key, sizeof(key), "%.*s", (int)(eq - a->labels[i]), a->labels[i]);
                json_object_set_new(o, key, json_string(eq + 1));
        }
        char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        return text;
}

static void print_added(struct vmsnap_store *s, const struct args *a,
                        const struct vmsnap_snapshot *r, const char *verb)
{
        if (a->json) {
                print_json(record_json(s, r));
                return;
        }
        char size[16];
        vmsnap_format_bytes(r->size_bytes, size);
        printf("%s %s%s%s%s (%s, generation %llu, %s on disk)\n", verb, r->id,
               r->name[0] ? " (" : "", r->name, r->name[0] ? ")" : "",
               vmsnap_snapshot_kind_name(r->kind), (unsigned long long)r->generation, size);
}

static int verb_add(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs != 1)
                return usage_error(a, "expects one MEMFILE");
        if (!a->name)
                return usage_error(a, "--name is required");
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot parent, r;
        if (a->parent && vmsnap_store_resolve(s, a->parent, &parent, &d) < 0)
                return fail(a, &d);
        _cleanup_free_ char *labels = labels_text(a);
        struct vmsnap_snapshot_spec spec = {
            .name = a->name,
            .kind = a->kind_set ? a->kind : VMSNAP_SNAPSHOT_PAUSE,
            .parent_id = a->parent ? parent.id : NULL,
            .vmm = a->vmm,
            .vmm_version = a->vmm_version,
            .vcpus = a->vcpus,
            .description = a->description,
            .labels = labels,
        };
        if (vmsnap_store_add(s, &spec, a->args[0], a->snapfile, &a->mem, &r, &d) < 0)
                return fail(a, &d);
        print_added(s, a, &r, "added");
        return CLI_OK;
}

static const char rm_usage[] =
    "usage: vmsnap snapshot rm REF... [--force] [--json]\n\n"
    "Deletes snapshots. Refuses one that something depends on (a child generation, a\n"
    "snapshot spawned from a template, a sandbox) and names the dependents; children\n"
    "given in the same command are deleted first.\n"
    "  --force        delete even when something depends on it (dependents keep their\n"
    "                 own files; their parent/template field becomes history)\n"
    "  --json         {\"deleted\": [ids], \"failed\": [{\"id\", \"error\"}]}\n";

static int verb_rm(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs < 1)
                return usage_error(a, "expects at least one REF");
        struct vmsnap_diag d = {0};
        _cleanup_free_ struct vmsnap_snapshot *v = NULL;
        size_t n;
        if (vmsnap_store_resolve_many(s, (const char *const *)a->args, (size_t)a->nargs, &v, &n,
                                      &d) < 0)
                return fail(a, &d);
        _cleanup_free_ int *err = calloc(n, sizeof(*err));
        _cleanup_free_ struct vmsnap_diag *msgs = calloc(n, sizeof(*msgs));
        if (!err || !msgs)
                return CLI_FAIL;
        /* Passes until nothing more can go: a child named in the same command is deleted
         * before its parent retries. */
        for (bool progress = true; progress;) {
                progress = false;
                for (size_t i = 0; i < n; i++) {
                        if (err[i] == 1 || (err[i] != 0 && err[i] != -EBUSY))
                                continue;
                        err[i] = vmsnap_store_delete(s, v[i].id, a->force ? VMSNAP_DELETE_FORCE : 0,
                                                     &msgs[i]);
                        if (err[i] == 0) {
                                err[i] = 1;
                                progress = true;
                        }
                }
        }
        json_t *done = json_array(), *failed = json_array();
        int ret = CLI_OK;
        for (size_t i = 0; i < n; i++) {
                if (err[i] == 1) {
                        json_array_append_new(done, json_string(v[i].id));
                        if (!a->json)
                                printf("deleted %s%s%s%s\n", v[i].id, v[i].name[0] ? " (" : "",
                                       v[i].name, v[i].name[0] ? ")" : "");
                        continue;
                }
                ret = CLI_FAIL;
                json_array_append_new(failed,
                                      json_pack("{s:s, s:s}", "id", v[i].id, "error", msgs[i].msg));
                if (!a->json)
                        fail(a, &msgs[i]);
        }
        if (a->json)
                print_json(json_pack("{s:o, s:o}", "deleted", done, "failed", failed));
        if (!a->json) {
                json_decref(done);
                json_decref(failed);
        }
        return ret;
}

static const char export_usage[] =
    "usage: vmsnap snapshot export REF [-o FILE|-] [--to-dir DIR] [OPTIONS]\n\n"
    "Writes a snapshot as a tar stream (snapshot.json first, sparse files kept sparse) to\n"
    "FILE, or to stdout with `-o -` or when stdout is not a terminal; or, with --to-dir,\n"
    "as plain files in DIR (must be empty or not exist; snapshot.json written last).\n"
    "Every byte is checked against the snapshot's checksums on the way out.\n"
    "  -o, --output FILE      the archive (written to FILE.partial, then renamed)\n"
    "  --compression C        none, gzip or zstd (default zstd)\n"
    "  --level N              compression level (default: zstd 3, gzip 6)\n"
    "A progress bar is drawn on stderr when it is a terminal.\n";

/* Exports into path through a temporary name, so a failed export leaves no partial file. */
static int export_file(struct vmsnap_store *s, const char *id, const char *path,
                       const struct vmsnap_export_opts *o, struct vmsnap_diag *d)
{
        char tmp[PATH_MAX];
        if (snprintf(tmp, sizeof(tmp), "%s.partial.%d", path, (int)getpid()) >= (int)sizeof(tmp))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", tmp, strerror(errno));
        int r = vmsnap_store_export_fd(s, id, fd, o, d);
        if (r == 0 && fsync(fd) < 0)
                r = vmsnap_diag(d, -errno, "%s: fsync: %s", tmp, strerror(errno));
        close(fd);
        if (r == 0 && rename(tmp, path) < 0)
                r = vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        if (r < 0)
                unlink(tmp);
        return r;
}

static int verb_export(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs != 1)
                return usage_error(a, "expects one REF");
        if (a->output && a->to_dir)
                return usage_error(a, "give -o or --to-dir, not both");
        bool to_stdout = !a->to_dir && (!a->output || strcmp(a->output, "-") == 0);
        if (to_stdout && isatty(STDOUT_FILENO))
                return usage_error(a, "refusing to write an archive to a terminal; use -o FILE "
                                      "or a pipe");
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        if (vmsnap_store_resolve(s, a->args[0], &r, &d) < 0)
                return fail(a, &d);
        struct bar b;
        bar_init(&b, "export", &a->exp, NULL);
        int e = a->to_dir   ? vmsnap_store_export_dir(s, r.id, a->to_dir, &a->exp, &d)
                : to_stdout ? vmsnap_store_export_fd(s, r.id, STDOUT_FILENO, &a->exp, &d)
                            : export_file(s, r.id, a->output, &a->exp, &d);
        bar_done(&b);
        return e < 0 ? fail(a, &d) : CLI_OK;
}

static const char import_usage[] =
    "usage: vmsnap snapshot import [FILE|-|DIR] [--name NAME] [--description TEXT]\n"
    "                              [--max-size SIZE] [--json]\n\n"
    "Reads an export: a tar stream from FILE or stdin (none, gzip or zstd: detected), or\n"
    "a directory written by `export --to-dir`. Links, devices, paths out of the\n"
    "snapshot, oversized or truncated archives are refused, and every checksum is\n"
    "verified before the snapshot becomes visible. The archive's id is kept when free.\n"
    "  --name NAME          store it under another name (needed when the archive's name\n"
    "                       is taken here)\n"
    "  --description TEXT   replace the archive's description\n"
    "  --max-size SIZE      refuse archives declaring more (default 256G)\n"
    "  --json               the new record as JSON\n";

static int verb_import(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs > 1)
                return usage_error(a, "expects at most one FILE or DIR");
        const char *src = a->nargs ? a->args[0] : "-";
        bool from_stdin = strcmp(src, "-") == 0;
        if (from_stdin && isatty(STDIN_FILENO))
                return usage_error(a, "give a FILE or DIR, or pipe an archive into stdin");
        struct vmsnap_import_opts o = {
            .name = a->name, .description = a->description, .max_bytes = a->max_size};
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot r;
        struct stat st;
        struct bar b;
        bar_init(&b, "import", NULL, &o);
        int e;
        if (!from_stdin && stat(src, &st) == 0 && S_ISDIR(st.st_mode)) {
                e = vmsnap_store_import_dir(s, src, &o, &r, &d);
        } else {
                int fd = from_stdin ? STDIN_FILENO : open(src, O_RDONLY | O_CLOEXEC);
                e = fd < 0 ? vmsnap_diag(&d, -errno, "%s: %s", src, strerror(errno))
                           : vmsnap_store_import_fd(s, fd, &o, &r, &d);
                if (fd > STDIN_FILENO)
                        close(fd);
        }
        bar_done(&b);
        if (e < 0)
                return fail(a, &d);
        print_added(s, a, &r, "imported");
        return CLI_OK;
}

static const char gc_usage[] =
    "usage: vmsnap snapshot gc [--dry-run] [--grace DURATION] [--budget SIZE] [--json]\n\n"
    "Removes what no snapshot needs: creates abandoned by a dead process (pending),\n"
    "directories without a row or a valid envelope (orphan-dir), temporary files and diff\n"
    "files no header references inside snapshots; with --budget, evicts least-recently-\n"
    "used templates that nothing depends on until the store fits. A directory that is a\n"
    "whole snapshot but has no row is reported as unindexed (run reindex), never removed.\n"
    "  --dry-run          list what would go and how many bytes; remove nothing\n"
    "  --grace DURATION   only leftovers older than this (default 1h; 0 = all)\n"
    "  --budget SIZE      disk budget for the store, e.g. 50G\n"
    "  --json             {\"items\": [...], \"bytes\", \"usage_before\", \"usage_after\"}\n";

struct gc_out {
        bool json;
        json_t *items;
};

static void gc_item(void *ctx, const struct vmsnap_gc_item *it)
{
        struct gc_out *g = ctx;
        if (g->json) {
                json_array_append_new(g->items, json_pack("{s:s, s:s, s:s, s:I}", "what", it->what,
                                                          "id", it->id, "path", it->path, "bytes",
                                                          (json_int_t)it->bytes));
                return;
        }
        char size[16];
        vmsnap_format_bytes(it->bytes, size);
        printf("%-18s %8s  %s%s\n", it->what, size, it->path,
               strcmp(it->what, "unindexed") == 0 ? "  (kept: run `vmsnap snapshot reindex`)" : "");
}

static int verb_gc(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return usage_error(a, "takes no arguments, got '%s'", a->args[0]);
        struct gc_out g = {.json = a->json, .items = json_array()};
        struct vmsnap_gc_opts o = {.grace = a->grace,
                                   .budget = a->budget,
                                   .dry_run = a->dry_run,
                                   .fn = gc_item,
                                   .ctx = &g};
        struct vmsnap_gc_result res;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_gc(s, &o, &res, &d) < 0) {
                json_decref(g.items);
                return fail(a, &d);
        }
        if (a->json) {
                print_json(json_pack(
                    "{s:b, s:o, s:I, s:I, s:I, s:I}", "dry_run", a->dry_run, "items", g.items,
                    "count", (json_int_t)res.items, "bytes", (json_int_t)res.bytes, "usage_before",
                    (json_int_t)res.usage_before, "usage_after", (json_int_t)res.usage_after));
                return CLI_OK;
        }
        json_decref(g.items);
        char bytes[16], before[16], after[16];
        vmsnap_format_bytes(res.bytes, bytes);
        vmsnap_format_bytes(res.usage_before, before);
        vmsnap_format_bytes(res.usage_after, after);
        printf("%s%llu item%s, %s%s (store: %s -> %s)\n", a->dry_run ? "dry run: " : "",
               (unsigned long long)res.items, res.items == 1 ? "" : "s", bytes,
               a->dry_run ? " would be freed" : " freed", before, after);
        return CLI_OK;
}

static const char reindex_usage[] =
    "usage: vmsnap snapshot reindex [--verify] [--json]\n\n"
    "Rebuilds the index from the snapshot directories: a directory whose snapshot.json is\n"
    "valid and whose files are all present gets a row; a row whose directory is gone is\n"
    "dropped. Directories that do not qualify are reported and left to gc.\n"
    "  --verify       check every file's checksum too (reads all data)\n"
    "  --json         {\"added\", \"kept\", \"removed\", \"skipped\", \"problems\": [...]}\n";

static void collect_problem(void *ctx, const char *problem)
{
        json_array_append_new(ctx, json_string(problem));
}

static int verb_reindex(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return usage_error(a, "takes no arguments, got '%s'", a->args[0]);
        json_t *problems = json_array();
        struct vmsnap_reindex_result res;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_reindex(s, a->verify ? VMSNAP_REINDEX_VERIFY : 0, collect_problem,
                                 problems, &res, &d) < 0) {
                json_decref(problems);
                return fail(a, &d);
        }
        if (a->json) {
                print_json(json_pack("{s:I, s:I, s:I, s:I, s:o}", "added", (json_int_t)res.added,
                                     "kept", (json_int_t)res.kept, "removed",
                                     (json_int_t)res.removed, "skipped", (json_int_t)res.skipped,
                                     "problems", problems));
                return CLI_OK;
        }
        size_t i;
        json_t *p;
        json_array_foreach(problems, i, p) {
                printf("  %s\n", json_string_value(p));
        }
        json_decref(problems);
        printf("added %llu, kept %llu, removed %llu, skipped %llu\n", (unsigned long long)res.added,
               (unsigned long long)res.kept, (unsigned long long)res.removed,
               (unsigned long long)res.skipped);
        return CLI_OK;
}

static const char verify_usage[] =
    "usage: vmsnap snapshot verify REF... [--json]\n\n"
    "Reads every file of each snapshot and checks it against snapshot.json (size and\n"
    "XXH3-128, which catches corruption, not tampering), then the memory snapshot's\n"
    "structure and block hashes. Exit code 1 when any problem is found.\n";

static void print_problem(void *ctx, const char *problem)
{
        if (ctx)
                json_array_append_new(ctx, json_string(problem));
        else
                printf("  %s\n", problem);
}

static int verb_verify(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs < 1)
                return usage_error(a, "expects at least one REF");
        json_t *out = a->json ? json_array() : NULL;
        int ret = CLI_OK;
        for (int i = 0; i < a->nargs; i++) {
                struct vmsnap_diag d = {0};
                struct vmsnap_snapshot r;
                json_t *problems = out ? json_array() : NULL;
                int e = vmsnap_store_resolve(s, a->args[i], &r, &d);
                if (e == 0)
                        e = vmsnap_store_verify(s, r.id, print_problem, problems, &d);
                if (e < 0)
                        ret = CLI_FAIL;
                if (out) {
                        json_array_append_new(
                            out, json_pack("{s:s, s:b, s:s, s:o}", "ref", a->args[i], "ok", e == 0,
                                           "error", e < 0 ? d.msg : "", "problems", problems));
                } else if (e == 0) {
                        printf("ok %s%s%s%s\n", r.id, r.name[0] ? " (" : "", r.name,
                               r.name[0] ? ")" : "");
                } else {
                        fail(a, &d);
                }
        }
        if (out)
                print_json(out);
        return ret;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

struct verb {
        const char *name;
        int (*run)(struct vmsnap_store *s, struct args *a);
        const char *usage;
        int options[16];
};

static const struct verb verbs[] = {
    {"ls", verb_ls, ls_usage, {OPT_JSON, OPT_ALL, OPT_KIND, OPT_NO_TRUNC}},
    {"inspect", verb_inspect, inspect_usage, {OPT_JSON}},
    {"add",
     verb_add,
     add_usage,
     {OPT_JSON, OPT_NAME, OPT_KIND, OPT_PARENT, OPT_SNAPFILE, OPT_DESCRIPTION, OPT_LABEL, OPT_VMM,
      OPT_VMM_VERSION, OPT_VCPUS, OPT_BLOCK_SIZE, OPT_SOURCE}},
    {"rm", verb_rm, rm_usage, {OPT_JSON, OPT_FORCE}},
    {"export", verb_export, export_usage, {OPT_OUTPUT, OPT_TO_DIR, OPT_COMPRESSION, OPT_LEVEL}},
    {"import", verb_import, import_usage, {OPT_JSON, OPT_NAME, OPT_DESCRIPTION, OPT_MAX_SIZE}},
    {"gc", verb_gc, gc_usage, {OPT_JSON, OPT_DRY_RUN, OPT_GRACE, OPT_BUDGET}},
    {"reindex", verb_reindex, reindex_usage, {OPT_JSON, OPT_VERIFY}},
    {"verify", verb_verify, verify_usage, {OPT_JSON}},
};

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
                r = verbs[i].run(s, &a);
                vmsnap_store_close(s);
                return r;
        }
        fprintf(stderr, "vmsnap snapshot: unknown verb '%s'\n\n%s", argv[1], main_usage);
        return CLI_USAGE;
}
