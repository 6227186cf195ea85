/*
 * bench/authz_bench.c - the engine on the "agents-1M" dataset (default schema agentex.zed).
 *
 * Dataset at --scale 1: 1,000 accounts x 20 members (the first is admin, the rest
 * members); 10 agents per account (account, owner = one of its members, self); 100 keys
 * per agent (parent_agent, account, owner = the agent's owner): 1,000,000 keys and
 * 3,050,000 relationships. Ids are UUID-shaped (36 chars) and derived from (kind, index)
 * by a hash, so the benchmark itself keeps no per-object memory and the RSS delta is the
 * engine's.
 *
 * Measures: load time (kw_engine_write, batches of 1000 TOUCH), RSS and bytes per
 * relationship, single-thread Check throughput and p50/p99 for agent_api_key#read,
 * #delete and #owner (half allowed: the key's owner; half denied: a member of another
 * account; every answer is verified and a wrong one aborts), and LookupResources
 * (agent_api_key, read, admin of an account: exactly 1,000 keys, verified).
 * Then, on a separate engine of 100,000 documents (so the figures above are untouched), a
 * Check through a simple caveat (one comparison) against the same Check without it: the
 * caveat's cost as a ratio (target <= 2x), with the context on the relationship (decided
 * once, at write) and with the context sent in the request (evaluated by every Check).
 * Check queries are generated (ids formatted) before any clock runs. checks/s comes from
 * a tight loop over --checks random queries timed as a whole; p50/p99 from a second pass
 * over as many fresh queries, each call timed on its own (so clock reads never inflate
 * the throughput figure).
 *
 * checks/s is also given per CPU-second of the benchmark thread (the machine is shared).
 * --perm runs one of the three checks alone, --checks-only skips LookupResources and the
 * caveat engine (both for profiling one check under callgrind).
 *
 * With --threads N, after the load it measures reads on several threads instead: #owner
 * and #read checks on 1 and N threads, each cell without and with a writer stream of
 * --writer updates/s (default 10,000; TOUCH/DELETE of relationships no verified answer
 * depends on), --mt-seconds each (default 2). Per cell: checks/s summed over the threads
 * and checks per thread-CPU-second (comparable when other processes share the cores).
 *
 * Usage: authz_bench [--scale F] [--runs N] [--checks N] [--seed S] [--perm P]
 *                    [--checks-only] [--threads N [--writer R] [--mt-seconds S]]
 *                    [SCHEMA.zed]
 * Prints a table and one JSON line ("{\"bench\":\"authz\",...}"; "authz_mt" with --threads).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz/authz.h"
#include "agents1m.h"
#include "corun.h"

#define MT_MAX_THREADS 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of this thread: on a shared machine the wall clock also counts the time other
 * processes held the core, so throughput is reported against both. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static _Noreturn void die(const char *what, int rc, const kw_diag_t *d)
{
    fprintf(stderr, "authz_bench: %s: %s (%s)\n", what, d && d->msg[0] ? d->msg : "",
            kw_err_name(rc));
    exit(1);
}

/* ---- measuring ---- */

typedef struct stats {
    double per_s, per_cpu_s, p50_us, p99_us;
    size_t n;
} stats_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static stats_t summarize(double *lat, size_t n, double wall)
{
    stats_t s = {0};
    qsort(lat, n, sizeof(*lat), cmp_double);
    s.n = n;
    s.per_s = wall > 0 ? (double)n / wall : 0;
    s.p50_us = lat[n / 2] * 1e6;
    s.p99_us = lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] * 1e6;
    return s;
}

/* One pre-generated check: ids are formatted before the clock starts, so the timed loops
 * measure the engine, not snprintf. */
typedef struct query {
    char kid[ID_LEN + 1];
    char uid[ID_LEN + 1];
    bool allow;
} query_t;

/* Random keys over the whole dataset; half allowed (the key's owner), half denied (a
 * member of another account). */
static void gen_queries(query_t *q, size_t n, uint64_t n_accounts)
{
    uint64_t n_keys = n_accounts * AGENTS_PER_ACCOUNT * KEYS_PER_AGENT;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = rng() % n_keys;
        uint64_t g = k / KEYS_PER_AGENT;
        uint64_t a = g / AGENTS_PER_ACCOUNT;
        bool allow = (rng() & 1) != 0;
        uint64_t user;
        if (allow) {
            user = a * MEMBERS_PER_ACCOUNT + agent_owner_member(g % AGENTS_PER_ACCOUNT);
        } else {
            uint64_t other = (a + 1 + rng() % (n_accounts - 1)) % n_accounts;
            user = other * MEMBERS_PER_ACCOUNT + rng() % MEMBERS_PER_ACCOUNT;
        }
        make_id(K_KEY, k, q[i].kid);
        make_id(K_USER, user, q[i].uid);
        q[i].allow = allow;
    }
}

/* Runs one check and verifies the answer; a wrong one aborts the benchmark. */
static inline void run_check(kw_engine_t *e, kw_str_t perm, const query_t *q)
{
    kw_object_t res = {KW_STR("agent_api_key"), {q->kid, ID_LEN}};
    kw_subject_t subj = {KW_STR("user"), {q->uid, ID_LEN}, KW_STR_NULL};
    kw_check_result_t r;
    kw_diag_t d;
    int rc = kw_engine_check(e, res, perm, subj, &r, NULL, &d);
    if (rc != KW_OK)
        die("check", rc, &d);
    if ((r == KW_CHECK_YES) != q->allow) {
        fprintf(stderr,
                "authz_bench: WRONG ANSWER: agent_api_key:%s#%.*s@user:%s is %s, expected "
                "%s\n",
                q->kid, KW_STR_FMT(perm), q->uid, r == KW_CHECK_YES ? "allowed" : "denied",
                q->allow ? "allowed" : "denied");
        exit(1);
    }
}

/* Throughput: a tight loop over n fresh queries with one clock read at each end.
 * Latency: a separate pass over another n fresh queries, each call timed on its own. */
static stats_t bench_check(kw_engine_t *e, const char *perm_c, uint64_t n_accounts, size_t n,
                           query_t *q, double *lat)
{
    kw_str_t perm = kw_str_c(perm_c);
    gen_queries(q, n, n_accounts);
    double cpu0 = cpu_s(), wall0 = now_s();
    for (size_t i = 0; i < n; i++)
        run_check(e, perm, &q[i]);
    double wall = now_s() - wall0, cpu = cpu_s() - cpu0;
    gen_queries(q, n, n_accounts);
    for (size_t i = 0; i < n; i++) {
        double t0 = now_s();
        run_check(e, perm, &q[i]);
        lat[i] = now_s() - t0;
    }
    stats_t s = summarize(lat, n, wall);
    s.per_cpu_s = cpu > 0 ? (double)n / cpu : 0;
    return s;
}

static int count_id(kw_str_t id, void *ud)
{
    (void)id;
    (*(size_t *)ud)++;
    return 0;
}

static stats_t bench_lookup(kw_engine_t *e, uint64_t n_accounts, size_t runs, double *lat)
{
    char uid[ID_LEN + 1];
    size_t want = AGENTS_PER_ACCOUNT * KEYS_PER_AGENT;
    double wall0 = now_s();
    for (size_t i = 0; i < runs; i++) {
        uint64_t a = rng() % n_accounts;
        make_id(K_USER, a * MEMBERS_PER_ACCOUNT, uid); /* the admin: reads every key */
        kw_subject_t subj = {KW_STR("user"), {uid, ID_LEN}, KW_STR_NULL};
        size_t got = 0;
        kw_diag_t d;
        double t0 = now_s();
        int rc = kw_engine_lookup_resources(e, KW_STR("agent_api_key"), KW_STR("read"), subj,
                                            count_id, &got, NULL, &d);
        lat[i] = now_s() - t0;
        if (rc != KW_OK)
            die("lookup_resources", rc, &d);
        if (got != want) {
            fprintf(stderr,
                    "authz_bench: WRONG ANSWER: LookupResources for admin user:%s "
                    "found %zu keys, expected %zu\n",
                    uid, got, want);
            exit(1);
        }
    }
    return summarize(lat, runs, now_s() - wall0);
}

/* ---- a simple caveat ---- */

#define CAV_DOCS 100000

static const char caveat_schema[] = "caveat big(n int) { n > 5 }\n"
                                    "definition user {}\n"
                                    "definition doc {\n"
                                    "    relation plain: user\n"
                                    "    relation cav: user with big\n"
                                    "    relation req: user with big\n"
                                    "}\n";

/* doc i: plain@user:(i % 1000), cav@user:(i % 1000) with n = 10 (i even: the caveat
 * holds) or n = 1 (i odd: it does not), and req@user:(i % 1000) without a context (the
 * check sends n, 10 for even documents and 1 for odd ones): half of the caveated checks
 * are allowed. */
static kw_engine_t *caveat_engine(void)
{
    kw_engine_t *e;
    kw_diag_t d;
    int rc = kw_engine_new(&e);
    if (rc == KW_OK)
        rc = kw_engine_set_schema(e, KW_STR(caveat_schema), NULL, &d);
    if (rc != KW_OK)
        die("caveat schema", rc, &d);
    static kw_update_t ups[3 * BATCH];
    static char ids[BATCH][2][ID_LEN + 1];
    for (uint64_t base = 0; base < CAV_DOCS; base += BATCH) {
        size_t n = 0;
        for (uint64_t i = base; i < base + BATCH && i < CAV_DOCS; i++) {
            size_t k = (size_t)(i - base);
            make_id(K_KEY, i, ids[k][0]);
            make_id(K_USER, i % 1000, ids[k][1]);
            for (int j = 0; j < 3; j++) {
                kw_update_t *u = &ups[n++];
                memset(u, 0, sizeof(*u));
                u->op = KW_OP_TOUCH;
                u->rel.resource = (kw_object_t){KW_STR("doc"), {ids[k][0], ID_LEN}};
                u->rel.relation = j == 2 ? KW_STR("req") : j ? KW_STR("cav") : KW_STR("plain");
                u->rel.subject = (kw_subject_t){KW_STR("user"), {ids[k][1], ID_LEN}, KW_STR_NULL};
                if (j)
                    u->rel.caveat = KW_STR("big");
                if (j == 1)
                    u->rel.caveat_ctx = (i & 1) ? KW_STR("{\"n\": 1}") : KW_STR("{\"n\": 10}");
            }
        }
        if ((rc = kw_engine_write(e, ups, n, NULL, 0, 0, NULL, &d)) != KW_OK)
            die("caveat write", rc, &d);
    }
    return e;
}

/* Checks doc#perm for random documents (the document's own user, so the plain relation
 * always allows and the caveated one allows the even documents), verified: a timed loop
 * for the throughput, then a pass timing each call. */
static stats_t bench_caveat_check(kw_engine_t *e, const char *perm_c, size_t n, query_t *q,
                                  double *lat)
{
    kw_str_t perm = kw_str_c(perm_c);
    bool cav = strcmp(perm_c, "plain") != 0, req = strcmp(perm_c, "req") == 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = rng() % CAV_DOCS;
        make_id(K_KEY, k, q[i].kid);
        make_id(K_USER, k % 1000, q[i].uid);
        q[i].allow = !cav || (k & 1) == 0;
    }
    double wall = 0;
    for (int pass = 0; pass < 2; pass++) {
        double wall0 = now_s();
        for (size_t i = 0; i < n; i++) {
            kw_object_t res = {KW_STR("doc"), {q[i].kid, ID_LEN}};
            kw_subject_t subj = {KW_STR("user"), {q[i].uid, ID_LEN}, KW_STR_NULL};
            kw_check_result_t r;
            kw_diag_t d;
            double t0 = pass ? now_s() : 0;
            kw_str_t ctx =
                !req ? KW_STR_NULL : (q[i].allow ? KW_STR("{\"n\": 10}") : KW_STR("{\"n\": 1}"));
            int rc = kw_engine_check_ctx(e, res, perm, subj, ctx, &r, NULL, NULL, &d);
            if (pass)
                lat[i] = now_s() - t0;
            if (rc != KW_OK)
                die("caveat check", rc, &d);
            if ((r == KW_CHECK_YES) != q[i].allow) {
                fprintf(stderr, "authz_bench: WRONG ANSWER: doc:%s#%s@user:%s\n", q[i].kid, perm_c,
                        q[i].uid);
                exit(1);
            }
        }
        if (pass == 0)
            wall = now_s() - wall0;
    }
    return summarize(lat, n, wall);
}

/* ---- reads on several threads, with and without a writer stream (--threads) ---- */

/* One reader thread: checks `perm` over its own pre-generated queries until *stop, every
 * answer verified. Reports its count, its wall time and its CPU time (the CPU time makes
 * the per-thread rate comparable on a machine whose cores other processes also use). */
typedef struct mt_reader {
    _Alignas(128) pthread_t th; /* two readers' counters never share a cache line */
    kw_engine_t *e;
    kw_str_t perm;
    const query_t *q;
    size_t n_q;
    pthread_barrier_t *start;
    atomic_bool *stop;
    size_t done;
    double wall, cpu;
    corun_t chunks; /* its chunks of CORUN_CHUNK checks */
} mt_reader_t;

static void *mt_reader_main(void *arg)
{
    mt_reader_t *r = arg;
    size_t i = 0;
    pthread_barrier_wait(r->start);
    double w0 = now_s(), c0 = cpu_s();
    uint64_t t = corun_now_ns();
    while (!atomic_load_explicit(r->stop, memory_order_relaxed)) {
        for (int k = 0; k < CORUN_CHUNK; k++, i++)
            run_check(r->e, r->perm, &r->q[i % r->n_q]);
        uint64_t t1 = corun_now_ns();
        corun_note(&r->chunks, t, t1);
        t = t1;
    }
    r->wall = now_s() - w0;
    r->cpu = cpu_s() - c0;
    r->done = i;
    return NULL;
}

/* The writer stream: every millisecond (absolute schedule, so a late tick catches up) one
 * batch of rate/1000 updates. Each update TOUCHes a fresh agent_api_key#viewer@user
 * relationship for a user outside every account (so no verified answer changes) or, once
 * MT_LIVE of them exist, DELETEs the oldest: the graph keeps its size and both write
 * paths run. */
#define MT_LIVE 1000

typedef struct mt_writer {
    pthread_t th;
    kw_engine_t *e;
    uint64_t n_accounts;
    unsigned rate;
    pthread_barrier_t *start;
    atomic_bool *stop;
    uint64_t touched, deleted, rng;
    size_t done, batches;
    double wall, in_write; /* in_write: seconds inside kw_engine_write */
} mt_writer_t;

static void mt_writer_rel(mt_writer_t *w, uint64_t i, kw_op_t op, kw_update_t *u,
                          char ids[2][ID_LEN + 1])
{
    uint64_t n_keys = w->n_accounts * AGENTS_PER_ACCOUNT * KEYS_PER_AGENT;
    uint64_t h = kw_hash_u64(i ^ w->rng);
    make_id(K_KEY, h % n_keys, ids[0]);
    make_id(K_USER, w->n_accounts * MEMBERS_PER_ACCOUNT + i, ids[1]);
    memset(u, 0, sizeof(*u));
    u->op = op;
    u->rel.resource = (kw_object_t){KW_STR("agent_api_key"), {ids[0], ID_LEN}};
    u->rel.relation = KW_STR("viewer");
    u->rel.subject = (kw_subject_t){KW_STR("user"), {ids[1], ID_LEN}, KW_STR_NULL};
}

static void *mt_writer_main(void *arg)
{
    mt_writer_t *w = arg;
    size_t per_tick = w->rate / 1000 ? w->rate / 1000 : 1;
    kw_update_t *ups = kw_calloc(per_tick, sizeof(*ups));
    char(*ids)[2][ID_LEN + 1] = kw_calloc(per_tick, sizeof(*ids));
    if (!ups || !ids)
        die("writer", KW_ENOMEM, NULL);
    pthread_barrier_wait(w->start);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    double w0 = now_s();
    while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
        for (size_t j = 0; j < per_tick; j++) {
            if (w->touched - w->deleted < MT_LIVE)
                mt_writer_rel(w, w->touched++, KW_OP_TOUCH, &ups[j], ids[j]);
            else
                mt_writer_rel(w, w->deleted++, KW_OP_DELETE, &ups[j], ids[j]);
        }
        kw_diag_t d;
        double t0 = now_s();
        int rc = kw_engine_write(w->e, ups, per_tick, NULL, 0, 0, NULL, &d);
        w->in_write += now_s() - t0;
        if (rc != KW_OK)
            die("writer write", rc, &d);
        w->done += per_tick;
        w->batches++;
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    w->wall = now_s() - w0;
    kw_free(ids);
    kw_free(ups);
    return NULL;
}

typedef struct mt_cell {
    const char *perm;
    int threads;
    unsigned writer;     /* target updates/s, 0: none */
    double writer_per_s; /* achieved */
    double batch_us;     /* mean wall time of one writer batch in kw_engine_write */
    double per_s;        /* sum over threads of checks / wall */
    double per_cpu_s;    /* mean over threads of checks / CPU second */
    corun_stats_t ch;    /* per check: solo (1 thread) or co-run (corun.h) */
} mt_cell_t;

/* One cell of the matrix: `threads` readers (each with `n_q` fresh queries) for `secs`
 * seconds, with a writer stream of `rate` updates/s when rate > 0. */
static mt_cell_t bench_mt(kw_engine_t *e, const char *perm_c, uint64_t n_accounts, int threads,
                          unsigned rate, double secs, size_t n_q, mt_writer_t *w)
{
    mt_cell_t c = {perm_c, threads, rate, 0, 0, 0, 0, {0, 0, 0}};
    mt_reader_t r[MT_MAX_THREADS];
    pthread_barrier_t start;
    atomic_bool stop = false;
    if (pthread_barrier_init(&start, NULL, (unsigned)threads + 1 + (rate ? 1 : 0)) != 0)
        die("barrier", KW_ENOMEM, NULL);
    for (int t = 0; t < threads; t++) {
        query_t *q = kw_malloc(sizeof(query_t) * n_q);
        if (!q)
            die("queries", KW_ENOMEM, NULL);
        gen_queries(q, n_q, n_accounts);
        r[t] = (mt_reader_t){
            .e = e, .perm = kw_str_c(perm_c), .q = q, .n_q = n_q, .start = &start, .stop = &stop};
        corun_init(&r[t].chunks);
        if (pthread_create(&r[t].th, NULL, mt_reader_main, &r[t]) != 0)
            die("pthread_create", KW_ENOMEM, NULL);
    }
    if (rate) {
        w->e = e;
        w->n_accounts = n_accounts;
        w->rate = rate;
        w->start = &start;
        w->stop = &stop;
        w->done = 0;
        w->batches = 0;
        w->in_write = 0;
        if (pthread_create(&w->th, NULL, mt_writer_main, w) != 0)
            die("pthread_create", KW_ENOMEM, NULL);
    }
    pthread_barrier_wait(&start);
    struct timespec d = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&stop, true);
    corun_t *rc[MT_MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        pthread_join(r[t].th, NULL);
        c.per_s += r[t].wall > 0 ? (double)r[t].done / r[t].wall : 0;
        c.per_cpu_s += r[t].cpu > 0 ? (double)r[t].done / r[t].cpu / threads : 0;
        rc[t] = &r[t].chunks;
    }
    c.ch = corun_stats(rc, threads);
    for (int t = 0; t < threads; t++) {
        kw_free((void *)r[t].q);
        free(r[t].chunks.v);
    }
    if (rate) {
        pthread_join(w->th, NULL);
        c.writer_per_s = w->wall > 0 ? (double)w->done / w->wall : 0;
        c.batch_us = w->batches ? w->in_write / (double)w->batches * 1e6 : 0;
    }
    pthread_barrier_destroy(&start);
    return c;
}

/* The matrix: #owner and #read, 1 and `threads` readers, without and with the writer
 * stream; the ratios compare each cell with its 1-thread (or writer-less) neighbour. */
static void bench_mt_all(kw_engine_t *e, uint64_t n_accounts, int threads, unsigned rate,
                         double secs, size_t n_q)
{
    static const char *mt_perms[] = {"owner", "read"};
    mt_cell_t cells[2][2][2]; /* perm, threads (1, N), writer (off, on) */
    mt_writer_t w = {.rng = 0x5851f42d4c957f2dULL};
    for (int p = 0; p < 2; p++)
        for (int ti = 0; ti < 2; ti++)
            for (int wi = 0; wi < 2; wi++)
                cells[p][ti][wi] = bench_mt(e, mt_perms[p], n_accounts, ti ? threads : 1,
                                            wi ? rate : 0, secs, n_q, &w);
    printf("authz_bench: reads on %d threads, writer stream %u updates/s, %.1f s per cell\n",
           threads, rate, secs);
    /* xthreads and xwriter as in bench/brlock_bench.c: N x the 1-thread median per check
     * over this cell's co-run median (2.0 = perfect scaling while both cores check), and
     * the mean per check without the writer over the mean with it (0.9 = 10% fewer). */
    printf("  %-8s %7s %10s %8s %10s %12s %8s %8s %8s %9s %8s\n", "check", "threads", "writer/s",
           "batch us", "checks/s", "checks/CPU-s", "med ns", "mean ns", "chunks", "xthreads",
           "xwriter");
    for (int p = 0; p < 2; p++)
        for (int ti = 0; ti < 2; ti++)
            for (int wi = 0; wi < 2; wi++) {
                const mt_cell_t *c = &cells[p][ti][wi];
                const mt_cell_t *one = &cells[p][0][wi], *nowr = &cells[p][ti][0];
                double xt =
                    c->ch.median_ns > 0 ? c->threads * one->ch.median_ns / c->ch.median_ns : 0.0;
                double xw = c->ch.mean_ns > 0 ? nowr->ch.mean_ns / c->ch.mean_ns : 0.0;
                printf("  %-8s %7d %10.0f %8.1f %10.0f %12.0f %8.1f %8.1f %8zu %9.3f %8.3f\n",
                       c->perm, c->threads, c->writer_per_s, c->batch_us, c->per_s, c->per_cpu_s,
                       c->ch.median_ns, c->ch.mean_ns, c->ch.n, xt, xw);
            }
    printf("{\"bench\":\"authz_mt\",\"threads\":%d,\"writer_rate\":%u,\"secs\":%.2f,\"cells\":[",
           threads, rate, secs);
    int first = 1;
    for (int p = 0; p < 2; p++)
        for (int ti = 0; ti < 2; ti++)
            for (int wi = 0; wi < 2; wi++) {
                const mt_cell_t *c = &cells[p][ti][wi];
                printf("%s{\"check\":\"%s\",\"threads\":%d,\"writer_per_s\":%.0f,\"per_s\":%.0f,"
                       "\"per_cpu_s\":%.0f,\"median_ns\":%.1f,\"mean_ns\":%.1f,\"chunks\":%zu,"
                       "\"batch_us\":%.1f}",
                       first ? "" : ",", c->perm, c->threads, c->writer_per_s, c->per_s,
                       c->per_cpu_s, c->ch.median_ns, c->ch.mean_ns, c->ch.n, c->batch_us);
                first = 0;
            }
    printf("]}\n");
}

/* The schema file, or NULL when it cannot be read or is empty. */

static char *slurp(const char *path, size_t *len)
{
    char *text = NULL;
    if (kw_read_file(path, 0, &text, len) != KW_OK)
        return NULL;
    if (*len == 0) {
        kw_free(text);
        return NULL;
    }
    return text;
}

static void usage(void)
{
    fprintf(stderr, "usage: authz_bench [--scale F] [--runs N] [--checks N] [--seed S] "
                    "[--perm read|delete|owner] [--checks-only] "
                    "[--threads N [--writer R] [--mt-seconds S]] [SCHEMA.zed]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    size_t runs = 200, checks = 200000;
    const char *schema_path = NULL, *only_perm = NULL;
    bool checks_only = false;
    int mt_threads = 0;
    unsigned mt_writer = 10000;
    double mt_secs = 2.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--checks") == 0 && i + 1 < argc)
            checks = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            rng_state = (uint64_t)strtoull(argv[++i], NULL, 0) | 1;
        else if (strcmp(argv[i], "--perm") == 0 && i + 1 < argc)
            only_perm = argv[++i];
        else if (strcmp(argv[i], "--checks-only") == 0)
            checks_only = true;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            mt_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--writer") == 0 && i + 1 < argc)
            mt_writer = (unsigned)atol(argv[++i]);
        else if (strcmp(argv[i], "--mt-seconds") == 0 && i + 1 < argc)
            mt_secs = atof(argv[++i]);
        else if (argv[i][0] == '-')
            usage();
        else
            schema_path = argv[i];
    }
    uint64_t n_accounts = (uint64_t)(1000.0 * scale + 0.5);
    if (n_accounts < 2 || runs == 0 || checks == 0) {
        fprintf(stderr, "authz_bench: --scale must give at least 2 accounts (>= 0.002); "
                        "--runs and --checks must be positive\n");
        return 2;
    }
    if (mt_threads < 0 || mt_threads > MT_MAX_THREADS || mt_secs <= 0 || mt_secs > 3600) {
        fprintf(stderr, "authz_bench: --threads must be 1..%d, --mt-seconds in (0, 3600]\n",
                MT_MAX_THREADS);
        return 2;
    }

    size_t schema_len = sizeof(agents1m_schema) - 1;
    char *schema_owned = schema_path ? slurp(schema_path, &schema_len) : NULL;
    if (schema_path && !schema_owned) {
        fprintf(stderr, "authz_bench: cannot read %s\n", schema_path);
        return 1;
    }
    kw_str_t schema = {schema_owned ? schema_owned : agents1m_schema, schema_len};

    double *lat = kw_malloc(sizeof(double) * (checks > runs ? checks : runs));
    batch_t *b = kw_calloc(1, sizeof(*b));
    query_t *queries = kw_malloc(sizeof(query_t) * checks);
    if (!lat || !b || !queries) {
        fprintf(stderr, "authz_bench: out of memory\n");
        return 1;
    }
    long rss0 = rss_kb();
    kw_engine_t *e;
    kw_diag_t d;
    int rc = kw_engine_new(&e);
    if (rc != KW_OK)
        die("engine", rc, NULL);
    if ((rc = kw_engine_set_schema(e, schema, NULL, &d)) != KW_OK)
        die("schema", rc, &d);
    b->e = e;
    b->prog = "authz_bench";
    double t0 = now_s(), c0 = cpu_s();
    agents1m_load(b, n_accounts);
    double load_s = now_s() - t0, load_cpu_s = cpu_s() - c0;
    long rss1 = rss_kb();
    size_t n_rels = kw_engine_count(e);
    size_t mem = kw_engine_memory(e);
    if (n_rels != b->total) {
        fprintf(stderr, "authz_bench: engine holds %zu relationships, wrote %zu\n", n_rels,
                b->total);
        return 1;
    }
    double rss_per_rel = (double)(rss1 - rss0) * 1024.0 / (double)n_rels;
    double mem_per_rel = (double)mem / (double)n_rels;
    if (mt_threads > 0) {
        printf("authz_bench: agents-1M at scale %g: %zu relationships loaded in %.2f s\n", scale,
               n_rels, load_s);
        bench_mt_all(e, n_accounts, mt_threads, mt_writer, mt_secs, checks);
        kw_engine_free(e);
        kw_free(schema_owned);
        kw_free(lat);
        kw_free(queries);
        kw_free(b);
        return 0;
    }

    static const char *perms[] = {"read", "delete", "owner"};
    stats_t cs[3] = {{0}};
    bool ran[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        if (only_perm && strcmp(only_perm, perms[i]) != 0)
            continue;
        cs[i] = bench_check(e, perms[i], n_accounts, checks, queries, lat);
        ran[i] = true;
    }
    stats_t lr = {0}, cp = {0}, cc = {0}, cq = {0};
    if (!checks_only) {
        lr = bench_lookup(e, n_accounts, runs, lat);
        kw_engine_free(e);
        e = caveat_engine();
        cp = bench_caveat_check(e, "plain", checks, queries, lat);
        cc = bench_caveat_check(e, "cav", checks, queries, lat);
        cq = bench_caveat_check(e, "req", checks, queries, lat);
    }

    printf("authz_bench: agents-1M at scale %g (%llu accounts, %llu keys), schema %s\n", scale,
           (unsigned long long)n_accounts,
           (unsigned long long)(n_accounts * AGENTS_PER_ACCOUNT * KEYS_PER_AGENT),
           schema_path ? schema_path : "(embedded agentex)");
    printf("  relationships          %12zu\n", n_rels);
    printf("  load                   %12.2f s  (%.0f rel/s; in kw_engine_write %.2f s; CPU %.2f s, "
           "%.0f rel/CPU-s)\n",
           load_s, (double)n_rels / load_s, b->write_s, load_cpu_s, (double)n_rels / load_cpu_s);
    printf("  RSS after load         %12.1f MiB (delta %.1f MiB)\n", (double)rss1 / 1024.0,
           (double)(rss1 - rss0) / 1024.0);
    printf("  bytes/relationship     %12.1f (RSS delta)  %.1f (kw_engine_memory)\n", rss_per_rel,
           mem_per_rel);
    printf("  %-26s %12s %12s %10s %10s\n", "check (50% allowed)", "checks/s", "per CPU-s",
           "p50 us", "p99 us");
    for (int i = 0; i < 3; i++)
        if (ran[i])
            printf("  agent_api_key#%-12s %12.0f %12.0f %10.2f %10.2f   (n=%zu)\n", perms[i],
                   cs[i].per_s, cs[i].per_cpu_s, cs[i].p50_us, cs[i].p99_us, cs[i].n);
    if (checks_only)
        goto done;
    printf("  LookupResources(agent_api_key, read, admin) -> %d keys: p50 %.1f us, p99 %.1f "
           "us (runs=%zu)\n",
           AGENTS_PER_ACCOUNT * KEYS_PER_AGENT, lr.p50_us, lr.p99_us, lr.n);
    printf("  simple caveat (%d docs): plain %.0f/s (p50 %.2f us); context on the "
           "relationship %.0f/s (p50 %.2f us): %.2fx; context in the request %.0f/s (p50 %.2f "
           "us): %.2fx\n",
           CAV_DOCS, cp.per_s, cp.p50_us, cc.per_s, cc.p50_us,
           cc.per_s > 0 ? cp.per_s / cc.per_s : 0.0, cq.per_s, cq.p50_us,
           cq.per_s > 0 ? cp.per_s / cq.per_s : 0.0);
done:
    printf("{\"bench\":\"authz\",\"dataset\":\"agents-1M\",\"scale\":%g,\"relationships\":%zu,"
           "\"load_s\":%.3f,\"load_cpu_s\":%.3f,\"load_rels_per_s\":%.0f,\"rss_kb\":%ld,\"rss_"
           "delta_kb\":%ld,"
           "\"rss_bytes_per_rel\":%.1f,\"engine_bytes_per_rel\":%.1f",
           scale, n_rels, load_s, load_cpu_s, (double)n_rels / load_s, rss1, rss1 - rss0,
           rss_per_rel, mem_per_rel);
    for (int i = 0; i < 3; i++)
        if (ran[i])
            printf(",\"check_%s\":{\"n\":%zu,\"per_s\":%.0f,\"per_cpu_s\":%.0f,\"p50_us\":%.3f,"
                   "\"p99_us\":%.3f}",
                   perms[i], cs[i].n, cs[i].per_s, cs[i].per_cpu_s, cs[i].p50_us, cs[i].p99_us);
    if (checks_only) {
        printf("}\n");
        goto out;
    }
    printf(",\"lookup_resources_read\":{\"results\":%d,\"runs\":%zu,\"p50_us\":%.1f,"
           "\"p99_us\":%.1f}",
           AGENTS_PER_ACCOUNT * KEYS_PER_AGENT, lr.n, lr.p50_us, lr.p99_us);
    printf(",\"caveat_check\":{\"plain_per_s\":%.0f,\"plain_p50_us\":%.3f,\"rel_ctx_per_s\":%.0f,"
           "\"rel_ctx_p50_us\":%.3f,\"req_ctx_per_s\":%.0f,\"req_ctx_p50_us\":%.3f}}\n",
           cp.per_s, cp.p50_us, cc.per_s, cc.p50_us, cq.per_s, cq.p50_us);

out:
    kw_engine_free(e);
    kw_free(schema_owned);
    kw_free(lat);
    kw_free(queries);
    kw_free(b);
    return 0;
}
