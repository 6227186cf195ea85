/*
 * tests/fuzz/fuzz_grpc_proto.c - libFuzzer target for the protobuf decoding of every
 * request message the gRPC endpoint accepts, and the conversions of what decodes into
 * the service layer's types (objects, subjects, relationships with caveat contexts and
 * expiry, filters, preconditions, consistency, Structs to JSON). The first byte picks
 * the message (mod 16: 0-10 the first request messages, 12 WatchRequest, 11 a bare
 * Relationship; 13 ImportBulk, ExportBulk and the schema reflection requests, picked by
 * the second byte, with their conversions; 14 a server reflection request, decoded and
 * answered (the symbol and file lookups over the embedded descriptors) and the answer
 * packed; 15 every other declared request (ExperimentalService's, reflection v1alpha),
 * picked by the second byte); the rest is its wire encoding. Properties: no crash, leak
 * or undefined behaviour; a conversion that fails says why (a gRPC code is set).
 */
#include <stdlib.h>

#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "grpc/rpc_int.h"

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

/* ImportBulk, ExportBulk, ReflectSchema, ComputablePermissions, DependentRelations,
 * DiffSchema: decoded with the descriptors rpc.c's table names, converted as their
 * handlers convert them. */
static void served_more(uint8_t which, const uint8_t *in, size_t n, kw_arena_t *a)
{
    static const ProtobufCMessageDescriptor *const d[] = {
        &authzed__api__v1__import_bulk_relationships_request__descriptor,
        &authzed__api__v1__export_bulk_relationships_request__descriptor,
        &authzed__api__v1__reflect_schema_request__descriptor,
        &authzed__api__v1__computable_permissions_request__descriptor,
        &authzed__api__v1__dependent_relations_request__descriptor,
        &authzed__api__v1__diff_schema_request__descriptor,
    };
    size_t k = which % (sizeof(d) / sizeof(d[0]));
    ProtobufCMessage *m = protobuf_c_message_unpack(d[k], NULL, n, in);
    if (!m)
        return;
    if (k == 0) {
        Authzed__Api__V1__ImportBulkRelationshipsRequest *r = (void *)m;
        rels(r->relationships, r->n_relationships, a);
    } else if (k == 1) {
        Authzed__Api__V1__ExportBulkRelationshipsRequest *r = (void *)m;
        cons(r->consistency);
        if (r->optional_relationship_filter)
            filter(r->optional_relationship_filter);
    } else if (k == 2) {
        cons(((Authzed__Api__V1__ReflectSchemaRequest *)m)->consistency);
    } else if (k == 3) {
        cons(((Authzed__Api__V1__ComputablePermissionsRequest *)m)->consistency);
    } else if (k == 4) {
        cons(((Authzed__Api__V1__DependentRelationsRequest *)m)->consistency);
    } else {
        cons(((Authzed__Api__V1__DiffSchemaRequest *)m)->consistency);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

/* A ServerReflectionRequest answered as reflect.c answers it, twice (the second time with
 * the files of the first already sent), the answers packed. */
static void reflection(const uint8_t *in, size_t n, kw_arena_t *a)
{
    Grpc__Reflection__V1__ServerReflectionRequest *m =
        grpc__reflection__v1__server_reflection_request__unpack(NULL, n, in);
    if (!m)
        return;
    uint64_t sent = 0;
    for (int round = 0; round < 2; round++) {
        Grpc__Reflection__V1__ServerReflectionResponse r;
        int rc = kw__grpc_reflect_answer(m, &sent, a, &r);
        if (rc == KW_OK) {
            size_t len = protobuf_c_message_get_packed_size(&r.base);
            uint8_t *buf = malloc(len ? len : 1);
            if (buf && protobuf_c_message_pack(&r.base, buf) != len)
                abort();
            free(buf);
        } else if (rc != KW_EINVAL && rc != KW_ENOMEM) {
            abort();
        }
        kw_arena_reset(a);
    }
    grpc__reflection__v1__server_reflection_request__free_unpacked(m, NULL);
}

/* The other request messages of the .proto files: ExperimentalService's (its aliases
 * decode with the served descriptors above) and reflection v1alpha's. */
static void declared(uint8_t which, const uint8_t *in, size_t n)
{
    static const ProtobufCMessageDescriptor *const d[] = {
        &authzed__api__v1__bulk_import_relationships_request__descriptor,
        &authzed__api__v1__bulk_export_relationships_request__descriptor,
        &authzed__api__v1__bulk_check_permission_request__descriptor,
        &authzed__api__v1__experimental_reflect_schema_request__descriptor,
        &authzed__api__v1__experimental_computable_permissions_request__descriptor,
        &authzed__api__v1__experimental_dependent_relations_request__descriptor,
        &authzed__api__v1__experimental_diff_schema_request__descriptor,
        &authzed__api__v1__experimental_register_relationship_counter_request__descriptor,
        &authzed__api__v1__experimental_count_relationships_request__descriptor,
        &authzed__api__v1__experimental_unregister_relationship_counter_request__descriptor,
        &grpc__reflection__v1alpha__server_reflection_request__descriptor,
    };
    ProtobufCMessage *m =
        protobuf_c_message_unpack(d[which % (sizeof(d) / sizeof(d[0]))], NULL, n, in);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
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
    switch (data[0] % 16) {
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
    case 13:
        if (n > 0)
            served_more(in[0], in + 1, n - 1, a);
        break;
    case 14:
        reflection(in, n, a);
        break;
    case 15:
        if (n > 0)
            declared(in[0], in + 1, n - 1);
        break;
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
