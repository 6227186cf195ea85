/*
 * api/v1_relationships.c - SpiceDB PermissionsService's relationship RPCs:
 * ReadRelationships (/v1/relationships/read), WriteRelationships (/v1/relationships/write)
 * and DeleteRelationships (/v1/relationships/delete). Writes go through the group-commit
 * write path (kw__api_write); preconditions and a delete's optionalLimit are checked inside
 * the transaction against the caught-up graph (write_tx; v1.c's header says why that is exact).
 */
#include <string.h>

#include "v1_int.h"

#define KW_MODULE "v1"

typedef struct {
    kw_api_t *api;
    kw_update_t *ups;
    size_t n;
    kw_precondition_t *pre;
    size_t n_pre;
    const kw_filter_t *del_filter;
    size_t del_limit;
    size_t n_deleted;
} write_ctx_t;

static int count_cb(const kw_rel_t *rel, void *ud)
{
    (void)rel;
    size_t *n = ud;
    (*n)++;
    return 0;
}

static int first_cb(const kw_rel_t *rel, void *ud)
{
    (void)rel;
    (void)ud;
    return 1;
}

/* Inside the write transaction, after catching up: the engine holds every committed
 * relationship, and nothing else commits until this transaction ends. */
static int check_preconditions(kw_api_t *api, const kw_precondition_t *pre, size_t n,
                               kw_diag_t *diag)
{
    for (size_t i = 0; i < n; i++) {
        int rc = kw_engine_read(api->engine, &pre[i].filter, first_cb, NULL, NULL, diag);
        bool matched = rc == 1;
        if (rc != KW_OK && rc != 1)
            return rc;
        if (matched != pre[i].must_match)
            return kw_diag_set(
                diag, KW_EPRECOND, 0, 0, "precondition %zu failed: relationships %s", i,
                pre[i].must_match ? "must match but none did" : "must not match but some did");
    }
    return KW_OK;
}

static int write_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    write_ctx_t *c = ud;
    int rc = KW_OK;
    /* tx holds the global write order (kw_store_tx_begin took it): every revision
     * below this transaction's is committed and no other can commit before it. Catching
     * up now brings the engine to exactly the committed state (other instances' commits
     * included; a no-op on SQLite, whose commits all go through this process), so the
     * checks below stay true until our commit. */
    if ((c->n_pre || c->del_limit) && (rc = kw__api_catch_up(c->api, diag)) != KW_OK)
        return rc;
    rc = check_preconditions(c->api, c->pre, c->n_pre, diag);
    if (rc != KW_OK)
        return rc;
    if (c->del_filter) {
        if (c->del_limit) {
            size_t n = 0;
            rc = kw_engine_read(c->api->engine, c->del_filter, count_cb, &n, NULL, diag);
            if (rc != KW_OK)
                return rc;
            if (n > c->del_limit)
                return kw_diag_set(diag, KW_EPRECOND, 0, 0,
                                   "%zu relationships match, more than optionalLimit %zu", n,
                                   c->del_limit);
        }
        return kw_store_tx_rel_delete_matching(tx, c->del_filter, &c->n_deleted, diag);
    }
    return kw_store_tx_rel_write(tx, c->ups, c->n, diag);
}

/* Preconditions and a delete limit are checked against the graph inside the transaction
 * (write_tx): such a write runs alone, where the graph is exactly the committed state.
 * Any other write may share a transaction with others (group commit). */
static unsigned write_flags(const write_ctx_t *c)
{
    return c->n_pre || c->del_limit ? KW__WRITE_ALONE : 0;
}

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

#define WHY_METADATA "keyward has no Watch API to deliver transaction metadata to"

/* updates[i]: one RelationshipUpdate; e's message is prefixed with its index. */
static bool parse_update(json_t *u, size_t i, kw_update_t *out, kw__v1_perr_t *e)
{
    kw_str_t op;
    bool ok = json_is_object(u) || kw__v1_bad(e, "must be an object {operation, relationship}");
    ok = ok && kw__v1_known(u, "update", UPDATE_FIELDS, e) &&
         kw__v1_req_str(u, "operation", &op, e) &&
         kw__v1_parse_rel(json_object_get(u, "relationship"), &out->rel, e);
    if (ok) {
        if (kw_str_eq_c(op, "OPERATION_CREATE"))
            out->op = KW_OP_CREATE;
        else if (kw_str_eq_c(op, "OPERATION_TOUCH"))
            out->op = KW_OP_TOUCH;
        else if (kw_str_eq_c(op, "OPERATION_DELETE"))
            out->op = KW_OP_DELETE;
        else
            ok = kw__v1_bad(
                e, "operation must be OPERATION_CREATE, OPERATION_TOUCH or OPERATION_DELETE");
    }
    if (!ok) {
        char msg[sizeof(e->msg)];
        snprintf(msg, sizeof(msg), "%s", e->msg[0] ? e->msg : "invalid update");
        snprintf(e->msg, sizeof(e->msg), "updates[%zu]: %.150s", i, msg);
    }
    return ok;
}

void kw__api_v1_rel_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &WRITE_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    write_ctx_t c = {api, NULL, 0, NULL, 0, NULL, 0, 0};
    if (!kw__v1_refuse_set(body, "WriteRelationshipsRequest", "optionalTransactionMetadata", true,
                           WHY_METADATA, &e)) {
        kw__v1_perr_answer(resp, &e);
        goto out;
    }
    json_t *arr = json_object_get(body, "updates");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        kw__v1_error(resp, 400, KW__GRPC_INVALID_ARGUMENT, "updates must be a non-empty array");
        goto out;
    }
    c.n = json_array_size(arr);
    if (c.n > KW_MAX_UPDATES_PER_WRITE) {
        kw__v1_error(resp, 400, KW__GRPC_INVALID_ARGUMENT,
                     "too many updates in one write (max 1000)");
        goto out;
    }
    c.ups = kw_arena_alloc(req->arena, c.n * sizeof(*c.ups));
    if (!c.ups) {
        kw__v1_fail(req, resp, KW_ENOMEM, NULL);
        goto out;
    }
    /* parse_update fills the key fields only: no caveat, context or expiry (the store
     * persists them, tag-kw-store-caveats). */
    memset(c.ups, 0, c.n * sizeof(*c.ups));
    for (size_t i = 0; i < c.n; i++) {
        if (!parse_update(json_array_get(arr, i), i, &c.ups[i], &e)) {
            kw__v1_perr_answer(resp, &e);
            goto out;
        }
    }
    if (!kw__v1_parse_preconditions(json_object_get(body, "optionalPreconditions"), req->arena,
                                    &c.pre, &c.n_pre, &e)) {
        kw__v1_perr_answer(resp, &e);
        goto out;
    }
    /* Refused before any transaction: 400 naming the relation and type. Preconditions
     * are evaluated inside the write's critical section (write_tx). */
    int rc = kw_engine_validate(api->engine, c.ups, c.n, &d);
    kw_revision_t rev = 0;
    if (rc == KW_OK)
        rc = kw__api_write(api, write_tx, &c, write_flags(&c), &rev, &d);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        goto out;
    }
    kw__v1_answer(req, resp, json_pack("{s:o}", "writtenAt", kw__v1_token_json(rev)), rev);
out:
    json_decref(body);
}

typedef struct {
    kw_buf_t *out;
    json_t *token;
    size_t limit, n;
    int rc;
} read_ctx_t;

static int read_cb(const kw_rel_t *rel, void *ud)
{
    read_ctx_t *c = ud;
    if (c->limit && c->n >= c->limit)
        return 1;
    c->rc = kw__v1_stream_line(
        c->out, json_pack("{s:O, s:o}", "readAt", c->token, "relationship", kw__v1_rel_json(rel)));
    c->n++;
    return c->rc == KW_OK ? 0 : 1;
}

void kw__api_v1_rel_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &READ_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_filter_t f;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    size_t limit = 0;
    kw_revision_t rev = 0;
    if (!kw__v1_parse_filter(json_object_get(body, "relationshipFilter"), "relationshipFilter", &f,
                             &e) ||
        !kw__v1_opt_uint(body, "optionalLimit", &limit, &e) ||
        !kw__v1_refuse_set(body, "ReadRelationshipsRequest", "optionalCursor", false,
                           "keyward does not implement cursors (every result comes in one "
                           "response)",
                           &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    if (!kw__v1_hold(api, &snap, resp, &rev)) {
        json_decref(body);
        return;
    }
    read_ctx_t c = {&resp->body, kw__v1_token_json(rev), limit, 0, KW_OK};
    int rc = c.token ? kw_engine_read(api->engine, &f, read_cb, &c, NULL, &d) : KW_ENOMEM;
    kw__v1_release(api, &snap);
    json_decref(c.token);
    json_decref(body);
    if (rc == 1)
        rc = c.rc;
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    resp->status = 200;
    kw__api_revision(req, resp, rev);
}

void kw__api_v1_rel_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &DELETE_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_filter_t f;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    write_ctx_t c = {api, NULL, 0, NULL, 0, &f, 0, 0};
    if (!kw__v1_parse_filter(json_object_get(body, "relationshipFilter"), "relationshipFilter", &f,
                             &e) ||
        !kw__v1_opt_uint(body, "optionalLimit", &c.del_limit, &e) ||
        !kw__v1_parse_preconditions(json_object_get(body, "optionalPreconditions"), req->arena,
                                    &c.pre, &c.n_pre, &e) ||
        !kw__v1_refuse_true(body, "DeleteRelationshipsRequest", "optionalAllowPartialDeletions",
                            "keyward does not implement partial deletions (more matches than "
                            "optionalLimit delete nothing)",
                            &e) ||
        !kw__v1_refuse_set(body, "DeleteRelationshipsRequest", "optionalTransactionMetadata", true,
                           WHY_METADATA, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_revision_t rev = 0;
    /* the filter points into body */
    int rc = kw__api_write(api, write_tx, &c, write_flags(&c), &rev, &d);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    char cnt[24];
    snprintf(cnt, sizeof(cnt), "%zu", c.n_deleted);
    kw__v1_answer(req, resp,
                  json_pack("{s:o, s:s, s:s}", "deletedAt", kw__v1_token_json(rev),
                            "deletionProgress", "DELETION_PROGRESS_COMPLETE",
                            "relationshipsDeletedCount", cnt),
                  rev);
}
