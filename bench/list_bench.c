/*
 * bench/list_bench.c - listing an agent's keys at scale (issue 3, item 5): the walk vs
 * the lookup, on a real SQLite store and the real engine.
 *
 * Dataset (built through the store API in one transaction, then loaded into the engine
 * through kw_store_load_relationships + kw_sync_apply, 1,000 at a time: the same graph
 * `keyward serve` loads at start with kw_sync_load):
 *   account A: admin "adm", members "uall" and "u1pct";
 *   agent X with --keys keys (default 100,000), agent Y with --other keys (default
 *   100,000; the same tenant, so a lookup also meets keys of another agent);
 *   both agents: owner uall, viewer u1pct; every key: parent_agent, account, owner uall;
 *   every 100th key of each agent: viewer u1pct.
 *   => uall reads every key of X (via parent_agent->update), u1pct reads 1% of them.
 * Strategies, page 1 and a deep page (default 20) of --limit 50:
 *   walk    the route's loop: kw_store_keys_of_agent in batches of 256 + kw_engine_check_bulk
 *           on agent_api_key#read, skip then fill (pagination after the filter);
 *   lookup  kw_engine_lookup_resources(agent_api_key, read, subject), keep the ids whose
 *           parent_agent is X (kw_engine_check_bulk on the relation), kw_store_keys_by_ids
 *           (rows in (created_at, id) order), then the page;
 *   lookup_sql  the same without the engine filter: every looked-up id goes to
 *           kw_store_keys_by_ids, which intersects with the agent in SQL.
 * Every strategy's page is compared with the walk's; a difference aborts.
 *
 * Usage: list_bench [--keys N] [--other N] [--limit N] [--deep PAGE] [--runs N] [DB_PATH]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "api/api.h"
#include "authz/authz.h"
#include "store/store.h"

#define KEY_BATCH 256 /* the route's batch */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void check(int rc, const char *what)
{
    if (rc != KW_OK) {
        fprintf(stderr, "list_bench: %s: %s\n", what, kw_strerror(rc));
        exit(1);
    }
}

/* ---- dataset ---- */

static kw_update_t touch(const char *rt, const char *rid, const char *rel, const char *st,
                         const char *sid)
{
    return (kw_update_t){
        KW_OP_TOUCH,
        {{kw_str_c(rt), kw_str_c(rid)}, kw_str_c(rel), {kw_str_c(st), kw_str_c(sid), KW_STR_NULL}}};
}

static void add_agent(kw_store_tx_t *tx, const char *acct, const char *name, long n_keys,
                      char agent_id[37])
{
    kw_agent_t ag = {0};
    ag.created_at_us = kw_api_now_us();
    kw_api_uuid_v7(ag.created_at_us, ag.id);
    ag.name = name;
    ag.account_id = acct;
    check(kw_store_tx_agent_insert(tx, &ag), "agent insert");
    memcpy(agent_id, ag.id, 37);
    kw_update_t ups[] = {
        touch("agent", ag.id, "account", "account", acct),
        touch("agent", ag.id, "owner", "user", "uall"),
        touch("agent", ag.id, "self", "agent", ag.id),
        touch("agent", ag.id, "viewer", "user", "u1pct"),
    };
    check(kw_store_tx_rel_write(tx, ups, KW_ARRAY_LEN(ups), NULL), "agent rels");
    for (long i = 0; i < n_keys; i++) {
        kw_apikey_t k = {0};
        char name_buf[32];
        uint8_t hash[32];
        k.created_at_us = kw_api_now_us();
        kw_api_uuid_v7(k.created_at_us, k.id);
        memcpy(k.agent_id, ag.id, 37);
        snprintf(name_buf, sizeof(name_buf), "key-%06ld", i);
        k.name = name_buf;
        k.type = "external";
        randombytes_buf(hash, sizeof(hash));
        k.hash = hash;
        k.hash_len = sizeof(hash);
        check(kw_store_tx_key_insert(tx, &k), "key insert");
        kw_update_t kups[] = {
            touch("agent_api_key", k.id, "parent_agent", "agent", ag.id),
            touch("agent_api_key", k.id, "account", "account", acct),
            touch("agent_api_key", k.id, "owner", "user", "uall"),
            touch("agent_api_key", k.id, "viewer", "user", "u1pct"),
        };
        check(kw_store_tx_rel_write(tx, kups, i % 100 == 0 ? 4 : 3, NULL), "key rels");
    }
}

/* Rebuilding the graph: copy each streamed relationship into a batch, write 1000 at a
 * time with kw_sync_apply (serve loads the same graph in one swap, kw_sync_load). */
typedef struct {
    kw_engine_t *e;
    kw_arena_t *a;
    kw_update_t ups[1000];
    size_t n;
} loader_t;

static void flush(loader_t *l)
{
    if (l->n)
        check(kw_sync_apply(l->e, l->ups, l->n, 0, NULL), "apply");
    l->n = 0;
    kw_arena_reset(l->a);
}

static int load_cb(const kw_rel_t *rel, void *ud)
{
    loader_t *l = ud;
    kw_rel_t r;
    check(kw_rel_copy(l->a, rel, &r), "load");
    l->ups[l->n++] = (kw_update_t){KW_OP_TOUCH, r};
    if (l->n == KW_ARRAY_LEN(l->ups))
        flush(l);
    return 0;
}

/* ---- the strategies: each appends the page's ids to `ids` (limit x 37 bytes) ---- */

typedef struct {
    kw_engine_t *e;
    kw_store_t *s;
    kw_str_t agent;
    kw_subject_t subject;
    size_t limit, page;
    size_t scanned; /* out: rows read (walk) or ids looked up (lookup) */
} list_q_t;

static size_t walk(list_q_t *q, char (*ids)[37])
{
    kw_arena_t *scratch = kw_arena_new(0);
    kw_check_item_t *items = kw_calloc(KEY_BATCH, sizeof(*items));
    if (!scratch || !items)
        check(KW_ENOMEM, "walk");
    size_t skip = (q->page - 1) * q->limit, out = 0;
    int64_t after_us = 0;
    char after_id[37] = "";
    kw_revision_t rev = 0;
    q->scanned = 0;
    while (out < q->limit) {
        kw_apikey_t *rows = NULL;
        size_t n = 0;
        kw_arena_reset(scratch);
        check(kw_store_keys_of_agent(q->s, q->agent, after_us, kw_str_c(after_id), KEY_BATCH,
                                     scratch, &rows, &n),
              "keys_of_agent");
        if (n == 0)
            break;
        q->scanned += n;
        for (size_t i = 0; i < n; i++)
            items[i] = (kw_check_item_t){{KW_STR("agent_api_key"), kw_str_c(rows[i].id)},
                                         KW_STR("read"),
                                         q->subject,
                                         KW_CHECK_NO,
                                         KW_OK,
                                         {0}};
        check(kw_engine_check_bulk(q->e, items, n, &rev), "check_bulk");
        for (size_t i = 0; i < n && out < q->limit; i++) {
            if (items[i].rc != KW_OK || items[i].result != KW_CHECK_YES)
                continue;
            if (skip > 0) {
                skip--;
                continue;
            }
            memcpy(ids[out++], rows[i].id, 37);
        }
        after_us = rows[n - 1].created_at_us;
        memcpy(after_id, rows[n - 1].id, 37);
        if (n < KEY_BATCH)
            break;
    }
    kw_arena_free(scratch);
    kw_free(items);
    return out;
}

typedef struct {
    kw_arena_t *a;
    kw_str_t *ids;
    size_t n, cap;
} idvec_t;

static int collect(kw_str_t id, void *ud)
{
    idvec_t *v = ud;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->ids = realloc(v->ids, v->cap * sizeof(*v->ids));
        if (!v->ids)
            return KW_ENOMEM;
    }
    char *c = kw_arena_strndup(v->a, id.ptr, id.len);
    if (!c)
        return KW_ENOMEM;
    v->ids[v->n++] = (kw_str_t){c, id.len};
    return 0;
}

static size_t lookup(list_q_t *q, char (*ids)[37], bool engine_filter)
{
    idvec_t v = {kw_arena_new(0), NULL, 0, 0};
    kw_revision_t rev = 0;
    if (!v.a)
        check(KW_ENOMEM, "lookup");
    check(kw_engine_lookup_resources(q->e, KW_STR("agent_api_key"), KW_STR("read"), q->subject,
                                     collect, &v, &rev, NULL),
          "lookup_resources");
    q->scanned = v.n;
    size_t keep = v.n;
    if (engine_filter && v.n) {
        kw_check_item_t *items = kw_calloc(v.n, sizeof(*items));
        if (!items)
            check(KW_ENOMEM, "lookup");
        kw_subject_t parent = {KW_STR("agent"), q->agent, KW_STR_NULL};
        for (size_t i = 0; i < v.n; i++)
            items[i] = (kw_check_item_t){{KW_STR("agent_api_key"), v.ids[i]},
                                         KW_STR("parent_agent"),
                                         parent,
                                         KW_CHECK_NO,
                                         KW_OK,
                                         {0}};
        check(kw_engine_check_bulk(q->e, items, v.n, &rev), "check_bulk parent");
        keep = 0;
        for (size_t i = 0; i < v.n; i++)
            if (items[i].rc == KW_OK && items[i].result == KW_CHECK_YES)
                v.ids[keep++] = v.ids[i];
        kw_free(items);
    }
    kw_apikey_t *rows = NULL;
    size_t n = 0, out = 0;
    check(kw_store_keys_by_ids(q->s, q->agent, v.ids, keep, v.a, &rows, &n), "keys_by_ids");
    for (size_t i = (q->page - 1) * q->limit; i < n && out < q->limit; i++)
        memcpy(ids[out++], rows[i].id, 37);
    free(v.ids);
    kw_arena_free(v.a);
    return out;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long n_keys = 100000, n_other = 100000, limit = 50, deep = 20, runs = 7;
    const char *path = "/tmp/kw_list_bench.db";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--keys") == 0)
            n_keys = atol(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--other") == 0)
            n_other = atol(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--limit") == 0)
            limit = atol(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--deep") == 0)
            deep = atol(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--runs") == 0)
            runs = atol(argv[++i]);
        else
            path = argv[i];
    }
    if (n_keys < 1 || n_other < 0 || limit < 1 || limit > 1000 || deep < 2 || runs < 1)
        return 2;
    if (sodium_init() < 0)
        return 1;
    char url[4200], side[4300];
    snprintf(url, sizeof(url), "sqlite:%s", path);
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);

    double t0 = now_us();
    kw_store_t *s = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    check(kw_store_open(url, &s, &d), "store open");
    kw_store_tx_t *tx = NULL;
    check(kw_store_tx_begin(s, &tx, &d), "tx begin");
    char acct[37], ax[37], ay[37];
    kw_api_uuid_v7(kw_api_now_us(), acct);
    kw_update_t aups[] = {
        touch("account", acct, "admin", "user", "adm"),
        touch("account", acct, "member", "user", "uall"),
        touch("account", acct, "member", "user", "u1pct"),
    };
    check(kw_store_tx_rel_write(tx, aups, 3, NULL), "account rels");
    add_agent(tx, acct, "X", n_keys, ax);
    if (n_other > 0)
        add_agent(tx, acct, "Y", n_other, ay);
    kw_revision_t rev = 0;
    check(kw_store_tx_commit(tx, &rev, &d), "commit");
    double t_store = now_us() - t0;

    kw_engine_t *e = NULL;
    check(kw_engine_new(&e), "engine");
    check(kw_engine_set_schema(e, kw_str_c(kw_api_default_schema), NULL, &d), "schema");
    loader_t *l = calloc(1, sizeof(*l));
    if (!l)
        return 1;
    l->e = e;
    l->a = kw_arena_new(0);
    kw_revision_t lrev = 0;
    check(kw_store_load_relationships(s, load_cb, l, &lrev), "load");
    flush(l);
    kw_arena_free(l->a);
    free(l);
    printf("dataset: agent X %ld keys, agent Y %ld keys, %zu relationships, store %.1f s, "
           "total %.1f s\n",
           n_keys, n_other, kw_engine_count(e), t_store / 1e6, (now_us() - t0) / 1e6);

    /* ---- measure ---- */
    static const char *const callers[] = {"u1pct", "uall"};
    size_t pages[2] = {1, (size_t)deep};
    const char *names[3] = {"walk", "lookup", "lookup_sql"};
    char(*ref)[37] = calloc((size_t)limit, 37), (*got)[37] = calloc((size_t)limit, 37);
    double *t = calloc((size_t)runs, sizeof(double));
    if (!ref || !got || !t)
        return 1;
    printf("| caller | page | strategy | median | min | max | page size | scanned |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (size_t ci = 0; ci < 2; ci++) {
        for (size_t pi = 0; pi < 2; pi++) {
            list_q_t q = {e,
                          s,
                          kw_str_c(ax),
                          {KW_STR("user"), kw_str_c(callers[ci]), KW_STR_NULL},
                          (size_t)limit,
                          pages[pi],
                          0};
            size_t n_ref = walk(&q, ref);
            for (int st = 0; st < 3; st++) {
                size_t n = 0;
                for (long r = 0; r < runs; r++) {
                    double a0 = now_us();
                    n = st == 0 ? walk(&q, got) : lookup(&q, got, st == 1);
                    t[r] = now_us() - a0;
                    if (n != n_ref || memcmp(got, ref, n * 37) != 0) {
                        fprintf(stderr, "list_bench: %s disagrees with walk (%s page %zu)\n",
                                names[st], callers[ci], pages[pi]);
                        return 1;
                    }
                }
                qsort(t, (size_t)runs, sizeof(double), cmp_d);
                printf("| %s | %zu | %s | %.2f ms | %.2f | %.2f | %zu | %zu |\n", callers[ci],
                       pages[pi], names[st], t[runs / 2] / 1e3, t[0] / 1e3, t[runs - 1] / 1e3, n,
                       q.scanned);
                fflush(stdout);
            }
            if (pi == 0) { /* the engine's part of the lookup alone */
                for (long r = 0; r < runs; r++) {
                    idvec_t v = {kw_arena_new(0), NULL, 0, 0};
                    kw_revision_t lr = 0;
                    double a0 = now_us();
                    check(kw_engine_lookup_resources(e, KW_STR("agent_api_key"), KW_STR("read"),
                                                     q.subject, collect, &v, &lr, NULL),
                          "lookup_resources");
                    t[r] = now_us() - a0;
                    q.scanned = v.n;
                    free(v.ids);
                    kw_arena_free(v.a);
                }
                qsort(t, (size_t)runs, sizeof(double), cmp_d);
                printf("| %s | - | LookupResources alone | %.2f ms | %.2f | %.2f | - | %zu |\n",
                       callers[ci], t[runs / 2] / 1e3, t[0] / 1e3, t[runs - 1] / 1e3, q.scanned);
            }
        }
    }
    free(ref);
    free(got);
    free(t);
    kw_engine_free(e);
    kw_store_close(s);
    return 0;
}
