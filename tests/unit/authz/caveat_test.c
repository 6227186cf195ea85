/*
 * tests/unit/authz/caveat_test.c - caveated and expiring relationships in the engine:
 * write rules (SpiceDB's traits, contexts bound at write, expiries in the past), storage
 * (read, touch, copy, format), three-valued Check with request contexts, conditional
 * lookups, Expand's caveats, expiry at query time against the engine clock, the sweep,
 * and a schema swap that keeps (and re-binds) attributes.
 */
#include <stdlib.h>

#include "engine_helpers.h"
#include "kw_test.h"

#define SEC 1000000LL
#define T0 (1800000000LL * SEC) /* 2027-01-15T08:00:00Z */

static const char *SCHEMA =
    "use expiration\n"
    "caveat over(x int) { x > 5 }\n"
    "caveat both(x int, y int) { x > 5 && y > 5 }\n"
    "definition user {}\n"
    "definition group {\n"
    "  relation member: user | user with over | user with expiration\n"
    "}\n"
    "definition folder {\n"
    "  relation viewer: user | user with over\n"
    "}\n"
    "definition doc {\n"
    "  relation parent: folder | folder with over | folder with expiration\n"
    "  relation viewer: user | user with over | user with both | "
    "user with expiration | user with over and expiration | "
    "group#member with over | user:* with over\n"
    "  relation editor: user | user with over\n"
    "  relation banned: user | user with over\n"
    "  relation plain: user\n"
    "  permission view = viewer + editor\n"
    "  permission edit = viewer & editor\n"
    "  permission safe = viewer - banned\n"
    "  permission inherited = parent->viewer\n"
    "  permission all_parents = parent.all(viewer)\n"
    "}\n";

/* The test clock. */
static int64_t clk_now = T0;
static int64_t test_clock(void *ud)
{
    (void)ud;
    return clk_now;
}

static kw_engine_t *cav_engine(void)
{
    kw_engine_t *e = th_engine(SCHEMA);
    if (e)
        kw_engine_set_clock(e, test_clock, NULL);
    clk_now = T0;
    return e;
}

/* Writes one relationship `text` with a caveat (NULL: none), context and expiry. */
static int wr(kw_engine_t *e, kw_op_t op, const char *text, const char *cav, const char *ctx,
              int64_t exp, kw_diag_t *d)
{
    kw_update_t up = {op, {{{0}}}};
    int rc = kw_rel_parse(kw_str_c(text), &up.rel, d);
    if (rc != KW_OK)
        return rc;
    up.rel.caveat = cav ? kw_str_c(cav) : KW_STR_NULL;
    up.rel.caveat_ctx = ctx ? kw_str_c(ctx) : KW_STR_NULL;
    up.rel.expires_at = exp;
    rc = kw_engine_validate(e, &up, 1, d);
    if (rc == KW_OK)
        rc = kw_engine_write(e, &up, 1, NULL, 0, 0, NULL, d);
    return rc;
}

static int touch(kw_engine_t *e, const char *text, const char *cav, const char *ctx, int64_t exp)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = wr(e, KW_OP_TOUCH, text, cav, ctx, exp, &d);
    if (rc != KW_OK)
        fprintf(stderr, "  write %s: %s\n", text, d.msg);
    return rc;
}

/* Checks `q` with request context `ctx` (NULL: none): 0 no, 1 yes, 2 conditional (missing
 * names into miss), or the negative error. */
static int ck(kw_engine_t *e, const char *q, const char *ctx, char *miss, size_t cap)
{
    kw_rel_t r;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_rel_parse(kw_str_c(q), &r, &d);
    if (rc != KW_OK)
        return rc;
    kw_buf_t m;
    kw_buf_init(&m);
    kw_check_result_t res = KW_CHECK_NO;
    rc = kw_engine_check_ctx(e, r.resource, r.relation, r.subject,
                             ctx ? kw_str_c(ctx) : KW_STR_NULL, &res, &m, NULL, &d);
    if (miss)
        snprintf(miss, cap, "%.*s", (int)m.len, m.ptr ? m.ptr : "");
    kw_buf_free(&m);
    if (rc != KW_OK)
        return rc;
    return (int)res;
}

#define CK(e, q, ctx) ck(e, q, ctx, NULL, 0)

KW_TEST(caveat_write_traits_follow_spicedb)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    kw_diag_t d;
    kw_diag_clear(&d);
    /* plain relation: no caveat, no expiry */
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#plain@user:u", "over", "{\"x\": 1}", 0, &d), KW_EINVAL);
    KW_ASSERT_STR_EQ(d.msg,
                     "relation \"doc#plain\" does not allow subject type \"user with over\"");
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#plain@user:u", NULL, NULL, T0 + SEC, &d), KW_EINVAL);
    KW_ASSERT_STR_EQ(d.msg,
                     "relation \"doc#plain\" does not allow subject type \"user with expiration\"");
    /* unknown caveat, context without a caveat */
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#viewer@user:u", "nope", NULL, 0, &d), KW_EINVAL);
    KW_ASSERT_STR_EQ(d.msg, "caveat \"nope\" not found");
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#viewer@user:u", NULL, "{\"x\": 1}", 0, &d), KW_EINVAL);
    /* a caveat with expiration needs the `with c and expiration` entry: editor lacks it */
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#editor@user:u", "over", NULL, T0 + SEC, &d), KW_EINVAL);
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#viewer@user:u", "over", NULL, T0 + SEC, &d), KW_OK);
    /* a wildcard only with its caveat */
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#viewer@user:*", NULL, NULL, 0, &d), KW_EINVAL);
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:a#viewer@user:*", "over", NULL, 0, &d), KW_OK);
    /* a context that does not bind to the parameters: refused, names the relationship */
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:b#viewer@user:u", "over", "{\"x\": \"ten\"}", 0, &d),
                 KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "doc:b#viewer@user:u") != NULL);
    /* an expiry in the past (or now) is refused on a new write */
    KW_ASSERT_EQ(wr(e, KW_OP_TOUCH, "doc:b#viewer@user:u", NULL, NULL, T0, &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "expiration time in the past") != NULL);
    KW_ASSERT_EQ(kw_engine_count(e), 2);
    kw_engine_free(e);
}

/* Collects Read results as formatted strings. */
typedef struct rd {
    char s[8][200];
    int n;
} rd_t;

static int on_read(const kw_rel_t *r, void *ud)
{
    rd_t *o = ud;
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(r, &b);
    if (o->n < 8)
        snprintf(o->s[o->n++], 200, "%.*s", (int)b.len, b.ptr);
    kw_buf_free(&b);
    return 0;
}

static int read_all(kw_engine_t *e, const char *type, rd_t *o)
{
    kw_filter_t f = {.resource_type = kw_str_c(type)};
    memset(o, 0, sizeof(*o));
    kw_diag_t d;
    kw_diag_clear(&d);
    return kw_engine_read(e, &f, on_read, o, NULL, &d);
}

KW_TEST(caveat_read_touch_format_copy)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:u", "over", "{\"x\":1}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:v", NULL, NULL, T0 + 90 * SEC + 5), KW_OK);
    rd_t o;
    KW_ASSERT_EQ(read_all(e, "doc", &o), KW_OK);
    KW_ASSERT_EQ(o.n, 2);
    KW_ASSERT_STR_EQ(o.s[0], "doc:a#viewer@user:u[over:{\"x\":1}]");
    KW_ASSERT_STR_EQ(o.s[1], "doc:a#viewer@user:v[expiration:2027-01-15T08:01:30.000005Z]");
    /* TOUCH replaces the attributes: the caveat goes, an expiry comes, and back */
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:u", NULL, NULL, T0 + 3600 * SEC), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:v", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(read_all(e, "doc", &o), KW_OK);
    KW_ASSERT_STR_EQ(o.s[0], "doc:a#viewer@user:u[expiration:2027-01-15T09:00:00Z]");
    KW_ASSERT_STR_EQ(o.s[1], "doc:a#viewer@user:v");
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:u", "over", NULL, T0 + SEC), KW_OK);
    KW_ASSERT_EQ(read_all(e, "doc", &o), KW_OK);
    KW_ASSERT_STR_EQ(o.s[0], "doc:a#viewer@user:u[over][expiration:2027-01-15T08:00:01Z]");
    /* kw_rel_copy keeps all eight strings and the expiry */
    kw_rel_t r = {.resource = {KW_STR("doc"), KW_STR("a")},
                  .relation = KW_STR("viewer"),
                  .subject = {KW_STR("user"), KW_STR("u"), KW_STR_NULL},
                  .caveat = KW_STR("over"),
                  .caveat_ctx = KW_STR("{\"x\":2}"),
                  .expires_at = 42};
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_rel_t c;
    KW_ASSERT_EQ(kw_rel_copy(a, &r, &c), KW_OK);
    KW_ASSERT(c.caveat.ptr != r.caveat.ptr && kw_str_eq(c.caveat, r.caveat));
    KW_ASSERT(kw_str_eq(c.caveat_ctx, r.caveat_ctx));
    KW_ASSERT_EQ(c.expires_at, 42);
    kw_arena_free(a);
    kw_engine_free(e);
}

KW_TEST(caveat_check_three_valued)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    char miss[200];
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:hi", "over", "{\"x\": 10}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:lo", "over", "{\"x\": 1}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:open", "over", NULL, 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:two", "both", "{\"y\": 9}", 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:hi", NULL), KW_CHECK_YES);
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:lo", NULL), KW_CHECK_NO);
    KW_ASSERT_EQ(ck(e, "doc:a#viewer@user:open", NULL, miss, sizeof(miss)), KW_CHECK_CONDITIONAL);
    KW_ASSERT_STR_EQ(miss, "x");
    KW_ASSERT_EQ(ck(e, "doc:a#view@user:two", NULL, miss, sizeof(miss)), KW_CHECK_CONDITIONAL);
    KW_ASSERT_STR_EQ(miss, "x");
    /* the request context completes it; the relationship's context wins per field */
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:open", "{\"x\": 6}"), KW_CHECK_YES);
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:open", "{\"x\": 5}"), KW_CHECK_NO);
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:lo", "{\"x\": 50}"), KW_CHECK_NO);
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:two", "{\"x\": 6, \"y\": 0}"), KW_CHECK_YES);
    /* the old entry point: no context, CONDITIONAL never YES */
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:open"), 0);
    /* a request context of the wrong type for the caveat: an error, never yes */
    KW_ASSERT(CK(e, "doc:a#viewer@user:open", "{\"x\": \"no\"}") < 0);
    /* ... unless the relationship's own context sets that parameter: the request's value
     * is overridden before it is converted, as in SpiceDB */
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:hi", "{\"x\": \"no\"}"), KW_CHECK_YES);
    KW_ASSERT_EQ(CK(e, "doc:a#viewer@user:lo", "{\"x\": \"no\"}"), KW_CHECK_NO);
    /* union: a plain YES beats a conditional; intersection keeps it conditional */
    KW_ASSERT_EQ(touch(e, "doc:a#editor@user:open", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:a#view@user:open", NULL), KW_CHECK_YES);
    KW_ASSERT_EQ(ck(e, "doc:a#edit@user:open", NULL, miss, sizeof(miss)), KW_CHECK_CONDITIONAL);
    KW_ASSERT_STR_EQ(miss, "x");
    KW_ASSERT_EQ(CK(e, "doc:a#edit@user:open", "{\"x\": 9}"), KW_CHECK_YES);
    KW_ASSERT_EQ(CK(e, "doc:a#edit@user:hi", NULL), KW_CHECK_NO);
    /* exclusion: a conditional ban makes a YES conditional, a false one leaves it */
    KW_ASSERT_EQ(touch(e, "doc:a#banned@user:hi", "over", NULL, 0), KW_OK);
    KW_ASSERT_EQ(ck(e, "doc:a#safe@user:hi", NULL, miss, sizeof(miss)), KW_CHECK_CONDITIONAL);
    KW_ASSERT_STR_EQ(miss, "x");
    KW_ASSERT_EQ(CK(e, "doc:a#safe@user:hi", "{\"x\": 1}"), KW_CHECK_YES);
    KW_ASSERT_EQ(CK(e, "doc:a#safe@user:hi", "{\"x\": 7}"), KW_CHECK_NO);
    /* a conditional minus a definite ban is no */
    KW_ASSERT_EQ(touch(e, "doc:a#banned@user:open", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:a#safe@user:open", NULL), KW_CHECK_NO);
    kw_engine_free(e);
}

KW_TEST(caveat_through_sets_arrows_and_wildcards)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    char miss[200];
    /* a caveated subject-set edge ANDs with the member's own caveat */
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@group:g#member", "over", "{\"x\": 9}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "group:g#member@user:m", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "group:g#member@user:c", "over", NULL, 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:a#view@user:m", NULL), KW_CHECK_YES);
    KW_ASSERT_EQ(ck(e, "doc:a#view@user:c", NULL, miss, sizeof(miss)), KW_CHECK_CONDITIONAL);
    KW_ASSERT_STR_EQ(miss, "x");
    KW_ASSERT_EQ(touch(e, "doc:b#viewer@group:g#member", "over", "{\"x\": 0}", 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:b#view@user:m", NULL), KW_CHECK_NO);
    /* arrows: the tupleset edge's caveat applies */
    KW_ASSERT_EQ(touch(e, "doc:c#parent@folder:f", "over", NULL, 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "folder:f#viewer@user:m", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:c#inherited@user:m", NULL), KW_CHECK_CONDITIONAL);
    KW_ASSERT_EQ(CK(e, "doc:c#inherited@user:m", "{\"x\": 8}"), KW_CHECK_YES);
    KW_ASSERT_EQ(CK(e, "doc:c#inherited@user:m", "{\"x\": 2}"), KW_CHECK_NO);
    /* .all(): every term must hold; a conditional term keeps it conditional */
    KW_ASSERT_EQ(touch(e, "doc:c#parent@folder:f2", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "folder:f2#viewer@user:m", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:c#all_parents@user:m", NULL), KW_CHECK_CONDITIONAL);
    KW_ASSERT_EQ(CK(e, "doc:c#all_parents@user:m", "{\"x\": 8}"), KW_CHECK_YES);
    KW_ASSERT_EQ(CK(e, "doc:c#all_parents@user:m", "{\"x\": 1}"), KW_CHECK_NO);
    /* a caveated wildcard */
    KW_ASSERT_EQ(touch(e, "doc:w#viewer@user:*", "over", NULL, 0), KW_OK);
    KW_ASSERT_EQ(CK(e, "doc:w#view@user:anyone", NULL), KW_CHECK_CONDITIONAL);
    KW_ASSERT_EQ(CK(e, "doc:w#view@user:anyone", "{\"x\": 6}"), KW_CHECK_YES);
    kw_engine_free(e);
}

KW_TEST(caveat_bulk_contexts_do_not_share_answers)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@group:g#member", "over", "{\"x\": 9}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "group:g#member@user:c", "over", NULL, 0), KW_OK);
    kw_check_item_t it[4];
    memset(it, 0, sizeof(it));
    const char *ctx[4] = {"{\"x\": 9}", "{\"x\": 1}", "", "{\"x\": 9}"};
    for (int i = 0; i < 4; i++) {
        it[i].resource = (kw_object_t){KW_STR("doc"), KW_STR("a")};
        it[i].permission = KW_STR("view");
        it[i].subject = (kw_subject_t){KW_STR("user"), KW_STR("c"), KW_STR_NULL};
        it[i].context = kw_str_c(ctx[i]);
    }
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    KW_ASSERT_EQ(kw_engine_check_bulk_ctx(e, it, 4, a, NULL), KW_OK);
    KW_ASSERT_EQ(it[0].result, KW_CHECK_YES);
    KW_ASSERT_EQ(it[1].result, KW_CHECK_NO);
    KW_ASSERT_EQ(it[2].result, KW_CHECK_CONDITIONAL);
    KW_ASSERT(kw_str_eq(it[2].missing, KW_STR("x")));
    KW_ASSERT_EQ(it[3].result, KW_CHECK_YES);
    for (int i = 0; i < 4; i++)
        KW_ASSERT_EQ(it[i].rc, KW_OK);
    kw_arena_free(a);
    kw_engine_free(e);
}

/* Lookup results as "id" or "id?missing", sorted and joined. */
typedef struct lk {
    th_ids_t ids;
} lk_t;

static int on_res(const kw_resource_result_t *r, void *ud)
{
    th_ids_t *ids = ud;
    if (ids->n < 256)
        snprintf(ids->items[ids->n++], 64, "%.*s%s%.*s", (int)r->id.len, r->id.ptr,
                 r->conditional ? "?" : "", (int)r->missing.len,
                 r->missing.ptr ? r->missing.ptr : "");
    return 0;
}

static int on_subj(const kw_subject_result_t *r, void *ud)
{
    th_ids_t *ids = ud;
    char ex[64] = "";
    for (size_t i = 0; i < r->n_excluded; i++)
        snprintf(ex + strlen(ex), sizeof(ex) - strlen(ex), "-%.*s", (int)r->excluded[i].len,
                 r->excluded[i].ptr);
    if (ids->n < 256)
        snprintf(ids->items[ids->n++], 64, "%.*s%s%s%.*s", (int)r->id.len, r->id.ptr, ex,
                 r->conditional ? "?" : "", (int)r->missing.len,
                 r->missing.ptr ? r->missing.ptr : "");
    return 0;
}

KW_TEST(caveat_lookups_flag_conditional_results)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    KW_ASSERT_EQ(touch(e, "doc:yes#viewer@user:u", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:cond#viewer@user:u", "over", NULL, 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:no#viewer@user:u", "over", "{\"x\": 0}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:cond#viewer@user:v", "both", "{\"x\": 7}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:cond#viewer@user:w", NULL, NULL, 0), KW_OK);
    kw_diag_t d;
    kw_diag_clear(&d);
    char buf[512];
    th_ids_t ids = {0};
    kw_subject_t u = {KW_STR("user"), KW_STR("u"), KW_STR_NULL};
    KW_ASSERT_EQ(kw_engine_lookup_resources_ctx(e, KW_STR("doc"), KW_STR("view"), u, KW_STR_NULL,
                                                on_res, &ids, NULL, &d),
                 KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "cond?x,yes");
    memset(&ids, 0, sizeof(ids));
    KW_ASSERT_EQ(kw_engine_lookup_resources_ctx(e, KW_STR("doc"), KW_STR("view"), u,
                                                KW_STR("{\"x\": 6}"), on_res, &ids, NULL, &d),
                 KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "cond,yes");
    /* the entry point without context reports only YES */
    memset(&ids, 0, sizeof(ids));
    KW_ASSERT_EQ(
        kw_engine_lookup_resources(e, KW_STR("doc"), KW_STR("view"), u, th_ids_cb, &ids, NULL, &d),
        KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "yes");
    /* LookupSubjects */
    memset(&ids, 0, sizeof(ids));
    kw_object_t cond = {KW_STR("doc"), KW_STR("cond")};
    KW_ASSERT_EQ(kw_engine_lookup_subjects_ctx(e, cond, KW_STR("view"), KW_STR("user"), KW_STR_NULL,
                                               KW_STR_NULL, on_subj, &ids, NULL, &d),
                 KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "u?x,v?y,w");
    memset(&ids, 0, sizeof(ids));
    KW_ASSERT_EQ(kw_engine_lookup_subjects(e, cond, KW_STR("view"), KW_STR("user"), KW_STR_NULL,
                                           on_subj, &ids, NULL, &d),
                 KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "w");
    /* a conditional wildcard, and the subjects it does not cover unconditionally */
    KW_ASSERT_EQ(touch(e, "doc:cond#viewer@user:*", "over", NULL, 0), KW_OK);
    memset(&ids, 0, sizeof(ids));
    KW_ASSERT_EQ(kw_engine_lookup_subjects_ctx(e, cond, KW_STR("view"), KW_STR("user"), KW_STR_NULL,
                                               KW_STR_NULL, on_subj, &ids, NULL, &d),
                 KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "*-u-v?x,u?x,v?x,y,w");
    kw_engine_free(e);
}

KW_TEST(caveat_expand_carries_caveats)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:c", "over", "{\"x\":3}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:p", NULL, NULL, 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:gone", NULL, NULL, T0 + SEC), KW_OK);
    clk_now = T0 + SEC;
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_expand_t *x = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_expand(e, (kw_object_t){KW_STR("doc"), KW_STR("a")}, KW_STR("viewer"), a,
                                  &x, NULL, &d),
                 KW_OK);
    KW_ASSERT_EQ(x->kind, KW_EXPAND_LEAF);
    KW_ASSERT_EQ(x->n_subjects, 2); /* the expired one is left out */
    KW_ASSERT(x->caveats != NULL);
    KW_ASSERT(kw_str_eq(x->subjects[0].id, KW_STR("c")));
    KW_ASSERT(kw_str_eq(x->caveats[0].name, KW_STR("over")));
    KW_ASSERT(kw_str_eq(x->caveats[0].context, KW_STR("{\"x\":3}")));
    KW_ASSERT(kw_str_eq(x->subjects[1].id, KW_STR("p")));
    KW_ASSERT_EQ(x->caveats[1].name.len, 0);
    kw_arena_free(a);
    kw_engine_free(e);
}

KW_TEST(expiry_invisible_from_its_instant)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    int64_t t = T0 + 10 * SEC;
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:u", NULL, NULL, t), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@group:g#member", "over", "{\"x\": 9}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "group:g#member@user:m", NULL, NULL, t), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:b#parent@folder:f", NULL, NULL, t), KW_OK);
    KW_ASSERT_EQ(touch(e, "folder:f#viewer@user:u", NULL, NULL, 0), KW_OK);
    clk_now = t - 1;
    KW_ASSERT_EQ(th_check(e, "doc:a#view@user:u"), 1);
    KW_ASSERT_EQ(th_check(e, "doc:a#view@user:m"), 1);
    KW_ASSERT_EQ(th_check(e, "doc:b#inherited@user:u"), 1);
    KW_ASSERT_EQ(th_check(e, "doc:b#all_parents@user:u"), 1);
    clk_now = t;
    KW_ASSERT_EQ(th_check(e, "doc:a#view@user:u"), 0);
    KW_ASSERT_EQ(th_check(e, "doc:a#view@user:m"), 0);
    KW_ASSERT_EQ(th_check(e, "doc:b#inherited@user:u"), 0);
    KW_ASSERT_EQ(th_check(e, "doc:b#all_parents@user:u"), 0); /* no parent left: false */
    th_ids_t ids = {0};
    char buf[256];
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_subject_t u = {KW_STR("user"), KW_STR("u"), KW_STR_NULL};
    KW_ASSERT_EQ(
        kw_engine_lookup_resources(e, KW_STR("doc"), KW_STR("view"), u, th_ids_cb, &ids, NULL, &d),
        KW_OK);
    KW_ASSERT_STR_EQ(th_ids_join(&ids, buf, sizeof(buf)), "");
    rd_t o;
    KW_ASSERT_EQ(read_all(e, "group", &o), KW_OK);
    KW_ASSERT_EQ(o.n, 0);
    /* preconditions do not see it; CREATE over it succeeds */
    kw_precondition_t pre = {true, {.resource_type = KW_STR("group")}};
    kw_update_t up = {KW_OP_CREATE,
                      {{KW_STR("group"), KW_STR("g")},
                       KW_STR("member"),
                       {KW_STR("user"), KW_STR("m"), KW_STR_NULL}}};
    KW_ASSERT_EQ(kw_engine_write(e, &up, 1, &pre, 1, 0, NULL, &d), KW_EPRECOND);
    KW_ASSERT_EQ(kw_engine_write(e, &up, 1, NULL, 0, 0, NULL, &d), KW_OK);
    KW_ASSERT_EQ(th_check(e, "doc:a#view@user:m"), 1);
    /* a replay (at != 0) may carry an expiry already past: kept, invisible */
    up.op = KW_OP_TOUCH;
    up.rel.expires_at = T0;
    KW_ASSERT_EQ(kw_engine_write(e, &up, 1, NULL, 0, kw_engine_revision(e) + 1, NULL, &d), KW_OK);
    KW_ASSERT_EQ(th_check(e, "doc:a#view@user:m"), 0);
    kw_engine_free(e);
}

KW_TEST(expiry_sweep_removes_from_memory)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:u", NULL, NULL, T0 + SEC), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:v", NULL, NULL, T0 + 2 * SEC), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:b#viewer@user:w", "over", NULL, T0 + SEC), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:x", NULL, NULL, 0), KW_OK);
    size_t before = kw_engine_memory(e);
    kw_revision_t rev = kw_engine_revision(e);
    size_t n = 99;
    KW_ASSERT_EQ(kw_engine_sweep_expired(e, T0, &n), KW_OK);
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT_EQ(kw_engine_sweep_expired(e, T0 + SEC, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_EQ(kw_engine_count(e), 2);
    KW_ASSERT_EQ(kw_engine_revision(e), rev);
    KW_ASSERT(kw_engine_memory(e) < before);
    clk_now = T0 + 5 * SEC;
    KW_ASSERT_EQ(kw_engine_sweep_expired(e, 0, &n), KW_OK); /* the engine clock */
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(kw_engine_count(e), 1);
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:x"), 1);
    kw_engine_free(e);
}

KW_TEST(caveat_schema_swap_keeps_and_rebinds)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:u", "over", "{\"x\": 7}", 0), KW_OK);
    KW_ASSERT_EQ(touch(e, "doc:a#viewer@user:e", NULL, NULL, T0 + SEC), KW_OK);
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:u"), 1);
    /* the same caveat with another body: the stored context binds to the new program */
    const char *s2 = "use expiration\n"
                     "caveat over(x int) { x > 8 }\n"
                     "definition user {}\n"
                     "definition doc {\n"
                     "  relation viewer: user with over | user with expiration\n"
                     "}\n";
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(s2), NULL, &d), KW_OK);
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:u"), 0);
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:e"), 1);
    rd_t o;
    KW_ASSERT_EQ(read_all(e, "doc", &o), KW_OK);
    KW_ASSERT_STR_EQ(o.s[0], "doc:a#viewer@user:e[expiration:2027-01-15T08:00:01Z]");
    KW_ASSERT_STR_EQ(o.s[1], "doc:a#viewer@user:u[over:{\"x\": 7}]");
    /* removing a caveat still in use is refused, naming it */
    const char *s3 = "use expiration\n"
                     "definition user {}\n"
                     "definition doc {\n"
                     "  relation viewer: user | user with expiration\n"
                     "}\n";
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(s3), NULL, &d), KW_ESCHEMA);
    KW_ASSERT(strstr(d.msg, "cannot remove caveat \"over\"") != NULL);
    /* a parameter type change the stored context no longer fits is refused too */
    const char *s4 = "use expiration\n"
                     "caveat over(x string) { x == \"a\" }\n"
                     "definition user {}\n"
                     "definition doc {\n"
                     "  relation viewer: user with over | user with expiration\n"
                     "}\n";
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(s4), NULL, &d), KW_ESCHEMA);
    /* the expiry trait removed while an expiring relationship exists: refused */
    const char *s5 = "caveat over(x int) { x > 8 }\n"
                     "definition user {}\n"
                     "definition doc {\n"
                     "  relation viewer: user with over | user\n"
                     "}\n";
    KW_ASSERT_EQ(kw_engine_set_schema(e, kw_str_c(s5), NULL, &d), KW_ESCHEMA);
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:e"), 1);
    kw_engine_free(e);
}

/* A feed of two relationships with attributes, for kw_engine_replace_graph. */
static int feed2(void *ud, kw_rel_cb emit, void *emit_ud, kw_revision_t *rev)
{
    (void)ud;
    kw_rel_t a = {.resource = {KW_STR("doc"), KW_STR("a")},
                  .relation = KW_STR("viewer"),
                  .subject = {KW_STR("user"), KW_STR("u"), KW_STR_NULL},
                  .caveat = KW_STR("over"),
                  .caveat_ctx = KW_STR("{\"x\": 7}")};
    kw_rel_t b = {.resource = {KW_STR("doc"), KW_STR("a")},
                  .relation = KW_STR("viewer"),
                  .subject = {KW_STR("user"), KW_STR("old"), KW_STR_NULL},
                  .expires_at = T0 - SEC}; /* already past: loaded, invisible */
    int rc = emit(&a, emit_ud);
    if (rc == 0)
        rc = emit(&b, emit_ud);
    *rev = 7;
    return rc;
}

KW_TEST(caveat_replace_graph_loads_attributes)
{
    kw_engine_t *e = cav_engine();
    KW_ASSERT(e != NULL);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_engine_replace_graph(e, KW_STR_NULL, feed2, NULL, NULL, &d), KW_OK);
    KW_ASSERT_EQ(kw_engine_count(e), 2);
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:u"), 1);
    KW_ASSERT_EQ(th_check(e, "doc:a#viewer@user:old"), 0);
    size_t n = 0;
    KW_ASSERT_EQ(kw_engine_sweep_expired(e, 0, &n), KW_OK);
    KW_ASSERT_EQ(n, 1);
    kw_engine_free(e);
}

/* Every allocation of a caveated write and check fails once: an error, never a yes, and
 * nothing half-written. */
KW_TEST(caveat_fault_injection)
{
    for (long k = 1; k < 400; k++) {
        kw_engine_t *e = cav_engine();
        KW_ASSERT(e != NULL);
        KW_ASSERT_EQ(touch(e, "doc:a#viewer@group:g#member", "over", "{\"x\": 9}", 0), KW_OK);
        kw_update_t up = {KW_OP_TOUCH,
                          {{KW_STR("group"), KW_STR("g")},
                           KW_STR("member"),
                           {KW_STR("user"), KW_STR("c"), KW_STR_NULL}}};
        up.rel.caveat = KW_STR("over");
        up.rel.caveat_ctx = KW_STR("{\"x\": 2, \"y\": 3}");
        kw_diag_t d;
        kw_diag_clear(&d);
        kw_fault_arm(k);
        kw_diag_t wd;
        kw_diag_clear(&wd);
        int wrc = kw_engine_write(e, &up, 1, NULL, 0, 0, NULL, &wd);
        kw_check_result_t res = KW_CHECK_NO;
        kw_diag_clear(&d);
        int crc = kw_engine_check_ctx(e, (kw_object_t){KW_STR("doc"), KW_STR("a")}, KW_STR("view"),
                                      (kw_subject_t){KW_STR("user"), KW_STR("c"), KW_STR_NULL},
                                      KW_STR("{\"x\": 1}"), &res, NULL, NULL, &d);
        bool fired = kw_fault_fired();
        kw_fault_arm(0);
        /* a failed allocation inside the JSON reader may surface as a context that does
         * not parse (KW_EINVAL): refused either way */
        if (wrc != KW_OK && wrc != KW_ENOMEM)
            if (!(fired && wrc == KW_EINVAL))
                KW_FAIL_("k=%ld fired=%d wrc=%d %s", k, (int)fired, wrc, wd.msg);
        if (wrc != KW_OK)
            KW_ASSERT_EQ(kw_engine_count(e), 1);
        KW_ASSERT(crc == KW_OK || crc < 0);
        if (crc == KW_OK && wrc == KW_OK)
            KW_ASSERT_EQ(res, KW_CHECK_NO); /* the request's x = 1 makes the member's false */
        if (crc == KW_OK && wrc != KW_OK)
            KW_ASSERT_EQ(res, KW_CHECK_NO); /* no member at all */
        kw_engine_free(e);
        if (!fired)
            break;
    }
}
