/* An open memory snapshot: header, diff file fds and block-hash tables, with O(log n)
 * address resolution for the page server and random-access reads. */
#include "mem/internal.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Largest header the caps allow: every header we could have written can be read. */
#define HEADER_MAX_BYTES                                                                           \
        (HEADER_V2_FIXED + HEADER_V2_BUILD * VMSNAP_MEM_MAX_BUILDS +                             \
         HEADER_V2_EXTENT * VMSNAP_MEM_MAX_EXTENTS + HEADER_TRAILER)

void vmsnap_mem_close(struct vmsnap_mem_snapshot *s)
{
        if (!s)
                return;
        for (uint32_t i = 0; s->h && i < s->h->n_builds; i++) {
                if (s->fds && s->fds[i] >= 0)
                        close(s->fds[i]);
                if (s->hashes)
                        free(s->hashes[i]);
        }
        free(s->fds);
        free(s->names);
        free(s->hashes);
        vmsnap_mem_header_free(s->h);
        if (s->dirfd >= 0)
                close(s->dirfd);
        free(s->dir);
        free(s);
}

static int load_header(struct vmsnap_mem_snapshot *s, struct vmsnap_diag *d)
{
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        char name[4200];
        snprintf(name, sizeof(name), "%s/%s", s->dir, VMSNAP_MEM_HEADER_NAME);
        int r = vmsnap_fs_read_file(s->dirfd, VMSNAP_MEM_HEADER_NAME, HEADER_MAX_BYTES, &buf,
                                    &len);
        if (r == -ENOENT)
                return vmsnap_diag(d, r, "%s: no memory snapshot here (missing header)", name);
        if (r < 0)
                return vmsnap_diag(d, r == -EINVAL || r == -ELOOP ? -EBADMSG : r,
                                   "%s: cannot read: %s", name, vmsnap_fs_open_error(r));
        return vmsnap_mem_header_parse(buf, len, name, &s->h, d);
}

/* Opens build i's diff file: memfile.<id>, or for a v1 base build the seed's "memfile".
 * Never falls back to another build's file (seed bug W6). */
static int open_build(struct vmsnap_mem_snapshot *s, uint32_t i, struct vmsnap_diag *d)
{
        const struct vmsnap_mem_build *b = &s->h->builds[i];
        vmsnap_mem_diff_name(&b->id, s->names[i]);
        struct stat st;
        int fd = vmsnap_fs_open_regular(s->dirfd, s->names[i], &st, false);
        if (fd == -ENOENT && s->h->version == 1 &&
            memcmp(b->id.b, s->h->base_build_id.b, 16) == 0) {
                snprintf(s->names[i], 64, "%s", SEED_BASE_NAME);
                fd = vmsnap_fs_open_regular(s->dirfd, s->names[i], &st, false);
        }
        if (fd < 0)
                return vmsnap_diag(d, fd == -EINVAL || fd == -ELOOP ? -EBADMSG : fd,
                                   "%s/%s: diff file of build %u: %s", s->dir, s->names[i], i,
                                   vmsnap_fs_open_error(fd));
        s->fds[i] = fd;
        if (s->h->version == 1) {
                s->h->builds[i].file_size = (uint64_t)st.st_size;
                return 0;
        }
        if ((uint64_t)st.st_size != b->file_size)
                return vmsnap_diag(d, -EBADMSG, "%s/%s: is %llu bytes, the header says %llu "
                                   "(truncated or replaced)", s->dir, s->names[i],
                                   (unsigned long long)st.st_size,
                                   (unsigned long long)b->file_size);
        return 0;
}

static int load_hashes(struct vmsnap_mem_snapshot *s, uint32_t i, struct vmsnap_diag *d)
{
        const struct vmsnap_mem_build *b = &s->h->builds[i];
        int r = hashes_load(s->dirfd, &b->id, s->h->block_size,
                            b->file_size / s->h->block_size, &s->hashes[i], d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "%s", s->dir);
        struct vmsnap_hash sum;
        hashes_checksum(s->hashes[i], b->file_size / s->h->block_size, &sum);
        if (memcmp(sum.b, b->checksum.b, 16) != 0) {
                char name[80];
                hashes_name(&b->id, name);
                return vmsnap_diag(d, -EBADMSG, "%s/%s: does not match the build checksum in "
                                   "the header (replaced or corrupt)", s->dir, name);
        }
        return 0;
}

static int open_files(struct vmsnap_mem_snapshot *s, struct vmsnap_diag *d)
{
        uint32_t n = s->h->n_builds;
        s->fds = malloc(n * sizeof(int));
        s->names = calloc(n, sizeof(*s->names));
        s->hashes = calloc(n, sizeof(*s->hashes));
        if (!s->fds || !s->names || !s->hashes)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", s->dir);
        for (uint32_t i = 0; i < n; i++)
                s->fds[i] = -1;
        for (uint32_t i = 0; i < n; i++) {
                int r = open_build(s, i, d);
                if (r < 0)
                        return r;
        }
        if (s->h->version == 1) /* sizes now known: check storage bounds */
                return vmsnap_mem_header_validate(s->h, s->dir, d);
        for (uint32_t i = 0; i < n; i++) {
                int r = load_hashes(s, i, d);
                if (r < 0)
                        return r;
        }
        return 0;
}

int vmsnap_mem_open(const char *dir, struct vmsnap_mem_snapshot **ret, struct vmsnap_diag *d)
{
        if (!dir || !ret)
                return vmsnap_diag(d, -EINVAL, "mem open: missing argument");
        struct vmsnap_mem_snapshot *s = calloc(1, sizeof(*s));
        if (!s)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", dir);
        s->dirfd = -1;
        s->dir = strdup(dir);
        int r = s->dir ? 0 : -ENOMEM;
        if (r == 0) {
                s->dirfd = vmsnap_fs_open_dir(dir);
                if (s->dirfd < 0)
                        r = vmsnap_diag(d, s->dirfd, "%s: cannot open directory: %s", dir,
                                        strerror(-s->dirfd));
        }
        if (r == 0)
                r = load_header(s, d);
        if (r == 0)
                r = open_files(s, d);
        if (r < 0) {
                vmsnap_mem_close(s);
                return r;
        }
        _cleanup_free_ uint8_t *zero = calloc(1, s->h->block_size);
        if (!zero) {
                vmsnap_mem_close(s);
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", dir);
        }
        vmsnap_hash128(zero, s->h->block_size, &s->zero_hash);
        *ret = s;
        return 0;
}

const struct vmsnap_mem_header *vmsnap_mem_header(const struct vmsnap_mem_snapshot *s)
{
        return s->h;
}

int vmsnap_mem_locate(const struct vmsnap_mem_snapshot *s, uint64_t offset,
                      struct vmsnap_mem_location *ret)
{
        if (!s || !ret || offset >= s->h->size)
                return -EINVAL;
        const struct vmsnap_mem_extent *e = &s->h->extents[vmsnap_mem_header_find(s->h, offset)];
        uint64_t shift = offset - e->offset;
        ret->run = e->length - shift;
        if (e->build == VMSNAP_MEM_ZERO) {
                *ret = (struct vmsnap_mem_location){.zero = true, .fd = -1, .run = ret->run};
                return 0;
        }
        ret->zero = false;
        ret->fd = s->fds[e->build];
        ret->storage_offset = e->storage_offset + shift;
        ret->hashes = s->hashes[e->build]
                              ? s->hashes[e->build] + ret->storage_offset / s->h->block_size
                              : NULL;
        return 0;
}

int vmsnap_mem_read(const struct vmsnap_mem_snapshot *s, uint64_t offset, void *buf,
                    size_t len, struct vmsnap_diag *d)
{
        if (!s || !buf || offset > s->h->size || len > s->h->size - offset)
                return vmsnap_diag(d, -EINVAL, "mem read: range outside guest memory");
        uint8_t *out = buf;
        while (len > 0) {
                struct vmsnap_mem_location loc = {0};
                vmsnap_mem_locate(s, offset, &loc);
                size_t n = (size_t)MIN((uint64_t)len, loc.run);
                if (loc.zero) {
                        memset(out, 0, n);
                } else {
                        ssize_t got = vmsnap_fs_pread_full(loc.fd, out, n, loc.storage_offset);
                        if (got < 0 || (size_t)got != n)
                                return vmsnap_diag(d, got < 0 ? (int)got : -EIO,
                                                   "%s: short read from a diff file at %llu",
                                                   s->dir, (unsigned long long)offset);
                }
                out += n;
                offset += n;
                len -= n;
        }
        return 0;
}

bool vmsnap_mem_block_ok(const struct vmsnap_mem_snapshot *s, const void *data,
                         const struct vmsnap_hash *expected)
{
        struct vmsnap_hash h;
        vmsnap_hash128(data, s->h->block_size, &h);
        return memcmp(h.b, expected->b, 16) == 0;
}

int vmsnap_mem_files(const char *snapdir, char ***ret_names, struct vmsnap_diag *d)
{
        struct vmsnap_mem_snapshot *s;
        int r = vmsnap_mem_open(snapdir, &s, d);
        if (r < 0)
                return r;
        uint32_t n = s->h->n_builds;
        char **names = calloc(2 + 2 * (size_t)n, sizeof(char *));
        size_t k = 0;
        r = names ? 0 : -ENOMEM;
        if (r == 0 && !(names[k++] = strdup(VMSNAP_MEM_HEADER_NAME)))
                r = -ENOMEM;
        for (uint32_t i = 0; r == 0 && i < n; i++) {
                char hname[80];
                if (!(names[k++] = strdup(s->names[i])))
                        r = -ENOMEM;
                if (r == 0 && s->h->version >= 2) {
                        hashes_name(&s->h->builds[i].id, hname);
                        if (!(names[k++] = strdup(hname)))
                                r = -ENOMEM;
                }
        }
        vmsnap_mem_close(s);
        if (r < 0) {
                vmsnap_mem_files_free(names);
                return vmsnap_diag(d, r, "%s: out of memory", snapdir);
        }
        *ret_names = names;
        return 0;
}

void vmsnap_mem_files_free(char **names)
{
        for (size_t i = 0; names && names[i]; i++)
                free(names[i]);
        free(names);
}

int snapshot_compute_hashes(struct vmsnap_mem_snapshot *s, struct vmsnap_diag *d)
{
        for (uint32_t i = 0; i < s->h->n_builds; i++) {
                struct vmsnap_mem_build *b = &s->h->builds[i];
                if (s->hashes[i])
                        continue;
                uint64_t n = b->file_size / s->h->block_size;
                s->hashes[i] = malloc(n ? n * sizeof(struct vmsnap_hash) : 1);
                if (!s->hashes[i])
                        return vmsnap_diag(d, -ENOMEM, "%s: out of memory", s->dir);
                int r = hash_diff_file(s->fds[i], b->file_size, s->h->block_size, s->hashes[i]);
                if (r < 0)
                        return vmsnap_diag(d, r, "%s/%s: cannot read: %s", s->dir, s->names[i],
                                           strerror(-r));
                hashes_checksum(s->hashes[i], n, &b->checksum);
        }
        return 0;
}
