/*
 * authz/model.c - the per-schema model: the compiled schema plus, for every (type,
 * relation) pair, its reverse dependencies (which permissions it feeds, on the same
 * object or through an arrow), the map LookupResources walks backwards.
 *
 * A model is immutable once built; the engine swaps whole models (swap.c).
 */
#include <stdatomic.h>

#include "authz/engine_int.h"

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
    kw_free(m->rel_attrs);
    kw_free(m->rel_base);
    kw_schema_free(m->schema);
    kw_free(m);
}

/* Generations of models (kw_model_t.gen); a model's address may be reused, its gen not. */
static _Atomic uint64_t model_gen;

/* Takes ownership of `s` (freed on failure too). */
int kw__model_new(kw_schema_t *s, kw_model_t **out)
{
    kw_model_t *m = kw_calloc(1, sizeof(*m));
    if (!m) {
        kw_schema_free(s);
        return KW_ENOMEM;
    }
    m->schema = s;
    m->gen = atomic_fetch_add(&model_gen, 1) + 1;
    m->rel_base = kw_calloc(s->n_types + 1u, sizeof(uint32_t));
    if (!m->rel_base)
        goto fail;
    for (uint32_t t = 0; t < s->n_types; t++)
        m->rel_base[t + 1] = m->rel_base[t] + s->types[t].n_rels;
    m->n_pairs = m->rel_base[s->n_types];
    m->revdeps = kw_calloc(m->n_pairs + 1u, sizeof(kw_revdeps_t));
    m->rel_attrs = kw_calloc(m->n_pairs + 1u, 1);
    if (!m->revdeps || !m->rel_attrs)
        goto fail;
    for (uint32_t t = 0; t < s->n_types; t++)
        for (uint32_t r = 0; r < s->types[t].n_rels; r++)
            for (uint32_t i = 0; i < s->types[t].rels[r].n_allowed; i++) {
                const kw_allowed_t *a = &s->types[t].rels[r].allowed[i];
                if (a->caveat != KW_CAVEAT_NONE || a->expiration)
                    m->rel_attrs[m->rel_base[t] + r] = 1;
            }
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

size_t kw__model_memory(const kw_model_t *m)
{
    if (!m)
        return 0;
    size_t n = sizeof(*m) + (m->schema->n_types + 1u) * sizeof(uint32_t) +
               (m->n_pairs + 1u) * (sizeof(kw_revdeps_t) + 1) + m->schema->text.len;
    for (uint32_t i = 0; i < m->n_pairs; i++)
        n += m->revdeps[i].cap * sizeof(kw_revdep_t);
    return n;
}
