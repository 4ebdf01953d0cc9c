/* Sandbox rows and the operation journal, in the store's SQLite database. Every function
 * here is called with the host's db_lock held. */
#include "sandbox/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void stmt_free(sqlite3_stmt **st)
{
        sqlite3_finalize(*st);
}
#define _cleanup_st_ __attribute__((cleanup(stmt_free)))

static const char schema[] =
        "CREATE TABLE IF NOT EXISTS sandboxes (\n"
        "  id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),\n"
        "  name TEXT UNIQUE,\n"
        "  state TEXT NOT NULL,\n"
        "  vmm TEXT NOT NULL,\n"
        "  vcpus INTEGER NOT NULL,\n"
        "  memory INTEGER NOT NULL,\n"
        "  template_id TEXT,\n"
        "  snapshot_id TEXT,\n"
        "  generation INTEGER NOT NULL DEFAULT 0,\n"
        "  pid INTEGER NOT NULL DEFAULT 0,\n"
        "  created INTEGER NOT NULL,\n"
        "  updated INTEGER NOT NULL,\n"
        "  last_active INTEGER NOT NULL,\n"
        "  idle_timeout INTEGER NOT NULL DEFAULT 0,\n"
        "  error TEXT NOT NULL DEFAULT '',\n"
        "  jail_uid INTEGER,\n"
        "  started INTEGER,\n"
        "  last_paused INTEGER);\n"
        "CREATE TABLE IF NOT EXISTS journal (\n"
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "  sandbox_id TEXT NOT NULL,\n"
        "  op TEXT NOT NULL,\n"
        "  step TEXT NOT NULL,\n"
        "  data TEXT NOT NULL DEFAULT '{}',\n"
        "  started INTEGER NOT NULL,\n"
        "  done INTEGER NOT NULL DEFAULT 0);\n"
        "CREATE INDEX IF NOT EXISTS journal_open ON journal(done, seq);\n";

/* What sandboxes add to the store's dependents view: a snapshot a sandbox stands on, and a
 * template a live sandbox was spawned from, cannot be deleted under it. */
static const char dependents_extra[] =
        " UNION ALL SELECT snapshot_id, 'sandbox state', id, coalesce(name, '')"
        " FROM sandboxes WHERE snapshot_id IS NOT NULL AND state != 'stopped'"
        " UNION ALL SELECT template_id, 'sandbox spawned from template', id,"
        " coalesce(name, '') FROM sandboxes WHERE template_id IS NOT NULL AND"
        " state != 'stopped'";

static int exec_sql(struct vmsnap_host *h, const char *sql, struct vmsnap_diag *d)
{
        char *err = NULL;
        if (sqlite3_exec(h->db, sql, NULL, NULL, &err) == SQLITE_OK)
                return 0;
        int r = vmsnap_diag(d, -EIO, "%s/vmsnap.db: %s", h->root, err ? err : "sql error");
        sqlite3_free(err);
        return r;
}

/* Appends our clauses to the store's view unless they are there already. */
static int extend_dependents_view(struct vmsnap_host *h, struct vmsnap_diag *d)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(h->db, "SELECT sql FROM sqlite_master WHERE type = 'view' AND "
                                  "name = 'snapshot_dependents'", -1, &st, NULL);
        if (!st || sqlite3_step(st) != SQLITE_ROW)
                return vmsnap_diag(d, -EIO, "%s/vmsnap.db: the store's dependents view is "
                                   "missing", h->root);
        const char *old = (const char *)sqlite3_column_text(st, 0);
        if (strstr(old, "FROM sandboxes"))
                return 0;
        size_t n = strlen(old);
        while (n > 0 && (old[n - 1] == ';' || old[n - 1] == '\n' || old[n - 1] == ' '))
                n--;
        _cleanup_free_ char *sql = NULL;
        if (asprintf(&sql, "BEGIN IMMEDIATE; DROP VIEW snapshot_dependents; %.*s%s; COMMIT;",
                     (int)n, old, dependents_extra) < 0)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = exec_sql(h, sql, d);
        if (r < 0)
                exec_sql(h, "ROLLBACK", NULL);
        return r;
}

/* True when the sandboxes table has `column` (a database made before it existed lacks it). */
static bool has_column(struct vmsnap_host *h, const char *column)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(h->db, "SELECT 1 FROM pragma_table_info('sandboxes') WHERE name = ?1",
                           -1, &st, NULL);
        sqlite3_bind_text(st, 1, column, -1, SQLITE_STATIC);
        return st && sqlite3_step(st) == SQLITE_ROW;
}

/* Adds column `def` ("name TYPE") unless the table has it. */
static int add_column(struct vmsnap_host *h, const char *name, const char *def,
                      struct vmsnap_diag *d)
{
        if (has_column(h, name))
                return 0;
        char sql[128];
        snprintf(sql, sizeof(sql), "ALTER TABLE sandboxes ADD COLUMN %s", def);
        return exec_sql(h, sql, d);
}

/* Migrations of databases made by older builds, each idempotent: jail_uid (issue 8), unique
 * among the sandboxes that hold one (a paused one too: it gets its uid back on resume);
 * started and last_paused (issue 15; NULL in old rows: not known). */
static int migrate(struct vmsnap_host *h, struct vmsnap_diag *d)
{
        int r = add_column(h, "jail_uid", "jail_uid INTEGER", d);
        if (r == 0)
                r = add_column(h, "started", "started INTEGER", d);
        if (r == 0)
                r = add_column(h, "last_paused", "last_paused INTEGER", d);
        if (r == 0)
                r = exec_sql(h, "CREATE UNIQUE INDEX IF NOT EXISTS sandboxes_jail_uid ON "
                                "sandboxes(jail_uid) WHERE jail_uid IS NOT NULL", d);
        return r;
}

int sandbox_schema(struct vmsnap_host *h, struct vmsnap_diag *d)
{
        int r = exec_sql(h, schema, d);
        if (r == 0)
                r = migrate(h, d);
        return r < 0 ? r : extend_dependents_view(h, d);
}

static const char *const state_names[] = {"creating", "running", "pausing", "paused",
                                          "resuming", "stopping", "stopped", "error"};

const char *vmsnap_sandbox_state_name(enum vmsnap_sandbox_state s)
{
        return (unsigned)s < 8 ? state_names[s] : "unknown";
}

static enum vmsnap_sandbox_state state_parse(const char *s)
{
        for (int i = 0; i < 8; i++)
                if (s && strcmp(s, state_names[i]) == 0)
                        return (enum vmsnap_sandbox_state)i;
        return VMSNAP_SANDBOX_ERROR;
}

static void copy_text(char *dst, size_t size, sqlite3_stmt *st, int col)
{
        const unsigned char *t = sqlite3_column_text(st, col);
        snprintf(dst, size, "%s", t ? (const char *)t : "");
}

#define ROW_COLUMNS                                                                                \
        "id, name, state, vmm, vcpus, memory, template_id, snapshot_id, generation, pid, "         \
        "created, updated, last_active, idle_timeout, error, jail_uid, started, last_paused"

static void row_read(sqlite3_stmt *st, struct vmsnap_sandbox *sb)
{
        memset(sb, 0, sizeof(*sb));
        copy_text(sb->id, sizeof(sb->id), st, 0);
        copy_text(sb->name, sizeof(sb->name), st, 1);
        sb->state = state_parse((const char *)sqlite3_column_text(st, 2));
        copy_text(sb->vmm, sizeof(sb->vmm), st, 3);
        sb->vcpus = (uint32_t)sqlite3_column_int64(st, 4);
        sb->memory = (uint64_t)sqlite3_column_int64(st, 5);
        copy_text(sb->template_id, sizeof(sb->template_id), st, 6);
        copy_text(sb->snapshot_id, sizeof(sb->snapshot_id), st, 7);
        sb->generation = (uint64_t)sqlite3_column_int64(st, 8);
        sb->pid = (pid_t)sqlite3_column_int64(st, 9);
        sb->created = sqlite3_column_int64(st, 10);
        sb->updated = sqlite3_column_int64(st, 11);
        sb->last_active = sqlite3_column_int64(st, 12);
        sb->idle_timeout = (uint32_t)sqlite3_column_int64(st, 13);
        copy_text(sb->error, sizeof(sb->error), st, 14);
        sb->jail_uid = (uint32_t)sqlite3_column_int64(st, 15); /* NULL reads as 0 */
        sb->started = sqlite3_column_int64(st, 16);
        sb->last_paused = sqlite3_column_int64(st, 17);
}

static int query_one(struct vmsnap_host *h, const char *sql, const char *arg,
                     struct vmsnap_sandbox *ret)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db, sql, -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return -EIO;
        row_read(st, ret);
        return sqlite3_step(st) == SQLITE_ROW ? -ENOTUNIQ : 0;
}

int row_get(struct vmsnap_host *h, const char *id, struct vmsnap_sandbox *ret,
            struct vmsnap_diag *d)
{
        int r = query_one(h, "SELECT " ROW_COLUMNS " FROM sandboxes WHERE id = ?1", id, ret);
        if (r == -ENOENT)
                return vmsnap_diag(d, r, "no sandbox %s", id);
        return r < 0 ? vmsnap_diag(d, r, "%s/vmsnap.db: %s", h->root, sqlite3_errmsg(h->db)) : 0;
}

/* Lists the ids a prefix matches (for the ambiguity message). */
static void list_candidates(struct vmsnap_host *h, const char *prefix, char *out, size_t size)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        out[0] = '\0';
        sqlite3_prepare_v2(h->db, "SELECT id FROM sandboxes WHERE id LIKE ?1 || '%' "
                                  "ORDER BY id LIMIT 10", -1, &st, NULL);
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_TRANSIENT);
        while (st && sqlite3_step(st) == SQLITE_ROW) {
                size_t n = strlen(out);
                snprintf(out + n, size - n, "%s%s", n ? ", " : "", sqlite3_column_text(st, 0));
        }
}

int row_resolve(struct vmsnap_host *h, const char *ref, struct vmsnap_sandbox *ret,
                struct vmsnap_diag *d)
{
        if (!ref || !*ref)
                return vmsnap_diag(d, -EINVAL, "empty sandbox reference");
        int r = query_one(h, "SELECT " ROW_COLUMNS " FROM sandboxes WHERE id = lower(?1)", ref,
                          ret);
        if (r == -ENOENT)
                r = query_one(h, "SELECT " ROW_COLUMNS " FROM sandboxes WHERE name = ?1", ref,
                              ret);
        if (r == -ENOENT && strlen(ref) >= 3 && strspn(ref, "0123456789abcdef-") == strlen(ref))
                r = query_one(h, "SELECT " ROW_COLUMNS " FROM sandboxes WHERE id LIKE ?1 || '%'",
                              ref, ret);
        if (r == -ENOTUNIQ) {
                char list[512];
                list_candidates(h, ref, list, sizeof(list));
                return vmsnap_diag(d, r, "sandbox prefix '%s' is ambiguous: %s", ref, list);
        }
        if (r == -ENOENT)
                return vmsnap_diag(d, r, "no sandbox '%s' (not an id, name or id prefix)", ref);
        return r < 0 ? vmsnap_diag(d, r, "%s/vmsnap.db: %s", h->root, sqlite3_errmsg(h->db)) : 0;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *s)
{
        if (s && *s)
                sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(st, i);
}

/* The times the row keeps by itself (docs/api.md "Sandboxes"): started is set when a VMM
 * pid appears or changes and cleared when the pid goes to 0; last_paused is set when the
 * state becomes paused from anything but paused or resuming (a rolled-back resume was
 * paused all along). Both are computed from the old row inside the upsert. */
#define ROW_TIMES                                                                                  \
        "started = CASE WHEN excluded.pid = 0 THEN NULL "                                          \
        "WHEN sandboxes.pid = excluded.pid AND sandboxes.started IS NOT NULL "                     \
        "THEN sandboxes.started ELSE excluded.updated END, "                                       \
        "last_paused = CASE WHEN excluded.state = 'paused' AND "                                   \
        "sandboxes.state NOT IN ('paused', 'resuming') THEN excluded.updated "                     \
        "ELSE sandboxes.last_paused END "

static void bind_time(sqlite3_stmt *st, int i, bool set, int64_t t)
{
        if (set)
                sqlite3_bind_int64(st, i, t);
        else
                sqlite3_bind_null(st, i);
}

/* Writes a row; the caller is inside a transaction or accepts autocommit. Reads back the
 * times the row keeps (started, last_paused) into sb. */
static int row_write(struct vmsnap_host *h, struct vmsnap_sandbox *sb)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        sb->updated = (int64_t)time(NULL);
        if (sqlite3_prepare_v2(h->db,
                               /* An upsert on the id alone: a name already taken by
                                * another sandbox is a constraint error, never a REPLACE
                                * that would delete that sandbox's row. */
                               "INSERT INTO sandboxes (" ROW_COLUMNS
                               ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,"
                               "?17,?18) "
                               "ON CONFLICT(id) DO UPDATE SET name = excluded.name, "
                               "state = excluded.state, vmm = excluded.vmm, "
                               "vcpus = excluded.vcpus, memory = excluded.memory, "
                               "template_id = excluded.template_id, "
                               "snapshot_id = excluded.snapshot_id, "
                               "generation = excluded.generation, pid = excluded.pid, "
                               "updated = excluded.updated, last_active = excluded.last_active, "
                               "idle_timeout = excluded.idle_timeout, error = excluded.error, "
                               "jail_uid = excluded.jail_uid, " ROW_TIMES
                               "RETURNING started, last_paused",
                               -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, sb->id, -1, SQLITE_TRANSIENT);
        bind_opt(st, 2, sb->name);
        sqlite3_bind_text(st, 3, vmsnap_sandbox_state_name(sb->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, sb->vmm, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 5, sb->vcpus);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)sb->memory);
        bind_opt(st, 7, sb->template_id);
        bind_opt(st, 8, sb->snapshot_id);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)sb->generation);
        sqlite3_bind_int64(st, 10, sb->pid);
        sqlite3_bind_int64(st, 11, sb->created);
        sqlite3_bind_int64(st, 12, sb->updated);
        sqlite3_bind_int64(st, 13, sb->last_active);
        sqlite3_bind_int64(st, 14, sb->idle_timeout);
        sqlite3_bind_text(st, 15, sb->error, -1, SQLITE_TRANSIENT);
        if (sb->jail_uid)
                sqlite3_bind_int64(st, 16, sb->jail_uid);
        else
                sqlite3_bind_null(st, 16);
        /* A new row: the times as they are now. */
        bind_time(st, 17, sb->pid > 0, sb->updated);
        bind_time(st, 18, sb->state == VMSNAP_SANDBOX_PAUSED, sb->updated);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                sb->started = sqlite3_column_int64(st, 0);
                sb->last_paused = sqlite3_column_int64(st, 1);
                rc = sqlite3_step(st);
        }
        return rc == SQLITE_DONE ? 0 : (rc & 0xff) == SQLITE_CONSTRAINT ? -EEXIST : -EIO;
}

int row_put(struct vmsnap_host *h, struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        int r = row_write(h, sb);
        if (r == -EEXIST)
                return vmsnap_diag(d, r, "a sandbox named '%s' exists already", sb->name);
        return r < 0 ? vmsnap_diag(d, r, "%s/vmsnap.db: %s", h->root, sqlite3_errmsg(h->db)) : 0;
}

void row_delete(struct vmsnap_host *h, const char *id)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db, "DELETE FROM sandboxes WHERE id = ?1", -1, &st, NULL) ==
            SQLITE_OK) {
                sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
                sqlite3_step(st);
        }
}

int row_list(struct vmsnap_host *h, bool all, struct vmsnap_sandbox **ret, size_t *ret_n,
             struct vmsnap_diag *d)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(h->db,
                           all ? "SELECT " ROW_COLUMNS " FROM sandboxes ORDER BY created, id"
                               : "SELECT " ROW_COLUMNS " FROM sandboxes WHERE state != 'stopped'"
                                 " ORDER BY created, id",
                           -1, &st, NULL);
        struct vmsnap_sandbox *v = NULL;
        size_t n = 0;
        int rc = SQLITE_ERROR;
        while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct vmsnap_sandbox *nv = realloc(v, (n + 1) * sizeof(*v));
                if (!nv) {
                        free(v);
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
                }
                v = nv;
                row_read(st, &v[n++]);
        }
        if (rc != SQLITE_DONE) { /* never a silently partial list */
                free(v);
                return vmsnap_diag(d, -EIO, "%s/vmsnap.db: listing sandboxes: %s", h->root,
                                   sqlite3_errmsg(h->db));
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* ---- journal ---- */

static int journal_write(struct vmsnap_host *h, struct journal *j, bool done)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db, "UPDATE journal SET step = ?2, data = ?3, done = ?4 "
                                      "WHERE seq = ?1", -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_int64(st, 1, j->seq);
        sqlite3_bind_text(st, 2, j->step, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, j->data, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 4, done);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
}

static int journal_insert(struct vmsnap_host *h, struct journal *j, const char *sandbox_id,
                          const char *op, const char *data, struct vmsnap_diag *d)
{
        memset(j, 0, sizeof(*j));
        snprintf(j->sandbox_id, sizeof(j->sandbox_id), "%s", sandbox_id);
        snprintf(j->op, sizeof(j->op), "%s", op);
        snprintf(j->step, sizeof(j->step), "begin");
        snprintf(j->data, sizeof(j->data), "%s", data ? data : "{}");
        _cleanup_st_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h->db, "INSERT INTO journal (sandbox_id, op, step, data, started)"
                                      " VALUES (?1, ?2, 'begin', ?3, ?4)", -1, &st,
                               NULL) != SQLITE_OK ||
            (sqlite3_bind_text(st, 1, j->sandbox_id, -1, SQLITE_TRANSIENT),
             sqlite3_bind_text(st, 2, j->op, -1, SQLITE_TRANSIENT),
             sqlite3_bind_text(st, 3, j->data, -1, SQLITE_TRANSIENT),
             sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL)), sqlite3_step(st)) !=
                    SQLITE_DONE)
                return vmsnap_diag(d, -EIO, "%s/vmsnap.db: journal: %s", h->root,
                                   sqlite3_errmsg(h->db));
        j->seq = sqlite3_last_insert_rowid(h->db);
        return 0;
}

/* BEGIN IMMEDIATE. A relaxed transaction commits with synchronous=NORMAL: its COMMIT does
 * not wait for the WAL's fsync. It survives a crash of this process at once (the WAL is in
 * the page cache) and a power cut once a later full commit on this connection has synced
 * the WAL, which holds it before that commit's frames. */
static int tx_begin(struct vmsnap_host *h, bool relaxed, struct vmsnap_diag *d)
{
        int r = relaxed ? exec_sql(h, "PRAGMA synchronous = NORMAL", d) : 0;
        if (r == 0 && (r = exec_sql(h, "BEGIN IMMEDIATE", d)) < 0 && relaxed)
                exec_sql(h, "PRAGMA synchronous = FULL", NULL);
        return r;
}

/* Commits (ok) or rolls back the transaction tx_begin opened; every other commit on the
 * connection is full again afterwards. Returns 0, or -EIO when the commit or the return to
 * synchronous=FULL failed. */
static int tx_end(struct vmsnap_host *h, bool relaxed, bool ok, struct vmsnap_diag *d)
{
        int r = ok ? exec_sql(h, "COMMIT", d) : exec_sql(h, "ROLLBACK", NULL);
        if (relaxed && exec_sql(h, "PRAGMA synchronous = FULL", r < 0 ? NULL : d) < 0)
                r = -EIO;
        return r;
}

int journal_begin(struct vmsnap_host *h, struct journal *j, const char *sandbox_id,
                  const char *op, const char *data, struct vmsnap_sandbox *sb, bool relaxed,
                  struct vmsnap_diag *d)
{
        int r = tx_begin(h, relaxed, d);
        if (r < 0)
                return r;
        r = journal_insert(h, j, sandbox_id, op, data, d);
        if (r == 0 && sb && (r = row_write(h, sb)) < 0)
                vmsnap_diag(d, r, r == -EEXIST ? "a sandbox named '%s' exists already"
                                               : "sandbox row of %s: write failed",
                            r == -EEXIST ? sb->name : sandbox_id);
        j->relaxed = relaxed;
        if (r == 0)
                return tx_end(h, relaxed, true, d);
        tx_end(h, relaxed, false, NULL);
        return r;
}

/* Runs the journal update and the row write in one transaction; relaxed for a step of a
 * relaxed entry, never for its closing. */
static int journal_txn(struct vmsnap_host *h, struct journal *j, bool done,
                       struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        bool relaxed = j->relaxed && !done;
        int r = tx_begin(h, relaxed, d);
        if (r < 0)
                return r;
        r = journal_write(h, j, done);
        if (r == 0 && sb)
                r = row_write(h, sb);
        if (r == 0)
                return tx_end(h, relaxed, true, d);
        vmsnap_diag(d, r, "%s/vmsnap.db: %s", h->root, sqlite3_errmsg(h->db));
        tx_end(h, relaxed, false, NULL);
        return r;
}

int journal_step(struct vmsnap_host *h, struct journal *j, const char *step, const char *data,
                 struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        snprintf(j->step, sizeof(j->step), "%s", step);
        if (data)
                snprintf(j->data, sizeof(j->data), "%s", data);
        return journal_txn(h, j, false, sb, d);
}

int journal_done(struct vmsnap_host *h, struct journal *j, struct vmsnap_sandbox *sb,
                 struct vmsnap_diag *d)
{
        return journal_txn(h, j, true, sb, d);
}

int journal_open_entries(struct vmsnap_host *h, struct journal **ret, size_t *ret_n,
                         struct vmsnap_diag *d)
{
        _cleanup_st_ sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(h->db, "SELECT seq, sandbox_id, op, step, data FROM journal "
                                  "WHERE done = 0 ORDER BY seq", -1, &st, NULL);
        struct journal *v = NULL;
        size_t n = 0;
        int rc = SQLITE_ERROR;
        while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct journal *nv = realloc(v, (n + 1) * sizeof(*v));
                if (!nv) {
                        free(v);
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
                }
                v = nv;
                memset(&v[n], 0, sizeof(v[n]));
                v[n].seq = sqlite3_column_int64(st, 0);
                copy_text(v[n].sandbox_id, sizeof(v[n].sandbox_id), st, 1);
                copy_text(v[n].op, sizeof(v[n].op), st, 2);
                copy_text(v[n].step, sizeof(v[n].step), st, 3);
                copy_text(v[n].data, sizeof(v[n].data), st, 4);
                n++;
        }
        if (rc != SQLITE_DONE) { /* recovery must not skip entries it could not read */
                free(v);
                return vmsnap_diag(d, -EIO, "%s/vmsnap.db: reading the journal: %s", h->root,
                                   sqlite3_errmsg(h->db));
        }
        *ret = v;
        *ret_n = n;
        return 0;
}
