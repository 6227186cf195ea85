/*
 * sync/follower.c - the follower thread: several keyward instances over one PostgreSQL
 * database.
 *
 *   loop:
 *     prune turn?  (every prune_interval_s; one instance at a time; bounded batches,
 *                   outside the write mutex: it touches only the changelog)
 *     wait_change  (LISTEN/NOTIFY, at most 1 s: the poll)
 *     under the write mutex: catch up, or resync when behind the pruned horizon
 *                   (catchup.c, kw__sync_locked)
 *     success: renew the freshness lease, fresh; failure: not fresh, back off (50 ms .. 1 s)
 *
 * A local write catches up through the same changelog after its commit (commit.c), so its
 * changes and every earlier revision of other instances arrive in revision order.
 *
 * Retention (tag-kw-changelog-retention): every prune_interval_s the follower deletes the
 * changelog rows older than retain_s with kw_store_prune_changelog (one instance at a
 * time; bounded batches).
 *
 * Threads: one follower thread per process. Its stop flag and its naps are under fl->mu
 * (lock 7 of sync.h), which is never held while anything else is done; the loop holds
 * no lock at its head.
 */
#include <inttypes.h>

#include "base/log.h"
#include "sync_int.h"

#define KW_MODULE "sync"
#define WAIT_MS 1000 /* kw_store_wait_change timeout: the poll fallback */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define PRUNE_BATCH 10000   /* rows per prune transaction: each stays short */
#define PRUNE_BUDGET_MS 250 /* then back to following, the rest at the next turn */

struct kw__follower {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled on stop */
    bool stop;
};

/* Sleeps ms unless stopped; true when stopping. */
static bool nap(kw__follower_t *fl, int ms)
{
    struct timespec until = kw__sync_deadline_in(ms);
    pthread_mutex_lock(&fl->mu);
    while (!fl->stop) {
        if (pthread_cond_timedwait(&fl->cv, &fl->mu, &until) != 0)
            break;
    }
    bool stop = fl->stop;
    pthread_mutex_unlock(&fl->mu);
    return stop;
}

static bool stopping(kw__follower_t *fl)
{
    pthread_mutex_lock(&fl->mu);
    bool stop = fl->stop;
    pthread_mutex_unlock(&fl->mu);
    return stop;
}

/* Prunes when its turn has come (*next_ms, kw__sync_clock_ms): batches of PRUNE_BATCH
 * rows for at most PRUNE_BUDGET_MS, then back to following; a backlog beyond that is
 * worked off on the next turns, which come at once until it is gone. Outside write_mu:
 * it touches only the changelog. */
static void prune_turn(kw_sync_t *s, int64_t *next_ms)
{
    int64_t start = kw__sync_clock_ms();
    if (start < *next_ms)
        return;
    int64_t interval_ms = (int64_t)s->prune_interval_s * 1000;
    *next_ms = start + interval_ms;
    for (;;) {
        size_t n = 0;
        kw_revision_t horizon = 0;
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc = kw_store_prune_changelog(s->store, (int64_t)s->retain_s * 1000000, PRUNE_BATCH, &n,
                                          &horizon, &d);
        if (rc == KW_ECONFLICT)
            return; /* another instance is on it; our next turn comes in interval_ms */
        if (rc != KW_OK) {
            kw_log(rc == KW_EDB ? KW_LOG_INFO : KW_LOG_WARN, KW_MODULE,
                   "changelog pruning skipped: %s (next turn in %ld s)",
                   d.msg[0] ? d.msg : kw_err_name(rc), s->prune_interval_s);
            return;
        }
        atomic_fetch_add_explicit(&s->changelog_pruned, n, memory_order_relaxed);
        atomic_store_explicit(&s->changelog_horizon, (uint64_t)horizon, memory_order_relaxed);
        if (n < PRUNE_BATCH)
            return;
        if (kw__sync_clock_ms() - start >= PRUNE_BUDGET_MS) {
            *next_ms = 0; /* more to do: the next turn is the next loop */
            return;
        }
    }
}

static void *follower_main(void *arg)
{
    kw_sync_t *s = arg;
    kw__follower_t *fl = s->follower;
    int backoff = BACKOFF_MIN_MS;
    int64_t next_prune = kw__sync_clock_ms() + (int64_t)s->prune_interval_s * 1000;
    while (!stopping(fl)) {
        /* No lock is held here. */
        prune_turn(s, &next_prune);
        kw_revision_t latest = 0;
        bool logged = false;
        int rc = kw_store_wait_change(s->store, WAIT_MS, &latest);
        if (stopping(fl))
            break;
        if (rc == KW_OK)
            atomic_fetch_add_explicit(&s->wakeups, 1, memory_order_relaxed);
        if (rc == KW_OK || rc == KW_ETIMEOUT) {
            /* A NOTIFY for a revision already applied (typically our own write): nothing
             * to read, unless the lease wants renewing. A timeout is the 1 s poll: read
             * anyway (a lost notification). */
            if (rc == KW_OK && latest <= kw_sync_applied(s) && kw_sync_is_fresh(s) &&
                kw__sync_clock_ms() - atomic_load(&s->synced_ms) < WAIT_MS)
                continue;
            kw_diag_t d;
            kw_diag_clear(&d);
            int64_t t0 = kw__sync_clock_ms();
            pthread_mutex_lock(&s->write_mu);
            rc = kw__sync_locked(s, &d);
            pthread_mutex_unlock(&s->write_mu);
            if (rc == KW_OK) {
                kw__sync_renew_lease(s, t0);
                kw__sync_set_fresh(s, true);
                backoff = BACKOFF_MIN_MS;
                continue;
            }
            if (rc != KW_EDB && rc != KW_EUNSUPPORTED) {
                kw_log(KW_LOG_WARN, KW_MODULE, "follower: %s: %s; retrying in %d ms",
                       kw_err_name(rc), d.msg[0] ? d.msg : kw_strerror(rc), backoff);
                logged = true;
            }
        }
        if (rc == KW_EUNSUPPORTED) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "the store cannot be followed: follower stopped");
            kw__sync_set_fresh(s, false);
            break;
        }
        kw__sync_set_fresh(s, false);
        if (rc != KW_EDB && !logged)
            kw_log(KW_LOG_WARN, KW_MODULE, "follower: %s; retrying in %d ms", kw_err_name(rc),
                   backoff);
        if (nap(fl, backoff))
            break;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return NULL;
}

/* The text last seen starts as the stored one (schema.c). */
static int remember_stored_schema(kw_sync_t *s, kw_diag_t *diag)
{
    kw_buf_t text;
    kw_buf_init(&text);
    int rc = kw_sync_stored_schema(s, &text);
    if (rc == KW_OK)
        rc = kw__sync_remember_schema(s, (kw_str_t){text.ptr, text.len});
    kw_buf_free(&text);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the stored schema: %s", kw_strerror(rc));
    return KW_OK;
}

int kw_sync_start(kw_sync_t *s, kw_diag_t *diag)
{
    if (!s || s->follower)
        return KW_EINVAL;
    atomic_store(&s->fresh, true);
    int rc = remember_stored_schema(s, diag);
    if (rc != KW_OK)
        return rc;

    /* Anything committed between the load's snapshot and now (a full reload if the
     * changelog was pruned past the load's revision meanwhile); also tells the backends
     * apart (SQLite has no changelog). */
    int64_t t0 = kw__sync_clock_ms();
    pthread_mutex_lock(&s->write_mu);
    rc = kw__sync_locked(s, diag);
    pthread_mutex_unlock(&s->write_mu);
    if (rc == KW_EUNSUPPORTED) {
        s->follows = false;
        atomic_store(&s->fresh, true);
        return kw__sync_sweeper_start(s, diag);
    }
    if (rc != KW_OK)
        return rc;
    atomic_store(&s->fresh, true);
    atomic_store(&s->synced_ms, t0);
    s->follows = true;

    rc = KW_ENOMEM; /* what every failure below is */
    kw__follower_t *fl = kw_calloc(1, sizeof(*fl));
    if (!fl)
        return rc;
    if (pthread_mutex_init(&fl->mu, NULL) != 0)
        goto fail_mutex;
    if (kw__sync_cond_init(&fl->cv) != KW_OK)
        goto fail_cond;
    s->follower = fl;
    if (pthread_create(&fl->thread, NULL, follower_main, s) != 0) {
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "cannot start the follower thread");
        goto fail_thread;
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "following the store from revision %" PRIu64,
           (uint64_t)kw_sync_applied(s));
    rc = kw__sync_sweeper_start(s, diag);
    if (rc != KW_OK)
        kw_sync_stop(s);
    return rc;

fail_thread:
    s->follower = NULL;
    pthread_cond_destroy(&fl->cv);
fail_cond:
    pthread_mutex_destroy(&fl->mu);
fail_mutex:
    kw_free(fl);
    return rc;
}

void kw_sync_stop(kw_sync_t *s)
{
    if (!s)
        return;
    kw__sync_sweeper_stop(s); /* it writes, and a write may catch up: before the follower */
    if (!s->follower)
        return;
    kw__follower_t *fl = s->follower;
    pthread_mutex_lock(&fl->mu);
    fl->stop = true;
    pthread_cond_broadcast(&fl->cv);
    pthread_mutex_unlock(&fl->mu);
    pthread_join(fl->thread, NULL);
    pthread_cond_destroy(&fl->cv);
    pthread_mutex_destroy(&fl->mu);
    kw_free(fl);
    s->follower = NULL;
}
