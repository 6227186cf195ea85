/*
 * api/v1.c - the administration API: SpiceDB's v1 HTTP/JSON gateway shapes (proto3 JSON
 * mapping: camelCase fields, enum names as strings, uint64 as strings, streamed results
 * as one `{"result": {...}}` object per line, an empty body when there are none).
 *
 * Only administrators (JWT claim admin: true) get past the gate (else 403, after 401).
 * Error bodies: {"detail": m, "code": <gRPC code>, "message": m}. ZedTokens
 * ({"token": "<revision>"}) name STORE revisions (the instance's applied revision, read
 * before the engine is), so a token from one instance means the same on another.
 * `consistency` (on the requests whose proto has it): atLeastAsFresh {token} waits (like
 * the X-Keyward-Revision request header, also honoured) until the instance has applied
 * that revision, then 503 after KEYWARD_FRESHNESS_TIMEOUT_MS; atExactSnapshot waits the
 * same way and is answered only when its revision is the applied one as the engine is
 * read (kw__v1_hold), else 501/12: no earlier snapshot is kept; fullyConsistent catches
 * up with the store first; minimizeLatency answers at once. An instance that is not
 * fresh answers 503.
 * Refusing what is not implemented (tag-kw-v1-refuse): a request member keyward does
 * not know is 400/3 naming it (SpiceDB's gateway would drop it unread; here a silently
 * ignored field could be a wrong answer); one it knows but does not implement is 501/12
 * naming it and why (docs/API.md lists them). Each handler's kw__v1_msg_t lists its
 * members; the codec's tables list those of the nested messages.
 * Writes go through the store transaction under the write mutex, then the engine
 * (kw__api_write). Preconditions and a delete's optionalLimit are evaluated against the
 * engine inside the transaction (write_tx), in this order: the transaction is begun,
 * which takes the database's global write order (store.h, tag-kw-store-write-order: on
 * PostgreSQL the revision row lock, across every instance); the graph catches up with
 * every revision committed so far; then the check. Nothing can commit between the
 * catch-up and this transaction's commit, so the check is exact with any number of
 * instances.
 *
 * This file is the gate every RPC passes first (kw__v1_begin). The codec and the error
 * answers are in v1_codec.c; one file per SpiceDB service holds its RPCs:
 * v1_relationships.c, v1_permissions.c, v1_schema.c (they share v1_int.h).
 */
#include <inttypes.h>
#include <stdio.h>

#include "v1_int.h"

#define KW_MODULE "v1"

/* 401 / 503 from auth rewritten with gateway fields; non-admin 403; 422 for a malformed
 * X-Keyward-Revision; then the body: its members (tag-kw-v1-refuse), its consistency and
 * the freshness wait. */
json_t *kw__v1_begin(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                     const kw__v1_msg_t *msg, kw__v1_snap_t *snap)
{
    *snap = (kw__v1_snap_t){false, 0, false};
    kw__principal_t p;
    if (!kw__api_auth(api, req, resp, &p)) {
        if (resp->status == 401)
            kw__v1_error(resp, 401, KW__GRPC_UNAUTHENTICATED, KW__MSG_UNAUTH);
        else if (resp->status == 503)
            kw__v1_error(resp, 503, KW__GRPC_UNAVAILABLE, KW__MSG_DB);
        else
            kw__v1_error(resp, 500, KW__GRPC_INTERNAL, KW__MSG_INTERNAL);
        return NULL;
    }
    if (!p.admin) {
        kw__v1_error(resp, 403, KW__GRPC_PERMISSION_DENIED,
                     "The administration API needs a token with admin: true.");
        return NULL;
    }
    kw_revision_t min = 0;
    if (!kw__api_presented(req, &min)) {
        kw__v1_error(resp, 422, KW__GRPC_INVALID_ARGUMENT, KW__MSG_REV_BAD);
        return NULL;
    }
    /* Duplicate members are refused (as proto3 JSON does): with the last one winning, a
     * refused member followed by a null one would otherwise pass unseen. */
    json_error_t err;
    json_t *root = req->body.len
                       ? json_loadb(req->body.ptr, req->body.len, JSON_REJECT_DUPLICATES, &err)
                       : json_object();
    if (!root && req->body.len && json_error_code(&err) == json_error_duplicate_key) {
        /* jansson's text names the member: "duplicate object key near '"<name>"'" */
        char text[200];
        snprintf(text, sizeof(text), "Request body: %.150s (each field may appear once)", err.text);
        kw__v1_error(resp, 400, KW__GRPC_INVALID_ARGUMENT, text);
        return NULL;
    }
    if (!root || !json_is_object(root)) {
        json_decref(root);
        kw__v1_error(resp, 422, KW__GRPC_INVALID_ARGUMENT, "Request body must be a JSON object.");
        return NULL;
    }
    kw__v1_perr_t e = {0, ""};
    bool full = false;
    if (!kw__v1_known(root, msg->name, msg->fields, &e) ||
        !kw__v1_consistency(json_object_get(root, "consistency"), &min, &full, snap, &e)) {
        json_decref(root);
        kw__v1_perr_answer(resp, &e);
        return NULL;
    }
    int rc = kw__api_await_parked(api, req, min, full);
    if (rc == KW_EAGAIN) { /* parked: no answer now; this request runs again */
        json_decref(root);
        return NULL;
    }
    if (rc == KW_EINVAL) { /* SpiceDB: an unusable ZedToken is OUT_OF_RANGE (HTTP 400) */
        json_decref(root);
        kw__v1_error(resp, 400, KW__GRPC_OUT_OF_RANGE,
                     "invalid zedtoken: revision is in the future");
        return NULL;
    }
    if (rc != KW_OK) {
        json_decref(root);
        kw__v1_error(resp, 503, KW__GRPC_UNAVAILABLE,
                     rc == KW_ETIMEOUT ? KW__MSG_REV_LATE : KW__MSG_DB);
        return NULL;
    }
    return root;
}

bool kw__v1_hold(kw_api_t *api, kw__v1_snap_t *snap, kw_http_resp_t *resp, kw_revision_t *rev)
{
    if (!snap->exact) {
        *rev = kw__api_applied(api);
        return true;
    }
    /* Nothing changes the graph while it is held (sync/commit.c, kw_sync_hold). */
    kw_revision_t cur = kw_sync_hold(api->sync);
    if (cur != snap->rev) {
        kw_sync_release(api->sync);
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "consistency.atExactSnapshot: revision %" PRIu64
                 " is not the current revision %" PRIu64
                 "; keyward answers only at its current revision (snapshots of earlier "
                 "revisions are not implemented)",
                 (uint64_t)snap->rev, (uint64_t)cur);
        kw__v1_error(resp, 501, KW__GRPC_UNIMPLEMENTED, msg);
        return false;
    }
    snap->held = true;
    *rev = cur;
    return true;
}

void kw__v1_release(kw_api_t *api, kw__v1_snap_t *snap)
{
    if (!snap->held)
        return;
    snap->held = false;
    kw_sync_release(api->sync);
}
