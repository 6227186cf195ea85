/*
 * api/forward.c - the forward ingress GET|POST /agents/forward/name/{agent_name}/{path...}
 * (issue 16): verifies a delivery (an agent key, a GitHub signature or a Slack signature,
 * in that order; docs/API.md lists every answer), refuses replays, and relays the request
 * to the agent's acp_url through libcurl (forward_relay.c).
 *
 * Threads: verification runs where the request runs (an event loop, like every handler);
 * the relay waits on the network, so the handler defers itself (kw_http_req_defer) and
 * relays on a pool worker. At most KEYWARD_FORWARD_MAX_INFLIGHT relays run at once; more
 * answer 503 at once. Never logged: bodies, secrets, signatures, header values.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "api_int.h"
#include "base/log.h"
#include "forward_int.h"

#define KW_MODULE "forward"

static const char *const outcome_names[KW__FWD_N] = {
    [KW__FWD_RELAYED] = "relayed",
    [KW__FWD_NOT_FOUND] = "agent_not_found",
    [KW__FWD_KEY_NOT_FOUND] = "key_not_found",
    [KW__FWD_UNAUTHORIZED] = "bad_credentials",
    [KW__FWD_BAD_REQUEST] = "bad_request",
    [KW__FWD_NO_AUTH] = "no_authentication",
    [KW__FWD_REPLAY] = "replay",
    [KW__FWD_CHALLENGE] = "url_verification",
    [KW__FWD_DISALLOWED] = "destination_not_allowed",
    [KW__FWD_UPSTREAM_ERROR] = "upstream_unreachable",
    [KW__FWD_UPSTREAM_TIMEOUT] = "upstream_timeout",
    [KW__FWD_TOO_LARGE] = "upstream_too_large",
    [KW__FWD_BUSY] = "busy",
    [KW__FWD_ERROR] = "error",
};

static _Atomic uint64_t outcomes[KW__FWD_N];
static _Atomic unsigned inflight;

void kw__fwd_count(int outcome)
{
    atomic_fetch_add_explicit(&outcomes[outcome], 1, memory_order_relaxed);
}

void kw__api_forward_metrics(kw_buf_t *out)
{
    kw_buf_puts(out, "# HELP keyward_forward_requests_total Deliveries at the forward ingress, "
                     "by outcome.\n# TYPE keyward_forward_requests_total counter\n");
    for (int i = 0; i < KW__FWD_N; i++)
        kw_buf_printf(out, "keyward_forward_requests_total{outcome=\"%s\"} %" PRIu64 "\n",
                      outcome_names[i], atomic_load_explicit(&outcomes[i], memory_order_relaxed));
    kw_buf_printf(out,
                  "# HELP keyward_forward_inflight Relays waiting on an upstream now.\n"
                  "# TYPE keyward_forward_inflight gauge\nkeyward_forward_inflight %u\n",
                  atomic_load_explicit(&inflight, memory_order_relaxed));
}

/* What the first run leaves for the relay and the run that answers (req->auth: public
 * routes have no principal). In the request arena: alive until the request is answered,
 * which the handler does only once the relay thread is done with it (`woke`). */
typedef struct fwd_state {
    struct fwd_state *next; /* the relay queue */
    kw_http_req_t *req;
    kw_agent_t target; /* the agent whose credential verified */
    const char *via;   /* "agent_key" | "github" | "slack" */
    kw_http_resp_t result;
    bool done; /* result is ready (g_done_mu) */
    bool woke; /* ...and the relay thread has woken the request and let go of it */
} fwd_state_t;

/* ---- the relay threads ----
 * The relay waits on the network for up to the relay timeout, so it runs neither on an
 * event loop nor on the HTTP pool's workers (which re-run parked requests: a slow upstream
 * must not delay them): KEYWARD_FORWARD_THREADS threads of this module take parked
 * requests from a queue, relay, and wake exactly that request (kw_http_req_wake). */
static pthread_mutex_t g_q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_q_cv = PTHREAD_COND_INITIALIZER;
static fwd_state_t *g_q_head, *g_q_tail;
static pthread_mutex_t g_done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_done_cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t g_threads_once = PTHREAD_ONCE_INIT;
static unsigned g_n_threads;

static void *relay_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_q_mu);
        while (!g_q_head)
            pthread_cond_wait(&g_q_cv, &g_q_mu);
        fwd_state_t *st = g_q_head;
        g_q_head = st->next;
        if (!g_q_head)
            g_q_tail = NULL;
        pthread_mutex_unlock(&g_q_mu);
        kw__fwd_relay(st->req, &st->result, &st->target, st->via);
        pthread_mutex_lock(&g_done_mu);
        st->done = true;
        pthread_mutex_unlock(&g_done_mu);
        kw_http_req_wake(st->req);
        pthread_mutex_lock(&g_done_mu);
        st->woke = true; /* from here on st and its request are the handler's alone */
        pthread_cond_broadcast(&g_done_cv);
        pthread_mutex_unlock(&g_done_mu);
    }
    return NULL;
}

/* Process-lifetime threads (detached: they hold nothing at exit but an idle handle). */
static void threads_start(void)
{
    unsigned want = kw__fwd_settings()->threads;
    for (unsigned i = 0; i < want; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, relay_main, NULL) != 0)
            break;
        pthread_detach(t);
        g_n_threads++;
    }
    if (g_n_threads < want)
        kw_log(KW_LOG_WARN, KW_MODULE, "started %u of %u relay threads", g_n_threads, want);
}

static void enqueue(fwd_state_t *st)
{
    pthread_mutex_lock(&g_q_mu);
    st->next = NULL;
    if (g_q_tail)
        g_q_tail->next = st;
    else
        g_q_head = st;
    g_q_tail = st;
    pthread_cond_signal(&g_q_cv);
    pthread_mutex_unlock(&g_q_mu);
}

/* One answer: status, {"detail": msg}, the outcome counted, the decision logged. */
static void answer(kw_http_req_t *req, kw_http_resp_t *resp, int status, const char *msg,
                   int outcome, const char *via, const char *agent_id)
{
    kw_http_resp_error(resp, status, msg ? msg : KW__MSG_INTERNAL);
    kw__fwd_count(outcome);
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: forward via=%s agent=%s outcome=%s status=%d",
           req->request_id, via ? via : "-", agent_id ? agent_id : "-", outcome_names[outcome],
           status);
}

static bool hex32(const char *hex, size_t len, uint8_t out[32])
{
    size_t bin_len = 0;
    if (len != 64)
        return false;
    return sodium_hex2bin(out, 32, hex, len, NULL, &bin_len, NULL) == 0 && bin_len == 32;
}

/* HMAC-SHA256(secret, parts...) compared in constant time with the hex signature `sig`. */
static bool hmac_ok(kw_str_t secret, const kw_str_t *parts, size_t n, const char *sig,
                    size_t sig_len)
{
    uint8_t want[32], got[32];
    if (!hex32(sig, sig_len, got))
        return false;
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret.ptr, secret.len);
    for (size_t i = 0; i < n; i++)
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)parts[i].ptr, parts[i].len);
    crypto_auth_hmacsha256_final(&st, want);
    bool ok = sodium_memcmp(want, got, 32) == 0;
    sodium_memzero(&st, sizeof(st));
    sodium_memzero(want, sizeof(want));
    return ok;
}

/* Opens a webhook key's sealed secret and checks the HMAC. KW_OK + *ok, or an error. */
static int key_hmac(kw_api_t *api, const kw_apikey_t *k, const kw_str_t *parts, size_t n,
                    const char *sig, size_t sig_len, bool *ok)
{
    char *secret = NULL;
    size_t len = 0;
    int rc = kw_secret_open(api->keyring, k->secret_enc, k->secret_enc_len, kw_str_c(k->id),
                            &secret, &len);
    if (rc != KW_OK)
        return rc;
    *ok = hmac_ok((kw_str_t){secret, len}, parts, n, sig, sig_len);
    kw_secret_wipe(secret);
    return KW_OK;
}

/* Wall-clock microseconds: a key's expiry and a rotation's grace (tag-kw-key-lifecycle). */
static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The agent a verified key belongs to (it must still have an acp_url). A key past its
 * expires_at counts as absent, as everywhere else. */
static int key_agent(kw_api_t *api, kw_http_req_t *req, const kw_apikey_t *k, kw_agent_t *ag)
{
    if (k->expires_at_us && wall_us() >= k->expires_at_us)
        return KW_ENOTFOUND;
    int rc = kw_store_agent_get(api->store, kw_str_c(k->agent_id), req->arena, ag);
    if (rc == KW_OK && !ag->acp_url)
        rc = KW_ENOTFOUND;
    return rc;
}

static int replay_window_s(void)
{
    const char *v = getenv("KEYWARD_FORWARD_REPLAY_WINDOW_S");
    long n = v && *v ? strtol(v, NULL, 10) : 0;
    return n > 0 && n <= 86400 ? (int)n : 300;
}

/* Claims a delivery id: false -> answered (409 or a store failure). */
static bool claim(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, const char *via,
                  const kw_agent_t *ag, const char *id_text)
{
    /* ids are per agent and source, hashed to a fixed size (the raw id is client input) */
    uint8_t h[32];
    char hx[65], key[80];
    crypto_generichash(h, sizeof(h), (const unsigned char *)id_text, strlen(id_text),
                       (const unsigned char *)ag->id, strlen(ag->id));
    sodium_bin2hex(hx, sizeof(hx), h, sizeof(h));
    snprintf(key, sizeof(key), "%s:%s", via, hx);
    int rc = kw_store_replay_claim(api->store, kw_str_c(key), (int64_t)replay_window_s() * 1000000);
    if (rc == KW_ECONFLICT) {
        answer(req, resp, 409, "Replayed webhook delivery refused.", KW__FWD_REPLAY, via, ag->id);
        return false;
    }
    if (rc != KW_OK) {
        kw__fwd_count(KW__FWD_ERROR);
        kw__api_fail(req, resp, rc, "forward replay check");
        return false;
    }
    return true;
}

/* A JSON object member that is a string; NULL otherwise. */
static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- the three ways in ---- */

static bool via_agent_key(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                          const kw_agent_t *named, const char *presented, fwd_state_t *st)
{
    uint8_t hash[KW_KEY_HASH_LEN];
    kw_apikey_t k;
    kw_agent_t ag;
    size_t len = strlen(presented);
    kw_key_hash(api->keyring, (kw_str_t){presented, len}, hash);
    int rc = len && len <= KW_KEY_MAX_SUPPLIED
                 ? kw_store_key_find_by_hash(api->store, hash, sizeof(hash), req->arena, &k)
                 : KW_ENOTFOUND;
    if (rc == KW_OK && strcmp(k.type, "external") != 0)
        rc = KW_ENOTFOUND;
    /* The row matches the current hash or a rotation's previous one: the latter only
     * within its grace period (as kw__api_principal_of_key). */
    int64_t now = wall_us();
    if (rc == KW_OK && !(k.hash_len == KW_KEY_HASH_LEN && kw_key_hash_eq(k.hash, hash)) &&
        !(k.prev_hash_len == KW_KEY_HASH_LEN && kw_key_hash_eq(k.prev_hash, hash) &&
          now < k.prev_until_us))
        rc = KW_ENOTFOUND;
    if (rc == KW_OK)
        rc = key_agent(api, req, &k, &ag);
    if (rc == KW_OK && strcmp(ag.name, named->name) != 0)
        rc = KW_ENOTFOUND; /* another agent's key */
    if (rc == KW_ENOTFOUND) {
        char *msg = kw_arena_sprintf(req->arena, "Invalid API key for agent ID %s.", named->id);
        answer(req, resp, 401, msg, KW__FWD_UNAUTHORIZED, "agent_key", named->id);
        return false;
    }
    if (rc != KW_OK) {
        kw__fwd_count(KW__FWD_ERROR);
        kw__api_fail(req, resp, rc, "forward agent key");
        return false;
    }
    kw__lastused_record(api->lastused, k.id, now);
    st->target = ag;
    st->via = "agent_key";
    return true;
}

static bool via_github(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                       const kw_agent_t *named, const char *sig, fwd_state_t *st)
{
    const char *via = "github";
    if (req->body.len == 0) {
        answer(req, resp, 400, "Empty payload in GitHub webhook.", KW__FWD_BAD_REQUEST, via,
               named->id);
        return false;
    }
    json_t *doc = json_loadb(req->body.ptr, req->body.len, 0, NULL);
    if (!doc) {
        answer(req, resp, 400, "Failed to parse GitHub webhook payload as JSON.",
               KW__FWD_BAD_REQUEST, via, named->id);
        return false;
    }
    json_t *repo = json_is_object(doc) ? json_object_get(doc, "repository") : NULL;
    if (!json_is_object(repo)) {
        json_decref(doc);
        answer(req, resp, 400, "GitHub webhook payload missing repository info.",
               KW__FWD_BAD_REQUEST, via, named->id);
        return false;
    }
    const char *full = jstr(repo, "full_name");
    bool missing = !full || !*full;
    char *name = missing ? NULL : kw_arena_strndup(req->arena, full, strlen(full));
    json_decref(doc); /* `full` points into doc: only `name` from here on */
    if (missing) {
        answer(req, resp, 400, "GitHub webhook payload missing repository name.",
               KW__FWD_BAD_REQUEST, via, named->id);
        return false;
    }
    if (!name) {
        kw__api_fail(req, resp, KW_ENOMEM, "forward github");
        return false;
    }
    kw_apikey_t k;
    kw_agent_t ag;
    int rc = kw_store_key_find_forward(api->store, kw_str_c(named->name), kw_str_c(name),
                                       KW_STR("github"), req->arena, &k);
    if (rc == KW_OK)
        rc = key_agent(api, req, &k, &ag);
    if (rc == KW_ENOTFOUND) {
        answer(req, resp, 404,
               kw_arena_sprintf(req->arena, "No API key found for GitHub repository %s.", name),
               KW__FWD_KEY_NOT_FOUND, via, named->id);
        return false;
    }
    bool ok = false;
    if (rc == KW_OK) {
        size_t n = strlen(sig);
        bool prefixed = n > 7 && strncmp(sig, "sha256=", 7) == 0;
        kw_str_t part = req->body;
        if (prefixed)
            rc = key_hmac(api, &k, &part, 1, sig + 7, n - 7, &ok);
    }
    if (rc != KW_OK) {
        kw__fwd_count(KW__FWD_ERROR);
        kw__api_fail(req, resp, rc, "forward github");
        return false;
    }
    if (!ok) {
        answer(req, resp, 401, "Invalid GitHub webhook signature", KW__FWD_UNAUTHORIZED, via,
               ag.id);
        return false;
    }
    const char *delivery = kw_http_header(req, "x-github-delivery");
    char *rid = kw_arena_sprintf(req->arena, "%s", delivery && *delivery ? delivery : sig);
    if (!rid) {
        kw__api_fail(req, resp, KW_ENOMEM, "forward github");
        return false;
    }
    if (!claim(api, req, resp, via, &ag, rid))
        return false;
    kw__lastused_record(api->lastused, k.id, wall_us());
    st->target = ag;
    st->via = via;
    return true;
}

/* api_app_id of a Slack body: JSON (Events API), or a form (slash commands: a field;
 * interactivity: a `payload` field holding JSON). Arena copy or NULL. */
static char *slack_app_id(kw_http_req_t *req, bool *url_verification, char **challenge)
{
    *url_verification = false;
    *challenge = NULL;
    json_t *doc = json_loadb(req->body.ptr, req->body.len, 0, NULL);
    char *out = NULL;
    if (!doc) {
        /* a form: look for api_app_id=..., else payload=<json> */
        kw_str_t b = req->body;
        size_t i = 0;
        while (i < b.len && !out) {
            size_t s = i;
            while (i < b.len && b.ptr[i] != '&')
                i++;
            kw_str_t pair = {b.ptr + s, i - s};
            i++;
            const char *eq = memchr(pair.ptr, '=', pair.len);
            if (!eq)
                continue;
            kw_str_t k = {pair.ptr, (size_t)(eq - pair.ptr)}, v = {eq + 1, pair.len - k.len - 1};
            kw_str_t d;
            if (!kw_http_pct_decode(req->arena, v, true, &d) || memchr(d.ptr, '\0', d.len))
                continue;
            if (kw_str_eq_c(k, "api_app_id") && d.len) {
                out = kw_arena_strndup(req->arena, d.ptr, d.len);
            } else if (kw_str_eq_c(k, "payload")) {
                json_t *pj = json_loadb(d.ptr, d.len, 0, NULL);
                const char *id = jstr(pj, "api_app_id");
                if (id && *id)
                    out = kw_arena_strndup(req->arena, id, strlen(id));
                json_decref(pj);
            }
        }
        return out;
    }
    const char *id = jstr(doc, "api_app_id");
    if (id && *id)
        out = kw_arena_strndup(req->arena, id, strlen(id));
    const char *type = jstr(doc, "type");
    if (type && strcmp(type, "url_verification") == 0) {
        *url_verification = true;
        const char *ch = jstr(doc, "challenge");
        if (ch)
            *challenge = kw_arena_strndup(req->arena, ch, strlen(ch));
    }
    json_decref(doc);
    return out;
}

static bool via_slack(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                      const kw_agent_t *named, const char *sig, fwd_state_t *st)
{
    const char *via = "slack";
    const char *ts = kw_http_header(req, "x-slack-request-timestamp");
    if (!ts) {
        answer(req, resp, 401, "Missing X-Slack-Request-Timestamp header.", KW__FWD_UNAUTHORIZED,
               via, named->id);
        return false;
    }
    char *end = NULL;
    long long t = strtoll(ts, &end, 10);
    if (!*ts || *end || (ts[0] != '-' && (ts[0] < '0' || ts[0] > '9'))) {
        answer(req, resp, 400, "Invalid X-Slack-Request-Timestamp header value.",
               KW__FWD_BAD_REQUEST, via, named->id);
        return false;
    }
    long long now = (long long)time(NULL);
    if (t > now + 300 || t < now - 300) {
        answer(req, resp, 400, "Slack webhook request has bad timestamp.", KW__FWD_BAD_REQUEST, via,
               named->id);
        return false;
    }
    bool verification = false;
    char *challenge = NULL;
    char *app = slack_app_id(req, &verification, &challenge);
    if (!app) {
        answer(req, resp, 400, "Slack webhook payload missing API app ID.", KW__FWD_BAD_REQUEST,
               via, named->id);
        return false;
    }
    kw_apikey_t k;
    kw_agent_t ag;
    int rc = kw_store_key_find_forward(api->store, kw_str_c(named->name), kw_str_c(app),
                                       KW_STR("slack"), req->arena, &k);
    if (rc == KW_OK)
        rc = key_agent(api, req, &k, &ag);
    if (rc == KW_ENOTFOUND) {
        answer(req, resp, 404,
               kw_arena_sprintf(req->arena, "No API key found for Slack app %s.", app),
               KW__FWD_KEY_NOT_FOUND, via, named->id);
        return false;
    }
    bool ok = false;
    if (rc == KW_OK) {
        size_t n = strlen(sig);
        kw_str_t parts[4] = {KW_STR("v0:"), kw_str_c(ts), KW_STR(":"), req->body};
        if (n > 3 && strncmp(sig, "v0=", 3) == 0)
            rc = key_hmac(api, &k, parts, 4, sig + 3, n - 3, &ok);
    }
    if (rc != KW_OK) {
        kw__fwd_count(KW__FWD_ERROR);
        kw__api_fail(req, resp, rc, "forward slack");
        return false;
    }
    if (!ok) {
        answer(req, resp, 401, "Invalid Slack webhook signature", KW__FWD_UNAUTHORIZED, via, ag.id);
        return false;
    }
    if (verification) {
        /* Slack signs its url_verification too: answered only now, never relayed */
        resp->status = 200;
        resp->content_type = "text/plain";
        if (challenge)
            kw_buf_puts(&resp->body, challenge);
        kw__fwd_count(KW__FWD_CHALLENGE);
        kw_log(KW_LOG_INFO, KW_MODULE,
               "request %s: forward via=slack agent=%s outcome=url_verification status=200",
               req->request_id, ag.id);
        return false;
    }
    char *rid = kw_arena_sprintf(req->arena, "%s:%s", ts, sig);
    if (!rid) {
        kw__api_fail(req, resp, KW_ENOMEM, "forward slack");
        return false;
    }
    if (!claim(api, req, resp, via, &ag, rid))
        return false;
    kw__lastused_record(api->lastused, k.id, wall_us());
    st->target = ag;
    st->via = via;
    return true;
}

/* The presented agent key: X-Agent-API-Key, or Authorization: AgentKey <key>. */
static const char *agent_key_of(kw_http_req_t *req)
{
    const char *k = kw_http_header(req, "x-agent-api-key");
    if (k)
        return k;
    const char *a = kw_http_header(req, "authorization");
    if (a && strncasecmp(a, "AgentKey ", 9) == 0) {
        a += 9;
        while (*a == ' ')
            a++;
        return a;
    }
    return NULL;
}

void kw__api_forward(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    fwd_state_t *st = req->auth;
    if (req->run != KW_HTTP_RUN_FIRST) {
        if (!st) {
            answer(req, resp, 500, NULL, KW__FWD_ERROR, NULL, NULL);
            return;
        }
        if (g_n_threads == 0) {
            /* no relay threads: deferred here, relayed on this pool worker */
            kw__fwd_relay(req, resp, &st->target, st->via);
            atomic_fetch_sub(&inflight, 1);
            return;
        }
        pthread_mutex_lock(&g_done_mu);
        if (!st->done && req->run != KW_HTTP_RUN_DEADLINE) {
            /* woken by something else (every applied revision wakes parked requests) */
            pthread_mutex_unlock(&g_done_mu);
            kw_http_req_park(req, kw_http_req_park_deadline(req));
            return;
        }
        /* done, or the server stops / the deadline passed: the relay ends within its own
         * timeouts; the request must outlive the relay thread's use of it */
        while (!st->woke)
            pthread_cond_wait(&g_done_cv, &g_done_mu);
        pthread_mutex_unlock(&g_done_mu);
        kw_buf_free(&resp->body);
        *resp = st->result;
        atomic_fetch_sub(&inflight, 1);
        return;
    }
    kw_str_t name = req->params[0];
    kw_agent_t named;
    int rc = kw_api_name_valid(name, false)
                 ? kw_store_agent_find_forward(api->store, name, req->arena, &named)
                 : KW_ENOTFOUND;
    if (rc == KW_ENOTFOUND) {
        answer(req, resp, 404,
               kw_arena_sprintf(req->arena, "Agent %.*s not found or has no ACP URL.",
                                KW_STR_FMT(name)),
               KW__FWD_NOT_FOUND, NULL, NULL);
        return;
    }
    if (rc != KW_OK) {
        kw__fwd_count(KW__FWD_ERROR);
        kw__api_fail(req, resp, rc, "forward agent");
        return;
    }
    st = kw_arena_alloc(req->arena, sizeof(*st));
    if (!st) {
        kw__api_fail(req, resp, KW_ENOMEM, "forward");
        return;
    }
    memset(st, 0, sizeof(*st));
    const char *key = agent_key_of(req), *sig;
    bool ok;
    if (key)
        ok = via_agent_key(api, req, resp, &named, key, st);
    else if ((sig = kw_http_header(req, "x-hub-signature-256")))
        ok = via_github(api, req, resp, &named, sig, st);
    else if ((sig = kw_http_header(req, "x-slack-signature")))
        ok = via_slack(api, req, resp, &named, sig, st);
    else {
        answer(req, resp, 403, "Missing authentication for forward request.", KW__FWD_NO_AUTH, NULL,
               named.id);
        return;
    }
    if (!ok)
        return;
    unsigned cap = kw__fwd_settings()->max_inflight;
    if (atomic_fetch_add(&inflight, 1) >= cap) {
        atomic_fetch_sub(&inflight, 1);
        answer(req, resp, 503, "Too many forward requests in flight.", KW__FWD_BUSY, st->via,
               st->target.id);
        return;
    }
    req->auth = st;
    pthread_once(&g_threads_once, threads_start);
    if (g_n_threads == 0) {
        kw_http_req_defer(req);
        return;
    }
    st->req = req;
    kw_buf_init(&st->result.body);
    const kw__fwd_settings_t *set = kw__fwd_settings();
    uint64_t wait_ms = (uint64_t)set->connect_timeout_ms + (uint64_t)set->timeout_ms + 5000;
    kw_http_req_park(req, kw_http_now_ns() + wait_ms * 1000000ull);
    enqueue(st);
}
