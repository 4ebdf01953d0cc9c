/* Pull (docs/remote.md "Trust", "Transfers and failures"): the manifest validated, every
 * chunk fetched into a sparse staging copy after its length and SHA-256 are checked, then
 * the staged directory imported through the store's import path. */
#include "remote/internal.h"
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pull {
        struct vmsnap_remote *r;
        const struct vmsnap_remote_manifest *m;
        char dir[4200];
        int *fds; /* one per file */
        struct vmsnap_remote_stats st;
};

/* Creates every file of the manifest, empty and sized (sparse), under p->dir. */
static int create_files(struct pull *p, struct vmsnap_diag *d)
{
        int r = vmsnap_fs_mkdir_private(AT_FDCWD, p->dir);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: %s", p->dir, strerror(-r));
        _cleanup_close_ int dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", p->dir, strerror(errno));
        for (size_t i = 0; i < p->m->nfiles; i++) {
                const struct vmsnap_remote_file *f = &p->m->files[i];
                if (strncmp(f->path, "images/", 7) == 0) {
                        r = vmsnap_fs_mkdir_private(dfd, "images");
                        if (r < 0 && r != -EEXIST)
                                return vmsnap_diag(d, r, "%s/images: %s", p->dir, strerror(-r));
                }
                int fd = vmsnap_fs_create_private(dfd, f->path, O_RDWR);
                if (fd < 0)
                        return vmsnap_diag(d, fd, "%s/%s: %s", p->dir, f->path, strerror(-fd));
                p->fds[i] = fd;
                if (ftruncate(fd, (off_t)f->size) < 0)
                        return vmsnap_diag(d, -errno, "%s/%s: %s", p->dir, f->path,
                                           strerror(errno));
        }
        return 0;
}

/* One chunk to fetch: file index and chunk index. */
struct want {
        size_t file, chunk;
};

/* Checks a fetched chunk (length, SHA-256) and writes it; names the chunk on mismatch. */
static int place_chunk(struct pull *p, const struct want *w, const struct s3_req *q,
                       struct vmsnap_diag *d)
{
        const struct vmsnap_remote_file *f = &p->m->files[w->file];
        uint64_t off = (uint64_t)w->chunk * VMSNAP_REMOTE_CHUNK_SIZE;
        size_t len = (size_t)MIN((uint64_t)VMSNAP_REMOTE_CHUNK_SIZE, f->size - off);
        char hex[65];
        vmsnap_remote_hex(f->chunks[w->chunk].sha256, hex);
        if (q->err || q->status != 200) {
                int x = s3_req_diag(p->r->s3, q, d);
                vmsnap_diag_prefix(d, "chunk %s of %s (offset %llu)%s", hex, f->path,
                                   (unsigned long long)off,
                                   x == -ENOENT ? ": missing from the bucket" : "");
                if (x == -ENOENT && (x = -EBADMSG) && d) /* broken, not absent: no 404 */
                        d->err = x;
                return x;
        }
        uint8_t h[32];
        if (q->resp_len == len)
                remote_sha256(q->resp, len, h);
        if (q->resp_len != len || memcmp(h, f->chunks[w->chunk].sha256, 32) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s/" CHUNK_PREFIX "%s: corrupt chunk of %s "
                                   "(offset %llu): %s; nothing was imported",
                                   s3_where(p->r->s3), hex, f->path, (unsigned long long)off,
                                   q->resp_len != len ? "wrong length" : "SHA-256 mismatch");
        int x = vmsnap_fs_pwrite_sparse(p->fds[w->file], q->resp, len, off, NULL);
        if (x < 0)
                return vmsnap_diag(d, x, "%s/%s: %s", p->dir, f->path, strerror(-x));
        p->st.chunks_fetched++;
        p->st.bytes += len;
        return 0;
}

/* Bytes of the non-zero chunks: what a pull fetches. */
static uint64_t fetch_total(const struct pull *p)
{
        uint64_t total = 0;
        for (size_t i = 0; i < p->m->nfiles; i++) {
                const struct vmsnap_remote_file *f = &p->m->files[i];
                for (size_t c = 0; c < f->nchunks; c++)
                        if (!f->chunks[c].zero)
                                total += MIN((uint64_t)VMSNAP_REMOTE_CHUNK_SIZE,
                                             f->size - (uint64_t)c * VMSNAP_REMOTE_CHUNK_SIZE);
        }
        return total;
}

/* Runs the k GETs of one batch and places their chunks; reports progress. */
static int fetch_batch(struct pull *p, struct s3_req *q, const struct want *w, size_t k,
                       uint64_t total, struct vmsnap_diag *d)
{
        int x = s3_run(p->r->s3, q, k, VMSNAP_REMOTE_PARALLEL, &p->st.retries, d);
        for (size_t j = 0; x == 0 && j < k; j++)
                x = place_chunk(p, &w[j], &q[j], d);
        s3_req_reset(q, k);
        if (x == 0)
                remote_progress(p->r, p->st.bytes, total);
        return x;
}

/* Fetches every non-zero chunk, VMSNAP_REMOTE_PARALLEL at a time, in batches. */
static int fetch_chunks(struct pull *p, struct vmsnap_diag *d)
{
        enum { BATCH = VMSNAP_REMOTE_PARALLEL * 2 };
        struct s3_req q[BATCH];
        struct want w[BATCH];
        size_t k = 0;
        int x = 0;
        uint64_t total = fetch_total(p);
        remote_progress(p->r, 0, total);
        for (size_t i = 0; x == 0 && i < p->m->nfiles; i++) {
                const struct vmsnap_remote_file *f = &p->m->files[i];
                for (size_t c = 0; x == 0 && c < f->nchunks; c++) {
                        if (f->chunks[c].zero) {
                                p->st.zero_chunks++;
                                continue;
                        }
                        p->st.chunks++;
                        char hex[65];
                        vmsnap_remote_hex(f->chunks[c].sha256, hex);
                        q[k] = (struct s3_req){.method = "GET",
                                               .max_response = VMSNAP_REMOTE_CHUNK_SIZE};
                        snprintf(q[k].key, sizeof(q[k].key), CHUNK_PREFIX "%s", hex);
                        w[k++] = (struct want){i, c};
                        bool last = c + 1 == f->nchunks && i + 1 == p->m->nfiles;
                        if (k < BATCH && !last)
                                continue;
                        x = fetch_batch(p, q, w, k, total, d);
                        k = 0;
                        vmsnap_crashpoint("remote.pull.chunk");
                }
        }
        if (x == 0 && k > 0) /* the tail when the last chunks were zero */
                x = fetch_batch(p, q, w, k, total, d);
        return x;
}

/* The manifest of ref: a canonical id is fetched directly, anything else resolved by list. */
static int find_manifest(struct vmsnap_remote *r, const char *ref, struct vmsnap_remote_manifest *ret,
                         uint64_t *retries, struct vmsnap_diag *d)
{
        if (store_id_valid(ref)) {
                int x = remote_manifest_get(r, ref, ret, retries, d);
                if (x != -ENOENT)
                        return x;
        }
        struct vmsnap_remote_entry *e = NULL;
        size_t n = 0;
        int x = vmsnap_remote_list(r, &e, &n, d);
        if (x < 0)
                return x;
        int i = vmsnap_remote_resolve(e, n, ref, d);
        if (i >= 0) {
                *ret = e[i].m;
                memset(&e[i].m, 0, sizeof(e[i].m));
        }
        vmsnap_remote_entries_free(e, n);
        return i < 0 ? i : 0;
}

int vmsnap_remote_pull(struct vmsnap_remote *r, struct vmsnap_store *s, const char *ref,
                       const struct vmsnap_import_opts *opts, struct vmsnap_snapshot *ret,
                       struct vmsnap_remote_stats *ret_stats, struct vmsnap_diag *d)
{
        struct vmsnap_remote_manifest m = {0};
        struct pull p = {.r = r, .m = &m};
        int x = find_manifest(r, ref, &m, &p.st.retries, d);
        if (x < 0)
                return x;
        struct staging stg = {.fd = -1};
        x = staging_new(s, &stg, d);
        if (x == 0 && !(p.fds = malloc(m.nfiles * sizeof(int))))
                x = vmsnap_diag(d, -ENOMEM, "out of memory");
        for (size_t i = 0; p.fds && i < m.nfiles; i++)
                p.fds[i] = -1;
        if (x == 0) {
                snprintf(p.dir, sizeof(p.dir), "%s/snapshot", stg.path);
                x = create_files(&p, d);
        }
        if (x == 0)
                x = fetch_chunks(&p, d);
        vmsnap_crashpoint("remote.pull.chunks");
        struct vmsnap_import_opts io = opts ? *opts : (struct vmsnap_import_opts){0};
        if (x == 0)
                x = vmsnap_store_import_dir(s, p.dir, &io, ret, d);
        for (size_t i = 0; p.fds && i < m.nfiles; i++)
                if (p.fds[i] >= 0)
                        close(p.fds[i]);
        free(p.fds);
        staging_done(&stg);
        vmsnap_remote_manifest_free(&m);
        if (x == 0 && ret_stats)
                *ret_stats = p.st;
        return x;
}
