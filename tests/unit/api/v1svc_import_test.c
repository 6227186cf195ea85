/*
 * tests/unit/api/v1svc_import_test.c - ImportBulkRelationships and a client that goes away
 * after its last message: the service asks the transport right before the commit, and a
 * cancelled (or timed-out) import is rolled back whole; a live one commits. Runs on a
 * serve-testing instance (a real engine, sync and in-memory store).
 */
#include <stdio.h>
#include <string.h>

#include "api/testing.h"
#include "api/v1svc_more.h"
#include "kw_test.h"

#define SCHEMA                                                                                     \
    "definition user {}\n"                                                                         \
    "definition doc {\n"                                                                           \
    "  relation viewer: user\n"                                                                    \
    "  permission view = viewer\n"                                                                 \
    "}\n"

typedef struct feed {
    int n, i;
    char ids[2500][16];
    int alive_rc;
    int asked; /* times alive was asked */
    int read_when_asked;
} feed_t;

static int feed_next(void *ud, kw_rel_t *rel, kw_diag_t *diag)
{
    (void)diag;
    feed_t *f = ud;
    if (f->i == f->n)
        return KW_ENOTFOUND;
    snprintf(f->ids[f->i], sizeof(f->ids[0]), "d%d", f->i);
    rel->resource = (kw_object_t){KW_STR("doc"), kw_str_c(f->ids[f->i])};
    rel->relation = KW_STR("viewer");
    rel->subject = (kw_subject_t){KW_STR("user"), KW_STR("ann"), KW_STR_NULL};
    f->i++;
    return KW_OK;
}

static int feed_alive(void *ud)
{
    feed_t *f = ud;
    f->asked++;
    f->read_when_asked = f->i;
    return f->alive_rc;
}

static kw_v1_permissionship_t view(kw_api_t *api, const char *doc)
{
    kw_v1_check_req_t r;
    memset(&r, 0, sizeof(r));
    r.consistency.kind = KW_V1_FULLY_CONSISTENT;
    r.resource = (kw_object_t){KW_STR("doc"), kw_str_c(doc)};
    r.permission = KW_STR("view");
    r.subject = (kw_subject_t){KW_STR("user"), KW_STR("ann"), KW_STR_NULL};
    kw_v1_check_resp_t resp;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    return kw_v1_check(api, &r, &resp, &st) == KW_OK ? resp.permissionship : 0;
}

KW_TEST(v1_import_cancelled_before_commit_rolls_back)
{
    kw_api_testing_t *t = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_api_testing_new(NULL, &t, &d), KW_OK);
    kw_api_t *api = NULL;
    KW_ASSERT_EQ(kw_api_testing_instance(t, "Bearer import-test", &api, &d), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_v1_caller_t who = {KW_STR("test"), KW_STR("req"), a};
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t at = 0, before = 0;
    KW_ASSERT_EQ(kw_v1_write_schema(api, &who, KW_STR(SCHEMA), &before, &st), KW_OK);

    feed_t *f = kw_calloc(1, sizeof(*f));
    KW_ASSERT(f);
    uint64_t n = 0;
    /* Cancelled (RST_STREAM) after the last message: nothing of 2,500 (three chunks) stays. */
    for (int k = 0; k < 2; k++) {
        memset(f, 0, sizeof(*f));
        f->n = 2500;
        f->alive_rc = k == 0 ? KW_EIO : KW_ETIMEOUT;
        kw_v1_status_clear(&st);
        KW_ASSERT(kw_v1_import_bulk(api, feed_next, feed_alive, f, &n, &at, &st) != KW_OK);
        KW_ASSERT_EQ(st.code, k == 0 ? KW_GRPC_CANCELLED : KW_GRPC_DEADLINE_EXCEEDED);
        KW_ASSERT_EQ(f->asked, 1);
        KW_ASSERT_EQ(f->read_when_asked, 2500); /* asked after everything was read */
        KW_ASSERT_EQ(view(api, "d0"), KW_V1_PERM_NO);
        KW_ASSERT_EQ(view(api, "d2499"), KW_V1_PERM_NO);
    }
    /* The same import from a client still there commits all of it. */
    memset(f, 0, sizeof(*f));
    f->n = 2500;
    f->alive_rc = KW_OK;
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw_v1_import_bulk(api, feed_next, feed_alive, f, &n, &at, &st), KW_OK);
    KW_ASSERT_EQ(n, 2500);
    KW_ASSERT(at > before);
    KW_ASSERT_EQ(f->asked, 1);
    KW_ASSERT_EQ(view(api, "d0"), KW_V1_PERM_HAS);
    KW_ASSERT_EQ(view(api, "d2499"), KW_V1_PERM_HAS);
    kw_free(f);
    kw_arena_free(a);
    kw_api_testing_free(t);
}
