/* The agent's flat JSON: an encoder for responses (bytes that are not UTF-8 become U+FFFD),
 * base64, the parser of one flat request object, and the reply under construction. It must stay
 * dependency-free (the agent is static and alone in the initramfs besides busybox). */
#include "agent.h"

#include <inttypes.h>
#include <stdarg.h>

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
void put_json_string(struct buf *b, const char *s, size_t n)
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

void put_json_cstr(struct buf *b, const char *s)
{
	put_json_string(b, s, strlen(s));
}

/* ------------------------------------------------------------------- base64 */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void put_base64(struct buf *b, const unsigned char *p, size_t n)
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
int b64_decode(const char *in, size_t n, unsigned char *out, size_t *ret_len)
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

/* The non-string fields: integers and the boolean "recursive". */
static int assign_number_or_flag(struct cursor *c, struct request *rq, const char *key,
				 const struct json_value *v)
{
	static const char *const int_keys[] = { "timeout_ms", "time_ns", "pid", "signal" };
	uint64_t *int_slots[] = { &rq->timeout_ms, &rq->time_ns, &rq->pid, &rq->signal };
	bool *present[] = { &rq->has_timeout, &rq->has_time, &rq->has_pid, &rq->has_signal };

	if (strcmp(key, "recursive") == 0) {
		if (v->kind != JSON_LITERAL || v->s[0] == 'n')
			return parse_fail(c, "recursive must be true or false");
		rq->recursive = v->s[0] == 't';
		return 0;
	}
	for (size_t i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++) {
		if (strcmp(key, int_keys[i]) != 0)
			continue;
		if (parse_u64(v, int_slots[i]) < 0)
			return parse_fail(c, "a number field must be a non-negative integer");
		*present[i] = true;
	}
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
	return assign_number_or_flag(c, rq, key, v);
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
int parse_request(char *line, size_t len, struct request *rq, const char **ret_err)
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

/* Records an error message for the response and returns err (a negative errno). */
int fail(struct reply *r, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	return err;
}

void put_field_u64(struct reply *r, const char *key, uint64_t v)
{
	buf_printf(&r->fields, ",\"%s\":%" PRIu64, key, v);
}

void put_field_bool(struct reply *r, const char *key, bool v)
{
	buf_printf(&r->fields, ",\"%s\":%s", key, v ? "true" : "false");
}

void put_field_string(struct reply *r, const char *key, const char *s, size_t n)
{
	buf_printf(&r->fields, ",\"%s\":", key);
	put_json_string(&r->fields, s, n);
}

