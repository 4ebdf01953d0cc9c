/* vmsnap-agent: what the agent's files share (docs/guest.md §2). */
#ifndef VMSNAP_AGENT_H
#define VMSNAP_AGENT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "protocol.h"

#define PORT_NAME "org.vmsnap.agent"
#define MAX_LINE (8u << 20)    /* longest request line; write_file data rides in it */
#define MAX_OUTPUT (1u << 20)  /* per-stream cap on captured exec output */
#define MAX_FILE (4u << 20)    /* largest file read_file returns */
#define MAX_SEED 512           /* largest restore_hook seed, in bytes */
#define DEFAULT_TIMEOUT_MS 30000
#define MAX_TIMEOUT_MS (24u * 3600 * 1000)
#define IDLE_RETRY_MS 20       /* re-check interval while the host side is closed */
#define WRITE_STALL_MS 10000   /* give up on a response the host stops reading */
#define OUT_SOFT (256u << 10)  /* data frames are queued only while less is waiting */
#define OUT_HARD (1u << 20)    /* the host's input is not read while more is waiting */
#define DRAIN_MAX (1u << 20)   /* bytes still read from a command's pipes after it exited */
#define LIST_MAX 10000         /* entries of one directory listing */
#define LOG_DIR "/run/vmsnap-agent" /* output of detached processes */


/* A growable byte buffer. Allocation failure is sticky and checked once at the end,
 * so that building a response stays free of error plumbing. */
struct buf {
	char *data;
	size_t len, cap;
	bool oom;
};


enum json_kind { JSON_STRING, JSON_NUMBER, JSON_LITERAL };

struct json_value {
	enum json_kind kind;
	char *s;    /* decoded string (NUL-terminated) or raw token */
	size_t len;
};

struct request {
	char *op, *cmd, *path, *data_b64, *seed_b64;
	bool has_id, has_timeout, has_time, has_pid, has_signal, recursive;
	struct json_value id;
	uint64_t timeout_ms, time_ns, pid, signal;
};



/* A response under construction: the op-specific fields, or an error message. */
struct reply {
	struct buf fields; /* ",\"key\":value" pairs appended by the op */
	char err[512];
};



/* ---- util.c ---- */

/* Logs one line to stderr, which /init points at the serial console. */
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Milliseconds on `clock`. */
int64_t now_ms(clockid_t clock);
void sleep_ms(unsigned ms);
/* Writes all of buf to a blocking fd. Returns 0 or a negative errno. */
int write_all(int fd, const void *buf, size_t n);
bool buf_reserve(struct buf *b, size_t extra);
void buf_put(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(struct buf *b);

/* ---- json.c ---- */

/* Appends s as a JSON string; bytes that are not valid UTF-8 become U+FFFD. */
void put_json_string(struct buf *b, const char *s, size_t n);
void put_json_cstr(struct buf *b, const char *s);
void put_base64(struct buf *b, const unsigned char *p, size_t n);
/* Decodes standard base64 (padding optional); out may alias in. Returns 0 or -EINVAL. */
int b64_decode(const char *in, size_t n, unsigned char *out, size_t *ret_len);
/* Parses one flat JSON request object (modified in place). On failure *ret_err says why. */
int parse_request(char *line, size_t len, struct request *rq, const char **ret_err);
/* Records an error message for the response and returns err (a negative errno). */
int fail(struct reply *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void put_field_u64(struct reply *r, const char *key, uint64_t v);
void put_field_bool(struct reply *r, const char *key, bool v);
void put_field_string(struct reply *r, const char *key, const char *s, size_t n);

/* ---- the ops (calls.c, clock_rng.c, exec.c): fill r, return 0 or a negative errno ---- */

int op_health(const struct request *rq, struct reply *r);
int op_hello(const struct request *rq, struct reply *r);
int op_sync(const struct request *rq, struct reply *r);
int op_random(const struct request *rq, struct reply *r);
int op_write_file(const struct request *rq, struct reply *r);
int op_read_file(const struct request *rq, struct reply *r);
int op_restore_hook(const struct request *rq, struct reply *r);
int op_exec(const struct request *rq, struct reply *r);
/* pidfd_open(2): a pollable "this child has exited" event, or -1. */
int open_pidfd(pid_t pid);
/* A pipe whose read end is non-blocking; both close-on-exec. Returns 0 or -errno. */
int make_pipe(int fds[2]);

/* ---- lines.c: protocol 1 ---- */

/* Incoming bytes not yet handled: lines and frames. An over-long line is answered with an
 * error once and then skipped up to its newline. */
struct line_reader {
	char *data;       /* MAX_LINE bytes */
	size_t len;
	size_t scanned;   /* data[start..scanned) of the current line holds no newline */
	bool discarding;
};

struct stream;

/* One host connection (the virtio-serial port or one vsock connection) and its streams. */
struct conn {
	int fd;
	bool is_port;       /* virtio-serial: the host may close and come back on the same fd */
	bool host_gone;     /* port: the host side is closed now */
	struct line_reader in;
	struct buf out;     /* frames waiting to be written */
	size_t out_off;     /* out.data[0..out_off) is written */
	struct stream *streams;
};

/* Builds the JSON response to one request (without a newline) in out. `framed` refuses the
 * ops that block the agent or answer more than a frame (exec, read_file, write_file).
 * *ret_hello (may be NULL) says whether it was hello. */
void handle_request(char *text, size_t len, bool framed, struct buf *out, bool *ret_hello);
/* Answers one protocol-1 line: waits for the queued frames, then sends the response. */
void answer_line(struct conn *c, char *line, size_t len);
/* Sends a whole response on the non-blocking fd; gives up when the host went away. */
int send_response(int fd, const char *p, size_t n);

/* ---- frames.c: protocol 2 ---- */

/* Handles every complete message (line or frame) in c->in and keeps a partial one. Returns
 * false when the host broke the protocol (the caller drops the connection's state). */
bool conn_handle_input(struct conn *c);
/* Queues one frame. */
void conn_send(struct conn *c, uint8_t type, uint32_t stream, uint16_t flags, const void *p,
	       size_t n);
/* Queues a JSON payload: REPLY split into FRAME_MORE pieces, other types in one frame. */
void conn_send_json(struct conn *c, uint8_t type, uint32_t stream, const struct buf *json);
/* Queues an ERROR frame {"errno","message"}: the last frame of a stream. */
void conn_send_error(struct conn *c, uint32_t stream, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* True while a data frame of n bytes may be queued (the outbound buffer has room). */
bool conn_room(const struct conn *c, size_t n);

/* ---- streams.c: exec and file streams ---- */

struct stream {
	uint32_t id;
	uint8_t kind, flags;
	bool dead;              /* ended: freed at the end of the loop iteration */
	uint32_t credit;        /* STDOUT/STDERR bytes we may still send */
	/* exec */
	pid_t pid;
	int out_fd, err_fd;     /* read ends; a tty's master is out_fd (and in_fd) */
	int in_fd;              /* the child's stdin (pipe write end, or the master), or -1 */
	bool exited, timed_out;
	int status;
	int64_t deadline;       /* CLOCK_MONOTONIC ms; 0: none */
	size_t drained;         /* bytes read since it exited */
	unsigned char *in_buf;  /* STDIN not yet written, at most STREAM_WINDOW */
	size_t in_len;
	bool in_eof;            /* STDIN_EOF came */
	uint32_t uncredited;    /* STDIN bytes passed on and not yet credited */
	/* files */
	int file_fd;
	char *path, *tmp_path;
	uint64_t size;
	struct stream *next;
};

/* START: opens stream id (exec, read or write). Answers STARTED or ERROR. */
void stream_start(struct conn *c, uint32_t id, const unsigned char *p, size_t n);
struct stream *stream_find(struct conn *c, uint32_t id);
/* The host's frames for a stream. Return false on a protocol violation. */
bool stream_stdin(struct conn *c, struct stream *s, const unsigned char *p, size_t n);
void stream_stdin_eof(struct conn *c, struct stream *s);
void stream_resize(struct stream *s, uint16_t rows, uint16_t cols);
void stream_signal(struct stream *s, int sig);
bool stream_credit(struct stream *s, uint32_t n);
/* Abandons a stream (CLOSE, or the host went away): SIGHUP to its process group. */
void stream_close(struct stream *s);
/* Adds the fds a stream waits on to pfd (at most 3); returns how many. */
int stream_poll_fds(struct conn *c, struct stream *s, struct pollfd *pfd);
/* True when the stream can move data without waiting for an fd (a file read, an exited
 * command's pipes being drained): the loop then polls without sleeping. */
bool stream_busy(const struct conn *c, const struct stream *s);
/* Moves what can move now (output with credit, stdin, a finished exit), after a poll. */
void stream_pump(struct conn *c, struct stream *s);
/* A child was reaped: returns true when it was this stream's. */
bool stream_reaped(struct stream *s, pid_t pid, int status);
/* Fires a passed deadline; returns the ms until the stream's deadline (-1: none). */
int stream_check_deadline(struct stream *s, int64_t now);
void stream_free(struct stream *s);

/* ---- spawn.c: processes and the process table ---- */

struct spawn_spec {
	char **argv, **env;     /* NULL-terminated */
	const char *cwd;        /* "" or NULL: / */
	bool tty, with_stdin, detach;
	uint16_t rows, cols;
};

struct spawned {
	pid_t pid;
	int in_fd, out_fd, err_fd; /* -1 when absent; a tty's master is in_fd = out_fd */
	char log[64];              /* detached: where its output goes */
};

/* Starts a process in its own session. Returns 0 or -errno with why in err. */
int spawn_process(const struct spawn_spec *s, struct spawned *ret, char *err, size_t size);
/* The process table (what `ps` lists). */
void proc_add(pid_t pid, char **argv, bool detached, bool tty, const char *log);
/* Records an exit; returns false when the pid is not in the table. */
bool proc_exited(pid_t pid, int status);
/* An attached process whose stream ended: forgotten (finished) or kept as detached
 * (abandoned while running). */
void proc_release(pid_t pid, bool still_running);
int op_ps(const struct request *rq, struct reply *r);
int op_kill(const struct request *rq, struct reply *r);

/* ---- files.c ---- */

/* Appends a file entry {"name","path","type","mode","size","mtime","target"} for path. */
int put_file_entry(struct buf *b, const char *path, const char *name, struct reply *r);
int op_stat(const struct request *rq, struct reply *r);
int op_list(const struct request *rq, struct reply *r);
int op_remove(const struct request *rq, struct reply *r);
/* Opens a read or write file stream (START kinds 2 and 3); answers STARTED or ERROR. */
void file_stream_start(struct conn *c, struct stream *s, const char *path, uint32_t mode);
/* The write stream got n bytes / its end (an error answers ERROR and ends it). */
void file_stream_write(struct conn *c, struct stream *s, const unsigned char *p, size_t n);
void file_stream_finish(struct conn *c, struct stream *s);
/* Sends what a read stream may send now. */
void file_stream_pump(struct conn *c, struct stream *s);

/* ---- loop.c ---- */

/* Writes queued frames, waiting up to WRITE_STALL_MS for the host; false when it gave up. */
bool conn_flush_blocking(struct conn *c);
/* Serves one connection until its fd fails (vsock: the host closed it). */
void conn_serve(struct conn *c);
/* Drops everything of a connection whose host went away: streams closed, buffers emptied. */
void conn_reset(struct conn *c);
/* Closes every stream of c (their host is gone), leaving its buffers alone. */
void conn_close_streams(struct conn *c);

/* net_refresh.c: restore_hook's network part (flush eth0's neighbours, gratuitous ARP);
 * adds neigh_flushed and arp_announced to the reply. */
void net_refresh(struct reply *r);
/* main.c: true under `--listen-unix` (a test on the host, no VM): restore_hook then leaves
 * the machine's clock, RNG and network alone, since they are the host's. */
extern bool host_mode;

#endif
