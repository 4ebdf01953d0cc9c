/* The listening sockets of vmsnapd, made before libmicrohttpd takes them over: a Unix socket
 * bound with mode 0600 from the start, and a TCP socket from "HOST:PORT". */
#ifndef VMSNAP_API_SOCKETS_H
#define VMSNAP_API_SOCKETS_H

#include <stddef.h>

#include <vmsnap/error.h>

/* Binds and listens on a Unix socket at path, mode 0600 (a stale socket file is replaced; a
 * live one, where another daemon answers, is -EADDRINUSE). Call before any thread starts:
 * it sets the process umask for the bind. Returns the fd or -errno. */
int api_bind_unix(const char *path, struct vmsnap_diag *d);

/* Binds and listens on TCP "HOST:PORT" or "[V6]:PORT" (PORT 0 picks a free one). Returns
 * the fd and writes "http://HOST:PORT" as bound into url, or -errno. */
int api_bind_tcp(const char *addr, char *url, size_t url_size, struct vmsnap_diag *d);

#endif
