/* The wire format of protocol 2 between the guest agent and the host (docs/guest.md §2.2),
 * shared by the agent (guest/agent/) and the host (src/sandbox/channel.c, src/api/, src/cli/):
 * a 12-byte little-endian frame header, bounded payloads, per-stream credit windows.
 * Definitions and static inline codecs only: no state, no dependencies beyond libc. */
#ifndef VMSNAP_AGENT_PROTOCOL_H
#define VMSNAP_AGENT_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_MAGIC   0xFBu           /* never the first byte of a JSON text (not UTF-8) */
#define FRAME_HEADER  12u
#define FRAME_MAX     65536u          /* largest payload */
#define STREAM_WINDOW (256u * 1024)   /* unacknowledged credit per stream and direction */
#define FRAME_COST    64u             /* credit a data frame costs beyond its bytes */
#define AGENT_PROTOCOL 2
#define REPLY_MAX     (4u << 20)      /* largest REPLY once its MORE frames are joined */

/* Header flags. */
#define FRAME_MORE 0x0001u /* REPLY: the payload continues in the next frame of this stream */

enum frame_type {
        FRAME_CALL = 0x01,       /* host → guest: a JSON request */
        FRAME_REPLY = 0x02,      /* guest → host: its JSON response */
        FRAME_ECHO = 0x03,       /* host → guest: bytes to send back */
        FRAME_ECHO_REPLY = 0x04, /* guest → host: the same bytes */
        FRAME_START = 0x10,      /* host → guest: opens a stream (struct start_fixed + strings) */
        FRAME_STDIN = 0x11,      /* host → guest: data */
        FRAME_STDIN_EOF = 0x12,  /* host → guest: no more data */
        FRAME_RESIZE = 0x13,     /* host → guest: u16 rows, u16 cols */
        FRAME_SIGNAL = 0x14,     /* host → guest: u32 signal number */
        FRAME_CREDIT = 0x15,     /* both: u32 bytes of the peer's data passed on */
        FRAME_CLOSE = 0x16,      /* host → guest: the stream is abandoned */
        FRAME_STARTED = 0x20,    /* guest → host: JSON {"pid"} or a file entry */
        FRAME_STDOUT = 0x21,     /* guest → host: data */
        FRAME_STDERR = 0x22,     /* guest → host: data */
        FRAME_EXIT = 0x23,       /* guest → host: JSON, the stream's last frame */
        FRAME_ERROR = 0x24,      /* guest → host: JSON {"errno","message"}, the last frame */
};

enum start_kind { START_EXEC = 1, START_READ = 2, START_WRITE = 3 };

enum start_flag { START_TTY = 1, START_STDIN = 2, START_DETACH = 4 };

#define START_FIXED 16u /* bytes before the strings of a START payload */

/* The fixed part of a START payload, decoded. */
struct start_fixed {
        uint8_t kind, flags;
        uint16_t rows, cols, argc, envc;
        uint32_t arg; /* exec: timeout in ms (0: none); write: the file's mode */
};

struct frame_header {
        uint8_t type;
        uint16_t flags;
        uint32_t stream;
        uint32_t length;
};

static inline void wire_put16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}

static inline void wire_put32(uint8_t *p, uint32_t v)
{
        wire_put16(p, (uint16_t)v);
        wire_put16(p + 2, (uint16_t)(v >> 16));
}

static inline uint16_t wire_get16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t wire_get32(const uint8_t *p)
{
        return (uint32_t)wire_get16(p) | (uint32_t)wire_get16(p + 2) << 16;
}

/* Writes the 12-byte header of a frame. */
static inline void frame_header_put(uint8_t out[FRAME_HEADER], const struct frame_header *h)
{
        out[0] = FRAME_MAGIC;
        out[1] = h->type;
        wire_put16(out + 2, h->flags);
        wire_put32(out + 4, h->stream);
        wire_put32(out + 8, h->length);
}

/* Reads a header. Returns false when it is not one (magic, length over FRAME_MAX). */
static inline bool frame_header_get(const uint8_t in[FRAME_HEADER], struct frame_header *ret)
{
        if (in[0] != FRAME_MAGIC)
                return false;
        ret->type = in[1];
        ret->flags = wire_get16(in + 2);
        ret->stream = wire_get32(in + 4);
        ret->length = wire_get32(in + 8);
        return ret->length <= FRAME_MAX;
}

/* Encodes the fixed part of a START payload. */
static inline void start_fixed_put(uint8_t out[START_FIXED], const struct start_fixed *s)
{
        out[0] = s->kind;
        out[1] = s->flags;
        wire_put16(out + 2, s->rows);
        wire_put16(out + 4, s->cols);
        wire_put16(out + 6, s->argc);
        wire_put16(out + 8, s->envc);
        wire_put16(out + 10, 0);
        wire_put32(out + 12, s->arg);
}

static inline void start_fixed_get(const uint8_t in[START_FIXED], struct start_fixed *ret)
{
        ret->kind = in[0];
        ret->flags = in[1];
        ret->rows = wire_get16(in + 2);
        ret->cols = wire_get16(in + 4);
        ret->argc = wire_get16(in + 6);
        ret->envc = wire_get16(in + 8);
        ret->arg = wire_get32(in + 12);
}

/* True for the frame types that count against a stream's credit window: each costs its
 * length plus FRAME_COST, so that a window bounds the number of frames in flight too. */
static inline bool frame_is_data(uint8_t type)
{
        return type == FRAME_STDIN || type == FRAME_STDOUT || type == FRAME_STDERR;
}

#endif
