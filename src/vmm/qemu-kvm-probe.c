/* The accelerator of a new QEMU VM (see qemu-internal.h): KVM when a probe boot of the
 * guest answers under it, else TCG; the verdict is remembered per host (vmm/accel.c). */
#include "vmm/qemu-internal.h"

#include "util/cleanup.h"
#include "util/fs.h"
#include <poll.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
        qemu_log_tail(log, tail, sizeof(tail));
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
        struct vmm_accel_status kvm = {.accel = VMM_ACCEL_KVM, .reason = "the KVM probe"};
        int r = qemu_machine_init(&s, &kvm, ctx->version, &m, d);
        if (r == 0)
                r = qemu_prepare_memory_file(mem, m.memory, true, d);
        /* Jailed like the VM it decides for: the scratch dir is the jail's run dir. */
        if (r == 0 && s.jail && (chown(dir, s.jail->uid, s.jail->uid) < 0 ||
                                 chown(mem, s.jail->uid, s.jail->uid) < 0))
                r = vmsnap_diag(d, -errno, "%s: cannot hand to uid %u: %s", dir,
                                (unsigned)s.jail->uid, strerror(errno));
        struct qemu_launch l = {.machine = &m,
                                .binary = s.vmm_binary,
                                .run_dir = dir,
                                .kernel = ctx->kernel,
                                .initrd = ctx->initrd,
                                .memory_file = mem,
                                .name = "kvm-probe",
                                .jail = s.jail};
        if (r == 0)
                r = qemu_start_process(&l, &proc, &q, d);
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
        qemu_remove_scratch(dir);
        return r;
}

/* The run directories' parent, where the accelerator verdict is remembered. */
int qemu_verdict_dir(const char *run_dir, char out[PATH_MAX], struct vmsnap_diag *d)
{
        if (path_join(out, PATH_MAX, run_dir, "..") < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", run_dir);
        return 0;
}


/* The accelerator for a new VM of spec, probing KVM once per host when it must. */
int qemu_choose_accel(const struct vmsnap_vm_spec *spec, const char *kernel, const char *initrd,
                      const char *version, struct vmm_accel_status *ret, struct vmsnap_diag *d)
{
        char vdir[PATH_MAX];
        int r = qemu_verdict_dir(spec->run_dir, vdir, d);
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
