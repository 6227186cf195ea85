/*
 * api/lastused.c - a key's last use, coalesced in memory and flushed in batches.
 *
 * Every successful key authentication records (key id, now) here instead of writing the
 * row: a stripe of the table is locked for one insert-or-max, no database work is done on
 * the request's path. A thread of its own flushes the table every `interval_ms` (env
 * KEYWARD_LAST_USED_FLUSH_MS, default 5000): it swaps each stripe's table for an empty one
 * and writes the entries with kw_store_keys_touch in batches of FLUSH_BATCH (each batch one
 * short transaction, outside the revision order). So:
 *   - staleness: a stored last_used_at is at most one interval plus one flush behind; this
 *     instance's own reads (GET of a key) merge the pending value (but for the moment a flush
 *     has taken a key's entry and not yet written it: the stored value shows meanwhile);
 *   - crash loss: a crash (SIGKILL, power) loses at most the uses of the interval in flight;
 *     a clean stop (SIGTERM) flushes once more;
 *   - a failed flush puts its entries back (kept as the later time), retried next interval;
 *   - memory: at most MAX_ENTRIES pending ids (a use beyond that is counted as dropped,
 *     never blocks the request); an id is 37 bytes + the time.
 *
 * Lock order: a stripe's mutex is a leaf (nothing is called while holding it); the flush
 * thread's mutex (tick_mu) guards only the stop flag and is never held with a stripe's.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "api"

#define STRIPES 16
#define STRIPE_MIN_CAP 64
#define MAX_ENTRIES (256u * 1024u) /* pending ids over all stripes */
#define FLUSH_BATCH 512
#define DEFAULT_INTERVAL_MS 5000

typedef struct stripe {
    pthread_mutex_t mu;
    kw_key_use_t *tab; /* open addressing; id[0] == '\0' marks a free slot */
    size_t n, cap;     /* cap is 0 or a power of two */
} stripe_t;

struct kw__lastused {
    kw_store_t *store;
    stripe_t stripes[STRIPES];
    unsigned interval_ms;
    pthread_t thread;
    bool started;
    pthread_mutex_t tick_mu;
    pthread_cond_t tick_cv;
    bool stop;
    _Atomic size_t pending; /* entries over all stripes */
    _Atomic uint64_t flushed, dropped, flush_failures;
};

static uint64_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *id; id++) {
        h ^= (unsigned char)*id;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The slot of id in t (cap a power of two, never full): its entry or the free slot. */
static kw_key_use_t *slot_of(kw_key_use_t *t, size_t cap, const char *id, uint64_t h)
{
    size_t i = (size_t)h & (cap - 1);
    while (t[i].id[0] && strcmp(t[i].id, id) != 0)
        i = (i + 1) & (cap - 1);
    return &t[i];
}

/* Doubles the stripe's table (under its mutex). false on OOM: nothing changed. */
static bool stripe_grow(stripe_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : STRIPE_MIN_CAP;
    kw_key_use_t *t = kw_calloc(cap, sizeof(*t));
    if (!t)
        return false;
    for (size_t i = 0; i < s->cap; i++)
        if (s->tab[i].id[0])
            *slot_of(t, cap, s->tab[i].id, id_hash(s->tab[i].id)) = s->tab[i];
    kw_free(s->tab);
    s->tab = t;
    s->cap = cap;
    return true;
}

/* Keeps the later of the pending time and at_us (under the stripe's mutex). */
static void stripe_put(kw__lastused_t *lu, stripe_t *s, const char *id, uint64_t h, int64_t at_us)
{
    if (s->cap) {
        kw_key_use_t *e = slot_of(s->tab, s->cap, id, h);
        if (e->id[0]) {
            if (e->at_us < at_us)
                e->at_us = at_us;
            return;
        }
    }
    if (atomic_load_explicit(&lu->pending, memory_order_relaxed) >= MAX_ENTRIES ||
        ((s->n + 1) * 4 > s->cap * 3 && !stripe_grow(s))) {
        atomic_fetch_add_explicit(&lu->dropped, 1, memory_order_relaxed);
        return;
    }
    kw_key_use_t *e = slot_of(s->tab, s->cap, id, h);
    memcpy(e->id, id, sizeof(e->id));
    e->at_us = at_us;
    s->n++;
    atomic_fetch_add_explicit(&lu->pending, 1, memory_order_relaxed);
}

void kw__lastused_record(kw__lastused_t *lu, const char *id, int64_t at_us)
{
    if (!lu || !id || strlen(id) >= sizeof(((kw_key_use_t *)0)->id))
        return;
    uint64_t h = id_hash(id);
    stripe_t *s = &lu->stripes[(h >> 56) % STRIPES];
    pthread_mutex_lock(&s->mu);
    stripe_put(lu, s, id, h, at_us);
    pthread_mutex_unlock(&s->mu);
}

int64_t kw__lastused_pending(kw__lastused_t *lu, const char *id)
{
    if (!lu || !id)
        return 0;
    uint64_t h = id_hash(id);
    stripe_t *s = &lu->stripes[(h >> 56) % STRIPES];
    int64_t at = 0;
    pthread_mutex_lock(&s->mu);
    if (s->cap) {
        kw_key_use_t *e = slot_of(s->tab, s->cap, id, h);
        if (e->id[0])
            at = e->at_us;
    }
    pthread_mutex_unlock(&s->mu);
    return at;
}

/* Writes one batch; on failure puts it back for the next interval. */
static void flush_batch(kw__lastused_t *lu, kw_key_use_t *b, size_t n)
{
    int rc = kw_store_keys_touch(lu->store, b, n);
    if (rc == KW_OK) {
        atomic_fetch_add_explicit(&lu->flushed, n, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&lu->flush_failures, 1, memory_order_relaxed);
    kw_log(KW_LOG_WARN, KW_MODULE, "last_used_at flush of %zu keys failed (%s); retried later", n,
           kw_err_name(rc));
    for (size_t i = 0; i < n; i++)
        kw__lastused_record(lu, b[i].id, b[i].at_us);
}

int kw__lastused_flush(kw__lastused_t *lu)
{
    if (!lu)
        return KW_EINVAL;
    kw_key_use_t batch[FLUSH_BATCH];
    size_t nb = 0;
    for (size_t k = 0; k < STRIPES; k++) {
        stripe_t *s = &lu->stripes[k];
        pthread_mutex_lock(&s->mu);
        kw_key_use_t *t = s->tab;
        size_t cap = s->cap, n = s->n;
        s->tab = NULL;
        s->cap = s->n = 0;
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_sub_explicit(&lu->pending, n, memory_order_relaxed);
        for (size_t i = 0; i < cap; i++) {
            if (!t[i].id[0])
                continue;
            batch[nb++] = t[i];
            if (nb == FLUSH_BATCH) {
                flush_batch(lu, batch, nb);
                nb = 0;
            }
        }
        kw_free(t);
    }
    if (nb)
        flush_batch(lu, batch, nb);
    return KW_OK;
}

static void *flusher(void *arg)
{
    kw__lastused_t *lu = arg;
    pthread_mutex_lock(&lu->tick_mu);
    while (!lu->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += lu->interval_ms / 1000;
        until.tv_nsec += (long)(lu->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!lu->stop && pthread_cond_timedwait(&lu->tick_cv, &lu->tick_mu, &until) == 0)
            ;
        if (lu->stop)
            break;
        pthread_mutex_unlock(&lu->tick_mu);
        (void)kw__lastused_flush(lu);
        pthread_mutex_lock(&lu->tick_mu);
    }
    pthread_mutex_unlock(&lu->tick_mu);
    return NULL;
}

static unsigned interval_from_env(void)
{
    const char *v = getenv("KEYWARD_LAST_USED_FLUSH_MS");
    long ms = 0;
    if (v && v[0] && kw_api_parse_bounded(kw_str_c(v), 10, 3600000, &ms))
        return (unsigned)ms;
    if (v && v[0])
        kw_log(KW_LOG_WARN, KW_MODULE,
               "KEYWARD_LAST_USED_FLUSH_MS must be 10..3600000; using %d ms", DEFAULT_INTERVAL_MS);
    return DEFAULT_INTERVAL_MS;
}

int kw__lastused_new(kw_store_t *store, kw__lastused_t **out)
{
    kw__lastused_t *lu = kw_calloc(1, sizeof(*lu));
    if (!lu)
        return KW_ENOMEM;
    lu->store = store;
    lu->interval_ms = interval_from_env();
    size_t k = 0;
    for (; k < STRIPES; k++)
        if (pthread_mutex_init(&lu->stripes[k].mu, NULL) != 0)
            goto fail_stripes;
    if (pthread_mutex_init(&lu->tick_mu, NULL) != 0)
        goto fail_stripes;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_tick_mu;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int crc = pthread_cond_init(&lu->tick_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (crc != 0)
        goto fail_tick_mu;
    /* The thread takes no signal: kw_api_new runs before `serve` blocks SIGTERM/SIGINT for
     * its sigwait, and a shutdown signal delivered here would kill the process unflushed. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int trc = pthread_create(&lu->thread, NULL, flusher, lu);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (trc != 0)
        goto fail_cv;
    lu->started = true;
    *out = lu;
    return KW_OK;
fail_cv:
    pthread_cond_destroy(&lu->tick_cv);
fail_tick_mu:
    pthread_mutex_destroy(&lu->tick_mu);
fail_stripes:
    while (k > 0)
        pthread_mutex_destroy(&lu->stripes[--k].mu);
    kw_free(lu);
    return KW_ENOMEM;
}

void kw__lastused_free(kw__lastused_t *lu)
{
    if (!lu)
        return;
    pthread_mutex_lock(&lu->tick_mu);
    lu->stop = true;
    pthread_cond_signal(&lu->tick_cv);
    pthread_mutex_unlock(&lu->tick_mu);
    if (lu->started)
        pthread_join(lu->thread, NULL);
    (void)kw__lastused_flush(lu); /* a clean stop loses nothing */
    for (size_t k = 0; k < STRIPES; k++) {
        kw_free(lu->stripes[k].tab);
        pthread_mutex_destroy(&lu->stripes[k].mu);
    }
    pthread_cond_destroy(&lu->tick_cv);
    pthread_mutex_destroy(&lu->tick_mu);
    kw_free(lu);
}

void kw__lastused_metrics(kw__lastused_t *lu, kw_buf_t *out)
{
    if (!lu)
        return;
    kw_buf_printf(
        out,
        "# TYPE keyward_last_used_pending gauge\n"
        "keyward_last_used_pending %zu\n"
        "# TYPE keyward_last_used_flushed_total counter\n"
        "keyward_last_used_flushed_total %llu\n"
        "# TYPE keyward_last_used_dropped_total counter\n"
        "keyward_last_used_dropped_total %llu\n"
        "# TYPE keyward_last_used_flush_failures_total counter\n"
        "keyward_last_used_flush_failures_total %llu\n",
        atomic_load_explicit(&lu->pending, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&lu->flushed, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&lu->dropped, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&lu->flush_failures, memory_order_relaxed));
}
