/*
 * vmsnap-agent: the guest half of the host <-> guest control channel.
 *
 * Runs inside the microVM (normally as PID 1, exec'd by the initramfs /init) and
 * serves newline-delimited JSON requests on the virtio-serial port named
 * "org.vmsnap.agent". One request per line, one response per line, in order:
 *
 *   {"op":"health"}                               -> {"ok":true,"uptime_ms":N}
 *   {"op":"exec","cmd":"...","timeout_ms":N}      -> {"ok":true,"exit":N,"stdout":"..",...}
 *   {"op":"write_file","path":"..","data_b64":".."}
 *   {"op":"read_file","path":".."}                -> {"ok":true,"data_b64":".."}
 *   {"op":"sync"}
 *   {"op":"restore_hook","time_ns":N,"seed_b64":".."}
 *   {"op":"random"}                               -> {"ok":true,"hex":"<32 hex digits>"}
 *
 * A request's "id" (string, number, bool or null) is echoed in its response.
 * Failures answer {"ok":false,"error":"..."}. docs/guest.md has the full contract.
 *
 * It must stay static and dependency-free (it is the only program in the initramfs
 * besides busybox), hence the small hand-written JSON and base64 code below. It must
 * also survive snapshot/restore: after a restore the host reconnects to a *new*
 * QEMU's socket, which the guest sees as the port's host side closing and opening
 * again, so every "host went away" condition is a wait-and-retry, never an exit.
 */
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

/* ------------------------------------------------------------------ utilities */

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Logs one line to stderr, which /init points at the serial console. */
static void logmsg(const char *fmt, ...)
{
	va_list ap;

	fputs("vmsnap-agent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int64_t now_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Writes all of buf to a blocking fd. Returns 0 or a negative errno. */
static int write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A growable byte buffer. Allocation failure is sticky and checked once at the end,
 * so that building a response stays free of error plumbing. */
struct buf {
	char *data;
	size_t len, cap;
	bool oom;
};

static bool buf_reserve(struct buf *b, size_t extra)
{
	size_t want;
	char *p;

	if (b->oom)
		return false;
	if (b->cap - b->len >= extra)
		return true;
	want = b->cap ? b->cap : 256;
	while (want - b->len < extra)
		want *= 2;
	p = realloc(b->data, want);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->data = p;
	b->cap = want;
	return true;
}

static void buf_put(struct buf *b, const void *p, size_t n)
{
	if (!buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void buf_puts(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){ 0 };
}

/* ------------------------------------------------------------ JSON encoding */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, <= U+10FFFF), or 0 if the bytes there are not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xBF;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		len = 2;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		len = 3;
		lo = s[0] == 0xE0 ? 0xA0 : 0x80;
		hi = s[0] == 0xED ? 0x9F : 0xBF;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		len = 4;
		lo = s[0] == 0xF0 ? 0x90 : 0x80;
		hi = s[0] == 0xF4 ? 0x8F : 0xBF;
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* Appends s as a JSON string. Command output is arbitrary bytes but JSON text must
 * be UTF-8, so bytes that are not valid UTF-8 become U+FFFD. */
static void put_json_string(struct buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	buf_put(b, "\"", 1);
	while (i < n) {
		size_t run = 0;
		while (i + run < n && p[i + run] >= 0x20 && p[i + run] < 0x80 && p[i + run] != '"' &&
		       p[i + run] != '\\')
			run++;
		buf_put(b, p + i, run);
		i += run;
		if (i >= n)
			break;
		if (p[i] == '"' || p[i] == '\\') {
			buf_put(b, "\\", 1);
			buf_put(b, p + i++, 1);
		} else if (p[i] == '\n' || p[i] == '\t' || p[i] == '\r') {
			buf_put(b, p[i] == '\n' ? "\\n" : p[i] == '\t' ? "\\t" : "\\r", 2);
			i++;
		} else if (p[i] < 0x20) {
			buf_printf(b, "\\u%04x", p[i++]);
		} else {
			size_t len = utf8_len(p + i, n - i);
			if (len) {
				buf_put(b, p + i, len);
				i += len;
			} else {
				buf_puts(b, "\\ufffd");
				i++;
			}
		}
	}
	buf_put(b, "\"", 1);
}

static void put_json_cstr(struct buf *b, const char *s)
{
	put_json_string(b, s, strlen(s));
}

/* ------------------------------------------------------------------- base64 */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_base64(struct buf *b, const unsigned char *p, size_t n)
{
	char quad[4];

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		quad[0] = b64_alphabet[v >> 18 & 63];
		quad[1] = b64_alphabet[v >> 12 & 63];
		quad[2] = i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=';
		quad[3] = i + 2 < n ? b64_alphabet[v & 63] : '=';
		buf_put(b, quad, 4);
	}
}

static int b64_value(char c)
{
	const char *hit = c ? strchr(b64_alphabet, c) : NULL;

	return hit ? (int)(hit - b64_alphabet) : -1;
}

/* Decodes standard base64 (padding optional). out may alias in: the output never
 * overtakes the input. Returns 0 and the length, or -EINVAL. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t *ret_len)
{
	uint32_t acc = 0;
	size_t o = 0;
	int bits = 0;

	for (int pad = 0; pad < 2 && n > 0 && in[n - 1] == '='; pad++)
		n--;
	if (n % 4 == 1)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value(in[i]);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 6 | (uint32_t)v) & 0xFFFFFF;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	*ret_len = o;
	return 0;
}

/* ------------------------------------------------------------ JSON parsing */

/* Requests are one flat JSON object whose values are strings, numbers, booleans
 * or null; nothing the protocol needs is nested, so nesting is rejected rather
 * than half-supported. Strings are decoded in place in the request line. */

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

struct cursor {
	char *p, *end;
	const char *err;
};

static int parse_fail(struct cursor *c, const char *err)
{
	c->err = err;
	return -EINVAL;
}

static void skip_ws(struct cursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
		c->p++;
}

static int hex4(const char *p, uint32_t *ret)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		char ch = p[i];
		int d = ch >= '0' && ch <= '9' ? ch - '0' :
			ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 :
			ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
		if (d < 0)
			return -EINVAL;
		v = v << 4 | (uint32_t)d;
	}
	*ret = v;
	return 0;
}

/* Decodes the XXXX (and a following \uXXXX low surrogate) of a \u escape at c->p
 * into UTF-8 at *w. Output is never longer than input, so in-place is safe. */
static int parse_u_escape(struct cursor *c, char **w)
{
	unsigned char *o = (unsigned char *)*w;
	uint32_t cp, lo;

	if (c->end - c->p < 4 || hex4(c->p, &cp) < 0)
		return parse_fail(c, "bad \\u escape");
	c->p += 4;
	if (cp >= 0xD800 && cp <= 0xDBFF) {
		if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || hex4(c->p + 2, &lo) < 0 ||
		    lo < 0xDC00 || lo > 0xDFFF)
			return parse_fail(c, "unpaired surrogate in \\u escape");
		c->p += 6;
		cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
	} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
		return parse_fail(c, "unpaired surrogate in \\u escape");
	}
	if (cp == 0)
		return parse_fail(c, "NUL characters are not supported");
	if (cp < 0x80) {
		*o++ = (unsigned char)cp;
	} else if (cp < 0x800) {
		*o++ = (unsigned char)(0xC0 | cp >> 6);
		*o++ = (unsigned char)(0x80 | (cp & 63));
	} else if (cp < 0x10000) {
		*o++ = (unsigned char)(0xE0 | cp >> 12);
		*o++ = (unsigned char)(0x80 | (cp >> 6 & 63));
		*o++ = (unsigned char)(0x80 | (cp & 63));
	} else {
		*o++ = (unsigned char)(0xF0 | cp >> 18);
		*o++ = (unsigned char)(0x80 | (cp >> 12 & 63));
		*o++ = (unsigned char)(0x80 | (cp >> 6 & 63));
		*o++ = (unsigned char)(0x80 | (cp & 63));
	}
	*w = (char *)o;
	return 0;
}

static char unescape_simple(char ch)
{
	switch (ch) {
	case '"': return '"';
	case '\\': return '\\';
	case '/': return '/';
	case 'b': return '\b';
	case 'f': return '\f';
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	default: return 0;
	}
}

/* Parses the string starting at the opening quote at c->p, decoding it in place. */
static int parse_string(struct cursor *c, struct json_value *ret)
{
	char *start = ++c->p, *w = start;

	while (c->p < c->end) {
		char ch = *c->p++;
		if (ch == '"') {
			*w = '\0'; /* w trails the closing quote, which is consumed */
			*ret = (struct json_value){ JSON_STRING, start, (size_t)(w - start) };
			return 0;
		}
		if ((unsigned char)ch < 0x20)
			return parse_fail(c, "control character in string");
		if (ch != '\\') {
			*w++ = ch;
			continue;
		}
		if (c->p >= c->end)
			break;
		ch = *c->p++;
		if (ch == 'u') {
			if (parse_u_escape(c, &w) < 0)
				return -EINVAL;
		} else if ((*w = unescape_simple(ch)) != 0) {
			w++;
		} else {
			return parse_fail(c, "bad escape in string");
		}
	}
	return parse_fail(c, "unterminated string");
}

static size_t span_digits(const char *p, const char *end)
{
	const char *q = p;

	while (q < end && *q >= '0' && *q <= '9')
		q++;
	return (size_t)(q - p);
}

/* Parses a number token per the JSON grammar, or true/false/null, keeping it raw. */
static int parse_scalar(struct cursor *c, struct json_value *ret)
{
	static const char *const literals[] = { "true", "false", "null" };
	char *start = c->p;
	size_t n;

	for (size_t i = 0; i < sizeof(literals) / sizeof(literals[0]); i++) {
		n = strlen(literals[i]);
		if ((size_t)(c->end - c->p) >= n && memcmp(c->p, literals[i], n) == 0) {
			c->p += n;
			*ret = (struct json_value){ JSON_LITERAL, start, n };
			return 0;
		}
	}
	if (c->p < c->end && *c->p == '-')
		c->p++;
	n = span_digits(c->p, c->end);
	if (n == 0 || (n > 1 && *c->p == '0'))
		return parse_fail(c, "bad value");
	c->p += n;
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if ((n = span_digits(c->p, c->end)) == 0)
			return parse_fail(c, "bad number");
		c->p += n;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if ((n = span_digits(c->p, c->end)) == 0)
			return parse_fail(c, "bad number");
		c->p += n;
	}
	*ret = (struct json_value){ JSON_NUMBER, start, (size_t)(c->p - start) };
	return 0;
}

static int parse_value(struct cursor *c, struct json_value *ret)
{
	if (c->p >= c->end)
		return parse_fail(c, "missing value");
	if (*c->p == '"')
		return parse_string(c, ret);
	if (*c->p == '{' || *c->p == '[')
		return parse_fail(c, "nested values are not supported");
	return parse_scalar(c, ret);
}

/* Parses a non-negative decimal integer that fits in 64 bits. */
static int parse_u64(const struct json_value *v, uint64_t *ret)
{
	uint64_t x = 0;

	if (v->kind != JSON_NUMBER || v->len == 0 || span_digits(v->s, v->s + v->len) != v->len)
		return -EINVAL;
	for (size_t i = 0; i < v->len; i++) {
		unsigned d = (unsigned)(v->s[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -ERANGE;
		x = x * 10 + d;
	}
	*ret = x;
	return 0;
}

/* Stores one key/value pair in rq. Unknown keys are ignored so that newer hosts can
 * send optional fields to older agents. */
static int assign_field(struct cursor *c, struct request *rq, const char *key, struct json_value *v)
{
	static const char *const string_keys[] = { "op", "cmd", "path", "data_b64", "seed_b64" };
	char **string_slots[] = { &rq->op, &rq->cmd, &rq->path, &rq->data_b64, &rq->seed_b64 };

	if (strcmp(key, "id") == 0) {
		rq->id = *v;
		rq->has_id = true;
		return 0;
	}
	for (size_t i = 0; i < sizeof(string_keys) / sizeof(string_keys[0]); i++) {
		if (strcmp(key, string_keys[i]) != 0)
			continue;
		if (v->kind != JSON_STRING)
			return parse_fail(c, "field must be a string");
		*string_slots[i] = v->s;
		return 0;
	}
	if (strcmp(key, "timeout_ms") == 0) {
		if (parse_u64(v, &rq->timeout_ms) < 0)
			return parse_fail(c, "timeout_ms must be a non-negative integer");
		rq->has_timeout = true;
	} else if (strcmp(key, "time_ns") == 0) {
		if (parse_u64(v, &rq->time_ns) < 0)
			return parse_fail(c, "time_ns must be a non-negative integer");
		rq->has_time = true;
	}
	return 0;
}

static int parse_member(struct cursor *c, struct request *rq)
{
	struct json_value key, val;

	if (c->p >= c->end || *c->p != '"')
		return parse_fail(c, "expected a key");
	if (parse_string(c, &key) < 0)
		return -EINVAL;
	skip_ws(c);
	if (c->p >= c->end || *c->p++ != ':')
		return parse_fail(c, "expected ':'");
	skip_ws(c);
	if (parse_value(c, &val) < 0)
		return -EINVAL;
	return assign_field(c, rq, key.s, &val);
}

/* Parses one request line (modified in place). On failure *ret_err says why. */
static int parse_request(char *line, size_t len, struct request *rq, const char **ret_err)
{
	struct cursor c = { line, line + len, NULL };

	*rq = (struct request){ 0 };
	skip_ws(&c);
	if (c.p >= c.end || *c.p++ != '{')
		return *ret_err = "request must be a JSON object", -EINVAL;
	skip_ws(&c);
	if (c.p < c.end && *c.p == '}') {
		c.p++;
	} else {
		for (;;) {
			if (parse_member(&c, rq) < 0)
				return *ret_err = c.err, -EINVAL;
			skip_ws(&c);
			if (c.p < c.end && *c.p == ',') {
				c.p++;
				skip_ws(&c);
				continue;
			}
			if (c.p < c.end && *c.p == '}') {
				c.p++;
				break;
			}
			return *ret_err = "expected ',' or '}'", -EINVAL;
		}
	}
	skip_ws(&c);
	if (c.p != c.end)
		return *ret_err = "trailing characters after the object", -EINVAL;
	return 0;
}

/* ------------------------------------------------------------------ replies */

/* A response under construction: the op-specific fields, or an error message. */
struct reply {
	struct buf fields; /* ",\"key\":value" pairs appended by the op */
	char err[512];
};

static int fail(struct reply *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records an error message for the response and returns err (a negative errno). */
static int fail(struct reply *r, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	return err;
}

static void put_field_u64(struct reply *r, const char *key, uint64_t v)
{
	buf_printf(&r->fields, ",\"%s\":%" PRIu64, key, v);
}

static void put_field_bool(struct reply *r, const char *key, bool v)
{
	buf_printf(&r->fields, ",\"%s\":%s", key, v ? "true" : "false");
}

static void put_field_string(struct reply *r, const char *key, const char *s, size_t n)
{
	buf_printf(&r->fields, ",\"%s\":", key);
	put_json_string(&r->fields, s, n);
}

/* ----------------------------------------------------------------- simple ops */

static int op_health(const struct request *rq, struct reply *r)
{
	(void)rq;
	put_field_u64(r, "uptime_ms", (uint64_t)now_ms(CLOCK_BOOTTIME));
	return 0;
}

static int op_sync(const struct request *rq, struct reply *r)
{
	(void)rq;
	(void)r;
	sync();
	return 0;
}

static int op_random(const struct request *rq, struct reply *r)
{
	unsigned char bytes[16];
	char hex[2 * sizeof(bytes) + 1];

	(void)rq;
	if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t)sizeof(bytes))
		return fail(r, -errno, "getrandom: %s", strerror(errno));
	for (size_t i = 0; i < sizeof(bytes); i++)
		snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
	put_field_string(r, "hex", hex, 2 * sizeof(bytes));
	return 0;
}

static int op_write_file(const struct request *rq, struct reply *r)
{
	size_t n;
	int fd, ret;

	if (!rq->path || !rq->data_b64)
		return fail(r, -EINVAL, "write_file needs \"path\" and \"data_b64\"");
	/* Decode in place: the request line is ours until the response is sent. */
	if (b64_decode(rq->data_b64, strlen(rq->data_b64), (unsigned char *)rq->data_b64, &n) < 0)
		return fail(r, -EINVAL, "data_b64 is not valid base64");
	fd = open(rq->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fail(r, -errno, "%s: %s", rq->path, strerror(errno));
	ret = write_all(fd, rq->data_b64, n);
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret < 0)
		return fail(r, ret, "%s: %s", rq->path, strerror(-ret));
	put_field_u64(r, "bytes", n);
	return 0;
}

/* Reads up to MAX_FILE bytes of path into a new buffer. Reads until EOF rather than
 * trusting st_size, which is 0 for /proc and /sys files. */
static int slurp(const char *path, struct buf *ret, struct reply *r)
{
	struct buf b = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return fail(r, -errno, "%s: %s", path, strerror(errno));
	for (;;) {
		ssize_t n;
		if (!buf_reserve(&b, 65536)) {
			err = fail(r, -ENOMEM, "%s: out of memory", path);
			break;
		}
		n = read(fd, b.data + b.len, b.cap - b.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = fail(r, -errno, "%s: %s", path, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		b.len += (size_t)n;
		if (b.len > MAX_FILE) {
			err = fail(r, -EFBIG, "%s: larger than %u bytes", path, MAX_FILE);
			break;
		}
	}
	close(fd);
	if (err < 0) {
		buf_free(&b);
		return err;
	}
	*ret = b;
	return 0;
}

static int op_read_file(const struct request *rq, struct reply *r)
{
	struct buf data = { 0 };
	int ret;

	if (!rq->path)
		return fail(r, -EINVAL, "read_file needs \"path\"");
	ret = slurp(rq->path, &data, r);
	if (ret < 0)
		return ret;
	buf_puts(&r->fields, ",\"data_b64\":\"");
	put_base64(&r->fields, (const unsigned char *)data.data, data.len);
	buf_puts(&r->fields, "\"");
	put_field_u64(r, "bytes", data.len);
	buf_free(&data);
	return 0;
}

/* Mixes seed into the kernel RNG *and* credits it, then forces the CRNG to reseed.
 * After a restore every clone has the same CRNG state. Writing to /dev/urandom mixes
 * without crediting, and even credited entropy (RNDADDENTROPY) reaches the CRNG only
 * at its next scheduled reseed (up to a minute later on 6.1): clones restored from
 * one snapshot returned identical getrandom() bytes after both (docs/guest.md).
 * RNDRESEEDCRNG makes the new seed take effect before we answer. */
static int reseed_rng(const unsigned char *seed, size_t n, struct reply *r)
{
	struct rand_pool_info *info;
	int fd, ret = 0;

	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(r, -errno, "/dev/urandom: %s", strerror(errno));
	info = malloc(sizeof(*info) + n);
	if (!info) {
		close(fd);
		return fail(r, -ENOMEM, "out of memory");
	}
	info->entropy_count = (int)(n * 8);
	info->buf_size = (int)n;
	memcpy(info->buf, seed, n);
	if ((ret = write_all(fd, seed, n)) < 0)
		fail(r, ret, "write /dev/urandom: %s", strerror(-ret));
	else if (ioctl(fd, RNDADDENTROPY, info) < 0)
		ret = fail(r, -errno, "RNDADDENTROPY: %s", strerror(errno));
	else if (ioctl(fd, RNDRESEEDCRNG) < 0)
		ret = fail(r, -errno, "RNDRESEEDCRNG: %s", strerror(errno));
	free(info);
	close(fd);
	return ret;
}

static int op_restore_hook(const struct request *rq, struct reply *r)
{
	size_t n = 0;
	int ret;

	if (rq->has_time) {
		struct timespec ts = { .tv_sec = (time_t)(rq->time_ns / 1000000000u),
				       .tv_nsec = (long)(rq->time_ns % 1000000000u) };
		if (clock_settime(CLOCK_REALTIME, &ts) < 0)
			return fail(r, -errno, "clock_settime: %s", strerror(errno));
	}
	if (rq->seed_b64) {
		unsigned char *seed = (unsigned char *)rq->seed_b64;
		if (strlen(rq->seed_b64) > (MAX_SEED + 2) / 3 * 4 ||
		    b64_decode(rq->seed_b64, strlen(rq->seed_b64), seed, &n) < 0 || n == 0 ||
		    n > MAX_SEED)
			return fail(r, -EINVAL, "seed_b64 must be 1..%d bytes of base64", MAX_SEED);
		if ((ret = reseed_rng(seed, n, r)) < 0)
			return ret;
	}
	put_field_bool(r, "clock_set", rq->has_time);
	put_field_u64(r, "seed_bytes", n);
	return 0;
}

/* ----------------------------------------------------------------------- exec */

/* Output of one stream of the command: kept up to MAX_OUTPUT, the rest discarded
 * (but still read, so that the writer never blocks on a full pipe). */
struct capture {
	int fd;
	struct buf data;
	bool truncated;
};

/* Child side of exec: own session (so a timeout can kill the whole process group,
 * and no terminal signals reach it), pipes on stdout/stderr, /dev/null on stdin, and
 * the signal state a fresh process expects. Never returns. */
static void run_child(const char *cmd, int out, int err)
{
	sigset_t none;
	int null;

	setsid();
	null = open("/dev/null", O_RDONLY);
	if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(127);
	if (null > 2)
		close(null);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	if (chdir("/") < 0)
		_exit(127);
	execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
	_exit(127);
}

/* Reads what is available on cap->fd. Returns bytes read, 0 at EOF (and closes the
 * fd), or -EAGAIN when the pipe is empty for now. */
static ssize_t capture_read(struct capture *cap)
{
	char chunk[65536];
	ssize_t n;

	do
		n = read(cap->fd, chunk, sizeof(chunk));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return -EAGAIN;
	if (n <= 0) {
		close(cap->fd);
		cap->fd = -1;
		return 0;
	}
	size_t keep = MAX_OUTPUT - cap->data.len;
	if ((size_t)n < keep)
		keep = (size_t)n;
	buf_put(&cap->data, chunk, keep);
	if (keep < (size_t)n)
		cap->truncated = true;
	return n;
}

/* After the shell exits, takes what its output pipes already hold, then closes them.
 * Background processes it started may keep the pipes open forever; we must not wait
 * for them (they get EPIPE/SIGPIPE if they write later). Bounded so that a chatty
 * background writer cannot keep us here. */
static void capture_finish(struct capture *cap)
{
	size_t budget = 4 * (size_t)MAX_OUTPUT;

	while (cap->fd >= 0) {
		ssize_t n = capture_read(cap);
		if (n <= 0 || (size_t)n >= budget)
			break;
		budget -= (size_t)n;
	}
	if (cap->fd >= 0)
		close(cap->fd);
	cap->fd = -1;
}

/* pidfd_open(2) via syscall(2): a pollable "this child has exited" event. */
static int open_pidfd(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* How long to sleep in poll() with `left` ms to the deadline. Without a pidfd
 * (kernel < 5.3) nothing wakes us when the child exits, so waitpid is polled. */
static int poll_timeout(int64_t left, bool have_pidfd)
{
	if (!have_pidfd && left > 50)
		return 50;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Pumps the child's output until it exits or the deadline passes; on timeout kills
 * its process group. Returns the wait status and whether the timeout fired. */
static void wait_child(pid_t pid, struct capture cap[2], int64_t deadline, int *ret_status,
		       bool *ret_timed_out)
{
	int pidfd = open_pidfd(pid), status = 0;
	bool timed_out = false;

	for (;;) {
		struct pollfd pfd[3] = { { cap[0].fd, POLLIN, 0 }, { cap[1].fd, POLLIN, 0 },
					 { pidfd, POLLIN, 0 } };
		int64_t left = deadline - now_ms(CLOCK_MONOTONIC);

		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		if (left <= 0) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			timed_out = true;
			break;
		}
		if (poll(pfd, 3, poll_timeout(left, pidfd >= 0)) < 0 && errno != EINTR)
			sleep_ms(10);
		for (int i = 0; i < 2; i++)
			if (cap[i].fd >= 0 && pfd[i].revents)
				capture_read(&cap[i]);
	}
	if (pidfd >= 0)
		close(pidfd);
	*ret_status = status;
	*ret_timed_out = timed_out;
}

/* Creates a pipe whose read end (ours) is non-blocking and whose write end (the
 * child's) is blocking, both close-on-exec (dup2 in the child clears that). */
static int make_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) < 0) {
		int err = -errno;
		close(fds[0]);
		close(fds[1]);
		return err;
	}
	return 0;
}

static void put_exec_result(struct reply *r, int status, bool timed_out, struct capture cap[2])
{
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

	put_field_u64(r, "exit", (uint64_t)code);
	if (WIFSIGNALED(status))
		put_field_u64(r, "signal", (uint64_t)WTERMSIG(status));
	put_field_bool(r, "timed_out", timed_out);
	put_field_bool(r, "truncated", cap[0].truncated || cap[1].truncated);
	put_field_string(r, "stdout", cap[0].data.data ? cap[0].data.data : "", cap[0].data.len);
	put_field_string(r, "stderr", cap[1].data.data ? cap[1].data.data : "", cap[1].data.len);
}

/* Runs cmd with /bin/sh -c and returns its exit code and output. Returns as soon as
 * the shell itself exits, so `cmd &` style background jobs do not hold it up. */
static int op_exec(const struct request *rq, struct reply *r)
{
	struct capture cap[2] = { { .fd = -1 }, { .fd = -1 } };
	int out[2], err[2], status, ret;
	uint64_t timeout = rq->has_timeout ? rq->timeout_ms : DEFAULT_TIMEOUT_MS;
	bool timed_out;
	pid_t pid;

	if (!rq->cmd)
		return fail(r, -EINVAL, "exec needs \"cmd\"");
	if (timeout == 0 || timeout > MAX_TIMEOUT_MS)
		return fail(r, -EINVAL, "timeout_ms must be 1..%u", MAX_TIMEOUT_MS);
	if ((ret = make_pipe(out)) < 0)
		return fail(r, ret, "pipe: %s", strerror(-ret));
	if ((ret = make_pipe(err)) < 0) {
		close(out[0]);
		close(out[1]);
		return fail(r, ret, "pipe: %s", strerror(-ret));
	}
	pid = fork();
	if (pid == 0)
		run_child(rq->cmd, out[1], err[1]);
	ret = pid < 0 ? -errno : 0;
	close(out[1]);
	close(err[1]);
	cap[0].fd = out[0];
	cap[1].fd = err[0];
	if (ret == 0) {
		wait_child(pid, cap, now_ms(CLOCK_MONOTONIC) + (int64_t)timeout, &status, &timed_out);
		capture_finish(&cap[0]);
		capture_finish(&cap[1]);
		put_exec_result(r, status, timed_out, cap);
	} else {
		capture_finish(&cap[0]);
		capture_finish(&cap[1]);
		fail(r, ret, "fork: %s", strerror(-ret));
	}
	buf_free(&cap[0].data);
	buf_free(&cap[1].data);
	return ret;
}

/* ------------------------------------------------------------------ dispatch */

struct op {
	const char *name;
	int (*run)(const struct request *rq, struct reply *r);
};

static const struct op ops[] = {
	{ "health", op_health },
	{ "exec", op_exec },
	{ "write_file", op_write_file },
	{ "read_file", op_read_file },
	{ "sync", op_sync },
	{ "restore_hook", op_restore_hook },
	{ "random", op_random },
};

static void put_id(struct buf *out, const struct request *rq)
{
	buf_puts(out, "\"id\":");
	if (rq->id.kind == JSON_STRING)
		put_json_string(out, rq->id.s, rq->id.len);
	else
		buf_put(out, rq->id.s, rq->id.len);
	buf_puts(out, ",");
}

static const struct op *find_op(const char *name)
{
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(name, ops[i].name) == 0)
			return &ops[i];
	return NULL;
}

/* Handles one request line and builds the complete response line in out. */
static void handle_line(char *line, size_t len, struct buf *out)
{
	struct reply r = { 0 };
	struct request rq;
	const struct op *op = NULL;
	const char *perr = NULL;
	int ret;

	if (parse_request(line, len, &rq, &perr) < 0)
		ret = fail(&r, -EINVAL, "bad request: %s", perr ? perr : "malformed JSON");
	else if (!rq.op)
		ret = fail(&r, -EINVAL, "bad request: missing \"op\"");
	else if (!(op = find_op(rq.op)))
		ret = fail(&r, -EINVAL, "unknown op \"%.64s\"", rq.op);
	else
		ret = op->run(&rq, &r);
	if (ret == 0 && r.fields.oom)
		ret = fail(&r, -ENOMEM, "out of memory building the response");
	buf_puts(out, "{");
	/* An id parsed before a later syntax error is still echoed: it is complete. */
	if (rq.has_id)
		put_id(out, &rq);
	if (ret == 0) {
		buf_puts(out, "\"ok\":true");
		buf_put(out, r.fields.data, r.fields.len);
	} else {
		buf_puts(out, "\"ok\":false,\"error\":");
		put_json_cstr(out, r.err[0] ? r.err : strerror(-ret));
	}
	buf_puts(out, "}\n");
	buf_free(&r.fields);
}

/* ---------------------------------------------------------------- the port */

/* Finds the device node of our virtio-serial port. udev would make
 * /dev/virtio-ports/<name>; busybox does not, so fall back to matching
 * /sys/class/virtio-ports/vportNpM/name ourselves. */
static int find_port(char *path, size_t size)
{
	static const char sys[] = "/sys/class/virtio-ports";
	struct dirent *e;
	DIR *d;
	int ret = -ENOENT;

	if (access("/dev/virtio-ports/" PORT_NAME, F_OK) == 0) {
		snprintf(path, size, "/dev/virtio-ports/%s", PORT_NAME);
		return 0;
	}
	d = opendir(sys);
	if (!d)
		return -errno;
	while (ret < 0 && (e = readdir(d))) {
		char name_path[512], name[128] = "";
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(name_path, sizeof(name_path), "%s/%s/name", sys, e->d_name);
		f = fopen(name_path, "re");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f))
			name[strcspn(name, "\n")] = '\0';
		fclose(f);
		if (strcmp(name, PORT_NAME) == 0) {
			snprintf(path, size, "/dev/%s", e->d_name);
			ret = 0;
		}
	}
	closedir(d);
	return ret;
}

/* Opens the port, waiting for it to appear (modules may still be probing). */
static int open_port(const char *override)
{
	char path[512];
	bool warned = false;

	for (;;) {
		int fd = -1;
		if (override)
			snprintf(path, sizeof(path), "%s", override);
		if (override || find_port(path, sizeof(path)) == 0)
			fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd >= 0) {
			logmsg("serving on %s", path);
			return fd;
		}
		if (!warned)
			logmsg("waiting for virtio port %s", override ? override : PORT_NAME);
		warned = true;
		sleep_ms(200);
	}
}

/* Sends a whole response. The port is non-blocking: when the host side closes
 * (POLLHUP) or stops reading for too long, the response is dropped, because the
 * host that asked is gone and a new one will start with a new request. */
static int send_response(int fd, const char *p, size_t n)
{
	while (n > 0) {
		struct pollfd pfd = { fd, POLLOUT, 0 };
		ssize_t w = write(fd, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (poll(&pfd, 1, WRITE_STALL_MS) == 0)
			return -ETIMEDOUT;
		if ((pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(pfd.revents & POLLOUT))
			return -EPIPE;
	}
	return 0;
}

/* Reaps orphans: as PID 1 (or subreaper) every background job ends up our child. */
static void reap_orphans(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

/* Incoming bytes, split into lines. An over-long line is answered with an error
 * once and then skipped up to its newline. */
struct line_reader {
	char *data;
	size_t len;
	size_t scanned;   /* data[0..scanned) holds no newline: a long line is scanned once */
	bool discarding;
};

static void answer(int fd, char *line, size_t len)
{
	struct buf out = { 0 };

	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len == 0)
		return;
	handle_line(line, len, &out);
	if (out.oom)
		logmsg("out of memory building a response");
	else if (send_response(fd, out.data, out.len) < 0)
		logmsg("host went away before the response was sent; dropped");
	buf_free(&out);
}

/* Answers every complete line in lr, keeping a trailing partial line. */
static void process_input(int fd, struct line_reader *lr)
{
	size_t start = 0;
	char *nl;

	while ((nl = memchr(lr->data + lr->scanned, '\n', lr->len - lr->scanned))) {
		size_t end = (size_t)(nl - lr->data);
		if (!lr->discarding)
			answer(fd, lr->data + start, end - start);
		lr->discarding = false;
		start = lr->scanned = end + 1;
	}
	memmove(lr->data, lr->data + start, lr->len - start);
	lr->len -= start;
	lr->scanned = lr->len;
	if (lr->len == MAX_LINE) {
		char msg[128];
		int n = snprintf(msg, sizeof(msg),
				 "{\"ok\":false,\"error\":\"request longer than %u bytes\"}\n", MAX_LINE);
		if (!lr->discarding)
			send_response(fd, msg, (size_t)n);
		lr->discarding = true;
		lr->len = lr->scanned = 0;
	}
}

/* Serves the port forever. Host disconnects (read returning 0, POLLHUP) are normal:
 * a restore always causes one. Only a vanished device makes us reopen it. */
static void serve(const char *override, struct line_reader *lr)
{
	int fd = open_port(override);

	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t n;

		reap_orphans();
		if (poll(&pfd, 1, 1000) <= 0)
			continue;
		if (pfd.revents & POLLNVAL) {
			fd = open_port(override);
			continue;
		}
		/* One read returns at most one virtqueue buffer (a page): drain them all
		 * before polling again. */
		while ((n = read(fd, lr->data + lr->len, MAX_LINE - lr->len)) > 0) {
			lr->len += (size_t)n;
			process_input(fd, lr);
		}
		if (n == 0 || (n < 0 && errno == EAGAIN && (pfd.revents & POLLHUP))) {
			/* Host side closed: forget its partial line, wait for the next host. */
			lr->len = lr->scanned = 0;
			lr->discarding = false;
			sleep_ms(IDLE_RETRY_MS);
		} else if (errno != EAGAIN && errno != EINTR) {
			logmsg("read: %s; reopening the port", strerror(errno));
			close(fd);
			sleep_ms(200);
			fd = open_port(override);
		}
	}
}

/* ---- vsock (Firecracker, Cloud Hypervisor) ---- */

#define AGENT_VSOCK_PORT 1024 /* the port the host's VMM drivers connect to */

/* Answers one host connection until it closes. */
static void serve_vsock_conn(int c, struct line_reader *lr)
{
	ssize_t n;

	lr->len = lr->scanned = 0;
	lr->discarding = false;
	while ((n = read(c, lr->data + lr->len, MAX_LINE - lr->len)) > 0 || (n < 0 && errno == EINTR)) {
		if (n > 0) {
			lr->len += (size_t)n;
			process_input(c, lr);
		}
	}
	close(c);
}

/* Serves the same protocol on vsock port 1024, one connection at a time, for VMMs that give
 * the guest a vsock device instead of a virtio-serial port. Runs in a child process; quietly
 * ends when the guest has no vsock transport (QEMU microvm here). */
static void serve_vsock(struct line_reader *lr)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				  .svm_port = AGENT_VSOCK_PORT };
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		logmsg("no vsock listener (%s); serving the virtio-serial port only", strerror(errno));
		_exit(0);
	}
	logmsg("listening on vsock port %d", AGENT_VSOCK_PORT);
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
		if (c >= 0)
			serve_vsock_conn(c, lr);
		else if (errno != EINTR)
			sleep_ms(100);
	}
}

/* `vmsnap-agent --vsock-selftest`: asks the agent over vsock loopback (CID 1) for its health
 * and prints the answer, so a test can prove the vsock listener works inside a guest. */
static int vsock_selftest(void)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_LOCAL,
				  .svm_port = AGENT_VSOCK_PORT };
	const char req[] = "{\"op\":\"health\"}\n";
	char buf[256];
	ssize_t n;
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
		fprintf(stderr, "vsock selftest: %s\n", strerror(errno));
		return 1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0) {
		fprintf(stderr, "vsock selftest: no answer\n");
		return 1;
	}
	buf[n] = '\0';
	fputs(buf, stdout);
	close(fd);
	return strstr(buf, "\"ok\":true") ? 0 : 1;
}

/* Makes sure fds 0-2 exist, so that pipes and the port never land on them. */
static void ensure_std_fds(void)
{
	for (int i = 0; i < 3; i++)
		if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			break;
}

int main(int argc, char **argv)
{
	const char *override = NULL;
	struct line_reader lr = { 0 };

	if (argc == 3 && strcmp(argv[1], "--port") == 0) {
		override = argv[2];
	} else if (argc == 2 && strcmp(argv[1], "--vsock-selftest") == 0) {
		return vsock_selftest();
	} else if (argc != 1) {
		fprintf(stderr, "usage: vmsnap-agent [--port DEVICE | --vsock-selftest]\n");
		return 2;
	}
	ensure_std_fds();
	signal(SIGPIPE, SIG_IGN);
	/* Outside PID 1, still collect background jobs the commands leave behind. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (!getenv("PATH"))
		setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
	lr.data = malloc(MAX_LINE);
	while (!lr.data) {
		/* As PID 1, exiting would panic the guest: wait for memory instead. */
		logmsg("cannot allocate the request buffer; retrying");
		sleep_ms(1000);
		lr.data = malloc(MAX_LINE);
	}
	logmsg("started (pid %d)", (int)getpid());
	if (fork() == 0)
		serve_vsock(&lr); /* a copy of the buffer: the child has its own */
	serve(override, &lr);
	return 0;
}
