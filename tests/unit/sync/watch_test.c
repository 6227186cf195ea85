/*
 * tests/unit/sync/watch_test.c - the watch hub (sync/watch.c) over a real store: a watch
 * catches up from the changelog, then follows live commits made through ANOTHER store
 * handle on the same database (another process or instance: no poke reaches the hub, only
 * its poll), filters, resumes from a revision, ends when the client goes, is cut off when
 * slow (its memory stays bounded), and ends when the hub stops. Every case runs on SQLite
 * and, as pg_*, on PostgreSQL (KEYWARD_PG_URL, tests/coherence/run-sync-pg.sh).
 */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "kw_test.h"
#include "sync/sync.h"

/* ---- two store handles on one database ---- */

typedef struct db2 {
    kw_store_t *writer; /* the other instance */
    kw_store_t *reader; /* the hub's */
    char path[128];     /* SQLite only */
    char tag[32];       /* unique resource ids per run (PostgreSQL keeps its data) */
} db2_t;

static int db2_open(db2_t *d, const char *pg_url)
{
    static int runs;
    memset(d, 0, sizeof(*d));
    char url[200];
    snprintf(d->tag, sizeof(d->tag), "w%ld_%ld_%d", (long)getpid(), (long)time(NULL) % 100000,
             ++runs);
    if (pg_url) {
        snprintf(url, sizeof(url), "%s", pg_url);
    } else {
        snprintf(d->path, sizeof(d->path), "/tmp/kw_watch_%ld.db", (long)getpid());
        snprintf(url, sizeof(url), "sqlite:%s", d->path);
    }
    if (kw_store_open(url, &d->writer, NULL) != KW_OK)
        return 0;
    return kw_store_open(url, &d->reader, NULL) == KW_OK;
}

static void db2_close(db2_t *d)
{
    kw_store_close(d->reader);
    kw_store_close(d->writer);
    if (d->path[0]) {
        const char *suffix[] = {"", "-wal", "-shm"};
        for (size_t i = 0; i < 3; i++) {
            char p[160];
            snprintf(p, sizeof(p), "%s%s", d->path, suffix[i]);
            unlink(p);
        }
    }
}

/* Commits doc:<tag>_<id>#<rel>@user:u for each id of `ids` (one revision). */
static kw_revision_t commit(db2_t *d, const char *type, const char *ids, const char *rel,
                            kw_op_t op)
{
    kw_update_t ups[8];
    char res[8][48];
    size_t n = 0;
    for (const char *p = ids; *p && n < 8; p++, n++) {
        snprintf(res[n], sizeof(res[n]), "%s_%c", d->tag, *p);
        ups[n] = (kw_update_t){
            op, {{kw_str_c(type), kw_str_c(res[n])}, kw_str_c(rel), {KW_STR("user"), KW_STR("u")}}};
    }
    kw_store_tx_t *tx = NULL;
    kw_revision_t rev = 0;
    if (kw_store_tx_begin(d->writer, &tx, NULL) != KW_OK)
        return 0;
    if (kw_store_tx_rel_write(tx, ups, n, NULL) != KW_OK) {
        kw_store_tx_rollback(tx);
        return 0;
    }
    return kw_store_tx_commit(tx, &rev, NULL) == KW_OK ? rev : 0;
}

/* ---- a watch on its own thread, recording what it is sent ---- */

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kw_watch_hub_t *hub;
    kw_revision_t after;
    kw_watch_filter_t filter;
    char seen[64][96]; /* "rev op type:id#rel" */
    size_t n_seen;
    size_t n_events, n_checkpoints;
    kw_revision_t last_rev;
    bool stop;     /* the client goes: emit refuses */
    bool gate;     /* emit blocks while set (a slow client) */
    bool in_emit;  /* emit is blocked at the gate */
    bool done;     /* kw_watch_run returned */
    int rc;        /* what it returned */
    char msg[300]; /* its diag */
} rec_t;

static int on_event(void *ud, const kw_watch_event_t *ev)
{
    rec_t *r = ud;
    pthread_mutex_lock(&r->mu);
    while (r->gate) {
        r->in_emit = true;
        pthread_cond_broadcast(&r->cv);
        pthread_cond_wait(&r->cv, &r->mu);
    }
    r->in_emit = false;
    if (ev->checkpoint) {
        r->n_checkpoints++;
    } else {
        r->n_events++;
        r->last_rev = ev->rev;
        for (size_t i = 0; i < ev->n_changes && r->n_seen < KW_ARRAY_LEN(r->seen); i++) {
            const kw_rel_t *x = &ev->changes[i].rel;
            snprintf(r->seen[r->n_seen++], sizeof(r->seen[0]), "%c %.*s:%.*s#%.*s",
                     ev->changes[i].op == KW_OP_DELETE ? '-' : '+', KW_STR_FMT(x->resource.type),
                     KW_STR_FMT(x->resource.id), KW_STR_FMT(x->relation));
        }
    }
    bool stop = r->stop;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return stop ? KW_ECONFLICT : KW_OK;
}

static void *run_watch(void *arg)
{
    rec_t *r = arg;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_watch_run(r->hub, r->after, &r->filter, on_event, r, &d);
    pthread_mutex_lock(&r->mu);
    r->rc = rc;
    snprintf(r->msg, sizeof(r->msg), "%s", d.msg);
    r->done = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void rec_init(rec_t *r, kw_watch_hub_t *h, kw_revision_t after)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->hub = h;
    r->after = after;
}

/* Waits (at most 10 s) until pred(r) holds. */
static bool wait_for(rec_t *r, bool (*pred)(const rec_t *, size_t), size_t arg)
{
    bool ok = false;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < 1000 && !(ok = pred(r, arg)); i++) {
        pthread_mutex_unlock(&r->mu);
        usleep(10000);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static bool seen_at_least(const rec_t *r, size_t n)
{
    return r->n_seen >= n;
}

static bool finished(const rec_t *r, size_t n)
{
    (void)n;
    return r->done;
}

static bool blocked(const rec_t *r, size_t n)
{
    (void)n;
    return r->in_emit;
}

static bool checkpoints(const rec_t *r, size_t n)
{
    return r->n_checkpoints >= n;
}

static void tagged(char *out, size_t cap, const db2_t *d, char op, const char *type, char id,
                   const char *rel)
{
    snprintf(out, cap, "%c %s:%s_%c#%s", op, type, d->tag, id, rel);
}

/* ---- the cases, per backend ---- */

static void catch_up_then_live(int *kw_failed_, const char *pg)
{
    db2_t d;
    KW_ASSERT(db2_open(&d, pg));
    kw_revision_t r1 = commit(&d, "doc", "ab", "viewer", KW_OP_TOUCH);
    kw_revision_t r2 = commit(&d, "doc", "a", "viewer", KW_OP_DELETE);
    KW_ASSERT(r1 && r2 > r1);
    kw_watch_hub_t *h = NULL;
    KW_ASSERT_EQ(kw_watch_hub_new(d.reader, NULL, &h), KW_OK);
    rec_t r;
    rec_init(&r, h, r1 - 1);
    pthread_t t;
    KW_ASSERT_EQ(pthread_create(&t, NULL, run_watch, &r), 0);
    /* The changelog first: r1's two changes, then r2's delete. */
    KW_ASSERT(wait_for(&r, seen_at_least, 3));
    char want[96];
    tagged(want, sizeof(want), &d, '+', "doc", 'a', "viewer");
    KW_ASSERT_STR_EQ(r.seen[0], want);
    tagged(want, sizeof(want), &d, '-', "doc", 'a', "viewer");
    KW_ASSERT_STR_EQ(r.seen[2], want);
    /* Live: a commit through the other handle reaches the watch without a poke. */
    kw_revision_t r3 = commit(&d, "doc", "c", "editor", KW_OP_TOUCH);
    KW_ASSERT(r3 > r2);
    KW_ASSERT(wait_for(&r, seen_at_least, 4));
    tagged(want, sizeof(want), &d, '+', "doc", 'c', "editor");
    KW_ASSERT_STR_EQ(r.seen[3], want);
    KW_ASSERT_EQ(r.last_rev, r3);
    /* Quiet: checkpoints at the position tell the transport to test its client. */
    KW_ASSERT(wait_for(&r, checkpoints, 1));
    /* The client goes: the next event is refused and the watch ends with that code. */
    pthread_mutex_lock(&r.mu);
    r.stop = true;
    pthread_mutex_unlock(&r.mu);
    KW_ASSERT(commit(&d, "doc", "d", "viewer", KW_OP_TOUCH) > r3);
    kw_watch_hub_poke(h);
    KW_ASSERT(wait_for(&r, finished, 0));
    KW_ASSERT_EQ(r.rc, KW_ECONFLICT);
    pthread_join(t, NULL);
    kw_watch_hub_free(h);
    db2_close(&d);
}

static void filters_and_resume(int *kw_failed_, const char *pg)
{
    db2_t d;
    KW_ASSERT(db2_open(&d, pg));
    kw_revision_t r1 = commit(&d, "doc", "a", "viewer", KW_OP_TOUCH);
    kw_revision_t r2 = commit(&d, "folder", "b", "viewer", KW_OP_TOUCH);
    kw_revision_t r3 = commit(&d, "doc", "c", "editor", KW_OP_TOUCH);
    KW_ASSERT(r1 && r2 && r3);
    kw_watch_hub_t *h = NULL;
    KW_ASSERT_EQ(kw_watch_hub_new(d.reader, NULL, &h), KW_OK);
    /* optionalObjectTypes: doc only, resumed after r1 (so a's change is not sent again). */
    rec_t r;
    rec_init(&r, h, r1);
    kw_str_t types[] = {KW_STR("doc")};
    r.filter.object_types = types;
    r.filter.n_object_types = 1;
    pthread_t t;
    KW_ASSERT_EQ(pthread_create(&t, NULL, run_watch, &r), 0);
    KW_ASSERT(wait_for(&r, seen_at_least, 1));
    char want[96];
    tagged(want, sizeof(want), &d, '+', "doc", 'c', "editor");
    KW_ASSERT_STR_EQ(r.seen[0], want);
    KW_ASSERT_EQ(r.last_rev, r3);
    /* A relationship filter with a resource id prefix: folder#viewer on <tag>_e only. */
    rec_t f;
    rec_init(&f, h, r3);
    kw_filter_t rf = {.resource_type = KW_STR("folder"), .relation = KW_STR("viewer")};
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "%s_e", d.tag);
    kw_str_t prefixes[] = {kw_str_c(prefix)};
    f.filter.filters = &rf;
    f.filter.id_prefixes = prefixes;
    f.filter.n_filters = 1;
    pthread_t t2;
    KW_ASSERT_EQ(pthread_create(&t2, NULL, run_watch, &f), 0);
    KW_ASSERT(commit(&d, "folder", "f", "viewer", KW_OP_TOUCH));
    KW_ASSERT(commit(&d, "folder", "e", "editor", KW_OP_TOUCH));
    KW_ASSERT(commit(&d, "folder", "e", "viewer", KW_OP_TOUCH));
    KW_ASSERT(wait_for(&f, seen_at_least, 1));
    tagged(want, sizeof(want), &d, '+', "folder", 'e', "viewer");
    KW_ASSERT_STR_EQ(f.seen[0], want);
    KW_ASSERT_EQ(f.n_seen, 1);
    /* The hub stops: both watches end with KW_EAGAIN. */
    kw_watch_hub_stop(h);
    KW_ASSERT(wait_for(&r, finished, 0) && wait_for(&f, finished, 0));
    KW_ASSERT_EQ(r.rc, KW_EAGAIN);
    KW_ASSERT_EQ(f.rc, KW_EAGAIN);
    KW_ASSERT_STR_EQ(f.msg, "the server is shutting down");
    pthread_join(t, NULL);
    pthread_join(t2, NULL);
    /* A stopped hub refuses a new watch at once. */
    KW_ASSERT_EQ(kw_watch_run(h, 0, NULL, on_event, &r, NULL), KW_EAGAIN);
    kw_watch_hub_free(h);
    db2_close(&d);
}

static void slow_watcher_is_cut_off(int *kw_failed_, const char *pg)
{
    db2_t d;
    KW_ASSERT(db2_open(&d, pg));
    kw_revision_t r0 = commit(&d, "doc", "z", "viewer", KW_OP_TOUCH);
    KW_ASSERT(r0);
    kw_watch_config_t cfg;
    kw_watch_config_default(&cfg);
    cfg.buffer_changes = 4; /* four changes queued at most */
    cfg.poll_ms = 10;
    kw_watch_hub_t *h = NULL;
    KW_ASSERT_EQ(kw_watch_hub_new(d.reader, &cfg, &h), KW_OK);
    rec_t r;
    rec_init(&r, h, r0);
    r.gate = true; /* the client reads nothing */
    pthread_t t;
    KW_ASSERT_EQ(pthread_create(&t, NULL, run_watch, &r), 0);
    /* Live and idle: its first checkpoint blocks at the gate. */
    KW_ASSERT(wait_for(&r, blocked, 0));
    /* Eight changes arrive while it is stuck: more than its buffer. */
    for (int i = 0; i < 4; i++)
        KW_ASSERT(commit(&d, "doc", "pq", "viewer", i % 2 ? KW_OP_DELETE : KW_OP_TOUCH));
    kw_watch_hub_poke(h);
    /* The hub cuts it off (its queue is dropped at once); the client is released and its
     * watch ends with SpiceDB's "fell too far behind". */
    usleep(300000);
    pthread_mutex_lock(&r.mu);
    r.gate = false;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    KW_ASSERT(wait_for(&r, finished, 0));
    KW_ASSERT_EQ(r.rc, KW_ELIMIT);
    KW_ASSERT(strstr(r.msg, "watch fell too far behind and was disconnected") != NULL);
    KW_ASSERT(r.n_seen <= 4);
    pthread_join(t, NULL);
    /* A new watch from the last token it had catches up on everything. */
    rec_t again;
    rec_init(&again, h, r0);
    pthread_t t2;
    KW_ASSERT_EQ(pthread_create(&t2, NULL, run_watch, &again), 0);
    KW_ASSERT(wait_for(&again, seen_at_least, 8));
    pthread_mutex_lock(&again.mu);
    again.stop = true;
    pthread_mutex_unlock(&again.mu);
    kw_watch_hub_stop(h);
    pthread_join(t2, NULL);
    kw_watch_hub_free(h);
    db2_close(&d);
}

/* max_watchers: one more watch than allowed is refused at once, nothing else changes. */
static void too_many_watches(int *kw_failed_)
{
    db2_t d;
    KW_ASSERT(db2_open(&d, NULL));
    kw_watch_config_t cfg;
    kw_watch_config_default(&cfg);
    cfg.max_watchers = 1;
    kw_watch_hub_t *h = NULL;
    KW_ASSERT_EQ(kw_watch_hub_new(d.reader, &cfg, &h), KW_OK);
    rec_t r;
    rec_init(&r, h, 0);
    r.gate = true;
    pthread_t t;
    KW_ASSERT_EQ(pthread_create(&t, NULL, run_watch, &r), 0);
    KW_ASSERT(wait_for(&r, blocked, 0)); /* running (its first checkpoint is held) */
    kw_diag_t dg;
    KW_ASSERT_EQ(kw_watch_run(h, 0, NULL, on_event, &r, &dg), KW_EBUDGET);
    KW_ASSERT(strstr(dg.msg, "too many watches at once (1)") != NULL);
    pthread_mutex_lock(&r.mu);
    r.gate = false;
    r.stop = true;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    KW_ASSERT(wait_for(&r, finished, 0));
    KW_ASSERT_EQ(r.rc, KW_ECONFLICT);
    pthread_join(t, NULL);
    kw_watch_hub_free(h);
    db2_close(&d);
}

KW_TEST(watch_too_many_watches_are_refused)
{
    too_many_watches(kw_failed_);
}

static const char *pg_url(void)
{
    const char *u = getenv("KEYWARD_PG_URL");
    return u && *u ? u : NULL;
}

KW_TEST(watch_catch_up_then_live_from_another_handle)
{
    catch_up_then_live(kw_failed_, NULL);
}

KW_TEST(watch_filters_resume_and_hub_stop)
{
    filters_and_resume(kw_failed_, NULL);
}

KW_TEST(watch_slow_watcher_is_cut_off)
{
    slow_watcher_is_cut_off(kw_failed_, NULL);
}

KW_TEST(pg_watch_catch_up_then_live_from_another_instance)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    catch_up_then_live(kw_failed_, pg_url());
}

KW_TEST(pg_watch_filters_resume_and_hub_stop)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    filters_and_resume(kw_failed_, pg_url());
}

KW_TEST(pg_watch_slow_watcher_is_cut_off)
{
    if (!pg_url())
        KW_SKIP("KEYWARD_PG_URL is not set");
    slow_watcher_is_cut_off(kw_failed_, pg_url());
}
