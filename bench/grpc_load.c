/*
 * bench/grpc_load.c - a load generator for keyward's gRPC endpoint (issue 13, item 6): HTTP/2
 * client sessions on nghttp2, messages from the project's protobuf-c code (proto/), cleartext
 * (h2c, prior knowledge) on loopback.
 *
 * T threads, each driving its share of C connections with S concurrent streams on every
 * connection (closed loop: a stream that ends starts the next call at once). Every request
 * is encoded before the clock starts (the 5-byte gRPC prefix included) and sent from that
 * buffer, so a call costs the generator one HPACK'd header block, one DATA frame and the
 * answer's parsing: far less than the server's work for it.
 *
 * Modes:
 *   check      CheckPermission, one query per call (picked round-robin from --queries)
 *   checkbulk  CheckBulkPermissions of --items items (default 100) per call
 *   lookup     LookupResources --lookup "TYPE PERM SUBJTYPE:SUBJID": every call streams all
 *              results; reports results/s and the time to the first result
 *   fill       setup for lookup: WriteSchema --schema FILE, then --fill N relationships
 *              "doc:<i>#viewer@user:reader" (the names of --fill-rel) in calls of 1,000
 * --rate R: open loop instead, calls start on a schedule of R per second (each of the C x S
 * slots takes the next due call when free); a call's latency counts from when it was due,
 * so a generator or server running behind shows in the percentiles; gen_lag_* says how
 * late the generator itself sent the calls (its share of that latency) and sent_* the
 * latency counted from when each call was actually sent.
 * A call's answer is checked: grpc-status 0, and for check / checkbulk the decoded
 * permissionship (counted: allowed / denied) - a benchmark of failing calls measures nothing.
 *
 * Usage: grpc_load HOST:PORT MODE [--key K] [--conns C] [--streams S] [--threads T]
 *          [--seconds N] [--warmup N] [--queries FILE] [--items N] [--lookup SPEC]
 *          [--schema FILE] [--fill N] [--fill-rel "doc viewer user:reader"] [--rate R]
 *          [--label TEXT]
 * --queries holds one `type:id permission type:id` per line (bench/svc_dataset.c's
 * svc_keys.tsv turned into agent_api_key:K read user:U, see docs/BENCHMARKS.md).
 * Output: one JSON line (calls, calls/s, items/s, p50/p99/p999 latency in ms, errors).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "authzed/api/v1/permission_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"

#define MAX_STREAMS 256
#define FILL_BATCH 1000

enum mode { M_CHECK, M_BULK, M_LOOKUP, M_FILL };

typedef struct {
    uint8_t *p;
    size_t n;
} blob_t;

/* What every thread shares (read-only once running, but for the counters). */
typedef struct {
    enum mode mode;
    const char *path;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char authority[300];
    char auth[300];
    blob_t *reqs; /* pre-encoded, prefixed requests */
    size_t n_reqs;
    unsigned items;                 /* per call (checkbulk), for items/s */
    int64_t t_end_us, t_measure_us; /* stop; count only calls started after measure */
    bool once;                      /* fill: every request exactly once */
    atomic_size_t next_req;
    double rate;              /* > 0: calls start on a schedule of rate/s (open loop) */
    int64_t t_start_us;       /* the schedule's origin */
    atomic_uint_fast64_t seq; /* the next scheduled call */
} shared_t;

typedef struct conn conn_t;

typedef struct {
    conn_t *conn;
    int32_t id;
    int64_t t0_us;
    size_t req;
    int grpc_status; /* -1: no trailer seen */
    /* the answer's messages, reassembled (check / checkbulk) or counted (lookup) */
    uint8_t *msg;
    size_t msg_len, msg_cap;
    uint8_t pre[5];
    size_t pre_have, body_need, body_have;
    uint64_t results;
    int64_t first_us;
    size_t sent;     /* request bytes given to nghttp2 */
    bool parked;     /* --rate: waiting for due_us */
    int64_t sent_us; /* when it was submitted (t0_us: when it was due) */
    int64_t due_us;
} call_t;

typedef struct worker worker_t;

struct conn {
    worker_t *w;
    int fd;
    nghttp2_session *ng;
    uint8_t wbuf[64 * 1024];
    size_t wlen;
    call_t calls[MAX_STREAMS];
    unsigned active, parked;
    bool dead;
};

struct worker {
    shared_t *sh;
    pthread_t t;
    conn_t *conns;
    unsigned n_conns, streams;
    /* results */
    uint32_t *lat_us, *lag_us; /* lag: how late the generator sent a call (--rate) */
    size_t n_lat, cap_lat;
    uint64_t calls, errors, allowed, denied, results;
    int64_t first_result_us;
    char err[200];
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *msg)
{
    fprintf(stderr, "grpc_load: %s\n", msg);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* ---- request encoding (before the clock starts) ---- */

static blob_t frame_msg(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    blob_t b = {xmalloc(n + 5), n + 5};
    b.p[0] = 0;
    b.p[1] = (uint8_t)(n >> 24);
    b.p[2] = (uint8_t)(n >> 16);
    b.p[3] = (uint8_t)(n >> 8);
    b.p[4] = (uint8_t)n;
    protobuf_c_message_pack(m, b.p + 5);
    return b;
}

typedef struct {
    char *rt, *rid, *perm, *st, *sid;
} query_t;

/* "type:id" into its halves (in place). */
static bool split_obj(char *s, char **type, char **id)
{
    char *c = strchr(s, ':');
    if (!c || c == s || !c[1])
        return false;
    *c = '\0';
    *type = s;
    *id = c + 1;
    return true;
}

static query_t *read_queries(const char *file, size_t *n)
{
    FILE *f = fopen(file, "r");
    if (!f)
        die("cannot open the --queries file");
    size_t cap = 1024, k = 0;
    query_t *q = xmalloc(cap * sizeof(*q));
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        char a[400], p[200], s[400];
        if (sscanf(line, "%399s %199s %399s", a, p, s) != 3)
            continue;
        if (k == cap) {
            cap *= 2;
            q = realloc(q, cap * sizeof(*q));
            if (!q)
                die("out of memory");
        }
        char *ra = strdup(a), *rs = strdup(s);
        q[k].perm = strdup(p);
        if (!ra || !rs || !q[k].perm)
            die("out of memory");
        if (!split_obj(ra, &q[k].rt, &q[k].rid) || !split_obj(rs, &q[k].st, &q[k].sid))
            die("a --queries line is not `type:id permission type:id`");
        k++;
    }
    fclose(f);
    if (k == 0)
        die("no queries in the --queries file");
    *n = k;
    return q;
}

static blob_t enc_check(const query_t *q)
{
    Authzed__Api__V1__ObjectReference res = AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
    Authzed__Api__V1__ObjectReference so = AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
    Authzed__Api__V1__SubjectReference sub = AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
    Authzed__Api__V1__CheckPermissionRequest r = AUTHZED__API__V1__CHECK_PERMISSION_REQUEST__INIT;
    res.object_type = q->rt;
    res.object_id = q->rid;
    so.object_type = q->st;
    so.object_id = q->sid;
    sub.object = &so;
    r.resource = &res;
    r.permission = q->perm;
    r.subject = &sub;
    return frame_msg(&r.base);
}

static blob_t enc_bulk(const query_t *qs, size_t nq, size_t first, unsigned items)
{
    Authzed__Api__V1__ObjectReference *res = xmalloc(items * sizeof(*res));
    Authzed__Api__V1__ObjectReference *so = xmalloc(items * sizeof(*so));
    Authzed__Api__V1__SubjectReference *sub = xmalloc(items * sizeof(*sub));
    Authzed__Api__V1__CheckBulkPermissionsRequestItem *it = xmalloc(items * sizeof(*it));
    Authzed__Api__V1__CheckBulkPermissionsRequestItem **ip = xmalloc(items * sizeof(*ip));
    for (unsigned i = 0; i < items; i++) {
        const query_t *q = &qs[(first + i) % nq];
        authzed__api__v1__object_reference__init(&res[i]);
        authzed__api__v1__object_reference__init(&so[i]);
        authzed__api__v1__subject_reference__init(&sub[i]);
        authzed__api__v1__check_bulk_permissions_request_item__init(&it[i]);
        res[i].object_type = q->rt;
        res[i].object_id = q->rid;
        so[i].object_type = q->st;
        so[i].object_id = q->sid;
        sub[i].object = &so[i];
        it[i].resource = &res[i];
        it[i].permission = q->perm;
        it[i].subject = &sub[i];
        ip[i] = &it[i];
    }
    Authzed__Api__V1__CheckBulkPermissionsRequest r =
        AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_REQUEST__INIT;
    r.n_items = items;
    r.items = ip;
    blob_t b = frame_msg(&r.base);
    free(res);
    free(so);
    free(sub);
    free(it);
    free(ip);
    return b;
}

static blob_t enc_lookup(const char *spec)
{
    char rt[200], perm[200], subj[400];
    if (sscanf(spec, "%199s %199s %399s", rt, perm, subj) != 3)
        die("--lookup wants \"TYPE PERMISSION SUBJTYPE:SUBJID\"");
    char *st, *sid;
    if (!split_obj(subj, &st, &sid))
        die("--lookup: the subject is SUBJTYPE:SUBJID");
    Authzed__Api__V1__ObjectReference so = AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
    Authzed__Api__V1__SubjectReference sub = AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
    Authzed__Api__V1__LookupResourcesRequest r = AUTHZED__API__V1__LOOKUP_RESOURCES_REQUEST__INIT;
    so.object_type = st;
    so.object_id = sid;
    sub.object = &so;
    r.resource_object_type = rt;
    r.permission = perm;
    r.subject = &sub;
    return frame_msg(&r.base);
}

/* WriteRelationships of TOUCH type:<first..first+n-1>#rel@subject. */
static blob_t enc_fill(const char *type, const char *rel, char *st, char *sid, size_t first,
                       size_t n)
{
    Authzed__Api__V1__ObjectReference *res = xmalloc(n * sizeof(*res));
    Authzed__Api__V1__Relationship *r = xmalloc(n * sizeof(*r));
    Authzed__Api__V1__RelationshipUpdate *u = xmalloc(n * sizeof(*u));
    Authzed__Api__V1__RelationshipUpdate **up = xmalloc(n * sizeof(*up));
    char *ids = xmalloc(n * 24);
    Authzed__Api__V1__ObjectReference so = AUTHZED__API__V1__OBJECT_REFERENCE__INIT;
    Authzed__Api__V1__SubjectReference sub = AUTHZED__API__V1__SUBJECT_REFERENCE__INIT;
    so.object_type = st;
    so.object_id = sid;
    sub.object = &so;
    for (size_t i = 0; i < n; i++) {
        authzed__api__v1__object_reference__init(&res[i]);
        authzed__api__v1__relationship__init(&r[i]);
        authzed__api__v1__relationship_update__init(&u[i]);
        snprintf(ids + i * 24, 24, "%zu", first + i);
        res[i].object_type = (char *)type;
        res[i].object_id = ids + i * 24;
        r[i].resource = &res[i];
        r[i].relation = (char *)rel;
        r[i].subject = &sub;
        u[i].operation = AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
        u[i].relationship = &r[i];
        up[i] = &u[i];
    }
    Authzed__Api__V1__WriteRelationshipsRequest w =
        AUTHZED__API__V1__WRITE_RELATIONSHIPS_REQUEST__INIT;
    w.n_updates = n;
    w.updates = up;
    blob_t b = frame_msg(&w.base);
    free(res);
    free(r);
    free(u);
    free(up);
    free(ids);
    return b;
}

/* ---- the HTTP/2 client ---- */

static uint32_t clamp_us(int64_t us)
{
    return us < 0 ? 0 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void lat_add(worker_t *w, int64_t lat, int64_t lag)
{
    if (w->n_lat == w->cap_lat) {
        w->cap_lat = w->cap_lat ? w->cap_lat * 2 : 65536;
        w->lat_us = realloc(w->lat_us, w->cap_lat * sizeof(uint32_t));
        w->lag_us = realloc(w->lag_us, w->cap_lat * sizeof(uint32_t));
        if (!w->lat_us || !w->lag_us)
            die("out of memory");
    }
    w->lat_us[w->n_lat] = clamp_us(lat);
    w->lag_us[w->n_lat++] = clamp_us(lag);
}

/* A failed call or connection: counted, the first one's words kept for the report. */
static void fail(worker_t *w, const char *what, const char *detail)
{
    w->errors++;
    if (!w->err[0])
        snprintf(w->err, sizeof(w->err), "%s%s", what, detail);
}

static ssize_t cb_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ng;
    (void)flags;
    conn_t *c = ud;
    if (c->wlen == sizeof(c->wbuf))
        return NGHTTP2_ERR_WOULDBLOCK;
    size_t n = sizeof(c->wbuf) - c->wlen;
    if (n > len)
        n = len;
    memcpy(c->wbuf + c->wlen, data, n);
    c->wlen += n;
    return (ssize_t)n;
}

static ssize_t cb_read_req(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    call_t *k = src->ptr;
    const blob_t *b = &k->conn->w->sh->reqs[k->req];
    size_t n = b->n - k->sent;
    if (n > length)
        n = length;
    memcpy(buf, b->p + k->sent, n);
    k->sent += n;
    if (k->sent == b->n)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static bool submit_call(conn_t *c, call_t *k, int64_t t0);

/* Starts the next call in slot k, or (--rate) parks the slot until the call's scheduled
 * start; false when the run is over. */
static bool start_call(conn_t *c, call_t *k)
{
    shared_t *sh = c->w->sh;
    int64_t now = now_us();
    if (now >= sh->t_end_us)
        return false;
    if (sh->rate <= 0)
        return submit_call(c, k, now);
    uint64_t n = atomic_fetch_add(&sh->seq, 1);
    int64_t due = sh->t_start_us + (int64_t)((double)n * 1e6 / sh->rate);
    if (due >= sh->t_end_us)
        return false;
    if (due > now) {
        k->parked = true;
        k->due_us = due;
        c->parked++;
        return true;
    }
    /* Behind schedule: the latency counts from when the call was due (no coordinated
     * omission). */
    return submit_call(c, k, due);
}

static bool submit_call(conn_t *c, call_t *k, int64_t t0)
{
    shared_t *sh = c->w->sh;
    size_t r = atomic_fetch_add(&sh->next_req, 1);
    if (sh->once) {
        if (r >= sh->n_reqs)
            return false;
    } else {
        r %= sh->n_reqs;
    }
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)sh->path, 5, strlen(sh->path), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)sh->authority, 10, strlen(sh->authority),
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"authorization", (uint8_t *)sh->auth, 13, strlen(sh->auth),
         NGHTTP2_NV_FLAG_NO_INDEX},
    };
    k->conn = c;
    k->req = r;
    k->sent = 0;
    k->t0_us = t0;
    k->sent_us = now_us();
    k->grpc_status = -1;
    k->msg_len = k->pre_have = k->body_need = k->body_have = 0;
    k->results = 0;
    k->first_us = 0;
    nghttp2_data_provider prd = {.source.ptr = k, .read_callback = cb_read_req};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, sizeof(nv) / sizeof(nv[0]), &prd, k);
    if (id < 0) {
        fail(c->w, "submit_request: ", nghttp2_strerror(id));
        return false;
    }
    k->id = id;
    c->active++;
    return true;
}

/* ---- reading answers: a protobuf wire walk, no allocation (decoding 100-item answers
 * with protobuf-c's unpack cost the generator about 1 us per item) ---- */

typedef struct {
    const uint8_t *p, *end;
} wire_t;

static bool wire_varint(wire_t *r, uint64_t *v)
{
    *v = 0;
    for (int sh = 0; sh < 64 && r->p < r->end; sh += 7) {
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* The next field: its number, wire type, and (length-delimited) its bytes in *sub or
 * (varint) its value in *v. false at the end or on malformed bytes (*bad set). */
static bool wire_next(wire_t *r, uint32_t *field, wire_t *sub, uint64_t *v, bool *bad)
{
    uint64_t key, len;
    if (r->p == r->end)
        return false;
    if (!wire_varint(r, &key))
        goto bad;
    *field = (uint32_t)(key >> 3);
    switch (key & 7) {
    case 0:
        if (!wire_varint(r, v))
            goto bad;
        return true;
    case 2:
        if (!wire_varint(r, &len) || len > (uint64_t)(r->end - r->p))
            goto bad;
        sub->p = r->p;
        sub->end = r->p + len;
        r->p += len;
        return true;
    case 1:
        if (r->end - r->p < 8)
            goto bad;
        r->p += 8;
        *v = 0;
        return true;
    case 5:
        if (r->end - r->p < 4)
            goto bad;
        r->p += 4;
        *v = 0;
        return true;
    }
bad:
    *bad = true;
    return false;
}

#define PERM_HAS                                                                                   \
    AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__PERMISSIONSHIP__PERMISSIONSHIP_HAS_PERMISSION

/* One complete response message of call k: a CheckPermissionResponse's permissionship
 * (field 2), or every CheckBulkPermissionsPair (field 2) holding an item (field 2, whose
 * permissionship is field 1) and not an error (field 3); counted when k is measured. */
static void on_message(worker_t *w, call_t *k, const uint8_t *m, size_t n)
{
    k->results++;
    bool counted = k->t0_us >= w->sh->t_measure_us, bad = false;
    wire_t r = {m, m + n}, sub;
    uint32_t f;
    uint64_t v;
    if (w->sh->mode == M_CHECK) {
        uint64_t perm = 0;
        while (wire_next(&r, &f, &sub, &v, &bad))
            if (f == 2)
                perm = v;
        if (bad || perm == 0)
            fail(w, "undecodable CheckPermissionResponse", "");
        else if (counted)
            *(perm == PERM_HAS ? &w->allowed : &w->denied) += 1;
    } else if (w->sh->mode == M_BULK) {
        size_t pairs = 0;
        while (wire_next(&r, &f, &sub, &v, &bad)) {
            if (f != 2)
                continue;
            pairs++;
            wire_t pr = sub, it;
            uint64_t perm = 0;
            bool item = false;
            while (wire_next(&pr, &f, &it, &v, &bad)) {
                if (f == 3) {
                    fail(w, "a CheckBulkPermissions pair with an error", "");
                } else if (f == 2) {
                    item = true;
                    wire_t ir = it;
                    while (wire_next(&ir, &f, &sub, &v, &bad))
                        if (f == 1)
                            perm = v;
                }
            }
            if (item && counted)
                *(perm == PERM_HAS ? &w->allowed : &w->denied) += 1;
        }
        if (bad)
            fail(w, "undecodable CheckBulkPermissionsResponse", "");
        else if (pairs != w->sh->items)
            fail(w, "a CheckBulkPermissionsResponse of the wrong size", "");
    }
}

static int cb_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    conn_t *c = ud;
    call_t *k = nghttp2_session_get_stream_user_data(ng, id);
    if (!k)
        return 0;
    bool keep = c->w->sh->mode == M_CHECK || c->w->sh->mode == M_BULK;
    while (len > 0) {
        if (k->pre_have < 5) {
            size_t t = 5 - k->pre_have < len ? 5 - k->pre_have : len;
            memcpy(k->pre + k->pre_have, data, t);
            k->pre_have += t;
            data += t;
            len -= t;
            if (k->pre_have < 5)
                break;
            k->body_need = ((size_t)k->pre[1] << 24) | ((size_t)k->pre[2] << 16) |
                           ((size_t)k->pre[3] << 8) | k->pre[4];
            k->body_have = 0;
            k->msg_len = 0;
            if (keep && k->msg_cap < k->body_need) {
                free(k->msg);
                k->msg_cap = k->body_need;
                k->msg = xmalloc(k->msg_cap);
            }
        }
        size_t t = k->body_need - k->body_have < len ? k->body_need - k->body_have : len;
        if (keep)
            memcpy(k->msg + k->body_have, data, t);
        k->body_have += t;
        data += t;
        len -= t;
        if (k->body_have == k->body_need) {
            if (k->results == 0)
                k->first_us = now_us();
            on_message(c->w, k, k->msg, k->body_need);
            k->pre_have = 0;
        }
    }
    return 0;
}

static int cb_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *val, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    call_t *k = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (k && nl == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int v = 0;
        for (size_t i = 0; i < vl && val[i] >= '0' && val[i] <= '9'; i++)
            v = v * 10 + (val[i] - '0');
        k->grpc_status = v;
    } else if (k && nl == 12 && memcmp(name, "grpc-message", 12) == 0 && !k->conn->w->err[0]) {
        snprintf(k->conn->w->err, sizeof(k->conn->w->err), "grpc-message: %.*s", (int)vl, val);
    }
    return 0;
}

static int cb_close(nghttp2_session *ng, int32_t id, uint32_t err, void *ud)
{
    conn_t *c = ud;
    worker_t *w = c->w;
    call_t *k = nghttp2_session_get_stream_user_data(ng, id);
    if (!k)
        return 0;
    c->active--;
    int64_t now = now_us();
    if (err != NGHTTP2_NO_ERROR) {
        fail(w, "stream reset: ", nghttp2_http2_strerror(err));
    } else if (k->grpc_status != 0) {
        char s[16];
        snprintf(s, sizeof(s), "%d", k->grpc_status);
        fail(w, "grpc-status ", s);
    } else if (k->t0_us >= w->sh->t_measure_us) {
        w->calls++;
        w->results += k->results;
        lat_add(w, now - k->t0_us, k->sent_us - k->t0_us);
        if (k->first_us && (!w->first_result_us || k->first_us - k->t0_us < w->first_result_us))
            w->first_result_us = k->first_us - k->t0_us;
    }
    if (!c->dead)
        start_call(c, k);
    return 0;
}

static bool conn_open(worker_t *w, conn_t *c)
{
    shared_t *sh = w->sh;
    c->w = w;
    c->fd = socket(sh->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sh->addr, sh->addr_len) != 0) {
        fail(w, "connect: ", strerror(errno));
        return false;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        fail(w, "fcntl: ", strerror(errno));
        return false;
    }
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        die("out of memory");
    nghttp2_session_callbacks_set_send_callback(cbs, cb_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_close);
    int e = nghttp2_session_client_new(&c->ng, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    if (e != 0)
        die("out of memory");
    /* Large windows: the generator must never be what slows a stream down. */
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16u << 20},
                                   {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, 64 << 20);
    return true;
}

/* Writes what wbuf holds as far as the socket takes it; false when the peer is gone. */
static bool flush_conn(conn_t *c)
{
    size_t off = 0;
    while (off < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + off, c->wlen - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            return false;
        }
        off += (size_t)n;
    }
    memmove(c->wbuf, c->wbuf + off, c->wlen - off);
    c->wlen -= off;
    return true;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct pollfd *pf = xmalloc(w->n_conns * sizeof(*pf));
    uint8_t buf[64 * 1024];
    for (unsigned i = 0; i < w->n_conns; i++) {
        conn_t *c = &w->conns[i];
        if (!conn_open(w, c)) {
            c->dead = true;
            continue;
        }
        for (unsigned s = 0; s < w->streams; s++)
            if (!start_call(c, &c->calls[s]))
                break;
    }
    for (;;) {
        unsigned live = 0;
        int64_t now = now_us(), wait_us = 1000000;
        for (unsigned i = 0; i < w->n_conns; i++) {
            conn_t *c = &w->conns[i];
            pf[i] = (struct pollfd){-1, 0, 0};
            if (c->dead)
                continue;
            for (unsigned s = 0; c->parked && s < w->streams; s++) {
                call_t *k = &c->calls[s];
                if (!k->parked)
                    continue;
                if (k->due_us <= now) {
                    k->parked = false;
                    c->parked--;
                    submit_call(c, k, k->due_us);
                } else if (k->due_us - now < wait_us) {
                    wait_us = k->due_us - now;
                }
            }
            if (nghttp2_session_send(c->ng) != 0 || !flush_conn(c)) {
                fail(w, "connection lost while sending", "");
                c->dead = true;
                continue;
            }
            if (c->active == 0 && c->parked == 0 && c->wlen == 0)
                continue; /* nothing in flight: this connection is done */
            live++;
            pf[i].fd = c->fd;
            pf[i].events = POLLIN | (c->wlen || nghttp2_session_want_write(c->ng) ? POLLOUT : 0);
        }
        if (live == 0)
            break;
        struct timespec ts = {(time_t)(wait_us / 1000000), (long)(wait_us % 1000000) * 1000};
        if (ppoll(pf, w->n_conns, &ts, NULL) < 0 && errno != EINTR)
            die("poll failed");
        for (unsigned i = 0; i < w->n_conns; i++) {
            conn_t *c = &w->conns[i];
            if (c->dead || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            for (;;) {
                ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (n <= 0) {
                    fail(w, "the server closed the connection", "");
                    c->dead = true;
                    break;
                }
                if (nghttp2_session_mem_recv(c->ng, buf, (size_t)n) < 0) {
                    fail(w, "HTTP/2 protocol error from the server", "");
                    c->dead = true;
                    break;
                }
                if ((size_t)n < sizeof(buf))
                    break;
            }
        }
    }
    for (unsigned i = 0; i < w->n_conns; i++) {
        conn_t *c = &w->conns[i];
        if (c->ng)
            nghttp2_session_del(c->ng);
        if (c->fd > 0)
            close(c->fd);
        for (unsigned s = 0; s < MAX_STREAMS; s++)
            free(c->calls[s].msg);
    }
    free(pf);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint32_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)((double)n * q);
    if (i >= n)
        i = n - 1;
    return v[i] / 1000.0;
}

static char *slurp(const char *file)
{
    FILE *f = fopen(file, "rb");
    if (!f)
        die("cannot open the --schema file");
    size_t cap = 4096, n = 0;
    char *s = xmalloc(cap);
    size_t r;
    while ((r = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            cap *= 2;
            s = realloc(s, cap);
            if (!s)
                die("out of memory");
        }
    }
    fclose(f);
    s[n] = '\0';
    return s;
}

/* One run of sh over conns x streams on threads; prints the JSON line. */
static int run(shared_t *sh, const char *mode_name, const char *label, unsigned conns,
               unsigned streams, unsigned threads, double seconds, double warmup)
{
    worker_t *ws = calloc(threads, sizeof(*ws));
    conn_t *cs = calloc(conns, sizeof(*cs));
    if (!ws || !cs)
        die("out of memory");
    int64_t t0 = now_us();
    sh->t_measure_us = t0 + (int64_t)(warmup * 1e6);
    sh->t_end_us = sh->t_measure_us + (int64_t)(seconds * 1e6);
    atomic_store(&sh->next_req, 0);
    atomic_store(&sh->seq, 0);
    sh->t_start_us = t0;
    for (unsigned t = 0, at = 0; t < threads; t++) {
        unsigned n = conns / threads + (t < conns % threads);
        ws[t].sh = sh;
        ws[t].conns = cs + at;
        ws[t].n_conns = n;
        ws[t].streams = streams;
        at += n;
        if (pthread_create(&ws[t].t, NULL, worker_main, &ws[t]) != 0)
            die("cannot start a thread");
    }
    uint64_t calls = 0, errors = 0, allowed = 0, denied = 0, results = 0;
    int64_t first = 0;
    size_t n_lat = 0;
    const char *err = "";
    for (unsigned t = 0; t < threads; t++) {
        pthread_join(ws[t].t, NULL);
        calls += ws[t].calls;
        errors += ws[t].errors;
        allowed += ws[t].allowed;
        denied += ws[t].denied;
        results += ws[t].results;
        n_lat += ws[t].n_lat;
        if (ws[t].first_result_us && (!first || ws[t].first_result_us < first))
            first = ws[t].first_result_us;
        if (!err[0] && ws[t].err[0])
            err = ws[t].err;
    }
    int64_t t1 = now_us();
    double secs = (double)(t1 - (sh->t_measure_us < t1 ? sh->t_measure_us : t0)) / 1e6;
    if (sh->once || sh->mode == M_LOOKUP)
        secs = (double)(t1 - t0) / 1e6;
    uint32_t *lat = xmalloc(n_lat * sizeof(uint32_t) + 1);
    uint32_t *lag = xmalloc(n_lat * sizeof(uint32_t) + 1);
    uint32_t *from_send = xmalloc(n_lat * sizeof(uint32_t) + 1);
    for (unsigned t = 0, at = 0; t < threads; t++) {
        memcpy(lat + at, ws[t].lat_us, ws[t].n_lat * sizeof(uint32_t));
        memcpy(lag + at, ws[t].lag_us, ws[t].n_lat * sizeof(uint32_t));
        at += (unsigned)ws[t].n_lat;
        free(ws[t].lat_us);
        free(ws[t].lag_us);
    }
    for (size_t i = 0; i < n_lat; i++)
        from_send[i] = lat[i] - lag[i]; /* lag <= lat: sent after due, answered after sent */
    qsort(lat, n_lat, sizeof(uint32_t), cmp_u32);
    qsort(lag, n_lat, sizeof(uint32_t), cmp_u32);
    qsort(from_send, n_lat, sizeof(uint32_t), cmp_u32);
    double per_s = (double)calls / secs;
    printf("{\"bench\":\"grpc_load\",\"mode\":\"%s\",\"label\":\"%s\",\"conns\":%u,"
           "\"streams_per_conn\":%u,\"threads\":%u,\"seconds\":%.2f,\"calls\":%llu,"
           "\"rate\":%.0f,\"calls_per_s\":%.0f",
           mode_name, label, conns, streams, threads, secs, (unsigned long long)calls, sh->rate,
           per_s);
    if (sh->mode == M_BULK)
        printf(",\"items_per_call\":%u,\"items_per_s\":%.0f", sh->items, per_s * sh->items);
    if (sh->mode == M_CHECK || sh->mode == M_BULK)
        printf(",\"allowed\":%llu,\"denied\":%llu", (unsigned long long)allowed,
               (unsigned long long)denied);
    if (sh->mode == M_LOOKUP)
        printf(",\"results\":%llu,\"results_per_s\":%.0f,\"first_result_ms\":%.2f",
               (unsigned long long)results, (double)results / secs, first / 1000.0);
    printf(",\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"errors\":%llu",
           pct_ms(lat, n_lat, 0.5), pct_ms(lat, n_lat, 0.99), pct_ms(lat, n_lat, 0.999),
           (unsigned long long)errors);
    if (sh->rate > 0) /* the part of the latency that is the generator's own delay */
        printf(",\"gen_lag_p50_ms\":%.3f,\"gen_lag_p99_ms\":%.3f,\"sent_p50_ms\":%.3f,"
               "\"sent_p99_ms\":%.3f",
               pct_ms(lag, n_lat, 0.5), pct_ms(lag, n_lat, 0.99), pct_ms(from_send, n_lat, 0.5),
               pct_ms(from_send, n_lat, 0.99));
    if (err[0]) {
        printf(",\"first_error\":\"");
        for (const char *p = err; *p; p++)
            if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
                putchar(*p);
        putchar('"');
    }
    printf("}\n");
    fflush(stdout);
    free(lat);
    free(lag);
    free(from_send);
    free(ws);
    free(cs);
    return errors ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: grpc_load HOST:PORT check|checkbulk|lookup|fill [--key K] [--conns C]\n"
            "  [--streams S] [--threads T] [--seconds N] [--warmup N] [--queries FILE]\n"
            "  [--items N] [--lookup \"TYPE PERM SUBJTYPE:SUBJID\"] [--schema FILE]\n"
            "  [--fill N] [--fill-rel \"TYPE RELATION SUBJTYPE:SUBJID\"] [--rate CALLS_PER_S]\n"
            "  [--label TEXT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    const char *target = argv[1], *mode_name = argv[2];
    const char *key = "", *queries = NULL, *lookup = NULL, *schema = NULL, *label = "";
    const char *fill_rel = "doc viewer user:reader";
    unsigned conns = 4, streams = 16, threads = 1, items = 100;
    double seconds = 10, warmup = 1;
    size_t fill = 0;
    double sh_rate = 0;
    for (int i = 3; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--key"))
            key = v;
        else if (!strcmp(a, "--conns"))
            conns = (unsigned)atoi(v);
        else if (!strcmp(a, "--streams"))
            streams = (unsigned)atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = (unsigned)atoi(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atof(v);
        else if (!strcmp(a, "--queries"))
            queries = v;
        else if (!strcmp(a, "--items"))
            items = (unsigned)atoi(v);
        else if (!strcmp(a, "--lookup"))
            lookup = v;
        else if (!strcmp(a, "--schema"))
            schema = v;
        else if (!strcmp(a, "--fill"))
            fill = (size_t)strtoull(v, NULL, 10);
        else if (!strcmp(a, "--fill-rel"))
            fill_rel = v;
        else if (!strcmp(a, "--rate"))
            sh_rate = atof(v);
        else if (!strcmp(a, "--label"))
            label = v;
        else
            usage();
    }
    if (conns == 0 || streams == 0 || streams > MAX_STREAMS || threads == 0 || items == 0 ||
        seconds <= 0 || warmup < 0)
        die("--conns, --streams (<= 256), --threads, --items and --seconds must be positive");
    if (threads > conns)
        threads = conns;

    static shared_t sh;
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target)
        die("the target is HOST:PORT");
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - target), target);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
        die("cannot resolve the target");
    memcpy(&sh.addr, ai->ai_addr, ai->ai_addrlen);
    sh.addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    snprintf(sh.authority, sizeof(sh.authority), "%s", target);
    snprintf(sh.auth, sizeof(sh.auth), "Bearer %s", key);
    sh.items = 1;
    sh.rate = sh_rate;

    if (!strcmp(mode_name, "check") || !strcmp(mode_name, "checkbulk")) {
        if (!queries)
            die("check and checkbulk need --queries FILE");
        size_t nq;
        query_t *q = read_queries(queries, &nq);
        bool bulk = mode_name[5] == 'b';
        sh.mode = bulk ? M_BULK : M_CHECK;
        sh.path = bulk ? "/authzed.api.v1.PermissionsService/CheckBulkPermissions"
                       : "/authzed.api.v1.PermissionsService/CheckPermission";
        sh.items = bulk ? items : 1;
        sh.n_reqs = bulk ? (nq + items - 1) / items : nq;
        if (bulk && sh.n_reqs < 64)
            sh.n_reqs = 64; /* distinct bodies, items wrapping around the queries */
        sh.reqs = xmalloc(sh.n_reqs * sizeof(blob_t));
        for (size_t i = 0; i < sh.n_reqs; i++)
            sh.reqs[i] = bulk ? enc_bulk(q, nq, i * items, items) : enc_check(&q[i]);
        return run(&sh, mode_name, label, conns, streams, threads, seconds, warmup);
    }
    if (!strcmp(mode_name, "lookup")) {
        if (!lookup)
            die("lookup needs --lookup \"TYPE PERM SUBJTYPE:SUBJID\"");
        sh.mode = M_LOOKUP;
        sh.path = "/authzed.api.v1.PermissionsService/LookupResources";
        sh.n_reqs = 1;
        sh.reqs = xmalloc(sizeof(blob_t));
        sh.reqs[0] = enc_lookup(lookup);
        /* --seconds bounds the run; each stream runs one full lookup after another */
        return run(&sh, mode_name, label, conns, streams, threads, seconds, 0);
    }
    if (!strcmp(mode_name, "fill")) {
        if (!schema || fill == 0)
            die("fill needs --schema FILE and --fill N");
        char type[200], rel[200], subj[400], *st, *sid;
        if (sscanf(fill_rel, "%199s %199s %399s", type, rel, subj) != 3 ||
            !split_obj(subj, &st, &sid))
            die("--fill-rel wants \"TYPE RELATION SUBJTYPE:SUBJID\"");
        Authzed__Api__V1__WriteSchemaRequest ws = AUTHZED__API__V1__WRITE_SCHEMA_REQUEST__INIT;
        ws.schema = slurp(schema);
        sh.mode = M_FILL;
        sh.once = true;
        sh.path = "/authzed.api.v1.SchemaService/WriteSchema";
        sh.n_reqs = 1;
        sh.reqs = xmalloc(sizeof(blob_t));
        sh.reqs[0] = frame_msg(&ws.base);
        int rc = run(&sh, "fill-schema", label, 1, 1, 1, 3600, 0);
        if (rc != 0)
            return rc;
        sh.path = "/authzed.api.v1.PermissionsService/WriteRelationships";
        sh.n_reqs = (fill + FILL_BATCH - 1) / FILL_BATCH;
        sh.reqs = xmalloc(sh.n_reqs * sizeof(blob_t));
        for (size_t i = 0; i < sh.n_reqs; i++) {
            size_t first = i * FILL_BATCH;
            sh.reqs[i] = enc_fill(type, rel, st, sid, first,
                                  fill - first < FILL_BATCH ? fill - first : FILL_BATCH);
        }
        return run(&sh, "fill", label, 1, 4, 1, 3600, 0);
    }
    usage();
    return 2;
}
