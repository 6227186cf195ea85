/*
 * api/testing.c - the instance registry of `keyward serve-testing` (api/testing.h) and its
 * hooks into the two transports: the gRPC server's resolve callback and an HTTP route
 * table whose every route first finds the request's instance.
 *
 * The registry is an array of instances searched by the keyed hash of their token (a
 * few hundred at most: a linear scan of 32-byte hashes is cheaper than the RPC's own
 * decoding). Each instance counts the requests that use it (kw_api_testing_instance takes
 * one, kw_api_testing_release gives it back) and remembers when it was last taken.
 * Eviction (tag-kw-testing-evict, off by default) only ever drops an instance no request
 * uses, so a kw_api_t handed out never goes away under its request: with evict_lru, a new
 * token past max_instances drops the least recently used idle instance instead of being
 * refused; with idle_s, instances unused that long are dropped whenever a new token comes.
 * A dropped token that comes back gets a new, empty instance.
 *
 * Lock: t->mu guards the array, its count and t->http. It is held while an instance is
 * made (opening its in-memory store, starting its threads), which takes only that new
 * instance's locks; no request holds it while it runs.
 */
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "api_int.h"
#include "testing.h"
#include "v1svc.h"
#include "base/log.h"

#define KW_MODULE "testing"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef struct instance {
    uint8_t hash[KW_KEY_HASH_LEN]; /* the token's, under t->keyring */
    kw_store_t *store;
    kw_engine_t *engine;
    kw_sync_t *sync;
    kw_api_t *api;
    unsigned refs;    /* requests using it now (under t->mu) */
    uint64_t last_ns; /* when it was last taken (monotonic) */
} instance_t;

struct kw_api_testing {
    kw_api_testing_config_t cfg;
    kw_keyring_t *keyring; /* random keys: cursors' MACs and the tokens' hashes */
    pthread_mutex_t mu;
    instance_t *inst; /* cfg.max_instances slots */
    size_t n;
    kw_http_server_t *http;
    uint64_t evicted; /* instances dropped so far */
};

int kw_api_testing_new(const kw_api_testing_config_t *cfg, kw_api_testing_t **out, kw_diag_t *diag)
{
    kw_api_testing_config_t c = {0, 0, false, 0};
    if (cfg)
        c = *cfg;
    if (!c.max_instances)
        c.max_instances = KW_TESTING_MAX_INSTANCES;
    if (!c.instance_bytes)
        c.instance_bytes = KW_TESTING_INSTANCE_BYTES;
    if (c.instance_bytes < ((size_t)1 << 20))
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "an instance needs at least 1 MiB");
    if (sodium_init() < 0)
        return kw_diag_set(diag, KW_EINTERNAL, 0, 0, "libsodium did not initialize");
    kw_api_testing_t *t = kw_calloc(1, sizeof(*t));
    if (!t)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    t->cfg = c;
    uint8_t secret[32], master[32];
    randombytes_buf(secret, sizeof(secret));
    randombytes_buf(master, sizeof(master));
    int rc = kw_keyring_new((kw_str_t){(const char *)secret, sizeof(secret)},
                            (kw_str_t){(const char *)master, sizeof(master)}, &t->keyring);
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(master, sizeof(master));
    if (rc != KW_OK)
        goto fail_keyring;
    rc = KW_ENOMEM;
    t->inst = kw_calloc(c.max_instances, sizeof(*t->inst));
    if (!t->inst)
        goto fail_inst;
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        rc = KW_EINTERNAL;
        goto fail_mu;
    }
    *out = t;
    return KW_OK;
fail_mu:
    kw_free(t->inst);
fail_inst:
    kw_keyring_free(t->keyring);
fail_keyring:
    kw_free(t);
    return kw_diag_set(diag, rc, 0, 0, "cannot set up the instance registry: %s", kw_strerror(rc));
}

/* Tears one instance down in the reverse of make_instance (NULL members skipped). */
static void instance_free(instance_t *in)
{
    kw_api_free(in->api);
    if (in->sync) {
        kw_sync_stop(in->sync);
        kw_sync_free(in->sync);
    }
    if (in->engine)
        kw_engine_free(in->engine);
    if (in->store)
        kw_store_close(in->store);
    memset(in, 0, sizeof(*in));
}

void kw_api_testing_free(kw_api_testing_t *t)
{
    if (!t)
        return;
    for (size_t i = t->n; i-- > 0;)
        instance_free(&t->inst[i]);
    pthread_mutex_destroy(&t->mu);
    kw_free(t->inst);
    kw_keyring_free(t->keyring);
    kw_free(t);
}

/* A new, empty instance: an in-memory store, an engine without a schema, its sync module
 * (no expiry sweeper: queries hide expired relationships by themselves, and a thread per
 * instance less), and the service layer whose one preshared key is the token. */
static int make_instance(kw_api_testing_t *t, const uint8_t hash[KW_KEY_HASH_LEN], instance_t *in,
                         kw_diag_t *diag)
{
    memset(in, 0, sizeof(*in));
    memcpy(in->hash, hash, KW_KEY_HASH_LEN);
    kw_store_opts_t so = {.memory_bytes = t->cfg.instance_bytes};
    int rc = kw_store_open_with("sqlite::memory:", &so, &in->store, diag);
    if (rc != KW_OK)
        goto fail;
    kw_sync_config_t sc;
    kw_sync_config_default(&sc);
    sc.sweep_interval_s = 0;
    if ((rc = kw_engine_new(&in->engine)) != KW_OK ||
        (rc = kw_sync_new(in->engine, in->store, &sc, &in->sync)) != KW_OK)
        goto fail;
    kw_engine_set_history(in->engine, (int64_t)KW_HISTORY_WINDOW_S * 1000000,
                          KW_HISTORY_MAX_CHANGES, KW_HISTORY_SNAPSHOTS,
                          (size_t)KW_HISTORY_SNAPSHOT_MB << 20);
    /* Nothing to load: the store is new (revision 0) and the engine has no schema yet,
     * which is what ReadSchema reports until the first WriteSchema. */
    if ((rc = kw_sync_start(in->sync, diag)) != KW_OK)
        goto fail;
    if ((rc = kw_api_new(in->engine, in->store, t->keyring, in->sync, &in->api)) != KW_OK)
        goto fail;
    in->api->v1_keys = kw_malloc(sizeof(*in->api->v1_keys));
    if (!in->api->v1_keys) {
        rc = KW_ENOMEM;
        goto fail;
    }
    memcpy(in->api->v1_keys[0], hash, KW_KEY_HASH_LEN);
    in->api->n_v1_keys = 1;
    return KW_OK;
fail:
    instance_free(in);
    kw_log(KW_LOG_ERROR, KW_MODULE, "cannot make an instance: %s", kw_strerror(rc));
    return kw_diag_set(diag, rc == KW_ENOMEM ? KW_ENOMEM : KW_EDB, 0, 0,
                       "cannot make a new instance (see the log)");
}

/* Drops instance i (no request uses it), under t->mu: the last one takes its slot. */
static void evict(kw_api_testing_t *t, size_t i, const char *why)
{
    kw_api_serve_on(t->inst[i].api, NULL);
    instance_free(&t->inst[i]);
    if (i != t->n - 1)
        t->inst[i] = t->inst[t->n - 1];
    memset(&t->inst[t->n - 1], 0, sizeof(t->inst[0]));
    t->n--;
    t->evicted++;
    kw_log(KW_LOG_INFO, KW_MODULE, "instance dropped (%s); %zu left", why, t->n);
}

/* Before a new instance is made, under t->mu: drops the idle ones past cfg.idle_s, then,
 * when the registry is full and cfg.evict_lru, the least recently used one not in use. */
static void make_room(kw_api_testing_t *t)
{
    uint64_t now = mono_ns();
    if (t->cfg.idle_s)
        for (size_t i = t->n; i-- > 0;)
            if (t->inst[i].refs == 0 &&
                now - t->inst[i].last_ns >= (uint64_t)t->cfg.idle_s * 1000000000ull)
                evict(t, i, "idle");
    if (t->n < t->cfg.max_instances || !t->cfg.evict_lru)
        return;
    size_t lru = t->n;
    for (size_t i = 0; i < t->n; i++)
        if (t->inst[i].refs == 0 && (lru == t->n || t->inst[i].last_ns < t->inst[lru].last_ns))
            lru = i;
    if (lru < t->n)
        evict(t, lru, "least recently used");
}

/* "Bearer <token>" -> the token: the scheme in any case, blanks around it skipped, as
 * kw_api_v1_authorize reads it (the same token must name the same instance there). */
static bool bearer_token(const char *authorization, kw_str_t *tok)
{
    const char *p = authorization ? authorization : "";
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "bearer ", 7) != 0)
        return false;
    p += 7;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    *tok = (kw_str_t){p, n};
    return n > 0;
}

int kw_api_testing_instance(kw_api_testing_t *t, const char *authorization, kw_api_t **api,
                            kw_diag_t *diag)
{
    kw_str_t tok;
    if (!bearer_token(authorization, &tok))
        return kw_diag_set(diag, KW_EAUTH, 0, 0,
                           "serve-testing needs `authorization: Bearer <token>`: each token "
                           "names its own instance");
    uint8_t h[KW_KEY_HASH_LEN];
    kw_key_hash(t->keyring, tok, h);
    int rc = KW_OK;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++) {
        if (kw_key_hash_eq(h, t->inst[i].hash)) {
            t->inst[i].refs++;
            t->inst[i].last_ns = mono_ns();
            *api = t->inst[i].api;
            goto out;
        }
    }
    make_room(t);
    if (t->n == t->cfg.max_instances) {
        rc = kw_diag_set(diag, KW_ELIMIT, 0, 0,
                         t->cfg.evict_lru
                             ? "serve-testing holds its maximum of %zu instances (one per "
                               "token), every one in use; retry when one is idle"
                             : "serve-testing holds its maximum of %zu instances (one per "
                               "token); restart it, raise --max-instances or use --evict-lru",
                         t->cfg.max_instances);
        goto out;
    }
    rc = make_instance(t, h, &t->inst[t->n], diag);
    if (rc != KW_OK)
        goto out;
    if (t->http)
        kw_api_serve_on(t->inst[t->n].api, t->http);
    t->inst[t->n].refs = 1;
    t->inst[t->n].last_ns = mono_ns();
    *api = t->inst[t->n++].api;
    kw_log(KW_LOG_INFO, KW_MODULE, "instance %zu made for a new token", t->n);
out:
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void kw_api_testing_release(kw_api_testing_t *t, kw_api_t *api)
{
    if (!t || !api)
        return;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        if (t->inst[i].api == api) {
            if (t->inst[i].refs > 0)
                t->inst[i].refs--;
            t->inst[i].last_ns = mono_ns();
            break;
        }
    pthread_mutex_unlock(&t->mu);
}

void kw_api_testing_release_cb(void *ud, kw_api_t *api)
{
    kw_api_testing_release(ud, api);
}

uint64_t kw_api_testing_evicted(kw_api_testing_t *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t n = t->evicted;
    pthread_mutex_unlock(&t->mu);
    return n;
}

size_t kw_api_testing_count(kw_api_testing_t *t)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}

void kw_api_testing_serve_on(kw_api_testing_t *t, kw_http_server_t *srv)
{
    pthread_mutex_lock(&t->mu);
    t->http = srv;
    for (size_t i = 0; i < t->n; i++)
        kw_api_serve_on(t->inst[i].api, srv);
    pthread_mutex_unlock(&t->mu);
}

/* The methods that change an instance (tag-kw-testing-writes: a new writing RPC in
 * src/grpc/rpc.c's table belongs here and in testing.h). */
bool kw_api_testing_is_write(const char *path)
{
    static const char *const writes[] = {
        "/authzed.api.v1.PermissionsService/WriteRelationships",
        "/authzed.api.v1.PermissionsService/DeleteRelationships",
        "/authzed.api.v1.PermissionsService/ImportBulkRelationships",
        "/authzed.api.v1.SchemaService/WriteSchema",
        "/authzed.api.v1.ExperimentalService/BulkImportRelationships",
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(writes); i++)
        if (path && strcmp(path, writes[i]) == 0)
            return true;
    return false;
}

int kw_api_testing_resolve_readonly(void *ud, const char *path, const char *authorization,
                                    kw_api_t **api, kw_v1_status_t *st)
{
    if (kw_api_testing_is_write(path))
        return kw_v1_fail(st, KW_EFORBIDDEN, KW_GRPC_UNAVAILABLE, "ERROR_REASON_SERVICE_READ_ONLY",
                          "service read-only");
    return kw_api_testing_resolve(ud, path, authorization, api, st);
}

int kw_api_testing_resolve(void *ud, const char *path, const char *authorization, kw_api_t **api,
                           kw_v1_status_t *st)
{
    (void)path;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_api_testing_instance(ud, authorization, api, &d);
    switch (rc) {
    case KW_OK:
        return KW_OK;
    case KW_EAUTH:
        return kw_v1_fail(st, rc, KW_GRPC_UNAUTHENTICATED, NULL, "%s", d.msg);
    case KW_ELIMIT:
    case KW_ENOMEM:
        return kw_v1_fail(st, rc, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "%s", d.msg);
    default:
        return kw_v1_fail(st, rc, KW_GRPC_UNAVAILABLE, NULL, "%s", d.msg);
    }
}

/* ---- the HTTP gateway ----
 * The table is the /v1 routes of kw_api_routes (and /healthz), built once; each route's
 * handler is route_run, and its flags carry the index of the api route it stands for
 * above KW__ROUTE_PUBLIC's bit (tag-kw-testing-route-index). */

#define ROUTES_MAX 96
#define ROUTE_SHIFT 8

static kw_http_route_t g_routes[ROUTES_MAX];
static size_t g_n_routes;
static pthread_once_t g_routes_once = PTHREAD_ONCE_INIT;

static void route_run(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

static void routes_build(void)
{
    size_t n = 0;
    const kw_http_route_t *r = kw_api_routes(&n);
    for (size_t i = 0; i < n && g_n_routes < ROUTES_MAX; i++) {
        if (strncmp(r[i].pattern, "/v1/", 4) != 0 && strcmp(r[i].pattern, "/healthz") != 0)
            continue;
        g_routes[g_n_routes] = r[i];
        g_routes[g_n_routes].fn = route_run;
        g_routes[g_n_routes].flags = r[i].flags | ((unsigned)i << ROUTE_SHIFT);
        g_n_routes++;
    }
}

const kw_http_route_t *kw_api_testing_routes(size_t *n)
{
    pthread_once(&g_routes_once, routes_build);
    *n = g_n_routes;
    return g_routes;
}

/* The request's instance, or the answer written (false). */
static bool request_instance(kw_api_testing_t *t, kw_http_req_t *req, kw_http_resp_t *resp,
                             kw_api_t **api)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_api_testing_instance(t, kw_http_header(req, "authorization"), api, &d);
    if (rc == KW_OK)
        return true;
    int status = rc == KW_EAUTH ? 401 : rc == KW_ELIMIT || rc == KW_ENOMEM ? 429 : 503;
    kw__api_v1_error(resp, status, d.msg);
    return false;
}

bool kw_api_testing_on_headers(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = NULL;
    if (req->route_flags & KW__ROUTE_PUBLIC)
        return true;
    if (!request_instance(ud, req, resp, &api))
        return false;
    bool go = kw_api_on_headers(req, resp, api);
    kw_api_testing_release(ud, api);
    return go;
}

static void route_run(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    size_t n = 0;
    const kw_http_route_t *r = kw_api_routes(&n);
    size_t idx = req->route_flags >> ROUTE_SHIFT;
    kw_api_t *api = NULL;
    if (idx >= n) { /* cannot happen: routes_build wrote it */
        kw__api_v1_error(resp, 500, KW__MSG_INTERNAL);
        return;
    }
    if (req->route_flags & KW__ROUTE_PUBLIC) {
        r[idx].fn(req, resp, NULL);
        return;
    }
    if (request_instance(ud, req, resp, &api)) {
        r[idx].fn(req, resp, api); /* a stream runs (and ends) within: the instance is used */
        kw_api_testing_release(ud, api);
    }
}
