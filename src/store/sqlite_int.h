/*
 * store/sqlite_int.h - what the SQLite backend's files share: sqlite.c (statements,
 * errors, the connection pool, open and migrations, metadata, the ops table),
 * sqlite_read.c (the revision and every read), sqlite_tx.c (transactions and their
 * writes) and migrations_sqlite.c (the schema and the runner that applies it at open).
 *
 * Ownership: a kw__sq_conn_t belongs to the pool; kw__sq_conn_take lends it to one
 *   thread until kw__sq_conn_give. Its prepared statements live as long as it does.
 *   Bound text and blobs are SQLITE_STATIC: they must outlive the statement's step.
 * Threads: a connection is used by one thread at a time (SQLITE_OPEN_NOMUTEX); the pool
 *   (mu, cv, idle, n_open) is shared under kw__sq_store_t.mu. A kw__sq_tx_t belongs to
 *   one thread and holds its connection from begin to commit or rollback.
 * Errors: KW_OK or a negative KW_E*, mapped from SQLite's codes by kw__sq_err.
 */
#ifndef KW_STORE_SQLITE_INT_H
#define KW_STORE_SQLITE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "store_int.h"

typedef struct kw__sqlite_migration {
    int version; /* 1, 2, 3 ... in order, no gaps */
    const char *sql;
} kw__sqlite_migration_t;

extern const kw__sqlite_migration_t kw__sqlite_migrations[];
extern const size_t kw__sqlite_n_migrations;

/* ---- statements (their SQL: sqlite.c's table) ---- */

#define KW__SQ_REL_COLS                                                                            \
    "resource_type, resource_id, relation, subject_type, subject_id, subject_relation"
/* The key columns, then caveat name, caveat context and expiry (migration 2). */
#define KW__SQ_REL_XCOLS KW__SQ_REL_COLS ", caveat_name, caveat_context, expires_at_us"

enum {
    KW__SQ_ST_BEGIN_WRITE,
    KW__SQ_ST_BEGIN_READ,
    KW__SQ_ST_COMMIT,
    KW__SQ_ST_ROLLBACK,
    KW__SQ_ST_PING,
    KW__SQ_ST_META_GET,
    KW__SQ_ST_META_INIT,
    KW__SQ_ST_META_SET,
    KW__SQ_ST_REV_GET,
    KW__SQ_ST_REV_BUMP,
    KW__SQ_ST_REL_ALL_ATTRS,
    KW__SQ_ST_REL_ALL_PLAIN,
    KW__SQ_ST_AGENT_GET,
    KW__SQ_ST_AGENT_BY_NAME,
    KW__SQ_ST_AGENT_EXISTS,
    KW__SQ_ST_AGENT_INSERT,
    KW__SQ_ST_AGENT_DELETE,
    KW__SQ_ST_KEY_GET,
    KW__SQ_ST_KEY_GET_OF_AGENT,
    KW__SQ_ST_KEY_BY_NAME,
    KW__SQ_ST_KEY_BY_HASH,
    KW__SQ_ST_KEY_AUTH,
    KW__SQ_ST_KEYS_FIRST,
    KW__SQ_ST_KEYS_AFTER,
    KW__SQ_ST_KEY_INSERT,
    KW__SQ_ST_KEY_DELETE,
    KW__SQ_ST_KEY_ROTATE,
    KW__SQ_ST_KEY_EXISTS,
    KW__SQ_ST_KEY_TOUCH,
    KW__SQ_ST_REL_CREATE,
    KW__SQ_ST_REL_TOUCH,
    KW__SQ_ST_REL_DELETE,
    KW__SQ_ST_REL_DEL_RESOURCE,
    KW__SQ_ST_REL_DEL_SUBJECT,
    KW__SQ_ST_REL_DEL_RESOURCE_KEYS,
    KW__SQ_ST_REL_DEL_SUBJECT_KEYS,
    KW__SQ_ST_AGENT_SET_ACP,
    KW__SQ_ST_AGENT_FORWARD,
    KW__SQ_ST_KEY_FORWARD,
    KW__SQ_ST_REPLAY_PRUNE,
    KW__SQ_ST_REPLAY_CLAIM,
    KW__SQ_ST_CHANGELOG_INSERT,
    KW__SQ_ST_NEXT_EXPIRY,
    KW__SQ_ST_REL_DEL_EXPIRED,
    KW__SQ_ST_N
};

/* Relationship deletes by filter: one statement per combination of the five optional
 * fields (sqlite_tx.c builds them; bit i set: optional field i is constrained). */
#define KW__SQ_N_FILTER_SHAPES 32

typedef struct kw__sq_conn {
    sqlite3 *db;
    sqlite3_stmt *st[KW__SQ_ST_N];                   /* prepared on first use */
    sqlite3_stmt *filter_st[KW__SQ_N_FILTER_SHAPES]; /* likewise */
    struct kw__sq_conn *next;                        /* in the idle list */
    bool memory; /* an in-memory database's: SQLITE_FULL is its bound (KW_EBUDGET) */
} kw__sq_conn_t;

typedef struct kw__sq_store {
    kw_store_t base; /* first: kw_store_t * casts to kw__sq_store_t * */
    char *path;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* signalled when a connection comes back or a slot frees */
    kw__sq_conn_t *idle; /* free list */
    size_t n_open;       /* connections alive, idle or taken */
    size_t max_open;     /* the pool's bound: 1 in memory (the database IS the connection) */
    size_t max_pages;    /* in memory: PRAGMA max_page_count; 0: a file */
} kw__sq_store_t;

typedef struct kw__sq_tx {
    kw_store_tx_t base; /* first */
    kw__sq_conn_t *c;
} kw__sq_tx_t;

/* ---- sqlite.c: errors, statements, columns, the pool ---- */

/* Maps a SQLite result (extended codes are on) to a KW_E* code and logs what failed:
 * unique/primary key -> KW_ECONFLICT, foreign key -> KW_ENOTFOUND, NOMEM -> KW_ENOMEM,
 * anything else KW_EDB (diag, may be NULL, says only "database error"). */
int kw__sq_err(kw__sq_conn_t *c, int rc, const char *what, kw_diag_t *diag);
/* c's prepared statement `id` (KW__SQ_ST_*), prepared on first use. */
int kw__sq_stmt(kw__sq_conn_t *c, int id, sqlite3_stmt **out);
/* Resets st and clears its bindings, ready for the next use. */
void kw__sq_stmt_done(sqlite3_stmt *st);
/* Binds a slice as text (SQLITE_STATIC). */
int kw__sq_bind_str(sqlite3_stmt *st, int i, kw_str_t s);
/* Steps an already bound statement that returns no rows (or ignores them); resets it. */
int kw__sq_exec_done(kw__sq_conn_t *c, sqlite3_stmt *st, const char *what, kw_diag_t *diag);
/* kw__sq_exec_done of statement `id`, which takes no parameters. */
int kw__sq_exec_id(kw__sq_conn_t *c, int id, const char *what, kw_diag_t *diag);
/* Text column i as a slice valid until the next step or reset ("" for NULL). */
kw_str_t kw__sq_col_str(sqlite3_stmt *st, int i);
/* Columns 6..8 of a KW__SQ_REL_XCOLS row into rel: caveat name, context, expiry (NULL:
 * none). Strings point into the statement's current row. */
void kw__sq_read_caveat(sqlite3_stmt *st, kw_rel_t *rel);
/* Lends a connection to this thread (opening one when the pool may grow, else waiting
 * for one to come back). */
int kw__sq_conn_take(kw__sq_store_t *s, kw__sq_conn_t **out, kw_diag_t *diag);
/* Gives it back; one left inside a transaction is rolled back, or dropped if it cannot. */
void kw__sq_conn_give(kw__sq_store_t *s, kw__sq_conn_t *c);

/* ---- migrations_sqlite.c: the runner ---- */

/* Applies every migration c's database lacks, or refuses a newer database; run by open. */
int kw__sq_migrate(kw__sq_conn_t *c, kw_diag_t *diag);

/* ---- sqlite_read.c: the revision, reads (kw_store_ops_t entries) ---- */

/* A statement parameter for kw__sq_query_one: text, or a blob when `blob`. */
typedef struct kw__sq_arg {
    const void *ptr;
    size_t len;
    bool blob;
} kw__sq_arg_t;
#define KW__SQ_TEXT(s) ((kw__sq_arg_t){(s).ptr, (s).len, false})

/* Copies the current row of st into *out (allocating from `a`): KW_OK or KW_ENOMEM. */
typedef int (*kw__sq_row_fn)(sqlite3_stmt *st, kw_arena_t *a, void *out);

/* The one query-one-row helper: on a pooled connection, runs statement `id` with args
 * bound as ?1..?n_args and reads its row with `read`. KW_OK, KW_ENOTFOUND (no row), or a
 * database error (logged with `what`). */
int kw__sq_query_one(kw__sq_store_t *s, int id, const kw__sq_arg_t *args, size_t n_args,
                     kw__sq_row_fn read, kw_arena_t *a, void *out, const char *what);

int kw__sq_revision(kw_store_t *base, kw_revision_t *rev);
int kw__sq_load_relationships(kw_store_t *base, kw_rel_cb cb, void *ud, kw_revision_t *rev);
int kw__sq_next_expiry(kw_store_t *base, int64_t *at_us);
int kw__sq_agent_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_agent_t *out);
int kw__sq_agent_get_by_name(kw_store_t *base, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                             kw_agent_t *out);
int kw__sq_agents_present(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                          bool *present);
int kw__sq_agents_by_ids(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                         kw_agent_t **out, size_t *n_out);
int kw__sq_key_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_apikey_t *out);
int kw__sq_key_get_by_name(kw_store_t *base, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                           kw_arena_t *a, kw_apikey_t *out);
int kw__sq_key_find_by_hash(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                            kw_apikey_t *out);
int kw__sq_keys_of_agent(kw_store_t *base, kw_str_t agent_id, int64_t after_created_us,
                         kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                         size_t *n_out);
int kw__sq_keys_by_ids(kw_store_t *base, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                       kw_arena_t *a, kw_apikey_t **out, size_t *n_out);
int kw__sq_keys_touch(kw_store_t *base, const kw_key_use_t *uses, size_t n);
int kw__sq_key_auth(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                    kw_apikey_t *key, kw_agent_t *agent);

/* ---- sqlite_tx.c: transactions (kw_store_ops_t entries) ---- */

int kw__sq_tx_begin(kw_store_t *base, kw_store_tx_t **out, kw_diag_t *diag);
int kw__sq_tx_commit(kw_store_tx_t *base, kw_revision_t *rev, kw_diag_t *diag);
void kw__sq_tx_rollback(kw_store_tx_t *base);
int kw__sq_tx_savepoint(kw_store_tx_t *base, const char *name);
int kw__sq_tx_rollback_to(kw_store_tx_t *base, const char *name);
int kw__sq_tx_release(kw_store_tx_t *base, const char *name);
int kw__sq_tx_agent_insert(kw_store_tx_t *base, const kw_agent_t *ag);
int kw__sq_tx_agent_delete(kw_store_tx_t *base, kw_str_t id);
int kw__sq_tx_agent_set_acp_url(kw_store_tx_t *base, kw_str_t id, const char *acp_url);
int kw__sq_agent_find_forward(kw_store_t *base, kw_str_t name, kw_arena_t *a, kw_agent_t *out);
int kw__sq_key_find_forward(kw_store_t *base, kw_str_t agent_name, kw_str_t key_name, kw_str_t type,
                            kw_arena_t *a, kw_apikey_t *out);
int kw__sq_replay_claim(kw_store_t *base, kw_str_t id, int64_t ttl_us);
int kw__sq_tx_key_insert(kw_store_tx_t *base, const kw_apikey_t *k);
int kw__sq_tx_key_delete(kw_store_tx_t *base, kw_str_t id);
int kw__sq_tx_key_rotate(kw_store_tx_t *base, const kw_key_rotation_t *r);
int kw__sq_tx_rel_write(kw_store_tx_t *base, const kw_update_t *ups, size_t n, int64_t now_us,
                        kw_diag_t *diag);
int kw__sq_tx_rel_delete_matching(kw_store_tx_t *base, const kw_filter_t *f, size_t *n_deleted,
                                  kw_diag_t *diag);
int kw__sq_tx_rel_delete_expired(kw_store_tx_t *base, int64_t now_us, size_t limit,
                                 size_t *n_deleted, kw_diag_t *diag);

/* ---- sqlite_changes.c: the changelog that Watch reads ---- */

/* Inside the commit, after the revision bump: tx's changes as changelog rows at `rev`
 * (and, now and then, a bounded prune past retention). */
int kw__sq_changelog_write(kw__sq_conn_t *c, kw_store_tx_t *tx, kw_revision_t rev, kw_diag_t *diag);
int kw__sq_watch_changes(kw_store_t *base, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                         void *ud, kw_revision_t *upto, kw_diag_t *diag);
int kw__sq_export_relationships(kw_store_t *base, const kw_str_t *after, kw_str_t resource_type,
                                kw_rel_cb cb, void *ud, kw_revision_t *rev);

#endif
