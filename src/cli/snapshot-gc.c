/* `vmsnap snapshot gc | reindex`: cleaning up and rebuilding the index. */
#include "cli/snapshot.h"
#include "util/text.h"

#include <stdio.h>
#include <string.h>

const char snapshot_gc_usage[] =
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

int snapshot_gc(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return snapshot_usage_error(a, "takes no arguments, got '%s'", a->args[0]);
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
                return snapshot_fail(a, &d);
        }
        if (a->json) {
                snapshot_print_json(json_pack(
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

const char snapshot_reindex_usage[] =
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

int snapshot_reindex(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return snapshot_usage_error(a, "takes no arguments, got '%s'", a->args[0]);
        json_t *problems = json_array();
        struct vmsnap_reindex_result res;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_reindex(s, a->verify ? VMSNAP_REINDEX_VERIFY : 0, collect_problem,
                                 problems, &res, &d) < 0) {
                json_decref(problems);
                return snapshot_fail(a, &d);
        }
        if (a->json) {
                snapshot_print_json(json_pack("{s:I, s:I, s:I, s:I, s:o}", "added", (json_int_t)res.added,
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
