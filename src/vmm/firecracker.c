/* The Firecracker driver: HTTP over its API socket (--api-sock). Boot = PUT /machine-config,
 * /boot-source, /drives/rootfs, /vsock, then PUT /actions InstanceStart. Pause/resume =
 * PATCH /vm. Save = PUT /snapshot/create (Full the first time, Diff once the VM has a
 * snapshot on disk: dirty-page tracking is always on). Restore = a bare process + PUT
 * /snapshot/load with the File or Uffd memory backend. docs/vmm.md "Firecracker" has the
 * details and the file names.
 *
 * Firecracker runs with the run directory as its working directory, and the drive and the
 * vsock socket are given relative to it: the snapshot records those paths, and a restore in
 * another run directory must find the same names there. */
#include <vmsnap/net.h>
#include <vmsnap/vmm.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/firecracker-jail.h"
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

#define FC_NAME            "firecracker"
#define FC_API_SOCK        "firecracker.sock"
#define FC_LOG             "firecracker.log"
#define FC_PIDFILE         "firecracker.pid"
#define FC_VSOCK           "vsock.sock" /* relative to the run directory */
#define FC_ROOTFS          "rootfs.img" /* symlink in the run directory to spec->rootfs */
#define FC_SNAPFILE        "snapfile"
#define FC_MEMFILE         "fc-memory" /* temporary: the memory layer turns it into diffs */
#define FC_MAX_VCPUS       32u
#define FC_DEFAULT_CMDLINE "console=ttyS0 reboot=k panic=1 pci=off"
#define FC_INSTALL_HINT                                                                            \
        "download a release from https://github.com/firecracker-microvm/firecracker/releases "     \
        "(Debian has no package) and put it in $PATH or give its path"

struct vmsnap_vm {
        struct vmm_process proc;
        char run_dir[PATH_MAX];
        char api_sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char version[32]; /* "X.Y.Z" of the running Firecracker */
        struct vmm_version v;
        uint64_t memory;
        bool has_base; /* a snapshot of this VM's memory is on disk and dirty tracking runs
                          since it: the next save can be a Diff */
        bool jailed;   /* started through vmsnap-jailer: its API takes inside-jail paths */
        struct fc_jail_paths in; /* those paths */
};

/* ---- helpers ------------------------------------------------------------------------------ */

static int path_join(char *out, size_t size, const char *dir, const char *name)
{
        int n = snprintf(out, size, "%s/%s", dir, name);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static void fc_free(struct vmsnap_vm *vm)
{
        free(vm);
}

#define EXIT_GRACE_MS 200 /* a VMM that closed its socket is given this long to finish dying */

/* Rewrites a transport failure on a VMM that died into "firecracker (pid N) was killed by
 * signal 9" with its log, and prefixes every error with the pid. Returns r. */
static int fc_explain(struct vmsnap_vm *vm, int r, struct vmsnap_diag *d)
{
        bool gone = r == -ECONNREFUSED || r == -ECONNRESET;
        bool transport = gone || r == -ETIMEDOUT || r == -EIO;
        if (transport && vmm_process_wait_exit(&vm->proc, gone ? EXIT_GRACE_MS : 0)) {
                char how[96], msg[sizeof(d->msg)];
                if (!d)
                        return -ESRCH;
                memcpy(msg, d->msg, sizeof(msg));
                vmm_process_describe_exit(&vm->proc, how, sizeof(how));
                vmsnap_diag(d, -ESRCH, "%s (pid %d) %s (%s)", FC_NAME, (int)vm->proc.pid, how, msg);
                vmm_process_diag_log(&vm->proc, d);
                return -ESRCH;
        }
        vmsnap_diag_prefix(d, "%s (pid %d)", FC_NAME, (int)vm->proc.pid);
        return r;
}

/* One API call; takes ownership of body. Every PUT and PATCH of Firecracker has a body: a
 * NULL one means json_pack failed (a path that is not UTF-8). */
static int fc_call(struct vmsnap_vm *vm, const char *method, const char *path, json_t *body,
                   long timeout_ms, json_t **ret, struct vmsnap_diag *d)
{
        if (!body && strcmp(method, "GET") != 0)
                return vmsnap_diag(d, -EINVAL,
                                   "%s %s: cannot encode the request (paths must be UTF-8)", method,
                                   path);
        int r = vmm_http_call(vm->api_sock, method, path, body, timeout_ms, ret, d);
        json_decref(body);
        return r < 0 ? fc_explain(vm, r, d) : 0;
}

static int fc_check_spec(const struct vmsnap_vm_spec *spec, bool boot, struct vmsnap_diag *d)
{
        if (!spec || !spec->id || !spec->run_dir)
                return vmsnap_diag(d, -EINVAL, "firecracker: the spec needs an id and a run_dir");
        if (spec->vcpus < 1 || spec->vcpus > FC_MAX_VCPUS)
                return vmsnap_diag(d, -EINVAL, "firecracker: %u vCPUs (1..%u)", spec->vcpus,
                                   FC_MAX_VCPUS);
        if (spec->memory == 0 || spec->memory % (2u << 20))
                return vmsnap_diag(d, -EINVAL,
                                   "firecracker: memory %llu is not a non-zero multiple of 2 MiB",
                                   (unsigned long long)spec->memory);
        if (boot && !spec->kernel)
                return vmsnap_diag(d, -EINVAL, "firecracker: boot needs a kernel");
        if (spec->rootfs && spec->rootfs_format && strcmp(spec->rootfs_format, "raw") != 0)
                return vmsnap_diag(d, -ENOTSUP,
                                   "firecracker: %s is %s; Firecracker drives are raw images "
                                   "(use a raw overlay: reflink or sparse copy)",
                                   spec->rootfs, spec->rootfs_format);
        if (spec->net && (!spec->jail || !spec->jail->netns_path))
                return vmsnap_diag(d, -EINVAL,
                                   "firecracker: a network interface needs the sandbox's "
                                   "network namespace (a jail with netns_path)");
        return 0;
}

static int fc_new(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return -ENOMEM;
        vm->proc.pidfd = -1;
        vm->memory = spec->memory;
        if (snprintf(vm->run_dir, sizeof(vm->run_dir), "%s", spec->run_dir) >=
                (int)sizeof(vm->run_dir) ||
            path_join(vm->api_sock, sizeof(vm->api_sock), spec->run_dir, FC_API_SOCK) < 0) {
                free(vm);
                return vmsnap_diag(d, -ENAMETOOLONG,
                                   "%s: run directory path too long for a Unix socket "
                                   "(at most %zu bytes)",
                                   spec->run_dir, sizeof(vm->api_sock) - sizeof(FC_API_SOCK) - 1);
        }
        *ret = vm;
        return 0;
}

/* Points run_dir/rootfs.img at spec->rootfs (replacing an old link): by its name when it
 * lies in the run dir (the link then reads the same inside a jail and outside), else by the
 * path the VMM sees it at (`target`). */
static int fc_link_rootfs(const struct vmsnap_vm_spec *spec, const char *target,
                          struct vmsnap_diag *d)
{
        char link[PATH_MAX];
        if (!spec->rootfs)
                return 0;
        size_t n = strlen(spec->run_dir);
        if (strncmp(spec->rootfs, spec->run_dir, n) == 0 && spec->rootfs[n] == '/' &&
            !strchr(spec->rootfs + n + 1, '/'))
                target = spec->rootfs + n + 1;
        if (path_join(link, sizeof(link), spec->run_dir, FC_ROOTFS) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", spec->run_dir);
        if (unlink(link) < 0 && errno != ENOENT)
                return vmsnap_diag(d, -errno, "%s: cannot remove: %s", link, strerror(errno));
        if (symlink(target, link) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot link to %s: %s", link, spec->rootfs,
                                   strerror(errno));
        return 0;
}

/* Starts a bare Firecracker on the API socket and reads its version; jailed when the spec
 * has a jail (`from`, `snapfile`: the restore it is started for, else NULL). */
static int fc_start(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                    const char *snapfile, struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        char log[PATH_MAX], pidfile[PATH_MAX];
        if (path_join(log, sizeof(log), spec->run_dir, FC_LOG) < 0 ||
            path_join(pidfile, sizeof(pidfile), spec->run_dir, FC_PIDFILE) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", spec->run_dir);
        _cleanup_free_ struct vmm_confine *c = spec->jail ? calloc(1, sizeof(*c)) : NULL;
        int r = spec->jail && !c ? -ENOMEM : 0;
        vm->jailed = spec->jail != NULL;
        if (r == 0 && vm->jailed)
                r = fc_jail_build(spec, from, snapfile, FC_NAME, c, &vm->in, d);
        if (r == 0)
                r = fc_link_rootfs(spec, vm->jailed ? vm->in.rootfs : spec->rootfs, d);
        if (r < 0)
                return r;
        if (unlink(vm->api_sock) < 0 && errno != ENOENT) /* Firecracker will not bind over it */
                return vmsnap_diag(d, -errno, "%s: cannot remove: %s", vm->api_sock,
                                   strerror(errno));
        char *argv[] = {(char *)(spec->vmm_binary ? spec->vmm_binary : FC_NAME), "--api-sock",
                        vm->api_sock, NULL};
        /* Jailed: /bin/sh makes /run (the run dir) its working directory, then becomes it. */
        char *jailed[] = {"/bin/sh", "-c", "cd " VMM_JAIL_RUN " && exec \"$0\" \"$@\"",
                          vm->in.binary, "--api-sock", VMM_JAIL_RUN "/" FC_API_SOCK, NULL};
        struct vmm_spawn sp = {.name = FC_NAME,
                               .argv = vm->jailed ? jailed : argv,
                               .log_path = log,
                               .cwd = spec->run_dir,
                               .jail = vm->jailed ? &c->spec : NULL};
        r = vmm_process_spawn(&sp, &vm->proc, d);
        if (r < 0)
                return r;
        r = vmm_process_write_pidfile(&vm->proc, pidfile, d);
        if (r == 0)
                r = vmm_process_wait_socket(&vm->proc, vm->api_sock, vmm_process_start_timeout_ms(),
                                            d);
        if (r < 0)
                return r;

        json_t *j = NULL;
        r = fc_call(vm, "GET", "/version", NULL, VMM_HTTP_TIMEOUT_MS, &j, d);
        if (r < 0)
                return r;
        const char *s = json_string_value(json_object_get(j, "firecracker_version"));
        r = s ? vmm_version_parse(s, &vm->v) : -EINVAL;
        json_decref(j);
        if (r < 0)
                return vmsnap_diag(d, -EBADMSG, "%s: GET /version has no firecracker_version",
                                   vm->api_sock);
        vmm_version_format(&vm->v, vm->version, sizeof(vm->version));
        return 0;
}

/* Kills what fc_start started and frees the handle (error paths of boot and restore). */
static void fc_abort(struct vmsnap_vm *vm)
{
        vmm_process_kill(&vm->proc);
        unlink(vm->api_sock);
        fc_free(vm);
}

/* ---- boot --------------------------------------------------------------------------------- */

static int fc_configure(const struct vmsnap_vm_spec *spec, struct vmsnap_vm *vm,
                        struct vmsnap_diag *d)
{
        json_t *mc =
            json_pack("{s:i, s:I, s:b, s:b}", "vcpu_count", (int)spec->vcpus, "mem_size_mib",
                      (json_int_t)(spec->memory >> 20), "smt", 0, "track_dirty_pages", 1);
        int r = fc_call(vm, "PUT", "/machine-config", mc, VMM_HTTP_TIMEOUT_MS, NULL, d);
        if (r < 0)
                return r;

        json_t *bs = json_pack("{s:s, s:s}", "kernel_image_path",
                               vm->jailed ? vm->in.kernel : spec->kernel, "boot_args",
                               spec->cmdline ? spec->cmdline : FC_DEFAULT_CMDLINE);
        if (bs && spec->initrd)
                json_object_set_new(bs, "initrd_path",
                                    json_string(vm->jailed ? vm->in.initrd : spec->initrd));
        r = fc_call(vm, "PUT", "/boot-source", bs, VMM_HTTP_TIMEOUT_MS, NULL, d);
        if (r < 0)
                return r;

        if (spec->rootfs) {
                /* With an initramfs the disk is a data disk the guest mounts itself. */
                json_t *dr =
                    json_pack("{s:s, s:s, s:b, s:b}", "drive_id", "rootfs", "path_on_host",
                              FC_ROOTFS, "is_root_device", spec->initrd == NULL, "is_read_only", 0);
                r = fc_call(vm, "PUT", "/drives/rootfs", dr, VMM_HTTP_TIMEOUT_MS, NULL, d);
                if (r < 0)
                        return r;
        }
        if (spec->net) { /* the same TAP name and MAC in every sandbox (docs/network.md) */
                json_t *ni = json_pack("{s:s, s:s, s:s}", "iface_id", "eth0", "host_dev_name",
                                       VMSNAP_NET_TAP_NAME, "guest_mac", VMSNAP_NET_GUEST_MAC);
                r = fc_call(vm, "PUT", "/network-interfaces/eth0", ni, VMM_HTTP_TIMEOUT_MS, NULL,
                            d);
                if (r < 0)
                        return r;
        }
        json_t *vs = json_pack("{s:i, s:s}", "guest_cid", (int)VMM_GUEST_CID, "uds_path", FC_VSOCK);
        return fc_call(vm, "PUT", "/vsock", vs, VMM_HTTP_TIMEOUT_MS, NULL, d);
}

static int fc_boot(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = NULL;
        int r = fc_check_spec(spec, true, d);
        if (r == 0)
                r = fc_new(spec, &vm, d);
        if (r < 0)
                return r;
        r = fc_start(spec, NULL, NULL, vm, d);
        if (r == 0)
                r = fc_configure(spec, vm, d);
        if (r == 0) {
                json_t *a = json_pack("{s:s}", "action_type", "InstanceStart");
                r = fc_call(vm, "PUT", "/actions", a, vmm_http_memory_timeout_ms(vm->memory), NULL,
                            d);
        }
        if (r < 0) {
                fc_abort(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* ---- restore ------------------------------------------------------------------------------ */

static bool fc_compatible(const char *saved_version, const char *running_version)
{
        struct vmm_version a, b;
        if (!saved_version || !running_version || vmm_version_parse(saved_version, &a) < 0 ||
            vmm_version_parse(running_version, &b) < 0)
                return false;
        return a.major == b.major && a.minor == b.minor;
}

/* Refuses state written by another Firecracker line before asking this one to load it. */
static int fc_check_state_version(struct vmsnap_vm *vm, const char *state_dir,
                                  struct vmsnap_diag *d)
{
        char saved[64];
        int r = vmm_version_read(state_dir, FC_NAME, saved, sizeof(saved), d);
        if (r < 0)
                return r;
        if (fc_compatible(saved, vm->version))
                return 0;
        struct vmm_version s = {0};
        vmm_version_parse(saved, &s);
        return vmsnap_diag(d, -ENOTSUP,
                           "%s: the snapshot was written by Firecracker %s and this Firecracker "
                           "is %s; Firecracker loads only state from its own major.minor line: "
                           "install Firecracker %u.%u.x to resume it",
                           state_dir, saved, vm->version, s.major, s.minor);
}

/* Firecracker 1.13 renamed the load flag enable_diff_snapshots to track_dirty_pages;
 * older releases reject the new name (unknown field). */
static json_t *fc_load_body(const struct vmsnap_vm *vm, const char *snapfile,
                            const struct vmsnap_vm_restore *from)
{
        bool new_name = vm->v.major > 1 || (vm->v.major == 1 && vm->v.minor >= 13);
        return json_pack(
            "{s:s, s:{s:s, s:s}, s:b, s:b}", "snapshot_path",
            vm->jailed ? vm->in.snapfile : snapfile, "mem_backend", "backend_type",
            from->memory_mode == VMSNAP_VM_MEMORY_UFFD ? "Uffd" : "File", "backend_path",
            vm->jailed ? vm->in.memory : from->memory_path,
            new_name ? "track_dirty_pages" : "enable_diff_snapshots", 1, "resume_vm", 0);
}

static int fc_check_restore(const struct vmsnap_vm_restore *from, struct vmsnap_diag *d)
{
        if (!from || !from->state_dir || !from->memory_path)
                return vmsnap_diag(d, -EINVAL,
                                   "firecracker: restore needs a state_dir and a memory_path");
        if (from->memory_mode != VMSNAP_VM_MEMORY_FILE_SHARED &&
            from->memory_mode != VMSNAP_VM_MEMORY_FILE_PRIVATE &&
            from->memory_mode != VMSNAP_VM_MEMORY_UFFD)
                return vmsnap_diag(d, -EINVAL, "firecracker: unknown memory mode %d",
                                   (int)from->memory_mode);
        return 0;
}

static int fc_restore(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                      struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        char snapfile[PATH_MAX];
        struct vmsnap_vm *vm = NULL;
        int r = fc_check_spec(spec, false, d);
        if (r == 0)
                r = fc_check_restore(from, d);
        if (r == 0 && path_join(snapfile, sizeof(snapfile), from->state_dir, FC_SNAPFILE) < 0)
                r = vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", from->state_dir);
        if (r == 0)
                r = fc_new(spec, &vm, d);
        if (r < 0)
                return r;
        r = fc_start(spec, from, snapfile, vm, d);
        if (r == 0)
                r = fc_check_state_version(vm, from->state_dir, d);
        if (r == 0)
                r = fc_call(vm, "PUT", "/snapshot/load", fc_load_body(vm, snapfile, from),
                            vmm_http_memory_timeout_ms(vm->memory), NULL, d);
        if (r < 0) {
                fc_abort(vm); /* a failed load ends the Firecracker process anyway */
                return r;
        }
        vm->has_base = true; /* restored from that snapshot, dirty tracking on since */
        *ret = vm;
        return 0;
}

/* ---- attach, pause, resume ---------------------------------------------------------------- */

static int fc_attach(const struct vmsnap_vm_spec *spec, pid_t pid, struct vmsnap_vm **ret,
                     struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = NULL;
        if (!spec || !spec->run_dir)
                return vmsnap_diag(d, -EINVAL, "firecracker: attach needs the spec's run_dir");
        int r = fc_new(spec, &vm, d);
        if (r < 0)
                return r;
        char needle[PATH_MAX];
        if (spec->jail) /* inside, every jail's socket has the same path: its cgroup tells */
                vmm_confine_attach_needle(spec->jail, needle, sizeof(needle));
        vm->jailed = spec->jail != NULL;
        r = vmm_process_attach(pid, FC_NAME, spec->jail ? needle : vm->api_sock, &vm->proc, d);
        json_t *j = NULL;
        if (r == 0)
                r = fc_call(vm, "GET", "/version", NULL, VMM_HTTP_TIMEOUT_MS, &j, d);
        const char *s = json_string_value(json_object_get(j, "firecracker_version"));
        if (r == 0 && (!s || vmm_version_parse(s, &vm->v) < 0))
                r = vmsnap_diag(d, -EBADMSG, "%s: GET /version has no firecracker_version",
                                vm->api_sock);
        json_decref(j);
        j = NULL;
        if (r == 0)
                r = fc_call(vm, "GET", "/machine-config", NULL, VMM_HTTP_TIMEOUT_MS, &j, d);
        if (r == 0)
                vm->memory = (uint64_t)json_integer_value(json_object_get(j, "mem_size_mib")) << 20;
        json_decref(j);
        if (r < 0) {
                vmm_process_release(&vm->proc);
                fc_free(vm);
                return r;
        }
        vmm_version_format(&vm->v, vm->version, sizeof(vm->version));
        vm->has_base = false; /* unknown since when pages are tracked: next save is Full */
        *ret = vm;
        return 0;
}

static int fc_set_state(struct vmsnap_vm *vm, const char *state, struct vmsnap_diag *d)
{
        if (!vm)
                return vmsnap_diag(d, -EINVAL, "firecracker: no VM");
        return fc_call(vm, "PATCH", "/vm", json_pack("{s:s}", "state", state), VMM_HTTP_TIMEOUT_MS,
                       NULL, d);
}

static int fc_pause(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        return fc_set_state(vm, "Paused", d); /* Firecracker accepts a repeated Paused */
}

static int fc_resume(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        return fc_set_state(vm, "Resumed", d); /* and ignores a repeated Resumed */
}

/* ---- save --------------------------------------------------------------------------------- */

/* Makes the state file durable: Firecracker writes it without fsync. */
static int fc_sync_state(const char *state_dir, struct vmsnap_diag *d)
{
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(state_dir);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: cannot open: %s", state_dir, strerror(-dirfd));
        _cleanup_close_ int fd = openat(dirfd, FC_SNAPFILE, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return vmsnap_diag(d, -errno, "%s/%s: %s", state_dir, FC_SNAPFILE, strerror(errno));
        int r = vmsnap_fs_fsync_dir(dirfd);
        return r < 0 ? vmsnap_diag(d, r, "%s: fsync: %s", state_dir, strerror(-r)) : 0;
}

/* Removes the state and memory files an earlier save of a jailed VM left in its run dir. */
static int fc_unlink_in_run_dir(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        const char *names[] = {FC_SNAPFILE, FC_MEMFILE};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                char p[PATH_MAX];
                if (path_join(p, sizeof(p), vm->run_dir, names[i]) < 0 ||
                    (unlink(p) < 0 && errno != ENOENT))
                        return vmsnap_diag(d, -EIO, "%s: cannot remove %s", vm->run_dir,
                                           names[i]);
        }
        return 0;
}

static int fc_save(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_vm_saved *ret,
                   struct vmsnap_diag *d)
{
        char snapfile[PATH_MAX], memfile[PATH_MAX];
        if (!vm || !state_dir || !ret)
                return vmsnap_diag(d, -EINVAL, "firecracker: save needs a VM and a directory");
        if (path_join(snapfile, sizeof(snapfile), state_dir, FC_SNAPFILE) < 0 ||
            path_join(memfile, sizeof(memfile), state_dir, FC_MEMFILE) < 0 ||
            strlen(memfile) >= sizeof(ret->memory_file))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", state_dir);
        /* A Diff lands in a new file so its holes are exactly the clean pages (Firecracker
         * merges into a memory file that exists with the right size). */
        if ((unlink(memfile) < 0 && errno != ENOENT) || (unlink(snapfile) < 0 && errno != ENOENT))
                return vmsnap_diag(d, -errno, "%s: cannot remove old files: %s", state_dir,
                                   strerror(errno));
        bool diff = vm->has_base;
        /* Jailed, it writes into its run dir (the only place it can) and the files are taken
         * over from there into the state dir. */
        if (vm->jailed && fc_unlink_in_run_dir(vm, d) < 0)
                return -EIO;
        json_t *body = json_pack("{s:s, s:s, s:s}", "snapshot_type", diff ? "Diff" : "Full",
                                 "snapshot_path",
                                 vm->jailed ? VMM_JAIL_RUN "/" FC_SNAPFILE : snapfile,
                                 "mem_file_path",
                                 vm->jailed ? VMM_JAIL_RUN "/" FC_MEMFILE : memfile);
        int r = fc_call(vm, "PUT", "/snapshot/create", body, vmm_http_memory_timeout_ms(vm->memory),
                        NULL, d);
        if (r == 0 && vm->jailed)
                r = vmm_confine_take_file(vm->run_dir, FC_SNAPFILE, state_dir, d);
        if (r == 0 && vm->jailed)
                r = vmm_confine_take_file(vm->run_dir, FC_MEMFILE, state_dir, d);
        if (r == 0)
                r = fc_sync_state(state_dir, d);
        if (r == 0)
                r = vmm_version_write(state_dir, FC_NAME, vm->version, d);
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        snprintf(ret->memory_file, sizeof(ret->memory_file), "%s", memfile);
        ret->source = diff ? VMSNAP_MEM_SOURCE_SPARSE : VMSNAP_MEM_SOURCE_CONTENT;
        ret->memory_file_temporary = true;
        snprintf(ret->version, sizeof(ret->version), "%s", vm->version);
        vm->has_base = true;
        return 0;
}

/* ---- the rest ----------------------------------------------------------------------------- */

static int fc_agent_connect(struct vmsnap_vm *vm, int timeout_ms, int *ret_fd,
                            struct vmsnap_diag *d)
{
        char uds[PATH_MAX];
        if (!vm || !ret_fd)
                return vmsnap_diag(d, -EINVAL, "firecracker: agent_connect needs a VM");
        if (path_join(uds, sizeof(uds), vm->run_dir, FC_VSOCK) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", vm->run_dir);
        return vmm_hvsock_connect(uds, VMM_AGENT_VSOCK_PORT, timeout_ms, ret_fd, d);
}

static void fc_destroy(struct vmsnap_vm *vm)
{
        char pidfile[PATH_MAX];
        if (!vm)
                return;
        vmm_process_kill(&vm->proc);
        unlink(vm->api_sock);
        if (path_join(pidfile, sizeof(pidfile), vm->run_dir, FC_PIDFILE) == 0)
                unlink(pidfile);
        fc_free(vm);
}

static void fc_detach(struct vmsnap_vm *vm)
{
        if (!vm)
                return;
        vmm_process_release(&vm->proc);
        fc_free(vm);
}

static pid_t fc_pid(const struct vmsnap_vm *vm)
{
        return vm ? vm->proc.pid : 0;
}

static int fc_probe(const char *binary, char *ret_version, size_t size, struct vmsnap_diag *d)
{
        return vmm_version_probe(binary, FC_NAME, FC_INSTALL_HINT, ret_version, size, d);
}

const struct vmsnap_vmm_driver vmsnap_vmm_firecracker = {
    .name = FC_NAME,
    .disk_format = "raw",
    .lazy_uffd = true,
    .probe = fc_probe,
    .compatible = fc_compatible,
    .boot = fc_boot,
    .restore = fc_restore,
    .attach = fc_attach,
    .pause = fc_pause,
    .resume = fc_resume,
    .save = fc_save,
    .agent_connect = fc_agent_connect,
    .destroy = fc_destroy,
    .detach = fc_detach,
    .pid = fc_pid,
};
