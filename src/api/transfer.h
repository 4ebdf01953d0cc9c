/* Snapshots in and out through the API (docs/api.md "Export and import"): GET
 * /v1/snapshots/{ref}/export streams an export; POST /v1/snapshots with an archive as the
 * body imports it. Both run the store's export/import in a thread of their own on a store
 * connection of their own, joined to the HTTP side by a pipe. */
#ifndef VMSNAP_API_TRANSFER_H
#define VMSNAP_API_TRANSFER_H

#include <stdbool.h>

#include "api/reply.h"
#include "api/server.h"
#include "api/stream.h"

/* GET /v1/snapshots/{ref}/export[?compression=zstd|gzip|none]: 200 with the stream. */
void api_snapshot_export(struct api_server *srv, const struct api_call *call,
                         struct api_reply *rep);

/* True when a POST /v1/snapshots with this Content-Type is an archive upload (an import),
 * not a JSON body. */
bool api_import_upload_type(const char *content_type);

/* At the headers of an import upload: opens the import (its thread, its store). Returns 0,
 * or -errno with rep set. */
int api_import_upload_open(struct api_server *srv,
                           const char *(*query)(void *ctx, const char *key), void *query_ctx,
                           struct api_upload *u, struct api_reply *rep);

/* After the body of an import upload: waits for the import; 201 Snapshot or its error. */
void api_import_upload_finish(struct api_server *srv, const struct api_call *call,
                              struct api_reply *rep);

#endif
