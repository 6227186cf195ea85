/*
 * store/store.c - URL dispatch, argument checks, a transaction's failure state and
 * savepoints.
 *
 * Every public kw_store_* call lands here, is checked once (NULL handles, empty
 * required fields, the "..." subject relation normalized to ""), then goes through
 * the backend's ops table (store_int.h). The change list a transaction reports is
 * recorded by the backends (tx_changes.h); this file only hands it out and truncates
 * it back to a savepoint.
 */
#include "store_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

#define KW_MODULE "store"

int64_t kw__store_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- backends (tag-kw-store-backends) ---- */

typedef int (*open_fn)(const char *target, const kw_store_opts_t *opts, kw_store_t **out,
                       kw_diag_t *diag);

typedef struct backend {
    const char *prefix;  /* URL prefix that selects it, matched case-sensitively */
    open_fn open;        /* NULL: known but not built */
    const char *missing; /* message when open is NULL */
} backend_t;

static const backend_t g_backends[] = {
    {"postgres://", kw__store_pg_open, NULL},
    {"postgresql://", kw__store_pg_open, NULL},
};

int kw_store_open(const char *url, kw_store_t **out, kw_diag_t *diag)
{
    return kw_store_open_with(url, NULL, out, diag);
}

int kw_store_open_with(const char *url, const kw_store_opts_t *opts, kw_store_t **out,
                       kw_diag_t *diag)
{
    const kw_store_opts_t dflt = {0};
    if (!opts)
        opts = &dflt;
    if (!url || !url[0] || !out)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no database URL given");
    for (size_t i = 0; i < KW_ARRAY_LEN(g_backends); i++) {
        size_t n = strlen(g_backends[i].prefix);
        if (strncmp(url, g_backends[i].prefix, n) != 0)
            continue;
        if (!g_backends[i].open)
            return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0, "%s", g_backends[i].missing);
        return g_backends[i].open(url, opts, out, diag);
    }
    /* SQLite: "sqlite:PATH", "sqlite://PATH" (so sqlite:///abs works) or a bare PATH. */
    const char *path = url;
    if (strncmp(url, "sqlite:", 7) == 0) {
        path = url + 7;
        if (strncmp(path, "//", 2) == 0)
            path += 2;
    } else {
        const char *colon = strstr(url, "://");
        if (colon && strchr(url, '/') > colon) {
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "unknown database URL scheme (use sqlite:PATH, a file path, "
                               "or postgres://...)");
        }
    }
    if (!path[0])
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "the sqlite: URL names no file");
    return kw__store_sqlite_open(path, opts, out, diag);
}

void kw_store_close(kw_store_t *s)
{
    if (s)
        s->ops->close(s);
}

const char *kw_store_backend(const kw_store_t *s)
{
    return s ? s->ops->name : "none";
}

int kw_store_ping(kw_store_t *s)
{
    return s ? s->ops->ping(s) : KW_EINVAL;
}

/* ---- metadata ---- */

/* "revision" is the store's own counter: callers may read it, never write it. */
static bool meta_key_ok(const char *key, bool writing)
{
    if (!key || !key[0])
        return false;
    return !(writing && strcmp(key, "revision") == 0);
}

int kw_store_meta_get(kw_store_t *s, const char *key, kw_arena_t *a, char **val, size_t *len)
{
    if (!s || !meta_key_ok(key, false) || !a || !val || !len)
        return KW_EINVAL;
    return s->ops->meta_get(s, key, a, val, len);
}

int kw_store_meta_init(kw_store_t *s, const char *key, kw_str_t want, kw_arena_t *a, char **val,
                       size_t *len)
{
    if (!s || !meta_key_ok(key, true) || !a || !val || !len || (!want.ptr && want.len))
        return KW_EINVAL;
    return s->ops->meta_init(s, key, want, a, val, len);
}

int kw_store_meta_set(kw_store_t *s, const char *key, kw_str_t val)
{
    if (!s || !meta_key_ok(key, true) || (!val.ptr && val.len))
        return KW_EINVAL;
    return s->ops->meta_set(s, key, val);
}

/* ---- relationships at startup ---- */

int kw_store_load_relationships(kw_store_t *s, kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    if (!s || !cb)
        return KW_EINVAL;
    return s->ops->load_relationships(s, cb, ud, rev);
}

int kw_store_revision(kw_store_t *s, kw_revision_t *rev)
{
    if (!s || !rev)
        return KW_EINVAL;
    return s->ops->revision(s, rev);
}

/* ---- reads ---- */

int kw_store_agent_get(kw_store_t *s, kw_str_t id, kw_arena_t *a, kw_agent_t *out)
{
    if (!s || !a || !out)
        return KW_EINVAL;
    if (id.len == 0 || id.len > KW__STORE_ID_MAX)
        return KW_ENOTFOUND;
    return s->ops->agent_get(s, id, a, out);
}

int kw_store_agent_get_by_name(kw_store_t *s, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                               kw_agent_t *out)
{
    if (!s || !a || !out || (!account_id.ptr && account_id.len) || (!name.ptr && name.len))
        return KW_EINVAL;
    return s->ops->agent_get_by_name(s, account_id, name, a, out);
}

int kw_store_agents_by_ids(kw_store_t *s, const kw_str_t *ids, size_t n, kw_arena_t *a,
                           kw_agent_t **out, size_t *n_out)
{
    if (!s || !a || !out || !n_out || (n && !ids))
        return KW_EINVAL;
    return s->ops->agents_by_ids(s, ids, n, a, out, n_out);
}

int kw_store_agents_present(kw_store_t *s, const kw_str_t *ids, size_t n, kw_arena_t *a,
                            bool *present)
{
    if (!s || !a || (n && (!ids || !present)))
        return KW_EINVAL;
    return s->ops->agents_present(s, ids, n, a, present);
}

int kw_store_key_get(kw_store_t *s, kw_str_t id, kw_arena_t *a, kw_apikey_t *out)
{
    if (!s || !a || !out)
        return KW_EINVAL;
    if (id.len == 0 || id.len > KW__STORE_ID_MAX)
        return KW_ENOTFOUND;
    return s->ops->key_get(s, id, a, out);
}

int kw_store_key_get_by_name(kw_store_t *s, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                             kw_arena_t *a, kw_apikey_t *out)
{
    if (!s || !a || !out || (!name.ptr && name.len) || (!type.ptr && type.len))
        return KW_EINVAL;
    if (agent_id.len == 0 || agent_id.len > KW__STORE_ID_MAX)
        return KW_ENOTFOUND;
    return s->ops->key_get_by_name(s, agent_id, name, type, a, out);
}

int kw_store_key_find_by_hash(kw_store_t *s, const uint8_t *hash, size_t len, kw_arena_t *a,
                              kw_apikey_t *out)
{
    if (!s || !a || !out || !hash)
        return KW_EINVAL;
    if (len == 0)
        return KW_ENOTFOUND; /* keys without a hash store NULL, which matches nothing */
    return s->ops->key_find_by_hash(s, hash, len, a, out);
}

int kw_store_keys_of_agent(kw_store_t *s, kw_str_t agent_id, int64_t after_created_us,
                           kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                           size_t *n_out)
{
    if (!s || !a || !out || !n_out || (!after_id.ptr && after_id.len))
        return KW_EINVAL;
    if (agent_id.len == 0 || agent_id.len > KW__STORE_ID_MAX || limit == 0) {
        *out = NULL;
        *n_out = 0;
        return KW_OK;
    }
    return s->ops->keys_of_agent(s, agent_id, after_created_us, after_id, limit, a, out, n_out);
}

int kw_store_keys_by_ids(kw_store_t *s, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                         kw_arena_t *a, kw_apikey_t **out, size_t *n_out)
{
    if (!s || !a || !out || !n_out || (n && !ids))
        return KW_EINVAL;
    if (agent_id.len == 0 || agent_id.len > KW__STORE_ID_MAX || n == 0) {
        *out = NULL;
        *n_out = 0;
        return KW_OK;
    }
    return s->ops->keys_by_ids(s, agent_id, ids, n, a, out, n_out);
}

int kw_store_key_auth(kw_store_t *s, const uint8_t *hash, size_t len, kw_arena_t *a,
                      kw_apikey_t *key, kw_agent_t *agent)
{
    if (!s || !hash || len == 0 || !a || !key || !agent)
        return KW_EINVAL;
    return s->ops->key_auth(s, hash, len, a, key, agent);
}

int kw_store_keys_touch(kw_store_t *s, const kw_key_use_t *uses, size_t n)
{
    if (!s || (n && !uses))
        return KW_EINVAL;
    if (n == 0)
        return KW_OK;
    return s->ops->keys_touch(s, uses, n);
}

/* ---- transactions ---- */

int kw_store_tx_begin(kw_store_t *s, kw_store_tx_t **tx, kw_diag_t *diag)
{
    if (!s || !tx)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no store");
    return s->ops->tx_begin(s, tx, diag);
}

int kw_store_tx_commit(kw_store_tx_t *tx, kw_revision_t *rev, kw_diag_t *diag)
{
    if (!tx)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no transaction");
    if (tx->failed) {
        int rc = tx->failed;
        kw_log(KW_LOG_WARN, KW_MODULE, "commit of a failed transaction refused (%s)",
               kw_err_name(rc));
        tx->store->ops->tx_rollback(tx);
        return kw_diag_set(diag, rc, 0, 0, "the transaction failed earlier and was rolled back");
    }
    return tx->store->ops->tx_commit(tx, rev, diag);
}

void kw_store_tx_rollback(kw_store_tx_t *tx)
{
    if (tx)
        tx->store->ops->tx_rollback(tx);
}

/* ---- savepoints (tag-kw-store-savepoint) ---- */

static void savepoint_name(unsigned depth, char out[24])
{
    snprintf(out, 24, "kw_sp%u", depth);
}

int kw_store_tx_savepoint(kw_store_tx_t *tx, kw_store_savepoint_t *sp, kw_diag_t *diag)
{
    if (!tx || !sp)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no transaction");
    if (tx->failed)
        return kw_diag_set(diag, tx->failed, 0, 0, "the transaction failed earlier");
    char name[24];
    savepoint_name(tx->n_savepoints + 1, name);
    int rc = tx->store->ops->tx_savepoint(tx, name);
    if (rc != KW_OK) {
        /* The database may be gone or the transaction aborted: nothing more can commit. */
        tx->failed = rc;
        return kw_diag_set(diag, rc, 0, 0, "could not set a savepoint in the transaction");
    }
    sp->n_changes = tx->changes.n;
    sp->depth = ++tx->n_savepoints;
    return KW_OK;
}

/* The innermost open savepoint, and its change list mark still inside the list. */
static int savepoint_ok(const kw_store_tx_t *tx, const kw_store_savepoint_t *sp, kw_diag_t *diag)
{
    if (!tx || !sp)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no transaction");
    if (sp->depth == 0 || sp->depth != tx->n_savepoints || sp->n_changes > tx->changes.n)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "savepoint %u is not the innermost open one (%u open)", sp->depth,
                           tx->n_savepoints);
    return KW_OK;
}

int kw_store_tx_rollback_to_savepoint(kw_store_tx_t *tx, const kw_store_savepoint_t *sp,
                                      kw_diag_t *diag)
{
    int rc = savepoint_ok(tx, sp, diag);
    if (rc != KW_OK)
        return rc;
    char name[24];
    savepoint_name(sp->depth, name);
    rc = tx->store->ops->tx_rollback_to(tx, name);
    if (rc != KW_OK) {
        /* The work since the mark may still be there: the tx can only be rolled back. */
        tx->failed = rc;
        return kw_diag_set(diag, rc, 0, 0, "could not roll back to a savepoint");
    }
    kw__store_changes_truncate(&tx->changes, sp->n_changes);
    tx->n_savepoints--;
    tx->failed = KW_OK; /* savepoints are refused on a failed tx: it was clean at the mark */
    return KW_OK;
}

int kw_store_tx_release_savepoint(kw_store_tx_t *tx, const kw_store_savepoint_t *sp,
                                  kw_diag_t *diag)
{
    int rc = savepoint_ok(tx, sp, diag);
    if (rc != KW_OK)
        return rc;
    if (tx->failed)
        return kw_diag_set(diag, tx->failed, 0, 0, "the transaction failed earlier");
    char name[24];
    savepoint_name(sp->depth, name);
    rc = tx->store->ops->tx_release(tx, name);
    if (rc != KW_OK) {
        tx->failed = rc;
        return kw_diag_set(diag, rc, 0, 0, "could not release a savepoint");
    }
    tx->n_savepoints--;
    return KW_OK;
}

void kw_store_tx_changes(kw_store_tx_t *tx, const kw_update_t **ups, size_t *n)
{
    *ups = tx ? tx->changes.ups : NULL;
    *n = tx ? tx->changes.n : 0;
}

/* Errors that leave the database and the change list in step (the failing statement
 * changed nothing) do not poison the tx; anything else does. */
static int tx_result(kw_store_tx_t *tx, int rc)
{
    if (rc != KW_OK && rc != KW_ENOTFOUND && rc != KW_ECONFLICT && rc != KW_EINVAL && !tx->failed)
        tx->failed = rc;
    return rc;
}

static bool id_ok(const char *id)
{
    size_t n = strnlen(id, KW__STORE_ID_MAX + 1);
    return n > 0 && n <= KW__STORE_ID_MAX;
}

int kw_store_tx_agent_insert(kw_store_tx_t *tx, const kw_agent_t *ag)
{
    if (!tx || !ag || !id_ok(ag->id) || !ag->name || !ag->account_id)
        return KW_EINVAL;
    if (tx->failed)
        return tx->failed;
    return tx_result(tx, tx->store->ops->tx_agent_insert(tx, ag));
}

int kw_store_tx_agent_delete(kw_store_tx_t *tx, kw_str_t id)
{
    if (!tx || (!id.ptr && id.len))
        return KW_EINVAL;
    if (tx->failed)
        return tx->failed;
    if (id.len == 0 || id.len > KW__STORE_ID_MAX)
        return KW_ENOTFOUND;
    return tx_result(tx, tx->store->ops->tx_agent_delete(tx, id));
}

int kw_store_tx_key_insert(kw_store_tx_t *tx, const kw_apikey_t *key)
{
    if (!tx || !key || !id_ok(key->id) || !id_ok(key->agent_id) || !key->name || !key->type ||
        (key->hash_len && !key->hash) || (key->secret_enc_len && !key->secret_enc))
        return KW_EINVAL;
    if (tx->failed)
        return tx->failed;
    return tx_result(tx, tx->store->ops->tx_key_insert(tx, key));
}

int kw_store_tx_key_delete(kw_store_tx_t *tx, kw_str_t id)
{
    if (!tx || (!id.ptr && id.len))
        return KW_EINVAL;
    if (tx->failed)
        return tx->failed;
    if (id.len == 0 || id.len > KW__STORE_ID_MAX)
        return KW_ENOTFOUND;
    return tx_result(tx, tx->store->ops->tx_key_delete(tx, id));
}

int kw_store_tx_key_rotate(kw_store_tx_t *tx, const kw_key_rotation_t *r)
{
    if (!tx || !r || (!r->id.ptr && r->id.len) || (r->old_hash_len && !r->old_hash) ||
        (r->old_secret_enc_len && !r->old_secret_enc) || (r->hash_len && !r->hash) ||
        (r->secret_enc_len && !r->secret_enc) || (r->prev_hash_len && !r->prev_hash) ||
        (r->hash_len == 0) == (r->secret_enc_len == 0))
        return KW_EINVAL;
    if (tx->failed)
        return tx->failed;
    if (r->id.len == 0 || r->id.len > KW__STORE_ID_MAX)
        return KW_ENOTFOUND;
    return tx_result(tx, tx->store->ops->tx_key_rotate(tx, r));
}

/* "" for a plain subject whether the caller wrote nothing or SpiceDB's "...". */
static kw_str_t norm_subject_relation(kw_str_t r)
{
    if (r.len == 0 || (r.len == 3 && memcmp(r.ptr, "...", 3) == 0))
        return KW_STR("");
    return r;
}

static bool field_ok(kw_str_t s)
{
    return s.ptr && s.len > 0;
}

int kw_store_tx_rel_write(kw_store_tx_t *tx, const kw_update_t *ups, size_t n, kw_diag_t *diag)
{
    if (!tx || (n && !ups))
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no transaction or updates");
    if (tx->failed)
        return kw_diag_set(diag, tx->failed, 0, 0, "the transaction failed earlier");
    if (n == 0)
        return KW_OK;
    if (n > SIZE_MAX / sizeof(kw_update_t))
        return KW_ENOMEM;
    kw_update_t *norm = kw_malloc(n * sizeof(*norm));
    if (!norm)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const kw_rel_t *r = &ups[i].rel;
        if (ups[i].op != KW_OP_CREATE && ups[i].op != KW_OP_TOUCH && ups[i].op != KW_OP_DELETE) {
            kw_free(norm);
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "update %zu has an unknown operation", i);
        }
        if (!field_ok(r->resource.type) || !field_ok(r->resource.id) || !field_ok(r->relation) ||
            !field_ok(r->subject.type) || !field_ok(r->subject.id) ||
            (!r->subject.relation.ptr && r->subject.relation.len)) {
            kw_free(norm);
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "update %zu has an empty field", i);
        }
        norm[i] = ups[i];
        norm[i].rel.subject.relation = norm_subject_relation(r->subject.relation);
        if (ups[i].op == KW_OP_DELETE) {
            /* A delete names the relationship only (tag-kw-store-caveats). */
            norm[i].rel.caveat = norm[i].rel.caveat_ctx = KW_STR("");
            norm[i].rel.expires_at = 0;
            continue;
        }
        const char *bad =
            (!r->caveat.ptr && r->caveat.len) || (!r->caveat_ctx.ptr && r->caveat_ctx.len)
                ? "a malformed caveat"
            : r->caveat_ctx.len && !r->caveat.len ? "a caveat context but no caveat"
            : r->expires_at < 0                   ? "an expiry before 1970"
                                                  : NULL;
        if (bad) {
            kw_free(norm);
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "update %zu has %s", i, bad);
        }
    }
    int rc = tx_result(tx, tx->store->ops->tx_rel_write(tx, norm, n, kw__store_now_us(), diag));
    kw_free(norm);
    return rc;
}

int kw_store_tx_rel_delete_matching(kw_store_tx_t *tx, const kw_filter_t *f, size_t *n_deleted,
                                    kw_diag_t *diag)
{
    if (!tx || !f)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no transaction or filter");
    if (tx->failed)
        return kw_diag_set(diag, tx->failed, 0, 0, "the transaction failed earlier");
    if (!field_ok(f->resource_type))
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "the filter needs a resource type");
    const kw_str_t *opt[] = {&f->resource_id, &f->relation, &f->subject_type, &f->subject_id,
                             &f->subject_relation};
    for (size_t i = 0; i < KW_ARRAY_LEN(opt); i++)
        if (!opt[i]->ptr && opt[i]->len)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "malformed filter");
    kw_filter_t norm = *f;
    if (norm.has_subject && norm.subject_relation_set)
        norm.subject_relation = norm_subject_relation(f->subject_relation);
    size_t n = 0;
    int rc = tx_result(tx, tx->store->ops->tx_rel_delete_matching(tx, &norm, &n, diag));
    if (rc == KW_OK && n_deleted)
        *n_deleted = n;
    return rc;
}

/* ---- expired relationships ---- */

int kw_store_next_expiry(kw_store_t *s, int64_t *at_us)
{
    if (!s || !at_us)
        return KW_EINVAL;
    return s->ops->next_expiry(s, at_us);
}

int kw_store_tx_rel_delete_expired(kw_store_tx_t *tx, int64_t now_us, size_t limit,
                                   size_t *n_deleted, kw_diag_t *diag)
{
    if (!tx)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no transaction");
    if (tx->failed)
        return kw_diag_set(diag, tx->failed, 0, 0, "the transaction failed earlier");
    if (now_us <= 0 || limit == 0 || limit > KW_STORE_SWEEP_MAX_ROWS)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "a sweep needs a time after 1970 and 1..%d rows (got %zu)",
                           KW_STORE_SWEEP_MAX_ROWS, limit);
    size_t n = 0;
    int rc = tx_result(tx, tx->store->ops->tx_rel_delete_expired(tx, now_us, limit, &n, diag));
    if (rc == KW_OK && n_deleted)
        *n_deleted = n;
    return rc;
}
