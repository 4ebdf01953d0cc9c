/* The index schema and its migrations. PRAGMA user_version counts the migrations that ran;
 * each runs once, in order, inside one BEGIN IMMEDIATE transaction with the version bump, so
 * two processes opening a new store at once cannot both migrate. Append, never edit: a later
 * layer (sandboxes) adds its tables and redefines the snapshot_dependents view in a new
 * entry. Schema documented in docs/store.md. */
#include "store/internal.h"

#include <errno.h>
#include <stdio.h>

static const char *const migrations[] = {
    /* 1: snapshots and the dependency view */
    "CREATE TABLE snapshots (\n"
    "  id            TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),\n"
    "  name          TEXT UNIQUE,\n"
    "  kind          TEXT NOT NULL CHECK (kind IN ('pause', 'template')),\n"
    "  state         TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'deleting')),\n"
    "  parent_id     TEXT,\n"
    "  template_id   TEXT,\n"
    "  vmm           TEXT NOT NULL DEFAULT '',\n"
    "  vmm_version   TEXT NOT NULL DEFAULT '',\n"
    "  vcpus         INTEGER NOT NULL DEFAULT 0,\n"
    "  memory        INTEGER NOT NULL DEFAULT 0,\n"
    "  generation    INTEGER NOT NULL DEFAULT 0,\n"
    "  created       INTEGER NOT NULL,\n"
    "  last_accessed INTEGER NOT NULL,\n"
    "  state_changed INTEGER NOT NULL,\n"
    "  size_bytes    INTEGER NOT NULL DEFAULT 0,\n"
    "  description   TEXT NOT NULL DEFAULT '',\n"
    "  labels        TEXT NOT NULL DEFAULT '{}'\n"
    ") STRICT;\n"
    "CREATE INDEX snapshots_parent ON snapshots(parent_id);\n"
    "CREATE INDEX snapshots_template ON snapshots(template_id);\n"
    "CREATE INDEX snapshots_state ON snapshots(state, last_accessed);\n"
    "CREATE VIEW snapshot_dependents(snapshot_id, kind, dependent_id, label) AS\n"
    "  SELECT parent_id, 'child snapshot', id, coalesce(name, '') FROM snapshots\n"
    "   WHERE parent_id IS NOT NULL AND state != 'deleting'\n"
    "  UNION ALL\n"
    "  SELECT template_id, 'snapshot spawned from template', id, coalesce(name, '')\n"
    "    FROM snapshots WHERE template_id IS NOT NULL AND state != 'deleting';\n",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

static int user_version(struct vmsnap_store *s, int *ret, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s, "PRAGMA user_version", &st, d);
        if (r < 0)
                return r;
        if (sqlite3_step(st) != SQLITE_ROW)
                return store_sql_error(s, sqlite3_errcode(s->db), "reading the schema version", d);
        *ret = sqlite3_column_int(st, 0);
        return 0;
}

int store_schema_migrate(struct vmsnap_store *s, struct vmsnap_diag *d)
{
        int v = 0, r = user_version(s, &v, d);
        if (r < 0)
                return r;
        if (v == SCHEMA_VERSION)
                return 0; /* the common case: no write transaction at all */
        if ((r = store_tx_begin(s, d)) < 0)
                return r;
        if ((r = user_version(s, &v, d)) < 0)
                goto fail;
        if (v > SCHEMA_VERSION) {
                r = vmsnap_diag(d, -EPROTONOSUPPORT,
                                "%s/" STORE_DB_NAME ": schema version %d is newer than this "
                                "vmsnap knows (%d); upgrade vmsnap",
                                s->root, v, SCHEMA_VERSION);
                goto fail;
        }
        for (int i = v; i < SCHEMA_VERSION; i++)
                if ((r = store_exec(s, migrations[i], d)) < 0)
                        goto fail;
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION);
        if ((r = store_exec(s, sql, d)) < 0)
                goto fail;
        return store_tx_commit(s, d);
fail:
        store_tx_rollback(s);
        return r;
}
