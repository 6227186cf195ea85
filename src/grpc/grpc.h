/*
 * grpc/grpc.h - keyward's gRPC endpoint: SpiceDB's authzed.api.v1 services
 * (PermissionsService, SchemaService, WatchService) and grpc.health.v1 over HTTP/2 (nghttp2),
 * plaintext with prior knowledge (h2c) or TLS (OpenSSL, ALPN h2 only; the handshake runs on the
 * connection's thread within stall_ms). The messages are protobuf-c code generated at build time
 * from proto/ (SpiceDB's package, message and field names and numbers). This module is
 * only a transport and a codec: every RPC runs through the /v1 service layer
 * (api/v1svc.h), as the HTTP/JSON gateway does.
 *
 * Threads: the server runs its own threads, apart from src/http's loops: one listener,
 *   one thread per connection (the nghttp2 session is only touched there) and one thread
 *   per RPC in flight that may block (the service layer's consistency waits, the store, a
 *   stream's producer waiting for the client to read). The cheap unary RPCs (Check,
 *   CheckBulk, Expand, health Check) are answered on their connection's thread, without a
 *   thread of their own, unless they must wait for a revision. A streamed RPC's results go
 *   into a per-stream buffer of at most KW_GRPC_STREAM_BUF bytes: past that the producer
 *   waits until HTTP/2 flow control lets the connection thread send, so a slow reader
 *   never makes the server buffer without bound. RST_STREAM, a closed connection or the
 *   grpc-timeout deadline make the producer's next result fail (the RPC stops computing).
 * Limits (hostile clients): connections, concurrent streams per connection, header list
 *   and request message sizes, an idle connection, a peer that sends no preface or reads
 *   nothing for too long: see kw_grpc_config_t and the KW_GRPC_* defaults.
 * Auth: authorization: Bearer <preshared key (KEYWARD_V1_PRESHARED_KEYS) or admin JWT>
 *   on every authzed.api.v1 RPC (UNAUTHENTICATED / PERMISSION_DENIED otherwise);
 *   grpc.health.v1 is public.
 * Ownership: the server BORROWS the kw_api_t (and resolve_ud): they must outlive
 *   kw_grpc_server_stop.
 * Errors: KW_OK or a negative KW_E*, with a message in diag.
 */
#ifndef KW_GRPC_GRPC_H
#define KW_GRPC_GRPC_H

#include "api/api.h"
#include "api/v1svc.h"
#include "base/base.h"

#define KW_GRPC_MAX_CONNS 1024u
#define KW_GRPC_MAX_STREAMS 128u             /* concurrent streams per connection */
#define KW_GRPC_MAX_RPCS 2048u               /* RPCs on threads of their own, whole server */
#define KW_GRPC_MAX_HEADER (16u * 1024u)     /* a request's header list, bytes */
#define KW_GRPC_MAX_MSG (4u * 1024u * 1024u) /* a request message (gRPC's default) */
#define KW_GRPC_STREAM_BUF (256u * 1024u)    /* a stream's unsent results before waiting */
#define KW_GRPC_IDLE_MS 300000               /* a connection with no stream */
#define KW_GRPC_STALL_MS 60000               /* no preface, or no byte taken by the peer */

typedef struct kw_grpc_config {
    const char *host;     /* "127.0.0.1", "::1", "0.0.0.0" ... */
    uint16_t port;        /* 0: any free port (reported in *bound) */
    unsigned max_conns;   /* 0: KW_GRPC_MAX_CONNS */
    unsigned max_streams; /* 0: KW_GRPC_MAX_STREAMS */
    int idle_ms;          /* 0: KW_GRPC_IDLE_MS */
    int stall_ms;         /* 0: KW_GRPC_STALL_MS */
    const char *tls_cert; /* PEM certificate chain file, with tls_key: TLS (ALPN h2) */
    const char *tls_key;  /* PEM private key file; both NULL: cleartext (h2c) */
    /* `keyward serve-testing` (api/testing.h): when set, every authzed.api.v1 RPC first
     * maps its method (`path`, "/authzed.api.v1.SchemaService/WriteSchema") and its
     * `authorization` value (NULL when absent) to the kw_api_t it runs on (then
     * authenticated on that api as usual); a refusal answers the status it fills. The
     * server's own api may then be NULL. Called on the RPC's thread, may block briefly. */
    int (*resolve)(void *ud, const char *path, const char *authorization, kw_api_t **api,
                   kw_v1_status_t *st);
    /* With resolve: called once the RPC that resolve gave *api to is over (may be NULL). */
    void (*release)(void *ud, kw_api_t *api);
    void *resolve_ud;
} kw_grpc_config_t;

typedef struct kw_grpc_server kw_grpc_server_t;

/* Binds, listens and starts the listener thread. */
KW_NODISCARD int kw_grpc_server_start(const kw_grpc_config_t *cfg, kw_api_t *api,
                                      kw_grpc_server_t **out, uint16_t *bound, kw_diag_t *diag);
/* Stops accepting, cancels every RPC in flight, waits for them and frees the server
 * (NULL: nothing). */
void kw_grpc_server_stop(kw_grpc_server_t *srv);

#endif
