/* The QEMU machine: its record (vmm.json) and its command line (see qemu-machine.h). */
#include "vmm/qemu-machine.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/net.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QEMU_MACHINE    "microvm,x-option-roms=off,pit=off,pic=off,rtc=on"
#define QEMU_CMDLINE    "console=ttyS0 panic=-1 quiet"
#define QEMU_AGENT_PORT "org.vmsnap.agent" /* the guest agent looks for this name */
#define QEMU_MAX_MEMORY (16ull << 40)

/* ---- the machine ----------------------------------------------------------------------------- */

/* The kernel command line: spec's (or the default) plus, under TCG, the TSC frequency.
 * microvm gives the kernel nothing to calibrate the TSC against (docs/guest.md §3.2): without
 * tsc_early_khz a TCG guest hangs at boot. KVM guests have kvmclock. */
static int make_append(const struct vmsnap_vm_spec *spec, struct qemu_machine *m,
                       struct vmsnap_diag *d)
{
        const char *base = spec->cmdline ? spec->cmdline : QEMU_CMDLINE;
        int n = snprintf(m->append, sizeof(m->append), "%s", base);
        if (m->accel == VMM_ACCEL_TCG && !strstr(base, "tsc_early_khz=")) {
                int r = vmm_accel_tsc_khz(&m->tsc_khz, d);
                if (r < 0)
                        return r;
                n = snprintf(m->append, sizeof(m->append), "%s tsc_early_khz=%llu", base,
                             (unsigned long long)m->tsc_khz);
        }
        if (n < 0 || (size_t)n >= sizeof(m->append))
                return vmsnap_diag(d, -E2BIG, "kernel command line longer than %zu bytes",
                                   sizeof(m->append) - 1);
        return 0;
}

int qemu_machine_init(const struct vmsnap_vm_spec *spec, const struct vmm_accel_status *accel,
                      const char *version, struct qemu_machine *ret, struct vmsnap_diag *d)
{
        struct qemu_machine m = {.layout = QEMU_LAYOUT, .accel = accel->accel};
        snprintf(m.accel_reason, sizeof(m.accel_reason), "%s", accel->reason);
        snprintf(m.qemu_version, sizeof(m.qemu_version), "%s", version);
        snprintf(m.machine, sizeof(m.machine), "%s", QEMU_MACHINE);
        snprintf(m.cpu, sizeof(m.cpu), "%s", m.accel == VMM_ACCEL_KVM ? "host" : "max");
        m.vcpus = spec->vcpus;
        m.memory = spec->memory;
        m.initrd = spec->initrd != NULL;
        m.disk = spec->rootfs != NULL;
        snprintf(m.disk_format, sizeof(m.disk_format), "%s",
                 spec->rootfs_format ? spec->rootfs_format : "raw");
        m.net = spec->net;
        int r = make_append(spec, &m, d);
        if (r == 0)
                *ret = m;
        return r;
}

json_t *qemu_machine_to_json(const struct qemu_machine *m)
{
        return json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:b, s:b, s:s, s:s, "
                         "s:s, s:b}",
                         "layout", m->layout, "qemu", m->qemu_version, "accel",
                         vmm_accel_name(m->accel), "accel_reason", m->accel_reason, "machine",
                         m->machine, "cpu", m->cpu, "vcpus",
                         (json_int_t)m->vcpus, "memory", (json_int_t)m->memory, "append", m->append,
                         "tsc_khz", (json_int_t)m->tsc_khz, "initrd", m->initrd, "disk", m->disk,
                         "disk_format", m->disk_format, "kernel_file", QEMU_KERNEL, "initrd_file",
                         QEMU_INITRD, "net", m->net);
}

/* Copies a string member into out; false when missing or too long. */
static bool get_str(json_t *o, const char *key, char *out, size_t size)
{
        const char *s = json_string_value(json_object_get(o, key));
        size_t n = s ? strlen(s) : 0;
        if (!s || n >= size)
                return false;
        memcpy(out, s, n + 1);
        return true;
}

/* A non-negative integer member; false when missing or of another type. */
static bool get_uint(json_t *o, const char *key, uint64_t *out)
{
        json_t *v = json_object_get(o, key);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return false;
        *out = (uint64_t)json_integer_value(v);
        return true;
}

int qemu_machine_from_json(json_t *o, const char *where, struct qemu_machine *ret,
                           struct vmsnap_diag *d)
{
        struct qemu_machine m = {0};
        uint64_t layout = 0, vcpus = 0;
        char accel[16] = "";
        bool ok = get_uint(o, "layout", &layout) && get_uint(o, "vcpus", &vcpus) &&
                  get_uint(o, "memory", &m.memory) && get_uint(o, "tsc_khz", &m.tsc_khz) &&
                  get_str(o, "qemu", m.qemu_version, sizeof(m.qemu_version)) &&
                  get_str(o, "accel", accel, sizeof(accel)) &&
                  get_str(o, "machine", m.machine, sizeof(m.machine)) &&
                  get_str(o, "cpu", m.cpu, sizeof(m.cpu)) &&
                  get_str(o, "append", m.append, sizeof(m.append)) &&
                  get_str(o, "disk_format", m.disk_format, sizeof(m.disk_format)) &&
                  json_is_boolean(json_object_get(o, "initrd")) &&
                  json_is_boolean(json_object_get(o, "disk")) &&
                  (!json_object_get(o, "net") || json_is_boolean(json_object_get(o, "net")));
        if (!ok)
                return vmsnap_diag(d, -EBADMSG,
                                   "%s: not a QEMU machine description (a field "
                                   "is missing, of the wrong type or too long)",
                                   where);
        if (layout != QEMU_LAYOUT)
                return vmsnap_diag(d, -EPROTONOSUPPORT,
                                   "%s: command line layout %llu; this "
                                   "vmsnap builds layout %d",
                                   where, (unsigned long long)layout, QEMU_LAYOUT);
        m.layout = QEMU_LAYOUT;
        m.accel = vmm_accel_parse(accel);
        if (!get_str(o, "accel_reason", m.accel_reason, sizeof(m.accel_reason)))
                m.accel_reason[0] = '\0'; /* optional: written since the accelerator is shown */
        m.vcpus = (uint32_t)MIN(vcpus, (uint64_t)UINT32_MAX);
        m.initrd = json_is_true(json_object_get(o, "initrd"));
        m.disk = json_is_true(json_object_get(o, "disk"));
        m.net = json_is_true(json_object_get(o, "net")); /* absent: made before NICs */
        if (m.accel == VMM_ACCEL_UNKNOWN || m.vcpus < 1 || m.vcpus > QEMU_MAX_VCPUS ||
            m.memory == 0 || m.memory % (2u << 20) || m.memory > QEMU_MAX_MEMORY)
                return vmsnap_diag(d, -EBADMSG, "%s: invalid accel, vcpus or memory", where);
        *ret = m;
        return 0;
}

int qemu_machine_read_file(const char *dir, json_t **ret, struct vmsnap_diag *d)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", dir, strerror(-dfd));
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        int r = vmsnap_fs_read_file(dfd, QEMU_CONFIG, 1 << 20, &buf, &len);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: cannot read: %s", dir, QEMU_CONFIG, strerror(-r));
        json_error_t je;
        json_t *o = json_loadb((const char *)buf, len, 0, &je);
        if (!json_is_object(o)) {
                json_decref(o);
                return vmsnap_diag(d, -EBADMSG, "%s/%s: not a JSON object (%s)", dir, QEMU_CONFIG,
                                   je.text);
        }
        *ret = o;
        return 0;
}

int qemu_machine_write_file(int dirfd, const char *where, json_t *o, struct vmsnap_diag *d)
{
        _cleanup_free_ char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        json_decref(o);
        if (!text)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        size_t n = strlen(text);
        text[n] = '\n'; /* json_dumps ends without one; the NUL's byte holds it */
        int r = vmsnap_fs_atomic_write(dirfd, QEMU_CONFIG, text, n + 1, d);
        if (r < 0)
                vmsnap_diag_prefix(d, "%s", where);
        return r;
}

/* ---- the command line ------------------------------------------------------------------------ */

struct argv_buf {
        char *v[64];
        size_t n;
        bool oom;
};

__attribute__((format(printf, 2, 3))) static void add(struct argv_buf *a, const char *fmt, ...)
{
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        int n = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (n < 0 || a->n + 1 >= ARRAY_SIZE(a->v)) {
                if (n >= 0)
                        free(s);
                a->oom = true;
                return;
        }
        a->v[a->n++] = s;
}

/* An option and its value. */
__attribute__((format(printf, 3, 4))) static void add_opt(struct argv_buf *a, const char *opt,
                                                          const char *fmt, ...)
{
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        int n = vasprintf(&s, fmt, ap);
        va_end(ap);
        add(a, "%s", opt);
        if (n < 0) {
                a->oom = true;
                return;
        }
        add(a, "%s", s);
        free(s);
}

char *qemu_opt_escape(const char *s)
{
        size_t n = strlen(s), extra = 0;
        for (size_t i = 0; i < n; i++)
                extra += s[i] == ',';
        char *out = malloc(n + extra + 1), *p = out;
        for (size_t i = 0; out && i <= n; i++) {
                *p++ = s[i];
                if (s[i] == ',')
                        *p++ = ',';
        }
        return out;
}

/* run_dir/name escaped for an option value (malloc'd). */
static char *run_path(const char *run_dir, const char *name)
{
        char p[PATH_MAX];
        int n = snprintf(p, sizeof(p), "%s/%s", run_dir, name);
        return n < 0 || (size_t)n >= sizeof(p) ? NULL : qemu_opt_escape(p);
}

/* One -blockdev node, given as JSON so that no file name needs escaping; o is stolen. */
static void add_blockdev(struct argv_buf *a, json_t *o)
{
        _cleanup_free_ char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!text) {
                a->oom = true;
                return;
        }
        add_opt(a, "-blockdev", "%s", text);
}

/* The guest's /dev/vda as -blockdev nodes that name every file QEMU opens: a raw disk is a
 * `file` node under a `raw` node; a qcow2 overlay is a `file` node under a `qcow2` node whose
 * backing is the pinned base image (read-only `file` + `raw` nodes). The backing file name
 * the overlay's header holds is never opened: the overlay is the guest's to write, and its
 * header may name any host file (docs/vmm.md "Disks"). The top node keeps the name "root"
 * that the device (and so the migration stream) has always used. */
static void add_disk(struct argv_buf *a, const struct qemu_launch *l)
{
        bool qcow2 = strcmp(l->machine->disk_format, "qcow2") == 0;
        if (!l->rootfs || (qcow2 && !l->rootfs_base)) {
                a->oom = true; /* qemu_argv_build's callers check the spec first */
                return;
        }
        if (qcow2) {
                add_blockdev(a, json_pack("{s:s, s:s, s:s, s:b}", "driver", "file", "node-name",
                                          "root-base-file", "filename", l->rootfs_base,
                                          "read-only", 1));
                add_blockdev(a, json_pack("{s:s, s:s, s:s, s:b}", "driver", "raw", "node-name",
                                          "root-base", "file", "root-base-file", "read-only", 1));
        }
        add_blockdev(a, json_pack("{s:s, s:s, s:s}", "driver", "file", "node-name", "root-file",
                                  "filename", l->rootfs));
        if (qcow2)
                add_blockdev(a, json_pack("{s:s, s:s, s:s, s:s}", "driver", "qcow2", "node-name",
                                          "root", "file", "root-file", "backing", "root-base"));
        else
                add_blockdev(a, json_pack("{s:s, s:s, s:s}", "driver", "raw", "node-name", "root",
                                          "file", "root-file"));
        add_opt(a, "-device", "virtio-blk-device,drive=root");
}

/* The serial console, the agent port, the disk, the monitor. */
static void add_devices(struct argv_buf *a, const struct qemu_launch *l)
{
        const struct qemu_machine *m = l->machine;
        _cleanup_free_ char *console = run_path(l->run_dir, QEMU_CONSOLE);
        _cleanup_free_ char *agent = run_path(l->run_dir, QEMU_AGENT_SOCK);
        _cleanup_free_ char *qmp = run_path(l->run_dir, QEMU_QMP_SOCK);
        if (!console || !agent || !qmp) {
                a->oom = true;
                return;
        }
        add_opt(a, "-chardev", "file,id=console,path=%s", console);
        add_opt(a, "-serial", "chardev:console");
        add_opt(a, "-device", "virtio-serial-device");
        add_opt(a, "-chardev", "socket,id=agent,path=%s,server=on,wait=off", agent);
        add_opt(a, "-device", "virtserialport,chardev=agent,name=%s", QEMU_AGENT_PORT);
        if (m->disk)
                add_disk(a, l);
        /* The NIC: the same TAP name and MAC in every sandbox (each runs in its own network
         * namespace), so a restored clone needs no reconfiguration (docs/network.md). */
        if (m->net) {
                add_opt(a, "-netdev", "tap,id=net0,ifname=%s,script=no,downscript=no",
                        VMSNAP_NET_TAP_NAME);
                add_opt(a, "-device", "virtio-net-device,netdev=net0,mac=%s", VMSNAP_NET_GUEST_MAC);
        }
        add_opt(a, "-chardev", "socket,id=qmp,path=%s,server=on,wait=off", qmp);
        add_opt(a, "-mon", "chardev=qmp,mode=control");
}

int qemu_argv_build(const struct qemu_launch *l, char ***ret)
{
        const struct qemu_machine *m = l->machine;
        _cleanup_free_ char *mem = qemu_opt_escape(l->memory_file);
        _cleanup_free_ char *pidfile = NULL;
        if (!mem || asprintf(&pidfile, "%s/%s", l->run_dir, QEMU_PIDFILE) < 0)
                return -ENOMEM;
        struct argv_buf a = {0};
        unsigned long long mib = (unsigned long long)(m->memory >> 20);
        add(&a, "%s", l->binary ? l->binary : QEMU_BINARY);
        if (m->accel == VMM_ACCEL_TCG)
                add_opt(&a, "-accel", "tcg,tb-size=%u", QEMU_TB_SIZE_MIB);
        else
                add_opt(&a, "-accel", "%s", vmm_accel_name(m->accel));
        if (l->name)
                add_opt(&a, "-name", "vmsnap-%s", l->name);
        add_opt(&a, "-sandbox", "%s", QEMU_SANDBOX);
        add_opt(&a, "-machine", "%s", m->machine);
        add_opt(&a, "-cpu", "%s", m->cpu);
        add_opt(&a, "-smp", "%u", m->vcpus);
        add_opt(&a, "-m", "%lluM", mib);
        add_opt(&a, "-object", "memory-backend-file,id=mem,size=%lluM,mem-path=%s,share=%s", mib,
                mem, l->share ? "on" : "off");
        add_opt(&a, "-machine", "memory-backend=mem");
        add(&a, "-nodefaults");
        add(&a, "-no-user-config");
        add_opt(&a, "-display", "none");
        add(&a, "-no-reboot");
        add_opt(&a, "-kernel", "%s", l->kernel);
        if (m->initrd)
                add_opt(&a, "-initrd", "%s", l->initrd);
        add_opt(&a, "-append", "%s", m->append);
        add_devices(&a, l);
        add_opt(&a, "-pidfile", "%s", pidfile);
        if (l->incoming)
                add_opt(&a, "-incoming", "defer");
        char **argv = a.oom ? NULL : calloc(a.n + 1, sizeof(char *));
        if (!argv) {
                for (size_t i = 0; i < a.n; i++)
                        free(a.v[i]);
                return -ENOMEM;
        }
        memcpy(argv, a.v, a.n * sizeof(char *));
        *ret = argv;
        return 0;
}

void qemu_argv_free(char **argv)
{
        for (size_t i = 0; argv && argv[i]; i++)
                free(argv[i]);
        free(argv);
}
