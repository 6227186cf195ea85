/*
 * store/sqlite_audit.c - the SQLite backend's audit trail (tables: migration 2 of
 * migrations_sqlite.c), meta writes inside a transaction, counts, dumps and imports
 * (audit.h, audit_int.h).
 *
 * An append runs on the transaction's connection, which holds SQLite's one write lock
 * since BEGIN IMMEDIATE: the head it reads cannot move under it, and the revision it
 * stamps (the counter + 1) is the one the commit will assign (sqlite_tx.c). Statements
 * here are prepared per call (per import for the bulk inserts): none is on a hot read path.
 * Reads that must agree (a scan and its head, a dump and its counts) run in one read
 * transaction, one WAL snapshot.
 */
#include "audit_int.h"
#include "sqlite_int.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"

#define KW_MODULE "store"

/* Every column of a key row, lifecycle included (migration 2: keys_routes' expiry, last
 * use and a rotation's grace): a copy must carry them all. */
#define KEY_COLS                                                                                   \
    "id, agent_id, name, type, created_at_us, hash, secret_enc, expires_at_us, "                   \
    "last_used_at_us, prev_hash, prev_until_us"

#define EV_COLS                                                                                    \
    "seq, at_us, revision, actor, action, resource, account, request_id, detail, prev_hash, hash"

static int prep(kw__sq_conn_t *c, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(c->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? KW_OK : kw__sq_err(c, rc, "prepare audit statement", NULL);
}

/* Steps a bound statement that returns no row and finalizes it. */
static int run_done(kw__sq_conn_t *c, sqlite3_stmt *st, const char *what)
{
    int src = sqlite3_step(st);
    int rc = src == SQLITE_DONE || src == SQLITE_ROW ? KW_OK : kw__sq_err(c, src, what, NULL);
    sqlite3_finalize(st);
    return rc;
}

static void bind_hash(sqlite3_stmt *st, int i, const uint8_t *h)
{
    sqlite3_bind_blob(st, i, h, KW_AUDIT_HASH_LEN, SQLITE_STATIC);
}

/* Copies a 32-byte blob column; KW_EDB when it is not 32 bytes. */
static int col_hash(sqlite3_stmt *st, int i, uint8_t *out)
{
    const void *p = sqlite3_column_blob(st, i);
    if (!p || sqlite3_column_bytes(st, i) != KW_AUDIT_HASH_LEN) {
        memset(out, 0, KW_AUDIT_HASH_LEN);
        return KW_EDB;
    }
    memcpy(out, p, KW_AUDIT_HASH_LEN);
    return KW_OK;
}

/* The current row (EV_COLS) as an event whose strings point into the statement. A stored
 * hash of the wrong length reads as zeros (verification then names the event). */
static void row_event(sqlite3_stmt *st, kw_audit_event_t *ev)
{
    ev->seq = sqlite3_column_int64(st, 0);
    ev->at_us = sqlite3_column_int64(st, 1);
    ev->revision = (kw_revision_t)sqlite3_column_int64(st, 2);
    kw_str_t *f[] = {&ev->actor,   &ev->action,     &ev->resource,
                     &ev->account, &ev->request_id, &ev->detail};
    for (int i = 0; i < 6; i++)
        *f[i] = kw__sq_col_str(st, 3 + i);
    (void)col_hash(st, 9, ev->prev_hash);
    (void)col_hash(st, 10, ev->hash);
}

static void bind_event(sqlite3_stmt *st, const kw_audit_event_t *ev)
{
    sqlite3_bind_int64(st, 1, ev->seq);
    sqlite3_bind_int64(st, 2, ev->at_us);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)ev->revision);
    const kw_str_t f[] = {ev->actor,   ev->action,     ev->resource,
                          ev->account, ev->request_id, ev->detail};
    for (int i = 0; i < 6; i++)
        kw__sq_bind_str(st, 4 + i, f[i]);
    bind_hash(st, 10, ev->prev_hash);
    bind_hash(st, 11, ev->hash);
}

static const char INSERT_EVENT[] =
    "INSERT INTO audit_events (" EV_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
static const char SET_HEAD[] = "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE one = 1";

/* The head on c: KW_OK, or KW_EDB when the row is missing or malformed. */
static int head_read(kw__sq_conn_t *c, kw_audit_head_t *head, kw_revision_t *next_rev)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(c,
                  "SELECT seq, hash, (SELECT value + 1 FROM meta WHERE key = 'revision') "
                  "FROM audit_head WHERE one = 1",
                  &st);
    if (rc != KW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        head->seq = sqlite3_column_int64(st, 0);
        rc = col_hash(st, 1, head->hash);
        if (next_rev)
            *next_rev = (kw_revision_t)sqlite3_column_int64(st, 2);
    } else {
        rc = src == SQLITE_DONE ? KW_EDB : kw__sq_err(c, src, "read audit head", NULL);
    }
    if (rc == KW_EDB && src != SQLITE_ERROR)
        kw_log(KW_LOG_ERROR, KW_MODULE, "the audit head row is missing or malformed");
    sqlite3_finalize(st);
    return rc;
}

static int head_write(kw__sq_conn_t *c, const kw_audit_head_t *head)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(c, SET_HEAD, &st);
    if (rc != KW_OK)
        return rc;
    sqlite3_bind_int64(st, 1, head->seq);
    bind_hash(st, 2, head->hash);
    return run_done(c, st, "move audit head");
}

static int sq_append(kw_store_tx_t *base, kw_audit_event_t *ev, kw_diag_t *diag)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    kw_audit_head_t head;
    kw_revision_t rev = 0;
    int rc = head_read(t->c, &head, &rev);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the audit head");
    kw__audit_seal(ev, &head, rev);
    sqlite3_stmt *st = NULL;
    rc = prep(t->c, INSERT_EVENT, &st);
    if (rc == KW_OK) {
        bind_event(st, ev);
        rc = run_done(t->c, st, "append audit event");
    }
    if (rc == KW_OK) {
        head.seq = ev->seq;
        memcpy(head.hash, ev->hash, KW_AUDIT_HASH_LEN);
        rc = head_write(t->c, &head);
    }
    if (rc == KW_EBUDGET) /* an in-memory database at its bound (kw__sq_err) */
        return kw_diag_set(diag, rc, 0, 0,
                           "the in-memory database is full (its memory bound is reached)");
    return rc == KW_OK ? KW_OK : kw_diag_set(diag, rc, 0, 0, "cannot append the audit event");
}

static int sq_tx_meta_set(kw_store_tx_t *base, const char *key, kw_str_t val)
{
    kw__sq_tx_t *t = (kw__sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(t->c, KW__SQ_ST_META_SET, &st);
    if (rc != KW_OK)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 2, val.ptr ? val.ptr : "", val.len, SQLITE_STATIC);
    return kw__sq_exec_done(t->c, st, "meta write", NULL);
}

/* ---- reads ---- */

static int copy_str(kw_arena_t *a, kw_str_t *s)
{
    return kw_arena_str_copy(a, *s, s);
}

static int sq_list(kw_store_t *base, const kw_audit_filter_t *f, int64_t after_seq, size_t limit,
                   kw_arena_t *a, kw_audit_event_t **out, size_t *n_out)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    char sql[512];
    size_t off =
        (size_t)snprintf(sql, sizeof(sql), "SELECT " EV_COLS " FROM audit_events WHERE seq > ?1");
    const struct {
        bool on;
        const char *cond;
    } conds[] = {
        {f->by_account, " AND account = ?2"},   {f->resource.len > 0, " AND resource = ?3"},
        {f->actor.len > 0, " AND actor = ?4"},  {f->action.len > 0, " AND action = ?5"},
        {f->since_us != 0, " AND at_us >= ?6"}, {f->until_us != 0, " AND at_us < ?7"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(conds); i++)
        if (conds[i].on)
            off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s", conds[i].cond);
    snprintf(sql + off, sizeof(sql) - off, " ORDER BY seq LIMIT ?8");
    kw_audit_event_t *evs = kw_arena_alloc(a, limit * sizeof(*evs));
    if (!evs)
        return KW_ENOMEM;
    kw__sq_conn_t *c;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = prep(c, sql, &st);
    if (rc != KW_OK) {
        kw__sq_conn_give(s, c);
        return rc;
    }
    sqlite3_bind_int64(st, 1, after_seq);
    if (f->by_account)
        kw__sq_bind_str(st, 2, f->account.ptr ? f->account : KW_STR(""));
    kw__sq_bind_str(st, 3, f->resource);
    kw__sq_bind_str(st, 4, f->actor);
    kw__sq_bind_str(st, 5, f->action);
    sqlite3_bind_int64(st, 6, f->since_us);
    sqlite3_bind_int64(st, 7, f->until_us);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)limit);
    size_t n = 0;
    int src = SQLITE_DONE;
    while (rc == KW_OK && (src = sqlite3_step(st)) == SQLITE_ROW) {
        kw_audit_event_t *ev = &evs[n];
        row_event(st, ev);
        kw_str_t *fs[] = {&ev->actor,   &ev->action,     &ev->resource,
                          &ev->account, &ev->request_id, &ev->detail};
        for (size_t i = 0; i < KW_ARRAY_LEN(fs) && rc == KW_OK; i++)
            rc = copy_str(a, fs[i]);
        n++;
    }
    if (rc == KW_OK && src != SQLITE_DONE)
        rc = kw__sq_err(c, src, "list audit events", NULL);
    sqlite3_finalize(st);
    kw__sq_conn_give(s, c);
    if (rc != KW_OK)
        return rc;
    *out = evs;
    *n_out = n;
    return KW_OK;
}

/* Streams every event of c's snapshot through cb. */
static int scan_events(kw__sq_conn_t *c, kw_audit_cb cb, void *ud)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(c, "SELECT " EV_COLS " FROM audit_events ORDER BY seq", &st);
    if (rc != KW_OK)
        return rc;
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        kw_audit_event_t ev;
        row_event(st, &ev);
        rc = cb(&ev, ud);
        if (rc != 0)
            break;
    }
    if (rc == KW_OK && src != SQLITE_DONE)
        rc = kw__sq_err(c, src, "read audit events", NULL);
    sqlite3_finalize(st);
    return rc;
}

/* Takes a connection and opens a read transaction on it. */
static int read_begin(kw__sq_store_t *s, kw__sq_conn_t **c)
{
    int rc = kw__sq_conn_take(s, c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_exec_id(*c, KW__SQ_ST_BEGIN_READ, "begin read", NULL);
    if (rc != KW_OK)
        kw__sq_conn_give(s, *c);
    return rc;
}

static void read_end(kw__sq_store_t *s, kw__sq_conn_t *c)
{
    (void)kw__sq_exec_id(c, KW__SQ_ST_COMMIT, "end read", NULL);
    kw__sq_conn_give(s, c);
}

static int sq_scan(kw_store_t *base, kw_audit_cb cb, void *ud, kw_audit_head_t *head)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    int rc = read_begin(s, &c);
    if (rc != KW_OK)
        return rc;
    rc = scan_events(c, cb, ud);
    if (rc == KW_OK)
        rc = head_read(c, head, NULL);
    read_end(s, c);
    return rc;
}

static int counts_on(kw__sq_conn_t *c, kw_store_counts_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(
        c,
        "SELECT (SELECT count(*) FROM meta WHERE key NOT IN ('revision', 'changelog_horizon')),"
        " (SELECT count(*) FROM agents), (SELECT count(*) FROM api_keys),"
        " (SELECT count(*) FROM relationships), (SELECT count(*) FROM audit_events),"
        " (SELECT value FROM meta WHERE key = 'revision')",
        &st);
    if (rc != KW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        uint64_t *f[] = {&out->meta, &out->agents, &out->keys, &out->relationships,
                         &out->audit_events};
        for (int i = 0; i < 5; i++)
            *f[i] = (uint64_t)sqlite3_column_int64(st, i);
        out->revision = (kw_revision_t)sqlite3_column_int64(st, 5);
    } else {
        rc = kw__sq_err(c, src, "count rows", NULL);
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_counts(kw_store_t *base, kw_store_counts_t *out)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = counts_on(c, out);
    kw__sq_conn_give(s, c);
    return rc;
}

/* ---- dump ---- */

typedef struct dump_ctx {
    const kw_store_sink_t *sink;
    void *ud;
    uint64_t n;
} dump_ctx_t;

static int dump_audit_cb(const kw_audit_event_t *ev, void *ud)
{
    dump_ctx_t *d = ud;
    d->n++;
    return d->sink->audit(d->ud, ev);
}

/* Runs `sql` and hands each row to `row` (which calls the sink). */
static int dump_rows(kw__sq_conn_t *c, const char *sql, int (*row)(sqlite3_stmt *, dump_ctx_t *),
                     dump_ctx_t *d)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(c, sql, &st);
    if (rc != KW_OK)
        return rc;
    int src;
    d->n = 0;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        rc = row(st, d);
        if (rc != KW_OK)
            break;
        d->n++;
    }
    if (rc == KW_OK && src != SQLITE_DONE)
        rc = kw__sq_err(c, src, "dump", NULL);
    sqlite3_finalize(st);
    return rc;
}

static kw_str_t col_blob(sqlite3_stmt *st, int i)
{
    const void *p = sqlite3_column_blob(st, i);
    int n = sqlite3_column_bytes(st, i);
    return (kw_str_t){p ? p : "", p && n > 0 ? (size_t)n : 0};
}

static int meta_row(sqlite3_stmt *st, dump_ctx_t *d)
{
    return d->sink->meta(d->ud, kw__sq_col_str(st, 0), col_blob(st, 1));
}

static int agent_row(sqlite3_stmt *st, dump_ctx_t *d)
{
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    kw_str_t id = kw__sq_col_str(st, 0);
    if (id.len >= sizeof(ag.id))
        return KW_EDB;
    memcpy(ag.id, id.ptr, id.len);
    ag.account_id = (const char *)sqlite3_column_text(st, 1);
    ag.name = (const char *)sqlite3_column_text(st, 2);
    ag.description = (const char *)sqlite3_column_text(st, 3); /* NULL stays NULL */
    ag.created_at_us = sqlite3_column_int64(st, 4);
    ag.acp_url = (const char *)sqlite3_column_text(st, 5); /* NULL stays NULL */
    if (!ag.account_id || !ag.name)
        return KW_ENOMEM;
    return d->sink->agent(d->ud, &ag);
}

static int key_row(sqlite3_stmt *st, dump_ctx_t *d)
{
    kw_apikey_t k;
    memset(&k, 0, sizeof(k));
    kw_str_t id = kw__sq_col_str(st, 0), agent = kw__sq_col_str(st, 1);
    if (id.len >= sizeof(k.id) || agent.len >= sizeof(k.agent_id))
        return KW_EDB;
    memcpy(k.id, id.ptr, id.len);
    memcpy(k.agent_id, agent.ptr, agent.len);
    k.name = (const char *)sqlite3_column_text(st, 2);
    k.type = (const char *)sqlite3_column_text(st, 3);
    k.created_at_us = sqlite3_column_int64(st, 4);
    kw_str_t h = col_blob(st, 5), sec = col_blob(st, 6);
    k.hash = (const uint8_t *)h.ptr;
    k.hash_len = h.len;
    k.secret_enc = (const uint8_t *)sec.ptr;
    k.secret_enc_len = sec.len;
    k.expires_at_us = sqlite3_column_int64(st, 7); /* NULL reads as 0: none */
    k.last_used_at_us = sqlite3_column_int64(st, 8);
    kw_str_t prev = col_blob(st, 9);
    k.prev_hash = (const uint8_t *)prev.ptr;
    k.prev_hash_len = prev.len;
    k.prev_until_us = sqlite3_column_int64(st, 10);
    if (!k.name || !k.type)
        return KW_ENOMEM;
    return d->sink->key(d->ud, &k);
}

static int rel_row(sqlite3_stmt *st, dump_ctx_t *d)
{
    kw_rel_t rel = {
        .resource = {kw__sq_col_str(st, 0), kw__sq_col_str(st, 1)},
        .relation = kw__sq_col_str(st, 2),
        .subject = {kw__sq_col_str(st, 3), kw__sq_col_str(st, 4), kw__sq_col_str(st, 5)}};
    kw__sq_read_caveat(st, &rel); /* a copy keeps caveats and expiry */
    return d->sink->rel(d->ud, &rel);
}

static int sq_dump(kw_store_t *base, const kw_store_sink_t *sink, void *ud,
                   kw_store_counts_t *counts, kw_audit_head_t *head, kw_diag_t *diag)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    int rc = read_begin(s, &c);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the source database");
    dump_ctx_t d = {sink, ud, 0};
    rc = dump_rows(c,
                   "SELECT key, value FROM meta WHERE key NOT IN ('revision', 'changelog_horizon') "
                   "ORDER BY key",
                   meta_row, &d);
    counts->meta = d.n;
    if (rc == KW_OK)
        rc = dump_rows(
            c,
            "SELECT id, account_id, name, description, created_at_us, acp_url FROM agents "
            "ORDER BY created_at_us, id",
            agent_row, &d);
    counts->agents = d.n;
    if (rc == KW_OK)
        rc = dump_rows(c, "SELECT " KEY_COLS " FROM api_keys ORDER BY created_at_us, id", key_row,
                       &d);
    counts->keys = d.n;
    if (rc == KW_OK)
        rc = dump_rows(c, "SELECT " KW__SQ_REL_XCOLS " FROM relationships", rel_row, &d);
    counts->relationships = d.n;
    d.n = 0;
    if (rc == KW_OK)
        rc = scan_events(c, dump_audit_cb, &d);
    counts->audit_events = d.n;
    kw_store_counts_t snap;
    if (rc == KW_OK)
        rc = counts_on(c, &snap);
    if (rc == KW_OK)
        counts->revision = snap.revision;
    if (rc == KW_OK)
        rc = head_read(c, head, NULL);
    read_end(s, c);
    return rc == KW_OK ? KW_OK : kw_diag_set(diag, rc, 0, 0, "reading the source database failed");
}

/* ---- import ---- */

enum { IMP_META, IMP_AGENT, IMP_KEY, IMP_REL, IMP_AUDIT, IMP_N };

static const char *const g_imp_sql[IMP_N] = {
    [IMP_META] = "INSERT INTO meta (key, value) VALUES (?1, ?2)",
    [IMP_AGENT] = "INSERT INTO agents (id, account_id, name, description, created_at_us, acp_url) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [IMP_KEY] = "INSERT INTO api_keys (" KEY_COLS ") "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [IMP_REL] = "INSERT INTO relationships (" KW__SQ_REL_XCOLS
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [IMP_AUDIT] = INSERT_EVENT,
};

typedef struct sq_import {
    struct kw_store_import base; /* first */
    kw__sq_conn_t *c;
    sqlite3_stmt *st[IMP_N];
} sq_import_t;

static void imp_free(sq_import_t *imp, bool rollback)
{
    for (int i = 0; i < IMP_N; i++)
        sqlite3_finalize(imp->st[i]);
    if (rollback)
        (void)kw__sq_exec_id(imp->c, KW__SQ_ST_ROLLBACK, "rollback import", NULL);
    kw__sq_conn_give((kw__sq_store_t *)imp->base.store, imp->c);
    kw_free(imp);
}

static bool counts_empty(const kw_store_counts_t *n)
{
    return n->meta == 0 && n->agents == 0 && n->keys == 0 && n->relationships == 0 &&
           n->audit_events == 0 && n->revision == 0;
}

static int sq_import_begin(kw_store_t *base, kw_store_import_t **out, kw_diag_t *diag)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    sq_import_t *imp = kw_calloc(1, sizeof(*imp));
    if (!imp)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    imp->base.store = base;
    int rc = kw__sq_conn_take(s, &imp->c, diag);
    if (rc != KW_OK) {
        kw_free(imp);
        return rc;
    }
    rc = kw__sq_exec_id(imp->c, KW__SQ_ST_BEGIN_WRITE, "begin import", diag);
    if (rc != KW_OK) {
        kw__sq_conn_give(s, imp->c);
        kw_free(imp);
        return rc;
    }
    kw_store_counts_t n;
    kw_audit_head_t head;
    rc = counts_on(imp->c, &n);
    if (rc == KW_OK)
        rc = head_read(imp->c, &head, NULL);
    if (rc == KW_OK && (!counts_empty(&n) || head.seq != 0))
        rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                         "the target database is not empty (%llu agents, %llu keys, %llu "
                         "relationships, %llu audit events, %llu settings, revision %llu)",
                         (unsigned long long)n.agents, (unsigned long long)n.keys,
                         (unsigned long long)n.relationships, (unsigned long long)n.audit_events,
                         (unsigned long long)n.meta, (unsigned long long)n.revision);
    for (int i = 0; i < IMP_N && rc == KW_OK; i++)
        rc = prep(imp->c, g_imp_sql[i], &imp->st[i]);
    if (rc != KW_OK) {
        imp_free(imp, true);
        return diag && diag->code ? rc : kw_diag_set(diag, rc, 0, 0, "cannot start the import");
    }
    *out = &imp->base;
    return KW_OK;
}

static int imp_step(sq_import_t *imp, int which, const char *what)
{
    sqlite3_stmt *st = imp->st[which];
    int src = sqlite3_step(st);
    int rc = src == SQLITE_DONE ? KW_OK : kw__sq_err(imp->c, src, what, NULL);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int sq_import_meta(kw_store_import_t *base, kw_str_t key, kw_str_t val)
{
    sq_import_t *imp = (sq_import_t *)base;
    sqlite3_stmt *st = imp->st[IMP_META];
    kw__sq_bind_str(st, 1, key);
    sqlite3_bind_blob64(st, 2, val.ptr ? val.ptr : "", val.len, SQLITE_STATIC);
    return imp_step(imp, IMP_META, "import meta");
}

static int sq_import_agent(kw_store_import_t *base, const kw_agent_t *ag)
{
    sq_import_t *imp = (sq_import_t *)base;
    sqlite3_stmt *st = imp->st[IMP_AGENT];
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
    return imp_step(imp, IMP_AGENT, "import agent");
}

static int sq_import_key(kw_store_import_t *base, const kw_apikey_t *k)
{
    sq_import_t *imp = (sq_import_t *)base;
    sqlite3_stmt *st = imp->st[IMP_KEY];
    sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, k->type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, k->created_at_us);
    if (k->hash_len)
        sqlite3_bind_blob64(st, 6, k->hash, k->hash_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    if (k->secret_enc_len)
        sqlite3_bind_blob64(st, 7, k->secret_enc, k->secret_enc_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 7);
    /* The lifecycle columns (0 / empty = none: NULL, as the key routes store them). */
    const int64_t t[3] = {k->expires_at_us, k->last_used_at_us, k->prev_until_us};
    const int at[3] = {8, 9, 11};
    for (int i = 0; i < 3; i++) {
        if (t[i])
            sqlite3_bind_int64(st, at[i], t[i]);
        else
            sqlite3_bind_null(st, at[i]);
    }
    if (k->prev_hash_len)
        sqlite3_bind_blob64(st, 10, k->prev_hash, k->prev_hash_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 10);
    return imp_step(imp, IMP_KEY, "import key");
}

static int sq_import_rel(kw_store_import_t *base, const kw_rel_t *r)
{
    sq_import_t *imp = (sq_import_t *)base;
    sqlite3_stmt *st = imp->st[IMP_REL];
    const kw_str_t f[6] = {r->resource.type, r->resource.id, r->relation,
                           r->subject.type,  r->subject.id,  r->subject.relation};
    for (int i = 0; i < 6; i++)
        kw__sq_bind_str(st, i + 1, f[i].ptr ? f[i] : KW_STR(""));
    /* caveat, context, expiry: NULL is "none", as the write path stores them */
    if (r->caveat.len)
        kw__sq_bind_str(st, 7, r->caveat);
    else
        sqlite3_bind_null(st, 7);
    if (r->caveat.len && r->caveat_ctx.len)
        kw__sq_bind_str(st, 8, r->caveat_ctx);
    else
        sqlite3_bind_null(st, 8);
    if (r->expires_at)
        sqlite3_bind_int64(st, 9, (sqlite3_int64)r->expires_at);
    else
        sqlite3_bind_null(st, 9);
    return imp_step(imp, IMP_REL, "import relationship");
}

static int sq_import_audit(kw_store_import_t *base, const kw_audit_event_t *ev)
{
    sq_import_t *imp = (sq_import_t *)base;
    bind_event(imp->st[IMP_AUDIT], ev);
    return imp_step(imp, IMP_AUDIT, "import audit event");
}

static int sq_import_commit(kw_store_import_t *base, kw_revision_t rev, const kw_audit_head_t *head,
                            kw_diag_t *diag)
{
    sq_import_t *imp = (sq_import_t *)base;
    sqlite3_stmt *st = NULL;
    /* The copy starts its Watch changelog empty: changes up to rev cannot be replayed
     * from it, so its horizon is rev (as the PostgreSQL import sets it). The bookkeeping
     * row is the store's own, never copied. */
    int rc = prep(imp->c,
                  "UPDATE meta SET value = ?1 WHERE key IN ('revision', 'changelog_horizon')", &st);
    if (rc == KW_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)rev);
        rc = run_done(imp->c, st, "set revision");
    }
    if (rc == KW_OK)
        rc = head_write(imp->c, head);
    if (rc == KW_OK)
        rc = kw__sq_exec_id(imp->c, KW__SQ_ST_COMMIT, "commit import", NULL);
    imp_free(imp, rc != KW_OK);
    return rc == KW_OK ? KW_OK : kw_diag_set(diag, rc, 0, 0, "the import could not be committed");
}

static void sq_import_abort(kw_store_import_t *base)
{
    imp_free((sq_import_t *)base, true);
}

const kw__store_audit_ops_t kw__sq_audit_ops = {
    .append = sq_append,
    .tx_meta_set = sq_tx_meta_set,
    .list = sq_list,
    .scan = sq_scan,
    .counts = sq_counts,
    .dump = sq_dump,
    .import_begin = sq_import_begin,
    .import_meta = sq_import_meta,
    .import_agent = sq_import_agent,
    .import_key = sq_import_key,
    .import_rel = sq_import_rel,
    .import_audit = sq_import_audit,
    .import_commit = sq_import_commit,
    .import_abort = sq_import_abort,
};
