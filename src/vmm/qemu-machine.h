/* The QEMU machine of a VM: what must be identical between a boot and every restore of its
 * state (accelerator, CPU, memory size, kernel command line, devices), its record in
 * vmm.json, and the qemu-system-x86_64 command line made from it. docs/vmm.md "QEMU". */
#ifndef VMSNAP_VMM_QEMU_MACHINE_H
#define VMSNAP_VMM_QEMU_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <vmsnap/error.h>
#include <vmsnap/jail.h>
#include <vmsnap/vmm.h>

#include "vmm/accel.h"

/* Files of a run directory (R) and of a snapshot directory (S). */
#define QEMU_QMP_SOCK   "qmp.sock"          /* R: the QMP monitor */
#define QEMU_AGENT_SOCK "agent.sock"        /* R: the guest agent's virtio-serial port */
#define QEMU_LOG        "vmm.log"           /* R: QEMU's stdout and stderr */
#define QEMU_PIDFILE    "vmm.pid"           /* R: written by QEMU (-pidfile) */
#define QEMU_CONSOLE    "console.log"       /* R: the guest's serial console */
#define QEMU_CONFIG     "vmm.json"          /* R, S: the machine (R: plus this run's files) */
#define QEMU_KERNEL     "vmlinuz"           /* R, S: hard links to the kernel it booted */
#define QEMU_INITRD     "initramfs.cpio.gz" /* R, S: ... and to its initramfs */
#define QEMU_SNAPFILE   "snapfile"          /* S: the migration stream (device state) */

#define QEMU_BINARY    "qemu-system-x86_64" /* looked up in $PATH */
#define QEMU_LAYOUT    1                    /* version of the command line qemu_argv_build makes */
#define QEMU_MAX_VCPUS 255u
#define QEMU_TB_SIZE_MIB 64u /* TCG translation cache (-accel tcg,tb-size=): bounds QEMU's RSS */
#define QEMU_SANDBOX   "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

struct qemu_machine {
        int layout;
        char qemu_version[32]; /* "7.2.22": of the QEMU that booted it */
        enum vmm_accel accel;
        char accel_reason[VMM_ACCEL_REASON]; /* why accel (shown, never acted on) */
        char machine[128]; /* -machine */
        char cpu[16];      /* -cpu: "max" under TCG, "host" under KVM */
        uint32_t vcpus;
        uint64_t memory;   /* bytes */
        char append[2048]; /* the kernel command line, tsc_early_khz included */
        uint64_t tsc_khz;  /* 0 under KVM */
        bool initrd;
        bool disk;
        char disk_format[16]; /* "qcow2" or "raw" */
        bool net;             /* a virtio-net NIC on tap0 (vmm.json "net"; absent: false) */
};

/* The machine of a new boot of spec under accel with QEMU `version`. Measures the host TSC
 * (TCG). Returns 0 or -errno (with d). */
int qemu_machine_init(const struct vmsnap_vm_spec *spec, const struct vmm_accel_status *accel,
                      const char *version, struct qemu_machine *ret, struct vmsnap_diag *d);

/* The machine as a JSON object (new reference, NULL when out of memory). */
json_t *qemu_machine_to_json(const struct qemu_machine *m);

/* Reads and validates a machine from o; `where` names it in messages. Returns 0, -EBADMSG,
 * or -EPROTONOSUPPORT for a layout this build cannot rebuild (with d). */
int qemu_machine_from_json(json_t *o, const char *where, struct qemu_machine *ret,
                           struct vmsnap_diag *d);

/* Reads dir/vmm.json as a JSON object (caller decrefs). Returns 0 or -errno (with d). */
int qemu_machine_read_file(const char *dir, json_t **ret, struct vmsnap_diag *d);

/* Writes o (stolen) to dirfd/vmm.json atomically; `where` names dirfd in messages. */
int qemu_machine_write_file(int dirfd, const char *where, json_t *o, struct vmsnap_diag *d);

/* How one QEMU process is started (boot, restore, KVM probe). */
struct qemu_launch {
        const struct qemu_machine *machine;
        const char *binary;  /* NULL: qemu-system-x86_64 from $PATH */
        const char *run_dir; /* sockets, logs, pid file */
        const char *kernel;
        const char *initrd; /* used when machine->initrd */
        const char *memory_file;
        bool share;         /* memory-backend-file share=on (else off: MAP_PRIVATE) */
        const char *rootfs; /* used when machine->disk */
        const char *rootfs_base; /* the qcow2 overlay's backing node (raw, read-only) */
        bool incoming;      /* -incoming defer */
        const char *name;   /* -name vmsnap-<name>: what attach recognises the process by */
        const struct vmsnap_jail_spec *jail; /* NULL: unjailed; else the sandbox's template */
};

/* The command line of l as a NULL-terminated, malloc'd argv (free with qemu_argv_free).
 * A restore gets exactly its boot's command line apart from the files, share= and
 * -incoming: everything else comes from l->machine. Returns 0 or -ENOMEM. */
int qemu_argv_build(const struct qemu_launch *l, char ***ret);

void qemu_argv_free(char **argv);

/* s as a QEMU option value: commas doubled (malloc'd, NULL when out of memory). */
char *qemu_opt_escape(const char *s);

#endif
