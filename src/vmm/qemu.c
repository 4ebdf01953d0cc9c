/* The QEMU driver: qemu-system-x86_64 -machine microvm, guest RAM in a memory-backend-file
 * (share=on) that the memory layer diffs, device state through the migration stream with
 * x-ignore-shared (QMP `getfd` + an `fd:` URI), restore = the same command line plus
 * -incoming defer. docs/vmm.md "QEMU" has the command lines, the QMP sequences, the files and
 * the rules; docs/guest.md the guest they run.
 *
 * Everything a restore needs to rebuild the exact command line is in the snapshot directory:
 * vmm.json (the machine: accel, cpu, vcpus, memory, kernel command line, QEMU version), the
 * kernel and initramfs (hard links), and snapfile (the device state). A running VM's run
 * directory holds the same vmm.json plus the paths that belong to that run, so that attach
 * after a daemon restart knows the VM as well as boot did. */
#include <vmsnap/vmm.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/accel.h"
#include "vmm/process.h"
#include "vmm/qemu-machine.h"
#include "vmm/qmp.h"
#include "vmm/version.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QEMU_NAME         "qemu"
#define QEMU_HINT         "apt-get install qemu-system-x86 (QEMU 7.2 or later)"
#define QEMU_FDNAME       "vmsnap-migration" /* getfd name of the migration stream's fd */
#define QEMU_POLL_MS      5
#define QEMU_EXIT_WAIT_MS 2000 /* how long a failing QEMU gets to exit, for its status */

#define SUN_LEN_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

struct vmsnap_vm {
        struct vmm_process proc;
        struct vmm_qmp *qmp;
        struct qemu_machine machine;
        char run_dir[PATH_MAX];
        char memory_file[PATH_MAX];
        bool memory_shared; /* share=on: the memory file holds guest RAM (save is possible) */
        char qmp_sock[SUN_LEN_MAX];
        char agent_sock[SUN_LEN_MAX];
};

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

/* Timeouts of state transfers: 10 s plus 1 s per 128 MiB of guest memory. */
static int timeout_for(uint64_t memory)
{
        return 10000 + (int)(memory / (128ull << 20)) * 1000;
}

static int path_join(char *out, size_t size, const char *dir, const char *name)
{
        int n = snprintf(out, size, "%s/%s", dir, name);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* The kernel and initramfs a VM starts from, in a run or snapshot directory. */
struct boot_files {
        char kernel[PATH_MAX], initrd[PATH_MAX];
};

static int boot_files_in(const char *dir, struct boot_files *ret, struct vmsnap_diag *d)
{
        if (path_join(ret->kernel, sizeof(ret->kernel), dir, QEMU_KERNEL) < 0 ||
            path_join(ret->initrd, sizeof(ret->initrd), dir, QEMU_INITRD) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", dir);
        return 0;
}

/* ---- versions -------------------------------------------------------------------------------- */

static pthread_mutex_t version_lock = PTHREAD_MUTEX_INITIALIZER;
static char version_binary[PATH_MAX] = "\1"; /* the binary version_text belongs to */
static char version_text[32];

/* "X.Y.Z" of binary (NULL: qemu-system-x86_64 from $PATH), run once per binary. */
static int qemu_version(const char *binary, char out[32], struct vmsnap_diag *d)
{
        const char *key = binary ? binary : "";
        pthread_mutex_lock(&version_lock);
        int r = 0;
        if (strcmp(version_binary, key) != 0) {
                r = vmm_version_probe(binary, QEMU_BINARY, QEMU_HINT, version_text,
                                      sizeof(version_text), d);
                if (r == 0)
                        snprintf(version_binary, sizeof(version_binary), "%s", key);
        }
        if (r == 0)
                memcpy(out, version_text, 32);
        pthread_mutex_unlock(&version_lock);
        return r;
}

/* Splits "X.Y.Z[/accel]". */
static bool parse_full_version(const char *s, struct vmm_version *v, enum vmm_accel *accel)
{
        if (!s || vmm_version_parse(s, v) < 0)
                return false;
        const char *slash = strchr(s, '/');
        *accel = slash ? vmm_accel_parse(slash + 1) : VMM_ACCEL_UNKNOWN;
        return !slash || *accel != VMM_ACCEL_UNKNOWN;
}

static int qemu_probe(const char *binary, char *ret_version, size_t size, struct vmsnap_diag *d)
{
        char v[32];
        int r = qemu_version(binary, v, d);
        if (r < 0)
                return r;
        enum vmm_accel a = vmm_accel_known();
        if (ret_version && a != VMM_ACCEL_UNKNOWN)
                snprintf(ret_version, size, "%s/%s", v, vmm_accel_name(a));
        else if (ret_version)
                snprintf(ret_version, size, "%s", v);
        return 0;
}

/* Same QEMU major.minor (the migration stream format of one release series) and, when both
 * sides name one, the same accelerator (CPU state saved under KVM does not load under TCG and
 * the reverse). */
static bool qemu_compatible(const char *saved_version, const char *running_version)
{
        struct vmm_version s, r;
        enum vmm_accel sa, ra;
        if (!parse_full_version(saved_version, &s, &sa) ||
            !parse_full_version(running_version, &r, &ra))
                return false;
        if (s.major != r.major || s.minor != r.minor)
                return false;
        return sa == VMM_ACCEL_UNKNOWN || ra == VMM_ACCEL_UNKNOWN || sa == ra;
}

/* ---- the run directory's vmm.json ------------------------------------------------------------ */

/* run_dir/vmm.json: the machine plus this run's memory file and mapping. */
static int write_run_config(const struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        json_t *o = qemu_machine_to_json(&vm->machine);
        if (o && json_object_update_new(o, json_pack("{s:s, s:b}", "memory_file", vm->memory_file,
                                                     "share", vm->memory_shared)) < 0) {
                json_decref(o);
                o = NULL;
        }
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(vm->run_dir);
        if (dfd < 0) {
                json_decref(o);
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", vm->run_dir, strerror(-dfd));
        }
        return qemu_machine_write_file(dfd, vm->run_dir, o, d);
}

static int read_run_config(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        json_t *o = NULL;
        int r = qemu_machine_read_file(vm->run_dir, &o, d);
        if (r == 0)
                r = qemu_machine_from_json(o, vm->run_dir, &vm->machine, d);
        const char *mem = json_string_value(json_object_get(o, "memory_file"));
        if (r == 0 && (!mem || strlen(mem) >= sizeof(vm->memory_file)))
                r = vmsnap_diag(d, -EBADMSG, "%s/%s: no memory_file", vm->run_dir, QEMU_CONFIG);
        if (r == 0)
                memcpy(vm->memory_file, mem, strlen(mem) + 1);
        vm->memory_shared = json_is_true(json_object_get(o, "share"));
        json_decref(o);
        return r;
}

/* ---- files ----------------------------------------------------------------------------------- */

/* Makes dst_dirfd/name the same file as src_path (hard link, else reflink or copy), replacing
 * an older file of that name atomically. */
static int install_file(const char *src_path, int dst_dirfd, const char *name,
                        struct vmsnap_diag *d)
{
        _cleanup_free_ char *dir = strdup(src_path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (!slash)
                return vmsnap_diag(d, -EINVAL, "%s: not an absolute path", src_path);
        *slash = '\0';
        _cleanup_close_ int sfd = vmsnap_fs_open_dir(dir[0] ? dir : "/");
        if (sfd < 0)
                return vmsnap_diag(d, sfd, "%s: cannot open its directory: %s", src_path,
                                   strerror(-sfd));
        _cleanup_close_ int a = openat(sfd, slash + 1, O_RDONLY | O_CLOEXEC);
        if (a < 0)
                return vmsnap_diag(d, -errno, "%s: %s", src_path, strerror(errno));
        _cleanup_close_ int b = openat(dst_dirfd, name, O_RDONLY | O_CLOEXEC);
        if (b >= 0 && vmsnap_fs_same_file(a, b))
                return 0; /* rename() would do nothing and leave the temporary behind */
        char tmp[300];
        snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
        unlinkat(dst_dirfd, tmp, 0);
        int r = vmsnap_fs_link_or_copy(sfd, slash + 1, dst_dirfd, tmp, d);
        if (r < 0) {
                vmsnap_diag_prefix(d, "%s", src_path);
                return r;
        }
        if (renameat(dst_dirfd, tmp, dst_dirfd, name) < 0) {
                r = -errno;
                unlinkat(dst_dirfd, tmp, 0);
                return vmsnap_diag(d, r, "%s: cannot rename into place: %s", name, strerror(-r));
        }
        return 0;
}

/* Links the kernel and initramfs a VM starts from into its run directory: the VM then
 * depends on nothing outside it, and save() links these very files into the snapshot even
 * when the guest image was rebuilt meanwhile. */
static int install_boot_files(const char *run_dir, const char *kernel, const char *initrd,
                              struct vmsnap_diag *d)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(run_dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", run_dir, strerror(-dfd));
        int r = install_file(kernel, dfd, QEMU_KERNEL, d);
        if (r == 0 && initrd)
                r = install_file(initrd, dfd, QEMU_INITRD, d);
        return r;
}

/* Creates the memory file of a boot (sparse, the guest's size) or checks an existing one. */
static int prepare_memory_file(const char *path, uint64_t size, bool create, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: memory file: %s", path, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        if (create && st.st_size == 0 && ftruncate(fd, (off_t)size) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot size to %llu bytes: %s", path,
                                   (unsigned long long)size, strerror(errno));
        if (create && st.st_size == 0)
                return 0;
        if ((uint64_t)st.st_size != size)
                return vmsnap_diag(d, -EINVAL, "%s: memory file has %lld bytes, the VM %llu", path,
                                   (long long)st.st_size, (unsigned long long)size);
        return 0;
}

/* Removes the regular files of a scratch directory we made, then the directory. */
static void remove_scratch(const char *dir)
{
        static const char *const names[] = {QEMU_QMP_SOCK, QEMU_AGENT_SOCK, QEMU_LOG,
                                            QEMU_PIDFILE,  QEMU_CONSOLE,    "memory"};
        char p[PATH_MAX];
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (path_join(p, sizeof(p), dir, names[i]) == 0)
                        unlink(p);
        rmdir(dir);
}

/* The last lines (up to 3) of a log, joined with "|", into out. */
static void log_tail(const char *path, char *out, size_t size)
{
        out[0] = '\0';
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
        if (end <= 0)
                return;
        char buf[2049];
        uint64_t off = end > 2048 ? (uint64_t)end - 2048 : 0;
        ssize_t n = vmsnap_fs_pread_full(fd, buf, sizeof(buf) - 1, off);
        if (n <= 0)
                return;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                n--;
        buf[n] = '\0';
        char *first = buf + n;
        for (int lines = 0; first > buf && lines < 3; lines += *first == '\n')
                first--;
        if (*first == '\n')
                first++;
        for (char *p = first; *p; p++)
                if (*p == '\n')
                        *p = '|';
        size_t len = MIN(strlen(first), size - 1);
        memcpy(out, first, len);
        out[len] = '\0';
}

/* ---- the process ----------------------------------------------------------------------------- */

/* Turns a failure on a QEMU that is exiting into "qemu (pid N) exited with status 1 (...)"
 * plus the end of its log; other failures get the pid as prefix. Returns the error. */
static int explain(struct vmm_process *p, int r, struct vmsnap_diag *d)
{
        bool transport = r == -ECONNRESET || r == -ECONNREFUSED || r == -ENOENT ||
                         r == -ETIMEDOUT || r == -EPIPE || r == -ESRCH;
        for (int64_t end = now_ms() + QEMU_EXIT_WAIT_MS; transport && now_ms() < end;) {
                if (vmm_process_exited(p))
                        break;
                sleep_ms(QEMU_POLL_MS * 4);
        }
        if (!transport || !vmm_process_exited(p)) {
                vmsnap_diag_prefix(d, "qemu (pid %d)", (int)p->pid);
                return r;
        }
        char how[96], tail[600], msg[sizeof(d->msg)] = "";
        vmm_process_describe_exit(p, how, sizeof(how));
        log_tail(p->log_path, tail, sizeof(tail));
        if (d)
                memcpy(msg, d->msg, sizeof(msg));
        return vmsnap_diag(d, -ESRCH, "qemu (pid %d) %s (%.300s); its log ends: %s (%s)",
                           (int)p->pid, how, msg, tail[0] ? tail : "(empty)", p->log_path);
}

/* A handle for spec's run directory with its socket paths (no process yet). */
static int vm_new(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        vm->proc.pidfd = -1;
        if (snprintf(vm->run_dir, sizeof(vm->run_dir), "%s", spec->run_dir) >=
                    (int)sizeof(vm->run_dir) ||
            path_join(vm->qmp_sock, sizeof(vm->qmp_sock), spec->run_dir, QEMU_QMP_SOCK) < 0 ||
            path_join(vm->agent_sock, sizeof(vm->agent_sock), spec->run_dir, QEMU_AGENT_SOCK) < 0) {
                free(vm);
                return vmsnap_diag(d, -ENAMETOOLONG,
                                   "%s: run directory path too long for a "
                                   "Unix socket (at most %zu bytes)",
                                   spec->run_dir, SUN_LEN_MAX - sizeof(QEMU_AGENT_SOCK) - 1);
        }
        *ret = vm;
        return 0;
}

/* Starts QEMU for l and connects to its monitor. On failure the process is killed. */
static int launch(const struct qemu_launch *l, struct vmm_process *proc, struct vmm_qmp **ret_qmp,
                  struct vmsnap_diag *d)
{
        char qmp[PATH_MAX], agent[PATH_MAX], log[PATH_MAX];
        if (path_join(qmp, sizeof(qmp), l->run_dir, QEMU_QMP_SOCK) < 0 ||
            path_join(agent, sizeof(agent), l->run_dir, QEMU_AGENT_SOCK) < 0 ||
            path_join(log, sizeof(log), l->run_dir, QEMU_LOG) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", l->run_dir);
        unlink(qmp); /* a stale socket would look like a live monitor */
        unlink(agent);
        char **argv = NULL;
        int r = qemu_argv_build(l, &argv);
        struct vmm_spawn sp = {.name = QEMU_NAME, .argv = argv, .log_path = log, .cwd = l->run_dir};
        if (r < 0)
                r = vmsnap_diag(d, r, "out of memory");
        else
                r = vmm_process_spawn(&sp, proc, d);
        qemu_argv_free(argv);
        if (r < 0)
                return r;
        int timeout = vmm_process_start_timeout_ms();
        r = vmm_process_wait_socket(proc, qmp, timeout, d);
        if (r == -ESRCH) /* told again with more of its log (an error can span lines) */
                r = explain(proc, vmsnap_diag(d, -ESRCH, "before creating %s", qmp), d);
        if (r == 0) {
                r = vmm_qmp_connect(qmp, timeout, ret_qmp, d);
                if (r < 0)
                        r = explain(proc, r, d);
        }
        if (r < 0)
                vmm_process_kill(proc);
        return r;
}

/* One QMP command on vm; failures on a dead QEMU are explained. */
static int qmp(struct vmsnap_vm *vm, const char *command, json_t *args, int fd, int timeout_ms,
               json_t **ret, struct vmsnap_diag *d)
{
        if (!vm->qmp) {
                json_decref(args);
                return vmsnap_diag(d, -ENOTCONN, "qemu (pid %d): no monitor connection",
                                   (int)vm->proc.pid);
        }
        int r = vmm_qmp_execute(vm->qmp, command, args, fd, timeout_ms, ret, d);
        return r < 0 ? explain(&vm->proc, r, d) : 0;
}

/* The run state ("running", "paused", "inmigrate", "postmigrate", ...) into out. */
static int query_status(struct vmsnap_vm *vm, char *out, size_t size, struct vmsnap_diag *d)
{
        json_t *st = NULL;
        int r = qmp(vm, "query-status", NULL, -1, VMM_QMP_TIMEOUT_MS, &st, d);
        if (r < 0)
                return r;
        const char *s = json_string_value(json_object_get(st, "status"));
        snprintf(out, size, "%s", s ? s : "");
        json_decref(st);
        return s ? 0
                 : vmsnap_diag(d, -EPROTO, "qemu (pid %d): query-status without a status",
                               (int)vm->proc.pid);
}

static int set_ignore_shared(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        json_t *args = json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                                 "x-ignore-shared", "state", 1);
        return qmp(vm, "migrate-set-capabilities", args, -1, VMM_QMP_TIMEOUT_MS, NULL, d);
}

/* Hands fd to QEMU under QEMU_FDNAME (for an fd: migration URI). */
static int pass_fd(struct vmsnap_vm *vm, int fd, struct vmsnap_diag *d)
{
        return qmp(vm, "getfd", json_pack("{s:s}", "fdname", QEMU_FDNAME), fd, VMM_QMP_TIMEOUT_MS,
                   NULL, d);
}

static void vm_free(struct vmsnap_vm *vm)
{
        vmm_qmp_close(vm->qmp);
        free(vm);
}

/* ---- KVM probe ------------------------------------------------------------------------------- */

struct probe_ctx {
        const struct vmsnap_vm_spec *spec;
        const char *kernel, *initrd;
        const char *version;
};

/* Sends a health request on the agent socket and waits for its answer until deadline. */
static int agent_health(const char *sock, struct vmm_process *p, int64_t deadline,
                        struct vmsnap_diag *d)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(sock) >= sizeof(sa.sun_path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long for a socket", sock);
        memcpy(sa.sun_path, sock, strlen(sock) + 1);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        while (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                if (vmm_process_exited(p) || now_ms() >= deadline)
                        return vmsnap_diag(d, -ETIMEDOUT, "the agent socket never opened");
                sleep_ms(20);
        }
        static const char req[] = "{\"op\":\"health\",\"id\":\"accel-probe\"}\n";
        if (fd < 0 || send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1)
                return vmsnap_diag(d, -EIO, "cannot send to the guest agent");
        char buf[512];
        size_t len = 0;
        while (len < sizeof(buf) - 1 && !memchr(buf, '\n', len)) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int64_t left = deadline - now_ms();
                if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
                        return vmsnap_diag(d, -ETIMEDOUT, "no answer from the guest agent");
                ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
                if (n <= 0)
                        return vmsnap_diag(d, -ECONNRESET, "QEMU closed the agent socket");
                len += (size_t)n;
        }
        buf[len] = '\0';
        return strstr(buf, "\"ok\":true") ? 0 : vmsnap_diag(d, -EIO, "agent: %.200s", buf);
}

/* Classifies a failed probe: -ENODEV when it shows that KVM does not work (the guest hung
 * in a running QEMU, or QEMU's log speaks of KVM), else r (inconclusive). */
static int probe_verdict(struct vmm_process *p, const char *dir, int r)
{
        if (p->pid > 0 && !vmm_process_exited(p))
                return -ENODEV;
        char log[PATH_MAX], tail[600];
        if (path_join(log, sizeof(log), dir, QEMU_LOG) < 0)
                return r;
        log_tail(log, tail, sizeof(tail));
        return strcasestr(tail, "kvm") ? -ENODEV : r;
}

/* Boots the guest without a disk under KVM in a scratch directory (RAM share=off on a
 * sparse file: nothing is written to disk) and waits for the agent's answer. */
static int probe_kvm(void *arg, int timeout_ms, struct vmsnap_diag *d)
{
        const struct probe_ctx *ctx = arg;
        const char *tmp = getenv("TMPDIR");
        char dir[PATH_MAX], mem[PATH_MAX + 16];
        snprintf(dir, sizeof(dir), "%s/vmsnap-kvm-probe.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir))
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", dir, strerror(errno));
        snprintf(mem, sizeof(mem), "%s/memory", dir);
        struct vmsnap_vm_spec s = *ctx->spec;
        s.rootfs = NULL;
        s.cmdline = NULL;
        struct qemu_machine m;
        struct vmm_process proc = {.pidfd = -1};
        struct vmm_qmp *q = NULL;
        int r = qemu_machine_init(&s, VMM_ACCEL_KVM, ctx->version, &m, d);
        if (r == 0)
                r = prepare_memory_file(mem, m.memory, true, d);
        struct qemu_launch l = {.machine = &m,
                                .binary = s.vmm_binary,
                                .run_dir = dir,
                                .kernel = ctx->kernel,
                                .initrd = ctx->initrd,
                                .memory_file = mem};
        if (r == 0)
                r = launch(&l, &proc, &q, d);
        if (r == 0) {
                char sock[PATH_MAX + 16];
                snprintf(sock, sizeof(sock), "%s/%s", dir, QEMU_AGENT_SOCK);
                r = agent_health(sock, &proc, now_ms() + timeout_ms, d);
                if (r < 0)
                        vmsnap_diag_prefix(d,
                                           "KVM probe: /dev/kvm opens but the guest did not "
                                           "answer within %d ms",
                                           timeout_ms);
        }
        if (r < 0)
                r = probe_verdict(&proc, dir, r);
        vmm_qmp_close(q);
        vmm_process_kill(&proc);
        remove_scratch(dir);
        return r;
}

/* The run directories' parent, where the accelerator verdict is remembered. */
static int verdict_dir(const char *run_dir, char out[PATH_MAX], struct vmsnap_diag *d)
{
        if (path_join(out, PATH_MAX, run_dir, "..") < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", run_dir);
        return 0;
}

/* ---- boot ------------------------------------------------------------------------------------ */

/* Validates what boot (boot = true) or restore needs from a spec. */
static int check_spec(const struct vmsnap_vm_spec *spec, bool boot, struct vmsnap_diag *d)
{
        if (!spec || !spec->id || !spec->run_dir || !spec->memory_file)
                return vmsnap_diag(d, -EINVAL,
                                   "qemu: the spec needs an id, a run_dir and a "
                                   "memory_file");
        /* A restore takes vcpus and memory from the snapshot; non-zero ones must match it. */
        if ((boot || spec->vcpus) && (spec->vcpus < 1 || spec->vcpus > QEMU_MAX_VCPUS))
                return vmsnap_diag(d, -EINVAL, "qemu: %u vCPUs (1..%u)", spec->vcpus,
                                   QEMU_MAX_VCPUS);
        if ((boot || spec->memory) && (spec->memory == 0 || spec->memory % (2u << 20)))
                return vmsnap_diag(d, -EINVAL,
                                   "qemu: memory %llu is not a non-zero multiple "
                                   "of 2 MiB",
                                   (unsigned long long)spec->memory);
        if (boot && (!spec->kernel || spec->kernel[0] != '/'))
                return vmsnap_diag(d, -EINVAL, "qemu: boot needs an absolute kernel path");
        if (spec->rootfs_format && strcmp(spec->rootfs_format, "qcow2") != 0 &&
            strcmp(spec->rootfs_format, "raw") != 0)
                return vmsnap_diag(d, -EINVAL, "qemu: disk format '%s' (qcow2 or raw)",
                                   spec->rootfs_format);
        return 0;
}

/* The accelerator for a new VM of spec, probing KVM once per host when it must. */
static int choose_accel(const struct vmsnap_vm_spec *spec, const char *kernel, const char *initrd,
                        const char *version, enum vmm_accel *ret, struct vmsnap_diag *d)
{
        char vdir[PATH_MAX];
        int r = verdict_dir(spec->run_dir, vdir, d);
        if (r < 0)
                return r;
        struct probe_ctx ctx = {
                .spec = spec, .kernel = kernel, .initrd = initrd, .version = version};
        struct vmm_accel_choice c = {.verdict_dir = vdir,
                                     .qemu_version = version,
                                     .probe = probe_kvm,
                                     .probe_ctx = &ctx};
        return vmm_accel_choose(&c, ret, d);
}

/* Starts the process of vm (boot or restore) from its config and run directory. */
static int start(struct vmsnap_vm *vm, const struct vmsnap_vm_spec *spec, bool incoming,
                 struct vmsnap_diag *d)
{
        struct boot_files f;
        int r = boot_files_in(vm->run_dir, &f, d);
        if (r == 0)
                r = write_run_config(vm, d); /* before the process: attach needs it */
        if (r < 0)
                return r;
        struct qemu_launch l = {.machine = &vm->machine,
                                .binary = spec->vmm_binary,
                                .run_dir = vm->run_dir,
                                .kernel = f.kernel,
                                .initrd = f.initrd,
                                .memory_file = vm->memory_file,
                                .share = vm->memory_shared,
                                .rootfs = spec->rootfs,
                                .incoming = incoming};
        return launch(&l, &vm->proc, &vm->qmp, d);
}

static int qemu_boot(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret,
                     struct vmsnap_diag *d)
{
        int r = check_spec(spec, true, d);
        if (r < 0)
                return r;
        char version[32];
        enum vmm_accel accel;
        struct vmsnap_vm *vm = NULL;
        r = qemu_version(spec->vmm_binary, version, d);
        if (r == 0)
                r = vm_new(spec, &vm, d);
        if (r < 0)
                return r;
        snprintf(vm->memory_file, sizeof(vm->memory_file), "%s", spec->memory_file);
        vm->memory_shared = true;
        /* Checked here so that a missing file is not taken for a KVM failure by the probe. */
        const char *missing = access(spec->kernel, R_OK) < 0                   ? spec->kernel
                              : spec->initrd && access(spec->initrd, R_OK) < 0 ? spec->initrd
                                                                               : NULL;
        if (missing)
                r = vmsnap_diag(d, -errno, "qemu: %s: %s", missing, strerror(errno));
        if (r == 0)
                r = choose_accel(spec, spec->kernel, spec->initrd, version, &accel, d);
        if (r == 0)
                r = qemu_machine_init(spec, accel, version, &vm->machine, d);
        if (r == 0)
                r = prepare_memory_file(vm->memory_file, spec->memory, true, d);
        if (r == 0)
                r = install_boot_files(vm->run_dir, spec->kernel, spec->initrd, d);
        if (r == 0)
                r = start(vm, spec, false, d);
        char status[32] = "";
        if (r == 0)
                r = query_status(vm, status, sizeof(status), d);
        if (r == 0 && strcmp(status, "running") != 0)
                r = vmsnap_diag(d, -EIO, "qemu (pid %d) is %s after boot, not running",
                                (int)vm->proc.pid, status);
        if (r < 0) {
                vmm_process_kill(&vm->proc);
                vm_free(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* ---- restore --------------------------------------------------------------------------------- */

/* Checks that this host and spec can run the machine a snapshot describes. */
static int check_restorable(const struct vmsnap_vm_spec *spec, const char *state_dir,
                            const struct qemu_machine *c, const struct boot_files *f,
                            struct vmsnap_diag *d)
{
        char running[32];
        int r = qemu_version(spec->vmm_binary, running, d);
        if (r < 0)
                return r;
        if (!qemu_compatible(c->qemu_version, running))
                return vmsnap_diag(d, -EPROTONOSUPPORT,
                                   "%s: state of QEMU %s; the installed "
                                   "QEMU %s cannot load it (the major.minor must match)",
                                   state_dir, c->qemu_version, running);
        if ((spec->vcpus && spec->vcpus != c->vcpus) || (spec->memory && spec->memory != c->memory))
                return vmsnap_diag(d, -EINVAL,
                                   "%s: the snapshot has %u vCPUs and %llu MiB; the "
                                   "spec asks for %u and %llu MiB",
                                   state_dir, c->vcpus, (unsigned long long)(c->memory >> 20),
                                   spec->vcpus, (unsigned long long)(spec->memory >> 20));
        if (c->disk && !spec->rootfs)
                return vmsnap_diag(d, -EINVAL, "%s: the snapshot has a disk; the spec gives none",
                                   state_dir);
        if (c->accel != VMM_ACCEL_KVM)
                return 0; /* TCG runs anywhere */
        enum vmm_accel host;
        r = choose_accel(spec, f->kernel, c->initrd ? f->initrd : NULL, running, &host, d);
        if (r == 0 && host != VMM_ACCEL_KVM)
                r = vmsnap_diag(d, -EPROTONOSUPPORT,
                                "%s: the snapshot was taken under KVM and "
                                "KVM does not work on this host (%s)",
                                state_dir, vmm_accel_name(host));
        return r;
}

/* Loads snapfile into a QEMU started with -incoming defer and waits until it is paused. */
static int load_state(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        if (path_join(path, sizeof(path), state_dir, QEMU_SNAPFILE) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", state_dir);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        int r = set_ignore_shared(vm, d);
        if (r == 0)
                r = pass_fd(vm, fd, d);
        if (r == 0)
                r = qmp(vm, "migrate-incoming", json_pack("{s:s}", "uri", "fd:" QEMU_FDNAME), -1,
                        VMM_QMP_TIMEOUT_MS, NULL, d);
        int64_t deadline = now_ms() + timeout_for(vm->machine.memory);
        char status[32] = "inmigrate";
        while (r == 0 && strcmp(status, "inmigrate") == 0) {
                r = query_status(vm, status, sizeof(status), d);
                if (r == 0 && strcmp(status, "inmigrate") == 0 && now_ms() >= deadline)
                        r = vmsnap_diag(d, -ETIMEDOUT, "qemu (pid %d): %s not loaded in %d ms",
                                        (int)vm->proc.pid, path, timeout_for(vm->machine.memory));
                if (r == 0 && strcmp(status, "inmigrate") == 0)
                        sleep_ms(QEMU_POLL_MS);
        }
        if (r == 0 && strcmp(status, "paused") != 0)
                r = vmsnap_diag(d, -EIO,
                                "qemu (pid %d): after loading %s the VM is %s, not "
                                "paused",
                                (int)vm->proc.pid, path, status);
        return r;
}

/* The memory file of a restore and how it is mapped. */
static int restore_memory(struct vmsnap_vm *vm, const struct vmsnap_vm_spec *spec,
                          const struct vmsnap_vm_restore *from, struct vmsnap_diag *d)
{
        if (from->memory_mode == VMSNAP_VM_MEMORY_UFFD)
                return vmsnap_diag(d, -EOPNOTSUPP,
                                   "qemu: lazy (userfaultfd) restore needs "
                                   "QEMU postcopy from a live source; QEMU 7.2 cannot load RAM "
                                   "lazily from a file: use a memory file");
        if (from->memory_mode != VMSNAP_VM_MEMORY_FILE_SHARED &&
            from->memory_mode != VMSNAP_VM_MEMORY_FILE_PRIVATE)
                return vmsnap_diag(d, -EINVAL, "qemu: unknown memory mode %d",
                                   (int)from->memory_mode);
        const char *path = from->memory_path ? from->memory_path : spec->memory_file;
        if (!path || snprintf(vm->memory_file, sizeof(vm->memory_file), "%s", path) >=
                             (int)sizeof(vm->memory_file))
                return vmsnap_diag(d, -EINVAL, "qemu: restore needs a memory file path");
        vm->memory_shared = from->memory_mode == VMSNAP_VM_MEMORY_FILE_SHARED;
        return prepare_memory_file(vm->memory_file, vm->machine.memory, false, d);
}

static int qemu_restore(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                        struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        if (!from || !from->state_dir)
                return vmsnap_diag(d, -EINVAL, "qemu: restore needs a state directory");
        int r = check_spec(spec, false, d);
        struct vmsnap_vm *vm = NULL;
        json_t *o = NULL;
        if (r == 0)
                r = vm_new(spec, &vm, d);
        if (r < 0)
                return r;
        struct boot_files f;
        r = boot_files_in(from->state_dir, &f, d);
        if (r == 0) { /* refuses another driver's state with a clear message */
                char saved_by[64];
                r = vmm_version_read(from->state_dir, QEMU_NAME, saved_by, sizeof(saved_by), d);
        }
        if (r == 0)
                r = qemu_machine_read_file(from->state_dir, &o, d);
        if (r == 0)
                r = qemu_machine_from_json(o, from->state_dir, &vm->machine, d);
        json_decref(o);
        if (r == 0)
                r = check_restorable(spec, from->state_dir, &vm->machine, &f, d);
        if (r == 0)
                r = restore_memory(vm, spec, from, d);
        if (r == 0)
                r = install_boot_files(vm->run_dir, f.kernel, vm->machine.initrd ? f.initrd : NULL,
                                       d);
        if (r == 0)
                r = start(vm, spec, true, d);
        if (r == 0)
                r = load_state(vm, from->state_dir, d);
        if (r < 0) {
                vmm_process_kill(&vm->proc);
                vm_free(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* ---- attach, pause, resume ------------------------------------------------------------------- */

static int qemu_attach(const struct vmsnap_vm_spec *spec, pid_t pid, struct vmsnap_vm **ret,
                       struct vmsnap_diag *d)
{
        if (!spec || !spec->run_dir)
                return vmsnap_diag(d, -EINVAL, "qemu: attach needs the run directory");
        struct vmsnap_vm *vm = NULL;
        int r = vm_new(spec, &vm, d);
        if (r < 0)
                return r;
        _cleanup_free_ char *esc = qemu_opt_escape(vm->qmp_sock);
        char needle[PATH_MAX + 16];
        snprintf(needle, sizeof(needle), "path=%s,", esc ? esc : vm->qmp_sock);
        r = read_run_config(vm, d);
        if (r == 0)
                r = vmm_process_attach(pid, QEMU_NAME, needle, &vm->proc, d);
        if (r == 0 &&
            path_join(vm->proc.log_path, sizeof(vm->proc.log_path), vm->run_dir, QEMU_LOG) < 0)
                r = vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", vm->run_dir);
        if (r == 0) {
                r = vmm_qmp_connect(vm->qmp_sock, vmm_process_start_timeout_ms(), &vm->qmp, d);
                if (r < 0)
                        r = explain(&vm->proc, r, d);
        }
        if (r < 0) {
                vmm_process_release(&vm->proc);
                vm_free(vm);
                return r;
        }
        char vdir[PATH_MAX];
        struct vmm_accel_choice c = {.verdict_dir = vdir, .qemu_version = vm->machine.qemu_version};
        enum vmm_accel ignore;
        if (verdict_dir(vm->run_dir, vdir, NULL) == 0) /* learns the verdict, never probes */
                vmm_accel_choose(&c, &ignore, NULL);
        *ret = vm;
        return 0;
}

static int qemu_pause(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        if (!vm)
                return vmsnap_diag(d, -EINVAL, "qemu: no VM");
        return qmp(vm, "stop", NULL, -1, VMM_QMP_TIMEOUT_MS, NULL, d);
}

/* `cont` also leaves "postmigrate" (after a save of a VM that carries on): QEMU then takes
 * back the disk images it released for a migration target. */
static int qemu_resume(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        if (!vm)
                return vmsnap_diag(d, -EINVAL, "qemu: no VM");
        return qmp(vm, "cont", NULL, -1, VMM_QMP_TIMEOUT_MS, NULL, d);
}

/* ---- save ------------------------------------------------------------------------------------ */

/* Polls query-migrate until the outgoing migration completed. */
static int wait_migration(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        int timeout = timeout_for(vm->machine.memory);
        int64_t deadline = now_ms() + timeout;
        for (;;) {
                json_t *info = NULL;
                int r = qmp(vm, "query-migrate", NULL, -1, VMM_QMP_TIMEOUT_MS, &info, d);
                if (r < 0)
                        return r;
                const char *st = json_string_value(json_object_get(info, "status"));
                const char *why = json_string_value(json_object_get(info, "error-desc"));
                if (st && strcmp(st, "completed") == 0)
                        r = 1;
                else if (st && (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0))
                        r = vmsnap_diag(d, -EIO, "qemu (pid %d): migration %s: %s",
                                        (int)vm->proc.pid, st, why ? why : "no reason given");
                else if (now_ms() >= deadline)
                        r = vmsnap_diag(d, -ETIMEDOUT,
                                        "qemu (pid %d): migration still %s after %d ms",
                                        (int)vm->proc.pid, st ? st : "?", timeout);
                json_decref(info);
                if (r == -ETIMEDOUT)
                        qmp(vm, "migrate_cancel", NULL, -1, VMM_QMP_TIMEOUT_MS, NULL, NULL);
                if (r != 0)
                        return r < 0 ? r : 0;
                sleep_ms(QEMU_POLL_MS);
        }
}

/* Writes the migration stream (devices; shared RAM skipped) into dirfd/snapfile. */
static int write_snapfile(struct vmsnap_vm *vm, int dirfd, struct vmsnap_diag *d)
{
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dirfd, QEMU_SNAPFILE, d);
        if (r < 0)
                return r;
        r = set_ignore_shared(vm, d);
        if (r == 0)
                r = pass_fd(vm, s.fd, d);
        if (r == 0)
                r = qmp(vm, "migrate", json_pack("{s:s}", "uri", "fd:" QEMU_FDNAME), -1,
                        VMM_QMP_TIMEOUT_MS, NULL, d);
        if (r == 0)
                r = wait_migration(vm, d);
        if (r == 0)
                r = vmsnap_staged_commit(&s, d);
        vmsnap_staged_abort(&s);
        return r;
}

/* Links the VM's kernel and initramfs into the snapshot and writes its vmm.json. */
static int write_machine(struct vmsnap_vm *vm, int dirfd, const char *state_dir,
                         struct vmsnap_diag *d)
{
        struct boot_files f;
        int r = boot_files_in(vm->run_dir, &f, d);
        if (r == 0)
                r = install_file(f.kernel, dirfd, QEMU_KERNEL, d);
        if (r == 0 && vm->machine.initrd)
                r = install_file(f.initrd, dirfd, QEMU_INITRD, d);
        if (r == 0)
                r = qemu_machine_write_file(dirfd, state_dir, qemu_machine_to_json(&vm->machine),
                                            d);
        char version[64]; /* the convention of all drivers: other drivers refuse this state */
        snprintf(version, sizeof(version), "%s/%s", vm->machine.qemu_version,
                 vmm_accel_name(vm->machine.accel));
        if (r == 0)
                r = vmm_version_write(state_dir, QEMU_NAME, version, d);
        return r;
}

static int qemu_save(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_vm_saved *ret,
                     struct vmsnap_diag *d)
{
        struct vmsnap_diag local = {0};
        if (!d) /* vmsnap_diag_prefix(NULL, ...) returns 0: callees must see a diag */
                d = &local;
        if (!vm || !state_dir || !ret)
                return vmsnap_diag(d, -EINVAL, "qemu: save needs a VM and a state directory");
        /* x-ignore-shared skips only shared RAM: a share=off VM would stream its whole RAM
         * into snapfile while its memory file (what the memory layer reads) stays the old
         * snapshot's. Such a snapshot would not hold the guest's memory. */
        if (!vm->memory_shared)
                return vmsnap_diag(d, -EOPNOTSUPP,
                                   "qemu (pid %d): this VM maps %s privately "
                                   "(restored share=off); its RAM is not in that file and "
                                   "cannot be saved cheaply: restore with a shared memory "
                                   "file of its own to snapshot it again",
                                   (int)vm->proc.pid, vm->memory_file);
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(state_dir);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: cannot open: %s", state_dir, strerror(-dirfd));
        char status[32] = "";
        int r = qemu_pause(vm, d);
        if (r == 0)
                r = query_status(vm, status, sizeof(status), d);
        /* QEMU refuses to migrate again before the VM ran: say why in our words. */
        if (r == 0 && strcmp(status, "postmigrate") == 0)
                r = vmsnap_diag(d, -EBUSY,
                                "qemu (pid %d): the VM was saved and has not run since; "
                                "resume it before saving it again",
                                (int)vm->proc.pid);
        if (r == 0)
                r = write_snapfile(vm, dirfd, d);
        if (r == 0)
                r = write_machine(vm, dirfd, state_dir, d);
        if (r == 0 && (r = vmsnap_fs_fsync_dir(dirfd)) < 0)
                vmsnap_diag(d, r, "%s: fsync: %s", state_dir, strerror(-r));
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        snprintf(ret->memory_file, sizeof(ret->memory_file), "%s", vm->memory_file);
        ret->source = VMSNAP_MEM_SOURCE_CONTENT;
        ret->memory_file_temporary = false;
        snprintf(ret->version, sizeof(ret->version), "%s/%s", vm->machine.qemu_version,
                 vmm_accel_name(vm->machine.accel));
        return 0;
}

/* ---- agent, teardown ------------------------------------------------------------------------- */

static int qemu_agent_connect(struct vmsnap_vm *vm, int timeout_ms, int *ret_fd,
                              struct vmsnap_diag *d)
{
        if (!vm || !ret_fd)
                return vmsnap_diag(d, -EINVAL, "qemu: no VM");
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, vm->agent_sock, sizeof(sa.sun_path));
        int64_t deadline = now_ms() + timeout_ms;
        for (;;) {
                _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return vmsnap_diag(d, -errno, "socket: %s", strerror(errno));
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        *ret_fd = TAKE_FD(fd);
                        return 0;
                }
                int e = errno;
                if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || now_ms() >= deadline ||
                    vmm_process_exited(&vm->proc)) {
                        vmsnap_diag(d, -e, "%s: cannot connect to the guest agent: %s",
                                    vm->agent_sock, strerror(e));
                        return explain(&vm->proc, -e, d);
                }
                sleep_ms(20);
        }
}

/* Removes what a dead QEMU leaves in its run directory (sockets, pid file). */
static void unlink_run_files(const char *run_dir)
{
        static const char *const names[] = {QEMU_QMP_SOCK, QEMU_AGENT_SOCK, QEMU_PIDFILE};
        char p[PATH_MAX];
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (path_join(p, sizeof(p), run_dir, names[i]) == 0)
                        unlink(p);
}

static void qemu_destroy(struct vmsnap_vm *vm)
{
        if (!vm)
                return;
        vmm_qmp_close(vm->qmp);
        vm->qmp = NULL;
        vmm_process_kill(&vm->proc);
        unlink_run_files(vm->run_dir);
        vm_free(vm);
}

static void qemu_detach(struct vmsnap_vm *vm)
{
        if (!vm)
                return;
        vmm_process_release(&vm->proc);
        vm_free(vm);
}

static pid_t qemu_pid(const struct vmsnap_vm *vm)
{
        return vm ? vm->proc.pid : 0;
}

const struct vmsnap_vmm_driver vmsnap_vmm_qemu = {
        .disk_format = "qcow2",
    .name = QEMU_NAME,
        .probe = qemu_probe,
        .compatible = qemu_compatible,
        .boot = qemu_boot,
        .restore = qemu_restore,
        .attach = qemu_attach,
        .pause = qemu_pause,
        .resume = qemu_resume,
        .save = qemu_save,
        .agent_connect = qemu_agent_connect,
        .destroy = qemu_destroy,
        .detach = qemu_detach,
        .pid = qemu_pid,
};
