/* bench-uffd: the lazy-restore page server against baselines measured in the same run.
 *
 *   1. Demand faults, one 4 KiB page per fault (fault-around off), random first touches:
 *      fault rate and p50/p99 latency as the guest sees them (timed around each touch in
 *      the VMM process); vmsnap against a minimal single-threaded handler written here in
 *      the style of Firecracker's example (drain messages, UFFDIO_COPY 4 KiB from an mmap of
 *      the full memory image: no hashing, no zero pages, no workers).
 *   2. Restore throughput, every page touched by 4 vCPU threads: bulk installs right after
 *      the handshake in 4 MiB ioctls (every byte copied; or data copied and zero extents
 *      mapped with UFFDIO_ZEROPAGE, the ceiling), vmsnap demand with 64 KiB fault-around,
 *      and vmsnap replaying a recorded working set while the guest runs.
 *   3. Demand faults with vs without a recorded working set, for a boot-like access pattern.
 *
 * The VMM is a forked process that maps guest memory anonymously, registers a userfaultfd
 * (MISSING, EVENT_REMOVE) and sends Firecracker's handshake, like tests/peer/uffd-peer.c.
 * Build with the release preset.
 * usage: bench-uffd [--size MIB] [--data PERCENT] [--workers N] [--dir DIR] */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmsnap/mem.h>
#include <vmsnap/uffd.h>

#define PAGE 4096ull
#define MiB  (1ull << 20)
#define BULK (4 * MiB)

static uint64_t mem_size = 512 * MiB;
static unsigned data_pct = 40, workers = VMSNAP_UFFD_DEFAULT_WORKERS;
static char dir[400], snapdir[512], image[512], sockpath[512], wspath[600];
static const uint8_t *img; /* the materialized image, mapped read-only */

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mix(uint64_t x)
{
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ull;
        return x ^ (x >> 33);
}

static void die(const char *what, const char *why)
{
        fprintf(stderr, "bench-uffd: %s: %s\n", what, why ? why : strerror(errno));
        exit(1);
}

/* ---- the snapshot ----------------------------------------------------------------------- */

/* A sparse memory file: runs of 4 KiB .. 256 KiB, data with probability data_pct. */
static uint64_t write_memfile(const char *raw)
{
        int fd = open(raw, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)mem_size) < 0)
                die(raw, NULL);
        uint64_t *buf = malloc(256 << 10), st = 12345, data = 0;
        for (uint64_t off = 0; off < mem_size;) {
                st = mix(st + 1);
                uint64_t run = (1 + st % 64) * PAGE;
                run = run < mem_size - off ? run : mem_size - off;
                if (mix(st) % 100 < data_pct) {
                        for (size_t i = 0; i < run / 8; i++)
                                buf[i] = mix(st + off + i) | 1;
                        if (pwrite(fd, buf, run, (off_t)off) != (ssize_t)run)
                                die(raw, NULL);
                        data += run;
                }
                off += run;
        }
        free(buf);
        close(fd);
        return data;
}

static void make_snapshot(void)
{
        char raw[600];
        snprintf(raw, sizeof(raw), "%s/mem.raw", dir);
        uint64_t t0 = now_ns(), data = write_memfile(raw);
        struct vmsnap_mem_result res;
        struct vmsnap_diag d = {0};
        if (vmsnap_mem_process(raw, snapdir, NULL, &res, &d) < 0 ||
            vmsnap_mem_materialize(snapdir, image, &res, &d) < 0)
                die("snapshot", d.msg);
        unlink(raw);
        int fd = open(image, O_RDONLY | O_CLOEXEC);
        img = mmap(NULL, mem_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (fd < 0 || img == MAP_FAILED)
                die(image, NULL);
        close(fd);
        printf("snapshot: %llu MiB guest memory, %.1f %% data, made in %.1f s\n",
               (unsigned long long)(mem_size / MiB), 100.0 * (double)data / (double)mem_size,
               (double)(now_ns() - t0) / 1e9);
}

/* ---- the VMM (forked child) -------------------------------------------------------------- */

enum pattern {
        PAT_RANDOM, /* a random `fraction` of the pages, random order, threads interleaved */
        PAT_ALL,    /* every page; each thread scans its contiguous share */
        PAT_BOOT,   /* clusters: 10 % of 256 KiB chunks, half their pages, random order */
};

struct peer_cfg {
        enum pattern pattern;
        unsigned threads;
        double fraction;
        bool wait_ws; /* poll the control socket until working-set replay is done */
};

struct peer_result {
        uint64_t ns;      /* first touch to last touch */
        uint64_t touched; /* pages */
        uint64_t p50_ns, p99_ns;
        uint64_t bad;     /* pages whose first byte differs from the image */
};

static uint8_t *guest;
static uint64_t *order, n_order, *lat;
static unsigned n_threads;
static enum pattern pat;

static bool selected(uint64_t page, const struct peer_cfg *c)
{
        if (c->pattern == PAT_ALL)
                return true;
        if (c->pattern == PAT_RANDOM)
                return mix(page ^ 0xabcdef) % 10000 < (uint64_t)(c->fraction * 10000);
        uint64_t chunk = page / 64; /* 256 KiB */
        return mix(chunk ^ 0x5eed) % 10 == 0 && mix(page ^ 0xb007) % 2 == 0;
}

static void build_order(const struct peer_cfg *c)
{
        order = malloc(mem_size / PAGE * sizeof(*order));
        lat = calloc(mem_size / PAGE, sizeof(*lat));
        for (uint64_t p = 0; p < mem_size / PAGE; p++)
                if (selected(p, c))
                        order[n_order++] = p;
        for (uint64_t i = n_order; c->pattern != PAT_ALL && i > 1; i--) {
                uint64_t j = mix(i * 7 + 3) % i, t = order[i - 1];
                order[i - 1] = order[j];
                order[j] = t;
        }
}

static atomic_uint_fast64_t bad_pages;

static void *touch_thread(void *arg)
{
        uint64_t t = (uintptr_t)arg, lo = 0, hi = n_order, step = n_threads;
        if (pat == PAT_ALL) { /* a contiguous share, scanned in order */
                lo = n_order * t / n_threads;
                hi = n_order * (t + 1) / n_threads;
                step = 1;
        } else
                lo = t;
        for (uint64_t i = lo; i < hi; i += step) {
                uint64_t off = order[i] * PAGE, t0 = now_ns();
                uint8_t v = *(volatile uint8_t *)(guest + off);
                lat[i] = now_ns() - t0;
                if (v != img[off])
                        atomic_fetch_add(&bad_pages, 1);
        }
        return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static int new_uffd(void)
{
        int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
        if (u < 0 || ioctl(u, UFFDIO_API, &api) < 0)
                die("userfaultfd", NULL);
        struct uffdio_register reg = {.range = {(uintptr_t)guest, mem_size},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (ioctl(u, UFFDIO_REGISTER, &reg) < 0)
                die("UFFDIO_REGISTER", NULL);
        return u;
}

/* The socket address of sockpath (its length is checked in parse_args). */
static struct sockaddr_un sock_addr(void)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, sockpath, strlen(sockpath) + 1);
        return sa;
}

static int connect_sock(void)
{
        struct sockaddr_un sa = sock_addr();
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        for (int i = 0; connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0; i++) {
                if (i > 5000)
                        die("connect", NULL);
                usleep(1000);
        }
        return s;
}

/* Firecracker >= 1.12's handshake: one region, the uffd attached. */
static void send_handshake(int uffd)
{
        char json[256];
        int len = snprintf(json, sizeof(json),
                           "[{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":0,"
                           "\"page_size\":4096,\"page_size_kib\":4096}]",
                           (unsigned long long)(uintptr_t)guest, (unsigned long long)mem_size);
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } ctl;
        struct iovec iov = {json, (size_t)len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                             .msg_controllen = sizeof(ctl.buf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &uffd, sizeof(int));
        int s = connect_sock();
        if (sendmsg(s, &msg, 0) != len)
                die("sendmsg", NULL);
        /* kept open, as FC >= 1.12 does */
}

static void wait_ws_done(void)
{
        for (;;) {
                int s = connect_sock();
                const char req[] = "{\"request\":\"stats\"}\n";
                char buf[4096] = {0};
                size_t n = 0;
                if (write(s, req, sizeof(req) - 1) < 0)
                        die("control", NULL);
                for (ssize_t k; n < sizeof(buf) - 1 && (n == 0 || buf[n - 1] != '\n') &&
                                (k = read(s, buf + n, sizeof(buf) - 1 - n)) > 0;)
                        n += (size_t)k; /* one reply line; the server keeps the connection */
                close(s);
                json_t *j = json_loads(buf, 0, NULL);
                bool done = json_is_true(json_object_get(json_object_get(j, "working_set"), "done"));
                json_decref(j);
                if (done)
                        return;
                usleep(1000);
        }
}

static void peer_main(const struct peer_cfg *c, int out)
{
        guest = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (guest == MAP_FAILED)
                die("mmap", NULL);
        n_threads = c->threads;
        pat = c->pattern;
        build_order(c);
        int uffd = new_uffd();
        send_handshake(uffd);
        if (c->wait_ws)
                wait_ws_done();
        pthread_t th[16];
        uint64_t t0 = now_ns();
        for (unsigned t = 0; t < n_threads; t++)
                pthread_create(&th[t], NULL, touch_thread, (void *)(uintptr_t)t);
        for (unsigned t = 0; t < n_threads; t++)
                pthread_join(th[t], NULL);
        struct peer_result r = {.ns = now_ns() - t0, .touched = n_order,
                                .bad = atomic_load(&bad_pages)};
        qsort(lat, n_order, sizeof(*lat), cmp_u64);
        r.p50_ns = n_order ? lat[n_order / 2] : 0;
        r.p99_ns = n_order ? lat[n_order * 99 / 100] : 0;
        if (write(out, &r, sizeof(r)) != (ssize_t)sizeof(r))
                die("result pipe", NULL);
        _exit(0);
}

/* Forks the VMM; returns its pid and the read end of its result pipe. */
static pid_t start_peer(const struct peer_cfg *c, int *ret_fd)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                die("pipe", NULL);
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
                die("fork", NULL);
        if (pid == 0) {
                close(p[0]);
                peer_main(c, p[1]);
        }
        close(p[1]);
        *ret_fd = p[0];
        return pid;
}

static struct peer_result finish_peer(pid_t pid, int fd)
{
        struct peer_result r = {0};
        if (read(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
                die("peer", "no result (did it crash?)");
        close(fd);
        int st;
        waitpid(pid, &st, 0);
        if (r.bad)
                die("peer", "pages with wrong content");
        return r;
}

/* ---- the handlers ------------------------------------------------------------------------- */

struct outcome {
        struct peer_result peer;
        struct vmsnap_uffd_stats st;
        uint64_t faults;
};

static void run_vmsnap(const struct vmsnap_uffd_opts *o, const struct peer_cfg *c,
                       struct outcome *out, bool save_ws)
{
        struct vmsnap_uffd_server *s;
        struct vmsnap_diag d = {0};
        if (vmsnap_uffd_server_new(snapdir, sockpath, o, &s, &d) < 0)
                die("server", d.msg);
        int fd;
        pid_t pid = start_peer(c, &fd);
        if (vmsnap_uffd_server_run(s, &d) < 0)
                die("server run", d.msg);
        vmsnap_uffd_server_stats(s, &out->st);
        out->faults = out->st.faults;
        if (save_ws && vmsnap_uffd_server_save_ws(s, NULL, &d) < 0)
                die("save ws", d.msg);
        vmsnap_uffd_server_free(s);
        out->peer = finish_peer(pid, fd);
}

static int listen_plain(void)
{
        struct sockaddr_un sa = sock_addr();
        unlink(sockpath);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 4) < 0)
                die("listen", NULL);
        return l;
}

/* Accepts the handshake; returns the uffd and the region's base. */
static int take_handshake(int l, uint64_t *ret_base)
{
        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        char buf[1024] = {0};
        union {
                char b[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } ctl;
        struct iovec iov = {buf, sizeof(buf) - 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                             .msg_controllen = sizeof(ctl.b)};
        if (c < 0 || recvmsg(c, &msg, MSG_CMSG_CLOEXEC) <= 0 || !CMSG_FIRSTHDR(&msg))
                die("reference handshake", NULL);
        int uffd;
        memcpy(&uffd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
        json_t *j = json_loads(buf, 0, NULL);
        *ret_base = (uint64_t)json_integer_value(
                json_object_get(json_array_get(j, 0), "base_host_virt_addr"));
        json_decref(j);
        close(c);
        return uffd;
}

/* Until the VMM exits: drain messages, UFFDIO_COPY each faulting page from the image. */
static uint64_t reference_loop(int uffd, int pidfd, uint64_t base)
{
        uint64_t faults = 0;
        struct pollfd pf[2] = {{uffd, POLLIN, 0}, {pidfd, POLLIN, 0}};
        while (!(pf[1].revents & POLLIN)) {
                if (poll(pf, 2, -1) < 0 && errno != EINTR)
                        die("poll", NULL);
                struct uffd_msg m[64];
                ssize_t n;
                while ((n = read(uffd, m, sizeof(m))) > 0)
                        for (ssize_t i = 0; i < n / (ssize_t)sizeof(m[0]); i++) {
                                if (m[i].event != UFFD_EVENT_PAGEFAULT)
                                        continue;
                                uint64_t a = m[i].arg.pagefault.address & ~(PAGE - 1);
                                struct uffdio_copy cp = {.dst = a,
                                                         .src = (uintptr_t)(img + (a - base)),
                                                         .len = PAGE};
                                while (ioctl(uffd, UFFDIO_COPY, &cp) < 0 && errno == EAGAIN)
                                        ;
                                faults++;
                        }
        }
        return faults;
}

static void run_reference(const struct peer_cfg *c, struct outcome *out)
{
        int l = listen_plain(), fd;
        pid_t pid = start_peer(c, &fd);
        uint64_t base;
        int uffd = take_handshake(l, &base);
        int pidfd = pidfd_open(pid, 0);
        out->faults = reference_loop(uffd, pidfd, base);
        close(pidfd);
        close(uffd);
        close(l);
        unlink(sockpath);
        out->peer = finish_peer(pid, fd);
}

/* Eager baselines right after the handshake, in 4 MiB ioctls: every byte with UFFDIO_COPY
 * (Firecracker's fault_all example), or only the data extents with UFFDIO_COPY and the zero
 * extents with UFFDIO_ZEROPAGE (the ceiling for installing this snapshot). The VMM then
 * touches every page (no faults left). Returns the time of the install loop. */
static void bulk_install(int uffd, uint64_t base, bool zeropage)
{
        struct vmsnap_mem_snapshot *snap = NULL;
        struct vmsnap_diag d = {0};
        if (zeropage && vmsnap_mem_open(snapdir, &snap, &d) < 0)
                die("snapshot", d.msg);
        for (uint64_t off = 0; off < mem_size;) {
                struct vmsnap_mem_location loc = {.zero = false, .run = mem_size - off};
                if (snap)
                        vmsnap_mem_locate(snap, off, &loc);
                uint64_t n = loc.run < BULK - off % BULK ? loc.run : BULK - off % BULK;
                int r;
                if (loc.zero) {
                        struct uffdio_zeropage z = {.range = {base + off, n}};
                        r = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
                } else {
                        struct uffdio_copy cp = {.dst = base + off,
                                                 .src = (uintptr_t)(img + off), .len = n};
                        r = ioctl(uffd, UFFDIO_COPY, &cp);
                }
                if (r < 0)
                        die("bulk install", NULL);
                off += n;
        }
        vmsnap_mem_close(snap);
}

static uint64_t run_bulk(const struct peer_cfg *c, bool zeropage, struct outcome *out)
{
        int l = listen_plain(), fd;
        pid_t pid = start_peer(c, &fd);
        uint64_t base;
        int uffd = take_handshake(l, &base);
        uint64_t t0 = now_ns();
        bulk_install(uffd, base, zeropage);
        uint64_t ns = now_ns() - t0;
        int pidfd = pidfd_open(pid, 0);
        out->faults = reference_loop(uffd, pidfd, base);
        close(pidfd);
        close(uffd);
        close(l);
        unlink(sockpath);
        out->peer = finish_peer(pid, fd);
        return ns;
}

/* ---- the report ---------------------------------------------------------------------------- */

static double gbps(uint64_t bytes, uint64_t ns)
{
        return ns ? (double)bytes / (double)ns : 0;
}

static void print_demand(const char *name, const struct outcome *o)
{
        double rate = (double)o->faults / ((double)o->peer.ns / 1e9);
        printf("  %-34s %8.0f faults/s  p50 %6.1f us  p99 %7.1f us", name, rate,
               (double)o->peer.p50_ns / 1e3, (double)o->peer.p99_ns / 1e3);
        if (o->st.connected)
                printf("  (server: p50 %.1f us, p99 %.1f us)", (double)o->st.fault_p50_ns / 1e3,
                       (double)o->st.fault_p99_ns / 1e3);
        printf("\n");
}

static void bench_demand(void)
{
        printf("\n1. demand faults, 4 KiB per fault, random first touches of 25 %% of pages\n");
        struct vmsnap_uffd_opts one = {.fault_around = 4096, .no_ws_replay = true,
                                       .workers = workers};
        for (unsigned threads = 1; threads <= 4; threads *= 4) {
                struct peer_cfg c = {.pattern = PAT_RANDOM, .threads = threads, .fraction = 0.25};
                struct outcome ref, ours;
                run_reference(&c, &ref);
                run_vmsnap(&one, &c, &ours, false);
                char name[64];
                printf(" %u vCPU thread%s:\n", threads, threads > 1 ? "s" : "");
                snprintf(name, sizeof(name), "reference (1 thread, FC example)");
                print_demand(name, &ref);
                snprintf(name, sizeof(name), "vmsnap (%u workers, hash-checked)", workers);
                print_demand(name, &ours);
                printf("  %-34s %8.2fx rate  p50 %.2fx  p99 %.2fx (vmsnap / reference)\n", "ratio",
                       ((double)ours.faults / (double)ours.peer.ns) /
                               ((double)ref.faults / (double)ref.peer.ns),
                       (double)ours.peer.p50_ns / (double)ref.peer.p50_ns,
                       (double)ours.peer.p99_ns / (double)ref.peer.p99_ns);
        }
}

static void bench_throughput(void)
{
        printf("\n2. restore throughput: 4 vCPU threads touch every page (%llu MiB)\n",
               (unsigned long long)(mem_size / MiB));
        struct peer_cfg all = {.pattern = PAT_ALL, .threads = 4};
        struct outcome bulk, eager, fa, rec, ws;
        uint64_t all_ns = run_bulk(&all, false, &bulk), ceil_ns = run_bulk(&all, true, &eager);
        struct vmsnap_uffd_opts demand = {.no_ws_replay = true};
        run_vmsnap(&demand, &all, &fa, false);
        struct vmsnap_uffd_opts record = {.no_ws_replay = true, .ws_record = true};
        unlink(wspath);
        run_vmsnap(&record, &all, &rec, true);
        run_vmsnap(NULL, &all, &ws, false);
        unlink(wspath);
        double b = gbps(mem_size, ceil_ns);
        printf("  %-46s %6.2f GB/s  (%.2fx)\n", "bulk UFFDIO_COPY of every byte (FC fault_all)",
               gbps(mem_size, all_ns), gbps(mem_size, all_ns) / b);
        printf("  %-46s %6.2f GB/s  (1.00x)\n", "bulk COPY data + ZEROPAGE zeros (ceiling)", b);
        printf("  %-46s %6.2f GB/s  (%.2fx)  %llu faults\n", "vmsnap demand, 64 KiB fault-around",
               gbps(mem_size, fa.peer.ns), gbps(mem_size, fa.peer.ns) / b,
               (unsigned long long)fa.faults);
        printf("  %-46s %6.2f GB/s  (%.2fx)  %llu faults, %llu pages replayed\n",
               "vmsnap working-set replay (guest running)", gbps(mem_size, ws.peer.ns),
               gbps(mem_size, ws.peer.ns) / b, (unsigned long long)ws.faults,
               (unsigned long long)ws.st.ws_pages);
        printf("  (vmsnap figures: first touch to last touch in the VMM, so they include the\n"
               "   guest's own work; bulk: the copy loop alone)\n");
}

static void bench_working_set(void)
{
        printf("\n3. working set: boot-like pattern (10 %% of 256 KiB chunks, half their pages)\n");
        struct peer_cfg boot = {.pattern = PAT_BOOT, .threads = 2};
        struct outcome rec, cold, warm, live;
        struct vmsnap_uffd_opts record = {.no_ws_replay = true, .ws_record = true};
        unlink(wspath);
        run_vmsnap(&record, &boot, &rec, true);
        struct vmsnap_uffd_opts none = {.no_ws_replay = true};
        run_vmsnap(&none, &boot, &cold, false);
        struct peer_cfg wait = boot;
        wait.wait_ws = true;
        run_vmsnap(NULL, &wait, &warm, false);
        run_vmsnap(NULL, &boot, &live, false);
        unlink(wspath);
        printf("  %-46s %7llu demand faults  %6.1f ms\n", "without a working set",
               (unsigned long long)cold.faults, (double)cold.peer.ns / 1e6);
        printf("  %-46s %7llu demand faults  %6.1f ms  (%.1f %% fewer)\n",
               "with memfile.ws, replay done before the guest", (unsigned long long)warm.faults,
               (double)warm.peer.ns / 1e6,
               100.0 * (1.0 - (double)warm.faults / (double)cold.faults));
        printf("  %-46s %7llu demand faults  %6.1f ms  (%.1f %% fewer)\n",
               "with memfile.ws, replay while the guest runs", (unsigned long long)live.faults,
               (double)live.peer.ns / 1e6,
               100.0 * (1.0 - (double)live.faults / (double)cold.faults));
        printf("  (working set: %llu blocks recorded, %llu pages replayed)\n",
               (unsigned long long)warm.st.ws_blocks, (unsigned long long)warm.st.ws_pages);
}

static void parse_args(int argc, char **argv)
{
        const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
                        mem_size = strtoull(argv[++i], NULL, 0) * MiB;
                else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
                        data_pct = (unsigned)atoi(argv[++i]);
                else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
                        workers = (unsigned)atoi(argv[++i]);
                else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
                        base = argv[++i];
                else {
                        fprintf(stderr, "usage: bench-uffd [--size MIB] [--data PERCENT] "
                                        "[--workers N] [--dir DIR]\n");
                        exit(2);
                }
        }
        if (mem_size < 16 * MiB || mem_size % BULK || data_pct > 100)
                die("arguments", "size must be a multiple of 4 MiB, >= 16 MiB");
        snprintf(dir, sizeof(dir), "%s/bench-uffd-XXXXXX", base);
        if (!mkdtemp(dir))
                die(dir, NULL);
        snprintf(snapdir, sizeof(snapdir), "%s/snap", dir);
        snprintf(image, sizeof(image), "%s/image.raw", dir);
        snprintf(sockpath, sizeof(sockpath), "%s/uffd.sock", dir);
        if (strlen(sockpath) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                die(sockpath, "path too long for a Unix socket; use a shorter --dir");
        snprintf(wspath, sizeof(wspath), "%s/%s", snapdir, VMSNAP_UFFD_WS_NAME);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

/* Removes the bench's own scratch directory (made by mkdtemp above). */
static void cleanup(void)
{
        munmap((void *)img, mem_size);
        if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
                fprintf(stderr, "bench-uffd: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
        parse_args(argc, argv);
        signal(SIGPIPE, SIG_IGN);
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        printf("bench-uffd: %ld CPUs; VMM = forked process, FC >= 1.12 handshake\n", cpus);
        make_snapshot();
        bench_demand();
        bench_throughput();
        bench_working_set();
        cleanup();
        return 0;
}
