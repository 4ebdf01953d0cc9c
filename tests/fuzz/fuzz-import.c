/* Fuzz target: the tar import path (none/gzip/zstd autodetect, entry checks, sparse data,
 * checksums, disk checks, the base image entry, the two-phase create). Each input is
 * imported into a scratch store from a memfd; whatever happens, nothing may be left behind:
 * a refused import leaves no row, no directory, no lock file and nothing in images/ (not
 * even a temporary file), and an accepted one is deleted again with the base image it
 * pinned. The limits are small so that sparse claims stay cheap. Seeds include exports of a
 * snapshot with a qcow2 overlay, with and without its base image, in the legacy form, and
 * with a backing file naming /etc/shadow. */
#include <dirent.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmsnap/store.h>

#include "testlib.h"
#include "util/fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vmsnap_store *store;
static char *scratch;

static void cleanup(void)
{
        vmsnap_store_close(store);
        if (scratch)
                test_rmtree(scratch);
        free(scratch);
}

/* Entries of root/sub (dot-files too when all). */
static int entries_of(const char *sub, bool all)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/root/%s", scratch, sub);
        DIR *d = opendir(path);
        int n = 0;
        struct dirent *e;
        while (d && (e = readdir(d)))
                n += all ? strcmp(e->d_name, ".") && strcmp(e->d_name, "..") : e->d_name[0] != '.';
        if (d)
                closedir(d);
        return n;
}

static int entries(const char *sub)
{
        return entries_of(sub, false);
}

/* Removes the base images an accepted import pinned (inputs stay independent). */
static void clear_images(void)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/root/images", scratch);
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)))
                if (e->d_name[0] != '.')
                        unlinkat(dirfd(d), e->d_name, 0);
        if (d)
                closedir(d);
}

static void init(void)
{
        if (store)
                return;
        scratch = test_mkdtemp("fuzz-import");
        char root[4096];
        snprintf(root, sizeof(root), "%s/root", scratch);
        struct vmsnap_diag d = {0};
        if (vmsnap_store_open(root, &store, &d) < 0)
                abort();
        atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        init();
        int fd = memfd_create("fuzz-import", MFD_CLOEXEC);
        if (fd < 0 || vmsnap_fs_write_full(fd, data, size) < 0 || lseek(fd, 0, SEEK_SET) != 0)
                abort();
        struct vmsnap_import_opts o = {.max_bytes = 64u << 20, .max_logical = 256u << 20};
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        int rc = vmsnap_store_import_fd(store, fd, &o, &r, &d);
        close(fd);
        if (rc == 0) {
                if (vmsnap_store_verify(store, r.id, NULL, NULL, &d) < 0 ||
                    vmsnap_store_delete(store, r.id, VMSNAP_DELETE_FORCE, &d) < 0)
                        abort();
                clear_images();
        } else if (!d.msg[0]) {
                abort(); /* a refusal always says why */
        }
        if (entries_of("images", true) != 0)
                abort(); /* a refusal pinned something, or left a temporary file */
        struct vmsnap_snapshot *v;
        size_t n;
        if (vmsnap_store_list(store, VMSNAP_LIST_ALL, &v, &n, NULL) < 0)
                abort();
        free(v);
        if (n != 0 || entries("snapshots") != 0 || entries("locks") != 0)
                abort(); /* something was left behind */
        return 0;
}
