/* Page server, lifecycle: accept timeout and cancellation, stop while serving, control
 * requests, a VMM dying mid-restore, bad handshakes (the VMM is killed), working-set record
 * and replay, and many restores in one process without leaking fds or threads. Real
 * userfaultfd; the VMM is tests/peer/uffd-peer.c (Firecracker cannot run here). */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cmocka.h>

#include "test-uffd-util.h"

#define MiB (1ull << 20)

static struct ufx fx; /* one 8 MiB snapshot shared by the tests */

static int setup(void **state)
{
        (void)state;
        ufx_init(&fx, "uffd-life");
        return ufx_snapshot(&fx, 8 * MiB, 0.4, 4096, 99);
}

static int teardown(void **state)
{
        (void)state;
        ufx_free(&fx);
        return 0;
}

static void test_accept_timeout(void **state)
{
        (void)state;
        struct vmsnap_uffd_opts o = {.accept_timeout_ms = 50};
        struct vmsnap_uffd_server *s;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, &o, &s, &d), 0);
        struct stat st;
        assert_int_equal(stat(fx.sock, &st), 0);
        assert_int_equal(vmsnap_uffd_server_run(s, &d), -ETIMEDOUT);
        assert_non_null(strstr(d.msg, fx.sock));
        assert_int_equal(vmsnap_uffd_server_run(s, &d), -EALREADY);
        vmsnap_uffd_server_free(s);
        assert_int_equal(stat(fx.sock, &st), -1); /* the socket file is gone */
}

static void *stop_soon(void *arg)
{
        vmsnap_uffd_server_stop(arg);
        return NULL;
}

/* stop() before run(), and from another thread while run() waits for a VMM forever. */
static void test_cancel_before_connect(void **state)
{
        (void)state;
        struct vmsnap_uffd_opts o = {.accept_timeout_ms = -1};
        struct vmsnap_uffd_server *s;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, &o, &s, &d), 0);
        vmsnap_uffd_server_stop(s);
        assert_int_equal(vmsnap_uffd_server_run(s, &d), -ECANCELED);
        vmsnap_uffd_server_free(s);

        assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, &o, &s, &d), 0);
        pthread_t t;
        pthread_create(&t, NULL, stop_soon, s);
        assert_int_equal(vmsnap_uffd_server_run(s, &d), -ECANCELED);
        pthread_join(t, NULL);
        vmsnap_uffd_server_free(s);
}

static void *stop_when_connected(void *arg)
{
        struct vmsnap_uffd_stats st;
        do {
                usleep(1000);
                vmsnap_uffd_server_stats(arg, &st);
        } while (!st.connected);
        vmsnap_uffd_server_stop(arg);
        return NULL;
}

/* SIGTERM-style stop while a VMM is attached: run() ends cleanly (the VMM, which keeps its
 * own uffd like FC, would block on its next missing page: the daemon stops it first). */
static void test_stop_while_serving(void **state)
{
        (void)state;
        int fds0 = count_entries("/proc/self/fd"), threads0 = count_entries("/proc/self/task");
        struct vmsnap_uffd_server *s;
        struct vmsnap_diag d = {0};
        struct vmsnap_uffd_opts o = {.prefetch = true};
        assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, &o, &s, &d), 0);
        const char *args[] = {"--case", "idle", NULL};
        pid_t pid = peer_spawn(&fx, args);
        pthread_t t;
        pthread_create(&t, NULL, stop_when_connected, s);
        assert_int_equal(vmsnap_uffd_server_run(s, &d), 0);
        pthread_join(t, NULL);
        vmsnap_uffd_server_free(s);
        kill(pid, SIGKILL);
        assert_true(peer_killed(peer_wait(pid)));
        assert_int_equal(count_entries("/proc/self/fd"), fds0);
        assert_int_equal(count_entries("/proc/self/task"), threads0);
}

struct second {
        struct vmsnap_uffd_server *s;
        int status;
};

/* Once the first VMM is served, a second one connects: it is killed, the first is not. */
static void *second_vmm(void *arg)
{
        struct second *x = arg;
        struct vmsnap_uffd_stats st;
        do {
                usleep(1000);
                vmsnap_uffd_server_stats(x->s, &st);
        } while (!st.connected);
        const char *args[] = {"--case", "idle", NULL};
        x->status = peer_wait(peer_spawn(&fx, args));
        vmsnap_uffd_server_stop(x->s);
        return NULL;
}

static void test_second_vmm_killed(void **state)
{
        (void)state;
        struct vmsnap_uffd_server *s;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, NULL, &s, &d), 0);
        const char *args[] = {"--case", "idle", NULL};
        pid_t first = peer_spawn(&fx, args);
        struct second x = {.s = s};
        pthread_t t;
        pthread_create(&t, NULL, second_vmm, &x);
        assert_int_equal(vmsnap_uffd_server_run(s, &d), 0);
        pthread_join(t, NULL);
        vmsnap_uffd_server_free(s);
        assert_true(peer_killed(x.status));
        assert_int_equal(waitpid(first, NULL, WNOHANG), 0); /* still alive */
        kill(first, SIGKILL);
        assert_true(peer_killed(peer_wait(first)));
}

/* A control client: sends every request on one connection, keeps the reply lines. */
struct control_run {
        const char *sock;
        const char *requests;
        char replies[8192];
};

static void *control_client(void *arg)
{
        struct control_run *c = arg;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->sock);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        while (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                usleep(1000);
        ssize_t w = write(s, c->requests, strlen(c->requests));
        (void)w;
        shutdown(s, SHUT_WR);
        size_t n = 0;
        for (ssize_t k; (k = read(s, c->replies + n, sizeof(c->replies) - 1 - n)) > 0;)
                n += (size_t)k;
        c->replies[n] = '\0';
        close(s);
        return NULL;
}

/* Reply line i (0-based) as JSON. */
static json_t *reply_line(const char *replies, int i)
{
        const char *p = replies;
        while (i-- > 0 && p)
                p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL;
        assert_non_null(p);
        json_t *j = json_loadb(p, strcspn(p, "\n"), 0, NULL);
        assert_non_null(j);
        return j;
}

/* Requests pipelined on one connection before any VMM: stats, an unknown request, save-ws
 * into another directory, stop. */
static void test_control_requests(void **state)
{
        (void)state;
        char *wsdir = test_path(fx.dir, "wsout");
        assert_int_equal(mkdir(wsdir, 0755), 0);
        char req[1024];
        snprintf(req, sizeof(req), "{\"request\":\"stats\"}\n{\"request\":\"bogus\"}\n"
                                   "{\"request\":\"save-ws\",\"dir\":\"%s\"}\n"
                                   "{\"request\":\"stop\"}\n", wsdir);
        struct vmsnap_uffd_opts o = {.accept_timeout_ms = -1, .ws_record = true};
        struct vmsnap_uffd_server *s;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, &o, &s, &d), 0);
        struct control_run c = {.sock = fx.sock, .requests = req};
        pthread_t t;
        pthread_create(&t, NULL, control_client, &c);
        assert_int_equal(vmsnap_uffd_server_run(s, &d), -ECANCELED);
        pthread_join(t, NULL);
        vmsnap_uffd_server_free(s);
        json_t *j = reply_line(c.replies, 0);
        assert_string_equal(json_string_value(json_object_get(j, "phase")), "waiting");
        assert_true(json_is_false(json_object_get(j, "connected")));
        json_decref(j);
        static const bool ok[] = {false, true, true};
        for (int i = 1; i <= 3; i++) {
                j = reply_line(c.replies, i);
                assert_int_equal(json_is_true(json_object_get(j, "ok")), ok[i - 1]);
                json_decref(j);
        }
        char *ws = test_path(wsdir, VMSNAP_UFFD_WS_NAME);
        struct stat st;
        assert_int_equal(stat(ws, &st), 0);
        free(ws);
        free(wsdir);
}

/* The VMM exits while its threads still fault: run() ends cleanly. */
static void test_vmm_exits_mid_restore(void **state)
{
        (void)state;
        struct vmsnap_uffd_opts o = {.fault_around = 4096};
        const char *args[] = {"--case", "exit-mid", "--threads", "4", NULL};
        struct restore rs;
        assert_int_equal(restore_run(&fx, &o, args, &rs, NULL), 0);
        assert_int_equal(rs.rc, 0);
        assert_true(peer_ok(rs.peer_status));
        assert_true(rs.st.faults > 0);
}

/* Runs one restore and checks that it left no fd and no thread behind. */
static void restore_no_leak(const struct vmsnap_uffd_opts *o, const char *const *args,
                            int fds0, int threads0)
{
        struct restore rs;
        assert_int_equal(restore_run(&fx, o, args, &rs, NULL), 0);
        assert_int_equal(rs.rc, 0);
        assert_true(peer_ok(rs.peer_status));
        assert_int_equal(count_entries("/proc/self/fd"), fds0);
        assert_int_equal(count_entries("/proc/self/task"), threads0);
}

static void test_many_restores_no_leaks(void **state)
{
        (void)state;
        int fds0 = count_entries("/proc/self/fd"), threads0 = count_entries("/proc/self/task");
        struct vmsnap_uffd_opts plain = {0}, busy = {.prefetch = true, .workers = 4};
        const char *touch[] = {"--fraction", "0.2", "--threads", "2", NULL};
        const char *mid[] = {"--case", "exit-mid", "--threads", "3", NULL};
        const char *drop[] = {"--case", "dontneed", "--fraction", "0.3", "--gen", "1.7", NULL};
        for (int i = 0; i < 12; i++) {
                const char *const *args = i % 3 == 0 ? touch : i % 3 == 1 ? mid : drop;
                restore_no_leak(i % 2 ? &busy : &plain, args, fds0, threads0);
        }
        /* and after timeouts */
        struct vmsnap_uffd_opts quick = {.accept_timeout_ms = 10};
        for (int i = 0; i < 3; i++) {
                struct vmsnap_uffd_server *s;
                struct vmsnap_diag d = {0};
                assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, &quick, &s, &d), 0);
                assert_int_equal(vmsnap_uffd_server_run(s, &d), -ETIMEDOUT);
                vmsnap_uffd_server_free(s);
        }
        assert_int_equal(count_entries("/proc/self/fd"), fds0);
        assert_int_equal(count_entries("/proc/self/task"), threads0);
}

/* Record the working set of one restore, replay it on the next: the same accesses then
 * need no demand fault at all. */
static void test_working_set_replay(void **state)
{
        (void)state;
        char *ws = test_path(fx.snap, VMSNAP_UFFD_WS_NAME);
        unlink(ws);
        const char *first[] = {"--fraction", "0.3", "--seed", "9", "--threads", "3", NULL};
        const char *again[] = {"--case", "ws-wait", "--fraction", "0.3", "--seed", "9",
                               "--threads", "3", NULL};
        struct vmsnap_uffd_opts rec = {.ws_record = true}, norep = {.no_ws_replay = true};
        struct vmsnap_uffd_server *s = NULL;
        struct restore rs;
        assert_int_equal(restore_run(&fx, &rec, first, &rs, &s), 0);
        assert_true(peer_ok(rs.peer_status));
        assert_true(rs.st.faults > 0);
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_uffd_server_save_ws(s, NULL, &d), 0);
        vmsnap_uffd_server_free(s);

        /* replay while recording again: the new set keeps the replayed blocks */
        assert_int_equal(restore_run(&fx, &rec, again, &rs, &s), 0);
        assert_true(peer_ok(rs.peer_status));
        assert_int_equal(rs.st.faults, 0);
        assert_true(rs.st.ws_pages > 0);
        assert_true(rs.st.ws_done);
        assert_int_equal(vmsnap_uffd_server_save_ws(s, NULL, &d), 0);
        vmsnap_uffd_server_free(s);

        assert_int_equal(restore_run(&fx, NULL, again, &rs, NULL), 0);
        assert_true(peer_ok(rs.peer_status));
        assert_int_equal(rs.st.faults, 0);

        assert_int_equal(restore_run(&fx, &norep, again, &rs, NULL), 0);
        assert_true(peer_ok(rs.peer_status));
        assert_true(rs.st.faults > 0); /* how many depends on how faults interleave */
        assert_int_equal(rs.st.ws_pages, 0);
        unlink(ws);
        free(ws);
}

/* A corrupt working set costs speed only: it is ignored with a note. */
static void note_count(void *ctx, enum vmsnap_uffd_note level, const char *msg)
{
        (void)msg;
        if (level == VMSNAP_UFFD_NOTE_WARN)
                ++*(int *)ctx;
}

static void test_bad_working_set_ignored(void **state)
{
        (void)state;
        char *ws = test_path(fx.snap, VMSNAP_UFFD_WS_NAME);
        test_write_file(ws, "VMSNAPWS garbage", 16);
        int warnings = 0;
        struct vmsnap_uffd_opts o = {.note = note_count, .note_ctx = &warnings};
        const char *args[] = {"--fraction", "0.1", NULL};
        struct restore rs;
        assert_int_equal(restore_run(&fx, &o, args, &rs, NULL), 0);
        assert_int_equal(rs.rc, 0);
        assert_true(peer_ok(rs.peer_status));
        assert_int_equal(warnings, 1);
        assert_int_equal(rs.st.ws_blocks, 0);
        unlink(ws);
        free(ws);
}

/* A fake VMM (forked) that sends json with an optional fd, then waits to be killed. */
static pid_t fake_vmm(const char *json, int fd)
{
        pid_t pid = fork();
        if (pid != 0)
                return pid;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.sock);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                _exit(3);
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } ctl;
        struct iovec iov = {(void *)json, strlen(json)};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (fd >= 0) {
                msg.msg_control = ctl.buf;
                msg.msg_controllen = sizeof(ctl.buf);
                struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        if (sendmsg(s, &msg, 0) < 0)
                _exit(4);
        for (;;)
                pause();
}

static void expect_killed(const char *json, int fd, const char *msg_part)
{
        struct vmsnap_uffd_server *s;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_uffd_server_new(fx.snap, fx.sock, NULL, &s, &d), 0);
        pid_t pid = fake_vmm(json, fd);
        assert_int_equal(vmsnap_uffd_server_run(s, &d), -EPROTO);
        assert_non_null(strstr(d.msg, msg_part));
        assert_non_null(strstr(d.msg, "killed VMM pid"));
        vmsnap_uffd_server_free(s);
        assert_true(peer_killed(peer_wait(pid)));
}

static void test_bad_handshakes_kill_vmm(void **state)
{
        (void)state;
        const char *one = "[{\"base_host_virt_addr\":1048576,\"size\":4096,\"offset\":0,"
                          "\"page_size\":4096}]";
        expect_killed(one, -1, "no userfaultfd");
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        expect_killed(one, p[0], "not a userfaultfd");
        close(p[0]);
        close(p[1]);
        int ufd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        assert_true(ufd >= 0);
        const char *outside = "[{\"base_host_virt_addr\":1048576,\"size\":16777216,"
                              "\"offset\":0,\"page_size\":4096}]";
        expect_killed(outside, ufd, "outside the snapshot");
        const char *bad_ps = "[{\"base_host_virt_addr\":1048576,\"size\":4096,\"offset\":0,"
                             "\"page_size\":8192}]";
        expect_killed(bad_ps, ufd, "page size");
        close(ufd);
}

int main(void)
{
        uffd_test_require();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_accept_timeout),
                cmocka_unit_test(test_cancel_before_connect),
                cmocka_unit_test(test_stop_while_serving),
                cmocka_unit_test(test_second_vmm_killed),
                cmocka_unit_test(test_control_requests),
                cmocka_unit_test(test_vmm_exits_mid_restore),
                cmocka_unit_test(test_many_restores_no_leaks),
                cmocka_unit_test(test_working_set_replay),
                cmocka_unit_test(test_bad_working_set_ignored),
                cmocka_unit_test(test_bad_handshakes_kill_vmm),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
