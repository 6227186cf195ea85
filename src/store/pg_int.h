/*
 * store/pg_int.h - what the PostgreSQL backend's files share: pg.c (pool, statements,
 * parameters, results, open, metadata, the ops table), pg_read.c (reads), pg_tx.c
 * (transactions and writes), pg_changes.c (changelog, notifications) and
 * migrations_pg.c (the schema and the runner that applies it at open).
 *
 * Migrations are numbered from 1 and applied in order, each in the same transaction as
 * its row in schema_migrations, under a transaction-scoped advisory lock so two instances
 * starting at once never race (tag-kw-pg-migrations). A database whose highest applied
 * version is above the last one in kw__pg_migrations was written by a newer keyward and is refused.
 *
 * Threads: a kw__pg_conn_t is used by one thread at a time (checked out of the pool, or
 * the LISTEN connection under listen_mu); a kw__pg_tx_t belongs to one thread.
 */
#ifndef KW_STORE_PG_INT_H
#define KW_STORE_PG_INT_H

#include <pthread.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "store_int.h"

typedef struct kw_pg_migration {
    int version;
    const char *sql; /* one or more statements, run with PQexec (simple query protocol) */
} kw_pg_migration_t;

extern const kw_pg_migration_t kw__pg_migrations[];
extern const size_t kw__pg_migrations_n;

/* The advisory lock key every keyward instance takes while migrating ("kwmg"). */
#define KW__PG_MIGRATION_LOCK 0x6b776d67L

/* The advisory lock key of kw_store_prune_changelog ("kwpr"): one pruner at a time across
 * every instance; the others skip their turn. */
#define KW__PG_PRUNE_LOCK 0x6b777072L

/* The NOTIFY channel a commit announces its revision on (payload: the revision in
 * decimal). */
#define KW__PG_CHANNEL "keyward_changes"

/* ---- statements (their SQL: pg.c's table), handles, parameters ---- */

/* Type OIDs (catalog/pg_type.h is a server header; these values are fixed forever). */
#define KW__PG_OID_BOOL 16
#define KW__PG_OID_BYTEA 17
#define KW__PG_OID_INT8 20
#define KW__PG_OID_INT2 21
#define KW__PG_OID_INT4 23
#define KW__PG_OID_TEXT 25
#define KW__PG_OID_TEXTARR 1009

#define KW__PG_MAX_PARAMS 12

enum {
    KW__PG_ST_META_GET,
    KW__PG_ST_META_INIT,
    KW__PG_ST_META_SET,
    KW__PG_ST_REVISION,
    KW__PG_ST_REVISION_TEXT,
    KW__PG_ST_AGENT_GET,
    KW__PG_ST_AGENT_BY_NAME,
    KW__PG_ST_AGENTS_BY_IDS,
    KW__PG_ST_AGENTS_PRESENT,
    KW__PG_ST_KEY_GET,
    KW__PG_ST_KEY_BY_NAME,
    KW__PG_ST_KEY_BY_HASH,
    KW__PG_ST_KEY_AUTH,
    KW__PG_ST_KEYS_OF_AGENT,
    KW__PG_ST_KEYS_BY_IDS,
    KW__PG_ST_AGENT_INSERT,
    KW__PG_ST_AGENT_LOCK,
    KW__PG_ST_REL_DEL_RESOURCE_KEYS,
    KW__PG_ST_REL_DEL_SUBJECT_KEYS,
    KW__PG_ST_REL_DEL_RESOURCE,
    KW__PG_ST_REL_DEL_SUBJECT,
    KW__PG_ST_AGENT_KEYS_DELETE,
    KW__PG_ST_AGENT_DELETE,
    KW__PG_ST_KEY_INSERT,
    KW__PG_ST_AGENT_EXISTS,
    KW__PG_ST_KEY_DELETE,
    KW__PG_ST_KEY_ROTATE,
    KW__PG_ST_KEY_EXISTS,
    KW__PG_ST_KEYS_TOUCH,
    KW__PG_ST_REL_CREATE,
    KW__PG_ST_REL_TOUCH,
    KW__PG_ST_REL_DELETE,
    KW__PG_ST_NEXT_EXPIRY,
    KW__PG_ST_REL_DEL_EXPIRED,
    KW__PG_ST_TX_REVISION,
    KW__PG_ST_CHANGES,
    KW__PG_ST_CHANGES_AT,
    KW__PG_ST_HORIZON,
    KW__PG_ST_PRUNE,
    KW__PG_ST_HORIZON_RAISE,
    KW__PG_ST_AUDIT_HEAD,   /* pg_audit.c: lock and read the chain head */
    KW__PG_ST_AUDIT_APPEND, /* pg_audit.c: the event and the head in one statement */
    KW__PG_ST_N
};
_Static_assert(KW__PG_ST_N <= 64, "kw__pg_conn_t.prepared has a bit per statement");

#define KW__PG_REL_COLS                                                                            \
    "resource_type, resource_id, relation, subject_type, subject_id, subject_relation"
/* The key columns, then caveat name, caveat context and expiry (migration 3). */
#define KW__PG_REL_XCOLS KW__PG_REL_COLS ", caveat_name, caveat_context, expires_at_us"
#define KW__PG_REL_ORDER "ORDER BY 1, 2, 3, 4, 5, 6"

typedef struct kw__pg_conn {
    PGconn *conn;
    uint64_t prepared; /* bit KW__PG_ST_x: statement x is prepared on this connection */
    struct kw__pg_conn *next_free;
} kw__pg_conn_t;

typedef struct kw__pg_store {
    struct kw_store base; /* first: kw_store_t * casts to kw__pg_store_t * */
    char *url;            /* the URL handed to libpq (keyward's own parameters removed) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kw__pg_conn_t *conns;
    size_t n_conns;
    kw__pg_conn_t *free_list;
    /* The LISTEN connection of kw_store_wait_change (one follower at a time). */
    pthread_mutex_t listen_mu;
    PGconn *listen;
} kw__pg_store_t;

typedef struct kw__pg_tx {
    struct kw_store_tx base; /* first */
    kw__pg_conn_t *c;
    kw_revision_t rev; /* this transaction's revision, taken (and locked) by kw__pg_tx_begin */
} kw__pg_tx_t;

static inline kw__pg_store_t *kw__pg_of(kw_store_t *s)
{
    return (kw__pg_store_t *)s;
}

typedef struct kw__pg_params {
    int n;
    bool bad_text; /* a text parameter was not valid UTF-8 (or held a NUL) */
    const char *vals[KW__PG_MAX_PARAMS];
    int lens[KW__PG_MAX_PARAMS];
    int fmts[KW__PG_MAX_PARAMS];
    unsigned char i64[KW__PG_MAX_PARAMS][8];
} kw__pg_params_t;

#define KW__PG_SNAPSHOT_BEGIN "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

/* ---- pg.c: parameters, results, errors, connections, statements ----
 * (each function's contract is at its definition) */

void kw__pg_pp_text(kw__pg_params_t *p, kw_str_t s);
void kw__pg_pp_cstr(kw__pg_params_t *p, const char *s);
void kw__pg_pp_null(kw__pg_params_t *p);
void kw__pg_pp_bytes(kw__pg_params_t *p, const uint8_t *b, size_t len);
void kw__pg_pp_i64(kw__pg_params_t *p, int64_t v);
int kw__pg_pp_text_array(kw__pg_params_t *p, kw_arena_t *a, const kw_str_t *ids, size_t n);
int64_t kw__pg_col_i64(const PGresult *r, int row, int col);
kw_str_t kw__pg_col_str(const PGresult *r, int row, int col);
void kw__pg_row_rel(const PGresult *r, int row, int col, kw_rel_t *rel);
void kw__pg_row_rel_caveat(const PGresult *r, int row, int col, kw_rel_t *rel);
int kw__pg_result_error(PGconn *conn, const PGresult *r, const char *what);
int kw__pg_conn_setup(kw__pg_conn_t *c);
PGconn *kw__pg_conn_open(const char *url);
int kw__pg_conn_ensure(kw__pg_store_t *s, kw__pg_conn_t *c);
void kw__pg_pool_put(kw__pg_store_t *s, kw__pg_conn_t *c);
int kw__pg_run(kw__pg_conn_t *c, int st, const kw__pg_params_t *p, PGresult **out);
int kw__pg_query(kw__pg_store_t *s, int st, const kw__pg_params_t *p, PGresult **out);
int kw__pg_exec(kw__pg_conn_t *c, const char *sql);
int kw__pg_begin_on(kw__pg_store_t *s, const char *begin_sql, kw__pg_conn_t **out);

/* ---- migrations_pg.c: the runner ---- */

/* Applies the migrations c's database lacks, or refuses a newer database; run by open. */
int kw__pg_migrate(kw__pg_conn_t *c, kw_diag_t *diag);

/* ---- pg_read.c: the revision, reads (kw_store_ops_t entries) ---- */

/* Runs parameterless statement `st` on c, which must answer one row of one BIGINT. */
int kw__pg_one_revision(kw__pg_conn_t *c, int st, kw_revision_t *rev);
int kw__pg_read_revision(kw__pg_conn_t *c, kw_revision_t *rev);
int kw__pg_revision(kw_store_t *base, kw_revision_t *rev);
int kw__pg_load_relationships(kw_store_t *base, kw_rel_cb cb, void *ud, kw_revision_t *rev);
int kw__pg_next_expiry(kw_store_t *base, int64_t *at_us);
/* pg_export.c: kw_store_export_relationships. */
int kw__pg_export_relationships(kw_store_t *base, const kw_str_t *after, kw_str_t resource_type,
                                kw_rel_cb cb, void *ud, kw_revision_t *rev);
int kw__pg_agent_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_agent_t *out);
int kw__pg_agent_get_by_name(kw_store_t *base, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                             kw_agent_t *out);
int kw__pg_agents_present(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                          bool *present);
int kw__pg_agents_by_ids(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                         kw_agent_t **out, size_t *n_out);
int kw__pg_key_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_apikey_t *out);
int kw__pg_key_get_by_name(kw_store_t *base, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                           kw_arena_t *a, kw_apikey_t *out);
int kw__pg_key_find_by_hash(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                            kw_apikey_t *out);
int kw__pg_keys_of_agent(kw_store_t *base, kw_str_t agent_id, int64_t after_created_us,
                         kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                         size_t *n_out);
int kw__pg_keys_touch(kw_store_t *base, const kw_key_use_t *uses, size_t n);
int kw__pg_key_auth(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                    kw_apikey_t *key, kw_agent_t *agent);
int kw__pg_keys_by_ids(kw_store_t *base, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                       kw_arena_t *a, kw_apikey_t **out, size_t *n_out);

/* ---- pg_tx.c: transactions (kw_store_ops_t entries) ---- */

int kw__pg_tx_begin(kw_store_t *base, kw_store_tx_t **out, kw_diag_t *diag);
void kw__pg_tx_rollback(kw_store_tx_t *base);
int kw__pg_tx_savepoint(kw_store_tx_t *base, const char *name);
int kw__pg_tx_rollback_to(kw_store_tx_t *base, const char *name);
int kw__pg_tx_release(kw_store_tx_t *base, const char *name);
int kw__pg_tx_commit(kw_store_tx_t *base, kw_revision_t *rev, kw_diag_t *diag);
int kw__pg_tx_agent_insert(kw_store_tx_t *base, const kw_agent_t *ag);
int kw__pg_tx_agent_delete(kw_store_tx_t *base, kw_str_t id);
int kw__pg_tx_key_insert(kw_store_tx_t *base, const kw_apikey_t *key);
int kw__pg_tx_key_delete(kw_store_tx_t *base, kw_str_t id);
int kw__pg_tx_key_rotate(kw_store_tx_t *base, const kw_key_rotation_t *r);
int kw__pg_tx_rel_write(kw_store_tx_t *base, const kw_update_t *ups, size_t n, int64_t now_us,
                        kw_diag_t *diag);
int kw__pg_tx_rel_delete_matching(kw_store_tx_t *base, const kw_filter_t *f, size_t *n_deleted,
                                  kw_diag_t *diag);
int kw__pg_tx_rel_delete_expired(kw_store_tx_t *base, int64_t now_us, size_t limit,
                                 size_t *n_deleted, kw_diag_t *diag);

/* ---- pg_changes.c: the changelog, notifications ---- */

int kw__pg_changelog_write(kw__pg_tx_t *tx, kw_revision_t rev);
int kw__pg_changes_since(kw_store_t *base, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                         void *ud, kw_revision_t *upto, kw_diag_t *diag);
int kw__pg_prune_changelog(kw_store_t *base, int64_t older_than_us, size_t max_rows,
                           size_t *n_deleted, kw_revision_t *pruned_through, kw_diag_t *diag);
int kw__pg_wait_change(kw_store_t *base, int timeout_ms, kw_revision_t *latest);

#endif
