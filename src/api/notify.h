/* Readiness for systemd (Type=notify): the sd_notify(3) datagram protocol, written out
 * here (a few lines) rather than linking libsystemd into every release. */
#ifndef VMSNAP_API_NOTIFY_H
#define VMSNAP_API_NOTIFY_H

/* Takes $NOTIFY_SOCKET out of the environment (so that no VMM or helper the daemon starts
 * inherits it) and keeps it for api_notify. Call once, before any thread starts. */
void api_notify_init(void);

/* Sends state ("READY=1", "STOPPING=1") to the service manager kept by api_notify_init.
 * Returns 0 (also when there is no service manager) or -errno. */
int api_notify(const char *state);

#endif
