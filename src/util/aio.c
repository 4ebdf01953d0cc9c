/* Background writer (see aio.h): one thread, one job in flight, so a producer with two
 * buffers never waits for the disk unless it is faster than the disk. */
#include "util/aio.h"
#include "util/fs.h"

#include <errno.h>
#include <string.h>

static void *writer_main(void *arg)
{
        struct vmsnap_aio *a = arg;
        pthread_mutex_lock(&a->lock);
        for (;;) {
                while (!a->iov && !a->stop)
                        pthread_cond_wait(&a->cond, &a->lock);
                if (!a->iov)
                        break;
                struct iovec *iov = a->iov;
                int n = a->n_iov;
                uint64_t off = a->off;
                pthread_mutex_unlock(&a->lock);
                int r = vmsnap_fs_pwritev_full(a->fd, iov, n, off);
                pthread_mutex_lock(&a->lock);
                if (r < 0 && a->err == 0)
                        a->err = r;
                a->iov = NULL;
                pthread_cond_broadcast(&a->cond);
        }
        pthread_mutex_unlock(&a->lock);
        return NULL;
}

int vmsnap_aio_start(struct vmsnap_aio *a, int fd)
{
        memset(a, 0, sizeof(*a));
        a->fd = fd;
        pthread_mutex_init(&a->lock, NULL);
        pthread_cond_init(&a->cond, NULL);
        int r = pthread_create(&a->thread, NULL, writer_main, a);
        if (r != 0)
                return -r;
        a->started = true;
        return 0;
}

/* Waits for the job in flight; called with the lock held. */
static int wait_idle(struct vmsnap_aio *a)
{
        while (a->iov)
                pthread_cond_wait(&a->cond, &a->lock);
        return a->err;
}

int vmsnap_aio_submitv(struct vmsnap_aio *a, struct iovec *iov, int n, uint64_t off)
{
        pthread_mutex_lock(&a->lock);
        int r = wait_idle(a);
        if (r == 0 && n > 0) {
                a->iov = iov;
                a->n_iov = n;
                a->off = off;
                pthread_cond_broadcast(&a->cond);
        }
        pthread_mutex_unlock(&a->lock);
        return r;
}

int vmsnap_aio_submit(struct vmsnap_aio *a, const void *buf, size_t len, uint64_t off)
{
        pthread_mutex_lock(&a->lock);
        int r = wait_idle(a); /* a->one may still be in flight */
        pthread_mutex_unlock(&a->lock);
        if (r < 0)
                return r;
        a->one = (struct iovec){.iov_base = (void *)buf, .iov_len = len};
        return vmsnap_aio_submitv(a, &a->one, 1, off);
}

int vmsnap_aio_drain(struct vmsnap_aio *a)
{
        if (!a->started)
                return 0;
        pthread_mutex_lock(&a->lock);
        int r = wait_idle(a);
        pthread_mutex_unlock(&a->lock);
        return r;
}

void vmsnap_aio_stop(struct vmsnap_aio *a)
{
        if (!a->started)
                return;
        pthread_mutex_lock(&a->lock);
        wait_idle(a);
        a->stop = true;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->thread, NULL);
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->cond);
        a->started = false;
}
