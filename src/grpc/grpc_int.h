/*
 * grpc/grpc_int.h - inside the gRPC module: the framing helpers (frame.c, pure, unit
 * tested and fuzzed), the call a handler works on (server.c) and the RPC table (rpc.c).
 * Not a public header.
 *
 * Ownership: a handler's request bytes and the call are the server's, valid during the
 *   handler. Messages passed to kw__grpc_send are copied (packed) before it returns.
 * Threads: a handler runs on its own thread, or, for the cheap unary RPCs (CheckPermission,
 *   CheckBulkPermissions and its experimental alias, ExpandPermissionTree, health Check), on
 *   its connection's thread until it would block (kw__grpc_may_block); kw__grpc_send may
 *   block (flow control).
 * Errors: a handler reports its result in the kw_v1_status_t (code 0: OK).
 */
#ifndef KW_GRPC_INT_H
#define KW_GRPC_INT_H

#include <protobuf-c/protobuf-c.h>

#include "api/v1svc.h"
#include "grpc.h"

/* ---- frame.c ---- */
/* The one message of a unary or server-streaming request body (5-byte prefix: flag 0,
 * big-endian length, then exactly that many bytes). KW_OK with *msg and *len; KW_EINVAL
 * (truncated, trailing bytes or several messages); KW_EUNSUPPORTED (compressed);
 * KW_ETOOLARGE (over max). */
KW_NODISCARD int kw__grpc_unframe(const uint8_t *body, size_t n, size_t max, const uint8_t **msg,
                                  size_t *len);
/* The 5-byte prefix of an uncompressed message of len bytes. */
void kw__grpc_frame_prefix(uint8_t out[5], size_t len);
/* grpc-timeout: 1-8 digits and a unit (H M S m u n) -> microseconds (>= 1). false when
 * malformed. */
bool kw__grpc_parse_timeout(const char *v, size_t n, int64_t *us);
/* grpc-message's percent-encoding of msg into out (NUL-terminated, truncated to fit). */
void kw__grpc_pct_encode(const char *msg, char *out, size_t cap);
/* Unpadded standard base64 (binary metadata) of in into out (NUL-terminated); false when
 * out is too small. */
bool kw__grpc_b64(const uint8_t *in, size_t n, char *out, size_t cap);
/* google.rpc.Status of st (with SpiceDB's ErrorInfo, domain authzed.com, when st has a
 * reason), packed into *out (kw_malloc'd; the caller frees). KW_OK or KW_ENOMEM. */
KW_NODISCARD int kw__grpc_status_pack(const kw_v1_status_t *st, uint8_t **out, size_t *len);

/* ---- server.c: the call a handler works on ---- */
typedef struct kw__grpc_call kw__grpc_call_t;
kw_api_t *kw__grpc_api(kw__grpc_call_t *c);
/* Who makes the call, for the audit trail of mutating RPCs: the authenticated principal,
 * a request id (UUIDv7) made for the RPC, an arena living as long as the handler. */
const kw_v1_caller_t *kw__grpc_caller(kw__grpc_call_t *c);
/* Packs m as the next response message and queues it; waits while the stream's buffer is
 * full. KW_OK; KW_EIO (the client cancelled or left); KW_ETIMEOUT (deadline passed);
 * KW_ENOMEM. */
KW_NODISCARD int kw__grpc_send(kw__grpc_call_t *c, const ProtobufCMessage *m);
/* The same for a message the caller packed itself (msg[0..len), copied before it returns). */
KW_NODISCARD int kw__grpc_send_packed(kw__grpc_call_t *c, const uint8_t *msg, size_t len);
/* KW_OK, or KW_EIO / KW_ETIMEOUT as kw__grpc_send, without sending. */
KW_NODISCARD int kw__grpc_alive(kw__grpc_call_t *c);
/* true when the handler may block (it runs on a thread of its own). false for a call
 * answered on its connection's thread (cheap unary RPCs): the handler must then return at
 * once, without an answer (st clear) and without side effects, and the server runs it again
 * on a thread of its own, where this returns true. */
bool kw__grpc_may_block(kw__grpc_call_t *c);
/* A protobuf-c allocator drawing on the call's arena (its free does nothing): a decoded
 * request costs no malloc per field; valid until the handler returns. */
ProtobufCAllocator *kw__grpc_allocator(kw__grpc_call_t *c);

/* Fuzzing: the bytes a client sends after the connection preface go through one
 * connection's HTTP/2 session and the gRPC request handling (requests are answered
 * UNIMPLEMENTED without a handler thread), its answers are sent and dropped.
 * KW_OK, or KW_EINVAL when the session refused the input. */
KW_NODISCARD int kw__grpc_fuzz_feed(const uint8_t *data, size_t n);

/* The next request message of an RPC whose requests are a stream (kw__grpc_streams_in):
 * waits for it; *msg (len bytes) stays valid until the next call. Bytes are taken from
 * the connection only as messages are read, and HTTP/2 flow control lets the client send
 * more only then: a client faster than the RPC waits, it is never buffered without bound.
 * KW_OK; KW_ENOTFOUND: the client ended its stream; KW_EINVAL (a message cut short at the
 * end, or a bad prefix), KW_EUNSUPPORTED (compressed), KW_ETOOLARGE (over
 * KW_GRPC_MAX_MSG); KW_ELIMIT: nothing arrived for the server's stall time (60 s);
 * KW_EIO / KW_ETIMEOUT as kw__grpc_send; KW_ENOMEM. */
KW_NODISCARD int kw__grpc_recv(kw__grpc_call_t *c, const uint8_t **msg, size_t *len);

/* ---- rpc.c: the method table ---- */
typedef enum {
    KW__GRPC_UNARY = 0,
    KW__GRPC_SERVER_STREAM, /* one request, a stream of responses */
    KW__GRPC_CLIENT_STREAM, /* a stream of requests, one response */
    KW__GRPC_BIDI,          /* both: the handler reads and answers as messages arrive */
} kw__grpc_kind_t;
/* A method's handler. Unary and server-streaming: req is the request, decoded with the
 * row's descriptor by kw__grpc_invoke (freed after the handler). Client-streaming and
 * bidi: req is NULL and the handler reads each message with kw__grpc_recv. */
typedef void (*kw__grpc_rpc_fn)(kw__grpc_call_t *c, ProtobufCMessage *req, kw_v1_status_t *st);
typedef struct {
    const char *path;                     /* "/authzed.api.v1.PermissionsService/..." */
    const ProtobufCMessageDescriptor *in; /* the request message */
    kw__grpc_rpc_fn fn;                   /* NULL: declared, answered UNIMPLEMENTED */
    kw__grpc_kind_t kind;
    bool is_public;            /* no authorization needed (health, reflection) */
    const char *unimplemented; /* fn NULL: the message UNIMPLEMENTED carries */
} kw__grpc_rpc_t;
/* The RPC at path, or NULL (UNIMPLEMENTED). */
const kw__grpc_rpc_t *kw__grpc_find(const char *path, size_t n);
/* Every row of the table (*n of them), in service order. */
const kw__grpc_rpc_t *kw__grpc_rpcs(size_t *n);
static inline bool kw__grpc_streams_in(const kw__grpc_rpc_t *r)
{
    return r->kind == KW__GRPC_CLIENT_STREAM || r->kind == KW__GRPC_BIDI;
}
/* Runs the row for one call: decodes msg (len bytes; unused when the requests stream in)
 * with the row's descriptor (INVALID_ARGUMENT when it does not decode), calls the handler,
 * frees the request. */
void kw__grpc_invoke(const kw__grpc_rpc_t *rpc, kw__grpc_call_t *c, const uint8_t *msg, size_t len,
                     kw_v1_status_t *st);

#endif
