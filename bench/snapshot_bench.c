/*
 * bench/snapshot_bench.c - the cost of atExactSnapshot at an older revision (issue 12 item 3;
 * authz/history.c): materializing a snapshot engine on agents-1M, the change log's memory,
 * and what logging costs a write.
 *
 * Dataset agents-1M (bench/lookup_bench.c's, 3,050,000 relationships at --scale 1). After
 * the load, the change log is switched on and --changes relationship changes are applied in
 * batches of 10 (each batch: 5 TOUCHes of new agent viewers, 5 DELETEs of key owners); then
 * (other keys for each run) the snapshot at the revision before them is materialized --runs times
 * (cache off), each checked against the live engine on a changed relationship. Also timed: the same
 * batches with the log off (the write path's baseline).
 *
 * Usage: snapshot_bench [--scale F] [--runs N] [--changes N]
 * Prints a table and one JSON line ("{\"bench\":\"snapshot\",...}").
 */
#include <pthread.h>
#include <stdatomic.h>
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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Applies `n` changes in batches of 10 starting at change number `from`: 5 TOUCHes of a
 * new viewer on agent i, 5 DELETEs of key i's owner. Returns the wall seconds. */
static double churn(batch_t *b, uint64_t n_accounts, size_t from, size_t n, uint64_t parity)
{
    double t0 = now_s();
    uint64_t n_agents = n_accounts * AGENTS_PER_ACCOUNT;
    for (size_t c = from; c < from + n; c++) {
        uint64_t i = c / 2;
        if (c % 2 == 0) {
            add(b, "agent", K_AGENT, i % n_agents, "viewer", "user", K_USER, (1ULL << 41) + i);
        } else {
            uint64_t k = ((i - from / 2) * 7919 * 2 + parity) % (n_agents * KEYS_PER_AGENT);
            uint64_t g = k / KEYS_PER_AGENT, a = g / AGENTS_PER_ACCOUNT;
            uint64_t owner =
                a * MEMBERS_PER_ACCOUNT + 1 + (g % AGENTS_PER_ACCOUNT) % (MEMBERS_PER_ACCOUNT - 1);
            add(b, "agent_api_key", K_KEY, k, "owner", "user", K_USER, owner);
            b->ups[b->n - 1].op = KW_OP_DELETE;
        }
        if (b->n == 10)
            flush(b);
    }
    flush(b);
    return now_s() - t0;
}

/* A writer beside the materialization: one-relationship TOUCHes until told to stop; its
 * longest wait is how long the snapshot's copy held writers off. */
typedef struct writer {
    kw_engine_t *e;
    atomic_bool stop;
    double max_s;
    size_t n;
} writer_t;

static void *writer_run(void *ud)
{
    writer_t *w = ud;
    char aid[ID_LEN + 1], uid[ID_LEN + 1];
    make_id(K_AGENT, 1, aid);
    while (!atomic_load(&w->stop)) {
        make_id(K_USER, (1ULL << 42) + w->n, uid);
        kw_update_t u = {.op = KW_OP_TOUCH};
        u.rel.resource = (kw_object_t){KW_STR("agent"), {aid, ID_LEN}};
        u.rel.relation = KW_STR("viewer");
        u.rel.subject = (kw_subject_t){KW_STR("user"), {uid, ID_LEN}, KW_STR_NULL};
        kw_diag_t d;
        double t0 = now_s();
        if (kw_engine_write(w->e, &u, 1, NULL, 0, 0, NULL, &d) != KW_OK)
            die("writer", KW_EINTERNAL, &d);
        double t = now_s() - t0;
        if (t > w->max_s)
            w->max_s = t;
        w->n++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    size_t runs = 3, changes = 10000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--changes") && i + 1 < argc)
            changes = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: snapshot_bench [--scale F] [--runs N] [--changes N]\n");
            return 2;
        }
    }
    uint64_t n_accounts = (uint64_t)(1000.0 * scale + 0.5);
    if (n_accounts < 1 || runs == 0 || changes < 2) {
        fprintf(stderr, "snapshot_bench: --scale, --runs and --changes must be positive\n");
        return 2;
    }
    batch_t *b = calloc(1, sizeof(*b));
    double *t = calloc(runs, sizeof(double)), *cpu = calloc(runs, sizeof(double));
    if (!b || !t || !cpu)
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
    size_t n_rels = kw_engine_count(e);
    size_t live_mem = kw_engine_memory(e);

    /* The write path without and with the log (the same kind of changes, other ids). */
    double off = churn(b, n_accounts, 10000000, changes, 1);
    kw_engine_set_history(e, 3600LL * 1000000, changes * 2, 0, 0);
    kw_revision_t r0 = kw_engine_revision(e);
    double on = churn(b, n_accounts, 0, changes, 0);
    kw_history_info_t info;
    kw_engine_history_info(e, &info);

    size_t snap_mem = 0;
    for (size_t r = 0; r < runs; r++) {
        kw_snapshot_t *s = NULL;
        double t0 = now_s(), c0 = cpu_s();
        if ((rc = kw_engine_snapshot(e, r0, &s, &d)) != KW_OK)
            die("snapshot", rc, &d);
        t[r] = now_s() - t0;
        cpu[r] = cpu_s() - c0;
        kw_engine_t *se = kw_snapshot_engine(s);
        snap_mem = kw_engine_memory(se);
        /* Change 0 added agent 0's viewer: present live, absent in the snapshot. */
        char aid[ID_LEN + 1], uid[ID_LEN + 1];
        make_id(K_AGENT, 0, aid);
        make_id(K_USER, 1ULL << 41, uid);
        kw_object_t res = {KW_STR("agent"), {aid, ID_LEN}};
        kw_subject_t sub = {KW_STR("user"), {uid, ID_LEN}, KW_STR_NULL};
        kw_check_result_t live = KW_CHECK_NO, old = KW_CHECK_YES;
        if (kw_engine_check(e, res, KW_STR("viewer"), sub, &live, NULL, &d) != KW_OK ||
            kw_engine_check(se, res, KW_STR("viewer"), sub, &old, NULL, &d) != KW_OK ||
            live != KW_CHECK_YES || old != KW_CHECK_NO || kw_engine_count(se) != n_rels) {
            fprintf(stderr, "snapshot_bench: WRONG ANSWER: live %d, snapshot %d, %zu vs %zu rels\n",
                    live, old, kw_engine_count(se), n_rels);
            return 1;
        }
        kw_snapshot_release(s);
    }
    /* Once more with a writer beside it (its writes are after r0: the snapshot is the same). */
    writer_t w = {.e = e};
    atomic_init(&w.stop, false);
    pthread_t th;
    if (pthread_create(&th, NULL, writer_run, &w) != 0)
        die("thread", KW_ENOMEM, NULL);
    kw_snapshot_t *ws = NULL;
    double tw0 = now_s();
    if ((rc = kw_engine_snapshot(e, r0, &ws, &d)) != KW_OK)
        die("snapshot", rc, &d);
    double tw = now_s() - tw0;
    atomic_store(&w.stop, true);
    pthread_join(th, NULL);
    kw_snapshot_release(ws);
    qsort(t, runs, sizeof(double), cmp_double);
    qsort(cpu, runs, sizeof(double), cmp_double);
    printf("snapshot_bench: agents-1M at scale %g: %zu relationships (engine %.0f MiB)\n", scale,
           n_rels, (double)live_mem / 1048576);
    printf("  %zu changes in batches of 10: log off %.1f ms, on %.1f ms (%.2f us/change more)\n",
           changes, off * 1e3, on * 1e3, (on - off) / (double)changes * 1e6);
    printf("  change log: %zu changes, %.2f MiB (%.0f bytes/change)\n", info.n_changes,
           (double)info.bytes / 1048576, (double)info.bytes / (double)info.n_changes);
    printf("  materialize the snapshot %zu changes back: median %.0f ms wall, %.0f ms CPU "
           "(%zu runs), %.0f MiB\n",
           changes, t[runs / 2] * 1e3, cpu[runs / 2] * 1e3, runs, (double)snap_mem / 1048576);
    printf("  with a writer beside it: materialized in %.0f ms; the writer's %zu writes waited "
           "at most %.0f ms\n",
           tw * 1e3, w.n, w.max_s * 1e3);
    printf("{\"bench\":\"snapshot\",\"dataset\":\"agents-1M\",\"scale\":%g,\"relationships\":%zu,"
           "\"changes\":%zu,\"write_off_ms\":%.1f,\"write_on_ms\":%.1f,\"log_bytes\":%zu,"
           "\"materialize_ms\":%.1f,\"materialize_cpu_ms\":%.1f,\"snapshot_bytes\":%zu,"
           "\"writer_max_wait_ms\":%.1f}\n",
           scale, n_rels, changes, off * 1e3, on * 1e3, info.bytes, t[runs / 2] * 1e3,
           cpu[runs / 2] * 1e3, snap_mem, w.max_s * 1e3);
    kw_engine_free(e);
    free(b);
    free(t);
    free(cpu);
    return 0;
}
