/*
 * api/keys_rotate.c - POST /agent_api_keys/{id}/rotate (issue 14): a new secret for the same
 * key id and name, shown once; the previous one authenticates for grace_period_seconds more
 * (internal/external keys), then never (docs/API.md, "A key's lifecycle").
 *
 * The swap is a compare-and-swap on the credential read here, inside the write's transaction
 * (store.h kw_store_tx_key_rotate, tag-kw-key-rotate): of two rotations racing, the one that
 * commits first wins and the other answers 409 with nothing changed; against a delete,
 * whichever commits first wins (the rotation then answers 404, or the delete removes the
 * rotated key). The new secret lives in a stack buffer wiped before returning, and in the one
 * response body that shows it.
 */
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "api"

#define XSTR(x) STR_(x)
#define STR_(x) #x

static void key_404(kw_http_resp_t *resp)
{
    kw_http_resp_error(resp, 404, KW__MSG_KEY_404);
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct {
    const kw_key_rotation_t *rot;
    const kw__audit_t *au;
} rotate_ctx_t;

/* The swap and its audit event, in one transaction. */
static int rotate_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    const rotate_ctx_t *c = ud;
    int rc = kw_store_tx_key_rotate(tx, c->rot);
    return rc == KW_OK ? kw__api_audit_append(tx, c->au, diag) : rc;
}

#define MSG_GRACE                                                                                  \
    "grace_period_seconds must be an integer between 0 and " XSTR(KW_MAX_ROTATE_GRACE_S) "."

/* The optional body {"grace_period_seconds": N}: an empty body is {}. false -> 422. */
static bool parse_rotate(kw_http_req_t *req, kw_http_resp_t *resp, long *grace)
{
    *grace = 0;
    if (req->body.len == 0)
        return true;
    json_t *body = kw__api_body(req, resp);
    if (!body)
        return false;
    json_t *v = json_object_get(body, "grace_period_seconds");
    bool ok = !v || json_is_null(v) ||
              (json_is_integer(v) && json_integer_value(v) >= 0 &&
               json_integer_value(v) <= KW_MAX_ROTATE_GRACE_S);
    if (ok && v && json_is_integer(v))
        *grace = (long)json_integer_value(v);
    json_decref(body);
    if (!ok)
        kw_http_resp_error(resp, 422, MSG_GRACE);
    return ok;
}

/* read (else key 404), update (else 403), then the row (a delete in between: 404). */
static bool rotate_allowed(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                           const kw__principal_t *p, kw_str_t id, kw_apikey_t *key)
{
    bool ok = false;
    int rc = kw__api_can(api, p, "agent_api_key", id, "read", &ok, NULL);
    if (rc == KW_OK && !ok) {
        key_404(resp);
        return false;
    }
    bool is_perm = false; /* a schema without agent_api_key#update lets nobody rotate */
    if (rc == KW_OK &&
        kw_engine_has(api->engine, KW_STR("agent_api_key"), KW_STR("update"), &is_perm))
        rc = kw__api_can(api, p, "agent_api_key", id, "update", &ok, NULL);
    else if (rc == KW_OK)
        ok = false;
    if (rc == KW_OK && !ok) {
        kw_http_resp_error(resp, 403, "Not allowed to rotate this API key.");
        return false;
    }
    if (rc == KW_OK)
        rc = kw_store_key_get(api->store, id, req->arena, key);
    if (rc == KW_ENOTFOUND) {
        key_404(resp);
        return false;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "rotate key");
        return false;
    }
    return true;
}

/* The route (see the file's comment). */
void kw__api_keys_rotate(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_apikey_t key;
    char secret[KW_KEY_GEN_LEN + 1];
    long grace = 0;
    kw_revision_t rev = 0;
    int rc;
    if (kw__api_reserved_id(req, resp))
        return;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    if (!parse_rotate(req, resp, &grace))
        return;
    kw_str_t id = req->params[0];
    if (!kw_api_is_uuid(id)) {
        key_404(resp);
        return;
    }
    if (!rotate_allowed(api, req, resp, &p, id, &key))
        return;
    bool hashed = key.hash_len == KW_KEY_HASH_LEN;
    if (!hashed && grace > 0) {
        /* After the checks: only a caller who may rotate the key learns its type. */
        kw_http_resp_error(resp, 422,
                           "grace_period_seconds must be 0 for github and slack keys: their "
                           "secrets do not authenticate with keyward.");
        return;
    }
    rc = kw_key_generate(secret, sizeof(secret));
    if (rc != KW_OK)
        goto fail;
    kw_str_t sec = {secret, KW_KEY_GEN_LEN};
    uint8_t hash[KW_KEY_HASH_LEN];
    kw_key_rotation_t rot = {.id = id,
                             .old_hash = key.hash,
                             .old_hash_len = key.hash_len,
                             .old_secret_enc = key.secret_enc,
                             .old_secret_enc_len = key.secret_enc_len};
    int64_t now = wall_us();
    if (hashed) {
        kw_key_hash(api->keyring, sec, hash);
        rot.hash = hash;
        rot.hash_len = sizeof(hash);
        if (grace > 0) {
            rot.prev_hash = key.hash;
            rot.prev_hash_len = key.hash_len;
            rot.prev_until_us = now + (int64_t)grace * 1000000;
        }
    } else {
        uint8_t *sealed = NULL;
        size_t sealed_len = 0;
        rc = kw_secret_seal(api->keyring, sec, kw_str_c(key.id), req->arena, &sealed, &sealed_len);
        if (rc != KW_OK)
            goto fail;
        rot.secret_enc = sealed;
        rot.secret_enc_len = sealed_len;
    }
    kw__audit_t au;
    rc = kw__api_audit_for_key(api, req, "key.rotate", id, &au);
    if (rc == KW_OK)
        kw__api_audit_add(&au, req, "grace_period_seconds", json_integer(grace));
    rotate_ctx_t c = {&rot, &au};
    if (rc == KW_OK)
        rc = kw__api_write(api, rotate_tx, &c, 0, &rev, NULL);
    if (rc == KW_ENOTFOUND) {
        key_404(resp);
        goto out;
    }
    if (rc == KW_ECONFLICT) {
        kw_http_resp_error(resp, 409,
                           "The key was rotated by another request meanwhile; nothing changed.");
        goto out;
    }
    if (rc != KW_OK)
        goto fail;
    key.hash = rot.hash;
    key.hash_len = rot.hash_len;
    key.secret_enc = rot.secret_enc;
    key.secret_enc_len = rot.secret_enc_len;
    resp->status = 200;
    kw__api_key_json_live(api, &resp->body, &key, sec);
    /* The object gains one member here: until when the previous secret still works. */
    if (resp->body.len == 0 || resp->body.ptr[resp->body.len - 1] != '}') {
        rc = KW_ENOMEM; /* the buffer failed */
        goto fail;
    }
    resp->body.len--; /* the closing brace */
    kw_buf_puts(&resp->body, ", \"previous_api_key_valid_until\": ");
    if (rot.prev_hash_len) {
        char ts[32];
        size_t n = kw_api_format_time(rot.prev_until_us, ts);
        kw_json_escape(&resp->body, (kw_str_t){ts, n});
    } else {
        kw_buf_puts(&resp->body, "null");
    }
    kw_buf_puts(&resp->body, "}");
    kw__api_revision(req, resp, rev);
    kw_http_resp_header(resp, "Cache-Control", "no-store");
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: rotated key %s (grace %lds)", req->request_id,
           key.id, grace);
    goto out;
fail:
    kw__api_fail(req, resp, rc, "rotate key");
out:
    sodium_memzero(secret, sizeof(secret));
}
