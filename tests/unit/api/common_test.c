/* tests/unit/api/common_test.c - the api module's pure helpers (src/api/common.c). */
#include <jansson.h>
#include <stdlib.h>

#include "api/api.h"
#include "kw_test.h"

KW_TEST(uuid_v7_shape_version_variant_and_time_order)
{
    char a[37], b[37];
    kw_api_uuid_v7(1764331200123456LL, a);
    kw_api_uuid_v7(1764331200123999LL, b);
    KW_ASSERT(kw_api_is_uuid(kw_str_c(a)));
    KW_ASSERT_EQ(strlen(a), 36);
    KW_ASSERT_EQ(a[14], '7');                        /* version */
    KW_ASSERT(strchr("89ab", a[19]) != NULL);        /* RFC 9562 variant */
    KW_ASSERT(strncmp(a, "019aca55-9e7b", 13) == 0); /* 48-bit ms timestamp */
    KW_ASSERT(strcmp(a, b) < 0);                     /* sub-ms fraction orders them */
    for (int i = 0; a[i]; i++)
        KW_ASSERT(a[i] == '-' || (a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
    char c[37];
    kw_api_uuid_v7(1764331200123456LL, c);
    KW_ASSERT(strcmp(a, c) != 0); /* 62 random bits differ */
}

KW_TEST(is_uuid_accepts_canonical_only)
{
    KW_ASSERT(kw_api_is_uuid(KW_STR("019ac9d6-6f7b-71f8-9d2e-0123456789ab")));
    KW_ASSERT(kw_api_is_uuid(KW_STR("00000000-0000-0000-0000-000000000000")));
    KW_ASSERT(kw_api_is_uuid(KW_STR("ABCDEF00-0000-0000-0000-000000000000")));
    KW_ASSERT(!kw_api_is_uuid(KW_STR("00000000-0000-0000-0000-00000000000")));
    KW_ASSERT(!kw_api_is_uuid(KW_STR("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz")));
    KW_ASSERT(!kw_api_is_uuid(KW_STR("not-a-uuid")));
    KW_ASSERT(!kw_api_is_uuid(KW_STR("000000000000-0000-0000-0000-00000000")));
    KW_ASSERT(!kw_api_is_uuid(KW_STR("../../healthz")));
    KW_ASSERT(!kw_api_is_uuid(KW_STR_NULL));
}

KW_TEST(time_format_rfc3339_microseconds_utc)
{
    char buf[32];
    size_t n = kw_api_format_time(0, buf);
    KW_ASSERT_STR_EQ(buf, "1970-01-01T00:00:00.000000Z");
    KW_ASSERT_EQ(n, 27);
    kw_api_format_time(1795867200123456LL, buf);
    KW_ASSERT_STR_EQ(buf, "2026-11-28T12:00:00.123456Z");
    kw_api_format_time(951782400000001LL, buf); /* leap day 2000 */
    KW_ASSERT_STR_EQ(buf, "2000-02-29T00:00:00.000001Z");
}

KW_TEST(now_us_strictly_increases)
{
    int64_t prev = kw_api_now_us();
    for (int i = 0; i < 10000; i++) {
        int64_t t = kw_api_now_us();
        KW_ASSERT(t > prev);
        prev = t;
    }
    KW_ASSERT(prev > 1600000000000000LL);
}

KW_TEST(names_utf8_controls_slash_and_length)
{
    KW_ASSERT(kw_api_name_valid(KW_STR("builder"), false));
    KW_ASSERT(kw_api_name_valid(KW_STR("with space \xc3\xa9"), false));
    KW_ASSERT(!kw_api_name_valid(KW_STR("team/ci"), false));
    KW_ASSERT(kw_api_name_valid(KW_STR("team/ci"), true));
    KW_ASSERT(!kw_api_name_valid(KW_STR(""), true));
    KW_ASSERT(!kw_api_name_valid(KW_STR("tab\there"), true));
    KW_ASSERT(!kw_api_name_valid(KW_STR("del\x7f"), true));
    KW_ASSERT(!kw_api_name_valid(KW_STR("c1\xc2\x85"), true));  /* U+0085 */
    KW_ASSERT(kw_api_name_valid(KW_STR("nbsp\xc2\xa0"), true)); /* U+00A0 is fine */
    KW_ASSERT(!kw_api_name_valid(KW_STR("bad\xff"), true));
    KW_ASSERT(!kw_api_name_valid(KW_STR("overlong\xc0\xaf"), true));
    KW_ASSERT(!kw_api_name_valid(KW_STR("surrogate\xed\xa0\x80"), true));
    KW_ASSERT(!kw_api_name_valid(KW_STR("trunc\xe2\x82"), true));
    KW_ASSERT(!kw_api_name_valid((kw_str_t){"nul\0x", 5}, true));
    KW_ASSERT(kw_api_name_valid(KW_STR("\xf0\x9f\x94\x91"), true)); /* U+1F511 */

    char buf[600];
    for (int i = 0; i < 255; i++) {
        buf[2 * i] = (char)0xc3;
        buf[2 * i + 1] = (char)0xa9;
    }
    KW_ASSERT(kw_api_name_valid((kw_str_t){buf, 510}, true)); /* 255 code points */
    buf[510] = 'x';
    KW_ASSERT(!kw_api_name_valid((kw_str_t){buf, 511}, true)); /* 256 */
}

KW_TEST(bounded_integers_for_pagination)
{
    long v = 0;
    KW_ASSERT(kw_api_parse_bounded(KW_STR("50"), 1, 1000, &v));
    KW_ASSERT_EQ(v, 50);
    KW_ASSERT(kw_api_parse_bounded(KW_STR("1000"), 1, 1000, &v));
    KW_ASSERT_EQ(v, 1000);
    KW_ASSERT(!kw_api_parse_bounded(KW_STR("1001"), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR("0"), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR("-1"), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR("+5"), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR(" 5"), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR("5x"), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR(""), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR("99999999999999999999999"), 1, 1000, &v));
    KW_ASSERT(!kw_api_parse_bounded(KW_STR("1.5"), 1, 1000, &v));
    KW_ASSERT_EQ(v, 1000); /* untouched on failure */
}

KW_TEST(route_table_covers_the_contract)
{
    size_t n = 0;
    const kw_http_route_t *r = kw_api_routes(&n);
    KW_ASSERT_EQ(n, 45); /* 22 of keyward (contract, rotate, verify, audit, PATCH agent, webhook
                            trigger, forward GET/POST), 10 + 7 /v1 RPCs, 6 experimental aliases */
    int v1 = 0;
    for (size_t i = 0; i < n; i++) {
        KW_ASSERT(r[i].fn != NULL);
        if (strncmp(r[i].pattern, "/v1/", 4) == 0) {
            /* admin API: authenticated (not public); the bulk import streams its body */
            KW_ASSERT_EQ(r[i].flags & ~KW_HTTP_ROUTE_STREAM_BODY, 0);
            KW_ASSERT_EQ(r[i].flags != 0, strstr(r[i].pattern, "import") != NULL);
            KW_ASSERT_STR_EQ(r[i].method, "POST");
            v1++;
        }
    }
    KW_ASSERT_EQ(v1, 23);
}

/* The errors the HTTP server makes itself: the contract's shape, and under /v1 the
 * SpiceDB gateway shape (api/errors.c; the http module knows nothing of SpiceDB). */
KW_TEST(server_error_shapes)
{
    kw_http_req_t req;
    memset(&req, 0, sizeof(req));
    kw_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    kw_buf_init(&resp.body);
    req.path = KW_STR("/agents/x");
    kw_api_http_error(&req, 404, "Not Found", &resp, NULL);
    KW_ASSERT_EQ(resp.status, 404);
    KW_ASSERT_STR_EQ(resp.body.ptr, "{\"detail\": \"Not Found\"}");
    req.path = KW_STR("/v1/nope");
    kw_api_http_error(&req, 404, "Not Found", &resp, NULL);
    KW_ASSERT_STR_EQ(resp.body.ptr, "{\"detail\": \"Not Found\", \"code\": 5, \"message\": "
                                    "\"Not Found\", \"details\": []}");
    /* grpc-gateway answers a wrong method 501 UNIMPLEMENTED "Method Not Allowed" */
    req.path = KW_STR("/v1/permissions/check");
    kw_api_http_error(&req, 405, "Method Not Allowed", &resp, NULL);
    KW_ASSERT_EQ(resp.status, 501);
    KW_ASSERT_STR_EQ(resp.body.ptr, "{\"detail\": \"Method Not Allowed\", \"code\": 12, "
                                    "\"message\": \"Method Not Allowed\", \"details\": []}");
    kw_api_http_error(&req, 413, "Request body too large", &resp, NULL);
    KW_ASSERT_EQ(resp.status, 413);
    KW_ASSERT(strstr(resp.body.ptr, "\"code\": 8,") != NULL);
    req.path = KW_STR("/v1x");
    kw_api_http_error(&req, 400, "Bad", &resp, NULL);
    KW_ASSERT_STR_EQ(resp.body.ptr, "{\"detail\": \"Bad\"}");
    kw_buf_free(&resp.body);
}

KW_TEST(default_schema_is_agentex)
{
    KW_ASSERT(strstr(kw_api_default_schema, "definition agent_api_key {") != NULL);
    KW_ASSERT(strstr(kw_api_default_schema, "permission create_agent = admin + member") != NULL);
}

/* ---- X-Keyward-Revision (common.c) ---- */

KW_TEST(parse_revision_is_strict_decimal_within_bigint)
{
    kw_revision_t r = 99;
    KW_ASSERT(kw_api_parse_revision(KW_STR("0"), &r) && r == 0);
    KW_ASSERT(kw_api_parse_revision(KW_STR("42"), &r) && r == 42);
    KW_ASSERT(kw_api_parse_revision(KW_STR("9223372036854775807"), &r) &&
              r == 9223372036854775807ULL);
    const char *bad[] = {"",
                         "abc",
                         "-1",
                         "1.5",
                         "0x10",
                         "+1",
                         " 1",
                         "1 ",
                         "1e3",
                         "9223372036854775808",
                         "99999999999999999999999"};
    for (size_t i = 0; i < KW_ARRAY_LEN(bad); i++) {
        r = 7;
        if (kw_api_parse_revision(kw_str_c(bad[i]), &r))
            KW_FAIL_("accepted '%s'", bad[i]);
        KW_ASSERT_EQ(r, 7);
    }
    KW_ASSERT(!kw_api_parse_revision(KW_STR_NULL, &r));
}

/* Issue 14: expires_at on key create is RFC 3339 (docs/API.md). */
KW_TEST(parse_time_rfc3339)
{
    int64_t us = -1;
    KW_ASSERT(kw_api_parse_time(KW_STR("1970-01-01T00:00:00Z"), &us));
    KW_ASSERT_EQ(us, 0);
    KW_ASSERT(kw_api_parse_time(KW_STR("2026-12-02T10:00:00.123456Z"), &us));
    KW_ASSERT_EQ(us, 1796205600123456LL);
    KW_ASSERT(kw_api_parse_time(KW_STR("2026-12-02t11:30:00.5+01:30"), &us));
    KW_ASSERT_EQ(us, 1796205600500000LL);
    KW_ASSERT(kw_api_parse_time(KW_STR("2026-12-02T10:00:00.1234567891Z"), &us) == false);
    KW_ASSERT(kw_api_parse_time(KW_STR("2028-02-29T00:00:00Z"), &us));
    char ts[32];
    size_t n = kw_api_format_time(us, ts);
    KW_ASSERT_EQ(n, 27);
    KW_ASSERT_STR_EQ(ts, "2028-02-29T00:00:00.000000Z");
    const char *bad[] = {"",
                         "2026-12-02",
                         "2026-12-02T10:00:00",
                         "2027-02-29T00:00:00Z",
                         "2026-13-01T00:00:00Z",
                         "2026-12-02T24:00:00Z",
                         "2026-12-02T10:00:00+1:00",
                         "2026-12-02T10:00:00.Z",
                         "1969-12-31T23:59:59Z",
                         "2026-12-02 10:00:00Z",
                         "2026-12-02T10:00:00Zjunk",
                         "1970-01-01T00:00:00+00:01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        us = 42;
        KW_ASSERT(!kw_api_parse_time(kw_str_c(bad[i]), &us));
        KW_ASSERT_EQ(us, 42);
    }
}
