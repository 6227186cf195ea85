/*
 * tests/unit/vfile/subjects_test.c - subject sets (src/vfile/subjects.c): union,
 * intersection and exclusion with wildcards, and the canonical text of a set.
 */
#include "kw_test.h"

#include "vfile/vfile_int.h"

/* Builds a one-type set of user subjects from a spec: "a b" (concrete ids), "* -x -y"
 * (a wildcard minus x and y), or both ("a * -x"); a trailing '?' marks a member caveated
 * ("a? *? -x?"). Strings are static or arena-owned. */
static int build(kw_arena_t *a, const char *spec, kw_sset_t *out)
{
    memset(out, 0, sizeof(*out));
    kw_sgroup_t *g = kw__sset_get(out, KW_STR("user"), KW_STR_NULL);
    if (!g)
        return KW_ENOMEM;
    char *copy = kw_arena_strndup(a, spec, strlen(spec));
    if (!copy)
        return KW_ENOMEM;
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        int rc = KW_OK;
        size_t n = strlen(tok);
        bool cav = n > 1 && tok[n - 1] == '?';
        if (cav)
            tok[n - 1] = '\0';
        if (strcmp(tok, "*") == 0) {
            g->wild = true;
            g->wild_cav = cav;
        } else if (tok[0] == '-') {
            rc = kw__strset_add(&g->excl, tok + 1);
            if (rc == KW_OK && cav)
                rc = kw__strset_add(&g->excl_cav, tok + 1);
        } else {
            rc = kw__strset_add(&g->conc, tok);
            if (rc == KW_OK && cav)
                rc = kw__strset_add(&g->conc_cav, tok);
        }
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

/* The canonical texts of m, sorted and joined with " | ". */
static void texts(kw_arena_t *a, const kw_sset_t *m, char *out, size_t cap)
{
    kw_strset_t t = {0};
    out[0] = '\0';
    if (kw__sset_texts(a, m, &t) != KW_OK) {
        snprintf(out, cap, "(oom)");
        return;
    }
    for (size_t i = 1; i < t.n; i++) /* insertion sort: a handful of strings */
        for (size_t j = i; j > 0 && strcmp(t.v[j - 1], t.v[j]) > 0; j--) {
            const char *x = t.v[j];
            t.v[j] = t.v[j - 1];
            t.v[j - 1] = x;
        }
    size_t n = 0;
    for (size_t i = 0; i < t.n; i++)
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", i ? " | " : "", t.v[i]);
    kw__strset_free(&t);
}

typedef enum { OP_UNION, OP_AND, OP_MINUS } op_t;

/* Computes "a OP b" and returns its canonical text (static buffer). */
static const char *calc(const char *a_spec, op_t op, const char *b_spec)
{
    static char buf[512];
    kw_arena_t *a = kw_arena_new(0);
    kw_sset_t x = {0}, y = {0}, r = {0};
    int rc = a ? KW_OK : KW_ENOMEM;
    if (rc == KW_OK)
        rc = build(a, a_spec, &x);
    if (rc == KW_OK)
        rc = build(a, b_spec, &y);
    if (rc == KW_OK) {
        if (op == OP_UNION)
            rc = kw__sset_union_into(&x, &y);
        else if (op == OP_AND)
            rc = kw__sset_intersect(&x, &y, &r);
        else
            rc = kw__sset_subtract(&x, &y, &r);
    }
    if (rc == KW_OK)
        texts(a, op == OP_UNION ? &x : &r, buf, sizeof(buf));
    else
        snprintf(buf, sizeof(buf), "(error %d)", rc);
    kw__sset_free(&x);
    kw__sset_free(&y);
    kw__sset_free(&r);
    kw_arena_free(a);
    return buf;
}

KW_TEST(subjects_union)
{
    KW_ASSERT_STR_EQ(calc("a b", OP_UNION, "b c"), "user:a | user:b | user:c");
    /* (* - {x, y}) | (* - {y, z}) = * - {y} */
    KW_ASSERT_STR_EQ(calc("* -x -y", OP_UNION, "* -y -z"), "user:* - {user:y}");
    /* (* - {x, y}) | {x} = * - {y}, and x is listed concretely too */
    KW_ASSERT_STR_EQ(calc("* -x -y", OP_UNION, "x"), "user:* - {user:y} | user:x");
    KW_ASSERT_STR_EQ(calc("x", OP_UNION, "* -x -y"), "user:* - {user:y} | user:x");
    KW_ASSERT_STR_EQ(calc("", OP_UNION, "*"), "user:*");
}

KW_TEST(subjects_intersection)
{
    KW_ASSERT_STR_EQ(calc("a b", OP_AND, "b c"), "user:b");
    KW_ASSERT_STR_EQ(calc("a b", OP_AND, "* -a"), "user:b");
    KW_ASSERT_STR_EQ(calc("* -x", OP_AND, "* -y"), "user:* - {user:x, user:y}");
    KW_ASSERT_STR_EQ(calc("a", OP_AND, "c"), "");
}

KW_TEST(subjects_exclusion)
{
    KW_ASSERT_STR_EQ(calc("a b", OP_MINUS, "b"), "user:a");
    KW_ASSERT_STR_EQ(calc("* -x", OP_MINUS, "y"), "user:* - {user:x, user:y}");
    /* (* - {x}) - (* - {x, y}) = {y} */
    KW_ASSERT_STR_EQ(calc("* -x", OP_MINUS, "* -x -y"), "user:y");
    KW_ASSERT_STR_EQ(calc("a b", OP_MINUS, "* -b"), "user:b");
    KW_ASSERT_STR_EQ(calc("*", OP_MINUS, "*"), "");
}

/* SpiceDB's caveated subject-set arithmetic (its basesubjectset.go examples): only
 * whether a member is conditional shows, as the `[...]` marker. */
KW_TEST(subjects_caveated_union)
{
    KW_ASSERT_STR_EQ(calc("tom?", OP_UNION, "tom"), "user:tom");
    KW_ASSERT_STR_EQ(calc("tom?", OP_UNION, "tom?"), "user:tom[...]");
    KW_ASSERT_STR_EQ(calc("*?", OP_UNION, "*"), "user:*");
    KW_ASSERT_STR_EQ(calc("*?", OP_UNION, "*?"), "user:*[...]");
    /* {* - {tom[c1]}} | {tom[c2]} => {* - {tom[c1 && !c2]}} and tom[c2] */
    KW_ASSERT_STR_EQ(calc("* -tom?", OP_UNION, "tom?"), "user:* - {user:tom[...]} | user:tom[...]");
    /* {* - {tom}} | {tom} => {*} and tom */
    KW_ASSERT_STR_EQ(calc("* -tom", OP_UNION, "tom"), "user:* | user:tom");
    /* exclusions intersect; one in both is conditional if either is */
    KW_ASSERT_STR_EQ(calc("* -x? -y", OP_UNION, "* -x -z"), "user:* - {user:x[...]}");
}

KW_TEST(subjects_caveated_intersection)
{
    KW_ASSERT_STR_EQ(calc("tom?", OP_AND, "tom"), "user:tom[...]");
    KW_ASSERT_STR_EQ(calc("tom", OP_AND, "*?"), "user:tom[...]");
    KW_ASSERT_STR_EQ(calc("tom", OP_AND, "* -tom?"), "user:tom[...]");
    KW_ASSERT_STR_EQ(calc("tom", OP_AND, "*? -tom"), "");
    KW_ASSERT_STR_EQ(calc("*?", OP_AND, "*"), "user:*[...]");
    /* exclusions union; one in both is conditional only if both are */
    KW_ASSERT_STR_EQ(calc("* -x?", OP_AND, "* -x -y?"), "user:* - {user:x, user:y[...]}");
    /* a concrete in both and under the wildcard: conditional only if both ways are */
    KW_ASSERT_STR_EQ(calc("tom? *", OP_AND, "tom *"), "user:* | user:tom");
}

KW_TEST(subjects_caveated_exclusion)
{
    KW_ASSERT_STR_EQ(calc("tom", OP_MINUS, "tom?"), "user:tom[...]");
    KW_ASSERT_STR_EQ(calc("tom?", OP_MINUS, "tom"), "");
    KW_ASSERT_STR_EQ(calc("sarah tom", OP_MINUS, "*?"), "user:sarah[...] | user:tom[...]");
    KW_ASSERT_STR_EQ(calc("sarah tom", OP_MINUS, "*? -tom"), "user:sarah[...] | user:tom");
    KW_ASSERT_STR_EQ(calc("sarah tom", OP_MINUS, "* -tom?"), "user:tom[...]");
    KW_ASSERT_STR_EQ(calc("*", OP_MINUS, "tom?"), "user:* - {user:tom[...]}");
    KW_ASSERT_STR_EQ(calc("* -tom?", OP_MINUS, "tom"), "user:* - {user:tom}");
    KW_ASSERT_STR_EQ(calc("* -tom?", OP_MINUS, "tom?"), "user:* - {user:tom[...]}");
    KW_ASSERT_STR_EQ(calc("*?", OP_MINUS, "*"), "");
    KW_ASSERT_STR_EQ(calc("*", OP_MINUS, "*?"), "user:*[...]");
    /* {*[c1] - {tom}} - {*[c3] - {sarah[c4]}}: sarah[c1 && c3 && c4], the wildcard stays */
    KW_ASSERT_STR_EQ(calc("*? -tom", OP_MINUS, "*? -sarah?"),
                     "user:*[...] - {user:tom} | user:sarah[...]");
    /* (* - {x}) - (* - {x, y}) = {y}; a conditional exclusion of x leaves x conditional */
    KW_ASSERT_STR_EQ(calc("* -x?", OP_MINUS, "* -x -y"), "user:x[...] | user:y");
}

KW_TEST(subjects_groups_apart_by_relation)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_sset_t m = {0};
    kw_sgroup_t *plain = kw__sset_get(&m, KW_STR("group"), KW_STR_NULL);
    KW_ASSERT(plain != NULL);
    KW_ASSERT_EQ(kw__strset_add(&plain->conc, "g"), KW_OK);
    kw_sgroup_t *members = kw__sset_get(&m, KW_STR("group"), KW_STR("member"));
    KW_ASSERT(members != NULL);
    KW_ASSERT_EQ(kw__strset_add(&members->conc, "g"), KW_OK);
    KW_ASSERT(kw__sset_get(&m, KW_STR("group"), KW_STR("member")) == members);
    KW_ASSERT_EQ(m.n, 2);
    char buf[256];
    texts(a, &m, buf, sizeof(buf));
    kw__sset_free(&m);
    kw_arena_free(a);
    KW_ASSERT_STR_EQ(buf, "group:g | group:g#member");
}

KW_TEST(subjects_strset_keeps_one_of_each)
{
    kw_strset_t s = {0};
    KW_ASSERT_EQ(kw__strset_add(&s, "a"), KW_OK);
    KW_ASSERT_EQ(kw__strset_add(&s, "b"), KW_OK);
    KW_ASSERT_EQ(kw__strset_add(&s, "a"), KW_OK);
    size_t n = s.n;
    bool has_b = kw__strset_has(&s, "b"), has_c = kw__strset_has(&s, "c");
    kw__strset_free(&s);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT(has_b && !has_c);
}
