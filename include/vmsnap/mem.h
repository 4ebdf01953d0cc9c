/* libvmsnap memory snapshots: the block-mapping header, generational diff files, merge,
 * materialize, verify, and random-access reads for the lazy-restore page server.
 * Byte layouts: docs/format.md. */
#ifndef VMSNAP_MEM_H
#define VMSNAP_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>

struct vmsnap_uuid {
        uint8_t b[16]; /* RFC 4122 byte order */
};

struct vmsnap_hash {
        uint8_t b[16]; /* XXH3-128, canonical (big-endian) order */
};

/* ---- the header (a value: plain structs, owned arrays) ---------------------------------- */

#define VMSNAP_MEM_ZERO          UINT32_MAX /* extent build index: reads as zeros, no storage */
#define VMSNAP_MEM_VERSION       2u
#define VMSNAP_MEM_MAX_BUILDS    4096u
#define VMSNAP_MEM_MAX_EXTENTS   (1ull << 24)
#define VMSNAP_MEM_MAX_SIZE      (1ull << 44) /* 16 TiB of guest memory */
#define VMSNAP_MEM_DEFAULT_CAP   8u           /* generations before an automatic merge */
#define VMSNAP_MEM_HEADER_NAME   "memfile.header"

struct vmsnap_mem_extent {
        uint64_t offset;         /* start in the address space, block-aligned */
        uint64_t length;         /* bytes, a non-zero multiple of the block size */
        uint32_t build;          /* index into the build table, or VMSNAP_MEM_ZERO */
        uint64_t storage_offset; /* where `offset` lives in that build's diff file */
};

struct vmsnap_mem_build {
        struct vmsnap_uuid id;
        uint64_t file_size;          /* bytes of memfile.<id> */
        struct vmsnap_hash checksum; /* XXH3-128 of memfile.<id> (v2 only) */
};

struct vmsnap_mem_header {
        uint32_t version; /* 1 (seed format, read only) or 2 */
        uint64_t block_size;
        uint64_t size; /* bytes of guest memory (the address space) */
        uint64_t generation;
        struct vmsnap_uuid build_id;      /* the build this generation wrote */
        struct vmsnap_uuid base_build_id; /* generation 0 of the chain */
        uint32_t n_builds;
        struct vmsnap_mem_build *builds;
        uint64_t n_extents;
        struct vmsnap_mem_extent *extents;
};

/* Frees a header and its arrays; accepts NULL. */
void vmsnap_mem_header_free(struct vmsnap_mem_header *h);

/* Parses a v2 or v1 header from buf (name is used in messages). Checks the structure
 * (magic, version, checksum, sorted, contiguous, full coverage, alignment, caps, known
 * builds, storage within each build's recorded size). For v1 the build table is derived
 * from the extents with file_size = UINT64_MAX (unknown until the files are opened).
 * Returns 0 and *ret, or -EBADMSG/-EINVAL/-ENOMEM with d naming the problem. */
int vmsnap_mem_header_parse(const uint8_t *buf, size_t len, const char *name,
                            struct vmsnap_mem_header **ret, struct vmsnap_diag *d);

/* Checks a header against every rule that parse enforces; returns 0 or -EBADMSG (with d). */
int vmsnap_mem_header_validate(const struct vmsnap_mem_header *h, const char *name,
                               struct vmsnap_diag *d);

/* Serializes h as v2 after validating it; returns 0 with a malloc'd buffer, or -errno. */
int vmsnap_mem_header_serialize(const struct vmsnap_mem_header *h, uint8_t **ret_buf,
                                size_t *ret_len, struct vmsnap_diag *d);

/* Index of the extent that contains offset (binary search); offset must be < h->size. */
uint64_t vmsnap_mem_header_find(const struct vmsnap_mem_header *h, uint64_t offset);

/* File name of build i's diff file in a snapshot directory ("memfile.<uuid>", or the seed's
 * "memfile" for a v1 base build stored under that name). Writes into out (64 bytes). */
void vmsnap_mem_diff_name(const struct vmsnap_uuid *id, char out[64]);

/* ---- an open snapshot (opaque handle) --------------------------------------------------- */

struct vmsnap_mem_snapshot;

/* Opens the snapshot in dir: loads and validates the header, opens every diff file and
 * checks its size against the header, loads the block-hash tables (v2). Does not read the
 * data (see vmsnap_mem_verify). Returns 0 and *ret, or -errno with d naming file and problem. */
int vmsnap_mem_open(const char *dir, struct vmsnap_mem_snapshot **ret, struct vmsnap_diag *d);

/* Closes the snapshot and every fd it holds; accepts NULL. */
void vmsnap_mem_close(struct vmsnap_mem_snapshot *s);

/* The header of an open snapshot (owned by the snapshot). */
const struct vmsnap_mem_header *vmsnap_mem_header(const struct vmsnap_mem_snapshot *s);

/* Where the bytes at one offset live. */
struct vmsnap_mem_location {
        bool zero;               /* reads as zeros; fd/storage_offset unused */
        int fd;                  /* diff file (owned by the snapshot), -1 when zero */
        uint64_t storage_offset; /* offset in fd of the requested address */
        uint64_t run;            /* bytes from the address to the end of this extent */
        const struct vmsnap_hash *hashes; /* hash of the block holding the address, then the
                                             next blocks of the run; NULL when zero or when
                                             the snapshot has no hash tables (v1) */
};

/* Resolves an address (< size) to its storage; O(log extents). Returns 0 or -EINVAL. */
int vmsnap_mem_locate(const struct vmsnap_mem_snapshot *s, uint64_t offset,
                      struct vmsnap_mem_location *ret);

/* Reads len bytes of guest memory at offset (any alignment) into buf. Returns 0 or -errno. */
int vmsnap_mem_read(const struct vmsnap_mem_snapshot *s, uint64_t offset, void *buf,
                    size_t len, struct vmsnap_diag *d);

/* True when data (one block) matches the recorded hash `expected`. */
bool vmsnap_mem_block_ok(const struct vmsnap_mem_snapshot *s, const void *data,
                         const struct vmsnap_hash *expected);

/* ---- operations on snapshot directories -------------------------------------------------- */

enum vmsnap_mem_source {
        VMSNAP_MEM_SOURCE_CONTENT, /* full memory file: changed blocks found by hash (QEMU, FC Full) */
        VMSNAP_MEM_SOURCE_SPARSE,  /* Firecracker Diff file: data regions changed, holes unchanged */
};

struct vmsnap_mem_opts {
        uint64_t block_size;            /* process: 4096 (default when 0) or 2 MiB */
        enum vmsnap_mem_source source;  /* diff only */
        unsigned merge_cap;             /* diff: merge when generation reaches this; 0 = 8 */
        /* process, and diff into a directory other than the parent's: no fsync of the new
         * files or of snapdir. Only for a directory nothing names yet whose owner fsyncs
         * every file and the directory before it does (a pending store snapshot: the
         * store's commit). A merge at the cap keeps its own fsyncs. */
        bool defer_sync;
};

struct vmsnap_mem_result {
        uint64_t generation;
        struct vmsnap_uuid build_id;
        uint64_t bytes_scanned;  /* bytes of the input examined (holes skipped) */
        uint64_t bytes_written;  /* data bytes written to new diff files */
        uint64_t data_blocks;    /* blocks stored by this step */
        uint64_t zero_blocks;    /* blocks that became (or stayed) ZERO by this step */
        uint64_t same_blocks;    /* blocks left pointing at the parent */
        bool merged;             /* diff: the generation cap triggered a merge */
};

/* Turns a full memory file into generation 0 in snapdir (created when missing; it must not
 * already hold a snapshot). Returns 0 or -errno (with d); on failure snapdir holds no header. */
int vmsnap_mem_process(const char *memfile, const char *snapdir,
                       const struct vmsnap_mem_opts *opts, struct vmsnap_mem_result *ret,
                       struct vmsnap_diag *d);

/* Writes the next generation over the snapshot in parentdir into snapdir (which may be
 * parentdir itself). Parent files are brought in by hard link (reflink or copy across
 * filesystems) and never modified. The previous generation stays readable until the new
 * header is durable. Returns 0 or -errno (with d). */
int vmsnap_mem_diff(const char *memfile, const char *snapdir, const char *parentdir,
                    const struct vmsnap_mem_opts *opts, struct vmsnap_mem_result *ret,
                    struct vmsnap_diag *d);

/* vmsnap_mem_diff of a full memory file (opts->source is ignored) that reads only the
 * blocks with a 4096-byte page set in `pages` (one bit per page of memfile, LSB first, at
 * least size/4096 bits) and compares them with the parent's block hashes; every other block
 * is taken to be the parent's. The caller vouches that no other page changed (a VMM's page
 * table: docs/sandbox.md). Returns 0 or -errno (with d). */
int vmsnap_mem_diff_pages(const char *memfile, const uint8_t *pages, const char *snapdir,
                          const char *parentdir, const struct vmsnap_mem_opts *opts,
                          struct vmsnap_mem_result *ret, struct vmsnap_diag *d);

/* Collapses the chain in snapdir into one diff file and a generation-0 header, in place and
 * crash-safe. Returns 0 or -errno (with d). */
int vmsnap_mem_merge(const char *snapdir, struct vmsnap_mem_result *ret,
                     struct vmsnap_diag *d);

/* Writes the whole guest memory to outfile (sparse: zero extents are holes), atomically.
 * Returns 0 or -errno (with d). */
int vmsnap_mem_materialize(const char *snapdir, const char *outfile,
                           struct vmsnap_mem_result *ret, struct vmsnap_diag *d);

/* Called once per problem found by verify. */
typedef void (*vmsnap_mem_problem_fn)(void *ctx, const char *problem);

/* Checks a whole snapshot: header structure, every diff file's size and checksum, every
 * block hash. Reports each problem through fn (may be NULL). Returns 0 when sound,
 * -EBADMSG when any problem was found (d holds the first), or another -errno. */
int vmsnap_mem_verify(const char *snapdir, vmsnap_mem_problem_fn fn, void *ctx,
                      struct vmsnap_diag *d);

/* Lists the files that make up the snapshot in snapdir (header, diff files, hash tables),
 * as a NULL-terminated malloc'd array of malloc'd names. Returns 0 or -errno (with d). */
int vmsnap_mem_files(const char *snapdir, char ***ret_names, struct vmsnap_diag *d);

/* Frees a list from vmsnap_mem_files; accepts NULL. */
void vmsnap_mem_files_free(char **names);

#endif
