/* The frames vmsnapd sends a client about one command (docs/api.md, Exec): STARTED, STDOUT
 * and STDERR as they come, then EXIT or ERROR; the agent's frame format with stream id 0.
 * Used by the streamed answer and by the upgraded connection; and the upgraded session. */
#ifndef VMSNAP_API_EXEC_FRAMES_H
#define VMSNAP_API_EXEC_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <vmsnap/exec.h>

#include "../guest/agent/protocol.h"

/* A command's events turned into frames, one at a time. */
struct exec_out {
        struct vmsnap_stream *s; /* owned */
        int pid;
        bool started_sent, ended;
        struct vmsnap_stream_event ev; /* the event being sent, when have_ev */
        size_t ev_off;
        bool have_ev;
        unsigned char pend[FRAME_HEADER + FRAME_MAX]; /* a frame not yet handed out */
        size_t pend_len, pend_off;
};

/* Hands out the next bytes of frames (blocking for the command): up to max bytes into buf.
 * Returns the count, or 0 once the last frame (EXIT or ERROR) has been handed out. */
size_t exec_out_read(struct exec_out *o, char *buf, size_t max);

/* Frees o and its stream (abandoning the command when it has not ended). Accepts NULL. */
void exec_out_free(struct exec_out *o);

/* Runs an upgraded exec session on the client's socket: frames from o to the client, STDIN,
 * STDIN_EOF, RESIZE and SIGNAL frames from the client to the command. extra: bytes the client
 * sent after its request. Returns when the command ended (its last frame sent) or the client
 * went away (the command is then abandoned: SIGHUP). Frees o. */
void exec_upgraded_run(struct exec_out *o, int fd, const char *extra, size_t extra_len);

#endif
