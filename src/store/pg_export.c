/*
 * store/pg_export.c - the PostgreSQL side of kw_store_export_relationships: every stored
 * relationship after a key, in primary-key order (bytewise: the columns are COLLATE "C"),
 * from one REPEATABLE READ snapshot, fetched through a server-side cursor in batches so
 * memory stays constant however many rows there are.
 */
#include <stdio.h>
#include <string.h>

#include "pg_int.h"

#define KW_MODULE "store.pg"

#define EXPORT_FETCH "FETCH FORWARD 2000 FROM kw_export"

int kw__pg_export_relationships(kw_store_t *base, const kw_str_t *after, kw_str_t resource_type,
                                kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    int rc = kw__pg_begin_on(s, KW__PG_SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return rc;
    kw_revision_t at = 0;
    rc = kw__pg_read_revision(c, &at);
    /* $1..$6: the key to start after (all '' and `>=` when there is none: every key is >=
     * the empty row); $7: the resource type ('' for any). */
    char sql[600];
    snprintf(sql, sizeof(sql),
             "DECLARE kw_export NO SCROLL CURSOR FOR SELECT " KW__PG_REL_XCOLS
             " FROM relationships WHERE (resource_type, resource_id, relation, subject_type, "
             "subject_id, subject_relation) %s ($1, $2, $3, $4, $5, $6) AND ($7 = '' OR "
             "resource_type = $7) ORDER BY resource_type, resource_id, relation, subject_type, "
             "subject_id, subject_relation",
             after ? ">" : ">=");
    char *vals[7];
    int lens[7], fmts[7];
    kw_str_t in[7];
    for (int i = 0; i < 6; i++)
        in[i] = after ? after[i] : KW_STR("");
    in[6] = resource_type;
    char *bufs = NULL;
    size_t total = 0;
    for (int i = 0; i < 7; i++)
        total += in[i].len + 1;
    if (rc == KW_OK && !(bufs = kw_malloc(total)))
        rc = KW_ENOMEM;
    if (rc == KW_OK) {
        char *p = bufs;
        for (int i = 0; i < 7; i++) {
            if (in[i].len)
                memcpy(p, in[i].ptr, in[i].len);
            p[in[i].len] = '\0';
            vals[i] = p;
            lens[i] = (int)in[i].len;
            fmts[i] = 0;
            p += in[i].len + 1;
        }
        PGresult *r = PQexecParams(c->conn, sql, 7, NULL, (const char *const *)vals, lens, fmts, 1);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = r ? kw__pg_result_error(c->conn, r, "export relationships") : KW_ENOMEM;
        PQclear(r);
    }
    kw_free(bufs);
    while (rc == KW_OK) {
        PGresult *r = PQexecParams(c->conn, EXPORT_FETCH, 0, NULL, NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = r ? kw__pg_result_error(c->conn, r, "export relationships") : KW_ENOMEM;
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
    if (rc == KW_OK && rev)
        *rev = at;
    return rc;
}
