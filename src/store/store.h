/*
 * store/store.h - durable storage for agents, keys, relationships and metadata.
 *
 * One interface (an ops table), two backends: SQLite (store/sqlite*.c, the embedded
 * default) and PostgreSQL (store/pg*.c). Routes never see which one is in use.
 *
 * Model: every mutation runs inside a kw_store_tx_t. kw_store_tx_commit makes rows and
 * relationship changes durable together and assigns them the next revision; a failed
 * or rolled-back transaction changes nothing. The in-memory graph must be updated by
 * the caller only after a successful commit, with the exact relationship changes the
 * transaction reports (kw_store_tx_changes) at the revision commit returned.
 *
 * Write order (tag-kw-store-write-order): a transaction holds the database's global write
 * order from kw_store_tx_begin until it commits or rolls back: on PostgreSQL across every
 * instance on the database (begin takes the revision row lock), on SQLite through
 * BEGIN IMMEDIATE (one writer per file). So when begin returns, every transaction that
 * will get a lower revision has committed, and no other write transaction commits until
 * this one ends: the committed state, as read on any connection (kw_store_revision,
 * kw_store_changes_since), is exactly the revision before this transaction's, and stays
 * so. A check made against it inside the transaction (e.g. a precondition, after the
 * graph caught up with kw_store_changes_since) is still true at commit. Consequences:
 * begin may wait (up to the backend's lock timeout, ~5 s, then KW_EDB) for another
 * transaction to end; keep transactions short; one thread must never begin a second
 * transaction while it holds one (it would wait for itself).
 *
 * Ownership: kw_store_t is process-lifetime, made by kw_store_open, freed by
 *   kw_store_close. Rows returned by reads are allocated from the caller's arena.
 *   Secret material (hashes, encrypted secrets) is copied into the arena too; plaintext
 *   keys never reach the store.
 * Threads: kw_store_t may be used from any number of threads (the backend keeps a
 *   connection per thread or a pool). A kw_store_tx_t belongs to one thread.
 * Errors: KW_OK, KW_ENOTFOUND, KW_ECONFLICT (unique violation: duplicate name, or a
 *   relationship CREATE that exists), KW_EDB (database unreachable or failed; nothing
 *   changed), KW_ENOMEM, KW_EINVAL (bad URL), KW_EFORBIDDEN (open: a SQLite file that
 *   group or others may access, see kw_store_opts_t). diag (may be NULL) gets a log-safe message.
 */
#ifndef KW_STORE_STORE_H
#define KW_STORE_STORE_H

#include "authz/authz.h"
#include "base/base.h"

typedef struct kw_store kw_store_t;
typedef struct kw_store_tx kw_store_tx_t;

typedef struct kw_agent {
    char id[37]; /* UUID text */
    const char *name;
    const char *description; /* NULL for JSON null */
    const char *account_id;
    int64_t created_at_us; /* microseconds since the Unix epoch, UTC */
    const char *acp_url;   /* the agent's own base URL (webhook relay); NULL for none */
} kw_agent_t;

typedef struct kw_apikey {
    char id[37];
    char agent_id[37];
    const char *name;
    const char *type; /* "internal" | "external" | "github" | "slack" */
    int64_t created_at_us;
    /* internal/external: keyed hash of the secret (see keys/keys.h); len 0 otherwise. */
    const uint8_t *hash;
    size_t hash_len;
    /* github/slack: the secret encrypted at rest; len 0 otherwise. */
    const uint8_t *secret_enc;
    size_t secret_enc_len;
    /* Lifecycle (issue 14; 0 = none). The key authenticates nowhere from expires_at_us on
     * (the row is the source of truth: every instance reads it at each authentication).
     * last_used_at_us: the last authentication as flushed (kw_store_keys_touch). After a
     * rotation with a grace period, prev_hash is the previous secret's keyed hash, which
     * authenticates until prev_until_us (exclusive); len 0 otherwise. */
    int64_t expires_at_us;
    int64_t last_used_at_us;
    const uint8_t *prev_hash;
    size_t prev_hash_len;
    int64_t prev_until_us;
} kw_apikey_t;

/* A rotation (kw_store_tx_key_rotate): a compare-and-swap of the key's credential. */
typedef struct kw_key_rotation {
    kw_str_t id;
    /* The credential the rotating request read (hash or secret_enc, the other len 0): the
     * swap happens only if the row still has exactly these bytes. */
    const uint8_t *old_hash;
    size_t old_hash_len;
    const uint8_t *old_secret_enc;
    size_t old_secret_enc_len;
    /* The new credential (one of the two, as the key's type stores it). */
    const uint8_t *hash;
    size_t hash_len;
    const uint8_t *secret_enc;
    size_t secret_enc_len;
    /* The previous secret's hash kept for a grace period, valid until prev_until_us;
     * len 0: the old secret stops at once. */
    const uint8_t *prev_hash;
    size_t prev_hash_len;
    int64_t prev_until_us;
} kw_key_rotation_t;

/* One key's last authentication (kw_store_keys_touch). */
typedef struct kw_key_use {
    char id[37];
    int64_t at_us;
} kw_key_use_t;

/* How to open a store (kw_store_open_with). All zero (or a NULL pointer) is the default
 * that kw_store_open uses. */
typedef struct kw_store_opts {
    /* PostgreSQL: connections in the pool when the URL's own pool=N and env
     * KEYWARD_PG_POOL say nothing (`keyward serve` passes its thread count: one
     * connection per request in flight). 0: 2 x online cores. Clamped to 2..256, since a
     * write that catches up on a second connection needs two. SQLite ignores it: its
     * pool grows on demand to 64 connections. */
    unsigned pool_size;
    /* SQLite: the database file holds secrets (kw_store_meta_*: the token secret and the
     * master key unless they come from elsewhere), so a new file is created mode 0600
     * (its -wal and -shm files take the same mode), and a file, -wal or -shm that group
     * or others may access (any of mode 077) is refused with KW_EFORBIDDEN, changing
     * nothing, unless this is true (then a warning is logged). PostgreSQL ignores it. */
    bool allow_insecure_mode;
    /* SQLite with the URL "sqlite::memory:" only (refused without it): > 0 opens a
     * private in-memory database of at most this many bytes (rounded down to 4 KiB pages;
     * at least 1 MiB), never written to a file, gone at kw_store_close. Its pool is ONE
     * connection (callers take turns). A write that would grow it past the bound fails
     * with KW_EBUDGET ("the in-memory database is full") and changes nothing
     * (`keyward serve-testing`'s instances, api/testing.h). */
    size_t memory_bytes;
} kw_store_opts_t;

/* Opens (creating if needed) and migrates the database named by `url`:
 * "sqlite:PATH", a bare PATH, or "postgres://..." / "postgresql://...". */
KW_NODISCARD int kw_store_open(const char *url, kw_store_t **out, kw_diag_t *diag);
/* kw_store_open with options (`opts` may be NULL: the defaults; borrowed for the call). */
KW_NODISCARD int kw_store_open_with(const char *url, const kw_store_opts_t *opts, kw_store_t **out,
                                    kw_diag_t *diag);
void kw_store_close(kw_store_t *s);
/* "sqlite" or "postgres". */
const char *kw_store_backend(const kw_store_t *s);
/* KW_OK when the database answers a trivial query now. */
KW_NODISCARD int kw_store_ping(kw_store_t *s);

/* ---- metadata (token secret, schema text, ...) ---- */
/* *val is allocated from `a`, NUL-terminated; KW_ENOTFOUND if unset. */
KW_NODISCARD int kw_store_meta_get(kw_store_t *s, const char *key, kw_arena_t *a, char **val,
                                   size_t *len);
/* Sets key only if it is unset (first writer wins across instances); then reads it back
 * into *val (from `a`): the value that is now stored. */
KW_NODISCARD int kw_store_meta_init(kw_store_t *s, const char *key, kw_str_t want, kw_arena_t *a,
                                    char **val, size_t *len);
KW_NODISCARD int kw_store_meta_set(kw_store_t *s, const char *key, kw_str_t val);

/* ---- relationships at startup (and on a resync) ---- */
/* Streams every stored relationship (for rebuilding the graph), each with its caveat name,
 * caveat context and expiry (kw_rel_t; expired ones too: the engine compares expiry at
 * query time, and the sweep deletes them); *rev gets the revision
 * the snapshot reflects. Strings valid only during the callback. Apart from its first
 * argument it is a kw_rel_feed_fn (authz.h): a follower that fell behind the changelog
 * horizon reloads through it with kw_engine_replace_graph. */
KW_NODISCARD int kw_store_load_relationships(kw_store_t *s, kw_rel_cb cb, void *ud,
                                             kw_revision_t *rev);
KW_NODISCARD int kw_store_revision(kw_store_t *s, kw_revision_t *rev);

/* ---- followers: several instances over one database (PostgreSQL only) ---- */
/* One committed relationship change (kw_store_changes_since): op is KW_OP_TOUCH or
 * KW_OP_DELETE, as kw_store_tx_changes reported it (a TOUCH with its caveat, context and
 * expiry; a DELETE with its key only). Strings valid only during the
 * callback. Return non-zero to stop (that value is returned). */
typedef int (*kw_rel_change_cb)(kw_revision_t rev, kw_op_t op, const kw_rel_t *rel, void *ud);
/* Streams committed relationship changes with revision > `after` in (revision, order
 * made) order, from one consistent snapshot. Revisions are never split: at most `limit`
 * changes (0 = no limit), except that a single revision larger than `limit` comes whole.
 * *upto (written on KW_OK only) gets the revision the caller is now current to: every
 * revision <= *upto has been delivered, including revisions without relationship
 * changes. Apply each revision's changes to the engine at that revision.
 * KW_EPRUNED (nothing delivered; diag, may be NULL, gives both revisions): `after` is
 * below the pruned horizon (kw_store_prune_changelog), so changes the caller has not
 * applied may be gone. Decided by the horizon read in the same snapshot as the rows, not
 * by the rows (a revision without changes has none to miss): the caller can never skip
 * pruned changes silently, and must reload every relationship instead.
 * SQLite (one instance per file, no changelog): KW_EUNSUPPORTED. */
KW_NODISCARD int kw_store_changes_since(kw_store_t *s, kw_revision_t after, size_t limit,
                                        kw_rel_change_cb cb, void *ud, kw_revision_t *upto,
                                        kw_diag_t *diag);
/* Blocks until a commit (from any instance) is announced or timeout_ms passes, on a
 * connection of its own (LISTEN). KW_OK: *latest = newest revision announced. The first
 * call, and the first after a reconnect, return at once with the current revision, since
 * announcements made before the LISTEN are lost: catch up with kw_store_changes_since.
 * KW_ETIMEOUT: nothing within timeout_ms. KW_EDB: the database is unreachable now (the
 * next call reconnects). Calls on one store serialize (one follower thread).
 * SQLite: KW_EUNSUPPORTED. */
KW_NODISCARD int kw_store_wait_change(kw_store_t *s, int timeout_ms, kw_revision_t *latest);

/* ---- the watch feed (/v1 Watch), every backend ----
 * kw_store_changes_since's contract (revisions never split, *upto, KW_EPRUNED below the
 * pruned horizon), answered on SQLite too: a SQLite database keeps a changelog for Watch
 * alone (store/sqlite_changes.c; the sync module still never follows a SQLite store), its
 * rows written by each commit and pruned by later commits once older than
 * KW_STORE_SQLITE_CHANGELOG_RETAIN_S. On PostgreSQL it is the followers' changelog, with
 * the retention the follower applies (KEYWARD_CHANGELOG_RETAIN_S). Relationship strings,
 * caveat name and context included, are valid only during the callback. */
#define KW_STORE_SQLITE_CHANGELOG_RETAIN_S 86400
KW_NODISCARD int kw_store_watch_changes(kw_store_t *s, kw_revision_t after, size_t limit,
                                        kw_rel_change_cb cb, void *ud, kw_revision_t *upto,
                                        kw_diag_t *diag);

/* ---- the export stream (/v1 ExportBulkRelationships), every backend ----
 * Calls cb once per stored relationship whose key (resource type, resource id, relation,
 * subject type, subject id, subject relation; "" for no subject relation) is greater than
 * `after` (6 strings; NULL: from the first), in that key's bytewise order, of
 * `resource_type` only when it is not empty, all from ONE snapshot, whose revision goes to
 * *rev (may be NULL). Rows are read as cb asks for them (a SQLite read transaction stepped
 * row by row, a PostgreSQL cursor fetched in batches): memory stays constant, and cb may
 * take its time (a client-paced stream; the snapshot is held meanwhile). cb returns
 * non-zero to stop (that value is returned). Strings are valid during the callback only. */
KW_NODISCARD int kw_store_export_relationships(kw_store_t *s, const kw_str_t *after,
                                               kw_str_t resource_type, kw_rel_cb cb, void *ud,
                                               kw_revision_t *rev);

/* ---- changelog retention (PostgreSQL only) ----
 * Every committed relationship change stays in the changelog until pruned. The pruned
 * horizon is the highest revision whose changes may be gone; it only grows, and moves in
 * the same transaction as the deletion. */
/* The most rows one kw_store_prune_changelog call deletes when max_rows is 0. */
#define KW_STORE_PRUNE_MAX_ROWS 100000
/* Deletes, in one transaction, the oldest changelog rows written more than older_than_us
 * (> 0) microseconds ago by the DATABASE's clock (no instance clock involved), at most
 * max_rows of them (0: KW_STORE_PRUNE_MAX_ROWS), oldest revision first and stopping at the
 * first row that must stay, and raises the horizon to the highest revision deleted. A
 * revision cut by the limit is finished by the next call (the horizon already covers it).
 * KW_OK: *n_deleted (may be 0) and *pruned_through (the horizon now; both may be NULL).
 * Call again while *n_deleted == the limit to work off a backlog.
 * KW_ECONFLICT: another instance (or thread) is pruning right now; nothing was done (one
 * pruner at a time, a transaction-scoped advisory lock that nobody waits for).
 * KW_EDB: unreachable or failed (nothing changed); KW_EINVAL: older_than_us <= 0.
 * Never touches the revision row, so it neither waits for nor stalls writers.
 * SQLite: KW_EUNSUPPORTED. */
KW_NODISCARD int kw_store_prune_changelog(kw_store_t *s, int64_t older_than_us, size_t max_rows,
                                          size_t *n_deleted, kw_revision_t *pruned_through,
                                          kw_diag_t *diag);

/* ---- reads (outside a transaction) ---- */
KW_NODISCARD int kw_store_agent_get(kw_store_t *s, kw_str_t id, kw_arena_t *a, kw_agent_t *out);
KW_NODISCARD int kw_store_agent_get_by_name(kw_store_t *s, kw_str_t account_id, kw_str_t name,
                                            kw_arena_t *a, kw_agent_t *out);
/* Rows for the given ids (absent ids are skipped), ordered by (created_at, id). */
KW_NODISCARD int kw_store_agents_by_ids(kw_store_t *s, const kw_str_t *ids, size_t n, kw_arena_t *a,
                                        kw_agent_t **out, size_t *n_out);
/* present[i] = whether ids[i] has an agent row (the id index only, no row is read); ids
 * need not be sorted or unique. a holds scratch memory. */
KW_NODISCARD int kw_store_agents_present(kw_store_t *s, const kw_str_t *ids, size_t n,
                                         kw_arena_t *a, bool *present);

KW_NODISCARD int kw_store_key_get(kw_store_t *s, kw_str_t id, kw_arena_t *a, kw_apikey_t *out);
KW_NODISCARD int kw_store_key_get_by_name(kw_store_t *s, kw_str_t agent_id, kw_str_t name,
                                          kw_str_t type, kw_arena_t *a, kw_apikey_t *out);
/* The key whose keyed hash is `hash` (internal/external keys only). */
KW_NODISCARD int kw_store_key_find_by_hash(kw_store_t *s, const uint8_t *hash, size_t len,
                                           kw_arena_t *a, kw_apikey_t *out);
/* Authentication's one read: the key whose keyed hash or previous hash (a rotation's
 * grace) is `hash`, a current hash first, with its agent's row, in one statement.
 * KW_ENOTFOUND when no key has it (or its agent row is gone). The caller decides which
 * hash matched and whether expiry and grace allow it. */
KW_NODISCARD int kw_store_key_auth(kw_store_t *s, const uint8_t *hash, size_t len, kw_arena_t *a,
                                   kw_apikey_t *key, kw_agent_t *agent);
/* Records last uses: last_used_at_us = at_us where that is later than the stored value
 * (a key that no longer exists is skipped). Outside the write order and the revisions: it
 * changes no relationship and no state that any check reads, so it never waits for (nor
 * bumps) the revision; one short transaction per call (SQLite: a write transaction of
 * its own; PostgreSQL: one statement). */
KW_NODISCARD int kw_store_keys_touch(kw_store_t *s, const kw_key_use_t *uses, size_t n);
/* Up to `limit` keys of `agent_id` strictly after the cursor (created_at_us, id) in
 * (created_at, id) order; a cursor with id "" starts at the beginning. */
KW_NODISCARD int kw_store_keys_of_agent(kw_store_t *s, kw_str_t agent_id, int64_t after_created_us,
                                        kw_str_t after_id, size_t limit, kw_arena_t *a,
                                        kw_apikey_t **out, size_t *n_out);
/* Rows for the given key ids of one agent (absent skipped), ordered by (created_at, id). */
KW_NODISCARD int kw_store_keys_by_ids(kw_store_t *s, kw_str_t agent_id, const kw_str_t *ids,
                                      size_t n, kw_arena_t *a, kw_apikey_t **out, size_t *n_out);

/* ---- the forward ingress (api/forward.c) ----
 * Agent names are unique per account, not globally: the ingress names an agent only by
 * name, so these look among every agent of that name that has an acp_url, oldest first. */
/* The oldest agent called `name` that has an acp_url; KW_ENOTFOUND if none. */
KW_NODISCARD int kw_store_agent_find_forward(kw_store_t *s, kw_str_t name, kw_arena_t *a,
                                             kw_agent_t *out);
/* The oldest key of type `type` called `key_name` whose agent is called `agent_name` and
 * has an acp_url; KW_ENOTFOUND if none. */
KW_NODISCARD int kw_store_key_find_forward(kw_store_t *s, kw_str_t agent_name, kw_str_t key_name,
                                           kw_str_t type, kw_arena_t *a, kw_apikey_t *out);
/* Replay refusal: records `id` (<= 256 bytes) as seen until ttl_us from now. KW_OK: first
 * sighting; KW_ECONFLICT: already seen and not yet expired (across every instance on one
 * PostgreSQL database). Outside any write transaction and the revision: it never waits for
 * writers. Expired entries are deleted on the way (a bounded number per call). */
KW_NODISCARD int kw_store_replay_claim(kw_store_t *s, kw_str_t id, int64_t ttl_us);

/* ---- transactions ---- */
/* Starts a write transaction holding the global write order (see "Write order" above):
 * may block while another transaction, of this process or another instance, is open. */
KW_NODISCARD int kw_store_tx_begin(kw_store_t *s, kw_store_tx_t **tx, kw_diag_t *diag);
/* Commits and frees tx; *rev gets the revision assigned to it. On failure the tx is rolled
 * back and freed, and nothing changed. */
KW_NODISCARD int kw_store_tx_commit(kw_store_tx_t *tx, kw_revision_t *rev, kw_diag_t *diag);
void kw_store_tx_rollback(kw_store_tx_t *tx); /* frees tx */

/* Savepoints (tag-kw-store-savepoint): a mark inside tx to undo back to, so that several
 * independent units of work can share one transaction and one commit (the API's group
 * commit) while one of them fails alone. kw_store_tx_savepoint marks the current state
 * (database and change list); kw_store_tx_rollback_to_savepoint undoes everything done
 * since, truncates the change list back to the mark and clears a failure recorded since
 * (the tx is usable again, also on PostgreSQL after a failed statement, which otherwise
 * aborts the whole transaction); kw_store_tx_release_savepoint keeps the work and drops
 * the mark. Both end the savepoint. Savepoints nest: only the innermost open one may be
 * ended. A failed tx refuses a new savepoint (its failure code); a rollback or release
 * that fails poisons the tx (commit then refuses it). */
typedef struct kw_store_savepoint {
    size_t n_changes; /* change list length at the mark */
    unsigned depth;   /* 1 = outermost */
} kw_store_savepoint_t;
KW_NODISCARD int kw_store_tx_savepoint(kw_store_tx_t *tx, kw_store_savepoint_t *sp,
                                       kw_diag_t *diag);
KW_NODISCARD int kw_store_tx_rollback_to_savepoint(kw_store_tx_t *tx,
                                                   const kw_store_savepoint_t *sp, kw_diag_t *diag);
KW_NODISCARD int kw_store_tx_release_savepoint(kw_store_tx_t *tx, const kw_store_savepoint_t *sp,
                                               kw_diag_t *diag);

/* The relationship changes made by tx so far (TOUCH for writes, DELETE for deletes), in
 * order, valid until commit/rollback. Apply these to the engine after commit. A TOUCH
 * carries the caveat name, context and expiry written; a DELETE only the relationship's
 * key (its caveat fields are empty, its expires_at 0). */
void kw_store_tx_changes(kw_store_tx_t *tx, const kw_update_t **ups, size_t *n);

KW_NODISCARD int kw_store_tx_agent_insert(kw_store_tx_t *tx, const kw_agent_t *ag);
/* Deletes the agent row, its keys' rows, and every relationship whose resource or subject
 * is the agent or one of its keys (recorded in the tx changes). KW_ENOTFOUND if absent. */
KW_NODISCARD int kw_store_tx_agent_delete(kw_store_tx_t *tx, kw_str_t id);
/* Sets (or with NULL clears) the agent's acp_url. KW_ENOTFOUND if absent. */
KW_NODISCARD int kw_store_tx_agent_set_acp_url(kw_store_tx_t *tx, kw_str_t id, const char *acp_url);
KW_NODISCARD int kw_store_tx_key_insert(kw_store_tx_t *tx, const kw_apikey_t *key);
/* Deletes the key row and every relationship whose resource or subject is the key.
 * KW_ENOTFOUND if absent. */
KW_NODISCARD int kw_store_tx_key_delete(kw_store_tx_t *tx, kw_str_t id);
/* Swaps the key's credential (kw_key_rotation_t) and its grace. KW_ENOTFOUND: no such
 * key; KW_ECONFLICT: the key exists but its credential is no longer r->old_* (another
 * rotation committed first): nothing changed. */
KW_NODISCARD int kw_store_tx_key_rotate(kw_store_tx_t *tx, const kw_key_rotation_t *r);
/* Applies relationship updates: CREATE (KW_ECONFLICT if present), TOUCH, DELETE.
 * Caveats and expiry (tag-kw-store-caveats): a CREATE or TOUCH stores the relationship's
 * caveat name, caveat context (JSON object text, kept byte for byte; the engine validated
 * it) and expires_at (microseconds UTC; 0: never), and a TOUCH of a stored relationship
 * replaces all three. A stored relationship whose expiry has passed (by this process's
 * clock) is gone as far as a CREATE is concerned, as it is for every query: the CREATE
 * replaces it instead of failing. A DELETE ignores the three. Refused with KW_EINVAL,
 * changing nothing: a context without a caveat name, a negative expires_at. */
KW_NODISCARD int kw_store_tx_rel_write(kw_store_tx_t *tx, const kw_update_t *ups, size_t n,
                                       kw_diag_t *diag);
/* Deletes every stored relationship matching filter (recorded in the tx changes). */
KW_NODISCARD int kw_store_tx_rel_delete_matching(kw_store_tx_t *tx, const kw_filter_t *f,
                                                 size_t *n_deleted, kw_diag_t *diag);

#include "audit.h" /* the audit trail and whole-database copies */

/* ---- expired relationships (the sweep: sync's kw_sync_sweep_expired) ----
 * Queries never depend on these (the engine compares expiry at query time); they keep
 * the store and the graph from growing with relationships nobody can see. */
/* The most rows one kw_store_tx_rel_delete_expired call deletes. */
#define KW_STORE_SWEEP_MAX_ROWS 10000
/* The earliest expiry among the stored relationships (microseconds UTC): KW_OK with
 * *at_us, KW_ENOTFOUND when no stored relationship expires. One indexed read. */
KW_NODISCARD int kw_store_next_expiry(kw_store_t *s, int64_t *at_us);
/* Deletes, earliest expiry first, at most `limit` (1..KW_STORE_SWEEP_MAX_ROWS) stored
 * relationships whose expires_at is at or before now_us, each recorded as a DELETE change
 * (so the engine and, on PostgreSQL, the changelog and every other instance drop it like
 * any delete). *n_deleted (may be NULL) gets how many. KW_EINVAL: limit out of range or
 * now_us <= 0. */
KW_NODISCARD int kw_store_tx_rel_delete_expired(kw_store_tx_t *tx, int64_t now_us, size_t limit,
                                                size_t *n_deleted, kw_diag_t *diag);

#endif
