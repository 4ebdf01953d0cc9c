/* A command's events as frames to the client (exec-frames.h), and the upgraded session: one
 * thread sends the frames (the connection's), one reads the client's. Memory per session is
 * one frame here plus the stream's window in libvmsnap: a client that reads slowly slows the
 * command (no credit goes back to the guest) instead of growing the daemon. */
#include "api/exec-frames.h"
#include "util/fs.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Puts a frame with payload p into o->pend. */
static void pend_frame(struct exec_out *o, uint8_t type, const void *p, size_t n)
{
        struct frame_header h = {.type = type, .length = (uint32_t)n};
        frame_header_put(o->pend, &h);
        memcpy(o->pend + FRAME_HEADER, p, n);
        o->pend_len = FRAME_HEADER + n;
        o->pend_off = 0;
}

static void pend_json(struct exec_out *o, uint8_t type, json_t *j)
{
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        const char *body = text ? text : "{\"errno\":12,\"message\":\"out of memory\"}";
        pend_frame(o, text ? type : FRAME_ERROR, body, strlen(body));
        free(text);
        json_decref(j);
}

/* The last frame: EXIT {"exit_code","signal","timed_out"} or ERROR {"errno","message"}. */
static void pend_end(struct exec_out *o, const struct vmsnap_stream_event *ev)
{
        if (ev->kind == VMSNAP_STREAM_EXIT)
                pend_json(o, FRAME_EXIT,
                          json_pack("{s:i, s:o, s:b}", "exit_code", ev->exit_code, "signal",
                                    ev->signal ? json_integer(ev->signal) : json_null(),
                                    "timed_out", ev->timed_out));
        else
                pend_json(o, FRAME_ERROR, json_pack("{s:i, s:s}", "errno", -ev->err, "message",
                                                    ev->message));
        o->ended = true;
}

/* Makes the next frame. Returns false at the end. */
static bool next_frame(struct exec_out *o)
{
        if (!o->started_sent) {
                o->started_sent = true;
                pend_json(o, FRAME_STARTED, json_pack("{s:i}", "pid", o->pid));
                return true;
        }
        if (o->ended)
                return false;
        if (!o->have_ev) {
                struct vmsnap_diag d = {0};
                if (vmsnap_stream_next(o->s, &o->ev, &d) < 0) {
                        o->ev = (struct vmsnap_stream_event){.kind = VMSNAP_STREAM_ERROR,
                                                             .err = d.err};
                        snprintf(o->ev.message, sizeof(o->ev.message), "%.500s", d.msg);
                }
                o->have_ev = true;
                o->ev_off = 0;
        }
        if (o->ev.kind != VMSNAP_STREAM_STDOUT && o->ev.kind != VMSNAP_STREAM_STDERR) {
                pend_end(o, &o->ev);
                return true;
        }
        size_t n = o->ev.len - o->ev_off;
        if (n > FRAME_MAX)
                n = FRAME_MAX;
        pend_frame(o, o->ev.kind == VMSNAP_STREAM_STDOUT ? FRAME_STDOUT : FRAME_STDERR,
                   (const char *)o->ev.data + o->ev_off, n);
        o->ev_off += n;
        if (o->ev_off == o->ev.len)
                o->have_ev = false; /* released (and credited) by the next vmsnap_stream_next */
        return true;
}

size_t exec_out_read(struct exec_out *o, char *buf, size_t max)
{
        if (o->pend_off == o->pend_len && !next_frame(o))
                return 0;
        size_t n = o->pend_len - o->pend_off;
        if (n > max)
                n = max;
        memcpy(buf, o->pend + o->pend_off, n);
        o->pend_off += n;
        return n;
}

void exec_out_free(struct exec_out *o)
{
        if (!o)
                return;
        vmsnap_stream_free(o->s);
        free(o);
}

/* ---- the upgraded session ----------------------------------------------------------------- */

struct session {
        struct exec_out *o;
        int fd;
        const char *extra;
        size_t extra_len;
};

/* Reads exactly n bytes of the client's: the bytes sent with the request first. */
static bool client_read(struct session *ss, void *p, size_t n)
{
        unsigned char *q = p;
        while (n > 0) {
                ssize_t got;
                if (ss->extra_len) {
                        got = (ssize_t)(n < ss->extra_len ? n : ss->extra_len);
                        memcpy(q, ss->extra, (size_t)got);
                        ss->extra += got;
                        ss->extra_len -= (size_t)got;
                } else if ((got = read(ss->fd, q, n)) < 0 && errno == EINTR) {
                        continue;
                } else if (got <= 0) {
                        return false;
                }
                q += got;
                n -= (size_t)got;
        }
        return true;
}

/* Handles one frame from the client. Returns false when it is not one the client may send. */
static bool client_frame(struct vmsnap_stream *s, const struct frame_header *h,
                         const unsigned char *p)
{
        struct vmsnap_diag d = {0};
        switch (h->type) {
        case FRAME_STDIN:
                vmsnap_stream_write(s, p, h->length, &d); /* -EPIPE once it ended: fine */
                return true;
        case FRAME_STDIN_EOF:
                vmsnap_stream_close_input(s, &d);
                return true;
        case FRAME_RESIZE:
                if (h->length != 4)
                        return false;
                vmsnap_stream_resize(s, wire_get16(p), wire_get16(p + 2), &d);
                return true;
        case FRAME_SIGNAL:
                if (h->length != 4)
                        return false;
                vmsnap_stream_signal(s, (int)wire_get32(p), &d);
                return true;
        }
        return false;
}

/* The client's side: its frames until it closes; then the command is abandoned. */
static void *client_main(void *arg)
{
        struct session *ss = arg;
        unsigned char *p = malloc(FRAME_MAX);
        unsigned char head[FRAME_HEADER];
        struct frame_header h;
        while (p && client_read(ss, head, sizeof(head))) {
                if (!frame_header_get(head, &h) || !client_read(ss, p, h.length) ||
                    !client_frame(ss->o->s, &h, p)) {
                        log_warn("exec session: the client sent something that is not a frame it "
                                 "may send; ending the session");
                        break;
                }
        }
        free(p);
        vmsnap_stream_cancel(ss->o->s); /* no-op when the command ended already */
        return NULL;
}


void exec_upgraded_run(struct exec_out *o, int fd, const char *extra, size_t extra_len)
{
        struct session ss = {.o = o, .fd = fd, .extra = extra, .extra_len = extra_len};
        pthread_t t;
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0) /* libmicrohttpd's sockets are non-blocking: these threads block */
                fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        bool reader = pthread_create(&t, NULL, client_main, &ss) == 0;
        while (reader && (o->pend_off < o->pend_len || next_frame(o))) {
                if (vmsnap_fs_send_full(fd, o->pend + o->pend_off, o->pend_len - o->pend_off) < 0)
                        break; /* the client went away */
                o->pend_off = o->pend_len;
        }
        shutdown(fd, SHUT_RDWR); /* ends the client reader's read */
        vmsnap_stream_cancel(o->s);
        if (reader)
                pthread_join(t, NULL);
        exec_out_free(o);
}
