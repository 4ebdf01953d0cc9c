/* Internals shared by the mem/ files: extent lists, hash tables, the build writer, the
 * commit of a generation. Not part of the public API. */
#ifndef VMSNAP_MEM_INTERNAL_H
#define VMSNAP_MEM_INTERNAL_H

#include <vmsnap/mem.h>

#include "util/prefault.h"
#include "util/aio.h"
#include "util/fs.h"

#include <sys/uio.h>

#define HEADER_V2_MAGIC   "VMSNAPMH"
#define HEADER_V2_FIXED   96u
#define HEADER_V2_BUILD   48u
#define HEADER_V2_EXTENT  32u
#define HEADER_TRAILER    16u
#define HASHES_MAGIC      "VMSNAPBH"
#define HASHES_FIXED      48u
#define SEED_BASE_NAME    "memfile"
#define IO_CHUNK          ((size_t)8 << 20) /* bytes per read/write in the data paths */
#define COPY_RANGE_MIN    ((uint64_t)1 << 20) /* runs at least this long move in-kernel */
#define REFLINK_MIN       ((uint64_t)1 << 20) /* merge shares runs at least this long */

/* ---- little-endian fields ---- */
static inline uint64_t get_le64(const uint8_t *p)
{
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}

static inline uint32_t get_le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++, v >>= 8)
                p[i] = (uint8_t)v;
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++, v >>= 8)
                p[i] = (uint8_t)v;
}

/* ---- extent lists (extents.c) ---- */
struct extent_list {
        struct vmsnap_mem_extent *v;
        uint64_t n, cap;
};

/* Appends an extent, joining it to the last one when both are ZERO or the same build with
 * contiguous storage (never across a storage gap). Returns 0 or -ENOMEM. */
int extents_emit(struct extent_list *l, uint64_t offset, uint64_t length, uint32_t build,
                 uint64_t storage_offset);

/* Makes room for n extents in one allocation, populated at once (a generation over a
 * parent has about the parent's count): no copies or faults while it grows. 0 or -ENOMEM. */
int extents_reserve(struct extent_list *l, uint64_t n);

/* Drops builds no extent references (keeping index `keep`), renumbering extents; updates
 * h->builds/n_builds in place. */
void header_drop_unused_builds(struct vmsnap_mem_header *h, uint32_t keep);

/* ---- header (header.c) ---- */

/* Parses the seed's v1 layout (header_v1.c). */
int header_parse_v1(const uint8_t *buf, size_t len, const char *name,
                    struct vmsnap_mem_header **ret, struct vmsnap_diag *d);

/* Parses the v2 layout (header_v2.c). */
int header_parse_v2(const uint8_t *buf, size_t len, const char *name,
                    struct vmsnap_mem_header **ret, struct vmsnap_diag *d);

/* UUID comparisons made while building or checking build tables (v1 parse, duplicate
 * check): the tests bound it to show those stay O(n log n) on hostile headers. */
extern uint64_t mem_build_id_compares;

/* Index of build `id` in h's table, or -1 (a linear search: for a few lookups only). */
int header_build_index(const struct vmsnap_mem_header *h, const struct vmsnap_uuid *id);

/* ---- block-hash tables (hashes.c) ---- */

/* The build checksum: XXH3-128 of the block hashes in storage order. */
void hashes_checksum(const struct vmsnap_hash *h, uint64_t n, struct vmsnap_hash *ret);

/* Loads and checks memfile.<id>.hashes (magic, version, block size, id, count, trailer).
 * Returns 0 and a malloc'd array, or -errno with d. */
int hashes_load(int dirfd, const struct vmsnap_uuid *id, uint64_t block_size, uint64_t count,
                struct vmsnap_hash **ret, struct vmsnap_diag *d);

/* Writes memfile.<id>.hashes durably (staged + renamed; the caller fsyncs the directory);
 * sync false: without its fsync (vmsnap_mem_opts.defer_sync). */
int hashes_write(int dirfd, const struct vmsnap_uuid *id, uint64_t block_size,
                 const struct vmsnap_hash *h, uint64_t n, bool sync, struct vmsnap_diag *d);

/* Name of the hash table of build id (64 bytes). */
void hashes_name(const struct vmsnap_uuid *id, char out[80]);

/* Hashes each block of buf (len a multiple of block_size) into out. */
void hashes_of_blocks(const uint8_t *buf, size_t len, uint64_t block_size,
                      struct vmsnap_hash *out);

/* Hashes every block of a diff file of `size` bytes into out; returns 0 or -errno
 * (-ENODATA when the file is shorter than size). */
int hash_diff_file(int fd, uint64_t size, uint64_t block_size, struct vmsnap_hash *out);

/* True when the block is all zero bytes (len a multiple of 32). */
bool block_is_zero(const uint8_t *p, size_t len);

/* ---- the open snapshot (snapshot.c) ---- */
struct vmsnap_mem_snapshot {
        char *dir;
        int dirfd;
        struct vmsnap_mem_header *h;
        int *fds;                    /* per build */
        char (*names)[64];           /* per build: the diff file's name in dir */
        struct vmsnap_hash **hashes; /* per build, NULL for v1 until computed */
        struct vmsnap_hash zero_hash;/* hash of one all-zero block */
};

/* Computes missing hash tables (v1 snapshots) and the build checksums by reading the diff
 * files. Returns 0 or -errno with d. */
int snapshot_compute_hashes(struct vmsnap_mem_snapshot *s, struct vmsnap_diag *d);

/* ---- writing a build (writer.c) ---- */

/* The writer thread writes one job while the caller fills the next: a job is a list of
 * buffers (gathered with pwritev), each either a copy in the writer's own buffer or a
 * reference to the caller's memory (no copy). */
#define WRITER_IOV 1024 /* buffers per job (IOV_MAX) */
struct build_writer {
        struct vmsnap_staged file;
        struct vmsnap_uuid id;
        uint64_t block_size;
        uint8_t *bufs[2];     /* copies: bufs[cur] belongs to the job being filled */
        size_t buf_len;       /* bytes used in bufs[cur] */
        struct iovec *iovs[2];/* the job being filled is iovs[cur][0..n_iov) */
        int n_iov, cur;
        size_t job_len;
        uint64_t jobs;        /* jobs handed to the writer thread so far */
        struct vmsnap_aio aio;
        bool direct;          /* O_DIRECT: durable writes skip the page cache */
        uint64_t size;        /* bytes in the diff file so far (written + queued) */
        uint64_t flushed;     /* bytes handed to the writer thread or copied */
        struct vmsnap_hash *hashes;
        uint64_t n_hashes, cap_hashes;
};

/* Starts memfile.<id> as a staged file in dirfd. */
int writer_open(struct build_writer *w, int dirfd, const struct vmsnap_uuid *id,
                uint64_t block_size, struct vmsnap_diag *d);

/* Appends a copy of whole blocks; hashes may be NULL (computed here). Returns 0 or -errno. */
int writer_append(struct build_writer *w, const uint8_t *blocks, size_t len,
                  const struct vmsnap_hash *hashes, struct vmsnap_diag *d);

/* Appends whole blocks by reference, without copying: the memory must stay unchanged until
 * the job holding it is written, i.e. until w->jobs has grown by 2 since this call, or
 * writer_sync/writer_finish returned. Blocks must be 4096-aligned in memory (O_DIRECT).
 * hashes may be NULL (computed here). Returns 0 or -errno. */
int writer_append_ref(struct build_writer *w, const uint8_t *blocks, size_t len,
                      const struct vmsnap_hash *hashes, struct vmsnap_diag *d);

/* Hands the job being filled to the writer thread (returns once the previous job is
 * written); afterwards, memory referenced before the previous writer_submit is free. */
int writer_submit(struct build_writer *w, struct vmsnap_diag *d);

/* Appends len bytes of fd@off by sharing their storage (FICLONERANGE: metadata only), with
 * their known block hashes. Returns 0, -EOPNOTSUPP (no diag) when the file system cannot
 * share them (no reflinks, another file system, misaligned): nothing was appended, or
 * -errno with d. */
int writer_clone(struct build_writer *w, int fd, uint64_t off, uint64_t len,
                const struct vmsnap_hash *hashes, struct vmsnap_diag *d);

/* Flushes, fsyncs and renames memfile.<id> into place, then writes its hash table; fills the
 * build-table entry. The caller fsyncs the directory. */
int writer_finish(struct build_writer *w, const char *op, struct vmsnap_mem_build *ret,
                  struct vmsnap_diag *d);

/* Releases the writer; an unfinished diff file (still a temp file) is unlinked. */
void writer_close(struct build_writer *w);

/* ---- committing a generation (commit.c) ---- */

/* Makes h the snapshot of dirfd: serializes it, renames it over memfile.header, fsyncs the
 * directory, then removes diff/hash files h no longer references and temp leftovers.
 * `op` names the crash points. *ret_renamed tells whether the header was renamed into place
 * (then the new files are referenced, even when a later step failed). drop_seed_name: the
 * header replaced was a seed (v1) header of this directory, so its "memfile" is ours to
 * remove. sync false: no fsync of the header or the directory (vmsnap_mem_opts.defer_sync).
 * Returns 0 or -errno. */
int commit_header(int dirfd, const char *dir, const struct vmsnap_mem_header *h,
                  const char *op, bool drop_seed_name, bool sync, bool *ret_renamed,
                  struct vmsnap_diag *d);

/* Takes the per-directory write lock (flock on the dir fd); -EBUSY when held elsewhere. */
int lock_snapdir(int dirfd, const char *dir, struct vmsnap_diag *d);

/* Opens (creating when missing) a snapshot directory for writing; returns the fd or -errno. */
int open_snapdir_for_write(const char *dir, struct vmsnap_diag *d);

/* ---- reading extents in address order (stream.c) ---- */

/* Forward-only window over one build's diff file, refilled in large reads. */
struct build_stream {
        int fd;
        uint8_t *win;
        uint64_t win_off;
        size_t win_len, cap;
};

/* Window size for one of n_builds streams: large enough for few reads, 64 MiB in all. */
size_t stream_window_size(uint32_t n_builds, uint64_t block_size);

int stream_init(struct build_stream *st, int fd, size_t cap);
void stream_free(struct build_stream *st);

/* Returns a pointer to len bytes (len <= cap) at off, reading ahead; NULL with *err set. */
const uint8_t *stream_get(struct build_stream *st, uint64_t off, size_t len, int *err);

#endif

#ifndef VMSNAP_MEM_INTERNAL_GEN
#define VMSNAP_MEM_INTERNAL_GEN
/* ---- scanning a memory file (scan.c) ---- */

/* Visitors for scan_memfile: `hole` gets block-aligned ranges that are holes in the file
 * (they read as zeros); `data` gets block-aligned chunks of at most IO_CHUNK bytes, in one of
 * two buffers used in turn. `done` (may be NULL) is called when a buffer is full and at the
 * end: data may keep pointing into the buffer until the `done` after next, so a visitor
 * that hands blocks to the writer by reference submits the writer's job there
 * (writer_submit returns once the previous job is written). */
struct scan_visitor {
        int (*hole)(void *ctx, uint64_t offset, uint64_t len, struct vmsnap_diag *d);
        int (*data)(void *ctx, uint64_t offset, const uint8_t *buf, size_t len,
                    struct vmsnap_diag *d);
        int (*done)(void *ctx, struct vmsnap_diag *d);
        void *ctx;
};

/* Walks [0, size) of fd in address order: every hole (SEEK_DATA/SEEK_HOLE, looked up once
 * per data region) goes to `hole` -- in a Firecracker Diff file a hole means "unchanged", in
 * a full memory file it reads as zeros -- and the data regions are read in large reads
 * (nearby short regions packed into one pread, the short holes between them read through
 * but still reported as holes). Returns 0, a visitor's error, or -errno. */
int scan_memfile(int fd, const char *path, uint64_t size, uint64_t block_size,
                 const struct scan_visitor *v, struct vmsnap_diag *d);

#define SCAN_PAGE 4096u /* the page of scan_listed_pages' bitmap */

#define LISTED_CHUNK ((size_t)256 << 10) /* scan_listed_pages' one read buffer */

/* Like scan_memfile, but reads only the blocks with a page (SCAN_PAGE bytes) set in `pages`
 * (one bit per page of the file, LSB first); every run of other blocks goes to `hole`. One
 * buffer, reused: `data` must copy what it keeps (gen_add_data_copy); `done` is called only
 * twice at the end. Returns 0, a visitor's error, or -errno. */
int scan_listed_pages(int fd, const char *path, uint64_t size, uint64_t block_size,
                      const uint8_t *pages, const struct scan_visitor *v, struct vmsnap_diag *d);

/* Opens a memory file for reading and checks its size (process.c); returns the fd or -errno. */
int open_memfile(const char *path, uint64_t block_size, uint64_t *ret_size,
                 struct vmsnap_diag *d);

/* ---- building a generation (gen.c) ---- */
struct gen_builder {
        int dirfd;
        const char *dir;
        struct vmsnap_mem_header h; /* the header being built; extents live in `ext` */
        struct extent_list ext;
        struct build_writer w;
        uint32_t new_build;         /* index of the build this generation writes */
        bool committed;             /* the header naming the new build is in place */
        bool drop_seed_name;        /* replaces a v1 header in place: "memfile" goes too */
        bool nosync;                /* vmsnap_mem_opts.defer_sync, set after gen_begin */
        struct vmsnap_mem_result *res;
};

/* Starts a generation in dirfd: a new build id, the staged diff file, and a build table
 * made of the parent's builds (may be NULL) followed by the new one. */
int gen_begin(struct gen_builder *g, int dirfd, const char *dir, uint64_t block_size,
              uint64_t size, const struct vmsnap_mem_header *parent,
              struct vmsnap_mem_result *res, struct vmsnap_diag *d);

/* Stores one block of new data at offset (hash may be NULL: computed). The block is written
 * by reference: it must stay unchanged until gen_flush has been called twice more. */
int gen_add_data(struct gen_builder *g, uint64_t offset, const uint8_t *block,
                 const struct vmsnap_hash *hash, struct vmsnap_diag *d);

/* gen_add_data of a block the caller reuses at once: the writer copies it. */
int gen_add_data_copy(struct gen_builder *g, uint64_t offset, const uint8_t *block,
                      const struct vmsnap_hash *hash, struct vmsnap_diag *d);

/* Hands the blocks added so far to the writer thread; returns once the blocks added before
 * the previous gen_flush are written (a scan_visitor `done`). */
int gen_flush(struct gen_builder *g, struct vmsnap_diag *d);

/* Maps [offset, offset+len) to zeros. */
int gen_add_zero(struct gen_builder *g, uint64_t offset, uint64_t len, struct vmsnap_diag *d);

/* Maps [offset, offset+len) to whatever the parent maps there (clipping its extents);
 * *cursor is a monotonic index into the parent's extents. */
int gen_add_parent(struct gen_builder *g, const struct vmsnap_mem_header *parent,
                   uint64_t *cursor, uint64_t offset, uint64_t len, struct vmsnap_diag *d);

/* Finishes the diff file, brings in the parent's files still referenced (from the open
 * parent snapshot, may be NULL), and commits the header. `op` names the crash points. */
int gen_commit(struct gen_builder *g, struct vmsnap_mem_snapshot *parent, const char *op,
               struct vmsnap_diag *d);

/* Releases everything; an uncommitted generation leaves no new file behind. */
void gen_free(struct gen_builder *g);
#endif
