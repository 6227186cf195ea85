/*
 * store/store_int.h - what store.c (the dispatcher) shares with the backends.
 *
 * A backend embeds `struct kw_store` as the FIRST member of its own handle and
 * `struct kw_store_tx` as the first member of its transaction, so the public pointers
 * can be cast to the backend's types. store.c validates arguments, keeps the
 * transaction's sticky failure state and its savepoints, and dispatches through the
 * backend's kw_store_ops_t; a backend talks to its database and records each
 * relationship change it makes in the transaction's change list (tx_changes.h, below
 * both backends and store.c, so no backend calls back into store.c).
 *
 * Adding a backend (PostgreSQL: store/pg.c) means one ops table, one open function
 * and one line in store.c's backend table (tag-kw-store-backends). Nothing above the
 * store changes.
 *
 * Ownership: change-list strings are copied into an arena owned by the tx and stay
 * valid until commit/rollback. Threads: a tx belongs to one thread.
 */
#ifndef KW_STORE_STORE_INT_H
#define KW_STORE_STORE_INT_H

#include <string.h>

#include "store.h"
#include "tx_changes.h"

/* Object types whose rows the store owns; agent/key deletes remove every relationship
 * naming them (tag-kw-object-types: must match src/api/agentex.zed and src/api). */
#define KW__STORE_TYPE_AGENT "agent"
#define KW__STORE_TYPE_KEY "agent_api_key"

/* The longest id a row can carry (kw_agent_t.id is char[37]: a UUID's text). */
#define KW__STORE_ID_MAX 36

typedef struct kw_store_ops {
    const char *name; /* "sqlite" | "postgres" */
    void (*close)(kw_store_t *s);
    int (*ping)(kw_store_t *s);

    int (*meta_get)(kw_store_t *s, const char *key, kw_arena_t *a, char **val, size_t *len);
    int (*meta_init)(kw_store_t *s, const char *key, kw_str_t want, kw_arena_t *a, char **val,
                     size_t *len);
    int (*meta_set)(kw_store_t *s, const char *key, kw_str_t val);

    int (*load_relationships)(kw_store_t *s, kw_rel_cb cb, void *ud, kw_revision_t *rev);
    int (*revision)(kw_store_t *s, kw_revision_t *rev);

    int (*agent_get)(kw_store_t *s, kw_str_t id, kw_arena_t *a, kw_agent_t *out);
    int (*agent_get_by_name)(kw_store_t *s, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                             kw_agent_t *out);
    int (*agents_by_ids)(kw_store_t *s, const kw_str_t *ids, size_t n, kw_arena_t *a,
                         kw_agent_t **out, size_t *n_out);
    int (*agents_present)(kw_store_t *s, const kw_str_t *ids, size_t n, kw_arena_t *a,
                          bool *present);
    int (*key_get)(kw_store_t *s, kw_str_t id, kw_arena_t *a, kw_apikey_t *out);
    int (*key_get_by_name)(kw_store_t *s, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                           kw_arena_t *a, kw_apikey_t *out);
    int (*key_find_by_hash)(kw_store_t *s, const uint8_t *hash, size_t len, kw_arena_t *a,
                            kw_apikey_t *out);
    int (*keys_of_agent)(kw_store_t *s, kw_str_t agent_id, int64_t after_created_us,
                         kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                         size_t *n_out);
    int (*keys_by_ids)(kw_store_t *s, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                       kw_arena_t *a, kw_apikey_t **out, size_t *n_out);
    int (*keys_touch)(kw_store_t *s, const kw_key_use_t *uses, size_t n);
    int (*key_auth)(kw_store_t *s, const uint8_t *hash, size_t len, kw_arena_t *a, kw_apikey_t *key,
                    kw_agent_t *agent);

    /* tx_begin allocates the backend's tx, calls kw__store_tx_init on its base, and
     * takes the global write order before returning (tag-kw-store-write-order). */
    int (*tx_begin)(kw_store_t *s, kw_store_tx_t **tx, kw_diag_t *diag);
    /* Commits (at the next revision) or, on failure, rolls back; frees tx either way
     * (after kw__store_tx_fini). */
    int (*tx_commit)(kw_store_tx_t *tx, kw_revision_t *rev, kw_diag_t *diag);
    void (*tx_rollback)(kw_store_tx_t *tx); /* frees tx */
    int (*tx_agent_insert)(kw_store_tx_t *tx, const kw_agent_t *ag);
    int (*tx_agent_delete)(kw_store_tx_t *tx, kw_str_t id);
    int (*tx_key_insert)(kw_store_tx_t *tx, const kw_apikey_t *key);
    int (*tx_key_delete)(kw_store_tx_t *tx, kw_str_t id);
    int (*tx_key_rotate)(kw_store_tx_t *tx, const kw_key_rotation_t *r);
    /* Updates arrive validated and normalized: non-empty fields, subject relation ""
     * for none (never "..."). */
    /* Savepoint `name` ("kw_sp<depth>"): SAVEPOINT, ROLLBACK TO + RELEASE (undo and
     * end), RELEASE (keep and end). store.c truncates the change list and keeps the failure state.
     */
    int (*tx_savepoint)(kw_store_tx_t *tx, const char *name);
    int (*tx_rollback_to)(kw_store_tx_t *tx, const char *name);
    int (*tx_release)(kw_store_tx_t *tx, const char *name);
    /* now_us: this process's clock (CLOCK_REALTIME), for a CREATE over an expired
     * relationship (store.h, tag-kw-store-caveats). DELETEs arrive with their caveat
     * fields cleared. */
    int (*tx_rel_write)(kw_store_tx_t *tx, const kw_update_t *ups, size_t n, int64_t now_us,
                        kw_diag_t *diag);
    /* Same normalization: filter's subject_relation is "" for none when set. */
    int (*tx_rel_delete_matching)(kw_store_tx_t *tx, const kw_filter_t *f, size_t *n_deleted,
                                  kw_diag_t *diag);
    /* Expired relationships (kw_store_next_expiry, kw_store_tx_rel_delete_expired);
     * arguments checked by store.c. */
    int (*next_expiry)(kw_store_t *s, int64_t *at_us);
    int (*tx_rel_delete_expired)(kw_store_tx_t *tx, int64_t now_us, size_t limit, size_t *n_deleted,
                                 kw_diag_t *diag);

    /* Followers (kw_store_changes_since / kw_store_wait_change); NULL when the backend
     * keeps no changelog (SQLite), and the calls then answer KW_EUNSUPPORTED. */
    int (*changes_since)(kw_store_t *s, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                         void *ud, kw_revision_t *upto, kw_diag_t *diag);
    /* Retention (kw_store_prune_changelog); NULL with no changelog. */
    int (*prune_changelog)(kw_store_t *s, int64_t older_than_us, size_t max_rows, size_t *n_deleted,
                           kw_revision_t *pruned_through, kw_diag_t *diag);
    int (*wait_change)(kw_store_t *s, int timeout_ms, kw_revision_t *latest);
    /* The audit trail and copies (audit.h; audit_int.h). */
    const struct kw__store_audit_ops *audit;
    /* Watch's feed (kw_store_watch_changes): changes_since's contract, on every backend. */
    int (*watch_changes)(kw_store_t *s, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                         void *ud, kw_revision_t *upto, kw_diag_t *diag);
    /* kw_store_export_relationships (after: 6 key fields or NULL). */
    int (*export_relationships)(kw_store_t *s, const kw_str_t *after, kw_str_t resource_type,
                                kw_rel_cb cb, void *ud, kw_revision_t *rev);
} kw_store_ops_t;

struct kw_store {
    const kw_store_ops_t *ops;
};

struct kw_store_tx {
    kw_store_t *store;
    kw__store_changes_t changes; /* what kw_store_tx_changes reports */
    /* Sticky: the first error that may have left the database and the change list out
     * of step (OOM while recording, a database failure mid-operation). A failed tx can
     * only be rolled back; commit refuses it with this code. */
    int failed;
    unsigned n_savepoints; /* open savepoints (kw_store_tx_savepoint) */
};

/* A backend's tx_begin calls this on its tx's base before anything else. */
static inline void kw__store_tx_init(kw_store_tx_t *tx, kw_store_t *s)
{
    memset(tx, 0, sizeof(*tx));
    tx->store = s;
    kw__store_changes_init(&tx->changes);
}

/* Releases the change list; the backend frees its own struct afterwards. */
static inline void kw__store_tx_fini(kw_store_tx_t *tx)
{
    kw__store_changes_fini(&tx->changes);
}

/* Microseconds since the Unix epoch by this process's clock (CLOCK_REALTIME), the clock
 * the engine compares expiry with (store.c). */
int64_t kw__store_now_us(void);

/* Backends. Each opens its target (the URL with any scheme already removed for SQLite)
 * with `opts` (never NULL: store.c passes zeroed options for kw_store_open). */
KW_NODISCARD int kw__store_sqlite_open(const char *path, const kw_store_opts_t *opts,
                                       kw_store_t **out, kw_diag_t *diag);
/* The whole postgres:// or postgresql:// URL (store/pg.c). */
KW_NODISCARD int kw__store_pg_open(const char *url, const kw_store_opts_t *opts, kw_store_t **out,
                                   kw_diag_t *diag);

#endif
