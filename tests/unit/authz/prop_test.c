/*
 * tests/unit/authz/prop_test.c - property test: random small schemas (as text) and random
 * relationships; kw_engine_check must agree with a naive reference evaluator, and
 * LookupResources, LookupSubjects and Expand must agree with Check. LookupResources' planned
 * path (lookup_plan.c) must also give exactly what the general walk + Check gives.
 *
 * The reference is deliberately simple: for one subject at a time it computes every
 * (object, relation) truth value as a least fixpoint by repeated full passes over all
 * rules, stratum by stratum (a stratum only subtracts values of lower strata). Schemas
 * whose dependency graph has a cycle through an exclusion are not stratifiable; for those
 * only "never yes on error, never crash" is checked.
 */
#include <stdlib.h>

#include "authz/engine_int.h"
#include "authz/schema.h"
#include "engine_helpers.h"
#include "kw_test.h"

#define NOBJ 3
#define MAXT 4
#define MAXR 5
#define MAXTUP 400

typedef struct rng {
    uint64_t s;
} rng_t;

static uint32_t rnd(rng_t *r, uint32_t n)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (uint32_t)((r->s >> 11) % n);
}

/* ---- schema text ---- */

static void gen_expr(rng_t *r, kw_buf_t *b, int perm_idx, int depth)
{
    static const char *targets[] = {"rel0", "rel1", "rel2", "prm0", "prm1"};
    uint32_t k = rnd(r, depth < 2 ? 10 : 6);
    switch (k) {
    case 0:
    case 1:
        kw_buf_printf(b, "rel%u", rnd(r, 3));
        break;
    case 2:
        if (perm_idx > 0)
            kw_buf_printf(b, "prm%u", rnd(r, (uint32_t)perm_idx));
        else
            kw_buf_printf(b, "rel%u", rnd(r, 3));
        break;
    case 3:
        kw_buf_printf(b, "rel%u->%s", rnd(r, 2), targets[rnd(r, 5)]);
        break;
    case 4:
        kw_buf_printf(b, "rel%u.all(%s)", rnd(r, 2), targets[rnd(r, 5)]);
        break;
    case 5:
        kw_buf_puts(b, rnd(r, 3) ? "rel0" : "nil");
        break;
    default: {
        static const char *ops[] = {" + ", " & ", " - "};
        kw_buf_puts(b, "(");
        gen_expr(r, b, perm_idx, depth + 1);
        kw_buf_puts(b, ops[rnd(r, 3)]);
        gen_expr(r, b, perm_idx, depth + 1);
        kw_buf_puts(b, ")");
    }
    }
}

static void gen_schema(rng_t *r, int n_t, kw_buf_t *b)
{
    kw_buf_puts(b, "definition user {}\n");
    for (int t = 0; t < n_t; t++) {
        kw_buf_printf(b, "definition typ%d {\n", t);
        for (int rel = 0; rel < 3; rel++) {
            kw_buf_printf(b, "  relation rel%d: ", rel);
            /* Only r2 may allow wildcards (directly or through subject sets), since
             * arrows (over r0/r1) may not walk wildcards; r0/r1 always allow an object
             * type so arrow targets exist. */
            int n_allowed = 1 + (int)rnd(r, 3);
            bool used[32] = {false};
            int written = 0;
            for (int a = 0; a < n_allowed + (rel < 2); a++) {
                uint32_t k = (rel < 2 && a == 0) ? 2 : rnd(r, 5);
                uint32_t tt = rnd(r, (uint32_t)n_t), rr = rnd(r, rel < 2 ? 2 : 3);
                if (k == 1 && rel < 2)
                    k = 0;
                if (k == 4 && rel < 2)
                    k = 3;
                uint32_t key = k == 0   ? 0
                               : k == 1 ? 1
                               : k == 2 ? 2 + tt
                               : k == 3 ? 6 + tt * 3 + rr
                                        : 20 + tt;
                if (used[key])
                    continue;
                used[key] = true;
                if (written++)
                    kw_buf_puts(b, " | ");
                if (k == 0)
                    kw_buf_puts(b, "user");
                else if (k == 1)
                    kw_buf_puts(b, "user:*");
                else if (k == 2)
                    kw_buf_printf(b, "typ%u", tt);
                else if (k == 3)
                    kw_buf_printf(b, "typ%u#rel%u", tt, rr);
                else
                    kw_buf_printf(b, "typ%u:*", tt);
            }
            kw_buf_puts(b, "\n");
        }
        for (int p = 0; p < 2; p++) {
            kw_buf_printf(b, "  permission prm%d = ", p);
            gen_expr(r, b, p, 0);
            kw_buf_puts(b, "\n");
        }
        kw_buf_puts(b, "}\n");
    }
}

/* ---- the model: objects, tuples ---- */

typedef struct tup {
    int rt, ri, rel;  /* resource type, object index, relation */
    int st, si, srel; /* si == -1: wildcard; srel == -1: none */
} tup_t;

typedef struct world {
    const kw_schema_t *s;
    int n_types;
    tup_t tups[MAXTUP];
    int n_tups;
    int stratum[MAXT][MAXR];
    int max_stratum;
    bool stratified;
    /* reference values for the current subject */
    bool val[MAXT][NOBJ][MAXR];
    int sub_t, sub_i, sub_rel; /* the subject (sub_rel -1 = plain object) */
} world_t;

static const char *obj_id(const world_t *w, int t, int i)
{
    static const char *u[] = {"u0", "u1", "u2"}, *o[] = {"o0", "o1", "o2"};
    if (i < 0)
        return "*";
    return kw_str_eq_c(w->s->types[t].name, "user") ? u[i] : o[i];
}

/* ---- stratification ---- */

static void dep_expr(world_t *w, int t, int p, const kw_expr_t *x, bool neg, bool *changed)
{
    int *sp = &w->stratum[t][p];
    switch (x->kind) {
    case KW_EXPR_NIL:
        return;
    case KW_EXPR_REF: {
        int need = w->stratum[t][x->rel] + (neg ? 1 : 0);
        if (*sp < need) {
            *sp = need;
            *changed = true;
        }
        return;
    }
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        for (int u = 0; u < w->n_types; u++) {
            uint16_t tr = x->target_by_type[u];
            if (tr == KW_REL_NONE)
                continue;
            int need = w->stratum[u][tr] + (neg ? 1 : 0);
            if (*sp < need) {
                *sp = need;
                *changed = true;
            }
        }
        return;
    default:
        for (uint32_t i = 0; i < x->n_children; i++)
            dep_expr(w, t, p, x->children[i], neg || (x->kind == KW_EXPR_EXCLUDE && i > 0),
                     changed);
    }
}

static void stratify(world_t *w)
{
    memset(w->stratum, 0, sizeof(w->stratum));
    int limit = MAXT * MAXR + 2;
    for (int round = 0; round < limit * 2; round++) {
        bool changed = false;
        for (int t = 0; t < w->n_types; t++)
            for (uint32_t r = 0; r < w->s->types[t].n_rels; r++) {
                const kw_relation_t *rd = &w->s->types[t].rels[r];
                if (rd->is_permission) {
                    dep_expr(w, t, (int)r, rd->expr, false, &changed);
                } else {
                    for (uint32_t a = 0; a < rd->n_allowed; a++) {
                        const kw_allowed_t *al = &rd->allowed[a];
                        if (al->relation == KW_REL_NONE)
                            continue;
                        if (w->stratum[t][r] < w->stratum[al->type][al->relation]) {
                            w->stratum[t][r] = w->stratum[al->type][al->relation];
                            changed = true;
                        }
                    }
                }
                if (w->stratum[t][r] > limit) {
                    w->stratified = false;
                    return;
                }
            }
        if (!changed) {
            w->stratified = true;
            w->max_stratum = 0;
            for (int t = 0; t < w->n_types; t++)
                for (uint32_t r = 0; r < w->s->types[t].n_rels; r++)
                    if (w->stratum[t][r] > w->max_stratum)
                        w->max_stratum = w->stratum[t][r];
            return;
        }
    }
    w->stratified = false;
}

/* ---- the reference evaluator ---- */

static bool is_subject(const world_t *w, int t, int i, int rel)
{
    return t == w->sub_t && i == w->sub_i && rel == w->sub_rel;
}

static bool ref_expr(const world_t *w, int t, int i, const kw_expr_t *x)
{
    switch (x->kind) {
    case KW_EXPR_NIL:
        return false;
    case KW_EXPR_REF:
        return w->val[t][i][x->rel];
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL: {
        bool any = false, all = true, some = false;
        for (int k = 0; k < w->n_tups; k++) {
            const tup_t *tp = &w->tups[k];
            if (tp->rt != t || tp->ri != i || tp->rel != x->rel)
                continue;
            some = true;
            uint16_t tr = x->target_by_type[tp->st];
            bool v = tr != KW_REL_NONE && tp->si >= 0 && w->val[tp->st][tp->si][tr];
            any = any || v;
            all = all && v;
        }
        return x->kind == KW_EXPR_ARROW ? any : (some && all);
    }
    case KW_EXPR_UNION:
        for (uint32_t k = 0; k < x->n_children; k++)
            if (ref_expr(w, t, i, x->children[k]))
                return true;
        return false;
    case KW_EXPR_INTERSECT:
        for (uint32_t k = 0; k < x->n_children; k++)
            if (!ref_expr(w, t, i, x->children[k]))
                return false;
        return true;
    case KW_EXPR_EXCLUDE:
        if (!ref_expr(w, t, i, x->children[0]))
            return false;
        for (uint32_t k = 1; k < x->n_children; k++)
            if (ref_expr(w, t, i, x->children[k]))
                return false;
        return true;
    }
    return false;
}

static bool ref_rule(const world_t *w, int t, int i, int rel)
{
    if (is_subject(w, t, i, rel))
        return true;
    const kw_relation_t *rd = &w->s->types[t].rels[rel];
    if (rd->is_permission)
        return ref_expr(w, t, i, rd->expr);
    for (int k = 0; k < w->n_tups; k++) {
        const tup_t *tp = &w->tups[k];
        if (tp->rt != t || tp->ri != i || tp->rel != rel)
            continue;
        if (tp->srel < 0) {
            if (tp->si < 0 && tp->st == w->sub_t)
                return true; /* wildcard: any subject of the type, subject sets too */
            if (tp->si >= 0 && is_subject(w, tp->st, tp->si, -1))
                return true;
        } else if (is_subject(w, tp->st, tp->si, tp->srel) || w->val[tp->st][tp->si][tp->srel]) {
            return true;
        }
    }
    return false;
}

static void ref_eval(world_t *w)
{
    memset(w->val, 0, sizeof(w->val));
    for (int st = 0; st <= w->max_stratum; st++) {
        bool changed = true;
        while (changed) {
            changed = false;
            for (int t = 0; t < w->n_types; t++)
                for (uint32_t r = 0; r < w->s->types[t].n_rels; r++) {
                    if (w->stratum[t][r] != st)
                        continue;
                    for (int i = 0; i < NOBJ; i++)
                        if (!w->val[t][i][r] && ref_rule(w, t, i, (int)r)) {
                            w->val[t][i][r] = true;
                            changed = true;
                        }
                }
        }
    }
}

/* ---- expand evaluation ---- */

static int eval_tree(const world_t *w, const kw_expand_t *x)
{
    switch (x->kind) {
    case KW_EXPAND_LEAF:
        for (size_t k = 0; k < x->n_subjects; k++) {
            const kw_subject_t *sj = &x->subjects[k];
            uint16_t st = kw_schema_type_index(w->s, sj->type);
            if ((int)st != w->sub_t && sj->relation.len == 0)
                continue;
            if (sj->relation.len == 0) {
                if (kw_str_eq_c(sj->id, "*") || kw_str_eq_c(sj->id, obj_id(w, st, w->sub_i)))
                    return 1;
                continue;
            }
            int oi = sj->id.ptr[1] - '0';
            uint16_t sr = kw_schema_rel_index(w->s, st, sj->relation);
            if (w->val[st][oi][sr])
                return 1;
        }
        return 0;
    case KW_EXPAND_UNION:
        for (size_t k = 0; k < x->n_children; k++)
            if (eval_tree(w, x->children[k]))
                return 1;
        return 0;
    case KW_EXPAND_INTERSECTION:
        for (size_t k = 0; k < x->n_children; k++)
            if (!eval_tree(w, x->children[k]))
                return 0;
        return x->n_children > 0;
    case KW_EXPAND_EXCLUSION:
        if (!eval_tree(w, x->children[0]))
            return 0;
        for (size_t k = 1; k < x->n_children; k++)
            if (eval_tree(w, x->children[k]))
                return 0;
        return 1;
    }
    return -1;
}

typedef struct lr_set {
    bool in[NOBJ];
    int dup;
    bool wild;
    bool excl[NOBJ];
} lr_set_t;

static int lr_cb(kw_str_t id, void *ud)
{
    lr_set_t *s = ud;
    int i = id.len == 2 ? id.ptr[1] - '0' : -1;
    if (i < 0 || i >= NOBJ)
        return 0;
    if (s->in[i])
        s->dup++;
    s->in[i] = true;
    return 0;
}

/* A LookupResources answer with conditional flags, by object index. */
typedef struct lr_full {
    int v[NOBJ]; /* 0 absent, 1 YES, 2 CONDITIONAL */
    int dup, other;
} lr_full_t;

static int lr_full_cb(const kw_resource_result_t *r, void *ud)
{
    lr_full_t *s = ud;
    int i = r->id.len == 2 ? r->id.ptr[1] - '0' : -1;
    if (i < 0 || i >= NOBJ) {
        s->other++;
        return 0;
    }
    if (s->v[i])
        s->dup++;
    s->v[i] = r->conditional ? 2 : 1;
    return 0;
}

/* The planned path against the general one for one query: NULL when they agree (or the
 * shape is not planned: *planned says which). */
static const char *compare_paths(kw_engine_t *e, kw_str_t type, kw_str_t perm, kw_subject_t sj,
                                 kw_str_t ctx, bool *planned, char *why, size_t cap)
{
    lr_full_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    kw_diag_t d1, d2;
    int r1 =
        kw__engine_lookup_resources_path(e, type, perm, sj, ctx, KW__LK_PLAN, lr_full_cb, &a, &d1);
    *planned = r1 != KW_EAGAIN;
    if (!*planned)
        return NULL;
    int r2 = kw__engine_lookup_resources_path(e, type, perm, sj, ctx, KW__LK_GENERAL, lr_full_cb,
                                              &b, &d2);
    if (r2 != KW_OK && r1 != KW_OK)
        return NULL; /* both refuse (a cycle through an exclusion, depth) */
    if (r1 != r2 || a.dup || b.dup || a.other != b.other || memcmp(a.v, b.v, sizeof(a.v)) != 0) {
        snprintf(why, cap,
                 "planned lookup %.*s#%.*s for %.*s:%.*s#%.*s: rc %d vs %d, got %d%d%d (dup %d) "
                 "want %d%d%d",
                 KW_STR_FMT(type), KW_STR_FMT(perm), KW_STR_FMT(sj.type), KW_STR_FMT(sj.id),
                 KW_STR_FMT(sj.relation), r1, r2, a.v[0], a.v[1], a.v[2], a.dup, b.v[0], b.v[1],
                 b.v[2]);
        return why;
    }
    return NULL;
}

static int ls_cb(const kw_subject_result_t *r, void *ud)
{
    lr_set_t *s = ud;
    if (kw_str_eq_c(r->id, "*")) {
        if (s->wild)
            s->dup++;
        s->wild = true;
        for (size_t k = 0; k < r->n_excluded; k++)
            s->excl[r->excluded[k].ptr[1] - '0'] = true;
        return 0;
    }
    return lr_cb(r->id, ud);
}

/* A whole LookupSubjects answer as sorted lines "id cond missing excluded...": two
 * answers are the same when their lines are (a repeated subject repeats its line). */
#define LSF_MAX 96
typedef struct ls_full {
    char line[LSF_MAX][128];
    int n;
    bool overflow;
} ls_full_t;

static int cmp_line(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int ls_full_cb(const kw_subject_result_t *r, void *ud)
{
    ls_full_t *s = ud;
    if (s->n == LSF_MAX) {
        s->overflow = true;
        return 0;
    }
    char ex[LSF_MAX][16];
    size_t ne = r->n_excluded < LSF_MAX ? r->n_excluded : LSF_MAX;
    for (size_t k = 0; k < ne; k++)
        snprintf(ex[k], sizeof(ex[k]), "%.*s", KW_STR_FMT(r->excluded[k]));
    qsort(ex, ne, sizeof(ex[0]), cmp_line);
    char *p = s->line[s->n++];
    size_t cap = sizeof(s->line[0]);
    int k =
        snprintf(p, cap, "%.*s %d %.*s", KW_STR_FMT(r->id), r->conditional, KW_STR_FMT(r->missing));
    for (size_t i = 0; i < ne && k > 0 && (size_t)k < cap; i++)
        k += snprintf(p + k, cap - (size_t)k, " %s", ex[i]);
    return 0;
}

/* LookupSubjects' planned path against the walk for one query (as compare_paths). */
static const char *compare_subject_paths(kw_engine_t *e, kw_object_t o, kw_str_t perm,
                                         kw_str_t stype, kw_str_t srel, kw_str_t ctx, bool *planned,
                                         char *why, size_t cap)
{
    static ls_full_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    kw_diag_t d1, d2;
    int r1 = kw__engine_lookup_subjects_path(e, o, perm, stype, srel, ctx, KW__LK_PLAN, ls_full_cb,
                                             &a, &d1);
    *planned = r1 != KW_EAGAIN;
    if (!*planned)
        return NULL;
    int r2 = kw__engine_lookup_subjects_path(e, o, perm, stype, srel, ctx, KW__LK_GENERAL,
                                             ls_full_cb, &b, &d2);
    if (r2 != KW_OK && r1 != KW_OK)
        return NULL; /* both refuse (a cycle through an exclusion, depth) */
    qsort(a.line, (size_t)a.n, sizeof(a.line[0]), cmp_line);
    qsort(b.line, (size_t)b.n, sizeof(b.line[0]), cmp_line);
    bool same = r1 == r2 && !a.overflow && !b.overflow && a.n == b.n;
    for (int i = 0; same && i < a.n; i++)
        same = strcmp(a.line[i], b.line[i]) == 0;
    if (!same) {
        int k = snprintf(why, cap,
                         "planned lookup_subjects %.*s:%.*s#%.*s of %.*s#%.*s: rc %d vs %d, "
                         "plan {",
                         KW_STR_FMT(o.type), KW_STR_FMT(o.id), KW_STR_FMT(perm), KW_STR_FMT(stype),
                         KW_STR_FMT(srel), r1, r2);
        for (int i = 0; i < a.n && k > 0 && (size_t)k < cap; i++)
            k += snprintf(why + k, cap - (size_t)k, "%s; ", a.line[i]);
        if (k > 0 && (size_t)k < cap)
            k += snprintf(why + k, cap - (size_t)k, "} walk {");
        for (int i = 0; i < b.n && k > 0 && (size_t)k < cap; i++)
            k += snprintf(why + k, cap - (size_t)k, "%s; ", b.line[i]);
        if (k > 0 && (size_t)k < cap)
            snprintf(why + k, cap - (size_t)k, "}");
        return why;
    }
    return NULL;
}

typedef struct stats {
    int cases, compiled, stratified, checks, cycles, planned, compared;
    int ls_planned, ls_compared;
} stats_t;

/* One random case; returns a failure description or NULL. */
static const char *run_case(uint64_t seed, stats_t *st, char *why, size_t cap)
{
    rng_t r = {seed * 0x9E3779B97F4A7C15ULL + 1};
    int n_t = 1 + (int)rnd(&r, 3);
    kw_buf_t text;
    kw_buf_init(&text);
    gen_schema(&r, n_t, &text);
    st->cases++;
    kw_schema_t *s = NULL;
    kw_diag_t cd;
    kw_diag_clear(&cd);
    if (kw_schema_compile((kw_str_t){text.ptr, text.len}, &s, &cd) != KW_OK) {
        if (getenv("KW_PROP_VERBOSE"))
            fprintf(stderr, "%s=> %s\n", text.ptr, cd.msg);
        kw_buf_free(&text);
        return NULL; /* e.g. an arrow over a relation whose types lack the target */
    }
    st->compiled++;
    kw_engine_t *e = th_engine(text.ptr);
    static world_t w;
    memset(&w, 0, sizeof(w));
    w.s = s;
    w.n_types = (int)s->n_types;
    const char *fail = NULL;
    if (!e) {
        snprintf(why, cap, "seed %llu: engine refused a schema the compiler accepted",
                 (unsigned long long)seed);
        fail = why;
        goto done;
    }
    /* random relationships, each allowed by the schema */
    static kw_update_t ups[MAXTUP];
    for (int t = 0; t < w.n_types; t++) {
        const kw_type_t *ty = &s->types[t];
        for (uint32_t rel = 0; rel < ty->n_rels; rel++) {
            const kw_relation_t *rd = &ty->rels[rel];
            if (rd->is_permission)
                continue;
            for (int i = 0; i < NOBJ; i++)
                for (uint32_t a = 0; a < rd->n_allowed; a++) {
                    const kw_allowed_t *al = &rd->allowed[a];
                    for (int si = al->wildcard ? -1 : 0; si < (al->wildcard ? 0 : NOBJ); si++) {
                        if (rnd(&r, 100) >= (al->wildcard ? 20u : 22u) || w.n_tups >= MAXTUP)
                            continue;
                        tup_t tp = {t,        i,  (int)rel,
                                    al->type, si, al->relation == KW_REL_NONE ? -1 : al->relation};
                        w.tups[w.n_tups] = tp;
                        kw_update_t *u = &ups[w.n_tups++];
                        u->op = KW_OP_TOUCH;
                        u->rel.resource = (kw_object_t){ty->name, kw_str_c(obj_id(&w, t, i))};
                        u->rel.relation = rd->name;
                        u->rel.subject = (kw_subject_t){
                            s->types[al->type].name, kw_str_c(obj_id(&w, al->type, si)),
                            al->relation == KW_REL_NONE
                                ? KW_STR("")
                                : s->types[al->type].rels[al->relation].name};
                    }
                }
        }
    }
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_engine_write(e, ups, (size_t)w.n_tups, NULL, 0, 0, NULL, &d) != KW_OK) {
        snprintf(why, cap, "seed %llu: write refused: %s", (unsigned long long)seed, d.msg);
        fail = why;
        goto done;
    }
    stratify(&w);
    if (w.stratified)
        st->stratified++;
    /* subjects: every user, and a few subject sets */
    int subj[8][3];
    int n_subj = 0;
    uint16_t user_t = kw_schema_type_index(s, KW_STR("user"));
    for (int i = 0; i < NOBJ; i++) {
        subj[n_subj][0] = user_t;
        subj[n_subj][1] = i;
        subj[n_subj++][2] = -1;
    }
    for (int k = 0; k < 3 && w.n_types > 1; k++) {
        int t = (int)rnd(&r, (uint32_t)w.n_types);
        if (t == user_t)
            continue;
        subj[n_subj][0] = t;
        subj[n_subj][1] = (int)rnd(&r, NOBJ);
        subj[n_subj++][2] = (int)rnd(&r, 3);
    }
    kw_arena_t *arena = kw_arena_new(0);
    for (int k = 0; k < n_subj && !fail; k++) {
        w.sub_t = subj[k][0];
        w.sub_i = subj[k][1];
        w.sub_rel = subj[k][2];
        if (w.stratified)
            ref_eval(&w);
        kw_subject_t sj = {s->types[w.sub_t].name, kw_str_c(obj_id(&w, w.sub_t, w.sub_i)),
                           w.sub_rel < 0 ? KW_STR("") : s->types[w.sub_t].rels[w.sub_rel].name};
        for (int t = 0; t < w.n_types && !fail; t++) {
            const kw_type_t *ty = &s->types[t];
            for (uint32_t rel = 0; rel < ty->n_rels && !fail; rel++) {
                bool got[NOBJ];
                bool errored = false;
                for (int i = 0; i < NOBJ && !fail; i++) {
                    kw_object_t o = {ty->name, kw_str_c(obj_id(&w, t, i))};
                    kw_check_result_t res = KW_CHECK_YES;
                    int rc = kw_engine_check(e, o, ty->rels[rel].name, sj, &res, NULL, &d);
                    st->checks++;
                    got[i] = rc == KW_OK && res == KW_CHECK_YES;
                    if (rc != KW_OK) {
                        errored = true;
                        if (rc == KW_ECYCLE)
                            st->cycles++;
                        if (w.stratified || (rc != KW_ECYCLE && rc != KW_EDEPTH)) {
                            snprintf(why, cap, "seed %llu: check %.*s:%s#%.*s@%.*s:%.*s#%.*s: %s",
                                     (unsigned long long)seed, KW_STR_FMT(ty->name),
                                     obj_id(&w, t, i), KW_STR_FMT(ty->rels[rel].name),
                                     KW_STR_FMT(sj.type), KW_STR_FMT(sj.id),
                                     KW_STR_FMT(sj.relation), d.msg);
                            fail = why;
                        }
                        continue;
                    }
                    if (w.stratified && got[i] != w.val[t][i][rel]) {
                        snprintf(
                            why, cap,
                            "seed %llu: check %.*s:%s#%.*s@%.*s:%.*s#%.*s engine=%d ref=%d\n%s",
                            (unsigned long long)seed, KW_STR_FMT(ty->name), obj_id(&w, t, i),
                            KW_STR_FMT(ty->rels[rel].name), KW_STR_FMT(sj.type), KW_STR_FMT(sj.id),
                            KW_STR_FMT(sj.relation), got[i], w.val[t][i][rel], text.ptr);
                        fail = why;
                    }
                    /* Expand agrees (plain subjects; the leaves use the reference) */
                    if (!fail && w.stratified && w.sub_rel < 0) {
                        kw_expand_t *tree = NULL;
                        kw_arena_reset(arena);
                        int xrc =
                            kw_engine_expand(e, o, ty->rels[rel].name, arena, &tree, NULL, NULL);
                        if (xrc == KW_OK && eval_tree(&w, tree) != (int)got[i]) {
                            snprintf(
                                why, cap, "seed %llu: expand of %.*s:%s#%.*s disagrees for %.*s",
                                (unsigned long long)seed, KW_STR_FMT(ty->name), obj_id(&w, t, i),
                                KW_STR_FMT(ty->rels[rel].name), KW_STR_FMT(sj.id));
                            fail = why;
                        } else if (xrc != KW_OK && xrc != KW_EDEPTH) {
                            snprintf(why, cap, "seed %llu: expand failed %d",
                                     (unsigned long long)seed, xrc);
                            fail = why;
                        }
                    }
                }
                /* The planned path agrees with the general one (errors included). */
                bool planned = false;
                char pwhy[512];
                const char *pf = compare_paths(e, ty->name, ty->rels[rel].name, sj, KW_STR_NULL,
                                               &planned, pwhy, sizeof(pwhy));
                st->compared++;
                st->planned += planned;
                if (pf) {
                    snprintf(why, cap, "seed %llu: %s\n%s", (unsigned long long)seed, pf, text.ptr);
                    fail = why;
                }
                if (fail || errored)
                    continue;
                /* LookupResources agrees with Check */
                lr_set_t ls;
                memset(&ls, 0, sizeof(ls));
                int lrc = kw_engine_lookup_resources(e, ty->name, ty->rels[rel].name, sj, lr_cb,
                                                     &ls, NULL, &d);
                if (lrc != KW_OK || ls.dup || memcmp(ls.in, got, sizeof(got)) != 0) {
                    snprintf(why, cap,
                             "seed %llu: lookup_resources %.*s#%.*s for %.*s:%.*s#%.*s rc=%d "
                             "got %d%d%d want %d%d%d\n%s",
                             (unsigned long long)seed, KW_STR_FMT(ty->name),
                             KW_STR_FMT(ty->rels[rel].name), KW_STR_FMT(sj.type), KW_STR_FMT(sj.id),
                             KW_STR_FMT(sj.relation), lrc, ls.in[0], ls.in[1], ls.in[2], got[0],
                             got[1], got[2], text.ptr);
                    fail = why;
                }
            }
        }
    }
    /* LookupSubjects agrees with Check, for users (incl. wildcard) */
    for (int t = 0; t < w.n_types && !fail; t++) {
        const kw_type_t *ty = &s->types[t];
        for (uint32_t rel = 0; rel < ty->n_rels && !fail; rel++)
            for (int i = 0; i < NOBJ && !fail; i++) {
                kw_object_t o = {ty->name, kw_str_c(obj_id(&w, t, i))};
                /* The planned path agrees with the walk for every subject type and set. */
                for (uint32_t u = 0; u < s->n_types && !fail; u++) {
                    const kw_type_t *uy = &s->types[u];
                    for (int sr = -1; sr < (int)uy->n_rels && !fail; sr++) {
                        bool planned = false;
                        char pwhy[2048];
                        const char *pf =
                            compare_subject_paths(e, o, ty->rels[rel].name, uy->name,
                                                  sr < 0 ? KW_STR("") : uy->rels[sr].name,
                                                  KW_STR_NULL, &planned, pwhy, sizeof(pwhy));
                        st->ls_compared++;
                        st->ls_planned += planned;
                        if (pf) {
                            snprintf(why, cap, "seed %llu: %s\n%s", (unsigned long long)seed, pf,
                                     text.ptr);
                            fail = why;
                        }
                    }
                }
                if (fail)
                    break;
                lr_set_t ls;
                memset(&ls, 0, sizeof(ls));
                int lrc = kw_engine_lookup_subjects(e, o, ty->rels[rel].name, KW_STR("user"),
                                                    KW_STR(""), ls_cb, &ls, NULL, &d);
                if (lrc != KW_OK)
                    continue; /* cycles through exclusion / depth: checked above */
                for (int u = 0; u < NOBJ + 1 && !fail; u++) {
                    /* u == NOBJ: a user that is in no relationship at all */
                    char uid[8];
                    snprintf(uid, sizeof(uid), "u%d", u);
                    kw_subject_t sj = {KW_STR("user"), kw_str_c(uid), KW_STR("")};
                    kw_check_result_t res;
                    int rc = kw_engine_check(e, o, ty->rels[rel].name, sj, &res, NULL, &d);
                    if (rc != KW_OK)
                        continue;
                    bool listed = u < NOBJ ? ls.in[u] : false;
                    bool by_wild = ls.wild && !(u < NOBJ && ls.excl[u]);
                    if ((res == KW_CHECK_YES) != (listed || by_wild) || ls.dup) {
                        snprintf(why, cap,
                                 "seed %llu: lookup_subjects %.*s:%s#%.*s user %s check=%d "
                                 "listed=%d wild=%d\n%s",
                                 (unsigned long long)seed, KW_STR_FMT(ty->name), obj_id(&w, t, i),
                                 KW_STR_FMT(ty->rels[rel].name), uid, res, listed, by_wild,
                                 text.ptr);
                        fail = why;
                    }
                }
            }
    }
    kw_arena_free(arena);
done:
    kw_engine_free(e);
    kw_schema_free(s);
    kw_buf_free(&text);
    return fail;
}

KW_TEST(prop_engine_matches_reference)
{
    stats_t st = {0};
    static char why[8192];
    for (uint64_t seed = 1; seed <= 400; seed++) {
        const char *f = run_case(seed, &st, why, sizeof(why));
        if (f)
            KW_FAIL_("%s", f);
    }
    fprintf(stderr,
            "  prop: %d cases, %d compiled, %d stratified, %d checks, %d cycle errors; "
            "%d of %d lookups planned, %d of %d lookup_subjects planned\n",
            st.cases, st.compiled, st.stratified, st.checks, st.cycles, st.planned, st.compared,
            st.ls_planned, st.ls_compared);
    /* the generator must actually exercise the engine */
    KW_ASSERT(st.stratified >= 150);
    KW_ASSERT(st.checks >= 20000);
    KW_ASSERT(st.planned >= st.compared / 4);
    KW_ASSERT(st.ls_planned >= st.ls_compared / 4);
}
