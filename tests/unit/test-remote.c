/* The remote store's trust boundary without a server: manifests (hostile input: anyone who
 * can write the bucket writes them) are parsed only when every rule of docs/remote.md
 * holds, each refusal naming the object and the rule; what push formats parses back to the
 * same values; remote config files holding a secret are refused unless private, and their
 * errors never show the secret. The transfers themselves: tests/cli/remote-ceph.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmsnap/remote.h>

#define ID  "2b9c3c5e-8c1f-4a53-9d0b-6c1b8f0e7a41"
#define ID2 "0d4e1f7a-5b6c-4d8e-9f0a-1b2c3d4e5f60"
#define H1  "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

/* A valid manifest with one substitution: the text between the markers is replaced. */
static char *manifest_with(const char *from, const char *to)
{
        static const char good[] =
            "{\"format\":\"vmsnap-remote\",\"version\":1,\"id\":\"" ID "\",\"name\":\"py\","
            "\"kind\":\"template\",\"parent\":null,\"template\":null,"
            "\"created\":\"2026-12-05T03:00:00Z\",\"pushed\":\"2026-12-05T03:10:00Z\","
            "\"chunk_size\":4194304,\"files\":["
            "{\"path\":\"memfile.header\",\"size\":1296,\"chunks\":[\"" H1 "\"]},"
            "{\"path\":\"images/rootfs-ab.ext4\",\"size\":8388609,\"chunks\":[null,\"" H1
            "\",\"" H1 "\"]},"
            "{\"path\":\"snapshot.json\",\"size\":0,\"chunks\":[]}]}";
        char *s = malloc(strlen(good) + (to ? strlen(to) : 0) + 1);
        assert_non_null(s);
        const char *at = from ? strstr(good, from) : NULL;
        if (!at) {
                assert_null(from); /* a test's marker must exist */
                strcpy(s, good);
                return s;
        }
        size_t pre = (size_t)(at - good);
        memcpy(s, good, pre);
        strcpy(s + pre, to);
        strcat(s, at + strlen(from));
        return s;
}

static void test_valid_roundtrip(void **state)
{
        (void)state;
        char *text = manifest_with(NULL, NULL);
        struct vmsnap_remote_manifest m, back;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_remote_manifest_parse(text, strlen(text), "m", ID, &m, &d), 0);
        assert_string_equal(m.id, ID);
        assert_string_equal(m.name, "py");
        assert_int_equal(m.nfiles, 3);
        assert_int_equal(m.files[1].nchunks, 3);
        assert_true(m.files[1].chunks[0].zero);
        assert_false(m.files[1].chunks[1].zero);
        assert_int_equal(vmsnap_remote_manifest_size(&m), 1296 + 8388609);
        char *out;
        assert_int_equal(vmsnap_remote_manifest_format(&m, &out), 0);
        assert_int_equal(vmsnap_remote_manifest_parse(out, strlen(out), "m", ID, &back, &d), 0);
        assert_int_equal(back.nfiles, m.nfiles);
        assert_int_equal(back.created, m.created);
        for (size_t i = 0; i < m.nfiles; i++) {
                assert_string_equal(back.files[i].path, m.files[i].path);
                assert_int_equal(back.files[i].size, m.files[i].size);
                assert_memory_equal(back.files[i].chunks, m.files[i].chunks,
                                    m.files[i].nchunks * sizeof(*m.files[i].chunks));
        }
        vmsnap_remote_manifest_free(&m);
        vmsnap_remote_manifest_free(&back);
        free(out);
        free(text);
}

/* Each hostile variant is refused with -EBADMSG and a message holding `want`. */
static void test_hostile(void **state)
{
        (void)state;
        static const struct {
                const char *from, *to, *want;
        } cases[] = {
            {"\"vmsnap-remote\"", "\"vmsnap-snapshot\"", "not a vmsnap remote manifest"},
            {"\"version\":1", "\"version\":2", "newer vmsnap"},
            {"\"id\":\"" ID "\"", "\"id\":\"" ID2 "\"", "not of " ID},
            {"\"id\":\"" ID "\"", "\"id\":\"../../etc\"", "canonical UUID"},
            {"\"name\":\"py\"", "\"name\":\"a/b\"", "valid snapshot name"},
            {"\"kind\":\"template\"", "\"kind\":\"root\"", "pause or template"},
            {"\"parent\":null", "\"parent\":\"x\"", "parent/template"},
            {"\"created\":\"2026-12-05T03:00:00Z\"", "\"created\":5", "RFC 3339"},
            {"\"chunk_size\":4194304", "\"chunk_size\":1", "chunk_size must be"},
            {"\"path\":\"memfile.header\"", "\"path\":\"../memfile.header\"", "not a valid"},
            {"\"path\":\"memfile.header\"", "\"path\":\"/etc/passwd\"", "not a valid"},
            {"\"path\":\"images/rootfs-ab.ext4\"", "\"path\":\"images/../x\"", "not a valid"},
            {"\"path\":\"images/rootfs-ab.ext4\"", "\"path\":\"images/a/b\"", "not a valid"},
            {"\"path\":\"memfile.header\"", "\"path\":\"snapshot.json\"", "listed twice"},
            {"\"path\":\"snapshot.json\"", "\"path\":\"other\"", "no snapshot.json"},
            {"\"size\":1296", "\"size\":-1", "size is not an integer"},
            {"\"size\":1296", "\"size\":1125899906842625", "size is not an integer"},
            {"\"size\":1296", "\"size\":4194305", "array of 2 entries"},
            {"\"size\":8388609", "\"size\":1125899906842624", "add up to more than 2^50"},
            {"\"chunks\":[\"" H1 "\"]", "\"chunks\":[\"" H1 "\",null]", "array of 1 entries"},
            {"\"chunks\":[\"" H1 "\"]", "\"chunks\":[\"9F86\"]", "neither null nor"},
            {"\"chunks\":[\"" H1 "\"]", "\"chunks\":[7]", "neither null nor"},
            {"\"files\":[", "\"files\":5,\"x\":[", "files must be an array"},
            {"{\"format\"", "[{\"format\"", "not JSON"},
            {"\"name\":\"py\"", "\"name\":\"py\",\"name\":\"q\"", "not JSON"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *text = manifest_with(cases[i].from, cases[i].to);
                struct vmsnap_remote_manifest m;
                struct vmsnap_diag d = {0};
                int r = vmsnap_remote_manifest_parse(text, strlen(text), "manifests/x.json", ID,
                                                     &m, &d);
                if (r != -EBADMSG || !strstr(d.msg, cases[i].want) ||
                    !strstr(d.msg, "manifests/x.json"))
                        fail_msg("case %zu: r=%d msg='%s', want '%s'", i, r, d.msg, cases[i].want);
                free(text);
        }
}

static void test_too_many_files(void **state)
{
        (void)state;
        size_t n = VMSNAP_REMOTE_FILES_MAX + 1, cap = n * 64 + 1024;
        char *s = malloc(cap), *p = s;
        p += sprintf(p, "{\"format\":\"vmsnap-remote\",\"version\":1,\"id\":\"" ID "\","
                        "\"name\":null,\"kind\":\"pause\",\"created\":\"2026-12-05T03:00:00Z\","
                        "\"pushed\":\"2026-12-05T03:00:00Z\",\"chunk_size\":4194304,\"files\":[");
        for (size_t i = 0; i < n; i++)
                p += sprintf(p, "%s{\"path\":\"f%zu\",\"size\":0,\"chunks\":[]}", i ? "," : "", i);
        strcpy(p, "]}");
        struct vmsnap_remote_manifest m;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_remote_manifest_parse(s, strlen(s), "m", NULL, &m, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "1..20001"));
        assert_int_equal(vmsnap_remote_manifest_parse(s, VMSNAP_REMOTE_MANIFEST_MAX + 1, "m", NULL,
                                                      &m, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "larger than"));
        free(s);
}

static void write_conf(const char *path, const char *text, mode_t mode)
{
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        assert_int_equal(chmod(path, mode), 0);
}

static void test_config(void **state)
{
        (void)state;
        char root[] = "/tmp/vmsnap-test-remote.XXXXXX", dir[128], path[160];
        assert_non_null(mkdtemp(root));
        snprintf(dir, sizeof(dir), "%s/remotes", root);
        assert_int_equal(mkdir(dir, 0700), 0);
        snprintf(path, sizeof(path), "%s/ceph.conf", dir);
        write_conf(path, "# a test remote\nendpoint = http://127.0.0.1:9/\nbucket = vmsnap\n"
                         "access_key = AK\nsecret_key = s3cr3t-value\n", 0644);
        struct vmsnap_remote_config c;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_remote_config_load(root, "ceph", &c, &d), -EPERM);
        assert_non_null(strstr(d.msg, "chmod 600"));
        assert_int_equal(chmod(path, 0600), 0);
        assert_int_equal(vmsnap_remote_config_load(root, "ceph", &c, &d), 0);
        assert_string_equal(c.endpoint, "http://127.0.0.1:9");
        assert_string_equal(c.region, "us-east-1");
        assert_string_equal(c.secret_key, "s3cr3t-value");
        vmsnap_remote_config_clear(&c);

        write_conf(path, "endpoint = ftp://x\nbucket = b\naccess_key = A\nsecret_key = s3cr3t\n",
                   0600);
        assert_int_equal(vmsnap_remote_config_load(root, "ceph", &c, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "http://"));
        write_conf(path, "endpoint = http://x\nbucket = b\naccess_key = A\nsecret = s3cr3t\n", 0600);
        assert_int_equal(vmsnap_remote_config_load(root, "ceph", &c, &d), -EINVAL);
        assert_null(strstr(d.msg, "s3cr3t")); /* never the value */
        assert_int_equal(vmsnap_remote_config_load(root, "../x", &c, &d), -EINVAL);
        assert_int_equal(vmsnap_remote_config_load(root, "nope", &c, &d), -ENOENT);

        setenv("VMSNAP_S3_ENDPOINT", "https://s3.example", 1);
        setenv("VMSNAP_S3_BUCKET", "bkt", 1);
        setenv("VMSNAP_S3_ACCESS_KEY", "AK", 1);
        unsetenv("VMSNAP_S3_SECRET_KEY");
        assert_int_equal(vmsnap_remote_config_load(root, NULL, &c, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "secret key"));
        setenv("VMSNAP_S3_SECRET_KEY", "sk", 1);
        assert_int_equal(vmsnap_remote_config_load(root, NULL, &c, &d), 0);
        assert_string_equal(c.bucket, "bkt");
        unsetenv("VMSNAP_S3_ENDPOINT");
        unlink(path);
        rmdir(dir);
        rmdir(root);
}

static void test_resolve(void **state)
{
        (void)state;
        struct vmsnap_remote_entry e[3] = {0};
        strcpy(e[0].m.id, ID);
        strcpy(e[0].m.name, "py");
        strcpy(e[1].m.id, ID2);
        strcpy(e[2].m.id, "2b9c0000-0000-4000-8000-000000000000");
        strcpy(e[2].problem, "broken");
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_remote_resolve(e, 3, "py", &d), 0);
        assert_int_equal(vmsnap_remote_resolve(e, 3, ID2, &d), 1);
        assert_int_equal(vmsnap_remote_resolve(e, 3, "0d4", &d), 1);
        assert_int_equal(vmsnap_remote_resolve(e, 3, "2b9c", &d), 0); /* the broken one skipped */
        assert_int_equal(vmsnap_remote_resolve(e, 3, "0d", &d), -ENOENT);
        assert_int_equal(vmsnap_remote_resolve(e, 3, "p\ty", &d), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_valid_roundtrip), cmocka_unit_test(test_hostile),
            cmocka_unit_test(test_too_many_files),  cmocka_unit_test(test_config),
            cmocka_unit_test(test_resolve),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
