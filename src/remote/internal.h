/* Shared by the files of src/remote/: the handle, staging directories, hashing. */
#ifndef VMSNAP_REMOTE_INTERNAL_H
#define VMSNAP_REMOTE_INTERNAL_H

#include "remote/s3.h"

#include <vmsnap/remote.h>

struct vmsnap_remote {
        struct s3 *s3;
        vmsnap_progress_fn progress; /* push/pull: chunk bytes moved, of the total to move */
        void *progress_ctx;
        uint64_t cache_size; /* pull: limit of <root>/chunk-cache; 0 = no cache */
};

/* Reports progress to r's callback, if any. */
void remote_progress(const struct vmsnap_remote *r, uint64_t done, uint64_t total);

#define MANIFEST_PREFIX "manifests/"
#define CHUNK_PREFIX    "chunks/"

/* A private staging directory <root>/remote/staging/<pid>.<n>/, held under flock for its
 * life; stale ones (nobody holds their lock) are removed when a new one is made. */
struct staging {
        char path[4096];
        int fd; /* holds the lock */
};

/* Makes and locks a new staging directory. Returns 0 or -errno with d. */
int staging_new(struct vmsnap_store *s, struct staging *ret, struct vmsnap_diag *d);

/* Removes the staging directory and its contents; accepts a zeroed one. */
void staging_done(struct staging *st);

/* SHA-256 of len bytes. */
void remote_sha256(const void *buf, size_t len, uint8_t out[32]);

/* True when len bytes are all zero. */
bool remote_is_zero(const void *buf, size_t len);

/* "manifests/<id>.json" into out. */
void remote_manifest_key(const char *id, char out[S3_KEY_MAX]);

/* GETs and parses the manifest of id. Returns 0 and *ret, or -errno (-ENOENT: none). */
int remote_manifest_get(struct vmsnap_remote *r, const char *id, struct vmsnap_remote_manifest *ret,
                        uint64_t *retries, struct vmsnap_diag *d);

#endif
