/* The host end of protocol 2 (docs/guest.md §2.2, docs/sandbox.md "Exec"): one channel per
 * sandbox agent connection while anything uses it. A reader thread takes the frames off the
 * connection and hands each to its stream; writers send frames under a lock. A channel
 * exists only while streams or calls hold it: then the connection is the reader's, and the
 * protocol-1 exchanges of agent.c go through it as CALL frames; without one, agent.c talks
 * lines on the connection directly. The guest is untrusted: every frame is checked, and a
 * violation (or the connection closing) fails every stream of the channel. */
#ifndef VMSNAP_SANDBOX_CHANNEL_H
#define VMSNAP_SANDBOX_CHANNEL_H

#include "sandbox/internal.h"

#include <vmsnap/exec.h>

struct chan;
struct chan_stream;

/* The running channel of l with a reference taken, or NULL when none runs (then nothing
 * reads the connection). The caller holds l's operation lock. */
struct chan *chan_running(struct live *l);

/* True while a channel runs on l: a command, a shell or a file transfer holds it (its
 * stream outlives the request that started it). The caller holds l's operation lock. */
bool chan_in_use(struct live *l);

/* The channel of l, opened when none runs: connects, asks hello, starts the reader. The
 * caller holds l's operation lock and has checked that the VM runs; label names the sandbox
 * in messages ("name (id)"). Returns 0 and a reference, -EPROTONOSUPPORT when the agent
 * speaks protocol 1 only, or -errno. */
int chan_get(struct live *l, const char *label, int timeout_ms, struct chan **ret,
             struct vmsnap_diag *d);

/* Drops a reference; the reader stops when only its own is left. Accepts NULL. */
void chan_put(struct chan *c);

/* One CALL/REPLY exchange (request: a JSON object text). Returns 0 and the answer (caller
 * decrefs) when it says ok, -errno (the guest's errno when it gave one) with its message. */
int chan_call(struct chan *c, const char *sandbox_id, const char *request, int timeout_ms,
              json_t **ret, struct vmsnap_diag *d);

/* A new stream on c (which it keeps a reference on). with_data: it receives STDOUT/STDERR
 * (a window's ring is allocated). Returns NULL when out of memory. */
struct chan_stream *chan_stream_new(struct chan *c, bool with_data);

/* Sends a frame of the stream (START, STDIN_EOF, RESIZE, SIGNAL). */
int chan_stream_send(struct chan_stream *s, uint8_t type, const void *p, size_t n,
                     struct vmsnap_diag *d);

/* Waits for the stream's first answer: STARTED (0 and its JSON text in *ret, malloc'd) or
 * ERROR (-errno with the guest's message). */
int chan_stream_started(struct chan_stream *s, int timeout_ms, char **ret, struct vmsnap_diag *d);

/* The next event (see vmsnap_stream_next). */
int chan_stream_next(struct chan_stream *s, struct vmsnap_stream_event *ret,
                     struct vmsnap_diag *d);

/* STDIN within the credit the guest gives (see vmsnap_stream_write). */
int chan_stream_write(struct chan_stream *s, const void *p, size_t n, struct vmsnap_diag *d);

/* Ends the stream from the host's side: a next or write waiting in another thread returns
 * (ERROR -ECANCELED); the guest gets CLOSE when the stream is freed. */
void chan_stream_cancel(struct chan_stream *s);

/* Frees the stream; sends CLOSE when it has not ended. Accepts NULL. */
void chan_stream_free(struct chan_stream *s);

/* ---- agent.c, for the channel ---- */

/* Connects l's agent connection if it is not (op lock held). */
int agent_connect_once(struct live *l, int timeout_ms, struct vmsnap_diag *d);

/* Asks hello as a line (no channel may run): the agent's protocol, 1 when it has none. */
int agent_hello(struct live *l, int timeout_ms, int *ret_protocol, struct vmsnap_diag *d);

#endif
