/* materialize: header + diff files → one complete memory file for VMMs that restore from a
 * file (QEMU, Firecracker's File backend). ZERO extents stay holes; address-contiguous data
 * is gathered into large writes; the result appears atomically under its name. */
#include "mem/internal.h"
#include "util/aio.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/vfs.h>

/* On a disk (O_DIRECT), short zero gaps between data are written as zeros so that writes
 * stay large; longer ones stay holes. On tmpfs and the like every ZERO extent stays a hole
 * (zeros written there would cost memory) and small writes are cheap. Reads are the same
 * either way. */
#define GAP_FILL_DIRECT ((uint64_t)64 << 10)

/* Address-ordered output: a run of memory gathered in one buffer while the previous one is
 * written by a background thread (O_DIRECT where allowed). */
struct out_run {
        int fd;
        uint8_t *bufs[2];
        int cur;
        size_t len;
        uint64_t start; /* address of bufs[cur][0] */
        struct vmsnap_aio aio;
        bool direct;
};

static int out_flush(struct out_run *o)
{
        int r = 0;
        if (o->len && o->direct)
                r = vmsnap_aio_submit(&o->aio, o->bufs[o->cur], o->len, o->start);
        else if (o->len)
                r = vmsnap_fs_pwrite_full(o->fd, o->bufs[o->cur], o->len, o->start);
        o->start += o->len;
        o->len = 0;
        o->cur ^= 1;
        return r;
}

/* Adds data for [offset, offset+len) to the output run (flushing when it cannot extend). */
static int out_add(struct out_run *o, uint64_t offset, const uint8_t *p, size_t len)
{
        uint64_t end = o->start + o->len, gap_fill = o->direct ? GAP_FILL_DIRECT : 0;
        if (o->len && (offset - end > gap_fill || offset + len - o->start > IO_CHUNK)) {
                int r = out_flush(o);
                if (r < 0)
                        return r;
        }
        if (o->len == 0)
                o->start = offset;
        uint8_t *buf = o->bufs[o->cur];
        memset(buf + o->len, 0, (size_t)(offset - (o->start + o->len)));
        memcpy(buf + (offset - o->start), p, len);
        o->len = (size_t)(offset - o->start) + len;
        return 0;
}

/* An in-kernel copy for a long extent, after everything queued before it is written. */
static int out_copy(struct out_run *o, int fd, uint64_t from, uint64_t to, uint64_t len)
{
        int r = out_flush(o);
        if (r >= 0)
                r = vmsnap_aio_drain(&o->aio);
        if (r < 0)
                return r;
        if (o->direct)
                vmsnap_fs_set_direct(o->fd, false);
        r = vmsnap_fs_copy_range(fd, from, o->fd, to, len);
        if (o->direct)
                vmsnap_fs_set_direct(o->fd, true);
        return r;
}

static int write_extent(struct out_run *o, struct vmsnap_mem_snapshot *s,
                        struct build_stream *st, const struct vmsnap_mem_extent *e)
{
        if (e->length >= COPY_RANGE_MIN || e->length > st->cap)
                return out_copy(o, s->fds[e->build], e->storage_offset, e->offset, e->length);
        int err = 0;
        const uint8_t *p = stream_get(st, e->storage_offset, (size_t)e->length, &err);
        return p ? out_add(o, e->offset, p, (size_t)e->length) : err;
}

/* True for memory-backed filesystems (tmpfs): there every written zero costs RAM. */
static bool memory_backed(int fd)
{
        struct statfs st;
        return fstatfs(fd, &st) == 0 && st.f_type == TMPFS_MAGIC;
}

static int out_open(struct out_run *o, int fd)
{
        memset(o, 0, sizeof(*o));
        o->fd = fd;
        o->bufs[0] = aligned_alloc(4096, IO_CHUNK);
        o->bufs[1] = aligned_alloc(4096, IO_CHUNK);
        if (!o->bufs[0] || !o->bufs[1])
                return -ENOMEM;
        o->direct = !memory_backed(fd) && vmsnap_fs_set_direct(fd, true);
        return vmsnap_aio_start(&o->aio, fd);
}

static int out_close(struct out_run *o, int r)
{
        if (r == 0)
                r = out_flush(o);
        int w = vmsnap_aio_drain(&o->aio);
        vmsnap_aio_stop(&o->aio);
        free(o->bufs[0]);
        free(o->bufs[1]);
        return r < 0 ? r : w;
}

static int write_all(struct vmsnap_mem_snapshot *s, int fd, struct vmsnap_mem_result *res)
{
        uint32_t nb = s->h->n_builds;
        struct out_run o;
        int r = out_open(&o, fd);
        struct build_stream *streams = calloc(nb, sizeof(*streams));
        if (r == 0 && !streams)
                r = -ENOMEM;
        size_t win = stream_window_size(nb, s->h->block_size);
        for (uint32_t i = 0; i < nb && r == 0; i++)
                r = stream_init(&streams[i], s->fds[i], win);
        for (uint64_t i = 0; i < s->h->n_extents && r == 0; i++) {
                const struct vmsnap_mem_extent *e = &s->h->extents[i];
                if (e->build == VMSNAP_MEM_ZERO) {
                        res->zero_blocks += e->length / s->h->block_size;
                        continue;
                }
                r = write_extent(&o, s, &streams[e->build], e);
                res->data_blocks += e->length / s->h->block_size;
                res->bytes_written += e->length;
        }
        r = out_close(&o, r);
        for (uint32_t i = 0; streams && i < nb; i++)
                stream_free(&streams[i]);
        free(streams);
        return r;
}

int vmsnap_mem_materialize(const char *snapdir, const char *outfile,
                           struct vmsnap_mem_result *ret, struct vmsnap_diag *d)
{
        if (!snapdir || !outfile)
                return vmsnap_diag(d, -EINVAL, "mem materialize: missing argument");
        struct vmsnap_mem_snapshot *s;
        int r = vmsnap_mem_open(snapdir, &s, d);
        if (r < 0)
                return r;
        _cleanup_free_ char *copy1 = strdup(outfile), *copy2 = strdup(outfile);
        _cleanup_close_ int outdir = copy1 ? vmsnap_fs_open_dir(dirname(copy1)) : -ENOMEM;
        struct vmsnap_staged st = {.fd = -1};
        struct vmsnap_mem_result res = {.generation = s->h->generation,
                                        .build_id = s->h->build_id};
        r = outdir < 0 ? vmsnap_diag(d, outdir, "%s: cannot open its directory: %s", outfile,
                                     strerror(-outdir))
                       : vmsnap_staged_open(&st, outdir, basename(copy2), d);
        if (r >= 0 && ftruncate(st.fd, (off_t)s->h->size) < 0)
                r = vmsnap_diag(d, -errno, "%s: cannot size to %llu bytes: %s", outfile,
                                (unsigned long long)s->h->size, strerror(errno));
        if (r >= 0 && (r = write_all(s, st.fd, &res)) < 0)
                r = vmsnap_diag(d, r, "%s: writing from %s failed: %s", outfile, snapdir,
                                strerror(-r));
        if (r >= 0)
                r = vmsnap_staged_commit(&st, d);
        if (r >= 0 && (r = vmsnap_fs_fsync_dir(outdir)) < 0)
                r = vmsnap_diag(d, r, "%s: fsync of directory failed", outfile);
        if (r < 0 && st.fd >= 0)
                vmsnap_staged_abort(&st);
        vmsnap_mem_close(s);
        if (r >= 0 && ret)
                *ret = res;
        return r;
}
