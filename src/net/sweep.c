/* Recovery: remove every object of this module whose sandbox id the caller does not know
 * (a daemon killed mid-create or mid-destroy). Objects are found by their names alone. */
#include "net/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/cleanup.h"

static bool in_list(const char *const *list, size_t n, const char *s)
{
        for (size_t i = 0; i < n; i++)
                if (list[i] && strcmp(list[i], s) == 0)
                        return true;
        return false;
}

/* Adds id to *orphans unless known or already there. */
static int add_orphan(char ***orphans, size_t *n, const char *const *known, size_t n_known,
                      const char *id)
{
        if (net_id_check(id, NULL) < 0 || in_list(known, n_known, id) ||
            in_list((const char *const *)*orphans, *n, id))
                return 0;
        return net_strv_push(orphans, n, id);
}

static int orphans_from_pins(const char *dir, const char *const *known, size_t n_known,
                             char ***orphans, size_t *n, struct vmsnap_diag *d)
{
        char **ids = NULL;
        size_t n_ids = 0;
        int r = net_ns_list(dir, &ids, &n_ids, d);
        for (size_t i = 0; r == 0 && i < n_ids; i++)
                if (add_orphan(orphans, n, known, n_known, ids[i]) < 0)
                        r = vmsnap_diag(d, -ENOMEM, "network sweep: out of memory");
        net_strv_free(ids);
        return r;
}

static int orphans_from_tables(const char *const *known, size_t n_known, char ***orphans, size_t *n,
                               struct vmsnap_diag *d)
{
        char **tables = NULL;
        size_t n_tables = 0;
        int r = net_nft_tables(&tables, &n_tables, d);
        const char *prefix = "inet " NET_TABLE_PREFIX;
        for (size_t i = 0; r == 0 && i < n_tables; i++) {
                if (strncmp(tables[i], prefix, strlen(prefix)) != 0)
                        continue;
                if (add_orphan(orphans, n, known, n_known, tables[i] + strlen(prefix)) < 0)
                        r = vmsnap_diag(d, -ENOMEM, "network sweep: out of memory");
        }
        net_strv_free(tables);
        return r;
}

/* Host links named like ours that no known id owns. With our alias, the owner id joins the
 * orphans (its destroy removes the link); without one (a crash between the veth and the
 * host-links step, which sets it), the link is deleted by name. */
static int sweep_links(const char *const *known, size_t n_known, char ***orphans, size_t *n,
                       size_t *removed, struct vmsnap_diag *d)
{
        struct nl_sock *sk;
        int r = net_nl_open(&sk, d);
        if (r < 0)
                return r;
        char **names = NULL;
        size_t n_names = 0;
        r = net_link_list(sk, &names, &n_names, d);
        for (size_t i = 0; r == 0 && i < n_names; i++) {
                if (!net_is_link_name(names[i]))
                        continue;
                bool owned = false;
                for (size_t k = 0; k < n_known && !owned; k++) {
                        char link[IFNAMSIZ];
                        net_link_name(known[k], link);
                        owned = strcmp(link, names[i]) == 0;
                }
                if (owned)
                        continue;
                char *alias = NULL;
                int a = net_link_alias(sk, names[i], &alias, NULL);
                size_t plen = strlen(NET_ALIAS_PREFIX);
                if (a == 0 && alias && strncmp(alias, NET_ALIAS_PREFIX, plen) == 0)
                        r = add_orphan(orphans, n, known, n_known, alias + plen);
                else if (a == 0 && (r = net_link_delete(sk, names[i], d)) == 0)
                        ++*removed;
                free(alias);
        }
        net_strv_free(names);
        net_nl_close(sk);
        return r;
}

int vmsnap_net_sweep(const struct vmsnap_net_config *cfg, const char *const *known_ids,
                     size_t n_known, size_t *ret_removed, struct vmsnap_diag *d)
{
        struct vmsnap_net_config c;
        net_config_resolve(cfg, &c);
        int r = net_config_check(&c, d);
        if (r < 0)
                return r;
        if (n_known && !known_ids)
                return vmsnap_diag(d, -EINVAL, "network sweep: missing known ids");
        char **orphans = NULL;
        size_t n = 0, removed = 0;
        r = orphans_from_pins(c.netns_dir, known_ids, n_known, &orphans, &n, d);
        if (r == 0)
                r = orphans_from_tables(known_ids, n_known, &orphans, &n, d);
        if (r == 0)
                r = sweep_links(known_ids, n_known, &orphans, &n, &removed, d);
        for (size_t i = 0; r == 0 && i < n; i++) {
                r = vmsnap_net_destroy(&c, orphans[i], d);
                removed += r == 0;
        }
        net_strv_free(orphans);
        if (r < 0)
                return vmsnap_diag_prefix(d, "network sweep");
        if (ret_removed)
                *ret_removed = removed;
        return 0;
}
