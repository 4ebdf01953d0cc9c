/* Memory chunks of a lazy restore fetched on fault: docs/remote.md "Lazy restore". A chunk
 * is written into its sparse diff file only after its length and SHA-256 matched the
 * manifest, and marked local only after the write; the installer then reads the blocks and
 * checks them against the snapshot's block hashes as for any snapshot. */
#include "uffd/lazy.h"

#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/chunk-cache.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A memory diff file of the manifest, open for writing. */
struct lazy_file {
        const struct vmsnap_remote_file *f; /* in the manifest */
        int fd;
        dev_t dev;
        ino_t ino;
        atomic_uchar *local; /* per chunk: 1 once written and verified (or a zero chunk) */
};

struct uffd_lazy {
        struct vmsnap_remote_manifest m;
        struct vmsnap_remote *r;
        struct vmsnap_chunk_cache *cache;
        struct lazy_file *files;
        size_t n;
        uint8_t *bufs[VMSNAP_REMOTE_PARALLEL]; /* a chunk each, under mu */
        pthread_mutex_t mu;
        uint64_t fetched, cached;
};

/* Loads and validates dir/remote-manifest.json. */
static int load_manifest(const char *dir, struct vmsnap_remote_manifest *ret, struct vmsnap_diag *d)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: %s", dir, strerror(-dfd));
        _cleanup_free_ uint8_t *text = NULL;
        size_t len;
        int r = vmsnap_fs_read_file(dfd, "remote-manifest.json", VMSNAP_REMOTE_MANIFEST_MAX, &text,
                                    &len);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/remote-manifest.json: %s", dir, strerror(-r));
        char what[4200];
        snprintf(what, sizeof(what), "%s/remote-manifest.json", dir);
        return vmsnap_remote_manifest_parse((const char *)text, len, what, NULL, ret, d);
}

/* Opens the memory diff files of the manifest in dir for writing. */
static int open_files(struct uffd_lazy *l, const char *dir, struct vmsnap_diag *d)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: %s", dir, strerror(-dfd));
        l->files = calloc(l->m.nfiles, sizeof(*l->files));
        if (!l->files)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        for (size_t i = 0; i < l->m.nfiles; i++) {
                const struct vmsnap_remote_file *f = &l->m.files[i];
                if (!vmsnap_remote_is_memory_file(f->path))
                        continue;
                struct lazy_file *lf = &l->files[l->n];
                lf->f = f;
                lf->fd = openat(dfd, f->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
                struct stat st;
                if (lf->fd < 0 || fstat(lf->fd, &st) < 0)
                        return vmsnap_diag(d, -errno, "%s/%s: %s", dir, f->path, strerror(errno));
                l->n++;
                if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != f->size)
                        return vmsnap_diag(d, -EBADMSG,
                                           "%s/%s: not a regular file of %llu "
                                           "bytes as the manifest says",
                                           dir, f->path, (unsigned long long)f->size);
                lf->dev = st.st_dev;
                lf->ino = st.st_ino;
                lf->local = calloc(f->nchunks ? f->nchunks : 1, 1);
                if (!lf->local)
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
                for (size_t c = 0; c < f->nchunks; c++)
                        lf->local[c] = f->chunks[c].zero; /* zero chunks are holes already */
        }
        return 0;
}

int uffd_lazy_open(const char *dir, const struct vmsnap_remote_config *c, const char *cache_dir,
                   uint64_t cache_size, struct uffd_lazy **ret, struct vmsnap_diag *d)
{
        struct uffd_lazy *l = calloc(1, sizeof(*l));
        if (!l)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        pthread_mutex_init(&l->mu, NULL);
        int r = load_manifest(dir, &l->m, d);
        if (r == 0)
                r = vmsnap_remote_open(c, &l->r, d);
        if (r == 0 && cache_dir && cache_size)
                r = vmsnap_chunk_cache_open(cache_dir, cache_size, &l->cache, d);
        for (size_t i = 0; r == 0 && i < VMSNAP_REMOTE_PARALLEL; i++)
                if (!(l->bufs[i] = malloc(VMSNAP_REMOTE_CHUNK_SIZE)))
                        r = vmsnap_diag(d, -ENOMEM, "out of memory");
        if (r == 0)
                r = open_files(l, dir, d);
        if (r < 0) {
                uffd_lazy_free(l);
                return r;
        }
        *ret = l;
        return 0;
}

void uffd_lazy_free(struct uffd_lazy *l)
{
        if (!l)
                return;
        for (size_t i = 0; l->files && i < l->n; i++) {
                if (l->files[i].fd >= 0)
                        close(l->files[i].fd);
                free(l->files[i].local);
        }
        free(l->files);
        for (size_t i = 0; i < VMSNAP_REMOTE_PARALLEL; i++)
                free(l->bufs[i]);
        vmsnap_chunk_cache_close(l->cache);
        vmsnap_remote_close(l->r);
        vmsnap_remote_manifest_free(&l->m);
        pthread_mutex_destroy(&l->mu);
        free(l);
}

/* The lazy file fd is, or NULL (a file that is not fetched lazily). */
static struct lazy_file *file_of(struct uffd_lazy *l, int fd)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return NULL;
        for (size_t i = 0; i < l->n; i++)
                if (l->files[i].dev == st.st_dev && l->files[i].ino == st.st_ino)
                        return &l->files[i];
        return NULL;
}

static uint64_t chunk_off(size_t c)
{
        return (uint64_t)c * VMSNAP_REMOTE_CHUNK_SIZE;
}

static size_t chunk_len(const struct lazy_file *lf, size_t c)
{
        return (size_t)MIN((uint64_t)VMSNAP_REMOTE_CHUNK_SIZE, lf->f->size - chunk_off(c));
}

/* Writes verified chunk c of lf from buf into the diff file and marks it local. */
static int place(struct lazy_file *lf, size_t c, const uint8_t *buf, struct vmsnap_diag *d)
{
        int x = vmsnap_fs_pwrite_full(lf->fd, buf, chunk_len(lf, c), chunk_off(c));
        if (x < 0)
                return vmsnap_diag(d, x, "%s: writing chunk at %llu: %s", lf->f->path,
                                   (unsigned long long)chunk_off(c), strerror(-x));
        atomic_store(&lf->local[c], 1);
        return 0;
}

/* Chunk c from the cache into buf and its file. Returns 1 (done), 0 (not cached), -errno. */
static int from_cache(struct uffd_lazy *l, struct lazy_file *lf, size_t c, uint8_t *buf,
                      struct vmsnap_diag *d)
{
        if (!l->cache)
                return 0;
        int x = vmsnap_chunk_cache_get(l->cache, lf->f->chunks[c].sha256, buf, chunk_len(lf, c), d);
        if (x == 1 && (x = place(lf, c, buf, d)) == 0) {
                l->cached++;
                x = 1;
        }
        return x;
}

/* The chunks of one fetch: the demanded one, then the read-ahead. */
struct batch {
        size_t c[VMSNAP_REMOTE_PARALLEL];
        const uint8_t *sha[VMSNAP_REMOTE_PARALLEL];
        size_t len[VMSNAP_REMOTE_PARALLEL];
        char what[VMSNAP_REMOTE_PARALLEL][VMSNAP_REMOTE_PATH_MAX + 48];
        const char *whatp[VMSNAP_REMOTE_PARALLEL];
        size_t n;
};

static void batch_add(struct batch *b, const struct lazy_file *lf, size_t c)
{
        size_t i = b->n++;
        b->c[i] = c;
        b->sha[i] = lf->f->chunks[c].sha256;
        b->len[i] = chunk_len(lf, c);
        snprintf(b->what[i], sizeof(b->what[i]), "%s (offset %llu)", lf->f->path,
                 (unsigned long long)chunk_off(c));
        b->whatp[i] = b->what[i];
}

/* Adds the read-ahead after chunk c: the next missing chunks of lf that nobody else is
 * fetching, up to a full batch; those found in the cache are placed at once. */
static int read_ahead(struct uffd_lazy *l, struct lazy_file *lf, size_t c, struct batch *b,
                      struct vmsnap_diag *d)
{
        for (size_t k = c + 1; k < lf->f->nchunks && k < c + VMSNAP_REMOTE_PARALLEL &&
                               b->n < VMSNAP_REMOTE_PARALLEL;
             k++) {
                if (atomic_load(&lf->local[k]))
                        continue;
                const uint8_t *sha = lf->f->chunks[k].sha256;
                if (l->cache && vmsnap_chunk_cache_claim(l->cache, sha, false) != 1)
                        continue; /* another fetcher has it: faults will wait for it */
                int x = from_cache(l, lf, k, l->bufs[b->n], d);
                if (x != 0 && l->cache)
                        vmsnap_chunk_cache_release(l->cache, sha);
                if (x < 0)
                        return x;
                if (x == 0)
                        batch_add(b, lf, k);
        }
        return 0;
}

/* GETs the batch (in parallel), caches and places every chunk. */
static int fetch_batch(struct uffd_lazy *l, struct lazy_file *lf, struct batch *b,
                       struct vmsnap_diag *d)
{
        int x = vmsnap_remote_fetch_chunks(l->r, b->n, b->sha, b->len, l->bufs, b->whatp, d);
        for (size_t i = 0; x == 0 && i < b->n; i++) {
                if (l->cache)
                        x = vmsnap_chunk_cache_put(l->cache, b->sha[i], l->bufs[i], b->len[i], d);
                if (x == 0)
                        x = place(lf, b->c[i], l->bufs[i], d);
                if (x == 0)
                        l->fetched++;
        }
        return x;
}

/* Makes chunk c of lf local (cache, else remote with read-ahead; verified). Under l->mu. */
static int fetch(struct uffd_lazy *l, struct lazy_file *lf, size_t c, struct vmsnap_diag *d)
{
        struct batch b = {0};
        int x = l->cache ? vmsnap_chunk_cache_claim(l->cache, lf->f->chunks[c].sha256, true) : 1;
        if (x < 0)
                return vmsnap_diag(d, x, "chunk cache claim: %s", strerror(-x));
        x = from_cache(l, lf, c, l->bufs[0], d);
        if (x == 0) {
                batch_add(&b, lf, c);
                x = read_ahead(l, lf, c, &b, d);
        }
        if (x == 0 && b.n)
                x = fetch_batch(l, lf, &b, d);
        if (l->cache) {
                vmsnap_chunk_cache_release(l->cache, lf->f->chunks[c].sha256);
                for (size_t i = 1; i < b.n; i++)
                        vmsnap_chunk_cache_release(l->cache, b.sha[i]);
        }
        return x < 0 ? x : 0;
}

int uffd_lazy_ensure(struct uffd_lazy *l, int fd, uint64_t off, uint64_t len, struct vmsnap_diag *d)
{
        struct lazy_file *lf = file_of(l, fd);
        if (!lf || len == 0)
                return 0;
        size_t first = (size_t)(off / VMSNAP_REMOTE_CHUNK_SIZE);
        size_t last = (size_t)((off + len - 1) / VMSNAP_REMOTE_CHUNK_SIZE);
        if (last >= lf->f->nchunks)
                return vmsnap_diag(d, -EINVAL, "%s: range beyond the manifest's size", lf->f->path);
        for (size_t c = first; c <= last; c++) {
                if (atomic_load(&lf->local[c]))
                        continue;
                pthread_mutex_lock(&l->mu);
                int x = atomic_load(&lf->local[c]) ? 0 : fetch(l, lf, c, d);
                pthread_mutex_unlock(&l->mu);
                if (x < 0)
                        return x;
        }
        return 0;
}

void uffd_lazy_counts(struct uffd_lazy *l, uint64_t *ret_fetched, uint64_t *ret_cached)
{
        pthread_mutex_lock(&l->mu);
        *ret_fetched = l->fetched;
        *ret_cached = l->cached;
        pthread_mutex_unlock(&l->mu);
}
