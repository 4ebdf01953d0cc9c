/* Periodic work: the crash watcher (a VMM that died puts its sandbox in `error`) and the
 * idle auto-pause. */
#include "sandbox/internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

/* True while the VMM process exists (reaping it when it is our exited child). */
static bool vmm_alive(pid_t pid)
{
        int status;
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
                return false;
        if (w < 0 && errno == ECHILD) /* not our child (re-attached after a restart) */
                return kill(pid, 0) == 0 || errno != ESRCH;
        return true;
}

/* Checks one running sandbox; returns 1 when it changed it, 0 otherwise, or 2 when it is
 * idle and should be paused. */
static int check_one(struct vmsnap_host *h, struct vmsnap_sandbox *sb)
{
        struct live *l = live_get(h, sb->id);
        if (!l || pthread_mutex_trylock(&l->op_lock) != 0)
                return 0; /* an operation is running on it: it knows best */
        int changed = 0;
        if (l->vm && !vmm_alive(l->driver->pid(l->vm))) {
                vm_kill(l);
                sb->state = VMSNAP_SANDBOX_ERROR;
                sb->pid = 0;
                snprintf(sb->error, sizeof(sb->error), "the VMM process exited unexpectedly; "
                         "its log is in %.300s/sandboxes/%s", h->root, sb->id);
                db_put(h, sb, NULL);
                changed = 1;
        } else if (sb->idle_timeout && time(NULL) - sb->last_active >= sb->idle_timeout) {
                changed = 2;
        }
        pthread_mutex_unlock(&l->op_lock);
        return changed;
}

int vmsnap_host_tick(struct vmsnap_host *h)
{
        struct vmsnap_sandbox *v = NULL;
        size_t n = 0;
        int changed = 0;
        if (vmsnap_sandbox_list(h, false, &v, &n, NULL) < 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                if (v[i].state != VMSNAP_SANDBOX_RUNNING)
                        continue;
                int c = check_one(h, &v[i]);
                if (c == 2 && vmsnap_sandbox_pause(h, v[i].id, NULL, NULL) == 0)
                        changed++;
                else if (c == 1)
                        changed++;
        }
        free(v);
        return changed;
}
