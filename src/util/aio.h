/* One background writer thread: pwrite of a buffer while the caller fills the next one.
 * Used for large sequential output (diff files, materialized memory) so that reading,
 * hashing and writing overlap. */
#ifndef VMSNAP_UTIL_AIO_H
#define VMSNAP_UTIL_AIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct vmsnap_aio {
        int fd;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct iovec *iov; /* the job in flight, NULL when idle */
        int n_iov;
        struct iovec one;  /* the single buffer of a vmsnap_aio_submit job */
        uint64_t off;
        int err;   /* first write error, sticky */
        bool stop, started;
};

/* Starts the writer thread for fd; returns 0 or -errno. */
int vmsnap_aio_start(struct vmsnap_aio *a, int fd);

/* Waits for the previous write, then queues buf[0..len) at off. The caller must not touch
 * buf until the next submit or drain returns. Returns 0 or the first write error. */
int vmsnap_aio_submit(struct vmsnap_aio *a, const void *buf, size_t len, uint64_t off);

/* Like vmsnap_aio_submit for the gathered buffers iov[0..n): the caller must not touch iov
 * or the memory it points to until the next submit or drain returns. */
int vmsnap_aio_submitv(struct vmsnap_aio *a, struct iovec *iov, int n, uint64_t off);

/* Waits until no write is in flight; returns 0 or the first write error. */
int vmsnap_aio_drain(struct vmsnap_aio *a);

/* Drains and stops the thread; safe on a never-started writer. */
void vmsnap_aio_stop(struct vmsnap_aio *a);

#endif
