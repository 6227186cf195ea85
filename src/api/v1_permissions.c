/*
 * api/v1_permissions.c - SpiceDB PermissionsService's permission RPCs: CheckPermission
 * (/v1/permissions/check), CheckBulkPermissions (/v1/permissions/checkbulk),
 * LookupResources (/v1/permissions/resources), LookupSubjects (/v1/permissions/subjects)
 * and ExpandPermissionTree (/v1/permissions/expand), answered by the in-memory engine at the
 * applied revision (read before the engine is, so the token never claims more than was read).
 */
#include <string.h>

#include "v1_int.h"

#define KW_MODULE "v1"

static const char *permissionship(kw_check_result_t r)
{
    return r == KW_CHECK_YES ? "PERMISSIONSHIP_HAS_PERMISSION" : "PERMISSIONSHIP_NO_PERMISSION";
}

static void count_check(kw_api_t *api, int rc, kw_check_result_t r)
{
    atomic_fetch_add_explicit(rc != KW_OK         ? &api->checks_error
                              : r == KW_CHECK_YES ? &api->checks_allowed
                                                  : &api->checks_denied,
                              1, memory_order_relaxed);
}

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

#define WHY_CONTEXT "keyward does not implement caveats, so nothing would read the context"
#define WHY_TRACING "keyward does not implement debug traces"
#define WHY_CURSOR "keyward does not implement cursors (every result comes in one response)"

void kw__api_v1_check(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &CHECK_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_object_t res;
    kw_str_t perm;
    kw_subject_t sub;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!kw__v1_parse_object(json_object_get(body, "resource"), &res, "resource", &e) ||
        !kw__v1_req_str(body, "permission", &perm, &e) ||
        !kw__v1_parse_subject(json_object_get(body, "subject"), &sub, &e) ||
        !kw__v1_refuse_set(body, CHECK_MSG.name, "context", true, WHY_CONTEXT, &e) ||
        !kw__v1_refuse_true(body, CHECK_MSG.name, "withTracing", WHY_TRACING, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_check_result_t r = KW_CHECK_NO;
    kw_revision_t rev = 0;
    if (!kw__v1_hold(api, &snap, resp, &rev)) {
        json_decref(body);
        return;
    }
    int rc = kw_engine_check(api->engine, res, perm, sub, &r, NULL, &d);
    kw__v1_release(api, &snap);
    count_check(api, rc, r);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    kw__v1_answer(req, resp,
                  json_pack("{s:o, s:s}", "checkedAt", kw__v1_token_json(rev), "permissionship",
                            permissionship(r)),
                  rev);
}

/* items[i]: one CheckBulkPermissionsRequestItem; e's message is prefixed with its index. */
static bool parse_item(json_t *it, size_t i, kw_check_item_t *out, kw__v1_perr_t *e)
{
    memset(out, 0, sizeof(*out));
    bool ok = json_is_object(it) || kw__v1_bad(e, "must be an object");
    ok = ok && kw__v1_known(it, "item", BULK_ITEM_FIELDS, e) &&
         kw__v1_parse_object(json_object_get(it, "resource"), &out->resource, "resource", e) &&
         kw__v1_req_str(it, "permission", &out->permission, e) &&
         kw__v1_parse_subject(json_object_get(it, "subject"), &out->subject, e) &&
         kw__v1_refuse_set(it, "item", "context", true, WHY_CONTEXT, e);
    if (!ok) {
        char msg[sizeof(e->msg)];
        snprintf(msg, sizeof(msg), "%s", e->msg[0] ? e->msg : "invalid item");
        snprintf(e->msg, sizeof(e->msg), "items[%zu]: %.150s", i, msg);
    }
    return ok;
}

void kw__api_v1_checkbulk(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &BULK_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    if (!body)
        return;
    if (!kw__v1_refuse_true(body, BULK_MSG.name, "withTracing", WHY_TRACING, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    json_t *arr = json_object_get(body, "items");
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (!json_is_array(arr) || n > KW_MAX_UPDATES_PER_WRITE) {
        kw__v1_error(resp, 400, KW__GRPC_INVALID_ARGUMENT,
                     "items must be an array of at most 1000");
        json_decref(body);
        return;
    }
    kw_check_item_t *items = n ? kw_arena_alloc(req->arena, n * sizeof(*items)) : NULL;
    if (n && !items) {
        kw__v1_fail(req, resp, KW_ENOMEM, NULL);
        json_decref(body);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!parse_item(json_array_get(arr, i), i, &items[i], &e)) {
            kw__v1_perr_answer(resp, &e);
            json_decref(body);
            return;
        }
    }
    kw_revision_t rev = 0, engine_rev = 0;
    if (!kw__v1_hold(api, &snap, resp, &rev)) {
        json_decref(body);
        return;
    }
    int rc = n ? kw_engine_check_bulk(api->engine, items, n, &engine_rev) : KW_OK;
    kw__v1_release(api, &snap);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, NULL);
        json_decref(body);
        return;
    }
    json_t *pairs = json_array();
    for (size_t i = 0; pairs && i < n; i++) {
        count_check(api, items[i].rc, items[i].result);
        json_t *request = json_deep_copy(json_array_get(arr, i));
        json_t *pair;
        if (items[i].rc == KW_OK)
            pair = json_pack("{s:o, s:{s:s}}", "request", request, "item", "permissionship",
                             permissionship(items[i].result));
        else
            pair = json_pack("{s:o, s:{s:i, s:s}}", "request", request, "error", "code",
                             KW__GRPC_INVALID_ARGUMENT, "message",
                             items[i].diag.msg[0] ? items[i].diag.msg : kw_strerror(items[i].rc));
        if (!pair || json_array_append_new(pairs, pair) != 0) {
            json_decref(pairs);
            pairs = NULL;
        }
    }
    json_decref(body);
    if (!pairs) {
        kw__v1_fail(req, resp, KW_ENOMEM, NULL);
        return;
    }
    kw__v1_answer(req, resp,
                  json_pack("{s:o, s:o}", "checkedAt", kw__v1_token_json(rev), "pairs", pairs),
                  rev);
}

static int collect(kw_str_t id, void *ud)
{
    return kw__api_ids_add(ud, id);
}

void kw__api_v1_resources(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &LR_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_str_t type, perm;
    kw_subject_t sub;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!kw__v1_req_str(body, "resourceObjectType", &type, &e) ||
        !kw__v1_req_str(body, "permission", &perm, &e) ||
        !kw__v1_parse_subject(json_object_get(body, "subject"), &sub, &e) ||
        !kw__v1_refuse_set(body, LR_MSG.name, "context", true, WHY_CONTEXT, &e) ||
        !kw__v1_refuse_uint(body, LR_MSG.name, "optionalLimit",
                            "keyward does not implement cursors, so a limited page could not "
                            "be continued (omit it, or send 0)",
                            &e) ||
        !kw__v1_refuse_set(body, LR_MSG.name, "optionalCursor", false, WHY_CURSOR, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw__api_ids_t l = {req->arena, NULL, 0, 0, KW_OK};
    kw_revision_t rev = 0, engine_rev = 0;
    if (!kw__v1_hold(api, &snap, resp, &rev)) {
        json_decref(body);
        return;
    }
    int rc = kw_engine_lookup_resources(api->engine, type, perm, sub, collect, &l, &engine_rev, &d);
    kw__v1_release(api, &snap);
    json_decref(body);
    if (rc == 1 || rc == KW_OK)
        rc = l.rc;
    json_t *tok = rc == KW_OK ? kw__v1_token_json(rev) : NULL;
    for (size_t i = 0; rc == KW_OK && i < l.n; i++)
        rc = kw__v1_stream_line(&resp->body,
                                json_pack("{s:O, s:o, s:s}", "lookedUpAt", tok, "resourceObjectId",
                                          kw__v1_strj(l.ids[i]), "permissionship",
                                          "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION"));
    json_decref(tok);
    kw_free(l.ids);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    resp->status = 200;
    kw__api_revision(req, resp, rev);
}

typedef struct {
    kw_buf_t *out;
    kw_engine_t *engine;
    json_t *results;  /* collected: the revision is known only after the call */
    bool no_wildcard; /* wildcardOption WILDCARD_OPTION_EXCLUDE_WILDCARDS */
    int rc;
} subj_ctx_t;

static int subj_cb(const kw_subject_result_t *r, void *ud)
{
    subj_ctx_t *c = ud;
    if (c->no_wildcard && kw_str_eq_c(r->id, "*"))
        return 0;
    json_t *excl = json_array();
    for (size_t i = 0; excl && i < r->n_excluded; i++)
        json_array_append_new(excl, json_pack("{s:o, s:s}", "subjectObjectId",
                                              kw__v1_strj(r->excluded[i]), "permissionship",
                                              "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION"));
    json_t *item = excl
                       ? json_pack("{s:{s:o, s:s}, s:o}", "subject", "subjectObjectId",
                                   kw__v1_strj(r->id), "permissionship",
                                   "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION", "excludedSubjects", excl)
                       : NULL;
    if (!item || json_array_append_new(c->results, item) != 0) {
        c->rc = KW_ENOMEM;
        return 1;
    }
    return 0;
}

/* wildcardOption: UNSPECIFIED and INCLUDE_WILDCARDS answer the wildcard "*" (with its
 * exclusions) like any subject; EXCLUDE_WILDCARDS leaves it out. Enum names only. */
static bool wildcard_option(json_t *body, bool *exclude, kw__v1_perr_t *e)
{
    kw_str_t v;
    *exclude = false;
    if (!kw__v1_opt_str(body, "wildcardOption", &v, e))
        return false;
    if (v.len == 0 || kw_str_eq_c(v, "WILDCARD_OPTION_UNSPECIFIED") ||
        kw_str_eq_c(v, "WILDCARD_OPTION_INCLUDE_WILDCARDS"))
        return true;
    if (kw_str_eq_c(v, "WILDCARD_OPTION_EXCLUDE_WILDCARDS")) {
        *exclude = true;
        return true;
    }
    return kw__v1_bad(e, "wildcardOption must be WILDCARD_OPTION_UNSPECIFIED, "
                         "WILDCARD_OPTION_INCLUDE_WILDCARDS or WILDCARD_OPTION_EXCLUDE_WILDCARDS");
}

void kw__api_v1_subjects(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &LS_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_object_t res;
    kw_str_t perm, stype, srel;
    bool no_wildcard = false;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!kw__v1_parse_object(json_object_get(body, "resource"), &res, "resource", &e) ||
        !kw__v1_req_str(body, "permission", &perm, &e) ||
        !kw__v1_req_str(body, "subjectObjectType", &stype, &e) ||
        !kw__v1_opt_str(body, "optionalSubjectRelation", &srel, &e) ||
        !kw__v1_refuse_set(body, LS_MSG.name, "context", true, WHY_CONTEXT, &e) ||
        !kw__v1_refuse_uint(body, LS_MSG.name, "optionalConcreteLimit",
                            "keyward does not implement concrete limits", &e) ||
        !kw__v1_refuse_set(body, LS_MSG.name, "optionalCursor", false, WHY_CURSOR, &e) ||
        !wildcard_option(body, &no_wildcard, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    subj_ctx_t c = {&resp->body, api->engine, json_array(), no_wildcard, KW_OK};
    kw_revision_t rev = 0, engine_rev = 0;
    if (!kw__v1_hold(api, &snap, resp, &rev)) {
        json_decref(c.results);
        json_decref(body);
        return;
    }
    int rc = c.results ? kw_engine_lookup_subjects(api->engine, res, perm, stype, srel, subj_cb, &c,
                                                   &engine_rev, &d)
                       : KW_ENOMEM;
    kw__v1_release(api, &snap);
    json_decref(body);
    if (rc == 1 || rc == KW_OK)
        rc = c.rc;
    json_t *tok = rc == KW_OK ? kw__v1_token_json(rev) : NULL;
    size_t i;
    json_t *item;
    json_array_foreach(c.results, i, item)
    {
        if (rc != KW_OK)
            break;
        if (json_object_set(item, "lookedUpAt", tok) != 0) {
            rc = KW_ENOMEM;
            break;
        }
        rc = kw__v1_stream_line(&resp->body, json_incref(item));
    }
    json_decref(tok);
    json_decref(c.results);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    resp->status = 200;
    kw__api_revision(req, resp, rev);
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
            json_array_append_new(subs, kw__v1_subject_json(&n->subjects[i]));
        json_object_set_new(node, "leaf", json_pack("{s:o}", "subjects", subs));
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
    if (!kids) {
        json_decref(node);
        return NULL;
    }
    json_object_set_new(node, "intermediate",
                        json_pack("{s:s, s:o}", "operation", op, "children", kids));
    return node;
}

void kw__api_v1_expand(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &EXPAND_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_object_t res;
    kw_str_t perm;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!kw__v1_parse_object(json_object_get(body, "resource"), &res, "resource", &e) ||
        !kw__v1_req_str(body, "permission", &perm, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_expand_t *tree = NULL;
    kw_revision_t rev = 0, engine_rev = 0;
    if (!kw__v1_hold(api, &snap, resp, &rev)) {
        json_decref(body);
        return;
    }
    int rc = kw_engine_expand(api->engine, res, perm, req->arena, &tree, &engine_rev, &d);
    kw__v1_release(api, &snap);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    json_t *root = expand_json(tree, 0);
    if (!root) {
        kw__v1_fail(req, resp, KW_ENOMEM, NULL);
        return;
    }
    kw__v1_answer(req, resp,
                  json_pack("{s:o, s:o}", "expandedAt", kw__v1_token_json(rev), "treeRoot", root),
                  rev);
}
