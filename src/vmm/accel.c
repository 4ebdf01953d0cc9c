/* QEMU accelerator choice and host TSC frequency (see accel.h). */
#include "vmm/accel.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#endif

/* Serializes choosing (a probe takes seconds: concurrent boots wait for its verdict). */
static pthread_mutex_t choose_lock = PTHREAD_MUTEX_INITIALIZER;
static int memo = VMM_ACCEL_UNKNOWN; /* the verdict of this process; atomic accesses */

static enum vmm_accel memo_get(void)
{
        return (enum vmm_accel)__atomic_load_n(&memo, __ATOMIC_ACQUIRE);
}

static void memo_set(enum vmm_accel a)
{
        __atomic_store_n(&memo, (int)a, __ATOMIC_RELEASE);
}

const char *vmm_accel_name(enum vmm_accel a)
{
        return a == VMM_ACCEL_KVM ? "kvm" : a == VMM_ACCEL_TCG ? "tcg" : "unknown";
}

enum vmm_accel vmm_accel_parse(const char *s)
{
        if (s && strcmp(s, "kvm") == 0)
                return VMM_ACCEL_KVM;
        if (s && strcmp(s, "tcg") == 0)
                return VMM_ACCEL_TCG;
        return VMM_ACCEL_UNKNOWN;
}

int vmm_accel_forced(enum vmm_accel *ret, struct vmsnap_diag *d)
{
        const char *s = getenv(VMM_ACCEL_ENV);
        *ret = VMM_ACCEL_UNKNOWN;
        if (!s || !*s || strcmp(s, "auto") == 0)
                return 0;
        *ret = vmm_accel_parse(s);
        if (*ret == VMM_ACCEL_UNKNOWN)
                return vmsnap_diag(d, -EINVAL, "%s=%s: expected kvm, tcg or auto", VMM_ACCEL_ENV,
                                   s);
        return 0;
}

static pthread_once_t kvm_once = PTHREAD_ONCE_INIT;
static bool kvm_opens;

static void check_kvm(void)
{
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        kvm_opens = fd >= 0;
        if (fd >= 0)
                close(fd);
}

bool vmm_accel_kvm_opens(void)
{
        pthread_once(&kvm_once, check_kvm);
        return kvm_opens;
}

static int probe_timeout_ms(void)
{
        const char *s = getenv(VMM_ACCEL_PROBE_ENV);
        long v = s && *s ? strtol(s, NULL, 10) : 0;
        return v > 0 && v <= 600000 ? (int)v : VMM_ACCEL_PROBE_MS;
}

/* The verdict remembered in dir/.accel-probe for this QEMU version, or UNKNOWN. */
static enum vmm_accel read_verdict(const char *dir, const char *qemu_version)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        if (dfd < 0 || vmsnap_fs_read_file(dfd, VMM_ACCEL_VERDICT, 65536, &buf, &len) < 0)
                return VMM_ACCEL_UNKNOWN;
        json_t *o = json_loadb((const char *)buf, len, 0, NULL);
        const char *qemu = json_string_value(json_object_get(o, "qemu"));
        enum vmm_accel a = vmm_accel_parse(json_string_value(json_object_get(o, "accel")));
        if (!qemu || !qemu_version || strcmp(qemu, qemu_version) != 0)
                a = VMM_ACCEL_UNKNOWN;
        json_decref(o);
        return a;
}

/* Remembers a verdict for the next processes; failing to is harmless (they probe again). */
static void write_verdict(const char *dir, const char *qemu_version, enum vmm_accel a,
                          const char *reason)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "accel", vmm_accel_name(a), "qemu",
                              qemu_version ? qemu_version : "", "reason", reason, "time",
                              (json_int_t)time(NULL));
        _cleanup_free_ char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        json_decref(o);
        if (dfd >= 0 && text)
                vmsnap_fs_atomic_write(dfd, VMM_ACCEL_VERDICT, text, strlen(text), NULL);
}

/* Under choose_lock: the remembered verdict, else a probe (when allowed) written down. */
static enum vmm_accel choose_locked(const struct vmm_accel_choice *c)
{
        enum vmm_accel a = memo_get();
        if (a == VMM_ACCEL_UNKNOWN && c->verdict_dir)
                a = read_verdict(c->verdict_dir, c->qemu_version);
        if (a != VMM_ACCEL_UNKNOWN || !c->probe) {
                memo_set(a);
                return a;
        }
        struct vmsnap_diag pd = {0};
        int r = c->probe(c->probe_ctx, probe_timeout_ms(), &pd);
        if (r < 0 && r != -ENODEV)
                return VMM_ACCEL_TCG; /* inconclusive: TCG this time, probe again next time */
        a = r == 0 ? VMM_ACCEL_KVM : VMM_ACCEL_TCG;
        if (c->verdict_dir)
                write_verdict(c->verdict_dir, c->qemu_version, a,
                              r == 0 ? "a KVM guest answered" : pd.msg);
        memo_set(a);
        return a;
}

int vmm_accel_choose(const struct vmm_accel_choice *c, enum vmm_accel *ret, struct vmsnap_diag *d)
{
        enum vmm_accel forced;
        int r = vmm_accel_forced(&forced, d);
        if (r < 0)
                return r;
        if (forced != VMM_ACCEL_UNKNOWN || !vmm_accel_kvm_opens()) {
                *ret = forced != VMM_ACCEL_UNKNOWN ? forced : VMM_ACCEL_TCG;
                return 0;
        }
        pthread_mutex_lock(&choose_lock);
        *ret = choose_locked(c);
        pthread_mutex_unlock(&choose_lock);
        return 0;
}

enum vmm_accel vmm_accel_known(void)
{
        enum vmm_accel forced;
        if (vmm_accel_forced(&forced, NULL) < 0)
                return VMM_ACCEL_UNKNOWN;
        if (forced != VMM_ACCEL_UNKNOWN)
                return forced;
        if (!vmm_accel_kvm_opens())
                return VMM_ACCEL_TCG;
        return memo_get();
}

#ifdef HAVE_TSC
static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One sample: TSC ticks per millisecond over a ~50 ms busy-wait. */
static uint64_t sample_khz(void)
{
        uint64_t t0 = now_ns(), c0 = __rdtsc(), t1;
        do
                t1 = now_ns();
        while (t1 - t0 < 50000000u);
        uint64_t c1 = __rdtsc();
        return ((c1 - c0) * 1000000u + (t1 - t0) / 2) / (t1 - t0);
}

static pthread_once_t tsc_once = PTHREAD_ONCE_INIT;
static uint64_t tsc_khz;

/* The median of three samples, so that one preempted sample cannot skew the result. */
static void measure_khz(void)
{
        uint64_t s[3];
        for (int i = 0; i < 3; i++)
                s[i] = sample_khz();
        uint64_t lo = MIN(s[0], s[1]), hi = MAX(s[0], s[1]);
        tsc_khz = s[2] < lo ? lo : s[2] > hi ? hi : s[2];
}
#endif

int vmm_accel_tsc_khz(uint64_t *ret, struct vmsnap_diag *d)
{
#ifdef HAVE_TSC
        pthread_once(&tsc_once, measure_khz);
        if (tsc_khz == 0)
                return vmsnap_diag(d, -EIO, "the host TSC does not advance");
        *ret = tsc_khz;
        return 0;
#else
        (void)ret;
        return vmsnap_diag(d, -EOPNOTSUPP,
                           "TCG microvm guests need the host TSC frequency "
                           "(tsc_early_khz), which this architecture cannot measure");
#endif
}
