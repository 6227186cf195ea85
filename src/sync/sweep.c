/*
 * sync/sweep.c - the expiry sweep: expired relationships leave the store and the graph.
 *
 * Queries never depend on it: the engine compares a relationship's expiry with the clock at
 * query time, so an expired relationship is invisible from its expiry instant on, swept or
 * not. The sweep only frees what nobody can see any more: in the store (rows, and the
 * startup load's work) and in the graph (memory).
 *
 * How: kw_sync_sweep_expired reads the earliest stored expiry (kw_store_next_expiry, one
 * indexed read, no transaction, no lock) and, while it is due, deletes the expired rows in
 * small transactions of KW_SYNC_SWEEP_BATCH (kw_store_tx_rel_delete_expired) through the
 * ordinary write path (kw_sync_write, group commit): each is a revision like any delete, its
 * DELETE changes reach the engine after the commit and, on PostgreSQL, the changelog, so
 * every other instance's follower drops them too. A transaction that finds nothing left to
 * delete (another instance swept first) is rolled back: no empty revision.
 *
 * The sweeper thread (kw_sync_start, when sweep_interval_s > 0) sweeps once at start and
 * then every sweep_interval_s, by this process's clock (CLOCK_REALTIME, the clock the
 * engine compares expiry with). Each instance sweeps; their transactions serialize on the
 * store's write order, and the later ones find nothing.
 *
 * Threads: the sweeper's stop flag and naps are under its own mu (lock 7 of sync.h, a
 * leaf); it holds no lock while it sweeps, and calls kw_sync_write like any writer.
 */
#include <inttypes.h>

#include "base/log.h"
#include "sync_int.h"

#define KW_MODULE "sync"

struct kw__sweeper {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled on stop */
    bool stop;
};

int64_t kw__sync_realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- one sweep ---- */

typedef struct {
    int64_t now_us;
    size_t n; /* rows the last run deleted (a run may be repeated: kw_sync_write) */
} sweep_job_t;

static int sweep_fn(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    sweep_job_t *j = ud;
    size_t n = 0;
    int rc = kw_store_tx_rel_delete_expired(tx, j->now_us, KW_SYNC_SWEEP_BATCH, &n, diag);
    j->n = n;
    if (rc != KW_OK)
        return rc;
    /* Nothing (left) to delete: fail alone, so no empty revision is committed. */
    return n == 0 ? KW_ENOTFOUND : KW_OK;
}

/* One transaction of at most KW_SYNC_SWEEP_BATCH rows, when something expired at now_us is
 * stored. *n gets the rows deleted; *more whether a full batch suggests there are more. */
static int sweep_once(kw_sync_t *s, int64_t now_us, size_t *n, bool *more, kw_diag_t *diag)
{
    *n = 0;
    *more = false;
    int64_t next = 0;
    int rc = kw_store_next_expiry(s->store, &next);
    if (rc == KW_ENOTFOUND || (rc == KW_OK && next > now_us))
        return KW_OK;
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the next expiry: %s", kw_strerror(rc));
    sweep_job_t j = {now_us, 0};
    rc = kw_sync_write(s, sweep_fn, &j, 0, NULL, diag);
    if (rc == KW_ENOTFOUND)
        return KW_OK; /* swept meanwhile (another instance) */
    if (rc != KW_OK)
        return rc;
    *n = j.n;
    *more = j.n == KW_SYNC_SWEEP_BATCH;
    atomic_fetch_add_explicit(&s->expired_swept, j.n, memory_order_relaxed);
    return KW_OK;
}

int kw_sync_sweep_expired(kw_sync_t *s, int64_t now_us, size_t *n_deleted, kw_diag_t *diag)
{
    if (!s || now_us <= 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "a sweep needs a time after 1970");
    size_t total = 0, n = 0;
    bool more = true;
    int rc = KW_OK;
    while (rc == KW_OK && more) {
        rc = sweep_once(s, now_us, &n, &more, diag);
        total += n;
    }
    if (n_deleted)
        *n_deleted = total;
    return rc;
}

/* ---- the sweeper thread ---- */

/* Sleeps ms unless stopped; true when stopping. */
static bool nap(kw__sweeper_t *sw, int64_t ms)
{
    struct timespec until = kw__sync_deadline_in(ms > INT32_MAX ? INT32_MAX : (int)ms);
    pthread_mutex_lock(&sw->mu);
    while (!sw->stop) {
        if (pthread_cond_timedwait(&sw->cv, &sw->mu, &until) != 0)
            break;
    }
    bool stop = sw->stop;
    pthread_mutex_unlock(&sw->mu);
    return stop;
}

static bool stopping(kw__sweeper_t *sw)
{
    pthread_mutex_lock(&sw->mu);
    bool stop = sw->stop;
    pthread_mutex_unlock(&sw->mu);
    return stop;
}

static void *sweeper_main(void *arg)
{
    kw_sync_t *s = arg;
    kw__sweeper_t *sw = s->sweeper;
    do {
        /* No lock is held here. A backlog goes in batches, checking for a stop between. */
        int64_t now = kw__sync_realtime_us();
        size_t total = 0, n = 0;
        bool more = true;
        int rc = KW_OK;
        kw_diag_t d;
        kw_diag_clear(&d);
        while (rc == KW_OK && more && !stopping(sw)) {
            rc = sweep_once(s, now, &n, &more, &d);
            total += n;
        }
        if (total > 0)
            kw_log(KW_LOG_INFO, KW_MODULE, "swept %zu expired relationships", total);
        if (rc != KW_OK)
            kw_log(rc == KW_EDB ? KW_LOG_INFO : KW_LOG_WARN, KW_MODULE,
                   "expiry sweep stopped: %s (next in %ld s)", d.msg[0] ? d.msg : kw_err_name(rc),
                   s->sweep_interval_s);
    } while (!nap(sw, (int64_t)s->sweep_interval_s * 1000));
    return NULL;
}

int kw__sync_sweeper_start(kw_sync_t *s, kw_diag_t *diag)
{
    if (s->sweep_interval_s <= 0 || s->sweeper)
        return KW_OK;
    int rc = KW_ENOMEM; /* what every failure below is */
    kw__sweeper_t *sw = kw_calloc(1, sizeof(*sw));
    if (!sw)
        return rc;
    if (pthread_mutex_init(&sw->mu, NULL) != 0)
        goto fail_mutex;
    if (kw__sync_cond_init(&sw->cv) != KW_OK)
        goto fail_cond;
    s->sweeper = sw;
    if (pthread_create(&sw->thread, NULL, sweeper_main, s) != 0) {
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "cannot start the expiry sweeper thread");
        goto fail_thread;
    }
    return KW_OK;

fail_thread:
    s->sweeper = NULL;
    pthread_cond_destroy(&sw->cv);
fail_cond:
    pthread_mutex_destroy(&sw->mu);
fail_mutex:
    kw_free(sw);
    return rc;
}

void kw__sync_sweeper_stop(kw_sync_t *s)
{
    kw__sweeper_t *sw = s->sweeper;
    if (!sw)
        return;
    pthread_mutex_lock(&sw->mu);
    sw->stop = true;
    pthread_cond_broadcast(&sw->cv);
    pthread_mutex_unlock(&sw->mu);
    pthread_join(sw->thread, NULL);
    pthread_cond_destroy(&sw->cv);
    pthread_mutex_destroy(&sw->mu);
    kw_free(sw);
    s->sweeper = NULL;
}
