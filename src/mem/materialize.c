/* materialize: header + diff files → one complete memory file for VMMs that restore from a
 * file (QEMU, Firecracker's File backend). ZERO extents stay holes; address-contiguous data
 * is gathered into large writes; the result appears atomically under its name. */
#include "mem/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>

struct out_run {
        int fd;
        uint8_t *buf;
        size_t len;
        uint64_t start; /* address of buf[0] */
};

static int out_flush(struct out_run *o)
{
        int r = o->len ? vmsnap_fs_pwrite_full(o->fd, o->buf, o->len, o->start) : 0;
        o->start += o->len;
        o->len = 0;
        return r;
}

/* Adds data for [offset, offset+len) to the output run (flushing when not contiguous). */
static int out_add(struct out_run *o, uint64_t offset, const uint8_t *p, size_t len)
{
        if (o->len && (o->start + o->len != offset || o->len + len > IO_CHUNK)) {
                int r = out_flush(o);
                if (r < 0)
                        return r;
        }
        if (o->len == 0)
                o->start = offset;
        memcpy(o->buf + o->len, p, len);
        o->len += len;
        return 0;
}

static int write_extent(struct out_run *o, struct vmsnap_mem_snapshot *s,
                        struct build_stream *st, const struct vmsnap_mem_extent *e)
{
        if (e->length >= COPY_RANGE_MIN) {
                int r = out_flush(o);
                return r < 0 ? r
                             : vmsnap_fs_copy_range(s->fds[e->build], e->storage_offset, o->fd,
                                                    e->offset, e->length);
        }
        int err = 0;
        const uint8_t *p = stream_get(st, e->storage_offset, (size_t)e->length, &err);
        return p ? out_add(o, e->offset, p, (size_t)e->length) : err;
}

static int write_all(struct vmsnap_mem_snapshot *s, int fd, struct vmsnap_mem_result *res)
{
        uint32_t nb = s->h->n_builds;
        struct out_run o = {.fd = fd, .buf = malloc(IO_CHUNK)};
        struct build_stream *streams = calloc(nb, sizeof(*streams));
        int r = o.buf && streams ? 0 : -ENOMEM;
        size_t win = MAX(MIN(((size_t)64 << 20) / nb, (size_t)8 << 20), (size_t)s->h->block_size);
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
        if (r == 0)
                r = out_flush(&o);
        for (uint32_t i = 0; streams && i < nb; i++)
                stream_free(&streams[i]);
        free(streams);
        free(o.buf);
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
