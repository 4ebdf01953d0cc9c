/* Verified reads of a snapshot's address space, shared by the page server's installer and
 * the FUSE memory file (mem-serve): each extent resolved through the generation chain
 * (vmsnap_mem_locate), zero extents as zeros, data fetched first when the snapshot is a
 * lazy remote one (uffd_lazy_ensure), then checked block by block against the block-hash
 * table. What is checked is exactly what the caller gets. */
#ifndef VMSNAP_UFFD_READ_H
#define VMSNAP_UFFD_READ_H

#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/mem.h>

struct uffd_lazy;

/* Reads [a, b) of snap's address space (block-aligned, b <= its size) into dst; lazy may be
 * NULL; snapdir names the snapshot in messages. Adds the data blocks without a hash (v1) to
 * *unverified. Returns 0, or -errno with d (-EBADMSG: a block or chunk failed its check). */
int uffd_read_verified(const struct vmsnap_mem_snapshot *snap, struct uffd_lazy *lazy,
                       const char *snapdir, uint64_t a, uint64_t b, uint8_t *dst,
                       uint64_t *unverified, struct vmsnap_diag *d);

#endif
