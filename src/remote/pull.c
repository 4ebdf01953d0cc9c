/* Pull (docs/remote.md "Trust", "Transfers and failures"): the manifest validated, every
 * chunk fetched into a sparse staging copy after its length and SHA-256 are checked, then
 * the staged directory imported through the store's import path. */
#include "remote/internal.h"
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <vmsnap/chunk-cache.h>

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
        struct vmsnap_chunk_cache *cache; /* NULL: no cache */
        uint8_t *buf;                     /* a chunk read from the cache */
        bool lazy; /* memory diff files stay sparse (fetched on fault) */
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

/* One chunk to fetch: file index and chunk index; claimed: this pull holds its claim. */
struct want {
        size_t file, chunk;
        bool claimed;
};

static const uint8_t *want_sha(const struct pull *p, const struct want *w)
{
        return p->m->files[w->file].chunks[w->chunk].sha256;
}

static uint64_t want_off(const struct want *w)
{
        return (uint64_t)w->chunk * VMSNAP_REMOTE_CHUNK_SIZE;
}

static size_t want_len(const struct pull *p, const struct want *w)
{
        return (size_t)MIN((uint64_t)VMSNAP_REMOTE_CHUNK_SIZE,
                           p->m->files[w->file].size - want_off(w));
}

/* Writes a verified chunk into its file. */
static int write_chunk(struct pull *p, const struct want *w, const void *buf,
                       struct vmsnap_diag *d)
{
        int x = vmsnap_fs_pwrite_sparse(p->fds[w->file], buf, want_len(p, w), want_off(w), NULL);
        if (x < 0)
                return vmsnap_diag(d, x, "%s/%s: %s", p->dir, p->m->files[w->file].path,
                                   strerror(-x));
        return 0;
}

/* Checks a fetched chunk (length, SHA-256), caches and writes it; names the chunk on
 * mismatch. */
static int place_chunk(struct pull *p, const struct want *w, const struct s3_req *q,
                       struct vmsnap_diag *d)
{
        const struct vmsnap_remote_file *f = &p->m->files[w->file];
        uint64_t off = want_off(w);
        size_t len = want_len(p, w);
        char hex[65];
        vmsnap_remote_hex(want_sha(p, w), hex);
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
        if (q->resp_len != len || memcmp(h, want_sha(p, w), 32) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s/" CHUNK_PREFIX "%s: corrupt chunk of %s "
                                   "(offset %llu): %s; nothing was imported",
                                   s3_where(p->r->s3), hex, f->path, (unsigned long long)off,
                                   q->resp_len != len ? "wrong length" : "SHA-256 mismatch");
        int x = p->cache ? vmsnap_chunk_cache_put(p->cache, want_sha(p, w), q->resp, len, d) : 0;
        if (x == 0)
                x = write_chunk(p, w, q->resp, d);
        if (x < 0)
                return x;
        p->st.chunks_fetched++;
        p->st.bytes += len;
        return 0;
}

/* Bytes of the non-zero chunks: what a pull fetches without a cache. */
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

/* Runs the k GETs of one batch, places their chunks, releases their claims; reports
 * progress. */
static int fetch_batch(struct pull *p, struct s3_req *q, const struct want *w, size_t k,
                       uint64_t total, struct vmsnap_diag *d)
{
        int x = s3_run(p->r->s3, q, k, VMSNAP_REMOTE_PARALLEL, &p->st.retries, d);
        for (size_t j = 0; x == 0 && j < k; j++)
                x = place_chunk(p, &w[j], &q[j], d);
        for (size_t j = 0; j < k; j++)
                if (w[j].claimed)
                        vmsnap_chunk_cache_release(p->cache, want_sha(p, &w[j]));
        s3_req_reset(q, k);
        if (x == 0)
                remote_progress(p->r, p->st.bytes, total);
        if (x == 0)
                vmsnap_crashpoint("remote.pull.chunk");
        return x;
}

/* Takes chunk w from the cache into its file. Returns 1 (done), 0 (not cached), -errno. */
static int from_cache(struct pull *p, const struct want *w, struct vmsnap_diag *d)
{
        uint64_t corrupt = vmsnap_chunk_cache_stats(p->cache).corrupt;
        int x = vmsnap_chunk_cache_get(p->cache, want_sha(p, w), p->buf, want_len(p, w), d);
        p->st.cache_corrupt += vmsnap_chunk_cache_stats(p->cache).corrupt - corrupt;
        if (x == 1 && (x = write_chunk(p, w, p->buf, d)) == 0) {
                p->st.chunks_cached++;
                x = 1;
        }
        return x;
}

/* A batch of GETs being gathered, and the chunks left for after it. */
struct batch {
        struct s3_req q[VMSNAP_REMOTE_PARALLEL * 2];
        struct want w[VMSNAP_REMOTE_PARALLEL * 2];
        size_t k;
        struct want *later; /* claimed by another fetcher, or already in this batch */
        size_t nlater, caplater;
};

static bool in_batch(const struct pull *p, const struct batch *b, const struct want *w)
{
        for (size_t j = 0; j < b->k; j++)
                if (memcmp(want_sha(p, &b->w[j]), want_sha(p, w), 32) == 0)
                        return true;
        return false;
}

static int defer(struct batch *b, const struct want *w, struct vmsnap_diag *d)
{
        if (b->nlater == b->caplater) {
                size_t cap = b->caplater ? b->caplater * 2 : 16;
                struct want *v = realloc(b->later, cap * sizeof(*v));
                if (!v)
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
                b->later = v;
                b->caplater = cap;
        }
        b->later[b->nlater++] = *w;
        return 0;
}

/* Adds the GET of chunk w to the batch (which has room). */
static void queue(const struct pull *p, struct batch *b, const struct want *w)
{
        char hex[65];
        vmsnap_remote_hex(want_sha(p, w), hex);
        b->q[b->k] = (struct s3_req){.method = "GET", .max_response = VMSNAP_REMOTE_CHUNK_SIZE};
        snprintf(b->q[b->k].key, sizeof(b->q[b->k].key), CHUNK_PREFIX "%s", hex);
        b->w[b->k++] = *w;
}

/* Adds chunk w to the batch: from the cache when it is there; deferred when another
 * fetcher holds its claim or the batch fetches it already; else claimed and queued.
 * Returns 0 or -errno. */
static int gather(struct pull *p, struct batch *b, struct want w, struct vmsnap_diag *d)
{
        if (p->cache) {
                int x = from_cache(p, &w, d);
                if (x != 0)
                        return x < 0 ? x : 0;
                if (in_batch(p, b, &w))
                        return defer(b, &w, d);
                x = vmsnap_chunk_cache_claim(p->cache, want_sha(p, &w), false);
                if (x < 0)
                        return vmsnap_diag(d, x, "chunk cache claim: %s", strerror(-x));
                if (x == 0)
                        return defer(b, &w, d);
                w.claimed = true;
        }
        queue(p, b, &w);
        return 0;
}

/* The chunks deferred: waits for the other fetcher's claim, then the cache; fetches the
 * chunk itself when the other fetch failed. */
static int fetch_later(struct pull *p, struct batch *b, uint64_t total, struct vmsnap_diag *d)
{
        int x = 0;
        for (size_t i = 0; x == 0 && i < b->nlater; i++) {
                struct want *w = &b->later[i];
                x = vmsnap_chunk_cache_claim(p->cache, want_sha(p, w), true);
                if (x < 0) {
                        x = vmsnap_diag(d, x, "chunk cache claim: %s", strerror(-x));
                        break;
                }
                w->claimed = true;
                x = from_cache(p, w, d);
                if (x != 0) {
                        vmsnap_chunk_cache_release(p->cache, want_sha(p, w));
                        x = x < 0 ? x : 0;
                        continue;
                }
                b->k = 0;
                queue(p, b, w);
                x = fetch_batch(p, b->q, b->w, b->k, total, d);
                b->k = 0;
        }
        return x;
}

/* Fetches every non-zero chunk the cache lacks, VMSNAP_REMOTE_PARALLEL at a time, in
 * batches. */
static int fetch_chunks(struct pull *p, struct vmsnap_diag *d)
{
        struct batch *b = calloc(1, sizeof(*b));
        if (!b)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
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
                        if (p->lazy && vmsnap_remote_is_memory_file(f->path))
                                continue;
                        p->st.chunks++;
                        x = gather(p, b, (struct want){i, c, false}, d);
                        if (x < 0 || b->k < ARRAY_SIZE(b->q))
                                continue;
                        x = fetch_batch(p, b->q, b->w, b->k, total, d);
                        b->k = 0;
                }
        }
        if (x == 0 && b->k > 0)
                x = fetch_batch(p, b->q, b->w, b->k, total, d);
        else
                for (size_t j = 0; j < b->k; j++) /* a failure left claims */
                        if (b->w[j].claimed)
                                vmsnap_chunk_cache_release(p->cache, want_sha(p, &b->w[j]));
        if (x == 0)
                x = fetch_later(p, b, total, d);
        free(b->later);
        free(b);
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

/* Opens <root>/chunk-cache unless the remote's cache size is 0. */
static int open_cache(struct pull *p, struct vmsnap_store *s, struct vmsnap_diag *d)
{
        if (p->r->cache_size == 0)
                return 0;
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/chunk-cache", vmsnap_store_root(s));
        if (!(p->buf = malloc(VMSNAP_REMOTE_CHUNK_SIZE)))
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        return vmsnap_chunk_cache_open(dir, p->r->cache_size, &p->cache, d);
}

bool vmsnap_remote_is_memory_file(const char *path)
{
        return strncmp(path, "memfile.", 8) == 0 && strlen(path) == 8 + VMSNAP_ID_LEN &&
               store_id_valid(path + 8);
}

/* Checks one answered chunk GET and copies its bytes to buf. */
static int check_chunk(struct vmsnap_remote *r, struct s3_req *q, const uint8_t sha256[32],
                       size_t len, void *buf, const char *what, struct vmsnap_diag *d)
{
        char hex[65];
        vmsnap_remote_hex(sha256, hex);
        if (q->err || q->status != 200) {
                int x = s3_req_diag(r->s3, q, d);
                vmsnap_diag_prefix(d, "chunk %s of %s%s", hex, what,
                                   x == -ENOENT ? ": missing from the bucket" : "");
                if (d)
                        d->err = -EBADMSG;
                return -EBADMSG;
        }
        uint8_t h[32];
        if (q->resp_len == len)
                remote_sha256(q->resp, len, h);
        if (q->resp_len != len || memcmp(h, sha256, 32) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s/" CHUNK_PREFIX "%s: corrupt chunk of %s: %s",
                                   s3_where(r->s3), hex, what,
                                   q->resp_len != len ? "wrong length" : "SHA-256 mismatch");
        memcpy(buf, q->resp, len);
        return 0;
}

int vmsnap_remote_fetch_chunks(struct vmsnap_remote *r, size_t n, const uint8_t *const *shas,
                               const size_t *lens, uint8_t *const *bufs,
                               const char *const *whats, struct vmsnap_diag *d)
{
        struct s3_req q[VMSNAP_REMOTE_PARALLEL];
        if (n > VMSNAP_REMOTE_PARALLEL)
                return vmsnap_diag(d, -EINVAL, "too many chunks at once");
        for (size_t i = 0; i < n; i++) {
                char hex[65];
                vmsnap_remote_hex(shas[i], hex);
                q[i] = (struct s3_req){.method = "GET", .max_response = VMSNAP_REMOTE_CHUNK_SIZE};
                snprintf(q[i].key, sizeof(q[i].key), CHUNK_PREFIX "%s", hex);
        }
        int x = s3_run(r->s3, q, n, VMSNAP_REMOTE_PARALLEL, NULL, d);
        for (size_t i = 0; x == 0 && i < n; i++)
                x = check_chunk(r, &q[i], shas[i], lens[i], bufs[i], whats[i], d);
        s3_req_reset(q, n);
        return x;
}

int vmsnap_remote_fetch_chunk(struct vmsnap_remote *r, const uint8_t sha256[32], size_t len,
                              void *buf, const char *what, struct vmsnap_diag *d)
{
        uint8_t *b = buf;
        return vmsnap_remote_fetch_chunks(r, 1, &sha256, &len, &b, &what, d);
}

/* Writes the manifest into dir as remote-manifest.json (0600, durable). */
static int write_manifest(const struct vmsnap_remote_manifest *m, const char *dir,
                          struct vmsnap_diag *d)
{
        _cleanup_free_ char *text = NULL;
        if (vmsnap_remote_manifest_format(m, &text) < 0)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: %s", dir, strerror(-dfd));
        return vmsnap_fs_atomic_write(dfd, "remote-manifest.json", text, strlen(text), d);
}

/* Creates the manifest's files under dir (sized, sparse) and fetches their chunks (through
 * the cache when s has one; a lazy pull leaves memory diff files to be fetched on fault). */
static int fetch_into(struct pull *p, struct vmsnap_store *s, const char *dir,
                      struct vmsnap_diag *d)
{
        if (!(p->fds = malloc(p->m->nfiles * sizeof(int))))
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        for (size_t i = 0; i < p->m->nfiles; i++)
                p->fds[i] = -1;
        int x = open_cache(p, s, d);
        if (x == 0) {
                snprintf(p->dir, sizeof(p->dir), "%s", dir);
                x = create_files(p, d);
        }
        return x == 0 ? fetch_chunks(p, d) : x;
}

/* Closes and frees what fetch_into opened. */
static void pull_release(struct pull *p)
{
        for (size_t i = 0; p->fds && i < p->m->nfiles; i++)
                if (p->fds[i] >= 0)
                        close(p->fds[i]);
        free(p->fds);
        free(p->buf);
        vmsnap_chunk_cache_close(p->cache);
}

int vmsnap_remote_pull_lazy(struct vmsnap_remote *r, struct vmsnap_store *s, const char *ref,
                            const char *dir, struct vmsnap_remote_stats *ret_stats,
                            struct vmsnap_diag *d)
{
        struct vmsnap_remote_manifest m = {0};
        struct pull p = {.r = r, .m = &m, .lazy = true};
        if (strlen(dir) >= sizeof(p.dir))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", dir);
        int x = find_manifest(r, ref, &m, &p.st.retries, d);
        if (x == 0)
                x = fetch_into(&p, s, dir, d);
        for (size_t i = 0; x == 0 && i < m.nfiles; i++)
                if (vmsnap_sys.fsync(p.fds[i]) < 0)
                        x = vmsnap_diag(d, -errno, "%s/%s: fsync: %s", dir, m.files[i].path,
                                        strerror(errno));
        if (x == 0)
                x = write_manifest(&m, dir, d);
        pull_release(&p);
        vmsnap_remote_manifest_free(&m);
        if (x == 0 && ret_stats)
                *ret_stats = p.st;
        return x;
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
        char dir[sizeof(p.dir)];
        if (x == 0 && snprintf(dir, sizeof(dir), "%s/snapshot", stg.path) >= (int)sizeof(dir))
                x = vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", stg.path);
        if (x == 0)
                x = fetch_into(&p, s, dir, d);
        vmsnap_crashpoint("remote.pull.chunks");
        struct vmsnap_import_opts io = opts ? *opts : (struct vmsnap_import_opts){0};
        if (x == 0)
                x = vmsnap_store_import_dir(s, p.dir, &io, ret, d);
        pull_release(&p);
        staging_done(&stg);
        vmsnap_remote_manifest_free(&m);
        if (x == 0 && ret_stats)
                *ret_stats = p.st;
        return x;
}
