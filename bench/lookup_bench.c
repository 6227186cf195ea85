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
 * Dataset 2, stream-1M: `doc#view = viewer`, 1,000,000 doc:N#viewer@user:reader, one
 * lookup of doc#view for user:reader timed whole (results/s, planned path).
 *
 * Usage: lookup_bench [--scale F] [--runs N] [--stream N]
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
        int rc = kw__engine_lookup_resources_path(e, KW_STR("agent_api_key"), KW_STR("read"), subj,
                                                  KW_STR_NULL, path, count_res, &got, &d);
        lat[i] = now_s() - t0;
        if (rc != KW_OK)
            die("lookup", rc, &d);
        if (got != want) {
            fprintf(stderr, "lookup_bench: WRONG ANSWER: member %d found %zu keys, want %zu\n",
                    member, got, want);
            exit(1);
        }
    }
    qsort(lat, runs, sizeof(double), cmp_double);
    return (stats_t){lat[runs / 2] * 1e6, lat[(runs * 99) / 100] * 1e6};
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    size_t runs = 200, stream = 1000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--stream") && i + 1 < argc)
            stream = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: lookup_bench [--scale F] [--runs N] [--stream N]\n");
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
    stats_t st[4][2];
    for (int c = 0; c < 4; c++)
        for (int p = 0; p < 2; p++)
            st[c][p] = bench_case(e, n_accounts, cases[c].member, cases[c].want,
                                  p == 0 ? KW__LK_AUTO : KW__LK_GENERAL, runs, lat);
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
    kw_engine_free(e);

    printf("lookup_bench: agents-1M at scale %g (%llu accounts), runs=%zu\n", scale,
           (unsigned long long)n_accounts, runs);
    printf("  %-10s %8s %12s %12s %12s %12s\n", "subject", "results", "plan p50 us", "plan p99 us",
           "walk p50 us", "walk p99 us");
    for (int c = 0; c < 4; c++)
        printf("  %-10s %8zu %12.1f %12.1f %12.1f %12.1f\n", cases[c].name, cases[c].want,
               st[c][0].p50_us, st[c][0].p99_us, st[c][1].p50_us, st[c][1].p99_us);
    printf("  stream: %zu results of doc#view, median of 3: %.0f results/s\n", stream, med[1]);
    printf("{\"bench\":\"lookup\",\"scale\":%g", scale);
    for (int c = 0; c < 4; c++)
        printf(",\"%s\":{\"results\":%zu,\"plan_p50_us\":%.1f,\"plan_p99_us\":%.1f,"
               "\"walk_p50_us\":%.1f,\"walk_p99_us\":%.1f}",
               cases[c].name, cases[c].want, st[c][0].p50_us, st[c][0].p99_us, st[c][1].p50_us,
               st[c][1].p99_us);
    printf(",\"stream\":{\"results\":%zu,\"per_s\":%.0f}}\n", stream, med[1]);
    free(lat);
    free(b);
    return 0;
}
