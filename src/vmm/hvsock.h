/* Host side of Firecracker's "hybrid" vsock, which Cloud Hypervisor implements too: the
 * VMM proxies guest vsock ports onto one Unix socket; a host process connects to it, writes
 * "CONNECT <port>\n" and gets "OK <host port>\n" once the guest accepted. Used to reach the
 * guest agent on VMMs without virtio-serial. */
#ifndef VMSNAP_VMM_HVSOCK_H
#define VMSNAP_VMM_HVSOCK_H

#include <stdint.h>

#include <vmsnap/error.h>

#define VMM_AGENT_VSOCK_PORT 1024u /* the guest agent's vsock port (docs/vmm.md) */
#define VMM_GUEST_CID        3u

/* Connects to guest `port` through the VMM's vsock socket at uds_path within timeout_ms.
 * Returns 0 and a connected blocking fd (O_CLOEXEC) positioned right after the "OK" line,
 * -ECONNREFUSED/-ENOENT when the VMM or the guest does not accept, -ETIMEDOUT, or -EPROTO
 * for another answer (d quotes it). */
int vmm_hvsock_connect(const char *uds_path, uint32_t port, int timeout_ms, int *ret_fd,
                       struct vmsnap_diag *d);

#endif
