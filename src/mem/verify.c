/* verify: the whole snapshot, data included. Opening checks the structure and the hash
 * tables against the header; here every stored block is re-hashed against its table. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_BLOCK_REPORTS 8 /* per build: enough to see the damage, not a flood */

struct verify_state {
        vmsnap_mem_problem_fn fn;
        void *ctx;
        struct vmsnap_diag *d;
        unsigned problems;
};

static void report(struct verify_state *v, int err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void report(struct verify_state *v, int err, const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (v->problems++ == 0)
                vmsnap_diag(v->d, err, "%s", msg);
        if (v->fn)
                v->fn(v->ctx, msg);
}

static int verify_build(struct verify_state *v, struct vmsnap_mem_snapshot *s, uint32_t i)
{
        const struct vmsnap_mem_build *b = &s->h->builds[i];
        uint64_t bs = s->h->block_size, n = b->file_size / bs;
        _cleanup_free_ struct vmsnap_hash *got = malloc(n ? n * sizeof(*got) : 1);
        if (!got)
                return -ENOMEM;
        int r = hash_diff_file(s->fds[i], b->file_size, bs, got);
        if (r < 0) {
                report(v, -EBADMSG, "%s/%s: cannot read: %s", s->dir, s->names[i],
                       strerror(-r));
                return 0;
        }
        unsigned bad = 0;
        for (uint64_t k = 0; k < n; k++) {
                if (memcmp(got[k].b, s->hashes[i][k].b, 16) == 0)
                        continue;
                if (bad++ < MAX_BLOCK_REPORTS)
                        report(v, -EBADMSG, "%s/%s: block at storage offset %llu does not match "
                               "its recorded hash (corrupt data)", s->dir, s->names[i],
                               (unsigned long long)(k * bs));
        }
        if (bad > MAX_BLOCK_REPORTS)
                report(v, -EBADMSG, "%s/%s: %u more corrupt blocks", s->dir, s->names[i],
                       bad - MAX_BLOCK_REPORTS);
        return 0;
}

int vmsnap_mem_verify(const char *snapdir, vmsnap_mem_problem_fn fn, void *ctx,
                      struct vmsnap_diag *d)
{
        struct verify_state v = {.fn = fn, .ctx = ctx, .d = d};
        struct vmsnap_mem_snapshot *s;
        struct vmsnap_diag od = {0};
        int r = vmsnap_mem_open(snapdir, &s, &od);
        if (r < 0) {
                if (r == -ENOMEM)
                        return vmsnap_diag(d, r, "%s", od.msg);
                report(&v, r == -ENOENT ? -ENOENT : -EBADMSG, "%s", od.msg);
                return d ? d->err : -EBADMSG;
        }
        if (s->h->version < 2) {
                /* Seed snapshots carry no checksums: structure and sizes were all we could
                 * check, and opening did that. */
                vmsnap_mem_close(s);
                return 0;
        }
        for (uint32_t i = 0; i < s->h->n_builds && r == 0; i++)
                r = verify_build(&v, s, i);
        vmsnap_mem_close(s);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: verify failed: %s", snapdir, strerror(-r));
        return v.problems ? -EBADMSG : 0;
}
