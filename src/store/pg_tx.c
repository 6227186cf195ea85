/*
 * store/pg_tx.c - PostgreSQL backend: write transactions (begin, commit, rollback) and
 * what they write: agent and key rows, relationships, cascading deletes recorded as exact
 * relationship changes. The changelog rows a commit writes are pg_changes.c's.
 *
 * Transactions: READ COMMITTED, and one global write order (tag-kw-store-write-order).
 * Every write transaction's FIRST statement, right after BEGIN (kw__pg_tx_begin), is
 *     UPDATE revision SET value = value + 1 RETURNING value   (+ pg_notify in the same)
 * and its last ones, at commit, are
 *     INSERT INTO changelog ... (the recorded changes at that revision)
 *     COMMIT
 * So the single revision row is locked from begin to COMMIT (or ROLLBACK, which undoes
 * the bump): keyward's write transactions, from every instance, run one at a time. When
 * the UPDATE returns R, the holder of R-1 has committed (a READ COMMITTED UPDATE that
 * waited for the row re-reads the committed version), and that commit is visible to
 * every snapshot taken from then on (PostgreSQL leaves the proc array before it releases
 * locks: xact.c, CommitTransaction). Hence:
 *   - revisions are unique, gapless and in commit order, and a follower that has seen R
 *     in the changelog has every revision below it;
 *   - once kw_store_tx_begin returns, the committed state (on any connection) is exactly
 *     revision R-1 and stays so until this transaction ends: what the caller reads or
 *     checks there (the API's in-memory preconditions, after catching up to R-1) still
 *     holds when it commits;
 *   - no deadlock between keyward transactions: each takes the revision lock before any
 *     other lock, and holds no other lock while waiting for it.
 * The notification queued by pg_notify is delivered only if the transaction commits.
 * Unique constraints still arbitrate (for writers outside keyward, and as a second line):
 * inserts are `ON CONFLICT DO NOTHING RETURNING`, so a duplicate (agent, name, type) gets
 * no row: KW_ECONFLICT, and the transaction stays usable. Deletes are by id with
 * `DELETE ... RETURNING`, so a row replaced after a check (new id) is never removed.
 */
#include <string.h>

#include "base/log.h"
#include "pg_int.h"

#define KW_MODULE "store.pg"

/* Bumps the revision on c, inside its transaction: KW_OK with *rev set, or an error. */
static int bump_revision(kw__pg_conn_t *c, kw_revision_t *rev)
{
    return kw__pg_one_revision(c, KW__PG_ST_TX_REVISION, rev);
}

/* BEGIN, then take the global write order (KW__PG_ST_TX_REVISION) before anything else: this
 * may wait for the transaction of another instance (or thread) to end, up to
 * lock_timeout. A connection found dead is reset and the whole begin retried once
 * (nothing has happened yet). */
int kw__pg_tx_begin(kw_store_t *base, kw_store_tx_t **out, kw_diag_t *diag)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_tx_t *tx = kw_calloc(1, sizeof(*tx));
    if (!tx)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    int rc = kw__pg_begin_on(s, "BEGIN", &tx->c);
    if (rc != KW_OK)
        goto fail_begin;
    rc = bump_revision(tx->c, &tx->rev);
    if (rc == KW_EDB && PQstatus(tx->c->conn) != CONNECTION_OK &&
        kw__pg_conn_ensure(s, tx->c) == KW_OK && kw__pg_exec(tx->c, "BEGIN") == KW_OK)
        rc = bump_revision(tx->c, &tx->rev);
    if (rc != KW_OK)
        goto fail_order;
    kw__store_tx_init(&tx->base, base);
    *out = &tx->base;
    return KW_OK;

fail_order:
    kw__pg_pool_put(s, tx->c); /* rolls back */
fail_begin:
    kw_free(tx);
    return kw_diag_set(diag, rc == KW_ENOMEM ? rc : KW_EDB, 0, 0,
                       rc == KW_ENOMEM ? "out of memory" : "database unavailable");
}

static void tx_end(kw__pg_tx_t *tx)
{
    kw__pg_store_t *s = kw__pg_of(tx->base.store);
    kw__store_tx_fini(&tx->base);
    kw__pg_pool_put(s, tx->c);
    kw_free(tx);
}

void kw__pg_tx_rollback(kw_store_tx_t *base)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    if (PQstatus(tx->c->conn) == CONNECTION_OK)
        PQclear(PQexec(tx->c->conn, "ROLLBACK"));
    tx_end(tx);
}

/* The revision was taken by kw__pg_tx_begin; only the changelog rows and COMMIT are left. */
int kw__pg_tx_commit(kw_store_tx_t *base, kw_revision_t *rev, kw_diag_t *diag)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw_revision_t at = tx->rev;
    int rc = kw__pg_changelog_write(tx, at);
    if (rc == KW_OK) {
        PGresult *r = PQexec(tx->c->conn, "COMMIT");
        /* COMMIT of a transaction that failed earlier "succeeds" as ROLLBACK. */
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = kw__pg_result_error(tx->c->conn, r, "COMMIT");
        else if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
            rc = KW_EDB;
        PQclear(r);
    }
    if (rc != KW_OK) {
        /* A failure at COMMIT itself (connection lost) leaves the outcome unknown to this
         * process; the changelog is the truth and followers replay it either way. */
        if (PQstatus(tx->c->conn) == CONNECTION_OK)
            PQclear(PQexec(tx->c->conn, "ROLLBACK"));
        tx_end(tx);
        return kw_diag_set(diag, rc == KW_ENOMEM ? rc : KW_EDB, 0, 0,
                           rc == KW_ENOMEM ? "out of memory" : "database unavailable");
    }
    tx_end(tx);
    if (rev)
        *rev = at;
    return KW_OK;
}

/* Savepoints (store.h, tag-kw-store-savepoint), names from store.c ("kw_sp<depth>").
 * A failed statement puts a PostgreSQL transaction in the aborted state, where every
 * statement but ROLLBACK [TO SAVEPOINT] fails: ROLLBACK TO makes it usable again, with
 * the revision row lock (taken before any savepoint) still held. */
int kw__pg_tx_savepoint(kw_store_tx_t *base, const char *name)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "SAVEPOINT %s", name);
    return kw__pg_exec(((kw__pg_tx_t *)base)->c, sql);
}

int kw__pg_tx_rollback_to(kw_store_tx_t *base, const char *name)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT %s; RELEASE SAVEPOINT %s", name, name);
    return kw__pg_exec(((kw__pg_tx_t *)base)->c, sql);
}

int kw__pg_tx_release(kw_store_tx_t *base, const char *name)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT %s", name);
    return kw__pg_exec(((kw__pg_tx_t *)base)->c, sql);
}

static int tx_exec(kw__pg_tx_t *tx, int st, const kw__pg_params_t *p, PGresult **out)
{
    return kw__pg_run(tx->c, st, p, out);
}

int kw__pg_tx_agent_insert(kw_store_tx_t *base, const kw_agent_t *ag)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, ag->id);
    kw__pg_pp_cstr(&p, ag->name);
    if (ag->description)
        kw__pg_pp_cstr(&p, ag->description);
    else
        kw__pg_pp_null(&p);
    kw__pg_pp_cstr(&p, ag->account_id);
    kw__pg_pp_i64(&p, ag->created_at_us);
    if (p.bad_text)
        return KW_EINVAL;
    PGresult *r;
    int rc = tx_exec(tx, KW__PG_ST_AGENT_INSERT, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) == 1 ? KW_OK : KW_ECONFLICT;
    PQclear(r);
    return rc;
}

/* Records every deleted relationship of a DELETE ... RETURNING result as a DELETE change. */
static int record_deleted(kw__pg_tx_t *tx, PGresult *r)
{
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) {
        kw_rel_t rel;
        kw__pg_row_rel(r, i, 0, &rel);
        int rc = kw__store_changes_record(&tx->base.changes, KW_OP_DELETE, &rel);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

/* Runs one of the KW__PG_ST_REL_DEL_* statements and records what it removed. */
static int delete_rels(kw__pg_tx_t *tx, int st, const kw__pg_params_t *p)
{
    PGresult *r;
    int rc = tx_exec(tx, st, p, &r);
    if (rc != KW_OK)
        return rc;
    rc = record_deleted(tx, r);
    PQclear(r);
    return rc;
}

/* Deletes every relationship naming type:id as its resource, then as its subject. */
static int delete_rels_of(kw__pg_tx_t *tx, kw_str_t type, kw_str_t id)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, type);
    kw__pg_pp_text(&p, id);
    int rc = delete_rels(tx, KW__PG_ST_REL_DEL_RESOURCE, &p);
    if (rc == KW_OK)
        rc = delete_rels(tx, KW__PG_ST_REL_DEL_SUBJECT, &p);
    return rc;
}

int kw__pg_tx_agent_delete(kw_store_tx_t *base, kw_str_t id)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, id);
    if (p.bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = tx_exec(tx, KW__PG_ST_AGENT_LOCK, &p, &r);
    if (rc != KW_OK)
        return rc;
    int found = PQntuples(r);
    PQclear(r);
    if (!found)
        return KW_ENOTFOUND;
    kw__pg_params_t q = {0};
    kw__pg_pp_text(&q, id);
    kw__pg_pp_text(&q, KW_STR(KW__STORE_TYPE_KEY));
    rc = delete_rels(tx, KW__PG_ST_REL_DEL_RESOURCE_KEYS, &q);
    if (rc == KW_OK)
        rc = delete_rels(tx, KW__PG_ST_REL_DEL_SUBJECT_KEYS, &q);
    if (rc == KW_OK)
        rc = delete_rels_of(tx, KW_STR(KW__STORE_TYPE_AGENT), id);
    if (rc == KW_OK)
        rc = tx_exec(tx, KW__PG_ST_AGENT_KEYS_DELETE, &p, &r);
    if (rc != KW_OK)
        return rc == KW_ENOMEM ? rc : KW_EDB;
    PQclear(r);
    rc = tx_exec(tx, KW__PG_ST_AGENT_DELETE, &p, &r);
    if (rc != KW_OK)
        return rc == KW_ENOMEM ? rc : KW_EDB; /* after deletes: must poison the tx */
    rc = PQntuples(r) == 1 ? KW_OK : KW_EDB;
    PQclear(r);
    return rc;
}

int kw__pg_tx_key_insert(kw_store_tx_t *base, const kw_apikey_t *key)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, key->id);
    kw__pg_pp_cstr(&p, key->agent_id);
    kw__pg_pp_cstr(&p, key->name);
    kw__pg_pp_cstr(&p, key->type);
    kw__pg_pp_i64(&p, key->created_at_us);
    if (key->hash_len)
        kw__pg_pp_bytes(&p, key->hash, key->hash_len);
    else
        kw__pg_pp_null(&p);
    if (key->secret_enc_len)
        kw__pg_pp_bytes(&p, key->secret_enc, key->secret_enc_len);
    else
        kw__pg_pp_null(&p);
    if (key->expires_at_us)
        kw__pg_pp_i64(&p, key->expires_at_us);
    else
        kw__pg_pp_null(&p);
    if (p.bad_text)
        return KW_EINVAL;
    PGresult *r;
    int rc = tx_exec(tx, KW__PG_ST_KEY_INSERT, &p, &r);
    if (rc != KW_OK)
        return rc;
    int inserted = PQntuples(r);
    PQclear(r);
    if (inserted)
        return KW_OK;
    kw__pg_params_t q = {0};
    kw__pg_pp_cstr(&q, key->agent_id);
    rc = tx_exec(tx, KW__PG_ST_AGENT_EXISTS, &q, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) ? KW_ECONFLICT : KW_ENOTFOUND;
    PQclear(r);
    return rc;
}

int kw__pg_tx_key_delete(kw_store_tx_t *base, kw_str_t id)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, id);
    if (p.bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = tx_exec(tx, KW__PG_ST_KEY_DELETE, &p, &r);
    if (rc != KW_OK)
        return rc;
    int found = PQntuples(r);
    PQclear(r);
    if (!found)
        return KW_ENOTFOUND;
    return delete_rels_of(tx, KW_STR(KW__STORE_TYPE_KEY), id);
}

/* $1..$6, the key; with `caveats`, also $7..$9: caveat name, context and expiry, each
 * NULL when absent (tag-kw-store-caveats). */
static void rel_params(kw__pg_params_t *p, const kw_rel_t *rel, bool caveats)
{
    const kw_str_t f[6] = {rel->resource.type, rel->resource.id, rel->relation,
                           rel->subject.type,  rel->subject.id,  rel->subject.relation};
    for (int k = 0; k < 6; k++)
        kw__pg_pp_text(p, f[k]);
    if (!caveats)
        return;
    if (rel->caveat.len)
        kw__pg_pp_text(p, rel->caveat);
    else
        kw__pg_pp_null(p);
    if (rel->caveat_ctx.len)
        kw__pg_pp_text(p, rel->caveat_ctx);
    else
        kw__pg_pp_null(p);
    if (rel->expires_at)
        kw__pg_pp_i64(p, rel->expires_at);
    else
        kw__pg_pp_null(p);
}

/* The same message as the SQLite backend's (the API passes it to the client). */
static int conflict_diag(const kw_rel_t *rel, size_t i, kw_diag_t *diag)
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(rel, &b);
    int rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                         "could not CREATE relationship `%.*s` (update %zu), as it already exists",
                         b.failed || !b.ptr ? 0 : (int)b.len, b.ptr ? b.ptr : "", i);
    kw_buf_free(&b);
    return rc;
}

int kw__pg_tx_rel_write(kw_store_tx_t *base, const kw_update_t *ups, size_t n, int64_t now_us,
                        kw_diag_t *diag)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    for (size_t i = 0; i < n; i++) {
        const kw_update_t *u = &ups[i];
        kw__pg_params_t p = {0};
        rel_params(&p, &u->rel, u->op != KW_OP_DELETE);
        if (u->op == KW_OP_CREATE)
            kw__pg_pp_i64(&p, now_us);
        if (p.bad_text)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "relationship is not valid UTF-8");
        PGresult *r;
        int rc = tx_exec(tx,
                         u->op == KW_OP_DELETE   ? KW__PG_ST_REL_DELETE
                         : u->op == KW_OP_CREATE ? KW__PG_ST_REL_CREATE
                                                 : KW__PG_ST_REL_TOUCH,
                         &p, &r);
        if (rc != KW_OK)
            return kw_diag_set(diag, rc, 0, 0, "database unavailable");
        int hit = PQntuples(r);
        PQclear(r);
        if (u->op == KW_OP_CREATE && !hit)
            return conflict_diag(&u->rel, i, diag);
        if (u->op == KW_OP_DELETE && !hit)
            continue; /* deleting an absent relationship changes nothing: not recorded */
        rc = kw__store_changes_record(&tx->base.changes,
                                      u->op == KW_OP_DELETE ? KW_OP_DELETE : KW_OP_TOUCH, &u->rel);
        if (rc != KW_OK) /* the row is written but not recorded: poisons the tx */
            return kw_diag_set(diag, rc, 0, 0, "out of memory");
    }
    return KW_OK;
}

int kw__pg_tx_rel_delete_matching(kw_store_tx_t *base, const kw_filter_t *f, size_t *n_deleted,
                                  kw_diag_t *diag)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw_buf_t sql;
    kw_buf_init(&sql);
    kw_buf_puts(&sql, "WITH d AS (DELETE FROM relationships WHERE resource_type = $1");
    kw__pg_pp_text(&p, f->resource_type);
    struct {
        kw_str_t v;
        bool use;
        const char *col;
    } conds[] = {
        {f->resource_id, f->resource_id.len > 0, "resource_id"},
        {f->relation, f->relation.len > 0, "relation"},
        {f->subject_type, f->has_subject && f->subject_type.len > 0, "subject_type"},
        {f->subject_id, f->has_subject && f->subject_id.len > 0, "subject_id"},
        {f->subject_relation, f->has_subject && f->subject_relation_set, "subject_relation"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(conds); i++) {
        if (!conds[i].use)
            continue;
        kw__pg_pp_text(&p, conds[i].v);
        kw_buf_printf(&sql, " AND %s = $%d", conds[i].col, p.n);
    }
    kw_buf_puts(&sql, " RETURNING " KW__PG_REL_COLS ") SELECT * FROM d " KW__PG_REL_ORDER);
    if (sql.failed) {
        kw_buf_free(&sql);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    }
    if (p.bad_text) { /* matches nothing that could be stored */
        kw_buf_free(&sql);
        if (n_deleted)
            *n_deleted = 0;
        return KW_OK;
    }
    Oid types[KW__PG_MAX_PARAMS];
    for (int i = 0; i < p.n; i++)
        types[i] = KW__PG_OID_TEXT;
    PGresult *r = PQexecParams(tx->c->conn, sql.ptr, p.n, types, p.vals, p.lens, p.fmts, 1);
    kw_buf_free(&sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = r ? kw__pg_result_error(tx->c->conn, r, "delete matching") : KW_ENOMEM;
        PQclear(r);
        return kw_diag_set(diag, rc, 0, 0, "database unavailable");
    }
    int rc = record_deleted(tx, r);
    size_t n = (size_t)PQntuples(r);
    PQclear(r);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "out of memory");
    if (n_deleted)
        *n_deleted = n;
    return KW_OK;
}

static void pp_bytes_or_null(kw__pg_params_t *p, const uint8_t *b, size_t len)
{
    if (len)
        kw__pg_pp_bytes(p, b, len);
    else
        kw__pg_pp_null(p);
}

/* tag-kw-key-rotate: the UPDATE is conditioned on the credential the request read; no
 * row updated means the key is gone (404) or holds another credential (409). The
 * transaction holds the revision row lock, so no keyward write commits in between. */
int kw__pg_tx_key_rotate(kw_store_tx_t *base, const kw_key_rotation_t *r)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, r->id);
    pp_bytes_or_null(&p, r->hash, r->hash_len);
    pp_bytes_or_null(&p, r->secret_enc, r->secret_enc_len);
    pp_bytes_or_null(&p, r->prev_hash, r->prev_hash_len);
    if (r->prev_hash_len)
        kw__pg_pp_i64(&p, r->prev_until_us);
    else
        kw__pg_pp_null(&p);
    pp_bytes_or_null(&p, r->old_hash, r->old_hash_len);
    pp_bytes_or_null(&p, r->old_secret_enc, r->old_secret_enc_len);
    if (p.bad_text)
        return KW_ENOTFOUND;
    PGresult *res;
    int rc = tx_exec(tx, KW__PG_ST_KEY_ROTATE, &p, &res);
    if (rc != KW_OK)
        return rc;
    int updated = PQntuples(res);
    PQclear(res);
    if (updated)
        return KW_OK;
    kw__pg_params_t q = {0};
    kw__pg_pp_text(&q, r->id);
    rc = tx_exec(tx, KW__PG_ST_KEY_EXISTS, &q, &res);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(res) ? KW_ECONFLICT : KW_ENOTFOUND;
    PQclear(res);
    return rc;
}

/* The sweep (store.h): one DELETE of the `limit` earliest expired rows, found on the
 * partial index relationships_expiry, each recorded as a DELETE change (and so written to
 * the changelog at commit). */
int kw__pg_tx_rel_delete_expired(kw_store_tx_t *base, int64_t now_us, size_t limit,
                                 size_t *n_deleted, kw_diag_t *diag)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_i64(&p, now_us);
    kw__pg_pp_i64(&p, (int64_t)limit);
    PGresult *r;
    int rc = tx_exec(tx, KW__PG_ST_REL_DEL_EXPIRED, &p, &r);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "database unavailable");
    rc = record_deleted(tx, r);
    size_t n = (size_t)PQntuples(r);
    PQclear(r);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "out of memory");
    *n_deleted = n;
    return KW_OK;
}
