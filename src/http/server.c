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
 *          A route with KW_HTTP_ROUTE_STREAM_BODY skips BODY: once on_headers said yes its
 *          handler runs on a pool worker (BUSY) while the loop goes on reading the body
 *          into the request's queue (c->body_streaming), pausing while the queue is full
 *          (backpressure), with a progress deadline instead of the absolute one (http.h).
 *   WRITE  sending the answer. Deadline: body_timeout_s, or close.
 *   IDLE   keep-alive between requests: conn_timeout_s, then close.
 *   LINGER after an answer that closes the connection with request bytes possibly unread
 *          (an early 4xx): shutdown(SHUT_WR), read and discard for at most 2 s, close;
 *          closing at once would reset the connection and could destroy the answer.
 * Deadlines are checked by a sweep every KW__SWEEP_NS over all connections.
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
 * Files: this one has the loops, accept, the deadline sweep, stop and the lifecycle;
 * conn.c one connection's state machine; pool.c the request object and parked requests.
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
    bool was_empty = lp->done_head == NULL && lp->stream_head == NULL && lp->body_head == NULL;
    if (lp->done_tail)
        lp->done_tail->next = rq;
    else
        lp->done_head = rq;
    lp->done_tail = rq;
    pthread_mutex_unlock(&lp->done_mu);
    if (was_empty)
        loop_notify(lp);
}

void kw__loop_stream(kw__rq_t *rq)
{
    loop_t *lp = rq->loop;
    pthread_mutex_lock(&lp->done_mu);
    bool was_empty = lp->done_head == NULL && lp->stream_head == NULL && lp->body_head == NULL;
    rq->stream_next = lp->stream_head;
    lp->stream_head = rq;
    pthread_mutex_unlock(&lp->done_mu);
    if (was_empty)
        loop_notify(lp);
}

void kw__loop_body(kw__rq_t *rq)
{
    loop_t *lp = rq->loop;
    pthread_mutex_lock(&lp->done_mu);
    bool was_empty = lp->done_head == NULL && lp->stream_head == NULL && lp->body_head == NULL;
    rq->body_next = lp->body_head;
    lp->body_head = rq;
    pthread_mutex_unlock(&lp->done_mu);
    if (was_empty)
        loop_notify(lp);
}

/* All lists at once: a request's stream and body entries are always taken no later than
 * its done entry (the worker queues them first), so they are handled before answers. */
static kw__rq_t *take_done(loop_t *lp, kw__rq_t **streams, kw__rq_t **bodies)
{
    pthread_mutex_lock(&lp->done_mu);
    kw__rq_t *l = lp->done_head;
    lp->done_head = lp->done_tail = NULL;
    if (streams)
        *streams = lp->stream_head;
    lp->stream_head = NULL;
    if (bodies)
        *bodies = lp->body_head;
    lp->body_head = NULL;
    pthread_mutex_unlock(&lp->done_mu);
    return l;
}

/* ---- per-address counts ---- */

static kw__addr_slot_t *addr_acquire(kw_http_server_t *srv, const struct sockaddr_storage *ss,
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
    kw__addr_slot_t **b = &((kw__addr_slot_t **)srv->addrs)[h & (KW__ADDR_BUCKETS - 1)], *s;
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

void kw__addr_release(kw_http_server_t *srv, kw__addr_slot_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&srv->addr_mu);
    if (--s->count == 0) {
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < sizeof(s->key); i++)
            h = (h ^ s->key[i]) * 1099511628211ull;
        for (kw__addr_slot_t **pp = &((kw__addr_slot_t **)srv->addrs)[h & (KW__ADDR_BUCKETS - 1)];
             *pp; pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                kw_free(s);
                break;
            }
        }
    }
    pthread_mutex_unlock(&srv->addr_mu);
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
        kw__addr_slot_t *as = addr_acquire(srv, &ss, srv->cfg.conn_per_addr, &over);
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
            kw__addr_release(srv, as);
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
            kw__addr_release(srv, as);
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
         * kw__conn_advance then sets the head's deadline (from accept). */
        c->accepted_ns = kw_http_now_ns();
        kw__conn_to_idle(srv, c);
        uint64_t ht = c->accepted_ns + (uint64_t)srv->cfg.header_timeout_s * KW__NS;
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
    kw__rq_t *streams = NULL, *bodies = NULL;
    kw__rq_t *l = take_done(lp, &streams, &bodies);
    while (streams) {
        kw__rq_t *rq = streams;
        streams = rq->stream_next;
        kw__conn_stream(srv, rq);
    }
    while (bodies) {
        kw__rq_t *rq = bodies;
        bodies = rq->body_next;
        kw__conn_body_resume(srv, rq);
    }
    while (l) {
        kw__rq_t *rq = l;
        l = rq->next;
        kw__conn_done(srv, rq);
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
        if (c->fd >= 0 && c->state == KW__C_BUSY && c->streaming && now >= c->deadline &&
            c->woff < c->out.len) {
            /* A streamed answer the client has not read for body_timeout_s: cut off. */
            atomic_fetch_add_explicit(&srv->metrics.expired[KW__EXPIRE_WRITE], 1,
                                      memory_order_relaxed);
            kw__conn_close(srv, c);
            continue;
        }
        if (c->fd >= 0 && c->state == KW__C_BUSY && c->body_streaming && !c->body_paused &&
            now >= c->deadline) {
            /* A streamed body that stopped making progress (the handler answers 408). */
            atomic_fetch_add_explicit(&srv->metrics.expired[KW__EXPIRE_BODY], 1,
                                      memory_order_relaxed);
            kw__conn_body_expire(srv, c);
            continue;
        }
        if (c->fd < 0 || c->state == KW__C_BUSY || now < c->deadline)
            continue;
        if (c->expire_kind >= 0 && (c->state != KW__C_HEAD || c->got_bytes))
            atomic_fetch_add_explicit(&srv->metrics.expired[c->expire_kind], 1,
                                      memory_order_relaxed);
        if ((c->state == KW__C_HEAD && c->got_bytes) || c->state == KW__C_BODY) {
            /* 408 when possible: written if the socket takes it, then linger. */
            c->deadline = UINT64_MAX;
            kw__conn_fail(srv, c, 408, "Request Timeout");
            continue;
        }
        kw__conn_close(srv, c);
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
        if (c->state == KW__C_BUSY || c->state == KW__C_WRITE || c->state == KW__C_BODY)
            c->close_after = true;
        else
            kw__conn_close(srv, c);
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
            if (c->state != KW__C_BUSY) {
                kw__rq_free(c->rq);
                c->rq = NULL;
                if (lp->in_batch) {     /* freed after the batch (loop_t.dead) */
                    c->in_ready = true; /* never queued again meanwhile */
                    c->ready_next = lp->dead;
                    lp->dead = c;
                } else {
                    kw__conn_free(lp, c);
                }
            }
            continue;
        }
        bool body = c->state == KW__C_BUSY && c->body_streaming && !c->body_paused;
        if (c->state == KW__C_IDLE || c->state == KW__C_HEAD || c->state == KW__C_BODY || body)
            kw__conn_advance(srv, c);
        body = c->state == KW__C_BUSY && c->body_streaming && !c->body_paused;
        /* Edge-triggered: read only if bytes may be waiting (saves a recv per request). */
        if (c->fd >= 0 && (c->rd_more || c->state == KW__C_LINGER) &&
            (c->state == KW__C_IDLE || c->state == KW__C_HEAD || c->state == KW__C_BODY ||
             c->state == KW__C_LINGER || body))
            kw__conn_read(srv, c);
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
        int timeout = (int)(KW__SWEEP_NS / 1000000ull);
        int n = epoll_wait(lp->epoll_fd, evs, (int)KW_ARRAY_LEN(evs), timeout);
        if (n < 0 && errno != EINTR) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "epoll_wait: %s", strerror(errno));
            break;
        }
        lp->in_batch = true;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tag_listen)
                on_accept(lp);
            else if (p == &tag_event)
                on_done(lp);
            else
                kw__conn_event(srv, p, evs[i].events);
            process_ready(lp);
        }
        lp->in_batch = false;
        for (kw__conn_t *c; (c = lp->dead) != NULL;) {
            lp->dead = c->ready_next;
            kw__conn_free(lp, c);
        }
        process_ready(lp);
        uint64_t now = kw_http_now_ns();
        if (now - lp->last_sweep >= KW__SWEEP_NS) {
            lp->last_sweep = now;
            sweep(lp, now);
        }
    }
    /* Whatever is left: close the sockets; requests still in the pool make zombies. */
    for (kw__conn_t *c = lp->head.next, *nx; c != &lp->head; c = nx) {
        nx = c->next;
        kw__conn_close(srv, c);
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
    kw__rq_t *streams = NULL, *bodies = NULL; /* dropped: those requests come back through
                                               * the done list */
    kw__rq_t *l = take_done(lp, &streams, &bodies);
    while (l) {
        kw__rq_t *rq = l;
        l = rq->next;
        kw__conn_t *c = rq->conn;
        kw__rq_free(rq);
        if (c) {
            c->state = KW__C_IDLE;
            c->rq = NULL;
            kw__conn_free(lp, c);
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
        ts.tv_sec += (time_t)(ns / KW__NS);
        ts.tv_nsec = (long)(ns % KW__NS);
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
    srv->addrs = kw_calloc(KW__ADDR_BUCKETS, sizeof(kw__addr_slot_t *));
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
    uint64_t deadline = kw_http_now_ns() + (uint64_t)srv->cfg.drain_timeout_s * KW__NS;
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
    kw__addr_slot_t **addrs = srv->addrs;
    for (size_t i = 0; i < KW__ADDR_BUCKETS; i++) {
        while (addrs[i]) {
            kw__addr_slot_t *s = addrs[i];
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
