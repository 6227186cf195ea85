/* tests/unit/sync/test_inst.c - see test_inst.h. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <stdlib.h>

#include "test_inst.h"

const char kw_ti_schema[] = "definition user {}\n"
                            "definition account {\n"
                            "    relation member: user\n"
                            "}\n";

int kw_ti_sync(kw_ti_t *in)
{
    kw_sync_config_t cfg;
    kw_sync_config_default(&cfg);
    return kw_sync_new(in->engine, in->store, &cfg, &in->sync) == KW_OK;
}

static int open_url(kw_ti_t *in, const char *url, const char *schema, const kw_sync_config_t *cfg)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_store_open(url, &in->store, &d) != KW_OK) {
        fprintf(stderr, "  open %s: %s\n", url, d.msg);
        return 0;
    }
    kw_sync_config_t dflt;
    kw_sync_config_default(&dflt);
    if (kw_engine_new(&in->engine) != KW_OK ||
        kw_sync_new(in->engine, in->store, cfg ? cfg : &dflt, &in->sync) != KW_OK ||
        kw_sync_load(in->sync, kw_str_c(schema), &d) != KW_OK) {
        fprintf(stderr, "  load %s: %s\n", url, d.msg);
        return 0;
    }
    return kw_sync_start(in->sync, &d) == KW_OK;
}

int kw_ti_open(kw_ti_t *in, const char *url)
{
    return kw_ti_open_with(in, url, kw_ti_schema, NULL);
}

int kw_ti_open_with(kw_ti_t *in, const char *url, const char *schema, const kw_sync_config_t *cfg)
{
    memset(in, 0, sizeof(*in));
    return open_url(in, url, schema, cfg);
}

int kw_ti_sqlite(kw_ti_t *in, const char *tag)
{
    return kw_ti_sqlite_with(in, tag, kw_ti_schema, NULL);
}

int kw_ti_sqlite_with(kw_ti_t *in, const char *tag, const char *schema, const kw_sync_config_t *cfg)
{
    memset(in, 0, sizeof(*in));
    snprintf(in->path, sizeof(in->path), "/tmp/kw_%s_%ld.db", tag, (long)getpid());
    unlink(in->path);
    char url[160];
    snprintf(url, sizeof(url), "sqlite:%s", in->path);
    return open_url(in, url, schema, cfg);
}

void kw_ti_close(kw_ti_t *in)
{
    kw_sync_free(in->sync);
    if (in->engine)
        kw_engine_free(in->engine);
    if (in->store)
        kw_store_close(in->store);
    if (in->path[0])
        unlink(in->path);
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int admin_exec(const char *sql)
{
    const char *u = getenv("KEYWARD_PG_URL");
    if (!u || !*u)
        return 0;
    PGconn *c = PQconnectdb(u);
    PQsetNoticeProcessor(c, quiet, NULL);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "  %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

int kw_ti_pg_db(const char *tag, char *url, size_t cap)
{
    const char *u = getenv("KEYWARD_PG_URL");
    if (!u || !*u)
        return 0;
    kw_ti_pg_drop(tag);
    char sql[160];
    snprintf(sql, sizeof(sql), "CREATE DATABASE kw_%s_%ld", tag, (long)getpid());
    if (!admin_exec(sql))
        return 0;
    const char *scheme = strstr(u, "://");
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    const char *query = strchr(u, '?');
    size_t host_end = slash ? (size_t)(slash - u) : query ? (size_t)(query - u) : strlen(u);
    snprintf(url, cap, "%.*s/kw_%s_%ld%s", (int)host_end, u, tag, (long)getpid(),
             query ? query : "");
    return 1;
}

void kw_ti_pg_drop(const char *tag)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS kw_%s_%ld WITH (FORCE)", tag,
             (long)getpid());
    (void)admin_exec(sql);
}
