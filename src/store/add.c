/* add: a whole snapshot from a memory file (and an optional VMM state file) through the
 * two-phase create, the way the sandbox layer will make its own: begin, mem process (or mem
 * diff over the parent's directory), copy the snapfile, commit. Crash points
 * store.add.mem and store.add.snapfile between the steps. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#define SNAPFILE_NAME "snapfile"

/* Copies path into the pending directory as `snapfile`, holes kept, via a staged file. */
static int copy_snapfile(struct vmsnap_store_txn *t, const char *path, struct vmsnap_diag *d)
{
        struct stat st;
        _cleanup_close_ int in = vmsnap_fs_open_input(path, &st);
        if (in < 0)
                return vmsnap_diag(d, in, "%s: cannot open: %s", path, vmsnap_fs_open_error(in));
        struct vmsnap_staged sf;
        int r = vmsnap_staged_open(&sf, vmsnap_store_txn_dirfd(t), SNAPFILE_NAME, d);
        if (r < 0)
                return r;
        struct vmsnap_hash h;
        r = store_copy_sparse(in, sf.fd, (uint64_t)st.st_size, &h, NULL, NULL, NULL);
        if (r < 0) {
                vmsnap_staged_abort(&sf);
                return vmsnap_diag(d, r, "%s: copy failed: %s", path, strerror(-r));
        }
        if ((r = vmsnap_staged_commit(&sf, d)) < 0) {
                vmsnap_staged_abort(&sf);
                return r;
        }
        return store_txn_known(t, SNAPFILE_NAME, (uint64_t)st.st_size, &h, d);
}

/* Fills what the caller left unset from the parent row. */
static void inherit(struct vmsnap_snapshot_spec *spec, const struct vmsnap_snapshot *p)
{
        if (!spec->vmm || !spec->vmm[0])
                spec->vmm = p->vmm;
        if (!spec->vmm_version || !spec->vmm_version[0])
                spec->vmm_version = p->vmm_version;
        if (!spec->vcpus)
                spec->vcpus = p->vcpus;
        if ((!spec->template_id || !spec->template_id[0]) && p->template_id[0])
                spec->template_id = p->template_id;
}

int vmsnap_store_add(struct vmsnap_store *s, const struct vmsnap_snapshot_spec *spec_in,
                     const char *memfile, const char *snapfile, const struct vmsnap_mem_opts *mopts,
                     struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        if (!s || !spec_in || !memfile)
                return vmsnap_diag(d, -EINVAL, "add: missing argument");
        struct vmsnap_snapshot_spec spec = *spec_in;
        struct vmsnap_snapshot parent;
        char parentdir[PATH_MAX] = "";
        if (spec.parent_id && spec.parent_id[0]) {
                int r = store_row_get(s, spec.parent_id, &parent, d);
                if (r < 0)
                        return r;
                inherit(&spec, &parent);
                vmsnap_store_snapshot_dir(s, parent.id, parentdir, sizeof(parentdir));
        }
        struct vmsnap_store_txn *t;
        int r = vmsnap_store_create_begin(s, &spec, &t, d);
        if (r < 0)
                return r;
        struct vmsnap_mem_opts none = {0};
        struct vmsnap_mem_result res;
        /* The txn holds LOCK_SH on the parent: its files cannot go while mem diff reads them
         * (and links them into our directory). */
        if (parentdir[0])
                r = vmsnap_mem_diff(memfile, vmsnap_store_txn_dir(t), parentdir,
                                    mopts ? mopts : &none, &res, d);
        else
                r = vmsnap_mem_process(memfile, vmsnap_store_txn_dir(t), mopts ? mopts : &none,
                                       &res, d);
        if (r == 0)
                vmsnap_crashpoint("store.add.mem");
        if (r == 0 && snapfile) {
                r = copy_snapfile(t, snapfile, d);
                if (r == 0)
                        vmsnap_crashpoint("store.add.snapfile");
        }
        if (r == 0)
                r = vmsnap_store_txn_commit(t, ret, d);
        vmsnap_store_txn_free(t); /* aborts when not committed */
        return r;
}
