/* A brute-force model of guest memory for the mem tests: a plain byte array, plus helpers
 * that write it out as the memory files a VMM would produce and compare a snapshot to it. */
#ifndef VMSNAP_TEST_MEMMODEL_H
#define VMSNAP_TEST_MEMMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct memmodel {
        uint64_t block_size;
        uint64_t blocks;
        uint8_t *bytes;  /* blocks * block_size */
        bool *dirty;     /* blocks written since the last snapshot */
};

/* Allocates a model of `blocks` blocks, all zero. */
void memmodel_init(struct memmodel *m, uint64_t block_size, uint64_t blocks);
void memmodel_free(struct memmodel *m);
void memmodel_copy(struct memmodel *dst, const struct memmodel *src);

/* Random initial content: each block zero, random, or almost-zero (one byte set). */
void memmodel_randomize(struct memmodel *m, uint64_t *rng);

/* Random guest writes: new data, all zeros, a one-byte change, or a rewrite of the same
 * bytes; marks the blocks dirty. */
void memmodel_mutate(struct memmodel *m, uint64_t *rng, unsigned writes);

/* Writes the whole memory as a full file (some zero blocks left as holes). */
void memmodel_write_full(const struct memmodel *m, const char *path, uint64_t *rng);

/* Writes a Firecracker-style Diff file: dirty blocks as data, everything else a hole. */
void memmodel_write_sparse(const struct memmodel *m, const char *path);

/* Clears the dirty marks (a snapshot was taken). */
void memmodel_clean(struct memmodel *m);

/* True when the snapshot in dir reads back exactly as the model (vmsnap_mem_read, plus
 * vmsnap_mem_locate + hash checks on each block). Prints the first difference. */
bool memmodel_matches(const struct memmodel *m, const char *dir);

#endif
