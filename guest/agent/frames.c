/* Protocol 2 on one connection (docs/guest.md §2.2): the input is a mix of protocol-1 lines
 * and frames, told apart by their first byte; frames are dispatched to calls, echoes and
 * streams; the answers are queued in the connection's outbound buffer, which loop.c writes
 * as the host takes them. */
#include "agent.h"

void conn_send(struct conn *c, uint8_t type, uint32_t stream, uint16_t flags, const void *p,
	       size_t n)
{
	struct frame_header h = { .type = type, .flags = flags, .stream = stream,
				  .length = (uint32_t)n };
	uint8_t head[FRAME_HEADER];

	frame_header_put(head, &h);
	buf_put(&c->out, head, sizeof(head));
	if (n)
		buf_put(&c->out, p, n);
}

void conn_send_json(struct conn *c, uint8_t type, uint32_t stream, const struct buf *json)
{
	size_t off = 0;

	if (json->oom) {
		conn_send_error(c, stream, -ENOMEM, "out of memory building the answer");
		return;
	}
	do {
		size_t n = json->len - off > FRAME_MAX ? FRAME_MAX : json->len - off;
		bool more = type == FRAME_REPLY && off + n < json->len;
		conn_send(c, type, stream, more ? FRAME_MORE : 0, json->data + off, n);
		off += n;
		if (type != FRAME_REPLY)
			break; /* other JSON payloads are small by construction */
	} while (off < json->len);
}

void conn_send_error(struct conn *c, uint32_t stream, int err, const char *fmt, ...)
{
	struct buf json = { 0 };
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	buf_printf(&json, "{\"errno\":%d,\"message\":", -err);
	put_json_cstr(&json, msg);
	buf_puts(&json, "}");
	conn_send_json(c, FRAME_ERROR, stream, &json);
	buf_free(&json);
}

bool conn_room(const struct conn *c, size_t n)
{
	return c->out.len - c->out_off + FRAME_HEADER + n <= OUT_SOFT;
}

/* CALL: the same requests as protocol 1, answered by REPLY (split when long). */
static void handle_call(struct conn *c, uint32_t id, unsigned char *p, size_t n)
{
	struct buf out = { 0 };

	handle_request((char *)p, n, true, &out, NULL);
	conn_send_json(c, FRAME_REPLY, id, &out);
	buf_free(&out);
}

/* A frame for an existing stream. Returns false on a protocol violation. */
static bool handle_stream_frame(struct conn *c, const struct frame_header *h,
				const unsigned char *p)
{
	struct stream *s = stream_find(c, h->stream);

	if (!s)
		return true; /* it ended; this frame crossed our EXIT or the host's CLOSE */
	switch (h->type) {
	case FRAME_STDIN:
		return stream_stdin(c, s, p, h->length);
	case FRAME_STDIN_EOF:
		stream_stdin_eof(c, s);
		return true;
	case FRAME_RESIZE:
		if (h->length != 4)
			return false;
		stream_resize(s, wire_get16(p), wire_get16(p + 2));
		return true;
	case FRAME_SIGNAL:
		if (h->length != 4 || wire_get32(p) == 0 || wire_get32(p) >= 65)
			return false;
		stream_signal(s, (int)wire_get32(p));
		return true;
	case FRAME_CREDIT:
		return h->length == 4 && stream_credit(s, wire_get32(p));
	case FRAME_CLOSE:
		stream_close(s);
		return true;
	}
	return false;
}

/* Dispatches one complete frame. Returns false on a protocol violation. */
static bool handle_frame(struct conn *c, const struct frame_header *h, unsigned char *p)
{
	switch (h->type) {
	case FRAME_CALL:
		handle_call(c, h->stream, p, h->length);
		return true;
	case FRAME_ECHO:
		conn_send(c, FRAME_ECHO_REPLY, h->stream, 0, p, h->length);
		return true;
	case FRAME_START:
		if (h->stream == 0 || stream_find(c, h->stream))
			return false;
		stream_start(c, h->stream, p, h->length);
		return true;
	case FRAME_STDIN:
	case FRAME_STDIN_EOF:
	case FRAME_RESIZE:
	case FRAME_SIGNAL:
	case FRAME_CREDIT:
	case FRAME_CLOSE:
		return handle_stream_frame(c, h, p);
	}
	return false;
}

/* Handles the line at in->data[start..], if it is complete. Returns the bytes it used (0: wait
 * for more). An over-long line is answered once and skipped up to its newline. */
static size_t take_line(struct conn *c, size_t start)
{
	struct line_reader *in = &c->in;
	char *nl;

	if (in->scanned < start)
		in->scanned = start;
	nl = memchr(in->data + in->scanned, '\n', in->len - in->scanned);
	if (!nl) {
		in->scanned = in->len;
		if (start == 0 && in->len == MAX_LINE) {
			char msg[128];
			int n = snprintf(msg, sizeof(msg),
					 "{\"ok\":false,\"error\":\"request longer than %u bytes\"}\n",
					 MAX_LINE);
			if (!in->discarding && conn_flush_blocking(c))
				send_response(c->fd, msg, (size_t)n);
			in->discarding = true;
			return in->len;
		}
		return 0;
	}
	size_t end = (size_t)(nl - in->data);
	if (!in->discarding)
		answer_line(c, in->data + start, end - start);
	in->discarding = false;
	return end + 1 - start;
}

bool conn_handle_input(struct conn *c)
{
	struct line_reader *in = &c->in;
	size_t start = 0, used;
	bool ok = true;

	while (start < in->len) {
		unsigned char *p = (unsigned char *)in->data + start;
		size_t avail = in->len - start;
		struct frame_header h;

		if (in->discarding || p[0] != FRAME_MAGIC) {
			if ((used = take_line(c, start)) == 0)
				break;
			start += used;
			continue;
		}
		if (avail < FRAME_HEADER)
			break;
		if (!(ok = frame_header_get(p, &h)))
			break;
		if (avail < FRAME_HEADER + h.length)
			break;
		if (!(ok = handle_frame(c, &h, p + FRAME_HEADER)))
			break;
		start += FRAME_HEADER + h.length;
	}
	if (!ok) {
		unsigned type = start + 1 < in->len ? (unsigned char)in->data[start + 1] : 0;
		logmsg("the host broke the protocol (a frame of type 0x%02x); dropping its streams",
		       type);
		return false;
	}
	memmove(in->data, in->data + start, in->len - start);
	in->len -= start;
	in->scanned = in->scanned > start ? in->scanned - start : 0;
	return true;
}
