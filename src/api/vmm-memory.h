/* What the running VMMs' memory costs and what page sharing saves, read from the kernel's
 * accounting of each process (/proc/PID/smaps_rollup) at scrape time (docs/api.md,
 * Metrics). */
#ifndef VMSNAP_API_VMM_MEMORY_H
#define VMSNAP_API_VMM_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct api_vmm_memory {
        uint64_t rss; /* bytes: the sum of each process's resident set */
        uint64_t pss; /* bytes: the sum of each process's proportional share (a page mapped
                         by k processes counts 1/k in each) */
        unsigned processes; /* the processes read (a pid that is gone is skipped) */
};

/* Sums Rss and Pss over pids (0 entries skipped). rss - pss is what sharing saves: the
 * bytes the processes would need on top if no page were shared. Returns 0, or -errno when
 * a process that exists could not be read (EACCES: not ours to read). */
int api_vmm_memory(const pid_t *pids, size_t n, struct api_vmm_memory *ret);

/* Parses smaps_rollup text: adds its Rss and Pss (kB) to ret as bytes. Returns 0, or
 * -EBADMSG when either line is missing. */
int api_vmm_memory_parse(const char *text, struct api_vmm_memory *ret);

#endif
