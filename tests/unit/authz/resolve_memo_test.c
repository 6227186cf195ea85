/*
 * tests/unit/authz/resolve_memo_test.c - kw__resolve_rel_memo (the write path's fast
 * resolution of repeated name tuples) against kw__resolve_rel: random relationships mixing
 * good and bad names, ids, wildcards, subject relations, caveats and expiries must give the
 * same code, the same indexes and the same message, whatever the memo remembers.
 */
#include <stdio.h>

#include "authz/engine_int.h"
#include "authz/schema.h"
#include "kw_test.h"

static const char k_schema[] = "use expiration\n"
                               "caveat c1(x int) { x > 1 }\n"
                               "definition user {}\n"
                               "definition group {\n"
                               "  relation member: user | group#member\n"
                               "}\n"
                               "definition doc {\n"
                               "  relation viewer: user | user:* | group#member | user with c1\n"
                               "  relation editor: user | user with expiration\n"
                               "  permission view = viewer + editor\n"
                               "}\n";

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)((rng >> 11) % n);
}

/* Names from a pool, some as separate copies so the memo compares bytes, not pointers. */
static kw_str_t pick(const char *const *pool, uint32_t n, char (*copy)[16])
{
    const char *s = pool[rnd(n)];
    if (rnd(4) == 0) {
        snprintf(*copy, sizeof(*copy), "%s", s);
        return kw_str_c(*copy);
    }
    return kw_str_c(s);
}

KW_TEST(resolve_memo_matches_full_resolution)
{
    static const char *const rtypes[] = {"doc", "doc", "doc", "group", "nope"};
    static const char *const rels[] = {"viewer", "viewer", "editor", "member", "view", "nope"};
    static const char *const stypes[] = {"user", "user", "user", "group", "doc"};
    static const char *const srels[] = {"", "", "", "...", "member", "nope"};
    static const char *const ids[] = {"a", "b", "a_1", "x/y|z-=+", "*", "", "bad id", "ok"};
    static const char *const caveats[] = {"", "", "", "", "c1", "c2"};
    kw_schema_t *s = NULL;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_schema_compile(kw_str_c(k_schema), &s, &d), KW_OK);
    size_t ok = 0, hits = 0;
    for (int round = 0; round < 50; round++) {
        kw_resolve_memo_t memo = {0};
        /* The memo borrows names: like a batch's, they stay put for the round. */
        static char copies[400][4][16];
        for (int i = 0; i < 400; i++) {
            char(*c)[16] = copies[i];
            kw_rel_t r = {0};
            r.resource.type = pick(rtypes, 5, &c[0]);
            r.relation = pick(rels, 6, &c[1]);
            r.subject.type = pick(stypes, 5, &c[2]);
            r.subject.relation = pick(srels, 6, &c[3]);
            r.resource.id = kw_str_c(ids[rnd(8)]);
            r.subject.id = kw_str_c(ids[rnd(8)]);
            r.caveat = kw_str_c(caveats[rnd(6)]);
            if (rnd(8) == 0)
                r.caveat_ctx = KW_STR("{\"x\": 3}");
            uint32_t e = rnd(10);
            r.expires_at = e == 0 ? 1900000000 : e == 1 ? -1 : 0;
            kw_rrel_t full, fast;
            kw_diag_t df, dm;
            kw_diag_clear(&df);
            kw_diag_clear(&dm);
            unsigned n_before = memo.n, next_before = memo.next;
            int rf = kw__resolve_rel(s, &r, &full, &df);
            int rm = kw__resolve_rel_memo(s, &r, &fast, &memo, &dm);
            KW_ASSERT_EQ(rm, rf);
            if (rf != KW_OK) {
                KW_ASSERT_STR_EQ(dm.msg, df.msg);
                continue;
            }
            ok++;
            /* A plain success the memo did not answer always takes the next entry. */
            bool plain = !r.caveat.len && !r.caveat_ctx.len && !r.expires_at && !full.wild;
            hits += plain && memo.n == n_before && memo.next == next_before;
            KW_ASSERT_EQ(fast.rtype, full.rtype);
            KW_ASSERT_EQ(fast.rel, full.rel);
            KW_ASSERT_EQ(fast.stype, full.stype);
            KW_ASSERT_EQ(fast.srel, full.srel);
            KW_ASSERT_EQ(fast.wild, full.wild);
            KW_ASSERT_EQ(fast.caveat, full.caveat);
        }
    }
    /* The mix exercises both paths: successes, and a memo that answered. */
    KW_ASSERT(ok > 500);
    KW_ASSERT(hits > 100);
    kw_schema_free(s);
}
