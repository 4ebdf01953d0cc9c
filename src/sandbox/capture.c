/* The two halves every lifecycle flow is built from: capture a paused VM into a new store
 * snapshot, and start a VM from a snapshot. */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <vmsnap/disk.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory of the snapshot a new generation diffs against: the sandbox's newest pause
 * snapshot, else the template it was spawned from; "" for a first snapshot. */
static int parent_dir(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                      char out[PATH_LEN])
{
        const char *id = sb->snapshot_id[0] ? sb->snapshot_id : sb->template_id;
        out[0] = '\0';
        if (!id[0])
                return 0;
        pthread_mutex_lock(&h->db_lock);
        int r = vmsnap_store_snapshot_dir(h->store, id, out, PATH_LEN);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

/* The new generation from only the blocks the VMM touched since `mark` was taken (at its
 * restore, or before its base's PAGEOUT: touched.c): returns 1 when done so, 0 when the
 * caller must diff the whole file by content (the host or the VM does not allow the
 * shortcut), or -errno when the diff itself failed. */
static int capture_touched(struct live *l, const struct touch_mark *mark,
                           const struct vmsnap_vm_saved *saved, const char *parent,
                           const char *dir, const struct vmsnap_mem_opts *o,
                           struct pause_trace *t, struct vmsnap_diag *d)
{
        if (!mark->valid || !l->vm || saved->memory_file_temporary ||
            saved->source != VMSNAP_MEM_SOURCE_CONTENT || !touch_mark_holds(mark))
                return 0;
        _cleanup_free_ uint8_t *pages = NULL;
        uint64_t touched;
        struct vmsnap_diag why = {0};
        int r = touch_pages(l->driver->pid(l->vm), saved->memory_file, &pages, &touched, &why);
        trace_mark(t, VMSNAP_PAUSE_MEM_TOUCHED);
        if (r < 0)
                return 0;
        r = vmsnap_mem_diff_pages(saved->memory_file, pages, dir, parent, o, NULL, d);
        return r < 0 ? r : 1;
}

/* Memory: a new generation over the parent (or generation 0), in the pending directory; a
 * booted VM's first pause writes the touched pages over its base when it has one (base.c).
 * A pause leaves the merge at the cap to the background (compact.c) and merges itself only
 * at sync_merge_cap; a template is merged at the cap right away. */
static int capture_memory(struct vmsnap_host *h, struct live *l, const struct vmsnap_sandbox *sb,
                          enum vmsnap_snapshot_kind kind, const struct vmsnap_vm_saved *saved,
                          const char *dir, struct base_taken *base, struct pause_trace *t,
                          struct vmsnap_diag *d)
{
        char parent[PATH_LEN];
        int r = parent_dir(h, sb, parent);
        if (r < 0)
                return vmsnap_diag(d, r, "sandbox %s: cannot find its parent snapshot", sb->id);
        /* dir is the store's pending snapshot: its commit fsyncs every file and dir */
        struct vmsnap_mem_opts o = {.source = saved->source,
                                    .merge_cap = kind == VMSNAP_SNAPSHOT_PAUSE ? sync_merge_cap(h)
                                                                               : h->merge_cap,
                                    .defer_sync = true};
        if (!parent[0] && base->txn) {
                r = capture_touched(l, &base->mark, saved, vmsnap_store_txn_dir(base->txn), dir,
                                    &o, t, d);
                base->used = r > 0;
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        if (!parent[0])
                return vmsnap_mem_process(saved->memory_file, dir, &o, NULL, d);
        r = capture_touched(l, &l->touch, saved, parent, dir, &o, t, d);
        if (r != 0)
                return r < 0 ? r : 0;
        return vmsnap_mem_diff(saved->memory_file, dir, parent, &o, NULL, d);
}

/* rootfs.meta (which pinned base image the disk stands on) travels with the disk, staged
 * and renamed; sync false: without fsyncs, for a pending store snapshot (the store's
 * commit fsyncs every file and the directory). */
static int copy_meta(const char *from, const char *to, bool sync, struct vmsnap_diag *d)
{
        _cleanup_close_ int f = vmsnap_fs_open_dir(from);
        _cleanup_close_ int t = vmsnap_fs_open_dir(to);
        if (f < 0 || t < 0)
                return vmsnap_diag(d, -ENOENT, "%s: cannot open", f < 0 ? from : to);
        if (faccessat(f, VMSNAP_ROOTFS_META, F_OK, 0) < 0)
                return 0; /* made before rootfs.meta existed */
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        int r = vmsnap_fs_read_file(f, VMSNAP_ROOTFS_META, 64 << 10, &buf, &len);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: cannot read: %s", from, VMSNAP_ROOTFS_META,
                                   strerror(-r));
        if ((r = vmsnap_staged_write(t, VMSNAP_ROOTFS_META, buf, len, sync, d)) < 0)
                return r;
        r = sync ? vmsnap_fs_fsync_dir(t) : 0;
        return r < 0 ? vmsnap_diag(d, r, "%s: fsync failed: %s", to, strerror(-r)) : 0;
}

/* Disk: the overlay goes into the snapshot. A VM about to be destroyed gives its overlay
 * by hard link (it writes no more); a VM that keeps running gets a copy taken. */
static int capture_disk(struct vmsnap_host *h, const struct vmsnap_sandbox *sb, bool keep_running,
                        const char *dir, struct vmsnap_diag *d)
{
        char src[PATH_LEN + 32], dst[PATH_LEN + 32];
        struct spec_buf buf;
        struct vmsnap_vm_spec spec;
        build_spec(h, sb, &buf, &spec);
        snprintf(src, sizeof(src), "%s", spec.rootfs);
        snprintf(dst, sizeof(dst), "%s/%s", dir, vmsnap_disk_name(spec.rootfs_format));
        /* The run dir is the jailed VMM's to write: the disk is taken only as the regular
         * file it is, never through a symlink (or FIFO) the VMM could have put there. */
        _cleanup_close_ int fd = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
                return 0; /* a diskless guest */
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return vmsnap_diag(d, fd < 0 ? -errno : -EPERM,
                                   "%s: the sandbox's disk is not a regular file", src);
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", fd); /* exactly the inode checked */
        int r;
        if (!keep_running && linkat(AT_FDCWD, self, AT_FDCWD, dst, AT_SYMLINK_FOLLOW) == 0)
                r = 0;
        else
                r = vmsnap_disk_copy_fd(fd, src, dst, d);
        return r < 0 ? r : copy_meta(buf.run_dir, dir, false, d);
}

static int begin_snapshot(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                          enum vmsnap_snapshot_kind kind, const char *name, const char *version,
                          struct vmsnap_store_txn **ret, struct vmsnap_diag *d)
{
        struct vmsnap_snapshot_spec spec = {
                .name = name,
                .kind = kind,
                .template_id = kind == VMSNAP_SNAPSHOT_PAUSE ? sb->template_id : NULL,
                .vmm = sb->vmm,
                .vmm_version = version,
                .vcpus = sb->vcpus,
                .memory = sb->memory,
        };
        pthread_mutex_lock(&h->db_lock);
        int r = vmsnap_store_create_begin(h->store, &spec, ret, d);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int capture(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
            enum vmsnap_snapshot_kind kind, const char *name, struct journal *j,
            struct pause_trace *t, struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        struct vmsnap_store_txn *txn = NULL;
        struct vmsnap_vm_saved saved = {0};
        struct base_taken base = {0};
        char version[64] = "";
        l->driver->probe(NULL, version, sizeof(version), NULL);
        int r = begin_snapshot(h, sb, kind, name, version, &txn, d);
        if (r < 0)
                return r;
        const char *dir = vmsnap_store_txn_dir(txn);
        char data[256];
        snprintf(data, sizeof(data), "{\"txn\":\"%s\",\"previous\":\"%s\"}",
                 vmsnap_store_txn_id(txn), sb->snapshot_id);
        r = db_journal_step(h, j, "begin", data, NULL, d);
        trace_mark(t, VMSNAP_PAUSE_DB);
        if (r == 0)
                r = l->driver->save(l->vm, dir, &saved, d);
        if (r == 0 && saved.version[0]) /* the saving VMM's own word (accel included) */
                vmsnap_store_txn_set_vmm_version(txn, saved.version);
        trace_mark(t, VMSNAP_PAUSE_VMM_SAVE);
        if (r == 0 && kind == VMSNAP_SNAPSHOT_PAUSE && !sb->snapshot_id[0] &&
            !sb->template_id[0])
                base_take(h, l, &base); /* a first pause after a boot */
        if (r == 0)
                r = capture_memory(h, l, sb, kind, &saved, dir, &base, t, d);
        if (saved.memory_file_temporary)
                unlink(saved.memory_file);
        trace_mark(t, VMSNAP_PAUSE_MEM_DIFF);
        if (r == 0)
                r = capture_disk(h, sb, kind == VMSNAP_SNAPSHOT_TEMPLATE, dir, d);
        if (r == 0)
                r = pager_save_ws(h, l, sb->id, dir, d);
        trace_mark(t, VMSNAP_PAUSE_DISK);
        /* No journal step here: recovery treats a pending snapshot the same whether its
         * files are complete or not (aborted, unless the store committed it). */
        vmsnap_crashpoint("capture.saved");
        const char *from = sb->snapshot_id[0] ? sb->snapshot_id : sb->template_id;
        pthread_mutex_lock(&h->db_lock);
        if (r == 0 && from[0]) /* the chain's files and the kernel are links of its files */
                vmsnap_store_txn_reuse_checksums(txn, from, NULL);
        if (r == 0 && base.used) /* generation 0 is a link of the base's, checksummed */
                vmsnap_store_txn_reuse_pending(txn, base.txn);
        if (r == 0 && kind == VMSNAP_SNAPSHOT_TEMPLATE) /* before the template exists */
                r = net_template_record(h, sb->id, vmsnap_store_txn_id(txn), d);
        if (r == 0)
                r = vmsnap_store_txn_commit(txn, ret, d);
        else
                vmsnap_store_txn_abort(txn, NULL);
        vmsnap_store_txn_free(txn);
        pthread_mutex_unlock(&h->db_lock);
        trace_mark(t, VMSNAP_PAUSE_STORE_COMMIT);
        base.used &= r == 0;
        base_release(h, l, &base); /* committed: the snapshot holds links of what it used */
        return r;
}

/* Memory of the new VM: its own file (the next pause reads guest RAM from it). */
static int prepare_memory(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                          const char *snapdir, struct vmsnap_diag *d)
{
        char mem[PATH_LEN], dir[PATH_LEN];
        path_memory(h, sb->id, mem);
        snprintf(dir, sizeof(dir), "%.3000s/%s", h->mem_root, sb->id);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", dir, strerror(errno));
        int r = vmsnap_mem_materialize(snapdir, mem, NULL, d);
        return r < 0 ? r : jail_own(h, sb, mem, d);
}

static int prepare_disk(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                        const char *snapdir, struct vmsnap_diag *d)
{
        char src[PATH_LEN + 32];
        struct spec_buf buf;
        struct vmsnap_vm_spec spec;
        build_spec(h, sb, &buf, &spec);
        snprintf(src, sizeof(src), "%s/%s", snapdir, vmsnap_disk_name(spec.rootfs_format));
        const char *dst = spec.rootfs;
        if (mkdir(buf.run_dir, 0700) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", buf.run_dir,
                                   strerror(errno));
        if (access(src, F_OK) < 0)
                return 0;
        int r = vmsnap_disk_copy(src, dst, d);
        if (r == 0)
                r = jail_own(h, sb, dst, d);
        return r < 0 ? r : copy_meta(snapdir, buf.run_dir, true, d);
}

/* A clone of a template maps the template's memory, materialized once per host, private
 * (copy-on-write): clean pages are shared with its siblings. A jailed VMM gets a read-only
 * descriptor of it from the jailer (QEMU 7.2 opens it O_RDWR), where the kernel can do that
 * (docs/sandbox.md "Clones that share memory"); else a jailed clone gets its own copy. */
static bool clone_shares(struct vmsnap_host *h, const struct live *l)
{
        return l->driver->private_save && (!h->jailed || jail_handover_ok(h));
}

/* The template's memory linked into the clone's memory directory as `out`; the clone's
 * own memory file name stays free for its first pause to write its RAM into. */
static int prepare_clone_memory(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                                const struct vmsnap_snapshot *t, const char *snapdir,
                                char out[PATH_LEN], struct vmsnap_diag *d)
{
        char dir[PATH_LEN];
        snprintf(dir, sizeof(dir), "%.3000s/%s", h->mem_root, sb->id);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", dir, strerror(errno));
        snprintf(out, PATH_LEN, "%.3000s/%s/template", h->mem_root, sb->id);
        return template_memory_link(h, t->id, t->memory, snapdir, out, d);
}

/* Refuses state written by a VMM version that cannot load it (e.g. Firecracker's). */
static int check_version(struct live *l, const struct vmsnap_snapshot *snap,
                         struct vmsnap_diag *d)
{
        char running[64] = "";
        int r = l->driver->probe(NULL, running, sizeof(running), d);
        if (r < 0)
                return r;
        if (snap->vmm_version[0] && !l->driver->compatible(snap->vmm_version, running))
                return vmsnap_diag(d, -EPROTONOSUPPORT, "snapshot %s was written by %s %s; the "
                                   "installed %s cannot load it", snap->id, snap->vmm,
                                   snap->vmm_version, running);
        return 0;
}

int restore_into(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                 const struct vmsnap_snapshot *snap, bool shared_template, struct journal *j,
                 struct vmsnap_diag *d)
{
        char snapdir[PATH_LEN];
        pthread_mutex_lock(&h->db_lock);
        int r = vmsnap_store_snapshot_dir(h->store, snap->id, snapdir, PATH_LEN);
        pthread_mutex_unlock(&h->db_lock);
        if (r == 0)
                r = check_version(l, snap, d);
        if (r == 0) /* never an unjailed VMM on a jailed host, whenever the sandbox was made */
                r = jail_uid_claim(h, sb, d);
        if (r == 0)
                r = prepare_disk(h, sb, snapdir, d);
        struct spec_buf buf;
        struct vmsnap_vm_spec spec;
        build_spec(h, sb, &buf, &spec);
        char base[PATH_LEN];
        if (r == 0 && strcmp(spec.rootfs_format, "qcow2") == 0 &&
            access(spec.rootfs, F_OK) == 0) { /* the overlay's backing: ours, never its header's */
                r = base_image_of(h, buf.run_dir, base, d);
                spec.rootfs_base = base;
        }
        if (r == 0)
                r = jail_prepare(h, sb, &spec, d);
        if (r == 0)
                r = net_prepare(h, sb, &buf, &spec, d);
        struct vmsnap_vm_restore from = {.state_dir = snapdir,
                                         .memory_mode = VMSNAP_VM_MEMORY_FILE_SHARED,
                                         .memory_path = buf.memory};
        char pager_socket[PATH_LEN], tmpl_memory[PATH_LEN];
        if (r == 0 && l->driver->lazy_uffd) {
                /* Lazy: pages come from the snapshot on first touch, nothing is copied. */
                r = pager_start(h, l, sb, snapdir, pager_socket, d);
                from.memory_mode = VMSNAP_VM_MEMORY_UFFD;
                from.memory_path = pager_socket;
        } else if (r == 0 && shared_template && clone_shares(h, l)) {
                r = prepare_clone_memory(h, sb, snap, snapdir, tmpl_memory, d);
                from.memory_mode = VMSNAP_VM_MEMORY_FILE_PRIVATE;
                from.memory_path = tmpl_memory;
        } else if (r == 0) {
                r = prepare_memory(h, sb, snapdir, d);
                /* before the VMM exists: whatever it maps from here on is what it touched */
                touch_mark_take(buf.memory, &l->touch);
        }
        if (r == 0)
                r = l->driver->restore(&spec, &from, &l->vm, d);
        if (r == 0) { /* recorded at once: recovery must be able to find this VMM */
                live_note_accel(h, l);
                sb->pid = l->driver->pid(l->vm);
                r = db_journal_step(h, j, "restored", NULL, sb, d);
        }
        if (r == 0)
                pager_wait_ws(h, l, sb->id);
        if (r == 0)
                r = l->driver->resume(l->vm, d);
        if (r == 0)
                r = agent_restore_hook(l, d);
        if (r < 0) {
                vm_kill(l);
                release_files(h, sb->id);
                sb->pid = 0;
                return r;
        }
        return 0;
}
