/*
 * sync/catchup.c - bringing the graph to the store's revision: the changelog applier
 * (a catch-up), the full reload from one snapshot (at start, and on a resync), and the
 * wait for a presented revision.
 *
 * A catch-up (PostgreSQL only, under the write mutex): kw_store_changes_since(applied_rev)
 * -> each revision's changes applied as one engine batch -> applied_rev = upto -> waiters
 * woken. A revision without changes (a schema write) makes it re-read the stored schema
 * first (schema.c). SQLite has one instance per file and no changelog: applied_rev is
 * simply the revision of the last local commit.
 *
 * Retention and resync (tag-kw-changelog-retention): an instance whose applied_rev is
 * below the pruned horizon cannot catch up change by change: kw_store_changes_since says
 * KW_EPRUNED. It then logs one WARN, goes not fresh (503, as during an outage), and under
 * write_mu reloads every relationship from one snapshot into a NEW graph, swapped in whole
 * at the snapshot's revision together with the stored schema if that changed
 * (kw_engine_replace_graph: a reader never sees a half-built graph); then it catches up
 * from there as usual and is fresh again. A reload that fails (database down) leaves
 * applied_rev where it was, so the next attempt lands in the same place: stays not fresh
 * and retries with the follower's backoff. The load at start is the same reload
 * (load_graph), under the schema the caller chose.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "sync_int.h"

#define KW_MODULE "sync"
#define CATCH_UP_LIMIT 10000 /* changes per changes_since round */
#define RESYNC_TRIES 3       /* reloads in a row when a schema write races them */

int kw_sync_apply(kw_engine_t *engine, const kw_update_t *ups, size_t n, kw_revision_t rev,
                  kw_diag_t *diag)
{
    if (n == 0)
        return KW_OK;
    /* One engine batch for the whole revision, however large (an agent delete can remove
     * thousands of relationships): readers see all of a commit or none of it, never a
     * half-applied revision (which, under a schema with exclusions, could say yes).
     * The engine's revision follows the store's when it can; a schema swap may have moved
     * it past the store's, then it assigns its own next revision (ordering is still the
     * commit order: the caller holds the write mutex). */
    kw_revision_t at = rev > kw_engine_revision(engine) ? rev : 0;
    int rc = kw_engine_write(engine, ups, n, NULL, 0, at, NULL, diag);
    /* Snapshots are asked for by store revision (atExactSnapshot): the engine's change log
     * names this batch by it (authz/history.c). */
    if (rc == KW_OK)
        kw_engine_history_name(engine, rev);
    return rc;
}

int kw__sync_rel_copy(kw_arena_t *a, const kw_rel_t *src, kw_rel_t *out)
{
    kw_rel_t r;
    int rc = kw_rel_copy(a, src, &r);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat, &r.caveat);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat_ctx, &r.caveat_ctx);
    if (rc != KW_OK)
        return rc;
    r.expires_at = src->expires_at;
    *out = r;
    return KW_OK;
}

/* ---- catching up ---- */

typedef struct {
    kw_sync_t *s;
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
    int rc = kw_sync_apply(ap->s->engine, ap->ups, ap->n, ap->cur, ap->diag);
    if (rc != KW_OK) {
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "the engine refused the %zu changes of store revision %" PRIu64 ": %s", ap->n,
               (uint64_t)ap->cur, kw_err_name(rc));
        return rc;
    }
    ap->last = ap->cur;
    ap->n = 0;
    kw_arena_reset(ap->arena);
    kw__sync_advance(ap->s, ap->last);
    return KW_OK;
}

static int on_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *rel, void *ud)
{
    applier_t *ap = ud;
    if (rev != ap->cur) {
        if ((ap->rc = flush(ap)) != KW_OK)
            return 1;
        /* Revisions between the last applied one and this were empty: a schema write
         * (or a write that changed no relationship). The schema goes first. */
        if (rev > ap->last + 1 && (ap->rc = kw__sync_schema_follow(ap->s, ap->diag)) != KW_OK)
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
    kw_update_t *u = &ap->ups[ap->n];
    u->op = op;
    if ((ap->rc = kw__sync_rel_copy(ap->arena, rel, &u->rel)) != KW_OK)
        return 1;
    ap->n++;
    ap->delivered++;
    return 0;
}

int kw__sync_catch_up_raw(kw_sync_t *s, kw_diag_t *diag)
{
    applier_t ap;
    memset(&ap, 0, sizeof(ap));
    ap.s = s;
    ap.diag = diag;
    ap.arena = kw_arena_new(0);
    if (!ap.arena)
        return KW_ENOMEM;
    int rc;
    for (;;) {
        kw_revision_t upto = 0;
        ap.last = kw_sync_applied(s);
        ap.cur = 0;
        ap.n = 0;
        ap.delivered = 0;
        ap.rc = KW_OK;
        kw_arena_reset(ap.arena);
        rc = kw_store_changes_since(s->store, ap.last, CATCH_UP_LIMIT, on_change, &ap, &upto, diag);
        if (rc == 1)
            rc = ap.rc;
        if (rc == KW_OK)
            rc = flush(&ap);
        if (rc == KW_OK && upto > ap.last) {
            /* Empty revisions at the end (a schema write, at most). */
            rc = kw__sync_schema_follow(s, diag);
            if (rc == KW_OK)
                kw__sync_advance(s, upto);
        }
        if (rc != KW_OK || ap.delivered < CATCH_UP_LIMIT)
            break;
    }
    kw_free(ap.ups);
    kw_arena_free(ap.arena);
    /* Changes this graph lacks are gone from the changelog: stale until a full reload
     * (the follower's job, kw__sync_locked). Not fresh from now on, whoever noticed. */
    if (rc == KW_EPRUNED)
        kw__sync_set_fresh(s, false);
    return rc;
}

int kw_sync_catch_up(kw_sync_t *s, kw_diag_t *diag)
{
    if (!s->follows)
        return KW_OK;
    return kw__sync_catch_up_raw(s, diag);
}

/* ---- reloading the whole graph ---- */

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

/* Under write_mu (or before any other thread): the one way the whole graph is loaded.
 * Replaces it with every stored relationship of one snapshot (store revision R) in one
 * swap, under `text` (installed with it; empty: the installed schema stays); *rev = R.
 * applied_rev is NOT moved: the caller decides (a resync first checks the stored schema
 * did not change meanwhile). */
static int load_graph(kw_sync_t *s, kw_str_t text, kw_revision_t *rev, kw_diag_t *diag)
{
    store_feed_t f = {s->store, 0};
    int rc = kw_engine_replace_graph(s->engine, text, store_feed, &f, NULL, diag);
    if (rc == KW_OK)
        *rev = f.rev;
    return rc;
}

int kw_sync_load(kw_sync_t *s, kw_str_t text, kw_diag_t *diag)
{
    kw_revision_t rev = 0;
    pthread_mutex_lock(&s->write_mu);
    int rc = load_graph(s, text, &rev, diag);
    if (rc == KW_OK)
        kw__sync_advance(s, rev);
    pthread_mutex_unlock(&s->write_mu);
    return rc;
}

/* Under write_mu, not fresh: reloads the graph (load_graph), with the stored schema when
 * it differs from the one last seen (else the installed schema stays, as
 * kw__sync_schema_follow does), then advances applied_rev to the snapshot's R. The stored
 * schema is read before AND after the snapshot: if they differ, a schema write raced the
 * reload and the text that belongs with R is unknown, so it starts over (RESYNC_TRIES
 * times, then KW_ECONFLICT). applied_rev moves only on success, so a failed or abandoned
 * reload is never taken for current: the next catch-up says KW_EPRUNED again and lands
 * here again. */
static int resync(kw_sync_t *s, kw_diag_t *diag)
{
    int64_t t0 = kw__sync_clock_ms();
    kw_buf_t before, after, original;
    kw_buf_init(&before);
    kw_buf_init(&after);
    kw_buf_init(&original);
    /* What to keep when the stored schema is the one already seen (an instance started
     * with --schema FILE keeps its file's schema, as kw__sync_schema_follow would). */
    int rc = kw_engine_schema_text(s->engine, &original);
    kw_revision_t rev = 0;
    for (int i = 0; rc == KW_OK && i < RESYNC_TRIES; i++) {
        rc = kw_sync_stored_schema(s, &before);
        bool install =
            rc == KW_OK && before.len > 0 && !kw__sync_same_text(&before, &s->schema_seen);
        const kw_buf_t *want = install ? &before : &original;
        kw_str_t text = {want->ptr ? want->ptr : "", want->len};
        if (rc == KW_OK && install)
            rc = kw_sync_schema_try(s, text, diag);
        if (rc == KW_OK)
            rc = load_graph(s, text, &rev, diag);
        if (rc == KW_OK)
            rc = kw_sync_stored_schema(s, &after);
        if (rc == KW_OK && !kw__sync_same_text(&before, &after))
            rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                             "the stored schema changed during the reload");
        if (rc == KW_OK && install)
            rc = kw__sync_remember_schema(s, text);
        if (rc == KW_OK) {
            kw__sync_advance(s, rev);
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
    int64_t took = kw__sync_clock_ms() - t0;
    atomic_fetch_add_explicit(&s->resyncs, 1, memory_order_relaxed);
    atomic_store_explicit(&s->last_resync_ms, (uint64_t)took, memory_order_relaxed);
    kw_log(KW_LOG_INFO, KW_MODULE,
           "reloaded %zu relationships at store revision %" PRIu64 " in %" PRId64 " ms",
           kw_engine_count(s->engine), (uint64_t)rev, took);
    return KW_OK;
}

/* A catch-up, and when the changelog no longer reaches back to applied_rev, a full reload
 * and a catch-up from there (twice at most: pruning may overtake a slow reload on a tiny
 * retention). */
int kw__sync_locked(kw_sync_t *s, kw_diag_t *diag)
{
    int rc = kw__sync_catch_up_raw(s, diag);
    for (int i = 0; i < 2 && rc == KW_EPRUNED; i++) {
        if (!s->resync_warned) {
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "%s. This instance missed changes the changelog no longer holds (it was "
                   "paused or cut off from the database for longer than "
                   "KEYWARD_CHANGELOG_RETAIN_S=%ld s): reloading every relationship from the "
                   "database; not fresh (503 on data routes) until done. Raise "
                   "KEYWARD_CHANGELOG_RETAIN_S if such pauses are expected.",
                   diag && diag->msg[0] ? diag->msg : "behind the pruned changelog", s->retain_s);
            s->resync_warned = true;
        }
        rc = resync(s, diag);
        if (rc == KW_OK)
            rc = kw__sync_catch_up_raw(s, diag);
    }
    if (rc == KW_OK)
        s->resync_warned = false;
    return rc;
}

/* ---- waiting for a revision ---- */

int kw_sync_freshness_ms(kw_sync_t *s)
{
    return s->freshness_ms;
}

int kw_sync_poll(kw_sync_t *s, kw_revision_t min, bool full)
{
    /* Not fresh: answered below at once, never after queueing on write_mu behind a resync
     * (which holds it for a whole reload). */
    if (full && s->follows && kw_sync_is_fresh(s)) {
        kw_diag_t d;
        kw_diag_clear(&d);
        pthread_mutex_lock(&s->write_mu);
        int rc = kw_sync_catch_up(s, &d);
        pthread_mutex_unlock(&s->write_mu);
        if (rc != KW_OK)
            return KW_EDB;
    }
    if (kw_sync_is_fresh(s) && kw_sync_applied(s) >= min)
        return KW_OK;
    if (min == 0) /* nothing presented: not fresh is an outage, answered at once */
        return KW_EDB;
    /* A revision beyond the store's current one has been committed by no instance: no wait
     * can reach it, so it is refused at once instead of holding a worker for freshness_ms
     * (issue 9, item 3). One cheap read, only for a revision ahead of the applied one; if
     * the store cannot answer, the wait below decides as before. */
    kw_revision_t committed = 0;
    if (kw_store_revision(s->store, &committed) == KW_OK && min > committed)
        return KW_EINVAL;
    return KW_EAGAIN;
}

int kw_sync_await(kw_sync_t *s, kw_revision_t min, bool full)
{
    int rc = kw_sync_poll(s, min, full);
    if (rc != KW_EAGAIN)
        return rc;
    struct timespec until = kw__sync_deadline_in(s->freshness_ms);
    pthread_mutex_lock(&s->rev_mu);
    while (!(kw_sync_is_fresh(s) && kw_sync_applied(s) >= min)) {
        if (pthread_cond_timedwait(&s->rev_cv, &s->rev_mu, &until) != 0)
            break; /* ETIMEDOUT */
    }
    bool fresh = kw_sync_is_fresh(s);
    kw_revision_t at = kw_sync_applied(s);
    pthread_mutex_unlock(&s->rev_mu);
    if (!fresh)
        return KW_EDB;
    return at >= min ? KW_OK : KW_ETIMEOUT;
}
