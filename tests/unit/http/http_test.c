/*
 * tests/unit/http/http_test.c - the HTTP server over real loopback sockets.
 *
 * Each test starts a server on 127.0.0.1 port 0 with the routes below and talks raw
 * HTTP/1.1 through plain POSIX sockets (no client library), so what is asserted is
 * exactly what goes over the wire.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "http/http.h"
#include "kw_test.h"
#include "wire.h"

/* ---- test routes ---- */

static _Atomic int slow_started;

static void h_ping(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)req;
    (void)ud;
    kw_buf_puts(&resp->body, "{\"ok\": true}");
}

/* Echoes the decoded params and the matched template. */
static void h_echo_params(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    kw_buf_puts(&resp->body, "{\"route\": ");
    kw_json_escape(&resp->body, req->route);
    for (size_t i = 0; i < req->n_params; i++) {
        kw_buf_printf(&resp->body, ", \"p%zu\": ", i);
        kw_json_escape(&resp->body, req->params[i]);
    }
    kw_buf_puts(&resp->body, "}");
    kw_http_resp_header(resp, "X-Params", kw_arena_sprintf(req->arena, "%zu", req->n_params));
}

static void h_echo_body(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    resp->content_type = "text/plain";
    /* The contract: the body is NUL-terminated. */
    if (req->body.ptr[req->body.len] != '\0') {
        kw_http_resp_error(resp, 500, "body not terminated");
        return;
    }
    kw_buf_printf(&resp->body, "%zu:", req->body.len);
    kw_buf_append(&resp->body, req->body.ptr, req->body.len > 64 ? 64 : req->body.len);
}

static void put_query(kw_http_req_t *req, kw_buf_t *b, const char *name)
{
    bool found = false, bad = false;
    kw_str_t v = kw_http_query(req, name, &found, &bad);
    kw_buf_printf(b, "%s=%s/%s/", name, found ? "found" : "absent", bad ? "bad" : "ok");
    kw_json_escape(b, v);
    kw_buf_puts(b, ";");
}

static void h_query(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    resp->content_type = "text/plain";
    put_query(req, &resp->body, "a");
    put_query(req, &resp->body, "b");
    put_query(req, &resp->body, "c");
    put_query(req, &resp->body, "k y");
    put_query(req, &resp->body, "n");
}

static void h_slow(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)req;
    (void)ud;
    atomic_store(&slow_started, 1);
    struct timespec d = {0, 400 * 1000000};
    nanosleep(&d, NULL);
    kw_buf_puts(&resp->body, "{\"slow\": true}");
}

static void h_metrics(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    resp->content_type = "text/plain; version=0.0.4";
    kw_http_server_metrics(kw_http_req_server(req), &resp->body);
}

static void h_subject(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    req->log_subject = "user:alice";
    kw_http_resp_error(resp, 403, "Forbidden");
}

static void h_header(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    const char *v = kw_http_header(req, "x-test");
    kw_buf_puts(&resp->body, "{\"x\": ");
    kw_json_escape(&resp->body, kw_str_c(v ? v : "(absent)"));
    kw_buf_puts(&resp->body, "}");
}

/* A handler bug: a header value with CR/LF (response splitting) must not go out. */
static void h_bad_header(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)req;
    (void)ud;
    kw_http_resp_header(resp, "X-Evil", "a\r\nSet-Cookie: pwned=1");
    kw_buf_puts(&resp->body, "{}");
}

static void extra_metrics(kw_buf_t *out, void *ud)
{
    (void)ud;
    kw_buf_puts(out, "# TYPE keyward_test_extra gauge\nkeyward_test_extra 7\n");
}

static const kw_http_route_t test_routes[] = {
    {"GET", "/ping", h_ping, 0},
    {"GET", "/items/{id}", h_echo_params, 0},
    {"DELETE", "/items/{id}", h_echo_params, 0},
    {"GET", "/agent_api_keys/{id}", h_echo_params, 0},
    {"GET", "/agent_api_keys/name/{name}", h_echo_params, 0},
    {"GET", "/a/{x}/b/{y}", h_echo_params, 0},
    {"GET", "/fwd/{name}/{rest...}", h_echo_params, 0},
    {"POST", "/echo", h_echo_body, 0},
    {"GET", "/query", h_query, 0},
    {"GET", "/slow", h_slow, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/subject/{name}", h_subject, 0},
    {"GET", "/header", h_header, 0},
    {"GET", "/bad_header", h_bad_header, 0},
    {"POST", "/v1/permissions/check", h_ping, 0},
};

/* The application's error shaping (what src/api does for /v1): every error the server
 * makes itself must come through here. */
static void test_error_fn(const kw_http_req_t *req, int status, const char *msg,
                          kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    kw_http_resp_error(resp, status, msg);
    if (req->path.len >= 4 && memcmp(req->path.ptr, "/v1/", 4) == 0) {
        resp->body.len--; /* drop the closing brace */
        kw_buf_printf(&resp->body, ", \"code\": %d, \"message\": ", status == 404 ? 5 : 12);
        kw_json_escape(&resp->body, kw_str_c(msg));
        kw_buf_puts(&resp->body, "}");
    }
}

static kw_http_server_t *start(uint16_t *port)
{
    kw_log_set_level(KW_LOG_WARN); /* keep access-log lines out of the test output */
    kw_http_config_t cfg = {.host = "127.0.0.1",
                            .threads = 4,
                            .conn_timeout_s = 5,
                            .routes = test_routes,
                            .n_routes = KW_ARRAY_LEN(test_routes),
                            .metrics_fn = extra_metrics,
                            .error_fn = test_error_fn};
    kw_http_server_t *srv = NULL;
    kw_diag_t diag;
    int rc = kw_http_server_start(&cfg, &srv, port, &diag);
    if (rc != KW_OK) {
        fprintf(stderr, "start: %s\n", diag.msg);
        return NULL;
    }
    return srv;
}

static bool is_hex32(const char *s)
{
    if (strlen(s) != 32)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* ---- pure helpers ---- */

static bool esc_is(const char *in, size_t len, const char *want)
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_json_escape(&b, (kw_str_t){in, len});
    bool ok = !b.failed && strcmp(b.ptr, want) == 0;
    if (!ok)
        fprintf(stderr, "  escape got %s want %s\n", b.ptr, want);
    kw_buf_free(&b);
    return ok;
}

KW_TEST(http_json_escape)
{
    KW_ASSERT(esc_is("", 0, "\"\""));
    KW_ASSERT(esc_is("plain", 5, "\"plain\""));
    KW_ASSERT(esc_is("a\"b\\c", 5, "\"a\\\"b\\\\c\""));
    KW_ASSERT(esc_is("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\""));
    KW_ASSERT(esc_is("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\""));
    KW_ASSERT(esc_is("a\0b", 3, "\"a\\u0000b\""));
    /* Valid multi-byte UTF-8 passes through unchanged. */
    KW_ASSERT(esc_is("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
                     "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
    /* Invalid: lone continuation, truncated sequence, overlong, surrogate, > U+10FFFF. */
    KW_ASSERT(esc_is("\x80", 1, "\"\\ufffd\""));
    KW_ASSERT(esc_is("x\xe2\x82", 3, "\"x\\ufffd\\ufffd\""));
    KW_ASSERT(esc_is("\xc0\x80", 2, "\"\\ufffd\\ufffd\""));
    KW_ASSERT(esc_is("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""));
    KW_ASSERT(esc_is("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""));
    KW_ASSERT(esc_is("\xff", 1, "\"\\ufffd\""));
}

KW_TEST(http_pct_decode)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_str_t out;
    KW_ASSERT(kw_http_pct_decode(a, KW_STR("team%2Fci"), false, &out));
    KW_ASSERT_STR_EQ(out.ptr, "team/ci");
    KW_ASSERT(kw_http_pct_decode(a, KW_STR("a+b%2b%2B"), true, &out));
    KW_ASSERT_STR_EQ(out.ptr, "a b++");
    KW_ASSERT(kw_http_pct_decode(a, KW_STR("a+b"), false, &out));
    KW_ASSERT_STR_EQ(out.ptr, "a+b");
    KW_ASSERT(kw_http_pct_decode(a, KW_STR("x%00y"), false, &out));
    KW_ASSERT_EQ(out.len, 3);
    KW_ASSERT(!kw_http_pct_decode(a, KW_STR("%"), false, &out));
    KW_ASSERT(!kw_http_pct_decode(a, KW_STR("ab%2"), false, &out));
    KW_ASSERT(!kw_http_pct_decode(a, KW_STR("%zz"), false, &out));
    KW_ASSERT(!kw_http_pct_decode(a, KW_STR("%g0"), false, &out));
    kw_arena_free(a);
}

KW_TEST(http_resp_error_shape)
{
    kw_http_resp_t r;
    memset(&r, 0, sizeof(r));
    kw_buf_init(&r.body);
    kw_buf_puts(&r.body, "partial garbage");
    kw_http_resp_error(&r, 404, "Agent \"x\" not found.");
    KW_ASSERT_EQ(r.status, 404);
    KW_ASSERT_STR_EQ(r.body.ptr, "{\"detail\": \"Agent \\\"x\\\" not found.\"}");
    kw_buf_free(&r.body);
}

KW_TEST(http_bad_route_tables)
{
    static const kw_http_route_t bad1[] = {{"GET", "relative", h_ping, 0}};
    static const kw_http_route_t bad2[] = {{"GET", "/a/{x", h_ping, 0}};
    static const kw_http_route_t bad3[] = {{"GET", "/a/{x}", h_ping, 0},
                                           {"GET", "/a/{y}", h_ping, 0}};
    static const kw_http_route_t bad4[] = {{"GET", "/a//b", h_ping, 0}};
    static const kw_http_route_t bad5[] = {{"GET", "/a/{x...}/b", h_ping, 0}};
    const kw_http_route_t *tables[] = {bad1, bad2, bad3, bad4, bad5};
    size_t lens[] = {1, 1, 2, 1, 1};
    for (size_t i = 0; i < KW_ARRAY_LEN(tables); i++) {
        kw_http_config_t cfg = {
            .host = "127.0.0.1", .threads = 1, .routes = tables[i], .n_routes = lens[i]};
        kw_http_server_t *srv = NULL;
        kw_diag_t diag;
        uint16_t port = 0;
        KW_ASSERT_EQ(kw_http_server_start(&cfg, &srv, &port, &diag), KW_EINVAL);
        KW_ASSERT(srv == NULL);
        KW_ASSERT(strstr(diag.msg, tables[i][lens[i] - 1].pattern) != NULL);
    }
}

/* ---- over the wire ---- */

KW_TEST(http_basic_and_request_id)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    KW_ASSERT(port != 0);
    resp_t r;
    char v[128];
    KW_ASSERT_EQ(get(port, "/ping", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "{\"ok\": true}");
    KW_ASSERT_STR_EQ(hdr(&r, "Content-Type", v, sizeof(v)), "application/json");
    KW_ASSERT(hdr(&r, "X-Request-Id", v, sizeof(v)) && is_hex32(v));
    char first[128];
    strcpy(first, v);
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/ping", &r), 0);
    KW_ASSERT(hdr(&r, "X-Request-Id", v, sizeof(v)) && is_hex32(v));
    KW_ASSERT(strcmp(first, v) != 0);
    resp_free(&r);

    /* A well-formed client id is echoed; a malformed or overlong one is replaced. */
    KW_ASSERT_EQ(do_req(port,
                        "GET /ping HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-01.A_b\r\n"
                        "Connection: close\r\n\r\n",
                        &r),
                 0);
    KW_ASSERT_STR_EQ(hdr(&r, "X-Request-Id", v, sizeof(v)), "trace-01.A_b");
    resp_free(&r);
    KW_ASSERT_EQ(do_req(port,
                        "GET /ping HTTP/1.1\r\nHost: t\r\nX-Request-Id: a\"b<c>\r\n"
                        "Connection: close\r\n\r\n",
                        &r),
                 0);
    KW_ASSERT(hdr(&r, "X-Request-Id", v, sizeof(v)) && is_hex32(v));
    resp_free(&r);
    char raw[512];
    char id65[66];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    snprintf(raw, sizeof(raw),
             "GET /ping HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n"
             "Connection: close\r\n\r\n",
             id65);
    KW_ASSERT_EQ(do_req(port, raw, &r), 0);
    KW_ASSERT(hdr(&r, "X-Request-Id", v, sizeof(v)) && is_hex32(v));
    resp_free(&r);
    id65[64] = '\0'; /* exactly 64 is accepted */
    snprintf(raw, sizeof(raw),
             "GET /ping HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n"
             "Connection: close\r\n\r\n",
             id65);
    KW_ASSERT_EQ(do_req(port, raw, &r), 0);
    KW_ASSERT_STR_EQ(hdr(&r, "X-Request-Id", v, sizeof(v)), id65);
    resp_free(&r);

    /* Request headers reach the handler, case-insensitively. */
    KW_ASSERT_EQ(do_req(port,
                        "GET /header HTTP/1.1\r\nHost: t\r\nX-TEST: hello\r\n"
                        "Connection: close\r\n\r\n",
                        &r),
                 0);
    KW_ASSERT_STR_EQ(r.body, "{\"x\": \"hello\"}");
    resp_free(&r);

    /* HEAD is served by the GET route, without a body. */
    KW_ASSERT_EQ(do_req(port, "HEAD /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r),
                 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    kw_http_server_stop(srv);
}

KW_TEST(http_params_decoding)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    resp_t r;
    char v[64];
    KW_ASSERT_EQ(get(port, "/agent_api_keys/name/team%2Fci", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "{\"route\": \"/agent_api_keys/name/{name}\", \"p0\": \"team/ci\"}");
    KW_ASSERT_STR_EQ(hdr(&r, "X-Params", v, sizeof(v)), "1");
    resp_free(&r);
    /* The literal segment beats the param for the same position. */
    KW_ASSERT_EQ(get(port, "/agent_api_keys/abc", &r), 0);
    KW_ASSERT_STR_EQ(r.body, "{\"route\": \"/agent_api_keys/{id}\", \"p0\": \"abc\"}");
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/a/x%20y/b/%C3%A9+", &r), 0);
    KW_ASSERT_STR_EQ(r.body,
                     "{\"route\": \"/a/{x}/b/{y}\", \"p0\": \"x y\", \"p1\": \"\xc3\xa9+\"}");
    resp_free(&r);
    /* Control characters decoded from a param come back JSON-escaped. */
    KW_ASSERT_EQ(get(port, "/items/a%0Ab%22", &r), 0);
    KW_ASSERT_STR_EQ(r.body, "{\"route\": \"/items/{id}\", \"p0\": \"a\\nb\\\"\"}");
    resp_free(&r);
    /* Bad escapes, decoded NUL, dot segments, empty segments, relative paths: 404. */
    const char *bad[] = {
        "/items/ab%zz",          "/items/%00", "/items/a%00b", "/items/%2e%2e", "/items/%2E",
        "/items/../ping",        "/items/./x", "/items/",      "/items//x",     "/ping/",
        "/agent_api_keys/name/%"};
    for (size_t i = 0; i < KW_ARRAY_LEN(bad); i++) {
        KW_ASSERT_EQ(get(port, bad[i], &r), 0);
        if (r.status != 404)
            fprintf(stderr, "  path %s -> %d\n", bad[i], r.status);
        KW_ASSERT_EQ(r.status, 404);
        KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Not Found\"}");
        resp_free(&r);
    }
    KW_ASSERT_EQ(do_req(port, "GET * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r), 0);
    KW_ASSERT(r.status == 404 || r.status == 400);
    resp_free(&r);
    /* A {rest...} tail takes the rest of the path RAW (still encoded), or nothing. */
    KW_ASSERT_EQ(get(port, "/fwd/a%20b/x/y%2Fz", &r), 0);
    KW_ASSERT_STR_EQ(r.body, "{\"route\": \"/fwd/{name}/{rest...}\", \"p0\": \"a b\", "
                             "\"p1\": \"x/y%2Fz\"}");
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/fwd/a?q=1", &r), 0);
    KW_ASSERT_STR_EQ(r.body, "{\"route\": \"/fwd/{name}/{rest...}\", \"p0\": \"a\", \"p1\": \"\"}");
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/fwd/a/../b", &r), 0); /* dot segments still refused */
    KW_ASSERT_EQ(r.status, 404);
    resp_free(&r);
    kw_http_server_stop(srv);
}

KW_TEST(http_404_405)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    resp_t r;
    char v[128];
    KW_ASSERT_EQ(get(port, "/nope", &r), 0);
    KW_ASSERT_EQ(r.status, 404);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Not Found\"}");
    KW_ASSERT_STR_EQ(hdr(&r, "Content-Type", v, sizeof(v)), "application/json");
    KW_ASSERT(hdr(&r, "X-Request-Id", v, sizeof(v)));
    resp_free(&r);

    KW_ASSERT_EQ(do_req(port,
                        "PUT /items/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                        "Connection: close\r\n\r\n{}",
                        &r),
                 0);
    KW_ASSERT_EQ(r.status, 405);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Method Not Allowed\"}");
    KW_ASSERT_STR_EQ(hdr(&r, "Allow", v, sizeof(v)), "GET, DELETE");
    resp_free(&r);

    KW_ASSERT_EQ(
        do_req(port, "DELETE /items/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);

    /* The application shapes the server's errors (here: gateway fields under /v1). */
    KW_ASSERT_EQ(get(port, "/v1/permissions/check", &r), 0);
    KW_ASSERT_EQ(r.status, 405);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Method Not Allowed\", \"code\": 12, "
                             "\"message\": \"Method Not Allowed\"}");
    KW_ASSERT_STR_EQ(hdr(&r, "Allow", v, sizeof(v)), "POST");
    resp_free(&r);
    KW_ASSERT_EQ(do_req(port,
                        "POST /v1/nope HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n",
                        &r),
                 0);
    KW_ASSERT_EQ(r.status, 404);
    KW_ASSERT_STR_EQ(r.body,
                     "{\"detail\": \"Not Found\", \"code\": 5, \"message\": \"Not Found\"}");
    resp_free(&r);
    kw_http_server_stop(srv);
}

static int post_body(uint16_t port, size_t len, resp_t *r)
{
    int fd = dial(port);
    if (fd < 0)
        return -1;
    char head[256];
    snprintf(head, sizeof(head),
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n",
             len);
    char *body = malloc(len ? len : 1);
    if (!body) {
        close(fd);
        return -1;
    }
    memset(body, 'x', len);
    int rc = send_all(fd, head, strlen(head));
    if (rc == 0)
        (void)send_all(fd, body, len); /* the server may answer 413 and close early */
    free(body);
    rc = read_resp(fd, r, false);
    close(fd);
    return rc;
}

KW_TEST(http_body_limits)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    resp_t r;
    KW_ASSERT_EQ(post_body(port, 5, &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "5:xxxxx");
    resp_free(&r);
    KW_ASSERT_EQ(post_body(port, 0, &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "0:");
    resp_free(&r);
    KW_ASSERT_EQ(post_body(port, KW_MAX_BODY_BYTES, &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT(strncmp(r.body, "1048576:", 8) == 0);
    resp_free(&r);
    KW_ASSERT_EQ(post_body(port, KW_MAX_BODY_BYTES + 1, &r), 0);
    KW_ASSERT_EQ(r.status, 413);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Request body too large\"}");
    resp_free(&r);

    /* A Content-Length that claims more than the cap gets 413 before any body is sent. */
    KW_ASSERT_EQ(do_req(port,
                        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n"
                        "\r\nshort",
                        &r),
                 0);
    KW_ASSERT_EQ(r.status, 413);
    resp_free(&r);
    /* A Content-Length lie the other way (says 3, sends more): only 3 bytes are the body,
     * the rest is the next request on the connection and is not this handler's business. */
    KW_ASSERT_EQ(do_req(port,
                        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                        "Connection: close\r\n\r\nabcdefgh",
                        &r),
                 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "3:abc");
    resp_free(&r);

    /* Chunked: no length up front; the cap applies to the bytes actually received. */
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    const char *h = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                    "Connection: close\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, h, strlen(h)), 0);
    static char chunk[65536 + 16];
    int hl = snprintf(chunk, sizeof(chunk), "10000\r\n");
    memset(chunk + hl, 'y', 65536);
    memcpy(chunk + hl + 65536, "\r\n", 2);
    bool sent = true;
    for (int i = 0; i < 17 && sent; i++) /* 17 x 64 KiB > 1 MiB */
        sent = send_all(fd, chunk, (size_t)hl + 65536 + 2) == 0;
    if (sent)
        (void)send_all(fd, "0\r\n\r\n", 5);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    close(fd);
    KW_ASSERT_EQ(r.status, 413);
    resp_free(&r);
    kw_http_server_stop(srv);
}

KW_TEST(http_big_header)
{
    /* Request headers past KW_MAX_HEADER_BYTES: 431 in JSON, no handler, no crash. */
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    size_t n = 100 * 1024;
    char *raw = malloc(n + 128);
    KW_ASSERT(raw);
    int l = snprintf(raw, n + 128, "GET /ping HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(raw + l, 'b', n);
    strcpy(raw + l + n, "\r\nConnection: close\r\n\r\n");
    resp_t r;
    int rc = do_req(port, raw, &r);
    free(raw);
    KW_ASSERT_EQ(rc, 0);
    KW_ASSERT_EQ(r.status, 431);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Request Header Fields Too Large\"}");
    resp_free(&r);
    kw_http_server_stop(srv);
}

KW_TEST(http_query)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    resp_t r;
    KW_ASSERT_EQ(get(port, "/query?a=x+y%2Bz&b=%zz&a=second&k+y=1&n=a%00b", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    KW_ASSERT_STR_EQ(r.body, "a=found/ok/\"x y+z\";b=absent/bad/\"\";c=absent/ok/\"\";"
                             "k y=found/ok/\"1\";n=absent/bad/\"\";");
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/query?a&b=", &r), 0);
    KW_ASSERT_STR_EQ(r.body, "a=found/ok/\"\";b=found/ok/\"\";c=absent/ok/\"\";"
                             "k y=absent/ok/\"\";n=absent/ok/\"\";");
    resp_free(&r);
    /* The query string never affects routing. */
    KW_ASSERT_EQ(get(port, "/ping?x=/nope", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    kw_http_server_stop(srv);
}

KW_TEST(http_keep_alive)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    resp_t r;
    for (int i = 0; i < 3; i++) {
        char raw[128];
        snprintf(raw, sizeof(raw), "GET /items/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        KW_ASSERT_EQ(send_all(fd, raw, strlen(raw)), 0);
        KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
        KW_ASSERT_EQ(r.status, 200);
        char want[64];
        snprintf(want, sizeof(want), "{\"route\": \"/items/{id}\", \"p0\": \"%d\"}", i);
        KW_ASSERT_STR_EQ(r.body, want);
        resp_free(&r);
    }
    /* Pipelined: two requests in one write, two responses in order. */
    const char *two = "GET /items/p1 HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /items/p2 HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, two, strlen(two)), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT(strstr(r.body, "p1"));
    resp_free(&r);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT(strstr(r.body, "p2"));
    resp_free(&r);
    close(fd);
    kw_http_server_stop(srv);
}

typedef struct client_arg {
    uint16_t port;
    int id;
    int ok;
} client_arg_t;

static void *client_thread(void *p)
{
    client_arg_t *a = p;
    int fd = dial(a->port);
    for (int i = 0; i < 50 && fd >= 0; i++) {
        char raw[128], want[96];
        snprintf(raw, sizeof(raw), "GET /items/t%d-%d HTTP/1.1\r\nHost: t\r\n\r\n", a->id, i);
        snprintf(want, sizeof(want), "{\"route\": \"/items/{id}\", \"p0\": \"t%d-%d\"}", a->id, i);
        resp_t r;
        if (send_all(fd, raw, strlen(raw)) != 0 || read_resp(fd, &r, false) != 0)
            break;
        if (r.status == 200 && strcmp(r.body, want) == 0)
            a->ok++;
        resp_free(&r);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

KW_TEST(http_concurrent_clients_and_metrics)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    enum { N = 8 };
    pthread_t th[N];
    client_arg_t args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (client_arg_t){port, i, 0};
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, client_thread, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        KW_ASSERT_EQ(args[i].ok, 50);
    }
    resp_t r;
    KW_ASSERT_EQ(get(port, "/nope/at/all", &r), 0);
    resp_free(&r);
    KW_ASSERT_EQ(get(port, "/metrics", &r), 0);
    KW_ASSERT_EQ(r.status, 200);
    /* The 400 /items requests above are all counted (metrics are recorded once the
     * response is sent, so they are complete by the time the clients got answers). */
    KW_ASSERT(strstr(r.body, "# TYPE keyward_http_requests_total counter\n"));
    KW_ASSERT(strstr(r.body, "keyward_http_requests_total{method=\"GET\",route=\"/items/{id}\","
                             "status=\"200\"} 400\n"));
    KW_ASSERT(strstr(r.body, "keyward_http_requests_total{method=\"GET\",route=\"unmatched\","
                             "status=\"404\"} 1\n"));
    KW_ASSERT(strstr(r.body, "# TYPE keyward_http_request_duration_seconds histogram\n"));
    KW_ASSERT(strstr(r.body, "keyward_http_request_duration_seconds_bucket{route=\"/items/{id}\","
                             "le=\"+Inf\"} 400\n"));
    KW_ASSERT(strstr(r.body, "keyward_http_request_duration_seconds_count{route=\"/items/{id}\"} "
                             "400\n"));
    KW_ASSERT(strstr(r.body, "keyward_http_request_duration_seconds_bucket{route=\"/items/{id}\","
                             "le=\"0.0005\"}"));
    KW_ASSERT(strstr(r.body, "keyward_http_request_duration_seconds_sum{route=\"/items/{id}\"}"));
    KW_ASSERT(strstr(r.body, "keyward_test_extra 7\n")); /* metrics_fn appended */
    /* The raw paths never become label values. */
    KW_ASSERT(strstr(r.body, "t1-1") == NULL);
    KW_ASSERT(strstr(r.body, "/nope") == NULL);
    resp_free(&r);
    kw_http_server_stop(srv);
}

typedef struct slow_arg {
    uint16_t port;
    int status;
    char body[64];
} slow_arg_t;

static void *slow_client(void *p)
{
    slow_arg_t *a = p;
    resp_t r;
    if (get(a->port, "/slow", &r) == 0) {
        a->status = r.status;
        snprintf(a->body, sizeof(a->body), "%s", r.body);
        resp_free(&r);
    }
    return NULL;
}

KW_TEST(http_graceful_stop)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    atomic_store(&slow_started, 0);
    slow_arg_t a = {port, 0, ""};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, slow_client, &a), 0);
    for (int i = 0; i < 5000 && !atomic_load(&slow_started); i++) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    KW_ASSERT(atomic_load(&slow_started));
    kw_http_server_stop(srv); /* returns only once the slow request has been answered */
    pthread_join(th, NULL);
    KW_ASSERT_EQ(a.status, 200);
    KW_ASSERT_STR_EQ(a.body, "{\"slow\": true}");
    /* And the port is closed now. */
    int fd = dial(port);
    if (fd >= 0)
        close(fd);
    KW_ASSERT(fd < 0);
}

KW_TEST(http_bind_conflict)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    kw_http_config_t cfg = {
        .host = "127.0.0.1", .port = port, .threads = 1, .routes = test_routes, .n_routes = 1};
    kw_http_server_t *srv2 = NULL;
    kw_diag_t diag;
    uint16_t p2 = 0;
    int rc = kw_http_server_start(&cfg, &srv2, &p2, &diag);
    if (rc == KW_OK)
        kw_http_server_stop(srv2);
    KW_ASSERT_EQ(rc, KW_EIO);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%u", (unsigned)port);
    KW_ASSERT(strstr(diag.msg, want) != NULL);
    kw_http_server_stop(srv);
}

KW_TEST(http_access_log)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    char path[] = "/tmp/kw_http_log_XXXXXX";
    int lfd = mkstemp(path);
    KW_ASSERT(lfd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    KW_ASSERT(saved >= 0);
    dup2(lfd, STDERR_FILENO);
    kw_log_set_level(KW_LOG_INFO);
    resp_t r;
    int rc1 = do_req(port,
                     "GET /subject/secret-key-name?token=hunter2 HTTP/1.1\r\nHost: t\r\n"
                     "Authorization: Bearer sekrit\r\nX-Request-Id: log-test-1\r\n"
                     "Connection: close\r\n\r\n",
                     &r);
    int st1 = r.status;
    if (rc1 == 0)
        resp_free(&r);
    int rc2 = get(port, "/no/such/secret-path", &r);
    if (rc2 == 0)
        resp_free(&r);
    /* The log line is written after the response is sent: stop waits for it. */
    kw_http_server_stop(srv);
    kw_log_set_level(KW_LOG_WARN);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[8192] = {0};
    ssize_t n = pread(lfd, buf, sizeof(buf) - 1, 0);
    close(lfd);
    unlink(path);
    KW_ASSERT_EQ(rc1, 0);
    KW_ASSERT_EQ(rc2, 0);
    KW_ASSERT_EQ(st1, 403);
    KW_ASSERT(n > 0);
    const char *line = strstr(buf, "{\"ts\":\"");
    KW_ASSERT(line);
    KW_ASSERT(strstr(buf, "\"level\":\"info\",\"request_id\":\"log-test-1\",\"method\":\"GET\","
                          "\"route\":\"/subject/{name}\",\"status\":403,\"duration_ms\":"));
    KW_ASSERT(strstr(buf, "\"subject\":\"user:alice\"}\n"));
    KW_ASSERT(strstr(buf, "\"route\":\"unmatched\",\"status\":404"));
    KW_ASSERT(strstr(buf, "\"subject\":null}\n"));
    KW_ASSERT(strstr(buf, "secret") == NULL);
    KW_ASSERT(strstr(buf, "hunter2") == NULL);
    KW_ASSERT(strstr(buf, "sekrit") == NULL);
    KW_ASSERT(strstr(buf, "token") == NULL);
}

KW_TEST(http_early_error_does_not_desync)
{
    /* A 404/405/413 queued before the body was read must not let that unread body be
     * parsed as a second request on the same connection (request smuggling). */
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    const char *inner = "GET /items/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    const char *prefixes[] = {"POST /nope", "PUT /ping"};
    for (size_t i = 0; i < KW_ARRAY_LEN(prefixes); i++) {
        char raw[512];
        int l = snprintf(raw, sizeof(raw), "%s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
                         prefixes[i], strlen(inner));
        snprintf(raw + l, sizeof(raw) - (size_t)l, "%s", inner);
        int fd = dial(port);
        KW_ASSERT(fd >= 0);
        KW_ASSERT_EQ(send_all(fd, raw, strlen(raw)), 0);
        resp_t r;
        KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
        KW_ASSERT(r.status == 404 || r.status == 405);
        resp_free(&r);
        /* Either the connection is closed or the next thing on it answers OUR next
         * request, never the smuggled one. */
        const char *next = "GET /items/mine HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        if (send_all(fd, next, strlen(next)) == 0 && read_resp(fd, &r, false) == 0) {
            KW_ASSERT(strstr(r.body, "smuggled") == NULL);
            KW_ASSERT(strstr(r.body, "mine") != NULL);
            resp_free(&r);
        }
        close(fd);
    }
    /* After a plain 404 without a body the connection stays usable. */
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    resp_t r;
    const char *a = "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, a, strlen(a)), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 404);
    resp_free(&r);
    const char *b = "GET /ping HTTP/1.1\r\nHost: t\r\n\r\n";
    KW_ASSERT_EQ(send_all(fd, b, strlen(b)), 0);
    KW_ASSERT_EQ(read_resp(fd, &r, false), 0);
    KW_ASSERT_EQ(r.status, 200);
    resp_free(&r);
    close(fd);
    kw_http_server_stop(srv);
}

KW_TEST(http_handler_header_injection_and_idle_timeout)
{
    uint16_t port = 0;
    kw_http_server_t *srv = start(&port);
    KW_ASSERT(srv);
    resp_t r;
    KW_ASSERT_EQ(get(port, "/bad_header", &r), 0);
    KW_ASSERT_EQ(r.status, 500);
    KW_ASSERT(strstr(r.head, "pwned") == NULL);
    KW_ASSERT_STR_EQ(r.body, "{\"detail\": \"Internal Server Error\"}");
    resp_free(&r);

    /* An idle connection is closed by the server after conn_timeout_s (here 5 s in
     * start(); this server uses 1 s). */
    kw_http_server_stop(srv);
    kw_http_config_t cfg = {.host = "127.0.0.1",
                            .threads = 2,
                            .conn_timeout_s = 1,
                            .routes = test_routes,
                            .n_routes = KW_ARRAY_LEN(test_routes)};
    kw_diag_t diag;
    srv = NULL;
    KW_ASSERT_EQ(kw_http_server_start(&cfg, &srv, &port, &diag), KW_OK);
    int fd = dial(port);
    KW_ASSERT(fd >= 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char c;
    ssize_t n = recv(fd, &c, 1, 0); /* blocks until the server closes (SO_RCVTIMEO 10 s) */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fd);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT(waited < 5.0);
    kw_http_server_stop(srv);
}
