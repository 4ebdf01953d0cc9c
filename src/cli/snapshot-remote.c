/* `vmsnap snapshot push | pull` and `ls | rm | gc --remote`: snapshots in S3 object storage
 * (docs/remote.md). Credentials come from a private file or the environment, never argv. */
#include "cli/progress.h"
#include "cli/snapshot.h"
#include "util/text.h"

#include <vmsnap/remote.h>

#include <stdio.h>
#include <string.h>

#define REMOTE_HELP                                                                                \
        "  --remote[=NAME]  the remote: <root>/remotes/NAME.conf (0600); without NAME the\n"  \
        "                   VMSNAP_S3_* environment, else <root>/remotes/default.conf\n"

const char snapshot_push_usage[] =
    "usage: vmsnap snapshot push REF [--remote[=NAME]] [--json]\n\n"
    "Uploads a snapshot (and the base image its disk stands on) to S3 object storage as\n"
    "4 MiB content-addressed chunks, only those the bucket lacks, then its manifest: it\n"
    "is visible remotely only once complete. See docs/remote.md.\n" REMOTE_HELP
    "  --json           {\"id\", \"chunks\", \"zero_chunks\", \"chunks_sent\", \"bytes\", \"retries\"}\n";

const char snapshot_pull_usage[] =
    "usage: vmsnap snapshot pull REF [--remote[=NAME]] [--name NAME] [--json]\n"
    "       vmsnap snapshot pull REF --to-dir DIR [--remote[=NAME]] [--json]\n\n"
    "Downloads a snapshot from S3 object storage: every chunk checked against its SHA-256\n"
    "before it is written, then imported as an archive is (every check of `import`).\n"
    "REF is a remote id, name or unique id prefix.\n" REMOTE_HELP
    "  --name NAME      the local name (default: the remote one)\n"
    "  --to-dir DIR     lazy restore: fetch everything but the memory diff files into the new\n"
    "                   DIR, import nothing; `vmsnap uffd-serve DIR --remote-lazy` fetches\n"
    "                   the memory on fault\n"
    "  --json           the imported record, with \"transfer\": {\"chunks\", \"zero_chunks\",\n"
    "                   \"chunks_fetched\", \"chunks_cached\", \"cache_corrupt\", \"bytes\",\n"
    "                   \"retries\"}\n"
    "Chunks go through the host's chunk cache <root>/chunk-cache (limit:\n"
    "VMSNAP_CHUNK_CACHE_SIZE bytes, K/M/G allowed, default 8G, 0 = none).\n";

static int open_remote(struct vmsnap_store *s, const struct args *a, struct vmsnap_remote **ret)
{
        struct vmsnap_remote_config c;
        struct vmsnap_diag d = {0};
        int r = vmsnap_remote_config_load(vmsnap_store_root(s), a->remote_name, &c, &d);
        if (r == 0)
                r = vmsnap_remote_open(&c, ret, &d);
        vmsnap_remote_config_clear(&c);
        return r < 0 ? snapshot_fail(a, &d) : CLI_OK;
}

static json_t *stats_json(const char *id, const struct vmsnap_remote_stats *st)
{
        return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "id", id, "chunks",
                         (json_int_t)st->chunks, "zero_chunks", (json_int_t)st->zero_chunks,
                         "chunks_sent", (json_int_t)st->chunks_sent, "chunks_fetched",
                         (json_int_t)st->chunks_fetched, "bytes", (json_int_t)st->bytes,
                         "retries", (json_int_t)st->retries);
}

static json_t *pull_stats_json(const struct vmsnap_remote_stats *st)
{
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "chunks", (json_int_t)st->chunks,
                         "zero_chunks", (json_int_t)st->zero_chunks, "chunks_fetched",
                         (json_int_t)st->chunks_fetched, "chunks_cached",
                         (json_int_t)st->chunks_cached, "cache_corrupt",
                         (json_int_t)st->cache_corrupt, "bytes", (json_int_t)st->bytes,
                         "retries", (json_int_t)st->retries);
}

int snapshot_push(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs != 1)
                return snapshot_usage_error(a, "expects one REF");
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot row;
        if (vmsnap_store_resolve(s, a->args[0], &row, &d) < 0)
                return snapshot_fail(a, &d);
        struct vmsnap_remote *r;
        int rc = open_remote(s, a, &r);
        if (rc != CLI_OK)
                return rc;
        struct vmsnap_remote_stats st = {0};
        struct cli_progress pr;
        cli_progress_start(&pr, "push %s", a->args[0]);
        vmsnap_remote_set_progress(r, cli_progress_tick, &pr);
        int e = vmsnap_remote_push(r, s, row.id, &st, &d);
        cli_progress_end(&pr, e == 0);
        vmsnap_remote_close(r);
        if (e < 0)
                return snapshot_fail(a, &d);
        if (a->json) {
                snapshot_print_json(stats_json(row.id, &st));
        } else {
                char b[16];
                vmsnap_format_bytes(st.bytes, b);
                printf("pushed %s%s%s%s: %llu chunks, %llu uploaded (%s), %llu already there, "
                       "%llu zero\n", row.id, row.name[0] ? " (" : "", row.name,
                       row.name[0] ? ")" : "", (unsigned long long)st.chunks,
                       (unsigned long long)st.chunks_sent, b,
                       (unsigned long long)(st.chunks - st.chunks_sent),
                       (unsigned long long)st.zero_chunks);
        }
        return CLI_OK;
}

/* pull --to-dir: the lazy directory; closes r. */
static int pull_lazy(struct vmsnap_store *s, struct args *a, struct vmsnap_remote *r,
                     struct cli_progress *pr)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_remote_stats st = {0};
        int e = vmsnap_remote_pull_lazy(r, s, a->args[0], a->to_dir, &st, &d);
        cli_progress_end(pr, e == 0);
        vmsnap_remote_close(r);
        if (e < 0)
                return snapshot_fail(a, &d);
        if (a->json)
                snapshot_print_json(pull_stats_json(&st));
        else
                printf("%s: ready for a lazy restore; %llu chunks fetched, %llu from the chunk "
                       "cache, the memory on fault\n", a->to_dir,
                       (unsigned long long)st.chunks_fetched, (unsigned long long)st.chunks_cached);
        return CLI_OK;
}

int snapshot_pull(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs != 1)
                return snapshot_usage_error(a, "expects one REF");
        if (a->to_dir && a->name)
                return snapshot_usage_error(a, "--to-dir imports nothing: --name does not apply");
        struct vmsnap_remote *r;
        int rc = open_remote(s, a, &r);
        if (rc != CLI_OK)
                return rc;
        struct vmsnap_diag d = {0};
        struct vmsnap_import_opts io = {.name = a->name};
        struct vmsnap_snapshot row;
        struct vmsnap_remote_stats st = {0};
        struct cli_progress pr;
        cli_progress_start(&pr, "pull %s", a->args[0]);
        vmsnap_remote_set_progress(r, cli_progress_tick, &pr);
        if (a->to_dir)
                return pull_lazy(s, a, r, &pr);
        int e = vmsnap_remote_pull(r, s, a->args[0], &io, &row, &st, &d);
        cli_progress_end(&pr, e == 0);
        vmsnap_remote_close(r);
        if (e < 0)
                return snapshot_fail(a, &d);
        if (a->json) {
                json_t *j = snapshot_record_json(s, &row);
                json_object_set_new(j, "transfer", pull_stats_json(&st));
                snapshot_print_json(j);
                return CLI_OK;
        }
        snapshot_print_added(s, a, &row, "pulled");
        printf("%llu chunks fetched, %llu from the chunk cache, %llu zero\n",
               (unsigned long long)st.chunks_fetched, (unsigned long long)st.chunks_cached,
               (unsigned long long)st.zero_chunks);
        return CLI_OK;
}

int snapshot_remote_ls(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return snapshot_usage_error(a, "takes no arguments with --remote");
        struct vmsnap_remote *r;
        int rc = open_remote(s, a, &r);
        if (rc != CLI_OK)
                return rc;
        struct vmsnap_diag d = {0};
        struct vmsnap_remote_entry *e = NULL;
        size_t n = 0;
        int x = vmsnap_remote_list(r, &e, &n, &d);
        vmsnap_remote_close(r);
        if (x < 0)
                return snapshot_fail(a, &d);
        json_t *arr = json_array();
        if (!a->json)
                printf("%-36s  %-20s  %-8s  %9s  %s\n", "ID", "NAME", "KIND", "SIZE", "PUSHED");
        for (size_t i = 0; i < n; i++) {
                char t[21], b[16];
                if (e[i].problem[0]) {
                        if (a->json)
                                json_array_append_new(arr, json_pack("{s:s, s:s}", "key", e[i].key,
                                                                     "problem", e[i].problem));
                        else
                                printf("%s: %s\n", e[i].key, e[i].problem);
                        continue;
                }
                vmsnap_time_format(e[i].m.pushed, t);
                vmsnap_format_bytes(e[i].size, b);
                if (a->json)
                        json_array_append_new(
                            arr, json_pack("{s:s, s:s?, s:s, s:I, s:s}", "id", e[i].m.id, "name",
                                           e[i].m.name[0] ? e[i].m.name : NULL, "kind",
                                           vmsnap_snapshot_kind_name(e[i].m.kind), "size",
                                           (json_int_t)e[i].size, "pushed", t));
                else
                        printf("%-36s  %-20s  %-8s  %9s  %s\n", e[i].m.id,
                               e[i].m.name[0] ? e[i].m.name : "-",
                               vmsnap_snapshot_kind_name(e[i].m.kind), b, t);
        }
        vmsnap_remote_entries_free(e, n);
        if (a->json)
                snapshot_print_json(arr);
        else
                json_decref(arr);
        return CLI_OK;
}

int snapshot_remote_rm(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs < 1)
                return snapshot_usage_error(a, "expects at least one REF");
        struct vmsnap_remote *r;
        int rc = open_remote(s, a, &r);
        if (rc != CLI_OK)
                return rc;
        int ret = CLI_OK;
        json_t *done = json_array(), *failed = json_array();
        for (int i = 0; i < a->nargs; i++) {
                struct vmsnap_diag d = {0};
                char id[VMSNAP_ID_LEN + 1];
                if (vmsnap_remote_rm(r, a->args[i], a->force ? VMSNAP_REMOTE_RM_FORCE : 0, id,
                                     &d) < 0) {
                        ret = snapshot_fail(a, &d);
                        json_array_append_new(failed, json_pack("{s:s, s:s}", "ref", a->args[i],
                                                                "error", d.msg));
                } else if (a->json) {
                        json_array_append_new(done, json_string(id));
                } else {
                        printf("removed remote %s\n", id);
                }
        }
        vmsnap_remote_close(r);
        if (a->json) {
                snapshot_print_json(json_pack("{s:o, s:o}", "deleted", done, "failed", failed));
        } else {
                json_decref(done);
                json_decref(failed);
        }
        return ret;
}

int snapshot_remote_gc(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs)
                return snapshot_usage_error(a, "takes no arguments");
        struct vmsnap_remote *r;
        int rc = open_remote(s, a, &r);
        if (rc != CLI_OK)
                return rc;
        struct vmsnap_diag d = {0};
        struct vmsnap_remote_gc_result res;
        int x = vmsnap_remote_gc(r, a->grace, a->dry_run, &res, &d);
        vmsnap_remote_close(r);
        if (x < 0)
                return snapshot_fail(a, &d);
        if (a->json) {
                snapshot_print_json(json_pack(
                    "{s:b, s:I, s:I, s:I, s:I, s:I}", "dry_run", a->dry_run, "chunks_seen",
                    (json_int_t)res.chunks_seen, "chunks_referenced",
                    (json_int_t)res.chunks_referenced, "chunks_young", (json_int_t)res.chunks_young,
                    "chunks_removed", (json_int_t)res.chunks_removed, "bytes_removed",
                    (json_int_t)res.bytes_removed));
        } else {
                char b[16];
                vmsnap_format_bytes(res.bytes_removed, b);
                printf("%s %llu unreferenced chunks (%s); %llu referenced, %llu within the grace "
                       "period\n", a->dry_run ? "would remove" : "removed",
                       (unsigned long long)res.chunks_removed, b,
                       (unsigned long long)res.chunks_referenced,
                       (unsigned long long)res.chunks_young);
        }
        return CLI_OK;
}
