/*
 * authz/authz.h - keyward's embedded authorization engine (SpiceDB semantics).
 *
 * One kw_engine_t holds a compiled schema and an in-memory relationship graph,
 * versioned by a monotonically increasing revision. Every write batch is atomic;
 * every answer reports the revision it reflects.
 *
 * Ownership: every kw_str_t passed in is borrowed for the duration of the call.
 *   Strings handed to callbacks are valid only during the callback. The engine owns
 *   all of its memory; kw_engine_free releases it. Results that outlive a call
 *   (kw_expand_t) are allocated from a caller-supplied arena.
 * Threads: all functions may be called concurrently from any thread. Readers take a
 *   shared lock, writers an exclusive one (writer-preferring), so a reader never sees
 *   half of a batch. Callbacks run while the shared lock is held: they must not call
 *   back into a writing function of the same engine.
 * Errors: KW_OK or a negative KW_E*; out-params are written only on success. `diag`
 *   (may be NULL) receives a client-safe message (schema errors carry line:col).
 *   A check that fails (KW_EDEPTH, KW_ECYCLE, KW_ENOMEM) never reports "allowed".
 */
#ifndef KW_AUTHZ_AUTHZ_H
#define KW_AUTHZ_AUTHZ_H

#include "base/base.h"

typedef struct kw_engine kw_engine_t;
typedef uint64_t kw_revision_t;

/* An object reference `type:id`. */
typedef struct kw_object {
    kw_str_t type;
    kw_str_t id; /* "*" for a wildcard subject */
} kw_object_t;

/* A subject `type:id` or subject set `type:id#relation`; relation.len == 0 (or "...")
 * means a plain object. */
typedef struct kw_subject {
    kw_str_t type;
    kw_str_t id;
    kw_str_t relation;
} kw_subject_t;

/* A relationship `resource#relation@subject[caveat:{context}][expiration:...]`. */
typedef struct kw_rel {
    kw_object_t resource;
    kw_str_t relation;
    kw_subject_t subject;
    kw_str_t caveat;     /* optional caveat name (len 0: none) */
    kw_str_t caveat_ctx; /* with a caveat: its context, a JSON object text (len 0: none) */
    int64_t expires_at;  /* expiry in microseconds since the Unix epoch, UTC (0: never) */
} kw_rel_t;

/* ---- lifecycle and schema ---- */

/* A new engine with no schema (every query answers KW_ESCHEMA until one is loaded). */
KW_NODISCARD int kw_engine_new(kw_engine_t **out);
void kw_engine_free(kw_engine_t *e);

/* Parses, compiles and installs `text` (caveats and `use expiration` included). When
 * relationships exist, the new schema must accept every one of them with its caveat and
 * expiry (else KW_ESCHEMA naming the first offender, or the caveat still in use, and
 * nothing changes); their contexts are bound again to the new caveat programs. A schema
 * swap bumps the revision; *rev may be NULL. */
KW_NODISCARD int kw_engine_set_schema(kw_engine_t *e, kw_str_t text, kw_revision_t *rev,
                                      kw_diag_t *diag);
/* Appends the schema text currently installed to `out` (empty when none). */
KW_NODISCARD int kw_engine_schema_text(kw_engine_t *e, kw_buf_t *out);
/* Does the installed schema define type `type` with relation/permission `name`?
 * (name.len == 0: just the type). Used by the server to refuse unusable schemas. */
bool kw_engine_has(kw_engine_t *e, kw_str_t type, kw_str_t name, bool *is_permission);

/* ---- writes ---- */

typedef enum {
    KW_OP_CREATE = 1, /* fails with KW_EEXISTS if present */
    KW_OP_TOUCH,      /* upsert */
    KW_OP_DELETE,     /* no-op when absent */
} kw_op_t;

typedef struct kw_update {
    kw_op_t op;
    kw_rel_t rel;
} kw_update_t;

/* A relationship filter (SpiceDB RelationshipFilter). Every field is optional (len == 0
 * means "any"), but a filter without resource_type needs a subject filter and may have
 * neither a relation nor a resource id. has_subject selects whether the
 * subject_* fields apply; with has_subject, subject_relation_set distinguishes "any
 * subject relation" (false) from "exactly subject_relation" (true; empty or "..." =
 * no relation). */
typedef struct kw_filter {
    kw_str_t resource_type;
    kw_str_t resource_id;
    kw_str_t relation;
    bool has_subject;
    kw_str_t subject_type;
    kw_str_t subject_id;
    bool subject_relation_set;
    kw_str_t subject_relation;
} kw_filter_t;

typedef struct kw_precondition {
    bool must_match; /* true: MUST_MATCH, false: MUST_NOT_MATCH */
    kw_filter_t filter;
} kw_precondition_t;

/* Validates every update against the schema (types, relation exists and is not a
 * permission, subject type allowed with exactly the relationship's caveat and expiration
 * traits as SpiceDB requires, wildcard only where declared, ids well-formed, the caveat
 * context binds to the caveat's parameters, an expiry not in the past) without applying
 * anything. KW_EINVAL with a message naming the offending relation and type. Duplicate
 * relationships within one batch are refused. */
KW_NODISCARD int kw_engine_validate(kw_engine_t *e, const kw_update_t *ups, size_t n,
                                    kw_diag_t *diag);

/* Applies a batch atomically: validates, checks preconditions (KW_EPRECOND), applies
 * CREATE (KW_EEXISTS if present and not expired) / TOUCH (replaces the caveat, context
 * and expiry) / DELETE. All or nothing.
 * `at` == 0: the engine assigns the next revision, and an expiry at or before the engine
 * clock is refused (KW_EINVAL, as SpiceDB refuses it). `at` != 0: the caller (a durable
 * store) already committed the batch at revision `at` (must be > current); CREATE then
 * behaves as TOUCH since the store has already enforced uniqueness, and an expiry already
 * past is kept (invisible, swept later).
 * *rev (may be NULL) receives the revision the batch is visible at. */
KW_NODISCARD int kw_engine_write(kw_engine_t *e, const kw_update_t *ups, size_t n,
                                 const kw_precondition_t *pre, size_t n_pre, kw_revision_t at,
                                 kw_revision_t *rev, kw_diag_t *diag);

/* Deletes every relationship matching `filter` (after the preconditions hold), atomically.
 * `limit` 0 = no limit; if more than `limit` match, nothing is deleted and KW_ELIMIT is
 * returned. *n_deleted and *rev may be NULL. `at` as for kw_engine_write. */
KW_NODISCARD int kw_engine_delete_matching(kw_engine_t *e, const kw_filter_t *filter,
                                           const kw_precondition_t *pre, size_t n_pre, size_t limit,
                                           kw_revision_t at, size_t *n_deleted, kw_revision_t *rev,
                                           kw_diag_t *diag);

/* Called once per relationship; return non-zero to stop early (that value is returned). */
typedef int (*kw_rel_cb)(const kw_rel_t *rel, void *ud);

/* Streams relationships matching `filter` in a stable order (resource type, resource id,
 * relation, subject), with their caveat, context and expiry; expired ones are invisible
 * (to preconditions and delete-by-filter too). */
KW_NODISCARD int kw_engine_read(kw_engine_t *e, const kw_filter_t *filter, kw_rel_cb cb, void *ud,
                                kw_revision_t *rev, kw_diag_t *diag);

/* ---- replacing the whole graph ---- */

/* A source of relationships for kw_engine_replace_graph: calls emit(rel, emit_ud) once per
 * relationship of ONE consistent snapshot (the strings need only live during the call),
 * stops as soon as emit returns non-zero and then returns that value. Otherwise returns
 * KW_OK, having written the revision the snapshot reflects to *rev (0 if it has none), or
 * a negative KW_E* of its own. kw_store_load_relationships has this shape (store.h).
 * Duplicates are allowed (kept once). */
typedef int (*kw_rel_feed_fn)(void *ud, kw_rel_cb emit, void *emit_ud, kw_revision_t *rev);

/* Replaces every relationship (and, with `schema` non-empty, the schema too) in one step,
 * for a follower that can no longer catch up change by change. The new graph is built from
 * `feed` WITHOUT holding the engine lock (queries and writes go on meanwhile), each
 * relationship validated against `schema`, or against the installed schema when
 * schema.len == 0; then, under the write lock, the new graph and schema are swapped in and
 * the old ones freed. A reader sees either the whole old state or the whole new one.
 * Nothing changes unless all of it succeeds:
 *   KW_ESCHEMA    no schema installed and none given; `schema` does not compile; or a fed
 *                 relationship does not fit (diag names it);
 *   KW_ECONFLICT  the engine changed while the graph was built (a write, a schema swap or
 *                 another replacement): build again;
 *   KW_ENOMEM, or the feed's own error (returned as is; diag says the feed failed).
 * The new state is visible at the feed's revision when that is above the engine's, else at
 * the engine's next revision (revisions never go backwards); *rev (may be NULL) gets it.
 * The feed runs on the calling thread and may call the engine's query functions. Memory:
 * the old and the new graph coexist until the swap. */
KW_NODISCARD int kw_engine_replace_graph(kw_engine_t *e, kw_str_t schema, kw_rel_feed_fn feed,
                                         void *ud, kw_revision_t *rev, kw_diag_t *diag);

/* Number of relationships stored. */
size_t kw_engine_count(kw_engine_t *e);
kw_revision_t kw_engine_revision(kw_engine_t *e);
/* Approximate heap bytes held by the graph (for benchmarks and /metrics). */
size_t kw_engine_memory(kw_engine_t *e);

/* ---- answers as of an older revision (history.c) ----
 *
 * An engine can keep a bounded log of the changes it applied, each with what it replaced
 * (the relationship's prior state: absent, or its caveat, context and expiry), and from it
 * materialize a read-only snapshot engine holding the state as of an older revision: a
 * copy of the current graph with the newer changes undone. Whole-state replacements (a
 * schema swap, kw_engine_replace_graph) cannot be undone: the log restarts after them.
 * Off by default (max_changes 0: only the current revision). */

/* Keeps the changes applied in the last `window_us` microseconds and at most
 * `max_changes` relationship changes (0: none), and caches at most `max_snapshots`
 * snapshots of at most `max_snapshot_bytes` in all (LRU; one over the budget is still
 * handed out, not cached). Restarts the log at the current revision. Call it before the
 * engine is shared, or at any time (it takes the write lock). */
void kw_engine_set_history(kw_engine_t *e, int64_t window_us, size_t max_changes,
                           size_t max_snapshots, size_t max_snapshot_bytes);
/* The server's defaults (docs/API.md "atExactSnapshot"; env KEYWARD_SNAPSHOT_*). */
#define KW_HISTORY_WINDOW_S 300
#define KW_HISTORY_MAX_CHANGES 100000
#define KW_HISTORY_SNAPSHOTS 2
#define KW_HISTORY_SNAPSHOT_MB 1024

/* Names the engine's current revision `ext` in the caller's numbering (a durable store's
 * revisions, which the engine's own may lead after a schema swap): from the first call on,
 * kw_engine_snapshot takes revisions by these names. Call it right after each change (a
 * batch, a schema swap, a reload) with the changes serialized; the change applied last,
 * and the start of the window, keep the first name they are given. */
void kw_engine_history_name(kw_engine_t *e, kw_revision_t ext);

typedef struct kw_history_info {
    kw_revision_t base;   /* the oldest revision a snapshot can be had at (named) */
    kw_revision_t rev;    /* the current revision (named) */
    const char *base_why; /* why the window starts at base (static text) */
    size_t n_changes;     /* relationship changes held */
    size_t bytes;         /* heap bytes they take */
    size_t n_snapshots;   /* snapshots cached */
    uint64_t n_built;     /* snapshots materialized so far */
    size_t snapshot_bytes;
    int64_t window_us;
    size_t max_changes;
} kw_history_info_t;
void kw_engine_history_info(kw_engine_t *e, kw_history_info_t *out);

/* A read-only engine holding `e`'s state as of one older revision (refcounted; every query
 * function of authz.h works on kw_snapshot_engine(s) and reports that revision; writing
 * to it is a caller bug). */
typedef struct kw_snapshot kw_snapshot_t;

/* The snapshot of `e` as of revision `at` (base <= at <= current; by name once
 * kw_engine_history_name was called), from the cache or materialized now (once: a request
 * for a revision being built waits for it) (a copy of the graph, the newer changes undone: the
 * engine's read lock is held while the graph is copied). *out holds a reference:
 * kw_snapshot_release it. Errors: KW_EEXPIRED (at is older than the window: diag says where the
 * window starts and why), KW_EINVAL (at is newer than the current revision), KW_ESCHEMA (no
 * schema), KW_ENOMEM. Expiries are judged at query time, by `e`'s clock. */
KW_NODISCARD int kw_engine_snapshot(kw_engine_t *e, kw_revision_t at, kw_snapshot_t **out,
                                    kw_diag_t *diag);
/* Is revision `at` within the window (what kw_engine_snapshot would build), without
 * building anything? KW_OK, or kw_engine_snapshot's KW_EEXPIRED / KW_EINVAL with diag. */
KW_NODISCARD int kw_engine_history_covers(kw_engine_t *e, kw_revision_t at, kw_diag_t *diag);
kw_engine_t *kw_snapshot_engine(const kw_snapshot_t *s);
kw_revision_t kw_snapshot_revision(const kw_snapshot_t *s);
void kw_snapshot_release(kw_snapshot_t *s);

/* ---- time and expiry ---- */

/* The clock expiries are compared against: microseconds since the Unix epoch, UTC. */
typedef int64_t (*kw_clock_fn)(void *ud);
/* Replaces the engine's clock (the system's wall clock by default; fn NULL restores it).
 * For tests. Call it before the engine is shared between threads. */
void kw_engine_set_clock(kw_engine_t *e, kw_clock_fn fn, void *ud);
/* The engine clock's current reading. */
int64_t kw_engine_now(kw_engine_t *e);
/* Removes from memory every relationship whose expiry is at or before `now` (microseconds;
 * 0: the engine clock), under the write lock. Those relationships were invisible already,
 * so the revision does not change. Callable from a background thread; the store deletes
 * its rows on its own. *n_removed (may be NULL) gets how many went. KW_OK. */
KW_NODISCARD int kw_engine_sweep_expired(kw_engine_t *e, int64_t now, size_t *n_removed);

/* ---- queries ---- */

/* Caveats make answers three-valued, as in SpiceDB: CONDITIONAL when the answer depends
 * on caveat parameters that neither the relationship's context nor the request's gives
 * (the relationship's context wins per field). A conditional never counts as a yes: a
 * caller that only asks "is it YES?" stays fail-closed. Expired relationships are
 * invisible from their expiry instant on (the engine clock, read once per query). */
typedef enum {
    KW_CHECK_NO = 0,
    KW_CHECK_YES = 1,
    KW_CHECK_CONDITIONAL = 2,
} kw_check_result_t;

/* Does `subject` have `permission` (a relation or permission) on `resource`?
 * Unknown types/permissions give KW_EINVAL with a message; unknown object ids are
 * simply "no". Without a request context (this entry point), a caveat with missing
 * parameters answers KW_CHECK_CONDITIONAL. */
KW_NODISCARD int kw_engine_check(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                 kw_subject_t subject, kw_check_result_t *result,
                                 kw_revision_t *rev, kw_diag_t *diag);

/* kw_engine_check with a request context (`context`: a JSON object text, len 0: none).
 * With KW_CHECK_CONDITIONAL, the names of the missing parameters are appended to
 * `missing` (may be NULL), comma-separated. A context field of the wrong type for a
 * caveat the check evaluates, or a caveat that fails to evaluate: KW_EINVAL (never yes). */
KW_NODISCARD int kw_engine_check_ctx(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                     kw_subject_t subject, kw_str_t context,
                                     kw_check_result_t *result, kw_buf_t *missing,
                                     kw_revision_t *rev, kw_diag_t *diag);

typedef struct kw_check_item {
    kw_object_t resource;
    kw_str_t permission;
    kw_subject_t subject;
    kw_check_result_t result; /* out */
    int rc;                   /* out: KW_OK or the item's error */
    kw_diag_t diag;           /* out: the item's error message */
    kw_str_t context;         /* in: the item's request context (JSON object; len 0: none) */
    kw_str_t missing;         /* out: with CONDITIONAL, the missing parameter names,
                                 comma-separated (only from kw_engine_check_bulk_ctx) */
} kw_check_item_t;

/* Answers every item at one revision (items share one memo table while their contexts
 * are equal). Returns KW_OK when the batch ran; each item carries its own rc. */
KW_NODISCARD int kw_engine_check_bulk(kw_engine_t *e, kw_check_item_t *items, size_t n,
                                      kw_revision_t *rev);
/* The same, also writing each conditional item's `missing`, allocated from `arena`
 * (caller owns). KW_ENOMEM when the arena fails (items then may lack their names). */
KW_NODISCARD int kw_engine_check_bulk_ctx(kw_engine_t *e, kw_check_item_t *items, size_t n,
                                          kw_arena_t *arena, kw_revision_t *rev);

/* Called with each object id; return non-zero to stop early (that value is returned). */
typedef int (*kw_id_cb)(kw_str_t id, void *ud);

/* Every object of `resource_type` on which `subject` has `permission` (YES only), each
 * exactly once, in no particular order. */
KW_NODISCARD int kw_engine_lookup_resources(kw_engine_t *e, kw_str_t resource_type,
                                            kw_str_t permission, kw_subject_t subject, kw_id_cb cb,
                                            void *ud, kw_revision_t *rev, kw_diag_t *diag);

/* A LookupResources result with caveats: the id, and whether the permission is only
 * conditional (then `missing` lists the missing parameter names, comma-separated). */
typedef struct kw_resource_result {
    kw_str_t id;
    bool conditional;
    kw_str_t missing;
} kw_resource_result_t;
typedef int (*kw_resource_cb)(const kw_resource_result_t *res, void *ud);

/* LookupResources with a request context (len 0: none): every object for which Check
 * would say YES or CONDITIONAL, each exactly once, conditional ones flagged. */
KW_NODISCARD int kw_engine_lookup_resources_ctx(kw_engine_t *e, kw_str_t resource_type,
                                                kw_str_t permission, kw_subject_t subject,
                                                kw_str_t context, kw_resource_cb cb, void *ud,
                                                kw_revision_t *rev, kw_diag_t *diag);

/* What an ordered LookupResources keeps between the calls of one stream: the answer
 * computed once, reused by the next calls while the engine stays at the revision it was
 * computed at (tag-kw-lr-ordered). Owned by the caller; one per stream, the same request
 * on every call. Not thread-safe (one call at a time). */
typedef struct kw_lr_stream kw_lr_stream_t;
KW_NODISCARD int kw_lr_stream_new(kw_lr_stream_t **out);
void kw_lr_stream_free(kw_lr_stream_t *s);

/* kw_engine_lookup_resources_ctx in id order (bytes, then length: a shorter id before the
 * longer one it begins): the first `limit` results (0: all) whose id is after *after
 * (NULL: from the first), at a cost that follows the results asked for when most objects
 * of the type are results. `stream` (may be NULL) carries the answer between the calls
 * of a stream. The first call for a type builds its id-ordered index (kept up to date by
 * writes after that). cb runs under the engine's read lock (copy what it keeps, never
 * call the engine); non-zero stops and is returned. */
KW_NODISCARD int kw_engine_lookup_resources_ordered(kw_engine_t *e, kw_str_t resource_type,
                                                    kw_str_t permission, kw_subject_t subject,
                                                    kw_str_t context, const kw_str_t *after,
                                                    size_t limit, kw_lr_stream_t *stream,
                                                    kw_resource_cb cb, void *ud, kw_revision_t *rev,
                                                    kw_diag_t *diag);

/* A LookupSubjects result: a concrete subject id, or the wildcard "*" together with the
 * ids it excludes (subjects of the type that do NOT have the permission, or have it only
 * conditionally). `conditional` (with `missing`, comma-separated parameter names) only
 * comes from kw_engine_lookup_subjects_ctx. */
typedef struct kw_subject_result {
    kw_str_t id;
    const kw_str_t *excluded; /* only for id == "*" */
    size_t n_excluded;
    bool conditional;
    kw_str_t missing;
} kw_subject_result_t;
typedef int (*kw_subject_cb)(const kw_subject_result_t *res, void *ud);

/* Every subject of `subject_type` (with `subject_relation`, len 0 = plain objects) that
 * has `permission` on `resource` (YES only), each exactly once. */
KW_NODISCARD int kw_engine_lookup_subjects(kw_engine_t *e, kw_object_t resource,
                                           kw_str_t permission, kw_str_t subject_type,
                                           kw_str_t subject_relation, kw_subject_cb cb, void *ud,
                                           kw_revision_t *rev, kw_diag_t *diag);
/* LookupSubjects with a request context (len 0: none): YES and CONDITIONAL subjects, the
 * conditional ones flagged. */
KW_NODISCARD int kw_engine_lookup_subjects_ctx(kw_engine_t *e, kw_object_t resource,
                                               kw_str_t permission, kw_str_t subject_type,
                                               kw_str_t subject_relation, kw_str_t context,
                                               kw_subject_cb cb, void *ud, kw_revision_t *rev,
                                               kw_diag_t *diag);

/* The permission tree of `resource#permission`, one level deep at relations (leaves list
 * the direct subjects, subject sets unexpanded), recursive through permissions and arrows,
 * like SpiceDB's Expand. */
typedef enum {
    KW_EXPAND_LEAF = 1, /* subjects directly related through a relation */
    KW_EXPAND_UNION,
    KW_EXPAND_INTERSECTION,
    KW_EXPAND_EXCLUSION, /* children[0] minus children[1..] */
} kw_expand_kind_t;

/* A leaf subject's caveat: its name (len 0: none) and context (JSON, len 0: none). */
typedef struct kw_expand_caveat {
    kw_str_t name;
    kw_str_t context;
} kw_expand_caveat_t;

typedef struct kw_expand {
    kw_expand_kind_t kind;
    kw_object_t object; /* the object and relation this node expands */
    kw_str_t relation;
    struct kw_expand **children;
    size_t n_children;
    kw_subject_t *subjects; /* LEAF only */
    size_t n_subjects;
    kw_expand_caveat_t *caveats; /* LEAF: parallel to subjects; NULL when none has a caveat */
} kw_expand_t;

/* The tree and all its strings are allocated from `arena` (caller owns). Expired
 * relationships are left out; caveated ones carry their caveat (kw_expand_t.caveats). */
KW_NODISCARD int kw_engine_expand(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                  kw_arena_t *arena, kw_expand_t **out, kw_revision_t *rev,
                                  kw_diag_t *diag);

/* ---- debug traces (trace.c) ----
 * The trace of a Check as SpiceDB's CheckDebugTrace shapes it: a node per (object,
 * relation-or-permission) the check depends on, with its own answer for the subject, and
 * the nodes it dispatches to as sub-problems: a relation's subject sets (O#r2), a
 * permission's relations and permissions (computed usersets) and each object an arrow
 * reaches (its operators flattened into it). A node's `result` is kw_engine_check_ctx's answer for
 * that node (the hot check path is not touched: the trace is built beside it, with Check and
 * Expand), so the root's result is always the check's. A node evaluated already in the same trace
 * is marked `cached` and not expanded again (as SpiceDB marks a dispatch answered from its cache),
 * which also ends cycles. */
typedef struct kw_trace {
    kw_object_t resource;
    kw_str_t permission;
    bool is_permission; /* PERMISSION_TYPE_PERMISSION, else _RELATION */
    kw_check_result_t result;
    kw_str_t missing;     /* KW_CHECK_CONDITIONAL: the missing caveat parameters, comma-separated */
    uint64_t duration_ns; /* this node's evaluation */
    bool cached;          /* seen before in this trace: no sub-problems listed */
    struct kw_trace **subs;
    size_t n_subs;
} kw_trace_t;

/* Traces the check of `subject` on resource#permission with a request context (JSON object
 * text, len 0: none). The tree and its strings come from `arena` (caller owns). The graph
 * should not change meanwhile (the caller holds it still) or nodes may disagree. Errors:
 * those of kw_engine_check_ctx and kw_engine_read; KW_EBUDGET past KW_MAX_TRACE_NODES
 * nodes, KW_EDEPTH past KW_MAX_CHECK_DEPTH levels; KW_ENOMEM. *out is written only on
 * KW_OK. */
KW_NODISCARD int kw_engine_check_trace(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                       kw_subject_t subject, kw_str_t context, kw_arena_t *arena,
                                       kw_trace_t **out, kw_diag_t *diag);

/* ---- text forms ---- */

/* SpiceDB's name patterns (its proto validation rules; tag-kw-names):
 * KW_NAME_RELATION   a relation or permission: [a-z][a-z0-9_]{1,62}[a-z0-9]
 * KW_NAME_DEFINITION a definition as declared: such names joined by '/', at most 128
 *                    bytes in all (KW_MAX_NAME_LEN)
 * KW_NAME_TYPE       a definition as referred to (a relation's subject types, a
 *                    relationship's object types and caveat names): the same, but each
 *                    prefix segment at most 63 bytes ([a-z][a-z0-9_]{1,61}[a-z0-9]/) */
typedef enum { KW_NAME_RELATION, KW_NAME_DEFINITION, KW_NAME_TYPE } kw_name_kind_t;
bool kw_name_ok(kw_str_t name, kw_name_kind_t kind);
/* The rule kw_name_ok applies, in words, for messages ("it must match ..."). */
const char *kw_name_rule(kw_name_kind_t kind);

/* Parses SpiceDB's relationship string
 *   `type:id#relation@type:id[#relation]` [`[caveat]` | `[caveat:{json}]`] [`[expiration:T]`]
 * (the caveat, if any, before the expiration). The result points into `text`: caveat is
 * the caveat's name, caveat_ctx the JSON object text as written (well-formed JSON; an
 * empty object gives len 0), expires_at the RFC 3339 time T (`Z` or a `-HH:MM` offset,
 * as SpiceDB's grammar admits) in microseconds UTC, finer digits truncated; it must be
 * after the Unix epoch. Syntax only: no schema involved; KW_EINVAL with the column. */
KW_NODISCARD int kw_rel_parse(kw_str_t text, kw_rel_t *out, kw_diag_t *diag);
/* Is `json` one well-formed JSON object (blanks around it allowed), as a caveat context
 * must be? The same rules as a context inside a relationship string. KW_OK, or KW_EINVAL
 * with the 1-based column (in `json`) and a message. */
KW_NODISCARD int kw_rel_context_check(kw_str_t json, kw_diag_t *diag);
/* Appends the canonical string form of `rel` to `out`: the caveat context verbatim, the
 * expiration in UTC (`2025-12-31T23:59:59Z`, a fraction only when non-zero). */
void kw_rel_format(const kw_rel_t *rel, kw_buf_t *out);
/* Appends `us` (microseconds since the Unix epoch) as an RFC 3339 UTC time, as
 * kw_rel_format writes an expiration. */
void kw_rel_format_expiration(int64_t us, kw_buf_t *out);
/* Copies the eight strings of `src` into `a` (each NUL-terminated; a NULL ptr with len 0 is
 * fine), so *out outlives the buffers src points into. KW_OK, or KW_ENOMEM with *out
 * untouched (what was copied stays in the arena until it is reset). */
KW_NODISCARD int kw_rel_copy(kw_arena_t *a, const kw_rel_t *src, kw_rel_t *out);

/* ---- schema reflection (reflect.c) ----
 * SchemaService's ReflectSchema, DiffSchema, ComputablePermissions and DependentRelations
 * as pure functions of schema TEXT (the installed schema's comes from
 * kw_engine_schema_text): each compiles the text, answers, and frees the compiled form, so
 * they take no engine lock. Every result, and every string in it, is allocated from the
 * caller's arena `a`. A comment is the doc comment before the item with each line trimmed
 * (SpiceDB's normalization), len 0 when there is none.
 * Errors: KW_ESCHEMA (a text does not compile: diag has line:col), KW_EINVAL (a filter
 * SpiceDB refuses, or a relation that is not a permission: diag has SpiceDB's message),
 * KW_ENOTFOUND (unknown definition or relation/permission: diag has SpiceDB's message),
 * KW_ENOMEM. Out-params are written only on KW_OK. */

/* An allowed subject type of a relation: `def`, `def#rel` or `def:*`. */
typedef struct kw_reflect_type {
    kw_str_t def;
    kw_str_t rel; /* len 0: a terminal subject (or the wildcard) */
    bool wildcard;
    kw_str_t caveat; /* `with <caveat>`: its name; len 0: none */
    bool expiration; /* `with expiration` */
} kw_reflect_type_t;

/* A relation or a permission (ReflectionRelation / ReflectionPermission). */
typedef struct kw_reflect_rel {
    kw_str_t name;
    kw_str_t comment;
    kw_str_t parent; /* the definition's name */
    bool is_permission;
    kw_reflect_type_t *types; /* relations only, in source order */
    size_t n_types;
} kw_reflect_rel_t;

/* A definition (ReflectionDefinition): relations and permissions in source order. */
typedef struct kw_reflect_def {
    kw_str_t name;
    kw_str_t comment;
    kw_reflect_rel_t *rels;
    size_t n_rels;
    kw_reflect_rel_t *perms;
    size_t n_perms;
} kw_reflect_def_t;

/* A caveat's parameter (ReflectionCaveatParameter): its type as the schema writes it. */
typedef struct kw_reflect_param {
    kw_str_t name;
    kw_str_t type;
    kw_str_t parent; /* the caveat's name */
} kw_reflect_param_t;

/* A caveat (ReflectionCaveat): parameters sorted by name (SpiceDB's order); expression
 * is the body's text as written (SpiceDB prints its parsed form). */
typedef struct kw_reflect_caveat {
    kw_str_t name;
    kw_str_t comment;
    kw_reflect_param_t *params;
    size_t n_params;
    kw_str_t expression;
} kw_reflect_caveat_t;

/* One ReflectionSchemaFilter; each field len 0 when unset; each matches as a prefix. */
typedef struct kw_reflect_filter {
    kw_str_t def;
    kw_str_t rel;
    kw_str_t perm;
    kw_str_t caveat;
} kw_reflect_filter_t;

/* ReflectSchema: the definitions of `text` in source order that the filters let through
 * (no filter: all), each with the relations and permissions they let through. The
 * filters are checked as SpiceDB checks them first (KW_EINVAL). */
KW_NODISCARD int kw_schema_reflect(kw_str_t text, const kw_reflect_filter_t *filters,
                                   size_t n_filters, kw_arena_t *a, kw_reflect_def_t **defs,
                                   size_t *n_defs, kw_diag_t *diag);

/* ReflectSchema's caveats: those of `text` in source order that the filters let through
 * (no filter: all; a filter naming a caveat prefix keeps the caveats it matches). */
KW_NODISCARD int kw_schema_reflect_caveats(kw_str_t text, const kw_reflect_filter_t *filters,
                                           size_t n_filters, kw_arena_t *a,
                                           kw_reflect_caveat_t **caveats, size_t *n_caveats,
                                           kw_diag_t *diag);

/* A relation or permission named by ComputablePermissions / DependentRelations. */
typedef struct kw_reflect_ref {
    kw_str_t def;
    kw_str_t rel;
    bool is_permission;
} kw_reflect_ref_t;

/* ComputablePermissions: every relation and permission whose value a relationship on
 * def#rel (rel len 0: on def itself as a subject) can change, transitively (through
 * subject sets, computed references and arrows), as SpiceDB's reachability graph walks
 * it; sorted by (definition, name), def#rel itself left out; `def_filter` (len 0: none)
 * keeps only definitions starting with it. */
KW_NODISCARD int kw_schema_computable_permissions(kw_str_t text, kw_str_t def, kw_str_t rel,
                                                  kw_str_t def_filter, kw_arena_t *a,
                                                  kw_reflect_ref_t **out, size_t *n_out,
                                                  kw_diag_t *diag);
/* DependentRelations: every relation and permission that permission def#perm is computed
 * from, transitively (arrows' tupleset relations included), sorted by (definition,
 * name), def#perm itself left out. KW_EINVAL when perm is a relation. */
KW_NODISCARD int kw_schema_dependent_relations(kw_str_t text, kw_str_t def, kw_str_t perm,
                                               kw_arena_t *a, kw_reflect_ref_t **out, size_t *n_out,
                                               kw_diag_t *diag);

/* DiffSchema: one entry per difference from `existing` to `comparison`, SpiceDB's kinds. */
typedef enum {
    KW_DIFF_DEF_ADDED = 1,             /* def: from comparison */
    KW_DIFF_DEF_REMOVED,               /* def: from existing */
    KW_DIFF_DEF_DOC_CHANGED,           /* def: from comparison */
    KW_DIFF_REL_ADDED,                 /* rel: from comparison */
    KW_DIFF_REL_REMOVED,               /* rel: from existing */
    KW_DIFF_REL_DOC_CHANGED,           /* rel: from comparison */
    KW_DIFF_REL_TYPE_ADDED,            /* rel (comparison) + type */
    KW_DIFF_REL_TYPE_REMOVED,          /* rel (comparison) + type (the one existing had) */
    KW_DIFF_PERM_ADDED,                /* rel: from comparison */
    KW_DIFF_PERM_REMOVED,              /* rel: from existing */
    KW_DIFF_PERM_DOC_CHANGED,          /* rel: from comparison */
    KW_DIFF_PERM_EXPR_CHANGED,         /* rel: from comparison */
    KW_DIFF_CAVEAT_ADDED,              /* caveat: from comparison */
    KW_DIFF_CAVEAT_REMOVED,            /* caveat: from existing */
    KW_DIFF_CAVEAT_DOC_CHANGED,        /* caveat: from comparison */
    KW_DIFF_CAVEAT_EXPR_CHANGED,       /* caveat: from comparison */
    KW_DIFF_CAVEAT_PARAM_ADDED,        /* param: from comparison */
    KW_DIFF_CAVEAT_PARAM_REMOVED,      /* param: from existing */
    KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED, /* param (comparison) + previous_type */
} kw_schema_diff_kind_t;

typedef struct kw_schema_diff {
    kw_schema_diff_kind_t kind;
    const kw_reflect_def_t *def;       /* DEF_* kinds */
    const kw_reflect_rel_t *rel;       /* REL_* and PERM_* kinds */
    kw_reflect_type_t type;            /* REL_TYPE_* kinds */
    const kw_reflect_caveat_t *caveat; /* CAVEAT_ADDED/REMOVED/DOC/EXPR */
    const kw_reflect_param_t *param;   /* CAVEAT_PARAM_* */
    kw_str_t previous_type;            /* CAVEAT_PARAM_TYPE_CHANGED */
} kw_schema_diff_t;

/* The differences, in this order (SpiceDB's, with its map orders made deterministic):
 * added definitions (comparison's order), removed ones (existing's order), added caveats,
 * removed caveats, then per definition both have (existing's order): its doc comment,
 * removed relations, added relations, removed permissions, added permissions, per shared
 * permission its expression then its comment, per shared relation its comment, then
 * removed then added subject types; then per caveat both have: its comment, removed,
 * added and retyped parameters, its expression (compared as text). KW_ESCHEMA names which text does
 * not compile ("comparison schema: ..."). */
KW_NODISCARD int kw_schema_diff(kw_str_t existing, kw_str_t comparison, kw_arena_t *a,
                                kw_schema_diff_t **out, size_t *n_out, kw_diag_t *diag);

#endif
