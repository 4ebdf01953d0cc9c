/* uffd-peer: plays a VMM restoring a snapshot with Firecracker's Uffd memory backend, for
 * the page-server tests (Firecracker itself cannot run here). Like FC's `PUT /snapshot/load`
 * it maps guest memory (anonymous, or 2 MiB hugetlbfs), creates a userfaultfd
 * (O_CLOEXEC|O_NONBLOCK, EVENT_REMOVE), registers every region in MISSING mode, connects to
 * the server's socket and sends one message: the JSON array of regions in the chosen FC
 * field-name generation with the uffd attached via SCM_RIGHTS (FC >= 1.12 keeps its end of
 * the socket open, older releases close it). Then its threads touch pages in random order
 * and check every byte against the materialized snapshot (--expect).
 *
 * Cases (--case):
 *   touch      touch (a --fraction of) all pages, compare each with the snapshot
 *   same-page  all threads touch the same page at the same moment, page after page
 *   dontneed   touch all; MADV_DONTNEED some windows (written to first); re-touch all:
 *              dropped windows must read as zeros, the rest as the snapshot
 *   exit-mid   threads touch until half the pages are in, then the process exits
 *              while faults are outstanding (a VMM dying mid-restore)
 *   ws-wait    ask the server over its control socket until working-set replay is done,
 *              then touch like `touch` (the test counts the demand faults left)
 *   prefetch-wait  the same, waiting for the background prefetch
 *   idle       send the handshake and wait to be killed
 * Exit codes: 0 every byte matched, 1 mismatch or failure, 2 usage, 77 a kernel feature
 * (userfaultfd, hugepages) is missing. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define PAGE      4096ull
#define HUGE_PAGE (2ull << 20)
#define MAX_REGIONS 16

enum gen { GEN_1_1, GEN_1_7, GEN_1_12, GEN_2_0 };

struct region {
        uint8_t *base;
        uint64_t size, offset;
};

static struct {
        const char *socket, *expect_path, *kase;
        enum gen gen;
        unsigned n_regions, threads;
        bool hugetlb, write;
        double fraction;
        uint64_t seed;
} opt = {.gen = GEN_1_12, .n_regions = 2, .threads = 4, .fraction = 1.0, .seed = 1,
         .kase = "touch"};

static struct region regions[MAX_REGIONS];
static const uint8_t *expect;
static uint64_t mem_size, page_size = PAGE;
static uint64_t *order; /* 4 KiB page numbers of the address space, in touch order */
static uint64_t n_order;
static atomic_uint_fast64_t touched, mismatches;
static bool after_drop; /* dontneed: dropped windows must now read as zeros */
static pthread_barrier_t barrier;

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "uffd-peer: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        exit(code);
}

static uint64_t mix(uint64_t x)
{
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ull;
        return x ^ (x >> 33);
}

/* The guest address of address-space offset off. */
static uint8_t *guest(uint64_t off)
{
        for (unsigned i = 0; i < opt.n_regions; i++)
                if (off >= regions[i].offset && off < regions[i].offset + regions[i].size)
                        return regions[i].base + (off - regions[i].offset);
        die(1, "offset %llu is in no region", (unsigned long long)off);
}

/* Compares the 4 KiB page at offset off with want (NULL = zeros). */
static void check_page(uint64_t off, const uint8_t *want)
{
        static const uint8_t zeros[PAGE];
        const uint8_t *got = guest(off);
        if (!want)
                want = zeros;
        if (memcmp(got, want, PAGE) == 0)
                return;
        size_t i = 0;
        while (got[i] == want[i])
                i++;
        if (atomic_fetch_add(&mismatches, 1) < 5)
                fprintf(stderr, "uffd-peer: mismatch at offset 0x%llx: got 0x%02x, want 0x%02x\n",
                        (unsigned long long)(off + i), got[i], want[i]);
}

/* Windows of 64 KiB (or one huge page) dropped with MADV_DONTNEED: every 7th. */
static bool dropped(uint64_t off)
{
        uint64_t w = page_size > 65536 ? page_size : 65536;
        return (off / w) % 7 == 3;
}

static void touch(uint64_t off)
{
        uint8_t *p = guest(off);
        if (opt.write && (off / PAGE) % 2) /* a write fault that keeps the content */
                __atomic_fetch_add(p, 0, __ATOMIC_RELAXED);
        check_page(off, after_drop && dropped(off) ? NULL : expect + off);
        atomic_fetch_add(&touched, 1);
}

static void *touch_thread(void *arg)
{
        uint64_t t = (uint64_t)(uintptr_t)arg;
        for (uint64_t i = t; i < n_order; i += opt.threads)
                touch(order[i] * PAGE);
        return NULL;
}

static void *same_page_thread(void *arg)
{
        (void)arg;
        uint64_t rounds = n_order < 256 ? n_order : 256;
        for (uint64_t i = 0; i < rounds; i++) {
                pthread_barrier_wait(&barrier);
                check_page(order[i] * PAGE, expect + order[i] * PAGE);
                atomic_fetch_add(&touched, 1);
        }
        return NULL;
}

static void run_threads(void *(*fn)(void *))
{
        pthread_t th[64];
        for (unsigned t = 0; t < opt.threads; t++)
                if (pthread_create(&th[t], NULL, fn, (void *)(uintptr_t)t) != 0)
                        die(1, "pthread_create failed");
        for (unsigned t = 0; t < opt.threads; t++)
                pthread_join(th[t], NULL);
}

/* The pages to touch: a deterministic --fraction of them (same seed, same set), shuffled. */
static void build_order(void)
{
        order = malloc(mem_size / PAGE * sizeof(*order));
        if (!order)
                die(1, "out of memory");
        for (uint64_t p = 0; p < mem_size / PAGE; p++)
                if ((double)(mix(p ^ (opt.seed << 40)) >> 11) / 9007199254740992.0 < opt.fraction)
                        order[n_order++] = p;
        uint64_t st = mix(opt.seed);
        for (uint64_t i = n_order; i > 1; i--) {
                st = mix(st + i);
                uint64_t j = st % i, tmp = order[i - 1];
                order[i - 1] = order[j];
                order[j] = tmp;
        }
}

static uint64_t free_hugepages(void)
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

/* Maps guest memory the way FC does for a Uffd restore: anonymous private memory per
 * region, hugetlbfs-backed for 2 MiB guests. */
static void map_regions(void)
{
        if (opt.hugetlb && free_hugepages() < mem_size / HUGE_PAGE)
                die(77, "needs %llu free 2 MiB hugepages, the system has %llu "
                    "(vm.nr_hugepages); skipping", (unsigned long long)(mem_size / HUGE_PAGE),
                    (unsigned long long)free_hugepages());
        uint64_t part = mem_size / opt.n_regions / page_size * page_size, off = 0;
        if (part == 0)
                die(2, "snapshot too small for %u regions", opt.n_regions);
        for (unsigned i = 0; i < opt.n_regions; i++) {
                uint64_t size = i + 1 == opt.n_regions ? mem_size - off : part;
                int flags = MAP_PRIVATE | MAP_ANONYMOUS;
                if (opt.hugetlb)
                        flags |= MAP_HUGETLB | MAP_HUGE_2MB;
                void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
                if (p == MAP_FAILED)
                        die(opt.hugetlb ? 77 : 1, "mmap of %llu bytes failed: %s",
                            (unsigned long long)size, strerror(errno));
                regions[i] = (struct region){p, size, off};
                off += size;
        }
}

static int new_uffd(void)
{
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
                int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
                if (dev >= 0) {
                        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
                        close(dev);
                }
        }
        if (fd < 0)
                die(77, "userfaultfd unavailable: %s (needs CAP_SYS_PTRACE, "
                    "vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)",
                    strerror(errno));
        struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
        if (opt.hugetlb)
                api.features |= UFFD_FEATURE_MISSING_HUGETLBFS;
        if (ioctl(fd, UFFDIO_API, &api) < 0)
                die(77, "UFFDIO_API (EVENT_REMOVE%s) failed: %s",
                    opt.hugetlb ? ", MISSING_HUGETLBFS" : "", strerror(errno));
        for (unsigned i = 0; i < opt.n_regions; i++) {
                struct uffdio_register reg = {
                        .range = {(uintptr_t)regions[i].base, regions[i].size},
                        .mode = UFFDIO_REGISTER_MODE_MISSING};
                if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
                        die(77, "UFFDIO_REGISTER failed: %s", strerror(errno));
                if (!(reg.ioctls & (1ull << _UFFDIO_COPY)))
                        die(1, "registered range does not support UFFDIO_COPY");
        }
        return fd;
}

/* The JSON FC sends, in the field order of its GuestRegionUffdMapping at that release. */
static size_t handshake_json(char *buf, size_t cap)
{
        size_t n = 0;
        n += (size_t)snprintf(buf + n, cap - n, "[");
        for (unsigned i = 0; i < opt.n_regions; i++) {
                unsigned long long b = (uintptr_t)regions[i].base, s = regions[i].size,
                                   o = regions[i].offset, ps = page_size;
                n += (size_t)snprintf(buf + n, cap - n,
                                      "%s{\"base_host_virt_addr\":%llu,\"size\":%llu,"
                                      "\"offset\":%llu", i ? "," : "", b, s, o);
                if (opt.gen == GEN_1_7)
                        n += (size_t)snprintf(buf + n, cap - n, ",\"page_size_kib\":%llu", ps);
                else if (opt.gen == GEN_1_12)
                        n += (size_t)snprintf(buf + n, cap - n,
                                              ",\"page_size\":%llu,\"page_size_kib\":%llu", ps, ps);
                else if (opt.gen == GEN_2_0)
                        n += (size_t)snprintf(buf + n, cap - n, ",\"page_size\":%llu", ps);
                n += (size_t)snprintf(buf + n, cap - n, "}");
        }
        n += (size_t)snprintf(buf + n, cap - n, "]");
        return n;
}

static int connect_to(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die(1, "connect %s: %s", path, strerror(errno));
        return s;
}

/* One sendmsg with the JSON and the uffd, like FC's send_with_fd. Returns the socket. */
static int send_handshake(int uffd)
{
        char json[8192];
        size_t len = handshake_json(json, sizeof(json));
        int s = connect_to(opt.socket);
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } ctl;
        struct iovec iov = {json, len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                             .msg_controllen = sizeof(ctl.buf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &uffd, sizeof(int));
        if (sendmsg(s, &msg, MSG_NOSIGNAL) != (ssize_t)len)
                die(1, "sendmsg: %s", strerror(errno));
        return s;
}

/* Asks the server for its stats over a new control connection; returns the parsed reply. */
static json_t *control_stats(void)
{
        int s = connect_to(opt.socket);
        const char req[] = "{\"request\":\"stats\"}\n";
        if (write(s, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1)
                die(1, "control write: %s", strerror(errno));
        char buf[8192];
        size_t n = 0;
        while (n < sizeof(buf) - 1) {
                ssize_t k = read(s, buf + n, sizeof(buf) - 1 - n);
                if (k <= 0)
                        break;
                n += (size_t)k;
                if (buf[n - 1] == '\n')
                        break;
        }
        close(s);
        buf[n] = '\0';
        json_t *j = json_loads(buf, 0, NULL);
        if (!j)
                die(1, "control reply is not JSON: %s", buf);
        return j;
}

/* Polls the stats until the working-set replay (or the background prefetch) is done. */
static void wait_done(bool prefetch)
{
        for (int i = 0; i < 30000; i++) {
                json_t *j = control_stats();
                json_t *v = prefetch ? json_object_get(j, "prefetch_done")
                                     : json_object_get(json_object_get(j, "working_set"), "done");
                bool done = json_is_true(v);
                json_decref(j);
                if (done)
                        return;
                usleep(1000);
        }
        die(1, "%s did not finish", prefetch ? "prefetch" : "working-set replay");
}

static void case_dontneed(void)
{
        run_threads(touch_thread);
        uint64_t w = page_size > 65536 ? page_size : 65536;
        for (uint64_t off = 0; off < mem_size; off += w)
                if (dropped(off)) {
                        memset(guest(off), 0xA5, w); /* must not come back either */
                        if (madvise(guest(off), w, MADV_DONTNEED) < 0)
                                die(1, "madvise: %s", strerror(errno));
                }
        after_drop = true;
        for (uint64_t i = 0; i + 1 < n_order; i += 2) { /* re-touch in another order */
                uint64_t t = order[i];
                order[i] = order[i + 1];
                order[i + 1] = t;
        }
        run_threads(touch_thread);
}

static void case_exit_mid(void)
{
        pthread_t th[64];
        for (unsigned t = 0; t < opt.threads; t++) {
                pthread_create(&th[t], NULL, touch_thread, (void *)(uintptr_t)t);
                pthread_detach(th[t]); /* never joined: the process exits under them */
        }
        while (atomic_load(&touched) < n_order / 2)
                usleep(100);
        fprintf(stderr, "uffd-peer: exiting mid-restore after %llu pages\n",
                (unsigned long long)atomic_load(&touched));
        _exit(0);
}

static void parse_gen(const char *s)
{
        static const char *const names[] = {"1.1", "1.7", "1.12", "2.0"};
        for (int i = 0; i < 4; i++)
                if (strcmp(s, names[i]) == 0) {
                        opt.gen = (enum gen)i;
                        return;
                }
        die(2, "--gen is 1.1, 1.7, 1.12 or 2.0, not '%s'", s);
}

static void parse_args(int argc, char **argv)
{
        static const struct option lo[] = {
                {"socket", 1, NULL, 's'}, {"expect", 1, NULL, 'e'}, {"gen", 1, NULL, 'g'},
                {"regions", 1, NULL, 'r'}, {"hugetlb", 0, NULL, 'H'}, {"threads", 1, NULL, 't'},
                {"case", 1, NULL, 'c'}, {"fraction", 1, NULL, 'f'}, {"seed", 1, NULL, 'S'},
                {"write", 0, NULL, 'w'}, {0}};
        int c;
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (c) {
                case 's': opt.socket = optarg; break;
                case 'e': opt.expect_path = optarg; break;
                case 'g': parse_gen(optarg); break;
                case 'r': opt.n_regions = (unsigned)atoi(optarg); break;
                case 'H': opt.hugetlb = true; break;
                case 't': opt.threads = (unsigned)atoi(optarg); break;
                case 'c': opt.kase = optarg; break;
                case 'f': opt.fraction = atof(optarg); break;
                case 'S': opt.seed = strtoull(optarg, NULL, 0); break;
                case 'w': opt.write = true; break;
                default: die(2, "unknown option");
                }
        }
        if (!opt.socket || !opt.expect_path || opt.n_regions < 1 ||
            opt.n_regions > MAX_REGIONS || opt.threads < 1 || opt.threads > 64)
                die(2, "usage: uffd-peer --socket PATH --expect FILE [--gen G] [--regions N] "
                    "[--hugetlb] [--threads N] [--case C] [--fraction F] [--seed S] [--write]");
        if (opt.hugetlb && opt.gen == GEN_1_1)
                die(2, "FC 1.1-1.6 handshakes carry no page size: no hugepages");
        if (opt.hugetlb)
                page_size = HUGE_PAGE;
}

static void load_expect(void)
{
        int fd = open(opt.expect_path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                die(1, "%s: %s", opt.expect_path, strerror(errno));
        mem_size = (uint64_t)st.st_size;
        if (mem_size == 0 || mem_size % page_size)
                die(2, "%s: size %llu is not a multiple of the page size", opt.expect_path,
                    (unsigned long long)mem_size);
        void *p = mmap(NULL, mem_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
                die(1, "mmap %s: %s", opt.expect_path, strerror(errno));
        close(fd);
        expect = p;
}

int main(int argc, char **argv)
{
        alarm(120); /* a hung restore fails the test instead of stalling it */
        parse_args(argc, argv);
        load_expect();
        map_regions();
        build_order();
        int uffd = new_uffd();
        /* Like FC, keep our copy of the uffd: if the server goes away, our faults then hang
         * (and the server's tests see that it killed us) instead of silently reading zero
         * pages after the last uffd reference unregisters the regions. */
        int sock = send_handshake(uffd);
        if (opt.gen < GEN_1_12)
                close(sock); /* FC before 1.12 closed its end after sending */
        if (strcmp(opt.kase, "touch") == 0)
                run_threads(touch_thread);
        else if (strcmp(opt.kase, "same-page") == 0) {
                pthread_barrier_init(&barrier, NULL, opt.threads);
                run_threads(same_page_thread);
        } else if (strcmp(opt.kase, "dontneed") == 0)
                case_dontneed();
        else if (strcmp(opt.kase, "exit-mid") == 0)
                case_exit_mid();
        else if (strcmp(opt.kase, "ws-wait") == 0 || strcmp(opt.kase, "prefetch-wait") == 0) {
                wait_done(opt.kase[0] == 'p');
                run_threads(touch_thread);
        } else if (strcmp(opt.kase, "idle") == 0)
                for (;;)
                        pause();
        else
                die(2, "unknown case '%s'", opt.kase);
        uint64_t bad = atomic_load(&mismatches);
        fprintf(stderr, "uffd-peer: %s: %llu pages touched, %llu mismatches\n", opt.kase,
                (unsigned long long)atomic_load(&touched), (unsigned long long)bad);
        return bad ? 1 : 0;
}
