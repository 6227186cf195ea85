/*
 * sync/sync_int.h - internals shared by the files of the sync module (not a public header).
 *
 * Files, and which calls which (never upwards, so no file depends on one that depends on
 * it): sync.c (lifecycle, counters) -> follower.c (the thread) -> catchup.c (changelog
 * applier, full reload, resync, await) -> schema.c (stored schema, trial install,
 * remembered text) -> state.c (applied revision, freshness, lease, clocks); commit.c
 * (group commit, schema write) -> catchup.c, schema.c, state.c; follower.c -> sweep.c
 * (the expiry sweep, its thread) -> commit.c.
 *
 * Ownership: everything here belongs to the kw_sync_t. Threads: the lock of each field
 * is named beside it; the order between the locks is the table of sync.h
 * (tag-kw-sync-lock-order). Counters for /metrics are relaxed atomics.
 */
#ifndef KW_SYNC_SYNC_INT_H
#define KW_SYNC_SYNC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "sync.h"

typedef struct kw__follower kw__follower_t;
typedef struct kw__sweeper kw__sweeper_t;
typedef struct kw__write_job kw__write_job_t;

struct kw_sync {
    kw_engine_t *engine;
    kw_store_t *store;
    kw_sync_check_fn check_schema; /* NULL: no requirements */
    /* ---- configuration (kw_sync_config_t; fixed after kw_sync_new) ---- */
    int freshness_ms;
    void (*on_change)(void *ud); /* kw_sync_on_change: set before serving, then read-only */
    void *on_change_ud;
    long prune_interval_s;
    long retain_s;
    /* ---- the write mutex (lock 1; commit.c) ----
     * Serializes every change to the graph: a batch of writes (store transaction + engine
     * apply), a catch-up, a resync, a schema write. */
    pthread_mutex_t write_mu;
    /* ---- state (state.c) ----
     * applied_rev: the STORE revision the graph reflects (every revision <= it applied).
     * Written only under write_mu, after the engine has the changes (release); readers
     * load it (acquire) BEFORE reading the engine, so what they read is at least that
     * fresh. Distinct from kw_engine_revision, which a schema swap or a batched load
     * moves on its own. fresh: false while the follower cannot reach the database or
     * has not caught up after a reconnect (graph-reading routes answer 503 then).
     * rev_mu/rev_cv (lock 4): waiters for applied_rev/fresh (X-Keyward-Revision).
     * synced_ms: when (kw__sync_clock_ms) the follower last proved the graph current: the
     * start of its last successful catch-up. Fresh also needs that to be at most
     * KW__SYNC_LEASE_MS ago (kw_sync_is_fresh), so a follower that stopped running (the
     * process was paused, the thread is stuck) cannot leave a stale graph "fresh". */
    _Atomic uint64_t applied_rev;
    _Atomic bool fresh;
    _Atomic int64_t synced_ms;
    bool follows; /* PostgreSQL: revisions come from the changelog (set by kw_sync_start) */
    pthread_mutex_t rev_mu;
    pthread_cond_t rev_cv; /* CLOCK_MONOTONIC */
    /* ---- schema (schema.c) ----
     * meta "schema" as last seen or written (under write_mu): a follower installs the
     * stored text only when it differs from this. */
    kw_buf_t schema_seen;
    /* ---- the follower (follower.c) ---- */
    kw__follower_t *follower;
    /* ---- group commit (commit.c, kw_sync_write) ----
     * Writers queue here; one at a time leads: takes write_mu, drains a batch, runs it
     * in one store transaction, wakes the batch's writers. Under group_mu (lock 3). */
    pthread_mutex_t group_mu;
    kw__write_job_t *group_head, *group_tail;
    bool group_leading;
    _Atomic uint64_t group_batches;  /* store transactions committed by kw_sync_write */
    _Atomic uint64_t group_jobs;     /* writes those transactions carried */
    _Atomic uint64_t group_max_jobs; /* the largest batch so far */
    _Atomic uint64_t group_deferred; /* writes moved to a later batch (same relationship) */
    /* ---- changelog retention and resync (follower.c, catchup.c; PostgreSQL) ----
     * The follower prunes every prune_interval_s the changes older than retain_s, and
     * reloads the whole graph (a resync) when the changelog no longer reaches back to
     * applied_rev. */
    bool resync_warned; /* under write_mu: the WARN of the current episode was logged */
    _Atomic uint64_t changelog_pruned;  /* rows this instance deleted */
    _Atomic uint64_t changelog_horizon; /* the horizon as this instance last saw it */
    _Atomic uint64_t resyncs;           /* completed full reloads */
    _Atomic uint64_t last_resync_ms;    /* how long the last one took */
    _Atomic uint64_t wakeups;           /* kw_store_wait_change answers (NOTIFY, or the
                                         * immediate answer after each (re)connect) */
    /* ---- the expiry sweep (sweep.c) ---- */
    long sweep_interval_s;          /* 0: no sweeper thread */
    kw__sweeper_t *sweeper;         /* its thread, from kw_sync_start to kw_sync_stop */
    _Atomic uint64_t expired_swept; /* rows this instance's sweeps deleted */
};

/* How long the follower's last proof of currency stays valid (s->synced_ms): well above
 * its normal cycle (a catch-up at least every ~1 s: NOTIFY or the 1 s poll). */
#define KW__SYNC_LEASE_MS 5000

/* ---- state.c ---- */
/* Initializes the state fields and rev_mu/rev_cv (KW_ENOMEM); fini destroys them. */
KW_NODISCARD int kw__sync_state_init(kw_sync_t *s);
void kw__sync_state_fini(kw_sync_t *s);
/* Milliseconds on a clock that keeps counting while the process is stopped or the host
 * suspended (CLOCK_BOOTTIME), for the freshness lease. */
int64_t kw__sync_clock_ms(void);
/* A CLOCK_MONOTONIC deadline `ms` from now, and a condition variable on that clock. */
struct timespec kw__sync_deadline_in(int ms);
KW_NODISCARD int kw__sync_cond_init(pthread_cond_t *cv);
/* Under write_mu: publishes applied_rev = rev (if it advances) and wakes waiters. */
void kw__sync_advance(kw_sync_t *s, kw_revision_t rev);
/* Declares the graph fresh or not (logged on a change) and wakes waiters. */
void kw__sync_set_fresh(kw_sync_t *s, bool fresh);
/* The follower proved the graph current as of t0 (the start of a successful catch-up):
 * renews the lease, and wakes waiters if it had run out. */
void kw__sync_renew_lease(kw_sync_t *s, int64_t t0);

/* ---- schema.c ---- */
/* Is the text of a the text of b? */
bool kw__sync_same_text(const kw_buf_t *a, const kw_buf_t *b);
/* Under write_mu (or before the follower starts): schema_seen = text. */
KW_NODISCARD int kw__sync_remember_schema(kw_sync_t *s, kw_str_t text);
/* Under write_mu: installs the stored schema when it differs from the one last seen. */
KW_NODISCARD int kw__sync_schema_follow(kw_sync_t *s, kw_diag_t *diag);

/* ---- catchup.c ---- */
/* A deep copy of *src into `a`, its caveat name, caveat context and expiry included (what
 * a TOUCH change carries, store.h): KW_OK or KW_ENOMEM with *out untouched. */
KW_NODISCARD int kw__sync_rel_copy(kw_arena_t *a, const kw_rel_t *src, kw_rel_t *out);
/* Under write_mu. Applies every committed revision after applied_rev, swapping the
 * schema when the stored one changed; advances applied_rev. KW_EUNSUPPORTED on SQLite
 * (no changelog); KW_EPRUNED (and not fresh) when the changelog no longer reaches back. */
KW_NODISCARD int kw__sync_catch_up_raw(kw_sync_t *s, kw_diag_t *diag);
/* Under write_mu: brings the graph to the store's current revision: a catch-up, or when
 * the changelog no longer reaches back to applied_rev, a full reload and a catch-up from
 * there. KW_EUNSUPPORTED on SQLite. */
KW_NODISCARD int kw__sync_locked(kw_sync_t *s, kw_diag_t *diag);

/* ---- sweep.c ---- */
/* Microseconds since the Unix epoch (CLOCK_REALTIME: the clock expiry is compared with). */
int64_t kw__sync_realtime_us(void);
/* Starts the sweeper thread when sweep_interval_s > 0 (KW_OK, KW_ENOMEM); stop joins it
 * (a no-op without one). Called by kw_sync_start / kw_sync_stop. */
KW_NODISCARD int kw__sync_sweeper_start(kw_sync_t *s, kw_diag_t *diag);
void kw__sync_sweeper_stop(kw_sync_t *s);

#endif
