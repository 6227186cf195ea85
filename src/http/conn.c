/*
 * http/conn.c - one connection's state machine on its event loop (server.c has the loops,
 * accept, the deadline sweep and the server's lifecycle): read, the head (parse.c),
 * routing, on_headers before the body, the body (bounded in size, time and memory), the
 * job run right here, the answer written, keep-alive, pipelining, lingering close. The
 * states and their deadlines are described at the top of server.c.
 *
 * Threads: everything here runs on the connection's loop thread, except what a parked
 * request's re-run does through pool.c.
 *
 * Never logged: headers, bodies, query strings, raw paths.
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "http_int.h"

#define KW_MODULE "http"

typedef struct kw__loop loop_t;

/* ---- connections ---- */

static void set_deadline(kw__conn_t *c, uint64_t at, int kind)
{
    c->deadline = at;
    c->expire_kind = kind;
}

void kw__conn_free(loop_t *lp, kw__conn_t *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    lp->n_conns--;
    atomic_fetch_sub(&lp->srv->n_conns, 1);
    kw_free(c->rbuf);
    kw_buf_free(&c->out);
    kw_free(c);
}

static void ready_push(kw_http_server_t *srv, kw__conn_t *c)
{
    (void)srv;
    loop_t *lp = c->lp;
    if (c->in_ready)
        return;
    c->in_ready = true;
    c->ready_next = lp->ready;
    lp->ready = c;
}

/* Closes the socket. The struct is freed later from the ready list, or, while its
 * request is with the pool (a zombie), once the request comes back. */
void kw__conn_close(kw_http_server_t *srv, kw__conn_t *c)
{
    if (c->rq && c->state == KW__C_BUSY) {
        kw__stream_close(c->rq); /* a streaming handler stops writing */
        if (c->body_streaming)
            kw__body_fail(c->rq, 0, NULL); /* nor waits for more body */
        c->body_streaming = false;
    }
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
        kw__addr_release(srv, c->addr);
        c->addr = NULL;
        atomic_fetch_sub_explicit(&srv->metrics.open_conns, 1, memory_order_relaxed);
    }
    if (c->state != KW__C_BUSY)
        ready_push(srv, c);
}

void kw__conn_to_idle(kw_http_server_t *srv, kw__conn_t *c)
{
    c->state = KW__C_IDLE;
    c->got_bytes = false;
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.conn_timeout_s * KW__NS, -1);
}

static void to_linger(kw_http_server_t *srv, kw__conn_t *c)
{
    if (atomic_load_explicit(&srv->stopping, memory_order_relaxed)) {
        kw__conn_close(srv, c); /* draining: no time to linger */
        return;
    }
    c->state = KW__C_LINGER;
    c->rlen = 0;
    shutdown(c->fd, SHUT_WR);
    set_deadline(c, kw_http_now_ns() + KW__LINGER_NS, -1);
    ready_push(srv, c);
}

/* Tells a streaming handler how much the socket has not taken yet (it waits while that
 * and its queue are over KW_HTTP_STREAM_HIGH). */
static void stream_room(kw__conn_t *c)
{
    if (!c->streaming || !c->rq)
        return;
    kw__stream_t *st = c->rq->st;
    pthread_mutex_lock(&st->mu);
    st->unsent = c->out.len - c->woff;
    if (st->unsent + st->q.len - st->q_off < KW_HTTP_STREAM_HIGH)
        pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* Writes what is pending. On completion: WRITE goes on to the next request or to linger;
 * other states (a 100 Continue during BODY) just carry on. false: the conn was closed. */
static bool conn_flush(kw_http_server_t *srv, kw__conn_t *c)
{
    while (c->woff < c->out.len) {
        ssize_t n = send(c->fd, c->out.ptr + c->woff, c->out.len - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            if (c->streaming) /* progress: the stall deadline starts again */
                set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * KW__NS,
                             KW__EXPIRE_WRITE);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            stream_room(c);
            return true; /* EPOLLOUT brings us back */
        }
        kw__conn_close(srv, c);
        return false;
    }
    c->out.len = 0;
    c->woff = 0;
    stream_room(c);
    if (c->out.ptr && c->out.cap > 65536) { /* do not keep a big answer's buffer */
        kw_buf_free(&c->out);
        kw_buf_init(&c->out);
    }
    if (c->state != KW__C_WRITE)
        return true;
    if (c->close_after) {
        to_linger(srv, c);
        return c->fd >= 0;
    }
    kw__conn_to_idle(srv, c);
    ready_push(srv, c); /* the next request may be buffered already */
    return true;
}

/* Takes rq's serialized answer and starts sending it. */
static void conn_answer(kw_http_server_t *srv, kw__conn_t *c, kw__rq_t *rq)
{
    if (rq->close_after)
        c->close_after = true;
    /* A streamed answer may have gone out whole already (out empty); what it still had
     * queued goes before anything else. */
    bool streamed = rq->st->begun;
    if (streamed) {
        pthread_mutex_lock(&rq->st->mu);
        if (rq->st->q.len > rq->st->q_off)
            kw_buf_append(&c->out, rq->st->q.ptr + rq->st->q_off, rq->st->q.len - rq->st->q_off);
        rq->st->q.len = 0;
        rq->st->q_off = 0;
        pthread_mutex_unlock(&rq->st->mu);
        c->streaming = false;
    }
    if (c->out.len == 0) {
        kw_buf_free(&c->out);
        c->out = rq->out; /* take the buffer */
        kw_buf_init(&rq->out);
    } else {
        kw_buf_append(&c->out, rq->out.ptr, rq->out.len);
    }
    kw__rq_free(rq);
    c->rq = NULL;
    c->answered = true;
    c->state = KW__C_WRITE; /* no longer BUSY: a close below frees the connection */
    if (c->out.failed || (c->out.len == 0 && !streamed)) {
        kw__conn_close(srv, c);
        return;
    }
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * KW__NS,
                 KW__EXPIRE_WRITE);
    conn_flush(srv, c);
}

/* A server-made error for the request being read; always closes afterwards. */
void kw__conn_fail(kw_http_server_t *srv, kw__conn_t *c, int status, const char *msg)
{
    kw__rq_t *rq = c->rq;
    if (!rq) {
        rq = kw__rq_new(srv);
        if (!rq) {
            kw__conn_close(srv, c);
            return;
        }
        rq->t0_ns = kw_http_now_ns();
        kw__rq_request_id(rq);
        c->rq = rq;
    }
    rq->keep_alive = false;
    kw__rq_error(rq, status, msg);
    kw__rq_finish(rq);
    conn_answer(srv, c, rq);
}

/* Runs the request's job right here on the loop thread (see the file comment); a parked
 * request stays BUSY until the pool brings it back. */
static void dispatch(kw_http_server_t *srv, kw__conn_t *c, int job)
{
    kw__rq_t *rq = c->rq;
    c->state = KW__C_BUSY;
    rq->job = job;
    rq->conn = c;
    rq->loop = c->lp;
    if (kw__rq_run(rq))
        kw__conn_done(srv, rq);
}

static bool budget_take(kw_http_server_t *srv, kw__rq_t *rq, size_t n)
{
    size_t cur = atomic_load(&srv->body_used);
    do {
        if (n > srv->cfg.body_budget || cur > srv->cfg.body_budget - n) {
            atomic_fetch_add_explicit(&srv->metrics.budget_refused, 1, memory_order_relaxed);
            return false;
        }
    } while (!atomic_compare_exchange_weak(&srv->body_used, &cur, cur + n));
    rq->charged += n;
    return true;
}

/* Room for the whole announced body and its NUL in one allocation. */
static bool body_reserve(kw_buf_t *b, size_t len)
{
    b->ptr = kw_malloc(len + 1);
    if (!b->ptr) {
        b->failed = true;
        return false;
    }
    b->cap = len + 1;
    b->len = 0;
    b->ptr[0] = '\0';
    return true;
}

/* A streamed body (KW_HTTP_ROUTE_STREAM_BODY): the handler runs on a worker from now on,
 * and the loop feeds it the body as it arrives (body_feed). */
static void begin_body_stream(kw_http_server_t *srv, kw__conn_t *c)
{
    kw__rq_t *rq = c->rq;
    if (!budget_take(srv, rq, KW__BODY_STREAM_CHARGE)) {
        kw__conn_fail(srv, c, 503, "Service Unavailable");
        return;
    }
    if (rq->head.chunked)
        memset(&c->ch, 0, sizeof(c->ch));
    else
        c->body_left = rq->head.length;
    c->body_total = 0;
    c->body_since = 0;
    c->body_paused = false;
    c->body_streaming = true;
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * KW__NS, KW__EXPIRE_BODY);
    /* With the pool from here on: a close below leaves a zombie until it comes back. */
    c->state = KW__C_BUSY;
    rq->job = KW__JOB_RUN;
    rq->conn = c;
    rq->loop = c->lp;
    kw__pool_run(srv, rq);
    if (rq->head.expect_continue && c->rlen == 0) {
        kw_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        if (!conn_flush(srv, c))
            return;
    }
    kw__conn_advance(srv, c);
}

/* on_headers said yes (or there is none): start reading the body. */
static void begin_body(kw_http_server_t *srv, kw__conn_t *c)
{
    kw__rq_t *rq = c->rq;
    if (rq->bq.active) {
        begin_body_stream(srv, c);
        return;
    }
    c->state = KW__C_BODY;
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * KW__NS, KW__EXPIRE_BODY);
    if (rq->head.chunked) {
        memset(&c->ch, 0, sizeof(c->ch));
    } else {
        c->body_left = rq->head.length;
        if (!budget_take(srv, rq, (size_t)rq->head.length)) {
            kw__conn_fail(srv, c, 503, "Service Unavailable");
            return;
        }
        if (!body_reserve(&rq->body, (size_t)rq->head.length)) {
            kw__conn_fail(srv, c, 500, "Internal Server Error");
            return;
        }
    }
    if (rq->head.expect_continue && c->rlen == 0) {
        kw_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        if (!conn_flush(srv, c))
            return;
    }
    kw__conn_advance(srv, c);
}

/* Appends body bytes, enforcing the cap and (chunked) the budget. false: answered. */
static bool body_add(kw_http_server_t *srv, kw__conn_t *c, const char *p, size_t n)
{
    kw__rq_t *rq = c->rq;
    if (n > KW_MAX_BODY_BYTES - rq->body.len) {
        kw__conn_fail(srv, c, 413, "Request body too large");
        return false;
    }
    if (rq->head.chunked && !budget_take(srv, rq, n)) {
        kw__conn_fail(srv, c, 503, "Service Unavailable");
        return false;
    }
    kw_buf_append(&rq->body, p, n);
    if (rq->body.failed) {
        kw__conn_fail(srv, c, 500, "Internal Server Error");
        return false;
    }
    return true;
}

static void consume(kw__conn_t *c, size_t n)
{
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
    c->scan = 0;
}

static void body_stop(kw__conn_t *c)
{
    c->body_streaming = false;
    c->body_paused = false;
}

/* Moves what rbuf holds of a streamed body into the request's queue (the handler takes it
 * with kw_http_body_next); bytes after the body's end stay for the next request. */
static void body_feed(kw_http_server_t *srv, kw__conn_t *c)
{
    kw__rq_t *rq = c->rq;
    kw__body_q_t *bq = &rq->bq;
    size_t off = 0, fed = 0;
    bool done = false, bad = false;
    pthread_mutex_lock(&bq->mu);
    if (!rq->head.chunked) {
        size_t n = c->rlen < c->body_left ? c->rlen : (size_t)c->body_left;
        kw_buf_append(&bq->q, c->rbuf, n);
        off = fed = n;
        c->body_left -= n;
        done = c->body_left == 0;
    } else {
        while (off < c->rlen) {
            size_t used = 0;
            kw_str_t data;
            int rc = kw__http_chunk_step(&c->ch, c->rbuf + off, c->rlen - off, &used, &data);
            off += used;
            if (data.len) {
                kw_buf_append(&bq->q, data.ptr, data.len);
                fed += data.len;
            }
            if (rc == KW__CHUNK_ERR) {
                bad = true;
                break;
            }
            if (rc == KW__CHUNK_DONE) {
                done = true;
                break;
            }
        }
    }
    c->body_total += fed;
    bool big = c->body_total > KW_MAX_STREAM_BODY_BYTES;
    bool oom = bq->q.failed;
    if (!bad && !big && !oom) {
        if (done)
            bq->eof = true;
        else if (bq->q.len >= KW_HTTP_BODY_HIGH)
            bq->paused = c->body_paused = true;
        if (fed || done)
            pthread_cond_broadcast(&bq->cv);
    }
    pthread_mutex_unlock(&bq->mu);
    consume(c, off);
    if (bad || big || oom) {
        kw__body_fail(rq,
                      bad   ? 400
                      : big ? 413
                            : 500,
                      bad   ? "Malformed chunked body."
                      : big ? "Request body too large"
                            : "Internal Server Error");
        body_stop(c);
        return;
    }
    if (done) {
        body_stop(c); /* nothing more is read until the answer went out */
        return;
    }
    c->body_since += fed;
    if (c->body_since >= KW_HTTP_BODY_PROGRESS) {
        c->body_since = 0;
        set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * KW__NS,
                     KW__EXPIRE_BODY);
    }
}

void kw__conn_body_resume(kw_http_server_t *srv, kw__rq_t *rq)
{
    kw__conn_t *c = rq->conn;
    pthread_mutex_lock(&rq->bq.mu);
    rq->bq.notified = false;
    pthread_mutex_unlock(&rq->bq.mu);
    if (c->fd < 0 || c->rq != rq || !c->body_streaming)
        return;
    /* The wait for the handler was not the client's: its deadline starts again. */
    c->body_paused = false;
    c->body_since = 0;
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * KW__NS, KW__EXPIRE_BODY);
    c->rd_more = true;
    ready_push(srv, c);
}

void kw__conn_body_expire(kw_http_server_t *srv, kw__conn_t *c)
{
    (void)srv;
    kw__body_fail(c->rq, 408, "Request Timeout");
    body_stop(c);
}

/* The body is complete: hand the request to a worker. */
static void body_done(kw_http_server_t *srv, kw__conn_t *c)
{
    kw__rq_t *rq = c->rq;
    if (rq->body.ptr) {
        rq->req.body = (kw_str_t){rq->body.ptr, rq->body.len};
        rq->body.ptr[rq->body.len] = '\0'; /* reserved: the +1 / kw_buf keeps a NUL */
    }
    dispatch(srv, c, KW__JOB_RUN);
}

/* Feeds buffered bytes to the body. */
static void read_body(kw_http_server_t *srv, kw__conn_t *c)
{
    kw__rq_t *rq = c->rq;
    if (!rq->head.chunked) {
        size_t n = c->rlen < c->body_left ? c->rlen : (size_t)c->body_left;
        kw_buf_append(&rq->body, c->rbuf, n);
        consume(c, n);
        c->body_left -= n;
        if (c->body_left == 0)
            body_done(srv, c);
        return;
    }
    size_t off = 0;
    while (off < c->rlen) {
        size_t used = 0;
        kw_str_t data;
        int rc = kw__http_chunk_step(&c->ch, c->rbuf + off, c->rlen - off, &used, &data);
        off += used;
        if (data.len && !body_add(srv, c, data.ptr, data.len))
            return;
        if (rc == KW__CHUNK_ERR) {
            kw__conn_fail(srv, c, 400, "Malformed chunked body.");
            return;
        }
        if (rc == KW__CHUNK_DONE) {
            consume(c, off);
            if (!rq->body.ptr)
                kw_buf_puts(&rq->body, ""); /* an empty body is still NUL-terminated */
            body_done(srv, c);
            return;
        }
    }
    consume(c, off);
}

/* A complete head of hlen bytes is at the start of rbuf: parse, route, decide. */
static void start_request(kw_http_server_t *srv, kw__conn_t *c, size_t hlen)
{
    kw__rq_t *rq = kw__rq_new(srv);
    if (!rq) {
        kw__conn_close(srv, c);
        return;
    }
    c->rq = rq;
    rq->t0_ns = kw_http_now_ns();
    char *buf = kw_arena_alloc(rq->req.arena, hlen + 1);
    if (!buf) {
        kw__conn_fail(srv, c, 500, "Internal Server Error");
        return;
    }
    memcpy(buf, c->rbuf, hlen);
    buf[hlen] = '\0';
    consume(c, hlen);
    const char *msg = NULL;
    int st = kw__http_parse_head(buf, hlen, &rq->head, &msg);
    rq->req.method = rq->head.method;
    rq->req.path = rq->head.path;
    kw__rq_request_id(rq);
    if (st) {
        kw__conn_fail(srv, c, st, msg);
        return;
    }
    rq->has_body = rq->head.chunked || (rq->head.has_length && rq->head.length > 0);
    rq->keep_alive = rq->head.keep_alive;
    kw__match_t *m = &rq->match;
    kw__router_match(&srv->router, rq->req.method, rq->req.path, m);
    int rst = 0;
    if (m->kind == KW__MATCH_NOT_FOUND) {
        rst = 404;
    } else {
        rq->label = m->route->label;
        rq->req.route = kw_str_c(m->route->def->pattern);
        rq->req.route_flags = m->route->def->flags;
        if (m->kind == KW__MATCH_BAD_METHOD)
            rst = 405;
        else if (!kw__router_decode_params(m, &rq->req))
            rst = 404;
    }
    if (rst) {
        if (rst == 404)
            rq->label = srv->router.n_labels - 1;
        /* Without a body the connection stays usable; with one, the body stays unread
         * and the connection closes after the answer. */
        if (rq->has_body)
            rq->keep_alive = false;
        kw__rq_error(rq, rst, rst == 404 ? "Not Found" : "Method Not Allowed");
        kw__rq_finish(rq);
        conn_answer(srv, c, rq);
        return;
    }
    rq->bq.active = rq->has_body && (m->route->def->flags & KW_HTTP_ROUTE_STREAM_BODY);
    if (rq->head.length_overflow ||
        rq->head.length > (rq->bq.active ? KW_MAX_STREAM_BODY_BYTES : KW_MAX_BODY_BYTES)) {
        kw__conn_fail(srv, c, 413, "Request body too large");
        return;
    }
    if (!rq->has_body) {
        dispatch(srv, c, KW__JOB_RUN);
        return;
    }
    if (srv->cfg.on_headers) {
        dispatch(srv, c, KW__JOB_HEADERS);
        return;
    }
    rq->headers_run = true;
    begin_body(srv, c);
}

/* Processes what rbuf holds as far as the state allows. */
void kw__conn_advance(kw_http_server_t *srv, kw__conn_t *c)
{
    if (c->fd < 0)
        return;
    if (c->state == KW__C_IDLE) {
        /* RFC 9112 2.2: empty lines before a request line are ignored. */
        size_t skip = 0;
        while (skip < c->rlen && (c->rbuf[skip] == '\r' || c->rbuf[skip] == '\n'))
            skip++;
        if (skip)
            consume(c, skip);
        if (c->rlen == 0)
            return;
        if (atomic_load_explicit(&srv->stopping, memory_order_relaxed)) {
            kw__conn_close(srv, c);
            return;
        }
        /* The first request's head is due header_timeout_s after accept, a later one's
         * after its first byte. */
        c->state = KW__C_HEAD;
        uint64_t from = c->answered ? kw_http_now_ns() : c->accepted_ns;
        set_deadline(c, from + (uint64_t)srv->cfg.header_timeout_s * KW__NS, KW__EXPIRE_HEADERS);
    }
    if (c->state == KW__C_HEAD) {
        if (c->rlen)
            c->got_bytes = true;
        size_t hlen = kw__http_head_end(c->rbuf, c->rlen, &c->scan);
        if (hlen > KW_MAX_HEADER_BYTES || (!hlen && c->rlen >= KW_MAX_HEADER_BYTES)) {
            kw__conn_fail(srv, c, 431, "Request Header Fields Too Large");
            return;
        }
        if (hlen)
            start_request(srv, c, hlen);
        return;
    }
    if (c->state == KW__C_BODY && c->rlen)
        read_body(srv, c);
    else if (c->state == KW__C_BUSY && c->body_streaming && !c->body_paused && c->rlen)
        body_feed(srv, c);
}

/* Reads until EAGAIN (edge-triggered) or until the buffer may not grow, processing as it
 * goes. Only in states that read. */
void kw__conn_read(kw_http_server_t *srv, kw__conn_t *c)
{
    while (c->fd >= 0) {
        if (c->state == KW__C_LINGER) {
            char scratch[16384];
            ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            kw__conn_close(srv, c);
            return;
        }
        bool body = c->state == KW__C_BUSY && c->body_streaming && !c->body_paused;
        if (c->state != KW__C_HEAD && c->state != KW__C_BODY && c->state != KW__C_IDLE && !body) {
            c->rd_more = true;
            return;
        }
        if (c->rlen == c->rcap) {
            if (c->rcap >= KW__RBUF_MAX) {
                c->rd_more = true;
                return; /* full: kw__conn_advance failed it (431) or will consume it */
            }
            size_t ncap = c->rcap ? c->rcap * 2 : KW__RBUF_INIT;
            if (ncap > KW__RBUF_MAX)
                ncap = KW__RBUF_MAX;
            char *nb = kw_realloc(c->rbuf, ncap);
            if (!nb) {
                kw__conn_close(srv, c);
                return;
            }
            c->rbuf = nb;
            c->rcap = ncap;
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->rd_more = false;
            return;
        }
        if (n <= 0) {
            /* EOF or error: nothing more will come; an unfinished request is dropped. */
            kw__conn_close(srv, c);
            return;
        }
        c->rlen += (size_t)n;
        kw__conn_advance(srv, c);
    }
}

void kw__conn_event(kw_http_server_t *srv, kw__conn_t *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (ev & EPOLLOUT) {
        if (c->out.len && !conn_flush(srv, c))
            return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (c->state == KW__C_BUSY && c->body_streaming) {
            /* Reading the body while the handler runs (a hang-up is seen by the read). */
            c->rd_more = true;
            if (!c->body_paused)
                kw__conn_read(srv, c);
            return;
        }
        if (c->state == KW__C_BUSY || c->state == KW__C_WRITE) {
            /* Not reading now (requests on a connection go in order). A hang-up is
             * noticed when the answer is written or the next read sees EOF; a handler
             * on a worker learns of it at once (kw_http_stream_cancelled), as a Go
             * server cancels the request's context when its client goes away. */
            c->rd_more = true;
            if (c->state == KW__C_BUSY && c->rq && (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                kw__stream_close(c->rq);
            if (ev & (EPOLLHUP | EPOLLERR))
                kw__conn_close(srv, c);
            return;
        }
        kw__conn_read(srv, c);
    }
}

/* A request's job finished (here, or on a worker for a parked one). */
void kw__conn_done(kw_http_server_t *srv, kw__rq_t *rq)
{
    kw__conn_t *c = rq->conn;
    body_stop(c);    /* a streamed body is not read past the answer */
    if (c->fd < 0) { /* a zombie: the client went away meanwhile */
        c->state = KW__C_IDLE;
        c->rq = NULL;
        kw__rq_free(rq);
        ready_push(srv, c);
        return;
    }
    if (rq->done == KW__DONE_BODY) {
        begin_body(srv, c);
        if (c->fd >= 0 && c->state == KW__C_BODY)
            ready_push(srv, c); /* read what the client sent meanwhile */
    } else {
        conn_answer(srv, c, rq);
    }
}

/* The worker queued stream bytes for c (rq is with the worker: c is BUSY). */
void kw__conn_stream(kw_http_server_t *srv, kw__rq_t *rq)
{
    kw__conn_t *c = rq->conn;
    kw__stream_t *st = rq->st;
    pthread_mutex_lock(&st->mu);
    st->notified = false;
    if (c->fd < 0) {
        st->closed = true;
        atomic_store(&st->cancelled, true);
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
        return;
    }
    if (c->woff == c->out.len && st->q.len > st->q_off && !st->q.failed) {
        /* everything before went out: the queue's buffer becomes out (no copy) */
        kw_buf_t old = c->out;
        c->out = st->q;
        c->woff = st->q_off;
        old.len = 0;
        st->q = old;
    } else {
        if (c->woff) { /* keep only what is unsent, so out stays bounded */
            memmove(c->out.ptr, c->out.ptr + c->woff, c->out.len - c->woff);
            c->out.len -= c->woff;
            c->woff = 0;
        }
        if (st->q.len > st->q_off)
            kw_buf_append(&c->out, st->q.ptr + st->q_off, st->q.len - st->q_off);
        if (st->q.failed)
            c->out.failed = true;
        st->q.len = 0;
    }
    st->q_off = 0;
    pthread_mutex_unlock(&st->mu);
    if (c->out.failed) {
        kw__conn_close(srv, c);
        return;
    }
    if (!c->streaming) {
        c->streaming = true;
        set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * KW__NS,
                     KW__EXPIRE_WRITE);
    }
    conn_flush(srv, c);
}
