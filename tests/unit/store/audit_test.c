/*
 * tests/unit/store/audit_test.c - the audit trail (append in the transaction, the hash
 * chain and its verification, filtered pages), whole-database copies (dump -> import)
 * and the SQLite online backup, on SQLite and, for the pg_* tests, on PostgreSQL
 * (KEYWARD_PG_URL; tests/pg/run-unit.sh starts a throwaway server).
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kw_test.h"
#include "store/store.h"

/* ---- backends ---- */

typedef struct db {
    bool pg;
    char name[64]; /* pg: database name; sqlite: temp dir */
    char path[160];
    char url[1024];
} db_t;

static int sq_new(db_t *d)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "/tmp/kw_audit_XXXXXX");
    if (!mkdtemp(d->name))
        return 0;
    snprintf(d->path, sizeof(d->path), "%s/keyward.db", d->name);
    snprintf(d->url, sizeof(d->url), "sqlite:%s", d->path);
    return 1;
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static const char *pg_url(void)
{
    const char *u = getenv("KEYWARD_PG_URL");
    return u && *u ? u : NULL;
}

/* One statement on the server of `url`; the first column of the first row into out. */
static int pg_sql(const char *url, const char *sql, char *out, size_t cap)
{
    PGconn *c = PQconnectdb(url);
    PQsetNoticeProcessor(c, quiet, NULL);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        if (out && cap) {
            out[0] = '\0';
            if (ok && PQntuples(r) > 0)
                snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
        }
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

static int pg_new(db_t *d)
{
    static int n;
    memset(d, 0, sizeof(*d));
    d->pg = true;
    snprintf(d->name, sizeof(d->name), "kw_a_%ld_%d", (long)getpid(), ++n);
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", d->name);
    if (!pg_sql(pg_url(), sql, NULL, 0))
        return 0;
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", d->name);
    if (!pg_sql(pg_url(), sql, NULL, 0))
        return 0;
    const char *u = pg_url();
    const char *scheme = strstr(u, "://");
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    const char *query = strchr(u, '?');
    size_t host_end = slash ? (size_t)(slash - u) : query ? (size_t)(query - u) : strlen(u);
    snprintf(d->url, sizeof(d->url), "%.*s/%s%s", (int)host_end, u, d->name, query ? query : "");
    return 1;
}

static void db_drop(db_t *d)
{
    if (d->pg) {
        char sql[160];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", d->name);
        (void)pg_sql(pg_url(), sql, NULL, 0);
        return;
    }
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < KW_ARRAY_LEN(suffix); i++) {
        char p[200];
        snprintf(p, sizeof(p), "%s%s", d->path, suffix[i]);
        unlink(p);
    }
    rmdir(d->name);
}

/* Runs one statement on the database directly (tampering, as an attacker would). */
static int raw(const db_t *d, const char *sql)
{
    if (d->pg)
        return pg_sql(d->url, sql, NULL, 0);
    sqlite3 *db = NULL;
    int ok = sqlite3_open(d->path, &db) == SQLITE_OK &&
             sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return ok;
}

/* ---- helpers ---- */

static kw_audit_event_t ev_of(const char *actor, const char *action, const char *resource,
                              const char *account, int64_t at)
{
    kw_audit_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.at_us = at;
    ev.actor = kw_str_c(actor);
    ev.action = kw_str_c(action);
    ev.resource = kw_str_c(resource);
    ev.account = kw_str_c(account);
    ev.request_id = KW_STR("req-1");
    ev.detail = KW_STR("{\"name\":\"bot\"}");
    return ev;
}

static kw_agent_t agent_of(const char *id, const char *account, const char *name)
{
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    snprintf(ag.id, sizeof(ag.id), "%s", id);
    ag.account_id = account;
    ag.name = name;
    ag.description = NULL;
    ag.created_at_us = 1700000000000000LL;
    return ag;
}

/* An agent row and its create event, in one transaction. */
static int create_agent(kw_store_t *s, const char *id, const char *account, int64_t at,
                        kw_revision_t *rev)
{
    kw_store_tx_t *tx = NULL;
    int rc = kw_store_tx_begin(s, &tx, NULL);
    if (rc != KW_OK)
        return rc;
    kw_agent_t ag = agent_of(id, account, id);
    char res[64];
    snprintf(res, sizeof(res), "agent:%s", id);
    kw_audit_event_t ev = ev_of("user:alice", "agent.create", res, account, at);
    rc = kw_store_tx_agent_insert(tx, &ag);
    if (rc == KW_OK)
        rc = kw_store_tx_audit_append(tx, &ev, NULL);
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    return kw_store_tx_commit(tx, rev, NULL);
}

/* The chain on one backend: appends commit with their change or not at all, verify
 * accepts it, pages filter and continue, and each kind of tampering is named. */
static void chain_case(db_t *d, int *kw_failed_)
{
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d->url, &s, NULL), KW_OK);
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(create_agent(s, "a1", "acme", 1000, &rev), KW_OK);
    KW_ASSERT_EQ(create_agent(s, "a2", "acme", 2000, NULL), KW_OK);
    KW_ASSERT_EQ(create_agent(s, "a3", "other", 3000, NULL), KW_OK);
    /* A rolled-back transaction leaves no event, nor does a savepoint rolled back. */
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    kw_audit_event_t gone = ev_of("user:bob", "agent.delete", "agent:a1", "acme", 4000);
    KW_ASSERT_EQ(kw_store_tx_audit_append(tx, &gone, NULL), KW_OK);
    kw_store_tx_rollback(tx);
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    kw_store_savepoint_t sp;
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_audit_append(tx, &gone, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp, NULL), KW_OK);
    kw_audit_event_t kept = ev_of("user:bob", "key.delete", "agent_api_key:k1", "acme", 5000);
    KW_ASSERT_EQ(kw_store_tx_audit_append(tx, &kept, NULL), KW_OK);
    KW_ASSERT_EQ(kept.seq, 4);
    /* Bad input changes nothing and leaves the tx usable. */
    kw_audit_event_t bad = ev_of("user:bob", "", "agent:a1", "acme", 5000);
    KW_ASSERT_EQ(kw_store_tx_audit_append(tx, &bad, NULL), KW_EINVAL);
    kw_revision_t rev2 = 0;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev2, NULL), KW_OK);
    KW_ASSERT_EQ(kept.revision, rev2);

    kw_audit_report_t rep;
    KW_ASSERT_EQ(kw_store_audit_verify(s, &rep, NULL), KW_OK);
    KW_ASSERT_EQ(rep.n_events, 4);
    KW_ASSERT_EQ(rep.head.seq, 4);
    KW_ASSERT(memcmp(rep.head.hash, kept.hash, KW_AUDIT_HASH_LEN) == 0);

    /* Pages: by account, then from a cursor; by resource; by time. */
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_audit_filter_t f;
    memset(&f, 0, sizeof(f));
    f.by_account = true;
    f.account = KW_STR("acme");
    kw_audit_event_t *evs = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_store_audit_list(s, &f, 0, 2, a, &evs, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_EQ(evs[0].seq, 1);
    KW_ASSERT_EQ(evs[0].revision, rev);
    KW_ASSERT(kw_str_eq_c(evs[1].resource, "agent:a2"));
    KW_ASSERT(kw_str_eq_c(evs[1].detail, "{\"name\":\"bot\"}"));
    KW_ASSERT_EQ(kw_store_audit_list(s, &f, evs[1].seq, 2, a, &evs, &n), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(evs[0].seq, 4);
    memset(&f, 0, sizeof(f));
    f.resource = KW_STR("agent:a3");
    KW_ASSERT_EQ(kw_store_audit_list(s, &f, 0, 10, a, &evs, &n), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT(kw_str_eq_c(evs[0].account, "other"));
    memset(&f, 0, sizeof(f));
    f.since_us = 2000;
    f.until_us = 5000;
    f.action = KW_STR("agent.create");
    KW_ASSERT_EQ(kw_store_audit_list(s, &f, 0, 10, a, &evs, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_EQ(evs[0].seq, 2);
    KW_ASSERT_EQ(evs[1].seq, 3);
    f.actor = KW_STR("user:nobody");
    KW_ASSERT_EQ(kw_store_audit_list(s, &f, 0, 10, a, &evs, &n), KW_OK);
    KW_ASSERT_EQ(n, 0);
    kw_arena_free(a);

    /* An edited event. */
    KW_ASSERT(raw(d, "UPDATE audit_events SET detail = '{\"name\":\"evil\"}' WHERE seq = 2"));
    KW_ASSERT_EQ(kw_store_audit_verify(s, &rep, NULL), KW_ECONFLICT);
    KW_ASSERT_EQ(rep.bad_seq, 2);
    KW_ASSERT(strstr(rep.why, "edited"));
    KW_ASSERT(raw(d, "UPDATE audit_events SET detail = '{\"name\":\"bot\"}' WHERE seq = 2"));
    KW_ASSERT_EQ(kw_store_audit_verify(s, &rep, NULL), KW_OK);
    /* A deleted event in the middle. */
    KW_ASSERT(raw(d, "DELETE FROM audit_events WHERE seq = 3"));
    KW_ASSERT_EQ(kw_store_audit_verify(s, &rep, NULL), KW_ECONFLICT);
    KW_ASSERT_EQ(rep.bad_seq, 3);
    KW_ASSERT(strstr(rep.why, "missing"));
    /* The last event cut off (with 3 still gone, the first bad one is still 3). */
    KW_ASSERT(raw(d, "DELETE FROM audit_events WHERE seq = 4"));
    KW_ASSERT_EQ(kw_store_audit_verify(s, &rep, NULL), KW_ECONFLICT);
    KW_ASSERT_EQ(rep.bad_seq, 3);
    KW_ASSERT(strstr(rep.why, "cut off"));
    kw_store_close(s);
}

KW_TEST(audit_sqlite_chain)
{
    db_t d;
    KW_ASSERT(sq_new(&d));
    chain_case(&d, kw_failed_);
    db_drop(&d);
}

KW_TEST(pg_audit_chain)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    db_t d;
    KW_ASSERT(pg_new(&d));
    chain_case(&d, kw_failed_);
    db_drop(&d);
}

/* Reordering: two events' seqs swapped is named at the first of them. */
KW_TEST(audit_sqlite_reorder_detected)
{
    db_t d;
    KW_ASSERT(sq_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof(id), "a%d", i);
        KW_ASSERT_EQ(create_agent(s, id, "acme", 1000 + i, NULL), KW_OK);
    }
    KW_ASSERT(raw(&d, "UPDATE audit_events SET seq = 100 WHERE seq = 2;"
                      "UPDATE audit_events SET seq = 2 WHERE seq = 3;"
                      "UPDATE audit_events SET seq = 3 WHERE seq = 100;"));
    kw_audit_report_t rep;
    KW_ASSERT_EQ(kw_store_audit_verify(s, &rep, NULL), KW_ECONFLICT);
    KW_ASSERT_EQ(rep.bad_seq, 2);
    kw_store_close(s);
    db_drop(&d);
}

/* ---- concurrent appends: two handles (two instances) on one database ---- */

typedef struct appender {
    kw_store_t *s;
    const char *prefix;
    int n;
    int rc;
} appender_t;

static void *append_many(void *arg)
{
    appender_t *ap = arg;
    for (int i = 0; i < ap->n && ap->rc == KW_OK; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s%d", ap->prefix, i);
        ap->rc = create_agent(ap->s, id, "acme", 1000 + i, NULL);
    }
    return NULL;
}

static void concurrent_case(db_t *d, int *kw_failed_)
{
    kw_store_t *s1 = NULL, *s2 = NULL;
    KW_ASSERT_EQ(kw_store_open(d->url, &s1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(d->url, &s2, NULL), KW_OK);
    appender_t aps[4] = {
        {s1, "x", 25, KW_OK}, {s2, "y", 25, KW_OK}, {s1, "z", 25, KW_OK}, {s2, "w", 25, KW_OK}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, append_many, &aps[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        KW_ASSERT_EQ(aps[i].rc, KW_OK);
    kw_audit_report_t rep;
    KW_ASSERT_EQ(kw_store_audit_verify(s2, &rep, NULL), KW_OK);
    KW_ASSERT_EQ(rep.n_events, 100);
    kw_store_close(s2);
    kw_store_close(s1);
}

KW_TEST(audit_sqlite_concurrent_appends)
{
    db_t d;
    KW_ASSERT(sq_new(&d));
    concurrent_case(&d, kw_failed_);
    db_drop(&d);
}

KW_TEST(pg_audit_concurrent_appends)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    db_t d;
    KW_ASSERT(pg_new(&d));
    concurrent_case(&d, kw_failed_);
    db_drop(&d);
}

/* ---- copies: dump -> import ---- */

static int sink_meta(void *ud, kw_str_t key, kw_str_t val)
{
    return kw_store_import_meta(ud, key, val);
}
static int sink_agent(void *ud, const kw_agent_t *ag)
{
    return kw_store_import_agent(ud, ag);
}
static int sink_key(void *ud, const kw_apikey_t *k)
{
    return kw_store_import_key(ud, k);
}
static int sink_rel(void *ud, const kw_rel_t *rel)
{
    return kw_store_import_rel(ud, rel);
}
static int sink_audit(void *ud, const kw_audit_event_t *ev)
{
    return kw_store_import_audit(ud, ev);
}
static const kw_store_sink_t g_sink = {sink_meta, sink_agent, sink_key, sink_rel, sink_audit};

/* Copies src into dst (which must be empty); KW_OK or the first error. */
static int copy_store(kw_store_t *src, kw_store_t *dst, kw_store_counts_t *counts)
{
    kw_store_import_t *imp = NULL;
    int rc = kw_store_import_begin(dst, &imp, NULL);
    if (rc != KW_OK)
        return rc;
    kw_audit_head_t head;
    rc = kw_store_dump(src, &g_sink, imp, counts, &head, NULL);
    if (rc != KW_OK) {
        kw_store_import_abort(imp);
        return rc;
    }
    return kw_store_import_commit(imp, counts->revision, &head, NULL);
}

/* A store with a bit of everything. */
static void fill(kw_store_t *s, int *kw_failed_)
{
    KW_ASSERT_EQ(kw_store_meta_set(s, "schema", KW_STR("definition user {}")), KW_OK);
    const uint8_t secret[3] = {0, 1, 2}; /* binary, with a NUL */
    KW_ASSERT_EQ(kw_store_meta_set(s, "bin", (kw_str_t){(const char *)secret, 3}), KW_OK);
    KW_ASSERT_EQ(create_agent(s, "a1", "acme", 1000, NULL), KW_OK);
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    uint8_t hash[32], sealed[40];
    memset(hash, 7, sizeof(hash));
    memset(sealed, 9, sizeof(sealed));
    kw_apikey_t k1, k2;
    memset(&k1, 0, sizeof(k1));
    snprintf(k1.id, sizeof(k1.id), "k1");
    snprintf(k1.agent_id, sizeof(k1.agent_id), "a1");
    k1.name = "deploy";
    k1.type = "internal";
    k1.created_at_us = 1700000000000001LL;
    k1.hash = hash;
    k1.hash_len = sizeof(hash);
    k1.expires_at_us = 1900000000000000LL;
    k2 = k1;
    k2.expires_at_us = 0;
    snprintf(k2.id, sizeof(k2.id), "k2");
    k2.type = "github";
    k2.hash = NULL;
    k2.hash_len = 0;
    k2.secret_enc = sealed;
    k2.secret_enc_len = sizeof(sealed);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k2), KW_OK);
    kw_update_t ups[2] = {
        {KW_OP_TOUCH,
         {{KW_STR("agent"), KW_STR("a1")}, KW_STR("owner"), {KW_STR("user"), KW_STR("alice")}}},
        {KW_OP_TOUCH,
         {{KW_STR("account"), KW_STR("acme")},
          KW_STR("member"),
          {KW_STR("team"), KW_STR("t1"), KW_STR("member")},
          KW_STR("on_weekdays"),
          KW_STR("{\"day\":1}"),
          1900000000000000LL}},
    };
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, ups, 2, NULL), KW_OK);
    kw_audit_event_t ev = ev_of("user:alice", "key.create", "agent_api_key:k1", "acme", 2000);
    KW_ASSERT_EQ(kw_store_tx_audit_append(tx, &ev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    /* A rotation with a grace period (the previous hash kept) and a last use: the
     * lifecycle columns a copy must carry too. */
    uint8_t newer[32];
    memset(newer, 8, sizeof(newer));
    kw_key_rotation_t rot = {.id = KW_STR("k1"),
                             .old_hash = hash,
                             .old_hash_len = sizeof(hash),
                             .hash = newer,
                             .hash_len = sizeof(newer),
                             .prev_hash = hash,
                             .prev_hash_len = sizeof(hash),
                             .prev_until_us = 1800000000000000LL};
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_rotate(tx, &rot), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    kw_key_use_t use = {"k1", 1750000000000000LL};
    KW_ASSERT_EQ(kw_store_keys_touch(s, &use, 1), KW_OK);
}

/* The caveat name, context and expiry of account:acme#member in a copy. */
typedef struct {
    char caveat[32], ctx[32];
    int64_t expires_at;
    int found;
} caveat_seen_t;

static int caveat_cb(const kw_rel_t *r, void *ud)
{
    caveat_seen_t *c = ud;
    if (kw_str_eq(r->resource.id, KW_STR("acme"))) {
        snprintf(c->caveat, sizeof(c->caveat), "%.*s", KW_STR_FMT(r->caveat));
        snprintf(c->ctx, sizeof(c->ctx), "%.*s", KW_STR_FMT(r->caveat_ctx));
        c->expires_at = r->expires_at;
        c->found++;
    }
    return 0;
}

static void roundtrip_case(db_t *a, db_t *b, db_t *c, int *kw_failed_)
{
    kw_store_t *sa = NULL, *sb = NULL, *sc = NULL;
    KW_ASSERT_EQ(kw_store_open(a->url, &sa, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(b->url, &sb, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(c->url, &sc, NULL), KW_OK);
    fill(sa, kw_failed_);
    if (*kw_failed_)
        return;
    kw_store_counts_t n1, n2, na, nc;
    KW_ASSERT_EQ(copy_store(sa, sb, &n1), KW_OK);
    KW_ASSERT_EQ(copy_store(sb, sc, &n2), KW_OK);
    KW_ASSERT_EQ(kw_store_counts(sa, &na), KW_OK);
    KW_ASSERT_EQ(kw_store_counts(sc, &nc), KW_OK);
    KW_ASSERT(memcmp(&na, &nc, sizeof(na)) == 0);
    KW_ASSERT(memcmp(&n1, &na, sizeof(na)) == 0);
    KW_ASSERT_EQ(na.agents, 1);
    KW_ASSERT_EQ(na.keys, 2);
    KW_ASSERT_EQ(na.relationships, 2);
    KW_ASSERT_EQ(na.audit_events, 2);
    KW_ASSERT_EQ(na.meta, 2);
    KW_ASSERT_EQ(na.revision, 3);
    /* Caveats and expiry travel with their relationships (sqlite -> b -> sqlite). */
    caveat_seen_t cs;
    memset(&cs, 0, sizeof(cs));
    kw_revision_t lrev = 0;
    KW_ASSERT_EQ(kw_store_load_relationships(sc, caveat_cb, &cs, &lrev), KW_OK);
    KW_ASSERT_EQ(cs.found, 1);
    KW_ASSERT_STR_EQ(cs.caveat, "on_weekdays");
    KW_ASSERT_STR_EQ(cs.ctx, "{\"day\":1}");
    KW_ASSERT_EQ(cs.expires_at, 1900000000000000LL);
    kw_audit_report_t ra, rc;
    KW_ASSERT_EQ(kw_store_audit_verify(sa, &ra, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_audit_verify(sc, &rc, NULL), KW_OK);
    KW_ASSERT(memcmp(&ra.head, &rc.head, sizeof(ra.head)) == 0);
    /* Rows as stored: the key's hash, the sealed secret, a NULL description, binary meta. */
    kw_arena_t *ar = kw_arena_new(0);
    KW_ASSERT(ar);
    kw_apikey_t k;
    KW_ASSERT_EQ(kw_store_key_get(sc, KW_STR("k2"), ar, &k), KW_OK);
    KW_ASSERT_EQ(k.secret_enc_len, 40);
    KW_ASSERT_EQ(k.secret_enc[39], 9);
    KW_ASSERT_EQ(k.hash_len, 0);
    KW_ASSERT_EQ(k.expires_at_us, 0);
    uint8_t hash[32];
    memset(hash, 8, sizeof(hash));
    KW_ASSERT_EQ(kw_store_key_find_by_hash(sc, hash, 32, ar, &k), KW_OK);
    KW_ASSERT_STR_EQ(k.id, "k1");
    KW_ASSERT_EQ(k.expires_at_us, 1900000000000000LL);
    KW_ASSERT_EQ(k.last_used_at_us, 1750000000000000LL);
    KW_ASSERT_EQ(k.prev_until_us, 1800000000000000LL);
    KW_ASSERT_EQ(k.prev_hash_len, 32);
    KW_ASSERT_EQ(k.prev_hash[0], 7);
    kw_agent_t ag;
    KW_ASSERT_EQ(kw_store_agent_get(sc, KW_STR("a1"), ar, &ag), KW_OK);
    KW_ASSERT(ag.description == NULL);
    char *v = NULL;
    size_t vlen = 0;
    KW_ASSERT_EQ(kw_store_meta_get(sc, "bin", ar, &v, &vlen), KW_OK);
    KW_ASSERT_EQ(vlen, 3);
    KW_ASSERT(v[0] == 0 && v[2] == 2);
    kw_arena_free(ar);
    /* The copy goes on from the copied revision and chain. */
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(create_agent(sc, "a9", "acme", 9000, &rev), KW_OK);
    KW_ASSERT_EQ(rev, na.revision + 1);
    KW_ASSERT_EQ(kw_store_audit_verify(sc, &rc, NULL), KW_OK);
    KW_ASSERT_EQ(rc.n_events, 3);
    /* A non-empty target is refused and left alone. */
    kw_store_import_t *imp = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_store_import_begin(sb, &imp, &d), KW_ECONFLICT);
    KW_ASSERT(strstr(d.msg, "not empty"));
    kw_store_close(sc);
    kw_store_close(sb);
    kw_store_close(sa);
}

KW_TEST(audit_sqlite_copy_roundtrip)
{
    db_t a, b, c;
    KW_ASSERT(sq_new(&a) && sq_new(&b) && sq_new(&c));
    roundtrip_case(&a, &b, &c, kw_failed_);
    db_drop(&a);
    db_drop(&b);
    db_drop(&c);
}

/* sqlite -> postgres -> sqlite. */
KW_TEST(pg_audit_copy_roundtrip)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    db_t a, b, c;
    KW_ASSERT(sq_new(&a) && pg_new(&b) && sq_new(&c));
    roundtrip_case(&a, &b, &c, kw_failed_);
    db_drop(&a);
    db_drop(&b);
    db_drop(&c);
}

/* An import that fails half-way writes nothing: the target is still empty after it. */
KW_TEST(audit_sqlite_import_all_or_nothing)
{
    db_t a;
    KW_ASSERT(sq_new(&a));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(a.url, &s, NULL), KW_OK);
    kw_store_import_t *imp = NULL;
    KW_ASSERT_EQ(kw_store_import_begin(s, &imp, NULL), KW_OK);
    kw_agent_t ag = agent_of("a1", "acme", "bot");
    KW_ASSERT_EQ(kw_store_import_agent(imp, &ag), KW_OK);
    KW_ASSERT(kw_store_import_agent(imp, &ag) != KW_OK); /* duplicate id */
    kw_audit_head_t head;
    memset(&head, 0, sizeof(head));
    KW_ASSERT(kw_store_import_commit(imp, 5, &head, NULL) != KW_OK);
    kw_store_counts_t n;
    KW_ASSERT_EQ(kw_store_counts(s, &n), KW_OK);
    KW_ASSERT_EQ(n.agents, 0);
    KW_ASSERT_EQ(n.revision, 0);
    kw_store_close(s);
    db_drop(&a);
}

/* ---- backup of a live database ---- */

typedef struct writer {
    kw_store_t *s;
    volatile bool stop;
    int n, rc;
} writer_t;

static void *write_loop(void *arg)
{
    writer_t *w = arg;
    while (!w->stop && w->rc == KW_OK) {
        char id[32];
        snprintf(id, sizeof(id), "w%d", w->n);
        w->rc = create_agent(w->s, id, "acme", 1000 + w->n, NULL);
        w->n++;
    }
    return NULL;
}

KW_TEST(audit_sqlite_backup_while_writing)
{
    db_t a;
    KW_ASSERT(sq_new(&a));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(a.url, &s, NULL), KW_OK);
    writer_t w = {s, false, 0, KW_OK};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, write_loop, &w), 0);
    while (w.n < 20 && w.rc == KW_OK)
        usleep(1000);
    char out[220];
    snprintf(out, sizeof(out), "%s/copy.db", a.name);
    int pages = 0;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_store_sqlite_backup(a.path, out, &pages, &d);
    w.stop = true;
    pthread_join(th, NULL);
    KW_ASSERT_EQ(w.rc, KW_OK);
    KW_ASSERT_EQ(rc, KW_OK);
    KW_ASSERT(pages > 0);
    /* Refuses to overwrite. */
    KW_ASSERT_EQ(kw_store_sqlite_backup(a.path, out, NULL, NULL), KW_EEXISTS);
    struct stat sb;
    KW_ASSERT_EQ(stat(out, &sb), 0);
    KW_ASSERT_EQ(sb.st_mode & 077, 0);
    /* The copy is one committed state: the chain is whole, rows and events agree. */
    char url[260];
    snprintf(url, sizeof(url), "sqlite:%s", out);
    kw_store_t *c = NULL;
    KW_ASSERT_EQ(kw_store_open(url, &c, NULL), KW_OK);
    kw_audit_report_t rep;
    KW_ASSERT_EQ(kw_store_audit_verify(c, &rep, NULL), KW_OK);
    kw_store_counts_t n;
    KW_ASSERT_EQ(kw_store_counts(c, &n), KW_OK);
    KW_ASSERT(n.agents >= 20);
    KW_ASSERT_EQ(n.audit_events, n.agents);
    KW_ASSERT_EQ(n.revision, n.agents);
    kw_store_close(c);
    kw_store_close(s);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[260];
        snprintf(p, sizeof(p), "%s%s", out, suffix[i]);
        unlink(p);
    }
    db_drop(&a);
}

/* Each allocation of a copy and of a page of events fails once: KW_ENOMEM (or the
 * failure the store maps it to), nothing half-written, and the next try works. */
KW_TEST(audit_sqlite_fault_injection)
{
    db_t a, b;
    KW_ASSERT(sq_new(&a) && sq_new(&b));
    kw_store_t *sa = NULL, *sb = NULL;
    KW_ASSERT_EQ(kw_store_open(a.url, &sa, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(b.url, &sb, NULL), KW_OK);
    fill(sa, kw_failed_);
    if (*kw_failed_)
        return;
    int failures = 0;
    for (int n = 1; n < 1000; n++) {
        kw_store_counts_t c, after;
        kw_fault_arm(n);
        int rc = copy_store(sa, sb, &c);
        bool fired = kw_fault_fired();
        kw_fault_arm(0);
        KW_ASSERT_EQ(kw_store_counts(sb, &after), KW_OK);
        if (!fired) {
            KW_ASSERT_EQ(rc, KW_OK);
            KW_ASSERT_EQ(after.keys, 2);
            break;
        }
        failures++;
        KW_ASSERT(rc != KW_OK);
        KW_ASSERT_EQ(after.agents + after.keys + after.relationships + after.audit_events, 0);
        KW_ASSERT_EQ(after.revision, 0);
    }
    KW_ASSERT(failures >= 1);
    kw_arena_t *ar = kw_arena_new(0);
    KW_ASSERT(ar);
    kw_audit_filter_t f;
    memset(&f, 0, sizeof(f));
    failures = 0;
    for (int n = 1; n < 1000; n++) {
        kw_audit_event_t *evs = NULL;
        size_t k = 0;
        kw_fault_arm(n);
        int rc = kw_store_audit_list(sb, &f, 0, 1000, ar, &evs, &k);
        bool fired = kw_fault_fired();
        kw_fault_arm(0);
        kw_arena_reset(ar);
        if (!fired) {
            KW_ASSERT_EQ(rc, KW_OK);
            KW_ASSERT_EQ(k, 2);
            break;
        }
        failures++;
        KW_ASSERT_EQ(rc, KW_ENOMEM);
    }
    KW_ASSERT(failures >= 1);
    kw_arena_free(ar);
    kw_store_close(sb);
    kw_store_close(sa);
    db_drop(&a);
    db_drop(&b);
}
