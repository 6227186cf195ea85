/*
 * tests/unit/authz/lookup_ordered_test.c - the ordered LookupResources
 * (kw_engine_lookup_resources_ordered, lookup_ordered.c) against the unordered general
 * lookup sorted by id, on random relationships over a layered schema with caveats,
 * expiries, wildcards, subject sets, arrows, intersections and exclusions: from every
 * position (every id of the answer, ids between and around them), with limits, by both of
 * its ways (the index walk with checks, the set as a sorted list or a bitmap), chunk by
 * chunk with a kept stream across writes and across an expiry; and its id index
 * (graph_oidx.c) kept right across many creations and deletions (merges, tombstones,
 * reused node indices).
 */
#include <pthread.h>
#include <stdlib.h>

#include "authz/engine_int.h"
#include "engine_helpers.h"
#include "kw_test.h"

static const char *SCHEMA =
    "use expiration\n"
    "caveat cav1(a int) { a == 1 }\n"
    "caveat cav2(b int) { b == 1 }\n"
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | user with cav1 | user with expiration | group#member\n"
    "  relation admin: user\n"
    "  permission manage = admin + member\n"
    "}\n"
    "definition folder {\n"
    "  relation viewer: user | group#member | group#member with cav1 | user:*\n"
    "  relation owner: user with cav2 | group#manage\n"
    "  relation guest: user:* with cav2\n"
    "  permission view = viewer + owner + guest\n"
    "  permission edit = owner & viewer\n"
    "}\n"
    "definition doc {\n"
    "  relation parent: folder | folder with cav1 | folder with expiration\n"
    "  relation reader: user | group#member with cav2 | user with expiration\n"
    "  relation banned: user | user with cav1\n"
    "  permission read = (reader + parent->view) - banned\n"
    "  permission both = reader & parent->edit\n"
    "  permission every = parent.all(view)\n"
    "}\n";

static int64_t clock_now = 1900000000000000LL; /* 2030-03-17; moved by the expiry test */

static int64_t test_clock(void *ud)
{
    return *(const int64_t *)ud;
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

/* Object ids of varied lengths sharing prefixes, so byte order differs from numeric. */
static const char *IDS[] = {"0", "1", "10", "100", "2", "20", "3", "a", "ab", "abc", "b", "z"};
#define NIDS (sizeof(IDS) / sizeof(IDS[0]))

/* Rounds without expiring relationships (the kept answer is reused only without them). */
static bool no_expiry;

static void gen_rel(rng_t *r, char *out, size_t cap)
{
    static const char *c1s[] = {"[cav1:{\"a\":1}]", "[cav1]"};
    static const char *c2s[] = {"[cav2:{\"b\":2}]", "[cav2]"};
    static const char *exps[] = {"[expiration:2030-03-17T17:46:45Z]",
                                 "[expiration:2040-01-01T00:00:00Z]"};
    const char *o = IDS[rnd(r, NIDS)], *s = IDS[rnd(r, NIDS)];
    const char *c1 = c1s[rnd(r, 2)], *c2 = c2s[rnd(r, 2)], *ex = exps[rnd(r, 2)];
    if (no_expiry)
        ex = "";
    switch (rnd(r, 16)) {
    case 0:
        snprintf(out, cap, "group:g%s#member@user:u%s", o, s);
        break;
    case 1:
        snprintf(out, cap, "group:g%s#member@user:u%s%s", o, s, rnd(r, 2) ? c1 : ex);
        break;
    case 2:
        snprintf(out, cap, "group:g%s#member@group:g%s#member", o, s);
        break;
    case 3:
        snprintf(out, cap, "folder:f%s#guest@user:*%s", o, c2);
        break;
    case 4:
        snprintf(out, cap, "group:g%s#admin@user:u%s", o, s);
        break;
    case 5:
        snprintf(out, cap, "folder:f%s#viewer@user:u%s", o, s);
        break;
    case 6:
        snprintf(out, cap, "folder:f%s#viewer@group:g%s#member%s", o, s, rnd(r, 2) ? "" : c1);
        break;
    case 7:
        snprintf(out, cap, "folder:f%s#viewer@user:*", o);
        break;
    case 8:
        snprintf(out, cap, "folder:f%s#owner@user:u%s%s", o, s, c2);
        break;
    case 9:
        snprintf(out, cap, "folder:f%s#owner@group:g%s#manage", o, s);
        break;
    case 10:
    case 11:
        snprintf(out, cap, "doc:d%s#parent@folder:f%s%s", o, s,
                 rnd(r, 3) ? "" : (rnd(r, 2) ? c1 : ex));
        break;
    case 12:
        snprintf(out, cap, "doc:d%s#reader@user:u%s", o, s);
        break;
    case 13:
        snprintf(out, cap, "doc:d%s#reader@group:g%s#member%s", o, s, c2);
        break;
    case 14:
        snprintf(out, cap, "doc:d%s#reader@user:u%s%s", o, s, ex);
        break;
    default:
        snprintf(out, cap, "doc:d%s#banned@user:u%s%s", o, s, rnd(r, 2) ? "" : c1);
        break;
    }
}

/* An answer: results in the order received. */
typedef struct res {
    char id[48];
    char miss[24];
    bool cond;
} res_t;

typedef struct list {
    res_t v[4 * NIDS + 8];
    size_t n;
    int overflow;
} list_t;

static int collect(const kw_resource_result_t *r, void *ud)
{
    list_t *l = ud;
    if (l->n == sizeof(l->v) / sizeof(l->v[0])) {
        l->overflow++;
        return 0;
    }
    res_t *x = &l->v[l->n++];
    snprintf(x->id, sizeof(x->id), "%.*s", (int)r->id.len, r->id.ptr);
    snprintf(x->miss, sizeof(x->miss), "%.*s", (int)r->missing.len,
             r->missing.ptr ? r->missing.ptr : "");
    x->cond = r->conditional;
    return 0;
}

static int res_cmp(const void *a, const void *b)
{
    const res_t *x = a, *y = b;
    return kw__oidx_cmp(kw_str_c(x->id), kw_str_c(y->id));
}

/* The reference: the unordered general lookup, sorted. */
static int reference(kw_engine_t *e, const char *ty, const char *pm, kw_subject_t sj,
                     const char *ctx, list_t *out)
{
    memset(out, 0, sizeof(*out));
    kw_diag_t d;
    int rc = kw__engine_lookup_resources_path(e, kw_str_c(ty), kw_str_c(pm), sj, kw_str_c(ctx),
                                              KW__LK_GENERAL, collect, out, &d);
    if (out->n > 1)
        qsort(out->v, out->n, sizeof(res_t), res_cmp);
    return rc;
}

/* Does `got` equal the reference's results after `after` (NULL: all), at most limit? */
static bool same_after(const list_t *ref, const char *after, size_t limit, const list_t *got)
{
    size_t i = 0;
    while (after && i < ref->n && kw__oidx_cmp(kw_str_c(ref->v[i].id), kw_str_c(after)) <= 0)
        i++;
    size_t want = ref->n - i;
    if (limit && want > limit)
        want = limit;
    if (got->overflow || got->n != want)
        return false;
    for (size_t k = 0; k < want; k++) {
        const res_t *a = &ref->v[i + k], *b = &got->v[k];
        if (strcmp(a->id, b->id) || a->cond != b->cond || strcmp(a->miss, b->miss))
            return false;
    }
    return true;
}

static void dump(const char *what, const list_t *l)
{
    fprintf(stderr, "    %s:", what);
    for (size_t i = 0; i < l->n; i++)
        fprintf(stderr, " %s%s%s", l->v[i].id, l->v[i].cond ? "?" : "", l->v[i].miss);
    fprintf(stderr, "\n");
}

static const struct {
    const char *type, *perm;
} QS[] = {{"group", "member"}, {"group", "manage"}, {"folder", "view"}, {"folder", "edit"},
          {"doc", "read"},     {"doc", "both"},     {"doc", "every"},   {"folder", "owner"}};
static const char *CTXS[] = {"", "{\"a\": 1}", "{\"a\": 2, \"b\": 1}"};
static const char *SUBJECTS[] = {"user:u0",         "user:u1",         "user:u10", "user:ab",
                                 "group:g0#member", "group:gq#member", "user:*"};

/* "type:id" or "type:id#rel" as a subject (slices of the static string). */
static kw_subject_t subject_of(const char *s)
{
    const char *colon = strchr(s, ':'), *hash = strchr(s, '#');
    kw_subject_t sj;
    sj.type = (kw_str_t){s, (size_t)(colon - s)};
    sj.id = (kw_str_t){colon + 1, hash ? (size_t)(hash - colon - 1) : strlen(colon + 1)};
    sj.relation = hash ? kw_str_c(hash + 1) : KW_STR_NULL;
    return sj;
}

static kw_engine_t *random_engine(rng_t *r, int n)
{
    kw_engine_t *e = th_engine(SCHEMA);
    if (!e)
        return NULL;
    kw_engine_set_clock(e, test_clock, &clock_now);
    for (int i = 0; i < n; i++) {
        char buf[160];
        gen_rel(r, buf, sizeof(buf));
        const char *one[1] = {buf};
        kw_diag_t d;
        if (th_write_op(e, KW_OP_TOUCH, one, 1, &d) != KW_OK)
            abort();
    }
    return e;
}

/* One ordered call into a fresh list. */
static int ordered(kw_engine_t *e, const char *ty, const char *pm, kw_subject_t sj, const char *ctx,
                   const char *after, size_t limit, kw_lr_stream_t *s, list_t *out)
{
    memset(out, 0, sizeof(*out));
    kw_diag_t d;
    kw_str_t a = after ? kw_str_c(after) : KW_STR_NULL;
    return kw_engine_lookup_resources_ordered(e, kw_str_c(ty), kw_str_c(pm), sj, kw_str_c(ctx),
                                              after ? &a : NULL, limit, s, collect, out, NULL, &d);
}

KW_TEST(lookup_ordered_matches_sorted_general)
{
    /* How each call goes: walk (default), set as a list, set as a bitmap, walk giving up
     * at once (poor hit rate) then the set. */
    static const struct {
        size_t walk_max, probe;
        int shape;
    } modes[] = {{4096, 256, 0}, {0, 256, 1}, {0, 256, 2}, {4096, 0, 0}};
    static const size_t limits[] = {0, 1, 2, 3, 1000};
    rng_t r = {0x2545f4914f6cdd1dULL};
    long compared = 0, found = 0, cond = 0;
    for (int round = 0; round < 40; round++) {
        kw_engine_t *e = random_engine(&r, 10 + (int)rnd(&r, 60));
        KW_ASSERT(e != NULL);
        for (size_t si = 0; si < sizeof(SUBJECTS) / sizeof(SUBJECTS[0]); si++) {
            kw_subject_t sj = subject_of(SUBJECTS[si]);
            for (size_t qi = 0; qi < sizeof(QS) / sizeof(QS[0]); qi++)
                for (size_t ci = 0; ci < sizeof(CTXS) / sizeof(CTXS[0]); ci++) {
                    list_t ref;
                    int r0 = reference(e, QS[qi].type, QS[qi].perm, sj, CTXS[ci], &ref);
                    KW_ASSERT(!ref.overflow);
                    found += (long)ref.n;
                    for (size_t i = 0; i < ref.n; i++)
                        cond += ref.v[i].cond;
                    /* after: none, every result, and ids between / around them */
                    char afters[4 * NIDS + 16][48];
                    size_t na = 0;
                    for (size_t i = 0; i < ref.n; i++) {
                        snprintf(afters[na++], 48, "%s", ref.v[i].id);
                        snprintf(afters[na++], 48, "%s0", ref.v[i].id);
                    }
                    snprintf(afters[na++], 48, "%s", "");
                    snprintf(afters[na++], 48, "%s", "a");
                    snprintf(afters[na++], 48, "%s", "g1");
                    snprintf(afters[na++], 48, "%s", "~");
                    for (size_t mi = 0; mi < sizeof(modes) / sizeof(modes[0]); mi++)
                        for (size_t li = 0; li < sizeof(limits) / sizeof(limits[0]); li++)
                            for (size_t ai = 0; ai <= na; ai++) {
                                const char *after = ai == na ? NULL : afters[ai];
                                kw_lr_stream_t *s;
                                KW_ASSERT_EQ(kw_lr_stream_new(&s), KW_OK);
                                kw__lr_stream_tune(s, modes[mi].walk_max, modes[mi].probe,
                                                   modes[mi].shape);
                                list_t got;
                                int r1 = ordered(e, QS[qi].type, QS[qi].perm, sj, CTXS[ci], after,
                                                 limits[li], s, &got);
                                kw_lr_stream_free(s);
                                bool ok = r1 == r0 && (r0 != KW_OK ||
                                                       same_after(&ref, after, limits[li], &got));
                                if (!ok) {
                                    fprintf(stderr,
                                            "  round %d: %s#%s for %s ctx '%s' after '%s' limit "
                                            "%zu mode %zu: rc %d want %d\n",
                                            round, QS[qi].type, QS[qi].perm, SUBJECTS[si], CTXS[ci],
                                            after ? after : "(none)", limits[li], mi, r1, r0);
                                    dump("want", &ref);
                                    dump("got", &got);
                                    KW_ASSERT(false);
                                }
                                compared++;
                            }
                }
        }
        kw_engine_free(e);
    }
    fprintf(stderr, "  lookup ordered: %ld calls compared, %ld results, %ld conditional\n",
            compared, found, cond);
    KW_ASSERT(found > 1000 && cond > found / 20);
}

/* A stream: chunk after chunk from the last id, one kept kw_lr_stream_t, with writes and
 * the clock moving past an expiry between chunks; every chunk is what a fresh sorted
 * lookup says at that moment. */
KW_TEST(lookup_ordered_stream_across_writes_and_expiry)
{
    rng_t r = {0x853c49e6748fea9bULL};
    long chunks = 0, writes = 0;
    for (int round = 0; round < 300; round++) {
        clock_now = 1900000000000000LL;
        no_expiry = round % 2 == 0;
        kw_engine_t *e = random_engine(&r, 20 + (int)rnd(&r, 60));
        KW_ASSERT(e != NULL);
        size_t qi = rnd(&r, sizeof(QS) / sizeof(QS[0]));
        kw_subject_t sj = subject_of(SUBJECTS[rnd(&r, sizeof(SUBJECTS) / sizeof(SUBJECTS[0]))]);
        const char *ctx = CTXS[rnd(&r, sizeof(CTXS) / sizeof(CTXS[0]))];
        kw_lr_stream_t *s;
        KW_ASSERT_EQ(kw_lr_stream_new(&s), KW_OK);
        /* first call by the walk or by the set, then mostly the kept set */
        kw__lr_stream_tune(s, rnd(&r, 2) ? 4096 : 0, rnd(&r, 2) ? 256 : 0, (int)rnd(&r, 3));
        char last[24] = "";
        bool have_last = false;
        for (int k = 0; k < 40; k++) {
            size_t limit = 1 + rnd(&r, 3);
            list_t ref, got;
            int r0 = reference(e, QS[qi].type, QS[qi].perm, sj, ctx, &ref);
            int r1 = ordered(e, QS[qi].type, QS[qi].perm, sj, ctx, have_last ? last : NULL, limit,
                             s, &got);
            if (r1 != r0 ||
                (r0 == KW_OK && !same_after(&ref, have_last ? last : NULL, limit, &got))) {
                fprintf(stderr, "  round %d chunk %d: %s#%s after '%s' limit %zu\n", round, k,
                        QS[qi].type, QS[qi].perm, have_last ? last : "(none)", limit);
                dump("want", &ref);
                dump("got", &got);
                KW_ASSERT(false);
            }
            chunks++;
            if (got.n) {
                snprintf(last, sizeof(last), "%s", got.v[got.n - 1].id);
                have_last = true;
            } else if (rnd(&r, 2)) {
                have_last = false; /* start over */
            }
            /* between chunks: nothing, a write, a delete, or time passing an expiry */
            switch (rnd(&r, 4)) {
            case 0: {
                char buf[160];
                gen_rel(&r, buf, sizeof(buf));
                const char *one[1] = {buf};
                kw_diag_t d;
                KW_ASSERT_EQ(th_write_op(e, rnd(&r, 2) ? KW_OP_TOUCH : KW_OP_DELETE, one, 1, &d),
                             KW_OK);
                writes++;
                break;
            }
            case 1:
                clock_now += 3000000; /* 2030-03-17T17:46:45Z passes after two moves */
                break;
            default:
                break;
            }
        }
        kw_lr_stream_free(s);
        kw_engine_free(e);
    }
    no_expiry = false;
    fprintf(stderr, "  lookup ordered stream: %ld chunks, %ld writes between them\n", chunks,
            writes);
}

/* The id index across creations and deletions: merges of the delta, tombstones, node
 * indices freed and reused by other ids; an ordered lookup over all docs checks it. */
KW_TEST(lookup_ordered_index_maintenance)
{
    kw_engine_t *e = th_engine("definition user {}\n"
                               "definition doc { relation viewer: user\n"
                               "  permission view = viewer\n}\n");
    KW_ASSERT(e != NULL);
    rng_t r = {0x9e3779b97f4a7c15ULL};
    enum { NDOC = 12000 };
    static bool present[NDOC];
    memset(present, 0, sizeof(present));
    kw_subject_t sj = {KW_STR("user"), KW_STR("u"), KW_STR_NULL};
    /* ids "d<n>" sort by bytes, not by n */
    char buf[64];
    for (int i = 0; i < NDOC / 3; i++) {
        int k = (int)rnd(&r, NDOC);
        snprintf(buf, sizeof(buf), "doc:d%d#viewer@user:u", k);
        KW_ASSERT_EQ(th_touch1(e, buf), KW_OK);
        present[k] = true;
    }
    long checked = 0;
    for (int step = 0; step < 30; step++) {
        /* the lookup (builds the index the first time) */
        kw_lr_stream_t *s;
        KW_ASSERT_EQ(kw_lr_stream_new(&s), KW_OK);
        kw__lr_stream_tune(s, 1u << 30, 1u << 30, 0); /* the walk over the whole index */
        char prev[32] = "";
        size_t n = 0;
        bool have = false;
        for (;;) {
            list_t got;
            kw_str_t a = kw_str_c(prev);
            memset(&got, 0, sizeof(got));
            kw_diag_t d;
            KW_ASSERT_EQ(kw_engine_lookup_resources_ordered(e, KW_STR("doc"), KW_STR("view"), sj,
                                                            KW_STR_NULL, have ? &a : NULL, 50, s,
                                                            collect, &got, NULL, &d),
                         KW_OK);
            for (size_t i = 0; i < got.n; i++) {
                KW_ASSERT(!have || kw__oidx_cmp(kw_str_c(prev), kw_str_c(got.v[i].id)) < 0);
                int k = atoi(got.v[i].id + 1);
                KW_ASSERT(k >= 0 && k < NDOC && present[k]);
                snprintf(prev, sizeof(prev), "%s", got.v[i].id);
                have = true;
                n++;
            }
            if (got.n < 50)
                break;
        }
        kw_lr_stream_free(s);
        size_t want = 0;
        for (int k = 0; k < NDOC; k++)
            want += present[k];
        KW_ASSERT_EQ(n, want);
        checked += (long)n;
        /* changes: many creations (past the delta's merge size) and deletions (nodes
         * freed, their indices reused by the next creations) */
        int adds = step % 3 == 0 ? 5000 : 300, dels = 400;
        for (int i = 0; i < dels; i++) {
            int k = (int)rnd(&r, NDOC);
            snprintf(buf, sizeof(buf), "doc:d%d#viewer@user:u", k);
            const char *one[1] = {buf};
            kw_diag_t d;
            KW_ASSERT_EQ(th_write_op(e, KW_OP_DELETE, one, 1, &d), KW_OK);
            present[k] = false;
        }
        const char *batch[64];
        char bufs[64][48];
        int nb = 0;
        for (int i = 0; i < adds; i++) {
            int k = (int)rnd(&r, NDOC);
            bool dup = false;
            for (int j = 0; j < nb; j++)
                dup = dup || atoi(bufs[j] + 5) == k;
            if (dup)
                continue;
            snprintf(bufs[nb], sizeof(bufs[nb]), "doc:d%d#viewer@user:u", k);
            batch[nb] = bufs[nb];
            nb++;
            present[k] = true;
            if (nb == 64) {
                kw_diag_t d;
                KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, batch, (size_t)nb, &d), KW_OK);
                nb = 0;
            }
        }
        if (nb) {
            kw_diag_t d;
            KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, batch, (size_t)nb, &d), KW_OK);
        }
    }
    fprintf(stderr, "  lookup ordered index: %ld ids walked in order\n", checked);
    kw_engine_free(e);
}

/* Readers racing: several threads start ordered streams of one type at once (one builds the
 * index, the others wait for it or walk it) while a writer creates and deletes objects of
 * that type; every chunk is strictly ordered, every id is a doc that exists or existed, and
 * nothing fails (ThreadSanitizer/ASan builds check the rest). */
typedef struct race {
    kw_engine_t *e;
    int chunks, bad;
} race_t;

static void *race_reader(void *ud)
{
    race_t *r = ud;
    kw_subject_t sj = {KW_STR("user"), KW_STR("u"), KW_STR_NULL};
    for (int round = 0; round < 20; round++) {
        kw_lr_stream_t *s;
        if (kw_lr_stream_new(&s) != KW_OK) {
            r->bad++;
            return NULL;
        }
        if (round % 2)
            kw__lr_stream_tune(s, 0, 256, 0); /* by the kept set */
        char prev[32] = "";
        bool have = false;
        for (;;) {
            list_t got;
            memset(&got, 0, sizeof(got));
            kw_str_t a = kw_str_c(prev);
            kw_diag_t d;
            if (kw_engine_lookup_resources_ordered(r->e, KW_STR("doc"), KW_STR("view"), sj,
                                                   KW_STR_NULL, have ? &a : NULL, 50, s, collect,
                                                   &got, NULL, &d) != KW_OK) {
                r->bad++;
                break;
            }
            r->chunks++;
            for (size_t i = 0; i < got.n; i++) {
                if ((have && kw__oidx_cmp(kw_str_c(prev), kw_str_c(got.v[i].id)) >= 0) ||
                    got.v[i].id[0] != 'd')
                    r->bad++;
                snprintf(prev, sizeof(prev), "%s", got.v[i].id);
                have = true;
            }
            if (got.n < 50)
                break;
        }
        kw_lr_stream_free(s);
    }
    return NULL;
}

KW_TEST(lookup_ordered_concurrent_build_and_writes)
{
    kw_engine_t *e = th_engine("definition user {}\n"
                               "definition doc { relation viewer: user\n"
                               "  permission view = viewer\n}\n");
    KW_ASSERT(e != NULL);
    char bufs[64][48];
    const char *batch[64];
    for (int i = 0; i < 3000; i += 64) {
        int nb = 0;
        for (int k = i; k < i + 64 && k < 3000; k++) {
            snprintf(bufs[nb], sizeof(bufs[nb]), "doc:d%d#viewer@user:u", k);
            batch[nb] = bufs[nb];
            nb++;
        }
        kw_diag_t d;
        KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, batch, (size_t)nb, &d), KW_OK);
    }
    race_t rs[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        rs[i] = (race_t){e, 0, 0};
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, race_reader, &rs[i]), 0);
    }
    rng_t r = {0x1234567ULL};
    for (int i = 0; i < 2000; i++) {
        char buf[48];
        snprintf(buf, sizeof(buf), "doc:d%u#viewer@user:u", rnd(&r, 6000));
        const char *one[1] = {buf};
        kw_diag_t d;
        KW_ASSERT_EQ(th_write_op(e, rnd(&r, 2) ? KW_OP_TOUCH : KW_OP_DELETE, one, 1, &d), KW_OK);
    }
    int chunks = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        KW_ASSERT_EQ(rs[i].bad, 0);
        chunks += rs[i].chunks;
    }
    fprintf(stderr, "  lookup ordered race: %d chunks read beside 2,000 writes\n", chunks);
    kw_engine_free(e);
}

/* The index build's radix sort (over 4,096 ids) with ids that share their first 8 or 16
 * bytes or more, of every length around those bounds: the order is strict and complete. */
static void build_long_prefixes(int *kw_failed_, const char *const *pre, int npre)
{
    kw_engine_t *e = th_engine("definition user {}\n"
                               "definition doc { relation viewer: user\n"
                               "  permission view = viewer\n}\n");
    KW_ASSERT(e != NULL);
    rng_t r = {0xabcdef12345ULL};
    char bufs[64][96];
    const char *batch[64];
    int nb = 0, total = 0;
    for (int i = 0; i < 12000; i++) {
        snprintf(bufs[nb], sizeof(bufs[nb]), "doc:%s%u#viewer@user:u", pre[i % npre],
                 i % 3 ? (unsigned)i : rnd(&r, 1000000));
        bool dup = false;
        for (int j = 0; j < nb; j++)
            dup = dup || !strcmp(bufs[j], bufs[nb]);
        if (dup)
            continue;
        batch[nb] = bufs[nb];
        nb++;
        if (nb == 64) {
            kw_diag_t d;
            KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, batch, (size_t)nb, &d), KW_OK);
            nb = 0;
        }
    }
    if (nb) {
        kw_diag_t d;
        KW_ASSERT_EQ(th_write_op(e, KW_OP_TOUCH, batch, (size_t)nb, &d), KW_OK);
    }
    /* every doc, in order, by the walk (builds the index) */
    kw_subject_t sj = {KW_STR("user"), KW_STR("u"), KW_STR_NULL};
    list_t ref;
    KW_ASSERT_EQ(reference(e, "doc", "view", sj, "", &ref), KW_OK); /* overflows: count only */
    kw_lr_stream_t *s;
    KW_ASSERT_EQ(kw_lr_stream_new(&s), KW_OK);
    kw__lr_stream_tune(s, 1u << 30, 1u << 30, 0);
    char prev[96] = "";
    bool have = false;
    for (;;) {
        list_t got;
        memset(&got, 0, sizeof(got));
        kw_str_t a = kw_str_c(prev);
        kw_diag_t d;
        KW_ASSERT_EQ(kw_engine_lookup_resources_ordered(e, KW_STR("doc"), KW_STR("view"), sj,
                                                        KW_STR_NULL, have ? &a : NULL, 50, s,
                                                        collect, &got, NULL, &d),
                     KW_OK);
        for (size_t i = 0; i < got.n; i++) {
            KW_ASSERT(!have || kw__oidx_cmp(kw_str_c(prev), kw_str_c(got.v[i].id)) < 0);
            snprintf(prev, sizeof(prev), "%s", got.v[i].id);
            have = true;
            total++;
        }
        if (got.n < 50)
            break;
    }
    kw_lr_stream_free(s);
    KW_ASSERT_EQ((size_t)total, ref.n + (size_t)ref.overflow);
    KW_ASSERT(total > 10000);
    kw_engine_free(e);
}

KW_TEST(lookup_ordered_index_build_long_prefixes)
{
    static const char *pre[] = {
        "", "p", "prefix-", "prefix-8", "prefix-shared-16", "prefix-shared-16-and-more-", "zz"};
    build_long_prefixes(kw_failed_, pre, 7);
    /* one prefix for all: a single run of equal first words, longer than half the ids */
    static const char *one[] = {"prefix-shared-16-and-more-"};
    build_long_prefixes(kw_failed_, one, 1);
}
