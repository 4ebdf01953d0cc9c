/* Reading sandboxes: get by ref, list. */
#include "sandbox/internal.h"

#include <errno.h>

int vmsnap_sandbox_get(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                       struct vmsnap_diag *d)
{
        if (!h || !ret)
                return vmsnap_diag(d, -EINVAL, "sandbox get: missing argument");
        pthread_mutex_lock(&h->db_lock);
        int r = row_resolve(h, ref, ret, d);
        pthread_mutex_unlock(&h->db_lock);
        if (r == 0)
                live_accel_fill(h, ret);
        return r;
}

int vmsnap_sandbox_list(struct vmsnap_host *h, bool all, struct vmsnap_sandbox **ret,
                        size_t *ret_n, struct vmsnap_diag *d)
{
        if (!h || !ret || !ret_n)
                return vmsnap_diag(d, -EINVAL, "sandbox list: missing argument");
        pthread_mutex_lock(&h->db_lock);
        int r = row_list(h, all, ret, ret_n, d);
        pthread_mutex_unlock(&h->db_lock);
        for (size_t i = 0; r == 0 && i < *ret_n; i++)
                live_accel_fill(h, &(*ret)[i]);
        return r;
}
