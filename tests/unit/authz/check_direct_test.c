/*
 * tests/unit/authz/check_direct_test.c - Check's direct-relation fast path
 * (tag-kw-check-direct) against the general evaluation (kw__engine_check_general) on
 * random graphs: plain subjects, wildcards (on doc), subject sets (which the fast path must hand
 * over), caveated and expiring relationships (which it must leave alone), objects with
 * a few edges (in place) and with many (a heap array, bisected), subjects that are not in
 * the graph, subject sets as subjects, and permissions. Every answer, error code and
 * missing-parameter list must be the same on both paths; a wrong "yes" is a breach.
 */
#include <stdlib.h>

#include "authz/engine_int.h"
#include "engine_helpers.h"
#include "kw_test.h"

#define SEC 1000000LL
#define T0 (1800000000LL * SEC)

static const char *SCHEMA = "use expiration\n"
                            "caveat over(x int) { x > 5 }\n"
                            "definition user {}\n"
                            "definition group {\n"
                            "  relation member: user | group#member\n"
                            "}\n"
                            "definition doc {\n"
                            "  relation owner: user\n"
                            "  relation viewer: user | user:* | group#member\n"
                            "  relation editor: user | user with over | user with expiration\n"
                            "  relation parent: doc\n"
                            "  permission view = owner + viewer + editor + parent->view\n"
                            "}\n";

static int64_t clk_now = T0;
static int64_t test_clock(void *ud)
{
    (void)ud;
    return clk_now;
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

#define NDOC 12
#define NUSER 14 /* users u0..u11 may appear in relationships; u12, u13 never do */
#define NGROUP 4

static int touch_one(kw_engine_t *e, const char *text, const char *cav, const char *ctx,
                     int64_t exp)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_update_t up = {KW_OP_TOUCH, {{{0}}}};
    int rc = kw_rel_parse(kw_str_c(text), &up.rel, &d);
    if (rc == KW_OK) {
        up.rel.caveat = cav ? kw_str_c(cav) : KW_STR_NULL;
        up.rel.caveat_ctx = ctx ? kw_str_c(ctx) : KW_STR_NULL;
        up.rel.expires_at = exp;
        rc = kw_engine_write(e, &up, 1, NULL, 0, 0, NULL, &d);
    }
    if (rc != KW_OK)
        fprintf(stderr, "  write %s: %s\n", text, d.msg);
    return rc;
}

/* Writes a random graph; doc d gets about d * 3 relationships, so the last ones hold
 * more than 8 edges (bisected) and the first ones at most 3 (in place). */
static int fill(kw_engine_t *e, rng_t *r)
{
    char t[128];
    for (int d = 0; d < NDOC; d++) {
        int n = 1 + d * 3 / 2 + (int)rnd(r, (uint32_t)(d + 1));
        for (int k = 0; k < n; k++) {
            int u = (int)rnd(r, NUSER - 2);
            const char *cav = NULL, *ctx = NULL;
            int64_t exp = 0;
            switch (rnd(r, 9)) {
            case 0:
            case 1:
                snprintf(t, sizeof(t), "doc:d%d#owner@user:u%d", d, u);
                break;
            case 2:
                snprintf(t, sizeof(t), "doc:d%d#viewer@user:u%d", d, u);
                break;
            case 3:
                snprintf(t, sizeof(t), "doc:d%d#viewer@%s", d,
                         rnd(r, 4) ? "user:*" : "group:g0#member");
                break;
            case 4:
                snprintf(t, sizeof(t), "doc:d%d#viewer@group:g%u#member", d, rnd(r, NGROUP));
                break;
            case 5:
                snprintf(t, sizeof(t), "doc:d%d#editor@user:u%d", d, u);
                if (rnd(r, 2)) {
                    cav = "over";
                    ctx = rnd(r, 2) ? "{\"x\": 9}" : NULL;
                } else {
                    exp = T0 + (rnd(r, 2) ? SEC : -SEC);
                }
                break;
            case 6:
                snprintf(t, sizeof(t), "doc:d%d#editor@user:u%d", d, u);
                break;
            case 7:
                snprintf(t, sizeof(t), "doc:d%d#parent@doc:d%u", d, rnd(r, NDOC));
                break;
            default:
                snprintf(t, sizeof(t), "group:g%u#member@user:u%d", rnd(r, NGROUP), u);
                break;
            }
            if (touch_one(e, t, cav, ctx, exp) != KW_OK)
                return -1;
        }
    }
    for (int k = 0; k < 4; k++) {
        snprintf(t, sizeof(t), "group:g%u#member@group:g%u#member", rnd(r, NGROUP), rnd(r, NGROUP));
        if (touch_one(e, t, NULL, NULL, 0) != KW_OK)
            return -1;
    }
    return 0;
}

/* kw_engine_check_bulk_ctx (its items take the fast path too) against the general
 * path, item by item: the items of one doc, with random contexts. */
static bool bulk_matches(kw_engine_t *e, kw_object_t o, const kw_subject_t *subj, int n_subj,
                         const char *const *rels, int n_rels, rng_t *r)
{
    static const char *ctxs[] = {"", "{\"x\": 1}", "{\"x\": 7}"};
    kw_check_item_t items[64];
    int n = 0;
    for (int s = 0; s < n_subj; s++)
        for (int ri = 0; ri < n_rels && n < 64; ri++) {
            memset(&items[n], 0, sizeof(items[n]));
            items[n].resource = o;
            items[n].permission = kw_str_c(rels[ri]);
            items[n].subject = subj[s];
            items[n].context = kw_str_c(ctxs[rnd(r, 3)]);
            n++;
        }
    kw_arena_t *a = kw_arena_new(0);
    if (!a || kw_engine_check_bulk_ctx(e, items, (size_t)n, a, NULL) != KW_OK) {
        kw_arena_free(a);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        kw_check_result_t b = KW_CHECK_NO;
        kw_buf_t mb;
        kw_buf_init(&mb);
        kw_diag_t d;
        kw_diag_clear(&d);
        int rb = kw__engine_check_general(e, items[i].resource, items[i].permission,
                                          items[i].subject, items[i].context, &b, &mb, NULL, &d);
        ok = rb == items[i].rc && (rb != KW_OK || b == items[i].result) &&
             mb.len == items[i].missing.len &&
             (mb.len == 0 || memcmp(mb.ptr, items[i].missing.ptr, mb.len) == 0);
        if (!ok)
            fprintf(stderr,
                    "  bulk item %d (%.*s#%.*s@%.*s:%.*s): rc %d res %d, general rc %d res %d\n", i,
                    KW_STR_FMT(o.id), KW_STR_FMT(items[i].permission),
                    KW_STR_FMT(items[i].subject.type), KW_STR_FMT(items[i].subject.id), items[i].rc,
                    (int)items[i].result, rb, (int)b);
        kw_buf_free(&mb);
    }
    kw_arena_free(a);
    return ok;
}

KW_TEST(check_direct_matches_general_on_random_graphs)
{
    static const char *rels[] = {"owner", "viewer", "editor", "parent", "view"};
    static const char *ctxs[] = {"", "{\"x\": 1}", "{\"x\": 7}"};
    long n = 0, yes = 0, cond = 0;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        rng_t r = {seed * 0x9e3779b97f4a7c15ULL};
        kw_engine_t *e = th_engine(SCHEMA);
        KW_ASSERT(e != NULL);
        kw_engine_set_clock(e, test_clock, NULL);
        KW_ASSERT_EQ(fill(e, &r), 0);
        char oid[16], sid[16];
        for (int d = 0; d < NDOC + 1; d++) { /* d == NDOC: a doc with no relationships */
            snprintf(oid, sizeof(oid), "d%d", d);
            kw_object_t o = {KW_STR("doc"), kw_str_c(oid)};
            for (int s = 0; s < NUSER + NGROUP + 2; s++) {
                kw_subject_t sj;
                if (s < NUSER) {
                    snprintf(sid, sizeof(sid), "u%d", s);
                    sj = (kw_subject_t){KW_STR("user"), kw_str_c(sid), KW_STR_NULL};
                } else if (s < NUSER + NGROUP) {
                    snprintf(sid, sizeof(sid), "g%d", s - NUSER);
                    sj = (kw_subject_t){KW_STR("group"), kw_str_c(sid), KW_STR("member")};
                } else { /* a doc as the subject set of itself or another */
                    snprintf(sid, sizeof(sid), "d%d", s == NUSER + NGROUP ? d : 0);
                    sj = (kw_subject_t){KW_STR("doc"), kw_str_c(sid), KW_STR("viewer")};
                }
                for (size_t ri = 0; ri < sizeof(rels) / sizeof(rels[0]); ri++) {
                    const char *ctx = ctxs[rnd(&r, 3)];
                    kw_check_result_t a = KW_CHECK_NO, b = KW_CHECK_NO;
                    kw_buf_t ma, mb;
                    kw_buf_init(&ma);
                    kw_buf_init(&mb);
                    kw_diag_t da, db;
                    kw_diag_clear(&da);
                    kw_diag_clear(&db);
                    int ra = kw_engine_check_ctx(e, o, kw_str_c(rels[ri]), sj, kw_str_c(ctx), &a,
                                                 &ma, NULL, &da);
                    int rb = kw__engine_check_general(e, o, kw_str_c(rels[ri]), sj, kw_str_c(ctx),
                                                      &b, &mb, NULL, &db);
                    bool same = ra == rb && (ra != KW_OK || a == b) && ma.len == mb.len &&
                                (ma.len == 0 || memcmp(ma.ptr, mb.ptr, ma.len) == 0);
                    if (!same)
                        fprintf(stderr,
                                "  seed %llu: doc:%s#%s@%.*s:%s#%.*s ctx '%s': fast rc %d res %d "
                                "[%.*s], general rc %d res %d [%.*s]\n",
                                (unsigned long long)seed, oid, rels[ri], KW_STR_FMT(sj.type), sid,
                                KW_STR_FMT(sj.relation), ctx, ra, (int)a, (int)ma.len,
                                ma.ptr ? ma.ptr : "", rb, (int)b, (int)mb.len,
                                mb.ptr ? mb.ptr : "");
                    kw_buf_free(&ma);
                    kw_buf_free(&mb);
                    KW_ASSERT(same);
                    n++;
                    yes += ra == KW_OK && a == KW_CHECK_YES;
                    cond += ra == KW_OK && a == KW_CHECK_CONDITIONAL;
                }
            }
        }
        /* The same through CheckBulk, for the first docs. */
        for (int d = 0; d < 4; d++) {
            char bid[16], uid[3][16];
            snprintf(bid, sizeof(bid), "d%d", d * 3);
            kw_subject_t subj[5];
            for (int k = 0; k < 3; k++) {
                snprintf(uid[k], sizeof(uid[k]), "u%u", rnd(&r, NUSER));
                subj[k] = (kw_subject_t){KW_STR("user"), kw_str_c(uid[k]), KW_STR_NULL};
            }
            subj[3] = (kw_subject_t){KW_STR("group"), KW_STR("g1"), KW_STR("member")};
            subj[4] = (kw_subject_t){KW_STR("doc"), kw_str_c(bid), KW_STR("viewer")};
            KW_ASSERT(
                bulk_matches(e, (kw_object_t){KW_STR("doc"), kw_str_c(bid)}, subj, 5, rels, 5, &r));
        }
        /* Time moves past the expiries: both paths must hide them alike. */
        clk_now = T0 + 2 * SEC;
        snprintf(oid, sizeof(oid), "d%u", rnd(&r, NDOC));
        for (int s = 0; s < NUSER; s++) {
            snprintf(sid, sizeof(sid), "u%d", s);
            kw_subject_t sj = {KW_STR("user"), kw_str_c(sid), KW_STR_NULL};
            kw_check_result_t a = KW_CHECK_NO, b = KW_CHECK_NO;
            kw_diag_t d;
            kw_diag_clear(&d);
            int ra = kw_engine_check(e, (kw_object_t){KW_STR("doc"), kw_str_c(oid)},
                                     KW_STR("editor"), sj, &a, NULL, &d);
            int rb =
                kw__engine_check_general(e, (kw_object_t){KW_STR("doc"), kw_str_c(oid)},
                                         KW_STR("editor"), sj, KW_STR_NULL, &b, NULL, NULL, &d);
            KW_ASSERT_EQ(ra, rb);
            KW_ASSERT_EQ((int)a, (int)b);
        }
        clk_now = T0;
        kw_engine_free(e);
    }
    fprintf(stderr, "  check direct: %ld checks, %ld yes, %ld conditional\n", n, yes, cond);
    /* the graphs must exercise both answers and the caveats */
    KW_ASSERT(yes > n / 20 && yes < n - n / 20);
    KW_ASSERT(cond > 0);
}
