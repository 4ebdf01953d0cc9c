/* The local chunk cache (docs/remote.md "The local chunk cache") on real files: a chunk
 * put comes back byte for byte, private; bytes that do not hash to their name are never
 * put; a cached file changed on disk (a flipped byte, a wrong length, a symlink in its
 * place) is never served: it is removed and counted corrupt; the LRU keeps the cache under
 * its limit by evicting the least recently used chunk, never the one just put; stale temp
 * files of dead writers are swept; claims are single-flight across handles (each its own
 * open file description, as two processes would be). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vmsnap/chunk-cache.h>
#include <vmsnap/remote.h>

#define LEN (64u << 10)

struct fixture {
        char root[64];
        char dir[96];
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        snprintf(f->root, sizeof(f->root), "/tmp/vmsnap-test-cache.XXXXXX");
        if (!mkdtemp(f->root))
                return -1;
        snprintf(f->dir, sizeof(f->dir), "%s/chunk-cache", f->root);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[160];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
        if (system(cmd) != 0)
                return -1;
        free(f);
        return 0;
}

/* A chunk of LEN bytes made from seed, and its SHA-256. */
static void chunk(unsigned seed, uint8_t *buf, uint8_t sha[32])
{
        for (size_t i = 0; i < LEN; i++)
                buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
        unsigned int n = 32;
        EVP_Digest(buf, LEN, sha, &n, EVP_sha256(), NULL);
}

static void path_of(const struct fixture *f, const uint8_t sha[32], char out[200])
{
        char hex[65];
        vmsnap_remote_hex(sha, hex);
        snprintf(out, 200, "%s/%s", f->dir, hex);
}

static void test_put_get(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_chunk_cache *c;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 1u << 30, &c, &d), 0);
        static uint8_t a[LEN], out[LEN];
        uint8_t sha[32], other[32];
        chunk(1, a, sha);
        chunk(2, out, other);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha, out, LEN, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_put(c, sha, a, LEN, &d), 0);
        memset(out, 0, LEN);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha, out, LEN, &d), 1);
        assert_memory_equal(out, a, LEN);
        /* private: the directory 0700, the chunk 0600 */
        struct stat st;
        char p[200];
        assert_int_equal(stat(f->dir, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
        path_of(f, sha, p);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        /* bytes that do not hash to the name are refused, nothing written */
        assert_int_equal(vmsnap_chunk_cache_put(c, other, a, LEN, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "do not hash to its name"));
        path_of(f, other, p);
        assert_int_equal(access(p, F_OK), -1);
        struct vmsnap_chunk_cache_stats s = vmsnap_chunk_cache_stats(c);
        assert_int_equal(s.hits, 1);
        assert_int_equal(s.misses, 1);
        assert_int_equal(s.stored, 1);
        vmsnap_chunk_cache_close(c);
}

/* Overwrites the cached file of sha with what (len bytes) in place. */
static void tamper(const struct fixture *f, const uint8_t sha[32], const uint8_t *what, size_t len)
{
        char p[200];
        path_of(f, sha, p);
        int fd = open(p, O_WRONLY | O_TRUNC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, what, len), (ssize_t)len);
        close(fd);
}

static void test_corrupt_file_detected(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_chunk_cache *c;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 1u << 30, &c, &d), 0);
        static uint8_t a[LEN], bad[LEN], out[LEN];
        uint8_t sha[32];
        chunk(3, a, sha);
        char p[200];
        path_of(f, sha, p);

        /* one flipped byte: a miss, the file removed, no byte of it handed out */
        assert_int_equal(vmsnap_chunk_cache_put(c, sha, a, LEN, &d), 0);
        memcpy(bad, a, LEN);
        bad[LEN / 2] ^= 1;
        tamper(f, sha, bad, LEN);
        memset(out, 0xee, LEN);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha, out, LEN, &d), 0);
        assert_int_equal(access(p, F_OK), -1);
        assert_int_equal(vmsnap_chunk_cache_stats(c).corrupt, 1);

        /* a short file */
        assert_int_equal(vmsnap_chunk_cache_put(c, sha, a, LEN, &d), 0);
        tamper(f, sha, a, LEN - 1);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha, out, LEN, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_stats(c).corrupt, 2);

        /* a symlink to a file with the right bytes: never followed */
        char target[200];
        snprintf(target, sizeof(target), "%s/elsewhere", f->root);
        int fd = open(target, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_int_equal(write(fd, a, LEN), (ssize_t)LEN);
        close(fd);
        assert_int_equal(symlink(target, p), 0);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha, out, LEN, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_stats(c).corrupt, 3);
        assert_int_equal(access(target, F_OK), 0); /* the target untouched */

        /* put again: served again */
        assert_int_equal(vmsnap_chunk_cache_put(c, sha, a, LEN, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha, out, LEN, &d), 1);
        assert_memory_equal(out, a, LEN);
        vmsnap_chunk_cache_close(c);
}

/* Sets the last use of a cached chunk to t seconds after the epoch. */
static void set_used(const struct fixture *f, const uint8_t sha[32], time_t t)
{
        char p[200];
        path_of(f, sha, p);
        struct timespec ts[2] = {{t, 0}, {t, 0}};
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void test_lru_eviction(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_chunk_cache *c;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 3 * LEN, &c, &d), 0);
        static uint8_t buf[4][LEN], out[LEN];
        uint8_t sha[4][32];
        for (unsigned i = 0; i < 4; i++)
                chunk(10 + i, buf[i], sha[i]);
        for (unsigned i = 0; i < 3; i++) {
                assert_int_equal(vmsnap_chunk_cache_put(c, sha[i], buf[i], LEN, &d), 0);
                set_used(f, sha[i], 1000000 + i); /* 0 oldest, 2 newest */
        }
        /* a use makes chunk 0 the newest: 1 is now the least recently used */
        assert_int_equal(vmsnap_chunk_cache_get(c, sha[0], out, LEN, &d), 1);
        assert_int_equal(vmsnap_chunk_cache_put(c, sha[3], buf[3], LEN, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_stats(c).evicted, 1);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha[1], out, LEN, &d), 0);
        for (unsigned i = 0; i < 4; i++)
                if (i != 1)
                        assert_int_equal(vmsnap_chunk_cache_get(c, sha[i], out, LEN, &d), 1);
        vmsnap_chunk_cache_close(c);

        /* a limit below one chunk: the chunk just put stays, every other goes */
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, LEN / 2, &c, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_put(c, sha[1], buf[1], LEN, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_stats(c).evicted, 3);
        assert_int_equal(vmsnap_chunk_cache_get(c, sha[1], out, LEN, &d), 1);
        vmsnap_chunk_cache_close(c);
}

static void test_stale_tmp_swept(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_chunk_cache *c;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 1u << 30, &c, &d), 0);
        vmsnap_chunk_cache_close(c);
        char old[200], young[200];
        snprintf(old, sizeof(old), "%s/.tmp.99999.0", f->dir);
        snprintf(young, sizeof(young), "%s/.tmp.99999.1", f->dir);
        close(open(old, O_WRONLY | O_CREAT, 0600));
        close(open(young, O_WRONLY | O_CREAT, 0600));
        struct timespec ts[2] = {{1000, 0}, {1000, 0}};
        assert_int_equal(utimensat(AT_FDCWD, old, ts, 0), 0);
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 1u << 30, &c, &d), 0);
        assert_int_equal(access(old, F_OK), -1);
        assert_int_equal(access(young, F_OK), 0); /* maybe a live writer's */
        vmsnap_chunk_cache_close(c);
        /* a directory others can enter is refused */
        assert_int_equal(chmod(f->dir, 0755), 0);
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 1u << 30, &c, &d), -EPERM);
        assert_non_null(strstr(d.msg, "not a private directory"));
}

struct waiter {
        struct vmsnap_chunk_cache *c;
        const uint8_t *sha;
        int got;
};

static void *wait_claim(void *arg)
{
        struct waiter *w = arg;
        w->got = vmsnap_chunk_cache_claim(w->c, w->sha, true);
        return NULL;
}

static void test_single_flight(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_chunk_cache *a, *b;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 1u << 30, &a, &d), 0);
        assert_int_equal(vmsnap_chunk_cache_open(f->dir, 1u << 30, &b, &d), 0);
        static uint8_t x[LEN], y[LEN];
        uint8_t sx[32], sy[32];
        chunk(20, x, sx);
        chunk(21, y, sy);
        assert_int_equal(vmsnap_chunk_cache_claim(a, sx, false), 1);
        assert_int_equal(vmsnap_chunk_cache_claim(b, sx, false), 0); /* held by a */
        assert_int_equal(vmsnap_chunk_cache_claim(b, sy, false), 1); /* another chunk: free */
        struct waiter w = {b, sx, -99};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, wait_claim, &w), 0);
        usleep(100 * 1000);
        assert_int_equal(__atomic_load_n(&w.got, __ATOMIC_SEQ_CST), -99); /* still waiting */
        assert_int_equal(vmsnap_chunk_cache_put(a, sx, x, LEN, &d), 0);
        vmsnap_chunk_cache_release(a, sx);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(w.got, 1);
        /* the waiter then finds the chunk the holder fetched */
        static uint8_t out[LEN];
        assert_int_equal(vmsnap_chunk_cache_get(b, sx, out, LEN, &d), 1);
        vmsnap_chunk_cache_release(b, sx);
        vmsnap_chunk_cache_release(b, sy);
        /* a closed handle's claims are gone */
        assert_int_equal(vmsnap_chunk_cache_claim(a, sy, false), 1);
        vmsnap_chunk_cache_close(a);
        assert_int_equal(vmsnap_chunk_cache_claim(b, sy, false), 1);
        vmsnap_chunk_cache_close(b);
}

static void test_parse_size(void **state)
{
        (void)state;
        uint64_t v;
        assert_int_equal(vmsnap_chunk_cache_parse_size("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(vmsnap_chunk_cache_parse_size("512M", &v), 0);
        assert_int_equal(v, 512ull << 20);
        assert_int_equal(vmsnap_chunk_cache_parse_size("8G", &v), 0);
        assert_int_equal(v, 8ull << 30);
        assert_int_equal(vmsnap_chunk_cache_parse_size("12345", &v), 0);
        assert_int_equal(v, 12345);
        assert_int_equal(vmsnap_chunk_cache_parse_size("", &v), -EINVAL);
        assert_int_equal(vmsnap_chunk_cache_parse_size("-1", &v), -EINVAL);
        assert_int_equal(vmsnap_chunk_cache_parse_size("1T", &v), -EINVAL);
        assert_int_equal(vmsnap_chunk_cache_parse_size("99999999999G", &v), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
                cmocka_unit_test_setup_teardown(test_corrupt_file_detected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lru_eviction, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_tmp_swept, setup, teardown),
                cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
                cmocka_unit_test(test_parse_size),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
