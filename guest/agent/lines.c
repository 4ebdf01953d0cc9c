/* The ops and their dispatch, and protocol 1: newline-delimited JSON requests answered in
 * order (a CALL frame carries the same requests, frames.c). */
#include "agent.h"

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
	{ "hello", op_hello },
	{ "stat", op_stat },
	{ "list", op_list },
	{ "remove", op_remove },
	{ "ps", op_ps },
	{ "kill", op_kill },
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

/* The ops a CALL frame may not carry: they block the agent or answer more than frames do. */
static bool lines_only(const char *name)
{
	return strcmp(name, "exec") == 0 || strcmp(name, "read_file") == 0 ||
	       strcmp(name, "write_file") == 0;
}

void handle_request(char *text, size_t len, bool framed, struct buf *out, bool *ret_hello)
{
	struct reply r = { 0 };
	struct request rq;
	const struct op *op = NULL;
	const char *perr = NULL;
	int ret;

	if (parse_request(text, len, &rq, &perr) < 0)
		ret = fail(&r, -EINVAL, "bad request: %s", perr ? perr : "malformed JSON");
	else if (!rq.op)
		ret = fail(&r, -EINVAL, "bad request: missing \"op\"");
	else if (!(op = find_op(rq.op)))
		ret = fail(&r, -EINVAL, "unknown op \"%.64s\"", rq.op);
	else if (framed && lines_only(rq.op))
		ret = fail(&r, -EINVAL, "op \"%s\" is protocol 1 only: use a stream", rq.op);
	else
		ret = op->run(&rq, &r);
	if (ret_hello)
		*ret_hello = op && op->run == op_hello;
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
		buf_printf(out, "\"ok\":false,\"errno\":%d,\"error\":", -ret);
		put_json_cstr(out, r.err[0] ? r.err : strerror(-ret));
	}
	buf_puts(out, "}");
	buf_free(&r.fields);
}

int send_response(int fd, const char *p, size_t n)
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

void answer_line(struct conn *c, char *line, size_t len)
{
	struct buf out = { 0 };
	bool hello = false;

	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len == 0)
		return;
	handle_request(line, len, false, &out, &hello);
	/* A host says hello when it starts using frames on this connection: streams still open
	 * belong to a host that went away without us seeing it (a restore, when the new host
	 * connected before the old one's close reached us). Their ids would collide. */
	if (hello)
		conn_close_streams(c);
	buf_puts(&out, "\n");
	if (out.oom)
		logmsg("out of memory building a response");
	else if (!conn_flush_blocking(c) || send_response(c->fd, out.data, out.len) < 0)
		logmsg("host went away before the response was sent; dropped");
	buf_free(&out);
}
