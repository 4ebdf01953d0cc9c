/* Writing one build: a staged diff file filled with large gathered writes (pwritev of the
 * caller's own memory where it stays put, else of copies) that a background thread
 * performs while the caller produces the next job (O_DIRECT where the filesystem allows:
 * the file must reach the disk anyway, and skipping the page cache halves the cost here),
 * or by sharing a long run's extents with the source (reflink); block hashes are collected on the way. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <string.h>

int writer_open(struct build_writer *w, int dirfd, const struct vmsnap_uuid *id,
                uint64_t block_size, struct vmsnap_diag *d)
{
        memset(w, 0, sizeof(*w));
        w->file.fd = -1;
        w->id = *id;
        w->block_size = block_size;
        w->iovs[0] = calloc(WRITER_IOV, sizeof(struct iovec));
        w->iovs[1] = calloc(WRITER_IOV, sizeof(struct iovec));
        if (!w->iovs[0] || !w->iovs[1])
                return vmsnap_diag(d, -ENOMEM, "diff file: out of memory");
        char name[64];
        vmsnap_mem_diff_name(id, name);
        int r = vmsnap_staged_open(&w->file, dirfd, name, d);
        if (r < 0)
                return r;
        w->direct = vmsnap_fs_set_direct(w->file.fd, true);
        r = vmsnap_aio_start(&w->aio, w->file.fd);
        return r < 0 ? vmsnap_diag(d, r, "%s: cannot start writer thread", name) : 0;
}

static int grow_hashes(struct build_writer *w, uint64_t extra)
{
        if (w->n_hashes + extra <= w->cap_hashes)
                return 0;
        uint64_t cap = w->cap_hashes ? w->cap_hashes : 4096;
        while (cap < w->n_hashes + extra)
                cap *= 2;
        struct vmsnap_hash *h = realloc(w->hashes, cap * sizeof(*h));
        if (!h)
                return -ENOMEM;
        vmsnap_prefault(h + w->n_hashes, (cap - w->n_hashes) * sizeof(*h));
        w->hashes = h;
        w->cap_hashes = cap;
        return 0;
}

/* Records the hashes of len bytes of blocks (given, or computed from the bytes). */
static int add_hashes(struct build_writer *w, const uint8_t *blocks, size_t len,
                      const struct vmsnap_hash *hashes, struct vmsnap_diag *d)
{
        uint64_t nblocks = len / w->block_size;
        if (grow_hashes(w, nblocks) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", w->file.name);
        if (hashes)
                memcpy(w->hashes + w->n_hashes, hashes, nblocks * sizeof(*hashes));
        else
                hashes_of_blocks(blocks, len, w->block_size, w->hashes + w->n_hashes);
        w->n_hashes += nblocks;
        return 0;
}

int writer_submit(struct build_writer *w, struct vmsnap_diag *d)
{
        if (w->n_iov == 0) { /* nothing new: still, the previous job must be written */
                int r = vmsnap_aio_drain(&w->aio);
                return r < 0 ? vmsnap_diag(d, r, "%s: write failed: %s", w->file.name,
                                           strerror(-r)) : 0;
        }
        int r = vmsnap_aio_submitv(&w->aio, w->iovs[w->cur], w->n_iov, w->flushed);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: write failed: %s", w->file.name, strerror(-r));
        w->flushed += w->job_len;
        w->job_len = 0;
        w->n_iov = 0;
        w->buf_len = 0;
        w->cur ^= 1;
        w->jobs++;
        return 0;
}

/* Adds len bytes at p to the job being filled (joined to the previous buffer when they
 * follow it in memory); submits the job when it is full. */
static int add_iov(struct build_writer *w, const uint8_t *p, size_t len, struct vmsnap_diag *d)
{
        struct iovec *v = w->iovs[w->cur];
        if (w->n_iov > 0 && (const uint8_t *)v[w->n_iov - 1].iov_base +
                                            v[w->n_iov - 1].iov_len == p)
                v[w->n_iov - 1].iov_len += len;
        else
                v[w->n_iov++] = (struct iovec){.iov_base = (void *)p, .iov_len = len};
        w->job_len += len;
        w->size += len;
        if (w->n_iov == WRITER_IOV || w->job_len >= IO_CHUNK)
                return writer_submit(w, d);
        return 0;
}

int writer_append(struct build_writer *w, const uint8_t *blocks, size_t len,
                  const struct vmsnap_hash *hashes, struct vmsnap_diag *d)
{
        if (!w->bufs[0]) { /* only copying callers pay for the buffers */
                w->bufs[0] = aligned_alloc(4096, IO_CHUNK);
                w->bufs[1] = aligned_alloc(4096, IO_CHUNK);
                if (!w->bufs[0] || !w->bufs[1])
                        return vmsnap_diag(d, -ENOMEM, "%s: out of memory", w->file.name);
        }
        int r = add_hashes(w, blocks, len, hashes, d);
        while (r >= 0 && len > 0) {
                /* A full buffer always ends its job (job_len >= buf_len): never stuck. */
                size_t n = MIN(IO_CHUNK - w->buf_len, len);
                uint8_t *dst = w->bufs[w->cur] + w->buf_len;
                memcpy(dst, blocks, n);
                w->buf_len += n;
                blocks += n;
                len -= n;
                r = add_iov(w, dst, n, d);
        }
        return r;
}

int writer_append_ref(struct build_writer *w, const uint8_t *blocks, size_t len,
                      const struct vmsnap_hash *hashes, struct vmsnap_diag *d)
{
        int r = add_hashes(w, blocks, len, hashes, d);
        while (r >= 0 && len > 0) {
                size_t n = MIN(IO_CHUNK, len); /* long runs: several jobs, still overlapped */
                r = add_iov(w, blocks, n, d);
                blocks += n;
                len -= n;
        }
        return r;
}

int writer_clone(struct build_writer *w, int fd, uint64_t off, uint64_t len,
                 const struct vmsnap_hash *hashes, struct vmsnap_diag *d)
{
        int r = writer_submit(w, d); /* the clone lands after everything queued */
        if (r < 0)
                return r;
        if ((r = vmsnap_aio_drain(&w->aio)) < 0)
                return vmsnap_diag(d, r, "%s: write failed: %s", w->file.name, strerror(-r));
        uint64_t nblocks = len / w->block_size;
        if (grow_hashes(w, nblocks) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", w->file.name);
        struct file_clone_range fcr = {.src_fd = fd, .src_offset = off, .src_length = len,
                                       .dest_offset = w->flushed};
        if (ioctl(w->file.fd, FICLONERANGE, &fcr) < 0) {
                if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV ||
                    errno == EINVAL || errno == ENOSYS)
                        return -EOPNOTSUPP; /* no reflinks here: the caller writes */
                return vmsnap_diag(d, -errno, "%s: clone failed: %s", w->file.name,
                                   strerror(errno));
        }
        memcpy(w->hashes + w->n_hashes, hashes, nblocks * sizeof(*hashes));
        w->n_hashes += nblocks;
        w->flushed += len;
        w->size += len;
        return 0;
}

int writer_finish(struct build_writer *w, const char *op, struct vmsnap_mem_build *ret,
                  struct vmsnap_diag *d)
{
        char point[64];
        int r = writer_submit(w, d);
        if (r >= 0 && (r = vmsnap_aio_drain(&w->aio)) < 0)
                r = vmsnap_diag(d, r, "%s: write failed: %s", w->file.name, strerror(-r));
        if (r < 0)
                return r;
        vmsnap_aio_stop(&w->aio);
        r = vmsnap_staged_commit(&w->file, d);
        if (r < 0)
                return r;
        snprintf(point, sizeof(point), "%s.data", op);
        vmsnap_crashpoint(point);
        r = hashes_write(w->file.dirfd, &w->id, w->block_size, w->hashes, w->n_hashes,
                         !w->file.nosync, d);
        if (r < 0)
                return r;
        snprintf(point, sizeof(point), "%s.hashes", op);
        vmsnap_crashpoint(point);
        ret->id = w->id;
        ret->file_size = w->size;
        hashes_checksum(w->hashes, w->n_hashes, &ret->checksum);
        return 0;
}

void writer_close(struct build_writer *w)
{
        vmsnap_aio_stop(&w->aio);
        vmsnap_staged_abort(&w->file);
        free(w->bufs[0]);
        free(w->bufs[1]);
        free(w->iovs[0]);
        free(w->iovs[1]);
        w->bufs[0] = w->bufs[1] = NULL;
        w->iovs[0] = w->iovs[1] = NULL;
        free(w->hashes);
        w->hashes = NULL;
}
