/* The simple calls: health, sync, random, and the protocol-1 file ops (whole files in base64). */
#include "agent.h"

#include <sys/random.h>

/* ----------------------------------------------------------------- simple ops */

int op_health(const struct request *rq, struct reply *r)
{
	(void)rq;
	put_field_u64(r, "uptime_ms", (uint64_t)now_ms(CLOCK_BOOTTIME));
	return 0;
}

int op_hello(const struct request *rq, struct reply *r)
{
	(void)rq;
	put_field_u64(r, "protocol", AGENT_PROTOCOL);
	put_field_u64(r, "frame_max", FRAME_MAX);
	put_field_u64(r, "window", STREAM_WINDOW);
	return 0;
}

int op_sync(const struct request *rq, struct reply *r)
{
	(void)rq;
	(void)r;
	sync();
	return 0;
}

int op_random(const struct request *rq, struct reply *r)
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

int op_write_file(const struct request *rq, struct reply *r)
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

int op_read_file(const struct request *rq, struct reply *r)
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
