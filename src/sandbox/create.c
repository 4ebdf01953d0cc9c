/* Creating sandboxes: boot from the guest image, spawn from a template's frozen state, or
 * adopt a pause snapshot from another host (docs/remote.md "Resume on another host"). */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

#include <vmsnap/disk.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BOOT_TIMEOUT_MS 120000 /* TCG boots take seconds; a loaded CI machine more */


static int check_spec(const struct vmsnap_sandbox_spec *spec, struct vmsnap_diag *d)
{
        if (spec && spec->name && spec->name[0] && !vmsnap_store_name_valid(spec->name))
                return vmsnap_diag(d, -EINVAL, "invalid sandbox name '%s' (letters, digits, . _ -;"
                                   " up to 64; not a UUID)", spec->name);
        if (spec && spec->vcpus > 64)
                return vmsnap_diag(d, -EINVAL, "vcpus must be 1 to 64, not %u", spec->vcpus);
        if (spec && spec->memory &&
            (spec->memory % (2u << 20) || spec->memory < (64u << 20) ||
             spec->memory > (64ull << 30)))
                return vmsnap_diag(d, -EINVAL, "memory must be a multiple of 2 MiB from 64 MiB "
                                   "to 64 GiB");
        return 0;
}

/* The new sandbox's id: spec->id when given (a UUID in its canonical lowercase form: a
 * cluster chose it), else a new UUID. */
static int sandbox_id(const struct vmsnap_sandbox_spec *spec, char out[VMSNAP_ID_LEN + 1],
                      struct vmsnap_diag *d)
{
        struct vmsnap_uuid id;
        if (!spec || !spec->id) {
                vmsnap_uuid_new(&id);
                vmsnap_uuid_format(&id, out);
                return 0;
        }
        if (vmsnap_uuid_parse(spec->id, &id) < 0)
                return vmsnap_diag(d, -EINVAL, "sandbox id '%s' is not a UUID", spec->id);
        vmsnap_uuid_format(&id, out);
        if (strcmp(out, spec->id) != 0)
                return vmsnap_diag(d, -EINVAL, "sandbox id '%s' is not a lowercase UUID", spec->id);
        return 0;
}

/* A fresh row in state `creating` and its journal entry, written in one transaction while
 * the sandbox's operation lock is already held (no one can act on the row before the create
 * is journaled). On success *ret_l is returned locked. */
static int new_sandbox(struct vmsnap_host *h, const struct vmsnap_sandbox_spec *spec,
                       const char *template_id, struct vmsnap_sandbox *sb, struct journal *j,
                       struct live **ret_l, struct vmsnap_diag *d)
{
        memset(sb, 0, sizeof(*sb));
        int r = sandbox_id(spec, sb->id, d);
        if (r < 0)
                return r;
        snprintf(sb->name, sizeof(sb->name), "%s", spec && spec->name ? spec->name : "");
        snprintf(sb->vmm, sizeof(sb->vmm), "%s", spec && spec->vmm ? spec->vmm : h->vmm);
        sb->vcpus = spec && spec->vcpus ? spec->vcpus : 1;
        sb->memory = spec && spec->memory ? spec->memory : DEFAULT_MEMORY;
        sb->idle_timeout = spec ? spec->idle_timeout : 0;
        sb->state = VMSNAP_SANDBOX_CREATING;
        sb->created = sb->last_active = (int64_t)time(NULL);
        snprintf(sb->template_id, sizeof(sb->template_id), "%s", template_id ? template_id : "");
        struct live *l = live_get(h, sb->id);
        if (!l)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        if (!(l->driver = driver_for(sb->vmm, d)))
                return -EINVAL;
        pthread_mutex_lock(&l->op_lock);
        r = db_journal_begin(h, j, sb->id, "create", NULL, sb, false, d);
        if (r < 0) {
                pthread_mutex_unlock(&l->op_lock);
                return r;
        }
        *ret_l = l;
        return 0;
}

/* Ends a create: running on success; on failure the VM is killed, files released and the row
 * says why (error state), so the user sees what happened and can remove it. */
static int finish_create(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                         struct journal *j, int r, struct vmsnap_sandbox *ret,
                         struct vmsnap_diag *d)
{
        if (r == 0) {
                sb->state = VMSNAP_SANDBOX_RUNNING;
                sb->pid = l->driver->pid(l->vm);
                r = db_journal_done(h, j, sb, d);
        }
        if (r < 0) {
                /* Nothing was made that could hold user data: the caller gets the error and
                 * no half-made sandbox is left behind. */
                vm_kill(l);
                release_files(h, sb->id);
                net_release(h, sb->id);
                sb->state = VMSNAP_SANDBOX_STOPPED;
                sb->pid = 0;
                db_journal_done(h, j, sb, NULL);
                db_delete(h, sb->id);
        }
        if (r == 0 && !sb->template_id[0]) /* booted: its first pause gets a base (base.c) */
                base_want(h, l);
        if (ret)
                *ret = *sb;
        pthread_mutex_unlock(&l->op_lock);
        return r;
}

/* The guest RAM file of a boot, empty (the driver sizes it), owned by the jail's uid. */
static int create_memory_file(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                              const char *path, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", path, strerror(errno));
        return jail_own(h, sb, path, d);
}

static int boot_fresh(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                      struct journal *j, struct vmsnap_diag *d)
{
        struct spec_buf buf;
        struct vmsnap_vm_spec spec;
        char base[PATH_LEN], memdir[PATH_LEN];
        build_spec(h, sb, &buf, &spec);
        snprintf(memdir, sizeof(memdir), "%.3000s/%s", h->mem_root, sb->id);
        if (access(spec.kernel, R_OK) < 0)
                return vmsnap_diag(d, -ENOENT, "%s: no guest kernel; build the guest image with "
                                   "guest/build.sh %s", spec.kernel, h->guest_dir);
        if (mkdir(buf.run_dir, 0700) < 0 || mkdir(memdir, 0700) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", buf.run_dir,
                                   strerror(errno));
        int r = base_image_pin(h, base, d);
        spec.rootfs_base = strcmp(spec.rootfs_format, "qcow2") == 0 ? base : NULL;
        if (r == 0)
                r = strcmp(spec.rootfs_format, "raw") == 0
                            ? vmsnap_disk_clone(base, buf.rootfs, d)
                            : vmsnap_disk_overlay_create(base, buf.rootfs, d);
        if (r == 0) /* travels with the disk into every snapshot */
                r = vmsnap_disk_write_meta(buf.run_dir, base, spec.rootfs_format, d);
        if (r == 0)
                r = jail_prepare(h, sb, &spec, d);
        if (r == 0)
                r = net_prepare(h, sb, &buf, &spec, d);
        if (r == 0)
                r = jail_own(h, sb, buf.rootfs, d);
        if (r == 0)
                r = create_memory_file(h, sb, buf.memory, d);
        if (r == 0)
                r = l->driver->boot(&spec, &l->vm, d);
        if (r == 0) { /* the pid is recorded so that recovery can find the VMM */
                live_note_accel(h, l);
                sb->pid = l->driver->pid(l->vm);
                r = db_journal_step(h, j, "booted", NULL, sb, d);
        }
        if (r == 0)
                r = agent_wait_healthy(l, BOOT_TIMEOUT_MS, d);
        return r;
}

int vmsnap_sandbox_create(struct vmsnap_host *h, const struct vmsnap_sandbox_spec *spec,
                          struct vmsnap_sandbox *ret, struct vmsnap_diag *d)
{
        if (!h)
                return vmsnap_diag(d, -EINVAL, "sandbox create: missing host");
        int r = check_spec(spec, d);
        if (r < 0)
                return r;
        struct vmsnap_sandbox sb;
        struct journal j;
        struct live *l = NULL;
        r = new_sandbox(h, spec, NULL, &sb, &j, &l, d);
        if (r < 0)
                return r; /* nothing was written */
        r = net_alloc(h, &sb, spec, d);
        if (r == 0)
                r = boot_fresh(h, l, &sb, &j, d);
        return finish_create(h, l, &sb, &j, r, ret, d);
}

/* Templates fix vcpus and memory: a request for other values is a conflict, not ignored. */
static int check_template_fit(const struct vmsnap_snapshot *t,
                              const struct vmsnap_sandbox_spec *spec, struct vmsnap_diag *d)
{
        if (t->kind != VMSNAP_SNAPSHOT_TEMPLATE)
                return vmsnap_diag(d, -EINVAL, "snapshot %s is not a template", t->id);
        if (spec && spec->vcpus && spec->vcpus != t->vcpus)
                return vmsnap_diag(d, -EMLINK, "template %s has %u vCPUs; a sandbox spawned from "
                                   "it cannot have %u", t->name[0] ? t->name : t->id, t->vcpus,
                                   spec->vcpus);
        if (spec && spec->memory && spec->memory != t->memory)
                return vmsnap_diag(d, -EMLINK, "template %s has %llu MiB of memory; a sandbox "
                                   "spawned from it cannot have %llu MiB",
                                   t->name[0] ? t->name : t->id,
                                   (unsigned long long)(t->memory >> 20),
                                   (unsigned long long)(spec->memory >> 20));
        if (spec && spec->vmm && strcmp(spec->vmm, t->vmm) != 0)
                return vmsnap_diag(d, -EMLINK, "template %s was made with %s, not %s", t->id,
                                   t->vmm, spec->vmm);
        return 0;
}

/* A template with no recorded network: *ret_none when its saved VM has no network card
 * (made on a host without --network), which a spawn must not be given either (the VMM would
 * refuse the mismatch); a VM with a card, or one the driver cannot read, gets the host's
 * default. */
static int saved_without_net(const struct vmsnap_snapshot *t, const char *tdir, bool *ret_none,
                             struct vmsnap_diag *d)
{
        const struct vmsnap_vmm_driver *drv = vmsnap_vmm_find(t->vmm);
        *ret_none = false;
        if (!drv || !drv->saved_net)
                return 0;
        int r = drv->saved_net(tdir, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "template %s", t->id);
        *ret_none = r == 0;
        return 0;
}

int vmsnap_sandbox_spawn(struct vmsnap_host *h, const char *template_ref,
                         const struct vmsnap_sandbox_spec *spec, struct vmsnap_sandbox *ret,
                         struct vmsnap_diag *d)
{
        struct vmsnap_snapshot t;
        char tdir[PATH_LEN];
        int r = check_spec(spec, d);
        if (r == 0)
                r = snapshot_lookup(h, template_ref, &t, tdir, d);
        if (r == 0)
                r = check_template_fit(&t, spec, d);
        if (r < 0)
                return r;
        /* The template's network unless the request names one (docs/network.md). */
        struct vmsnap_net_egress inherited;
        bool none = false, has = h->net_on && !(spec && (spec->no_network || spec->egress));
        if (has) {
                r = net_template_policy(h, t.id, &none, &inherited, d);
                if (r == -ENOENT) { /* made without networking here, or pulled/imported */
                        r = saved_without_net(&t, tdir, &none, d);
                        has = none;
                }
                if (r < 0)
                        return r;
        }
        struct vmsnap_sandbox_spec s = {.id = spec ? spec->id : NULL,
                                        .name = spec ? spec->name : NULL, .vmm = t.vmm,
                                        .vcpus = t.vcpus, .memory = t.memory,
                                        .idle_timeout = spec ? spec->idle_timeout : 0,
                                        .no_network = (spec && spec->no_network) || none,
                                        .egress = has && !none ? &inherited
                                                  : spec       ? spec->egress
                                                               : NULL};
        struct vmsnap_sandbox sb;
        struct journal j;
        struct live *l = NULL;
        r = new_sandbox(h, &s, t.id, &sb, &j, &l, d);
        if (r < 0)
                return r;
        sb.generation = t.generation;
        pthread_mutex_lock(&h->db_lock);
        vmsnap_store_touch(h->store, t.id, NULL);
        pthread_mutex_unlock(&h->db_lock);
        r = net_alloc(h, &sb, &s, d);
        if (r == 0)
                r = restore_into(h, l, &sb, &t, true, &j, d);
        return finish_create(h, l, &sb, &j, r, ret, d);
}

/* An adopted sandbox takes the snapshot's machine: a spec asking for another is a conflict. */
static int check_adopt_fit(const struct vmsnap_snapshot *s, const struct vmsnap_sandbox_spec *spec,
                           struct vmsnap_diag *d)
{
        if (s->kind != VMSNAP_SNAPSHOT_PAUSE)
                return vmsnap_diag(d, -EINVAL, "snapshot %s is a template, not a pause snapshot: "
                                   "spawn from it", s->id);
        if (spec && ((spec->vcpus && spec->vcpus != s->vcpus) ||
                     (spec->memory && spec->memory != s->memory) ||
                     (spec->vmm && strcmp(spec->vmm, s->vmm) != 0)))
                return vmsnap_diag(d, -EMLINK, "pause snapshot %s has %u vCPUs, %llu MiB and "
                                   "%s; its sandbox continues with exactly those", s->id,
                                   s->vcpus, (unsigned long long)(s->memory >> 20), s->vmm);
        return 0;
}

/* Under db_lock: refuses a snapshot something here holds (a sandbox paused on it, a newer
 * generation over it), then writes the paused row. One check-and-insert, so two adopts of
 * one snapshot cannot both win. */
static int adopt_row(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        _cleanup_free_ struct vmsnap_dependent *deps = NULL;
        size_t n = 0;
        pthread_mutex_lock(&h->db_lock);
        int r = vmsnap_store_dependents(h->store, sb->snapshot_id, &deps, &n, d);
        if (r == 0 && n > 0)
                r = vmsnap_diag(d, -EBUSY, "pause snapshot %s is held here (%s %s): resume "
                                "that sandbox instead", sb->snapshot_id, deps[0].kind,
                                deps[0].id);
        if (r == 0)
                r = row_put(h, sb, d);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int vmsnap_sandbox_adopt(struct vmsnap_host *h, const char *snapshot_ref,
                         const struct vmsnap_sandbox_spec *spec, struct vmsnap_sandbox *ret,
                         struct vmsnap_diag *d)
{
        struct vmsnap_snapshot s;
        char dir[PATH_LEN];
        int r = h && snapshot_ref ? check_spec(spec, d)
                                  : vmsnap_diag(d, -EINVAL, "sandbox adopt: missing argument");
        if (r == 0)
                r = snapshot_lookup(h, snapshot_ref, &s, dir, d);
        if (r == 0)
                r = check_adopt_fit(&s, spec, d);
        if (r < 0)
                return r;
        struct vmsnap_sandbox sb = {.state = VMSNAP_SANDBOX_PAUSED, .vcpus = s.vcpus,
                                    .memory = s.memory, .generation = s.generation};
        if ((r = sandbox_id(spec, sb.id, d)) < 0)
                return r;
        snprintf(sb.name, sizeof(sb.name), "%s", spec && spec->name ? spec->name : "");
        snprintf(sb.vmm, sizeof(sb.vmm), "%s", s.vmm);
        snprintf(sb.snapshot_id, sizeof(sb.snapshot_id), "%s", s.id);
        sb.idle_timeout = spec ? spec->idle_timeout : 0;
        sb.created = sb.last_active = (int64_t)time(NULL);
        if ((r = adopt_row(h, &sb, d)) < 0)
                return r;
        if ((r = net_alloc(h, &sb, spec, d)) < 0) {
                db_delete(h, sb.id);
                return r;
        }
        if (ret)
                *ret = sb;
        return 0;
}
