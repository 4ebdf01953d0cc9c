/* `vmsnapd --demo`: after start, shows pause/resume on a real sandbox, step by step. */
#ifndef VMSNAP_API_DEMO_H
#define VMSNAP_API_DEMO_H

#include <pthread.h>

#include "api/server.h"

/* Starts the demo in its own thread (the daemon keeps serving meanwhile); the caller joins
 * *ret before closing the host. The demo stops early when the daemon shuts down. Returns 0
 * or -errno. */
int api_demo_start(struct api_server *srv, const char *socket_path, pthread_t *ret);

#endif
