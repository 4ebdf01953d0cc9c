/* The PVH entry note of a vmlinux ELF (pvh.h). Only the ELF header, the program headers and
 * the PT_NOTE segments are read, each bounded; nothing of the file is trusted. */
#include "vmm/pvh.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t le32(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, 4);
        return le32toh(v);
}

/* The ELF header: an x86-64 executable or -ENOEXEC; its program header table in bounds of
 * PVH_MAX_PHDRS or -EBADMSG. */
static int check_ehdr(const Elf64_Ehdr *e)
{
        if (memcmp(e->e_ident, ELFMAG, SELFMAG) != 0 || e->e_ident[EI_CLASS] != ELFCLASS64 ||
            e->e_ident[EI_DATA] != ELFDATA2LSB || le16toh(e->e_machine) != EM_X86_64 ||
            le16toh(e->e_type) != ET_EXEC)
                return -ENOEXEC;
        uint16_t n = le16toh(e->e_phnum);
        if (le16toh(e->e_phentsize) != sizeof(Elf64_Phdr) || n == 0 || n > PVH_MAX_PHDRS)
                return -EBADMSG;
        uint64_t off = le64toh(e->e_phoff);
        if (off < sizeof(*e) || off > UINT64_MAX - (uint64_t)n * sizeof(Elf64_Phdr))
                return -EBADMSG;
        return 0;
}

/* Walks the notes of one PT_NOTE segment (len bytes). Returns 0 and *entry when the PVH note
 * is there, -ENOENT when not, -EBADMSG when a note runs past the segment or is malformed. */
static int find_note(const uint8_t *p, size_t len, uint32_t *entry)
{
        size_t at = 0;
        while (len - at >= 12) {
                uint64_t namesz = le32(p + at), descsz = le32(p + at + 4);
                uint32_t type = le32(p + at + 8);
                uint64_t name_al = (namesz + 3) & ~3ull, desc_al = (descsz + 3) & ~3ull;
                if (name_al + desc_al > len - at - 12)
                        return -EBADMSG;
                const uint8_t *name = p + at + 12, *desc = name + name_al;
                if (namesz == 4 && memcmp(name, "Xen", 4) == 0 && type == PVH_NOTE_TYPE) {
                        /* .long in upstream Linux, a zero-extended .quad in some builds */
                        if (descsz != 4 && descsz != 8)
                                return -EBADMSG;
                        if (descsz == 8 && le32(desc + 4) != 0)
                                return -EBADMSG; /* not a 32-bit address */
                        *entry = le32(desc);
                        return *entry ? 0 : -EBADMSG;
                }
                at += 12 + name_al + desc_al;
        }
        return at == len ? -ENOENT : -EBADMSG;
}

int vmm_pvh_entry(pvh_read_fn read, void *ctx, uint32_t *entry)
{
        Elf64_Ehdr e;
        int r = read(ctx, 0, &e, sizeof(e));
        if (r < 0)
                return r == -EBADMSG ? -ENOEXEC : r; /* shorter than an ELF header */
        if ((r = check_ehdr(&e)) < 0)
                return r;
        uint16_t n = le16toh(e.e_phnum);
        Elf64_Phdr ph[PVH_MAX_PHDRS];
        if ((r = read(ctx, le64toh(e.e_phoff), ph, n * sizeof(Elf64_Phdr))) < 0)
                return r;
        uint8_t *buf = malloc(PVH_MAX_NOTE_BYTES);
        if (!buf)
                return -ENOMEM;
        r = -ENOENT;
        for (uint16_t i = 0; i < n && r == -ENOENT; i++) {
                if (le32toh(ph[i].p_type) != PT_NOTE)
                        continue;
                uint64_t off = le64toh(ph[i].p_offset), size = le64toh(ph[i].p_filesz);
                if (size > PVH_MAX_NOTE_BYTES || off > UINT64_MAX - size)
                        r = -EBADMSG;
                else if ((r = read(ctx, off, buf, size)) == 0)
                        r = find_note(buf, size, entry);
        }
        free(buf);
        return r;
}

struct mem {
        const uint8_t *p;
        size_t len;
};

static int mem_read(void *ctx, uint64_t off, void *buf, size_t len)
{
        const struct mem *m = ctx;
        if (off > m->len || len > m->len - off)
                return -EBADMSG;
        memcpy(buf, m->p + off, len);
        return 0;
}

int vmm_pvh_entry_buf(const void *buf, size_t len, uint32_t *entry)
{
        struct mem m = {buf, len};
        return vmm_pvh_entry(mem_read, &m, entry);
}

static int fd_read(void *ctx, uint64_t off, void *buf, size_t len)
{
        int fd = *(const int *)ctx;
        size_t done = 0;
        if (off > (uint64_t)INT64_MAX - len)
                return -EBADMSG;
        while (done < len) {
                ssize_t k = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EBADMSG; /* past the end of the file */
                done += (size_t)k;
        }
        return 0;
}

int vmm_pvh_entry_file(const char *path, uint32_t *entry, struct vmsnap_diag *d)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        struct stat st;
        int r = fstat(fd, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EINVAL;
        if (r == 0)
                r = vmm_pvh_entry(fd_read, &fd, entry);
        close(fd);
        switch (r) {
        case 0:
                return 0;
        case -ENOEXEC:
                return vmsnap_diag(d, r, "%s: not an x86-64 ELF executable (a vmlinux)", path);
        case -EBADMSG:
                return vmsnap_diag(d, r, "%s: malformed ELF (a header, offset or note out of "
                                   "bounds)", path);
        case -ENOENT:
                return vmsnap_diag(d, r, "%s: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): "
                                   "the kernel was built without CONFIG_PVH", path);
        case -EINVAL:
                return vmsnap_diag(d, r, "%s: not a regular file", path);
        default:
                return vmsnap_diag(d, r, "%s: %s", path, strerror(-r));
        }
}
