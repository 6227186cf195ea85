/*
 * bench/brlock_bench.c - the engine's big-reader lock (src/authz/brlock.c) against the
 * writer-preferring pthread rwlock it replaced, in one binary, cell by cell back to back.
 *
 * Each reader thread loops: read lock, `work` (a walk of dependent loads over a private
 * 4 MiB array, standing in for a check: --work N loads; 0 = the lock alone), unlock. A
 * cell runs 1 or N readers for --seconds, without or with a writer that takes the write
 * lock every millisecond (absolute schedule) and holds it for --hold microseconds of
 * spinning (standing in for one write batch: 10 updates, 10,000 updates/s). Every cell
 * reports reads/s summed over the readers (wall) and reads per thread-CPU-second: the
 * second stays comparable when other processes share the cores, because a thread that
 * is not running is not charged, while cache-line bouncing (which burns CPU) is.
 *
 * The lock alone is where the two differ: each pthread rwlock read writes one shared
 * counter twice, so two cores reading bounce that line; the brlock's readers write only
 * their own slot.
 *
 * Usage: brlock_bench [--threads N] [--seconds S] [--work N] [--hold US]
 * Prints a table and one JSON line ("{\"bench\":\"brlock\",...}").
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz/brlock_int.h"
#include "corun.h"

#define MAX_THREADS 16
#define WORK_WORDS (4u << 20) / sizeof(uint32_t)

typedef enum { L_RWLOCK, L_BRLOCK } lock_kind_t;

typedef struct lock {
    lock_kind_t kind;
    pthread_rwlock_t rw;
    kw_brlock_t br;
} lock_t;

static void lock_rd(lock_t *l)
{
    if (l->kind == L_RWLOCK)
        pthread_rwlock_rdlock(&l->rw);
    else
        kw__brlock_rdlock(&l->br);
}

static void lock_wr(lock_t *l)
{
    if (l->kind == L_RWLOCK)
        pthread_rwlock_wrlock(&l->rw);
    else
        kw__brlock_wrlock(&l->br);
}

static void lock_un(lock_t *l)
{
    if (l->kind == L_RWLOCK)
        pthread_rwlock_unlock(&l->rw);
    else
        kw__brlock_unlock(&l->br);
}

static double now_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct reader {
    pthread_t th;
    lock_t *l;
    uint32_t *walk; /* a random cycle over WORK_WORDS */
    unsigned work;
    pthread_barrier_t *start;
    atomic_bool *stop;
    uint64_t n, sink;
    double wall, cpu;
    corun_t *chunks; /* the reader's chunks of CORUN_CHUNK reads */
} reader_t;

static void *reader_main(void *p)
{
    reader_t *r = p;
    uint32_t at = 0;
    pthread_barrier_wait(r->start);
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
    uint64_t t = corun_now_ns();
    while (!atomic_load_explicit(r->stop, memory_order_relaxed)) {
        for (int k = 0; k < CORUN_CHUNK; k++) {
            lock_rd(r->l);
            for (unsigned i = 0; i < r->work; i++)
                at = r->walk[at];
            lock_un(r->l);
        }
        r->n += CORUN_CHUNK;
        uint64_t t1 = corun_now_ns();
        corun_note(r->chunks, t, t1);
        t = t1;
    }
    r->wall = now_s(CLOCK_MONOTONIC) - w0;
    r->cpu = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    r->sink = at;
    return NULL;
}

typedef struct writer {
    pthread_t th;
    lock_t *l;
    double hold_s;
    pthread_barrier_t *start;
    atomic_bool *stop;
    uint64_t n;
} writer_t;

static void *writer_main(void *p)
{
    writer_t *w = p;
    struct timespec next;
    pthread_barrier_wait(w->start);
    clock_gettime(CLOCK_MONOTONIC, &next);
    while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
        lock_wr(w->l);
        double t0 = now_s(CLOCK_MONOTONIC);
        while (now_s(CLOCK_MONOTONIC) - t0 < w->hold_s)
            ;
        lock_un(w->l);
        w->n++;
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    return NULL;
}

typedef struct cell {
    double per_s, per_cpu_s, writes_per_s;
    corun_stats_t ch; /* per read: solo (1 thread) or co-run (2), see corun.h */
} cell_t;

static cell_t run_cell(lock_t *l, uint32_t **walks, corun_t *chunk_bufs, int threads, bool writer,
                       unsigned work, double secs, double hold_s)
{
    reader_t r[MAX_THREADS];
    writer_t w = {.l = l, .hold_s = hold_s};
    pthread_barrier_t start;
    atomic_bool stop = false;
    cell_t c = {0};
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1 + (writer ? 1 : 0));
    for (int t = 0; t < threads; t++) {
        r[t] = (reader_t){.l = l,
                          .walk = walks[t],
                          .work = work,
                          .start = &start,
                          .stop = &stop,
                          .chunks = &chunk_bufs[t]};
        chunk_bufs[t].n = 0;
        if (pthread_create(&r[t].th, NULL, reader_main, &r[t]) != 0) {
            fprintf(stderr, "brlock_bench: pthread_create failed\n");
            exit(1);
        }
    }
    w.start = &start;
    w.stop = &stop;
    if (writer && pthread_create(&w.th, NULL, writer_main, &w) != 0) {
        fprintf(stderr, "brlock_bench: pthread_create failed\n");
        exit(1);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s(CLOCK_MONOTONIC);
    struct timespec d = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&stop, true);
    for (int t = 0; t < threads; t++) {
        pthread_join(r[t].th, NULL);
        c.per_s += (double)r[t].n / r[t].wall;
        c.per_cpu_s += (double)r[t].n / r[t].cpu / threads;
    }
    corun_t *rc[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        rc[t] = r[t].chunks;
    c.ch = corun_stats(rc, threads);
    if (writer) {
        pthread_join(w.th, NULL);
        c.writes_per_s = (double)w.n / (now_s(CLOCK_MONOTONIC) - t0);
    }
    pthread_barrier_destroy(&start);
    return c;
}

/* A random single cycle over n words (Sattolo), so the walk's loads depend on each other
 * and miss the caches the way a check's node lookups do. */
static uint32_t *make_walk(uint64_t seed)
{
    uint32_t *v = malloc(WORK_WORDS * sizeof(uint32_t));
    if (!v)
        return NULL;
    for (uint32_t i = 0; i < WORK_WORDS; i++)
        v[i] = i;
    for (uint32_t i = WORK_WORDS - 1; i > 0; i--) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        uint32_t j = (uint32_t)(seed % i);
        uint32_t x = v[i];
        v[i] = v[j];
        v[j] = x;
    }
    return v;
}

int main(int argc, char **argv)
{
    int threads = 2;
    double secs = 1.0, hold_us = 10.0;
    unsigned work = 8;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (strcmp(argv[i], "--work") == 0 && i + 1 < argc)
            work = (unsigned)atol(argv[++i]);
        else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc)
            hold_us = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: brlock_bench [--threads N] [--seconds S] [--work N] "
                            "[--hold US]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > MAX_THREADS || secs <= 0 || secs > 600 || hold_us < 0 ||
        hold_us > 900) {
        fprintf(stderr, "brlock_bench: --threads 1..%d, --seconds (0, 600], --hold [0, 900]\n",
                MAX_THREADS);
        return 2;
    }
    uint32_t *walks[MAX_THREADS];
    corun_t chunk_bufs[MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        corun_init(&chunk_bufs[t]);
        if (!(walks[t] = make_walk(0x9e3779b97f4a7c15ULL + (uint64_t)t))) {
            fprintf(stderr, "brlock_bench: out of memory\n");
            return 1;
        }
    }
    lock_t l[2];
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    l[0].kind = L_RWLOCK;
    l[1].kind = L_BRLOCK;
    if (pthread_rwlock_init(&l[0].rw, &attr) != 0 || kw__brlock_init(&l[1].br) != KW_OK) {
        fprintf(stderr, "brlock_bench: lock init failed\n");
        return 1;
    }
    pthread_rwlockattr_destroy(&attr);

    /* [lock][threads 1, N][writer off, on], the two locks interleaved cell by cell. */
    cell_t c[2][2][2];
    for (int ti = 0; ti < 2; ti++)
        for (int wi = 0; wi < 2; wi++)
            for (int k = 0; k < 2; k++)
                c[k][ti][wi] = run_cell(&l[k], walks, chunk_bufs, ti ? threads : 1, wi, work, secs,
                                        hold_us * 1e-6);

    static const char *names[] = {"rwlock", "brlock"};
    printf("brlock_bench: %d threads, work %u dependent loads, writer 1000/s holding %.0f us, "
           "%.1f s per cell\n",
           threads, work, hold_us, secs);
    /* xthreads: N x the 1-thread median per read over this cell's (co-run) median: N
     * readers give that many times one reader while both cores read (2.0 = perfect).
     * xwriter: the mean per read without the writer over the mean with it (1.0 = the
     * writer costs the readers nothing; 0.9 = 10% fewer reads). */
    printf("  %-7s %7s %8s %12s %14s %8s %8s %9s %9s %8s\n", "lock", "threads", "writer", "reads/s",
           "reads/CPU-s", "med ns", "mean ns", "chunks", "xthreads", "xwriter");
    for (int k = 0; k < 2; k++)
        for (int ti = 0; ti < 2; ti++)
            for (int wi = 0; wi < 2; wi++) {
                const cell_t *x = &c[k][ti][wi];
                int n = ti ? threads : 1;
                double xt =
                    x->ch.median_ns > 0 ? n * c[k][0][wi].ch.median_ns / x->ch.median_ns : 0.0;
                double xw = x->ch.mean_ns > 0 ? c[k][ti][0].ch.mean_ns / x->ch.mean_ns : 0.0;
                printf("  %-7s %7d %8.0f %12.0f %14.0f %8.1f %8.1f %9zu %9.3f %8.3f\n", names[k], n,
                       x->writes_per_s, x->per_s, x->per_cpu_s, x->ch.median_ns, x->ch.mean_ns,
                       x->ch.n, xt, xw);
            }
    printf("{\"bench\":\"brlock\",\"threads\":%d,\"work\":%u,\"hold_us\":%.1f,\"secs\":%.2f",
           threads, work, hold_us, secs);
    for (int k = 0; k < 2; k++)
        for (int ti = 0; ti < 2; ti++)
            for (int wi = 0; wi < 2; wi++) {
                const cell_t *x = &c[k][ti][wi];
                printf(",\"%s_t%d_w%d\":{\"per_s\":%.0f,\"per_cpu_s\":%.0f,\"writes_per_s\":%.0f,"
                       "\"median_ns\":%.2f,\"mean_ns\":%.2f,\"chunks\":%zu}",
                       names[k], ti ? threads : 1, wi, x->per_s, x->per_cpu_s, x->writes_per_s,
                       x->ch.median_ns, x->ch.mean_ns, x->ch.n);
            }
    printf("}\n");
    pthread_rwlock_destroy(&l[0].rw);
    kw__brlock_close(&l[1].br);
    for (int t = 0; t < threads; t++) {
        free(walks[t]);
        free(chunk_bufs[t].v);
    }
    return 0;
}
