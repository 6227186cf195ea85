/*
 * api/v1svc.h - SpiceDB's authzed.api.v1 services as C functions over the engine, the
 * store and the sync module: the ONE place the logic of every /v1 RPC lives. A codec (the
 * HTTP/JSON gateway of v1.c + v1_codec.c + v1_json_*.c; the gRPC codec of issue 13) only
 * decodes a request message into the structs below, calls the function and encodes what
 * comes back. A codec never decides an answer: limits, refusals of what keyward does not
 * implement, cursors, consistency and the mapping of engine errors onto gRPC codes and
 * ERROR_REASON_* are all here (v1svc.c, v1svc_rel.c, v1svc_perm.c, v1svc_schema.c).
 *
 * Calling an RPC:
 *   1. the transport authenticates (admins and preshared keys only) and decodes;
 *   2. it waits until the instance is as fresh as the request's consistency asks
 *      (kw_v1_consistency_wait gives the revision and whether to catch up with the store:
 *      the HTTP codec parks the request meanwhile, another transport may block);
 *   3. it calls kw_v1_<rpc>(svc, &req, &resp or emit, &st).
 * Unary RPCs fill a response struct. Streamed RPCs (ReadRelationships, LookupResources,
 * LookupSubjects) call an emit callback once per result, in a stable order, WITHOUT any
 * lock held: the callback may block (that is how backpressure reaches the producer: a
 * transport whose send buffer is full simply does not return until there is room) and
 * returns KW_OK to go on or a negative KW_E* to stop the RPC (a client that went away:
 * KW_EIO), which the RPC then returns as is. Every streamed result carries its
 * afterResultCursor; a request's cursor resumes exactly after the result that carried it.
 *
 * Cursors (v1svc.c): opaque base64url text binding the RPC, the request's shape (every
 * field but the cursor, the limit and the consistency), the revision the page was read
 * at and the position of the result in the RPC's order, under a MAC keyed by the
 * server's keyring (derived from the master key kept in the database, so a cursor works
 * after a restart and on every instance of the same database). A cursor that does not
 * decode or verify: INVALID_ARGUMENT / ERROR_REASON_INVALID_CURSOR; one minted for another
 * RPC or request shape: FAILED_PRECONDITION / ERROR_REASON_INVALID_CURSOR (SpiceDB's
 * answers). keyward keeps no snapshot of old revisions, so a resumed page is read at the
 * current revision, after the cursor's position in the RPC's stable order (docs/API.md).
 *
 * Ownership: request structs are the caller's and are only read during the call (their
 *   strings may point into the caller's decoded message). Results handed to an emit
 *   callback, and their strings, are valid during the callback only. Unary responses
 *   point into `svc->arena`-free memory described per struct (the caller's arena when one
 *   is passed, else fixed-size fields).
 * Threads: every function may be called from any thread, many at once. A streamed RPC
 *   holds no lock while its callback runs. kw_v1_status_t is the caller's.
 * Errors: KW_OK, or a negative KW_E* with *st filled: the gRPC code, a client-safe message
 *   and SpiceDB's ErrorInfo (reason + metadata) when SpiceDB gives one. A streamed RPC may
 *   fail after some results were emitted: the transport then ends its stream with the
 *   error (one {"error": ...} line over HTTP).
 */
#ifndef KW_API_V1SVC_H
#define KW_API_V1SVC_H

#include "authz/authz.h"

typedef struct kw_api kw_api_t;

/* Who makes a mutating call, for its audit event (appended in the write's own
 * transaction): the principal as the log names it, the request id, and an arena (the
 * request's) for the event's strings. Every transport fills it; NULL is refused. */
typedef struct kw_v1_caller {
    kw_str_t actor;
    kw_str_t request_id;
    kw_arena_t *arena;
} kw_v1_caller_t;

/* ---- status: a gRPC status with SpiceDB's ErrorInfo ---- */

/* gRPC status codes (google.rpc.Code). */
enum {
    KW_GRPC_OK = 0,
    KW_GRPC_CANCELLED = 1,
    KW_GRPC_UNKNOWN = 2,
    KW_GRPC_INVALID_ARGUMENT = 3,
    KW_GRPC_DEADLINE_EXCEEDED = 4,
    KW_GRPC_NOT_FOUND = 5,
    KW_GRPC_ALREADY_EXISTS = 6,
    KW_GRPC_PERMISSION_DENIED = 7,
    KW_GRPC_RESOURCE_EXHAUSTED = 8,
    KW_GRPC_FAILED_PRECONDITION = 9,
    KW_GRPC_ABORTED = 10,
    KW_GRPC_OUT_OF_RANGE = 11,
    KW_GRPC_UNIMPLEMENTED = 12,
    KW_GRPC_INTERNAL = 13,
    KW_GRPC_UNAVAILABLE = 14,
    KW_GRPC_DATA_LOSS = 15,
    KW_GRPC_UNAUTHENTICATED = 16,
};

#define KW_V1_MAX_META 8
/* Room for a message: SpiceDB's validation errors list every violation of a request. */
#define KW_V1_STATUS_MSG 1024

typedef struct kw_v1_status {
    int code;           /* KW_GRPC_* (0 until an error is set) */
    const char *reason; /* "ERROR_REASON_..." (static) or NULL: no ErrorInfo */
    char msg[KW_V1_STATUS_MSG];
    size_t n_meta; /* ErrorInfo.metadata: key (static) -> value */
    const char *meta_key[KW_V1_MAX_META];
    char meta_val[KW_V1_MAX_META][160];
} kw_v1_status_t;

void kw_v1_status_clear(kw_v1_status_t *st);
/* Sets code, reason (may be NULL) and a printf message; returns `rc` (for `return
 * kw_v1_fail(st, KW_EINVAL, ...)`). */
int kw_v1_fail(kw_v1_status_t *st, int rc, int code, const char *reason, const char *fmt, ...)
    KW_PRINTF(5, 6);
/* Adds one ErrorInfo.metadata entry (key static; value copied, truncated to fit). */
void kw_v1_meta(kw_v1_status_t *st, const char *key, kw_str_t value);
/* grpc-gateway's HTTP status for a gRPC code (runtime.HTTPStatusFromCode). */
int kw_v1_http_status(int code);
/* Maps an engine/store/sync error onto st (the diag's message when it has one): the
 * schema's unknown definitions and relations are FAILED_PRECONDITION with SpiceDB's
 * reasons, malformed input INVALID_ARGUMENT, budgets RESOURCE_EXHAUSTED, the database
 * UNAVAILABLE; anything unexpected INTERNAL (logged with `request_id`, no detail given to
 * the client). Returns rc. */
int kw_v1_fail_rc(kw_v1_status_t *st, int rc, const kw_diag_t *d, const char *request_id);

/* ---- consistency ---- */

typedef enum {
    KW_V1_MINIMIZE_LATENCY = 0, /* also: consistency absent */
    KW_V1_AT_LEAST_AS_FRESH,
    KW_V1_AT_EXACT_SNAPSHOT,
    KW_V1_FULLY_CONSISTENT,
} kw_v1_consistency_kind_t;

typedef struct kw_v1_consistency {
    kw_v1_consistency_kind_t kind;
    kw_revision_t rev; /* the ZedToken's revision (AT_LEAST_AS_FRESH, AT_EXACT_SNAPSHOT) */
} kw_v1_consistency_t;

/* What the transport waits for before calling the RPC: the instance must have applied
 * *min (0: nothing), and with *full it first catches up with the store. */
void kw_v1_consistency_wait(const kw_v1_consistency_t *c, kw_revision_t *min, bool *full);

/* A cursor as a request carries it (Cursor.token); len 0: none. */
typedef kw_str_t kw_v1_cursor_t;

/* ---- PermissionsService: relationships (v1svc_rel.c) ---- */

typedef struct kw_v1_read_req {
    kw_v1_consistency_t consistency;
    kw_filter_t filter; /* resource_type may be empty: every type */
    kw_str_t resource_id_prefix;
    uint32_t limit; /* 0: no limit; at most KW_V1_MAX_READ_LIMIT */
    kw_v1_cursor_t cursor;
} kw_v1_read_req_t;

typedef struct kw_v1_read_result {
    kw_revision_t read_at;
    const kw_rel_t *rel;
    const char *cursor; /* afterResultCursor.token, NUL-terminated */
} kw_v1_read_result_t;
typedef int (*kw_v1_read_fn)(void *ud, const kw_v1_read_result_t *r);

/* SpiceDB's defaults (MaxReadRelationshipsLimit, MaxLookupResourcesLimit,
 * MaxDeleteRelationshipsLimit): a larger limit is INVALID_ARGUMENT /
 * ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT. */
#define KW_V1_MAX_READ_LIMIT 1000u
#define KW_V1_MAX_LOOKUP_LIMIT 1000u
#define KW_V1_MAX_DELETE_LIMIT 1000u

/* Relationships matching the filter, ordered by (resource type, resource id, relation,
 * subject type, subject id, subject relation). */
KW_NODISCARD int kw_v1_read_relationships(kw_api_t *svc, const kw_v1_read_req_t *req,
                                          kw_v1_read_fn emit, void *ud, kw_v1_status_t *st);

typedef struct kw_v1_write_req {
    const kw_update_t *updates;
    size_t n_updates;
    const kw_precondition_t *pre;
    size_t n_pre;
    bool has_metadata; /* optionalTransactionMetadata carried something (accepted, not kept) */
    const kw_v1_caller_t *caller;
} kw_v1_write_req_t;

/* WriteRelationships: one transaction; *written_at is its revision. */
KW_NODISCARD int kw_v1_write_relationships(kw_api_t *svc, const kw_v1_write_req_t *req,
                                           kw_revision_t *written_at, kw_v1_status_t *st);

typedef struct kw_v1_delete_req {
    kw_filter_t filter;
    kw_str_t resource_id_prefix;
    const kw_precondition_t *pre;
    size_t n_pre;
    uint32_t limit; /* 0: no limit */
    bool allow_partial;
    bool has_metadata;
    const kw_v1_caller_t *caller;
} kw_v1_delete_req_t;

typedef struct kw_v1_delete_resp {
    kw_revision_t deleted_at;
    bool partial; /* DELETION_PROGRESS_PARTIAL: more matched than the limit */
    uint64_t n_deleted;
} kw_v1_delete_resp_t;

KW_NODISCARD int kw_v1_delete_relationships(kw_api_t *svc, const kw_v1_delete_req_t *req,
                                            kw_v1_delete_resp_t *resp, kw_v1_status_t *st);

/* ---- PermissionsService: permissions (v1svc_perm.c) ---- */

typedef enum {
    KW_V1_PERM_NO = 1,          /* PERMISSIONSHIP_NO_PERMISSION */
    KW_V1_PERM_HAS = 2,         /* PERMISSIONSHIP_HAS_PERMISSION */
    KW_V1_PERM_CONDITIONAL = 3, /* PERMISSIONSHIP_CONDITIONAL_PERMISSION */
} kw_v1_permissionship_t;

typedef struct kw_v1_check_req {
    kw_v1_consistency_t consistency;
    kw_object_t resource;
    kw_str_t permission;
    kw_subject_t subject;
    kw_str_t context; /* google.protobuf.Struct as JSON object text; len 0: none */
    bool with_tracing;
    kw_arena_t *arena; /* the response's missing-context names */
} kw_v1_check_req_t;

/* Caveats (issue 11): an answer that depends on caveat parameters neither the
 * relationships nor the request's `context` give is CONDITIONAL, and `missing` lists
 * those parameters (PartialCaveatInfo.missingRequiredContext), comma-separated. */
typedef struct kw_v1_check_resp {
    kw_revision_t checked_at;
    kw_v1_permissionship_t permissionship;
    kw_str_t missing; /* CONDITIONAL only; in req->arena */
    /* withTracing: the check's debug trace (DebugInformation.check) and the schema text it
     * was evaluated under (schemaUsed), in req->arena; NULL / empty otherwise. */
    const kw_trace_t *trace;
    kw_str_t schema_used;
} kw_v1_check_resp_t;

KW_NODISCARD int kw_v1_check(kw_api_t *svc, const kw_v1_check_req_t *req, kw_v1_check_resp_t *resp,
                             kw_v1_status_t *st);

typedef struct kw_v1_bulk_item {
    kw_object_t resource;
    kw_str_t permission;
    kw_subject_t subject;
    kw_str_t context;
    /* out: the pair's answer, or its error */
    kw_v1_permissionship_t permissionship;
    kw_str_t missing;        /* CONDITIONAL only; in the request's arena */
    kw_v1_status_t *error;   /* NULL: answered; else from the caller's arena */
    const kw_trace_t *trace; /* withTracing: the item's debug trace (request's arena) */
} kw_v1_bulk_item_t;

typedef struct kw_v1_bulk_req {
    kw_v1_consistency_t consistency;
    kw_v1_bulk_item_t *items; /* answers are written into the items */
    size_t n_items;           /* at most KW_V1_MAX_BULK_ITEMS */
    bool with_tracing;
    kw_arena_t *arena;    /* item errors and scratch */
    kw_str_t schema_used; /* out, withTracing: the schema text the items were traced under */
} kw_v1_bulk_req_t;

#define KW_V1_MAX_BULK_ITEMS 1000u

KW_NODISCARD int kw_v1_check_bulk(kw_api_t *svc, kw_v1_bulk_req_t *req, kw_revision_t *checked_at,
                                  kw_v1_status_t *st);

typedef struct kw_v1_lr_req {
    kw_v1_consistency_t consistency;
    kw_str_t resource_type;
    kw_str_t permission;
    kw_subject_t subject;
    kw_str_t context;
    uint32_t limit; /* 0: no limit; at most KW_V1_MAX_LOOKUP_LIMIT */
    kw_v1_cursor_t cursor;
} kw_v1_lr_req_t;

typedef struct kw_v1_lr_result {
    kw_revision_t looked_up_at;
    kw_str_t resource_id;
    kw_v1_permissionship_t permissionship; /* HAS or CONDITIONAL (LOOKUP_PERMISSIONSHIP_*) */
    kw_str_t missing;                      /* CONDITIONAL: the missing parameters */
    const char *cursor;
} kw_v1_lr_result_t;
typedef int (*kw_v1_lr_fn)(void *ud, const kw_v1_lr_result_t *r);

/* LookupResources, ordered by resource id (bytewise). */
KW_NODISCARD int kw_v1_lookup_resources(kw_api_t *svc, const kw_v1_lr_req_t *req, kw_v1_lr_fn emit,
                                        void *ud, kw_v1_status_t *st);

typedef enum {
    KW_V1_WILDCARD_INCLUDE = 0, /* WILDCARD_OPTION_UNSPECIFIED / _INCLUDE_WILDCARDS */
    KW_V1_WILDCARD_EXCLUDE,     /* WILDCARD_OPTION_EXCLUDE_WILDCARDS */
} kw_v1_wildcard_t;

typedef struct kw_v1_ls_req {
    kw_v1_consistency_t consistency;
    kw_object_t resource;
    kw_str_t permission;
    kw_str_t subject_type;
    kw_str_t subject_relation;
    kw_str_t context;
    uint32_t concrete_limit; /* 0: none (a page of that many results; see docs/API.md) */
    kw_v1_cursor_t cursor;
    kw_v1_wildcard_t wildcard;
} kw_v1_ls_req_t;

typedef struct kw_v1_ls_result {
    kw_revision_t looked_up_at;
    kw_str_t subject_id; /* "*" for the wildcard */
    const kw_str_t *excluded;
    size_t n_excluded;
    kw_v1_permissionship_t permissionship;
    kw_str_t missing; /* CONDITIONAL: the missing parameters */
    const char *cursor;
} kw_v1_ls_result_t;
typedef int (*kw_v1_ls_fn)(void *ud, const kw_v1_ls_result_t *r);

/* LookupSubjects, ordered by subject id (bytewise; the wildcard "*" sorts as its text). */
KW_NODISCARD int kw_v1_lookup_subjects(kw_api_t *svc, const kw_v1_ls_req_t *req, kw_v1_ls_fn emit,
                                       void *ud, kw_v1_status_t *st);

typedef struct kw_v1_expand_req {
    kw_v1_consistency_t consistency;
    kw_object_t resource;
    kw_str_t permission;
    kw_arena_t *arena; /* the tree is allocated here */
} kw_v1_expand_req_t;

typedef struct kw_v1_expand_resp {
    kw_revision_t expanded_at;
    kw_expand_t *tree;
} kw_v1_expand_resp_t;

KW_NODISCARD int kw_v1_expand(kw_api_t *svc, const kw_v1_expand_req_t *req,
                              kw_v1_expand_resp_t *resp, kw_v1_status_t *st);

/* ---- SchemaService (v1svc_schema.c) ---- */

/* ReadSchema: the text is appended to *text (the caller's buffer). NOT_FOUND when no
 * schema was written. */
KW_NODISCARD int kw_v1_read_schema(kw_api_t *svc, kw_buf_t *text, kw_revision_t *read_at,
                                   kw_v1_status_t *st);
/* WriteSchema: compiled, tried, swapped in and stored (sync/commit.c). */
KW_NODISCARD int kw_v1_write_schema(kw_api_t *svc, const kw_v1_caller_t *caller, kw_str_t schema,
                                    kw_revision_t *written_at, kw_v1_status_t *st);

#endif
