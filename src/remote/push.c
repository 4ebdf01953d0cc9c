/* Push (docs/remote.md "Transfers and failures"): export to a staging directory, hash every
 * 4 MiB chunk, upload the chunks the bucket lacks, then write the manifest, last. */
#include "remote/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Where one distinct non-zero chunk's bytes are in the staged export. */
struct chunk_src {
        uint8_t sha256[32];
        size_t file;
        uint64_t off;
        size_t len;
};

struct push {
        struct vmsnap_remote *r;
        char dir[4096]; /* the staged export */
        struct vmsnap_remote_manifest m;
        struct chunk_src *src;
        size_t nsrc, capsrc;
        struct vmsnap_remote_stats st;
};

static int path_cmp(const void *a, const void *b)
{
        return strcmp(((const struct vmsnap_remote_file *)a)->path,
                      ((const struct vmsnap_remote_file *)b)->path);
}

/* Adds the regular files of dir (prefix "" or "images/") to the manifest's file list. */
static int add_dir_files(struct push *p, const char *sub, struct vmsnap_diag *d)
{
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s%s%s", p->dir, sub[0] ? "/" : "", sub) >=
            sizeof(path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s/%s: path too long", p->dir, sub);
        DIR *dir = opendir(path);
        if (!dir)
                return errno == ENOENT && sub[0] ? 0 : vmsnap_diag(d, -errno, "%s: %s", path,
                                                                   strerror(errno));
        struct dirent *e;
        int r = 0;
        while (r == 0 && (e = readdir(dir))) {
                if (e->d_name[0] == '.' || (e->d_type == DT_DIR && !sub[0]))
                        continue;
                if (e->d_type != DT_REG) {
                        r = vmsnap_diag(d, -EINVAL, "%s/%s: not a regular file", path, e->d_name);
                        break;
                }
                struct vmsnap_remote_file *f = realloc(p->m.files, (p->m.nfiles + 1) * sizeof(*f));
                if (!f) {
                        r = vmsnap_diag(d, -ENOMEM, "out of memory");
                        break;
                }
                p->m.files = f;
                f = &p->m.files[p->m.nfiles++];
                memset(f, 0, sizeof(*f));
                snprintf(f->path, sizeof(f->path), "%s%s%s", sub, sub[0] ? "/" : "", e->d_name);
        }
        closedir(dir);
        return r;
}

static int add_src(struct push *p, const uint8_t h[32], size_t file, uint64_t off, size_t len)
{
        if (p->nsrc == p->capsrc) {
                size_t cap = p->capsrc ? p->capsrc * 2 : 256;
                struct chunk_src *a = realloc(p->src, cap * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                p->src = a;
                p->capsrc = cap;
        }
        struct chunk_src *c = &p->src[p->nsrc++];
        memcpy(c->sha256, h, 32);
        c->file = file;
        c->off = off;
        c->len = len;
        return 0;
}

/* Cuts file i into chunks: hashes each, marks zero ones, records the source of the others. */
static int hash_file(struct push *p, size_t i, uint8_t *buf, struct vmsnap_diag *d)
{
        struct vmsnap_remote_file *f = &p->m.files[i];
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", p->dir, f->path);
        struct stat st;
        _cleanup_close_ int fd = vmsnap_fs_open_regular(AT_FDCWD, path, &st, false);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: %s", path, vmsnap_fs_open_error(fd));
        f->size = (uint64_t)st.st_size;
        f->nchunks = (size_t)((f->size + VMSNAP_REMOTE_CHUNK_SIZE - 1) / VMSNAP_REMOTE_CHUNK_SIZE);
        f->chunks = f->nchunks ? calloc(f->nchunks, sizeof(*f->chunks)) : NULL;
        if (f->nchunks && !f->chunks)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        for (size_t k = 0; k < f->nchunks; k++) {
                uint64_t off = (uint64_t)k * VMSNAP_REMOTE_CHUNK_SIZE;
                size_t len = (size_t)MIN((uint64_t)VMSNAP_REMOTE_CHUNK_SIZE, f->size - off);
                ssize_t n = vmsnap_fs_pread_full(fd, buf, len, off);
                if (n != (ssize_t)len)
                        return vmsnap_diag(d, n < 0 ? (int)n : -EIO, "%s: short read at %llu",
                                           path, (unsigned long long)off);
                if (remote_is_zero(buf, len)) {
                        f->chunks[k].zero = true;
                        p->st.zero_chunks++;
                        continue;
                }
                remote_sha256(buf, len, f->chunks[k].sha256);
                p->st.chunks++;
                if (add_src(p, f->chunks[k].sha256, i, off, len) < 0)
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        return 0;
}

static int src_cmp(const void *a, const void *b)
{
        return memcmp(((const struct chunk_src *)a)->sha256, ((const struct chunk_src *)b)->sha256,
                      32);
}

/* Sorts the chunk sources and keeps one per distinct hash. */
static void dedupe(struct push *p)
{
        qsort(p->src, p->nsrc, sizeof(*p->src), src_cmp);
        size_t k = 0;
        for (size_t i = 0; i < p->nsrc; i++)
                if (k == 0 || memcmp(p->src[k - 1].sha256, p->src[i].sha256, 32) != 0)
                        p->src[k++] = p->src[i];
        p->nsrc = k;
}

static void chunk_key(const uint8_t h[32], char out[S3_KEY_MAX])
{
        char hex[65];
        vmsnap_remote_hex(h, hex);
        snprintf(out, S3_KEY_MAX, CHUNK_PREFIX "%s", hex);
}

/* HEADs every distinct chunk; moves those the bucket lacks to the front, sets *ret_missing. */
static int find_missing(struct push *p, size_t *ret_missing, struct vmsnap_diag *d)
{
        enum { BATCH = 128 };
        struct s3_req q[BATCH];
        bool *missing = calloc(p->nsrc ? p->nsrc : 1, sizeof(bool));
        if (!missing)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int x = 0;
        for (size_t at = 0; x == 0 && at < p->nsrc; at += BATCH) {
                size_t k = MIN((size_t)BATCH, p->nsrc - at);
                memset(q, 0, sizeof(q));
                for (size_t i = 0; i < k; i++) {
                        q[i].method = "HEAD";
                        chunk_key(p->src[at + i].sha256, q[i].key);
                }
                x = s3_run(p->r->s3, q, k, VMSNAP_REMOTE_PARALLEL, &p->st.retries, d);
                for (size_t i = 0; x == 0 && i < k; i++) {
                        if (!q[i].err && q[i].status == 404)
                                missing[at + i] = true;
                        else if (q[i].err || q[i].status != 200)
                                x = s3_req_diag(p->r->s3, &q[i], d);
                }
                s3_req_reset(q, k);
        }
        size_t m = 0;
        for (size_t i = 0; x == 0 && i < p->nsrc; i++)
                if (missing[i]) {
                        struct chunk_src t = p->src[m];
                        p->src[m++] = p->src[i];
                        p->src[i] = t;
                }
        free(missing);
        if (x == 0)
                *ret_missing = m;
        return x;
}

/* Reads chunk c into buf from the staged file. */
static int read_chunk(struct push *p, const struct chunk_src *c, uint8_t *buf,
                      struct vmsnap_diag *d)
{
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", p->dir, p->m.files[c->file].path);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        if (vmsnap_fs_pread_full(fd, buf, c->len, c->off) != (ssize_t)c->len)
                return vmsnap_diag(d, -EIO, "%s: short read", path);
        return 0;
}

/* Uploads chunks [0, n) of p->src, VMSNAP_REMOTE_PARALLEL at a time. */
static int upload(struct push *p, size_t n, struct vmsnap_diag *d)
{
        enum { BATCH = VMSNAP_REMOTE_PARALLEL * 2 };
        uint8_t *bufs = malloc((size_t)BATCH * VMSNAP_REMOTE_CHUNK_SIZE);
        if (!bufs)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        struct s3_req q[BATCH];
        int x = 0;
        uint64_t total = 0;
        for (size_t i = 0; i < n; i++)
                total += p->src[i].len;
        remote_progress(p->r, 0, total);
        for (size_t at = 0; x == 0 && at < n; at += BATCH) {
                size_t k = MIN((size_t)BATCH, n - at);
                memset(q, 0, sizeof(q));
                for (size_t i = 0; x == 0 && i < k; i++) {
                        const struct chunk_src *c = &p->src[at + i];
                        uint8_t *b = bufs + i * (size_t)VMSNAP_REMOTE_CHUNK_SIZE;
                        x = read_chunk(p, c, b, d);
                        q[i] = (struct s3_req){.method = "PUT", .body = b, .body_len = c->len};
                        chunk_key(c->sha256, q[i].key);
                        vmsnap_remote_hex(c->sha256, q[i].payload_sha256);
                }
                if (x == 0)
                        x = s3_run(p->r->s3, q, k, VMSNAP_REMOTE_PARALLEL, &p->st.retries, d);
                for (size_t i = 0; x == 0 && i < k; i++) {
                        if (q[i].err || q[i].status != 200)
                                x = s3_req_diag(p->r->s3, &q[i], d);
                        p->st.chunks_sent++;
                        p->st.bytes += q[i].body_len;
                }
                s3_req_reset(q, k);
                if (x == 0)
                        remote_progress(p->r, p->st.bytes, total);
                vmsnap_crashpoint("remote.push.chunk"); /* some chunks uploaded, not all */
        }
        free(bufs);
        return x;
}

static int put_manifest(struct push *p, struct vmsnap_diag *d)
{
        _cleanup_free_ char *text = NULL;
        if (vmsnap_remote_manifest_format(&p->m, &text) < 0)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        struct s3_req q = {.method = "PUT", .body = text, .body_len = strlen(text)};
        remote_manifest_key(p->m.id, q.key);
        int x = s3_run(p->r->s3, &q, 1, 1, &p->st.retries, d);
        if (x == 0 && (q.err || q.status != 200))
                x = s3_req_diag(p->r->s3, &q, d);
        s3_req_reset(&q, 1);
        return x;
}

/* Fills the manifest head from the row and lists + hashes the staged files. */
static int build_manifest(struct push *p, const struct vmsnap_snapshot *row, struct vmsnap_diag *d)
{
        strcpy(p->m.id, row->id);
        strcpy(p->m.name, row->name);
        p->m.kind = row->kind;
        strcpy(p->m.parent_id, row->parent_id);
        strcpy(p->m.template_id, row->template_id);
        p->m.created = row->created;
        p->m.pushed = (int64_t)time(NULL);
        p->m.chunk_size = VMSNAP_REMOTE_CHUNK_SIZE;
        int x = add_dir_files(p, "", d);
        if (x == 0)
                x = add_dir_files(p, "images", d);
        if (x < 0)
                return x;
        qsort(p->m.files, p->m.nfiles, sizeof(*p->m.files), path_cmp);
        uint8_t *buf = malloc(VMSNAP_REMOTE_CHUNK_SIZE);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        for (size_t i = 0; x == 0 && i < p->m.nfiles; i++)
                x = hash_file(p, i, buf, d);
        free(buf);
        return x;
}

int vmsnap_remote_push(struct vmsnap_remote *r, struct vmsnap_store *s, const char *id,
                       struct vmsnap_remote_stats *ret_stats, struct vmsnap_diag *d)
{
        struct vmsnap_snapshot row;
        int x = vmsnap_store_get(s, id, &row, d);
        if (x < 0)
                return x;
        if (row.state != VMSNAP_SNAPSHOT_READY)
                return vmsnap_diag(d, -ENOENT, "snapshot %s is not ready", id);
        struct staging stg = {.fd = -1};
        x = staging_new(s, &stg, d);
        if (x < 0)
                return x;
        struct push p = {.r = r};
        struct vmsnap_export_opts eo = {0};
        if (snprintf(p.dir, sizeof(p.dir), "%s/snapshot", stg.path) >= (int)sizeof(p.dir))
                x = vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", stg.path);
        else
                x = vmsnap_store_export_dir(s, id, p.dir, &eo, d);
        vmsnap_crashpoint("remote.push.exported");
        if (x == 0)
                x = build_manifest(&p, &row, d);
        size_t missing = 0;
        if (x == 0) {
                dedupe(&p);
                x = find_missing(&p, &missing, d);
        }
        if (x == 0)
                x = upload(&p, missing, d);
        vmsnap_crashpoint("remote.push.chunks");
        if (x == 0)
                x = put_manifest(&p, d);
        vmsnap_crashpoint("remote.push.manifest");
        if (x == 0 && ret_stats)
                *ret_stats = p.st;
        vmsnap_remote_manifest_free(&p.m);
        free(p.src);
        staging_done(&stg);
        return x;
}
