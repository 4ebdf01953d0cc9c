/* The cluster schema and its versioned migrations (docs/cluster.md §2). Each migration runs
 * in one transaction under an advisory lock (hosts starting together migrate once); a
 * migration interrupted anywhere leaves the database at the previous version. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cluster/internal.h"
#include "util/cleanup.h"

void (*cluster_test_hook)(const char *point);

/* Advisory lock key of migrations: "vmsnap" in ASCII. */
#define MIGRATION_LOCK "126883155145840"

static const char *const migration_1[] = {
        "CREATE TABLE hosts ("
        " id text PRIMARY KEY,"
        " endpoint text NOT NULL,"
        " vcpus integer NOT NULL CHECK (vcpus > 0),"
        " memory_mib bigint NOT NULL CHECK (memory_mib > 0),"
        " disk_mib bigint NOT NULL CHECK (disk_mib >= 0),"
        " state text NOT NULL CHECK (state IN ('alive', 'lost')),"
        " epoch bigint NOT NULL,"
        " heartbeat_at timestamptz NOT NULL,"
        " registered_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE templates ("
        " id text PRIMARY KEY,"
        " name text UNIQUE,"
        " vcpus integer NOT NULL CHECK (vcpus > 0),"
        " memory_mib bigint NOT NULL CHECK (memory_mib > 0),"
        " object_key text)",
        "CREATE TABLE host_templates ("
        " host_id text NOT NULL REFERENCES hosts(id),"
        " template_id text NOT NULL,"
        " PRIMARY KEY (host_id, template_id))",
        "CREATE SEQUENCE lease_tokens",
        "CREATE TABLE sandboxes ("
        " id text PRIMARY KEY,"
        " host_id text NOT NULL REFERENCES hosts(id),"
        " state text NOT NULL CHECK (state IN ('creating', 'running', 'pausing', 'paused',"
        "  'resuming', 'stopping', 'stopped', 'error', 'lost')),"
        " template_id text,"
        " vcpus integer NOT NULL CHECK (vcpus > 0),"
        " memory_mib bigint NOT NULL CHECK (memory_mib > 0),"
        " disk_mib bigint NOT NULL CHECK (disk_mib >= 0),"
        " lease_host text REFERENCES hosts(id),"
        " lease_epoch bigint,"
        " lease_token bigint NOT NULL DEFAULT 0,"
        " lease_op text,"
        " created_at timestamptz NOT NULL DEFAULT now(),"
        " updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE INDEX sandboxes_host ON sandboxes (host_id)",
};

/* 2: the pause snapshot a paused sandbox's guest is in, once it is in the remote store (a
 * resume on another host adopts it: docs/cluster.md §6.5). */
static const char *const migration_2[] = {
        "ALTER TABLE sandboxes ADD COLUMN pause_snapshot text",
};

struct migration {
        const char *const *statements;
        size_t count;
};

static const struct migration migrations[] = {
        { migration_1, ARRAY_SIZE(migration_1) },
        { migration_2, ARRAY_SIZE(migration_2) },
};

int vmsnap_cluster_schema_latest(void)
{
        return (int)ARRAY_SIZE(migrations);
}

/* Reads the newest applied version inside the current transaction (or outside one). */
static int read_version(struct vmsnap_cluster *c, int *ret_version, struct vmsnap_diag *d)
{
        PGresult *res = NULL;
        int r = cluster_query(c, "read schema version",
                              "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
                              &res, d);
        if (r < 0)
                return r;
        *ret_version = (int)cluster_i64(res, 0, 0);
        PQclear(res);
        return 0;
}

int vmsnap_cluster_schema_version(struct vmsnap_cluster *c, int *ret_version,
                                  struct vmsnap_diag *d)
{
        if (!c || !ret_version)
                return vmsnap_diag(d, -EINVAL, "cluster schema version: no connection");
        return read_version(c, ret_version, d);
}

/* Runs migration number version (1-based) and records it, all in the open transaction. */
static int apply(struct vmsnap_cluster *c, int version, struct vmsnap_diag *d)
{
        const struct migration *m = &migrations[version - 1];
        char what[64], v[16];

        for (size_t i = 0; i < m->count; i++) {
                snprintf(what, sizeof(what), "migration %d, statement %zu", version, i + 1);
                int r = cluster_query(c, what, m->statements[i], 0, NULL, NULL, d);
                if (r < 0)
                        return r;
                snprintf(what, sizeof(what), "migration.%d.%zu", version, i + 1);
                if (cluster_test_hook)
                        cluster_test_hook(what);
        }
        snprintf(v, sizeof(v), "%d", version);
        const char *params[] = { v };
        return cluster_query(c, "record migration",
                             "INSERT INTO schema_migrations (version) VALUES ($1::integer)", 1,
                             params, NULL, d);
}

/* Applies the next pending migration, if any, in one transaction. Sets *ret_done when the
 * schema is current. */
static int migrate_one(struct vmsnap_cluster *c, bool *ret_done, struct vmsnap_diag *d)
{
        int version = 0, latest = vmsnap_cluster_schema_latest();
        int r = cluster_begin(c, d);
        if (r < 0)
                return r;
        r = cluster_query(c, "lock migrations", "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")",
                          0, NULL, NULL, d);
        if (r >= 0)
                r = cluster_query(c, "create schema_migrations",
                                  "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                  " version integer PRIMARY KEY,"
                                  " applied_at timestamptz NOT NULL DEFAULT now())",
                                  0, NULL, NULL, d);
        if (r >= 0)
                r = read_version(c, &version, d);
        if (r >= 0 && version > latest)
                r = vmsnap_diag(d, -EPROTONOSUPPORT,
                                "cluster database: schema version %d is newer than this build "
                                "knows (%d): upgrade vmsnap",
                                version, latest);
        if (r >= 0 && version < latest)
                r = apply(c, version + 1, d);
        if (r < 0) {
                cluster_rollback(c);
                return r;
        }
        *ret_done = version >= latest;
        return cluster_commit(c, "commit migration", d);
}

int cluster_migrate(struct vmsnap_cluster *c, struct vmsnap_diag *d)
{
        bool done = false;
        int r = 0;

        while (r >= 0 && !done)
                r = migrate_one(c, &done, d);
        return r;
}
