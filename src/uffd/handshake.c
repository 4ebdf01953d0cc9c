/* Firecracker's UFFD handshake (see handshake.h). The JSON is what serde writes for
 * `GuestRegionUffdMapping`; its fields changed over FC releases, so every generation is read:
 *   v1.1–v1.6   {base_host_virt_addr, size, offset}                 (4 KiB pages only)
 *   v1.7–v1.11  + page_size_kib   (bytes, despite the name)
 *   v1.12+      + page_size       (page_size_kib kept, deprecated)
 * Unknown fields are ignored so that additions do not break restores. */
#include "uffd/handshake.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads an optional non-negative integer field. Returns 1 when present, 0 when absent,
 * -EPROTO (with d) when present but not a non-negative integer. */
static int get_u64(json_t *obj, size_t idx, const char *key, uint64_t *ret,
                   struct vmsnap_diag *d)
{
        json_t *v = json_object_get(obj, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return vmsnap_diag(d, -EPROTO, "handshake region %zu: %s is not a "
                                   "non-negative integer", idx, key);
        *ret = (uint64_t)json_integer_value(v);
        return 1;
}

/* page_size_kib carries bytes in every FC release; a value that can only be KiB (4, 2048)
 * is accepted too, since FC's own docs describe the field that way. */
static uint64_t kib_field_bytes(uint64_t v)
{
        if (v == 4)
                return UFFD_PAGE_4K;
        if (v == 2048)
                return UFFD_PAGE_2M;
        return v;
}

/* Resolves the page size of region idx from whichever fields the VMM sent. */
static int region_page_size(json_t *obj, size_t idx, uint64_t *ret, struct vmsnap_diag *d)
{
        uint64_t ps = 0, kib = 0;
        int has_ps = get_u64(obj, idx, "page_size", &ps, d);
        if (has_ps < 0)
                return has_ps;
        int has_kib = get_u64(obj, idx, "page_size_kib", &kib, d);
        if (has_kib < 0)
                return has_kib;
        if (has_kib)
                kib = kib_field_bytes(kib);
        if (has_ps && has_kib && ps != kib)
                return vmsnap_diag(d, -EPROTO, "handshake region %zu: page_size %llu and "
                                   "page_size_kib %llu disagree", idx,
                                   (unsigned long long)ps, (unsigned long long)kib);
        *ret = has_ps ? ps : has_kib ? kib : UFFD_PAGE_4K;
        if (*ret != UFFD_PAGE_4K && *ret != UFFD_PAGE_2M)
                return vmsnap_diag(d, -EPROTO, "handshake region %zu: page size %llu is "
                                   "neither 4096 nor 2097152", idx, (unsigned long long)*ret);
        return 0;
}

static int parse_region(json_t *obj, size_t idx, struct uffd_region *r, struct vmsnap_diag *d)
{
        static const char *const required[] = {"base_host_virt_addr", "size", "offset"};
        uint64_t *dst[] = {&r->base, &r->size, &r->offset};
        if (!json_is_object(obj))
                return vmsnap_diag(d, -EPROTO, "handshake region %zu is not an object", idx);
        for (size_t i = 0; i < ARRAY_SIZE(required); i++) {
                int k = get_u64(obj, idx, required[i], dst[i], d);
                if (k < 0)
                        return k;
                if (k == 0)
                        return vmsnap_diag(d, -EPROTO, "handshake region %zu: missing %s",
                                           idx, required[i]);
        }
        json_t *memfd = json_object_get(obj, "is_guest_memfd");
        if (memfd && json_is_true(memfd))
                return vmsnap_diag(d, -EPROTO, "handshake region %zu: guest_memfd regions "
                                   "(FC secret hiding) are not supported", idx);
        int k = region_page_size(obj, idx, &r->page_size, d);
        if (k < 0)
                return k;
        uint64_t ps = r->page_size;
        if (r->size == 0 || r->size % ps || r->base % ps || r->offset % ps)
                return vmsnap_diag(d, -EPROTO, "handshake region %zu: base 0x%llx, size %llu "
                                   "and offset %llu must be non-zero multiples of the page "
                                   "size %llu", idx, (unsigned long long)r->base,
                                   (unsigned long long)r->size, (unsigned long long)r->offset,
                                   (unsigned long long)ps);
        if (r->base + r->size < r->base || r->offset + r->size < r->offset)
                return vmsnap_diag(d, -EPROTO, "handshake region %zu overflows", idx);
        return 0;
}

static int cmp_base(const void *a, const void *b)
{
        const struct uffd_region *x = a, *y = b;
        return x->base < y->base ? -1 : x->base > y->base;
}

int uffd_handshake_parse(const char *buf, size_t len, struct uffd_region **ret,
                         size_t *ret_n, struct vmsnap_diag *d)
{
        json_error_t jerr;
        json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return vmsnap_diag(d, -EPROTO, "handshake is not JSON: %s (at byte %d)",
                                   jerr.text, jerr.position);
        int r = 0;
        size_t n = json_is_array(root) ? json_array_size(root) : 0;
        _cleanup_free_ struct uffd_region *regions = NULL;
        if (!json_is_array(root) || n == 0 || n > UFFD_MAX_REGIONS) {
                r = vmsnap_diag(d, -EPROTO, "handshake must be a JSON array of 1 to %u "
                                "regions", UFFD_MAX_REGIONS);
                goto out;
        }
        regions = calloc(n, sizeof(*regions));
        if (!regions) {
                r = vmsnap_diag(d, -ENOMEM, "handshake: out of memory");
                goto out;
        }
        for (size_t i = 0; i < n && r == 0; i++)
                r = parse_region(json_array_get(root, i), i, &regions[i], d);
        if (r < 0)
                goto out;
        qsort(regions, n, sizeof(*regions), cmp_base);
        for (size_t i = 1; i < n; i++)
                if (regions[i - 1].base + regions[i - 1].size > regions[i].base) {
                        r = vmsnap_diag(d, -EPROTO, "handshake regions at 0x%llx and 0x%llx "
                                        "overlap", (unsigned long long)regions[i - 1].base,
                                        (unsigned long long)regions[i].base);
                        goto out;
                }
        *ret = TAKE_PTR(regions);
        *ret_n = n;
out:
        json_decref(root);
        return r;
}

int uffd_regions_fit(const struct uffd_region *r, size_t n, uint64_t mem_size,
                     uint64_t block_size, struct vmsnap_diag *d)
{
        for (size_t i = 0; i < n; i++) {
                uint64_t unit = MAX(r[i].page_size, block_size);
                if (r[i].offset > mem_size || r[i].size > mem_size - r[i].offset)
                        return vmsnap_diag(d, -EPROTO, "region %zu [offset %llu, +%llu) lies "
                                           "outside the snapshot's %llu bytes", i,
                                           (unsigned long long)r[i].offset,
                                           (unsigned long long)r[i].size,
                                           (unsigned long long)mem_size);
                if (r[i].offset % unit || r[i].size % unit)
                        return vmsnap_diag(d, -EPROTO, "region %zu: offset %llu and size %llu "
                                           "must be multiples of %llu (page and block size)",
                                           i, (unsigned long long)r[i].offset,
                                           (unsigned long long)r[i].size,
                                           (unsigned long long)unit);
        }
        return 0;
}

/* Keeps the fds of one SCM_RIGHTS message; closes those beyond UFFD_MAX_FDS. */
static int take_rights(struct msghdr *msg, struct uffd_inbox *box)
{
        int r = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < n; i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (box->n_fds < UFFD_MAX_FDS)
                                box->fds[box->n_fds++] = fd;
                        else {
                                close(fd);
                                r = -EMSGSIZE;
                        }
                }
        }
        return r;
}

ssize_t uffd_inbox_recv(int sock, struct uffd_inbox *box)
{
        if (box->cap - box->len < 4096) {
                size_t cap = box->cap ? box->cap * 2 : 8192;
                if (cap > UFFD_MAX_MESSAGE + 1)
                        return -EMSGSIZE;
                char *p = realloc(box->data, cap);
                if (!p)
                        return -ENOMEM;
                box->data = p;
                box->cap = cap;
        }
        union {
                char buf[CMSG_SPACE(sizeof(int) * UFFD_MAX_FDS)];
                struct cmsghdr align;
        } ctl;
        struct iovec iov = {box->data + box->len, box->cap - box->len - 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                             .msg_controllen = sizeof(ctl.buf)};
        ssize_t n;
        do
                n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        int r = take_rights(&msg, box);
        if (r < 0 || (msg.msg_flags & MSG_CTRUNC))
                return -EMSGSIZE;
        box->len += (size_t)n;
        box->data[box->len] = '\0';
        return n;
}

int uffd_inbox_complete(const struct uffd_inbox *box, size_t *ret_len)
{
        size_t skip = 0;
        while (skip < box->len && strchr(" \t\r\n", box->data[skip]))
                skip++;
        if (skip == box->len)
                return 0;
        json_error_t jerr;
        json_t *v = json_loadb(box->data, box->len, JSON_DISABLE_EOF_CHECK, &jerr);
        if (!v)
                return json_error_code(&jerr) == json_error_premature_end_of_input ? 0
                                                                                   : -EBADMSG;
        json_decref(v);
        *ret_len = (size_t)jerr.position;
        return 1;
}

int uffd_inbox_take_fd(struct uffd_inbox *box)
{
        if (box->n_fds == 0)
                return -1;
        int fd = box->fds[0];
        memmove(box->fds, box->fds + 1, (box->n_fds - 1) * sizeof(int));
        box->n_fds--;
        return fd;
}

void uffd_inbox_consume(struct uffd_inbox *box, size_t len)
{
        len = MIN(len, box->len);
        memmove(box->data, box->data + len, box->len - len);
        box->len -= len;
        if (box->data)
                box->data[box->len] = '\0';
}

void uffd_inbox_clear(struct uffd_inbox *box)
{
        for (unsigned i = 0; i < box->n_fds; i++)
                close(box->fds[i]);
        free(box->data);
        memset(box, 0, sizeof(*box));
}

int uffd_peer_pid(int sock, pid_t *ret_pid)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        *ret_pid = cred.pid;
        return 0;
}

int uffd_check_fd(int fd)
{
        char path[64], target[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
                return -errno;
        target[n] = '\0';
        if (strcmp(target, "anon_inode:[userfaultfd]") != 0)
                return -EBADF;
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0)
                return -errno;
        if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}
