/*
 * http/http.h - keyward's own HTTP/1.1 server (epoll event loops running the handlers), the
 * router, request lifecycle, request logging and Prometheus metrics.
 *
 * Flow: the loop thread accepts and reads -> the request line and headers are parsed
 * (strict RFC 9112; every error the server produces itself goes through cfg->error_fn,
 * JSON) -> the router matches (method, path template): 404/405 if nothing matches ->
 * 413 for a Content-Length over KW_MAX_BODY_BYTES -> cfg->on_headers (authentication,
 * BEFORE any body byte is read) -> the body is read (bounded in size, time and global
 * memory; or handed to the handler in pieces as it arrives: KW_HTTP_ROUTE_STREAM_BODY)
 * -> the route's handler fills a kw_http_resp_t -> it is sent with X-Request-Id,
 * metrics are recorded and one JSON access-log line goes to stderr. See
 * src/http/server.c for the design.
 *
 * Ownership: a kw_http_req_t and everything reachable from it (path params, headers,
 *   body, arena) live until the response is queued; handlers allocate from req->arena
 *   and never free. The response body is a kw_buf_t the server frees after sending.
 * Threads: handlers and on_headers run on the server's cfg->threads event loops (and a
 *   parked request's re-run on a pool worker), many at once; they must be thread-safe.
 *   A handler that blocks holds its loop's other connections meanwhile: long waits
 *   should park. error_fn runs on the same threads: it must be quick and must not
 *   block. kw_http_server_wake may be called from any thread.
 *   Metrics counters are atomic.
 * Errors: kw_http_server_start returns KW_EIO (bind failed: diag names the address),
 *   KW_EINVAL (a bad route table) or KW_ENOMEM.
 */
#ifndef KW_HTTP_HTTP_H
#define KW_HTTP_HTTP_H

#include "base/base.h"

typedef struct kw_http_server kw_http_server_t;

#define KW_HTTP_MAX_PARAMS 4

typedef struct kw_http_req {
    kw_str_t method;
    kw_str_t path;                       /* raw path as received (not decoded) */
    kw_str_t route;                      /* the matched template, e.g. "/agent_api_keys/{id}" */
    kw_str_t params[KW_HTTP_MAX_PARAMS]; /* percent-decoded path params, in template order;
                                          * a {name...} tail is the RAW rest of the path
                                          * (still percent-encoded, may be empty) */
    size_t n_params;
    kw_str_t body;       /* NUL-terminated at body.ptr[body.len] */
    kw_arena_t *arena;   /* request lifetime */
    char request_id[65]; /* <= 64 chars of [A-Za-z0-9._-], NUL-terminated */
    /* Set by the handler for the access log (e.g. "user:alice"); never a secret. */
    const char *log_subject;
    unsigned route_flags; /* kw_http_route_t.flags of the matched route (0 if none) */
    /* Free for cfg->on_headers to leave its result (e.g. the authenticated principal,
     * in arena memory) for the handler; NULL until set. */
    void *auth;
    /* Why the handler runs: KW_HTTP_RUN_FIRST, or, after kw_http_req_park, _WOKEN (by
     * kw_http_server_wake) or _DEADLINE (the park deadline passed, or the server stops). */
    int run;
    void *priv; /* the server's request state */
} kw_http_req_t;

enum { KW_HTTP_RUN_FIRST = 0, KW_HTTP_RUN_WOKEN, KW_HTTP_RUN_DEADLINE };

/* Request header (case-insensitive name); NULL if absent. Valid for the request. */
const char *kw_http_header(const kw_http_req_t *req, const char *name);
/* The raw query string (after '?', still percent-encoded; empty if none). */
kw_str_t kw_http_query_raw(const kw_http_req_t *req);
/* The request's header fields in the order received: n = kw_http_header_count, then
 * kw_http_header_at(i) for i < n (names as sent; NUL-terminated, valid for the request). */
size_t kw_http_header_count(const kw_http_req_t *req);
void kw_http_header_at(const kw_http_req_t *req, size_t i, const char **name, const char **value);
/* Percent-decoded query argument ('+' is a space); found=false if absent. A key given
 * twice: the first one wins. Decoding errors (bad %XY, or a %00 that would truncate a
 * C string) make the value absent and set *bad = true (bad may be NULL). */
kw_str_t kw_http_query(const kw_http_req_t *req, const char *name, bool *found, bool *bad);

typedef struct kw_http_resp {
    int status;
    kw_buf_t body;
    const char *content_type; /* default "application/json" */
    /* Extra response headers, e.g. {"X-Keyward-Revision", "42"}. */
    const char *hdr_names[4];
    const char *hdr_values[4];
    size_t n_hdrs;
    /* More header lines, "Name: value\r\n" each (a relayed response's): arena memory. Each
     * line is checked like hdr_names/values; a bad one turns the answer into a 500. The
     * server's own Date, Content-Type, Content-Length, Connection and X-Request-Id must not
     * be among them. */
    kw_str_t hdr_block;
} kw_http_resp_t;

/* Adds a response header (name and value must outlive the request: arena or static). */
void kw_http_resp_header(kw_http_resp_t *resp, const char *name, const char *value);
/* Sets status and a `{"detail": msg}` body (JSON-escaped). */
void kw_http_resp_error(kw_http_resp_t *resp, int status, const char *msg);

typedef void (*kw_http_handler_fn)(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

typedef struct kw_http_route {
    const char *method;  /* "GET", "POST", "DELETE", ... */
    const char *pattern; /* "/agents/{id}", "/agent_api_keys/name/{name}", literal segments;
                          * a last segment {name...} takes the rest of the path */
    kw_http_handler_fn fn;
    unsigned flags; /* the application's own, opaque to the server: req->route_flags */
} kw_http_route_t;

/* Parks the request from inside its handler: once the handler returns, nothing is sent
 * and the thread is free; the handler runs again (on a pool worker, with a fresh resp and
 * req->run set) after kw_http_server_wake, or at deadline_ns (kw_http_now_ns clock),
 * whichever comes first. Everything in req (arena, body, auth) is kept meanwhile. */
void kw_http_req_park(kw_http_req_t *req, uint64_t deadline_ns);
/* Moves the rest of the request off the event loop: once the handler returns, nothing is
 * sent and the handler runs again at once on a pool worker (req->run = KW_HTTP_RUN_WOKEN,
 * or _DEADLINE when the server stops first). For work that waits on the network (the
 * webhook relay). */
void kw_http_req_defer(kw_http_req_t *req);
/* Re-runs ONE parked request (req->run = KW_HTTP_RUN_WOKEN), from any thread: for work
 * that finishes elsewhere (the webhook relay's own threads). A wake that comes while the
 * handler is still deciding to park is not lost: the request runs again at once. The
 * caller must know req is still alive (parked, or its handler running): a handler woken
 * this way must not answer before the waker is done with req. */
void kw_http_req_wake(kw_http_req_t *req);
/* The deadline given to the request's last kw_http_req_park; 0 if it never parked (so a
 * re-run handler can park again until the same deadline). */
uint64_t kw_http_req_park_deadline(const kw_http_req_t *req);
/* Re-runs every parked request of srv (from any thread). A wake that comes while a handler
 * is deciding to park is not lost: that request runs again at once. */
void kw_http_server_wake(kw_http_server_t *srv);
/* The clock of park deadlines (CLOCK_MONOTONIC, nanoseconds). */
uint64_t kw_http_now_ns(void);

/* ---- streamed answers (Transfer-Encoding: chunked) ----
 * A handler that streams must not run on an event loop (it waits for the client): it
 * first calls kw_http_req_to_worker and returns; it then runs again on a pool worker
 * (req->run = KW_HTTP_RUN_WORKER; kw_http_req_on_worker is true there, and for re-runs
 * of parked requests). There it may answer as usual (resp, Content-Length) or begin a
 * stream: kw_http_stream_begin sends resp's status line and headers at once, then each
 * kw_http_stream_write goes out as one chunk, flushed by the request's event loop while
 * the handler goes on. When the handler returns the stream ends (the last chunk), the
 * access log and metrics record the status given to kw_http_stream_begin. Backpressure:
 * a write waits while more than KW_HTTP_STREAM_HIGH bytes are queued and unsent. A client
 * that goes away (EOF, reset), does not read for body_timeout_s, or a server that stops,
 * makes every later write fail (KW_EIO) and kw_http_stream_cancelled true, so the
 * handler can stop computing. An HTTP/1.0 client gets the bytes unframed and the
 * connection closes at the end. */
#define KW_HTTP_STREAM_HIGH (256u * 1024u)
enum { KW_HTTP_RUN_WORKER = KW_HTTP_RUN_DEADLINE + 1 };
/* From a handler on an event loop: once it returns, the request runs again on a pool
 * worker. KW_OK, or KW_ENOMEM (answer the request instead). */
KW_NODISCARD int kw_http_req_to_worker(kw_http_req_t *req);
bool kw_http_req_on_worker(const kw_http_req_t *req);
/* On a worker, once: sends resp's status, content type and headers (the body is ignored)
 * and begins the chunked body. KW_OK, KW_ENOMEM, KW_EIO (the client went away), KW_EINVAL
 * (not on a worker, or begun already). */
KW_NODISCARD int kw_http_stream_begin(kw_http_req_t *req, const kw_http_resp_t *resp);
/* Sends n bytes (n > 0) as one chunk; waits while the queue is over KW_HTTP_STREAM_HIGH.
 * KW_OK, KW_EIO (client gone, send deadline passed, server stopping), KW_ENOMEM. */
KW_NODISCARD int kw_http_stream_write(kw_http_req_t *req, const void *p, size_t n);
/* Room a kw_http_stream_give buffer keeps in front of its bytes (the chunk's framing). */
#define KW_HTTP_STREAM_HEAD 24u
/* kw_http_stream_write for b->ptr[KW_HTTP_STREAM_HEAD, b->len) (the caller's bytes after the
 * room; b->ptr[0, KW_HTTP_STREAM_HEAD) is scratch), without copying them when nothing is
 * queued: the framing goes into the room, b's storage becomes the queue and b gets the
 * queue's old (empty) storage, so a writer that fills one buffer after another hands each
 * over instead of copying it. b comes back with len 0 whatever the answer (the same as
 * kw_http_stream_write's; b->len <= KW_HTTP_STREAM_HEAD sends nothing). */
KW_NODISCARD int kw_http_stream_give(kw_http_req_t *req, kw_buf_t *b);
/* Has the client gone away (or the stream been cut off)? Cheap; any thread. */
bool kw_http_stream_cancelled(const kw_http_req_t *req);

/* ---- streamed request bodies ----
 * A route whose flags include KW_HTTP_ROUTE_STREAM_BODY (a bit the server reserves: the
 * application's own flags leave it clear) gets its body in pieces as it arrives instead
 * of whole: after on_headers says yes, the handler runs at once on a pool worker
 * (req->run = KW_HTTP_RUN_WORKER; req->body stays empty) while the request's loop reads
 * the body, and the handler pulls it with kw_http_body_next. Limits, instead of
 * KW_MAX_BODY_BYTES and the absolute body deadline:
 *  - size: KW_MAX_STREAM_BODY_BYTES (Content-Length past it, or chunked bytes reaching it:
 *    413);
 *  - memory: the loop stops reading the socket while KW_HTTP_BODY_HIGH bytes wait for the
 *    handler (backpressure: TCP's window then holds the client), so a request holds at
 *    most about twice that whatever the body's size; it is charged once against
 *    body_budget (503 past it);
 *  - time: the client must send KW_HTTP_BODY_PROGRESS bytes (or the end of the body) within
 *    every body_timeout_s, counted from the end of the headers and from each such step;
 *    time the loop spends waiting for the handler (backpressure) is not counted. A body
 *    that trickles in slower is cut off (408).
 * When the body fails (408, 413, a malformed chunk: 400, the body budget: 503, the client
 * went away) kw_http_body_next returns KW_EIO; the handler should give up (roll back) and
 * return: its answer is replaced by the server's own error (cfg->error_fn), or dropped if
 * the client is gone. A handler that returns before the end of the body is answered with
 * Connection: close. */
#define KW_HTTP_ROUTE_STREAM_BODY 0x80000000u
#define KW_HTTP_BODY_HIGH (256u * 1024u)
#define KW_HTTP_BODY_PROGRESS (64u * 1024u)
/* The next piece of the request's body into *chunk (valid until the next call or the end
 * of the handler); an empty chunk is the end of the body. Waits for the bytes (streamed
 * bodies, on a worker). For any other request the whole body comes as one chunk, then the
 * end. KW_OK; KW_EIO: the body failed (see above); KW_EINVAL: a streamed body read off a
 * worker. */
KW_NODISCARD int kw_http_body_next(kw_http_req_t *req, kw_str_t *chunk);

/* Shapes an error the server produces itself (404, 405, 400, 408, 413, 417, 431, 501,
 * 503, 505, 500): must set resp->status = status and a body. req is as far as it got
 * (method and path may be empty for a request line that did not parse). */
typedef void (*kw_http_error_fn)(const kw_http_req_t *req, int status, const char *msg,
                                 kw_http_resp_t *resp, void *ud);
/* Called with the headers only, before any body byte is read (req->body is empty):
 * returns true to go on, or false with the answer in resp (e.g. a 401), which is sent
 * at once; a request with a body is then not read and the connection closes. */
typedef bool (*kw_http_headers_fn)(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

/* Extra /metrics text (Prometheus exposition) appended after the server's own. */
typedef void (*kw_http_metrics_fn)(kw_buf_t *out, void *ud);

/* Defaults of the limits below (0 in the config means the default). */
#define KW_HTTP_DEFAULT_CONN_LIMIT 4096u
#define KW_HTTP_DEFAULT_CONN_PER_ADDR 256u
#define KW_HTTP_DEFAULT_IDLE_S 30u
#define KW_HTTP_DEFAULT_HEADER_S 10u
#define KW_HTTP_DEFAULT_BODY_S 30u
#define KW_HTTP_DEFAULT_DRAIN_S 10u
#define KW_HTTP_DEFAULT_BODY_BUDGET (64u * 1024u * 1024u)

typedef struct kw_http_config {
    const char *host;          /* "127.0.0.1" */
    uint16_t port;             /* 0 = pick a free port */
    unsigned threads;          /* event loops running the handlers; 0 = number of cores */
    unsigned conn_timeout_s;   /* idle keep-alive timeout between requests */
    unsigned conn_limit;       /* open connections; more are closed at once (counted) */
    unsigned conn_per_addr;    /* open connections per client address (counted) */
    unsigned header_timeout_s; /* request line + headers, absolute, from accept or the
                                * request's first byte; 408 */
    unsigned body_timeout_s;   /* the body, absolute, from the end of the headers; 408 */
    unsigned drain_timeout_s;  /* kw_http_server_stop's bound on in-flight handlers */
    size_t body_budget;        /* bytes all bodies in flight may hold together; 503 */
    const kw_http_route_t *routes;
    size_t n_routes;
    void *ud; /* passed to handlers, on_headers, error_fn and metrics_fn */
    kw_http_metrics_fn metrics_fn;
    kw_http_headers_fn on_headers; /* NULL: none */
    kw_http_error_fn error_fn;     /* NULL: kw_http_resp_error */
} kw_http_config_t;

/* Binds and starts serving. *bound_port gets the actual port. */
KW_NODISCARD int kw_http_server_start(const kw_http_config_t *cfg, kw_http_server_t **out,
                                      uint16_t *bound_port, kw_diag_t *diag);
/* Stops accepting and reading new requests, answers parked requests (run =
 * KW_HTTP_RUN_DEADLINE), waits at most drain_timeout_s for the handlers in flight, closes
 * every connection and frees the server: KW_OK. KW_ETIMEOUT: a handler was still running
 * at the deadline; the server is then left allocated (its workers still own it) and the
 * caller should exit the process rather than free what the handler may still use (or
 * call kw_http_server_stop again, which waits another drain_timeout_s to finish). */
int kw_http_server_stop(kw_http_server_t *srv);

/* Appends the server's own metrics (requests_total, duration histogram, refused
 * connections, deadline expiries, body-budget refusals) to out, then
 * calls cfg->metrics_fn(out, cfg->ud) if one was configured (so a /metrics handler that
 * calls this must not append the same text again). Safe from any thread, lock-free. */
void kw_http_server_metrics(kw_http_server_t *srv, kw_buf_t *out);
/* The server running this request: how a /metrics handler reaches kw_http_server_metrics. */
kw_http_server_t *kw_http_req_server(const kw_http_req_t *req);

/* JSON string escaping into a buffer (adds the quotes). Invalid UTF-8 bytes become U+FFFD. */
void kw_json_escape(kw_buf_t *out, kw_str_t s);
/* Percent-decodes `in` into arena memory; false on a malformed escape. */
bool kw_http_pct_decode(kw_arena_t *a, kw_str_t in, bool plus_is_space, kw_str_t *out);

#endif
