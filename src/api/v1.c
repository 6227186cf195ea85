/*
 * api/v1.c - the gate of the /v1 HTTP/JSON codec: who may call (administrators: a JWT with
 * admin: true, or a SpiceDB-style preshared key from KEYWARD_V1_PRESHARED_KEYS), the body
 * as a JSON object, the members each request message may carry (tag-kw-v1-refuse), and
 * the request's consistency, waited for without holding a thread (the request parks).
 *
 * Error bodies are grpc-gateway's: {"code", "message", "details"} (+ keyward's "detail",
 * the same message) with its HTTP status for the code. ZedTokens ({"token": "<revision>"})
 * name STORE revisions (the instance's applied revision, read before the engine is), so
 * a token from one instance means the same on another. atLeastAsFresh {token} waits (like
 * the X-Keyward-Revision request header, also honoured) until the instance has applied
 * that revision, then 503 after KEYWARD_FRESHNESS_TIMEOUT_MS; atExactSnapshot waits the
 * same way and the service answers only when it is the applied revision (v1svc.c);
 * fullyConsistent catches up with the store first; minimizeLatency answers at once. An
 * instance that is not fresh answers 503.
 * Refusing what is not implemented (tag-kw-v1-refuse): a request member keyward does not
 * know is 400/3 naming it (SpiceDB's gateway would drop it unread; here a silently
 * ignored field could be a wrong answer). Each handler's kw__v1_msg_t lists its members;
 * the codec's tables list those of the nested messages.
 *
 * Preshared keys are kept only as keyed hashes (kw_key_hash) and compared in constant
 * time: every configured key is compared, whatever matches, and the comparison is over
 * fixed-length hashes, so neither the position nor the length of a key leaks.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "v1_int.h"

#define KW_MODULE "v1"

int kw_api_set_v1_preshared_keys(kw_api_t *api, const char *csv)
{
    uint8_t(*keys)[KW_KEY_HASH_LEN] = NULL;
    size_t n = 0, cap = 0;
    for (const char *p = csv ? csv : ""; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (p[0] == ' ' || p[0] == '\t')) {
            p++;
            len--;
        }
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len) {
            if (kw_grow((void **)&keys, &cap, n + 1, sizeof(*keys)) != KW_OK) {
                kw_free(keys);
                return KW_ENOMEM;
            }
            kw_key_hash(api->keyring, (kw_str_t){p, len}, keys[n++]);
        }
        p = end ? end + 1 : p + strlen(p);
    }
    kw_free(api->v1_keys);
    api->v1_keys = keys;
    api->n_v1_keys = n;
    return KW_OK;
}

bool kw__v1_preshared(kw_api_t *api, kw_str_t cred)
{
    if (api->n_v1_keys == 0 || cred.len == 0)
        return false;
    uint8_t h[KW_KEY_HASH_LEN];
    kw_key_hash(api->keyring, cred, h);
    bool any = false;
    for (size_t i = 0; i < api->n_v1_keys; i++)
        any |= kw_key_hash_eq(h, api->v1_keys[i]);
    return any;
}

int kw_api_v1_authorize(kw_api_t *api, const char *authorization, char *actor, size_t actor_cap)
{
    if (actor_cap)
        actor[0] = '\0';
    const char *h = authorization ? authorization : "";
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "bearer ", 7) != 0)
        return KW_EAUTH;
    h += 7;
    while (*h == ' ' || *h == '\t')
        h++;
    kw_str_t cred = kw_str_c(h);
    while (cred.len && (cred.ptr[cred.len - 1] == ' ' || cred.ptr[cred.len - 1] == '\t'))
        cred.len--;
    if (cred.len == 0)
        return KW_EAUTH;
    if (kw__v1_preshared(api, cred)) {
        snprintf(actor, actor_cap, "v1:preshared-key");
        return KW_OK;
    }
    kw_token_claims_t claims;
    if (kw_token_verify(api->keyring, cred, (int64_t)time(NULL), &claims, NULL) != KW_OK)
        return KW_EAUTH;
    snprintf(actor, actor_cap, "%s:%.*s", claims.principal_type[0] ? claims.principal_type : "user",
             (int)strnlen(claims.sub, sizeof(claims.sub)), claims.sub);
    return claims.admin ? KW_OK : KW_EFORBIDDEN;
}

int kw_api_v1_await(kw_api_t *api, kw_revision_t min, bool full)
{
    return kw__api_await(api, min, full);
}

bool kw_api_v1_applied(kw_api_t *api, kw_revision_t min)
{
    return kw_sync_is_fresh(api->sync) && kw_sync_applied(api->sync) >= min;
}

bool kw__v1_on_worker(kw_http_req_t *req)
{
    if (kw_http_req_on_worker(req))
        return true;
    if (kw_http_req_to_worker(req) != KW_OK)
        return true; /* cannot hand it over: answer from here, unstreamed order kept */
    return false;
}

json_t *kw__v1_stream_begin(kw_http_req_t *req, kw_http_resp_t *resp, void *ud,
                            const kw__v1_msg_t *msg, kw_v1_consistency_t *cons, kw_api_t **api)
{
    if (!kw__v1_on_worker(req))
        return NULL;
    *api = kw__api_of(ud);
    return kw__v1_begin(*api, req, resp, msg, cons);
}

json_t *kw__v1_begin(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                     const kw__v1_msg_t *msg, kw_v1_consistency_t *cons)
{
    cons->kind = KW_V1_MINIMIZE_LATENCY;
    cons->rev = 0;
    kw__principal_t p;
    if (!kw__api_auth(api, req, resp, &p)) {
        if (resp->status == 401)
            kw__v1_error(resp, KW_GRPC_UNAUTHENTICATED, KW__MSG_UNAUTH);
        else if (resp->status == 503)
            kw__v1_error(resp, KW_GRPC_UNAVAILABLE, KW__MSG_DB);
        else
            kw__v1_error(resp, KW_GRPC_INTERNAL, KW__MSG_INTERNAL);
        return NULL;
    }
    if (!p.admin) {
        kw__v1_error(resp, KW_GRPC_PERMISSION_DENIED,
                     "The administration API needs a token with admin: true or a preshared "
                     "key.");
        return NULL;
    }
    kw_revision_t min = 0;
    if (!kw__api_presented(req, &min)) {
        kw__v1_error(resp, KW_GRPC_INVALID_ARGUMENT, KW__MSG_REV_BAD);
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
        kw__v1_error(resp, KW_GRPC_INVALID_ARGUMENT, text);
        return NULL;
    }
    if (!root || !json_is_object(root)) {
        json_decref(root);
        kw__v1_error(resp, KW_GRPC_INVALID_ARGUMENT, "Request body must be a JSON object.");
        return NULL;
    }
    kw__v1_perr_t e = {0, ""};
    if (!kw__v1_known(root, msg->name, msg->fields, &e) ||
        !kw__v1_consistency(kw__v1_get(root, "consistency"), cons, &e)) {
        json_decref(root);
        kw__v1_perr_answer(resp, &e);
        return NULL;
    }
    kw_revision_t want = 0;
    bool full = false;
    kw_v1_consistency_wait(cons, &want, &full);
    if (want > min)
        min = want;
    int rc = kw__api_await_parked(api, req, min, full);
    if (rc == KW_EAGAIN) { /* parked: no answer now; this request runs again */
        json_decref(root);
        return NULL;
    }
    if (rc == KW_EINVAL) { /* SpiceDB: an unusable ZedToken is OUT_OF_RANGE (HTTP 400) */
        json_decref(root);
        kw__v1_error(resp, KW_GRPC_OUT_OF_RANGE, "invalid zedtoken: revision is in the future");
        return NULL;
    }
    if (rc != KW_OK) {
        json_decref(root);
        kw__v1_error(resp, KW_GRPC_UNAVAILABLE, rc == KW_ETIMEOUT ? KW__MSG_REV_LATE : KW__MSG_DB);
        return NULL;
    }
    return root;
}
