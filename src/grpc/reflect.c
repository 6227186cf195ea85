/*
 * grpc/reflect.c - gRPC server reflection (grpc.reflection.v1 and v1alpha, the same wire:
 * one handler serves both): what grpcurl, Postman and reflection clients ask to learn the
 * services without .proto files.
 *
 * The answers come from the FileDescriptorSet protoc-c made from proto/ at build time
 * (embedded by src/grpc/embed.cmake as kw__grpc_descriptor_set): each file's serialized
 * FileDescriptorProto is sent as protoc wrote it. Queries walk those bytes (a small
 * protobuf wire reader, no copy and no state kept between calls): a file by name, the
 * file declaring a fully qualified symbol (service, method, message, nested message,
 * field, oneof, enum, enum value), extensions (our files declare none: NOT_FOUND, as gRPC
 * answers for an unknown extension). As gRPC's own servers do, a file is sent with its
 * transitive dependencies, each file at most once per stream. list_services names the
 * services of rpc.c's table, so it lists exactly what is served.
 */
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "rpc_int.h"

#define KW_MODULE "grpc"

extern const unsigned char kw__grpc_descriptor_set[];
extern const size_t kw__grpc_descriptor_set_len;

#define MAX_FILES 64 /* files in the set: the `sent` bitmask's width */

/* ---- a protobuf wire reader over bytes ---- */

typedef struct rd {
    const uint8_t *p, *end;
} rd_t;

static bool rd_varint(rd_t *r, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return false;
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* The next field: its number, and for a length-delimited one its bytes (others are
 * skipped). false at the end or on malformed input. */
static bool rd_field(rd_t *r, uint32_t *no, kw_str_t *bytes)
{
    uint64_t key, v;
    if (r->p >= r->end || !rd_varint(r, &key) || key >> 3 == 0 || key >> 3 > UINT32_MAX)
        return false;
    *no = (uint32_t)(key >> 3);
    *bytes = KW_STR_NULL;
    switch (key & 7) {
    case 0:
        return rd_varint(r, &v);
    case 1:
        if (r->end - r->p < 8)
            return false;
        r->p += 8;
        return true;
    case 5:
        if (r->end - r->p < 4)
            return false;
        r->p += 4;
        return true;
    case 2:
        if (!rd_varint(r, &v) || v > (uint64_t)(r->end - r->p))
            return false;
        *bytes = (kw_str_t){(const char *)r->p, (size_t)v};
        r->p += v;
        return true;
    default: /* groups: never in descriptors */
        return false;
    }
}

static rd_t rd_of(kw_str_t b)
{
    return (rd_t){(const uint8_t *)b.ptr, (const uint8_t *)b.ptr + b.len};
}

/* The string field `no` of message m (the first; len 0 when absent). */
static kw_str_t field_str(kw_str_t m, uint32_t no)
{
    rd_t r = rd_of(m);
    uint32_t n;
    kw_str_t b;
    while (rd_field(&r, &n, &b))
        if (n == no && b.ptr)
            return b;
    return (kw_str_t){"", 0};
}

/* The i-th FileDescriptorProto of the set; false past the last. */
static bool set_file(kw_str_t set, size_t i, kw_str_t *file)
{
    rd_t r = rd_of(set);
    uint32_t no;
    kw_str_t b;
    size_t k = 0;
    while (rd_field(&r, &no, &b))
        if (no == 1 && b.ptr && k++ == i) {
            *file = b;
            return true;
        }
    return false;
}

static bool str_eq(kw_str_t a, kw_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* name is `scope.rest`: *rest gets rest. */
static bool scoped(kw_str_t name, kw_str_t scope, kw_str_t *rest)
{
    if (scope.len == 0) {
        *rest = name;
        return true;
    }
    if (name.len <= scope.len + 1 || memcmp(name.ptr, scope.ptr, scope.len) != 0 ||
        name.ptr[scope.len] != '.')
        return false;
    *rest = (kw_str_t){name.ptr + scope.len + 1, name.len - scope.len - 1};
    return true;
}

/* EnumDescriptorProto e declares rest (its name) or, scoped beside it, one of its values. */
static bool enum_has(kw_str_t e, kw_str_t rest, bool *value_scope)
{
    if (str_eq(field_str(e, 1), rest))
        return true;
    rd_t r = rd_of(e);
    uint32_t no;
    kw_str_t b;
    while (rd_field(&r, &no, &b))
        if (no == 2 && b.ptr && str_eq(field_str(b, 1), rest)) {
            *value_scope = true;
            return true;
        }
    return false;
}

/* DescriptorProto m declares sym (relative to m's scope): itself, a field, a oneof, a
 * nested message or enum, an enum value (scoped in m), an extension. */
static bool message_has(kw_str_t m, kw_str_t sym, int depth)
{
    kw_str_t name = field_str(m, 1), rest;
    if (str_eq(name, sym))
        return true;
    if (depth > 32 || !scoped(sym, name, &rest))
        return false;
    rd_t r = rd_of(m);
    uint32_t no;
    kw_str_t b;
    bool value_scope = false;
    while (rd_field(&r, &no, &b)) {
        if (!b.ptr)
            continue;
        if ((no == 2 || no == 6 || no == 8) && str_eq(field_str(b, 1), rest))
            return true; /* field, extension, oneof */
        if (no == 3 && message_has(b, rest, depth + 1))
            return true;
        if (no == 4 && enum_has(b, rest, &value_scope))
            return true;
    }
    return false;
}

/* FileDescriptorProto f declares the fully qualified symbol sym. */
static bool file_has_symbol(kw_str_t f, kw_str_t sym)
{
    kw_str_t rest;
    if (!scoped(sym, field_str(f, 2), &rest))
        return false;
    rd_t r = rd_of(f);
    uint32_t no;
    kw_str_t b;
    bool value_scope = false;
    while (rd_field(&r, &no, &b)) {
        if (!b.ptr)
            continue;
        if (no == 4 && message_has(b, rest, 0))
            return true;
        if (no == 5 && enum_has(b, rest, &value_scope))
            return true;
        if (no == 7 && str_eq(field_str(b, 1), rest))
            return true;
        if (no == 6) { /* a service, or one of its methods */
            kw_str_t svc = field_str(b, 1), m;
            if (str_eq(svc, rest))
                return true;
            if (scoped(rest, svc, &m)) {
                rd_t mr = rd_of(b);
                uint32_t mn;
                kw_str_t mb;
                while (rd_field(&mr, &mn, &mb))
                    if (mn == 2 && mb.ptr && str_eq(field_str(mb, 1), m))
                        return true;
            }
        }
    }
    return false;
}

/* The index of the file named name, or -1. */
static int file_index(kw_str_t set, kw_str_t name)
{
    kw_str_t f;
    for (size_t i = 0; i < MAX_FILES && set_file(set, i, &f); i++)
        if (str_eq(field_str(f, 1), name))
            return (int)i;
    return -1;
}

/* Adds file i and its transitive dependencies not yet in *sent to out (in that order:
 * the file asked for first). */
static void add_closure(kw_str_t set, int i, uint64_t *sent, ProtobufCBinaryData *out, size_t *n,
                        int depth)
{
    kw_str_t f;
    if (i < 0 || i >= MAX_FILES || (*sent & (1ull << i)) || depth > MAX_FILES ||
        !set_file(set, (size_t)i, &f))
        return;
    *sent |= 1ull << i;
    out[(*n)++] = (ProtobufCBinaryData){f.len, (uint8_t *)f.ptr};
    rd_t r = rd_of(f);
    uint32_t no;
    kw_str_t b;
    while (rd_field(&r, &no, &b))
        if (no == 3 && b.ptr)
            add_closure(set, file_index(set, b), sent, out, n, depth + 1);
}

/* ---- answering one request ---- */

static kw_str_t embedded_set(void)
{
    return (kw_str_t){(const char *)kw__grpc_descriptor_set, kw__grpc_descriptor_set_len};
}

static int answer_error(Grpc__Reflection__V1__ServerReflectionResponse *out, kw_arena_t *a,
                        int code, const char *msg)
{
    Grpc__Reflection__V1__ErrorResponse *e = kw_arena_alloc(a, sizeof(*e));
    if (!e)
        return KW_ENOMEM;
    grpc__reflection__v1__error_response__init(e);
    e->error_code = code;
    e->error_message = (char *)msg;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    out->error_response = e;
    return KW_OK;
}

static int answer_files(Grpc__Reflection__V1__ServerReflectionResponse *out, kw_arena_t *a,
                        int index, uint64_t *sent)
{
    Grpc__Reflection__V1__FileDescriptorResponse *fr = kw_arena_alloc(a, sizeof(*fr));
    ProtobufCBinaryData *files = kw_arena_alloc(a, MAX_FILES * sizeof(*files));
    if (!fr || !files)
        return KW_ENOMEM;
    grpc__reflection__v1__file_descriptor_response__init(fr);
    size_t n = 0;
    add_closure(embedded_set(), index, sent, files, &n, 0);
    fr->file_descriptor_proto = files;
    fr->n_file_descriptor_proto = n;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    out->file_descriptor_response = fr;
    return KW_OK;
}

static int answer_services(Grpc__Reflection__V1__ServerReflectionResponse *out, kw_arena_t *a)
{
    size_t n_rows;
    const kw__grpc_rpc_t *rows = kw__grpc_rpcs(&n_rows);
    Grpc__Reflection__V1__ListServiceResponse *l = kw_arena_alloc(a, sizeof(*l));
    Grpc__Reflection__V1__ServiceResponse **svcs = kw_arena_alloc(a, n_rows * sizeof(*svcs));
    if (!l || !svcs)
        return KW_ENOMEM;
    grpc__reflection__v1__list_service_response__init(l);
    size_t n = 0;
    for (size_t i = 0; i < n_rows; i++) {
        /* "/pkg.Service/Method" -> "pkg.Service", once each */
        const char *p = rows[i].path + 1, *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = strlen(svcs[k]->name) == len && memcmp(svcs[k]->name, p, len) == 0;
        if (seen)
            continue;
        Grpc__Reflection__V1__ServiceResponse *s = kw_arena_alloc(a, sizeof(*s));
        if (!s)
            return KW_ENOMEM;
        grpc__reflection__v1__service_response__init(s);
        if (!(s->name = kw_arena_strndup(a, p, len)))
            return KW_ENOMEM;
        svcs[n++] = s;
    }
    l->service = svcs;
    l->n_service = n;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    out->list_services_response = l;
    return KW_OK;
}

int kw__grpc_reflect_answer(const Grpc__Reflection__V1__ServerReflectionRequest *req,
                            uint64_t *sent, kw_arena_t *a,
                            Grpc__Reflection__V1__ServerReflectionResponse *out)
{
    kw_str_t set = embedded_set();
    grpc__reflection__v1__server_reflection_response__init(out);
    out->valid_host = req->host ? req->host : (char *)"";
    out->original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        return answer_services(out, a);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: {
        int i = file_index(set, kw_str_c(req->file_by_filename));
        if (i < 0)
            return answer_error(out, a, KW_GRPC_NOT_FOUND, "file not found");
        return answer_files(out, a, i, sent);
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
        kw_str_t sym = kw_str_c(req->file_containing_symbol), f;
        for (size_t i = 0; i < MAX_FILES && set_file(set, i, &f); i++)
            if (sym.len && file_has_symbol(f, sym))
                return answer_files(out, a, (int)i, sent);
        return answer_error(out, a, KW_GRPC_NOT_FOUND, "symbol not found");
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        return answer_error(out, a, KW_GRPC_NOT_FOUND, "extension not found");
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
        kw_str_t type = kw_str_c(req->all_extension_numbers_of_type), f;
        for (size_t i = 0; i < MAX_FILES && set_file(set, i, &f); i++) {
            kw_str_t rest;
            rd_t r = rd_of(f);
            uint32_t no;
            kw_str_t b;
            if (!type.len || !scoped(type, field_str(f, 2), &rest))
                continue;
            while (rd_field(&r, &no, &b))
                if (no == 4 && b.ptr && message_has(b, rest, 0)) {
                    /* a message of ours: it has no extension (none is declared) */
                    Grpc__Reflection__V1__ExtensionNumberResponse *e =
                        kw_arena_alloc(a, sizeof(*e));
                    if (!e)
                        return KW_ENOMEM;
                    grpc__reflection__v1__extension_number_response__init(e);
                    e->base_type_name = req->all_extension_numbers_of_type;
                    out->message_response_case =
                        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
                    out->all_extension_numbers_response = e;
                    return KW_OK;
                }
        }
        return answer_error(out, a, KW_GRPC_NOT_FOUND, "type not found");
    }
    default:
        return KW_EINVAL;
    }
}

KW__GRPC_HANDLER(reflection)
{
    (void)in; /* the requests stream in */
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        return;
    }
    uint64_t sent = 0; /* files this stream has been sent */
    for (;;) {
        int rc;
        Grpc__Reflection__V1__ServerReflectionRequest *req =
            (Grpc__Reflection__V1__ServerReflectionRequest *)kw__grpc_recv_msg(
                c, &grpc__reflection__v1__server_reflection_request__descriptor, &rc, st);
        if (!req)
            break; /* the client's end (OK), or st says what went wrong */
        kw_arena_reset(a);
        Grpc__Reflection__V1__ServerReflectionResponse m;
        rc = kw__grpc_reflect_answer(req, &sent, a, &m);
        if (rc == KW_OK)
            rc = kw__grpc_send(c, &m.base);
        protobuf_c_message_free_unpacked(&req->base, NULL);
        if (rc == KW_EINVAL) {
            kw_v1_fail(st, rc, KW_GRPC_INVALID_ARGUMENT, NULL,
                       "invalid ServerReflectionRequest: no message_request set");
            break;
        }
        if (rc != KW_OK) {
            kw__grpc_finish(rc, st);
            break;
        }
    }
    kw_arena_free(a);
}
