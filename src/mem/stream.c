/* Forward-only read windows over diff files. Every build stores its blocks in ascending
 * address order, so walking a header's extents in address order reads each build's file
 * front to back: one large read per window instead of one syscall per extent. */
#include "mem/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <string.h>

size_t stream_window_size(uint32_t n_builds, uint64_t block_size)
{
        size_t w = ((size_t)64 << 20) / (n_builds ? n_builds : 1);
        w = MIN(w, (size_t)8 << 20);
        return MAX(w, (size_t)block_size);
}

int stream_init(struct build_stream *st, int fd, size_t cap)
{
        st->fd = fd;
        st->win_off = 0;
        st->win_len = 0;
        st->cap = cap;
        st->win = malloc(cap);
        return st->win ? 0 : -ENOMEM;
}

void stream_free(struct build_stream *st)
{
        free(st->win);
        st->win = NULL;
}

const uint8_t *stream_get(struct build_stream *st, uint64_t off, size_t len, int *err)
{
        if (off >= st->win_off && off + len <= st->win_off + st->win_len)
                return st->win + (off - st->win_off);
        if (len > st->cap) {
                *err = -EINVAL; /* callers copy longer runs in-kernel */
                return NULL;
        }
        ssize_t n = vmsnap_fs_pread_full(st->fd, st->win, st->cap, off);
        if (n < 0 || (size_t)n < len) {
                *err = n < 0 ? (int)n : -ENODATA;
                return NULL;
        }
        st->win_off = off;
        st->win_len = (size_t)n;
        return st->win;
}
