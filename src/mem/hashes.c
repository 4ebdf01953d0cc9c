/* Block-hash tables (memfile.<id>.hashes): one XXH3-128 per stored block, so a new
 * generation finds changed blocks without re-reading its parent and the page server checks
 * every block it installs. The build checksum in the header is the hash of this table. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

_Static_assert(HASHES_FIXED == 48, "hash table header size is part of the on-disk format");

void hashes_name(const struct vmsnap_uuid *id, char out[80])
{
        char diff[64];
        vmsnap_mem_diff_name(id, diff);
        snprintf(out, 80, "%s.hashes", diff);
}

void hashes_checksum(const struct vmsnap_hash *h, uint64_t n, struct vmsnap_hash *ret)
{
        vmsnap_hash128(h, (size_t)n * sizeof(*h), ret);
}

void hashes_of_blocks(const uint8_t *buf, size_t len, uint64_t block_size,
                      struct vmsnap_hash *out)
{
        for (size_t off = 0; off < len; off += block_size)
                vmsnap_hash128(buf + off, block_size, out++);
}

bool block_is_zero(const uint8_t *p, size_t len)
{
        /* Word-wise with an early exit: data blocks usually differ in the first bytes. */
        const uint64_t *w = (const uint64_t *)p;
        size_t n = len / 8;
        for (size_t i = 0; i < n; i += 4) {
                if ((w[i] | w[i + 1] | w[i + 2] | w[i + 3]) != 0)
                        return false;
        }
        return true;
}

static int check_table(const uint8_t *buf, size_t len, const struct vmsnap_uuid *id,
                       uint64_t block_size, uint64_t count, const char *name,
                       struct vmsnap_diag *d)
{
        if (len < HASHES_FIXED + HEADER_TRAILER || memcmp(buf, HASHES_MAGIC, 8) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: not a block-hash table (bad magic or "
                                   "truncated)", name);
        if (get_le32(buf + 8) != 1)
                return vmsnap_diag(d, -EBADMSG, "%s: unsupported version %u", name,
                                   get_le32(buf + 8));
        if (get_le64(buf + 16) != block_size || memcmp(buf + 24, id->b, 16) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: block size or build id does not match the "
                                   "header", name);
        if (get_le64(buf + 40) != count ||
            len != HASHES_FIXED + count * sizeof(struct vmsnap_hash) + HEADER_TRAILER)
                return vmsnap_diag(d, -EBADMSG, "%s: holds %llu hashes, the diff file has %llu "
                                   "blocks", name, (unsigned long long)get_le64(buf + 40),
                                   (unsigned long long)count);
        struct vmsnap_hash sum;
        vmsnap_hash128(buf, len - HEADER_TRAILER, &sum);
        if (memcmp(sum.b, buf + len - HEADER_TRAILER, 16) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: checksum mismatch (corrupt file)", name);
        return 0;
}

int hashes_load(int dirfd, const struct vmsnap_uuid *id, uint64_t block_size, uint64_t count,
                struct vmsnap_hash **ret, struct vmsnap_diag *d)
{
        char name[80];
        hashes_name(id, name);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        uint64_t max = HASHES_FIXED + count * sizeof(struct vmsnap_hash) + HEADER_TRAILER;
        int r = vmsnap_fs_read_file(dirfd, name, (size_t)max, &buf, &len);
        if (r == -EFBIG)
                return vmsnap_diag(d, -EBADMSG, "%s: larger than its diff file needs", name);
        if (r < 0)
                return vmsnap_diag(d, r == -EINVAL || r == -ELOOP ? -EBADMSG : r,
                                   "%s: cannot read: %s", name, vmsnap_fs_open_error(r));
        r = check_table(buf, len, id, block_size, count, name, d);
        if (r < 0)
                return r;
        /* the table moved to the front of the buffer it was read into: no second copy */
        memmove(buf, buf + HASHES_FIXED, count * sizeof(struct vmsnap_hash));
        *ret = (struct vmsnap_hash *)TAKE_PTR(buf);
        return 0;
}

int hashes_write(int dirfd, const struct vmsnap_uuid *id, uint64_t block_size,
                 const struct vmsnap_hash *h, uint64_t n, bool sync, struct vmsnap_diag *d)
{
        char name[80];
        hashes_name(id, name);
        size_t len = HASHES_FIXED + n * sizeof(*h) + HEADER_TRAILER;
        _cleanup_free_ uint8_t *buf = vmsnap_calloc_big(len);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        memcpy(buf, HASHES_MAGIC, 8);
        put_le32(buf + 8, 1);
        put_le64(buf + 16, block_size);
        memcpy(buf + 24, id->b, 16);
        put_le64(buf + 40, n);
        if (n)
                memcpy(buf + HASHES_FIXED, h, n * sizeof(*h));
        struct vmsnap_hash sum;
        vmsnap_hash128(buf, len - HEADER_TRAILER, &sum);
        memcpy(buf + len - HEADER_TRAILER, sum.b, 16);

        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dirfd, name, d);
        if (r < 0)
                return r;
        s.nosync = !sync;
        r = vmsnap_fs_write_full(s.fd, buf, len);
        if (r < 0)
                r = vmsnap_diag(d, r, "%s: write failed: %s", name, strerror(-r));
        else
                r = vmsnap_staged_commit(&s, d);
        if (r < 0)
                vmsnap_staged_abort(&s);
        return r;
}

int hash_diff_file(int fd, uint64_t size, uint64_t block_size, struct vmsnap_hash *out)
{
        _cleanup_free_ uint8_t *buf = malloc(IO_CHUNK);
        if (!buf)
                return -ENOMEM;
        for (uint64_t off = 0; off < size;) {
                size_t n = (size_t)MIN((uint64_t)IO_CHUNK, size - off);
                ssize_t got = vmsnap_fs_pread_full(fd, buf, n, off);
                if (got < 0)
                        return (int)got;
                if ((size_t)got != n)
                        return -ENODATA;
                hashes_of_blocks(buf, n, block_size, out + off / block_size);
                off += n;
        }
        return 0;
}
