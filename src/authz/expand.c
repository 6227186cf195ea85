/*
 * authz/expand.c - Expand: the permission tree of resource#permission.
 *
 * A relation becomes a LEAF listing its direct subjects (subject sets unexpanded). A
 * permission becomes its expression: UNION/INTERSECTION/EXCLUSION nodes labelled with the
 * object and permission, REF children expanded in place, an arrow `ts->t` a UNION (labelled
 * with the tupleset relation) of the expansions of t on every subject object of ts, and
 * `ts.all(t)` an INTERSECTION of the same (an empty UNION, i.e. nobody, when ts is empty).
 * NIL is an empty UNION. Recursion through permissions and arrows is capped at
 * KW_MAX_CHECK_DEPTH (cyclic data such as folder loops ends in KW_EDEPTH).
 * Everything is allocated from the caller's arena. The tree can be exponentially larger
 * than the schema and the data (a permission naming the one before it twice doubles it per
 * level), so one answer holds at most KW_MAX_EXPAND_NODES nodes and listed subjects and
 * KW_MAX_EXPAND_BYTES bytes: past either, KW_EBUDGET (tag-kw-query-budget).
 */
#include <string.h>

#include "authz/engine_int.h"

typedef struct ex_ctx {
    const kw_graph_t *g;
    const kw_schema_t *s;
    kw_arena_t *a;
    kw_diag_t *diag;
    size_t nodes, bytes; /* what the answer holds so far */
    int err;             /* why the last allocation failed: KW_ENOMEM or KW_EBUDGET */
    int64_t now;         /* relationships expired at this instant are left out */
} ex_ctx_t;

/* The attributes of fwd edge `ed` of `node` (NULL when none), and whether it is expired. */
static const kw_attr_t *edge_attr(const ex_ctx_t *c, uint32_t node, uint16_t rel,
                                  const kw_edge_t *ed, bool *expired)
{
    const kw_attr_t *a = kw__attr_maybe(c->g, node)
                             ? kw__attr_find(c->g, node, rel, ed->other, ed->other_rel)
                             : NULL;
    *expired = kw__attr_expired(a, c->now);
    return a;
}

/* Counts `n` more nodes or subjects and `bytes` more bytes against the budget: KW_OK, or
 * KW_EBUDGET with diag set (and c->err). */
static int charge(ex_ctx_t *c, size_t n, size_t bytes)
{
    c->nodes += n;
    c->bytes += bytes;
    if (c->nodes > KW_MAX_EXPAND_NODES)
        return c->err = kw_diag_set(c->diag, KW_EBUDGET, 0, 0,
                                    "expand exceeds its budget of %u nodes and subjects",
                                    KW_MAX_EXPAND_NODES);
    if (c->bytes > KW_MAX_EXPAND_BYTES)
        return c->err = kw_diag_set(c->diag, KW_EBUDGET, 0, 0,
                                    "expand exceeds its budget of %u bytes", KW_MAX_EXPAND_BYTES);
    return KW_OK;
}

/* Arena memory counted against the budget; NULL with c->err set on failure. */
static void *ex_alloc(ex_ctx_t *c, size_t n_nodes, size_t size)
{
    if (charge(c, n_nodes, size) != KW_OK)
        return NULL;
    void *p = kw_arena_alloc(c->a, size);
    if (!p)
        c->err = KW_ENOMEM;
    return p;
}

/* Copies s into the arena (the tree must outlive the read lock); ok cleared on failure
 * (c->err says why). */
static kw_str_t dup(ex_ctx_t *c, kw_str_t s, bool *ok)
{
    if (charge(c, 0, s.len + 1) != KW_OK) {
        *ok = false;
        return KW_STR("");
    }
    char *p = kw_arena_strndup(c->a, s.ptr ? s.ptr : "", s.len);
    if (!p) {
        c->err = KW_ENOMEM;
        *ok = false;
        return KW_STR("");
    }
    return (kw_str_t){p, s.len};
}

static kw_str_t node_str(ex_ctx_t *c, uint32_t n, bool *ok)
{
    return dup(c, kw__node_str(&c->g->nodes[n]), ok);
}

/* A new tree node; NULL with c->err set on failure. */
static kw_expand_t *ex_node(ex_ctx_t *c, kw_expand_kind_t kind, uint32_t node, kw_str_t rel,
                            size_t n_children)
{
    kw_expand_t *x = ex_alloc(c, 1, sizeof(*x));
    if (!x)
        return NULL;
    memset(x, 0, sizeof(*x));
    bool ok = true;
    x->kind = kind;
    x->object.type = dup(c, c->s->types[c->g->nodes[node].type].name, &ok);
    x->object.id = node_str(c, node, &ok);
    x->relation = dup(c, rel, &ok);
    if (!ok)
        return NULL;
    if (n_children) {
        x->children = ex_alloc(c, 0, n_children * sizeof(kw_expand_t *));
        if (!x->children)
            return NULL;
    }
    return x;
}

static int ex_rel(ex_ctx_t *c, uint32_t node, uint16_t rel, int depth, kw_expand_t **out);

static int ex_expr(ex_ctx_t *c, uint32_t node, kw_str_t label, const kw_expr_t *e, int depth,
                   kw_expand_t **out)
{
    const kw_graph_t *g = c->g;
    switch (e->kind) {
    case KW_EXPR_NIL:
        *out = ex_node(c, KW_EXPAND_UNION, node, label, 0);
        return *out ? KW_OK : c->err;
    case KW_EXPR_REF:
        return ex_rel(c, node, e->rel, depth, out);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        uint32_t lo, hi;
        kw__graph_fwd_range(g, node, e->rel, &lo, &hi);
        kw_expand_kind_t kind =
            (e->kind == KW_EXPR_ALL && hi > lo) ? KW_EXPAND_INTERSECTION : KW_EXPAND_UNION;
        kw_str_t ts = c->s->types[g->nodes[node].type].rels[e->rel].name;
        kw_expand_t *x = ex_node(c, kind, node, ts, hi - lo);
        if (!x)
            return c->err;
        for (uint32_t i = lo; i < hi; i++) {
            bool expired;
            (void)edge_attr(c, node, e->rel, &kw__fwd(g, node).v[i], &expired);
            if (expired)
                continue;
            uint32_t o = kw__fwd(g, node).v[i].other;
            uint16_t tr = e->target_by_type[g->nodes[o].type];
            kw_expand_t *ch;
            int rc;
            if (tr == KW_REL_NONE) /* that type lacks the target: nobody */
                rc = (ch = ex_node(c, KW_EXPAND_UNION, o, e->target, 0)) ? KW_OK : c->err;
            else
                rc = ex_rel(c, o, tr, depth + 1, &ch);
            if (rc != KW_OK)
                return rc;
            x->children[x->n_children++] = ch;
        }
        if (x->n_children == 0)
            x->kind = KW_EXPAND_UNION; /* every tupleset relationship expired: nobody */
        *out = x;
        return KW_OK;
    }
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE: {
        kw_expand_kind_t kind = e->kind == KW_EXPR_UNION       ? KW_EXPAND_UNION
                                : e->kind == KW_EXPR_INTERSECT ? KW_EXPAND_INTERSECTION
                                                               : KW_EXPAND_EXCLUSION;
        kw_expand_t *x = ex_node(c, kind, node, label, e->n_children);
        if (!x)
            return c->err;
        for (uint32_t i = 0; i < e->n_children; i++) {
            int rc = ex_expr(c, node, label, e->children[i], depth, &x->children[i]);
            if (rc != KW_OK)
                return rc;
            x->n_children++;
        }
        *out = x;
        return KW_OK;
    }
    }
    return KW_EINTERNAL;
}

static int ex_rel(ex_ctx_t *c, uint32_t node, uint16_t rel, int depth, kw_expand_t **out)
{
    const kw_graph_t *g = c->g;
    const kw_type_t *ty = &c->s->types[g->nodes[node].type];
    const kw_relation_t *rd = &ty->rels[rel];
    if (depth >= KW_MAX_CHECK_DEPTH)
        return kw_diag_set(c->diag, KW_EDEPTH, 0, 0,
                           "expand exceeded the maximum depth of %d at %.*s:%.*s#%.*s",
                           KW_MAX_CHECK_DEPTH, KW_STR_FMT(ty->name),
                           KW_STR_FMT(kw__node_str(&g->nodes[node])), KW_STR_FMT(rd->name));
    if (rd->is_permission)
        return ex_expr(c, node, rd->name, rd->expr, depth + 1, out);
    uint32_t lo, hi;
    kw__graph_fwd_range(g, node, rel, &lo, &hi);
    kw_expand_t *x = ex_node(c, KW_EXPAND_LEAF, node, rd->name, 0);
    if (!x)
        return c->err;
    if (hi > lo) {
        x->subjects = ex_alloc(c, hi - lo, (hi - lo) * sizeof(kw_subject_t));
        if (!x->subjects)
            return c->err;
    }
    for (uint32_t i = lo; i < hi; i++) {
        kw_edge_t ed = kw__fwd(g, node).v[i];
        bool expired;
        const kw_attr_t *a = edge_attr(c, node, rel, &ed, &expired);
        if (expired)
            continue;
        uint16_t st = g->nodes[ed.other].type;
        bool ok = true;
        if (a && a->caveat != KW_CAVEAT_NONE) {
            if (!x->caveats) {
                x->caveats = ex_alloc(c, 0, (hi - lo) * sizeof(kw_expand_caveat_t));
                if (!x->caveats)
                    return c->err;
                memset(x->caveats, 0, (hi - lo) * sizeof(kw_expand_caveat_t));
            }
            kw_expand_caveat_t *cv = &x->caveats[x->n_subjects];
            cv->name = dup(c, c->s->caveats[a->caveat].name, &ok);
            cv->context = dup(c, (kw_str_t){a->ctx, a->ctx_len}, &ok);
        }
        kw_subject_t *sj = &x->subjects[x->n_subjects++];
        sj->type = dup(c, c->s->types[st].name, &ok);
        sj->id = node_str(c, ed.other, &ok);
        sj->relation = ed.other_rel == KW_REL_NONE
                           ? KW_STR("")
                           : dup(c, c->s->types[st].rels[ed.other_rel].name, &ok);
        if (!ok)
            return c->err;
    }
    *out = x;
    return KW_OK;
}

int kw_engine_expand(kw_engine_t *e, kw_object_t resource, kw_str_t permission, kw_arena_t *arena,
                     kw_expand_t **out, kw_revision_t *rev, kw_diag_t *diag)
{
    kw__engine_rdlock(e);
    int rc;
    kw_expand_t *root = NULL;
    if (!e->model) {
        rc = kw__engine_no_schema(diag);
        goto done;
    }
    uint16_t t, r;
    rc = kw__resolve_perm(e, resource.type, permission, &t, &r, diag);
    if (rc != KW_OK)
        goto done;
    ex_ctx_t c = {&e->g, e->model->schema, arena, diag, 0, 0, KW_ENOMEM, kw__engine_query_now(e)};
    uint32_t node = kw__graph_find(&e->g, t, resource.id.ptr, resource.id.len);
    if (node == KW_NODE_NONE) {
        /* An object without relationships: an empty tree of the right shape. */
        root = kw_arena_alloc(arena, sizeof(*root));
        char *id = kw_arena_strndup(arena, resource.id.ptr, resource.id.len);
        if (!root || !id) {
            rc = KW_ENOMEM;
        } else {
            const kw_relation_t *rd = &c.s->types[t].rels[r];
            memset(root, 0, sizeof(*root));
            bool ok = true;
            root->kind = rd->is_permission ? KW_EXPAND_UNION : KW_EXPAND_LEAF;
            root->object.type = dup(&c, c.s->types[t].name, &ok);
            root->object.id = (kw_str_t){id, resource.id.len};
            root->relation = dup(&c, rd->name, &ok);
            if (!ok)
                rc = c.err;
        }
    } else {
        rc = ex_rel(&c, node, r, 0, &root);
    }
    if (rc == KW_ENOMEM)
        kw_diag_set(diag, rc, 0, 0, "out of memory during expand");
done:
    if (rc == KW_OK && rev)
        *rev = e->rev;
    kw__engine_unlock(e);
    if (rc == KW_OK)
        *out = root;
    return rc;
}
