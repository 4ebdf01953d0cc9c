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


/* Fills *ret: valid when memfile is on tmpfs, no swap device is active and shmem never gets
 * huge pages here (memfile's mount included): otherwise a page the VMM wrote could leave its
 * page table without the VMM asking. */
void touch_mark_take(const char *memfile, struct touch_mark *ret);

/* True when a mark taken at restore still holds now: valid then, no swap device now, and no
 * page was swapped out in between. */
bool touch_mark_holds(const struct touch_mark *m);

/* The pages of memfile (4096 bytes each) that process pid has in its page table
 * (/proc/<pid>/pagemap): a superset of the pages it wrote since it mapped the file. *ret_pages
 * (one bit per page, LSB first; the caller frees it) goes to vmsnap_mem_diff_pages;
 * *ret_touched counts its bits. Returns 0, -ENOENT when pid does not map all of memfile
 * (the caller then diffs by content), -errno otherwise (d says what). */
int touch_pages(pid_t pid, const char *memfile, uint8_t **ret_pages, uint64_t *ret_touched,
                struct vmsnap_diag *d);

/* Drops process pid's page-table entries of memfile (MADV_PAGEOUT through its pidfd, every
 * mapping of the file in /proc/<pid>/maps): on tmpfs without swap the pages stay in the file,
 * and from here on a page is present in pid's page table again only once pid (or KVM for
 * its guest) touches it, so touch_pages lists a superset of what pid wrote after this call.
 * A page the kernel would not unmap stays present (listed: safe). Returns 0 or -errno. */
int touch_pageout(pid_t pid, const char *memfile, struct vmsnap_diag *d);

#endif
