/* Sandbox networking (docs/network.md "In vmsnapd"): the sandbox layer's side of src/net/.
 * One row per sandbox that holds a network (table sandbox_net: its slot of the pool and its
 * egress policy), written before the network is built and deleted after it is gone, so that
 * the allocator never hands out a held slot and recovery knows every id that may own one. */
#include "sandbox/internal.h"
#include "util/cleanup.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char net_schema[] =
        "CREATE TABLE IF NOT EXISTS sandbox_net (\n"
        "  id TEXT PRIMARY KEY,\n"
        "  host TEXT NOT NULL,\n"
        "  sandbox TEXT NOT NULL,\n"
        "  prefix INTEGER NOT NULL,\n"
        "  egress TEXT NOT NULL\n"
        ");\n"
        /* The network of the sandbox a template was made from: its egress text, or "none".
         * Written before the template's store commit (keyed by the pending snapshot id), so
         * a template never exists without it; a row whose template is gone is dropped at
         * host open. */
        "CREATE TABLE IF NOT EXISTS template_net (\n"
        "  snapshot TEXT PRIMARY KEY,\n"
        "  egress TEXT NOT NULL\n"
        ");\n";

static void finalize(sqlite3_stmt **st)
{
        sqlite3_finalize(*st);
}
#define _cleanup_stmt_ __attribute__((cleanup(finalize)))

int net_schema_create(struct vmsnap_host *h, struct vmsnap_diag *d)
{
        char *err = NULL;
        if (sqlite3_exec(h->db, net_schema, NULL, NULL, &err) != SQLITE_OK) {
                int r = vmsnap_diag(d, -EIO, "vmsnap.db: sandbox_net table: %s",
                                    err ? err : "?");
                sqlite3_free(err);
                return r;
        }
        return 0;
}

/* "allow", "deny" or "a/b,c/d" (what vmsnap_net_egress_parse reads back). */
static void egress_format(const struct vmsnap_net_egress *e, char *out, size_t size)
{
        if (e->kind != VMSNAP_NET_EGRESS_CIDRS) {
                snprintf(out, size, "%s", e->kind == VMSNAP_NET_EGRESS_DENY ? "deny" : "allow");
                return;
        }
        size_t n = 0;
        out[0] = '\0';
        for (size_t i = 0; i < e->n_cidrs && n < size; i++) {
                char c[VMSNAP_CIDR_STRLEN];
                vmsnap_cidr_format(&e->cidrs[i], c);
                n += (size_t)snprintf(out + n, size - n, "%s%s", i ? "," : "", c);
        }
}

#define EGRESS_TEXT_LEN (VMSNAP_NET_EGRESS_MAX * VMSNAP_CIDR_STRLEN + 8)

/* Reads one row into ret; -ENOENT without one. Called with the db lock held. */
static int net_row_get(struct vmsnap_host *h, const char *id, struct vmsnap_sandbox_net *ret,
                       struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db,
                               "SELECT host, sandbox, prefix, egress FROM sandbox_net WHERE id=?",
                               -1, &st, NULL) != SQLITE_OK)
                return vmsnap_diag(d, -EIO, "vmsnap.db: %s", sqlite3_errmsg(h->db));
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return -ENOENT;
        memset(ret, 0, sizeof(*ret));
        const char *host = (const char *)sqlite3_column_text(st, 0);
        const char *sb = (const char *)sqlite3_column_text(st, 1);
        const char *eg = (const char *)sqlite3_column_text(st, 3);
        ret->on = true;
        ret->addrs.prefix = (uint8_t)sqlite3_column_int(st, 2);
        if (!host || !sb || !eg || inet_pton(AF_INET, host, &ret->addrs.host) != 1 ||
            inet_pton(AF_INET, sb, &ret->addrs.sandbox) != 1 ||
            vmsnap_net_egress_parse(eg, &ret->egress, NULL) < 0)
                return vmsnap_diag(d, -EBADMSG, "vmsnap.db: sandbox_net row of %s is damaged", id);
        return 0;
}

/* Every held slot (db lock held): *ret malloc'd. */
static int held_slots(struct vmsnap_host *h, struct vmsnap_net_addrs **ret, size_t *ret_n,
                      struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db, "SELECT id FROM sandbox_net", -1, &st, NULL) != SQLITE_OK)
                return vmsnap_diag(d, -EIO, "vmsnap.db: %s", sqlite3_errmsg(h->db));
        struct vmsnap_net_addrs *v = NULL;
        size_t n = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
                struct vmsnap_sandbox_net one;
                const char *id = (const char *)sqlite3_column_text(st, 0);
                if (!id || net_row_get(h, id, &one, NULL) < 0)
                        continue; /* a damaged row: its slot is unknown */
                struct vmsnap_net_addrs *nv = realloc(v, (n + 1) * sizeof(*v));
                if (!nv) {
                        free(v);
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
                }
                v = nv;
                v[n++] = one.addrs;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static int net_row_insert(struct vmsnap_host *h, const char *id, const struct vmsnap_net_addrs *a,
                          const struct vmsnap_net_egress *e, struct vmsnap_diag *d)
{
        char host[INET_ADDRSTRLEN], sb[INET_ADDRSTRLEN], eg[EGRESS_TEXT_LEN];
        inet_ntop(AF_INET, &a->host, host, sizeof(host));
        inet_ntop(AF_INET, &a->sandbox, sb, sizeof(sb));
        egress_format(e, eg, sizeof(eg));
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db,
                               "INSERT INTO sandbox_net (id, host, sandbox, prefix, egress) "
                               "VALUES (?, ?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK)
                return vmsnap_diag(d, -EIO, "vmsnap.db: %s", sqlite3_errmsg(h->db));
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, host, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, sb, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, a->prefix);
        sqlite3_bind_text(st, 5, eg, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return vmsnap_diag(d, -EIO, "vmsnap.db: sandbox_net insert: %s",
                                   sqlite3_errmsg(h->db));
        return 0;
}

static void net_row_delete(struct vmsnap_host *h, const char *id)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db, "DELETE FROM sandbox_net WHERE id=?", -1, &st, NULL) ==
            SQLITE_OK) {
                sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
                sqlite3_step(st);
        }
}

int net_alloc(struct vmsnap_host *h, const struct vmsnap_sandbox *sb,
              const struct vmsnap_sandbox_spec *spec, struct vmsnap_diag *d)
{
        if (!h->net_on || (spec && spec->no_network))
                return 0;
        struct vmsnap_net_egress e = {.kind = VMSNAP_NET_EGRESS_ALLOW};
        if (spec && spec->egress)
                e = *spec->egress;
        pthread_mutex_lock(&h->db_lock);
        _cleanup_free_ struct vmsnap_net_addrs *held = NULL;
        size_t n = 0;
        struct vmsnap_net_addrs a;
        int r = held_slots(h, &held, &n, d);
        if (r == 0)
                r = vmsnap_net_alloc(&h->net, held, n, &a, d);
        if (r == -ENOSPC)
                r = vmsnap_diag(d, -EADDRNOTAVAIL,
                                "the network pool is used up: every address is held by a "
                                "sandbox (paused ones too); destroy one or use a larger "
                                "--net-pool");
        if (r == 0)
                r = net_row_insert(h, sb->id, &a, &e, d);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int net_prepare(struct vmsnap_host *h, const struct vmsnap_sandbox *sb, struct spec_buf *buf,
                struct vmsnap_vm_spec *spec, struct vmsnap_diag *d)
{
        struct vmsnap_sandbox_net n;
        if (!h->net_on)
                return 0;
        pthread_mutex_lock(&h->db_lock);
        int r = net_row_get(h, sb->id, &n, d);
        pthread_mutex_unlock(&h->db_lock);
        if (r == -ENOENT)
                return 0; /* no network ("none", or made before --network) */
        if (r < 0)
                return r;
        if (!spec->jail)
                return vmsnap_diag(d, -EPERM, "sandbox %s has a network; its VMM must be jailed",
                                   sb->id);
        /* Paused sandboxes keep their namespace; it is gone only after a host reboot. */
        if (!vmsnap_net_exists(&h->net, sb->id)) {
                struct vmsnap_net_spec ns = {.id = sb->id, .addrs = n.addrs, .egress = n.egress,
                                             .tap_uid = sb->jail_uid};
                r = vmsnap_net_create(&h->net, &ns, d);
                if (r < 0)
                        return r;
        }
        r = vmsnap_net_netns_path(&h->net, sb->id, buf->netns_path, sizeof(buf->netns_path), d);
        if (r < 0)
                return r;
        buf->jail.netns_path = buf->netns_path;
        spec->net = true;
        return 0;
}

void net_release(struct vmsnap_host *h, const char *id)
{
        if (!h->net_on)
                return;
        struct vmsnap_diag d = {0};
        if (vmsnap_net_destroy(&h->net, id, &d) < 0) {
                fprintf(stderr, "sandbox %s: network teardown: %s\n", id, d.msg);
                return; /* the row stays: recovery tries again */
        }
        pthread_mutex_lock(&h->db_lock);
        net_row_delete(h, id);
        pthread_mutex_unlock(&h->db_lock);
}

int net_template_record(struct vmsnap_host *h, const char *sandbox_id, const char *snapshot_id,
                        struct vmsnap_diag *d)
{
        if (!h->net_on)
                return 0; /* no row: a spawn gets the host's default */
        struct vmsnap_sandbox_net n;
        char eg[EGRESS_TEXT_LEN] = "none";
        int r = net_row_get(h, sandbox_id, &n, d);
        if (r == 0)
                egress_format(&n.egress, eg, sizeof(eg));
        else if (r != -ENOENT)
                return r;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db,
                               "INSERT OR REPLACE INTO template_net (snapshot, egress) "
                               "VALUES (?, ?)",
                               -1, &st, NULL) != SQLITE_OK)
                return vmsnap_diag(d, -EIO, "vmsnap.db: %s", sqlite3_errmsg(h->db));
        sqlite3_bind_text(st, 1, snapshot_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, eg, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return vmsnap_diag(d, -EIO, "vmsnap.db: template_net insert: %s",
                                   sqlite3_errmsg(h->db));
        return 0;
}

int net_template_policy(struct vmsnap_host *h, const char *snapshot_id, bool *ret_none,
                        struct vmsnap_net_egress *ret, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        pthread_mutex_lock(&h->db_lock);
        int r = sqlite3_prepare_v2(h->db, "SELECT egress FROM template_net WHERE snapshot=?", -1,
                                   &st, NULL) == SQLITE_OK
                        ? 0
                        : vmsnap_diag(d, -EIO, "vmsnap.db: %s", sqlite3_errmsg(h->db));
        if (r == 0) {
                sqlite3_bind_text(st, 1, snapshot_id, -1, SQLITE_STATIC);
                r = sqlite3_step(st) == SQLITE_ROW ? 0 : -ENOENT;
        }
        const char *eg = r == 0 ? (const char *)sqlite3_column_text(st, 0) : NULL;
        *ret_none = false;
        if (r == 0 && eg && strcmp(eg, "none") == 0)
                *ret_none = true;
        else if (r == 0 && (!eg || vmsnap_net_egress_parse(eg, ret, NULL) < 0))
                r = vmsnap_diag(d, -EBADMSG, "vmsnap.db: template_net row of %s is damaged",
                                snapshot_id);
        pthread_mutex_unlock(&h->db_lock);
        return r;
}

int net_recover(struct vmsnap_host *h, struct vmsnap_diag *d)
{
        if (!h->net_on)
                return 0;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        pthread_mutex_lock(&h->db_lock);
        /* Templates deleted since (or never committed): their policy rows go. */
        sqlite3_exec(h->db,
                     "DELETE FROM template_net WHERE snapshot NOT IN (SELECT id FROM snapshots)",
                     NULL, NULL, NULL);
        int r = sqlite3_prepare_v2(h->db,
                                   "SELECT n.id, s.state FROM sandbox_net n LEFT JOIN sandboxes "
                                   "s ON s.id = n.id",
                                   -1, &st, NULL) == SQLITE_OK
                        ? 0
                        : vmsnap_diag(d, -EIO, "vmsnap.db: %s", sqlite3_errmsg(h->db));
        char (*ids)[VMSNAP_ID_LEN + 1] = NULL;
        bool *dead = NULL;
        size_t n = 0;
        while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
                const char *id = (const char *)sqlite3_column_text(st, 0);
                const char *state = (const char *)sqlite3_column_text(st, 1);
                void *ni = realloc(ids, (n + 1) * sizeof(*ids));
                void *nd = ni ? realloc(dead, (n + 1) * sizeof(*dead)) : NULL;
                if (ni)
                        ids = ni;
                if (nd)
                        dead = nd;
                if (!ni || !nd) {
                        r = vmsnap_diag(d, -ENOMEM, "out of memory");
                        break;
                }
                snprintf(ids[n], sizeof(ids[n]), "%s", id ? id : "");
                dead[n++] = !state || strcmp(state, "stopped") == 0;
        }
        pthread_mutex_unlock(&h->db_lock);
        for (size_t i = 0; r == 0 && i < n; i++)
                if (dead[i]) /* destroyed (or never made) while the daemon died */
                        net_release(h, ids[i]);
        const char **known = r == 0 ? calloc(n + 1, sizeof(*known)) : NULL;
        size_t k = 0;
        for (size_t i = 0; known && i < n; i++)
                if (!dead[i])
                        known[k++] = ids[i];
        if (r == 0 && !known)
                r = vmsnap_diag(d, -ENOMEM, "out of memory");
        if (r == 0) /* what a crash mid-create or mid-destroy left of unknown ids */
                r = vmsnap_net_sweep(&h->net, known, k, NULL, d);
        free(known);
        free(ids);
        free(dead);
        return r;
}

int vmsnap_sandbox_network(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox_net *ret,
                           struct vmsnap_diag *d)
{
        struct vmsnap_sandbox sb;
        memset(ret, 0, sizeof(*ret));
        pthread_mutex_lock(&h->db_lock);
        int r = row_resolve(h, ref, &sb, d);
        if (r == 0) {
                r = net_row_get(h, sb.id, ret, d);
                if (r == -ENOENT) {
                        memset(ret, 0, sizeof(*ret));
                        r = 0;
                }
        }
        pthread_mutex_unlock(&h->db_lock);
        return r;
}
