/*
 * authz/engine.c - the engine object: lifecycle, schema installation, validation,
 * atomic write batches, filtered reads and deletes, Check and bulk Check.
 *
 * Locking: one writer-preferring rwlock. Queries hold it shared for their whole run
 * (callbacks included); writes and schema swaps hold it exclusively, so a reader never
 * sees half a batch and every answer carries the revision it read.
 * All-or-nothing: a batch does everything that can fail (validation, preconditions,
 * interning, reserving edge capacity, scratch space) before it changes any edge. A whole
 * replacement (kw_engine_replace_graph) builds a private graph without the lock and only
 * swaps pointers under it; the engine's revision, which every mutation bumps, tells it
 * whether anything changed meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/graph_int.h"

bool kw__is_ellipsis(kw_str_t rel)
{
    return rel.len == 0 || kw_str_eq(rel, KW_STR("..."));
}

/* ---- the per-schema model: reverse dependencies for LookupResources ---- */

static int revdep_add(kw_model_t *m, uint16_t type, uint16_t rel, kw_revdep_t d)
{
    kw_revdeps_t *l = &m->revdeps[m->rel_base[type] + rel];
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i].res_type == d.res_type && l->v[i].perm == d.perm &&
            l->v[i].arrow_rel == d.arrow_rel)
            return KW_OK;
    size_t cap = l->cap;
    if (kw_grow((void **)&l->v, &cap, (size_t)l->n + 1, sizeof(kw_revdep_t)) != KW_OK)
        return KW_ENOMEM;
    l->cap = (uint32_t)cap;
    l->v[l->n++] = d;
    return KW_OK;
}

static int revdep_expr(kw_model_t *m, uint16_t type, uint16_t perm, const kw_expr_t *x)
{
    const kw_schema_t *s = m->schema;
    switch (x->kind) {
    case KW_EXPR_NIL:
        return KW_OK;
    case KW_EXPR_REF:
        return revdep_add(m, type, x->rel, (kw_revdep_t){type, perm, KW_REL_NONE});
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        for (uint16_t u = 0; u < s->n_types; u++) {
            uint16_t t = x->target_by_type[u];
            if (t != KW_REL_NONE && revdep_add(m, u, t, (kw_revdep_t){type, perm, x->rel}) != KW_OK)
                return KW_ENOMEM;
        }
        return KW_OK;
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE:
        for (uint32_t i = 0; i < x->n_children; i++)
            if (revdep_expr(m, type, perm, x->children[i]) != KW_OK)
                return KW_ENOMEM;
        return KW_OK;
    }
    return KW_EINTERNAL;
}

void kw__model_free(kw_model_t *m)
{
    if (!m)
        return;
    if (m->revdeps)
        for (uint32_t i = 0; i < m->n_pairs; i++)
            kw_free(m->revdeps[i].v);
    kw_free(m->revdeps);
    kw_free(m->rel_base);
    kw_schema_free(m->schema);
    kw_free(m);
}

/* Takes ownership of `s` (freed on failure too). */
int kw__model_new(kw_schema_t *s, kw_model_t **out)
{
    kw_model_t *m = kw_calloc(1, sizeof(*m));
    if (!m) {
        kw_schema_free(s);
        return KW_ENOMEM;
    }
    m->schema = s;
    m->rel_base = kw_calloc(s->n_types + 1u, sizeof(uint32_t));
    if (!m->rel_base)
        goto fail;
    for (uint32_t t = 0; t < s->n_types; t++)
        m->rel_base[t + 1] = m->rel_base[t] + s->types[t].n_rels;
    m->n_pairs = m->rel_base[s->n_types];
    m->revdeps = kw_calloc(m->n_pairs + 1u, sizeof(kw_revdeps_t));
    if (!m->revdeps)
        goto fail;
    for (uint16_t t = 0; t < s->n_types; t++)
        for (uint16_t r = 0; r < s->types[t].n_rels; r++) {
            const kw_relation_t *rd = &s->types[t].rels[r];
            if (rd->is_permission && rd->expr && revdep_expr(m, t, r, rd->expr) != KW_OK)
                goto fail;
        }
    *out = m;
    return KW_OK;
fail:
    kw__model_free(m);
    return KW_ENOMEM;
}

static size_t model_memory(const kw_model_t *m)
{
    if (!m)
        return 0;
    size_t n = sizeof(*m) + (m->schema->n_types + 1u) * sizeof(uint32_t) +
               (m->n_pairs + 1u) * sizeof(kw_revdeps_t) + m->schema->text.len;
    for (uint32_t i = 0; i < m->n_pairs; i++)
        n += m->revdeps[i].cap * sizeof(kw_revdep_t);
    return n;
}

/* ---- lifecycle ---- */

int kw_engine_new(kw_engine_t **out)
{
    kw_engine_t *e = kw_calloc(1, sizeof(*e));
    if (!e)
        return KW_ENOMEM;
    pthread_rwlockattr_t attr;
    if (pthread_rwlockattr_init(&attr) != 0) {
        kw_free(e);
        return KW_ENOMEM;
    }
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int prc = pthread_rwlock_init(&e->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (prc != 0) {
        kw_free(e);
        return KW_ENOMEM;
    }
    if (kw__graph_init(&e->g) != KW_OK) {
        pthread_rwlock_destroy(&e->lock);
        kw_free(e);
        return KW_ENOMEM;
    }
    *out = e;
    return KW_OK;
}

void kw_engine_free(kw_engine_t *e)
{
    if (!e)
        return;
    kw__graph_close(&e->g);
    kw__model_free(e->model);
    pthread_rwlock_destroy(&e->lock);
    kw_free(e);
}

static void rdlock(kw_engine_t *e)
{
    kw_assert(pthread_rwlock_rdlock(&e->lock) == 0);
}
static void wrlock(kw_engine_t *e)
{
    kw_assert(pthread_rwlock_wrlock(&e->lock) == 0);
}
static void unlock(kw_engine_t *e)
{
    kw_assert(pthread_rwlock_unlock(&e->lock) == 0);
}

static int no_schema(kw_diag_t *diag)
{
    return kw_diag_set(diag, KW_ESCHEMA, 0, 0, "no schema is installed");
}

/* ---- validation ---- */

/* SpiceDB's id charset [a-zA-Z0-9/_|\-=+] as a table: ids are checked on every call. */
static const unsigned char id_chars[256] = {
    ['/'] = 1, ['_'] = 1, ['|'] = 1, ['-'] = 1, ['='] = 1, ['+'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
};

/* SpiceDB's object id grammar: [a-zA-Z0-9/_|\-=+]{1,1024}, or `*` where a wildcard is
 * meant (checked by the caller). */
static bool id_ok(kw_str_t id)
{
    if (id.len == 0 || id.len > KW_MAX_OBJECT_ID_LEN)
        return false;
    unsigned char bad = 0;
    for (size_t i = 0; i < id.len; i++)
        bad |= (unsigned char)(id_chars[(unsigned char)id.ptr[i]] ^ 1);
    return bad == 0;
}

static bool is_star(kw_str_t id)
{
    return id.len == 1 && id.ptr[0] == '*';
}

static int bad_id(kw_diag_t *diag, const char *what, kw_str_t id)
{
    if (id.len == 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "%s id is empty", what);
    if (id.len > KW_MAX_OBJECT_ID_LEN)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "%s id is longer than %d bytes", what,
                           KW_MAX_OBJECT_ID_LEN);
    return kw_diag_set(diag, KW_EINVAL, 0, 0,
                       "%s id \"%.*s\" has a character outside [a-zA-Z0-9/_|-=+]", what,
                       (int)(id.len > 64 ? 64 : id.len), id.ptr);
}

/* A relationship resolved against the schema. */
typedef struct rrel {
    uint16_t rtype, rel, stype, srel;
    bool wild;
} rrel_t;

/* Resolves and validates one relationship for writing (tag-kw-validate). */
static int resolve_rel(const kw_schema_t *s, const kw_rel_t *r, rrel_t *out, kw_diag_t *diag)
{
    out->rtype = kw_schema_type_index(s, r->resource.type);
    if (out->rtype == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(r->resource.type));
    if (is_star(r->resource.id))
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "a resource id cannot be the wildcard \"*\" (%.*s:*)",
                           KW_STR_FMT(r->resource.type));
    if (!id_ok(r->resource.id))
        return bad_id(diag, "resource", r->resource.id);
    out->rel = kw_schema_rel_index(s, out->rtype, r->relation);
    if (out->rel == KW_REL_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "relation \"%.*s#%.*s\" not found",
                           KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation));
    if (s->types[out->rtype].rels[out->rel].is_permission)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "\"%.*s#%.*s\" is a permission; relationships can only be written "
                           "to relations",
                           KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation));
    out->stype = kw_schema_type_index(s, r->subject.type);
    if (out->stype == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(r->subject.type));
    out->wild = is_star(r->subject.id);
    if (!out->wild && !id_ok(r->subject.id))
        return bad_id(diag, "subject", r->subject.id);
    out->srel = KW_REL_NONE;
    if (!kw__is_ellipsis(r->subject.relation)) {
        if (out->wild)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "a wildcard subject cannot have a relation (%.*s:*#%.*s)",
                               KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.relation));
        out->srel = kw_schema_rel_index(s, out->stype, r->subject.relation);
        if (out->srel == KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "relation \"%.*s#%.*s\" not found",
                               KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.relation));
    }
    if (!kw_schema_allows(s, out->rtype, out->rel, out->stype, out->srel, out->wild)) {
        if (out->wild)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relation \"%.*s#%.*s\" does not allow subject type \"%.*s:*\"",
                               KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation),
                               KW_STR_FMT(r->subject.type));
        if (out->srel != KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relation \"%.*s#%.*s\" does not allow subject type \"%.*s#%.*s\"",
                               KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation),
                               KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.relation));
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "relation \"%.*s#%.*s\" does not allow subject type \"%.*s\"",
                           KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation),
                           KW_STR_FMT(r->subject.type));
    }
    return KW_OK;
}

/* A batch entry: the resolved relationship, its identity hash and (later) its nodes. */
typedef struct bent {
    rrel_t rr;
    uint64_t h;
    uint32_t idx;
    uint32_t rnode, snode;
    bool exists;
} bent_t;

static uint64_t rel_hash(const rrel_t *rr, const kw_rel_t *r)
{
    uint64_t h = kw_hash(r->resource.id.ptr, r->resource.id.len,
                         ((uint64_t)rr->rtype << 32) | ((uint64_t)rr->rel << 16) | rr->stype);
    return kw_hash(r->subject.id.ptr, r->subject.id.len, h ^ ((uint64_t)rr->srel << 40));
}

static int cmp_bent_h(const void *pa, const void *pb)
{
    const bent_t *a = pa, *b = pb;
    if (a->h != b->h)
        return a->h < b->h ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static bool same_rel(const bent_t *a, const bent_t *b, const kw_update_t *ups)
{
    const kw_rel_t *x = &ups[a->idx].rel, *y = &ups[b->idx].rel;
    return a->rr.rtype == b->rr.rtype && a->rr.rel == b->rr.rel && a->rr.stype == b->rr.stype &&
           a->rr.srel == b->rr.srel && kw_str_eq(x->resource.id, y->resource.id) &&
           kw_str_eq(x->subject.id, y->subject.id);
}

static void fmt_rel(const kw_rel_t *r, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%.*s:%.*s#%.*s@%.*s:%.*s", KW_STR_FMT(r->resource.type),
                     (int)(r->resource.id.len > 80 ? 80 : r->resource.id.len), r->resource.id.ptr,
                     KW_STR_FMT(r->relation), KW_STR_FMT(r->subject.type),
                     (int)(r->subject.id.len > 80 ? 80 : r->subject.id.len), r->subject.id.ptr);
    if (n > 0 && (size_t)n < cap && !kw__is_ellipsis(r->subject.relation))
        snprintf(buf + n, cap - (size_t)n, "#%.*s", KW_STR_FMT(r->subject.relation));
}

/* Resolves every update into ents (sorted by identity hash on return) and refuses
 * duplicates. */
static int validate_batch(const kw_schema_t *s, const kw_update_t *ups, size_t n, bent_t *ents,
                          kw_diag_t *diag)
{
    for (size_t i = 0; i < n; i++) {
        if (ups[i].op != KW_OP_CREATE && ups[i].op != KW_OP_TOUCH && ups[i].op != KW_OP_DELETE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "update %zu has an unknown operation", i);
        int rc = resolve_rel(s, &ups[i].rel, &ents[i].rr, diag);
        if (rc != KW_OK)
            return rc;
        ents[i].idx = (uint32_t)i;
        ents[i].h = rel_hash(&ents[i].rr, &ups[i].rel);
        ents[i].rnode = ents[i].snode = KW_NODE_NONE;
        ents[i].exists = false;
    }
    qsort(ents, n, sizeof(bent_t), cmp_bent_h);
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && ents[j - 1].h == ents[i].h; j--) {
            if (same_rel(&ents[j - 1], &ents[i], ups)) {
                char buf[200];
                fmt_rel(&ups[ents[i].idx].rel, buf, sizeof(buf));
                return kw_diag_set(diag, KW_EINVAL, 0, 0,
                                   "relationship %s appears more than once in the batch", buf);
            }
        }
    }
    return KW_OK;
}

int kw_engine_validate(kw_engine_t *e, const kw_update_t *ups, size_t n, kw_diag_t *diag)
{
    bent_t *ents = kw_calloc(n ? n : 1, sizeof(bent_t));
    if (!ents)
        return KW_ENOMEM;
    rdlock(e);
    int rc = e->model ? validate_batch(e->model->schema, ups, n, ents, diag) : no_schema(diag);
    unlock(e);
    kw_free(ents);
    return rc;
}

/* ---- filters ---- */

typedef struct cfilter {
    uint16_t rtype, rel; /* rel KW_REL_NONE = any */
    bool rid_set, has_subject, stype_set, sid_set, srel_set;
    uint16_t stype, srel;
    uint32_t rnode, snode; /* when rid_set / sid_set (KW_NODE_NONE: matches nothing) */
    kw_str_t rid, sid;
} cfilter_t;

static int compile_filter(const kw_engine_t *e, const kw_filter_t *f, cfilter_t *cf,
                          kw_diag_t *diag)
{
    const kw_schema_t *s = e->model->schema;
    memset(cf, 0, sizeof(*cf));
    if (f->resource_type.len == 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "a relationship filter needs a resource type");
    cf->rtype = kw_schema_type_index(s, f->resource_type);
    if (cf->rtype == KW_TYPE_NONE)
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

static bool filter_edge(const kw_graph_t *g, const cfilter_t *cf, uint32_t rnode, uint16_t rel,
                        uint32_t snode, uint16_t srel)
{
    if (g->nodes[rnode].type != cf->rtype)
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
    return true;
}

typedef int (*match_fn)(void *ud, uint32_t rnode, const kw_edge_t *ed);

/* Calls fn for every stored relationship matching cf, using the narrowest index. */
static int filter_each(const kw_graph_t *g, const cfilter_t *cf, match_fn fn, void *ud)
{
    if (cf->rid_set) {
        if (cf->rnode == KW_NODE_NONE)
            return 0;
        const kw_edges_t *es = &g->nodes[cf->rnode].fwd;
        for (uint32_t i = 0; i < es->n; i++) {
            if (filter_edge(g, cf, cf->rnode, es->v[i].rel, es->v[i].other, es->v[i].other_rel)) {
                int rc = fn(ud, cf->rnode, &es->v[i]);
                if (rc)
                    return rc;
            }
        }
        return 0;
    }
    if (cf->has_subject && cf->sid_set) {
        if (cf->snode == KW_NODE_NONE)
            return 0;
        const kw_edges_t *es = &g->nodes[cf->snode].rev;
        for (uint32_t i = 0; i < es->n; i++) {
            kw_edge_t ed = {cf->snode, es->v[i].rel, es->v[i].other_rel};
            if (filter_edge(g, cf, es->v[i].other, ed.rel, cf->snode, ed.other_rel)) {
                int rc = fn(ud, es->v[i].other, &ed);
                if (rc)
                    return rc;
            }
        }
        return 0;
    }
    for (uint32_t n = 0; n < g->n_nodes; n++) {
        const kw_node_t *nd = &g->nodes[n];
        if (!kw__node_live(nd) || nd->type != cf->rtype)
            continue;
        for (uint32_t i = 0; i < nd->fwd.n; i++) {
            if (filter_edge(g, cf, n, nd->fwd.v[i].rel, nd->fwd.v[i].other,
                            nd->fwd.v[i].other_rel)) {
                int rc = fn(ud, n, &nd->fwd.v[i]);
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

static int check_preconditions(const kw_engine_t *e, const kw_precondition_t *pre, size_t n_pre,
                               kw_diag_t *diag)
{
    if (n_pre > KW_MAX_PRECONDITIONS)
        return kw_diag_set(diag, KW_ELIMIT, 0, 0, "more than %d preconditions",
                           KW_MAX_PRECONDITIONS);
    for (size_t i = 0; i < n_pre; i++) {
        cfilter_t cf;
        int rc = compile_filter(e, &pre[i].filter, &cf, diag);
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

/* ---- writes ---- */

static int check_at(const kw_engine_t *e, kw_revision_t at, kw_diag_t *diag)
{
    if (at != 0 && at <= e->rev)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "revision %llu is not newer than the engine's revision %llu",
                           (unsigned long long)at, (unsigned long long)e->rev);
    return KW_OK;
}

static void bump(kw_engine_t *e, kw_revision_t at, kw_revision_t *rev)
{
    e->rev = at ? at : e->rev + 1;
    if (rev)
        *rev = e->rev;
}

/* Frees nodes without edges among the ones a failed or finished batch touched. */
static void gc_ents(kw_graph_t *g, const bent_t *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ents[i].rnode != KW_NODE_NONE)
            kw__graph_gc(g, ents[i].rnode);
        if (ents[i].snode != KW_NODE_NONE)
            kw__graph_gc(g, ents[i].snode);
    }
}

static int write_locked(kw_engine_t *e, const kw_update_t *ups, size_t n,
                        const kw_precondition_t *pre, size_t n_pre, kw_revision_t at,
                        kw_revision_t *rev, kw_diag_t *diag, bent_t *ents)
{
    kw_graph_t *g = &e->g;
    int rc = validate_batch(e->model->schema, ups, n, ents, diag);
    if (rc == KW_OK)
        rc = check_at(e, at, diag);
    if (rc == KW_OK)
        rc = check_preconditions(e, pre, n_pre, diag);
    if (rc != KW_OK)
        return rc;
    /* Existence against the state before the batch (no duplicates inside it). */
    for (size_t i = 0; i < n; i++) {
        bent_t *b = &ents[i];
        const kw_rel_t *r = &ups[b->idx].rel;
        const uint16_t types[2] = {b->rr.rtype, b->rr.stype};
        const kw_str_t ids[2] = {r->resource.id, r->subject.id};
        uint32_t found[2];
        kw__graph_find2(g, types, ids, found);
        uint32_t rn = found[0], sn = found[1];
        b->exists = rn != KW_NODE_NONE && sn != KW_NODE_NONE &&
                    kw__graph_has(g, rn, b->rr.rel, sn, b->rr.srel);
        if (b->exists && ups[b->idx].op == KW_OP_CREATE && at == 0) {
            char buf[200];
            fmt_rel(r, buf, sizeof(buf));
            return kw_diag_set(diag, KW_EEXISTS, 0, 0, "relationship %s already exists", buf);
        }
        /* Remembered for every entry: interning below skips nodes that exist, and gc
         * at the end leaves nodes that still have edges alone. */
        b->rnode = rn;
        b->snode = sn;
    }
    /* Intern the endpoints of every new relationship and count appends per node
     * (fwd_sorted/rev_sorted serve as counters until the first append). */
    size_t max_tail = 0;
    for (size_t i = 0; i < n && rc == KW_OK; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE || b->exists)
            continue;
        const kw_rel_t *r = &ups[b->idx].rel;
        if (b->rnode == KW_NODE_NONE)
            rc = kw__graph_intern(g, b->rr.rtype, r->resource.id.ptr, r->resource.id.len,
                                  &b->rnode);
        if (rc == KW_OK && b->snode == KW_NODE_NONE)
            rc = kw__graph_intern(g, b->rr.stype, r->subject.id.ptr, r->subject.id.len,
                                  &b->snode);
    }
    for (size_t i = 0; i < n && rc == KW_OK; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE || b->exists)
            continue;
        g->nodes[b->rnode].fwd_sorted = 0;
        g->nodes[b->snode].rev_sorted = 0;
    }
    for (size_t i = 0; i < n && rc == KW_OK; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE || b->exists)
            continue;
        uint32_t f = ++g->nodes[b->rnode].fwd_sorted;
        uint32_t rv = ++g->nodes[b->snode].rev_sorted;
        if (f > max_tail)
            max_tail = f;
        if (rv > max_tail)
            max_tail = rv;
    }
    for (size_t i = 0; i < n && rc == KW_OK; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE || b->exists)
            continue;
        rc = kw__graph_reserve(g, b->rnode, g->nodes[b->rnode].fwd_sorted, 0);
        if (rc == KW_OK)
            rc = kw__graph_reserve(g, b->snode, 0, g->nodes[b->snode].rev_sorted);
    }
    kw_edge_t *scratch = NULL;
    if (rc == KW_OK && max_tail) {
        scratch = kw_calloc(max_tail, sizeof(kw_edge_t));
        if (!scratch)
            rc = KW_ENOMEM;
    }
    if (rc != KW_OK) {
        gc_ents(g, ents, n);
        return kw_diag_set(diag, rc, 0, 0, "out of memory while applying the write");
    }
    /* From here on nothing can fail. */
    for (size_t i = 0; i < n; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op != KW_OP_DELETE && !b->exists)
            kw__graph_append(g, b->rnode, b->rr.rel, b->snode, b->rr.srel);
    }
    for (size_t i = 0; i < n; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE || b->exists)
            continue;
        uint32_t two[2] = {b->rnode, b->snode};
        kw__graph_finish(g, two, 2, scratch);
    }
    for (size_t i = 0; i < n; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE && b->exists)
            kw__graph_remove(g, b->rnode, b->rr.rel, b->snode, b->rr.srel);
    }
    gc_ents(g, ents, n);
    kw_free(scratch);
    bump(e, at, rev);
    return KW_OK;
}

int kw_engine_write(kw_engine_t *e, const kw_update_t *ups, size_t n,
                    const kw_precondition_t *pre, size_t n_pre, kw_revision_t at,
                    kw_revision_t *rev, kw_diag_t *diag)
{
    bent_t *ents = kw_calloc(n ? n : 1, sizeof(bent_t));
    if (!ents)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while applying the write");
    wrlock(e);
    int rc = e->model ? write_locked(e, ups, n, pre, n_pre, at, rev, diag, ents) : no_schema(diag);
    unlock(e);
    kw_free(ents);
    return rc;
}

typedef struct collect {
    uint32_t *rnodes;
    kw_edge_t *edges;
    size_t n, cap;
    int err;
} collect_t;

static int match_collect(void *ud, uint32_t rnode, const kw_edge_t *ed)
{
    collect_t *c = ud;
    if (c->n == c->cap) {
        size_t cap1 = c->cap, cap2 = c->cap;
        if (kw_grow((void **)&c->rnodes, &cap1, c->n + 1, sizeof(uint32_t)) != KW_OK ||
            kw_grow((void **)&c->edges, &cap2, c->n + 1, sizeof(kw_edge_t)) != KW_OK) {
            c->err = KW_ENOMEM;
            return 1;
        }
        c->cap = cap1 < cap2 ? cap1 : cap2;
    }
    c->rnodes[c->n] = rnode;
    c->edges[c->n] = *ed;
    c->n++;
    return 0;
}

static void collect_free(collect_t *c)
{
    kw_free(c->rnodes);
    kw_free(c->edges);
}

int kw_engine_delete_matching(kw_engine_t *e, const kw_filter_t *filter,
                              const kw_precondition_t *pre, size_t n_pre, size_t limit,
                              kw_revision_t at, size_t *n_deleted, kw_revision_t *rev,
                              kw_diag_t *diag)
{
    collect_t col = {0};
    wrlock(e);
    int rc = e->model ? KW_OK : no_schema(diag);
    cfilter_t cf;
    if (rc == KW_OK)
        rc = compile_filter(e, filter, &cf, diag);
    if (rc == KW_OK)
        rc = check_at(e, at, diag);
    if (rc == KW_OK)
        rc = check_preconditions(e, pre, n_pre, diag);
    if (rc == KW_OK) {
        (void)filter_each(&e->g, &cf, match_collect, &col);
        if (col.err)
            rc = kw_diag_set(diag, col.err, 0, 0, "out of memory while deleting");
    }
    if (rc == KW_OK && limit && col.n > limit)
        rc = kw_diag_set(diag, KW_ELIMIT, 0, 0,
                         "%zu relationships match the filter, more than the limit of %zu", col.n,
                         limit);
    if (rc == KW_OK) {
        for (size_t i = 0; i < col.n; i++)
            kw__graph_remove(&e->g, col.rnodes[i], col.edges[i].rel, col.edges[i].other,
                             col.edges[i].other_rel);
        for (size_t i = 0; i < col.n; i++) {
            kw__graph_gc(&e->g, col.rnodes[i]);
            kw__graph_gc(&e->g, col.edges[i].other);
        }
        bump(e, at, rev);
        if (n_deleted)
            *n_deleted = col.n;
    }
    unlock(e);
    collect_free(&col);
    return rc;
}

/* ---- reads ---- */

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

static kw_str_t rel_name(const kw_schema_t *s, uint16_t type, uint16_t rel)
{
    return rel == KW_REL_NONE ? KW_STR("") : s->types[type].rels[rel].name;
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
        r = cmp_str(rel_name(c->s, g->nodes[ra].type, ea->rel),
                    rel_name(c->s, g->nodes[rb].type, eb->rel));
    if (!r)
        r = cmp_str(c->s->types[g->nodes[ea->other].type].name,
                    c->s->types[g->nodes[eb->other].type].name);
    if (!r)
        r = cmp_str(node_id(g, ea->other), node_id(g, eb->other));
    if (!r)
        r = cmp_str(rel_name(c->s, g->nodes[ea->other].type, ea->other_rel),
                    rel_name(c->s, g->nodes[eb->other].type, eb->other_rel));
    return r;
}

int kw_engine_read(kw_engine_t *e, const kw_filter_t *filter, kw_rel_cb cb, void *ud,
                   kw_revision_t *rev, kw_diag_t *diag)
{
    collect_t col = {0};
    uint32_t *order = NULL;
    rdlock(e);
    int rc = e->model ? KW_OK : no_schema(diag);
    cfilter_t cf;
    if (rc == KW_OK)
        rc = compile_filter(e, filter, &cf, diag);
    if (rc == KW_OK) {
        (void)filter_each(&e->g, &cf, match_collect, &col);
        if (col.err)
            rc = kw_diag_set(diag, col.err, 0, 0, "out of memory while reading");
    }
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
                .subject = {s->types[st].name, node_id(g, ed->other), rel_name(s, st, ed->other_rel)},
            };
            rc = cb(&r, ud);
        }
        if (rev)
            *rev = e->rev;
    }
    unlock(e);
    kw_free(order);
    collect_free(&col);
    return rc;
}

size_t kw_engine_count(kw_engine_t *e)
{
    rdlock(e);
    size_t n = e->g.n_rels;
    unlock(e);
    return n;
}

kw_revision_t kw_engine_revision(kw_engine_t *e)
{
    rdlock(e);
    kw_revision_t r = e->rev;
    unlock(e);
    return r;
}

size_t kw_engine_memory(kw_engine_t *e)
{
    rdlock(e);
    size_t n = sizeof(*e) + kw__graph_memory(&e->g) + model_memory(e->model);
    unlock(e);
    return n;
}

/* ---- schema ---- */

/* Copies every relationship of `old` (under schema `os`) into `ng` under model `nm`,
 * refusing the first one the new schema does not accept. */
static int rebuild_graph(const kw_graph_t *old, const kw_schema_t *os, const kw_schema_t *ns,
                         kw_graph_t *ng, kw_diag_t *diag)
{
    uint32_t *map = kw_calloc(old->n_nodes ? old->n_nodes : 1, sizeof(uint32_t));
    if (!map)
        return KW_ENOMEM;
    int rc = KW_OK;
    size_t max_tail = 0;
    /* 1. validate every relationship, intern its endpoints */
    for (uint32_t n = 0; n < old->n_nodes && rc == KW_OK; n++) {
        map[n] = KW_NODE_NONE;
        const kw_node_t *nd = &old->nodes[n];
        if (!kw__node_live(nd))
            continue;
        uint16_t t = kw_schema_type_index(ns, os->types[nd->type].name);
        if (t == KW_TYPE_NONE) {
            rc = kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                             "cannot remove definition \"%.*s\": relationships still use it "
                             "(e.g. %.*s:%s)",
                             KW_STR_FMT(os->types[nd->type].name),
                             KW_STR_FMT(os->types[nd->type].name), kw__node_id(nd));
            break;
        }
        rc = kw__graph_intern(ng, t, kw__node_id(nd), nd->id_len, &map[n]);
    }
    for (uint32_t n = 0; n < old->n_nodes && rc == KW_OK; n++) {
        const kw_node_t *nd = &old->nodes[n];
        if (!kw__node_live(nd))
            continue;
        if (nd->fwd.n > max_tail)
            max_tail = nd->fwd.n;
        if (nd->rev.n > max_tail)
            max_tail = nd->rev.n;
        rc = kw__graph_reserve(ng, map[n], nd->fwd.n, nd->rev.n);
        for (uint32_t i = 0; i < nd->fwd.n && rc == KW_OK; i++) {
            const kw_edge_t *ed = &nd->fwd.v[i];
            const kw_node_t *sn = &old->nodes[ed->other];
            kw_rel_t r = {
                .resource = {os->types[nd->type].name, kw__node_str(nd)},
                .relation = os->types[nd->type].rels[ed->rel].name,
                .subject = {os->types[sn->type].name, kw__node_str(sn),
                            rel_name(os, sn->type, ed->other_rel)},
            };
            rrel_t rr;
            kw_diag_t d2;
            kw_diag_clear(&d2);
            if (resolve_rel(ns, &r, &rr, &d2) != KW_OK) {
                char buf[200];
                fmt_rel(&r, buf, sizeof(buf));
                rc = kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                                 "the new schema does not accept the existing relationship %s: %s",
                                 buf, d2.msg);
            }
        }
    }
    kw_edge_t *scratch = NULL;
    if (rc == KW_OK && max_tail) {
        scratch = kw_calloc(max_tail, sizeof(kw_edge_t));
        if (!scratch)
            rc = KW_ENOMEM;
    }
    if (rc == KW_OK) {
        for (uint32_t n = 0; n < old->n_nodes; n++) {
            const kw_node_t *nd = &old->nodes[n];
            if (!kw__node_live(nd))
                continue;
            uint16_t t = ng->nodes[map[n]].type;
            for (uint32_t i = 0; i < nd->fwd.n; i++) {
                const kw_edge_t *ed = &nd->fwd.v[i];
                uint16_t st = ng->nodes[map[ed->other]].type;
                uint16_t rel = kw_schema_rel_index(ns, t, os->types[nd->type].rels[ed->rel].name);
                uint16_t srel =
                    ed->other_rel == KW_REL_NONE
                        ? KW_REL_NONE
                        : kw_schema_rel_index(
                              ns, st, os->types[old->nodes[ed->other].type].rels[ed->other_rel].name);
                kw__graph_append(ng, map[n], rel, map[ed->other], srel);
            }
        }
        for (uint32_t n = 0; n < ng->n_nodes; n++)
            kw__graph_finish(ng, &n, 1, scratch);
    }
    kw_free(scratch);
    kw_free(map);
    return rc;
}

int kw_engine_set_schema(kw_engine_t *e, kw_str_t text, kw_revision_t *rev, kw_diag_t *diag)
{
    kw_schema_t *s = NULL;
    int rc = kw_schema_compile(text, &s, diag);
    if (rc != KW_OK)
        return rc;
    kw_model_t *m = NULL;
    rc = kw__model_new(s, &m);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "out of memory while installing the schema");
    kw_graph_t ng;
    rc = kw__graph_init(&ng);
    if (rc != KW_OK) {
        kw__model_free(m);
        return kw_diag_set(diag, rc, 0, 0, "out of memory while installing the schema");
    }
    wrlock(e);
    if (e->model && e->g.n_rels)
        rc = rebuild_graph(&e->g, e->model->schema, m->schema, &ng, diag);
    if (rc == KW_OK) {
        kw_graph_t old = e->g;
        e->g = ng;
        ng = old;
        kw_model_t *om = e->model;
        e->model = m;
        m = om;
        bump(e, 0, rev);
    } else if (rc == KW_ENOMEM) {
        kw_diag_set(diag, rc, 0, 0, "out of memory while installing the schema");
    }
    unlock(e);
    kw__graph_close(&ng);
    kw__model_free(m);
    return rc;
}

int kw_engine_schema_text(kw_engine_t *e, kw_buf_t *out)
{
    rdlock(e);
    if (e->model)
        kw_buf_append(out, e->model->schema->text.ptr, e->model->schema->text.len);
    unlock(e);
    return out->failed ? KW_ENOMEM : KW_OK;
}

bool kw_engine_has(kw_engine_t *e, kw_str_t type, kw_str_t name, bool *is_permission)
{
    bool ok = false;
    rdlock(e);
    if (e->model) {
        const kw_schema_t *s = e->model->schema;
        uint16_t t = kw_schema_type_index(s, type);
        if (t != KW_TYPE_NONE && name.len == 0) {
            ok = true;
        } else if (t != KW_TYPE_NONE) {
            uint16_t r = kw_schema_rel_index(s, t, name);
            if (r != KW_REL_NONE) {
                ok = true;
                if (is_permission)
                    *is_permission = s->types[t].rels[r].is_permission;
            }
        }
    }
    unlock(e);
    return ok;
}

/* ---- replacing the whole graph ---- */

/* The state of one kw_engine_replace_graph build: the private schema and graph the feed's
 * relationships go into. Nothing here is visible to readers until the swap. */
typedef struct rebuild {
    const kw_schema_t *s;
    kw_graph_t *g;
    int rc; /* the first error of on_feed (the feed then returns the stop value) */
    kw_diag_t *diag;
} rebuild_t;

static int on_feed(const kw_rel_t *r, void *ud)
{
    rebuild_t *b = ud;
    rrel_t rr;
    kw_diag_t d2;
    kw_diag_clear(&d2);
    if (resolve_rel(b->s, r, &rr, &d2) != KW_OK) {
        char buf[200];
        fmt_rel(r, buf, sizeof(buf));
        b->rc = kw_diag_set(b->diag, KW_ESCHEMA, 0, 0,
                            "the schema does not accept the relationship %s: %s", buf, d2.msg);
        return 1;
    }
    /* A private graph: a failure below leaves it half built, and it is thrown away whole. */
    uint32_t rn, sn;
    int rc = kw__graph_intern(b->g, rr.rtype, r->resource.id.ptr, r->resource.id.len, &rn);
    if (rc == KW_OK)
        rc = kw__graph_intern(b->g, rr.stype, r->subject.id.ptr, r->subject.id.len, &sn);
    if (rc == KW_OK)
        rc = kw__graph_reserve(b->g, rn, 1, 0);
    if (rc == KW_OK)
        rc = kw__graph_reserve(b->g, sn, 0, 1);
    if (rc != KW_OK) {
        b->rc = kw_diag_set(b->diag, KW_ENOMEM, 0, 0, "out of memory while building the graph");
        return 1;
    }
    kw__graph_append(b->g, rn, rr.rel, sn, rr.srel);
    return 0;
}

int kw_engine_replace_graph(kw_engine_t *e, kw_str_t schema, kw_rel_feed_fn feed, void *ud,
                            kw_revision_t *rev, kw_diag_t *diag)
{
    if (!e || !feed)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "kw_engine_replace_graph needs a feed");
    /* The schema to build under, compiled privately: the installed model may be swapped
     * and freed while we build. `base` tells at the end whether anything changed. */
    kw_buf_t text;
    kw_buf_init(&text);
    rdlock(e);
    kw_revision_t base = e->rev;
    bool installed = e->model != NULL;
    if (schema.len == 0 && installed)
        kw_buf_append(&text, e->model->schema->text.ptr, e->model->schema->text.len);
    unlock(e);
    if (schema.len == 0 && !installed)
        return no_schema(diag);
    if (text.failed) {
        kw_buf_free(&text);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while building the graph");
    }
    kw_schema_t *s = NULL;
    int rc = kw_schema_compile(schema.len ? schema : (kw_str_t){text.ptr, text.len}, &s, diag);
    kw_buf_free(&text);
    if (rc != KW_OK)
        return rc;
    kw_model_t *m = NULL;
    if (kw__model_new(s, &m) != KW_OK) /* frees s on failure */
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while building the graph");
    kw_graph_t ng;
    if (kw__graph_init(&ng) != KW_OK) {
        kw__model_free(m);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while building the graph");
    }

    /* Build, without the engine lock. */
    rebuild_t b = {m->schema, &ng, KW_OK, diag};
    kw_revision_t fed = 0;
    rc = feed(ud, on_feed, &b, &fed);
    if (b.rc != KW_OK)
        rc = b.rc;
    else if (rc > 0)
        rc = kw_diag_set(diag, KW_EINTERNAL, 0, 0, "the relationship feed stopped with %d", rc);
    else if (rc != KW_OK)
        rc = kw_diag_set(diag, rc, 0, 0, "reading the relationships failed: %s", kw_strerror(rc));
    if (rc == KW_OK)
        kw__graph_seal(&ng);

    /* Swap, or change nothing. */
    if (rc == KW_OK) {
        wrlock(e);
        if (e->rev != base) {
            rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                             "the engine changed while the new graph was built (revision "
                             "%llu, now %llu): nothing was replaced",
                             (unsigned long long)base, (unsigned long long)e->rev);
        } else {
            kw_graph_t old = e->g;
            e->g = ng;
            ng = old;
            kw_model_t *om = e->model;
            e->model = m;
            m = om;
            bump(e, fed > e->rev ? fed : 0, rev);
        }
        unlock(e);
    }
    /* The old state after a swap, else the unused new one; freed outside the lock. */
    kw__graph_close(&ng);
    kw__model_free(m);
    return rc;
}

/* ---- check ---- */

int kw__resolve_perm(const kw_engine_t *e, kw_str_t type, kw_str_t perm, uint16_t *t,
                     uint16_t *r, kw_diag_t *diag)
{
    const kw_schema_t *s = e->model->schema;
    *t = kw_schema_type_index(s, type);
    if (*t == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(type));
    *r = kw_schema_rel_index(s, *t, perm);
    if (*r == KW_REL_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "relation or permission \"%.*s#%.*s\" not found", KW_STR_FMT(type),
                           KW_STR_FMT(perm));
    return KW_OK;
}

int kw__resolve_subject(const kw_engine_t *e, kw_subject_t subj, uint16_t *stype, uint16_t *srel,
                        uint32_t *snode, kw_diag_t *diag)
{
    const kw_schema_t *s = e->model->schema;
    *stype = kw_schema_type_index(s, subj.type);
    if (*stype == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(subj.type));
    *srel = KW_REL_NONE;
    if (!kw__is_ellipsis(subj.relation)) {
        *srel = kw_schema_rel_index(s, *stype, subj.relation);
        if (*srel == KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relation or permission \"%.*s#%.*s\" not found",
                               KW_STR_FMT(subj.type), KW_STR_FMT(subj.relation));
    }
    if (is_star(subj.id)) {
        if (*srel != KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "a wildcard subject cannot have a relation");
    } else if (!id_ok(subj.id)) {
        return bad_id(diag, "subject", subj.id);
    }
    if (snode)
        *snode = kw__graph_find(&e->g, *stype, subj.id.ptr, subj.id.len);
    return KW_OK;
}

/* One check under the read lock, sharing `c` (and its memo) with other items. */
static int check_one(kw_engine_t *e, kw_ck_t *c, kw_object_t res, kw_str_t perm,
                     kw_subject_t subj, kw_check_result_t *result, kw_diag_t *diag)
{
    uint16_t t, r, stype, srel;
    uint32_t snode;
    c->diag = diag;
    int rc = kw__resolve_perm(e, res.type, perm, &t, &r, diag);
    if (rc == KW_OK)
        rc = kw__resolve_subject(e, subj, &stype, &srel, NULL, diag);
    if (rc == KW_OK && !id_ok(res.id))
        rc = bad_id(diag, "resource", res.id);
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
        bool self = srel != KW_REL_NONE && stype == t && kw_str_eq(res.id, subj.id) &&
                    kw__ck_absent(e->model->schema, t, r, srel, 0);
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

int kw_engine_check(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                    kw_subject_t subject, kw_check_result_t *result, kw_revision_t *rev,
                    kw_diag_t *diag)
{
    kw_ck_t c;
    kw_check_result_t res = KW_CHECK_NO;
    rdlock(e);
    int rc;
    if (!e->model) {
        rc = no_schema(diag);
    } else {
        kw__ck_init(&c, &e->g, e->model->schema, diag);
        rc = check_one(e, &c, resource, permission, subject, &res, diag);
        kw__ck_close(&c);
        if (rc == KW_OK && rev)
            *rev = e->rev;
    }
    unlock(e);
    if (rc == KW_OK)
        *result = res;
    return rc;
}

int kw_engine_check_bulk(kw_engine_t *e, kw_check_item_t *items, size_t n, kw_revision_t *rev)
{
    kw_ck_t c;
    rdlock(e);
    if (!e->model) {
        for (size_t i = 0; i < n; i++) {
            items[i].result = KW_CHECK_NO;
            items[i].rc = no_schema(&items[i].diag);
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
    unlock(e);
    return KW_OK;
}
