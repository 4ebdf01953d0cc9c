/* Fuzz target: the migration-stream splitter (src/vmm/qemu-stream.c) on any bytes taken for
 * the stream a VMM writes (hostile after a guest escape). It must return 0, -EPROTO or
 * -ETIMEDOUT-free errno results, never write the memory file beyond its size, and never
 * read outside its buffers (ASan). The input goes through a memfd, as a pipe's would. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/qemu-internal.h"

#define MEM_SIZE (1u << 20) /* the seeds' "mem" block */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        int in = memfd_create("stream", MFD_CLOEXEC);
        int snap = memfd_create("snapfile", MFD_CLOEXEC);
        int mem = memfd_create("memory", MFD_CLOEXEC);
        if (in < 0 || snap < 0 || mem < 0 || (size && write(in, data, size) != (ssize_t)size) ||
            lseek(in, 0, SEEK_SET) != 0)
                abort();
        struct vmsnap_diag d = {0};
        int r = qemu_stream_split(in, snap, mem, MEM_SIZE, "mem", 10000, &d);
        struct stat st;
        if (r != 0 && r != -EPROTO)
                abort();
        if (fstat(mem, &st) < 0 || st.st_size != MEM_SIZE)
                abort(); /* sized once, never grown by a page beyond it */
        close(in);
        close(snap);
        close(mem);
        return 0;
}
