/* Helpers shared by the store tests (test-store*.c): scratch stores, small real memory
 * snapshots, file comparison, and the consistency check every crash test ends with. */
#ifndef VMSNAP_TEST_STORE_LIB_H
#define VMSNAP_TEST_STORE_LIB_H

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmsnap/store.h>

#include "store/internal.h"
#include "testlib.h"
#include "util/ids.h"

#define MEM_SIZE (1u << 20) /* 1 MiB guests: fast, still many blocks and extents */

/* Aborts the test binary with a message; cmocka's asserts are used where a test runs. */
static inline void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static inline void die(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        abort();
}

static inline struct vmsnap_store *store_open_or_die(const char *root)
{
        struct vmsnap_store *s;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_open(root, &s, &d) < 0)
                die("open %s: %s", root, d.msg);
        return s;
}

/* A guest memory image of MEM_SIZE bytes: every `stride`-th 4 KiB block random (seeded). */
static inline void make_memfile(const char *path, uint64_t seed, unsigned stride)
{
        uint8_t *buf = calloc(1, MEM_SIZE);
        uint64_t st = seed;
        for (size_t off = 0; off < MEM_SIZE; off += 4096u * stride)
                test_fill_random(&st, buf + off, 4096);
        test_write_file(path, buf, MEM_SIZE);
        free(buf);
}

/* Changes a few blocks of an existing memory image (a next generation of the guest). */
static inline void mutate_memfile(const char *path, uint64_t seed)
{
        size_t len;
        uint8_t *buf = test_read_file(path, &len);
        uint64_t st = seed;
        for (int i = 0; i < 24; i++) {
                size_t blk = (size_t)(test_rand(&st) % (len / 4096));
                test_fill_random(&st, buf + blk * 4096, 4096);
        }
        memset(buf + 4096 * 3, 0, 4096); /* a block written to zeros */
        test_write_file(path, buf, len);
        free(buf);
}

static inline int add_snapshot(struct vmsnap_store *s, const char *memfile, const char *name,
                               enum vmsnap_snapshot_kind kind, const char *parent_id,
                               struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        struct vmsnap_snapshot_spec spec = {.name = name,
                                            .kind = kind,
                                            .parent_id = parent_id,
                                            .vmm = "qemu",
                                            .vmm_version = "7.2.0",
                                            .vcpus = 2};
        return vmsnap_store_add(s, &spec, memfile, NULL, NULL, ret, d);
}

/* Creates a snapshot holding plain files (no memory snapshot) through the txn API. */
static inline int add_plain(struct vmsnap_store *s, const char *name,
                            enum vmsnap_snapshot_kind kind, const char *parent_id,
                            struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        struct vmsnap_snapshot_spec spec = {.name = name, .kind = kind, .parent_id = parent_id};
        struct vmsnap_store_txn *t;
        int r = vmsnap_store_create_begin(s, &spec, &t, d);
        if (r < 0)
                return r;
        char *p = test_path(vmsnap_store_txn_dir(t), "snapfile");
        char text[128];
        int n = snprintf(text, sizeof(text), "state of %s", name ? name : "unnamed");
        test_write_file(p, text, (size_t)n);
        free(p);
        r = vmsnap_store_txn_commit(t, ret, d);
        vmsnap_store_txn_free(t);
        return r;
}

static inline bool files_equal(const char *a, const char *b)
{
        size_t la, lb;
        uint8_t *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
        bool eq = x && y && la == lb && memcmp(x, y, la) == 0;
        free(x);
        free(y);
        return eq;
}

/* Counts the entries of a directory (not . and ..). */
static inline int count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        if (!d)
                return -1;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static inline size_t count_rows(struct vmsnap_store *s, unsigned flags)
{
        struct vmsnap_snapshot *v;
        size_t n;
        if (vmsnap_store_list(s, flags, &v, &n, NULL) < 0)
                die("list failed");
        free(v);
        return n;
}

/* The invariant after any crash and reopen: every ready row verifies completely (nothing
 * needed lost), and every directory under snapshots/ either has a row or no envelope, so
 * reindex could never resurrect half a snapshot (nothing half-visible). Returns the number
 * of ready rows. */
static inline size_t check_consistent(struct vmsnap_store *s)
{
        struct vmsnap_snapshot *v;
        size_t n;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_list(s, 0, &v, &n, &d) < 0)
                die("list: %s", d.msg);
        for (size_t i = 0; i < n; i++)
                if (vmsnap_store_verify(s, v[i].id, NULL, NULL, &d) < 0)
                        die("ready snapshot %s does not verify: %s", v[i].id, d.msg);
        free(v);
        char *snaps = test_path(vmsnap_store_root(s), "snapshots");
        DIR *dir = opendir(snaps);
        struct dirent *e;
        while (dir && (e = readdir(dir))) {
                if (e->d_name[0] == '.')
                        continue;
                struct vmsnap_snapshot r;
                if (vmsnap_store_get(s, e->d_name, &r, NULL) == 0)
                        continue;
                char *sub = test_path(snaps, e->d_name);
                int fd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                struct store_envelope env;
                if (fd >= 0 && store_envelope_load(fd, &env, NULL) == 0) {
                        bool whole = store_envelope_check(fd, &env, false, NULL, NULL, NULL) == 0;
                        store_envelope_clear(&env);
                        if (whole)
                                die("directory %s is a whole snapshot but has no row", e->d_name);
                }
                if (fd >= 0)
                        close(fd);
                free(sub);
        }
        if (dir)
                closedir(dir);
        free(snaps);
        return n;
}

#endif
