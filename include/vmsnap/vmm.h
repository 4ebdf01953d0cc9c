/* libvmsnap VMM drivers: one small interface, three drivers (QEMU, Firecracker, Cloud
 * Hypervisor). The sandbox layer drives a VM only through this table. docs/vmm.md has each
 * driver's command lines, API calls and file names. */
#ifndef VMSNAP_VMM_H
#define VMSNAP_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmsnap/error.h>
#include <vmsnap/jail.h>
#include <vmsnap/mem.h>

/* What to boot. Every path is absolute. */
struct vmsnap_vm_spec {
        const char *id;          /* sandbox id: names processes and logs */
        const char *run_dir;     /* exists; the driver keeps sockets, logs and pid files here */
        const char *vmm_binary;  /* NULL: the driver's default (qemu-system-x86_64, ...) */
        const char *kernel;
        const char *initrd;      /* NULL: none */
        const char *cmdline;     /* NULL: the driver's default console/panic arguments */
        const char *rootfs;      /* the guest's /dev/vda (a CoW overlay), NULL: none */
        const char *rootfs_format; /* "qcow2" or "raw" */
        const char *rootfs_base; /* a qcow2 overlay's backing image (raw, opened read-only),
                                    chosen by the caller: the backing file name in the
                                    overlay's header is never opened. Required for qcow2 */
        uint32_t vcpus;
        uint64_t memory;         /* bytes, a multiple of 2 MiB */
        const char *memory_file; /* guest RAM backing file where the VMM supports one (QEMU:
                                    memory-backend-file share=on), created when missing */
        const struct vmsnap_jail_spec *jail; /* NULL: the VMM runs unjailed. Else the
                                    sandbox's jail (config, name, root dir, uid, limits): the
                                    driver adds the files and devices its VMM needs and runs
                                    it through vmsnap-jailer (docs/vmm.md "Jails") */
        bool net;                /* a virtio-net NIC on the TAP VMSNAP_NET_TAP_NAME with the
                                    guest MAC VMSNAP_NET_GUEST_MAC (include/vmsnap/net.h), the
                                    same in every sandbox: needs jail->netns_path, the
                                    sandbox's namespace holding that TAP (docs/network.md). A
                                    restore's spec must ask for the NIC its snapshot has */
};

/* Where a restored VM's memory comes from. */
enum vmsnap_vm_memory_mode {
        VMSNAP_VM_MEMORY_FILE_SHARED,  /* map the file shared: guest writes land in it (the file
                                          must be this sandbox's own copy) */
        VMSNAP_VM_MEMORY_FILE_PRIVATE, /* map the file private (CoW): template clones share its
                                          pages */
        VMSNAP_VM_MEMORY_UFFD,         /* lazy: the page server listening on `memory_path` */
};

struct vmsnap_vm_restore {
        const char *state_dir;   /* the directory save() wrote the device state into */
        enum vmsnap_vm_memory_mode memory_mode;
        const char *memory_path; /* memory file, or the page server's socket for UFFD */
};

/* What save() produced for the memory layer. */
struct vmsnap_vm_saved {
        char memory_file[4096];         /* the memory file to process/diff */
        enum vmsnap_mem_source source;  /* how to read it (full file or sparse dirty file) */
        bool memory_file_temporary;     /* written by save() only for this: remove after use */
        char version[64];               /* the VMM version that wrote the state */
};

struct vmsnap_vm; /* a VMM process the driver started or attached to (opaque) */

struct vmsnap_vmm_driver {
        const char *name; /* "qemu", "firecracker", "cloud-hypervisor" */
        const char *disk_format; /* the sandbox disk it takes: "qcow2" overlay or "raw" copy */
        bool lazy_uffd;          /* restore can take VMSNAP_VM_MEMORY_UFFD (the page server) */
        bool private_save;       /* a VM restored VMSNAP_VM_MEMORY_FILE_PRIVATE can be saved
                                    (its RAM into the spec's memory_file, temporary) */

        /* Finds the VMM binary and reads its version into ret_version. Returns 0, -ENOENT
         * when it is not installed (d says what to install), or -errno. */
        int (*probe)(const char *binary, char *ret_version, size_t size, struct vmsnap_diag *d);

        /* True when state written by `saved_version` loads on `running_version`. */
        bool (*compatible)(const char *saved_version, const char *running_version);

        /* Starts a VM in its own process group and waits until it runs. */
        int (*boot)(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret,
                    struct vmsnap_diag *d);

        /* Starts a VMM process from saved state; the VM is left paused (call resume). */
        int (*restore)(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                       struct vmsnap_vm **ret, struct vmsnap_diag *d);

        /* Re-attaches to a VMM process started earlier (a daemon restart): checks the pid
         * still runs this sandbox's VMM and reconnects to its control socket. */
        int (*attach)(const struct vmsnap_vm_spec *spec, pid_t pid, struct vmsnap_vm **ret,
                      struct vmsnap_diag *d);

        /* Stops the vCPUs (idempotent). */
        int (*pause)(struct vmsnap_vm *vm, struct vmsnap_diag *d);

        /* Runs the vCPUs again (idempotent). */
        int (*resume)(struct vmsnap_vm *vm, struct vmsnap_diag *d);

        /* Writes the device state of a paused VM into state_dir and says which memory file
         * holds guest RAM. Timeouts scale with the memory size. */
        int (*save)(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_vm_saved *ret,
                    struct vmsnap_diag *d);

        /* Connects to the guest agent's channel; returns 0 and a connected fd (newline-
         * delimited JSON, docs/guest.md), or -errno. */
        int (*agent_connect)(struct vmsnap_vm *vm, int timeout_ms, int *ret_fd,
                             struct vmsnap_diag *d);

        /* Kills the VMM's process group, reaps it and releases the handle; accepts NULL. */
        void (*destroy)(struct vmsnap_vm *vm);

        /* Releases the handle but leaves the VMM running (daemon shutdown); accepts NULL. */
        void (*detach)(struct vmsnap_vm *vm);

        /* The VMM's pid. */
        pid_t (*pid)(const struct vmsnap_vm *vm);

        /* Optional (NULL: the driver cannot tell). The accelerator the VM runs under
         * ("kvm" or "tcg") and why, for people; truncated to the sizes given. */
        void (*accel)(const struct vmsnap_vm *vm, char *name, size_t name_size, char *reason,
                      size_t reason_size);

        /* Optional (NULL: the driver cannot tell). Whether the VM saved in state_dir has a
         * network card: 1 it has, 0 it has none, or -errno (d says why). */
        int (*saved_net)(const char *state_dir, struct vmsnap_diag *d);

        /* Optional. The accelerator a new VM would get on this host, as far as known without
         * booting anything ("kvm", "tcg" or "unknown"), and why; run_parent is the parent of
         * the run directories (where a verdict may be remembered). */
        void (*host_accel)(const char *binary, const char *run_parent, char *name,
                           size_t name_size, char *reason, size_t reason_size);
};

/* The driver called name, or NULL. */
const struct vmsnap_vmm_driver *vmsnap_vmm_find(const char *name);

/* The compiled-in drivers, NULL-terminated. */
extern const struct vmsnap_vmm_driver *const vmsnap_vmm_drivers[];

#endif
