/*
 * tests/unit/api/testing_test.c - serve-testing's instance registry (api/testing.c): one
 * instance per token, isolated (a schema and relationships written under token A are
 * invisible under token B), the same instance again for the same token, refusals of a
 * missing token and of a new token past the bound, and an instance's store bound.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/testing.h"
#include "api/v1svc.h"
#include "kw_test.h"

#define CHECK "/authzed.api.v1.PermissionsService/CheckPermission"
#define SCHEMA                                                                                     \
    "definition test/user {}\n"                                                                    \
    "definition test/document {\n"                                                                 \
    "  relation viewer: test/user\n"                                                               \
    "  permission view = viewer\n"                                                                 \
    "}\n"

static const kw_v1_caller_t *caller(kw_arena_t *a)
{
    static kw_v1_caller_t c;
    c.actor = KW_STR("test");
    c.request_id = KW_STR("req");
    c.arena = a;
    return &c;
}

static kw_update_t viewer(const char *doc, const char *user)
{
    kw_update_t u;
    memset(&u, 0, sizeof(u));
    u.op = KW_OP_CREATE;
    u.rel.resource = (kw_object_t){kw_str_c("test/document"), kw_str_c(doc)};
    u.rel.relation = KW_STR("viewer");
    u.rel.subject = (kw_subject_t){kw_str_c("test/user"), kw_str_c(user), KW_STR_NULL};
    return u;
}

static int check(kw_api_t *api, const char *doc, const char *user, kw_v1_permissionship_t *out,
                 kw_v1_status_t *st)
{
    kw_v1_check_req_t r;
    memset(&r, 0, sizeof(r));
    r.consistency.kind = KW_V1_FULLY_CONSISTENT;
    r.resource = (kw_object_t){kw_str_c("test/document"), kw_str_c(doc)};
    r.permission = KW_STR("view");
    r.subject = (kw_subject_t){kw_str_c("test/user"), kw_str_c(user), KW_STR_NULL};
    kw_v1_check_resp_t resp;
    kw_v1_status_clear(st);
    int rc = kw_v1_check(api, &r, &resp, st);
    if (rc == KW_OK)
        *out = resp.permissionship;
    return rc;
}

KW_TEST(testing_tokens_are_isolated_instances)
{
    kw_api_testing_t *t = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_api_testing_config_t cfg = {4, 1u << 20, false, 0};
    KW_ASSERT_EQ(kw_api_testing_new(&cfg, &t, &d), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_api_t *ia = NULL, *ib = NULL, *again = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer token-a", &ia, &d), KW_OK);
    KW_ASSERT_EQ(kw_api_testing_instance(t, "bearer   token-b", &ib, &d), KW_OK);
    KW_ASSERT_EQ(kw_api_testing_instance(t, "BEARER token-a", &again, &d), KW_OK);
    KW_ASSERT(ia != ib);
    KW_ASSERT(ia == again);
    KW_ASSERT_EQ(kw_api_testing_count(t), 2);

    /* Each instance's one preshared key is its token. */
    char actor[64];
    KW_ASSERT_EQ(kw_api_v1_authorize(ia, "Bearer token-a", actor, sizeof(actor)), KW_OK);
    KW_ASSERT(kw_api_v1_authorize(ia, "Bearer token-b", actor, sizeof(actor)) != KW_OK);

    /* A schema and a relationship under A ... */
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t at = 0;
    KW_ASSERT_EQ(kw_v1_write_schema(ia, caller(a), KW_STR(SCHEMA), &at, &st), KW_OK);
    kw_update_t u = viewer("doc1", "alice");
    kw_v1_write_req_t w = {&u, 1, NULL, 0, false, caller(a)};
    KW_ASSERT_EQ(kw_v1_write_relationships(ia, &w, &at, &st), KW_OK);
    KW_ASSERT(at > 0);
    kw_v1_permissionship_t p = 0;
    KW_ASSERT_EQ(check(ia, "doc1", "alice", &p, &st), KW_OK);
    KW_ASSERT_EQ(p, KW_V1_PERM_HAS);

    /* ... are invisible under B: no schema there (SpiceDB: FAILED_PRECONDITION). */
    kw_buf_t text;
    kw_buf_init(&text);
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw_v1_read_schema(ib, &text, &at, &st), KW_ENOTFOUND);
    KW_ASSERT_EQ(st.code, KW_GRPC_NOT_FOUND);
    KW_ASSERT(check(ib, "doc1", "alice", &p, &st) != KW_OK);
    KW_ASSERT_EQ(st.code, KW_GRPC_FAILED_PRECONDITION);
    KW_ASSERT_STR_EQ(st.reason, "ERROR_REASON_UNKNOWN_DEFINITION");
    /* B gets the same schema, still without A's relationship. */
    KW_ASSERT_EQ(kw_v1_write_schema(ib, caller(a), KW_STR(SCHEMA), &at, &st), KW_OK);
    KW_ASSERT_EQ(check(ib, "doc1", "alice", &p, &st), KW_OK);
    KW_ASSERT_EQ(p, KW_V1_PERM_NO);
    /* And A still reads its own schema text. */
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw_v1_read_schema(ia, &text, &at, &st), KW_OK);
    KW_ASSERT(text.len > 0);
    kw_buf_free(&text);

    kw_arena_free(a);
    kw_api_testing_free(t);
}

KW_TEST(testing_refuses_no_token_and_past_the_bound)
{
    kw_api_testing_t *t = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_api_testing_config_t cfg = {2, 1u << 20, false, 0};
    KW_ASSERT_EQ(kw_api_testing_new(&cfg, &t, &d), KW_OK);
    kw_api_t *api = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, NULL, &api, &d), KW_EAUTH);
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer ", &api, &d), KW_EAUTH);
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Basic dXNlcjpwdw==", &api, &d), KW_EAUTH);
    KW_ASSERT_EQ(kw_api_testing_count(t), 0);
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer one", &api, &d), KW_OK);
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer two", &api, &d), KW_OK);
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer three", &api, &d), KW_ELIMIT);
    KW_ASSERT(strstr(d.msg, "maximum of 2 instances") != NULL);
    /* The gRPC hook answers RESOURCE_EXHAUSTED with the same words; known tokens pass. */
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw_api_testing_resolve(t, CHECK, "Bearer three", &api, &st), KW_ELIMIT);
    KW_ASSERT_EQ(st.code, KW_GRPC_RESOURCE_EXHAUSTED);
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw_api_testing_resolve(t, CHECK, NULL, &api, &st), KW_EAUTH);
    KW_ASSERT_EQ(st.code, KW_GRPC_UNAUTHENTICATED);
    KW_ASSERT_EQ(kw_api_testing_resolve(t, CHECK, "Bearer two", &api, &st), KW_OK);
    KW_ASSERT_EQ(kw_api_testing_count(t), 2);
    kw_api_testing_free(t);

    kw_api_testing_config_t small = {1, 1000, false, 0};
    KW_ASSERT_EQ(kw_api_testing_new(&small, &t, &d), KW_EINVAL);
}

KW_TEST(testing_instance_store_bound_is_a_clear_error)
{
    kw_api_testing_t *t = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_api_testing_config_t cfg = {1, 1u << 20, false, 0}; /* 1 MiB of store */
    KW_ASSERT_EQ(kw_api_testing_new(&cfg, &t, &d), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_api_t *api = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer full", &api, &d), KW_OK);
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t at = 0;
    KW_ASSERT_EQ(kw_v1_write_schema(api, caller(a), KW_STR(SCHEMA), &at, &st), KW_OK);
    /* Batches of 1,000 relationships with long ids until the store is full. */
    enum { BATCH = 1000 };
    static kw_update_t ups[BATCH];
    static char ids[BATCH][96];
    int rc = KW_OK;
    size_t batches = 0;
    for (; batches < 200 && rc == KW_OK; batches++) {
        for (size_t i = 0; i < BATCH; i++) {
            snprintf(ids[i], sizeof(ids[i]), "doc-%04zu-%04zu-padding-padding-padding-padding",
                     batches, i);
            ups[i] = viewer(ids[i], "alice");
        }
        kw_v1_write_req_t w = {ups, BATCH, NULL, 0, false, caller(a)};
        kw_v1_status_clear(&st);
        rc = kw_v1_write_relationships(api, &w, &at, &st);
    }
    if (rc != KW_EBUDGET)
        fprintf(stderr, "rc %d code %d msg %s\n", rc, st.code, st.msg);
    KW_ASSERT_EQ(rc, KW_EBUDGET);
    KW_ASSERT_EQ(st.code, KW_GRPC_RESOURCE_EXHAUSTED);
    KW_ASSERT(strstr(st.msg, "in-memory database is full") != NULL);
    /* The refused batch changed nothing; what was written before still answers. */
    kw_v1_permissionship_t p = 0;
    KW_ASSERT_EQ(check(api, ids[0], "alice", &p, &st), KW_OK);
    KW_ASSERT_EQ(p, KW_V1_PERM_NO);
    KW_ASSERT_EQ(check(api, "doc-0000-0000-padding-padding-padding-padding", "alice", &p, &st),
                 KW_OK);
    KW_ASSERT_EQ(p, KW_V1_PERM_HAS);
    kw_arena_free(a);
    kw_api_testing_free(t);
}

KW_TEST(testing_readonly_port_refuses_writes_and_serves_reads)
{
    kw_api_testing_t *t = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_api_testing_new(NULL, &t, &d), KW_OK);
    static const char *const writes[] = {
        "/authzed.api.v1.PermissionsService/WriteRelationships",
        "/authzed.api.v1.PermissionsService/DeleteRelationships",
        "/authzed.api.v1.PermissionsService/ImportBulkRelationships",
        "/authzed.api.v1.SchemaService/WriteSchema",
        "/authzed.api.v1.ExperimentalService/BulkImportRelationships",
    };
    kw_api_t *api = NULL, *rw = NULL;
    kw_v1_status_t st;
    for (size_t i = 0; i < KW_ARRAY_LEN(writes); i++) {
        kw_v1_status_clear(&st);
        KW_ASSERT_EQ(kw_api_testing_resolve_readonly(t, writes[i], "Bearer ro", &api, &st),
                     KW_EFORBIDDEN);
        KW_ASSERT_EQ(st.code, KW_GRPC_UNAVAILABLE);
        KW_ASSERT_STR_EQ(st.msg, "service read-only");
        KW_ASSERT_STR_EQ(st.reason, "ERROR_REASON_SERVICE_READ_ONLY");
    }
    KW_ASSERT_EQ(kw_api_testing_count(t), 0); /* a refused write makes no instance */
    /* Reads reach the same instance as the read-write port's. */
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw_api_testing_resolve_readonly(t, CHECK, "Bearer ro", &api, &st), KW_OK);
    KW_ASSERT_EQ(kw_api_testing_resolve(t, writes[3], "Bearer ro", &rw, &st), KW_OK);
    KW_ASSERT(api == rw);
    KW_ASSERT(!kw_api_testing_is_write("/authzed.api.v1.WatchService/Watch"));
    KW_ASSERT(!kw_api_testing_is_write(NULL));
    kw_api_testing_free(t);
}

/* Has the instance of `token` the relationship doc1@alice (i.e. is it the old one)? */
static bool has_doc1(kw_api_testing_t *t, const char *token)
{
    kw_diag_t d;
    kw_api_t *api = NULL;
    kw_v1_status_t st;
    kw_v1_permissionship_t p = 0;
    if (kw_api_testing_instance(t, token, &api, &d) != KW_OK)
        return false;
    bool yes = check(api, "doc1", "alice", &p, &st) == KW_OK && p == KW_V1_PERM_HAS;
    kw_api_testing_release(t, api);
    return yes;
}

/* An instance with the schema and doc1@alice under `token` (given back at once). */
static bool populate(kw_api_testing_t *t, const char *token, kw_arena_t *a)
{
    kw_diag_t d;
    kw_api_t *api = NULL;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t at = 0;
    if (kw_api_testing_instance(t, token, &api, &d) != KW_OK)
        return false;
    kw_update_t u = viewer("doc1", "alice");
    kw_v1_write_req_t w = {&u, 1, NULL, 0, false, caller(a)};
    bool ok = kw_v1_write_schema(api, caller(a), KW_STR(SCHEMA), &at, &st) == KW_OK &&
              kw_v1_write_relationships(api, &w, &at, &st) == KW_OK;
    kw_api_testing_release(t, api);
    return ok;
}

KW_TEST(testing_evicts_the_least_recently_used_idle_instance)
{
    kw_api_testing_t *t = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_api_testing_config_t cfg = {2, 1u << 20, true, 0};
    KW_ASSERT_EQ(kw_api_testing_new(&cfg, &t, &d), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    KW_ASSERT(populate(t, "Bearer one", a));
    KW_ASSERT(populate(t, "Bearer two", a));
    KW_ASSERT(has_doc1(t, "Bearer one")); /* "one" used last: "two" is the LRU now */
    kw_api_t *three = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer three", &three, &d), KW_OK);
    KW_ASSERT_EQ(kw_api_testing_count(t), 2);
    KW_ASSERT_EQ(kw_api_testing_evicted(t), 1);
    KW_ASSERT(has_doc1(t, "Bearer one")); /* kept, with its data */
    /* "three" is still taken (in use): the next new token drops "one", never "three". */
    KW_ASSERT(!has_doc1(t, "Bearer two")); /* dropped: a new, empty instance (drops "one") */
    KW_ASSERT_EQ(kw_api_testing_evicted(t), 2);
    KW_ASSERT(!has_doc1(t, "Bearer one")); /* "one" was dropped for it (drops "two") */
    KW_ASSERT_EQ(kw_api_testing_evicted(t), 3);
    /* Every instance in use: a new token is refused, nothing is dropped. */
    kw_api_t *one = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer one", &one, &d), KW_OK);
    kw_diag_clear(&d);
    kw_api_t *x = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer four", &x, &d), KW_ELIMIT);
    KW_ASSERT(strstr(d.msg, "every one in use") != NULL);
    KW_ASSERT_EQ(kw_api_testing_evicted(t), 3);
    kw_api_testing_release(t, one);
    kw_api_testing_release(t, three);
    kw_arena_free(a);
    kw_api_testing_free(t);
}

KW_TEST(testing_evicts_idle_instances_after_idle_s)
{
    kw_api_testing_t *t = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_api_testing_config_t cfg = {8, 1u << 20, false, 1};
    KW_ASSERT_EQ(kw_api_testing_new(&cfg, &t, &d), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    KW_ASSERT(populate(t, "Bearer idle", a));
    kw_api_t *busy = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer busy", &busy, &d), KW_OK);
    struct timespec ts = {1, 200000000};
    nanosleep(&ts, NULL);
    kw_api_t *fresh = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer fresh", &fresh, &d), KW_OK);
    /* "idle" went (unused > 1 s); "busy" stays however old, it is in use. */
    KW_ASSERT_EQ(kw_api_testing_evicted(t), 1);
    KW_ASSERT_EQ(kw_api_testing_count(t), 2);
    kw_api_t *again = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer busy", &again, &d), KW_OK);
    KW_ASSERT(again == busy);
    kw_api_testing_release(t, again);
    kw_api_testing_release(t, busy);
    kw_api_testing_release(t, fresh);
    KW_ASSERT(!has_doc1(t, "Bearer idle")); /* back as a new, empty instance */
    kw_arena_free(a);
    kw_api_testing_free(t);
}
