/*
 * tests/unit/grpc/grpc_test.c - the gRPC codec's pure parts: framing, grpc-timeout,
 * grpc-message encoding, binary metadata, google.rpc.Status with ErrorInfo, Struct <->
 * JSON, and the protobuf <-> service-layer conversions.
 */
#include <string.h>

#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/convert.h"
#include "kw_test.h"

KW_TEST(grpc_unframe)
{
    const uint8_t *m = NULL;
    size_t n = 0;
    uint8_t ok[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
    KW_ASSERT_EQ(kw__grpc_unframe(ok, sizeof(ok), 100, &m, &n), KW_OK);
    KW_ASSERT_EQ(n, 3);
    KW_ASSERT(memcmp(m, "abc", 3) == 0);
    uint8_t empty[] = {0, 0, 0, 0, 0};
    KW_ASSERT_EQ(kw__grpc_unframe(empty, sizeof(empty), 100, &m, &n), KW_OK);
    KW_ASSERT_EQ(n, 0);
    /* truncated prefix, short body, trailing bytes (a second message) */
    KW_ASSERT_EQ(kw__grpc_unframe(ok, 4, 100, &m, &n), KW_EINVAL);
    KW_ASSERT_EQ(kw__grpc_unframe(ok, 7, 100, &m, &n), KW_EINVAL);
    uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
    KW_ASSERT_EQ(kw__grpc_unframe(two, sizeof(two), 100, &m, &n), KW_EINVAL);
    /* compressed flag, unknown flag, over the maximum (checked before the body) */
    uint8_t comp[] = {1, 0, 0, 0, 1, 'a'};
    KW_ASSERT_EQ(kw__grpc_unframe(comp, sizeof(comp), 100, &m, &n), KW_EUNSUPPORTED);
    comp[0] = 2;
    KW_ASSERT_EQ(kw__grpc_unframe(comp, sizeof(comp), 100, &m, &n), KW_EINVAL);
    uint8_t big[] = {0, 0xff, 0xff, 0xff, 0xff};
    KW_ASSERT_EQ(kw__grpc_unframe(big, sizeof(big), 4u << 20, &m, &n), KW_ETOOLARGE);
    uint8_t pre[5];
    kw__grpc_frame_prefix(pre, 0x01020304);
    KW_ASSERT(pre[0] == 0 && pre[1] == 1 && pre[2] == 2 && pre[3] == 3 && pre[4] == 4);
}

KW_TEST(grpc_timeout)
{
    int64_t us = 0;
    KW_ASSERT(kw__grpc_parse_timeout("5S", 2, &us));
    KW_ASSERT_EQ(us, 5000000);
    KW_ASSERT(kw__grpc_parse_timeout("250m", 4, &us));
    KW_ASSERT_EQ(us, 250000);
    KW_ASSERT(kw__grpc_parse_timeout("2H", 2, &us));
    KW_ASSERT_EQ(us, 7200000000LL);
    KW_ASSERT(kw__grpc_parse_timeout("3M", 2, &us));
    KW_ASSERT_EQ(us, 180000000);
    KW_ASSERT(kw__grpc_parse_timeout("7u", 2, &us));
    KW_ASSERT_EQ(us, 7);
    KW_ASSERT(kw__grpc_parse_timeout("10n", 3, &us)); /* rounds up to 1 us, never 0 */
    KW_ASSERT_EQ(us, 1);
    KW_ASSERT(kw__grpc_parse_timeout("99999999S", 9, &us));
    KW_ASSERT(!kw__grpc_parse_timeout("S", 1, &us));
    KW_ASSERT(!kw__grpc_parse_timeout("123456789S", 10, &us)); /* 9 digits: too many */
    KW_ASSERT(!kw__grpc_parse_timeout("5s", 2, &us));
    KW_ASSERT(!kw__grpc_parse_timeout("-5S", 3, &us));
    KW_ASSERT(!kw__grpc_parse_timeout("5 S", 3, &us));
}

KW_TEST(grpc_message_and_b64)
{
    char out[64];
    kw__grpc_pct_encode("bad: 100% \xc3\xa9\n", out, sizeof(out));
    KW_ASSERT_STR_EQ(out, "bad: 100%25 %C3%A9%0A");
    kw__grpc_pct_encode("abcdef", out, 4); /* truncated, terminated */
    KW_ASSERT_STR_EQ(out, "abc");
    kw__grpc_pct_encode("%%", out, 5); /* an escape is never cut in half */
    KW_ASSERT_STR_EQ(out, "%25");
    KW_ASSERT(kw__grpc_b64((const uint8_t *)"", 0, out, sizeof(out)));
    KW_ASSERT_STR_EQ(out, "");
    KW_ASSERT(kw__grpc_b64((const uint8_t *)"f", 1, out, sizeof(out)));
    KW_ASSERT_STR_EQ(out, "Zg");
    KW_ASSERT(kw__grpc_b64((const uint8_t *)"fo", 2, out, sizeof(out)));
    KW_ASSERT_STR_EQ(out, "Zm8");
    KW_ASSERT(kw__grpc_b64((const uint8_t *)"foobar", 6, out, sizeof(out)));
    KW_ASSERT_STR_EQ(out, "Zm9vYmFy");
    KW_ASSERT(kw__grpc_b64((const uint8_t *)"\xfb\xff", 2, out, sizeof(out)));
    KW_ASSERT_STR_EQ(out, "+/8");
    KW_ASSERT(!kw__grpc_b64((const uint8_t *)"foobar", 6, out, 8)); /* needs 9 */
}

KW_TEST(grpc_status_details)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_fail(&st, KW_EINVAL, KW_GRPC_FAILED_PRECONDITION, "ERROR_REASON_UNKNOWN_DEFINITION",
               "object definition `%s` not found", "nope");
    kw_v1_meta(&st, "definition_name", KW_STR("nope"));
    uint8_t *bin = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw__grpc_status_pack(&st, &bin, &n), KW_OK);
    Google__Rpc__Status *s = google__rpc__status__unpack(NULL, n, bin);
    KW_ASSERT(s);
    KW_ASSERT_EQ(s->code, KW_GRPC_FAILED_PRECONDITION);
    KW_ASSERT_STR_EQ(s->message, "object definition `nope` not found");
    KW_ASSERT_EQ(s->n_details, 1);
    KW_ASSERT_STR_EQ(s->details[0]->type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    Google__Rpc__ErrorInfo *info =
        google__rpc__error_info__unpack(NULL, s->details[0]->value.len, s->details[0]->value.data);
    KW_ASSERT(info);
    KW_ASSERT_STR_EQ(info->reason, "ERROR_REASON_UNKNOWN_DEFINITION");
    KW_ASSERT_STR_EQ(info->domain, "authzed.com");
    KW_ASSERT_EQ(info->n_metadata, 1);
    KW_ASSERT_STR_EQ(info->metadata[0]->key, "definition_name");
    KW_ASSERT_STR_EQ(info->metadata[0]->value, "nope");
    google__rpc__error_info__free_unpacked(info, NULL);
    google__rpc__status__free_unpacked(s, NULL);
    kw_free(bin);

    /* Without a reason: no details at all. */
    kw_v1_status_clear(&st);
    kw_v1_fail(&st, KW_EIO, KW_GRPC_CANCELLED, NULL, "cancelled");
    KW_ASSERT_EQ(kw__grpc_status_pack(&st, &bin, &n), KW_OK);
    s = google__rpc__status__unpack(NULL, n, bin);
    KW_ASSERT(s);
    KW_ASSERT_EQ(s->code, KW_GRPC_CANCELLED);
    KW_ASSERT_EQ(s->n_details, 0);
    google__rpc__status__free_unpacked(s, NULL);
    kw_free(bin);
}

KW_TEST(grpc_struct_json)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    const char *text =
        "{\"ip\":\"10.0.0.1\",\"n\":3,\"ok\":true,\"l\":[1,\"x\",null],\"o\":{\"k\":false}}";
    Google__Protobuf__Struct *s = kw__grpc_text_struct(kw_str_c(text), a);
    KW_ASSERT(s);
    KW_ASSERT_EQ(s->n_fields, 5);
    kw_str_t back;
    KW_ASSERT(kw__grpc_struct_text(s, a, &back, &st));
    KW_ASSERT_STR_EQ(
        back.ptr,
        "{\"ip\":\"10.0.0.1\",\"n\":3,\"ok\":true,\"l\":[1,\"x\",null],\"o\":{\"k\":false}}");
    /* A number that is not integral stays a real. */
    Google__Protobuf__Struct *r = kw__grpc_text_struct(KW_STR("{\"x\":0.5}"), a);
    KW_ASSERT(r && kw__grpc_struct_text(r, a, &back, &st));
    KW_ASSERT_STR_EQ(back.ptr, "{\"x\":0.5}");
    /* An empty or absent Struct is no context. */
    KW_ASSERT(kw__grpc_struct_text(NULL, a, &back, &st));
    KW_ASSERT_EQ(back.len, 0);
    KW_ASSERT(!kw__grpc_text_struct(KW_STR("[1]"), a));
    KW_ASSERT(!kw__grpc_text_struct(KW_STR("{"), a));
    kw_arena_free(a);
}

KW_TEST(grpc_relationship_round_trip)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_rel_t in = {{KW_STR("doc"), KW_STR("d1")},
                   KW_STR("viewer"),
                   {KW_STR("group"), KW_STR("eng"), KW_STR("member")},
                   KW_STR("ip_allowed"),
                   KW_STR("{\"cidr\":\"10.0.0.0/8\"}"),
                   1800000000123456LL};
    Authzed__Api__V1__Relationship *m = kw__grpc_rel_msg(&in, a);
    KW_ASSERT(m);
    KW_ASSERT_EQ(m->optional_expires_at->seconds, 1800000000LL);
    KW_ASSERT_EQ(m->optional_expires_at->nanos, 123456000);
    /* over the wire and back */
    size_t n = authzed__api__v1__relationship__get_packed_size(m);
    uint8_t *buf = kw_arena_alloc(a, n);
    KW_ASSERT(buf);
    authzed__api__v1__relationship__pack(m, buf);
    Authzed__Api__V1__Relationship *u = authzed__api__v1__relationship__unpack(NULL, n, buf);
    KW_ASSERT(u);
    kw_rel_t out;
    KW_ASSERT(kw__grpc_rel(u, a, &out, &st));
    KW_ASSERT(kw_str_eq(out.resource.type, in.resource.type) &&
              kw_str_eq(out.resource.id, in.resource.id));
    KW_ASSERT(kw_str_eq(out.relation, in.relation));
    KW_ASSERT(kw_str_eq(out.subject.relation, in.subject.relation));
    KW_ASSERT(kw_str_eq(out.caveat, in.caveat));
    KW_ASSERT_STR_EQ(out.caveat_ctx.ptr, "{\"cidr\":\"10.0.0.0/8\"}");
    KW_ASSERT_EQ(out.expires_at, in.expires_at);
    authzed__api__v1__relationship__free_unpacked(u, NULL);

    /* the ellipsis is sent as "" */
    kw_subject_t plain = {KW_STR("user"), KW_STR("alice"), KW_STR("...")};
    Authzed__Api__V1__SubjectReference *sr = kw__grpc_subject_msg(&plain, a);
    KW_ASSERT(sr);
    KW_ASSERT_STR_EQ(sr->optional_relation, "");

    /* a required message absent, a bad timestamp */
    Authzed__Api__V1__Relationship r = AUTHZED__API__V1__RELATIONSHIP__INIT;
    KW_ASSERT(!kw__grpc_rel(&r, a, &out, &st));
    KW_ASSERT_EQ(st.code, KW_GRPC_INVALID_ARGUMENT);
    kw_v1_status_clear(&st);
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 5;
    ts.nanos = -1;
    *m->optional_expires_at = ts;
    KW_ASSERT(!kw__grpc_rel(m, a, &out, &st));
    KW_ASSERT_EQ(st.code, KW_GRPC_INVALID_ARGUMENT);
    kw_arena_free(a);
}

KW_TEST(grpc_consistency_and_find)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_consistency_t c;
    KW_ASSERT(kw__grpc_consistency(NULL, &c, &st));
    KW_ASSERT_EQ(c.kind, KW_V1_MINIMIZE_LATENCY);
    Authzed__Api__V1__ZedToken tok = AUTHZED__API__V1__ZED_TOKEN__INIT;
    Authzed__Api__V1__Consistency pc = AUTHZED__API__V1__CONSISTENCY__INIT;
    pc.requirement_case = AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH;
    pc.at_least_as_fresh = &tok;
    tok.token = (char *)"42";
    KW_ASSERT(kw__grpc_consistency(&pc, &c, &st));
    KW_ASSERT_EQ(c.kind, KW_V1_AT_LEAST_AS_FRESH);
    KW_ASSERT_EQ(c.rev, 42);
    tok.token = (char *)"4x2";
    KW_ASSERT(!kw__grpc_consistency(&pc, &c, &st));
    KW_ASSERT_EQ(st.code, KW_GRPC_INVALID_ARGUMENT);
    pc.at_least_as_fresh = NULL;
    KW_ASSERT(!kw__grpc_consistency(&pc, &c, &st));

    const char *p = "/authzed.api.v1.PermissionsService/CheckPermission";
    KW_ASSERT(kw__grpc_find(p, strlen(p)));
    KW_ASSERT(!kw__grpc_find(p, strlen(p) - 1));
    KW_ASSERT(kw__grpc_find("/grpc.health.v1.Health/Check", 28)->is_public);
    KW_ASSERT(!kw__grpc_find(p, strlen(p))->is_public);
}

KW_TEST(grpc_token_digits)
{
    /* ZedTokens are the revision in decimal, written without sprintf (convert.c). */
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    static const kw_revision_t revs[] = {0, 7, 10, 1011000, 18446744073709551615ull};
    static const char *const want[] = {"0", "7", "10", "1011000", "18446744073709551615"};
    for (size_t i = 0; i < sizeof(revs) / sizeof(revs[0]); i++) {
        Authzed__Api__V1__ZedToken *t = kw__grpc_token(revs[i], a);
        KW_ASSERT(t != NULL);
        KW_ASSERT_STR_EQ(t->token, want[i]);
    }
    kw_arena_free(a);
}

/* kw__grpc_lr_encode writes what protobuf-c packs for the same LookupResourcesResponse:
 * random revisions (0, small, huge), ids of 0-299 random bytes and cursors of 1-299
 * characters (lengths across the one/two-byte varint edge), and a cap too small. */
KW_TEST(grpc_lr_encode_is_protobuf_c_pack)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    uint64_t x = 0x2545f4914f6cdd1dull;
#define NEXT() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
    static uint8_t want[1024], got[1024];
    char id[300], cur[300];
    for (int iter = 0; iter < 20000; iter++) {
        kw_revision_t rev = iter % 3 == 0   ? (kw_revision_t)(NEXT() % 10)
                            : iter % 3 == 1 ? (kw_revision_t)(NEXT() % 100000)
                                            : (kw_revision_t)NEXT();
        size_t il = (size_t)(NEXT() % (iter % 2 ? 20 : sizeof(id)));
        size_t cl = 1 + (size_t)(NEXT() % (sizeof(cur) - 1));
        for (size_t i = 0; i < il; i++) /* a NUL now and then in a long id */
            id[i] = (char)(iter % 2 ? 'a' + NEXT() % 26 : (NEXT() >> 24) | (i % 97 ? 1 : 0));
        for (size_t i = 0; i < cl; i++)
            cur[i] = (char)('A' + NEXT() % 26);
        cur[cl] = '\0';
        kw_arena_reset(a);
        Authzed__Api__V1__LookupResourcesResponse m =
            AUTHZED__API__V1__LOOKUP_RESOURCES_RESPONSE__INIT;
        m.looked_up_at = kw__grpc_token(rev, a);
        m.resource_object_id = kw_arena_strndup(a, id, il);
        m.permissionship =
            AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_HAS_PERMISSION;
        m.after_result_cursor = kw__grpc_cursor(cur, a);
        KW_ASSERT(m.looked_up_at && m.resource_object_id && m.after_result_cursor);
        size_t wn = protobuf_c_message_get_packed_size(&m.base);
        KW_ASSERT(wn <= sizeof(want));
        KW_ASSERT_EQ(protobuf_c_message_pack(&m.base, want), wn);
        size_t gn = kw__grpc_lr_encode(got, sizeof(got), rev, (kw_str_t){id, il}, cur);
        if (memchr(id, '\0', il)) { /* protobuf-c's C string would end there: refused */
            KW_ASSERT_EQ(gn, 0);
            continue;
        }
        KW_ASSERT_EQ(gn, wn);
        KW_ASSERT(memcmp(got, want, wn) == 0);
        /* too small: 0, nothing promised */
        KW_ASSERT_EQ(kw__grpc_lr_encode(got, wn / 2, rev, (kw_str_t){id, il}, cur), 0);
    }
    /* no cursor, or an empty one: not this encoder's message */
    KW_ASSERT_EQ(kw__grpc_lr_encode(got, sizeof(got), 1, KW_STR("a"), NULL), 0);
    KW_ASSERT_EQ(kw__grpc_lr_encode(got, sizeof(got), 1, KW_STR("a"), ""), 0);
#undef NEXT
    kw_arena_free(a);
}
