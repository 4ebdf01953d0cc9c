/* touched.c against the real kernel: a child process maps a memory file MAP_SHARED the way
 * QEMU maps guest RAM, reads some pages and writes others (new data, zeros, the same bytes
 * again, data where there were zeros); touch_pages must list every page it touched, and
 * vmsnap_mem_diff_pages of that list over the parent must store exactly the blocks whose
 * content changed and read back as the file does.
 * A process that maps none or only part of the file is refused (-ENOENT): the caller then
 * diffs the whole file by content. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmsnap/mem.h>

#include "sandbox/touched.h"
#include "testlib.h"

#define BS     4096u
#define BLOCKS 64u
#define SIZE   ((size_t)BLOCKS * BS)

struct fixture {
        char *root, *memp, *parent;
        uint8_t *mem; /* what the memory file holds when the parent was made */
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        f->root = test_mkdtemp("touched");
        f->memp = test_path(f->root, "memory");
        f->parent = test_path(f->root, "parent");
        f->mem = calloc(1, SIZE);
        uint64_t seed = 42;
        for (unsigned b = 0; b < BLOCKS; b += 2) /* odd blocks stay zero */
                test_fill_random(&seed, f->mem + (size_t)b * BS, BS);
        test_write_file(f->memp, f->mem, SIZE);
        mkdir(f->parent, 0700);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_opts o = {0};
        assert_int_equal(vmsnap_mem_process(f->memp, f->parent, &o, NULL, &d), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        test_rmtree(f->root);
        free(f->root), free(f->memp), free(f->parent), free(f->mem), free(f);
        return 0;
}

/* The child's accesses go through the mapping byte by byte: ASan would take the fresh
 * mapping for heap it freed earlier at the same address (its shadow is not reset by mmap). */
__attribute__((no_sanitize("address"))) static void access_pages(volatile uint8_t *m, bool all)
{
        uint8_t sink = m[1 * BS] ^ m[2 * BS + 7] ^ m[40 * BS];
        (void)sink;
        if (!all)
                return;
        for (unsigned i = 0; i < BS; i++) {
                m[4 * BS + i] = 0xa5;             /* new data */
                m[6 * BS + i] = 0;                /* zeros over data */
                m[8 * BS + i] = m[8 * BS + i];    /* the same bytes again */
        }
        for (unsigned i = 100; i < 110; i++)
                m[11 * BS + i] = 0x5a;            /* data where there were zeros */
}

/* Forks; in the child maps `len` bytes of path shared and returns the mapping (*pid 0),
 * in the parent returns NULL with the child's pid. The child dies with the parent: it holds
 * pipe ends the test writes, and a failed assertion must not leave it waiting forever. */
static volatile uint8_t *fork_mapper(const char *path, size_t len, pid_t *pid)
{
        if ((*pid = fork()) != 0)
                return NULL;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
                _exit(1);
        int fd = open(path, O_RDWR);
        uint8_t *m = fd < 0 ? MAP_FAILED : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
                _exit(1);
        return m;
}

/* A child that maps `len` bytes of path shared, reads blocks 1, 2 and 40, writes new data
 * into 4, zeros into 6, block 8's own bytes again and data into 11 (was zero); then it
 * tells the parent through `ready` and waits to be killed. */
static pid_t start_child(const char *path, size_t len, int ready)
{
        pid_t pid;
        volatile uint8_t *m = fork_mapper(path, len, &pid);
        if (pid != 0)
                return pid;
        access_pages(m, len == SIZE);
        char c = 1;
        if (write(ready, &c, 1) != 1)
                _exit(1);
        for (;;)
                pause();
}

static void stop_child(pid_t pid)
{
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
}

static pid_t child_ready(const char *path, size_t len)
{
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = start_child(path, len, p[1]);
        assert_true(pid > 0);
        close(p[1]); /* a child that dies before it is ready ends the read */
        char c;
        ssize_t n = read(p[0], &c, 1);
        close(p[0]);
        if (n != 1)
                stop_child(pid);
        assert_int_equal(n, 1);
        return pid;
}

static bool listed(const uint8_t *pages, unsigned p)
{
        return pages[p / 8] & (1u << (p % 8));
}

static void changed_blocks_only(void **state)
{
        struct fixture *f = *state;
        pid_t pid = child_ready(f->memp, SIZE);
        uint8_t *pages = NULL;
        uint64_t touched = 0;
        struct vmsnap_diag d = {0};
        int r = touch_pages(pid, f->memp, &pages, &touched, &d);
        stop_child(pid);
        assert_int_equal(r, 0);
        /* read-fault-around may map more neighbours; never fewer than the 8 it used */
        assert_true(touched >= 8);
        const unsigned used[] = {1, 2, 4, 6, 8, 11, 40};
        for (size_t i = 0; i < sizeof(used) / sizeof(used[0]); i++)
                assert_true(listed(pages, used[i]));

        /* the diff of those pages over the parent stores the 3 changed blocks only */
        char *next = test_path(f->root, "next");
        mkdir(next, 0700);
        struct vmsnap_mem_opts o = {.defer_sync = true};
        struct vmsnap_mem_result res;
        assert_int_equal(vmsnap_mem_diff_pages(f->memp, pages, next, f->parent, &o, &res, &d), 0);
        assert_int_equal(res.data_blocks, 2); /* 4 (new data), 11 (data over zeros) */
        assert_int_equal(res.zero_blocks, 1); /* 6 (zeros over data) */
        assert_int_equal(res.bytes_scanned, touched * BS);
        char *back = test_path(f->root, "back");
        assert_int_equal(vmsnap_mem_materialize(next, back, NULL, &d), 0);
        size_t n1, n2;
        uint8_t *want = test_read_file(f->memp, &n1), *got = test_read_file(back, &n2);
        assert_int_equal(n1, SIZE);
        assert_int_equal(n2, SIZE);
        assert_memory_equal(want, got, SIZE);
        assert_memory_not_equal(want + 4 * BS, f->mem + 4 * BS, BS); /* the child's writes */
        free(want), free(got), free(back), free(next), free(pages);
}

/* The list is trusted: a page left out keeps the parent's block even if it changed (the
 * caller vouches for it); every page listed gives the same snapshot as a content diff. */
static void lists_are_trusted(void **state)
{
        struct fixture *f = *state;
        uint8_t *now = malloc(SIZE);
        memcpy(now, f->mem, SIZE);
        memset(now + 3 * BS, 0x11, BS);
        memset(now + 5 * BS, 0x22, BS);
        test_write_file(f->memp, now, SIZE);
        uint8_t pages[BLOCKS / 8] = {0};
        pages[0] = 1u << 3; /* block 5 left out */
        struct vmsnap_diag d = {0};
        char *next = test_path(f->root, "next"), *back = test_path(f->root, "back");
        mkdir(next, 0700);
        struct vmsnap_mem_result res;
        assert_int_equal(vmsnap_mem_diff_pages(f->memp, pages, next, f->parent, NULL, &res, &d), 0);
        assert_int_equal(res.data_blocks, 1);
        assert_int_equal(vmsnap_mem_materialize(next, back, NULL, &d), 0);
        size_t n;
        uint8_t *got = test_read_file(back, &n);
        assert_memory_equal(got + 3 * BS, now + 3 * BS, BS);
        assert_memory_equal(got + 5 * BS, f->mem + 5 * BS, BS);
        free(got);
        test_rmtree(next), unlink(back);
        mkdir(next, 0700);
        memset(pages, 0xff, sizeof(pages));
        assert_int_equal(vmsnap_mem_diff_pages(f->memp, pages, next, f->parent, NULL, &res, &d), 0);
        assert_int_equal(res.data_blocks, 2);
        assert_int_equal(vmsnap_mem_materialize(next, back, NULL, &d), 0);
        got = test_read_file(back, &n);
        assert_memory_equal(got, now, SIZE);
        assert_int_equal(vmsnap_mem_diff_pages(f->memp, NULL, next, f->parent, NULL, &res, &d),
                         -EINVAL);
        free(got), free(now), free(next), free(back);
}

static void refuses_a_process_without_the_file(void **state)
{
        struct fixture *f = *state;
        uint8_t *pages = NULL;
        uint64_t touched;
        struct vmsnap_diag d = {0};
        assert_int_equal(touch_pages(getpid(), f->memp, &pages, &touched, &d), -ENOENT);
        assert_null(pages);

        pid_t pid = child_ready(f->memp, SIZE / 2); /* maps only half: cannot tell the rest */
        int r = touch_pages(pid, f->memp, &pages, &touched, &d);
        stop_child(pid);
        assert_int_equal(r, -ENOENT);
        assert_null(pages);
        assert_non_null(strstr(d.msg, "only part"));
}

/* True when /proc/swaps lists a swap device (more than its header line). */
static bool swap_on(void)
{
        FILE *sw = fopen("/proc/swaps", "re");
        char line[512];
        int lines = 0;
        while (sw && fgets(line, sizeof(line), sw))
                lines++;
        if (sw)
                fclose(sw);
        return lines > 1;
}

/* A memory file on tmpfs (as under the default --mem-root) may take the shortcut when the
 * host has no swap and no shmem huge pages. */
static void mark_allows_tmpfs(void **state)
{
        (void)state;
        char path[] = "/dev/shm/vmsnap-touched-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        struct touch_mark m;
        touch_mark_take(path, &m);
        FILE *thp = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
        char buf[256] = "";
        if (thp && !fgets(buf, sizeof(buf), thp))
                buf[0] = '\0';
        if (thp)
                fclose(thp);
        struct statfs fs;
        bool tmpfs = statfs(path, &fs) == 0 && fs.f_type == TMPFS_MAGIC;
        unlink(path);
        bool swap = swap_on();
        if (tmpfs && !swap && (strstr(buf, "[never]") || strstr(buf, "[deny]")))
                assert_true(m.valid);
}

static void mark_follows_the_host(void **state)
{
        struct fixture *f = *state;
        struct touch_mark m;
        touch_mark_take(f->memp, &m);
        bool swap = swap_on();
        if (swap) /* a host with swap never takes the shortcut */
                assert_false(m.valid);
        struct statfs fs;
        assert_int_equal(statfs(f->memp, &fs), 0);
        if (fs.f_type != TMPFS_MAGIC) /* a disk file system reclaims written-back pages */
                assert_false(m.valid);
        assert_int_equal(touch_mark_holds(&m), m.valid);
        m.swap_outs++; /* as if a page was swapped out since */
        assert_false(touch_mark_holds(&m));
}

/* ---- a base copied while the VM runs (touch_pageout) ---- */

/* Writes 0x40 + page index into the first byte of a page (no ASan: see access_pages). */
__attribute__((no_sanitize("address"))) static void poke(volatile uint8_t *m, unsigned page)
{
        m[(size_t)page * BS] = (uint8_t)(0x40 + page);
}

/* A child that maps path shared, writes every page, says so, then for each byte it reads
 * from `cmd` writes that page and acknowledges on `ack`. */
static pid_t start_writer(const char *path, int cmd, int ack)
{
        pid_t pid;
        volatile uint8_t *m = fork_mapper(path, SIZE, &pid);
        if (pid != 0)
                return pid;
        for (unsigned p = 0; p < BLOCKS; p++)
                poke(m, p);
        uint8_t c = 0xff;
        if (write(ack, &c, 1) != 1)
                _exit(1);
        while (read(cmd, &c, 1) == 1) {
                poke(m, c);
                m[(size_t)c * BS + 1] = 0x77; /* and a second byte: the page's content moves */
                if (write(ack, &c, 1) != 1)
                        _exit(1);
        }
        _exit(0);
}

struct writer {
        pid_t pid;
        int cmd, ack;
};

static void writer_do(struct writer *w, uint8_t page)
{
        uint8_t c;
        assert_int_equal(write(w->cmd, &page, 1), 1);
        assert_int_equal(read(w->ack, &c, 1), 1);
        assert_int_equal(c, page);
}

/* The order a pause base is built in (docs/sandbox.md "The first pause after a boot"):
 * PAGEOUT of the VMM's mapping, then a copy of the file while it keeps writing. A page
 * written after the PAGEOUT (before the copy read it, or after) is in the page table at the
 * pause, so the diff over the base stores it; a page written only before is in the base.
 * The diff of the listed pages over the base must read back exactly as the file does. */
static void pageout_base_misses_no_write(void **state)
{
        (void)state;
        if (swap_on()) {
                print_message("skipped: swap is on (MADV_PAGEOUT would swap shmem out)\n");
                return;
        }
        /* The writer and this process on one CPU: the PAGEOUT drains the calling CPU's LRU
         * batch, so the writer's fresh pages are on the LRU and can lose their entries. */
        cpu_set_t one, all;
        assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu() < 0 ? 0 : sched_getcpu(), &one);
        assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
        char *root = test_mkdtemp("touched-base");
        char memp[] = "/dev/shm/vmsnap-touched-base-XXXXXX";
        int fd = mkstemp(memp);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, SIZE), 0);
        close(fd);
        int cmd[2], ack[2];
        assert_int_equal(pipe(cmd), 0);
        assert_int_equal(pipe(ack), 0);
        struct writer w = {.pid = start_writer(memp, cmd[0], ack[1]), .cmd = cmd[1], .ack = ack[0]};
        assert_true(w.pid > 0);
        close(cmd[0]), close(ack[1]);
        uint8_t c;
        assert_int_equal(read(w.ack, &c, 1), 1); /* every page written: all present */

        struct vmsnap_diag d = {0};
        assert_int_equal(touch_pageout(w.pid, memp, &d), 0);
        uint8_t *pages = NULL;
        uint64_t touched = 0;
        assert_int_equal(touch_pages(w.pid, memp, &pages, &touched, &d), 0);
        /* tmpfs without swap: pages kept, entries dropped. Not every one: a page still in a
         * CPU's LRU batch cannot be isolated and keeps its entry (seen under load); it is
         * listed at the pause, which costs a write and misses nothing. */
        print_message("# %" PRIu64 " of %u pages kept their entries after PAGEOUT\n", touched,
                      BLOCKS);
        assert_true(touched < BLOCKS / 4);
        free(pages);

        writer_do(&w, 3); /* after the PAGEOUT, before the copy */
        char *base = test_path(root, "base"), *next = test_path(root, "next");
        mkdir(base, 0700);
        assert_int_equal(vmsnap_mem_process(memp, base, &(struct vmsnap_mem_opts){0}, NULL, &d), 0);
        writer_do(&w, 7);  /* after the copy */
        writer_do(&w, 60);

        assert_int_equal(touch_pages(w.pid, memp, &pages, &touched, &d), 0);
        stop_child(w.pid);
        close(w.cmd), close(w.ack);
        assert_true(listed(pages, 3) && listed(pages, 7) && listed(pages, 60));
        assert_true(touched < BLOCKS / 2); /* only what it wrote since (and fault-around) */
        mkdir(next, 0700);
        struct vmsnap_mem_result res;
        assert_int_equal(vmsnap_mem_diff_pages(memp, pages, next, base, NULL, &res, &d), 0);
        assert_true(res.data_blocks >= 2); /* 7 and 60 at least: 3 may be in the base */
        char *back = test_path(root, "back");
        assert_int_equal(vmsnap_mem_materialize(next, back, NULL, &d), 0);
        size_t n1, n2;
        uint8_t *want = test_read_file(memp, &n1), *got = test_read_file(back, &n2);
        assert_int_equal(n1, SIZE);
        assert_int_equal(n2, SIZE);
        assert_memory_equal(want, got, SIZE);
        assert_int_equal(want[60 * BS + 1], 0x77);
        unlink(memp);
        test_rmtree(root);
        free(want), free(got), free(back), free(next), free(base), free(pages), free(root);
        assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(changed_blocks_only, setup, teardown),
                cmocka_unit_test_setup_teardown(refuses_a_process_without_the_file, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(lists_are_trusted, setup, teardown),
                cmocka_unit_test_setup_teardown(mark_follows_the_host, setup, teardown),
                cmocka_unit_test(mark_allows_tmpfs),
                cmocka_unit_test(pageout_base_misses_no_write),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
