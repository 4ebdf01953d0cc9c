/* libnftables: run one batch (a single transaction) or list the tables, in the network
 * namespace of the calling thread. Errors carry nft's own message. */
#include "net/internal.h"

#include <errno.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <string.h>

static struct nft_ctx *ctx_new(void)
{
        struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
        if (!ctx)
                return NULL;
        if (nft_ctx_buffer_output(ctx) < 0 || nft_ctx_buffer_error(ctx) < 0) {
                nft_ctx_free(ctx);
                return NULL;
        }
        return ctx;
}

/* nft's error text, first line only (the rest repeats the batch). */
static void first_line(const char *text, char *out, size_t size)
{
        size_t n = strcspn(text ? text : "", "\n");
        if (n >= size)
                n = size - 1;
        memcpy(out, text ? text : "", n);
        out[n] = '\0';
}

int net_nft_run(const char *batch, const char *what, struct vmsnap_diag *d)
{
        if (!batch)
                return vmsnap_diag(d, -ENOMEM, "nftables %s: out of memory", what);
        struct nft_ctx *ctx = ctx_new();
        if (!ctx)
                return vmsnap_diag(d, -ENOMEM, "nftables %s: cannot make a context", what);
        int r = 0;
        if (nft_run_cmd_from_buffer(ctx, batch) != 0) {
                char msg[512];
                first_line(nft_ctx_get_error_buffer(ctx), msg, sizeof(msg));
                r = vmsnap_diag(d, -EIO, "nftables %s: %s", what, msg[0] ? msg : "failed");
        }
        nft_ctx_free(ctx);
        return r;
}

/* "table <family> <name>" lines of `list tables` become "<family> <name>" entries. */
static int parse_tables(const char *out, char ***ret, size_t *ret_n)
{
        char **names = NULL;
        size_t n = 0;
        for (const char *line = out; line && *line;) {
                size_t len = strcspn(line, "\n");
                char family[16], name[272];
                char buf[300];
                snprintf(buf, sizeof(buf), "%.*s", (int)(len < 299 ? len : 299), line);
                if (sscanf(buf, "table %15s %271s", family, name) == 2) {
                        char entry[300];
                        snprintf(entry, sizeof(entry), "%s %s", family, name);
                        if (net_strv_push(&names, &n, entry) < 0) {
                                net_strv_free(names);
                                return -ENOMEM;
                        }
                }
                line += len + (line[len] == '\n');
        }
        *ret = names;
        *ret_n = n;
        return 0;
}

int net_nft_tables(char ***ret_names, size_t *ret_n, struct vmsnap_diag *d)
{
        struct nft_ctx *ctx = ctx_new();
        if (!ctx)
                return vmsnap_diag(d, -ENOMEM, "nftables: cannot make a context");
        int r = 0;
        if (nft_run_cmd_from_buffer(ctx, "list tables") != 0) {
                char msg[512];
                first_line(nft_ctx_get_error_buffer(ctx), msg, sizeof(msg));
                r = vmsnap_diag(d, -EIO, "nftables list tables: %s", msg);
        } else if (parse_tables(nft_ctx_get_output_buffer(ctx), ret_names, ret_n) < 0) {
                r = vmsnap_diag(d, -ENOMEM, "nftables list tables: out of memory");
        }
        nft_ctx_free(ctx);
        return r;
}
