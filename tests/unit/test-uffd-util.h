/* Helpers shared by the page-server tests (test-uffd-*.c): snapshots made with the real mem
 * API, the VMM peer (tests/peer/uffd-peer.c, a Firecracker stand-in: FC cannot run here),
 * and the userfaultfd probe that turns a missing kernel feature into exit 77. Header-only
 * (static inline) because each test is its own program. */
#ifndef VMSNAP_TEST_UFFD_UTIL_H
#define VMSNAP_TEST_UFFD_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmsnap/mem.h>
#include <vmsnap/uffd.h>

#include "testlib.h"

extern char **environ;

/* Exits 77 (skipped) with the reason when this kernel or user cannot use userfaultfd the
 * way a VMM does (kernel faults trapped, REMOVE events). */
static inline void uffd_test_require(void)
{
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        const char *why = NULL;
        if (fd < 0)
                why = strerror(errno);
        else {
                struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
                if (ioctl(fd, UFFDIO_API, &api) < 0)
                        why = "UFFDIO_API with EVENT_REMOVE failed";
                close(fd);
        }
        if (why) {
                fprintf(stderr, "skipping: userfaultfd unavailable (%s); needs CAP_SYS_PTRACE, "
                                "vm.unprivileged_userfaultfd=1 or /dev/userfaultfd\n", why);
                exit(77);
        }
}

/* One scratch directory with a snapshot, its materialized image and a socket path. */
struct ufx {
        char *dir, *raw, *snap, *expect, *sock;
        uint64_t size;
};

static inline void ufx_init(struct ufx *fx, const char *tag)
{
        memset(fx, 0, sizeof(*fx));
        fx->dir = test_mkdtemp(tag);
        fx->raw = test_path(fx->dir, "mem.raw");
        fx->snap = test_path(fx->dir, "snap");
        fx->expect = test_path(fx->dir, "expect.raw");
        fx->sock = test_path(fx->dir, "uffd.sock");
}

static inline void ufx_free(struct ufx *fx)
{
        test_rmtree(fx->dir);
        free(fx->dir);
        free(fx->raw);
        free(fx->snap);
        free(fx->expect);
        free(fx->sock);
}

/* Fills buf with runs of random data and zeros (about data_frac data), deterministic. */
static inline void ufx_fill(uint8_t *buf, uint64_t size, double data_frac, uint64_t *seed)
{
        for (uint64_t off = 0; off < size;) {
                uint64_t run = (1 + test_rand(seed) % 16) * 4096;
                run = run < size - off ? run : size - off;
                bool data = (double)(test_rand(seed) % 1000) < data_frac * 1000;
                if (data)
                        test_fill_random(seed, buf + off, run);
                else
                        memset(buf + off, 0, run);
                off += run;
        }
}

/* Writes mem.raw from buf, processes it as generation 0 and materializes it. */
static inline int ufx_process(struct ufx *fx, const uint8_t *buf, uint64_t size, uint64_t bs)
{
        struct vmsnap_mem_opts o = {.block_size = bs};
        struct vmsnap_mem_result res;
        struct vmsnap_diag d = {0};
        fx->size = size;
        test_write_file(fx->raw, buf, size);
        int r = vmsnap_mem_process(fx->raw, fx->snap, &o, &res, &d);
        if (r == 0)
                r = vmsnap_mem_materialize(fx->snap, fx->expect, &res, &d);
        if (r < 0)
                fprintf(stderr, "snapshot setup: %s\n", d.msg);
        return r;
}

/* A snapshot of size bytes with about data_frac data in bs-byte blocks. */
static inline int ufx_snapshot(struct ufx *fx, uint64_t size, double data_frac, uint64_t bs,
                               uint64_t seed)
{
        uint8_t *buf = malloc(size);
        if (!buf)
                return -ENOMEM;
        ufx_fill(buf, size, data_frac, &seed);
        int r = ufx_process(fx, buf, size, bs);
        free(buf);
        return r;
}

/* Path of the peer program: from CTest's environment, else next to this test binary. */
static inline const char *peer_path(void)
{
        static char path[4096];
        const char *env = getenv("VMSNAP_PEER_uffd_peer");
        if (env)
                return env;
        ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
        if (n < 0)
                return "uffd-peer";
        path[n] = '\0';
        strcpy(strrchr(path, '/') + 1, "uffd-peer");
        return path;
}

/* Starts the peer against fx with extra arguments (NULL-terminated). Returns its pid. */
static inline pid_t peer_spawn(const struct ufx *fx, const char *const *extra)
{
        const char *argv[40] = {peer_path(), "--socket", fx->sock, "--expect", fx->expect};
        int n = 5;
        for (int i = 0; extra && extra[i] && n < 38; i++)
                argv[n++] = extra[i];
        argv[n] = NULL;
        pid_t pid;
        int r = posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
        if (r != 0) {
                fprintf(stderr, "cannot start %s: %s\n", argv[0], strerror(r));
                return -1;
        }
        return pid;
}

/* Waits for pid; returns its raw wait status. */
static inline int peer_wait(pid_t pid)
{
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        return st;
}

/* One restore: a server on fx (opts may be NULL) and a peer with extra arguments. Fills
 * the server's return code, its stats, the peer's wait status and (if d) the diagnostic. */
struct restore {
        int rc;
        int peer_status;
        struct vmsnap_uffd_stats st;
        struct vmsnap_diag d;
};

static inline int restore_run(const struct ufx *fx, const struct vmsnap_uffd_opts *opts,
                              const char *const *peer_args, struct restore *ret,
                              struct vmsnap_uffd_server **keep)
{
        struct vmsnap_uffd_server *s;
        memset(ret, 0, sizeof(*ret));
        int r = vmsnap_uffd_server_new(fx->snap, fx->sock, opts, &s, &ret->d);
        if (r < 0) {
                fprintf(stderr, "server_new: %s\n", ret->d.msg);
                return r;
        }
        pid_t pid = peer_spawn(fx, peer_args);
        if (pid < 0) {
                vmsnap_uffd_server_free(s);
                return -ECHILD;
        }
        ret->rc = vmsnap_uffd_server_run(s, &ret->d);
        if (ret->rc < 0)
                fprintf(stderr, "server run: %s\n", ret->d.msg);
        vmsnap_uffd_server_stats(s, &ret->st);
        ret->peer_status = peer_wait(pid);
        if (keep)
                *keep = s;
        else
                vmsnap_uffd_server_free(s);
        return 0;
}

static inline bool peer_ok(int status)
{
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static inline bool peer_skipped(int status)
{
        return WIFEXITED(status) && WEXITSTATUS(status) == 77;
}

static inline bool peer_killed(int status)
{
        return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

/* Entries in a /proc/self directory (fd or task): for leak checks. */
static inline int count_entries(const char *path)
{
        DIR *d = opendir(path);
        int n = 0;
        for (struct dirent *e; d && (e = readdir(d));)
                n += e->d_name[0] != '.';
        if (d)
                closedir(d);
        return n - (strcmp(path, "/proc/self/fd") == 0); /* the DIR's own fd */
}

static inline uint64_t free_hugepages(void)
{
        FILE *f = fopen("/proc/meminfo", "r");
        char line[256];
        unsigned long long n = 0;
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "HugePages_Free: %llu", &n) == 1)
                        break;
        if (f)
                fclose(f);
        return n;
}

#endif
