/* The page server of a lazily restored sandbox: `vmsnap uffd-serve` in its own session, so
 * that a daemon restart never stalls a running guest (docs/uffd.md). */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PAGER_ACCEPT_TIMEOUT_MS "60000"
#define PAGER_SUFFIX            ".pager" /* its cgroup and jail root: <sandbox id>.pager */

/* The vmsnap CLI next to this program (vmsnapd and vmsnap are installed together), else
 * the one on $PATH. */
static void cli_path(char out[PATH_LEN])
{
        char self[PATH_LEN];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                snprintf(out, PATH_LEN, "%.4000s/vmsnap", dirname(self));
                if (access(out, X_OK) == 0)
                        return;
        }
        snprintf(out, PATH_LEN, "vmsnap");
}

/* The page server's jail options (docs/jail.md): the same uid as its VMM, its own root dir
 * and cgroup (<id>.pager), the host's jail settings, and the run dir as the one place it
 * writes (memfile.ws). Appended to argv at *n; the strings live in buf. */
struct pager_jail_buf {
        char uid[16], root[PATH_LEN], cgroup[64], uids[32], gid[16], version[8];
};

static void pager_jail_args(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                            const char *run_dir, struct pager_jail_buf *b, char **argv,
                            size_t *n)
{
        snprintf(b->uid, sizeof(b->uid), "%u", sb->jail_uid);
        snprintf(b->root, sizeof(b->root), "%.3000s/jails/%s" PAGER_SUFFIX, h->root, sb->id);
        snprintf(b->cgroup, sizeof(b->cgroup), "%s" PAGER_SUFFIX, sb->id);
        snprintf(b->uids, sizeof(b->uids), "%u:%u", (unsigned)h->jail.uid_first,
                 h->jail.uid_count);
        snprintf(b->gid, sizeof(b->gid), "%u", (unsigned)h->jail.shared_gid);
        int v = vmsnap_jail_cgroup_version(&h->jail, NULL);
        snprintf(b->version, sizeof(b->version), "%s", v == 1 ? "1" : v == 2 ? "2" : "auto");
        const char *pairs[][2] = {{"--jail-uid", b->uid},          {"--jail-root", b->root},
                                  {"--jail-cgroup", b->cgroup},    {"--jail-uids", b->uids},
                                  {"--jail-gid", b->gid},          {"--jail-cgroup-version", b->version},
                                  {"--ws-dir", run_dir},           {"--jail-cgroup-root", h->jail.cgroup_root},
                                  {"--jail-cgroup-parent", h->jail.cgroup_parent}};
        for (size_t i = 0; i < ARRAY_SIZE(pairs); i++)
                if (pairs[i][1]) {
                        argv[(*n)++] = (char *)pairs[i][0];
                        argv[(*n)++] = (char *)pairs[i][1];
                }
}

static int spawn_pager(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                       const char *run_dir, const char *snapdir, const char *socket,
                       const char *log, pid_t *ret)
{
        char cli[PATH_LEN];
        cli_path(cli);
        /* --ws-record: the order of first touches becomes the next snapshot's memfile.ws,
         * which the next restore replays before the guest runs; --json: its stats land in
         * uffd.log when it ends. */
        char *argv[32] = {cli, "uffd-serve", (char *)snapdir, "--socket", (char *)socket,
                          "--accept-timeout", PAGER_ACCEPT_TIMEOUT_MS, "--ws-record", "--json"};
        size_t n = 9;
        struct pager_jail_buf jb;
        if (h->jailed && sb->jail_uid)
                pager_jail_args(h, sb, run_dir, &jb, argv, &n);
        argv[n] = NULL;
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t at;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_APPEND,
                                         0644);
        posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
        posix_spawnattr_init(&at);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID);
        int r = posix_spawnp(ret, cli, &fa, &at, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
        return -r;
}

/* Waits until the server listens (its socket exists) or exits. */
static int wait_listening(pid_t pid, const char *socket, const char *log, struct vmsnap_diag *d)
{
        for (int i = 0; i < 500; i++) { /* 5 s */
                if (access(socket, F_OK) == 0)
                        return 0;
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return vmsnap_diag(d, -ESRCH, "the page server exited at start (see %s)",
                                           log);
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        return vmsnap_diag(d, -ETIMEDOUT, "the page server did not listen on %s", socket);
}

int pager_start(struct vmsnap_host *h, struct live *l, const struct vmsnap_sandbox *sb,
                const char *snapdir, char socket_out[PATH_LEN], struct vmsnap_diag *d)
{
        char run[PATH_LEN], log[PATH_LEN + 16];
        path_run_dir(h, sb->id, run);
        snprintf(socket_out, PATH_LEN, "%.4000s/uffd.sock", run);
        snprintf(log, sizeof(log), "%s/uffd.log", run);
        unlink(socket_out);
        if (h->jailed && sb->jail_uid) { /* its jail's root dir, empty, like its VMM's */
                char root[PATH_LEN];
                snprintf(root, sizeof(root), "%.3000s/jails/%s" PAGER_SUFFIX, h->root, sb->id);
                if (mkdir(root, 0700) < 0 && errno != EEXIST)
                        return vmsnap_diag(d, -errno, "%s: cannot create: %s", root,
                                           strerror(errno));
        }
        pid_t pid;
        int r = spawn_pager(h, sb, run, snapdir, socket_out, log, &pid);
        if (r < 0)
                return vmsnap_diag(d, r, "cannot start the page server (vmsnap uffd-serve): %s",
                                   strerror(-r));
        l->pager_pid = pid;
        l->pager_jailed = h->jailed && sb->jail_uid;
        r = wait_listening(pid, socket_out, log, d);
        if (r == -ESRCH)
                l->pager_pid = 0; /* reaped already: its pid may belong to another process */
        else if (r < 0)
                pager_stop(l);
        return r;
}

void pager_stop(struct live *l)
{
        if (l->pager_pid <= 0)
                return;
        kill(l->pager_pid, SIGTERM); /* it stops cleanly; a dead VMM already stopped it */
        for (int i = 0; i < 200; i++) { /* 2 s, then no more patience */
                if (waitpid(l->pager_pid, NULL, WNOHANG) != 0)
                        break;
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
                if (i == 199) {
                        kill(l->pager_pid, SIGKILL);
                        waitpid(l->pager_pid, NULL, 0);
                }
        }
        l->pager_pid = 0;
        l->pager_jailed = false;
}

/* One control request on a fresh connection; *ret is the parsed reply (caller decrefs). */
static int pager_request(struct vmsnap_host *h, const char *sandbox_id, json_t *req,
                         json_t **ret, struct vmsnap_diag *d)
{
        char run[PATH_LEN];
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        path_run_dir(h, sandbox_id, run);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%.90s/uffd.sock", run);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        char *line = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        int r = fd < 0 || !line ? -ENOMEM : 0;
        if (r == 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                r = -errno;
        if (r == 0 && (write(fd, line, strlen(line)) < 0 || write(fd, "\n", 1) < 0))
                r = -errno;
        char buf[4096];
        size_t n = 0;
        while (r == 0 && n < sizeof(buf) - 1 && (n == 0 || buf[n - 1] != '\n')) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t got = poll(&p, 1, 10000) == 1 ? read(fd, buf + n, sizeof(buf) - 1 - n)
                                                      : -1;
                if (got <= 0)
                        r = -EIO;
                else
                        n += (size_t)got;
        }
        free(line);
        if (fd >= 0)
                close(fd);
        buf[n] = '\0';
        json_t *o = r == 0 ? json_loads(buf, 0, NULL) : NULL;
        if (!o)
                return vmsnap_diag(d, r < 0 ? r : -EPROTO, "page server of sandbox %s: no "
                                   "answer", sandbox_id);
        *ret = o;
        return 0;
}

/* Moves run_dir/name, written by the jailed page server, to dir/name as root's 0600 regular
 * file; anything else found there is refused and removed. */
static int take_file(const char *run_dir, const char *name, const char *dir,
                     struct vmsnap_diag *d)
{
        _cleanup_close_ int from = vmsnap_fs_open_dir(run_dir);
        _cleanup_close_ int to = vmsnap_fs_open_dir(dir);
        if (from < 0 || to < 0 || renameat(from, name, to, name) < 0)
                return vmsnap_diag(d, -EIO, "%s/%s: cannot move into %s", run_dir, name, dir);
        _cleanup_close_ int fd = openat(to, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || fchown(fd, 0, 0) < 0 ||
            fchmod(fd, 0600) < 0) {
                unlinkat(to, name, 0);
                return vmsnap_diag(d, -EPERM, "%s/%s: not a regular file", run_dir, name);
        }
        return 0;
}

int pager_save_ws(struct vmsnap_host *h, struct live *l, const char *sandbox_id, const char *dir,
                  struct vmsnap_diag *d)
{
        if (l->pager_pid <= 0)
                return 0;
        /* A jailed page server writes only into its run dir (--ws-dir): the file is taken
         * over from there. */
        char run[PATH_LEN];
        path_run_dir(h, sandbox_id, run);
        bool jailed = l->pager_jailed;
        json_t *reply = NULL;
        int r = pager_request(h, sandbox_id, json_pack("{s:s, s:s}", "request", "save-ws", "dir",
                                                       jailed ? run : dir), &reply, d);
        const char *err = json_string_value(json_object_get(reply, "error"));
        if (r == 0 && !json_is_true(json_object_get(reply, "ok")))
                r = vmsnap_diag(d, -EIO, "page server of sandbox %s: save-ws: %s", sandbox_id,
                                err ? err : "failed");
        json_decref(reply);
        if (r == 0 && jailed)
                r = take_file(run, "memfile.ws", dir, d);
        return r;
}

void pager_wait_ws(struct vmsnap_host *h, struct live *l, const char *sandbox_id)
{
        for (int i = 0; l->pager_pid > 0 && i < 500; i++) { /* 5 s at most: then on demand */
                json_t *reply = NULL;
                if (pager_request(h, sandbox_id, json_pack("{s:s}", "request", "stats"), &reply,
                                  NULL) < 0)
                        return;
                json_t *ws = json_object_get(reply, "working_set");
                bool done = !ws || json_integer_value(json_object_get(ws, "blocks")) == 0 ||
                            json_is_true(json_object_get(ws, "done"));
                json_decref(reply);
                if (done)
                        return;
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
}
