/*
 * store/pg_int.h - what the PostgreSQL backend's files share (pg.c, migrations_pg.c).
 *
 * Migrations are numbered from 1 and applied in order, each in the same transaction as
 * its row in schema_migrations, under a transaction-scoped advisory lock so two instances
 * starting at once never race (tag-kw-pg-migrations). A database whose highest applied
 * version is above KW__PG_MIGRATIONS_N was written by a newer keyward and is refused.
 */
#ifndef KW_STORE_PG_INT_H
#define KW_STORE_PG_INT_H

#include <stddef.h>

typedef struct kw_pg_migration {
    int version;
    const char *sql; /* one or more statements, run with PQexec (simple query protocol) */
} kw_pg_migration_t;

extern const kw_pg_migration_t kw__pg_migrations[];
extern const size_t kw__pg_migrations_n;

/* The advisory lock key every keyward instance takes while migrating ("kwmg"). */
#define KW__PG_MIGRATION_LOCK 0x6b776d67L

/* The NOTIFY channel a commit announces its revision on (payload: the revision in
 * decimal). */
#define KW__PG_CHANNEL "keyward_changes"

#endif
