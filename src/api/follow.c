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
 * Threads: the follower is one thread per process; its stop flag and sleep are under
 * fl->mu. applied_rev/fresh are atomics; rev_mu/rev_cv only carry the wake-ups.
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

/* ---- state ---- */

int kw__api_coherence_init(kw_api_t *api)
{
    atomic_store(&api->applied_rev, 0);
    atomic_store(&api->fresh, true);
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
               "database unreachable or graph not caught up: not fresh (503 on graph routes)");
    else if (!was && fresh)
        kw_log(KW_LOG_INFO, KW_MODULE, "caught up at store revision %" PRIu64 ": fresh again",
               (uint64_t)kw__api_applied(api));
}

kw_revision_t kw_api_applied_revision(kw_api_t *api)
{
    return kw__api_applied(api);
}

bool kw_api_is_fresh(kw_api_t *api)
{
    return atomic_load(&api->fresh);
}

/* ---- schema ---- */

/* Under write_mu: installs the stored schema when it differs from the one last seen. */
static int schema_sync(kw_api_t *api, kw_diag_t *diag)
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
    if (rc == KW_OK && len > 0 &&
        !(len == api->schema_seen.len && memcmp(val, api->schema_seen.ptr, len) == 0)) {
        kw_revision_t applied = kw__api_applied(api);
        rc = kw_engine_set_schema(api->engine, (kw_str_t){val, len}, NULL, diag);
        if (rc == KW_OK)
            rc = kw_api_check_schema(api->engine, diag);
        if (rc == KW_OK) {
            api->schema_seen.len = 0;
            kw_buf_append(&api->schema_seen, val, len);
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
    kw_arena_free(a);
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
    return rc;
}

int kw__api_catch_up(kw_api_t *api, kw_diag_t *diag)
{
    if (!api->follows)
        return KW_OK;
    return catch_up_raw(api, diag);
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
    if (full && api->follows) {
        kw_diag_t d;
        kw_diag_clear(&d);
        pthread_mutex_lock(&api->write_mu);
        int rc = kw__api_catch_up(api, &d);
        pthread_mutex_unlock(&api->write_mu);
        if (rc != KW_OK)
            return KW_EDB;
    }
    if (atomic_load(&api->fresh) && kw__api_applied(api) >= min)
        return KW_OK;
    if (min == 0) /* nothing presented: not fresh is an outage, answered at once */
        return KW_EDB;
    struct timespec until = deadline_in(api->freshness_ms);
    pthread_mutex_lock(&api->rev_mu);
    while (!(atomic_load(&api->fresh) && kw__api_applied(api) >= min)) {
        if (pthread_cond_timedwait(&api->rev_cv, &api->rev_mu, &until) != 0)
            break; /* ETIMEDOUT */
    }
    bool fresh = atomic_load(&api->fresh);
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

static void *follower_main(void *arg)
{
    kw_api_t *api = arg;
    kw__follower_t *fl = api->follower;
    int backoff = BACKOFF_MIN_MS;
    while (!stopping(fl)) {
        kw_revision_t latest = 0;
        int rc = kw_store_wait_change(api->store, WAIT_MS, &latest);
        if (stopping(fl))
            break;
        if (rc == KW_OK || rc == KW_ETIMEOUT) {
            /* A NOTIFY for a revision already applied (typically our own write): nothing
             * to read. A timeout is the 1 s poll: read anyway (a lost notification). */
            if (rc == KW_OK && latest <= kw__api_applied(api) && atomic_load(&api->fresh))
                continue;
            kw_diag_t d;
            kw_diag_clear(&d);
            pthread_mutex_lock(&api->write_mu);
            rc = kw__api_catch_up(api, &d);
            pthread_mutex_unlock(&api->write_mu);
            if (rc == KW_OK) {
                set_fresh(api, true);
                backoff = BACKOFF_MIN_MS;
                continue;
            }
        }
        if (rc == KW_EUNSUPPORTED) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "the store cannot be followed: follower stopped");
            set_fresh(api, false);
            break;
        }
        set_fresh(api, false);
        if (rc != KW_EDB)
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
        return kw_diag_set(diag, rc, 0, 0, "cannot read the stored schema: %s",
                           kw_strerror(rc));

    /* Anything committed between the load's snapshot and now; also tells the backends
     * apart (SQLite has no changelog). */
    pthread_mutex_lock(&api->write_mu);
    rc = catch_up_raw(api, diag);
    pthread_mutex_unlock(&api->write_mu);
    if (rc == KW_EUNSUPPORTED) {
        api->follows = false;
        return KW_OK;
    }
    if (rc != KW_OK)
        return rc;
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
