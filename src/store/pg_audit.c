/*
 * store/pg_audit.c - the PostgreSQL backend's audit trail (tables: migration 3 of
 * migrations_pg.c), meta writes inside a transaction, counts, dumps and imports
 * (audit.h, audit_int.h).
 *
 * Appends: the transaction already holds the revision row lock (pg_tx.c: every write
 * transaction of every instance runs one at a time), and the append locks the head row
 * too (SELECT ... FOR UPDATE), so two appends can never build on the same head even if a
 * future writer skipped the revision lock. The event and the head move in one statement.
 * Reads that must agree (a scan and its head, a dump and its counts) run in one
 * REPEATABLE READ snapshot, through cursors. An import takes the revision row lock first,
 * like any write, so no instance writes while it runs.
 * All parameters and results are binary (pg.c). The two statements of an append are in
 * pg.c's prepared table (KW__PG_ST_AUDIT_*); the rest run unprepared, except an import's,
 * which it prepares itself and deallocates at the end.
 */
#include <stdio.h>
#include <string.h>

#include "audit_int.h"
#include "base/log.h"
#include "pg_int.h"

#define KW_MODULE "store.pg"

/* Every column of a key row, lifecycle included (migration 3: keys_routes' expiry, last
 * use and a rotation's grace): a copy must carry them all. */
#define KEY_COLS                                                                                   \
    "id, agent_id, name, type, created_at_us, hash, secret_enc, expires_at_us, "                   \
    "last_used_at_us, prev_hash, prev_until_us"

#define EV_COLS                                                                                    \
    "seq, at_us, revision, actor, action, resource, account, request_id, detail, prev_hash, hash"
#define FETCH_ROWS "2000"

/* Runs sql with p (NULL: none) on c: KW_OK with *out (caller clears) or an error. */
static int q(kw__pg_conn_t *c, const char *sql, const kw__pg_params_t *p, PGresult **out)
{
    PGresult *r = PQexecParams(c->conn, sql, p ? p->n : 0, NULL, p ? p->vals : NULL,
                               p ? p->lens : NULL, p ? p->fmts : NULL, 1);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        int rc = r ? kw__pg_result_error(c->conn, r, "audit") : KW_ENOMEM;
        PQclear(r);
        return rc;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return KW_OK;
}

static int col_hash(const PGresult *r, int row, int col, uint8_t *out)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != KW_AUDIT_HASH_LEN) {
        memset(out, 0, KW_AUDIT_HASH_LEN);
        return KW_EDB;
    }
    memcpy(out, PQgetvalue(r, row, col), KW_AUDIT_HASH_LEN);
    return KW_OK;
}

static void row_event(const PGresult *r, int row, kw_audit_event_t *ev)
{
    ev->seq = kw__pg_col_i64(r, row, 0);
    ev->at_us = kw__pg_col_i64(r, row, 1);
    ev->revision = (kw_revision_t)kw__pg_col_i64(r, row, 2);
    kw_str_t *f[] = {&ev->actor,   &ev->action,     &ev->resource,
                     &ev->account, &ev->request_id, &ev->detail};
    for (int i = 0; i < 6; i++)
        *f[i] = kw__pg_col_str(r, row, 3 + i);
    (void)col_hash(r, row, 9, ev->prev_hash);
    (void)col_hash(r, row, 10, ev->hash);
}

static void event_params(kw__pg_params_t *p, const kw_audit_event_t *ev)
{
    kw__pg_pp_i64(p, ev->seq);
    kw__pg_pp_i64(p, ev->at_us);
    kw__pg_pp_i64(p, (int64_t)ev->revision);
    const kw_str_t f[] = {ev->actor,   ev->action,     ev->resource,
                          ev->account, ev->request_id, ev->detail};
    for (int i = 0; i < 6; i++)
        kw__pg_pp_text(p, f[i]);
    kw__pg_pp_bytes(p, ev->prev_hash, KW_AUDIT_HASH_LEN);
    kw__pg_pp_bytes(p, ev->hash, KW_AUDIT_HASH_LEN);
}

#define INSERT_EVENT                                                                               \
    "INSERT INTO audit_events (" EV_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"

/* The head on c (locked with `lock`): KW_OK, or KW_EDB when missing or malformed. */
static int head_read(kw__pg_conn_t *c, bool lock, kw_audit_head_t *head)
{
    PGresult *r = NULL;
    int rc = q(c,
               lock ? "SELECT seq, hash FROM audit_head WHERE one FOR UPDATE"
                    : "SELECT seq, hash FROM audit_head WHERE one",
               NULL, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) != 1) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "the audit head row is missing");
        rc = KW_EDB;
    } else {
        head->seq = kw__pg_col_i64(r, 0, 0);
        rc = col_hash(r, 0, 1, head->hash);
    }
    PQclear(r);
    return rc;
}

static int head_write(kw__pg_conn_t *c, const kw_audit_head_t *head)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_i64(&p, head->seq);
    kw__pg_pp_bytes(&p, head->hash, KW_AUDIT_HASH_LEN);
    return q(c, "UPDATE audit_head SET seq = $1, hash = $2 WHERE one", &p, NULL);
}

static int pg_append(kw_store_tx_t *base, kw_audit_event_t *ev, kw_diag_t *diag)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw_audit_head_t head;
    PGresult *r = NULL;
    kw__pg_params_t none = {0};
    int rc = kw__pg_run(tx->c, KW__PG_ST_AUDIT_HEAD, &none, &r);
    if (rc == KW_OK) {
        if (PQntuples(r) == 1) {
            head.seq = kw__pg_col_i64(r, 0, 0);
            rc = col_hash(r, 0, 1, head.hash);
        } else {
            rc = KW_EDB;
        }
        PQclear(r);
    }
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the audit head");
    kw__audit_seal(ev, &head, tx->rev);
    kw__pg_params_t p = {0};
    event_params(&p, ev);
    if (p.bad_text)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "audit event is not valid UTF-8");
    /* The event and the head in one statement: $1 is the new head's seq, $11 its hash. */
    rc = kw__pg_run(tx->c, KW__PG_ST_AUDIT_APPEND, &p, &r);
    if (rc == KW_OK)
        PQclear(r);
    return rc == KW_OK ? KW_OK : kw_diag_set(diag, rc, 0, 0, "cannot append the audit event");
}

static int pg_tx_meta_set(kw_store_tx_t *base, const char *key, kw_str_t val)
{
    kw__pg_tx_t *tx = (kw__pg_tx_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, key);
    kw__pg_pp_bytes(&p, (const uint8_t *)(val.ptr ? val.ptr : ""), val.len);
    if (p.bad_text)
        return KW_EINVAL;
    PGresult *r = NULL;
    int rc = kw__pg_run(tx->c, KW__PG_ST_META_SET, &p, &r);
    if (rc == KW_OK)
        PQclear(r);
    return rc;
}

/* ---- reads ---- */

static int pg_list(kw_store_t *base, const kw_audit_filter_t *f, int64_t after_seq, size_t limit,
                   kw_arena_t *a, kw_audit_event_t **out, size_t *n_out)
{
    kw__pg_params_t p = {0};
    char sql[600];
    size_t off =
        (size_t)snprintf(sql, sizeof(sql), "SELECT " EV_COLS " FROM audit_events WHERE seq > $1");
    kw__pg_pp_i64(&p, after_seq);
    const struct {
        bool on;
        const char *col;
        kw_str_t v;
    } strs[] = {
        {f->by_account, "account =", f->account},
        {f->resource.len > 0, "resource =", f->resource},
        {f->actor.len > 0, "actor =", f->actor},
        {f->action.len > 0, "action =", f->action},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(strs); i++) {
        if (!strs[i].on)
            continue;
        kw__pg_pp_text(&p, strs[i].v);
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, " AND %s $%d", strs[i].col, p.n);
    }
    if (f->since_us) {
        kw__pg_pp_i64(&p, f->since_us);
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, " AND at_us >= $%d", p.n);
    }
    if (f->until_us) {
        kw__pg_pp_i64(&p, f->until_us);
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, " AND at_us < $%d", p.n);
    }
    kw__pg_pp_i64(&p, (int64_t)limit);
    snprintf(sql + off, sizeof(sql) - off, " ORDER BY seq LIMIT $%d", p.n);
    *out = NULL;
    *n_out = 0;
    if (p.bad_text) /* matches nothing that could be stored */
        return KW_OK;
    kw_audit_event_t *evs = kw_arena_alloc(a, limit * sizeof(*evs));
    if (!evs)
        return KW_ENOMEM;
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    int rc = kw__pg_begin_on(s, KW__PG_SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return rc;
    PGresult *r = NULL;
    rc = q(c, sql, &p, &r);
    size_t n = 0;
    if (rc == KW_OK) {
        int rows = PQntuples(r);
        for (int i = 0; i < rows && rc == KW_OK; i++, n++) {
            kw_audit_event_t *ev = &evs[n];
            row_event(r, i, ev);
            kw_str_t *fs[] = {&ev->actor,   &ev->action,     &ev->resource,
                              &ev->account, &ev->request_id, &ev->detail};
            for (size_t j = 0; j < KW_ARRAY_LEN(fs) && rc == KW_OK; j++)
                rc = kw_arena_str_copy(a, *fs[j], fs[j]);
        }
        PQclear(r);
    }
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    kw__pg_pool_put(s, c);
    if (rc != KW_OK)
        return rc;
    *out = evs;
    *n_out = n;
    return KW_OK;
}

/* Streams `sql` through a cursor on c (inside its transaction), row by row. */
typedef int (*row_fn)(const PGresult *r, int row, void *ud);

static int stream(kw__pg_conn_t *c, const char *sql, row_fn fn, void *ud, uint64_t *n_rows)
{
    char decl[400];
    snprintf(decl, sizeof(decl), "DECLARE kw_audit_cur NO SCROLL CURSOR FOR %s", sql);
    int rc = kw__pg_exec(c, decl);
    uint64_t n = 0;
    while (rc == KW_OK) {
        PGresult *r = NULL;
        rc = q(c, "FETCH FORWARD " FETCH_ROWS " FROM kw_audit_cur", NULL, &r);
        if (rc != KW_OK)
            break;
        int rows = PQntuples(r);
        for (int i = 0; i < rows && rc == KW_OK; i++, n++)
            rc = fn(r, i, ud);
        PQclear(r);
        if (rows == 0)
            break;
    }
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "CLOSE kw_audit_cur");
    if (n_rows)
        *n_rows = n;
    return rc;
}

typedef struct scan_ctx {
    kw_audit_cb cb;
    void *ud;
} scan_ctx_t;

static int scan_row(const PGresult *r, int row, void *ud)
{
    scan_ctx_t *c = ud;
    kw_audit_event_t ev;
    row_event(r, row, &ev);
    return c->cb(&ev, c->ud);
}

static int pg_scan(kw_store_t *base, kw_audit_cb cb, void *ud, kw_audit_head_t *head)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    int rc = kw__pg_begin_on(s, KW__PG_SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return rc;
    scan_ctx_t sc = {cb, ud};
    rc = stream(c, "SELECT " EV_COLS " FROM audit_events ORDER BY seq", scan_row, &sc, NULL);
    if (rc == KW_OK)
        rc = head_read(c, false, head);
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    kw__pg_pool_put(s, c); /* rolls back when still inside the transaction */
    return rc;
}

static int counts_on(kw__pg_conn_t *c, kw_store_counts_t *out)
{
    PGresult *r = NULL;
    int rc = q(c,
               "SELECT (SELECT count(*) FROM meta), (SELECT count(*) FROM agents),"
               " (SELECT count(*) FROM api_keys), (SELECT count(*) FROM relationships),"
               " (SELECT count(*) FROM audit_events), (SELECT value FROM revision)",
               NULL, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return KW_EDB;
    }
    uint64_t *f[] = {&out->meta, &out->agents, &out->keys, &out->relationships, &out->audit_events};
    for (int i = 0; i < 5; i++)
        *f[i] = (uint64_t)kw__pg_col_i64(r, 0, i);
    out->revision = (kw_revision_t)kw__pg_col_i64(r, 0, 5);
    PQclear(r);
    return KW_OK;
}

static int pg_counts(kw_store_t *base, kw_store_counts_t *out)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    int rc = kw__pg_begin_on(s, KW__PG_SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return rc;
    rc = counts_on(c, out);
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    kw__pg_pool_put(s, c);
    return rc;
}

/* ---- dump ---- */

typedef struct dump_ctx {
    const kw_store_sink_t *sink;
    void *ud;
} dump_ctx_t;

static int meta_row(const PGresult *r, int row, void *ud)
{
    dump_ctx_t *d = ud;
    return d->sink->meta(d->ud, kw__pg_col_str(r, row, 0), kw__pg_col_str(r, row, 1));
}

/* Columns arrive without a NUL (binary text): copy the ones kw_agent_t holds as C strings. */
static int cstr_of(const PGresult *r, int row, int col, kw_arena_t *a, const char **out)
{
    if (PQgetisnull(r, row, col)) {
        *out = NULL;
        return KW_OK;
    }
    kw_str_t v = kw__pg_col_str(r, row, col);
    char *d = kw_arena_strndup(a, v.ptr, v.len);
    if (!d)
        return KW_ENOMEM;
    *out = d;
    return KW_OK;
}

static int id_of(const PGresult *r, int row, int col, char out[37])
{
    kw_str_t v = kw__pg_col_str(r, row, col);
    if (v.len > KW__STORE_ID_MAX)
        return KW_EDB;
    memcpy(out, v.ptr, v.len);
    out[v.len] = '\0';
    return KW_OK;
}

static int agent_row(const PGresult *r, int row, void *ud)
{
    dump_ctx_t *d = ud;
    kw_arena_t *a = kw_arena_new(0);
    if (!a)
        return KW_ENOMEM;
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    int rc = id_of(r, row, 0, ag.id);
    if (rc == KW_OK)
        rc = cstr_of(r, row, 1, a, &ag.account_id);
    if (rc == KW_OK)
        rc = cstr_of(r, row, 2, a, &ag.name);
    if (rc == KW_OK)
        rc = cstr_of(r, row, 3, a, &ag.description);
    ag.created_at_us = kw__pg_col_i64(r, row, 4);
    if (rc == KW_OK)
        rc = cstr_of(r, row, 5, a, &ag.acp_url);
    if (rc == KW_OK)
        rc = d->sink->agent(d->ud, &ag);
    kw_arena_free(a);
    return rc;
}

static int key_row(const PGresult *r, int row, void *ud)
{
    dump_ctx_t *d = ud;
    kw_arena_t *a = kw_arena_new(0);
    if (!a)
        return KW_ENOMEM;
    kw_apikey_t k;
    memset(&k, 0, sizeof(k));
    int rc = id_of(r, row, 0, k.id);
    if (rc == KW_OK)
        rc = id_of(r, row, 1, k.agent_id);
    if (rc == KW_OK)
        rc = cstr_of(r, row, 2, a, &k.name);
    if (rc == KW_OK)
        rc = cstr_of(r, row, 3, a, &k.type);
    k.created_at_us = kw__pg_col_i64(r, row, 4);
    if (!PQgetisnull(r, row, 5)) {
        k.hash = (const uint8_t *)PQgetvalue(r, row, 5);
        k.hash_len = (size_t)PQgetlength(r, row, 5);
    }
    if (!PQgetisnull(r, row, 6)) {
        k.secret_enc = (const uint8_t *)PQgetvalue(r, row, 6);
        k.secret_enc_len = (size_t)PQgetlength(r, row, 6);
    }
    /* The lifecycle columns; NULL is 0 / empty (none). */
    k.expires_at_us = PQgetisnull(r, row, 7) ? 0 : kw__pg_col_i64(r, row, 7);
    k.last_used_at_us = PQgetisnull(r, row, 8) ? 0 : kw__pg_col_i64(r, row, 8);
    if (!PQgetisnull(r, row, 9)) {
        k.prev_hash = (const uint8_t *)PQgetvalue(r, row, 9);
        k.prev_hash_len = (size_t)PQgetlength(r, row, 9);
    }
    k.prev_until_us = PQgetisnull(r, row, 10) ? 0 : kw__pg_col_i64(r, row, 10);
    if (rc == KW_OK)
        rc = d->sink->key(d->ud, &k);
    kw_arena_free(a);
    return rc;
}

static int rel_row(const PGresult *r, int row, void *ud)
{
    dump_ctx_t *d = ud;
    kw_rel_t rel;
    memset(&rel, 0, sizeof(rel));
    kw__pg_row_rel(r, row, 0, &rel);
    kw__pg_row_rel_caveat(r, row, 6, &rel); /* a copy keeps caveats and expiry */
    return d->sink->rel(d->ud, &rel);
}

static int audit_row(const PGresult *r, int row, void *ud)
{
    dump_ctx_t *d = ud;
    kw_audit_event_t ev;
    row_event(r, row, &ev);
    return d->sink->audit(d->ud, &ev);
}

static int pg_dump(kw_store_t *base, const kw_store_sink_t *sink, void *ud,
                   kw_store_counts_t *counts, kw_audit_head_t *head, kw_diag_t *diag)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    int rc = kw__pg_begin_on(s, KW__PG_SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the source database");
    dump_ctx_t d = {sink, ud};
    rc = stream(c, "SELECT key, value FROM meta ORDER BY key", meta_row, &d, &counts->meta);
    if (rc == KW_OK)
        rc = stream(c,
                    "SELECT id, account_id, name, description, created_at_us, acp_url FROM agents "
                    "ORDER BY created_at_us, id",
                    agent_row, &d, &counts->agents);
    if (rc == KW_OK)
        rc = stream(c, "SELECT " KEY_COLS " FROM api_keys ORDER BY created_at_us, id", key_row, &d,
                    &counts->keys);
    if (rc == KW_OK)
        rc = stream(c, "SELECT " KW__PG_REL_XCOLS " FROM relationships", rel_row, &d,
                    &counts->relationships);
    if (rc == KW_OK)
        rc = stream(c, "SELECT " EV_COLS " FROM audit_events ORDER BY seq", audit_row, &d,
                    &counts->audit_events);
    kw_store_counts_t snap;
    if (rc == KW_OK)
        rc = counts_on(c, &snap);
    if (rc == KW_OK)
        counts->revision = snap.revision;
    if (rc == KW_OK)
        rc = head_read(c, false, head);
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    kw__pg_pool_put(s, c);
    return rc == KW_OK ? KW_OK : kw_diag_set(diag, rc, 0, 0, "reading the source database failed");
}

/* ---- import ---- */

enum { IMP_META, IMP_AGENT, IMP_KEY, IMP_REL, IMP_AUDIT, IMP_N };

static const char *const g_imp_sql[IMP_N] = {
    [IMP_META] = "INSERT INTO meta (key, value) VALUES ($1, $2)",
    [IMP_AGENT] = "INSERT INTO agents (id, account_id, name, description, created_at_us, acp_url) "
                  "VALUES ($1, $2, $3, $4, $5, $6)",
    [IMP_KEY] = "INSERT INTO api_keys (" KEY_COLS ") "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    [IMP_REL] = "INSERT INTO relationships (" KW__PG_REL_XCOLS
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    [IMP_AUDIT] = INSERT_EVENT,
};

typedef struct pg_import {
    struct kw_store_import base; /* first */
    kw__pg_conn_t *c;
    bool prepared;
} pg_import_t;

static void imp_free(pg_import_t *imp, bool rollback)
{
    kw__pg_store_t *s = kw__pg_of(imp->base.store);
    if (rollback && PQstatus(imp->c->conn) == CONNECTION_OK)
        PQclear(PQexec(imp->c->conn, "ROLLBACK"));
    if (imp->prepared && PQstatus(imp->c->conn) == CONNECTION_OK) {
        /* Our statements go; so do pg.c's (its bits are cleared: re-prepared on use). */
        (void)kw__pg_exec(imp->c, "DEALLOCATE ALL");
        imp->c->prepared = 0;
    }
    kw__pg_pool_put(s, imp->c);
    kw_free(imp);
}

static int pg_import_begin(kw_store_t *base, kw_store_import_t **out, kw_diag_t *diag)
{
    kw__pg_store_t *s = kw__pg_of(base);
    pg_import_t *imp = kw_calloc(1, sizeof(*imp));
    if (!imp)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    imp->base.store = base;
    int rc = kw__pg_begin_on(s, "BEGIN", &imp->c);
    if (rc != KW_OK) {
        kw_free(imp);
        return kw_diag_set(diag, rc, 0, 0, "cannot start the import");
    }
    /* The global write order first (tag-kw-store-write-order), then the emptiness check. */
    rc = q(imp->c, "SELECT value FROM revision FOR UPDATE", NULL, NULL);
    kw_store_counts_t n;
    kw_audit_head_t head;
    if (rc == KW_OK)
        rc = counts_on(imp->c, &n);
    if (rc == KW_OK)
        rc = head_read(imp->c, true, &head);
    if (rc != KW_OK) {
        imp_free(imp, true);
        return kw_diag_set(diag, rc, 0, 0, "cannot read the target database");
    }
    if (n.meta || n.agents || n.keys || n.relationships || n.audit_events || n.revision ||
        head.seq) {
        imp_free(imp, true);
        return kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                           "the target database is not empty (%llu agents, %llu keys, %llu "
                           "relationships, %llu audit events, %llu settings, revision %llu)",
                           (unsigned long long)n.agents, (unsigned long long)n.keys,
                           (unsigned long long)n.relationships, (unsigned long long)n.audit_events,
                           (unsigned long long)n.meta, (unsigned long long)n.revision);
    }
    imp->prepared = true;
    for (int i = 0; i < IMP_N && rc == KW_OK; i++) {
        char name[32];
        snprintf(name, sizeof(name), "kw_imp_%d", i);
        PGresult *r = PQprepare(imp->c->conn, name, g_imp_sql[i], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = kw__pg_result_error(imp->c->conn, r, name);
        PQclear(r);
    }
    if (rc != KW_OK) {
        imp_free(imp, true);
        return kw_diag_set(diag, rc, 0, 0, "cannot prepare the import");
    }
    *out = &imp->base;
    return KW_OK;
}

static int imp_run(pg_import_t *imp, int which, const kw__pg_params_t *p)
{
    if (p->bad_text)
        return KW_EINVAL;
    char name[32];
    snprintf(name, sizeof(name), "kw_imp_%d", which);
    PGresult *r = PQexecPrepared(imp->c->conn, name, p->n, p->vals, p->lens, p->fmts, 1);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK
                 ? KW_OK
                 : (r ? kw__pg_result_error(imp->c->conn, r, name) : KW_ENOMEM);
    PQclear(r);
    return rc;
}

static int pg_import_meta(kw_store_import_t *base, kw_str_t key, kw_str_t val)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, key);
    kw__pg_pp_bytes(&p, (const uint8_t *)(val.ptr ? val.ptr : ""), val.len);
    return imp_run((pg_import_t *)base, IMP_META, &p);
}

static int pg_import_agent(kw_store_import_t *base, const kw_agent_t *ag)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, ag->id);
    kw__pg_pp_cstr(&p, ag->account_id);
    kw__pg_pp_cstr(&p, ag->name);
    if (ag->description)
        kw__pg_pp_cstr(&p, ag->description);
    else
        kw__pg_pp_null(&p);
    kw__pg_pp_i64(&p, ag->created_at_us);
    if (ag->acp_url)
        kw__pg_pp_cstr(&p, ag->acp_url);
    else
        kw__pg_pp_null(&p);
    return imp_run((pg_import_t *)base, IMP_AGENT, &p);
}

static int pg_import_key(kw_store_import_t *base, const kw_apikey_t *k)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, k->id);
    kw__pg_pp_cstr(&p, k->agent_id);
    kw__pg_pp_cstr(&p, k->name);
    kw__pg_pp_cstr(&p, k->type);
    kw__pg_pp_i64(&p, k->created_at_us);
    if (k->hash_len)
        kw__pg_pp_bytes(&p, k->hash, k->hash_len);
    else
        kw__pg_pp_null(&p);
    if (k->secret_enc_len)
        kw__pg_pp_bytes(&p, k->secret_enc, k->secret_enc_len);
    else
        kw__pg_pp_null(&p);
    /* The lifecycle columns (0 / empty = none: NULL, as the key routes store them). */
    if (k->expires_at_us)
        kw__pg_pp_i64(&p, k->expires_at_us);
    else
        kw__pg_pp_null(&p);
    if (k->last_used_at_us)
        kw__pg_pp_i64(&p, k->last_used_at_us);
    else
        kw__pg_pp_null(&p);
    if (k->prev_hash_len)
        kw__pg_pp_bytes(&p, k->prev_hash, k->prev_hash_len);
    else
        kw__pg_pp_null(&p);
    if (k->prev_until_us)
        kw__pg_pp_i64(&p, k->prev_until_us);
    else
        kw__pg_pp_null(&p);
    return imp_run((pg_import_t *)base, IMP_KEY, &p);
}

static int pg_import_rel(kw_store_import_t *base, const kw_rel_t *r)
{
    kw__pg_params_t p = {0};
    const kw_str_t f[6] = {r->resource.type, r->resource.id, r->relation,
                           r->subject.type,  r->subject.id,  r->subject.relation};
    for (int i = 0; i < 6; i++)
        kw__pg_pp_text(&p, f[i]);
    /* caveat, context, expiry: NULL is "none", as the write path stores them */
    if (r->caveat.len)
        kw__pg_pp_text(&p, r->caveat);
    else
        kw__pg_pp_null(&p);
    if (r->caveat.len && r->caveat_ctx.len)
        kw__pg_pp_text(&p, r->caveat_ctx);
    else
        kw__pg_pp_null(&p);
    if (r->expires_at)
        kw__pg_pp_i64(&p, r->expires_at);
    else
        kw__pg_pp_null(&p);
    return imp_run((pg_import_t *)base, IMP_REL, &p);
}

static int pg_import_audit(kw_store_import_t *base, const kw_audit_event_t *ev)
{
    kw__pg_params_t p = {0};
    event_params(&p, ev);
    return imp_run((pg_import_t *)base, IMP_AUDIT, &p);
}

static int pg_import_commit(kw_store_import_t *base, kw_revision_t rev, const kw_audit_head_t *head,
                            kw_diag_t *diag)
{
    pg_import_t *imp = (pg_import_t *)base;
    kw__pg_params_t p = {0};
    kw__pg_pp_i64(&p, (int64_t)rev);
    int rc = q(imp->c, "UPDATE revision SET value = $1", &p, NULL);
    /* No follower can hold a revision older than the copy: one below it reloads. */
    if (rc == KW_OK)
        rc = q(imp->c, "UPDATE changelog_horizon SET pruned_through = $1", &p, NULL);
    if (rc == KW_OK)
        rc = head_write(imp->c, head);
    if (rc == KW_OK)
        rc = kw__pg_exec(imp->c, "COMMIT");
    imp_free(imp, rc != KW_OK);
    return rc == KW_OK ? KW_OK : kw_diag_set(diag, rc, 0, 0, "the import could not be committed");
}

static void pg_import_abort(kw_store_import_t *base)
{
    imp_free((pg_import_t *)base, true);
}

const kw__store_audit_ops_t kw__pg_audit_ops = {
    .append = pg_append,
    .tx_meta_set = pg_tx_meta_set,
    .list = pg_list,
    .scan = pg_scan,
    .counts = pg_counts,
    .dump = pg_dump,
    .import_begin = pg_import_begin,
    .import_meta = pg_import_meta,
    .import_agent = pg_import_agent,
    .import_key = pg_import_key,
    .import_rel = pg_import_rel,
    .import_audit = pg_import_audit,
    .import_commit = pg_import_commit,
    .import_abort = pg_import_abort,
};
