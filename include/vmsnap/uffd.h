/* libvmsnap lazy restore: the userfaultfd page server. A VMM (Firecracker's UFFD backend, or
 * anything speaking its protocol) connects to a Unix socket, sends its guest-memory regions
 * as JSON with the userfaultfd attached, and the server installs each page from the snapshot
 * the first time the guest touches it. Design and protocol: docs/uffd.md; the working-set
 * file (memfile.ws): docs/format.md. */
#ifndef VMSNAP_UFFD_H
#define VMSNAP_UFFD_H

#include <stdbool.h>
#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/remote.h>

#define VMSNAP_UFFD_WS_NAME                   "memfile.ws"
#define VMSNAP_UFFD_DEFAULT_FAULT_AROUND      (64u << 10)
#define VMSNAP_UFFD_MAX_FAULT_AROUND          (64u << 20)
#define VMSNAP_UFFD_DEFAULT_ACCEPT_TIMEOUT_MS 10000
#define VMSNAP_UFFD_DEFAULT_WORKERS           2u
#define VMSNAP_UFFD_MAX_WORKERS               64u

/* Severity of a note the server passes to its owner (the library itself does not log). */
enum vmsnap_uffd_note {
        VMSNAP_UFFD_NOTE_INFO,
        VMSNAP_UFFD_NOTE_WARN,
        VMSNAP_UFFD_NOTE_ERROR,
};

/* Called from server threads (one call at a time) with a one-line message. */
typedef void (*vmsnap_uffd_note_fn)(void *ctx, enum vmsnap_uffd_note level, const char *msg);

struct vmsnap_uffd_opts {
        uint64_t fault_around;  /* bytes installed around a fault: a power of two >= 4096,
                                   <= 64 MiB; 0 = 64 KiB; raised to the page/block size */
        unsigned workers;       /* installer threads; 0 = 2 */
        int accept_timeout_ms;  /* wait for the VMM's handshake; 0 = 10 s; < 0 = forever */
        bool ws_record;         /* record the working set (vmsnap_uffd_server_save_ws) */
        bool no_ws_replay;      /* do not replay the snapshot's memfile.ws */
        bool prefetch;          /* after the working set, install every other data block in
                                   the background (zero blocks stay on demand) */
        vmsnap_uffd_note_fn note; /* may be NULL */
        void *note_ctx;
        /* Lazy restore from a remote (docs/remote.md "Lazy restore"): non-NULL when snapdir
         * was made by vmsnap_remote_pull_lazy; its memory chunks are fetched on fault,
         * through the chunk cache chunk_cache (NULL or a size of 0: none). */
        const struct vmsnap_remote_config *remote_lazy;
        const char *chunk_cache;
        uint64_t chunk_cache_size;
};

struct vmsnap_uffd_stats {
        bool connected;            /* a VMM completed the handshake */
        int32_t peer_pid;          /* its pid (SO_PEERCRED), 0 before */
        uint32_t regions;
        uint64_t faults;           /* fault messages served by installing pages */
        uint64_t fault_dups;       /* fault messages for pages already being installed */
        uint64_t fault_present;    /* fault messages for pages already installed (woken) */
        uint64_t fault_pages;      /* pages installed for faults (fault-around included) */
        uint64_t ws_pages;         /* pages installed by working-set replay */
        uint64_t prefetched_pages; /* pages installed ahead of faults (replay + prefetch) */
        uint64_t zero_pages;       /* pages installed as zeros (of all the above) */
        uint64_t bytes;            /* bytes installed (data and zeros) */
        uint64_t removed_pages;    /* pages the VMM dropped (REMOVE events) */
        uint64_t eagain_retries;   /* installs deferred by EAGAIN and retried */
        uint64_t eexist;           /* installs that found the page already there */
        uint64_t unverified_blocks;/* data blocks served without a hash (v1 snapshots) */
        uint64_t fault_p50_ns;     /* fault service latency, read to install (±7 %) */
        uint64_t fault_p99_ns;
        uint64_t fault_max_ns;
        uint64_t ws_blocks;        /* blocks in the loaded working set (0 = none) */
        bool ws_done;              /* working-set replay finished (or there was none) */
        bool prefetch_done;        /* background prefetch finished (or not requested) */
        uint64_t remote_chunks_fetched; /* lazy restore: chunks GOT from the remote */
        uint64_t remote_chunks_cached;  /* lazy restore: chunks read from the chunk cache */
};

struct vmsnap_uffd_server;

/* Opens the snapshot in snapdir, loads its working set (unless opts->no_ws_replay) and
 * listens on socket_path (a stale socket there is replaced). opts may be NULL. Returns 0 and
 * *ret, or -errno with d naming the file and the problem. */
int vmsnap_uffd_server_new(const char *snapdir, const char *socket_path,
                           const struct vmsnap_uffd_opts *opts,
                           struct vmsnap_uffd_server **ret, struct vmsnap_diag *d);

/* Accepts the VMM's handshake, replays the working set, serves faults and control requests
 * until the VMM exits or vmsnap_uffd_server_stop() is called; stops every thread before
 * returning. Call once per server. Returns 0 after a clean end, -ETIMEDOUT when no VMM
 * connected in time, -ECANCELED when stopped before one did, or -errno (-EBADMSG for a
 * corrupt block, -EPROTO for a bad handshake or event) after killing the VMM. */
int vmsnap_uffd_server_run(struct vmsnap_uffd_server *s, struct vmsnap_diag *d);

/* Asks run() to finish; async-signal-safe and callable from any thread, also before run(). */
void vmsnap_uffd_server_stop(struct vmsnap_uffd_server *s);

/* Copies the current counters (consistent per field, not across fields); thread-safe. */
void vmsnap_uffd_server_stats(const struct vmsnap_uffd_server *s, struct vmsnap_uffd_stats *ret);

/* Formats stats as one line of JSON (malloc'd). Returns 0 or -ENOMEM. */
int vmsnap_uffd_stats_json(const struct vmsnap_uffd_stats *st, char **ret_json);

/* Writes the recorded working set as dir/memfile.ws, atomically (dir NULL = the snapshot
 * directory). Needs opts.ws_record. Thread-safe. Returns 0 or -errno (with d). */
int vmsnap_uffd_server_save_ws(struct vmsnap_uffd_server *s, const char *dir,
                               struct vmsnap_diag *d);

/* Frees the server: closes the snapshot and the listening socket and removes the socket
 * file. Must not race with run(); accepts NULL. */
void vmsnap_uffd_server_free(struct vmsnap_uffd_server *s);

#endif
