/*
 * http/http_int.h - internals shared by the files of the http module (router, metrics,
 * server). Nothing outside src/http includes this.
 *
 * Ownership: a kw__router_t owns its compiled route table and label list; the route
 *   definitions (method/pattern strings) it points into are borrowed from the caller's
 *   kw_http_config_t and must outlive the server (they are static tables in practice).
 *   A kw__metrics_t owns its counter arrays.
 *   A kw__rq_t (one request) is owned by the loop thread while it reads the request, by
 *   the pool while it is queued, parked or running, and by the loop again once answered;
 *   the hand-over is always through a queue under a mutex (server.c, pool.c).
 * Threads: the router is immutable after kw__router_init and is read by every worker.
 *   Metrics are updated with relaxed atomics from every worker and read by /metrics.
 *   Lock order: the pool's mu, each loop's done_mu and addr_mu are leaves, never held
 *   together; none is held while a handler runs or while a loop does I/O.
 */
#ifndef KW_HTTP_HTTP_INT_H
#define KW_HTTP_HTTP_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "base/limits.h"
#include "http.h"

/* Path segments a route template or a request path may have; longer paths are 404. */
#define KW__HTTP_MAX_SEGS 16

typedef struct kw__route {
    const kw_http_route_t *def;
    kw_str_t segs[KW__HTTP_MAX_SEGS]; /* literal text, or the param name for {param} */
    bool is_param[KW__HTTP_MAX_SEGS];
    size_t n_segs;
    bool rest; /* the last segment is {name...}: it takes the rest of the path (0+ segments) */
    size_t n_literals;
    size_t n_params;
    size_t label; /* index into kw__router_t.labels (one per distinct pattern) */
} kw__route_t;

typedef struct kw__router {
    kw__route_t *routes;
    size_t n_routes;
    const char **labels; /* distinct patterns; labels[n_labels - 1] is "unmatched" */
    size_t n_labels;
} kw__router_t;

/* Compiles the route table. KW_EINVAL (diag names the pattern) for a pattern that is not
 * absolute, has an empty or unterminated {param}, too many segments or params, or
 * duplicates another (method, pattern); KW_ENOMEM. */
KW_NODISCARD int kw__router_init(kw__router_t *r, const kw_http_route_t *routes, size_t n,
                                 kw_diag_t *diag);
void kw__router_close(kw__router_t *r);

typedef enum {
    KW__MATCH_OK = 0,
    KW__MATCH_NOT_FOUND,  /* no template matches the path (or the path is unacceptable) */
    KW__MATCH_BAD_METHOD, /* a template matches, not for this method */
} kw__match_kind_t;

typedef struct kw__match {
    kw__match_kind_t kind;
    const kw__route_t *route;                /* OK: the route; BAD_METHOD: the first path match */
    kw_str_t raw_params[KW_HTTP_MAX_PARAMS]; /* OK: still percent-encoded, into the path */
    size_t n_params;
    bool rest;      /* OK: the last raw param is a {name...} tail (kept raw, maybe empty) */
    char allow[96]; /* BAD_METHOD: "GET, DELETE" */
} kw__match_t;

/* Matches (method, raw path). Literal segments compare byte-exact against the raw path.
 * Among routes matching both, the one with the most literal segments wins, ties go to
 * table order. HEAD is served by a GET route. Paths that are not absolute, contain a
 * "." or ".." segment, an empty segment or too many segments do not match anything. */
void kw__router_match(const kw__router_t *r, kw_str_t method, kw_str_t path, kw__match_t *m);

/* Percent-decodes m->raw_params into req->params (arena memory). false if one fails to
 * decode, is empty, decodes to "." or "..", or contains a NUL byte. */
bool kw__router_decode_params(const kw__match_t *m, kw_http_req_t *req);

/* ---- parse.c: the request parser ---- */

typedef struct kw__http_hdr {
    const char *name, *value; /* NUL-terminated inside the head buffer */
} kw__http_hdr_t;

typedef struct kw__http_head {
    kw_str_t method, target; /* NUL-terminated */
    kw_str_t path, query;    /* views into target (raw, not decoded) */
    int minor;               /* 0: HTTP/1.0, 1: HTTP/1.1 */
    kw__http_hdr_t hdrs[KW_MAX_HEADERS];
    size_t n_hdrs;
    bool has_length, length_overflow, chunked;
    uint64_t length;
    bool keep_alive, expect_continue;
} kw__http_head_t;

/* Length of the head (request line + fields + the empty line) at the start of buf, or 0
 * if it is not complete yet. *scan (start at 0) remembers how far the search got. A bare
 * LF ends it too, so the parser can refuse it rather than wait. */
size_t kw__http_head_end(const char *buf, size_t len, size_t *scan);
/* Parses a complete head (as found by kw__http_head_end) IN PLACE: names and values are
 * NUL-terminated inside buf. 0, or the HTTP status to answer (400, 417, 431, 501, 505)
 * with *msg a static client-safe message. h->method/target are set as far as parsed. */
int kw__http_parse_head(char *buf, size_t len, kw__http_head_t *h, const char **msg);
/* The first field called `name` (case-insensitive), or NULL. */
const char *kw__http_head_get(const kw__http_head_t *h, const char *name);

/* The chunked transfer coding, fed incrementally. Zero-initialize to start. */
typedef struct kw__chunked {
    int state;
    unsigned digits;
    uint64_t left;
    size_t aux;
} kw__chunked_t;
enum { KW__CHUNK_MORE = 0, KW__CHUNK_DONE, KW__CHUNK_ERR };
/* Consumes bytes from in[0..len): *used says how many. When *data is non-empty it is
 * body data (a view into in) and the call stopped right after it: call again with the
 * rest. KW__CHUNK_DONE: the body and its trailer section ended at *used. KW__CHUNK_ERR:
 * malformed (bad size, missing CRLF, oversized extension or trailer). */
int kw__http_chunk_step(kw__chunked_t *c, const char *in, size_t len, size_t *used, kw_str_t *data);

/* ---- metrics ---- */

#define KW__HTTP_N_BUCKETS 14
#define KW__HTTP_METRIC_SLOTS 4096

typedef struct kw__hist {
    _Atomic uint64_t buckets[KW__HTTP_N_BUCKETS]; /* non-cumulative; +Inf is count */
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t count;
} kw__hist_t;

typedef struct kw__metric_slot {
    _Atomic uint64_t key; /* 0 = empty; see metrics.c for the packing */
    _Atomic uint64_t count;
} kw__metric_slot_t;

/* Counters of the hostile-network defences (server.c), by reason. */
enum {
    KW__REFUSE_LIMIT = 0, /* connection limit */
    KW__REFUSE_PER_ADDR,  /* per-client-address cap */
    KW__REFUSE_N
};
enum {
    KW__EXPIRE_HEADERS = 0, /* request line + headers deadline */
    KW__EXPIRE_BODY,        /* body deadline */
    KW__EXPIRE_WRITE,       /* the client did not read its response in time */
    KW__EXPIRE_N
};

typedef struct kw__metrics {
    const char *const *labels; /* borrowed from the router */
    size_t n_labels;
    kw__hist_t *hist;         /* one per label */
    kw__metric_slot_t *slots; /* open addressing, KW__HTTP_METRIC_SLOTS, lock-free insert */
    _Atomic uint64_t dropped; /* observations that found the table full */
    _Atomic uint64_t refused[KW__REFUSE_N];
    _Atomic uint64_t expired[KW__EXPIRE_N];
    _Atomic uint64_t budget_refused; /* bodies refused by the global body budget */
    _Atomic uint64_t open_conns;     /* gauge */
} kw__metrics_t;

KW_NODISCARD int kw__metrics_init(kw__metrics_t *m, const char *const *labels, size_t n_labels);
void kw__metrics_close(kw__metrics_t *m);
/* Records one finished request. label < n_labels; status is clamped to 100..999. */
void kw__metrics_observe(kw__metrics_t *m, kw_str_t method, size_t label, int status,
                         uint64_t duration_ns);
void kw__metrics_write(kw__metrics_t *m, kw_buf_t *out);

/* The method label: the method itself if it is one of the standard ones, else "OTHER"
 * (a client-chosen method must not mint new label values). Static storage. */
const char *kw__http_method_label(kw_str_t method);

/* ---- the server (server.c: loop thread; pool.c: workers and requests) ---- */

typedef struct kw__conn kw__conn_t;
typedef struct kw__rq kw__rq_t;
typedef struct kw__loop kw__loop_t;

enum {
    KW__JOB_HEADERS = 1, /* run on_headers only, then the loop reads the body */
    KW__JOB_RUN,         /* (on_headers if not run yet), then the handler */
};
enum {
    KW__DONE_BODY = 1, /* on_headers let it through: read the body */
    KW__DONE_ANSWER,   /* rq->out holds the serialized response */
};

/* A streamed answer (kw_http_stream_*): bytes go from the worker running the handler to
 * the request's loop through q. mu is a leaf lock (never held with another); cv signals
 * room in the queue, or closed. */
typedef struct kw__stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kw_buf_t q;             /* framed bytes the worker queued, not yet taken by the loop */
    size_t q_off;           /* q's bytes start here (a buffer handed over by kw_http_stream_give) */
    size_t unsent;          /* bytes the loop took and has not sent yet */
    bool closed;            /* the client went away, the send deadline passed or the server stops */
    bool notified;          /* the request is on its loop's stream list */
    bool begun;             /* the head went out */
    bool chunked;           /* HTTP/1.1: chunked framing (1.0: raw bytes, then close) */
    _Atomic bool cancelled; /* closed, readable without the lock */
} kw__stream_t;

/* A streamed request body (KW_HTTP_ROUTE_STREAM_BODY): bytes go from the request's loop
 * to the worker running the handler through q. mu is a leaf lock; cv signals bytes, the
 * end or a failure. The loop stops reading the socket once q holds KW_HTTP_BODY_HIGH
 * (paused); the handler, taking q, resumes it through its loop's body list. */
typedef struct kw__body_q {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kw_buf_t q;      /* received, not yet taken by the handler */
    kw_buf_t taken;  /* the handler's current chunk (the two buffers swap) */
    bool active;     /* this request's body streams (set before the handler runs) */
    bool eof;        /* the whole body is in q or taken */
    bool failed;     /* the body failed: fail_status (0: the client went away) */
    bool paused;     /* the loop stopped reading: q is full */
    bool notified;   /* the request is on its loop's body list */
    bool given;      /* kw_http_body_next on a whole body: it was handed out */
    int fail_status; /* the server's answer instead of the handler's (400, 408, 413, ...) */
    const char *fail_msg;
} kw__body_q_t;

struct kw__rq {
    kw__rq_t *next;        /* queue link (run queue, parked list, done queue) */
    kw__rq_t *stream_next; /* its loop's stream list (st->notified) */
    kw__rq_t *body_next;   /* its loop's body list (bq.notified) */
    kw__body_q_t bq;
    kw__stream_t *st; /* &stream (always set: the loop reads it without a race) */
    kw__stream_t stream;
    bool to_worker; /* the handler asked to run again on a worker */
    bool on_worker; /* the job runs on a pool worker */
    kw_http_server_t *srv;
    kw__conn_t *conn; /* the loop's (a zombie if the client went away) */
    kw__loop_t *loop; /* where the answer goes back */
    kw_http_req_t req;
    kw__http_head_t head;
    kw__match_t match;
    size_t label; /* metrics/log route label */
    kw_buf_t body;
    size_t charged; /* bytes of body_budget this request holds */
    kw_http_resp_t resp;
    kw_buf_t out; /* the serialized response */
    int job, done;
    bool headers_run; /* on_headers has been called */
    bool has_body;    /* a body follows the head (Content-Length > 0 or chunked) */
    bool keep_alive;  /* the connection may carry another request after this one */
    bool close_after; /* the loop closes the connection after sending out */
    bool parked;
    bool deferred;     /* kw_http_req_defer: to the run queue at once, not the parked list */
    bool wake_pending; /* kw_http_req_wake came while not on the parked list (srv->mu) */
    uint64_t park_deadline_ns;
    uint64_t park_gen; /* srv->wake_gen when the handler parked it */
    uint64_t t0_ns;    /* head parsed */
    int status;
};

struct kw_http_server {
    kw__router_t router;
    kw__metrics_t metrics;
    kw_http_config_t cfg; /* copy, defaults filled in */
    int listen_fd;        /* shared by the loops (EPOLLEXCLUSIVE) */
    kw__loop_t *loops;
    size_t n_loops;
    bool loop_joined; /* kw_http_server_stop got past the loops (a retry skips it) */
    _Atomic bool stopping;
    uint64_t drain_deadline;  /* set before stopping */
    _Atomic size_t n_conns;   /* open connections, all loops */
    pthread_mutex_t addr_mu;  /* the per-address table (a leaf lock) */
    void *addrs;              /* server.c's per-address table */
    _Atomic size_t body_used; /* bytes charged against cfg.body_budget */
    _Atomic uint64_t rid_fallback;
    /* the pool (pool.c) */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* run queue not empty, or stopping */
    pthread_cond_t idle_cv; /* a job finished (stop waits on it) */
    kw__rq_t *run_head, *run_tail;
    kw__rq_t *parked;
    /* Bumped by every kw_http_server_wake: a request that parked before a wake but reached
     * the parked list after it runs again at once (no lost wake-up). */
    _Atomic uint64_t wake_gen;
    size_t running; /* jobs being run now */
    bool pool_quit;
    pthread_t *workers;
    size_t n_workers;
};

/* pool.c */
KW_NODISCARD int kw__pool_start(kw_http_server_t *srv, kw_diag_t *diag);
/* Moves parked requests whose deadline passed (all of them if `all`) to the run queue. */
void kw__pool_expire_parked(kw_http_server_t *srv, uint64_t now, bool all);
/* Waits until no job runs or is queued, at most until deadline_ns: true if idle. */
bool kw__pool_drain(kw_http_server_t *srv, uint64_t deadline_ns);
/* Stops and joins the workers (after a successful drain); frees what is still parked. */
void kw__pool_stop(kw_http_server_t *srv);

kw__rq_t *kw__rq_new(kw_http_server_t *srv);
void kw__rq_free(kw__rq_t *rq);
/* Fills rq->resp with a server-made error through cfg.error_fn (405 adds Allow). */
void kw__rq_error(kw__rq_t *rq, int status, const char *msg);
/* Serializes rq->resp into rq->out (any thread), counts it in the metrics and writes
 * the access-log line. A broken response (OOM, bad status, CR/LF in a header) becomes
 * a 500. */
void kw__rq_finish(kw__rq_t *rq);
/* Runs rq's job (on_headers and/or the handler) on the calling thread: true when rq is
 * answered (rq->done says how), false when the handler parked it (the pool has it). */
bool kw__rq_run(kw__rq_t *rq);
/* Sets req.request_id from X-Request-Id when well formed, else a random one. */
void kw__rq_request_id(kw__rq_t *rq);
/* Hands an answered request back to its loop (rq->loop) and wakes it (any thread). */
void kw__loop_done(kw__rq_t *rq);
/* Tells rq's loop that its stream has bytes to send (the worker, once per st->notified). */
void kw__loop_stream(kw__rq_t *rq);
void kw__stream_fini(kw__stream_t *st);
/* The loop takes what rq's stream queued into its connection's output and sends it. */
void kw__conn_stream(kw_http_server_t *srv, kw__rq_t *rq);
/* Marks rq's stream closed and wakes its writer (loop thread, or anyone). */
void kw__stream_close(kw__rq_t *rq);
/* Streamed bodies. What a streamed body's request holds of body_budget (both buffers at
 * their worst: KW_HTTP_BODY_HIGH plus one read buffer). */
#define KW__BODY_STREAM_CHARGE (2u * (KW_HTTP_BODY_HIGH + KW__RBUF_MAX))
/* Hands a request whose body streams to the pool: its handler runs on a worker now. */
void kw__pool_run(kw_http_server_t *srv, kw__rq_t *rq);
/* The body failed (loop thread): status is the server's answer (0: the client is gone).
 * Wakes the handler; a body that ended already is left alone. */
void kw__body_fail(kw__rq_t *rq, int status, const char *msg);
/* Tells rq's loop that the handler made room in the body queue (the worker). */
void kw__loop_body(kw__rq_t *rq);
/* The loop resumes reading rq's body (its handler took the queue). */
void kw__conn_body_resume(kw_http_server_t *srv, kw__rq_t *rq);
/* A streamed body's progress deadline passed (the sweep): 408 instead of the answer. */
void kw__conn_body_expire(kw_http_server_t *srv, kw__conn_t *c);

/* ---- server.c + conn.c: the event loops and their connections ---- */

#define KW__NS 1000000000ull
#define KW__SWEEP_NS (50ull * 1000000ull)
#define KW__LINGER_NS (2ull * KW__NS)
#define KW__RBUF_INIT 4096u
#define KW__RBUF_MAX (KW_MAX_HEADER_BYTES + 16384u)
#define KW__ADDR_BUCKETS 1024u

enum { KW__C_HEAD = 1, KW__C_BUSY, KW__C_BODY, KW__C_WRITE, KW__C_IDLE, KW__C_LINGER };

struct kw__conn {
    kw__conn_t *prev, *next;
    struct kw__loop *lp; /* the loop that owns it (fixed at accept) */
    int fd;
    int state;
    bool in_ready; /* on kw__loop.ready */
    kw__conn_t *ready_next;
    bool got_bytes; /* some byte of the current request arrived */
    bool answered;  /* a request was answered on this connection */
    bool rd_more;   /* the socket may hold unread bytes (no EAGAIN seen since) */
    uint64_t accepted_ns;
    bool close_after; /* close (linger) once out is sent */
    bool streaming;   /* BUSY with a streamed answer: out is sent while the handler runs */
    /* BUSY with a streamed body: the loop reads it while the handler runs (body_paused:
     * not now, its queue is full); body_total counts its bytes, body_since those since
     * the deadline last moved. */
    bool body_streaming, body_paused;
    uint64_t body_total;
    size_t body_since;
    char *rbuf;
    size_t rlen, rcap, scan;
    kw_buf_t out;
    size_t woff;
    uint64_t deadline;
    int expire_kind; /* KW__EXPIRE_* counted when the deadline passes, -1: none */
    kw__rq_t *rq;    /* the request being read or in the pool */
    uint64_t body_left;
    kw__chunked_t ch;
    struct kw__addr_slot *addr;
};

/* Open connections per client address: a chained hash table, under srv->addr_mu. */
typedef struct kw__addr_slot {
    struct kw__addr_slot *next;
    unsigned char key[17]; /* family byte + up to 16 address bytes */
    unsigned count;
} kw__addr_slot_t;

struct kw__loop {
    kw_http_server_t *srv;
    int epoll_fd, event_fd;
    pthread_t thread;
    bool joined;
    /* answered requests coming back from the pool (done_mu; a leaf lock) */
    pthread_mutex_t done_mu;
    kw__rq_t *done_head, *done_tail;
    kw__rq_t *stream_head; /* requests whose stream has new bytes (stream_next links) */
    kw__rq_t *body_head;   /* requests whose handler made room for more body (body_next) */
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
    /* Closed connections whose struct waits for the end of the current epoll batch: a
     * later event of the same batch may still name them (linked through ready_next). */
    kw__conn_t *dead;
    bool in_batch;
};

/* conn.c: one connection on its loop (states: server.c's file comment). */
void kw__conn_free(kw__loop_t *lp, kw__conn_t *c);
/* Closes the socket; the struct is freed later (ready list), or once a parked request
 * comes back. */
void kw__conn_close(kw_http_server_t *srv, kw__conn_t *c);
/* Reads what the socket has (edge-triggered) and processes it. */
void kw__conn_read(kw_http_server_t *srv, kw__conn_t *c);
/* Processes what the read buffer holds as far as the state allows. */
void kw__conn_advance(kw_http_server_t *srv, kw__conn_t *c);
/* A server-made error for the request being read, then close (lingering). */
void kw__conn_fail(kw_http_server_t *srv, kw__conn_t *c, int status, const char *msg);
/* Keep-alive idle state with its deadline. */
void kw__conn_to_idle(kw_http_server_t *srv, kw__conn_t *c);
/* An epoll event for c. */
void kw__conn_event(kw_http_server_t *srv, kw__conn_t *c, uint32_t ev);
/* A request's job finished (on the loop, or a parked one's re-run coming back). */
void kw__conn_done(kw_http_server_t *srv, kw__rq_t *rq);
/* server.c: one connection fewer from this address. */
void kw__addr_release(kw_http_server_t *srv, struct kw__addr_slot *s);

#endif
