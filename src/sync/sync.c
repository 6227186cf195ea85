/*
 * sync/sync.c - the kw_sync_t's lifecycle and its counters.
 *
 * kw_sync_new acquires in this order and kw_sync_free releases in reverse: the object,
 * write_mu, group_mu, the state (rev_mu, rev_cv: state.c). The follower thread
 * (follower.c) comes later, with kw_sync_start, and goes first.
 */
#include "sync_int.h"

void kw_sync_config_default(kw_sync_config_t *cfg)
{
    cfg->freshness_ms = KW_SYNC_FRESHNESS_MS;
    cfg->prune_interval_s = KW_SYNC_PRUNE_INTERVAL_S;
    cfg->retain_s = KW_SYNC_RETAIN_S;
    cfg->sweep_interval_s = KW_SYNC_SWEEP_INTERVAL_S;
    cfg->check_schema = NULL;
}

int kw_sync_new(kw_engine_t *engine, kw_store_t *store, const kw_sync_config_t *cfg,
                kw_sync_t **out)
{
    if (!engine || !store || !cfg || !out)
        return KW_EINVAL;
    kw_sync_t *s = kw_calloc(1, sizeof(*s));
    if (!s)
        return KW_ENOMEM;
    s->engine = engine;
    s->store = store;
    s->check_schema = cfg->check_schema;
    s->freshness_ms = cfg->freshness_ms;
    s->prune_interval_s = cfg->prune_interval_s;
    s->retain_s = cfg->retain_s;
    s->sweep_interval_s = cfg->sweep_interval_s;
    kw_buf_init(&s->schema_seen);
    if (pthread_mutex_init(&s->write_mu, NULL) != 0)
        goto fail_write_mu;
    if (pthread_mutex_init(&s->group_mu, NULL) != 0)
        goto fail_group_mu;
    if (kw__sync_state_init(s) != KW_OK)
        goto fail_state;
    *out = s;
    return KW_OK;

fail_state:
    pthread_mutex_destroy(&s->group_mu);
fail_group_mu:
    pthread_mutex_destroy(&s->write_mu);
fail_write_mu:
    kw_free(s);
    return KW_ENOMEM;
}

void kw_sync_free(kw_sync_t *s)
{
    if (!s)
        return;
    kw_sync_stop(s); /* the follower and the sweeper use everything below */
    kw__sync_state_fini(s);
    pthread_mutex_destroy(&s->group_mu);
    pthread_mutex_destroy(&s->write_mu);
    kw_buf_free(&s->schema_seen);
    kw_free(s);
}

static uint64_t relaxed(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

void kw_sync_stats(kw_sync_t *s, kw_sync_stats_t *out)
{
    out->applied = kw_sync_applied(s);
    out->fresh = kw_sync_is_fresh(s);
    out->write_batches = relaxed(&s->group_batches);
    out->write_jobs = relaxed(&s->group_jobs);
    out->write_max_jobs = relaxed(&s->group_max_jobs);
    out->write_deferred = relaxed(&s->group_deferred);
    out->changelog_pruned = relaxed(&s->changelog_pruned);
    out->changelog_horizon = relaxed(&s->changelog_horizon);
    out->resyncs = relaxed(&s->resyncs);
    out->last_resync_ms = relaxed(&s->last_resync_ms);
    out->wakeups = relaxed(&s->wakeups);
    out->expired_swept = relaxed(&s->expired_swept);
}
