/*
 * tests/unit/authz/budget_test.c - query budgets (KW_EBUDGET, tag-kw-query-budget): a query
 * whose work can outgrow its answer stops with a clear error instead of growing, and the
 * budget changes no answer within it.
 *
 * The schemas are the hostile shapes of issue 9 item 6: a permission that doubles the one
 * before it (Expand's tree doubles per level), a ring of folders each reaching the next
 * twice (Check's results under an open cycle cannot be memoized, so its work doubles per
 * folder), and the same doubling in the schema alone (an object without relationships).
 */
#include <stdlib.h>
#include <string.h>

#include "engine_helpers.h"
#include "kw_test.h"

/* `definition user {}` and a `doc` whose perm<i+1> is `fan` copies of perm<i> (perm0 = viewer). */
static char *doubling_schema(int levels, int fan)
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_buf_puts(&b, "definition user {}\n"
                    "definition doc {\n"
                    "    relation viewer: user\n"
                    "    relation other: user\n"
                    "    permission perm0 = viewer\n");
    for (int i = 1; i <= levels; i++) {
        kw_buf_printf(&b, "    permission perm%d = perm%d", i, i - 1);
        for (int k = 1; k < fan; k++)
            kw_buf_printf(&b, " + perm%d", i - 1);
        kw_buf_puts(&b, "\n");
    }
    kw_buf_puts(&b, "}\n");
    if (b.failed) {
        kw_buf_free(&b);
        return NULL;
    }
    return b.ptr;
}

static kw_engine_t *doubling_engine(int levels, int fan)
{
    char *schema = doubling_schema(levels, fan);
    if (!schema)
        return NULL;
    kw_engine_t *e = th_engine(schema);
    kw_free(schema);
    return e;
}

/* Expand at level 18 of the doubling schema: 2^18 leaves, each listing 4 subjects. Today's
 * code built the whole tree (issue 9: 145 MB of JSON at this depth). */
KW_TEST(budget_expand_doubling_schema)
{
    kw_engine_t *e = doubling_engine(18, 2);
    KW_ASSERT(e);
    const char *rels[] = {"doc:d#viewer@user:u1", "doc:d#viewer@user:u2", "doc:d#viewer@user:u3",
                          "doc:d#viewer@user:u4", NULL};
    KW_ASSERT_EQ(th_touch(e, rels), KW_OK);
    kw_object_t d = {KW_STR("doc"), KW_STR("d")};
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_expand_t *t = NULL;
    kw_diag_t diag;
    kw_diag_clear(&diag);
    int rc = kw_engine_expand(e, d, KW_STR("perm18"), a, &t, NULL, &diag);
    kw_arena_free(a);
    KW_ASSERT_EQ(rc, KW_EBUDGET);
    KW_ASSERT(t == NULL);
    KW_ASSERT_EQ(diag.code, KW_EBUDGET);
    KW_ASSERT(strstr(diag.msg, "budget") != NULL);
    /* Within the budget the tree is whole: perm10 has 2^10 leaves of 4 subjects. */
    a = kw_arena_new(0);
    KW_ASSERT(a);
    KW_ASSERT_EQ(kw_engine_expand(e, d, KW_STR("perm10"), a, &t, NULL, NULL), KW_OK);
    size_t leaves = 0, subjects = 0;
    const kw_expand_t *stack[64];
    size_t sp = 0;
    stack[sp++] = t;
    while (sp) {
        const kw_expand_t *x = stack[--sp];
        if (x->kind == KW_EXPAND_LEAF) {
            leaves++;
            subjects += x->n_subjects;
        }
        for (size_t i = 0; i < x->n_children && sp < 64; i++)
            stack[sp++] = x->children[i];
    }
    kw_arena_free(a);
    KW_ASSERT_EQ(leaves, 1024);
    KW_ASSERT_EQ(subjects, 4096);
    /* Check is memoized: the same schema costs it one evaluation per level. */
    KW_ASSERT_EQ(th_check(e, "doc:d#perm18@user:u3"), 1);
    KW_ASSERT_EQ(th_check(e, "doc:d#perm18@user:nobody"), 0);
    kw_engine_free(e);
}

/* Expand's byte budget: few nodes, but every subject id is 1,000 bytes long. */
KW_TEST(budget_expand_bytes)
{
    kw_engine_t *e = doubling_engine(1, 2);
    KW_ASSERT(e);
    enum { N = 20000, ID = 1000, BATCH = 1000 };
    static char ids[BATCH][ID + 1];
    kw_update_t ups[BATCH];
    for (int i = 0; i < N; i += BATCH) {
        for (int k = 0; k < BATCH; k++) {
            memset(ids[k], 'x', ID);
            snprintf(ids[k], 16, "u%d", i + k);
            ids[k][strlen(ids[k])] = 'x';
            ids[k][ID] = 0;
            ups[k] = (kw_update_t){.op = KW_OP_TOUCH,
                                   .rel = {.resource = {KW_STR("doc"), KW_STR("d")},
                                           .relation = KW_STR("viewer"),
                                           .subject = {KW_STR("user"), {ids[k], ID}, KW_STR("")}}};
        }
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc = kw_engine_write(e, ups, BATCH, NULL, 0, 0, NULL, &d);
        if (rc != KW_OK)
            fprintf(stderr, "  write: %s\n", d.msg);
        KW_ASSERT_EQ(rc, KW_OK);
    }
    kw_object_t d = {KW_STR("doc"), KW_STR("d")};
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_expand_t *t = NULL;
    kw_diag_t diag;
    kw_diag_clear(&diag);
    /* perm1 = perm0 + perm0: two leaves of 20,000 subjects, 40 MB of ids. */
    int rc = kw_engine_expand(e, d, KW_STR("perm1"), a, &t, NULL, &diag);
    kw_arena_free(a);
    KW_ASSERT_EQ(rc, KW_EBUDGET);
    KW_ASSERT(strstr(diag.msg, "bytes") != NULL);
    /* One leaf (20 MB) is over the budget too: the relation alone is refused. */
    a = kw_arena_new(0);
    KW_ASSERT(a);
    KW_ASSERT_EQ(kw_engine_expand(e, d, KW_STR("viewer"), a, &t, NULL, NULL), KW_EBUDGET);
    kw_arena_free(a);
    kw_engine_free(e);
}

/* A ring of folders, each the parent of the one before it twice over (parent1 and
 * parent2): `view` on any folder of the ring depends on the open frame of the first, so
 * no result can be memoized and Check's work doubles per folder (2^24 evaluations). */
static const char *RING_SCHEMA = "definition user {}\n"
                                 "definition folder {\n"
                                 "    relation parent1: folder\n"
                                 "    relation parent2: folder\n"
                                 "    relation viewer: user\n"
                                 "    relation allowed: user\n"
                                 "    permission view = (viewer & allowed) + parent1->view + "
                                 "parent2->view\n"
                                 "}\n";
#define RING 24

static kw_engine_t *ring_engine(void)
{
    kw_engine_t *e = th_engine(RING_SCHEMA);
    if (!e)
        return NULL;
    char bufs[2 * RING + 3][64];
    const char *rels[2 * RING + 4]; /* and the NULL at the end */
    size_t n = 0;
    for (int i = 0; i < RING; i++) {
        for (int k = 1; k <= 2; k++) {
            snprintf(bufs[n], sizeof(bufs[n]), "folder:f%d#parent%d@folder:f%d", i, k,
                     (i + 1) % RING);
            rels[n] = bufs[n];
            n++;
        }
    }
    /* v views f5 but is not allowed there: a candidate for the lookups, never a yes. */
    snprintf(bufs[n], sizeof(bufs[n]), "folder:f5#viewer@user:v");
    rels[n] = bufs[n];
    n++;
    /* w views and is allowed on f7: every folder of the ring reaches it. */
    snprintf(bufs[n], sizeof(bufs[n]), "folder:f7#viewer@user:w");
    rels[n] = bufs[n];
    n++;
    snprintf(bufs[n], sizeof(bufs[n]), "folder:f7#allowed@user:w");
    rels[n] = bufs[n];
    n++;
    rels[n] = NULL;
    if (th_touch(e, rels) != KW_OK) {
        kw_engine_free(e);
        return NULL;
    }
    return e;
}

KW_TEST(budget_check_ring)
{
    kw_engine_t *e = ring_engine();
    KW_ASSERT(e);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(th_check_d(e, "folder:f0#view@user:nobody", &d), KW_EBUDGET);
    KW_ASSERT(strstr(d.msg, "budget") != NULL);
    KW_ASSERT_EQ(th_check_d(e, "folder:f0#view@user:v", &d), KW_EBUDGET);
    /* A yes is found before the budget: the depth-first walk reaches f7 directly. */
    KW_ASSERT_EQ(th_check(e, "folder:f0#view@user:w"), 1);
    KW_ASSERT_EQ(th_check(e, "folder:f7#viewer@user:v"), 0);
    /* CheckBulk: each item has its own budget; the one over it fails alone. */
    kw_check_item_t it[2];
    memset(it, 0, sizeof(it));
    it[0].resource = (kw_object_t){KW_STR("folder"), KW_STR("f3")};
    it[0].permission = KW_STR("view");
    it[0].subject = (kw_subject_t){KW_STR("user"), KW_STR("nobody"), KW_STR("")};
    it[1].resource = (kw_object_t){KW_STR("folder"), KW_STR("f3")};
    it[1].permission = KW_STR("view");
    it[1].subject = (kw_subject_t){KW_STR("user"), KW_STR("w"), KW_STR("")};
    KW_ASSERT_EQ(kw_engine_check_bulk(e, it, 2, NULL), KW_OK);
    KW_ASSERT_EQ(it[0].rc, KW_EBUDGET);
    KW_ASSERT_EQ(it[0].result, KW_CHECK_NO);
    KW_ASSERT_EQ(it[1].rc, KW_OK);
    KW_ASSERT_EQ(it[1].result, KW_CHECK_YES);
    kw_engine_free(e);
}

static int count_ids(kw_str_t id, void *ud)
{
    (void)id;
    (*(int *)ud)++;
    return 0;
}

static int count_subjects(const kw_subject_result_t *r, void *ud)
{
    (void)r;
    (*(int *)ud)++;
    return 0;
}

KW_TEST(budget_lookups_ring)
{
    kw_engine_t *e = ring_engine();
    KW_ASSERT(e);
    kw_diag_t d;
    kw_diag_clear(&d);
    int n = 0;
    kw_subject_t v = {KW_STR("user"), KW_STR("v"), KW_STR("")};
    KW_ASSERT_EQ(
        kw_engine_lookup_resources(e, KW_STR("folder"), KW_STR("view"), v, count_ids, &n, NULL, &d),
        KW_EBUDGET);
    KW_ASSERT(strstr(d.msg, "budget") != NULL);
    kw_object_t f0 = {KW_STR("folder"), KW_STR("f0")};
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_lookup_subjects(e, f0, KW_STR("view"), KW_STR("user"), KW_STR(""),
                                           count_subjects, &n, NULL, &d),
                 KW_EBUDGET);
    KW_ASSERT(strstr(d.msg, "budget") != NULL);
    /* w reaches every folder of the ring: each verification finds its yes early. */
    n = 0;
    kw_subject_t w = {KW_STR("user"), KW_STR("w"), KW_STR("")};
    KW_ASSERT_EQ(kw_engine_lookup_resources(e, KW_STR("folder"), KW_STR("view"), w, count_ids, &n,
                                            NULL, NULL),
                 KW_OK);
    KW_ASSERT_EQ(n, RING);
    kw_engine_free(e);
}

/* An object without relationships, asked for a subject set of its own: only the schema
 * is walked ("a subject set has itself"), and with three copies of the previous
 * permission per level that walk is 3^15 paths long. */
KW_TEST(budget_absent_object_schema_walk)
{
    kw_engine_t *e = doubling_engine(15, 3);
    KW_ASSERT(e);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(th_check_d(e, "doc:x#perm15@doc:x#other", &d), KW_EBUDGET);
    KW_ASSERT(strstr(d.msg, "budget") != NULL);
    KW_ASSERT_EQ(th_check(e, "doc:x#perm15@doc:x#viewer"), 1); /* found on the first path */
    KW_ASSERT_EQ(th_check(e, "doc:x#perm3@doc:x#other"), 0);   /* within the budget */
    int n = 0;
    kw_subject_t self = {KW_STR("doc"), KW_STR("x"), KW_STR("other")};
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_lookup_resources(e, KW_STR("doc"), KW_STR("perm15"), self, count_ids, &n,
                                            NULL, &d),
                 KW_EBUDGET);
    kw_object_t x = {KW_STR("doc"), KW_STR("x")};
    KW_ASSERT_EQ(kw_engine_lookup_subjects(e, x, KW_STR("perm15"), KW_STR("doc"), KW_STR("other"),
                                           count_subjects, &n, NULL, &d),
                 KW_EBUDGET);
    kw_engine_free(e);
}
