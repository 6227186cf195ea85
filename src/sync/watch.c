/*
 * sync/watch.c - the watch hub: every committed relationship change after a revision,
 * for /v1 Watch, from the store's watch feed (the changelog of either backend), first
 * what a watcher missed, then live (sync.h, "Watch").
 *
 * Shapes:
 *   - an entry is one change at one revision, copied once into one allocation and shared
 *     (refcounted under the hub's mutex) by the queues of every live watcher it passes;
 *   - a watcher is the state of one kw_watch_run, on that caller's stack. It is either
 *     catching up (reading the feed itself, in rounds, from its own position) or live (in
 *     the hub's list, fed by the hub thread through its queue);
 *   - the hub thread reads the feed from the hub's position `pos` (every revision <= pos
 *     has been queued to every live watcher), outside the mutex, then, under it, queues
 *     each change to each live watcher whose position is below the change's revision and
 *     whose filter it passes, and moves every live watcher's position to the round's end.
 * A catching-up watcher joins the live list when its position is >= the hub's (then no
 * revision can fall between the two: the hub only queues revisions above the watcher's
 * position), or when no watcher is live (the hub then starts at its position); in both
 * cases only after a catch-up round that was not full, so what a live queue receives is
 * what was committed since, never a backlog.
 *
 * Lock: `mu` guards everything in the hub and in every watcher reachable from it (queue,
 * position, error, live flag). It is a leaf: no other lock is taken under it and neither
 * a store read nor an emit runs under it. cv wakes the hub thread; each watcher has a cv
 * for its queue; idle_cv tells kw_watch_hub_stop that the last watch has left.
 */
#include "sync_int.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

#define KW_MODULE "watch"

typedef struct entry {
    struct entry *next; /* in a staging or catch-up list */
    unsigned refs;      /* under the hub's mutex once shared */
    kw_revision_t rev;
    kw_update_t up; /* strings point just past the struct */
    size_t bytes;
} entry_t;

typedef struct qnode {
    struct qnode *next;
    entry_t *e;
} qnode_t;

typedef struct watcher {
    struct watcher *next; /* in the hub's live list */
    const kw_watch_filter_t *f;
    kw_revision_t pos; /* live: queued through; catching up: read through */
    bool live;
    int err; /* set by the hub: KW_ELIMIT (cut off), KW_EPRUNED, KW_EDB ... */
    qnode_t *head, *tail;
    size_t n_q, bytes_q;
    pthread_cond_t cv;
} watcher_t;

struct kw_watch_hub {
    kw_store_t *store;
    kw_watch_config_t cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* wakes the hub thread */
    pthread_cond_t idle_cv; /* n_running reached 0 */
    pthread_t thread;
    bool started, stop, poked;
    kw_revision_t pos;
    watcher_t *live;
    size_t n_live, n_running;
};

void kw_watch_config_default(kw_watch_config_t *cfg)
{
    cfg->buffer_changes = KW_WATCH_BUFFER_CHANGES;
    cfg->buffer_bytes = KW_WATCH_BUFFER_BYTES;
    cfg->poll_ms = KW_WATCH_POLL_MS;
    cfg->tick_ms = KW_WATCH_TICK_MS;
    cfg->round_changes = KW_WATCH_ROUND_CHANGES;
    cfg->max_watchers = KW_WATCH_MAX_WATCHERS;
}

/* ---- entries ---- */

static void put_str(char **p, kw_str_t in, kw_str_t *out)
{
    out->ptr = *p;
    out->len = in.len;
    if (in.len)
        memcpy(*p, in.ptr, in.len);
    (*p)[in.len] = '\0';
    *p += in.len + 1;
}

static entry_t *entry_new(kw_revision_t rev, kw_op_t op, const kw_rel_t *r)
{
    const kw_str_t in[] = {r->resource.type, r->resource.id,      r->relation, r->subject.type,
                           r->subject.id,    r->subject.relation, r->caveat,   r->caveat_ctx};
    size_t n = sizeof(entry_t);
    for (size_t i = 0; i < KW_ARRAY_LEN(in); i++)
        n += in[i].len + 1;
    entry_t *e = kw_malloc(n);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->refs = 1;
    e->rev = rev;
    e->bytes = n;
    e->up.op = op;
    e->up.rel.expires_at = r->expires_at;
    char *p = (char *)(e + 1);
    kw_rel_t *o = &e->up.rel;
    kw_str_t *out[] = {&o->resource.type, &o->resource.id,      &o->relation, &o->subject.type,
                       &o->subject.id,    &o->subject.relation, &o->caveat,   &o->caveat_ctx};
    for (size_t i = 0; i < KW_ARRAY_LEN(in); i++)
        put_str(&p, in[i], out[i]);
    return e;
}

static void entry_unref(entry_t *e)
{
    if (e && --e->refs == 0)
        kw_free(e);
}

static void list_free(entry_t *e)
{
    while (e) {
        entry_t *next = e->next;
        entry_unref(e);
        e = next;
    }
}

/* ---- filters ---- */

static bool no_rel(kw_str_t r)
{
    return r.len == 0 || kw_str_eq(r, KW_STR("..."));
}

static bool filter_passes(const kw_filter_t *f, kw_str_t prefix, const kw_rel_t *r)
{
    if (f->resource_type.len && !kw_str_eq(f->resource_type, r->resource.type))
        return false;
    if (f->resource_id.len && !kw_str_eq(f->resource_id, r->resource.id))
        return false;
    if (prefix.len &&
        (r->resource.id.len < prefix.len || memcmp(r->resource.id.ptr, prefix.ptr, prefix.len)))
        return false;
    if (f->relation.len && !kw_str_eq(f->relation, r->relation))
        return false;
    if (!f->has_subject)
        return true;
    if (f->subject_type.len && !kw_str_eq(f->subject_type, r->subject.type))
        return false;
    if (f->subject_id.len && !kw_str_eq(f->subject_id, r->subject.id))
        return false;
    if (f->subject_relation_set) {
        if (no_rel(f->subject_relation) ? !no_rel(r->subject.relation)
                                        : !kw_str_eq(f->subject_relation, r->subject.relation))
            return false;
    }
    return true;
}

bool kw_watch_filter_passes(const kw_watch_filter_t *f, const kw_rel_t *r)
{
    if (!f)
        return true;
    if (f->n_object_types) {
        bool any = false;
        for (size_t i = 0; i < f->n_object_types && !any; i++)
            any = kw_str_eq(f->object_types[i], r->resource.type);
        if (!any)
            return false;
    }
    if (f->n_filters == 0)
        return true;
    for (size_t i = 0; i < f->n_filters; i++)
        if (filter_passes(&f->filters[i], f->id_prefixes ? f->id_prefixes[i] : KW_STR_NULL, r))
            return true;
    return false;
}

/* ---- the hub thread ---- */

typedef struct stage {
    entry_t *head, *tail;
    size_t n;                   /* staged */
    size_t n_all;               /* read from the feed, filtered out or not */
    const kw_watch_filter_t *f; /* catch-up: only what passes is kept */
    size_t max_n, max_bytes;    /* catch-up: the watcher's bound per revision (0: none) */
    kw_revision_t rev;          /* catch-up: the revision being staged */
    size_t rev_n, rev_bytes;    /* ... and what it holds so far */
} stage_t;

static int on_feed(kw_revision_t rev, kw_op_t op, const kw_rel_t *rel, void *ud)
{
    stage_t *st = ud;
    st->n_all++;
    if (st->f && !kw_watch_filter_passes(st->f, rel))
        return KW_OK;
    entry_t *e = entry_new(rev, op, rel);
    if (!e)
        return KW_ENOMEM;
    if (st->tail)
        st->tail->next = e;
    else
        st->head = e;
    st->tail = e;
    st->n++;
    if (rev != st->rev) {
        st->rev = rev;
        st->rev_n = st->rev_bytes = 0;
    }
    st->rev_n++;
    st->rev_bytes += e->bytes;
    /* A round holds at most round_changes plus one revision; one revision larger than the
     * watcher's buffer could not be queued live either. */
    if (st->max_n && (st->rev_n > st->max_n || st->rev_bytes > st->max_bytes))
        return KW_ELIMIT;
    return KW_OK;
}

static void queue_clear(watcher_t *w)
{
    while (w->head) {
        qnode_t *q = w->head;
        w->head = q->next;
        entry_unref(q->e);
        kw_free(q);
    }
    w->tail = NULL;
    w->n_q = w->bytes_q = 0;
}

/* Under mu: takes w out of the live list with error rc (its queue is dropped). */
static void drop_live(kw_watch_hub_t *h, watcher_t *w, int rc)
{
    for (watcher_t **pp = &h->live; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            h->n_live--;
            break;
        }
    }
    w->next = NULL;
    w->live = false;
    if (!w->err)
        w->err = rc;
    queue_clear(w);
    pthread_cond_signal(&w->cv);
}

/* Under mu: queues the staged round (revisions through upto) to every live watcher. */
static void dispatch(kw_watch_hub_t *h, const stage_t *st, kw_revision_t upto)
{
    watcher_t *w = h->live;
    while (w) {
        watcher_t *next = w->next;
        int rc = KW_OK;
        size_t added = 0;
        for (entry_t *e = st->head; e && rc == KW_OK; e = e->next) {
            if (e->rev <= w->pos || !kw_watch_filter_passes(w->f, &e->up.rel))
                continue;
            if (w->n_q + 1 > h->cfg.buffer_changes || w->bytes_q + e->bytes > h->cfg.buffer_bytes) {
                rc = KW_ELIMIT;
                break;
            }
            qnode_t *q = kw_malloc(sizeof(*q));
            if (!q) {
                rc = KW_ENOMEM;
                break;
            }
            q->next = NULL;
            q->e = e;
            e->refs++;
            if (w->tail)
                w->tail->next = q;
            else
                w->head = q;
            w->tail = q;
            w->n_q++;
            w->bytes_q += e->bytes;
            added++;
        }
        if (rc != KW_OK) {
            kw_log(KW_LOG_WARN, KW_MODULE, "a watcher fell %zu changes behind: cut off", w->n_q);
            drop_live(h, w, rc);
        } else {
            if (upto > w->pos)
                w->pos = upto;
            if (added)
                pthread_cond_signal(&w->cv);
        }
        w = next;
    }
    if (upto > h->pos)
        h->pos = upto;
}

static void abs_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *hub_main(void *arg)
{
    kw_watch_hub_t *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        if (!h->poked) {
            if (h->n_live == 0) {
                pthread_cond_wait(&h->cv, &h->mu);
            } else {
                struct timespec ts;
                abs_deadline(&ts, h->cfg.poll_ms);
                pthread_cond_timedwait(&h->cv, &h->mu, &ts);
            }
        }
        if (h->stop)
            break;
        h->poked = false;
        if (h->n_live == 0)
            continue;
        kw_revision_t after = h->pos, upto = 0;
        pthread_mutex_unlock(&h->mu);

        stage_t st = {0};
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc =
            kw_store_watch_changes(h->store, after, h->cfg.round_changes, on_feed, &st, &upto, &d);
        pthread_mutex_lock(&h->mu);
        if (rc == KW_OK && h->pos != after) {
            /* Every watcher left meanwhile and a new one restarted the hub at its own
             * position: this round may begin past it. Read again from there. */
            h->poked = true;
        } else if (rc == KW_OK) {
            dispatch(h, &st, upto);
            if (st.n >= h->cfg.round_changes)
                h->poked = true; /* a full round: more may be waiting */
        } else {
            kw_log(KW_LOG_WARN, KW_MODULE, "watch feed: %s: %s", kw_err_name(rc),
                   d.msg[0] ? d.msg : kw_strerror(rc));
            while (h->live)
                drop_live(h, h->live, rc);
        }
        list_free(st.head); /* the hub's own references */
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- lifecycle ---- */

int kw_watch_hub_new(kw_store_t *store, const kw_watch_config_t *cfg, kw_watch_hub_t **out)
{
    if (!store || !out)
        return KW_EINVAL;
    kw_watch_hub_t *h = kw_calloc(1, sizeof(*h));
    if (!h)
        return KW_ENOMEM;
    h->store = store;
    if (cfg)
        h->cfg = *cfg;
    else
        kw_watch_config_default(&h->cfg);
    if (h->cfg.buffer_changes == 0 || h->cfg.buffer_bytes == 0 || h->cfg.poll_ms <= 0 ||
        h->cfg.tick_ms <= 0 || h->cfg.round_changes == 0) {
        kw_free(h);
        return KW_EINVAL;
    }
    if (pthread_mutex_init(&h->mu, NULL) != 0)
        goto fail_mu;
    if (kw__sync_cond_init(&h->cv) != KW_OK)
        goto fail_cv;
    if (kw__sync_cond_init(&h->idle_cv) != KW_OK)
        goto fail_idle;
    /* The thread takes no signal: the process's (SIGTERM's sigwait in cli/serve.c) must
     * not land here, whenever the hub is made. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int prc = pthread_create(&h->thread, NULL, hub_main, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0)
        goto fail_thread;
    h->started = true;
    *out = h;
    return KW_OK;

fail_thread:
    pthread_cond_destroy(&h->idle_cv);
fail_idle:
    pthread_cond_destroy(&h->cv);
fail_cv:
    pthread_mutex_destroy(&h->mu);
fail_mu:
    kw_free(h);
    return KW_ENOMEM;
}

void kw_watch_hub_poke(kw_watch_hub_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->poked = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void kw_watch_hub_stop(kw_watch_hub_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->cv);
    while (h->live)
        drop_live(h, h->live, KW_EAGAIN);
    while (h->n_running > 0)
        pthread_cond_wait(&h->idle_cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

void kw_watch_hub_free(kw_watch_hub_t *h)
{
    if (!h)
        return;
    kw_watch_hub_stop(h);
    if (h->started)
        pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->idle_cv);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    kw_free(h);
}

/* ---- one watch ---- */

/* Emits a list of whole revisions, one event per revision. */
static int emit_list(entry_t *head, kw_watch_emit_fn emit, void *ud, kw_update_t **buf, size_t *cap)
{
    int rc = KW_OK;
    for (entry_t *e = head; e && rc == KW_OK;) {
        size_t n = 0;
        kw_revision_t rev = e->rev;
        for (; e && e->rev == rev; e = e->next) {
            rc = kw_grow((void **)buf, cap, n + 1, sizeof(**buf));
            if (rc != KW_OK)
                return rc;
            (*buf)[n++] = e->up;
        }
        kw_watch_event_t ev = {rev, *buf, n, false};
        rc = emit(ud, &ev);
    }
    return rc;
}

/* Catch-up: one round from the feed at w->pos, emitted outside any lock. *at_end: the
 * round was not full, so it reached what the store had committed when it read. */
static int catch_up_round(kw_watch_hub_t *h, watcher_t *w, kw_watch_emit_fn emit, void *ud,
                          kw_update_t **buf, size_t *cap, bool *at_end, kw_diag_t *diag)
{
    stage_t st = {0};
    st.f = w->f;
    st.max_n = h->cfg.buffer_changes;
    st.max_bytes = h->cfg.buffer_bytes;
    kw_revision_t upto = 0;
    int rc =
        kw_store_watch_changes(h->store, w->pos, h->cfg.round_changes, on_feed, &st, &upto, diag);
    if (rc == KW_OK)
        rc = emit_list(st.head, emit, ud, buf, cap);
    list_free(st.head);
    if (rc == KW_OK && upto > w->pos)
        w->pos = upto;
    *at_end = rc == KW_OK && st.n_all < h->cfg.round_changes;
    return rc;
}

/* Live: waits for the front revision of w's queue (or a tick) and emits it. */
static int live_step(kw_watch_hub_t *h, watcher_t *w, kw_watch_emit_fn emit, void *ud,
                     kw_update_t **buf, size_t *cap)
{
    pthread_mutex_lock(&h->mu);
    struct timespec ts;
    abs_deadline(&ts, h->cfg.tick_ms);
    int wrc = 0;
    while (!w->head && !w->err && !h->stop && wrc != ETIMEDOUT)
        wrc = pthread_cond_timedwait(&w->cv, &h->mu, &ts);
    if (w->err || h->stop) {
        int rc = w->err ? w->err : KW_EAGAIN;
        pthread_mutex_unlock(&h->mu);
        return rc;
    }
    if (!w->head) { /* quiet: a checkpoint at the position */
        kw_watch_event_t ev = {w->pos, NULL, 0, true};
        pthread_mutex_unlock(&h->mu);
        return emit(ud, &ev);
    }
    /* Detach the front revision's nodes. */
    kw_revision_t rev = w->head->e->rev;
    qnode_t *first = w->head, *last = NULL;
    size_t n = 0;
    int rc = KW_OK;
    for (qnode_t *q = w->head; q && q->e->rev == rev; q = q->next) {
        last = q;
        n++;
        w->n_q--;
        w->bytes_q -= q->e->bytes;
    }
    w->head = last->next;
    if (!w->head)
        w->tail = NULL;
    last->next = NULL;
    pthread_mutex_unlock(&h->mu);

    rc = kw_grow((void **)buf, cap, n, sizeof(**buf));
    size_t i = 0;
    for (qnode_t *q = first; q && rc == KW_OK; q = q->next)
        (*buf)[i++] = q->e->up;
    if (rc == KW_OK) {
        kw_watch_event_t ev = {rev, *buf, n, false};
        rc = emit(ud, &ev);
    }
    pthread_mutex_lock(&h->mu);
    while (first) {
        qnode_t *q = first;
        first = q->next;
        entry_unref(q->e);
        kw_free(q);
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static int fail_msg(int rc, kw_revision_t after, kw_diag_t *diag)
{
    switch (rc) {
    case KW_ELIMIT:
        return kw_diag_set(diag, rc, 0, 0,
                           "watch fell too far behind and was disconnected; consider increasing "
                           "the watch buffer (or reading faster)");
    case KW_EPRUNED:
        return kw_diag_set(diag, rc, 0, 0,
                           "the changes after revision %llu are no longer kept; start the watch "
                           "from a newer token",
                           (unsigned long long)after);
    case KW_EAGAIN:
        return kw_diag_set(diag, rc, 0, 0, "the server is shutting down");
    case KW_EDB:
        return kw_diag_set(diag, rc, 0, 0, "the database is unavailable");
    default:
        return rc;
    }
}

int kw_watch_run(kw_watch_hub_t *h, kw_revision_t after, const kw_watch_filter_t *filter,
                 kw_watch_emit_fn emit, void *ud, kw_diag_t *diag)
{
    if (!h || !emit)
        return KW_EINVAL;
    watcher_t w;
    memset(&w, 0, sizeof(w));
    w.f = filter;
    w.pos = after;
    if (kw__sync_cond_init(&w.cv) != KW_OK)
        return KW_ENOMEM;
    pthread_mutex_lock(&h->mu);
    if (h->stop) {
        pthread_mutex_unlock(&h->mu);
        pthread_cond_destroy(&w.cv);
        return fail_msg(KW_EAGAIN, after, diag);
    }
    if (h->cfg.max_watchers && h->n_running >= h->cfg.max_watchers) {
        size_t n = h->n_running;
        pthread_mutex_unlock(&h->mu);
        pthread_cond_destroy(&w.cv);
        return kw_diag_set(diag, KW_EBUDGET, 0, 0,
                           "too many watches at once (%zu): each holds a server thread; retry "
                           "later",
                           n);
    }
    h->n_running++;
    pthread_mutex_unlock(&h->mu);

    kw_update_t *buf = NULL;
    size_t cap = 0;
    int rc = KW_OK;
    bool at_end = false; /* the last catch-up round reached the store's end */
    kw_diag_t d;
    kw_diag_clear(&d);
    while (rc == KW_OK) {
        pthread_mutex_lock(&h->mu);
        if (w.err) {
            rc = w.err; /* cut off by the hub (while the last event was being emitted) */
        } else if (h->stop) {
            rc = KW_EAGAIN;
        } else if (!w.live && at_end && (h->n_live == 0 || w.pos >= h->pos)) {
            if (h->n_live == 0)
                h->pos = w.pos;
            w.live = true;
            w.next = h->live;
            h->live = &w;
            h->n_live++;
            h->poked = true; /* read at once: something may be past the position */
            pthread_cond_signal(&h->cv);
        }
        bool live = w.live;
        pthread_mutex_unlock(&h->mu);
        if (rc != KW_OK)
            break;
        if (live)
            rc = live_step(h, &w, emit, ud, &buf, &cap);
        else
            rc = catch_up_round(h, &w, emit, ud, &buf, &cap, &at_end, &d);
    }
    pthread_mutex_lock(&h->mu);
    if (w.live)
        drop_live(h, &w, rc);
    queue_clear(&w);
    h->n_running--;
    if (h->n_running == 0)
        pthread_cond_broadcast(&h->idle_cv);
    pthread_mutex_unlock(&h->mu);
    pthread_cond_destroy(&w.cv);
    kw_free(buf);
    if (rc == KW_EPRUNED || rc == KW_ELIMIT || rc == KW_EAGAIN || rc == KW_EDB)
        return fail_msg(rc, after, diag);
    if (d.msg[0])
        return kw_diag_set(diag, rc, 0, 0, "%s", d.msg);
    return rc;
}
