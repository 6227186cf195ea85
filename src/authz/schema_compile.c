/*
 * authz/schema_compile.c - name resolution, type checking and lookups for the schema IR.
 *
 * kw_schema_compile runs: copy text -> parse (schema_parse.c) -> index definitions and
 * relations (hash tables, duplicate checks) -> caveats (names unique across definitions
 * and caveats, CEL bodies compiled with kw_cel_compile) -> resolve allowed subject types
 * and their traits -> resolve
 * expressions (REF, arrows, target_by_type) -> SpiceDB's wildcard rules (arrows,
 * subject sets of other definitions) -> reject permissions that depend on themselves through REF
 * edges alone. Every check stops at the first error, with line:col of the offending token.
 *
 * Memory: one arena holds the schema struct, the text copy, the IR and the lookup
 * tables; s->priv points at the private part (struct schema_priv) inside it. The CEL
 * programs of the caveats live outside it and are freed with the schema (and on failure).
 */
#include "schema_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct schema_priv {
    kw_arena_t *arena;
    /* Open addressing, linear probing. type_tab: type index + 1 (0 = empty). */
    uint16_t *type_tab;
    uint32_t type_mask;
    /* rel_tab: (type << 16 | rel), REL_EMPTY = empty. */
    uint32_t *rel_tab;
    uint32_t rel_mask;
    /* Global relation id = rel_base[type] + rel (for per-relation side arrays). */
    uint32_t *rel_base;
    uint32_t n_all_rels;
    kw__parsed_t parsed;
} schema_priv_t;

#define REL_EMPTY 0xFFFFFFFFu
#define TYPE_SEED 0x6b77747970655f31ULL /* arbitrary, fixed: the IR is deterministic */

static uint64_t rel_seed(uint16_t type)
{
    return 0x6b7772656c5f3231ULL ^ ((uint64_t)type * 0x9E3779B97F4A7C15ULL);
}

static uint32_t table_size(uint32_t n)
{
    uint32_t size = 8;
    while (size < 2 * n)
        size *= 2;
    return size;
}

/* ---- lookups (hot path) ---- */

uint16_t kw_schema_type_index(const kw_schema_t *s, kw_str_t name)
{
    if (!s || !s->priv)
        return KW_TYPE_NONE;
    const schema_priv_t *pv = s->priv;
    uint32_t i = (uint32_t)kw_hash(name.ptr, name.len, TYPE_SEED) & pv->type_mask;
    for (;;) {
        uint16_t v = pv->type_tab[i];
        if (v == 0)
            return KW_TYPE_NONE;
        if (kw_str_eq(s->types[v - 1].name, name))
            return (uint16_t)(v - 1);
        i = (i + 1) & pv->type_mask;
    }
}

uint16_t kw_schema_rel_index(const kw_schema_t *s, uint16_t type, kw_str_t name)
{
    if (!s || !s->priv || type >= s->n_types)
        return KW_REL_NONE;
    const schema_priv_t *pv = s->priv;
    uint32_t i = (uint32_t)kw_hash(name.ptr, name.len, rel_seed(type)) & pv->rel_mask;
    for (;;) {
        uint32_t v = pv->rel_tab[i];
        if (v == REL_EMPTY)
            return KW_REL_NONE;
        uint16_t t = (uint16_t)(v >> 16), r = (uint16_t)(v & 0xFFFFu);
        if (t == type && kw_str_eq(s->types[t].rels[r].name, name))
            return r;
        i = (i + 1) & pv->rel_mask;
    }
}

bool kw_schema_allows(const kw_schema_t *s, uint16_t type, uint16_t rel, uint16_t subj_type,
                      uint16_t subj_rel, bool wildcard)
{
    if (!s || type >= s->n_types || rel >= s->types[type].n_rels || subj_type >= s->n_types)
        return false;
    const kw_relation_t *r = &s->types[type].rels[rel];
    if (r->is_permission)
        return false;
    if (wildcard && subj_rel != KW_REL_NONE)
        return false;
    for (uint32_t i = 0; i < r->n_allowed; i++) {
        const kw_allowed_t *a = &r->allowed[i];
        if (a->type == subj_type && a->wildcard == wildcard && a->relation == subj_rel)
            return true;
    }
    return false;
}

bool kw_schema_allows_traits(const kw_schema_t *s, uint16_t type, uint16_t rel, uint16_t subj_type,
                             uint16_t subj_rel, bool wildcard, uint16_t caveat, bool expiration)
{
    if (!s || type >= s->n_types || rel >= s->types[type].n_rels || subj_type >= s->n_types)
        return false;
    const kw_relation_t *r = &s->types[type].rels[rel];
    if (r->is_permission)
        return false;
    if (wildcard && subj_rel != KW_REL_NONE)
        return false;
    for (uint32_t i = 0; i < r->n_allowed; i++) {
        const kw_allowed_t *a = &r->allowed[i];
        if (a->type == subj_type && a->wildcard == wildcard && a->relation == subj_rel &&
            a->caveat == caveat && a->expiration == expiration)
            return true;
    }
    return false;
}

uint16_t kw_schema_caveat_index(const kw_schema_t *s, kw_str_t name)
{
    if (!s)
        return KW_CAVEAT_NONE;
    for (uint32_t i = 0; i < s->n_caveats; i++)
        if (kw_str_eq(s->caveats[i].name, name))
            return (uint16_t)i;
    return KW_CAVEAT_NONE;
}

/* ---- indexing ---- */

static int build_type_table(kw_schema_t *s, schema_priv_t *pv, kw_diag_t *diag)
{
    uint32_t size = table_size(s->n_types);
    pv->type_tab = kw_arena_alloc(pv->arena, size * sizeof(*pv->type_tab));
    if (!pv->type_tab)
        return KW_ENOMEM;
    memset(pv->type_tab, 0, size * sizeof(*pv->type_tab));
    pv->type_mask = size - 1;
    for (uint32_t t = 0; t < s->n_types; t++) {
        const kw_type_t *ty = &s->types[t];
        uint32_t i = (uint32_t)kw_hash(ty->name.ptr, ty->name.len, TYPE_SEED) & pv->type_mask;
        while (pv->type_tab[i] != 0) {
            const kw_type_t *other = &s->types[pv->type_tab[i] - 1];
            if (kw_str_eq(other->name, ty->name))
                return kw_diag_set(diag, KW_ESCHEMA, ty->line, ty->col,
                                   "definition \"%.*s\" is defined twice (first at %u:%u)",
                                   KW_STR_FMT(ty->name), other->line, other->col);
            i = (i + 1) & pv->type_mask;
        }
        pv->type_tab[i] = (uint16_t)(t + 1);
    }
    return KW_OK;
}

static int build_rel_table(kw_schema_t *s, schema_priv_t *pv, kw_diag_t *diag)
{
    uint32_t total = 0;
    pv->rel_base = kw_arena_alloc(pv->arena, ((size_t)s->n_types + 1) * sizeof(uint32_t));
    if (!pv->rel_base)
        return KW_ENOMEM;
    for (uint32_t t = 0; t < s->n_types; t++) {
        pv->rel_base[t] = total;
        total += s->types[t].n_rels; /* <= 4096 * 4096: no overflow */
    }
    pv->rel_base[s->n_types] = total;
    pv->n_all_rels = total;
    uint32_t size = table_size(total);
    pv->rel_tab = kw_arena_alloc(pv->arena, (size_t)size * sizeof(*pv->rel_tab));
    if (!pv->rel_tab)
        return KW_ENOMEM;
    memset(pv->rel_tab, 0xFF, (size_t)size * sizeof(*pv->rel_tab));
    pv->rel_mask = size - 1;
    for (uint32_t t = 0; t < s->n_types; t++) {
        const kw_type_t *ty = &s->types[t];
        for (uint32_t r = 0; r < ty->n_rels; r++) {
            const kw_relation_t *rel = &ty->rels[r];
            uint32_t i = (uint32_t)kw_hash(rel->name.ptr, rel->name.len, rel_seed((uint16_t)t)) &
                         pv->rel_mask;
            while (pv->rel_tab[i] != REL_EMPTY) {
                uint32_t v = pv->rel_tab[i];
                const kw_relation_t *other = &s->types[v >> 16].rels[v & 0xFFFFu];
                if ((v >> 16) == t && kw_str_eq(other->name, rel->name))
                    return kw_diag_set(
                        diag, KW_ESCHEMA, rel->line, rel->col,
                        "%s \"%.*s\" on definition \"%.*s\" is defined twice (first at %u:%u)",
                        rel->is_permission ? "permission" : "relation", KW_STR_FMT(rel->name),
                        KW_STR_FMT(ty->name), other->line, other->col);
                i = (i + 1) & pv->rel_mask;
            }
            pv->rel_tab[i] = (t << 16) | r;
        }
    }
    return KW_OK;
}

/* ---- allowed subject types ---- */

typedef struct allowed_key {
    uint64_t key;
    uint32_t index;
} allowed_key_t;

static int cmp_allowed_key(const void *a, const void *b)
{
    const allowed_key_t *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

static uint64_t allowed_key(const kw_allowed_t *al)
{
    return (uint64_t)al->type << 34 | (uint64_t)al->relation << 18 | (uint64_t)al->caveat << 2 |
           (al->wildcard ? 2u : 0u) | (al->expiration ? 1u : 0u);
}

/* Index of the first entry (in source order) that repeats an earlier one, or UINT32_MAX.
 * Sorting keeps this O(n log n) for relations with very long subject lists. */
static uint32_t find_duplicate_allowed(kw_arena_t *a, const kw_relation_t *rel, int *rc)
{
    uint32_t n = rel->n_allowed, dup = UINT32_MAX;
    *rc = KW_OK;
    if (n <= 16) {
        for (uint32_t i = 1; i < n && dup == UINT32_MAX; i++)
            for (uint32_t j = 0; j < i; j++)
                if (allowed_key(&rel->allowed[i]) == allowed_key(&rel->allowed[j])) {
                    dup = i;
                    break;
                }
        return dup;
    }
    allowed_key_t *keys = kw_arena_alloc(a, (size_t)n * sizeof(*keys));
    if (!keys) {
        *rc = KW_ENOMEM;
        return dup;
    }
    for (uint32_t i = 0; i < n; i++)
        keys[i] = (allowed_key_t){allowed_key(&rel->allowed[i]), i};
    qsort(keys, n, sizeof(*keys), cmp_allowed_key);
    for (uint32_t i = 1; i < n; i++)
        if (keys[i].key == keys[i - 1].key && keys[i].index < dup)
            dup = keys[i].index;
    return dup;
}

static int resolve_allowed(kw_schema_t *s, schema_priv_t *pv, kw_diag_t *diag)
{
    int rc;
    for (uint32_t t = 0; t < s->n_types; t++) {
        kw_type_t *ty = &s->types[t];
        for (uint32_t r = 0; r < ty->n_rels; r++) {
            kw_relation_t *rel = &ty->rels[r];
            if (rel->is_permission)
                continue;
            const kw__allowed_src_t *src = pv->parsed.srcs[t].allowed[r];
            for (uint32_t i = 0; i < rel->n_allowed; i++) {
                kw_allowed_t *al = &rel->allowed[i];
                const kw__allowed_src_t *as = &src[i];
                al->type = kw_schema_type_index(s, as->type_name);
                if (al->type == KW_TYPE_NONE)
                    return kw_diag_set(diag, KW_ESCHEMA, as->line, as->col,
                                       "relation \"%.*s\" on definition \"%.*s\" refers to "
                                       "unknown definition \"%.*s\"",
                                       KW_STR_FMT(rel->name), KW_STR_FMT(ty->name),
                                       KW_STR_FMT(as->type_name));
                al->relation = KW_REL_NONE;
                if (as->rel_name.len && !kw_str_eq_c(as->rel_name, "...")) {
                    al->relation = kw_schema_rel_index(s, al->type, as->rel_name);
                    if (al->relation == KW_REL_NONE)
                        return kw_diag_set(
                            diag, KW_ESCHEMA, as->rel_line, as->rel_col,
                            "relation \"%.*s\" on definition \"%.*s\" refers to \"%.*s#%.*s\", "
                            "but definition \"%.*s\" has no relation or permission \"%.*s\"",
                            KW_STR_FMT(rel->name), KW_STR_FMT(ty->name), KW_STR_FMT(as->type_name),
                            KW_STR_FMT(as->rel_name), KW_STR_FMT(as->type_name),
                            KW_STR_FMT(as->rel_name));
                }
                al->caveat = KW_CAVEAT_NONE;
                if (as->caveat_name.len) {
                    al->caveat = kw_schema_caveat_index(s, as->caveat_name);
                    if (al->caveat == KW_CAVEAT_NONE)
                        return kw_diag_set(
                            diag, KW_ESCHEMA, as->caveat_line, as->caveat_col,
                            "could not lookup caveat `%.*s` for relation `%.*s`: caveat with "
                            "name `%.*s` not found%s",
                            KW_STR_FMT(as->caveat_name), KW_STR_FMT(rel->name),
                            KW_STR_FMT(as->caveat_name),
                            kw_str_eq_c(as->caveat_name, "expiration") && !s->use_expiration
                                ? " (for expiring relationships, add `use expiration` at the "
                                  "top of the schema)"
                                : "");
                }
            }
            uint32_t dup = find_duplicate_allowed(pv->arena, rel, &rc);
            if (rc != KW_OK)
                return rc;
            if (dup != UINT32_MAX) {
                const kw_allowed_t *al = &rel->allowed[dup];
                const kw__allowed_src_t *as = &src[dup];
                return kw_diag_set(
                    diag, KW_ESCHEMA, as->line, as->col,
                    "relation \"%.*s\" on definition \"%.*s\" lists the subject "
                    "type \"%.*s%s%.*s%s%.*s%s\" twice",
                    KW_STR_FMT(rel->name), KW_STR_FMT(ty->name), KW_STR_FMT(as->type_name),
                    al->wildcard ? ":*" : (as->rel_name.len ? "#" : ""), KW_STR_FMT(as->rel_name),
                    as->caveat_name.len ? " with " : "", KW_STR_FMT(as->caveat_name),
                    al->expiration ? (as->caveat_name.len ? " and expiration" : " with expiration")
                                   : "");
            }
        }
    }
    return KW_OK;
}

/* ---- expressions ---- */

typedef struct ctx {
    kw_schema_t *s;
    schema_priv_t *pv;
    kw_diag_t *diag;
    uint16_t type;
    const kw_relation_t *perm;
    uint64_t target_cells; /* target_by_type entries allocated so far */
} ctx_t;

/* Every arrow carries n_types target entries; cap their total (32 Mi entries = 64 MiB)
 * so that a 4 MiB schema cannot make the compiler allocate gigabytes. Real schemas use
 * a few thousand. */
#define MAX_TARGET_CELLS (32u * 1024u * 1024u)

static int resolve_arrow(ctx_t *c, kw__pexpr_t *n)
{
    kw_schema_t *s = c->s;
    const kw_type_t *ty = &s->types[c->type];
    kw_expr_t *e = &n->e;
    const char *op = e->kind == KW_EXPR_ALL ? ".all()" : "arrow";
    e->rel = kw_schema_rel_index(s, c->type, n->name);
    if (e->rel == KW_REL_NONE)
        return kw_diag_set(c->diag, KW_ESCHEMA, e->line, e->col,
                           "permission \"%.*s\" on definition \"%.*s\" uses unknown relation "
                           "\"%.*s\" on the left of an %s",
                           KW_STR_FMT(c->perm->name), KW_STR_FMT(ty->name), KW_STR_FMT(n->name),
                           op);
    const kw_relation_t *ts = &ty->rels[e->rel];
    if (ts->is_permission)
        return kw_diag_set(c->diag, KW_ESCHEMA, e->line, e->col,
                           "permission \"%.*s\" on definition \"%.*s\" uses permission \"%.*s\" "
                           "on the left of an %s; only relations may be used there",
                           KW_STR_FMT(c->perm->name), KW_STR_FMT(ty->name), KW_STR_FMT(n->name),
                           op);
    c->target_cells += s->n_types;
    if (c->target_cells > MAX_TARGET_CELLS)
        return kw_diag_set(c->diag, KW_ELIMIT, e->line, e->col,
                           "the schema has too many arrows for its number of definitions "
                           "(arrows x definitions may not exceed %u)",
                           MAX_TARGET_CELLS);
    e->target_by_type = kw_arena_alloc(c->pv->arena, (size_t)s->n_types * sizeof(uint16_t));
    if (!e->target_by_type)
        return KW_ENOMEM;
    /* Only the tupleset's allowed subject types that have the target get an index. A
     * subject of any other type (or of an allowed type without the target) contributes
     * nothing, as in SpiceDB, which accepts an arrow whose target exists on none of the
     * subject types: such an arrow is simply always empty. */
    for (uint32_t t = 0; t < s->n_types; t++)
        e->target_by_type[t] = KW_REL_NONE;
    for (uint32_t i = 0; i < ts->n_allowed; i++) {
        uint16_t at = ts->allowed[i].type;
        e->target_by_type[at] = kw_schema_rel_index(s, at, e->target);
    }
    return KW_OK;
}

/* Depth is bounded by KW_MAX_EXPR_DEPTH (enforced by the parser), so recursion is safe. */
static int resolve_expr(ctx_t *c, kw_expr_t *e)
{
    kw__pexpr_t *n = (kw__pexpr_t *)e;
    const kw_type_t *ty = &c->s->types[c->type];
    switch (e->kind) {
    case KW_EXPR_NIL:
        return KW_OK;
    case KW_EXPR_REF:
        e->rel = kw_schema_rel_index(c->s, c->type, n->name);
        if (e->rel == KW_REL_NONE)
            return kw_diag_set(c->diag, KW_ESCHEMA, e->line, e->col,
                               "permission \"%.*s\" on definition \"%.*s\" refers to unknown "
                               "relation or permission \"%.*s\"",
                               KW_STR_FMT(c->perm->name), KW_STR_FMT(ty->name),
                               KW_STR_FMT(n->name));
        return KW_OK;
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        return resolve_arrow(c, n);
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE:
        for (uint32_t i = 0; i < e->n_children; i++) {
            int rc = resolve_expr(c, e->children[i]);
            if (rc != KW_OK)
                return rc;
        }
        return KW_OK;
    }
    return kw_diag_set(c->diag, KW_EINTERNAL, e->line, e->col, "unknown expression kind");
}

/* ---- SpiceDB's wildcard rules ---- */

/*
 * SpiceDB (pkg/schema/typesystem_validation.go, v1.54) refuses
 *  - an arrow whose left relation "references a wildcard", and
 *  - a relation that lists `T#rel` of ANOTHER definition T when T#rel references one
 *    (a subject set of the same definition is not checked),
 * where a relation references a wildcard when it allows `X:*` or, depth first in the
 * order of its allowed list, a subject set whose relation references one. Two details of
 * that search decide which schemas load, so they are reproduced here exactly:
 *  - answers are memoised by relation NAME alone, for the whole schema: once some
 *    `member` has been answered, every later question about a `member` of any
 *    definition gets that answer;
 *  - a relation met again within one search answers "no", and that "no" is memoised too
 *    (the outer question overwrites it when it finishes).
 * Definitions are visited in source order, as SpiceDB does; SpiceDB visits the
 * relations of one definition in Go map order (random), we in source order. So when two
 * relations of one definition lead to differently answered relations of the same name,
 * SpiceDB itself accepts the schema on some runs and refuses it on others (seen on
 * generated schemas); we then give the answer of the source-order run, every time.
 * The search is iterative (explicit stack): subject-set chains may be long.
 */
enum { WC_UNKNOWN = 0, WC_NO = 1, WC_YES = 2 };

typedef struct wc_frame {
    uint32_t g; /* global relation id */
    uint32_t i; /* next allowed entry to look at */
} wc_frame_t;

typedef struct wc {
    const kw_schema_t *s;
    const schema_priv_t *pv;
    uint16_t *g_type;    /* per global relation: its definition */
    uint32_t *name_id;   /* per global relation: first global relation with the same name */
    uint8_t *memo;       /* per name id: WC_* */
    uint32_t *memo_via;  /* per name id, WC_YES: the relation that allows the wildcard */
    uint16_t *memo_type; /* per name id, WC_YES: the wildcard's type */
    uint32_t *seen;      /* per global relation: the last search that met it */
    uint32_t search;
    wc_frame_t *stack;
} wc_t;

static const kw_relation_t *wc_rel(const wc_t *w, uint32_t g)
{
    uint16_t t = w->g_type[g];
    return &w->s->types[t].rels[g - w->pv->rel_base[t]];
}

static int wc_init(wc_t *w, const kw_schema_t *s, const schema_priv_t *pv)
{
    uint32_t n = pv->n_all_rels;
    size_t m = (size_t)n + 1;
    uint32_t size = table_size(n);
    memset(w, 0, sizeof(*w));
    w->s = s;
    w->pv = pv;
    w->g_type = kw_arena_alloc(pv->arena, m * sizeof(uint16_t));
    w->name_id = kw_arena_alloc(pv->arena, m * sizeof(uint32_t));
    w->memo = kw_arena_alloc(pv->arena, m);
    w->memo_via = kw_arena_alloc(pv->arena, m * sizeof(uint32_t));
    w->memo_type = kw_arena_alloc(pv->arena, m * sizeof(uint16_t));
    w->seen = kw_arena_alloc(pv->arena, m * sizeof(uint32_t));
    w->stack = kw_arena_alloc(pv->arena, m * sizeof(wc_frame_t));
    uint32_t *names = kw_arena_alloc(pv->arena, (size_t)size * sizeof(uint32_t));
    if (!w->g_type || !w->name_id || !w->memo || !w->memo_via || !w->memo_type || !w->seen ||
        !w->stack || !names)
        return KW_ENOMEM;
    memset(w->memo, WC_UNKNOWN, m);
    memset(w->seen, 0, m * sizeof(uint32_t));
    memset(names, 0xFF, (size_t)size * sizeof(uint32_t));
    for (uint32_t t = 0; t < s->n_types; t++)
        for (uint32_t r = 0; r < s->types[t].n_rels; r++)
            w->g_type[pv->rel_base[t] + r] = (uint16_t)t;
    for (uint32_t g = 0; g < n; g++) {
        kw_str_t name = wc_rel(w, g)->name;
        uint32_t i = (uint32_t)kw_hash(name.ptr, name.len, TYPE_SEED) & (size - 1);
        while (names[i] != UINT32_MAX && !kw_str_eq(wc_rel(w, names[i])->name, name))
            i = (i + 1) & (size - 1);
        if (names[i] == UINT32_MAX)
            names[i] = g;
        w->name_id[g] = names[i];
    }
    return KW_OK;
}

/* Starts the question "does g reference a wildcard?": answers from the memo, or "no"
 * (memoised) when this search met g already, or pushes a frame and returns WC_UNKNOWN. */
static uint8_t wc_enter(wc_t *w, uint32_t g, uint32_t *sp)
{
    uint32_t id = w->name_id[g];
    if (w->memo[id] != WC_UNKNOWN)
        return w->memo[id];
    if (w->seen[g] == w->search) {
        w->memo[id] = WC_NO;
        return WC_NO;
    }
    w->seen[g] = w->search;
    w->stack[(*sp)++] = (wc_frame_t){g, 0};
    return WC_UNKNOWN;
}

/* SpiceDB's answer for relation g; on WC_YES *via and *wtype say where the wildcard is. */
static uint8_t wc_search(wc_t *w, uint32_t g0, uint32_t *via, uint16_t *wtype)
{
    uint32_t sp = 0, rvia = 0;
    uint16_t rtype = 0;
    w->search++;
    uint8_t res = wc_enter(w, g0, &sp);
    if (res == WC_YES) {
        rvia = w->memo_via[w->name_id[g0]];
        rtype = w->memo_type[w->name_id[g0]];
    }
    while (sp > 0) {
        wc_frame_t *f = &w->stack[sp - 1];
        if (res == WC_NO)
            res = WC_UNKNOWN; /* the child answered no: go on with f's next entry */
        if (res == WC_UNKNOWN) {
            const kw_relation_t *rel = wc_rel(w, f->g);
            if (f->i < rel->n_allowed) {
                const kw_allowed_t *al = &rel->allowed[f->i++];
                if (al->wildcard) {
                    res = WC_YES;
                    rvia = f->g;
                    rtype = al->type;
                } else if (al->relation != KW_REL_NONE) {
                    uint32_t child = w->pv->rel_base[al->type] + al->relation;
                    res = wc_enter(w, child, &sp);
                    if (res == WC_YES) {
                        rvia = w->memo_via[w->name_id[child]];
                        rtype = w->memo_type[w->name_id[child]];
                    }
                    continue;
                } else {
                    continue;
                }
            } else {
                res = WC_NO;
            }
        }
        /* f is answered (res): memoise under its name and hand res to the parent. */
        uint32_t id = w->name_id[f->g];
        w->memo[id] = res;
        if (res == WC_YES) {
            w->memo_via[id] = rvia;
            w->memo_type[id] = rtype;
        }
        sp--;
    }
    *via = rvia;
    *wtype = rtype;
    return res;
}

static int wc_arrows(wc_t *w, uint16_t t, const kw_relation_t *perm, const kw_expr_t *e,
                     kw_diag_t *diag)
{
    const kw_schema_t *s = w->s;
    if (e->kind == KW_EXPR_ARROW || e->kind == KW_EXPR_ALL) {
        uint32_t g = w->pv->rel_base[t] + e->rel, via;
        uint16_t wt;
        if (wc_search(w, g, &via, &wt) != WC_YES)
            return KW_OK;
        const kw_type_t *ty = &s->types[t], *vty = &s->types[w->g_type[via]];
        const kw_relation_t *rel = &ty->rels[e->rel], *vrel = wc_rel(w, via);
        const char *op = e->kind == KW_EXPR_ALL ? ".all()" : "arrow";
        if (via == g)
            return kw_diag_set(diag, KW_ESCHEMA, e->line, e->col,
                               "permission \"%.*s\" on definition \"%.*s\": relation \"%.*s\" "
                               "cannot be used on the left of an %s because it allows the "
                               "wildcard \"%.*s:*\"",
                               KW_STR_FMT(perm->name), KW_STR_FMT(ty->name), KW_STR_FMT(rel->name),
                               op, KW_STR_FMT(s->types[wt].name));
        return kw_diag_set(diag, KW_ESCHEMA, e->line, e->col,
                           "permission \"%.*s\" on definition \"%.*s\": relation \"%.*s\" cannot "
                           "be used on the left of an %s because SpiceDB finds the wildcard "
                           "\"%.*s:*\" through it, on relation \"%.*s#%.*s\"",
                           KW_STR_FMT(perm->name), KW_STR_FMT(ty->name), KW_STR_FMT(rel->name), op,
                           KW_STR_FMT(s->types[wt].name), KW_STR_FMT(vty->name),
                           KW_STR_FMT(vrel->name));
    }
    for (uint32_t i = 0; i < e->n_children; i++) {
        int rc = wc_arrows(w, t, perm, e->children[i], diag);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

static int wc_subject_sets(wc_t *w, uint16_t t, uint16_t r, kw_diag_t *diag)
{
    const kw_schema_t *s = w->s;
    const kw_type_t *ty = &s->types[t];
    const kw_relation_t *rel = &ty->rels[r];
    const kw__allowed_src_t *src = w->pv->parsed.srcs[t].allowed[r];
    for (uint32_t i = 0; i < rel->n_allowed; i++) {
        const kw_allowed_t *al = &rel->allowed[i];
        if (al->wildcard || al->relation == KW_REL_NONE || al->type == t)
            continue;
        uint32_t g = w->pv->rel_base[al->type] + al->relation, via;
        uint16_t wt;
        if (wc_search(w, g, &via, &wt) != WC_YES)
            continue;
        const kw_type_t *aty = &s->types[al->type], *vty = &s->types[w->g_type[via]];
        return kw_diag_set(diag, KW_ESCHEMA, src[i].line, src[i].col,
                           "relation \"%.*s\" on definition \"%.*s\" cannot include \"%.*s#%.*s\": "
                           "SpiceDB finds the wildcard \"%.*s:*\" through it (on \"%.*s#%.*s\") "
                           "and refuses that from another definition; list \"%.*s:*\" instead",
                           KW_STR_FMT(rel->name), KW_STR_FMT(ty->name), KW_STR_FMT(aty->name),
                           KW_STR_FMT(aty->rels[al->relation].name), KW_STR_FMT(s->types[wt].name),
                           KW_STR_FMT(vty->name), KW_STR_FMT(wc_rel(w, via)->name),
                           KW_STR_FMT(s->types[wt].name));
    }
    return KW_OK;
}

/* Runs SpiceDB's two wildcard rules in SpiceDB's order (see above). */
static int check_wildcards(kw_schema_t *s, schema_priv_t *pv, kw_diag_t *diag)
{
    wc_t w;
    int rc = wc_init(&w, s, pv);
    for (uint32_t t = 0; rc == KW_OK && t < s->n_types; t++)
        for (uint32_t r = 0; rc == KW_OK && r < s->types[t].n_rels; r++) {
            const kw_relation_t *rel = &s->types[t].rels[r];
            if (rel->expr)
                rc = wc_arrows(&w, (uint16_t)t, rel, rel->expr, diag);
            else
                rc = wc_subject_sets(&w, (uint16_t)t, (uint16_t)r, diag);
        }
    return rc;
}

/* ---- self-referencing permissions ---- */

static void collect_refs(const kw_expr_t *e, uint16_t *out, uint32_t *n, bool count_only)
{
    if (e->kind == KW_EXPR_REF) {
        if (!count_only)
            out[*n] = e->rel;
        (*n)++;
    }
    for (uint32_t i = 0; i < e->n_children; i++)
        collect_refs(e->children[i], out, n, count_only);
}

/* A permission reachable from itself through REF edges alone never reaches a relation:
 * evaluating it would recurse forever. Iterative DFS per type (white/grey/black). */
static int check_ref_cycles(kw_schema_t *s, schema_priv_t *pv, uint16_t t, kw_diag_t *diag)
{
    const kw_type_t *ty = &s->types[t];
    uint32_t n = ty->n_rels;
    if (n == 0)
        return KW_OK;
    uint32_t *start = kw_arena_alloc(pv->arena, ((size_t)n + 1) * sizeof(uint32_t));
    uint8_t *color = kw_arena_alloc(pv->arena, n);
    uint16_t *stack = kw_arena_alloc(pv->arena, (size_t)n * sizeof(uint16_t));
    uint32_t *pos = kw_arena_alloc(pv->arena, (size_t)n * sizeof(uint32_t));
    if (!start || !color || !stack || !pos)
        return KW_ENOMEM;
    uint32_t total = 0;
    for (uint32_t r = 0; r < n; r++) {
        start[r] = total;
        if (ty->rels[r].expr)
            collect_refs(ty->rels[r].expr, NULL, &total, true);
    }
    start[n] = total;
    uint16_t *adj = kw_arena_alloc(pv->arena, ((size_t)total + 1) * sizeof(uint16_t));
    if (!adj)
        return KW_ENOMEM;
    for (uint32_t r = 0; r < n; r++) {
        uint32_t k = 0;
        if (ty->rels[r].expr)
            collect_refs(ty->rels[r].expr, adj + start[r], &k, false);
    }
    memset(color, 0, n);
    for (uint32_t root = 0; root < n; root++) {
        if (color[root] || !ty->rels[root].is_permission)
            continue;
        uint32_t sp = 0;
        stack[sp] = (uint16_t)root;
        pos[sp] = start[root];
        sp++;
        color[root] = 1;
        while (sp) {
            uint16_t v = stack[sp - 1];
            if (pos[sp - 1] == start[v + 1]) {
                color[v] = 2;
                sp--;
                continue;
            }
            uint16_t w = adj[pos[sp - 1]++];
            if (color[w] == 1) {
                /* Cycle: the stack from w to v, then back to w. */
                const kw_relation_t *pw = &ty->rels[w];
                char path[200];
                size_t len = 0;
                uint32_t from = 0;
                while (stack[from] != w)
                    from++;
                path[0] = '\0';
                for (uint32_t i = from; i <= sp && len + 1 < sizeof(path); i++) {
                    const kw_relation_t *pr = &ty->rels[i < sp ? stack[i] : w];
                    int m = snprintf(path + len, sizeof(path) - len, "%s%.*s",
                                     i == from ? "" : " -> ", KW_STR_FMT(pr->name));
                    if (m < 0)
                        break;
                    len += (size_t)m < sizeof(path) - len ? (size_t)m : sizeof(path) - len - 1;
                }
                return kw_diag_set(diag, KW_ESCHEMA, pw->line, pw->col,
                                   "permission \"%.*s\" on definition \"%.*s\" is defined in "
                                   "terms of itself (%s) without any relation in between",
                                   KW_STR_FMT(pw->name), KW_STR_FMT(ty->name), path);
            }
            if (color[w] == 0 && ty->rels[w].is_permission) {
                color[w] = 1;
                stack[sp] = w;
                pos[sp] = start[w];
                sp++;
            }
        }
    }
    return KW_OK;
}

/* ---- entry points ---- */

/* ---- caveats ---- */

/* Caveat names are unique among caveats and definitions (SpiceDB's one namespace); each
 * body compiles over its parameters, errors pointing into the schema text. */
static int compile_caveats(kw_schema_t *s, kw_diag_t *diag)
{
    if (s->n_caveats > KW_MAX_TYPES)
        return kw_diag_set(diag, KW_ELIMIT, s->caveats[KW_MAX_TYPES].line,
                           s->caveats[KW_MAX_TYPES].col, "the schema has more than %d caveats",
                           KW_MAX_TYPES);
    for (uint32_t i = 0; i < s->n_caveats; i++) {
        kw_caveat_t *cv = &s->caveats[i];
        bool clash = kw_schema_type_index(s, cv->name) != KW_TYPE_NONE;
        for (uint32_t j = 0; j < i && !clash; j++)
            clash = kw_str_eq(s->caveats[j].name, cv->name);
        if (clash)
            return kw_diag_set(diag, KW_ESCHEMA, cv->line, cv->col,
                               "found name reused between multiple definitions and/or caveats: "
                               "%.*s",
                               KW_STR_FMT(cv->name));
        int rc = kw_cel_compile(cv->params, cv->n_params, cv->expr, cv->expr_line, cv->expr_col,
                                &cv->program, diag);
        if (rc == KW_ESCHEMA || rc == KW_ELIMIT) {
            /* say which caveat, keeping the position CEL gave */
            char msg[sizeof(diag->msg)];
            snprintf(msg, sizeof(msg), "%s", diag->msg);
            return kw_diag_set(diag, rc, diag->line, diag->col, "caveat `%.*s`: %s",
                               KW_STR_FMT(cv->name), msg);
        }
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

static void free_programs(kw_caveat_t *caveats, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        kw_cel_program_free(caveats[i].program);
        caveats[i].program = NULL;
    }
}

/* ---- Check's evaluation order of intersections (tag-kw-check-order) ----
 *
 * An intersection is "no" as soon as one child is, so Check evaluates its children
 * cheapest first. The estimate is static: a relation on the object itself costs 1 (its
 * edges are in the record Check already holds), an arrow COST_ARROW plus the most
 * expensive target (another object's record: likely a cache miss), unions, intersections
 * and exclusions the sum of their children (a "no" evaluates them all), a permission its
 * expression. A permission met again inside its own estimate (recursion) or past
 * COST_DEPTH nested estimates costs COST_OPEN. Only the order changes, never the value:
 * an intersection's value does not depend on it (tag-kw-check-3v). */
#define COST_ARROW 8u
#define COST_OPEN 64u
#define COST_CAP 1000000u
#define COST_DEPTH 32

typedef struct cost_ctx {
    const kw_schema_t *s;
    uint32_t *base; /* per type: index of (type, 0) into cost/state */
    uint32_t *cost; /* per (type, rel), valid with state 2 */
    uint8_t *state; /* 0 unknown, 1 being estimated, 2 known */
} cost_ctx_t;

static uint32_t cost_add(uint32_t a, uint32_t b)
{
    return a + b > COST_CAP ? COST_CAP : a + b;
}

static uint32_t cost_expr(cost_ctx_t *c, uint16_t t, const kw_expr_t *e, int depth);

static uint32_t cost_rel(cost_ctx_t *c, uint16_t t, uint16_t r, int depth)
{
    const kw_relation_t *rd = &c->s->types[t].rels[r];
    if (!rd->is_permission)
        return 1;
    uint32_t i = c->base[t] + r;
    if (c->state[i] == 2)
        return c->cost[i];
    if (c->state[i] == 1 || depth > COST_DEPTH || !rd->expr)
        return COST_OPEN;
    c->state[i] = 1;
    uint32_t v = cost_expr(c, t, rd->expr, depth + 1);
    c->cost[i] = v;
    c->state[i] = 2;
    return v;
}

static uint32_t cost_expr(cost_ctx_t *c, uint16_t t, const kw_expr_t *e, int depth)
{
    switch (e->kind) {
    case KW_EXPR_NIL:
        return 0;
    case KW_EXPR_REF:
        return cost_rel(c, t, e->rel, depth);
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        uint32_t worst = 0;
        for (uint16_t u = 0; u < c->s->n_types; u++) {
            uint16_t tr = e->target_by_type[u];
            if (tr != KW_REL_NONE) {
                uint32_t v = cost_rel(c, u, tr, depth + 1);
                worst = v > worst ? v : worst;
            }
        }
        return cost_add(1 + COST_ARROW, worst);
    }
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE: {
        uint32_t sum = 0;
        for (uint32_t i = 0; i < e->n_children; i++)
            sum = cost_add(sum, cost_expr(c, t, e->children[i], depth + 1));
        return sum;
    }
    }
    return COST_OPEN;
}

/* Sets check_order on the intersections of e (and below); KW_ENOMEM. */
static int order_expr(cost_ctx_t *c, kw_arena_t *a, uint16_t t, kw_expr_t *e)
{
    if (e->kind != KW_EXPR_UNION && e->kind != KW_EXPR_INTERSECT && e->kind != KW_EXPR_EXCLUDE)
        return KW_OK;
    for (uint32_t i = 0; i < e->n_children; i++)
        if (order_expr(c, a, t, e->children[i]) != KW_OK)
            return KW_ENOMEM;
    if (e->kind != KW_EXPR_INTERSECT)
        return KW_OK;
    uint32_t n = e->n_children;
    uint32_t *ord = kw_arena_alloc(a, sizeof(uint32_t) * n);
    uint32_t *cost = kw_arena_alloc(a, sizeof(uint32_t) * n);
    if (!ord || !cost)
        return KW_ENOMEM;
    bool moved = false;
    for (uint32_t i = 0; i < n; i++) { /* insertion sort: stable, n is small */
        uint32_t v = cost_expr(c, t, e->children[i], 0), j = i;
        for (; j > 0 && cost[j - 1] > v; j--) {
            cost[j] = cost[j - 1];
            ord[j] = ord[j - 1];
            moved = true;
        }
        cost[j] = v;
        ord[j] = i;
    }
    e->check_order = moved ? ord : NULL;
    return KW_OK;
}

static int order_intersections(kw_schema_t *s, schema_priv_t *pv, kw_diag_t *diag)
{
    cost_ctx_t c = {s, NULL, NULL, NULL};
    uint32_t n = 0;
    c.base = kw_arena_alloc(pv->arena, sizeof(uint32_t) * (s->n_types + 1u));
    if (c.base) {
        for (uint32_t t = 0; t < s->n_types; t++) {
            c.base[t] = n;
            n += s->types[t].n_rels;
        }
        c.cost = kw_arena_alloc(pv->arena, sizeof(uint32_t) * (n + 1u));
        c.state = kw_arena_alloc(pv->arena, n + 1u);
    }
    if (!c.base || !c.cost || !c.state)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while compiling the schema");
    memset(c.state, 0, n + 1u);
    for (uint16_t t = 0; t < s->n_types; t++)
        for (uint32_t r = 0; r < s->types[t].n_rels; r++) {
            kw_expr_t *e = s->types[t].rels[r].expr;
            if (e && order_expr(&c, pv->arena, t, e) != KW_OK)
                return kw_diag_set(diag, KW_ENOMEM, 0, 0,
                                   "out of memory while compiling the schema");
        }
    return KW_OK;
}

static int compile_all(kw_schema_t *s, schema_priv_t *pv, kw_diag_t *diag)
{
    int rc = build_type_table(s, pv, diag);
    if (rc == KW_OK)
        rc = build_rel_table(s, pv, diag);
    if (rc == KW_OK)
        rc = compile_caveats(s, diag);
    if (rc == KW_OK)
        rc = resolve_allowed(s, pv, diag);
    ctx_t c;
    memset(&c, 0, sizeof(c));
    c.s = s;
    c.pv = pv;
    c.diag = diag;
    for (uint32_t t = 0; rc == KW_OK && t < s->n_types; t++) {
        c.type = (uint16_t)t;
        for (uint32_t r = 0; rc == KW_OK && r < s->types[t].n_rels; r++) {
            c.perm = &s->types[t].rels[r];
            if (c.perm->expr)
                rc = resolve_expr(&c, c.perm->expr);
        }
    }
    if (rc == KW_OK)
        rc = check_wildcards(s, pv, diag);
    for (uint32_t t = 0; rc == KW_OK && t < s->n_types; t++)
        rc = check_ref_cycles(s, pv, (uint16_t)t, diag);
    if (rc == KW_OK)
        rc = order_intersections(s, pv, diag);
    return rc;
}

int kw_schema_compile(kw_str_t text, kw_schema_t **out, kw_diag_t *diag)
{
    kw_diag_clear(diag);
    if (!out || (!text.ptr && text.len))
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no schema text given");
    if (text.len > KW_MAX_SCHEMA_BYTES)
        return kw_diag_set(diag, KW_ETOOLARGE, 0, 0,
                           "the schema is %zu bytes; the limit is %u bytes", text.len,
                           KW_MAX_SCHEMA_BYTES);
    kw_arena_t *a = kw_arena_new(0);
    if (!a)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    kw_schema_t *s = kw_arena_alloc(a, sizeof(*s));
    schema_priv_t *pv = kw_arena_alloc(a, sizeof(*pv));
    char *copy = kw_arena_alloc(a, text.len + 1);
    int rc = KW_OK;
    bool zeroed = false; /* pv->parsed may be read on failure */
    if (!s || !pv || !copy) {
        rc = KW_ENOMEM;
        goto fail;
    }
    memset(s, 0, sizeof(*s));
    memset(pv, 0, sizeof(*pv));
    zeroed = true;
    if (text.len)
        memcpy(copy, text.ptr, text.len);
    copy[text.len] = '\0';
    pv->arena = a;
    s->priv = pv;
    s->text.ptr = copy;
    s->text.len = text.len;
    rc = kw__schema_parse(s->text, a, &pv->parsed, diag);
    if (rc != KW_OK)
        goto fail;
    s->types = pv->parsed.types;
    s->n_types = pv->parsed.n_types;
    s->caveats = pv->parsed.caveats;
    s->n_caveats = pv->parsed.n_caveats;
    s->use_expiration = pv->parsed.use_expiration;
    rc = compile_all(s, pv, diag);
    if (rc != KW_OK)
        goto fail;
    *out = s;
    return KW_OK;
fail:
    if (zeroed)
        free_programs(pv->parsed.caveats, pv->parsed.n_caveats);
    kw_arena_free(a);
    if (rc == KW_ENOMEM)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while compiling the schema");
    return rc;
}

void kw_schema_free(kw_schema_t *s)
{
    if (!s)
        return;
    schema_priv_t *pv = s->priv;
    free_programs(s->caveats, s->n_caveats);
    kw_arena_free(pv->arena); /* s and pv live in the arena */
}

/* ---- canonical dump ---- */

static void dump_expr(const kw_schema_t *s, const kw_type_t *ty, const kw_expr_t *e, kw_buf_t *out)
{
    switch (e->kind) {
    case KW_EXPR_NIL:
        kw_buf_puts(out, "nil");
        return;
    case KW_EXPR_REF:
        kw_buf_printf(out, "%.*s", KW_STR_FMT(ty->rels[e->rel].name));
        return;
    case KW_EXPR_ARROW:
        kw_buf_printf(out, "%.*s->%.*s", KW_STR_FMT(ty->rels[e->rel].name), KW_STR_FMT(e->target));
        return;
    case KW_EXPR_ALL:
        kw_buf_printf(out, "%.*s.all(%.*s)", KW_STR_FMT(ty->rels[e->rel].name),
                      KW_STR_FMT(e->target));
        return;
    case KW_EXPR_UNION:
    case KW_EXPR_INTERSECT:
    case KW_EXPR_EXCLUDE: {
        const char *op = e->kind == KW_EXPR_UNION       ? " + "
                         : e->kind == KW_EXPR_INTERSECT ? " & "
                                                        : " - ";
        kw_buf_puts(out, "(");
        for (uint32_t i = 0; i < e->n_children; i++) {
            if (i)
                kw_buf_puts(out, op);
            dump_expr(s, ty, e->children[i], out);
        }
        kw_buf_puts(out, ")");
        return;
    }
    }
    kw_buf_puts(out, "<?>");
}

/* Format: per definition a `definition NAME` line, then per relation/permission one
 * indented line; a doc comment is shown as `doc: <bytes>` on the line before, with
 * newlines escaped as `\n` so every item stays on one line. Arrows list the types
 * they resolve on: `parent->view [folder]`. */
static void dump_doc(kw_buf_t *out, const char *indent, kw_str_t doc)
{
    if (!doc.len)
        return;
    kw_buf_printf(out, "%sdoc: ", indent);
    for (size_t i = 0; i < doc.len; i++) {
        if (doc.ptr[i] == '\n')
            kw_buf_puts(out, "\\n");
        else
            kw_buf_append(out, &doc.ptr[i], 1);
    }
    kw_buf_puts(out, "\n");
}

static void dump_arrow_targets(const kw_schema_t *s, const kw_expr_t *e, kw_buf_t *out)
{
    if (e->kind == KW_EXPR_ARROW || e->kind == KW_EXPR_ALL) {
        kw_buf_puts(out, " [");
        bool first = true;
        for (uint32_t t = 0; t < s->n_types; t++) {
            if (e->target_by_type[t] == KW_REL_NONE)
                continue;
            kw_buf_printf(out, "%s%.*s", first ? "" : " ", KW_STR_FMT(s->types[t].name));
            first = false;
        }
        kw_buf_puts(out, "]");
    }
    for (uint32_t i = 0; i < e->n_children; i++)
        dump_arrow_targets(s, e->children[i], out);
}

/* `caveat NAME(p1 t1, p2 t2) { EXPR }` on one line (newlines in EXPR shown as \n). */
static void dump_caveat(const kw_caveat_t *cv, kw_buf_t *out)
{
    dump_doc(out, "", cv->doc);
    kw_buf_printf(out, "caveat %.*s(", KW_STR_FMT(cv->name));
    for (uint32_t i = 0; i < cv->n_params; i++)
        kw_buf_printf(out, "%s%.*s %.*s", i ? ", " : "", KW_STR_FMT(cv->params[i].name),
                      KW_STR_FMT(cv->params[i].type));
    kw_buf_puts(out, ") { ");
    for (size_t i = 0; i < cv->expr.len; i++) {
        if (cv->expr.ptr[i] == '\n')
            kw_buf_puts(out, "\\n");
        else
            kw_buf_append(out, &cv->expr.ptr[i], 1);
    }
    kw_buf_puts(out, " }\n");
}

void kw_schema_dump(const kw_schema_t *s, kw_buf_t *out)
{
    if (!s)
        return;
    if (s->use_expiration)
        kw_buf_puts(out, "use expiration\n");
    for (uint32_t c = 0; c < s->n_caveats; c++)
        dump_caveat(&s->caveats[c], out);
    for (uint32_t t = 0; t < s->n_types; t++) {
        const kw_type_t *ty = &s->types[t];
        dump_doc(out, "", ty->doc);
        kw_buf_printf(out, "definition %.*s\n", KW_STR_FMT(ty->name));
        for (uint32_t r = 0; r < ty->n_rels; r++) {
            const kw_relation_t *rel = &ty->rels[r];
            dump_doc(out, "  ", rel->doc);
            if (rel->is_permission) {
                kw_buf_printf(out, "  permission %.*s = ", KW_STR_FMT(rel->name));
                dump_expr(s, ty, rel->expr, out);
                dump_arrow_targets(s, rel->expr, out);
                kw_buf_puts(out, "\n");
                continue;
            }
            kw_buf_printf(out, "  relation %.*s: ", KW_STR_FMT(rel->name));
            for (uint32_t i = 0; i < rel->n_allowed; i++) {
                const kw_allowed_t *al = &rel->allowed[i];
                const kw_type_t *st = &s->types[al->type];
                kw_buf_printf(out, "%s%.*s", i ? " | " : "", KW_STR_FMT(st->name));
                if (al->wildcard)
                    kw_buf_puts(out, ":*");
                else if (al->relation != KW_REL_NONE)
                    kw_buf_printf(out, "#%.*s", KW_STR_FMT(st->rels[al->relation].name));
                if (al->caveat != KW_CAVEAT_NONE)
                    kw_buf_printf(out, " with %.*s%s", KW_STR_FMT(s->caveats[al->caveat].name),
                                  al->expiration ? " and expiration" : "");
                else if (al->expiration)
                    kw_buf_puts(out, " with expiration");
            }
            kw_buf_puts(out, "\n");
        }
    }
}
