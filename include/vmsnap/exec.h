/* libvmsnap: working inside a running sandbox through its guest agent (protocol 2,
 * docs/guest.md §2): programs run with argv exactly as given, their stdin, stdout and stderr
 * streamed both ways with flow control (memory stays bounded however much flows), PTYs,
 * background processes, and files streamed in and out. Design: docs/sandbox.md (Exec).
 *
 * A stream is used by one thread at a time, except vmsnap_stream_write, _close_input,
 * _resize, _signal and _cancel, which may run in a second thread while another reads events
 * (an interactive session). Streams do not hold
 * the sandbox's operation lock: a pause or destroy ends them with an ERROR event. */
#ifndef VMSNAP_EXEC_H
#define VMSNAP_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/sandbox.h>

struct vmsnap_exec_spec {
        const char *const *argv; /* NULL-terminated; argv[0] is looked up in the guest's PATH */
        const char *const *env;  /* "NAME=value" added to the agent's environment, or NULL */
        const char *cwd;         /* NULL or "": / */
        unsigned timeout_ms;     /* 0: none; then SIGKILL to its process group */
        bool tty;                /* a PTY (stdout and stderr become one stream) */
        bool with_stdin;         /* stdin comes from vmsnap_stream_write; else /dev/null */
        bool detach;             /* background: runs on after the call; no stream */
        uint16_t rows, cols;     /* the PTY's size (0: 24 x 80) */
};

/* What vmsnap_exec_start learned when the process started. */
struct vmsnap_exec_started {
        int pid;       /* in the guest */
        char log[128]; /* detach: the guest file its output goes to */
};

/* One stream on a sandbox's agent connection: a command, or a file being read or written. */
struct vmsnap_stream;

enum vmsnap_stream_event_kind {
        VMSNAP_STREAM_STDOUT, /* data (a PTY's output, or a file's content) */
        VMSNAP_STREAM_STDERR, /* data */
        VMSNAP_STREAM_EXIT,   /* the end: exit_code/signal/timed_out, or size (files) */
        VMSNAP_STREAM_ERROR,  /* the end: err (negative errno) and message */
};

struct vmsnap_stream_event {
        enum vmsnap_stream_event_kind kind;
        const void *data; /* STDOUT/STDERR: valid until the next vmsnap_stream_next */
        size_t len;
        int exit_code;    /* EXIT of a command: its status, 128+N when signal N killed it */
        int signal;       /* 0 when it exited by itself */
        bool timed_out;   /* the timeout fired (it was killed) */
        uint64_t size;    /* EXIT of a file stream: bytes moved */
        int err;          /* ERROR: negative errno */
        char message[512];
};

/* Starts argv in a running sandbox. Returns 0, *ret (NULL for a detached process) and what
 * started; -EBUSY when the sandbox is not running, -EPROTONOSUPPORT when its agent speaks only
 * protocol 1, -EINVAL for a spec that does not fit one frame (about 64 KiB of strings). */
int vmsnap_exec_start(struct vmsnap_host *h, const char *ref, const struct vmsnap_exec_spec *spec,
                      struct vmsnap_stream **ret, struct vmsnap_exec_started *ret_started,
                      struct vmsnap_diag *d);

/* Opens a guest file for reading: its content comes as STDOUT events, then EXIT with the
 * size. Returns 0 and *ret, or -errno (-ENOENT, -EISDIR… from the guest) with d. */
int vmsnap_file_read_start(struct vmsnap_host *h, const char *ref, const char *path,
                           struct vmsnap_stream **ret, struct vmsnap_diag *d);

/* Opens a guest file for writing (mode: permission bits): write the content with
 * vmsnap_stream_write, then vmsnap_stream_close_input, then wait for EXIT (the file replaced
 * atomically) or ERROR. Freeing the stream before EXIT leaves the old file. */
int vmsnap_file_write_start(struct vmsnap_host *h, const char *ref, const char *path,
                            unsigned mode, struct vmsnap_stream **ret, struct vmsnap_diag *d);

/* Waits for the next event. After EXIT or ERROR every call returns that end again. Consuming
 * data returns credit to the guest: a caller that stops calling stops the command's output
 * (it blocks on a full pipe) instead of growing memory. Returns 0 or -errno. */
int vmsnap_stream_next(struct vmsnap_stream *s, struct vmsnap_stream_event *ret,
                       struct vmsnap_diag *d);

/* Sends stdin (or file content), waiting for credit. Returns 0, -EPIPE when the stream has
 * ended, or -errno. */
int vmsnap_stream_write(struct vmsnap_stream *s, const void *p, size_t n, struct vmsnap_diag *d);

/* No more input (closes the command's stdin; finishes a file write). */
int vmsnap_stream_close_input(struct vmsnap_stream *s, struct vmsnap_diag *d);

/* A PTY's new window size (SIGWINCH to its job). */
int vmsnap_stream_resize(struct vmsnap_stream *s, uint16_t rows, uint16_t cols,
                         struct vmsnap_diag *d);

/* Sends signo to the command's process group (a PTY: its foreground job). */
int vmsnap_stream_signal(struct vmsnap_stream *s, int signo, struct vmsnap_diag *d);

/* Ends the stream from this side, from any thread: a vmsnap_stream_next or _write waiting in
 * another thread returns (an ERROR event with -ECANCELED, or -EPIPE); the command gets
 * SIGHUP when the stream is freed. */
void vmsnap_stream_cancel(struct vmsnap_stream *s);

/* Frees a stream; one that has not ended is abandoned (its command gets SIGHUP, a file write
 * is discarded). Accepts NULL. */
void vmsnap_stream_free(struct vmsnap_stream *s);

/* Runs an attached command, feeds it in (in_len bytes, then end of input) and collects its
 * output into ret (up to 1 MiB per stream; ret->truncated when more was dropped). Returns 0
 * with ret filled (free with vmsnap_exec_result_free), or -errno. */
int vmsnap_exec_collect(struct vmsnap_host *h, const char *ref, const struct vmsnap_exec_spec *spec,
                        const void *in, size_t in_len, struct vmsnap_exec_result *ret,
                        struct vmsnap_diag *d);

/* One guest agent call on a running sandbox: request is a JSON object text whose "op" is one
 * of stat, list, remove, ps, kill, health (docs/guest.md §2.1). Returns 0 and the answer's
 * JSON text (malloc'd) when it says ok, else -errno (the guest's, e.g. -ENOENT) with its
 * message in d. */
int vmsnap_sandbox_agent_call(struct vmsnap_host *h, const char *ref, const char *request,
                              char **ret, struct vmsnap_diag *d);

#endif
