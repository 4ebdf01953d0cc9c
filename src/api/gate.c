/* The TCP connection gate (see gate.h). Untrusted connections sit in one list in accept
 * order; since they all get the same time limit, that is also deadline order, and the reaper
 * only ever looks at the head. The per-address count is a scan of that list: it holds at
 * most the server's connection limit (512) entries, and a scan per accept costs less than
 * the accept itself. */
#include "api/gate.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A client address as the cap counts it: IPv4, or the /64 of an IPv6 address. */
struct client_key {
        sa_family_t family; /* AF_INET, AF_INET6, or AF_UNSPEC (anything else: one bucket) */
        uint8_t bytes[8];
};

struct api_gate_conn {
        struct api_gate_conn *prev, *next; /* in the untrusted list while untrusted */
        struct client_key key;
        struct timespec deadline; /* CLOCK_MONOTONIC */
        int fd;
        bool untrusted, expired;
};

struct api_gate {
        struct api_gate_limits limits;
        pthread_mutex_t lock;
        pthread_cond_t wake;               /* a first untrusted connection, or stop */
        struct api_gate_conn *head, *tail; /* untrusted, oldest first */
        unsigned n_untrusted;
        uint64_t refused, expired;
        bool stop;
        pthread_t reaper;
};

static struct client_key key_of(const struct sockaddr *sa)
{
        static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        struct client_key k = {.family = AF_UNSPEC};
        if (sa && sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const void *)sa;
                k.family = AF_INET;
                memcpy(k.bytes, &in->sin_addr, 4);
        } else if (sa && sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const void *)sa;
                const uint8_t *a = in6->sin6_addr.s6_addr;
                if (memcmp(a, v4_mapped, sizeof(v4_mapped)) == 0) {
                        k.family = AF_INET;
                        memcpy(k.bytes, a + 12, 4);
                } else {
                        k.family = AF_INET6;
                        memcpy(k.bytes, a, 8); /* the /64 */
                }
        }
        return k;
}

static bool same_key(const struct client_key *a, const struct client_key *b)
{
        return a->family == b->family && memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

static bool before(const struct timespec *a, const struct timespec *b)
{
        return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Takes c out of the untrusted list (lock held). */
static void unlink_untrusted(struct api_gate *g, struct api_gate_conn *c)
{
        if (!c->untrusted)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else
                g->head = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                g->tail = c->prev;
        c->prev = c->next = NULL;
        c->untrusted = false;
        g->n_untrusted--;
}

/* Shuts down every untrusted connection whose deadline has passed (lock held). The fd is
 * still open: api_gate_close, which the owner calls before closing it, takes the same lock. */
static void reap_expired(struct api_gate *g, const struct timespec *now)
{
        while (g->head && !before(now, &g->head->deadline)) {
                struct api_gate_conn *c = g->head;
                unlink_untrusted(g, c);
                c->expired = true;
                g->expired++;
                shutdown(c->fd, SHUT_RDWR);
        }
}

static void *reaper_main(void *p)
{
        struct api_gate *g = p;
        pthread_mutex_lock(&g->lock);
        while (!g->stop) {
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                reap_expired(g, &now);
                if (g->head) {
                        /* A copy: the head may be closed and freed while we wait. */
                        struct timespec until = g->head->deadline;
                        pthread_cond_timedwait(&g->wake, &g->lock, &until);
                } else {
                        pthread_cond_wait(&g->wake, &g->lock);
                }
        }
        pthread_mutex_unlock(&g->lock);
        return NULL;
}

int api_gate_new(const struct api_gate_limits *limits, struct api_gate **ret)
{
        if (!limits || limits->per_address == 0 || limits->deadline_s == 0)
                return -EINVAL;
        struct api_gate *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->limits = *limits;
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&g->wake, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&g->lock, NULL);
        int r = pthread_create(&g->reaper, NULL, reaper_main, g);
        if (r) {
                pthread_cond_destroy(&g->wake);
                pthread_mutex_destroy(&g->lock);
                free(g);
                return -r;
        }
        *ret = g;
        return 0;
}

void api_gate_free(struct api_gate *g)
{
        if (!g)
                return;
        pthread_mutex_lock(&g->lock);
        g->stop = true;
        pthread_cond_signal(&g->wake);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->reaper, NULL);
        /* Connections still registered belong to a caller that broke the contract; their
         * handles are freed so that nothing leaks, their fds are left alone. */
        for (struct api_gate_conn *c = g->head, *next; c; c = next) {
                next = c->next;
                free(c);
        }
        pthread_cond_destroy(&g->wake);
        pthread_mutex_destroy(&g->lock);
        free(g);
}

bool api_gate_admit(struct api_gate *g, const struct sockaddr *addr)
{
        struct client_key k = key_of(addr);
        unsigned n = 0;
        pthread_mutex_lock(&g->lock);
        for (struct api_gate_conn *c = g->head; c; c = c->next)
                n += same_key(&c->key, &k);
        bool ok = n < g->limits.per_address;
        if (!ok)
                g->refused++;
        pthread_mutex_unlock(&g->lock);
        return ok;
}

struct api_gate_conn *api_gate_open(struct api_gate *g, int fd, const struct sockaddr *addr)
{
        struct api_gate_conn *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->key = key_of(addr);
        c->fd = fd;
        c->untrusted = true;
        pthread_mutex_lock(&g->lock);
        /* Taken under the lock so that the list stays in deadline order. */
        clock_gettime(CLOCK_MONOTONIC, &c->deadline);
        c->deadline.tv_sec += g->limits.deadline_s;
        c->prev = g->tail;
        if (g->tail)
                g->tail->next = c;
        else
                g->head = c;
        g->tail = c;
        g->n_untrusted++;
        if (g->head == c)
                pthread_cond_signal(&g->wake); /* the reaper was waiting without a deadline */
        pthread_mutex_unlock(&g->lock);
        return c;
}

void api_gate_trust(struct api_gate *g, struct api_gate_conn *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&g->lock);
        unlink_untrusted(g, c);
        pthread_mutex_unlock(&g->lock);
}

bool api_gate_expired(struct api_gate *g, const struct api_gate_conn *c)
{
        if (!c)
                return false;
        pthread_mutex_lock(&g->lock);
        bool expired = c->expired;
        pthread_mutex_unlock(&g->lock);
        return expired;
}

void api_gate_close(struct api_gate *g, struct api_gate_conn *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&g->lock);
        unlink_untrusted(g, c);
        pthread_mutex_unlock(&g->lock);
        free(c);
}

void api_gate_stats(struct api_gate *g, struct api_gate_stats *ret)
{
        pthread_mutex_lock(&g->lock);
        *ret = (struct api_gate_stats){
                .refused = g->refused,
                .expired = g->expired,
                .untrusted = g->n_untrusted,
        };
        pthread_mutex_unlock(&g->lock);
}
