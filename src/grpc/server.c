/*
 * grpc/server.c - the HTTP/2 side of the gRPC endpoint (see grpc.h for the threads):
 * the listener, one thread per connection driving its nghttp2 session over a non-blocking
 * socket (woken by an eventfd when a handler queued output), and one thread per RPC that
 * may block. The cheap unary RPCs (runs_inline) are answered by the connection thread
 * itself, inside nghttp2's receive callback: every request that one read brought is
 * answered and the answers leave with one write; a call that turns out to need a wait
 * (kw__grpc_may_block) is handed to a thread before it did anything.
 *
 * A stream's state is shared between its connection thread and its handler thread under
 * the connection's mutex: the handler appends framed messages to `out` (waiting on `room`
 * while more than KW_GRPC_STREAM_BUF bytes are unsent) and finally sets `done` with the
 * status; the connection thread submits the response headers once, feeds `out` to nghttp2
 * through a data provider (DEFERRED when empty, resumed on a wake-up) and ends the stream
 * with the trailers (grpc-status, grpc-message, grpc-status-details-bin). A stream closed
 * by the peer (RST_STREAM) or by the connection's end is `cancelled`: the handler's next
 * send fails with KW_EIO and the RPC stops. A stream is freed when both sides let go.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "grpc_int.h"

#define KW_MODULE "grpc"

typedef struct kw__grpc_conn kw__grpc_conn_t;

typedef struct kw__grpc_stream {
    int32_t id;
    kw__grpc_conn_t *conn;
    struct kw__grpc_stream *next, *prev; /* the connection's streams */
    struct kw__grpc_stream *next_pending;
    bool pending;
    /* request (connection thread only until the handler starts) */
    char path[160];
    bool path_long, is_post, ct_grpc;
    char *authorization; /* kw_malloc'd */
    int64_t deadline_us; /* monotonic; 0: none */
    size_t hdr_bytes;
    bool hdr_too_big;
    kw_buf_t body; /* in_stream: under conn->mu, bytes not yet taken by kw__grpc_recv */
    bool body_too_big;
    bool dispatched;
    /* Requests that stream in (client streaming, bidi): the handler starts at the
     * headers; the stream's window grows only as it takes bytes (to_consume, given to
     * nghttp2_session_consume by the connection thread). Under conn->mu. */
    bool in_stream;
    bool in_end; /* END_STREAM received */
    size_t to_consume;
    /* response: under conn->mu */
    kw_buf_t out;
    size_t out_off;
    bool submitted; /* response headers submitted */
    bool done;      /* the handler finished: status below */
    bool closed;    /* nghttp2 closed the stream */
    bool cancelled; /* closed early, or the connection ended */
    kw_v1_status_t st;
    pthread_cond_t room; /* the handler's wake-up: room to send, bytes or the end arrived */
    int refs;            /* connection + handler */
} kw__grpc_stream_t;

struct kw__grpc_call {
    kw__grpc_stream_t *s;
    kw_api_t *api;
    kw_v1_caller_t caller; /* request_id made on first use (kw__grpc_caller) */
    char request_id[37];
    kw_buf_t in;           /* kw__grpc_recv: bytes taken from the stream */
    size_t in_off;         /* where the unread ones start (what precedes was returned) */
    bool on_conn;          /* answered on the connection's thread (run_inline) */
    bool to_thread;        /* on_conn, and the handler needs to block: run it on a thread */
    ProtobufCAllocator pb; /* kw__grpc_allocator: the caller's arena */
};

struct kw__grpc_conn {
    kw_grpc_server_t *srv;
    int fd, evfd;
    SSL *ssl; /* TLS (ALPN h2), or NULL: cleartext */
    /* Frames nghttp2 produced, written with one syscall per loop (not one per frame). */
    uint8_t wbuf[64 * 1024];
    size_t wlen;
    nghttp2_session *ng;
    pthread_mutex_t mu;
    pthread_cond_t quiet; /* handlers == 0 */
    unsigned handlers;
    kw__grpc_stream_t *streams;
    kw__grpc_stream_t *pending;
    bool wake_sent;
    int64_t last_progress_us;
    bool got_preface;
    /* The caller's arena of the calls answered on this thread (reset after each), made at
     * the first one: an idle connection holds none. */
    kw_arena_t *arena;
};

struct kw_grpc_server {
    kw_grpc_config_t cfg;
    kw_api_t *api;
    SSL_CTX *tls; /* NULL: cleartext */
    int lfd, stop_fd;
    pthread_t listener;
    pthread_mutex_t mu;
    pthread_cond_t gone; /* conns == 0 */
    unsigned conns;
    atomic_uint rpcs; /* handler threads alive, at most KW_GRPC_MAX_RPCS */
    atomic_bool stopping;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void wake(kw__grpc_conn_t *c)
{
    uint64_t one = 1;
    ssize_t w = write(c->evfd, &one, sizeof(one));
    (void)w; /* a full counter already means "wake up" */
}

/* Under c->mu. */
static void mark_pending(kw__grpc_stream_t *s)
{
    if (s->pending)
        return;
    s->pending = true;
    s->next_pending = s->conn->pending;
    s->conn->pending = s;
}

/* Under c->mu: drops one reference; frees the stream at zero. */
static void stream_unref(kw__grpc_stream_t *s)
{
    if (--s->refs > 0)
        return;
    kw__grpc_conn_t *c = s->conn;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->pending) { /* unlink from the pending list */
        for (kw__grpc_stream_t **pp = &c->pending; *pp; pp = &(*pp)->next_pending)
            if (*pp == s) {
                *pp = s->next_pending;
                break;
            }
    }
    pthread_cond_destroy(&s->room);
    kw_buf_free(&s->body);
    kw_buf_free(&s->out);
    kw_free(s->authorization);
    kw_free(s);
}

/* ---- the handler side ---- */

kw_api_t *kw__grpc_api(kw__grpc_call_t *call)
{
    return call->api;
}

const kw_v1_caller_t *kw__grpc_caller(kw__grpc_call_t *call)
{
    if (!call->caller.request_id.len) {
        kw_api_uuid_v7(kw_api_now_us(), call->request_id);
        call->caller.request_id = kw_str_c(call->request_id);
    }
    return &call->caller;
}

static void *pb_alloc(void *arena, size_t n)
{
    return kw_arena_alloc(arena, n);
}

static void pb_free(void *arena, void *p)
{
    (void)arena;
    (void)p; /* the arena lets go of everything at the end of the call */
}

ProtobufCAllocator *kw__grpc_allocator(kw__grpc_call_t *call)
{
    call->pb = (ProtobufCAllocator){pb_alloc, pb_free, call->caller.arena};
    return &call->pb;
}

bool kw__grpc_may_block(kw__grpc_call_t *call)
{
    if (!call->on_conn)
        return true;
    call->to_thread = true;
    return false;
}

/* Under mu. */
static int alive_locked(kw__grpc_stream_t *s)
{
    if (s->cancelled)
        return KW_EIO;
    if (s->deadline_us && mono_us() >= s->deadline_us)
        return KW_ETIMEOUT;
    return KW_OK;
}

int kw__grpc_alive(kw__grpc_call_t *call)
{
    kw__grpc_conn_t *c = call->s->conn;
    pthread_mutex_lock(&c->mu);
    int rc = alive_locked(call->s);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* kw__grpc_send of m (packed into the buffer), or of packed[0..len) when m is NULL. */
static int send_msg(kw__grpc_call_t *call, const ProtobufCMessage *m, const uint8_t *packed,
                    size_t len)
{
    kw__grpc_stream_t *s = call->s;
    kw__grpc_conn_t *c = s->conn;
    int rc;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        rc = alive_locked(s);
        if (rc != KW_OK)
            goto out;
        /* On the connection's thread nothing would drain the buffer while waiting: its
         * unary answer is queued whole. */
        if (s->out.len - s->out_off <= KW_GRPC_STREAM_BUF || call->on_conn)
            break;
        /* Full: wait for the connection thread to send, at most until the deadline (and
         * a second at a time, so a lost wake-up costs no more than that). */
        int64_t until = mono_us() + 1000000;
        if (s->deadline_us && s->deadline_us < until)
            until = s->deadline_us;
        struct timespec ts = {(time_t)(until / 1000000), (long)(until % 1000000) * 1000};
        pthread_cond_timedwait(&s->room, &c->mu, &ts);
    }
    size_t at = s->out.len;
    /* The connection thread needs a wake-up only when it may have found the buffer empty
     * (its data provider then deferred); otherwise it comes back for more by itself. */
    bool was_empty = s->out.len == s->out_off;
    uint8_t pre[5];
    kw__grpc_frame_prefix(pre, len);
    kw_buf_append(&s->out, pre, 5);
    kw_buf_append(&s->out, NULL, 0);
    /* room for the packed message */
    if (!s->out.failed && s->out.cap < s->out.len + len + 1) {
        size_t want = s->out.len + len + 1;
        char *p = kw_malloc(want);
        if (!p) {
            s->out.failed = true;
        } else {
            memcpy(p, s->out.ptr, s->out.len);
            kw_free(s->out.ptr);
            s->out.ptr = p;
            s->out.cap = want;
        }
    }
    if (s->out.failed) {
        s->out.failed = false;
        s->out.len = at;
        rc = KW_ENOMEM;
        goto out;
    }
    if (m)
        protobuf_c_message_pack(m, (uint8_t *)s->out.ptr + s->out.len);
    else if (len)
        memcpy(s->out.ptr + s->out.len, packed, len);
    s->out.len += len;
    if (was_empty)
        mark_pending(s);
    rc = KW_OK;
out:
    pthread_mutex_unlock(&c->mu);
    /* On the connection's thread no wake-up is needed: its loop sends what is pending. */
    if (rc == KW_OK && was_empty && !call->on_conn)
        wake(c);
    return rc;
}

int kw__grpc_send(kw__grpc_call_t *call, const ProtobufCMessage *m)
{
    return send_msg(call, m, NULL, protobuf_c_message_get_packed_size(m));
}

int kw__grpc_send_packed(kw__grpc_call_t *call, const uint8_t *msg, size_t len)
{
    return send_msg(call, NULL, msg, len);
}

int kw__grpc_recv(kw__grpc_call_t *call, const uint8_t **msg, size_t *len)
{
    kw__grpc_stream_t *s = call->s;
    kw__grpc_conn_t *c = s->conn;
    kw_buf_t *in = &call->in;
    bool took = false;
    int rc;
    /* A client that sends nothing for stall_ms ends the RPC: an import holds the one
     * write transaction meanwhile, so a silent client must not keep it forever. */
    int64_t quiet_since = mono_us();
    pthread_mutex_lock(&c->mu);
    for (;;) {
        size_t have = in->len - call->in_off;
        if (have >= 5) {
            const uint8_t *p = (const uint8_t *)in->ptr + call->in_off;
            size_t mlen = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
            if (p[0] > 1) {
                rc = KW_EINVAL;
                break;
            }
            if (p[0] == 1) {
                rc = KW_EUNSUPPORTED;
                break;
            }
            if (mlen > KW_GRPC_MAX_MSG) {
                rc = KW_ETOOLARGE;
                break;
            }
            if (have >= 5 + mlen) {
                *msg = p + 5;
                *len = mlen;
                call->in_off += 5 + mlen;
                rc = KW_OK;
                break;
            }
        }
        if (s->body.len > 0) { /* take what arrived; its window is given back */
            /* What is unread is less than one message: moved once per intake. */
            if (call->in_off) {
                memmove(in->ptr, in->ptr + call->in_off, have);
                in->len = have;
                call->in_off = 0;
            }
            kw_buf_append(in, s->body.ptr, s->body.len);
            if (in->failed) {
                rc = KW_ENOMEM;
                break;
            }
            s->to_consume += s->body.len;
            s->body.len = 0;
            mark_pending(s); /* the connection thread visits only pending streams */
            took = true;
            quiet_since = mono_us();
            continue;
        }
        if (s->in_end) {
            /* An end already followed by a cancel is the cancel. (grpc-js cancels by
             * half-closing, then RST_STREAM: when the RST comes later, the stream looks
             * complete here, as it would to any server.) */
            if ((rc = alive_locked(s)) == KW_OK)
                rc = have == 0 ? KW_ENOTFOUND : KW_EINVAL;
            break;
        }
        if ((rc = alive_locked(s)) != KW_OK)
            break;
        if (mono_us() - quiet_since > (int64_t)c->srv->cfg.stall_ms * 1000) {
            rc = KW_ELIMIT;
            break;
        }
        if (took) { /* let the connection thread open the window before waiting */
            pthread_mutex_unlock(&c->mu);
            wake(c);
            took = false;
            pthread_mutex_lock(&c->mu);
            continue;
        }
        int64_t until = mono_us() + 1000000;
        if (s->deadline_us && s->deadline_us < until)
            until = s->deadline_us;
        struct timespec ts = {(time_t)(until / 1000000), (long)(until % 1000000) * 1000};
        pthread_cond_timedwait(&s->room, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    if (took)
        wake(c);
    return rc;
}

/* Runs the RPC of s (the request's checks, authorization, the handler); its status in *st. */
static void run_rpc(kw__grpc_stream_t *s, kw__grpc_call_t *call, kw_v1_status_t *st)
{
    const kw_grpc_config_t *cfg = &s->conn->srv->cfg;
    char actor[200] = "";
    const kw__grpc_rpc_t *rpc = kw__grpc_find(s->path, strlen(s->path));
    const uint8_t *msg = NULL;
    size_t mlen = 0;
    int rc;
    bool resolved = false;
    if (!call->caller.arena) {
        kw_v1_fail(st, KW_ENOMEM, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "out of memory");
    } else if (!rpc) {
        kw_v1_fail(st, KW_EUNSUPPORTED, KW_GRPC_UNIMPLEMENTED, NULL, "unknown method %s", s->path);
    } else if (s->body_too_big) {
        kw_v1_fail(st, KW_ETOOLARGE, KW_GRPC_RESOURCE_EXHAUSTED, NULL,
                   "request message larger than %u bytes", KW_GRPC_MAX_MSG);
    } else if (!kw__grpc_streams_in(rpc) &&
               (rc = kw__grpc_unframe((const uint8_t *)s->body.ptr, s->body.len, KW_GRPC_MAX_MSG,
                                      &msg, &mlen)) != KW_OK) {
        if (rc == KW_EUNSUPPORTED)
            kw_v1_fail(st, rc, KW_GRPC_UNIMPLEMENTED, NULL,
                       "compressed messages are not supported");
        else if (rc == KW_ETOOLARGE)
            kw_v1_fail(st, rc, KW_GRPC_RESOURCE_EXHAUSTED, NULL,
                       "request message larger than %u bytes", KW_GRPC_MAX_MSG);
        else
            kw_v1_fail(st, rc, KW_GRPC_INTERNAL, NULL,
                       "the request must carry exactly one gRPC message");
    } else if (!rpc->is_public && cfg->resolve &&
               !(resolved = cfg->resolve(cfg->resolve_ud, s->path, s->authorization, &call->api,
                                         st) == KW_OK)) {
        /* serve-testing refused to name an instance: st says why */
    } else if (!rpc->is_public && (rc = kw_api_v1_authorize(call->api, s->authorization, actor,
                                                            sizeof(actor))) != KW_OK) {
        if (rc == KW_EFORBIDDEN)
            kw_v1_fail(st, rc, KW_GRPC_PERMISSION_DENIED, NULL,
                       "the API needs a token with admin: true or a preshared key");
        else
            kw_v1_fail(st, rc, KW_GRPC_UNAUTHENTICATED, NULL, "invalid preshared key or token");
    } else if ((rc = kw__grpc_alive(call)) != KW_OK) {
        kw_v1_fail(st, rc, rc == KW_ETIMEOUT ? KW_GRPC_DEADLINE_EXCEEDED : KW_GRPC_CANCELLED, NULL,
                   rc == KW_ETIMEOUT ? "deadline exceeded" : "cancelled");
    } else {
        call->caller.actor = kw_str_c(actor[0] ? actor : "anonymous");
        kw__grpc_invoke(rpc, call, msg, mlen, st);
    }
    if (resolved && cfg->release) /* serve-testing: the instance is no longer in use */
        cfg->release(cfg->resolve_ud, call->api);
}

/* Under c->mu: st becomes the stream's answer (the deadline beats whatever the RPC answered
 * once it passed). */
static void finish_locked(kw__grpc_stream_t *s, const kw_v1_status_t *st)
{
    s->st = *st;
    if (st->code != KW_GRPC_OK && alive_locked(s) == KW_ETIMEOUT) {
        kw_v1_status_clear(&s->st);
        kw_v1_fail(&s->st, KW_ETIMEOUT, KW_GRPC_DEADLINE_EXCEEDED, NULL, "deadline exceeded");
    }
    s->done = true;
    if (s->in_stream) { /* what the client sent and nobody will read: its window back */
        s->to_consume += s->body.len;
        s->body.len = 0;
    }
    mark_pending(s);
}

static void *handler_main(void *arg)
{
    kw__grpc_stream_t *s = arg;
    kw__grpc_conn_t *c = s->conn;
    kw_grpc_server_t *srv = c->srv;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw__grpc_call_t call = {.s = s, .api = srv->api};
    kw_buf_init(&call.in);
    call.caller.arena = kw_arena_new(0);
    run_rpc(s, &call, &st);
    kw_arena_free(call.caller.arena);
    kw_buf_free(&call.in);

    atomic_fetch_sub(&srv->rpcs, 1);
    pthread_mutex_lock(&c->mu);
    finish_locked(s, &st);
    stream_unref(s);
    if (--c->handlers == 0)
        pthread_cond_broadcast(&c->quiet);
    /* Under mu: once the last handler is gone, conn_free may free c as soon as mu is let
     * go (ASan caught the wake-up landing in a freed connection at shutdown). */
    wake(c);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* The unary RPCs answered on the connection's thread: they compute in memory and never
 * wait (but for a consistency wait, which kw__grpc_may_block sends to a thread), so one
 * costs no thread, no hand-over between threads and no wake-up. */
static bool runs_inline(const char *path)
{
    static const char *const paths[] = {
        "/authzed.api.v1.PermissionsService/CheckPermission",
        "/authzed.api.v1.PermissionsService/CheckBulkPermissions",
        "/authzed.api.v1.PermissionsService/ExpandPermissionTree",
        "/authzed.api.v1.ExperimentalService/BulkCheckPermission",
        "/grpc.health.v1.Health/Check",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (strcmp(path, paths[i]) == 0)
            return true;
    return false;
}

/* Answers s on the connection's thread; false when the handler needs a thread of its own
 * (it then answered nothing). */
static bool run_inline(kw__grpc_conn_t *c, kw__grpc_stream_t *s)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    if (c->srv->cfg.resolve) /* serve-testing: finding (or making) the instance may block */
        return false;
    /* 64 KiB blocks: a 100-item CheckBulkPermissions request fits in one. Without it, the
     * call gets a thread of its own (whose arena may yet be had). */
    if (!c->arena && !(c->arena = kw_arena_new(64 * 1024)))
        return false;
    kw__grpc_call_t call = {.s = s, .api = c->srv->api, .on_conn = true};
    kw_buf_init(&call.in);
    call.caller.arena = c->arena;
    run_rpc(s, &call, &st);
    kw_arena_reset(c->arena);
    kw_buf_free(&call.in);
    if (call.to_thread)
        return false;
    pthread_mutex_lock(&c->mu);
    finish_locked(s, &st);
    pthread_mutex_unlock(&c->mu);
    return true;
}

/* ---- the connection side (nghttp2 callbacks run on the connection thread) ---- */

/* One write to the peer: > 0 bytes written, 0 would block, -1 failed. */
static ssize_t raw_write(kw__grpc_conn_t *c, const uint8_t *data, size_t len)
{
    if (c->ssl) {
        ERR_clear_error();
        int w = SSL_write(c->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (w <= 0) {
            int e = SSL_get_error(c->ssl, w);
            return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
        }
        c->last_progress_us = mono_us();
        return w;
    }
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n > 0)
        c->last_progress_us = mono_us();
    return n;
}

/* Writes what wbuf holds, as far as the socket takes it: 0, or -1 when the peer is gone. */
static int flush_out(kw__grpc_conn_t *c)
{
    size_t off = 0;
    while (off < c->wlen) {
        ssize_t n = raw_write(c, c->wbuf + off, c->wlen - off);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        off += (size_t)n;
    }
    memmove(c->wbuf, c->wbuf + off, c->wlen - off);
    c->wlen -= off;
    return 0;
}

static ssize_t cb_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ng;
    (void)flags;
    kw__grpc_conn_t *c = ud;
    if (c->wlen + len > sizeof(c->wbuf)) {
        if (flush_out(c) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        if (c->wlen == sizeof(c->wbuf))
            return NGHTTP2_ERR_WOULDBLOCK;
    }
    size_t n = sizeof(c->wbuf) - c->wlen;
    if (n > len)
        n = len;
    memcpy(c->wbuf + c->wlen, data, n);
    c->wlen += n;
    return (ssize_t)n;
}

static int submit_trailers(nghttp2_session *ng, kw__grpc_stream_t *s)
{
    char code[16], msg[600], *details = NULL;
    snprintf(code, sizeof(code), "%d", s->st.code);
    nghttp2_nv nv[3];
    size_t n = 0;
    nv[n++] = (nghttp2_nv){(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code),
                           NGHTTP2_NV_FLAG_NONE};
    if (s->st.code != KW_GRPC_OK) {
        kw__grpc_pct_encode(s->st.msg, msg, sizeof(msg));
        nv[n++] = (nghttp2_nv){(uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg),
                               NGHTTP2_NV_FLAG_NONE};
        uint8_t *bin = NULL;
        size_t blen = 0;
        if (kw__grpc_status_pack(&s->st, &bin, &blen) == KW_OK) {
            size_t cap = blen / 3 * 4 + 8;
            details = kw_malloc(cap);
            if (details && kw__grpc_b64(bin, blen, details, cap))
                nv[n++] = (nghttp2_nv){(uint8_t *)"grpc-status-details-bin", (uint8_t *)details, 23,
                                       strlen(details), NGHTTP2_NV_FLAG_NONE};
            kw_free(bin);
        }
    }
    int rc = nghttp2_submit_trailer(ng, s->id, nv, n);
    kw_free(details);
    return rc;
}

static ssize_t cb_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)id;
    kw__grpc_conn_t *c = ud;
    kw__grpc_stream_t *s = src->ptr;
    pthread_mutex_lock(&c->mu);
    size_t avail = s->out.len - s->out_off;
    ssize_t r;
    if (avail > 0) {
        size_t n = avail < length ? avail : length;
        memcpy(buf, s->out.ptr + s->out_off, n);
        s->out_off += n;
        if (s->out_off == s->out.len) {
            s->out.len = 0;
            s->out_off = 0;
        }
        pthread_cond_signal(&s->room);
        r = (ssize_t)n;
        if (s->out.len == 0 && s->done) {
            *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (submit_trailers(ng, s) != 0)
                r = NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    } else if (s->done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        r = submit_trailers(ng, s) == 0 ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    } else {
        r = NGHTTP2_ERR_DEFERRED;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

static int cb_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    kw__grpc_conn_t *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    kw__grpc_stream_t *s = kw_calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->id = f->hd.stream_id;
    s->conn = c;
    s->refs = 1;
    kw_buf_init(&s->body);
    kw_buf_init(&s->out);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->room, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&c->mu);
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    pthread_mutex_unlock(&c->mu);
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static bool name_is(const uint8_t *n, size_t nl, const char *want)
{
    return nl == strlen(want) && memcmp(n, want, nl) == 0;
}

static int cb_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *val, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    kw__grpc_stream_t *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s)
        return 0;
    s->hdr_bytes += nl + vl + 32;
    if (s->hdr_bytes > KW_GRPC_MAX_HEADER) {
        s->hdr_too_big = true;
        return 0;
    }
    if (name_is(name, nl, ":path")) {
        if (vl >= sizeof(s->path)) {
            s->path_long = true;
        } else {
            memcpy(s->path, val, vl);
            s->path[vl] = '\0';
        }
    } else if (name_is(name, nl, ":method")) {
        s->is_post = vl == 4 && memcmp(val, "POST", 4) == 0;
    } else if (name_is(name, nl, "content-type")) {
        s->ct_grpc = vl >= 16 && memcmp(val, "application/grpc", 16) == 0 &&
                     (vl == 16 || val[16] == '+' || val[16] == ';');
    } else if (name_is(name, nl, "authorization")) {
        kw_free(s->authorization);
        s->authorization = kw_malloc(vl + 1);
        if (!s->authorization)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        memcpy(s->authorization, val, vl);
        s->authorization[vl] = '\0';
    } else if (name_is(name, nl, "grpc-timeout")) {
        int64_t us;
        if (kw__grpc_parse_timeout((const char *)val, vl, &us))
            s->deadline_us = mono_us() + us;
    }
    return 0;
}

static int cb_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    kw__grpc_conn_t *c = ud;
    kw__grpc_stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s && s->in_stream) { /* taken by kw__grpc_recv, which gives the window back */
        pthread_mutex_lock(&c->mu);
        bool keep = !s->done;
        if (keep) {
            kw_buf_append(&s->body, data, len);
            pthread_cond_broadcast(&s->room);
        }
        bool failed = s->body.failed;
        pthread_mutex_unlock(&c->mu);
        if (!keep)
            nghttp2_session_consume(ng, id, len);
        return failed ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
    }
    /* A unary request's bytes give their window back at once (bounded by the size cap). */
    nghttp2_session_consume(ng, id, len);
    if (!s || s->dispatched)
        return 0;
    if (s->body_too_big || s->body.len + len > KW_GRPC_MAX_MSG + 5) {
        s->body_too_big = true;
        kw_buf_free(&s->body);
        kw_buf_init(&s->body);
        return 0;
    }
    kw_buf_append(&s->body, data, len);
    if (s->body.failed)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* Answers a request that is not a gRPC call at all with its HTTP status. */
static void http_refuse(nghttp2_session *ng, kw__grpc_stream_t *s, const char *status)
{
    nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE}};
    nghttp2_submit_response(ng, s->id, nv, 1, NULL);
}

static void dispatch(nghttp2_session *ng, kw__grpc_conn_t *c, kw__grpc_stream_t *s)
{
    if (s->dispatched)
        return;
    s->dispatched = true;
    bool in_stream = s->in_stream;
    s->in_stream = false; /* until a handler runs to read the stream */
    if (s->hdr_too_big) {
        http_refuse(ng, s, "431");
        return;
    }
    if (!s->is_post) {
        http_refuse(ng, s, "405");
        return;
    }
    if (!s->ct_grpc) {
        http_refuse(ng, s, "415");
        return;
    }
    if (s->path_long)
        snprintf(s->path, sizeof(s->path), "/?");
    if (!c->srv->api && !c->srv->cfg.resolve) { /* kw__grpc_fuzz_feed: answered here */
        const uint8_t *m = NULL;
        size_t ml = 0;
        int rc =
            kw__grpc_unframe((const uint8_t *)s->body.ptr, s->body.len, KW_GRPC_MAX_MSG, &m, &ml);
        pthread_mutex_lock(&c->mu);
        kw_v1_fail(&s->st, KW_EUNSUPPORTED,
                   rc == KW_OK ? KW_GRPC_UNIMPLEMENTED : KW_GRPC_INVALID_ARGUMENT, NULL,
                   "fuzz: %s (%zu bytes)", s->path, ml);
        s->done = true;
        mark_pending(s);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (runs_inline(s->path) && run_inline(c, s))
        return;
    if (atomic_fetch_add(&c->srv->rpcs, 1) >= KW_GRPC_MAX_RPCS) {
        atomic_fetch_sub(&c->srv->rpcs, 1);
        pthread_mutex_lock(&c->mu);
        kw_v1_fail(&s->st, KW_ELIMIT, KW_GRPC_RESOURCE_EXHAUSTED, NULL,
                   "server busy: %u RPCs in flight", KW_GRPC_MAX_RPCS);
        s->done = true;
        mark_pending(s);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_lock(&c->mu);
    s->refs++;
    c->handlers++;
    s->in_stream = in_stream;
    pthread_mutex_unlock(&c->mu);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 1024 * 1024);
    pthread_t t;
    int e = pthread_create(&t, &at, handler_main, s);
    pthread_attr_destroy(&at);
    if (e != 0) {
        atomic_fetch_sub(&c->srv->rpcs, 1);
        pthread_mutex_lock(&c->mu);
        s->refs--;
        c->handlers--;
        s->in_stream = false;
        kw_v1_fail(&s->st, KW_ENOMEM, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "server busy");
        s->done = true;
        mark_pending(s);
        pthread_mutex_unlock(&c->mu);
    }
}

static int cb_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    kw__grpc_conn_t *c = ud;
    c->got_preface = true;
    if (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS)
        return 0;
    kw__grpc_stream_t *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        /* A method whose requests stream in starts now and reads them as they come. */
        const kw__grpc_rpc_t *rpc = kw__grpc_find(s->path, strlen(s->path));
        if (rpc && kw__grpc_streams_in(rpc)) {
            s->in_stream = true;
            dispatch(ng, c, s);
        }
    }
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        pthread_mutex_lock(&c->mu);
        s->in_end = true;
        pthread_cond_broadcast(&s->room);
        pthread_mutex_unlock(&c->mu);
        dispatch(ng, c, s);
    }
    return 0;
}

static int cb_stream_close(nghttp2_session *ng, int32_t id, uint32_t err, void *ud)
{
    (void)err;
    kw__grpc_conn_t *c = ud;
    kw__grpc_stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    pthread_mutex_lock(&c->mu);
    s->closed = true;
    if (!s->done)
        s->cancelled = true;
    /* Bytes received and never given back: the connection's window must not shrink. */
    size_t unread = s->in_stream ? s->body.len + s->to_consume : 0;
    s->body.len = 0;
    s->to_consume = 0;
    pthread_cond_broadcast(&s->room);
    stream_unref(s);
    pthread_mutex_unlock(&c->mu);
    if (unread)
        nghttp2_session_consume_connection(ng, unread);
    return 0;
}

/* Submits what handlers queued: response headers once, then resumes the data. */
static void flush_pending(kw__grpc_conn_t *c)
{
    pthread_mutex_lock(&c->mu);
    kw__grpc_stream_t *p = c->pending;
    c->pending = NULL;
    for (; p; p = p->next_pending) {
        p->pending = false;
        if (p->closed || !p->dispatched)
            continue;
        if (p->to_consume) {
            nghttp2_session_consume(c->ng, p->id, p->to_consume);
            p->to_consume = 0;
        }
        if (!p->submitted && (p->done || p->out.len > 0)) {
            p->submitted = true;
            nghttp2_nv nv[] = {
                {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
                {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
                 NGHTTP2_NV_FLAG_NONE},
            };
            nghttp2_data_provider prd = {.source.ptr = p, .read_callback = cb_read};
            nghttp2_submit_response(c->ng, p->id, nv, 2, &prd);
        } else if (p->submitted && (p->done || p->out.len > p->out_off)) {
            nghttp2_session_resume_data(c->ng, p->id);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static void conn_run(kw__grpc_conn_t *c)
{
    kw_grpc_server_t *srv = c->srv;
    uint8_t buf[16384];
    int64_t idle_since = mono_us();
    c->last_progress_us = idle_since;
    int64_t start = idle_since;
    while (!atomic_load(&srv->stopping)) {
        flush_pending(c);
        if (nghttp2_session_send(c->ng) != 0 || flush_out(c) != 0)
            break;
        bool wr = nghttp2_session_want_write(c->ng) != 0 || c->wlen > 0;
        if (!nghttp2_session_want_read(c->ng) && !wr)
            break;
        pthread_mutex_lock(&c->mu);
        bool busy = c->streams != NULL;
        pthread_mutex_unlock(&c->mu);
        int64_t now = mono_us();
        if (busy)
            idle_since = now;
        if (!c->got_preface && now - start > (int64_t)srv->cfg.stall_ms * 1000)
            break; /* no preface: a slow or silent peer */
        if (wr && now - c->last_progress_us > (int64_t)srv->cfg.stall_ms * 1000)
            break; /* the peer takes nothing */
        if (!busy && now - idle_since > (int64_t)srv->cfg.idle_ms * 1000) {
            nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                                  NULL, 0);
            if (nghttp2_session_send(c->ng) == 0)
                (void)flush_out(c);
            break;
        }
        if (!wr)
            c->last_progress_us = now;
        struct pollfd pf[2] = {{c->fd, POLLIN | (wr ? POLLOUT : 0), 0}, {c->evfd, POLLIN, 0}};
        int pr = poll(pf, 2, 1000);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr <= 0)
            continue;
        if (pf[1].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(c->evfd, &v, sizeof(v));
            (void)r;
        }
        if (c->ssl && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            bool fail = false;
            for (;;) { /* every record OpenSSL has, not only what poll saw */
                ERR_clear_error();
                int n = SSL_read(c->ssl, buf, sizeof(buf));
                if (n <= 0) {
                    int e = SSL_get_error(c->ssl, n);
                    fail = e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
                    break;
                }
                if (nghttp2_session_mem_recv(c->ng, buf, (size_t)n) < 0) {
                    fail = true;
                    break;
                }
            }
            if (fail)
                break;
        } else if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
            if (n == 0)
                break;
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                break;
            }
            if (nghttp2_session_mem_recv(c->ng, buf, (size_t)n) < 0)
                break;
        }
    }
}

/* Cancels every stream, waits for the handlers, then frees the connection. */
static void conn_free(kw__grpc_conn_t *c)
{
    pthread_mutex_lock(&c->mu);
    for (kw__grpc_stream_t *s = c->streams; s; s = s->next) {
        s->cancelled = !s->done;
        pthread_cond_broadcast(&s->room);
    }
    while (c->handlers > 0)
        pthread_cond_wait(&c->quiet, &c->mu);
    while (c->streams) {
        kw__grpc_stream_t *s = c->streams;
        s->refs = 1;
        stream_unref(s);
    }
    pthread_mutex_unlock(&c->mu);
    nghttp2_session_del(c->ng);
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    close(c->fd);
    close(c->evfd);
    kw_arena_free(c->arena);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->quiet);
    kw_free(c);
}

/* The TLS handshake, within stall_ms; the client must choose h2 by ALPN. */
static bool tls_accept(kw__grpc_conn_t *c)
{
    int64_t end = mono_us() + (int64_t)c->srv->cfg.stall_ms * 1000;
    for (;;) {
        ERR_clear_error();
        int r = SSL_accept(c->ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(c->ssl, r);
        int64_t left = (end - mono_us()) / 1000;
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || left <= 0)
            return false;
        struct pollfd pf = {c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0};
        if (poll(&pf, 1, left > 1000 ? 1000 : (int)left) < 0 && errno != EINTR)
            return false;
        if (atomic_load(&c->srv->stopping))
            return false;
    }
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &plen);
    return plen == 2 && memcmp(proto, "h2", 2) == 0;
}

static void *conn_main(void *arg)
{
    kw__grpc_conn_t *c = arg;
    kw_grpc_server_t *srv = c->srv;
    if (!c->ssl || tls_accept(c))
        conn_run(c);
    conn_free(c);
    pthread_mutex_lock(&srv->mu);
    if (--srv->conns == 0)
        pthread_cond_broadcast(&srv->gone);
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

static int conn_new(kw_grpc_server_t *srv, int fd, kw__grpc_conn_t **out)
{
    kw__grpc_conn_t *c = kw_calloc(1, sizeof(*c));
    nghttp2_session_callbacks *cbs = NULL;
    if (!c)
        return KW_ENOMEM;
    c->srv = srv;
    c->fd = fd;
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->evfd < 0)
        goto fail_c;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->quiet, NULL);
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto fail_ev;
    nghttp2_session_callbacks_set_send_callback(cbs, cb_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, cb_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cb_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_stream_close);
    /* Windows are given back by hand (nghttp2_session_consume): at once for a unary
     * request, as the handler reads for a stream of requests (flow control reaches it). */
    nghttp2_option *opt = NULL;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        goto fail_ev;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int e = nghttp2_session_server_new2(&c->ng, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (e != 0)
        goto fail_ev;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, KW_GRPC_MAX_HEADER},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20},
    };
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 3) != 0)
        goto fail_ng;
    /* A larger connection window for requests of many streams at once. */
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, 8 << 20);
    if (srv->tls) {
        c->ssl = SSL_new(srv->tls);
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
            SSL_free(c->ssl);
            c->ssl = NULL;
            goto fail_ng;
        }
    }
    *out = c;
    return KW_OK;
fail_ng:
    nghttp2_session_del(c->ng);
fail_ev:
    pthread_cond_destroy(&c->quiet);
    pthread_mutex_destroy(&c->mu);
    close(c->evfd);
fail_c:
    kw_free(c);
    return KW_ENOMEM;
}

static void *listener_main(void *arg)
{
    kw_grpc_server_t *srv = arg;
    while (!atomic_load(&srv->stopping)) {
        struct pollfd pf[2] = {{srv->lfd, POLLIN, 0}, {srv->stop_fd, POLLIN, 0}};
        if (poll(pf, 2, -1) < 0)
            continue;
        if (pf[1].revents)
            break;
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&srv->mu);
        bool full = srv->conns >= srv->cfg.max_conns;
        if (!full)
            srv->conns++;
        pthread_mutex_unlock(&srv->mu);
        if (full) {
            close(fd); /* over the connection limit */
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        kw__grpc_conn_t *c = NULL;
        pthread_t t;
        pthread_attr_t at;
        bool ok = false;
        if (conn_new(srv, fd, &c) == KW_OK) {
            pthread_attr_init(&at);
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            ok = pthread_create(&t, &at, conn_main, c) == 0;
            pthread_attr_destroy(&at);
            if (!ok) {
                nghttp2_session_del(c->ng);
                kw_arena_free(c->arena);
                close(c->evfd);
                pthread_mutex_destroy(&c->mu);
                pthread_cond_destroy(&c->quiet);
                kw_free(c);
            }
        }
        if (!ok) {
            close(fd);
            pthread_mutex_lock(&srv->mu);
            if (--srv->conns == 0)
                pthread_cond_broadcast(&srv->gone);
            pthread_mutex_unlock(&srv->mu);
        }
    }
    return NULL;
}

/* ALPN: h2 only (gRPC needs HTTP/2). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static SSL_CTX *tls_ctx(const char *cert, const char *key, kw_diag_t *diag)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        kw_diag_set(diag, KW_ENOMEM, 0, 0, "TLS: out of memory");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char e[160];
        ERR_error_string_n(ERR_get_error(), e, sizeof(e));
        kw_diag_set(diag, KW_EINVAL, 0, 0, "TLS certificate or key unusable: %s", e);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

int kw_grpc_server_start(const kw_grpc_config_t *cfg, kw_api_t *api, kw_grpc_server_t **out,
                         uint16_t *bound, kw_diag_t *diag)
{
    kw_grpc_server_t *srv = kw_calloc(1, sizeof(*srv));
    struct addrinfo hints = {0}, *ai = NULL;
    char port[8];
    int rc = KW_EIO;
    if (!srv)
        return KW_ENOMEM;
    srv->cfg = *cfg;
    if (!srv->cfg.max_conns)
        srv->cfg.max_conns = KW_GRPC_MAX_CONNS;
    if (!srv->cfg.max_streams)
        srv->cfg.max_streams = KW_GRPC_MAX_STREAMS;
    if (srv->cfg.idle_ms <= 0)
        srv->cfg.idle_ms = KW_GRPC_IDLE_MS;
    if (srv->cfg.stall_ms <= 0)
        srv->cfg.stall_ms = KW_GRPC_STALL_MS;
    srv->api = api;
    srv->lfd = srv->stop_fd = -1;
    if ((cfg->tls_cert != NULL) != (cfg->tls_key != NULL)) {
        kw_diag_set(diag, KW_EINVAL, 0, 0, "TLS needs both a certificate and a key");
        kw_free(srv);
        return KW_EINVAL;
    }
    if (cfg->tls_cert && !(srv->tls = tls_ctx(cfg->tls_cert, cfg->tls_key, diag))) {
        kw_free(srv);
        return KW_EINVAL;
    }
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->gone, NULL);
    snprintf(port, sizeof(port), "%u", (unsigned)cfg->port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(cfg->host, port, &hints, &ai);
    if (g != 0) {
        kw_diag_set(diag, KW_EIO, 0, 0, "cannot resolve %s: %s", cfg->host, gai_strerror(g));
        goto fail;
    }
    srv->lfd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    int one = 1;
    if (srv->lfd < 0 || setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(srv->lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(srv->lfd, 512) != 0) {
        kw_diag_set(diag, KW_EIO, 0, 0, "%s", strerror(errno));
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(srv->lfd, (struct sockaddr *)&ss, &sl);
    if (bound)
        *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    srv->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (srv->stop_fd < 0 || pthread_create(&srv->listener, NULL, listener_main, srv) != 0) {
        kw_diag_set(diag, KW_ENOMEM, 0, 0, "cannot start the gRPC listener");
        rc = KW_ENOMEM;
        goto fail;
    }
    freeaddrinfo(ai);
    *out = srv;
    return KW_OK;
fail:
    if (ai)
        freeaddrinfo(ai);
    if (srv->stop_fd >= 0)
        close(srv->stop_fd);
    if (srv->lfd >= 0)
        close(srv->lfd);
    SSL_CTX_free(srv->tls);
    pthread_cond_destroy(&srv->gone);
    pthread_mutex_destroy(&srv->mu);
    kw_free(srv);
    return rc;
}

void kw_grpc_server_stop(kw_grpc_server_t *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stopping, true);
    uint64_t one = 1;
    ssize_t w = write(srv->stop_fd, &one, sizeof(one));
    (void)w;
    pthread_join(srv->listener, NULL);
    /* Connection threads see `stopping` within a poll period (1 s). */
    pthread_mutex_lock(&srv->mu);
    while (srv->conns > 0)
        pthread_cond_wait(&srv->gone, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    close(srv->lfd);
    close(srv->stop_fd);
    SSL_CTX_free(srv->tls);
    pthread_cond_destroy(&srv->gone);
    pthread_mutex_destroy(&srv->mu);
    kw_free(srv);
}

int kw__grpc_fuzz_feed(const uint8_t *data, size_t n)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    kw_grpc_server_t srv;
    memset(&srv, 0, sizeof(srv));
    srv.cfg.max_streams = KW_GRPC_MAX_STREAMS;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return KW_EIO;
    kw__grpc_conn_t *c = NULL;
    if (conn_new(&srv, sv[0], &c) != KW_OK) {
        close(sv[0]);
        close(sv[1]);
        return KW_ENOMEM;
    }
    char sink[65536];
    bool ok = nghttp2_session_mem_recv(c->ng, (const uint8_t *)preface, sizeof(preface) - 1) >= 0 &&
              nghttp2_session_mem_recv(c->ng, data, n) >= 0;
    for (int round = 0; ok && round < 8; round++) {
        flush_pending(c);
        if (nghttp2_session_send(c->ng) != 0 || flush_out(c) != 0)
            break;
        while (recv(sv[1], sink, sizeof(sink), 0) > 0)
            ;
    }
    conn_free(c); /* closes sv[0] */
    close(sv[1]);
    return ok ? KW_OK : KW_EINVAL;
}
