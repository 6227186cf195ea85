/*
 * api/api.h - the agent API-key service: the HTTP routes of docs/API.md on top of the
 * authorization engine (authz), the durable store (store), the keyring (keys) and the
 * graph's coherence with the store (sync).
 *
 * Ownership: kw_api_t is process-lifetime (kw_api_new/kw_api_free). It BORROWS the engine,
 *   store, keyring and sync: they must outlive it and the HTTP server that serves its
 *   routes. The route table is static storage; pass the kw_api_t as kw_http_config_t.ud
 *   (the handlers and kw_api_metrics read it from there).
 * Threads: handlers run concurrently on the server's workers. Reads never lock; every
 *   write (row + relationships) goes through the sync module's write path (kw_sync_write),
 *   so the graph only changes after a commit and always in revision order.
 * Errors: KW_OK or a negative KW_E*; diag (may be NULL) receives a message for the operator.
 */
#ifndef KW_API_API_H
#define KW_API_API_H

#include "authz/authz.h"
#include "base/base.h"
#include "http/http.h"
#include "keys/keys.h"
#include "store/store.h"
#include "sync/sync.h"

typedef struct kw_api kw_api_t;

/* The built-in default schema (a copy of src/api/agentex.zed), NUL-terminated. */
extern const char kw_api_default_schema[];

KW_NODISCARD int kw_api_new(kw_engine_t *engine, kw_store_t *store, const kw_keyring_t *keyring,
                            kw_sync_t *sync, kw_api_t **out);
void kw_api_free(kw_api_t *api);
/* The /v1 API's SpiceDB-style preshared keys (`Authorization: Bearer <key>`), from a
 * comma-separated list (KEYWARD_V1_PRESHARED_KEYS; blanks around keys ignored, empty
 * entries skipped; NULL or "": none). Replaces any earlier list; only keyed hashes are
 * kept. Call before serving. KW_OK or KW_ENOMEM (the old list stays). */
KW_NODISCARD int kw_api_set_v1_preshared_keys(kw_api_t *api, const char *csv);
/* For another transport of the /v1 services (src/grpc): is `authorization` (the header's
 * value, "Bearer <credential>") an administrator of the /v1 API, i.e. a preshared key or
 * a JWT with admin: true? KW_OK with `actor` (the principal as the log and the audit trail
 * name it: "v1:preshared-key", "user:<sub>"; NUL-terminated, truncated to actor_cap);
 * KW_EFORBIDDEN (a valid JWT without admin); KW_EAUTH (absent, malformed or refused).
 * Nothing secret is logged. */
KW_NODISCARD int kw_api_v1_authorize(kw_api_t *api, const char *authorization, char *actor,
                                     size_t actor_cap);
/* Blocks until the instance has applied `min` (and with `full` caught up with the store):
 * kw_sync_await's answers (KW_OK, KW_EINVAL, KW_EDB, KW_ETIMEOUT). */
KW_NODISCARD int kw_api_v1_await(kw_api_t *api, kw_revision_t min, bool full);
/* true when kw_api_v1_await(api, min, false) would answer KW_OK at once (the instance is
 * fresh and has applied min); never blocks, touches no store. */
bool kw_api_v1_applied(kw_api_t *api, kw_revision_t min);
/* The server that serves the api's routes (NULL before stopping it): requests that wait
 * for a presented revision park on it (they hold no thread) and the api wakes them when
 * the sync module applies a revision. Call after kw_http_server_start and with NULL before
 * kw_http_server_stop. */
void kw_api_serve_on(kw_api_t *api, kw_http_server_t *srv);

/* The route table of the service (static storage); *n gets its length. */
const kw_http_route_t *kw_api_routes(size_t *n);

/* kw_http_error_fn for kw_http_config_t.error_fn (api/errors.c): the errors the server
 * makes itself in the contract's {"detail": msg}; under /v1 in SpiceDB's gateway shape. */
void kw_api_http_error(const kw_http_req_t *req, int status, const char *msg, kw_http_resp_t *resp,
                       void *ud);
/* kw_http_headers_fn for kw_http_config_t.on_headers (api/auth.c): authenticates from
 * the headers alone, before the server reads a body (401 at once; /v1 in its shape),
 * and keeps the principal on the request for the handler. Public routes pass. */
bool kw_api_on_headers(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

/* kw_http_metrics_fn for kw_http_config_t.metrics_fn (ud = the kw_api_t): appends
 * keyward_checks_total{result} and the keyward_relationships gauge. */
void kw_api_metrics(kw_buf_t *out, void *ud);

/* Refuses (KW_ESCHEMA, diag naming it) an installed schema that lacks a definition,
 * relation or permission the routes need. A kw_sync_check_fn: `serve` gives it to the
 * sync module (kw_sync_config_t.check_schema), which runs it on every schema it installs. */
KW_NODISCARD int kw_api_check_schema(kw_engine_t *engine, kw_diag_t *diag);

/* ---- pure helpers (exposed for unit tests) ---- */

/* A fresh UUIDv7 (RFC 9562) for the time `us` (microseconds since the epoch), lowercase
 * canonical text, NUL-terminated. */
void kw_api_uuid_v7(int64_t us, char out[37]);
/* RFC 3339 date-time ("2026-12-02T10:00:00Z", fraction up to 9 digits kept to the
 * microsecond, "Z" or a +hh:mm/-hh:mm offset; 'T'/'Z' in either case) -> microseconds
 * since the epoch, UTC. Years 1970..9999. false when malformed. */
bool kw_api_parse_time(kw_str_t s, int64_t *us);
/* Is s a UUID in canonical 8-4-4-4-12 hex form (any case)? */
bool kw_api_is_uuid(kw_str_t s);
/* RFC 3339 UTC with microseconds, "2026-11-28T12:00:00.123456Z"; returns the length.
 * out needs 32 bytes. */
size_t kw_api_format_time(int64_t us, char out[32]);
/* Wall-clock microseconds, strictly increasing within the process (so rows created one
 * after another always sort in creation order by (created_at, id)). */
int64_t kw_api_now_us(void);
/* Names: 1..255 code points of valid UTF-8, no control characters (C0, DEL, C1); when
 * !allow_slash also no '/'. */
bool kw_api_name_valid(kw_str_t s, bool allow_slash);
/* Strict decimal integer (no sign, no spaces, no leading '+') within [min, max]. */
bool kw_api_parse_bounded(kw_str_t s, long min, long max, long *out);
/* A revision as presented by a client (header or ZedToken): strict decimal, 0..INT64_MAX
 * (the store's revisions are BIGINT). */
bool kw_api_parse_revision(kw_str_t s, kw_revision_t *out);

#endif
