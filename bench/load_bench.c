/*
 * bench/load_bench.c - how long a start's load takes (issue 11 item 5: "load time on
 * agents-1M within 10%" once relationships carry caveat, context and expiry).
 *
 * On an existing database (bench/svc_dataset.c's agents-1M file, or a PostgreSQL copy of it
 * made by bench/svc_pg_load.c), each run times:
 *   store  kw_store_load_relationships with a callback that only counts (the store's read);
 *   graph  kw_sync_load under the built-in schema: the store's read plus building the graph
 *          in a new engine, what `keyward serve` does at start;
 * each in wall time and in process CPU time (steadier on a shared machine), and prints one
 * JSON line per run, then the medians and the minima. The first open migrates an older
 * database (timed separately, once).
 *
 * Usage: load_bench DB_URL [--runs N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "store/store.h"
#include "sync/sync.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the process (the load runs on this thread, its helpers too): on a shared,
 * loaded machine it moves far less than the wall clock. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(int rc, const char *what, const kw_diag_t *d)
{
    if (rc != KW_OK) {
        fprintf(stderr, "load_bench: %s: %s %s\n", what, kw_strerror(rc), d ? d->msg : "");
        exit(1);
    }
}

static int count_cb(const kw_rel_t *rel, void *ud)
{
    /* Touch what a consumer would read, so nothing is skipped for being unused. */
    size_t *n = ud;
    *n += 1 + (rel->caveat.len > 0) + (rel->expires_at != 0);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: load_bench DB_URL [--runs N]\n");
        return 2;
    }
    const char *url = argv[1];
    int runs = 5;
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], "--runs") == 0)
            runs = atoi(argv[i + 1]);
    if (runs < 1 || runs > 100)
        runs = 5;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_store_t *s = NULL;
    double t0 = now_s();
    check(kw_store_open(url, &s, &d), "open", &d);
    printf("{\"open_s\":%.3f}\n", now_s() - t0);
    double store_s[100], graph_s[100], store_cpu[100], graph_cpu[100];
    size_t n_rels = 0, memory = 0;
    for (int r = 0; r < runs; r++) {
        size_t n = 0;
        kw_revision_t rev = 0;
        t0 = now_s();
        double c0 = cpu_s();
        check(kw_store_load_relationships(s, count_cb, &n, &rev), "load", NULL);
        store_s[r] = now_s() - t0;
        store_cpu[r] = cpu_s() - c0;

        kw_engine_t *e = NULL;
        kw_sync_t *sync = NULL;
        kw_sync_config_t cfg;
        kw_sync_config_default(&cfg);
        check(kw_engine_new(&e), "engine", NULL);
        check(kw_sync_new(e, s, &cfg, &sync), "sync", NULL);
        t0 = now_s();
        c0 = cpu_s();
        check(kw_sync_load(sync, kw_str_c(kw_api_default_schema), &d), "graph load", &d);
        graph_s[r] = now_s() - t0;
        graph_cpu[r] = cpu_s() - c0;
        n_rels = kw_engine_count(e);
        memory = kw_engine_memory(e);
        kw_sync_free(sync);
        kw_engine_free(e);
        printf("{\"run\":%d,\"store_s\":%.3f,\"store_cpu_s\":%.3f,\"graph_s\":%.3f,"
               "\"graph_cpu_s\":%.3f,\"relationships\":%zu,\"fields_seen\":%zu}\n",
               r + 1, store_s[r], store_cpu[r], graph_s[r], graph_cpu[r], n_rels, n);
        fflush(stdout);
    }
    printf("{\"median_store_s\":%.3f,\"median_store_cpu_s\":%.3f,\"median_graph_s\":%.3f,"
           "\"median_graph_cpu_s\":%.3f,",
           median(store_s, runs), median(store_cpu, runs), median(graph_s, runs),
           median(graph_cpu, runs));
    /* median() sorted the arrays: [0] is the minimum. */
    printf("\"min_store_s\":%.3f,\"min_store_cpu_s\":%.3f,\"min_graph_s\":%.3f,"
           "\"min_graph_cpu_s\":%.3f,\"relationships\":%zu,\"bytes_per_relationship\":%.1f}\n",
           store_s[0], store_cpu[0], graph_s[0], graph_cpu[0], n_rels,
           n_rels ? (double)memory / (double)n_rels : 0.0);
    kw_store_close(s);
    return 0;
}
