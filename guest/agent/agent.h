/* vmsnap-agent: what the agent's files share (docs/guest.md §2). */
#ifndef VMSNAP_AGENT_H
#define VMSNAP_AGENT_H

#define _GNU_SOURCE
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

#define PORT_NAME "org.vmsnap.agent"
#define MAX_LINE (8u << 20)    /* longest request line; write_file data rides in it */
#define MAX_OUTPUT (1u << 20)  /* per-stream cap on captured exec output */
#define MAX_FILE (4u << 20)    /* largest file read_file returns */
#define MAX_SEED 512           /* largest restore_hook seed, in bytes */
#define DEFAULT_TIMEOUT_MS 30000
#define MAX_TIMEOUT_MS (24u * 3600 * 1000)
#define IDLE_RETRY_MS 20       /* re-check interval while the host side is closed */
#define WRITE_STALL_MS 10000   /* give up on a response the host stops reading */


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
	bool has_id, has_timeout, has_time;
	struct json_value id;
	uint64_t timeout_ms, time_ns;
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

/* Incoming bytes, split into lines. An over-long line is answered with an error
 * once and then skipped up to its newline. */
struct line_reader {
	char *data;
	size_t len;
	size_t scanned;   /* data[0..scanned) holds no newline: a long line is scanned once */
	bool discarding;
};

/* Handles one request line and builds the complete response line in out. */
void handle_line(char *line, size_t len, struct buf *out);
/* Sends a whole response on the non-blocking port; drops it when the host went away. */
int send_response(int fd, const char *p, size_t n);
/* Answers every complete line in lr, keeping a trailing partial line. */
void process_input(int fd, struct line_reader *lr);

#endif
