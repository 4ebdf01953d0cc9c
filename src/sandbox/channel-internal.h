/* What channel.c and chanstream.c share: the channel and stream structs. */
#ifndef VMSNAP_SANDBOX_CHANNEL_INTERNAL_H
#define VMSNAP_SANDBOX_CHANNEL_INTERNAL_H

#include "sandbox/channel.h"
/* The wire format, shared with the guest agent (found through the include path src/). */
#include "../guest/agent/protocol.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct chan {
        pthread_mutex_t lock;       /* everything below but fd and in */
        pthread_cond_t cond;        /* any stream changed (CLOCK_MONOTONIC) */
        pthread_mutex_t write_lock; /* one frame at a time on fd */
        int refs;                   /* the reader's, the streams', the callers' */
        struct live *live;          /* the key in the list of running channels (not used) */
        char sandbox_id[VMSNAP_NAME_MAX + VMSNAP_ID_LEN + 8]; /* "name (id)", for messages */
        int fd;                     /* a dup of the live's agent connection */
        int wake;                   /* eventfd: a reference was dropped */
        bool dead;
        int dead_err;
        char dead_why[256];
        uint32_t next_id;
        struct chan_stream *streams;
        uint8_t *in;                /* the reader's: bytes read, not yet a whole message */
        size_t in_len;
        struct chan *next;          /* in the list of running channels */
};

/* A run of data of one type in a stream's ring. */
struct chan_seg {
        uint8_t type;
        uint32_t len;
};

#define SEGS_MAX (STREAM_WINDOW / FRAME_COST) /* a window holds at most this many frames */

struct chan_stream {
        struct chan *c;
        uint32_t id;
        /* under c->lock */
        uint8_t *ring;            /* received data, STREAM_WINDOW bytes; NULL: no data */
        size_t ring_head, ring_len;
        struct chan_seg *segs;    /* the runs in the ring, oldest first (a ring of SEGS_MAX) */
        size_t seg_head, seg_len;
        size_t handed;            /* bytes the last event handed out (released next call) */
        uint32_t outstanding;     /* credit the guest has used and we have not returned */
        uint32_t to_credit;       /* credit to return */
        uint32_t send_credit;     /* STDIN credit the guest gave us */
        char *first;              /* STARTED or REPLY (joined) JSON text */
        size_t first_len;
        bool first_done;          /* first is complete (no MORE pending) */
        char *end;                /* EXIT or ERROR JSON text */
        uint8_t end_type;
        int end_err;              /* when the channel failed: -errno, and end is the message */
        bool ended;
        bool cancelled;           /* ended by the host: the guest still needs a CLOSE */
        struct chan_stream *next;
};

/* channel.c */
int chan_send(struct chan *c, uint8_t type, uint32_t stream, const void *p, size_t n,
              struct vmsnap_diag *d);
uint32_t chan_next_id(struct chan *c);

/* chanstream.c, with c->lock held */
int stream_take_frame_locked(struct chan_stream *s, const struct frame_header *h,
                             const uint8_t *p, char *why, size_t size);
void stream_fail_locked(struct chan_stream *s, int err, const char *why);

#endif
