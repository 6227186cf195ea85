/*
 * store/migrations_sqlite.c - the SQLite schema, as an append-only list of versions.
 *
 * Rules: never edit or reorder a shipped entry; add a new version instead. Each entry
 * runs in its own transaction together with the insert of its version into
 * schema_migrations, so a crash leaves the database at a whole version. A database
 * whose highest version is above the last entry here was written by a newer keyward
 * and is refused at open (kw__sq_migrate, below).
 */
#include "sqlite_int.h"

#include <limits.h>
#include <stdio.h>

#include "base/log.h"

#define KW_MODULE "store"

const kw__sqlite_migration_t kw__sqlite_migrations[] = {
    {1, "CREATE TABLE agents ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  account_id TEXT NOT NULL,"
        "  name TEXT NOT NULL,"
        "  description TEXT,"
        "  created_at_us INTEGER NOT NULL,"
        "  UNIQUE (account_id, name));"
        "CREATE TABLE api_keys ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,"
        "  name TEXT NOT NULL,"
        "  type TEXT NOT NULL,"
        "  created_at_us INTEGER NOT NULL,"
        "  hash BLOB UNIQUE,"
        "  secret_enc BLOB,"
        "  UNIQUE (agent_id, name, type));"
        "CREATE INDEX api_keys_by_agent ON api_keys (agent_id, created_at_us, id);"
        "CREATE TABLE relationships ("
        "  resource_type TEXT NOT NULL,"
        "  resource_id TEXT NOT NULL,"
        "  relation TEXT NOT NULL,"
        "  subject_type TEXT NOT NULL,"
        "  subject_id TEXT NOT NULL,"
        "  subject_relation TEXT NOT NULL DEFAULT '',"
        "  PRIMARY KEY (resource_type, resource_id, relation, subject_type, subject_id,"
        "               subject_relation)"
        ") WITHOUT ROWID;"
        "CREATE INDEX relationships_by_subject ON relationships (subject_type, subject_id);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value BLOB);"
        "INSERT INTO meta (key, value) VALUES ('revision', 0);"},
    /* 2: a key's lifecycle (issue 14): expiry, last use (flushed in batches), and the
     * previous secret of a rotation during its grace period. prev_hash is unique like
     * hash (NULLs are distinct), so a hash finds at most one row per column. */
    {2, "ALTER TABLE api_keys ADD COLUMN expires_at_us INTEGER;"
        "ALTER TABLE api_keys ADD COLUMN last_used_at_us INTEGER;"
        "ALTER TABLE api_keys ADD COLUMN prev_hash BLOB;"
        "ALTER TABLE api_keys ADD COLUMN prev_until_us INTEGER;"
        "CREATE UNIQUE INDEX api_keys_prev_hash ON api_keys (prev_hash);"},
    /* 3: the audit trail (store/audit.h, sqlite_audit.c): events hash-chained in seq
     * order, and the chain head, a row of its own moved by every append. */
    {3, "CREATE TABLE audit_events ("
        "  seq INTEGER PRIMARY KEY NOT NULL,"
        "  at_us INTEGER NOT NULL,"
        "  revision INTEGER NOT NULL,"
        "  actor TEXT NOT NULL,"
        "  action TEXT NOT NULL,"
        "  resource TEXT NOT NULL,"
        "  account TEXT NOT NULL,"
        "  request_id TEXT NOT NULL,"
        "  detail TEXT NOT NULL,"
        "  prev_hash BLOB NOT NULL,"
        "  hash BLOB NOT NULL);"
        "CREATE INDEX audit_events_account ON audit_events (account, seq);"
        "CREATE INDEX audit_events_resource ON audit_events (resource, seq);"
        "CREATE TABLE audit_head ("
        "  one INTEGER PRIMARY KEY NOT NULL CHECK (one = 1),"
        "  seq INTEGER NOT NULL,"
        "  hash BLOB NOT NULL);"
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, 0, zeroblob(32));"},
    /* 4: caveats and expiry on relationships (store.h, tag-kw-store-caveats). NULL is
     * "none" in all three, so the columns cost rows without them nothing (SQLite stores no
     * trailing NULLs of rows written before the ALTER, and one header byte each after),
     * and ADD COLUMN rewrites nothing. expires_at_us: microseconds UTC. The partial
     * indexes hold only the rows with an expiry, or a caveat: the sweep finds the expired
     * ones without a scan, and the startup load reads those rows apart from the rest
     * (sqlite_read.c). */
    {4, "ALTER TABLE relationships ADD COLUMN caveat_name TEXT;"
        "ALTER TABLE relationships ADD COLUMN caveat_context TEXT;"
        "ALTER TABLE relationships ADD COLUMN expires_at_us INTEGER;"
        "CREATE INDEX relationships_by_expiry ON relationships (expires_at_us)"
        "  WHERE expires_at_us IS NOT NULL;"
        "CREATE INDEX relationships_by_caveat ON relationships (caveat_name)"
        "  WHERE caveat_name IS NOT NULL;"},
    /* The changelog that /v1 Watch reads (sqlite_changes.c): every relationship change at
     * the revision that committed it, in the order made, with the time it was written;
     * the pruned horizon in meta. Self-contained: renumber freely at a merge. */
    {5, "CREATE TABLE changelog ("
        "  rev INTEGER NOT NULL,"
        "  seq INTEGER NOT NULL,"
        "  op INTEGER NOT NULL,"
        "  resource_type TEXT NOT NULL,"
        "  resource_id TEXT NOT NULL,"
        "  relation TEXT NOT NULL,"
        "  subject_type TEXT NOT NULL,"
        "  subject_id TEXT NOT NULL,"
        "  subject_relation TEXT NOT NULL DEFAULT '',"
        "  caveat TEXT NOT NULL DEFAULT '',"
        "  caveat_ctx TEXT NOT NULL DEFAULT '',"
        "  expires_at_us INTEGER NOT NULL DEFAULT 0,"
        "  at_us INTEGER NOT NULL,"
        "  PRIMARY KEY (rev, seq)"
        ") WITHOUT ROWID;"
        "CREATE INDEX changelog_by_time ON changelog (at_us);"
        "INSERT INTO meta (key, value) VALUES ('changelog_horizon', 0);"},
};

const size_t kw__sqlite_n_migrations = KW_ARRAY_LEN(kw__sqlite_migrations);

/* ---- the runner ---- */

static int schema_version(kw__sq_conn_t *c, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db, "SELECT coalesce(max(version), 0) FROM schema_migrations",
                                -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 v = sqlite3_column_int64(st, 0);
        *out = v > INT_MAX ? INT_MAX : (int)v;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? KW_OK : kw__sq_err(c, rc, "read schema version", NULL);
}

/* Applies every migration the database lacks, each in its own transaction. Several
 * processes opening the same new file are safe: BEGIN IMMEDIATE serializes them and each
 * re-reads the version inside its transaction. */
int kw__sq_migrate(kw__sq_conn_t *c, kw_diag_t *diag)
{
    const int known = (int)kw__sqlite_n_migrations;
    int rc = sqlite3_exec(c->db,
                          "CREATE TABLE IF NOT EXISTS schema_migrations ("
                          "version INTEGER PRIMARY KEY NOT NULL, applied_at_us INTEGER NOT NULL)",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return kw__sq_err(c, rc, "create schema_migrations", diag);
    for (;;) {
        int cur = 0;
        rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return kw__sq_err(c, rc, "begin migration", diag);
        rc = schema_version(c, &cur);
        if (rc != KW_OK || cur >= known) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            if (rc != KW_OK)
                return kw_diag_set(diag, rc, 0, 0, "cannot read the database schema version");
            if (cur > known) {
                kw_log(KW_LOG_ERROR, KW_MODULE,
                       "database schema version %d is newer than this keyward's (%d)", cur, known);
                return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0,
                                   "the database was written by a newer keyward (schema version "
                                   "%d; this binary knows up to %d): upgrade keyward",
                                   cur, known);
            }
            return KW_OK;
        }
        const kw__sqlite_migration_t *m = &kw__sqlite_migrations[cur];
        kw_assert(m->version == cur + 1);
        rc = sqlite3_exec(c->db, m->sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            char ins[160];
            snprintf(ins, sizeof(ins),
                     "INSERT INTO schema_migrations (version, applied_at_us) VALUES (%d, "
                     "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))",
                     m->version);
            rc = sqlite3_exec(c->db, ins, NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            int err = kw__sq_err(c, rc, "migration", NULL);
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            return kw_diag_set(diag, err, 0, 0, "migrating the database to version %d failed",
                               m->version);
        }
        kw_log(KW_LOG_INFO, KW_MODULE, "database migrated to schema version %d", m->version);
    }
}
