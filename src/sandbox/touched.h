/* touched: the blocks of a running VM's memory file that may differ from the snapshot it was
 * restored from, found without reading the rest (docs/sandbox.md "Pause: only the touched
 * blocks"). Internal to the sandbox layer. */
#ifndef VMSNAP_SANDBOX_TOUCHED_H
#define VMSNAP_SANDBOX_TOUCHED_H

#include <vmsnap/error.h>

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Taken just before a VMM is started on a freshly written memory file: whether the kernel
 * could have unmapped the file's pages from the VMM since (swap, shmem huge pages) is
 * judged against it at pause. */
struct touch_mark {
        bool valid;         /* the host allowed tracking when the mark was taken */
        uint64_t swap_outs; /* pswpout + zswpout of /proc/vmstat then */
};

struct touch_stats {
        uint64_t touched; /* blocks with a page the VMM mapped since the restore */
        uint64_t changed; /* of those, blocks whose content is not the parent's */
};

/* Fills *ret: valid when memfile is on tmpfs, no swap device is active and shmem never gets
 * huge pages here (memfile's mount included): otherwise a page the VMM wrote could leave its
 * page table without the VMM asking. */
void touch_mark_take(const char *memfile, struct touch_mark *ret);

/* True when a mark taken at restore still holds now: valid then, no swap device now, and no
 * page was swapped out in between. */
bool touch_mark_holds(const struct touch_mark *m);

/* Writes `out` (new, 0600, sparse, memfile's size) holding exactly the blocks of memfile
 * that process pid has mapped (its page table, /proc/<pid>/pagemap) and whose content differs
 * from the snapshot in parentdir (its block hashes); every other block is a hole. The caller
 * feeds `out` to vmsnap_mem_diff as VMSNAP_MEM_SOURCE_SPARSE. Returns 0 and *ret_stats, or
 * -ENOENT when pid does not map all of memfile, -EOPNOTSUPP for a parent without block
 * hashes, -errno otherwise (d says what; `out` is then removed). */
int touch_extract(pid_t pid, const char *memfile, const char *parentdir, const char *out,
                  struct touch_stats *ret_stats, struct vmsnap_diag *d);

#endif
