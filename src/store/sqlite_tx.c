/*
 * store/sqlite_tx.c - the SQLite backend's write transactions: begin (the write lock),
 * commit (the revision bump), rollback, savepoints, and the row and relationship writes,
 * each recording the relationship changes it makes in the tx's change list.
 *
 * Writers: BEGIN IMMEDIATE takes SQLite's single write lock at the start, so two
 * writers never deadlock upgrading a read lock; the second waits up to busy_timeout.
 * The revision lives in meta('revision') and is bumped by the commit inside the same
 * transaction, so revisions are unique, gapless and in commit order. Since the write
 * lock is held from begin, a transaction holds the global write order from begin to
 * commit (tag-kw-store-write-order), as pg_tx.c's revision row lock does.
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"

#define KW_MODULE "store"

/* Ends t after COMMIT or ROLLBACK: the connection goes back to the pool (which rolls back
 * or drops one still inside a transaction), then the change list and t are freed. */
static void tx_end(kw__sq_tx_t *t)
{
    kw__sq_conn_give((kw__sq_store_t *)t->base.store, t->c);
    kw__store_tx_fini(&t->base);
    kw_free(t);
}

int kw__sq_tx_begin(kw_store_t *base, kw_store_tx_t **out, kw_diag_t *diag)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_tx_t *t = kw_calloc(1, sizeof(*t));
    if (!t)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    kw__store_tx_init(&t->base, base);
    int rc = kw__sq_conn_take(s, &t->c, diag);
    if (rc != KW_OK)
        goto fail_conn;
    rc = kw__sq_exec_id(t->c, KW__SQ_ST_BEGIN_WRITE, "begin", diag);
    if (rc != KW_OK)
        goto fail_begin;
    *out = &t->base;
    return KW_OK;

fail_begin:
    kw__sq_conn_give(s, t->c);
fail_conn:
    kw__store_tx_fini(&t->base);
    kw_free(t);
    return rc;
}

void kw__sq_tx_rollback(kw_store_tx_t *base)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    /* SQLite may have rolled the transaction back itself (SQLITE_FULL: an in-memory
     * database at its bound): then there is nothing left to roll back. */
    if (!sqlite3_get_autocommit(t->c->db) &&
        kw__sq_exec_id(t->c, KW__SQ_ST_ROLLBACK, "rollback", NULL) != KW_OK)
        kw_log(KW_LOG_ERROR, KW_MODULE, "rollback failed; the connection will be dropped");
    tx_end(t);
}

int kw__sq_tx_commit(kw_store_tx_t *base, kw_revision_t *rev, kw_diag_t *diag)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    kw_revision_t r = 0;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_REV_BUMP, &st);
    if (rc == KW_OK) {
        int src = sqlite3_step(st);
        if (src == SQLITE_ROW)
            r = (kw_revision_t)sqlite3_column_int64(st, 0);
        else
            rc = src == SQLITE_DONE ? KW_EDB : kw__sq_err(t->c, src, "bump revision", diag);
        kw__sq_stmt_done(st);
    }
    if (rc == KW_OK) /* the changelog rows: durable with the revision (sqlite_changes.c) */
        rc = kw__sq_changelog_write(t->c, base, r, diag);
    if (rc == KW_OK)
        rc = kw__sq_exec_id(t->c, KW__SQ_ST_COMMIT, "commit", diag);
    if (rc != KW_OK) {
        if (rc != KW_EBUDGET) /* an in-memory database's bound keeps its own words */
            kw_diag_set(diag, rc, 0, 0, "the transaction could not be committed; nothing changed");
        kw__sq_tx_rollback(base);
        return rc;
    }
    tx_end(t);
    if (rev)
        *rev = r;
    return KW_OK;
}

/* Savepoints (store.h, tag-kw-store-savepoint): plain SQL, the names are store.c's
 * "kw_sp<depth>". A failed statement leaves a SQLite transaction usable, but its earlier
 * statements (a key row before its relationships) stay: ROLLBACK TO undoes them. */
static int sq_savepoint_exec(kw__sq_tx_t *t, const char *sql)
{
    int rc = sqlite3_exec(t->c->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? KW_OK : kw__sq_err(t->c, rc, "savepoint", NULL);
}

int kw__sq_tx_savepoint(kw_store_tx_t *base, const char *name)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "SAVEPOINT %s", name);
    return sq_savepoint_exec((kw__sq_tx_t *)base, sql);
}

int kw__sq_tx_rollback_to(kw_store_tx_t *base, const char *name)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "ROLLBACK TO %s; RELEASE %s", name, name);
    return sq_savepoint_exec((kw__sq_tx_t *)base, sql);
}

int kw__sq_tx_release(kw_store_tx_t *base, const char *name)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "RELEASE %s", name);
    return sq_savepoint_exec((kw__sq_tx_t *)base, sql);
}

int kw__sq_tx_agent_insert(kw_store_tx_t *base, const kw_agent_t *ag)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_AGENT_INSERT, &st);
    if (rc != KW_OK)
        return rc;
    sqlite3_bind_text(st, 1, ag->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ag->account_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, ag->name, -1, SQLITE_STATIC);
    if (ag->description)
        sqlite3_bind_text(st, 4, ag->description, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_int64(st, 5, ag->created_at_us);
    if (ag->acp_url)
        sqlite3_bind_text(st, 6, ag->acp_url, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    return kw__sq_exec_done(t->c, st, "insert agent", NULL);
}

int kw__sq_tx_agent_set_acp_url(kw_store_tx_t *base, kw_str_t id, const char *acp_url)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_AGENT_SET_ACP, &st);
    if (rc != KW_OK)
        return rc;
    kw__sq_bind_str(st, 1, id);
    if (acp_url)
        sqlite3_bind_text(st, 2, acp_url, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    rc = kw__sq_exec_done(t->c, st, "update agent", NULL);
    if (rc == KW_OK && sqlite3_changes(t->c->db) == 0)
        rc = KW_ENOTFOUND;
    return rc;
}

/* Binds bytes as a blob, or NULL when n is 0 (SQLITE_STATIC). */
static int bind_blob_or_null(sqlite3_stmt *st, int i, const uint8_t *p, size_t n)
{
    if (n == 0)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
}

int kw__sq_tx_key_insert(kw_store_tx_t *base, const kw_apikey_t *k)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_KEY_INSERT, &st);
    if (rc != KW_OK)
        return rc;
    sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, k->type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, k->created_at_us);
    bind_blob_or_null(st, 6, k->hash, k->hash_len);
    bind_blob_or_null(st, 7, k->secret_enc, k->secret_enc_len);
    if (k->expires_at_us)
        sqlite3_bind_int64(st, 8, k->expires_at_us);
    else
        sqlite3_bind_null(st, 8);
    return kw__sq_exec_done(t->c, st, "insert key", NULL);
}

/* tag-kw-key-rotate: one UPDATE conditioned on the credential the request read; when it
 * changes nothing, the key is either gone (a delete won: 404) or holds another credential
 * (a rotation won: 409). Inside the write transaction, so nothing moves in between. */
int kw__sq_tx_key_rotate(kw_store_tx_t *base, const kw_key_rotation_t *r)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_KEY_ROTATE, &st);
    if (rc != KW_OK)
        return rc;
    kw__sq_bind_str(st, 1, r->id);
    bind_blob_or_null(st, 2, r->hash, r->hash_len);
    bind_blob_or_null(st, 3, r->secret_enc, r->secret_enc_len);
    bind_blob_or_null(st, 4, r->prev_hash, r->prev_hash_len);
    if (r->prev_hash_len)
        sqlite3_bind_int64(st, 5, r->prev_until_us);
    else
        sqlite3_bind_null(st, 5);
    bind_blob_or_null(st, 6, r->old_hash, r->old_hash_len);
    bind_blob_or_null(st, 7, r->old_secret_enc, r->old_secret_enc_len);
    rc = kw__sq_exec_done(t->c, st, "rotate key", NULL);
    if (rc != KW_OK || sqlite3_changes(t->c->db) == 1)
        return rc;
    rc = kw__sq_stmt(t->c, KW__SQ_ST_KEY_EXISTS, &st);
    if (rc != KW_OK)
        return rc;
    kw__sq_bind_str(st, 1, r->id);
    int src = sqlite3_step(st);
    rc = src == SQLITE_ROW    ? KW_ECONFLICT
         : src == SQLITE_DONE ? KW_ENOTFOUND
                              : kw__sq_err(t->c, src, "rotate key", NULL);
    kw__sq_stmt_done(st);
    return rc;
}

/* Last uses: a short write transaction of its own (no revision bump: nothing a check or
 * a follower reads changes). BEGIN IMMEDIATE waits for a running writer like any write. */
int kw__sq_keys_touch(kw_store_t *base, const kw_key_use_t *uses, size_t n)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_exec_id(c, KW__SQ_ST_BEGIN_WRITE, "begin touch", NULL);
    if (rc != KW_OK)
        goto out;
    rc = kw__sq_stmt(c, KW__SQ_ST_KEY_TOUCH, &st);
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        sqlite3_bind_text(st, 1, uses[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, uses[i].at_us);
        rc = kw__sq_exec_done(c, st, "touch key", NULL);
    }
    if (rc == KW_OK)
        rc = kw__sq_exec_id(c, KW__SQ_ST_COMMIT, "commit touch", NULL);
    if (rc != KW_OK)
        (void)kw__sq_exec_id(c, KW__SQ_ST_ROLLBACK, "roll back touch", NULL);
out:
    kw__sq_conn_give(s, c);
    return rc;
}

/* Steps a bound DELETE ... RETURNING <rel cols> to the end, recording each row as a
 * DELETE change. SQLite deletes every row on the first step, so a failure while
 * recording leaves the tx out of step with its change list: the caller's error then
 * poisons the tx (store.c). */
static int delete_recording(kw__sq_tx_t *t, sqlite3_stmt *st, const char *what, size_t *n,
                            kw_diag_t *diag)
{
    int rc = KW_OK, src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        const kw_rel_t rel = {
            .resource = {kw__sq_col_str(st, 0), kw__sq_col_str(st, 1)},
            .relation = kw__sq_col_str(st, 2),
            .subject = {kw__sq_col_str(st, 3), kw__sq_col_str(st, 4), kw__sq_col_str(st, 5)}};
        rc = kw__store_changes_record(&t->base.changes, KW_OP_DELETE, &rel);
        if (rc != KW_OK)
            break;
        if (n)
            (*n)++;
    }
    if (rc == KW_OK && src != SQLITE_DONE)
        rc = kw__sq_err(t->c, src, what, diag);
    kw__sq_stmt_done(st);
    if (rc == KW_ENOMEM)
        kw_diag_set(diag, rc, 0, 0, "out of memory");
    return rc;
}

/* Deletes every relationship naming type:id as its resource, then as its subject. */
static int delete_rels_of(kw__sq_tx_t *t, const char *type, kw_str_t id)
{
    const int ids[2] = {KW__SQ_ST_REL_DEL_RESOURCE, KW__SQ_ST_REL_DEL_SUBJECT};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st = NULL;
        int rc = kw__sq_stmt(t->c, ids[i], &st);
        if (rc != KW_OK)
            return rc;
        sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
        kw__sq_bind_str(st, 2, id);
        rc = delete_recording(t, st, "delete relationships of an object", NULL, NULL);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

int kw__sq_tx_key_delete(kw_store_tx_t *base, kw_str_t id)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_KEY_DELETE, &st);
    if (rc != KW_OK)
        return rc;
    kw__sq_bind_str(st, 1, id);
    rc = kw__sq_exec_done(t->c, st, "delete key", NULL);
    if (rc != KW_OK)
        return rc;
    if (sqlite3_changes(t->c->db) == 0)
        return KW_ENOTFOUND;
    return delete_rels_of(t, KW__STORE_TYPE_KEY, id);
}

int kw__sq_tx_agent_delete(kw_store_tx_t *base, kw_str_t id)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_AGENT_EXISTS, &st);
    if (rc != KW_OK)
        return rc;
    kw__sq_bind_str(st, 1, id);
    int src = sqlite3_step(st);
    kw__sq_stmt_done(st);
    if (src == SQLITE_DONE)
        return KW_ENOTFOUND;
    if (src != SQLITE_ROW)
        return kw__sq_err(t->c, src, "find agent", NULL);
    /* The keys' relationships first: the agent row's cascade removes the key rows the
     * sub-selects need. */
    const int keyed[2] = {KW__SQ_ST_REL_DEL_RESOURCE_KEYS, KW__SQ_ST_REL_DEL_SUBJECT_KEYS};
    for (int i = 0; i < 2; i++) {
        rc = kw__sq_stmt(t->c, keyed[i], &st);
        if (rc != KW_OK)
            return rc;
        kw__sq_bind_str(st, 1, id);
        sqlite3_bind_text(st, 2, KW__STORE_TYPE_KEY, -1, SQLITE_STATIC);
        rc = delete_recording(t, st, "delete relationships of an agent's keys", NULL, NULL);
        if (rc != KW_OK)
            return rc;
    }
    rc = delete_rels_of(t, KW__STORE_TYPE_AGENT, id);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_stmt(t->c, KW__SQ_ST_AGENT_DELETE, &st);
    if (rc != KW_OK)
        return rc;
    kw__sq_bind_str(st, 1, id);
    rc = kw__sq_exec_done(t->c, st, "delete agent", NULL);
    /* An error here comes after relationship deletes: make it poison the tx. */
    return rc == KW_OK || rc == KW_ENOMEM ? rc : KW_EDB;
}

/* Binds ?1..?6, the key; with `caveats`, also ?7..?9: caveat name, context and expiry,
 * each NULL when absent (tag-kw-store-caveats). */
static void bind_rel(sqlite3_stmt *st, const kw_rel_t *r, bool caveats)
{
    kw__sq_bind_str(st, 1, r->resource.type);
    kw__sq_bind_str(st, 2, r->resource.id);
    kw__sq_bind_str(st, 3, r->relation);
    kw__sq_bind_str(st, 4, r->subject.type);
    kw__sq_bind_str(st, 5, r->subject.id);
    kw__sq_bind_str(st, 6, r->subject.relation);
    if (!caveats)
        return;
    if (r->caveat.len)
        kw__sq_bind_str(st, 7, r->caveat);
    else
        sqlite3_bind_null(st, 7);
    if (r->caveat_ctx.len)
        kw__sq_bind_str(st, 8, r->caveat_ctx);
    else
        sqlite3_bind_null(st, 8);
    if (r->expires_at)
        sqlite3_bind_int64(st, 9, r->expires_at);
    else
        sqlite3_bind_null(st, 9);
}

static int conflict_diag(const kw_rel_t *r, size_t i, kw_diag_t *diag)
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(r, &b);
    int rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                         "could not CREATE relationship `%.*s` (update %zu), as it already exists",
                         b.failed || !b.ptr ? 0 : (int)b.len, b.ptr ? b.ptr : "", i);
    kw_buf_free(&b);
    return rc;
}

int kw__sq_tx_rel_write(kw_store_tx_t *base, const kw_update_t *ups, size_t n, int64_t now_us,
                        kw_diag_t *diag)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    for (size_t i = 0; i < n; i++) {
        const kw_rel_t *r = &ups[i].rel;
        int id = ups[i].op == KW_OP_CREATE  ? KW__SQ_ST_REL_CREATE
                 : ups[i].op == KW_OP_TOUCH ? KW__SQ_ST_REL_TOUCH
                                            : KW__SQ_ST_REL_DELETE;
        sqlite3_stmt *st = NULL;
        int rc = kw__sq_stmt(t->c, id, &st);
        if (rc != KW_OK)
            return rc;
        /* Record first so an OOM leaves the database untouched by this update. */
        bool del = ups[i].op == KW_OP_DELETE;
        rc = kw__store_changes_record(&base->changes, del ? KW_OP_DELETE : KW_OP_TOUCH, r);
        if (rc != KW_OK)
            return kw_diag_set(diag, rc, 0, 0, "out of memory");
        bind_rel(st, r, !del);
        if (ups[i].op == KW_OP_CREATE)
            sqlite3_bind_int64(st, 10, now_us);
        rc = kw__sq_exec_done(t->c, st, "write relationship", NULL);
        /* A CREATE that changed nothing met a live row (its upsert replaces only an
         * expired one): the same conflict as a plain unique violation. */
        if (rc == KW_OK && ups[i].op == KW_OP_CREATE && sqlite3_changes(t->c->db) == 0)
            rc = KW_ECONFLICT;
        if (rc != KW_OK) {
            kw__store_changes_unrecord(&base->changes);
            if (rc == KW_ECONFLICT)
                return conflict_diag(r, i, diag);
            return kw_diag_set(diag, rc, 0, 0, "database error");
        }
        if (del && sqlite3_changes(t->c->db) == 0)
            kw__store_changes_unrecord(&base->changes);
    }
    return KW_OK;
}

/* Filter deletes: one statement per combination of the optional fields (bit i set:
 * optional field i is constrained, in filter_cols order). */
static const char *const g_filter_cols[5] = {"resource_id", "relation", "subject_type",
                                             "subject_id", "subject_relation"};

static int filter_stmt(kw__sq_conn_t *c, unsigned mask, sqlite3_stmt **out)
{
    if (!c->filter_st[mask]) {
        char sql[512];
        size_t off = (size_t)snprintf(sql, sizeof(sql),
                                      "DELETE FROM relationships WHERE resource_type = ?1");
        for (unsigned i = 0; i < 5; i++)
            if (mask & (1u << i))
                off += (size_t)snprintf(sql + off, sizeof(sql) - off, " AND %s = ?%u",
                                        g_filter_cols[i], i + 2);
        snprintf(sql + off, sizeof(sql) - off, " RETURNING " KW__SQ_REL_COLS);
        int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->filter_st[mask],
                                    NULL);
        if (rc != SQLITE_OK)
            return kw__sq_err(c, rc, "prepare filter delete", NULL);
    }
    *out = c->filter_st[mask];
    return KW_OK;
}

int kw__sq_tx_rel_delete_matching(kw_store_tx_t *base, const kw_filter_t *f, size_t *n_deleted,
                                  kw_diag_t *diag)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    const kw_str_t vals[5] = {f->resource_id, f->relation, f->subject_type, f->subject_id,
                              f->subject_relation};
    const bool on[5] = {
        f->resource_id.len > 0, f->relation.len > 0, f->has_subject && f->subject_type.len > 0,
        f->has_subject && f->subject_id.len > 0, f->has_subject && f->subject_relation_set};
    unsigned mask = 0;
    for (unsigned i = 0; i < 5; i++)
        if (on[i])
            mask |= 1u << i;
    sqlite3_stmt *st = NULL;
    int rc = filter_stmt(t->c, mask, &st);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "database error");
    kw__sq_bind_str(st, 1, f->resource_type);
    for (int i = 0; i < 5; i++)
        if (on[i])
            kw__sq_bind_str(st, i + 2, vals[i]);
    *n_deleted = 0;
    return delete_recording(t, st, "delete matching relationships", n_deleted, diag);
}

/* The sweep (store.h): one DELETE ... RETURNING of the `limit` earliest expired rows, found
 * on the partial index relationships_by_expiry, each recorded as a DELETE change. */
int kw__sq_tx_rel_delete_expired(kw_store_tx_t *base, int64_t now_us, size_t limit,
                                 size_t *n_deleted, kw_diag_t *diag)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_REL_DEL_EXPIRED, &st);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "database error");
    sqlite3_bind_int64(st, 1, now_us);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
    *n_deleted = 0;
    return delete_recording(t, st, "delete expired relationships", n_deleted, diag);
}
