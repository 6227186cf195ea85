/*
 * bench/lookup_bench.c - LookupResources bounded by its result (issue 15 item 3).
 *
 * Dataset 1, agents-1M (the same graph as bench/authz_bench.c at --scale 1: 1,000
 * accounts x 20 members, the first admin; 10 agents per account owned by members 1..10;
 * 100 keys per agent owned by the agent's owner; 3,050,000 relationships). Lookups of
 * agent_api_key#read, each answer's size verified:
 *   admin    an account's admin: 1,000 keys (through account->manage);
 *   owner    member 1 of an account: the 100 keys of the agent it owns;
 *   none     member 15 of an account: owns nothing, 0 keys (but a member of the tenant,
 *            so the general path walks the whole account through tenant_gate);
 *   stranger a user in no relationship: 0 keys.
 * Each by the planned path (the engine's default) and by the general walk + Check.
 * LookupSubjects on the same graph, each by its plan and by the walk:
 *   key read     users who can read one key: its owner and its account's admin (2);
 *   agent read   users who can read one agent: the same two, through agent#read (2);
 *   key tenant   users in one key's tenant_gate: the account's 20 members;
 *   key sa       service accounts who can read one key: none (0).
 * Dataset 3, viewers-100k: doc:big#viewer@user:N for 100,000 users, LookupSubjects of
 * doc:big#view (100,000 results) by both paths.
 * Dataset 2, stream-1M: `doc#view = viewer`, 1,000,000 doc:N#viewer@user:reader, one
 * lookup of doc#view for user:reader timed whole (results/s, planned path); then the
 * same answer by the ordered API in chunks as kw_v1_lookup_resources runs it (first chunk
 * 128, then x4 up to 65,536, each id copied out like the service does, one
 * kw_lr_stream_t): the first ordered call (which builds doc's id index), the latency of
 * the first 100 results (the first chunk of a new stream, index built), and the whole
 * chunked stream in results/s, each verified (count and strict id order).
 *
 * Usage: lookup_bench [--scale F] [--runs N] [--stream N] [--only CASE]
 * (--only admin|owner|none|stranger: that LookupResources case alone, by the default path,
 * for a profiler.)
 * Prints a table and one JSON line ("{\"bench\":\"lookup\",...}").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agents1m.h"
#include "authz/engine_int.h"

static const char docs[] = "definition user {}\n"
                           "definition doc {\n"
                           "    relation viewer: user\n"
                           "    permission view = viewer\n"
                           "}\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static _Noreturn void die(const char *what, int rc, const kw_diag_t *d)
{
    fprintf(stderr, "lookup_bench: %s: %s (%s)\n", what, d && d->msg[0] ? d->msg : "",
            kw_err_name(rc));
    exit(1);
}

static int count_res(const kw_resource_result_t *r, void *ud)
{
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* bench_case's path: the first chunk of a /v1 stream (the ordered lookup of 128). */
#define PATH_ORDERED_FIRST 99
#define V1_FIRST_CHUNK 128u

typedef struct stats {
    double p50_us, p99_us;
} stats_t;

/* `runs` lookups of agent_api_key#read for member `member` of random accounts (member <
 * 0: a user in no relationship), by `path`; every answer must have `want` results. */
static stats_t bench_case(kw_engine_t *e, uint64_t n_accounts, int member, size_t want, int path,
                          size_t runs, double *lat)
{
    static uint64_t rs = 0x2545f4914f6cdd1dULL;
    char uid[ID_LEN + 1];
    for (size_t i = 0; i < runs; i++) {
        rs ^= rs << 13;
        rs ^= rs >> 7;
        rs ^= rs << 17;
        uint64_t a = rs % n_accounts;
        make_id(K_USER, member < 0 ? (uint64_t)1 << 40 : a * MEMBERS_PER_ACCOUNT + (uint64_t)member,
                uid);
        kw_subject_t subj = {KW_STR("user"), {uid, ID_LEN}, KW_STR_NULL};
        size_t got = 0;
        kw_diag_t d;
        double t0 = now_s();
        int rc =
            path == PATH_ORDERED_FIRST
                ? kw_engine_lookup_resources_ordered(e, KW_STR("agent_api_key"), KW_STR("read"),
                                                     subj, KW_STR_NULL, NULL, V1_FIRST_CHUNK, NULL,
                                                     count_res, &got, NULL, &d)
                : kw__engine_lookup_resources_path(e, KW_STR("agent_api_key"), KW_STR("read"), subj,
                                                   KW_STR_NULL, path, count_res, &got, &d);
        lat[i] = now_s() - t0;
        if (rc != KW_OK)
            die("lookup", rc, &d);
        if (path == PATH_ORDERED_FIRST && want > V1_FIRST_CHUNK)
            want = V1_FIRST_CHUNK;
        if (got != want) {
            fprintf(stderr, "lookup_bench: WRONG ANSWER: member %d found %zu keys, want %zu\n",
                    member, got, want);
            exit(1);
        }
    }
    qsort(lat, runs, sizeof(double), cmp_double);
    return (stats_t){lat[runs / 2] * 1e6, lat[(runs * 99) / 100] * 1e6};
}

static int count_subj(const kw_subject_result_t *r, void *ud)
{
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

/* `runs` LookupSubjects of (rtype:random object)#perm for subjects of `stype`, by `path`;
 * every answer must have `want` results. kind/n pick the object: n objects of kind. */
static stats_t bench_ls_case(kw_engine_t *e, kind_t kind, uint64_t n, const char *rtype,
                             const char *perm, const char *stype, size_t want, int path,
                             size_t runs, double *lat)
{
    static uint64_t rs = 0x9e3779b97f4a7c15ULL;
    char id[ID_LEN + 1];
    for (size_t i = 0; i < runs; i++) {
        rs ^= rs << 13;
        rs ^= rs >> 7;
        rs ^= rs << 17;
        if (kind)
            make_id(kind, rs % n, id);
        else
            snprintf(id, sizeof(id), "big");
        kw_object_t o = {kw_str_c(rtype), kw_str_c(id)};
        size_t got = 0;
        kw_diag_t d;
        double t0 = now_s();
        int rc = kw__engine_lookup_subjects_path(e, o, kw_str_c(perm), kw_str_c(stype), KW_STR(""),
                                                 KW_STR_NULL, path, count_subj, &got, &d);
        lat[i] = now_s() - t0;
        if (rc != KW_OK)
            die("lookup_subjects", rc, &d);
        if (got != want) {
            fprintf(stderr, "lookup_bench: WRONG ANSWER: %s:%s#%s found %zu %s, want %zu\n", rtype,
                    id, perm, got, stype, want);
            exit(1);
        }
    }
    qsort(lat, runs, sizeof(double), cmp_double);
    return (stats_t){lat[runs / 2] * 1e6, lat[(runs * 99) / 100] * 1e6};
}

/* The chunk loop of kw_v1_lookup_resources (src/api/v1svc_perm.c), without HTTP. */
#define V1_CHUNK 65536u
/* new docs written without, then with the id index */
#define EXTRA_DOCS 100000

typedef struct chunk {
    char **ids;
    size_t n, cap;
} chunk_t;

static int chunk_res(const kw_resource_result_t *r, void *ud)
{
    chunk_t *c = ud;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        char **v = realloc(c->ids, cap * sizeof(char *));
        if (!v)
            return 1;
        c->ids = v;
        c->cap = cap;
    }
    char *p = malloc(r->id.len + 2);
    if (!p)
        return 1;
    memcpy(p, r->id.ptr, r->id.len);
    p[r->id.len] = '\0';
    c->ids[c->n++] = p;
    return 0;
}

/* Streams the whole answer in chunks; returns the count (verified in order). When
 * first_s is given, only the first chunk runs and its time goes there. */
static size_t chunked_stream(kw_engine_t *e, kw_subject_t subj, double *first_s)
{
    kw_lr_stream_t *ls;
    kw_diag_t d;
    if (kw_lr_stream_new(&ls) != KW_OK)
        die("stream state", KW_ENOMEM, NULL);
    chunk_t c = {NULL, 0, 0};
    char last[ID_LEN + 1] = "";
    size_t last_len = 0, total = 0, max = V1_FIRST_CHUNK;
    bool have = false;
    for (;;) {
        kw_str_t after = {last, last_len};
        c.n = 0;
        double t0 = now_s();
        int rc = kw_engine_lookup_resources_ordered(e, KW_STR("doc"), KW_STR("view"), subj,
                                                    KW_STR_NULL, have ? &after : NULL, max, ls,
                                                    chunk_res, &c, NULL, &d);
        if (rc != KW_OK)
            die("ordered lookup", rc, &d);
        if (first_s)
            *first_s = now_s() - t0;
        for (size_t i = 0; i < c.n; i++) {
            size_t len = strlen(c.ids[i]);
            if (have && kw__oidx_cmp((kw_str_t){last, last_len}, (kw_str_t){c.ids[i], len}) >= 0) {
                fprintf(stderr, "lookup_bench: WRONG ORDER at %s\n", c.ids[i]);
                exit(1);
            }
            if (len > ID_LEN)
                die("id length", KW_EINVAL, NULL);
            memcpy(last, c.ids[i], len);
            last_len = len;
            have = true;
            free(c.ids[i]);
        }
        total += c.n;
        if (first_s || c.n < max)
            break;
        max = max * 4 < V1_CHUNK ? max * 4 : V1_CHUNK;
    }
    free(c.ids);
    kw_lr_stream_free(ls);
    return total;
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    size_t runs = 200, stream = 1000000;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--stream") && i + 1 < argc)
            stream = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr,
                    "usage: lookup_bench [--scale F] [--runs N] [--stream N] [--only CASE]\n");
            return 2;
        }
    }
    uint64_t n_accounts = (uint64_t)(1000.0 * scale + 0.5);
    if (n_accounts < 1 || runs == 0) {
        fprintf(stderr, "lookup_bench: --scale and --runs must be positive\n");
        return 2;
    }
    double *lat = malloc(sizeof(double) * runs);
    batch_t *b = calloc(1, sizeof(*b));
    if (!lat || !b)
        return 1;
    kw_diag_t d;
    kw_engine_t *e;
    int rc = kw_engine_new(&e);
    if (rc != KW_OK)
        die("engine", rc, NULL);
    if ((rc = kw_engine_set_schema(e, (kw_str_t){agents1m_schema, sizeof(agents1m_schema) - 1},
                                   NULL, &d)))
        die("schema", rc, &d);
    b->e = e;
    b->prog = "lookup_bench";
    agents1m_load(b, n_accounts);

    static const struct {
        const char *name;
        int member;
        size_t want;
    } cases[] = {{"admin", 0, AGENTS_PER_ACCOUNT * KEYS_PER_AGENT},
                 {"owner", 1, KEYS_PER_AGENT},
                 {"none", 15, 0},
                 {"stranger", -1, 0}};
    if (only) {
        /* One LookupResources case by the default path alone (for profilers). */
        for (int c = 0; c < 4; c++) {
            if (strcmp(cases[c].name, only) != 0)
                continue;
            double t0 = now_s();
            stats_t one =
                bench_case(e, n_accounts, cases[c].member, cases[c].want, KW__LK_AUTO, runs, lat);
            printf("lookup_bench: %s x %zu: p50 %.1f us, p99 %.1f us, %.3f s\n", only, runs,
                   one.p50_us, one.p99_us, now_s() - t0);
            kw_engine_free(e);
            free(lat);
            free(b);
            return 0;
        }
        fprintf(stderr, "lookup_bench: --only: admin, owner, none or stranger\n");
        return 2;
    }
    stats_t st[4][2], ord[4];
    for (int c = 0; c < 4; c++)
        for (int p = 0; p < 2; p++)
            st[c][p] = bench_case(e, n_accounts, cases[c].member, cases[c].want,
                                  p == 0 ? KW__LK_AUTO : KW__LK_GENERAL, runs, lat);
    /* the first chunk of a /v1 stream (agent_api_key's id index built by a first call) */
    double t_build = now_s();
    (void)bench_case(e, n_accounts, cases[0].member, cases[0].want, PATH_ORDERED_FIRST, 1, lat);
    t_build = now_s() - t_build;
    for (int c = 0; c < 4; c++)
        ord[c] = bench_case(e, n_accounts, cases[c].member, cases[c].want, PATH_ORDERED_FIRST, runs,
                            lat);
    static const struct {
        const char *name;
        kind_t kind;
        uint64_t per_account;
        const char *rtype, *perm, *stype;
        size_t want;
    } ls_cases[] = {{"key read", K_KEY, AGENTS_PER_ACCOUNT * KEYS_PER_AGENT, "agent_api_key",
                     "read", "user", 2},
                    {"agent read", K_AGENT, AGENTS_PER_ACCOUNT, "agent", "read", "user", 2},
                    {"key tenant", K_KEY, AGENTS_PER_ACCOUNT * KEYS_PER_AGENT, "agent_api_key",
                     "tenant_gate", "user", MEMBERS_PER_ACCOUNT},
                    {"key sa", K_KEY, AGENTS_PER_ACCOUNT * KEYS_PER_AGENT, "agent_api_key", "read",
                     "service_account", 0},
                    {"big view", K_NONE, 0, "doc", "view", "user", 0}};
    enum { N_LS = sizeof(ls_cases) / sizeof(ls_cases[0]) };
    stats_t lst[N_LS][2];
    for (int c = 0; c < N_LS - 1; c++)
        for (int p = 0; p < 2; p++)
            lst[c][p] =
                bench_ls_case(e, ls_cases[c].kind, ls_cases[c].per_account * n_accounts,
                              ls_cases[c].rtype, ls_cases[c].perm, ls_cases[c].stype,
                              ls_cases[c].want, p == 0 ? KW__LK_AUTO : KW__LK_GENERAL, runs, lat);
    kw_engine_free(e);

    /* viewers-100k */
    if ((rc = kw_engine_new(&e)) != KW_OK)
        die("engine", rc, NULL);
    if ((rc = kw_engine_set_schema(e, (kw_str_t){docs, sizeof(docs) - 1}, NULL, &d)))
        die("schema", rc, &d);
    b->e = e;
    size_t n_big = 100000, big_runs = runs < 20 ? runs : 20;
    for (size_t i = 0; i < n_big; i++)
        add(b, "doc", K_NONE, 0, "viewer", "user", K_USER, i);
    flush(b);
    for (int p = 0; p < 2; p++)
        lst[N_LS - 1][p] = bench_ls_case(e, K_NONE, 0, "doc", "view", "user", n_big,
                                         p == 0 ? KW__LK_AUTO : KW__LK_GENERAL, big_runs, lat);
    kw_engine_free(e);

    /* stream-1M */
    if ((rc = kw_engine_new(&e)) != KW_OK)
        die("engine", rc, NULL);
    if ((rc = kw_engine_set_schema(e, (kw_str_t){docs, sizeof(docs) - 1}, NULL, &d)))
        die("schema", rc, &d);
    b->e = e;
    for (size_t i = 0; i < stream; i++)
        add(b, "doc", K_KEY, i, "viewer", "user", K_USER, 7);
    flush(b);
    char uid[ID_LEN + 1];
    make_id(K_USER, 7, uid);
    kw_subject_t reader = {KW_STR("user"), {uid, ID_LEN}, KW_STR_NULL};
    double best = 0, med[3];
    for (int r = 0; r < 3; r++) {
        size_t got = 0;
        double t0 = now_s();
        rc = kw_engine_lookup_resources_ctx(e, KW_STR("doc"), KW_STR("view"), reader, KW_STR_NULL,
                                            count_res, &got, NULL, &d);
        double t = now_s() - t0;
        if (rc != KW_OK)
            die("stream lookup", rc, &d);
        if (got != stream) {
            fprintf(stderr, "lookup_bench: WRONG ANSWER: stream found %zu, want %zu\n", got,
                    stream);
            exit(1);
        }
        med[r] = (double)stream / t;
        if (med[r] > best)
            best = med[r];
    }
    qsort(med, 3, sizeof(double), cmp_double);
    /* the ordered API: index build, first lines, whole chunked stream */
    double build_s = 0, first[5], whole[3];
    if (chunked_stream(e, reader, &build_s) != (stream < V1_FIRST_CHUNK ? stream : V1_FIRST_CHUNK))
        die("first chunk", KW_EINTERNAL, NULL);
    for (int r = 0; r < 5; r++)
        if (chunked_stream(e, reader, &first[r]) == 0)
            die("first chunk", KW_EINTERNAL, NULL);
    qsort(first, 5, sizeof(double), cmp_double);
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        size_t got = chunked_stream(e, reader, NULL);
        double t = now_s() - t0;
        if (got != stream) {
            fprintf(stderr, "lookup_bench: WRONG ANSWER: chunked stream found %zu, want %zu\n", got,
                    stream);
            exit(1);
        }
        whole[r] = (double)stream / t;
    }
    qsort(whole, 3, sizeof(double), cmp_double);
    size_t idx_bytes = kw__oidx_memory(&e->g);
    /* the same writes with doc's id index kept up to date, then the stream verified again */
    double t_idx = now_s();
    for (size_t i = stream; i < stream + EXTRA_DOCS; i++)
        add(b, "doc", K_KEY, i, "viewer", "user", K_USER, 7);
    flush(b);
    t_idx = now_s() - t_idx;
    if (chunked_stream(e, reader, NULL) != stream + EXTRA_DOCS)
        die("chunked stream after writes", KW_EINTERNAL, NULL);
    /* and without it (dropped: this process alone uses the engine) */
    kw__oidx_close(&e->g);
    double t_noidx = now_s();
    for (size_t i = stream + EXTRA_DOCS; i < stream + 2 * EXTRA_DOCS; i++)
        add(b, "doc", K_KEY, i, "viewer", "user", K_USER, 7);
    flush(b);
    t_noidx = now_s() - t_noidx;
    kw_engine_free(e);

    printf("lookup_bench: agents-1M at scale %g (%llu accounts), runs=%zu\n", scale,
           (unsigned long long)n_accounts, runs);
    printf("  %-10s %8s %12s %12s %12s %12s\n", "subject", "results", "plan p50 us", "plan p99 us",
           "walk p50 us", "walk p99 us");
    for (int c = 0; c < 4; c++)
        printf("  %-10s %8zu %12.1f %12.1f %12.1f %12.1f\n", cases[c].name, cases[c].want,
               st[c][0].p50_us, st[c][0].p99_us, st[c][1].p50_us, st[c][1].p99_us);
    printf("  ordered first chunk (%u) of agent_api_key#read, p50/p99 us:", V1_FIRST_CHUNK);
    for (int c = 0; c < 4; c++)
        printf(" %s %.1f/%.1f", cases[c].name, ord[c].p50_us, ord[c].p99_us);
    printf(" (first call with the index build %.1f ms)\n", t_build * 1e3);
    printf("  stream: %zu results of doc#view, median of 3: %.0f results/s\n", stream, med[1]);
    printf("  LookupSubjects (big view: %zu runs)\n", runs < 20 ? runs : (size_t)20);
    printf("  %-10s %8s %12s %12s %12s %12s\n", "query", "results", "plan p50 us", "plan p99 us",
           "walk p50 us", "walk p99 us");
    for (int c = 0; c < N_LS; c++)
        printf("  %-10s %8zu %12.1f %12.1f %12.1f %12.1f\n", ls_cases[c].name,
               c == N_LS - 1 ? (size_t)100000 : ls_cases[c].want, lst[c][0].p50_us,
               lst[c][0].p99_us, lst[c][1].p50_us, lst[c][1].p99_us);
    printf("  writes of %d new docs (batches of %d): %.0f/s without an id index, %.0f/s "
           "with doc's index kept\n",
           EXTRA_DOCS, BATCH, EXTRA_DOCS / t_noidx, EXTRA_DOCS / t_idx);
    printf("  ordered: first call %.1f ms (builds the id index: %.2f bytes per doc), first 100 "
           "results median of 5 %.3f ms, chunked stream median of 3 %.0f results/s\n",
           build_s * 1e3, (double)idx_bytes / (double)(stream ? stream : 1), first[2] * 1e3,
           whole[1]);
    printf("{\"bench\":\"lookup\",\"scale\":%g", scale);
    for (int c = 0; c < 4; c++)
        printf(",\"%s\":{\"results\":%zu,\"plan_p50_us\":%.1f,\"plan_p99_us\":%.1f,"
               "\"walk_p50_us\":%.1f,\"walk_p99_us\":%.1f}",
               cases[c].name, cases[c].want, st[c][0].p50_us, st[c][0].p99_us, st[c][1].p50_us,
               st[c][1].p99_us);
    printf(",\"stream\":{\"results\":%zu,\"per_s\":%.0f,\"ordered_first_call_ms\":%.1f,"
           "\"index_bytes_per_doc\":%.2f,\"first100_ms\":%.3f,\"chunked_per_s\":%.0f,"
           "\"writes_per_s_no_index\":%.0f,\"writes_per_s_index\":%.0f}",
           stream, med[1], build_s * 1e3, (double)idx_bytes / (double)(stream ? stream : 1),
           first[2] * 1e3, whole[1], EXTRA_DOCS / t_noidx, EXTRA_DOCS / t_idx);
    for (int c = 0; c < N_LS; c++)
        printf(",\"ls %s\":{\"plan_p50_us\":%.1f,\"plan_p99_us\":%.1f,\"walk_p50_us\":%.1f,"
               "\"walk_p99_us\":%.1f}",
               ls_cases[c].name, lst[c][0].p50_us, lst[c][0].p99_us, lst[c][1].p50_us,
               lst[c][1].p99_us);
    printf("}\n");
    free(lat);
    free(b);
    return 0;
}
