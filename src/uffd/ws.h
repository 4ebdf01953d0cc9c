/* The working set: which blocks a restored guest needed, in the order it first needed them.
 * Recorded while serving, saved as memfile.ws (docs/format.md "Working set"), and replayed
 * as bulk copies on the next restore. */
#ifndef VMSNAP_UFFD_WS_H
#define VMSNAP_UFFD_WS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/mem.h>

#define WS_MAGIC       "VMSNAPWS"
#define WS_VERSION     1u
#define WS_FIXED_SIZE  64u
#define WS_RUN_SIZE    16u
#define WS_TRAILER     16u
#define WS_MAX_RUNS    (1ull << 24)

struct ws_run {
        uint64_t first_block;
        uint64_t n_blocks;
};

/* A working set as a value: runs in replay order, no block in two runs. */
struct ws_set {
        uint64_t block_size;
        uint64_t size; /* bytes of the address space */
        struct vmsnap_uuid build_id;
        uint64_t n_blocks;
        size_t n_runs;
        struct ws_run *runs;
};

void ws_free(struct ws_set *ws);

/* Parses and fully validates memfile.ws bytes (name is used in messages). Returns 0 and *ret,
 * or -EBADMSG/-ENOMEM with d. */
int ws_parse(const uint8_t *buf, size_t len, const char *name, struct ws_set **ret,
             struct vmsnap_diag *d);

/* Serializes ws after checking it with the rules of ws_parse. Returns 0 with a malloc'd
 * buffer, or -EINVAL/-ENOMEM with d. */
int ws_serialize(const struct ws_set *ws, uint8_t **ret_buf, size_t *ret_len,
                 struct vmsnap_diag *d);

/* Loads dir/memfile.ws for a snapshot of `size` bytes cut in block_size blocks. Returns 0
 * and *ret, -ENOENT when there is none, -EBADMSG when it is invalid or was recorded for a
 * different geometry, or -errno (with d). */
int ws_load(const char *dir, uint64_t block_size, uint64_t size, struct ws_set **ret,
            struct vmsnap_diag *d);

/* Writes ws as dir/memfile.ws atomically. Returns 0 or -errno (with d). */
int ws_save(const char *dir, const struct ws_set *ws, struct vmsnap_diag *d);

/* Records first-touched blocks in order; thread-safe. */
struct ws_recorder {
        pthread_mutex_t mu;
        struct ws_set set;   /* runs recorded so far */
        size_t cap;
        uint64_t *seen;      /* bitmap over blocks */
};

/* Starts an empty recording for the geometry. Returns 0 or -ENOMEM. */
int ws_recorder_init(struct ws_recorder *rec, uint64_t block_size, uint64_t size,
                     const struct vmsnap_uuid *build_id);

/* Frees the recording; accepts a zeroed recorder. */
void ws_recorder_free(struct ws_recorder *rec);

/* Adds the blocks of [offset, offset + len) (address-space bytes) not recorded before, as
 * the next runs. Returns 0, or -ENOMEM / -E2BIG (run cap) — the recording stays valid. */
int ws_recorder_add(struct ws_recorder *rec, uint64_t offset, uint64_t len);

/* Copies the recording into a new set (for saving). Returns 0 or -ENOMEM. */
int ws_recorder_copy(struct ws_recorder *rec, struct ws_set **ret);

#endif
