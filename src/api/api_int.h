/*
 * api/api_int.h - internals shared by the files of the api module (not a public header).
 *
 * Ownership: a kw__principal_t lives in the request arena. Everything a handler builds
 *   comes from req->arena except scratch arenas it creates and frees itself.
 * Threads: kw_api_t's counters are relaxed atomics. Every write goes through the sync
 *   module's write path (sync/sync.h, which also holds the lock order).
 */
#ifndef KW_API_API_INT_H
#define KW_API_API_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>

#include "api.h"

/* lastused.c: a key's last use, coalesced in memory, flushed in batches. */
typedef struct kw__lastused kw__lastused_t;
/* verify.c: per-caller and per-prefix counters of invalid /auth/verify attempts. */
typedef struct kw__ratelimit kw__ratelimit_t;

struct kw_api {
    kw_engine_t *engine;
    kw_store_t *store;
    const kw_keyring_t *keyring;
    kw_sync_t *sync; /* the graph's coherence with the store and the write path */
    /* The HTTP server whose parked requests wait for revisions (kw_api_serve_on), and the
     * lock that keeps it alive while the sync module's change hook wakes it (taken after
     * any sync lock, before the server's own leaf lock). */
    pthread_mutex_t http_mu;
    kw_http_server_t *http;
    _Atomic uint64_t checks_allowed;
    _Atomic uint64_t checks_denied;
    _Atomic uint64_t checks_error;
    /* Rows the list routes read from the store (agents.c, keys_routes.c): what a page
     * costs, for /metrics (keyward_list_rows_loaded_total). */
    _Atomic uint64_t list_rows_agents;
    _Atomic uint64_t list_rows_keys;
    /* Issue 14: last uses (lastused.c) and POST /auth/verify (verify.c). */
    kw__lastused_t *lastused;
    kw__ratelimit_t *verify_limits;
    _Atomic uint64_t verify_valid, verify_invalid, verify_limited_service, verify_limited_prefix;
    /* /v1 preshared keys as keyed hashes (v1.c, kw_api_set_v1_preshared_keys). */
    uint8_t (*v1_keys)[KW_KEY_HASH_LEN];
    size_t n_v1_keys;
    /* /v1 Watch's hub (sync/watch.c): made by kw_api_new, poked by the sync change hook,
     * its watches ended by kw_api_serve_on(api, NULL) before the server drains. */
    kw_watch_hub_t *watch;
};

/* The messages of the contract (tag-kw-api-messages: docs/API.md lists them). */
#define KW__MSG_AGENT_404 "Agent not found."
#define KW__MSG_KEY_404 "Agent api_key not found."
#define KW__MSG_UNAUTH "Unauthorized"
#define KW__MSG_DB "Database unavailable"
#define KW__MSG_INTERNAL "Internal server error"

/* A UUIDv7 that kw_api_uuid_v7 never makes (its time is the epoch): the object of the
 * `read` check that the by-name routes still run for a name that does not exist, so an
 * absent name costs the same work as an unreadable one (agents.c, keys_routes.c). */
#define KW__DECOY_ID "00000000-0000-7000-8000-000000000000"

typedef enum {
    KW__PRINCIPAL_USER = 1,
    KW__PRINCIPAL_SERVICE_ACCOUNT,
    KW__PRINCIPAL_AGENT,
} kw__principal_kind_t;

typedef struct kw__principal {
    kw__principal_kind_t kind;
    kw_subject_t subject;     /* user:<sub> / service_account:<sub> / agent:<id> */
    const char *subject_text; /* "user:alice" (for logs and nothing secret) */
    kw_str_t account;         /* selected account; len 0 = none */
    bool has_account;
    bool admin; /* JWT claim admin: true */
    /* An agent key's principal: the key's row id ("" otherwise), and whether the key
     * authenticated with its previous secret during a rotation's grace. */
    char key_id[37];
    bool key_in_grace;
} kw__principal_t;

/* kw_http_route_t.flags: the route answers without credentials (no on_headers auth). */
#define KW__ROUTE_PUBLIC 1u

/* ---- errors.c ---- */
/* Is the raw path under /v1 (SpiceDB's gateway error shape)? */
bool kw__api_is_v1_path(kw_str_t path);
/* {"detail": msg, "code": <gRPC code for status>, "message": msg}. */
void kw__api_v1_error(kw_http_resp_t *resp, int status, const char *msg);

/* ---- v1.c ---- */
/* Is cred one of the /v1 preshared keys? Constant time in the keys and their lengths. */
bool kw__v1_preshared(kw_api_t *api, kw_str_t cred);

/* ---- auth.c ---- */
/* Authenticates the request (or takes what kw_api_on_headers already found: req->auth).
 * On failure writes the 401 (or 503 when the database is down) into resp and returns
 * false. Sets req->log_subject. */
bool kw__api_auth(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, kw__principal_t *p);

/* The principal of an internal/external key (no request involved; verify.c uses it for a
 * caller's credentials): KW_OK; KW_EAUTH (unknown, not internal/external, expired, the
 * previous secret after its grace, agent gone: one answer); or a store error. Records the
 * use (lastused.c) on success. Strings come from `a`. */
int kw__api_principal_of_key(kw_api_t *api, kw_arena_t *a, kw_str_t key, kw__principal_t *p);
/* The principal of a bearer token, its account from the `account` claim only: KW_OK or
 * KW_EAUTH (diag says why, for the log). */
int kw__api_principal_of_token(kw_api_t *api, kw_arena_t *a, kw_str_t token, kw__principal_t *p,
                               kw_diag_t *diag);

/* ---- lastused.c ---- */
/* Starts the flush thread (interval: env KEYWARD_LAST_USED_FLUSH_MS, default 5000 ms). */
int kw__lastused_new(kw_store_t *store, kw__lastused_t **out);
/* Stops the thread and flushes what is pending. */
void kw__lastused_free(kw__lastused_t *lu);
/* Records a use (keeps the later time); never blocks on the database. */
void kw__lastused_record(kw__lastused_t *lu, const char *key_id, int64_t at_us);
/* The pending (not yet flushed) last use of a key, 0 if none. */
int64_t kw__lastused_pending(kw__lastused_t *lu, const char *key_id);
/* Writes everything pending now (the thread's work; tests and shutdown call it too). */
int kw__lastused_flush(kw__lastused_t *lu);
void kw__lastused_metrics(kw__lastused_t *lu, kw_buf_t *out);

/* ---- verify.c ---- */
int kw__ratelimit_new(kw__ratelimit_t **out);
void kw__ratelimit_free(kw__ratelimit_t *rl);
void kw__api_verify_metrics(kw_api_t *api, kw_buf_t *out);

/* ---- common.c ---- */
static inline kw_api_t *kw__api_of(void *ud)
{
    return (kw_api_t *)ud;
}
/* Answers an error code: KW_EDB/KW_ETIMEOUT/KW_EPRUNED -> 503 Database unavailable; else
 * -> 500 (logged with the request id). */
void kw__api_fail(kw_http_req_t *req, kw_http_resp_t *resp, int rc, const char *what);
/* Parses the body as a JSON object. On failure answers 422 and returns NULL. The caller
 * json_decref()s the result. */
json_t *kw__api_body(kw_http_req_t *req, kw_http_resp_t *resp);
/* An optional string member: absent or null -> *present=false. Wrong type -> false. */
bool kw__api_json_str(json_t *obj, const char *key, kw_str_t *out, bool *present);
/* limit (1..1000, default 50) and page_number (>= 1, default 1). false -> 422 written. */
bool kw__api_page(kw_http_req_t *req, kw_http_resp_t *resp, long *limit, long *page);
/* Does the principal have `perm` on type:id? Counts the check in the metrics. A malformed
 * object (KW_EINVAL) is a denial; other failures return their code (fail closed). */
int kw__api_can(kw_api_t *api, const kw__principal_t *p, const char *type, kw_str_t id,
                const char *perm, bool *allowed, kw_revision_t *rev);
/* Adds X-Keyward-Revision: rev (arena string). */
void kw__api_revision(kw_http_req_t *req, kw_http_resp_t *resp, kw_revision_t rev);
void kw__api_agent_json(kw_buf_t *out, const kw_agent_t *ag);
/* The key object (docs/API.md): with `secret` when given (create, rotate). last_used_at is
 * the later of the row's and this instance's pending use (kw__api_key_json_live). */
void kw__api_key_json(kw_buf_t *out, const kw_apikey_t *k, kw_str_t secret);
/* kw__api_key_json after merging this instance's pending last use into the row's. */
void kw__api_key_json_live(kw_api_t *api, kw_buf_t *out, const kw_apikey_t *k, kw_str_t secret);
/* A JSON string body (the delete messages). */
void kw__api_string_body(kw_http_resp_t *resp, const char *msg);
/* `/agents/name` and `/agent_api_keys/name` are the by-name routes without their name:
 * answered as the unknown route they are (the router's 404), before authentication. */
bool kw__api_reserved_id(kw_http_req_t *req, kw_http_resp_t *resp);
/* The longest acp_url (bytes). */
#define KW__ACP_URL_MAX 2048
/* An agent's acp_url: an absolute http:// or https:// URL with a host, printable ASCII, no
 * userinfo and no fragment, at most KW__ACP_URL_MAX bytes. */
bool kw__api_acp_url_ok(kw_str_t url);
/* Copies `str` into the arena, NUL-terminated; NULL on OOM. */
char *kw__api_cstr(kw_arena_t *a, kw_str_t str);

/* ---- the sync module, as the routes call it (sync/sync.h) ---- */
/* The write path with group commit: kw_sync_write. */
#define KW__WRITE_ALONE KW_SYNC_WRITE_ALONE
typedef kw_sync_tx_fn kw__api_tx_fn;
KW_NODISCARD static inline int kw__api_write(kw_api_t *api, kw__api_tx_fn fn, void *ud,
                                             unsigned flags, kw_revision_t *rev, kw_diag_t *diag)
{
    return kw_sync_write(api->sync, fn, ud, flags, rev, diag);
}
/* The store revision the graph reflects: kw_sync_applied. */
static inline kw_revision_t kw__api_applied(kw_api_t *api)
{
    return kw_sync_applied(api->sync);
}
/* Inside a write's fn: the graph catches up to the committed state (kw_sync_catch_up). */
KW_NODISCARD static inline int kw__api_catch_up(kw_api_t *api, kw_diag_t *diag)
{
    return kw_sync_catch_up(api->sync, diag);
}
/* Waits for a presented revision (kw_sync_await): KW_OK; KW_ETIMEOUT; KW_EDB (not fresh);
 * KW_EINVAL, at once: min is beyond the store's current revision. */
KW_NODISCARD static inline int kw__api_await(kw_api_t *api, kw_revision_t min, bool full)
{
    return kw_sync_await(api->sync, min, full);
}
/* The same decision without holding the thread (common.c): KW_OK, KW_EINVAL, KW_EDB,
 * KW_ETIMEOUT as kw__api_await; or KW_EAGAIN, having PARKED req until the revision is
 * applied or freshness_ms passed: the handler must return at once without answering (it
 * runs again, req->run saying why, and calls this again). */
KW_NODISCARD int kw__api_await_parked(kw_api_t *api, kw_http_req_t *req, kw_revision_t min,
                                      bool full);

/* ---- id lists (common.c) ---- */
/* A growing list of ids copied into arena memory, for the engine's lookup callbacks: the
 * array is kw_realloc'd (kw_free(l.ids) when done), each id copied into l.a. rc holds the
 * first failure (KW_ENOMEM). */
typedef struct kw__api_ids {
    kw_arena_t *a;
    kw_str_t *ids;
    size_t n, cap;
    int rc;
} kw__api_ids_t;
/* Appends a copy of id: 0 to go on, 1 (l->rc = KW_ENOMEM) to stop a lookup. */
int kw__api_ids_add(kw__api_ids_t *l, kw_str_t id);

/* ---- freshness over HTTP (common.c) ---- */
/* Request header X-Keyward-Revision (absent: *min = 0). false: malformed (nothing written). */
bool kw__api_presented(kw_http_req_t *req, kw_revision_t *min);
/* For every data route, right after authentication: 422 for a malformed
 * X-Keyward-Revision or one beyond the store's current revision, 503 "Revision not yet available"
 * after the bounded wait, 503 "Database unavailable" when not fresh. false: the answer is written.
 */
bool kw__api_fresh(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp);

#define KW__MSG_REV_LATE "Revision not yet available"
#define KW__MSG_REV_BAD "X-Keyward-Revision must be a decimal revision number."
#define KW__MSG_REV_AHEAD "X-Keyward-Revision is ahead of every committed revision."

/* ---- audit.c: the audit event of a mutation (tag-kw-api-audit) ----
 * The handler builds the event before its write (strings in the request arena; a build
 * failure is kept in rc), the write's transaction callback appends it after the change
 * (kw__api_audit_append): both commit or neither. */
typedef struct kw__audit {
    const char *action; /* static: "agent.create", "key.delete", ... */
    kw_str_t actor, request_id, resource, account, detail;
    int rc; /* KW_OK, or the build's failure (then the append fails with it) */
} kw__audit_t;
void kw__api_audit_agent(kw__audit_t *au, kw_http_req_t *req, const char *action,
                         const kw_agent_t *ag);
void kw__api_audit_key(kw__audit_t *au, kw_http_req_t *req, const char *action,
                       const kw_apikey_t *k, const char *account);
/* The key.delete of key `key_id` that an agent's deletion (`parent`, its event) took with
 * it: same actor, request and account, detail {"id", "agent_id", "via": parent's action}. */
void kw__api_audit_key_cascade(kw__audit_t *au, kw_http_req_t *req, const kw__audit_t *parent,
                               kw_str_t key_id, kw_str_t agent_id);
/* The event of `action` on the stored agent / key `id` (its row read now, the key's
 * account through its agent). KW_ENOTFOUND when the row is gone; store errors as is. */
KW_NODISCARD int kw__api_audit_for_agent(kw_api_t *api, kw_http_req_t *req, const char *action,
                                         kw_str_t id, kw__audit_t *au);
KW_NODISCARD int kw__api_audit_for_key(kw_api_t *api, kw_http_req_t *req, const char *action,
                                       kw_str_t id, kw__audit_t *au);
/* detail (stolen; NULL = out of memory) becomes the event's "what changed". */
void kw__api_audit_detail(kw__audit_t *au, kw_http_req_t *req, json_t *detail);
/* Adds member `name` = value (stolen) to the detail built so far (e.g. a rotation's grace). */
void kw__api_audit_add(kw__audit_t *au, kw_http_req_t *req, const char *name, json_t *value);
typedef struct kw_v1_caller kw_v1_caller_t;
void kw__api_audit_schema(kw__audit_t *au, const kw_v1_caller_t *who, kw_str_t text);
/* Inside a write's transaction, after its change. */
KW_NODISCARD int kw__api_audit_append(kw_store_tx_t *tx, const kw__audit_t *au, kw_diag_t *diag);
/* ---- keys_routes.c: a new key in one transaction (POST /agent_api_keys, webhook
 * triggers): its row, its three relationships (parent agent, account, owner) and its
 * key.create audit event commit together or not at all. ---- */
typedef struct kw__key_new {
    const kw_apikey_t *key; /* borrowed, with the strings the relationships point into */
    kw_update_t ups[3];
    kw__audit_t au; /* the caller may add to its detail before the write */
} kw__key_new_t;
/* Fills kn for `key` (id and agent_id set) in account `account_id`, owned by `owner`
 * (borrowed until the write). false when the schema refuses the relationships (the
 * owner's subject type may not own a key): the caller answers 403. */
bool kw__api_key_new(kw_api_t *api, kw_http_req_t *req, const kw_apikey_t *key,
                     const char *account_id, kw_subject_t owner, kw__key_new_t *kn);
/* Writes it (kw__api_write's errors; KW_ECONFLICT / KW_EEXISTS on a unique index). */
KW_NODISCARD int kw__api_key_new_write(kw_api_t *api, kw__key_new_t *kn, kw_revision_t *rev,
                                       kw_diag_t *diag);
/* kw__api_audit_append as a kw_sync_tx_fn (ud = the kw__audit_t): the schema write's. */
int kw__api_audit_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag);
/* A /v1 relationship write (ups) or delete (del, with what it deleted), built and appended. */
KW_NODISCARD int kw__api_audit_v1_rels(kw_store_tx_t *tx, const kw_v1_caller_t *who,
                                       const kw_update_t *ups, size_t n, const kw_filter_t *del,
                                       size_t n_deleted, kw_diag_t *diag);

/* ---- route handlers ---- */
void kw__api_agents_create(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_get(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_get_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_list(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_patch(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
/* webhook.c, forward.c (issue 16) */
void kw__api_webhook_trigger(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_forward(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

void kw__api_keys_create(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_list(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_get(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_get_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_delete_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_rotate(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_auth_verify(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

/* ---- list cursors (common.c) ---- */
/* The `cursor` query parameter of a list route: *has = present (even empty); an empty one
 * asks for the first page (*pos_len = 0). A cursor names a position in ONE list: it is
 * sealed (keys.h, kw_cursor_seal) to `scope` (the route, the listed object, the caller).
 * false: 422 written (a forged, edited or foreign cursor; page_number next to a cursor). */
bool kw__api_cursor_in(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, kw_str_t scope,
                       bool *has, uint8_t *pos, size_t cap, size_t *pos_len);
/* Seals `pos` for `scope` and adds it as X-Next-Cursor. KW_OK or an error (answer 500). */
int kw__api_cursor_out(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, kw_str_t scope,
                       kw_str_t pos);

void kw__api_healthz(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_readyz(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_metrics_route(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_openapi(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

void kw__api_v1_rel_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_rel_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_rel_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_check(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_checkbulk(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_resources(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_subjects(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_expand(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_schema_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_schema_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
/* v1_more.c (the RPCs of v1svc_more.h) */
void kw__api_v1_reflect(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_computable(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_dependent(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_diff(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_watch(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_export(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_v1_import(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

void kw__api_audit_events(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
/* /openapi.json (ops.c): GET /audit_events's query parameters (appended to the array)
 * and its schemas AuditEvent and AuditEventList (added to components/schemas). */
void kw__api_audit_openapi_params(json_t *params);
void kw__api_audit_openapi_schemas(json_t *schemas);

#endif
