/* Writing one build: a staged diff file filled with large buffered writes (or in-kernel
 * copies for long runs), its block hashes collected on the way, then made durable. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

int writer_open(struct build_writer *w, int dirfd, const struct vmsnap_uuid *id,
                uint64_t block_size, struct vmsnap_diag *d)
{
        memset(w, 0, sizeof(*w));
        w->file.fd = -1;
        w->id = *id;
        w->block_size = block_size;
        w->buf = malloc(IO_CHUNK);
        if (!w->buf)
                return vmsnap_diag(d, -ENOMEM, "diff file: out of memory");
        char name[64];
        vmsnap_mem_diff_name(id, name);
        return vmsnap_staged_open(&w->file, dirfd, name, d);
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
        w->hashes = h;
        w->cap_hashes = cap;
        return 0;
}

/* Writes the buffer out and asks the kernel to start writeback now, so the final fsync
 * waits for little (the bytes go to disk while we produce the next ones). */
static int flush(struct build_writer *w, struct vmsnap_diag *d)
{
        if (w->buf_len == 0)
                return 0;
        int r = vmsnap_fs_pwrite_full(w->file.fd, w->buf, w->buf_len, w->flushed);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: write failed: %s", w->file.name, strerror(-r));
        sync_file_range(w->file.fd, (off_t)w->flushed, (off_t)w->buf_len,
                        SYNC_FILE_RANGE_WRITE);
        w->flushed += w->buf_len;
        w->buf_len = 0;
        return 0;
}

int writer_append(struct build_writer *w, const uint8_t *blocks, size_t len,
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
        while (len > 0) {
                size_t room = IO_CHUNK - w->buf_len;
                size_t n = MIN(room, len);
                memcpy(w->buf + w->buf_len, blocks, n);
                w->buf_len += n;
                w->size += n;
                blocks += n;
                len -= n;
                if (w->buf_len == IO_CHUNK) {
                        int r = flush(w, d);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int writer_copy(struct build_writer *w, int fd, uint64_t off, uint64_t len,
                const struct vmsnap_hash *hashes, struct vmsnap_diag *d)
{
        int r = flush(w, d);
        if (r < 0)
                return r;
        uint64_t nblocks = len / w->block_size;
        if (grow_hashes(w, nblocks) < 0)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", w->file.name);
        r = vmsnap_fs_copy_range(fd, off, w->file.fd, w->flushed, len);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: copy failed: %s", w->file.name, strerror(-r));
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
        int r = flush(w, d);
        if (r < 0)
                return r;
        r = vmsnap_staged_commit(&w->file, d);
        if (r < 0)
                return r;
        snprintf(point, sizeof(point), "%s.data", op);
        vmsnap_crashpoint(point);
        r = hashes_write(w->file.dirfd, &w->id, w->block_size, w->hashes, w->n_hashes, d);
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
        vmsnap_staged_abort(&w->file);
        free(w->buf);
        w->buf = NULL;
        free(w->hashes);
        w->hashes = NULL;
}
