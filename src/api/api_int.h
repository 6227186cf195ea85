/*
 * api/api_int.h - internals shared by the files of the api module (not a public header).
 *
 * Ownership: a kw__principal_t lives in the request arena. Everything a handler builds
 *   comes from req->arena except scratch arenas it creates and frees itself.
 * Threads: kw_api_t's counters are relaxed atomics; write_mu serializes every write
 *   (store transaction + engine apply); group_mu guards the group-commit queue and its
 *   leader flag (common.c). Lock order: write_mu before group_mu.
 */
#ifndef KW_API_API_INT_H
#define KW_API_API_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>

#include "api.h"

typedef struct kw__follower kw__follower_t;
typedef struct kw__write_job kw__write_job_t;

struct kw_api {
    kw_engine_t *engine;
    kw_store_t *store;
    const kw_keyring_t *keyring;
    pthread_mutex_t write_mu;
    _Atomic uint64_t checks_allowed;
    _Atomic uint64_t checks_denied;
    _Atomic uint64_t checks_error;
    /* Rows the list routes read from the store (agents.c, keys_routes.c): what a page
     * costs, for /metrics (keyward_list_rows_loaded_total). */
    _Atomic uint64_t list_rows_agents;
    _Atomic uint64_t list_rows_keys;
    /* ---- coherence (follow.c) ----
     * applied_rev: the STORE revision the graph reflects (every revision <= it applied).
     * Written only under write_mu, after the engine has the changes (release); readers
     * load it (acquire) BEFORE reading the engine, so what they read is at least that
     * fresh. Distinct from kw_engine_revision, which a schema swap or a batched load
     * moves on its own. fresh: false while the follower cannot reach the database or
     * has not caught up after a reconnect (graph-reading routes answer 503 then).
     * rev_mu/rev_cv: waiters for applied_rev/fresh (X-Keyward-Revision).
     * synced_ms: when (kw__api_clock_ms) the follower last proved the graph current: the
     * start of its last successful catch-up. Fresh also needs that to be at most
     * KW__API_LEASE_MS ago (kw__api_is_fresh), so a follower that stopped running (the
     * process was paused, the thread is stuck) cannot leave a stale graph "fresh". */
    _Atomic uint64_t applied_rev;
    _Atomic bool fresh;
    _Atomic int64_t synced_ms;
    bool follows;     /* PostgreSQL: revisions come from the changelog (set at start) */
    int freshness_ms; /* KEYWARD_FRESHNESS_TIMEOUT_MS, default 2000 */
    pthread_mutex_t rev_mu;
    pthread_cond_t rev_cv; /* CLOCK_MONOTONIC */
    kw_buf_t schema_seen;  /* meta "schema" as last seen/written (under write_mu) */
    kw__follower_t *follower;
    /* ---- group commit (common.c, kw__api_write) ----
     * Writers queue here; one at a time leads: takes write_mu, drains a batch, runs it
     * in one store transaction, wakes the batch's writers. Under group_mu. */
    pthread_mutex_t group_mu;
    kw__write_job_t *group_head, *group_tail;
    bool group_leading;
    _Atomic uint64_t group_batches;  /* store transactions committed by kw__api_write */
    _Atomic uint64_t group_jobs;     /* writes those transactions carried */
    _Atomic uint64_t group_max_jobs; /* the largest batch so far */
    _Atomic uint64_t group_deferred; /* writes moved to a later batch (same relationship) */
    /* ---- changelog retention (follow.c; PostgreSQL) ----
     * The follower prunes every prune_interval_s the changes older than retain_s
     * (KEYWARD_CHANGELOG_PRUNE_INTERVAL_S, KEYWARD_CHANGELOG_RETAIN_S), and reloads the
     * whole graph (a resync) when the changelog no longer reaches back to applied_rev.
     * Counters for /metrics: relaxed atomics. */
    long prune_interval_s;
    long retain_s;
    bool resync_warned; /* under write_mu: the WARN of the current episode was logged */
    _Atomic uint64_t changelog_pruned;  /* rows this instance deleted */
    _Atomic uint64_t changelog_horizon; /* the horizon as this instance last saw it */
    _Atomic uint64_t resyncs;           /* completed full reloads */
    _Atomic uint64_t last_resync_ms;    /* how long the last one took */
    _Atomic uint64_t wakeups;           /* kw_store_wait_change answers (NOTIFY, or the
                                         * immediate answer after each (re)connect) */
};

/* How long the follower's last proof of currency stays valid (api->synced_ms): well above
 * its normal cycle (a catch-up at least every ~1 s: NOTIFY or the 1 s poll). */
#define KW__API_LEASE_MS 5000

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
    kw_subject_t subject; /* user:<sub> / service_account:<sub> / agent:<id> */
    const char *subject_text; /* "user:alice" (for logs and nothing secret) */
    kw_str_t account;     /* selected account; len 0 = none */
    bool has_account;
    bool admin;           /* JWT claim admin: true */
} kw__principal_t;

/* ---- auth.c ---- */
/* Authenticates the request. On failure writes the 401 (or 503 when the database is
 * down) into resp and returns false. Sets req->log_subject. */
bool kw__api_auth(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, kw__principal_t *p);

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
void kw__api_key_json(kw_buf_t *out, const kw_apikey_t *k, kw_str_t secret);
/* A JSON string body (the delete messages). */
void kw__api_string_body(kw_http_resp_t *resp, const char *msg);
/* `/agents/name` and `/agent_api_keys/name` are the by-name routes without their name:
 * answered as the unknown route they are (the router's 404), before authentication. */
bool kw__api_reserved_id(kw_http_req_t *req, kw_http_resp_t *resp);
/* Copies `str` into the arena, NUL-terminated; NULL on OOM. */
char *kw__api_cstr(kw_arena_t *a, kw_str_t str);

/* The write path, with group commit (tag-kw-api-group-commit): the write is queued; a
 * leader, under the write mutex, runs up to KW__GROUP_MAX_JOBS queued writes in ONE
 * store transaction, each fn inside a savepoint of its own, commits once (one fsync),
 * and applies every kept write's relationship changes to the engine in queue order at
 * that one revision. fn's error rolls back only its own savepoint and is returned to
 * its caller alone; a begin or commit failure is returned to every write of the batch.
 * Returns after the commit is durable and applied. *rev (may be NULL) gets the revision
 * (shared by the batch).
 * fn may run more than once: a run whose changes touch a relationship an earlier write
 * of the batch changed is rolled back and run again in a later transaction (one
 * revision never names a relationship twice), so fn must not keep state from a run.
 * KW__WRITE_ALONE: fn reads the in-memory graph inside the transaction (v1
 * preconditions, a delete's optionalLimit): it runs in a transaction of its own, where
 * the graph is exactly the committed state. */
#define KW__WRITE_ALONE 1u
#define KW__GROUP_MAX_JOBS 64
#define KW__GROUP_MAX_CHANGES 4096 /* no further write joins a batch past this many */
typedef int (*kw__api_tx_fn)(kw_store_tx_t *tx, void *ud, kw_diag_t *diag);
KW_NODISCARD int kw__api_write(kw_api_t *api, kw__api_tx_fn fn, void *ud, unsigned flags,
                               kw_revision_t *rev, kw_diag_t *diag);
/* Writes queued for the next batches now (not counting the batch being run). */
size_t kw__api_write_queued(kw_api_t *api);

/* ---- follow.c: coherence with the store ---- */
/* Called by kw_api_new / kw_api_free (routes.c). */
KW_NODISCARD int kw__api_coherence_init(kw_api_t *api);
void kw__api_coherence_fini(kw_api_t *api);
static inline kw_revision_t kw__api_applied(kw_api_t *api)
{
    return (kw_revision_t)atomic_load_explicit(&api->applied_rev, memory_order_acquire);
}
/* Milliseconds on a clock that keeps counting while the process is stopped or the host
 * suspended (CLOCK_BOOTTIME), for the freshness lease. */
int64_t kw__api_clock_ms(void);
/* Fresh: the follower has not declared the graph stale, AND (when following) its last
 * proof of currency is younger than KW__API_LEASE_MS. What every data route requires. */
bool kw__api_is_fresh(kw_api_t *api);
/* Under write_mu: publishes applied_rev = rev (if it advances) and wakes waiters. */
void kw__api_advance(kw_api_t *api, kw_revision_t rev);
/* Under write_mu, PostgreSQL only: applies every committed revision after applied_rev
 * (changes_since), swapping the schema when the stored one changed; advances applied_rev.
 * KW_OK on SQLite (nothing to follow). */
KW_NODISCARD int kw__api_catch_up(kw_api_t *api, kw_diag_t *diag);
/* Waits until applied_rev >= min and the instance is fresh; with `full`, first catches up
 * to the store's current revision. KW_OK; KW_ETIMEOUT: min not reached within
 * freshness_ms; KW_EDB: not fresh (database unreachable / not caught up); KW_EINVAL, at
 * once: min is beyond the store's current revision (no instance has committed it). */
KW_NODISCARD int kw__api_await(kw_api_t *api, kw_revision_t min, bool full);
/* Request header X-Keyward-Revision (absent: *min = 0). false: malformed (nothing written). */
bool kw__api_presented(kw_http_req_t *req, kw_revision_t *min);
/* For every data route, right after authentication: 422 for a malformed
 * X-Keyward-Revision or one beyond the store's current revision, 503 "Revision not yet available" after the bounded wait, 503
 * "Database unavailable" when not fresh. false: the answer is written. */
bool kw__api_fresh(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp);

#define KW__MSG_REV_LATE "Revision not yet available"
#define KW__MSG_REV_BAD "X-Keyward-Revision must be a decimal revision number."
#define KW__MSG_REV_AHEAD "X-Keyward-Revision is ahead of every committed revision."

/* ---- route handlers ---- */
void kw__api_agents_create(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_get(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_get_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_list(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_agents_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

void kw__api_keys_create(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_list(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_get(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_get_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);
void kw__api_keys_delete_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

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

#endif
