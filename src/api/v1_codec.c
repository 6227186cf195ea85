/*
 * api/v1_codec.c - the JSON of the /v1 API: error bodies and the mapping of engine/store
 * errors onto gRPC codes, request decoding (objects, subjects, relationships, filters,
 * preconditions, limits, consistency and its ZedTokens) and response encoding (whole
 * answers and `{"result": ...}` stream lines). Nothing here touches the engine or the store.
 */
#include <inttypes.h>
#include <string.h>

#include "v1_int.h"
#include "base/log.h"

#define KW_MODULE "v1"

void kw__v1_error(kw_http_resp_t *resp, int status, int code, const char *msg)
{
    resp->status = status;
    resp->content_type = "application/json";
    resp->body.len = 0;
    if (resp->body.ptr)
        resp->body.ptr[0] = '\0';
    kw_buf_puts(&resp->body, "{\"detail\": ");
    kw_json_escape(&resp->body, kw_str_c(msg));
    kw_buf_printf(&resp->body, ", \"code\": %d, \"message\": ", code);
    kw_json_escape(&resp->body, kw_str_c(msg));
    kw_buf_puts(&resp->body, "}");
}

/* Maps an engine/store error to the v1 error answer. */
void kw__v1_fail(kw_http_req_t *req, kw_http_resp_t *resp, int rc, const kw_diag_t *d)
{
    const char *msg = d && d->msg[0] ? d->msg : kw_strerror(rc);
    switch (rc) {
    case KW_EINVAL:
    case KW_ESCHEMA:
    case KW_EUNSUPPORTED:
    case KW_ELIMIT:
        kw__v1_error(resp, 400, KW__GRPC_INVALID_ARGUMENT, msg);
        return;
    case KW_EPRECOND:
        kw__v1_error(resp, 400, KW__GRPC_FAILED_PRECONDITION, msg);
        return;
    case KW_EEXISTS:
    case KW_ECONFLICT:
        kw__v1_error(resp, 409, KW__GRPC_ALREADY_EXISTS, msg);
        return;
    case KW_EDB:
    case KW_ETIMEOUT:
    case KW_EPRUNED: /* behind the pruned changelog: resyncing (sync/catchup.c) */
        kw__v1_error(resp, 503, KW__GRPC_UNAVAILABLE, KW__MSG_DB);
        return;
    case KW_EDEPTH:
    case KW_ECYCLE:
        kw__v1_error(resp, 400, KW__GRPC_FAILED_PRECONDITION, msg);
        return;
    case KW_EBUDGET: /* the query's node/byte budget (base/limits.h): SpiceDB's max-depth answer */
        kw__v1_error(resp, 429, KW__GRPC_RESOURCE_EXHAUSTED, msg);
        return;
    default:
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: %s", req->request_id, kw_err_name(rc));
        kw__v1_error(resp, 500, KW__GRPC_INTERNAL, KW__MSG_INTERNAL);
        return;
    }
}

/* ---- decoding ---- */

static const char *const OBJECT_FIELDS[] = {"objectType", "objectId", NULL};
static const char *const SUBJECT_FIELDS[] = {"object", "optionalRelation", NULL};
static const char *const REL_FIELDS[] = {"resource",       "relation",          "subject",
                                         "optionalCaveat", "optionalExpiresAt", NULL};
static const char *const FILTER_FIELDS[] = {
    "resourceType",     "optionalResourceId",    "optionalResourceIdPrefix",
    "optionalRelation", "optionalSubjectFilter", NULL};
static const char *const SUBJECT_FILTER_FIELDS[] = {"subjectType", "optionalSubjectId",
                                                    "optionalRelation", NULL};
static const char *const RELATION_FILTER_FIELDS[] = {"relation", NULL};
static const char *const PRECONDITION_FIELDS[] = {"operation", "filter", NULL};
static const char *const CONSISTENCY_FIELDS[] = {"minimizeLatency", "atLeastAsFresh",
                                                 "atExactSnapshot", "fullyConsistent", NULL};
static const char *const ZEDTOKEN_FIELDS[] = {"token", NULL};

void kw__v1_perr_answer(kw_http_resp_t *resp, const kw__v1_perr_t *e)
{
    const char *msg = e->msg[0] ? e->msg : "invalid request";
    if (e->code == KW__GRPC_UNIMPLEMENTED)
        kw__v1_error(resp, 501, KW__GRPC_UNIMPLEMENTED, msg);
    else
        kw__v1_error(resp, 400, KW__GRPC_INVALID_ARGUMENT, msg);
}

bool kw__v1_bad(kw__v1_perr_t *e, const char *what)
{
    e->code = KW__GRPC_INVALID_ARGUMENT;
    snprintf(e->msg, sizeof(e->msg), "%s", what);
    return false;
}

static bool listed(const char *const *fields, const char *name)
{
    for (size_t i = 0; fields[i]; i++)
        if (strcmp(fields[i], name) == 0)
            return true;
    return false;
}

/* The proto's original name of a JSON member ("optional_expires_at" -> "optionalExpiresAt"
 * in out); false when the name has no underscore or does not fit. */
static bool camel_of(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    bool up = false, any = false;
    for (const char *p = name; *p; p++) {
        if (*p == '_') {
            up = any = true;
            continue;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        up = false;
    }
    out[n] = '\0';
    return any;
}

bool kw__v1_known(json_t *o, const char *what, const char *const *fields, kw__v1_perr_t *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        (void)v;
        if (listed(fields, key))
            continue;
        char camel[64];
        if (camel_of(key, camel, sizeof(camel)) && listed(fields, camel)) {
            e->code = KW__GRPC_UNIMPLEMENTED;
            snprintf(e->msg, sizeof(e->msg),
                     "%s: field \"%.60s\" is the proto's original name, which keyward does not "
                     "accept yet; send \"%s\"",
                     what, key, camel);
            return false;
        }
        e->code = KW__GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s: unknown field \"%.60s\"", what, key);
        return false;
    }
    return true;
}

static bool unimplemented(kw__v1_perr_t *e, const char *what, const char *key, const char *why)
{
    e->code = KW__GRPC_UNIMPLEMENTED;
    snprintf(e->msg, sizeof(e->msg), "%s.%s is not supported: %s", what, key, why);
    return false;
}

bool kw__v1_refuse_true(json_t *o, const char *what, const char *key, const char *why,
                        kw__v1_perr_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v) || json_is_false(v))
        return true;
    if (!json_is_boolean(v)) {
        e->code = KW__GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s.%s must be a boolean", what, key);
        return false;
    }
    return unimplemented(e, what, key, why);
}

bool kw__v1_refuse_set(json_t *o, const char *what, const char *key, bool empty_ok, const char *why,
                       kw__v1_perr_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return true;
    if (empty_ok && json_is_object(v) && json_object_size(v) == 0)
        return true;
    return unimplemented(e, what, key, why);
}

bool kw__v1_refuse_uint(json_t *o, const char *what, const char *key, const char *why,
                        kw__v1_perr_t *e)
{
    size_t n = 0;
    if (!kw__v1_opt_uint(o, key, &n, e))
        return false;
    return n == 0 || unimplemented(e, what, key, why);
}

/* A ZedToken {"token": "<revision>"} at consistency.<key>. */
static bool zedtoken(json_t *z, const char *key, kw_revision_t *rev, kw__v1_perr_t *e)
{
    char what[48];
    snprintf(what, sizeof(what), "consistency.%s", key);
    if (json_is_object(z) && !kw__v1_known(z, what, ZEDTOKEN_FIELDS, e))
        return false;
    json_t *t = json_is_object(z) ? json_object_get(z, "token") : NULL;
    if (json_is_string(t) &&
        kw_api_parse_revision((kw_str_t){json_string_value(t), json_string_length(t)}, rev))
        return true;
    e->code = KW__GRPC_INVALID_ARGUMENT;
    snprintf(e->msg, sizeof(e->msg), "%s must be a ZedToken {\"token\": \"<revision>\"}", what);
    return false;
}

bool kw__v1_consistency(json_t *c, kw_revision_t *min, bool *full, kw__v1_snap_t *snap,
                        kw__v1_perr_t *e)
{
    if (!c || json_is_null(c))
        return true;
    if (!json_is_object(c))
        return kw__v1_bad(e, "consistency must be an object");
    if (!kw__v1_known(c, "consistency", CONSISTENCY_FIELDS, e))
        return false;
    /* A oneof: proto3 JSON refuses a second member (null members are unset). */
    size_t set = 0;
    for (size_t i = 0; CONSISTENCY_FIELDS[i]; i++) {
        json_t *v = json_object_get(c, CONSISTENCY_FIELDS[i]);
        set += v && !json_is_null(v);
    }
    if (set > 1)
        return kw__v1_bad(e, "consistency: set only one of minimizeLatency, atLeastAsFresh, "
                             "atExactSnapshot, fullyConsistent");
    /* minimizeLatency and fullyConsistent are bools that may only be true (SpiceDB's
     * validation: bool.const = true). */
    const char *flags[] = {"minimizeLatency", "fullyConsistent"};
    for (size_t i = 0; i < KW_ARRAY_LEN(flags); i++) {
        json_t *v = json_object_get(c, flags[i]);
        if (v && !json_is_null(v) && !json_is_true(v)) {
            e->code = KW__GRPC_INVALID_ARGUMENT;
            snprintf(e->msg, sizeof(e->msg), "consistency.%s must be true when set", flags[i]);
            return false;
        }
    }
    json_t *v;
    kw_revision_t r = 0;
    if ((v = json_object_get(c, "fullyConsistent")) && json_is_true(v))
        *full = true;
    if ((v = json_object_get(c, "atLeastAsFresh")) && !json_is_null(v)) {
        if (!zedtoken(v, "atLeastAsFresh", &r, e))
            return false;
        if (r > *min)
            *min = r;
    }
    if ((v = json_object_get(c, "atExactSnapshot")) && !json_is_null(v)) {
        /* Waited for like atLeastAsFresh; kw__v1_hold then requires it to be the applied
         * revision when the engine is read. */
        if (!zedtoken(v, "atExactSnapshot", &r, e))
            return false;
        if (r > *min)
            *min = r;
        snap->exact = true;
        snap->rev = r;
    }
    return true;
}

/* Optional string field: absent/null -> empty slice. Wrong type -> false. */
bool kw__v1_opt_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e)
{
    json_t *v = json_object_get(o, key);
    *out = KW_STR_NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        e->code = KW__GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be a string", key);
        return false;
    }
    *out = (kw_str_t){json_string_value(v), json_string_length(v)};
    return true;
}

bool kw__v1_req_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e)
{
    if (!kw__v1_opt_str(o, key, out, e))
        return false;
    if (out->len == 0) {
        e->code = KW__GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s is required", key);
        return false;
    }
    return true;
}

bool kw__v1_parse_object(json_t *o, kw_object_t *out, const char *what, kw__v1_perr_t *e)
{
    if (!json_is_object(o)) {
        e->code = KW__GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be an object {objectType, objectId}", what);
        return false;
    }
    return kw__v1_known(o, what, OBJECT_FIELDS, e) &&
           kw__v1_req_str(o, "objectType", &out->type, e) &&
           kw__v1_req_str(o, "objectId", &out->id, e);
}

bool kw__v1_parse_subject(json_t *o, kw_subject_t *out, kw__v1_perr_t *e)
{
    kw_object_t obj;
    if (!json_is_object(o))
        return kw__v1_bad(e, "subject must be an object {object, optionalRelation}");
    if (!kw__v1_known(o, "subject", SUBJECT_FIELDS, e) ||
        !kw__v1_parse_object(json_object_get(o, "object"), &obj, "subject.object", e))
        return false;
    out->type = obj.type;
    out->id = obj.id;
    return kw__v1_opt_str(o, "optionalRelation", &out->relation, e);
}

bool kw__v1_parse_rel(json_t *o, kw_rel_t *out, kw__v1_perr_t *e)
{
    if (!json_is_object(o))
        return kw__v1_bad(e, "relationship must be an object");
    return kw__v1_known(o, "relationship", REL_FIELDS, e) &&
           kw__v1_refuse_set(o, "relationship", "optionalCaveat", false,
                             "keyward does not implement caveats", e) &&
           kw__v1_refuse_set(o, "relationship", "optionalExpiresAt", false,
                             "keyward does not implement expiring relationships; "
                             "the relationship would never expire",
                             e) &&
           kw__v1_parse_object(json_object_get(o, "resource"), &out->resource, "resource", e) &&
           kw__v1_req_str(o, "relation", &out->relation, e) &&
           kw__v1_parse_subject(json_object_get(o, "subject"), &out->subject, e);
}

bool kw__v1_parse_filter(json_t *o, const char *what, kw_filter_t *f, kw__v1_perr_t *e)
{
    memset(f, 0, sizeof(*f));
    if (!json_is_object(o)) {
        e->code = KW__GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be an object", what);
        return false;
    }
    kw_str_t prefix;
    if (!kw__v1_known(o, what, FILTER_FIELDS, e) ||
        !kw__v1_opt_str(o, "optionalResourceIdPrefix", &prefix, e))
        return false;
    if (prefix.len)
        return unimplemented(e, what, "optionalResourceIdPrefix",
                             "keyward does not implement resource id prefixes");
    if (!kw__v1_req_str(o, "resourceType", &f->resource_type, e) ||
        !kw__v1_opt_str(o, "optionalResourceId", &f->resource_id, e) ||
        !kw__v1_opt_str(o, "optionalRelation", &f->relation, e))
        return false;
    json_t *sf = json_object_get(o, "optionalSubjectFilter");
    if (sf && !json_is_null(sf)) {
        if (!json_is_object(sf))
            return kw__v1_bad(e, "optionalSubjectFilter must be an object");
        f->has_subject = true;
        if (!kw__v1_known(sf, "optionalSubjectFilter", SUBJECT_FILTER_FIELDS, e) ||
            !kw__v1_req_str(sf, "subjectType", &f->subject_type, e) ||
            !kw__v1_opt_str(sf, "optionalSubjectId", &f->subject_id, e))
            return false;
        json_t *sr = json_object_get(sf, "optionalRelation");
        if (sr && !json_is_null(sr)) {
            if (!json_is_object(sr))
                return kw__v1_bad(e, "optionalSubjectFilter.optionalRelation must be {relation}");
            f->subject_relation_set = true;
            if (!kw__v1_known(sr, "optionalSubjectFilter.optionalRelation", RELATION_FILTER_FIELDS,
                              e) ||
                !kw__v1_opt_str(sr, "relation", &f->subject_relation, e))
                return false;
        }
    }
    return true;
}

bool kw__v1_parse_preconditions(json_t *arr, kw_arena_t *a, kw_precondition_t **out, size_t *n,
                                kw__v1_perr_t *e)
{
    *out = NULL;
    *n = 0;
    if (!arr || json_is_null(arr))
        return true;
    if (!json_is_array(arr))
        return kw__v1_bad(e, "optionalPreconditions must be an array");
    size_t cnt = json_array_size(arr);
    if (cnt > KW_MAX_PRECONDITIONS)
        return kw__v1_bad(e, "too many preconditions");
    if (cnt == 0)
        return true;
    kw_precondition_t *pre = kw_arena_alloc(a, cnt * sizeof(*pre));
    if (!pre)
        return kw__v1_bad(e, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *p = json_array_get(arr, i);
        kw_str_t op;
        if (!json_is_object(p))
            return kw__v1_bad(e, "each precondition must be an object {operation, filter}");
        if (!kw__v1_known(p, "optionalPreconditions[]", PRECONDITION_FIELDS, e))
            return false;
        if (!kw__v1_req_str(p, "operation", &op, e))
            return kw__v1_bad(e, "each precondition needs an operation");
        if (kw_str_eq_c(op, "OPERATION_MUST_MATCH"))
            pre[i].must_match = true;
        else if (kw_str_eq_c(op, "OPERATION_MUST_NOT_MATCH"))
            pre[i].must_match = false;
        else
            return kw__v1_bad(e, "precondition operation must be OPERATION_MUST_MATCH or "
                                 "OPERATION_MUST_NOT_MATCH");
        if (!kw__v1_parse_filter(json_object_get(p, "filter"), "optionalPreconditions[].filter",
                                 &pre[i].filter, e))
            return false;
    }
    *out = pre;
    *n = cnt;
    return true;
}

bool kw__v1_opt_uint(json_t *o, const char *key, size_t *out, kw__v1_perr_t *e)
{
    json_t *v = json_object_get(o, key);
    *out = 0;
    if (!v || json_is_null(v))
        return true;
    long long n = -1;
    if (json_is_integer(v))
        n = json_integer_value(v);
    else if (json_is_string(v)) {
        long x;
        if (kw_api_parse_bounded(kw_str_c(json_string_value(v)), 0, 4294967295L, &x))
            n = x;
    }
    if (n < 0 || n > 4294967295LL) {
        e->code = KW__GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be a non-negative 32-bit integer", key);
        return false;
    }
    *out = (size_t)n;
    return true;
}

/* ---- encoding ---- */

json_t *kw__v1_token_json(kw_revision_t rev)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRIu64, (uint64_t)rev);
    return json_pack("{s:s}", "token", t);
}

json_t *kw__v1_strj(kw_str_t s)
{
    return json_stringn(s.ptr ? s.ptr : "", s.len);
}

json_t *kw__v1_object_json(kw_object_t o)
{
    return json_pack("{s:o, s:o}", "objectType", kw__v1_strj(o.type), "objectId",
                     kw__v1_strj(o.id));
}

json_t *kw__v1_subject_json(const kw_subject_t *s)
{
    kw_str_t rel = s->relation;
    if (kw_str_eq_c(rel, "..."))
        rel = KW_STR_NULL;
    return json_pack("{s:o, s:o}", "object", kw__v1_object_json((kw_object_t){s->type, s->id}),
                     "optionalRelation", kw__v1_strj(rel));
}

json_t *kw__v1_rel_json(const kw_rel_t *r)
{
    return json_pack("{s:o, s:o, s:o}", "resource", kw__v1_object_json(r->resource), "relation",
                     kw__v1_strj(r->relation), "subject", kw__v1_subject_json(&r->subject));
}

/* Writes a whole JSON answer (steals root). */
void kw__v1_answer(kw_http_req_t *req, kw_http_resp_t *resp, json_t *root, kw_revision_t rev)
{
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) {
        kw__v1_fail(req, resp, KW_ENOMEM, NULL);
        return;
    }
    resp->status = 200;
    kw_buf_puts(&resp->body, text);
    free(text);
    kw__api_revision(req, resp, rev);
}

/* Appends one stream line {"result": result} (steals result). */
int kw__v1_stream_line(kw_buf_t *out, json_t *result)
{
    json_t *line = result ? json_pack("{s:o}", "result", result) : NULL;
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (!text)
        return KW_ENOMEM;
    kw_buf_puts(out, text);
    kw_buf_puts(out, "\n");
    free(text);
    return out->failed ? KW_ENOMEM : KW_OK;
}
