/*
 * sync/state.c - the applied store revision, freshness and the freshness lease.
 *
 * The graph of an instance is a cache of the store's relationships at the store revision
 * `applied_rev` (sync_int.h). It advances in revision order only, under the write mutex
 * (kw__sync_advance), from the follower (follower.c), a local write (commit.c) or a
 * reload (catchup.c). While the follower cannot reach the database the instance is NOT
 * fresh: graph-reading routes answer 503 until it has reconnected AND caught up (never a
 * stale graph served as fresh).
 *
 * Freshness lease: fresh also requires that the follower proved the graph current (a
 * successful catch-up) less than KW__SYNC_LEASE_MS ago. Without it a process that was
 * paused (SIGSTOP, a suspended VM) would answer from its old graph, as fresh, for the
 * moments between waking up and its follower noticing what it missed.
 *
 * Threads: applied_rev/fresh/synced_ms are atomics; rev_mu/rev_cv (lock 4 of sync.h) only
 * carry the wake-ups, and nothing else is locked while rev_mu is held.
 */
#include <inttypes.h>

#include "base/log.h"
#include "sync_int.h"

#define KW_MODULE "sync"

struct timespec kw__sync_deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int kw__sync_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return KW_ENOMEM;
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(cv, &ca) == 0
                 ? KW_OK
                 : KW_ENOMEM;
    pthread_condattr_destroy(&ca);
    return rc;
}

int64_t kw__sync_clock_ms(void)
{
    struct timespec ts;
#ifdef CLOCK_BOOTTIME
    clock_gettime(CLOCK_BOOTTIME, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kw__sync_state_init(kw_sync_t *s)
{
    atomic_store(&s->applied_rev, 0);
    atomic_store(&s->fresh, true);
    atomic_store(&s->synced_ms, kw__sync_clock_ms());
    s->follows = false;
    if (pthread_mutex_init(&s->rev_mu, NULL) != 0)
        return KW_ENOMEM;
    if (kw__sync_cond_init(&s->rev_cv) != KW_OK)
        goto fail_cond;
    return KW_OK;
fail_cond:
    pthread_mutex_destroy(&s->rev_mu);
    return KW_ENOMEM;
}

void kw__sync_state_fini(kw_sync_t *s)
{
    pthread_cond_destroy(&s->rev_cv);
    pthread_mutex_destroy(&s->rev_mu);
}

kw_revision_t kw_sync_applied(kw_sync_t *s)
{
    return (kw_revision_t)atomic_load_explicit(&s->applied_rev, memory_order_acquire);
}

static void notify(kw_sync_t *s)
{
    if (s->on_change)
        s->on_change(s->on_change_ud);
}

void kw_sync_on_change(kw_sync_t *s, void (*fn)(void *ud), void *ud)
{
    s->on_change = fn;
    s->on_change_ud = ud;
}

void kw__sync_advance(kw_sync_t *s, kw_revision_t rev)
{
    /* Names a schema swap's or a reload's engine revision for snapshots (a batch was named
     * when applied; the first name a change gets is kept). Before rev_mu, a leaf; the
     * caller serializes the moves (write_mu or the start). */
    if (rev > kw_sync_applied(s))
        kw_engine_history_name(s->engine, rev);
    pthread_mutex_lock(&s->rev_mu);
    bool moved = rev > kw_sync_applied(s);
    if (moved) {
        atomic_store_explicit(&s->applied_rev, (uint64_t)rev, memory_order_release);
        pthread_cond_broadcast(&s->rev_cv);
    }
    pthread_mutex_unlock(&s->rev_mu);
    if (moved)
        notify(s);
}

void kw__sync_set_fresh(kw_sync_t *s, bool fresh)
{
    pthread_mutex_lock(&s->rev_mu);
    bool was = atomic_exchange(&s->fresh, fresh);
    if (was != fresh)
        pthread_cond_broadcast(&s->rev_cv);
    pthread_mutex_unlock(&s->rev_mu);
    if (was != fresh)
        notify(s);
    if (was && !fresh)
        kw_log(KW_LOG_WARN, KW_MODULE,
               "not fresh (503 on graph routes): database unreachable, graph not caught up, "
               "or behind the pruned changelog");
    else if (!was && fresh)
        kw_log(KW_LOG_INFO, KW_MODULE, "caught up at store revision %" PRIu64 ": fresh again",
               (uint64_t)kw_sync_applied(s));
}

bool kw_sync_is_fresh(kw_sync_t *s)
{
    if (!atomic_load(&s->fresh))
        return false;
    return !s->follows || kw__sync_clock_ms() - atomic_load(&s->synced_ms) <= KW__SYNC_LEASE_MS;
}

void kw__sync_renew_lease(kw_sync_t *s, int64_t t0)
{
    pthread_mutex_lock(&s->rev_mu);
    int64_t prev = atomic_exchange(&s->synced_ms, t0);
    bool lapsed = kw__sync_clock_ms() - prev > KW__SYNC_LEASE_MS;
    if (lapsed)
        pthread_cond_broadcast(&s->rev_cv);
    pthread_mutex_unlock(&s->rev_mu);
    if (lapsed)
        notify(s);
}
