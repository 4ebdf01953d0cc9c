/* `vmsnap snapshot ls | inspect | verify`: reading the store, as tables for people or JSON
 * for programs. */
#include "cli/snapshot.h"
#include "util/cleanup.h"
#include "util/text.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void local_time(int64_t t, char out[20])
{
        time_t tt = (time_t)t;
        struct tm tm;
        if (!localtime_r(&tt, &tm) || strftime(out, 20, "%Y-%m-%d %H:%M", &tm) == 0)
                snprintf(out, 20, "-");
}

static json_t *str_or_null(const char *s)
{
        return s && s[0] ? json_string(s) : json_null();
}

json_t *snapshot_record_json(struct vmsnap_store *s, const struct vmsnap_snapshot *r)
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

void snapshot_print_json(json_t *j)
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

const char snapshot_ls_usage[] =
    "usage: vmsnap snapshot ls [--all] [--kind pause|template] [--no-trunc] [--json]\n\n"
    "Lists ready snapshots, oldest first.\n"
    "  --all          include snapshots being created or deleted (STATE column)\n"
    "  --kind K       only pause snapshots or only templates\n"
    "  --no-trunc     full ids\n"
    "  --json         a JSON array of records\n";

int snapshot_ls(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return snapshot_usage_error(a, "takes no arguments, got '%s'", a->args[0]);
        struct vmsnap_diag d = {0};
        _cleanup_free_ struct vmsnap_snapshot *v = NULL;
        size_t n;
        if (vmsnap_store_list(s, a->all ? VMSNAP_LIST_ALL : 0, &v, &n, &d) < 0)
                return snapshot_fail(a, &d);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                if (!a->kind_set || v[i].kind == a->kind)
                        v[k++] = v[i];
        if (a->json) {
                json_t *arr = json_array();
                for (size_t i = 0; i < k; i++)
                        json_array_append_new(arr, snapshot_record_json(s, &v[i]));
                snapshot_print_json(arr);
        } else {
                print_table(a, v, k);
        }
        return CLI_OK;
}

const char snapshot_inspect_usage[] =
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
                return snapshot_fail(a, &d);
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(s, r.id, dir, sizeof(dir));
        if (out) {
                json_t *o = snapshot_record_json(s, &r), *fa = json_array(), *da = json_array();
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

int snapshot_inspect(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs < 1)
                return snapshot_usage_error(a, "expects at least one REF");
        json_t *arr = a->json ? json_array() : NULL;
        int ret = CLI_OK;
        for (int i = 0; i < a->nargs; i++) {
                if (!a->json && i > 0)
                        printf("\n");
                if (inspect_one(s, a, a->args[i], arr) != CLI_OK)
                        ret = CLI_FAIL;
        }
        if (arr)
                snapshot_print_json(arr);
        return ret;
}

const char snapshot_verify_usage[] =
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

int snapshot_verify(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs < 1)
                return snapshot_usage_error(a, "expects at least one REF");
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
                        snapshot_fail(a, &d);
                }
        }
        if (out)
                snapshot_print_json(out);
        return ret;
}

void snapshot_print_added(struct vmsnap_store *s, const struct args *a,
                        const struct vmsnap_snapshot *r, const char *verb)
{
        if (a->json) {
                snapshot_print_json(snapshot_record_json(s, r));
                return;
        }
        char size[16];
        vmsnap_format_bytes(r->size_bytes, size);
        printf("%s %s%s%s%s (%s, generation %llu, %s on disk)\n", verb, r->id,
               r->name[0] ? " (" : "", r->name, r->name[0] ? ")" : "",
               vmsnap_snapshot_kind_name(r->kind), (unsigned long long)r->generation, size);
}
