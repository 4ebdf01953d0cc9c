/* libvmsnap chunk cache: verified remote chunks kept on the host, named by their SHA-256,
 * bounded in size (LRU by last use), checked again on every read, one fetch of a chunk at a
 * time across threads and processes. Design: docs/remote.md "The local chunk cache". */
#ifndef VMSNAP_CHUNK_CACHE_H
#define VMSNAP_CHUNK_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>

#define VMSNAP_CHUNK_CACHE_DEFAULT_SIZE (8ull << 30)

struct vmsnap_chunk_cache;

struct vmsnap_chunk_cache_stats {
        uint64_t hits;    /* chunks read and verified */
        uint64_t misses;  /* not there (or corrupt) */
        uint64_t corrupt; /* files whose length or SHA-256 did not match their name: removed */
        uint64_t stored;  /* chunks put */
        uint64_t evicted; /* files removed to stay under the limit */
};

/* Opens (creating, mode 0700) the cache directory dir with a limit of max_bytes (> 0);
 * removes temp files left by dead writers. One handle per thread that claims chunks.
 * Returns 0 and *ret, or -errno with d naming dir. */
int vmsnap_chunk_cache_open(const char *dir, uint64_t max_bytes, struct vmsnap_chunk_cache **ret,
                            struct vmsnap_diag *d);

/* Closes c (its claims end); accepts NULL. */
void vmsnap_chunk_cache_close(struct vmsnap_chunk_cache *c);

/* Reads the chunk sha256 of len bytes into buf, only if the file's length and SHA-256 match
 * (a mismatching file is removed and counted corrupt); marks it used. Returns 1 (buf
 * filled), 0 (not cached), or -errno (I/O) with d. */
int vmsnap_chunk_cache_get(struct vmsnap_chunk_cache *c, const uint8_t sha256[32], void *buf,
                           size_t len, struct vmsnap_diag *d);

/* Stores len bytes of buf as chunk sha256 after checking that they hash to it (-EBADMSG
 * otherwise): temp file, fsync, rename, fsync dir; then evicts the least recently used
 * chunks while the cache is over its limit. Returns 0 or -errno with d. */
int vmsnap_chunk_cache_put(struct vmsnap_chunk_cache *c, const uint8_t sha256[32], const void *buf,
                           size_t len, struct vmsnap_diag *d);

/* Claims the fetch of chunk sha256 (single-flight): returns 1 when claimed, 0 when another
 * handle holds it and wait is false, or -errno. wait blocks until the holder releases. */
int vmsnap_chunk_cache_claim(struct vmsnap_chunk_cache *c, const uint8_t sha256[32], bool wait);

/* Releases a claim of this handle on sha256. */
void vmsnap_chunk_cache_release(struct vmsnap_chunk_cache *c, const uint8_t sha256[32]);

/* Counters of this handle. */
struct vmsnap_chunk_cache_stats vmsnap_chunk_cache_stats(const struct vmsnap_chunk_cache *c);

/* Parses a size limit: bytes, a K/M/G suffix allowed (0 = no cache). Returns 0 and *ret,
 * or -EINVAL. */
int vmsnap_chunk_cache_parse_size(const char *s, uint64_t *ret);

/* The size limit: VMSNAP_CHUNK_CACHE_SIZE (bytes, a K/M/G suffix allowed; 0 = no cache)
 * when set, else the default. Returns 0 and *ret, or -EINVAL for a bad value. */
int vmsnap_chunk_cache_size_from_env(uint64_t *ret);

#endif
