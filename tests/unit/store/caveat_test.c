/*
 * tests/unit/store/caveat_test.c - a relationship's caveat name, caveat context and expiry
 * in both stores (tag-kw-store-caveats): written, replaced by a TOUCH, loaded again after a
 * reopen (a restart), a CREATE over an expired row, refusals that change nothing, the
 * expiry sweep (kw_store_next_expiry, kw_store_tx_rel_delete_expired), and on PostgreSQL
 * the changelog carrying all of it to another instance.
 *
 * The store_* tests run on a temporary SQLite file; the pg_* tests need KEYWARD_PG_URL
 * (tests/pg/run-unit.sh gives them a throwaway cluster) and skip without it, each in a
 * database of its own.
 */
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kw_test.h"
#include "store/store.h"

#define HOUR_US (3600LL * 1000000)

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* doc:<id>#viewer@user:u with the given caveat (NULL: none), context (NULL: none), expiry. */
static kw_update_t up(kw_op_t op, const char *id, const char *caveat, const char *ctx,
                      int64_t expires_at)
{
    kw_update_t u;
    memset(&u, 0, sizeof(u));
    u.op = op;
    u.rel.resource = (kw_object_t){KW_STR("doc"), kw_str_c(id)};
    u.rel.relation = KW_STR("viewer");
    u.rel.subject = (kw_subject_t){KW_STR("user"), KW_STR("u"), KW_STR("")};
    u.rel.caveat = caveat ? kw_str_c(caveat) : KW_STR("");
    u.rel.caveat_ctx = ctx ? kw_str_c(ctx) : KW_STR("");
    u.rel.expires_at = expires_at;
    return u;
}

/* Is r exactly doc:<id>#viewer@user:u with this caveat, context and expiry? */
static bool rel_is(const kw_rel_t *r, const char *id, const char *caveat, const char *ctx,
                   int64_t expires_at)
{
    return kw_str_eq_c(r->resource.type, "doc") && kw_str_eq_c(r->resource.id, id) &&
           kw_str_eq_c(r->relation, "viewer") && kw_str_eq_c(r->subject.type, "user") &&
           kw_str_eq_c(r->subject.id, "u") && r->subject.relation.len == 0 &&
           kw_str_eq_c(r->caveat, caveat ? caveat : "") &&
           kw_str_eq_c(r->caveat_ctx, ctx ? ctx : "") && r->expires_at == expires_at;
}

/* ---- what the store holds: a load (kw_store_load_relationships) into copies ---- */

typedef struct loaded {
    kw_arena_t *a;
    kw_rel_t rels[32];
    size_t n;
} loaded_t;

static int copy_rel(kw_arena_t *a, const kw_rel_t *src, kw_rel_t *out)
{
    const kw_str_t in[8] = {src->resource.type, src->resource.id, src->relation,
                            src->subject.type,  src->subject.id,  src->subject.relation,
                            src->caveat,        src->caveat_ctx};
    kw_str_t c[8];
    for (int i = 0; i < 8; i++)
        if (kw_arena_str_copy(a, in[i], &c[i]) != KW_OK)
            return KW_ENOMEM;
    *out = (kw_rel_t){{c[0], c[1]}, c[2], {c[3], c[4], c[5]}, c[6], c[7], src->expires_at};
    return KW_OK;
}

static int collect(const kw_rel_t *r, void *ud)
{
    loaded_t *l = ud;
    if (l->n == KW_ARRAY_LEN(l->rels))
        return KW_ELIMIT;
    return copy_rel(l->a, r, &l->rels[l->n++]);
}

/* Loads everything from s into l (reset first). */
static int load(kw_store_t *s, loaded_t *l)
{
    kw_arena_reset(l->a);
    l->n = 0;
    kw_revision_t rev = 0;
    return kw_store_load_relationships(s, collect, l, &rev);
}

/* The loaded doc:<id>#viewer@user:u, or NULL. */
static const kw_rel_t *find(const loaded_t *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (kw_str_eq_c(l->rels[i].resource.id, id))
            return &l->rels[i];
    return NULL;
}

static int commit_ups(kw_store_t *s, const kw_update_t *ups, size_t n)
{
    kw_store_tx_t *tx = NULL;
    int rc = kw_store_tx_begin(s, &tx, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw_store_tx_rel_write(tx, ups, n, NULL);
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    return kw_store_tx_commit(tx, NULL, NULL);
}

/* ---- the round trip, on either backend ---- */

/* Write, reopen and load; TOUCH replaces; CREATE over a live row conflicts and over an
 * expired one replaces it; DELETE changes carry the key only; bad input changes nothing. */
static void round_trip(int *kw_failed_, const char *url)
{
    const int64_t later = now_us() + HOUR_US;
    kw_store_t *s = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_store_open(url, &s, &d), KW_OK);
    loaded_t l;
    memset(&l, 0, sizeof(l));
    l.a = kw_arena_new(0);
    KW_ASSERT(l.a != NULL);

    const kw_update_t first[] = {
        up(KW_OP_TOUCH, "a", "ip_allowed", "{\"cidr\": \"10.0.0.0/8\", \"n\": [1, 2.5]}", 0),
        up(KW_OP_TOUCH, "b", NULL, NULL, later),
        up(KW_OP_TOUCH, "c", NULL, NULL, 0),
        up(KW_OP_CREATE, "d", "is_weekday", NULL, later + 1),
    };
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, first, 4, NULL), KW_OK);
    /* The change list (what the engine and the changelog get) carries all of it. */
    const kw_update_t *ch = NULL;
    size_t n_ch = 0;
    kw_store_tx_changes(tx, &ch, &n_ch);
    KW_ASSERT_EQ(n_ch, 4);
    KW_ASSERT(ch[0].op == KW_OP_TOUCH && rel_is(&ch[0].rel, "a", "ip_allowed",
                                                "{\"cidr\": \"10.0.0.0/8\", \"n\": [1, 2.5]}", 0));
    KW_ASSERT(rel_is(&ch[1].rel, "b", NULL, NULL, later));
    KW_ASSERT(rel_is(&ch[2].rel, "c", NULL, NULL, 0));
    KW_ASSERT(ch[3].op == KW_OP_TOUCH && rel_is(&ch[3].rel, "d", "is_weekday", NULL, later + 1));
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);

    /* A restart: everything comes back from the database. */
    kw_store_close(s);
    KW_ASSERT_EQ(kw_store_open(url, &s, &d), KW_OK);
    KW_ASSERT_EQ(load(s, &l), KW_OK);
    KW_ASSERT_EQ(l.n, 4);
    KW_ASSERT(find(&l, "a") && rel_is(find(&l, "a"), "a", "ip_allowed",
                                      "{\"cidr\": \"10.0.0.0/8\", \"n\": [1, 2.5]}", 0));
    KW_ASSERT(find(&l, "b") && rel_is(find(&l, "b"), "b", NULL, NULL, later));
    KW_ASSERT(find(&l, "c") && rel_is(find(&l, "c"), "c", NULL, NULL, 0));
    KW_ASSERT(find(&l, "d") && rel_is(find(&l, "d"), "d", "is_weekday", NULL, later + 1));

    /* TOUCH replaces caveat, context and expiry (also back to none); a DELETE's caveat
     * is ignored and its change names the key only; a CREATE over a live row conflicts. */
    const kw_update_t second[] = {
        up(KW_OP_TOUCH, "a", NULL, NULL, 0),
        up(KW_OP_TOUCH, "b", "is_weekday", "{\"day\": \"mon\"}", 0),
        up(KW_OP_DELETE, "c", "ignored", "{}", later),
    };
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, second, 3, NULL), KW_OK);
    const kw_update_t again_d = up(KW_OP_CREATE, "d", NULL, NULL, 0);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &again_d, 1, &d), KW_ECONFLICT);
    KW_ASSERT(strstr(d.msg, "already exists") != NULL);
    kw_store_tx_changes(tx, &ch, &n_ch);
    KW_ASSERT_EQ(n_ch, 3);
    KW_ASSERT(rel_is(&ch[0].rel, "a", NULL, NULL, 0));
    KW_ASSERT(rel_is(&ch[1].rel, "b", "is_weekday", "{\"day\": \"mon\"}", 0));
    KW_ASSERT(ch[2].op == KW_OP_DELETE && rel_is(&ch[2].rel, "c", NULL, NULL, 0));
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(load(s, &l), KW_OK);
    KW_ASSERT_EQ(l.n, 3);
    KW_ASSERT(rel_is(find(&l, "a"), "a", NULL, NULL, 0));
    KW_ASSERT(rel_is(find(&l, "b"), "b", "is_weekday", "{\"day\": \"mon\"}", 0));
    KW_ASSERT(find(&l, "c") == NULL);
    KW_ASSERT(rel_is(find(&l, "d"), "d", "is_weekday", NULL, later + 1));

    /* An expired row is gone for a CREATE, as for every query: replaced, not a conflict. */
    const kw_update_t expired = up(KW_OP_TOUCH, "e", "ip_allowed", "{}", 1000);
    KW_ASSERT_EQ(commit_ups(s, &expired, 1), KW_OK);
    const kw_update_t recreate = up(KW_OP_CREATE, "e", NULL, NULL, later);
    KW_ASSERT_EQ(commit_ups(s, &recreate, 1), KW_OK);
    KW_ASSERT_EQ(load(s, &l), KW_OK);
    KW_ASSERT(rel_is(find(&l, "e"), "e", NULL, NULL, later));

    /* Refused, changing nothing, and the transaction stays usable. */
    kw_update_t bad[2] = {up(KW_OP_TOUCH, "f", NULL, "{\"x\": 1}", 0),
                          up(KW_OP_TOUCH, "f", NULL, NULL, -5)};
    const kw_update_t good = up(KW_OP_TOUCH, "g", "c", NULL, 0);
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &bad[0], 1, &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "context but no caveat") != NULL);
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &bad[1], 1, &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "expiry") != NULL);
    kw_store_tx_changes(tx, &ch, &n_ch);
    KW_ASSERT_EQ(n_ch, 0);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &good, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(load(s, &l), KW_OK);
    KW_ASSERT(find(&l, "f") == NULL);
    KW_ASSERT(rel_is(find(&l, "g"), "g", "c", NULL, 0));

    kw_arena_free(l.a);
    kw_store_close(s);
}

/* ---- the sweep, on either backend ---- */

static void sweep(int *kw_failed_, const char *url)
{
    const int64_t now = now_us(), later = now + HOUR_US;
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(url, &s, NULL), KW_OK);
    loaded_t l;
    memset(&l, 0, sizeof(l));
    l.a = kw_arena_new(0);
    KW_ASSERT(l.a != NULL);
    int64_t next = 0;
    KW_ASSERT_EQ(kw_store_next_expiry(s, &next), KW_ENOTFOUND);

    const kw_update_t ups[] = {
        up(KW_OP_TOUCH, "old2", NULL, NULL, 3000),
        up(KW_OP_TOUCH, "old1", "c", "{\"a\": 1}", 2000),
        up(KW_OP_TOUCH, "live", NULL, NULL, later),
        up(KW_OP_TOUCH, "never", NULL, NULL, 0),
    };
    KW_ASSERT_EQ(commit_ups(s, ups, 4), KW_OK);
    KW_ASSERT_EQ(kw_store_next_expiry(s, &next), KW_OK);
    KW_ASSERT_EQ(next, 2000);
    kw_revision_t rev0 = 0, rev = 0;
    KW_ASSERT_EQ(kw_store_revision(s, &rev0), KW_OK);

    /* Earliest first, at most `limit`, each a DELETE change like any delete. */
    kw_store_tx_t *tx = NULL;
    size_t n = 99;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_delete_expired(tx, now, 1, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    const kw_update_t *ch = NULL;
    size_t n_ch = 0;
    kw_store_tx_changes(tx, &ch, &n_ch);
    KW_ASSERT_EQ(n_ch, 1);
    KW_ASSERT(ch[0].op == KW_OP_DELETE && rel_is(&ch[0].rel, "old1", NULL, NULL, 0));
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(rev, rev0 + 1);
    KW_ASSERT_EQ(kw_store_next_expiry(s, &next), KW_OK);
    KW_ASSERT_EQ(next, 3000);

    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_delete_expired(tx, now, KW_STORE_SWEEP_MAX_ROWS, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1); /* old2; "live" is not due, "never" never is */
    KW_ASSERT_EQ(kw_store_tx_rel_delete_expired(tx, now, 10, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    kw_store_tx_changes(tx, &ch, &n_ch);
    KW_ASSERT_EQ(n_ch, 1);
    KW_ASSERT(rel_is(&ch[0].rel, "old2", NULL, NULL, 0));
    /* Out of range: refused, nothing done, the transaction still usable. */
    KW_ASSERT_EQ(kw_store_tx_rel_delete_expired(tx, now, 0, &n, NULL), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_tx_rel_delete_expired(tx, now, KW_STORE_SWEEP_MAX_ROWS + 1, &n, NULL),
                 KW_EINVAL);
    KW_ASSERT_EQ(kw_store_tx_rel_delete_expired(tx, 0, 10, &n, NULL), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);

    KW_ASSERT_EQ(kw_store_next_expiry(s, &next), KW_OK);
    KW_ASSERT_EQ(next, later);
    KW_ASSERT_EQ(load(s, &l), KW_OK);
    KW_ASSERT_EQ(l.n, 2);
    KW_ASSERT(rel_is(find(&l, "live"), "live", NULL, NULL, later));
    KW_ASSERT(rel_is(find(&l, "never"), "never", NULL, NULL, 0));
    kw_arena_free(l.a);
    kw_store_close(s);
}

/* ---- SQLite ---- */

typedef struct tmpfile {
    char path[128];
    char url[160];
} tmpfile_t;

static void tmp_make(tmpfile_t *t, const char *tag)
{
    snprintf(t->path, sizeof(t->path), "/tmp/kw_%s_%ld.db", tag, (long)getpid());
    snprintf(t->url, sizeof(t->url), "sqlite:%s", t->path);
}

static void tmp_remove(const tmpfile_t *t)
{
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < KW_ARRAY_LEN(suffix); i++) {
        char p[160];
        snprintf(p, sizeof(p), "%s%s", t->path, suffix[i]);
        unlink(p);
    }
}

KW_TEST(store_caveats_and_expiry_round_trip)
{
    tmpfile_t t;
    tmp_make(&t, "caveat_rt");
    tmp_remove(&t);
    round_trip(kw_failed_, t.url);
    tmp_remove(&t);
}

KW_TEST(store_sweep_deletes_expired_rows_earliest_first)
{
    tmpfile_t t;
    tmp_make(&t, "caveat_sweep");
    tmp_remove(&t);
    sweep(kw_failed_, t.url);
    tmp_remove(&t);
}

static int raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

/* A database of schema version 1 (before caveats) is migrated at open: its relationships
 * load as before, without caveat or expiry, and new ones take them. */
KW_TEST(store_caveat_migration_keeps_existing_relationships)
{
    tmpfile_t t;
    tmp_make(&t, "caveat_mig");
    tmp_remove(&t);
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    const kw_update_t old = up(KW_OP_TOUCH, "old", NULL, NULL, 0);
    KW_ASSERT_EQ(commit_ups(s, &old, 1), KW_OK);
    kw_store_close(s);
    KW_ASSERT_EQ(raw_exec(t.path, "DROP INDEX relationships_by_expiry;"
                                  "DROP INDEX relationships_by_caveat;"
                                  "ALTER TABLE relationships DROP COLUMN caveat_name;"
                                  "ALTER TABLE relationships DROP COLUMN caveat_context;"
                                  "ALTER TABLE relationships DROP COLUMN expires_at_us;"
                                  /* and what later migrations made (the changelog) */
                                  "DROP TABLE changelog;"
                                  "DELETE FROM meta WHERE key = 'changelog_horizon';"
                                  "DELETE FROM schema_migrations WHERE version >= 4;"),
                 SQLITE_OK);
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    loaded_t l;
    memset(&l, 0, sizeof(l));
    l.a = kw_arena_new(0);
    KW_ASSERT(l.a != NULL);
    KW_ASSERT_EQ(load(s, &l), KW_OK);
    KW_ASSERT_EQ(l.n, 1);
    KW_ASSERT(rel_is(find(&l, "old"), "old", NULL, NULL, 0));
    const kw_update_t fresh = up(KW_OP_TOUCH, "new", "c", "{}", 5000);
    KW_ASSERT_EQ(commit_ups(s, &fresh, 1), KW_OK);
    KW_ASSERT_EQ(load(s, &l), KW_OK);
    KW_ASSERT(rel_is(find(&l, "new"), "new", "c", "{}", 5000));
    kw_arena_free(l.a);
    kw_store_close(s);
    tmp_remove(&t);
}

/* ---- PostgreSQL ---- */

static const char *pg_url(void)
{
    const char *u = getenv("KEYWARD_PG_URL");
    return u && *u ? u : NULL;
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static bool admin_exec(const char *sql)
{
    PGconn *c = PQconnectdb(pg_url());
    PQsetNoticeProcessor(c, quiet, NULL);
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "  %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

typedef struct pgdb {
    char name[64];
    char url[1024];
} pgdb_t;

/* A fresh database on KEYWARD_PG_URL's server, named by tag and pid. */
static bool pgdb_new(pgdb_t *d, const char *tag)
{
    snprintf(d->name, sizeof(d->name), "kw_cav_%s_%ld", tag, (long)getpid());
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", d->name);
    if (!admin_exec(sql))
        return false;
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", d->name);
    if (!admin_exec(sql))
        return false;
    const char *u = pg_url();
    const char *scheme = strstr(u, "://");
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    const char *query = strchr(u, '?');
    size_t host_end = slash ? (size_t)(slash - u) : query ? (size_t)(query - u) : strlen(u);
    snprintf(d->url, sizeof(d->url), "%.*s/%s%s", (int)host_end, u, d->name, query ? query : "");
    return true;
}

static void pgdb_drop(const pgdb_t *d)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", d->name);
    (void)admin_exec(sql);
}

KW_TEST(pg_caveats_and_expiry_round_trip)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    pgdb_t d;
    KW_ASSERT(pgdb_new(&d, "rt"));
    round_trip(kw_failed_, d.url);
    pgdb_drop(&d);
}

KW_TEST(pg_sweep_deletes_expired_rows_earliest_first)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    pgdb_t d;
    KW_ASSERT(pgdb_new(&d, "sweep"));
    sweep(kw_failed_, d.url);
    pgdb_drop(&d);
}

/* kw_store_changes_since on a second store (another instance) into copies. */
typedef struct seen {
    loaded_t l;
    kw_op_t ops[32];
    kw_revision_t revs[32];
} seen_t;

static int on_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *rel, void *ud)
{
    seen_t *s = ud;
    if (s->l.n == KW_ARRAY_LEN(s->l.rels))
        return KW_ELIMIT;
    s->ops[s->l.n] = op;
    s->revs[s->l.n] = rev;
    return collect(rel, &s->l);
}

/* The changelog carries a TOUCH's caveat, context and expiry, and the sweep's deletes, to
 * another instance over the same database. */
KW_TEST(pg_changelog_carries_caveats_expiry_and_sweeps)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    pgdb_t d;
    KW_ASSERT(pgdb_new(&d, "log"));
    kw_store_t *s1 = NULL, *s2 = NULL;
    KW_ASSERT_EQ(kw_store_open(d.url, &s1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_open(d.url, &s2, NULL), KW_OK);
    const int64_t later = now_us() + HOUR_US;
    const kw_update_t ups[] = {
        up(KW_OP_TOUCH, "a", "ip_allowed", "{\"cidr\": \"10.0.0.0/8\"}", later),
        up(KW_OP_TOUCH, "b", NULL, NULL, 2000),
        up(KW_OP_TOUCH, "c", NULL, NULL, 0),
    };
    KW_ASSERT_EQ(commit_ups(s1, ups, 3), KW_OK);
    const kw_update_t replace = up(KW_OP_TOUCH, "c", "is_weekday", NULL, later + 7);
    KW_ASSERT_EQ(commit_ups(s1, &replace, 1), KW_OK);
    kw_store_tx_t *tx = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_store_tx_begin(s1, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_delete_expired(tx, now_us(), 100, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);

    seen_t seen;
    memset(&seen, 0, sizeof(seen));
    seen.l.a = kw_arena_new(0);
    KW_ASSERT(seen.l.a != NULL);
    kw_revision_t upto = 0;
    KW_ASSERT_EQ(kw_store_changes_since(s2, 0, 0, on_change, &seen, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 3);
    KW_ASSERT_EQ(seen.l.n, 5);
    const kw_rel_t *r = seen.l.rels;
    KW_ASSERT(seen.ops[0] == KW_OP_TOUCH && seen.revs[0] == 1 &&
              rel_is(&r[0], "a", "ip_allowed", "{\"cidr\": \"10.0.0.0/8\"}", later));
    KW_ASSERT(seen.ops[1] == KW_OP_TOUCH && rel_is(&r[1], "b", NULL, NULL, 2000));
    KW_ASSERT(seen.ops[2] == KW_OP_TOUCH && rel_is(&r[2], "c", NULL, NULL, 0));
    KW_ASSERT(seen.ops[3] == KW_OP_TOUCH && seen.revs[3] == 2 &&
              rel_is(&r[3], "c", "is_weekday", NULL, later + 7));
    KW_ASSERT(seen.ops[4] == KW_OP_DELETE && seen.revs[4] == 3 &&
              rel_is(&r[4], "b", NULL, NULL, 0));
    /* And a load on the second instance (its restart) sees the same rows. */
    KW_ASSERT_EQ(load(s2, &seen.l), KW_OK);
    KW_ASSERT_EQ(seen.l.n, 2);
    KW_ASSERT(rel_is(find(&seen.l, "a"), "a", "ip_allowed", "{\"cidr\": \"10.0.0.0/8\"}", later));
    KW_ASSERT(rel_is(find(&seen.l, "c"), "c", "is_weekday", NULL, later + 7));
    kw_arena_free(seen.l.a);
    kw_store_close(s2);
    kw_store_close(s1);
    pgdb_drop(&d);
}
