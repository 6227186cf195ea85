/*
 * authz/check.c - Check: does subject S have relation/permission `rel` on `node`?
 *
 * Semantics are SpiceDB's, evaluated as a least fixpoint:
 *  - a subject set has itself: check(X#r @ X#r) is yes;
 *  - a relation holds through a direct edge to S, a wildcard edge `T:*` where T is S's
 *    type (a wildcard also matches subject sets of that type), or a subject-set edge
 *    O#r2 for which check(O#r2 @ S) holds (or which is S itself);
 *  - permissions evaluate their expression; arrows follow every subject object of the
 *    tupleset relation (ignoring its subject relation) to the target of that type;
 *    `.all()` needs every such object to have it and is false without any.
 * Recursion uses a memo table keyed by (node, rel, subject) holding IN_PROGRESS markers.
 * Hitting an in-progress pair returns "no" for that branch (least fixpoint); a "no"
 * computed under that assumption depends on an open frame and is memoized only once
 * the frame it depends on is the one being closed (lowlink). "Yes" is always sound and
 * memoized. Hitting an open frame across the subtracted side of an exclusion makes the
 * answer depend on its own negation: KW_ECYCLE (fail closed). Depth is capped at
 * KW_MAX_CHECK_DEPTH nested (node, rel) frames: KW_EDEPTH; the evaluations of one check
 * at KW_MAX_CHECK_STEPS: KW_EBUDGET (tag-kw-query-budget; results under an open cycle are
 * recomputed, so without it the work could double per frame).
 */
#include <string.h>

#include "authz/engine_int.h"

enum { MEMO_UNKNOWN = 1, MEMO_OPEN, MEMO_YES, MEMO_NO, MEMO_COND };

#define NO_LOW 0x7fffffff

void kw__ck_init(kw_ck_t *c, const kw_graph_t *g, const kw_schema_t *s, kw_diag_t *diag)
{
    c->g = g;
    c->s = s;
    c->snode = KW_NODE_NONE;
    c->swild = KW_NODE_NONE;
    c->stype = KW_TYPE_NONE;
    c->srel = KW_REL_NONE;
    c->depth = 0;
    c->neg = 0;
    c->memo = NULL; /* set up lazily: most direct checks never need it */
    c->memo_cap = 0;
    c->memo_used = 0;
    c->diag = diag;
    c->steps = 0;
    c->now = 0;
    c->req_json = KW_STR_NULL;
    c->rel_attrs = NULL;
    c->rel_base = NULL;
    c->req = NULL;
    c->req_done = NULL;
    kw_buf_init(&c->scratch);
    c->n_names = 0;
    c->miss = 0;
}

static void forget_req(kw_ck_t *c)
{
    if (c->req)
        for (uint32_t i = 0; i < c->s->n_caveats; i++)
            kw_cel_ctx_free(c->req[i]);
    if (c->req != c->req_inline) {
        kw_free(c->req);
        kw_free(c->req_done);
    }
    c->req = NULL;
    c->req_done = NULL;
}

static void forget_memo(kw_ck_t *c)
{
    if (c->memo) {
        memset(c->memo, 0, sizeof(kw_memo_ent_t) * c->memo_cap);
        c->memo_used = 0;
    }
}

void kw__ck_close(kw_ck_t *c)
{
    if (c->memo && c->memo != c->inline_memo)
        kw_free(c->memo);
    c->memo = NULL;
    forget_req(c);
    kw_buf_free(&c->scratch);
}

void kw__ck_context(kw_ck_t *c, int64_t now, kw_str_t req_json)
{
    bool same_req = req_json.len == c->req_json.len &&
                    (req_json.len == 0 || memcmp(req_json.ptr, c->req_json.ptr, req_json.len) == 0);
    if (same_req && now == c->now) {
        c->req_json = req_json; /* the same text, maybe at another address */
        return;
    }
    forget_memo(c);
    if (!same_req)
        forget_req(c);
    c->now = now;
    c->req_json = req_json;
}

void kw__ck_subject(kw_ck_t *c, uint32_t snode, uint16_t stype, uint16_t srel)
{
    c->snode = snode;
    c->stype = stype;
    c->srel = srel;
    c->swild = stype < KW_MAX_TYPES ? c->g->wild[stype] : KW_NODE_NONE;
    c->depth = 0;
    c->neg = 0;
}

void kw__ck_missing(const kw_ck_t *c, uint64_t mask, kw_buf_t *out)
{
    /* In name order, so an answer does not depend on the order the walk met them. */
    uint32_t idx[KW_CK_MAX_NAMES], n = 0;
    for (uint32_t i = 0; i < c->n_names; i++) {
        if (!(mask & ((uint64_t)1 << i)))
            continue;
        uint32_t j = n++;
        for (; j > 0; j--) {
            kw_str_t a = c->names[idx[j - 1]], b = c->names[i];
            size_t l = a.len < b.len ? a.len : b.len;
            int d = memcmp(a.ptr, b.ptr, l);
            if (d < 0 || (d == 0 && a.len <= b.len))
                break;
            idx[j] = idx[j - 1];
        }
        idx[j] = i;
    }
    for (uint32_t k = 0; k < n; k++) {
        if (k)
            kw_buf_append(out, ",", 1);
        kw_buf_append(out, c->names[idx[k]].ptr, c->names[idx[k]].len);
    }
}

static uint64_t memo_hash(uint64_t k1, uint32_t k2, uint16_t k3)
{
    return kw_hash_u64(k1 ^ ((uint64_t)k2 * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)k3 << 7));
}

/* The first table: small, so a check that memoizes a handful of pairs (most do) clears
 * 384 bytes, not the whole inline array; it doubles inside inline_memo, then on the heap. */
#define MEMO_FIRST 16

static int memo_grow(kw_ck_t *c)
{
    uint32_t ncap = c->memo_cap ? c->memo_cap * 2 : MEMO_FIRST;
    kw_memo_ent_t *nm;
    kw_memo_ent_t moved[KW_MEMO_INLINE / 2];
    const kw_memo_ent_t *old = c->memo;
    if (ncap <= KW_MEMO_INLINE) {
        /* The old table is inline_memo itself: set its entries aside first. */
        if (c->memo_cap) {
            memcpy(moved, c->memo, sizeof(kw_memo_ent_t) * c->memo_cap);
            old = moved;
        }
        nm = c->inline_memo;
    } else {
        nm = kw_calloc(ncap, sizeof(kw_memo_ent_t));
        if (!nm)
            return KW_ENOMEM;
    }
    memset(nm, 0, sizeof(kw_memo_ent_t) * ncap);
    for (uint32_t i = 0; i < c->memo_cap; i++) {
        const kw_memo_ent_t *e = &old[i];
        if (!e->state)
            continue;
        uint32_t j = (uint32_t)memo_hash(e->k1, e->k2, e->k3) & (ncap - 1);
        while (nm[j].state)
            j = (j + 1) & (ncap - 1);
        nm[j] = *e;
    }
    if (c->memo && c->memo != c->inline_memo)
        kw_free(c->memo);
    c->memo = nm;
    c->memo_cap = ncap;
    return KW_OK;
}

/* Finds or inserts the memo entry of (node, rel) for the current subject. A fresh entry
 * has state MEMO_UNKNOWN. NULL on OOM. */
static kw_memo_ent_t *memo_get(kw_ck_t *c, uint32_t node, uint16_t rel)
{
    if ((c->memo_used + 1) * 2 > c->memo_cap && memo_grow(c) != KW_OK)
        return NULL;
    uint64_t k1 = ((uint64_t)node << 32) | ((uint64_t)rel << 16) | c->srel;
    uint32_t mask = c->memo_cap - 1;
    uint32_t j = (uint32_t)memo_hash(k1, c->snode, c->stype) & mask;
    for (;; j = (j + 1) & mask) {
        kw_memo_ent_t *e = &c->memo[j];
        if (!e->state) {
            e->k1 = k1;
            e->k2 = c->snode;
            e->k3 = c->stype;
            e->state = MEMO_UNKNOWN;
            e->miss = 0;
            c->memo_used++;
            return e;
        }
        if (e->k1 == k1 && e->k2 == c->snode && e->k3 == c->stype)
            return e;
    }
}

/* ---- caveats and expiry of one edge ---- */

/* The request context bound to caveat `cav`'s program (NULL without a request context).
 * KW_OK, KW_EINVAL (a field of the wrong type for that caveat) or KW_ENOMEM. */
static int req_ctx(kw_ck_t *c, uint16_t cav, const kw_cel_ctx_t **out)
{
    *out = NULL;
    if (c->req_json.len == 0)
        return KW_OK;
    if (!c->req && c->s->n_caveats <= KW_CK_REQ_INLINE) {
        memset(c->req_inline, 0, sizeof(c->req_inline));
        memset(c->req_done_inline, 0, sizeof(c->req_done_inline));
        c->req = c->req_inline;
        c->req_done = c->req_done_inline;
    } else if (!c->req) {
        c->req = kw_calloc(c->s->n_caveats, sizeof(kw_cel_ctx_t *));
        c->req_done = kw_calloc(c->s->n_caveats, 1);
        if (!c->req || !c->req_done) {
            forget_req(c);
            return kw_diag_set(c->diag, KW_ENOMEM, 0, 0, "out of memory during check");
        }
    }
    if (!c->req_done[cav]) {
        kw_diag_t d;
        kw_diag_clear(&d);
        /* Deferred: a request value that does not convert fails only an evaluation that
         * uses it, so a relationship whose own context sets that parameter is unaffected
         * (SpiceDB converts the request context after the relationship's has overridden
         * it). */
        int rc = kw_cel_ctx_bind_ex(c->s->caveats[cav].program, c->req_json, KW_CEL_BIND_DEFER,
                                    &c->req[cav], &d);
        if (rc != KW_OK)
            return kw_diag_set(c->diag, rc, 0, 0,
                               "the request context does not fit caveat %.*s: %s",
                               KW_STR_FMT(c->s->caveats[cav].name), d.msg);
        c->req_done[cav] = 1;
    }
    *out = c->req[cav];
    return KW_OK;
}

/* The bit of missing parameter `name` in the check's name table (adding it). */
static int name_bit(kw_ck_t *c, kw_str_t name, uint64_t *mask)
{
    for (uint32_t i = 0; i < c->n_names; i++) {
        if (kw_str_eq(c->names[i], name)) {
            *mask |= (uint64_t)1 << i;
            return KW_OK;
        }
    }
    if (c->n_names == KW_CK_MAX_NAMES)
        return kw_diag_set(c->diag, KW_ELIMIT, 0, 0,
                           "a check can report at most %d missing caveat parameters",
                           KW_CK_MAX_NAMES);
    c->names[c->n_names] = name;
    *mask |= (uint64_t)1 << c->n_names++;
    return KW_OK;
}

/* Evaluates the caveat of `a`: KW_CK_YES, KW_CK_NO, KW_CK_COND (*miss) or an error. */
static int eval_caveat(kw_ck_t *c, const kw_attr_t *a, uint64_t *miss)
{
    const kw_caveat_t *cv = &c->s->caveats[a->caveat];
    const kw_cel_ctx_t *req = NULL;
    int rc = req_ctx(c, a->caveat, &req); /* bound even when unused: its errors count */
    if (rc != KW_OK)
        return rc;
    if (a->fixed >= 0) /* the relationship's context decides (tag-kw-edge-attrs) */
        return a->fixed == KW_CEL_TRUE ? KW_CK_YES : KW_CK_NO;
    kw_cel_result_t res = KW_CEL_FALSE;
    c->scratch.len = 0;
    kw_diag_t d;
    kw_diag_clear(&d);
    rc = kw_cel_eval(cv->program, a->bound, req, &res, &c->scratch, &d);
    if (rc != KW_OK)
        return kw_diag_set(c->diag, rc, 0, 0, "caveat %.*s: %s", KW_STR_FMT(cv->name), d.msg);
    if (c->scratch.failed)
        return kw_diag_set(c->diag, KW_ENOMEM, 0, 0, "out of memory during check");
    if (res == KW_CEL_TRUE)
        return KW_CK_YES;
    if (res != KW_CEL_PARTIAL)
        return KW_CK_NO;
    /* Map the names back onto the program's own strings (they outlive the scratch). */
    uint64_t m = 0;
    size_t np = kw_cel_program_n_params(cv->program);
    const char *p = c->scratch.ptr, *end = c->scratch.ptr + c->scratch.len;
    while (p && p < end) {
        const char *q = memchr(p, ',', (size_t)(end - p));
        kw_str_t nm = {p, (size_t)((q ? q : end) - p)};
        for (size_t i = 0; i < np; i++) {
            kw_str_t pn = kw_cel_program_param(cv->program, i);
            if (kw_str_eq(pn, nm)) {
                if ((rc = name_bit(c, pn, &m)) != KW_OK)
                    return rc;
                break;
            }
        }
        p = q ? q + 1 : end;
    }
    *miss = m;
    return KW_CK_COND;
}

/* The value of the stored edge node#rel@snode#srel in this check: NO once expired or
 * when its caveat is false, YES without a caveat or when it holds, else COND. */
static inline int edge_val(kw_ck_t *c, uint32_t node, uint16_t rel, uint32_t snode, uint16_t srel,
                           uint64_t *miss)
{
    if (!kw__attr_maybe(c->g, node))
        return KW_CK_YES; /* tag-kw-edge-attrs: the common case costs one load */
    if (c->rel_attrs && !c->rel_attrs[c->rel_base[c->g->nodes[node].type] + rel])
        return KW_CK_YES; /* a relation whose allowed types have neither caveat nor expiry */
    const kw_attr_t *a = kw__attr_find(c->g, node, rel, snode, srel);
    if (!a)
        return KW_CK_YES;
    if (kw__attr_expired(a, c->now))
        return KW_CK_NO;
    if (a->caveat == KW_CAVEAT_NONE)
        return KW_CK_YES;
    return eval_caveat(c, a, miss);
}

/* ---- three-valued combination (tag-kw-check-3v) ---- */

/* `x AND y` where x is an edge's value (never NO here) and y what lies behind it. */
static inline int and3(int x, uint64_t xm, int y, uint64_t ym, uint64_t *miss)
{
    if (y < 0 || y == KW_CK_NO)
        return y;
    if (x == KW_CK_YES) {
        *miss = ym;
        return y;
    }
    *miss = xm | (y == KW_CK_COND ? ym : 0);
    return KW_CK_COND;
}

static int ck_rel(kw_ck_t *c, uint32_t node, uint16_t rel, int *low, uint64_t *miss);

static int ck_expr(kw_ck_t *c, uint32_t node, const kw_expr_t *x, int *low, uint64_t *miss)
{
    const kw_graph_t *g = c->g;
    switch (x->kind) {
    case KW_EXPR_NIL:
        return KW_CK_NO;
    case KW_EXPR_REF:
        return ck_rel(c, node, x->rel, low, miss);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        bool all = x->kind == KW_EXPR_ALL;
        uint32_t lo, hi;
        kw__graph_fwd_range(g, node, x->rel, &lo, &hi);
        const kw_edge_t *fv = kw__fwd(g, node).v; /* stable: the graph is read-only here */
        bool any = false, cond = false;
        uint64_t acc = 0;
        for (uint32_t i = lo; i < hi; i++) {
            /* An object listed with several subject relations is visited once per edge;
             * the memo makes the repeats cheap and AND/OR are idempotent. */
            const kw_edge_t ed = fv[i];
            uint64_t em = 0, tm = 0, m = 0;
            int ev = edge_val(c, node, x->rel, ed.other, ed.other_rel, &em);
            if (ev < 0)
                return ev;
            if (ev == KW_CK_NO) {
                /* .any(): nothing through this edge. .all(): an expired relationship is
                 * not there at all; a false caveat makes its term, and the whole, false. */
                if (!all || kw__attr_expired(kw__attr_find(g, node, x->rel, ed.other, ed.other_rel),
                                             c->now))
                    continue;
                return KW_CK_NO;
            }
            any = true;
            uint16_t t = x->target_by_type[g->nodes[ed.other].type];
            int r = t == KW_REL_NONE ? KW_CK_NO : ck_rel(c, ed.other, t, low, &tm);
            if (r < 0)
                return r;
            r = and3(ev, em, r, tm, &m);
            if (!all && r == KW_CK_YES)
                return KW_CK_YES;
            if (all && r == KW_CK_NO)
                return KW_CK_NO;
            if (r == KW_CK_COND) {
                cond = true;
                acc |= m;
            }
        }
        if (all && !any)
            return KW_CK_NO;
        if (cond) {
            *miss = acc;
            return KW_CK_COND;
        }
        return all ? KW_CK_YES : KW_CK_NO;
    }
    case KW_EXPR_UNION: {
        bool cond = false;
        uint64_t acc = 0;
        for (uint32_t i = 0; i < x->n_children; i++) {
            uint64_t m = 0;
            int r = ck_expr(c, node, x->children[i], low, &m);
            if (r < 0 || r == KW_CK_YES)
                return r;
            if (r == KW_CK_COND) {
                cond = true;
                acc |= m;
            }
        }
        *miss = acc;
        return cond ? KW_CK_COND : KW_CK_NO;
    }
    case KW_EXPR_INTERSECT: {
        /* Cheapest child first (tag-kw-check-order): the value does not depend on it. */
        bool cond = false;
        uint64_t acc = 0;
        const uint32_t *ord = x->check_order;
        for (uint32_t i = 0; i < x->n_children; i++) {
            uint64_t m = 0;
            int r = ck_expr(c, node, x->children[ord ? ord[i] : i], low, &m);
            if (r < 0 || r == KW_CK_NO)
                return r;
            if (r == KW_CK_COND) {
                cond = true;
                acc |= m;
            }
        }
        *miss = acc;
        return cond ? KW_CK_COND : KW_CK_YES;
    }
    case KW_EXPR_EXCLUDE: {
        uint64_t acc = 0;
        int r = ck_expr(c, node, x->children[0], low, &acc);
        if (r < 0 || r == KW_CK_NO)
            return r;
        bool cond = r == KW_CK_COND;
        for (uint32_t i = 1; i < x->n_children; i++) {
            uint64_t m = 0;
            c->neg++;
            int b = ck_expr(c, node, x->children[i], low, &m);
            c->neg--;
            if (b < 0)
                return b;
            if (b == KW_CK_YES)
                return KW_CK_NO;
            if (b == KW_CK_COND) {
                cond = true;
                acc |= m;
            }
        }
        *miss = acc;
        return cond ? KW_CK_COND : KW_CK_YES;
    }
    }
    return kw_diag_set(c->diag, KW_EINTERNAL, 0, 0, "unknown expression kind %d", (int)x->kind);
}

/* The value of the edge node#rel@other#orel, looked for among v[lo, hi) (node's fwd edges
 * of relation rel): KW_CK_NO when it is not stored. */
static int direct_one(kw_ck_t *c, uint32_t node, uint16_t rel, const kw_edge_t *v, uint32_t lo,
                      uint32_t hi, uint32_t other, uint16_t orel, uint64_t *miss)
{
    uint32_t i = lo + kw__graph_lower(v + lo, hi - lo, kw__fwd_key(rel, orel, other), true);
    if (i == hi || v[i].other != other || v[i].other_rel != orel)
        return KW_CK_NO;
    return edge_val(c, node, rel, other, orel, miss);
}

/* The direct part of a relation: an edge to the subject itself or to its wildcard, among
 * v[lo, hi) (node's fwd edges of relation rel). */
static int direct_match(kw_ck_t *c, uint32_t node, uint16_t rel, const kw_edge_t *v, uint32_t lo,
                        uint32_t hi, uint64_t *miss)
{
    int a = KW_CK_NO, b = KW_CK_NO;
    uint64_t am = 0, bm = 0;
    if (c->snode != KW_NODE_NONE) {
        a = direct_one(c, node, rel, v, lo, hi, c->snode, c->srel, &am);
        if (a < 0 || a == KW_CK_YES)
            return a;
    }
    if (c->swild != KW_NODE_NONE) {
        b = direct_one(c, node, rel, v, lo, hi, c->swild, KW_REL_NONE, &bm);
        if (b < 0 || b == KW_CK_YES)
            return b;
    }
    if (a == KW_CK_COND || b == KW_CK_COND) {
        *miss = (a == KW_CK_COND ? am : 0) | (b == KW_CK_COND ? bm : 0);
        return KW_CK_COND;
    }
    return KW_CK_NO;
}

/* Follows the subject-set edges of node#rel (those with a subject relation) among v[lo, hi)
 * (node's fwd edges of relation rel). */
static int ck_sets(kw_ck_t *c, uint32_t node, uint16_t rel, const kw_edge_t *v, uint32_t lo,
                   uint32_t hi, int *low, uint64_t *miss)
{
    bool cond = false;
    uint64_t acc = 0;
    for (uint32_t i = lo; i < hi; i++) {
        const kw_edge_t ed = v[i];
        if (ed.other_rel == KW_REL_NONE)
            break; /* sorted by other_rel: plain subjects come last */
        uint64_t em = 0, tm = 0, m = 0;
        int ev = edge_val(c, node, rel, ed.other, ed.other_rel, &em);
        if (ev < 0)
            return ev;
        if (ev == KW_CK_NO)
            continue;
        int r = ck_rel(c, ed.other, ed.other_rel, low, &tm);
        if (r < 0)
            return r;
        r = and3(ev, em, r, tm, &m);
        if (r == KW_CK_YES)
            return r;
        if (r == KW_CK_COND) {
            cond = true;
            acc |= m;
        }
    }
    *miss = acc;
    return cond ? KW_CK_COND : KW_CK_NO;
}

static int ck_rel(kw_ck_t *c, uint32_t node, uint16_t rel, int *low, uint64_t *miss)
{
    if (node == c->snode && rel == c->srel)
        return KW_CK_YES; /* a subject set has itself */
    const kw_type_t *ty = &c->s->types[c->g->nodes[node].type];
    if (rel >= ty->n_rels)
        return kw_diag_set(c->diag, KW_EINTERNAL, 0, 0, "relation index out of range");
    const kw_relation_t *rd = &ty->rels[rel];
    if (++c->steps > KW_MAX_CHECK_STEPS) /* tag-kw-query-budget */
        return kw_diag_set(c->diag, KW_EBUDGET, 0, 0,
                           "check exceeded its budget of %u steps at %.*s:%.*s#%.*s",
                           KW_MAX_CHECK_STEPS, KW_STR_FMT(ty->name),
                           KW_STR_FMT(kw__node_str(&c->g->nodes[node])), KW_STR_FMT(rd->name));
    int direct = KW_CK_NO;
    uint64_t dmiss = 0;
    uint32_t lo = 0, hi = 0;
    const kw_edge_t *fv = NULL;
    if (!rd->is_permission) {
        /* The edges of node#rel, found once (the graph is read-only during a check). */
        kw__graph_fwd_range(c->g, node, rel, &lo, &hi);
        fv = kw__fwd(c->g, node).v;
        direct = direct_match(c, node, rel, fv, lo, hi, &dmiss);
        if (direct < 0 || direct == KW_CK_YES)
            return direct;
        if (lo == hi || fv[lo].other_rel == KW_REL_NONE) {
            *miss = dmiss;
            return direct; /* a leaf: no subject sets, no recursion, nothing to memoize */
        }
    }
    kw_memo_ent_t *m = memo_get(c, node, rel);
    if (!m)
        return kw_diag_set(c->diag, KW_ENOMEM, 0, 0, "out of memory during check");
    switch (m->state) {
    case MEMO_YES:
        return KW_CK_YES;
    case MEMO_NO:
        return KW_CK_NO;
    case MEMO_COND:
        *miss = m->miss;
        return KW_CK_COND;
    case MEMO_OPEN:
        if (c->neg > c->frame_neg[m->depth])
            return kw_diag_set(c->diag, KW_ECYCLE, 0, 0,
                               "relationship cycle through the subtracted side of an exclusion "
                               "at %.*s:%.*s#%.*s",
                               KW_STR_FMT(ty->name), KW_STR_FMT(kw__node_str(&c->g->nodes[node])),
                               KW_STR_FMT(rd->name));
        if (m->depth < *low)
            *low = m->depth;
        return KW_CK_NO;
    default:
        break;
    }
    if (c->depth >= KW_MAX_CHECK_DEPTH)
        return kw_diag_set(c->diag, KW_EDEPTH, 0, 0,
                           "check exceeded the maximum depth of %d at %.*s:%.*s#%.*s",
                           KW_MAX_CHECK_DEPTH, KW_STR_FMT(ty->name),
                           KW_STR_FMT(kw__node_str(&c->g->nodes[node])), KW_STR_FMT(rd->name));
    const uint32_t cap = c->memo_cap;
    const kw_memo_ent_t *tab = c->memo;
    int d = c->depth++;
    m->state = MEMO_OPEN;
    m->depth = (uint8_t)d;
    c->frame_neg[d] = c->neg;
    int my_low = NO_LOW;
    uint64_t rm = 0;
    int r = rd->is_permission ? ck_expr(c, node, rd->expr, &my_low, &rm)
                              : ck_sets(c, node, rel, fv, lo, hi, &my_low, &rm);
    c->depth--;
    if (r >= 0 && direct == KW_CK_COND && r != KW_CK_YES) {
        rm = (r == KW_CK_COND ? rm : 0) | dmiss;
        r = KW_CK_COND;
    }
    /* The table may have grown during the recursion (entries move only then): look the
     * entry up again if it did. */
    if (c->memo_cap != cap || c->memo != tab) {
        m = memo_get(c, node, rel);
        if (!m)
            return kw_diag_set(c->diag, KW_ENOMEM, 0, 0, "out of memory during check");
    }
    if (r < 0) {
        m->state = MEMO_UNKNOWN;
        return r;
    }
    if (r == KW_CK_YES || my_low >= d) {
        m->state = r == KW_CK_YES ? MEMO_YES : r == KW_CK_NO ? MEMO_NO : MEMO_COND;
        m->miss = rm;
    } else {
        m->state = MEMO_UNKNOWN; /* depends on an open ancestor: recompute next time */
        if (my_low < *low)
            *low = my_low;
    }
    *miss = rm;
    return r;
}

int kw__ck_check(kw_ck_t *c, uint32_t node, uint16_t rel)
{
    int low = NO_LOW;
    uint64_t miss = 0;
    c->depth = 0;
    c->neg = 0;
    c->steps = 0;
    c->miss = 0;
    int r = ck_rel(c, node, rel, &low, &miss);
    if (r < 0) /* an aborted search leaves open markers behind: forget everything */
        forget_memo(c);
    else if (r == KW_CK_COND)
        c->miss = miss;
    return r;
}

/* The schema-only walk of kw__ck_absent. Without relationships nothing is memoized, and
 * a permission that names the one before it several times makes the walk exponential:
 * every path counts against the check budget (tag-kw-query-budget). */
typedef struct absent {
    const kw_schema_t *s;
    uint16_t srel;
    uint32_t steps;
    kw_diag_t *diag;
} absent_t;

static int absent_expr(absent_t *a, uint16_t type, const kw_expr_t *x, int depth);

static int absent_rel(absent_t *a, uint16_t type, uint16_t rel, int depth)
{
    if (rel == a->srel)
        return 1;
    const kw_relation_t *rd = &a->s->types[type].rels[rel];
    if (!rd->is_permission || depth > KW_MAX_EXPR_DEPTH)
        return 0; /* no relationships; the compiler refuses same-object REF cycles */
    if (++a->steps > KW_MAX_CHECK_STEPS)
        return kw_diag_set(a->diag, KW_EBUDGET, 0, 0,
                           "check exceeded its budget of %u steps in the schema of %.*s#%.*s",
                           KW_MAX_CHECK_STEPS, KW_STR_FMT(a->s->types[type].name),
                           KW_STR_FMT(rd->name));
    return absent_expr(a, type, rd->expr, depth + 1);
}

/* 1 or 0 as the expression holds for the subject set itself, or a negative KW_E*. */
static int absent_expr(absent_t *a, uint16_t type, const kw_expr_t *x, int depth)
{
    switch (x->kind) {
    case KW_EXPR_REF:
        return absent_rel(a, type, x->rel, depth + 1);
    case KW_EXPR_UNION:
        for (uint32_t i = 0; i < x->n_children; i++) {
            int r = absent_expr(a, type, x->children[i], depth + 1);
            if (r != 0)
                return r;
        }
        return 0;
    case KW_EXPR_INTERSECT:
        for (uint32_t i = 0; i < x->n_children; i++) {
            int r = absent_expr(a, type, x->children[i], depth + 1);
            if (r != 1)
                return r;
        }
        return 1;
    case KW_EXPR_EXCLUDE: {
        int r = absent_expr(a, type, x->children[0], depth + 1);
        if (r != 1)
            return r;
        for (uint32_t i = 1; i < x->n_children; i++) {
            r = absent_expr(a, type, x->children[i], depth + 1);
            if (r != 0)
                return r < 0 ? r : 0;
        }
        return 1;
    }
    default: /* NIL, and arrows need relationships */
        return 0;
    }
}

int kw__ck_absent(const kw_schema_t *s, uint16_t type, uint16_t rel, uint16_t srel, kw_diag_t *diag)
{
    absent_t a = {s, srel, 0, diag};
    return absent_rel(&a, type, rel, 0);
}

/* ---- the entry points: Check and CheckBulk ---- */

/*
 * Names (tag-kw-check-names): resolving the resource type, the permission and the subject
 * type against the schema's hash tables was a third of a direct Check's instructions.
 * Each thread remembers the last resource (type, permission) and subject (type, relation)
 * names it resolved, with their indices, keyed by the model's generation: unique per
 * model, so a schema change (or a freed model whose address comes back) never matches.
 * Per thread, so concurrent readers write nothing shared. Only successful resolutions
 * are remembered; a miss takes the full path with its errors.
 */
#define NAME_MEMO_LEN 48

typedef struct name_memo {
    uint64_t gen; /* kw_model_t.gen; 0: empty */
    uint16_t a_len, b_len;
    uint16_t x, y;
    char a[NAME_MEMO_LEN], b[NAME_MEMO_LEN];
} name_memo_t;

static _Thread_local name_memo_t perm_names, subj_names;

/* Equal bytes, without a call for the short strings Check compares (names, UUIDs). */
static inline bool bytes_eq(const char *p, const char *q, size_t n)
{
    if (n >= 8) {
        uint64_t a, b;
        size_t i = 0;
        for (; i + 8 < n; i += 8) {
            memcpy(&a, p + i, 8);
            memcpy(&b, q + i, 8);
            if (a != b)
                return false;
        }
        memcpy(&a, p + n - 8, 8); /* the last 8 bytes, overlapping the loop's */
        memcpy(&b, q + n - 8, 8);
        return a == b;
    }
    if (n >= 4) {
        uint32_t a, b, c, d;
        memcpy(&a, p, 4);
        memcpy(&b, q, 4);
        memcpy(&c, p + n - 4, 4);
        memcpy(&d, q + n - 4, 4);
        return a == b && c == d;
    }
    for (size_t i = 0; i < n; i++)
        if (p[i] != q[i])
            return false;
    return true;
}

static inline bool names_hit(const name_memo_t *m, uint64_t gen, kw_str_t a, kw_str_t b)
{
    return m->gen == gen && m->a_len == a.len && m->b_len == b.len &&
           bytes_eq(m->a, a.ptr, a.len) && bytes_eq(m->b, b.ptr, b.len);
}

static void names_put(name_memo_t *m, uint64_t gen, kw_str_t a, kw_str_t b, uint16_t x, uint16_t y)
{
    if (a.len > NAME_MEMO_LEN || b.len > NAME_MEMO_LEN)
        return;
    if (a.len)
        memcpy(m->a, a.ptr, a.len);
    if (b.len)
        memcpy(m->b, b.ptr, b.len);
    m->a_len = (uint16_t)a.len;
    m->b_len = (uint16_t)b.len;
    m->x = x;
    m->y = y;
    m->gen = gen;
}

/* A check's names and objects, resolved. */
typedef struct check_q {
    uint16_t t, r, stype, srel;
    uint32_t rnode, snode;
} check_q_t;

/* Resolves the names and finds both objects (under the read lock). KW_OK with q filled
 * and *done false: evaluate; KW_OK with *done true: *result is the answer (the resource
 * has no relationships); or an error. */
static int check_find(kw_engine_t *e, kw_object_t res, kw_str_t perm, kw_subject_t subj,
                      check_q_t *q, bool *done, kw_check_result_t *result, kw_diag_t *diag)
{
    uint16_t t, r, stype, srel;
    const uint64_t gen = e->model->gen;
    int rc;
    *done = false;
    if (names_hit(&perm_names, gen, res.type, perm)) {
        t = perm_names.x;
        r = perm_names.y;
    } else {
        if ((rc = kw__resolve_perm(e, res.type, perm, &t, &r, diag)) != KW_OK)
            return rc;
        names_put(&perm_names, gen, res.type, perm, t, r);
    }
    /* The wildcard subject "*" always takes the full path (its own rules and errors). */
    bool star = subj.id.len == 1 && subj.id.ptr[0] == '*';
    bool subj_known = !star && names_hit(&subj_names, gen, subj.type, subj.relation);
    if (subj_known) {
        stype = subj_names.x;
        srel = subj_names.y;
    } else {
        if ((rc = kw__resolve_subject(e, subj, &stype, &srel, NULL, diag)) != KW_OK)
            return rc;
        if (!star)
            names_put(&subj_names, gen, subj.type, subj.relation, stype, srel);
    }
    /* Both lookups at once: their cache misses overlap. */
    const uint16_t types[2] = {t, stype};
    const kw_str_t ids[2] = {res.id, subj.id};
    uint32_t nodes[2];
    kw__graph_find2(&e->g, types, ids, nodes);
    uint32_t rnode = nodes[0];
    /* A stored id passed kw__id_ok when it was written, so only an id the graph does not
     * hold (or the wildcard node's "*", never a resource) needs the scan. The subject's
     * was scanned by kw__resolve_subject unless its names were remembered. */
    if (subj_known && nodes[1] == KW_NODE_NONE && !kw__id_ok(subj.id))
        return kw__bad_id(diag, "subject", subj.id);
    if ((rnode == KW_NODE_NONE || rnode == e->g.wild[t]) && !kw__id_ok(res.id))
        return kw__bad_id(diag, "resource", res.id);
    if (rnode == KW_NODE_NONE) {
        /* A subject set has itself, even when the object has no relationships at all. */
        int self = 0;
        if (srel != KW_REL_NONE && stype == t && kw_str_eq(res.id, subj.id))
            self = kw__ck_absent(e->model->schema, t, r, srel, diag);
        if (self < 0)
            return self;
        *result = self ? KW_CHECK_YES : KW_CHECK_NO;
        *done = true;
        return KW_OK;
    }
    *q = (check_q_t){t, r, stype, srel, rnode, nodes[1]};
    return KW_OK;
}

/* Is the edge with fwd key `key` among v[0, n) (sorted by kw__fwd_key)? */
static inline bool fwd_has(const kw_edge_t *v, uint32_t n, uint64_t key)
{
    if (n <= 8) {
        for (uint32_t i = 0; i < n; i++) {
            uint64_t k = kw__fwd_key(v[i].rel, v[i].other_rel, v[i].other);
            if (k >= key)
                return k == key;
        }
        return false;
    }
    uint32_t i = kw__graph_lower(v, n, key, true);
    return i < n && kw__fwd_key(v[i].rel, v[i].other_rel, v[i].other) == key;
}

/*
 * The direct-relation fast path (tag-kw-check-direct): a Check of a relation (not a
 * permission) on a resource whose relationships carry no caveat or expiry is "is the
 * edge to the subject, or to its type's wildcard, stored?" unless the relation also
 * holds subject sets, which need the recursion. It answers those cases without the check
 * context (its setup was a third of such a Check's instructions) and returns -1 for
 * everything else, which the general path (ck_rel) then decides. It must agree with
 * ck_rel exactly: kw__engine_check_general lets the tests compare the two.
 */
static int check_direct(const kw_graph_t *g, const kw_schema_t *s, const check_q_t *q)
{
    const kw_node_t *nd = &g->nodes[q->rnode];
    const kw_type_t *ty = &s->types[nd->type];
    if (q->r >= ty->n_rels || ty->rels[q->r].is_permission || (nd->flags & KW_NODE_ATTR))
        return -1;
    if (q->rnode == q->snode && q->r == q->srel)
        return KW_CK_YES; /* a subject set has itself */
    kw_eslice_t es = kw__node_fwd(nd);
    if (q->snode != KW_NODE_NONE && fwd_has(es.v, es.n, kw__fwd_key(q->r, q->srel, q->snode)))
        return KW_CK_YES;
    uint32_t swild = q->stype < KW_MAX_TYPES ? g->wild[q->stype] : KW_NODE_NONE;
    if (swild != KW_NODE_NONE && fwd_has(es.v, es.n, kw__fwd_key(q->r, KW_REL_NONE, swild)))
        return KW_CK_YES;
    /* No match: a NO unless the relation holds subject sets (sorted first among its
     * edges: other_rel KW_REL_NONE is the largest). */
    uint64_t first = kw__fwd_key(q->r, 0, 0);
    uint32_t i = es.n <= 8 ? 0 : kw__graph_lower(es.v, es.n, first, true);
    while (i < es.n && es.v[i].rel < q->r)
        i++;
    if (i == es.n || es.v[i].rel != q->r || es.v[i].other_rel == KW_REL_NONE)
        return KW_CK_NO;
    return -1;
}

/* Before a permission's walk: asks for the records of the objects the resource's own
 * relationships point to (an API key's agent and account), so their misses overlap
 * instead of coming one after the other as the walk reaches them. Only for in-place
 * edges (a handful); a prefetch changes no answer. */
static inline void prefetch_targets(const kw_graph_t *g, uint32_t rnode)
{
    const kw_node_t *nd = &g->nodes[rnode];
    if (nd->flags & KW_NODE_FWD_HEAP)
        return;
    uint32_t n = kw__node_ninl(nd);
    for (uint32_t i = 0; i < n; i++)
        __builtin_prefetch(&g->nodes[nd->fwd.inl[i].other]);
}

/* Evaluates a found check with `c` (its time and request context set by the caller). */
static int check_eval(kw_engine_t *e, kw_ck_t *c, const check_q_t *q, kw_check_result_t *result)
{
    prefetch_targets(&e->g, q->rnode);
    kw__ck_subject(c, q->snode, q->stype, q->srel);
    int v = kw__ck_check(c, q->rnode, q->r);
    if (v < 0)
        return v;
    *result = v == KW_CK_YES ? KW_CHECK_YES : v == KW_CK_COND ? KW_CHECK_CONDITIONAL : KW_CHECK_NO;
    return KW_OK;
}

/* One item of CheckBulk under the read lock, sharing `c` (and its memo) with the other
 * items; the caller set c's time and request context. With KW_CHECK_CONDITIONAL, c->miss
 * names what is missing. A direct relation takes the fast path (tag-kw-check-direct). */
static int check_one(kw_engine_t *e, kw_ck_t *c, kw_object_t res, kw_str_t perm, kw_subject_t subj,
                     kw_check_result_t *result, kw_diag_t *diag)
{
    check_q_t q;
    bool done;
    c->diag = diag;
    c->miss = 0;
    int rc = check_find(e, res, perm, subj, &q, &done, result, diag);
    if (rc != KW_OK || done)
        return rc;
    int v = check_direct(&e->g, c->s, &q);
    if (v >= 0) {
        *result = v == KW_CK_YES ? KW_CHECK_YES : KW_CHECK_NO;
        return KW_OK;
    }
    return check_eval(e, c, &q, result);
}

/* kw_engine_check_ctx, with the direct fast path (fast) or without it. */
static int check_entry(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                       kw_subject_t subject, kw_str_t context, kw_check_result_t *result,
                       kw_buf_t *missing, kw_revision_t *rev, kw_diag_t *diag, bool fast)
{
    kw_ck_t c;
    kw_check_result_t res = KW_CHECK_NO;
    kw__engine_rdlock(e);
    int rc;
    if (!e->model) {
        rc = kw__engine_no_schema(diag);
        goto out;
    }
    check_q_t q;
    bool done;
    rc = check_find(e, resource, permission, subject, &q, &done, &res, diag);
    if (rc != KW_OK || done)
        goto answered;
    int v = fast ? check_direct(&e->g, e->model->schema, &q) : -1;
    if (v >= 0) {
        res = v == KW_CK_YES ? KW_CHECK_YES : KW_CHECK_NO;
        goto answered;
    }
    kw__ck_init(&c, &e->g, e->model->schema, diag);
    kw__ck_model(&c, e->model);
    kw__ck_context(&c, kw__engine_query_now(e), context);
    rc = check_eval(e, &c, &q, &res);
    if (rc == KW_OK && res == KW_CHECK_CONDITIONAL && missing) {
        kw__ck_missing(&c, c.miss, missing);
        if (missing->failed)
            rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during check");
    }
    kw__ck_close(&c);
answered:
    if (rc == KW_OK && rev)
        *rev = e->rev;
out:
    kw__engine_unlock(e);
    if (rc == KW_OK)
        *result = res;
    return rc;
}

int kw_engine_check_ctx(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                        kw_subject_t subject, kw_str_t context, kw_check_result_t *result,
                        kw_buf_t *missing, kw_revision_t *rev, kw_diag_t *diag)
{
    return check_entry(e, resource, permission, subject, context, result, missing, rev, diag, true);
}

int kw__engine_check_general(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                             kw_subject_t subject, kw_str_t context, kw_check_result_t *result,
                             kw_buf_t *missing, kw_revision_t *rev, kw_diag_t *diag)
{
    return check_entry(e, resource, permission, subject, context, result, missing, rev, diag,
                       false);
}

int kw_engine_check(kw_engine_t *e, kw_object_t resource, kw_str_t permission, kw_subject_t subject,
                    kw_check_result_t *result, kw_revision_t *rev, kw_diag_t *diag)
{
    return kw_engine_check_ctx(e, resource, permission, subject, KW_STR_NULL, result, NULL, rev,
                               diag);
}

int kw_engine_check_bulk_ctx(kw_engine_t *e, kw_check_item_t *items, size_t n, kw_arena_t *arena,
                             kw_revision_t *rev)
{
    kw_ck_t c;
    int rc = KW_OK;
    kw__engine_rdlock(e);
    if (!e->model) {
        for (size_t i = 0; i < n; i++) {
            items[i].result = KW_CHECK_NO;
            items[i].missing = KW_STR_NULL;
            items[i].rc = kw__engine_no_schema(&items[i].diag);
        }
    } else {
        kw_buf_t names;
        kw_buf_init(&names);
        int64_t now = kw__engine_query_now(e);
        kw__ck_init(&c, &e->g, e->model->schema, NULL);
        kw__ck_model(&c, e->model);
        for (size_t i = 0; i < n; i++) {
            kw_check_item_t *it = &items[i];
            kw_check_result_t res = KW_CHECK_NO;
            kw_diag_clear(&it->diag);
            it->missing = KW_STR_NULL;
            /* Items with equal contexts share the memo; another context forgets it. */
            kw__ck_context(&c, now, it->context);
            it->rc = check_one(e, &c, it->resource, it->permission, it->subject, &res, &it->diag);
            it->result = it->rc == KW_OK ? res : KW_CHECK_NO;
            if (it->rc == KW_OK && res == KW_CHECK_CONDITIONAL && arena) {
                names.len = 0;
                kw__ck_missing(&c, c.miss, &names);
                if (names.failed || kw_arena_str_copy(arena, (kw_str_t){names.ptr, names.len},
                                                      &it->missing) != KW_OK)
                    rc = KW_ENOMEM;
            }
        }
        kw__ck_close(&c);
        kw_buf_free(&names);
    }
    if (rev)
        *rev = e->rev;
    kw__engine_unlock(e);
    return rc;
}

int kw_engine_check_bulk(kw_engine_t *e, kw_check_item_t *items, size_t n, kw_revision_t *rev)
{
    return kw_engine_check_bulk_ctx(e, items, n, NULL, rev);
}
