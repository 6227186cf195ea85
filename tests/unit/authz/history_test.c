/*
 * tests/unit/authz/history_test.c - answers as of an older revision (authz/history.c): on
 * random graphs with caveats, expiries, wildcards and subject sets, written by random
 * batches of CREATE / TOUCH / DELETE and deletes by filter, the snapshot at every earlier
 * revision R holds exactly the state recorded at R and answers every check and lookup
 * like a fresh engine loaded with that state; the window (changes kept, schema writes,
 * restarts, batches too large) refuses what it cannot rebuild with KW_EEXPIRED; snapshots
 * are cached and outlive their eviction while held.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_helpers.h"
#include "kw_test.h"

static const char *SCHEMA = "use expiration\n"
                            "caveat okay(allowed bool) { allowed }\n"
                            "definition user {}\n"
                            "definition group {\n"
                            "  relation member: user | group#member | user with okay\n"
                            "}\n"
                            "definition doc {\n"
                            "  relation viewer: user | user:* | group#member | user with okay | "
                            "user with expiration\n"
                            "  relation banned: user\n"
                            "  permission view = viewer - banned\n"
                            "}\n";

/* The engines' clock: fixed, moved by the test. */
static int64_t now_us = 1700000000000000LL;
static int64_t clock_fn(void *ud)
{
    (void)ud;
    return now_us;
}

#define N_DOCS 6
#define N_USERS 5
#define N_GROUPS 3

/* A random relationship of the universe, as a string. */
static void rand_rel(unsigned *seed, char *buf, size_t cap, bool with_attrs)
{
    int kind = rand_r(seed) % 6;
    int d = rand_r(seed) % N_DOCS, u = rand_r(seed) % N_USERS, g = rand_r(seed) % N_GROUPS;
    int attr = with_attrs ? rand_r(seed) % 5 : 0;
    char tail[96] = "";
    if (attr == 1)
        snprintf(tail, sizeof(tail), "[okay:{\"allowed\":%s}]",
                 rand_r(seed) % 2 ? "true" : "false");
    else if (attr == 2)
        snprintf(tail, sizeof(tail), "[okay]");
    switch (kind) {
    case 0:
        snprintf(buf, cap, "doc:d%d#viewer@user:u%d%s", d, u, tail);
        break;
    case 1: { /* expiring: some soon (expired once the clock moves), some late */
        time_t t = (time_t)(now_us / 1000000) + (rand_r(seed) % 2 ? 50 : 5000);
        struct tm tm;
        gmtime_r(&t, &tm);
        char ts[40];
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(buf, cap, "doc:d%d#viewer@user:u%d[expiration:%s]", d, u, ts);
        break;
    }
    case 2:
        snprintf(buf, cap, "doc:d%d#viewer@group:g%d#member", d, g);
        break;
    case 3:
        if (rand_r(seed) % 4)
            snprintf(buf, cap, "group:g%d#member@user:u%d%s", g, u, tail);
        else
            snprintf(buf, cap, "doc:d%d#viewer@user:*", d);
        break;
    case 4:
        snprintf(buf, cap, "doc:d%d#banned@user:u%d", d, u);
        break;
    default:
        snprintf(buf, cap, "group:g%d#member@group:g%d#member", g, (g + 1) % N_GROUPS);
        break;
    }
}

/* The whole state as text: every relationship (caveat, context, expiry) sorted by type. */
typedef struct dump {
    kw_buf_t b;
} dump_t;

static int dump_cb(const kw_rel_t *r, void *ud)
{
    kw_buf_t *b = ud;
    kw_rel_format(r, b);
    kw_buf_append(b, "\n", 1);
    return 0;
}

static char *dump_state(kw_engine_t *e)
{
    kw_buf_t b;
    kw_buf_init(&b);
    const char *types[] = {"doc", "group"};
    for (size_t i = 0; i < 2; i++) {
        kw_filter_t f = {0};
        f.resource_type = kw_str_c(types[i]);
        if (kw_engine_read(e, &f, dump_cb, &b, NULL, NULL) != KW_OK)
            return NULL;
    }
    kw_buf_append(&b, "", 1);
    return b.failed ? NULL : b.ptr;
}

/* A fresh engine holding exactly the relationships of `dump` (one per line; expiries past
 * are kept, as a store's replay keeps them). */
static kw_engine_t *fresh_from(const char *dump)
{
    kw_engine_t *e = th_engine(SCHEMA);
    if (!e)
        return NULL;
    kw_engine_set_clock(e, clock_fn, NULL);
    const char *p = dump;
    kw_revision_t at = 1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        kw_update_t up = {.op = KW_OP_TOUCH};
        kw_diag_t d;
        kw_diag_clear(&d);
        if (kw_rel_parse((kw_str_t){p, (size_t)(nl - p)}, &up.rel, &d) != KW_OK ||
            kw_engine_write(e, &up, 1, NULL, 0, ++at, NULL, &d) != KW_OK) {
            fprintf(stderr, "  fresh: %s\n", d.msg);
            kw_engine_free(e);
            return NULL;
        }
        p = nl + 1;
    }
    return e;
}

/* Every check of doc#view, doc#viewer and group#member for every user, with and without a
 * context, and the lookups, as one string. */
static char *answers(kw_engine_t *e)
{
    kw_buf_t b;
    kw_buf_init(&b);
    char q[128];
    const char *ctxs[] = {"", "{\"allowed\":true}"};
    for (int c = 0; c < 2; c++) {
        for (int d = 0; d < N_DOCS; d++) {
            for (int u = 0; u < N_USERS; u++) {
                const char *perms[] = {"view", "viewer"};
                for (int p = 0; p < 2; p++) {
                    kw_object_t res = {KW_STR("doc"), KW_STR_NULL};
                    snprintf(q, sizeof(q), "d%d", d);
                    res.id = kw_str_c(q);
                    char uid[16];
                    snprintf(uid, sizeof(uid), "u%d", u);
                    kw_subject_t s = {KW_STR("user"), kw_str_c(uid), KW_STR_NULL};
                    kw_check_result_t r = KW_CHECK_NO;
                    int rc = kw_engine_check_ctx(e, res, kw_str_c(perms[p]), s, kw_str_c(ctxs[c]),
                                                 &r, NULL, NULL, NULL);
                    char line[64];
                    snprintf(line, sizeof(line), "%d%d", rc, (int)r);
                    kw_buf_append(&b, line, strlen(line));
                }
            }
        }
        for (int u = 0; u < N_USERS; u++) {
            char uid[16];
            snprintf(uid, sizeof(uid), "u%d", u);
            th_ids_t ids = {0};
            kw_subject_t s = {KW_STR("user"), kw_str_c(uid), KW_STR_NULL};
            int rc = kw_engine_lookup_resources(e, KW_STR("doc"), KW_STR("view"), s, th_ids_cb,
                                                &ids, NULL, NULL);
            char buf[2048];
            snprintf(q, sizeof(q), "|%d:", rc);
            kw_buf_append(&b, q, strlen(q));
            th_ids_join(&ids, buf, sizeof(buf));
            kw_buf_append(&b, buf, strlen(buf));
        }
    }
    kw_buf_append(&b, "", 1);
    return b.failed ? NULL : b.ptr;
}

#define ROUNDS 60

/* named: revisions are asked by names with gaps (as a store's, which the engine's own
 * revisions lead after schema swaps), also between two names. */
static void random_graphs(int *kw_failed_, bool named)
{
    for (unsigned seed0 = 1; seed0 <= 12; seed0++) {
        unsigned seed = seed0;
        now_us = 1700000000000000LL;
        kw_engine_t *e = th_engine(SCHEMA);
        KW_ASSERT(e);
        kw_engine_set_clock(e, clock_fn, NULL);
        kw_engine_set_history(e, 3600LL * 1000000, 100000, 2, (size_t)1 << 30);
        kw_revision_t revs[ROUNDS + 1];
        char *dumps[ROUNDS + 1];
        kw_revision_t name = 1000;
        if (named) { /* the engine's own revisions lead: another schema swap first */
            kw_diag_t d0;
            kw_diag_clear(&d0);
            KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(SCHEMA), NULL, &d0), KW_OK);
            KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(SCHEMA), NULL, &d0), KW_OK);
            kw_engine_history_name(e, name);
        }
        revs[0] = named ? name : kw_engine_revision(e);
        dumps[0] = dump_state(e);
        KW_ASSERT(dumps[0]);
        size_t n = 1;
        for (int round = 0; round < ROUNDS; round++) {
            kw_diag_t d;
            kw_diag_clear(&d);
            if (rand_r(&seed) % 8 == 0) { /* a delete by filter */
                kw_filter_t f = {0};
                char id[8];
                snprintf(id, sizeof(id), "d%d", rand_r(&seed) % N_DOCS);
                f.resource_type = KW_STR("doc");
                f.resource_id = kw_str_c(id);
                KW_ASSERT_EQ(kw_engine_delete_matching(e, &f, NULL, 0, 0, 0, NULL, NULL, &d),
                             KW_OK);
            } else {
                char bufs[8][160];
                const char *v[8];
                size_t m = 1 + (size_t)(rand_r(&seed) % 6);
                kw_op_t op = rand_r(&seed) % 3 == 0 ? KW_OP_DELETE : KW_OP_TOUCH;
                size_t k = 0;
                for (size_t i = 0; i < m; i++) {
                    rand_rel(&seed, bufs[k], sizeof(bufs[k]), op != KW_OP_DELETE);
                    /* no duplicates in a batch (same identity, maybe other attributes) */
                    bool dup = false;
                    for (size_t j = 0; j < k; j++) {
                        size_t la = strcspn(bufs[j], "["), lb = strcspn(bufs[k], "[");
                        dup |= la == lb && memcmp(bufs[j], bufs[k], la) == 0;
                    }
                    if (!dup)
                        v[k] = bufs[k], k++;
                }
                int rc = th_write_op(e, op, v, k, &d);
                KW_ASSERT(rc == KW_OK);
            }
            if (round == ROUNDS / 2)
                now_us += 100LL * 1000000; /* the soon-expiring ones are past now */
            if (named) {
                name += 1 + (kw_revision_t)(rand_r(&seed) % 3);
                kw_engine_history_name(e, name);
            }
            revs[n] = named ? name : kw_engine_revision(e);
            dumps[n] = dump_state(e);
            KW_ASSERT(dumps[n]);
            n++;
        }
        /* Later still: snapshots judge expiries at query time, as the live engine does. */
        now_us += 60LL * 1000000;
        for (size_t i = 0; i < 2 * n - 1; i++) {
            /* odd i (named): a name between two changes, the state of the earlier one */
            if (i % 2 && (!named || revs[i / 2 + 1] - revs[i / 2] < 2))
                continue;
            kw_revision_t at = i % 2 ? revs[i / 2] + 1 : revs[i / 2];
            const char *want_dump = dumps[i / 2];
            kw_snapshot_t *s = NULL;
            kw_diag_t d;
            kw_diag_clear(&d);
            KW_ASSERT_EQ(kw_engine_snapshot(e, at, &s, &d), KW_OK);
            kw_engine_t *se = kw_snapshot_engine(s);
            if (!named)
                KW_ASSERT_EQ(kw_engine_revision(se), revs[i / 2]);
            kw_engine_t *fe = fresh_from(want_dump);
            KW_ASSERT(fe);
            char *a = dump_state(se), *b = dump_state(fe);
            KW_ASSERT(a && b);
            if (strcmp(a, b) != 0)
                fprintf(stderr, "  seed %u rev %llu:\nsnapshot:\n%s\nexpected:\n%s\n", seed0,
                        (unsigned long long)at, a, b);
            KW_ASSERT_STR_EQ(a, b);
            free(a);
            free(b);
            a = answers(se);
            b = answers(fe);
            KW_ASSERT(a && b);
            KW_ASSERT_STR_EQ(a, b);
            free(a);
            free(b);
            kw_engine_free(fe);
            kw_snapshot_release(s);
        }
        /* The live engine is untouched by all of it. */
        char *live = dump_state(e);
        kw_engine_t *fe = fresh_from(dumps[n - 1]);
        char *want = dump_state(fe);
        KW_ASSERT_STR_EQ(live, want);
        free(live);
        free(want);
        kw_engine_free(fe);
        if (named) { /* before the first name and after the last: refused / current */
            kw_snapshot_t *s = NULL;
            kw_diag_t d;
            kw_diag_clear(&d);
            KW_ASSERT_EQ(kw_engine_snapshot(e, revs[0] - 1, &s, &d), KW_EEXPIRED);
            KW_ASSERT_EQ(kw_engine_snapshot(e, name + 1, &s, &d), KW_EINVAL);
        }
        for (size_t i = 0; i < n; i++)
            free(dumps[i]);
        kw_engine_free(e);
    }
}

KW_TEST(history_snapshot_equals_fresh_engine_on_random_graphs)
{
    random_graphs(kw_failed_, false);
}

KW_TEST(history_snapshot_by_store_names_on_random_graphs)
{
    random_graphs(kw_failed_, true);
}

KW_TEST(history_window_refuses_what_it_cannot_rebuild)
{
    now_us = 1700000000000000LL;
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_snapshot_t *s = NULL;
    /* Off by default: only the current revision. */
    KW_ASSERT_EQ(th_touch1(e, "doc:d0#viewer@user:u0"), KW_OK);
    kw_revision_t r1 = kw_engine_revision(e);
    KW_ASSERT_EQ(th_touch1(e, "doc:d0#viewer@user:u1"), KW_OK);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r1, &s, &d), KW_EEXPIRED);

    /* A restart (set_history) starts the window at the current revision. */
    kw_engine_set_history(e, 3600LL * 1000000, 4, 1, (size_t)1 << 30);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r1, &s, &d), KW_EEXPIRED);
    KW_ASSERT(strstr(d.msg, "this instance started") != NULL);
    kw_revision_t r2 = kw_engine_revision(e);
    KW_ASSERT_EQ(th_touch1(e, "doc:d1#viewer@user:u0"), KW_OK);
    kw_revision_t r3 = kw_engine_revision(e);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r2, &s, &d), KW_OK);
    KW_ASSERT_EQ(th_check(kw_snapshot_engine(s), "doc:d1#viewer@user:u0"), 0);
    KW_ASSERT_EQ(th_check(kw_snapshot_engine(s), "doc:d0#viewer@user:u1"), 1);
    /* Cached: the same snapshot again, which lives on after eviction while held. */
    kw_snapshot_t *s2 = NULL;
    KW_ASSERT_EQ(kw_engine_snapshot(e, r2, &s2, &d), KW_OK);
    KW_ASSERT(s2 == s);
    kw_snapshot_release(s2);
    kw_snapshot_t *s3 = NULL;
    KW_ASSERT_EQ(kw_engine_snapshot(e, r3, &s3, &d), KW_OK); /* evicts r2's (1 cached) */
    KW_ASSERT_EQ(th_check(kw_snapshot_engine(s3), "doc:d1#viewer@user:u0"), 1);
    KW_ASSERT_EQ(th_check(kw_snapshot_engine(s), "doc:d1#viewer@user:u0"), 0);
    kw_history_info_t info;
    kw_engine_history_info(e, &info);
    KW_ASSERT_EQ(info.n_snapshots, 1);
    KW_ASSERT_EQ(info.n_changes, 1);
    kw_snapshot_release(s);
    kw_snapshot_release(s3);

    /* At most 4 changes: 1 + 3 fit; 2 more push out whole batches, oldest first, until
     * at most 4 are left (here both older ones). */
    const char *b3[] = {"doc:d2#viewer@user:u0", "doc:d2#viewer@user:u1", "doc:d2#viewer@user:u2",
                        NULL};
    const char *b2[] = {"doc:d3#viewer@user:u0", "doc:d3#viewer@user:u1", NULL};
    KW_ASSERT_EQ(th_touch(e, b3), KW_OK);
    kw_revision_t r4 = kw_engine_revision(e);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r2, &s, &d), KW_OK);
    KW_ASSERT_EQ(th_check(kw_snapshot_engine(s), "doc:d2#viewer@user:u1"), 0);
    kw_snapshot_release(s);
    KW_ASSERT_EQ(th_touch(e, b2), KW_OK);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r2, &s, &d), KW_EEXPIRED);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r3, &s, &d), KW_EEXPIRED);
    KW_ASSERT(strstr(d.msg, "retention window") != NULL);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r4, &s, &d), KW_OK);
    KW_ASSERT_EQ(th_check(kw_snapshot_engine(s), "doc:d3#viewer@user:u0"), 0);
    KW_ASSERT_EQ(th_check(kw_snapshot_engine(s), "doc:d2#viewer@user:u2"), 1);
    kw_snapshot_release(s);

    /* A batch larger than the window: the window restarts after it. */
    const char *b5[] = {"doc:d4#viewer@user:u0", "doc:d4#viewer@user:u1", "doc:d4#viewer@user:u2",
                        "doc:d4#viewer@user:u3", "doc:d4#viewer@user:u4", NULL};
    kw_revision_t r5 = kw_engine_revision(e);
    KW_ASSERT_EQ(th_touch(e, b5), KW_OK);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r5, &s, &d), KW_EEXPIRED);
    KW_ASSERT(strstr(d.msg, "larger than the whole window") != NULL);

    /* A schema write: the window restarts at its revision. */
    kw_revision_t r6 = kw_engine_revision(e);
    KW_ASSERT_EQ(th_touch1(e, "doc:d5#viewer@user:u0"), KW_OK);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r6, &s, &d), KW_OK);
    kw_snapshot_release(s);
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(SCHEMA), NULL, &d), KW_OK);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r6, &s, &d), KW_EEXPIRED);
    KW_ASSERT(strstr(d.msg, "schema was written") != NULL);
    /* The current revision is always within it; a newer one is not a snapshot. */
    KW_ASSERT_EQ(kw_engine_snapshot(e, kw_engine_revision(e), &s, &d), KW_OK);
    kw_snapshot_release(s);
    KW_ASSERT_EQ(kw_engine_snapshot(e, kw_engine_revision(e) + 1, &s, &d), KW_EINVAL);
    kw_engine_free(e);
}

KW_TEST(history_time_window_drops_old_changes)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    kw_engine_set_history(e, 1, 1000, 2, (size_t)1 << 30); /* 1 microsecond */
    kw_revision_t r0 = kw_engine_revision(e);
    KW_ASSERT_EQ(th_touch1(e, "doc:d0#viewer@user:u0"), KW_OK);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    KW_ASSERT_EQ(th_touch1(e, "doc:d0#viewer@user:u1"), KW_OK);
    kw_snapshot_t *s = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_snapshot(e, r0, &s, &d), KW_EEXPIRED);
    kw_engine_free(e);
}

KW_TEST(history_wildcard_undo)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    kw_engine_set_history(e, 3600LL * 1000000, 1000, 2, (size_t)1 << 30);
    KW_ASSERT_EQ(th_touch1(e, "doc:b#viewer@user:*"), KW_OK);
    KW_ASSERT_EQ(th_touch1(e, "doc:e#viewer@user:dee"), KW_OK);
    kw_revision_t t1 = kw_engine_revision(e);
    char *want = dump_state(e);
    kw_diag_t d;
    kw_diag_clear(&d);
    /* One batch deleting one wildcard and adding another (the wildcard node is shared). */
    kw_update_t ups[2] = {{.op = KW_OP_DELETE}, {.op = KW_OP_TOUCH}};
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("doc:b#viewer@user:*"), &ups[0].rel, &d), KW_OK);
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("doc:e#viewer@user:*"), &ups[1].rel, &d), KW_OK);
    KW_ASSERT_EQ(kw_engine_write(e, ups, 2, NULL, 0, 0, NULL, &d), KW_OK);
    kw_snapshot_t *s = NULL;
    KW_ASSERT_EQ(kw_engine_snapshot(e, t1, &s, &d), KW_OK);
    char *got = dump_state(kw_snapshot_engine(s));
    KW_ASSERT_STR_EQ(got, want);
    free(got);
    free(want);
    kw_snapshot_release(s);
    kw_engine_free(e);
}

/* A writer applies random batches (recording each revision's state) while snapshots are
 * taken at recorded revisions, with a small window that trims meanwhile: every snapshot
 * given holds exactly its revision's state; the others are refused as expired. */
typedef struct race {
    kw_engine_t *e;
    pthread_mutex_t mu;
    kw_revision_t revs[400];
    char *dumps[400];
    size_t n;
    bool done;
} race_t;

static void *race_writer(void *ud)
{
    race_t *r = ud;
    unsigned seed = 99;
    for (int i = 0; i < 300; i++) {
        char bufs[4][160];
        const char *v[4];
        size_t k = 0;
        for (size_t j = 0; j < 3; j++) {
            rand_rel(&seed, bufs[k], sizeof(bufs[k]), true);
            bool dup = false;
            for (size_t m = 0; m < k; m++) {
                size_t la = strcspn(bufs[m], "["), lb = strcspn(bufs[k], "[");
                dup |= la == lb && memcmp(bufs[m], bufs[k], la) == 0;
            }
            if (!dup)
                v[k] = bufs[k], k++;
        }
        kw_diag_t d;
        kw_diag_clear(&d);
        if (th_write_op(r->e, rand_r(&seed) % 3 ? KW_OP_TOUCH : KW_OP_DELETE, v, k, &d) != KW_OK)
            break;
        char *dump = dump_state(r->e); /* the only writer: this is the state at rev */
        pthread_mutex_lock(&r->mu);
        r->revs[r->n] = kw_engine_revision(r->e);
        r->dumps[r->n++] = dump;
        pthread_mutex_unlock(&r->mu);
        struct timespec ts = {0, 300000}; /* let the snapshots interleave */
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&r->mu);
    r->done = true;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

KW_TEST(history_snapshots_while_writes_and_trims_race)
{
    now_us = 1700000000000000LL;
    race_t r = {0};
    r.e = th_engine(SCHEMA);
    KW_ASSERT(r.e);
    kw_engine_set_clock(r.e, clock_fn, NULL);
    kw_engine_set_history(r.e, 3600LL * 1000000, 40, 1, (size_t)1 << 30);
    KW_ASSERT_EQ(pthread_mutex_init(&r.mu, NULL), 0);
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, race_writer, &r), 0);
    unsigned seed = 5;
    size_t given = 0, refused = 0;
    for (;;) {
        pthread_mutex_lock(&r.mu);
        bool done = r.done;
        size_t n = r.n;
        kw_revision_t at = n ? r.revs[n - 1 - (size_t)rand_r(&seed) % (n < 30 ? n : 30)] : 0;
        const char *want = NULL;
        for (size_t i = 0; i < n; i++)
            if (r.revs[i] == at)
                want = r.dumps[i];
        pthread_mutex_unlock(&r.mu);
        if (done && given + refused > 50)
            break;
        if (!want)
            continue;
        kw_snapshot_t *s = NULL;
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc = kw_engine_snapshot(r.e, at, &s, &d);
        if (rc == KW_EEXPIRED) {
            refused++;
            continue;
        }
        KW_ASSERT_EQ(rc, KW_OK);
        char *got = dump_state(kw_snapshot_engine(s));
        KW_ASSERT(got);
        KW_ASSERT_STR_EQ(got, want);
        free(got);
        kw_snapshot_release(s);
        given++;
    }
    pthread_join(th, NULL);
    fprintf(stderr, "  race: %zu snapshots checked, %zu refused as expired\n", given, refused);
    KW_ASSERT(given > 0);
    for (size_t i = 0; i < r.n; i++)
        free(r.dumps[i]);
    pthread_mutex_destroy(&r.mu);
    kw_engine_free(r.e);
}

/* Several requests for the same old revision at once build it once: the others wait for
 * it (one copy of the graph per revision, however many ask). */
typedef struct same {
    kw_engine_t *e;
    kw_revision_t at;
    kw_snapshot_t *got;
    int rc;
} same_t;

static void *same_run(void *ud)
{
    same_t *s = ud;
    kw_diag_t d;
    kw_diag_clear(&d);
    s->rc = kw_engine_snapshot(s->e, s->at, &s->got, &d);
    return NULL;
}

KW_TEST(history_concurrent_requests_build_a_revision_once)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    kw_engine_set_history(e, 3600LL * 1000000, 1000, 2, (size_t)1 << 30);
    kw_update_t ups[64];
    char ids[64][2][24];
    for (int b = 0; b < 300; b++) { /* 19,200 relationships: a build takes a while */
        for (int i = 0; i < 64; i++) {
            snprintf(ids[i][0], sizeof(ids[i][0]), "d%d", b * 64 + i);
            snprintf(ids[i][1], sizeof(ids[i][1]), "u%d", i);
            ups[i] = (kw_update_t){.op = KW_OP_TOUCH};
            ups[i].rel.resource = (kw_object_t){KW_STR("doc"), kw_str_c(ids[i][0])};
            ups[i].rel.relation = KW_STR("viewer");
            ups[i].rel.subject = (kw_subject_t){KW_STR("user"), kw_str_c(ids[i][1]), KW_STR_NULL};
        }
        kw_diag_t d;
        kw_diag_clear(&d);
        KW_ASSERT_EQ(kw_engine_write(e, ups, 64, NULL, 0, 0, NULL, &d), KW_OK);
    }
    kw_revision_t at = kw_engine_revision(e);
    KW_ASSERT_EQ(th_touch1(e, "doc:x#viewer@user:late"), KW_OK);
    same_t s[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (same_t){e, at, NULL, -1};
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, same_run, &s[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        KW_ASSERT_EQ(s[i].rc, KW_OK);
        KW_ASSERT(s[i].got == s[0].got);
        KW_ASSERT_EQ(th_check(kw_snapshot_engine(s[i].got), "doc:x#viewer@user:late"), 0);
    }
    kw_history_info_t info;
    kw_engine_history_info(e, &info);
    KW_ASSERT_EQ(info.n_built, 1);
    for (int i = 0; i < 4; i++)
        kw_snapshot_release(s[i].got);
    kw_engine_free(e);
}
