/* vmsnapd's pure parts, without a server: the request-body parsers (every field's type,
 * range and the message that names it), route matching (ref capture, 404 vs 405 and the
 * Allow list), the raw request-target check, the errno → status table, UTF-8 repair of
 * command output, and the metrics text (method labels, every status with its series). The sources
 * are compiled into this test directly: vmsnapd is a program, not part of libvmsnap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/body.c"
#include "api/exec-body.c"
#include "api/errors.c"
#include "api/json.c"
#include "api/metrics.c"
#include "api/routes.c"
#include "api/vmm-memory.c"
#include "util/cleanup.h"

#define S(text) text, strlen(text)

/* ---- body parsers ------------------------------------------------------------------------- */

/* Parses a sandbox body that must fail with err; the message must mention `mention`. */
static void sandbox_fails(const char *text, int err, const char *mention)
{
        struct vmsnap_diag d = {0};
        struct api_sandbox_body b;
        int r = api_parse_sandbox_body(text, strlen(text), true, &b, &d);
        if (r != err || !strstr(d.msg, mention))
                fail_msg("'%s': got %d '%s', want %d mentioning '%s'", text, r, d.msg, err,
                         mention);
}

static void test_sandbox_body_ok(void **state)
{
        (void)state;
        struct vmsnap_diag d = {0};
        struct api_sandbox_body b;
        assert_int_equal(api_parse_sandbox_body(S("{\"name\":\"web-1\",\"vcpus\":2,"
                                                  "\"memory_mib\":512,\"vmm\":\"qemu\","
                                                  "\"idle_timeout\":300,\"template\":\"base\"}"),
                                                true, &b, &d),
                         0);
        assert_string_equal(b.name, "web-1");
        assert_int_equal(b.vcpus, 2);
        assert_int_equal(b.memory, 512ull << 20);
        assert_string_equal(b.vmm, "qemu");
        assert_int_equal(b.idle_timeout, 300);
        assert_string_equal(b.template_ref, "base");

        /* Empty body, whitespace, {} and nulls all mean "defaults". */
        const char *empties[] = {"", "  \n", "{}", "{\"name\":null,\"vcpus\":null}"};
        for (size_t i = 0; i < ARRAY_SIZE(empties); i++) {
                assert_int_equal(api_parse_sandbox_body(S(empties[i]), true, &b, &d), 0);
                assert_string_equal(b.name, "");
                assert_int_equal(b.vcpus, 0);
                assert_int_equal(b.memory, 0);
                assert_string_equal(b.template_ref, "");
        }
        assert_int_equal(api_parse_sandbox_body(S("{\"name\":\"\"}"), true, &b, &d), 0);
        assert_string_equal(b.name, "");
}

static void test_sandbox_body_errors(void **state)
{
        (void)state;
        sandbox_fails("{", -EBADMSG, "not valid JSON");
        sandbox_fails("[1,2]", -EBADMSG, "must be a JSON object");
        sandbox_fails("\"x\"", -EBADMSG, "not valid JSON");
        sandbox_fails("{} {}", -EBADMSG, "not valid JSON");
        sandbox_fails("{\"name\":\"a\",\"name\":\"b\"}", -EBADMSG, "duplicate");
        sandbox_fails("{\"vcpus\":0}", -EINVAL, "'vcpus'");
        sandbox_fails("{\"vcpus\":257}", -EINVAL, "'vcpus'");
        sandbox_fails("{\"vcpus\":-1}", -EINVAL, "'vcpus'");
        sandbox_fails("{\"vcpus\":1.5}", -EINVAL, "'vcpus'");
        sandbox_fails("{\"vcpus\":\"2\"}", -EINVAL, "'vcpus'");
        sandbox_fails("{\"vcpus\":true}", -EINVAL, "'vcpus'");
        sandbox_fails("{\"memory_mib\":0}", -EINVAL, "'memory_mib'");
        sandbox_fails("{\"memory_mib\":9223372036854775807}", -EINVAL, "'memory_mib'");
        sandbox_fails("{\"idle_timeout\":4294967296}", -EINVAL, "'idle_timeout'");
        sandbox_fails("{\"name\":5}", -EINVAL, "'name' must be a string");
        sandbox_fails("{\"name\":\"-bad\"}", -EINVAL, "'name'");
        sandbox_fails("{\"name\":\"has space\"}", -EINVAL, "'name'");
        sandbox_fails("{\"name\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                      "X\"}",
                      -EINVAL, "'name' is too long");
        /* A name shaped like an id would make refs ambiguous. */
        sandbox_fails("{\"name\":\"3f2b1c4d-0000-4000-8000-123456789abc\"}", -EINVAL, "'name'");
        sandbox_fails("{\"vmm\":\"QEMU\"}", -EINVAL, "'vmm'");
        sandbox_fails("{\"vmm\":\"../x\"}", -EINVAL, "'vmm'");
        sandbox_fails("{\"template\":\"a/b\"}", -EINVAL, "'template'");
        sandbox_fails("{\"template\":\"a b\"}", -EINVAL, "'template'");
        sandbox_fails("{\"colour\":\"red\"}", -EINVAL, "unknown field 'colour'");
        sandbox_fails("{\"memory\":256}", -EINVAL, "known fields: name, vcpus, memory_mib");

        /* Spawn bodies take no "template" (the path names it). */
        struct vmsnap_diag d = {0};
        struct api_sandbox_body b;
        assert_int_equal(api_parse_sandbox_body(S("{\"template\":\"x\"}"), false, &b, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "unknown field 'template'"));
}

static void test_exec_body(void **state)
{
        (void)state;
        struct vmsnap_diag d = {0};
        struct api_exec_body b = {0};
        assert_int_equal(api_parse_exec_body(S("{\"cmd\":\"echo hi\"}"), &b, &d), 0);
        assert_string_equal(b.argv[0], "/bin/sh");
        assert_string_equal(b.argv[2], "echo hi");
        assert_null(b.argv[3]);
        assert_false(b.has_timeout);
        api_exec_body_clear(&b);
        assert_null(b.argv);
        assert_int_equal(api_parse_exec_body(S("{\"cmd\":\"x\",\"timeout_ms\":250}"), &b, &d), 0);
        assert_int_equal(b.timeout_ms, 250);
        api_exec_body_clear(&b);
        /* argv exactly; argv_b64 for bytes that are not UTF-8; env; stdin */
        assert_int_equal(api_parse_exec_body(S("{\"argv\":[\"printf\",\"%s\",\"a b\"],"
                                               "\"env\":{\"A\":\"1 2\"},\"stdin_b64\":\"aGk=\"}"),
                                             &b, &d),
                         0);
        assert_string_equal(b.argv[2], "a b");
        assert_string_equal(b.env[0], "A=1 2");
        assert_int_equal(b.in_len, 2);
        assert_memory_equal(b.in, "hi", 2);
        api_exec_body_clear(&b);
        assert_int_equal(api_parse_exec_body(S("{\"argv_b64\":[\"ZWNobw==\",\"/4A=\"]}"), &b, &d), 0);
        assert_string_equal(b.argv[0], "echo");
        assert_string_equal(b.argv[1], "\xff\x80");
        api_exec_body_clear(&b);

        const char *bad[][2] = {
                {"{}", "exactly one of"},
                {"", "exactly one of"},
                {"{\"cmd\":\"\"}", "'cmd' must be a non-empty string"},
                {"{\"cmd\":null}", "exactly one of"},
                {"{\"cmd\":[\"ls\"]}", "'cmd' must be a non-empty string"},
                {"{\"cmd\":\"x\",\"argv\":[\"x\"]}", "exactly one of"},
                {"{\"argv\":[]}", "'argv' must be an array"},
                {"{\"argv\":[\"\"]}", "is empty"},
                {"{\"argv\":[1]}", "must be a string"},
                {"{\"argv_b64\":[\"AA==\"]}", "NUL"},
                {"{\"argv_b64\":[\"!!\"]}", "not base64"},
                {"{\"argv\":[\"x\"],\"env\":{\"1A\":\"x\"}}", "'env'"},
                {"{\"argv\":[\"x\"],\"cwd\":\"tmp\"}", "'cwd'"},
                {"{\"argv\":[\"x\"],\"rows\":0}", "'rows'"},
                {"{\"argv\":[\"x\"],\"background\":true,\"tty\":true}", "background"},
                {"{\"cmd\":\"x\",\"timeout_ms\":0}", "'timeout_ms'"},
                {"{\"cmd\":\"x\",\"timeout_ms\":86400001}", "'timeout_ms'"},
                {"{\"cmd\":\"x\",\"timeout\":5}", "unknown field 'timeout'"},
                {"{\"cmd\":\"\\u0000\"}", "not valid JSON"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                vmsnap_diag_clear(&d);
                assert_true(api_parse_exec_body(S(bad[i][0]), &b, &d) < 0);
                if (!strstr(d.msg, bad[i][1]))
                        fail_msg("'%s': '%s' does not mention '%s'", bad[i][0], d.msg, bad[i][1]);
                assert_null(b.argv);
        }
}

static void test_snapshot_bodies(void **state)
{
        (void)state;
        struct vmsnap_diag d = {0};
        struct api_snapshot_body s;
        assert_int_equal(api_parse_snapshot_body(S("{\"name\":\"tpl\"}"), &s, &d), 0);
        assert_string_equal(s.name, "tpl");
        assert_int_equal(api_parse_snapshot_body(S("{}"), &s, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "'name' is required"));

        struct api_snapshot_create_body *c = malloc(sizeof(*c));
        assert_int_equal(
                api_parse_snapshot_create_body(S("{\"sandbox\":\"sb1\",\"name\":\"t\"}"), c, &d),
                0);
        assert_string_equal(c->sandbox, "sb1");
        assert_string_equal(c->path, "");
        assert_int_equal(api_parse_snapshot_create_body(S("{\"path\":\"/x.tar\"}"), c, &d), 0);
        assert_string_equal(c->path, "/x.tar");
        const char *bad[][2] = {
                {"{}", "one of the fields 'sandbox'"},
                {"{\"sandbox\":\"a\",\"path\":\"/b\"}", "exclude each other"},
                {"{\"sandbox\":\"a\"}", "'name' is required with 'sandbox'"},
                {"{\"path\":\"rel/x.tar\"}", "absolute path"},
                {"{\"sandbox\":\"a\",\"name\":\"t\",\"description\":\"d\"}", "'description'"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                vmsnap_diag_clear(&d);
                assert_int_equal(api_parse_snapshot_create_body(S(bad[i][0]), c, &d), -EINVAL);
                if (!strstr(d.msg, bad[i][1]))
                        fail_msg("'%s': '%s' does not mention '%s'", bad[i][0], d.msg, bad[i][1]);
        }
        free(c);

        assert_int_equal(api_parse_empty_body(S(""), &d), 0);
        assert_int_equal(api_parse_empty_body(S("{}"), &d), 0);
        assert_int_equal(api_parse_empty_body(S("{\"force\":true}"), &d), -EINVAL);
        assert_int_equal(api_parse_empty_body(S("nope"), &d), -EBADMSG);
}

/* ---- routes ------------------------------------------------------------------------------- */

static void test_routes(void **state)
{
        (void)state;
        enum api_route r;
        char ref[API_REF_MAX + 1], allow[64];
        assert_int_equal(api_route_match("GET", "/healthz", &r, ref, allow, sizeof(allow)), 0);
        assert_int_equal(r, API_ROUTE_HEALTHZ);
        assert_true(api_route_info(r)->public);
        assert_int_equal(api_route_match("HEAD", "/metrics", &r, ref, allow, sizeof(allow)), 0);
        assert_int_equal(r, API_ROUTE_METRICS);
        assert_false(api_route_info(r)->public);

        assert_int_equal(
                api_route_match("POST", "/v1/sandboxes/web-1/pause", &r, ref, allow, sizeof(allow)),
                0);
        assert_int_equal(r, API_ROUTE_SANDBOX_PAUSE);
        assert_string_equal(ref, "web-1");
        assert_int_equal(
                api_route_match("DELETE", "/v1/snapshots/abc", &r, ref, allow, sizeof(allow)), 0);
        assert_int_equal(r, API_ROUTE_SNAPSHOT_DELETE);
        assert_int_equal(api_route_match("POST", "/v1/snapshots/tpl/sandboxes", &r, ref, allow,
                                         sizeof(allow)),
                         0);
        assert_int_equal(r, API_ROUTE_SNAPSHOT_SPAWN);
        assert_string_equal(ref, "tpl");

        /* The path exists with other methods: 405 and its Allow list. */
        assert_int_equal(api_route_match("PUT", "/v1/sandboxes/x", &r, ref, allow, sizeof(allow)),
                         -EOPNOTSUPP);
        assert_string_equal(allow, "GET, HEAD, DELETE");
        assert_int_equal(
                api_route_match("GET", "/v1/sandboxes/x/pause", &r, ref, allow, sizeof(allow)),
                -EOPNOTSUPP);
        assert_string_equal(allow, "POST");

        const char *missing[] = {"/",
                                 "",
                                 "/v1",
                                 "/v1/sandboxes/",
                                 "/v1/sandboxes//pause",
                                 "/v1/sandboxes/x/pause/",
                                 "/v1/sandboxes/x/y",
                                 "/healthzz",
                                 "/v2/sandboxes",
                                 "v1/sandboxes"};
        for (size_t i = 0; i < ARRAY_SIZE(missing); i++)
                if (api_route_match("GET", missing[i], &r, ref, allow, sizeof(allow)) != -ENOENT)
                        fail_msg("'%s' matched a route", missing[i]);

        char longpath[400];
        memset(ref, 'x', sizeof(ref));
        snprintf(longpath, sizeof(longpath), "/v1/sandboxes/%0*d", API_REF_MAX + 1, 7);
        assert_int_equal(api_route_match("GET", longpath, &r, ref, allow, sizeof(allow)),
                         -ENAMETOOLONG);
        snprintf(longpath, sizeof(longpath), "/v1/sandboxes/%0*d", API_REF_MAX, 7);
        assert_int_equal(api_route_match("GET", longpath, &r, ref, allow, sizeof(allow)), 0);
        assert_int_equal(strlen(ref), API_REF_MAX);

        /* Every route is reachable by its own method and pattern. */
        for (unsigned i = 0; i < API_ROUTE_COUNT; i++) {
                const struct api_route_info *ri = api_route_info((enum api_route)i);
                char path[128], *p = strstr(ri->pattern, "{ref}");
                if (p)
                        snprintf(path, sizeof(path), "%.*sREF%s", (int)(p - ri->pattern),
                                 ri->pattern, p + 5);
                else
                        snprintf(path, sizeof(path), "%s", ri->pattern);
                assert_int_equal(api_route_match(ri->method, path, &r, ref, allow, sizeof(allow)),
                                 0);
                assert_int_equal(r, i);
        }
        assert_string_equal(api_route_info(API_ROUTE_NONE)->pattern, "unmatched");
}

/* Raw request targets: what decoding would hide is refused before it can, the rest passes. */
static void test_target_check(void **state)
{
        (void)state;
        char why[200];
        const char *ok[] = {"/v1/snapshots/dup",
                            "/v1/snapshots/a%2Db",
                            "/healthz",
                            "/v1/snapshots?kind=pause",
                            "/v1/x?p=a%2Fb",
                            "/v1/a%zz",
                            "/v1/a%2",
                            "/%41%42%43",
                            ""};
        for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
                if (api_target_check(ok[i], why, sizeof(why)) != API_TARGET_OK)
                        fail_msg("'%s' refused: %s", ok[i], why);
        const struct {
                const char *target;
                enum api_target want;
                const char *mention;
        } bad[] = {
                {"/v1/snapshots/dup%00x", API_TARGET_BAD_PATH, "%00 (NUL) at byte 17"},
                {"/v1/sandboxes/a%0Ab", API_TARGET_BAD_PATH, "%0A"},
                {"/v1/sandboxes/a%0ab", API_TARGET_BAD_PATH, "control character"},
                {"/v1/sandboxes/a%7Fb/pause", API_TARGET_BAD_PATH, "%7F"},
                {"/v1/sandboxes/a%1fb", API_TARGET_BAD_PATH, "%1f"},
                {"/v1/sandboxes/a\x01"
                 "b",
                 API_TARGET_BAD_PATH, "0x01"},
                {"/v1/sandboxes/a\x7f", API_TARGET_BAD_PATH, "0x7f"},
                {"/v1/sandboxes/x%2Fpause", API_TARGET_BAD_PATH, "encoded '/'"},
                {"/v1/sandboxes/x%2fpause", API_TARGET_BAD_PATH, "encoded '/'"},
                {"/v1/snapshots?kind=pause%00", API_TARGET_BAD_QUERY, "query holds %00"},
                {"/v1/snapshots?all=1&kind%0A=x", API_TARGET_BAD_QUERY, "%0A"},
                {"/v1/snapshots?\t", API_TARGET_BAD_QUERY, "0x09"},
                {"/healthz%00", API_TARGET_BAD_PATH, "NUL"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                why[0] = '\0';
                enum api_target got = api_target_check(bad[i].target, why, sizeof(why));
                if (got != bad[i].want || !strstr(why, bad[i].mention))
                        fail_msg("'%s': got %d '%s', want %d mentioning '%s'", bad[i].target, got,
                                 why, bad[i].want, bad[i].mention);
        }
}
/* ---- errors ------------------------------------------------------------------------------- */

static void test_errors(void **state)
{
        (void)state;
        struct {
                int err;
                unsigned status;
                const char *code;
        } cases[] = {
                {-EINVAL, 400, "invalid_argument"},
                {-ENOENT, 404, "not_found"},
                {-EEXIST, 409, "already_exists"},
                {-EBUSY, 409, "invalid_state"},
                {-EMLINK, 409, "template_mismatch"},
                {-ENOTUNIQ, 409, "ambiguous_ref"},
                {-ENOSPC, 507, "insufficient_storage"},
                {-EIO, 500, "internal"},
                {-12345, 500, "internal"},
                {-ETIMEDOUT, 504, "timeout"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                struct api_error e = api_error_from_errno(cases[i].err, API_SUBJECT_REF);
                assert_int_equal(e.status, cases[i].status);
                assert_string_equal(e.code, cases[i].code);
        }
        /* Without a ref in the request, a missing file is the host's, not the client's. */
        assert_int_equal(api_error_from_errno(-ENOENT, API_SUBJECT_NEW).status, 503);
        assert_string_equal(api_error_from_errno(-ENOENT, API_SUBJECT_NEW).code, "host_not_ready");
        assert_int_equal(api_error_from_errno(-EBUSY, API_SUBJECT_NEW).status, 409);
        /* A refused archive is the client's; a corrupt stored snapshot is the host's. */
        assert_int_equal(api_error_from_errno(-EBADMSG, API_SUBJECT_IMPORT).status, 400);
        assert_string_equal(api_error_from_errno(-EBADMSG, API_SUBJECT_IMPORT).code,
                            "invalid_archive");
        assert_int_equal(api_error_from_errno(-EBADMSG, API_SUBJECT_REF).status, 500);
        assert_int_equal(api_error_from_errno(-ENOENT, API_SUBJECT_IMPORT).status, 404);

        assert_int_equal(api_error_from_body(-EBADMSG).status, 400);
        assert_string_equal(api_error_from_body(-EBADMSG).code, "malformed_json");
        assert_string_equal(api_error_from_body(-EINVAL).code, "invalid_field");
        assert_int_equal(api_error_from_body(-ENOMEM).status, 503);

        unsigned want[] = {400, 400, 400, 400, 401, 404, 405, 413, 415, 503, 500};
        for (unsigned p = 0; p < ARRAY_SIZE(want); p++)
                assert_int_equal(api_error_problem((enum api_problem)p).status, want[p]);
        assert_int_equal(api_error_problem((enum api_problem)99).status, 500);
}

/* ---- JSON --------------------------------------------------------------------------------- */

static void check_lossy(const char *in, const char *want)
{
        json_t *j = vmsnap_json_string_lossy(in);
        assert_non_null(j);
        assert_string_equal(json_string_value(j), want);
        json_decref(j);
}

static void test_json_lossy(void **state)
{
        (void)state;
        check_lossy("plain", "plain");
        check_lossy("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
        check_lossy("a\xff"
                    "b",
                    "a\xef\xbf\xbd"
                    "b");
        check_lossy("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd");                 /* overlong '/' */
        check_lossy("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
        check_lossy("\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
        check_lossy("end\xe2\x82", "end\xef\xbf\xbd\xef\xbf\xbd"); /* cut sequence */

        json_t *e = api_json_error("not_found", "no sandbox '\xff'");
        size_t len = 0;
        char *text = api_json_dump(e, &len);
        assert_non_null(text);
        assert_int_equal(strlen(text), len);
        assert_int_equal(text[len - 1], '\n');
        json_t *back = json_loads(text, 0, NULL);
        const char *code = NULL, *msg = NULL;
        assert_int_equal(
                json_unpack(back, "{s:{s:s, s:s}}", "error", "code", &code, "message", &msg), 0);
        assert_string_equal(code, "not_found");
        assert_string_equal(msg, "no sandbox '\xef\xbf\xbd'");
        json_decref(back);
        json_decref(e);
        free(text);

        json_t *t = api_json_time(0);
        assert_true(json_is_null(t));
        json_decref(t);
        t = api_json_time(1764145860);
        assert_string_equal(json_string_value(t), "2025-11-26T08:31:00Z");
        json_decref(t);
}

/* Every status errors.c can give has a series of its own in the metrics (not code="other"). */
static void test_statuses_counted(void **state)
{
        (void)state;
        for (int e = 0; e < 4096; e++) {
                for (int s = API_SUBJECT_REF; s <= API_SUBJECT_IMPORT; s++) {
                        struct api_error x = api_error_from_errno(-e, (enum api_subject)s);
                        if (!api_metrics_status_known(x.status))
                                fail_msg("errno %d: status %u has no metrics series", e, x.status);
                }
                if (!api_metrics_status_known(api_error_from_body(-e).status))
                        fail_msg("body errno %d has no metrics series", e);
        }
        for (int p = 0; p <= API_PROBLEM_INTERNAL; p++)
                assert_true(
                        api_metrics_status_known(api_error_problem((enum api_problem)p).status));
        const unsigned success[] = {0, 200, 201, 204};
        for (size_t i = 0; i < ARRAY_SIZE(success); i++)
                assert_true(api_metrics_status_known(success[i]));
        assert_false(api_metrics_status_known(418));
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void test_metrics(void **state)
{
        (void)state;
        struct api_metrics *m = malloc(sizeof(*m));
        api_metrics_init(m);
        api_metrics_request(m, API_ROUTE_SANDBOX_PAUSE, "POST", 200);
        api_metrics_request(m, API_ROUTE_SANDBOX_PAUSE, "POST", 200);
        api_metrics_request(m, API_ROUTE_NONE, "GET", 404);
        api_metrics_request(m, API_ROUTE_NONE, "PUT", 405); /* a 405 has the request's method */
        api_metrics_request(m, API_ROUTE_SANDBOX_LIST, "HEAD", 200);
        api_metrics_request(m, API_ROUTE_NONE, "BREW", 405);     /* made up: "other" */
        api_metrics_request(m, (enum api_route)1000, NULL, 999); /* clamped, not a crash */
        api_metrics_request(m, API_ROUTE_NONE, "GET\"}\n", 0);   /* never echoed */
        api_metrics_request(m, API_ROUTE_UI, "GET", 200);        /* the dashboard's files */
        api_metrics_request(m, API_ROUTE_UI, "GET", 404);
        api_metrics_op(m, API_OP_PAUSE, 0.3, true);
        api_metrics_op(m, API_OP_PAUSE, 1000, true); /* past the last bucket: +Inf only */
        api_metrics_op(m, API_OP_CREATE, 0.001, false);

        struct api_gauges g = {.have_sandboxes = true,
                               .n_states = 2,
                               .state_names = {"running", "paused"},
                               .sandboxes = {3, 1},
                               .have_snapshots = true,
                               .snapshots = {4, 1},
                               .snapshot_bytes = {4096, 8192},
                               .in_flight = 1};
        size_t len = 0;
        char *text = api_metrics_render(m, &g, &len);
        assert_non_null(text);
        assert_int_equal(strlen(text), len);
        const char *want[] = {
                "vmsnap_sandboxes{state=\"running\"} 3\n",
                "vmsnap_sandboxes{state=\"paused\"} 1\n",
                "vmsnap_snapshots{kind=\"template\"} 1\n",
                "vmsnap_snapshot_bytes{kind=\"pause\"} 4096\n",
                ("vmsnapd_http_requests_total{route=\"/v1/sandboxes/{ref}/pause\",method=\"POST\","
                 "code=\"200\"} 2\n"),
                "vmsnapd_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"} 1\n",
                "vmsnapd_http_requests_total{route=\"unmatched\",method=\"PUT\",code=\"405\"} 1\n",
                "vmsnapd_http_requests_total{route=\"unmatched\",method=\"other\",code=\"405\"} "
                "1\n",
                "vmsnapd_http_requests_total{route=\"unmatched\",method=\"other\",code=\"0\"} 1\n",
                "vmsnapd_http_requests_total{route=\"unmatched\",method=\"other\",code=\"other\"} "
                "1\n",
                "vmsnapd_http_requests_total{route=\"/v1/sandboxes\",method=\"HEAD\",code=\"200\"} "
                "1\n",
                "vmsnapd_http_requests_total{route=\"/ui/{file}\",method=\"GET\",code=\"200\"} 1\n",
                "vmsnapd_http_requests_total{route=\"/ui/{file}\",method=\"GET\",code=\"404\"} 1\n",
                "vmsnap_operation_duration_seconds_bucket{op=\"pause\",result=\"ok\",le=\"0.25\"} "
                "0\n",
                "vmsnap_operation_duration_seconds_bucket{op=\"pause\",result=\"ok\",le=\"0.5\"} "
                "1\n",
                "vmsnap_operation_duration_seconds_bucket{op=\"pause\",result=\"ok\",le=\"600\"} "
                "1\n",
                "vmsnap_operation_duration_seconds_bucket{op=\"pause\",result=\"ok\",le=\"+Inf\"} "
                "2\n",
                "vmsnap_operation_duration_seconds_count{op=\"pause\",result=\"ok\"} 2\n",
                "vmsnap_operation_duration_seconds_bucket{op=\"create\",result=\"error\",le=\"0."
                "01\"} 1\n",
                "# TYPE vmsnap_operation_duration_seconds histogram\n",
                "vmsnapd_http_requests_in_flight 1\n",
        };
        for (size_t i = 0; i < ARRAY_SIZE(want); i++)
                if (!strstr(text, want[i]))
                        fail_msg("metrics lack '%s'", want[i]);
        assert_null(strstr(text, "method=\"-\""));
        assert_null(strstr(text, "BREW"));
        assert_null(strstr(text, "vmsnapd_tcp_connections")); /* no TCP listener */
        free(text);

        /* The gate's counters, with a TCP listener. */
        struct api_gauges gated = {
                .have_gate = true, .gate_refused = 7, .gate_expired = 5, .gate_untrusted = 2};
        text = api_metrics_render(m, &gated, &len);
        assert_non_null(strstr(text, "vmsnapd_tcp_connections_refused_total 7\n"));
        assert_non_null(strstr(text, "vmsnapd_tcp_connections_expired_total 5\n"));
        assert_non_null(strstr(text, "vmsnapd_tcp_connections_untrusted 2\n"));
        free(text);

        /* Gauges that could not be read are left out, not reported as 0. */
        struct api_gauges none = {0};
        text = api_metrics_render(m, &none, &len);
        assert_null(strstr(text, "vmsnap_sandboxes"));
        assert_null(strstr(text, "vmsnap_snapshots"));
        assert_null(strstr(text, "vmsnap_memory_saved_bytes"));
        free(text);

        /* The VMMs' memory: saved = rss - pss. */
        struct api_gauges mem = {.have_vmm_memory = true, .vmm_rss = 300 << 20,
                                 .vmm_pss = 200 << 20, .vmm_processes = 2};
        text = api_metrics_render(m, &mem, &len);
        assert_non_null(strstr(text, "vmsnap_vmm_memory_bytes{kind=\"rss\"} 314572800\n"));
        assert_non_null(strstr(text, "vmsnap_vmm_memory_bytes{kind=\"pss\"} 209715200\n"));
        assert_non_null(strstr(text, "vmsnap_memory_saved_bytes 104857600\n"));
        assert_non_null(strstr(text, "vmsnap_vmm_processes 2\n"));
        free(text);
        api_metrics_destroy(m);
        free(m);
}

static void test_vmm_memory_parse(void **state)
{
        (void)state;
        struct api_vmm_memory m = {0};
        assert_int_equal(api_vmm_memory_parse("00400000-7ffe0000 ---p 00000000 00:00 0 "
                                              "[rollup]\nRss:                2048 kB\n"
                                              "Pss:                1024 kB\nPss_Anon: 5 kB\n",
                                              &m), 0);
        assert_int_equal(m.rss, 2048 * 1024);
        assert_int_equal(m.pss, 1024 * 1024);
        assert_int_equal(m.processes, 1);
        assert_int_equal(api_vmm_memory_parse("Rss: 10 kB\n", &m), -EBADMSG);
        assert_int_equal(api_vmm_memory_parse("Rss: x kB\nPss: 1 kB\n", &m), -EBADMSG);
        assert_int_equal(api_vmm_memory_parse("Rss: -4 kB\nPss: 1 kB\n", &m), -EBADMSG);
        assert_int_equal(m.processes, 1);
}

/* Two real processes sharing 16 MiB: the kernel's Rss - Pss over both shows at least
 * about those 16 MiB saved; a gone pid is skipped; a pid of 0 too. */
static void test_vmm_memory_shared(void **state)
{
        (void)state;
        const size_t size = 16u << 20;
        if (access("/proc/self/smaps_rollup", R_OK) != 0)
                skip(); /* a kernel before 4.14 */
        volatile char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                                -1, 0);
        assert_true(p != MAP_FAILED);
        for (size_t i = 0; i < size; i += 4096)
                p[i] = 1;
        int ready[2];
        assert_int_equal(pipe(ready), 0);
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
                unsigned sum = 0;
                for (size_t i = 0; i < size; i += 4096)
                        sum += (unsigned)p[i]; /* map every page in this process too */
                char c = (char)sum;
                if (write(ready[1], &c, 1) != 1)
                        _exit(1);
                pause();
                _exit(0);
        }
        char c;
        assert_int_equal(read(ready[0], &c, 1), 1);
        pid_t pids[] = {getpid(), child, 0, 0x3ffffff0 /* no such process */};
        struct api_vmm_memory m;
        int r = api_vmm_memory(pids, 4, &m);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        close(ready[0]);
        close(ready[1]);
        munmap((void *)p, size);
        assert_int_equal(r, 0);
        assert_int_equal(m.processes, 2);
        assert_true(m.rss >= 2 * size);
        assert_true(m.rss - m.pss >= size - (1u << 20));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sandbox_body_ok),  cmocka_unit_test(test_sandbox_body_errors),
                cmocka_unit_test(test_exec_body),        cmocka_unit_test(test_snapshot_bodies),
                cmocka_unit_test(test_routes),           cmocka_unit_test(test_errors),
                cmocka_unit_test(test_json_lossy),       cmocka_unit_test(test_metrics),
                cmocka_unit_test(test_statuses_counted), cmocka_unit_test(test_target_check),
                cmocka_unit_test(test_vmm_memory_parse), cmocka_unit_test(test_vmm_memory_shared),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
