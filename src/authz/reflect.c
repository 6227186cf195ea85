/*
 * authz/reflect.c - SchemaService's reflection RPCs as pure functions of schema text:
 * ReflectSchema (definitions, relations, permissions, comments, with SpiceDB's filters),
 * ComputablePermissions and DependentRelations (SpiceDB's reachability graph, walked
 * over the compiled IR), and DiffSchema (SpiceDB's delta kinds).
 *
 * Each entry point compiles its text(s), copies what it answers into the caller's arena
 * and frees the compiled schema: nothing here touches an engine, so no lock is taken.
 *
 * The reachability graph (SpiceDB's pkg/schema reachability, read for semantics): the
 * graph of a relation or permission Y maps "subject keys" to entries:
 *   - a relation's allowed type `T` or `T#r` is the key (T, ... or r); `T:*` is a key
 *     by subject TYPE T (it matches every relation of T);
 *   - a permission's reference to `r` is the key (Y's definition, r);
 *   - an arrow `ts->t` (or .any/.all) is, for every allowed type T of ts on which t
 *     exists, the key (T, t), and it names ts (the tupleset) as encountered.
 * DependentRelations walks from Y into every key whose relation is not `...`;
 * ComputablePermissions starts at a subject key S and repeatedly collects every Y whose
 * graph has S as a key (or S's type as a wildcard key), then treats each Y as a subject.
 */
#include "authz.h"
#include "schema.h"

#include <stdlib.h>
#include <string.h>

#define KW_ELLIPSIS_REL 0xFFFEu /* a subject key `T#...` (distinct from KW_REL_NONE) */

/* ---- copies into the arena ---- */

/* SpiceDB trims every line of a comment (translator.go normalizeComment). */
static int copy_comment(kw_arena_t *a, kw_str_t doc, kw_str_t *out)
{
    *out = (kw_str_t){"", 0};
    if (doc.len == 0)
        return KW_OK;
    char *buf = kw_arena_alloc(a, doc.len + 1);
    if (!buf)
        return KW_ENOMEM;
    size_t n = 0, i = 0;
    while (i <= doc.len) {
        size_t end = i;
        while (end < doc.len && doc.ptr[end] != '\n')
            end++;
        size_t s = i, e = end;
        while (s < e && (doc.ptr[s] == ' ' || doc.ptr[s] == '\t' || doc.ptr[s] == '\r'))
            s++;
        while (e > s && (doc.ptr[e - 1] == ' ' || doc.ptr[e - 1] == '\t' || doc.ptr[e - 1] == '\r'))
            e--;
        if (i > 0)
            buf[n++] = '\n';
        memcpy(buf + n, doc.ptr + s, e - s);
        n += e - s;
        i = end + 1;
    }
    buf[n] = '\0';
    *out = (kw_str_t){buf, n};
    return KW_OK;
}

static int copy_rel(kw_arena_t *a, const kw_schema_t *s, const kw_type_t *t, const kw_relation_t *r,
                    kw_reflect_rel_t *out)
{
    memset(out, 0, sizeof(*out));
    out->is_permission = r->is_permission;
    int rc = kw_arena_str_copy(a, r->name, &out->name);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, t->name, &out->parent);
    if (rc == KW_OK)
        rc = copy_comment(a, r->doc, &out->comment);
    if (rc != KW_OK || r->is_permission || r->n_allowed == 0)
        return rc;
    out->types = kw_arena_alloc(a, r->n_allowed * sizeof(*out->types));
    if (!out->types)
        return KW_ENOMEM;
    for (uint32_t i = 0; i < r->n_allowed; i++) {
        const kw_allowed_t *al = &r->allowed[i];
        kw_reflect_type_t *ty = &out->types[i];
        memset(ty, 0, sizeof(*ty));
        ty->wildcard = al->wildcard;
        ty->expiration = al->expiration;
        ty->rel = (kw_str_t){"", 0};
        ty->caveat = (kw_str_t){"", 0};
        rc = kw_arena_str_copy(a, s->types[al->type].name, &ty->def);
        if (rc == KW_OK && al->caveat != KW_CAVEAT_NONE)
            rc = kw_arena_str_copy(a, s->caveats[al->caveat].name, &ty->caveat);
        if (rc == KW_OK && al->relation != KW_REL_NONE)
            rc = kw_arena_str_copy(a, s->types[al->type].rels[al->relation].name, &ty->rel);
        if (rc != KW_OK)
            return rc;
    }
    out->n_types = r->n_allowed;
    return KW_OK;
}

/* ---- filters (SpiceDB's schemaFilters) ---- */

static bool has_prefix(kw_str_t s, kw_str_t prefix)
{
    return prefix.len == 0 || (s.len >= prefix.len && memcmp(s.ptr, prefix.ptr, prefix.len) == 0);
}

static int check_filters(const kw_reflect_filter_t *f, size_t n, kw_diag_t *diag)
{
    static const char pre[] = "the relationship filter provided is not valid: ";
    for (size_t i = 0; i < n; i++) {
        if (f[i].def.len && f[i].caveat.len)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "%scannot filter by both definition and "
                               "caveat name",
                               pre);
        if (f[i].rel.len && !f[i].def.len)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "%srelation name match requires definition name match", pre);
        if (f[i].rel.len && f[i].perm.len)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "%scannot filter by both relation and permission name", pre);
        if (f[i].perm.len && !f[i].def.len)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "%spermission name match requires definition name match", pre);
    }
    return KW_OK;
}

static bool wants_defs(const kw_reflect_filter_t *f, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (f[i].def.len)
            return true;
    return false;
}

static bool wants_def(const kw_reflect_filter_t *f, size_t n, kw_str_t name)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!f[i].def.len)
            continue;
        any = true;
        if (has_prefix(name, f[i].def))
            return true;
    }
    return !any;
}

/* HasRelation / HasPermission: `perm` picks which field of the filter names the item. */
static bool wants_item(const kw_reflect_filter_t *f, size_t n, kw_str_t def, kw_str_t name,
                       bool perm)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        kw_str_t want = perm ? f[i].perm : f[i].rel;
        if (!want.len)
            continue;
        any = true;
        if (has_prefix(name, want) && has_prefix(def, f[i].def))
            return true;
    }
    return !any;
}

static int compile(kw_str_t text, kw_schema_t **out, kw_diag_t *diag)
{
    return kw_schema_compile(text, out, diag);
}

static int reflect_def(kw_arena_t *a, const kw_schema_t *s, const kw_type_t *t,
                       const kw_reflect_filter_t *f, size_t nf, kw_reflect_def_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = kw_arena_str_copy(a, t->name, &out->name);
    if (rc == KW_OK)
        rc = copy_comment(a, t->doc, &out->comment);
    if (rc != KW_OK)
        return rc;
    if (t->n_rels) {
        out->rels = kw_arena_alloc(a, t->n_rels * sizeof(*out->rels));
        out->perms = kw_arena_alloc(a, t->n_rels * sizeof(*out->perms));
        if (!out->rels || !out->perms)
            return KW_ENOMEM;
    }
    for (uint32_t i = 0; i < t->n_rels; i++) {
        const kw_relation_t *r = &t->rels[i];
        if (f && !wants_item(f, nf, t->name, r->name, r->is_permission))
            continue;
        kw_reflect_rel_t *dst =
            r->is_permission ? &out->perms[out->n_perms++] : &out->rels[out->n_rels++];
        rc = copy_rel(a, s, t, r, dst);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

int kw_schema_reflect(kw_str_t text, const kw_reflect_filter_t *filters, size_t n_filters,
                      kw_arena_t *a, kw_reflect_def_t **defs, size_t *n_defs, kw_diag_t *diag)
{
    if (!a || !defs || !n_defs || (n_filters && !filters))
        return KW_EINVAL;
    int rc = check_filters(filters, n_filters, diag);
    if (rc != KW_OK)
        return rc;
    if (text.len == 0 || !wants_defs(filters, n_filters)) {
        *defs = NULL;
        *n_defs = 0;
        return KW_OK;
    }
    kw_schema_t *s = NULL;
    rc = compile(text, &s, diag);
    if (rc != KW_OK)
        return rc;
    kw_reflect_def_t *out = NULL;
    size_t n = 0;
    if (s->n_types) {
        out = kw_arena_alloc(a, s->n_types * sizeof(*out));
        if (!out)
            rc = KW_ENOMEM;
    }
    for (uint32_t i = 0; rc == KW_OK && i < s->n_types; i++) {
        if (!wants_def(filters, n_filters, s->types[i].name))
            continue;
        rc = reflect_def(a, s, &s->types[i], filters, n_filters, &out[n]);
        n++;
    }
    kw_schema_free(s);
    if (rc != KW_OK)
        return rc;
    *defs = out;
    *n_defs = n;
    return KW_OK;
}

/* ---- caveats ---- */

static bool wants_caveats(const kw_reflect_filter_t *f, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (f[i].caveat.len)
            return true;
    return false;
}

static bool wants_caveat(const kw_reflect_filter_t *f, size_t n, kw_str_t name)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!f[i].caveat.len)
            continue;
        any = true;
        if (has_prefix(name, f[i].caveat))
            return true;
    }
    return !any;
}

static int param_cmp(const void *pa, const void *pb)
{
    const kw_reflect_param_t *a = pa, *b = pb;
    size_t n = a->name.len < b->name.len ? a->name.len : b->name.len;
    int c = memcmp(a->name.ptr, b->name.ptr, n);
    return c ? c : (a->name.len > b->name.len) - (a->name.len < b->name.len);
}

static int copy_caveat(kw_arena_t *a, const kw_caveat_t *cv, kw_reflect_caveat_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = kw_arena_str_copy(a, cv->name, &out->name);
    if (rc == KW_OK)
        rc = copy_comment(a, cv->doc, &out->comment);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, cv->expr, &out->expression);
    if (rc != KW_OK)
        return rc;
    if (cv->n_params) {
        out->params = kw_arena_alloc(a, cv->n_params * sizeof(*out->params));
        if (!out->params)
            return KW_ENOMEM;
    }
    for (uint32_t i = 0; i < cv->n_params; i++) {
        kw_reflect_param_t *p = &out->params[i];
        p->parent = out->name;
        rc = kw_arena_str_copy(a, cv->params[i].name, &p->name);
        if (rc == KW_OK)
            rc = kw_arena_str_copy(a, cv->params[i].type, &p->type);
        if (rc != KW_OK)
            return rc;
    }
    out->n_params = cv->n_params;
    qsort(out->params, out->n_params, sizeof(*out->params), param_cmp);
    return KW_OK;
}

int kw_schema_reflect_caveats(kw_str_t text, const kw_reflect_filter_t *filters, size_t n_filters,
                              kw_arena_t *a, kw_reflect_caveat_t **caveats, size_t *n_caveats,
                              kw_diag_t *diag)
{
    if (!a || !caveats || !n_caveats || (n_filters && !filters))
        return KW_EINVAL;
    int rc = check_filters(filters, n_filters, diag);
    if (rc != KW_OK)
        return rc;
    if (text.len == 0 || !wants_caveats(filters, n_filters)) {
        *caveats = NULL;
        *n_caveats = 0;
        return KW_OK;
    }
    kw_schema_t *s = NULL;
    rc = compile(text, &s, diag);
    if (rc != KW_OK)
        return rc;
    kw_reflect_caveat_t *out = NULL;
    size_t n = 0;
    if (s->n_caveats && !(out = kw_arena_alloc(a, s->n_caveats * sizeof(*out))))
        rc = KW_ENOMEM;
    for (uint32_t i = 0; rc == KW_OK && i < s->n_caveats; i++)
        if (wants_caveat(filters, n_filters, s->caveats[i].name))
            rc = copy_caveat(a, &s->caveats[i], &out[n++]);
    kw_schema_free(s);
    if (rc != KW_OK)
        return rc;
    *caveats = out;
    *n_caveats = n;
    return KW_OK;
}

/* ---- the reachability graph ---- */

/* A (type, relation) slot: type * stride + rel, for a compact visited set. */
typedef struct walk {
    const kw_schema_t *s;
    uint32_t stride; /* the most relations any type has, + 1 for the `...` key */
    uint8_t *seen;   /* per slot */
    uint32_t *queue; /* slots */
    size_t n_queue;
    size_t cap_queue;
} walk_t;

static uint32_t slot(const walk_t *w, uint16_t type, uint16_t rel)
{
    uint32_t r = rel == KW_ELLIPSIS_REL ? w->stride - 1 : rel;
    return (uint32_t)type * w->stride + r;
}

static int walk_init(walk_t *w, const kw_schema_t *s)
{
    memset(w, 0, sizeof(*w));
    w->s = s;
    uint32_t most = 0;
    for (uint32_t i = 0; i < s->n_types; i++)
        if (s->types[i].n_rels > most)
            most = s->types[i].n_rels;
    w->stride = most + 1;
    size_t n = (size_t)s->n_types * w->stride;
    w->seen = kw_calloc(n ? n : 1, 1);
    return w->seen ? KW_OK : KW_ENOMEM;
}

static void walk_close(walk_t *w)
{
    kw_free(w->seen);
    kw_free(w->queue);
}

static int push(walk_t *w, uint32_t sl)
{
    int rc = kw_grow((void **)&w->queue, &w->cap_queue, w->n_queue + 1, sizeof(*w->queue));
    if (rc != KW_OK)
        return rc;
    w->queue[w->n_queue++] = sl;
    return KW_OK;
}

/* One entry of a graph: a key (subject type, subject relation, or any relation of the type
 * for a wildcard) and, for an arrow, its tupleset relation on the graph's own type. */
typedef struct entry {
    uint16_t type;
    uint16_t rel; /* a relation index, KW_ELLIPSIS_REL, or KW_REL_NONE for a type key */
    uint16_t tupleset;
} entry_t;

typedef int (*entry_fn)(void *ud, entry_t e);

static int expr_entries(const kw_schema_t *s, uint16_t type, const kw_expr_t *x, entry_fn fn,
                        void *ud)
{
    const kw_relation_t *ts;
    int rc = KW_OK;
    switch (x->kind) {
    case KW_EXPR_NIL:
        return KW_OK;
    case KW_EXPR_REF:
        return fn(ud, (entry_t){type, x->rel, KW_REL_NONE});
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        ts = &s->types[type].rels[x->rel];
        for (uint32_t i = 0; rc == KW_OK && i < ts->n_allowed; i++) {
            uint16_t t = ts->allowed[i].type;
            uint16_t target = x->target_by_type[t];
            if (target != KW_REL_NONE)
                rc = fn(ud, (entry_t){t, target, x->rel});
        }
        return rc;
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE:
        for (uint32_t i = 0; rc == KW_OK && i < x->n_children; i++)
            rc = expr_entries(s, type, x->children[i], fn, ud);
        return rc;
    }
    return KW_EINTERNAL;
}

static int entries(const kw_schema_t *s, uint16_t type, uint16_t rel, entry_fn fn, void *ud)
{
    const kw_relation_t *r = &s->types[type].rels[rel];
    if (r->is_permission)
        return r->expr ? expr_entries(s, type, r->expr, fn, ud) : KW_OK;
    int rc = KW_OK;
    for (uint32_t i = 0; rc == KW_OK && i < r->n_allowed; i++) {
        const kw_allowed_t *al = &r->allowed[i];
        uint16_t key = al->wildcard                  ? KW_REL_NONE
                       : al->relation == KW_REL_NONE ? KW_ELLIPSIS_REL
                                                     : al->relation;
        rc = fn(ud, (entry_t){al->type, key, KW_REL_NONE});
    }
    return rc;
}

static int sort_refs_cmp(const void *pa, const void *pb)
{
    const kw_reflect_ref_t *a = pa, *b = pb;
    size_t n = a->def.len < b->def.len ? a->def.len : b->def.len;
    int c = memcmp(a->def.ptr, b->def.ptr, n);
    if (c == 0 && a->def.len != b->def.len)
        c = a->def.len < b->def.len ? -1 : 1;
    if (c != 0)
        return c;
    n = a->rel.len < b->rel.len ? a->rel.len : b->rel.len;
    c = memcmp(a->rel.ptr, b->rel.ptr, n);
    if (c == 0 && a->rel.len != b->rel.len)
        c = a->rel.len < b->rel.len ? -1 : 1;
    return c;
}

/* The result: every slot marked in `mark` (relations only, never `...`), except `skip`,
 * whose definition starts with `def_filter`, copied and sorted. */
static int collect(const kw_schema_t *s, const walk_t *w, const uint8_t *mark, uint32_t skip,
                   kw_str_t def_filter, kw_arena_t *a, kw_reflect_ref_t **out, size_t *n_out)
{
    size_t n = 0;
    for (uint32_t t = 0; t < s->n_types; t++)
        for (uint32_t r = 0; r < s->types[t].n_rels; r++)
            if (mark[slot(w, (uint16_t)t, (uint16_t)r)])
                n++;
    kw_reflect_ref_t *refs = kw_arena_alloc(a, (n ? n : 1) * sizeof(*refs));
    if (!refs)
        return KW_ENOMEM;
    size_t k = 0;
    for (uint32_t t = 0; t < s->n_types; t++) {
        const kw_type_t *ty = &s->types[t];
        if (!has_prefix(ty->name, def_filter))
            continue;
        for (uint32_t r = 0; r < ty->n_rels; r++) {
            uint32_t sl = slot(w, (uint16_t)t, (uint16_t)r);
            if (!mark[sl] || sl == skip)
                continue;
            refs[k].is_permission = ty->rels[r].is_permission;
            int rc = kw_arena_str_copy(a, ty->name, &refs[k].def);
            if (rc == KW_OK)
                rc = kw_arena_str_copy(a, ty->rels[r].name, &refs[k].rel);
            if (rc != KW_OK)
                return rc;
            k++;
        }
    }
    qsort(refs, k, sizeof(*refs), sort_refs_cmp);
    *out = refs;
    *n_out = k;
    return KW_OK;
}

static int find_def(const kw_schema_t *s, kw_str_t def, uint16_t *type, kw_diag_t *diag)
{
    *type = kw_schema_type_index(s, def);
    if (*type == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_ENOTFOUND, 0, 0, "object definition `%.*s` not found",
                           KW_STR_FMT(def));
    return KW_OK;
}

static int find_rel(const kw_schema_t *s, uint16_t type, kw_str_t def, kw_str_t name, uint16_t *rel,
                    kw_diag_t *diag)
{
    *rel = kw_schema_rel_index(s, type, name);
    if (*rel == KW_REL_NONE)
        return kw_diag_set(diag, KW_ENOTFOUND, 0, 0,
                           "relation/permission `%.*s` not found under definition `%.*s`",
                           KW_STR_FMT(name), KW_STR_FMT(def));
    return KW_OK;
}

/* DependentRelations: visit every slot reached from the start through keys that are not
 * `...`, marking each visited relation and each arrow's tupleset as encountered. */
typedef struct dep_ctx {
    walk_t *w;
    uint8_t *encountered;
    uint16_t type; /* the graph being read */
} dep_ctx_t;

static int on_dep_entry(void *ud, entry_t e)
{
    dep_ctx_t *c = ud;
    if (e.tupleset != KW_REL_NONE)
        c->encountered[slot(c->w, c->type, e.tupleset)] = 1;
    if (e.rel == KW_REL_NONE || e.rel == KW_ELLIPSIS_REL)
        return KW_OK;
    uint32_t sl = slot(c->w, e.type, e.rel);
    if (c->w->seen[sl])
        return KW_OK;
    c->w->seen[sl] = 1;
    c->encountered[sl] = 1;
    return push(c->w, sl);
}

int kw_schema_dependent_relations(kw_str_t text, kw_str_t def, kw_str_t perm, kw_arena_t *a,
                                  kw_reflect_ref_t **out, size_t *n_out, kw_diag_t *diag)
{
    if (!a || !out || !n_out)
        return KW_EINVAL;
    kw_schema_t *s = NULL;
    if (text.len == 0)
        return kw_diag_set(diag, KW_ENOTFOUND, 0, 0, "object definition `%.*s` not found",
                           KW_STR_FMT(def));
    int rc = compile(text, &s, diag);
    if (rc != KW_OK)
        return rc;
    uint16_t type = 0, rel = 0;
    walk_t w;
    uint8_t *enc = NULL;
    rc = find_def(s, def, &type, diag);
    if (rc == KW_OK)
        rc = find_rel(s, type, def, perm, &rel, diag);
    if (rc == KW_OK && !s->types[type].rels[rel].is_permission)
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "the relation `%.*s` is not a permission",
                         KW_STR_FMT(perm));
    if (rc != KW_OK)
        goto out_schema;
    rc = walk_init(&w, s);
    if (rc != KW_OK)
        goto out_schema;
    enc = kw_calloc((size_t)s->n_types * w.stride, 1);
    if (!enc) {
        rc = KW_ENOMEM;
        goto out_walk;
    }
    uint32_t start = slot(&w, type, rel);
    w.seen[start] = enc[start] = 1;
    rc = push(&w, start);
    for (size_t i = 0; rc == KW_OK && i < w.n_queue; i++) {
        uint32_t sl = w.queue[i];
        dep_ctx_t c = {&w, enc, (uint16_t)(sl / w.stride)};
        rc = entries(s, c.type, (uint16_t)(sl % w.stride), on_dep_entry, &c);
    }
    if (rc == KW_OK)
        rc = collect(s, &w, enc, start, KW_STR(""), a, out, n_out);
    kw_free(enc);
out_walk:
    walk_close(&w);
out_schema:
    kw_schema_free(s);
    return rc;
}

/* ComputablePermissions: does the graph of a slot have the subject key (type, rel)? */
typedef struct comp_ctx {
    uint16_t type, rel;
    bool hit;
} comp_ctx_t;

static int on_comp_entry(void *ud, entry_t e)
{
    comp_ctx_t *c = ud;
    if (e.type == c->type && (e.rel == KW_REL_NONE || e.rel == c->rel))
        c->hit = true;
    return KW_OK;
}

int kw_schema_computable_permissions(kw_str_t text, kw_str_t def, kw_str_t rel, kw_str_t def_filter,
                                     kw_arena_t *a, kw_reflect_ref_t **out, size_t *n_out,
                                     kw_diag_t *diag)
{
    if (!a || !out || !n_out)
        return KW_EINVAL;
    if (text.len == 0)
        return kw_diag_set(diag, KW_ENOTFOUND, 0, 0, "object definition `%.*s` not found",
                           KW_STR_FMT(def));
    kw_schema_t *s = NULL;
    int rc = compile(text, &s, diag);
    if (rc != KW_OK)
        return rc;
    uint16_t type = 0, r = KW_ELLIPSIS_REL;
    walk_t w;
    rc = find_def(s, def, &type, diag);
    if (rc == KW_OK && rel.len)
        rc = find_rel(s, type, def, rel, &r, diag);
    if (rc != KW_OK)
        goto out_schema;
    rc = walk_init(&w, s);
    if (rc != KW_OK)
        goto out_schema;
    uint32_t start = slot(&w, type, r);
    rc = push(&w, start);
    /* Breadth first over subjects; seen marks the relations collected so far. */
    for (size_t i = 0; rc == KW_OK && i < w.n_queue; i++) {
        comp_ctx_t c = {(uint16_t)(w.queue[i] / w.stride), (uint16_t)(w.queue[i] % w.stride),
                        false};
        if (c.rel == w.stride - 1)
            c.rel = KW_ELLIPSIS_REL;
        for (uint32_t t = 0; rc == KW_OK && t < s->n_types; t++) {
            for (uint32_t y = 0; rc == KW_OK && y < s->types[t].n_rels; y++) {
                uint32_t sl = slot(&w, (uint16_t)t, (uint16_t)y);
                if (w.seen[sl])
                    continue;
                c.hit = false;
                rc = entries(s, (uint16_t)t, (uint16_t)y, on_comp_entry, &c);
                if (rc == KW_OK && c.hit) {
                    w.seen[sl] = 1;
                    rc = push(&w, sl);
                }
            }
        }
    }
    if (rc == KW_OK)
        rc = collect(s, &w, w.seen, start, def_filter, a, out, n_out);
    walk_close(&w);
out_schema:
    kw_schema_free(s);
    return rc;
}

/* ---- DiffSchema ---- */

typedef struct diff_out {
    kw_arena_t *a;
    kw_schema_diff_t *items;
    size_t n, cap;
} diff_out_t;

static int add(diff_out_t *d, kw_schema_diff_kind_t kind, kw_schema_diff_t **item)
{
    int rc = kw_grow((void **)&d->items, &d->cap, d->n + 1, sizeof(*d->items));
    if (rc != KW_OK)
        return rc;
    *item = &d->items[d->n++];
    memset(*item, 0, sizeof(**item));
    (*item)->kind = kind;
    return KW_OK;
}

static int add_def(diff_out_t *d, kw_schema_diff_kind_t kind, const kw_schema_t *s,
                   const kw_type_t *t)
{
    kw_reflect_def_t *def = kw_arena_alloc(d->a, sizeof(*def));
    if (!def)
        return KW_ENOMEM;
    int rc = reflect_def(d->a, s, t, NULL, 0, def);
    kw_schema_diff_t *item = NULL;
    if (rc == KW_OK)
        rc = add(d, kind, &item);
    if (rc == KW_OK)
        item->def = def;
    return rc;
}

static int add_rel(diff_out_t *d, kw_schema_diff_kind_t kind, const kw_schema_t *s,
                   const kw_type_t *t, const kw_relation_t *r, kw_schema_diff_t **item)
{
    kw_reflect_rel_t *rel = kw_arena_alloc(d->a, sizeof(*rel));
    if (!rel)
        return KW_ENOMEM;
    int rc = copy_rel(d->a, s, t, r, rel);
    if (rc == KW_OK)
        rc = add(d, kind, item);
    if (rc == KW_OK)
        (*item)->rel = rel;
    return rc;
}

/* Same expression, by names (indices differ between two schemas), ignoring positions. */
static bool same_expr(const kw_type_t *ta, const kw_expr_t *a, const kw_type_t *tb,
                      const kw_expr_t *b)
{
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case KW_EXPR_NIL:
        return true;
    case KW_EXPR_REF:
        return kw_str_eq(ta->rels[a->rel].name, tb->rels[b->rel].name);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        return kw_str_eq(ta->rels[a->rel].name, tb->rels[b->rel].name) &&
               kw_str_eq(a->target, b->target);
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE:
        if (a->n_children != b->n_children)
            return false;
        for (uint32_t i = 0; i < a->n_children; i++)
            if (!same_expr(ta, a->children[i], tb, b->children[i]))
                return false;
        return true;
    }
    return false;
}

static bool same_allowed(const kw_schema_t *sa, const kw_allowed_t *a, const kw_schema_t *sb,
                         const kw_allowed_t *b)
{
    if (a->wildcard != b->wildcard || a->expiration != b->expiration ||
        (a->relation == KW_REL_NONE) != (b->relation == KW_REL_NONE) ||
        (a->caveat == KW_CAVEAT_NONE) != (b->caveat == KW_CAVEAT_NONE))
        return false;
    if (a->caveat != KW_CAVEAT_NONE &&
        !kw_str_eq(sa->caveats[a->caveat].name, sb->caveats[b->caveat].name))
        return false;
    if (!kw_str_eq(sa->types[a->type].name, sb->types[b->type].name))
        return false;
    return a->relation == KW_REL_NONE || kw_str_eq(sa->types[a->type].rels[a->relation].name,
                                                   sb->types[b->type].rels[b->relation].name);
}

static bool has_allowed(const kw_schema_t *s, const kw_relation_t *r, const kw_schema_t *so,
                        const kw_allowed_t *al)
{
    for (uint32_t i = 0; i < r->n_allowed; i++)
        if (same_allowed(s, &r->allowed[i], so, al))
            return true;
    return false;
}

/* The relation (is_permission == perm) named `name` on t, or NULL. */
static const kw_relation_t *rel_named(const kw_type_t *t, kw_str_t name, bool perm)
{
    for (uint32_t i = 0; i < t->n_rels; i++)
        if (t->rels[i].is_permission == perm && kw_str_eq(t->rels[i].name, name))
            return &t->rels[i];
    return NULL;
}

static bool same_comment(kw_str_t a, kw_str_t b, kw_arena_t *ar, int *rc)
{
    kw_str_t na, nb;
    *rc = copy_comment(ar, a, &na);
    if (*rc == KW_OK)
        *rc = copy_comment(ar, b, &nb);
    return *rc == KW_OK && kw_str_eq(na, nb);
}

/* Removed then added relations (perm false) or permissions (perm true) of one type. */
static int diff_names(diff_out_t *d, const kw_schema_t *se, const kw_type_t *te,
                      const kw_schema_t *sc, const kw_type_t *tc, bool perm)
{
    kw_schema_diff_kind_t removed = perm ? KW_DIFF_PERM_REMOVED : KW_DIFF_REL_REMOVED;
    kw_schema_diff_kind_t added = perm ? KW_DIFF_PERM_ADDED : KW_DIFF_REL_ADDED;
    kw_schema_diff_t *item;
    int rc = KW_OK;
    for (uint32_t i = 0; rc == KW_OK && i < te->n_rels; i++)
        if (te->rels[i].is_permission == perm && !rel_named(tc, te->rels[i].name, perm))
            rc = add_rel(d, removed, se, te, &te->rels[i], &item);
    for (uint32_t i = 0; rc == KW_OK && i < tc->n_rels; i++)
        if (tc->rels[i].is_permission == perm && !rel_named(te, tc->rels[i].name, perm))
            rc = add_rel(d, added, sc, tc, &tc->rels[i], &item);
    return rc;
}

static int diff_shared_rel(diff_out_t *d, const kw_schema_t *se, const kw_type_t *te,
                           const kw_relation_t *re, const kw_schema_t *sc, const kw_type_t *tc,
                           const kw_relation_t *rc_)
{
    kw_schema_diff_t *item;
    int rc = KW_OK;
    if (re->is_permission) {
        bool same =
            re->expr && rc_->expr ? same_expr(te, re->expr, tc, rc_->expr) : re->expr == rc_->expr;
        if (!same)
            rc = add_rel(d, KW_DIFF_PERM_EXPR_CHANGED, sc, tc, rc_, &item);
        if (rc == KW_OK && !same_comment(re->doc, rc_->doc, d->a, &rc) && rc == KW_OK)
            rc = add_rel(d, KW_DIFF_PERM_DOC_CHANGED, sc, tc, rc_, &item);
        return rc;
    }
    if (!same_comment(re->doc, rc_->doc, d->a, &rc) && rc == KW_OK)
        rc = add_rel(d, KW_DIFF_REL_DOC_CHANGED, sc, tc, rc_, &item);
    for (uint32_t i = 0; rc == KW_OK && i < re->n_allowed; i++) {
        if (has_allowed(sc, rc_, se, &re->allowed[i]))
            continue;
        /* The removed type as the existing schema named it. */
        kw_reflect_rel_t tmp;
        kw_relation_t one = *re;
        one.allowed = (kw_allowed_t *)&re->allowed[i];
        one.n_allowed = 1;
        rc = copy_rel(d->a, se, te, &one, &tmp);
        if (rc == KW_OK)
            rc = add_rel(d, KW_DIFF_REL_TYPE_REMOVED, sc, tc, rc_, &item);
        if (rc == KW_OK)
            item->type = tmp.types[0];
    }
    for (uint32_t i = 0; rc == KW_OK && i < rc_->n_allowed; i++) {
        if (has_allowed(se, re, sc, &rc_->allowed[i]))
            continue;
        rc = add_rel(d, KW_DIFF_REL_TYPE_ADDED, sc, tc, rc_, &item);
        if (rc == KW_OK)
            item->type = item->rel->types[i];
    }
    return rc;
}

static int diff_type(diff_out_t *d, const kw_schema_t *se, const kw_type_t *te,
                     const kw_schema_t *sc, const kw_type_t *tc)
{
    int rc = KW_OK;
    if (!same_comment(te->doc, tc->doc, d->a, &rc) && rc == KW_OK)
        rc = add_def(d, KW_DIFF_DEF_DOC_CHANGED, sc, tc);
    if (rc == KW_OK)
        rc = diff_names(d, se, te, sc, tc, false);
    if (rc == KW_OK)
        rc = diff_names(d, se, te, sc, tc, true);
    for (int pass = 1; pass >= 0; pass--) { /* shared permissions first, then relations */
        for (uint32_t i = 0; rc == KW_OK && i < te->n_rels; i++) {
            const kw_relation_t *re = &te->rels[i];
            if (re->is_permission != (pass == 1))
                continue;
            const kw_relation_t *rc_ = rel_named(tc, re->name, re->is_permission);
            if (rc_)
                rc = diff_shared_rel(d, se, te, re, sc, tc, rc_);
        }
    }
    return rc;
}

static int add_caveat(diff_out_t *d, kw_schema_diff_kind_t kind, const kw_caveat_t *cv,
                      kw_reflect_caveat_t **out)
{
    kw_reflect_caveat_t *c = kw_arena_alloc(d->a, sizeof(*c));
    if (!c)
        return KW_ENOMEM;
    int rc = copy_caveat(d->a, cv, c);
    kw_schema_diff_t *item = NULL;
    if (rc == KW_OK)
        rc = add(d, kind, &item);
    if (rc == KW_OK)
        item->caveat = c;
    if (out)
        *out = c;
    return rc;
}

static const kw_caveat_t *caveat_named(const kw_schema_t *s, kw_str_t name)
{
    uint16_t i = kw_schema_caveat_index(s, name);
    return i == KW_CAVEAT_NONE ? NULL : &s->caveats[i];
}

static const kw_cel_param_t *param_named(const kw_caveat_t *cv, kw_str_t name)
{
    for (uint32_t i = 0; i < cv->n_params; i++)
        if (kw_str_eq(cv->params[i].name, name))
            return &cv->params[i];
    return NULL;
}

static int add_param(diff_out_t *d, kw_schema_diff_kind_t kind, const kw_caveat_t *cv,
                     const kw_cel_param_t *p, kw_str_t previous)
{
    kw_reflect_param_t *rp = kw_arena_alloc(d->a, sizeof(*rp));
    if (!rp)
        return KW_ENOMEM;
    int rc = kw_arena_str_copy(d->a, p->name, &rp->name);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(d->a, p->type, &rp->type);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(d->a, cv->name, &rp->parent);
    kw_schema_diff_t *item = NULL;
    if (rc == KW_OK && kind == KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED)
        rc = kw_arena_str_copy(d->a, previous, &previous);
    if (rc == KW_OK)
        rc = add(d, kind, &item);
    if (rc == KW_OK) {
        item->param = rp;
        item->previous_type = previous;
    }
    return rc;
}

static int diff_caveat(diff_out_t *d, const kw_caveat_t *ce, const kw_caveat_t *cc)
{
    int rc = KW_OK;
    if (!same_comment(ce->doc, cc->doc, d->a, &rc) && rc == KW_OK)
        rc = add_caveat(d, KW_DIFF_CAVEAT_DOC_CHANGED, cc, NULL);
    for (uint32_t i = 0; rc == KW_OK && i < ce->n_params; i++)
        if (!param_named(cc, ce->params[i].name))
            rc = add_param(d, KW_DIFF_CAVEAT_PARAM_REMOVED, ce, &ce->params[i], KW_STR(""));
    for (uint32_t i = 0; rc == KW_OK && i < cc->n_params; i++)
        if (!param_named(ce, cc->params[i].name))
            rc = add_param(d, KW_DIFF_CAVEAT_PARAM_ADDED, cc, &cc->params[i], KW_STR(""));
    for (uint32_t i = 0; rc == KW_OK && i < ce->n_params; i++) {
        const kw_cel_param_t *pc = param_named(cc, ce->params[i].name);
        if (pc && !kw_str_eq(pc->type, ce->params[i].type))
            rc = add_param(d, KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED, cc, pc, ce->params[i].type);
    }
    if (rc == KW_OK && !kw_str_eq(ce->expr, cc->expr))
        rc = add_caveat(d, KW_DIFF_CAVEAT_EXPR_CHANGED, cc, NULL);
    return rc;
}

static int diff_schemas(diff_out_t *d, const kw_schema_t *se, const kw_schema_t *sc)
{
    int rc = KW_OK;
    for (uint32_t i = 0; rc == KW_OK && i < sc->n_types; i++)
        if (kw_schema_type_index(se, sc->types[i].name) == KW_TYPE_NONE)
            rc = add_def(d, KW_DIFF_DEF_ADDED, sc, &sc->types[i]);
    for (uint32_t i = 0; rc == KW_OK && i < se->n_types; i++)
        if (kw_schema_type_index(sc, se->types[i].name) == KW_TYPE_NONE)
            rc = add_def(d, KW_DIFF_DEF_REMOVED, se, &se->types[i]);
    for (uint32_t i = 0; rc == KW_OK && i < sc->n_caveats; i++)
        if (!caveat_named(se, sc->caveats[i].name))
            rc = add_caveat(d, KW_DIFF_CAVEAT_ADDED, &sc->caveats[i], NULL);
    for (uint32_t i = 0; rc == KW_OK && i < se->n_caveats; i++)
        if (!caveat_named(sc, se->caveats[i].name))
            rc = add_caveat(d, KW_DIFF_CAVEAT_REMOVED, &se->caveats[i], NULL);
    for (uint32_t i = 0; rc == KW_OK && i < se->n_types; i++) {
        uint16_t j = kw_schema_type_index(sc, se->types[i].name);
        if (j != KW_TYPE_NONE)
            rc = diff_type(d, se, &se->types[i], sc, &sc->types[j]);
    }
    for (uint32_t i = 0; rc == KW_OK && i < se->n_caveats; i++) {
        const kw_caveat_t *cc = caveat_named(sc, se->caveats[i].name);
        if (cc)
            rc = diff_caveat(d, &se->caveats[i], cc);
    }
    return rc;
}

/* An empty text is the empty schema (no schema written yet). */
static int compile_or_empty(kw_str_t text, kw_schema_t **out, kw_diag_t *diag)
{
    if (text.len == 0)
        text = KW_STR(" ");
    return compile(text, out, diag);
}

int kw_schema_diff(kw_str_t existing, kw_str_t comparison, kw_arena_t *a, kw_schema_diff_t **out,
                   size_t *n_out, kw_diag_t *diag)
{
    if (!a || !out || !n_out)
        return KW_EINVAL;
    kw_schema_t *se = NULL, *sc = NULL;
    int rc = compile_or_empty(comparison, &sc, diag);
    if (rc != KW_OK)
        return rc;
    rc = compile_or_empty(existing, &se, diag);
    if (rc != KW_OK) {
        kw_schema_free(sc);
        return rc;
    }
    diff_out_t d = {a, NULL, 0, 0};
    rc = diff_schemas(&d, se, sc);
    kw_schema_diff_t *items = NULL;
    if (rc == KW_OK && d.n) {
        items = kw_arena_alloc(a, d.n * sizeof(*items));
        if (items)
            memcpy(items, d.items, d.n * sizeof(*items));
        else
            rc = KW_ENOMEM;
    }
    kw_free(d.items);
    kw_schema_free(se);
    kw_schema_free(sc);
    if (rc != KW_OK)
        return rc;
    *out = items;
    *n_out = d.n;
    return KW_OK;
}
