/*
 * tests/unit/authz/caveat_prop_test.c - randomized test of caveated and expiring answers:
 * random small graphs over one schema that uses every operator (union, intersection,
 * exclusion, arrows, .all(), subject sets, a caveated wildcard, recursion), with random
 * caveats, contexts and expiries on the relationships and random request contexts.
 * kw_engine_check_ctx (answer and missing parameter names) and
 * kw_engine_lookup_resources_ctx must agree with a brute-force evaluator: a three-valued
 * (NO < CONDITIONAL < YES) least fixpoint by repeated full passes, stratum by stratum,
 * with each CONDITIONAL carrying the set of parameters it misses.
 */
#include <stdlib.h>

#include "engine_helpers.h"
#include "kw_test.h"

#define NOBJ 4
#define NUSER 3
#define T0 (1800000000LL * 1000000LL)

static const char *SCHEMA =
    "use expiration\n"
    "caveat c1(a int) { a == 1 }\n"
    "caveat c2(b int) { b == 1 }\n"
    "definition user {}\n"
    "definition obj {\n"
    "  relation re0: user | user with c1 | user with c2 | user with expiration | user:* with c1 |"
    " obj#re0 | obj#re0 with c2 | obj#pe0\n"
    "  relation re1: user | user with c2 | user with c1 and expiration | obj#pe1 with c1\n"
    "  relation upp: obj | obj with c1 | obj with expiration\n"
    "  permission pe0 = re0 + upp->pe0\n"
    "  permission pe1 = re0 & re1\n"
    "  permission pe2 = re0 - re1\n"
    "  permission pe3 = upp.all(re0)\n"
    "  permission pe4 = (re0 + re1) - upp->pe2\n"
    "}\n";

enum { R0, R1, UP, P0, P1, P2, P3, P4, NREL };
static const char *REL[NREL] = {"re0", "re1", "upp", "pe0", "pe1", "pe2", "pe3", "pe4"};

/* Missing-parameter bits. */
#define MA 1u
#define MB 2u

enum { NO = 0, YES = 1, COND = 2 };
typedef struct v3 {
    int t;
    unsigned m; /* with COND */
} v3_t;

static v3_t mk(int t, unsigned m)
{
    return (v3_t){t, t == COND ? m : 0};
}

static v3_t and2(v3_t a, v3_t b)
{
    if (a.t == NO || b.t == NO)
        return mk(NO, 0);
    if (a.t == YES && b.t == YES)
        return mk(YES, 0);
    return mk(COND, a.m | b.m);
}

/* An accumulating OR. */
static void or_in(v3_t *acc, v3_t x)
{
    if (acc->t == YES || x.t == NO)
        return;
    if (x.t == YES) {
        *acc = mk(YES, 0);
        return;
    }
    acc->t = COND;
    acc->m |= x.m;
}

/* One relationship: resource obj:o#rel@subject, with its attributes. */
typedef struct tup {
    int o, rel;
    int skind; /* 0 user s, 1 user:*, 2 obj s#srel */
    int s, srel;
    int cav;     /* 0 none, 1 c1, 2 c2 */
    int ctxv;    /* -1 no context, else the value of the caveat's parameter */
    int64_t exp; /* 0 never */
} tup_t;

typedef struct req {
    const char *json;
    int a, b; /* -1: absent */
} req_t;

static const req_t REQS[] = {
    {"", -1, -1}, {"{\"a\": 1}", 1, -1}, {"{\"a\": 0, \"b\": 1}", 0, 1}, {"{\"b\": 0}", -1, 0}};

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

/* The value of a relationship's own edge (expired edges never get here). */
static v3_t edge_v(const tup_t *t, const req_t *q)
{
    if (t->cav == 0)
        return mk(YES, 0);
    int val = t->ctxv >= 0 ? t->ctxv : (t->cav == 1 ? q->a : q->b);
    if (val < 0)
        return mk(COND, t->cav == 1 ? MA : MB);
    return mk(val == 1 ? YES : NO, 0);
}

static bool live(const tup_t *t)
{
    return t->exp == 0 || t->exp > T0;
}

/* The reference: val[o][rel] for subject user:u (u == NUSER: a user with no edges). */
static void reference(const tup_t *ts, int nt, int u, const req_t *q, v3_t val[NOBJ][NREL])
{
    memset(val, 0, sizeof(v3_t) * NOBJ * NREL);
    static const int strata[3][5] = {{R0, R1, P0, P1, P3}, {P2, -1}, {P4, -1}};
    for (int st = 0; st < 3; st++) {
        for (bool changed = true; changed;) {
            changed = false;
            for (int o = 0; o < NOBJ; o++) {
                for (int k = 0; k < 5 && strata[st][k] >= 0; k++) {
                    int rel = strata[st][k];
                    v3_t nv = mk(NO, 0);
                    if (rel == R0 || rel == R1) {
                        for (int i = 0; i < nt; i++) {
                            const tup_t *t = &ts[i];
                            if (t->o != o || t->rel != rel || !live(t))
                                continue;
                            v3_t ev = edge_v(t, q);
                            if (t->skind == 0 && t->s == u)
                                or_in(&nv, ev);
                            else if (t->skind == 1)
                                or_in(&nv, ev);
                            else if (t->skind == 2)
                                or_in(&nv, and2(ev, val[t->s][t->srel]));
                        }
                    } else if (rel == P0) {
                        nv = val[o][R0];
                        for (int i = 0; i < nt; i++)
                            if (ts[i].o == o && ts[i].rel == UP && live(&ts[i]))
                                or_in(&nv, and2(edge_v(&ts[i], q), val[ts[i].s][P0]));
                    } else if (rel == P1) {
                        nv = and2(val[o][R0], val[o][R1]);
                    } else if (rel == P3) {
                        bool any = false;
                        nv = mk(YES, 0);
                        for (int i = 0; i < nt; i++) {
                            if (ts[i].o != o || ts[i].rel != UP || !live(&ts[i]))
                                continue;
                            any = true;
                            nv = and2(nv, and2(edge_v(&ts[i], q), val[ts[i].s][R0]));
                        }
                        if (!any)
                            nv = mk(NO, 0);
                    } else if (rel == P2 || rel == P4) {
                        v3_t base = val[o][R0], sub = mk(NO, 0);
                        if (rel == P2) {
                            sub = val[o][R1];
                        } else {
                            or_in(&base, val[o][R1]);
                            for (int i = 0; i < nt; i++)
                                if (ts[i].o == o && ts[i].rel == UP && live(&ts[i]))
                                    or_in(&sub, and2(edge_v(&ts[i], q), val[ts[i].s][P2]));
                        }
                        if (base.t == NO || sub.t == YES)
                            nv = mk(NO, 0);
                        else if (base.t == YES && sub.t == NO)
                            nv = mk(YES, 0);
                        else
                            nv = mk(COND, base.m | sub.m);
                    }
                    if (nv.t != val[o][rel].t || nv.m != val[o][rel].m) {
                        val[o][rel] = nv;
                        changed = true;
                    }
                }
            }
        }
    }
}

/* A random relationship the schema allows. */
static tup_t gen_tup(rng_t *r)
{
    tup_t t = {0};
    t.o = (int)rnd(r, NOBJ);
    t.ctxv = -1;
    int64_t exps[2] = {T0 - 5, T0 + 1000000};
    int rel = (int)rnd(r, 3);
    t.rel = rel;
    uint32_t k;
    switch (rel) {
    case R0:
        k = rnd(r, 8);
        if (k < 4) {
            t.skind = 0;
            t.s = (int)rnd(r, NUSER);
            t.cav = k == 1 ? 1 : k == 2 ? 2 : 0;
            if (k == 3)
                t.exp = exps[rnd(r, 2)];
        } else if (k == 4) {
            t.skind = 1;
            t.cav = 1;
        } else {
            t.skind = 2;
            t.s = (int)rnd(r, NOBJ);
            t.srel = k == 7 ? P0 : R0;
            t.cav = k == 6 ? 2 : 0;
        }
        break;
    case R1:
        k = rnd(r, 4);
        if (k < 3) {
            t.skind = 0;
            t.s = (int)rnd(r, NUSER);
            t.cav = k;
            if (k == 2) {
                t.cav = 1;
                t.exp = exps[rnd(r, 2)];
            } else if (k == 1) {
                t.cav = 2;
            }
        } else {
            t.skind = 2;
            t.s = (int)rnd(r, NOBJ);
            t.srel = P1;
            t.cav = 1;
        }
        break;
    default:
        t.skind = 2;
        t.s = (int)rnd(r, NOBJ);
        t.srel = -1;
        k = rnd(r, 3);
        t.cav = k == 1 ? 1 : 0;
        if (k == 2)
            t.exp = exps[rnd(r, 2)];
        break;
    }
    if (t.cav && rnd(r, 3))
        t.ctxv = (int)rnd(r, 2);
    return t;
}

static bool same_rel(const tup_t *a, const tup_t *b)
{
    return a->o == b->o && a->rel == b->rel && a->skind == b->skind && a->s == b->s &&
           a->srel == b->srel;
}

static int64_t prop_clock(void *ud)
{
    (void)ud;
    return T0;
}

static const char *ONAME[NOBJ] = {"o0", "o1", "o2", "o3"};
static const char *UNAME[NUSER + 1] = {"u0", "u1", "u2", "u9"};

static int write_tup(kw_engine_t *e, const tup_t *t)
{
    char ctx[32] = "";
    kw_update_t up = {KW_OP_TOUCH, {{KW_STR("obj"), kw_str_c(ONAME[t->o])}, kw_str_c(REL[t->rel])}};
    if (t->skind == 2)
        up.rel.subject = (kw_subject_t){KW_STR("obj"), kw_str_c(ONAME[t->s]),
                                        t->srel >= 0 ? kw_str_c(REL[t->srel]) : KW_STR_NULL};
    else
        up.rel.subject = (kw_subject_t){
            KW_STR("user"), t->skind ? KW_STR("*") : kw_str_c(UNAME[t->s]), KW_STR_NULL};
    if (t->cav) {
        up.rel.caveat = t->cav == 1 ? KW_STR("c1") : KW_STR("c2");
        if (t->ctxv >= 0) {
            snprintf(ctx, sizeof(ctx), "{\"%s\": %d}", t->cav == 1 ? "a" : "b", t->ctxv);
            up.rel.caveat_ctx = kw_str_c(ctx);
        }
    }
    up.rel.expires_at = t->exp;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_engine_write(e, &up, 1, NULL, 0, 0, NULL, &d);
    if (rc != KW_OK)
        fprintf(stderr, "  write: %s\n", d.msg);
    return rc;
}

static void mask_str(unsigned m, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s%s", (m & MA) ? "a" : "", (m & MA) && (m & MB) ? "," : "",
             (m & MB) ? "b" : "");
}

static unsigned str_mask(const char *m)
{
    unsigned r = 0;
    for (; *m; m++)
        r |= *m == 'a' ? MA : *m == 'b' ? MB : (*m == ',' ? 0 : 0x80);
    return r;
}

/* The missing names an engine reports for a CONDITIONAL must be a part of what the
 * reference's fixpoint collects (which may be more: through a cycle it also collects names
 * that cannot matter), and enough: with every one of them given (each way), the reference
 * answer is no longer conditional. */
static bool mask_ok(const tup_t *ts, int nt, int u, const req_t *q, int o, int rel, unsigned ref,
                    const char *got)
{
    unsigned m = str_mask(got);
    if (m == 0 || (m & ~ref))
        return false;
    for (int va = 0; va < 2; va++) {
        for (int vb = 0; vb < 2; vb++) {
            req_t q2 = *q;
            if (m & MA)
                q2.a = va;
            if (m & MB)
                q2.b = vb;
            v3_t val[NOBJ][NREL];
            reference(ts, nt, u, &q2, val);
            if (val[o][rel].t == COND)
                return false;
        }
    }
    return true;
}

typedef struct lr {
    int t[NOBJ];
    char miss[NOBJ][8];
    int n;
} lr_t;

static int on_lr(const kw_resource_result_t *r, void *ud)
{
    lr_t *o = ud;
    int i = r->id.ptr[1] - '0';
    o->t[i] = r->conditional ? COND : YES;
    snprintf(o->miss[i], 8, "%.*s", (int)r->missing.len, r->missing.ptr ? r->missing.ptr : "");
    o->n++;
    return 0;
}

KW_TEST(caveat_prop_matches_brute_force)
{
    rng_t r = {0x2545f4914f6cdd1dULL};
    long n_checks = 0, n_cond = 0, n_yes = 0;
    for (int round = 0; round < 150; round++) {
        kw_engine_t *e = th_engine(SCHEMA);
        KW_ASSERT(e != NULL);
        kw_engine_set_clock(e, prop_clock, NULL);
        tup_t ts[40];
        int nt = 0;
        int want = 4 + (int)rnd(&r, 30);
        for (int i = 0; i < want; i++) {
            tup_t t = gen_tup(&r);
            int j = 0;
            while (j < nt && !same_rel(&ts[j], &t))
                j++;
            ts[j] = t; /* a repeat is a TOUCH: the new attributes replace the old */
            if (j == nt)
                nt++;
            KW_ASSERT_EQ(write_tup(e, &t), KW_OK);
        }
        for (size_t qi = 0; qi < sizeof(REQS) / sizeof(REQS[0]); qi++) {
            const req_t *q = &REQS[qi];
            for (int u = 0; u <= NUSER; u++) {
                v3_t val[NOBJ][NREL];
                reference(ts, nt, u, q, val);
                for (int rel = 0; rel < NREL; rel++) {
                    if (rel == UP)
                        continue;
                    lr_t lr = {{0}, {{0}}, 0};
                    kw_diag_t d;
                    kw_diag_clear(&d);
                    kw_subject_t subj = {KW_STR("user"), kw_str_c(UNAME[u]), KW_STR_NULL};
                    KW_ASSERT_EQ(
                        kw_engine_lookup_resources_ctx(e, KW_STR("obj"), kw_str_c(REL[rel]), subj,
                                                       kw_str_c(q->json), on_lr, &lr, NULL, &d),
                        KW_OK);
                    for (int o = 0; o < NOBJ; o++) {
                        char miss[64], want_miss[8];
                        kw_buf_t m;
                        kw_buf_init(&m);
                        kw_check_result_t res = KW_CHECK_NO;
                        int rc = kw_engine_check_ctx(
                            e, (kw_object_t){KW_STR("obj"), kw_str_c(ONAME[o])}, kw_str_c(REL[rel]),
                            subj, kw_str_c(q->json), &res, &m, NULL, &d);
                        snprintf(miss, sizeof(miss), "%.*s", (int)m.len, m.ptr ? m.ptr : "");
                        kw_buf_free(&m);
                        mask_str(val[o][rel].m, want_miss, sizeof(want_miss));
                        bool cond = val[o][rel].t == COND;
                        if (rc != KW_OK || (int)res != val[o][rel].t || lr.t[o] != val[o][rel].t ||
                            (cond && !mask_ok(ts, nt, u, q, o, rel, val[o][rel].m, miss)) ||
                            (cond && strcmp(lr.miss[o], miss) != 0) || (!cond && miss[0])) {
                            fprintf(stderr,
                                    "  round %d ctx '%s': obj:%s#%s@user:%s engine %d [%s] "
                                    "lookup %d [%s] reference %d [%s] (rc %d %s)\n",
                                    round, q->json, ONAME[o], REL[rel], UNAME[u], (int)res, miss,
                                    lr.t[o], lr.miss[o], val[o][rel].t, want_miss, rc, d.msg);
                            for (int i = 0; i < nt; i++)
                                fprintf(stderr, "    obj:%s#%s@%s:%s%s%s cav %d ctx %d exp %s\n",
                                        ONAME[ts[i].o], REL[ts[i].rel],
                                        ts[i].skind == 2 ? "obj" : "user",
                                        ts[i].skind == 2   ? ONAME[ts[i].s]
                                        : ts[i].skind == 1 ? "*"
                                                           : UNAME[ts[i].s],
                                        ts[i].skind == 2 && ts[i].srel >= 0 ? "#" : "",
                                        ts[i].skind == 2 && ts[i].srel >= 0 ? REL[ts[i].srel] : "",
                                        ts[i].cav, ts[i].ctxv,
                                        ts[i].exp == 0 ? "-"
                                        : live(&ts[i]) ? "future"
                                                       : "past");
                            KW_ASSERT(false);
                        }
                        n_checks++;
                        n_cond += res == KW_CHECK_CONDITIONAL;
                        n_yes += res == KW_CHECK_YES;
                    }
                }
            }
        }
        kw_engine_free(e);
    }
    fprintf(stderr, "  caveat prop: %ld checks, %ld yes, %ld conditional\n", n_checks, n_yes,
            n_cond);
    KW_ASSERT(n_cond > n_checks / 50 && n_yes > n_checks / 20); /* the test sees all three */
}
