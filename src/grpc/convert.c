/*
 * grpc/convert.c - protobuf messages <-> the service layer's types: google.protobuf.Struct
 * <-> JSON object text (caveat contexts), Relationship, ObjectReference,
 * SubjectReference, RelationshipFilter, Precondition, Consistency. Decoding only maps
 * shapes (a required message that is absent is INVALID_ARGUMENT, as SpiceDB's
 * validation says); every other decision is the service layer's.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "convert.h"

#define KW__GRPC_STRUCT_DEPTH 32

static json_t *value_json(const Google__Protobuf__Value *v, int depth);

static json_t *struct_json(const Google__Protobuf__Struct *s, int depth)
{
    if (depth > KW__GRPC_STRUCT_DEPTH)
        return NULL;
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t i = 0; s && i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = s->fields[i];
        json_t *v = value_json(e->value, depth + 1);
        if (!v || json_object_set_new(o, e->key ? e->key : "", v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *value_json(const Google__Protobuf__Value *v, int depth)
{
    if (!v || depth > KW__GRPC_STRUCT_DEPTH)
        return v ? NULL : json_null();
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        /* As protobuf's JSON mapping prints it: an integral number without ".0". */
        if (v->number_value == (double)(int64_t)v->number_value &&
            v->number_value > -9007199254740992.0 && v->number_value < 9007199254740992.0)
            return json_integer((json_int_t)v->number_value);
        return json_real(v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        return json_string(v->string_value ? v->string_value : "");
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return json_boolean(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return struct_json(v->struct_value, depth + 1);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        json_t *a = json_array();
        for (size_t i = 0; a && v->list_value && i < v->list_value->n_values; i++) {
            json_t *x = value_json(v->list_value->values[i], depth + 1);
            if (!x || json_array_append_new(a, x) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    default:
        return json_null();
    }
}

bool kw__grpc_struct_text(const Google__Protobuf__Struct *s, kw_arena_t *a, kw_str_t *out,
                          kw_v1_status_t *st)
{
    *out = KW_STR_NULL;
    if (!s || s->n_fields == 0)
        return true;
    json_t *o = struct_json(s, 0);
    if (!o) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                   "context: a Struct nested deeper than %d levels or not representable",
                   KW__GRPC_STRUCT_DEPTH);
        return false;
    }
    char *txt = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (!txt || kw_arena_str_copy(a, kw_str_c(txt), out) != KW_OK) {
        free(txt);
        kw_v1_fail(st, KW_ENOMEM, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "out of memory");
        return false;
    }
    free(txt);
    return true;
}

static Google__Protobuf__Struct *json_struct(json_t *o, kw_arena_t *a);

static Google__Protobuf__Value *json_value(json_t *j, kw_arena_t *a)
{
    Google__Protobuf__Value *v = kw_arena_alloc(a, sizeof(*v));
    if (!v)
        return NULL;
    google__protobuf__value__init(v);
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v->struct_value = json_struct(j, a);
        return v->struct_value ? v : NULL;
    case JSON_ARRAY: {
        Google__Protobuf__ListValue *l = kw_arena_alloc(a, sizeof(*l));
        if (!l)
            return NULL;
        google__protobuf__list_value__init(l);
        size_t n = json_array_size(j);
        l->values = n ? kw_arena_alloc(a, n * sizeof(*l->values)) : NULL;
        if (n && !l->values)
            return NULL;
        for (size_t i = 0; i < n; i++)
            if (!(l->values[i] = json_value(json_array_get(j, i), a)))
                return NULL;
        l->n_values = n;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
        return v;
    }
    case JSON_STRING:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = kw_arena_strndup(a, json_string_value(j), json_string_length(j));
        return v->string_value ? v : NULL;
    case JSON_INTEGER:
    case JSON_REAL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = json_number_value(j);
        return v;
    case JSON_TRUE:
    case JSON_FALSE:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = json_is_true(j);
        return v;
    default:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        return v;
    }
}

static Google__Protobuf__Struct *json_struct(json_t *o, kw_arena_t *a)
{
    Google__Protobuf__Struct *s = kw_arena_alloc(a, sizeof(*s));
    if (!s)
        return NULL;
    google__protobuf__struct__init(s);
    size_t n = json_object_size(o), i = 0;
    s->fields = n ? kw_arena_alloc(a, n * sizeof(*s->fields)) : NULL;
    if (n && !s->fields)
        return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        Google__Protobuf__Struct__FieldsEntry *e = kw_arena_alloc(a, sizeof(*e));
        if (!e)
            return NULL;
        google__protobuf__struct__fields_entry__init(e);
        e->key = kw_arena_strndup(a, k, strlen(k));
        e->value = json_value(v, a);
        if (!e->key || !e->value)
            return NULL;
        s->fields[i++] = e;
    }
    s->n_fields = i;
    return s;
}

Google__Protobuf__Struct *kw__grpc_text_struct(kw_str_t text, kw_arena_t *a)
{
    json_t *o = json_loadb(text.ptr, text.len, 0, NULL);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    Google__Protobuf__Struct *s = json_struct(o, a);
    json_decref(o);
    return s;
}

static kw_str_t S(const char *p)
{
    return p ? kw_str_c(p) : KW_STR_NULL;
}

bool kw__grpc_object(const Authzed__Api__V1__ObjectReference *o, const char *what, kw_object_t *out,
                     kw_v1_status_t *st)
{
    if (!o) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL, "invalid %s: value is required",
                   what);
        return false;
    }
    out->type = S(o->object_type);
    out->id = S(o->object_id);
    return true;
}

bool kw__grpc_subject(const Authzed__Api__V1__SubjectReference *s, const char *what,
                      kw_subject_t *out, kw_v1_status_t *st)
{
    if (!s) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL, "invalid %s: value is required",
                   what);
        return false;
    }
    kw_object_t ob;
    if (!kw__grpc_object(s->object, "Subject.Object", &ob, st))
        return false;
    out->type = ob.type;
    out->id = ob.id;
    out->relation = S(s->optional_relation);
    return true;
}

bool kw__grpc_rel(const Authzed__Api__V1__Relationship *r, kw_arena_t *a, kw_rel_t *out,
                  kw_v1_status_t *st)
{
    memset(out, 0, sizeof(*out));
    if (!r) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                   "invalid Relationship: value is required");
        return false;
    }
    if (!kw__grpc_object(r->resource, "Relationship.Resource", &out->resource, st) ||
        !kw__grpc_subject(r->subject, "Relationship.Subject", &out->subject, st))
        return false;
    out->relation = S(r->relation);
    if (r->optional_caveat) {
        out->caveat = S(r->optional_caveat->caveat_name);
        if (out->caveat.len == 0) {
            kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                       "invalid ContextualizedCaveat.CaveatName: value is required");
            return false;
        }
        if (!kw__grpc_struct_text(r->optional_caveat->context, a, &out->caveat_ctx, st))
            return false;
    }
    if (r->optional_expires_at) {
        const Google__Protobuf__Timestamp *t = r->optional_expires_at;
        if (t->seconds < 1 || t->seconds > 253402300799 || t->nanos < 0 || t->nanos > 999999999) {
            kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                       "invalid Relationship.OptionalExpiresAt: not a valid timestamp");
            return false;
        }
        out->expires_at = t->seconds * 1000000 + t->nanos / 1000;
    }
    return true;
}

bool kw__grpc_filter(const Authzed__Api__V1__RelationshipFilter *f, kw_filter_t *out,
                     kw_str_t *prefix, kw_v1_status_t *st)
{
    memset(out, 0, sizeof(*out));
    *prefix = KW_STR_NULL;
    if (!f) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                   "invalid RelationshipFilter: value is required");
        return false;
    }
    out->resource_type = S(f->resource_type);
    out->resource_id = S(f->optional_resource_id);
    out->relation = S(f->optional_relation);
    *prefix = S(f->optional_resource_id_prefix);
    if (f->optional_subject_filter) {
        const Authzed__Api__V1__SubjectFilter *sf = f->optional_subject_filter;
        out->has_subject = true;
        out->subject_type = S(sf->subject_type);
        out->subject_id = S(sf->optional_subject_id);
        if (sf->optional_relation) {
            out->subject_relation_set = true;
            out->subject_relation = S(sf->optional_relation->relation);
        }
    }
    return true;
}

bool kw__grpc_preconditions(Authzed__Api__V1__Precondition **p, size_t n, kw_arena_t *a,
                            kw_precondition_t **out, size_t *n_out, kw_v1_status_t *st)
{
    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return true;
    kw_precondition_t *pre = kw_arena_alloc(a, n * sizeof(*pre));
    if (!pre) {
        kw_v1_fail(st, KW_ENOMEM, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        kw_str_t prefix;
        if (p[i]->operation != AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_MATCH &&
            p[i]->operation !=
                AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_NOT_MATCH) {
            kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                       "invalid Precondition.Operation: value must be one of the defined enum "
                       "values and not OPERATION_UNSPECIFIED");
            return false;
        }
        pre[i].must_match =
            p[i]->operation == AUTHZED__API__V1__PRECONDITION__OPERATION__OPERATION_MUST_MATCH;
        if (!kw__grpc_filter(p[i]->filter, &pre[i].filter, &prefix, st))
            return false;
        if (prefix.len) {
            kw_v1_fail(st, KW_EUNSUPPORTED, KW_GRPC_UNIMPLEMENTED, NULL,
                       "a precondition's optional_resource_id_prefix is not supported");
            return false;
        }
    }
    *out = pre;
    *n_out = n;
    return true;
}

bool kw__grpc_consistency(const Authzed__Api__V1__Consistency *c, kw_v1_consistency_t *out,
                          kw_v1_status_t *st)
{
    out->kind = KW_V1_MINIMIZE_LATENCY;
    out->rev = 0;
    if (!c)
        return true;
    const Authzed__Api__V1__ZedToken *tok = NULL;
    switch (c->requirement_case) {
    case AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_LEAST_AS_FRESH:
        out->kind = KW_V1_AT_LEAST_AS_FRESH;
        tok = c->at_least_as_fresh;
        break;
    case AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_AT_EXACT_SNAPSHOT:
        out->kind = KW_V1_AT_EXACT_SNAPSHOT;
        tok = c->at_exact_snapshot;
        break;
    case AUTHZED__API__V1__CONSISTENCY__REQUIREMENT_FULLY_CONSISTENT:
        out->kind = KW_V1_FULLY_CONSISTENT;
        return true;
    default:
        return true;
    }
    if (!tok || !tok->token || !kw_api_parse_revision(kw_str_c(tok->token), &out->rev)) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                   "invalid zedtoken: not a token this server minted");
        return false;
    }
    return true;
}

Authzed__Api__V1__ZedToken *kw__grpc_token(kw_revision_t rev, kw_arena_t *a)
{
    Authzed__Api__V1__ZedToken *t = kw_arena_alloc(a, sizeof(*t));
    if (!t)
        return NULL;
    authzed__api__v1__zed_token__init(t);
    /* The decimal digits by hand: kw_arena_sprintf was ~1,500 instructions, as much as
     * packing the whole message, and a streamed RPC makes a token per result. */
    char digits[24];
    size_t n = 0;
    uint64_t v = (uint64_t)rev;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    t->token = kw_arena_strndup(a, digits + sizeof(digits) - n, n);
    return t->token ? t : NULL;
}

Authzed__Api__V1__Cursor *kw__grpc_cursor(const char *c, kw_arena_t *a)
{
    if (!c)
        return NULL;
    Authzed__Api__V1__Cursor *t = kw_arena_alloc(a, sizeof(*t));
    if (!t)
        return NULL;
    authzed__api__v1__cursor__init(t);
    t->token = (char *)c;
    return t;
}

/* A varint (at most 10 bytes). */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

size_t kw__grpc_lr_encode(uint8_t *out, size_t cap, kw_revision_t rev, kw_str_t id,
                          const char *cursor)
{
    char digits[24];
    size_t nd = 0;
    uint64_t v = (uint64_t)rev;
    do {
        digits[sizeof(digits) - 1 - nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t cl = cursor ? strlen(cursor) : 0;
    /* the worst case: three tags, five varints of 10 bytes, the enum, the bytes */
    /* an id with a NUL: the message's C string would end there; leave it to protobuf-c */
    if (cl == 0 || id.len > cap || cl > cap || nd + id.len + cl + 3 * 1 + 5 * 10 + 2 > cap ||
        (id.len && memchr(id.ptr, '\0', id.len)))
        return 0;
    size_t o = 0;
    out[o++] = 0x0a; /* 1: looked_up_at, a ZedToken {1: token} */
    o += put_varint(out + o, 2 + nd);
    out[o++] = 0x0a;
    out[o++] = (uint8_t)nd; /* < 128 */
    memcpy(out + o, digits + sizeof(digits) - nd, nd);
    o += nd;
    if (id.len) { /* 2: resource_object_id (proto3: "" is left out) */
        out[o++] = 0x12;
        o += put_varint(out + o, id.len);
        memcpy(out + o, id.ptr, id.len);
        o += id.len;
    }
    out[o++] = 0x18; /* 3: permissionship */
    out[o++] = AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_HAS_PERMISSION;
    uint8_t inner[10];
    size_t il = put_varint(inner, cl);
    out[o++] = 0x2a; /* 5: after_result_cursor, a Cursor {1: token} */
    o += put_varint(out + o, 1 + il + cl);
    out[o++] = 0x0a;
    memcpy(out + o, inner, il);
    o += il;
    memcpy(out + o, cursor, cl);
    return o + cl;
}

static char *cstr(kw_str_t s, kw_arena_t *a)
{
    return kw_arena_strndup(a, s.ptr ? s.ptr : "", s.len);
}

Authzed__Api__V1__ObjectReference *kw__grpc_object_msg(kw_object_t o, kw_arena_t *a)
{
    Authzed__Api__V1__ObjectReference *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__object_reference__init(m);
    m->object_type = cstr(o.type, a);
    m->object_id = cstr(o.id, a);
    return m->object_type && m->object_id ? m : NULL;
}

Authzed__Api__V1__SubjectReference *kw__grpc_subject_msg(const kw_subject_t *s, kw_arena_t *a)
{
    Authzed__Api__V1__SubjectReference *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__subject_reference__init(m);
    m->object = kw__grpc_object_msg((kw_object_t){s->type, s->id}, a);
    kw_str_t rel = s->relation;
    if (rel.len == 3 && memcmp(rel.ptr, "...", 3) == 0)
        rel = KW_STR_NULL;
    m->optional_relation = cstr(rel, a);
    return m->object && m->optional_relation ? m : NULL;
}

Authzed__Api__V1__Relationship *kw__grpc_rel_msg(const kw_rel_t *r, kw_arena_t *a)
{
    Authzed__Api__V1__Relationship *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__relationship__init(m);
    m->resource = kw__grpc_object_msg(r->resource, a);
    m->relation = cstr(r->relation, a);
    m->subject = kw__grpc_subject_msg(&r->subject, a);
    if (!m->resource || !m->relation || !m->subject)
        return NULL;
    if (r->caveat.len) {
        Authzed__Api__V1__ContextualizedCaveat *cv = kw_arena_alloc(a, sizeof(*cv));
        if (!cv)
            return NULL;
        authzed__api__v1__contextualized_caveat__init(cv);
        cv->caveat_name = cstr(r->caveat, a);
        if (!cv->caveat_name)
            return NULL;
        if (r->caveat_ctx.len && !(cv->context = kw__grpc_text_struct(r->caveat_ctx, a)))
            return NULL;
        m->optional_caveat = cv;
    }
    if (r->expires_at) {
        Google__Protobuf__Timestamp *t = kw_arena_alloc(a, sizeof(*t));
        if (!t)
            return NULL;
        google__protobuf__timestamp__init(t);
        t->seconds = r->expires_at / 1000000;
        t->nanos = (int32_t)(r->expires_at % 1000000) * 1000;
        m->optional_expires_at = t;
    }
    return m;
}

Authzed__Api__V1__PartialCaveatInfo *kw__grpc_partial(kw_v1_permissionship_t p, kw_str_t missing,
                                                      kw_arena_t *a)
{
    if (p != KW_V1_PERM_CONDITIONAL)
        return NULL;
    Authzed__Api__V1__PartialCaveatInfo *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__partial_caveat_info__init(m);
    size_t n = missing.len ? 1 : 0;
    for (size_t i = 0; i < missing.len; i++)
        n += missing.ptr[i] == ',';
    m->missing_required_context = n ? kw_arena_alloc(a, n * sizeof(char *)) : NULL;
    if (n && !m->missing_required_context)
        return NULL;
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= missing.len && n; i++) {
        if (i == missing.len || missing.ptr[i] == ',') {
            char *s = kw_arena_strndup(a, missing.ptr + start, i - start);
            if (!s)
                return NULL;
            m->missing_required_context[k++] = s;
            start = i + 1;
        }
    }
    m->n_missing_required_context = k;
    return m;
}

/* ---- debug traces (DebugInformation / CheckDebugTrace, as the gateway's JSON has them) ---- */

static Authzed__Api__V1__CheckDebugTrace__Permissionship trace_result(kw_check_result_t r)
{
    return r == KW_CHECK_YES
               ? AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION
           : r == KW_CHECK_CONDITIONAL
               ? AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_CONDITIONAL_PERMISSION
               : AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSIONSHIP__PERMISSIONSHIP_NO_PERMISSION;
}

/* One node and its sub-problems; `subject` is the request's, shared by every node (it is
 * only read when packed). The depth is the engine's (at most KW_MAX_CHECK_DEPTH levels). */
static Authzed__Api__V1__CheckDebugTrace *
trace_msg(const kw_trace_t *t, Authzed__Api__V1__SubjectReference *subject, kw_arena_t *a)
{
    Authzed__Api__V1__CheckDebugTrace *m = kw_arena_alloc(a, sizeof(*m));
    Google__Protobuf__Duration *d = kw_arena_alloc(a, sizeof(*d));
    if (!m || !d)
        return NULL;
    authzed__api__v1__check_debug_trace__init(m);
    google__protobuf__duration__init(d);
    m->resource = kw__grpc_object_msg(t->resource, a);
    m->permission = cstr(t->permission, a);
    if (!m->resource || !m->permission)
        return NULL;
    m->permission_type =
        t->is_permission
            ? AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSION_TYPE__PERMISSION_TYPE_PERMISSION
            : AUTHZED__API__V1__CHECK_DEBUG_TRACE__PERMISSION_TYPE__PERMISSION_TYPE_RELATION;
    m->subject = subject;
    m->result = trace_result(t->result);
    d->seconds = (int64_t)(t->duration_ns / 1000000000ull);
    d->nanos = (int32_t)(t->duration_ns % 1000000000ull);
    m->duration = d;
    if (t->result == KW_CHECK_CONDITIONAL) {
        /* keyward's trace knows which parameters are missing, not which caveat asked */
        Authzed__Api__V1__CaveatEvalInfo *cv = kw_arena_alloc(a, sizeof(*cv));
        if (!cv)
            return NULL;
        authzed__api__v1__caveat_eval_info__init(cv);
        cv->result = AUTHZED__API__V1__CAVEAT_EVAL_INFO__RESULT__RESULT_MISSING_SOME_CONTEXT;
        cv->partial_caveat_info = kw__grpc_partial(KW_V1_PERM_CONDITIONAL, t->missing, a);
        if (!cv->partial_caveat_info)
            return NULL;
        m->caveat_evaluation_info = cv;
    }
    if (t->cached) {
        m->resolution_case = AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_WAS_CACHED_RESULT;
        m->was_cached_result = true;
        return m;
    }
    Authzed__Api__V1__CheckDebugTrace__SubProblems *sp = kw_arena_alloc(a, sizeof(*sp));
    if (!sp)
        return NULL;
    authzed__api__v1__check_debug_trace__sub_problems__init(sp);
    if (t->n_subs) {
        sp->traces = kw_arena_alloc(a, t->n_subs * sizeof(*sp->traces));
        if (!sp->traces)
            return NULL;
        for (size_t i = 0; i < t->n_subs; i++)
            if (!(sp->traces[i] = trace_msg(t->subs[i], subject, a)))
                return NULL;
        sp->n_traces = t->n_subs;
    }
    m->resolution_case = AUTHZED__API__V1__CHECK_DEBUG_TRACE__RESOLUTION_SUB_PROBLEMS;
    m->sub_problems = sp;
    return m;
}

Authzed__Api__V1__DebugInformation *kw__grpc_debug(const kw_trace_t *t, const kw_subject_t *subject,
                                                   kw_str_t schema_used, kw_arena_t *a)
{
    Authzed__Api__V1__DebugInformation *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__debug_information__init(m);
    Authzed__Api__V1__SubjectReference *s = kw__grpc_subject_msg(subject, a);
    if (!s || !(m->check = trace_msg(t, s, a)) || !(m->schema_used = cstr(schema_used, a)))
        return NULL;
    return m;
}
