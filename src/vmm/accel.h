/* QEMU accelerator choice (KVM or TCG) and the host TSC frequency TCG guests need.
 *
 * /dev/kvm opening is not proof that KVM guests run (on nested hosts a KVM guest can hang
 * in the kernel decompressor while QEMU spins), so "auto" boots a probe guest under KVM once
 * per host and remembers the verdict in a file. docs/vmm.md "QEMU" has the rules. */
#ifndef VMSNAP_VMM_ACCEL_H
#define VMSNAP_VMM_ACCEL_H

#include <stdbool.h>
#include <stdint.h>

#include <vmsnap/error.h>

enum vmm_accel {
        VMM_ACCEL_UNKNOWN,
        VMM_ACCEL_TCG,
        VMM_ACCEL_KVM,
};

#define VMM_ACCEL_ENV       "VMSNAP_ACCEL" /* kvm | tcg | auto (default) */
#define VMM_KVM_DEVICE_ENV  "VMSNAP_KVM_DEVICE" /* the device opened for "does KVM open" */
#define VMM_KVM_DEVICE      "/dev/kvm"
#define VMM_ACCEL_REASON    256
#define VMM_ACCEL_PROBE_ENV "VMSNAP_KVM_PROBE_MS"
#define VMM_ACCEL_PROBE_MS  10000          /* a working KVM guest answers in ~1 s */
#define VMM_ACCEL_VERDICT   ".accel-probe" /* in the parent of the run directories */

/* "kvm", "tcg" or "unknown". */
const char *vmm_accel_name(enum vmm_accel a);

/* An accelerator and why it was chosen, in words for people (logs, /healthz, inspect). */
struct vmm_accel_status {
        enum vmm_accel accel;
        char reason[VMM_ACCEL_REASON];
};

/* Parses "kvm" or "tcg"; anything else is VMM_ACCEL_UNKNOWN. */
enum vmm_accel vmm_accel_parse(const char *s);

/* Reads $VMSNAP_ACCEL. Returns 0 and *ret (UNKNOWN for "auto" or unset), or -EINVAL (with
 * d) for any other value. */
int vmm_accel_forced(enum vmm_accel *ret, struct vmsnap_diag *d);

/* True when $VMSNAP_KVM_DEVICE (default /dev/kvm) opens read-write (checked once per
 * process); else false, with why in `why` (when not NULL). */
bool vmm_accel_kvm_opens(const char **why);

/* Boots a probe guest under KVM. Returns 0 when it showed a sign of life within timeout_ms,
 * -ENODEV when KVM does not work (the guest hung, or QEMU refused KVM), or another -errno
 * when the probe says nothing about KVM (e.g. the kernel does not load): TCG is used then
 * but not remembered. d says what happened. */
typedef int (*vmm_accel_probe_fn)(void *ctx, int timeout_ms, struct vmsnap_diag *d);

struct vmm_accel_choice {
        const char *verdict_dir;  /* where the verdict file lives (the run dirs' parent) */
        const char *qemu_version; /* "7.2.22": a verdict of another QEMU, kernel release or
                                     boot is probed again */
        vmm_accel_probe_fn probe; /* NULL: never probe (attach), use what is known */
        void *probe_ctx;
};

/* The accelerator of this host: $VMSNAP_ACCEL when set; else TCG when /dev/kvm does not
 * open; else the verdict remembered in this process or in verdict_dir/.accel-probe (same
 * kernel release, QEMU version and boot id); else the result of c->probe, written to that
 * file (0600, atomically) when conclusive. Concurrent callers in one process wait for one
 * probe. Returns 0 and *ret with its reason (UNKNOWN only when c->probe is NULL and nothing
 * is known), or -errno. */
int vmm_accel_choose(const struct vmm_accel_choice *c, struct vmm_accel_status *ret,
                     struct vmsnap_diag *d);

/* What vmm_accel_choose would say without probing (forced, no KVM device, this process's
 * verdict, or verdict_dir's for this kernel, qemu_version and boot); else UNKNOWN with a
 * reason saying that the first boot probes. */
void vmm_accel_host_status(const char *verdict_dir, const char *qemu_version,
                           struct vmm_accel_status *ret);

/* What this process knows without probing: forced, no /dev/kvm, or a verdict chosen or read
 * earlier. VMM_ACCEL_UNKNOWN otherwise. */
enum vmm_accel vmm_accel_known(void);

/* The host TSC frequency in kHz, measured once per process (RDTSC against
 * CLOCK_MONOTONIC_RAW, median of three 50 ms samples, as guest/tools/tsc-khz.c). Returns 0
 * and *ret, or -EOPNOTSUPP on hosts without a TSC. */
int vmm_accel_tsc_khz(uint64_t *ret, struct vmsnap_diag *d);

#endif
