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
    default:
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: %s", req->request_id, kw_err_name(rc));
        kw__v1_error(resp, 500, KW__GRPC_INTERNAL, KW__MSG_INTERNAL);
        return;
    }
}

/* SpiceDB Consistency: raises *min to a presented ZedToken, sets *full for
 * fullyConsistent. Returns an error message for a malformed one, else NULL. */
const char *kw__v1_consistency(json_t *c, kw_revision_t *min, bool *full)
{
    if (!c || json_is_null(c))
        return NULL;
    if (!json_is_object(c))
        return "consistency must be an object";
    json_t *v;
    if ((v = json_object_get(c, "fullyConsistent")) && json_is_true(v))
        *full = true;
    const char *keys[] = {"atLeastAsFresh", "atExactSnapshot"};
    for (size_t i = 0; i < KW_ARRAY_LEN(keys); i++) {
        json_t *z = json_object_get(c, keys[i]);
        if (!z || json_is_null(z))
            continue;
        json_t *t = json_is_object(z) ? json_object_get(z, "token") : NULL;
        kw_revision_t r = 0;
        if (!json_is_string(t) ||
            !kw_api_parse_revision((kw_str_t){json_string_value(t), json_string_length(t)}, &r))
            return "consistency token must be a ZedToken {\"token\": \"<revision>\"}";
        /* atExactSnapshot: only the newest snapshot is kept; at least as fresh is the
         * closest honest answer. */
        if (r > *min)
            *min = r;
    }
    return NULL;
}

/* ---- decoding ---- */
bool kw__v1_bad(kw__v1_perr_t *e, const char *what)
{
    snprintf(e->msg, sizeof(e->msg), "%s", what);
    return false;
}

/* Optional string field: absent/null -> empty slice. Wrong type -> false. */
bool kw__v1_opt_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e)
{
    json_t *v = json_object_get(o, key);
    *out = KW_STR_NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
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
        snprintf(e->msg, sizeof(e->msg), "%s is required", key);
        return false;
    }
    return true;
}

bool kw__v1_parse_object(json_t *o, kw_object_t *out, const char *what, kw__v1_perr_t *e)
{
    if (!json_is_object(o)) {
        snprintf(e->msg, sizeof(e->msg), "%s must be an object {objectType, objectId}", what);
        return false;
    }
    return kw__v1_req_str(o, "objectType", &out->type, e) &&
           kw__v1_req_str(o, "objectId", &out->id, e);
}

bool kw__v1_parse_subject(json_t *o, kw_subject_t *out, kw__v1_perr_t *e)
{
    kw_object_t obj;
    if (!json_is_object(o))
        return kw__v1_bad(e, "subject must be an object {object, optionalRelation}");
    if (!kw__v1_parse_object(json_object_get(o, "object"), &obj, "subject.object", e))
        return false;
    out->type = obj.type;
    out->id = obj.id;
    return kw__v1_opt_str(o, "optionalRelation", &out->relation, e);
}

bool kw__v1_parse_rel(json_t *o, kw_rel_t *out, kw__v1_perr_t *e)
{
    if (!json_is_object(o))
        return kw__v1_bad(e, "relationship must be an object");
    if (json_object_get(o, "optionalCaveat") && !json_is_null(json_object_get(o, "optionalCaveat")))
        return kw__v1_bad(e, "caveats are not supported");
    return kw__v1_parse_object(json_object_get(o, "resource"), &out->resource, "resource", e) &&
           kw__v1_req_str(o, "relation", &out->relation, e) &&
           kw__v1_parse_subject(json_object_get(o, "subject"), &out->subject, e);
}

bool kw__v1_parse_filter(json_t *o, kw_filter_t *f, kw__v1_perr_t *e)
{
    memset(f, 0, sizeof(*f));
    if (!json_is_object(o))
        return kw__v1_bad(e, "relationshipFilter must be an object");
    kw_str_t prefix;
    if (!kw__v1_opt_str(o, "optionalResourceIdPrefix", &prefix, e))
        return false;
    if (prefix.len)
        return kw__v1_bad(e, "optionalResourceIdPrefix is not supported");
    if (!kw__v1_req_str(o, "resourceType", &f->resource_type, e) ||
        !kw__v1_opt_str(o, "optionalResourceId", &f->resource_id, e) ||
        !kw__v1_opt_str(o, "optionalRelation", &f->relation, e))
        return false;
    json_t *sf = json_object_get(o, "optionalSubjectFilter");
    if (sf && !json_is_null(sf)) {
        if (!json_is_object(sf))
            return kw__v1_bad(e, "optionalSubjectFilter must be an object");
        f->has_subject = true;
        if (!kw__v1_req_str(sf, "subjectType", &f->subject_type, e) ||
            !kw__v1_opt_str(sf, "optionalSubjectId", &f->subject_id, e))
            return false;
        json_t *sr = json_object_get(sf, "optionalRelation");
        if (sr && !json_is_null(sr)) {
            if (!json_is_object(sr))
                return kw__v1_bad(e, "optionalSubjectFilter.optionalRelation must be {relation}");
            f->subject_relation_set = true;
            if (!kw__v1_opt_str(sr, "relation", &f->subject_relation, e))
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
        if (!json_is_object(p) || !kw__v1_req_str(p, "operation", &op, e))
            return kw__v1_bad(e, "each precondition needs an operation");
        if (kw_str_eq_c(op, "OPERATION_MUST_MATCH"))
            pre[i].must_match = true;
        else if (kw_str_eq_c(op, "OPERATION_MUST_NOT_MATCH"))
            pre[i].must_match = false;
        else
            return kw__v1_bad(e, "precondition operation must be OPERATION_MUST_MATCH or "
                                 "OPERATION_MUST_NOT_MATCH");
        if (!kw__v1_parse_filter(json_object_get(p, "filter"), &pre[i].filter, e))
            return false;
    }
    *out = pre;
    *n = cnt;
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

bool kw__v1_opt_limit(json_t *body, size_t *limit, kw__v1_perr_t *e)
{
    json_t *v = json_object_get(body, "optionalLimit");
    *limit = 0;
    if (!v || json_is_null(v))
        return true;
    long long n = -1;
    if (json_is_integer(v))
        n = json_integer_value(v);
    else if (json_is_string(v)) {
        long x;
        if (kw_api_parse_bounded(kw_str_c(json_string_value(v)), 0, 1000000000L, &x))
            n = x;
    }
    if (n < 0)
        return kw__v1_bad(e, "optionalLimit must be a non-negative integer");
    *limit = (size_t)n;
    return true;
}
