/* The JSON shapes of vmsnapd's resources: sandbox, snapshot, exec result. docs/openapi.yaml
 * describes the same fields; change both together. */
#ifndef VMSNAP_API_MODEL_H
#define VMSNAP_API_MODEL_H

#include <jansson.h>
#include <stddef.h>

#include <vmsnap/sandbox.h>
#include <vmsnap/store.h>

/* Each returns a new object, or NULL when out of memory. */
json_t *api_sandbox_json(const struct vmsnap_sandbox *s);
json_t *api_snapshot_json(const struct vmsnap_snapshot *s);

/* Sets obj's "usage" to u as a Usage object (docs/api.md), or to null when u is NULL (it
 * could not be measured). Returns 0 or -ENOMEM. */
int api_snapshot_add_usage(json_t *obj, const struct vmsnap_snapshot_usage *u);
json_t *api_exec_json(const struct vmsnap_exec_result *r);

/* The files and dependents of a snapshot, for GET /v1/snapshots/{ref} (added to obj). */
int api_snapshot_add_details(json_t *obj, const struct vmsnap_snapshot_file *files, size_t n_files,
                             const struct vmsnap_dependent *deps, size_t n_deps);

#endif
