/* The worker pool (see pool.h). */
#include "uffd/pool.h"
#include "uffd/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct worker_arg {
        struct pool *pool;
        unsigned idx;
};

/* Takes the next job, waiting for one; false when the pool stops. */
static bool pool_pop(struct pool *p, struct job *ret)
{
        pthread_mutex_lock(&p->mu);
        while (!p->stopping && p->len == 0)
                pthread_cond_wait(&p->cv, &p->mu);
        bool ok = !p->stopping;
        if (ok) {
                *ret = p->ring[p->head];
                p->head = (p->head + 1) % p->cap;
                p->len--;
        }
        pthread_mutex_unlock(&p->mu);
        return ok;
}



static void *worker_main(void *arg)
{
        struct pool *p = ((struct worker_arg *)arg)->pool;
        unsigned idx = ((struct worker_arg *)arg)->idx;
        free(arg);
        struct job job;
        while (pool_pop(p, &job))
                install_job(&p->inst[idx], &job);
        return NULL;
}

static int start_thread(struct pool *p, unsigned idx)
{
        struct worker_arg *a = malloc(sizeof(*a));
        if (!a)
                return -ENOMEM;
        *a = (struct worker_arg){p, idx};
        int r = pthread_create(&p->threads[idx], NULL, worker_main, a);
        if (r != 0) {
                free(a);
                return -r;
        }
        return 0;
}

int pool_start(struct pool *p, struct vmsnap_uffd_server *srv, unsigned n, size_t piece,
               size_t ring_cap)
{
        memset(p, 0, sizeof(*p));
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, NULL);
        p->initialized = true;
        p->cap = ring_cap;
        p->ring = calloc(ring_cap, sizeof(*p->ring));
        p->threads = calloc(n, sizeof(*p->threads));
        p->inst = calloc(n, sizeof(*p->inst));
        if (!p->ring || !p->threads || !p->inst) {
                pool_stop(p);
                return -ENOMEM;
        }
        for (unsigned i = 0; i < n; i++) {
                int r = installer_init(&p->inst[i], srv, piece);
                if (r == 0)
                        r = start_thread(p, i);
                if (r < 0) {
                        installer_free(&p->inst[i]);
                        pool_stop(p);
                        return r;
                }
                p->n_threads = i + 1;
        }
        return 0;
}

bool pool_push(struct pool *p, const struct job *j)
{
        pthread_mutex_lock(&p->mu);
        bool ok = !p->stopping && p->len < p->cap;
        if (ok) {
                p->ring[(p->head + p->len) % p->cap] = *j;
                p->len++;
                pthread_cond_signal(&p->cv);
        }
        pthread_mutex_unlock(&p->mu);
        return ok;
}

int pool_defer(struct pool *p, const struct job *j)
{
        int r = 0;
        pthread_mutex_lock(&p->mu);
        if (p->n_retry == p->cap_retry) {
                size_t cap = p->cap_retry ? p->cap_retry * 2 : 64;
                struct job *q = realloc(p->retry, cap * sizeof(*q));
                if (q) {
                        p->retry = q;
                        p->cap_retry = cap;
                } else
                        r = -ENOMEM;
        }
        if (r == 0)
                p->retry[p->n_retry++] = *j;
        pthread_mutex_unlock(&p->mu);
        return r;
}

size_t pool_requeue(struct pool *p)
{
        pthread_mutex_lock(&p->mu);
        size_t moved = 0;
        while (!p->stopping && moved < p->n_retry && p->len < p->cap) {
                p->ring[(p->head + p->len) % p->cap] = p->retry[moved++];
                p->len++;
        }
        if (moved && moved < p->n_retry)
                memmove(p->retry, p->retry + moved, (p->n_retry - moved) * sizeof(*p->retry));
        p->n_retry -= moved;
        size_t left = p->n_retry;
        if (moved)
                pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return left;
}

size_t pool_parked(struct pool *p)
{
        pthread_mutex_lock(&p->mu);
        size_t n = p->n_retry;
        pthread_mutex_unlock(&p->mu);
        return n;
}

void pool_stop(struct pool *p)
{
        if (!p->initialized)
                return;
        pthread_mutex_lock(&p->mu);
        p->stopping = true;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (unsigned i = 0; i < p->n_threads; i++) {
                pthread_join(p->threads[i], NULL);
                installer_free(&p->inst[i]);
        }
        free(p->threads);
        free(p->inst);
        free(p->ring);
        free(p->retry);
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        memset(p, 0, sizeof(*p));
}
