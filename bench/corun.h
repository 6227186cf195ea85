/*
 * bench/corun.h - per-read cost while two reader threads really run at the same time, for
 * the benchmarks of bench/ (header-only; each benchmark is one executable).
 *
 * On a machine whose cores other processes share, two reader threads rarely run at the
 * same instant, and only then can they contend for a cache line. So a reader records
 * the [start, end) of every chunk of CORUN_CHUNK reads. Afterwards a chunk that took over
 * 50x the median chunk was preempted and is dropped; with two readers, only the chunks
 * that lie wholly inside a back-to-back run of the other reader's unpreempted chunks
 * count ("co-run"). The median of those, per read, is the cost while both cores read;
 * with one reader, the median over its unpreempted chunks is the solo cost. The mean
 * over the same chunks also carries the rare long waits (a writer's batch) that the
 * median hides, but not the preemptions.
 */
#ifndef KW_BENCH_CORUN_H
#define KW_BENCH_CORUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CORUN_CHUNK 64
#define CORUN_MAX (1 << 20) /* chunks kept per reader; later ones run unrecorded */

typedef struct corun {
    uint64_t (*v)[2];
    size_t n;
} corun_t;

static inline uint64_t corun_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A recorder with room for CORUN_MAX chunks; exits on allocation failure (benchmarks). */
static inline void corun_init(corun_t *c)
{
    c->n = 0;
    c->v = malloc(CORUN_MAX * sizeof(*c->v));
    if (!c->v) {
        fprintf(stderr, "corun: out of memory\n");
        exit(1);
    }
}

static inline void corun_note(corun_t *c, uint64_t start, uint64_t end)
{
    if (c->n < CORUN_MAX) {
        c->v[c->n][0] = start;
        c->v[c->n][1] = end;
        c->n++;
    }
}

static int corun_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Is [s, e) inside a back-to-back run of b's chunks, none over `cut`? *j is a cursor
 * into b (chunks of a are visited in time order). */
static inline bool corun_covered(const corun_t *b, size_t *j, uint64_t s, uint64_t e, uint64_t cut)
{
    while (*j < b->n && b->v[*j][1] <= s)
        (*j)++;
    size_t k = *j;
    if (k >= b->n || b->v[k][0] > s)
        return false;
    for (; k < b->n && b->v[k][0] < e; k++) {
        if (b->v[k][1] - b->v[k][0] > cut)
            return false;
        if (k > *j && b->v[k][0] - b->v[k - 1][1] > 1000)
            return false;
    }
    return b->v[k - 1][1] >= e;
}

typedef struct corun_stats {
    double median_ns, mean_ns; /* per read */
    size_t n;                  /* chunks counted (0: none, and both figures are 0) */
} corun_stats_t;

/* The per-read figures over the chunks of `threads` readers (1 or 2; with more, each is
 * compared with the next) as described above. */
static inline corun_stats_t corun_stats(corun_t *const *r, int threads)
{
    size_t cap = 1;
    for (int t = 0; t < threads; t++)
        cap += r[t]->n;
    uint64_t *d = malloc(cap * sizeof(uint64_t));
    if (!d) {
        fprintf(stderr, "corun: out of memory\n");
        exit(1);
    }
    size_t n = 0;
    for (int t = 0; t < threads; t++)
        for (size_t i = 0; i < r[t]->n; i++)
            d[n++] = r[t]->v[i][1] - r[t]->v[i][0];
    qsort(d, n, sizeof(*d), corun_cmp);
    uint64_t cut = n ? d[n / 2] * 50 : 0;
    n = 0;
    for (int t = 0; t < threads; t++) {
        const corun_t *a = r[t], *b = r[(t + 1) % threads];
        size_t j = 0;
        for (size_t i = 0; i < a->n; i++) {
            uint64_t s = a->v[i][0], e = a->v[i][1];
            if (e - s > cut || (threads > 1 && !corun_covered(b, &j, s, e, cut)))
                continue;
            d[n++] = e - s;
        }
    }
    qsort(d, n, sizeof(*d), corun_cmp);
    corun_stats_t st = {0, 0, n};
    if (n) {
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += (double)d[i];
        st.median_ns = (double)d[n / 2] / CORUN_CHUNK;
        st.mean_ns = sum / (double)n / CORUN_CHUNK;
    }
    free(d);
    return st;
}

#endif
