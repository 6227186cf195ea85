/*
 * tests/unit/sync/commit_test.c - group commit (sync/commit.c, tag-kw-api-group-commit).
 *
 * The batches are made deterministic by holding the sync module's write mutex from the test:
 * the first writer becomes the leader and blocks on it, the others queue behind it;
 * once every writer is queued the mutex is released and the leader takes the queue.
 * On SQLite (a temporary file) and, with KEYWARD_PG_URL (ctest unit_sync_pg), on
 * PostgreSQL; relationship ids carry the pid and a counter, so reruns do not collide.
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "kw_test.h"
#include "test_inst.h"

/* SQLite on a temporary file, or PostgreSQL when pg (and KEYWARD_PG_URL is set). */
static int ginst_make(kw_ti_t *in, bool pg)
{
    return pg ? kw_ti_open(in, getenv("KEYWARD_PG_URL")) : kw_ti_sqlite(in, "group_test");
}

static bool pg_skip(const char *name)
{
    const char *u = getenv("KEYWARD_PG_URL");
    if (u && *u)
        return false;
    fprintf(stderr, "  skipped %s: KEYWARD_PG_URL is not set\n", name);
    return true;
}

/* ---- jobs ---- */

typedef enum {
    JOB_TOUCH,      /* TOUCH account:<res>#member@user:<sub> */
    JOB_TOUCH_FAIL, /* TOUCH it, then CREATE it again: KW_ECONFLICT after a write */
} job_kind_t;

typedef struct job {
    kw_ti_t *in;
    job_kind_t kind;
    unsigned flags;
    char res[64], sub[64];
    kw_update_t u;
    int runs; /* how often fn ran */
    int rc;
    kw_revision_t rev;
    pthread_t th;
} job_t;

static void job_init(job_t *j, kw_ti_t *in, job_kind_t kind, unsigned flags, const char *res,
                     const char *sub)
{
    memset(j, 0, sizeof(*j));
    j->in = in;
    j->kind = kind;
    j->flags = flags;
    snprintf(j->res, sizeof(j->res), "%s", res);
    snprintf(j->sub, sizeof(j->sub), "%s", sub);
    j->u.op = KW_OP_TOUCH;
    j->u.rel.resource = (kw_object_t){KW_STR("account"), kw_str_c(j->res)};
    j->u.rel.relation = KW_STR("member");
    j->u.rel.subject.type = KW_STR("user");
    j->u.rel.subject.id = kw_str_c(j->sub);
}

static int job_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    job_t *j = ud;
    j->runs++; /* only the leader runs fn, one job at a time */
    int rc = kw_store_tx_rel_write(tx, &j->u, 1, diag);
    if (rc != KW_OK || j->kind != JOB_TOUCH_FAIL)
        return rc;
    kw_update_t again = j->u;
    again.op = KW_OP_CREATE;
    return kw_store_tx_rel_write(tx, &again, 1, diag);
}

static void *job_thread(void *arg)
{
    job_t *j = arg;
    kw_diag_t d;
    kw_diag_clear(&d);
    j->rc = kw_sync_write(j->in->sync, job_tx, j, j->flags, &j->rev, &d);
    return NULL;
}

static size_t queued(kw_sync_t *sync)
{
    return kw_sync_write_queued(sync);
}

/* Waits (bounded) until `n` writers are queued. */
static bool wait_queued(kw_sync_t *sync, size_t n)
{
    for (int i = 0; i < 5000; i++) {
        if (queued(sync) >= n)
            return true;
        usleep(1000);
    }
    return false;
}

typedef struct {
    const char *res;
    int n;
} stored_t;

static int stored_cb(const kw_rel_t *rel, void *ud)
{
    stored_t *s = ud;
    if (kw_str_eq_c(rel->resource.id, s->res))
        s->n++;
    return 0;
}

/* Relationships of account:<res> in the store. */
static int stored(kw_ti_t *in, const char *res)
{
    stored_t s = {res, 0};
    kw_revision_t r;
    return kw_store_load_relationships(in->store, stored_cb, &s, &r) == KW_OK ? s.n : -1;
}

static int count_cb(const kw_rel_t *rel, void *ud)
{
    (void)rel;
    (*(int *)ud)++;
    return 0;
}

static int graph_count(kw_ti_t *in, const char *res, const char *sub)
{
    kw_filter_t f;
    memset(&f, 0, sizeof(f));
    f.resource_type = KW_STR("account");
    f.resource_id = kw_str_c(res);
    f.relation = KW_STR("member");
    if (sub) {
        f.has_subject = true;
        f.subject_type = KW_STR("user");
        f.subject_id = kw_str_c(sub);
    }
    int n = 0;
    return kw_engine_read(in->engine, &f, count_cb, &n, NULL, NULL) == KW_OK ? n : -1;
}

/* ---- the scenarios ---- */

#define N_JOBS 8

/* Eight writers in one batch: one fails after writing (its write alone is undone, it
 * gets its own error), one repeats the relationship of an earlier one (it is run again
 * in the next transaction, so no revision names a relationship twice), the other six
 * share one revision, the graph and the store agree. */
static void batch_scenario(int *kw_failed_, bool pg)
{
    static int round;
    kw_ti_t in;
    KW_ASSERT(ginst_make(&in, pg));
    char res[64];
    snprintf(res, sizeof(res), "grp%ld_%d_%d", (long)getpid(), pg, ++round);
    job_t jobs[N_JOBS];
    const char *subs[N_JOBS] = {"u0", "boom", "u0", "u3", "u4", "u5", "u6", "u7"};
    for (int i = 0; i < N_JOBS; i++)
        job_init(&jobs[i], &in, i == 1 ? JOB_TOUCH_FAIL : JOB_TOUCH, 0, res, subs[i]);
    uint64_t batches0 = atomic_load(&in.sync->group_batches);
    uint64_t deferred0 = atomic_load(&in.sync->group_deferred);

    pthread_mutex_lock(&in.sync->write_mu);
    for (int i = 0; i < N_JOBS; i++) {
        KW_ASSERT_EQ(pthread_create(&jobs[i].th, NULL, job_thread, &jobs[i]), 0);
        KW_ASSERT(wait_queued(in.sync, (size_t)i + 1)); /* queue order = job order */
    }
    pthread_mutex_unlock(&in.sync->write_mu);
    for (int i = 0; i < N_JOBS; i++)
        pthread_join(jobs[i].th, NULL);

    KW_ASSERT_EQ(jobs[1].rc, KW_ECONFLICT);
    KW_ASSERT_EQ(jobs[1].rev, 0);
    kw_revision_t batch_rev = jobs[0].rev;
    KW_ASSERT(batch_rev > 0);
    for (int i = 0; i < N_JOBS; i++) {
        if (i == 1)
            continue;
        KW_ASSERT_EQ(jobs[i].rc, KW_OK);
        if (i != 2)
            KW_ASSERT_EQ(jobs[i].rev, batch_rev); /* one transaction, one revision */
    }
    KW_ASSERT(jobs[2].rev > batch_rev); /* the repeat: a later transaction */
    KW_ASSERT_EQ(jobs[2].runs, 2);      /* rolled back once, then run again */
    KW_ASSERT_EQ(jobs[0].runs, 1);
    KW_ASSERT_EQ(atomic_load(&in.sync->group_batches) - batches0, 2);
    KW_ASSERT_EQ(atomic_load(&in.sync->group_deferred) - deferred0, 1);
    KW_ASSERT(atomic_load(&in.sync->group_max_jobs) >= N_JOBS - 2);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), jobs[2].rev);
    /* graph and store: u0, u3..u7; never "boom" */
    KW_ASSERT_EQ(graph_count(&in, res, NULL), 6);
    KW_ASSERT_EQ(graph_count(&in, res, "boom"), 0);
    KW_ASSERT_EQ(stored(&in, res), 6);
    kw_revision_t store_rev = 0;
    KW_ASSERT_EQ(kw_store_revision(in.store, &store_rev), KW_OK);
    KW_ASSERT_EQ(store_rev, jobs[2].rev);
    kw_ti_close(&in);
}

/* A KW_SYNC_WRITE_ALONE writer never shares its transaction: queued between two ordinary
 * writers, it gets a revision of its own, between theirs. */
static void alone_scenario(int *kw_failed_, bool pg)
{
    static int round;
    kw_ti_t in;
    KW_ASSERT(ginst_make(&in, pg));
    char res[64];
    snprintf(res, sizeof(res), "aln%ld_%d_%d", (long)getpid(), pg, ++round);
    job_t jobs[4];
    job_init(&jobs[0], &in, JOB_TOUCH, 0, res, "a");
    job_init(&jobs[1], &in, JOB_TOUCH, 0, res, "b");
    job_init(&jobs[2], &in, JOB_TOUCH, KW_SYNC_WRITE_ALONE, res, "c");
    job_init(&jobs[3], &in, JOB_TOUCH, 0, res, "d");
    pthread_mutex_lock(&in.sync->write_mu);
    for (int i = 0; i < 4; i++) {
        KW_ASSERT_EQ(pthread_create(&jobs[i].th, NULL, job_thread, &jobs[i]), 0);
        KW_ASSERT(wait_queued(in.sync, (size_t)i + 1));
    }
    pthread_mutex_unlock(&in.sync->write_mu);
    for (int i = 0; i < 4; i++)
        pthread_join(jobs[i].th, NULL);
    for (int i = 0; i < 4; i++)
        KW_ASSERT_EQ(jobs[i].rc, KW_OK);
    KW_ASSERT_EQ(jobs[0].rev, jobs[1].rev);
    KW_ASSERT(jobs[2].rev > jobs[1].rev);
    KW_ASSERT(jobs[3].rev > jobs[2].rev);
    KW_ASSERT_EQ(graph_count(&in, res, NULL), 4);
    kw_ti_close(&in);
}

KW_TEST(group_commit_sqlite_one_revision_failures_alone_repeats_deferred)
{
    batch_scenario(kw_failed_, false);
}

KW_TEST(group_commit_sqlite_alone_flag_gets_its_own_transaction)
{
    alone_scenario(kw_failed_, false);
}

KW_TEST(pg_group_commit_one_revision_failures_alone_repeats_deferred)
{
    if (pg_skip("pg_group_commit_one_revision_failures_alone_repeats_deferred"))
        return;
    batch_scenario(kw_failed_, true);
}

KW_TEST(pg_group_commit_alone_flag_gets_its_own_transaction)
{
    if (pg_skip("pg_group_commit_alone_flag_gets_its_own_transaction"))
        return;
    alone_scenario(kw_failed_, true);
}
