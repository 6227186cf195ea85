/*
 * authz/engine_int.h - the engine object and the helpers its files share. Internal to
 * src/authz; the public surface is authz.h.
 *
 * Files: engine.c (lifecycle, the lock, revisions, accessors), model.c (the per-schema
 *   reverse dependencies), resolve.c (names and ids against the schema), read.c
 *   (relationship filters, preconditions, Read), write.c (write batches as named phases,
 *   delete by filter), swap.c (the one build-then-swap: schema swap and whole-graph
 *   replacement), check.c / lookup.c / expand.c (the queries, each with its entry points).
 * Locking: one writer-preferring reader-writer lock per engine (kw__engine_rdlock / _wrlock
 *   / _unlock; brlock_int.h): a "big reader" lock, so a reader writes only its own thread's
 *   cache line and reads scale with cores. Queries hold it shared for their whole run
 *   (callbacks included); writes hold it exclusively; a swap builds its new state without
 *   it and holds it only for the pointer swap. Every function below that reads `e`
 *   expects the caller to hold the lock (shared at least) unless it says otherwise.
 *   Rules: no nesting. A thread that holds the lock, either way, must not take it again
 *   (a callback run under a query must not call into the same engine): a nested read
 *   deadlocks once a writer waits (a read through a thread slot happens to survive it, a
 *   read through the shared count does not), a read or write inside one's own write
 *   aborts. kw__engine_unlock releases whichever way the thread holds it. A reader waits
 *   for at most two write batches (brlock_int.h); a writer for the readers inside and
 *   the readers the previous writer turned away. Threads may come and go freely (slots
 *   are handed back when a thread exits; past KW_BRLOCK_SLOTS live readers, the rest share
 *   one count).
 * Errors: as in authz.h; the kw__resolve_* and filter helpers set diag.
 */
#ifndef KW_AUTHZ_ENGINE_INT_H
#define KW_AUTHZ_ENGINE_INT_H

#include "authz/brlock_int.h"
#include "authz/graph_int.h"

#include <pthread.h>

/* ---- the per-schema model (model.c) ---- */

/* Reverse dependency of (type, rel) for LookupResources: when object X of `type` has
 * `rel`, then either X has `perm` (same object, arrow_rel == KW_REL_NONE), or every
 * object R of `res_type` with R#arrow_rel@X may have `perm`. */
typedef struct kw_revdep {
    uint16_t res_type;
    uint16_t perm;
    uint16_t arrow_rel;
} kw_revdep_t;

typedef struct kw_revdeps {
    kw_revdep_t *v;
    uint32_t n, cap;
} kw_revdeps_t;

typedef struct kw_model {
    kw_schema_t *schema;
    uint32_t *rel_base; /* rel_base[t] = index of (t, 0) into per-(type,rel) arrays */
    uint32_t n_pairs;
    kw_revdeps_t *revdeps; /* per (type, rel) */
    uint8_t *rel_attrs;    /* per (type, rel): 1 when an allowed type has a caveat or expiry */
    uint64_t gen;          /* unique per model in the process, never 0: keys name caches */
} kw_model_t;

/* Lets a check skip the attribute table on relations that cannot have attributes. */
static inline void kw__ck_model(kw_ck_t *c, const kw_model_t *m)
{
    c->rel_attrs = m->rel_attrs;
    c->rel_base = m->rel_base;
}

/* Takes ownership of `s` (freed on failure too). KW_ENOMEM. */
KW_NODISCARD int kw__model_new(kw_schema_t *s, kw_model_t **out);
void kw__model_free(kw_model_t *m);
/* Approximate heap bytes held by `m` (0 for NULL). */
size_t kw__model_memory(const kw_model_t *m);

/* ---- LookupResources' planned path (lookup_plan.c) ---- */

/* Called with each result of a planned lookup: v is KW_CK_YES or KW_CK_COND (then c->miss
 * names the missing parameters). Non-zero stops the lookup and is returned. */
typedef int (*kw__lp_emit_fn)(uint32_t node, int v, const kw_ck_t *c, void *ud);
/* Every object of type t holding (t, r) for c's subject (set with kw__ck_subject), each
 * once, through the plan of lookup_plan.c. KW_EAGAIN (nothing emitted, diag untouched)
 * when the permission's shape is not planned (it depends on itself): run the general
 * path. Else KW_OK, emit's value, or KW_EBUDGET / KW_ENOMEM / a Check error with diag.
 * *work (may be NULL) gets the steps spent. The engine's lock is held by the caller. */
KW_NODISCARD int kw__lookup_plan_resources(kw_ck_t *c, const kw_model_t *m, uint16_t t, uint16_t r,
                                           kw__lp_emit_fn emit, void *ud, uint64_t *work,
                                           kw_diag_t *diag);

/* Which path a LookupResources or LookupSubjects takes: the engine's choice (planned, else
 * the general walk), the general walk alone, or the plan alone (KW_EAGAIN when it is not
 * planned). */
enum { KW__LK_AUTO = 0, KW__LK_GENERAL, KW__LK_PLAN };
/* kw_engine_lookup_resources_ctx by one path (lookup.c): lets the tests compare them. */
KW_NODISCARD int kw__engine_lookup_resources_path(kw_engine_t *e, kw_str_t resource_type,
                                                  kw_str_t permission, kw_subject_t subject,
                                                  kw_str_t context, int path, kw_resource_cb cb,
                                                  void *ud, kw_diag_t *diag);
/* Called with the wildcard subject of a planned LookupSubjects (after every concrete one),
 * v as above, excl the concrete subjects it excludes (borrowed for the call). */
typedef int (*kw__lp_wild_fn)(const uint32_t *excl, size_t n_excl, int v, const kw_ck_t *c,
                              void *ud);
/* Every subject (node of stype, subject relation srel or KW_REL_NONE) holding rnode#r, each
 * once, through LookupSubjects' plan (lookup_plan.c), with emit as above and emit_wild for
 * the wildcard: the walk's answer, exclusions included. KW_EAGAIN (nothing emitted) when
 * not planned: the permission depends on itself, or a wildcard of stype is met by a plan
 * that skipped branches (an intersection or an exclusion). c has the query's context; its
 * subject is changed. */
KW_NODISCARD int kw__lookup_plan_subjects(kw_ck_t *c, const kw_model_t *m, uint32_t rnode,
                                          uint16_t r, uint16_t stype, uint16_t srel,
                                          kw__lp_emit_fn emit, kw__lp_wild_fn emit_wild, void *ud,
                                          uint64_t *work, kw_diag_t *diag);
/* kw_engine_lookup_subjects_ctx by one path (KW__LK_*): lets the tests compare them. */
KW_NODISCARD int kw__engine_lookup_subjects_path(kw_engine_t *e, kw_object_t resource,
                                                 kw_str_t permission, kw_str_t subject_type,
                                                 kw_str_t subject_relation, kw_str_t context,
                                                 int path, kw_subject_cb cb, void *ud,
                                                 kw_diag_t *diag);

/* ---- the change history and snapshots (history.c) ---- */

/* One relationship a batch changed: its identity, and with `had` its state before the
 * batch (caveat, context, expiry); without `had` it was absent. Strings point into the
 * batch's own block. */
typedef struct kw_hchange {
    kw_rel_t rel;
    bool had;
} kw_hchange_t;

/* The changes one revision applied, with what each replaced. */
typedef struct kw_hbatch {
    kw_revision_t rev;
    kw_revision_t ext; /* its name in the caller's numbering (kw_engine_history_name); 0: none */
    int64_t mono_us;   /* when it was applied (CLOCK_MONOTONIC) */
    kw_hchange_t *v;   /* one allocation: the changes, then their strings */
    size_t n;
    size_t bytes;
} kw_hbatch_t;

typedef struct kw_snapshot kw_snapshot_t;

/* The bounded log of applied changes (under the engine lock) and the cache of snapshot
 * engines materialized from it (under `mu`). */
typedef struct kw_history {
    kw_hbatch_t *b; /* b[first .. n) in revision order */
    size_t first, n, cap;
    size_t n_changes, bytes;
    kw_revision_t base;   /* the oldest revision the log can rebuild */
    const char *base_why; /* why it starts there (static text) */
    /* Names in the caller's numbering (a store's revisions; 0: never named, the engine's
     * own revisions are the names): of `base`, and the last one given with the engine
     * revision it named. */
    kw_revision_t base_ext, cur_ext, cur_ext_rev;
    int64_t window_us;  /* keep changes applied in the last window_us... */
    size_t max_changes; /* ...and at most this many (0: keep none) */
    pthread_mutex_t mu;
    bool mu_ok;
    pthread_cond_t cv; /* a snapshot being built was cached or given up */
    bool cv_ok;
    kw_snapshot_t **cache;
    size_t n_cache, cache_cap, max_cache, max_cache_bytes;
    uint64_t tick;
    kw_revision_t building[8]; /* engine revisions whose snapshot is being built */
    size_t n_building;
    uint64_t n_built; /* snapshots materialized (for tests and metrics) */
} kw_history_t;

KW_NODISCARD int kw__hist_init(kw_history_t *h);
void kw__hist_close(kw_history_t *h);
/* Does the engine keep a history (so a batch should be captured)? Lock held. */
static inline bool kw__hist_on(const kw_engine_t *e);
/* The stored relationship node#rel@snode#srel with its attributes, its strings pointing
 * into the graph and schema (valid until the graph changes). Lock held. */
void kw__hist_edge_rel(const kw_engine_t *e, uint32_t rn, uint16_t rel, uint32_t sn, uint16_t srel,
                       kw_rel_t *out);
/* Copies `n` changes into a new batch (its own block). KW_ENOMEM. */
KW_NODISCARD int kw__hist_batch_make(const kw_hchange_t *v, size_t n, kw_hbatch_t *out);
void kw__hist_batch_free(kw_hbatch_t *b);
/* After a batch was applied and the revision bumped (write lock held): appends `b` (taken
 * over), or with b NULL (not captured: too large, or out of memory) restarts the log at the
 * current revision for `why`; then trims the log to its window. */
void kw__hist_push(kw_engine_t *e, kw_hbatch_t *b, const char *why);
/* Restarts the log at the current revision (write lock held): a schema swap or a whole
 * new graph, which the log cannot undo. */
void kw__hist_reset(kw_engine_t *e, const char *why);

/* The results of a LookupResources by node (v: KW_CK_YES or KW_CK_COND, then c->miss
 * names the missing parameters; node KW_NODE_NONE, c NULL: the subject set itself, absent
 * from the graph). Non-zero stops the lookup and is returned. */
typedef int (*kw__lr_node_fn)(uint32_t node, int v, const kw_ck_t *c, void *ud);
/* kw_engine_lookup_resources_ctx's answer by node, the lock held by the caller (the
 * names buffer of conditional results is the callback's business). */
KW_NODISCARD int kw__lookup_resources_nodes(kw_engine_t *e, kw_str_t resource_type,
                                            kw_str_t permission, kw_subject_t subject,
                                            kw_str_t context, kw__lr_node_fn fn, void *ud,
                                            kw_diag_t *diag);

/* For the tests (lookup_ordered.c): the ordered lookup walks at most walk_max results per
 * call (0: never walks), gives up the walk after `probe` objects with a poor hit rate,
 * and keeps its answer as it chooses (shape 0), as a sorted list (1) or a bitmap (2). */
void kw__lr_stream_tune(kw_lr_stream_t *s, size_t walk_max, size_t probe, int shape);

/* ---- the engine (engine.c) ---- */

struct kw_engine {
    kw_brlock_t lock;
    kw_model_t *model; /* NULL until a schema is installed */
    kw_graph_t g;
    kw_revision_t rev;
    pthread_mutex_t oidx_mu; /* one builder of an id-ordered index at a time (graph_oidx.c) */
    kw_clock_fn clock;       /* NULL: the system wall clock */
    void *clock_ud;
    kw_history_t hist;
};

static inline bool kw__hist_on(const kw_engine_t *e)
{
    return e->hist.max_changes > 0;
}

/* The instant a query compares expiries against: the engine clock when the graph holds
 * any expiring relationship, else 0 without reading a clock (nothing can be expired:
 * relationships without expiry cost nothing). Lock held. */
int64_t kw__engine_clock(const kw_engine_t *e);
static inline int64_t kw__engine_query_now(const kw_engine_t *e)
{
    return e->g.attrs.n_expiring ? kw__engine_clock(e) : 0;
}

void kw__engine_rdlock(kw_engine_t *e);
void kw__engine_wrlock(kw_engine_t *e);
void kw__engine_unlock(kw_engine_t *e);
/* Sets diag to "no schema is installed"; returns KW_ESCHEMA. */
int kw__engine_no_schema(kw_diag_t *diag);
/* KW_EINVAL unless `at` is 0 or newer than the engine's revision (write lock held). */
KW_NODISCARD int kw__engine_check_at(const kw_engine_t *e, kw_revision_t at, kw_diag_t *diag);
/* Moves the engine to revision `at` (0: the next one) and reports it in *rev (may be
 * NULL). Write lock held. */
void kw__engine_bump(kw_engine_t *e, kw_revision_t at, kw_revision_t *rev);

/* ---- Check (check.c) ---- */

/* kw_engine_check_ctx without its fast paths (tag-kw-check-direct): every check through
 * the general evaluation, for tests that compare the two on random graphs. */
KW_NODISCARD int kw__engine_check_general(kw_engine_t *e, kw_object_t resource, kw_str_t permission,
                                          kw_subject_t subject, kw_str_t context,
                                          kw_check_result_t *result, kw_buf_t *missing,
                                          kw_revision_t *rev, kw_diag_t *diag);

/* ---- names and ids against the schema (resolve.c) ---- */

/* A relationship resolved against a schema. */
typedef struct kw_rrel {
    uint16_t rtype, rel, stype, srel;
    bool wild;
    uint16_t caveat; /* KW_CAVEAT_NONE: none */
} kw_rrel_t;

/* Is `rel` the empty subject relation or "..."? */
bool kw__is_ellipsis(kw_str_t rel);
/* SpiceDB's object id grammar [a-zA-Z0-9/_|\-=+]{1,1024} ("*" is not an id). */
bool kw__id_ok(kw_str_t id);
/* KW_EINVAL with a message saying why `id` (of a `what`: "resource", "subject") is bad. */
int kw__bad_id(kw_diag_t *diag, const char *what, kw_str_t id);
/* Resolves and validates one relationship for writing: types, relation (not a
 * permission), ids, wildcard, subject type allowed with the relationship's caveat and
 * expiration traits (the caveat index goes to *caveat; KW_CAVEAT_NONE without one).
 * KW_EINVAL. */
KW_NODISCARD int kw__resolve_rel(const kw_schema_t *s, const kw_rel_t *r, kw_rrel_t *out,
                                 kw_diag_t *diag);
/* The names of the last few plain relationships kw__resolve_rel_memo resolved in full (no
 * caveat, context, expiry or wildcard): the next one with the same four names only needs
 * its ids checked. Zero-initialize; it borrows the names of the batch it is used on. */
#define KW_RESOLVE_MEMO_N 8
typedef struct kw_resolve_memo {
    struct {
        kw_str_t rtype, rel, stype, srel;
        kw_rrel_t rr;
    } e[KW_RESOLVE_MEMO_N];
    unsigned n, next; /* entries in use; the one to replace next */
} kw_resolve_memo_t;
/* kw__resolve_rel with `memo` remembering recent plain relationships: same result and
 * same messages, fewer schema lookups for a batch that repeats a few name tuples. */
KW_NODISCARD int kw__resolve_rel_memo(const kw_schema_t *s, const kw_rel_t *r, kw_rrel_t *out,
                                      kw_resolve_memo_t *memo, kw_diag_t *diag);
/* Builds the attribute record of a resolved relationship (nodes still unset): copies the
 * context and binds it to the caveat's program. *has is false (and *out untouched) for a
 * relationship without caveat and expiry. KW_EINVAL (the context does not bind; diag
 * names the relationship), KW_ENOMEM. */
KW_NODISCARD int kw__attr_make(const kw_schema_t *s, const kw_rrel_t *rr, const kw_rel_t *r,
                               kw_attr_t *out, bool *has, kw_diag_t *diag);
/* `type:id#rel@type:id[#rel]` into buf (ids cut at 80 bytes), for messages. */
void kw__fmt_rel(const kw_rel_t *r, char *buf, size_t cap);
/* The name of relation `rel` of `type`, or "" for KW_REL_NONE. */
kw_str_t kw__rel_name(const kw_schema_t *s, uint16_t type, uint16_t rel);
/* Resolves a query's resource type and permission (or relation). KW_EINVAL. */
KW_NODISCARD int kw__resolve_perm(const kw_engine_t *e, kw_str_t type, kw_str_t perm, uint16_t *t,
                                  uint16_t *r, kw_diag_t *diag);
/* Resolves a subject for a query: type and relation indices, node (may be
 * KW_NODE_NONE; not looked up when snode is NULL). KW_EINVAL with a message for unknown
 * types/relations and bad ids. */
KW_NODISCARD int kw__resolve_subject(const kw_engine_t *e, kw_subject_t subj, uint16_t *stype,
                                     uint16_t *srel, uint32_t *snode, kw_diag_t *diag);

/* ---- relationship filters (read.c) ---- */

/* A kw_filter_t resolved against the installed schema and graph. */
typedef struct kw_cfilter {
    uint16_t rtype, rel; /* rel KW_REL_NONE = any */
    bool rid_set, has_subject, stype_set, sid_set, srel_set;
    uint16_t stype, srel;
    uint32_t rnode, snode; /* when rid_set / sid_set (KW_NODE_NONE: matches nothing) */
    kw_str_t rid, sid;
    int64_t now; /* relationships expired at this instant match nothing */
} kw_cfilter_t;

/* The stored relationships matching a filter, as (resource node, fwd edge) pairs. */
typedef struct kw_matches {
    uint32_t *rnodes;
    kw_edge_t *edges;
    size_t n, cap;
} kw_matches_t;

KW_NODISCARD int kw__filter_compile(const kw_engine_t *e, const kw_filter_t *f, kw_cfilter_t *cf,
                                    kw_diag_t *diag);
/* Collects every match of cf into m (KW_ENOMEM; m then holds a prefix). */
KW_NODISCARD int kw__filter_collect(const kw_graph_t *g, const kw_cfilter_t *cf, kw_matches_t *m);
void kw__matches_free(kw_matches_t *m);
/* KW_OK when every precondition holds, else KW_EPRECOND (or KW_ELIMIT, KW_EINVAL). */
KW_NODISCARD int kw__check_preconditions(const kw_engine_t *e, const kw_precondition_t *pre,
                                         size_t n_pre, kw_diag_t *diag);

#endif
