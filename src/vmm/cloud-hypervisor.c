/* The Cloud Hypervisor driver: REST over its API socket (--api-socket path=...), under
 * /api/v1/. Boot = PUT vm.create (the VM config) + vm.boot. Pause/resume = vm.pause /
 * vm.resume. Save = vm.snapshot to file://<state_dir>: config.json, state.json and
 * memory-ranges (all of guest RAM: a content source for the memory layer). Restore = a bare
 * process + vm.restore from a directory in the run directory that holds a patched copy of
 * config.json, state.json and memory-ranges pointing at the memory file; the VM is left
 * paused. docs/vmm.md "Cloud Hypervisor" has the details. */
#include <vmsnap/net.h>
#include <vmsnap/vmm.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/cloud-hypervisor-jail.h"
#include "vmm/http.h"
#include "vmm/hvsock.h"
#include "vmm/process.h"
#include "vmm/version.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CH_NAME            "cloud-hypervisor"
#define CH_API_SOCK        "cloud-hypervisor.sock"
#define CH_LOG             "cloud-hypervisor.log"
#define CH_PIDFILE         "cloud-hypervisor.pid"
#define CH_VSOCK           "vsock.sock"
#define CH_RESTORE_DIR     "restore" /* in the run directory: what vm.restore reads */
#define CH_CONFIG          "config.json"
#define CH_STATE           "state.json"
#define CH_MEMORY          "memory-ranges"
#define CH_ONDEMAND_SINCE  52u /* memory_restore_mode and resume appeared in v52.0 */
#define CH_DEFAULT_CMDLINE "console=ttyS0 reboot=k panic=1"
#define CH_INSTALL_HINT                                                                            \
        "download a static release from "                                                          \
        "https://github.com/cloud-hypervisor/cloud-hypervisor/releases (Debian has no "            \
        "package) and put it in $PATH or give its path"

struct vmsnap_vm {
        struct vmm_process proc;
        char run_dir[PATH_MAX];
        char api_sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char version[32];
        struct vmm_version v;
        uint64_t memory;
        bool jailed;              /* started through vmsnap-jailer: inside-jail paths */
        uid_t jail_uid;
        struct ch_jail_paths in;  /* those paths */
};

static int path_join(char *out, size_t size, const char *dir, const char *name)
{
        int n = snprintf(out, size, "%s/%s", dir, name);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

#define EXIT_GRACE_MS 200 /* a VMM that closed its socket is given this long to finish dying */

/* Turns a transport failure on a VMM that died into its exit and log; prefixes the pid. */
static int ch_explain(struct vmsnap_vm *vm, int r, struct vmsnap_diag *d)
{
        bool gone = r == -ECONNREFUSED || r == -ECONNRESET;
        bool transport = gone || r == -ETIMEDOUT || r == -EIO;
        if (transport && vmm_process_wait_exit(&vm->proc, gone ? EXIT_GRACE_MS : 0)) {
                char how[96], msg[sizeof(d->msg)];
                if (!d)
                        return -ESRCH;
                memcpy(msg, d->msg, sizeof(msg));
                vmm_process_describe_exit(&vm->proc, how, sizeof(how));
                vmsnap_diag(d, -ESRCH, "%s (pid %d) %s (%s)", CH_NAME, (int)vm->proc.pid, how, msg);
                vmm_process_diag_log(&vm->proc, d);
                return -ESRCH;
        }
        vmsnap_diag_prefix(d, "%s (pid %d)", CH_NAME, (int)vm->proc.pid);
        return r;
}

/* One call to /api/v1/<name>; takes ownership of body. */
static int ch_call(struct vmsnap_vm *vm, const char *method, const char *name, json_t *body,
                   long timeout_ms, json_t **ret, struct vmsnap_diag *d)
{
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/%s", name);
        int r = vmm_http_call(vm->api_sock, method, path, body, timeout_ms, ret, d);
        json_decref(body);
        return r < 0 ? ch_explain(vm, r, d) : 0;
}

/* A PUT with a JSON body; a NULL body means json_pack failed (a path that is not UTF-8). */
static int ch_put_json(struct vmsnap_vm *vm, const char *name, json_t *body, long timeout_ms,
                       struct vmsnap_diag *d)
{
        if (!body)
                return vmsnap_diag(d, -EINVAL,
                                   "PUT /api/v1/%s: cannot encode the request (paths must be "
                                   "UTF-8 and fit PATH_MAX)",
                                   name);
        return ch_call(vm, "PUT", name, body, timeout_ms, NULL, d);
}

/* Cloud Hypervisor detects a disk's image type from its first bytes and (before v51) opens
 * the backing file a qcow2 header names. Its disks are therefore raw copies only, and a raw
 * disk that starts like a qcow2 image (the guest can write its own sector zero) is refused:
 * the VMM would take it for an overlay and open whatever host file its header names. */
static int ch_check_disk(const struct vmsnap_vm_spec *spec, struct vmsnap_diag *d)
{
        if (spec->rootfs_format && strcmp(spec->rootfs_format, "raw") != 0)
                return vmsnap_diag(d, -EINVAL,
                                   "cloud-hypervisor: disk format '%s': this driver takes raw "
                                   "disks only (it would follow a qcow2 header's backing name)",
                                   spec->rootfs_format);
        int fd = open(spec->rootfs, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: disk: %s", spec->rootfs, strerror(errno));
        uint8_t magic[4] = {0};
        ssize_t n = vmsnap_fs_pread_full(fd, magic, sizeof(magic), 0);
        close(fd);
        if (n == (ssize_t)sizeof(magic) && memcmp(magic, "QFI\xfb", 4) == 0)
                return vmsnap_diag(d, -EPERM,
                                   "%s: this raw disk starts with a qcow2 header; Cloud "
                                   "Hypervisor would open it as qcow2 and follow the backing "
                                   "file it names",
                                   spec->rootfs);
        return 0;
}

static int ch_check_spec(const struct vmsnap_vm_spec *spec, bool boot, struct vmsnap_diag *d)
{
        if (!spec || !spec->id || !spec->run_dir || spec->run_dir[0] != '/')
                return vmsnap_diag(
                    d, -EINVAL, "cloud-hypervisor: the spec needs an id and an absolute run_dir");
        if (spec->vcpus < 1 || spec->vcpus > 254)
                return vmsnap_diag(d, -EINVAL, "cloud-hypervisor: %u vCPUs (1..254)", spec->vcpus);
        if (spec->memory == 0 || spec->memory % (2u << 20))
                return vmsnap_diag(d, -EINVAL,
                                   "cloud-hypervisor: memory %llu is not a non-zero multiple of "
                                   "2 MiB",
                                   (unsigned long long)spec->memory);
        if (boot && !spec->kernel)
                return vmsnap_diag(d, -EINVAL, "cloud-hypervisor: boot needs a kernel");
        if (spec->net && (!spec->jail || !spec->jail->netns_path))
                return vmsnap_diag(d, -EINVAL,
                                   "cloud-hypervisor: a network card needs the sandbox's "
                                   "network namespace (a jail with netns_path)");
        return spec->rootfs ? ch_check_disk(spec, d) : 0;
}

static int ch_new(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return -ENOMEM;
        vm->proc.pidfd = -1;
        vm->memory = spec->memory;
        if (snprintf(vm->run_dir, sizeof(vm->run_dir), "%s", spec->run_dir) >=
                (int)sizeof(vm->run_dir) ||
            path_join(vm->api_sock, sizeof(vm->api_sock), spec->run_dir, CH_API_SOCK) < 0) {
                free(vm);
                return vmsnap_diag(d, -ENAMETOOLONG,
                                   "%s: run directory path too long for a Unix socket",
                                   spec->run_dir);
        }
        *ret = vm;
        return 0;
}

/* Reads the version from GET vmm.ping ("build_version": "v43.0", "version": "43.0.0"). */
static int ch_ping(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        json_t *j = NULL;
        int r = ch_call(vm, "GET", "vmm.ping", NULL, VMM_HTTP_TIMEOUT_MS, &j, d);
        if (r < 0)
                return r;
        const char *s = json_string_value(json_object_get(j, "version"));
        if (!s)
                s = json_string_value(json_object_get(j, "build_version"));
        r = s ? vmm_version_parse(s, &vm->v) : -EINVAL;
        json_decref(j);
        if (r < 0)
                return vmsnap_diag(d, -EBADMSG, "%s: vmm.ping names no version", vm->api_sock);
        vmm_version_format(&vm->v, vm->version, sizeof(vm->version));
        return 0;
}

/* Starts a bare Cloud Hypervisor (no VM yet) and reads its version; jailed when the spec has
 * a jail (`from`, `state_file`: the restore it is started for, else NULL). */
static int ch_start(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                    const char *state_file, struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        char log[PATH_MAX], pidfile[PATH_MAX], sockarg[PATH_MAX];
        if (path_join(log, sizeof(log), spec->run_dir, CH_LOG) < 0 ||
            path_join(pidfile, sizeof(pidfile), spec->run_dir, CH_PIDFILE) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", spec->run_dir);
        _cleanup_free_ struct vmm_confine *c = spec->jail ? calloc(1, sizeof(*c)) : NULL;
        int r = spec->jail && !c ? -ENOMEM : 0;
        vm->jailed = spec->jail != NULL;
        vm->jail_uid = spec->jail ? spec->jail->uid : 0;
        if (r == 0 && vm->jailed)
                r = ch_jail_build(spec, from, state_file, CH_NAME, c, &vm->in, d);
        if (r < 0)
                return r;
        snprintf(sockarg, sizeof(sockarg), "path=%s",
                 vm->jailed ? VMM_JAIL_RUN "/" CH_API_SOCK : vm->api_sock);
        /* --seccomp true: its own syscall filter, stated rather than left to the default. */
        char *argv[] = {vm->jailed ? vm->in.binary
                                   : (char *)(spec->vmm_binary ? spec->vmm_binary : CH_NAME),
                        "--api-socket", sockarg, "--seccomp", "true", NULL};
        struct vmm_spawn sp = {.name = CH_NAME,
                               .argv = argv,
                               .log_path = log,
                               .cwd = spec->run_dir,
                               .jail = vm->jailed ? &c->spec : NULL};
        r = vmm_process_spawn(&sp, &vm->proc, d);
        if (r == 0)
                r = vmm_process_write_pidfile(&vm->proc, pidfile, d);
        if (r == 0)
                r = vmm_process_wait_socket(&vm->proc, vm->api_sock, vmm_process_start_timeout_ms(),
                                            d);
        return r < 0 ? r : ch_ping(vm, d);
}

static void ch_free(struct vmsnap_vm *vm)
{
        free(vm);
}

static void ch_remove_restore_dir(const struct vmsnap_vm *vm);

/* Kills what ch_start started and frees the handle (error paths of boot and restore). The
 * pid file stays: it names the process that was started and is gone now. */
static void ch_abort(struct vmsnap_vm *vm)
{
        vmm_process_kill(&vm->proc);
        unlink(vm->api_sock);
        ch_remove_restore_dir(vm);
        ch_free(vm);
}

/* ---- boot --------------------------------------------------------------------------------- */

static json_t *ch_vm_config(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm *vm)
{
        char vsock[PATH_MAX];
        if (path_join(vsock, sizeof(vsock), vm->jailed ? VMM_JAIL_RUN : spec->run_dir,
                      CH_VSOCK) < 0)
                return NULL;
        json_t *c = json_pack(
            "{s:{s:i, s:i}, s:{s:I}, s:{s:s, s:s}, s:{s:s}, s:{s:s}, "
            "s:{s:i, s:s}}",
            "cpus", "boot_vcpus", (int)spec->vcpus, "max_vcpus", (int)spec->vcpus, "memory", "size",
            (json_int_t)spec->memory, "payload", "kernel",
            vm->jailed ? vm->in.kernel : spec->kernel, "cmdline",
            spec->cmdline ? spec->cmdline : CH_DEFAULT_CMDLINE, "serial", "mode", "Tty", "console",
            "mode", "Off", "vsock", "cid", (int)VMM_GUEST_CID, "socket", vsock);
        if (c && spec->initrd)
                json_object_set_new(json_object_get(c, "payload"), "initramfs",
                                    json_string(vm->jailed ? vm->in.initrd : spec->initrd));
        if (c && spec->rootfs) /* raw: ch_check_disk refused anything that looks like qcow2 */
                json_object_set_new(
                    c, "disks",
                    json_pack("[{s:s, s:s}]", "path", vm->jailed ? vm->in.rootfs : spec->rootfs,
                              "id", "rootfs"));
        if (c && spec->net) /* the same TAP name and MAC in every sandbox (docs/network.md) */
                json_object_set_new(c, "net",
                                    json_pack("[{s:s, s:s, s:s}]", "tap", VMSNAP_NET_TAP_NAME,
                                              "mac", VMSNAP_NET_GUEST_MAC, "id", "net0"));
        return c;
}

static int ch_boot(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = NULL;
        int r = ch_check_spec(spec, true, d);
        if (r == 0)
                r = ch_new(spec, &vm, d);
        if (r < 0)
                return r;
        r = ch_start(spec, NULL, NULL, vm, d);
        if (r == 0)
                r = ch_put_json(vm, "vm.create", ch_vm_config(spec, vm), VMM_HTTP_TIMEOUT_MS, d);
        if (r == 0)
                r = ch_call(vm, "PUT", "vm.boot", NULL, vmm_http_memory_timeout_ms(vm->memory),
                            NULL, d);
        if (r < 0) {
                ch_abort(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* ---- pause, resume ------------------------------------------------------------------------ */

/* The VM's state from vm.info ("Running", "Paused", ...), or "" when it cannot be read. */
static void ch_state(struct vmsnap_vm *vm, char *out, size_t size)
{
        json_t *j = NULL;
        out[0] = '\0';
        if (ch_call(vm, "GET", "vm.info", NULL, VMM_HTTP_TIMEOUT_MS, &j, NULL) == 0 &&
            json_string_value(json_object_get(j, "state")))
                snprintf(out, size, "%s", json_string_value(json_object_get(j, "state")));
        json_decref(j);
}

/* Cloud Hypervisor refuses a transition to the state the VM is already in; the interface
 * wants pause and resume idempotent, so a refusal is checked against vm.info. */
static int ch_transition(struct vmsnap_vm *vm, const char *action, const char *target,
                         struct vmsnap_diag *d)
{
        if (!vm)
                return vmsnap_diag(d, -EINVAL, "cloud-hypervisor: no VM");
        int r = ch_call(vm, "PUT", action, NULL, VMM_HTTP_TIMEOUT_MS, NULL, d);
        if (r == -EBUSY || r == -EIO) {
                char state[32];
                ch_state(vm, state, sizeof(state));
                if (strcmp(state, target) == 0) {
                        vmsnap_diag_clear(d);
                        return 0;
                }
        }
        return r;
}

static int ch_pause(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        return ch_transition(vm, "vm.pause", "Paused", d);
}

static int ch_resume(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        return ch_transition(vm, "vm.resume", "Running", d);
}

/* ---- save --------------------------------------------------------------------------------- */

static int ch_unlink_snapshot(int dirfd, const char *dir, struct vmsnap_diag *d)
{
        const char *names[] = {CH_CONFIG, CH_STATE, CH_MEMORY};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (unlinkat(dirfd, names[i], 0) < 0 && errno != ENOENT)
                        return vmsnap_diag(d, -errno, "%s/%s: cannot remove: %s", dir, names[i],
                                           strerror(errno));
        return 0;
}

/* Cloud Hypervisor writes the state files without fsync. */
static int ch_sync_state(int dirfd, const char *dir, struct vmsnap_diag *d)
{
        const char *names[] = {CH_CONFIG, CH_STATE};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                _cleanup_close_ int fd = openat(dirfd, names[i], O_RDONLY | O_CLOEXEC);
                if (fd < 0 || fsync(fd) < 0)
                        return vmsnap_diag(d, -errno, "%s/%s: %s", dir, names[i], strerror(errno));
        }
        int r = vmsnap_fs_fsync_dir(dirfd);
        return r < 0 ? vmsnap_diag(d, r, "%s: fsync: %s", dir, strerror(-r)) : 0;
}

static int ch_save(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_vm_saved *ret,
                   struct vmsnap_diag *d)
{
        char url[PATH_MAX + 8], memfile[PATH_MAX];
        if (!vm || !state_dir || state_dir[0] != '/' || !ret)
                return vmsnap_diag(d, -EINVAL,
                                   "cloud-hypervisor: save needs a VM and an absolute directory");
        if (path_join(memfile, sizeof(memfile), state_dir, CH_MEMORY) < 0 ||
            strlen(memfile) >= sizeof(ret->memory_file))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", state_dir);
        snprintf(url, sizeof(url), "file://%s",
                 vm->jailed ? VMM_JAIL_RUN "/" CH_JAIL_SAVE_DIR : state_dir);
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(state_dir);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: cannot open: %s", state_dir, strerror(-dirfd));
        int r = ch_unlink_snapshot(dirfd, state_dir, d); /* memory-ranges is create_new */
        /* Jailed, it writes into run_dir/save (the only place it can), and the files are
         * taken over from there. */
        char save[PATH_MAX];
        _cleanup_close_ int savefd = -1;
        if (r == 0 && vm->jailed)
                r = ch_jail_save_dir(vm->run_dir, vm->jail_uid, save, sizeof(save), d);
        if (r == 0 && vm->jailed && (savefd = vmsnap_fs_open_dir(save)) >= 0)
                r = ch_unlink_snapshot(savefd, save, d);
        if (r == 0)
                r = ch_put_json(vm, "vm.snapshot", json_pack("{s:s}", "destination_url", url),
                                vmm_http_memory_timeout_ms(vm->memory), d);
        const char *names[] = {CH_CONFIG, CH_STATE, CH_MEMORY};
        for (size_t i = 0; r == 0 && vm->jailed && i < ARRAY_SIZE(names); i++)
                r = vmm_confine_take_file(save, names[i], state_dir, d);
        if (r == 0)
                r = ch_sync_state(dirfd, state_dir, d);
        if (r == 0)
                r = vmm_version_write(state_dir, CH_NAME, vm->version, d);
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        snprintf(ret->memory_file, sizeof(ret->memory_file), "%s", memfile);
        ret->source = VMSNAP_MEM_SOURCE_CONTENT; /* Cloud Hypervisor snapshots are always full */
        ret->memory_file_temporary = true;
        snprintf(ret->version, sizeof(ret->version), "%s", vm->version);
        return 0;
}

/* ---- restore ------------------------------------------------------------------------------ */

static bool ch_compatible(const char *saved_version, const char *running_version)
{
        struct vmm_version a, b;
        if (!saved_version || !running_version || vmm_version_parse(saved_version, &a) < 0 ||
            vmm_version_parse(running_version, &b) < 0)
                return false;
        return a.major == b.major;
}

/* The saved config with this sandbox's paths: its disk, its vsock socket, its kernel. */
static int ch_patch_config(json_t *c, const struct vmsnap_vm_spec *spec,
                           const struct vmsnap_vm *vm, const char *dir, struct vmsnap_diag *d)
{
        char vsock[PATH_MAX];
        json_t *mem = json_object_get(c, "memory");
        uint64_t size = (uint64_t)json_integer_value(json_object_get(mem, "size"));
        if (size != spec->memory)
                return vmsnap_diag(d, -EINVAL,
                                   "%s: the snapshot has %llu bytes of memory, the spec asks "
                                   "for %llu: memory is fixed by the snapshot",
                                   dir, (unsigned long long)size, (unsigned long long)spec->memory);
        json_t *disk = json_array_get(json_object_get(c, "disks"), 0);
        if (disk && spec->rootfs)
                json_object_set_new(disk, "path",
                                    json_string(vm->jailed ? vm->in.rootfs : spec->rootfs));
        json_t *vs = json_object_get(c, "vsock");
        if (vs && path_join(vsock, sizeof(vsock), vm->jailed ? VMM_JAIL_RUN : spec->run_dir,
                            CH_VSOCK) == 0)
                json_object_set_new(vs, "socket", json_string(vsock));
        json_t *payload = json_object_get(c, "payload");
        if (payload && spec->kernel)
                json_object_set_new(payload, "kernel",
                                    json_string(vm->jailed ? vm->in.kernel : spec->kernel));
        return 0;
}

/* Builds run_dir/restore: a patched config.json, state.json linked from state_dir and
 * memory-ranges linked to the memory file (Cloud Hypervisor reads all three from one
 * directory; the memory layer removed its own memory-ranges after save). */
static int ch_restore_dir(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                          const struct vmsnap_vm *vm, char *dir, size_t size,
                          struct vmsnap_diag *d)
{
        char src[PATH_MAX];
        if (path_join(dir, size, spec->run_dir, CH_RESTORE_DIR) < 0 ||
            path_join(src, sizeof(src), from->state_dir, CH_CONFIG) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", spec->run_dir);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: %s", dir, strerror(errno));
        _cleanup_close_ int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dirfd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", dir, strerror(errno));
        if (vm->jailed && fchown(dirfd, vm->jail_uid, vm->jail_uid) < 0) /* it reads it */
                return vmsnap_diag(d, -errno, "%s: cannot hand to uid %u: %s", dir,
                                   (unsigned)vm->jail_uid, strerror(errno));
        int r = ch_unlink_snapshot(dirfd, dir, d);
        if (r < 0)
                return r;
        json_error_t err;
        json_t *c = json_load_file(src, 0, &err);
        if (!c)
                return vmsnap_diag(d, -EBADMSG, "%s: %s", src, err.text);
        r = ch_patch_config(c, spec, vm, from->state_dir, d);
        char dst[PATH_MAX];
        if (r == 0 && (path_join(dst, sizeof(dst), dir, CH_CONFIG) < 0 ||
                       json_dump_file(c, dst, JSON_INDENT(2)) < 0))
                r = vmsnap_diag(d, -EIO, "%s: cannot write the restore config", dir);
        json_decref(c);
        /* Links to the state and memory files where the VMM sees them (its jail: binds). */
        if (r == 0 && path_join(src, sizeof(src), from->state_dir, CH_STATE) == 0 &&
            symlinkat(vm->jailed ? vm->in.state : src, dirfd, CH_STATE) < 0)
                r = vmsnap_diag(d, -errno, "%s/%s: %s", dir, CH_STATE, strerror(errno));
        if (r == 0 &&
            symlinkat(vm->jailed ? vm->in.memory : from->memory_path, dirfd, CH_MEMORY) < 0)
                r = vmsnap_diag(d, -errno, "%s/%s: %s", dir, CH_MEMORY, strerror(errno));
        return r;
}

static int ch_check_restore(const struct vmsnap_vm_restore *from, struct vmsnap_diag *d)
{
        if (!from || !from->state_dir || !from->memory_path || from->memory_path[0] != '/')
                return vmsnap_diag(d, -EINVAL,
                                   "cloud-hypervisor: restore needs a state_dir and "
                                   "an absolute memory_path");
        if (from->memory_mode == VMSNAP_VM_MEMORY_UFFD)
                return vmsnap_diag(d, -ENOTSUP,
                                   "cloud-hypervisor: it cannot use an external page server; it "
                                   "restores lazily itself (memory_restore_mode=OnDemand): "
                                   "restore from a memory file (VMSNAP_VM_MEMORY_FILE_PRIVATE)");
        if (from->memory_mode != VMSNAP_VM_MEMORY_FILE_SHARED &&
            from->memory_mode != VMSNAP_VM_MEMORY_FILE_PRIVATE)
                return vmsnap_diag(d, -EINVAL, "cloud-hypervisor: unknown memory mode %d",
                                   (int)from->memory_mode);
        return 0;
}

static int ch_check_state_version(struct vmsnap_vm *vm, const char *state_dir,
                                  struct vmsnap_diag *d)
{
        char saved[64];
        int r = vmm_version_read(state_dir, CH_NAME, saved, sizeof(saved), d);
        if (r < 0)
                return r;
        if (ch_compatible(saved, vm->version))
                return 0;
        return vmsnap_diag(d, -ENOTSUP,
                           "%s: the snapshot was written by Cloud Hypervisor %s and this one is "
                           "%s; snapshots restore only on the same major version: install "
                           "Cloud Hypervisor v%s to resume it",
                           state_dir, saved, vm->version, saved);
}

/* FILE_SHARED (the sandbox's own copy) -> Copy: read once, the file can go right after.
 * FILE_PRIVATE (a template's file) -> OnDemand: pages come from the file on first touch.
 * Before v52 there is only Copy. */
static json_t *ch_restore_body(const struct vmsnap_vm *vm, const char *dir,
                               enum vmsnap_vm_memory_mode mode)
{
        char url[PATH_MAX + 8];
        snprintf(url, sizeof(url), "file://%s",
                 vm->jailed ? VMM_JAIL_RUN "/" CH_RESTORE_DIR : dir);
        json_t *b = json_pack("{s:s, s:b}", "source_url", url, "prefault", 0);
        if (b && vm->v.major >= CH_ONDEMAND_SINCE) {
                json_object_set_new(
                    b, "memory_restore_mode",
                    json_string(mode == VMSNAP_VM_MEMORY_FILE_PRIVATE ? "OnDemand" : "Copy"));
                json_object_set_new(b, "resume", json_false());
        }
        return b;
}

static int ch_restore(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                      struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        char dir[PATH_MAX], state[PATH_MAX];
        struct vmsnap_vm *vm = NULL;
        int r = ch_check_spec(spec, false, d);
        if (r == 0)
                r = ch_check_restore(from, d);
        if (r == 0 && path_join(state, sizeof(state), from->state_dir, CH_STATE) < 0)
                r = vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", from->state_dir);
        if (r == 0)
                r = ch_new(spec, &vm, d);
        if (r < 0)
                return r;
        r = ch_start(spec, from, state, vm, d);
        if (r == 0) /* after the start: jailed, its paths are the jail's */
                r = ch_restore_dir(spec, from, vm, dir, sizeof(dir), d);
        if (r == 0)
                r = ch_check_state_version(vm, from->state_dir, d);
        if (r == 0)
                r = ch_put_json(vm, "vm.restore", ch_restore_body(vm, dir, from->memory_mode),
                                vmm_http_memory_timeout_ms(vm->memory), d);
        if (r < 0) {
                ch_abort(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* ---- the rest ----------------------------------------------------------------------------- */

static int ch_attach(const struct vmsnap_vm_spec *spec, pid_t pid, struct vmsnap_vm **ret,
                     struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = NULL;
        if (!spec || !spec->run_dir)
                return vmsnap_diag(d, -EINVAL, "cloud-hypervisor: attach needs the run_dir");
        int r = ch_new(spec, &vm, d);
        if (r < 0)
                return r;
        char needle[PATH_MAX];
        if (spec->jail) /* inside, every jail's socket has the same path: its cgroup tells */
                vmm_confine_attach_needle(spec->jail, needle, sizeof(needle));
        vm->jailed = spec->jail != NULL;
        vm->jail_uid = spec->jail ? spec->jail->uid : 0;
        r = vmm_process_attach(pid, CH_NAME, spec->jail ? needle : vm->api_sock, &vm->proc, d);
        if (r == 0)
                r = ch_ping(vm, d);
        json_t *j = NULL;
        if (r == 0)
                r = ch_call(vm, "GET", "vm.info", NULL, VMM_HTTP_TIMEOUT_MS, &j, d);
        if (r == 0)
                vm->memory = (uint64_t)json_integer_value(json_object_get(
                    json_object_get(json_object_get(j, "config"), "memory"), "size"));
        json_decref(j);
        if (r < 0) {
                vmm_process_release(&vm->proc);
                ch_free(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

static int ch_agent_connect(struct vmsnap_vm *vm, int timeout_ms, int *ret_fd,
                            struct vmsnap_diag *d)
{
        char uds[PATH_MAX];
        if (!vm || !ret_fd)
                return vmsnap_diag(d, -EINVAL, "cloud-hypervisor: agent_connect needs a VM");
        if (path_join(uds, sizeof(uds), vm->run_dir, CH_VSOCK) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", vm->run_dir);
        return vmm_hvsock_connect(uds, VMM_AGENT_VSOCK_PORT, timeout_ms, ret_fd, d);
}

/* Removes run_dir/restore and the links in it. */
static void ch_remove_restore_dir(const struct vmsnap_vm *vm)
{
        char path[PATH_MAX];
        if (path_join(path, sizeof(path), vm->run_dir, CH_RESTORE_DIR) < 0)
                return;
        int dirfd = vmsnap_fs_open_dir(path);
        if (dirfd < 0)
                return;
        ch_unlink_snapshot(dirfd, path, NULL);
        close(dirfd);
        rmdir(path);
}

/* Removes what the driver put in the run directory (never the directory itself). */
static void ch_clean_run_dir(const struct vmsnap_vm *vm)
{
        char path[PATH_MAX];
        unlink(vm->api_sock);
        snprintf(path, sizeof(path), "%s.lock", vm->api_sock); /* newer releases lock it */
        unlink(path);
        if (path_join(path, sizeof(path), vm->run_dir, CH_PIDFILE) == 0)
                unlink(path);
        ch_remove_restore_dir(vm);
}

static void ch_destroy(struct vmsnap_vm *vm)
{
        if (!vm)
                return;
        vmm_process_kill(&vm->proc);
        ch_clean_run_dir(vm);
        ch_free(vm);
}

static void ch_detach(struct vmsnap_vm *vm)
{
        if (!vm)
                return;
        vmm_process_release(&vm->proc);
        ch_free(vm);
}

static pid_t ch_pid(const struct vmsnap_vm *vm)
{
        return vm ? vm->proc.pid : 0;
}

static int ch_probe(const char *binary, char *ret_version, size_t size, struct vmsnap_diag *d)
{
        return vmm_version_probe(binary, CH_NAME, CH_INSTALL_HINT, ret_version, size, d);
}

/* The saved config.json lists the VM's network cards in "net". */
static int ch_saved_net(const char *state_dir, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        if (path_join(path, sizeof(path), state_dir, CH_CONFIG) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", state_dir);
        json_error_t err;
        json_t *c = json_load_file(path, 0, &err);
        if (!json_is_object(c)) {
                json_decref(c);
                return vmsnap_diag(d, -EBADMSG, "%s: not a JSON object (%s)", path, err.text);
        }
        json_t *net = json_object_get(c, "net");
        int r = json_is_array(net) && json_array_size(net) > 0 ? 1 : 0;
        json_decref(c);
        return r;
}

const struct vmsnap_vmm_driver vmsnap_vmm_cloud_hypervisor = {
    .name = CH_NAME,
    .disk_format = "raw",
    .probe = ch_probe,
    .compatible = ch_compatible,
    .boot = ch_boot,
    .restore = ch_restore,
    .attach = ch_attach,
    .pause = ch_pause,
    .resume = ch_resume,
    .save = ch_save,
    .agent_connect = ch_agent_connect,
    .destroy = ch_destroy,
    .detach = ch_detach,
    .pid = ch_pid,
    .saved_net = ch_saved_net,
};
