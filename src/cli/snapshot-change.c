/* `vmsnap snapshot add | rm`: making and deleting snapshots. */
#include "cli/snapshot.h"
#include "util/cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char snapshot_add_usage[] =
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

int snapshot_add(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs != 1)
                return snapshot_usage_error(a, "expects one MEMFILE");
        if (!a->name)
                return snapshot_usage_error(a, "--name is required");
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot parent, r;
        if (a->parent && vmsnap_store_resolve(s, a->parent, &parent, &d) < 0)
                return snapshot_fail(a, &d);
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
                return snapshot_fail(a, &d);
        snapshot_print_added(s, a, &r, "added");
        return CLI_OK;
}

const char snapshot_rm_usage[] =
    "usage: vmsnap snapshot rm REF... [--force] [--json]\n\n"
    "Deletes snapshots. Refuses one that something depends on (a child generation, a\n"
    "snapshot spawned from a template, a sandbox) and names the dependents; children\n"
    "given in the same command are deleted first.\n"
    "  --force        delete even when something depends on it (dependents keep their\n"
    "                 own files; their parent/template field becomes history)\n"
    "  --json         {\"deleted\": [ids], \"failed\": [{\"id\", \"error\"}]}\n"
    "                 (with --remote: failed: [{\"ref\", \"error\"}])\n";

int snapshot_rm(struct vmsnap_store *s, struct args *a)
{
        if (a->nargs < 1)
                return snapshot_usage_error(a, "expects at least one REF");
        struct vmsnap_diag d = {0};
        _cleanup_free_ struct vmsnap_snapshot *v = NULL;
        size_t n;
        if (vmsnap_store_resolve_many(s, (const char *const *)a->args, (size_t)a->nargs, &v, &n,
                                      &d) < 0)
                return snapshot_fail(a, &d);
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
                        snapshot_fail(a, &msgs[i]);
        }
        if (a->json)
                snapshot_print_json(json_pack("{s:o, s:o}", "deleted", done, "failed", failed));
        if (!a->json) {
                json_decref(done);
                json_decref(failed);
        }
        return ret;
}
