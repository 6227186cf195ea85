/*
 * bench/svc_pg_load.c - copies the agents-1M SQLite benchmark database (bench/svc_dataset.c)
 * into an empty PostgreSQL database, for the service benchmark on PostgreSQL
 * (bench/svc_bench.sh with BACKEND=postgres).
 *
 * The copy holds the same rows, relationships, secrets (meta jwt_secret / master_key) and
 * revision as the SQLite file, so the side files svc_dataset wrote (sampled agents and keys)
 * and the tokens minted for them serve both backends: the two benchmarks read the same data.
 *
 * Method: kw_store_open on the URL runs keyward's real PostgreSQL migrations; then one libpq
 * connection refuses a database that already holds agents, and in ONE transaction streams
 * agents, api_keys and relationships with COPY ... FROM STDIN (text format), upserts the meta
 * rows, sets the revision row to the SQLite file's revision, commits, and ANALYZEs. The
 * changelog stays empty: an instance starting on the copy loads every relationship and
 * follows the changelog from that revision, exactly as after a restart.
 *
 * Usage: svc_pg_load SQLITE_PATH POSTGRES_URL
 */
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store.h"

#define COPY_CHUNK (1 << 20) /* bytes buffered per PQputCopyData */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A growable byte buffer for one COPY chunk; failures to grow end the program. */
typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_need(buf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 2 * COPY_CHUNK;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "svc_pg_load: out of memory\n");
        exit(1);
    }
    b->p = p;
    b->cap = cap;
}

static void buf_putc(buf_t *b, char c)
{
    buf_need(b, 1);
    b->p[b->len++] = c;
}

/* One text field of COPY's text format: backslash, tab, newline and CR escaped. */
static void put_text(buf_t *b, const unsigned char *s, int n)
{
    buf_need(b, 2 * (size_t)n);
    for (int i = 0; i < n; i++) {
        char c = (char)s[i];
        switch (c) {
        case '\\':
            b->p[b->len++] = '\\';
            b->p[b->len++] = '\\';
            break;
        case '\t':
            b->p[b->len++] = '\\';
            b->p[b->len++] = 't';
            break;
        case '\n':
            b->p[b->len++] = '\\';
            b->p[b->len++] = 'n';
            break;
        case '\r':
            b->p[b->len++] = '\\';
            b->p[b->len++] = 'r';
            break;
        default:
            b->p[b->len++] = c;
        }
    }
}

/* A BYTEA field: the hex input form \x..., its backslash escaped for COPY (\\x...). */
static void put_bytea(buf_t *b, const unsigned char *s, int n)
{
    static const char hex[] = "0123456789abcdef";
    buf_need(b, 3 + 2 * (size_t)n);
    b->p[b->len++] = '\\';
    b->p[b->len++] = '\\';
    b->p[b->len++] = 'x';
    for (int i = 0; i < n; i++) {
        b->p[b->len++] = hex[s[i] >> 4];
        b->p[b->len++] = hex[s[i] & 15];
    }
}

static void die_pg(PGconn *pg, const char *what)
{
    fprintf(stderr, "svc_pg_load: %s: %s", what, PQerrorMessage(pg));
    exit(1);
}

static void exec_pg(PGconn *pg, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != want) {
        fprintf(stderr, "svc_pg_load: %s: %s", sql, PQresultErrorMessage(r));
        exit(1);
    }
    PQclear(r);
}

static void flush_copy(PGconn *pg, buf_t *b)
{
    if (b->len && PQputCopyData(pg, b->p, (int)b->len) != 1)
        die_pg(pg, "COPY data");
    b->len = 0;
}

/* Streams every row of `select` (SQLite) into `copy` (PostgreSQL COPY ... FROM STDIN).
 * kinds: one letter per column, 't' text (NULL allowed), 'i' integer, 'b' blob as BYTEA. */
static long copy_table(sqlite3 *db, PGconn *pg, const char *select, const char *copy,
                       const char *kinds)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, select, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "svc_pg_load: %s: %s\n", select, sqlite3_errmsg(db));
        exit(1);
    }
    exec_pg(pg, copy, PGRES_COPY_IN);
    buf_t b = {0};
    long rows = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; kinds[c]; c++) {
            if (c)
                buf_putc(&b, '\t');
            if (sqlite3_column_type(st, c) == SQLITE_NULL) {
                buf_putc(&b, '\\');
                buf_putc(&b, 'N');
                continue;
            }
            if (kinds[c] == 'i') {
                char num[32];
                int n = snprintf(num, sizeof(num), "%lld", (long long)sqlite3_column_int64(st, c));
                put_text(&b, (const unsigned char *)num, n);
            } else if (kinds[c] == 'b') {
                const unsigned char *p = sqlite3_column_blob(st, c);
                put_bytea(&b, p, sqlite3_column_bytes(st, c));
            } else {
                const unsigned char *p = sqlite3_column_text(st, c);
                put_text(&b, p, sqlite3_column_bytes(st, c));
            }
        }
        buf_putc(&b, '\n');
        rows++;
        if (b.len >= COPY_CHUNK)
            flush_copy(pg, &b);
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "svc_pg_load: reading %s: %s\n", select, sqlite3_errmsg(db));
        exit(1);
    }
    flush_copy(pg, &b);
    free(b.p);
    sqlite3_finalize(st);
    if (PQputCopyEnd(pg, NULL) != 1)
        die_pg(pg, "COPY end");
    PGresult *r = PQgetResult(pg);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "svc_pg_load: %s: %s", copy, PQresultErrorMessage(r));
        exit(1);
    }
    PQclear(r);
    while ((r = PQgetResult(pg)) != NULL)
        PQclear(r);
    return rows;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: svc_pg_load SQLITE_PATH POSTGRES_URL\n");
        return 2;
    }
    const char *path = argv[1], *url = argv[2];
    double t0 = now_s();

    /* 1. keyward's own migrations on the target. */
    kw_store_t *store = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_store_open(url, &store, &d) != KW_OK) {
        fprintf(stderr, "svc_pg_load: open %s: %s\n", url, d.msg);
        return 1;
    }
    kw_store_close(store);

    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "svc_pg_load: %s: %s\n", path, sqlite3_errmsg(db));
        return 1;
    }
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK)
        die_pg(pg, "connect");

    /* 2. Refuse a database that holds data: this tool copies into an empty one. */
    PGresult *r = PQexec(pg, "SELECT (SELECT count(*) FROM agents) + (SELECT count(*) FROM "
                             "relationships) + (SELECT value FROM revision)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        die_pg(pg, "count");
    if (strcmp(PQgetvalue(r, 0, 0), "0") != 0) {
        fprintf(stderr, "svc_pg_load: the target database is not empty; use a fresh one\n");
        return 1;
    }
    PQclear(r);

    /* 3. One transaction: a failure leaves the target empty. */
    exec_pg(pg, "BEGIN", PGRES_COMMAND_OK);
    exec_pg(pg, "SET LOCAL synchronous_commit = off", PGRES_COMMAND_OK);
    long agents =
        copy_table(db, pg, "SELECT id, account_id, name, description, created_at_us FROM agents",
                   "COPY agents (id, account_id, name, description, created_at_us) "
                   "FROM STDIN",
                   "tttti");
    long keys = copy_table(db, pg,
                           "SELECT id, agent_id, name, type, created_at_us, hash, secret_enc "
                           "FROM api_keys",
                           "COPY api_keys (id, agent_id, name, type, created_at_us, hash, "
                           "secret_enc) FROM STDIN",
                           "ttttibb");
    long rels = copy_table(db, pg,
                           "SELECT resource_type, resource_id, relation, subject_type, "
                           "subject_id, subject_relation FROM relationships",
                           "COPY relationships (resource_type, resource_id, relation, "
                           "subject_type, subject_id, subject_relation) FROM STDIN",
                           "tttttt");
    /* meta: every row but SQLite's revision counter, replacing what the open stored */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT key, value FROM meta WHERE key <> 'revision'", -1, &st,
                           NULL) != SQLITE_OK) {
        fprintf(stderr, "svc_pg_load: meta: %s\n", sqlite3_errmsg(db));
        return 1;
    }
    long metas = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *vals[2] = {(const char *)sqlite3_column_text(st, 0),
                               (const char *)sqlite3_column_blob(st, 1)};
        int lens[2] = {sqlite3_column_bytes(st, 0), sqlite3_column_bytes(st, 1)};
        int fmts[2] = {0, 1};
        if (!vals[1])
            vals[1] = "";
        r = PQexecParams(pg,
                         "INSERT INTO meta (key, value) VALUES ($1, $2) "
                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                         2, NULL, vals, lens, fmts, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die_pg(pg, "meta");
        PQclear(r);
        metas++;
    }
    sqlite3_finalize(st);
    long long revision = -1;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'revision'", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        revision = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (revision < 0) {
        fprintf(stderr, "svc_pg_load: %s has no revision\n", path);
        return 1;
    }
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE revision SET value = %lld", revision);
    exec_pg(pg, sql, PGRES_COMMAND_OK);
    exec_pg(pg, "COMMIT", PGRES_COMMAND_OK);
    double t_copy = now_s() - t0;
    exec_pg(pg, "ANALYZE", PGRES_COMMAND_OK);
    exec_pg(pg, "CHECKPOINT", PGRES_COMMAND_OK);
    PQfinish(pg);
    sqlite3_close(db);

    /* 4. Verify through the store. */
    store = NULL;
    if (kw_store_open(url, &store, &d) != KW_OK) {
        fprintf(stderr, "svc_pg_load: reopen: %s\n", d.msg);
        return 1;
    }
    kw_revision_t rev = 0;
    if (kw_store_revision(store, &rev) != KW_OK || (long long)rev != revision) {
        fprintf(stderr, "svc_pg_load: revision %llu, want %lld\n", (unsigned long long)rev,
                revision);
        return 1;
    }
    kw_store_close(store);
    printf("{\"bench\":\"svc_pg_load\",\"agents\":%ld,\"keys\":%ld,\"relationships\":%ld,"
           "\"meta\":%ld,\"revision\":%lld,\"copy_s\":%.1f,\"total_s\":%.1f}\n",
           agents, keys, rels, metas, revision, t_copy, now_s() - t0);
    return 0;
}
