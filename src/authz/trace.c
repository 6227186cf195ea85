/*
 * authz/trace.c - debug traces of a Check (CheckPermission / CheckBulkPermissions with
 * withTracing: SpiceDB's CheckDebugTrace), built BESIDE the hot check path (check.c is not
 * touched and pays nothing for this feature).
 *
 * A node is one (object, relation-or-permission) for the request's subject. Its result is
 * what kw_engine_check_ctx answers for it (so the trace can never disagree with the
 * check), its duration the time that evaluation took, and its sub-problems the nodes it
 * dispatches to, read off the schema (the engine's own text, compiled once per trace) and
 * the relationships (kw_engine_read):
 *  - a relation: its subject-set subjects O#r2 (a direct or wildcard subject needs no
 *    sub-problem: an empty list with HAS means the subject was found there, as in SpiceDB);
 *  - a permission: the relations and permissions its expression names on the same object
 *    (nested operators are flattened into the node), and for an arrow ts->t each object
 *    reached through ts, with t.
 * A sub-problem whose own check fails (a cycle through an exclusion, depth, budget) while
 * the root's check succeeded is left out (the check short-circuited before it).
 * Every node is expanded once per trace; a later occurrence is marked cached (SpiceDB's
 * `wasCachedResult`), which also ends cycles. The whole trace is bounded by
 * KW_MAX_TRACE_NODES nodes (KW_EBUDGET) and the depth by KW_MAX_CHECK_DEPTH (KW_EDEPTH).
 *
 * Only the public engine and schema APIs are used: the trace does not depend on the
 * graph's layout.
 */
#include <string.h>
#include <time.h>

#include "authz/authz.h"
#include "authz/schema.h"
#include "base/limits.h"

typedef struct pair {
    kw_object_t obj;
    kw_str_t rel;
} pair_t;

typedef struct tr_ctx {
    kw_engine_t *e;
    kw_subject_t subj;
    kw_str_t ctx;
    kw_arena_t *a; /* the answer */
    kw_diag_t *diag;
    size_t nodes;
    /* (type, id, relation) keys of the nodes expanded so far: open addressing */
    kw_str_t *seen;
    size_t seen_cap, seen_n;
    kw_schema_t *s; /* the engine's schema, compiled from its text for the expressions */
} tr_ctx_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int copy(kw_arena_t *a, kw_str_t s, kw_str_t *out)
{
    return kw_arena_str_copy(a, s, out);
}

/* "type\0id\0rel" in the answer's arena. */
static int node_key(tr_ctx_t *c, const pair_t *p, kw_str_t *out)
{
    size_t n = p->obj.type.len + p->obj.id.len + p->rel.len + 2;
    char *k = kw_arena_alloc(c->a, n);
    if (!k)
        return KW_ENOMEM;
    char *w = k;
    memcpy(w, p->obj.type.ptr, p->obj.type.len);
    w += p->obj.type.len;
    *w++ = '\0';
    memcpy(w, p->obj.id.ptr, p->obj.id.len);
    w += p->obj.id.len;
    *w++ = '\0';
    memcpy(w, p->rel.ptr, p->rel.len);
    *out = (kw_str_t){k, n};
    return KW_OK;
}

/* Adds key to the seen set: *fresh says whether it was new. */
static int seen_add(tr_ctx_t *c, kw_str_t key, bool *fresh)
{
    if (2 * (c->seen_n + 1) > c->seen_cap) {
        size_t ncap = c->seen_cap ? 2 * c->seen_cap : 64;
        kw_str_t *ns = kw_calloc(ncap, sizeof(*ns));
        if (!ns)
            return KW_ENOMEM;
        for (size_t i = 0; i < c->seen_cap; i++) {
            if (!c->seen[i].ptr)
                continue;
            size_t h = (size_t)kw_hash(c->seen[i].ptr, c->seen[i].len, 0) & (ncap - 1);
            while (ns[h].ptr)
                h = (h + 1) & (ncap - 1);
            ns[h] = c->seen[i];
        }
        kw_free(c->seen);
        c->seen = ns;
        c->seen_cap = ncap;
    }
    size_t h = (size_t)kw_hash(key.ptr, key.len, 0) & (c->seen_cap - 1);
    while (c->seen[h].ptr) {
        if (kw_str_eq(c->seen[h], key)) {
            *fresh = false;
            return KW_OK;
        }
        h = (h + 1) & (c->seen_cap - 1);
    }
    c->seen[h] = key;
    c->seen_n++;
    *fresh = true;
    return KW_OK;
}

/* The sub-problems collected for one node (kw_malloc'd array, copied strings). */
typedef struct pairs {
    pair_t *v;
    size_t n, cap;
    kw_arena_t *a;
} pairs_t;

static int pairs_add(pairs_t *ps, kw_object_t obj, kw_str_t rel)
{
    void *p = ps->v;
    if (kw_grow(&p, &ps->cap, ps->n + 1, sizeof(pair_t)) != KW_OK)
        return KW_ENOMEM;
    ps->v = p;
    pair_t *x = &ps->v[ps->n];
    if (copy(ps->a, obj.type, &x->obj.type) != KW_OK || copy(ps->a, obj.id, &x->obj.id) != KW_OK ||
        copy(ps->a, rel, &x->rel) != KW_OK)
        return KW_ENOMEM;
    ps->n++;
    return KW_OK;
}

/* ---- a node's dispatches ---- */

typedef struct read_ctx {
    tr_ctx_t *c;
    pairs_t *ps;
    const kw_expr_t *arrow; /* NULL: a relation's subject sets; else the arrow's targets */
} read_ctx_t;

static bool is_the_subject(const tr_ctx_t *c, const kw_subject_t *s)
{
    return kw_str_eq(s->type, c->subj.type) && kw_str_eq(s->id, c->subj.id) &&
           kw_str_eq(s->relation, c->subj.relation);
}

static int on_rel(const kw_rel_t *rel, void *ud)
{
    read_ctx_t *r = ud;
    const kw_subject_t *s = &rel->subject;
    kw_object_t obj = {s->type, s->id};
    if (!r->arrow) {
        /* A subject set is a sub-problem; a direct subject, a wildcard, or the subject set
         * being checked is found right there (no sub-problem, as in SpiceDB). */
        if (!s->relation.len || is_the_subject(r->c, s) || kw_str_eq_c(s->id, "*"))
            return 0;
        return pairs_add(r->ps, obj, s->relation) == KW_OK ? 0 : 1;
    }
    /* An arrow walks the tupleset's subject objects (their subject relation ignored). */
    uint16_t t = kw_schema_type_index(r->c->s, s->type);
    if (t == KW_TYPE_NONE || r->arrow->target_by_type[t] == KW_REL_NONE || kw_str_eq_c(s->id, "*"))
        return 0;
    return pairs_add(r->ps, obj, r->arrow->target) == KW_OK ? 0 : 1;
}

static int read_into(tr_ctx_t *c, kw_object_t obj, kw_str_t rel, const kw_expr_t *arrow,
                     pairs_t *ps)
{
    kw_filter_t f;
    memset(&f, 0, sizeof(f));
    f.resource_type = obj.type;
    f.resource_id = obj.id;
    f.relation = rel;
    read_ctx_t r = {c, ps, arrow};
    int rc = kw_engine_read(c->e, &f, on_rel, &r, NULL, c->diag);
    return rc == 1 ? KW_ENOMEM : rc;
}

/* A permission's operands, its nested operators flattened. */
static int collect_expr(tr_ctx_t *c, const kw_type_t *ty, const kw_expr_t *x, kw_object_t obj,
                        pairs_t *ps)
{
    switch (x->kind) {
    case KW_EXPR_NIL:
        return KW_OK;
    case KW_EXPR_REF:
        return pairs_add(ps, obj, ty->rels[x->rel].name);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        return read_into(c, obj, ty->rels[x->rel].name, x, ps);
    default:
        for (uint32_t i = 0; i < x->n_children; i++) {
            int rc = collect_expr(c, ty, x->children[i], obj, ps);
            if (rc != KW_OK)
                return rc;
        }
        return KW_OK;
    }
}

static int collect(tr_ctx_t *c, const pair_t *p, pairs_t *ps)
{
    uint16_t t = kw_schema_type_index(c->s, p->obj.type);
    uint16_t r = t == KW_TYPE_NONE ? KW_REL_NONE : kw_schema_rel_index(c->s, t, p->rel);
    if (r == KW_REL_NONE) /* the engine's schema changed under the trace */
        return kw_diag_set(c->diag, KW_EINVAL, 0, 0, "`%.*s#%.*s` is not in the schema",
                           KW_STR_FMT(p->obj.type), KW_STR_FMT(p->rel));
    const kw_relation_t *rd = &c->s->types[t].rels[r];
    if (rd->is_permission)
        return collect_expr(c, &c->s->types[t], rd->expr, p->obj, ps);
    return read_into(c, p->obj, p->rel, NULL, ps);
}

static int trace_node(tr_ctx_t *c, const pair_t *p, int depth, kw_trace_t **out)
{
    if (depth > KW_MAX_CHECK_DEPTH)
        return kw_diag_set(c->diag, KW_EDEPTH, 0, 0, "the trace is deeper than %d",
                           KW_MAX_CHECK_DEPTH);
    if (++c->nodes > KW_MAX_TRACE_NODES)
        return kw_diag_set(c->diag, KW_EBUDGET, 0, 0,
                           "the debug trace has more than %u nodes: trace a narrower check",
                           KW_MAX_TRACE_NODES);
    kw_trace_t *t = kw_arena_alloc(c->a, sizeof(*t));
    if (!t)
        return KW_ENOMEM;
    memset(t, 0, sizeof(*t));
    t->resource = p->obj;
    t->permission = p->rel;
    if (!kw_engine_has(c->e, p->obj.type, p->rel, &t->is_permission))
        return kw_diag_set(c->diag, KW_EINVAL, 0, 0, "`%.*s#%.*s` is not in the schema",
                           KW_STR_FMT(p->obj.type), KW_STR_FMT(p->rel));
    kw_buf_t missing;
    kw_buf_init(&missing);
    uint64_t t0 = now_ns();
    int rc = kw_engine_check_ctx(c->e, p->obj, p->rel, c->subj, c->ctx, &t->result, &missing, NULL,
                                 c->diag);
    t->duration_ns = now_ns() - t0;
    if (rc != KW_OK && rc != KW_ENOMEM && depth > 0) {
        /* A sub-problem that cannot be answered on its own (a cycle through an exclusion,
         * too deep, over budget) while the root's check could: the check never needed it
         * (it short-circuited), so the trace leaves it out. */
        kw_buf_free(&missing);
        *out = NULL;
        return KW_OK;
    }
    if (rc == KW_OK && missing.failed)
        rc = KW_ENOMEM;
    if (rc == KW_OK && missing.len)
        rc = copy(c->a, (kw_str_t){missing.ptr, missing.len}, &t->missing);
    kw_buf_free(&missing);
    if (rc != KW_OK)
        return rc;
    kw_str_t key;
    bool fresh = false;
    if ((rc = node_key(c, p, &key)) != KW_OK || (rc = seen_add(c, key, &fresh)) != KW_OK)
        return rc;
    if (!fresh) {
        t->cached = true;
        *out = t;
        return KW_OK;
    }
    pairs_t ps = {NULL, 0, 0, c->a};
    rc = collect(c, p, &ps);
    if (rc == KW_OK && ps.n) {
        t->subs = kw_arena_alloc(c->a, ps.n * sizeof(*t->subs));
        if (!t->subs)
            rc = KW_ENOMEM;
    }
    for (size_t i = 0; rc == KW_OK && i < ps.n; i++) {
        kw_trace_t *sub = NULL;
        rc = trace_node(c, &ps.v[i], depth + 1, &sub);
        if (rc == KW_OK && sub)
            t->subs[t->n_subs++] = sub;
    }
    kw_free(ps.v);
    if (rc != KW_OK)
        return rc;
    *out = t;
    return KW_OK;
}

int kw_engine_check_trace(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                          kw_subject_t subject, kw_str_t context, kw_arena_t *arena,
                          kw_trace_t **out, kw_diag_t *diag)
{
    tr_ctx_t c = {e, subject, context, arena, diag, 0, NULL, 0, 0, NULL};
    pair_t root;
    kw_buf_t text;
    kw_buf_init(&text);
    int rc = kw_engine_schema_text(e, &text);
    if (rc == KW_OK && text.failed)
        rc = KW_ENOMEM;
    if (rc == KW_OK)
        rc = kw_schema_compile((kw_str_t){text.ptr, text.len}, &c.s, diag);
    kw_buf_free(&text);
    if (rc == KW_OK)
        rc = copy(arena, resource.type, &root.obj.type);
    if (rc == KW_OK)
        rc = copy(arena, resource.id, &root.obj.id);
    if (rc == KW_OK)
        rc = copy(arena, permission, &root.rel);
    if (rc == KW_OK)
        rc = copy(arena, subject.type, &c.subj.type);
    if (rc == KW_OK)
        rc = copy(arena, subject.id, &c.subj.id);
    if (rc == KW_OK)
        rc = copy(arena, subject.relation, &c.subj.relation);
    kw_trace_t *t = NULL;
    if (rc == KW_OK)
        rc = trace_node(&c, &root, 0, &t);
    kw_free(c.seen);
    if (c.s)
        kw_schema_free(c.s);
    if (rc != KW_OK)
        return rc;
    *out = t;
    return KW_OK;
}
