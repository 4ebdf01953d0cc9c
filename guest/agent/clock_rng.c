/* restore_hook: the restored guest's wall clock and kernel RNG (docs/guest.md §2.1, §5); its
 * neighbours (net_refresh.c). */
#include "agent.h"

#include <linux/random.h>
#include <sys/ioctl.h>

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

int op_restore_hook(const struct request *rq, struct reply *r)
{
	size_t n = 0;
	int ret;

	if (host_mode) { /* the clock, RNG and eth0 here are the host's: left alone */
		put_field_bool(r, "clock_set", false);
		put_field_u64(r, "seed_bytes", 0);
		put_field_bool(r, "host_mode", true);
		return 0;
	}
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
	net_refresh(r);
	put_field_bool(r, "clock_set", rq->has_time);
	put_field_u64(r, "seed_bytes", n);
	return 0;
}

