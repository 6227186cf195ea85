/*
 * api/verify.c - POST /auth/verify: the platform's auth endpoint (issue 14).
 *
 * A service (a service_account, by bearer token) passes a caller's credential, an API key
 * or a bearer token, and optionally up to KW_MAX_VERIFY_CHECKS checks; keyward answers the
 * principal and each check's answer at one revision, in one round trip, or
 * {"valid": false}. Rules (docs/API.md, "Verifying credentials"):
 *   - the caller must be a service_account with `verify` on the account the credential
 *     belongs to (the key's agent's account; the token's `account` claim): a credential of
 *     an account the service may not verify is {"valid": false}, like an unknown one, so a
 *     service learns nothing about other tenants' keys;
 *   - it is not an oracle for guessing keys: invalid attempts are counted per calling
 *     service and per key prefix (the first KEY_PREFIX_LEN characters) in fixed windows of
 *     WINDOW_S seconds; past the limit (env KEYWARD_VERIFY_INVALID_PER_SERVICE, default 120;
 *     KEYWARD_VERIFY_INVALID_PER_PREFIX, default 30) every attempt of that service, or for
 *     keys with that prefix, is refused with 429 and Retry-After until the window ends,
 *     before any lookup (so a 429 says nothing about the credential). Counted in /metrics.
 *     The counters are per instance: N instances allow N times the limit.
 *   - never logged: the credential; logged: the calling service, the verdict, the key id.
 *
 * The limiter's table is one mutex (a leaf: nothing is called while it is held) over an
 * open-addressing table of at most RL_CAP entries; a full table first drops entries whose
 * window has ended, and if none has, the insert is refused and the attempt counted as
 * limited (fail closed: a flood of prefixes cannot wipe a service's count).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "verify"

#define WINDOW_S 60
#define KEY_PREFIX_LEN 8
#define RL_CAP 65536 /* a power of two */
#define RL_KEY_MAX 300
#define DEFAULT_PER_SERVICE 120
#define DEFAULT_PER_PREFIX 30

typedef struct rl_entry {
    char key[RL_KEY_MAX + 1]; /* "s:<service subject>" | "p:<prefix>"; "" = free */
    int64_t window;           /* the window's number (seconds / WINDOW_S) */
    uint32_t count;
} rl_entry_t;

struct kw__ratelimit {
    pthread_mutex_t mu;
    rl_entry_t *tab; /* RL_CAP entries */
    /* Entries in use; written under mu, read without it by rl_blocked: while no invalid
     * attempt has been counted (the usual case) a verification takes no lock at all. */
    _Atomic size_t n;
    uint32_t per_service, per_prefix;
};

static uint32_t limit_from_env(const char *name, uint32_t dflt)
{
    const char *v = getenv(name);
    long n = 0;
    if (v && v[0] && kw_api_parse_bounded(kw_str_c(v), 1, 1000000, &n))
        return (uint32_t)n;
    if (v && v[0])
        kw_log(KW_LOG_WARN, KW_MODULE, "%s must be 1..1000000; using %u", name, dflt);
    return dflt;
}

int kw__ratelimit_new(kw__ratelimit_t **out)
{
    kw__ratelimit_t *rl = kw_calloc(1, sizeof(*rl));
    if (!rl)
        return KW_ENOMEM;
    rl->tab = kw_calloc(RL_CAP, sizeof(*rl->tab));
    if (!rl->tab)
        goto fail_tab;
    if (pthread_mutex_init(&rl->mu, NULL) != 0)
        goto fail_mu;
    rl->per_service = limit_from_env("KEYWARD_VERIFY_INVALID_PER_SERVICE", DEFAULT_PER_SERVICE);
    rl->per_prefix = limit_from_env("KEYWARD_VERIFY_INVALID_PER_PREFIX", DEFAULT_PER_PREFIX);
    *out = rl;
    return KW_OK;
fail_mu:
    kw_free(rl->tab);
fail_tab:
    kw_free(rl);
    return KW_ENOMEM;
}

void kw__ratelimit_free(kw__ratelimit_t *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    kw_free(rl->tab);
    kw_free(rl);
}

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The slot of key (its entry, or the free slot where it would go). Under mu. */
static rl_entry_t *rl_slot(kw__ratelimit_t *rl, const char *key)
{
    size_t i = (size_t)str_hash(key) & (RL_CAP - 1);
    while (rl->tab[i].key[0] && strcmp(rl->tab[i].key, key) != 0)
        i = (i + 1) & (RL_CAP - 1);
    return &rl->tab[i];
}

/* Drops every entry of an ended window (rebuilds the table in place). Under mu. */
static void rl_sweep(kw__ratelimit_t *rl, int64_t window)
{
    rl_entry_t *old = rl->tab;
    rl_entry_t *t = kw_calloc(RL_CAP, sizeof(*t));
    if (!t)
        return;
    rl->tab = t;
    rl->n = 0;
    for (size_t i = 0; i < RL_CAP; i++) {
        if (!old[i].key[0] || old[i].window != window)
            continue;
        *rl_slot(rl, old[i].key) = old[i];
        rl->n++;
    }
    kw_free(old);
}

/* Seconds until the window ends, when `key` is over `limit` now; 0 when it is not. */
static int rl_blocked(kw__ratelimit_t *rl, const char *key, uint32_t limit, int64_t now_s)
{
    int64_t window = now_s / WINDOW_S;
    int wait = 0;
    if (atomic_load_explicit(&rl->n, memory_order_acquire) == 0)
        return 0;
    pthread_mutex_lock(&rl->mu);
    rl_entry_t *e = rl_slot(rl, key);
    if (e->key[0] && e->window == window && e->count >= limit)
        wait = (int)((window + 1) * WINDOW_S - now_s);
    pthread_mutex_unlock(&rl->mu);
    return wait;
}

/* Counts one invalid attempt for `key`. */
static void rl_count(kw__ratelimit_t *rl, const char *key, int64_t now_s)
{
    int64_t window = now_s / WINDOW_S;
    pthread_mutex_lock(&rl->mu);
    rl_entry_t *e = rl_slot(rl, key);
    if (!e->key[0]) {
        if (rl->n * 4 >= (size_t)RL_CAP * 3) {
            rl_sweep(rl, window);
            e = rl_slot(rl, key);
        }
        if (rl->n * 4 >= (size_t)RL_CAP * 3) { /* still full: this key is not tracked */
            pthread_mutex_unlock(&rl->mu);
            return;
        }
        snprintf(e->key, sizeof(e->key), "%s", key);
        e->window = window;
        e->count = 0;
        rl->n++;
    }
    if (e->window != window) {
        e->window = window;
        e->count = 0;
    }
    if (e->count < UINT32_MAX)
        e->count++;
    pthread_mutex_unlock(&rl->mu);
}

/* ---- the route ---- */

/* The parsed request; strings point into the JSON tree or the arena. */
typedef struct verify_req {
    bool is_key;
    char cred[KW_KEY_MAX_SUPPLIED + 1]; /* a key or a token: on the stack, wiped */
    size_t cred_len;
    bool cred_too_long;
    kw_check_item_t *items;
    size_t n_items;
} verify_req_t;

#define MSG_BODY                                                                                   \
    "Give exactly one of api_key and token (strings), and optionally checks: an array of at "      \
    "most 100 objects {\"resource\": \"type:id\", \"permission\": \"name\"}."

/* "type:id" -> object (views into s). */
static bool parse_resource(kw_str_t s, kw_object_t *out)
{
    const char *colon = s.ptr ? memchr(s.ptr, ':', s.len) : NULL;
    if (!colon || colon == s.ptr || colon == s.ptr + s.len - 1)
        return false;
    out->type = (kw_str_t){s.ptr, (size_t)(colon - s.ptr)};
    out->id = (kw_str_t){colon + 1, s.len - (size_t)(colon - s.ptr) - 1};
    return out->type.len <= KW_MAX_NAME_LEN && out->id.len <= KW_MAX_OBJECT_ID_LEN;
}

/* The checks, copied into the arena (the JSON tree is freed before they run). */
static bool parse_checks(kw_arena_t *a, json_t *arr, verify_req_t *v)
{
    if (!arr || json_is_null(arr))
        return true;
    if (!json_is_array(arr) || json_array_size(arr) > KW_MAX_VERIFY_CHECKS)
        return false;
    v->n_items = json_array_size(arr);
    v->items = kw_arena_alloc(a, (v->n_items ? v->n_items : 1) * sizeof(*v->items));
    if (!v->items)
        return false;
    for (size_t i = 0; i < v->n_items; i++) {
        json_t *c = json_array_get(arr, i);
        kw_str_t res, perm;
        bool has_res = false, has_perm = false;
        kw_object_t obj;
        if (!json_is_object(c) || !kw__api_json_str(c, "resource", &res, &has_res) || !has_res ||
            !kw__api_json_str(c, "permission", &perm, &has_perm) || !has_perm || perm.len == 0 ||
            perm.len > KW_MAX_NAME_LEN || kw_arena_str_copy(a, res, &res) != KW_OK ||
            kw_arena_str_copy(a, perm, &perm) != KW_OK || !parse_resource(res, &obj))
            return false;
        memset(&v->items[i], 0, sizeof(v->items[i]));
        v->items[i].resource = obj;
        v->items[i].permission = perm;
    }
    return true;
}

/* Parses the body; the credential goes to the stack buffer and jansson's copy is wiped.
 * false -> 422 written. */
static bool parse_verify(kw_http_req_t *req, kw_http_resp_t *resp, verify_req_t *v)
{
    json_t *body = kw__api_body(req, resp);
    if (!body)
        return false;
    kw_str_t key, token;
    bool has_key = false, has_token = false;
    bool ok = kw__api_json_str(body, "api_key", &key, &has_key) &&
              kw__api_json_str(body, "token", &token, &has_token) && has_key != has_token &&
              parse_checks(req->arena, json_object_get(body, "checks"), v);
    if (ok) {
        kw_str_t c = has_key ? key : token;
        v->is_key = has_key;
        if (c.len > KW_KEY_MAX_SUPPLIED) {
            v->cred_too_long = true; /* never matches (auth.c's rule); not copied */
        } else {
            memcpy(v->cred, c.ptr, c.len);
            v->cred[c.len] = '\0';
            v->cred_len = c.len;
        }
    }
    if (has_key)
        sodium_memzero((void *)key.ptr, key.len);
    if (has_token)
        sodium_memzero((void *)token.ptr, token.len);
    json_decref(body);
    if (!ok)
        kw_http_resp_error(resp, 422, MSG_BODY);
    return ok;
}

/* The credential's principal, then `verify` for the caller on its account. KW_OK + *valid,
 * or a store/engine error. */
static int verify_cred(kw_api_t *api, kw_http_req_t *req, const kw__principal_t *caller,
                       const verify_req_t *v, kw__principal_t *who, bool *valid)
{
    *valid = false;
    if (v->cred_too_long || v->cred_len == 0)
        return KW_OK;
    kw_str_t cred = {v->cred, v->cred_len};
    int rc = v->is_key ? kw__api_principal_of_key(api, req->arena, cred, who)
                       : kw__api_principal_of_token(api, req->arena, cred, who, NULL);
    if (rc == KW_EAUTH || (rc == KW_OK && !who->has_account))
        return KW_OK;
    if (rc != KW_OK)
        return rc;
    bool ok = false, is_perm = false;
    if (!kw_engine_has(api->engine, KW_STR("account"), KW_STR("verify"), &is_perm))
        return KW_OK; /* a schema that grants nobody verify: never valid */
    rc = kw__api_can(api, caller, "account", who->account, "verify", &ok, NULL);
    if (rc == KW_OK)
        *valid = ok;
    return rc;
}

static void principal_json(kw_buf_t *out, const kw__principal_t *w)
{
    kw_buf_puts(out, "{\"type\": ");
    kw_json_escape(out, w->subject.type);
    kw_buf_puts(out, ", \"id\": ");
    kw_json_escape(out, w->subject.id);
    kw_buf_puts(out, ", \"subject\": ");
    kw_json_escape(out, kw_str_c(w->subject_text));
    kw_buf_puts(out, ", \"account_id\": ");
    kw_json_escape(out, w->account);
    if (w->kind == KW__PRINCIPAL_AGENT) {
        kw_buf_puts(out, ", \"key_id\": ");
        kw_json_escape(out, kw_str_c(w->key_id));
        kw_buf_puts(out,
                    w->key_in_grace ? ", \"key_in_grace\": true" : ", \"key_in_grace\": false");
    }
    kw_buf_puts(out, "}");
}

/* Runs the checks for the verified principal at one revision and writes the answer. */
static int answer_valid(kw_api_t *api, kw_http_resp_t *resp, const kw__principal_t *who,
                        verify_req_t *v, kw_revision_t *rev)
{
    for (size_t i = 0; i < v->n_items; i++)
        v->items[i].subject = who->subject;
    kw_revision_t engine_rev = 0;
    if (v->n_items) {
        int rc = kw_engine_check_bulk(api->engine, v->items, v->n_items, &engine_rev);
        if (rc != KW_OK)
            return rc;
    }
    kw_buf_t *out = &resp->body;
    kw_buf_puts(out, "{\"valid\": true, \"principal\": ");
    principal_json(out, who);
    kw_buf_puts(out, ", \"checks\": [");
    for (size_t i = 0; i < v->n_items; i++) {
        const kw_check_item_t *it = &v->items[i];
        bool yes = it->rc == KW_OK && it->result == KW_CHECK_YES;
        atomic_fetch_add_explicit(it->rc != KW_OK ? &api->checks_error
                                  : yes           ? &api->checks_allowed
                                                  : &api->checks_denied,
                                  1, memory_order_relaxed);
        kw_buf_puts(out, i ? ", {\"resource\": " : "{\"resource\": ");
        /* type and id are views into one arena copy of the request's "type:id" */
        kw_json_escape(out, (kw_str_t){it->resource.type.ptr,
                                       it->resource.type.len + 1 + it->resource.id.len});
        kw_buf_puts(out, ", \"permission\": ");
        kw_json_escape(out, it->permission);
        kw_buf_puts(out, yes ? ", \"allowed\": true" : ", \"allowed\": false");
        if (it->rc != KW_OK) {
            kw_buf_puts(out, ", \"error\": ");
            kw_json_escape(out, kw_str_c(it->diag.msg[0] ? it->diag.msg : kw_strerror(it->rc)));
        }
        kw_buf_puts(out, "}");
    }
    kw_buf_puts(out, "]}");
    *rev = kw__api_applied(api);
    return KW_OK;
}

static void too_many(kw_http_req_t *req, kw_http_resp_t *resp, int wait)
{
    char *ra = kw_arena_sprintf(req->arena, "%d", wait > 0 ? wait : 1);
    kw_http_resp_error(resp, 429, "Too many invalid verification attempts; retry later.");
    if (ra)
        kw_http_resp_header(resp, "Retry-After", ra);
}

void kw__api_auth_verify(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t caller, who;
    verify_req_t v;
    kw_revision_t rev = 0;
    memset(&v, 0, sizeof(v));
    if (!kw__api_auth(api, req, resp, &caller) || !kw__api_fresh(api, req, resp))
        return;
    if (!parse_verify(req, resp, &v))
        goto out;
    if (caller.kind != KW__PRINCIPAL_SERVICE_ACCOUNT) {
        kw_http_resp_error(resp, 403, "Only a service_account may verify credentials.");
        goto out;
    }
    int64_t now_s = (int64_t)time(NULL);
    const char *svc_key = kw_arena_sprintf(req->arena, "s:%.290s", caller.subject_text);
    const char *pfx_key = NULL;
    if (v.is_key && v.cred_len > 0)
        pfx_key = kw_arena_sprintf(req->arena, "p:%.*s",
                                   (int)(v.cred_len < KEY_PREFIX_LEN ? v.cred_len : KEY_PREFIX_LEN),
                                   v.cred);
    if (!svc_key || (v.is_key && v.cred_len > 0 && !pfx_key)) {
        kw__api_fail(req, resp, KW_ENOMEM, "verify");
        goto out;
    }
    kw__ratelimit_t *rl = api->verify_limits;
    int wait = rl_blocked(rl, svc_key, rl->per_service, now_s);
    if (wait) {
        atomic_fetch_add_explicit(&api->verify_limited_service, 1, memory_order_relaxed);
        too_many(req, resp, wait);
        goto out;
    }
    if (pfx_key && (wait = rl_blocked(rl, pfx_key, rl->per_prefix, now_s)) != 0) {
        atomic_fetch_add_explicit(&api->verify_limited_prefix, 1, memory_order_relaxed);
        too_many(req, resp, wait);
        goto out;
    }
    bool valid = false;
    int rc = verify_cred(api, req, &caller, &v, &who, &valid);
    if (rc == KW_OK && valid)
        rc = answer_valid(api, resp, &who, &v, &rev);
    if (rc != KW_OK) {
        resp->body.len = 0;
        kw__api_fail(req, resp, rc, "verify");
        goto out;
    }
    if (!valid) {
        atomic_fetch_add_explicit(&api->verify_invalid, 1, memory_order_relaxed);
        rl_count(rl, svc_key, now_s);
        if (pfx_key)
            rl_count(rl, pfx_key, now_s);
        kw_log(KW_LOG_INFO, KW_MODULE, "request %s: %s verified an invalid %s", req->request_id,
               caller.subject_text, v.is_key ? "api key" : "token");
        kw_buf_puts(&resp->body, "{\"valid\": false}");
        rev = kw__api_applied(api);
    } else {
        atomic_fetch_add_explicit(&api->verify_valid, 1, memory_order_relaxed);
    }
    resp->status = 200;
    kw_http_resp_header(resp, "Cache-Control", "no-store");
    kw__api_revision(req, resp, rev);
out:
    sodium_memzero(v.cred, sizeof(v.cred));
}

void kw__api_verify_metrics(kw_api_t *api, kw_buf_t *out)
{
    kw_buf_printf(
        out,
        "# HELP keyward_verify_total POST /auth/verify answers by verdict.\n"
        "# TYPE keyward_verify_total counter\n"
        "keyward_verify_total{result=\"valid\"} %llu\n"
        "keyward_verify_total{result=\"invalid\"} %llu\n"
        "# HELP keyward_verify_rate_limited_total /auth/verify attempts refused with 429.\n"
        "# TYPE keyward_verify_rate_limited_total counter\n"
        "keyward_verify_rate_limited_total{scope=\"service\"} %llu\n"
        "keyward_verify_rate_limited_total{scope=\"prefix\"} %llu\n",
        (unsigned long long)atomic_load_explicit(&api->verify_valid, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&api->verify_invalid, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&api->verify_limited_service,
                                                 memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&api->verify_limited_prefix,
                                                 memory_order_relaxed));
}
