/*
 * api/api.h - the agent API-key service: the HTTP routes of docs/API.md on top of the
 * authorization engine (authz), the durable store (store) and the keyring (keys).
 *
 * Ownership: kw_api_t is process-lifetime (kw_api_new/kw_api_free). It BORROWS the engine,
 *   store and keyring: they must outlive it and the HTTP server that serves its routes.
 *   The route table is static storage; pass the kw_api_t as kw_http_config_t.ud (the
 *   handlers and kw_api_metrics read it from there).
 * Threads: handlers run concurrently on the server's workers. Reads never lock; every
 *   write (row + relationships) holds the api write mutex from the store transaction's
 *   begin until the engine has applied the committed changes, so the graph only changes
 *   after a commit and always in revision order.
 * Errors: KW_OK or a negative KW_E*; diag (may be NULL) receives a message for the operator.
 */
#ifndef KW_API_API_H
#define KW_API_API_H

#include "authz/authz.h"
#include "base/base.h"
#include "http/http.h"
#include "keys/keys.h"
#include "store/store.h"

typedef struct kw_api kw_api_t;

/* The built-in default schema (a copy of src/api/agentex.zed), NUL-terminated. */
extern const char kw_api_default_schema[];

KW_NODISCARD int kw_api_new(kw_engine_t *engine, kw_store_t *store, const kw_keyring_t *keyring,
                            kw_api_t **out);
void kw_api_free(kw_api_t *api);

/* The route table of the service (static storage); *n gets its length. */
const kw_http_route_t *kw_api_routes(size_t *n);

/* kw_http_metrics_fn for kw_http_config_t.metrics_fn (ud = the kw_api_t): appends
 * keyward_checks_total{result} and the keyward_relationships gauge. */
void kw_api_metrics(kw_buf_t *out, void *ud);

/* Refuses (KW_ESCHEMA, diag naming it) an installed schema that lacks a definition,
 * relation or permission the routes need. */
KW_NODISCARD int kw_api_check_schema(kw_engine_t *engine, kw_diag_t *diag);

/* Applies relationship changes a store transaction committed at `rev` to the engine
 * as ONE engine batch, whatever its size: readers see all of it or none. Used by the
 * routes, the follower and by `serve` at start. Must be called with the write mutex held
 * (or before the server starts). */
KW_NODISCARD int kw_api_apply(kw_engine_t *engine, const kw_update_t *ups, size_t n,
                              kw_revision_t rev, kw_diag_t *diag);

/* ---- coherence: several instances over one database (api/follow.c) ---- */

/* Starts keeping the graph coherent with the store. `loaded` is the revision that
 * kw_store_load_relationships reported for the graph the engine holds: it becomes the
 * applied revision (X-Keyward-Revision). On PostgreSQL it then catches up on anything
 * committed since (reloading the whole graph if the changelog was pruned past `loaded`
 * meanwhile), and starts the follower thread (LISTEN/NOTIFY + 1 s poll) that applies
 * other instances' commits in revision order, prunes the changelog
 * (KEYWARD_CHANGELOG_RETAIN_S, KEYWARD_CHANGELOG_PRUNE_INTERVAL_S) and reloads the whole
 * graph by itself when it fell behind the pruned horizon (api/follow.c); on SQLite (single
 * instance) nothing more. Call once, after kw_api_new and before serving. */
KW_NODISCARD int kw_api_follow_start(kw_api_t *api, kw_revision_t loaded, kw_diag_t *diag);
/* Stops and joins the follower (idempotent; kw_api_free calls it). Call before the store
 * closes. */
void kw_api_follow_stop(kw_api_t *api);
/* The store revision the graph reflects now. */
kw_revision_t kw_api_applied_revision(kw_api_t *api);
/* Is the instance fresh? Always on SQLite; on PostgreSQL the follower is connected and
 * caught up, and proved it less than 5 s ago (the freshness lease, api/follow.c). */
bool kw_api_is_fresh(kw_api_t *api);

/* ---- pure helpers (exposed for unit tests) ---- */

/* A fresh UUIDv7 (RFC 9562) for the time `us` (microseconds since the epoch), lowercase
 * canonical text, NUL-terminated. */
void kw_api_uuid_v7(int64_t us, char out[37]);
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
