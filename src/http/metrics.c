/*
 * http/metrics.c - request counters and the latency histogram, Prometheus text 0.0.4.
 *
 * Hot path is lock-free: a request bumps one histogram (per route label, fixed array)
 * and one counter found in an open-addressing table keyed by (label, method, status).
 * A new key is claimed with a compare-and-swap on an empty slot, so two workers inserting
 * the same key at once end up on the same slot. The key space is small (labels x 8
 * methods x the statuses the service answers), far below the table size; if it ever fills
 * up, observations are counted in `dropped` instead of blocking.
 *
 * Key packing (never 0, so 0 means empty): (label + 1) << 20 | method << 12 | status.
 */
#include <string.h>

#include "http_int.h"

static const double bucket_le[KW__HTTP_N_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const char *const bucket_le_text[KW__HTTP_N_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};

static const char *const method_names[] = {"GET",    "HEAD",  "POST",    "PUT",
                                           "DELETE", "PATCH", "OPTIONS", "OTHER"};
#define N_METHODS KW_ARRAY_LEN(method_names)

static size_t method_index(kw_str_t method)
{
    for (size_t i = 0; i + 1 < N_METHODS; i++)
        if (kw_str_eq_c(method, method_names[i]))
            return i;
    return N_METHODS - 1;
}

const char *kw__http_method_label(kw_str_t method)
{
    return method_names[method_index(method)];
}

int kw__metrics_init(kw__metrics_t *m, const char *const *labels, size_t n_labels)
{
    memset(m, 0, sizeof(*m));
    m->labels = labels;
    m->n_labels = n_labels;
    m->hist = kw_calloc(n_labels ? n_labels : 1, sizeof(*m->hist));
    m->slots = kw_calloc(KW__HTTP_METRIC_SLOTS, sizeof(*m->slots));
    if (!m->hist || !m->slots) {
        kw__metrics_close(m);
        return KW_ENOMEM;
    }
    return KW_OK;
}

void kw__metrics_close(kw__metrics_t *m)
{
    kw_free(m->hist);
    kw_free(m->slots);
    memset(m, 0, sizeof(*m));
}

void kw__metrics_observe(kw__metrics_t *m, kw_str_t method, size_t label, int status,
                         uint64_t duration_ns)
{
    if (label >= m->n_labels)
        return;
    if (status < 100 || status > 999)
        status = 999;
    kw__hist_t *h = &m->hist[label];
    double secs = (double)duration_ns / 1e9;
    size_t b = 0;
    while (b < KW__HTTP_N_BUCKETS && secs > bucket_le[b])
        b++;
    if (b < KW__HTTP_N_BUCKETS)
        atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, duration_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);

    uint64_t key =
        ((uint64_t)label + 1) << 20 | (uint64_t)method_index(method) << 12 | (uint64_t)status;
    size_t mask = KW__HTTP_METRIC_SLOTS - 1;
    size_t i = (size_t)kw_hash_u64(key) & mask;
    for (size_t probe = 0; probe < KW__HTTP_METRIC_SLOTS; probe++, i = (i + 1) & mask) {
        kw__metric_slot_t *s = &m->slots[i];
        uint64_t cur = atomic_load_explicit(&s->key, memory_order_acquire);
        if (cur == 0) {
            uint64_t expect = 0;
            if (atomic_compare_exchange_strong_explicit(&s->key, &expect, key, memory_order_acq_rel,
                                                        memory_order_acquire))
                cur = key;
            else
                cur = expect; /* someone claimed it first: maybe with our key */
        }
        if (cur == key) {
            atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
            return;
        }
    }
    atomic_fetch_add_explicit(&m->dropped, 1, memory_order_relaxed);
}

/* Label values per the exposition format: backslash, double quote and newline escaped. */
static void label_value(kw_buf_t *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            kw_buf_puts(out, "\\\\");
        else if (*p == '"')
            kw_buf_puts(out, "\\\"");
        else if (*p == '\n')
            kw_buf_puts(out, "\\n");
        else
            kw_buf_append(out, p, 1);
    }
}

static uint64_t load(_Atomic uint64_t *v)
{
    return (uint64_t)atomic_load_explicit(v, memory_order_relaxed);
}

/* The hostile-network counters (server.c), after the request metrics so that those
 * stay byte-compatible. */
static void write_defences(kw__metrics_t *m, kw_buf_t *out)
{
    kw_buf_printf(out,
                  "# HELP keyward_http_connections_refused_total Connections closed at accept, "
                  "by reason (limit: the connection limit; per_address: the per-client-address "
                  "cap).\n"
                  "# TYPE keyward_http_connections_refused_total counter\n"
                  "keyward_http_connections_refused_total{reason=\"limit\"} %llu\n"
                  "keyward_http_connections_refused_total{reason=\"per_address\"} %llu\n",
                  (unsigned long long)load(&m->refused[KW__REFUSE_LIMIT]),
                  (unsigned long long)load(&m->refused[KW__REFUSE_PER_ADDR]));
    kw_buf_printf(out,
                  "# HELP keyward_http_deadline_expired_total Requests cut off by an absolute "
                  "deadline, by phase (headers, body: 408; write: the client did not read).\n"
                  "# TYPE keyward_http_deadline_expired_total counter\n"
                  "keyward_http_deadline_expired_total{phase=\"headers\"} %llu\n"
                  "keyward_http_deadline_expired_total{phase=\"body\"} %llu\n"
                  "keyward_http_deadline_expired_total{phase=\"write\"} %llu\n",
                  (unsigned long long)load(&m->expired[KW__EXPIRE_HEADERS]),
                  (unsigned long long)load(&m->expired[KW__EXPIRE_BODY]),
                  (unsigned long long)load(&m->expired[KW__EXPIRE_WRITE]));
    kw_buf_printf(out,
                  "# HELP keyward_http_body_budget_refused_total Requests refused (503) because "
                  "the bodies in flight held the whole body memory budget.\n"
                  "# TYPE keyward_http_body_budget_refused_total counter\n"
                  "keyward_http_body_budget_refused_total %llu\n"
                  "# HELP keyward_http_connections Open client connections.\n"
                  "# TYPE keyward_http_connections gauge\n"
                  "keyward_http_connections %llu\n",
                  (unsigned long long)load(&m->budget_refused),
                  (unsigned long long)load(&m->open_conns));
}

void kw__metrics_write(kw__metrics_t *m, kw_buf_t *out)
{
    kw_buf_puts(out, "# HELP keyward_http_requests_total HTTP requests answered, by method, "
                     "route template and status.\n"
                     "# TYPE keyward_http_requests_total counter\n");
    for (size_t i = 0; i < KW__HTTP_METRIC_SLOTS; i++) {
        uint64_t key = atomic_load_explicit(&m->slots[i].key, memory_order_acquire);
        if (key == 0)
            continue;
        uint64_t n = atomic_load_explicit(&m->slots[i].count, memory_order_relaxed);
        size_t label = (size_t)(key >> 20) - 1;
        size_t meth = (size_t)(key >> 12) & 0xFF;
        unsigned status = (unsigned)(key & 0xFFF);
        if (label >= m->n_labels || meth >= N_METHODS || n == 0)
            continue; /* n == 0: the claiming worker has not counted yet */
        kw_buf_printf(out, "keyward_http_requests_total{method=\"%s\",route=\"",
                      method_names[meth]);
        label_value(out, m->labels[label]);
        kw_buf_printf(out, "\",status=\"%u\"} %llu\n", status, (unsigned long long)n);
    }
    kw_buf_printf(out,
                  "# HELP keyward_http_metrics_dropped_total Request observations not "
                  "counted because the counter table was full.\n"
                  "# TYPE keyward_http_metrics_dropped_total counter\n"
                  "keyward_http_metrics_dropped_total %llu\n",
                  (unsigned long long)atomic_load(&m->dropped));
    kw_buf_puts(out, "# HELP keyward_http_request_duration_seconds Time from the request headers "
                     "being parsed to the response being queued (body read and handler "
                     "included).\n"
                     "# TYPE keyward_http_request_duration_seconds histogram\n");
    for (size_t l = 0; l < m->n_labels; l++) {
        kw__hist_t *h = &m->hist[l];
        /* An observer bumps its bucket before the count, so a count read after the
         * buckets can still lag them by in-flight observations: +Inf is the larger. */
        uint64_t cum = 0;
        for (size_t b = 0; b < KW__HTTP_N_BUCKETS; b++) {
            cum += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
            kw_buf_puts(out, "keyward_http_request_duration_seconds_bucket{route=\"");
            label_value(out, m->labels[l]);
            kw_buf_printf(out, "\",le=\"%s\"} %llu\n", bucket_le_text[b], (unsigned long long)cum);
        }
        uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
        if (count < cum)
            count = cum;
        uint64_t sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
        kw_buf_puts(out, "keyward_http_request_duration_seconds_bucket{route=\"");
        label_value(out, m->labels[l]);
        kw_buf_printf(out, "\",le=\"+Inf\"} %llu\n", (unsigned long long)count);
        kw_buf_puts(out, "keyward_http_request_duration_seconds_sum{route=\"");
        label_value(out, m->labels[l]);
        kw_buf_printf(out, "\"} %.9f\n", (double)sum_ns / 1e9);
        kw_buf_puts(out, "keyward_http_request_duration_seconds_count{route=\"");
        label_value(out, m->labels[l]);
        kw_buf_printf(out, "\"} %llu\n", (unsigned long long)count);
    }
    write_defences(m, out);
}
