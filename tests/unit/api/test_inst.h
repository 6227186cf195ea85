/*
 * tests/unit/api/test_inst.h - an api instance as `keyward serve` makes it (store, default
 * schema, graph loaded from the store, follower started), for the api unit tests.
 *
 * Ownership: kw_ti_close frees everything kw_ti_open / kw_ti_sqlite made (also after a
 * failed open) and removes the temporary SQLite file.
 */
#ifndef KW_TEST_INST_H
#define KW_TEST_INST_H

#include "api/api_int.h"

typedef struct kw_ti {
    kw_store_t *store;
    kw_engine_t *engine;
    kw_keyring_t *keyring;
    kw_api_t *api;
    char path[128]; /* the temporary SQLite file, "" for a URL */
} kw_ti_t;

/* An instance on `url`. 1 on success, 0 (with a line on stderr when the open failed). */
int kw_ti_open(kw_ti_t *in, const char *url);
/* An instance on a fresh SQLite file /tmp/kw_<tag>_<pid>.db. */
int kw_ti_sqlite(kw_ti_t *in, const char *tag);
void kw_ti_close(kw_ti_t *in);
/* A kw_rel_cb writing each relationship to the engine `ud` (as serve loads the graph). */
int kw_ti_load_one(const kw_rel_t *rel, void *ud);

#endif
