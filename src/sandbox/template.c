/* snapshot: a named template from a running sandbox (paused for the save, then resumed) or a
 * paused one (its newest snapshot's files, by hard link). */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int template_of_running(struct vmsnap_host *h, struct live *l,
                               struct vmsnap_sandbox *sb, const char *name,
                               struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        struct journal j;
        int r = db_journal_begin(h, &j, sb->id, "snapshot", NULL, NULL, false, d);
        if (r < 0)
                return r;
        struct vmsnap_diag ignore = {0};
        agent_sync(l, &ignore);
        r = l->driver->pause(l->vm, d);
        if (r == 0)
                r = capture(h, l, sb, VMSNAP_SNAPSHOT_TEMPLATE, name, &j, NULL, ret, d);
        if (r == 0)
                db_journal_step(h, &j, "committed", NULL, NULL, NULL);
        /* Running again either way: the template is a copy, the sandbox carries on. */
        int rr = l->vm ? l->driver->resume(l->vm, r < 0 ? &ignore : d) : -ENOTCONN;
        if (rr < 0) {
                vm_kill(l);
                sb->state = VMSNAP_SANDBOX_ERROR;
                snprintf(sb->error, sizeof(sb->error), "could not resume after snapshot");
        }
        db_journal_done(h, &j, sb, NULL);
        return r < 0 ? r : rr;
}

/* Links every file of the paused sandbox's snapshot into the template's directory. */
static int link_snapshot_files(const char *from, int to_fd, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = vmsnap_fs_open_dir(from);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: cannot open: %s", from, strerror(-fd));
        DIR *dh = vmsnap_fs_list_dir(fd);
        if (!dh)
                return vmsnap_diag(d, -errno, "%s: cannot list: %s", from, strerror(errno));
        struct dirent *e;
        int r = 0;
        while (r == 0 && (e = readdir(dh)))
                if (e->d_name[0] != '.' && strcmp(e->d_name, VMSNAP_ENVELOPE_NAME) != 0)
                        r = vmsnap_fs_link_or_copy(fd, e->d_name, to_fd, e->d_name, d);
        closedir(dh);
        return r;
}

static int template_of_paused(struct vmsnap_host *h, struct vmsnap_sandbox *sb,
                              const char *name, struct vmsnap_snapshot *ret,
                              struct vmsnap_diag *d)
{
        struct vmsnap_snapshot snap;
        char dir[PATH_LEN];
        int r = snapshot_lookup(h, sb->snapshot_id, &snap, dir, d);
        if (r < 0)
                return r;
        struct vmsnap_snapshot_spec spec = {.name = name, .kind = VMSNAP_SNAPSHOT_TEMPLATE,
                                            .vmm = snap.vmm, .vmm_version = snap.vmm_version,
                                            .vcpus = snap.vcpus, .memory = snap.memory};
        struct vmsnap_store_txn *t = NULL;
        pthread_mutex_lock(&h->db_lock);
        r = vmsnap_store_create_begin(h->store, &spec, &t, d);
        pthread_mutex_unlock(&h->db_lock);
        if (r < 0)
                return r;
        r = link_snapshot_files(dir, vmsnap_store_txn_dirfd(t), d);
        pthread_mutex_lock(&h->db_lock);
        if (r == 0) /* before the template exists */
                r = net_template_record(h, sb->id, vmsnap_store_txn_id(t), d);
        if (r == 0)
                r = vmsnap_store_txn_commit(t, ret, d);
        vmsnap_store_txn_free(t); /* aborts when not committed */
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int vmsnap_sandbox_snapshot(struct vmsnap_host *h, const char *ref, const char *name,
                            struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        if (!name || !vmsnap_store_name_valid(name))
                return vmsnap_diag(d, -EINVAL, "a template needs a valid name (letters, digits, "
                                   ". _ -; up to 64; not a UUID), not '%s'", name ? name : "");
        struct live *l;
        struct vmsnap_sandbox sb;
        int r = op_begin(h, ref, &l, &sb, d);
        if (r < 0)
                return r;
        struct vmsnap_snapshot snap;
        if (sb.state == VMSNAP_SANDBOX_RUNNING && l->vm)
                r = template_of_running(h, l, &sb, name, &snap, d);
        else if (sb.state == VMSNAP_SANDBOX_PAUSED)
                r = template_of_paused(h, &sb, name, &snap, d);
        else
                r = vmsnap_diag(d, -EBUSY, "sandbox %s is %s: a template needs a running or "
                                "paused sandbox", sb.id, vmsnap_sandbox_state_name(sb.state));
        op_end(l);
        if (r == 0 && ret)
                *ret = snap;
        return r;
}
