/* The sandbox layer's side of the jails (docs/sandbox.md "Jails"): a jail uid per sandbox
 * from the configured range, the jail root dir, the cgroup and its limits, the modes and
 * owners of the files a jailed VMM opens, and the cleanup once the VMM is gone. The jail
 * itself (namespaces, binds, privileges) is src/jail/, entered by vmsnap-jailer. */
#include "sandbox/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* What a VMM needs on top of guest RAM, for memory.max: QEMU under TCG measured ~100 MiB of
 * its own (libraries, device model, a 64 MiB translation cache bounded by tb-size) plus the
 * page cache of the disk it writes; see docs/sandbox.md "Jails" for the numbers. */
#define JAIL_MEMORY_OVERHEAD (256ull << 20)
#define JAIL_PIDS_BASE       128u /* QEMU's I/O thread pool grows to 64 workers */

int jail_uid_alloc(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        if (!h->jailed || sb->jail_uid)
                return 0;
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db,
                               "SELECT jail_uid FROM sandboxes WHERE jail_uid IS NOT NULL "
                               "ORDER BY jail_uid",
                               -1, &st, NULL) != SQLITE_OK)
                return vmsnap_diag(d, -EIO, "%s/vmsnap.db: %s", h->root, sqlite3_errmsg(h->db));
        uint64_t next = h->jail.uid_first, end = next + h->jail.uid_count;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) { /* the first gap in the sorted list */
                uint64_t used = (uint64_t)sqlite3_column_int64(st, 0);
                if (used > next)
                        break;
                if (used == next)
                        next++;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return vmsnap_diag(d, -EIO, "%s/vmsnap.db: %s", h->root, sqlite3_errmsg(h->db));
        if (next >= end)
                return vmsnap_diag(d, -EAGAIN,
                                   "all %u jail uids (%u..%llu) are held by sandboxes; destroy "
                                   "some or give vmsnapd a larger --jail-uids range",
                                   h->jail.uid_count, (unsigned)h->jail.uid_first,
                                   (unsigned long long)end - 1);
        sb->jail_uid = (uint32_t)next;
        return 0;
}

int jail_uid_claim(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        if (!h->jailed || sb->jail_uid)
                return 0;
        pthread_mutex_lock(&h->db_lock);
        int r = jail_uid_alloc(h, sb, d);
        if (r == 0 && (r = row_put(h, sb, d)) < 0)
                sb->jail_uid = 0;
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

void jail_spec_fill(const struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                    struct spec_buf *buf, struct vmsnap_vm_spec *spec)
{
        spec->jail = NULL;
        if (!h->jailed || !sb->jail_uid)
                return;
        snprintf(buf->jail_root, PATH_LEN, "%.3000s/jails/%s", h->root, sb->id);
        buf->jail = (struct vmsnap_jail_spec){
                .config = &h->jail,
                .name = sb->id,
                .root_dir = buf->jail_root,
                .uid = sb->jail_uid,
                .limits = {.memory_max = sb->memory + JAIL_MEMORY_OVERHEAD,
                           .cpus = sb->vcpus + 1, /* the vCPU threads and the I/O thread */
                           .pids_max = JAIL_PIDS_BASE + sb->vcpus},
        };
        spec->jail = &buf->jail;
}

bool jail_handover_ok(struct vmsnap_host *h)
{
        /* Probed once (the jailer runs a child: milliseconds); two racing probes agree. */
        int known = __atomic_load_n(&h->jail_handover, __ATOMIC_ACQUIRE);
        if (known == 0) {
                struct vmsnap_diag d = {0};
                known = vmsnap_jail_probe_handover(&h->jail, &d) == 0 ? 1 : -1;
                __atomic_store_n(&h->jail_handover, known, __ATOMIC_RELEASE);
        }
        return known > 0;
}

/* Creates dir (or takes the existing one) and forces its owner and mode. */
static int own_dir(const char *dir, uid_t uid, gid_t gid, mode_t mode, struct vmsnap_diag *d)
{
        if (mkdir(dir, mode) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", dir, strerror(errno));
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot set owner %u and mode %o: %s", dir,
                                   (unsigned)uid, (unsigned)mode, strerror(errno));
        return 0;
}

/* A read-only input several jails share: root:shared_gid 0640 (never a symlink). */
static int share_file(const struct vmsnap_host *h, const char *path, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchown(fd, 0, h->jail.shared_gid) < 0 || fchmod(fd, 0640) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot share it with the jails (root:%u "
                                   "0640): %s", path, (unsigned)h->jail.shared_gid,
                                   strerror(errno));
        return 0;
}

int jail_prepare(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                 const struct vmsnap_vm_spec *spec, struct vmsnap_diag *d)
{
        if (!spec->jail)
                return own_dir(spec->run_dir, 0, 0, 0700, d);
        char jails[PATH_LEN];
        snprintf(jails, sizeof(jails), "%.3000s/jails", h->root);
        int r = own_dir(jails, 0, 0, 0700, d);
        if (r == 0)
                r = own_dir(spec->jail->root_dir, 0, 0, 0700, d);
        if (r == 0)
                r = own_dir(spec->run_dir, sb->jail_uid, sb->jail_uid, 0700, d);
        const char *shared[] = {spec->kernel, spec->initrd, spec->rootfs_base};
        for (size_t i = 0; r == 0 && i < ARRAY_SIZE(shared); i++)
                if (shared[i] && access(shared[i], F_OK) == 0)
                        r = share_file(h, shared[i], d);
        if (r == 0)
                r = vmsnap_jail_cgroup_create(&h->jail, sb->id, &spec->jail->limits, d);
        return r;
}

int jail_own(struct vmsnap_host *h, const struct vmsnap_sandbox *sb, const char *path,
             struct vmsnap_diag *d)
{
        uid_t uid = h->jailed && sb->jail_uid ? sb->jail_uid : 0;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchown(fd, uid, uid) < 0 || fchmod(fd, 0600) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot hand to uid %u (0600): %s", path,
                                   (unsigned)uid, strerror(errno));
        return 0;
}

/* Removes one jail's cgroup (killing what is left in it) and its root dir. */
static void release_one(struct vmsnap_host *h, const char *name)
{
        struct vmsnap_diag ignore = {0};
        /* Whatever a dead VMM left behind (a setsid grandchild keeps the jail's uid) dies
         * first: the uid is handed out again only once the group is empty and gone. */
        vmsnap_jail_cgroup_kill(&h->jail, name, &ignore);
        vmsnap_jail_cgroup_remove(&h->jail, name, &ignore);
        char root[PATH_LEN];
        snprintf(root, sizeof(root), "%.3000s/jails/%s", h->root, name);
        rmdir(root); /* empty on the host: the jail's tmpfs lived in its own namespace */
}

void jail_release(struct vmsnap_host *h, const char *id)
{
        if (!h->jailed)
                return;
        char pager[VMSNAP_ID_LEN + 16];
        snprintf(pager, sizeof(pager), "%s.pager", id); /* its page server's (pager.c) */
        release_one(h, pager);
        release_one(h, id);
}
