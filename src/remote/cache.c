/* The local chunk cache (docs/remote.md "The local chunk cache"): one file per verified
 * chunk named by its SHA-256 in a private directory, checked again on every read, LRU by
 * mtime under a size limit, and per-chunk claims (OFD locks on one byte of .lock each) so a
 * chunk is fetched by one fetcher at a time on the host. */
#include "remote/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <vmsnap/chunk-cache.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TMP_PREFIX  ".tmp."
#define TMP_STALE_S 60 /* a temp file this old belongs to a dead writer */

struct vmsnap_chunk_cache {
        char dir[4096];
        int dfd;
        int lockfd; /* .lock: this handle's own open file description */
        uint64_t max;
        unsigned tmp_seq;
        struct vmsnap_chunk_cache_stats st;
};

/* True when name is 64 lowercase hex digits (a chunk file). */
static bool chunk_name(const char *name)
{
        size_t i = 0;
        for (; name[i]; i++)
                if (i >= 64 ||
                    !(isdigit((unsigned char)name[i]) || (name[i] >= 'a' && name[i] <= 'f')))
                        return false;
        return i == 64;
}

/* Removes temp files older than TMP_STALE_S (their writers died before the rename). */
static void sweep_tmp(struct vmsnap_chunk_cache *c)
{
        int fd = dup(c->dfd);
        DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
        if (!dir) {
                if (fd >= 0)
                        close(fd);
                return;
        }
        rewinddir(dir); /* the dup shares dfd's offset: another scan may have moved it */
        time_t now = time(NULL);
        struct dirent *e;
        while ((e = readdir(dir))) {
                struct stat st;
                if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0 ||
                    fstatat(c->dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (now - st.st_mtime > TMP_STALE_S)
                        unlinkat(c->dfd, e->d_name, 0);
        }
        closedir(dir);
}

int vmsnap_chunk_cache_open(const char *dir, uint64_t max_bytes, struct vmsnap_chunk_cache **ret,
                            struct vmsnap_diag *d)
{
        if (!dir || max_bytes == 0 || strlen(dir) >= sizeof(((struct vmsnap_chunk_cache *)0)->dir))
                return vmsnap_diag(d, -EINVAL, "chunk cache: bad directory or size limit");
        int r = vmsnap_fs_mkdir_private(AT_FDCWD, dir);
        if (r < 0 && r != -EEXIST)
                return vmsnap_diag(d, r, "%s: %s", dir, strerror(-r));
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", dir, strerror(errno));
        struct stat st;
        if (fstat(dfd, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", dir, strerror(errno));
        if (st.st_uid != geteuid() || (st.st_mode & 077))
                return vmsnap_diag(d, -EPERM,
                                   "%s: not a private directory of this user (mode "
                                   "%03o); chmod 700 it or remove it",
                                   dir, st.st_mode & 0777);
        int lfd = openat(dfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (lfd < 0)
                return vmsnap_diag(d, -errno, "%s/.lock: %s", dir, strerror(errno));
        struct vmsnap_chunk_cache *c = calloc(1, sizeof(*c));
        if (!c) {
                close(lfd);
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        snprintf(c->dir, sizeof(c->dir), "%s", dir);
        c->dfd = TAKE_FD(dfd);
        c->lockfd = lfd;
        c->max = max_bytes;
        sweep_tmp(c);
        *ret = c;
        return 0;
}

void vmsnap_chunk_cache_close(struct vmsnap_chunk_cache *c)
{
        if (!c)
                return;
        close(c->lockfd);
        close(c->dfd);
        free(c);
}

/* Removes a cached file that failed its check (only if it is still the file we read). */
static void drop_corrupt(struct vmsnap_chunk_cache *c, const char *name, int fd)
{
        struct stat a, b;
        if (fstat(fd, &a) == 0 && fstatat(c->dfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
            a.st_dev == b.st_dev && a.st_ino == b.st_ino)
                unlinkat(c->dfd, name, 0);
        c->st.corrupt++;
}

int vmsnap_chunk_cache_get(struct vmsnap_chunk_cache *c, const uint8_t sha256[32], void *buf,
                           size_t len, struct vmsnap_diag *d)
{
        char name[65];
        vmsnap_remote_hex(sha256, name);
        struct stat st;
        _cleanup_close_ int fd = vmsnap_fs_open_regular(c->dfd, name, &st, false);
        if (fd == -ENOENT) {
                c->st.misses++;
                return 0;
        }
        if (fd < 0) { /* a symlink or a special file where a chunk should be: not ours */
                if (fd == -ELOOP || fd == -EINVAL) {
                        unlinkat(c->dfd, name, 0);
                        c->st.corrupt++;
                        c->st.misses++;
                        return 0;
                }
                return vmsnap_diag(d, fd, "%s/%s: %s", c->dir, name, vmsnap_fs_open_error(fd));
        }
        ssize_t n = (uint64_t)st.st_size == len ? vmsnap_fs_pread_full(fd, buf, len, 0) : 0;
        if (n < 0)
                return vmsnap_diag(d, (int)n, "%s/%s: %s", c->dir, name, strerror((int)-n));
        uint8_t h[32];
        if ((size_t)n == len)
                remote_sha256(buf, len, h);
        if ((size_t)n != len || memcmp(h, sha256, 32) != 0) {
                drop_corrupt(c, name, fd);
                c->st.misses++;
                return 0;
        }
        futimens(fd, NULL); /* last use, for the LRU; a failure only ages it */
        c->st.hits++;
        return 1;
}

/* One chunk file seen by the eviction scan. */
struct entry {
        char name[65];
        uint64_t size;
        struct timespec used;
};

static int by_use(const void *a, const void *b)
{
        const struct entry *x = a, *y = b;
        if (x->used.tv_sec != y->used.tv_sec)
                return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
        return x->used.tv_nsec < y->used.tv_nsec ? -1 : x->used.tv_nsec > y->used.tv_nsec;
}

/* Lists the chunk files (malloc'd) and their total size. Returns 0 or -errno. */
static int scan(struct vmsnap_chunk_cache *c, struct entry **ret, size_t *ret_n,
                uint64_t *ret_total)
{
        int fd = dup(c->dfd);
        DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
        if (!dir) {
                int e = -errno;
                if (fd >= 0)
                        close(fd);
                return e;
        }
        rewinddir(dir); /* the dup shares dfd's offset: the last scan left it at the end */
        struct entry *v = NULL;
        size_t n = 0, cap = 0;
        uint64_t total = 0;
        struct dirent *e;
        int r = 0;
        while ((e = readdir(dir))) {
                struct stat st;
                if (!chunk_name(e->d_name) ||
                    fstatat(c->dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 64;
                        struct entry *nv = realloc(v, cap * sizeof(*v));
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                }
                memcpy(v[n].name, e->d_name, 65); /* 64 hex digits and the NUL */
                v[n].size = (uint64_t)st.st_size;
                v[n].used = st.st_mtim;
                total += v[n++].size;
        }
        closedir(dir);
        if (r < 0) {
                free(v);
                return r;
        }
        *ret = v;
        *ret_n = n;
        *ret_total = total;
        return 0;
}

/* Removes least recently used chunks (never keep) while the cache is over its limit. */
static int evict(struct vmsnap_chunk_cache *c, const char *keep)
{
        _cleanup_free_ struct entry *v = NULL;
        size_t n = 0;
        uint64_t total = 0;
        int r = scan(c, &v, &n, &total);
        if (r < 0 || total <= c->max)
                return r;
        qsort(v, n, sizeof(*v), by_use);
        for (size_t i = 0; i < n && total > c->max; i++) {
                if (strcmp(v[i].name, keep) == 0)
                        continue;
                if (unlinkat(c->dfd, v[i].name, 0) == 0) {
                        total -= v[i].size;
                        c->st.evicted++;
                } else if (errno == ENOENT) { /* another handle evicted it */
                        total -= v[i].size;
                }
        }
        return 0;
}

int vmsnap_chunk_cache_put(struct vmsnap_chunk_cache *c, const uint8_t sha256[32], const void *buf,
                           size_t len, struct vmsnap_diag *d)
{
        char name[65], tmp[96];
        vmsnap_remote_hex(sha256, name);
        uint8_t h[32];
        remote_sha256(buf, len, h);
        if (memcmp(h, sha256, 32) != 0)
                return vmsnap_diag(d, -EBADMSG,
                                   "chunk %s: refusing to cache bytes that do not "
                                   "hash to its name",
                                   name);
        snprintf(tmp, sizeof(tmp), TMP_PREFIX "%ld.%u", (long)getpid(), c->tmp_seq++);
        unlinkat(c->dfd, tmp, 0); /* a leftover of a dead process that had our pid */
        _cleanup_close_ int fd = vmsnap_fs_create_private(c->dfd, tmp, O_WRONLY);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s/%s: %s", c->dir, tmp, strerror(-fd));
        int r = vmsnap_fs_write_full(fd, buf, len);
        if (r == 0 && vmsnap_sys.fsync(fd) < 0)
                r = -errno;
        if (r == 0 && vmsnap_sys.renameat(c->dfd, tmp, c->dfd, name) < 0)
                r = -errno;
        if (r == 0)
                r = vmsnap_fs_fsync_dir(c->dfd);
        if (r < 0) {
                unlinkat(c->dfd, tmp, 0);
                return vmsnap_diag(d, r, "%s/%s: %s", c->dir, name, strerror(-r));
        }
        vmsnap_crashpoint("remote.cache.put");
        c->st.stored++;
        r = evict(c, name);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: eviction: %s", c->dir, strerror(-r));
        return 0;
}

/* The byte of .lock that stands for a chunk: its hash's first 62 bits (a valid off_t). */
static off_t claim_offset(const uint8_t sha256[32])
{
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | sha256[i];
        return (off_t)(v >> 2);
}

int vmsnap_chunk_cache_claim(struct vmsnap_chunk_cache *c, const uint8_t sha256[32], bool wait)
{
        struct flock fl = {.l_type = F_WRLCK,
                           .l_whence = SEEK_SET,
                           .l_start = claim_offset(sha256),
                           .l_len = 1};
        for (;;) {
                if (fcntl(c->lockfd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
                        return 1;
                if (errno == EINTR)
                        continue;
                if (!wait && (errno == EAGAIN || errno == EACCES))
                        return 0;
                return -errno;
        }
}

void vmsnap_chunk_cache_release(struct vmsnap_chunk_cache *c, const uint8_t sha256[32])
{
        struct flock fl = {.l_type = F_UNLCK,
                           .l_whence = SEEK_SET,
                           .l_start = claim_offset(sha256),
                           .l_len = 1};
        fcntl(c->lockfd, F_OFD_SETLK, &fl);
}

struct vmsnap_chunk_cache_stats vmsnap_chunk_cache_stats(const struct vmsnap_chunk_cache *c)
{
        return c->st;
}

int vmsnap_chunk_cache_parse_size(const char *v, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        unsigned shift = 0;
        if (*end == 'K' || *end == 'k')
                shift = 10;
        else if (*end == 'M' || *end == 'm')
                shift = 20;
        else if (*end == 'G' || *end == 'g')
                shift = 30;
        if (shift)
                end++;
        if (errno || end == v || *end || !isdigit((unsigned char)*v) || (n >> (63 - shift)))
                return -EINVAL;
        *ret = (uint64_t)n << shift;
        return 0;
}

int vmsnap_chunk_cache_size_from_env(uint64_t *ret)
{
        const char *v = getenv("VMSNAP_CHUNK_CACHE_SIZE");
        if (!v || !*v) {
                *ret = VMSNAP_CHUNK_CACHE_DEFAULT_SIZE;
                return 0;
        }
        return vmsnap_chunk_cache_parse_size(v, ret);
}
