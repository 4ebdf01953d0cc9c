/* The remote handle, staging directories, and the bucket-wide verbs: list, resolve, rm, gc
 * (docs/remote.md). Push and pull are in push.c and pull.c. */
#include "remote/internal.h"
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/chunk-cache.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

int vmsnap_remote_open(const struct vmsnap_remote_config *c, struct vmsnap_remote **ret,
                       struct vmsnap_diag *d)
{
        struct vmsnap_remote *r = calloc(1, sizeof(*r));
        if (!r)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int e = s3_new(c, &r->s3, d);
        if (e < 0) {
                free(r);
                return e;
        }
        if (vmsnap_chunk_cache_size_from_env(&r->cache_size) < 0) {
                s3_free(r->s3);
                free(r);
                return vmsnap_diag(d, -EINVAL, "VMSNAP_CHUNK_CACHE_SIZE: not a size in bytes "
                                   "(a K, M or G suffix allowed; 0: no cache)");
        }
        *ret = r;
        return 0;
}

void vmsnap_remote_close(struct vmsnap_remote *r)
{
        if (!r)
                return;
        s3_free(r->s3);
        free(r);
}

void vmsnap_remote_set_progress(struct vmsnap_remote *r, vmsnap_progress_fn fn, void *ctx)
{
        r->progress = fn;
        r->progress_ctx = ctx;
}

void vmsnap_remote_set_cache_size(struct vmsnap_remote *r, uint64_t bytes)
{
        r->cache_size = bytes;
}

void remote_progress(const struct vmsnap_remote *r, uint64_t done, uint64_t total)
{
        if (r->progress)
                r->progress(r->progress_ctx, done, total);
}

void remote_sha256(const void *buf, size_t len, uint8_t out[32])
{
        unsigned int n = 32;
        EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL);
}

bool remote_is_zero(const void *buf, size_t len)
{
        const uint8_t *p = buf;
        if (len == 0)
                return true;
        return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

void remote_manifest_key(const char *id, char out[S3_KEY_MAX])
{
        snprintf(out, S3_KEY_MAX, MANIFEST_PREFIX "%s.json", id);
}

/* ---- staging directories ------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if (flag == FTW_DP)
                return rmdir(path) < 0 ? 0 : 0;
        unlink(path);
        return 0;
}

static void rm_tree(const char *path)
{
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Removes every staging directory whose lock nobody holds (its maker died). */
static void staging_sweep(int dirfd, const char *dirpath)
{
        DIR *dir = fdopendir(dup(dirfd));
        if (!dir)
                return;
        struct dirent *e;
        while ((e = readdir(dir))) {
                if (e->d_name[0] == '.')
                        continue;
                _cleanup_close_ int fd = openat(dirfd, e->d_name,
                                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
                        continue;
                char p[4096];
                if (snprintf(p, sizeof(p), "%s/%s", dirpath, e->d_name) < (int)sizeof(p))
                        rm_tree(p);
        }
        closedir(dir);
}

int staging_new(struct vmsnap_store *s, struct staging *ret, struct vmsnap_diag *d)
{
        static unsigned counter;
        char base[4096];
        const char *root = vmsnap_store_root(s);
        if (snprintf(base, sizeof(base), "%s/remote/staging", root) >= (int)sizeof(base))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", root);
        char remote[4096];
        snprintf(remote, sizeof(remote), "%s/remote", root);
        int r = vmsnap_fs_mkdir_private(AT_FDCWD, remote);
        if (r < 0 && r != -EEXIST)
                return vmsnap_diag(d, r, "%s: %s", remote, strerror(-r));
        r = vmsnap_fs_mkdir_private(AT_FDCWD, base);
        if (r < 0 && r != -EEXIST)
                return vmsnap_diag(d, r, "%s: %s", base, strerror(-r));
        _cleanup_close_ int bfd = open(base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (bfd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", base, strerror(errno));
        staging_sweep(bfd, base);
        char name[64];
        snprintf(name, sizeof(name), "%d.%u", (int)getpid(), counter++);
        r = vmsnap_fs_mkdir_private(bfd, name);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: %s", base, name, strerror(-r));
        struct staging st = {.fd = -1};
        if (snprintf(st.path, sizeof(st.path), "%s/%s", base, name) >= (int)sizeof(st.path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", base);
        st.fd = openat(bfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (st.fd < 0 || flock(st.fd, LOCK_EX) < 0) {
                r = vmsnap_diag(d, -errno, "%s: %s", st.path, strerror(errno));
                staging_done(&st);
                return r;
        }
        *ret = st;
        return 0;
}

void staging_done(struct staging *st)
{
        if (st->path[0])
                rm_tree(st->path);
        if (st->fd >= 0)
                close(st->fd);
        st->path[0] = 0;
        st->fd = -1;
}

/* ---- manifests ---------------------------------------------------------------------------- */

int remote_manifest_get(struct vmsnap_remote *r, const char *id, struct vmsnap_remote_manifest *ret,
                        uint64_t *retries, struct vmsnap_diag *d)
{
        struct s3_req q = {.method = "GET", .max_response = VMSNAP_REMOTE_MANIFEST_MAX};
        remote_manifest_key(id, q.key);
        int e = s3_run(r->s3, &q, 1, 1, retries, d);
        if (e == 0 && (q.err || q.status != 200))
                e = s3_req_diag(r->s3, &q, d);
        if (e == 0) {
                char what[700];
                snprintf(what, sizeof(what), "%s/%s", s3_where(r->s3), q.key);
                e = vmsnap_remote_manifest_parse(q.resp ? (const char *)q.resp : "", q.resp_len,
                                                 what, id, ret, d);
        }
        s3_req_reset(&q, 1);
        return e;
}

/* The id of a key "manifests/<id>.json", or false when it is not one. */
static bool manifest_key_id(const char *key, char id[VMSNAP_ID_LEN + 1])
{
        size_t pl = strlen(MANIFEST_PREFIX);
        if (strncmp(key, MANIFEST_PREFIX, pl) != 0 || strlen(key) != pl + VMSNAP_ID_LEN + 5 ||
            strcmp(key + pl + VMSNAP_ID_LEN, ".json") != 0)
                return false;
        memcpy(id, key + pl, VMSNAP_ID_LEN);
        id[VMSNAP_ID_LEN] = 0;
        return store_id_valid(id);
}

void vmsnap_remote_entries_free(struct vmsnap_remote_entry *e, size_t n)
{
        for (size_t i = 0; e && i < n; i++)
                vmsnap_remote_manifest_free(&e[i].m);
        free(e);
}

/* Fetches and parses the manifests of entries [0, n) in parallel batches. */
static int fetch_entries(struct vmsnap_remote *r, struct vmsnap_remote_entry *e, size_t n,
                         struct vmsnap_diag *d)
{
        enum { BATCH = 32 };
        struct s3_req q[BATCH];
        for (size_t at = 0; at < n; at += BATCH) {
                size_t k = MIN((size_t)BATCH, n - at);
                memset(q, 0, sizeof(q));
                for (size_t i = 0; i < k; i++) {
                        q[i].method = "GET";
                        q[i].max_response = VMSNAP_REMOTE_MANIFEST_MAX;
                        snprintf(q[i].key, sizeof(q[i].key), "%s", e[at + i].key);
                }
                int rr = s3_run(r->s3, q, k, VMSNAP_REMOTE_PARALLEL, NULL, d);
                for (size_t i = 0; rr == 0 && i < k; i++) {
                        struct vmsnap_remote_entry *x = &e[at + i];
                        struct vmsnap_diag pd = {0};
                        char id[VMSNAP_ID_LEN + 1], what[700];
                        manifest_key_id(x->key, id);
                        snprintf(what, sizeof(what), "%s", x->key);
                        if (q[i].err || q[i].status != 200)
                                s3_req_diag(r->s3, &q[i], &pd);
                        else
                                vmsnap_remote_manifest_parse((const char *)q[i].resp, q[i].resp_len,
                                                             what, id, &x->m, &pd);
                        snprintf(x->problem, sizeof(x->problem), "%.500s", pd.msg);
                        x->size = x->problem[0] ? 0 : vmsnap_remote_manifest_size(&x->m);
                }
                s3_req_reset(q, k);
                if (rr < 0)
                        return rr;
        }
        return 0;
}

static int entry_cmp(const void *a, const void *b)
{
        const struct vmsnap_remote_entry *x = a, *y = b;
        if (x->m.pushed != y->m.pushed)
                return x->m.pushed < y->m.pushed ? -1 : 1;
        return strcmp(x->key, y->key);
}

int vmsnap_remote_list(struct vmsnap_remote *r, struct vmsnap_remote_entry **ret, size_t *ret_n,
                       struct vmsnap_diag *d)
{
        _cleanup_free_ struct s3_object *objs = NULL;
        size_t nobj = 0;
        int e = s3_list(r->s3, MANIFEST_PREFIX, &objs, &nobj, NULL, d);
        if (e < 0)
                return e;
        struct vmsnap_remote_entry *arr = calloc(nobj ? nobj : 1, sizeof(*arr));
        if (!arr)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        size_t n = 0;
        for (size_t i = 0; i < nobj; i++) {
                char id[VMSNAP_ID_LEN + 1];
                if (!manifest_key_id(objs[i].key, id))
                        continue; /* not ours: ignored */
                snprintf(arr[n++].key, sizeof(arr[0].key), "%.127s", objs[i].key);
        }
        e = fetch_entries(r, arr, n, d);
        if (e < 0) {
                vmsnap_remote_entries_free(arr, n);
                return e;
        }
        qsort(arr, n, sizeof(*arr), entry_cmp);
        *ret = arr;
        *ret_n = n;
        return 0;
}

int vmsnap_remote_resolve(const struct vmsnap_remote_entry *e, size_t n, const char *ref,
                          struct vmsnap_diag *d)
{
        int r = vmsnap_store_ref_check(ref, strlen(ref), d);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (!e[i].problem[0] && strcasecmp(e[i].m.id, ref) == 0)
                        return (int)i;
        for (size_t i = 0; i < n; i++)
                if (!e[i].problem[0] && e[i].m.name[0] && strcmp(e[i].m.name, ref) == 0)
                        return (int)i;
        int found = -1, count = 0;
        char list[700] = "";
        if (strlen(ref) >= 3 && strspn(ref, "0123456789abcdefABCDEF-") == strlen(ref)) {
                for (size_t i = 0; i < n; i++) {
                        if (e[i].problem[0] || strncasecmp(e[i].m.id, ref, strlen(ref)) != 0)
                                continue;
                        found = (int)i;
                        count++;
                        size_t l = strlen(list);
                        snprintf(list + l, sizeof(list) - l, "%s%s", l ? ", " : "", e[i].m.id);
                }
        }
        if (count == 1)
                return found;
        if (count > 1)
                return vmsnap_diag(d, -ENOTUNIQ, "'%s' matches several remote snapshots: %s", ref,
                                   list);
        return vmsnap_diag(d, -ENOENT, "no remote snapshot '%s'", ref);
}

/* ---- rm ------------------------------------------------------------------------------------ */

int vmsnap_remote_rm(struct vmsnap_remote *r, const char *ref, unsigned flags,
                     char ret_id[VMSNAP_ID_LEN + 1], struct vmsnap_diag *d)
{
        struct vmsnap_remote_entry *e = NULL;
        size_t n = 0;
        int x = vmsnap_remote_list(r, &e, &n, d);
        if (x < 0)
                return x;
        int i = vmsnap_remote_resolve(e, n, ref, d);
        if (i < 0)
                goto out;
        x = 0;
        char users[600] = "";
        for (size_t k = 0; k < n; k++) {
                if (e[k].problem[0] || (int)k == i)
                        continue;
                if (strcmp(e[k].m.parent_id, e[i].m.id) && strcmp(e[k].m.template_id, e[i].m.id))
                        continue;
                size_t l = strlen(users);
                snprintf(users + l, sizeof(users) - l, "%s%s", l ? ", " : "", e[k].m.id);
        }
        if (users[0] && !(flags & VMSNAP_REMOTE_RM_FORCE)) {
                x = vmsnap_diag(d, -EBUSY, "remote snapshot %s is the parent or template of %s "
                                "(use --force to remove it anyway)", e[i].m.id, users);
                goto out;
        }
        struct s3_req q = {.method = "DELETE"};
        snprintf(q.key, sizeof(q.key), "%s", e[i].key);
        x = s3_run(r->s3, &q, 1, 1, NULL, d);
        if (x == 0 && (q.err || (q.status != 204 && q.status != 200)))
                x = s3_req_diag(r->s3, &q, d);
        s3_req_reset(&q, 1);
        if (x == 0 && ret_id)
                strcpy(ret_id, e[i].m.id);
out:
        if (i < 0)
                x = i;
        vmsnap_remote_entries_free(e, n);
        return x;
}

/* ---- gc ------------------------------------------------------------------------------------ */

static int hash_cmp(const void *a, const void *b)
{
        return memcmp(a, b, 32);
}

/* Sorted array of every chunk hash the manifests reference; -EBADMSG if one is unusable. */
static int referenced(struct vmsnap_remote_entry *e, size_t n, uint8_t (**ret)[32],
                      size_t *ret_n, struct vmsnap_diag *d)
{
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
                if (e[i].problem[0])
                        return vmsnap_diag(d, -EBADMSG, "refusing to collect garbage: %s",
                                           e[i].problem);
                for (size_t f = 0; f < e[i].m.nfiles; f++)
                        total += e[i].m.files[f].nchunks;
        }
        uint8_t(*h)[32] = malloc((total ? total : 1) * 32);
        if (!h)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                for (size_t f = 0; f < e[i].m.nfiles; f++)
                        for (size_t c = 0; c < e[i].m.files[f].nchunks; c++)
                                if (!e[i].m.files[f].chunks[c].zero)
                                        memcpy(h[k++], e[i].m.files[f].chunks[c].sha256, 32);
        qsort(h, k, 32, hash_cmp);
        *ret = h;
        *ret_n = k;
        return 0;
}

/* Deletes the chunks of keys [0, n) in parallel; counts the removed ones. */
static int delete_chunks(struct vmsnap_remote *r, const struct s3_object **objs, size_t n,
                         struct vmsnap_remote_gc_result *res, struct vmsnap_diag *d)
{
        enum { BATCH = 64 };
        struct s3_req q[BATCH];
        for (size_t at = 0; at < n; at += BATCH) {
                size_t k = MIN((size_t)BATCH, n - at);
                memset(q, 0, sizeof(q));
                for (size_t i = 0; i < k; i++) {
                        q[i].method = "DELETE";
                        snprintf(q[i].key, sizeof(q[i].key), "%s", objs[at + i]->key);
                }
                int x = s3_run(r->s3, q, k, VMSNAP_REMOTE_PARALLEL, NULL, d);
                for (size_t i = 0; x == 0 && i < k; i++) {
                        if (q[i].err || (q[i].status != 204 && q[i].status != 200))
                                x = s3_req_diag(r->s3, &q[i], d);
                        else {
                                res->chunks_removed++;
                                res->bytes_removed += objs[at + i]->size;
                        }
                }
                s3_req_reset(q, k);
                if (x < 0)
                        return x;
        }
        return 0;
}

int vmsnap_remote_gc(struct vmsnap_remote *r, int64_t grace, bool dry_run,
                     struct vmsnap_remote_gc_result *ret, struct vmsnap_diag *d)
{
        struct vmsnap_remote_gc_result res = {0};
        if (grace < 0)
                grace = 3600;
        struct vmsnap_remote_entry *e = NULL;
        size_t n = 0, nref = 0, nobj = 0, ndel = 0;
        uint8_t(*refs)[32] = NULL;
        struct s3_object *objs = NULL;
        const struct s3_object **del = NULL;
        int x = vmsnap_remote_list(r, &e, &n, d);
        if (x == 0)
                x = referenced(e, n, &refs, &nref, d);
        if (x == 0)
                x = s3_list(r->s3, CHUNK_PREFIX, &objs, &nobj, NULL, d);
        if (x == 0 && !(del = calloc(nobj ? nobj : 1, sizeof(*del))))
                x = vmsnap_diag(d, -ENOMEM, "out of memory");
        int64_t now = (int64_t)time(NULL);
        for (size_t i = 0; x == 0 && i < nobj; i++) {
                uint8_t h[32];
                const char *key = objs[i].key;
                size_t pl = strlen(CHUNK_PREFIX);
                if (strncmp(key, CHUNK_PREFIX, pl) != 0 || strlen(key) != pl + 64)
                        continue;
                char hex[65];
                memcpy(hex, key + pl, 65);
                bool ok = true;
                for (int k = 0; k < 64; k++)
                        ok &= (hex[k] >= '0' && hex[k] <= '9') || (hex[k] >= 'a' && hex[k] <= 'f');
                if (!ok)
                        continue;
                for (int k = 0; k < 32; k++) {
                        unsigned v;
                        sscanf(hex + 2 * k, "%2x", &v);
                        h[k] = (uint8_t)v;
                }
                res.chunks_seen++;
                if (bsearch(h, refs, nref, 32, hash_cmp)) {
                        res.chunks_referenced++;
                } else if (now - objs[i].modified < grace) {
                        res.chunks_young++;
                } else {
                        del[ndel++] = &objs[i];
                }
        }
        if (x == 0 && dry_run) {
                res.chunks_removed = ndel;
                for (size_t i = 0; i < ndel; i++)
                        res.bytes_removed += del[i]->size;
        } else if (x == 0) {
                x = delete_chunks(r, del, ndel, &res, d);
        }
        free(del);
        free(objs);
        free(refs);
        vmsnap_remote_entries_free(e, n);
        if (x == 0 && ret)
                *ret = res;
        return x;
}
