/*
 * authz/history.c - answers as of an older revision (authz.h, "answers as of an older
 * revision"): the bounded log of applied changes, each with what it replaced, and the
 * snapshot engines materialized from it, cached LRU.
 *
 * The log: every write batch and delete-by-filter (write.c) hands its changes here, each
 * with the relationship's state before the batch (absent, or stored with its caveat,
 * context and expiry), captured under the write lock before the batch is applied. A batch
 * is one allocation (the changes, then their strings). Trimmed after every push to the
 * changes applied in the last window_us and at most max_changes changes, whole batches
 * oldest first; `base` is then the oldest revision the log can rebuild (the revision of
 * the last batch dropped: its prior states went with it). A batch larger than the whole
 * window is not captured (the log restarts after it), nor is one whose copy fails to
 * allocate. A schema swap or a whole-graph replacement (swap.c) restarts the log too: its
 * undo would be a whole graph.
 *
 * A snapshot at revision R: a new engine under the same schema text, filled (through
 * kw_engine_replace_graph's feed) with every live relationship of the current graph. Under
 * the live engine's read lock only a compact copy is taken (every live node's id once, each
 * edge as 12 bytes of indices, the attributes of those that have them) together with deep
 * copies of the batches newer than R; the relationships are rebuilt from it and the new
 * graph built after the lock is released, so writers wait for the copy only;
 * then those batches are undone newest first on the new engine (each change restores its
 * prior state: TOUCH it back, or DELETE it), and its revision is set to R. Expired
 * relationships are left out of the copy: an expiry is judged at query time, and a later
 * query is later still. The snapshot never changes again, so it is answered from without
 * any lock of the live engine and without blocking its writers, and cached: at most
 * max_cache of them and max_cache_bytes in all, the least recently used dropped first
 * (a dropped one lives on while a reader holds it; refcounted).
 */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "authz/engine_int.h"

struct kw_snapshot {
    kw_engine_t *e;
    kw_revision_t rev;
    atomic_int refs;
    uint64_t used; /* LRU tick, under the history's mu */
    size_t bytes;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int kw__hist_init(kw_history_t *h)
{
    memset(h, 0, sizeof(*h));
    h->base_why = "the engine was created";
    if (pthread_mutex_init(&h->mu, NULL) != 0)
        return KW_ENOMEM;
    h->mu_ok = true;
    if (pthread_cond_init(&h->cv, NULL) != 0) {
        pthread_mutex_destroy(&h->mu);
        h->mu_ok = false;
        return KW_ENOMEM;
    }
    h->cv_ok = true;
    return KW_OK;
}

void kw_snapshot_release(kw_snapshot_t *s)
{
    if (!s)
        return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    kw_engine_free(s->e);
    kw_free(s);
}

kw_engine_t *kw_snapshot_engine(const kw_snapshot_t *s)
{
    return s->e;
}

kw_revision_t kw_snapshot_revision(const kw_snapshot_t *s)
{
    return s->rev;
}

void kw__hist_batch_free(kw_hbatch_t *b)
{
    kw_free(b->v);
    b->v = NULL;
    b->n = 0;
}

static void drop_all(kw_history_t *h)
{
    for (size_t i = h->first; i < h->n; i++)
        kw__hist_batch_free(&h->b[i]);
    h->first = h->n = 0;
    h->n_changes = h->bytes = 0;
}

void kw__hist_close(kw_history_t *h)
{
    drop_all(h);
    kw_free(h->b);
    for (size_t i = 0; i < h->n_cache; i++)
        kw_snapshot_release(h->cache[i]);
    kw_free(h->cache);
    if (h->cv_ok)
        pthread_cond_destroy(&h->cv);
    if (h->mu_ok)
        pthread_mutex_destroy(&h->mu);
}

void kw__hist_edge_rel(const kw_engine_t *e, uint32_t rn, uint16_t rel, uint32_t sn, uint16_t srel,
                       kw_rel_t *out)
{
    const kw_graph_t *g = &e->g;
    const kw_schema_t *s = e->model->schema;
    uint16_t rt = g->nodes[rn].type, st = g->nodes[sn].type;
    memset(out, 0, sizeof(*out));
    out->resource = (kw_object_t){s->types[rt].name, kw__node_str(&g->nodes[rn])};
    out->relation = s->types[rt].rels[rel].name;
    out->subject =
        (kw_subject_t){s->types[st].name, kw__node_str(&g->nodes[sn]), kw__rel_name(s, st, srel)};
    const kw_attr_t *a = kw__attr_maybe(g, rn) ? kw__attr_find(g, rn, rel, sn, srel) : NULL;
    if (a) {
        if (a->caveat != KW_CAVEAT_NONE)
            out->caveat = s->caveats[a->caveat].name;
        out->caveat_ctx = (kw_str_t){a->ctx, a->ctx_len};
        out->expires_at = a->expires_at;
    }
}

/* The eight strings of a relationship, in order. */
static kw_str_t *rel_strs(kw_rel_t *r, size_t i)
{
    kw_str_t *v[8] = {&r->resource.type, &r->resource.id,      &r->relation, &r->subject.type,
                      &r->subject.id,    &r->subject.relation, &r->caveat,   &r->caveat_ctx};
    return v[i];
}

int kw__hist_batch_make(const kw_hchange_t *v, size_t n, kw_hbatch_t *out)
{
    size_t text = 0;
    for (size_t i = 0; i < n; i++) {
        kw_rel_t r = v[i].rel;
        for (size_t k = 0; k < 8; k++)
            text += rel_strs(&r, k)->len;
    }
    if (n > (SIZE_MAX - text) / sizeof(kw_hchange_t))
        return KW_ENOMEM;
    size_t bytes = n * sizeof(kw_hchange_t) + text;
    kw_hchange_t *c = kw_malloc(bytes ? bytes : 1);
    if (!c)
        return KW_ENOMEM;
    char *p = (char *)(c + n);
    for (size_t i = 0; i < n; i++) {
        c[i] = v[i];
        for (size_t k = 0; k < 8; k++) {
            kw_str_t *sp = rel_strs(&c[i].rel, k);
            if (sp->len)
                memcpy(p, sp->ptr, sp->len);
            sp->ptr = sp->len ? p : NULL;
            p += sp->len;
        }
    }
    out->v = c;
    out->n = n;
    out->bytes = bytes;
    out->rev = 0;
    out->mono_us = 0;
    return KW_OK;
}

static void pop_oldest(kw_history_t *h)
{
    kw_hbatch_t *o = &h->b[h->first];
    h->base = o->rev;
    h->base_ext = o->ext;
    h->base_why = "older changes left the retention window";
    h->n_changes -= o->n;
    h->bytes -= o->bytes;
    kw__hist_batch_free(o);
    h->first++;
    if (h->first == h->n)
        h->first = h->n = 0;
}

void kw__hist_reset(kw_engine_t *e, const char *why)
{
    kw_history_t *h = &e->hist;
    drop_all(h);
    h->base = e->rev;
    h->base_why = why;
    h->base_ext = 0; /* named by the next kw_engine_history_name */
}

/* The names (ext fields) are written under the history's mu, not the engine lock (a
 * second write lock per commit would wait for the readers again); the caller serializes
 * them with the batches they name, and readers take mu inside the engine's read lock. */
void kw_engine_history_name(kw_engine_t *e, kw_revision_t ext)
{
    kw_history_t *h = &e->hist;
    pthread_mutex_lock(&h->mu);
    if (h->n > h->first && h->b[h->n - 1].rev == e->rev && h->b[h->n - 1].ext == 0)
        h->b[h->n - 1].ext = ext;
    if (h->base == e->rev && h->base_ext == 0)
        h->base_ext = ext;
    h->cur_ext = ext;
    h->cur_ext_rev = e->rev;
    pthread_mutex_unlock(&h->mu);
}

/* The engine revision whose state is the state as of `at` (a name once names are given),
 * or false when the log cannot rebuild it. Lock held. */
static bool to_engine_rev_locked(const kw_engine_t *e, kw_revision_t at, kw_revision_t *out);
static bool to_engine_rev(const kw_engine_t *e, kw_revision_t at, kw_revision_t *out)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&e->hist.mu;
    pthread_mutex_lock(mu);
    bool ok = to_engine_rev_locked(e, at, out);
    pthread_mutex_unlock(mu);
    return ok;
}

static bool to_engine_rev_locked(const kw_engine_t *e, kw_revision_t at, kw_revision_t *out)
{
    const kw_history_t *h = &e->hist;
    if (h->cur_ext == 0) { /* never named: the engine's own revisions */
        if (at < h->base || at > e->rev)
            return false;
        *out = at;
        return true;
    }
    if (at >= h->cur_ext) {
        *out = h->cur_ext_rev;
        return true;
    }
    /* The newest named batch at or before `at` (an unnamed one is newer than every name). */
    for (size_t k = h->n; k-- > h->first;) {
        if (h->b[k].ext != 0 && h->b[k].ext <= at) {
            *out = h->b[k].rev;
            return true;
        }
    }
    if (h->base_ext != 0 && at >= h->base_ext) {
        *out = h->base;
        return true;
    }
    return false;
}

/* The start of the window as the caller names revisions. */
static kw_revision_t base_name(const kw_history_t *h)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&h->mu;
    pthread_mutex_lock(mu);
    kw_revision_t b = h->cur_ext == 0 ? h->base : h->base_ext;
    pthread_mutex_unlock(mu);
    return b;
}

/* The current revision as the caller names it (engine lock held). */
static kw_revision_t cur_name(const kw_engine_t *e)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&e->hist.mu;
    pthread_mutex_lock(mu);
    kw_revision_t c = e->hist.cur_ext ? e->hist.cur_ext : e->rev;
    pthread_mutex_unlock(mu);
    return c;
}

void kw__hist_push(kw_engine_t *e, kw_hbatch_t *b, const char *why)
{
    kw_history_t *h = &e->hist;
    if (!b || !kw__hist_on(e)) {
        if (b)
            kw__hist_batch_free(b);
        if (kw__hist_on(e) || h->n || h->base != e->rev)
            kw__hist_reset(e, kw__hist_on(e) ? why : "no history is kept");
        return;
    }
    if (h->n == h->cap && h->first > 0) { /* compact before growing */
        memmove(h->b, h->b + h->first, (h->n - h->first) * sizeof(kw_hbatch_t));
        h->n -= h->first;
        h->first = 0;
    }
    if (h->n == h->cap &&
        kw_grow((void **)&h->b, &h->cap, h->n + 1, sizeof(kw_hbatch_t)) != KW_OK) {
        kw__hist_batch_free(b);
        kw__hist_reset(e, "the change log ran out of memory");
        return;
    }
    b->rev = e->rev;
    b->ext = 0;
    b->mono_us = mono_us();
    h->b[h->n++] = *b;
    h->n_changes += b->n;
    h->bytes += b->bytes;
    int64_t oldest_ok = b->mono_us - h->window_us;
    while (h->n > h->first && (h->n_changes > h->max_changes || h->b[h->first].mono_us < oldest_ok))
        pop_oldest(h);
}

void kw_engine_set_history(kw_engine_t *e, int64_t window_us, size_t max_changes,
                           size_t max_snapshots, size_t max_snapshot_bytes)
{
    kw__engine_wrlock(e);
    e->hist.window_us = window_us > 0 ? window_us : 0;
    e->hist.max_changes = window_us > 0 ? max_changes : 0;
    kw__hist_reset(e, "this instance started (a restart empties the change log)");
    kw__engine_unlock(e);
    pthread_mutex_lock(&e->hist.mu);
    e->hist.max_cache = max_snapshots;
    e->hist.max_cache_bytes = max_snapshot_bytes;
    pthread_mutex_unlock(&e->hist.mu);
}

void kw_engine_history_info(kw_engine_t *e, kw_history_info_t *out)
{
    memset(out, 0, sizeof(*out));
    kw__engine_rdlock(e);
    out->base = base_name(&e->hist);
    out->rev = cur_name(e);
    out->base_why = e->hist.base_why;
    out->n_changes = e->hist.n_changes;
    out->bytes = e->hist.bytes + e->hist.cap * sizeof(kw_hbatch_t);
    out->window_us = e->hist.window_us;
    out->max_changes = e->hist.max_changes;
    kw__engine_unlock(e);
    pthread_mutex_lock(&e->hist.mu);
    out->n_snapshots = e->hist.n_cache;
    out->n_built = e->hist.n_built;
    for (size_t i = 0; i < e->hist.n_cache; i++)
        out->snapshot_bytes += e->hist.cache[i]->bytes;
    pthread_mutex_unlock(&e->hist.mu);
}

/* ---- materializing a snapshot ---- */

/* The live graph copied compactly under the read lock, turned into relationships after it
 * is released (the new graph is built without holding writers off). */
typedef struct cedge {
    uint32_t rn, sn;
    uint16_t rel, srel;
    uint32_t attr; /* index into attrs, or UINT32_MAX */
} cedge_t;

typedef struct cattr {
    uint16_t caveat;
    int64_t expires_at;
    size_t ctx_off, ctx_len; /* in the id text */
} cattr_t;

typedef struct gcopy {
    uint16_t *types; /* per node */
    size_t *off;     /* per node + 1: its id in text */
    char *text;      /* every live node's id, then every context */
    cedge_t *edges;
    size_t n_edges;
    cattr_t *attrs;
    size_t n_attrs;
} gcopy_t;

static void gcopy_free(gcopy_t *c)
{
    kw_free(c->types);
    kw_free(c->off);
    kw_free(c->text);
    kw_free(c->edges);
    kw_free(c->attrs);
    memset(c, 0, sizeof(*c));
}

/* Copies every live, unexpired relationship of g (lock held): two passes (sizes, copy). */
static int gcopy_make(const kw_engine_t *e, gcopy_t *c)
{
    const kw_graph_t *g = &e->g;
    int64_t now = kw__engine_query_now(e);
    size_t text = 0, n_edges = 0, n_attrs = 0;
    for (uint32_t n = 0; n < g->n_nodes; n++) {
        const kw_node_t *nd = &g->nodes[n];
        if (!kw__node_live(nd))
            continue;
        text += kw__node_str(nd).len;
        const kw_eslice_t es = kw__node_fwd(nd);
        for (uint32_t i = 0; i < es.n; i++) {
            const kw_attr_t *a =
                kw__attr_maybe(g, n)
                    ? kw__attr_find(g, n, es.v[i].rel, es.v[i].other, es.v[i].other_rel)
                    : NULL;
            if (a && kw__attr_expired(a, now))
                continue;
            n_edges++;
            if (a) {
                n_attrs++;
                text += a->ctx_len;
            }
        }
    }
    c->types = kw_calloc(g->n_nodes ? g->n_nodes : 1, sizeof(uint16_t));
    c->off = kw_calloc((size_t)g->n_nodes + 1, sizeof(size_t));
    c->text = kw_malloc(text ? text : 1);
    c->edges = kw_calloc(n_edges ? n_edges : 1, sizeof(cedge_t));
    c->attrs = kw_calloc(n_attrs ? n_attrs : 1, sizeof(cattr_t));
    if (!c->types || !c->off || !c->text || !c->edges || !c->attrs) {
        gcopy_free(c);
        return KW_ENOMEM;
    }
    size_t pos = 0;
    for (uint32_t n = 0; n < g->n_nodes; n++) {
        const kw_node_t *nd = &g->nodes[n];
        c->off[n] = pos;
        if (!kw__node_live(nd))
            continue;
        kw_str_t id = kw__node_str(nd);
        if (id.len)
            memcpy(c->text + pos, id.ptr, id.len);
        pos += id.len;
        c->types[n] = nd->type;
    }
    c->off[g->n_nodes] = pos;
    for (uint32_t n = 0; n < g->n_nodes; n++) {
        const kw_node_t *nd = &g->nodes[n];
        if (!kw__node_live(nd))
            continue;
        const kw_eslice_t es = kw__node_fwd(nd);
        for (uint32_t i = 0; i < es.n; i++) {
            const kw_attr_t *a =
                kw__attr_maybe(g, n)
                    ? kw__attr_find(g, n, es.v[i].rel, es.v[i].other, es.v[i].other_rel)
                    : NULL;
            if (a && kw__attr_expired(a, now))
                continue;
            cedge_t *ce = &c->edges[c->n_edges++];
            *ce = (cedge_t){n, es.v[i].other, es.v[i].rel, es.v[i].other_rel, UINT32_MAX};
            if (a) {
                cattr_t *ca = &c->attrs[c->n_attrs];
                ce->attr = (uint32_t)c->n_attrs++;
                *ca = (cattr_t){a->caveat, a->expires_at, pos, a->ctx_len};
                if (a->ctx_len)
                    memcpy(c->text + pos, a->ctx, a->ctx_len);
                pos += a->ctx_len;
            }
        }
    }
    return KW_OK;
}

typedef struct snap_feed {
    kw_engine_t *live;
    kw_revision_t at;     /* as asked (a name once names are given) */
    kw_revision_t erev;   /* the engine revision it maps to */
    uint64_t gen;         /* the model the schema text came from */
    const kw_schema_t *s; /* that schema, compiled privately (same indices) */
    kw_hbatch_t *undo;    /* deep copies of the batches newer than `at`, oldest first */
    size_t n_undo;
    kw_diag_t *diag;
    int rc; /* KW_EEXPIRED / KW_ENOMEM found by the feed */
} snap_feed_t;

static int expired_msg(kw_diag_t *diag, kw_revision_t at, const kw_history_t *h)
{
    return kw_diag_set(diag, KW_EEXPIRED, 0, 0,
                       "revision %llu is older than the snapshot window, which starts at "
                       "revision %llu because %s (the window keeps the changes of the last "
                       "%lld s, at most %zu of them, and starts again after a schema write)",
                       (unsigned long long)at, (unsigned long long)base_name(h), h->base_why,
                       (long long)(h->window_us / 1000000), h->max_changes);
}

/* Under the live engine's read lock: copies the batches newer than `erev` and the graph
 * (gcopy_make). Sets f->rc and diag on failure. */
static int snap_copy(snap_feed_t *f, gcopy_t *c)
{
    kw_engine_t *e = f->live;
    int rc = KW_OK;
    kw__engine_rdlock(e);
    const kw_history_t *h = &e->hist;
    kw_revision_t erev = 0;
    bool in = to_engine_rev(e, f->at, &erev) && erev == f->erev && erev >= h->base;
    if (!e->model || e->model->gen != f->gen || !in) {
        /* A schema swap restarted the log after the schema text was taken, or older
         * changes left the window since the request was admitted. */
        if (!in)
            f->rc = expired_msg(f->diag, f->at, h);
        else
            f->rc = kw_diag_set(f->diag, KW_EEXPIRED, 0, 0,
                                "revision %llu is older than the snapshot window: the schema "
                                "changed meanwhile",
                                (unsigned long long)f->at);
        kw__engine_unlock(e);
        return f->rc;
    }
    size_t k = h->first;
    while (k < h->n && h->b[k].rev <= f->erev)
        k++;
    if (h->n > k) {
        f->undo = kw_calloc(h->n - k, sizeof(kw_hbatch_t));
        if (!f->undo)
            rc = KW_ENOMEM;
    }
    for (; rc == KW_OK && k < h->n; k++) {
        rc = kw__hist_batch_make(h->b[k].v, h->b[k].n, &f->undo[f->n_undo]);
        if (rc == KW_OK)
            f->undo[f->n_undo++].rev = h->b[k].rev;
    }
    if (rc == KW_OK)
        rc = gcopy_make(e, c);
    kw__engine_unlock(e);
    if (rc != KW_OK)
        f->rc = kw_diag_set(f->diag, KW_ENOMEM, 0, 0, "out of memory while copying the graph");
    return rc;
}

/* The feed: the copy (live read lock held only for it), then every relationship of it. */
static int snap_feed(void *ud, kw_rel_cb emit, void *emit_ud, kw_revision_t *rev)
{
    snap_feed_t *f = ud;
    gcopy_t c = {0};
    int rc = snap_copy(f, &c);
    if (rc != KW_OK)
        return rc;
    const kw_schema_t *s = f->s;
    for (size_t i = 0; i < c.n_edges && rc == KW_OK; i++) {
        const cedge_t *ce = &c.edges[i];
        uint16_t rt = c.types[ce->rn], st = c.types[ce->sn];
        kw_rel_t r;
        memset(&r, 0, sizeof(r));
        r.resource = (kw_object_t){s->types[rt].name,
                                   {c.text + c.off[ce->rn], c.off[ce->rn + 1] - c.off[ce->rn]}};
        r.relation = s->types[rt].rels[ce->rel].name;
        r.subject = (kw_subject_t){s->types[st].name,
                                   {c.text + c.off[ce->sn], c.off[ce->sn + 1] - c.off[ce->sn]},
                                   kw__rel_name(s, st, ce->srel)};
        if (ce->attr != UINT32_MAX) {
            const cattr_t *a = &c.attrs[ce->attr];
            if (a->caveat != KW_CAVEAT_NONE)
                r.caveat = s->caveats[a->caveat].name;
            r.caveat_ctx = (kw_str_t){a->ctx_len ? c.text + a->ctx_off : NULL, a->ctx_len};
            r.expires_at = a->expires_at;
        }
        rc = emit(&r, emit_ud);
    }
    gcopy_free(&c);
    *rev = f->erev; /* below the new engine's: it gets its next revision; set after the undo */
    return rc;
}

static void free_undo(snap_feed_t *f)
{
    for (size_t i = 0; i < f->n_undo; i++)
        kw__hist_batch_free(&f->undo[i]);
    kw_free(f->undo);
}

/* Undoes f's batches on `s`, newest first, then sets its revision to f->erev. */
static int apply_undo(kw_engine_t *s, snap_feed_t *f, kw_diag_t *diag)
{
    size_t max = 0;
    for (size_t i = 0; i < f->n_undo; i++)
        if (f->undo[i].n > max)
            max = f->undo[i].n;
    kw_update_t *ups = max ? kw_calloc(max, sizeof(kw_update_t)) : NULL;
    if (max && !ups)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while undoing changes");
    int rc = KW_OK;
    for (size_t i = f->n_undo; i-- > 0 && rc == KW_OK;) {
        const kw_hbatch_t *b = &f->undo[i];
        for (size_t j = 0; j < b->n; j++) {
            ups[j].op = b->v[j].had ? KW_OP_TOUCH : KW_OP_DELETE;
            ups[j].rel = b->v[j].rel;
        }
        /* `at` given: replayed as a store's change (an expiry already past is kept). */
        rc = kw_engine_write(s, ups, b->n, NULL, 0, kw_engine_revision(s) + 1, NULL, diag);
    }
    kw_free(ups);
    if (rc == KW_OK) {
        kw__engine_wrlock(s);
        s->rev = f->erev;
        kw__engine_unlock(s);
    }
    return rc;
}

/* Looks `at` up in the cache (a new reference) or NULL. mu held. */
static kw_snapshot_t *cache_find(kw_history_t *h, kw_revision_t at)
{
    for (size_t i = 0; i < h->n_cache; i++) {
        if (h->cache[i]->rev == at) {
            h->cache[i]->used = ++h->tick;
            atomic_fetch_add_explicit(&h->cache[i]->refs, 1, memory_order_relaxed);
            return h->cache[i];
        }
    }
    return NULL;
}

/* Drops cached snapshots older than `base` (outside the window for good), then the least
 * recently used ones while more than `keep` remain or their bytes exceed the budget less
 * `room`. mu held. */
static void cache_trim(kw_history_t *h, kw_revision_t base, size_t keep, size_t room)
{
    for (size_t i = 0; i < h->n_cache;) {
        if (h->cache[i]->rev < base) {
            kw_snapshot_release(h->cache[i]);
            h->cache[i] = h->cache[--h->n_cache];
        } else {
            i++;
        }
    }
    for (;;) {
        size_t bytes = 0, lru = 0;
        for (size_t i = 0; i < h->n_cache; i++) {
            bytes += h->cache[i]->bytes;
            if (h->cache[i]->used < h->cache[lru]->used)
                lru = i;
        }
        if (h->n_cache == 0 || (h->n_cache <= keep && bytes + room <= h->max_cache_bytes))
            return;
        kw_snapshot_release(h->cache[lru]);
        h->cache[lru] = h->cache[--h->n_cache];
    }
}

/* Offers a new snapshot to the cache; returns the one to use (an equal one cached
 * meanwhile wins; `s` is then released). mu held. */
static kw_snapshot_t *cache_offer(kw_history_t *h, kw_revision_t base, kw_snapshot_t *s)
{
    kw_snapshot_t *other = cache_find(h, s->rev);
    if (other) {
        kw_snapshot_release(s);
        return other;
    }
    if (h->max_cache == 0 || s->bytes > h->max_cache_bytes)
        return s;
    cache_trim(h, base, h->max_cache - 1, s->bytes);
    if (h->n_cache >= h->cache_cap &&
        kw_grow((void **)&h->cache, &h->cache_cap, h->n_cache + 1, sizeof(*h->cache)) != KW_OK)
        return s; /* served uncached */
    s->used = ++h->tick;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    h->cache[h->n_cache++] = s;
    return s;
}

static bool is_building(const kw_history_t *h, kw_revision_t erev)
{
    for (size_t i = 0; i < h->n_building; i++)
        if (h->building[i] == erev)
            return true;
    return false;
}

static void done_building(kw_history_t *h, kw_revision_t erev)
{
    for (size_t i = 0; i < h->n_building; i++) {
        if (h->building[i] == erev) {
            h->building[i] = h->building[--h->n_building];
            return;
        }
    }
}

static int build_snapshot(kw_engine_t *e, kw_revision_t at, kw_revision_t erev, uint64_t gen,
                          kw_revision_t base, kw_buf_t *textp, kw_snapshot_t **out,
                          kw_diag_t *diag);

int kw_engine_history_covers(kw_engine_t *e, kw_revision_t at, kw_diag_t *diag)
{
    const kw_history_t *h = &e->hist;
    kw__engine_rdlock(e);
    kw_revision_t cur = cur_name(e), erev = 0;
    int rc = KW_OK;
    if (at > cur)
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "revision %llu is newer than the current %llu",
                         (unsigned long long)at, (unsigned long long)cur);
    else if (!to_engine_rev(e, at, &erev))
        rc = expired_msg(diag, at, h);
    kw__engine_unlock(e);
    return rc;
}

int kw_engine_snapshot(kw_engine_t *e, kw_revision_t at, kw_snapshot_t **out, kw_diag_t *diag)
{
    kw_history_t *h = &e->hist;
    kw_buf_t text;
    kw_buf_init(&text);
    kw__engine_rdlock(e);
    int rc = e->model ? KW_OK : kw__engine_no_schema(diag);
    kw_revision_t cur = cur_name(e), erev = 0;
    if (rc == KW_OK && at > cur)
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "revision %llu is newer than the current %llu",
                         (unsigned long long)at, (unsigned long long)cur);
    if (rc == KW_OK && !to_engine_rev(e, at, &erev))
        rc = expired_msg(diag, at, h);
    kw_revision_t base = h->base;
    uint64_t gen = rc == KW_OK ? e->model->gen : 0;
    if (rc == KW_OK)
        kw_buf_append(&text, e->model->schema->text.ptr, e->model->schema->text.len);
    kw__engine_unlock(e);
    if (rc != KW_OK) {
        kw_buf_free(&text);
        return rc;
    }
    /* From the cache; or wait while another request builds the same one (one copy of the
     * graph per revision at a time, however many ask); or build it, marked as building. */
    pthread_mutex_lock(&h->mu);
    kw_snapshot_t *hit = NULL;
    while ((hit = cache_find(h, erev)) == NULL && is_building(h, erev))
        pthread_cond_wait(&h->cv, &h->mu);
    bool mine = !hit && h->n_building < sizeof(h->building) / sizeof(h->building[0]);
    if (mine)
        h->building[h->n_building++] = erev;
    pthread_mutex_unlock(&h->mu);
    if (hit) {
        kw_buf_free(&text);
        *out = hit;
        return KW_OK;
    }
    rc = build_snapshot(e, at, erev, gen, base, &text, out, diag);
    pthread_mutex_lock(&h->mu);
    if (mine)
        done_building(h, erev);
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return rc;
}

/* Materializes the snapshot at engine revision erev (its schema text in *text, freed here)
 * and offers it to the cache. */
static int build_snapshot(kw_engine_t *e, kw_revision_t at, kw_revision_t erev, uint64_t gen,
                          kw_revision_t base, kw_buf_t *textp, kw_snapshot_t **out, kw_diag_t *diag)
{
    kw_history_t *h = &e->hist;
    kw_buf_t text = *textp;
    int rc;
    if (text.failed) {
        kw_buf_free(&text);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while building a snapshot");
    }
    kw_snapshot_t *s = kw_calloc(1, sizeof(*s));
    if (!s || kw_engine_new(&s->e) != KW_OK) {
        kw_free(s);
        kw_buf_free(&text);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while building a snapshot");
    }
    atomic_init(&s->refs, 1);
    s->rev = erev;
    kw_engine_set_clock(s->e, e->clock, e->clock_ud);
    kw_schema_t *sc = NULL;
    rc = kw_schema_compile((kw_str_t){text.ptr, text.len}, &sc, diag);
    snap_feed_t f = {e, at, erev, gen, sc, NULL, 0, diag, KW_OK};
    if (rc == KW_OK)
        rc = kw_engine_replace_graph(s->e, (kw_str_t){text.ptr, text.len}, snap_feed, &f, NULL,
                                     diag);
    kw_buf_free(&text);
    kw_schema_free(sc);
    if (f.rc != KW_OK)
        rc = f.rc;
    if (rc == KW_OK)
        rc = apply_undo(s->e, &f, diag);
    free_undo(&f);
    if (rc != KW_OK) {
        kw_snapshot_release(s);
        return rc;
    }
    s->bytes = kw_engine_memory(s->e);
    pthread_mutex_lock(&h->mu);
    h->n_built++;
    s = cache_offer(h, base, s);
    pthread_mutex_unlock(&h->mu);
    *out = s;
    return KW_OK;
}
