/*
 * tests/unit/authz/trace_test.c - debug traces (authz/trace.c, kw_engine_check_trace):
 *  - on random schemas and graphs, the trace's root answers exactly what kw_engine_check
 *    answers, and every node's answer is the check of that node;
 *  - on union-only schemas (no intersection, exclusion or .all()), where a node's value is
 *    the union of what it dispatches to, the tree is consistent: a NO node has no YES
 *    sub-problem, a YES permission has at least one;
 *  - the shape of a known trace: sub-problems of a permission, of an arrow, of a subject
 *    set; a node met twice is cached; a cycle ends.
 */
#include <stdlib.h>

#include "engine_helpers.h"
#include "kw_test.h"

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

/* Operands of a permission: a relation, an earlier permission, an arrow. */
static void gen_operand(rng_t *r, kw_buf_t *b, int p)
{
    switch (rnd(r, 4)) {
    case 0:
        kw_buf_printf(b, "rr%u", rnd(r, 3));
        break;
    case 1:
        if (p > 0)
            kw_buf_printf(b, "pp%u", rnd(r, (uint32_t)p));
        else
            kw_buf_printf(b, "rr%u", rnd(r, 3));
        break;
    default:
        kw_buf_printf(b, "rr%u->%s", rnd(r, 2), rnd(r, 2) ? "pp0" : "rr2");
    }
}

/* Two types t0, t1 (and user); r0/r1 hold objects (arrows' tuplesets), r2 users, subject
 * sets; p0 and p1 combine them (with & and - unless union_only). */
static void gen_schema(rng_t *r, bool union_only, kw_buf_t *b)
{
    kw_buf_puts(b, "definition user {}\n");
    for (int t = 0; t < 2; t++) {
        kw_buf_printf(b,
                      "definition tt%d {\n  relation rr0: tt0 | tt1\n  relation rr1: tt1 | tt0\n"
                      "  relation rr2: user | tt0#rr2 | tt1#pp0\n",
                      t);
        for (int p = 0; p < 2; p++) {
            kw_buf_printf(b, "  permission pp%d = ", p);
            gen_operand(r, b, p);
            int n = (int)rnd(r, 3);
            for (int i = 0; i < n; i++) {
                static const char *ops[] = {" + ", " & ", " - "};
                kw_buf_puts(b, union_only ? " + " : ops[rnd(r, 3)]);
                gen_operand(r, b, p);
            }
            kw_buf_puts(b, "\n");
        }
        kw_buf_puts(b, "}\n");
    }
}

static void gen_rels(rng_t *r, kw_engine_t *e, int n)
{
    for (int i = 0; i < n; i++) {
        char rel[128];
        int t = (int)rnd(r, 2), o = (int)rnd(r, 4), k = (int)rnd(r, 3);
        if (k < 2) {
            snprintf(rel, sizeof(rel), "tt%d:o%d#rr%d@tt%u:o%u", t, o, k, rnd(r, 2), rnd(r, 4));
        } else {
            switch (rnd(r, 5)) {
            case 1:
                snprintf(rel, sizeof(rel), "tt%d:o%d#rr2@tt0:o%u#rr2", t, o, rnd(r, 4));
                break;
            case 2:
                snprintf(rel, sizeof(rel), "tt%d:o%d#rr2@tt1:o%u#pp0", t, o, rnd(r, 4));
                break;
            default:
                snprintf(rel, sizeof(rel), "tt%d:o%d#rr2@user:u%u", t, o, rnd(r, 3));
            }
        }
        (void)th_touch1(e, rel); /* a repeated one is a no-op */
    }
}

typedef struct stats {
    size_t nodes, cached, checked;
} stats_t;

/* Every node's answer is the check of that node; in a union-only world the tree is
 * consistent with its sub-problems. false on the first violation (printed). */
static bool walk(kw_engine_t *e, const kw_trace_t *t, kw_subject_t s, bool union_only, stats_t *st)
{
    st->nodes++;
    st->cached += t->cached;
    kw_check_result_t want = KW_CHECK_NO;
    kw_diag_t d;
    if (kw_engine_check(e, t->resource, t->permission, s, &want, NULL, &d) != KW_OK ||
        want != t->result) {
        fprintf(stderr, "  node %.*s:%.*s#%.*s: trace %d, check %d\n", KW_STR_FMT(t->resource.type),
                KW_STR_FMT(t->resource.id), KW_STR_FMT(t->permission), (int)t->result, (int)want);
        return false;
    }
    st->checked++;
    bool any_yes = false;
    for (size_t i = 0; i < t->n_subs; i++) {
        if (!walk(e, t->subs[i], s, union_only, st))
            return false;
        any_yes |= t->subs[i]->result == KW_CHECK_YES;
    }
    if (t->cached && t->n_subs) {
        fprintf(stderr, "  a cached node lists sub-problems\n");
        return false;
    }
    if (union_only && !t->cached) {
        if (t->result == KW_CHECK_NO && any_yes) {
            fprintf(stderr, "  NO node %.*s:%.*s#%.*s with a YES sub-problem\n",
                    KW_STR_FMT(t->resource.type), KW_STR_FMT(t->resource.id),
                    KW_STR_FMT(t->permission));
            return false;
        }
        if (t->result == KW_CHECK_YES && t->is_permission && !any_yes) {
            fprintf(stderr, "  YES permission %.*s:%.*s#%.*s without a YES sub-problem\n",
                    KW_STR_FMT(t->resource.type), KW_STR_FMT(t->resource.id),
                    KW_STR_FMT(t->permission));
            return false;
        }
    }
    return true;
}

KW_TEST(trace_agrees_with_check_on_random_graphs)
{
    rng_t r = {0x9e3779b97f4a7c15ull};
    stats_t st = {0, 0, 0};
    size_t yes = 0, traces = 0;
    for (int round = 0; round < 60; round++) {
        bool union_only = round % 2 == 0;
        kw_buf_t b;
        kw_buf_init(&b);
        gen_schema(&r, union_only, &b);
        kw_engine_t *e = th_engine(b.ptr);
        kw_buf_free(&b);
        KW_ASSERT(e);
        gen_rels(&r, e, 40);
        for (int q = 0; q < 20; q++) {
            char res_id[8], sub_id[8];
            snprintf(res_id, sizeof(res_id), "o%u", rnd(&r, 4));
            kw_object_t res = {rnd(&r, 2) ? KW_STR("tt0") : KW_STR("tt1"), kw_str_c(res_id)};
            static const char *perms[] = {"pp0", "pp1", "rr2", "rr0"};
            kw_str_t perm = kw_str_c(perms[rnd(&r, 4)]);
            kw_subject_t s;
            if (rnd(&r, 4)) {
                snprintf(sub_id, sizeof(sub_id), "u%u", rnd(&r, 3));
                s = (kw_subject_t){KW_STR("user"), kw_str_c(sub_id), KW_STR("")};
            } else {
                snprintf(sub_id, sizeof(sub_id), "o%u", rnd(&r, 4));
                s = (kw_subject_t){KW_STR("tt0"), kw_str_c(sub_id), KW_STR("")};
            }
            kw_check_result_t want = KW_CHECK_NO;
            kw_diag_t d;
            int crc = kw_engine_check(e, res, perm, s, &want, NULL, &d);
            kw_arena_t *a = kw_arena_new(0);
            KW_ASSERT(a);
            kw_trace_t *t = NULL;
            int trc = kw_engine_check_trace(e, res, perm, s, KW_STR(""), a, &t, &d);
            if ((trc == KW_OK) != (crc == KW_OK))
                fprintf(stderr, "  check %d, trace %d: %s\n", crc, trc, d.msg);
            KW_ASSERT_EQ(trc == KW_OK, crc == KW_OK);
            if (trc == KW_OK) {
                traces++;
                KW_ASSERT_EQ((int)t->result, (int)want);
                yes += want == KW_CHECK_YES;
                KW_ASSERT(kw_str_eq(t->permission, perm));
                KW_ASSERT(walk(e, t, s, union_only, &st));
            }
            kw_arena_free(a);
        }
        kw_engine_free(e);
    }
    /* the generator reaches both answers, deep trees and cached nodes */
    KW_ASSERT(traces > 1000);
    KW_ASSERT(yes > 100);
    KW_ASSERT(st.nodes > 5 * traces);
    KW_ASSERT(st.cached > 0);
}

KW_TEST(trace_shape)
{
    kw_engine_t *e = th_engine("definition user {}\n"
                               "definition group {\n"
                               "  relation member: user | group#member\n"
                               "}\n"
                               "definition folder {\n"
                               "  relation parent: folder\n"
                               "  relation viewer: user | group#member\n"
                               "  permission view = viewer + parent->view\n"
                               "}\n"
                               "definition doc {\n"
                               "  relation folder: folder\n"
                               "  relation viewer: user\n"
                               "  permission view = viewer + folder->view\n"
                               "}\n");
    KW_ASSERT(e);
    const char *rels[] = {"doc:d#folder@folder:f1",
                          "folder:f1#parent@folder:f2",
                          "folder:f2#parent@folder:f1", /* a cycle */
                          "folder:f2#viewer@group:g#member",
                          "group:g#member@user:ann",
                          NULL};
    KW_ASSERT_EQ(th_touch(e, rels), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_trace_t *t = NULL;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_engine_check_trace(e, (kw_object_t){KW_STR("doc"), KW_STR("d")}, KW_STR("view"),
                                       (kw_subject_t){KW_STR("user"), KW_STR("ann"), KW_STR("")},
                                       KW_STR(""), a, &t, &d),
                 KW_OK);
    /* doc:d#view = viewer + folder->view: doc:d#viewer (no), folder:f1#view (yes) */
    KW_ASSERT_EQ((int)t->result, KW_CHECK_YES);
    KW_ASSERT(t->is_permission);
    KW_ASSERT_EQ(t->n_subs, 2);
    KW_ASSERT(kw_str_eq_c(t->subs[0]->permission, "viewer"));
    KW_ASSERT(!t->subs[0]->is_permission);
    KW_ASSERT_EQ((int)t->subs[0]->result, KW_CHECK_NO);
    const kw_trace_t *f1 = t->subs[1];
    KW_ASSERT(kw_str_eq_c(f1->resource.type, "folder") && kw_str_eq_c(f1->resource.id, "f1"));
    KW_ASSERT(kw_str_eq_c(f1->permission, "view"));
    KW_ASSERT_EQ((int)f1->result, KW_CHECK_YES);
    /* folder:f1#view: f1#viewer (no), f2#view (yes) */
    KW_ASSERT_EQ(f1->n_subs, 2);
    const kw_trace_t *f2 = f1->subs[1];
    KW_ASSERT(kw_str_eq_c(f2->resource.id, "f2"));
    KW_ASSERT_EQ(f2->n_subs, 2);
    /* folder:f2#viewer (yes) through group:g#member (yes, found directly: no sub-problems) */
    const kw_trace_t *v2 = f2->subs[0];
    KW_ASSERT(kw_str_eq_c(v2->permission, "viewer"));
    KW_ASSERT_EQ((int)v2->result, KW_CHECK_YES);
    KW_ASSERT_EQ(v2->n_subs, 1);
    KW_ASSERT(kw_str_eq_c(v2->subs[0]->resource.type, "group"));
    KW_ASSERT(kw_str_eq_c(v2->subs[0]->permission, "member"));
    KW_ASSERT_EQ((int)v2->subs[0]->result, KW_CHECK_YES);
    KW_ASSERT_EQ(v2->subs[0]->n_subs, 0);
    /* the cycle back to folder:f1#view ends in a cached node */
    const kw_trace_t *back = f2->subs[1];
    KW_ASSERT(kw_str_eq_c(back->resource.id, "f1"));
    KW_ASSERT(back->cached);
    KW_ASSERT_EQ(back->n_subs, 0);
    kw_arena_free(a);
    /* an unknown permission is the check's error */
    a = kw_arena_new(0);
    KW_ASSERT(a);
    KW_ASSERT_EQ(kw_engine_check_trace(e, (kw_object_t){KW_STR("doc"), KW_STR("d")}, KW_STR("nope"),
                                       (kw_subject_t){KW_STR("user"), KW_STR("ann"), KW_STR("")},
                                       KW_STR(""), a, &t, &d),
                 KW_EINVAL);
    kw_arena_free(a);
    kw_engine_free(e);
}
