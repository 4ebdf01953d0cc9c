/* Which lineage links an import keeps. An archive's "parent" and "template" are claims: a
 * hostile archive could name any snapshot here to make it undeletable (a dependent pins it
 * against rm and GC). A link is kept only when it names a ready row here (a ready template
 * for "template") and the imported memory header's build table contains every build of
 * that snapshot's header — the imported generation really was made over it (build ids are
 * random UUIDs). Anything else is dropped with a note; the imported directory is
 * self-contained either way. Only headers are read, never a diff file. */
#include "store/import.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Largest header the caps allow (as src/mem reads it). */
#define HEADER_MAX ((size_t)96 + 48 * VMSNAP_MEM_MAX_BUILDS + 32 * VMSNAP_MEM_MAX_EXTENTS + 16)

static struct vmsnap_mem_header *read_header(const char *dir)
{
        _cleanup_close_ int fd = vmsnap_fs_open_dir(dir);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        struct vmsnap_mem_header *h = NULL;
        if (fd >= 0 && vmsnap_fs_read_file(fd, VMSNAP_MEM_HEADER_NAME, HEADER_MAX, &buf, &len) == 0)
                vmsnap_mem_header_parse(buf, len, VMSNAP_MEM_HEADER_NAME, &h, NULL);
        return h;
}

static int cmp_uuid(const void *a, const void *b)
{
        return memcmp(a, b, sizeof(struct vmsnap_uuid));
}

/* True when every build of `of` is in `in` (sorted once: O(b log b)). */
static bool contains_builds(const struct vmsnap_mem_header *in, const struct vmsnap_mem_header *of)
{
        _cleanup_free_ struct vmsnap_uuid *ids = malloc(in->n_builds * sizeof(*ids));
        if (!ids)
                return false;
        for (uint32_t i = 0; i < in->n_builds; i++)
                ids[i] = in->builds[i].id;
        qsort(ids, in->n_builds, sizeof(*ids), cmp_uuid);
        for (uint32_t i = 0; i < of->n_builds; i++)
                if (!bsearch(&of->builds[i].id, ids, in->n_builds, sizeof(*ids), cmp_uuid))
                        return false;
        return true;
}

/* Why the link to id cannot be kept, or NULL when it can. */
static const char *refusal(struct import *im, const char *id, bool template,
                           const struct vmsnap_mem_header *mine)
{
        struct vmsnap_snapshot r;
        if (store_row_get(im->s, id, &r, NULL) < 0 || r.state != VMSNAP_SNAPSHOT_READY)
                return "no such snapshot here";
        if (template && r.kind != VMSNAP_SNAPSHOT_TEMPLATE)
                return "that snapshot is not a template";
        if (!mine)
                return "the archive has no memory snapshot to show it was made over it";
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(im->s, id, dir, sizeof(dir));
        struct vmsnap_mem_header *theirs = read_header(dir);
        bool ok = theirs && contains_builds(mine, theirs);
        vmsnap_mem_header_free(theirs);
        return ok ? NULL : "the imported memory does not contain its builds";
}

int import_lineage(struct import *im, struct vmsnap_diag *d)
{
        const struct vmsnap_snapshot *e = &im->env.rec;
        if (!e->parent_id[0] && !e->template_id[0])
                return 0;
        struct vmsnap_mem_header *mine =
            store_envelope_find(&im->env, VMSNAP_MEM_HEADER_NAME)
                ? read_header(vmsnap_store_txn_dir(im->t))
                : NULL;
        const char *ids[2] = {e->parent_id, e->template_id}, *kept[2] = {NULL, NULL};
        for (int i = 0; i < 2; i++) {
                if (!ids[i][0])
                        continue;
                const char *why = refusal(im, ids[i], i == 1, mine);
                if (why)
                        import_note(im, "%s %s dropped: %s", i ? "template" : "parent", ids[i],
                                    why);
                else
                        kept[i] = ids[i];
        }
        vmsnap_mem_header_free(mine);
        int r = store_txn_set_lineage(im->t, kept[0], kept[1]);
        return r < 0 ? vmsnap_diag(d, r, "lineage: invalid id") : 0;
}
