/* Routes for files in a sandbox (docs/api.md, Files): read, write (an upload), remove, stat,
 * list, and tar archives out of and into the guest (what `vmsnap sandbox cp` uses). */
#ifndef VMSNAP_API_FILES_H
#define VMSNAP_API_FILES_H

#include "api/reply.h"
#include "api/stream.h"

void api_file_read(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_file_write(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_file_remove(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_file_stat(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_file_list(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_archive_get(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_archive_put(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

/* Opens what an upload route's body goes to (a guest file, the guest's tar), at the request's
 * headers. Returns 0 with u's data/free/ctx set, or -1 with rep set to the refusal. */
int api_files_upload_open(struct api_server *srv, enum api_route r, const char *ref,
                          const char *(*query)(void *ctx, const char *key), void *query_ctx,
                          struct api_upload *u, struct api_reply *rep);

#endif
