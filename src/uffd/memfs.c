/* The memory file system (see include/vmsnap/memfs.h): libfuse3's low-level API, two
 * read-only files in one flat root. `memory` reads go through read.c, the page server's
 * verified reader (generation chain, lazy chunk fetch, block hashes); `status` is the
 * counters as JSON, made at open. Nothing is writable: every operation that would change
 * a file is answered EROFS, but an open for writing is accepted, because QEMU 7.2 opens its
 * mem-path O_RDWR even to map it private (docs/sandbox.md "Clones that share memory"). */
#define FUSE_USE_VERSION 35
#include "uffd/lazy.h"
#include "uffd/read.h"
#include "util/cleanup.h"

#include <vmsnap/memfs.h>

#include <fuse_lowlevel.h>
#include <jansson.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

enum { INO_ROOT = FUSE_ROOT_ID, INO_MEMORY, INO_STATUS };

struct vmsnap_memfs {
        char *snapdir, *mnt;
        struct vmsnap_memfs_opts o;
        struct vmsnap_mem_snapshot *snap;
        struct uffd_lazy *lazy;
        uint64_t size, block_size;
        struct fuse_session *se;
        bool mounted;
        time_t t0;
        pthread_mutex_t mu;
        char error[1024]; /* the first failure, under mu */
        _Atomic uint64_t reads, bytes, errors, writes_refused, unverified;
};

static struct vmsnap_memfs *fs_of(fuse_req_t req)
{
        return fuse_req_userdata(req);
}

/* The attributes of ino; false when there is no such inode. */
static bool attr_of(struct vmsnap_memfs *m, fuse_ino_t ino, struct stat *st)
{
        memset(st, 0, sizeof(*st));
        st->st_ino = ino;
        st->st_uid = 0;
        st->st_gid = 0;
        st->st_atime = st->st_mtime = st->st_ctime = m->t0;
        st->st_blksize = VMSNAP_MEMFS_MAX_READ;
        if (ino == INO_ROOT) {
                st->st_mode = S_IFDIR | 0555;
                st->st_nlink = 2;
        } else if (ino == INO_MEMORY || ino == INO_STATUS) {
                st->st_mode = S_IFREG | 0444;
                st->st_nlink = 1;
                st->st_size = ino == INO_MEMORY ? (off_t)m->size : 0; /* status: direct I/O */
                st->st_blocks = (st->st_size + 511) / 512;
        } else {
                return false;
        }
        return true;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
        (void)userdata;
        conn->max_read = VMSNAP_MEMFS_MAX_READ;
        conn->max_readahead = VMSNAP_MEMFS_READAHEAD_KB * 1024u;
        conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA; /* the file never changes */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        struct fuse_entry_param e = {.attr_timeout = 86400, .entry_timeout = 86400};
        fuse_ino_t ino = parent != INO_ROOT                          ? 0
                         : strcmp(name, VMSNAP_MEMFS_FILE) == 0   ? INO_MEMORY
                         : strcmp(name, VMSNAP_MEMFS_STATUS) == 0 ? INO_STATUS
                                                                  : 0;
        if (!ino || !attr_of(fs_of(req), ino, &e.attr)) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        if (ino == INO_STATUS)
                e.attr_timeout = e.entry_timeout = 0;
        e.ino = ino;
        fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        (void)fi;
        struct stat st;
        if (!attr_of(fs_of(req), ino, &st))
                fuse_reply_err(req, ENOENT);
        else
                fuse_reply_attr(req, &st, ino == INO_STATUS ? 0 : 86400);
}

/* Counts and refuses an attempt to change something. */
static void refuse(fuse_req_t req)
{
        atomic_fetch_add(&fs_of(req)->writes_refused, 1);
        fuse_reply_err(req, EROFS);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
        (void)ino, (void)attr, (void)to_set, (void)fi;
        refuse(req);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
        (void)ino, (void)buf, (void)size, (void)off, (void)fi;
        refuse(req);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi)
{
        (void)ino, (void)mode, (void)off, (void)len, (void)fi;
        refuse(req);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
        (void)ino, (void)name, (void)value, (void)size, (void)flags;
        refuse(req);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
        (void)parent, (void)name, (void)mode, (void)fi;
        refuse(req);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
        (void)parent, (void)name, (void)mode, (void)rdev;
        refuse(req);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
        (void)parent, (void)name, (void)mode;
        refuse(req);
}

static void op_name(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        (void)parent, (void)name;
        refuse(req); /* unlink, rmdir */
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct vmsnap_memfs *m = fs_of(req);
        if (ino != INO_MEMORY && ino != INO_STATUS) {
                fuse_reply_err(req, ino == INO_ROOT ? EISDIR : ENOENT);
                return;
        }
        if (fi->flags & O_TRUNC) { /* the kernel sends the truncation as open's flag here */
                refuse(req);
                return;
        }
        if (ino == INO_MEMORY) {
                fi->keep_cache = 1; /* one page cache for every mapping of every clone */
                fi->noflush = 1;
        } else {
                char *json = NULL;
                if (vmsnap_memfs_stats_json(m, &json) < 0) {
                        fuse_reply_err(req, ENOMEM);
                        return;
                }
                fi->fh = (uintptr_t)json;
                fi->direct_io = 1;
        }
        if (fuse_reply_open(req, fi) != 0 && ino == INO_STATUS)
                free((char *)(uintptr_t)fi->fh);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        if (ino == INO_STATUS)
                free((char *)(uintptr_t)fi->fh);
        fuse_reply_err(req, 0);
}

/* Records a failed read (the first one's message is kept) and reports it. */
static void read_failed(struct vmsnap_memfs *m, const char *msg)
{
        atomic_fetch_add(&m->errors, 1);
        pthread_mutex_lock(&m->mu);
        if (!m->error[0])
                snprintf(m->error, sizeof(m->error), "%s", msg);
        pthread_mutex_unlock(&m->mu);
        if (m->o.on_error)
                m->o.on_error(m->o.ctx, msg);
}

/* Answers a read of the memory file: whole blocks read and checked, then the part asked. */
static void read_memory(fuse_req_t req, struct vmsnap_memfs *m, size_t size, uint64_t off)
{
        if (off >= m->size || size == 0) {
                fuse_reply_buf(req, NULL, 0);
                return;
        }
        uint64_t end = MIN(off + MIN(size, (size_t)VMSNAP_MEMFS_MAX_READ), m->size);
        uint64_t bs = m->block_size, a = off / bs * bs, b = (end + bs - 1) / bs * bs;
        b = MIN(b, m->size);
        _cleanup_free_ uint8_t *buf = malloc(b - a);
        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        struct vmsnap_diag d = {0};
        uint64_t unverified = 0;
        int r = uffd_read_verified(m->snap, m->lazy, m->snapdir, a, b, buf, &unverified, &d);
        if (unverified)
                atomic_fetch_add(&m->unverified, unverified);
        if (r < 0) { /* nothing of it is returned: the VMM's access fails (SIGBUS) */
                read_failed(m, d.msg[0] ? d.msg : strerror(-r));
                fuse_reply_err(req, EIO);
                return;
        }
        atomic_fetch_add(&m->reads, 1);
        atomic_fetch_add(&m->bytes, end - off);
        fuse_reply_buf(req, (const char *)buf + (off - a), end - off);
}

/* Answers a read of the status text s (made at open, freed by op_release) from a copy this
 * worker owns. s is alive while the request is: the kernel sends RELEASE only after every
 * read of the file was answered. But it may send it, and another worker may free s, as soon
 * as the reply is written, before fuse_reply_buf returns (AddressSanitizer checks writev's
 * buffers after the syscall and saw that as a use after free). */
static void read_status(fuse_req_t req, const char *s, size_t size, uint64_t off)
{
        size_t len = s ? strlen(s) : 0;
        if (off >= len || size == 0) {
                fuse_reply_buf(req, NULL, 0);
                return;
        }
        size_t n = MIN(size, len - (size_t)off);
        _cleanup_free_ char *copy = malloc(n);
        if (!copy) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        memcpy(copy, s + off, n);
        fuse_reply_buf(req, copy, n);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
        if (off < 0)
                fuse_reply_err(req, EINVAL);
        else if (ino == INO_MEMORY)
                read_memory(req, fs_of(req), size, (uint64_t)off);
        else
                read_status(req, (const char *)(uintptr_t)fi->fh, size, (uint64_t)off);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
        (void)fi;
        if (ino != INO_ROOT) {
                fuse_reply_err(req, ENOTDIR);
                return;
        }
        static const struct { const char *name; fuse_ino_t ino; mode_t mode; } ents[] = {
                {".", INO_ROOT, S_IFDIR},
                {"..", INO_ROOT, S_IFDIR},
                {VMSNAP_MEMFS_FILE, INO_MEMORY, S_IFREG},
                {VMSNAP_MEMFS_STATUS, INO_STATUS, S_IFREG},
        };
        char buf[512];
        size_t used = 0;
        for (size_t i = (size_t)off; i < sizeof(ents) / sizeof(ents[0]); i++) {
                struct stat st = {.st_ino = ents[i].ino, .st_mode = ents[i].mode};
                size_t n = fuse_add_direntry(req, buf + used, MIN(size, sizeof(buf)) - used,
                                             ents[i].name, &st, (off_t)(i + 1));
                if (used + n > MIN(size, sizeof(buf)))
                        break;
                used += n;
        }
        fuse_reply_buf(req, buf, used);
}

static const struct fuse_lowlevel_ops ops = {
        .init = op_init,
        .lookup = op_lookup,
        .getattr = op_getattr,
        .setattr = op_setattr,
        .open = op_open,
        .read = op_read,
        .write = op_write,
        .release = op_release,
        .readdir = op_readdir,
        .fallocate = op_fallocate,
        .setxattr = op_setxattr,
        .create = op_create,
        .mknod = op_mknod,
        .mkdir = op_mkdir,
        .unlink = op_name,
        .rmdir = op_name,
};

/* Raises the mount's read-ahead to one remote chunk: a fault then reads (and a lazy
 * snapshot fetches) a useful amount, not the kernel's default 128 KiB. FUSE can only lower
 * it from the INIT reply; the backing device's sysfs knob raises it. The device number
 * comes from /proc/self/mountinfo: a stat of the mount would wait for INIT, which only the
 * loop answers. Best effort. */
static void raise_readahead(const char *mnt)
{
        char real[PATH_MAX], line[8192], mp[PATH_MAX];
        unsigned maj, min;
        if (!realpath(mnt, real))
                return;
        FILE *mi = fopen("/proc/self/mountinfo", "re");
        bool found = false;
        unsigned a, b;
        while (mi && fgets(line, sizeof(line), mi)) /* the last one: the top of a stack */
                if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, mp) == 3 &&
                    strcmp(mp, real) == 0) { /* our mount points need no unescaping */
                        maj = a;
                        min = b;
                        found = true;
                }
        if (mi)
                fclose(mi);
        if (!found)
                return;
        char path[96];
        snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
        FILE *f = fopen(path, "we");
        if (!f)
                return;
        fprintf(f, "%u\n", VMSNAP_MEMFS_READAHEAD_KB);
        fclose(f);
}

/* Opens the snapshot and, for a lazy one, its remote and cache. */
static int open_snapshot(struct vmsnap_memfs *m, struct vmsnap_diag *d)
{
        int r = m->o.remote_lazy ? uffd_lazy_open(m->snapdir, m->o.remote_lazy, m->o.chunk_cache,
                                                  m->o.chunk_cache_size, &m->lazy, d)
                                 : 0;
        if (r == 0)
                r = vmsnap_mem_open(m->snapdir, &m->snap, d);
        if (r < 0)
                return r;
        const struct vmsnap_mem_header *h = vmsnap_mem_header(m->snap);
        m->size = h->size;
        m->block_size = h->block_size;
        return 0;
}

/* Makes the FUSE session and mounts it on m->mnt. */
static int mount_fs(struct vmsnap_memfs *m, struct vmsnap_diag *d)
{
        struct stat st;
        if (stat(m->mnt, &st) < 0 || !S_ISDIR(st.st_mode))
                return vmsnap_diag(d, -ENOTDIR, "%s: not a directory to mount on", m->mnt);
        char mopts[160];
        snprintf(mopts, sizeof(mopts),
                 "allow_other,fsname=vmsnap-memory,subtype=vmsnap,max_read=%u",
                 VMSNAP_MEMFS_MAX_READ);
        char *argv[] = {"vmsnap-memfs", "-o", mopts, NULL};
        struct fuse_args args = FUSE_ARGS_INIT(3, argv);
        m->se = fuse_session_new(&args, &ops, sizeof(ops), m);
        fuse_opt_free_args(&args);
        if (!m->se)
                return vmsnap_diag(d, -EIO, "%s: cannot start a FUSE session (libfuse3)", m->mnt);
        if (fuse_session_mount(m->se, m->mnt) != 0)
                return vmsnap_diag(d, -EIO, "%s: cannot mount the memory file system (FUSE: is "
                                   "/dev/fuse there and are we root?)", m->mnt);
        m->mounted = true;
        raise_readahead(m->mnt);
        return 0;
}

int vmsnap_memfs_new(const char *snapdir, const char *mountpoint,
                     const struct vmsnap_memfs_opts *o, struct vmsnap_memfs **ret,
                     struct vmsnap_diag *d)
{
        if (!snapdir || !mountpoint || !ret)
                return vmsnap_diag(d, -EINVAL, "memory file: snapshot directory and mount "
                                   "point are required");
        struct vmsnap_memfs *m = calloc(1, sizeof(*m));
        if (!m)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        pthread_mutex_init(&m->mu, NULL);
        m->t0 = time(NULL);
        if (o)
                m->o = *o;
        m->snapdir = strdup(snapdir);
        m->mnt = strdup(mountpoint);
        int r = m->snapdir && m->mnt ? open_snapshot(m, d) : vmsnap_diag(d, -ENOMEM, "out of memory");
        if (r == 0)
                r = mount_fs(m, d);
        if (r < 0) {
                vmsnap_memfs_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int vmsnap_memfs_run(struct vmsnap_memfs *m, struct vmsnap_diag *d)
{
        if (fuse_set_signal_handlers(m->se) != 0)
                return vmsnap_diag(d, -EIO, "%s: cannot install signal handlers", m->mnt);
        struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = 8};
        int r = fuse_session_loop_mt(m->se, &cfg);
        fuse_remove_signal_handlers(m->se);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: serving the memory file: %s", m->mnt, strerror(-r));
        return 0;
}

void vmsnap_memfs_stats(struct vmsnap_memfs *m, struct vmsnap_memfs_stats *ret,
                        char ret_error[1024])
{
        *ret = (struct vmsnap_memfs_stats){
                .reads = atomic_load(&m->reads),
                .bytes = atomic_load(&m->bytes),
                .errors = atomic_load(&m->errors),
                .writes_refused = atomic_load(&m->writes_refused),
                .unverified = atomic_load(&m->unverified),
        };
        if (m->lazy)
                uffd_lazy_counts(m->lazy, &ret->chunks_fetched, &ret->chunks_cached);
        if (ret_error) {
                pthread_mutex_lock(&m->mu);
                memcpy(ret_error, m->error, sizeof(m->error));
                pthread_mutex_unlock(&m->mu);
        }
}

int vmsnap_memfs_stats_json(struct vmsnap_memfs *m, char **ret)
{
        struct vmsnap_memfs_stats st;
        char err[1024];
        vmsnap_memfs_stats(m, &st, err);
        json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I}}", "size",
                              (json_int_t)m->size, "reads", (json_int_t)st.reads, "bytes",
                              (json_int_t)st.bytes, "errors", (json_int_t)st.errors,
                              "writes_refused", (json_int_t)st.writes_refused, "unverified",
                              (json_int_t)st.unverified, "remote", "chunks_fetched",
                              (json_int_t)st.chunks_fetched, "chunks_cached",
                              (json_int_t)st.chunks_cached);
        if (o)
                json_object_set_new(o, "error", err[0] ? json_string(err) : json_null());
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!s)
                return -ENOMEM;
        size_t n = strlen(s);
        char *line = realloc(s, n + 2); /* a line, for cat */
        if (!line) {
                free(s);
                return -ENOMEM;
        }
        memcpy(line + n, "\n", 2);
        *ret = line;
        return 0;
}

void vmsnap_memfs_free(struct vmsnap_memfs *m)
{
        if (!m)
                return;
        if (m->se) {
                if (m->mounted)
                        fuse_session_unmount(m->se);
                fuse_session_destroy(m->se);
        }
        vmsnap_mem_close(m->snap);
        uffd_lazy_free(m->lazy);
        pthread_mutex_destroy(&m->mu);
        free(m->snapdir);
        free(m->mnt);
        free(m);
}
