/* Resource → JSON. Empty strings and zero times become null so programs can test for
 * absence; memory goes out in MiB (what requests take); times in RFC 3339 UTC. */
#include "api/model.h"
#include "api/exec-routes.h"
#include "api/json.h"
#include "util/json.h"

#include <vmsnap/mem.h>

#include <errno.h>

#include "util/ids.h"

json_t *api_sandbox_json(const struct vmsnap_sandbox *s)
{
        json_t *o = json_object();
        if (!o)
                return NULL;
        int r = 0;
        r |= api_json_set(o, "id", json_string(s->id));
        r |= api_json_set(o, "name", api_json_string_or_null(s->name));
        r |= api_json_set(o, "state", json_string(vmsnap_sandbox_state_name(s->state)));
        r |= api_json_set(o, "vmm", api_json_string_or_null(s->vmm));
        r |= api_json_set(o, "vcpus", json_integer(s->vcpus));
        r |= api_json_set(o, "memory_mib", json_integer((json_int_t)(s->memory >> 20)));
        r |= api_json_set(o, "template_id", api_json_string_or_null(s->template_id));
        r |= api_json_set(o, "snapshot_id", api_json_string_or_null(s->snapshot_id));
        r |= api_json_set(o, "generation", json_integer((json_int_t)s->generation));
        r |= api_json_set(o, "pid", s->pid > 0 ? json_integer(s->pid) : json_null());
        r |= api_json_set(o, "created", api_json_time(s->created));
        r |= api_json_set(o, "updated", api_json_time(s->updated));
        r |= api_json_set(o, "last_active", api_json_time(s->last_active));
        r |= api_json_set(o, "started", api_json_time(s->started));
        r |= api_json_set(o, "last_paused", api_json_time(s->last_paused));
        r |= api_json_set(o, "idle_timeout", json_integer(s->idle_timeout));
        r |= api_json_set(o, "error", api_json_string_or_null(s->error));
        r |= api_json_set(o, "accelerator", api_json_string_or_null(s->accel));
        r |= api_json_set(o, "accelerator_reason", api_json_string_or_null(s->accel_reason));
        r |= api_json_set(o, "network", json_null()); /* api_add_network fills it */
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

/* The labels column is JSON object text; anything else is reported as {}. */
static json_t *labels_json(const char *text)
{
        json_t *j = json_loads(text, 0, NULL);
        if (json_is_object(j))
                return j;
        json_decref(j);
        return json_object();
}

json_t *api_snapshot_json(const struct vmsnap_snapshot *s)
{
        json_t *o = json_object();
        if (!o)
                return NULL;
        int r = 0;
        r |= api_json_set(o, "id", json_string(s->id));
        r |= api_json_set(o, "name", api_json_string_or_null(s->name));
        r |= api_json_set(o, "kind", json_string(vmsnap_snapshot_kind_name(s->kind)));
        r |= api_json_set(o, "state", json_string(vmsnap_snapshot_state_name(s->state)));
        r |= api_json_set(o, "parent_id", api_json_string_or_null(s->parent_id));
        r |= api_json_set(o, "template_id", api_json_string_or_null(s->template_id));
        r |= api_json_set(o, "vmm", api_json_string_or_null(s->vmm));
        r |= api_json_set(o, "vmm_version", api_json_string_or_null(s->vmm_version));
        r |= api_json_set(o, "vcpus", json_integer(s->vcpus));
        r |= api_json_set(o, "memory_mib", json_integer((json_int_t)(s->memory >> 20)));
        r |= api_json_set(o, "generation", json_integer((json_int_t)s->generation));
        r |= api_json_set(o, "size_bytes", json_integer((json_int_t)s->size_bytes));
        r |= api_json_set(o, "created", api_json_time(s->created));
        r |= api_json_set(o, "last_accessed", api_json_time(s->last_accessed));
        r |= api_json_set(o, "description", api_json_string_or_null(s->description));
        r |= api_json_set(o, "labels", labels_json(s->labels));
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

json_t *api_exec_json(const struct vmsnap_exec_result *res)
{
        json_t *o = json_object();
        if (!o)
                return NULL;
        int r = 0;
        r |= api_json_set(o, "exit_code", json_integer(res->exit_code));
        r |= api_json_set(o, "signal", res->signal ? json_integer(res->signal) : json_null());
        r |= api_json_set(o, "timed_out", json_boolean(res->timed_out));
        r |= api_json_set(o, "stdout", vmsnap_json_bytes_lossy(res->out ? res->out : "",
                                                               res->out ? res->out_len : 0));
        r |= api_json_set(o, "stderr", vmsnap_json_bytes_lossy(res->err ? res->err : "",
                                                               res->err ? res->err_len : 0));
        r |= api_json_set(o, "truncated", json_boolean(res->truncated));
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int api_snapshot_add_usage(json_t *obj, const struct vmsnap_snapshot_usage *u)
{
        json_t *j = json_null();
        if (u)
                j = json_pack("{s:I, s:I, s:I, s:o, s:I}", "allocated_bytes",
                              (json_int_t)u->allocated, "shared_bytes", (json_int_t)u->shared,
                              "parent_shared_bytes", (json_int_t)u->parent_shared, "base_image",
                              api_json_string_or_null(u->base), "base_image_bytes",
                              (json_int_t)u->base_allocated);
        return api_json_set(obj, "usage", j) ? -ENOMEM : 0;
}

static json_t *files_json(const struct vmsnap_snapshot_file *files, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
                char hex[33];
                vmsnap_hash_format(&files[i].checksum, hex);
                json_t *f = json_pack("{s:o, s:I, s:s}", "name",
                                      vmsnap_json_string_lossy(files[i].name), "size",
                                      (json_int_t)files[i].size, "checksum", hex);
                if (!f || json_array_append_new(a, f) < 0) {
                        json_decref(a);
                        return NULL;
                }
        }
        return a;
}

static json_t *dependents_json(const struct vmsnap_dependent *deps, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
                json_t *x = json_pack("{s:o, s:o, s:o}", "kind",
                                      vmsnap_json_string_lossy(deps[i].kind), "id",
                                      vmsnap_json_string_lossy(deps[i].id), "label",
                                      api_json_string_or_null(deps[i].label));
                if (!x || json_array_append_new(a, x) < 0) {
                        json_decref(a);
                        return NULL;
                }
        }
        return a;
}

int api_snapshot_add_details(json_t *obj, const struct vmsnap_snapshot_file *files, size_t n_files,
                             const struct vmsnap_dependent *deps, size_t n_deps)
{
        int r = api_json_set(obj, "files", files_json(files, n_files));
        r |= api_json_set(obj, "dependents", dependents_json(deps, n_deps));
        return r ? -ENOMEM : 0;
}
