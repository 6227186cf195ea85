/*
 * http/http.h - the HTTP server (the only code that includes microhttpd.h), the router,
 * request lifecycle, request logging and Prometheus metrics.
 *
 * Flow: MHD accepts -> the router matches (method, path template) -> 404/405 in the
 * error shape if nothing matches -> the body is collected (413 past KW_MAX_BODY_BYTES)
 * -> the route's handler fills a kw_http_resp_t -> the server sends it, adds
 * X-Request-Id, records metrics and writes one JSON log line to stderr.
 *
 * Ownership: a kw_http_req_t and everything reachable from it (path params, headers,
 *   body, arena) live until the response is sent; handlers allocate from req->arena and
 *   never free. The response body is a kw_buf_t the server frees after sending.
 * Threads: handlers run on MHD's worker threads (a pool sized to the cores), many at
 *   once; they must be thread-safe. Metrics counters are atomic.
 * Errors: kw_http_server_start returns KW_EIO (bind failed: diag names the address).
 */
#ifndef KW_HTTP_HTTP_H
#define KW_HTTP_HTTP_H

#include "base/base.h"

typedef struct kw_http_server kw_http_server_t;

#define KW_HTTP_MAX_PARAMS 4

typedef struct kw_http_req {
    kw_str_t method;
    kw_str_t path;       /* raw path as received (not decoded) */
    kw_str_t route;      /* the matched template, e.g. "/agent_api_keys/{id}" */
    kw_str_t params[KW_HTTP_MAX_PARAMS]; /* percent-decoded path params, in template order */
    size_t n_params;
    kw_str_t body;       /* NUL-terminated at body.ptr[body.len] */
    kw_arena_t *arena;   /* request lifetime */
    char request_id[65]; /* <= 64 chars of [A-Za-z0-9._-], NUL-terminated */
    /* Set by the handler for the access log (e.g. "user:alice"); never a secret. */
    const char *log_subject;
    void *priv; /* the server's connection state */
} kw_http_req_t;

/* Request header (case-insensitive name); NULL if absent. Valid for the request. */
const char *kw_http_header(const kw_http_req_t *req, const char *name);
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
} kw_http_resp_t;

/* Adds a response header (name and value must outlive the request: arena or static). */
void kw_http_resp_header(kw_http_resp_t *resp, const char *name, const char *value);
/* Sets status and a `{"detail": msg}` body (JSON-escaped). */
void kw_http_resp_error(kw_http_resp_t *resp, int status, const char *msg);

typedef void (*kw_http_handler_fn)(kw_http_req_t *req, kw_http_resp_t *resp, void *ud);

typedef struct kw_http_route {
    const char *method;   /* "GET", "POST", "DELETE", ... */
    const char *pattern;  /* "/agents/{id}", "/agent_api_keys/name/{name}", literal segments */
    kw_http_handler_fn fn;
    bool v1_errors; /* 404/405 under /v1 carry SpiceDB gateway fields */
} kw_http_route_t;

/* Extra /metrics text (Prometheus exposition) appended after the server's own. */
typedef void (*kw_http_metrics_fn)(kw_buf_t *out, void *ud);

typedef struct kw_http_config {
    const char *host;       /* "127.0.0.1" */
    uint16_t port;          /* 0 = pick a free port */
    unsigned threads;       /* 0 = number of cores */
    unsigned conn_timeout_s; /* idle connection timeout; 0 = 30 */
    unsigned conn_limit;    /* 0 = 1024 */
    const kw_http_route_t *routes;
    size_t n_routes;
    void *ud; /* passed to handlers and metrics_fn */
    kw_http_metrics_fn metrics_fn;
} kw_http_config_t;

/* Binds and starts serving. *bound_port gets the actual port. */
KW_NODISCARD int kw_http_server_start(const kw_http_config_t *cfg, kw_http_server_t **out,
                                      uint16_t *bound_port, kw_diag_t *diag);
/* Stops accepting, waits for in-flight requests to finish, frees the server. */
void kw_http_server_stop(kw_http_server_t *srv);

/* Appends the server's own metrics (requests_total, duration histogram) to out, then
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
