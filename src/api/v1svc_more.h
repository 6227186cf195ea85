/*
 * api/v1svc_more.h - the rest of the v1 service layer, beside v1svc.h and under its
 * rules (status, consistency, cursors, "a codec never decides an answer"):
 *   SchemaService   ReflectSchema, ComputablePermissions, DependentRelations, DiffSchema
 *                   (v1svc_reflect.c, over authz/reflect.c);
 *   WatchService    Watch (v1svc_watch.c, over the sync module's watch hub);
 *   PermissionsService ImportBulkRelationships, ExportBulkRelationships (v1svc_bulk.c).
 *
 * Ownership: requests are the caller's, read during the call. Unary results are allocated
 *   from the request's arena. Streamed results are valid during the emit call only.
 * Threads: any thread, many at once. Watch blocks its caller for the life of the watch
 *   (until the client goes, it is cut off, or the server stops: kw_api_stop_streams).
 * Errors: KW_OK or a negative KW_E* with *st filled as v1svc.h says.
 */
#ifndef KW_API_V1SVC_MORE_H
#define KW_API_V1SVC_MORE_H

#include "v1svc.h"

/* ---- SchemaService: reflection (v1svc_reflect.c) ---- */

typedef struct kw_v1_reflect_req {
    kw_v1_consistency_t consistency;
    const kw_reflect_filter_t *filters; /* optionalFilters */
    size_t n_filters;
    kw_arena_t *arena; /* the response is allocated here */
} kw_v1_reflect_req_t;

typedef struct kw_v1_reflect_resp {
    kw_revision_t read_at;
    kw_reflect_def_t *defs; /* in schema order */
    size_t n_defs;
    kw_reflect_caveat_t *caveats; /* in schema order */
    size_t n_caveats;
} kw_v1_reflect_resp_t;

KW_NODISCARD int kw_v1_reflect_schema(kw_api_t *svc, const kw_v1_reflect_req_t *req,
                                      kw_v1_reflect_resp_t *resp, kw_v1_status_t *st);

typedef struct kw_v1_relref_req {
    kw_v1_consistency_t consistency;
    kw_str_t definition;
    kw_str_t relation;          /* ComputablePermissions: may be empty; DependentRelations:
                                   the permission */
    kw_str_t definition_filter; /* ComputablePermissions' optionalDefinitionNameFilter */
    kw_arena_t *arena;
} kw_v1_relref_req_t;

typedef struct kw_v1_relref_resp {
    kw_revision_t read_at;
    kw_reflect_ref_t *refs; /* sorted by (definition, relation) */
    size_t n_refs;
} kw_v1_relref_resp_t;

KW_NODISCARD int kw_v1_computable_permissions(kw_api_t *svc, const kw_v1_relref_req_t *req,
                                              kw_v1_relref_resp_t *resp, kw_v1_status_t *st);
KW_NODISCARD int kw_v1_dependent_relations(kw_api_t *svc, const kw_v1_relref_req_t *req,
                                           kw_v1_relref_resp_t *resp, kw_v1_status_t *st);

typedef struct kw_v1_diff_req {
    kw_v1_consistency_t consistency;
    kw_str_t comparison_schema;
    kw_arena_t *arena;
} kw_v1_diff_req_t;

typedef struct kw_v1_diff_resp {
    kw_revision_t read_at;
    kw_schema_diff_t *diffs; /* in authz.h's documented order */
    size_t n_diffs;
} kw_v1_diff_resp_t;

KW_NODISCARD int kw_v1_diff_schema(kw_api_t *svc, const kw_v1_diff_req_t *req,
                                   kw_v1_diff_resp_t *resp, kw_v1_status_t *st);

/* ---- WatchService (v1svc_watch.c) ---- */

typedef struct kw_v1_watch_req {
    const kw_str_t *object_types; /* optionalObjectTypes */
    size_t n_object_types;
    const kw_filter_t *filters;  /* optionalRelationshipFilters (resource_type may be "") */
    const kw_str_t *id_prefixes; /* their optionalResourceIdPrefix (may be NULL) */
    size_t n_filters;
    bool has_start; /* optionalStartCursor given: watch from after start */
    kw_revision_t start;
    bool checkpoints;        /* WATCH_KIND_INCLUDE_CHECKPOINTS asked for */
    bool schema_updates;     /* WATCH_KIND_INCLUDE_SCHEMA_UPDATES asked for (refused) */
    bool relationship_kinds; /* the kinds include relationship updates (or none given) */
} kw_v1_watch_req_t;

/* One WatchResponse: the changes of one revision (updates non-empty), or a checkpoint
 * (no update; is_checkpoint is what the client asked for; without it the transport sends
 * nothing and may only test that its client is still there). */
typedef struct kw_v1_watch_event {
    kw_revision_t changes_through;
    const kw_update_t *updates; /* op KW_OP_TOUCH or KW_OP_DELETE */
    size_t n_updates;
    bool checkpoint;
    bool is_checkpoint; /* send it as WatchResponse.isCheckpoint */
} kw_v1_watch_event_t;
typedef int (*kw_v1_watch_fn)(void *ud, const kw_v1_watch_event_t *ev);

/* Streams every relationship change committed after the start (default: the revision the
 * instance has applied now), on this instance or any other of the database, until emit
 * refuses (CANCELLED), the watcher falls too far behind (RESOURCE_EXHAUSTED, SpiceDB's
 * "watch disconnected"), the start is older than the changelog keeps (OUT_OF_RANGE) or
 * the server stops (UNAVAILABLE). Never returns KW_OK. */
KW_NODISCARD int kw_v1_watch(kw_api_t *svc, const kw_v1_watch_req_t *req, kw_v1_watch_fn emit,
                             void *ud, kw_v1_status_t *st);
/* The start of a watch without one: the newer of what this instance has applied and what
 * the store has committed now. A transport that answers before kw_v1_watch runs (headers
 * out first) fixes the start with this BEFORE answering, so that a change its client makes
 * after seeing the answer is never before the start. */
kw_revision_t kw_v1_watch_now(kw_api_t *svc);

/* ---- PermissionsService: bulk (v1svc_bulk.c) ---- */

/* SpiceDB's MaxBulkExportRelationshipsLimit (its default): also the default batch. */
#define KW_V1_MAX_EXPORT_LIMIT 10000u

typedef struct kw_v1_export_req {
    kw_v1_consistency_t consistency;
    uint32_t limit; /* relationships per response; 0: KW_V1_MAX_EXPORT_LIMIT */
    kw_v1_cursor_t cursor;
    bool has_filter; /* optionalRelationshipFilter */
    kw_filter_t filter;
    kw_str_t resource_id_prefix;
} kw_v1_export_req_t;

typedef struct kw_v1_export_batch {
    kw_revision_t read_at;
    const kw_rel_t *rels;
    size_t n_rels;
    const char *cursor; /* afterResultCursor: resumes after the batch's last relationship */
} kw_v1_export_batch_t;
typedef int (*kw_v1_export_fn)(void *ud, const kw_v1_export_batch_t *b);

/* Every stored relationship matching the filter, in (resource type, resource id,
 * relation, subject type, subject id, subject relation) order, in batches of `limit`,
 * read from one store snapshot as the client takes them: memory stays at one batch. */
KW_NODISCARD int kw_v1_export_bulk(kw_api_t *svc, const kw_v1_export_req_t *req,
                                   kw_v1_export_fn emit, void *ud, kw_v1_status_t *st);

/* ImportBulkRelationships: the relationships come from `next` (the transport's decoder of
 * the streamed request: KW_OK and *rel with more, KW_ENOTFOUND at the end, another code on
 * a malformed message, with diag), are validated against the schema and CREATEd in ONE
 * store transaction, and applied to the graph when it commits. A relationship that
 * exists already fails the whole import (ALREADY_EXISTS), as in SpiceDB. *n_loaded: how
 * many were written. */
typedef int (*kw_v1_import_next_fn)(void *ud, kw_rel_t *rel, kw_diag_t *diag);
/* Asked once, after the last relationship is written and right before the transaction
 * commits: is the client still there? KW_OK commits; KW_EIO (cancelled: RST_STREAM, a
 * closed connection) or KW_ETIMEOUT (its deadline passed) rolls the whole import back and
 * the RPC fails CANCELLED / DEADLINE_EXCEEDED: a client told "cancelled" must not find
 * the import written. (A cancel that arrives after this question is too late, as for any
 * server.) NULL: the transport cannot tell (always commits). */
typedef int (*kw_v1_import_alive_fn)(void *ud);
KW_NODISCARD int kw_v1_import_bulk(kw_api_t *svc, kw_v1_import_next_fn next,
                                   kw_v1_import_alive_fn alive, void *ud, uint64_t *n_loaded,
                                   kw_revision_t *written_at, kw_v1_status_t *st);

#endif
