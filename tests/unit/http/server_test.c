/*
 * tests/unit/http/server_test.c - the hostile-network rules of the HTTP server (issue 9
 * items 1, 2, 4, 8): raw bytes over loopback sockets, every answer checked on the wire.
 *
 * - RFC 9112 framing: smuggling shapes (two Content-Lengths, Content-Length with any
 *   spelling of Transfer-Encoding), obs-fold, whitespace before the colon, bad chunk
 *   sizes, missing Host, repeated Authorization, versions other than 1.0/1.1; every
 *   server-made error is JSON and closes the connection.
 * - absolute deadlines that a trickle of bytes does not extend (408);
 * - the connection limit and the per-address cap; the global body budget (503);
 * - on_headers: a 401 goes out before any body byte is sent;
 * - parked requests (wake and deadline), and stop with a stuck handler;
 * - streamed answers: chunked on a keep-alive connection, and a client that leaves stops
 *   the producer (issue 12 item 2).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "http/http.h"
#include "kw_test.h"
#include "wire.h"

static _Atomic int n_deletes;     /* DELETE /items/{id} handler runs */
static _Atomic int n_echo;        /* POST /echo handler runs */
static _Atomic int release_stuck; /* h_stuck returns once this is set */
static _Atomic int stuck_started;
static kw_http_server_t *park_srv; /* for h_park's wake test */

static void h_ping(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)req;
    (void)ud;
    kw_buf_puts(&resp->body, "{\"ok\": true}");
}

static void h_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)req;
    (void)ud;
    atomic_fetch_add(&n_deletes, 1);
    kw_buf_puts(&resp->body, "{\"deleted\": true}");
}

static void h_echo(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    atomic_fetch_add(&n_echo, 1);
    resp->content_type = "text/plain";
    kw_buf_printf(&resp->body, "%zu:%s:", req->body.len, req->auth ? (char *)req->auth : "-");
    kw_buf_append(&resp->body, req->body.ptr, req->body.len > 64 ? 64 : req->body.len);
}

/* Parks until woken or the deadline; answers which it was. */
static void h_park(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    if (req->run == KW_HTTP_RUN_FIRST) {
        const char *ms = kw_http_header(req, "x-park-ms");
        kw_http_req_park(req, kw_http_now_ns() + (uint64_t)atoi(ms ? ms : "5000") * 1000000ull);
        return;
    }
    kw_buf_puts(&resp->body,
                req->run == KW_HTTP_RUN_WOKEN ? "{\"run\": \"woken\"}" : "{\"run\": \"deadline\"}");
}

static void h_stuck(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)req;
    (void)ud;
    atomic_store(&stuck_started, 1);
    while (!atomic_load(&release_stuck)) {
        struct timespec d = {0, 5 * 1000000};
        nanosleep(&d, NULL);
    }
    kw_buf_puts(&resp->body, "{}");
}

/* Streams X-Lines lines of 1 KiB from a pool worker; records how it ended. */
static _Atomic int stream_lines, stream_rc, stream_done, stream_cancelled;

static void h_stream(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    if (!kw_http_req_on_worker(req)) {
        if (kw_http_req_to_worker(req) != KW_OK)
            kw_http_resp_error(resp, 500, "no worker");
        return;
    }
    const char *n_text = kw_http_header(req, "x-lines");
    int n = atoi(n_text ? n_text : "10"), i = 0, rc = KW_OK;
    char line[1024];
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    resp->status = 200;
    resp->content_type = "application/x-ndjson";
    rc = kw_http_stream_begin(req, resp);
    for (; rc == KW_OK && i < n; i++)
        rc = kw_http_stream_write(req, line, sizeof(line));
    atomic_store(&stream_lines, i);
    atomic_store(&stream_rc, rc);
    atomic_store(&stream_cancelled, kw_http_stream_cancelled(req));
    atomic_store(&stream_done, 1);
}

/* GET /give: 240 pieces through kw_http_stream_give (sizes 1 B to 70 KB, so that the
 * loop is sometimes still holding the last one: both the hand-over and the copy after it)
 * with a kw_http_stream_write every 7th; byte k of the body is give_byte(k). */
static _Atomic int give_rc, give_done, give_left_len;
static const size_t GIVE_SIZES[] = {1, 100, 5000, 20000, 70000, 16384, 300};
#define GIVE_PIECES 240

static char give_byte(size_t k)
{
    return (char)('a' + (k * 7 + k / 1000) % 26);
}

static void h_give(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    if (!kw_http_req_on_worker(req)) {
        if (kw_http_req_to_worker(req) != KW_OK)
            kw_http_resp_error(resp, 500, "no worker");
        return;
    }
    resp->status = 200;
    resp->content_type = "application/octet-stream";
    int rc = kw_http_stream_begin(req, resp);
    kw_buf_t b;
    kw_buf_init(&b);
    size_t k = 0;
    int left = 0;
    for (int i = 0; rc == KW_OK && i < GIVE_PIECES; i++) {
        size_t n = GIVE_SIZES[i % KW_ARRAY_LEN(GIVE_SIZES)];
        char small[300];
        if (i % 7 == 3) {
            for (size_t j = 0; j < sizeof(small); j++)
                small[j] = give_byte(k++);
            rc = kw_http_stream_write(req, small, sizeof(small));
            continue;
        }
        b.len = 0;
        for (size_t j = 0; j < KW_HTTP_STREAM_HEAD; j++)
            kw_buf_append(&b, "#", 1); /* scratch: must not reach the wire */
        for (size_t j = 0; j < n; j++) {
            char c = give_byte(k++);
            kw_buf_append(&b, &c, 1);
        }
        rc = kw_http_stream_give(req, &b);
        left += b.len != 0;
    }
    kw_buf_free(&b);
    atomic_store(&give_left_len, left);
    atomic_store(&give_rc, rc);
    atomic_store(&give_done, 1);
}

/* POST /upload (a streamed body): reads the body piece by piece (sleeping X-Slow-Ms after
 * each piece, or reading only X-Stop-After pieces), answers its length and FNV-1a hash,
 * and records how the read ended and the largest piece. */
static _Atomic int upload_rc, upload_done;
static _Atomic size_t upload_max_piece;

static void h_upload(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    const char *slow = kw_http_header(req, "x-slow-ms");
    const char *stop = kw_http_header(req, "x-stop-after");
    long slow_ms = slow ? atol(slow) : 0, stop_after = stop ? atol(stop) : -1;
    uint64_t h = 1469598103934665603ull, total = 0;
    int rc = KW_OK;
    for (long pieces = 0; stop_after < 0 || pieces < stop_after; pieces++) {
        kw_str_t chunk;
        rc = kw_http_body_next(req, &chunk);
        if (rc != KW_OK || chunk.len == 0)
            break;
        if (chunk.len > atomic_load(&upload_max_piece))
            atomic_store(&upload_max_piece, chunk.len);
        for (size_t i = 0; i < chunk.len; i++)
            h = (h ^ (unsigned char)chunk.ptr[i]) * 1099511628211ull;
        total += chunk.len;
        if (slow_ms) {
            struct timespec d = {slow_ms / 1000, (slow_ms % 1000) * 1000000};
            nanosleep(&d, NULL);
        }
    }
    kw_buf_printf(&resp->body, "{\"bytes\": %llu, \"hash\": \"%016llx\", \"rc\": %d}",
                  (unsigned long long)total, (unsigned long long)h, rc);
    atomic_store(&upload_rc, rc);
    atomic_store(&upload_done, 1);
}

static void h_metrics(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    resp->content_type = "text/plain; version=0.0.4";
    kw_http_server_metrics(kw_http_req_server(req), &resp->body);
}

/* on_headers: refuses requests without "X-Ok: yes" (a 401), except /ping and /metrics;
 * leaves a marker in req->auth for the handler. */
static bool on_headers(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    if (req->route_flags & 1u)
        return true;
    const char *ok = kw_http_header(req, "x-ok");
    if (!ok || strcmp(ok, "yes") != 0) {
        kw_http_resp_error(resp, 401, "Unauthorized");
        return false;
    }
    req->auth = kw_arena_strndup(req->arena, "authed", 6);
    return true;
}

static const kw_http_route_t routes[] = {
    {"GET", "/ping", h_ping, 1u},
    {"DELETE", "/items/{id}", h_delete, 1u},
    {"POST", "/echo", h_echo, 1u},
    {"POST", "/guarded", h_echo, 0},
    {"GET", "/guarded", h_echo, 0},
    {"GET", "/park", h_park, 1u},
    {"GET", "/stuck", h_stuck, 1u},
    {"GET", "/metrics", h_metrics, 1u},
    {"GET", "/stream", h_stream, 1u},
    {"GET", "/give", h_give, 1u},
    {"POST", "/upload", h_upload, 1u | KW_HTTP_ROUTE_STREAM_BODY},
};

static kw_http_server_t *start_cfg(kw_http_config_t *cfg, uint16_t *port)
{
    kw_log_set_level(KW_LOG_WARN);
    cfg->host = "127.0.0.1";
    cfg->routes = routes;
    cfg->n_routes = KW_ARRAY_LEN(routes);
    cfg->on_headers = on_headers;
    if (!cfg->threads)
        cfg->threads = 2;
    kw_http_server_t *srv = NULL;
    kw_diag_t diag;
    if (kw_http_server_start(cfg, &srv, port, &diag) != KW_OK) {
        fprintf(stderr, "start: %s\n", diag.msg);
        return NULL;
    }
    return srv;
}

static kw_http_server_t *start(uint16_t *port)
{
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    return start_cfg(&cfg, port);
}

static double now_s(void)
{
    return (double)kw_http_now_ns() / 1e9;
}

/* Waits (at most ms) for the peer to close: true if recv saw EOF or a reset. */
static bool closed_within(int fd, int ms)
{
    char buf[4096];
    double end = now_s() + ms / 1000.0;
    while (now_s() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)((end - now_s()) * 1000) + 1;
        if (poll(&p, 1, left) <= 0)
            return false;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return true;
    }
    return false;
}

/* Sends raw on a fresh connection, reads one response, and tells whether the server then
 * closed the connection. */
static int raw_req(uint16_t port, const char *raw, resp_t *r, bool *closed)
{
    int fd = dial(port);
    if (fd < 0)
        return -1;
    int rc = send_all(fd, raw, strlen(raw));
    if (rc == 0)
        rc = read_resp(fd, r, false);
    if (rc == 0 && closed)
        *closed = closed_within(fd, 3000);
    close(fd);
    return rc;
}

static bool is_json_detail(const resp_t *r)
{
    char ct[64];
    return strncmp(r->body, "{\"detail\": \"", 12) == 0 && r->body[r->body_len - 1] == '}' &&
           hdr(r, "Content-Type", ct, sizeof(ct)) && strcmp(ct, "application/json") == 0;
}

typedef struct bad_case {
    const char *raw;
    int status;
} bad_case_t;

KW_TEST(http_rfc9112_refusals_are_json_and_close)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    static const bad_case_t cases[] = {
        /* Smuggling shapes. */
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd", 400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc", 400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
         "\r\n0\r\n\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:  chunked\r\nContent-Length: 5\r\n"
         "\r\n0\r\n\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: Chunked\r\n"
         "\r\n0\r\n\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\ntransfer-encoding: gzip\r\n"
         "\r\n0\r\n\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
         501},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n", 501},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         501},
        /* Field syntax. */
        {"GET /ping HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n folded\r\n\r\n", 400},
        {"GET /ping HTTP/1.1\r\nHost: t\r\nX-A : 1\r\n\r\n", 400},
        {"GET /ping HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n", 400},
        {"GET /ping HTTP/1.1\r\nHost: t\r\n: empty\r\n\r\n", 400},
        {"GET /ping HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400},
        {"GET /ping HTTP/1.1\nHost: t\n\n", 400},
        {"GET /ping HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400},
        /* Host and Authorization. */
        {"GET /ping HTTP/1.1\r\n\r\n", 400},
        {"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"GET /ping HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer a\r\n"
         "Authorization: Bearer b\r\n\r\n",
         400},
        /* Request line and versions. */
        {"GET /ping HTTP/2.0\r\nHost: t\r\n\r\n", 505},
        {"GET /ping HTTP/1.2\r\nHost: t\r\n\r\n", 505},
        {"GET /ping HTTP/0.9\r\nHost: t\r\n\r\n", 505},
        {"GET /ping HTTP/1.1x\r\nHost: t\r\n\r\n", 400},
        {"GET /ping  HTTP/1.1\r\nHost: t\r\n\r\n", 400},
        {"GET\r\nHost: t\r\n\r\n", 400},
        {"G(T /ping HTTP/1.1\r\nHost: t\r\n\r\n", 400},
        /* Bad chunk sizes. */
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", 400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         "11111111111111111\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400},
        /* Expectations other than 100-continue. */
        {"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx", 417},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(cases); i++) {
        resp_t r;
        bool closed = false;
        int rc = raw_req(port, cases[i].raw, &r, &closed);
        if (rc != 0 || r.status != cases[i].status || !closed || !is_json_detail(&r))
            fprintf(stderr, "  case %zu: rc %d status %d closed %d body %s\n", i, rc, r.status,
                    closed, rc == 0 ? r.body : "-");
        KW_ASSERT_EQ(rc, 0);
        KW_ASSERT_EQ(r.status, cases[i].status);
        KW_ASSERT(closed);
        KW_ASSERT(is_json_detail(&r));
        resp_free(&r);
    }
    KW_ASSERT_EQ(atomic_load(&n_echo), 0); /* no refused request reached a handler */
    kw_http_server_stop(srv);
}

KW_TEST(http_smuggled_request_is_never_executed)
{
    /* Content-Length plus Transfer-Encoding (each spelling): one 400, then the connection
     * is closed: the DELETE hidden in the body never runs as a second request. */
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    atomic_store(&n_deletes, 0);
    const char *te[] = {"chunked", " chunked", "Chunked", "CHUNKED\t", "chunked "};
    const char *inner = "DELETE /items/victim HTTP/1.1\r\nHost: t\r\n\r\n";
    for (size_t i = 0; i < KW_ARRAY_LEN(te); i++) {
        char raw[512];
        snprintf(raw, sizeof(raw),
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                 "Transfer-Encoding:%s\r\n\r\n0\r\n\r\n%s",
                 te[i], inner);
        int fd = dial(port);
        KW_ASSERT(fd >= 0);
        KW_ASSERT_EQ(send_all(fd, raw, strlen(raw)), 0);
        resp_t r;
        KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
        KW_ASSERT_EQ(r.status, 400);
        resp_free(&r);
        KW_ASSERT(closed_within(fd, 3000));
        close(fd);
    }
    /* Two Content-Lengths, the first one shorter: also refused, also closed. */
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    char raw[512];
    snprintf(raw, sizeof(raw),
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: %zu\r\n"
             "\r\n%s",
             strlen(inner), inner);
    KW_ASSERT_EQ(send_all(fd, raw, strlen(raw)), 0);
    resp_t r;
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 400);
    resp_free(&r);
    KW_ASSERT(closed_within(fd, 3000));
    close(fd);
    KW_ASSERT_EQ(atomic_load(&n_deletes), 0);
    /* The same DELETE sent honestly does run (the counter works). */
    KW_ASSERT_EQ(raw_req(port, inner, &r, NULL), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    KW_ASSERT_EQ(atomic_load(&n_deletes), 1);
    kw_http_server_stop(srv);
}

KW_TEST(http_accepted_framings)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    resp_t r;
    /* The same Content-Length twice is one length. */
    KW_ASSERT_EQ(raw_req(port,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                         "Content-Length: 3\r\nConnection: close\r\n\r\nabc",
                         &r, NULL),
                 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "3:-:abc");
    resp_free(&r);
    /* Chunked with extensions, uppercase hex, a trailer, and a spelling of the coding. */
    KW_ASSERT_EQ(raw_req(port,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ChUnKeD \r\n"
                         "Connection: close\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n"
                         "0\r\nX-Trailer: v\r\n\r\n",
                         &r, NULL),
                 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "13:-:abc0123456789");
    resp_free(&r);
    /* An empty chunked body. */
    KW_ASSERT_EQ(raw_req(port,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                         "Connection: close\r\n\r\n0\r\n\r\n",
                         &r, NULL),
                 0);
    KW_ASSERT_STR_EQ(r.body, "0:-:");
    resp_free(&r);
    /* HTTP/1.0 needs no Host and closes by default. */
    bool closed = false;
    KW_ASSERT_EQ(raw_req(port, "GET /ping HTTP/1.0\r\n\r\n", &r, &closed), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT(closed);
    resp_free(&r);
    /* Absolute-form targets are reduced to their path. */
    KW_ASSERT_EQ(raw_req(port, "GET http://t/ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                         &r, NULL),
                 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    /* HTTP/1.0 keep-alive, and empty lines before a request line are skipped. */
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *ka = "GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, ka, strlen(ka)), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    char v[64];
    KW_ASSERT_STR_EQ(hdr(&r, "Connection", v, sizeof(v)), "keep-alive");
    resp_free(&r);
    const char *again = "\r\n\r\nGET /ping HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, again, strlen(again)), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    close(fd);
    /* Expect: 100-continue: the interim answer comes before the body is sent. */
    fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *h = "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\n"
                    "Content-Length: 4\r\nConnection: close\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, h, strlen(h)), 0);
    char cont[64] = {0};
    size_t got = 0;
    while (got < 25) {
        ssize_t n = recv(fd, cont + got, 25 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    KW_ASSERT_STR_EQ(cont, "HTTP/1.1 100 Continue\r\n\r\n");
    KW_ASSERT_EQ(send_all(fd, "wxyz", 4), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_STR_EQ(r.body, "4:-:wxyz");
    resp_free(&r);
    close(fd);
    kw_http_server_stop(srv);
}

KW_TEST(http_pipelined_answers_stay_in_order)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    /* A parked (slow) request first, then two quick ones, all in one write. */
    const char *raw = "GET /park HTTP/1.1\r\nHost: t\r\nX-Park-Ms: 200\r\n\r\n"
                      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
                      "GET /ping HTTP/1.1\r\nHost: t\r\n\r\n";
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    KW_ASSERT_EQ(send_all(fd, raw, strlen(raw)), 0);
    resp_t r;
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_STR_EQ(r.body, "{\"run\": \"deadline\"}");
    resp_free(&r);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_STR_EQ(r.body, "2:-:hi");
    resp_free(&r);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_STR_EQ(r.body, "{\"ok\": true}");
    resp_free(&r);
    close(fd);
    kw_http_server_stop(srv);
}

/* Sends `fast` at once, then `raw` one byte every `gap_ms` until the server speaks or
 * `max_ms` passes; returns the seconds that took. The answer is read into r. */
static double trickle(uint16_t port, const char *fast, const char *raw, int gap_ms, int max_ms,
                      resp_t *r)
{
    int fd = dial(port);
    if (fd < 0)
        return -1;
    if (send_all(fd, fast, strlen(fast)) != 0) {
        close(fd);
        return -1;
    }
    double t0 = now_s();
    size_t len = strlen(raw), i = 0;
    memset(r, 0, sizeof(*r));
    while ((now_s() - t0) * 1000 < max_ms) {
        if (i < len && send(fd, raw + i, 1, MSG_NOSIGNAL) == 1)
            i++;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, gap_ms) > 0)
            break; /* the server spoke (408) or closed */
    }
    double t = now_s() - t0;
    if (read_resp(fd, r, false) != 0)
        r->status = 0;
    close(fd);
    return t;
}

KW_TEST(http_deadlines_are_absolute)
{
    uint16_t port = 0;
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.header_timeout_s = 1;
    cfg.body_timeout_s = 1;
    cfg.conn_timeout_s = 1;
    kw_http_server_t *srv = start_cfg(&cfg, &port);
    KW_ASSERT(srv);
    resp_t r;
    /* Headers trickling in, one byte per 100 ms: cut at ~1 s, 408 in JSON. */
    double t = trickle(port, "",
                       "GET /ping HTTP/1.1\r\nHost: t\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                       "aaaaaaaaaaaaaaaaaaaa\r\n\r\n",
                       100, 6000, &r);
    KW_ASSERT(t >= 0.9 && t < 2.5);
    KW_ASSERT_EQ(r.status, 408);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Request Timeout\"}");
    resp_free(&r);
    /* A body trickling in: cut at ~1 s after the headers, 408. */
    t = trickle(
        port, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        20, 6000, &r);
    KW_ASSERT(t >= 0.9 && t < 2.5);
    KW_ASSERT_EQ(r.status, 408);
    resp_free(&r);
    /* A silent connection is closed (no answer: nothing was asked). */
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    double t0 = now_s();
    KW_ASSERT(closed_within(fd, 4000));
    KW_ASSERT(now_s() - t0 < 2.5);
    close(fd);
    /* Counted. */
    KW_ASSERT_EQ(get(port, "/metrics", &r), 0);
    KW_ASSERT(strstr(r.body, "keyward_http_deadline_expired_total{phase=\"headers\"} 1\n"));
    KW_ASSERT(strstr(r.body, "keyward_http_deadline_expired_total{phase=\"body\"} 1\n"));
    resp_free(&r);
    kw_http_server_stop(srv);
}

KW_TEST(http_connection_limits)
{
    uint16_t port = 0;
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.conn_limit = 4;
    cfg.conn_per_addr = 3;
    kw_http_server_t *srv = start_cfg(&cfg, &port);
    KW_ASSERT(srv);
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = dial(port);
        KW_ASSERT(fds[i] >= 0);
    }
    struct timespec d = {0, 100 * 1000000};
    nanosleep(&d, NULL); /* let the loop accept them */
    /* The 4th from the same address: closed at once (per-address cap). */
    int extra = dial(port);
    KW_ASSERT(extra >= 0);
    KW_ASSERT(closed_within(extra, 2000));
    close(extra);
    /* The first three still work. */
    resp_t r;
    const char *ping = "GET /ping HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fds[0], ping, strlen(ping)), 0);
    KW_ASSERT_EQ(read_resp(fds[0], &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    /* Ask for the metrics on the 3rd: one per-address refusal. */
    const char *m = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fds[2], m, strlen(m)), 0);
    KW_ASSERT_EQ(read_resp(fds[2], &r, false), 0);
    KW_ASSERT(strstr(r.body, "keyward_http_connections_refused_total{reason=\"per_address\"} 1\n"));
    KW_ASSERT(strstr(r.body, "keyward_http_connections 3\n"));
    resp_free(&r);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    kw_http_server_stop(srv);

    /* The global limit: per-address cap above it. */
    memset(&cfg, 0, sizeof(cfg));
    cfg.conn_limit = 2;
    srv = start_cfg(&cfg, &port);
    KW_ASSERT(srv);
    int a = dial(port), b = dial(port);
    KW_ASSERT(a >= 0 && b >= 0);
    nanosleep(&d, NULL);
    extra = dial(port);
    KW_ASSERT(extra >= 0);
    KW_ASSERT(closed_within(extra, 2000));
    close(extra);
    KW_ASSERT_EQ(send_all(a, m, strlen(m)), 0);
    KW_ASSERT_EQ(read_resp(a, &r, false), 0);
    KW_ASSERT(strstr(r.body, "keyward_http_connections_refused_total{reason=\"limit\"} 1\n"));
    resp_free(&r);
    close(a);
    close(b);
    kw_http_server_stop(srv);
}

KW_TEST(http_body_budget)
{
    uint16_t port = 0;
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.body_budget = 1000;
    kw_http_server_t *srv = start_cfg(&cfg, &port);
    KW_ASSERT(srv);
    /* One body holding 900 bytes of the budget (its last byte not sent yet)... */
    int holder = dial(port);
    KW_ASSERT(holder >= 0);
    char head[128];
    snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 900\r\n\r\n");
    static char body[900];
    memset(body, 'h', sizeof(body));
    KW_ASSERT_EQ(send_all(holder, head, strlen(head)), 0);
    KW_ASSERT_EQ(send_all(holder, body, 899), 0);
    struct timespec d = {0, 150 * 1000000};
    nanosleep(&d, NULL);
    /* ...so a 200-byte body does not fit: 503 and close, before its body is read. */
    resp_t r;
    bool closed = false;
    KW_ASSERT_EQ(
        raw_req(port, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\n", &r, &closed),
        0);
    KW_ASSERT_EQ(r.status, 503);
    KW_ASSERT(is_json_detail(&r));
    KW_ASSERT(closed);
    resp_free(&r);
    /* A chunked one too, as soon as its bytes pass the budget. */
    char chunked[512];
    int l = snprintf(chunked, sizeof(chunked),
                     "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nC8\r\n");
    memset(chunked + l, 'c', 200);
    chunked[l + 200] = '\0';
    KW_ASSERT_EQ(raw_req(port, chunked, &r, &closed), 0);
    KW_ASSERT_EQ(r.status, 503);
    resp_free(&r);
    /* The holder finishes; its bytes are released, and a small body fits again. */
    KW_ASSERT_EQ(send_all(holder, body, 1), 0);
    KW_ASSERT_EQ(read_resp(holder, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    close(holder);
    KW_ASSERT_EQ(raw_req(port,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                         "Connection: close\r\n\r\nsmall",
                         &r, NULL),
                 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/metrics", &r), 0);
    KW_ASSERT(strstr(r.body, "keyward_http_body_budget_refused_total 2\n"));
    resp_free(&r);
    kw_http_server_stop(srv);
}

KW_TEST(http_on_headers_refuses_before_the_body)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    atomic_store(&n_echo, 0);
    /* A 1 MiB body announced, none of it sent: the 401 comes anyway, and the connection
     * closes. */
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *h = "POST /guarded HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, h, strlen(h)), 0);
    resp_t r;
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 401);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Unauthorized\"}");
    resp_free(&r);
    KW_ASSERT(closed_within(fd, 3000));
    close(fd);
    /* Without a body, a 401 leaves the connection usable. */
    fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *g = "GET /guarded HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, g, strlen(g)), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 401);
    resp_free(&r);
    const char *ok = "GET /guarded HTTP/1.1\r\nHost: t\r\nX-Ok: yes\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, ok, strlen(ok)), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "0:authed:"); /* what on_headers left for the handler */
    resp_free(&r);
    close(fd);
    /* Accepted: the body is read after the hook, and the handler sees its marker. */
    KW_ASSERT_EQ(raw_req(port,
                         "POST /guarded HTTP/1.1\r\nHost: t\r\nX-Ok: yes\r\nContent-Length: 5\r\n"
                         "Connection: close\r\n\r\nhello",
                         &r, NULL),
                 0);
    KW_ASSERT_STR_EQ(r.body, "5:authed:hello");
    resp_free(&r);
    KW_ASSERT_EQ(atomic_load(&n_echo), 2);
    kw_http_server_stop(srv);
}

typedef struct park_arg {
    uint16_t port;
    const char *raw;
    resp_t r;
    int rc;
} park_arg_t;

static void *park_client(void *p)
{
    park_arg_t *a = p;
    a->rc = do_req(a->port, a->raw, &a->r);
    return NULL;
}

KW_TEST(http_parked_requests_free_the_worker)
{
    uint16_t port = 0;
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.threads = 1; /* one loop: a parked request must not hold it */
    kw_http_server_t *srv = start_cfg(&cfg, &port);
    KW_ASSERT(srv);
    park_srv = srv;
    park_arg_t a = {port,
                    "GET /park HTTP/1.1\r\nHost: t\r\nX-Park-Ms: 20000\r\n"
                    "Connection: close\r\n\r\n",
                    {0},
                    -1};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, park_client, &a), 0);
    struct timespec d = {0, 200 * 1000000};
    nanosleep(&d, NULL);
    /* The only loop is free: another request is answered meanwhile. */
    resp_t r;
    KW_ASSERT_EQ(get(port, "/ping", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    double t0 = now_s();
    kw_http_server_wake(srv);
    pthread_join(th, NULL);
    KW_ASSERT(now_s() - t0 < 2.0);
    KW_ASSERT_EQ(a.rc, 0);
    KW_ASSERT_STR_EQ(a.r.body, "{\"run\": \"woken\"}");
    resp_free(&a.r);
    /* The deadline wakes it too. */
    t0 = now_s();
    KW_ASSERT_EQ(do_req(port,
                        "GET /park HTTP/1.1\r\nHost: t\r\nX-Park-Ms: 300\r\n"
                        "Connection: close\r\n\r\n",
                        &r),
                 0);
    KW_ASSERT(now_s() - t0 >= 0.29);
    KW_ASSERT_STR_EQ(r.body, "{\"run\": \"deadline\"}");
    resp_free(&r);
    /* Stopping answers what is parked (as a deadline), within the drain. */
    park_arg_t b = {port, a.raw, {0}, -1};
    KW_ASSERT_EQ(pthread_create(&th, NULL, park_client, &b), 0);
    nanosleep(&d, NULL);
    t0 = now_s();
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_OK);
    pthread_join(th, NULL);
    KW_ASSERT(now_s() - t0 < 2.0);
    KW_ASSERT_EQ(b.rc, 0);
    KW_ASSERT_STR_EQ(b.r.body, "{\"run\": \"deadline\"}");
    resp_free(&b.r);
}

KW_TEST(http_stop_is_bounded_with_a_stuck_handler)
{
    uint16_t port = 0;
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.drain_timeout_s = 1;
    kw_http_server_t *srv = start_cfg(&cfg, &port);
    KW_ASSERT(srv);
    atomic_store(&release_stuck, 0);
    atomic_store(&stuck_started, 0);
    park_arg_t a = {port, "GET /stuck HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", {0}, -1};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, park_client, &a), 0);
    for (int i = 0; i < 2000 && !atomic_load(&stuck_started); i++) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    KW_ASSERT(atomic_load(&stuck_started));
    double t0 = now_s();
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_ETIMEOUT);
    double took = now_s() - t0;
    KW_ASSERT(took >= 0.9 && took < 2.5);
    /* The listen socket is closed already. */
    int fd = dial(port);
    if (fd >= 0)
        close(fd);
    KW_ASSERT(fd < 0);
    /* Once the handler returns, a second stop finishes the teardown. */
    atomic_store(&release_stuck, 1);
    pthread_join(th, NULL); /* its connection was closed: no answer */
    if (a.rc == 0)
        resp_free(&a.r);
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_OK);
}

/* Reads from fd until `end` was received (or EOF / timeout); the bytes into *buf. */
static size_t read_until(int fd, char *buf, size_t cap, const char *end)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, end))
            break;
    }
    buf[len] = '\0';
    return len;
}

KW_TEST(http_stream_is_chunked_and_keeps_the_connection)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    atomic_store(&stream_done, 0);
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *q = "GET /stream HTTP/1.1\r\nHost: t\r\nX-Lines: 3\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, q, strlen(q)), 0);
    static char buf[65536];
    size_t len = read_until(fd, buf, sizeof(buf), "\r\n0\r\n\r\n");
    KW_ASSERT(len > 3 * 1024);
    KW_ASSERT(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    KW_ASSERT(strstr(buf, "Transfer-Encoding: chunked\r\n") != NULL);
    KW_ASSERT(strstr(buf, "Content-Length") == NULL);
    KW_ASSERT(strstr(buf, "\r\n400\r\n") != NULL); /* one 1 KiB chunk per write */
    KW_ASSERT(strstr(buf, "\r\n0\r\n\r\n") != NULL);
    /* the same connection answers the next request */
    const char *ping = "GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, ping, strlen(ping)), 0);
    resp_t r;
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    close(fd);
    KW_ASSERT_EQ(atomic_load(&stream_rc), KW_OK);
    KW_ASSERT_EQ(atomic_load(&stream_lines), 3);
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_OK);
}

/* Reads until the connection closes or `end` ends what was read; the bytes in *out
 * (malloc'd). */
static size_t read_all(int fd, char **out, const char *end)
{
    size_t cap = 1u << 20, len = 0, el = end ? strlen(end) : 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (end && len >= el && memcmp(buf + len - el, end, el) == 0)
            break;
    }
    *out = buf;
    return buf ? len : 0;
}

/* The body after the head: checks every byte against give_byte, and for a chunked body
 * counts the chunks (one per give or write). */
static bool give_body_ok(const char *resp, size_t len, bool chunked, size_t *total, size_t *chunks)
{
    const char *body = strstr(resp, "\r\n\r\n");
    if (!body)
        return false;
    body += 4;
    const char *end = resp + len;
    *total = 0;
    *chunks = 0;
    if (!chunked) {
        for (const char *p = body; p < end; p++)
            if (*p != give_byte((*total)++))
                return false;
        return true;
    }
    for (const char *p = body;;) {
        char *e = NULL;
        unsigned long n = strtoul(p, &e, 16);
        if (e == p || e + 2 > end || memcmp(e, "\r\n", 2) != 0)
            return false;
        p = e + 2;
        if (n == 0)
            return p + 2 == end && memcmp(p, "\r\n", 2) == 0;
        if (p + n + 2 > end || memcmp(p + n, "\r\n", 2) != 0)
            return false;
        for (unsigned long i = 0; i < n; i++)
            if (p[i] != give_byte((*total)++))
                return false;
        p += n + 2;
        (*chunks)++;
    }
}

KW_TEST(http_stream_give_hands_buffers_over_framed_as_chunks)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    size_t want = 0;
    for (int i = 0; i < GIVE_PIECES; i++)
        want += i % 7 == 3 ? 300 : GIVE_SIZES[i % KW_ARRAY_LEN(GIVE_SIZES)];
    /* HTTP/1.1: one chunk per give or write, the bytes in order, no scratch byte */
    atomic_store(&give_done, 0);
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *q = "GET /give HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, q, strlen(q)), 0);
    char *resp = NULL;
    size_t len = read_all(fd, &resp, "\r\n0\r\n\r\n");
    KW_ASSERT(resp);
    KW_ASSERT(strncmp(resp, "HTTP/1.1 200", 12) == 0);
    KW_ASSERT(strstr(resp, "Transfer-Encoding: chunked\r\n") != NULL);
    size_t total = 0, chunks = 0;
    KW_ASSERT(give_body_ok(resp, len, true, &total, &chunks));
    KW_ASSERT_EQ(total, want);
    KW_ASSERT_EQ(chunks, GIVE_PIECES);
    free(resp);
    close(fd);
    for (int i = 0; i < 500 && !atomic_load(&give_done); i++)
        usleep(10000);
    KW_ASSERT_EQ(atomic_load(&give_rc), KW_OK);
    KW_ASSERT_EQ(atomic_load(&give_left_len), 0); /* b always comes back empty */
    /* HTTP/1.0: the same bytes unframed, then the connection closes */
    atomic_store(&give_done, 0);
    fd = dial(port);
    KW_ASSERT(fd >= 0);
    q = "GET /give HTTP/1.0\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, q, strlen(q)), 0);
    len = read_all(fd, &resp, NULL);
    KW_ASSERT(resp);
    KW_ASSERT(strstr(resp, "Transfer-Encoding") == NULL);
    KW_ASSERT(give_body_ok(resp, len, false, &total, &chunks));
    KW_ASSERT_EQ(total, want);
    free(resp);
    close(fd);
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_OK);
}

KW_TEST(http_stream_client_leaving_stops_the_producer)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    atomic_store(&stream_done, 0);
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    /* 100 MiB that nobody reads: backpressure holds the producer, then the client leaves */
    const char *q = "GET /stream HTTP/1.1\r\nHost: t\r\nX-Lines: 102400\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, q, strlen(q)), 0);
    static char buf[8192];
    read_until(fd, buf, sizeof(buf), "xxxx");
    struct timespec d = {0, 300 * 1000000};
    nanosleep(&d, NULL);
    KW_ASSERT_EQ(atomic_load(&stream_done), 0); /* waiting for room, not done */
    close(fd);
    for (int i = 0; i < 5000 && !atomic_load(&stream_done); i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    KW_ASSERT_EQ(atomic_load(&stream_done), 1);
    KW_ASSERT_EQ(atomic_load(&stream_rc), KW_EIO);
    KW_ASSERT(atomic_load(&stream_cancelled));
    KW_ASSERT(atomic_load(&stream_lines) < 102400 / 2);
    resp_t r;
    KW_ASSERT_EQ(get(port, "/ping", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_OK);
}

/* ---- streamed request bodies ---- */

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* Sends the body from a thread of its own (the server's backpressure may hold it). */
typedef struct sender {
    int fd;
    const char *p;
    size_t n;
    int rc;
} sender_t;

static void *send_main(void *arg)
{
    sender_t *s = arg;
    s->rc = send_all(s->fd, s->p, s->n);
    return NULL;
}

static void wait_upload_done(void)
{
    for (int i = 0; i < 5000 && !atomic_load(&upload_done); i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

KW_TEST(http_streamed_body_is_bounded_and_keeps_the_connection)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    /* 8 MiB (8 times KW_MAX_BODY_BYTES) to a slow handler: every byte arrives, in pieces
     * no larger than the queue's bound (the loop stopped reading meanwhile). */
    size_t n = 8u * 1024u * 1024u;
    char *body = malloc(n);
    KW_ASSERT(body);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + (i * 7919u) % 26u);
    atomic_store(&upload_max_piece, 0);
    atomic_store(&upload_done, 0);
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    char head[160];
    snprintf(head, sizeof(head),
             "POST /upload HTTP/1.1\r\nHost: t\r\nX-Slow-Ms: 2\r\nContent-Length: %zu\r\n\r\n", n);
    KW_ASSERT_EQ(send_all(fd, head, strlen(head)), 0);
    sender_t sd = {fd, body, n, -1};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, send_main, &sd), 0);
    resp_t r;
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    pthread_join(th, NULL);
    KW_ASSERT_EQ(sd.rc, 0);
    KW_ASSERT_EQ(r.status, 200);
    char want[160];
    snprintf(want, sizeof(want), "{\"bytes\": %zu, \"hash\": \"%016llx\", \"rc\": 0}", n,
             (unsigned long long)fnv(body, n));
    KW_ASSERT_STR_EQ(r.body, want);
    resp_free(&r);
    KW_ASSERT(atomic_load(&upload_max_piece) <= KW_HTTP_BODY_HIGH + 80u * 1024u);
    KW_ASSERT(atomic_load(&upload_max_piece) > 0);
    /* The same connection goes on: a chunked upload, pieces of odd sizes. */
    kw_buf_t b;
    kw_buf_init(&b);
    kw_buf_puts(&b, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t off = 0, sizes[] = {1, 4095, 70000, 300000, 17, 1000000};
    for (size_t i = 0; i < KW_ARRAY_LEN(sizes); i++) {
        kw_buf_printf(&b, "%zx\r\n", sizes[i]);
        kw_buf_append(&b, body + off, sizes[i]);
        kw_buf_puts(&b, "\r\n");
        off += sizes[i];
    }
    kw_buf_puts(&b, "0\r\n\r\nGET /ping HTTP/1.1\r\nHost: t\r\n\r\n"); /* pipelined */
    KW_ASSERT(!b.failed);
    atomic_store(&upload_done, 0);
    sender_t s2 = {fd, b.ptr, b.len, -1};
    KW_ASSERT_EQ(pthread_create(&th, NULL, send_main, &s2), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    snprintf(want, sizeof(want), "{\"bytes\": %zu, \"hash\": \"%016llx\", \"rc\": 0}", off,
             (unsigned long long)fnv(body, off));
    KW_ASSERT_STR_EQ(r.body, want);
    resp_free(&r);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "{\"ok\": true}");
    resp_free(&r);
    pthread_join(th, NULL);
    KW_ASSERT_EQ(s2.rc, 0);
    kw_buf_free(&b);
    close(fd);
    /* Past the streamed limit: 413 at once, nothing read. */
    bool closed = false;
    KW_ASSERT_EQ(raw_req(port,
                         "POST /upload HTTP/1.1\r\nHost: t\r\n"
                         "Content-Length: 17179869185\r\n\r\n",
                         &r, &closed),
                 0);
    KW_ASSERT_EQ(r.status, 413);
    KW_ASSERT(closed);
    resp_free(&r);
    free(body);
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_OK);
}

KW_TEST(http_streamed_body_deadlines_and_early_answers)
{
    uint16_t port = 0;
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.body_timeout_s = 1;
    kw_http_server_t *srv = start_cfg(&cfg, &port);
    KW_ASSERT(srv);
    static char body[3u * 1024u * 1024u];
    memset(body, 'z', sizeof(body));
    /* A trickle (1 KiB every 150 ms, far below 64 KiB a second): 408 once a second passes
     * without progress, the handler's read failed, and the connection closes. */
    atomic_store(&upload_done, 0);
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *h = "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, h, strlen(h)), 0);
    double t0 = now_s();
    for (int i = 0; i < 20 && !atomic_load(&upload_done); i++) {
        if (send_all(fd, body, 1024) != 0)
            break;
        struct timespec d = {0, 150 * 1000000};
        nanosleep(&d, NULL);
    }
    resp_t r;
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 408);
    KW_ASSERT(is_json_detail(&r));
    KW_ASSERT(now_s() - t0 < 2.5);
    KW_ASSERT(closed_within(fd, 3000));
    resp_free(&r);
    close(fd);
    wait_upload_done();
    KW_ASSERT_EQ(atomic_load(&upload_rc), KW_EIO);
    /* A handler slower than the deadline is not the client's fault: 3 MiB to a handler
     * that sleeps 300 ms per piece takes several seconds, and succeeds. */
    atomic_store(&upload_done, 0);
    fd = dial(port);
    KW_ASSERT(fd >= 0);
    char head[160];
    snprintf(head, sizeof(head),
             "POST /upload HTTP/1.1\r\nHost: t\r\nX-Slow-Ms: 300\r\nContent-Length: %zu\r\n\r\n",
             sizeof(body));
    KW_ASSERT_EQ(send_all(fd, head, strlen(head)), 0);
    sender_t sd = {fd, body, sizeof(body), -1};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, send_main, &sd), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    pthread_join(th, NULL);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT(strstr(r.body, "\"bytes\": 3145728,") != NULL);
    resp_free(&r);
    close(fd);
    /* A handler that answers before the end of the body: its answer, then close. */
    atomic_store(&upload_done, 0);
    fd = dial(port);
    KW_ASSERT(fd >= 0);
    h = "POST /upload HTTP/1.1\r\nHost: t\r\nX-Stop-After: 1\r\nContent-Length: 3000000\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, h, strlen(h)), 0);
    KW_ASSERT_EQ(send_all(fd, body, 100000), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    char v[32];
    KW_ASSERT(hdr(&r, "Connection", v, sizeof(v)) && strcmp(v, "close") == 0);
    KW_ASSERT(closed_within(fd, 3000));
    resp_free(&r);
    close(fd);
    /* A client that leaves mid-body: the handler's read fails. */
    atomic_store(&upload_done, 0);
    fd = dial(port);
    KW_ASSERT(fd >= 0);
    h = "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789";
    KW_ASSERT_EQ(send_all(fd, h, strlen(h)), 0);
    struct timespec d = {0, 100 * 1000000};
    nanosleep(&d, NULL);
    close(fd);
    wait_upload_done();
    KW_ASSERT_EQ(atomic_load(&upload_done), 1);
    KW_ASSERT_EQ(atomic_load(&upload_rc), KW_EIO);
    /* A malformed chunk: 400 from the server, not the handler's answer. */
    bool closed = false;
    KW_ASSERT_EQ(raw_req(port,
                         "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "zz\r\nabc\r\n",
                         &r, &closed),
                 0);
    KW_ASSERT_EQ(r.status, 400);
    KW_ASSERT(is_json_detail(&r));
    KW_ASSERT(closed);
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/ping", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    KW_ASSERT_EQ(kw_http_server_stop(srv), KW_OK);
}
