/* QEMU accelerator choice and host TSC frequency (see accel.h). */
#include "vmm/accel.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#endif

/* Serializes choosing (a probe takes seconds: concurrent boots wait for its verdict). */
static pthread_mutex_t choose_lock = PTHREAD_MUTEX_INITIALIZER;
/* The verdict of this process and its reason. */
static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vmm_accel_status memo;

static void memo_get(struct vmm_accel_status *ret)
{
        pthread_mutex_lock(&memo_lock);
        *ret = memo;
        pthread_mutex_unlock(&memo_lock);
}

static void memo_set(const struct vmm_accel_status *s)
{
        pthread_mutex_lock(&memo_lock);
        memo = *s;
        pthread_mutex_unlock(&memo_lock);
}

static void status_set(struct vmm_accel_status *s, enum vmm_accel a, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void status_set(struct vmm_accel_status *s, enum vmm_accel a, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        s->accel = a;
        vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
        va_end(ap);
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
static char kvm_why[VMM_ACCEL_REASON];

static const char *kvm_device(void)
{
        const char *dev = getenv(VMM_KVM_DEVICE_ENV);
        return dev && *dev ? dev : VMM_KVM_DEVICE;
}

static void check_kvm(void)
{
        const char *dev = kvm_device();
        int fd = open(dev, O_RDWR | O_CLOEXEC);
        kvm_opens = fd >= 0;
        if (fd >= 0)
                close(fd);
        else
                snprintf(kvm_why, sizeof(kvm_why), "%s does not open: %s", dev, strerror(errno));
}

bool vmm_accel_kvm_opens(const char **why)
{
        pthread_once(&kvm_once, check_kvm);
        if (why)
                *why = kvm_why;
        return kvm_opens;
}

static int probe_timeout_ms(void)
{
        const char *s = getenv(VMM_ACCEL_PROBE_ENV);
        long v = s && *s ? strtol(s, NULL, 10) : 0;
        return v > 0 && v <= 600000 ? (int)v : VMM_ACCEL_PROBE_MS;
}

/* What a verdict holds for: this kernel release, QEMU version and boot (a reboot, a kernel
 * or QEMU upgrade can fix or break KVM). */
struct verdict_key {
        char kernel[65], qemu[32], boot_id[40];
};

static void key_init(struct verdict_key *k, const char *qemu_version)
{
        struct utsname u;
        memset(k, 0, sizeof(*k));
        if (uname(&u) == 0)
                snprintf(k->kernel, sizeof(k->kernel), "%s", u.release);
        snprintf(k->qemu, sizeof(k->qemu), "%s", qemu_version ? qemu_version : "");
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        if (f) {
                if (!fgets(k->boot_id, sizeof(k->boot_id), f))
                        k->boot_id[0] = '\0';
                fclose(f);
        }
        k->boot_id[strcspn(k->boot_id, "\n")] = '\0';
}

static bool key_matches(json_t *o, const char *field, const char *want)
{
        const char *v = json_string_value(json_object_get(o, field));
        return v && *want && strcmp(v, want) == 0;
}

/* The verdict remembered in dir/.accel-probe for this key, or UNKNOWN. */
static void read_verdict(const char *dir, const struct verdict_key *k,
                         struct vmm_accel_status *ret)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        ret->accel = VMM_ACCEL_UNKNOWN;
        if (dfd < 0 || vmsnap_fs_read_file(dfd, VMM_ACCEL_VERDICT, 65536, &buf, &len) < 0)
                return;
        json_t *o = json_loadb((const char *)buf, len, 0, NULL);
        enum vmm_accel a = vmm_accel_parse(json_string_value(json_object_get(o, "accel")));
        const char *reason = json_string_value(json_object_get(o, "reason"));
        if (a != VMM_ACCEL_UNKNOWN && key_matches(o, "qemu", k->qemu) &&
            key_matches(o, "kernel", k->kernel) && key_matches(o, "boot_id", k->boot_id))
                status_set(ret, a, "%.200s (remembered in %s)", reason ? reason : "KVM probe",
                           VMM_ACCEL_VERDICT);
        json_decref(o);
}

/* Remembers a verdict for the next processes; failing to is harmless (they probe again). */
static void write_verdict(const char *dir, const struct verdict_key *k,
                          const struct vmm_accel_status *s)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "accel", vmm_accel_name(s->accel),
                              "qemu", k->qemu, "kernel", k->kernel, "boot_id", k->boot_id,
                              "reason", s->reason, "time", (json_int_t)time(NULL));
        _cleanup_free_ char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        json_decref(o);
        if (dfd >= 0 && text)
                vmsnap_fs_atomic_write(dfd, VMM_ACCEL_VERDICT, text, strlen(text), NULL);
}

/* Under choose_lock: the remembered verdict, else a probe (when allowed) written down. */
static void choose_locked(const struct vmm_accel_choice *c, struct vmm_accel_status *ret)
{
        struct verdict_key k;
        key_init(&k, c->qemu_version);
        memo_get(ret);
        if (ret->accel == VMM_ACCEL_UNKNOWN && c->verdict_dir)
                read_verdict(c->verdict_dir, &k, ret);
        if (ret->accel != VMM_ACCEL_UNKNOWN || !c->probe) {
                if (ret->accel != VMM_ACCEL_UNKNOWN)
                        memo_set(ret);
                return;
        }
        struct vmsnap_diag pd = {0};
        int r = c->probe(c->probe_ctx, probe_timeout_ms(), &pd);
        if (r < 0 && r != -ENODEV) { /* inconclusive: TCG this time, probe again next time */
                status_set(ret, VMM_ACCEL_TCG, "KVM probe inconclusive, TCG for this boot: %.200s",
                           pd.msg);
                return;
        }
        if (r == 0)
                status_set(ret, VMM_ACCEL_KVM, "KVM probe: a guest booted under KVM answered");
        else if (strncmp(pd.msg, "KVM probe", 9) == 0)
                status_set(ret, VMM_ACCEL_TCG, "%.240s", pd.msg);
        else
                status_set(ret, VMM_ACCEL_TCG, "KVM probe: QEMU failed under KVM: %.200s", pd.msg);
        if (c->verdict_dir)
                write_verdict(c->verdict_dir, &k, ret);
        memo_set(ret);
}

/* What needs no probe and no file: forced, or no KVM device. False when neither. */
static bool accel_given(struct vmm_accel_status *ret, struct vmsnap_diag *d, int *r)
{
        enum vmm_accel forced;
        const char *why;
        *r = vmm_accel_forced(&forced, d);
        if (*r < 0)
                return true;
        if (forced != VMM_ACCEL_UNKNOWN)
                status_set(ret, forced, "%s=%s forces it", VMM_ACCEL_ENV, vmm_accel_name(forced));
        else if (!vmm_accel_kvm_opens(&why))
                status_set(ret, VMM_ACCEL_TCG, "%s", why);
        else
                return false;
        return true;
}

int vmm_accel_choose(const struct vmm_accel_choice *c, struct vmm_accel_status *ret,
                     struct vmsnap_diag *d)
{
        int r;
        if (accel_given(ret, d, &r))
                return r;
        pthread_mutex_lock(&choose_lock);
        choose_locked(c, ret);
        pthread_mutex_unlock(&choose_lock);
        return 0;
}

void vmm_accel_host_status(const char *verdict_dir, const char *qemu_version,
                           struct vmm_accel_status *ret)
{
        struct vmsnap_diag d = {0};
        int r;
        if (accel_given(ret, &d, &r)) {
                if (r < 0)
                        status_set(ret, VMM_ACCEL_UNKNOWN, "%s", d.msg);
                return;
        }
        memo_get(ret);
        if (ret->accel == VMM_ACCEL_UNKNOWN && verdict_dir) {
                struct verdict_key k;
                key_init(&k, qemu_version);
                read_verdict(verdict_dir, &k, ret);
        }
        if (ret->accel == VMM_ACCEL_UNKNOWN)
                status_set(ret, VMM_ACCEL_UNKNOWN,
                           "%s opens; the first boot probes whether KVM guests run (up to %d ms) "
                           "and remembers the verdict in %s",
                           kvm_device(), probe_timeout_ms(), VMM_ACCEL_VERDICT);
}

enum vmm_accel vmm_accel_known(void)
{
        struct vmm_accel_status s;
        int r;
        if (accel_given(&s, NULL, &r))
                return r < 0 ? VMM_ACCEL_UNKNOWN : s.accel;
        memo_get(&s);
        return s.accel;
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
