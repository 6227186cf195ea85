/*
 * http/server.c - keyward's HTTP/1.1 server: cfg.threads event loops (one thread and one
 * epoll set each, edge-triggered, non-blocking sockets) sharing one listen socket
 * (EPOLLEXCLUSIVE). A loop accepts, reads, parses, runs on_headers and the handler of a
 * complete request itself, and writes the answer. Parked requests (kw_http_req_park) go
 * to the pool (pool.c), which re-runs them on a worker when woken or at their deadline
 * and hands the answer back to the loop (done queue + eventfd).
 *
 * Why handlers run on the loops and not on a separate worker pool: that hand-over (loop
 * -> worker -> loop, two context switches and an eventfd per request) was measured at
 * ~19 us of CPU per request on the 2-core test VM, 50% on top of the whole authenticated
 * GET (docs/BENCHMARKS.md, "HTTP server"). A handler that blocks (a write waiting for its
 * group commit, a read for the database) holds its loop and that loop's other
 * connections, as a thread-per-connection-set server does; waits that can be long
 * (revision waits, issue 9 item 3) park instead and free the loop. A loop stuck in a
 * handler does not stop the others: each has its own connections and deadlines.
 *
 * Why our own: the hostile-network rules of issue 9 need absolute deadlines, JSON error
 * bodies for everything the server says itself, authentication before the body is read,
 * a global bound on body memory and requests that wait without holding a thread.
 *
 * One connection (kw__conn_t, loop-owned) goes through these states:
 *   HEAD   reading the request line + headers. Deadline: header_timeout_s, ABSOLUTE,
 *          from accept (first request) or from the request's first byte (later ones).
 *          Bytes trickling in never move it. Expiry: 408 (if a byte came), close.
 *   BUSY   on_headers runs (JOB_HEADERS, for requests with a body, so a 401 goes out
 *          before any body byte is read) or the handler (JOB_RUN), or the request is
 *          parked. The loop reads nothing from that socket meanwhile (pipelined requests
 *          wait in the kernel), so requests on one connection are answered in order.
 *   BODY   reading the body (Content-Length or chunked, <= KW_MAX_BODY_BYTES, 413). Its
 *          bytes are charged against the global body_budget first (Content-Length: all
 *          at once; chunked: as they come): over it -> 503, close. Deadline:
 *          body_timeout_s from the end of the headers, absolute. `Expect: 100-continue`
 *          gets its 100 when reading starts (after on_headers said yes).
 *   WRITE  sending the answer. Deadline: body_timeout_s, or close.
 *   IDLE   keep-alive between requests: conn_timeout_s, then close.
 *   LINGER after an answer that closes the connection with request bytes possibly unread
 *          (an early 4xx): shutdown(SHUT_WR), read and discard for at most 2 s, close;
 *          closing at once would reset the connection and could destroy the answer.
 * Deadlines are checked by a sweep every SWEEP_NS over all connections.
 *
 * Every error the server produces (400, 404, 405, 408, 413, 417, 431, 501, 503, 505) is
 * shaped by cfg.error_fn (JSON), never HTML. A parse error, a 408/413/503 and any early
 * answer to a request with an unread body close the connection.
 *
 * Limits at accept: conn_limit open connections and conn_per_addr per client address;
 * past either the new connection is closed at once and counted.
 *
 * Threads and hand-over: each loop owns its kw__conn_t's. A parked kw__rq_t is with the
 * pool and comes back through its loop's done queue + eventfd. A connection that dies
 * while its request is parked becomes a zombie (fd closed, struct kept) until the
 * request comes back. Stop: the listen socket is shut, srv->stopping + each loop's
 * eventfd; a loop closes every connection without a request in flight, lets in-flight
 * ones finish (answer sent with Connection: close) until the drain deadline, then exits;
 * kw_http_server_stop joins the loops and drains the pool, both bounded by the deadline.
 *
 * Never logged: headers, bodies, query strings, raw paths (a path may carry a key name).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "http_int.h"

#define KW_MODULE "http"

#define NS 1000000000ull
#define SWEEP_NS (50ull * 1000000ull)
#define LINGER_NS (2ull * NS)
#define RBUF_INIT 4096u
#define RBUF_MAX (KW_MAX_HEADER_BYTES + 16384u)
#define ADDR_BUCKETS 1024u

enum { C_HEAD = 1, C_BUSY, C_BODY, C_WRITE, C_IDLE, C_LINGER };

struct kw__conn {
    kw__conn_t *prev, *next;
    struct kw__loop *lp; /* the loop that owns it (fixed at accept) */
    int fd;
    int state;
    bool in_ready; /* on loop_t.ready */
    kw__conn_t *ready_next;
    bool got_bytes; /* some byte of the current request arrived */
    bool answered;  /* a request was answered on this connection */
    bool rd_more;   /* the socket may hold unread bytes (no EAGAIN seen since) */
    uint64_t accepted_ns;
    bool close_after; /* close (linger) once out is sent */
    char *rbuf;
    size_t rlen, rcap, scan;
    kw_buf_t out;
    size_t woff;
    uint64_t deadline;
    int expire_kind; /* KW__EXPIRE_* counted when the deadline passes, -1: none */
    kw__rq_t *rq;    /* the request being read or in the pool */
    uint64_t body_left;
    kw__chunked_t ch;
    struct addr_slot *addr;
};

/* Open connections per client address: a chained hash table, under srv->addr_mu. */
typedef struct addr_slot {
    struct addr_slot *next;
    unsigned char key[17]; /* family byte + up to 16 address bytes */
    unsigned count;
} addr_slot_t;

struct kw__loop {
    kw_http_server_t *srv;
    int epoll_fd, event_fd;
    pthread_t thread;
    bool joined;
    /* answered requests coming back from the pool (done_mu; a leaf lock) */
    pthread_mutex_t done_mu;
    kw__rq_t *done_head, *done_tail;
    /* everything below: this loop's thread only */
    kw__conn_t head; /* sentinel of the list of connections */
    size_t n_conns;
    uint64_t last_sweep;
    bool listening;   /* the listen fd is in the epoll set */
    bool drain_begun; /* stop was seen */
    uint64_t drain_deadline;
    /* Connections to look at again from the top of the loop (never from deep inside a
     * call chain, so nothing is freed under a caller and pipelined requests do not
     * recurse): a finished answer (read the next request), a closed socket (free). */
    kw__conn_t *ready;
};
typedef struct kw__loop loop_t;

static char tag_listen, tag_event; /* epoll tags */

static void loop_notify(loop_t *lp)
{
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(lp->event_fd, &one, sizeof(one));
    while (n < 0 && errno == EINTR);
}

void kw__loop_done(kw__rq_t *rq)
{
    loop_t *lp = rq->loop;
    rq->next = NULL;
    pthread_mutex_lock(&lp->done_mu);
    bool was_empty = lp->done_head == NULL;
    if (lp->done_tail)
        lp->done_tail->next = rq;
    else
        lp->done_head = rq;
    lp->done_tail = rq;
    pthread_mutex_unlock(&lp->done_mu);
    if (was_empty)
        loop_notify(lp);
}

static kw__rq_t *take_done(loop_t *lp)
{
    pthread_mutex_lock(&lp->done_mu);
    kw__rq_t *l = lp->done_head;
    lp->done_head = lp->done_tail = NULL;
    pthread_mutex_unlock(&lp->done_mu);
    return l;
}

/* ---- per-address counts ---- */

static addr_slot_t *addr_acquire(kw_http_server_t *srv, const struct sockaddr_storage *ss,
                                 unsigned cap, bool *over)
{
    unsigned char key[17] = {0};
    if (ss->ss_family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    } else {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(key); i++)
        h = (h ^ key[i]) * 1099511628211ull;
    pthread_mutex_lock(&srv->addr_mu);
    addr_slot_t **b = &((addr_slot_t **)srv->addrs)[h & (ADDR_BUCKETS - 1)], *s;
    for (s = *b; s; s = s->next)
        if (memcmp(s->key, key, sizeof(key)) == 0)
            break;
    *over = false;
    if (s && s->count >= cap) {
        *over = true;
        s = NULL;
    } else if (!s && (s = kw_calloc(1, sizeof(*s))) != NULL) {
        memcpy(s->key, key, sizeof(key));
        s->next = *b;
        *b = s;
    }
    if (s)
        s->count++;
    pthread_mutex_unlock(&srv->addr_mu);
    return s;
}

static void addr_release(kw_http_server_t *srv, addr_slot_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&srv->addr_mu);
    if (--s->count == 0) {
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < sizeof(s->key); i++)
            h = (h ^ s->key[i]) * 1099511628211ull;
        for (addr_slot_t **pp = &((addr_slot_t **)srv->addrs)[h & (ADDR_BUCKETS - 1)]; *pp;
             pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                kw_free(s);
                break;
            }
        }
    }
    pthread_mutex_unlock(&srv->addr_mu);
}

/* ---- connections ---- */

static void set_deadline(kw__conn_t *c, uint64_t at, int kind)
{
    c->deadline = at;
    c->expire_kind = kind;
}

static void conn_free(loop_t *lp, kw__conn_t *c)
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
static void conn_close(kw_http_server_t *srv, kw__conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
        addr_release(srv, c->addr);
        c->addr = NULL;
        atomic_fetch_sub_explicit(&srv->metrics.open_conns, 1, memory_order_relaxed);
    }
    if (c->state != C_BUSY)
        ready_push(srv, c);
}

static void conn_advance(kw_http_server_t *srv, kw__conn_t *c);
static void conn_read(kw_http_server_t *srv, kw__conn_t *c);

static void to_idle(kw_http_server_t *srv, kw__conn_t *c)
{
    c->state = C_IDLE;
    c->got_bytes = false;
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.conn_timeout_s * NS, -1);
}

static void to_linger(kw_http_server_t *srv, kw__conn_t *c)
{
    if (atomic_load_explicit(&srv->stopping, memory_order_relaxed)) {
        conn_close(srv, c); /* draining: no time to linger */
        return;
    }
    c->state = C_LINGER;
    c->rlen = 0;
    shutdown(c->fd, SHUT_WR);
    set_deadline(c, kw_http_now_ns() + LINGER_NS, -1);
    ready_push(srv, c);
}

/* Writes what is pending. On completion: WRITE goes on to the next request or to linger;
 * other states (a 100 Continue during BODY) just carry on. false: the conn was closed. */
static bool conn_flush(kw_http_server_t *srv, kw__conn_t *c)
{
    while (c->woff < c->out.len) {
        ssize_t n = send(c->fd, c->out.ptr + c->woff, c->out.len - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true; /* EPOLLOUT brings us back */
        conn_close(srv, c);
        return false;
    }
    c->out.len = 0;
    c->woff = 0;
    if (c->out.ptr && c->out.cap > 65536) { /* do not keep a big answer's buffer */
        kw_buf_free(&c->out);
        kw_buf_init(&c->out);
    }
    if (c->state != C_WRITE)
        return true;
    if (c->close_after) {
        to_linger(srv, c);
        return c->fd >= 0;
    }
    to_idle(srv, c);
    ready_push(srv, c); /* the next request may be buffered already */
    return true;
}

/* Takes rq's serialized answer and starts sending it. */
static void conn_answer(kw_http_server_t *srv, kw__conn_t *c, kw__rq_t *rq)
{
    if (rq->close_after)
        c->close_after = true;
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
    if (c->out.failed || c->out.len == 0) {
        conn_close(srv, c);
        return;
    }
    c->state = C_WRITE;
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * NS, KW__EXPIRE_WRITE);
    conn_flush(srv, c);
}

/* A server-made error for the request being read; always closes afterwards. */
static void conn_fail(kw_http_server_t *srv, kw__conn_t *c, int status, const char *msg)
{
    kw__rq_t *rq = c->rq;
    if (!rq) {
        rq = kw__rq_new(srv);
        if (!rq) {
            conn_close(srv, c);
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

static void handle_done(kw_http_server_t *srv, kw__rq_t *rq);

/* Runs the request's job right here on the loop thread (see the file comment); a parked
 * request stays BUSY until the pool brings it back. */
static void dispatch(kw_http_server_t *srv, kw__conn_t *c, int job)
{
    kw__rq_t *rq = c->rq;
    c->state = C_BUSY;
    rq->job = job;
    rq->conn = c;
    rq->loop = c->lp;
    if (kw__rq_run(rq))
        handle_done(srv, rq);
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

/* on_headers said yes (or there is none): start reading the body. */
static void begin_body(kw_http_server_t *srv, kw__conn_t *c)
{
    kw__rq_t *rq = c->rq;
    c->state = C_BODY;
    set_deadline(c, kw_http_now_ns() + (uint64_t)srv->cfg.body_timeout_s * NS, KW__EXPIRE_BODY);
    if (rq->head.chunked) {
        memset(&c->ch, 0, sizeof(c->ch));
    } else {
        c->body_left = rq->head.length;
        if (!budget_take(srv, rq, (size_t)rq->head.length)) {
            conn_fail(srv, c, 503, "Service Unavailable");
            return;
        }
        if (!body_reserve(&rq->body, (size_t)rq->head.length)) {
            conn_fail(srv, c, 500, "Internal Server Error");
            return;
        }
    }
    if (rq->head.expect_continue && c->rlen == 0) {
        kw_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        if (!conn_flush(srv, c))
            return;
    }
    conn_advance(srv, c);
}

/* Appends body bytes, enforcing the cap and (chunked) the budget. false: answered. */
static bool body_add(kw_http_server_t *srv, kw__conn_t *c, const char *p, size_t n)
{
    kw__rq_t *rq = c->rq;
    if (n > KW_MAX_BODY_BYTES - rq->body.len) {
        conn_fail(srv, c, 413, "Request body too large");
        return false;
    }
    if (rq->head.chunked && !budget_take(srv, rq, n)) {
        conn_fail(srv, c, 503, "Service Unavailable");
        return false;
    }
    kw_buf_append(&rq->body, p, n);
    if (rq->body.failed) {
        conn_fail(srv, c, 500, "Internal Server Error");
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
            conn_fail(srv, c, 400, "Malformed chunked body.");
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
        conn_close(srv, c);
        return;
    }
    c->rq = rq;
    rq->t0_ns = kw_http_now_ns();
    char *buf = kw_arena_alloc(rq->req.arena, hlen + 1);
    if (!buf) {
        conn_fail(srv, c, 500, "Internal Server Error");
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
        conn_fail(srv, c, st, msg);
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
    if (rq->head.length_overflow || rq->head.length > KW_MAX_BODY_BYTES) {
        conn_fail(srv, c, 413, "Request body too large");
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
static void conn_advance(kw_http_server_t *srv, kw__conn_t *c)
{
    if (c->fd < 0)
        return;
    if (c->state == C_IDLE) {
        /* RFC 9112 2.2: empty lines before a request line are ignored. */
        size_t skip = 0;
        while (skip < c->rlen && (c->rbuf[skip] == '\r' || c->rbuf[skip] == '\n'))
            skip++;
        if (skip)
            consume(c, skip);
        if (c->rlen == 0)
            return;
        if (atomic_load_explicit(&srv->stopping, memory_order_relaxed)) {
            conn_close(srv, c);
            return;
        }
        /* The first request's head is due header_timeout_s after accept, a later one's
         * after its first byte. */
        c->state = C_HEAD;
        uint64_t from = c->answered ? kw_http_now_ns() : c->accepted_ns;
        set_deadline(c, from + (uint64_t)srv->cfg.header_timeout_s * NS, KW__EXPIRE_HEADERS);
    }
    if (c->state == C_HEAD) {
        if (c->rlen)
            c->got_bytes = true;
        size_t hlen = kw__http_head_end(c->rbuf, c->rlen, &c->scan);
        if (hlen > KW_MAX_HEADER_BYTES || (!hlen && c->rlen >= KW_MAX_HEADER_BYTES)) {
            conn_fail(srv, c, 431, "Request Header Fields Too Large");
            return;
        }
        if (hlen)
            start_request(srv, c, hlen);
        return;
    }
    if (c->state == C_BODY && c->rlen)
        read_body(srv, c);
}

/* Reads until EAGAIN (edge-triggered) or until the buffer may not grow, processing as it
 * goes. Only in states that read. */
static void conn_read(kw_http_server_t *srv, kw__conn_t *c)
{
    while (c->fd >= 0) {
        if (c->state == C_LINGER) {
            char scratch[16384];
            ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            conn_close(srv, c);
            return;
        }
        if (c->state != C_HEAD && c->state != C_BODY && c->state != C_IDLE) {
            c->rd_more = true;
            return;
        }
        if (c->rlen == c->rcap) {
            if (c->rcap >= RBUF_MAX) {
                c->rd_more = true;
                return; /* full: conn_advance failed it (431) or will consume it */
            }
            size_t ncap = c->rcap ? c->rcap * 2 : RBUF_INIT;
            if (ncap > RBUF_MAX)
                ncap = RBUF_MAX;
            char *nb = kw_realloc(c->rbuf, ncap);
            if (!nb) {
                conn_close(srv, c);
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
            conn_close(srv, c);
            return;
        }
        c->rlen += (size_t)n;
        conn_advance(srv, c);
    }
}

static void on_conn_event(kw_http_server_t *srv, kw__conn_t *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (ev & EPOLLOUT) {
        if (c->out.len && !conn_flush(srv, c))
            return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (c->state == C_BUSY || c->state == C_WRITE) {
            /* Not reading now (requests on a connection go in order). A hang-up is
             * noticed when the answer is written or the next read sees EOF. */
            c->rd_more = true;
            if (ev & (EPOLLHUP | EPOLLERR))
                conn_close(srv, c);
            return;
        }
        conn_read(srv, c);
    }
}

/* ---- accept ---- */

static void on_accept(loop_t *lp)
{
    kw_http_server_t *srv = lp->srv;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop listening until the next sweep, or the
                 * level-triggered listen socket would spin. */
                kw_log(KW_LOG_WARN, KW_MODULE, "accept: %s", strerror(errno));
                epoll_ctl(lp->epoll_fd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
                lp->listening = false;
            }
            return;
        }
        if (atomic_fetch_add(&srv->n_conns, 1) >= srv->cfg.conn_limit) {
            atomic_fetch_sub(&srv->n_conns, 1);
            atomic_fetch_add_explicit(&srv->metrics.refused[KW__REFUSE_LIMIT], 1,
                                      memory_order_relaxed);
            close(fd);
            continue;
        }
        bool over = false;
        addr_slot_t *as = addr_acquire(srv, &ss, srv->cfg.conn_per_addr, &over);
        if (!as) {
            atomic_fetch_sub(&srv->n_conns, 1);
            if (over)
                atomic_fetch_add_explicit(&srv->metrics.refused[KW__REFUSE_PER_ADDR], 1,
                                          memory_order_relaxed);
            close(fd);
            continue;
        }
        kw__conn_t *c = kw_calloc(1, sizeof(*c));
        if (!c) {
            atomic_fetch_sub(&srv->n_conns, 1);
            addr_release(srv, as);
            close(fd);
            continue;
        }
        c->lp = lp;
        c->fd = fd;
        c->addr = as;
        kw_buf_init(&c->out);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(lp->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            atomic_fetch_sub(&srv->n_conns, 1);
            addr_release(srv, as);
            close(fd);
            kw_free(c);
            continue;
        }
        c->next = lp->head.next;
        c->prev = &lp->head;
        lp->head.next->prev = c;
        lp->head.next = c;
        lp->n_conns++;
        atomic_fetch_add_explicit(&srv->metrics.open_conns, 1, memory_order_relaxed);
        /* Idle until a byte comes, for at most the idle timeout and the header timeout;
         * conn_advance then sets the head's deadline (from accept). */
        c->accepted_ns = kw_http_now_ns();
        to_idle(srv, c);
        uint64_t ht = c->accepted_ns + (uint64_t)srv->cfg.header_timeout_s * NS;
        if (ht < c->deadline)
            c->deadline = ht;
    }
}

/* ---- answers coming back from the pool ---- */

static void on_done(loop_t *lp)
{
    kw_http_server_t *srv = lp->srv;
    uint64_t v;
    while (read(lp->event_fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    kw__rq_t *l = take_done(lp);
    while (l) {
        kw__rq_t *rq = l;
        l = rq->next;
        handle_done(srv, rq);
    }
}

/* A request's job finished (here, or on a worker for a parked one). */
static void handle_done(kw_http_server_t *srv, kw__rq_t *rq)
{
    kw__conn_t *c = rq->conn;
    if (c->fd < 0) { /* a zombie: the client went away meanwhile */
        c->state = C_IDLE;
        c->rq = NULL;
        kw__rq_free(rq);
        ready_push(srv, c);
        return;
    }
    if (rq->done == KW__DONE_BODY) {
        begin_body(srv, c);
        if (c->fd >= 0 && c->state == C_BODY)
            ready_push(srv, c); /* read what the client sent meanwhile */
    } else {
        conn_answer(srv, c, rq);
    }
}

/* ---- deadlines and stop ---- */

/* The shared listen socket in this loop's epoll set; EPOLLEXCLUSIVE wakes one loop (or
 * a few) per new connection instead of all of them. */
static bool listen_add(loop_t *lp)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &tag_listen};
    lp->listening = epoll_ctl(lp->epoll_fd, EPOLL_CTL_ADD, lp->srv->listen_fd, &ev) == 0;
    return lp->listening;
}

static void sweep(loop_t *lp, uint64_t now)
{
    kw_http_server_t *srv = lp->srv;
    if (!lp->listening && !lp->drain_begun)
        listen_add(lp);
    kw__pool_expire_parked(srv, now, false);
    for (kw__conn_t *c = lp->head.next, *nx; c != &lp->head; c = nx) {
        nx = c->next;
        if (c->fd < 0 || c->state == C_BUSY || now < c->deadline)
            continue;
        if (c->expire_kind >= 0 && (c->state != C_HEAD || c->got_bytes))
            atomic_fetch_add_explicit(&srv->metrics.expired[c->expire_kind], 1,
                                      memory_order_relaxed);
        if ((c->state == C_HEAD && c->got_bytes) || c->state == C_BODY) {
            /* 408 when possible: written if the socket takes it, then linger. */
            c->deadline = UINT64_MAX;
            conn_fail(srv, c, 408, "Request Timeout");
            continue;
        }
        conn_close(srv, c);
    }
}

static void begin_drain(loop_t *lp)
{
    kw_http_server_t *srv = lp->srv;
    lp->drain_begun = true;
    lp->drain_deadline = srv->drain_deadline;
    if (lp->listening)
        epoll_ctl(lp->epoll_fd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
    lp->listening = false;
    kw__pool_expire_parked(srv, 0, true);
    for (kw__conn_t *c = lp->head.next, *nx; c != &lp->head; c = nx) {
        nx = c->next;
        /* A request whose head arrived is in flight: its body is still read, it is
         * answered, then the connection closes. */
        if (c->state == C_BUSY || c->state == C_WRITE || c->state == C_BODY)
            c->close_after = true;
        else
            conn_close(srv, c);
    }
}

/* See loop_t.ready. */
static void process_ready(loop_t *lp)
{
    kw_http_server_t *srv = lp->srv;
    kw__conn_t *c;
    while ((c = lp->ready) != NULL) {
        lp->ready = c->ready_next;
        c->in_ready = false;
        if (c->fd < 0) {
            if (c->state != C_BUSY) {
                kw__rq_free(c->rq);
                conn_free(lp, c);
            }
            continue;
        }
        if (c->state == C_IDLE || c->state == C_HEAD || c->state == C_BODY)
            conn_advance(srv, c);
        /* Edge-triggered: read only if bytes may be waiting (saves a recv per request). */
        if (c->fd >= 0 && (c->rd_more || c->state == C_LINGER) &&
            (c->state == C_IDLE || c->state == C_HEAD || c->state == C_BODY ||
             c->state == C_LINGER))
            conn_read(srv, c);
    }
}

static void *loop_main(void *arg)
{
    loop_t *lp = arg;
    kw_http_server_t *srv = lp->srv;
    struct epoll_event evs[256];
    for (;;) {
        if (atomic_load(&srv->stopping)) {
            if (!lp->drain_begun)
                begin_drain(lp);
            process_ready(lp);
            if (lp->n_conns == 0 || kw_http_now_ns() >= lp->drain_deadline)
                break;
        }
        int timeout = (int)(SWEEP_NS / 1000000ull);
        int n = epoll_wait(lp->epoll_fd, evs, (int)KW_ARRAY_LEN(evs), timeout);
        if (n < 0 && errno != EINTR) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tag_listen)
                on_accept(lp);
            else if (p == &tag_event)
                on_done(lp);
            else
                on_conn_event(srv, p, evs[i].events);
            process_ready(lp);
        }
        process_ready(lp);
        uint64_t now = kw_http_now_ns();
        if (now - lp->last_sweep >= SWEEP_NS) {
            lp->last_sweep = now;
            sweep(lp, now);
        }
    }
    /* Whatever is left: close the sockets; requests still in the pool make zombies. */
    for (kw__conn_t *c = lp->head.next, *nx; c != &lp->head; c = nx) {
        nx = c->next;
        conn_close(srv, c);
    }
    process_ready(lp);
    return NULL;
}

/* ---- public API ---- */

void kw_http_server_metrics(kw_http_server_t *srv, kw_buf_t *out)
{
    kw__metrics_write(&srv->metrics, out);
    if (srv->cfg.metrics_fn)
        srv->cfg.metrics_fn(out, srv->cfg.ud);
}

/* Resolves host (numeric or a name) into a listening address with the given port. */
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *sl,
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
    *sl = res->ai_addrlen;
    if (res->ai_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    freeaddrinfo(res);
    return KW_OK;
}

/* A listening socket. SO_REUSEADDR (restart while old sockets sit in TIME_WAIT) but not
 * SO_REUSEPORT, which would let a second process silently share the port. */
static int open_listener(const char *host, uint16_t port, int *out, uint16_t *bound,
                         kw_diag_t *diag)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int rc = resolve(host, port, &ss, &sl, diag);
    if (rc != KW_OK)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return kw_diag_set(diag, KW_EIO, 0, 0, "cannot listen on %s:%u: %s", host, (unsigned)port,
                           strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        return kw_diag_set(diag, KW_EIO, 0, 0, "cannot listen on %s:%u: %s", host, (unsigned)port,
                           strerror(e));
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    if (getsockname(fd, (struct sockaddr *)&got, &gl) != 0) {
        close(fd);
        return kw_diag_set(diag, KW_EIO, 0, 0, "listening on %s but the port is unknown", host);
    }
    *bound = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                             : ((struct sockaddr_in *)&got)->sin_port);
    *out = fd;
    return KW_OK;
}

/* Connections are file descriptors: use all the hard limit allows. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            kw_log(KW_LOG_WARN, KW_MODULE, "cannot raise RLIMIT_NOFILE: %s", strerror(errno));
    }
}

static void fill_defaults(kw_http_config_t *c)
{
    if (c->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = n > 0 ? (unsigned)n : 1;
    }
    if (c->threads > 256)
        c->threads = 256;
    if (!c->conn_timeout_s)
        c->conn_timeout_s = KW_HTTP_DEFAULT_IDLE_S;
    if (!c->conn_limit)
        c->conn_limit = KW_HTTP_DEFAULT_CONN_LIMIT;
    if (!c->conn_per_addr)
        c->conn_per_addr = KW_HTTP_DEFAULT_CONN_PER_ADDR;
    if (!c->header_timeout_s)
        c->header_timeout_s = KW_HTTP_DEFAULT_HEADER_S;
    if (!c->body_timeout_s)
        c->body_timeout_s = KW_HTTP_DEFAULT_BODY_S;
    if (!c->drain_timeout_s)
        c->drain_timeout_s = KW_HTTP_DEFAULT_DRAIN_S;
    if (!c->body_budget)
        c->body_budget = KW_HTTP_DEFAULT_BODY_BUDGET;
    if (!c->host)
        c->host = "127.0.0.1";
}

static void loop_fini(loop_t *lp)
{
    /* Requests answered after the loop left: their connections are zombies now. */
    kw__rq_t *l = take_done(lp);
    while (l) {
        kw__rq_t *rq = l;
        l = rq->next;
        kw__conn_t *c = rq->conn;
        kw__rq_free(rq);
        if (c) {
            c->state = C_IDLE;
            c->rq = NULL;
            conn_free(lp, c);
        }
    }
    if (lp->event_fd >= 0)
        close(lp->event_fd);
    if (lp->epoll_fd >= 0)
        close(lp->epoll_fd);
    pthread_mutex_destroy(&lp->done_mu);
}

static int loop_init(loop_t *lp, kw_http_server_t *srv, kw_diag_t *diag)
{
    lp->srv = srv;
    lp->head.next = lp->head.prev = &lp->head;
    lp->epoll_fd = lp->event_fd = -1;
    if (pthread_mutex_init(&lp->done_mu, NULL) != 0)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory starting the HTTP server");
    lp->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    lp->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_event};
    if (lp->epoll_fd < 0 || lp->event_fd < 0 ||
        epoll_ctl(lp->epoll_fd, EPOLL_CTL_ADD, lp->event_fd, &ev) != 0 || !listen_add(lp)) {
        int rc =
            kw_diag_set(diag, KW_EIO, 0, 0, "cannot set up the event loop: %s", strerror(errno));
        loop_fini(lp);
        return rc;
    }
    return KW_OK;
}

/* Stops the loops [0, n) (the listen socket stops taking connections at once) and joins
 * them until deadline_ns (0: without a bound): false if one is still running (stuck in a
 * handler); a later call joins the rest. */
static bool loops_join(kw_http_server_t *srv, size_t n, uint64_t deadline_ns)
{
    atomic_store(&srv->stopping, true);
    shutdown(srv->listen_fd, SHUT_RD);
    for (size_t i = 0; i < n; i++)
        if (!srv->loops[i].joined)
            loop_notify(&srv->loops[i]);
    bool all = true;
    for (size_t i = 0; i < n; i++) {
        loop_t *lp = &srv->loops[i];
        if (lp->joined)
            continue;
        if (deadline_ns == 0) {
            pthread_join(lp->thread, NULL);
            lp->joined = true;
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t now = kw_http_now_ns(), wait = deadline_ns > now ? deadline_ns - now : 0;
        uint64_t ns = (uint64_t)ts.tv_nsec + wait;
        ts.tv_sec += (time_t)(ns / NS);
        ts.tv_nsec = (long)(ns % NS);
        if (pthread_timedjoin_np(lp->thread, NULL, &ts) == 0)
            lp->joined = true;
        else
            all = false;
    }
    return all;
}

int kw_http_server_start(const kw_http_config_t *cfg, kw_http_server_t **out, uint16_t *bound_port,
                         kw_diag_t *diag)
{
    int rc = KW_ENOMEM;
    raise_nofile();
    kw_http_server_t *srv = kw_calloc(1, sizeof(*srv));
    if (!srv)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory starting the HTTP server");
    srv->cfg = *cfg;
    fill_defaults(&srv->cfg);
    srv->listen_fd = -1;
    srv->n_loops = srv->cfg.threads;
    srv->loops = kw_calloc(srv->n_loops, sizeof(*srv->loops));
    srv->addrs = kw_calloc(ADDR_BUCKETS, sizeof(addr_slot_t *));
    if (!srv->loops || !srv->addrs) {
        kw_diag_set(diag, rc, 0, 0, "out of memory starting the HTTP server");
        goto fail_alloc;
    }
    rc = kw__router_init(&srv->router, cfg->routes, cfg->n_routes, diag);
    if (rc != KW_OK)
        goto fail_alloc;
    rc = kw__metrics_init(&srv->metrics, srv->router.labels, srv->router.n_labels);
    if (rc != KW_OK) {
        kw_diag_set(diag, rc, 0, 0, "out of memory starting the HTTP server");
        goto fail_metrics;
    }
    uint16_t port = 0;
    rc = open_listener(srv->cfg.host, srv->cfg.port, &srv->listen_fd, &port, diag);
    if (rc != KW_OK)
        goto fail_listen;
    rc = KW_ENOMEM;
    if (pthread_mutex_init(&srv->addr_mu, NULL) != 0)
        goto fail_addr_mu;
    if (pthread_mutex_init(&srv->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&srv->cv, NULL) != 0)
        goto fail_cv;
    if (pthread_cond_init(&srv->idle_cv, NULL) != 0)
        goto fail_idle_cv;
    rc = kw__pool_start(srv, diag);
    if (rc != KW_OK)
        goto fail_pool;
    size_t n_init = 0, n_run = 0;
    for (; n_init < srv->n_loops; n_init++) {
        rc = loop_init(&srv->loops[n_init], srv, diag);
        if (rc != KW_OK)
            goto fail_loops;
    }
    for (; n_run < srv->n_loops; n_run++) {
        int e = pthread_create(&srv->loops[n_run].thread, NULL, loop_main, &srv->loops[n_run]);
        if (e != 0) {
            rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "cannot start the HTTP loop: %s", strerror(e));
            goto fail_loops;
        }
    }
    if (bound_port)
        *bound_port = port;
    *out = srv;
    kw_log(KW_LOG_INFO, KW_MODULE, "listening on %s:%u (%zu loops, %u workers)", srv->cfg.host,
           (unsigned)port, srv->n_loops, srv->cfg.threads);
    return KW_OK;

fail_loops:
    loops_join(srv, n_run, 0);
    for (size_t i = 0; i < n_init; i++)
        loop_fini(&srv->loops[i]);
    kw__pool_stop(srv);
fail_pool:
    pthread_cond_destroy(&srv->idle_cv);
fail_idle_cv:
    pthread_cond_destroy(&srv->cv);
fail_cv:
    pthread_mutex_destroy(&srv->mu);
fail_mu:
    pthread_mutex_destroy(&srv->addr_mu);
fail_addr_mu:
    if (rc == KW_ENOMEM && diag && !diag->msg[0])
        kw_diag_set(diag, rc, 0, 0, "out of memory starting the HTTP server");
    close(srv->listen_fd);
fail_listen:
    kw__metrics_close(&srv->metrics);
fail_metrics:
    kw__router_close(&srv->router);
fail_alloc:
    kw_free(srv->addrs);
    kw_free(srv->loops);
    kw_free(srv);
    return rc;
}

int kw_http_server_stop(kw_http_server_t *srv)
{
    if (!srv)
        return KW_OK;
    uint64_t deadline = kw_http_now_ns() + (uint64_t)srv->cfg.drain_timeout_s * NS;
    if (!srv->loop_joined) {
        if (!srv->drain_deadline)
            srv->drain_deadline = deadline; /* published by the store of srv->stopping */
        if (!loops_join(srv, srv->n_loops, deadline)) {
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "stopping with a handler still running after %u s: leaving it behind",
                   srv->cfg.drain_timeout_s);
            return KW_ETIMEOUT;
        }
        srv->loop_joined = true;
        close(srv->listen_fd);
        srv->listen_fd = -1;
    }
    if (!kw__pool_drain(srv, deadline)) {
        kw_log(KW_LOG_WARN, KW_MODULE,
               "stopping with handlers still running after %u s: leaving them behind",
               srv->cfg.drain_timeout_s);
        return KW_ETIMEOUT;
    }
    kw__pool_stop(srv);
    for (size_t i = 0; i < srv->n_loops; i++)
        loop_fini(&srv->loops[i]);
    addr_slot_t **addrs = srv->addrs;
    for (size_t i = 0; i < ADDR_BUCKETS; i++) {
        while (addrs[i]) {
            addr_slot_t *s = addrs[i];
            addrs[i] = s->next;
            kw_free(s);
        }
    }
    pthread_cond_destroy(&srv->idle_cv);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    pthread_mutex_destroy(&srv->addr_mu);
    kw__metrics_close(&srv->metrics);
    kw__router_close(&srv->router);
    kw_free(srv->addrs);
    kw_free(srv->loops);
    kw_free(srv);
    return KW_OK;
}
