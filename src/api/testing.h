/*
 * api/testing.h - `keyward serve-testing` (issue 13, as `spicedb serve-testing`): a registry
 * of throwaway /v1 instances, one per distinct bearer token. The first request that
 * presents `authorization: Bearer <token>` gets a new, empty instance (no schema, no
 * relationships); every later request with the same token reaches that instance and no
 * other. Each instance is the whole /v1 service layer (api/v1svc.h) over its own engine,
 * sync module and a private in-memory SQLite database (kw_store_opts_t.memory_bytes: never
 * written to a file), so revisions, ZedTokens, cursors, Watch, bulk import and export work
 * exactly as under `keyward serve`; nothing survives the process.
 *
 * Bounds (docs/API.md, "serve-testing"): at most max_instances instances (past it a new
 * token is refused with KW_ELIMIT: gRPC RESOURCE_EXHAUSTED, HTTP 429, naming the bound;
 * existing instances keep working) and at most instance_bytes of store per instance (a
 * write past it fails with RESOURCE_EXHAUSTED, "the in-memory database is full"). The
 * graph of an instance holds what its store holds, so the two bound the process's memory.
 * Eviction (off by default; tag-kw-testing-evict): with evict_lru a new token past
 * max_instances drops the least recently used instance that no request is using (its
 * token, if it comes back, gets a new empty instance) instead of being refused; with
 * idle_s, instances no request has used for idle_s seconds are dropped when a new token
 * arrives. An instance in use (a request, a stream, a Watch) is never dropped.
 *
 * Tokens: only a keyed hash of each token is kept (the keyring is made of random keys at
 * kw_api_testing_new); a token is never logged. The token is also the instance's only
 * /v1 preshared key, so the ordinary authentication of both transports lets it in.
 *
 * Ownership: the registry owns its instances; a kw_api_t kw_api_testing_instance hands
 *   out stays valid until the caller gives it back with kw_api_testing_release (every
 *   taking needs one; without eviction it would also stay until kw_api_testing_free).
 *   Strings passed in are borrowed for the call.
 * Threads: every function may be called from any thread, except kw_api_testing_free
 *   (after the servers stopped). Creating an instance holds the registry's mutex (a leaf
 *   above the sync and store locks of the instance being made, never held by a request).
 * Errors: KW_OK or a negative KW_E*, with a client-safe message in diag.
 */
#ifndef KW_API_TESTING_H
#define KW_API_TESTING_H

#include "api.h"

#define KW_TESTING_MAX_INSTANCES 256u
#define KW_TESTING_INSTANCE_BYTES (64u << 20) /* 64 MiB of store per instance */

typedef struct kw_api_testing_config {
    size_t max_instances;  /* 0: KW_TESTING_MAX_INSTANCES */
    size_t instance_bytes; /* 0: KW_TESTING_INSTANCE_BYTES; at least 1 MiB */
    bool evict_lru;        /* full: drop the least recently used idle instance (LRU) */
    unsigned idle_s;       /* 0: never; else drop instances unused this many seconds */
} kw_api_testing_config_t;

typedef struct kw_api_testing kw_api_testing_t;

/* cfg may be NULL (defaults). KW_EINVAL (instance_bytes below 1 MiB), KW_ENOMEM. */
KW_NODISCARD int kw_api_testing_new(const kw_api_testing_config_t *cfg, kw_api_testing_t **out,
                                    kw_diag_t *diag);
/* Frees every instance (their watches must have ended: kw_api_testing_serve_on(t, NULL)). */
void kw_api_testing_free(kw_api_testing_t *t);

/* The instance of `authorization` (the header's value, "Bearer <token>", the scheme in any
 * case), made on first use: KW_OK with *api; KW_EAUTH (absent or not a bearer token);
 * KW_ELIMIT (a new token past max_instances); KW_ENOMEM, KW_EDB (making it failed). */
KW_NODISCARD int kw_api_testing_instance(kw_api_testing_t *t, const char *authorization,
                                         kw_api_t **api, kw_diag_t *diag);
/* Gives back an instance kw_api_testing_instance (or _resolve) handed out: it is idle
 * again once every taker gave it back. _cb: the same as kw_grpc_config_t.release. */
void kw_api_testing_release(kw_api_testing_t *t, kw_api_t *api);
void kw_api_testing_release_cb(void *ud, kw_api_t *api);
/* Instances there now. */
size_t kw_api_testing_count(kw_api_testing_t *t);
/* Instances dropped so far (evict_lru, idle_s). */
uint64_t kw_api_testing_evicted(kw_api_testing_t *t);

/* The HTTP server that serves the gateway (kw_api_serve_on for every instance, those made
 * later too); NULL before stopping it (ends every watch). */
void kw_api_testing_serve_on(kw_api_testing_t *t, kw_http_server_t *srv);

/* The HTTP gateway of serve-testing: the /v1 routes of kw_api_routes and /healthz, each
 * run on the instance of the request's token. Use with kw_http_config_t.ud = the registry,
 * .on_headers = kw_api_testing_on_headers, .error_fn = kw_api_http_error. The table is
 * static storage (*n its length). */
const kw_http_route_t *kw_api_testing_routes(size_t *n);
bool kw_api_testing_on_headers(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

/* For the gRPC server's resolve hook (kw_grpc_config_t.resolve, ud = the registry; its
 * release hook is kw_api_testing_release_cb): the instance of `authorization`, taken as
 * kw_api_testing_instance takes it, or the status to answer (UNAUTHENTICATED, RESOURCE_EXHAUSTED,
 * UNAVAILABLE) with KW_E*. The _readonly hook serves the read-only port (as SpiceDB's
 * serve-testing on :50052: the same instances): a method that writes (WriteRelationships,
 * DeleteRelationships, WriteSchema, ImportBulkRelationships and its experimental alias
 * BulkImportRelationships; tag-kw-testing-writes) is refused UNAVAILABLE "service
 * read-only" with ERROR_REASON_SERVICE_READ_ONLY, as SpiceDB answers it, and makes no
 * instance. */
typedef struct kw_v1_status kw_v1_status_t;
KW_NODISCARD int kw_api_testing_resolve(void *ud, const char *path, const char *authorization,
                                        kw_api_t **api, kw_v1_status_t *st);
KW_NODISCARD int kw_api_testing_resolve_readonly(void *ud, const char *path,
                                                 const char *authorization, kw_api_t **api,
                                                 kw_v1_status_t *st);
/* Does the gRPC method `path` write (the list above)? */
bool kw_api_testing_is_write(const char *path);

#endif
