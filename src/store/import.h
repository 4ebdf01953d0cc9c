/* Internals of import (import.c: the steps both sources share and directory imports;
 * import-tar.c: tar streams; import-base.c: the base image an archive carries;
 * import-lineage.c: which parent/template links an import keeps). Rules: docs/store.md. */
#ifndef VMSNAP_STORE_IMPORT_H
#define VMSNAP_STORE_IMPORT_H

#include "store/internal.h"
#include "util/fs.h"

#include <vmsnap/disk.h>

#define REFUSE(d, ...) vmsnap_diag(d, -EBADMSG, "refusing the import: " __VA_ARGS__)
#define IMPORT_NOTES_MAX 8

/* The base image an archive delivers, staged in <root>/images until the commit. */
struct import_base {
        char name[VMSNAP_BASE_NAME_LEN + 1]; /* "" = none delivered */
        bool present;                        /* already pinned here: nothing staged */
        bool staged;                         /* s holds the delivered bytes, checked */
        struct vmsnap_staged s;
};

struct import {
        struct vmsnap_store *s;
        const struct vmsnap_import_opts *o;
        struct store_envelope env; /* as the archive declares it */
        bool *seen;
        struct vmsnap_store_txn *t;
        uint64_t done, total;      /* logical bytes (progress, and the logical cap) */
        uint64_t written;          /* bytes of data really written (the allocation cap) */
        uint64_t max_bytes, max_logical;
        int imagesfd;              /* <root>/images, once a base image needs it; else -1 */
        struct import_base base;
        char notes[IMPORT_NOTES_MAX][512]; /* told to the caller only when the import commits */
        unsigned n_notes;
};

/* ---- import.c ---- */

/* Progress of logical bytes. */
void import_advance(struct import *im, uint64_t bytes);
/* Writes a chunk of a file being imported, zero pages left as holes, and counts the bytes
 * really written against the allocation cap. Returns 0, -EBADMSG (cap) or -errno, with d. */
int import_write(struct import *im, int fd, const char *name, const void *buf, size_t len,
                 uint64_t off, struct vmsnap_diag *d);
/* Adds a declared size to the logical total; -EBADMSG with d past the logical cap. */
int import_declare(struct import *im, const char *name, uint64_t size, struct vmsnap_diag *d);
/* Checks the envelope's declared sizes and prepares the per-file state. */
int import_check_envelope(struct import *im, struct vmsnap_diag *d);
/* Begins the pending create (no lineage yet: decided at finish). */
int import_begin(struct import *im, struct vmsnap_diag *d);
/* Compares a file's computed checksum with the envelope's and records it. */
int import_accept_file(struct import *im, const struct vmsnap_snapshot_file *f,
                       const struct vmsnap_hash *h, struct vmsnap_diag *d);
/* The steps after every file arrived: disks, base image, memory, lineage, commit. */
int import_finish(struct import *im, struct vmsnap_snapshot *ret, struct vmsnap_diag *d);
/* A note for the caller (opts->note), printf-style; given once the import committed. */
void import_note(struct import *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void import_init(struct import *im, struct vmsnap_store *s, const struct vmsnap_import_opts *o);
void import_clear(struct import *im);

/* ---- import-base.c ---- */

/* Starts receiving base image `name` (declared size bytes): it must be the one the
 * snapshot's rootfs.meta (already received) names. Sets *ret_skip when it is pinned here
 * already (its bytes are not needed). Returns 0 or -EBADMSG/-errno with d. */
int import_base_begin(struct import *im, const char *name, uint64_t size, bool *ret_skip,
                      struct vmsnap_diag *d);
/* The staged base image's fd for import_write. */
int import_base_fd(const struct import *im);
/* Checks the received bytes against the name (h: XXH3-128 of the content). */
int import_base_end(struct import *im, const struct vmsnap_hash *h, struct vmsnap_diag *d);
/* At finish: the base the snapshot's disk needs is delivered (then pinned now, never
 * replacing) or already pinned here, else -EBADMSG naming it. */
int import_base_commit(struct import *im, const struct vmsnap_disk_meta *meta,
                       struct vmsnap_diag *d);
/* Drops a staged base image that was not pinned. */
void import_base_abort(struct import *im);

/* ---- import-lineage.c ---- */

/* Keeps the archive's parent/template only when they are ready rows here whose builds the
 * imported memory header really contains; notes each link dropped. Returns 0 or -errno. */
int import_lineage(struct import *im, struct vmsnap_diag *d);

#endif
