/*
 * store/sqlite_int.h - shared between sqlite.c and migrations_sqlite.c.
 */
#ifndef KW_STORE_SQLITE_INT_H
#define KW_STORE_SQLITE_INT_H

#include "store_int.h"

typedef struct kw__sqlite_migration {
    int version; /* 1, 2, 3 ... in order, no gaps */
    const char *sql;
} kw__sqlite_migration_t;

extern const kw__sqlite_migration_t kw__sqlite_migrations[];
extern const size_t kw__sqlite_n_migrations;

#endif
