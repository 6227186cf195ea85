/*
 * api/v1.c - the administration API: SpiceDB's v1 HTTP/JSON gateway shapes (proto3 JSON
 * mapping: camelCase fields, enum names as strings, uint64 as strings, streamed results
 * as one `{"result": {...}}` object per line, an empty body when there are none).
 *
 * Only administrators (JWT claim admin: true) get past the gate (else 403, after 401).
 * Error bodies: {"detail": m, "code": <gRPC code>, "message": m}. ZedTokens
 * ({"token": "<revision>"}) name STORE revisions (the instance's applied revision, read
 * before the engine is), so a token from one instance means the same on another.
 * `consistency`: atLeastAsFresh/atExactSnapshot {token} wait (like the X-Keyward-Revision
 * request header, also honoured) until the instance has applied that revision, then 503
 * after KEYWARD_FRESHNESS_TIMEOUT_MS; fullyConsistent catches up with the store first;
 * minimizeLatency answers at once. An instance that is not fresh answers 503.
 * Writes go through the store transaction under the write mutex, then the engine
 * (kw__api_write). Preconditions and a delete's optionalLimit are evaluated against the
 * engine inside the transaction (write_tx), in this order: the transaction is begun,
 * which takes the database's global write order (store.h, tag-kw-store-write-order: on
 * PostgreSQL the revision row lock, across every instance); the graph catches up with
 * every revision committed so far; then the check. Nothing can commit between the
 * catch-up and this transaction's commit, so the check is exact with any number of
 * instances.
 */
#include <inttypes.h>
#include <string.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "v1"

enum {
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_UNAUTHENTICATED = 16,
};

static void v1_error(kw_http_resp_t *resp, int status, int code, const char *msg)
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
static void v1_fail(kw_http_req_t *req, kw_http_resp_t *resp, int rc, const kw_diag_t *d)
{
    const char *msg = d && d->msg[0] ? d->msg : kw_strerror(rc);
    switch (rc) {
    case KW_EINVAL:
    case KW_ESCHEMA:
    case KW_EUNSUPPORTED:
    case KW_ELIMIT:
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, msg);
        return;
    case KW_EPRECOND:
        v1_error(resp, 400, GRPC_FAILED_PRECONDITION, msg);
        return;
    case KW_EEXISTS:
    case KW_ECONFLICT:
        v1_error(resp, 409, GRPC_ALREADY_EXISTS, msg);
        return;
    case KW_EDB:
    case KW_ETIMEOUT:
    case KW_EPRUNED: /* behind the pruned changelog: resyncing (follow.c) */
        v1_error(resp, 503, GRPC_UNAVAILABLE, KW__MSG_DB);
        return;
    case KW_EDEPTH:
    case KW_ECYCLE:
        v1_error(resp, 400, GRPC_FAILED_PRECONDITION, msg);
        return;
    default:
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: %s", req->request_id, kw_err_name(rc));
        v1_error(resp, 500, GRPC_INTERNAL, KW__MSG_INTERNAL);
        return;
    }
}

/* SpiceDB Consistency: raises *min to a presented ZedToken, sets *full for
 * fullyConsistent. Returns an error message for a malformed one, else NULL. */
static const char *consistency(json_t *c, kw_revision_t *min, bool *full)
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

/* 401 / 503 from auth rewritten with gateway fields; non-admin 403; 422 for a malformed
 * X-Keyward-Revision; then the body and its consistency (the freshness wait). */
static json_t *v1_begin(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp)
{
    kw__principal_t p;
    if (!kw__api_auth(api, req, resp, &p)) {
        if (resp->status == 401)
            v1_error(resp, 401, GRPC_UNAUTHENTICATED, KW__MSG_UNAUTH);
        else if (resp->status == 503)
            v1_error(resp, 503, GRPC_UNAVAILABLE, KW__MSG_DB);
        else
            v1_error(resp, 500, GRPC_INTERNAL, KW__MSG_INTERNAL);
        return NULL;
    }
    if (!p.admin) {
        v1_error(resp, 403, GRPC_PERMISSION_DENIED,
                 "The administration API needs a token with admin: true.");
        return NULL;
    }
    kw_revision_t min = 0;
    if (!kw__api_presented(req, &min)) {
        v1_error(resp, 422, GRPC_INVALID_ARGUMENT, KW__MSG_REV_BAD);
        return NULL;
    }
    json_error_t err;
    json_t *root =
        req->body.len ? json_loadb(req->body.ptr, req->body.len, 0, &err) : json_object();
    if (!root || !json_is_object(root)) {
        json_decref(root);
        v1_error(resp, 422, GRPC_INVALID_ARGUMENT, "Request body must be a JSON object.");
        return NULL;
    }
    bool full = false;
    const char *bad_cons = consistency(json_object_get(root, "consistency"), &min, &full);
    if (bad_cons) {
        json_decref(root);
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, bad_cons);
        return NULL;
    }
    int rc = kw__api_await(api, min, full);
    if (rc == KW_EINVAL) { /* SpiceDB: an unusable ZedToken is OUT_OF_RANGE (HTTP 400) */
        json_decref(root);
        v1_error(resp, 400, GRPC_OUT_OF_RANGE, "invalid zedtoken: revision is in the future");
        return NULL;
    }
    if (rc != KW_OK) {
        json_decref(root);
        v1_error(resp, 503, GRPC_UNAVAILABLE, rc == KW_ETIMEOUT ? KW__MSG_REV_LATE : KW__MSG_DB);
        return NULL;
    }
    return root;
}

/* ---- decoding ---- */

typedef struct {
    char msg[200];
} perr_t;

static bool bad(perr_t *e, const char *what)
{
    snprintf(e->msg, sizeof(e->msg), "%s", what);
    return false;
}

/* Optional string field: absent/null -> empty slice. Wrong type -> false. */
static bool opt_str(json_t *o, const char *key, kw_str_t *out, perr_t *e)
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

static bool req_str(json_t *o, const char *key, kw_str_t *out, perr_t *e)
{
    if (!opt_str(o, key, out, e))
        return false;
    if (out->len == 0) {
        snprintf(e->msg, sizeof(e->msg), "%s is required", key);
        return false;
    }
    return true;
}

static bool parse_object(json_t *o, kw_object_t *out, const char *what, perr_t *e)
{
    if (!json_is_object(o)) {
        snprintf(e->msg, sizeof(e->msg), "%s must be an object {objectType, objectId}", what);
        return false;
    }
    return req_str(o, "objectType", &out->type, e) && req_str(o, "objectId", &out->id, e);
}

static bool parse_subject(json_t *o, kw_subject_t *out, perr_t *e)
{
    kw_object_t obj;
    if (!json_is_object(o))
        return bad(e, "subject must be an object {object, optionalRelation}");
    if (!parse_object(json_object_get(o, "object"), &obj, "subject.object", e))
        return false;
    out->type = obj.type;
    out->id = obj.id;
    return opt_str(o, "optionalRelation", &out->relation, e);
}

static bool parse_rel(json_t *o, kw_rel_t *out, perr_t *e)
{
    if (!json_is_object(o))
        return bad(e, "relationship must be an object");
    if (json_object_get(o, "optionalCaveat") && !json_is_null(json_object_get(o, "optionalCaveat")))
        return bad(e, "caveats are not supported");
    return parse_object(json_object_get(o, "resource"), &out->resource, "resource", e) &&
           req_str(o, "relation", &out->relation, e) &&
           parse_subject(json_object_get(o, "subject"), &out->subject, e);
}

static bool parse_filter(json_t *o, kw_filter_t *f, perr_t *e)
{
    memset(f, 0, sizeof(*f));
    if (!json_is_object(o))
        return bad(e, "relationshipFilter must be an object");
    kw_str_t prefix;
    if (!opt_str(o, "optionalResourceIdPrefix", &prefix, e))
        return false;
    if (prefix.len)
        return bad(e, "optionalResourceIdPrefix is not supported");
    if (!req_str(o, "resourceType", &f->resource_type, e) ||
        !opt_str(o, "optionalResourceId", &f->resource_id, e) ||
        !opt_str(o, "optionalRelation", &f->relation, e))
        return false;
    json_t *sf = json_object_get(o, "optionalSubjectFilter");
    if (sf && !json_is_null(sf)) {
        if (!json_is_object(sf))
            return bad(e, "optionalSubjectFilter must be an object");
        f->has_subject = true;
        if (!req_str(sf, "subjectType", &f->subject_type, e) ||
            !opt_str(sf, "optionalSubjectId", &f->subject_id, e))
            return false;
        json_t *sr = json_object_get(sf, "optionalRelation");
        if (sr && !json_is_null(sr)) {
            if (!json_is_object(sr))
                return bad(e, "optionalSubjectFilter.optionalRelation must be {relation}");
            f->subject_relation_set = true;
            if (!opt_str(sr, "relation", &f->subject_relation, e))
                return false;
        }
    }
    return true;
}

static bool parse_preconditions(json_t *arr, kw_arena_t *a, kw_precondition_t **out, size_t *n,
                                perr_t *e)
{
    *out = NULL;
    *n = 0;
    if (!arr || json_is_null(arr))
        return true;
    if (!json_is_array(arr))
        return bad(e, "optionalPreconditions must be an array");
    size_t cnt = json_array_size(arr);
    if (cnt > KW_MAX_PRECONDITIONS)
        return bad(e, "too many preconditions");
    if (cnt == 0)
        return true;
    kw_precondition_t *pre = kw_arena_alloc(a, cnt * sizeof(*pre));
    if (!pre)
        return bad(e, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *p = json_array_get(arr, i);
        kw_str_t op;
        if (!json_is_object(p) || !req_str(p, "operation", &op, e))
            return bad(e, "each precondition needs an operation");
        if (kw_str_eq_c(op, "OPERATION_MUST_MATCH"))
            pre[i].must_match = true;
        else if (kw_str_eq_c(op, "OPERATION_MUST_NOT_MATCH"))
            pre[i].must_match = false;
        else
            return bad(e, "precondition operation must be OPERATION_MUST_MATCH or "
                          "OPERATION_MUST_NOT_MATCH");
        if (!parse_filter(json_object_get(p, "filter"), &pre[i].filter, e))
            return false;
    }
    *out = pre;
    *n = cnt;
    return true;
}

/* ---- encoding ---- */

static json_t *token_json(kw_revision_t rev)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRIu64, (uint64_t)rev);
    return json_pack("{s:s}", "token", t);
}

static json_t *strj(kw_str_t s)
{
    return json_stringn(s.ptr ? s.ptr : "", s.len);
}

static json_t *object_json(kw_object_t o)
{
    return json_pack("{s:o, s:o}", "objectType", strj(o.type), "objectId", strj(o.id));
}

static json_t *subject_json(const kw_subject_t *s)
{
    kw_str_t rel = s->relation;
    if (kw_str_eq_c(rel, "..."))
        rel = KW_STR_NULL;
    return json_pack("{s:o, s:o}", "object", object_json((kw_object_t){s->type, s->id}),
                     "optionalRelation", strj(rel));
}

static json_t *rel_json(const kw_rel_t *r)
{
    return json_pack("{s:o, s:o, s:o}", "resource", object_json(r->resource), "relation",
                     strj(r->relation), "subject", subject_json(&r->subject));
}

/* Writes a whole JSON answer (steals root). */
static void answer(kw_http_req_t *req, kw_http_resp_t *resp, json_t *root, kw_revision_t rev)
{
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) {
        v1_fail(req, resp, KW_ENOMEM, NULL);
        return;
    }
    resp->status = 200;
    kw_buf_puts(&resp->body, text);
    free(text);
    kw__api_revision(req, resp, rev);
}

/* Appends one stream line {"result": result} (steals result). */
static int stream_line(kw_buf_t *out, json_t *result)
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

/* ---- relationships ---- */

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

void kw__api_v1_rel_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    write_ctx_t c = {api, NULL, 0, NULL, 0, NULL, 0, 0};
    json_t *arr = json_object_get(body, "updates");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, "updates must be a non-empty array");
        goto out;
    }
    c.n = json_array_size(arr);
    if (c.n > KW_MAX_UPDATES_PER_WRITE) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, "too many updates in one write (max 1000)");
        goto out;
    }
    c.ups = kw_arena_alloc(req->arena, c.n * sizeof(*c.ups));
    if (!c.ups) {
        v1_fail(req, resp, KW_ENOMEM, NULL);
        goto out;
    }
    for (size_t i = 0; i < c.n; i++) {
        json_t *u = json_array_get(arr, i);
        kw_str_t op;
        if (!json_is_object(u) || !req_str(u, "operation", &op, &e) ||
            !parse_rel(json_object_get(u, "relationship"), &c.ups[i].rel, &e)) {
            v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg[0] ? e.msg : "invalid update");
            goto out;
        }
        if (kw_str_eq_c(op, "OPERATION_CREATE"))
            c.ups[i].op = KW_OP_CREATE;
        else if (kw_str_eq_c(op, "OPERATION_TOUCH"))
            c.ups[i].op = KW_OP_TOUCH;
        else if (kw_str_eq_c(op, "OPERATION_DELETE"))
            c.ups[i].op = KW_OP_DELETE;
        else {
            v1_error(resp, 400, GRPC_INVALID_ARGUMENT,
                     "operation must be OPERATION_CREATE, OPERATION_TOUCH or OPERATION_DELETE");
            goto out;
        }
    }
    if (!parse_preconditions(json_object_get(body, "optionalPreconditions"), req->arena, &c.pre,
                             &c.n_pre, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        goto out;
    }
    /* Refused before any transaction: 400 naming the relation and type. Preconditions
     * are evaluated inside the write's critical section (write_tx). */
    int rc = kw_engine_validate(api->engine, c.ups, c.n, &d);
    kw_revision_t rev = 0;
    if (rc == KW_OK)
        rc = kw__api_write(api, write_tx, &c, write_flags(&c), &rev, &d);
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        goto out;
    }
    answer(req, resp, json_pack("{s:o}", "writtenAt", token_json(rev)), rev);
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
    c->rc = stream_line(c->out,
                        json_pack("{s:O, s:o}", "readAt", c->token, "relationship", rel_json(rel)));
    c->n++;
    return c->rc == KW_OK ? 0 : 1;
}

static bool opt_limit(json_t *body, size_t *limit, perr_t *e)
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
        return bad(e, "optionalLimit must be a non-negative integer");
    *limit = (size_t)n;
    return true;
}

void kw__api_v1_rel_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_filter_t f;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    size_t limit = 0;
    if (!parse_filter(json_object_get(body, "relationshipFilter"), &f, &e) ||
        !opt_limit(body, &limit, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        json_decref(body);
        return;
    }
    kw_revision_t rev = kw__api_applied(api);
    read_ctx_t c = {&resp->body, token_json(rev), limit, 0, KW_OK};
    int rc = c.token ? kw_engine_read(api->engine, &f, read_cb, &c, NULL, &d) : KW_ENOMEM;
    json_decref(c.token);
    json_decref(body);
    if (rc == 1)
        rc = c.rc;
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        return;
    }
    resp->status = 200;
    kw__api_revision(req, resp, rev);
}

void kw__api_v1_rel_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_filter_t f;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    write_ctx_t c = {api, NULL, 0, NULL, 0, &f, 0, 0};
    json_t *partial = json_object_get(body, "optionalAllowPartialDeletions");
    if (!parse_filter(json_object_get(body, "relationshipFilter"), &f, &e) ||
        !opt_limit(body, &c.del_limit, &e) ||
        !parse_preconditions(json_object_get(body, "optionalPreconditions"), req->arena, &c.pre,
                             &c.n_pre, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        json_decref(body);
        return;
    }
    if (json_is_true(partial)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT,
                 "optionalAllowPartialDeletions is not supported");
        json_decref(body);
        return;
    }
    kw_revision_t rev = 0;
    /* the filter points into body */
    int rc = kw__api_write(api, write_tx, &c, write_flags(&c), &rev, &d);
    json_decref(body);
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        return;
    }
    char cnt[24];
    snprintf(cnt, sizeof(cnt), "%zu", c.n_deleted);
    answer(req, resp,
           json_pack("{s:o, s:s, s:s}", "deletedAt", token_json(rev), "deletionProgress",
                     "DELETION_PROGRESS_COMPLETE", "relationshipsDeletedCount", cnt),
           rev);
}

/* ---- permissions ---- */

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

void kw__api_v1_check(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_object_t res;
    kw_str_t perm;
    kw_subject_t sub;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!parse_object(json_object_get(body, "resource"), &res, "resource", &e) ||
        !req_str(body, "permission", &perm, &e) ||
        !parse_subject(json_object_get(body, "subject"), &sub, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        json_decref(body);
        return;
    }
    kw_check_result_t r = KW_CHECK_NO;
    kw_revision_t rev = kw__api_applied(api);
    int rc = kw_engine_check(api->engine, res, perm, sub, &r, NULL, &d);
    count_check(api, rc, r);
    json_decref(body);
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        return;
    }
    answer(
        req, resp,
        json_pack("{s:o, s:s}", "checkedAt", token_json(rev), "permissionship", permissionship(r)),
        rev);
}

void kw__api_v1_checkbulk(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    if (!body)
        return;
    json_t *arr = json_object_get(body, "items");
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (!json_is_array(arr) || n > KW_MAX_UPDATES_PER_WRITE) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, "items must be an array of at most 1000");
        json_decref(body);
        return;
    }
    kw_check_item_t *items = n ? kw_arena_alloc(req->arena, n * sizeof(*items)) : NULL;
    if (n && !items) {
        v1_fail(req, resp, KW_ENOMEM, NULL);
        json_decref(body);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(arr, i);
        memset(&items[i], 0, sizeof(items[i]));
        if (!json_is_object(it) ||
            !parse_object(json_object_get(it, "resource"), &items[i].resource, "resource", &e) ||
            !req_str(it, "permission", &items[i].permission, &e) ||
            !parse_subject(json_object_get(it, "subject"), &items[i].subject, &e)) {
            v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg[0] ? e.msg : "invalid item");
            json_decref(body);
            return;
        }
    }
    kw_revision_t rev = kw__api_applied(api), engine_rev = 0;
    int rc = n ? kw_engine_check_bulk(api->engine, items, n, &engine_rev) : KW_OK;
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, NULL);
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
                             GRPC_INVALID_ARGUMENT, "message",
                             items[i].diag.msg[0] ? items[i].diag.msg : kw_strerror(items[i].rc));
        if (!pair || json_array_append_new(pairs, pair) != 0) {
            json_decref(pairs);
            pairs = NULL;
        }
    }
    json_decref(body);
    if (!pairs) {
        v1_fail(req, resp, KW_ENOMEM, NULL);
        return;
    }
    answer(req, resp, json_pack("{s:o, s:o}", "checkedAt", token_json(rev), "pairs", pairs), rev);
}

typedef struct {
    kw_arena_t *a;
    kw_str_t *ids;
    size_t n, cap;
    int rc;
} ids_t;

static int collect(kw_str_t id, void *ud)
{
    ids_t *l = ud;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        kw_str_t *p = kw_realloc(l->ids, cap * sizeof(*p));
        if (!p) {
            l->rc = KW_ENOMEM;
            return 1;
        }
        l->ids = p;
        l->cap = cap;
    }
    char *c = kw_arena_strndup(l->a, id.ptr, id.len);
    if (!c) {
        l->rc = KW_ENOMEM;
        return 1;
    }
    l->ids[l->n++] = (kw_str_t){c, id.len};
    return 0;
}

void kw__api_v1_resources(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_str_t type, perm;
    kw_subject_t sub;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!req_str(body, "resourceObjectType", &type, &e) ||
        !req_str(body, "permission", &perm, &e) ||
        !parse_subject(json_object_get(body, "subject"), &sub, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        json_decref(body);
        return;
    }
    ids_t l = {req->arena, NULL, 0, 0, KW_OK};
    kw_revision_t rev = kw__api_applied(api), engine_rev = 0;
    int rc = kw_engine_lookup_resources(api->engine, type, perm, sub, collect, &l, &engine_rev, &d);
    json_decref(body);
    if (rc == 1 || rc == KW_OK)
        rc = l.rc;
    json_t *tok = rc == KW_OK ? token_json(rev) : NULL;
    for (size_t i = 0; rc == KW_OK && i < l.n; i++)
        rc =
            stream_line(&resp->body, json_pack("{s:O, s:o, s:s}", "lookedUpAt", tok,
                                               "resourceObjectId", strj(l.ids[i]), "permissionship",
                                               "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION"));
    json_decref(tok);
    kw_free(l.ids);
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        return;
    }
    resp->status = 200;
    kw__api_revision(req, resp, rev);
}

typedef struct {
    kw_buf_t *out;
    kw_engine_t *engine;
    json_t *results; /* collected: the revision is known only after the call */
    int rc;
} subj_ctx_t;

static int subj_cb(const kw_subject_result_t *r, void *ud)
{
    subj_ctx_t *c = ud;
    json_t *excl = json_array();
    for (size_t i = 0; excl && i < r->n_excluded; i++)
        json_array_append_new(excl,
                              json_pack("{s:o, s:s}", "subjectObjectId", strj(r->excluded[i]),
                                        "permissionship", "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION"));
    json_t *item = excl
                       ? json_pack("{s:{s:o, s:s}, s:o}", "subject", "subjectObjectId", strj(r->id),
                                   "permissionship", "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION",
                                   "excludedSubjects", excl)
                       : NULL;
    if (!item || json_array_append_new(c->results, item) != 0) {
        c->rc = KW_ENOMEM;
        return 1;
    }
    return 0;
}

void kw__api_v1_subjects(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_object_t res;
    kw_str_t perm, stype, srel;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!parse_object(json_object_get(body, "resource"), &res, "resource", &e) ||
        !req_str(body, "permission", &perm, &e) ||
        !req_str(body, "subjectObjectType", &stype, &e) ||
        !opt_str(body, "optionalSubjectRelation", &srel, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        json_decref(body);
        return;
    }
    subj_ctx_t c = {&resp->body, api->engine, json_array(), KW_OK};
    kw_revision_t rev = kw__api_applied(api), engine_rev = 0;
    int rc = c.results ? kw_engine_lookup_subjects(api->engine, res, perm, stype, srel, subj_cb, &c,
                                                   &engine_rev, &d)
                       : KW_ENOMEM;
    json_decref(body);
    if (rc == 1 || rc == KW_OK)
        rc = c.rc;
    json_t *tok = rc == KW_OK ? token_json(rev) : NULL;
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
        rc = stream_line(&resp->body, json_incref(item));
    }
    json_decref(tok);
    json_decref(c.results);
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        return;
    }
    resp->status = 200;
    kw__api_revision(req, resp, rev);
}

static json_t *expand_json(const kw_expand_t *n, int depth)
{
    if (!n || depth > 200)
        return NULL;
    json_t *node = json_pack("{s:o, s:o}", "expandedObject", object_json(n->object),
                             "expandedRelation", strj(n->relation));
    if (!node)
        return NULL;
    if (n->kind == KW_EXPAND_LEAF) {
        json_t *subs = json_array();
        for (size_t i = 0; subs && i < n->n_subjects; i++)
            json_array_append_new(subs, subject_json(&n->subjects[i]));
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
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_object_t res;
    kw_str_t perm;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!parse_object(json_object_get(body, "resource"), &res, "resource", &e) ||
        !req_str(body, "permission", &perm, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        json_decref(body);
        return;
    }
    kw_expand_t *tree = NULL;
    kw_revision_t rev = kw__api_applied(api), engine_rev = 0;
    int rc = kw_engine_expand(api->engine, res, perm, req->arena, &tree, &engine_rev, &d);
    json_decref(body);
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        return;
    }
    json_t *root = expand_json(tree, 0);
    if (!root) {
        v1_fail(req, resp, KW_ENOMEM, NULL);
        return;
    }
    answer(req, resp, json_pack("{s:o, s:o}", "expandedAt", token_json(rev), "treeRoot", root),
           rev);
}

/* ---- schema ---- */

void kw__api_v1_schema_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    if (!body)
        return;
    json_decref(body);
    kw_buf_t text;
    kw_buf_init(&text);
    kw_revision_t rev = kw__api_applied(api);
    int rc = kw_engine_schema_text(api->engine, &text);
    if (rc == KW_OK && text.failed)
        rc = KW_ENOMEM;
    if (rc != KW_OK) {
        kw_buf_free(&text);
        v1_fail(req, resp, rc, NULL);
        return;
    }
    if (text.len == 0) {
        kw_buf_free(&text);
        v1_error(resp, 404, GRPC_NOT_FOUND, "No schema has been defined.");
        return;
    }
    json_t *root =
        json_pack("{s:s%, s:o}", "schemaText", text.ptr, text.len, "readAt", token_json(rev));
    kw_buf_free(&text);
    answer(req, resp, root, rev);
}

/* After meta "schema" is stored: an EMPTY store transaction gives the change a store
 * revision (the writtenAt token) and, on PostgreSQL, the NOTIFY that makes every other
 * instance's follower cross an empty revision and re-read the stored schema (follow.c).
 * Under the write mutex. */
static int announce_schema(kw_api_t *api, kw_str_t text, kw_revision_t *rev, kw_diag_t *d)
{
    api->schema_seen.len = 0;
    kw_buf_append(&api->schema_seen, text.ptr, text.len);
    if (api->schema_seen.failed)
        return KW_ENOMEM;
    kw_store_tx_t *tx = NULL;
    kw_revision_t r = 0;
    int rc = kw_store_tx_begin(api->store, &tx, d);
    if (rc == KW_OK)
        rc = kw_store_tx_commit(tx, &r, d);
    if (rc != KW_OK) {
        /* Stored and installed here; the others install it when they next cross an
         * empty revision. The caller gets 503 and may simply retry. */
        kw_log(KW_LOG_WARN, KW_MODULE, "schema stored but its revision could not be committed: %s",
               kw_err_name(rc));
        return rc;
    }
    if (api->follows) {
        kw_diag_t cd;
        kw_diag_clear(&cd);
        if (kw__api_catch_up(api, &cd) != KW_OK)
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "schema at revision %" PRIu64 " committed; the follower will catch up",
                   (uint64_t)r);
    } else {
        kw__api_advance(api, r);
    }
    *rev = r;
    return KW_OK;
}

/* The schema swap: a scratch engine proves the text compiles and serves the routes; the
 * live swap (under the write mutex, after catching up) proves every stored relationship
 * fits; the text is then persisted in meta "schema" (restored on failure so memory and
 * disk agree) and announced to the other instances (announce_schema). */
void kw__api_v1_schema_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    json_t *body = v1_begin(api, req, resp);
    perr_t e = {""};
    kw_str_t text;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!req_str(body, "schema", &text, &e)) {
        v1_error(resp, 400, GRPC_INVALID_ARGUMENT, e.msg);
        json_decref(body);
        return;
    }
    kw_engine_t *probe = NULL;
    int rc = kw_engine_new(&probe);
    if (rc == KW_OK)
        rc = kw_engine_set_schema(probe, text, NULL, &d);
    if (rc == KW_OK)
        rc = kw_api_check_schema(probe, &d);
    if (probe)
        kw_engine_free(probe);
    if (rc != KW_OK) {
        if (d.line) {
            char msg[300];
            snprintf(msg, sizeof(msg), "%u:%u: %s", d.line, d.col, d.msg);
            v1_error(resp, 400, GRPC_INVALID_ARGUMENT, msg);
        } else {
            v1_fail(req, resp, rc == KW_ENOMEM ? rc : KW_ESCHEMA, &d);
        }
        json_decref(body);
        return;
    }
    kw_buf_t old;
    kw_buf_init(&old);
    kw_revision_t rev = 0;
    pthread_mutex_lock(&api->write_mu);
    /* The live swap is judged against every relationship committed so far (other
     * instances' too). */
    rc = kw__api_catch_up(api, &d);
    if (rc == KW_OK)
        rc = kw_engine_schema_text(api->engine, &old);
    if (rc == KW_OK && old.failed)
        rc = KW_ENOMEM;
    if (rc == KW_OK)
        rc = kw_engine_set_schema(api->engine, text, NULL, &d);
    if (rc == KW_OK) {
        rc = kw_store_meta_set(api->store, "schema", text);
        if (rc != KW_OK) {
            int rb = kw_engine_set_schema(api->engine, (kw_str_t){old.ptr ? old.ptr : "", old.len},
                                          NULL, NULL);
            if (rb != KW_OK)
                kw_log(KW_LOG_ERROR, KW_MODULE, "could not restore the previous schema: %s",
                       kw_err_name(rb));
        } else {
            rc = announce_schema(api, text, &rev, &d);
        }
    }
    pthread_mutex_unlock(&api->write_mu);
    kw_buf_free(&old);
    json_decref(body);
    if (rc != KW_OK) {
        v1_fail(req, resp, rc, &d);
        return;
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: schema replaced (revision %" PRIu64 ")",
           req->request_id, (uint64_t)rev);
    answer(req, resp, json_pack("{s:o}", "writtenAt", token_json(rev)), rev);
}
