/*
 * tests/unit/sync/follower_test.c - coherence (sync/follower.c, catchup.c, state.c): the
 * applied store revision, the freshness wait, and (with KEYWARD_PG_URL) two instances over one
 * PostgreSQL database: the follower applies the other's commits, and a local write catches up over
 * a revision it has not applied instead of applying its own changes blindly.
 *
 * The pg_* tests run only when KEYWARD_PG_URL names a database they may write to (ctest
 * unit_sync_pg gives them a throwaway cluster: tests/coherence/run-sync-pg.sh); relationship
 * ids carry the pid, so reruns on one database do not collide.
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "kw_test.h"
#include "test_inst.h"

typedef struct {
    kw_update_t u;
    char res[64], sub[64];
} one_rel_t;

/* account:<res>#member@user:<sub> */
static void rel_init(one_rel_t *r, kw_op_t op, const char *res, const char *sub)
{
    snprintf(r->res, sizeof(r->res), "%s", res);
    snprintf(r->sub, sizeof(r->sub), "%s", sub);
    memset(&r->u, 0, sizeof(r->u));
    r->u.op = op;
    r->u.rel.resource = (kw_object_t){KW_STR("account"), kw_str_c(r->res)};
    r->u.rel.relation = KW_STR("member");
    r->u.rel.subject.type = KW_STR("user");
    r->u.rel.subject.id = kw_str_c(r->sub);
}

static int rel_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    one_rel_t *r = ud;
    return kw_store_tx_rel_write(tx, &r->u, 1, diag);
}

static int count_cb(const kw_rel_t *rel, void *ud)
{
    (void)rel;
    (*(int *)ud)++;
    return 0;
}

/* How many account:<res>#member@user:<sub> the instance's graph holds (0 or 1). */
static int has_rel(kw_ti_t *in, const char *res, const char *sub)
{
    kw_filter_t f;
    memset(&f, 0, sizeof(f));
    f.resource_type = KW_STR("account");
    f.resource_id = kw_str_c(res);
    f.relation = KW_STR("member");
    f.has_subject = true;
    f.subject_type = KW_STR("user");
    f.subject_id = kw_str_c(sub);
    int n = 0;
    if (kw_engine_read(in->engine, &f, count_cb, &n, NULL, NULL) != KW_OK)
        return -1;
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

KW_TEST(sqlite_applied_revision_is_the_store_revision_of_the_last_commit)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite(&in, "follow_test"));
    KW_ASSERT(!in.sync->follows); /* one instance per file: no follower */
    KW_ASSERT(kw_sync_is_fresh(in.sync));
    kw_revision_t store_rev = 0, rev = 0;
    KW_ASSERT_EQ(kw_store_revision(in.store, &store_rev), KW_OK);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), store_rev);
    /* a schema swap moves the engine's counter, not the applied store revision */
    KW_ASSERT_EQ(kw_engine_set_schema(in.engine, kw_str_c(kw_ti_schema), NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), store_rev);
    one_rel_t r;
    rel_init(&r, KW_OP_TOUCH, "acme", "alice");
    KW_ASSERT_EQ(kw_sync_write(in.sync, rel_tx, &r, 0, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_revision(in.store, &store_rev), KW_OK);
    KW_ASSERT_EQ(rev, store_rev);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), rev);
    KW_ASSERT_EQ(has_rel(&in, "acme", "alice"), 1);
    kw_ti_close(&in);
}

typedef struct {
    kw_sync_t *sync;
    kw_revision_t min;
    int rc;
    double took;
} waiter_t;

static void *wait_main(void *arg)
{
    waiter_t *w = arg;
    double t0 = now_s();
    w->rc = kw_sync_await(w->sync, w->min, false);
    w->took = now_s() - t0;
    return NULL;
}

KW_TEST(await_refuses_uncommitted_revisions_and_waits_for_committed_ones)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite(&in, "follow_test"));
    kw_revision_t at = kw_sync_applied(in.sync);
    KW_ASSERT_EQ(kw_sync_await(in.sync, at, false), KW_OK);
    KW_ASSERT_EQ(kw_sync_await(in.sync, 0, true), KW_OK);
    /* beyond the store's current revision: no instance committed it, refused at once */
    in.sync->freshness_ms = 5000;
    double t0 = now_s();
    KW_ASSERT_EQ(kw_sync_await(in.sync, at + 1, false), KW_EINVAL);
    KW_ASSERT_EQ(kw_sync_await(in.sync, (kw_revision_t)INT64_MAX, false), KW_EINVAL);
    KW_ASSERT(now_s() - t0 < 1.0);
    /* committed in the store but not applied to the graph yet (what another instance's
     * commit is to a follower): waited for, within freshness_ms */
    one_rel_t r;
    rel_init(&r, KW_OP_TOUCH, "acme", "bob");
    kw_store_tx_t *tx = NULL;
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_store_tx_begin(in.store, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(rel_tx(tx, &r, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(rev, at + 1);
    in.sync->freshness_ms = 80;
    t0 = now_s();
    KW_ASSERT_EQ(kw_sync_await(in.sync, at + 1, false), KW_ETIMEOUT);
    double took = now_s() - t0;
    KW_ASSERT(took >= 0.07 && took < 10.0); /* it did wait, and it did end */
    /* a waiter is woken when the graph gets there */
    in.sync->freshness_ms = 5000;
    waiter_t w = {in.sync, at + 1, -1, 0};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, wait_main, &w), 0);
    usleep(30000);
    pthread_mutex_lock(&in.sync->write_mu);
    int arc = kw_sync_apply(in.engine, &r.u, 1, rev, NULL);
    kw__sync_advance(in.sync, rev);
    pthread_mutex_unlock(&in.sync->write_mu);
    pthread_join(th, NULL);
    KW_ASSERT_EQ(arc, KW_OK);
    KW_ASSERT_EQ(w.rc, KW_OK);
    KW_ASSERT(w.took < 2.0);
    KW_ASSERT_EQ(has_rel(&in, "acme", "bob"), 1);
    kw_ti_close(&in);
}

KW_TEST(not_fresh_answers_unavailable_even_for_reached_revisions)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite(&in, "follow_test"));
    one_rel_t r;
    rel_init(&r, KW_OP_TOUCH, "acme", "carol");
    kw_revision_t at = 0;
    KW_ASSERT_EQ(kw_sync_write(in.sync, rel_tx, &r, 0, &at, NULL), KW_OK);
    KW_ASSERT(at >= 1);
    in.sync->freshness_ms = 50;
    atomic_store(&in.sync->fresh, false);
    KW_ASSERT_EQ(kw_sync_await(in.sync, 0, false), KW_EDB);  /* at once */
    KW_ASSERT_EQ(kw_sync_await(in.sync, at, false), KW_EDB); /* after the wait */
    KW_ASSERT(!kw_sync_is_fresh(in.sync));
    atomic_store(&in.sync->fresh, true);
    KW_ASSERT_EQ(kw_sync_await(in.sync, 0, false), KW_OK);
    kw_ti_close(&in);
}

/* ---- two instances over one PostgreSQL database ---- */

static const char *pg_url(void)
{
    const char *u = getenv("KEYWARD_PG_URL");
    return u && *u ? u : NULL;
}

static int pg_skip(const char *name)
{
    if (pg_url())
        return 0;
    fprintf(stderr, "  skipped %s: KEYWARD_PG_URL is not set\n", name);
    return 1;
}

KW_TEST(pg_follower_applies_the_other_instances_commits)
{
    if (pg_skip("pg_follower_applies_the_other_instances_commits"))
        return;
    kw_ti_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    KW_ASSERT(kw_ti_open(&a, pg_url()));
    KW_ASSERT(kw_ti_open(&b, pg_url()));
    KW_ASSERT(a.sync->follows && b.sync->follows);
    char res[64];
    snprintf(res, sizeof(res), "fol%ld", (long)getpid());
    one_rel_t r;
    rel_init(&r, KW_OP_TOUCH, res, "carol");
    kw_revision_t rev = 0;
    /* b's follower answers its first wait at once (the catch-up after LISTEN): past that,
     * a wake-up can only come from a NOTIFY. */
    for (int i = 0; i < 500 && atomic_load(&b.sync->wakeups) == 0; i++)
        usleep(10000);
    uint64_t wakes = atomic_load(&b.sync->wakeups);
    KW_ASSERT(wakes > 0);
    KW_ASSERT_EQ(kw_sync_write(a.sync, rel_tx, &r, 0, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_applied(a.sync), rev);
    KW_ASSERT_EQ(kw_sync_await(b.sync, rev, false), KW_OK);
    KW_ASSERT_EQ(has_rel(&b, res, "carol"), 1);
    /* a's commit reached b as a notification (not only through the 1 s poll); bounded
     * wait, no timing threshold: the poll would have applied it too */
    for (int i = 0; i < 500 && atomic_load(&b.sync->wakeups) == wakes; i++)
        usleep(10000);
    KW_ASSERT(atomic_load(&b.sync->wakeups) > wakes);
    rel_init(&r, KW_OP_DELETE, res, "carol");
    KW_ASSERT_EQ(kw_sync_write(a.sync, rel_tx, &r, 0, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(kw_sync_await(b.sync, rev, false), KW_OK);
    KW_ASSERT_EQ(has_rel(&b, res, "carol"), 0);
    /* fullyConsistent: one catch-up round reaches the store's current revision */
    kw_revision_t cur = 0;
    KW_ASSERT_EQ(kw_store_revision(b.store, &cur), KW_OK);
    KW_ASSERT_EQ(kw_sync_await(b.sync, 0, true), KW_OK);
    KW_ASSERT(kw_sync_applied(b.sync) >= cur);
    kw_ti_close(&a);
    kw_ti_close(&b);
}

KW_TEST(pg_local_write_catches_up_over_a_revision_it_has_not_applied)
{
    if (pg_skip("pg_local_write_catches_up_over_a_revision_it_has_not_applied"))
        return;
    kw_ti_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    KW_ASSERT(kw_ti_open(&a, pg_url()));
    KW_ASSERT(kw_ti_open(&b, pg_url()));
    /* B stops following: A's next commit is a revision B has not applied when B writes */
    kw_sync_stop(b.sync);
    char res[64];
    snprintf(res, sizeof(res), "gap%ld", (long)getpid());
    one_rel_t ra, rb;
    rel_init(&ra, KW_OP_TOUCH, res, "from-a");
    rel_init(&rb, KW_OP_TOUCH, res, "from-b");
    kw_revision_t rev_a = 0, rev_b = 0;
    KW_ASSERT_EQ(kw_sync_write(a.sync, rel_tx, &ra, 0, &rev_a, NULL), KW_OK);
    KW_ASSERT(kw_sync_applied(b.sync) < rev_a);
    KW_ASSERT_EQ(kw_sync_write(b.sync, rel_tx, &rb, 0, &rev_b, NULL), KW_OK);
    KW_ASSERT(rev_b > rev_a);
    /* B's graph has A's revision as well as its own, and claims exactly what it has */
    KW_ASSERT_EQ(has_rel(&b, res, "from-a"), 1);
    KW_ASSERT_EQ(has_rel(&b, res, "from-b"), 1);
    KW_ASSERT(kw_sync_applied(b.sync) >= rev_b);
    kw_ti_close(&a);
    kw_ti_close(&b);
}

static int no_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *rel, void *ud)
{
    (void)rev;
    (void)op;
    (void)rel;
    (void)ud;
    return 1;
}

/* The freshness lease: a follower that has not proved the graph current for
 * KW__SYNC_LEASE_MS leaves the instance not fresh (a paused process must not answer from
 * its old graph), and its next catch-up makes it fresh again, waking waiters. */
KW_TEST(pg_freshness_lease_expires_and_is_renewed)
{
    if (pg_skip("pg_freshness_lease_expires_and_is_renewed"))
        return;
    kw_ti_t a;
    memset(&a, 0, sizeof(a));
    KW_ASSERT(kw_ti_open(&a, pg_url()));
    KW_ASSERT(kw_sync_is_fresh(a.sync));
    /* As if the process had been stopped for longer than the lease. */
    atomic_store(&a.sync->synced_ms, kw__sync_clock_ms() - KW__SYNC_LEASE_MS - 1000);
    KW_ASSERT(!kw_sync_is_fresh(a.sync));
    KW_ASSERT_EQ(kw_sync_await(a.sync, 0, false), KW_EDB);
    KW_ASSERT_EQ(kw_sync_await(a.sync, 0, true), KW_EDB); /* no catch-up of its own */
    /* The follower renews it within its poll interval; a waiter is woken for it. */
    a.sync->freshness_ms = 10000; /* a bound, not a timing claim: the poll is 1 s */
    KW_ASSERT_EQ(kw_sync_await(a.sync, 1, false), KW_OK);
    KW_ASSERT(kw_sync_is_fresh(a.sync));
    kw_ti_close(&a);
}

/* An instance whose graph was loaded at R0 starts after the changelog was pruned past R0:
 * instead of silently skipping the pruned changes it reloads the whole graph (one swap),
 * and only then follows. */
KW_TEST(pg_start_behind_the_pruned_horizon_reloads_everything)
{
    if (pg_skip("pg_start_behind_the_pruned_horizon_reloads_everything"))
        return;
    kw_ti_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    KW_ASSERT(kw_ti_open(&a, pg_url()));
    char res[64];
    snprintf(res, sizeof(res), "hzn%ld", (long)getpid());
    one_rel_t r;
    rel_init(&r, KW_OP_TOUCH, res, "revoked");
    KW_ASSERT_EQ(kw_sync_write(a.sync, rel_tx, &r, 0, NULL, NULL), KW_OK);

    /* B as serve makes it, up to the graph load (it holds "revoked"). */
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_store_open(pg_url(), &b.store, NULL), KW_OK);
    KW_ASSERT_EQ(kw_engine_new(&b.engine), KW_OK);
    KW_ASSERT(kw_ti_sync(&b));
    KW_ASSERT_EQ(kw_sync_load(b.sync, kw_str_c(kw_ti_schema), &d), KW_OK);
    kw_revision_t r0 = kw_sync_applied(b.sync);
    KW_ASSERT_EQ(has_rel(&b, res, "revoked"), 1);

    /* Meanwhile A revokes and grants, and the changelog is pruned past R0. */
    rel_init(&r, KW_OP_DELETE, res, "revoked");
    KW_ASSERT_EQ(kw_sync_write(a.sync, rel_tx, &r, 0, NULL, NULL), KW_OK);
    rel_init(&r, KW_OP_TOUCH, res, "granted");
    kw_revision_t last = 0;
    KW_ASSERT_EQ(kw_sync_write(a.sync, rel_tx, &r, 0, &last, NULL), KW_OK);
    usleep(2000);
    size_t n = 0;
    kw_revision_t horizon = 0;
    KW_ASSERT_EQ(kw_store_prune_changelog(a.store, 1000, 0, &n, &horizon, NULL), KW_OK);
    KW_ASSERT(horizon >= last && last > r0);
    kw_revision_t upto = 0;
    KW_ASSERT_EQ(kw_store_changes_since(b.store, r0, 0, no_change, NULL, &upto, NULL), KW_EPRUNED);

    KW_ASSERT_EQ(kw_sync_start(b.sync, &d), KW_OK);
    KW_ASSERT_EQ(has_rel(&b, res, "revoked"), 0);
    KW_ASSERT_EQ(has_rel(&b, res, "granted"), 1);
    KW_ASSERT(kw_sync_applied(b.sync) >= last);
    KW_ASSERT_EQ(atomic_load(&b.sync->resyncs), 1);
    KW_ASSERT(kw_sync_is_fresh(b.sync));
    KW_ASSERT_EQ(kw_engine_count(b.engine), kw_engine_count(a.engine));
    kw_ti_close(&a);
    kw_ti_close(&b);
}
