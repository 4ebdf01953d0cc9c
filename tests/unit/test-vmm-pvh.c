/* The PVH entry-note reader (src/vmm/pvh.c) on ELF images built here: the entry of a good
 * kernel-shaped ELF (4- and 8-byte notes, the note after others, in the second PT_NOTE),
 * and every hostile shape refused with the right error and without reading out of bounds
 * (ASan watches): truncation at every length, notes and segments running past their ends,
 * offsets that overflow, too many program headers, a 64-bit entry, other ELF classes and
 * machines. The file reader: a real file, a symlink (refused), a directory, and the guest
 * image's own vmlinux when guest/build.sh extracted one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/pvh.h"

#define ENTRY 0x1000850u

struct img {
        uint8_t b[4096];
        size_t len;
};

/* Appends one note (name with its NUL, desc) at the end of im; returns its offset. */
static size_t put_note(struct img *im, const char *name, uint32_t type, const void *desc,
                       uint32_t descsz)
{
        size_t at = im->len, nsz = strlen(name) + 1;
        uint32_t h[3] = {(uint32_t)nsz, descsz, type};
        memcpy(im->b + at, h, 12);
        memcpy(im->b + at + 12, name, nsz);
        size_t nal = (nsz + 3) & ~(size_t)3;
        memcpy(im->b + at + 12 + nal, desc, descsz);
        im->len = at + 12 + nal + ((descsz + 3u) & ~3u);
        return at;
}

/* An x86-64 ELF executable with two PT_NOTE segments: the first holds a GNU note, the
 * second Xen notes ending with the PVH entry (descsz 4 or 8). */
static void make_elf(struct img *im, uint32_t descsz)
{
        memset(im, 0, sizeof(*im));
        Elf64_Ehdr *e = (Elf64_Ehdr *)im->b;
        memcpy(e->e_ident, ELFMAG, SELFMAG);
        e->e_ident[EI_CLASS] = ELFCLASS64;
        e->e_ident[EI_DATA] = ELFDATA2LSB;
        e->e_ident[EI_VERSION] = EV_CURRENT;
        e->e_type = ET_EXEC;
        e->e_machine = EM_X86_64;
        e->e_version = EV_CURRENT;
        e->e_phoff = sizeof(Elf64_Ehdr);
        e->e_phentsize = sizeof(Elf64_Phdr);
        e->e_phnum = 3;
        e->e_ehsize = sizeof(Elf64_Ehdr);
        Elf64_Phdr *ph = (Elf64_Phdr *)(im->b + e->e_phoff);
        im->len = e->e_phoff + 3 * sizeof(Elf64_Phdr);
        ph[0] = (Elf64_Phdr){.p_type = PT_LOAD, .p_offset = 0, .p_filesz = 64};
        size_t n1 = im->len;
        put_note(im, "GNU", 3, "0123456789abcdef0123", 20);
        ph[1] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = n1, .p_filesz = im->len - n1};
        size_t n2 = im->len;
        put_note(im, "Xen", 6, "linux", 6);
        uint8_t desc[16] = {0};
        uint64_t entry = ENTRY;
        memcpy(desc, &entry, sizeof(entry));
        put_note(im, "Xen", PVH_NOTE_TYPE, desc, descsz);
        ph[2] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = n2, .p_filesz = im->len - n2};
}

static Elf64_Phdr *phdr(struct img *im, int i)
{
        return (Elf64_Phdr *)(im->b + sizeof(Elf64_Ehdr)) + i;
}

static int entry_of(const struct img *im, uint32_t *entry)
{
        return vmm_pvh_entry_buf(im->b, im->len, entry);
}

static void test_good(void **state)
{
        (void)state;
        struct img im;
        uint32_t entry = 0;
        make_elf(&im, 4);
        assert_int_equal(entry_of(&im, &entry), 0);
        assert_int_equal(entry, ENTRY);
        make_elf(&im, 8); /* Debian's kernels: a zero-extended .quad */
        entry = 0;
        assert_int_equal(entry_of(&im, &entry), 0);
        assert_int_equal(entry, ENTRY);
}

static void test_no_note(void **state)
{
        (void)state;
        struct img im;
        uint32_t entry;
        make_elf(&im, 4);
        phdr(&im, 2)->p_type = PT_LOAD; /* the Xen notes are no longer a note segment */
        assert_int_equal(entry_of(&im, &entry), -ENOENT);
        make_elf(&im, 4);
        memcpy(im.b + phdr(&im, 2)->p_offset + 12, "Xe!", 3); /* not Xen's */
        size_t last = im.len - 20;
        memcpy(im.b + last + 12, "Xe!", 3);
        assert_int_equal(entry_of(&im, &entry), -ENOENT);
}

static void test_truncated(void **state)
{
        (void)state;
        struct img im;
        uint32_t entry;
        make_elf(&im, 4);
        for (size_t n = 0; n < im.len; n++) {
                int r = vmm_pvh_entry_buf(im.b, n, &entry);
                assert_true(r == -ENOEXEC || r == -EBADMSG);
        }
}

static void test_not_elf64_x86(void **state)
{
        (void)state;
        struct img im;
        uint32_t entry;
        make_elf(&im, 4);
        im.b[EI_CLASS] = ELFCLASS32;
        assert_int_equal(entry_of(&im, &entry), -ENOEXEC);
        make_elf(&im, 4);
        im.b[EI_DATA] = ELFDATA2MSB;
        assert_int_equal(entry_of(&im, &entry), -ENOEXEC);
        make_elf(&im, 4);
        ((Elf64_Ehdr *)im.b)->e_machine = EM_AARCH64;
        assert_int_equal(entry_of(&im, &entry), -ENOEXEC);
        make_elf(&im, 4);
        ((Elf64_Ehdr *)im.b)->e_type = ET_DYN;
        assert_int_equal(entry_of(&im, &entry), -ENOEXEC);
        make_elf(&im, 4);
        im.b[1] = 'X';
        assert_int_equal(entry_of(&im, &entry), -ENOEXEC);
}

static void test_program_headers(void **state)
{
        (void)state;
        struct img im;
        uint32_t entry;
        Elf64_Ehdr *e = (Elf64_Ehdr *)im.b;
        make_elf(&im, 4);
        e->e_phnum = PVH_MAX_PHDRS + 1;
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        e->e_phnum = 0;
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        e->e_phentsize = 32;
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        e->e_phoff = UINT64_MAX - 8; /* offset + table size overflows */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        e->e_phoff = 8; /* inside the ELF header */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        e->e_phoff = im.len; /* past the end */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
}

static void test_segments(void **state)
{
        (void)state;
        struct img im;
        uint32_t entry;
        make_elf(&im, 4);
        phdr(&im, 2)->p_filesz += 4; /* runs past the end of the image */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        phdr(&im, 2)->p_offset = UINT64_MAX - 2;
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        phdr(&im, 2)->p_filesz = PVH_MAX_NOTE_BYTES + 1ull;
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        phdr(&im, 2)->p_filesz -= 2; /* the last note is cut short */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
}

/* A note header inside segment 2 (the first Xen note), patched. */
static void patch_note(struct img *im, int word, uint32_t v)
{
        memcpy(im->b + phdr(im, 2)->p_offset + 4 * (size_t)word, &v, 4);
}

static void test_notes(void **state)
{
        (void)state;
        struct img im;
        uint32_t entry;
        make_elf(&im, 4);
        patch_note(&im, 0, 0xfffffffdu); /* namesz: rounding up must not wrap */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        patch_note(&im, 1, 0xffffffffu); /* descsz past the segment */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        /* the PVH note itself: wrong sizes, a 64-bit or zero address */
        for (uint32_t descsz = 0; descsz <= 12; descsz++) {
                if (descsz == 4 || descsz == 8)
                        continue;
                make_elf(&im, descsz);
                assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        }
        make_elf(&im, 8);
        im.b[im.len - 1] = 1; /* the high half of the quad */
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
        make_elf(&im, 4);
        memset(im.b + im.len - 4, 0, 4);
        assert_int_equal(entry_of(&im, &entry), -EBADMSG);
}

static void test_file(void **state)
{
        (void)state;
        char dir[] = "/tmp/vmsnap-pvh.XXXXXX", path[64], link[64];
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/vmlinux", dir);
        snprintf(link, sizeof(link), "%s/link", dir);
        struct img im;
        make_elf(&im, 8);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(im.b, 1, im.len, f), im.len);
        fclose(f);
        struct vmsnap_diag d = {0};
        uint32_t entry = 0;
        assert_int_equal(vmm_pvh_entry_file(path, &entry, &d), 0);
        assert_int_equal(entry, ENTRY);
        assert_int_equal(symlink(path, link), 0);
        assert_int_equal(vmm_pvh_entry_file(link, &entry, &d), -ELOOP);
        assert_non_null(strstr(d.msg, link));
        assert_int_equal(vmm_pvh_entry_file(dir, &entry, &d), -EINVAL);
        assert_int_equal(truncate(path, (off_t)im.len - 3), 0);
        assert_int_equal(vmm_pvh_entry_file(path, &entry, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "malformed ELF"));
        unlink(link);
        unlink(path);
        rmdir(dir);
}

/* The guest image's vmlinux (guest/build.sh extracts it), when there is one. */
static void test_guest_vmlinux(void **state)
{
        (void)state;
        const char *g = getenv("VMSNAP_GUEST_DIR");
        char path[4096];
        snprintf(path, sizeof(path), "%s/vmlinux", g ? g : "");
        if (!g || access(path, R_OK) < 0) {
                print_message("no %s: the real kernel is not checked here\n", path);
                return;
        }
        struct vmsnap_diag d = {0};
        uint32_t entry = 0;
        assert_int_equal(vmm_pvh_entry_file(path, &entry, &d), 0);
        print_message("%s: PVH entry 0x%x\n", path, entry);
        assert_true(entry > 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_good),           cmocka_unit_test(test_no_note),
            cmocka_unit_test(test_truncated),      cmocka_unit_test(test_not_elf64_x86),
            cmocka_unit_test(test_program_headers), cmocka_unit_test(test_segments),
            cmocka_unit_test(test_notes),          cmocka_unit_test(test_file),
            cmocka_unit_test(test_guest_vmlinux),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
