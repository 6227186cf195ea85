/*
 * store/pg_read.c - PostgreSQL backend: reads outside a transaction (agents and keys by
 * id, name or hash, pages of an agent's keys, rows by ids), the revision, and the startup
 * load of every relationship with the revision its snapshot reflects.
 *
 * Each read is one statement on a pooled connection (kw__pg_query: retried once on a
 * connection found dead); the load is one REPEATABLE READ snapshot read through a cursor.
 * Text that cannot be stored (not UTF-8, a NUL) matches nothing: KW_ENOTFOUND or an
 * empty list, never a database error.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

#define KW_MODULE "store.pg"

#define PG_FETCH_ROWS "10000"

/* ---- rows ---- */

/* A copy in `a` (NUL-terminated), or NULL for SQL NULL; *rc = KW_ENOMEM on failure. */
static char *col_dup(const PGresult *r, int row, int col, kw_arena_t *a, int *rc)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    kw_str_t s = kw__pg_col_str(r, row, col);
    char *d = kw_arena_strndup(a, s.ptr, s.len);
    if (!d)
        *rc = KW_ENOMEM;
    return d;
}

static void col_id(const PGresult *r, int row, int col, char out[37])
{
    kw_str_t s = kw__pg_col_str(r, row, col);
    size_t n = s.len < KW__STORE_ID_MAX ? s.len : KW__STORE_ID_MAX;
    memcpy(out, s.ptr, n);
    out[n] = '\0';
}

/* The agent's AGENT_COLS from column `at` on. */
static int row_agent_at(const PGresult *r, int row, int at, kw_arena_t *a, kw_agent_t *out)
{
    int rc = KW_OK;
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    col_id(r, row, at, ag.id);
    ag.name = col_dup(r, row, at + 1, a, &rc);
    ag.description = col_dup(r, row, at + 2, a, &rc);
    ag.account_id = col_dup(r, row, at + 3, a, &rc);
    ag.created_at_us = kw__pg_col_i64(r, row, at + 4);
    if (rc == KW_OK)
        *out = ag;
    return rc;
}

static int row_agent(const PGresult *r, int row, kw_arena_t *a, kw_agent_t *out)
{
    return row_agent_at(r, row, 0, a, out);
}

static int row_key(const PGresult *r, int row, kw_arena_t *a, kw_apikey_t *out)
{
    int rc = KW_OK;
    kw_apikey_t k;
    memset(&k, 0, sizeof(k));
    col_id(r, row, 0, k.id);
    col_id(r, row, 1, k.agent_id);
    k.name = col_dup(r, row, 2, a, &rc);
    k.type = col_dup(r, row, 3, a, &rc);
    k.created_at_us = kw__pg_col_i64(r, row, 4);
    if (!PQgetisnull(r, row, 5) && PQgetlength(r, row, 5) > 0) {
        k.hash = (const uint8_t *)col_dup(r, row, 5, a, &rc);
        k.hash_len = (size_t)PQgetlength(r, row, 5);
    }
    if (!PQgetisnull(r, row, 6) && PQgetlength(r, row, 6) > 0) {
        k.secret_enc = (const uint8_t *)col_dup(r, row, 6, a, &rc);
        k.secret_enc_len = (size_t)PQgetlength(r, row, 6);
    }
    /* The lifecycle columns (NULL: 0, none). */
    k.expires_at_us = PQgetisnull(r, row, 7) ? 0 : kw__pg_col_i64(r, row, 7);
    k.last_used_at_us = PQgetisnull(r, row, 8) ? 0 : kw__pg_col_i64(r, row, 8);
    if (!PQgetisnull(r, row, 9) && PQgetlength(r, row, 9) > 0) {
        k.prev_hash = (const uint8_t *)col_dup(r, row, 9, a, &rc);
        k.prev_hash_len = (size_t)PQgetlength(r, row, 9);
    }
    k.prev_until_us = PQgetisnull(r, row, 10) ? 0 : kw__pg_col_i64(r, row, 10);
    if (rc == KW_OK)
        *out = k;
    return rc;
}

/* ---- relationships at startup, revision ---- */

int kw__pg_one_revision(kw__pg_conn_t *c, int st, kw_revision_t *rev)
{
    kw__pg_params_t p = {0};
    PGresult *r;
    int rc = kw__pg_run(c, st, &p, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) == 1)
        *rev = (kw_revision_t)kw__pg_col_i64(r, 0, 0);
    else
        rc = KW_EDB;
    PQclear(r);
    return rc;
}

int kw__pg_read_revision(kw__pg_conn_t *c, kw_revision_t *rev)
{
    return kw__pg_one_revision(c, KW__PG_ST_REVISION, rev);
}

int kw__pg_revision(kw_store_t *base, kw_revision_t *rev)
{
    kw__pg_params_t p = {0};
    PGresult *r;
    int rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_REVISION, &p, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) == 1)
        *rev = (kw_revision_t)kw__pg_col_i64(r, 0, 0);
    else
        rc = KW_EDB;
    PQclear(r);
    return rc;
}

int kw__pg_load_relationships(kw_store_t *base, kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    int rc = kw__pg_begin_on(s, KW__PG_SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return rc;
    kw_revision_t at = 0;
    rc = kw__pg_read_revision(c, &at);
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "DECLARE kw_load NO SCROLL CURSOR FOR SELECT " KW__PG_REL_XCOLS
                            " FROM relationships");
    while (rc == KW_OK) {
        PGresult *r = PQexecParams(c->conn, "FETCH FORWARD " PG_FETCH_ROWS " FROM kw_load", 0, NULL,
                                   NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = r ? kw__pg_result_error(c->conn, r, "load relationships") : KW_ENOMEM;
            PQclear(r);
            break;
        }
        int n = PQntuples(r);
        for (int i = 0; i < n && rc == KW_OK; i++) {
            kw_rel_t rel;
            kw__pg_row_rel(r, i, 0, &rel);
            kw__pg_row_rel_caveat(r, i, 6, &rel);
            rc = cb(&rel, ud);
        }
        PQclear(r);
        if (n == 0)
            break;
    }
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    kw__pg_pool_put(s, c); /* rolls back when still inside the transaction */
    if (rc == KW_OK)
        *rev = at;
    return rc;
}

int kw__pg_next_expiry(kw_store_t *base, int64_t *at_us)
{
    kw__pg_params_t p = {0};
    PGresult *r;
    int rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_NEXT_EXPIRY, &p, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) == 1)
        *at_us = kw__pg_col_i64(r, 0, 0);
    else
        rc = KW_ENOTFOUND;
    PQclear(r);
    return rc;
}

/* ---- reads ---- */

static int one_agent(kw__pg_store_t *s, int st, const kw__pg_params_t *p, kw_arena_t *a,
                     kw_agent_t *out)
{
    if (p->bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = kw__pg_query(s, st, p, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) == 0 ? KW_ENOTFOUND : row_agent(r, 0, a, out);
    PQclear(r);
    return rc;
}

static int one_key(kw__pg_store_t *s, int st, const kw__pg_params_t *p, kw_arena_t *a,
                   kw_apikey_t *out)
{
    if (p->bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = kw__pg_query(s, st, p, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) == 0 ? KW_ENOTFOUND : row_key(r, 0, a, out);
    PQclear(r);
    return rc;
}

int kw__pg_agent_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_agent_t *out)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, id);
    return one_agent(kw__pg_of(base), KW__PG_ST_AGENT_GET, &p, a, out);
}

int kw__pg_agent_get_by_name(kw_store_t *base, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                             kw_agent_t *out)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, account_id);
    kw__pg_pp_text(&p, name);
    return one_agent(kw__pg_of(base), KW__PG_ST_AGENT_BY_NAME, &p, a, out);
}

/* Bytewise order of two ids, for sorting and searching the ids PostgreSQL returned. */
static int cmp_text(const void *a, const void *b)
{
    const kw_str_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->ptr, y->ptr, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

int kw__pg_agents_present(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                          bool *present)
{
    if (n == 0)
        return KW_OK;
    kw__pg_params_t p = {0};
    int rc = kw__pg_pp_text_array(&p, a, ids, n);
    if (rc != KW_OK)
        return rc;
    PGresult *r;
    rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_AGENTS_PRESENT, &p, &r);
    if (rc != KW_OK)
        return rc;
    size_t rows = (size_t)PQntuples(r);
    kw_str_t *found = kw_arena_alloc(a, (rows ? rows : 1) * sizeof(*found));
    if (!found) {
        PQclear(r);
        return KW_ENOMEM;
    }
    for (size_t i = 0; i < rows; i++)
        found[i] = (kw_str_t){PQgetvalue(r, (int)i, 0), (size_t)PQgetlength(r, (int)i, 0)};
    qsort(found, rows, sizeof(*found), cmp_text);
    for (size_t i = 0; i < n; i++)
        present[i] = bsearch(&ids[i], found, rows, sizeof(*found), cmp_text) != NULL;
    PQclear(r);
    return KW_OK;
}

int kw__pg_agents_by_ids(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                         kw_agent_t **out, size_t *n_out)
{
    kw__pg_params_t p = {0};
    int rc = kw__pg_pp_text_array(&p, a, ids, n);
    if (rc != KW_OK)
        return rc;
    PGresult *r;
    rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_AGENTS_BY_IDS, &p, &r);
    if (rc != KW_OK)
        return rc;
    size_t rows = (size_t)PQntuples(r);
    kw_agent_t *v = rows ? kw_arena_alloc(a, rows * sizeof(*v)) : NULL;
    if (rows && !v)
        rc = KW_ENOMEM;
    for (size_t i = 0; i < rows && rc == KW_OK; i++)
        rc = row_agent(r, (int)i, a, &v[i]);
    PQclear(r);
    if (rc == KW_OK) {
        *out = v;
        *n_out = rows;
    }
    return rc;
}

int kw__pg_key_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_apikey_t *out)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, id);
    return one_key(kw__pg_of(base), KW__PG_ST_KEY_GET, &p, a, out);
}

int kw__pg_key_get_by_name(kw_store_t *base, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                           kw_arena_t *a, kw_apikey_t *out)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, agent_id);
    kw__pg_pp_text(&p, name);
    kw__pg_pp_text(&p, type);
    return one_key(kw__pg_of(base), KW__PG_ST_KEY_BY_NAME, &p, a, out);
}

int kw__pg_key_find_by_hash(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                            kw_apikey_t *out)
{
    if (len == 0)
        return KW_ENOTFOUND;
    kw__pg_params_t p = {0};
    kw__pg_pp_bytes(&p, hash, len);
    return one_key(kw__pg_of(base), KW__PG_ST_KEY_BY_HASH, &p, a, out);
}

static int many_keys(PGresult *r, kw_arena_t *a, kw_apikey_t **out, size_t *n_out)
{
    int rc = KW_OK;
    size_t rows = (size_t)PQntuples(r);
    kw_apikey_t *v = rows ? kw_arena_alloc(a, rows * sizeof(*v)) : NULL;
    if (rows && !v)
        rc = KW_ENOMEM;
    for (size_t i = 0; i < rows && rc == KW_OK; i++)
        rc = row_key(r, (int)i, a, &v[i]);
    if (rc == KW_OK) {
        *out = v;
        *n_out = rows;
    }
    return rc;
}

int kw__pg_keys_of_agent(kw_store_t *base, kw_str_t agent_id, int64_t after_created_us,
                         kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                         size_t *n_out)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, agent_id);
    /* An empty cursor id starts at the beginning whatever its timestamp. */
    kw__pg_pp_i64(&p, after_id.len ? after_created_us : INT64_MIN);
    kw__pg_pp_text(&p, after_id);
    kw__pg_pp_i64(&p, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    if (p.bad_text) {
        *out = NULL;
        *n_out = 0;
        return KW_OK;
    }
    PGresult *r;
    int rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_KEYS_OF_AGENT, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = many_keys(r, a, out, n_out);
    PQclear(r);
    return rc;
}

int kw__pg_keys_by_ids(kw_store_t *base, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                       kw_arena_t *a, kw_apikey_t **out, size_t *n_out)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_text(&p, agent_id);
    int rc = kw__pg_pp_text_array(&p, a, ids, n);
    if (rc != KW_OK)
        return rc;
    if (p.bad_text) {
        *out = NULL;
        *n_out = 0;
        return KW_OK;
    }
    PGresult *r;
    rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_KEYS_BY_IDS, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = many_keys(r, a, out, n_out);
    PQclear(r);
    return rc;
}

/* Last uses (kw_store_keys_touch): one UPDATE over two parallel text arrays. */
int kw__pg_keys_touch(kw_store_t *base, const kw_key_use_t *uses, size_t n)
{
    kw_arena_t *a = kw_arena_new(0);
    if (!a)
        return KW_ENOMEM;
    kw_str_t *ids = kw_arena_alloc(a, n * sizeof(*ids));
    kw_str_t *ts = kw_arena_alloc(a, n * sizeof(*ts));
    int rc = ids && ts ? KW_OK : KW_ENOMEM;
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        char *t = kw_arena_sprintf(a, "%lld", (long long)uses[i].at_us);
        if (!t)
            rc = KW_ENOMEM;
        ids[i] = kw_str_c(uses[i].id);
        ts[i] = t ? kw_str_c(t) : KW_STR("");
    }
    kw__pg_params_t p = {0};
    if (rc == KW_OK)
        rc = kw__pg_pp_text_array(&p, a, ids, n);
    if (rc == KW_OK)
        rc = kw__pg_pp_text_array(&p, a, ts, n);
    PGresult *r = NULL;
    if (rc == KW_OK)
        rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_KEYS_TOUCH, &p, &r);
    if (rc == KW_OK)
        PQclear(r);
    kw_arena_free(a);
    return rc;
}

/* kw_store_key_auth: one statement, KEY_COLS then AGENT_COLS from column 11. */
int kw__pg_key_auth(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                    kw_apikey_t *key, kw_agent_t *agent)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_bytes(&p, hash, len);
    PGresult *r;
    int rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_KEY_AUTH, &p, &r);
    if (rc != KW_OK)
        return rc;
    kw_apikey_t k;
    rc = PQntuples(r) == 0 ? KW_ENOTFOUND : row_key(r, 0, a, &k);
    if (rc == KW_OK)
        rc = row_agent_at(r, 0, 11, a, agent);
    if (rc == KW_OK)
        *key = k;
    PQclear(r);
    return rc;
}
