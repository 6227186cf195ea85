/*
 * authz/lookup_ordered.c - LookupResources in id order (kw_engine_lookup_resources_ordered):
 * the first `limit` results after a given id, at a cost that follows the results asked
 * for rather than the whole answer (tag-kw-lr-ordered).
 *
 * Two ways, both over the type's id-ordered index (graph_oidx.c):
 *  - walk: from the first id after `after`, Check each object of the type (one check
 *    context, its memo shared) until `limit` results. Cheap while most objects are
 *    results (dense answers): the first lines of a huge stream cost `limit` checks. When
 *    the hit rate turns poor (fewer than 1 in LRO_POOR of the objects walked past
 *    LRO_WALK_PROBE) the rest of the call takes the second way, which a subject absent from the
 *    graph takes at once.
 *  - set: the whole answer by the general lookup (lookup.c: the plan, else the walk and
 *    its checks), kept as a bitmap over node indices (dense answers: then walked in index
 *    order) or as a list sorted by id (sparse ones), with the missing parameter names of
 *    the conditional results. With a kw_lr_stream_t the set is kept between calls and
 *    reused as long as the engine is at the revision it was computed at, under the same
 *    model, and no relationship can expire (with expiring relationships every call
 *    computes it again, at its own instant, exactly as the unordered lookup would).
 * Both give exactly the unordered lookup's results (the objects Check says YES or
 * CONDITIONAL for, plus the subject set itself when it is absent from the graph), sorted;
 * the unit test lookup_ordered_test.c compares them on random graphs.
 */
#include <stdlib.h>
#include <string.h>

#include "authz/engine_int.h"

/* The walk decides at most this many results per call (larger calls take the set). */
#define LRO_WALK_MAX 4096u
#define LRO_WALK_PROBE 16u
#define LRO_POOR 8u
/* Sparse: fewer results than 1 in LRO_SPARSE objects of the type: a sorted list. */
#define LRO_SPARSE 16u

typedef struct lro_cond {
    uint32_t node;
    uint32_t len;
    char *missing;
} lro_cond_t;

struct kw_lr_stream {
    bool valid;
    kw_revision_t rev;
    uint64_t gen;
    uint32_t calls;
    bool sparse;
    uint64_t *bits; /* dense: one bit per node index < n_bits */
    size_t n_bits, cap_words;
    uint32_t *list; /* while collecting: every result node; sparse: sorted by id */
    size_t n_list, cap_list;
    lro_cond_t *cond; /* conditional results, sorted by node */
    size_t n_cond, cap_cond;
    bool self; /* the subject set itself is a result */
    int rc;    /* collecting: an allocation failure */
    kw_buf_t names;
    /* Tuning (kw__lr_stream_tune, for the tests): walk at most walk_max results per call,
     * give up the walk after `probe` objects with a poor hit rate, and keep the set as
     * chosen (0), sparse (1) or dense (2). */
    size_t walk_max, probe;
    int shape;
};

void kw__lr_stream_tune(kw_lr_stream_t *s, size_t walk_max, size_t probe, int shape)
{
    s->walk_max = walk_max;
    s->probe = probe;
    s->shape = shape;
}

int kw_lr_stream_new(kw_lr_stream_t **out)
{
    kw_lr_stream_t *s = kw_calloc(1, sizeof(*s));
    if (!s)
        return KW_ENOMEM;
    kw_buf_init(&s->names);
    s->walk_max = LRO_WALK_MAX;
    s->probe = LRO_WALK_PROBE;
    *out = s;
    return KW_OK;
}

static void stream_clear(kw_lr_stream_t *s)
{
    for (size_t i = 0; i < s->n_cond; i++)
        kw_free(s->cond[i].missing);
    s->n_cond = 0;
    s->n_list = 0;
    s->n_bits = 0;
    s->self = false;
    s->valid = false;
    s->sparse = false;
    s->rc = KW_OK;
}

void kw_lr_stream_free(kw_lr_stream_t *s)
{
    if (!s)
        return;
    stream_clear(s);
    kw_free(s->bits);
    kw_free(s->list);
    kw_free(s->cond);
    kw_buf_free(&s->names);
    kw_free(s);
}

/* ---- the index, built on first use ---- */

static int oidx_get(kw_engine_t *e, uint16_t t, const kw_oidx_t **out, kw_diag_t *diag)
{
    kw_oidx_t *x = kw__oidx_find(&e->g, t);
    if (!x) {
        pthread_mutex_lock(&e->oidx_mu);
        x = kw__oidx_find(&e->g, t);
        if (!x && kw__oidx_build(&e->g, t, &x) == KW_OK)
            kw__oidx_publish(&e->g, x);
        pthread_mutex_unlock(&e->oidx_mu);
        if (!x)
            return kw_diag_set(diag, KW_ENOMEM, 0, 0,
                               "out of memory while indexing the ids of a type for a lookup");
    }
    *out = x;
    return KW_OK;
}

/* Walks the index in id order from the first id after *after (NULL: the start). */
typedef struct owalk {
    const kw_graph_t *g;
    const kw_oidx_t *x;
    uint32_t i, j;
} owalk_t;

static void owalk_init(owalk_t *w, const kw_graph_t *g, const kw_oidx_t *x, const kw_str_t *after)
{
    w->g = g;
    w->x = x;
    w->i = after ? kw__oidx_main_lower(g, x, *after, true) : 0;
    w->j = after ? kw__oidx_delta_lower(g, x, *after, true) : 0;
}

static uint32_t owalk_next(owalk_t *w)
{
    const kw_oidx_t *x = w->x;
    while (w->i < x->n_main && x->main[w->i] == KW_OIDX_TOMB)
        w->i++;
    bool hm = w->i < x->n_main, hd = w->j < x->n_delta;
    if (hm && hd) {
        uint32_t a = x->main[w->i], b = x->delta[w->j];
        if (kw__oidx_cmp(kw__node_str(&w->g->nodes[a]), kw__node_str(&w->g->nodes[b])) < 0) {
            w->i++;
            return a;
        }
        w->j++;
        return b;
    }
    if (hm)
        return x->main[w->i++];
    if (hd)
        return x->delta[w->j++];
    return KW_NODE_NONE;
}

/* ---- emission in order, with the subject set merged in ---- */

typedef struct lro_out {
    kw_resource_cb cb;
    void *ud;
    size_t limit, n; /* n: emitted so far */
    bool self_pending;
    kw_str_t self_id;
    kw_str_t last; /* the last id emitted (valid while the lock is held) */
    bool any;
} lro_out_t;

static int out_put(lro_out_t *o, kw_str_t id, bool cond, kw_str_t missing)
{
    kw_resource_result_t r = {id, cond, cond ? missing : KW_STR_NULL};
    o->n++;
    o->last = id;
    o->any = true;
    return o->cb(&r, o->ud);
}

static bool out_full(const lro_out_t *o)
{
    return o->limit && o->n >= o->limit;
}

/* Emits the subject set first if it comes before id (id NULL: the end). */
static int out_self_before(lro_out_t *o, const kw_str_t *id)
{
    if (!o->self_pending || out_full(o) || (id && kw__oidx_cmp(o->self_id, *id) > 0))
        return 0;
    o->self_pending = false;
    return out_put(o, o->self_id, false, KW_STR_NULL);
}

/* ---- the set ---- */

static int on_set(uint32_t node, int v, const kw_ck_t *c, void *ud)
{
    kw_lr_stream_t *s = ud;
    if (node == KW_NODE_NONE) {
        s->self = true;
        return 0;
    }
    if (s->n_list == s->cap_list && (s->rc = kw_grow((void **)&s->list, &s->cap_list, s->n_list + 1,
                                                     sizeof(uint32_t))) != KW_OK)
        return 1;
    s->list[s->n_list++] = node;
    if (v != KW_CK_COND)
        return 0;
    s->names.len = 0;
    kw__ck_missing(c, c->miss, &s->names);
    if (s->names.failed ||
        (s->n_cond == s->cap_cond &&
         kw_grow((void **)&s->cond, &s->cap_cond, s->n_cond + 1, sizeof(lro_cond_t)) != KW_OK)) {
        s->rc = KW_ENOMEM;
        return 1;
    }
    char *m = kw_malloc(s->names.len + 1);
    if (!m) {
        s->rc = KW_ENOMEM;
        return 1;
    }
    if (s->names.len)
        memcpy(m, s->names.ptr, s->names.len);
    m[s->names.len] = '\0';
    s->cond[s->n_cond++] = (lro_cond_t){node, (uint32_t)s->names.len, m};
    return 0;
}

typedef struct lro_sent {
    const char *p;
    size_t len;
    uint32_t node;
} lro_sent_t;

static int sent_cmp(const void *a, const void *b)
{
    const lro_sent_t *x = a, *y = b;
    return kw__oidx_cmp((kw_str_t){x->p, x->len}, (kw_str_t){y->p, y->len});
}

static int cond_cmp(const void *a, const void *b)
{
    uint32_t x = ((const lro_cond_t *)a)->node, y = ((const lro_cond_t *)b)->node;
    return x < y ? -1 : x > y;
}

/* Computes the whole answer into s (lock held). */
static int set_compute(kw_engine_t *e, kw_lr_stream_t *s, uint16_t t, kw_str_t rt, kw_str_t perm,
                       kw_subject_t subj, kw_str_t ctx, kw_diag_t *diag)
{
    stream_clear(s);
    int rc = kw__lookup_resources_nodes(e, rt, perm, subj, ctx, on_set, s, diag);
    if (rc == 1)
        rc = kw_diag_set(diag, s->rc, 0, 0, "out of memory during lookup");
    if (rc != KW_OK) {
        stream_clear(s);
        return rc;
    }
    const kw_graph_t *g = &e->g;
    const kw_oidx_t *x = kw__oidx_find(g, t);
    size_t n_type = x ? (size_t)x->n_main - x->n_tomb + x->n_delta : 0;
    s->sparse = s->shape ? s->shape == 1 : !x || s->n_list * LRO_SPARSE < n_type;
    if (s->sparse) {
        if (s->n_list > 1) {
            lro_sent_t *v = kw_malloc(s->n_list * sizeof(*v));
            if (!v) {
                stream_clear(s);
                return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
            }
            for (size_t i = 0; i < s->n_list; i++) {
                kw_str_t id = kw__node_str(&g->nodes[s->list[i]]);
                v[i] = (lro_sent_t){id.ptr, id.len, s->list[i]};
            }
            qsort(v, s->n_list, sizeof(*v), sent_cmp);
            for (size_t i = 0; i < s->n_list; i++)
                s->list[i] = v[i].node;
            kw_free(v);
        }
    } else {
        size_t words = ((size_t)g->n_nodes + 63) / 64;
        if (words > s->cap_words) {
            uint64_t *b = kw_malloc(words * sizeof(uint64_t));
            if (!b) {
                stream_clear(s);
                return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
            }
            kw_free(s->bits);
            s->bits = b;
            s->cap_words = words;
        }
        memset(s->bits, 0, words * sizeof(uint64_t));
        s->n_bits = (size_t)g->n_nodes;
        for (size_t i = 0; i < s->n_list; i++)
            s->bits[s->list[i] / 64] |= (uint64_t)1 << (s->list[i] % 64);
        s->n_list = 0;
    }
    if (s->n_cond > 1)
        qsort(s->cond, s->n_cond, sizeof(lro_cond_t), cond_cmp);
    s->rev = e->rev;
    s->gen = e->model->gen;
    s->valid = true;
    return KW_OK;
}

static int set_emit_node(const kw_graph_t *g, const kw_lr_stream_t *s, lro_out_t *o, uint32_t node)
{
    kw_str_t id = kw__node_str(&g->nodes[node]);
    int rc = out_self_before(o, &id);
    if (rc || out_full(o))
        return rc;
    if (s->n_cond) {
        lro_cond_t key = {node, 0, NULL};
        const lro_cond_t *c = bsearch(&key, s->cond, s->n_cond, sizeof(lro_cond_t), cond_cmp);
        if (c)
            return out_put(o, id, true, (kw_str_t){c->missing, c->len});
    }
    return out_put(o, id, false, KW_STR_NULL);
}

/* Emits the set's results after *after (lock held, the set current). */
static int set_emit(kw_engine_t *e, const kw_lr_stream_t *s, uint16_t t, const kw_str_t *after,
                    lro_out_t *o, kw_diag_t *diag)
{
    const kw_graph_t *g = &e->g;
    int rc = 0;
    if (s->sparse) {
        size_t lo = 0, hi = s->n_list;
        while (after && lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (kw__oidx_cmp(kw__node_str(&g->nodes[s->list[mid]]), *after) <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t i = lo; i < s->n_list && rc == 0 && !out_full(o); i++)
            rc = set_emit_node(g, s, o, s->list[i]);
    } else {
        const kw_oidx_t *x;
        if ((rc = oidx_get(e, t, &x, diag)) != KW_OK)
            return rc;
        owalk_t w;
        owalk_init(&w, g, x, after);
        uint32_t n;
        while (rc == 0 && !out_full(o) && (n = owalk_next(&w)) != KW_NODE_NONE)
            if (n < s->n_bits && (s->bits[n / 64] >> (n % 64) & 1))
                rc = set_emit_node(g, s, o, n);
    }
    if (rc == 0)
        rc = out_self_before(o, NULL);
    return rc;
}

/* ---- the walk ---- */

/* Checks the objects of the index in order from *after. *poor is set when it stopped for
 * a poor hit rate (the caller goes on by the set after o->last). */
static int walk(kw_engine_t *e, uint16_t t, uint16_t r, kw_ck_t *c, const kw_str_t *after,
                size_t probe, lro_out_t *o, bool *poor, kw_buf_t *names, kw_diag_t *diag)
{
    const kw_oidx_t *x;
    int rc = oidx_get(e, t, &x, diag);
    if (rc != KW_OK)
        return rc;
    owalk_t w;
    owalk_init(&w, &e->g, x, after);
    uint64_t work = 0;
    size_t seen = 0, found = 0;
    uint32_t n;
    while (!out_full(o) && (n = owalk_next(&w)) != KW_NODE_NONE) {
        if (seen >= probe && found * LRO_POOR < seen) {
            *poor = true;
            return 0;
        }
        seen++;
        int v = kw__ck_check(c, n, r);
        if (v < 0)
            return v;
        work += c->steps;
        if (work > KW_MAX_LOOKUP_STEPS)
            return kw_diag_set(diag, KW_EBUDGET, 0, 0,
                               "LookupResources exceeded its budget of %u steps",
                               KW_MAX_LOOKUP_STEPS);
        if (v == KW_CK_NO)
            continue;
        found++;
        kw_str_t id = kw__node_str(&e->g.nodes[n]);
        if ((rc = out_self_before(o, &id)) != 0)
            return rc;
        if (out_full(o))
            return 0;
        kw_str_t missing = KW_STR_NULL;
        if (v == KW_CK_COND) {
            names->len = 0;
            kw__ck_missing(c, c->miss, names);
            if (names->failed)
                return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
            missing = (kw_str_t){names->ptr, names->len};
        }
        if ((rc = out_put(o, id, v == KW_CK_COND, missing)) != 0)
            return rc;
    }
    return out_self_before(o, NULL);
}

/* ---- the entry point ---- */

static int ordered_locked(kw_engine_t *e, kw_str_t rt, kw_str_t perm, kw_subject_t subj,
                          kw_str_t ctx, const kw_str_t *after, kw_lr_stream_t *s, lro_out_t *o,
                          kw_diag_t *diag)
{
    uint16_t t, r, stype, srel;
    uint32_t snode;
    int rc = kw__resolve_perm(e, rt, perm, &t, &r, diag);
    if (rc == KW_OK)
        rc = kw__resolve_subject(e, subj, &stype, &srel, &snode, diag);
    if (rc != KW_OK)
        return rc;
    bool cached =
        s->valid && s->rev == e->rev && s->gen == e->model->gen && e->g.attrs.n_expiring == 0;
    s->calls++;
    /* The walk pays off when most objects are results; a subject absent from the graph
     * (without a wildcard of its type) can only be the subject set itself: the set. */
    bool walkable =
        snode != KW_NODE_NONE || (stype < KW_MAX_TYPES && e->g.wild[stype] != KW_NODE_NONE);
    if (!cached && walkable && o->limit && o->limit <= s->walk_max) {
        if (snode == KW_NODE_NONE && srel != KW_REL_NONE && stype == t) {
            int self = kw__ck_absent(e->model->schema, t, r, srel, diag);
            if (self < 0)
                return self;
            o->self_pending = self && (!after || kw__oidx_cmp(subj.id, *after) > 0);
            o->self_id = subj.id;
        }
        kw_ck_t *c = kw_malloc(sizeof(kw_ck_t));
        if (!c)
            return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
        kw__ck_init(c, &e->g, e->model->schema, diag);
        kw__ck_model(c, e->model);
        kw__ck_context(c, kw__engine_query_now(e), ctx);
        kw__ck_subject(c, snode, stype, srel);
        kw_buf_t names;
        kw_buf_init(&names);
        bool poor = false;
        rc = walk(e, t, r, c, after, s->probe, o, &poor, &names, diag);
        kw_buf_free(&names);
        kw__ck_close(c);
        kw_free(c);
        if (rc != 0 || !poor)
            return rc;
        /* Go on by the set after the last result emitted (the subject set, if still
         * pending, comes from the set again). */
        o->self_pending = false;
    }
    if (!cached && (rc = set_compute(e, s, t, rt, perm, subj, ctx, diag)) != KW_OK)
        return rc;
    kw_str_t last = o->last;
    const kw_str_t *from = o->any ? &last : after;
    o->self_pending = s->self && (!from || kw__oidx_cmp(subj.id, *from) > 0);
    o->self_id = subj.id;
    return set_emit(e, s, t, from, o, diag);
}

int kw_engine_lookup_resources_ordered(kw_engine_t *e, kw_str_t resource_type, kw_str_t permission,
                                       kw_subject_t subject, kw_str_t context,
                                       const kw_str_t *after, size_t limit, kw_lr_stream_t *stream,
                                       kw_resource_cb cb, void *ud, kw_revision_t *rev,
                                       kw_diag_t *diag)
{
    kw_lr_stream_t *s = stream;
    if (!s && kw_lr_stream_new(&s) != KW_OK)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
    lro_out_t o = {cb, ud, limit, 0, false, KW_STR_NULL, KW_STR_NULL, false};
    kw__engine_rdlock(e);
    int rc;
    if (!e->model) {
        rc = kw__engine_no_schema(diag);
    } else {
        rc = ordered_locked(e, resource_type, permission, subject, context, after, s, &o, diag);
        if (rc == KW_OK && rev)
            *rev = e->rev;
    }
    kw__engine_unlock(e);
    if (s != stream)
        kw_lr_stream_free(s);
    return rc;
}
