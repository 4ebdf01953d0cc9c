/* src/net/ against real namespaces: 50 create/destroy cycles leave no pin, nsfs mount,
 * link, address, route or nftables table behind; a SIGKILL at each step of create and of
 * destroy followed by a recovery sweep returns to the same counts and keeps the known sandboxes;
 * bad input and a failure half-way leave nothing made and touch nothing found. Runs in a private
 * "host" (test-net-util.h); exits 77 without root, namespaces, /dev/net/tun or nftables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/wait.h>

#include "test-net-util.h"

static void assert_counts(struct net_counts got, struct net_counts want, const char *when)
{
        if (!net_counts_equal(got, want)) {
                net_test_print("want", want);
                net_test_print("got", got);
                fail_msg("object counts differ %s", when);
        }
}

static void create_ok(const struct vmsnap_net_spec *s)
{
        struct vmsnap_net_config cfg = net_test_config();
        struct vmsnap_diag d = {0};
        if (vmsnap_net_create(&cfg, s, &d) != 0)
                fail_msg("create %s: %s", s->id, d.msg);
}

static void destroy_ok(const char *id)
{
        struct vmsnap_net_config cfg = net_test_config();
        struct vmsnap_diag d = {0};
        if (vmsnap_net_destroy(&cfg, id, &d) != 0)
                fail_msg("destroy %s: %s", id, d.msg);
}

/* Each cycle adds exactly one pin, mount, link, table, and removes them again. */
static void test_cycles(void **state)
{
        (void)state;
        struct net_counts before = net_test_count();
        struct vmsnap_net_config cfg = net_test_config();
        for (int i = 0; i < 50; i++) {
                char id[32];
                snprintf(id, sizeof(id), "cycle-%d", i);
                struct vmsnap_net_spec s = net_test_spec(id, NULL, 0, i % 2 ? "deny" : "allow");
                create_ok(&s);
                assert_true(vmsnap_net_exists(&cfg, id));
                if (i == 0) {
                        struct net_counts during = net_test_count();
                        assert_int_equal(during.pins, before.pins + 1);
                        assert_int_equal(during.nsfs_mounts, before.nsfs_mounts + 1);
                        assert_int_equal(during.links, before.links + 1);
                        assert_int_equal(during.tables, before.tables + 1);
                        assert_true(during.addrs > before.addrs);
                        assert_true(during.routes > before.routes);
                }
                destroy_ok(id);
                assert_false(vmsnap_net_exists(&cfg, id));
        }
        assert_counts(net_test_count(), before, "after 50 create/destroy cycles");
        destroy_ok("cycle-0"); /* idempotent */
}

static const char *const crash_points[] = {
        "net-create-netns",         "net-create-veth",       "net-create-sandbox-links",
        "net-create-sandbox-rules", "net-create-host-rules", "net-create-host-links",
};

static const char *const destroy_crash_points[] = {
        "net-destroy-host-rules",
        "net-destroy-host-link",
};

/* Runs create (or, with `destroy`, create then destroy) in a child that SIGKILLs itself at
 * `point`: a daemon killed mid-create or mid-destroy. */
static void crash_at(const char *point, const struct vmsnap_net_spec *s, bool destroy)
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct vmsnap_net_config cfg = net_test_config();
                if (destroy && vmsnap_net_create(&cfg, s, NULL) < 0)
                        _exit(4);
                setenv("VMSNAP_CRASH_AT", point, 1);
                if (destroy)
                        vmsnap_net_destroy(&cfg, s->id, NULL);
                else
                        vmsnap_net_create(&cfg, s, NULL);
                _exit(3); /* the crash point was not reached */
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
                fail_msg("%s: the child was not killed there (status %#x)", point, status);
}

static void test_crash_then_sweep(void **state)
{
        (void)state;
        struct vmsnap_net_config cfg = net_test_config();
        struct vmsnap_net_spec keeper = net_test_spec("keeper", NULL, 0, "allow");
        create_ok(&keeper);
        struct net_counts with_keeper = net_test_count();
        const char *known[] = {"keeper"};
        size_t n_create = ARRAY_SIZE(crash_points);
        for (size_t i = 0; i < n_create + ARRAY_SIZE(destroy_crash_points); i++) {
                bool destroy = i >= n_create;
                const char *point = destroy ? destroy_crash_points[i - n_create] : crash_points[i];
                struct vmsnap_net_spec s = net_test_spec("crashed", &keeper.addrs, 1, "deny");
                crash_at(point, &s, destroy);
                assert_false(net_counts_equal(net_test_count(), with_keeper)); /* left over */
                size_t removed = 0;
                struct vmsnap_diag d = {0};
                if (vmsnap_net_sweep(&cfg, known, 1, &removed, &d) != 0)
                        fail_msg("sweep after %s: %s", point, d.msg);
                assert_true(removed >= 1);
                assert_counts(net_test_count(), with_keeper, point);
                assert_true(vmsnap_net_exists(&cfg, "keeper"));
        }
        /* the sweep with nothing to do, then without the keeper known */
        size_t removed = 99;
        assert_int_equal(vmsnap_net_sweep(&cfg, known, 1, &removed, NULL), 0);
        assert_int_equal(removed, 0);
        struct net_counts base = with_keeper;
        base.pins--, base.nsfs_mounts--, base.links--, base.tables--;
        assert_int_equal(vmsnap_net_sweep(&cfg, NULL, 0, &removed, NULL), 0);
        assert_int_equal(removed, 1);
        assert_false(vmsnap_net_exists(&cfg, "keeper"));
        assert_int_equal(net_test_count().links, base.links);
        assert_int_equal(net_test_count().tables, base.tables);
        assert_int_equal(net_test_count().pins, base.pins);
}

static void create_fails(const struct vmsnap_net_spec *s, int err, const char *mention)
{
        struct vmsnap_net_config cfg = net_test_config();
        struct vmsnap_diag d = {0};
        int r = vmsnap_net_create(&cfg, s, &d);
        if (r != err || !strstr(d.msg, mention))
                fail_msg("create %s: got %d '%s', want %d mentioning '%s'", s->id ? s->id : "-", r,
                         d.msg, err, mention);
}

static void test_bad_input(void **state)
{
        (void)state;
        struct net_counts before = net_test_count();
        struct vmsnap_net_spec s = net_test_spec("bad", NULL, 0, "allow");

        s.id = "../../etc/passwd";
        create_fails(&s, -EINVAL, "is not one of [A-Za-z0-9_-]");
        s.id = "-rf";
        create_fails(&s, -EINVAL, "starts with '-'");
        s.id = "bad";
        s.addrs.sandbox.s_addr = htonl(ntohl(s.addrs.sandbox.s_addr) + 4);
        create_fails(&s, -EINVAL, "are not a /30 slot of pool 10.201.0.0/16");
        s = net_test_spec("bad", NULL, 0, "allow");
        inet_pton(AF_INET, "192.0.2.1", &s.addrs.host);
        inet_pton(AF_INET, "192.0.2.2", &s.addrs.sandbox);
        create_fails(&s, -EINVAL, "not a /30 slot");
        s = net_test_spec("bad", NULL, 0, "allow");
        s.tap_uid = 0;
        create_fails(&s, -EINVAL, "jail's uid");
        s.tap_uid = 1000;
        s.egress.kind = VMSNAP_NET_EGRESS_CIDRS; /* with no CIDR */
        create_fails(&s, -EINVAL, "invalid egress policy");
        struct vmsnap_net_config bad_cfg = net_test_config();
        bad_cfg.slot_prefix = 29;
        struct vmsnap_diag d = {0};
        s = net_test_spec("bad", NULL, 0, "allow");
        assert_int_equal(vmsnap_net_create(&bad_cfg, &s, &d), -EINVAL);
        assert_counts(net_test_count(), before, "after refused specs");
}

/* A second create of a live id is refused before anything is made, and leaves the first
 * one whole. */
static void test_exists_refused(void **state)
{
        (void)state;
        struct vmsnap_net_spec s = net_test_spec("twice", NULL, 0, "allow");
        create_ok(&s);
        struct net_counts live = net_test_count();
        create_fails(&s, -EEXIST, "exists already");
        assert_counts(net_test_count(), live, "after a refused second create");
        destroy_ok("twice");
}

/* A link already holds the host-side name (another id with the same hash prefix): create
 * fails with -EEXIST after making the namespace, removes what it made, and neither create
 * nor destroy of that id touches the other owner's link. */
static void test_taken_link_name(void **state)
{
        (void)state;
        char link[IFNAMSIZ];
        net_link_name("victim", link);
        struct vmsnap_diag d = {0};
        struct nl_sock *sk;
        int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        assert_true(self >= 0);
        assert_int_equal(net_nl_open(&sk, &d), 0);
        if (net_veth_create(sk, link, "otherpeer", self, &d) < 0 ||
            net_link_configure(sk, link, NULL, NET_ALIAS_PREFIX "other-owner", &d) < 0)
                fail_msg("%s", d.msg);
        close(self);
        struct net_counts with_other = net_test_count();

        struct vmsnap_net_spec s = net_test_spec("victim", NULL, 0, "allow");
        create_fails(&s, -EEXIST, "a link of that name exists");
        assert_counts(net_test_count(), with_other, "after a create that met a taken name");
        destroy_ok("victim");
        char *alias = NULL;
        assert_int_equal(net_link_alias(sk, link, &alias, &d), 0);
        assert_string_equal(alias, NET_ALIAS_PREFIX "other-owner");
        free(alias);
        assert_int_equal(net_link_delete(sk, link, &d), 0);
        net_nl_close(sk);
}

int main(void)
{
        net_test_private_host();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cycles),          cmocka_unit_test(test_crash_then_sweep),
                cmocka_unit_test(test_bad_input),       cmocka_unit_test(test_exists_refused),
                cmocka_unit_test(test_taken_link_name),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
