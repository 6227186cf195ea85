/*
 * api/auth.c - principal resolution: who is calling, and which account they selected.
 *
 * Credentials (docs/API.md "Principals"):
 *   Authorization: Bearer <JWT>      -> user:<sub> | service_account:<sub>
 *   Authorization: AgentKey <key>    -> agent:<agent_id>   (scheme case-insensitive)
 *   x-agent-api-key: <key>           -> agent:<agent_id>
 * Only internal/external keys authenticate (the store indexes only their hashes).
 * Invariants: no key, token or hash is ever logged or copied into the arena; every
 * failure is the same 401 body so a caller learns nothing about why.
 */
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "auth"

static void unauthorized(kw_http_resp_t *resp)
{
    kw_http_resp_error(resp, 401, KW__MSG_UNAUTH);
}

/* Splits "Scheme credentials"; false when there is no space-separated credential. */
static bool split_scheme(const char *h, kw_str_t *scheme, kw_str_t *cred)
{
    const char *sp = strchr(h, ' ');
    if (!sp || sp == h)
        return false;
    *scheme = (kw_str_t){h, (size_t)(sp - h)};
    while (*sp == ' ')
        sp++;
    size_t n = strlen(sp);
    while (n > 0 && (sp[n - 1] == ' ' || sp[n - 1] == '\t'))
        n--;
    if (n == 0)
        return false;
    *cred = (kw_str_t){sp, n};
    return true;
}

static bool scheme_is(kw_str_t scheme, const char *want)
{
    return scheme.len == strlen(want) && strncasecmp(scheme.ptr, want, scheme.len) == 0;
}

int kw__api_principal_of_token(kw_api_t *api, kw_arena_t *a, kw_str_t token, kw__principal_t *p,
                               kw_diag_t *diag)
{
    kw_token_claims_t claims;
    memset(p, 0, sizeof(*p));
    int rc = kw_token_verify(api->keyring, token, (int64_t)time(NULL), &claims, diag);
    if (rc != KW_OK)
        return KW_EAUTH;
    const char *type;
    if (claims.principal_type[0] == '\0' || strcmp(claims.principal_type, "user") == 0) {
        type = "user";
        p->kind = KW__PRINCIPAL_USER;
    } else if (strcmp(claims.principal_type, "service_account") == 0) {
        type = "service_account";
        p->kind = KW__PRINCIPAL_SERVICE_ACCOUNT;
    } else {
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "unknown principal_type");
    }
    size_t sub_len = strnlen(claims.sub, sizeof(claims.sub));
    if (sub_len == 0)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "empty sub");
    char *sub = kw_arena_strndup(a, claims.sub, sub_len);
    p->subject_text = kw_arena_sprintf(a, "%s:%s", type, claims.sub);
    if (!sub || !p->subject_text)
        return KW_EAUTH;
    p->subject = (kw_subject_t){kw_str_c(type), {sub, sub_len}, KW_STR_NULL};
    p->admin = claims.admin;
    if (claims.account[0]) {
        size_t n = strnlen(claims.account, sizeof(claims.account));
        char *acct = kw_arena_strndup(a, claims.account, n);
        if (!acct)
            return KW_EAUTH;
        p->account = (kw_str_t){acct, n};
        p->has_account = true;
    }
    return KW_OK;
}

static bool auth_bearer(kw_api_t *api, kw_http_req_t *req, kw_str_t token, kw__principal_t *p)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw__api_principal_of_token(api, req->arena, token, p, &d);
    if (rc != KW_OK) {
        kw_log(KW_LOG_INFO, KW_MODULE, "request %s: bearer token refused: %s", req->request_id,
               d.msg[0] ? d.msg : kw_err_name(rc));
        return false;
    }
    const char *sel = kw_http_header(req, "x-selected-account-id");
    if (sel && sel[0]) { /* the header beats the claim */
        p->account = kw_str_c(sel);
        p->has_account = true;
    }
    return true;
}

/* Wall-clock microseconds (no ordering needed here, unlike kw_api_now_us's ids). */
static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Returns KW_OK (authenticated), KW_EAUTH, or a store error (503). Expiry and a rotation's
 * grace are read from the row at every authentication, so they hold on every instance at
 * once, by this instance's clock (tag-kw-key-lifecycle). */
int kw__api_principal_of_key(kw_api_t *api, kw_arena_t *a, kw_str_t key, kw__principal_t *p)
{
    uint8_t hash[KW_KEY_HASH_LEN];
    kw_apikey_t row;
    kw_agent_t ag;
    memset(p, 0, sizeof(*p));
    /* Nothing longer than the longest acceptable key can match; don't hash megabytes. */
    if (key.len == 0 || key.len > KW_KEY_MAX_SUPPLIED)
        return KW_EAUTH;
    kw_key_hash(api->keyring, key, hash);
    /* One statement: the key (by its hash or its previous one) and its agent's row. */
    int rc = kw_store_key_auth(api->store, hash, sizeof(hash), a, &row, &ag);
    if (rc == KW_ENOTFOUND) /* no such key, or its agent row is gone */
        return KW_EAUTH;
    if (rc != KW_OK)
        return rc;
    if (!row.type || (strcmp(row.type, "internal") != 0 && strcmp(row.type, "external") != 0))
        return KW_EAUTH;
    int64_t now = wall_us();
    bool current = row.hash_len == KW_KEY_HASH_LEN && kw_key_hash_eq(row.hash, hash);
    bool grace = !current && row.prev_hash_len == KW_KEY_HASH_LEN &&
                 kw_key_hash_eq(row.prev_hash, hash) && now < row.prev_until_us;
    if (!current && !grace)
        return KW_EAUTH;
    if (row.expires_at_us && now >= row.expires_at_us)
        return KW_EAUTH;
    char *id = kw_arena_strndup(a, ag.id, strlen(ag.id));
    p->subject_text = kw_arena_sprintf(a, "agent:%s", ag.id);
    if (!id || !p->subject_text)
        return KW_ENOMEM;
    p->kind = KW__PRINCIPAL_AGENT;
    p->subject = (kw_subject_t){KW_STR("agent"), kw_str_c(id), KW_STR_NULL};
    p->account = kw_str_c(ag.account_id);
    p->has_account = ag.account_id && ag.account_id[0];
    p->admin = false;
    memcpy(p->key_id, row.id, sizeof(p->key_id));
    p->key_in_grace = grace;
    kw__lastused_record(api->lastused, row.id, now);
    return KW_OK;
}

static int auth_key(kw_api_t *api, kw_http_req_t *req, kw_str_t key, kw__principal_t *p)
{
    return kw__api_principal_of_key(api, req->arena, key, p);
}

bool kw__api_auth(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, kw__principal_t *p)
{
    if (req->auth) { /* kw_api_on_headers authenticated this request already */
        *p = *(const kw__principal_t *)req->auth;
        req->log_subject = p->subject_text;
        return true;
    }
    memset(p, 0, sizeof(*p));
    const char *authz = kw_http_header(req, "authorization");
    const char *xkey = kw_http_header(req, "x-agent-api-key");
    kw_str_t scheme, cred;
    int rc;

    if (authz && authz[0]) {
        if (!split_scheme(authz, &scheme, &cred)) {
            unauthorized(resp);
            return false;
        }
        if (scheme_is(scheme, "Bearer")) {
            /* SpiceDB's preshared keys, for /v1 only: an administrator of that API. */
            if (kw__api_is_v1_path(req->path) && kw__v1_preshared(api, cred)) {
                p->kind = KW__PRINCIPAL_SERVICE_ACCOUNT;
                p->subject = (kw_subject_t){KW_STR("service_account"), KW_STR("v1-preshared-key"),
                                            KW_STR_NULL};
                p->subject_text = "v1:preshared-key";
                p->admin = true;
                req->log_subject = p->subject_text;
                return true;
            }
            if (!auth_bearer(api, req, cred, p)) {
                unauthorized(resp);
                return false;
            }
            req->log_subject = p->subject_text;
            return true;
        }
        if (!scheme_is(scheme, "AgentKey")) {
            unauthorized(resp);
            return false;
        }
        rc = auth_key(api, req, cred, p);
    } else if (xkey && xkey[0]) {
        rc = auth_key(api, req, kw_str_c(xkey), p);
    } else {
        unauthorized(resp);
        return false;
    }
    if (rc == KW_EAUTH) {
        unauthorized(resp);
        return false;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "api key lookup");
        return false;
    }
    req->log_subject = p->subject_text;
    return true;
}

bool kw_api_on_headers(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    /* Public routes need no credentials; `{id}` = "name" is the by-name route without its
     * name, a 404 that the handler gives before authentication. */
    if ((req->route_flags & KW__ROUTE_PUBLIC) ||
        (req->n_params >= 1 && kw_str_eq_c(req->params[0], "name")))
        return true;
    kw__principal_t p;
    if (kw__api_auth(api, req, resp, &p)) {
        kw__principal_t *keep = kw_arena_alloc(req->arena, sizeof(*keep));
        if (keep) { /* else the handler authenticates again */
            *keep = p;
            req->auth = keep;
        }
        return true;
    }
    if (kw__api_is_v1_path(req->path)) { /* the answers of v1.c's v1_begin */
        int st = resp->status == 401 || resp->status == 503 ? resp->status : 500;
        kw__api_v1_error(resp, st,
                         st == 401   ? KW__MSG_UNAUTH
                         : st == 503 ? KW__MSG_DB
                                     : KW__MSG_INTERNAL);
    }
    return false;
}
