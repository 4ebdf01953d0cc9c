/* Fuzz target: the tar import path (none/gzip/zstd autodetect, entry checks, sparse data,
 * checksums, the two-phase create). Each input is imported into a scratch store from a
 * memfd; whatever happens, nothing may be left behind: a refused import leaves no row, no
 * directory and no lock file, and an accepted one is deleted again. The declared-size
 * limit is small so that sparse claims stay cheap. */
#include <dirent.h>
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

static int entries(const char *sub)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/root/%s", scratch, sub);
        DIR *d = opendir(path);
        int n = 0;
        struct dirent *e;
        while (d && (e = readdir(d)))
                n += e->d_name[0] != '.';
        if (d)
                closedir(d);
        return n;
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
        struct vmsnap_import_opts o = {.max_bytes = 64u << 20};
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        int rc = vmsnap_store_import_fd(store, fd, &o, &r, &d);
        close(fd);
        if (rc == 0) {
                if (vmsnap_store_verify(store, r.id, NULL, NULL, &d) < 0 ||
                    vmsnap_store_delete(store, r.id, VMSNAP_DELETE_FORCE, &d) < 0)
                        abort();
        } else if (!d.msg[0]) {
                abort(); /* a refusal always says why */
        }
        struct vmsnap_snapshot *v;
        size_t n;
        if (vmsnap_store_list(store, VMSNAP_LIST_ALL, &v, &n, NULL) < 0)
                abort();
        free(v);
        if (n != 0 || entries("snapshots") != 0 || entries("locks") != 0)
                abort(); /* something was left behind */
        return 0;
}
