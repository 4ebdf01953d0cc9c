/* libvmsnap memory file: a snapshot's guest RAM as one read-only file `memory` in a FUSE
 * mount, for a VMM that maps a file (QEMU) and takes no page server. Each read resolves the
 * bytes through the generation chain and checks every block against the block-hash table,
 * like the page server; a lazy remote snapshot (`snapshot pull --to-dir`) fetches the
 * chunks under a read first, each checked against the manifest's SHA-256. A read that cannot
 * be served correctly fails with EIO (the VMM dies with SIGBUS); wrong bytes are never
 * returned. Every write is refused. docs/remote.md "Lazy restore for QEMU". */
#ifndef VMSNAP_MEMFS_H
#define VMSNAP_MEMFS_H

#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/remote.h>

#define VMSNAP_MEMFS_FILE "memory"    /* the memory file in the mount */
#define VMSNAP_MEMFS_STATUS "status"  /* one JSON object: the counters and the first error */
#define VMSNAP_MEMFS_MAX_READ (1u << 20) /* bytes per FUSE read request */
#define VMSNAP_MEMFS_READAHEAD_KB 4096u  /* the mount's read-ahead: one remote chunk */

struct vmsnap_memfs_opts {
        /* The snapshot directory was made by vmsnap_remote_pull_lazy: fetch its memory
         * chunks from this remote on read (NULL: a local snapshot). */
        const struct vmsnap_remote_config *remote_lazy;
        const char *chunk_cache;     /* with remote_lazy: the chunk cache directory, or NULL */
        uint64_t chunk_cache_size;   /* its limit (0: no cache) */
        /* Called (from any thread) with each read that failed; may be NULL. */
        void (*on_error)(void *ctx, const char *msg);
        void *ctx;
};

struct vmsnap_memfs_stats {
        uint64_t reads;           /* read requests of the memory file answered with data */
        uint64_t bytes;           /* bytes returned */
        uint64_t errors;          /* read requests answered EIO */
        uint64_t writes_refused;  /* write, truncate, fallocate, xattr or create attempts */
        uint64_t unverified;      /* data blocks returned without a hash (v1 snapshots) */
        uint64_t chunks_fetched;  /* lazy: chunks GOT from the remote */
        uint64_t chunks_cached;   /* lazy: chunks taken from the chunk cache */
};

struct vmsnap_memfs;

/* Opens the snapshot in snapdir (and its remote, o->remote_lazy) and mounts the memory file
 * system on mountpoint (an existing directory; allow_other, so jailed VMM uids can read).
 * Returns 0 and *ret, or -errno with d naming the directory and problem. */
int vmsnap_memfs_new(const char *snapdir, const char *mountpoint,
                     const struct vmsnap_memfs_opts *o, struct vmsnap_memfs **ret,
                     struct vmsnap_diag *d);

/* Serves requests until the mount is unmounted or SIGTERM/SIGINT/SIGHUP arrives (handlers
 * installed for the call). Returns 0, or -errno with d. */
int vmsnap_memfs_run(struct vmsnap_memfs *m, struct vmsnap_diag *d);

/* The counters so far; *ret_error (may be NULL) gets the first failure's message or "". */
void vmsnap_memfs_stats(struct vmsnap_memfs *m, struct vmsnap_memfs_stats *ret,
                        char ret_error[1024]);

/* The stats as one JSON object (malloc'd) with "error" (null or the first failure). */
int vmsnap_memfs_stats_json(struct vmsnap_memfs *m, char **ret);

/* Unmounts (when mounted) and frees everything; accepts NULL. */
void vmsnap_memfs_free(struct vmsnap_memfs *m);

#endif
