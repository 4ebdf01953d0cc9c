/* The bounded worker pool: a fixed ring of jobs fed by the event loop, N installer threads,
 * and the retry list where installs that hit EAGAIN wait for the loop to requeue them.
 * A page is claimed by exactly one job, so the retry list holds no duplicates. */
#ifndef VMSNAP_UFFD_POOL_H
#define VMSNAP_UFFD_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "uffd/install.h"

struct pool {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        struct job *ring;
        size_t cap, head, len;
        struct job *retry;
        size_t n_retry, cap_retry;
        bool stopping;
        pthread_t *threads;
        struct installer *inst;
        unsigned n_threads;
        bool initialized;
};

/* Starts n threads with installers of `piece` bytes and a ring of ring_cap jobs. On failure
 * everything started is stopped again. Returns 0 or -errno. */
int pool_start(struct pool *p, struct vmsnap_uffd_server *srv, unsigned n, size_t piece,
               size_t ring_cap);

/* Queues a job; false when the ring is full or the pool is stopping. */
bool pool_push(struct pool *p, const struct job *j);

/* Parks a job on the retry list. Returns 0 or -ENOMEM. */
int pool_defer(struct pool *p, const struct job *j);

/* Moves parked jobs into the ring (as many as fit). Returns how many remain parked. */
size_t pool_requeue(struct pool *p);

/* Number of parked jobs. */
size_t pool_parked(struct pool *p);

/* Stops and joins every thread, frees everything; safe on a pool never started. */
void pool_stop(struct pool *p);

#endif
