/* Verified reads of a snapshot's address space (see read.h). */
#include "uffd/read.h"
#include "uffd/lazy.h"
#include "util/fs.h"

#include <errno.h>
#include <string.h>
#include "util/cleanup.h"

/* Reads and checks one data extent piece [o, o + n) stored at loc. */
static int read_data(const struct vmsnap_mem_snapshot *snap, struct uffd_lazy *lazy,
                     const char *snapdir, const struct vmsnap_mem_location *loc, uint64_t o,
                     uint64_t n, uint8_t *p, uint64_t *unverified, struct vmsnap_diag *d)
{
        uint64_t bs = vmsnap_mem_header(snap)->block_size;
        if (lazy) { /* the chunks under it, fetched and checked first */
                int r = uffd_lazy_ensure(lazy, loc->fd, loc->storage_offset, n, d);
                if (r < 0)
                        return r;
        }
        ssize_t got = vmsnap_fs_pread_full(loc->fd, p, n, loc->storage_offset);
        if (got != (ssize_t)n) {
                int e = got < 0 ? (int)got : -EIO;
                return vmsnap_diag(d, e, "reading %llu bytes of guest memory at 0x%llx from the "
                                   "snapshot failed: %s", (unsigned long long)n,
                                   (unsigned long long)o,
                                   got < 0 ? strerror(-e) : "diff file too short");
        }
        for (uint64_t k = 0; k < n / bs; k++) {
                if (!loc->hashes) {
                        (*unverified)++;
                        continue;
                }
                if (!vmsnap_mem_block_ok(snap, p + k * bs, &loc->hashes[k]))
                        return vmsnap_diag(d, -EBADMSG, "block at 0x%llx does not match its "
                                           "hash: the snapshot in %s is corrupt",
                                           (unsigned long long)(o + k * bs), snapdir);
        }
        return 0;
}

int uffd_read_verified(const struct vmsnap_mem_snapshot *snap, struct uffd_lazy *lazy,
                       const char *snapdir, uint64_t a, uint64_t b, uint8_t *dst,
                       uint64_t *unverified, struct vmsnap_diag *d)
{
        for (uint64_t o = a; o < b;) {
                struct vmsnap_mem_location loc;
                int r = vmsnap_mem_locate(snap, o, &loc);
                if (r < 0)
                        return vmsnap_diag(d, r, "cannot locate offset 0x%llx in the snapshot",
                                           (unsigned long long)o);
                uint64_t n = MIN(loc.run, b - o);
                uint8_t *p = dst + (o - a);
                if (loc.zero)
                        memset(p, 0, n);
                else if ((r = read_data(snap, lazy, snapdir, &loc, o, n, p, unverified, d)) < 0)
                        return r;
                o += n;
        }
        return 0;
}
