/* The prefetch thread: replays the working set in bulk right after the handshake, then
 * (when asked) installs every remaining data block in growing chunks, stepping back to
 * small chunks whenever the guest faults so that demand faults are not starved. */
#ifndef VMSNAP_UFFD_PREFETCH_H
#define VMSNAP_UFFD_PREFETCH_H

struct vmsnap_uffd_server;

/* Starts the thread when there is a working set to replay or prefetch was requested;
 * otherwise marks both as done. Returns 0 or -errno. */
int prefetch_start(struct vmsnap_uffd_server *s);

/* Waits for the thread (it stops early once the server is stopping). */
void prefetch_join(struct vmsnap_uffd_server *s);

#endif
