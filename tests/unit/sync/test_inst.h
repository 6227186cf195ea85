/*
 * tests/unit/sync/test_inst.h - a sync instance as `keyward serve` makes it (store, schema,
 * graph loaded from the store, follower started), for the sync unit tests.
 *
 * Ownership: kw_ti_close frees everything kw_ti_open / kw_ti_sqlite made (also after a
 * failed open) and removes the temporary SQLite file.
 */
#ifndef KW_TEST_INST_H
#define KW_TEST_INST_H

#include "sync/sync_int.h"

/* The schema of the tests: account:<id>#member@user:<id> is all they write. */
extern const char kw_ti_schema[];

typedef struct kw_ti {
    kw_store_t *store;
    kw_engine_t *engine;
    kw_sync_t *sync;
    char path[128]; /* the temporary SQLite file, "" for a URL */
} kw_ti_t;

/* An instance on `url`. 1 on success, 0 (with a line on stderr when the open failed). */
int kw_ti_open(kw_ti_t *in, const char *url);
/* The same with schema text `schema` and configuration `cfg` (NULL: the defaults). */
int kw_ti_open_with(kw_ti_t *in, const char *url, const char *schema, const kw_sync_config_t *cfg);
/* An instance on a fresh SQLite file /tmp/kw_<tag>_<pid>.db. */
int kw_ti_sqlite(kw_ti_t *in, const char *tag);
/* The same with a schema and configuration of the test's own (cfg NULL: the defaults). */
int kw_ti_sqlite_with(kw_ti_t *in, const char *tag, const char *schema,
                      const kw_sync_config_t *cfg);
void kw_ti_close(kw_ti_t *in);
/* A database of its own on the server of KEYWARD_PG_URL, for a test whose relationships
 * another test's schema would refuse: kw_<tag>_<pid>, created afresh; *url names it.
 * 1 on success. kw_ti_pg_drop removes it (WITH (FORCE)). */
int kw_ti_pg_db(const char *tag, char *url, size_t cap);
void kw_ti_pg_drop(const char *tag);
/* The sync object of an instance whose store and engine are open and loaded (`serve` up
 * to the graph load): kw_sync_new with the default configuration. 1 on success. */
int kw_ti_sync(kw_ti_t *in);

#endif
