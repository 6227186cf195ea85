/*
 * api/v1_int.h - what the files of the /v1 API (SpiceDB's v1 HTTP/JSON gateway shapes)
 * share: the request gate (v1.c), the JSON codec and error answers (v1_codec.c). One file
 * per SpiceDB service uses them: v1_relationships.c (Read/Write/DeleteRelationships),
 * v1_permissions.c (Check, CheckBulk, Expand, LookupResources, LookupSubjects),
 * v1_schema.c (ReadSchema, WriteSchema). Not a public header.
 *
 * Ownership: a parsed kw_str_t / kw_object_t / kw_subject_t / kw_rel_t / kw_filter_t points
 *   into the jansson tree it was parsed from (the request body): valid until that tree is
 *   json_decref()ed. Arrays come from the arena passed in. The json_t builders return a
 *   new reference (NULL on OOM); functions documented as stealing take one.
 * Threads: every function here is reentrant; the handlers run on the HTTP workers.
 *   kw__v1_hold holds the graph still (kw_sync_hold: the sync write mutex) for the length
 *   of one engine read (the engine's own lock is taken under it, the order of sync/sync.h).
 * Errors: parsers return false with a client-safe message and a gRPC code in the
 *   kw__v1_perr_t; answers are written into resp as {"detail": m, "code": <gRPC code>,
 *   "message": m}, with grpc-gateway's HTTP status for the code.
 */
#ifndef KW_API_V1_INT_H
#define KW_API_V1_INT_H

#include "api_int.h"

/* gRPC status codes (google.rpc.Code) carried in the "code" of an error body. */
enum {
    KW__GRPC_INVALID_ARGUMENT = 3,
    KW__GRPC_NOT_FOUND = 5,
    KW__GRPC_ALREADY_EXISTS = 6,
    KW__GRPC_PERMISSION_DENIED = 7,
    KW__GRPC_RESOURCE_EXHAUSTED = 8,
    KW__GRPC_FAILED_PRECONDITION = 9,
    KW__GRPC_OUT_OF_RANGE = 11,
    KW__GRPC_UNIMPLEMENTED = 12,
    KW__GRPC_INTERNAL = 13,
    KW__GRPC_UNAVAILABLE = 14,
    KW__GRPC_UNAUTHENTICATED = 16,
};

/* The members a request message may carry: camelCase JSON names, NULL-terminated. Every
 * one is either honoured or refused by its handler with an error naming it; any other member
 * is refused (tag-kw-v1-refuse). `consistency` among them makes the gate honour it. */
typedef struct {
    const char *name; /* the proto message, for error messages: "CheckPermissionRequest" */
    const char *const *fields;
} kw__v1_msg_t;

/* What the request's consistency asks of the answer. */
typedef struct {
    bool exact;        /* atExactSnapshot: answer at exactly `rev` */
    kw_revision_t rev; /* its revision */
    bool held;         /* kw__v1_hold took the write mutex (kw__v1_release gives it back) */
} kw__v1_snap_t;

/* ---- v1.c: the gate every RPC passes first ---- */
/* Authenticates (401 / 503 rewritten with the gateway's fields), requires an administrator
 * (403), checks X-Keyward-Revision (422), parses the body as a JSON object (422; duplicate
 * members 400), refuses members `msg` does not list (400/3), applies its `consistency`
 * (400 when malformed) and waits for it (503). Returns the body (the caller json_decref()s
 * it) with *snap filled, or NULL with the answer written. */
json_t *kw__v1_begin(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                     const kw__v1_msg_t *msg, kw__v1_snap_t *snap);
/* Right before a read of the engine: *rev gets the revision the answer is at. Without
 * atExactSnapshot that is the applied revision, read before the engine is. With it, the
 * write mutex is taken (no write or catch-up can move the graph meanwhile) and the
 * snapshot's revision must be the applied one: keyward keeps no older snapshot, so any other
 * is refused, 501/12 naming both (false, the answer written, nothing held). Pair every true
 * return with kw__v1_release right after the engine call. */
KW_NODISCARD bool kw__v1_hold(kw_api_t *api, kw__v1_snap_t *snap, kw_http_resp_t *resp,
                              kw_revision_t *rev);
void kw__v1_release(kw_api_t *api, kw__v1_snap_t *snap);

/* ---- v1_codec.c: errors ---- */
/* Replaces resp with an error body {"detail": msg, "code": code, "message": msg}. */
void kw__v1_error(kw_http_resp_t *resp, int status, int code, const char *msg);
/* Maps an engine/store error (d's message when it has one) to the v1 error answer; an
 * unexpected code is logged with the request id and answered 500 without details. */
void kw__v1_fail(kw_http_req_t *req, kw_http_resp_t *resp, int rc, const kw_diag_t *d);

/* ---- v1_codec.c: decoding ---- */
/* A decoding error: code KW__GRPC_INVALID_ARGUMENT (400) for input keyward cannot accept,
 * KW__GRPC_UNIMPLEMENTED (501) for a member asking for a feature keyward lacks. */
typedef struct {
    int code; /* 0 means KW__GRPC_INVALID_ARGUMENT */
    char msg[200];
} kw__v1_perr_t;

/* Writes e as the error answer (400/3 or 501/12). */
void kw__v1_perr_answer(kw_http_resp_t *resp, const kw__v1_perr_t *e);
/* Sets e's message to `what`; returns false (for `return kw__v1_bad(e, "...")`). */
bool kw__v1_bad(kw__v1_perr_t *e, const char *what);
/* Every member of object o is in `fields` (NULL-terminated), else false naming the first
 * that is not: 400/3 "unknown field", or 501/12 when it is the proto's original
 * (snake_case) name of a listed field. `what` names o in the message. */
bool kw__v1_known(json_t *o, const char *what, const char *const *fields, kw__v1_perr_t *e);
/* Refusals of members keyward knows but does not implement (501/12, the message names
 * what.key and says why). kw__v1_refuse_true: a bool that may be absent, null or false.
 * kw__v1_refuse_set: a member that may only be absent or null (or, with empty_ok, an
 * empty object: a google.protobuf.Struct that carries nothing). */
bool kw__v1_refuse_true(json_t *o, const char *what, const char *key, const char *why,
                        kw__v1_perr_t *e);
bool kw__v1_refuse_set(json_t *o, const char *what, const char *key, bool empty_ok, const char *why,
                       kw__v1_perr_t *e);
/* kw__v1_refuse_uint: a uint32 member that may be absent, null or 0 (else 501/12; not a
 * non-negative integer: 400/3). */
bool kw__v1_refuse_uint(json_t *o, const char *what, const char *key, const char *why,
                        kw__v1_perr_t *e);
/* SpiceDB Consistency (one of minimizeLatency, atLeastAsFresh, atExactSnapshot,
 * fullyConsistent): raises *min to a presented ZedToken, sets *full for fullyConsistent
 * and snap->exact/rev for atExactSnapshot. Absent or null: nothing. */
bool kw__v1_consistency(json_t *c, kw_revision_t *min, bool *full, kw__v1_snap_t *snap,
                        kw__v1_perr_t *e);
/* Optional string member: absent/null -> empty slice. Wrong type -> false. */
bool kw__v1_opt_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e);
/* Required non-empty string member. */
bool kw__v1_req_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e);
/* ObjectReference {objectType, objectId}; `what` names it in the message. */
bool kw__v1_parse_object(json_t *o, kw_object_t *out, const char *what, kw__v1_perr_t *e);
/* SubjectReference {object, optionalRelation}. */
bool kw__v1_parse_subject(json_t *o, kw_subject_t *out, kw__v1_perr_t *e);
/* Relationship {resource, relation, subject}; optionalCaveat and optionalExpiresAt are
 * refused (501/12). */
bool kw__v1_parse_rel(json_t *o, kw_rel_t *out, kw__v1_perr_t *e);
/* RelationshipFilter (resourceType required; optionalResourceIdPrefix refused, 501/12);
 * `what` names it in messages. */
bool kw__v1_parse_filter(json_t *o, const char *what, kw_filter_t *f, kw__v1_perr_t *e);
/* optionalPreconditions (absent/null: none); the array comes from arena a. */
bool kw__v1_parse_preconditions(json_t *arr, kw_arena_t *a, kw_precondition_t **out, size_t *n,
                                kw__v1_perr_t *e);
/* A uint32 member (`key`, e.g. optionalLimit): a non-negative integer or decimal string;
 * absent/null -> 0. */
bool kw__v1_opt_uint(json_t *o, const char *key, size_t *out, kw__v1_perr_t *e);

/* ---- v1_codec.c: encoding ---- */
/* ZedToken {"token": "<store revision>"}. */
json_t *kw__v1_token_json(kw_revision_t rev);
/* A JSON string of s (an empty string for a null slice). */
json_t *kw__v1_strj(kw_str_t s);
json_t *kw__v1_object_json(kw_object_t o);
/* SubjectReference; the ellipsis relation is written as "". */
json_t *kw__v1_subject_json(const kw_subject_t *s);
json_t *kw__v1_rel_json(const kw_rel_t *r);
/* Writes a whole JSON answer, 200 with X-Keyward-Revision: rev (steals root; NULL root:
 * the out-of-memory answer). */
void kw__v1_answer(kw_http_req_t *req, kw_http_resp_t *resp, json_t *root, kw_revision_t rev);
/* Appends one stream line {"result": result} (steals result). KW_OK or KW_ENOMEM. */
KW_NODISCARD int kw__v1_stream_line(kw_buf_t *out, json_t *result);

#endif
