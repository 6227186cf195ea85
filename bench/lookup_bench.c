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
 * lookup of doc#view for user:reader timed whole (results/s, planned path); then the
 * same answer by the ordered API in chunks as kw_v1_lookup_resources runs it (first chunk
 * 128, then x4 up to 65,536, each id copied out like the service does, one
 * kw_lr_stream_t): the first ordered call (which builds doc's id index), the latency of
 * the first 100 results (the first chunk of a new stream, index built), and the whole
 * chunked stream in results/s, each verified (count and strict id order).
 *
 * Usage: lookup_bench [--scale F] [--runs N] [--stream N]
 * Prints a table and one JSON line ("{\"bench\":\"lookup\",...}").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz/engine_int.h"

#define MEMBERS_PER_ACCOUNT 20
#define AGENTS_PER_ACCOUNT 10
#define KEYS_PER_AGENT 100
#define BATCH 1000
#define ID_LEN 36

/* tag-kw-agentex-schema: equivalent to src/api/agentex.zed. */
static const char agentex[] =
    "definition user {}\n"
    "definition service_account {}\n"
    "definition account {\n"
    "    relation admin: user | service_account\n"
    "    relation member: user | service_account\n"
    "    permission gate = admin + member\n"
    "    permission manage = admin\n"
    "    permission create_agent = admin + member\n"
    "}\n"
    "definition agent {\n"
    "    relation account: account\n"
    "    relation owner: user | service_account\n"
    "    relation editor: user | service_account | account#member\n"
    "    relation viewer: user | service_account | account#member\n"
    "    relation self: agent\n"
    "    permission tenant_gate = account->gate\n"
    "    permission read = ((owner + editor + viewer + account->manage) & tenant_gate) + self\n"
    "    permission update = (owner + editor + account->manage) & tenant_gate\n"
    "    permission delete = (owner + account->manage) & tenant_gate\n"
    "}\n"
    "definition agent_api_key {\n"
    "    relation parent_agent: agent\n"
    "    relation account: account\n"
    "    relation owner: user | service_account\n"
    "    relation editor: user | service_account\n"
    "    relation viewer: user | service_account\n"
    "    permission tenant_gate = account->gate\n"
    "    permission read = (owner + editor + viewer + parent_agent->update) & "
    "parent_agent->read & tenant_gate\n"
    "    permission update = (owner + editor) & parent_agent->update & tenant_gate\n"
    "    permission delete = (owner + editor) & parent_agent->update & tenant_gate\n"
    "}\n";

static const char docs[] = "definition user {}\n"
                           "definition doc {\n"
                           "    relation viewer: user\n"
                           "    permission view = viewer\n"
                           "}\n";

typedef enum { K_USER = 1, K_ACCOUNT, K_AGENT, K_KEY } kind_t;

static char *hex(char *p, uint64_t v, int digits)
{
    static const char xd[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--)
        *p++ = xd[(v >> (4 * i)) & 0xf];
    return p;
}

/* The ids of bench/authz_bench.c: UUID-shaped, derived from (kind, index). */
static void make_id(kind_t kind, uint64_t index, char out[ID_LEN + 1])
{
    uint64_t h1 = kw_hash_u64(((uint64_t)kind << 56) ^ index ^ 0x9e3779b97f4a7c15ULL);
    uint64_t h2 = kw_hash_u64(h1 ^ 0xd1b54a32d192ed03ULL);
    char *p = hex(out, h1 >> 32, 8);
    *p++ = '-';
    p = hex(p, (h1 >> 16) & 0xffffu, 4);
    *p++ = '-';
    *p++ = '4';
    p = hex(p, h1 & 0xfffu, 3);
    *p++ = '-';
    p = hex(p, 0x8000u | ((h2 >> 48) & 0x3fffu), 4);
    *p++ = '-';
    p = hex(p, h2 & 0xffffffffffffULL, 12);
    *p = '\0';
}

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

typedef struct batch {
    kw_update_t ups[BATCH];
    char ids[BATCH][2][ID_LEN + 1];
    size_t n;
    kw_engine_t *e;
} batch_t;

static void flush(batch_t *b)
{
    kw_diag_t d;
    if (b->n == 0)
        return;
    int rc = kw_engine_write(b->e, b->ups, b->n, NULL, 0, 0, NULL, &d);
    if (rc != KW_OK)
        die("write", rc, &d);
    b->n = 0;
}

static void add(batch_t *b, const char *rtype, kind_t rk, uint64_t ri, const char *rel,
                const char *stype, kind_t sk, uint64_t si)
{
    size_t i = b->n;
    make_id(rk, ri, b->ids[i][0]);
    make_id(sk, si, b->ids[i][1]);
    kw_update_t *u = &b->ups[i];
    u->op = KW_OP_TOUCH;
    u->rel.resource = (kw_object_t){kw_str_c(rtype), {b->ids[i][0], ID_LEN}};
    u->rel.relation = kw_str_c(rel);
    u->rel.subject = (kw_subject_t){kw_str_c(stype), {b->ids[i][1], ID_LEN}, KW_STR_NULL};
    if (++b->n == BATCH)
        flush(b);
}

static void load_agents(batch_t *b, uint64_t n_accounts)
{
    for (uint64_t a = 0; a < n_accounts; a++) {
        for (uint64_t m = 0; m < MEMBERS_PER_ACCOUNT; m++)
            add(b, "account", K_ACCOUNT, a, m == 0 ? "admin" : "member", "user", K_USER,
                a * MEMBERS_PER_ACCOUNT + m);
        for (uint64_t j = 0; j < AGENTS_PER_ACCOUNT; j++) {
            uint64_t g = a * AGENTS_PER_ACCOUNT + j;
            uint64_t owner = a * MEMBERS_PER_ACCOUNT + 1 + j % (MEMBERS_PER_ACCOUNT - 1);
            add(b, "agent", K_AGENT, g, "account", "account", K_ACCOUNT, a);
            add(b, "agent", K_AGENT, g, "owner", "user", K_USER, owner);
            add(b, "agent", K_AGENT, g, "self", "agent", K_AGENT, g);
            for (uint64_t i = 0; i < KEYS_PER_AGENT; i++) {
                uint64_t k = g * KEYS_PER_AGENT + i;
                add(b, "agent_api_key", K_KEY, k, "parent_agent", "agent", K_AGENT, g);
                add(b, "agent_api_key", K_KEY, k, "account", "account", K_ACCOUNT, a);
                add(b, "agent_api_key", K_KEY, k, "owner", "user", K_USER, owner);
            }
        }
    }
    flush(b);
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
    if ((rc = kw_engine_set_schema(e, (kw_str_t){agentex, sizeof(agentex) - 1}, NULL, &d)))
        die("schema", rc, &d);
    b->e = e;
    load_agents(b, n_accounts);

    static const struct {
        const char *name;
        int member;
        size_t want;
    } cases[] = {{"admin", 0, AGENTS_PER_ACCOUNT * KEYS_PER_AGENT},
                 {"owner", 1, KEYS_PER_AGENT},
                 {"none", 15, 0},
                 {"stranger", -1, 0}};
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
           "\"writes_per_s_no_index\":%.0f,\"writes_per_s_index\":%.0f}}\n",
           stream, med[1], build_s * 1e3, (double)idx_bytes / (double)(stream ? stream : 1),
           first[2] * 1e3, whole[1], EXTRA_DOCS / t_noidx, EXTRA_DOCS / t_idx);
    free(lat);
    free(b);
    return 0;
}
