/*
 * authz/lookup.c - LookupResources and LookupSubjects.
 *
 * Both generate a superset of candidates by walking the graph over (node, rel) pairs,
 * then verify every candidate with Check (sharing one memo table), so the answer is
 * exactly "the objects for which Check says yes", each once.
 *  - LookupResources walks backwards from the subject (and its type's wildcard node):
 *    a reached pair X#r leads to R#rel for every subject-set edge R#rel@X#r, to X#p for
 *    every permission p of X's type that mentions r, and to R#p for every arrow
 *    `ts->...` of R's type whose target on X's type is r and every edge R#ts@X.
 *    Every positive derivation of a permission grounds in an edge to the subject or its
 *    wildcard (or the subject set itself), so no answer can be missed.
 *  - LookupSubjects walks forwards from resource#permission through every branch of the
 *    expressions (subtracted sides too), collecting subjects of the wanted type.
 * Both entry points try the planned path first (lookup_plan.c, results bounded by the
 * answer) and take these walks only for the shapes it does not plan (KW_EAGAIN).
 * The walk can look at far more than it answers, and each verification is a Check: both
 * count against one budget per query, KW_MAX_LOOKUP_STEPS (KW_EBUDGET).
 */
#include <string.h>

#include "authz/engine_int.h"

/* ---- a set of (node, rel) pairs plus the work queue ---- */

typedef struct pairset {
    uint64_t *slots; /* key + 1; 0 = empty */
    uint32_t cap, used;
    uint64_t *queue;
    size_t qn, qcap, qhead;
    uint64_t work; /* ps_add calls: the edges and dependencies the walk looked at */
} pairset_t;

static void ps_free(pairset_t *p)
{
    kw_free(p->slots);
    kw_free(p->queue);
}

/* Adds key; returns 1 if new (and queued), 0 if present, KW_ENOMEM. */
static int ps_add(pairset_t *p, uint64_t key)
{
    p->work++;
    if ((p->used + 1) * 2 > p->cap) {
        uint32_t ncap = p->cap ? p->cap * 2 : 256;
        uint64_t *ns = kw_calloc(ncap, sizeof(uint64_t));
        if (!ns)
            return KW_ENOMEM;
        for (uint32_t i = 0; i < p->cap; i++) {
            if (!p->slots[i])
                continue;
            uint32_t j = (uint32_t)kw_hash_u64(p->slots[i]) & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = p->slots[i];
        }
        kw_free(p->slots);
        p->slots = ns;
        p->cap = ncap;
    }
    uint64_t k = key + 1;
    uint32_t j = (uint32_t)kw_hash_u64(k) & (p->cap - 1);
    for (;; j = (j + 1) & (p->cap - 1)) {
        if (p->slots[j] == k)
            return 0;
        if (!p->slots[j])
            break;
    }
    if (kw_grow((void **)&p->queue, &p->qcap, p->qn + 1, sizeof(uint64_t)) != KW_OK)
        return KW_ENOMEM;
    p->slots[j] = k;
    p->used++;
    p->queue[p->qn++] = key;
    return 1;
}

static uint64_t pkey(uint32_t node, uint16_t rel)
{
    return ((uint64_t)node << 16) | rel;
}

static int push(pairset_t *p, uint32_t node, uint16_t rel)
{
    int r = ps_add(p, pkey(node, rel));
    return r < 0 ? r : KW_OK;
}

/* Pushes R#rel for every rev edge of x with subject relation `orel` (R#rel@x#orel). */
static int push_rev_sets(pairset_t *p, const kw_graph_t *g, uint32_t x, uint16_t orel)
{
    const kw_eslice_t es = kw__rev(g, x);
    uint32_t lo = kw__graph_lower(es.v, es.n, kw__rev_key(0, orel, 0), false);
    for (uint32_t i = lo; i < es.n && es.v[i].other_rel == orel; i++) {
        int rc = push(p, es.v[i].other, es.v[i].rel);
        if (rc)
            return rc;
    }
    return KW_OK;
}

/* Pushes R#perm for every rev edge R#ts@x (any subject relation) with R of type rtype. */
static int push_rev_arrow(pairset_t *p, const kw_graph_t *g, uint32_t x, uint16_t rtype,
                          uint16_t ts, uint16_t perm)
{
    const kw_eslice_t es = kw__rev(g, x);
    uint32_t i = 0;
    while (i < es.n) {
        uint16_t orel = es.v[i].other_rel;
        uint32_t lo = kw__graph_lower(es.v, es.n, kw__rev_key(ts, orel, 0), false);
        for (uint32_t k = lo; k < es.n && es.v[k].other_rel == orel && es.v[k].rel == ts; k++) {
            uint32_t r = es.v[k].other;
            if (g->nodes[r].type != rtype)
                continue;
            int rc = push(p, r, perm);
            if (rc)
                return rc;
        }
        if (orel == UINT16_MAX)
            break;
        i = kw__graph_lower(es.v, es.n, kw__rev_key(0, (uint16_t)(orel + 1), 0), false);
    }
    return KW_OK;
}

/* tag-kw-query-budget: a lookup's work is the walk's (ps_add calls) plus the check steps
 * of every candidate it verifies, for the whole query; past KW_MAX_LOOKUP_STEPS it stops.
 * The checks are budgeted one by one as well (KW_MAX_CHECK_STEPS). */
static int over_budget(const char *what, kw_diag_t *diag)
{
    return kw_diag_set(diag, KW_EBUDGET, 0, 0, "%s exceeded its budget of %u steps", what,
                       KW_MAX_LOOKUP_STEPS);
}

/* How a lookup reports: YES results only (the entry points without context), or YES and
 * CONDITIONAL ones with their missing parameter names. */
typedef struct lk_out {
    bool with_cond;
    kw_resource_cb rcb; /* LookupResources */
    kw_subject_cb scb;  /* LookupSubjects */
    void *ud;
    kw_buf_t names;
    kw__lr_node_fn ncb; /* LookupResources by node (instead of rcb) */
} lk_out_t;

/* Reports a verified resource (v: KW_CK_YES or KW_CK_COND); node is KW_NODE_NONE for
 * the subject set itself (absent from the graph). */
static int emit_resource(lk_out_t *o, const kw_ck_t *c, uint32_t node, kw_str_t id, int v,
                         kw_diag_t *diag)
{
    if (o->ncb)
        return o->ncb(node, v, c, o->ud);
    kw_resource_result_t res = {id, false, KW_STR_NULL};
    if (v == KW_CK_COND) {
        if (!o->with_cond)
            return 0;
        res.conditional = true;
        o->names.len = 0;
        kw__ck_missing(c, c->miss, &o->names);
        if (o->names.failed)
            return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
        res.missing = (kw_str_t){o->names.ptr, o->names.len};
    }
    return o->rcb(&res, o->ud);
}

/* The planned path's results, reported like the general path's. */
typedef struct plan_fwd {
    lk_out_t *out;
    kw_diag_t *diag;
} plan_fwd_t;

static int on_planned(uint32_t node, int v, const kw_ck_t *c, void *ud)
{
    plan_fwd_t *f = ud;
    return emit_resource(f->out, c, node, kw__node_str(&c->g->nodes[node]), v, f->diag);
}

static int lookup_resources_locked(kw_engine_t *e, kw_str_t resource_type, kw_str_t permission,
                                   kw_subject_t subject, kw_str_t context, int path, lk_out_t *out,
                                   kw_diag_t *diag)
{
    const kw_graph_t *g = &e->g;
    const kw_model_t *m = e->model;
    uint16_t t, r, stype, srel;
    uint32_t snode;
    int rc = kw__resolve_perm(e, resource_type, permission, &t, &r, diag);
    if (rc == KW_OK)
        rc = kw__resolve_subject(e, subject, &stype, &srel, &snode, diag);
    if (rc != KW_OK)
        return rc;
    if (snode == KW_NODE_NONE && srel != KW_REL_NONE && stype == t) {
        /* The subject set itself (absent from the graph, so the walk cannot list it). */
        int self = kw__ck_absent(m->schema, t, r, srel, diag);
        if (self < 0)
            return self;
        if (self && (rc = emit_resource(out, NULL, KW_NODE_NONE, subject.id, KW_CK_YES, diag)) != 0)
            return rc;
    }
    pairset_t ps = {0};
    kw_ck_t *c = kw_malloc(sizeof(kw_ck_t));
    if (!c)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
    kw__ck_init(c, g, m->schema, diag);
    kw__ck_model(c, m);
    kw__ck_context(c, kw__engine_query_now(e), context);
    kw__ck_subject(c, snode, stype, srel);
    if (path != KW__LK_GENERAL) {
        /* The planned path first; the walk below only for shapes it does not plan. */
        plan_fwd_t f = {out, diag};
        rc = kw__lookup_plan_resources(c, m, t, r, on_planned, &f, NULL, diag);
        if (rc != KW_EAGAIN || path == KW__LK_PLAN)
            goto done;
        rc = KW_OK;
    }
    if (rc == KW_OK && snode != KW_NODE_NONE) {
        if (srel != KW_REL_NONE)
            rc = push(&ps, snode, srel);
        if (rc == KW_OK)
            rc = push_rev_sets(&ps, g, snode, srel);
    }
    if (rc == KW_OK && c->swild != KW_NODE_NONE && c->swild != snode)
        rc = push_rev_sets(&ps, g, c->swild, KW_REL_NONE);
    while (rc == KW_OK && ps.qhead < ps.qn) {
        if (ps.work > KW_MAX_LOOKUP_STEPS) {
            rc = over_budget("LookupResources", diag);
            break;
        }
        uint64_t k = ps.queue[ps.qhead++];
        uint32_t x = (uint32_t)(k >> 16);
        uint16_t rel = (uint16_t)(k & 0xffff);
        uint16_t xt = g->nodes[x].type;
        rc = push_rev_sets(&ps, g, x, rel);
        const kw_revdeps_t *deps = &m->revdeps[m->rel_base[xt] + rel];
        for (uint32_t i = 0; i < deps->n && rc == KW_OK; i++) {
            const kw_revdep_t *d = &deps->v[i];
            if (d->arrow_rel == KW_REL_NONE)
                rc = push(&ps, x, d->perm);
            else
                rc = push_rev_arrow(&ps, g, x, d->res_type, d->arrow_rel, d->perm);
        }
    }
    if (rc != KW_OK && rc != KW_EBUDGET)
        rc = kw_diag_set(diag, rc, 0, 0, "out of memory during lookup");
    /* Verify each candidate of the wanted type and permission. */
    uint64_t work = ps.work;
    for (size_t i = 0; i < ps.qn && rc == KW_OK; i++) {
        uint32_t x = (uint32_t)(ps.queue[i] >> 16);
        uint16_t rel = (uint16_t)(ps.queue[i] & 0xffff);
        if (rel != r || g->nodes[x].type != t)
            continue;
        int v = kw__ck_check(c, x, r);
        if (v < 0) {
            rc = v;
            break;
        }
        work += c->steps;
        if (work > KW_MAX_LOOKUP_STEPS) {
            rc = over_budget("LookupResources", diag);
            break;
        }
        if (v != KW_CK_NO)
            rc = emit_resource(out, c, x, kw__node_str(&g->nodes[x]), v, diag);
    }
done:
    kw__ck_close(c);
    kw_free(c);
    ps_free(&ps);
    return rc;
}

int kw__lookup_resources_nodes(kw_engine_t *e, kw_str_t resource_type, kw_str_t permission,
                               kw_subject_t subject, kw_str_t context, kw__lr_node_fn fn, void *ud,
                               kw_diag_t *diag)
{
    lk_out_t out = {true, NULL, NULL, ud, {0}, fn};
    return lookup_resources_locked(e, resource_type, permission, subject, context, KW__LK_AUTO,
                                   &out, diag);
}

static int lookup_resources_run(kw_engine_t *e, kw_str_t resource_type, kw_str_t permission,
                                kw_subject_t subject, kw_str_t context, int path, lk_out_t *out,
                                kw_revision_t *rev, kw_diag_t *diag)
{
    kw_buf_init(&out->names);
    kw__engine_rdlock(e);
    int rc;
    if (!e->model) {
        rc = kw__engine_no_schema(diag);
    } else {
        rc = lookup_resources_locked(e, resource_type, permission, subject, context, path, out,
                                     diag);
        if (rc == KW_OK && rev)
            *rev = e->rev;
    }
    kw__engine_unlock(e);
    kw_buf_free(&out->names);
    return rc;
}

int kw_engine_lookup_resources_ctx(kw_engine_t *e, kw_str_t resource_type, kw_str_t permission,
                                   kw_subject_t subject, kw_str_t context, kw_resource_cb cb,
                                   void *ud, kw_revision_t *rev, kw_diag_t *diag)
{
    lk_out_t out = {true, cb, NULL, ud, {0}, NULL};
    return lookup_resources_run(e, resource_type, permission, subject, context, KW__LK_AUTO, &out,
                                rev, diag);
}

int kw__engine_lookup_resources_path(kw_engine_t *e, kw_str_t resource_type, kw_str_t permission,
                                     kw_subject_t subject, kw_str_t context, int path,
                                     kw_resource_cb cb, void *ud, kw_diag_t *diag)
{
    lk_out_t out = {true, cb, NULL, ud, {0}, NULL};
    return lookup_resources_run(e, resource_type, permission, subject, context, path, &out, NULL,
                                diag);
}

/* The id-only callback of kw_engine_lookup_resources. */
typedef struct id_fwd {
    kw_id_cb cb;
    void *ud;
} id_fwd_t;

static int on_resource_id(const kw_resource_result_t *res, void *ud)
{
    const id_fwd_t *f = ud;
    return f->cb(res->id, f->ud);
}

int kw_engine_lookup_resources(kw_engine_t *e, kw_str_t resource_type, kw_str_t permission,
                               kw_subject_t subject, kw_id_cb cb, void *ud, kw_revision_t *rev,
                               kw_diag_t *diag)
{
    id_fwd_t f = {cb, ud};
    lk_out_t out = {false, on_resource_id, NULL, &f, {0}, NULL};
    return lookup_resources_run(e, resource_type, permission, subject, KW_STR_NULL, KW__LK_AUTO,
                                &out, rev, diag);
}

/* ---- LookupSubjects ---- */

static int walk_expr(pairset_t *ps, const kw_graph_t *g, uint32_t x, const kw_expr_t *ex)
{
    switch (ex->kind) {
    case KW_EXPR_NIL:
        return KW_OK;
    case KW_EXPR_REF:
        return push(ps, x, ex->rel);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        uint32_t lo, hi;
        kw__graph_fwd_range(g, x, ex->rel, &lo, &hi);
        for (uint32_t i = lo; i < hi; i++) {
            uint32_t o = kw__fwd(g, x).v[i].other;
            uint16_t tr = ex->target_by_type[g->nodes[o].type];
            if (tr != KW_REL_NONE) {
                int rc = push(ps, o, tr);
                if (rc)
                    return rc;
            }
        }
        return KW_OK;
    }
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE:
        for (uint32_t i = 0; i < ex->n_children; i++) {
            int rc = walk_expr(ps, g, x, ex->children[i]);
            if (rc)
                return rc;
        }
        return KW_OK;
    }
    return KW_EINTERNAL;
}

/* Reports a conditional subject (or the conditional wildcard with its exclusions). */
static int emit_subject_cond(lk_out_t *o, const kw_ck_t *c, kw_str_t id, const kw_str_t *excl,
                             size_t n_excl, kw_diag_t *diag)
{
    o->names.len = 0;
    kw__ck_missing(c, c->miss, &o->names);
    if (o->names.failed)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
    kw_subject_result_t res = {id, excl, n_excl, true, (kw_str_t){o->names.ptr, o->names.len}};
    return o->scb(&res, o->ud);
}

typedef struct nodeset {
    uint32_t *v;
    size_t n, cap;
    pairset_t seen;
} nodeset_t;

static int ns_add(nodeset_t *s, uint32_t node)
{
    int r = ps_add(&s->seen, node);
    if (r <= 0)
        return r;
    if (kw_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(uint32_t)) != KW_OK)
        return KW_ENOMEM;
    s->v[s->n++] = node;
    return KW_OK;
}

/* The planned path's subjects, reported like the walk's. */
static int on_planned_subject(uint32_t node, int v, const kw_ck_t *c, void *ud)
{
    plan_fwd_t *f = ud;
    kw_str_t id = kw__node_str(&c->g->nodes[node]);
    if (v == KW_CK_YES) {
        kw_subject_result_t res = {id, NULL, 0, false, KW_STR_NULL};
        return f->out->scb(&res, f->out->ud);
    }
    return f->out->with_cond ? emit_subject_cond(f->out, c, id, NULL, 0, f->diag) : 0;
}

static int on_planned_wild(const uint32_t *excl, size_t n_excl, int v, const kw_ck_t *c, void *ud)
{
    plan_fwd_t *f = ud;
    kw_str_t *ids = NULL;
    if (n_excl && !(ids = kw_malloc(n_excl * sizeof(kw_str_t))))
        return kw_diag_set(f->diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
    for (size_t i = 0; i < n_excl; i++)
        ids[i] = kw__node_str(&c->g->nodes[excl[i]]);
    int rc = 0;
    if (v == KW_CK_YES) {
        kw_subject_result_t res = {KW_STR("*"), ids, n_excl, false, KW_STR_NULL};
        rc = f->out->scb(&res, f->out->ud);
    } else if (f->out->with_cond) {
        rc = emit_subject_cond(f->out, c, KW_STR("*"), ids, n_excl, f->diag);
    }
    kw_free(ids);
    return rc;
}

static int lookup_subjects_locked(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                  kw_str_t subject_type, kw_str_t subject_relation,
                                  kw_str_t context, int path, lk_out_t *out, kw_diag_t *diag)
{
    kw_subject_cb cb = out->scb;
    void *ud = out->ud;
    const kw_graph_t *g = &e->g;
    const kw_schema_t *s = e->model->schema;
    uint16_t t, r;
    int rc = kw__resolve_perm(e, resource.type, permission, &t, &r, diag);
    if (rc != KW_OK)
        return rc;
    uint16_t stype = kw_schema_type_index(s, subject_type);
    if (stype == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(subject_type));
    uint16_t srel = KW_REL_NONE;
    if (!kw__is_ellipsis(subject_relation)) {
        srel = kw_schema_rel_index(s, stype, subject_relation);
        if (srel == KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relation or permission \"%.*s#%.*s\" not found",
                               KW_STR_FMT(subject_type), KW_STR_FMT(subject_relation));
    }
    uint32_t rnode = kw__graph_find(g, t, resource.id.ptr, resource.id.len);
    if (rnode == KW_NODE_NONE) {
        int self = 0;
        if (stype == t && srel != KW_REL_NONE)
            self = kw__ck_absent(s, t, r, srel, diag);
        if (self < 0)
            return self;
        if (self) {
            /* the subject set has itself */
            kw_subject_result_t res = {resource.id, NULL, 0, false, KW_STR_NULL};
            return cb(&res, ud);
        }
        return KW_OK;
    }
    pairset_t ps = {0};
    nodeset_t cand = {0};
    kw_str_t *excluded = NULL;
    size_t n_excl = 0, excl_cap = 0;
    uint32_t wild = KW_NODE_NONE;
    kw_ck_t *c = kw_malloc(sizeof(kw_ck_t));
    if (!c)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
    kw__ck_init(c, g, s, diag);
    kw__ck_model(c, e->model);
    kw__ck_context(c, kw__engine_query_now(e), context);
    if (path != KW__LK_GENERAL) {
        /* The planned path first; the walk below only for shapes it does not plan. */
        plan_fwd_t f = {out, diag};
        rc = kw__lookup_plan_subjects(c, e->model, rnode, r, stype, srel, on_planned_subject,
                                      on_planned_wild, &f, NULL, diag);
        if (rc != KW_EAGAIN || path == KW__LK_PLAN)
            goto done;
    }
    rc = push(&ps, rnode, r);
    while (rc == KW_OK && ps.qhead < ps.qn) {
        if (ps.work + cand.seen.work > KW_MAX_LOOKUP_STEPS) {
            rc = over_budget("LookupSubjects", diag);
            break;
        }
        uint64_t k = ps.queue[ps.qhead++];
        uint32_t x = (uint32_t)(k >> 16);
        uint16_t rel = (uint16_t)(k & 0xffff);
        uint16_t xt = g->nodes[x].type;
        if (xt == stype && rel == srel)
            rc = ns_add(&cand, x);
        const kw_relation_t *rd = &s->types[xt].rels[rel];
        if (rc == KW_OK && rd->is_permission) {
            rc = walk_expr(&ps, g, x, rd->expr);
        } else if (rc == KW_OK) {
            uint32_t lo, hi;
            kw__graph_fwd_range(g, x, rel, &lo, &hi);
            for (uint32_t i = lo; i < hi && rc == KW_OK; i++) {
                kw_edge_t ed = kw__fwd(g, x).v[i];
                if (ed.other_rel != KW_REL_NONE)
                    rc = push(&ps, ed.other, ed.other_rel);
                if (rc == KW_OK && g->nodes[ed.other].type == stype && ed.other_rel == srel)
                    rc = ns_add(&cand, ed.other);
            }
        }
    }
    if (rc != KW_OK && rc != KW_EBUDGET)
        rc = kw_diag_set(diag, rc, 0, 0, "out of memory during lookup");
    /* Verify: concrete subjects one by one; the wildcard with its exclusions. */
    uint64_t work = ps.work + cand.seen.work;
    for (size_t i = 0; i < cand.n && rc == KW_OK; i++) {
        uint32_t o = cand.v[i];
        const kw_node_t *nd = &g->nodes[o];
        bool is_wild = kw__node_str(nd).len == 1 && kw__node_str(nd).ptr[0] == '*';
        if (is_wild) {
            wild = o;
            continue;
        }
        kw__ck_subject(c, o, stype, srel);
        int v = kw__ck_check(c, rnode, r);
        work += c->steps;
        if (v < 0) {
            rc = v;
        } else if (work > KW_MAX_LOOKUP_STEPS) {
            rc = over_budget("LookupSubjects", diag);
        } else if (v == KW_CK_YES) {
            kw_subject_result_t res = {kw__node_str(nd), NULL, 0, false, KW_STR_NULL};
            rc = cb(&res, ud);
        } else {
            /* NO, or only CONDITIONAL: reported as such (with context), and either way
             * not covered by the wildcard's unconditional answer. */
            if (v == KW_CK_COND && out->with_cond)
                rc = emit_subject_cond(out, c, kw__node_str(nd), NULL, 0, diag);
            if (rc == KW_OK && srel == KW_REL_NONE) {
                if (kw_grow((void **)&excluded, &excl_cap, n_excl + 1, sizeof(kw_str_t)) != KW_OK)
                    rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory during lookup");
                else
                    excluded[n_excl++] = kw__node_str(nd);
            }
        }
    }
    if (rc == KW_OK && wild != KW_NODE_NONE && srel == KW_REL_NONE) {
        kw__ck_subject(c, wild, stype, KW_REL_NONE);
        int v = kw__ck_check(c, rnode, r);
        if (v < 0) {
            rc = v;
        } else if (v == KW_CK_YES) {
            kw_subject_result_t res = {KW_STR("*"), excluded, n_excl, false, KW_STR_NULL};
            rc = cb(&res, ud);
        } else if (v == KW_CK_COND && out->with_cond) {
            rc = emit_subject_cond(out, c, KW_STR("*"), excluded, n_excl, diag);
        }
    }
done:
    kw_free(excluded);
    kw__ck_close(c);
    kw_free(c);
    ps_free(&ps);
    ps_free(&cand.seen);
    kw_free(cand.v);
    return rc;
}

static int lookup_subjects_run(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                               kw_str_t subject_type, kw_str_t subject_relation, kw_str_t context,
                               int path, lk_out_t *out, kw_revision_t *rev, kw_diag_t *diag)
{
    kw_buf_init(&out->names);
    kw__engine_rdlock(e);
    int rc;
    if (!e->model) {
        rc = kw__engine_no_schema(diag);
    } else {
        rc = lookup_subjects_locked(e, resource, permission, subject_type, subject_relation,
                                    context, path, out, diag);
        if (rc == KW_OK && rev)
            *rev = e->rev;
    }
    kw__engine_unlock(e);
    kw_buf_free(&out->names);
    return rc;
}

int kw_engine_lookup_subjects(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                              kw_str_t subject_type, kw_str_t subject_relation, kw_subject_cb cb,
                              void *ud, kw_revision_t *rev, kw_diag_t *diag)
{
    lk_out_t out = {false, NULL, cb, ud, {0}, NULL};
    return lookup_subjects_run(e, resource, permission, subject_type, subject_relation, KW_STR_NULL,
                               KW__LK_AUTO, &out, rev, diag);
}

int kw_engine_lookup_subjects_ctx(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                  kw_str_t subject_type, kw_str_t subject_relation,
                                  kw_str_t context, kw_subject_cb cb, void *ud, kw_revision_t *rev,
                                  kw_diag_t *diag)
{
    lk_out_t out = {true, NULL, cb, ud, {0}, NULL};
    return lookup_subjects_run(e, resource, permission, subject_type, subject_relation, context,
                               KW__LK_AUTO, &out, rev, diag);
}

int kw__engine_lookup_subjects_path(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                    kw_str_t subject_type, kw_str_t subject_relation,
                                    kw_str_t context, int path, kw_subject_cb cb, void *ud,
                                    kw_diag_t *diag)
{
    lk_out_t out = {true, NULL, cb, ud, {0}};
    return lookup_subjects_run(e, resource, permission, subject_type, subject_relation, context,
                               path, &out, NULL, diag);
}
