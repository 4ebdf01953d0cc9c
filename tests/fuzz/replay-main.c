/* Replays a fuzz target over every file of a corpus directory (used when not building with
 * libFuzzer), so the committed seeds and past crashes run as a regression test. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
        if (argc != 2) {
                fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
                return 2;
        }
        DIR *dir = opendir(argv[1]);
        if (!dir) {
                fprintf(stderr, "%s: no corpus directory; skipping\n", argv[1]);
                return 77;
        }
        int dirfd_ = dirfd(dir), count = 0;
        struct dirent *e;
        while ((e = readdir(dir))) {
                if (e->d_name[0] == '.')
                        continue;
                uint8_t *buf;
                size_t len;
                if (vmsnap_fs_read_file(dirfd_, e->d_name, 64u << 20, &buf, &len) < 0) {
                        fprintf(stderr, "%s: cannot read\n", e->d_name);
                        closedir(dir);
                        return 1;
                }
                LLVMFuzzerTestOneInput(buf, len);
                free(buf);
                count++;
        }
        closedir(dir);
        printf("replayed %d inputs from %s\n", count, argv[1]);
        return count > 0 ? 0 : 1;
}
