/* The migration stream of a VM whose guest RAM is mapped private (share=off), split while
 * QEMU writes it: QEMU 7.2 cannot leave private RAM out of the stream (x-ignore-shared skips
 * only shared RAM), so every page record of the guest RAM block goes to its offset in a
 * memory file instead, and everything else is copied to the snapfile byte for byte. With
 * x-ignore-shared on, the RAM block list at the start is the same whether the block is
 * shared or not: the snapfile is then exactly what a save of the same VM mapped share=on
 * writes, and loads the same way. docs/sandbox.md "Clones that share memory" has the
 * stream's layout. The stream comes from the VMM: every length and offset is checked. */
#include "vmm/qemu-internal.h"

#include "util/cleanup.h"
#include "util/fs.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE           4096u
#define F_ZERO         0x02u
#define F_MEM_SIZE     0x04u
#define F_PAGE         0x08u
#define F_EOS          0x10u
#define F_CONTINUE     0x20u
#define SEC_START      0x01
#define SEC_PART       0x02
#define SEC_END        0x03
#define SEC_FOOTER     0x7e
#define RAM_SCAN_LIMIT 65536 /* the ram section starts within this many bytes */
#define MAX_BLOCKS     64

struct reader {
        int fd;
        int64_t deadline;
        size_t pos, len;
        uint64_t total;
        uint8_t buf[1 << 16];
};

struct writer {
        int fd;
        size_t len;
        uint8_t buf[1 << 16];
};

struct split {
        struct reader in;
        struct writer out;
        int mem_fd;
        uint64_t mem_size;
        const char *block;        /* the guest RAM block's name ("mem") */
        char last[256];           /* the block of the last page record */
        uint32_t ram_section;     /* section id of "ram" */
        bool seen_block;          /* the block list names the guest RAM block */
        struct vmsnap_diag *d;
};

/* Fills the reader; returns bytes now buffered, 0 at end of stream, or -errno. */
static ssize_t fill(struct reader *r)
{
        if (r->pos < r->len)
                return (ssize_t)(r->len - r->pos);
        r->pos = r->len = 0;
        for (;;) {
                int left = (int)(r->deadline - now_ms());
                struct pollfd p = {.fd = r->fd, .events = POLLIN};
                if (left <= 0)
                        return -ETIMEDOUT;
                int n = poll(&p, 1, left);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        continue;
                ssize_t got = read(r->fd, r->buf, sizeof(r->buf));
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return -errno;
                r->len = (size_t)got;
                r->total += (uint64_t)got;
                return got;
        }
}

static int flush_out(struct split *s)
{
        int r = s->out.len ? vmsnap_fs_write_full(s->out.fd, s->out.buf, s->out.len) : 0;
        s->out.len = 0;
        return r < 0 ? vmsnap_diag(s->d, r, "snapfile: %s", strerror(-r)) : 0;
}

static int emit(struct split *s, const void *p, size_t n)
{
        const uint8_t *b = p;
        while (n) {
                if (s->out.len == sizeof(s->out.buf)) {
                        int r = flush_out(s);
                        if (r < 0)
                                return r;
                }
                size_t k = MIN(n, sizeof(s->out.buf) - s->out.len);
                memcpy(s->out.buf + s->out.len, b, k);
                s->out.len += k, b += k, n -= k;
        }
        return 0;
}

/* Reads exactly n bytes into p (NULL: skips them); `keep` copies them to the snapfile. */
static int take(struct split *s, void *p, size_t n, bool keep)
{
        uint8_t *o = p;
        while (n) {
                ssize_t have = fill(&s->in);
                if (have <= 0)
                        return vmsnap_diag(s->d, have < 0 ? (int)have : -EPROTO,
                                           "migration stream: %s after %llu bytes",
                                           have < 0 ? strerror((int)-have) : "ends early",
                                           (unsigned long long)s->in.total);
                size_t k = MIN(n, (size_t)have);
                const uint8_t *src = s->in.buf + s->in.pos;
                if (keep && emit(s, src, k) < 0)
                        return -EIO;
                if (o)
                        memcpy(o, src, k), o += k;
                s->in.pos += k, n -= k;
        }
        return 0;
}

static int take_be(struct split *s, unsigned bytes, uint64_t *v, bool keep)
{
        uint8_t b[8];
        int r = take(s, b, bytes, keep);
        *v = 0;
        for (unsigned i = 0; r == 0 && i < bytes; i++)
                *v = *v << 8 | b[i];
        return r;
}

static int emit_be64(struct split *s, uint64_t v)
{
        uint8_t h[8];
        for (int i = 0; i < 8; i++)
                h[i] = (uint8_t)(v >> (56 - 8 * i));
        return emit(s, h, 8);
}

static int protocol(struct split *s, const char *what)
{
        return vmsnap_diag(s->d, -EPROTO, "migration stream: %s at byte %llu", what,
                           (unsigned long long)(s->in.total - (s->in.len - s->in.pos)));
}

/* Copies the header and configuration up to the ram section's start record and its
 * header, found as the exact bytes "\x01<id>\x03ram\0\0\0\0\0\0\0\x04" (QEMU writes
 * everything before it itself; the guest's bytes come only later). */
static int find_ram_start(struct split *s)
{
        static const uint8_t tail[] = {3, 'r', 'a', 'm', 0, 0, 0, 0, 0, 0, 0, 4};
        uint8_t win[5 + sizeof(tail)] = {0};
        for (size_t n = 0; n < RAM_SCAN_LIMIT; n++) {
                memmove(win, win + 1, sizeof(win) - 1);
                int r = take(s, &win[sizeof(win) - 1], 1, true);
                if (r < 0)
                        return r;
                if (n + 1 >= sizeof(win) && win[0] == SEC_START &&
                    memcmp(win + 5, tail, sizeof(tail)) == 0) {
                        s->ram_section = (uint32_t)win[1] << 24 | (uint32_t)win[2] << 16 |
                                         (uint32_t)win[3] << 8 | win[4];
                        return 0;
                }
        }
        return protocol(s, "no ram section");
}

/* A block name (u8 length + bytes), kept. */
static int take_name(struct split *s, char out[256], bool keep)
{
        uint64_t len;
        int r = take_be(s, 1, &len, keep);
        if (r == 0)
                r = take(s, out, len, keep);
        if (r == 0)
                out[len] = '\0';
        return r;
}

/* The MEM_SIZE record: every RAM block's name, length and (x-ignore-shared) address. */
static int take_block_list(struct split *s, uint64_t total)
{
        uint64_t sum = 0;
        for (int n = 0; sum < total; n++) {
                char name[256];
                uint64_t len = 0, addr = 0;
                int r = n < MAX_BLOCKS ? take_name(s, name, true) : protocol(s, "too many blocks");
                if (r == 0)
                        r = take_be(s, 8, &len, true);
                if (r == 0)
                        r = take_be(s, 8, &addr, true);
                if (r < 0)
                        return r;
                if (strcmp(name, s->block) == 0 && len != s->mem_size)
                        return protocol(s, "guest RAM block of the wrong size");
                s->seen_block |= strcmp(name, s->block) == 0;
                if (len > total - sum)
                        return protocol(s, "RAM block list longer than its total");
                sum += len;
        }
        return 0;
}

/* One page record whose header (offset|flags) was read but not yet copied. */
static int page_record(struct split *s, uint64_t hdr)
{
        uint64_t flags = hdr & (PAGE - 1), off = hdr & ~(uint64_t)(PAGE - 1);
        char name[256];
        int r = 0;
        if (!(flags & F_CONTINUE))
                r = take_name(s, name, false);
        else if (!s->last[0])
                return protocol(s, "continued page record without a block");
        if (r < 0)
                return r;
        if (!(flags & F_CONTINUE))
                memcpy(s->last, name, sizeof(name));
        bool ours = strcmp(s->last, s->block) == 0;
        uint8_t page[PAGE];
        uint64_t fill_byte = 0;
        if (flags & F_ZERO)
                r = take_be(s, 1, &fill_byte, false);
        else
                r = take(s, page, PAGE, false);
        if (r < 0)
                return r;
        if (!ours) { /* another block (firmware): the record goes on unchanged */
                uint8_t len = (uint8_t)strlen(s->last), b = (uint8_t)fill_byte;
                r = emit_be64(s, hdr);
                if (r == 0 && !(flags & F_CONTINUE))
                        r = emit(s, &len, 1) == 0 ? emit(s, s->last, len) : -EIO;
                if (r == 0)
                        r = (flags & F_ZERO) ? emit(s, &b, 1) : emit(s, page, PAGE);
                return r;
        }
        if (off >= s->mem_size)
                return protocol(s, "page beyond the guest's RAM");
        if ((flags & F_ZERO) && fill_byte == 0)
                return 0; /* the memory file starts as holes: nothing to write */
        if (flags & F_ZERO)
                memset(page, (int)fill_byte, PAGE);
        r = vmsnap_fs_pwrite_full(s->mem_fd, page, PAGE, off);
        return r < 0 ? vmsnap_diag(s->d, r, "memory file: %s", strerror(-r)) : 0;
}

/* The records of one ram section up to its EOS, then its footer. */
static int ram_records(struct split *s, bool start)
{
        for (;;) {
                uint64_t hdr;
                int r = take_be(s, 8, &hdr, false);
                if (r < 0)
                        return r;
                uint64_t flags = hdr & (PAGE - 1);
                if (flags == F_EOS)
                        return emit_be64(s, hdr);
                if (flags == F_MEM_SIZE && start) {
                        r = emit_be64(s, hdr);
                        if (r == 0)
                                r = take_block_list(s, hdr & ~(uint64_t)(PAGE - 1));
                } else if ((flags & ~(uint64_t)F_CONTINUE) == F_ZERO ||
                           (flags & ~(uint64_t)F_CONTINUE) == F_PAGE) {
                        r = page_record(s, hdr);
                } else {
                        return protocol(s, "unexpected RAM record flags");
                }
                if (r < 0)
                        return r;
        }
}

/* A section footer (0x7e + section id), copied. */
static int footer(struct split *s)
{
        uint64_t type, id;
        int r = take_be(s, 1, &type, true);
        if (r == 0)
                r = take_be(s, 4, &id, true);
        if (r == 0 && (type != SEC_FOOTER || id != s->ram_section))
                return protocol(s, "bad section footer");
        return r;
}

/* Everything after the ram sections (device state, the end), copied as it comes. */
static int copy_rest(struct split *s)
{
        for (;;) {
                ssize_t have = fill(&s->in);
                if (have < 0)
                        return vmsnap_diag(s->d, (int)have, "migration stream: %s",
                                           strerror((int)-have));
                if (have == 0)
                        return flush_out(s);
                int r = emit(s, s->in.buf + s->in.pos, (size_t)have);
                s->in.pos += (size_t)have;
                if (r < 0)
                        return r;
        }
}

static int run_split(struct split *s)
{
        int r = find_ram_start(s);
        if (r == 0)
                r = ram_records(s, true);
        if (r == 0 && !s->seen_block)
                r = protocol(s, "the RAM block list lacks the guest RAM block");
        if (r == 0)
                r = footer(s);
        while (r == 0) {
                uint64_t type, id;
                r = take_be(s, 1, &type, true);
                if (r == 0)
                        r = take_be(s, 4, &id, true);
                if (r == 0 && ((type != SEC_PART && type != SEC_END) || id != s->ram_section))
                        r = protocol(s, "a section before the end of RAM");
                if (r == 0)
                        r = ram_records(s, false);
                if (r == 0)
                        r = footer(s);
                if (r == 0 && type == SEC_END)
                        return copy_rest(s);
        }
        return r;
}

int qemu_stream_split(int in_fd, int snap_fd, int mem_fd, uint64_t mem_size, const char *block,
                      int timeout_ms, struct vmsnap_diag *d)
{
        _cleanup_free_ struct split *s = calloc(1, sizeof(*s));
        if (!s)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        s->in.fd = in_fd;
        s->in.deadline = now_ms() + timeout_ms;
        s->out.fd = snap_fd;
        s->mem_fd = mem_fd;
        s->mem_size = mem_size;
        s->block = block;
        s->d = d;
        if (ftruncate(mem_fd, (off_t)mem_size) < 0)
                return vmsnap_diag(d, -errno, "memory file: %s", strerror(errno));
        return run_split(s);
}
