/*
 * store/sqlite_read.c - the SQLite backend's reads: the revision, the startup load of
 * every relationship, agents and keys by id, name or hash, and key pages.
 *
 * A read takes a pooled connection for one statement (or one read transaction: the
 * startup load) and gives it back; single-row reads all go through kw__sq_query_one.
 */
#include "sqlite_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define KW_MODULE "store"

/* ---- the revision and the startup load ---- */

/* The revision counter on c (meta 'revision'); KW_EDB if the row is missing. */
static int rev_read(kw__sq_conn_t *c, kw_revision_t *rev)
{
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(c, KW__SQ_ST_REV_GET, &st);
    if (rc != KW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        sqlite3_int64 v = sqlite3_column_int64(st, 0);
        *rev = v > 0 ? (kw_revision_t)v : 0;
    } else {
        rc = src == SQLITE_DONE ? KW_EDB : kw__sq_err(c, src, "read revision", NULL);
        if (src == SQLITE_DONE)
            kw_log(KW_LOG_ERROR, KW_MODULE, "meta row 'revision' is missing");
    }
    kw__sq_stmt_done(st);
    return rc;
}

int kw__sq_revision(kw_store_t *base, kw_revision_t *rev)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = rev_read(c, rev);
    kw__sq_conn_give(s, c);
    return rc;
}

/* Columns 6..8 of a KW__SQ_REL_XCOLS row: caveat name, context, expiry (NULL: none). */
void kw__sq_read_caveat(sqlite3_stmt *st, kw_rel_t *rel)
{
    rel->caveat = rel->caveat_ctx = KW_STR("");
    rel->expires_at = 0;
    if (sqlite3_column_type(st, 6) != SQLITE_NULL)
        rel->caveat = kw__sq_col_str(st, 6);
    if (sqlite3_column_type(st, 7) != SQLITE_NULL)
        rel->caveat_ctx = kw__sq_col_str(st, 7);
    if (sqlite3_column_type(st, 8) != SQLITE_NULL)
        rel->expires_at = sqlite3_column_int64(st, 8);
}

/* Streams the rows of statement `id` through cb; `caveats`: the statement answers
 * KW__SQ_REL_XCOLS, else the key columns only. */
static int load_rows(kw__sq_conn_t *c, int id, bool caveats, kw_rel_cb cb, void *ud)
{
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(c, id, &st);
    if (rc != KW_OK)
        return rc;
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        kw_rel_t rel = {
            .resource = {kw__sq_col_str(st, 0), kw__sq_col_str(st, 1)},
            .relation = kw__sq_col_str(st, 2),
            .subject = {kw__sq_col_str(st, 3), kw__sq_col_str(st, 4), kw__sq_col_str(st, 5)},
            .caveat = KW_STR(""),
            .caveat_ctx = KW_STR("")};
        if (caveats)
            kw__sq_read_caveat(st, &rel);
        rc = cb(&rel, ud);
        if (rc != 0)
            break;
    }
    if (rc == KW_OK && src != SQLITE_DONE)
        rc = kw__sq_err(c, src, "load relationships", NULL);
    kw__sq_stmt_done(st);
    return rc;
}

/* One read transaction, so the revision and the rows are the same snapshot. Two queries
 * (tag-kw-store-caveats): the rows with a caveat or an expiry, through their partial
 * indexes, with all their columns; then every other row, key columns only. The second is
 * nearly every row and costs what the load cost before caveats: returning three more
 * columns from every row made the whole start's load ~10-15% more instructions
 * (docs/BENCHMARKS.md). */
int kw__sq_load_relationships(kw_store_t *base, kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    kw_revision_t r = 0;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_exec_id(c, KW__SQ_ST_BEGIN_READ, "begin read", NULL);
    if (rc != KW_OK)
        goto out;
    rc = rev_read(c, &r);
    if (rc == KW_OK)
        rc = load_rows(c, KW__SQ_ST_REL_ALL_ATTRS, true, cb, ud);
    if (rc == KW_OK)
        rc = load_rows(c, KW__SQ_ST_REL_ALL_PLAIN, false, cb, ud);
    (void)kw__sq_exec_id(c, KW__SQ_ST_ROLLBACK, "end read", NULL);
    if (rc == KW_OK && rev)
        *rev = r;
out:
    kw__sq_conn_give(s, c);
    return rc;
}

static int read_i64(sqlite3_stmt *st, kw_arena_t *a, void *out)
{
    (void)a;
    *(int64_t *)out = sqlite3_column_int64(st, 0);
    return KW_OK;
}

int kw__sq_next_expiry(kw_store_t *base, int64_t *at_us)
{
    return kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_NEXT_EXPIRY, NULL, 0, read_i64, NULL,
                            at_us, "read the next expiry");
}

/* ---- rows ---- */

/* A NUL-terminated copy of text column i in `a` (NULL for SQL NULL when null_ok). */
static int col_dup(sqlite3_stmt *st, int i, kw_arena_t *a, bool null_ok, const char **out)
{
    if (null_ok && sqlite3_column_type(st, i) == SQLITE_NULL) {
        *out = NULL;
        return KW_OK;
    }
    kw_str_t s = kw__sq_col_str(st, i);
    char *d = kw_arena_strndup(a, s.ptr, s.len);
    if (!d)
        return KW_ENOMEM;
    *out = d;
    return KW_OK;
}

static int col_blob(sqlite3_stmt *st, int i, kw_arena_t *a, const uint8_t **out, size_t *len)
{
    const void *p = sqlite3_column_blob(st, i);
    int n = sqlite3_column_bytes(st, i);
    *out = NULL;
    *len = 0;
    if (!p || n <= 0)
        return KW_OK;
    uint8_t *d = kw_arena_alloc(a, (size_t)n);
    if (!d)
        return KW_ENOMEM;
    memcpy(d, p, (size_t)n);
    *out = d;
    *len = (size_t)n;
    return KW_OK;
}

static void col_id(sqlite3_stmt *st, int i, char dst[KW__STORE_ID_MAX + 1])
{
    kw_str_t s = kw__sq_col_str(st, i);
    size_t n = s.len > KW__STORE_ID_MAX ? KW__STORE_ID_MAX : s.len;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

/* The agent's AGENT_COLS from column `at` on. */
static int read_agent_at(sqlite3_stmt *st, int at, kw_arena_t *a, kw_agent_t *out)
{
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    col_id(st, at, ag.id);
    int rc = col_dup(st, at + 1, a, false, &ag.account_id);
    if (rc == KW_OK)
        rc = col_dup(st, at + 2, a, false, &ag.name);
    if (rc == KW_OK)
        rc = col_dup(st, at + 3, a, true, &ag.description);
    if (rc != KW_OK)
        return rc;
    ag.created_at_us = sqlite3_column_int64(st, at + 4);
    *out = ag;
    return KW_OK;
}

/* Row readers of kw__sq_query_one: `out` is a kw_agent_t / kw_apikey_t. */
static int read_agent(sqlite3_stmt *st, kw_arena_t *a, void *out)
{
    return read_agent_at(st, 0, a, out);
}

static int read_key(sqlite3_stmt *st, kw_arena_t *a, void *out)
{
    kw_apikey_t k;
    memset(&k, 0, sizeof(k));
    col_id(st, 0, k.id);
    col_id(st, 1, k.agent_id);
    int rc = col_dup(st, 2, a, false, &k.name);
    if (rc == KW_OK)
        rc = col_dup(st, 3, a, false, &k.type);
    if (rc == KW_OK)
        rc = col_blob(st, 5, a, &k.hash, &k.hash_len);
    if (rc == KW_OK)
        rc = col_blob(st, 6, a, &k.secret_enc, &k.secret_enc_len);
    if (rc == KW_OK)
        rc = col_blob(st, 9, a, &k.prev_hash, &k.prev_hash_len);
    if (rc != KW_OK)
        return rc;
    k.created_at_us = sqlite3_column_int64(st, 4);
    k.expires_at_us = sqlite3_column_int64(st, 7); /* NULL reads as 0: none */
    k.last_used_at_us = sqlite3_column_int64(st, 8);
    k.prev_until_us = sqlite3_column_int64(st, 10);
    *(kw_apikey_t *)out = k;
    return KW_OK;
}

/* ---- one row ---- */

static void bind_args(sqlite3_stmt *st, int first, const kw__sq_arg_t *args, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int at = first + (int)i;
        if (args[i].blob)
            sqlite3_bind_blob64(st, at, args[i].ptr, args[i].len, SQLITE_STATIC);
        else
            kw__sq_bind_str(st, at, (kw_str_t){args[i].ptr, args[i].len});
    }
}

/* Steps a bound statement that answers at most one row, reads the row into `out`, and
 * resets the statement. */
static int step_one(kw__sq_conn_t *c, sqlite3_stmt *st, kw__sq_row_fn read, kw_arena_t *a,
                    void *out, const char *what)
{
    int src = sqlite3_step(st);
    int rc = src == SQLITE_ROW    ? read(st, a, out)
             : src == SQLITE_DONE ? KW_ENOTFOUND
                                  : kw__sq_err(c, src, what, NULL);
    kw__sq_stmt_done(st);
    return rc;
}

int kw__sq_query_one(kw__sq_store_t *s, int id, const kw__sq_arg_t *args, size_t n_args,
                     kw__sq_row_fn read, kw_arena_t *a, void *out, const char *what)
{
    kw__sq_conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_stmt(c, id, &st);
    if (rc == KW_OK) {
        bind_args(st, 1, args, n_args);
        rc = step_one(c, st, read, a, out, what);
    }
    kw__sq_conn_give(s, c);
    return rc;
}

int kw__sq_agent_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_agent_t *out)
{
    const kw__sq_arg_t args[] = {KW__SQ_TEXT(id)};
    return kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_AGENT_GET, args, 1, read_agent, a,
                            out, "read agent");
}

int kw__sq_agent_get_by_name(kw_store_t *base, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                             kw_agent_t *out)
{
    const kw__sq_arg_t args[] = {KW__SQ_TEXT(account_id), KW__SQ_TEXT(name)};
    return kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_AGENT_BY_NAME, args, 2, read_agent, a,
                            out, "read agent");
}

int kw__sq_key_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_apikey_t *out)
{
    const kw__sq_arg_t args[] = {KW__SQ_TEXT(id)};
    return kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_KEY_GET, args, 1, read_key, a, out,
                            "read key");
}

int kw__sq_key_get_by_name(kw_store_t *base, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                           kw_arena_t *a, kw_apikey_t *out)
{
    const kw__sq_arg_t args[] = {KW__SQ_TEXT(agent_id), KW__SQ_TEXT(name), KW__SQ_TEXT(type)};
    return kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_KEY_BY_NAME, args, 3, read_key, a,
                            out, "read key");
}

int kw__sq_key_find_by_hash(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                            kw_apikey_t *out)
{
    const kw__sq_arg_t args[] = {{hash, len, true}};
    return kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_KEY_BY_HASH, args, 1, read_key, a,
                            out, "read key");
}

/* kw_store_key_auth: KEY_COLS then AGENT_COLS from column 11 (KEY_AGENT_COLS). */
typedef struct {
    kw_apikey_t *key;
    kw_agent_t *agent;
} key_agent_t;

static int read_key_agent(sqlite3_stmt *st, kw_arena_t *a, void *out)
{
    key_agent_t *ka = out;
    kw_apikey_t k;
    int rc = read_key(st, a, &k);
    if (rc == KW_OK)
        rc = read_agent_at(st, 11, a, ka->agent);
    if (rc == KW_OK)
        *ka->key = k;
    return rc;
}

int kw__sq_key_auth(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                    kw_apikey_t *key, kw_agent_t *agent)
{
    const kw__sq_arg_t args[] = {{hash, len, true}};
    key_agent_t ka = {key, agent};
    return kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_KEY_AUTH, args, 1, read_key_agent, a,
                            &ka, "authenticate key");
}

/* ---- rows by ids ---- */

static int cmp_created_id(int64_t ca, const char *ia, int64_t cb, const char *ib)
{
    if (ca != cb)
        return ca < cb ? -1 : 1;
    return strcmp(ia, ib);
}

static int cmp_agent(const void *x, const void *y)
{
    const kw_agent_t *a = x, *b = y;
    return cmp_created_id(a->created_at_us, a->id, b->created_at_us, b->id);
}

static int cmp_key(const void *x, const void *y)
{
    const kw_apikey_t *a = x, *b = y;
    return cmp_created_id(a->created_at_us, a->id, b->created_at_us, b->id);
}

/* Sorts by (created_at, id) and drops repeated ids (the caller may name one twice). */
static size_t sort_unique(void *rows, size_t n, size_t esz, int (*cmp)(const void *, const void *))
{
    if (n < 2)
        return n;
    qsort(rows, n, esz, cmp);
    unsigned char *p = rows;
    size_t w = 1;
    for (size_t i = 1; i < n; i++) {
        if (cmp(p + (w - 1) * esz, p + i * esz) == 0)
            continue;
        if (w != i)
            memcpy(p + w * esz, p + i * esz, esz);
        w++;
    }
    return w;
}

/* The rows (esz bytes each, from `a`) that statement `id` finds for each of ids[] bound as
 * ?1, with `rest` bound as ?2.., on one connection; absent and impossible ids are skipped;
 * sorted by (created_at, id) without repeats. */
static int rows_by_ids(kw__sq_store_t *s, int id, const kw_str_t *ids, size_t n,
                       const kw__sq_arg_t *rest, size_t n_rest, kw__sq_row_fn read, size_t esz,
                       int (*cmp)(const void *, const void *), kw_arena_t *a, void **out,
                       size_t *n_out)
{
    if (n > SIZE_MAX / esz)
        return KW_ENOMEM;
    unsigned char *rows = kw_arena_alloc(a, (n ? n : 1) * esz);
    if (!rows)
        return KW_ENOMEM;
    kw__sq_conn_t *c;
    sqlite3_stmt *st = NULL;
    size_t got = 0;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_stmt(c, id, &st);
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        if (ids[i].len == 0 || ids[i].len > KW__STORE_ID_MAX)
            continue;
        kw__sq_bind_str(st, 1, ids[i]);
        bind_args(st, 2, rest, n_rest);
        rc = step_one(c, st, read, a, rows + got * esz, "read rows by id");
        if (rc == KW_OK)
            got++;
        else if (rc == KW_ENOTFOUND)
            rc = KW_OK;
    }
    kw__sq_conn_give(s, c);
    if (rc != KW_OK)
        return rc;
    *n_out = sort_unique(rows, got, esz, cmp);
    *out = rows;
    return KW_OK;
}

static int read_nothing(sqlite3_stmt *st, kw_arena_t *a, void *out)
{
    (void)st;
    (void)a;
    (void)out;
    return KW_OK;
}

int kw__sq_agents_present(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                          bool *present)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_stmt(c, KW__SQ_ST_AGENT_EXISTS, &st);
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        present[i] = false;
        if (ids[i].len == 0 || ids[i].len > KW__STORE_ID_MAX)
            continue;
        kw__sq_bind_str(st, 1, ids[i]);
        rc = step_one(c, st, read_nothing, a, NULL, "read agent ids");
        if (rc == KW_OK)
            present[i] = true;
        else if (rc == KW_ENOTFOUND)
            rc = KW_OK;
    }
    kw__sq_conn_give(s, c);
    return rc;
}

int kw__sq_agents_by_ids(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                         kw_agent_t **out, size_t *n_out)
{
    void *rows = NULL;
    int rc = rows_by_ids((kw__sq_store_t *)base, KW__SQ_ST_AGENT_GET, ids, n, NULL, 0, read_agent,
                         sizeof(kw_agent_t), cmp_agent, a, &rows, n_out);
    if (rc == KW_OK)
        *out = rows;
    return rc;
}

int kw__sq_keys_by_ids(kw_store_t *base, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                       kw_arena_t *a, kw_apikey_t **out, size_t *n_out)
{
    const kw__sq_arg_t rest[] = {KW__SQ_TEXT(agent_id)};
    void *rows = NULL;
    int rc = rows_by_ids((kw__sq_store_t *)base, KW__SQ_ST_KEY_GET_OF_AGENT, ids, n, rest, 1,
                         read_key, sizeof(kw_apikey_t), cmp_key, a, &rows, n_out);
    if (rc == KW_OK)
        *out = rows;
    return rc;
}

/* ---- key pages ---- */

/* Keyset pagination on the (agent_id, created_at_us, id) index: no OFFSET, so a page
 * costs the same wherever it starts. */
int kw__sq_keys_of_agent(kw_store_t *base, kw_str_t agent_id, int64_t after_created_us,
                         kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                         size_t *n_out)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    sqlite3_stmt *st = NULL;
    kw_apikey_t *rows = NULL;
    size_t n = 0, cap = 0;
    sqlite3_int64 lim = limit > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)limit;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    bool first = after_id.len == 0;
    rc = kw__sq_stmt(c, first ? KW__SQ_ST_KEYS_FIRST : KW__SQ_ST_KEYS_AFTER, &st);
    if (rc == KW_OK) {
        kw__sq_bind_str(st, 1, agent_id);
        if (first) {
            sqlite3_bind_int64(st, 2, lim);
        } else {
            sqlite3_bind_int64(st, 2, after_created_us);
            kw__sq_bind_str(st, 3, after_id);
            sqlite3_bind_int64(st, 4, lim);
        }
        int src;
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
            void *p = rows;
            rc = kw_grow(&p, &cap, n + 1, sizeof(*rows));
            rows = p;
            if (rc == KW_OK)
                rc = read_key(st, a, &rows[n]);
            if (rc != KW_OK)
                break;
            n++;
        }
        if (rc == KW_OK && src != SQLITE_DONE)
            rc = kw__sq_err(c, src, "list keys", NULL);
        kw__sq_stmt_done(st);
    }
    kw__sq_conn_give(s, c);
    kw_apikey_t *res = NULL;
    if (rc == KW_OK && n > 0) {
        res = kw_arena_alloc(a, n * sizeof(*res));
        if (!res)
            rc = KW_ENOMEM;
        else
            memcpy(res, rows, n * sizeof(*res));
    }
    kw_free(rows);
    if (rc != KW_OK)
        return rc;
    *out = res;
    *n_out = n;
    return KW_OK;
}
