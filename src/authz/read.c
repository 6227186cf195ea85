/*
 * authz/read.c - relationship filters (SpiceDB's RelationshipFilter) and what uses them:
 * preconditions of a write, the matches a delete-by-filter removes (write.c), and Read.
 *
 * A filter is compiled once against the installed schema and graph (names to indices,
 * ids to nodes), then walked through the narrowest index: the resource's forward edges
 * when its id is given, else the subject's reverse edges when the subject id is given,
 * else every node of the resource type. Callers hold the engine lock.
 */
#include <stdlib.h>
#include <string.h>

#include "authz/engine_int.h"

/* ---- filters ---- */

int kw__filter_compile(const kw_engine_t *e, const kw_filter_t *f, kw_cfilter_t *cf,
                       kw_diag_t *diag)
{
    const kw_schema_t *s = e->model->schema;
    memset(cf, 0, sizeof(*cf));
    cf->now = kw__engine_query_now(e);
    /* No resource type (SpiceDB allows it): cf->rtype KW_TYPE_NONE matches every type; a
     * relation or an id is only meaningful within one. */
    if (f->resource_type.len == 0 && (f->relation.len || f->resource_id.len))
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "a relationship filter with a relation or a resource id needs a "
                           "resource type");
    if (f->resource_type.len == 0 && !f->has_subject)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "a relationship filter needs a resource type or a subject filter");
    cf->rtype = f->resource_type.len ? kw_schema_type_index(s, f->resource_type) : KW_TYPE_NONE;
    if (cf->rtype == KW_TYPE_NONE && f->resource_type.len)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(f->resource_type));
    cf->rel = KW_REL_NONE;
    if (f->relation.len) {
        cf->rel = kw_schema_rel_index(s, cf->rtype, f->relation);
        if (cf->rel == KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "relation \"%.*s#%.*s\" not found",
                               KW_STR_FMT(f->resource_type), KW_STR_FMT(f->relation));
    }
    cf->rnode = KW_NODE_NONE;
    if (f->resource_id.len) {
        cf->rid_set = true;
        cf->rid = f->resource_id;
        cf->rnode = kw__graph_find(&e->g, cf->rtype, f->resource_id.ptr, f->resource_id.len);
    }
    cf->has_subject = f->has_subject;
    cf->snode = KW_NODE_NONE;
    if (f->has_subject) {
        if (f->subject_type.len) {
            cf->stype_set = true;
            cf->stype = kw_schema_type_index(s, f->subject_type);
            if (cf->stype == KW_TYPE_NONE)
                return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                                   KW_STR_FMT(f->subject_type));
        }
        if (f->subject_id.len) {
            if (!cf->stype_set)
                return kw_diag_set(diag, KW_EINVAL, 0, 0,
                                   "a subject filter with an id needs a subject type");
            cf->sid_set = true;
            cf->sid = f->subject_id;
            cf->snode = kw__graph_find(&e->g, cf->stype, f->subject_id.ptr, f->subject_id.len);
        }
        if (f->subject_relation_set) {
            cf->srel_set = true;
            cf->srel = KW_REL_NONE;
            if (!kw__is_ellipsis(f->subject_relation)) {
                if (!cf->stype_set)
                    return kw_diag_set(diag, KW_EINVAL, 0, 0,
                                       "a subject filter with a relation needs a subject type");
                cf->srel = kw_schema_rel_index(s, cf->stype, f->subject_relation);
                if (cf->srel == KW_REL_NONE)
                    return kw_diag_set(diag, KW_EINVAL, 0, 0, "relation \"%.*s#%.*s\" not found",
                                       KW_STR_FMT(f->subject_type),
                                       KW_STR_FMT(f->subject_relation));
            }
        }
    }
    return KW_OK;
}

static bool filter_edge(const kw_graph_t *g, const kw_cfilter_t *cf, uint32_t rnode, uint16_t rel,
                        uint32_t snode, uint16_t srel)
{
    if (cf->rtype != KW_TYPE_NONE && g->nodes[rnode].type != cf->rtype)
        return false;
    if (cf->rid_set && rnode != cf->rnode)
        return false;
    if (cf->rel != KW_REL_NONE && rel != cf->rel)
        return false;
    if (cf->has_subject) {
        if (cf->stype_set && g->nodes[snode].type != cf->stype)
            return false;
        if (cf->sid_set && snode != cf->snode)
            return false;
        if (cf->srel_set && srel != cf->srel)
            return false;
    }
    if (kw__attr_maybe(g, rnode) &&
        kw__attr_expired(kw__attr_find(g, rnode, rel, snode, srel), cf->now))
        return false; /* invisible from its expiry instant on */
    return true;
}

typedef int (*match_fn)(void *ud, uint32_t rnode, const kw_edge_t *ed);

/* Calls fn for every stored relationship matching cf, using the narrowest index. */
static int filter_each(const kw_graph_t *g, const kw_cfilter_t *cf, match_fn fn, void *ud)
{
    if (cf->rid_set) {
        if (cf->rnode == KW_NODE_NONE)
            return 0;
        const kw_eslice_t es = kw__fwd(g, cf->rnode);
        for (uint32_t i = 0; i < es.n; i++) {
            if (filter_edge(g, cf, cf->rnode, es.v[i].rel, es.v[i].other, es.v[i].other_rel)) {
                int rc = fn(ud, cf->rnode, &es.v[i]);
                if (rc)
                    return rc;
            }
        }
        return 0;
    }
    if (cf->has_subject && cf->sid_set) {
        if (cf->snode == KW_NODE_NONE)
            return 0;
        const kw_eslice_t es = kw__rev(g, cf->snode);
        for (uint32_t i = 0; i < es.n; i++) {
            kw_edge_t ed = {cf->snode, es.v[i].rel, es.v[i].other_rel};
            if (filter_edge(g, cf, es.v[i].other, ed.rel, cf->snode, ed.other_rel)) {
                int rc = fn(ud, es.v[i].other, &ed);
                if (rc)
                    return rc;
            }
        }
        return 0;
    }
    for (uint32_t n = 0; n < g->n_nodes; n++) {
        const kw_node_t *nd = &g->nodes[n];
        if (!kw__node_live(nd) || (cf->rtype != KW_TYPE_NONE && nd->type != cf->rtype))
            continue;
        const kw_eslice_t es = kw__node_fwd(nd);
        for (uint32_t i = 0; i < es.n; i++) {
            if (filter_edge(g, cf, n, es.v[i].rel, es.v[i].other, es.v[i].other_rel)) {
                int rc = fn(ud, n, &es.v[i]);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

static int match_stop(void *ud, uint32_t rnode, const kw_edge_t *ed)
{
    (void)ud;
    (void)rnode;
    (void)ed;
    return 1;
}

int kw__check_preconditions(const kw_engine_t *e, const kw_precondition_t *pre, size_t n_pre,
                            kw_diag_t *diag)
{
    if (n_pre > KW_MAX_PRECONDITIONS)
        return kw_diag_set(diag, KW_ELIMIT, 0, 0, "more than %d preconditions",
                           KW_MAX_PRECONDITIONS);
    for (size_t i = 0; i < n_pre; i++) {
        kw_cfilter_t cf;
        int rc = kw__filter_compile(e, &pre[i].filter, &cf, diag);
        if (rc != KW_OK)
            return rc;
        bool found = filter_each(&e->g, &cf, match_stop, NULL) != 0;
        if (found != pre[i].must_match)
            return kw_diag_set(diag, KW_EPRECOND, 0, 0,
                               "precondition %zu failed: %s relationship of resource type \"%.*s\" "
                               "matches its filter",
                               i, pre[i].must_match ? "no" : "a",
                               KW_STR_FMT(pre[i].filter.resource_type));
    }
    return KW_OK;
}

static int match_collect(void *ud, uint32_t rnode, const kw_edge_t *ed)
{
    kw_matches_t *m = ud;
    if (m->n == m->cap) {
        size_t cap1 = m->cap, cap2 = m->cap;
        if (kw_grow((void **)&m->rnodes, &cap1, m->n + 1, sizeof(uint32_t)) != KW_OK ||
            kw_grow((void **)&m->edges, &cap2, m->n + 1, sizeof(kw_edge_t)) != KW_OK)
            return KW_ENOMEM;
        m->cap = cap1 < cap2 ? cap1 : cap2;
    }
    m->rnodes[m->n] = rnode;
    m->edges[m->n] = *ed;
    m->n++;
    return 0;
}

int kw__filter_collect(const kw_graph_t *g, const kw_cfilter_t *cf, kw_matches_t *m)
{
    return filter_each(g, cf, match_collect, m);
}

void kw__matches_free(kw_matches_t *m)
{
    kw_free(m->rnodes);
    kw_free(m->edges);
}

/* ---- Read ---- */

typedef struct sort_ctx {
    const kw_graph_t *g;
    const kw_schema_t *s;
    const uint32_t *rnodes;
    const kw_edge_t *edges;
} sort_ctx_t;

static int cmp_str(kw_str_t a, kw_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static kw_str_t node_id(const kw_graph_t *g, uint32_t n)
{
    return kw__node_str(&g->nodes[n]);
}

static int cmp_match(const void *pa, const void *pb, void *ud)
{
    const sort_ctx_t *c = ud;
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    const kw_graph_t *g = c->g;
    uint32_t ra = c->rnodes[a], rb = c->rnodes[b];
    const kw_edge_t *ea = &c->edges[a], *eb = &c->edges[b];
    int r = cmp_str(c->s->types[g->nodes[ra].type].name, c->s->types[g->nodes[rb].type].name);
    if (!r)
        r = cmp_str(node_id(g, ra), node_id(g, rb));
    if (!r)
        r = cmp_str(kw__rel_name(c->s, g->nodes[ra].type, ea->rel),
                    kw__rel_name(c->s, g->nodes[rb].type, eb->rel));
    if (!r)
        r = cmp_str(c->s->types[g->nodes[ea->other].type].name,
                    c->s->types[g->nodes[eb->other].type].name);
    if (!r)
        r = cmp_str(node_id(g, ea->other), node_id(g, eb->other));
    if (!r)
        r = cmp_str(kw__rel_name(c->s, g->nodes[ea->other].type, ea->other_rel),
                    kw__rel_name(c->s, g->nodes[eb->other].type, eb->other_rel));
    return r;
}

int kw_engine_read(kw_engine_t *e, const kw_filter_t *filter, kw_rel_cb cb, void *ud,
                   kw_revision_t *rev, kw_diag_t *diag)
{
    kw_matches_t col = {0};
    uint32_t *order = NULL;
    kw__engine_rdlock(e);
    int rc = e->model ? KW_OK : kw__engine_no_schema(diag);
    kw_cfilter_t cf;
    if (rc == KW_OK)
        rc = kw__filter_compile(e, filter, &cf, diag);
    if (rc == KW_OK && kw__filter_collect(&e->g, &cf, &col) != KW_OK)
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while reading");
    if (rc == KW_OK && col.n) {
        order = kw_calloc(col.n, sizeof(uint32_t));
        if (!order)
            rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while reading");
    }
    if (rc == KW_OK) {
        const kw_graph_t *g = &e->g;
        const kw_schema_t *s = e->model->schema;
        for (size_t i = 0; i < col.n; i++)
            order[i] = (uint32_t)i;
        sort_ctx_t sc = {g, s, col.rnodes, col.edges};
        if (col.n > 1)
            qsort_r(order, col.n, sizeof(uint32_t), cmp_match, &sc);
        for (size_t i = 0; i < col.n && rc == KW_OK; i++) {
            uint32_t rn = col.rnodes[order[i]];
            const kw_edge_t *ed = &col.edges[order[i]];
            uint16_t rt = g->nodes[rn].type, st = g->nodes[ed->other].type;
            kw_rel_t r = {
                .resource = {s->types[rt].name, node_id(g, rn)},
                .relation = s->types[rt].rels[ed->rel].name,
                .subject = {s->types[st].name, node_id(g, ed->other),
                            kw__rel_name(s, st, ed->other_rel)},
            };
            const kw_attr_t *a = kw__attr_find(g, rn, ed->rel, ed->other, ed->other_rel);
            if (a) {
                if (a->caveat != KW_CAVEAT_NONE)
                    r.caveat = s->caveats[a->caveat].name;
                r.caveat_ctx = (kw_str_t){a->ctx, a->ctx_len};
                r.expires_at = a->expires_at;
            }
            rc = cb(&r, ud);
        }
        if (rev)
            *rev = e->rev;
    }
    kw__engine_unlock(e);
    kw_free(order);
    kw__matches_free(&col);
    return rc;
}
