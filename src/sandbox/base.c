/* The first pause after a boot (docs/sandbox.md "The first pause after a boot"): a booted VM
 * has no snapshot to diff against, so without help its first pause copies the whole RAM. The
 * background thread (compact.c) takes a base instead, while the VM runs: it drops the VMM's
 * page-table entries of the memory file (touch_pageout), then copies the file into a pending
 * store snapshot. A page the guest writes after the PAGEOUT is in the VMM's page table again
 * at the pause; a page it wrote only before is in the copy. The first pause then writes only
 * the listed pages over the base (capture.c), and its commit takes the base's checksums
 * (vmsnap_store_txn_reuse_pending). The base is never visible as a snapshot: its pending
 * directory is aborted once the pause holds links of its files, and a crash leaves an open
 * `base` entry whose pending snapshot recovery aborts. */
#include "sandbox/internal.h"
#include "util/sys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define BASE_MAX_WAITING     32 /* built bases waiting for their first pause, at most */
#define BASE_MIN_FREE_PERCENT 10 /* of the store's file system, left free after a copy */

void base_want(struct vmsnap_host *h, struct live *l)
{
        if (!l->vm || l->driver->lazy_uffd)
                return;
        pthread_mutex_lock(&h->compact_lock);
        if (l->base.state == BASE_NONE) /* cancel is false there: build_one clears it */
                l->base.state = BASE_WANTED;
        pthread_mutex_unlock(&h->compact_lock);
        compact_kick(h);
}

/* The pending snapshot and its journal entry, under the db lock for the store. */
static int begin_pending(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
                         struct base_taken *b, struct vmsnap_diag *d)
{
        struct vmsnap_snapshot_spec spec = {.kind = VMSNAP_SNAPSHOT_PAUSE,
                                            .vmm = sb->vmm,
                                            .vcpus = sb->vcpus,
                                            .memory = sb->memory};
        pthread_mutex_lock(&h->db_lock);
        int r = vmsnap_store_create_begin(h->store, &spec, &b->txn, d);
        pthread_mutex_unlock(&h->db_lock);
        if (r < 0)
                return r;
        char data[128];
        snprintf(data, sizeof(data), "{\"txn\":\"%s\"}", vmsnap_store_txn_id(b->txn));
        r = db_journal_begin(h, &b->j, sb->id, "base", data, NULL, false, d);
        if (r < 0)
                db_txn_abort(h, &b->txn);
        return r;
}

/* Under the sandbox's lock: checks the VM still runs on the memory of its boot, takes the
 * mark and drops the VMM's page-table entries of the file. Returns 1 when the copy can start
 * (memfile and *sb set), 0 when there is nothing to do (no tracking here, or a VMM that does
 * not map the file: Cloud Hypervisor's RAM is anonymous), -errno. */
static int base_begin(struct vmsnap_host *h, struct live *l, struct base_taken *b,
                      struct vmsnap_sandbox *sb, char memfile[PATH_LEN], struct vmsnap_diag *d)
{
        pthread_mutex_lock(&h->db_lock);
        int r = row_get(h, l->id, sb, d);
        pthread_mutex_unlock(&h->db_lock);
        pthread_mutex_lock(&h->compact_lock);
        bool cancelled = l->base.cancel;
        pthread_mutex_unlock(&h->compact_lock);
        if (r < 0 || cancelled || !l->vm || sb->state != VMSNAP_SANDBOX_RUNNING ||
            sb->snapshot_id[0] || sb->template_id[0])
                return r < 0 ? r : 0;
        struct spec_buf buf;
        struct vmsnap_vm_spec spec;
        build_spec(h, sb, &buf, &spec);
        snprintf(memfile, PATH_LEN, "%s", buf.memory);
        touch_mark_take(memfile, &b->mark); /* before the PAGEOUT: swap-outs since count */
        if (!b->mark.valid)
                return 0; /* no page tracking on this host: a base would not help */
        r = touch_pageout(l->driver->pid(l->vm), memfile, d);
        return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

/* Whether the host has room for one more base of memfile: fewer than BASE_MAX_WAITING
 * waiting, and the store's file system keeps BASE_MIN_FREE_PERCENT free after the copy
 * (a guest could fill its RAM with random bytes to make its base as large as it can). */
static bool base_room(struct vmsnap_host *h, const char *memfile)
{
        unsigned waiting = 0;
        pthread_mutex_lock(&h->live_lock);
        pthread_mutex_lock(&h->compact_lock);
        for (struct live *l = h->lives; l; l = l->next)
                waiting += l->base.state == BASE_READY;
        pthread_mutex_unlock(&h->compact_lock);
        pthread_mutex_unlock(&h->live_lock);
        struct stat st;
        struct statvfs fs;
        if (waiting >= BASE_MAX_WAITING || stat(memfile, &st) < 0 || statvfs(h->root, &fs) < 0)
                return false;
        uint64_t need = (uint64_t)st.st_blocks * 512, total = (uint64_t)fs.f_blocks * fs.f_frsize;
        uint64_t avail = (uint64_t)fs.f_bavail * fs.f_frsize;
        return avail > need && avail - need >= total / 100 * BASE_MIN_FREE_PERCENT;
}

/* Without the sandbox's lock: the copy, made durable with its checksums taken. */
static int base_copy(const char *memfile, struct base_taken *b, struct vmsnap_diag *d)
{
        vmsnap_crashpoint("base.begun");
        struct vmsnap_mem_opts o = {.source = VMSNAP_MEM_SOURCE_CONTENT, .defer_sync = true};
        struct vmsnap_mem_result res = {0};
        int r = vmsnap_mem_process(memfile, vmsnap_store_txn_dir(b->txn), &o, &res, d);
        b->bytes = res.bytes_written;
        if (r == 0) /* the fsyncs and checksums the pause's commit would otherwise wait for */
                r = vmsnap_store_txn_preseal(b->txn, d);
        vmsnap_crashpoint("base.built");
        return r;
}

/* Aborts a base's pending snapshot and closes its entry. */
static void discard(struct vmsnap_host *h, struct base_taken *b)
{
        db_txn_abort(h, &b->txn);
        db_journal_done(h, &b->j, NULL, NULL);
}

/* discard, counted as used (a pause wrote over it) or dropped. */
static void release_now(struct vmsnap_host *h, struct base_taken *b)
{
        discard(h, b);
        trace_base(h, b->used ? VMSNAP_BASE_USED : VMSNAP_BASE_DROPPED);
}

/* Moves l's built base out of it (l->base becomes NONE); compact_lock held or no thread. */
static struct base_taken detach(struct live *l)
{
        struct base_taken b = {.txn = l->base.txn, .j = l->base.j, .mark = l->base.mark,
                               .used = l->base.used, .bytes = l->base.bytes};
        l->base = (struct live_base){0};
        return b;
}

/* Builds l's base (its state is BASE_BUILDING) and leaves it READY, or counts why not.
 * Only the PAGEOUT is done under the sandbox's lock: the pending snapshot's commits and the
 * copy are not, so a pause or exec waits for neither. */
static void build_one(struct vmsnap_host *h, struct live *l)
{
        struct base_taken b = {0};
        struct vmsnap_sandbox sb;
        char memfile[PATH_LEN];
        struct vmsnap_diag d = {0};
        pthread_mutex_lock(&l->op_lock);
        int r = base_begin(h, l, &b, &sb, memfile, &d);
        pthread_mutex_unlock(&l->op_lock);
        bool roomy = r > 0 && base_room(h, memfile);
        if (roomy && (r = begin_pending(h, &sb, &b, &d)) == 0)
                r = base_copy(memfile, &b, &d);
        bool copied = roomy && r == 0;
        pthread_mutex_lock(&h->compact_lock);
        bool cancelled = l->base.cancel; /* a pause or vm_kill came meanwhile */
        bool keep = copied && !cancelled;
        if (keep) {
                l->base.txn = b.txn;
                l->base.j = b.j;
                l->base.mark = b.mark;
                l->base.bytes = b.bytes;
        }
        l->base.state = keep ? BASE_READY : BASE_NONE;
        l->base.cancel = false;
        pthread_mutex_unlock(&h->compact_lock);
        if (keep) {
                trace_base(h, VMSNAP_BASE_BUILT);
                return;
        }
        if (b.txn)
                discard(h, &b);
        bool failed = r < 0 && !cancelled; /* else its files may have gone with the VM */
        if (failed)
                fprintf(stderr, "vmsnap: sandbox %s: no base for its first pause (it will copy "
                        "the whole RAM): %s\n", l->id, d.msg);
        if (copied || r != 0) /* r == 0 without a copy: nothing to do, nothing to count */
                trace_base(h, failed ? VMSNAP_BASE_FAILED : VMSNAP_BASE_DROPPED);
}

/* The next live entry with work for the background thread, its state moved on: WANTED
 * becomes BUILDING (*build true), or NONE once the host closes (no new copy then); DROP
 * gives its base into *drop and becomes NONE. */
static struct live *next_work(struct vmsnap_host *h, bool *build, struct base_taken *drop)
{
        pthread_mutex_lock(&h->live_lock);
        pthread_mutex_lock(&h->compact_lock);
        struct live *l = h->lives;
        for (; l; l = l->next) {
                if (l->base.state == BASE_WANTED && h->compact_stop)
                        l->base.state = BASE_NONE;
                else if (l->base.state == BASE_WANTED || l->base.state == BASE_DROP)
                        break;
        }
        if (l && (*build = l->base.state == BASE_WANTED))
                l->base.state = BASE_BUILDING;
        else if (l)
                *drop = detach(l);
        pthread_mutex_unlock(&h->compact_lock);
        pthread_mutex_unlock(&h->live_lock);
        return l;
}

void base_pass(struct vmsnap_host *h)
{
        struct live *l;
        bool build = false;
        struct base_taken drop = {0};
        while ((l = next_work(h, &build, &drop))) {
                if (build) {
                        build_one(h, l);
                        compact_run_drops(h); /* a pause that came meanwhile waits for no copy */
                } else {
                        release_now(h, &drop);
                }
        }
}

bool base_take(struct vmsnap_host *h, struct live *l, struct base_taken *ret)
{
        bool taken = false;
        pthread_mutex_lock(&h->compact_lock);
        switch (l->base.state) {
        case BASE_READY:
                *ret = detach(l);
                taken = true;
                break;
        case BASE_BUILDING:
                l->base.cancel = true;
                break;
        case BASE_WANTED:
                l->base.state = BASE_NONE;
                break;
        case BASE_NONE:
        case BASE_DROP:
                break;
        }
        pthread_mutex_unlock(&h->compact_lock);
        return taken;
}

void base_release(struct vmsnap_host *h, struct live *l, struct base_taken *b)
{
        if (!b->txn)
                return;
        pthread_mutex_lock(&h->compact_lock);
        /* else (the host closes; a state that cannot occur today) released here */
        bool queued = l->base.state == BASE_NONE && !h->compact_stop;
        if (queued)
                l->base = (struct live_base){.state = BASE_DROP, .txn = b->txn, .j = b->j,
                                             .used = b->used, .bytes = b->bytes};
        pthread_mutex_unlock(&h->compact_lock);
        if (queued)
                compact_kick(h); /* its journal commit comes after the pause's answer */
        else
                release_now(h, b);
}

void base_forget(struct live *l)
{
        struct vmsnap_host *h = l->host;
        if (!h)
                return;
        pthread_mutex_lock(&h->compact_lock);
        bool kick = l->base.state == BASE_READY;
        if (kick)
                l->base.state = BASE_DROP;
        else if (l->base.state == BASE_BUILDING)
                l->base.cancel = true;
        else if (l->base.state == BASE_WANTED)
                l->base.state = BASE_NONE;
        pthread_mutex_unlock(&h->compact_lock);
        if (kick)
                compact_kick(h);
}

void base_close(struct vmsnap_host *h)
{
        for (struct live *l = h->lives; l; l = l->next) {
                if (l->base.state != BASE_READY && l->base.state != BASE_DROP)
                        continue;
                struct base_taken b = detach(l);
                release_now(h, &b);
        }
}

void recover_base(struct vmsnap_host *h, const struct journal *j)
{
        struct journal done = *j;
        recover_abort_txn(h, j);
        recovery_say(h, j->sandbox_id, "the pending base copied for its first pause removed "
                     "(entry %s): a pause that used it keeps its own links; one still to come "
                     "copies the whole RAM", j->data);
        journal_done(h, &done, NULL, NULL);
}

void base_waiting(struct vmsnap_host *h, uint64_t *ret_count, uint64_t *ret_bytes)
{
        *ret_count = *ret_bytes = 0;
        pthread_mutex_lock(&h->live_lock);
        pthread_mutex_lock(&h->compact_lock);
        for (struct live *l = h->lives; l; l = l->next)
                if (l->base.state == BASE_READY || l->base.state == BASE_DROP) {
                        (*ret_count)++;
                        *ret_bytes += l->base.bytes;
                }
        pthread_mutex_unlock(&h->compact_lock);
        pthread_mutex_unlock(&h->live_lock);
}
