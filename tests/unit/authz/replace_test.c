/*
 * tests/unit/authz/replace_test.c - kw_engine_replace_graph: the whole graph (and maybe the
 * schema) replaced in one step. All or nothing: a feed that fails, a relationship the
 * schema refuses, an engine that changed meanwhile or any failed allocation leaves the old
 * state; concurrent readers see the whole old state or the whole new one, never a mix.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine_helpers.h"
#include "kw_test.h"

static const char *SCHEMA = "definition user {}\n"
                            "definition group {\n"
                            "  relation member: user | group#member\n"
                            "}\n"
                            "definition document {\n"
                            "  relation owner: user\n"
                            "  relation viewer: user | user:* | group#member\n"
                            "  relation banned: user\n"
                            "  permission view = (viewer + owner) - banned\n"
                            "}\n";

/* The same without document#banned: an engine holding a banned relationship cannot swap to
 * it with kw_engine_set_schema. */
static const char *SCHEMA_NO_BAN = "definition user {}\n"
                                   "definition group {\n"
                                   "  relation member: user | group#member\n"
                                   "}\n"
                                   "definition document {\n"
                                   "  relation owner: user\n"
                                   "  relation viewer: user | user:* | group#member\n"
                                   "  permission view = viewer + owner\n"
                                   "}\n";

/* A feed over a generated list: gen(i) is relationship i of n. It can stop early with an
 * error, mutate the engine halfway, or pause so that readers run during the build. */
typedef struct feed {
    void (*gen)(size_t i, char *buf, size_t cap);
    size_t n;
    kw_revision_t rev;
    size_t fail_at; /* SIZE_MAX: never */
    int fail_rc;
    size_t act_at; /* SIZE_MAX: never; then calls act(e) once */
    void (*act)(kw_engine_t *e);
    kw_engine_t *e;
    unsigned pause_us; /* every 64 relationships */
} feed_t;

static int feed_run(void *ud, kw_rel_cb emit, void *emit_ud, kw_revision_t *rev)
{
    feed_t *f = ud;
    char buf[160];
    for (size_t i = 0; i < f->n; i++) {
        if (i == f->fail_at)
            return f->fail_rc;
        if (i == f->act_at)
            f->act(f->e);
        if (f->pause_us && i % 64 == 0)
            usleep(f->pause_us);
        f->gen(i, buf, sizeof(buf));
        kw_rel_t r;
        if (kw_rel_parse(kw_str_c(buf), &r, NULL) != KW_OK)
            return KW_EINVAL;
        int rc = emit(&r, emit_ud);
        if (rc != 0)
            return rc;
    }
    *rev = f->rev;
    return KW_OK;
}

static feed_t feed_of(void (*gen)(size_t, char *, size_t), size_t n, kw_revision_t rev)
{
    return (feed_t){gen, n, rev, SIZE_MAX, 0, SIZE_MAX, NULL, NULL, 0};
}

/* State A: viewers; state B: owners, on the same documents (20 of each). */
static void gen_a(size_t i, char *buf, size_t cap)
{
    snprintf(buf, cap, "document:d%zu#viewer@user:u%zu", i, i);
}
static void gen_b(size_t i, char *buf, size_t cap)
{
    snprintf(buf, cap, "document:d%zu#owner@user:u%zu", i, i);
}

static int touch_gen(kw_engine_t *e, void (*gen)(size_t, char *, size_t), size_t n)
{
    char buf[160];
    for (size_t i = 0; i < n; i++) {
        gen(i, buf, sizeof(buf));
        if (th_touch1(e, buf) != KW_OK)
            return KW_EINTERNAL;
    }
    return KW_OK;
}

/* Is the engine exactly in state A (true) or B (false) over the first n documents?
 * Anything else fails the test. */
#define ASSERT_STATE(e, is_a, n)                                                                   \
    do {                                                                                           \
        char q_[160];                                                                              \
        KW_ASSERT_EQ(kw_engine_count(e), (n));                                                     \
        for (size_t i_ = 0; i_ < (n); i_++) {                                                      \
            gen_a(i_, q_, sizeof(q_));                                                             \
            KW_ASSERT_EQ(th_check(e, q_), (is_a) ? 1 : 0);                                         \
            gen_b(i_, q_, sizeof(q_));                                                             \
            KW_ASSERT_EQ(th_check(e, q_), (is_a) ? 0 : 1);                                         \
        }                                                                                          \
    } while (0)

KW_TEST(engine_replace_swaps_graph_and_revision)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    KW_ASSERT_EQ(touch_gen(e, gen_a, 20), KW_OK);
    kw_revision_t before = kw_engine_revision(e);
    ASSERT_STATE(e, true, 20);

    /* At the feed's revision when it is ahead of the engine's. */
    feed_t f = feed_of(gen_b, 20, 1000);
    kw_revision_t rev = 0;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, &rev, &d), KW_OK);
    KW_ASSERT_EQ(rev, 1000);
    KW_ASSERT_EQ(kw_engine_revision(e), 1000);
    ASSERT_STATE(e, false, 20);
    KW_ASSERT(before < 1000);

    /* Never backwards: a feed revision at or below the engine's gives the next one. */
    f = feed_of(gen_a, 20, 7);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, &rev, &d), KW_OK);
    KW_ASSERT_EQ(rev, 1001);
    ASSERT_STATE(e, true, 20);

    /* Writes after a replacement work on the new graph (its arrays are sorted). */
    KW_ASSERT_EQ(th_touch1(e, "document:d0#banned@user:u0"), KW_OK);
    KW_ASSERT_EQ(th_check(e, "document:d0#view@user:u0"), 0);
    KW_ASSERT_EQ(th_check(e, "document:d1#view@user:u1"), 1);
    kw_update_t del;
    del.op = KW_OP_DELETE;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d5#viewer@user:u5"), &del.rel, NULL), KW_OK);
    KW_ASSERT_EQ(kw_engine_write(e, &del, 1, NULL, 0, 0, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(th_check(e, "document:d5#view@user:u5"), 0);
    KW_ASSERT_EQ(kw_engine_count(e), 20);

    /* An empty feed empties the graph. */
    f = feed_of(gen_a, 0, 0);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_OK);
    KW_ASSERT_EQ(kw_engine_count(e), 0);
    KW_ASSERT_EQ(th_check(e, "document:d1#view@user:u1"), 0);
    kw_engine_free(e);
}

/* Subject sets, wildcards and duplicates come through; reads list exactly the fed set. */
static const char *MIXED[] = {
    "group:g#member@user:a",    "group:h#member@group:g#member", "document:x#viewer@group:h#member",
    "document:y#viewer@user:*", "document:y#banned@user:b",      "group:g#member@user:a",
    "document:x#owner@user:c",  "document:x#owner@user:c",
};
static void gen_mixed(size_t i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", MIXED[i]);
}

static int count_cb(const kw_rel_t *r, void *ud)
{
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

KW_TEST(engine_replace_subject_sets_wildcards_duplicates)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    feed_t f = feed_of(gen_mixed, KW_ARRAY_LEN(MIXED), 5);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_OK);
    KW_ASSERT_EQ(kw_engine_count(e), 6); /* two duplicates kept once */
    KW_ASSERT_EQ(th_check(e, "document:x#view@user:a"), 1);
    KW_ASSERT_EQ(th_check(e, "document:x#view@user:c"), 1);
    KW_ASSERT_EQ(th_check(e, "document:y#view@user:zz"), 1);
    KW_ASSERT_EQ(th_check(e, "document:y#view@user:b"), 0);
    size_t n = 0;
    kw_filter_t all = {.resource_type = KW_STR("document")};
    KW_ASSERT_EQ(kw_engine_read(e, &all, count_cb, &n, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(n, 4);
    n = 0;
    all.resource_type = KW_STR("group");
    KW_ASSERT_EQ(kw_engine_read(e, &all, count_cb, &n, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(n, 2);
    /* Deleting a relationship that was fed twice removes it (stored once). */
    kw_update_t del;
    del.op = KW_OP_DELETE;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:x#owner@user:c"), &del.rel, NULL), KW_OK);
    KW_ASSERT_EQ(kw_engine_write(e, &del, 1, NULL, 0, 0, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(th_check(e, "document:x#view@user:c"), 0);
    KW_ASSERT_EQ(kw_engine_count(e), 5);
    kw_engine_free(e);
}

static void gen_banned(size_t i, char *buf, size_t cap)
{
    if (i == 0)
        snprintf(buf, cap, "document:d0#banned@user:u0");
    else
        gen_a(i - 1, buf, cap);
}

/* With a schema the old graph does not fit: graph and schema are swapped together. */
KW_TEST(engine_replace_with_new_schema)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    feed_t f = feed_of(gen_banned, 21, 10);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_OK);
    KW_ASSERT_EQ(th_check(e, "document:d0#view@user:u0"), 0);
    /* The banned relationship keeps the plain swap out. */
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(SCHEMA_NO_BAN), NULL, &d), KW_ESCHEMA);

    /* A feed the new schema refuses (the banned row is still there): nothing changes. */
    kw_revision_t rev0 = kw_engine_revision(e);
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, kw_str_c(SCHEMA_NO_BAN), feed_run, &f, NULL, &d),
                 KW_ESCHEMA);
    KW_ASSERT(strstr(d.msg, "document:d0#banned@user:u0") != NULL);
    KW_ASSERT_EQ(kw_engine_revision(e), rev0);
    KW_ASSERT_EQ(kw_engine_count(e), 21);
    kw_buf_t txt;
    kw_buf_init(&txt);
    KW_ASSERT_EQ(kw_engine_schema_text(e, &txt), KW_OK);
    KW_ASSERT(txt.len == strlen(SCHEMA) && memcmp(txt.ptr, SCHEMA, txt.len) == 0);

    /* Without it, the new schema and graph arrive together. */
    f = feed_of(gen_a, 20, 20);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, kw_str_c(SCHEMA_NO_BAN), feed_run, &f, NULL, &d),
                 KW_OK);
    txt.len = 0;
    KW_ASSERT_EQ(kw_engine_schema_text(e, &txt), KW_OK);
    KW_ASSERT(txt.len == strlen(SCHEMA_NO_BAN) && memcmp(txt.ptr, SCHEMA_NO_BAN, txt.len) == 0);
    kw_buf_free(&txt);
    KW_ASSERT_EQ(th_check(e, "document:d0#view@user:u0"), 1);
    bool perm = false;
    KW_ASSERT(!kw_engine_has(e, KW_STR("document"), KW_STR("banned"), &perm));

    /* A schema that does not compile changes nothing either. */
    rev0 = kw_engine_revision(e);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR("definition {"), feed_run, &f, NULL, &d),
                 KW_ESCHEMA);
    KW_ASSERT_EQ(kw_engine_revision(e), rev0);
    kw_engine_free(e);

    /* No schema installed and none given. */
    kw_engine_t *bare = NULL;
    KW_ASSERT_EQ(kw_engine_new(&bare), KW_OK);
    KW_ASSERT_EQ(kw_engine_replace_graph(bare, KW_STR(""), feed_run, &f, NULL, &d), KW_ESCHEMA);
    KW_ASSERT_EQ(kw_engine_replace_graph(bare, kw_str_c(SCHEMA), feed_run, &f, NULL, &d), KW_OK);
    ASSERT_STATE(bare, true, 20);
    kw_engine_free(bare);
}

static void gen_bad_at_10(size_t i, char *buf, size_t cap)
{
    if (i == 10)
        snprintf(buf, cap, "document:d10#nope@user:u10");
    else
        gen_b(i, buf, cap);
}

/* The feed fails halfway (a database error, a refused relationship): nothing changes. */
KW_TEST(engine_replace_feed_failure_changes_nothing)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    KW_ASSERT_EQ(touch_gen(e, gen_a, 20), KW_OK);
    kw_revision_t rev0 = kw_engine_revision(e);
    size_t mem0 = kw_engine_memory(e);

    feed_t f = feed_of(gen_b, 20, 99);
    f.fail_at = 10;
    f.fail_rc = KW_EDB;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_revision_t rev = 12345;
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, &rev, &d), KW_EDB);
    KW_ASSERT(strstr(d.msg, "reading the relationships failed") != NULL);
    KW_ASSERT_EQ(rev, 12345); /* not written on failure */
    KW_ASSERT_EQ(kw_engine_revision(e), rev0);
    KW_ASSERT_EQ(kw_engine_memory(e), mem0);
    ASSERT_STATE(e, true, 20);

    f = feed_of(gen_bad_at_10, 20, 99);
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_ESCHEMA);
    KW_ASSERT(strstr(d.msg, "document:d10#nope@user:u10") != NULL);
    KW_ASSERT_EQ(kw_engine_revision(e), rev0);
    KW_ASSERT_EQ(kw_engine_memory(e), mem0);
    ASSERT_STATE(e, true, 20);
    kw_engine_free(e);
}

static void act_write(kw_engine_t *e)
{
    kw_assert(th_touch1(e, "document:late#owner@user:late") == KW_OK);
}
static void act_schema(kw_engine_t *e)
{
    kw_assert(kw_engine_set_schema(e, kw_str_c(SCHEMA), NULL, NULL) == KW_OK);
}

/* The engine changed while the feed ran (a write, a schema swap): the build is dropped
 * (the caller builds again); what happened meanwhile stays. */
KW_TEST(engine_replace_conflict_when_engine_changed)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    KW_ASSERT_EQ(touch_gen(e, gen_a, 20), KW_OK);
    feed_t f = feed_of(gen_b, 20, 99);
    f.e = e;
    f.act_at = 5;
    f.act = act_write;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_ECONFLICT);
    KW_ASSERT(strstr(d.msg, "nothing was replaced") != NULL);
    KW_ASSERT_EQ(th_check(e, "document:late#view@user:late"), 1);
    KW_ASSERT_EQ(th_check(e, "document:d3#view@user:u3"), 1);
    KW_ASSERT_EQ(kw_engine_count(e), 21);

    f.act = act_schema;
    kw_revision_t before = kw_engine_revision(e);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_ECONFLICT);
    KW_ASSERT_EQ(kw_engine_revision(e), before + 1); /* the schema swap, nothing else */
    KW_ASSERT_EQ(kw_engine_count(e), 21);

    /* Undisturbed, the same feed goes through. */
    f.act_at = SIZE_MAX;
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_OK);
    KW_ASSERT_EQ(th_check(e, "document:late#view@user:late"), 0);
    ASSERT_STATE(e, false, 20);
    kw_engine_free(e);
}

/* Readers during replacements: every answer (a bulk check reads under one lock) is all of
 * state A or all of state B, and revisions never go backwards. */
#define N_DOCS 200
typedef struct readers {
    kw_engine_t *e;
    atomic_int stop;
    atomic_long seen_a, seen_b, mixed, errors, backwards;
} readers_t;

static void *reader_main(void *arg)
{
    readers_t *rd = arg;
    char q[4][160];
    size_t probe[2] = {0, N_DOCS - 1};
    gen_a(probe[0], q[0], sizeof(q[0]));
    gen_a(probe[1], q[1], sizeof(q[1]));
    gen_b(probe[0], q[2], sizeof(q[2]));
    gen_b(probe[1], q[3], sizeof(q[3]));
    kw_revision_t last = 0;
    while (!atomic_load(&rd->stop)) {
        kw_check_item_t it[4];
        for (int k = 0; k < 4; k++) {
            kw_rel_t r;
            kw_assert(kw_rel_parse(kw_str_c(q[k]), &r, NULL) == KW_OK);
            it[k] = (kw_check_item_t){r.resource, r.relation, r.subject, 0, 0, {0}};
        }
        kw_revision_t rev = 0;
        kw_assert(kw_engine_check_bulk(rd->e, it, 4, &rev) == KW_OK);
        if (it[0].rc || it[1].rc || it[2].rc || it[3].rc) {
            atomic_fetch_add(&rd->errors, 1);
            continue;
        }
        int a = (it[0].result == KW_CHECK_YES) + (it[1].result == KW_CHECK_YES);
        int b = (it[2].result == KW_CHECK_YES) + (it[3].result == KW_CHECK_YES);
        if (a == 2 && b == 0)
            atomic_fetch_add(&rd->seen_a, 1);
        else if (a == 0 && b == 2)
            atomic_fetch_add(&rd->seen_b, 1);
        else
            atomic_fetch_add(&rd->mixed, 1);
        if (rev < last)
            atomic_fetch_add(&rd->backwards, 1);
        last = rev;
    }
    return NULL;
}

KW_TEST(engine_replace_readers_see_old_or_new)
{
    readers_t rd = {.e = th_engine(SCHEMA)};
    KW_ASSERT(rd.e);
    KW_ASSERT_EQ(touch_gen(rd.e, gen_a, N_DOCS), KW_OK);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, reader_main, &rd), 0);
    int failures = 0;
    for (int round = 0; round < 40; round++) {
        bool to_a = round % 2 == 1;
        feed_t f = feed_of(to_a ? gen_a : gen_b, N_DOCS, 0);
        f.pause_us = 50; /* the build takes a while: readers run during it */
        kw_diag_t d;
        kw_diag_clear(&d);
        if (kw_engine_replace_graph(rd.e, KW_STR(""), feed_run, &f, NULL, &d) != KW_OK)
            failures++;
    }
    /* Bounded wait so the readers overlap at least the final state on a loaded machine. */
    for (int waited = 0; atomic_load(&rd.seen_a) + atomic_load(&rd.seen_b) < 200 && waited < 5000;
         waited++)
        usleep(1000);
    atomic_store(&rd.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    KW_ASSERT_EQ(failures, 0);
    KW_ASSERT_EQ(atomic_load(&rd.mixed), 0);
    KW_ASSERT_EQ(atomic_load(&rd.errors), 0);
    KW_ASSERT_EQ(atomic_load(&rd.backwards), 0);
    KW_ASSERT(atomic_load(&rd.seen_a) + atomic_load(&rd.seen_b) > 0);
    ASSERT_STATE(rd.e, true, N_DOCS); /* round 39 went to A */
    kw_engine_free(rd.e);
}

static void gen_many(size_t i, char *buf, size_t cap)
{
    snprintf(buf, cap, "document:big%zu#viewer@user:someone-with-a-long-name-%zu", i / 3, i);
}

/* The old graph's memory goes when it is replaced: a big graph swapped for a small one
 * shrinks the engine (and LeakSanitizer checks nothing is lost on the way). */
KW_TEST(engine_replace_frees_the_old_graph)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    feed_t f = feed_of(gen_many, 30000, 1);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_OK);
    KW_ASSERT_EQ(kw_engine_count(e), 30000);
    size_t big = kw_engine_memory(e);
    f = feed_of(gen_a, 20, 2);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d), KW_OK);
    size_t small = kw_engine_memory(e);
    KW_ASSERT(small * 20 < big);
    ASSERT_STATE(e, true, 20);
    kw_engine_free(e);
}

/* Every allocation that fails during a replacement gives KW_ENOMEM and the old state. */
KW_TEST(engine_replace_fault_injection)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    KW_ASSERT_EQ(touch_gen(e, gen_a, 20), KW_OK);
    int completed = 0;
    for (long n = 1; n < 5000 && !completed; n++) {
        feed_t f = feed_of(n % 2 ? gen_b : gen_mixed, n % 2 ? 20 : KW_ARRAY_LEN(MIXED), 0);
        kw_diag_t d;
        kw_diag_clear(&d);
        kw_revision_t rev0 = kw_engine_revision(e);
        kw_fault_arm(n);
        int rc = kw_engine_replace_graph(e, KW_STR(""), feed_run, &f, NULL, &d);
        bool fired = kw_fault_fired();
        kw_fault_arm(0);
        if (rc == KW_OK) {
            /* Only a failed optional shrink may have fired: the swap happened. Back to A. */
            KW_ASSERT(kw_engine_revision(e) > rev0);
            feed_t back = feed_of(gen_a, 20, 0);
            KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR(""), feed_run, &back, NULL, &d), KW_OK);
            if (!fired)
                completed = 1;
            continue;
        }
        if (rc != KW_ENOMEM)
            KW_FAIL_("fault %ld: rc=%d (%s)", n, rc, d.msg);
        KW_ASSERT(fired);
        KW_ASSERT_EQ(kw_engine_revision(e), rev0);
        ASSERT_STATE(e, true, 20);
    }
    KW_ASSERT(completed);
    kw_engine_free(e);
}
