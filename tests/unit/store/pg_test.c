/*
 * tests/unit/store/pg_test.c - the PostgreSQL backend against a real server.
 *
 * Runs only when KEYWARD_PG_URL names a server we may create databases on (ctest
 * unit_store_pg starts a throwaway cluster for it: tests/pg/run-unit.sh); otherwise each
 * test says it is skipped. Every test works in a database of its own, dropped at the end.
 * The outage test also needs KEYWARD_PG_CLUSTER: the pg-test-cluster.sh that owns the
 * server, to stop and restart it.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "kw_test.h"
#include "store/store.h"

static const char *pg_url(void)
{
    const char *u = getenv("KEYWARD_PG_URL");
    return u && *u ? u : NULL;
}

static int skip(const char *name)
{
    if (pg_url())
        return 0;
    fprintf(stderr, "  skipped %s: KEYWARD_PG_URL is not set\n", name);
    return 1;
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int admin_exec(const char *sql)
{
    PGconn *c = PQconnectdb(pg_url());
    PQsetNoticeProcessor(c, quiet, NULL);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok)
            fprintf(stderr, "  %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
    } else {
        fprintf(stderr, "  connect: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return ok;
}

typedef struct testdb {
    char name[64];
    char url[1024];
} testdb_t;

/* A fresh database on the server of KEYWARD_PG_URL; d->url names it. */
static int db_new(testdb_t *d)
{
    static int n; /* test-process counter: tests run one at a time */
    snprintf(d->name, sizeof(d->name), "kw_t_%ld_%d", (long)getpid(), ++n);
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", d->name);
    if (!admin_exec(sql))
        return 0;
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", d->name);
    if (!admin_exec(sql))
        return 0;
    const char *u = pg_url();
    const char *scheme = strstr(u, "://");
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    const char *query = strchr(u, '?');
    size_t host_end = slash ? (size_t)(slash - u) : query ? (size_t)(query - u) : strlen(u);
    snprintf(d->url, sizeof(d->url), "%.*s/%s%s", (int)host_end, u, d->name, query ? query : "");
    return 1;
}

static void db_drop(const testdb_t *d)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", d->name);
    (void)admin_exec(sql);
}

/* One SQL statement on the test database; the first column of the first row (or ""). */
static int db_sql(const testdb_t *d, const char *sql, char *out, size_t cap)
{
    PGconn *c = PQconnectdb(d->url);
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

static long db_count(const testdb_t *d, const char *sql)
{
    char v[64];
    return db_sql(d, sql, v, sizeof(v)) ? strtol(v, NULL, 10) : -1;
}

static kw_rel_t rel(const char *rt, const char *ri, const char *r, const char *st, const char *si,
                    const char *sr)
{
    return (kw_rel_t){
        {kw_str_c(rt), kw_str_c(ri)}, kw_str_c(r), {kw_str_c(st), kw_str_c(si), kw_str_c(sr)}};
}

static kw_agent_t agent(const char *id, const char *account, const char *name, int64_t at)
{
    kw_agent_t a;
    memset(&a, 0, sizeof(a));
    snprintf(a.id, sizeof(a.id), "%s", id);
    a.name = name;
    a.account_id = account;
    a.description = NULL;
    a.created_at_us = at;
    return a;
}

static kw_apikey_t key(const char *id, const char *agent_id, const char *name, const char *type,
                       int64_t at, const char *hash)
{
    kw_apikey_t k;
    memset(&k, 0, sizeof(k));
    snprintf(k.id, sizeof(k.id), "%.36s", id);
    snprintf(k.agent_id, sizeof(k.agent_id), "%.36s", agent_id);
    k.name = name;
    k.type = type;
    k.created_at_us = at;
    if (hash) {
        k.hash = (const uint8_t *)hash;
        k.hash_len = strlen(hash);
    }
    return k;
}

/* "T res#rel@subj" / "D ..." lines for a change list, joined by ';'. */
static void changes_str(const kw_update_t *ups, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        kw_buf_t b;
        kw_buf_init(&b);
        kw_rel_format(&ups[i].rel, &b);
        o += (size_t)snprintf(out + o, o < cap ? cap - o : 0, "%s%c %s", i ? ";" : "",
                              ups[i].op == KW_OP_DELETE ? 'D' : 'T', b.ptr ? b.ptr : "");
        kw_buf_free(&b);
    }
}

static int commit_rels(kw_store_t *s, const kw_update_t *ups, size_t n, kw_revision_t *rev)
{
    kw_store_tx_t *tx;
    int rc = kw_store_tx_begin(s, &tx, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw_store_tx_rel_write(tx, ups, n, NULL);
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    return kw_store_tx_commit(tx, rev, NULL);
}

static int count_rel(const kw_rel_t *r, void *ud)
{
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

KW_TEST(pg_crud)
{
    if (skip("pg_crud"))
        return;
    kw_log_set_level(KW_LOG_ERROR);
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    kw_diag_t diag;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, &diag), KW_OK);
    KW_ASSERT_STR_EQ(kw_store_backend(s), "postgres");
    KW_ASSERT_EQ(kw_store_ping(s), KW_OK);
    kw_revision_t rev = 99;
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, 0);
    kw_arena_t *a = kw_arena_new(0);

    /* metadata: get/set, first writer wins, binary-safe */
    char *val;
    size_t len;
    KW_ASSERT_EQ(kw_store_meta_get(s, "jwt", a, &val, &len), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_meta_init(s, "jwt", KW_STR("first\0x"), a, &val, &len), KW_OK);
    KW_ASSERT_EQ(len, 7);
    KW_ASSERT(memcmp(val, "first\0x", 7) == 0);
    KW_ASSERT_EQ(kw_store_meta_init(s, "jwt", KW_STR("second"), a, &val, &len), KW_OK);
    KW_ASSERT_STR_EQ(val, "first");
    KW_ASSERT_EQ(kw_store_meta_set(s, "schema", KW_STR("definition user {}")), KW_OK);
    KW_ASSERT_EQ(kw_store_meta_set(s, "schema", KW_STR("definition agent {}")), KW_OK);
    KW_ASSERT_EQ(kw_store_meta_get(s, "schema", a, &val, &len), KW_OK);
    KW_ASSERT_STR_EQ(val, "definition agent {}");
    KW_ASSERT_EQ(kw_store_meta_set(s, "revision", KW_STR("7")), KW_EINVAL);

    /* agents and keys in one transaction, with a relationship */
    kw_agent_t a1 = agent("a1", "acct", "bot", 2000), a2 = agent("a2", "acct", "alpha", 1000);
    a1.description = "the bot";
    kw_apikey_t k1 = key("k1", "a1", "ci", "internal", 3000, "hash-one");
    kw_apikey_t k2 = key("k2", "a1", "ci", "github", 3000, NULL);
    k2.secret_enc = (const uint8_t *)"\x01\x00\x02";
    k2.secret_enc_len = 3;
    kw_apikey_t k3 = key("k3", "a1", "deploy", "external", 2500, "hash-three");
    kw_update_t up = {KW_OP_CREATE, rel("agent", "a1", "owner", "user", "u1", "...")};
    kw_store_tx_t *tx;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a2), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k2), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k3), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &up, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(rev, 1);
    KW_ASSERT_EQ(kw_store_meta_get(s, "revision", a, &val, &len), KW_OK);
    KW_ASSERT_STR_EQ(val, "1");

    kw_agent_t g;
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR("a1"), a, &g), KW_OK);
    KW_ASSERT_STR_EQ(g.id, "a1");
    KW_ASSERT_STR_EQ(g.name, "bot");
    KW_ASSERT_STR_EQ(g.description, "the bot");
    KW_ASSERT_STR_EQ(g.account_id, "acct");
    KW_ASSERT_EQ(g.created_at_us, 2000);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR("a2"), a, &g), KW_OK);
    KW_ASSERT(g.description == NULL);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR("nope"), a, &g), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR("bad\xff"), a, &g), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_agent_get_by_name(s, KW_STR("acct"), KW_STR("bot"), a, &g), KW_OK);
    KW_ASSERT_STR_EQ(g.id, "a1");
    KW_ASSERT_EQ(kw_store_agent_get_by_name(s, KW_STR("other"), KW_STR("bot"), a, &g),
                 KW_ENOTFOUND);
    kw_str_t ids[] = {KW_STR("a1"), KW_STR("zz"), KW_STR("a2"), KW_STR("q\"\\,{}")};
    kw_agent_t *rows;
    size_t n;
    KW_ASSERT_EQ(kw_store_agents_by_ids(s, ids, 4, a, &rows, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_STR_EQ(rows[0].id, "a2"); /* (created_at, id) order */
    KW_ASSERT_STR_EQ(rows[1].id, "a1");
    bool present[4] = {false, true, false, true};
    KW_ASSERT_EQ(kw_store_agents_present(s, ids, 4, a, present), KW_OK);
    KW_ASSERT(present[0] && !present[1] && present[2] && !present[3]);

    kw_apikey_t kk;
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR("k1"), a, &kk), KW_OK);
    KW_ASSERT_STR_EQ(kk.agent_id, "a1");
    KW_ASSERT_STR_EQ(kk.type, "internal");
    KW_ASSERT_EQ(kk.hash_len, 8);
    KW_ASSERT(memcmp(kk.hash, "hash-one", 8) == 0);
    KW_ASSERT_EQ(kk.secret_enc_len, 0);
    KW_ASSERT_EQ(kw_store_key_get_by_name(s, KW_STR("a1"), KW_STR("ci"), KW_STR("github"), a, &kk),
                 KW_OK);
    KW_ASSERT_STR_EQ(kk.id, "k2");
    KW_ASSERT_EQ(kk.hash_len, 0);
    KW_ASSERT_EQ(kk.secret_enc_len, 3);
    KW_ASSERT(memcmp(kk.secret_enc, "\x01\x00\x02", 3) == 0);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, (const uint8_t *)"hash-three", 10, a, &kk), KW_OK);
    KW_ASSERT_STR_EQ(kk.id, "k3");
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, (const uint8_t *)"hash-none", 9, a, &kk),
                 KW_ENOTFOUND);

    /* keyset pagination: k3 (2500), then k1 and k2 (3000, by id) */
    kw_apikey_t *ks;
    KW_ASSERT_EQ(kw_store_keys_of_agent(s, KW_STR("a1"), 0, KW_STR(""), 2, a, &ks, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_STR_EQ(ks[0].id, "k3");
    KW_ASSERT_STR_EQ(ks[1].id, "k1");
    KW_ASSERT_EQ(
        kw_store_keys_of_agent(s, KW_STR("a1"), ks[1].created_at_us, KW_STR("k1"), 2, a, &ks, &n),
        KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_STR_EQ(ks[0].id, "k2");
    kw_str_t kids[] = {KW_STR("k2"), KW_STR("k1"), KW_STR("kx")};
    KW_ASSERT_EQ(kw_store_keys_by_ids(s, KW_STR("a1"), kids, 3, a, &ks, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_STR_EQ(ks[0].id, "k1");
    KW_ASSERT_STR_EQ(ks[1].id, "k2");
    KW_ASSERT_EQ(kw_store_keys_by_ids(s, KW_STR("a2"), kids, 3, a, &ks, &n), KW_OK);
    KW_ASSERT_EQ(n, 0);

    /* a snapshot of the relationships at the current revision */
    size_t count = 0;
    kw_revision_t at = 0;
    KW_ASSERT_EQ(kw_store_load_relationships(s, count_rel, &count, &at), KW_OK);
    KW_ASSERT_EQ(count, 1);
    KW_ASSERT_EQ(at, 1);
    kw_store_close(s);
    kw_arena_free(a);
    db_drop(&d);
}

KW_TEST(pg_load_relationships)
{
    if (skip("pg_load_relationships"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    /* more rows than one FETCH (10000) */
    enum { N = 12345 };
    kw_update_t *ups = calloc(N, sizeof(*ups));
    char(*ids)[16] = calloc(N, 16);
    KW_ASSERT(ups && ids);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], 16, "d%d", i);
        ups[i] = (kw_update_t){KW_OP_TOUCH, rel("doc", ids[i], "viewer", "user", "u", "")};
    }
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(commit_rels(s, ups, N, &rev), KW_OK);
    size_t count = 0;
    kw_revision_t at = 0;
    KW_ASSERT_EQ(kw_store_load_relationships(s, count_rel, &count, &at), KW_OK);
    KW_ASSERT_EQ(count, N);
    KW_ASSERT_EQ(at, rev);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM changelog"), N);
    free(ups);
    free(ids);
    kw_store_close(s);
    db_drop(&d);
}

KW_TEST(pg_conflicts)
{
    if (skip("pg_conflicts"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    kw_agent_t a1 = agent("a1", "acct", "bot", 1), dup = agent("a9", "acct", "bot", 2);
    kw_apikey_t k1 = key("k1", "a1", "ci", "internal", 1, "h1");
    kw_apikey_t kdup = key("k2", "a1", "ci", "internal", 2, "h2");
    kw_apikey_t khash = key("k3", "a1", "other", "internal", 2, "h1");
    kw_apikey_t korphan = key("k4", "nobody", "ci", "internal", 2, "h4");
    kw_update_t up = {KW_OP_CREATE, rel("agent", "a1", "owner", "user", "u1", "")};
    kw_store_tx_t *tx;
    kw_revision_t rev;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &up, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);

    /* Each conflict leaves the transaction usable, as with SQLite. */
    kw_diag_t diag;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &dup), KW_ECONFLICT);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_ECONFLICT);  /* same id */
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &kdup), KW_ECONFLICT);  /* (agent, name, type) */
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &khash), KW_ECONFLICT); /* hash */
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &korphan), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &up, 1, &diag), KW_ECONFLICT);
    KW_ASSERT(strstr(diag.msg, "already exists") != NULL);
    KW_ASSERT_EQ(kw_store_tx_key_delete(tx, KW_STR("kx")), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_tx_agent_delete(tx, KW_STR("ax")), KW_ENOTFOUND);
    kw_update_t touch[2] = {{KW_OP_TOUCH, rel("agent", "a1", "owner", "user", "u1", "")},
                            {KW_OP_DELETE, rel("agent", "a1", "owner", "user", "zz", "")}};
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, touch, 2, NULL), KW_OK);
    const kw_update_t *ch;
    size_t n;
    char buf[512];
    kw_store_tx_changes(tx, &ch, &n);
    changes_str(ch, n, buf, sizeof(buf));
    KW_ASSERT_STR_EQ(buf, "T agent:a1#owner@user:u1"); /* absent delete: not recorded */
    kw_agent_t a2 = agent("a2", "acct", "bot2", 3);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a2), KW_OK);
    kw_revision_t rev2;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev2, NULL), KW_OK);
    KW_ASSERT_EQ(rev2, rev + 1);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM agents"), 2);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM api_keys"), 1);

    /* a rolled-back transaction changes nothing, not even the revision */
    kw_agent_t a3 = agent("a3", "acct", "bot3", 4);
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a3), KW_OK);
    kw_store_tx_rollback(tx);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM agents"), 2);
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, rev2);
    kw_store_close(s);
    db_drop(&d);
}

/* Two instances creating the same (agent, name, type) at once. The barrier is before
 * begin: a transaction holds the global write order from begin (store.h), so the second
 * begin waits for the first transaction to end; the second insert then sees the first's
 * committed row. */
typedef struct race {
    kw_store_t *s;
    pthread_barrier_t *bar;
    const char *key_id;
    const char *hash;
    int rc;
} race_t;

static void *race_key(void *p)
{
    race_t *r = p;
    kw_apikey_t k = key(r->key_id, "a1", "same", "internal", 5, r->hash);
    kw_store_tx_t *tx;
    pthread_barrier_wait(r->bar);
    r->rc = kw_store_tx_begin(r->s, &tx, NULL);
    if (r->rc != KW_OK)
        return NULL;
    r->rc = kw_store_tx_key_insert(tx, &k);
    if (r->rc == KW_OK) {
        kw_revision_t rev;
        r->rc = kw_store_tx_commit(tx, &rev, NULL);
    } else {
        kw_store_tx_rollback(tx);
    }
    return NULL;
}

KW_TEST(pg_concurrent_create_one_wins)
{
    if (skip("pg_concurrent_create_one_wins"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s1 = NULL, *s2 = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(d.url, &s2, NULL), KW_OK);
    kw_agent_t a1 = agent("a1", "acct", "bot", 1);
    kw_store_tx_t *tx;
    kw_revision_t rev;
    KW_ASSERT_EQ(kw_store_tx_begin(s1, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    for (int round = 0; round < 20; round++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        char id1[16], id2[16], h1[16], h2[16];
        snprintf(id1, sizeof(id1), "x%d", round);
        snprintf(id2, sizeof(id2), "y%d", round);
        snprintf(h1, sizeof(h1), "hx%d", round);
        snprintf(h2, sizeof(h2), "hy%d", round);
        race_t r1 = {s1, &bar, id1, h1, 0}, r2 = {s2, &bar, id2, h2, 0};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, race_key, &r1);
        pthread_create(&t2, NULL, race_key, &r2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        pthread_barrier_destroy(&bar);
        KW_ASSERT((r1.rc == KW_OK && r2.rc == KW_ECONFLICT) ||
                  (r1.rc == KW_ECONFLICT && r2.rc == KW_OK));
        KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM api_keys WHERE name = 'same'"), 1);
        /* delete by id: the loser's id never removes the winner's row */
        KW_ASSERT_EQ(kw_store_tx_begin(s1, &tx, NULL), KW_OK);
        const char *loser = r1.rc == KW_OK ? id2 : id1;
        const char *winner = r1.rc == KW_OK ? id1 : id2;
        KW_ASSERT_EQ(kw_store_tx_key_delete(tx, kw_str_c(loser)), KW_ENOTFOUND);
        KW_ASSERT_EQ(kw_store_tx_key_delete(tx, kw_str_c(winner)), KW_OK);
        KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    }
    kw_store_close(s1);
    kw_store_close(s2);
    db_drop(&d);
}

KW_TEST(pg_cascade_deletes_exact_changes)
{
    if (skip("pg_cascade_deletes_exact_changes"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    kw_agent_t a1 = agent("a1", "acct", "bot", 1), a2 = agent("a2", "acct", "other", 1);
    kw_apikey_t k1 = key("k1", "a1", "one", "internal", 1, "h1");
    kw_apikey_t k2 = key("k2", "a1", "two", "internal", 2, "h2");
    kw_apikey_t k3 = key("k3", "a2", "three", "internal", 2, "h3");
    kw_update_t ups[] = {
        {KW_OP_TOUCH, rel("agent", "a1", "owner", "user", "u1", "")},
        {KW_OP_TOUCH, rel("account", "acct", "agent", "agent", "a1", "")},
        {KW_OP_TOUCH, rel("agent_api_key", "k1", "agent", "agent", "a1", "")},
        {KW_OP_TOUCH, rel("agent_api_key", "k2", "agent", "agent", "a1", "")},
        {KW_OP_TOUCH, rel("agent", "a2", "viewer", "agent_api_key", "k1", "")},
        {KW_OP_TOUCH, rel("agent_api_key", "k3", "agent", "agent", "a2", "")},
        {KW_OP_TOUCH, rel("group", "g", "member", "agent", "a1", "member")},
    };
    kw_store_tx_t *tx;
    kw_revision_t rev;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a2), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k2), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k3), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, ups, KW_ARRAY_LEN(ups), NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);

    /* key delete: its row, then relationships naming it as resource, then as subject */
    const kw_update_t *ch;
    size_t n;
    char buf[1024];
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_delete(tx, KW_STR("k1")), KW_OK);
    kw_store_tx_changes(tx, &ch, &n);
    changes_str(ch, n, buf, sizeof(buf));
    KW_ASSERT_STR_EQ(buf, "D agent_api_key:k1#agent@agent:a1;D agent:a2#viewer@agent_api_key:k1");
    kw_revision_t rev_k;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev_k, NULL), KW_OK);
    KW_ASSERT_EQ(rev_k, rev + 1);

    /* agent delete: its keys' relationships (as resource, as subject), then its own */
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_delete(tx, KW_STR("a1")), KW_OK);
    kw_store_tx_changes(tx, &ch, &n);
    changes_str(ch, n, buf, sizeof(buf));
    KW_ASSERT_STR_EQ(buf, "D agent_api_key:k2#agent@agent:a1;D agent:a1#owner@user:u1;"
                          "D account:acct#agent@agent:a1;D group:g#member@agent:a1#member");
    kw_revision_t rev_a;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev_a, NULL), KW_OK);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM agents"), 1);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM api_keys"), 1);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM relationships"), 1);
    /* the changelog holds exactly the reported changes at their revisions */
    char v[64];
    snprintf(buf, sizeof(buf),
             "SELECT count(*) FROM changelog WHERE revision = %" PRIu64 " AND op = %d", rev_a,
             (int)KW_OP_DELETE);
    KW_ASSERT_EQ(db_count(&d, buf), 4);
    snprintf(buf, sizeof(buf),
             "SELECT resource_type || ':' || resource_id FROM changelog WHERE revision = %" PRIu64
             " AND seq = 1",
             rev_a);
    KW_ASSERT(db_sql(&d, buf, v, sizeof(v)));
    KW_ASSERT_STR_EQ(v, "agent:a1");

    /* delete matching reports what it removed */
    kw_filter_t f = {.resource_type = KW_STR("agent_api_key")};
    size_t nd = 99;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_delete_matching(tx, &f, &nd, NULL), KW_OK);
    KW_ASSERT_EQ(nd, 1);
    kw_store_tx_changes(tx, &ch, &n);
    changes_str(ch, n, buf, sizeof(buf));
    KW_ASSERT_STR_EQ(buf, "D agent_api_key:k3#agent@agent:a2");
    kw_filter_t f2 = {.resource_type = KW_STR("agent_api_key"),
                      .has_subject = true,
                      .subject_type = KW_STR("agent"),
                      .subject_relation_set = true,
                      .subject_relation = KW_STR("...")};
    KW_ASSERT_EQ(kw_store_tx_rel_delete_matching(tx, &f2, &nd, NULL), KW_OK);
    KW_ASSERT_EQ(nd, 0);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM relationships"), 0);
    kw_store_close(s);
    db_drop(&d);
}

/* 4 threads committing at once: revisions unique, gapless, in changelog order. */
typedef struct writer {
    kw_store_t *s;
    int id;
    int n;
    kw_revision_t revs[50];
    int rc;
} writer_t;

static void *write_loop(void *p)
{
    writer_t *w = p;
    for (int i = 0; i < w->n; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "w%d-%d", w->id, i);
        kw_update_t up[2] = {{KW_OP_TOUCH, rel("doc", rid, "viewer", "user", "u", "")},
                             {KW_OP_TOUCH, rel("doc", rid, "editor", "user", "u", "")}};
        w->rc = commit_rels(w->s, up, 2, &w->revs[i]);
        if (w->rc != KW_OK)
            return NULL;
    }
    return NULL;
}

typedef struct collect {
    kw_revision_t last_rev;
    size_t n;
    int ordered;
    char first_ids[200][32]; /* resource id by revision (first change of each) */
} collect_t;

static int on_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *r, void *ud)
{
    collect_t *c = ud;
    if (rev < c->last_rev || op != KW_OP_TOUCH)
        c->ordered = 0;
    if (rev < 200 && rev != c->last_rev)
        snprintf(c->first_ids[rev], 32, "%.*s", KW_STR_FMT(r->resource.id));
    c->last_rev = rev;
    c->n++;
    return 0;
}

KW_TEST(pg_revisions_gapless_concurrent)
{
    if (skip("pg_revisions_gapless_concurrent"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    writer_t w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){.s = s, .id = i, .n = 25};
        pthread_create(&t[i], NULL, write_loop, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    int seen[101] = {0};
    for (int i = 0; i < 4; i++) {
        KW_ASSERT_EQ(w[i].rc, KW_OK);
        for (int j = 0; j < 25; j++) {
            KW_ASSERT(w[i].revs[j] >= 1 && w[i].revs[j] <= 100);
            KW_ASSERT_EQ(seen[w[i].revs[j]], 0);
            seen[w[i].revs[j]] = 1;
            if (j)
                KW_ASSERT(w[i].revs[j] > w[i].revs[j - 1]);
        }
    }
    collect_t *c = calloc(1, sizeof(*c));
    KW_ASSERT(c);
    c->ordered = 1;
    kw_revision_t upto = 0;
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 0, on_change, c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 100);
    KW_ASSERT_EQ(c->n, 200);
    KW_ASSERT(c->ordered);
    /* each revision carries what the writer that got it committed */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 25; j++) {
            char rid[32];
            snprintf(rid, sizeof(rid), "w%d-%d", i, j);
            KW_ASSERT_STR_EQ(c->first_ids[w[i].revs[j]], rid);
        }
    free(c);
    kw_store_close(s);
    db_drop(&d);
}

/* The global write order (store.h, tag-kw-store-write-order) across two instances: while
 * A's transaction is open, B's begin waits; B's begin returns only after A's commit,
 * and from then on the committed state B reads (revision, changelog) includes A's
 * commit and nothing newer, so a check B makes there holds until B commits. A rolled
 * back transaction releases the order and leaves no revision behind. */
typedef struct ordered {
    kw_store_t *s;
    int64_t began_ms;    /* when kw_store_tx_begin returned */
    kw_revision_t seen;  /* kw_store_revision right after begin: the committed state */
    size_t seen_changes; /* changes after revision 0 at that point */
    kw_revision_t rev;
    int rc;
} ordered_t;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *r, void *ud)
{
    (void)rev;
    (void)op;
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

static void *begin_check_commit(void *p)
{
    ordered_t *o = p;
    kw_store_tx_t *tx;
    o->rc = kw_store_tx_begin(o->s, &tx, NULL);
    if (o->rc != KW_OK)
        return NULL;
    o->began_ms = mono_ms();
    kw_revision_t upto = 0;
    o->rc = kw_store_revision(o->s, &o->seen);
    if (o->rc == KW_OK)
        o->rc = kw_store_changes_since(o->s, 0, 0, count_change, &o->seen_changes, &upto, NULL);
    kw_update_t up = {KW_OP_TOUCH, rel("doc", "b", "viewer", "user", "u", "")};
    if (o->rc == KW_OK)
        o->rc = kw_store_tx_rel_write(tx, &up, 1, NULL);
    if (o->rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return NULL;
    }
    o->rc = kw_store_tx_commit(tx, &o->rev, NULL);
    return NULL;
}

KW_TEST(pg_tx_holds_the_write_order_from_begin)
{
    if (skip("pg_tx_holds_the_write_order_from_begin"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *sa = NULL, *sb = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &sa, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(d.url, &sb, NULL), KW_OK);

    /* a rollback gives the order back and no revision is used up */
    kw_store_tx_t *tx;
    kw_revision_t rev = 99;
    KW_ASSERT_EQ(kw_store_tx_begin(sa, &tx, NULL), KW_OK);
    kw_store_tx_rollback(tx);
    KW_ASSERT_EQ(kw_store_revision(sb, &rev), KW_OK);
    KW_ASSERT_EQ(rev, 0);

    /* A begins and writes; B begins meanwhile (another instance) */
    KW_ASSERT_EQ(kw_store_tx_begin(sa, &tx, NULL), KW_OK);
    kw_update_t up = {KW_OP_TOUCH, rel("doc", "a", "viewer", "user", "u", "")};
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &up, 1, NULL), KW_OK);
    ordered_t ob = {.s = sb};
    pthread_t t;
    pthread_create(&t, NULL, begin_check_commit, &ob);
    usleep(300 * 1000);
    int64_t committed_ms = mono_ms();
    kw_revision_t rev_a = 0;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev_a, NULL), KW_OK);
    pthread_join(t, NULL);
    KW_ASSERT_EQ(ob.rc, KW_OK);
    KW_ASSERT_EQ(rev_a, 1);
    /* B's begin returned only after A's commit (it waited ~300 ms) ... */
    KW_ASSERT(ob.began_ms >= committed_ms);
    /* ... and from there B's reads saw exactly A's commit: revision 1, its one change */
    KW_ASSERT_EQ(ob.seen, 1);
    KW_ASSERT_EQ(ob.seen_changes, 1);
    KW_ASSERT_EQ(ob.rev, 2);

    /* an empty transaction (a schema announcement) still gets its revision */
    KW_ASSERT_EQ(kw_store_tx_begin(sb, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(rev, 3);
    kw_revision_t upto = 0;
    size_t n = 0;
    KW_ASSERT_EQ(kw_store_changes_since(sa, 0, 0, count_change, &n, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 3);
    KW_ASSERT_EQ(n, 2);
    kw_store_close(sa);
    kw_store_close(sb);
    db_drop(&d);
}

typedef struct meta_race {
    kw_store_t *s;
    pthread_barrier_t *bar;
    const char *want;
    char got[32];
    int rc;
} meta_race_t;

static void *meta_init_once(void *p)
{
    meta_race_t *m = p;
    kw_arena_t *a = kw_arena_new(0);
    char *val = NULL;
    size_t len = 0;
    pthread_barrier_wait(m->bar);
    m->rc = kw_store_meta_init(m->s, "secret", kw_str_c(m->want), a, &val, &len);
    if (m->rc == KW_OK)
        snprintf(m->got, sizeof(m->got), "%.*s", (int)len, val);
    kw_arena_free(a);
    return NULL;
}

KW_TEST(pg_meta_init_first_writer_wins)
{
    if (skip("pg_meta_init_first_writer_wins"))
        return;
    for (int round = 0; round < 5; round++) {
        testdb_t d;
        KW_ASSERT(db_new(&d));
        kw_store_t *s1 = NULL, *s2 = NULL;
        KW_ASSERT_EQ(kw_store_open(d.url, &s1, NULL), KW_OK);
        KW_ASSERT_EQ(kw_store_open(d.url, &s2, NULL), KW_OK);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        meta_race_t m1 = {s1, &bar, "one", "", 0}, m2 = {s2, &bar, "two", "", 0};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, meta_init_once, &m1);
        pthread_create(&t2, NULL, meta_init_once, &m2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        pthread_barrier_destroy(&bar);
        KW_ASSERT_EQ(m1.rc, KW_OK);
        KW_ASSERT_EQ(m2.rc, KW_OK);
        KW_ASSERT_STR_EQ(m1.got, m2.got);
        KW_ASSERT(strcmp(m1.got, "one") == 0 || strcmp(m1.got, "two") == 0);
        kw_store_close(s1);
        kw_store_close(s2);
        db_drop(&d);
    }
}

/* Two instances migrating one empty database at once (the advisory lock serializes). */
typedef struct opener {
    const char *url;
    pthread_barrier_t *bar;
    kw_store_t *s;
    int rc;
} opener_t;

static void *open_one(void *p)
{
    opener_t *o = p;
    pthread_barrier_wait(o->bar);
    o->rc = kw_store_open(o->url, &o->s, NULL);
    return NULL;
}

KW_TEST(pg_migrations_concurrent_and_newer_refused)
{
    if (skip("pg_migrations_concurrent_and_newer_refused"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 3);
    opener_t o[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        o[i] = (opener_t){d.url, &bar, NULL, 0};
        pthread_create(&t[i], NULL, open_one, &o[i]);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
    for (int i = 0; i < 3; i++) {
        KW_ASSERT_EQ(o[i].rc, KW_OK);
        kw_store_close(o[i].s);
    }
    /* every migration applied once: versions 1..N */
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM schema_migrations"),
                 db_count(&d, "SELECT max(version) FROM schema_migrations"));
    KW_ASSERT(db_count(&d, "SELECT count(*) FROM schema_migrations") >= 2);
    KW_ASSERT(db_sql(&d, "INSERT INTO schema_migrations (version) VALUES (999)", NULL, 0));
    kw_store_t *s = NULL;
    kw_diag_t diag;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, &diag), KW_EDB);
    KW_ASSERT(strstr(diag.msg, "newer") != NULL);
    /* keyward's own URL parameter is taken out before libpq sees the URL */
    char url[1100];
    snprintf(url, sizeof(url), "%s%cpool=3", d.url, strchr(d.url, '?') ? '&' : '?');
    KW_ASSERT_EQ(kw_store_open(url, &s, &diag), KW_EDB); /* still the newer schema */
    snprintf(url, sizeof(url), "%s%cpool=0", d.url, strchr(d.url, '?') ? '&' : '?');
    KW_ASSERT_EQ(kw_store_open(url, &s, &diag), KW_EINVAL);
    /* one connection cannot serve a write that catches up on a second one */
    snprintf(url, sizeof(url), "%s%cpool=1", d.url, strchr(d.url, '?') ? '&' : '?');
    KW_ASSERT_EQ(kw_store_open(url, &s, &diag), KW_EINVAL);
    KW_ASSERT(strstr(diag.msg, "2..256") != NULL);
    db_drop(&d);
}

typedef struct collect_list {
    char buf[1024];
    size_t o;
    int stop_after;
    int n;
} collect_list_t;

static int on_change_list(kw_revision_t rev, kw_op_t op, const kw_rel_t *r, void *ud)
{
    collect_list_t *c = ud;
    c->o += (size_t)snprintf(c->buf + c->o, sizeof(c->buf) - c->o, "%s%" PRIu64 "%c%.*s",
                             c->o ? ";" : "", rev, op == KW_OP_DELETE ? 'D' : 'T',
                             KW_STR_FMT(r->resource.id));
    c->n++;
    return c->stop_after && c->n >= c->stop_after ? 42 : 0;
}

KW_TEST(pg_changes_since_order_and_limits)
{
    if (skip("pg_changes_since_order_and_limits"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    kw_revision_t r1, r2, r3, r4, upto;
    kw_update_t b1[3] = {{KW_OP_TOUCH, rel("doc", "a", "viewer", "user", "u", "")},
                         {KW_OP_TOUCH, rel("doc", "b", "viewer", "user", "u", "")},
                         {KW_OP_TOUCH, rel("doc", "c", "viewer", "user", "u", "")}};
    kw_update_t b2[1] = {{KW_OP_DELETE, rel("doc", "b", "viewer", "user", "u", "")}};
    kw_update_t b4[2] = {{KW_OP_TOUCH, rel("doc", "d", "viewer", "user", "u", "")},
                         {KW_OP_DELETE, rel("doc", "a", "viewer", "user", "u", "")}};
    KW_ASSERT_EQ(commit_rels(s, b1, 3, &r1), KW_OK);
    KW_ASSERT_EQ(commit_rels(s, b2, 1, &r2), KW_OK);
    /* a revision without relationship changes (an agent row only) */
    kw_agent_t a1 = agent("a1", "acct", "bot", 1);
    kw_store_tx_t *tx;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &r3, NULL), KW_OK);
    KW_ASSERT_EQ(commit_rels(s, b4, 2, &r4), KW_OK);
    KW_ASSERT_EQ(r4, 4);

    collect_list_t c = {0};
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 0, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 4);
    KW_ASSERT_STR_EQ(c.buf, "1Ta;1Tb;1Tc;2Db;4Td;4Da");
    /* limit 2: revision 1 (3 changes) is delivered whole, never split */
    memset(&c, 0, sizeof(c));
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 2, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 1);
    KW_ASSERT_STR_EQ(c.buf, "1Ta;1Tb;1Tc");
    /* from 1 with limit 2: revision 2, then revision 4 would overflow: stop at 3 */
    memset(&c, 0, sizeof(c));
    KW_ASSERT_EQ(kw_store_changes_since(s, 1, 2, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 3);
    KW_ASSERT_STR_EQ(c.buf, "2Db");
    memset(&c, 0, sizeof(c));
    KW_ASSERT_EQ(kw_store_changes_since(s, 3, 2, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 4);
    KW_ASSERT_STR_EQ(c.buf, "4Td;4Da");
    memset(&c, 0, sizeof(c));
    KW_ASSERT_EQ(kw_store_changes_since(s, 4, 0, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 4);
    KW_ASSERT_EQ(c.n, 0);
    /* a callback's non-zero return stops the stream and is returned */
    memset(&c, 0, sizeof(c));
    c.stop_after = 2;
    upto = 77;
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 0, on_change_list, &c, &upto, NULL), 42);
    KW_ASSERT_EQ(upto, 77);
    KW_ASSERT_EQ(c.n, 2);
    kw_store_close(s);
    db_drop(&d);
}

/* Ages the changelog rows of revisions [lo, hi] by an hour (the database's clock decides
 * what is old; the test moves the rows instead of the clock). */
static int age_revisions(const testdb_t *d, kw_revision_t lo, kw_revision_t hi)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "UPDATE changelog SET at_us = at_us - 3600000000 WHERE revision BETWEEN %" PRIu64
             " AND %" PRIu64,
             lo, hi);
    return db_sql(d, sql, NULL, 0);
}

static long long horizon_of(const testdb_t *d)
{
    return db_count(d, "SELECT pruned_through FROM changelog_horizon");
}

#define MINUTE_US INT64_C(60000000)

KW_TEST(pg_changelog_prune_and_horizon)
{
    if (skip("pg_changelog_prune_and_horizon"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    kw_revision_t r, upto, horizon = 99;
    size_t n = 99;
    kw_update_t b1[3] = {{KW_OP_TOUCH, rel("doc", "a", "viewer", "user", "u", "")},
                         {KW_OP_TOUCH, rel("doc", "b", "viewer", "user", "u", "")},
                         {KW_OP_TOUCH, rel("doc", "c", "viewer", "user", "u", "")}};
    kw_update_t b2[1] = {{KW_OP_DELETE, rel("doc", "b", "viewer", "user", "u", "")}};
    kw_update_t b4[2] = {{KW_OP_TOUCH, rel("doc", "d", "viewer", "user", "u", "")},
                         {KW_OP_DELETE, rel("doc", "a", "viewer", "user", "u", "")}};
    KW_ASSERT_EQ(commit_rels(s, b1, 3, &r), KW_OK); /* 1 */
    KW_ASSERT_EQ(commit_rels(s, b2, 1, &r), KW_OK); /* 2 */
    kw_store_tx_t *tx;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK); /* 3: no relationship change */
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &r, NULL), KW_OK);
    KW_ASSERT_EQ(commit_rels(s, b4, 2, &r), KW_OK); /* 4 */
    KW_ASSERT_EQ(r, 4);

    /* Nothing is old yet: nothing pruned, horizon 0, every reader served. */
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 0, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT_EQ(horizon, 0);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM changelog"), 6);
    collect_list_t c = {0};
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 0, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 4);
    KW_ASSERT_EQ(kw_store_prune_changelog(s, 0, 0, &n, &horizon, NULL), KW_EINVAL);

    /* Revisions 1..3 old (3 has no rows): pruned through 2, the highest revision deleted. */
    KW_ASSERT(age_revisions(&d, 1, 3));
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 0, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 4);
    KW_ASSERT_EQ(horizon, 2);
    KW_ASSERT_EQ(horizon_of(&d), 2);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM changelog"), 2);
    /* A reader below the horizon is refused, whatever rows are left; at it, served. */
    kw_diag_t diag;
    kw_diag_clear(&diag);
    memset(&c, 0, sizeof(c));
    upto = 77;
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 0, on_change_list, &c, &upto, &diag), KW_EPRUNED);
    KW_ASSERT_EQ(upto, 77);
    KW_ASSERT_EQ(c.n, 0);
    KW_ASSERT(strstr(diag.msg, "pruned through revision 2") != NULL);
    KW_ASSERT(strstr(diag.msg, "at revision 0") != NULL);
    KW_ASSERT_EQ(kw_store_changes_since(s, 1, 0, on_change_list, &c, &upto, NULL), KW_EPRUNED);
    KW_ASSERT_EQ(kw_store_changes_since(s, 2, 0, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 4);
    KW_ASSERT_STR_EQ(c.buf, "4Td;4Da");
    memset(&c, 0, sizeof(c));
    KW_ASSERT_EQ(kw_store_changes_since(s, 3, 0, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_STR_EQ(c.buf, "4Td;4Da");

    /* Bounded work: one row per call. The first call cuts revision 4 and the horizon
     * covers it at once (a reader at 3 must not get half of 4); the next finishes it. */
    KW_ASSERT(age_revisions(&d, 4, 4));
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 1, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(horizon, 4);
    KW_ASSERT_EQ(kw_store_changes_since(s, 3, 0, on_change_list, &c, &upto, NULL), KW_EPRUNED);
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 1, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 1, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT_EQ(horizon, 4);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM changelog"), 0);

    /* Stops at the first row that must stay: 5 old, 6 young, 7 "old" (a clock step back)
     * -> only 5 goes. Young rows stay however small the retention asked. */
    kw_update_t b5[1] = {{KW_OP_TOUCH, rel("doc", "e", "viewer", "user", "u", "")}};
    kw_update_t b6[1] = {{KW_OP_TOUCH, rel("doc", "f", "viewer", "user", "u", "")}};
    kw_update_t b7[1] = {{KW_OP_TOUCH, rel("doc", "g", "viewer", "user", "u", "")}};
    KW_ASSERT_EQ(commit_rels(s, b5, 1, &r), KW_OK);
    KW_ASSERT_EQ(commit_rels(s, b6, 1, &r), KW_OK);
    KW_ASSERT_EQ(commit_rels(s, b7, 1, &r), KW_OK);
    KW_ASSERT_EQ(r, 7);
    KW_ASSERT(age_revisions(&d, 5, 5));
    KW_ASSERT(age_revisions(&d, 7, 7));
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 0, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(horizon, 5);
    memset(&c, 0, sizeof(c));
    KW_ASSERT_EQ(kw_store_changes_since(s, 5, 0, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_STR_EQ(c.buf, "6Tf;7Tg");

    /* One pruner at a time: while another session holds the lock, a call skips. */
    PGconn *other = PQconnectdb(d.url);
    KW_ASSERT(PQstatus(other) == CONNECTION_OK);
    char sql[96];
    snprintf(sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(%ld)", 0x6b777072L);
    PGresult *res = PQexec(other, sql);
    KW_ASSERT(PQresultStatus(res) == PGRES_TUPLES_OK);
    PQclear(res);
    KW_ASSERT(age_revisions(&d, 6, 6));
    n = 99;
    kw_diag_clear(&diag);
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 0, &n, &horizon, &diag), KW_ECONFLICT);
    KW_ASSERT_EQ(n, 99);
    KW_ASSERT(strstr(diag.msg, "another instance") != NULL);
    KW_ASSERT_EQ(horizon_of(&d), 5);
    PQclear(PQexec(other, "COMMIT"));
    PQfinish(other);
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 0, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_EQ(horizon, 7);

    /* The horizon decides even with no rows at all: revisions 8, 9 have none. */
    for (int i = 0; i < 2; i++) {
        KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
        KW_ASSERT_EQ(kw_store_tx_commit(tx, &r, NULL), KW_OK);
    }
    KW_ASSERT_EQ(kw_store_changes_since(s, 6, 0, on_change_list, &c, &upto, NULL), KW_EPRUNED);
    memset(&c, 0, sizeof(c));
    KW_ASSERT_EQ(kw_store_changes_since(s, 7, 0, on_change_list, &c, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 9);
    KW_ASSERT_EQ(c.n, 0);
    /* Writes go on while pruning; never blocked by it (the revision row is not touched). */
    KW_ASSERT_EQ(commit_rels(s, b2, 1, &r), KW_OK);
    KW_ASSERT_EQ(r, 10);
    kw_store_close(s);
    db_drop(&d);
}

/* A database migrated before retention existed: migration 2 gives the existing changelog
 * rows the time it ran (kept a full retention from then) and a horizon of 0. */
KW_TEST(pg_changelog_migration_keeps_existing_rows)
{
    if (skip("pg_changelog_migration_keeps_existing_rows"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    kw_update_t b1[2] = {{KW_OP_TOUCH, rel("doc", "a", "viewer", "user", "u", "")},
                         {KW_OP_TOUCH, rel("doc", "b", "viewer", "user", "u", "")}};
    kw_revision_t r;
    KW_ASSERT_EQ(commit_rels(s, b1, 2, &r), KW_OK);
    kw_store_close(s);
    /* Back to schema version 1, as an older keyward left it: every later migration undone
     * (a new migration adds its own undo here). */
    long latest = db_count(&d, "SELECT max(version) FROM schema_migrations");
    KW_ASSERT(db_sql(&d,
                     "BEGIN; DROP TABLE forward_replay; DROP INDEX agents_by_name; "
                     "ALTER TABLE agents DROP COLUMN acp_url; ALTER TABLE relationships DROP "
                     "COLUMN caveat_name, DROP COLUMN "
                     "caveat_context, DROP COLUMN expires_at_us; ALTER TABLE changelog DROP "
                     "COLUMN caveat_name, DROP COLUMN caveat_context, DROP COLUMN "
                     "expires_at_us; DROP TABLE changelog_horizon; ALTER TABLE changelog DROP "
                     "COLUMN at_us; ALTER TABLE api_keys DROP COLUMN expires_at_us, DROP COLUMN "
                     "last_used_at_us, DROP COLUMN prev_hash, DROP COLUMN prev_until_us; "
                     "DROP TABLE audit_events; DROP TABLE audit_head; "
                     "DELETE FROM schema_migrations WHERE version >= 2; COMMIT",
                     NULL, 0));
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM information_schema.columns WHERE "
                              "table_name = 'changelog' AND column_name = 'at_us'"),
                 0);
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    KW_ASSERT_EQ(db_count(&d, "SELECT max(version) FROM schema_migrations"), latest);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM changelog WHERE abs(at_us - "
                              "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint) < "
                              "60000000"),
                 2);
    KW_ASSERT_EQ(horizon_of(&d), 0);
    size_t n = 99;
    kw_revision_t horizon = 99;
    KW_ASSERT_EQ(kw_store_prune_changelog(s, MINUTE_US, 0, &n, &horizon, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT_EQ(horizon, 0);
    kw_store_close(s);
    db_drop(&d);
}

typedef struct delayed {
    kw_store_t *s;
    int delay_ms;
    kw_revision_t rev;
    int rc;
} delayed_t;

static void *commit_later(void *p)
{
    delayed_t *dl = p;
    usleep((useconds_t)dl->delay_ms * 1000);
    kw_update_t up = {KW_OP_TOUCH, rel("doc", "late", "viewer", "user", "u", "")};
    dl->rc = commit_rels(dl->s, &up, 1, &dl->rev);
    return NULL;
}

KW_TEST(pg_wait_change_wakes_on_other_instance)
{
    if (skip("pg_wait_change_wakes_on_other_instance"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *writer = NULL, *follower = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &writer, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(d.url, &follower, NULL), KW_OK);
    kw_revision_t latest = 99;
    /* the first call (a fresh LISTEN) reports the current revision at once */
    KW_ASSERT_EQ(kw_store_wait_change(follower, 5000, &latest), KW_OK);
    KW_ASSERT_EQ(latest, 0);
    int64_t t0 = mono_ms();
    KW_ASSERT_EQ(kw_store_wait_change(follower, 300, &latest), KW_ETIMEOUT);
    KW_ASSERT(mono_ms() - t0 >= 250);
    delayed_t dl = {writer, 200, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, commit_later, &dl);
    t0 = mono_ms();
    int rc = kw_store_wait_change(follower, 5000, &latest);
    int64_t waited = mono_ms() - t0;
    pthread_join(t, NULL);
    KW_ASSERT_EQ(dl.rc, KW_OK);
    KW_ASSERT_EQ(rc, KW_OK);
    KW_ASSERT_EQ(latest, dl.rev);
    KW_ASSERT(waited < 2000);
    kw_store_close(writer);
    kw_store_close(follower);
    db_drop(&d);
}

static int cluster(const char *verb)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "\"%s\" %s", getenv("KEYWARD_PG_CLUSTER"), verb);
    return system(cmd) == 0;
}

KW_TEST(pg_outage_edb_then_recovery)
{
    if (skip("pg_outage_edb_then_recovery"))
        return;
    if (!getenv("KEYWARD_PG_CLUSTER")) {
        fprintf(stderr, "  skipped pg_outage_edb_then_recovery: KEYWARD_PG_CLUSTER is not set\n");
        return;
    }
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    kw_agent_t g;
    kw_revision_t rev, latest;
    kw_update_t up = {KW_OP_TOUCH, rel("doc", "x", "viewer", "user", "u", "")};
    KW_ASSERT_EQ(commit_rels(s, &up, 1, &rev), KW_OK);
    KW_ASSERT_EQ(kw_store_wait_change(s, 100, &latest), KW_OK);
    kw_store_tx_t *tx;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK); /* in flight across the outage */

    KW_ASSERT(cluster("down"));
    int64_t t0 = mono_ms();
    KW_ASSERT_EQ(kw_store_ping(s), KW_EDB);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR("a1"), a, &g), KW_EDB);
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_EDB);
    KW_ASSERT_EQ(commit_rels(s, &up, 1, &rev), KW_EDB);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &up, 1, NULL), KW_EDB);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_EDB);
    KW_ASSERT_EQ(kw_store_wait_change(s, 1000, &latest), KW_EDB);
    KW_ASSERT(mono_ms() - t0 < 10000);

    KW_ASSERT(cluster("up"));
    /* the pool recovers by itself: no reopen */
    KW_ASSERT_EQ(kw_store_ping(s), KW_OK);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR("a1"), a, &g), KW_ENOTFOUND);
    kw_revision_t rev2;
    KW_ASSERT_EQ(commit_rels(s, &up, 1, &rev2), KW_OK);
    KW_ASSERT_EQ(rev2, 2); /* the failed commits left no trace */
    KW_ASSERT_EQ(kw_store_wait_change(s, 1000, &latest), KW_OK); /* relistens, reports */
    KW_ASSERT_EQ(latest, 2);
    kw_arena_free(a);
    kw_store_close(s);
    db_drop(&d);
}

/* The SQLite store test's key transaction (a key row + 3 relationships) on PostgreSQL:
 * one thread, then 4 threads on one store (the pool), figures on stderr. */
typedef struct bench {
    kw_store_t *s;
    int id;
    int n;
    int rc;
} bench_t;

static void *bench_loop(void *p)
{
    bench_t *b = p;
    for (int i = 0; i < b->n && b->rc == KW_OK; i++) {
        char kid[48], name[24], hash[24];
        snprintf(kid, sizeof(kid), "%02d%06d-2222-4222-8222-222222222222", b->id, i);
        snprintf(name, sizeof(name), "k%d-%d", b->id, i);
        snprintf(hash, sizeof(hash), "h%d-%d", b->id, i);
        kw_apikey_t k = key(kid, "a1", name, "internal", i, hash);
        kw_update_t u[3] = {
            {KW_OP_TOUCH, rel("agent_api_key", kid, "parent_agent", "agent", "a1", "")},
            {KW_OP_TOUCH, rel("agent_api_key", kid, "account", "account", "acct", "")},
            {KW_OP_TOUCH, rel("agent_api_key", kid, "owner", "user", "u1", "")}};
        kw_store_tx_t *tx = NULL;
        b->rc = kw_store_tx_begin(b->s, &tx, NULL);
        if (b->rc != KW_OK)
            break;
        b->rc = kw_store_tx_key_insert(tx, &k);
        if (b->rc == KW_OK)
            b->rc = kw_store_tx_rel_write(tx, u, 3, NULL);
        if (b->rc == KW_OK)
            b->rc = kw_store_tx_commit(tx, NULL, NULL);
        else
            kw_store_tx_rollback(tx);
    }
    return NULL;
}

static double secs_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Savepoints (store.h, tag-kw-store-savepoint) on PostgreSQL, where a failed statement
 * aborts the whole transaction: rolled back to its savepoint, the transaction is usable
 * again (the next statements run, COMMIT commits, not "ROLLBACK"), the failed unit's
 * rows and recorded changes are gone, and the changelog of the revision holds exactly
 * the kept units' changes. Without a savepoint the failure still poisons the tx. */
KW_TEST(pg_savepoints_recover_a_failed_statement)
{
    if (skip("pg_savepoints_recover_a_failed_statement"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    /* A statement that fails on demand: an agent named "boom". */
    KW_ASSERT(db_sql(&d, "ALTER TABLE agents ADD CONSTRAINT kw_test_boom CHECK (name <> 'boom')",
                     NULL, 0));
    kw_agent_t a1 = agent("a1", "acct", "bot", 1), boom = agent("a2", "acct", "boom", 2);
    kw_agent_t a3 = agent("a3", "acct", "bot3", 3), dup = agent("a4", "acct", "bot", 4);
    kw_apikey_t k1 = key("k1", "a1", "ci", "internal", 1, "h1");
    kw_update_t u1 = {KW_OP_TOUCH, rel("agent", "a1", "owner", "user", "u1", "")};
    kw_update_t uk = {KW_OP_TOUCH, rel("agent_api_key", "k1", "parent_agent", "agent", "a1", "")};
    kw_update_t u3 = {KW_OP_TOUCH, rel("agent", "a3", "owner", "user", "u3", "")};
    kw_store_tx_t *tx;
    kw_store_savepoint_t sp1, sp2, sp3, sp4;
    const kw_update_t *ch;
    size_t n;
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &u1, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_release_savepoint(tx, &sp1, NULL), KW_OK);
    /* unit 2: a key and its relationship, then a statement that fails */
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp2, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &uk, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &boom), KW_EDB);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &u3, 1, NULL), KW_EDB); /* aborted tx */
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp2, NULL), KW_OK);
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 1);
    /* unit 3: runs after the recovery; a nested unit with a clean conflict is undone */
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp3, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a3), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &u3, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp4, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp3, NULL), KW_EINVAL); /* not innermost */
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &dup), KW_ECONFLICT);
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp4, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_release_savepoint(tx, &sp3, NULL), KW_OK);
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM agents WHERE id IN ('a1', 'a3')"), 2);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM agents WHERE id IN ('a2', 'a4')"), 0);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM api_keys"), 0);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM relationships"), 2);
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM changelog WHERE revision = %llu",
             (unsigned long long)rev);
    KW_ASSERT_EQ(db_count(&d, sql), 2);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM changelog WHERE resource_id = 'k1'"), 0);

    /* Without a savepoint the failed statement poisons the tx: nothing commits. */
    kw_revision_t before = 0, after = 0;
    KW_ASSERT_EQ(kw_store_revision(s, &before), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &boom), KW_EDB);
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp1, NULL), KW_EDB);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_EDB);
    KW_ASSERT_EQ(kw_store_revision(s, &after), KW_OK);
    KW_ASSERT_EQ(after, before);
    kw_store_close(s);
    db_drop(&d);
}

KW_TEST(pg_bench_key_tx)
{
    if (skip("pg_bench_key_tx"))
        return;
    testdb_t d;
    KW_ASSERT(db_new(&d));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s, NULL), KW_OK);
    kw_agent_t a1 = agent("a1", "acct", "bot", 1);
    kw_store_tx_t *tx;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &a1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    const char *env = getenv("KW_STORE_BENCH_N");
    int n = env ? atoi(env) : 300;
    if (n <= 0)
        n = 300;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bench_t one = {s, 0, n, KW_OK};
    bench_loop(&one);
    double sec = secs_since(&t0);
    KW_ASSERT_EQ(one.rc, KW_OK);
    fprintf(stderr, "  pg key tx (row + 3 relationships), 1 thread: %d in %.3f s = %.0f tx/s\n", n,
            sec, n / sec);
    bench_t four[4];
    pthread_t t[4];
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 4; i++) {
        four[i] = (bench_t){s, i + 1, n, KW_OK};
        pthread_create(&t[i], NULL, bench_loop, &four[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    sec = secs_since(&t0);
    for (int i = 0; i < 4; i++)
        KW_ASSERT_EQ(four[i].rc, KW_OK);
    fprintf(stderr, "  pg key tx, 4 threads: %d in %.3f s = %.0f tx/s\n", 4 * n, sec, 4 * n / sec);
    KW_ASSERT_EQ(db_count(&d, "SELECT count(*) FROM api_keys"), 5 * n);
    KW_ASSERT_EQ(db_count(&d, "SELECT max(revision) FROM changelog"), 5 * n + 1);
    kw_store_close(s);
    db_drop(&d);
}
