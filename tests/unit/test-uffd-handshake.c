/* Firecracker's UFFD handshake: the region JSON in every field-name generation, the checks
 * on each region, and receiving a message with its fd over a real Unix socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "test-uffd-util.h"
#include "uffd/handshake.h"

static int parse(const char *json, struct uffd_region **r, size_t *n, struct vmsnap_diag *d)
{
        vmsnap_diag_clear(d);
        return uffd_handshake_parse(json, strlen(json), r, n, d);
}

/* Parses json expecting one region; returns its page size. */
static uint64_t page_size_of(const char *json)
{
        struct uffd_region *r;
        size_t n;
        struct vmsnap_diag d = {0};
        int rc = parse(json, &r, &n, &d);
        if (rc < 0)
                fprintf(stderr, "unexpected: %s\n", d.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(n, 1);
        uint64_t ps = r->page_size;
        assert_int_equal(r->base, 2097152);
        assert_int_equal(r->size, 4194304);
        assert_int_equal(r->offset, 0);
        free(r);
        return ps;
}

#define REGION "\"base_host_virt_addr\":2097152,\"size\":4194304,\"offset\":0"

static void test_generations(void **state)
{
        (void)state;
        /* v1.1-1.6: no page size: 4 KiB */
        assert_int_equal(page_size_of("[{" REGION "}]"), 4096);
        /* v1.7-1.11: page_size_kib, which carries bytes */
        assert_int_equal(page_size_of("[{" REGION ",\"page_size_kib\":4096}]"), 4096);
        assert_int_equal(page_size_of("[{" REGION ",\"page_size_kib\":2097152}]"), 2097152);
        /* ... and the values only KiB can mean, as FC's docs describe the field */
        assert_int_equal(page_size_of("[{" REGION ",\"page_size_kib\":4}]"), 4096);
        assert_int_equal(page_size_of("[{" REGION ",\"page_size_kib\":2048}]"), 2097152);
        /* v1.12+: both */
        assert_int_equal(page_size_of("[{" REGION ",\"page_size\":2097152,"
                                      "\"page_size_kib\":2097152}]"), 2097152);
        /* after FC 2.0 removes the deprecated field */
        assert_int_equal(page_size_of("[{" REGION ",\"page_size\":4096}]"), 4096);
        /* unknown fields are ignored; null means absent */
        assert_int_equal(page_size_of("[{" REGION ",\"page_size\":4096,\"gpa_start\":0,"
                                      "\"is_guest_memfd\":false,\"page_size_kib\":null}]"),
                         4096);
        /* whitespace as a pretty-printer would send it */
        assert_int_equal(page_size_of(" [ {\n  \"base_host_virt_addr\": 2097152, \"size\": "
                                      "4194304,\n \"offset\": 0 } ]\n"), 4096);
}

static void expect_error(const char *json, const char *msg_part)
{
        struct uffd_region *r = NULL;
        size_t n;
        struct vmsnap_diag d = {0};
        assert_int_equal(parse(json, &r, &n, &d), -EPROTO);
        assert_null(r);
        if (!strstr(d.msg, msg_part))
                fprintf(stderr, "message '%s' lacks '%s'\n", d.msg, msg_part);
        assert_non_null(strstr(d.msg, msg_part));
}

static void test_rejects(void **state)
{
        (void)state;
        expect_error("", "not JSON");
        expect_error("[{" REGION "}", "not JSON");
        expect_error("{" REGION "}", "JSON array");
        expect_error("[]", "JSON array");
        expect_error("[1]", "not an object");
        expect_error("[{\"size\":4096,\"offset\":0}]", "missing base_host_virt_addr");
        expect_error("[{\"base_host_virt_addr\":4096,\"offset\":0}]", "missing size");
        expect_error("[{\"base_host_virt_addr\":4096,\"size\":4096}]", "missing offset");
        expect_error("[{\"base_host_virt_addr\":-4096,\"size\":4096,\"offset\":0}]",
                     "non-negative integer");
        expect_error("[{\"base_host_virt_addr\":\"4096\",\"size\":4096,\"offset\":0}]",
                     "non-negative integer");
        expect_error("[{\"base_host_virt_addr\":4096.0,\"size\":4096,\"offset\":0}]",
                     "non-negative integer");
        expect_error("[{" REGION ",\"page_size\":8192}]", "neither 4096 nor 2097152");
        expect_error("[{" REGION ",\"page_size\":0}]", "neither 4096 nor 2097152");
        expect_error("[{" REGION ",\"page_size\":4096,\"page_size_kib\":2097152}]",
                     "disagree");
        expect_error("[{\"base_host_virt_addr\":4097,\"size\":4096,\"offset\":0}]",
                     "multiples of the page size");
        expect_error("[{\"base_host_virt_addr\":4096,\"size\":0,\"offset\":0}]",
                     "multiples of the page size");
        expect_error("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":100}]",
                     "multiples of the page size");
        expect_error("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,"
                     "\"page_size\":2097152}]", "multiples of the page size");
        expect_error("[{" REGION ",\"is_guest_memfd\":true}]", "guest_memfd");
        expect_error("[{" REGION "," REGION "}]", "not JSON"); /* duplicate keys */
        expect_error("[{\"base_host_virt_addr\":0,\"size\":8192,\"offset\":0},"
                     "{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":8192}]",
                     "overlap");
}

static void test_many_regions_sorted(void **state)
{
        (void)state;
        char json[UFFD_MAX_MESSAGE];
        size_t len = (size_t)snprintf(json, sizeof(json), "[");
        for (int i = 0; i < 8; i++) /* listed in descending address order */
                len += (size_t)snprintf(json + len, sizeof(json) - len,
                                        "%s{\"base_host_virt_addr\":%d,\"size\":4096,"
                                        "\"offset\":%d}", i ? "," : "", (8 - i) * 8192, i * 4096);
        snprintf(json + len, sizeof(json) - len, "]");
        struct uffd_region *r;
        size_t n;
        struct vmsnap_diag d = {0};
        assert_int_equal(parse(json, &r, &n, &d), 0);
        assert_int_equal(n, 8);
        for (size_t i = 0; i < n; i++) {
                assert_int_equal(r[i].base, (i + 1) * 8192);
                assert_int_equal(r[i].offset, (7 - i) * 4096);
        }
        assert_int_equal(uffd_regions_fit(r, n, 8 * 4096, 4096, &d), 0);
        assert_int_equal(uffd_regions_fit(r, n, 7 * 4096, 4096, &d), -EPROTO);
        assert_non_null(strstr(d.msg, "outside the snapshot"));
        free(r);

        /* too many regions */
        len = (size_t)snprintf(json, sizeof(json), "[");
        for (unsigned i = 0; i <= UFFD_MAX_REGIONS; i++)
                len += (size_t)snprintf(json + len, sizeof(json) - len, "%s{}", i ? "," : "");
        snprintf(json + len, sizeof(json) - len, "]");
        expect_error(json, "1 to 1024 regions");
}

static void test_regions_fit_block_size(void **state)
{
        (void)state;
        struct uffd_region r = {.base = 1 << 21, .size = 1 << 21, .offset = 4096,
                                .page_size = 4096};
        struct vmsnap_diag d = {0};
        /* 4 KiB pages over a 2 MiB-block snapshot: regions must start on a block */
        assert_int_equal(uffd_regions_fit(&r, 1, 8 << 20, 2 << 20, &d), -EPROTO);
        assert_non_null(strstr(d.msg, "multiples of 2097152"));
        r.offset = 2 << 20;
        assert_int_equal(uffd_regions_fit(&r, 1, 8 << 20, 2 << 20, &d), 0);
        r.offset = 6 << 20;
        r.size = 4 << 20;
        assert_int_equal(uffd_regions_fit(&r, 1, 8 << 20, 2 << 20, &d), -EPROTO);
}

/* Sends data (and fd when >= 0) as one message, like FC's send_with_fd. */
static void send_with_fd(int sock, const char *data, size_t len, int fd)
{
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } ctl;
        struct iovec iov = {(void *)data, len};
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
        assert_int_equal(sendmsg(sock, &msg, 0), (ssize_t)len);
}

/* A message split over two sends is complete only after the second; its fd is kept. */
static void test_inbox(void **state)
{
        (void)state;
        int sv[2], p[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        struct uffd_inbox box = {0};
        size_t len;
        assert_int_equal(uffd_inbox_recv(sv[1], &box), -EAGAIN);
        const char *json = "[{" REGION "}]";
        send_with_fd(sv[0], json, 10, p[0]);
        assert_int_equal(uffd_inbox_recv(sv[1], &box), 10);
        assert_int_equal(uffd_inbox_complete(&box, &len), 0);
        send_with_fd(sv[0], json + 10, strlen(json) - 10, -1);
        send_with_fd(sv[0], "{\"request\":\"stats\"}\n", 20, -1);
        while (uffd_inbox_recv(sv[1], &box) > 0)
                ;
        assert_int_equal(uffd_inbox_complete(&box, &len), 1);
        assert_int_equal(len, strlen(json));
        assert_int_equal(box.n_fds, 1);
        int fd = uffd_inbox_take_fd(&box);
        assert_true(fd >= 0 && fd != p[0]);
        assert_int_equal(uffd_inbox_take_fd(&box), -1);
        close(fd);
        uffd_inbox_consume(&box, len);
        assert_int_equal(uffd_inbox_complete(&box, &len), 1); /* the control request */
        assert_int_equal(box.data[0], '{');
        uffd_inbox_consume(&box, len);
        assert_int_equal(uffd_inbox_complete(&box, &len), 0); /* only "\n" left */
        send_with_fd(sv[0], "[}", 2, -1);
        assert_true(uffd_inbox_recv(sv[1], &box) > 0);
        assert_int_equal(uffd_inbox_complete(&box, &len), -EBADMSG);
        uffd_inbox_clear(&box);

        /* more than UFFD_MAX_MESSAGE bytes without completing */
        static char big[UFFD_MAX_MESSAGE + 4096];
        memset(big, ' ', sizeof(big));
        big[0] = '[';
        ssize_t r = 0;
        for (size_t off = 0; off < sizeof(big);) {
                ssize_t k = send(sv[0], big + off, sizeof(big) - off, MSG_DONTWAIT);
                if (k > 0)
                        off += (size_t)k;
                while ((r = uffd_inbox_recv(sv[1], &box)) > 0)
                        ;
                if (r == -EMSGSIZE)
                        break;
        }
        assert_int_equal(r, -EMSGSIZE);
        uffd_inbox_clear(&box);

        /* SO_PEERCRED names the sender */
        pid_t pid;
        assert_int_equal(uffd_peer_pid(sv[1], &pid), 0);
        assert_int_equal(pid, getpid());
        close(sv[0]);
        close(sv[1]);
        close(p[0]);
        close(p[1]);
}

static void test_check_fd(void **state)
{
        (void)state;
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(uffd_check_fd(p[0]), -EBADF);
        close(p[0]);
        close(p[1]);
        int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC); /* blocking: check_fd fixes that */
        if (u < 0)
                skip();
        assert_int_equal(uffd_check_fd(u), 0);
        assert_true(fcntl(u, F_GETFL) & O_NONBLOCK);
        close(u);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_generations),
                cmocka_unit_test(test_rejects),
                cmocka_unit_test(test_many_regions_sorted),
                cmocka_unit_test(test_regions_fit_block_size),
                cmocka_unit_test(test_inbox),
                cmocka_unit_test(test_check_fd),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
