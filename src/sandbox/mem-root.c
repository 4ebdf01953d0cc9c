/* The guest memory directory of a host (docs/sandbox.md "Layout"): by default one per store
 * root, so that two daemons with different roots never share it; a directory of vmsnap's
 * own (this euid, 0700, not a symlink, not sticky) or refused. */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void mem_root_default(const char *root, char out[PATH_LEN])
{
        struct vmsnap_hash hash;
        char hex[33];
        vmsnap_hash128(root, strlen(root), &hash);
        vmsnap_hash_format(&hash, hex);
        snprintf(out, PATH_LEN, "%s-%.16s", DEFAULT_MEM_ROOT, hex);
}

/* True when the pre-1.0 shared default holds the memory of one of this root's running
 * sandboxes: a daemon upgraded under running guests keeps using it until they stop. */
static bool legacy_in_use(struct vmsnap_host *h)
{
        _cleanup_free_ struct vmsnap_sandbox *list = NULL;
        size_t n = 0;
        if (row_list(h, false, &list, &n, NULL) < 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                char p[PATH_LEN];
                snprintf(p, sizeof(p), "%s/%s/memory", DEFAULT_MEM_ROOT, list[i].id);
                if (list[i].state == VMSNAP_SANDBOX_RUNNING && access(p, F_OK) == 0)
                        return true;
        }
        return false;
}

void mem_root_choose(struct vmsnap_host *h, const char *configured)
{
        if (configured && *configured)
                snprintf(h->mem_root, PATH_LEN, "%s", configured);
        else if (legacy_in_use(h))
                snprintf(h->mem_root, PATH_LEN, "%s", DEFAULT_MEM_ROOT);
        else
                mem_root_default(h->root, h->mem_root);
}

int private_dir(const char *path, bool existing_must_be_0700, struct vmsnap_diag *d)
{
        bool made = mkdir(path, 0700) == 0;
        if (!made && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", path, strerror(errno));
        struct stat st;
        if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode) || (st.st_mode & S_ISVTX))
                return vmsnap_diag(d, -ENOTDIR,
                                   "%s: not a directory of vmsnap's own (a symlink, or a shared "
                                   "sticky directory such as /dev/shm itself): give it a "
                                   "subdirectory",
                                   path);
        if (st.st_uid != geteuid())
                return vmsnap_diag(d, -EPERM,
                                   "%s: owned by uid %u, not by this daemon's uid %u: another "
                                   "user's directory is refused (remove it, or choose another)",
                                   path, (unsigned)st.st_uid, (unsigned)geteuid());
        if (!made && existing_must_be_0700 && (st.st_mode & 07777) != 0700)
                return vmsnap_diag(d, -EPERM,
                                   "%s: mode %04o, not 0700: others could reach guest memory "
                                   "(chmod 0700 it if it is vmsnap's, or choose another)",
                                   path, (unsigned)(st.st_mode & 07777));
        if ((made || !existing_must_be_0700) && chmod(path, 0700) < 0) /* whatever the umask */
                return vmsnap_diag(d, -errno, "%s: cannot make it 0700: %s", path,
                                   strerror(errno));
        return 0;
}
