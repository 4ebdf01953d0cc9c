/* memfile.ws: parse, serialize, load/save, and the recorder (see ws.h). */
#include "uffd/ws.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmsnap/uffd.h>

static_assert(WS_FIXED_SIZE == 64 && WS_RUN_SIZE == 16, "memfile.ws layout");

static uint64_t get64(const uint8_t *p)
{
        uint64_t v;
        memcpy(&v, p, 8);
        return le64toh(v);
}

static uint32_t get32(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, 4);
        return le32toh(v);
}

static void put64(uint8_t *p, uint64_t v)
{
        v = htole64(v);
        memcpy(p, &v, 8);
}

static void put32(uint8_t *p, uint32_t v)
{
        v = htole32(v);
        memcpy(p, &v, 4);
}

void ws_free(struct ws_set *ws)
{
        if (!ws)
                return;
        free(ws->runs);
        free(ws);
}

static int cmp_first(const void *a, const void *b)
{
        const struct ws_run *x = a, *y = b;
        return x->first_block < y->first_block ? -1 : x->first_block > y->first_block;
}

/* Every rule a set must satisfy, shared by parse and serialize. Returns 0 or -EBADMSG. */
static int check_set(const struct ws_set *ws, const char *name, struct vmsnap_diag *d)
{
        if (ws->block_size != 4096 && ws->block_size != (2u << 20))
                return vmsnap_diag(d, -EBADMSG, "%s: block size %llu is not 4096 or 2 MiB",
                                   name, (unsigned long long)ws->block_size);
        if (ws->size == 0 || ws->size % ws->block_size || ws->size > VMSNAP_MEM_MAX_SIZE)
                return vmsnap_diag(d, -EBADMSG, "%s: size %llu is not a multiple of the "
                                   "block size", name, (unsigned long long)ws->size);
        uint64_t blocks = ws->size / ws->block_size, total = 0;
        if (ws->n_runs > MIN(blocks, WS_MAX_RUNS))
                return vmsnap_diag(d, -EBADMSG, "%s: %zu runs is over the limit", name,
                                   ws->n_runs);
        for (size_t i = 0; i < ws->n_runs; i++) {
                const struct ws_run *r = &ws->runs[i];
                if (r->n_blocks == 0 || r->first_block >= blocks ||
                    r->n_blocks > blocks - r->first_block)
                        return vmsnap_diag(d, -EBADMSG, "%s: run %zu (%llu+%llu) is empty or "
                                           "outside %llu blocks", name, i,
                                           (unsigned long long)r->first_block,
                                           (unsigned long long)r->n_blocks,
                                           (unsigned long long)blocks);
                total += r->n_blocks;
        }
        if (total != ws->n_blocks)
                return vmsnap_diag(d, -EBADMSG, "%s: runs hold %llu blocks, count says %llu",
                                   name, (unsigned long long)total,
                                   (unsigned long long)ws->n_blocks);
        _cleanup_free_ struct ws_run *sorted = malloc(ws->n_runs * sizeof(*sorted) + 1);
        if (!sorted)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        if (ws->n_runs)
                memcpy(sorted, ws->runs, ws->n_runs * sizeof(*sorted));
        qsort(sorted, ws->n_runs, sizeof(*sorted), cmp_first);
        for (size_t i = 1; i < ws->n_runs; i++)
                if (sorted[i - 1].first_block + sorted[i - 1].n_blocks > sorted[i].first_block)
                        return vmsnap_diag(d, -EBADMSG, "%s: block %llu is in two runs", name,
                                           (unsigned long long)sorted[i].first_block);
        return 0;
}

/* Checks the fixed part and the length; fills the geometry of ws. */
static int parse_fixed(const uint8_t *buf, size_t len, const char *name, struct ws_set *ws,
                       struct vmsnap_diag *d)
{
        if (len < WS_FIXED_SIZE + WS_TRAILER || memcmp(buf, WS_MAGIC, 8) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: not a working-set file (bad magic or "
                                   "too short)", name);
        if (get32(buf + 8) != WS_VERSION)
                return vmsnap_diag(d, -EBADMSG, "%s: unsupported version %u", name,
                                   get32(buf + 8));
        if (get32(buf + 12) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: unknown flags 0x%x", name,
                                   get32(buf + 12));
        struct vmsnap_hash want;
        vmsnap_hash128(buf, len - WS_TRAILER, &want);
        if (memcmp(want.b, buf + len - WS_TRAILER, WS_TRAILER) != 0)
                return vmsnap_diag(d, -EBADMSG, "%s: checksum mismatch", name);
        ws->block_size = get64(buf + 16);
        ws->size = get64(buf + 24);
        memcpy(ws->build_id.b, buf + 32, 16);
        uint64_t n = get64(buf + 48);
        ws->n_blocks = get64(buf + 56);
        if (n > WS_MAX_RUNS || len != WS_FIXED_SIZE + n * WS_RUN_SIZE + WS_TRAILER)
                return vmsnap_diag(d, -EBADMSG, "%s: length %zu does not match %llu runs",
                                   name, len, (unsigned long long)n);
        ws->n_runs = (size_t)n;
        return 0;
}

int ws_parse(const uint8_t *buf, size_t len, const char *name, struct ws_set **ret,
             struct vmsnap_diag *d)
{
        _cleanup_free_ struct ws_set *ws = calloc(1, sizeof(*ws));
        if (!ws)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        int r = parse_fixed(buf, len, name, ws, d);
        if (r < 0)
                return r;
        ws->runs = malloc(ws->n_runs * sizeof(*ws->runs) + 1);
        if (!ws->runs)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", name);
        for (size_t i = 0; i < ws->n_runs; i++) {
                const uint8_t *p = buf + WS_FIXED_SIZE + i * WS_RUN_SIZE;
                ws->runs[i].first_block = get64(p);
                ws->runs[i].n_blocks = get64(p + 8);
        }
        r = check_set(ws, name, d);
        if (r < 0) {
                free(ws->runs);
                return r;
        }
        *ret = TAKE_PTR(ws);
        return 0;
}

int ws_serialize(const struct ws_set *ws, uint8_t **ret_buf, size_t *ret_len,
                 struct vmsnap_diag *d)
{
        int r = check_set(ws, VMSNAP_UFFD_WS_NAME, d);
        if (r < 0) {
                if (d)
                        d->err = -EINVAL;
                vmsnap_diag_prefix(d, "refusing to write an invalid working set");
                return -EINVAL;
        }
        size_t len = WS_FIXED_SIZE + ws->n_runs * WS_RUN_SIZE + WS_TRAILER;
        uint8_t *buf = calloc(1, len);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", VMSNAP_UFFD_WS_NAME);
        memcpy(buf, WS_MAGIC, 8);
        put32(buf + 8, WS_VERSION);
        put64(buf + 16, ws->block_size);
        put64(buf + 24, ws->size);
        memcpy(buf + 32, ws->build_id.b, 16);
        put64(buf + 48, ws->n_runs);
        put64(buf + 56, ws->n_blocks);
        for (size_t i = 0; i < ws->n_runs; i++) {
                uint8_t *p = buf + WS_FIXED_SIZE + i * WS_RUN_SIZE;
                put64(p, ws->runs[i].first_block);
                put64(p + 8, ws->runs[i].n_blocks);
        }
        struct vmsnap_hash h;
        vmsnap_hash128(buf, len - WS_TRAILER, &h);
        memcpy(buf + len - WS_TRAILER, h.b, WS_TRAILER);
        *ret_buf = buf;
        *ret_len = len;
        return 0;
}

int ws_load(const char *dir, uint64_t block_size, uint64_t size, struct ws_set **ret,
            struct vmsnap_diag *d)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", dir, strerror(-dfd));
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        int r = vmsnap_fs_read_file(dfd, VMSNAP_UFFD_WS_NAME, WS_FIXED_SIZE + WS_TRAILER +
                                                                      WS_MAX_RUNS * WS_RUN_SIZE,
                                    &buf, &len);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: cannot read: %s", dir, VMSNAP_UFFD_WS_NAME,
                                   strerror(-r));
        struct ws_set *ws;
        r = ws_parse(buf, len, VMSNAP_UFFD_WS_NAME, &ws, d);
        if (r < 0)
                return r;
        if (ws->block_size != block_size || ws->size != size) {
                r = vmsnap_diag(d, -EBADMSG, "%s: recorded for %llu bytes in %llu-byte "
                                "blocks, the snapshot has %llu in %llu-byte blocks",
                                VMSNAP_UFFD_WS_NAME, (unsigned long long)ws->size,
                                (unsigned long long)ws->block_size, (unsigned long long)size,
                                (unsigned long long)block_size);
                ws_free(ws);
                return r;
        }
        *ret = ws;
        return 0;
}

int ws_save(const char *dir, const struct ws_set *ws, struct vmsnap_diag *d)
{
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        int r = ws_serialize(ws, &buf, &len, d);
        if (r < 0)
                return r;
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", dir, strerror(-dfd));
        r = vmsnap_fs_atomic_write(dfd, VMSNAP_UFFD_WS_NAME, buf, len, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "%s", dir);
        return 0;
}

int ws_recorder_init(struct ws_recorder *rec, uint64_t block_size, uint64_t size,
                     const struct vmsnap_uuid *build_id)
{
        memset(rec, 0, sizeof(*rec));
        pthread_mutex_init(&rec->mu, NULL);
        rec->set.block_size = block_size;
        rec->set.size = size;
        rec->set.build_id = *build_id;
        uint64_t blocks = size / block_size;
        rec->seen = calloc((size_t)((blocks + 63) / 64), sizeof(uint64_t));
        return rec->seen ? 0 : -ENOMEM;
}

void ws_recorder_free(struct ws_recorder *rec)
{
        if (!rec->seen && !rec->set.runs)
                return;
        free(rec->seen);
        free(rec->set.runs);
        pthread_mutex_destroy(&rec->mu);
        memset(rec, 0, sizeof(*rec));
}

/* Appends block b: extends the last run when b follows it, else starts a new run. */
static int record_block(struct ws_recorder *rec, uint64_t b)
{
        struct ws_set *s = &rec->set;
        if (s->n_runs && s->runs[s->n_runs - 1].first_block + s->runs[s->n_runs - 1].n_blocks == b) {
                s->runs[s->n_runs - 1].n_blocks++;
                s->n_blocks++;
                return 0;
        }
        if (s->n_runs >= WS_MAX_RUNS)
                return -E2BIG;
        if (s->n_runs == rec->cap) {
                size_t cap = rec->cap ? rec->cap * 2 : 256;
                struct ws_run *p = realloc(s->runs, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                s->runs = p;
                rec->cap = cap;
        }
        s->runs[s->n_runs++] = (struct ws_run){b, 1};
        s->n_blocks++;
        return 0;
}

int ws_recorder_add(struct ws_recorder *rec, uint64_t offset, uint64_t len)
{
        if (!rec->seen || len == 0)
                return 0;
        uint64_t bs = rec->set.block_size, blocks = rec->set.size / bs;
        uint64_t b = offset / bs, end = MIN((offset + len + bs - 1) / bs, blocks);
        int r = 0;
        pthread_mutex_lock(&rec->mu);
        for (; b < end && r == 0; b++) {
                uint64_t bit = 1ull << (b % 64);
                if (rec->seen[b / 64] & bit)
                        continue;
                r = record_block(rec, b);
                if (r == 0)
                        rec->seen[b / 64] |= bit;
        }
        pthread_mutex_unlock(&rec->mu);
        return r;
}

int ws_recorder_copy(struct ws_recorder *rec, struct ws_set **ret)
{
        struct ws_set *ws = calloc(1, sizeof(*ws));
        if (!ws)
                return -ENOMEM;
        pthread_mutex_lock(&rec->mu);
        *ws = rec->set;
        ws->runs = malloc(rec->set.n_runs * sizeof(*ws->runs) + 1);
        if (ws->runs && rec->set.n_runs)
                memcpy(ws->runs, rec->set.runs, rec->set.n_runs * sizeof(*ws->runs));
        pthread_mutex_unlock(&rec->mu);
        if (!ws->runs) {
                free(ws);
                return -ENOMEM;
        }
        *ret = ws;
        return 0;
}
