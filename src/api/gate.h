/* The TCP connection gate of vmsnapd: what keeps strangers from holding the API.
 *
 * Every TCP connection starts untrusted and becomes trusted when one of its requests carries
 * the valid bearer token. Untrusted connections are capped per client address (a new one
 * over the cap is refused at accept) and live at most `deadline_s` seconds from accept,
 * whatever they trickle in meanwhile: a client that sends one header byte every few seconds
 * is shut down then. Trusted connections leave the gate (the server's idle timeout governs
 * them). IPv6 clients are counted per /64, the block one host usually holds; IPv4-mapped
 * IPv6 addresses count as their IPv4 address.
 *
 * Plain sockets and pthreads, no libmicrohttpd, so tests drive it directly. All functions
 * are thread-safe. The socket fd of a connection stays the caller's: the gate only calls
 * shutdown(2) on it, and only between api_gate_open and api_gate_close, so the caller must
 * not close the fd before api_gate_close returns. */
#ifndef VMSNAP_API_GATE_H
#define VMSNAP_API_GATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define API_GATE_PER_ADDRESS_DEFAULT 32 /* untrusted connections per client address */
#define API_GATE_DEADLINE_DEFAULT    10 /* seconds from accept for an untrusted connection */

struct api_gate_limits {
        unsigned per_address; /* >= 1 */
        unsigned deadline_s;  /* >= 1 */
};

/* Counters since the gate was made. */
struct api_gate_stats {
        uint64_t refused;   /* connections refused at accept: their address was at its cap */
        uint64_t expired;   /* untrusted connections shut down at the deadline */
        unsigned untrusted; /* untrusted connections open now */
};

struct api_gate;      /* opaque */
struct api_gate_conn; /* one connection in the gate */

/* Makes a gate and starts its reaper thread. Returns 0 and *ret, -EINVAL for a zero limit,
 * or -errno. */
int api_gate_new(const struct api_gate_limits *limits, struct api_gate **ret);

/* Stops the reaper and frees the gate; accepts NULL. Call when every connection is closed. */
void api_gate_free(struct api_gate *g);

/* Whether a new connection from addr may be accepted: false when addr already has
 * per_address untrusted connections (the refusal is counted). */
bool api_gate_admit(struct api_gate *g, const struct sockaddr *addr);

/* Registers an accepted connection (socket fd, client address): untrusted, its deadline
 * deadline_s from now. Returns the handle for trust/close, NULL when out of memory (the
 * caller then closes the connection). */
struct api_gate_conn *api_gate_open(struct api_gate *g, int fd, const struct sockaddr *addr);

/* Marks a connection trusted (a request on it carried the valid token): it leaves the cap
 * and the deadline. A connection already shut down stays so. Accepts NULL. */
void api_gate_trust(struct api_gate *g, struct api_gate_conn *c);

/* Whether the gate shut the connection down at its deadline. Accepts NULL (false). */
bool api_gate_expired(struct api_gate *g, const struct api_gate_conn *c);

/* Forgets a connection and frees its handle; call it before the fd is closed. Accepts
 * NULL. */
void api_gate_close(struct api_gate *g, struct api_gate_conn *c);

/* Reads the counters. */
void api_gate_stats(struct api_gate *g, struct api_gate_stats *ret);

#endif
