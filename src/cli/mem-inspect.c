/* `vmsnap mem inspect`: a human (or JSON) summary of a memory snapshot. */
#include "cli/cli.h"
#include "util/ids.h"

#include <vmsnap/mem.h>

#include <jansson.h>
#include <stdlib.h>

struct summary {
        uint64_t zero_bytes, data_bytes;
        uint64_t *bytes_per_build; /* referenced bytes of each build */
};

static int summarize(const struct vmsnap_mem_header *h, struct summary *s)
{
        s->zero_bytes = s->data_bytes = 0;
        s->bytes_per_build = calloc(h->n_builds, sizeof(uint64_t));
        if (!s->bytes_per_build)
                return -1;
        for (uint64_t i = 0; i < h->n_extents; i++) {
                const struct vmsnap_mem_extent *e = &h->extents[i];
                if (e->build == VMSNAP_MEM_ZERO) {
                        s->zero_bytes += e->length;
                } else {
                        s->data_bytes += e->length;
                        s->bytes_per_build[e->build] += e->length;
                }
        }
        return 0;
}

static void print_text(const char *dir, const struct vmsnap_mem_header *h,
                       const struct summary *s)
{
        char id[37], base[37];
        vmsnap_uuid_format(&h->build_id, id);
        vmsnap_uuid_format(&h->base_build_id, base);
        printf("snapshot     %s\n", dir);
        printf("format       v%u\n", h->version);
        printf("memory       %llu bytes (%.1f MiB), block size %llu\n",
               (unsigned long long)h->size, (double)h->size / 1048576.0,
               (unsigned long long)h->block_size);
        printf("generation   %llu\nbuild        %s\nbase build   %s\n",
               (unsigned long long)h->generation, id, base);
        printf("extents      %llu\n", (unsigned long long)h->n_extents);
        printf("zero         %llu bytes (%.1f%%)\n", (unsigned long long)s->zero_bytes,
               100.0 * (double)s->zero_bytes / (double)h->size);
        printf("data         %llu bytes\n", (unsigned long long)s->data_bytes);
        printf("builds       %u\n", h->n_builds);
        for (uint32_t i = 0; i < h->n_builds; i++) {
                vmsnap_uuid_format(&h->builds[i].id, id);
                printf("  %s  file %llu bytes, referenced %llu bytes\n", id,
                       (unsigned long long)h->builds[i].file_size,
                       (unsigned long long)s->bytes_per_build[i]);
        }
}

static void print_json(const char *dir, const struct vmsnap_mem_header *h,
                       const struct summary *s)
{
        char id[37], base[37];
        vmsnap_uuid_format(&h->build_id, id);
        vmsnap_uuid_format(&h->base_build_id, base);
        json_t *builds = json_array();
        for (uint32_t i = 0; i < h->n_builds; i++) {
                char bid[37];
                vmsnap_uuid_format(&h->builds[i].id, bid);
                json_array_append_new(builds,
                                      json_pack("{s:s, s:I, s:I}", "id", bid, "file_size",
                                                (json_int_t)h->builds[i].file_size,
                                                "referenced_bytes",
                                                (json_int_t)s->bytes_per_build[i]));
        }
        json_t *o = json_pack("{s:s, s:i, s:I, s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:o}",
                              "snapshot", dir, "version", (int)h->version, "size",
                              (json_int_t)h->size, "block_size", (json_int_t)h->block_size,
                              "generation", (json_int_t)h->generation, "build_id", id,
                              "base_build_id", base, "extents", (json_int_t)h->n_extents,
                              "zero_bytes", (json_int_t)s->zero_bytes, "data_bytes",
                              (json_int_t)s->data_bytes, "builds", builds);
        json_dumpf(o, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(o);
}

int cmd_mem_inspect(const char *dir, bool json)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *snap;
        if (vmsnap_mem_open(dir, &snap, &d) < 0) {
                fprintf(stderr, "vmsnap mem inspect: %s\n", d.msg);
                return CLI_FAIL;
        }
        const struct vmsnap_mem_header *h = vmsnap_mem_header(snap);
        struct summary s;
        int r = summarize(h, &s);
        if (r == 0 && json)
                print_json(dir, h, &s);
        else if (r == 0)
                print_text(dir, h, &s);
        free(s.bytes_per_build);
        vmsnap_mem_close(snap);
        return r == 0 ? CLI_OK : CLI_FAIL;
}
