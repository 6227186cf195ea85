/*
 * api/v1_int.h - the HTTP/JSON codec of the /v1 API (SpiceDB's grpc-gateway shapes) on top
 * of the service layer (v1svc.h): the request gate (v1.c), the proto3 JSON mapping and
 * error bodies (v1_codec.c), and one file per SpiceDB service that only decodes, calls
 * the service and encodes (v1_relationships.c, v1_permissions.c, v1_schema.c). No RPC
 * logic lives here: a decision about an answer belongs in v1svc_*.c. Not a public header.
 *
 * proto3 JSON as grpc-gateway reads it: a member may be sent under its JSON name
 * (camelCase) or its proto name (snake_case), not both; enums as names or numbers;
 * uint32 as numbers or decimal strings; null means unset. Output as the gateway writes it
 * (EmitUnpopulated): every non-oneof field, unset messages as null, uint64 as strings.
 *
 * Ownership: a parsed kw_str_t / kw_object_t / kw_subject_t / kw_rel_t / kw_filter_t points
 *   into the jansson tree it was parsed from (the request body): valid until that tree is
 *   json_decref()ed. Arrays come from the arena passed in. The json_t builders return a
 *   new reference (NULL on OOM).
 * Threads: every function here is reentrant; handlers run on the HTTP loops, streamed
 *   RPCs on a pool worker (kw_http_req_to_worker).
 * Errors: parsers return false with a client-safe message and a gRPC code in the
 *   kw__v1_perr_t; answers are SpiceDB's error bodies {"code", "message", "details"} (and
 *   keyward's "detail", the same message) with grpc-gateway's HTTP status for the code.
 */
#ifndef KW_API_V1_INT_H
#define KW_API_V1_INT_H

#include "api_int.h"
#include "v1svc.h"

/* The members a request message may carry: camelCase JSON names, NULL-terminated. Every
 * one is either decoded or refused with an error naming it; any other member is refused
 * (tag-kw-v1-refuse). */
typedef struct {
    const char *name; /* the proto message, for error messages: "CheckPermissionRequest" */
    const char *const *fields;
} kw__v1_msg_t;

/* ---- v1.c: the gate every RPC passes first ---- */
/* Authenticates (401; an admin JWT or a preshared key, else 403), checks
 * X-Keyward-Revision, parses the body as a JSON object (400), refuses members `msg` does
 * not list (400/3), decodes its `consistency` into *cons and waits for it (parking the
 * request; 503 when late). Returns the body (the caller json_decref()s it), or NULL with
 * the answer written (or the request parked). */
json_t *kw__v1_begin(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                     const kw__v1_msg_t *msg, kw_v1_consistency_t *cons);
/* The caller of a mutating RPC (for its audit event): the request's principal, id, arena. */
static inline kw_v1_caller_t kw__v1_caller(kw_http_req_t *req)
{
    return (kw_v1_caller_t){kw_str_c(req->log_subject), kw_str_c(req->request_id), req->arena};
}
/* For a streamed RPC: true when the handler runs on a pool worker (go on); false when it
 * was on an event loop and has just been handed to a worker (return at once: it runs
 * again there). */
bool kw__v1_on_worker(kw_http_req_t *req);
/* The prologue of a streamed RPC's handler (ud: the route's, the api instance): on an
 * event loop it hands the request to a worker and returns NULL (return at once: it runs
 * again there); then kw__v1_begin with *api set. NULL: nothing more to do. */
json_t *kw__v1_stream_begin(kw_http_req_t *req, kw_http_resp_t *resp, void *ud,
                            const kw__v1_msg_t *msg, kw_v1_consistency_t *cons, kw_api_t **api);

/* ---- v1_codec.c: errors ---- */
/* Replaces resp with the error answer of st (grpc-gateway's status for its code). */
void kw__v1_status_answer(kw_http_resp_t *resp, const kw_v1_status_t *st);
/* The same for a code and message without ErrorInfo. */
void kw__v1_error(kw_http_resp_t *resp, int code, const char *msg);
/* The google.rpc.Status JSON of st: {"code", "message", "details": [ErrorInfo]}. */
json_t *kw__v1_status_json(const kw_v1_status_t *st);

/* ---- v1_codec.c: decoding ---- */
typedef struct {
    int code; /* 0 means KW_GRPC_INVALID_ARGUMENT */
    char msg[200];
} kw__v1_perr_t;

/* Writes e as the error answer (400/3 or 501/12). */
void kw__v1_perr_answer(kw_http_resp_t *resp, const kw__v1_perr_t *e);
/* Sets e's message to `what`; returns false (for `return kw__v1_bad(e, "...")`). */
bool kw__v1_bad(kw__v1_perr_t *e, const char *what);
/* The member of o named `camel` (its JSON name) or its proto (snake_case) name; NULL if
 * neither. kw__v1_known has refused objects carrying both. */
json_t *kw__v1_get(json_t *o, const char *camel);
/* Every member of object o is in `fields` (NULL-terminated; under its JSON or its proto
 * name, not both), else false naming the first that is not (400/3). */
bool kw__v1_known(json_t *o, const char *what, const char *const *fields, kw__v1_perr_t *e);
/* A bool member (absent/null: false). */
bool kw__v1_opt_bool(json_t *o, const char *key, bool *out, kw__v1_perr_t *e);
/* A google.protobuf.Struct member as JSON text in arena a (absent, null or {}: empty). */
bool kw__v1_opt_struct(json_t *o, const char *key, kw_arena_t *a, kw_str_t *out, kw__v1_perr_t *e);
/* An enum member: its name (names[i] is value i; NULL entries have no name) or its number;
 * absent/null: 0. */
bool kw__v1_opt_enum(json_t *o, const char *key, const char *const *names, size_t n, int *out,
                     kw__v1_perr_t *e);
/* SpiceDB Consistency (one of minimizeLatency, atLeastAsFresh, atExactSnapshot,
 * fullyConsistent). Absent or null: minimizeLatency. */
bool kw__v1_consistency(json_t *c, kw_v1_consistency_t *out, kw__v1_perr_t *e);
/* A Cursor member {token} (absent/null: none). */
bool kw__v1_opt_cursor(json_t *o, const char *key, kw_v1_cursor_t *out, kw__v1_perr_t *e);
/* Optional string member: absent/null -> empty slice. Wrong type -> false. */
bool kw__v1_opt_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e);
/* Required non-empty string member. */
bool kw__v1_req_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e);
/* ObjectReference {objectType, objectId}; `what` names it in the message. */
bool kw__v1_parse_object(json_t *o, kw_object_t *out, const char *what, kw__v1_perr_t *e);
/* SubjectReference {object, optionalRelation}. */
bool kw__v1_parse_subject(json_t *o, kw_subject_t *out, kw__v1_perr_t *e);
/* Relationship {resource, relation, subject, optionalCaveat {caveatName, context},
 * optionalExpiresAt}; the caveat's context is JSON text in arena a. */
bool kw__v1_parse_rel_in(json_t *o, kw_arena_t *a, kw_rel_t *out, kw__v1_perr_t *e);
/* The same without an arena: a caveat with a non-empty context is refused (501/12). */
bool kw__v1_parse_rel(json_t *o, kw_rel_t *out, kw__v1_perr_t *e);
/* google.protobuf.Timestamp text (RFC 3339 with Z or an offset) -> microseconds. */
bool kw__v1_parse_timestamp(kw_str_t s, int64_t *us);
/* RelationshipFilter; *prefix gets optionalResourceIdPrefix. */
bool kw__v1_parse_filter(json_t *o, const char *what, kw_filter_t *f, kw_str_t *prefix,
                         kw__v1_perr_t *e);
/* optionalPreconditions (absent/null: none); the array comes from arena a. */
bool kw__v1_parse_preconditions(json_t *arr, kw_arena_t *a, kw_precondition_t **out, size_t *n,
                                kw__v1_perr_t *e);
/* A uint32 member (`key`, e.g. optionalLimit): a non-negative integer or decimal string;
 * absent/null -> 0. */
bool kw__v1_opt_u32(json_t *o, const char *key, uint32_t *out, kw__v1_perr_t *e);

/* ---- v1_codec.c: encoding ---- */
/* ZedToken {"token": "<store revision>"}. */
json_t *kw__v1_token_json(kw_revision_t rev);
/* A JSON string of s (an empty string for a null slice). */
json_t *kw__v1_strj(kw_str_t s);
json_t *kw__v1_object_json(kw_object_t o);
/* SubjectReference; the ellipsis relation is written as "". */
json_t *kw__v1_subject_json(const kw_subject_t *s);
/* Relationship, with optionalCaveat {caveatName, context} and optionalExpiresAt (RFC 3339)
 * or null for each. */
json_t *kw__v1_rel_json(const kw_rel_t *r);
/* google.protobuf.Timestamp text of microseconds since the epoch. */
json_t *kw__v1_timestamp_json(int64_t us);
/* PartialCaveatInfo {missingRequiredContext: [...]} for a CONDITIONAL answer (missing:
 * comma-separated names), null otherwise. */
json_t *kw__v1_partial_json(kw_v1_permissionship_t p, kw_str_t missing);
/* Cursor {"token": c}, or null for NULL. */
json_t *kw__v1_cursor_json(const char *c);
/* Writes a whole JSON answer, 200 with X-Keyward-Revision: rev (steals root; NULL root:
 * the out-of-memory answer). */
void kw__v1_answer(kw_http_req_t *req, kw_http_resp_t *resp, json_t *root, kw_revision_t rev);

/* Does s[0..n) go into a JSON string as it is: no byte that JSON_COMPACT escapes (control
 * characters, '"', '\\') and none >= 0x7f (UTF-8 and DEL are left to jansson)? A hand-
 * written line may copy such text; anything else takes jansson's path. Eight bytes a step:
 * the LookupResources line writer runs it on every id and cursor. */
bool kw__v1_json_plain(const char *s, size_t n);

/* ---- v1_codec.c: streams ---- */
/* One streamed answer: results go out as {"result": ...} lines on a chunked response
 * begun at the first result (so an error before any result is an ordinary error answer);
 * an error after it is one {"error": ...} line. The first line is sent at once; later ones
 * are written into the pending chunk (pend) and sent when it holds KW__V1_STREAM_CHUNK
 * bytes: one chunk and one hand-over to the event loop per ~60 KiB, and the chunk's buffer
 * itself goes to the socket (kw_http_stream_give), so a line is written once and copied by
 * no one before send(). */
#define KW__V1_STREAM_CHUNK (60u * 1024u)
typedef struct kw__v1_stream {
    kw_http_req_t *req;
    kw_http_resp_t *resp;
    kw_revision_t rev; /* for X-Keyward-Revision */
    bool begun;
    kw_buf_t line; /* a line made with jansson, the error line */
    kw_buf_t pend; /* KW_HTTP_STREAM_HEAD bytes of room for the framing, then the lines not
                    * sent yet */
} kw__v1_stream_t;
void kw__v1_stream_init(kw__v1_stream_t *s, kw_http_req_t *req, kw_http_resp_t *resp);
/* Sends {"result": result} (steals result): KW_OK, KW_ENOMEM, or KW_EIO when the client
 * went away. Waits while the connection's send buffer is full (backpressure). */
KW_NODISCARD int kw__v1_stream_result(kw__v1_stream_t *s, json_t *result, kw_revision_t rev);
/* The same for a line the caller writes itself (a hot message encoded without jansson):
 * kw__v1_stream_room gives where the next line's n bytes go (NULL: out of memory, and the
 * lines before are kept); the caller writes exactly n bytes there, the text of
 * {"result": ...} and its "\n", and calls kw__v1_stream_commit(s, n, rev). The same answers
 * as kw__v1_stream_result. */
char *kw__v1_stream_room(kw__v1_stream_t *s, size_t n);
KW_NODISCARD int kw__v1_stream_commit(kw__v1_stream_t *s, size_t n, kw_revision_t rev);
/* Sends the lines kept back so far at once: for a stream whose lines must not wait for the
 * next ones (Watch: a change may be the last for a long time). */
KW_NODISCARD int kw__v1_stream_flush(kw__v1_stream_t *s);
/* Ends the stream: rc == KW_OK -> a 200 (empty body if nothing was sent); else st's
 * error as the answer (nothing sent yet) or as the last line. */
void kw__v1_stream_end(kw__v1_stream_t *s, int rc, const kw_v1_status_t *st);

#endif
