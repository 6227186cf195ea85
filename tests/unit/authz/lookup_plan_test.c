/*
 * tests/unit/authz/lookup_plan_test.c - LookupResources' planned path (lookup_plan.c)
 * against the general walk + Check, on random relationships over a layered schema with
 * every planned shape (relations, subject sets, wildcards, arrows, .all, unions,
 * intersections, exclusions) and caveats and expiries on the way, under several request
 * contexts: both paths must report the same objects with the same conditional flags and
 * missing names. (prop_test.c does the same on random schemas without attributes.)
 */
#include "authz/engine_int.h"
#include "engine_helpers.h"
#include "kw_test.h"

static const char *SCHEMA =
    "use expiration\n"
    "caveat cav1(a int) { a == 1 }\n"
    "caveat cav2(b int) { b == 1 }\n"
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | user with cav1 | user with expiration\n"
    "  relation admin: user\n"
    "  permission manage = admin + member\n"
    "}\n"
    "definition folder {\n"
    "  relation viewer: user | group#member | group#member with cav1 | user:*\n"
    "  relation owner: user with cav2 | group#manage\n"
    "  relation guest: user:* with cav2\n"
    "  permission view = viewer + owner + guest\n"
    "  permission edit = owner & viewer\n"
    "  permission nview = viewer - owner\n"
    "}\n"
    "definition doc {\n"
    "  relation parent: folder | folder with cav1 | folder with expiration\n"
    "  relation reader: user | group#member with cav2 | user with expiration\n"
    "  relation banned: user | user with cav1\n"
    "  permission read = (reader + parent->view) - banned\n"
    "  permission both = reader & parent->edit\n"
    "  permission every = parent.all(view)\n"
    "  permission mixed = (reader & parent->view) + (parent->nview - banned)\n"
    "  permission none = nil & reader\n"
    "}\n";

#define T0 1900000000000000LL /* the engine clock: 2030-03-17 */

static int64_t fixed_clock(void *ud)
{
    (void)ud;
    return T0;
}

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

#define NOBJ 4

/* One random relationship allowed by SCHEMA, as a string. */
static void gen_rel(rng_t *r, char *out, size_t cap)
{
    static const char *traits[] = {"", "[cav1:{\"a\":1}]", "[cav1]", "[cav2:{\"b\":2}]", "[cav2]"};
    static const char *exps[] = {"[expiration:2020-01-01T00:00:00Z]",
                                 "[expiration:2040-01-01T00:00:00Z]"};
    int o = (int)rnd(r, NOBJ), s = (int)rnd(r, NOBJ);
    const char *c1 = traits[1 + rnd(r, 2)], *c2 = traits[3 + rnd(r, 2)];
    const char *ex = exps[rnd(r, 2)];
    switch (rnd(r, 17)) {
    case 0:
        snprintf(out, cap, "group:g%d#member@user:u%d", o, s);
        break;
    case 1:
        snprintf(out, cap, "group:g%d#member@user:u%d%s", o, s, c1);
        break;
    case 2:
        snprintf(out, cap, "folder:f%d#guest@user:*%s", o, c2);
        break;
    case 3:
        snprintf(out, cap, "group:g%d#member@user:u%d%s", o, s, ex);
        break;
    case 4:
        snprintf(out, cap, "group:g%d#admin@user:u%d", o, s);
        break;
    case 5:
        snprintf(out, cap, "folder:f%d#viewer@user:u%d", o, s);
        break;
    case 6:
        snprintf(out, cap, "folder:f%d#viewer@group:g%d#member%s", o, s, rnd(r, 2) ? "" : c1);
        break;
    case 7:
        snprintf(out, cap, "folder:f%d#viewer@user:*", o);
        break;
    case 8:
        snprintf(out, cap, "folder:f%d#owner@user:u%d%s", o, s, c2);
        break;
    case 9:
        snprintf(out, cap, "folder:f%d#owner@group:g%d#manage", o, s);
        break;
    case 10:
    case 11:
        snprintf(out, cap, "doc:d%d#parent@folder:f%d", o, s);
        break;
    case 12:
        snprintf(out, cap, "doc:d%d#parent@folder:f%d%s", o, s, rnd(r, 2) ? c1 : ex);
        break;
    case 13:
        snprintf(out, cap, "doc:d%d#reader@user:u%d", o, s);
        break;
    case 14:
        snprintf(out, cap, "doc:d%d#reader@group:g%d#member%s", o, s, c2);
        break;
    case 15:
        snprintf(out, cap, "doc:d%d#reader@user:u%d%s", o, s, ex);
        break;
    default:
        snprintf(out, cap, "doc:d%d#banned@user:u%d%s", o, s, rnd(r, 2) ? "" : c1);
        break;
    }
}

/* One answer: per object index, 0 absent, 1 YES, 2 CONDITIONAL, plus its missing names. */
typedef struct ans {
    int v[NOBJ];
    char miss[NOBJ][16];
    int dup, other;
} ans_t;

static int on_res(const kw_resource_result_t *r, void *ud)
{
    ans_t *a = ud;
    int i = r->id.len == 2 ? r->id.ptr[1] - '0' : -1;
    if (i < 0 || i >= NOBJ) {
        a->other++;
        return 0;
    }
    if (a->v[i])
        a->dup++;
    a->v[i] = r->conditional ? 2 : 1;
    snprintf(a->miss[i], sizeof(a->miss[i]), "%.*s", (int)r->missing.len,
             r->missing.ptr ? r->missing.ptr : "");
    return 0;
}

KW_TEST(lookup_plan_matches_general_with_attributes)
{
    static const char *ctxs[] = {"", "{\"a\": 1}", "{\"a\": 2, \"b\": 1}", "{\"b\": 2}"};
    static const struct {
        const char *type, *perm;
    } qs[] = {{"group", "member"}, {"group", "manage"}, {"folder", "view"}, {"folder", "edit"},
              {"folder", "nview"}, {"doc", "read"},     {"doc", "both"},    {"doc", "every"},
              {"doc", "mixed"},    {"doc", "none"},     {"folder", "owner"}};
    static const char *subjects[] = {"user:u0", "user:u1",         "user:u2",        "user:u3",
                                     "user:u9", "group:g0#member", "group:g1#manage"};
    rng_t r = {0x9e3779b97f4a7c15ULL};
    long compared = 0, found = 0, cond = 0;
    for (int round = 0; round < 120; round++) {
        kw_engine_t *e = th_engine(SCHEMA);
        KW_ASSERT(e != NULL);
        kw_engine_set_clock(e, fixed_clock, NULL);
        int n = 6 + (int)rnd(&r, 30);
        for (int i = 0; i < n; i++) {
            char buf[160];
            gen_rel(&r, buf, sizeof(buf));
            const char *one[1] = {buf};
            kw_diag_t d;
            KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, one, 1, &d), KW_OK);
        }
        for (size_t si = 0; si < sizeof(subjects) / sizeof(subjects[0]); si++) {
            kw_subject_t sj;
            kw_diag_t d;
            char full[64];
            snprintf(full, sizeof(full), "doc:x#reader@%s", subjects[si]);
            kw_rel_t rel;
            KW_ASSERT_EQ(kw_rel_parse(kw_str_c(full), &rel, &d), KW_OK);
            sj = rel.subject;
            for (size_t qi = 0; qi < sizeof(qs) / sizeof(qs[0]); qi++)
                for (size_t ci = 0; ci < sizeof(ctxs) / sizeof(ctxs[0]); ci++) {
                    ans_t a, b;
                    memset(&a, 0, sizeof(a));
                    memset(&b, 0, sizeof(b));
                    kw_diag_t d1, d2;
                    kw_str_t ty = kw_str_c(qs[qi].type), pm = kw_str_c(qs[qi].perm);
                    int r1 = kw__engine_lookup_resources_path(e, ty, pm, sj, kw_str_c(ctxs[ci]),
                                                              KW__LK_PLAN, on_res, &a, &d1);
                    int r2 = kw__engine_lookup_resources_path(e, ty, pm, sj, kw_str_c(ctxs[ci]),
                                                              KW__LK_GENERAL, on_res, &b, &d2);
                    bool same = r1 == r2 && !a.dup && !b.dup && a.other == b.other &&
                                memcmp(a.v, b.v, sizeof(a.v)) == 0 &&
                                memcmp(a.miss, b.miss, sizeof(a.miss)) == 0;
                    if (!same) {
                        fprintf(stderr,
                                "  round %d: %s#%s for %s ctx '%s': plan rc %d %d%d%d%d, "
                                "general rc %d %d%d%d%d\n",
                                round, qs[qi].type, qs[qi].perm, subjects[si], ctxs[ci], r1, a.v[0],
                                a.v[1], a.v[2], a.v[3], r2, b.v[0], b.v[1], b.v[2], b.v[3]);
                        KW_ASSERT(false);
                    }
                    compared++;
                    for (int o = 0; o < NOBJ; o++) {
                        found += a.v[o] != 0;
                        cond += a.v[o] == 2;
                    }
                }
        }
        kw_engine_free(e);
    }
    fprintf(stderr, "  lookup plan: %ld lookups compared, %ld results, %ld conditional\n", compared,
            found, cond);
    KW_ASSERT(found > compared / 4 && cond > found / 20); /* the data exercises both */
}

/* Every allocation failure inside a planned lookup gives KW_ENOMEM or the whole answer:
 * never another answer with KW_OK, never a crash, no leak (LeakSanitizer). */
KW_TEST(lookup_plan_fault_injection)
{
    static const char *rels[] = {
        "group:g0#member@user:u0",      "group:g1#member@user:u0[cav1]",
        "group:g0#admin@user:u1",       "folder:f0#viewer@group:g0#member",
        "folder:f1#viewer@user:*",      "folder:f1#owner@group:g0#manage",
        "folder:f2#guest@user:*[cav2]", "doc:d0#parent@folder:f0",
        "doc:d1#parent@folder:f1",      "doc:d2#parent@folder:f2[cav1]",
        "doc:d2#reader@user:u0",        "doc:d3#reader@group:g1#member[cav2]",
        "doc:d3#banned@user:u0[cav1]"};
    static const char *perms[] = {"read", "both", "mixed", "every"};
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e != NULL);
    kw_engine_set_clock(e, fixed_clock, NULL);
    kw_diag_t d;
    KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, rels, sizeof(rels) / sizeof(rels[0]), &d), KW_OK);
    kw_subject_t sj = {KW_STR("user"), KW_STR("u0"), KW_STR_NULL};
    for (size_t pi = 0; pi < sizeof(perms) / sizeof(perms[0]); pi++) {
        ans_t want;
        memset(&want, 0, sizeof(want));
        KW_ASSERT_EQ(kw__engine_lookup_resources_path(e, KW_STR("doc"), kw_str_c(perms[pi]), sj,
                                                      KW_STR("{\"a\": 1}"), KW__LK_PLAN, on_res,
                                                      &want, &d),
                     KW_OK);
        bool completed = false;
        for (long n = 1; n < 2000 && !completed; n++) {
            ans_t got;
            memset(&got, 0, sizeof(got));
            kw_fault_arm(n);
            int rc = kw__engine_lookup_resources_path(e, KW_STR("doc"), kw_str_c(perms[pi]), sj,
                                                      KW_STR("{\"a\": 1}"), KW__LK_PLAN, on_res,
                                                      &got, &d);
            bool fired = kw_fault_fired();
            kw_fault_arm(0);
            if (rc == KW_OK)
                KW_ASSERT(memcmp(got.v, want.v, sizeof(got.v)) == 0 && !got.dup);
            else
                KW_ASSERT_EQ(rc, KW_ENOMEM);
            completed = !fired;
        }
        KW_ASSERT(completed);
    }
    kw_engine_free(e);
}

/* ---- LookupSubjects' planned path against the walk ---- */

/* A whole LookupSubjects answer as sorted lines "id cond missing excluded...". */
#define LS_MAX 32
typedef struct ls_ans {
    char line[LS_MAX][96];
    int n, overflow;
} ls_ans_t;

static int cmp_line(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int on_subj(const kw_subject_result_t *r, void *ud)
{
    ls_ans_t *a = ud;
    if (a->n == LS_MAX) {
        a->overflow++;
        return 0;
    }
    char ex[LS_MAX][8];
    size_t ne = r->n_excluded < LS_MAX ? r->n_excluded : LS_MAX;
    for (size_t k = 0; k < ne; k++)
        snprintf(ex[k], sizeof(ex[k]), "%.*s", KW_STR_FMT(r->excluded[k]));
    qsort(ex, ne, sizeof(ex[0]), cmp_line);
    char *p = a->line[a->n++];
    size_t cap = sizeof(a->line[0]);
    int k =
        snprintf(p, cap, "%.*s %d %.*s", KW_STR_FMT(r->id), r->conditional, KW_STR_FMT(r->missing));
    for (size_t i = 0; i < ne && k > 0 && (size_t)k < cap; i++)
        k += snprintf(p + k, cap - (size_t)k, " %s", ex[i]);
    return 0;
}

static bool same_ls(ls_ans_t *a, ls_ans_t *b)
{
    qsort(a->line, (size_t)a->n, sizeof(a->line[0]), cmp_line);
    qsort(b->line, (size_t)b->n, sizeof(b->line[0]), cmp_line);
    if (a->overflow || b->overflow || a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->line[i], b->line[i]) != 0)
            return false;
    return true;
}

/* Every (object, permission or relation, subject type or set) of SCHEMA on random data,
 * under every context: the plan (when it plans) answers exactly as the walk, conditional
 * subjects and their missing names included; the data must exercise planned answers
 * with YES and CONDITIONAL subjects, and the engine's default path must give the same. */
KW_TEST(lookup_subjects_plan_matches_walk_with_attributes)
{
    static const char *ctxs[] = {"", "{\"a\": 1}", "{\"a\": 2, \"b\": 1}", "{\"b\": 2}"};
    static const struct {
        const char *type, *perm;
    } qs[] = {{"group", "member"}, {"group", "manage"}, {"folder", "view"},   {"folder", "edit"},
              {"folder", "nview"}, {"folder", "owner"}, {"folder", "viewer"}, {"doc", "read"},
              {"doc", "both"},     {"doc", "every"},    {"doc", "mixed"},     {"doc", "none"},
              {"doc", "reader"}};
    static const struct {
        const char *type, *rel;
    } subs[] = {
        {"user", ""}, {"group", "member"}, {"group", "manage"}, {"group", ""}, {"folder", "view"}};
    rng_t r = {0x2545f4914f6cdd1dULL};
    long compared = 0, planned = 0, found = 0, cond = 0;
    for (int round = 0; round < 120; round++) {
        kw_engine_t *e = th_engine(SCHEMA);
        KW_ASSERT(e != NULL);
        kw_engine_set_clock(e, fixed_clock, NULL);
        int n = 6 + (int)rnd(&r, 30);
        for (int i = 0; i < n; i++) {
            char buf[160];
            gen_rel(&r, buf, sizeof(buf));
            if (round % 2 == 0 && strstr(buf, "user:*"))
                continue; /* half the rounds without wildcards */
            const char *one[1] = {buf};
            kw_diag_t d;
            KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, one, 1, &d), KW_OK);
        }
        static const char pre[] = {'g', 'f', 'd'};
        for (size_t qi = 0; qi < sizeof(qs) / sizeof(qs[0]); qi++)
            for (int oi = 0; oi < NOBJ; oi++)
                for (size_t si = 0; si < sizeof(subs) / sizeof(subs[0]); si++)
                    for (size_t ci = 0; ci < sizeof(ctxs) / sizeof(ctxs[0]); ci++) {
                        char id[8];
                        int ti = qs[qi].type[0] == 'g' ? 0 : qs[qi].type[0] == 'f' ? 1 : 2;
                        snprintf(id, sizeof(id), "%c%d", pre[ti], oi);
                        kw_object_t o = {kw_str_c(qs[qi].type), kw_str_c(id)};
                        static ls_ans_t a, b, c;
                        memset(&a, 0, sizeof(a));
                        memset(&b, 0, sizeof(b));
                        memset(&c, 0, sizeof(c));
                        kw_diag_t d1, d2, d3;
                        kw_str_t pm = kw_str_c(qs[qi].perm), st = kw_str_c(subs[si].type),
                                 sr = kw_str_c(subs[si].rel), cx = kw_str_c(ctxs[ci]);
                        int r1 = kw__engine_lookup_subjects_path(e, o, pm, st, sr, cx, KW__LK_PLAN,
                                                                 on_subj, &a, &d1);
                        int r2 = kw__engine_lookup_subjects_path(e, o, pm, st, sr, cx,
                                                                 KW__LK_GENERAL, on_subj, &b, &d2);
                        int r3 = kw__engine_lookup_subjects_path(e, o, pm, st, sr, cx, KW__LK_AUTO,
                                                                 on_subj, &c, &d3);
                        compared++;
                        ls_ans_t b2 = b;
                        bool ok = r3 == r2 && same_ls(&c, &b2);
                        if (r1 != KW_EAGAIN) {
                            planned++;
                            ok = ok && r1 == r2 && same_ls(&a, &b);
                            for (int i = 0; i < a.n; i++) {
                                found++;
                                cond += strstr(a.line[i], " 1 ") != NULL;
                            }
                        }
                        if (!ok) {
                            fprintf(stderr,
                                    "  round %d: %s:%s#%s of %s#%s ctx '%s': plan rc %d:", round,
                                    qs[qi].type, id, qs[qi].perm, subs[si].type, subs[si].rel,
                                    ctxs[ci], r1);
                            for (int i = 0; i < a.n; i++)
                                fprintf(stderr, " [%s]", a.line[i]);
                            fprintf(stderr, " walk rc %d:", r2);
                            for (int i = 0; i < b.n; i++)
                                fprintf(stderr, " [%s]", b.line[i]);
                            fprintf(stderr, "\n");
                            KW_ASSERT(false);
                        }
                    }
        kw_engine_free(e);
    }
    fprintf(stderr,
            "  lookup_subjects plan: %ld lookups compared, %ld planned, %ld results, "
            "%ld conditional\n",
            compared, planned, found, cond);
    KW_ASSERT(planned > compared / 4 && found > planned / 8 && cond > found / 20);
}

/* Every allocation failure inside a planned LookupSubjects gives KW_ENOMEM or the whole
 * answer, never another answer, never a crash, no leak (LeakSanitizer). */
KW_TEST(lookup_subjects_plan_fault_injection)
{
    static const char *rels[] = {
        "group:g0#member@user:u0",       "group:g1#member@user:u0[cav1]",
        "group:g0#admin@user:u1",        "folder:f0#viewer@group:g0#member",
        "folder:f1#viewer@user:u2",      "folder:f1#viewer@user:*",
        "folder:f0#guest@user:*[cav2]",  "folder:f1#owner@group:g0#manage",
        "folder:f0#owner@user:u3[cav2]", "doc:d0#parent@folder:f0",
        "doc:d0#parent@folder:f1",       "doc:d0#parent@folder:f2[cav1]",
        "doc:d0#reader@user:u0",         "doc:d0#reader@group:g1#member[cav2]",
        "doc:d0#banned@user:u1[cav1]"};
    /* doc:d0: read is not planned (a wildcard behind an exclusion); folders' view is, with
     * the wildcard and its exclusions. */
    static const struct {
        const char *type, *id, *perm;
    } qs[] = {{"doc", "d0", "read"},  {"doc", "d0", "both"},    {"doc", "d0", "mixed"},
              {"doc", "d0", "every"}, {"folder", "f0", "view"}, {"folder", "f1", "view"}};
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e != NULL);
    kw_engine_set_clock(e, fixed_clock, NULL);
    kw_diag_t d;
    KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, rels, sizeof(rels) / sizeof(rels[0]), &d), KW_OK);
    int wild_planned = 0;
    for (size_t pi = 0; pi < sizeof(qs) / sizeof(qs[0]); pi++) {
        kw_object_t o = {kw_str_c(qs[pi].type), kw_str_c(qs[pi].id)};
        static ls_ans_t want, got;
        memset(&want, 0, sizeof(want));
        int wrc =
            kw__engine_lookup_subjects_path(e, o, kw_str_c(qs[pi].perm), KW_STR("user"), KW_STR(""),
                                            KW_STR("{\"a\": 1}"), KW__LK_PLAN, on_subj, &want, &d);
        if (wrc == KW_EAGAIN)
            continue;
        KW_ASSERT_EQ(wrc, KW_OK);
        for (int k = 0; k < want.n; k++)
            wild_planned += want.line[k][0] == '*';
        bool completed = false;
        for (long n = 1; n < 2000 && !completed; n++) {
            memset(&got, 0, sizeof(got));
            kw_fault_arm(n);
            int rc = kw__engine_lookup_subjects_path(e, o, kw_str_c(qs[pi].perm), KW_STR("user"),
                                                     KW_STR(""), KW_STR("{\"a\": 1}"), KW__LK_PLAN,
                                                     on_subj, &got, &d);
            bool fired = kw_fault_fired();
            kw_fault_arm(0);
            if (rc == KW_OK) {
                ls_ans_t w2 = want;
                KW_ASSERT(same_ls(&got, &w2));
            } else {
                KW_ASSERT_EQ(rc, KW_ENOMEM);
            }
            completed = !fired;
        }
        KW_ASSERT(completed);
    }
    KW_ASSERT(wild_planned >= 2);
    kw_engine_free(e);
}

/* What LookupSubjects' plan leaves to the walk, and that the engine's default path then
 * answers as the walk: a permission that depends on itself (nested groups), and a wildcard
 * of the subject type behind an exclusion (the walk's `*` lists every subject it excludes,
 * here one met only on the subtracted side). A wildcard in a union is planned. */
KW_TEST(lookup_subjects_plan_leaves_recursion_and_wildcards_to_the_walk)
{
    kw_engine_t *e = th_engine("definition user {}\n"
                               "definition group {\n"
                               "  relation member: user | group#member\n"
                               "}\n"
                               "definition doc {\n"
                               "  relation viewer: user | user:* | group#member\n"
                               "  relation owner: user\n"
                               "  relation banned: user\n"
                               "  permission view = viewer - banned\n"
                               "  permission own = owner - banned\n"
                               "  relation reader: user | user:*\n"
                               "  permission see = reader + owner\n"
                               "}\n");
    KW_ASSERT(e != NULL);
    static const char *rels[] = {"group:g0#member@group:g1#member",
                                 "group:g1#member@user:u1",
                                 "doc:d0#viewer@group:g0#member",
                                 "doc:d1#viewer@user:*",
                                 "doc:d1#banned@user:u2",
                                 "doc:d1#owner@user:u3",
                                 "doc:d1#owner@user:u2",
                                 "doc:d1#reader@user:*"};
    kw_diag_t d;
    KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, rels, sizeof(rels) / sizeof(rels[0]), &d), KW_OK);
    static const struct {
        const char *type, *id, *perm;
        int planned;
        const char *want; /* the sorted lines of the answer, "; "-joined */
    } qs[] = {{"group", "g0", "member", 0, "u1 0 ; "},
              {"doc", "d0", "view", 0, "u1 0 ; "},
              {"doc", "d1", "view", 0, "* 0  u2; "},
              {"doc", "d1", "own", 1, "u3 0 ; "},
              {"doc", "d1", "see", 1, "* 0 ; u2 0 ; u3 0 ; "}};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        kw_object_t o = {kw_str_c(qs[i].type), kw_str_c(qs[i].id)};
        static ls_ans_t a, b;
        memset(&a, 0, sizeof(a));
        memset(&b, 0, sizeof(b));
        int r1 =
            kw__engine_lookup_subjects_path(e, o, kw_str_c(qs[i].perm), KW_STR("user"), KW_STR(""),
                                            KW_STR_NULL, KW__LK_PLAN, on_subj, &a, &d);
        int want_rc = qs[i].planned ? KW_OK : KW_EAGAIN;
        KW_ASSERT_EQ(r1, want_rc);
        KW_ASSERT_EQ(kw__engine_lookup_subjects_path(e, o, kw_str_c(qs[i].perm), KW_STR("user"),
                                                     KW_STR(""), KW_STR_NULL, KW__LK_AUTO, on_subj,
                                                     &b, &d),
                     KW_OK);
        qsort(b.line, (size_t)b.n, sizeof(b.line[0]), cmp_line);
        char got[256] = "";
        for (int k = 0; k < b.n; k++) {
            strncat(got, b.line[k], sizeof(got) - strlen(got) - 1);
            strncat(got, "; ", sizeof(got) - strlen(got) - 1);
        }
        if (strcmp(got, qs[i].want) != 0)
            fprintf(stderr, "  %s:%s#%s: got '%s', want '%s'\n", qs[i].type, qs[i].id, qs[i].perm,
                    got, qs[i].want);
        KW_ASSERT(strcmp(got, qs[i].want) == 0);
    }
    kw_engine_free(e);
}
