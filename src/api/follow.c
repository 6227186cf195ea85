/*
 * api/follow.c - coherence: several keyward instances over one PostgreSQL database.
 *
 * The graph of an instance is a cache of the store's relationships at the store revision
 * `applied_rev` (api_int.h). It advances in revision order only, under the api write
 * mutex, from two places:
 *   - the follower thread (PostgreSQL only): kw_store_wait_change (LISTEN/NOTIFY, at most
 *     1 s, the poll fallback) -> kw_store_changes_since(applied_rev) -> each revision's
 *     changes applied as one batch -> applied_rev = upto -> waiters woken;
 *   - a local write (common.c): after its commit at R it catches up the same way (which
 *     includes its own changes at R), never applying its own changes over a gap.
 * While the follower cannot reach the database the instance is NOT fresh: graph-reading
 * routes answer 503 until it has reconnected AND caught up (never a stale graph served as
 * fresh). SQLite has one instance per file and no changelog: applied_rev is simply the
 * revision of the last local commit, and there is no follower.
 *
 * Schema changes across instances: /v1/schema/write stores meta "schema" and then commits
 * an EMPTY store transaction, i.e. a revision without relationship changes. A follower
 * that crosses such a revision (a gap in the changelog's revision sequence, or revisions
 * beyond the last change up to `upto`) re-reads meta "schema" before applying anything
 * after it, and swaps the engine's schema when the text differs from the one it last saw.
 * Since the text is stored before the empty revision commits, an instance that has
 * applied revision R has the schema that was stored when R committed (or a newer one).
 * The schema of a revision is not versioned: a follower far behind installs the latest
 * stored text, not the one in force at each intermediate revision. If the new schema
 * rejects the graph (a concurrent write on another instance added relationships it does
 * not allow), the swap fails and the instance stays not fresh (fail closed) and logs it.
 *
 * Freshness lease: fresh also requires that the follower proved the graph current (a
 * successful catch-up) less than KW__API_LEASE_MS ago. Without it a process that was
 * paused (SIGSTOP, a suspended VM) would answer from its old graph, as fresh, for the
 * moments between waking up and its follower noticing what it missed.
 *
 * Retention and resync (tag-kw-changelog-retention): every
 * KEYWARD_CHANGELOG_PRUNE_INTERVAL_S (default 300) the follower deletes the changelog rows
 * older than KEYWARD_CHANGELOG_RETAIN_S (default 86400) with kw_store_prune_changelog (one
 * instance at a time; bounded batches). An instance whose applied_rev is below the pruned
 * horizon cannot catch up change by change: kw_store_changes_since says KW_EPRUNED. It
 * then logs one WARN, goes not fresh (503, as during an outage), and under write_mu
 * reloads every relationship from one snapshot into a NEW graph, swapped in whole at the
 * snapshot's revision together with the stored schema if that changed
 * (kw_engine_replace_graph: a reader never sees a half-built graph); then it catches up
 * from there as usual and is fresh again. A reload that fails (database down) leaves
 * applied_rev where it was, so the next attempt lands in the same place: stays not fresh
 * and retries with the follower's backoff.
 *
 * Threads: the follower is one thread per process; its stop flag and sleep are under
 * fl->mu. applied_rev/fresh/synced_ms are atomics; rev_mu/rev_cv only carry the wake-ups.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "follow"
#define CATCH_UP_LIMIT 10000 /* changes per changes_since round */
#define WAIT_MS 1000         /* kw_store_wait_change timeout: the poll fallback */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define PRUNE_BATCH 10000    /* rows per prune transaction: each stays short */
#define PRUNE_BUDGET_MS 250  /* then back to following, the rest at the next turn */
#define RESYNC_TRIES 3       /* reloads in a row when a schema write races them */
#define ENV_MAX_S 315360000L /* ten years: the bound of both retention settings */

struct kw__follower {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled on stop */
    bool stop;
};

/* ---- time ---- */

static struct timespec deadline_in(int ms)
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

static int init_mono_cond(pthread_cond_t *cv)
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

int64_t kw__api_clock_ms(void)
{
    struct timespec ts;
#ifdef CLOCK_BOOTTIME
    clock_gettime(CLOCK_BOOTTIME, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- state ---- */

/* A positive number of seconds from the environment, else `dflt` (with a WARN when set
 * but invalid). */
static long env_seconds(const char *name, long dflt)
{
    const char *env = getenv(name);
    long v = 0;
    if (!env || !env[0])
        return dflt;
    if (kw_api_parse_bounded(kw_str_c(env), 1, ENV_MAX_S, &v))
        return v;
    kw_log(KW_LOG_WARN, KW_MODULE, "%s must be 1..%ld (seconds); using %ld", name, ENV_MAX_S, dflt);
    return dflt;
}

int kw__api_coherence_init(kw_api_t *api)
{
    atomic_store(&api->applied_rev, 0);
    atomic_store(&api->fresh, true);
    atomic_store(&api->synced_ms, kw__api_clock_ms());
    api->follows = false;
    api->follower = NULL;
    kw_buf_init(&api->schema_seen);
    api->freshness_ms = 2000;
    const char *env = getenv("KEYWARD_FRESHNESS_TIMEOUT_MS");
    long ms = 0;
    if (env && env[0]) {
        if (kw_api_parse_bounded(kw_str_c(env), 0, 600000, &ms))
            api->freshness_ms = (int)ms;
        else
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "KEYWARD_FRESHNESS_TIMEOUT_MS must be 0..600000 (ms); using 2000");
    }
    api->prune_interval_s = env_seconds("KEYWARD_CHANGELOG_PRUNE_INTERVAL_S", 300);
    api->retain_s = env_seconds("KEYWARD_CHANGELOG_RETAIN_S", 86400);
    api->resync_warned = false;
    atomic_store(&api->changelog_pruned, 0);
    atomic_store(&api->changelog_horizon, 0);
    atomic_store(&api->resyncs, 0);
    atomic_store(&api->last_resync_ms, 0);
    atomic_store(&api->wakeups, 0);
    if (pthread_mutex_init(&api->rev_mu, NULL) != 0)
        return KW_ENOMEM;
    if (init_mono_cond(&api->rev_cv) != KW_OK) {
        pthread_mutex_destroy(&api->rev_mu);
        return KW_ENOMEM;
    }
    return KW_OK;
}

void kw__api_coherence_fini(kw_api_t *api)
{
    kw_api_follow_stop(api);
    pthread_cond_destroy(&api->rev_cv);
    pthread_mutex_destroy(&api->rev_mu);
    kw_buf_free(&api->schema_seen);
}

void kw__api_advance(kw_api_t *api, kw_revision_t rev)
{
    pthread_mutex_lock(&api->rev_mu);
    if (rev > kw__api_applied(api)) {
        atomic_store_explicit(&api->applied_rev, (uint64_t)rev, memory_order_release);
        pthread_cond_broadcast(&api->rev_cv);
    }
    pthread_mutex_unlock(&api->rev_mu);
}

static void set_fresh(kw_api_t *api, bool fresh)
{
    pthread_mutex_lock(&api->rev_mu);
    bool was = atomic_exchange(&api->fresh, fresh);
    if (was != fresh)
        pthread_cond_broadcast(&api->rev_cv);
    pthread_mutex_unlock(&api->rev_mu);
    if (was && !fresh)
        kw_log(KW_LOG_WARN, KW_MODULE,
               "not fresh (503 on graph routes): database unreachable, graph not caught up, "
               "or behind the pruned changelog");
    else if (!was && fresh)
        kw_log(KW_LOG_INFO, KW_MODULE, "caught up at store revision %" PRIu64 ": fresh again",
               (uint64_t)kw__api_applied(api));
}

kw_revision_t kw_api_applied_revision(kw_api_t *api)
{
    return kw__api_applied(api);
}

bool kw__api_is_fresh(kw_api_t *api)
{
    if (!atomic_load(&api->fresh))
        return false;
    return !api->follows || kw__api_clock_ms() - atomic_load(&api->synced_ms) <= KW__API_LEASE_MS;
}

bool kw_api_is_fresh(kw_api_t *api)
{
    return kw__api_is_fresh(api);
}

/* The follower proved the graph current as of t0 (the start of a successful catch-up):
 * renews the lease, and wakes waiters if it had run out. */
static void renew_lease(kw_api_t *api, int64_t t0)
{
    pthread_mutex_lock(&api->rev_mu);
    int64_t prev = atomic_exchange(&api->synced_ms, t0);
    if (kw__api_clock_ms() - prev > KW__API_LEASE_MS)
        pthread_cond_broadcast(&api->rev_cv);
    pthread_mutex_unlock(&api->rev_mu);
}

/* ---- schema ---- */

/* meta "schema" into `out` (empty when unset). */
static int stored_schema(kw_api_t *api, kw_buf_t *out)
{
    kw_arena_t *a = kw_arena_new(0);
    char *val = NULL;
    size_t len = 0;
    if (!a)
        return KW_ENOMEM;
    int rc = kw_store_meta_get(api->store, "schema", a, &val, &len);
    if (rc == KW_ENOTFOUND) {
        rc = KW_OK;
        len = 0;
    }
    out->len = 0;
    if (rc == KW_OK && len > 0)
        kw_buf_append(out, val, len);
    kw_arena_free(a);
    if (rc == KW_OK && out->failed)
        rc = KW_ENOMEM;
    return rc;
}

static bool same_text(const kw_buf_t *a, const kw_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

/* Under write_mu: installs the stored schema when it differs from the one last seen. */
static int schema_sync(kw_api_t *api, kw_diag_t *diag)
{
    kw_buf_t text;
    kw_buf_init(&text);
    int rc = stored_schema(api, &text);
    if (rc == KW_OK && text.len > 0 && !same_text(&text, &api->schema_seen)) {
        kw_revision_t applied = kw__api_applied(api);
        rc = kw_engine_set_schema(api->engine, (kw_str_t){text.ptr, text.len}, NULL, diag);
        if (rc == KW_OK)
            rc = kw_api_check_schema(api->engine, diag);
        if (rc == KW_OK) {
            api->schema_seen.len = 0;
            kw_buf_append(&api->schema_seen, text.ptr, text.len);
            if (api->schema_seen.failed)
                rc = KW_ENOMEM;
        }
        if (rc == KW_OK)
            kw_log(KW_LOG_INFO, KW_MODULE,
                   "installed the schema stored by another instance (after store revision "
                   "%" PRIu64 ")",
                   (uint64_t)applied);
        else
            kw_log(KW_LOG_ERROR, KW_MODULE,
                   "cannot install the stored schema (after store revision %" PRIu64
                   "): %s: %s; staying not fresh",
                   (uint64_t)applied, kw_err_name(rc), diag && diag->msg[0] ? diag->msg : "");
    }
    kw_buf_free(&text);
    return rc;
}

/* ---- catching up ---- */

typedef struct {
    kw_api_t *api;
    kw_arena_t *arena; /* strings of the pending revision */
    kw_update_t *ups;
    size_t n, cap;
    kw_revision_t cur;  /* revision of the pending batch (0: none) */
    kw_revision_t last; /* every revision <= last is applied */
    size_t delivered;
    int rc;
    kw_diag_t *diag;
} applier_t;

static int flush(applier_t *ap)
{
    if (ap->n == 0)
        return KW_OK;
    int rc = kw_api_apply(ap->api->engine, ap->ups, ap->n, ap->cur, ap->diag);
    if (rc != KW_OK) {
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "the engine refused the %zu changes of store revision %" PRIu64 ": %s", ap->n,
               (uint64_t)ap->cur, kw_err_name(rc));
        return rc;
    }
    ap->last = ap->cur;
    ap->n = 0;
    kw_arena_reset(ap->arena);
    kw__api_advance(ap->api, ap->last);
    return KW_OK;
}

static kw_str_t dup(kw_arena_t *a, kw_str_t s, bool *oom)
{
    char *p = kw_arena_strndup(a, s.ptr ? s.ptr : "", s.len);
    if (!p)
        *oom = true;
    return (kw_str_t){p, s.len};
}

static int on_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *rel, void *ud)
{
    applier_t *ap = ud;
    if (rev != ap->cur) {
        if ((ap->rc = flush(ap)) != KW_OK)
            return 1;
        /* Revisions between the last applied one and this were empty: a schema write
         * (or a write that changed no relationship). The schema goes first. */
        if (rev > ap->last + 1 && (ap->rc = schema_sync(ap->api, ap->diag)) != KW_OK)
            return 1;
        ap->cur = rev;
    }
    if (ap->n == ap->cap) {
        size_t cap = ap->cap ? ap->cap * 2 : 64;
        kw_update_t *p = kw_realloc(ap->ups, cap * sizeof(*p));
        if (!p) {
            ap->rc = KW_ENOMEM;
            return 1;
        }
        ap->ups = p;
        ap->cap = cap;
    }
    bool oom = false;
    kw_update_t *u = &ap->ups[ap->n];
    u->op = op;
    u->rel.resource.type = dup(ap->arena, rel->resource.type, &oom);
    u->rel.resource.id = dup(ap->arena, rel->resource.id, &oom);
    u->rel.relation = dup(ap->arena, rel->relation, &oom);
    u->rel.subject.type = dup(ap->arena, rel->subject.type, &oom);
    u->rel.subject.id = dup(ap->arena, rel->subject.id, &oom);
    u->rel.subject.relation = dup(ap->arena, rel->subject.relation, &oom);
    if (oom) {
        ap->rc = KW_ENOMEM;
        return 1;
    }
    ap->n++;
    ap->delivered++;
    return 0;
}

/* Under write_mu. KW_EUNSUPPORTED on SQLite (no changelog). */
static int catch_up_raw(kw_api_t *api, kw_diag_t *diag)
{
    applier_t ap;
    memset(&ap, 0, sizeof(ap));
    ap.api = api;
    ap.diag = diag;
    ap.arena = kw_arena_new(0);
    if (!ap.arena)
        return KW_ENOMEM;
    int rc;
    for (;;) {
        kw_revision_t upto = 0;
        ap.last = kw__api_applied(api);
        ap.cur = 0;
        ap.n = 0;
        ap.delivered = 0;
        ap.rc = KW_OK;
        kw_arena_reset(ap.arena);
        rc = kw_store_changes_since(api->store, ap.last, CATCH_UP_LIMIT, on_change, &ap, &upto,
                                    diag);
        if (rc == 1)
            rc = ap.rc;
        if (rc == KW_OK)
            rc = flush(&ap);
        if (rc == KW_OK && upto > ap.last) {
            /* Empty revisions at the end (a schema write, at most). */
            rc = schema_sync(api, diag);
            if (rc == KW_OK)
                kw__api_advance(api, upto);
        }
        if (rc != KW_OK || ap.delivered < CATCH_UP_LIMIT)
            break;
    }
    kw_free(ap.ups);
    kw_arena_free(ap.arena);
    /* Changes this graph lacks are gone from the changelog: stale until a full reload
     * (the follower's job, sync_locked). Not fresh from now on, whoever noticed. */
    if (rc == KW_EPRUNED)
        set_fresh(api, false);
    return rc;
}

int kw__api_catch_up(kw_api_t *api, kw_diag_t *diag)
{
    if (!api->follows)
        return KW_OK;
    return catch_up_raw(api, diag);
}

/* ---- resync: reloading the whole graph ---- */

/* kw_store_load_relationships as a kw_rel_feed_fn, remembering the snapshot's revision. */
typedef struct store_feed {
    kw_store_t *store;
    kw_revision_t rev;
} store_feed_t;

static int store_feed(void *ud, kw_rel_cb emit, void *emit_ud, kw_revision_t *rev)
{
    store_feed_t *f = ud;
    int rc = kw_store_load_relationships(f->store, emit, emit_ud, rev);
    if (rc == KW_OK)
        f->rev = *rev;
    return rc;
}

/* Can the routes work with `text`? Tried on a scratch engine, before it goes live. */
static int schema_usable(kw_str_t text, kw_diag_t *diag)
{
    kw_engine_t *probe = NULL;
    int rc = kw_engine_new(&probe);
    if (rc == KW_OK)
        rc = kw_engine_set_schema(probe, text, NULL, diag);
    if (rc == KW_OK)
        rc = kw_api_check_schema(probe, diag);
    kw_engine_free(probe);
    return rc;
}

/* Under write_mu, not fresh: replaces the graph with every stored relationship of one
 * snapshot (store revision R) in one swap, with the stored schema when it differs from
 * the one last seen (else the installed schema stays, as schema_sync does), then
 * advances applied_rev to R. The stored schema is read before AND after the snapshot:
 * if they differ, a schema write raced the reload and the text that belongs with R is
 * unknown, so it starts over (RESYNC_TRIES times, then KW_ECONFLICT). applied_rev moves
 * only on success, so a failed or abandoned reload is never taken for current: the next
 * catch-up says KW_EPRUNED again and lands here again. */
static int resync(kw_api_t *api, kw_diag_t *diag)
{
    int64_t t0 = kw__api_clock_ms();
    kw_buf_t before, after, original;
    kw_buf_init(&before);
    kw_buf_init(&after);
    kw_buf_init(&original);
    /* What to keep when the stored schema is the one already seen (an instance started
     * with --schema FILE keeps its file's schema, as schema_sync would). */
    int rc = kw_engine_schema_text(api->engine, &original);
    store_feed_t f = {api->store, 0};
    for (int i = 0; rc == KW_OK && i < RESYNC_TRIES; i++) {
        rc = stored_schema(api, &before);
        bool install = rc == KW_OK && before.len > 0 && !same_text(&before, &api->schema_seen);
        const kw_buf_t *want = install ? &before : &original;
        kw_str_t text = {want->ptr ? want->ptr : "", want->len};
        if (rc == KW_OK && install)
            rc = schema_usable(text, diag);
        if (rc == KW_OK)
            rc = kw_engine_replace_graph(api->engine, text, store_feed, &f, NULL, diag);
        if (rc == KW_OK)
            rc = stored_schema(api, &after);
        if (rc == KW_OK && !same_text(&before, &after))
            rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                             "the stored schema changed during the reload");
        if (rc == KW_OK && install) {
            api->schema_seen.len = 0;
            kw_buf_append(&api->schema_seen, before.ptr, before.len);
            if (api->schema_seen.failed)
                rc = KW_ENOMEM;
        }
        if (rc == KW_OK) {
            kw__api_advance(api, f.rev);
            break;
        }
        if (rc != KW_ECONFLICT)
            break;
        rc = KW_OK; /* try again */
        if (i + 1 == RESYNC_TRIES)
            rc = KW_ECONFLICT;
    }
    kw_buf_free(&before);
    kw_buf_free(&after);
    kw_buf_free(&original);
    if (rc != KW_OK)
        return rc;
    int64_t took = kw__api_clock_ms() - t0;
    atomic_fetch_add_explicit(&api->resyncs, 1, memory_order_relaxed);
    atomic_store_explicit(&api->last_resync_ms, (uint64_t)took, memory_order_relaxed);
    kw_log(KW_LOG_INFO, KW_MODULE,
           "reloaded %zu relationships at store revision %" PRIu64 " in %" PRId64 " ms",
           kw_engine_count(api->engine), (uint64_t)f.rev, took);
    return KW_OK;
}

/* Under write_mu: brings the graph to the store's current revision: a catch-up, or when
 * the changelog no longer reaches back to applied_rev, a full reload and a catch-up from
 * there (twice at most: pruning may overtake a slow reload on a tiny retention). */
static int sync_locked(kw_api_t *api, kw_diag_t *diag)
{
    int rc = catch_up_raw(api, diag);
    for (int i = 0; i < 2 && rc == KW_EPRUNED; i++) {
        if (!api->resync_warned) {
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "%s. This instance missed changes the changelog no longer holds (it was "
                   "paused or cut off from the database for longer than "
                   "KEYWARD_CHANGELOG_RETAIN_S=%ld s): reloading every relationship from the "
                   "database; not fresh (503 on data routes) until done. Raise "
                   "KEYWARD_CHANGELOG_RETAIN_S if such pauses are expected.",
                   diag && diag->msg[0] ? diag->msg : "behind the pruned changelog", api->retain_s);
            api->resync_warned = true;
        }
        rc = resync(api, diag);
        if (rc == KW_OK)
            rc = catch_up_raw(api, diag);
    }
    if (rc == KW_OK)
        api->resync_warned = false;
    return rc;
}

/* ---- freshness ---- */

bool kw_api_parse_revision(kw_str_t s, kw_revision_t *out)
{
    if (!s.ptr || s.len == 0 || s.len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.ptr[i] - '0'); /* 19 digits < 2^64: no overflow */
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = (kw_revision_t)v;
    return true;
}

bool kw__api_presented(kw_http_req_t *req, kw_revision_t *min)
{
    const char *h = kw_http_header(req, "X-Keyward-Revision");
    *min = 0;
    if (!h)
        return true;
    return kw_api_parse_revision(kw_str_c(h), min);
}

int kw__api_await(kw_api_t *api, kw_revision_t min, bool full)
{
    /* Not fresh: answered below at once, never after queueing on write_mu behind a resync
     * (which holds it for a whole reload). */
    if (full && api->follows && kw__api_is_fresh(api)) {
        kw_diag_t d;
        kw_diag_clear(&d);
        pthread_mutex_lock(&api->write_mu);
        int rc = kw__api_catch_up(api, &d);
        pthread_mutex_unlock(&api->write_mu);
        if (rc != KW_OK)
            return KW_EDB;
    }
    if (kw__api_is_fresh(api) && kw__api_applied(api) >= min)
        return KW_OK;
    if (min == 0) /* nothing presented: not fresh is an outage, answered at once */
        return KW_EDB;
    /* A revision beyond the store's current one has been committed by no instance: no wait
     * can reach it, so it is refused at once instead of holding a worker for freshness_ms
     * (issue 9, item 3). One cheap read, only for a revision ahead of the applied one; if
     * the store cannot answer, the wait below decides as before. */
    kw_revision_t committed = 0;
    if (kw_store_revision(api->store, &committed) == KW_OK && min > committed)
        return KW_EINVAL;
    struct timespec until = deadline_in(api->freshness_ms);
    pthread_mutex_lock(&api->rev_mu);
    while (!(kw__api_is_fresh(api) && kw__api_applied(api) >= min)) {
        if (pthread_cond_timedwait(&api->rev_cv, &api->rev_mu, &until) != 0)
            break; /* ETIMEDOUT */
    }
    bool fresh = kw__api_is_fresh(api);
    kw_revision_t at = kw__api_applied(api);
    pthread_mutex_unlock(&api->rev_mu);
    if (!fresh)
        return KW_EDB;
    return at >= min ? KW_OK : KW_ETIMEOUT;
}

bool kw__api_fresh(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp)
{
    kw_revision_t min = 0;
    if (!kw__api_presented(req, &min)) {
        kw_http_resp_error(resp, 422, KW__MSG_REV_BAD);
        return false;
    }
    int rc = kw__api_await(api, min, false);
    if (rc == KW_OK)
        return true;
    if (rc == KW_EINVAL) {
        kw_http_resp_error(resp, 422, KW__MSG_REV_AHEAD);
        return false;
    }
    if (rc == KW_ETIMEOUT) {
        kw_log(KW_LOG_INFO, KW_MODULE,
               "request %s: presented revision %" PRIu64 " not reached (at %" PRIu64 ")",
               req->request_id, (uint64_t)min, (uint64_t)kw__api_applied(api));
        kw_http_resp_error(resp, 503, KW__MSG_REV_LATE);
    } else {
        kw_http_resp_error(resp, 503, KW__MSG_DB);
    }
    return false;
}

/* ---- the follower ---- */

/* Sleeps ms unless stopped; true when stopping. */
static bool nap(kw__follower_t *fl, int ms)
{
    struct timespec until = deadline_in(ms);
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

/* Prunes when its turn has come (*next_ms, kw__api_clock_ms): batches of PRUNE_BATCH
 * rows for at most PRUNE_BUDGET_MS, then back to following; a backlog beyond that is
 * worked off on the next turns, which come at once until it is gone. Outside write_mu:
 * it touches only the changelog. */
static void prune_turn(kw_api_t *api, int64_t *next_ms)
{
    int64_t start = kw__api_clock_ms();
    if (start < *next_ms)
        return;
    int64_t interval_ms = (int64_t)api->prune_interval_s * 1000;
    *next_ms = start + interval_ms;
    for (;;) {
        size_t n = 0;
        kw_revision_t horizon = 0;
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc = kw_store_prune_changelog(api->store, (int64_t)api->retain_s * 1000000, PRUNE_BATCH,
                                          &n, &horizon, &d);
        if (rc == KW_ECONFLICT)
            return; /* another instance is on it; our next turn comes in interval_ms */
        if (rc != KW_OK) {
            kw_log(rc == KW_EDB ? KW_LOG_INFO : KW_LOG_WARN, KW_MODULE,
                   "changelog pruning skipped: %s (next turn in %ld s)",
                   d.msg[0] ? d.msg : kw_err_name(rc), api->prune_interval_s);
            return;
        }
        atomic_fetch_add_explicit(&api->changelog_pruned, n, memory_order_relaxed);
        atomic_store_explicit(&api->changelog_horizon, (uint64_t)horizon, memory_order_relaxed);
        if (n < PRUNE_BATCH)
            return;
        if (kw__api_clock_ms() - start >= PRUNE_BUDGET_MS) {
            *next_ms = 0; /* more to do: the next turn is the next loop */
            return;
        }
    }
}

static void *follower_main(void *arg)
{
    kw_api_t *api = arg;
    kw__follower_t *fl = api->follower;
    int backoff = BACKOFF_MIN_MS;
    int64_t next_prune = kw__api_clock_ms() + (int64_t)api->prune_interval_s * 1000;
    while (!stopping(fl)) {
        prune_turn(api, &next_prune);
        kw_revision_t latest = 0;
        bool logged = false;
        int rc = kw_store_wait_change(api->store, WAIT_MS, &latest);
        if (stopping(fl))
            break;
        if (rc == KW_OK)
            atomic_fetch_add_explicit(&api->wakeups, 1, memory_order_relaxed);
        if (rc == KW_OK || rc == KW_ETIMEOUT) {
            /* A NOTIFY for a revision already applied (typically our own write): nothing
             * to read, unless the lease wants renewing. A timeout is the 1 s poll: read
             * anyway (a lost notification). */
            if (rc == KW_OK && latest <= kw__api_applied(api) && kw__api_is_fresh(api) &&
                kw__api_clock_ms() - atomic_load(&api->synced_ms) < WAIT_MS)
                continue;
            kw_diag_t d;
            kw_diag_clear(&d);
            int64_t t0 = kw__api_clock_ms();
            pthread_mutex_lock(&api->write_mu);
            rc = sync_locked(api, &d);
            pthread_mutex_unlock(&api->write_mu);
            if (rc == KW_OK) {
                renew_lease(api, t0);
                set_fresh(api, true);
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
            set_fresh(api, false);
            break;
        }
        set_fresh(api, false);
        if (rc != KW_EDB && !logged)
            kw_log(KW_LOG_WARN, KW_MODULE, "follower: %s; retrying in %d ms", kw_err_name(rc),
                   backoff);
        if (nap(fl, backoff))
            break;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return NULL;
}

int kw_api_follow_start(kw_api_t *api, kw_revision_t loaded, kw_diag_t *diag)
{
    if (!api || api->follower)
        return KW_EINVAL;
    atomic_store_explicit(&api->applied_rev, (uint64_t)loaded, memory_order_release);
    atomic_store(&api->fresh, true);

    kw_arena_t *a = kw_arena_new(0);
    char *val = NULL;
    size_t len = 0;
    if (!a)
        return KW_ENOMEM;
    int rc = kw_store_meta_get(api->store, "schema", a, &val, &len);
    if (rc == KW_OK) {
        api->schema_seen.len = 0;
        kw_buf_append(&api->schema_seen, val, len);
        if (api->schema_seen.failed)
            rc = KW_ENOMEM;
    } else if (rc == KW_ENOTFOUND) {
        rc = KW_OK;
    }
    kw_arena_free(a);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the stored schema: %s", kw_strerror(rc));

    /* Anything committed between the load's snapshot and now (a full reload if the
     * changelog was pruned past the load's revision meanwhile); also tells the backends
     * apart (SQLite has no changelog). */
    int64_t t0 = kw__api_clock_ms();
    pthread_mutex_lock(&api->write_mu);
    rc = sync_locked(api, diag);
    pthread_mutex_unlock(&api->write_mu);
    if (rc == KW_EUNSUPPORTED) {
        api->follows = false;
        atomic_store(&api->fresh, true);
        return KW_OK;
    }
    if (rc != KW_OK)
        return rc;
    atomic_store(&api->fresh, true);
    atomic_store(&api->synced_ms, t0);
    api->follows = true;

    kw__follower_t *fl = kw_calloc(1, sizeof(*fl));
    if (!fl)
        return KW_ENOMEM;
    if (pthread_mutex_init(&fl->mu, NULL) != 0) {
        kw_free(fl);
        return KW_ENOMEM;
    }
    if (init_mono_cond(&fl->cv) != KW_OK) {
        pthread_mutex_destroy(&fl->mu);
        kw_free(fl);
        return KW_ENOMEM;
    }
    api->follower = fl;
    if (pthread_create(&fl->thread, NULL, follower_main, api) != 0) {
        api->follower = NULL;
        pthread_cond_destroy(&fl->cv);
        pthread_mutex_destroy(&fl->mu);
        kw_free(fl);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "cannot start the follower thread");
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "following the store from revision %" PRIu64,
           (uint64_t)kw__api_applied(api));
    return KW_OK;
}

void kw_api_follow_stop(kw_api_t *api)
{
    if (!api || !api->follower)
        return;
    kw__follower_t *fl = api->follower;
    pthread_mutex_lock(&fl->mu);
    fl->stop = true;
    pthread_cond_broadcast(&fl->cv);
    pthread_mutex_unlock(&fl->mu);
    pthread_join(fl->thread, NULL);
    pthread_cond_destroy(&fl->cv);
    pthread_mutex_destroy(&fl->mu);
    kw_free(fl);
    api->follower = NULL;
}
