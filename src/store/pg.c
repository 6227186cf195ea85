/*
 * store/pg.c - the PostgreSQL backend (libpq): several keyward instances over one database.
 *
 * This file: the connection pool, the prepared statements with their parameters and
 * results, errors, open (migrations: migrations_pg.c), metadata, and the ops table. The other
 * files, sharing pg_int.h: pg_read.c (reads and the startup load), pg_tx.c (transactions and their
 * writes, the global write order), pg_changes.c (the changelog and change notifications for
 * followers).
 *
 * Connections: a fixed-size pool (URL parameter pool=N, else env KEYWARD_PG_POOL, else
 * the caller's kw_store_opts_t.pool_size (`keyward serve`: its thread count), else
 * 2 x online cores; 2..256) with a mutex+condvar free list. Connections are made lazily; a broken
 * one (PQstatus != CONNECTION_OK) is reset on checkout, and a statement that fails because
 * the connection died (a server restart) is retried once on a fresh connection when
 * nothing of a transaction was lost by it. Every connection gets
 * connect_timeout=3, TCP keepalives and tcp_user_timeout, statement_timeout=5s, so an
 * outage surfaces as KW_EDB within seconds, never as a hang.
 *
 * Statements: prepared once per connection on first use (a bit per statement); all
 * parameters and results travel in binary format, so text is passed by length (no NUL
 * needed) and BIGINT/BYTEA need no parsing.
 *
 * Logging: only SQLSTATE and the primary message of a server error (the DETAIL line can
 * quote key values, e.g. a hash), never parameters.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "audit_int.h"
#include "pg_int.h"

#define KW_MODULE "store.pg"

#define PG_POOL_MAX 256

/* A write transaction holds one connection while the API catches its graph up on another
 * (v1 preconditions, tag-kw-store-write-order): with one connection those writes would
 * wait PG_CHECKOUT_WAIT_MS for themselves and fail. */
#define PG_POOL_MIN 2
#define PG_CHECKOUT_WAIT_MS 10000 /* all connections busy this long: KW_EDB */

/* ---- prepared statements ---- */

#define AGENT_COLS "id, name, description, account_id, created_at_us"
/* As in sqlite.c: written at create, then the lifecycle columns (migration 3). */
#define KEY_INSERT_COLS "id, agent_id, name, type, created_at_us, hash, secret_enc, expires_at_us"
#define KEY_COLS KEY_INSERT_COLS ", last_used_at_us, prev_hash, prev_until_us"
/* KEY_COLS of api_keys k, then AGENT_COLS of agents g (kw_store_key_auth's join). */
#define KEY_AGENT_COLS                                                                             \
    "k.id, k.agent_id, k.name, k.type, k.created_at_us, k.hash, k.secret_enc, k.expires_at_us, "   \
    "k.last_used_at_us, k.prev_hash, k.prev_until_us, g.id, g.name, g.description, "               \
    "g.account_id, g.created_at_us"
#define KEY_AGENT_FROM " FROM api_keys k JOIN agents g ON g.id = k.agent_id WHERE "

/* Parameter types: one letter per parameter (t text, i int8, b bytea, a text[]). */
typedef struct pg_stmt {
    const char *name;
    const char *types;
    const char *sql;
} pg_stmt_t;

static const pg_stmt_t stmts[KW__PG_ST_N] = {
    [KW__PG_ST_META_GET] = {"kw_meta_get", "t", "SELECT value FROM meta WHERE key = $1"},
    [KW__PG_ST_META_INIT] =
        {"kw_meta_init", "tb",
         "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING"},
    [KW__PG_ST_META_SET] = {"kw_meta_set", "tb",
                            "INSERT INTO meta (key, value) VALUES ($1, $2) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"},
    [KW__PG_ST_REVISION] = {"kw_revision", "", "SELECT value FROM revision"},
    [KW__PG_ST_REVISION_TEXT] = {"kw_revision_text", "t",
                                 "SELECT value::text::bytea FROM revision WHERE $1 = 'revision'"},
    [KW__PG_ST_AGENT_GET] = {"kw_agent_get", "t",
                             "SELECT " AGENT_COLS " FROM agents WHERE id = $1"},
    [KW__PG_ST_AGENT_BY_NAME] = {"kw_agent_by_name", "tt",
                                 "SELECT " AGENT_COLS
                                 " FROM agents WHERE account_id = $1 AND name = $2"},
    [KW__PG_ST_AGENTS_BY_IDS] = {"kw_agents_by_ids", "a",
                                 "SELECT " AGENT_COLS " FROM agents WHERE id = ANY ($1) "
                                 "ORDER BY created_at_us, id"},
    [KW__PG_ST_AGENTS_PRESENT] = {"kw_agents_present", "a",
                                  "SELECT id FROM agents WHERE id = ANY ($1)"},
    [KW__PG_ST_KEY_GET] = {"kw_key_get", "t", "SELECT " KEY_COLS " FROM api_keys WHERE id = $1"},
    [KW__PG_ST_KEY_BY_NAME] = {"kw_key_by_name", "ttt",
                               "SELECT " KEY_COLS " FROM api_keys "
                               "WHERE agent_id = $1 AND name = $2 AND type = $3"},
    [KW__PG_ST_KEY_BY_HASH] = {"kw_key_by_hash", "b",
                               "SELECT " KEY_COLS " FROM api_keys WHERE hash = $1 "
                               "OR prev_hash = $1 ORDER BY hash IS NOT DISTINCT FROM $1 DESC "
                               "LIMIT 1"},
    /* A current hash first (the arms' order), then a previous one in its grace. */
    [KW__PG_ST_KEY_AUTH] = {"kw_key_auth", "b",
                            "(SELECT " KEY_AGENT_COLS KEY_AGENT_FROM "k.hash = $1) UNION ALL "
                            "(SELECT " KEY_AGENT_COLS KEY_AGENT_FROM "k.prev_hash = $1) LIMIT 1"},
    [KW__PG_ST_KEYS_OF_AGENT] = {"kw_keys_of_agent", "titi",
                                 "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = $1 "
                                 "AND (created_at_us, id) > ($2, $3) "
                                 "ORDER BY created_at_us, id LIMIT $4"},
    [KW__PG_ST_KEYS_BY_IDS] = {"kw_keys_by_ids", "ta",
                               "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = $1 "
                               "AND id = ANY ($2) ORDER BY created_at_us, id"},
    [KW__PG_ST_AGENT_INSERT] = {"kw_agent_insert", "tttti",
                                "INSERT INTO agents (" AGENT_COLS ") VALUES ($1, $2, $3, $4, $5) "
                                "ON CONFLICT DO NOTHING RETURNING 1"},
    /* Locks the agent row: a concurrent key insert for it (its foreign key check takes
     * a share lock on the row) waits for the delete and then fails. */
    [KW__PG_ST_AGENT_LOCK] = {"kw_agent_lock", "t",
                              "SELECT 1 FROM agents WHERE id = $1 FOR UPDATE"},
    /* Relationship deletes, each RETURNING what it removed in a stable order. The groups
     * run in the order SQLite's backend runs them (tag-kw-store-cascade-order): an agent's
     * keys as resources, as subjects, then the object itself as resource, as subject. */
    [KW__PG_ST_REL_DEL_RESOURCE_KEYS] =
        {"kw_rel_del_resource_keys", "tt",
         "WITH d AS (DELETE FROM relationships WHERE resource_type = $2 "
         "AND resource_id IN (SELECT id FROM api_keys WHERE agent_id = $1) "
         "RETURNING " KW__PG_REL_COLS ") SELECT * FROM d " KW__PG_REL_ORDER},
    [KW__PG_ST_REL_DEL_SUBJECT_KEYS] =
        {"kw_rel_del_subject_keys", "tt",
         "WITH d AS (DELETE FROM relationships WHERE subject_type = $2 "
         "AND subject_id IN (SELECT id FROM api_keys WHERE agent_id = $1) "
         "RETURNING " KW__PG_REL_COLS ") SELECT * FROM d " KW__PG_REL_ORDER},
    [KW__PG_ST_REL_DEL_RESOURCE] = {"kw_rel_del_resource", "tt",
                                    "WITH d AS (DELETE FROM relationships WHERE resource_type = $1 "
                                    "AND resource_id = $2 RETURNING " KW__PG_REL_COLS
                                    ") SELECT * FROM d " KW__PG_REL_ORDER},
    [KW__PG_ST_REL_DEL_SUBJECT] = {"kw_rel_del_subject", "tt",
                                   "WITH d AS (DELETE FROM relationships WHERE subject_type = $1 "
                                   "AND subject_id = $2 RETURNING " KW__PG_REL_COLS
                                   ") SELECT * FROM d " KW__PG_REL_ORDER},
    [KW__PG_ST_AGENT_KEYS_DELETE] = {"kw_agent_keys_delete", "t",
                                     "DELETE FROM api_keys WHERE agent_id = $1"},
    [KW__PG_ST_AGENT_DELETE] = {"kw_agent_delete", "t",
                                "DELETE FROM agents WHERE id = $1 RETURNING 1"},
    /* The agent row is share-locked first, so a missing (or concurrently deleted) agent
     * inserts nothing instead of raising a foreign key error, which would abort the whole
     * transaction where SQLite's failed statement leaves it usable. */
    [KW__PG_ST_KEY_INSERT] = {"kw_key_insert", "ttttibbi",
                              "INSERT INTO api_keys (" KEY_INSERT_COLS ") "
                              "SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS "
                              "(SELECT 1 FROM agents WHERE id = $2 FOR KEY SHARE) "
                              "ON CONFLICT DO NOTHING RETURNING 1"},
    [KW__PG_ST_AGENT_EXISTS] = {"kw_agent_exists", "t", "SELECT 1 FROM agents WHERE id = $1"},
    [KW__PG_ST_KEY_DELETE] = {"kw_key_delete", "t",
                              "DELETE FROM api_keys WHERE id = $1 RETURNING 1"},
    /* tag-kw-key-rotate: compare-and-swap on the credential the request read. */
    [KW__PG_ST_KEY_ROTATE] = {"kw_key_rotate", "tbbbibb",
                              "UPDATE api_keys SET hash = $2, secret_enc = $3, prev_hash = $4, "
                              "prev_until_us = $5 WHERE id = $1 "
                              "AND hash IS NOT DISTINCT FROM $6 "
                              "AND secret_enc IS NOT DISTINCT FROM $7 RETURNING 1"},
    [KW__PG_ST_KEY_EXISTS] = {"kw_key_exists", "t", "SELECT 1 FROM api_keys WHERE id = $1"},
    /* Last uses, one statement for a whole batch (a deadlock with a concurrent write
     * fails the flush, which the next interval retries). */
    [KW__PG_ST_KEYS_TOUCH] = {"kw_keys_touch", "aa",
                              "UPDATE api_keys k SET last_used_at_us = u.t FROM "
                              "(SELECT id, max(t::bigint) AS t FROM unnest($1::text[], "
                              "$2::text[]) AS x (id, t) GROUP BY id ORDER BY id) u "
                              "WHERE k.id = u.id AND (k.last_used_at_us IS NULL "
                              "OR k.last_used_at_us < u.t)"},
    /* tag-kw-store-caveats: a CREATE replaces only a row whose expiry has passed ($10 is
     * now): no row returned means a live one exists (KW_ECONFLICT). A TOUCH replaces
     * caveat, context and expiry, and leaves an identical row unwritten (no dead tuple). */
    [KW__PG_ST_REL_CREATE] =
        {"kw_rel_create", "ttttttttii",
         "INSERT INTO relationships (" KW__PG_REL_XCOLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, "
         "$8, $9) ON CONFLICT (" KW__PG_REL_COLS ") DO UPDATE SET caveat_name = "
         "excluded.caveat_name, caveat_context = excluded.caveat_context, expires_at_us = "
         "excluded.expires_at_us WHERE relationships.expires_at_us <= $10 RETURNING 1"},
    [KW__PG_ST_REL_TOUCH] =
        {"kw_rel_touch", "tttttttti",
         "INSERT INTO relationships (" KW__PG_REL_XCOLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, "
         "$8, $9) ON CONFLICT (" KW__PG_REL_COLS ") DO UPDATE SET caveat_name = "
         "excluded.caveat_name, caveat_context = excluded.caveat_context, expires_at_us = "
         "excluded.expires_at_us WHERE (relationships.caveat_name, relationships.caveat_context, "
         "relationships.expires_at_us) IS DISTINCT FROM (excluded.caveat_name, "
         "excluded.caveat_context, excluded.expires_at_us)"},
    [KW__PG_ST_REL_DELETE] =
        {"kw_rel_delete", "tttttt",
         "DELETE FROM relationships WHERE resource_type = $1 AND resource_id = $2 "
         "AND relation = $3 AND subject_type = $4 AND subject_id = $5 "
         "AND subject_relation = $6 RETURNING 1"},
    /* The first statement of every write transaction (see pg_tx.c's file comment): takes the
     * global write order; the notification is delivered only if the transaction commits. */
    [KW__PG_ST_TX_REVISION] = {"kw_tx_revision", "",
                               "WITH r AS (UPDATE revision SET value = value + 1 RETURNING value) "
                               "SELECT value, pg_notify('" KW__PG_CHANNEL "', value::text) FROM r"},
    /* The sweep, both on the partial index relationships_expiry (migration 3). */
    [KW__PG_ST_NEXT_EXPIRY] = {"kw_next_expiry", "",
                               "SELECT expires_at_us FROM relationships "
                               "WHERE expires_at_us IS NOT NULL ORDER BY expires_at_us LIMIT 1"},
    [KW__PG_ST_REL_DEL_EXPIRED] =
        {"kw_rel_del_expired", "ii",
         "WITH d AS (DELETE FROM relationships WHERE (" KW__PG_REL_COLS
         ") IN (SELECT " KW__PG_REL_COLS
         " FROM relationships WHERE expires_at_us <= $1 ORDER BY expires_at_us LIMIT $2) "
         "RETURNING " KW__PG_REL_COLS ") SELECT * FROM d " KW__PG_REL_ORDER},
    [KW__PG_ST_CHANGES] =
        {"kw_changes", "iii",
         "SELECT revision, op, " KW__PG_REL_XCOLS " FROM changelog "
         "WHERE revision > $1 AND revision <= $2 ORDER BY revision, seq LIMIT $3"},
    [KW__PG_ST_CHANGES_AT] = {"kw_changes_at", "i",
                              "SELECT revision, op, " KW__PG_REL_XCOLS " FROM changelog "
                              "WHERE revision = $1 ORDER BY seq"},
    [KW__PG_ST_HORIZON] = {"kw_horizon", "", "SELECT pruned_through FROM changelog_horizon"},
    /* Retention (pg_changes.c): of the oldest $2 rows in (revision, seq) order, deletes those
     * before the first one that is younger than $1 microseconds (database clock) and above
     * the horizon; rows at or below the horizon (the rest of a revision cut by the limit)
     * are deleted whatever their age. Returns how many and the highest revision deleted. */
    [KW__PG_ST_PRUNE] =
        {"kw_prune", "ii",
         "WITH head AS (SELECT revision, seq, at_us FROM changelog"
         "  ORDER BY revision, seq LIMIT $2),"
         " stop AS (SELECT revision, seq FROM head"
         "  WHERE at_us >= (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - $1"
         "  AND revision > (SELECT pruned_through FROM changelog_horizon)"
         "  ORDER BY revision, seq LIMIT 1),"
         " doomed AS (SELECT revision, seq FROM head WHERE NOT EXISTS"
         "  (SELECT 1 FROM stop WHERE (head.revision, head.seq) >= (stop.revision, stop.seq))),"
         " d AS (DELETE FROM changelog c USING doomed"
         "  WHERE c.revision = doomed.revision AND c.seq = doomed.seq RETURNING c.revision)"
         " SELECT count(*)::bigint, COALESCE(max(revision), 0)::bigint FROM d"},
    [KW__PG_ST_HORIZON_RAISE] = {"kw_horizon_raise", "i",
                                 "UPDATE changelog_horizon SET pruned_through = "
                                 "GREATEST(pruned_through, $1) RETURNING pruned_through"},
    /* The audit trail (pg_audit.c): prepared, since every audited write runs both. */
    [KW__PG_ST_AUDIT_HEAD] = {"kw_audit_head", "",
                              "SELECT seq, hash FROM audit_head WHERE one FOR UPDATE"},
    [KW__PG_ST_AUDIT_APPEND] =
        {"kw_audit_append", "iiittttttbb",
         "WITH e AS (INSERT INTO audit_events (seq, at_us, revision, actor, "
         "action, resource, account, request_id, detail, prev_hash, hash) "
         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING 1) "
         "UPDATE audit_head SET seq = $1, hash = $11 "
         "WHERE one AND (SELECT count(*) FROM e) = 1"},
};

/* ---- parameters ---- */

/* PostgreSQL text cannot hold NUL and must be valid UTF-8 (the test clusters and any
 * sane deployment are UTF8). A value that is not can never be stored, so lookups by it
 * answer KW_ENOTFOUND and inserts KW_EINVAL instead of a database error (503). */
static bool utf8_ok(kw_str_t s)
{
    return (s.len == 0 || !memchr(s.ptr, '\0', s.len)) && kw_utf8_valid(s);
}

void kw__pg_pp_text(kw__pg_params_t *p, kw_str_t s)
{
    kw_assert(p->n < KW__PG_MAX_PARAMS);
    if (!utf8_ok(s))
        p->bad_text = true;
    p->vals[p->n] = s.ptr ? s.ptr : ""; /* NULL would mean SQL NULL */
    p->lens[p->n] = (int)s.len;
    p->fmts[p->n] = 1;
    p->n++;
}

void kw__pg_pp_cstr(kw__pg_params_t *p, const char *s)
{
    kw__pg_pp_text(p, kw_str_c(s));
}

void kw__pg_pp_null(kw__pg_params_t *p)
{
    kw_assert(p->n < KW__PG_MAX_PARAMS);
    p->vals[p->n] = NULL;
    p->lens[p->n] = 0;
    p->fmts[p->n] = 1;
    p->n++;
}

void kw__pg_pp_bytes(kw__pg_params_t *p, const uint8_t *b, size_t len)
{
    kw_assert(p->n < KW__PG_MAX_PARAMS);
    p->vals[p->n] = len ? (const char *)b : "";
    p->lens[p->n] = (int)len;
    p->fmts[p->n] = 1;
    p->n++;
}

void kw__pg_pp_i64(kw__pg_params_t *p, int64_t v)
{
    kw_assert(p->n < KW__PG_MAX_PARAMS);
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        p->i64[p->n][i] = (unsigned char)(u >> (56 - 8 * i));
    p->vals[p->n] = (const char *)p->i64[p->n];
    p->lens[p->n] = 8;
    p->fmts[p->n] = 1;
    p->n++;
}

/* A text[] literal in text format: {"a","b"} with " and \ escaped; NUL-terminated in `a`.
 * Ids that cannot be stored (bad UTF-8) are left out: they match nothing anyway. */
int kw__pg_pp_text_array(kw__pg_params_t *p, kw_arena_t *a, const kw_str_t *ids, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) {
        if (ids[i].len > (SIZE_MAX - cap) / 2 - 4)
            return KW_ENOMEM;
        cap += 2 * ids[i].len + 3;
    }
    char *buf = kw_arena_alloc(a, cap);
    if (!buf)
        return KW_ENOMEM;
    size_t o = 0;
    bool first = true;
    buf[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (!utf8_ok(ids[i]))
            continue;
        if (!first)
            buf[o++] = ',';
        first = false;
        buf[o++] = '"';
        for (size_t k = 0; k < ids[i].len; k++) {
            char ch = ids[i].ptr[k];
            if (ch == '"' || ch == '\\')
                buf[o++] = '\\';
            buf[o++] = ch;
        }
        buf[o++] = '"';
    }
    buf[o++] = '}';
    buf[o] = '\0';
    kw_assert(p->n < KW__PG_MAX_PARAMS);
    p->vals[p->n] = buf;
    p->lens[p->n] = 0;
    p->fmts[p->n] = 0;
    p->n++;
    return KW_OK;
}

/* ---- results ---- */

int64_t kw__pg_col_i64(const PGresult *r, int row, int col)
{
    const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
    uint64_t u = 0;
    int len = PQgetlength(r, row, col);
    for (int i = 0; i < len; i++)
        u = (u << 8) | v[i];
    if (len == 2)
        return (int16_t)u;
    if (len == 4)
        return (int32_t)u;
    return (int64_t)u;
}

kw_str_t kw__pg_col_str(const PGresult *r, int row, int col)
{
    return (kw_str_t){PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col)};
}

/* The six relationship columns starting at `col`, as slices into the result. */
void kw__pg_row_rel(const PGresult *r, int row, int col, kw_rel_t *rel)
{
    rel->resource.type = kw__pg_col_str(r, row, col);
    rel->resource.id = kw__pg_col_str(r, row, col + 1);
    rel->relation = kw__pg_col_str(r, row, col + 2);
    rel->subject.type = kw__pg_col_str(r, row, col + 3);
    rel->subject.id = kw__pg_col_str(r, row, col + 4);
    rel->subject.relation = kw__pg_col_str(r, row, col + 5);
    rel->caveat = rel->caveat_ctx = KW_STR("");
    rel->expires_at = 0;
}

/* The caveat name, context and expiry columns starting at `col` (after KW__PG_REL_COLS in
 * a KW__PG_REL_XCOLS row); NULL is "none". */
void kw__pg_row_rel_caveat(const PGresult *r, int row, int col, kw_rel_t *rel)
{
    if (!PQgetisnull(r, row, col))
        rel->caveat = kw__pg_col_str(r, row, col);
    if (!PQgetisnull(r, row, col + 1))
        rel->caveat_ctx = kw__pg_col_str(r, row, col + 1);
    if (!PQgetisnull(r, row, col + 2))
        rel->expires_at = kw__pg_col_i64(r, row, col + 2);
}

/* ---- errors ---- */

/* Maps a failed result to a code and logs it (SQLSTATE + primary message only). */
int kw__pg_result_error(PGconn *conn, const PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (state && strcmp(state, "23505") == 0)
        return KW_ECONFLICT; /* unique_violation */
    if (state && strcmp(state, "23503") == 0)
        return KW_ENOTFOUND; /* foreign_key_violation: the agent is gone */
    if (!primary) {
        /* A client-side failure (connection lost): libpq's text is about the socket. */
        const char *m = PQerrorMessage(conn);
        size_t len = strcspn(m, "\n");
        kw_log(KW_LOG_WARN, KW_MODULE, "%s: %.*s", what, (int)len, m);
    } else {
        kw_log(KW_LOG_WARN, KW_MODULE, "%s: SQLSTATE %s: %s", what, state ? state : "?", primary);
    }
    return KW_EDB;
}

/* ---- connections ---- */

/* Server notices (NOTICE/WARNING, e.g. "terminating connection due to administrator
 * command") would go to stderr unformatted; they are informational, keep them out. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Session settings every fresh (or reset) connection gets. The prepared statements are
 * gone after a reset, so the cache is cleared here too. */
int kw__pg_conn_setup(kw__pg_conn_t *c)
{
    c->prepared = 0;
    PQsetNoticeProcessor(c->conn, ignore_notice, NULL);
    PGresult *r = PQexec(c->conn, "SET statement_timeout = '5s'; SET lock_timeout = '5s'; "
                                  "SET idle_in_transaction_session_timeout = '60s'");
    int rc =
        PQresultStatus(r) == PGRES_COMMAND_OK ? KW_OK : kw__pg_result_error(c->conn, r, "setup");
    PQclear(r);
    return rc;
}

/* Opens a connection with keyward's defaults; the URL's own settings override them
 * (libpq applies later keywords over earlier ones, and expands the dbname URL in place). */
PGconn *kw__pg_conn_open(const char *url)
{
    static const char *const keys[] = {
        "connect_timeout",     "keepalives",       "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "application_name",    "dbname",           NULL};
    const char *vals[] = {"3", "1", "5", "2", "2", "5000", "keyward", url, NULL};
    return PQconnectdbParams(keys, vals, 1);
}

/* Makes c usable: connects it the first time, resets it when broken. */
int kw__pg_conn_ensure(kw__pg_store_t *s, kw__pg_conn_t *c)
{
    if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
        return KW_OK;
    if (!c->conn) {
        c->conn = kw__pg_conn_open(s->url);
        if (!c->conn)
            return KW_ENOMEM;
    } else {
        PQreset(c->conn);
    }
    if (PQstatus(c->conn) != CONNECTION_OK) {
        const char *m = PQerrorMessage(c->conn);
        kw_log(KW_LOG_WARN, KW_MODULE, "cannot connect: %.*s", (int)strcspn(m, "\n"), m);
        return KW_EDB;
    }
    return kw__pg_conn_setup(c);
}

static int pool_get(kw__pg_store_t *s, kw__pg_conn_t **out)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PG_CHECKOUT_WAIT_MS / 1000;
    pthread_mutex_lock(&s->mu);
    while (!s->free_list) {
        int e = pthread_cond_timedwait(&s->cv, &s->mu, &until);
        if (e == ETIMEDOUT && !s->free_list) {
            pthread_mutex_unlock(&s->mu);
            kw_log(KW_LOG_WARN, KW_MODULE, "all %zu connections busy for %d ms", s->n_conns,
                   PG_CHECKOUT_WAIT_MS);
            return KW_EDB;
        }
    }
    kw__pg_conn_t *c = s->free_list;
    s->free_list = c->next_free;
    pthread_mutex_unlock(&s->mu);
    int rc = kw__pg_conn_ensure(s, c);
    if (rc != KW_OK) {
        pthread_mutex_lock(&s->mu);
        c->next_free = s->free_list;
        s->free_list = c;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    *out = c;
    return KW_OK;
}

void kw__pg_pool_put(kw__pg_store_t *s, kw__pg_conn_t *c)
{
    /* Never hand on a connection inside a transaction (an error path that skipped its
     * ROLLBACK); a broken one is reset by the next checkout. */
    if (PQstatus(c->conn) == CONNECTION_OK && PQtransactionStatus(c->conn) != PQTRANS_IDLE)
        PQclear(PQexec(c->conn, "ROLLBACK"));
    pthread_mutex_lock(&s->mu);
    c->next_free = s->free_list;
    s->free_list = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Runs prepared statement `st` (preparing it on first use). KW_OK with *out set (a
 * PGresult the caller clears) or an error code (nothing to clear). */
int kw__pg_run(kw__pg_conn_t *c, int st, const kw__pg_params_t *p, PGresult **out)
{
    const pg_stmt_t *d = &stmts[st];
    if (!(c->prepared & (UINT64_C(1) << st))) {
        Oid types[KW__PG_MAX_PARAMS];
        int n = 0;
        for (const char *t = d->types; *t; t++)
            types[n++] = *t == 't'   ? KW__PG_OID_TEXT
                         : *t == 'i' ? KW__PG_OID_INT8
                         : *t == 'b' ? KW__PG_OID_BYTEA
                                     : KW__PG_OID_TEXTARR;
        PGresult *r = PQprepare(c->conn, d->name, d->sql, n, types);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            int rc = kw__pg_result_error(c->conn, r, d->name);
            PQclear(r);
            return rc;
        }
        PQclear(r);
        c->prepared |= UINT64_C(1) << st;
    }
    kw_assert(p->n == (int)strlen(d->types));
    PGresult *r = PQexecPrepared(c->conn, d->name, p->n, p->vals, p->lens, p->fmts, 1);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        int rc = r ? kw__pg_result_error(c->conn, r, d->name) : KW_ENOMEM;
        PQclear(r);
        return rc;
    }
    *out = r;
    return KW_OK;
}

/* Runs one statement outside a transaction on a pooled connection. When it fails because
 * the connection died (typically: the server restarted since it was last used), it is
 * retried once on a reset connection: autocommit statements either ran or did not. */
int kw__pg_query(kw__pg_store_t *s, int st, const kw__pg_params_t *p, PGresult **out)
{
    kw__pg_conn_t *c;
    int rc = pool_get(s, &c);
    if (rc != KW_OK)
        return rc;
    rc = kw__pg_run(c, st, p, out);
    if (rc == KW_EDB && PQstatus(c->conn) != CONNECTION_OK && kw__pg_conn_ensure(s, c) == KW_OK)
        rc = kw__pg_run(c, st, p, out);
    kw__pg_pool_put(s, c);
    return rc;
}

/* Simple-protocol command on c (BEGIN, COMMIT, ...); KW_OK or KW_EDB. */
int kw__pg_exec(kw__pg_conn_t *c, const char *sql)
{
    PGresult *r = PQexec(c->conn, sql);
    ExecStatusType es = PQresultStatus(r);
    int rc = es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK ? KW_OK
                                                             : kw__pg_result_error(c->conn, r, sql);
    PQclear(r);
    return rc;
}

/* Checks out a connection and starts a transaction on it, retrying once on a dead
 * connection (nothing has happened yet, so that is safe). */
int kw__pg_begin_on(kw__pg_store_t *s, const char *begin_sql, kw__pg_conn_t **out)
{
    kw__pg_conn_t *c;
    int rc = pool_get(s, &c);
    if (rc != KW_OK)
        return rc;
    rc = kw__pg_exec(c, begin_sql);
    if (rc == KW_EDB && PQstatus(c->conn) != CONNECTION_OK && kw__pg_conn_ensure(s, c) == KW_OK)
        rc = kw__pg_exec(c, begin_sql);
    if (rc != KW_OK) {
        kw__pg_pool_put(s, c);
        return rc;
    }
    *out = c;
    return KW_OK;
}

/* ---- open / close ---- */

/* Copies url without keyward's own query parameter pool=N (libpq refuses unknown ones);
 * *pool gets N (0 when absent). */
static int url_split(const char *url, char **out, long *pool)
{
    size_t len = strlen(url);
    char *u = kw_strndup(url, len);
    if (!u)
        return KW_ENOMEM;
    *pool = 0;
    char *q = strchr(u, '?');
    if (q) {
        char *w = q + 1, *r = q + 1;
        while (*r) {
            size_t plen = strcspn(r, "&");
            if (strncmp(r, "pool=", 5) == 0) {
                char *end;
                *pool = strtol(r + 5, &end, 10);
                if (end != r + plen || *pool < PG_POOL_MIN || *pool > PG_POOL_MAX) {
                    kw_free(u);
                    return KW_EINVAL;
                }
            } else {
                if (w != q + 1)
                    *w++ = '&';
                memmove(w, r, plen);
                w += plen;
            }
            r += plen;
            if (*r == '&')
                r++;
        }
        *w = '\0';
        if (w == q + 1)
            *q = '\0'; /* no parameter left */
    }
    *out = u;
    return KW_OK;
}

static const kw_store_ops_t pg_ops;

static void pg_close(kw_store_t *base)
{
    kw__pg_store_t *s = kw__pg_of(base);
    if (!s)
        return;
    for (size_t i = 0; i < s->n_conns; i++)
        if (s->conns[i].conn)
            PQfinish(s->conns[i].conn);
    if (s->listen)
        PQfinish(s->listen);
    kw_free(s->conns);
    kw_free(s->url);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->listen_mu);
    kw_free(s);
}

/* The pool size: the URL's pool=N (url_pool, 0 when absent), else env KEYWARD_PG_POOL,
 * else the caller's option, else 2 x online cores; the last two are clamped to 2..256,
 * the first two refused outside it (they are what an operator wrote). */
static int pool_size(long url_pool, const kw_store_opts_t *opts, size_t *out, kw_diag_t *diag)
{
    long pool = url_pool;
    if (pool == 0) {
        const char *env = getenv("KEYWARD_PG_POOL");
        if (env && *env) {
            char *end;
            pool = strtol(env, &end, 10);
            if (*end || pool < PG_POOL_MIN || pool > PG_POOL_MAX)
                return kw_diag_set(diag, KW_EINVAL, 0, 0, "KEYWARD_PG_POOL must be %d..%d",
                                   PG_POOL_MIN, PG_POOL_MAX);
        }
    }
    if (pool == 0 && opts->pool_size > 0)
        pool = opts->pool_size > PG_POOL_MAX ? PG_POOL_MAX : (long)opts->pool_size;
    if (pool == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        pool = cores > 0 ? 2 * cores : 4;
    }
    if (pool < PG_POOL_MIN)
        pool = PG_POOL_MIN;
    if (pool > PG_POOL_MAX)
        pool = PG_POOL_MAX;
    *out = (size_t)pool;
    return KW_OK;
}

int kw__store_pg_open(const char *url, const kw_store_opts_t *opts, kw_store_t **out,
                      kw_diag_t *diag)
{
    kw__pg_store_t *s = kw_calloc(1, sizeof(*s));
    if (!s)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    s->base.ops = &pg_ops;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->listen_mu, NULL);
    /* From here every failure goes to `fail`: pg_close frees whatever exists so far. */
    long url_pool = 0;
    int rc = url_split(url, &s->url, &url_pool);
    if (rc != KW_OK) {
        kw_diag_set(diag, rc, 0, 0, "PostgreSQL URL: pool must be %d..%d", PG_POOL_MIN,
                    PG_POOL_MAX);
        goto fail;
    }
    size_t n_conns = 0;
    rc = pool_size(url_pool, opts, &n_conns, diag);
    if (rc != KW_OK)
        goto fail;
    s->conns = kw_calloc(n_conns, sizeof(*s->conns));
    if (!s->conns) {
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
        goto fail;
    }
    s->n_conns = n_conns; /* pg_close walks conns[0 .. n_conns) */
    for (size_t i = s->n_conns; i-- > 0;) {
        s->conns[i].next_free = s->free_list;
        s->free_list = &s->conns[i];
    }
    kw__pg_conn_t *c;
    rc = pool_get(s, &c);
    if (rc != KW_OK) {
        const char *m = s->conns[0].conn ? PQerrorMessage(s->conns[0].conn) : "out of memory";
        kw_diag_set(diag, rc, 0, 0, "cannot connect to PostgreSQL: %.*s", (int)strcspn(m, "\n"), m);
        goto fail;
    }
    rc = kw__pg_migrate(c, diag);
    kw__pg_pool_put(s, c);
    if (rc != KW_OK)
        goto fail;
    kw_log(KW_LOG_INFO, KW_MODULE, "connected; pool of %zu connections", s->n_conns);
    *out = &s->base;
    return KW_OK;
fail:
    pg_close(&s->base);
    return rc;
}

static int pg_ping(kw_store_t *base)
{
    kw__pg_params_t p = {0};
    PGresult *r;
    int rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_REVISION, &p, &r);
    if (rc == KW_OK)
        PQclear(r);
    return rc;
}

/* ---- metadata ---- */

static int result_bytes(PGresult *r, kw_arena_t *a, char **val, size_t *len)
{
    if (PQntuples(r) == 0)
        return KW_ENOTFOUND;
    kw_str_t v = kw__pg_col_str(r, 0, 0);
    char *d = kw_arena_strndup(a, v.ptr, v.len);
    if (!d)
        return KW_ENOMEM;
    *val = d;
    if (len)
        *len = v.len;
    return KW_OK;
}

static int pg_meta_get(kw_store_t *base, const char *key, kw_arena_t *a, char **val, size_t *len)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, key);
    if (p.bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    /* "revision" reads as in SQLite (where it is a meta row): the decimal counter. */
    int rc = kw__pg_query(
        kw__pg_of(base),
        strcmp(key, "revision") == 0 ? KW__PG_ST_REVISION_TEXT : KW__PG_ST_META_GET, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = result_bytes(r, a, val, len);
    PQclear(r);
    return rc;
}

static int pg_meta_init(kw_store_t *base, const char *key, kw_str_t want, kw_arena_t *a, char **val,
                        size_t *len)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, key);
    kw__pg_pp_bytes(&p, (const uint8_t *)want.ptr, want.len);
    if (p.bad_text)
        return KW_EINVAL;
    /* Two statements on purpose: the INSERT waits for a concurrent first writer and then
     * does nothing; only a new statement's snapshot sees that writer's row. */
    PGresult *r;
    int rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_META_INIT, &p, &r);
    if (rc != KW_OK)
        return rc;
    PQclear(r);
    rc = pg_meta_get(base, key, a, val, len);
    return rc == KW_ENOTFOUND ? KW_EDB : rc; /* cannot be gone: meta rows are never deleted */
}

static int pg_meta_set(kw_store_t *base, const char *key, kw_str_t val)
{
    kw__pg_params_t p = {0};
    kw__pg_pp_cstr(&p, key);
    kw__pg_pp_bytes(&p, (const uint8_t *)val.ptr, val.len);
    if (p.bad_text)
        return KW_EINVAL;
    PGresult *r;
    int rc = kw__pg_query(kw__pg_of(base), KW__PG_ST_META_SET, &p, &r);
    if (rc == KW_OK)
        PQclear(r);
    return rc;
}

/* ---- the ops table ---- */

static const kw_store_ops_t pg_ops = {
    .name = "postgres",
    .close = pg_close,
    .ping = pg_ping,
    .meta_get = pg_meta_get,
    .meta_init = pg_meta_init,
    .meta_set = pg_meta_set,
    .load_relationships = kw__pg_load_relationships,
    .revision = kw__pg_revision,
    .agent_get = kw__pg_agent_get,
    .agent_get_by_name = kw__pg_agent_get_by_name,
    .agents_by_ids = kw__pg_agents_by_ids,
    .agents_present = kw__pg_agents_present,
    .key_get = kw__pg_key_get,
    .key_get_by_name = kw__pg_key_get_by_name,
    .key_find_by_hash = kw__pg_key_find_by_hash,
    .keys_of_agent = kw__pg_keys_of_agent,
    .keys_by_ids = kw__pg_keys_by_ids,
    .keys_touch = kw__pg_keys_touch,
    .key_auth = kw__pg_key_auth,
    .tx_begin = kw__pg_tx_begin,
    .tx_commit = kw__pg_tx_commit,
    .tx_rollback = kw__pg_tx_rollback,
    .tx_agent_insert = kw__pg_tx_agent_insert,
    .tx_agent_delete = kw__pg_tx_agent_delete,
    .tx_key_insert = kw__pg_tx_key_insert,
    .tx_key_delete = kw__pg_tx_key_delete,
    .tx_key_rotate = kw__pg_tx_key_rotate,
    .tx_savepoint = kw__pg_tx_savepoint,
    .tx_rollback_to = kw__pg_tx_rollback_to,
    .tx_release = kw__pg_tx_release,
    .tx_rel_write = kw__pg_tx_rel_write,
    .tx_rel_delete_matching = kw__pg_tx_rel_delete_matching,
    .next_expiry = kw__pg_next_expiry,
    .tx_rel_delete_expired = kw__pg_tx_rel_delete_expired,
    .changes_since = kw__pg_changes_since,
    .prune_changelog = kw__pg_prune_changelog,
    .wait_change = kw__pg_wait_change,
    .audit = &kw__pg_audit_ops,
    .watch_changes = kw__pg_changes_since,
    .export_relationships = kw__pg_export_relationships,
};
