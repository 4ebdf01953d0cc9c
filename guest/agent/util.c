/* Small helpers of the agent: logging, clocks, full writes, a growable buffer. */
#include "agent.h"

#include <stdarg.h>

/* Logs one line to stderr, which /init points at the serial console. */
void logmsg(const char *fmt, ...)
{
	va_list ap;

	fputs("vmsnap-agent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int64_t now_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Writes all of buf to a blocking fd. Returns 0 or a negative errno. */
int write_all(int fd, const void *buf, size_t n)
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


bool buf_reserve(struct buf *b, size_t extra)
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

void buf_put(struct buf *b, const void *p, size_t n)
{
	if (n == 0 || !buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void buf_puts(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
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

void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){ 0 };
}
