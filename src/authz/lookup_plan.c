/*
 * authz/lookup_plan.c - LookupResources' planned path: results bounded by the answer.
 *
 * The general path (lookup.c) walks every (node, rel) pair the subject reaches and checks
 * every candidate of the wanted permission. This file instead evaluates the permission's
 * expression bottom-up, per (type, relation), into node sets that are a SUPERSET of the
 * objects holding it for the subject, each node flagged "sure" when its membership is
 * proven (a chain of plain relationships, unions and arrows, no attributes on the way):
 *  - a relation: the subject's own reverse edges, its type's wildcard's, and those of
 *    every subject set (allowed `U#m`) whose set for (U, m) holds;
 *  - a union: the union of its children's sets;
 *  - an arrow `ts->tgt` (and `.all`, never sure): the resources R with R#ts@x for every x
 *    in the set of (type of x, tgt);
 *  - an intersection: the set of its SELECTIVE child only, each candidate verified on the
 *    other children (Check on (x, rel) for references, on the tupleset's objects for
 *    arrows); a child is selective when it finishes first: children are evaluated in
 *    turn under a work budget that grows 4x per round, so the cost is within a small
 *    factor of the cheapest child whatever the data;
 *  - an exclusion: the set of its positive side, each candidate verified on the other.
 * A verification that cannot decide (a caveat, an expiry, `.all`, an error inside the
 * sub-check) leaves the candidate "not sure". At the end every sure node is a YES and
 * every other one is checked with Check on the queried permission, so the answer is
 * exactly the general path's. A permission that depends on itself (nested groups,
 * folder hierarchies) is not planned: KW_EAGAIN sends the query to the general path,
 * which this file leaves untouched. Nothing is reported before the plan is complete, so
 * a fallback never repeats a result.
 * Cost: O(result + schema depth) for the planned shapes, plus the verifications of the
 * selective side's candidates; memory O(result). Work counts against the lookup budget
 * (tag-kw-query-budget).
 */
#include <string.h>

#include "authz/engine_int.h"

/* An internal result: the work budget of the current attempt ran out (lp_t.limit). */
#define LP_HIT 1

#define SURE 1u

/* A node set: dense (node, flags) plus an open-addressing index (dense index + 1). */
typedef struct lp_set {
    uint32_t *node;
    uint8_t *flag;
    size_t n, cap;
    uint32_t *slot;
    uint32_t n_slot; /* power of two or 0 */
} lp_set_t;

typedef struct lp {
    kw_ck_t *c;
    const kw_model_t *m;
    const kw_graph_t *g;
    const kw_schema_t *s;
    uint8_t *state; /* per (type, rel): 0 not computed, 1 in progress, 2 done */
    lp_set_t *memo; /* per (type, rel) */
    uint64_t work;  /* edges looked at + check steps */
    uint64_t limit; /* LP_HIT past it */
    int vdepth;     /* nesting of verify_rel through permissions */
    kw_diag_t *diag;
} lp_t;

static void set_free(lp_set_t *s)
{
    kw_free(s->node);
    kw_free(s->flag);
    kw_free(s->slot);
    memset(s, 0, sizeof(*s));
}

static int set_rehash(lp_set_t *s, uint32_t n_slot)
{
    uint32_t *ns = kw_calloc(n_slot, sizeof(uint32_t));
    if (!ns)
        return KW_ENOMEM;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t j = (uint32_t)kw_hash_u64(s->node[i]) & (n_slot - 1);
        while (ns[j])
            j = (j + 1) & (n_slot - 1);
        ns[j] = (uint32_t)i + 1;
    }
    kw_free(s->slot);
    s->slot = ns;
    s->n_slot = n_slot;
    return KW_OK;
}

/* Builds the index of a set filled by set_push alone (n_slot 0), or grows it. */
static int set_index(lp_set_t *s, size_t need)
{
    uint32_t n_slot = s->n_slot ? s->n_slot : 64;
    while (need * 2 > n_slot) {
        if (n_slot >= (1u << 31))
            return KW_ENOMEM;
        n_slot *= 2;
    }
    return n_slot == s->n_slot ? KW_OK : set_rehash(s, n_slot);
}

/* Appends `node` without looking for it: only while the set has no index (n_slot 0) and
 * every node pushed is known distinct (one node's reverse edges of one (other_rel, rel)). */
static int set_push(lp_set_t *s, uint32_t node, uint8_t flag)
{
    if (s->n == s->cap) {
        size_t cap = s->cap, cap2 = s->cap;
        if (kw_grow((void **)&s->node, &cap, s->n + 1, sizeof(uint32_t)) != KW_OK ||
            kw_grow((void **)&s->flag, &cap2, s->n + 1, 1) != KW_OK)
            return KW_ENOMEM;
        s->cap = cap < cap2 ? cap : cap2;
    }
    s->node[s->n] = node;
    s->flag[s->n++] = flag;
    return KW_OK;
}

/* The flags of `node` in s (indexed), or -1 when absent. */
static int set_find(const lp_set_t *s, uint32_t node)
{
    if (!s->n_slot)
        return -1;
    uint32_t j = (uint32_t)kw_hash_u64(node) & (s->n_slot - 1);
    for (; s->slot[j]; j = (j + 1) & (s->n_slot - 1))
        if (s->node[s->slot[j] - 1] == node)
            return s->flag[s->slot[j] - 1];
    return -1;
}

/* Adds `node` with `flag` (a node already present keeps the union of its flags). */
static int set_add(lp_set_t *s, uint32_t node, uint8_t flag)
{
    if ((s->n + 1) * 2 > s->n_slot && set_index(s, s->n + 1) != KW_OK)
        return KW_ENOMEM;
    uint32_t j = (uint32_t)kw_hash_u64(node) & (s->n_slot - 1);
    for (; s->slot[j]; j = (j + 1) & (s->n_slot - 1)) {
        uint32_t i = s->slot[j] - 1;
        if (s->node[i] == node) {
            s->flag[i] |= flag;
            return KW_OK;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap, cap2 = s->cap;
        if (kw_grow((void **)&s->node, &cap, s->n + 1, sizeof(uint32_t)) != KW_OK ||
            kw_grow((void **)&s->flag, &cap2, s->n + 1, 1) != KW_OK)
            return KW_ENOMEM;
        s->cap = cap < cap2 ? cap : cap2;
    }
    s->node[s->n] = node;
    s->flag[s->n] = flag;
    s->slot[j] = (uint32_t)++s->n;
    return KW_OK;
}

/* Indexes a set filled by set_push with repeats allowed (n_slot 0), dropping the repeats
 * (a node repeated keeps the union of its flags): one pass with the index sized at once,
 * cheaper than set_add's growing index. */
static int set_dedup(lp_set_t *s)
{
    if (s->n_slot || s->n == 0)
        return KW_OK;
    uint32_t n_slot = 64;
    while (s->n * 2 > n_slot) {
        if (n_slot >= (1u << 31))
            return KW_ENOMEM;
        n_slot *= 2;
    }
    uint32_t *ns = kw_calloc(n_slot, sizeof(uint32_t));
    if (!ns)
        return KW_ENOMEM;
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t node = s->node[i];
        uint32_t j = (uint32_t)kw_hash_u64(node) & (n_slot - 1);
        while (ns[j] && s->node[ns[j] - 1] != node)
            j = (j + 1) & (n_slot - 1);
        if (ns[j]) {
            s->flag[ns[j] - 1] |= s->flag[i];
            continue;
        }
        s->node[w] = node;
        s->flag[w] = s->flag[i];
        ns[j] = (uint32_t)++w;
    }
    s->n = w;
    s->slot = ns;
    s->n_slot = n_slot;
    return KW_OK;
}

/* Moves src into dst when dst is empty, else adds every element. */
static int set_merge(lp_set_t *dst, lp_set_t *src)
{
    if (dst->n == 0) {
        set_free(dst);
        *dst = *src;
        memset(src, 0, sizeof(*src));
        return KW_OK;
    }
    for (size_t i = 0; i < src->n; i++)
        if (set_add(dst, src->node[i], src->flag[i]) != KW_OK)
            return KW_ENOMEM;
    return KW_OK;
}

static int set_copy(lp_set_t *dst, const lp_set_t *src)
{
    if (dst->n == 0 && dst->n_slot == 0 && src->n) {
        /* a clone: the common case of a permission that is one reference */
        size_t cap = 0, cap2 = 0;
        if (kw_grow((void **)&dst->node, &cap, src->n, sizeof(uint32_t)) != KW_OK ||
            kw_grow((void **)&dst->flag, &cap2, src->n, 1) != KW_OK)
            return KW_ENOMEM;
        dst->cap = cap < cap2 ? cap : cap2;
        memcpy(dst->node, src->node, src->n * sizeof(uint32_t));
        memcpy(dst->flag, src->flag, src->n);
        dst->n = src->n;
        return KW_OK;
    }
    for (size_t i = 0; i < src->n; i++)
        if (set_add(dst, src->node[i], src->flag[i]) != KW_OK)
            return KW_ENOMEM;
    return KW_OK;
}

static int spend(lp_t *q, uint64_t n)
{
    q->work += n;
    return q->work > q->limit ? LP_HIT : KW_OK;
}

/* ---- walking reverse edges (tag-kw-edge-order: rev sorted by (other_rel, rel, other)) */

/* Adds every R of type `rt` with R#rel@x#orel, flagged `flag` (cleared on R that may
 * carry attributes: a caveat or an expiry is for Check to judge). raw: out is being filled
 * with repeats allowed (set_dedup follows). */
static int add_rev(lp_t *q, lp_set_t *out, uint32_t x, uint16_t orel, uint16_t rel, uint16_t rt,
                   uint8_t flag, bool raw)
{
    const kw_eslice_t sl = kw__rev(q->g, x), *es = &sl;
    uint32_t i = kw__graph_lower(es->v, es->n, kw__rev_key(rel, orel, 0), false);
    uint32_t i0 = i;
    bool distinct = raw || (out->n == 0 && out->n_slot == 0);
    for (; i < es->n && es->v[i].other_rel == orel && es->v[i].rel == rel; i++) {
        /* A race's losing attempt stops at its budget, not at the end of a long slice. */
        if (((i - i0) & 63) == 63 && q->work + (i - i0) > q->limit)
            return spend(q, 1 + (i - i0));
        if (i + 8 < es->n)
            __builtin_prefetch(&q->g->nodes[es->v[i + 8].other]);
        uint32_t r = es->v[i].other;
        const kw_node_t *nd = &q->g->nodes[r];
        if (nd->type != rt)
            continue;
        uint8_t f = kw__attr_maybe(q->g, r) ? 0 : flag;
        if ((distinct ? set_push(out, r, f) : set_add(out, r, f)) != KW_OK)
            return KW_ENOMEM;
    }
    return spend(q, 1 + (i - i0));
}

/* The same for an arrow's tupleset: R#rel@x with any subject relation. */
static int add_rev_any(lp_t *q, lp_set_t *out, uint32_t x, uint16_t rel, uint16_t rt, uint8_t flag,
                       bool raw)
{
    const kw_eslice_t sl = kw__rev(q->g, x), *es = &sl;
    uint32_t i = 0;
    while (i < es->n) {
        uint16_t orel = es->v[i].other_rel;
        int rc = add_rev(q, out, x, orel, rel, rt, flag, raw);
        if (rc)
            return rc;
        if (orel == UINT16_MAX)
            break;
        i = kw__graph_lower(es->v, es->n, kw__rev_key(0, (uint16_t)(orel + 1), 0), false);
    }
    return KW_OK;
}

/* ---- verification of one candidate on one expression: YES, NO or unknown ---- */

enum { V_NO = 0, V_YES = 1, V_UNKNOWN = 2 };

static int ck(lp_t *q, uint32_t x, uint16_t rel, int *v)
{
    int r = kw__ck_check(q->c, x, rel);
    q->work += q->c->steps;
    if (r == KW_ENOMEM)
        return r;
    *v = r == KW_CK_YES ? V_YES : r == KW_CK_NO ? V_NO : V_UNKNOWN;
    return q->work > q->limit ? LP_HIT : KW_OK;
}

static int verify(lp_t *q, uint32_t x, const kw_expr_t *ex, int *v);

/* Does x (of type t) hold rel? A complete set of (t, rel) answers without a Check: it is a
 * superset, so absent means NO and "sure" means YES. A permission without one is
 * verified through its expression (a few levels deep), anything else by Check. */
static int verify_rel(lp_t *q, uint32_t x, uint16_t t, uint16_t rel, int *v)
{
    uint32_t k = q->m->rel_base[t] + rel;
    if (q->state[k] == 2) {
        lp_set_t *s = &q->memo[k];
        if (s->n && !s->n_slot && set_index(s, s->n) != KW_OK)
            return KW_ENOMEM;
        int f = set_find(s, x);
        if (f < 0 || (f & SURE)) {
            *v = f < 0 ? V_NO : V_YES;
            return spend(q, 1);
        }
    }
    const kw_relation_t *rd = &q->s->types[t].rels[rel];
    if (rd->is_permission && rd->expr && q->vdepth < 8) {
        q->vdepth++;
        int rc = verify(q, x, rd->expr, v);
        q->vdepth--;
        return rc;
    }
    return ck(q, x, rel, v);
}

static int verify(lp_t *q, uint32_t x, const kw_expr_t *ex, int *v)
{
    switch (ex->kind) {
    case KW_EXPR_NIL:
        *v = V_NO;
        return KW_OK;
    case KW_EXPR_REF:
        return verify_rel(q, x, q->g->nodes[x].type, ex->rel, v);
    case KW_EXPR_ARROW: {
        if (kw__attr_maybe(q->g, x)) {
            *v = V_UNKNOWN;
            return KW_OK;
        }
        uint32_t lo, hi;
        kw__graph_fwd_range(q->g, x, ex->rel, &lo, &hi);
        const kw_edge_t *fv = kw__fwd(q->g, x).v;
        int acc = V_NO;
        for (uint32_t i = lo; i < hi && acc != V_YES; i++) {
            uint32_t o = fv[i].other;
            uint16_t tr = ex->target_by_type[q->g->nodes[o].type];
            if (tr == KW_REL_NONE)
                continue;
            int w, rc = verify_rel(q, o, q->g->nodes[o].type, tr, &w);
            if (rc)
                return rc;
            if (w == V_YES || (w == V_UNKNOWN && acc == V_NO))
                acc = w;
        }
        *v = acc;
        return spend(q, 1);
    }
    case KW_EXPR_ALL:
        *v = V_UNKNOWN;
        return KW_OK;
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT: {
        bool uni = ex->kind == KW_EXPR_UNION;
        int acc = uni ? V_NO : V_YES;
        for (uint32_t i = 0; i < ex->n_children; i++) {
            int w, rc = verify(q, x, ex->children[i], &w);
            if (rc)
                return rc;
            if (w == (uni ? V_YES : V_NO)) {
                *v = w;
                return KW_OK;
            }
            if (w == V_UNKNOWN)
                acc = V_UNKNOWN;
        }
        *v = acc;
        return KW_OK;
    }
    case KW_EXPR_EXCLUDE: {
        int a, b, rc = verify(q, x, ex->children[0], &a);
        if (rc)
            return rc;
        if (a == V_NO) {
            *v = V_NO;
            return KW_OK;
        }
        if ((rc = verify(q, x, ex->children[1], &b)) != KW_OK)
            return rc;
        *v = b == V_YES ? V_NO : (a == V_YES && b == V_NO) ? V_YES : V_UNKNOWN;
        return KW_OK;
    }
    }
    return KW_EINTERNAL;
}

/* ---- producing the sets ---- */

static int prod_rel(lp_t *q, uint16_t t, uint16_t rel, const lp_set_t **out);

static int prod_expr(lp_t *q, uint16_t t, const kw_expr_t *ex, lp_set_t *out);

/* Keeps the candidates of `cand` that `others` (the children of ex but `skip`) may hold:
 * sure ones verified YES everywhere stay sure, NO anywhere drops them. */
static int filter_into(lp_t *q, const kw_expr_t *ex, uint32_t skip, const lp_set_t *cand,
                       lp_set_t *out)
{
    /* cand is a set: into an empty out, its survivors are appended without an index (the
     * index is built once, at its first lookup, instead of grown along). */
    bool distinct = out->n == 0 && out->n_slot == 0;
    for (size_t i = 0; i < cand->n; i++) {
        if (i + 8 < cand->n)
            __builtin_prefetch(&q->g->nodes[cand->node[i + 8]]);
        uint32_t x = cand->node[i];
        int acc = (cand->flag[i] & SURE) ? V_YES : V_UNKNOWN;
        if (ex->kind == KW_EXPR_EXCLUDE) {
            int b, rc = verify(q, x, ex->children[1], &b);
            if (rc)
                return rc;
            acc = b == V_YES ? V_NO : b == V_NO ? acc : V_UNKNOWN;
        } else {
            for (uint32_t k = 0; k < ex->n_children && acc != V_NO; k++) {
                if (k == skip)
                    continue;
                int w, rc = verify(q, x, ex->children[k], &w);
                if (rc)
                    return rc;
                if (w != V_YES)
                    acc = w == V_NO ? V_NO : V_UNKNOWN;
            }
        }
        uint8_t f = acc == V_YES ? SURE : 0;
        if (acc != V_NO && (distinct ? set_push(out, x, f) : set_add(out, x, f)) != KW_OK)
            return KW_ENOMEM;
    }
    return KW_OK;
}

/* The selective child of an intersection: the first to finish under a budget growing 4x
 * per round (within the caller's own limit). */
static int prod_intersect(lp_t *q, uint16_t t, const kw_expr_t *ex, lp_set_t *out)
{
    uint64_t outer = q->limit;
    lp_set_t cand = {0};
    int rc = KW_OK;
    uint32_t pick = 0;
    for (uint64_t b = 256;; b *= 4) {
        bool done = false;
        for (uint32_t k = 0; k < ex->n_children && !done; k++) {
            uint64_t lim = q->work + b;
            q->limit = lim < outer ? lim : outer;
            rc = prod_expr(q, t, ex->children[k], &cand);
            q->limit = outer;
            if (rc == KW_OK) {
                done = true;
                pick = k;
            } else {
                set_free(&cand);
                if (rc != LP_HIT || q->work >= outer)
                    return rc;
            }
        }
        if (done)
            break;
    }
    rc = filter_into(q, ex, pick, &cand, out);
    set_free(&cand);
    return rc;
}

static int prod_expr(lp_t *q, uint16_t t, const kw_expr_t *ex, lp_set_t *out)
{
    int rc = KW_OK;
    switch (ex->kind) {
    case KW_EXPR_NIL:
        return KW_OK;
    case KW_EXPR_REF: {
        const lp_set_t *s;
        if ((rc = prod_rel(q, t, ex->rel, &s)) != KW_OK)
            return rc;
        return set_copy(out, s) != KW_OK ? KW_ENOMEM : spend(q, s->n);
    }
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        uint8_t flag = ex->kind == KW_EXPR_ARROW ? SURE : 0;
        /* Into an empty out: gathered with repeats, then deduplicated once. */
        bool raw = out->n == 0 && out->n_slot == 0;
        for (uint16_t u = 0; u < q->s->n_types; u++) {
            uint16_t tr = ex->target_by_type[u];
            if (tr == KW_REL_NONE)
                continue;
            const lp_set_t *s;
            if ((rc = prod_rel(q, u, tr, &s)) != KW_OK)
                return rc;
            for (size_t i = 0; i < s->n; i++)
                if ((rc = add_rev_any(q, out, s->node[i], ex->rel, t, s->flag[i] & flag, raw)) !=
                    KW_OK)
                    return rc;
        }
        return raw ? set_dedup(out) : KW_OK;
    }
    case KW_EXPR_UNION:
        for (uint32_t k = 0; k < ex->n_children; k++) {
            lp_set_t part = {0};
            rc = prod_expr(q, t, ex->children[k], &part);
            if (rc == KW_OK)
                rc = set_merge(out, &part);
            set_free(&part);
            if (rc)
                return rc;
        }
        return KW_OK;
    case KW_EXPR_INTERSECT:
        return prod_intersect(q, t, ex, out);
    case KW_EXPR_EXCLUDE: {
        lp_set_t cand = {0};
        rc = prod_expr(q, t, ex->children[0], &cand);
        if (rc == KW_OK)
            rc = filter_into(q, ex, 0, &cand, out);
        set_free(&cand);
        return rc;
    }
    }
    return KW_EINTERNAL;
}

/* A relation's set: direct edges to the subject and its wildcard, and subject sets. */
static int prod_direct(lp_t *q, uint16_t t, uint16_t rel, lp_set_t *out)
{
    const kw_ck_t *c = q->c;
    int rc = KW_OK;
    if (c->snode != KW_NODE_NONE &&
        (rc = add_rev(q, out, c->snode, c->srel, rel, t, SURE, false)) != 0)
        return rc;
    if (c->swild != KW_NODE_NONE && c->swild != c->snode &&
        (rc = add_rev(q, out, c->swild, KW_REL_NONE, rel, t, SURE, false)) != 0)
        return rc;
    const kw_relation_t *rd = &q->s->types[t].rels[rel];
    for (uint32_t a = 0; a < rd->n_allowed; a++) {
        const kw_allowed_t *al = &rd->allowed[a];
        if (al->relation == KW_REL_NONE || al->wildcard)
            continue;
        bool seen = false;
        for (uint32_t b = 0; b < a && !seen; b++)
            seen = rd->allowed[b].type == al->type && rd->allowed[b].relation == al->relation &&
                   !rd->allowed[b].wildcard;
        if (seen)
            continue;
        const lp_set_t *s;
        if ((rc = prod_rel(q, al->type, al->relation, &s)) != KW_OK)
            return rc;
        for (size_t i = 0; i < s->n; i++)
            if ((rc = add_rev(q, out, s->node[i], al->relation, rel, t, s->flag[i], false)) !=
                KW_OK)
                return rc;
    }
    return KW_OK;
}

static int prod_rel(lp_t *q, uint16_t t, uint16_t rel, const lp_set_t **out)
{
    uint32_t k = q->m->rel_base[t] + rel;
    if (q->state[k] == 2) {
        *out = &q->memo[k];
        return KW_OK;
    }
    if (q->state[k] == 1)
        return KW_EAGAIN; /* recursive: not planned */
    q->state[k] = 1;
    const kw_relation_t *rd = &q->s->types[t].rels[rel];
    int rc = rd->is_permission ? (rd->expr ? prod_expr(q, t, rd->expr, &q->memo[k]) : KW_OK)
                               : prod_direct(q, t, rel, &q->memo[k]);
    /* A subject set has itself (a relation's or a permission's). */
    const kw_ck_t *c = q->c;
    if (rc == KW_OK && c->snode != KW_NODE_NONE && c->srel != KW_REL_NONE && c->stype == t &&
        c->srel == rel && set_add(&q->memo[k], c->snode, SURE) != KW_OK)
        rc = KW_ENOMEM;
    if (rc != KW_OK) {
        set_free(&q->memo[k]);
        q->state[k] = 0;
        return rc;
    }
    q->state[k] = 2;
    *out = &q->memo[k];
    return KW_OK;
}

int kw__lookup_plan_resources(kw_ck_t *c, const kw_model_t *m, uint16_t t, uint16_t r,
                              kw__lp_emit_fn emit, void *ud, uint64_t *work, kw_diag_t *diag)
{
    if (c->snode == KW_NODE_NONE && c->swild == KW_NODE_NONE) {
        /* No edge reaches the subject: nothing (the caller reports an absent subject set
         * that has itself). */
        if (work)
            *work = 0;
        return KW_OK;
    }
    lp_t q = {c, m, c->g, c->s, NULL, NULL, 0, KW_MAX_LOOKUP_STEPS, 0, diag};
    q.state = kw_calloc(m->n_pairs + 1u, 1);
    q.memo = kw_calloc(m->n_pairs + 1u, sizeof(lp_set_t));
    int rc = q.state && q.memo ? KW_OK : KW_ENOMEM;
    const lp_set_t *res = NULL;
    if (rc == KW_OK)
        rc = prod_rel(&q, t, r, &res);
    if (rc == LP_HIT)
        rc = kw_diag_set(diag, KW_EBUDGET, 0, 0, "LookupResources exceeded its budget of %u steps",
                         KW_MAX_LOOKUP_STEPS);
    else if (rc == KW_ENOMEM)
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
    else if (rc != KW_OK && rc != KW_EAGAIN)
        rc = kw_diag_set(diag, rc, 0, 0, "lookup failed");
    for (size_t i = 0; rc == KW_OK && i < res->n; i++) {
        if (i + 8 < res->n)
            __builtin_prefetch(&c->g->nodes[res->node[i + 8]]);
        uint32_t x = res->node[i];
        int v = KW_CK_YES;
        if (!(res->flag[i] & SURE)) {
            v = kw__ck_check(c, x, r);
            if (v < 0) {
                rc = v;
                break;
            }
            q.work += c->steps;
            if (q.work > KW_MAX_LOOKUP_STEPS) {
                rc = kw_diag_set(diag, KW_EBUDGET, 0, 0,
                                 "LookupResources exceeded its budget of %u steps",
                                 KW_MAX_LOOKUP_STEPS);
                break;
            }
        }
        if (v != KW_CK_NO)
            rc = emit(x, v, c, ud);
    }
    if (q.memo)
        for (uint32_t k = 0; k < m->n_pairs; k++)
            set_free(&q.memo[k]);
    kw_free(q.memo);
    kw_free(q.state);
    if (work)
        *work = q.work;
    return rc;
}

/* ==== LookupSubjects' planned path ====
 *
 * The subjects (of the wanted type and relation) of resource#permission, evaluated
 * top-down over the permission's expression into node sets that are a SUPERSET of the
 * subjects holding it, flagged "sure" as above:
 *  - a relation x#rel: the subjects of its edges (x#rel@o: o itself when it has the
 *    wanted type and no subject relation; x#rel@o#orel: the subjects of o#orel), plus x
 *    itself when x#rel is the wanted subject set (a subject set has itself);
 *  - an arrow `ts->tgt` (and `.all`, never sure): the subjects of o#tgt for every x#ts@o;
 *  - a union: the union; an intersection: its selective child's set (the same race as
 *    above), each candidate verified on the other children by Check with that subject;
 *    an exclusion: the positive side, each candidate verified on the negative side.
 * Sets are memoized per (node, rel). Every sure subject is a YES; every other one is
 * checked on the queried permission, so the answer is exactly the walk's (lookup.c). The
 * walk reports the wildcard `*` (when Check grants it) with an exclusion list: every
 * concrete subject it met, on any branch, that is not a YES. A plan that opened every
 * branch (no intersection, no exclusion on the way) met exactly the walk's subjects and
 * reports the same list; one that skipped branches does not have it. Not planned
 * (KW_EAGAIN, nothing emitted): a permission that depends on itself, and a wildcard of the
 * subject type met by a plan that evaluated an intersection or an exclusion. */

typedef struct ls {
    lp_t q;               /* q.state is all zeros: verify() never reads q.memo */
    uint16_t stype, srel; /* the wanted subjects */
    uint32_t wild;        /* the wildcard node of stype, or KW_NODE_NONE */
    uint8_t *onstack;     /* per (type, rel): being evaluated (a second visit recurses) */
    uint64_t *mkey;       /* memo: (node << 16 | rel) + 1, 0 empty */
    uint32_t *midx;       /* memo: index into sets */
    uint32_t m_slot, m_used;
    lp_set_t *sets;
    size_t n_sets, cap_sets;
    bool partial;  /* an intersection or an exclusion was evaluated: branches skipped */
    bool wild_met; /* the wildcard node of stype was met */
} ls_t;

static uint64_t ls_key(uint32_t node, uint16_t rel)
{
    return (((uint64_t)node << 16) | rel) + 1;
}

static const lp_set_t *ls_memo_get(const ls_t *L, uint64_t key)
{
    if (!L->m_slot)
        return NULL;
    uint32_t j = (uint32_t)kw_hash_u64(key) & (L->m_slot - 1);
    for (; L->mkey[j]; j = (j + 1) & (L->m_slot - 1))
        if (L->mkey[j] == key)
            return &L->sets[L->midx[j]];
    return NULL;
}

/* Takes ownership of *s (cleared), stores it as key's set; *out points to it. */
static int ls_memo_put(ls_t *L, uint64_t key, lp_set_t *s, const lp_set_t **out)
{
    if ((L->m_used + 1) * 2 > L->m_slot) {
        uint32_t n = L->m_slot ? L->m_slot * 2 : 64;
        uint64_t *nk = kw_calloc(n, sizeof(uint64_t));
        uint32_t *ni = kw_malloc((size_t)n * sizeof(uint32_t));
        if (!nk || !ni) {
            kw_free(nk);
            kw_free(ni);
            return KW_ENOMEM;
        }
        for (uint32_t i = 0; i < L->m_slot; i++) {
            if (!L->mkey[i])
                continue;
            uint32_t j = (uint32_t)kw_hash_u64(L->mkey[i]) & (n - 1);
            while (nk[j])
                j = (j + 1) & (n - 1);
            nk[j] = L->mkey[i];
            ni[j] = L->midx[i];
        }
        kw_free(L->mkey);
        kw_free(L->midx);
        L->mkey = nk;
        L->midx = ni;
        L->m_slot = n;
    }
    if (kw_grow((void **)&L->sets, &L->cap_sets, L->n_sets + 1, sizeof(lp_set_t)) != KW_OK)
        return KW_ENOMEM;
    uint32_t j = (uint32_t)kw_hash_u64(key) & (L->m_slot - 1);
    while (L->mkey[j])
        j = (j + 1) & (L->m_slot - 1);
    L->mkey[j] = key;
    L->midx[j] = (uint32_t)L->n_sets;
    L->m_used++;
    L->sets[L->n_sets] = *s;
    memset(s, 0, sizeof(*s));
    *out = &L->sets[L->n_sets++];
    return KW_OK;
}

/* Adds every node of src to out, flags ANDed with `flag`; raw: with repeats (set_dedup
 * follows). */
static int ls_add_all(ls_t *L, lp_set_t *out, const lp_set_t *src, uint8_t flag, bool raw)
{
    for (size_t i = 0; i < src->n; i++)
        if ((raw ? set_push(out, src->node[i], src->flag[i] & flag)
                 : set_add(out, src->node[i], src->flag[i] & flag)) != KW_OK)
            return KW_ENOMEM;
    return spend(&L->q, src->n);
}

static int ls_rel(ls_t *L, uint32_t x, uint16_t rel, const lp_set_t **out);
static int ls_expr(ls_t *L, uint32_t x, const kw_expr_t *ex, lp_set_t *out);

/* Does (t, rel) reach a (type, rel) that depends on itself, in the schema? color per
 * (type, rel): 0 unseen, 1 on the path, 2 done. A permission that does is not planned:
 * the walk checks every subject of every branch and so reports the cycle errors of
 * branches a plan never opens (a plan would answer where the walk refuses). */
static bool ls_recursive_expr(const kw_model_t *m, uint8_t *color, uint16_t t, const kw_expr_t *ex,
                              int depth);

static bool ls_recursive(const kw_model_t *m, uint8_t *color, uint16_t t, uint16_t rel, int depth)
{
    uint32_t k = m->rel_base[t] + rel;
    if (color[k] == 2)
        return false;
    if (color[k] == 1 || depth > 256)
        return true;
    color[k] = 1;
    const kw_relation_t *rd = &m->schema->types[t].rels[rel];
    bool rec = false;
    if (rd->is_permission) {
        rec = rd->expr && ls_recursive_expr(m, color, t, rd->expr, depth + 1);
    } else {
        for (uint32_t a = 0; a < rd->n_allowed && !rec; a++) {
            const kw_allowed_t *al = &rd->allowed[a];
            if (al->relation != KW_REL_NONE && !al->wildcard)
                rec = ls_recursive(m, color, al->type, al->relation, depth + 1);
        }
    }
    color[k] = 2;
    return rec;
}

static bool ls_recursive_expr(const kw_model_t *m, uint8_t *color, uint16_t t, const kw_expr_t *ex,
                              int depth)
{
    switch (ex->kind) {
    case KW_EXPR_NIL:
        return false;
    case KW_EXPR_REF:
        return ls_recursive(m, color, t, ex->rel, depth);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        if (ls_recursive(m, color, t, ex->rel, depth))
            return true;
        for (uint16_t u = 0; u < m->schema->n_types; u++)
            if (ex->target_by_type[u] != KW_REL_NONE &&
                ls_recursive(m, color, u, ex->target_by_type[u], depth))
                return true;
        return false;
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE:
        for (uint32_t i = 0; i < ex->n_children; i++)
            if (ls_recursive_expr(m, color, t, ex->children[i], depth))
                return true;
        return false;
    }
    return true;
}

/* The subjects of x#rel's own edges. */
static int ls_direct(ls_t *L, uint32_t x, uint16_t rel, lp_set_t *out)
{
    const kw_graph_t *g = L->q.g;
    uint32_t lo, hi;
    kw__graph_fwd_range(g, x, rel, &lo, &hi);
    const kw_edge_t *fv = kw__fwd(g, x).v;
    uint8_t flag = kw__attr_maybe(g, x) ? 0 : SURE;
    /* Into an empty out (always, from ls_rel): gathered with repeats, deduplicated once. */
    bool raw = out->n == 0 && out->n_slot == 0;
    int rc = spend(&L->q, 1 + (hi - lo));
    for (uint32_t i = lo; i < hi && rc == KW_OK; i++) {
        if (i + 8 < hi)
            __builtin_prefetch(&g->nodes[fv[i + 8].other]);
        uint32_t o = fv[i].other;
        uint16_t orel = fv[i].other_rel;
        if (o == L->wild && L->wild != KW_NODE_NONE) {
            if (L->partial)
                return KW_EAGAIN;
            L->wild_met = true;
        }
        if (orel == KW_REL_NONE) {
            if (L->srel == KW_REL_NONE && g->nodes[o].type == L->stype &&
                (raw ? set_push(out, o, flag) : set_add(out, o, flag)) != KW_OK)
                rc = KW_ENOMEM;
            continue;
        }
        const lp_set_t *s;
        if ((rc = ls_rel(L, o, orel, &s)) == KW_OK)
            rc = ls_add_all(L, out, s, flag, raw);
    }
    return rc == KW_OK && raw ? set_dedup(out) : rc;
}

static int ls_verify_into(ls_t *L, uint32_t x, const kw_expr_t *ex, uint32_t skip,
                          const lp_set_t *cand, lp_set_t *out)
{
    kw_ck_t *c = L->q.c;
    bool distinct = out->n == 0 && out->n_slot == 0; /* as in filter_into */
    for (size_t i = 0; i < cand->n; i++) {
        uint32_t s = cand->node[i];
        kw__ck_subject(c, s, L->stype, L->srel);
        int acc = (cand->flag[i] & SURE) ? V_YES : V_UNKNOWN;
        if (ex->kind == KW_EXPR_EXCLUDE) {
            int b, rc = verify(&L->q, x, ex->children[1], &b);
            if (rc)
                return rc;
            acc = b == V_YES ? V_NO : b == V_NO ? acc : V_UNKNOWN;
        } else {
            for (uint32_t k = 0; k < ex->n_children && acc != V_NO; k++) {
                if (k == skip)
                    continue;
                int w, rc = verify(&L->q, x, ex->children[k], &w);
                if (rc)
                    return rc;
                if (w != V_YES)
                    acc = w == V_NO ? V_NO : V_UNKNOWN;
            }
        }
        uint8_t f = acc == V_YES ? SURE : 0;
        if (acc != V_NO && (distinct ? set_push(out, s, f) : set_add(out, s, f)) != KW_OK)
            return KW_ENOMEM;
    }
    return KW_OK;
}

/* As prod_intersect: the child that finishes first under a budget growing 4x a round. */
static int ls_intersect(ls_t *L, uint32_t x, const kw_expr_t *ex, lp_set_t *out)
{
    if (L->wild_met)
        return KW_EAGAIN;
    L->partial = true;
    lp_t *q = &L->q;
    uint64_t outer = q->limit;
    lp_set_t cand = {0};
    int rc = KW_OK;
    uint32_t pick = 0;
    for (uint64_t b = 256;; b *= 4) {
        bool done = false;
        for (uint32_t k = 0; k < ex->n_children && !done; k++) {
            uint64_t lim = q->work + b;
            q->limit = lim < outer ? lim : outer;
            rc = ls_expr(L, x, ex->children[k], &cand);
            q->limit = outer;
            if (rc == KW_OK) {
                done = true;
                pick = k;
            } else {
                set_free(&cand);
                if (rc != LP_HIT || q->work >= outer)
                    return rc;
            }
        }
        if (done)
            break;
    }
    rc = ls_verify_into(L, x, ex, pick, &cand, out);
    set_free(&cand);
    return rc;
}

static int ls_expr(ls_t *L, uint32_t x, const kw_expr_t *ex, lp_set_t *out)
{
    const kw_graph_t *g = L->q.g;
    int rc = KW_OK;
    switch (ex->kind) {
    case KW_EXPR_NIL:
        return KW_OK;
    case KW_EXPR_REF: {
        const lp_set_t *s;
        if ((rc = ls_rel(L, x, ex->rel, &s)) != KW_OK)
            return rc;
        return set_copy(out, s) != KW_OK ? KW_ENOMEM : spend(&L->q, s->n);
    }
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        uint8_t flag = ex->kind == KW_EXPR_ARROW && !kw__attr_maybe(g, x) ? SURE : 0;
        bool raw = out->n == 0 && out->n_slot == 0; /* as in ls_direct */
        uint32_t lo, hi;
        kw__graph_fwd_range(g, x, ex->rel, &lo, &hi);
        const kw_edge_t *fv = kw__fwd(g, x).v;
        rc = spend(&L->q, 1 + (hi - lo));
        for (uint32_t i = lo; i < hi && rc == KW_OK; i++) {
            uint32_t o = fv[i].other;
            uint16_t tr = ex->target_by_type[g->nodes[o].type];
            if (tr == KW_REL_NONE)
                continue;
            const lp_set_t *s;
            if ((rc = ls_rel(L, o, tr, &s)) == KW_OK)
                rc = ls_add_all(L, out, s, flag, raw);
        }
        return rc == KW_OK && raw ? set_dedup(out) : rc;
    }
    case KW_EXPR_UNION:
        for (uint32_t k = 0; k < ex->n_children; k++) {
            lp_set_t part = {0};
            rc = ls_expr(L, x, ex->children[k], &part);
            if (rc == KW_OK)
                rc = set_merge(out, &part);
            set_free(&part);
            if (rc)
                return rc;
        }
        return KW_OK;
    case KW_EXPR_INTERSECT:
        return ls_intersect(L, x, ex, out);
    case KW_EXPR_EXCLUDE: {
        if (L->wild_met)
            return KW_EAGAIN;
        L->partial = true;
        lp_set_t cand = {0};
        rc = ls_expr(L, x, ex->children[0], &cand);
        if (rc == KW_OK)
            rc = ls_verify_into(L, x, ex, 0, &cand, out);
        set_free(&cand);
        return rc;
    }
    }
    return KW_EINTERNAL;
}

static int ls_rel(ls_t *L, uint32_t x, uint16_t rel, const lp_set_t **out)
{
    uint64_t key = ls_key(x, rel);
    const lp_set_t *m = ls_memo_get(L, key);
    if (m) {
        *out = m;
        return KW_OK;
    }
    uint16_t t = L->q.g->nodes[x].type;
    uint32_t k = L->q.m->rel_base[t] + rel;
    if (L->onstack[k])
        return KW_EAGAIN; /* recursive: not planned */
    L->onstack[k] = 1;
    const kw_relation_t *rd = &L->q.s->types[t].rels[rel];
    lp_set_t s = {0};
    int rc = rd->is_permission ? (rd->expr ? ls_expr(L, x, rd->expr, &s) : KW_OK)
                               : ls_direct(L, x, rel, &s);
    if (rc == KW_OK && t == L->stype && rel == L->srel && set_add(&s, x, SURE) != KW_OK)
        rc = KW_ENOMEM;
    L->onstack[k] = 0;
    if (rc == KW_OK)
        rc = ls_memo_put(L, key, &s, out);
    set_free(&s);
    return rc;
}

/* The answer for subject s: YES when sure, else Check on rnode#r (counted in the budget). */
static int ls_final(ls_t *L, uint32_t rnode, uint16_t r, uint32_t s, bool sure, int *v)
{
    kw_ck_t *c = L->q.c;
    *v = KW_CK_YES;
    if (sure)
        return KW_OK;
    kw__ck_subject(c, s, L->stype, L->srel);
    *v = kw__ck_check(c, rnode, r);
    if (*v < 0)
        return *v;
    L->q.work += c->steps;
    if (L->q.work > KW_MAX_LOOKUP_STEPS)
        return kw_diag_set(L->q.diag, KW_EBUDGET, 0, 0,
                           "LookupSubjects exceeded its budget of %u steps", KW_MAX_LOOKUP_STEPS);
    return KW_OK;
}

int kw__lookup_plan_subjects(kw_ck_t *c, const kw_model_t *m, uint32_t rnode, uint16_t r,
                             uint16_t stype, uint16_t srel, kw__lp_emit_fn emit,
                             kw__lp_wild_fn emit_wild, void *ud, uint64_t *work, kw_diag_t *diag)
{
    ls_t L;
    memset(&L, 0, sizeof(L));
    /* vdepth at its cap: verify() asks Check for every reference, as it must (it does not
     * know that a subject set has itself when it expands a permission). */
    L.q = (lp_t){c, m, c->g, c->s, NULL, NULL, 0, KW_MAX_LOOKUP_STEPS, 8, diag};
    L.stype = stype;
    L.srel = srel;
    L.wild = stype < KW_MAX_TYPES ? c->g->wild[stype] : KW_NODE_NONE;
    L.q.state = kw_calloc(m->n_pairs + 1u, 1);
    L.onstack = kw_calloc(m->n_pairs + 1u, 1);
    int rc = L.q.state && L.onstack ? KW_OK : KW_ENOMEM;
    if (rc == KW_OK && ls_recursive(m, L.onstack, c->g->nodes[rnode].type, r, 0))
        rc = KW_EAGAIN;
    if (L.onstack)
        memset(L.onstack, 0, m->n_pairs + 1u);
    const lp_set_t *res = NULL;
    if (rc == KW_OK)
        rc = ls_rel(&L, rnode, r, &res);
    if (rc == KW_OK && L.wild_met && L.partial)
        rc = KW_EAGAIN;
    if (rc == LP_HIT)
        rc = kw_diag_set(diag, KW_EBUDGET, 0, 0, "LookupSubjects exceeded its budget of %u steps",
                         KW_MAX_LOOKUP_STEPS);
    else if (rc == KW_ENOMEM)
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
    else if (rc != KW_OK && rc != KW_EAGAIN)
        rc = kw_diag_set(diag, rc, 0, 0, "lookup failed");
    /* Concrete subjects first; with the wildcard among them (then every branch was
     * opened), the ones that are not a YES are its exclusions, and it comes last. */
    bool with_wild = false, wild_sure = false;
    uint32_t *excl = NULL;
    size_t n_excl = 0, excl_cap = 0;
    for (size_t i = 0; rc == KW_OK && i < res->n; i++) {
        uint32_t s = res->node[i];
        if (s == L.wild) {
            with_wild = true;
            wild_sure = (res->flag[i] & SURE) != 0;
            continue;
        }
        int v;
        if ((rc = ls_final(&L, rnode, r, s, (res->flag[i] & SURE) != 0, &v)) != KW_OK)
            break;
        if (v != KW_CK_NO)
            rc = emit(s, v, c, ud);
        if (rc == KW_OK && v != KW_CK_YES && L.wild_met) {
            if (kw_grow((void **)&excl, &excl_cap, n_excl + 1, sizeof(uint32_t)) != KW_OK)
                rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
            else
                excl[n_excl++] = s;
        }
    }
    if (rc == KW_OK && with_wild) {
        int v;
        if ((rc = ls_final(&L, rnode, r, L.wild, wild_sure, &v)) == KW_OK && v != KW_CK_NO)
            rc = emit_wild(excl, n_excl, v, c, ud);
    }
    kw_free(excl);
    for (size_t i = 0; i < L.n_sets; i++)
        set_free(&L.sets[i]);
    kw_free(L.sets);
    kw_free(L.mkey);
    kw_free(L.midx);
    kw_free(L.onstack);
    kw_free(L.q.state);
    if (work)
        *work = L.q.work;
    return rc;
}
