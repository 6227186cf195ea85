/*
 * tests/fuzz/fuzz_grpc_proto.c - libFuzzer target for the protobuf decoding of every
 * request message the gRPC endpoint accepts, and the conversions of what decodes into
 * the service layer's types (objects, subjects, relationships with caveat contexts and
 * expiry, filters, preconditions, consistency, Structs to JSON). The first byte picks
 * the message (mod 13: the 11 request messages, WatchRequest, a bare Relationship); the rest is its
 * wire encoding. Properties: no crash, leak or undefined behaviour; a conversion that fails says
 * why (a gRPC code is set).
 */
#include <stdlib.h>

#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "grpc/convert.h"
#include "grpc/health/v1/health.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void expect(bool ok, const kw_v1_status_t *st)
{
    if (!ok && st->code == KW_GRPC_OK)
        abort();
}

static void cons(const Authzed__Api__V1__Consistency *c)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_consistency_t out;
    expect(kw__grpc_consistency(c, &out, &st), &st);
}

static void subject_and_ctx(const Authzed__Api__V1__SubjectReference *s,
                            const Google__Protobuf__Struct *ctx, kw_arena_t *a)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_subject_t sub;
    kw_str_t text;
    expect(kw__grpc_subject(s, "Subject", &sub, &st), &st);
    kw_v1_status_clear(&st);
    expect(kw__grpc_struct_text(ctx, a, &text, &st), &st);
}

static void filter(const Authzed__Api__V1__RelationshipFilter *f)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_filter_t out;
    kw_str_t prefix;
    expect(kw__grpc_filter(f, &out, &prefix, &st), &st);
}

static void rels(Authzed__Api__V1__Relationship *const *r, size_t n, kw_arena_t *a)
{
    for (size_t i = 0; i < n; i++) {
        kw_v1_status_t st;
        kw_v1_status_clear(&st);
        kw_rel_t out;
        bool ok = kw__grpc_rel(r[i], a, &out, &st);
        expect(ok, &st);
        if (ok && !kw__grpc_rel_msg(&out, a) && out.caveat_ctx.len == 0)
            abort(); /* what decoded must encode back (out of memory aside) */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    kw_arena_t *a = kw_arena_new(0);
    if (!a)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    switch (data[0] % 13) {
    case 0: {
        Authzed__Api__V1__CheckPermissionRequest *m =
            authzed__api__v1__check_permission_request__unpack(NULL, n, in);
        if (m) {
            cons(m->consistency);
            kw_object_t o;
            expect(kw__grpc_object(m->resource, "Resource", &o, &st), &st);
            subject_and_ctx(m->subject, m->context, a);
            authzed__api__v1__check_permission_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 1: {
        Authzed__Api__V1__CheckBulkPermissionsRequest *m =
            authzed__api__v1__check_bulk_permissions_request__unpack(NULL, n, in);
        if (m) {
            cons(m->consistency);
            for (size_t i = 0; i < m->n_items; i++)
                subject_and_ctx(m->items[i]->subject, m->items[i]->context, a);
            authzed__api__v1__check_bulk_permissions_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 2: {
        Authzed__Api__V1__WriteRelationshipsRequest *m =
            authzed__api__v1__write_relationships_request__unpack(NULL, n, in);
        if (m) {
            for (size_t i = 0; i < m->n_updates; i++)
                rels(&m->updates[i]->relationship, 1, a);
            kw_precondition_t *pre;
            size_t np;
            expect(kw__grpc_preconditions(m->optional_preconditions, m->n_optional_preconditions, a,
                                          &pre, &np, &st),
                   &st);
            authzed__api__v1__write_relationships_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 3: {
        Authzed__Api__V1__DeleteRelationshipsRequest *m =
            authzed__api__v1__delete_relationships_request__unpack(NULL, n, in);
        if (m) {
            filter(m->relationship_filter);
            authzed__api__v1__delete_relationships_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 4: {
        Authzed__Api__V1__ReadRelationshipsRequest *m =
            authzed__api__v1__read_relationships_request__unpack(NULL, n, in);
        if (m) {
            cons(m->consistency);
            filter(m->relationship_filter);
            authzed__api__v1__read_relationships_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 5: {
        Authzed__Api__V1__LookupResourcesRequest *m =
            authzed__api__v1__lookup_resources_request__unpack(NULL, n, in);
        if (m) {
            cons(m->consistency);
            subject_and_ctx(m->subject, m->context, a);
            authzed__api__v1__lookup_resources_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 6: {
        Authzed__Api__V1__LookupSubjectsRequest *m =
            authzed__api__v1__lookup_subjects_request__unpack(NULL, n, in);
        if (m) {
            cons(m->consistency);
            kw_object_t o;
            expect(kw__grpc_object(m->resource, "Resource", &o, &st), &st);
            subject_and_ctx(NULL, m->context, a);
            authzed__api__v1__lookup_subjects_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 7: {
        Authzed__Api__V1__ExpandPermissionTreeRequest *m =
            authzed__api__v1__expand_permission_tree_request__unpack(NULL, n, in);
        if (m) {
            cons(m->consistency);
            authzed__api__v1__expand_permission_tree_request__free_unpacked(m, NULL);
        }
        break;
    }
    case 8: {
        Authzed__Api__V1__ReadSchemaRequest *m =
            authzed__api__v1__read_schema_request__unpack(NULL, n, in);
        if (m)
            authzed__api__v1__read_schema_request__free_unpacked(m, NULL);
        break;
    }
    case 9: {
        Authzed__Api__V1__WriteSchemaRequest *m =
            authzed__api__v1__write_schema_request__unpack(NULL, n, in);
        if (m)
            authzed__api__v1__write_schema_request__free_unpacked(m, NULL);
        break;
    }
    case 10: {
        Grpc__Health__V1__HealthCheckRequest *m =
            grpc__health__v1__health_check_request__unpack(NULL, n, in);
        if (m)
            grpc__health__v1__health_check_request__free_unpacked(m, NULL);
        break;
    }
    case 12: {
        Authzed__Api__V1__WatchRequest *m = authzed__api__v1__watch_request__unpack(NULL, n, in);
        if (m) {
            for (size_t i = 0; i < m->n_optional_relationship_filters; i++)
                filter(m->optional_relationship_filters[i]);
            authzed__api__v1__watch_request__free_unpacked(m, NULL);
        }
        break;
    }
    default: {
        Authzed__Api__V1__Relationship *m = authzed__api__v1__relationship__unpack(NULL, n, in);
        if (m) {
            rels(&m, 1, a);
            authzed__api__v1__relationship__free_unpacked(m, NULL);
        }
        break;
    }
    }
    kw_arena_free(a);
    return 0;
}
