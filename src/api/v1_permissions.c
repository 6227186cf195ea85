/*
 * api/v1_permissions.c - the JSON codec of PermissionsService's permission RPCs:
 * CheckPermission (/v1/permissions/check), CheckBulkPermissions (/v1/permissions/checkbulk),
 * LookupResources (/v1/permissions/resources, streamed), LookupSubjects
 * (/v1/permissions/subjects, streamed) and ExpandPermissionTree (/v1/permissions/expand).
 * Each handler decodes, calls the service (v1svc_perm.c) and encodes; nothing else.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "v1_int.h"

#define KW_MODULE "v1"

static const char *const CHECK_FIELDS[] = {"consistency", "resource",    "permission", "subject",
                                           "context",     "withTracing", NULL};
static const kw__v1_msg_t CHECK_MSG = {"CheckPermissionRequest", CHECK_FIELDS};
static const char *const BULK_FIELDS[] = {"consistency", "items", "withTracing", NULL};
static const kw__v1_msg_t BULK_MSG = {"CheckBulkPermissionsRequest", BULK_FIELDS};
static const char *const BULK_ITEM_FIELDS[] = {"resource", "permission", "subject", "context",
                                               NULL};
static const char *const LR_FIELDS[] = {
    "consistency", "resourceObjectType", "permission",     "subject",
    "context",     "optionalLimit",      "optionalCursor", NULL};
static const kw__v1_msg_t LR_MSG = {"LookupResourcesRequest", LR_FIELDS};
static const char *const LS_FIELDS[] = {"consistency",
                                        "resource",
                                        "permission",
                                        "subjectObjectType",
                                        "optionalSubjectRelation",
                                        "context",
                                        "optionalConcreteLimit",
                                        "optionalCursor",
                                        "wildcardOption",
                                        NULL};
static const kw__v1_msg_t LS_MSG = {"LookupSubjectsRequest", LS_FIELDS};
static const char *const EXPAND_FIELDS[] = {"consistency", "resource", "permission", NULL};
static const kw__v1_msg_t EXPAND_MSG = {"ExpandPermissionTreeRequest", EXPAND_FIELDS};

static const char *permissionship(kw_v1_permissionship_t p)
{
    switch (p) {
    case KW_V1_PERM_HAS:
        return "PERMISSIONSHIP_HAS_PERMISSION";
    case KW_V1_PERM_CONDITIONAL:
        return "PERMISSIONSHIP_CONDITIONAL_PERMISSION";
    case KW_V1_PERM_NO:
        return "PERMISSIONSHIP_NO_PERMISSION";
    }
    return "PERMISSIONSHIP_UNSPECIFIED";
}

static const char *lookup_permissionship(kw_v1_permissionship_t p)
{
    return p == KW_V1_PERM_CONDITIONAL ? "LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION"
                                       : "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION";
}

/* ---- debug traces (DebugInformation / CheckDebugTrace, as the gateway writes them) ---- */

static const char *trace_result(kw_check_result_t r)
{
    return r == KW_CHECK_YES           ? "PERMISSIONSHIP_HAS_PERMISSION"
           : r == KW_CHECK_CONDITIONAL ? "PERMISSIONSHIP_CONDITIONAL_PERMISSION"
                                       : "PERMISSIONSHIP_NO_PERMISSION";
}

/* A conditional node: the caveat evaluation is missing context (CaveatEvalInfo). keyward's
 * trace knows which parameters are missing, not which caveat expression asked for them. */
static json_t *caveat_info_json(const kw_trace_t *t)
{
    if (t->result != KW_CHECK_CONDITIONAL)
        return json_null();
    return json_pack("{s:s, s:s, s:n, s:o, s:s}", "expression", "", "result",
                     "RESULT_MISSING_SOME_CONTEXT", "context", "partialCaveatInfo",
                     kw__v1_partial_json(KW_V1_PERM_CONDITIONAL, t->missing), "caveatName", "");
}

/* google.protobuf.Duration in proto3 JSON: seconds with up to 9 decimals and an "s". */
static json_t *duration_json(uint64_t ns)
{
    char text[40];
    if (ns % 1000000000ull == 0)
        snprintf(text, sizeof(text), "%llus", (unsigned long long)(ns / 1000000000ull));
    else
        snprintf(text, sizeof(text), "%llu.%09llus", (unsigned long long)(ns / 1000000000ull),
                 (unsigned long long)(ns % 1000000000ull));
    return json_string(text);
}

static json_t *trace_json(const kw_trace_t *t, const kw_subject_t *subject, int depth)
{
    json_t *o = json_pack(
        "{s:o, s:o, s:s, s:o, s:s, s:o, s:o, s:n, s:s, s:s}", "resource",
        kw__v1_object_json(t->resource), "permission", kw__v1_strj(t->permission), "permissionType",
        t->is_permission ? "PERMISSION_TYPE_PERMISSION" : "PERMISSION_TYPE_RELATION", "subject",
        kw__v1_subject_json(subject), "result", trace_result(t->result), "caveatEvaluationInfo",
        caveat_info_json(t), "duration", duration_json(t->duration_ns), "optionalExpiresAt",
        "traceOperationId", "", "source", "");
    if (!o)
        return NULL;
    int rc;
    if (t->cached) {
        rc = json_object_set_new(o, "wasCachedResult", json_true());
    } else {
        json_t *subs = json_array();
        for (size_t i = 0; subs && i < t->n_subs; i++)
            if (json_array_append_new(subs, trace_json(t->subs[i], subject, depth + 1)) != 0) {
                json_decref(subs);
                subs = NULL;
            }
        rc = subs ? json_object_set_new(o, "subProblems", json_pack("{s:o}", "traces", subs)) : -1;
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* DebugInformation, or null without a trace. */
static json_t *debug_json(const kw_trace_t *t, const kw_subject_t *subject, kw_str_t schema)
{
    if (!t)
        return json_null();
    return json_pack("{s:o, s:o}", "check", trace_json(t, subject, 0), "schemaUsed",
                     kw__v1_strj(schema));
}

void kw__api_v1_check(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_check_req_t c;
    memset(&c, 0, sizeof(c));
    c.arena = req->arena;
    json_t *body = kw__v1_begin(api, req, resp, &CHECK_MSG, &c.consistency);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    if (!kw__v1_parse_object(kw__v1_get(body, "resource"), &c.resource, "resource", &e) ||
        !kw__v1_req_str(body, "permission", &c.permission, &e) ||
        !kw__v1_parse_subject(kw__v1_get(body, "subject"), &c.subject, &e) ||
        !kw__v1_opt_struct(body, "context", req->arena, &c.context, &e) ||
        !kw__v1_opt_bool(body, "withTracing", &c.with_tracing, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_check_resp_t out;
    int rc = kw_v1_check(api, &c, &out, &st);
    if (rc != KW_OK) {
        json_decref(body);
        kw__v1_status_answer(resp, &st);
        return;
    }
    kw__v1_answer(
        req, resp,
        json_pack("{s:o, s:s, s:o, s:o, s:n}", "checkedAt", kw__v1_token_json(out.checked_at),
                  "permissionship", permissionship(out.permissionship), "partialCaveatInfo",
                  kw__v1_partial_json(out.permissionship, out.missing), "debugTrace",
                  debug_json(out.trace, &c.subject, out.schema_used), "optionalExpiresAt"),
        out.checked_at);
    json_decref(body); /* the request's strings pointed into it */
}

/* items[i]: one CheckBulkPermissionsRequestItem; e's message is prefixed with its index. */
static bool parse_item(json_t *it, size_t i, kw_arena_t *a, kw_v1_bulk_item_t *out,
                       kw__v1_perr_t *e)
{
    memset(out, 0, sizeof(*out));
    bool ok = json_is_object(it) || kw__v1_bad(e, "must be an object");
    ok = ok && kw__v1_known(it, "item", BULK_ITEM_FIELDS, e) &&
         kw__v1_parse_object(kw__v1_get(it, "resource"), &out->resource, "resource", e) &&
         kw__v1_req_str(it, "permission", &out->permission, e) &&
         kw__v1_parse_subject(kw__v1_get(it, "subject"), &out->subject, e) &&
         kw__v1_opt_struct(it, "context", a, &out->context, e);
    if (!ok) {
        char msg[sizeof(e->msg)];
        snprintf(msg, sizeof(msg), "%s", e->msg[0] ? e->msg : "invalid item");
        snprintf(e->msg, sizeof(e->msg), "items[%zu]: %.150s", i, msg);
    }
    return ok;
}

/* The request item as the gateway echoes it: every field of the message. */
static json_t *item_json(const kw_v1_bulk_item_t *it)
{
    json_t *ctx =
        it->context.len ? json_loadb(it->context.ptr, it->context.len, 0, NULL) : json_null();
    return ctx ? json_pack("{s:o, s:o, s:o, s:o}", "resource", kw__v1_object_json(it->resource),
                           "permission", kw__v1_strj(it->permission), "subject",
                           kw__v1_subject_json(&it->subject), "context", ctx)
               : NULL;
}

void kw__api_v1_checkbulk(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_bulk_req_t b;
    memset(&b, 0, sizeof(b));
    b.arena = req->arena;
    json_t *body = kw__v1_begin(api, req, resp, &BULK_MSG, &b.consistency);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    json_t *arr = kw__v1_get(body, "items");
    if ((arr && !json_is_null(arr) && !json_is_array(arr)) ||
        !kw__v1_opt_bool(body, "withTracing", &b.with_tracing, &e)) {
        if (!e.msg[0])
            kw__v1_bad(&e, "items must be an array");
        goto bad;
    }
    b.n_items = json_is_array(arr) ? json_array_size(arr) : 0;
    if (b.n_items && b.n_items <= KW_V1_MAX_BULK_ITEMS) {
        b.items = kw_arena_alloc(req->arena, b.n_items * sizeof(*b.items));
        if (!b.items) {
            kw__v1_bad(&e, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < b.n_items; i++)
            if (!parse_item(json_array_get(arr, i), i, req->arena, &b.items[i], &e))
                goto bad;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t rev = 0;
    int rc = kw_v1_check_bulk(api, &b, &rev, &st);
    if (rc != KW_OK) {
        kw__v1_status_answer(resp, &st);
        json_decref(body);
        return;
    }
    json_t *pairs = json_array();
    for (size_t i = 0; pairs && i < b.n_items; i++) {
        const kw_v1_bulk_item_t *it = &b.items[i];
        json_t *pair =
            it->error ? json_pack("{s:o, s:o}", "request", item_json(it), "error",
                                  kw__v1_status_json(it->error))
                      : json_pack("{s:o, s:{s:s, s:o, s:o}}", "request", item_json(it), "item",
                                  "permissionship", permissionship(it->permissionship),
                                  "partialCaveatInfo",
                                  kw__v1_partial_json(it->permissionship, it->missing),
                                  "debugTrace", debug_json(it->trace, &it->subject, b.schema_used));
        if (!pair || json_array_append_new(pairs, pair) != 0) {
            json_decref(pairs);
            pairs = NULL;
        }
    }
    json_decref(body); /* the items pointed into it */
    kw__v1_answer(
        req, resp,
        pairs ? json_pack("{s:o, s:o}", "checkedAt", kw__v1_token_json(rev), "pairs", pairs) : NULL,
        rev);
    return;
bad:
    kw__v1_perr_answer(resp, &e);
    json_decref(body);
}

/* A LookupResources stream: the stream and the line's head for the revision last seen
 * ({"result":{"lookedUpAt":{"token":"<rev>"},"resourceObjectId":" - a chunk's results all
 * have one revision, so it is formatted once per chunk, not per line). */
typedef struct lr_out {
    kw__v1_stream_t s;
    kw_revision_t head_rev;
    size_t head_len; /* 0: not made yet */
    char head[96];
} lr_out_t;

#define LR_HEAD_A "{\"result\":{\"lookedUpAt\":{\"token\":\""
#define LR_HEAD_B "\"},\"resourceObjectId\":\""
#define LR_MID                                                                                     \
    "\",\"permissionship\":\"LOOKUP_PERMISSIONSHIP_HAS_PERMISSION\","                              \
    "\"partialCaveatInfo\":null,\"afterResultCursor\":{\"token\":\""
#define LR_TAIL "\"}}}\n"

/* A LookupResources result, written as jansson writes it (JSON_COMPACT, keys in insertion
 * order) but without building objects, straight into the chunk that goes to the socket:
 * this line is most of a large stream's cost. clen: strlen(r->cursor).
 * tag-kw-lr-line: keep in step with the json_pack below. */
static int lr_emit_text(lr_out_t *o, const kw_v1_lr_result_t *r, size_t clen)
{
    if (!o->head_len || o->head_rev != r->looked_up_at) {
        int hl =
            snprintf(o->head, sizeof(o->head), LR_HEAD_A "%" PRIu64 LR_HEAD_B, r->looked_up_at);
        if (hl <= 0 || (size_t)hl >= sizeof(o->head))
            return KW_ENOMEM; /* cannot happen: a u64 has at most 20 digits */
        o->head_len = (size_t)hl;
        o->head_rev = r->looked_up_at;
    }
    size_t idl = r->resource_id.len;
    size_t n = o->head_len + idl + (sizeof(LR_MID) - 1) + clen + (sizeof(LR_TAIL) - 1);
    char *p = kw__v1_stream_room(&o->s, n);
    if (!p)
        return KW_ENOMEM;
    memcpy(p, o->head, o->head_len);
    p += o->head_len;
    memcpy(p, r->resource_id.ptr, idl);
    p += idl;
    memcpy(p, LR_MID, sizeof(LR_MID) - 1);
    p += sizeof(LR_MID) - 1;
    memcpy(p, r->cursor, clen);
    p += clen;
    memcpy(p, LR_TAIL, sizeof(LR_TAIL) - 1);
    return kw__v1_stream_commit(&o->s, n, r->looked_up_at);
}

static int lr_emit(void *ud, const kw_v1_lr_result_t *r)
{
    lr_out_t *o = ud;
    size_t clen = r->cursor ? strlen(r->cursor) : 0;
    if (r->permissionship == KW_V1_PERM_HAS && r->cursor &&
        kw__v1_json_plain(r->resource_id.ptr, r->resource_id.len) &&
        kw__v1_json_plain(r->cursor, clen))
        return lr_emit_text(o, r, clen);
    json_t *res =
        json_pack("{s:o, s:o, s:s, s:o, s:o}", "lookedUpAt", kw__v1_token_json(r->looked_up_at),
                  "resourceObjectId", kw__v1_strj(r->resource_id), "permissionship",
                  lookup_permissionship(r->permissionship), "partialCaveatInfo",
                  kw__v1_partial_json(r->permissionship, r->missing), "afterResultCursor",
                  kw__v1_cursor_json(r->cursor));
    return kw__v1_stream_result(&o->s, res, r->looked_up_at);
}

void kw__api_v1_resources(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_v1_lr_req_t r;
    memset(&r, 0, sizeof(r));
    kw_api_t *api = NULL;
    json_t *body = kw__v1_stream_begin(req, resp, ud, &LR_MSG, &r.consistency, &api);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    if (!kw__v1_req_str(body, "resourceObjectType", &r.resource_type, &e) ||
        !kw__v1_req_str(body, "permission", &r.permission, &e) ||
        !kw__v1_parse_subject(kw__v1_get(body, "subject"), &r.subject, &e) ||
        !kw__v1_opt_struct(body, "context", req->arena, &r.context, &e) ||
        !kw__v1_opt_u32(body, "optionalLimit", &r.limit, &e) ||
        !kw__v1_opt_cursor(body, "optionalCursor", &r.cursor, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    lr_out_t o;
    o.head_len = 0;
    o.head_rev = 0;
    kw__v1_stream_init(&o.s, req, resp);
    int rc = kw_v1_lookup_resources(api, &r, lr_emit, &o, &st);
    kw__v1_stream_end(&o.s, rc, &st);
    json_decref(body);
}

/* A ResolvedSubject {subjectObjectId, permissionship, partialCaveatInfo}. */
static json_t *resolved_json(kw_str_t id, kw_v1_permissionship_t p, kw_str_t missing)
{
    return json_pack("{s:o, s:s, s:o}", "subjectObjectId", kw__v1_strj(id), "permissionship",
                     lookup_permissionship(p), "partialCaveatInfo",
                     kw__v1_partial_json(p, missing));
}

static int ls_emit(void *ud, const kw_v1_ls_result_t *r)
{
    json_t *ids = json_array(), *excl = json_array();
    for (size_t i = 0; ids && excl && i < r->n_excluded; i++) {
        if (json_array_append_new(ids, kw__v1_strj(r->excluded[i])) != 0 ||
            json_array_append_new(
                excl, resolved_json(r->excluded[i], KW_V1_PERM_HAS, KW_STR_NULL)) != 0) {
            json_decref(ids);
            ids = NULL;
        }
    }
    /* The deprecated fields (subjectObjectId, excludedSubjectIds, permissionship) are
     * still filled by SpiceDB, so they are here. */
    json_t *res =
        ids && excl
            ? json_pack("{s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o}", "lookedUpAt",
                        kw__v1_token_json(r->looked_up_at), "subjectObjectId",
                        kw__v1_strj(r->subject_id), "excludedSubjectIds", ids, "permissionship",
                        lookup_permissionship(r->permissionship), "partialCaveatInfo",
                        kw__v1_partial_json(r->permissionship, r->missing), "subject",
                        resolved_json(r->subject_id, r->permissionship, r->missing),
                        "excludedSubjects", excl, "afterResultCursor",
                        kw__v1_cursor_json(r->cursor))
            : NULL;
    if (!res) {
        json_decref(ids);
        json_decref(excl);
    }
    return kw__v1_stream_result(ud, res, r->looked_up_at);
}

static const char *const WILDCARD_OPTIONS[] = {"WILDCARD_OPTION_UNSPECIFIED",
                                               "WILDCARD_OPTION_INCLUDE_WILDCARDS",
                                               "WILDCARD_OPTION_EXCLUDE_WILDCARDS"};

void kw__api_v1_subjects(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_v1_ls_req_t r;
    memset(&r, 0, sizeof(r));
    kw_api_t *api = NULL;
    json_t *body = kw__v1_stream_begin(req, resp, ud, &LS_MSG, &r.consistency, &api);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    int wildcard = 0;
    if (!kw__v1_parse_object(kw__v1_get(body, "resource"), &r.resource, "resource", &e) ||
        !kw__v1_req_str(body, "permission", &r.permission, &e) ||
        !kw__v1_req_str(body, "subjectObjectType", &r.subject_type, &e) ||
        !kw__v1_opt_str(body, "optionalSubjectRelation", &r.subject_relation, &e) ||
        !kw__v1_opt_struct(body, "context", req->arena, &r.context, &e) ||
        !kw__v1_opt_u32(body, "optionalConcreteLimit", &r.concrete_limit, &e) ||
        !kw__v1_opt_cursor(body, "optionalCursor", &r.cursor, &e) ||
        !kw__v1_opt_enum(body, "wildcardOption", WILDCARD_OPTIONS, KW_ARRAY_LEN(WILDCARD_OPTIONS),
                         &wildcard, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    r.wildcard = wildcard == 2 ? KW_V1_WILDCARD_EXCLUDE : KW_V1_WILDCARD_INCLUDE;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw__v1_stream_t s;
    kw__v1_stream_init(&s, req, resp);
    int rc = kw_v1_lookup_subjects(api, &r, ls_emit, &s, &st);
    kw__v1_stream_end(&s, rc, &st);
    json_decref(body);
}

static json_t *expand_json(const kw_expand_t *n, int depth)
{
    if (!n || depth > 200)
        return NULL;
    json_t *node = json_pack("{s:o, s:o}", "expandedObject", kw__v1_object_json(n->object),
                             "expandedRelation", kw__v1_strj(n->relation));
    if (!node)
        return NULL;
    if (n->kind == KW_EXPAND_LEAF) {
        json_t *subs = json_array();
        for (size_t i = 0; subs && i < n->n_subjects; i++)
            if (json_array_append_new(subs, kw__v1_subject_json(&n->subjects[i])) != 0) {
                json_decref(subs);
                subs = NULL;
            }
        if (!subs || json_object_set_new(node, "leaf", json_pack("{s:o}", "subjects", subs)) != 0) {
            json_decref(node);
            return NULL;
        }
        return node;
    }
    const char *op = n->kind == KW_EXPAND_UNION          ? "OPERATION_UNION"
                     : n->kind == KW_EXPAND_INTERSECTION ? "OPERATION_INTERSECTION"
                                                         : "OPERATION_EXCLUSION";
    json_t *kids = json_array();
    for (size_t i = 0; kids && i < n->n_children; i++) {
        json_t *k = expand_json(n->children[i], depth + 1);
        if (!k || json_array_append_new(kids, k) != 0) {
            json_decref(kids);
            kids = NULL;
        }
    }
    if (!kids ||
        json_object_set_new(node, "intermediate",
                            json_pack("{s:s, s:o}", "operation", op, "children", kids)) != 0) {
        json_decref(node);
        return NULL;
    }
    return node;
}

void kw__api_v1_expand(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_expand_req_t x;
    memset(&x, 0, sizeof(x));
    x.arena = req->arena;
    json_t *body = kw__v1_begin(api, req, resp, &EXPAND_MSG, &x.consistency);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    if (!kw__v1_parse_object(kw__v1_get(body, "resource"), &x.resource, "resource", &e) ||
        !kw__v1_req_str(body, "permission", &x.permission, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_expand_resp_t out;
    int rc = kw_v1_expand(api, &x, &out, &st);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_status_answer(resp, &st);
        return;
    }
    json_t *root = expand_json(out.tree, 0);
    kw__v1_answer(req, resp,
                  root ? json_pack("{s:o, s:o}", "expandedAt", kw__v1_token_json(out.expanded_at),
                                   "treeRoot", root)
                       : NULL,
                  out.expanded_at);
}
