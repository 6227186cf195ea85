/*
 * vfile/expected.c - expected relations: the grammar of their keys (`type:id#relation`)
 * and entries ("[subject] is <...>"), and the recursive expansion of a key into the
 * subject set the entries are compared with.
 *
 * Only the bracketed subject of an entry is compared, in canonical text (subjects.c):
 * `type:id`, `type:id#relation` (a trailing `#...` dropped) or a wildcard with its
 * exclusions, each with SpiceDB's caveat marker `[...]` when it holds only under a caveat
 * (`[user:tom[...]]`, `[user:*[...] - {user:a, user:b[...]}]`); the marker is compared
 * exactly. Any other bracket inside the subject is malformed (SpiceDB writes no caveat
 * names there).
 */
#include <string.h>

#include "base/limits.h"
#include "vfile/vfile_int.h"

/* ---- text ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

kw_str_t kw__vfile_trim(kw_str_t s)
{
    while (s.len > 0 && is_space(s.ptr[0]))
        s.ptr++, s.len--;
    while (s.len > 0 && is_space(s.ptr[s.len - 1]))
        s.len--;
    return s;
}

static kw_str_t strip_ellipsis(kw_str_t s)
{
    if (s.len > 4 && memcmp(s.ptr + s.len - 4, "#...", 4) == 0)
        s.len -= 4;
    return s;
}

/* The exclusion dash of "type:* - {…}" inside subj: a '-' at the start or after a space
 * or '*', followed (after blanks) by '{'. NULL when there is none. */
static const char *exclusion_dash(kw_str_t subj)
{
    for (size_t i = 0; i + 1 < subj.len; i++)
        if (subj.ptr[i] == '-' && (i == 0 || subj.ptr[i - 1] == ' ' || subj.ptr[i - 1] == '*')) {
            kw_str_t rest = kw__vfile_trim((kw_str_t){subj.ptr + i + 1, subj.len - i - 1});
            if (rest.len > 0 && rest.ptr[0] == '{')
                return subj.ptr + i;
        }
    return NULL;
}

static const char k_mark[] = "[...]";

/* Strips a trailing caveat marker `[...]` from s; *cav says whether there was one. Any
 * other bracket left in s makes it malformed (false). */
static bool strip_mark(kw_str_t *s, bool *cav)
{
    size_t m = sizeof(k_mark) - 1;
    *cav = s->len > m && memcmp(s->ptr + s->len - m, k_mark, m) == 0;
    if (*cav)
        s->len -= m;
    return !memchr(s->ptr, '[', s->len) && !memchr(s->ptr, ']', s->len);
}

static int bad_subject(kw_str_t s, kw_diag_t *diag)
{
    return kw_diag_set(diag, KW_EINVAL, 0, 0,
                       "expected relation \"%.*s\": invalid subject (a caveated subject is "
                       "written `type:id[...]`, a wildcard's exclusions `type:* - {type:a, "
                       "type:b[...]}`)",
                       KW_STR_FMT(s));
}

/* The canonical text of a wildcard with exclusions: base is "type:*" (marker stripped),
 * set is "{a, b[...]}" (already checked to end in '}'). */
static int wildcard_text(kw_arena_t *a, kw_str_t whole, kw_str_t base, bool cav, kw_str_t set,
                         char **out, kw_diag_t *diag)
{
    kw_strset_t items = {0};
    int rc = KW_OK;
    size_t p = 1;
    while (rc == KW_OK && p < set.len - 1) {
        size_t q = p;
        while (q < set.len - 1 && set.ptr[q] != ',')
            q++;
        kw_str_t item = kw__vfile_trim((kw_str_t){set.ptr + p, q - p});
        bool icav;
        if (!strip_mark(&item, &icav)) {
            rc = bad_subject(whole, diag);
            break;
        }
        item = strip_ellipsis(item);
        if (item.len > 0) {
            char *it = kw_arena_sprintf(a, "%.*s%s", KW_STR_FMT(item), icav ? k_mark : "");
            rc = it ? kw__strset_add(&items, it) : KW_ENOMEM;
        }
        p = q + 1;
    }
    kw_str_t type = {base.ptr, base.len - 2};
    if (rc == KW_OK) {
        *out = kw__wild_text(a, type, cav, &items);
        rc = *out ? KW_OK : KW_ENOMEM;
    }
    kw__strset_free(&items);
    return rc;
}

int kw__vfile_expected_subject(kw_arena_t *a, kw_str_t s, char **out, kw_diag_t *diag)
{
    s = kw__vfile_trim(s);
    if (s.len == 0 || s.ptr[0] != '[')
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "expected relation \"%.*s\" must start with '[subject]'", KW_STR_FMT(s));
    size_t depth = 0, end = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.ptr[i] == '[') {
            depth++;
        } else if (s.ptr[i] == ']' && --depth == 0) {
            end = i;
            break;
        }
    }
    if (end == 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "expected relation \"%.*s\" lacks a ']'",
                           KW_STR_FMT(s));
    kw_str_t subj = kw__vfile_trim((kw_str_t){s.ptr + 1, end - 1});
    const char *dash = exclusion_dash(subj);
    kw_str_t base = dash ? kw__vfile_trim((kw_str_t){subj.ptr, (size_t)(dash - subj.ptr)}) : subj;
    bool cav;
    if (!strip_mark(&base, &cav))
        return bad_subject(s, diag);
    base = strip_ellipsis(base);
    if (!dash) {
        *out = kw_arena_sprintf(a, "%.*s%s", KW_STR_FMT(base), cav ? k_mark : "");
        return *out ? KW_OK : KW_ENOMEM;
    }
    kw_str_t set = kw__vfile_trim((kw_str_t){dash + 1, subj.len - (size_t)(dash + 1 - subj.ptr)});
    if (base.len < 2 || memcmp(base.ptr + base.len - 2, ":*", 2) != 0 || set.len < 2 ||
        set.ptr[set.len - 1] != '}')
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "expected relation \"%.*s\": only a wildcard may have exclusions, "
                           "written `type:* - {type:a, type:b}`",
                           KW_STR_FMT(s));
    return wildcard_text(a, s, base, cav, set, out, diag);
}

int kw__vfile_parse_key(kw_str_t s, kw_object_t *obj, kw_str_t *rel)
{
    const char *colon = memchr(s.ptr, ':', s.len);
    const char *hash = NULL;
    for (size_t i = s.len; i > 0; i--)
        if (s.ptr[i - 1] == '#') {
            hash = s.ptr + i - 1;
            break;
        }
    if (!colon || !hash || hash < colon || colon == s.ptr || hash == colon + 1 ||
        hash + 1 == s.ptr + s.len)
        return KW_EINVAL;
    obj->type = (kw_str_t){s.ptr, (size_t)(colon - s.ptr)};
    obj->id = (kw_str_t){colon + 1, (size_t)(hash - colon - 1)};
    *rel = (kw_str_t){hash + 1, (size_t)(s.ptr + s.len - hash - 1)};
    return KW_OK;
}

/* ---- recursive expansion ---- */

static char *arena_str(kw_arena_t *a, kw_str_t s)
{
    return kw_arena_strndup(a, s.ptr ? s.ptr : "", s.len);
}

static bool has_relation(kw_str_t rel)
{
    return rel.len > 0 && !kw_str_eq_c(rel, "...");
}

static int tree_to_set(kw_vexpand_t *x, const kw_expand_t *t, kw_sset_t *out, kw_diag_t *diag);

/* Every member of m holds only under a caveat from now on (SpiceDB's parent caveat over
 * the members a caveated subject set brings); the exclusions keep theirs. */
static int mark_caveated(kw_sset_t *m)
{
    int rc = KW_OK;
    for (size_t i = 0; rc == KW_OK && i < m->n; i++) {
        kw_sgroup_t *k = &m->v[i];
        k->wild_cav = k->wild;
        for (size_t j = 0; rc == KW_OK && j < k->conc.n; j++)
            rc = kw__strset_add(&k->conc_cav, k->conc.v[j]);
    }
    return rc;
}

/* A leaf: its subjects (caveated when their relationship has a caveat), each subject set
 * also expanded. */
static int leaf_to_set(kw_vexpand_t *x, const kw_expand_t *t, kw_sset_t *out, kw_diag_t *diag)
{
    int rc = KW_OK;
    for (size_t i = 0; rc == KW_OK && i < t->n_subjects; i++) {
        const kw_subject_t *s = &t->subjects[i];
        bool cav = t->caveats && t->caveats[i].name.len > 0;
        kw_str_t rel = has_relation(s->relation) ? s->relation : KW_STR_NULL;
        char *type = arena_str(x->arena, s->type);
        char *id = arena_str(x->arena, s->id);
        char *rels = arena_str(x->arena, rel);
        if (!type || !id || !rels)
            return KW_ENOMEM;
        kw_sgroup_t *k =
            kw__sset_get(out, (kw_str_t){type, s->type.len}, (kw_str_t){rels, rel.len});
        if (!k)
            return KW_ENOMEM;
        /* one subject joins the leaf's set as a union with {subject} */
        kw_sset_t one = {0};
        kw_sgroup_t *g = kw__sset_get(&one, k->type, k->rel);
        if (!g) {
            rc = KW_ENOMEM;
        } else if (rel.len == 0 && kw_str_eq_c(s->id, "*")) {
            g->wild = true;
            g->wild_cav = cav;
        } else {
            rc = kw__strset_add(&g->conc, id);
            if (rc == KW_OK && cav)
                rc = kw__strset_add(&g->conc_cav, id);
        }
        if (rc == KW_OK)
            rc = kw__sset_union_into(out, &one);
        kw__sset_free(&one);
        if (rc == KW_OK && rel.len > 0) {
            kw_sset_t sub;
            rc = kw__vfile_expand(x, (kw_object_t){s->type, s->id}, rel, &sub, diag);
            if (rc == KW_OK && cav)
                rc = mark_caveated(&sub);
            if (rc == KW_OK)
                rc = kw__sset_union_into(out, &sub);
            kw__sset_free(&sub);
        }
    }
    return rc;
}

/* An arrow's tupleset (`ts->t`, `ts.all(t)`): the target objects, as `type:id`, that it
 * reaches through a caveated relationship and through an uncaveated one. */
typedef struct arrow_cav {
    kw_arena_t *arena;
    kw_strset_t cav, plain;
} arrow_cav_t;

static int on_tupleset_rel(const kw_rel_t *r, void *ud)
{
    arrow_cav_t *ac = ud;
    char *key = kw_arena_sprintf(ac->arena, "%.*s:%.*s", KW_STR_FMT(r->subject.type),
                                 KW_STR_FMT(r->subject.id));
    if (!key)
        return KW_ENOMEM;
    return kw__strset_add(r->caveat.len > 0 ? &ac->cav : &ac->plain, key);
}

/* The expand tree keeps caveats on its leaves only, so an arrow whose tupleset
 * relationship is caveated would show its members unconditional. An arrow node is a UNION
 * or INTERSECTION labelled with a relation (the tupleset) rather than a permission; its
 * tupleset relationships are read back to learn which children hold only under a caveat
 * (SpiceDB applies the relationship's caveat to everything found through it). */
static int arrow_caveats(kw_vexpand_t *x, const kw_expand_t *t, arrow_cav_t *ac, kw_diag_t *diag)
{
    memset(ac, 0, sizeof(*ac));
    ac->arena = x->arena;
    bool is_permission = true;
    if (t->kind == KW_EXPAND_EXCLUSION || t->n_children == 0 ||
        !kw_engine_has(x->e, t->object.type, t->relation, &is_permission) || is_permission)
        return KW_OK;
    kw_filter_t f = {
        .resource_type = t->object.type, .resource_id = t->object.id, .relation = t->relation};
    int rc = kw_engine_read(x->e, &f, on_tupleset_rel, ac, NULL, diag);
    return rc == KW_ENOMEM ? kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory") : rc;
}

static void arrow_cav_free(arrow_cav_t *ac)
{
    kw__strset_free(&ac->cav);
    kw__strset_free(&ac->plain);
}

/* The subjects of child i of t, caveated as a whole when t is an arrow that reaches that
 * child's object only through caveated relationships. */
static int child_to_set(kw_vexpand_t *x, const kw_expand_t *t, size_t i, const arrow_cav_t *ac,
                        kw_sset_t *out, kw_diag_t *diag)
{
    const kw_expand_t *ch = t->children[i];
    int rc = tree_to_set(x, ch, out, diag);
    if (rc != KW_OK || ac->cav.n == 0)
        return rc;
    char *key = kw_arena_sprintf(x->arena, "%.*s:%.*s", KW_STR_FMT(ch->object.type),
                                 KW_STR_FMT(ch->object.id));
    if (!key)
        return KW_ENOMEM;
    if (kw__strset_has(&ac->cav, key) && !kw__strset_has(&ac->plain, key))
        rc = mark_caveated(out);
    return rc;
}

static int tree_to_set(kw_vexpand_t *x, const kw_expand_t *t, kw_sset_t *out, kw_diag_t *diag)
{
    int rc = KW_OK;
    memset(out, 0, sizeof(*out));
    if (t->kind == KW_EXPAND_LEAF)
        return leaf_to_set(x, t, out, diag);
    if (t->kind != KW_EXPAND_UNION && t->kind != KW_EXPAND_INTERSECTION &&
        t->kind != KW_EXPAND_EXCLUSION)
        return kw_diag_set(diag, KW_EINTERNAL, 0, 0, "unknown expand node kind %d", (int)t->kind);
    if (t->n_children == 0)
        return KW_OK;
    arrow_cav_t ac;
    rc = arrow_caveats(x, t, &ac, diag);
    if (rc == KW_OK && t->kind == KW_EXPAND_UNION) {
        for (size_t i = 0; rc == KW_OK && i < t->n_children; i++) {
            kw_sset_t sub;
            rc = child_to_set(x, t, i, &ac, &sub, diag);
            if (rc == KW_OK)
                rc = kw__sset_union_into(out, &sub);
            kw__sset_free(&sub);
        }
    } else if (rc == KW_OK) {
        kw__sset_free(out);
        rc = child_to_set(x, t, 0, &ac, out, diag);
        for (size_t i = 1; rc == KW_OK && i < t->n_children; i++) {
            kw_sset_t sub, res;
            rc = child_to_set(x, t, i, &ac, &sub, diag);
            if (rc == KW_OK) {
                rc = t->kind == KW_EXPAND_INTERSECTION ? kw__sset_intersect(out, &sub, &res)
                                                       : kw__sset_subtract(out, &sub, &res);
                kw__sset_free(out);
                *out = res;
            }
            kw__sset_free(&sub);
        }
    }
    arrow_cav_free(&ac);
    return rc;
}

/* A subject set already being expanded higher up contributes nothing more: its members
 * are already collected there. */
int kw__vfile_expand(kw_vexpand_t *x, kw_object_t obj, kw_str_t rel, kw_sset_t *out,
                     kw_diag_t *diag)
{
    memset(out, 0, sizeof(*out));
    char *key = kw_arena_sprintf(x->arena, "%.*s:%.*s#%.*s", KW_STR_FMT(obj.type),
                                 KW_STR_FMT(obj.id), KW_STR_FMT(rel));
    if (!key)
        return KW_ENOMEM;
    if (kw__strset_has(&x->stack, key))
        return KW_OK;
    if (++x->expansions > KW_MAX_VFILE_EXPANSIONS)
        return kw_diag_set(diag, KW_ELIMIT, 0, 0,
                           "more than %d subject sets to expand; the graph is too large to "
                           "validate expected relations",
                           KW_MAX_VFILE_EXPANSIONS);
    kw_expand_t *tree = NULL;
    int rc = kw_engine_expand(x->e, obj, rel, x->arena, &tree, NULL, diag);
    if (rc != KW_OK)
        return rc;
    if ((rc = kw__strset_add(&x->stack, key)) != KW_OK)
        return rc;
    rc = tree_to_set(x, tree, out, diag);
    x->stack.n--;
    return rc;
}
