/* Small pieces every operation uses: the per-sandbox lock, locked DB calls, snapshot
 * lookups, VM teardown. */
#include "sandbox/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int op_begin(struct vmsnap_host *h, const char *ref, struct live **ret_l,
             struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        int r = vmsnap_sandbox_get(h, ref, sb, d);
        if (r < 0)
                return r;
        struct live *l = live_get(h, sb->id);
        if (!l)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        pthread_mutex_lock(&l->op_lock);
        pthread_mutex_lock(&h->db_lock);
        r = row_get(h, sb->id, sb, d); /* it may have changed while we waited */
        pthread_mutex_unlock(&h->db_lock);
        if (r < 0) {
                pthread_mutex_unlock(&l->op_lock);
                return r;
        }
        *ret_l = l;
        return 0;
}

void op_end(struct live *l)
{
        pthread_mutex_unlock(&l->op_lock);
}

int run_locked(struct vmsnap_host *h, const char *ref, locked_op_fn fn,
               struct vmsnap_sandbox *ret, struct vmsnap_diag *d)
{
        struct live *l = NULL;
        struct vmsnap_sandbox sb;
        int r = op_begin(h, ref, &l, &sb, d);
        if (r < 0)
                return r;
        r = fn(h, l, &sb, d);
        op_end(l);
        if (r == 0 && ret)
                *ret = sb;
        return r;
}

int transition_begin(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                     const char *op, enum vmsnap_sandbox_state state, const char *data,
                     bool relaxed, struct vmsnap_diag *d)
{
        sb->state = state;
        return db_journal_begin(h, j, sb->id, op, data, sb, relaxed, d);
}

int db_put(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        pthread_mutex_lock(&h->db_lock);
        int r = row_put(h, sb, d);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

void db_delete(struct vmsnap_host *h, const char *id)
{
        pthread_mutex_lock(&h->db_lock);
        row_delete(h, id);
        pthread_mutex_unlock(&h->db_lock);
}

void db_txn_abort(struct vmsnap_host *h, struct vmsnap_store_txn **t)
{
        pthread_mutex_lock(&h->db_lock);
        vmsnap_store_txn_abort(*t, NULL);
        vmsnap_store_txn_free(*t);
        *t = NULL;
        pthread_mutex_unlock(&h->db_lock);
}

int db_journal_begin(struct vmsnap_host *h, struct journal *j, const char *id, const char *op,
                     const char *data, struct vmsnap_sandbox *sb, bool relaxed,
                     struct vmsnap_diag *d)
{
        pthread_mutex_lock(&h->db_lock);
        int r = sb && sb->state == VMSNAP_SANDBOX_CREATING ? jail_uid_alloc(h, sb, d) : 0;
        if (r == 0)
                r = journal_begin(h, j, id, op, data, sb, relaxed, d);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int db_journal_step(struct vmsnap_host *h, struct journal *j, const char *step,
                    const char *data, struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        pthread_mutex_lock(&h->db_lock);
        int r = journal_step(h, j, step, data, sb, d);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int db_journal_done(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                    struct vmsnap_diag *d)
{
        pthread_mutex_lock(&h->db_lock);
        int r = journal_done(h, j, sb, d);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int snapshot_lookup(struct vmsnap_host *h, const char *ref, struct vmsnap_snapshot *ret,
                    char dir[PATH_LEN], struct vmsnap_diag *d)
{
        pthread_mutex_lock(&h->db_lock);
        int r = vmsnap_store_resolve(h->store, ref, ret, d);
        if (r == 0)
                r = vmsnap_store_snapshot_dir(h->store, ret->id, dir, PATH_LEN);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

void drop_snapshot(struct vmsnap_host *h, const char *id)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot s;
        pthread_mutex_lock(&h->db_lock);
        if (id[0] && vmsnap_store_get(h->store, id, &s, &d) == 0 &&
            s.kind == VMSNAP_SNAPSHOT_PAUSE)
                vmsnap_store_delete(h->store, id, 0, &d);
        pthread_mutex_unlock(&h->db_lock);
}

void vm_kill(struct live *l)
{
        pager_stop(l); /* first: it would kill the VMM itself if it lost its uffd mid-fault */
        if (l->agent_fd >= 0)
                close(l->agent_fd);
        l->agent_fd = -1;
        if (l->vm)
                l->driver->destroy(l->vm);
        l->vm = NULL;
        l->touch.valid = false;
        base_forget(l);
}
