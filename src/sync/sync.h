/*
 * sync/sync.h - keeping the in-memory graph (authz) in step with the store: the applied
 * store revision and the freshness lease, the write path with group commit, the changelog
 * follower of several instances over one PostgreSQL database, full reloads (at start and
 * on a resync), and the schema's lifecycle (stored text, trial install, schema write).
 *
 * Layering: api -> sync -> store, authz, base. sync never calls api: what the routes
 * need of a schema arrives as a callback (kw_sync_config_t.check_schema).
 *
 * Ownership: kw_sync_t is process-lifetime (kw_sync_new / kw_sync_free). It BORROWS the
 *   engine and the store, which must outlive it; kw_sync_free stops the follower first.
 *   Strings passed in are borrowed for the call.
 * Threads: every function may be called from any thread, except kw_sync_start (once,
 *   before serving) and kw_sync_free (after the last user). kw_sync_load is made for the
 *   start; it takes the write mutex, so a later call is safe too.
 *   Reads of the graph never take a sync lock; every change to the graph takes the
 *   write mutex.
 * Errors: KW_OK or a negative KW_E*; diag (may be NULL) gets a log-safe message.
 *
 * Lock order (tag-kw-sync-lock-order). A thread holding a lock of this table takes only
 * locks BELOW it, never one above; the leaves (3..7) are never held while another lock
 * is taken (a condition wait releases its own mutex); 8 runs after rev_mu is released and
 * takes its two locks in that order.
 *
 *   #  lock                 file        guards                                taken under
 *   1  write_mu             commit.c    the graph's changes, applied_rev's    nothing
 *                                       moves, the remembered schema text;
 *                                       an exact-revision read (kw_sync_hold)
 *   2  store write order    store       one write transaction at a time       1
 *                                       (kw_store_tx_begin .. commit)
 *   3  group_mu             commit.c    the group-commit queue, its leader    1 or nothing
 *   4  rev_mu (+ rev_cv)    state.c     wake-ups for applied_rev/fresh/lease  1 or nothing
 *   5  engine rwlock        authz       the graph and its schema              1, 2 or nothing
 *   6  store pool mutexes   store       connection pools, LISTEN connection   1, 2 or nothing
 *   7  follower mu (+ cv),  follower.c, their stop flags and naps             nothing
 *      sweeper mu (+ cv)    sweep.c
 *   8  the change hook's    api, http   kw_sync_on_change's fn: the api's     1 or nothing
 *      locks                            http_mu, then the HTTP server's pool
 *                                       mutex (to wake parked requests)
 *   9  watch hub mu         watch.c     the hub's position, live watchers,    1, 8 or nothing
 *                                       their queues (a leaf; the change hook
 *                                       pokes it before taking http_mu)
 *
 * Consequences: a writer that waits for its batch sleeps on its job's condition under
 * group_mu only; the leader takes write_mu BEFORE group_mu; a waiter for a revision
 * (kw_sync_await) holds rev_mu only, and takes write_mu (to catch up) only before it;
 * the follower and the sweeper never hold their own mutex while they work (the sweeper
 * writes through kw_sync_write like any writer).
 */
#ifndef KW_SYNC_SYNC_H
#define KW_SYNC_SYNC_H

#include "authz/authz.h"
#include "base/base.h"
#include "store/store.h"

typedef struct kw_sync kw_sync_t;

/* Refuses (KW_ESCHEMA, diag naming it) an installed schema that lacks what the caller
 * needs; KW_OK accepts it. Runs on a scratch engine (a trial install) or the live one. */
typedef int (*kw_sync_check_fn)(kw_engine_t *engine, kw_diag_t *diag);

/* Defaults and bounds of the configuration (docs/DEPLOYMENT.md). */
#define KW_SYNC_FRESHNESS_MS 2000       /* KEYWARD_FRESHNESS_TIMEOUT_MS */
#define KW_SYNC_FRESHNESS_MS_MAX 600000 /* its bound (0 is allowed) */
#define KW_SYNC_PRUNE_INTERVAL_S 300    /* KEYWARD_CHANGELOG_PRUNE_INTERVAL_S */
#define KW_SYNC_RETAIN_S 86400          /* KEYWARD_CHANGELOG_RETAIN_S */
#define KW_SYNC_SECONDS_MAX 315360000L  /* ten years: the bound of both (from 1) */
#define KW_SYNC_SWEEP_INTERVAL_S 60     /* KEYWARD_EXPIRY_SWEEP_INTERVAL_S (0: no sweeper) */
#define KW_SYNC_SWEEP_BATCH 1000        /* expired relationships per sweep transaction */

/* Filled by the caller (cli/serve.c reads the environment); start from
 * kw_sync_config_default. Copied by kw_sync_new. */
typedef struct kw_sync_config {
    int freshness_ms;              /* how long kw_sync_await waits for a presented revision */
    long prune_interval_s;         /* the follower prunes the changelog this often */
    long retain_s;                 /* ... deleting the changes older than this */
    long sweep_interval_s;         /* the expiry sweep runs this often (0: never) */
    kw_sync_check_fn check_schema; /* what the routes need of a schema (NULL: nothing) */
} kw_sync_config_t;

void kw_sync_config_default(kw_sync_config_t *cfg);

/* Applied revision 0, fresh, not following. KW_EINVAL (NULL argument), KW_ENOMEM. */
KW_NODISCARD int kw_sync_new(kw_engine_t *engine, kw_store_t *store, const kw_sync_config_t *cfg,
                             kw_sync_t **out);
/* Stops the follower, then frees. NULL is a no-op. */
void kw_sync_free(kw_sync_t *s);

/* ---- start (call in this order, once, before serving) ---- */

/* The trial install: does `text` compile and pass check_schema? Tried on a scratch
 * engine; nothing live changes. KW_OK; else the compiler's or the check's error
 * (a compile error carries line:col in diag). */
KW_NODISCARD int kw_sync_schema_try(kw_sync_t *s, kw_str_t text, kw_diag_t *diag);
/* meta "schema" as stored by kw_sync_write_schema into `out` (replaced; empty when unset). */
KW_NODISCARD int kw_sync_stored_schema(kw_sync_t *s, kw_buf_t *out);
/* Loads the whole graph from one store snapshot under schema `text` (installed with it),
 * in one swap: the way a resync reloads it too. The applied revision becomes the
 * snapshot's. Call kw_sync_schema_try on `text` first. Errors: KW_ESCHEMA (the text does
 * not compile, or a stored relationship does not fit it: diag names it), KW_EDB, KW_ENOMEM. */
KW_NODISCARD int kw_sync_load(kw_sync_t *s, kw_str_t text, kw_diag_t *diag);
/* Starts keeping the graph coherent with the store, from the loaded revision. On
 * PostgreSQL it catches up on anything committed since the load (reloading the whole
 * graph if the changelog was pruned past it meanwhile) and starts the follower thread
 * (LISTEN/NOTIFY + 1 s poll) that applies other instances' commits in revision order,
 * prunes the changelog and resyncs by itself when it fell behind the pruned horizon; on
 * SQLite (one instance per file) no follower. On both, with sweep_interval_s > 0, it
 * starts the expiry sweeper thread (kw_sync_sweep_expired at once, then every
 * sweep_interval_s). KW_EINVAL when already started. */
KW_NODISCARD int kw_sync_start(kw_sync_t *s, kw_diag_t *diag);
/* Stops and joins the follower and the sweeper (idempotent). Call before the store closes. */
void kw_sync_stop(kw_sync_t *s);

/* ---- expired relationships (sync/sweep.c) ---- */

/* The expiry sweep: deletes every stored relationship whose expiry is at or before now_us
 * (microseconds UTC), in transactions of at most KW_SYNC_SWEEP_BATCH rows through
 * kw_sync_write (each a revision of DELETE changes like any delete: the engine drops them,
 * and on PostgreSQL the changelog carries them to every other instance). Nothing due: no
 * transaction at all. Queries never depend on it (the engine compares expiry at query
 * time); it frees what nobody can see. *n_deleted (may be NULL) gets how many, also on an
 * error (those deleted before it). Errors as kw_sync_write's; KW_EINVAL: now_us <= 0. */
KW_NODISCARD int kw_sync_sweep_expired(kw_sync_t *s, int64_t now_us, size_t *n_deleted,
                                       kw_diag_t *diag);

/* ---- state ---- */

/* The store revision the graph reflects now (every revision <= it applied). Read it
 * BEFORE reading the engine: the answer is then at least that fresh. */
kw_revision_t kw_sync_applied(kw_sync_t *s);
/* Fresh: the follower has not declared the graph stale, and (when following) it proved
 * the graph current less than 5 s ago (the lease). Always on SQLite. */
bool kw_sync_is_fresh(kw_sync_t *s);
/* Waits until the applied revision is >= min and the instance is fresh; with `full`,
 * first catches up to the store's current revision. KW_OK; KW_ETIMEOUT: min not reached
 * within freshness_ms; KW_EDB: not fresh (database unreachable / not caught up); KW_EINVAL,
 * at once: min is beyond the store's current revision (no instance has committed it). Not
 * fresh and min == 0 answers at once. */
KW_NODISCARD int kw_sync_await(kw_sync_t *s, kw_revision_t min, bool full);
/* kw_sync_await without the wait, for callers that wait elsewhere (a parked HTTP request):
 * KW_OK, KW_EDB (not fresh and min == 0), KW_EINVAL (min beyond the store's current
 * revision) as await answers them, or KW_EAGAIN: not there yet, wait for the next
 * kw_sync_on_change call. At the end of the caller's own wait, KW_EAGAIN means what
 * await's KW_ETIMEOUT (fresh) or KW_EDB (not fresh, kw_sync_is_fresh) mean. */
KW_NODISCARD int kw_sync_poll(kw_sync_t *s, kw_revision_t min, bool full);
/* How long a presented revision may be waited for (the configured freshness_ms). */
int kw_sync_freshness_ms(kw_sync_t *s);
/* Registers fn(ud), called (from whichever thread made the change, after rev_mu is
 * released, so fn may take any lock that is not held around a sync write) every time the
 * applied revision advances or freshness changes: what kw_sync_await's waiters wake on.
 * Call once, before kw_sync_start and before serving; fn must be quick and must not block. */
void kw_sync_on_change(kw_sync_t *s, void (*fn)(void *ud), void *ud);
/* Only inside a kw_sync_tx_fn (write_mu held): applies every committed revision after
 * the applied one, so the graph is exactly the committed state (the transaction holds
 * the write order). KW_OK at once on SQLite. */
KW_NODISCARD int kw_sync_catch_up(kw_sync_t *s, kw_diag_t *diag);

/* Holds the graph still for a read that must answer at one exact revision: takes the
 * write mutex (lock 1), so nothing changes the graph until kw_sync_release, and returns
 * the applied revision, at which the graph then exactly is. Between the two, call no
 * sync function that takes the write mutex (it is not recursive) and keep it short:
 * every write and the follower wait meanwhile. */
kw_revision_t kw_sync_hold(kw_sync_t *s);
void kw_sync_release(kw_sync_t *s);

/* Applies relationship changes committed at `rev` to the engine as ONE engine batch,
 * whatever its size: readers see all of it or none. Callers serialize (the write mutex,
 * or before any other thread exists). */
KW_NODISCARD int kw_sync_apply(kw_engine_t *engine, const kw_update_t *ups, size_t n,
                               kw_revision_t rev, kw_diag_t *diag);

/* ---- the write path, with group commit (tag-kw-api-group-commit) ----
 * The write is queued; a leader, under the write mutex, runs up to KW_SYNC_GROUP_MAX_JOBS
 * queued writes in ONE store transaction, each fn inside a savepoint of its own, commits
 * once (one fsync), and applies every kept write's relationship changes to the engine in
 * queue order at that one revision. fn's error rolls back only its own savepoint and is
 * returned to its caller alone; a begin or commit failure is returned to every write of
 * the batch. Returns after the commit is durable and applied. *rev (may be NULL) gets
 * the revision (shared by the batch).
 * fn may run more than once: a run whose changes touch a relationship an earlier write
 * of the batch changed is rolled back and run again in a later transaction (one
 * revision never names a relationship twice), so fn must not keep state from a run.
 * KW_SYNC_WRITE_ALONE: fn reads the in-memory graph inside the transaction (v1
 * preconditions, a delete's optionalLimit): it runs in a transaction of its own, where
 * the graph is exactly the committed state (after kw_sync_catch_up), and on the caller's
 * own thread (a bulk import's fn reads its request body, which another thread may be the
 * one to deliver). */
#define KW_SYNC_WRITE_ALONE 1u
#define KW_SYNC_GROUP_MAX_JOBS 64
#define KW_SYNC_GROUP_MAX_CHANGES 4096 /* no further write joins a batch past this many */
typedef int (*kw_sync_tx_fn)(kw_store_tx_t *tx, void *ud, kw_diag_t *diag);
KW_NODISCARD int kw_sync_write(kw_sync_t *s, kw_sync_tx_fn fn, void *ud, unsigned flags,
                               kw_revision_t *rev, kw_diag_t *diag);
/* Writes queued for the next batches now (not counting the batch being run). */
size_t kw_sync_write_queued(kw_sync_t *s);

/* The schema write: under the write mutex, after catching up (the swap is judged against
 * every relationship committed so far, other instances' too), swaps the live schema, then
 * in ONE store transaction stores the text in meta "schema" and commits it; the
 * transaction adds no relationship change: its revision (*rev) is the change's, and other
 * instances' followers re-read the stored schema when they cross it. When the transaction
 * fails the live schema is restored, so memory and disk agree. Call kw_sync_schema_try on
 * `text` first. Errors: KW_ESCHEMA (a stored relationship does not fit: diag names it),
 * KW_EDB (nothing stored; after a lost PostgreSQL COMMIT the outcome is unknown, and if it
 * did commit the followers install it when they cross its revision). */
KW_NODISCARD int kw_sync_write_schema(kw_sync_t *s, kw_str_t text, kw_revision_t *rev,
                                      kw_diag_t *diag);
/* kw_sync_write_schema that also runs fn(tx, ud, diag) inside the schema's transaction
 * (after the text is stored in it, before the commit): the audit event of the write
 * commits with the text or neither does. fn's error rolls everything back (the live
 * schema is restored) and is returned. fn may be NULL. */
KW_NODISCARD int kw_sync_write_schema_with(kw_sync_t *s, kw_str_t text, kw_sync_tx_fn fn, void *ud,
                                           kw_revision_t *rev, kw_diag_t *diag);

/* ---- counters (/metrics) ---- */

typedef struct kw_sync_stats {
    kw_revision_t applied;
    bool fresh;
    uint64_t write_batches;     /* store transactions committed by kw_sync_write */
    uint64_t write_jobs;        /* writes they carried */
    uint64_t write_max_jobs;    /* the largest batch so far */
    uint64_t write_deferred;    /* writes moved to a later batch (same relationship) */
    uint64_t changelog_pruned;  /* changelog rows this instance deleted */
    uint64_t changelog_horizon; /* the pruned horizon as this instance last saw it */
    uint64_t resyncs;           /* completed full reloads after falling behind it */
    uint64_t last_resync_ms;    /* how long the last one took */
    uint64_t wakeups;           /* change notifications that woke the follower */
    uint64_t expired_swept;     /* expired relationships this instance's sweeps deleted */
} kw_sync_stats_t;

void kw_sync_stats(kw_sync_t *s, kw_sync_stats_t *out);

/* ---- Watch (watch.c): every committed relationship change after a revision ----
 * A hub per process reads the store's watch feed (kw_store_watch_changes: the changelog on
 * PostgreSQL and on SQLite alike, so a commit of another instance or process is seen) and
 * fans each revision out to the watchers that are live. A watcher starting below the hub's
 * position first catches up from the feed on its own thread, in bounded rounds, then joins
 * the live ones. The hub thread reads when poked (kw_watch_hub_poke, from the
 * kw_sync_on_change hook: a local commit, or one the follower applied) and every poll_ms
 * while a watcher is live (another SQLite process is only seen that way).
 * Each live watcher has a bounded queue (changes and bytes); a watcher whose queue would
 * pass the bound is cut off (KW_ELIMIT, SpiceDB's "watch fell too far behind"): memory
 * never grows with a slow client, and the client resumes from its last changesThrough.
 * Lock: the hub's mutex is a leaf (lock 9: taken under 1, 8 or nothing, never held
 * while a store read or an emit runs).
 * Ownership: the hub BORROWS the store (which must outlive it). Threads: any thread may
 * call any function; kw_watch_run blocks its caller for the life of the watch. */
typedef struct kw_watch_hub kw_watch_hub_t;

typedef struct kw_watch_config {
    size_t buffer_changes; /* queued changes per watcher before it is cut off */
    size_t buffer_bytes;   /* ... and queued bytes */
    int poll_ms;           /* store reads while a watcher is live, without a poke */
    int tick_ms;           /* an idle watcher's checkpoint event (the transport's liveness) */
    size_t round_changes;  /* changes per feed read (a revision is never split) */
    size_t max_watchers;   /* watches running at once (each holds its caller's thread) */
} kw_watch_config_t;
#define KW_WATCH_BUFFER_CHANGES 65536
#define KW_WATCH_BUFFER_BYTES (64u << 20)
#define KW_WATCH_POLL_MS 100
#define KW_WATCH_TICK_MS 1000
#define KW_WATCH_ROUND_CHANGES 1000
#define KW_WATCH_MAX_WATCHERS 8 /* half the HTTP server's default threads (streams' workers) */
void kw_watch_config_default(kw_watch_config_t *cfg);

/* Starts the hub's thread. cfg may be NULL (defaults; copied). KW_EINVAL, KW_ENOMEM. */
KW_NODISCARD int kw_watch_hub_new(kw_store_t *store, const kw_watch_config_t *cfg,
                                  kw_watch_hub_t **out);
/* Something may have been committed: read the feed now. Never blocks for long. */
void kw_watch_hub_poke(kw_watch_hub_t *h);
/* Ends every running watch (its kw_watch_run returns KW_EAGAIN) and refuses new ones;
 * returns once no watch runs any more. Idempotent; call before draining the server. */
void kw_watch_hub_stop(kw_watch_hub_t *h);
/* Stops (kw_watch_hub_stop), joins the thread and frees. NULL is a no-op. */
void kw_watch_hub_free(kw_watch_hub_t *h);

/* What a watcher wants (WatchRequest's optionalObjectTypes and
 * optionalRelationshipFilters; borrowed for the run). A change passes when its resource
 * type is one of object_types (none: any) AND it matches one of filters (none: any). A
 * filter's resource_type may be empty (any); id_prefixes[i] (array may be NULL; len 0:
 * none) is filters[i]'s optionalResourceIdPrefix. */
typedef struct kw_watch_filter {
    const kw_str_t *object_types;
    size_t n_object_types;
    const kw_filter_t *filters;
    const kw_str_t *id_prefixes;
    size_t n_filters;
} kw_watch_filter_t;

/* Does rel pass f (NULL: everything)? The test kw_watch_run applies; exported so that
 * other relationship streams (ExportBulkRelationships) filter the same way. */
bool kw_watch_filter_passes(const kw_watch_filter_t *f, const kw_rel_t *rel);

/* One event of a watch, valid during the emit call only: the changes of revision `rev`
 * that passed the filter, in the order made (never empty), or, with checkpoint, no
 * change: every revision <= rev has been delivered (sent after tick_ms of quiet, or when
 * filtered-out revisions moved the position), so the transport may test its client. */
typedef struct kw_watch_event {
    kw_revision_t rev;
    const kw_update_t *changes; /* op KW_OP_TOUCH or KW_OP_DELETE */
    size_t n_changes;
    bool checkpoint;
} kw_watch_event_t;
/* Returns KW_OK to go on, or a negative KW_E* to end the watch (returned by kw_watch_run). */
typedef int (*kw_watch_emit_fn)(void *ud, const kw_watch_event_t *ev);

/* Runs one watch on the calling thread: emits, revision by revision, every change
 * committed after `after` that passes `filter`, until emit refuses (its code), the
 * watcher is cut off for being slow (KW_ELIMIT, diag says so), `after` is below the
 * changelog's pruned horizon (KW_EPRUNED) or the store fails (KW_EDB), or the hub stops
 * (KW_EAGAIN); KW_EBUDGET at once when max_watchers watches run already. Never returns
 * KW_OK. A revision larger than the buffer cannot be
 * delivered and cuts the watcher off as a slow one would be. */
KW_NODISCARD int kw_watch_run(kw_watch_hub_t *h, kw_revision_t after,
                              const kw_watch_filter_t *filter, kw_watch_emit_fn emit, void *ud,
                              kw_diag_t *diag);

#endif
