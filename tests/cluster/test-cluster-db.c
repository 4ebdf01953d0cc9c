/* src/cluster/ against a real PostgreSQL (tests/lib/pg-run.sh starts it): migrations,
 * one interrupted by a server restart (nothing half-applied); hosts, heartbeats and lost
 * hosts; two real connections racing for one sandbox's lease (exactly one wins, every
 * round); fencing of a host declared lost; racing placements never overfill a host; a
 * restart before a placement commits; a server that is down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdbool.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmsnap/cluster.h>

#include "cluster/internal.h"

#define RACE_ROUNDS   200
#define CREATE_ROUNDS 20

static char conninfo[512];

/* Connections a case opened through open_ok(): closed by the teardown, also after a failed
 * assertion, so a failing case reports its failure and not libpq leaks besides. */
static struct vmsnap_cluster *opened[8];

static void track(struct vmsnap_cluster *c)
{
        for (size_t i = 0; i < sizeof(opened) / sizeof(opened[0]); i++)
                if (!opened[i]) {
                        opened[i] = c;
                        return;
                }
        vmsnap_cluster_close(c);
        fail_msg("too many open connections in one case");
}

static int close_all(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(opened) / sizeof(opened[0]); i++) {
                vmsnap_cluster_close(opened[i]);
                opened[i] = NULL;
        }
        return 0;
}

static void quiet(void *arg, const char *message)
{
        (void)arg;
        (void)message;
}

/* Runs sql on a new connection to dbname; returns the first cell into out (or "") and the
 * error message ("" on success) into err. Frees everything before returning. */
static void run_sql(const char *dbname, const char *sql, char *out, size_t size, char *err,
                    size_t err_size)
{
        char info[600];
        snprintf(info, sizeof(info), "host=%s user=vmsnap dbname=%s", getenv("VMSNAP_PG_DIR"), dbname);
        out[0] = err[0] = '\0';
        PGconn *pg = PQconnectdb(info);
        if (PQstatus(pg) != CONNECTION_OK) {
                snprintf(err, err_size, "connect %s: %s", dbname, PQerrorMessage(pg));
                PQfinish(pg);
                return;
        }
        PQsetNoticeProcessor(pg, quiet, NULL); /* "… does not exist, skipping" */
        PGresult *res = PQexec(pg, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
                snprintf(err, err_size, "%s: %s", sql, PQresultErrorMessage(res));
        else if (st == PGRES_TUPLES_OK && PQntuples(res))
                snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        PQfinish(pg);
}

static char dbname_now[64];

/* Creates (or recreates) database name and points conninfo at it. */
static const char *fresh_db(const char *name)
{
        char sql[200], out[8], err[512];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
        run_sql("postgres", sql, out, sizeof(out), err, sizeof(err));
        if (err[0])
                fail_msg("%s", err);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        run_sql("postgres", sql, out, sizeof(out), err, sizeof(err));
        if (err[0])
                fail_msg("%s", err);
        snprintf(dbname_now, sizeof(dbname_now), "%s", name);
        snprintf(conninfo, sizeof(conninfo), "host=%s user=vmsnap dbname=%s", getenv("VMSNAP_PG_DIR"),
                 name);
        return conninfo;
}

/* Runs one SQL statement on a new connection and returns the first cell (static). */
static const char *raw(const char *sql)
{
        static char out[256];
        char err[512];
        run_sql(dbname_now, sql, out, sizeof(out), err, sizeof(err));
        if (err[0])
                fail_msg("%s", err);
        return out;
}

static void server(const char *verb)
{
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "bash %s %s %s", getenv("VMSNAP_PG_SCRIPT"), verb,
                 getenv("VMSNAP_PG_DIR"));
        assert_int_equal(system(cmd), 0);
}

/* Crash-like restart: every connection breaks, open transactions are lost. */
static void restart_server(void)
{
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "bash %s stop %s immediate", getenv("VMSNAP_PG_SCRIPT"),
                 getenv("VMSNAP_PG_DIR"));
        assert_int_equal(system(cmd), 0);
        server("start");
}

static const char *restart_at;

static void restart_hook(const char *point)
{
        if (restart_at && strcmp(point, restart_at) == 0)
                restart_server();
}

static struct vmsnap_cluster *open_ok(void)
{
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster *c = NULL;
        int r = vmsnap_cluster_open(conninfo, &c, &d);
        if (r != 0)
                fail_msg("open: %d %s", r, d.msg);
        track(c);
        return c;
}

static int64_t register_host(struct vmsnap_cluster *c, const char *id, uint32_t vcpus, uint64_t mem)
{
        struct vmsnap_cluster_host_info h = { .vcpus = vcpus, .memory_mib = mem, .disk_mib = 1 << 20 };
        struct vmsnap_diag d = { 0 };
        int64_t epoch = 0;
        snprintf(h.id, sizeof(h.id), "%s", id);
        snprintf(h.endpoint, sizeof(h.endpoint), "127.0.0.1:7420");
        int r = vmsnap_cluster_host_register(c, &h, &epoch, &d);
        if (r != 0)
                fail_msg("register %s: %d %s", id, r, d.msg);
        return epoch;
}

static void create_on(struct vmsnap_cluster *c, const char *id, const char *host)
{
        struct vmsnap_cluster_request r = { .vcpus = 1, .memory_mib = 256, .pin_host = host };
        char got[VMSNAP_CLUSTER_ID_MAX];
        struct vmsnap_diag d = { 0 };
        int err = vmsnap_cluster_sandbox_create(c, id, NULL, &r, got, &d);
        if (err != 0)
                fail_msg("create %s: %d %.900s", id, err, d.msg);
        assert_string_equal(got, host);
}

static void test_migrate(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster *c = NULL;
        int v = -1;
        fresh_db("mig");
        c = open_ok();
        assert_int_equal(vmsnap_cluster_schema_version(c, &v, &d), 0);
        assert_int_equal(v, vmsnap_cluster_schema_latest());
        open_ok(); /* again: nothing to do */
        raw("INSERT INTO schema_migrations (version) VALUES (999)");
        assert_int_equal(vmsnap_cluster_open(conninfo, &c, &d), -EPROTONOSUPPORT);
        assert_non_null(strstr(d.msg, "newer"));
}

static void test_migration_interrupted(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster *c = NULL;
        fresh_db("mig_cut");
        cluster_test_hook = restart_hook;
        restart_at = "migration.1.3"; /* hosts and templates created, transaction open */
        int r = vmsnap_cluster_open(conninfo, &c, &d);
        cluster_test_hook = NULL;
        if (r != -ECONNRESET)
                fail_msg("open across a restart: %d (%s), want -ECONNRESET", r, d.msg);
        assert_null(c);
        assert_non_null(strstr(d.msg, "migration 1"));
        /* Nothing of the migration survived, not even the version table of its transaction. */
        assert_string_equal(raw("SELECT to_regclass('hosts') IS NULL"), "t");
        assert_string_equal(raw("SELECT to_regclass('templates') IS NULL"), "t");
        assert_string_equal(raw("SELECT to_regclass('schema_migrations') IS NULL"), "t");
        open_ok();
        char latest[16];
        snprintf(latest, sizeof(latest), "%d", vmsnap_cluster_schema_latest());
        assert_string_equal(raw("SELECT max(version) FROM schema_migrations"), latest);
}

static void test_hosts(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        fresh_db("hosts");
        struct vmsnap_cluster *c = open_ok();
        struct vmsnap_cluster_host_info bad = { .id = "bad id", .vcpus = 1, .memory_mib = 1 };
        int64_t e, epoch;
        bool alive;
        assert_int_equal(vmsnap_cluster_host_register(c, &bad, &e, &d), -EINVAL);
        snprintf(bad.id, sizeof(bad.id), "h0");
        bad.vcpus = 0;
        assert_int_equal(vmsnap_cluster_host_register(c, &bad, &e, &d), -EINVAL);

        int64_t a1 = register_host(c, "a", 4, 4096);
        int64_t a2 = register_host(c, "a", 4, 4096); /* a restart: a new incarnation */
        assert_int_equal(a2, a1 + 1);
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "a", a1, &d), -ESTALE);
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "a", a2, &d), 0);
        int64_t b = register_host(c, "b", 4, 4096);
        assert_int_equal(vmsnap_cluster_hosts_mark_lost(c, 60000, NULL, &d), 0);
        usleep(2000);
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "b", b, &d), 0);
        /* a timeout of 0: every host whose last heartbeat is in the past, but the caller b */
        assert_int_equal(vmsnap_cluster_hosts_mark_lost(c, 0, "b", &d), 1);
        assert_int_equal(vmsnap_cluster_host_state(c, "a", &alive, &epoch, &d), 0);
        assert_false(alive);
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "a", a2, &d), -ESTALE);
        assert_non_null(strstr(d.msg, "marked lost"));
        assert_int_equal(vmsnap_cluster_hosts_mark_lost(c, 0, "b", &d), 0); /* idempotent */
        int64_t a3 = register_host(c, "a", 4, 4096);
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "a", a3, &d), 0);
        assert_int_equal(vmsnap_cluster_host_state(c, "a", &alive, &epoch, &d), 0);
        assert_true(alive);
        assert_int_equal(vmsnap_cluster_host_state(c, "zz", &alive, &epoch, &d), -ENOENT);
}

struct racer {
        pthread_barrier_t *start, *done;
        const bool *stop; /* read after the start barrier: leave the loop */
        const char *host, *op;
        int64_t epoch;
        char sandbox[VMSNAP_CLUSTER_ID_MAX];
        int result;
        int64_t token;
        char msg[1024];
};

/* One racing connection: each round, waits for the start, tries the lease, reports. It
 * never asserts (a failure here would leave the other side waiting on the barriers); the
 * main thread judges the results. */
static void *race(void *arg)
{
        struct racer *r = arg;
        struct vmsnap_cluster *c = NULL;
        struct vmsnap_diag d = { 0 };
        int open_err = vmsnap_cluster_open(conninfo, &c, &d);
        char open_msg[sizeof(d.msg)];
        snprintf(open_msg, sizeof(open_msg), "%s", d.msg);
        for (;;) {
                pthread_barrier_wait(r->start);
                if (*r->stop)
                        break;
                d.msg[0] = '\0';
                if (open_err < 0) {
                        r->result = open_err;
                        snprintf(r->msg, sizeof(r->msg), "open: %.900s", open_msg);
                } else {
                        r->result = vmsnap_cluster_lease_acquire(c, r->sandbox, r->host, r->epoch,
                                                                 r->op, &r->token, &d);
                        snprintf(r->msg, sizeof(r->msg), "%s", d.msg);
                }
                pthread_barrier_wait(r->done);
        }
        vmsnap_cluster_close(c);
        return NULL;
}

/* Checks one round of the race on sandbox id; returns the winner (0, 1) or -1 with why. */
static int judge_round(struct vmsnap_cluster *c, struct racer r[2], const char *id, char *why,
                       size_t size)
{
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster_sandbox s;
        if (!((r[0].result == 0 && r[1].result == -EBUSY) ||
              (r[1].result == 0 && r[0].result == -EBUSY))) {
                snprintf(why, size, "%s: results %d (%.200s) and %d (%.200s)", id, r[0].result, r[0].msg,
                         r[1].result, r[1].msg);
                return -1;
        }
        int w = r[0].result == 0 ? 0 : 1;
        const char *final = w == 0 ? "running" : "stopped";
        int err = vmsnap_cluster_sandbox_finish(c, id, r[w].host, r[w].token, final, &d);
        if (err == 0)
                err = vmsnap_cluster_sandbox_get(c, id, &s, &d);
        if (err < 0) {
                snprintf(why, size, "%s: finish/read by the winner: %d %s", id, err, d.msg);
                return -1;
        }
        if (strcmp(s.state, final) || strcmp(s.host_id, r[w].host) || s.lease_host[0]) {
                snprintf(why, size, "%s: state %s host %s lease %s after the winner finished", id,
                         s.state, s.host_id, s.lease_host);
                return -1;
        }
        /* The loser never got a token: a write with the winner's token as the loser is refused. */
        err = vmsnap_cluster_sandbox_set_state(c, id, r[!w].host, r[w].token, "paused", &d);
        if (err != -ESTALE) {
                snprintf(why, size, "%s: the loser's write returned %d, want -ESTALE", id, err);
                return -1;
        }
        return w;
}

/* Resume on host a and destroy on host b of the same sandbox at the same moment, on two
 * connections: every round exactly one wins; the loser gets -EBUSY; the winner's finish
 * sticks. */
static void test_lease_race(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        pthread_barrier_t start, done;
        pthread_t t[2];
        bool stop = false;
        char why[1200] = "";
        fresh_db("race");
        struct vmsnap_cluster *c = open_ok();
        struct racer r[2] = { { .host = "a", .op = "resume" }, { .host = "b", .op = "destroy" } };
        /* room for every round's sandbox: the winners of resume keep holding theirs */
        r[0].epoch = register_host(c, "a", 4 * RACE_ROUNDS, 1 << 30);
        r[1].epoch = register_host(c, "b", 4 * RACE_ROUNDS, 1 << 30);
        pthread_barrier_init(&start, NULL, 3);
        pthread_barrier_init(&done, NULL, 3);
        for (int i = 0; i < 2; i++) {
                r[i].start = &start;
                r[i].done = &done;
                r[i].stop = &stop;
                assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
        }
        int wins[2] = { 0, 0 };
        for (int round = 0; round < RACE_ROUNDS && !why[0]; round++) {
                char id[VMSNAP_CLUSTER_ID_MAX];
                struct vmsnap_cluster_request req = { .vcpus = 1, .memory_mib = 256 };
                char got[VMSNAP_CLUSTER_ID_MAX];
                snprintf(id, sizeof(id), "sb-%d", round);
                req.pin_host = round % 2 ? "a" : "b";
                int err = vmsnap_cluster_sandbox_create(c, id, NULL, &req, got, &d);
                if (err < 0) {
                        snprintf(why, sizeof(why), "create %s: %d %.900s", id, err, d.msg);
                        break;
                }
                snprintf(r[0].sandbox, sizeof(r[0].sandbox), "%s", id);
                snprintf(r[1].sandbox, sizeof(r[1].sandbox), "%s", id);
                pthread_barrier_wait(&start);
                pthread_barrier_wait(&done);
                int w = judge_round(c, r, id, why, sizeof(why));
                if (w >= 0)
                        wins[w]++;
        }
        stop = true;
        pthread_barrier_wait(&start); /* lets both threads see stop and leave */
        for (int i = 0; i < 2; i++)
                pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        pthread_barrier_destroy(&done);
        if (why[0])
                fail_msg("%s", why);
        printf("# lease race: %d rounds, host a won %d, host b won %d\n", RACE_ROUNDS, wins[0], wins[1]);
        assert_int_equal(wins[0] + wins[1], RACE_ROUNDS);
}

/* Host a holds a lease and is declared lost: its writes are refused, b takes over with a
 * larger token, a's old token stays dead after a re-registers. */
static void test_fencing(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster_sandbox s;
        int64_t ta, tb, ta2;
        fresh_db("fence");
        struct vmsnap_cluster *c = open_ok();
        int64_t ea = register_host(c, "a", 8, 8192);
        int64_t eb = register_host(c, "b", 8, 8192);
        create_on(c, "s1", "a");
        create_on(c, "s2", "a"); /* paused before a is lost: stays paused */
        create_on(c, "s3", "a"); /* running when a is lost: lost with it */
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s2", "a", ea, "pause", &ta, &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_finish(c, "s2", "a", ta, "paused", &d), 0);
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s3", "a", ea, "create", &ta, &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_finish(c, "s3", "a", ta, "running", &d), 0);
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s1", "a", ea, "pause", &ta, &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_set_state(c, "s1", "a", ta, "pausing", &d), 0);
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s1", "b", eb, "resume", &tb, &d), -EBUSY);
        assert_non_null(strstr(d.msg, "busy"));
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "nope", "b", eb, "resume", &tb, &d), -ENOENT);
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s1", "b", eb + 1, "resume", &tb, &d), -ESTALE);

        usleep(2000);
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "b", eb, &d), 0);
        assert_int_equal(vmsnap_cluster_hosts_mark_lost(c, 0, "b", &d), 1);
        assert_int_equal(vmsnap_cluster_sandbox_get(c, "s1", &s, &d), 0);
        assert_string_equal(s.state, "lost"); /* was pausing: its memory died with a */
        assert_int_equal(vmsnap_cluster_sandbox_get(c, "s2", &s, &d), 0);
        assert_string_equal(s.state, "paused");
        assert_int_equal(vmsnap_cluster_sandbox_get(c, "s3", &s, &d), 0);
        assert_string_equal(s.state, "lost");
        /* a's lease died with it: even before anyone takes over, its writes are refused. */
        assert_int_equal(vmsnap_cluster_sandbox_set_state(c, "s1", "a", ta, "paused", &d), -ESTALE);
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s1", "a", ea, "pause", &ta2, &d), -ESTALE);
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s1", "b", eb, "resume", &tb, &d), 0);
        assert_true(tb > ta);
        int64_t ea2 = register_host(c, "a", 8, 8192); /* a comes back */
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s1", "a", ea2, "pause", &ta2, &d), -EBUSY);
        assert_int_equal(vmsnap_cluster_lease_release(c, "s1", "a", ta, &d), -ESTALE);
        assert_int_equal(vmsnap_cluster_sandbox_set_state(c, "s1", "b", tb, "bogus", &d), -EINVAL);
        assert_int_equal(vmsnap_cluster_sandbox_finish(c, "s1", "b", tb, "running", &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_get(c, "s1", &s, &d), 0);
        assert_string_equal(s.host_id, "b"); /* moved to the host that resumed it */
        assert_string_equal(s.state, "running");
        assert_int_equal(vmsnap_cluster_lease_release(c, "s1", "b", tb, &d), -ESTALE); /* released */
}

struct creator {
        int round, thread, ok, full, other;
        char msg[1024]; /* the first unexpected error */
};

static void *create_many(void *arg)
{
        struct creator *cr = arg;
        struct vmsnap_cluster *c = NULL;
        struct vmsnap_diag d = { 0 };
        if (vmsnap_cluster_open(conninfo, &c, &d) != 0) {
                cr->other++;
                snprintf(cr->msg, sizeof(cr->msg), "open: %.900s", d.msg);
                return NULL;
        }
        for (int i = 0; i < 4; i++) {
                struct vmsnap_cluster_request r = { .vcpus = 1, .memory_mib = 256 };
                char id[VMSNAP_CLUSTER_ID_MAX], host[VMSNAP_CLUSTER_ID_MAX];
                snprintf(id, sizeof(id), "r%d-t%d-%d", cr->round, cr->thread, i);
                int err = vmsnap_cluster_sandbox_create(c, id, NULL, &r, host, &d);
                if (err == 0)
                        cr->ok++;
                else if (err == -ENOSPC)
                        cr->full++;
                else if (cr->other++ == 0)
                        snprintf(cr->msg, sizeof(cr->msg), "create %s: %d %.900s", id, err, d.msg);
        }
        vmsnap_cluster_close(c);
        return NULL;
}

/* Two connections place 8 one-vCPU sandboxes at once on hosts with 2 + 3 vCPUs: exactly 5
 * land, no host holds more than it has. */
static void test_create_race(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        fresh_db("place");
        struct vmsnap_cluster *c = open_ok();
        for (int round = 0; round < CREATE_ROUNDS; round++) {
                char a[32], b[32];
                usleep(1000);
                assert_true(vmsnap_cluster_hosts_mark_lost(c, 0, NULL, &d) >= 0); /* last round's */
                snprintf(a, sizeof(a), "r%d-a", round);
                snprintf(b, sizeof(b), "r%d-b", round);
                register_host(c, a, 2, 65536);
                register_host(c, b, 3, 65536);
                struct creator cr[2] = { { .round = round, .thread = 0 }, { .round = round, .thread = 1 } };
                pthread_t t[2];
                for (int i = 0; i < 2; i++)
                        assert_int_equal(pthread_create(&t[i], NULL, create_many, &cr[i]), 0);
                for (int i = 0; i < 2; i++)
                        pthread_join(t[i], NULL);
                for (int i = 0; i < 2; i++)
                        if (cr[i].other)
                                fail_msg("round %d thread %d: %s", round, i, cr[i].msg);
                assert_int_equal(cr[0].ok + cr[1].ok, 5);
                assert_int_equal(cr[0].full + cr[1].full, 3);
                struct vmsnap_cluster_host *hosts = NULL;
                size_t n = 0;
                assert_int_equal(vmsnap_cluster_hosts_load(c, NULL, &hosts, &n, &d), 0);
                for (size_t i = 0; i < n; i++)
                        assert_true(hosts[i].used_vcpus <= hosts[i].vcpus);
                free(hosts);
        }
}

/* The server restarts while a placement's transaction is open: the create fails cleanly,
 * no row exists, and the same connection works again afterwards. */
static void test_restart_mid_create(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster_sandbox s;
        struct vmsnap_cluster_request r = { .vcpus = 1, .memory_mib = 256 };
        char host[VMSNAP_CLUSTER_ID_MAX];
        fresh_db("restart");
        struct vmsnap_cluster *c = open_ok();
        register_host(c, "a", 4, 4096);
        cluster_test_hook = restart_hook;
        restart_at = "create.commit";
        int err = vmsnap_cluster_sandbox_create(c, "s1", NULL, &r, host, &d);
        cluster_test_hook = NULL;
        assert_int_equal(err, -ECONNRESET);
        assert_string_equal(raw("SELECT count(*) FROM sandboxes"), "0");
        assert_int_equal(vmsnap_cluster_sandbox_get(c, "s1", &s, &d), -ENOENT); /* reconnected */
        assert_int_equal(vmsnap_cluster_sandbox_create(c, "s1", NULL, &r, host, &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_create(c, "s1", NULL, &r, host, &d), -EEXIST);
}

/* A server that is down: clean errors, no crash; the connection recovers once it is up. */
static void test_server_down(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster *c2 = NULL;
        fresh_db("down");
        struct vmsnap_cluster *c = open_ok();
        int64_t e = register_host(c, "a", 4, 4096);
        server("stop");
        int err = vmsnap_cluster_host_heartbeat(c, "a", e, &d);
        assert_true(err == -ECONNRESET || err == -ECONNREFUSED);
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "a", e, &d), -ECONNREFUSED);
        assert_non_null(strstr(d.msg, "cannot reconnect"));
        assert_int_equal(vmsnap_cluster_open(conninfo, &c2, &d), -ECONNREFUSED);
        assert_null(c2);
        server("start");
        assert_int_equal(vmsnap_cluster_host_heartbeat(c, "a", e, &d), 0);
}

/* A connection left idle while the server restarts: its next call reconnects and works,
 * instead of failing once on the dead socket. */
static void test_idle_across_restart(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        fresh_db("idle");
        struct vmsnap_cluster *c = open_ok();
        int64_t e = register_host(c, "a", 4, 4096);
        restart_server();
        int err = vmsnap_cluster_host_heartbeat(c, "a", e, &d);
        if (err != 0)
                fail_msg("heartbeat after an idle restart: %d %s", err, d.msg);
}

/* A placed create ends (state, or the row dropped); the pause snapshot is written only under
 * the lease token; the list carries both. */
static void test_placed_rows(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        fresh_db("placed");
        struct vmsnap_cluster *c = open_ok();
        int64_t ea = register_host(c, "ha", 4, 4096);
        register_host(c, "hb", 4, 4096);
        create_on(c, "s1", "ha");
        create_on(c, "s2", "ha");
        assert_int_equal(vmsnap_cluster_sandbox_created(c, "s1", "hb", "running", 1, 128, &d), -ESTALE);
        assert_int_equal(vmsnap_cluster_sandbox_created(c, "s1", "ha", "running", 1, 128, &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_created(c, "s1", "ha", "running", 1, 128, &d), -ESTALE);
        assert_int_equal(vmsnap_cluster_sandbox_created(c, "s2", "ha", NULL, 0, 0, &d), 0);
        struct vmsnap_cluster_sandbox row;
        assert_int_equal(vmsnap_cluster_sandbox_get(c, "s2", &row, &d), -ENOENT);
        int64_t token;
        assert_int_equal(vmsnap_cluster_sandbox_set_snapshot(c, "s1", "ha", 1, "p1", &d), -ESTALE);
        assert_int_equal(vmsnap_cluster_lease_acquire(c, "s1", "ha", ea, "pause", &token, &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_set_snapshot(c, "s1", "hb", token, "p1", &d),
                         -ESTALE);
        assert_int_equal(vmsnap_cluster_sandbox_set_snapshot(c, "s1", "ha", token, "p1", &d), 0);
        assert_int_equal(vmsnap_cluster_sandbox_finish(c, "s1", "ha", token, "paused", &d), 0);
        struct vmsnap_cluster_sandbox *rows = NULL;
        size_t n = 0;
        assert_int_equal(vmsnap_cluster_sandbox_list(c, false, &rows, &n, &d), 0);
        assert_int_equal(n, 1);
        assert_string_equal(rows[0].id, "s1");
        assert_string_equal(rows[0].state, "paused");
        assert_string_equal(rows[0].pause_snapshot, "p1");
        assert_int_equal(rows[0].memory_mib, 128); /* the reservation guessed 256 */
        free(rows);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_migrate, close_all),
                cmocka_unit_test_teardown(test_migration_interrupted, close_all),
                cmocka_unit_test_teardown(test_hosts, close_all),
                cmocka_unit_test_teardown(test_lease_race, close_all),
                cmocka_unit_test_teardown(test_fencing, close_all),
                cmocka_unit_test_teardown(test_create_race, close_all),
                cmocka_unit_test_teardown(test_restart_mid_create, close_all),
                cmocka_unit_test_teardown(test_server_down, close_all),
                cmocka_unit_test_teardown(test_idle_across_restart, close_all),
                cmocka_unit_test_teardown(test_placed_rows, close_all),
        };
        if (getenv("VMSNAP_TEST_FILTER")) /* one case while debugging, e.g. test_fencing */
                cmocka_set_test_filter(getenv("VMSNAP_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
