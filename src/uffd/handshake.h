/* Firecracker's UFFD handshake: one message on the Unix socket carrying a JSON array of guest
 * regions, with the userfaultfd attached via SCM_RIGHTS (docs/uffd.md "Protocol"). */
#ifndef VMSNAP_UFFD_HANDSHAKE_H
#define VMSNAP_UFFD_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmsnap/error.h>

#define UFFD_MAX_REGIONS    1024u
#define UFFD_MAX_MESSAGE    (64u << 10) /* bytes of one handshake or control message */
#define UFFD_MAX_FDS        4u          /* fds accepted on one connection (E2B's fork sends 2) */
#define UFFD_PAGE_4K        4096ull
#define UFFD_PAGE_2M        (2ull << 20)

/* One guest memory region as the VMM describes it. */
struct uffd_region {
        uint64_t base;      /* host virtual address in the VMM (base_host_virt_addr) */
        uint64_t size;      /* bytes */
        uint64_t offset;    /* where the region starts in the snapshot's address space */
        uint64_t page_size; /* 4096 or 2 MiB */
};

/* Parses the handshake JSON (every field-name generation: none, page_size_kib — which
 * carries bytes —, page_size, or both, which must agree). Checks each region on its own
 * (alignment, sizes) and that no two overlap in the VMM's address space. Returns 0 with a
 * malloc'd array sorted by base, or -EPROTO/-ENOMEM with d naming the problem. */
int uffd_handshake_parse(const char *buf, size_t len, struct uffd_region **ret,
                         size_t *ret_n, struct vmsnap_diag *d);

/* Checks that every region fits a snapshot of mem_size bytes cut in block_size blocks.
 * Returns 0 or -EPROTO (with d). */
int uffd_regions_fit(const struct uffd_region *r, size_t n, uint64_t mem_size,
                     uint64_t block_size, struct vmsnap_diag *d);

/* Bytes a connection has sent so far, and the fds that came with them. */
struct uffd_inbox {
        char *data;
        size_t len, cap;
        int fds[UFFD_MAX_FDS];
        unsigned n_fds;
};

/* Reads what is available on a non-blocking socket into box, collecting SCM_RIGHTS fds
 * (O_CLOEXEC). Returns the number of bytes read (> 0), 0 at end of stream, -EAGAIN when
 * nothing is there, -EMSGSIZE past UFFD_MAX_MESSAGE or too many fds, or -errno. */
ssize_t uffd_inbox_recv(int sock, struct uffd_inbox *box);

/* When box holds one complete JSON value, returns 1 and its length (*ret_len); 0 when more
 * bytes are needed; -EBADMSG when the bytes cannot become JSON. */
int uffd_inbox_complete(const struct uffd_inbox *box, size_t *ret_len);

/* Takes the first fd out of box (-1 when none). */
int uffd_inbox_take_fd(struct uffd_inbox *box);

/* Drops the first len bytes of box (after a message was handled). */
void uffd_inbox_consume(struct uffd_inbox *box, size_t len);

/* Frees the buffer and closes any fds still held; the box can be reused after. */
void uffd_inbox_clear(struct uffd_inbox *box);

/* The peer's pid from SO_PEERCRED (0 when the kernel cannot name it). Returns 0 or -errno. */
int uffd_peer_pid(int sock, pid_t *ret_pid);

/* Checks that fd is a userfaultfd and puts it in non-blocking mode (poll needs it).
 * Returns 0, or -EBADF (not a userfaultfd) / -errno. */
int uffd_check_fd(int fd);

#endif
