/*
 * http/server.c - the libmicrohttpd daemon and the request lifecycle.
 *
 * Lifecycle of one request (one conn_t, created on MHD's first access-handler call for
 * the request and freed in the NOTIFY_COMPLETED callback):
 *   1. first call: arena, request id, route match. 404/405 (before any handler, so before
 *      auth, as the contract's precedence requires) and 413 for a Content-Length over
 *      KW_MAX_BODY_BYTES are queued right here, without reading the body.
 *   2. upload calls: the body is collected on the heap up to KW_MAX_BODY_BYTES; past
 *      that the rest is discarded and the request ends in 413 without the handler.
 *   3. final call: the handler fills a kw_http_resp_t; we send it with X-Request-Id.
 *   4. completed: metrics, one JSON access-log line, free everything.
 *
 * The raw path reaches the router un-decoded: MHD's own unescaping is replaced by a
 * no-op (MHD_OPTION_UNESCAPE_CALLBACK), so "%2F" inside a {param} stays in that segment
 * and is decoded by the router after splitting. The same no-op applies to query
 * arguments, which kw_http_query decodes itself (MHD already turned '+' into ' ').
 *
 * Shutdown: kw_http_server_stop quiesces the listen socket, waits (bounded) for the
 * in-flight counter to reach zero, then stops the daemon.
 *
 * Never logged: headers, bodies, query strings, raw paths (a path may carry a key name).
 */
#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/log.h"
#include "http_int.h"

#define KW_MODULE "http"

/* MHD's per-connection pool holds the request line and headers; a request whose headers
 * do not fit is refused by MHD itself (see tests/unit/http/http_test.c, big_header). */
#define CONN_MEMORY_LIMIT (64u * 1024u)
/* How long kw_http_server_stop waits for in-flight requests before closing anyway. */
#define STOP_GRACE_NS (10ull * 1000000000ull)

struct kw_http_server {
    struct MHD_Daemon *daemon;
    kw__router_t router;
    kw__metrics_t metrics;
    void *ud;
    kw_http_metrics_fn metrics_fn;
    _Atomic long inflight;
    _Atomic uint64_t rid_fallback; /* only if getrandom fails */
};

typedef struct conn {
    kw_http_server_t *srv;
    struct MHD_Connection *c;
    kw_http_req_t req;
    kw__match_t match;
    size_t label;      /* metrics/log route label */
    kw_buf_t body;     /* heap; handed to the handler NUL-terminated */
    bool too_large;    /* body passed KW_MAX_BODY_BYTES: the rest is discarded */
    bool responded;    /* a response was queued (early or final) */
    int router_status; /* 404/405 decided by the router: sent without the handler */
    int status;
    uint64_t t0_ns;  /* first access-handler call */
    uint64_t dur_ns; /* t0 to the response being queued */
} conn_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- request ids ---- */

static bool request_id_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (n == 64)
            return false;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return n > 0;
}

static void request_id_set(conn_t *cs)
{
    char *out = cs->req.request_id;
    const char *given = MHD_lookup_connection_value(cs->c, MHD_HEADER_KIND, "X-Request-Id");
    if (given && request_id_ok(given)) {
        size_t n = strlen(given);
        memcpy(out, given, n + 1);
        return;
    }
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        /* Not a secret, only unique: fall back to time and a counter. */
        uint64_t a = now_ns(), b = atomic_fetch_add(&cs->srv->rid_fallback, 1);
        for (int i = 0; i < 8; i++) {
            rnd[i] = (unsigned char)(a >> (8 * i));
            rnd[8 + i] = (unsigned char)(b >> (8 * i));
        }
    }
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(rnd); i++) {
        out[2 * i] = hx[rnd[i] >> 4];
        out[2 * i + 1] = hx[rnd[i] & 0xF];
    }
    out[2 * sizeof(rnd)] = '\0';
}

/* ---- responses ---- */

/* Queues resp (taking its body) with Content-Type, X-Request-Id and the extra headers. */
static enum MHD_Result send_response(conn_t *cs, kw_http_resp_t *resp)
{
    if (resp->body.failed) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: out of memory building the response",
               cs->req.request_id);
        kw_buf_free(&resp->body);
        kw_buf_init(&resp->body);
        resp->n_hdrs = 0;
        kw_http_resp_error(resp, 500, "Internal Server Error");
        if (resp->body.failed) {
            kw_buf_free(&resp->body);
            return MHD_NO; /* cannot even say 500: drop the connection */
        }
    }
    if (resp->status < 100 || resp->status > 599) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: handler for %s set status %d",
               cs->req.request_id, cs->req.route.ptr ? cs->req.route.ptr : "?", resp->status);
        kw_buf_free(&resp->body);
        kw_buf_init(&resp->body);
        resp->n_hdrs = 0;
        kw_http_resp_error(resp, 500, "Internal Server Error");
    }
    struct MHD_Response *r;
    if (resp->body.ptr && resp->body.len) {
        r = MHD_create_response_from_buffer_with_free_callback(resp->body.len, resp->body.ptr,
                                                               kw_free);
        if (!r)
            kw_buf_free(&resp->body);
    } else {
        kw_buf_free(&resp->body);
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    kw_buf_init(&resp->body); /* owned by r now (or freed) */
    if (!r)
        return MHD_NO;
    bool ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                      resp->content_type ? resp->content_type
                                                         : "application/json") == MHD_YES &&
              MHD_add_response_header(r, "X-Request-Id", cs->req.request_id) == MHD_YES;
    for (size_t i = 0; ok && i < resp->n_hdrs && i < KW_ARRAY_LEN(resp->hdr_names); i++) {
        if (!resp->hdr_names[i] || !resp->hdr_values[i] ||
            MHD_add_response_header(r, resp->hdr_names[i], resp->hdr_values[i]) != MHD_YES) {
            /* MHD refuses CR/LF in headers; a handler that tries is a bug, not input. */
            kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: response header %zu refused",
                   cs->req.request_id, i);
            ok = false;
        }
    }
    if (!ok && resp->n_hdrs) {
        /* Answer 500 rather than drop the connection; the retry has no extra headers,
         * so it cannot come back here. */
        MHD_destroy_response(r);
        resp->n_hdrs = 0;
        kw_http_resp_error(resp, 500, "Internal Server Error");
        return send_response(cs, resp);
    }
    enum MHD_Result rc = MHD_NO;
    if (ok) {
        rc = MHD_queue_response(cs->c, (unsigned)resp->status, r);
        if (rc == MHD_YES) {
            /* Counted when queued, before a byte goes out: a client that has read the
             * response can rely on it being in /metrics already. */
            cs->responded = true;
            cs->status = resp->status;
            cs->dur_ns = now_ns() - cs->t0_ns;
            kw__metrics_observe(&cs->srv->metrics, cs->req.method, cs->label, cs->status,
                                cs->dur_ns);
        }
    }
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_error(conn_t *cs, int status, const char *msg, int grpc_code,
                                  const char *allow)
{
    kw_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    kw_buf_init(&resp.body);
    kw_http_resp_error(&resp, status, msg);
    if (grpc_code >= 0 && !resp.body.failed && resp.body.len > 0) {
        /* SpiceDB gateway shape: {"detail": m, "code": n, "message": m}. */
        resp.body.len--; /* drop the closing brace */
        kw_buf_printf(&resp.body, ", \"code\": %d, \"message\": ", grpc_code);
        kw_json_escape(&resp.body, kw_str_c(msg));
        kw_buf_puts(&resp.body, "}");
    }
    if (allow && *allow)
        kw_http_resp_header(&resp, "Allow", allow);
    return send_response(cs, &resp);
}

/* ---- MHD callbacks ---- */

/* Keeps the path and query arguments exactly as received (see the file comment). */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* MHD hands us its own format strings; nothing client-supplied is ever the format. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n <= 0)
        return;
    size_t len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    kw_log(KW_LOG_WARN, "mhd", "%s", msg);
}

static conn_t *conn_new(kw_http_server_t *srv, struct MHD_Connection *c, const char *url,
                        const char *method)
{
    conn_t *cs = kw_calloc(1, sizeof(*cs));
    if (!cs)
        return NULL;
    cs->req.arena = kw_arena_new(0);
    if (!cs->req.arena) {
        kw_free(cs);
        return NULL;
    }
    cs->srv = srv;
    cs->c = c;
    cs->t0_ns = now_ns();
    cs->label = srv->router.n_labels - 1; /* "unmatched" until routed */
    kw_buf_init(&cs->body);
    cs->req.method = kw_str_c(method);
    cs->req.path = kw_str_c(url);
    cs->req.body = KW_STR("");
    cs->req.priv = cs;
    request_id_set(cs);
    atomic_fetch_add(&srv->inflight, 1);
    return cs;
}

static void conn_free(conn_t *cs)
{
    kw_buf_free(&cs->body);
    kw_arena_free(cs->req.arena);
    kw_free(cs);
}

/* The router's own answers: 404 (no template, or params that do not decode) and 405. */
static enum MHD_Result send_router_error(conn_t *cs)
{
    if (cs->router_status == 405)
        return send_error(cs, 405, "Method Not Allowed", cs->match.v1 ? 12 : -1, cs->match.allow);
    cs->label = cs->srv->router.n_labels - 1;
    return send_error(cs, 404, "Not Found", cs->match.v1 ? 5 : -1, NULL);
}

/* Whether the request announces a body (a non-zero Content-Length or any
 * Transfer-Encoding). */
static bool has_body(const conn_t *cs)
{
    const char *cl =
        MHD_lookup_connection_value(cs->c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(cs->c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
}

/* First call for a request: route it and refuse what can be refused before the body.
 * A router error for a request WITH a body is sent at once: MHD then closes the
 * connection without reading the body (it could be large, and it must never be parsed
 * as a next request). Without a body the error waits for the final call, where MHD
 * keeps the connection alive as for any other response. */
static enum MHD_Result on_first(conn_t *cs)
{
    kw__match_t *m = &cs->match;
    kw__router_match(&cs->srv->router, cs->req.method, cs->req.path, m);
    if (m->kind == KW__MATCH_NOT_FOUND) {
        cs->router_status = 404;
    } else {
        cs->label = m->route->label;
        cs->req.route = kw_str_c(m->route->def->pattern);
        if (m->kind == KW__MATCH_BAD_METHOD)
            cs->router_status = 405;
        else if (!kw__router_decode_params(m, &cs->req))
            cs->router_status = 404;
    }
    if (cs->router_status)
        return has_body(cs) ? send_router_error(cs) : MHD_YES;
    const char *cl =
        MHD_lookup_connection_value(cs->c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        /* MHD rejects a malformed Content-Length itself; this only sizes the body. */
        if (end != cl && (errno == ERANGE || v > KW_MAX_BODY_BYTES)) {
            cs->too_large = true;
            return send_error(cs, 413, "Request body too large", -1, NULL);
        }
    }
    return MHD_YES;
}

static enum MHD_Result dispatch(conn_t *cs)
{
    if (cs->router_status)
        return send_router_error(cs);
    if (cs->too_large)
        return send_error(cs, 413, "Request body too large", -1, NULL);
    if (cs->body.failed) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: out of memory reading the body",
               cs->req.request_id);
        return send_error(cs, 500, "Internal Server Error", -1, NULL);
    }
    if (cs->body.ptr)
        cs->req.body = (kw_str_t){cs->body.ptr, cs->body.len};
    kw_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = 200;
    kw_buf_init(&resp.body);
    cs->match.route->def->fn(&cs->req, &resp, cs->srv->ud);
    return send_response(cs, &resp);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    kw_http_server_t *srv = cls;
    conn_t *cs = *con_cls;
    if (!cs) {
        cs = conn_new(srv, c, url, method);
        if (!cs) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "out of memory accepting a request");
            return MHD_NO;
        }
        *con_cls = cs;
        return on_first(cs);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cs->responded || cs->too_large || cs->router_status)
            return MHD_YES; /* discard */
        if (n > KW_MAX_BODY_BYTES - cs->body.len) {
            cs->too_large = true;
            kw_buf_free(&cs->body);
            return MHD_YES;
        }
        kw_buf_append(&cs->body, upload_data, n);
        return MHD_YES;
    }
    if (cs->responded)
        return MHD_YES;
    return dispatch(cs);
}

/* One access-log line; see the file comment for what must never appear in it. */
static void access_log(conn_t *cs, uint64_t dur_ns)
{
    if (kw_log_get_level() > KW_LOG_INFO)
        return;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_buf_printf(&b,
                  "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\","
                  "\"request_id\":",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  ts.tv_nsec / 1000, cs->status >= 500 ? "error" : "info");
    kw_json_escape(&b, kw_str_c(cs->req.request_id));
    kw_buf_puts(&b, ",\"method\":");
    kw_str_t meth = cs->req.method;
    if (meth.len > 32)
        meth.len = 32;
    kw_json_escape(&b, meth);
    kw_buf_puts(&b, ",\"route\":");
    kw_json_escape(&b, kw_str_c(cs->srv->router.labels[cs->label]));
    kw_buf_printf(&b, ",\"status\":%d,\"duration_ms\":%.3f,\"subject\":", cs->status,
                  (double)dur_ns / 1e6);
    if (cs->req.log_subject)
        kw_json_escape(&b, kw_str_c(cs->req.log_subject));
    else
        kw_buf_puts(&b, "null");
    kw_buf_puts(&b, "}");
    if (!b.failed)
        kw_log_raw(b.ptr, b.len);
    kw_buf_free(&b);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    kw_http_server_t *srv = cls;
    conn_t *cs = *con_cls;
    if (!cs)
        return;
    *con_cls = NULL;
    /* A request that never got a response (client gone, MHD error) is logged with
     * status 0 and its time so far, and not counted: there is no status to count. */
    access_log(cs, cs->responded ? cs->dur_ns : now_ns() - cs->t0_ns);
    conn_free(cs);
    atomic_fetch_sub(&srv->inflight, 1);
}

/* ---- public API ---- */

const char *kw_http_header(const kw_http_req_t *req, const char *name)
{
    const conn_t *cs = req->priv;
    return MHD_lookup_connection_value(cs->c, MHD_HEADER_KIND, name);
}

typedef struct query_find {
    const conn_t *cs;
    const char *name;
    bool found, bad;
    kw_str_t value;
} query_find_t;

static enum MHD_Result query_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    query_find_t *q = cls;
    kw_str_t k;
    if (!key || !kw_http_pct_decode(q->cs->req.arena, kw_str_c(key), true, &k) ||
        !kw_str_eq_c(k, q->name))
        return MHD_YES;
    kw_str_t v;
    /* A decoded NUL is refused like a bad escape: C-string consumers would truncate. */
    if (!kw_http_pct_decode(q->cs->req.arena, kw_str_c(value ? value : ""), true, &v) ||
        memchr(v.ptr, '\0', v.len))
        q->bad = true;
    else {
        q->found = true;
        q->value = v;
    }
    return MHD_NO; /* the first occurrence wins */
}

kw_str_t kw_http_query(const kw_http_req_t *req, const char *name, bool *found, bool *bad)
{
    query_find_t q = {.cs = req->priv, .name = name};
    MHD_get_connection_values(q.cs->c, MHD_GET_ARGUMENT_KIND, query_iter, &q);
    if (found)
        *found = q.found;
    if (bad)
        *bad = q.bad;
    return q.found ? q.value : KW_STR_NULL;
}

kw_http_server_t *kw_http_req_server(const kw_http_req_t *req)
{
    return ((const conn_t *)req->priv)->srv;
}

void kw_http_server_metrics(kw_http_server_t *srv, kw_buf_t *out)
{
    kw__metrics_write(&srv->metrics, out);
    if (srv->metrics_fn)
        srv->metrics_fn(out, srv->ud);
}

/* Resolves host (numeric or a name) into a listening address with the given port. */
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, bool *v6,
                   kw_diag_t *diag)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return kw_diag_set(diag, KW_EIO, 0, 0, "cannot resolve listen host %s: %s", host,
                           gai_strerror(rc));
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    if (*v6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    freeaddrinfo(res);
    return KW_OK;
}

int kw_http_server_start(const kw_http_config_t *cfg, kw_http_server_t **out, uint16_t *bound_port,
                         kw_diag_t *diag)
{
    const char *host = cfg->host ? cfg->host : "127.0.0.1";
    struct sockaddr_storage ss;
    bool v6 = false;
    int rc = resolve(host, cfg->port, &ss, &v6, diag);
    if (rc != KW_OK)
        return rc;
    kw_http_server_t *srv = kw_calloc(1, sizeof(*srv));
    if (!srv)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory starting the HTTP server");
    srv->ud = cfg->ud;
    srv->metrics_fn = cfg->metrics_fn;
    rc = kw__router_init(&srv->router, cfg->routes, cfg->n_routes, diag);
    if (rc != KW_OK)
        goto fail_router;
    rc = kw__metrics_init(&srv->metrics, srv->router.labels, srv->router.n_labels);
    if (rc != KW_OK) {
        kw_diag_set(diag, rc, 0, 0, "out of memory starting the HTTP server");
        goto fail_metrics;
    }
    unsigned threads = cfg->threads;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    if (threads > 256)
        threads = 256;
    unsigned conn_limit = cfg->conn_limit ? cfg->conn_limit : 1024;
    if (conn_limit < threads)
        conn_limit = threads;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* MHD_OPTION_LISTENING_ADDRESS_REUSE is deliberately not passed: left unset, MHD
     * sets SO_REUSEADDR (restart while old sockets sit in TIME_WAIT), whereas 1 would
     * add SO_REUSEPORT and let a second process silently share our port. */
    /* The logger must be the first option or MHD logs the earlier ones to stderr itself.
     * A pool of 1 is no pool in MHD's terms (it warns about 0 and 1), so one thread
     * leaves the option out. */
    struct MHD_OptionItem pool[] = {{MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)threads, NULL},
                                    {MHD_OPTION_END, 0, NULL}};
    srv->daemon = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_ARRAY,
        threads > 1 ? pool : pool + 1, MHD_OPTION_CONNECTION_TIMEOUT,
        cfg->conn_timeout_s ? cfg->conn_timeout_s : 30u, MHD_OPTION_CONNECTION_LIMIT, conn_limit,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_END);
    if (!srv->daemon) {
        int e = errno;
        rc = kw_diag_set(diag, KW_EIO, 0, 0, "cannot listen on %s:%u: %s", host,
                         (unsigned)cfg->port, e ? strerror(e) : "libmicrohttpd refused");
        goto fail_daemon;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    uint16_t port = info ? info->port : 0;
    if (port == 0) {
        rc = kw_diag_set(diag, KW_EIO, 0, 0, "listening on %s but the port is unknown", host);
        MHD_stop_daemon(srv->daemon);
        goto fail_daemon;
    }
    if (bound_port)
        *bound_port = port;
    *out = srv;
    kw_log(KW_LOG_INFO, KW_MODULE, "listening on %s:%u (%u threads)", host, (unsigned)port,
           threads);
    return KW_OK;

fail_daemon:
    kw__metrics_close(&srv->metrics);
fail_metrics:
    kw__router_close(&srv->router);
fail_router:
    kw_free(srv);
    return rc;
}

void kw_http_server_stop(kw_http_server_t *srv)
{
    if (!srv)
        return;
    MHD_socket lfd = MHD_quiesce_daemon(srv->daemon);
    uint64_t deadline = now_ns() + STOP_GRACE_NS;
    while (atomic_load(&srv->inflight) > 0 && now_ns() < deadline) {
        struct timespec d = {0, 2 * 1000000};
        nanosleep(&d, NULL);
    }
    long left = atomic_load(&srv->inflight);
    if (left > 0)
        kw_log(KW_LOG_WARN, KW_MODULE, "stopping with %ld requests still in flight", left);
    MHD_stop_daemon(srv->daemon);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    kw__metrics_close(&srv->metrics);
    kw__router_close(&srv->router);
    kw_free(srv);
}
