/* tests/unit/api/ops_test.c - /openapi.json and /healthz built without a server. */
#include <jansson.h>

#include "api/api_int.h"
#include "kw_test.h"

static json_t *call(kw_http_handler_fn fn, int *status)
{
    kw_http_req_t req;
    kw_http_resp_t resp;
    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    req.arena = kw_arena_new(0);
    kw_buf_init(&resp.body);
    fn(&req, &resp, NULL);
    *status = resp.status;
    json_t *doc = json_loadb(resp.body.ptr ? resp.body.ptr : "", resp.body.len, 0, NULL);
    kw_buf_free(&resp.body);
    kw_arena_free(req.arena);
    return doc;
}

KW_TEST(openapi_describes_every_route_of_the_table)
{
    int status = 0;
    json_t *doc = call(kw__api_openapi, &status);
    KW_ASSERT_EQ(status, 200);
    KW_ASSERT(doc != NULL);
    KW_ASSERT_STR_EQ(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    json_t *paths = json_object_get(doc, "paths");
    size_t n = 0;
    const kw_http_route_t *r = kw_api_routes(&n);
    int missing = 0;
    for (size_t i = 0; i < n; i++) {
        char m[16];
        size_t j = 0;
        for (; r[i].method[j] && j < sizeof(m) - 1; j++)
            m[j] = (char)(r[i].method[j] | 0x20);
        m[j] = '\0';
        json_t *op = json_object_get(json_object_get(paths, r[i].pattern), m);
        if (!op || !json_object_get(op, "responses")) {
            fprintf(stderr, "  missing %s %s\n", m, r[i].pattern);
            missing++;
        }
    }
    KW_ASSERT(json_object_get(json_object_get(json_object_get(doc, "components"), "schemas"),
                              "AgentAPIKey") != NULL);
    json_decref(doc);
    KW_ASSERT_EQ(missing, 0);
}

KW_TEST(healthz_answers_ok)
{
    int status = 0;
    json_t *doc = call(kw__api_healthz, &status);
    KW_ASSERT_EQ(status, 200);
    KW_ASSERT_STR_EQ(json_string_value(json_object_get(doc, "status")), "ok");
    json_decref(doc);
}
