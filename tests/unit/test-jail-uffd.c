/* The page server jailed: `vmsnap uffd-serve --jail-uid ...` (the real CLI) opens the
 * snapshot and its socket, jails itself, and serves a restore to the VMM peer
 * (tests/peer/uffd-peer.c, Firecracker's stand-in) running as the same uid, the way the
 * sandbox layer runs a VMM and its page server. Checked from outside while it waits: its
 * uid, no capabilities, no_new_privs, seccomp mode 2, another mount namespace, a root with
 * only /proc and its --ws-dir, the socket given to its uid 0600; then the peer's every byte
 * matches the snapshot and the working set lands in --ws-dir; a corrupt block still gets
 * the VMM killed. Needs root, namespaces, userfaultfd and setpriv (else exit 77). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "test-jail-util.h"
#include "test-uffd-util.h"

#define MiB (1ull << 20)

static struct ufx fx;
static char *ws_dir, *jail_root, *out_path, *err_path;
static char name[32];
static bool peer_missing_feature; /* the peer exited 77: the whole test is skipped */

static int setup(void **state)
{
        (void)state;
        ufx_init(&fx, "jail-uffd");
        int r = ufx_snapshot(&fx, 16 * MiB, 0.4, 4096, 7);
        ws_dir = test_path(fx.dir, "ws");
        jail_root = test_path(fx.dir, "jail-root");
        out_path = test_path(fx.dir, "server.out");
        err_path = test_path(fx.dir, "server.err");
        snprintf(name, sizeof(name), "test-%d.pager", (int)getpid());
        /* The peer runs as the jail's uid: it must reach the socket and the expected image. */
        if (r < 0 || chmod(fx.dir, 0755) < 0 || chmod(fx.expect, 0644) < 0 ||
            mkdir(ws_dir, 0700) < 0 || chown(ws_dir, TEST_UID, TEST_UID) < 0 ||
            mkdir(jail_root, 0755) < 0)
                return -1;
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        struct vmsnap_jail_config c = jail_test_config();
        struct vmsnap_diag d;
        vmsnap_jail_cgroup_remove(&c, name, &d);
        jail_test_cleanup_parent();
        ufx_free(&fx);
        free(ws_dir), free(jail_root), free(out_path), free(err_path);
        return 0;
}

static pid_t spawn(char *const argv[], const char *out, const char *err)
{
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        if (out)
                posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out,
                                                 O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (err)
                posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err,
                                                 O_WRONLY | O_CREAT | O_TRUNC, 0600);
        pid_t pid;
        int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        return r == 0 ? pid : -1;
}

static pid_t start_server(void)
{
        char uid[16], uids[32];
        snprintf(uid, sizeof(uid), "%u", (unsigned)TEST_UID);
        snprintf(uids, sizeof(uids), "%u:%u", TEST_UID_FIRST, TEST_UID_COUNT);
        const char *cli = getenv("VMSNAP_CLI");
        char *argv[] = {(char *)cli,
                        "uffd-serve",
                        fx.snap,
                        "--socket",
                        fx.sock,
                        "--ws-record",
                        "--ws-dir",
                        ws_dir,
                        "--json",
                        "--jail-uid",
                        uid,
                        "--jail-root",
                        jail_root,
                        "--jail-cgroup",
                        name,
                        "--jail-uids",
                        uids,
                        "--jail-cgroup-parent",
                        TEST_CGROUP_PARENT,
                        NULL};
        return cli ? spawn(argv, out_path, err_path) : -1;
}

/* Waits (at most 60 s: a busy machine, not a timing assertion) until the server says it
 * is jailed and listening; false when it exited or never did. */
static bool wait_jailed(pid_t pid)
{
        for (int i = 0; i < 6000; i++) {
                if (strstr(file_text(err_path), "(jailed)"))
                        return true;
                if (waitpid(pid, NULL, WNOHANG) == pid)
                        return false;
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        return false;
}

static void check_jailed_from_outside(pid_t pid)
{
        char v[64], want[32], mine[64], theirs[64];
        snprintf(want, sizeof(want), "%u", (unsigned)TEST_UID);
        proc_status_field(pid, "Uid", v);
        assert_string_equal(v, want);
        proc_status_field(pid, "CapEff", v);
        assert_string_equal(v, "0000000000000000");
        proc_status_field(pid, "NoNewPrivs", v);
        assert_string_equal(v, "1");
        proc_status_field(pid, "Seccomp", v);
        assert_string_equal(v, "2");
        proc_ns(0, "mnt", mine);
        proc_ns(pid, "mnt", theirs);
        assert_true(theirs[0]);
        assert_string_not_equal(mine, theirs);
        struct stat st;
        assert_int_equal(lstat(fx.sock, &st), 0);
        assert_int_equal(st.st_uid, TEST_UID);
        assert_int_equal(st.st_mode & 07777, 0600);
}

/* Its root: /proc, and the directories leading to the bound --ws-dir (same path). */
static void check_root_from_outside(pid_t pid)
{
        char root[64], first[256], entries[512] = "";
        snprintf(root, sizeof(root), "/proc/%d/root", (int)pid);
        DIR *d = opendir(root);
        assert_non_null(d);
        for (struct dirent *e; (e = readdir(d));)
                if (e->d_name[0] != '.')
                        snprintf(entries + strlen(entries), sizeof(entries) - strlen(entries),
                                 "%s ", e->d_name);
        closedir(d);
        snprintf(first, sizeof(first), "%s", ws_dir + 1);
        first[strcspn(first, "/")] = '\0';
        char want_a[300], want_b[300];
        snprintf(want_a, sizeof(want_a), "proc %s ", first);
        snprintf(want_b, sizeof(want_b), "%s proc ", first);
        if (strcmp(entries, want_a) != 0 && strcmp(entries, want_b) != 0)
                fail_msg("jail root holds '%s'", entries);
}

/* The VMM peer as the jail's uid, with just the capability userfaultfd needs here. */
static pid_t start_peer_as_jail_uid(void)
{
        char ids[16];
        snprintf(ids, sizeof(ids), "%u", (unsigned)TEST_UID);
        char *argv[] = {
                "/usr/bin/setpriv",  "--reuid",    ids,           "--regid",        ids,
                "--clear-groups",    "--inh-caps", "+sys_ptrace", "--ambient-caps", "+sys_ptrace",
                (char *)peer_path(), "--socket",   fx.sock,       "--expect",       fx.expect,
                "--threads",         "4",          NULL};
        return spawn(argv, NULL, NULL);
}

static void test_jailed_restore(void **state)
{
        (void)state;
        pid_t server = start_server();
        assert_true(server > 0);
        if (!wait_jailed(server))
                fail_msg("the server did not jail itself: %s", file_text(err_path));
        check_jailed_from_outside(server);
        check_root_from_outside(server);
        pid_t peer = start_peer_as_jail_uid();
        assert_true(peer > 0);
        int st = peer_wait(peer);
        if (peer_skipped(st)) {
                peer_missing_feature = true;
                kill(server, SIGTERM);
                peer_wait(server);
                return;
        }
        assert_true(peer_ok(st)); /* every byte of every page matched the snapshot */
        int sst = peer_wait(server);
        if (!WIFEXITED(sst) || WEXITSTATUS(sst) != 0)
                fail_msg("server: status %d: %s", sst, file_text(err_path));
        assert_non_null(strstr(file_text(out_path), "\"connected\":true"));
        char *ws = test_path(ws_dir, VMSNAP_UFFD_WS_NAME);
        struct stat sb;
        assert_int_equal(stat(ws, &sb), 0);
        assert_int_equal(sb.st_uid, TEST_UID);
        free(ws);
}

/* Overwrites a few bytes of the snapshot's diff file (a data block no longer matches its
 * hash). */
static void corrupt_snapshot(void)
{
        DIR *d = opendir(fx.snap);
        assert_non_null(d);
        char path[1024] = "";
        for (struct dirent *e; (e = readdir(d));)
                if (strncmp(e->d_name, "memfile.", 8) == 0 && !strstr(e->d_name, ".hashes") &&
                    strcmp(e->d_name, "memfile.header") != 0)
                        snprintf(path, sizeof(path), "%s/%s", fx.snap, e->d_name);
        closedir(d);
        int fd = open(path, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "XXXX", 4, 8192), 4);
        close(fd);
}

/* Jailed, the server still kills its VMM (same uid, through its pidfd) rather than serve a
 * block that does not match its hash. */
static void test_jailed_corrupt_block_kills_vmm(void **state)
{
        (void)state;
        corrupt_snapshot();
        pid_t server = start_server();
        assert_true(server > 0);
        if (!wait_jailed(server))
                fail_msg("the server did not jail itself: %s", file_text(err_path));
        pid_t peer = start_peer_as_jail_uid();
        assert_true(peer > 0);
        int st = peer_wait(peer);
        if (peer_skipped(st)) {
                peer_missing_feature = true;
                kill(server, SIGTERM);
                peer_wait(server);
                return;
        }
        assert_true(peer_killed(st));
        int sst = peer_wait(server);
        assert_true(WIFEXITED(sst) && WEXITSTATUS(sst) == 1);
        assert_non_null(strstr(file_text(err_path), "does not match its hash"));
}

int main(void)
{
        jail_test_require();
        uffd_test_require();
        if (access("/usr/bin/setpriv", X_OK) != 0 || !getenv("VMSNAP_CLI")) {
                fprintf(stderr, "skipping: needs /usr/bin/setpriv (util-linux) and "
                                "$VMSNAP_CLI\n");
                return 77;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_jailed_restore, setup, teardown),
                cmocka_unit_test_setup_teardown(test_jailed_corrupt_block_kills_vmm, setup,
                                                teardown),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        return failed == 0 && peer_missing_feature ? 77 : failed;
}
