/*
 * http/http_int.h - internals shared by the files of the http module (router, metrics,
 * server). Nothing outside src/http includes this.
 *
 * Ownership: a kw__router_t owns its compiled route table and label list; the route
 *   definitions (method/pattern strings) it points into are borrowed from the caller's
 *   kw_http_config_t and must outlive the server (they are static tables in practice).
 *   A kw__metrics_t owns its counter arrays.
 * Threads: the router is immutable after kw__router_init and is read by every worker.
 *   Metrics are updated with relaxed atomics from every worker and read by /metrics.
 */
#ifndef KW_HTTP_HTTP_INT_H
#define KW_HTTP_HTTP_INT_H

#include <stdatomic.h>

#include "http.h"

/* Path segments a route template or a request path may have; longer paths are 404. */
#define KW__HTTP_MAX_SEGS 16

typedef struct kw__route {
    const kw_http_route_t *def;
    kw_str_t segs[KW__HTTP_MAX_SEGS]; /* literal text, or the param name for {param} */
    bool is_param[KW__HTTP_MAX_SEGS];
    size_t n_segs;
    size_t n_literals;
    size_t n_params;
    size_t label; /* index into kw__router_t.labels (one per distinct pattern) */
} kw__route_t;

typedef struct kw__router {
    kw__route_t *routes;
    size_t n_routes;
    const char **labels; /* distinct patterns; labels[n_labels - 1] is "unmatched" */
    size_t n_labels;
    bool any_v1; /* some route asked for SpiceDB gateway error fields */
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
    char allow[96]; /* BAD_METHOD: "GET, DELETE" */
    bool v1;        /* 404/405 body carries the gRPC gateway fields */
} kw__match_t;

/* Matches (method, raw path). Literal segments compare byte-exact against the raw path.
 * Among routes matching both, the one with the most literal segments wins, ties go to
 * table order. HEAD is served by a GET route. Paths that are not absolute, contain a
 * "." or ".." segment, an empty segment or too many segments do not match anything. */
void kw__router_match(const kw__router_t *r, kw_str_t method, kw_str_t path, kw__match_t *m);

/* Percent-decodes m->raw_params into req->params (arena memory). false if one fails to
 * decode, is empty, decodes to "." or "..", or contains a NUL byte. */
bool kw__router_decode_params(const kw__match_t *m, kw_http_req_t *req);

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

typedef struct kw__metrics {
    const char *const *labels; /* borrowed from the router */
    size_t n_labels;
    kw__hist_t *hist;         /* one per label */
    kw__metric_slot_t *slots; /* open addressing, KW__HTTP_METRIC_SLOTS, lock-free insert */
    _Atomic uint64_t dropped; /* observations that found the table full */
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

#endif
