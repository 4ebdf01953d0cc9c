/*
 * tsc-khz: prints the host's TSC frequency in kHz (one line, an integer).
 *
 * Why a host tool lives in guest/: under TCG the guest's RDTSC returns the host's
 * TSC, and the microvm machine has none of the references Linux calibrates the TSC
 * against (no port 0x61 to gate PIT channel 2, no HPET, no ACPI PM timer). The guest
 * kernel then marks the TSC unstable and hangs during boot, unless it is told the
 * frequency on its command line: tsc_early_khz=<this value>. KVM guests get it from
 * kvmclock and need none of this. See docs/guest.md.
 *
 * Method: count TSC ticks against CLOCK_MONOTONIC_RAW over ~50 ms, three times,
 * and print the median, so that one preempted sample cannot skew the result.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One sample: TSC ticks per millisecond over a ~50 ms busy-wait. */
static uint64_t sample_khz(void)
{
	uint64_t t0 = now_ns(), c0 = __rdtsc(), t1, c1;

	do
		t1 = now_ns();
	while (t1 - t0 < 50000000u);
	c1 = __rdtsc();
	return ((c1 - c0) * 1000000u + (t1 - t0) / 2) / (t1 - t0);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

int main(void)
{
	uint64_t s[3];

	for (int i = 0; i < 3; i++)
		s[i] = sample_khz();
	qsort(s, 3, sizeof(s[0]), cmp_u64);
	printf("%llu\n", (unsigned long long)s[1]);
	return 0;
}
