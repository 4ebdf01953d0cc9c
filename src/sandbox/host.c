/* The host: configuration, the store, live VM handles and per-sandbox locks. */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/disk.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void set_path(char out[PATH_LEN], const char *value, const char *fallback)
{
        snprintf(out, PATH_LEN, "%s", value && *value ? value : fallback);
}

/* Removes the memory directories released but not yet removed when the daemon stopped. */
static void sweep_released(struct vmsnap_host *h)
{
        _cleanup_close_ int fd = vmsnap_fs_open_dir(h->mem_root);
        DIR *dh = vmsnap_fs_list_dir(fd);
        if (!dh)
                return;
        struct dirent *e;
        while ((e = readdir(dh))) {
                if (strncmp(e->d_name, RELEASED_PREFIX, strlen(RELEASED_PREFIX)) != 0)
                        continue;
                char p[PATH_LEN];
                snprintf(p, PATH_LEN, "%.3000s/%.200s", h->mem_root, e->d_name);
                remove_private_dir(p);
        }
        closedir(dh);
}

/* <root>/sandboxes (made 0700) and the memory root (an existing one must already be). */
static int make_dirs(struct vmsnap_host *h, struct vmsnap_diag *d)
{
        char p[PATH_LEN + 16];
        snprintf(p, sizeof(p), "%s/sandboxes", h->root);
        int r = private_dir(p, false, d);
        return r < 0 ? r : private_dir(h->mem_root, true, d);
}

/* Copies the jail settings (and their strings) into the host. */
static void set_jail(struct vmsnap_host *h, const struct vmsnap_jail_config *c)
{
        h->jailed = c && !c->disabled;
        if (!h->jailed)
                return;
        h->jail = *c;
        const char *src[3] = {c->cgroup_root, c->cgroup_parent, c->jailer};
        const char **dst[3] = {&h->jail.cgroup_root, &h->jail.cgroup_parent, &h->jail.jailer};
        for (int i = 0; i < 3; i++) {
                *dst[i] = NULL;
                if (src[i]) {
                        snprintf(h->jail_strings[i], PATH_LEN, "%s", src[i]);
                        *dst[i] = h->jail_strings[i];
                }
        }
        if (!h->jail.uid_first || !h->jail.uid_count) { /* the defaults of docs/jail.md */
                h->jail.uid_first = VMSNAP_JAIL_DEFAULT_UID_FIRST;
                h->jail.uid_count = VMSNAP_JAIL_DEFAULT_UID_COUNT;
        }
        if (!h->jail.shared_gid)
                h->jail.shared_gid = VMSNAP_JAIL_DEFAULT_SHARED_GID;
}

int vmsnap_host_open(const struct vmsnap_host_config *cfg, struct vmsnap_host **ret,
                     struct vmsnap_diag *d)
{
        struct vmsnap_host *h = calloc(1, sizeof(*h));
        if (!h)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        set_path(h->root, cfg ? cfg->root : NULL, vmsnap_store_default_root());
        snprintf(h->vmm, sizeof(h->vmm), "%s", cfg && cfg->vmm ? cfg->vmm : "qemu");
        h->merge_cap = cfg && cfg->merge_cap ? cfg->merge_cap : VMSNAP_MEM_DEFAULT_CAP;
        set_jail(h, cfg ? cfg->jail : NULL);
        h->on_recovery = cfg ? cfg->on_recovery : NULL;
        h->recovery_ctx = cfg ? cfg->recovery_ctx : NULL;
        if (cfg && cfg->net) {
                h->net_on = true;
                h->net = *cfg->net;
                snprintf(h->net_dir, PATH_LEN, "%s",
                         cfg->net->netns_dir ? cfg->net->netns_dir : VMSNAP_NET_DEFAULT_DIR);
                h->net.netns_dir = h->net_dir;
        }
        pthread_mutex_init(&h->db_lock, NULL);
        pthread_mutex_init(&h->live_lock, NULL);
        pthread_mutex_init(&h->stats_lock, NULL);
        pthread_mutex_init(&h->compact_lock, NULL);
        pthread_cond_init(&h->compact_cond, NULL);
        int r = vmsnap_store_open(h->root, &h->store, d);
        if (r == 0) {
                snprintf(h->root, PATH_LEN, "%s", vmsnap_store_root(h->store));
                char guest[PATH_LEN];
                snprintf(guest, sizeof(guest), "%.4000s/guest", h->root);
                set_path(h->guest_dir, cfg ? cfg->guest_dir : NULL, guest);
                h->db = vmsnap_store_db(h->store);
                r = sandbox_schema(h, d);
        }
        if (r == 0) {
                mem_root_choose(h, cfg ? cfg->mem_root : NULL);
                r = make_dirs(h, d);
        }
        if (r == 0)
                sweep_released(h);
        if (r == 0 && h->net_on && !h->jailed)
                r = vmsnap_diag(d, -EINVAL, "sandbox networking needs jailed VMMs (each runs "
                                "in its sandbox's network namespace)");
        if (r == 0)
                r = net_schema_create(h, d);
        if (r == 0)
                r = recover(h, d);
        if (r == 0)
                r = net_recover(h, d);
        if (r == 0)
                compact_kick_if_due(h);
        if (r < 0) {
                vmsnap_host_close(h);
                return r;
        }
        *ret = h;
        return 0;
}

void vmsnap_host_close(struct vmsnap_host *h)
{
        if (!h)
                return;
        compact_stop(h); /* first: it uses the lives and the store */
        base_close(h);
        for (struct live *l = h->lives, *next; l; l = next) {
                next = l->next;
                if (l->agent_fd >= 0)
                        close(l->agent_fd);
                if (l->vm)
                        l->driver->detach(l->vm); /* guests keep running */
                pthread_mutex_destroy(&l->op_lock);
                free(l);
        }
        vmsnap_store_close(h->store);
        pthread_mutex_destroy(&h->db_lock);
        pthread_mutex_destroy(&h->live_lock);
        pthread_mutex_destroy(&h->stats_lock);
        pthread_mutex_destroy(&h->compact_lock);
        pthread_cond_destroy(&h->compact_cond);
        free(h);
}

const char *vmsnap_host_mem_root(const struct vmsnap_host *h)
{
        return h->mem_root;
}

struct vmsnap_store *vmsnap_host_store(struct vmsnap_host *h)
{
        return h->store;
}

void vmsnap_host_store_lock(struct vmsnap_host *h)
{
        pthread_mutex_lock(&h->db_lock);
}

void vmsnap_host_store_unlock(struct vmsnap_host *h)
{
        pthread_mutex_unlock(&h->db_lock);
}

struct live *live_get(struct vmsnap_host *h, const char *id)
{
        pthread_mutex_lock(&h->live_lock);
        struct live *l = h->lives;
        while (l && strcmp(l->id, id) != 0)
                l = l->next;
        if (!l && (l = calloc(1, sizeof(*l)))) {
                snprintf(l->id, sizeof(l->id), "%s", id);
                l->agent_fd = -1;
                l->host = h;
                pthread_mutex_init(&l->op_lock, NULL);
                l->next = h->lives;
                h->lives = l;
        }
        pthread_mutex_unlock(&h->live_lock);
        return l;
}

void vmsnap_host_accel(struct vmsnap_host *h, char name[8], char reason[256])
{
        const struct vmsnap_vmm_driver *drv = vmsnap_vmm_find(h->vmm);
        char parent[PATH_LEN];
        snprintf(parent, sizeof(parent), "%.3000s/sandboxes", h->root);
        snprintf(name, 8, "unknown");
        snprintf(reason, 256, "the %s driver does not say", h->vmm);
        if (drv && drv->host_accel)
                drv->host_accel(NULL, parent, name, 8, reason, 256);
}

void live_note_accel(struct vmsnap_host *h, struct live *l)
{
        char name[sizeof(l->accel)] = "", reason[sizeof(l->accel_reason)] = "";
        if (l->vm && l->driver->accel)
                l->driver->accel(l->vm, name, sizeof(name), reason, sizeof(reason));
        pthread_mutex_lock(&h->live_lock);
        memcpy(l->accel, name, sizeof(name));
        memcpy(l->accel_reason, reason, sizeof(reason));
        pthread_mutex_unlock(&h->live_lock);
}

void live_accel_fill(struct vmsnap_host *h, struct vmsnap_sandbox *sb)
{
        pthread_mutex_lock(&h->live_lock);
        const struct live *l = h->lives;
        while (l && strcmp(l->id, sb->id) != 0)
                l = l->next;
        snprintf(sb->accel, sizeof(sb->accel), "%s", l ? l->accel : "");
        snprintf(sb->accel_reason, sizeof(sb->accel_reason), "%s", l ? l->accel_reason : "");
        pthread_mutex_unlock(&h->live_lock);
}

void path_run_dir(const struct vmsnap_host *h, const char *id, char out[PATH_LEN])
{
        snprintf(out, PATH_LEN, "%.3000s/sandboxes/%s", h->root, id);
}

void path_memory(const struct vmsnap_host *h, const char *id, char out[PATH_LEN])
{
        snprintf(out, PATH_LEN, "%.3000s/%s/memory", h->mem_root, id);
}

void path_template_memory(const struct vmsnap_host *h, const char *snapshot_id,
                          char out[PATH_LEN])
{
        snprintf(out, PATH_LEN, "%.3000s/templates/%s/memory", h->mem_root, snapshot_id);
}

void build_spec(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                struct spec_buf *buf, struct vmsnap_vm_spec *ret)
{
        path_run_dir(h, sb->id, buf->run_dir);
        snprintf(buf->kernel, PATH_LEN, "%.3000s/vmlinuz", h->guest_dir);
        snprintf(buf->initrd, PATH_LEN, "%.3000s/initramfs.cpio.gz", h->guest_dir);
        const struct vmsnap_vmm_driver *drv = vmsnap_vmm_find(sb->vmm);
        const char *format = drv && drv->disk_format ? drv->disk_format : "qcow2";
        snprintf(buf->rootfs, PATH_LEN, "%.3000s/%s", buf->run_dir, vmsnap_disk_name(format));
        path_memory(h, sb->id, buf->memory);
        *ret = (struct vmsnap_vm_spec){
                .id = sb->id,
                .run_dir = buf->run_dir,
                .kernel = buf->kernel,
                .initrd = buf->initrd,
                .rootfs = buf->rootfs,
                .rootfs_format = format,
                .vcpus = sb->vcpus,
                .memory = sb->memory,
                .memory_file = buf->memory,
        };
        jail_spec_fill(h, sb, buf, ret);
}

const struct vmsnap_vmm_driver *driver_for(const char *vmm, struct vmsnap_diag *d)
{
        const struct vmsnap_vmm_driver *drv = vmsnap_vmm_find(vmm);
        if (!drv)
                vmsnap_diag(d, -EINVAL, "unknown VMM '%s' (this build has qemu, firecracker, "
                            "cloud-hypervisor)", vmm);
        return drv;
}

/* Removes the regular files of a directory we own, then the directory. Only used on a
 * sandbox's run and memory directories: never on a snapshot. */
void remove_private_dir(const char *dir)
{
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return;
        DIR *dh = vmsnap_fs_list_dir(fd);
        struct dirent *e;
        while (dh && (e = readdir(dh)))
                if (e->d_name[0] != '.' || (e->d_name[1] && strcmp(e->d_name, "..") != 0))
                        unlinkat(fd, e->d_name, 0);
        if (dh)
                closedir(dh);
        rmdir(dir);
}

void release_files(struct vmsnap_host *h, const char *id)
{
        char p[PATH_LEN];
        path_run_dir(h, id, p);
        remove_private_dir(p);
        snprintf(p, PATH_LEN, "%.3000s/%s", h->mem_root, id);
        remove_private_dir(p);
        jail_release(h, id);
}

void release_files_later(struct vmsnap_host *h, const char *id)
{
        static atomic_uint seq;
        char p[PATH_LEN], trash[PATH_LEN];
        path_run_dir(h, id, p);
        remove_private_dir(p);
        snprintf(p, PATH_LEN, "%.3000s/%s", h->mem_root, id);
        snprintf(trash, PATH_LEN, "%.3000s/" RELEASED_PREFIX "%s.%u", h->mem_root, id,
                 atomic_fetch_add(&seq, 1));
        if (rename(p, trash) == 0)
                compact_defer_remove(h, trash);
        else if (errno != ENOENT)
                remove_private_dir(p);
        jail_release(h, id);
}


int timeout_ms_for(uint64_t memory, int base_ms)
{
        return base_ms + (int)(memory / (128ull << 20)) * 1000;
}
