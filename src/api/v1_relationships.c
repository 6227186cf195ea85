/*
 * api/v1_relationships.c - the JSON codec of PermissionsService's relationship RPCs:
 * ReadRelationships (/v1/relationships/read, streamed), WriteRelationships
 * (/v1/relationships/write) and DeleteRelationships (/v1/relationships/delete). Each
 * handler decodes, calls the service (v1svc_rel.c) and encodes; nothing else.
 */
#include <inttypes.h>
#include <string.h>

#include "v1_int.h"

#define KW_MODULE "v1"

static const char *const WRITE_FIELDS[] = {"updates", "optionalPreconditions",
                                           "optionalTransactionMetadata", NULL};
static const kw__v1_msg_t WRITE_MSG = {"WriteRelationshipsRequest", WRITE_FIELDS};
static const char *const UPDATE_FIELDS[] = {"operation", "relationship", NULL};
static const char *const READ_FIELDS[] = {"consistency", "relationshipFilter", "optionalLimit",
                                          "optionalCursor", NULL};
static const kw__v1_msg_t READ_MSG = {"ReadRelationshipsRequest", READ_FIELDS};
static const char *const DELETE_FIELDS[] = {"relationshipFilter",
                                            "optionalPreconditions",
                                            "optionalLimit",
                                            "optionalAllowPartialDeletions",
                                            "optionalTransactionMetadata",
                                            NULL};
static const kw__v1_msg_t DELETE_MSG = {"DeleteRelationshipsRequest", DELETE_FIELDS};

static const char *const UPDATE_OPS[] = {NULL, "OPERATION_CREATE", "OPERATION_TOUCH",
                                         "OPERATION_DELETE"};

/* updates[i]: one RelationshipUpdate; e's message is prefixed with its index. */
static bool parse_update(json_t *u, size_t i, kw_arena_t *a, kw_update_t *out, kw__v1_perr_t *e)
{
    int op = 0;
    bool ok = json_is_object(u) || kw__v1_bad(e, "must be an object {operation, relationship}");
    ok = ok && kw__v1_known(u, "update", UPDATE_FIELDS, e) &&
         kw__v1_opt_enum(u, "operation", UPDATE_OPS, KW_ARRAY_LEN(UPDATE_OPS), &op, e) &&
         (op != 0 || kw__v1_bad(e, "operation must be OPERATION_CREATE, OPERATION_TOUCH or "
                                   "OPERATION_DELETE")) &&
         kw__v1_parse_rel_in(kw__v1_get(u, "relationship"), a, &out->rel, e);
    out->op = op == 1 ? KW_OP_CREATE : op == 2 ? KW_OP_TOUCH : KW_OP_DELETE;
    if (!ok) {
        char msg[sizeof(e->msg)];
        snprintf(msg, sizeof(msg), "%s", e->msg[0] ? e->msg : "invalid update");
        snprintf(e->msg, sizeof(e->msg), "updates[%zu]: %.150s", i, msg);
    }
    return ok;
}

/* optionalTransactionMetadata: a Struct; {} carries nothing. */
static bool has_metadata(json_t *body, kw_arena_t *a, bool *out, kw__v1_perr_t *e)
{
    kw_str_t m;
    if (!kw__v1_opt_struct(body, "optionalTransactionMetadata", a, &m, e))
        return false;
    *out = m.len != 0;
    return true;
}

void kw__api_v1_rel_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_consistency_t cons;
    json_t *body = kw__v1_begin(api, req, resp, &WRITE_MSG, &cons);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    kw_v1_caller_t who = kw__v1_caller(req);
    kw_v1_write_req_t w = {NULL, 0, NULL, 0, false, &who};
    kw_update_t *ups = NULL;
    /* proto3: an absent or empty repeated field is an empty list (SpiceDB accepts it). */
    json_t *arr = kw__v1_get(body, "updates");
    if (arr && !json_is_null(arr) && !json_is_array(arr)) {
        kw__v1_bad(&e, "updates must be an array");
        goto bad;
    }
    w.n_updates = arr && json_is_array(arr) ? json_array_size(arr) : 0;
    if (w.n_updates && w.n_updates <= KW_MAX_UPDATES_PER_WRITE) {
        ups = kw_arena_alloc(req->arena, w.n_updates * sizeof(*ups));
        if (!ups) {
            kw__v1_bad(&e, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < w.n_updates; i++)
            if (!parse_update(json_array_get(arr, i), i, req->arena, &ups[i], &e))
                goto bad;
    }
    w.updates = ups;
    kw_precondition_t *pre = NULL;
    if (!kw__v1_parse_preconditions(kw__v1_get(body, "optionalPreconditions"), req->arena, &pre,
                                    &w.n_pre, &e) ||
        !has_metadata(body, req->arena, &w.has_metadata, &e))
        goto bad;
    w.pre = pre;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t rev = 0;
    if (kw_v1_write_relationships(api, &w, &rev, &st) != KW_OK)
        kw__v1_status_answer(resp, &st);
    else
        kw__v1_answer(req, resp, json_pack("{s:o}", "writtenAt", kw__v1_token_json(rev)), rev);
    json_decref(body);
    return;
bad:
    kw__v1_perr_answer(resp, &e);
    json_decref(body);
}

static int read_emit(void *ud, const kw_v1_read_result_t *r)
{
    kw__v1_stream_t *s = ud;
    json_t *res =
        json_pack("{s:o, s:o, s:o}", "readAt", kw__v1_token_json(r->read_at), "relationship",
                  kw__v1_rel_json(r->rel), "afterResultCursor", kw__v1_cursor_json(r->cursor));
    return kw__v1_stream_result(s, res, r->read_at);
}

void kw__api_v1_rel_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_v1_read_req_t r;
    memset(&r, 0, sizeof(r));
    kw_api_t *api = NULL;
    json_t *body = kw__v1_stream_begin(req, resp, ud, &READ_MSG, &r.consistency, &api);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    if (!kw__v1_parse_filter(kw__v1_get(body, "relationshipFilter"), "relationshipFilter",
                             &r.filter, &r.resource_id_prefix, &e) ||
        !kw__v1_opt_u32(body, "optionalLimit", &r.limit, &e) ||
        !kw__v1_opt_cursor(body, "optionalCursor", &r.cursor, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw__v1_stream_t s;
    kw__v1_stream_init(&s, req, resp);
    int rc = kw_v1_read_relationships(api, &r, read_emit, &s, &st);
    kw__v1_stream_end(&s, rc, &st);
    json_decref(body);
}

void kw__api_v1_rel_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_consistency_t cons;
    json_t *body = kw__v1_begin(api, req, resp, &DELETE_MSG, &cons);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    kw_v1_delete_req_t d;
    memset(&d, 0, sizeof(d));
    kw_v1_caller_t who = kw__v1_caller(req);
    d.caller = &who;
    kw_precondition_t *pre = NULL;
    if (!kw__v1_parse_filter(kw__v1_get(body, "relationshipFilter"), "relationshipFilter",
                             &d.filter, &d.resource_id_prefix, &e) ||
        !kw__v1_opt_u32(body, "optionalLimit", &d.limit, &e) ||
        !kw__v1_parse_preconditions(kw__v1_get(body, "optionalPreconditions"), req->arena, &pre,
                                    &d.n_pre, &e) ||
        !kw__v1_opt_bool(body, "optionalAllowPartialDeletions", &d.allow_partial, &e) ||
        !has_metadata(body, req->arena, &d.has_metadata, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    d.pre = pre;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_delete_resp_t out;
    int rc = kw_v1_delete_relationships(api, &d, &out, &st);
    json_decref(body); /* the filter pointed into it */
    if (rc != KW_OK) {
        kw__v1_status_answer(resp, &st);
        return;
    }
    char cnt[24];
    snprintf(cnt, sizeof(cnt), "%" PRIu64, out.n_deleted);
    kw__v1_answer(
        req, resp,
        json_pack("{s:o, s:s, s:s}", "deletedAt", kw__v1_token_json(out.deleted_at),
                  "deletionProgress",
                  out.partial ? "DELETION_PROGRESS_PARTIAL" : "DELETION_PROGRESS_COMPLETE",
                  "relationshipsDeletedCount", cnt),
        out.deleted_at);
}
