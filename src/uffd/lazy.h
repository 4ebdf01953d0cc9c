/* Lazy restore from the remote store (docs/remote.md "Lazy restore"): the memory diff files
 * of a lazy directory are sparse until a fault needs them; ensure() fetches the chunks
 * covering a range (from the chunk cache, else the remote), checks each against the
 * manifest's SHA-256, and writes it into the file before the installer reads it. */
#ifndef VMSNAP_UFFD_LAZY_H
#define VMSNAP_UFFD_LAZY_H

#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/remote.h>

struct uffd_lazy;

/* Opens the lazy directory dir: its remote-manifest.json (validated), a client of remote c,
 * the chunk cache cache_dir (NULL or a size of 0: none) and each memory diff file for
 * writing. Returns 0 and *ret, or -errno with d. */
int uffd_lazy_open(const char *dir, const struct vmsnap_remote_config *c, const char *cache_dir,
                   uint64_t cache_size, struct uffd_lazy **ret, struct vmsnap_diag *d);

void uffd_lazy_free(struct uffd_lazy *l);

/* Makes [off, off + len) of the diff file open as fd local and verified (fd not a memory
 * file of the manifest: nothing to do). Thread-safe; one fetch at a time. Returns 0, or
 * -errno with d naming the chunk (-EBADMSG: corrupt or missing in the bucket). */
int uffd_lazy_ensure(struct uffd_lazy *l, int fd, uint64_t off, uint64_t len,
                     struct vmsnap_diag *d);

/* Chunks fetched from the remote and taken from the cache so far. */
void uffd_lazy_counts(struct uffd_lazy *l, uint64_t *ret_fetched, uint64_t *ret_cached);

#endif
