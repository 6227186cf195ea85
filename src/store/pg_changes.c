/*
 * store/pg_changes.c - PostgreSQL backend: the changelog and change notifications, what
 * keeps several instances over one database coherent.
 *
 * Writing: a commit inserts its recorded relationship changes at its revision
 * (kw__pg_changelog_write, multi-row INSERTs), in the order the transaction made them
 * (seq); the NOTIFY keyward_changes carrying the revision was queued by the transaction's
 * first statement (pg_tx.c) and is delivered at COMMIT.
 *
 * Followers: kw_store_changes_since reads the changelog in (revision, seq) order from a
 * REPEATABLE READ snapshot, refusing (KW_EPRUNED) a reader below the pruned horizon read
 * in that same snapshot; kw_store_wait_change blocks on LISTEN keyward_changes on its own
 * connection (reconnecting as needed).
 *
 * Retention: kw_store_prune_changelog deletes the oldest rows (at_us, migration 2) and
 * raises changelog_horizon in one transaction, under a try-only advisory lock.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "pg_int.h"

#define KW_MODULE "store.pg"

/* ---- writing the changelog ---- */

#define PG_CHANGELOG_CHUNK 1000 /* rows per multi-row INSERT (12 params each, of 65535) */

/* Writes the tx's recorded changes at revision `rev`, PG_CHANGELOG_CHUNK rows per
 * statement (multi-row VALUES, binary parameters). A TOUCH carries its caveat name,
 * context and expiry (NULL when absent, as in relationships), so another instance applies
 * exactly what was written (tag-kw-store-caveats). */
int kw__pg_changelog_write(kw__pg_tx_t *tx, kw_revision_t rev)
{
    const kw_update_t *ups = tx->base.changes.ups;
    size_t n = tx->base.changes.n;
    if (n == 0)
        return KW_OK;
    enum { COLS = 12, INTS = 24 /* seq (int4) @0, op (int2) @8, expires_at (int8) @16 */ };
    size_t chunk = n < PG_CHANGELOG_CHUNK ? n : PG_CHANGELOG_CHUNK;
    const char **vals = kw_calloc(chunk * COLS, sizeof(*vals));
    int *lens = kw_calloc(chunk * COLS, sizeof(*lens));
    int *fmts = kw_calloc(chunk * COLS, sizeof(*fmts));
    Oid *types = kw_calloc(chunk * COLS, sizeof(*types));
    unsigned char *ints = kw_calloc(chunk, INTS);
    unsigned char revb[8];
    kw_buf_t sql;
    kw_buf_init(&sql);
    int rc = vals && lens && fmts && types && ints ? KW_OK : KW_ENOMEM;
    for (int i = 0; i < 8; i++)
        revb[i] = (unsigned char)(rev >> (56 - 8 * i));
    for (size_t start = 0; start < n && rc == KW_OK; start += chunk) {
        size_t m = n - start < chunk ? n - start : chunk;
        sql.len = 0;
        kw_buf_puts(&sql,
                    "INSERT INTO changelog (revision, seq, op, " KW__PG_REL_XCOLS ") VALUES ");
        for (size_t i = 0; i < m; i++) {
            const kw_update_t *u = &ups[start + i];
            size_t b = i * COLS;
            uint32_t seq = (uint32_t)(start + i);
            unsigned char *iv = ints + INTS * i;
            for (int k = 0; k < 4; k++)
                iv[k] = (unsigned char)(seq >> (24 - 8 * k));
            iv[8] = 0;
            iv[9] = (unsigned char)u->op;
            uint64_t exp = (uint64_t)u->rel.expires_at;
            for (int k = 0; k < 8; k++)
                iv[16 + k] = (unsigned char)(exp >> (56 - 8 * k));
            const kw_str_t f[8] = {
                u->rel.resource.type, u->rel.resource.id,      u->rel.relation, u->rel.subject.type,
                u->rel.subject.id,    u->rel.subject.relation, u->rel.caveat,   u->rel.caveat_ctx};
            vals[b] = (const char *)revb, lens[b] = 8, types[b] = KW__PG_OID_INT8;
            vals[b + 1] = (const char *)iv, lens[b + 1] = 4, types[b + 1] = KW__PG_OID_INT4;
            vals[b + 2] = (const char *)iv + 8, lens[b + 2] = 2, types[b + 2] = KW__PG_OID_INT2;
            for (int k = 0; k < 8; k++) {
                /* The caveat strings (k >= 6) are NULL when empty, as in relationships. */
                vals[b + 3 + k] = f[k].ptr && f[k].len ? f[k].ptr : k >= 6 ? NULL : "";
                lens[b + 3 + k] = (int)f[k].len;
                types[b + 3 + k] = KW__PG_OID_TEXT;
            }
            vals[b + 11] = exp ? (const char *)iv + 16 : NULL;
            lens[b + 11] = 8;
            types[b + 11] = KW__PG_OID_INT8;
            for (int k = 0; k < COLS; k++)
                fmts[b + k] = 1;
            kw_buf_printf(&sql, "%s($%zu", i ? ", " : "", b + 1);
            for (int k = 1; k < COLS; k++)
                kw_buf_printf(&sql, ", $%zu", b + 1 + (size_t)k);
            kw_buf_puts(&sql, ")");
        }
        if (sql.failed) {
            rc = KW_ENOMEM;
            break;
        }
        PGresult *r =
            PQexecParams(tx->c->conn, sql.ptr, (int)(m * COLS), types, vals, lens, fmts, 1);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = r ? kw__pg_result_error(tx->c->conn, r, "changelog") : KW_ENOMEM;
        PQclear(r);
    }
    kw_buf_free(&sql);
    kw_free(vals);
    kw_free(lens);
    kw_free(fmts);
    kw_free(types);
    kw_free(ints);
    return rc;
}

/* ---- followers: reading the changelog, wakeups ---- */

/* Streams the first n rows of a changelog result through cb (non-zero stops). */
static int emit_changes(PGresult *r, int n, kw_rel_change_cb cb, void *ud)
{
    for (int i = 0; i < n; i++) {
        kw_rel_t rel;
        kw__pg_row_rel(r, i, 2, &rel);
        kw__pg_row_rel_caveat(r, i, 8, &rel);
        int op = (int)kw__pg_col_i64(r, i, 1);
        int rc = cb((kw_revision_t)kw__pg_col_i64(r, i, 0), (kw_op_t)op, &rel, ud);
        if (rc != 0)
            return rc;
    }
    return KW_OK;
}

/* The pruned horizon on c (inside the caller's snapshot or transaction). */
static int read_horizon(kw__pg_conn_t *c, kw_revision_t *horizon)
{
    return kw__pg_one_revision(c, KW__PG_ST_HORIZON, horizon);
}

int kw__pg_changes_since(kw_store_t *base, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                         void *ud, kw_revision_t *upto, kw_diag_t *diag)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    if (limit == 0 || limit > (size_t)INT32_MAX)
        limit = (size_t)INT32_MAX;
    int rc = kw__pg_begin_on(s, KW__PG_SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the changelog: database unavailable");
    kw_revision_t cur = 0, done = after, horizon = 0;
    PGresult *r = NULL;
    rc = kw__pg_read_revision(c, &cur);
    /* The horizon in the same snapshot as the rows below: a prune commits its deletions and
     * the raised horizon together, so this snapshot sees both or neither. */
    if (rc == KW_OK)
        rc = read_horizon(c, &horizon);
    if (rc == KW_OK && after < horizon)
        rc = kw_diag_set(diag, KW_EPRUNED, 0, 0,
                         "the changelog was pruned through revision %llu, but this reader is at "
                         "revision %llu: changes it has not applied may be gone",
                         (unsigned long long)horizon, (unsigned long long)after);
    if (rc == KW_OK && cur > after) {
        kw__pg_params_t p = {0};
        kw__pg_pp_i64(&p, (int64_t)after);
        kw__pg_pp_i64(&p, (int64_t)cur);
        kw__pg_pp_i64(&p, (int64_t)limit + 1);
        rc = kw__pg_run(c, KW__PG_ST_CHANGES, &p, &r);
    }
    if (rc == KW_OK && r) {
        int n = PQntuples(r);
        if ((size_t)n <= limit) {
            rc = emit_changes(r, n, cb, ud); /* everything up to cur */
            done = cur;
        } else {
            /* More than limit: stop before the last (possibly partial) revision. Revisions
             * are never split, so a follower can apply each one atomically. */
            kw_revision_t last = (kw_revision_t)kw__pg_col_i64(r, n - 1, 0);
            int keep = n;
            while (keep > 0 && (kw_revision_t)kw__pg_col_i64(r, keep - 1, 0) == last)
                keep--;
            if (keep > 0) {
                rc = emit_changes(r, keep, cb, ud);
                done = last - 1;
            } else {
                /* One revision larger than limit: deliver it whole anyway. */
                PQclear(r);
                r = NULL;
                kw__pg_params_t q = {0};
                kw__pg_pp_i64(&q, (int64_t)last);
                rc = kw__pg_run(c, KW__PG_ST_CHANGES_AT, &q, &r);
                if (rc == KW_OK)
                    rc = emit_changes(r, PQntuples(r), cb, ud);
                done = last;
            }
        }
    } else if (rc == KW_OK) {
        done = cur > after ? cur : after;
    }
    PQclear(r);
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    kw__pg_pool_put(s, c); /* rolls back when still inside the transaction */
    if (rc == KW_OK)
        *upto = done;
    else if (rc == KW_EDB)
        kw_diag_set(diag, rc, 0, 0, "cannot read the changelog: database unavailable");
    return rc;
}

/* ---- retention ---- */

/* One bounded prune transaction (store.h, kw_store_prune_changelog). READ COMMITTED is
 * enough: rows of transactions still in flight are invisible to the DELETE and all have
 * revisions above every committed one (write order, pg_tx.c), so the deleted rows are
 * always a prefix of the committed changelog in (revision, seq) order. */
int kw__pg_prune_changelog(kw_store_t *base, int64_t older_than_us, size_t max_rows,
                           size_t *n_deleted, kw_revision_t *pruned_through, kw_diag_t *diag)
{
    kw__pg_store_t *s = kw__pg_of(base);
    kw__pg_conn_t *c;
    int rc = kw__pg_begin_on(s, "BEGIN", &c);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot prune the changelog: database unavailable");
    /* One pruner at a time; the others skip (never wait: there is nothing to wait for). */
    char sql[80];
    snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_xact_lock(%ld)", KW__PG_PRUNE_LOCK);
    PGresult *r = PQexec(c->conn, sql);
    bool locked = false;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        locked = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    else
        rc = r ? kw__pg_result_error(c->conn, r, "prune lock") : KW_ENOMEM;
    PQclear(r);
    if (rc == KW_OK && !locked)
        rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                         "another instance is pruning the changelog right now");
    size_t n = 0;
    kw_revision_t top = 0, horizon = 0;
    if (rc == KW_OK) {
        kw__pg_params_t p = {0};
        kw__pg_pp_i64(&p, older_than_us);
        kw__pg_pp_i64(&p, (int64_t)max_rows);
        rc = kw__pg_run(c, KW__PG_ST_PRUNE, &p, &r);
        if (rc == KW_OK) {
            if (PQntuples(r) == 1) {
                n = (size_t)kw__pg_col_i64(r, 0, 0);
                top = (kw_revision_t)kw__pg_col_i64(r, 0, 1);
            } else {
                rc = KW_EDB;
            }
            PQclear(r);
        }
    }
    if (rc == KW_OK) {
        kw__pg_params_t p = {0};
        if (n > 0)
            kw__pg_pp_i64(&p, (int64_t)top);
        rc = kw__pg_run(c, n > 0 ? KW__PG_ST_HORIZON_RAISE : KW__PG_ST_HORIZON, &p, &r);
        if (rc == KW_OK) {
            if (PQntuples(r) == 1)
                horizon = (kw_revision_t)kw__pg_col_i64(r, 0, 0);
            else
                rc = KW_EDB;
            PQclear(r);
        }
    }
    if (rc == KW_OK)
        rc = kw__pg_exec(c, "COMMIT");
    kw__pg_pool_put(s, c); /* rolls back (and so unlocks) when still inside the transaction */
    if (rc == KW_ECONFLICT)
        return rc;
    if (rc != KW_OK)
        return kw_diag_set(diag, rc == KW_ENOMEM ? rc : KW_EDB, 0, 0,
                           "cannot prune the changelog: database unavailable or failed (see "
                           "the log)");
    if (n > 0)
        kw_log(KW_LOG_INFO, KW_MODULE,
               "pruned %zu changelog rows; changes through revision %llu are gone", n,
               (unsigned long long)horizon);
    if (n_deleted)
        *n_deleted = n;
    if (pruned_through)
        *pruned_through = horizon;
    return KW_OK;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* (Re)connects the LISTEN connection and reads the revision it starts from. */
static int listen_connect(kw__pg_store_t *s, kw_revision_t *latest)
{
    if (s->listen)
        PQfinish(s->listen);
    s->listen = kw__pg_conn_open(s->url);
    if (!s->listen)
        return KW_ENOMEM;
    kw__pg_conn_t c = {.conn = s->listen};
    int rc = PQstatus(s->listen) == CONNECTION_OK ? KW_OK : KW_EDB;
    if (rc == KW_OK)
        rc = kw__pg_conn_setup(&c);
    if (rc == KW_OK)
        rc = kw__pg_exec(&c, "LISTEN " KW__PG_CHANNEL);
    if (rc == KW_OK)
        rc = kw__pg_read_revision(&c, latest);
    if (rc != KW_OK) {
        const char *m = PQerrorMessage(s->listen);
        kw_log(KW_LOG_WARN, KW_MODULE, "listen: %.*s", (int)strcspn(m, "\n"), m);
        PQfinish(s->listen);
        s->listen = NULL;
    }
    return rc;
}

int kw__pg_wait_change(kw_store_t *base, int timeout_ms, kw_revision_t *latest)
{
    kw__pg_store_t *s = kw__pg_of(base);
    pthread_mutex_lock(&s->listen_mu);
    int rc;
    if (!s->listen || PQstatus(s->listen) != CONNECTION_OK) {
        /* A fresh LISTEN: notifications before it were missed, so report the current
         * revision at once and let the caller catch up from its own. */
        rc = listen_connect(s, latest);
        pthread_mutex_unlock(&s->listen_mu);
        return rc;
    }
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (!PQconsumeInput(s->listen)) {
            rc = listen_connect(s, latest); /* the server went away: try once at once */
            break;
        }
        kw_revision_t best = 0;
        bool got = false;
        PGnotify *nf;
        while ((nf = PQnotifies(s->listen)) != NULL) {
            kw_revision_t v = strtoull(nf->extra, NULL, 10);
            if (!got || v > best)
                best = v;
            got = true;
            PQfreemem(nf);
        }
        if (got) {
            *latest = best;
            rc = KW_OK;
            break;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            rc = KW_ETIMEOUT;
            break;
        }
        struct pollfd pfd = {.fd = PQsocket(s->listen), .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno != EINTR) {
            rc = KW_EDB;
            break;
        }
    }
    pthread_mutex_unlock(&s->listen_mu);
    return rc;
}
