/*
 * tests/unit/sync/caveat_test.c - a relationship's caveat, context and expiry through the
 * whole sync path into an engine's graph: the write path (store commit, then the engine),
 * a restart (the load from the store), and with KEYWARD_PG_URL the changelog into the
 * graph of a second instance over the same database.
 *
 * Needs an engine that compiles caveats and `use expiration`; before that lands, each test
 * says it is skipped (the store's own round trip is tests/unit/store/caveat_test.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kw_test.h"
#include "test_inst.h"

#define HOUR_US (3600LL * 1000000)

static const char g_schema[] =
    "use expiration\n"
    "caveat on_day(day string) {\n"
    "    day == \"mon\"\n"
    "}\n"
    "definition user {}\n"
    "definition account {\n"
    "    relation member: user | user with expiration | user with on_day\n"
    "}\n";

static bool engine_takes_caveats(void)
{
    kw_engine_t *e = NULL;
    if (kw_engine_new(&e) != KW_OK)
        return false;
    int rc = kw_engine_set_schema(e, kw_str_c(g_schema), NULL, NULL);
    kw_engine_free(e);
    return rc == KW_OK;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Three relationships account:<tag><pid>_{cav,exp,plain}#member@user:u. */
typedef struct trio {
    char ids[3][48];
    kw_update_t ups[3];
} trio_t;

static void trio_make(trio_t *t, const char *tag, int64_t expires_at)
{
    static const char *const kind[3] = {"cav", "exp", "plain"};
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < 3; i++) {
        snprintf(t->ids[i], sizeof(t->ids[i]), "%s%ld_%s", tag, (long)getpid(), kind[i]);
        t->ups[i].op = KW_OP_TOUCH;
        t->ups[i].rel.resource = (kw_object_t){KW_STR("account"), kw_str_c(t->ids[i])};
        t->ups[i].rel.relation = KW_STR("member");
        t->ups[i].rel.subject = (kw_subject_t){KW_STR("user"), KW_STR("u"), KW_STR("")};
    }
    t->ups[0].rel.caveat = KW_STR("on_day");
    t->ups[0].rel.caveat_ctx = KW_STR("{\"day\": \"mon\"}");
    t->ups[1].rel.expires_at = expires_at;
}

static int write_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    const kw_update_t *u = ud;
    return kw_store_tx_rel_write(tx, u, 1, diag);
}

typedef struct got {
    const char *id;
    int n;
    char caveat[32];
    char ctx[64];
    int64_t expires_at;
} got_t;

static int got_cb(const kw_rel_t *r, void *ud)
{
    got_t *g = ud;
    if (!kw_str_eq_c(r->resource.id, g->id))
        return 0;
    g->n++;
    snprintf(g->caveat, sizeof(g->caveat), "%.*s", (int)r->caveat.len,
             r->caveat.ptr ? r->caveat.ptr : "");
    snprintf(g->ctx, sizeof(g->ctx), "%.*s", (int)r->caveat_ctx.len,
             r->caveat_ctx.ptr ? r->caveat_ctx.ptr : "");
    g->expires_at = r->expires_at;
    return 0;
}

/* What the instance's GRAPH holds for account:<id> (kw_engine_read). */
static got_t graph_has(kw_ti_t *in, const char *id)
{
    got_t g;
    memset(&g, 0, sizeof(g));
    g.id = id;
    kw_filter_t f;
    memset(&f, 0, sizeof(f));
    f.resource_type = KW_STR("account");
    f.resource_id = kw_str_c(id);
    if (kw_engine_read(in->engine, &f, got_cb, &g, NULL, NULL) != KW_OK)
        g.n = -1;
    return g;
}

/* The trio, as written, in in's graph. */
static void expect_trio(int *kw_failed_, kw_ti_t *in, const trio_t *t, int64_t expires_at)
{
    got_t g = graph_has(in, t->ids[0]);
    KW_ASSERT_EQ(g.n, 1);
    KW_ASSERT_STR_EQ(g.caveat, "on_day");
    KW_ASSERT_STR_EQ(g.ctx, "{\"day\": \"mon\"}");
    KW_ASSERT_EQ(g.expires_at, 0);
    g = graph_has(in, t->ids[1]);
    KW_ASSERT_EQ(g.n, 1);
    KW_ASSERT_STR_EQ(g.caveat, "");
    KW_ASSERT_EQ(g.expires_at, expires_at);
    g = graph_has(in, t->ids[2]);
    KW_ASSERT_EQ(g.n, 1);
    KW_ASSERT_STR_EQ(g.caveat, "");
    KW_ASSERT_EQ(g.expires_at, 0);
}

/* One SQLite instance: written through the write path, in the graph at once; after a
 * restart (a new instance loading the file), the same; a TOUCH replaces the caveat. */
KW_TEST(caveat_and_expiry_survive_a_restart_into_the_graph)
{
    if (!engine_takes_caveats())
        KW_SKIP("the engine does not compile caveats and expiration yet");
    char path[96], url[128];
    snprintf(path, sizeof(path), "/tmp/kw_cavsync_%ld.db", (long)getpid());
    snprintf(url, sizeof(url), "sqlite:%s", path);
    unlink(path);
    kw_ti_t in;
    KW_ASSERT(kw_ti_open_with(&in, url, g_schema, NULL));
    const int64_t later = now_us() + HOUR_US;
    trio_t t;
    trio_make(&t, "rs", later);
    for (int i = 0; i < 3; i++)
        KW_ASSERT_EQ(kw_sync_write(in.sync, write_tx, &t.ups[i], 0, NULL, NULL), KW_OK);
    expect_trio(kw_failed_, &in, &t, later);
    if (*kw_failed_)
        return;
    kw_ti_close(&in);
    KW_ASSERT(kw_ti_open_with(&in, url, g_schema, NULL));
    expect_trio(kw_failed_, &in, &t, later);
    if (*kw_failed_)
        return;
    kw_update_t plain = t.ups[0];
    plain.rel.caveat = plain.rel.caveat_ctx = KW_STR("");
    KW_ASSERT_EQ(kw_sync_write(in.sync, write_tx, &plain, 0, NULL, NULL), KW_OK);
    got_t g = graph_has(&in, t.ids[0]);
    KW_ASSERT_EQ(g.n, 1);
    KW_ASSERT_STR_EQ(g.caveat, "");
    kw_ti_close(&in);
    char side[128];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(side, sizeof(side), "%s%s", path, suffix[i]);
        unlink(side);
    }
}

static const char *pg_url(void)
{
    const char *u = getenv("KEYWARD_PG_URL");
    return u && *u ? u : NULL;
}

/* Two instances over one database: what a writes reaches b's graph through the changelog
 * with its caveat, context and expiry; so does a TOUCH that replaces them; and b's own
 * restart loads the same from the store. */
KW_TEST(pg_caveat_and_expiry_reach_the_other_instances_graph)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    if (!engine_takes_caveats())
        KW_SKIP("the engine does not compile caveats and expiration yet");
    char url[1024];
    KW_ASSERT(kw_ti_pg_db("cavsync", url, sizeof(url)));
    kw_ti_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    KW_ASSERT(kw_ti_open_with(&a, url, g_schema, NULL));
    KW_ASSERT(kw_ti_open_with(&b, url, g_schema, NULL));
    const int64_t later = now_us() + HOUR_US;
    trio_t t;
    trio_make(&t, "pgc", later);
    kw_revision_t rev = 0;
    for (int i = 0; i < 3; i++)
        KW_ASSERT_EQ(kw_sync_write(a.sync, write_tx, &t.ups[i], 0, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_await(b.sync, rev, false), KW_OK);
    expect_trio(kw_failed_, &b, &t, later);
    if (*kw_failed_)
        return;
    /* A TOUCH on a replaces caveat and expiry; b follows. */
    kw_update_t swap = t.ups[1];
    swap.rel.expires_at = 0;
    swap.rel.caveat = KW_STR("on_day");
    swap.rel.caveat_ctx = KW_STR("{}");
    KW_ASSERT_EQ(kw_sync_write(a.sync, write_tx, &swap, 0, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_await(b.sync, rev, false), KW_OK);
    got_t g = graph_has(&b, t.ids[1]);
    KW_ASSERT_EQ(g.n, 1);
    KW_ASSERT_STR_EQ(g.caveat, "on_day");
    KW_ASSERT_STR_EQ(g.ctx, "{}");
    KW_ASSERT_EQ(g.expires_at, 0);
    /* b restarts: its load from the store gives the same graph. */
    kw_ti_close(&b);
    KW_ASSERT(kw_ti_open_with(&b, url, g_schema, NULL));
    g = graph_has(&b, t.ids[0]);
    KW_ASSERT_EQ(g.n, 1);
    KW_ASSERT_STR_EQ(g.caveat, "on_day");
    KW_ASSERT_STR_EQ(g.ctx, "{\"day\": \"mon\"}");
    g = graph_has(&b, t.ids[1]);
    KW_ASSERT_STR_EQ(g.ctx, "{}");
    KW_ASSERT_EQ(g.expires_at, 0);
    kw_ti_close(&a);
    kw_ti_close(&b);
    kw_ti_pg_drop("cavsync");
}
