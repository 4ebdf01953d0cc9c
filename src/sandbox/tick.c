/* Periodic work: the crash watcher (a VMM that died puts its sandbox in `error`) and the
 * idle auto-pause. */
#include "sandbox/internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* True while the VMM process runs. It is never reaped here: the driver's destroy reaps it,
 * and a pid (or process group) reaped behind its back could be reused by another process
 * by the time the driver kills it. An exited child is a zombie until then. */
static bool vmm_alive(pid_t pid)
{
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *end = strrchr(buf, ')'); /* the name may contain spaces and parens */
        return end && end[1] == ' ' && end[2] != 'Z' && end[2] != 'X';
}

/* Checks one running sandbox; returns 1 when it changed it, 0 otherwise, or 2 when its idle
 * timeout has run out (pause_if_idle decides, under the sandbox's lock). */
static int check_one(struct vmsnap_host *h, struct vmsnap_sandbox *sb)
{
        struct live *l = live_get(h, sb->id);
        if (!l || pthread_mutex_trylock(&l->op_lock) != 0)
                return 0; /* an operation is running on it: it knows best */
        int changed = 0;
        struct vmsnap_sandbox fresh; /* the list may be old by now: decide on the row as is */
        pthread_mutex_lock(&h->db_lock);
        int r = row_get(h, sb->id, &fresh, NULL);
        pthread_mutex_unlock(&h->db_lock);
        if (r < 0 || fresh.state != VMSNAP_SANDBOX_RUNNING) {
                pthread_mutex_unlock(&l->op_lock);
                return 0;
        }
        *sb = fresh;
        if (l->vm && !vmm_alive(l->driver->pid(l->vm))) {
                vm_kill(l);
                jail_release(h, sb->id); /* the run dir stays: it holds the VMM's log */
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
                if (c == 2 && pause_if_idle(h, v[i].id) == 0)
                        changed++;
                else if (c == 1)
                        changed++;
        }
        free(v);
        template_memory_sweep(h);
        return changed;
}
