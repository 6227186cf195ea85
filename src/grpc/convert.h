/*
 * grpc/convert.h - protobuf messages <-> the service layer's types (convert.c). Not a
 * public header.
 *
 * Ownership: decoded kw_str_t point into the unpacked request message (valid until it is
 *   freed) or into the arena passed; built messages live in the arena passed.
 * Threads: reentrant.
 * Errors: decoders return false with st filled (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED
 *   when out of memory); builders return NULL when out of memory.
 */
#ifndef KW_GRPC_CONVERT_H
#define KW_GRPC_CONVERT_H

#include "authzed/api/v1/core.pb-c.h"
#include "authzed/api/v1/debug.pb-c.h"
#include "authzed/api/v1/permission_service.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "grpc_int.h"

/* A Struct as JSON object text in arena a (NULL or no fields: empty). */
bool kw__grpc_struct_text(const Google__Protobuf__Struct *s, kw_arena_t *a, kw_str_t *out,
                          kw_v1_status_t *st);
/* JSON object text -> Struct in arena a; NULL when not an object or out of memory. */
Google__Protobuf__Struct *kw__grpc_text_struct(kw_str_t text, kw_arena_t *a);

bool kw__grpc_object(const Authzed__Api__V1__ObjectReference *o, const char *what, kw_object_t *out,
                     kw_v1_status_t *st);
bool kw__grpc_subject(const Authzed__Api__V1__SubjectReference *s, const char *what,
                      kw_subject_t *out, kw_v1_status_t *st);
bool kw__grpc_rel(const Authzed__Api__V1__Relationship *r, kw_arena_t *a, kw_rel_t *out,
                  kw_v1_status_t *st);
bool kw__grpc_filter(const Authzed__Api__V1__RelationshipFilter *f, kw_filter_t *out,
                     kw_str_t *prefix, kw_v1_status_t *st);
bool kw__grpc_preconditions(Authzed__Api__V1__Precondition **p, size_t n, kw_arena_t *a,
                            kw_precondition_t **out, size_t *n_out, kw_v1_status_t *st);
bool kw__grpc_consistency(const Authzed__Api__V1__Consistency *c, kw_v1_consistency_t *out,
                          kw_v1_status_t *st);

Authzed__Api__V1__ZedToken *kw__grpc_token(kw_revision_t rev, kw_arena_t *a);
/* A LookupResourcesResponse {lookedUpAt: {token: rev}, resourceObjectId: id,
 * permissionship: HAS_PERMISSION, afterResultCursor: {token: cursor}} (no
 * partialCaveatInfo; cursor non-empty) packed by hand into out: the bytes
 * protobuf_c_message_pack writes for that message (fields in number order, proto3 defaults
 * left out), without building it. The number of bytes, or 0 when they do not fit in cap or
 * id holds a NUL (then pack the message). Most of a LookupResources stream's gRPC cost was building
 * and packing this message once per result. */
size_t kw__grpc_lr_encode(uint8_t *out, size_t cap, kw_revision_t rev, kw_str_t id,
                          const char *cursor);
/* Cursor {token: c} (c borrowed), NULL for NULL c. */
Authzed__Api__V1__Cursor *kw__grpc_cursor(const char *c, kw_arena_t *a);
Authzed__Api__V1__ObjectReference *kw__grpc_object_msg(kw_object_t o, kw_arena_t *a);
Authzed__Api__V1__SubjectReference *kw__grpc_subject_msg(const kw_subject_t *s, kw_arena_t *a);
Authzed__Api__V1__Relationship *kw__grpc_rel_msg(const kw_rel_t *r, kw_arena_t *a);
/* PartialCaveatInfo for a CONDITIONAL answer (missing: comma-separated), else NULL. */
Authzed__Api__V1__PartialCaveatInfo *kw__grpc_partial(kw_v1_permissionship_t p, kw_str_t missing,
                                                      kw_arena_t *a);
/* DebugInformation for a traced check (withTracing): the trace's tree with `subject` (the
 * request's) on every node and schema_used; NULL when out of memory. */
Authzed__Api__V1__DebugInformation *kw__grpc_debug(const kw_trace_t *t, const kw_subject_t *subject,
                                                   kw_str_t schema_used, kw_arena_t *a);

#endif
