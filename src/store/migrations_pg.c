/*
 * store/migrations_pg.c - the PostgreSQL schema, as ordered migrations.
 *
 * The same tables as the SQLite backend (migrations_sqlite.c) in the Postgres dialect, plus
 * what several instances over one database need:
 *   - revision: one row holding the last committed revision. Every write transaction
 *     bumps it as its first statement (UPDATE ... RETURNING, right after BEGIN) and holds
 *     the row lock until it ends, so write transactions run one at a time: revisions are
 *     unique, gapless and assigned in commit order (pg_tx.c, tag-kw-store-write-order).
 *   - changelog: every relationship change at the revision that committed it, in the
 *     order the transaction made them (seq), for followers to replay; since migration 2
 *     with the time it was written (at_us) and a pruned horizon (changelog_horizon).
 * Secrets and hashes are BYTEA; meta values are BYTEA (any bytes, no encoding).
 * Text columns use the "C" collation: byte order, as SQLite compares, whatever the
 * database locale (keyset pagination on (created_at, id) depends on it).
 * Timestamps are microseconds since the Unix epoch (BIGINT), as in the SQLite schema.
 *
 * Never edit a released migration: append a new one (tag-kw-pg-migrations).
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "pg_int.h"

#define KW_MODULE "store.pg"

static const char m1[] =
    "CREATE TABLE meta ("
    "  key TEXT COLLATE \"C\" PRIMARY KEY,"
    "  value BYTEA NOT NULL);"
    "CREATE TABLE revision ("
    "  one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),"
    "  value BIGINT NOT NULL);"
    "INSERT INTO revision (one, value) VALUES (TRUE, 0);"
    "CREATE TABLE agents ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY,"
    "  account_id TEXT COLLATE \"C\" NOT NULL,"
    "  name TEXT COLLATE \"C\" NOT NULL,"
    "  description TEXT COLLATE \"C\","
    "  created_at_us BIGINT NOT NULL,"
    "  UNIQUE (account_id, name));"
    "CREATE INDEX agents_order ON agents (created_at_us, id);"
    "CREATE TABLE api_keys ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY,"
    "  agent_id TEXT COLLATE \"C\" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,"
    "  name TEXT COLLATE \"C\" NOT NULL,"
    "  type TEXT COLLATE \"C\" NOT NULL,"
    "  created_at_us BIGINT NOT NULL,"
    "  hash BYTEA,"
    "  secret_enc BYTEA,"
    "  UNIQUE (agent_id, name, type));"
    "CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash) WHERE hash IS NOT NULL;"
    "CREATE INDEX api_keys_agent_order ON api_keys (agent_id, created_at_us, id);"
    "CREATE TABLE relationships ("
    "  resource_type TEXT COLLATE \"C\" NOT NULL,"
    "  resource_id TEXT COLLATE \"C\" NOT NULL,"
    "  relation TEXT COLLATE \"C\" NOT NULL,"
    "  subject_type TEXT COLLATE \"C\" NOT NULL,"
    "  subject_id TEXT COLLATE \"C\" NOT NULL,"
    "  subject_relation TEXT COLLATE \"C\" NOT NULL DEFAULT '',"
    "  PRIMARY KEY (resource_type, resource_id, relation, subject_type, subject_id,"
    "               subject_relation));"
    "CREATE INDEX relationships_subject ON relationships (subject_type, subject_id);"
    "CREATE TABLE changelog ("
    "  revision BIGINT NOT NULL,"
    "  seq INT NOT NULL,"
    "  op SMALLINT NOT NULL,"
    "  resource_type TEXT COLLATE \"C\" NOT NULL,"
    "  resource_id TEXT COLLATE \"C\" NOT NULL,"
    "  relation TEXT COLLATE \"C\" NOT NULL,"
    "  subject_type TEXT COLLATE \"C\" NOT NULL,"
    "  subject_id TEXT COLLATE \"C\" NOT NULL,"
    "  subject_relation TEXT COLLATE \"C\" NOT NULL,"
    "  PRIMARY KEY (revision, seq));";

/* 2: changelog retention (pg_changes.c, kw_store_prune_changelog).
 *   - changelog.at_us: when the row was written, by the database's clock (microseconds
 *     since the epoch). clock_timestamp(), not now(): rows are inserted at commit while the
 *     transaction holds the revision row lock, so in revision order the values only grow
 *     (unless the database's clock steps back). Adding the column rewrites the table and
 *     gives every existing row the time of the migration: they are kept one full retention
 *     period from then.
 *   - changelog_horizon: one row, pruned_through = the highest revision whose changes may
 *     be gone (0: nothing pruned yet). It only grows, is raised in the transaction that
 *     deletes the rows, and is read in the same snapshot as the changelog, so a follower
 *     behind it can tell it lost changes instead of skipping them. Not a column of
 *     `revision`: every write transaction holds that row's lock from begin to commit, and
 *     pruning must not wait for, or stall, writers. */
static const char m2[] = "ALTER TABLE changelog ADD COLUMN at_us BIGINT NOT NULL"
                         "  DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;"
                         "CREATE TABLE changelog_horizon ("
                         "  one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),"
                         "  pruned_through BIGINT NOT NULL);"
                         "INSERT INTO changelog_horizon (one, pruned_through) VALUES (TRUE, 0);";

/* 3: a key's lifecycle (issue 14), as SQLite's migration 2: expiry, last use (flushed in
 * batches, outside the revision order), and the previous secret of a rotation during its
 * grace period (unique like hash). */
static const char m3[] = "ALTER TABLE api_keys ADD COLUMN expires_at_us BIGINT,"
                         "  ADD COLUMN last_used_at_us BIGINT,"
                         "  ADD COLUMN prev_hash BYTEA,"
                         "  ADD COLUMN prev_until_us BIGINT;"
                         "CREATE UNIQUE INDEX api_keys_prev_hash ON api_keys (prev_hash)"
                         "  WHERE prev_hash IS NOT NULL;";

/* 4: the audit trail (store/audit.h, pg_audit.c): events hash-chained in seq order, and
 * the chain head, a row of its own that every append locks and moves. */
static const char m4[] = "CREATE TABLE audit_events ("
                         "  seq BIGINT PRIMARY KEY,"
                         "  at_us BIGINT NOT NULL,"
                         "  revision BIGINT NOT NULL,"
                         "  actor TEXT COLLATE \"C\" NOT NULL,"
                         "  action TEXT COLLATE \"C\" NOT NULL,"
                         "  resource TEXT COLLATE \"C\" NOT NULL,"
                         "  account TEXT COLLATE \"C\" NOT NULL,"
                         "  request_id TEXT COLLATE \"C\" NOT NULL,"
                         "  detail TEXT COLLATE \"C\" NOT NULL,"
                         "  prev_hash BYTEA NOT NULL,"
                         "  hash BYTEA NOT NULL);"
                         "CREATE INDEX audit_events_account ON audit_events (account, seq);"
                         "CREATE INDEX audit_events_resource ON audit_events (resource, seq);"
                         "CREATE TABLE audit_head ("
                         "  one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),"
                         "  seq BIGINT NOT NULL,"
                         "  hash BYTEA NOT NULL);"
                         "INSERT INTO audit_head (one, seq, hash)"
                         "  VALUES (TRUE, 0, decode(repeat('00', 32), 'hex'));";

/* 5: caveats and expiry (store.h, tag-kw-store-caveats), on relationships and on the
 * changelog, so another instance applies a TOUCH with the same caveat and expiry.
 *   - caveat_name, caveat_context (the JSON object text as written: TEXT, not JSONB, which
 *     would reorder it), expires_at_us (microseconds UTC); NULL is "none" in all three.
 *     Nullable columns without a default: ADD COLUMN rewrites no table.
 *   - relationships_expiry: a partial index of the expiring rows only, for the sweep
 *     (kw_store_tx_rel_delete_expired, kw_store_next_expiry). Building it reads the table
 *     once. */
static const char m5[] = "ALTER TABLE relationships ADD COLUMN caveat_name TEXT COLLATE \"C\","
                         "  ADD COLUMN caveat_context TEXT COLLATE \"C\","
                         "  ADD COLUMN expires_at_us BIGINT;"
                         "CREATE INDEX relationships_expiry ON relationships (expires_at_us)"
                         "  WHERE expires_at_us IS NOT NULL;"
                         "ALTER TABLE changelog ADD COLUMN caveat_name TEXT COLLATE \"C\","
                         "  ADD COLUMN caveat_context TEXT COLLATE \"C\","
                         "  ADD COLUMN expires_at_us BIGINT;";

const kw_pg_migration_t kw__pg_migrations[] = {
    {1, m1}, {2, m2}, {3, m3}, {4, m4}, {5, m5},
};
const size_t kw__pg_migrations_n = sizeof(kw__pg_migrations) / sizeof(kw__pg_migrations[0]);

/* ---- the runner ---- */

/* Brings the database up to the last migration above, in one transaction under the
 * migration advisory lock (tag-kw-pg-migrations); refuses a newer database. */
int kw__pg_migrate(kw__pg_conn_t *c, kw_diag_t *diag)
{
    int rc = kw__pg_exec(c, "BEGIN");
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "PostgreSQL: cannot start the migration");
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%ld)", KW__PG_MIGRATION_LOCK);
    rc = kw__pg_exec(c, sql);
    if (rc == KW_OK)
        rc = kw__pg_exec(c,
                         "CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())");
    long have = 0;
    if (rc == KW_OK) {
        PGresult *r = PQexec(c->conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            have = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        else
            rc = kw__pg_result_error(c->conn, r, "schema_migrations");
        PQclear(r);
    }
    if (rc != KW_OK) {
        PQclear(PQexec(c->conn, "ROLLBACK"));
        return kw_diag_set(diag, rc, 0, 0, "PostgreSQL: cannot read the schema version");
    }
    long latest = (long)kw__pg_migrations[kw__pg_migrations_n - 1].version;
    if (have > latest) {
        PQclear(PQexec(c->conn, "ROLLBACK"));
        return kw_diag_set(diag, KW_EDB, 0, 0,
                           "PostgreSQL database has schema version %ld, newer than this "
                           "keyward's %ld: upgrade keyward",
                           have, latest);
    }
    for (size_t i = 0; i < kw__pg_migrations_n && rc == KW_OK; i++) {
        const kw_pg_migration_t *m = &kw__pg_migrations[i];
        if (m->version <= have)
            continue;
        rc = kw__pg_exec(c, m->sql);
        if (rc == KW_OK) {
            snprintf(sql, sizeof(sql), "INSERT INTO schema_migrations (version) VALUES (%d)",
                     m->version);
            rc = kw__pg_exec(c, sql);
        }
        if (rc == KW_OK)
            kw_log(KW_LOG_INFO, KW_MODULE, "applied migration %d", m->version);
    }
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    if (rc != KW_OK) {
        PQclear(PQexec(c->conn, "ROLLBACK"));
        return kw_diag_set(diag, rc, 0, 0, "PostgreSQL: migration failed (see the log)");
    }
    return KW_OK;
}
