/*
 * tests/unit/grpc/rpc_table_test.c - rpc.c's method table and reflect.c's answers: every
 * row is complete; ExperimentalService's messages, decoded with the PermissionsService /
 * SchemaService descriptors their rows name, are wire-identical to them (and reflection
 * v1alpha to v1); server reflection lists what the table serves and finds every method
 * of it in the embedded descriptors.
 */
#include <stdio.h>
#include <string.h>

#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "grpc/rpc_int.h"
#include "kw_test.h"

/* Every field of `a` is in `b` with the same number, label and type, recursively (names
 * may differ): what is written as `a` decodes as `b` with nothing lost. */
static bool wire_subset(const ProtobufCMessageDescriptor *a, const ProtobufCMessageDescriptor *b,
                        int depth)
{
    if (depth > 16)
        return true; /* recursive messages (Struct/Value): compared above already */
    for (unsigned i = 0; i < a->n_fields; i++) {
        const ProtobufCFieldDescriptor *fa = &a->fields[i];
        /* debug_trace is sent only for with_tracing, which the aliases' requests cannot
         * set (asserted below): the alias's response never carries it */
        if (fa->type == PROTOBUF_C_TYPE_MESSAGE &&
            fa->descriptor == &authzed__api__v1__debug_information__descriptor)
            continue;
        const ProtobufCFieldDescriptor *fb = protobuf_c_message_descriptor_get_field(b, fa->id);
        if (!fb || fa->label != fb->label || fa->type != fb->type ||
            ((fa->flags ^ fb->flags) & PROTOBUF_C_FIELD_FLAG_ONEOF))
            return false;
        if (fa->type == PROTOBUF_C_TYPE_MESSAGE &&
            !wire_subset(fa->descriptor, fb->descriptor, depth + 1))
            return false;
    }
    return true;
}

/* An alias's request decodes with the served request's descriptor (which may know more
 * fields: CheckBulkPermissionsRequest.with_tracing), and the served response decodes as
 * the alias's response. */
KW_TEST(grpc_experimental_messages_are_wire_identical)
{
    static const struct {
        const ProtobufCMessageDescriptor *exp, *v1;
    } pairs[] = {
        {&authzed__api__v1__bulk_check_permission_request__descriptor,
         &authzed__api__v1__check_bulk_permissions_request__descriptor},
        {&authzed__api__v1__bulk_check_permission_response__descriptor,
         &authzed__api__v1__check_bulk_permissions_response__descriptor},
        {&authzed__api__v1__bulk_import_relationships_request__descriptor,
         &authzed__api__v1__import_bulk_relationships_request__descriptor},
        {&authzed__api__v1__bulk_import_relationships_response__descriptor,
         &authzed__api__v1__import_bulk_relationships_response__descriptor},
        {&authzed__api__v1__bulk_export_relationships_request__descriptor,
         &authzed__api__v1__export_bulk_relationships_request__descriptor},
        {&authzed__api__v1__bulk_export_relationships_response__descriptor,
         &authzed__api__v1__export_bulk_relationships_response__descriptor},
        {&authzed__api__v1__experimental_reflect_schema_request__descriptor,
         &authzed__api__v1__reflect_schema_request__descriptor},
        {&authzed__api__v1__experimental_reflect_schema_response__descriptor,
         &authzed__api__v1__reflect_schema_response__descriptor},
        {&authzed__api__v1__experimental_computable_permissions_request__descriptor,
         &authzed__api__v1__computable_permissions_request__descriptor},
        {&authzed__api__v1__experimental_computable_permissions_response__descriptor,
         &authzed__api__v1__computable_permissions_response__descriptor},
        {&authzed__api__v1__experimental_dependent_relations_request__descriptor,
         &authzed__api__v1__dependent_relations_request__descriptor},
        {&authzed__api__v1__experimental_dependent_relations_response__descriptor,
         &authzed__api__v1__dependent_relations_response__descriptor},
        {&authzed__api__v1__experimental_diff_schema_request__descriptor,
         &authzed__api__v1__diff_schema_request__descriptor},
        {&authzed__api__v1__experimental_diff_schema_response__descriptor,
         &authzed__api__v1__diff_schema_response__descriptor},
        {&grpc__reflection__v1alpha__server_reflection_request__descriptor,
         &grpc__reflection__v1__server_reflection_request__descriptor},
        {&grpc__reflection__v1alpha__server_reflection_response__descriptor,
         &grpc__reflection__v1__server_reflection_response__descriptor},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        /* even rows: requests (alias into served); odd rows: responses (served into alias) */
        bool req = i % 2 == 0;
        const ProtobufCMessageDescriptor *from = req ? pairs[i].exp : pairs[i].v1,
                                         *to = req ? pairs[i].v1 : pairs[i].exp;
        if (!wire_subset(from, to, 0))
            fprintf(stderr, "  %s does not decode as %s\n", from->name, to->name);
        KW_ASSERT(wire_subset(from, to, 0));
    }
    /* the exception for debug_trace above holds: the alias's request has no with_tracing */
    KW_ASSERT(!protobuf_c_message_descriptor_get_field(
        &authzed__api__v1__bulk_check_permission_request__descriptor,
        authzed__api__v1__check_bulk_permissions_request__descriptor.fields[2].id));
    KW_ASSERT(strcmp(authzed__api__v1__check_bulk_permissions_request__descriptor.fields[2].name,
                     "with_tracing") == 0);
    /* and the comparison does see a difference */
    KW_ASSERT(!wire_subset(&authzed__api__v1__reflect_schema_request__descriptor,
                           &authzed__api__v1__diff_schema_request__descriptor, 0));
    KW_ASSERT(!wire_subset(&authzed__api__v1__check_bulk_permissions_request__descriptor,
                           &authzed__api__v1__bulk_check_permission_request__descriptor, 0));
}

KW_TEST(grpc_rpc_table_rows)
{
    size_t n = 0;
    const kw__grpc_rpc_t *rows = kw__grpc_rpcs(&n);
    KW_ASSERT(n >= 31);
    size_t unimplemented = 0;
    for (size_t i = 0; i < n; i++) {
        KW_ASSERT(rows[i].path[0] == '/' && strchr(rows[i].path + 1, '/'));
        KW_ASSERT(rows[i].in != NULL);
        KW_ASSERT(rows[i].fn != NULL || rows[i].unimplemented != NULL);
        unimplemented += rows[i].fn == NULL;
        KW_ASSERT(kw__grpc_find(rows[i].path, strlen(rows[i].path)) == &rows[i]);
    }
    KW_ASSERT_EQ(unimplemented, 3); /* the relationship counters */
    const char *imp = "/authzed.api.v1.PermissionsService/ImportBulkRelationships";
    KW_ASSERT(kw__grpc_streams_in(kw__grpc_find(imp, strlen(imp))));
    const char *refl = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
    KW_ASSERT_EQ(kw__grpc_find(refl, strlen(refl))->kind, KW__GRPC_BIDI);
    KW_ASSERT(kw__grpc_find(refl, strlen(refl))->is_public);
    const char *exp = "/authzed.api.v1.PermissionsService/ExportBulkRelationships";
    KW_ASSERT_EQ(kw__grpc_find(exp, strlen(exp))->kind, KW__GRPC_SERVER_STREAM);
}

/* A reflection request of kind `which` with `arg`, answered with *sent files known. */
static int ask(int which, const char *arg, uint64_t *sent, kw_arena_t *a,
               Grpc__Reflection__V1__ServerReflectionResponse *out)
{
    Grpc__Reflection__V1__ServerReflectionRequest req =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case = which;
    req.file_by_filename = (char *)arg; /* the union's strings share the slot */
    return kw__grpc_reflect_answer(&req, sent, a, out);
}

/* The name (field 1) of a serialized FileDescriptorProto. */
static kw_str_t file_name(ProtobufCBinaryData f)
{
    if (f.len < 2 || f.data[0] != 0x0a || f.data[1] > 127 || (size_t)f.data[1] + 2 > f.len)
        return KW_STR_NULL;
    return (kw_str_t){(const char *)f.data + 2, f.data[1]};
}

KW_TEST(grpc_reflection_answers)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    Grpc__Reflection__V1__ServerReflectionResponse r;
    uint64_t sent = 0;

    KW_ASSERT_EQ(ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES,
                     "", &sent, a, &r),
                 KW_OK);
    KW_ASSERT_EQ(
        r.message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    KW_ASSERT_EQ(r.list_services_response->n_service, 7);
    KW_ASSERT_STR_EQ(r.list_services_response->service[0]->name,
                     "authzed.api.v1.PermissionsService");

    /* Every method of the table is a symbol of the embedded descriptors. */
    size_t n = 0;
    const kw__grpc_rpc_t *rows = kw__grpc_rpcs(&n);
    for (size_t i = 0; i < n; i++) {
        char sym[200];
        snprintf(sym, sizeof(sym), "%s", rows[i].path + 1);
        *strchr(sym, '/') = '.';
        uint64_t none = 0;
        kw_arena_reset(a);
        KW_ASSERT_EQ(
            ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL,
                sym, &none, a, &r),
            KW_OK);
        if (r.message_response_case !=
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE)
            fprintf(stderr, "  symbol not found: %s\n", sym);
        KW_ASSERT_EQ(
            r.message_response_case,
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
        KW_ASSERT(r.file_descriptor_response->n_file_descriptor_proto >= 1);
    }

    /* A file with its dependencies, each once per stream. */
    kw_arena_reset(a);
    KW_ASSERT_EQ(
        ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME,
            "authzed/api/v1/permission_service.proto", &sent, a, &r),
        KW_OK);
    Grpc__Reflection__V1__FileDescriptorResponse *f = r.file_descriptor_response;
    KW_ASSERT(f->n_file_descriptor_proto >= 5); /* itself, core, struct, timestamp, status, any */
    KW_ASSERT(kw_str_eq(file_name(f->file_descriptor_proto[0]),
                        KW_STR("authzed/api/v1/permission_service.proto")));
    bool core = false;
    for (size_t i = 0; i < f->n_file_descriptor_proto; i++)
        core |=
            kw_str_eq(file_name(f->file_descriptor_proto[i]), KW_STR("authzed/api/v1/core.proto"));
    KW_ASSERT(core);
    kw_arena_reset(a);
    KW_ASSERT_EQ(
        ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL,
            "authzed.api.v1.ObjectReference", &sent, a, &r),
        KW_OK);
    KW_ASSERT_EQ(r.file_descriptor_response->n_file_descriptor_proto, 0); /* core: sent already */

    /* Nested symbols: an enum in a message, its value, a field, a oneof. */
    const char *nested[] = {"authzed.api.v1.CheckPermissionResponse.Permissionship",
                            "authzed.api.v1.CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION",
                            "authzed.api.v1.Relationship.resource",
                            "authzed.api.v1.Consistency.requirement",
                            "grpc.health.v1.HealthCheckResponse.ServingStatus"};
    for (size_t i = 0; i < sizeof(nested) / sizeof(nested[0]); i++) {
        uint64_t none = 0;
        kw_arena_reset(a);
        KW_ASSERT_EQ(
            ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL,
                nested[i], &none, a, &r),
            KW_OK);
        KW_ASSERT_EQ(
            r.message_response_case,
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    }

    /* What is not there: NOT_FOUND in the stream, as gRPC answers. */
    const char *absent[] = {"authzed.api.v1.NoSuch",
                            "authzed.api.v1",
                            "authzed",
                            "",
                            "authzed.api.v1.PermissionsService.NoSuchMethod",
                            "authzed.api.v1.ObjectReference.object_type.x"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
        kw_arena_reset(a);
        KW_ASSERT_EQ(
            ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL,
                absent[i], &sent, a, &r),
            KW_OK);
        KW_ASSERT_EQ(
            r.message_response_case,
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
        KW_ASSERT_EQ(r.error_response->error_code, KW_GRPC_NOT_FOUND);
    }
    kw_arena_reset(a);
    KW_ASSERT_EQ(
        ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME,
            "nosuch.proto", &sent, a, &r),
        KW_OK);
    KW_ASSERT_EQ(r.error_response->error_code, KW_GRPC_NOT_FOUND);

    /* Extensions: our messages have none. */
    kw_arena_reset(a);
    KW_ASSERT_EQ(
        ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE,
            "authzed.api.v1.Relationship", &sent, a, &r),
        KW_OK);
    KW_ASSERT_EQ(
        r.message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
    KW_ASSERT_STR_EQ(r.all_extension_numbers_response->base_type_name,
                     "authzed.api.v1.Relationship");
    KW_ASSERT_EQ(r.all_extension_numbers_response->n_extension_number, 0);
    kw_arena_reset(a);
    KW_ASSERT_EQ(
        ask(GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE,
            "authzed.api.v1.NoSuch", &sent, a, &r),
        KW_OK);
    KW_ASSERT_EQ(r.error_response->error_code, KW_GRPC_NOT_FOUND);
    Grpc__Reflection__V1__ExtensionRequest ext = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    ext.containing_type = (char *)"authzed.api.v1.Relationship";
    ext.extension_number = 100;
    Grpc__Reflection__V1__ServerReflectionRequest req =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    req.file_containing_extension = &ext;
    KW_ASSERT_EQ(kw__grpc_reflect_answer(&req, &sent, a, &r), KW_OK);
    KW_ASSERT_EQ(r.error_response->error_code, KW_GRPC_NOT_FOUND);
    /* No request set: refused (the RPC ends INVALID_ARGUMENT). */
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET;
    KW_ASSERT_EQ(kw__grpc_reflect_answer(&req, &sent, a, &r), KW_EINVAL);
    kw_arena_free(a);
}
