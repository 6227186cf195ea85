/*
 * tests/unit/sync/sweep_test.c - the expiry sweep (sync/sweep.c): expired relationships
 * leave the store and the graph in small transactions through the write path, nothing due
 * commits no revision, the sweeper thread does it by itself, and (with KEYWARD_PG_URL) a
 * sweep on one instance reaches the other's graph through the changelog.
 *
 * Expiry here is "now + hours" and the sweeps are told a later "now" (kw_sync_sweep_expired
 * takes the time), so nothing waits for a clock and the background sweepers (real time)
 * never touch these rows. The schema lets account#member expire when the engine knows
 * `use expiration`; before it does, the plain test schema (the engine then keeps no expiry,
 * and the store still does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kw_test.h"
#include "test_inst.h"

#define HOUR_US (3600LL * 1000000)

static const char g_expiring_schema[] = "use expiration\n"
                                        "definition user {}\n"
                                        "definition account {\n"
                                        "    relation member: user | user with expiration\n"
                                        "}\n";

/* The expiring schema when the engine compiles it, else the plain test schema. */
static const char *schema(void)
{
    kw_engine_t *e = NULL;
    if (kw_engine_new(&e) != KW_OK)
        return kw_ti_schema;
    int rc = kw_engine_set_schema(e, kw_str_c(g_expiring_schema), NULL, NULL);
    kw_engine_free(e);
    return rc == KW_OK ? g_expiring_schema : kw_ti_schema;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A batch of account:<prefix><i>#member@user:u, expiring at `expires_at` (0: never). */
typedef struct batch {
    kw_update_t *ups;
    char (*ids)[48];
    size_t n;
} batch_t;

static bool batch_make(batch_t *b, const char *prefix, size_t n, int64_t expires_at)
{
    b->n = n;
    b->ups = kw_calloc(n, sizeof(*b->ups));
    b->ids = kw_calloc(n, sizeof(*b->ids));
    if (!b->ups || !b->ids)
        return false;
    for (size_t i = 0; i < n; i++) {
        snprintf(b->ids[i], sizeof(b->ids[i]), "%s%ld_%zu", prefix, (long)getpid(), i);
        b->ups[i].op = KW_OP_TOUCH;
        b->ups[i].rel.resource = (kw_object_t){KW_STR("account"), kw_str_c(b->ids[i])};
        b->ups[i].rel.relation = KW_STR("member");
        b->ups[i].rel.subject = (kw_subject_t){KW_STR("user"), KW_STR("u"), KW_STR("")};
        b->ups[i].rel.expires_at = expires_at;
    }
    return true;
}

static void batch_free(batch_t *b)
{
    kw_free(b->ups);
    kw_free(b->ids);
}

static int batch_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    const batch_t *b = ud;
    return kw_store_tx_rel_write(tx, b->ups, b->n, diag);
}

static int count_cb(const kw_rel_t *rel, void *ud)
{
    (void)rel;
    (*(size_t *)ud)++;
    return 0;
}

/* account:<id>#member@user:u in the instance's graph (0 or 1; -1 on error). */
static long in_graph(kw_ti_t *in, const char *id)
{
    kw_filter_t f;
    memset(&f, 0, sizeof(f));
    f.resource_type = KW_STR("account");
    f.resource_id = kw_str_c(id);
    size_t n = 0;
    return kw_engine_read(in->engine, &f, count_cb, &n, NULL, NULL) == KW_OK ? (long)n : -1;
}

typedef struct find {
    const char *id;
    size_t n;
    int64_t expires_at;
} find_t;

static int find_cb(const kw_rel_t *rel, void *ud)
{
    find_t *f = ud;
    if (kw_str_eq_c(rel->resource.id, f->id)) {
        f->n++;
        f->expires_at = rel->expires_at;
    }
    return 0;
}

/* account:<id> in the instance's store (0 or 1; -1 on error); *expires_at its expiry. */
static long in_store(kw_ti_t *in, const char *id, int64_t *expires_at)
{
    find_t f = {id, 0, 0};
    kw_revision_t rev = 0;
    if (kw_store_load_relationships(in->store, find_cb, &f, &rev) != KW_OK)
        return -1;
    if (expires_at)
        *expires_at = f.expires_at;
    return (long)f.n;
}

KW_TEST(sweep_removes_expired_from_store_and_graph_without_empty_revisions)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite_with(&in, "sweep_basic", schema(), NULL));
    const int64_t now = now_us();
    batch_t soon, late, never;
    KW_ASSERT(batch_make(&soon, "soon", 2, now + HOUR_US));
    KW_ASSERT(batch_make(&late, "late", 1, now + 3 * HOUR_US));
    KW_ASSERT(batch_make(&never, "never", 1, 0));
    KW_ASSERT_EQ(kw_sync_write(in.sync, batch_tx, &soon, 0, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_write(in.sync, batch_tx, &late, 0, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_write(in.sync, batch_tx, &never, 0, NULL, NULL), KW_OK);
    int64_t exp = 0;
    KW_ASSERT_EQ(in_store(&in, soon.ids[0], &exp), 1);
    KW_ASSERT_EQ(exp, now + HOUR_US); /* the store keeps the expiry */
    KW_ASSERT_EQ(in_graph(&in, soon.ids[1]), 1);

    /* Nothing due yet: no transaction, no revision. */
    kw_revision_t r0 = kw_sync_applied(in.sync);
    size_t n = 99;
    KW_ASSERT_EQ(kw_sync_sweep_expired(in.sync, now + HOUR_US / 2, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), r0);

    /* Two hours on: the two "soon" go, from the store and the graph, in one revision. */
    KW_ASSERT_EQ(kw_sync_sweep_expired(in.sync, now + 2 * HOUR_US, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), r0 + 1);
    for (size_t i = 0; i < 2; i++) {
        KW_ASSERT_EQ(in_store(&in, soon.ids[i], NULL), 0);
        KW_ASSERT_EQ(in_graph(&in, soon.ids[i]), 0);
    }
    KW_ASSERT_EQ(in_store(&in, late.ids[0], NULL), 1);
    KW_ASSERT_EQ(in_graph(&in, late.ids[0]), 1);
    KW_ASSERT_EQ(in_graph(&in, never.ids[0]), 1);
    /* Again at the same time: nothing left, no revision. */
    KW_ASSERT_EQ(kw_sync_sweep_expired(in.sync, now + 2 * HOUR_US, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), r0 + 1);
    kw_sync_stats_t st;
    kw_sync_stats(in.sync, &st);
    KW_ASSERT_EQ(st.expired_swept, 2);
    KW_ASSERT_EQ(kw_sync_sweep_expired(in.sync, 0, &n, NULL), KW_EINVAL);
    batch_free(&soon);
    batch_free(&late);
    batch_free(&never);
    kw_ti_close(&in);
}

/* A backlog goes in transactions of KW_SYNC_SWEEP_BATCH, each its own revision. */
KW_TEST(sweep_deletes_a_backlog_in_small_transactions)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite_with(&in, "sweep_backlog", schema(), NULL));
    const int64_t now = now_us();
    const size_t total = 2 * KW_SYNC_SWEEP_BATCH + 17;
    batch_t b;
    KW_ASSERT(batch_make(&b, "bl", total, now + HOUR_US));
    KW_ASSERT_EQ(kw_sync_write(in.sync, batch_tx, &b, 0, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_engine_count(in.engine), total);
    kw_revision_t r0 = kw_sync_applied(in.sync);
    size_t n = 0;
    KW_ASSERT_EQ(kw_sync_sweep_expired(in.sync, now + 2 * HOUR_US, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, total);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), r0 + 3);
    KW_ASSERT_EQ(kw_engine_count(in.engine), 0);
    int64_t next = 0;
    KW_ASSERT_EQ(kw_store_next_expiry(in.store, &next), KW_ENOTFOUND);
    batch_free(&b);
    kw_ti_close(&in);
}

/* The sweeper thread runs by itself, at start and every sweep_interval_s, on real time. */
KW_TEST(sweeper_thread_removes_what_expired_by_itself)
{
    kw_sync_config_t cfg;
    kw_sync_config_default(&cfg);
    cfg.sweep_interval_s = 1;
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite_with(&in, "sweeper", schema(), &cfg));
    batch_t b;
    KW_ASSERT(batch_make(&b, "thr", 3, now_us() + 300000)); /* 0.3 s from now */
    KW_ASSERT_EQ(kw_sync_write(in.sync, batch_tx, &b, 0, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(in_graph(&in, b.ids[0]), 1);
    /* Gone within a few sweeper turns (1 s each); bounded wait. */
    int64_t next = 0;
    for (int i = 0; i < 500 && kw_store_next_expiry(in.store, &next) == KW_OK; i++)
        usleep(10000);
    KW_ASSERT_EQ(kw_store_next_expiry(in.store, &next), KW_ENOTFOUND);
    for (size_t i = 0; i < 3; i++) {
        KW_ASSERT_EQ(in_store(&in, b.ids[i], NULL), 0);
        KW_ASSERT_EQ(in_graph(&in, b.ids[i]), 0);
    }
    kw_sync_stats_t st;
    kw_sync_stats(in.sync, &st);
    KW_ASSERT_EQ(st.expired_swept, 3);
    batch_free(&b);
    kw_ti_close(&in); /* stops the sweeper (joined) */
}

/* ---- two instances over one PostgreSQL database ---- */

static const char *pg_url(void)
{
    const char *u = getenv("KEYWARD_PG_URL");
    return u && *u ? u : NULL;
}

/* What a writes (with its expiry) reaches b through the changelog; a's sweep removes it
 * from b's graph as well. */
KW_TEST(pg_sweep_on_one_instance_reaches_the_other)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    char url[1024];
    KW_ASSERT(kw_ti_pg_db("sweepsync", url, sizeof(url)));
    kw_ti_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    KW_ASSERT(kw_ti_open_with(&a, url, schema(), NULL));
    KW_ASSERT(kw_ti_open_with(&b, url, schema(), NULL));
    const int64_t now = now_us();
    batch_t exp, keep;
    KW_ASSERT(batch_make(&exp, "pgexp", 3, now + HOUR_US));
    KW_ASSERT(batch_make(&keep, "pgkeep", 1, 0));
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_sync_write(a.sync, batch_tx, &exp, 0, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_write(a.sync, batch_tx, &keep, 0, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_await(b.sync, rev, false), KW_OK);
    KW_ASSERT_EQ(in_graph(&b, exp.ids[2]), 1);
    int64_t at = 0;
    KW_ASSERT_EQ(in_store(&b, exp.ids[2], &at), 1);
    KW_ASSERT_EQ(at, now + HOUR_US);

    size_t n = 0;
    KW_ASSERT_EQ(kw_sync_sweep_expired(a.sync, now + 2 * HOUR_US, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 3);
    rev = kw_sync_applied(a.sync);
    KW_ASSERT_EQ(kw_sync_await(b.sync, rev, false), KW_OK);
    for (size_t i = 0; i < 3; i++) {
        KW_ASSERT_EQ(in_graph(&a, exp.ids[i]), 0);
        KW_ASSERT_EQ(in_graph(&b, exp.ids[i]), 0);
    }
    KW_ASSERT_EQ(in_graph(&b, keep.ids[0]), 1);
    /* b sweeping at the same time finds nothing: no transaction, no revision. */
    KW_ASSERT_EQ(kw_sync_sweep_expired(b.sync, now + 2 * HOUR_US, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    kw_revision_t cur = 0;
    KW_ASSERT_EQ(kw_store_revision(b.store, &cur), KW_OK);
    KW_ASSERT_EQ(cur, rev);
    batch_free(&exp);
    batch_free(&keep);
    kw_ti_close(&a);
    kw_ti_close(&b);
    kw_ti_pg_drop("sweepsync");
}
