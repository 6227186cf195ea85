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

enum { MEMO_UNKNOWN = 1, MEMO_OPEN, MEMO_YES, MEMO_NO };

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
}

void kw__ck_close(kw_ck_t *c)
{
    if (c->memo && c->memo != c->inline_memo)
        kw_free(c->memo);
    c->memo = NULL;
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

static uint64_t memo_hash(uint64_t k1, uint32_t k2, uint16_t k3)
{
    return kw_hash_u64(k1 ^ ((uint64_t)k2 * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)k3 << 7));
}

static int memo_grow(kw_ck_t *c)
{
    uint32_t ncap = c->memo_cap ? c->memo_cap * 2 : KW_MEMO_INLINE;
    kw_memo_ent_t *nm;
    if (ncap == KW_MEMO_INLINE) {
        nm = c->inline_memo;
    } else {
        nm = kw_calloc(ncap, sizeof(kw_memo_ent_t));
        if (!nm)
            return KW_ENOMEM;
    }
    memset(nm, 0, sizeof(kw_memo_ent_t) * ncap);
    for (uint32_t i = 0; i < c->memo_cap; i++) {
        kw_memo_ent_t *e = &c->memo[i];
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
            c->memo_used++;
            return e;
        }
        if (e->k1 == k1 && e->k2 == c->snode && e->k3 == c->stype)
            return e;
    }
}

static int ck_rel(kw_ck_t *c, uint32_t node, uint16_t rel, int *low);

static int ck_expr(kw_ck_t *c, uint32_t node, const kw_expr_t *x, int *low)
{
    const kw_graph_t *g = c->g;
    switch (x->kind) {
    case KW_EXPR_NIL:
        return 0;
    case KW_EXPR_REF:
        return ck_rel(c, node, x->rel, low);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        bool all = x->kind == KW_EXPR_ALL;
        uint32_t lo, hi;
        kw__graph_fwd_range(g, node, x->rel, &lo, &hi);
        if (lo == hi)
            return 0;
        for (uint32_t i = lo; i < hi; i++) {
            /* An object listed with several subject relations is visited once per edge;
             * the memo makes the repeats cheap and AND/OR are idempotent. */
            uint32_t o = g->nodes[node].fwd.v[i].other;
            uint16_t t = x->target_by_type[g->nodes[o].type];
            int r = t == KW_REL_NONE ? 0 : ck_rel(c, o, t, low);
            if (r < 0)
                return r;
            if (!all && r == 1)
                return 1;
            if (all && r == 0)
                return 0;
        }
        return all ? 1 : 0;
    }
    case KW_EXPR_UNION:
        for (uint32_t i = 0; i < x->n_children; i++) {
            int r = ck_expr(c, node, x->children[i], low);
            if (r != 0)
                return r;
        }
        return 0;
    case KW_EXPR_INTERSECT:
        for (uint32_t i = 0; i < x->n_children; i++) {
            int r = ck_expr(c, node, x->children[i], low);
            if (r != 1)
                return r;
        }
        return 1;
    case KW_EXPR_EXCLUDE: {
        int r = ck_expr(c, node, x->children[0], low);
        if (r != 1)
            return r;
        for (uint32_t i = 1; i < x->n_children; i++) {
            c->neg++;
            int b = ck_expr(c, node, x->children[i], low);
            c->neg--;
            if (b < 0)
                return b;
            if (b == 1)
                return 0;
        }
        return 1;
    }
    }
    return kw_diag_set(c->diag, KW_EINTERNAL, 0, 0, "unknown expression kind %d", (int)x->kind);
}

/* The direct part of a relation: an edge to the subject itself or to its wildcard. */
static bool direct_match(const kw_ck_t *c, uint32_t node, uint16_t rel)
{
    if (c->snode != KW_NODE_NONE && kw__graph_has(c->g, node, rel, c->snode, c->srel))
        return true;
    return c->swild != KW_NODE_NONE && kw__graph_has(c->g, node, rel, c->swild, KW_REL_NONE);
}

/* Follows the subject-set edges of node#rel (those with a subject relation). */
static int ck_sets(kw_ck_t *c, uint32_t node, uint16_t rel, int *low)
{
    uint32_t lo, hi;
    kw__graph_fwd_range(c->g, node, rel, &lo, &hi);
    for (uint32_t i = lo; i < hi; i++) {
        const kw_edge_t ed = c->g->nodes[node].fwd.v[i];
        if (ed.other_rel == KW_REL_NONE)
            break; /* sorted by other_rel: plain subjects come last */
        int r = ck_rel(c, ed.other, ed.other_rel, low);
        if (r != 0)
            return r;
    }
    return 0;
}

static bool has_sets(const kw_graph_t *g, uint32_t node, uint16_t rel)
{
    uint32_t lo, hi;
    kw__graph_fwd_range(g, node, rel, &lo, &hi);
    return lo < hi && g->nodes[node].fwd.v[lo].other_rel != KW_REL_NONE;
}

static int ck_rel(kw_ck_t *c, uint32_t node, uint16_t rel, int *low)
{
    if (node == c->snode && rel == c->srel)
        return 1; /* a subject set has itself */
    const kw_type_t *ty = &c->s->types[c->g->nodes[node].type];
    if (rel >= ty->n_rels)
        return kw_diag_set(c->diag, KW_EINTERNAL, 0, 0, "relation index out of range");
    const kw_relation_t *rd = &ty->rels[rel];
    if (++c->steps > KW_MAX_CHECK_STEPS) /* tag-kw-query-budget */
        return kw_diag_set(c->diag, KW_EBUDGET, 0, 0,
                           "check exceeded its budget of %u steps at %.*s:%s#%.*s",
                           KW_MAX_CHECK_STEPS, KW_STR_FMT(ty->name),
                           kw__node_id(&c->g->nodes[node]), KW_STR_FMT(rd->name));
    if (!rd->is_permission) {
        if (direct_match(c, node, rel))
            return 1;
        if (!has_sets(c->g, node, rel))
            return 0; /* a leaf: no recursion, nothing worth memoizing */
    }
    kw_memo_ent_t *m = memo_get(c, node, rel);
    if (!m)
        return kw_diag_set(c->diag, KW_ENOMEM, 0, 0, "out of memory during check");
    switch (m->state) {
    case MEMO_YES:
        return 1;
    case MEMO_NO:
        return 0;
    case MEMO_OPEN:
        if (c->neg > c->frame_neg[m->depth])
            return kw_diag_set(c->diag, KW_ECYCLE, 0, 0,
                               "relationship cycle through the subtracted side of an exclusion "
                               "at %.*s:%s#%.*s",
                               KW_STR_FMT(ty->name), kw__node_id(&c->g->nodes[node]),
                               KW_STR_FMT(rd->name));
        if (m->depth < *low)
            *low = m->depth;
        return 0;
    default:
        break;
    }
    if (c->depth >= KW_MAX_CHECK_DEPTH)
        return kw_diag_set(c->diag, KW_EDEPTH, 0, 0,
                           "check exceeded the maximum depth of %d at %.*s:%s#%.*s",
                           KW_MAX_CHECK_DEPTH, KW_STR_FMT(ty->name),
                           kw__node_id(&c->g->nodes[node]), KW_STR_FMT(rd->name));
    int d = c->depth++;
    m->state = MEMO_OPEN;
    m->depth = (uint8_t)d;
    c->frame_neg[d] = c->neg;
    int my_low = NO_LOW;
    int r =
        rd->is_permission ? ck_expr(c, node, rd->expr, &my_low) : ck_sets(c, node, rel, &my_low);
    c->depth--;
    /* The table may have grown during the recursion: look the entry up again. */
    m = memo_get(c, node, rel);
    if (!m)
        return kw_diag_set(c->diag, KW_ENOMEM, 0, 0, "out of memory during check");
    if (r < 0) {
        m->state = MEMO_UNKNOWN;
        return r;
    }
    if (r == 1 || my_low >= d) {
        m->state = r == 1 ? MEMO_YES : MEMO_NO;
    } else {
        m->state = MEMO_UNKNOWN; /* depends on an open ancestor: recompute next time */
        if (my_low < *low)
            *low = my_low;
    }
    return r;
}

int kw__ck_check(kw_ck_t *c, uint32_t node, uint16_t rel)
{
    int low = NO_LOW;
    c->depth = 0;
    c->neg = 0;
    c->steps = 0;
    int r = ck_rel(c, node, rel, &low);
    if (r < 0 && c->memo) {
        /* An aborted search leaves open markers behind: forget everything. */
        memset(c->memo, 0, sizeof(kw_memo_ent_t) * c->memo_cap);
        c->memo_used = 0;
    }
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

/* One check under the read lock, sharing `c` (and its memo) with other items. */
static int check_one(kw_engine_t *e, kw_ck_t *c, kw_object_t res, kw_str_t perm, kw_subject_t subj,
                     kw_check_result_t *result, kw_diag_t *diag)
{
    uint16_t t, r, stype, srel;
    uint32_t snode;
    c->diag = diag;
    int rc = kw__resolve_perm(e, res.type, perm, &t, &r, diag);
    if (rc == KW_OK)
        rc = kw__resolve_subject(e, subj, &stype, &srel, NULL, diag);
    if (rc == KW_OK && !kw__id_ok(res.id))
        rc = kw__bad_id(diag, "resource", res.id);
    if (rc != KW_OK)
        return rc;
    /* Both lookups at once: their cache misses overlap. */
    const uint16_t types[2] = {t, stype};
    const kw_str_t ids[2] = {res.id, subj.id};
    uint32_t nodes[2];
    kw__graph_find2(&e->g, types, ids, nodes);
    uint32_t rnode = nodes[0];
    snode = nodes[1];
    if (rnode == KW_NODE_NONE) {
        /* A subject set has itself, even when the object has no relationships at all. */
        int self = 0;
        if (srel != KW_REL_NONE && stype == t && kw_str_eq(res.id, subj.id))
            self = kw__ck_absent(e->model->schema, t, r, srel, diag);
        if (self < 0)
            return self;
        *result = self ? KW_CHECK_YES : KW_CHECK_NO;
        return KW_OK;
    }
    kw__ck_subject(c, snode, stype, srel);
    int v = kw__ck_check(c, rnode, r);
    if (v < 0)
        return v;
    *result = v == 1 ? KW_CHECK_YES : KW_CHECK_NO;
    return KW_OK;
}

int kw_engine_check(kw_engine_t *e, kw_object_t resource, kw_str_t permission, kw_subject_t subject,
                    kw_check_result_t *result, kw_revision_t *rev, kw_diag_t *diag)
{
    kw_ck_t c;
    kw_check_result_t res = KW_CHECK_NO;
    kw__engine_rdlock(e);
    int rc;
    if (!e->model) {
        rc = kw__engine_no_schema(diag);
    } else {
        kw__ck_init(&c, &e->g, e->model->schema, diag);
        rc = check_one(e, &c, resource, permission, subject, &res, diag);
        kw__ck_close(&c);
        if (rc == KW_OK && rev)
            *rev = e->rev;
    }
    kw__engine_unlock(e);
    if (rc == KW_OK)
        *result = res;
    return rc;
}

int kw_engine_check_bulk(kw_engine_t *e, kw_check_item_t *items, size_t n, kw_revision_t *rev)
{
    kw_ck_t c;
    kw__engine_rdlock(e);
    if (!e->model) {
        for (size_t i = 0; i < n; i++) {
            items[i].result = KW_CHECK_NO;
            items[i].rc = kw__engine_no_schema(&items[i].diag);
        }
    } else {
        kw__ck_init(&c, &e->g, e->model->schema, NULL);
        for (size_t i = 0; i < n; i++) {
            kw_check_item_t *it = &items[i];
            kw_check_result_t res = KW_CHECK_NO;
            kw_diag_clear(&it->diag);
            it->rc = check_one(e, &c, it->resource, it->permission, it->subject, &res, &it->diag);
            it->result = it->rc == KW_OK ? res : KW_CHECK_NO;
        }
        kw__ck_close(&c);
    }
    if (rev)
        *rev = e->rev;
    kw__engine_unlock(e);
    return KW_OK;
}
