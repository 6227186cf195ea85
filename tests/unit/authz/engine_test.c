/*
 * tests/unit/authz/engine_test.c - writes (validation, CREATE/TOUCH/DELETE, preconditions,
 * revisions), filtered reads and deletes, schema swaps, lookups, Expand, concurrency and
 * fault injection.
 */
#include <pthread.h>
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

static kw_update_t up(kw_op_t op, const char *s)
{
    kw_update_t u;
    u.op = op;
    kw_assert(kw_rel_parse(kw_str_c(s), &u.rel, NULL) == KW_OK);
    return u;
}

KW_TEST(engine_no_schema)
{
    kw_engine_t *e = NULL;
    KW_ASSERT_EQ(kw_engine_new(&e), KW_OK);
    KW_ASSERT_EQ(th_check(e, "document:d#view@user:a"), KW_ESCHEMA);
    kw_update_t u = up(KW_OP_TOUCH, "document:d#owner@user:a");
    KW_ASSERT_EQ(kw_engine_write(e, &u, 1, NULL, 0, 0, NULL, NULL), KW_ESCHEMA);
    kw_engine_free(e);
}

KW_TEST(engine_validation_messages)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    kw_diag_t d;
    struct {
        const char *rel;
        const char *want;
    } cases[] = {
        {"document:d#owner@group:g",
         "relation \"document#owner\" does not allow subject type \"group\""},
        {"document:d#owner@user:*", "does not allow subject type \"user:*\""},
        {"document:d#viewer@group:g#nope", "relation \"group#nope\" not found"},
        {"document:d#owner@group:g#member", "does not allow subject type \"group#member\""},
        {"document:d#view@user:a", "is a permission"},
        {"document:d#nope@user:a", "relation \"document#nope\" not found"},
        {"nope:d#owner@user:a", "object definition \"nope\" not found"},
        {"document:*#owner@user:a", "wildcard"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(cases); i++) {
        kw_diag_clear(&d);
        kw_update_t u;
        u.op = KW_OP_TOUCH;
        if (kw_rel_parse(kw_str_c(cases[i].rel), &u.rel, &d) != KW_OK)
            continue; /* the parser refused it already: also fine */
        KW_ASSERT_EQ(kw_engine_validate(e, &u, 1, &d), KW_EINVAL);
        if (!strstr(d.msg, cases[i].want))
            KW_FAIL_("%s: message \"%s\" lacks \"%s\"", cases[i].rel, d.msg, cases[i].want);
    }
    /* ids: extended charset accepted, others refused */
    kw_update_t ok = up(KW_OP_TOUCH, "document:--=base64YWZz/ZHN+mZ|_==#owner@user:a-b=c+d/e|f_g");
    KW_ASSERT_EQ(kw_engine_validate(e, &ok, 1, &d), KW_OK);
    kw_update_t bad = ok;
    bad.rel.resource.id = KW_STR("has space");
    KW_ASSERT_EQ(kw_engine_validate(e, &bad, 1, &d), KW_EINVAL);
    bad.rel.resource.id = KW_STR("");
    KW_ASSERT_EQ(kw_engine_validate(e, &bad, 1, &d), KW_EINVAL);
    static char longid[KW_MAX_OBJECT_ID_LEN + 2];
    memset(longid, 'x', sizeof(longid) - 1);
    bad.rel.resource.id = (kw_str_t){longid, KW_MAX_OBJECT_ID_LEN};
    KW_ASSERT_EQ(kw_engine_validate(e, &bad, 1, &d), KW_OK);
    bad.rel.resource.id = (kw_str_t){longid, KW_MAX_OBJECT_ID_LEN + 1};
    KW_ASSERT_EQ(kw_engine_validate(e, &bad, 1, &d), KW_EINVAL);
    /* duplicates within a batch */
    kw_update_t two[2] = {up(KW_OP_TOUCH, "document:d#owner@user:a"),
                          up(KW_OP_DELETE, "document:d#owner@user:a")};
    KW_ASSERT_EQ(kw_engine_validate(e, two, 2, &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "more than once") != NULL);
    KW_ASSERT_EQ(kw_engine_write(e, two, 2, NULL, 0, 0, NULL, &d), KW_EINVAL);
    KW_ASSERT_EQ(kw_engine_count(e), 0);
    kw_engine_free(e);
}

KW_TEST(engine_write_ops_and_revisions)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    kw_revision_t r0 = kw_engine_revision(e), r1 = 0, r2 = 0;
    kw_diag_t d;
    kw_update_t c1[2] = {up(KW_OP_CREATE, "document:d#owner@user:a"),
                         up(KW_OP_CREATE, "document:d#viewer@user:b")};
    KW_ASSERT_EQ(kw_engine_write(e, c1, 2, NULL, 0, 0, &r1, &d), KW_OK);
    KW_ASSERT(r1 > r0);
    KW_ASSERT_EQ(kw_engine_count(e), 2);
    /* CREATE of an existing one fails and changes nothing (all or nothing) */
    kw_update_t c2[2] = {up(KW_OP_CREATE, "document:d#viewer@user:c"),
                         up(KW_OP_CREATE, "document:d#owner@user:a")};
    KW_ASSERT_EQ(kw_engine_write(e, c2, 2, NULL, 0, 0, NULL, &d), KW_EEXISTS);
    KW_ASSERT_EQ(kw_engine_count(e), 2);
    KW_ASSERT_EQ(th_check(e, "document:d#view@user:c"), 0);
    KW_ASSERT_EQ(kw_engine_revision(e), r1);
    /* TOUCH is an upsert; DELETE of an absent one is a no-op */
    kw_update_t t[3] = {up(KW_OP_TOUCH, "document:d#owner@user:a"),
                        up(KW_OP_TOUCH, "document:d#viewer@user:c"),
                        up(KW_OP_DELETE, "document:d#viewer@user:zz")};
    KW_ASSERT_EQ(kw_engine_write(e, t, 3, NULL, 0, 0, &r2, &d), KW_OK);
    KW_ASSERT(r2 > r1);
    KW_ASSERT_EQ(kw_engine_count(e), 3);
    KW_ASSERT_EQ(th_check(e, "document:d#view@user:c"), 1);
    /* store-assigned revisions: must grow; CREATE behaves as TOUCH */
    kw_update_t c3 = up(KW_OP_CREATE, "document:d#owner@user:a");
    KW_ASSERT_EQ(kw_engine_write(e, &c3, 1, NULL, 0, r2, NULL, &d), KW_EINVAL);
    kw_revision_t r3 = 0;
    KW_ASSERT_EQ(kw_engine_write(e, &c3, 1, NULL, 0, r2 + 100, &r3, &d), KW_OK);
    KW_ASSERT_EQ(r3, r2 + 100);
    KW_ASSERT_EQ(kw_engine_count(e), 3);
    /* delete everything: nodes are recycled, nothing left behind */
    kw_update_t del[3] = {up(KW_OP_DELETE, "document:d#owner@user:a"),
                          up(KW_OP_DELETE, "document:d#viewer@user:b"),
                          up(KW_OP_DELETE, "document:d#viewer@user:c")};
    KW_ASSERT_EQ(kw_engine_write(e, del, 3, NULL, 0, 0, NULL, &d), KW_OK);
    KW_ASSERT_EQ(kw_engine_count(e), 0);
    KW_ASSERT_EQ(th_check(e, "document:d#view@user:a"), 0);
    kw_engine_free(e);
}

KW_TEST(engine_preconditions)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    KW_ASSERT_EQ(th_touch1(e, "document:d#owner@user:a"), KW_OK);
    kw_precondition_t pre = {.must_match = true,
                             .filter = {.resource_type = KW_STR("document"),
                                        .resource_id = KW_STR("d"),
                                        .relation = KW_STR("owner"),
                                        .has_subject = true,
                                        .subject_type = KW_STR("user"),
                                        .subject_id = KW_STR("a")}};
    kw_update_t u = up(KW_OP_TOUCH, "document:d#viewer@user:b");
    kw_diag_t d;
    KW_ASSERT_EQ(kw_engine_write(e, &u, 1, &pre, 1, 0, NULL, &d), KW_OK);
    pre.must_match = false;
    kw_update_t u2 = up(KW_OP_TOUCH, "document:d#viewer@user:c");
    KW_ASSERT_EQ(kw_engine_write(e, &u2, 1, &pre, 1, 0, NULL, &d), KW_EPRECOND);
    KW_ASSERT_EQ(th_check(e, "document:d#view@user:c"), 0);
    pre.filter.subject_id = KW_STR("nobody");
    KW_ASSERT_EQ(kw_engine_write(e, &u2, 1, &pre, 1, 0, NULL, &d), KW_OK);
    kw_engine_free(e);
}

typedef struct read_acc {
    char buf[2048];
    int n;
} read_acc_t;

static int read_cb(const kw_rel_t *r, void *ud)
{
    read_acc_t *a = ud;
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(r, &b);
    size_t used = strlen(a->buf);
    snprintf(a->buf + used, sizeof(a->buf) - used, "%s%s", a->n ? " " : "", b.ptr ? b.ptr : "");
    kw_buf_free(&b);
    a->n++;
    return 0;
}

KW_TEST(engine_read_and_delete_matching)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    const char *rels[] = {"document:b#viewer@user:z",
                          "document:a#viewer@user:y",
                          "document:a#owner@user:y",
                          "document:a#viewer@group:g#member",
                          "document:a#viewer@user:*",
                          "group:g#member@user:y",
                          NULL};
    KW_ASSERT_EQ(th_touch(e, rels), KW_OK);
    read_acc_t acc = {{0}, 0};
    kw_filter_t f = {.resource_type = KW_STR("document")};
    KW_ASSERT_EQ(kw_engine_read(e, &f, read_cb, &acc, NULL, NULL), KW_OK);
    KW_ASSERT_STR_EQ(acc.buf, "document:a#owner@user:y document:a#viewer@group:g#member "
                              "document:a#viewer@user:* document:a#viewer@user:y "
                              "document:b#viewer@user:z");
    /* by subject */
    memset(&acc, 0, sizeof(acc));
    kw_filter_t fs = {.resource_type = KW_STR("document"),
                      .has_subject = true,
                      .subject_type = KW_STR("user"),
                      .subject_id = KW_STR("y")};
    KW_ASSERT_EQ(kw_engine_read(e, &fs, read_cb, &acc, NULL, NULL), KW_OK);
    KW_ASSERT_STR_EQ(acc.buf, "document:a#owner@user:y document:a#viewer@user:y");
    /* exact subject relation */
    memset(&acc, 0, sizeof(acc));
    kw_filter_t fr = {.resource_type = KW_STR("document"),
                      .relation = KW_STR("viewer"),
                      .has_subject = true,
                      .subject_type = KW_STR("group"),
                      .subject_relation_set = true,
                      .subject_relation = KW_STR("member")};
    KW_ASSERT_EQ(kw_engine_read(e, &fr, read_cb, &acc, NULL, NULL), KW_OK);
    KW_ASSERT_STR_EQ(acc.buf, "document:a#viewer@group:g#member");
    /* delete with a limit: too many -> nothing deleted */
    kw_filter_t fa = {.resource_type = KW_STR("document"), .resource_id = KW_STR("a")};
    size_t nd = 0;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_engine_delete_matching(e, &fa, NULL, 0, 2, 0, &nd, NULL, &d), KW_ELIMIT);
    KW_ASSERT_EQ(kw_engine_count(e), 6);
    KW_ASSERT_EQ(kw_engine_delete_matching(e, &fa, NULL, 0, 0, 0, &nd, NULL, &d), KW_OK);
    KW_ASSERT_EQ(nd, 4);
    KW_ASSERT_EQ(kw_engine_count(e), 2);
    KW_ASSERT_EQ(th_check(e, "document:a#view@user:y"), 0);
    KW_ASSERT_EQ(th_check(e, "document:b#view@user:z"), 1);
    kw_filter_t bad = {.resource_type = KW_STR("nope")};
    KW_ASSERT_EQ(kw_engine_read(e, &bad, read_cb, &acc, NULL, &d), KW_EINVAL);
    kw_engine_free(e);
}

KW_TEST(engine_schema_swap)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    const char *rels[] = {"document:a#viewer@user:y", "document:a#viewer@group:g#member",
                          "group:g#member@user:m", NULL};
    KW_ASSERT_EQ(th_touch(e, rels), KW_OK);
    kw_diag_t d;
    kw_diag_clear(&d);
    /* dropping group#member from viewer is refused, naming the offender */
    const char *narrow = "definition user {}\n"
                         "definition group { relation member: user | group#member; }\n"
                         "definition document {\n"
                         "  relation viewer: user\n"
                         "  permission view = viewer\n"
                         "}\n";
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(narrow), NULL, &d), KW_ESCHEMA);
    KW_ASSERT(strstr(d.msg, "document:a#viewer@group:g#member") != NULL);
    KW_ASSERT_EQ(th_check(e, "document:a#view@user:m"), 1);
    /* a compatible schema with reordered relations: indices change, answers do not */
    const char *wider = "definition group { relation member: user | group#member; }\n"
                        "definition user {}\n"
                        "definition document {\n"
                        "  relation extra: user\n"
                        "  relation viewer: user | group#member\n"
                        "  permission view = viewer + extra\n"
                        "}\n";
    kw_revision_t before = kw_engine_revision(e), after = 0;
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(wider), &after, &d), KW_OK);
    KW_ASSERT(after > before);
    KW_ASSERT_EQ(kw_engine_count(e), 3);
    KW_ASSERT_EQ(th_check(e, "document:a#view@user:m"), 1);
    KW_ASSERT_EQ(th_check(e, "document:a#view@user:y"), 1);
    KW_ASSERT_EQ(th_check(e, "document:a#view@user:q"), 0);
    kw_buf_t b;
    kw_buf_init(&b);
    KW_ASSERT_EQ(kw_engine_schema_text(e, &b), KW_OK);
    KW_ASSERT(b.ptr && strstr(b.ptr, "relation extra") != NULL);
    kw_buf_free(&b);
    bool perm = false;
    KW_ASSERT(kw_engine_has(e, KW_STR("document"), KW_STR("view"), &perm) && perm);
    KW_ASSERT(!kw_engine_has(e, KW_STR("document"), KW_STR("nope"), &perm));
    /* a schema that drops definitions still in use is refused; caveats are accepted */
    KW_ASSERT_EQ(kw_engine_set_schema(e, KW_STR("caveat c(x int) { x == 1 }\ndefinition user {}\n"),
                                      NULL, &d),
                 KW_ESCHEMA);
    KW_ASSERT(kw_engine_has(e, KW_STR("document"), KW_STR("view"), &perm));
    kw_engine_free(e);
}

typedef struct subj_acc {
    char buf[1024];
} subj_acc_t;

static int subj_cb(const kw_subject_result_t *r, void *ud)
{
    subj_acc_t *a = ud;
    size_t used = strlen(a->buf);
    used += (size_t)snprintf(a->buf + used, sizeof(a->buf) - used, "%s%.*s", used ? " " : "",
                             (int)r->id.len, r->id.ptr);
    for (size_t i = 0; i < r->n_excluded; i++)
        used += (size_t)snprintf(a->buf + used, sizeof(a->buf) - used, "%s%.*s", i ? "," : "[-",
                                 (int)r->excluded[i].len, r->excluded[i].ptr);
    if (r->n_excluded)
        snprintf(a->buf + used, sizeof(a->buf) - used, "]");
    return 0;
}

KW_TEST(engine_lookups)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    const char *rels[] = {"document:a#viewer@user:y",      "document:b#viewer@group:g#member",
                          "group:g#member@group:h#member", "group:h#member@user:y",
                          "document:c#viewer@user:*",      "document:c#banned@user:y",
                          "document:d#owner@user:o",       "document:d#banned@user:o",
                          "document:e#viewer@user:*",      NULL};
    KW_ASSERT_EQ(th_touch(e, rels), KW_OK);
    th_ids_t ids;
    memset(&ids, 0, sizeof(ids));
    char buf[512];
    kw_subject_t y = {KW_STR("user"), KW_STR("y"), KW_STR("")};
    KW_ASSERT_EQ(kw_engine_lookup_resources(e, KW_STR("document"), KW_STR("view"), y, th_ids_cb,
                                            &ids, NULL, NULL),
                 KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "a,b,e");
    memset(&ids, 0, sizeof(ids));
    kw_subject_t hm = {KW_STR("group"), KW_STR("h"), KW_STR("member")};
    KW_ASSERT_EQ(kw_engine_lookup_resources(e, KW_STR("group"), KW_STR("member"), hm, th_ids_cb,
                                            &ids, NULL, NULL),
                 KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "g,h");
    subj_acc_t acc = {{0}};
    kw_object_t c = {KW_STR("document"), KW_STR("c")};
    KW_ASSERT_EQ(kw_engine_lookup_subjects(e, c, KW_STR("view"), KW_STR("user"), KW_STR(""),
                                           subj_cb, &acc, NULL, NULL),
                 KW_OK);
    KW_ASSERT_STR_EQ(acc.buf, "*[-y]");
    memset(&acc, 0, sizeof(acc));
    kw_object_t b = {KW_STR("document"), KW_STR("b")};
    KW_ASSERT_EQ(kw_engine_lookup_subjects(e, b, KW_STR("view"), KW_STR("user"), KW_STR(""),
                                           subj_cb, &acc, NULL, NULL),
                 KW_OK);
    KW_ASSERT_STR_EQ(acc.buf, "y");
    memset(&acc, 0, sizeof(acc));
    KW_ASSERT_EQ(kw_engine_lookup_subjects(e, b, KW_STR("view"), KW_STR("group"), KW_STR("member"),
                                           subj_cb, &acc, NULL, NULL),
                 KW_OK);
    KW_ASSERT(strcmp(acc.buf, "g h") == 0 || strcmp(acc.buf, "h g") == 0);
    kw_engine_free(e);
}

KW_TEST(engine_expand)
{
    kw_engine_t *e = th_engine(SCHEMA);
    KW_ASSERT(e);
    const char *rels[] = {"document:a#viewer@user:y", "document:a#viewer@group:g#member",
                          "document:a#banned@user:x", NULL};
    KW_ASSERT_EQ(th_touch(e, rels), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_expand_t *t = NULL;
    kw_object_t o = {KW_STR("document"), KW_STR("a")};
    KW_ASSERT_EQ(kw_engine_expand(e, o, KW_STR("view"), a, &t, NULL, NULL), KW_OK);
    /* (viewer + owner) - banned */
    KW_ASSERT_EQ(t->kind, KW_EXPAND_EXCLUSION);
    KW_ASSERT_EQ(t->n_children, 2);
    KW_ASSERT_EQ(t->children[0]->kind, KW_EXPAND_UNION);
    const kw_expand_t *viewer = t->children[0]->children[0];
    KW_ASSERT_EQ(viewer->kind, KW_EXPAND_LEAF);
    KW_ASSERT(kw_str_eq_c(viewer->relation, "viewer"));
    KW_ASSERT_EQ(viewer->n_subjects, 2);
    KW_ASSERT_EQ(t->children[1]->n_subjects, 1);
    KW_ASSERT(kw_str_eq_c(t->children[1]->subjects[0].id, "x"));
    /* the tree is independent of the engine once returned */
    KW_ASSERT_EQ(th_touch1(e, "document:zz#viewer@user:q"), KW_OK);
    kw_engine_free(e);
    KW_ASSERT(kw_str_eq_c(t->object.id, "a"));
    kw_arena_free(a);
}

/* Readers must never see half of a batch: the writer adds and removes pairs together. */
typedef struct conc {
    kw_engine_t *e;
    _Atomic int stop;
    _Atomic int bad;
    _Atomic long checks;
} conc_t;

static void *conc_reader(void *p)
{
    conc_t *c = p;
    char q1[96], q2[96];
    while (!c->stop) {
        for (int i = 0; i < 20; i++) {
            kw_check_item_t it[2];
            memset(it, 0, sizeof(it));
            snprintf(q1, sizeof(q1), "document:p%d#viewer@user:u%d", i, i);
            snprintf(q2, sizeof(q2), "document:p%d#owner@user:u%d", i, i);
            kw_rel_t r1, r2;
            kw_assert(kw_rel_parse(kw_str_c(q1), &r1, NULL) == KW_OK);
            kw_assert(kw_rel_parse(kw_str_c(q2), &r2, NULL) == KW_OK);
            it[0] = (kw_check_item_t){r1.resource, r1.relation, r1.subject, 0, 0, {0}};
            it[1] = (kw_check_item_t){r2.resource, r2.relation, r2.subject, 0, 0, {0}};
            kw_assert(kw_engine_check_bulk(c->e, it, 2, NULL) == KW_OK);
            if (it[0].rc || it[1].rc || it[0].result != it[1].result)
                c->bad++;
            c->checks++;
        }
    }
    return NULL;
}

KW_TEST(engine_concurrent_batches_are_atomic)
{
    conc_t c = {th_engine(SCHEMA), 0, 0, 0};
    KW_ASSERT(c.e);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, conc_reader, &c), 0);
    char q1[96], q2[96];
    for (int round = 0; round < 300; round++) {
        int i = round % 20;
        snprintf(q1, sizeof(q1), "document:p%d#viewer@user:u%d", i, i);
        snprintf(q2, sizeof(q2), "document:p%d#owner@user:u%d", i, i);
        const char *pair[2] = {q1, q2};
        kw_diag_t d;
        kw_op_t op = (round / 20) % 2 ? KW_OP_DELETE : KW_OP_TOUCH;
        kw_assert(th_write_op(c.e, op, pair, 2, &d) == KW_OK);
    }
    /* On a loaded machine the writer may finish before a reader was scheduled at all:
     * give the readers (bounded) time to overlap with at least the final state. */
    for (int waited = 0; c.checks < 200 && waited < 5000; waited++)
        usleep(1000);
    c.stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    KW_ASSERT_EQ(c.bad, 0);
    KW_ASSERT(c.checks > 0);
    kw_engine_free(c.e);
}

/* Every allocation failure during build + check gives an error (never "yes"), no leak. */
KW_TEST(engine_fault_injection)
{
    const char *rels[] = {"group:g#member@user:u",         "document:d#viewer@group:g#member",
                          "group:h#member@group:g#member", "document:d#banned@user:b",
                          "document:e#viewer@user:*",      NULL};
    int completed = 0;
    for (long n = 1; n < 400 && !completed; n++) {
        kw_engine_t *e = NULL;
        kw_fault_arm(n);
        int rc = kw_engine_new(&e);
        if (rc == KW_OK)
            rc = kw_engine_set_schema(e, kw_str_c(SCHEMA), NULL, NULL);
        if (rc == KW_OK) {
            kw_diag_t d;
            size_t nr = 0;
            while (rels[nr])
                nr++;
            rc = th_write_op(e, KW_OP_TOUCH, rels, nr, &d);
            if (rc != KW_OK && kw_engine_count(e) != 0) {
                kw_fault_arm(0);
                kw_engine_free(e);
                KW_FAIL_("fault %ld: a failed batch left relationships behind", n);
            }
        }
        int v1 = 0, v2 = 0, v3 = 0;
        if (rc == KW_OK) {
            v1 = th_check(e, "document:d#view@group:g#member");
            v2 = th_check(e, "document:d#view@user:b");
            v3 = th_check(e, "document:d#view@user:u");
        }
        bool fired = kw_fault_fired();
        kw_fault_arm(0); /* disarm before any assertion can return */
        kw_engine_free(e);
        if (rc == KW_OK) {
            if (v2 == 1 || !(v1 == 1 || v1 == KW_ENOMEM) || !(v3 == 1 || v3 == KW_ENOMEM))
                KW_FAIL_("fault %ld: v1=%d v2=%d v3=%d", n, v1, v2, v3);
        }
        if (!fired) {
            KW_ASSERT_EQ(rc, KW_OK);
            KW_ASSERT_EQ(v1, 1);
            completed = 1;
        } else if (!(rc == KW_OK || rc == KW_ENOMEM)) {
            KW_FAIL_("fault %ld: rc=%d", n, rc);
        }
    }
    KW_ASSERT(completed);
}
