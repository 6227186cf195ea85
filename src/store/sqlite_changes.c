/*
 * store/sqlite_changes.c - the SQLite backend's changelog: what /v1 Watch reads
 * (kw_store_watch_changes), also when another process commits to the same file; and the
 * ordered, resumable relationship stream of /v1 ExportBulkRelationships
 * (kw_store_export_relationships).
 *
 * Every commit writes its relationship changes as changelog rows at its revision, in the
 * order made, inside the commit's own transaction (kw__sq_changelog_write, called by
 * kw__sq_tx_commit after the revision bump), so a revision's rows are durable exactly
 * when the revision is. Rows carry the time they were written (at_us); retention is
 * KW_STORE_SQLITE_CHANGELOG_RETAIN_S: every KW__SQ_PRUNE_EVERY-th commit deletes, in the
 * same transaction, up to KW__SQ_PRUNE_ROWS of the oldest rows past it and raises the
 * pruned horizon (meta 'changelog_horizon') to the highest revision deleted. A reader
 * below the horizon is refused with KW_EPRUNED, read in the same snapshot as the rows.
 *
 * The sync module never follows a SQLite store (its ops' changes_since stays NULL, so
 * kw_store_changes_since still answers KW_EUNSUPPORTED there): this changelog only
 * feeds Watch.
 */
#include "sqlite_int.h"

#include <time.h>

#include "base/log.h"

#define KW_MODULE "store"

#define KW__SQ_PRUNE_EVERY 64  /* revisions between two prune attempts */
#define KW__SQ_PRUNE_ROWS 4096 /* the most rows one attempt deletes */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int bind_text(sqlite3_stmt *st, int i, kw_str_t s)
{
    return kw__sq_bind_str(st, i, s.ptr ? s : KW_STR(""));
}

/* Deletes the oldest rows past retention (a bounded batch) and raises the horizon. */
static int prune(kw__sq_conn_t *c, kw_diag_t *diag)
{
    static const char sql_upto[] = "SELECT max(rev) FROM (SELECT rev FROM changelog WHERE "
                                   "at_us < ?1 ORDER BY at_us LIMIT ?2)";
    static const char *const sql[] = {
        sql_upto,
        "DELETE FROM changelog WHERE rev <= ?1",
        "UPDATE meta SET value = max(value, ?1) WHERE key = 'changelog_horizon'",
    };
    sqlite3_stmt *st = NULL;
    int64_t cutoff = now_us() - (int64_t)KW_STORE_SQLITE_CHANGELOG_RETAIN_S * 1000000;
    int src = sqlite3_prepare_v2(c->db, sql[0], -1, &st, NULL);
    sqlite3_int64 upto = 0;
    if (src == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, cutoff);
        sqlite3_bind_int(st, 2, KW__SQ_PRUNE_ROWS);
        src = sqlite3_step(st);
        if (src == SQLITE_ROW) {
            upto = sqlite3_column_int64(st, 0);
            src = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    for (int i = 1; src == SQLITE_OK && upto > 0 && i <= 2; i++) {
        src = sqlite3_prepare_v2(c->db, sql[i], -1, &st, NULL);
        if (src == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, upto);
            src = sqlite3_step(st);
            src = src == SQLITE_DONE ? SQLITE_OK : src;
        }
        sqlite3_finalize(st);
    }
    if (src != SQLITE_OK)
        return kw__sq_err(c, src, "prune changelog", diag);
    if (upto > 0)
        kw_log(KW_LOG_DEBUG, KW_MODULE, "changelog pruned through revision %lld", (long long)upto);
    return KW_OK;
}

int kw__sq_changelog_write(kw__sq_conn_t *c, kw_store_tx_t *tx, kw_revision_t rev, kw_diag_t *diag)
{
    const kw_update_t *ups = NULL;
    size_t n = 0;
    kw_store_tx_changes(tx, &ups, &n);
    sqlite3_stmt *st = NULL;
    int rc = n ? kw__sq_stmt(c, KW__SQ_ST_CHANGELOG_INSERT, &st) : KW_OK;
    int64_t at = now_us();
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        const kw_rel_t *r = &ups[i].rel;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)rev);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        sqlite3_bind_int(st, 3, (int)ups[i].op);
        bind_text(st, 4, r->resource.type);
        bind_text(st, 5, r->resource.id);
        bind_text(st, 6, r->relation);
        bind_text(st, 7, r->subject.type);
        bind_text(st, 8, r->subject.id);
        bind_text(st, 9, r->subject.relation);
        bind_text(st, 10, r->caveat);
        bind_text(st, 11, r->caveat_ctx);
        sqlite3_bind_int64(st, 12, r->expires_at);
        sqlite3_bind_int64(st, 13, at);
        rc = kw__sq_exec_done(c, st, "changelog insert", diag);
    }
    if (rc == KW_OK && rev % KW__SQ_PRUNE_EVERY == 0)
        rc = prune(c, diag);
    return rc;
}

static int read_meta_int(kw__sq_conn_t *c, const char *sql, sqlite3_int64 *out)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
    *out = 0;
    if (src == SQLITE_OK) {
        src = sqlite3_step(st);
        if (src == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            src = SQLITE_OK;
        } else if (src == SQLITE_DONE) {
            src = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return src == SQLITE_OK ? KW_OK : kw__sq_err(c, src, "read changelog state", NULL);
}

/* Streams the rows of revisions (after, upto] (all of them, or stops before the revision
 * that would pass `limit`, unless it is the first). *done: the last revision delivered
 * whole. */
static int emit_rows(kw__sq_conn_t *c, kw_revision_t after, kw_revision_t upto, size_t limit,
                     kw_rel_change_cb cb, void *ud, kw_revision_t *done)
{
    static const char sql[] =
        "SELECT rev, op, " KW__SQ_REL_COLS ", caveat, caveat_ctx, expires_at_us "
        "FROM changelog WHERE rev > ?1 AND rev <= ?2 ORDER BY rev, seq";
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
    if (src != SQLITE_OK)
        return kw__sq_err(c, src, "read changelog", NULL);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)upto);
    size_t n = 0;
    kw_revision_t cur = 0;
    int rc = KW_OK;
    *done = upto;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        kw_revision_t rev = (kw_revision_t)sqlite3_column_int64(st, 0);
        if (rev != cur) {
            if (n >= limit && cur != 0) {
                *done = cur; /* stop before a revision that would pass the limit */
                break;
            }
            cur = rev;
        }
        kw_rel_t r = {
            .resource = {kw__sq_col_str(st, 2), kw__sq_col_str(st, 3)},
            .relation = kw__sq_col_str(st, 4),
            .subject = {kw__sq_col_str(st, 5), kw__sq_col_str(st, 6), kw__sq_col_str(st, 7)},
            .caveat = kw__sq_col_str(st, 8),
            .caveat_ctx = kw__sq_col_str(st, 9),
            .expires_at = sqlite3_column_int64(st, 10),
        };
        rc = cb(rev, (kw_op_t)sqlite3_column_int(st, 1), &r, ud);
        if (rc != KW_OK)
            break;
        n++;
    }
    if (rc == KW_OK && src != SQLITE_ROW && src != SQLITE_DONE)
        rc = kw__sq_err(c, src, "read changelog", NULL);
    sqlite3_finalize(st);
    return rc;
}

int kw__sq_watch_changes(kw_store_t *base, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                         void *ud, kw_revision_t *upto, kw_diag_t *diag)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    if (limit == 0)
        limit = SIZE_MAX;
    int rc = kw__sq_conn_take(s, &c, diag);
    if (rc != KW_OK)
        return rc;
    /* One read transaction: the revision, the horizon and the rows are one snapshot. */
    rc = kw__sq_exec_id(c, KW__SQ_ST_BEGIN_READ, "begin read", diag);
    if (rc != KW_OK)
        goto out;
    sqlite3_int64 cur = 0, horizon = 0;
    kw_revision_t done = after;
    rc = read_meta_int(c, "SELECT value FROM meta WHERE key = 'revision'", &cur);
    if (rc == KW_OK)
        rc = read_meta_int(c, "SELECT value FROM meta WHERE key = 'changelog_horizon'", &horizon);
    if (rc == KW_OK && after < (kw_revision_t)horizon)
        rc = kw_diag_set(diag, KW_EPRUNED, 0, 0,
                         "the changelog was pruned through revision %llu, but this reader is at "
                         "revision %llu: changes it has not applied may be gone",
                         (unsigned long long)horizon, (unsigned long long)after);
    if (rc == KW_OK && (kw_revision_t)cur > after)
        rc = emit_rows(c, after, (kw_revision_t)cur, limit, cb, ud, &done);
    if (rc == KW_OK)
        rc = kw__sq_exec_id(c, KW__SQ_ST_COMMIT, "end read", diag);
out:
    kw__sq_conn_give(s, c); /* rolls back a read left open */
    if (rc == KW_OK)
        *upto = done;
    return rc;
}

/* ---- kw_store_export_relationships ---- */

/* Every relationship after `after` (NULL: from the first) in primary-key order (SQLite's
 * BINARY collation: bytewise, the WITHOUT ROWID table's own order), of `resource_type`
 * when given, from one read transaction, stepped row by row: constant memory. */
int kw__sq_export_relationships(kw_store_t *base, const kw_str_t *after, kw_str_t resource_type,
                                kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    static const char sql[] =
        "SELECT " KW__SQ_REL_XCOLS " FROM relationships WHERE (resource_type, resource_id, "
        "relation, subject_type, subject_id, subject_relation) > (?1, ?2, ?3, ?4, ?5, ?6) "
        "AND (?7 = '' OR resource_type = ?7) ORDER BY resource_type, resource_id, relation, "
        "subject_type, subject_id, subject_relation";
    static const char sql_first[] =
        "SELECT " KW__SQ_REL_XCOLS " FROM relationships WHERE (?7 = '' OR resource_type = ?7) "
        "ORDER BY resource_type, resource_id, relation, subject_type, subject_id, "
        "subject_relation";
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    sqlite3_int64 at = 0;
    rc = kw__sq_exec_id(c, KW__SQ_ST_BEGIN_READ, "begin read", NULL);
    if (rc == KW_OK)
        rc = read_meta_int(c, "SELECT value FROM meta WHERE key = 'revision'", &at);
    if (rc == KW_OK) {
        int src = sqlite3_prepare_v2(c->db, after ? sql : sql_first, -1, &st, NULL);
        if (src != SQLITE_OK)
            rc = kw__sq_err(c, src, "export relationships", NULL);
    }
    if (rc == KW_OK) {
        for (int i = 0; after && i < 6; i++)
            bind_text(st, i + 1, after[i]);
        bind_text(st, 7, resource_type);
        int src;
        while (rc == KW_OK && (src = sqlite3_step(st)) == SQLITE_ROW) {
            kw_rel_t r = {
                .resource = {kw__sq_col_str(st, 0), kw__sq_col_str(st, 1)},
                .relation = kw__sq_col_str(st, 2),
                .subject = {kw__sq_col_str(st, 3), kw__sq_col_str(st, 4), kw__sq_col_str(st, 5)},
                .caveat = kw__sq_col_str(st, 6), /* "" for NULL: none */
                .caveat_ctx = kw__sq_col_str(st, 7),
                .expires_at = sqlite3_column_int64(st, 8), /* 0 for NULL: never */
            };
            rc = cb(&r, ud);
        }
        if (rc == KW_OK && src != SQLITE_DONE)
            rc = kw__sq_err(c, src, "export relationships", NULL);
    }
    sqlite3_finalize(st);
    if (rc == KW_OK)
        rc = kw__sq_exec_id(c, KW__SQ_ST_COMMIT, "end read", NULL);
    kw__sq_conn_give(s, c); /* rolls back a read left open */
    if (rc == KW_OK && rev)
        *rev = (kw_revision_t)at;
    return rc;
}
