/*
 * http/pool.c - the request object (kw__rq_t), running its job, the response path, and
 * the workers that re-run parked requests.
 *
 * kw__rq_run runs a request's job (cfg->on_headers and/or the route's handler) on the
 * calling thread: an event loop for a fresh request (server.c). A finished request is
 * serialized there too (status line, headers, body in one buffer), counted in the
 * metrics and logged. A handler that parks its request (kw_http_req_park) leaves it on
 * srv->parked; wake and the loops' deadline sweeps move parked requests to the run queue
 * (srv->mu + srv->cv), where the pool's workers run them again and hand the answer back
 * to the request's loop through that loop's done queue and eventfd (kw__loop_done).
 *
 * Locks: srv->mu (run queue, parked list, running count) is a leaf: never held with a
 * loop's done_mu, never held while a handler runs.
 *
 * Streamed answers (kw_http_stream_*, http.h): a handler on a loop asks for a worker
 * (kw_http_req_to_worker), runs again there, and queues framed bytes in the request's
 * kw__stream_t; the loop is told through its stream list + eventfd (kw__loop_stream),
 * moves them to the connection's output and sends them (conn.c, kw__conn_stream). The
 * writer waits on st->cv while more than KW_HTTP_STREAM_HIGH bytes are queued or unsent;
 * the loop signals it as the socket drains, and wakes it for good (closed) when the
 * connection goes away. st->mu is a leaf lock.
 *
 * Never logged: headers, bodies, query strings, raw paths.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "base/log.h"
#include "http_int.h"

#define KW_MODULE "http"

uint64_t kw_http_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the request object ---- */

kw__rq_t *kw__rq_new(kw_http_server_t *srv)
{
    kw__rq_t *rq = kw_calloc(1, sizeof(*rq));
    if (!rq)
        return NULL;
    rq->req.arena = kw_arena_new(0);
    if (!rq->req.arena) {
        kw_free(rq);
        return NULL;
    }
    rq->srv = srv;
    rq->label = srv->router.n_labels - 1; /* "unmatched" until routed */
    if (pthread_mutex_init(&rq->stream.mu, NULL) != 0)
        goto fail_stream_mu;
    if (pthread_cond_init(&rq->stream.cv, NULL) != 0)
        goto fail_stream_cv;
    if (pthread_mutex_init(&rq->bq.mu, NULL) != 0)
        goto fail_body_mu;
    if (pthread_cond_init(&rq->bq.cv, NULL) != 0)
        goto fail_body_cv;
    kw_buf_init(&rq->bq.q);
    kw_buf_init(&rq->bq.taken);
    kw_buf_init(&rq->stream.q);
    rq->st = &rq->stream;
    kw_buf_init(&rq->body);
    kw_buf_init(&rq->resp.body);
    kw_buf_init(&rq->out);
    rq->req.method = KW_STR("");
    rq->req.path = KW_STR("");
    rq->req.body = KW_STR("");
    rq->req.priv = rq;
    return rq;
fail_body_cv:
    pthread_mutex_destroy(&rq->bq.mu);
fail_body_mu:
    pthread_cond_destroy(&rq->stream.cv);
fail_stream_cv:
    pthread_mutex_destroy(&rq->stream.mu);
fail_stream_mu:
    kw_arena_free(rq->req.arena);
    kw_free(rq);
    return NULL;
}

void kw__rq_free(kw__rq_t *rq)
{
    if (!rq)
        return;
    if (rq->charged)
        atomic_fetch_sub(&rq->srv->body_used, rq->charged);
    kw__stream_fini(rq->st);
    kw_buf_free(&rq->bq.q);
    kw_buf_free(&rq->bq.taken);
    pthread_cond_destroy(&rq->bq.cv);
    pthread_mutex_destroy(&rq->bq.mu);
    kw_buf_free(&rq->body);
    kw_buf_free(&rq->resp.body);
    kw_buf_free(&rq->out);
    kw_arena_free(rq->req.arena);
    kw_free(rq);
}

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

void kw__rq_request_id(kw__rq_t *rq)
{
    char *out = rq->req.request_id;
    const char *given = kw__http_head_get(&rq->head, "x-request-id");
    if (given && request_id_ok(given)) {
        memcpy(out, given, strlen(given) + 1);
        return;
    }
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        /* Not a secret, only unique: fall back to time and a counter. */
        uint64_t a = kw_http_now_ns(), b = atomic_fetch_add(&rq->srv->rid_fallback, 1);
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

static void resp_reset(kw_http_resp_t *resp)
{
    kw_buf_free(&resp->body);
    memset(resp, 0, sizeof(*resp));
    kw_buf_init(&resp->body);
}

void kw__rq_error(kw__rq_t *rq, int status, const char *msg)
{
    kw_http_server_t *srv = rq->srv;
    resp_reset(&rq->resp);
    if (srv->cfg.error_fn)
        srv->cfg.error_fn(&rq->req, status, msg, &rq->resp, srv->cfg.ud);
    else
        kw_http_resp_error(&rq->resp, status, msg);
    if (status == 405 && rq->match.allow[0])
        kw_http_resp_header(&rq->resp, "Allow", rq->match.allow);
}

/* ---- the access log ---- */

/* One access-log line; see the file comment for what must never appear in it. */
static void access_log(kw__rq_t *rq, uint64_t dur_ns)
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
                  ts.tv_nsec / 1000, rq->status >= 500 ? "error" : "info");
    kw_json_escape(&b, kw_str_c(rq->req.request_id));
    kw_buf_puts(&b, ",\"method\":");
    kw_str_t meth = rq->req.method;
    if (meth.len > 32)
        meth.len = 32;
    kw_json_escape(&b, meth);
    kw_buf_puts(&b, ",\"route\":");
    kw_json_escape(&b, kw_str_c(rq->srv->router.labels[rq->label]));
    kw_buf_printf(&b, ",\"status\":%d,\"duration_ms\":%.3f,\"subject\":", rq->status,
                  (double)dur_ns / 1e6);
    if (rq->req.log_subject)
        kw_json_escape(&b, kw_str_c(rq->req.log_subject));
    else
        kw_buf_puts(&b, "null");
    kw_buf_puts(&b, "}");
    if (!b.failed)
        kw_log_raw(b.ptr, b.len);
    kw_buf_free(&b);
}

/* ---- serialization ---- */

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 300 ? "OK" : status < 500 ? "Error" : "Server Error";
    }
}

/* A header name must be a token and a value must not be able to end the header line
 * (response splitting): a handler that tries is a bug, not input. */
static bool header_ok(const char *name, const char *value)
{
    if (!name || !value || !*name)
        return false;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == ':' || (unsigned char)*p >= 0x7F)
            return false;
    for (const char *p = value; *p; p++)
        if (*p == '\r' || *p == '\n' || ((unsigned char)*p < 0x20 && *p != '\t'))
            return false;
    return true;
}

/* hdr_block: lines "Name: value\r\n", each a token name and a value without CR, LF or
 * other controls but tab. */
static bool block_ok(kw_str_t b)
{
    size_t i = 0;
    while (i < b.len) {
        size_t s = i;
        while (i < b.len && b.ptr[i] != ':') {
            unsigned char ch = (unsigned char)b.ptr[i];
            if (ch <= 0x20 || ch >= 0x7F)
                return false;
            i++;
        }
        if (i == s || i + 1 >= b.len || b.ptr[i + 1] != ' ')
            return false;
        i += 2;
        while (i < b.len && b.ptr[i] != '\r') {
            unsigned char ch = (unsigned char)b.ptr[i];
            if (ch == '\n' || (ch < 0x20 && ch != '\t') || ch == 0x7F)
                return false;
            i++;
        }
        if (i + 1 >= b.len || b.ptr[i + 1] != '\n')
            return false;
        i += 2;
    }
    return true;
}

/* "Date: ..." text for now, cached per thread for the current second. */
static const char *http_date(void)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char text[40];
    time_t now = time(NULL);
    if (now != cached_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        if (strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
            text[0] = '\0';
        cached_sec = now;
    }
    return text;
}

/* Checks rq->resp; a broken one becomes a 500 with no extra headers. */
static void resp_sanitize(kw__rq_t *rq)
{
    kw_http_resp_t *resp = &rq->resp;
    bool bad = false;
    if (resp->body.failed) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: out of memory building the response",
               rq->req.request_id);
        bad = true;
    } else if (resp->status < 200 || resp->status > 599) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: handler for %s set status %d",
               rq->req.request_id, rq->req.route.ptr ? rq->req.route.ptr : "?", resp->status);
        bad = true;
    } else {
        for (size_t i = 0; i < resp->n_hdrs && i < KW_ARRAY_LEN(resp->hdr_names); i++) {
            if (!header_ok(resp->hdr_names[i], resp->hdr_values[i])) {
                kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: response header %zu refused",
                       rq->req.request_id, i);
                bad = true;
            }
        }
        if (resp->content_type && !header_ok("Content-Type", resp->content_type))
            bad = true;
        if (!bad && resp->hdr_block.len && !block_ok(resp->hdr_block)) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: response header block refused",
                   rq->req.request_id);
            bad = true;
        }
    }
    if (bad) {
        resp_reset(resp);
        kw_http_resp_error(resp, 500, "Internal Server Error");
    }
}

/* The status line and headers of resp into o: with Content-Length, or (streamed) with
 * Transfer-Encoding: chunked for HTTP/1.1 and nothing for 1.0 (which then closes). */
static void write_head(kw__rq_t *rq, const kw_http_resp_t *resp, kw_buf_t *o, bool streamed)
{
    kw_buf_printf(o, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n", resp->status,
                  reason(resp->status), http_date(),
                  resp->content_type ? resp->content_type : "application/json");
    if (!streamed)
        kw_buf_printf(o, "Content-Length: %zu\r\n", resp->body.len);
    else if (rq->head.minor != 0)
        kw_buf_puts(o, "Transfer-Encoding: chunked\r\n");
    kw_buf_printf(o, "X-Request-Id: %s\r\n", rq->req.request_id);
    for (size_t i = 0; i < resp->n_hdrs && i < KW_ARRAY_LEN(resp->hdr_names); i++)
        kw_buf_printf(o, "%s: %s\r\n", resp->hdr_names[i], resp->hdr_values[i]);
    if (resp->hdr_block.len)
        kw_buf_append(o, resp->hdr_block.ptr, resp->hdr_block.len);
    if (rq->close_after)
        kw_buf_puts(o, "Connection: close\r\n\r\n");
    else if (rq->head.minor == 0)
        kw_buf_puts(o, "Connection: keep-alive\r\n\r\n");
    else
        kw_buf_puts(o, "\r\n");
}

void kw__rq_finish(kw__rq_t *rq)
{
    kw_http_server_t *srv = rq->srv;
    resp_sanitize(rq);
    kw_http_resp_t *resp = &rq->resp;
    if (atomic_load_explicit(&srv->stopping, memory_order_relaxed))
        rq->keep_alive = false;
    /* A request whose body was not read (or not read to its end) must not leave those
     * bytes to be parsed as the next request: the connection closes. */
    if (!rq->keep_alive)
        rq->close_after = true;
    bool is_head = kw_str_eq_c(rq->req.method, "HEAD");
    kw_buf_t *o = &rq->out;
    o->len = 0;
    write_head(rq, resp, o, false);
    if (!is_head && resp->body.len)
        kw_buf_append(o, resp->body.ptr, resp->body.len);
    if (o->failed) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: out of memory sending the response",
               rq->req.request_id);
        kw_buf_free(o);
        kw_buf_init(o);
        rq->close_after = true; /* nothing to send: the connection just closes */
    }
    kw_buf_free(&resp->body);
    kw_buf_init(&resp->body);
    rq->status = resp->status;
    /* Counted when queued, before a byte goes out: a client that has read the response
     * can rely on it being in /metrics already. */
    uint64_t dur = kw_http_now_ns() - rq->t0_ns;
    kw__metrics_observe(&srv->metrics, rq->req.method, rq->label, rq->status, dur);
    access_log(rq, dur);
    rq->done = KW__DONE_ANSWER;
}

/* ---- the pool ---- */

/* srv->mu held. */
static void run_push_locked(kw_http_server_t *srv, kw__rq_t *rq)
{
    rq->next = NULL;
    if (srv->run_tail)
        srv->run_tail->next = rq;
    else
        srv->run_head = rq;
    srv->run_tail = rq;
}

/* Runs on_headers once; false when it answered. */
static bool run_on_headers(kw__rq_t *rq)
{
    kw_http_server_t *srv = rq->srv;
    rq->headers_run = true;
    if (!srv->cfg.on_headers)
        return true;
    if (srv->cfg.on_headers(&rq->req, &rq->resp, srv->cfg.ud))
        return true;
    if (rq->resp.status == 0) /* said no without an answer: a bug in the hook */
        kw_http_resp_error(&rq->resp, 500, "Internal Server Error");
    if (rq->has_body)
        rq->keep_alive = false; /* the body stays unread */
    return false;
}

/* The handler returned after kw_http_stream_begin: the last chunk, then the request is
 * answered (rq->out empty: everything went through the stream). */
static void stream_finish(kw__rq_t *rq)
{
    kw_http_server_t *srv = rq->srv;
    kw__stream_t *st = rq->st;
    pthread_mutex_lock(&st->mu);
    if (st->chunked && !st->closed)
        kw_buf_puts(&st->q, "0\r\n\r\n");
    if (st->q.failed) /* the stream is broken: the connection closes */
        rq->close_after = true;
    pthread_mutex_unlock(&st->mu);
    if (!st->chunked)
        rq->close_after = true; /* HTTP/1.0: the end of the body is the end of the connection */
    resp_reset(&rq->resp);
    rq->out.len = 0;
    uint64_t dur = kw_http_now_ns() - rq->t0_ns;
    kw__metrics_observe(&srv->metrics, rq->req.method, rq->label, rq->status, dur);
    access_log(rq, dur);
    rq->done = KW__DONE_ANSWER;
}

/* The handler of a streamed body is done (answered): a body it did not read to its end
 * leaves bytes that must not be parsed as a request (the connection closes), and a body
 * that failed is answered with the server's error, not the handler's. */
static void body_settle(kw__rq_t *rq)
{
    kw__body_q_t *bq = &rq->bq;
    pthread_mutex_lock(&bq->mu);
    bool eof = bq->eof && !bq->failed;
    int fail = bq->failed ? bq->fail_status : 0;
    const char *msg = bq->fail_msg;
    pthread_mutex_unlock(&bq->mu);
    if (!eof) {
        rq->keep_alive = false;
        rq->close_after = true;
    }
    if (fail > 0 && !rq->st->begun)
        kw__rq_error(rq, fail, msg ? msg : "Bad Request");
}

bool kw__rq_run(kw__rq_t *rq)
{
    kw_http_server_t *srv = rq->srv;
    resp_reset(&rq->resp);
    if (rq->job == KW__JOB_HEADERS) {
        if (run_on_headers(rq)) {
            resp_reset(&rq->resp);
            rq->done = KW__DONE_BODY;
        } else {
            kw__rq_finish(rq);
        }
        return true;
    }
    if (!rq->headers_run && !run_on_headers(rq)) {
        kw__rq_finish(rq);
        return true;
    }
    resp_reset(&rq->resp);
    rq->resp.status = 200;
    rq->parked = false;
    rq->deferred = false;
    rq->to_worker = false;
    rq->match.route->def->fn(&rq->req, &rq->resp, srv->cfg.ud);
    bool answered = !rq->to_worker && !rq->parked;
    if ((answered || rq->st->begun) && rq->bq.active)
        body_settle(rq);
    if (rq->st && rq->st->begun) {
        stream_finish(rq);
        return true;
    }
    if (rq->to_worker && !rq->parked) {
        resp_reset(&rq->resp);
        rq->req.run = KW_HTTP_RUN_WORKER;
        pthread_mutex_lock(&srv->mu);
        run_push_locked(srv, rq);
        pthread_cond_signal(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        return false;
    }
    if (rq->parked) {
        resp_reset(&rq->resp);
        pthread_mutex_lock(&srv->mu);
        if (srv->pool_quit || atomic_load(&srv->stopping)) {
            /* Stopping: no one would wake it; run it once more as expired. */
            rq->req.run = KW_HTTP_RUN_DEADLINE;
            run_push_locked(srv, rq);
            pthread_cond_signal(&srv->cv);
        } else if (rq->deferred || rq->wake_pending) {
            rq->deferred = false;
            rq->wake_pending = false;
            rq->req.run = KW_HTTP_RUN_WOKEN;
            run_push_locked(srv, rq);
            pthread_cond_signal(&srv->cv);
        } else if (atomic_load(&srv->wake_gen) != rq->park_gen) {
            /* A wake came between the handler's decision to park and now: it would have
             * missed this request, so run it again at once. */
            rq->req.run = KW_HTTP_RUN_WOKEN;
            run_push_locked(srv, rq);
            pthread_cond_signal(&srv->cv);
        } else {
            rq->next = srv->parked;
            srv->parked = rq;
        }
        pthread_mutex_unlock(&srv->mu);
        return false;
    }
    kw__rq_finish(rq);
    return true;
}

static void run_job(kw__rq_t *rq)
{
    rq->on_worker = true;
    if (kw__rq_run(rq))
        kw__loop_done(rq);
}

static void *worker_main(void *arg)
{
    kw_http_server_t *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        /* srv->mu is held here. */
        while (!srv->run_head && !srv->pool_quit)
            pthread_cond_wait(&srv->cv, &srv->mu);
        if (!srv->run_head)
            break; /* quitting and nothing left */
        kw__rq_t *rq = srv->run_head;
        srv->run_head = rq->next;
        if (!srv->run_head)
            srv->run_tail = NULL;
        srv->running++;
        pthread_mutex_unlock(&srv->mu);
        run_job(rq);
        pthread_mutex_lock(&srv->mu);
        srv->running--;
        pthread_cond_broadcast(&srv->idle_cv);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

int kw__pool_start(kw_http_server_t *srv, kw_diag_t *diag)
{
    size_t n = srv->cfg.threads;
    srv->workers = kw_calloc(n, sizeof(*srv->workers));
    if (!srv->workers)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory starting the HTTP workers");
    for (size_t i = 0; i < n; i++) {
        int e = pthread_create(&srv->workers[i], NULL, worker_main, srv);
        if (e != 0) {
            pthread_mutex_lock(&srv->mu);
            srv->pool_quit = true;
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
            for (size_t j = 0; j < srv->n_workers; j++)
                pthread_join(srv->workers[j], NULL);
            kw_free(srv->workers);
            srv->workers = NULL;
            srv->n_workers = 0;
            return kw_diag_set(diag, KW_ENOMEM, 0, 0, "cannot start HTTP worker threads: %s",
                               strerror(e));
        }
        srv->n_workers++;
    }
    return KW_OK;
}

void kw__pool_run(kw_http_server_t *srv, kw__rq_t *rq)
{
    rq->req.run = KW_HTTP_RUN_WORKER;
    pthread_mutex_lock(&srv->mu);
    run_push_locked(srv, rq);
    pthread_cond_signal(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

void kw__pool_expire_parked(kw_http_server_t *srv, uint64_t now, bool all)
{
    pthread_mutex_lock(&srv->mu);
    kw__rq_t **pp = &srv->parked;
    bool any = false;
    while (*pp) {
        kw__rq_t *rq = *pp;
        if (all || rq->park_deadline_ns <= now) {
            *pp = rq->next;
            rq->req.run = KW_HTTP_RUN_DEADLINE;
            run_push_locked(srv, rq);
            any = true;
        } else {
            pp = &rq->next;
        }
    }
    if (any)
        pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

bool kw__pool_drain(kw_http_server_t *srv, uint64_t deadline_ns)
{
    pthread_mutex_lock(&srv->mu);
    while (srv->running || srv->run_head || srv->parked) {
        uint64_t now = kw_http_now_ns();
        if (now >= deadline_ns)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t wait = deadline_ns - now;
        if (wait > 50000000ull)
            wait = 50000000ull; /* re-check parked deadlines now and then */
        uint64_t ns = (uint64_t)ts.tv_nsec + wait;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&srv->idle_cv, &srv->mu, &ts);
    }
    bool idle = !srv->running && !srv->run_head && !srv->parked;
    pthread_mutex_unlock(&srv->mu);
    return idle;
}

void kw__pool_stop(kw_http_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->pool_quit = true;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    for (size_t i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i], NULL);
    kw_free(srv->workers);
    srv->workers = NULL;
    srv->n_workers = 0;
    while (srv->parked) {
        kw__rq_t *rq = srv->parked;
        srv->parked = rq->next;
        kw__rq_free(rq);
    }
}

/* ---- public request API ---- */

const char *kw_http_header(const kw_http_req_t *req, const char *name)
{
    const kw__rq_t *rq = req->priv;
    return kw__http_head_get(&rq->head, name);
}

kw_str_t kw_http_query_raw(const kw_http_req_t *req)
{
    const kw__rq_t *rq = req->priv;
    return rq->head.query.ptr ? rq->head.query : KW_STR("");
}

size_t kw_http_header_count(const kw_http_req_t *req)
{
    const kw__rq_t *rq = req->priv;
    return rq->head.n_hdrs;
}

void kw_http_header_at(const kw_http_req_t *req, size_t i, const char **name, const char **value)
{
    const kw__rq_t *rq = req->priv;
    *name = rq->head.hdrs[i].name;
    *value = rq->head.hdrs[i].value;
}

kw_str_t kw_http_query(const kw_http_req_t *req, const char *name, bool *found, bool *bad)
{
    const kw__rq_t *rq = req->priv;
    kw_str_t q = rq->head.query;
    bool f = false, b = false;
    kw_str_t value = KW_STR_NULL;
    size_t i = 0;
    while (i < q.len && !f && !b) {
        size_t s = i;
        while (i < q.len && q.ptr[i] != '&')
            i++;
        kw_str_t pair = {q.ptr + s, i - s};
        i++; /* skip '&' */
        if (pair.len == 0)
            continue;
        const char *eq = memchr(pair.ptr, '=', pair.len);
        kw_str_t rk = eq ? (kw_str_t){pair.ptr, (size_t)(eq - pair.ptr)} : pair;
        kw_str_t rv = eq ? (kw_str_t){eq + 1, pair.len - rk.len - 1} : KW_STR("");
        kw_str_t k, v;
        if (!kw_http_pct_decode(req->arena, rk, true, &k) || !kw_str_eq_c(k, name))
            continue;
        /* A decoded NUL is refused like a bad escape: C-string consumers would truncate.
         * The first occurrence wins either way. */
        if (!kw_http_pct_decode(req->arena, rv, true, &v) || memchr(v.ptr, '\0', v.len)) {
            b = true;
        } else {
            f = true;
            value = v;
        }
    }
    if (found)
        *found = f;
    if (bad)
        *bad = b;
    return f ? value : KW_STR_NULL;
}

kw_http_server_t *kw_http_req_server(const kw_http_req_t *req)
{
    return ((const kw__rq_t *)req->priv)->srv;
}

void kw_http_req_park(kw_http_req_t *req, uint64_t deadline_ns)
{
    kw__rq_t *rq = req->priv;
    rq->parked = true;
    rq->park_deadline_ns = deadline_ns;
    rq->park_gen = atomic_load(&rq->srv->wake_gen);
}

void kw_http_req_wake(kw_http_req_t *req)
{
    kw__rq_t *rq = req->priv;
    kw_http_server_t *srv = rq->srv;
    pthread_mutex_lock(&srv->mu);
    kw__rq_t **pp = &srv->parked;
    while (*pp && *pp != rq)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = rq->next;
        rq->req.run = KW_HTTP_RUN_WOKEN;
        run_push_locked(srv, rq);
        pthread_cond_signal(&srv->cv);
    } else {
        rq->wake_pending = true; /* its handler is running: kw__rq_run requeues it */
    }
    pthread_mutex_unlock(&srv->mu);
}

void kw_http_req_defer(kw_http_req_t *req)
{
    kw__rq_t *rq = req->priv;
    kw_http_req_park(req, kw_http_now_ns() + 3600ull * 1000000000ull);
    rq->deferred = true;
}

uint64_t kw_http_req_park_deadline(const kw_http_req_t *req)
{
    const kw__rq_t *rq = req->priv;
    return rq->park_deadline_ns;
}

void kw_http_server_wake(kw_http_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    atomic_fetch_add(&srv->wake_gen, 1);
    kw__rq_t *l = srv->parked;
    srv->parked = NULL;
    while (l) {
        kw__rq_t *rq = l;
        l = rq->next;
        rq->req.run = KW_HTTP_RUN_WOKEN;
        run_push_locked(srv, rq);
    }
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* ---- streamed answers ---- */

void kw__stream_fini(kw__stream_t *st)
{
    kw_buf_free(&st->q);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
}

void kw__stream_close(kw__rq_t *rq)
{
    kw__stream_t *st = rq->st;
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    st->closed = true;
    atomic_store(&st->cancelled, true);
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

int kw_http_req_to_worker(kw_http_req_t *req)
{
    kw__rq_t *rq = req->priv;
    rq->to_worker = true;
    return KW_OK;
}

bool kw_http_req_on_worker(const kw_http_req_t *req)
{
    const kw__rq_t *rq = req->priv;
    return rq->on_worker;
}

bool kw_http_stream_cancelled(const kw_http_req_t *req)
{
    const kw__rq_t *rq = req->priv;
    return atomic_load(&rq->st->cancelled);
}

/* Appends to the queue (st->mu held by the caller) and says whether the loop must be told. */
static bool queue_locked(kw__stream_t *st)
{
    if (st->notified)
        return false;
    st->notified = true;
    return true;
}

int kw_http_stream_begin(kw_http_req_t *req, const kw_http_resp_t *resp)
{
    kw__rq_t *rq = req->priv;
    kw__stream_t *st = rq->st;
    if (!rq->on_worker || st->begun)
        return KW_EINVAL;
    st->chunked = rq->head.minor != 0; /* the loop never reads it */
    rq->resp.status = resp->status;
    rq->resp.content_type = resp->content_type;
    rq->resp.n_hdrs = resp->n_hdrs;
    for (size_t i = 0; i < resp->n_hdrs && i < KW_ARRAY_LEN(resp->hdr_names); i++) {
        rq->resp.hdr_names[i] = resp->hdr_names[i];
        rq->resp.hdr_values[i] = resp->hdr_values[i];
    }
    resp_sanitize(rq);
    rq->status = rq->resp.status;
    if (atomic_load_explicit(&rq->srv->stopping, memory_order_relaxed) || !rq->keep_alive ||
        !st->chunked)
        rq->close_after = true;
    kw_buf_t head;
    kw_buf_init(&head);
    write_head(rq, &rq->resp, &head, true);
    if (head.failed) {
        kw_buf_free(&head);
        return KW_ENOMEM;
    }
    pthread_mutex_lock(&st->mu);
    int rc = st->closed ? KW_EIO : KW_OK;
    bool notify = false;
    if (rc == KW_OK) {
        kw_buf_append(&st->q, head.ptr, head.len);
        rc = st->q.failed ? KW_ENOMEM : KW_OK;
        notify = queue_locked(st);
    }
    st->begun = true; /* even when closed: the handler's answer is this stream now */
    pthread_mutex_unlock(&st->mu);
    kw_buf_free(&head);
    if (notify)
        kw__loop_stream(rq);
    return rc;
}

int kw_http_stream_write(kw_http_req_t *req, const void *p, size_t n)
{
    kw__rq_t *rq = req->priv;
    kw__stream_t *st = rq->st;
    if (!st->begun)
        return KW_EINVAL;
    if (n == 0)
        return KW_OK; /* a zero-length chunk would end the body */
    pthread_mutex_lock(&st->mu);
    while (!st->closed && st->q.len - st->q_off + st->unsent >= KW_HTTP_STREAM_HIGH)
        pthread_cond_wait(&st->cv, &st->mu);
    int rc = KW_OK;
    bool notify = false;
    if (st->closed) {
        rc = KW_EIO;
    } else {
        if (st->chunked)
            kw_buf_printf(&st->q, "%zx\r\n", n);
        kw_buf_append(&st->q, p, n);
        if (st->chunked)
            kw_buf_puts(&st->q, "\r\n");
        rc = st->q.failed ? KW_ENOMEM : KW_OK;
        notify = queue_locked(st);
    }
    pthread_mutex_unlock(&st->mu);
    if (notify)
        kw__loop_stream(rq);
    return rc;
}

/* Below this, a buffer given while another is queued is copied after it (a line or two:
 * cheaper than waiting for the loop). */
#define KW__STREAM_GIVE_COPY (16u * 1024u)

int kw_http_stream_give(kw_http_req_t *req, kw_buf_t *b)
{
    kw__rq_t *rq = req->priv;
    kw__stream_t *st = rq->st;
    if (!st->begun) {
        b->len = 0;
        return KW_EINVAL;
    }
    if (b->failed) {
        b->len = 0;
        return KW_ENOMEM;
    }
    if (b->len <= KW_HTTP_STREAM_HEAD) {
        b->len = 0;
        return KW_OK; /* a zero-length chunk would end the body */
    }
    size_t start = KW_HTTP_STREAM_HEAD;
    if (st->chunked) { /* "<hex size>\r\n" right before the bytes, "\r\n" after them */
        char size[KW_HTTP_STREAM_HEAD];
        int sl = snprintf(size, sizeof(size), "%zx\r\n", b->len - KW_HTTP_STREAM_HEAD);
        start -= (size_t)sl;
        memcpy(b->ptr + start, size, (size_t)sl);
        kw_buf_append(b, "\r\n", 2);
        if (b->failed) {
            b->len = 0;
            return KW_ENOMEM;
        }
    }
    pthread_mutex_lock(&st->mu);
    /* Backpressure as kw_http_stream_write, and a big buffer waits for the loop to take the
     * one queued before (the loop signals as it sends) rather than be copied after it. */
    while (!st->closed && (st->q.len - st->q_off + st->unsent >= KW_HTTP_STREAM_HIGH ||
                           (st->q.len - st->q_off >= KW__STREAM_GIVE_COPY &&
                            b->len - start >= KW__STREAM_GIVE_COPY)))
        pthread_cond_wait(&st->cv, &st->mu);
    int rc = KW_OK;
    bool notify = false;
    if (st->closed) {
        rc = KW_EIO;
    } else if (st->q.len == 0 && !st->q.failed) { /* hand the buffer over */
        kw_buf_t old = st->q;
        st->q = *b;
        st->q_off = start;
        *b = old;
        notify = queue_locked(st);
    } else { /* the loop has not taken the last one yet: after it */
        kw_buf_append(&st->q, b->ptr + start, b->len - start);
        rc = st->q.failed ? KW_ENOMEM : KW_OK;
        notify = queue_locked(st);
    }
    pthread_mutex_unlock(&st->mu);
    b->len = 0;
    if (notify)
        kw__loop_stream(rq);
    return rc;
}

/* ---- streamed request bodies ---- */

void kw__body_fail(kw__rq_t *rq, int status, const char *msg)
{
    kw__body_q_t *bq = &rq->bq;
    pthread_mutex_lock(&bq->mu);
    if (!bq->failed && !bq->eof) {
        bq->failed = true;
        bq->fail_status = status;
        bq->fail_msg = msg;
    }
    pthread_cond_broadcast(&bq->cv);
    pthread_mutex_unlock(&bq->mu);
}

int kw_http_body_next(kw_http_req_t *req, kw_str_t *chunk)
{
    kw__rq_t *rq = req->priv;
    kw__body_q_t *bq = &rq->bq;
    if (!bq->active) { /* read whole already: one chunk, then the end */
        *chunk = bq->given ? KW_STR("") : req->body;
        bq->given = true;
        return KW_OK;
    }
    if (!rq->on_worker)
        return KW_EINVAL;
    pthread_mutex_lock(&bq->mu);
    bq->taken.len = 0;
    while (!bq->q.len && !bq->eof && !bq->failed)
        pthread_cond_wait(&bq->cv, &bq->mu);
    int rc = KW_OK;
    bool notify = false;
    if (bq->failed) {
        rc = KW_EIO;
    } else if (bq->q.len) {
        kw_buf_t t = bq->taken;
        bq->taken = bq->q;
        bq->q = t;
        bq->q.len = 0;
        *chunk = (kw_str_t){bq->taken.ptr, bq->taken.len};
        if (bq->paused) {
            bq->paused = false;
            notify = !bq->notified;
            bq->notified = true;
        }
    } else {
        *chunk = KW_STR(""); /* the end */
    }
    pthread_mutex_unlock(&bq->mu);
    if (notify)
        kw__loop_body(rq);
    return rc;
}
