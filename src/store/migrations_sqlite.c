/*
 * store/migrations_sqlite.c - the SQLite schema, as an append-only list of versions.
 *
 * Rules: never edit or reorder a shipped entry; add a new version instead. Each entry
 * runs in its own transaction together with the insert of its version into
 * schema_migrations, so a crash leaves the database at a whole version. A database
 * whose highest version is above the last entry here was written by a newer keyward
 * and is refused at open (sqlite.c).
 */
#include "sqlite_int.h"

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
};

const size_t kw__sqlite_n_migrations = KW_ARRAY_LEN(kw__sqlite_migrations);
