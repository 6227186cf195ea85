/*
 * store/pg.c - the PostgreSQL backend (libpq): several keyward instances over one database.
 *
 * Connections: a fixed-size pool (URL parameter pool=N, else env KEYWARD_PG_POOL, else
 * 2 x online cores; 2..256) with a mutex+condvar free list. Connections are made lazily;
 * a broken one (PQstatus != CONNECTION_OK) is reset on checkout, and a statement that
 * fails because the connection died (a server restart) is retried once on a fresh
 * connection when nothing of a transaction was lost by it. Every connection gets
 * connect_timeout=3, TCP keepalives and tcp_user_timeout, statement_timeout=5s, so an
 * outage surfaces as KW_EDB within seconds, never as a hang.
 *
 * Statements: prepared once per connection on first use (a bit per statement); all
 * parameters and results travel in binary format, so text is passed by length (no NUL
 * needed) and BIGINT/BYTEA need no parsing.
 *
 * Transactions: READ COMMITTED, and one global write order (tag-kw-store-write-order).
 * Every write transaction's FIRST statement, right after BEGIN (pg_tx_begin), is
 *     UPDATE revision SET value = value + 1 RETURNING value   (+ pg_notify in the same)
 * and its last ones, at commit, are
 *     INSERT INTO changelog ... (the recorded changes at that revision)
 *     COMMIT
 * So the single revision row is locked from begin to COMMIT (or ROLLBACK, which undoes
 * the bump): keyward's write transactions, from every instance, run one at a time. When
 * the UPDATE returns R, the holder of R-1 has committed (a READ COMMITTED UPDATE that
 * waited for the row re-reads the committed version), and that commit is visible to
 * every snapshot taken from then on (PostgreSQL leaves the proc array before it releases
 * locks: xact.c, CommitTransaction). Hence:
 *   - revisions are unique, gapless and in commit order, and a follower that has seen R
 *     in the changelog has every revision below it;
 *   - once kw_store_tx_begin returns, the committed state (on any connection) is exactly
 *     revision R-1 and stays so until this transaction ends: what the caller reads or
 *     checks there (the API's in-memory preconditions, after catching up to R-1) still
 *     holds when it commits;
 *   - no deadlock between keyward transactions: each takes the revision lock before any
 *     other lock, and holds no other lock while waiting for it.
 * The notification queued by pg_notify is delivered only if the transaction commits.
 * Unique constraints still arbitrate (for writers outside keyward, and as a second line):
 * inserts are `ON CONFLICT DO NOTHING RETURNING`, so a duplicate (agent, name, type) gets
 * no row: KW_ECONFLICT, and the transaction stays usable. Deletes are by id with
 * `DELETE ... RETURNING`, so a row replaced after a check (new id) is never removed.
 *
 * Followers: kw_store_changes_since reads the changelog in (revision, seq) order from a
 * REPEATABLE READ snapshot; kw_store_wait_change blocks on LISTEN keyward_changes on its
 * own connection (reconnecting as needed).
 *
 * Logging: only SQLSTATE and the primary message of a server error (the DETAIL line can
 * quote key values, e.g. a hash), never parameters.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "base/log.h"
#include "pg_int.h"
#include "store_int.h"

#define KW_MODULE "store.pg"

/* Type OIDs (catalog/pg_type.h is a server header; these values are fixed forever). */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25
#define OID_TEXTARR 1009

#define PG_POOL_MAX 256
/* A write transaction holds one connection while the API catches its graph up on another
 * (v1 preconditions, tag-kw-store-write-order): with one connection those writes would
 * wait PG_CHECKOUT_WAIT_MS for themselves and fail. */
#define PG_POOL_MIN 2
#define PG_CHECKOUT_WAIT_MS 10000 /* all connections busy this long: KW_EDB */
#define PG_FETCH_ROWS "10000"
#define PG_CHANGELOG_CHUNK 1000 /* rows per multi-row INSERT (9 params each) */
#define PG_MAX_PARAMS 12

/* ---- prepared statements ---- */

enum {
    ST_META_GET,
    ST_META_INIT,
    ST_META_SET,
    ST_REVISION,
    ST_REVISION_TEXT,
    ST_AGENT_GET,
    ST_AGENT_BY_NAME,
    ST_AGENTS_BY_IDS,
    ST_KEY_GET,
    ST_KEY_BY_NAME,
    ST_KEY_BY_HASH,
    ST_KEYS_OF_AGENT,
    ST_KEYS_BY_IDS,
    ST_AGENT_INSERT,
    ST_AGENT_LOCK,
    ST_REL_DEL_RESOURCE_KEYS,
    ST_REL_DEL_SUBJECT_KEYS,
    ST_REL_DEL_RESOURCE,
    ST_REL_DEL_SUBJECT,
    ST_AGENT_KEYS_DELETE,
    ST_AGENT_DELETE,
    ST_KEY_INSERT,
    ST_AGENT_EXISTS,
    ST_KEY_DELETE,
    ST_REL_INSERT,
    ST_REL_DELETE,
    ST_TX_REVISION,
    ST_CHANGES,
    ST_CHANGES_AT,
    ST_N
};

#define AGENT_COLS "id, name, description, account_id, created_at_us"
#define KEY_COLS "id, agent_id, name, type, created_at_us, hash, secret_enc"
#define REL_COLS "resource_type, resource_id, relation, subject_type, subject_id, subject_relation"
#define REL_ORDER "ORDER BY 1, 2, 3, 4, 5, 6"

/* Parameter types: one letter per parameter (t text, i int8, b bytea, a text[]). */
typedef struct pg_stmt {
    const char *name;
    const char *types;
    const char *sql;
} pg_stmt_t;

static const pg_stmt_t stmts[ST_N] = {
    [ST_META_GET] = {"kw_meta_get", "t", "SELECT value FROM meta WHERE key = $1"},
    [ST_META_INIT] = {"kw_meta_init", "tb",
                      "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING"},
    [ST_META_SET] = {"kw_meta_set", "tb",
                     "INSERT INTO meta (key, value) VALUES ($1, $2) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value"},
    [ST_REVISION] = {"kw_revision", "", "SELECT value FROM revision"},
    [ST_REVISION_TEXT] = {"kw_revision_text", "t",
                          "SELECT value::text::bytea FROM revision WHERE $1 = 'revision'"},
    [ST_AGENT_GET] = {"kw_agent_get", "t", "SELECT " AGENT_COLS " FROM agents WHERE id = $1"},
    [ST_AGENT_BY_NAME] = {"kw_agent_by_name", "tt",
                          "SELECT " AGENT_COLS " FROM agents WHERE account_id = $1 AND name = $2"},
    [ST_AGENTS_BY_IDS] = {"kw_agents_by_ids", "a",
                          "SELECT " AGENT_COLS " FROM agents WHERE id = ANY ($1) "
                          "ORDER BY created_at_us, id"},
    [ST_KEY_GET] = {"kw_key_get", "t", "SELECT " KEY_COLS " FROM api_keys WHERE id = $1"},
    [ST_KEY_BY_NAME] = {"kw_key_by_name", "ttt",
                        "SELECT " KEY_COLS " FROM api_keys "
                        "WHERE agent_id = $1 AND name = $2 AND type = $3"},
    [ST_KEY_BY_HASH] = {"kw_key_by_hash", "b", "SELECT " KEY_COLS " FROM api_keys WHERE hash = $1"},
    [ST_KEYS_OF_AGENT] = {"kw_keys_of_agent", "titi",
                          "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = $1 "
                          "AND (created_at_us, id) > ($2, $3) "
                          "ORDER BY created_at_us, id LIMIT $4"},
    [ST_KEYS_BY_IDS] = {"kw_keys_by_ids", "ta",
                        "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = $1 "
                        "AND id = ANY ($2) ORDER BY created_at_us, id"},
    [ST_AGENT_INSERT] = {"kw_agent_insert", "tttti",
                         "INSERT INTO agents (" AGENT_COLS ") VALUES ($1, $2, $3, $4, $5) "
                         "ON CONFLICT DO NOTHING RETURNING 1"},
    /* Locks the agent row: a concurrent key insert for it (its foreign key check takes
     * a share lock on the row) waits for the delete and then fails. */
    [ST_AGENT_LOCK] = {"kw_agent_lock", "t", "SELECT 1 FROM agents WHERE id = $1 FOR UPDATE"},
    /* Relationship deletes, each RETURNING what it removed in a stable order. The groups
     * run in the order SQLite's backend runs them (tag-kw-store-cascade-order): an agent's
     * keys as resources, as subjects, then the object itself as resource, as subject. */
    [ST_REL_DEL_RESOURCE_KEYS] =
        {"kw_rel_del_resource_keys", "tt",
         "WITH d AS (DELETE FROM relationships WHERE resource_type = $2 "
         "AND resource_id IN (SELECT id FROM api_keys WHERE agent_id = $1) "
         "RETURNING " REL_COLS ") SELECT * FROM d " REL_ORDER},
    [ST_REL_DEL_SUBJECT_KEYS] = {"kw_rel_del_subject_keys", "tt",
                                 "WITH d AS (DELETE FROM relationships WHERE subject_type = $2 "
                                 "AND subject_id IN (SELECT id FROM api_keys WHERE agent_id = $1) "
                                 "RETURNING " REL_COLS ") SELECT * FROM d " REL_ORDER},
    [ST_REL_DEL_RESOURCE] = {"kw_rel_del_resource", "tt",
                             "WITH d AS (DELETE FROM relationships WHERE resource_type = $1 "
                             "AND resource_id = $2 RETURNING " REL_COLS
                             ") SELECT * FROM d " REL_ORDER},
    [ST_REL_DEL_SUBJECT] = {"kw_rel_del_subject", "tt",
                            "WITH d AS (DELETE FROM relationships WHERE subject_type = $1 "
                            "AND subject_id = $2 RETURNING " REL_COLS
                            ") SELECT * FROM d " REL_ORDER},
    [ST_AGENT_KEYS_DELETE] = {"kw_agent_keys_delete", "t",
                              "DELETE FROM api_keys WHERE agent_id = $1"},
    [ST_AGENT_DELETE] = {"kw_agent_delete", "t", "DELETE FROM agents WHERE id = $1 RETURNING 1"},
    /* The agent row is share-locked first, so a missing (or concurrently deleted) agent
     * inserts nothing instead of raising a foreign key error, which would abort the whole
     * transaction where SQLite's failed statement leaves it usable. */
    [ST_KEY_INSERT] = {"kw_key_insert", "ttttibb",
                       "INSERT INTO api_keys (" KEY_COLS ") "
                       "SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS "
                       "(SELECT 1 FROM agents WHERE id = $2 FOR KEY SHARE) "
                       "ON CONFLICT DO NOTHING RETURNING 1"},
    [ST_AGENT_EXISTS] = {"kw_agent_exists", "t", "SELECT 1 FROM agents WHERE id = $1"},
    [ST_KEY_DELETE] = {"kw_key_delete", "t", "DELETE FROM api_keys WHERE id = $1 RETURNING 1"},
    [ST_REL_INSERT] = {"kw_rel_insert", "tttttt",
                       "INSERT INTO relationships (" REL_COLS ") VALUES ($1, $2, $3, $4, $5, $6) "
                       "ON CONFLICT DO NOTHING RETURNING 1"},
    [ST_REL_DELETE] = {"kw_rel_delete", "tttttt",
                       "DELETE FROM relationships WHERE resource_type = $1 AND resource_id = $2 "
                       "AND relation = $3 AND subject_type = $4 AND subject_id = $5 "
                       "AND subject_relation = $6 RETURNING 1"},
    /* The first statement of every write transaction (see the file comment): takes the
     * global write order; the notification is delivered only if the transaction commits. */
    [ST_TX_REVISION] = {"kw_tx_revision", "",
                        "WITH r AS (UPDATE revision SET value = value + 1 RETURNING value) "
                        "SELECT value, pg_notify('" KW__PG_CHANNEL "', value::text) FROM r"},
    [ST_CHANGES] = {"kw_changes", "iii",
                    "SELECT revision, op, " REL_COLS " FROM changelog "
                    "WHERE revision > $1 AND revision <= $2 ORDER BY revision, seq LIMIT $3"},
    [ST_CHANGES_AT] = {"kw_changes_at", "i",
                       "SELECT revision, op, " REL_COLS " FROM changelog "
                       "WHERE revision = $1 ORDER BY seq"},
};

/* ---- handles ---- */

typedef struct pg_conn {
    PGconn *conn;
    uint32_t prepared; /* bit ST_x: statement x is prepared on this connection */
    struct pg_conn *next_free;
} pg_conn_t;

typedef struct pg_store {
    struct kw_store base; /* first: kw_store_t * casts to pg_store_t * */
    char *url;            /* the URL handed to libpq (keyward's own parameters removed) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pg_conn_t *conns;
    size_t n_conns;
    pg_conn_t *free_list;
    /* The LISTEN connection of kw_store_wait_change (one follower at a time). */
    pthread_mutex_t listen_mu;
    PGconn *listen;
} pg_store_t;

typedef struct pg_tx {
    struct kw_store_tx base; /* first */
    pg_conn_t *c;
    kw_revision_t rev; /* this transaction's revision, taken (and locked) by pg_tx_begin */
} pg_tx_t;

static pg_store_t *to_pg(kw_store_t *s)
{
    return (pg_store_t *)s;
}

/* ---- parameters ---- */

typedef struct pg_params {
    int n;
    bool bad_text; /* a text parameter was not valid UTF-8 (or held a NUL) */
    const char *vals[PG_MAX_PARAMS];
    int lens[PG_MAX_PARAMS];
    int fmts[PG_MAX_PARAMS];
    unsigned char i64[PG_MAX_PARAMS][8];
} pg_params_t;

/* PostgreSQL text cannot hold NUL and must be valid UTF-8 (the test clusters and any
 * sane deployment are UTF8). A value that is not can never be stored, so lookups by it
 * answer KW_ENOTFOUND and inserts KW_EINVAL instead of a database error (503). */
static bool utf8_ok(kw_str_t s)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    size_t i = 0;
    while (i < s.len) {
        unsigned c = p[i];
        size_t n;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (s.len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static void pp_text(pg_params_t *p, kw_str_t s)
{
    kw_assert(p->n < PG_MAX_PARAMS);
    if (!utf8_ok(s))
        p->bad_text = true;
    p->vals[p->n] = s.ptr ? s.ptr : ""; /* NULL would mean SQL NULL */
    p->lens[p->n] = (int)s.len;
    p->fmts[p->n] = 1;
    p->n++;
}

static void pp_cstr(pg_params_t *p, const char *s)
{
    pp_text(p, kw_str_c(s));
}

static void pp_null(pg_params_t *p)
{
    kw_assert(p->n < PG_MAX_PARAMS);
    p->vals[p->n] = NULL;
    p->lens[p->n] = 0;
    p->fmts[p->n] = 1;
    p->n++;
}

static void pp_bytes(pg_params_t *p, const uint8_t *b, size_t len)
{
    kw_assert(p->n < PG_MAX_PARAMS);
    p->vals[p->n] = len ? (const char *)b : "";
    p->lens[p->n] = (int)len;
    p->fmts[p->n] = 1;
    p->n++;
}

static void pp_i64(pg_params_t *p, int64_t v)
{
    kw_assert(p->n < PG_MAX_PARAMS);
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
static int pp_text_array(pg_params_t *p, kw_arena_t *a, const kw_str_t *ids, size_t n)
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
    kw_assert(p->n < PG_MAX_PARAMS);
    p->vals[p->n] = buf;
    p->lens[p->n] = 0;
    p->fmts[p->n] = 0;
    p->n++;
    return KW_OK;
}

/* ---- results ---- */

static int64_t col_i64(const PGresult *r, int row, int col)
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

static kw_str_t col_str(const PGresult *r, int row, int col)
{
    return (kw_str_t){PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col)};
}

/* A copy in `a` (NUL-terminated), or NULL for SQL NULL; *rc = KW_ENOMEM on failure. */
static char *col_dup(const PGresult *r, int row, int col, kw_arena_t *a, int *rc)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    kw_str_t s = col_str(r, row, col);
    char *d = kw_arena_strndup(a, s.ptr, s.len);
    if (!d)
        *rc = KW_ENOMEM;
    return d;
}

static void col_id(const PGresult *r, int row, int col, char out[37])
{
    kw_str_t s = col_str(r, row, col);
    size_t n = s.len < KW__STORE_ID_MAX ? s.len : KW__STORE_ID_MAX;
    memcpy(out, s.ptr, n);
    out[n] = '\0';
}

static int row_agent(const PGresult *r, int row, kw_arena_t *a, kw_agent_t *out)
{
    int rc = KW_OK;
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    col_id(r, row, 0, ag.id);
    ag.name = col_dup(r, row, 1, a, &rc);
    ag.description = col_dup(r, row, 2, a, &rc);
    ag.account_id = col_dup(r, row, 3, a, &rc);
    ag.created_at_us = col_i64(r, row, 4);
    if (rc == KW_OK)
        *out = ag;
    return rc;
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
    k.created_at_us = col_i64(r, row, 4);
    if (!PQgetisnull(r, row, 5) && PQgetlength(r, row, 5) > 0) {
        k.hash = (const uint8_t *)col_dup(r, row, 5, a, &rc);
        k.hash_len = (size_t)PQgetlength(r, row, 5);
    }
    if (!PQgetisnull(r, row, 6) && PQgetlength(r, row, 6) > 0) {
        k.secret_enc = (const uint8_t *)col_dup(r, row, 6, a, &rc);
        k.secret_enc_len = (size_t)PQgetlength(r, row, 6);
    }
    if (rc == KW_OK)
        *out = k;
    return rc;
}

/* The six relationship columns starting at `col`, as slices into the result. */
static void row_rel(const PGresult *r, int row, int col, kw_rel_t *rel)
{
    rel->resource.type = col_str(r, row, col);
    rel->resource.id = col_str(r, row, col + 1);
    rel->relation = col_str(r, row, col + 2);
    rel->subject.type = col_str(r, row, col + 3);
    rel->subject.id = col_str(r, row, col + 4);
    rel->subject.relation = col_str(r, row, col + 5);
}

/* ---- errors ---- */

/* Maps a failed result to a code and logs it (SQLSTATE + primary message only). */
static int result_error(PGconn *conn, const PGresult *r, const char *what)
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
static int conn_setup(pg_conn_t *c)
{
    c->prepared = 0;
    PQsetNoticeProcessor(c->conn, ignore_notice, NULL);
    PGresult *r = PQexec(c->conn, "SET statement_timeout = '5s'; SET lock_timeout = '5s'; "
                                  "SET idle_in_transaction_session_timeout = '60s'");
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? KW_OK : result_error(c->conn, r, "setup");
    PQclear(r);
    return rc;
}

/* Opens a connection with keyward's defaults; the URL's own settings override them
 * (libpq applies later keywords over earlier ones, and expands the dbname URL in place). */
static PGconn *conn_open(const char *url)
{
    static const char *const keys[] = {
        "connect_timeout",     "keepalives",       "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "application_name",    "dbname",           NULL};
    const char *vals[] = {"3", "1", "5", "2", "2", "5000", "keyward", url, NULL};
    return PQconnectdbParams(keys, vals, 1);
}

/* Makes c usable: connects it the first time, resets it when broken. */
static int conn_ensure(pg_store_t *s, pg_conn_t *c)
{
    if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
        return KW_OK;
    if (!c->conn) {
        c->conn = conn_open(s->url);
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
    return conn_setup(c);
}

static int pool_get(pg_store_t *s, pg_conn_t **out)
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
    pg_conn_t *c = s->free_list;
    s->free_list = c->next_free;
    pthread_mutex_unlock(&s->mu);
    int rc = conn_ensure(s, c);
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

static void pool_put(pg_store_t *s, pg_conn_t *c)
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
static int run(pg_conn_t *c, int st, const pg_params_t *p, PGresult **out)
{
    const pg_stmt_t *d = &stmts[st];
    if (!(c->prepared & (1u << st))) {
        Oid types[PG_MAX_PARAMS];
        int n = 0;
        for (const char *t = d->types; *t; t++)
            types[n++] = *t == 't'   ? OID_TEXT
                         : *t == 'i' ? OID_INT8
                         : *t == 'b' ? OID_BYTEA
                                     : OID_TEXTARR;
        PGresult *r = PQprepare(c->conn, d->name, d->sql, n, types);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            int rc = result_error(c->conn, r, d->name);
            PQclear(r);
            return rc;
        }
        PQclear(r);
        c->prepared |= 1u << st;
    }
    kw_assert(p->n == (int)strlen(d->types));
    PGresult *r = PQexecPrepared(c->conn, d->name, p->n, p->vals, p->lens, p->fmts, 1);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        int rc = r ? result_error(c->conn, r, d->name) : KW_ENOMEM;
        PQclear(r);
        return rc;
    }
    *out = r;
    return KW_OK;
}

/* Runs one statement outside a transaction on a pooled connection. When it fails because
 * the connection died (typically: the server restarted since it was last used), it is
 * retried once on a reset connection: autocommit statements either ran or did not. */
static int query(pg_store_t *s, int st, const pg_params_t *p, PGresult **out)
{
    pg_conn_t *c;
    int rc = pool_get(s, &c);
    if (rc != KW_OK)
        return rc;
    rc = run(c, st, p, out);
    if (rc == KW_EDB && PQstatus(c->conn) != CONNECTION_OK && conn_ensure(s, c) == KW_OK)
        rc = run(c, st, p, out);
    pool_put(s, c);
    return rc;
}

/* Simple-protocol command on c (BEGIN, COMMIT, ...); KW_OK or KW_EDB. */
static int exec_cmd(pg_conn_t *c, const char *sql)
{
    PGresult *r = PQexec(c->conn, sql);
    ExecStatusType es = PQresultStatus(r);
    int rc =
        es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK ? KW_OK : result_error(c->conn, r, sql);
    PQclear(r);
    return rc;
}

/* Checks out a connection and starts a transaction on it, retrying once on a dead
 * connection (nothing has happened yet, so that is safe). */
static int begin_on(pg_store_t *s, const char *begin_sql, pg_conn_t **out)
{
    pg_conn_t *c;
    int rc = pool_get(s, &c);
    if (rc != KW_OK)
        return rc;
    rc = exec_cmd(c, begin_sql);
    if (rc == KW_EDB && PQstatus(c->conn) != CONNECTION_OK && conn_ensure(s, c) == KW_OK)
        rc = exec_cmd(c, begin_sql);
    if (rc != KW_OK) {
        pool_put(s, c);
        return rc;
    }
    *out = c;
    return KW_OK;
}

/* ---- migrations ---- */

static int migrate(pg_conn_t *c, kw_diag_t *diag)
{
    int rc = exec_cmd(c, "BEGIN");
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "PostgreSQL: cannot start the migration");
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%ld)", KW__PG_MIGRATION_LOCK);
    rc = exec_cmd(c, sql);
    if (rc == KW_OK)
        rc = exec_cmd(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())");
    long have = 0;
    if (rc == KW_OK) {
        PGresult *r = PQexec(c->conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            have = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        else
            rc = result_error(c->conn, r, "schema_migrations");
        PQclear(r);
    }
    if (rc != KW_OK) {
        PQclear(PQexec(c->conn, "ROLLBACK"));
        return kw_diag_set(diag, rc, 0, 0, "PostgreSQL: cannot read the schema version");
    }
    long latest = (long)kw__pg_migrations[kw__pg_migrations_n - 1].version;
    if (have > latest) {
        PQclear(PQexec(c->conn, "ROLLBACK"));
        return kw_diag_set(diag, KW_EDB, 0, 0,
                           "PostgreSQL database has schema version %ld, newer than this "
                           "keyward's %ld: upgrade keyward",
                           have, latest);
    }
    for (size_t i = 0; i < kw__pg_migrations_n && rc == KW_OK; i++) {
        const kw_pg_migration_t *m = &kw__pg_migrations[i];
        if (m->version <= have)
            continue;
        rc = exec_cmd(c, m->sql);
        if (rc == KW_OK) {
            snprintf(sql, sizeof(sql), "INSERT INTO schema_migrations (version) VALUES (%d)",
                     m->version);
            rc = exec_cmd(c, sql);
        }
        if (rc == KW_OK)
            kw_log(KW_LOG_INFO, KW_MODULE, "applied migration %d", m->version);
    }
    if (rc == KW_OK)
        rc = exec_cmd(c, "COMMIT");
    if (rc != KW_OK) {
        PQclear(PQexec(c->conn, "ROLLBACK"));
        return kw_diag_set(diag, rc, 0, 0, "PostgreSQL: migration failed (see the log)");
    }
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
    pg_store_t *s = to_pg(base);
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

int kw__store_pg_open(const char *url, kw_store_t **out, kw_diag_t *diag)
{
    pg_store_t *s = kw_calloc(1, sizeof(*s));
    if (!s)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    s->base.ops = &pg_ops;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->listen_mu, NULL);
    long pool = 0;
    int rc = url_split(url, &s->url, &pool);
    if (rc != KW_OK) {
        pg_close(&s->base);
        return kw_diag_set(diag, rc, 0, 0, "PostgreSQL URL: pool must be %d..%d", PG_POOL_MIN,
                           PG_POOL_MAX);
    }
    if (pool == 0) {
        const char *env = getenv("KEYWARD_PG_POOL");
        if (env && *env) {
            char *end;
            pool = strtol(env, &end, 10);
            if (*end || pool < PG_POOL_MIN || pool > PG_POOL_MAX) {
                pg_close(&s->base);
                return kw_diag_set(diag, KW_EINVAL, 0, 0, "KEYWARD_PG_POOL must be %d..%d",
                                   PG_POOL_MIN, PG_POOL_MAX);
            }
        }
    }
    if (pool == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        pool = cores > 0 ? 2 * cores : 4;
        if (pool < PG_POOL_MIN)
            pool = PG_POOL_MIN;
        if (pool > PG_POOL_MAX)
            pool = PG_POOL_MAX;
    }
    s->conns = kw_calloc((size_t)pool, sizeof(*s->conns));
    if (!s->conns) {
        pg_close(&s->base);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    }
    s->n_conns = (size_t)pool;
    for (size_t i = s->n_conns; i-- > 0;) {
        s->conns[i].next_free = s->free_list;
        s->free_list = &s->conns[i];
    }
    pg_conn_t *c;
    rc = pool_get(s, &c);
    if (rc != KW_OK) {
        const char *m = s->conns[0].conn ? PQerrorMessage(s->conns[0].conn) : "out of memory";
        kw_diag_set(diag, rc, 0, 0, "cannot connect to PostgreSQL: %.*s", (int)strcspn(m, "\n"), m);
        pg_close(&s->base);
        return rc;
    }
    rc = migrate(c, diag);
    pool_put(s, c);
    if (rc != KW_OK) {
        pg_close(&s->base);
        return rc;
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "connected; pool of %zu connections", s->n_conns);
    *out = &s->base;
    return KW_OK;
}

static int pg_ping(kw_store_t *base)
{
    pg_params_t p = {0};
    PGresult *r;
    int rc = query(to_pg(base), ST_REVISION, &p, &r);
    if (rc == KW_OK)
        PQclear(r);
    return rc;
}

/* ---- metadata ---- */

static int result_bytes(PGresult *r, kw_arena_t *a, char **val, size_t *len)
{
    if (PQntuples(r) == 0)
        return KW_ENOTFOUND;
    kw_str_t v = col_str(r, 0, 0);
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
    pg_params_t p = {0};
    pp_cstr(&p, key);
    if (p.bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    /* "revision" reads as in SQLite (where it is a meta row): the decimal counter. */
    int rc =
        query(to_pg(base), strcmp(key, "revision") == 0 ? ST_REVISION_TEXT : ST_META_GET, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = result_bytes(r, a, val, len);
    PQclear(r);
    return rc;
}

static int pg_meta_init(kw_store_t *base, const char *key, kw_str_t want, kw_arena_t *a, char **val,
                        size_t *len)
{
    pg_params_t p = {0};
    pp_cstr(&p, key);
    pp_bytes(&p, (const uint8_t *)want.ptr, want.len);
    if (p.bad_text)
        return KW_EINVAL;
    /* Two statements on purpose: the INSERT waits for a concurrent first writer and then
     * does nothing; only a new statement's snapshot sees that writer's row. */
    PGresult *r;
    int rc = query(to_pg(base), ST_META_INIT, &p, &r);
    if (rc != KW_OK)
        return rc;
    PQclear(r);
    rc = pg_meta_get(base, key, a, val, len);
    return rc == KW_ENOTFOUND ? KW_EDB : rc; /* cannot be gone: meta rows are never deleted */
}

static int pg_meta_set(kw_store_t *base, const char *key, kw_str_t val)
{
    pg_params_t p = {0};
    pp_cstr(&p, key);
    pp_bytes(&p, (const uint8_t *)val.ptr, val.len);
    if (p.bad_text)
        return KW_EINVAL;
    PGresult *r;
    int rc = query(to_pg(base), ST_META_SET, &p, &r);
    if (rc == KW_OK)
        PQclear(r);
    return rc;
}

/* ---- relationships at startup, revision ---- */

static int read_revision(pg_conn_t *c, kw_revision_t *rev)
{
    pg_params_t p = {0};
    PGresult *r;
    int rc = run(c, ST_REVISION, &p, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) == 1)
        *rev = (kw_revision_t)col_i64(r, 0, 0);
    else
        rc = KW_EDB;
    PQclear(r);
    return rc;
}

static int pg_revision(kw_store_t *base, kw_revision_t *rev)
{
    pg_params_t p = {0};
    PGresult *r;
    int rc = query(to_pg(base), ST_REVISION, &p, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) == 1)
        *rev = (kw_revision_t)col_i64(r, 0, 0);
    else
        rc = KW_EDB;
    PQclear(r);
    return rc;
}

#define SNAPSHOT_BEGIN "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

static int pg_load_relationships(kw_store_t *base, kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    pg_store_t *s = to_pg(base);
    pg_conn_t *c;
    int rc = begin_on(s, SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return rc;
    kw_revision_t at = 0;
    rc = read_revision(c, &at);
    if (rc == KW_OK)
        rc = exec_cmd(c, "DECLARE kw_load NO SCROLL CURSOR FOR SELECT " REL_COLS
                         " FROM relationships");
    while (rc == KW_OK) {
        PGresult *r = PQexecParams(c->conn, "FETCH FORWARD " PG_FETCH_ROWS " FROM kw_load", 0, NULL,
                                   NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = r ? result_error(c->conn, r, "load relationships") : KW_ENOMEM;
            PQclear(r);
            break;
        }
        int n = PQntuples(r);
        for (int i = 0; i < n && rc == KW_OK; i++) {
            kw_rel_t rel;
            row_rel(r, i, 0, &rel);
            rc = cb(&rel, ud);
        }
        PQclear(r);
        if (n == 0)
            break;
    }
    if (rc == KW_OK)
        rc = exec_cmd(c, "COMMIT");
    pool_put(s, c); /* rolls back when still inside the transaction */
    if (rc == KW_OK)
        *rev = at;
    return rc;
}

/* ---- reads ---- */

static int one_agent(pg_store_t *s, int st, const pg_params_t *p, kw_arena_t *a, kw_agent_t *out)
{
    if (p->bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = query(s, st, p, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) == 0 ? KW_ENOTFOUND : row_agent(r, 0, a, out);
    PQclear(r);
    return rc;
}

static int one_key(pg_store_t *s, int st, const pg_params_t *p, kw_arena_t *a, kw_apikey_t *out)
{
    if (p->bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = query(s, st, p, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) == 0 ? KW_ENOTFOUND : row_key(r, 0, a, out);
    PQclear(r);
    return rc;
}

static int pg_agent_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_agent_t *out)
{
    pg_params_t p = {0};
    pp_text(&p, id);
    return one_agent(to_pg(base), ST_AGENT_GET, &p, a, out);
}

static int pg_agent_get_by_name(kw_store_t *base, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                                kw_agent_t *out)
{
    pg_params_t p = {0};
    pp_text(&p, account_id);
    pp_text(&p, name);
    return one_agent(to_pg(base), ST_AGENT_BY_NAME, &p, a, out);
}

static int pg_agents_by_ids(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                            kw_agent_t **out, size_t *n_out)
{
    pg_params_t p = {0};
    int rc = pp_text_array(&p, a, ids, n);
    if (rc != KW_OK)
        return rc;
    PGresult *r;
    rc = query(to_pg(base), ST_AGENTS_BY_IDS, &p, &r);
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

static int pg_key_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_apikey_t *out)
{
    pg_params_t p = {0};
    pp_text(&p, id);
    return one_key(to_pg(base), ST_KEY_GET, &p, a, out);
}

static int pg_key_get_by_name(kw_store_t *base, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                              kw_arena_t *a, kw_apikey_t *out)
{
    pg_params_t p = {0};
    pp_text(&p, agent_id);
    pp_text(&p, name);
    pp_text(&p, type);
    return one_key(to_pg(base), ST_KEY_BY_NAME, &p, a, out);
}

static int pg_key_find_by_hash(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                               kw_apikey_t *out)
{
    if (len == 0)
        return KW_ENOTFOUND;
    pg_params_t p = {0};
    pp_bytes(&p, hash, len);
    return one_key(to_pg(base), ST_KEY_BY_HASH, &p, a, out);
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

static int pg_keys_of_agent(kw_store_t *base, kw_str_t agent_id, int64_t after_created_us,
                            kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                            size_t *n_out)
{
    pg_params_t p = {0};
    pp_text(&p, agent_id);
    /* An empty cursor id starts at the beginning whatever its timestamp. */
    pp_i64(&p, after_id.len ? after_created_us : INT64_MIN);
    pp_text(&p, after_id);
    pp_i64(&p, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    if (p.bad_text) {
        *out = NULL;
        *n_out = 0;
        return KW_OK;
    }
    PGresult *r;
    int rc = query(to_pg(base), ST_KEYS_OF_AGENT, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = many_keys(r, a, out, n_out);
    PQclear(r);
    return rc;
}

static int pg_keys_by_ids(kw_store_t *base, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                          kw_arena_t *a, kw_apikey_t **out, size_t *n_out)
{
    pg_params_t p = {0};
    pp_text(&p, agent_id);
    int rc = pp_text_array(&p, a, ids, n);
    if (rc != KW_OK)
        return rc;
    if (p.bad_text) {
        *out = NULL;
        *n_out = 0;
        return KW_OK;
    }
    PGresult *r;
    rc = query(to_pg(base), ST_KEYS_BY_IDS, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = many_keys(r, a, out, n_out);
    PQclear(r);
    return rc;
}

/* ---- transactions ---- */

/* Bumps the revision on c, inside its transaction: KW_OK with *rev set, or an error. */
static int bump_revision(pg_conn_t *c, kw_revision_t *rev)
{
    pg_params_t p = {0};
    PGresult *r;
    int rc = run(c, ST_TX_REVISION, &p, &r);
    if (rc != KW_OK)
        return rc;
    if (PQntuples(r) == 1)
        *rev = (kw_revision_t)col_i64(r, 0, 0);
    else
        rc = KW_EDB;
    PQclear(r);
    return rc;
}

/* BEGIN, then take the global write order (ST_TX_REVISION) before anything else: this
 * may wait for the transaction of another instance (or thread) to end, up to
 * lock_timeout. A connection found dead is reset and the whole begin retried once
 * (nothing has happened yet). */
static int pg_tx_begin(kw_store_t *base, kw_store_tx_t **out, kw_diag_t *diag)
{
    pg_store_t *s = to_pg(base);
    pg_tx_t *tx = kw_calloc(1, sizeof(*tx));
    if (!tx)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    int rc = begin_on(s, "BEGIN", &tx->c);
    if (rc == KW_OK) {
        rc = bump_revision(tx->c, &tx->rev);
        if (rc == KW_EDB && PQstatus(tx->c->conn) != CONNECTION_OK &&
            conn_ensure(s, tx->c) == KW_OK && exec_cmd(tx->c, "BEGIN") == KW_OK)
            rc = bump_revision(tx->c, &tx->rev);
        if (rc != KW_OK)
            pool_put(s, tx->c); /* rolls back */
    }
    if (rc != KW_OK) {
        kw_free(tx);
        return kw_diag_set(diag, rc == KW_ENOMEM ? rc : KW_EDB, 0, 0,
                           rc == KW_ENOMEM ? "out of memory" : "database unavailable");
    }
    kw__store_tx_init(&tx->base, base);
    *out = &tx->base;
    return KW_OK;
}

static void tx_end(pg_tx_t *tx)
{
    pg_store_t *s = to_pg(tx->base.store);
    kw__store_tx_fini(&tx->base);
    pool_put(s, tx->c);
    kw_free(tx);
}

static void pg_tx_rollback(kw_store_tx_t *base)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    if (PQstatus(tx->c->conn) == CONNECTION_OK)
        PQclear(PQexec(tx->c->conn, "ROLLBACK"));
    tx_end(tx);
}

/* Writes the tx's recorded changes at revision `rev`, PG_CHANGELOG_CHUNK rows per
 * statement (multi-row VALUES, binary parameters). */
static int write_changelog(pg_tx_t *tx, kw_revision_t rev)
{
    const kw_update_t *ups = tx->base.ups;
    size_t n = tx->base.n_ups;
    if (n == 0)
        return KW_OK;
    enum { COLS = 9 };
    size_t chunk = n < PG_CHANGELOG_CHUNK ? n : PG_CHANGELOG_CHUNK;
    const char **vals = kw_calloc(chunk * COLS, sizeof(*vals));
    int *lens = kw_calloc(chunk * COLS, sizeof(*lens));
    int *fmts = kw_calloc(chunk * COLS, sizeof(*fmts));
    Oid *types = kw_calloc(chunk * COLS, sizeof(*types));
    unsigned char *ints = kw_calloc(chunk, 16); /* seq (int4), op (int2) */
    unsigned char revb[8];
    kw_buf_t sql;
    kw_buf_init(&sql);
    int rc = vals && lens && fmts && types && ints ? KW_OK : KW_ENOMEM;
    for (int i = 0; i < 8; i++)
        revb[i] = (unsigned char)(rev >> (56 - 8 * i));
    for (size_t start = 0; start < n && rc == KW_OK; start += chunk) {
        size_t m = n - start < chunk ? n - start : chunk;
        sql.len = 0;
        kw_buf_puts(&sql, "INSERT INTO changelog (revision, seq, op, " REL_COLS ") VALUES ");
        for (size_t i = 0; i < m; i++) {
            const kw_update_t *u = &ups[start + i];
            size_t b = i * COLS;
            uint32_t seq = (uint32_t)(start + i);
            unsigned char *iv = ints + 16 * i;
            for (int k = 0; k < 4; k++)
                iv[k] = (unsigned char)(seq >> (24 - 8 * k));
            iv[8] = 0;
            iv[9] = (unsigned char)u->op;
            const kw_str_t f[6] = {u->rel.resource.type, u->rel.resource.id,
                                   u->rel.relation,      u->rel.subject.type,
                                   u->rel.subject.id,    u->rel.subject.relation};
            vals[b] = (const char *)revb, lens[b] = 8, types[b] = OID_INT8;
            vals[b + 1] = (const char *)iv, lens[b + 1] = 4, types[b + 1] = OID_INT4;
            vals[b + 2] = (const char *)iv + 8, lens[b + 2] = 2, types[b + 2] = OID_INT2;
            for (int k = 0; k < 6; k++) {
                vals[b + 3 + k] = f[k].ptr ? f[k].ptr : "";
                lens[b + 3 + k] = (int)f[k].len;
                types[b + 3 + k] = OID_TEXT;
            }
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
            rc = r ? result_error(tx->c->conn, r, "changelog") : KW_ENOMEM;
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

/* The revision was taken by pg_tx_begin; only the changelog rows and COMMIT are left. */
static int pg_tx_commit(kw_store_tx_t *base, kw_revision_t *rev, kw_diag_t *diag)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    kw_revision_t at = tx->rev;
    int rc = write_changelog(tx, at);
    if (rc == KW_OK) {
        PGresult *r = PQexec(tx->c->conn, "COMMIT");
        /* COMMIT of a transaction that failed earlier "succeeds" as ROLLBACK. */
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = result_error(tx->c->conn, r, "COMMIT");
        else if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
            rc = KW_EDB;
        PQclear(r);
    }
    if (rc != KW_OK) {
        /* A failure at COMMIT itself (connection lost) leaves the outcome unknown to this
         * process; the changelog is the truth and followers replay it either way. */
        if (PQstatus(tx->c->conn) == CONNECTION_OK)
            PQclear(PQexec(tx->c->conn, "ROLLBACK"));
        tx_end(tx);
        return kw_diag_set(diag, rc == KW_ENOMEM ? rc : KW_EDB, 0, 0,
                           rc == KW_ENOMEM ? "out of memory" : "database unavailable");
    }
    tx_end(tx);
    if (rev)
        *rev = at;
    return KW_OK;
}

static int tx_exec(pg_tx_t *tx, int st, const pg_params_t *p, PGresult **out)
{
    return run(tx->c, st, p, out);
}

static int pg_tx_agent_insert(kw_store_tx_t *base, const kw_agent_t *ag)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    pg_params_t p = {0};
    pp_cstr(&p, ag->id);
    pp_cstr(&p, ag->name);
    if (ag->description)
        pp_cstr(&p, ag->description);
    else
        pp_null(&p);
    pp_cstr(&p, ag->account_id);
    pp_i64(&p, ag->created_at_us);
    if (p.bad_text)
        return KW_EINVAL;
    PGresult *r;
    int rc = tx_exec(tx, ST_AGENT_INSERT, &p, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) == 1 ? KW_OK : KW_ECONFLICT;
    PQclear(r);
    return rc;
}

/* Records every deleted relationship of a DELETE ... RETURNING result as a DELETE change. */
static int record_deleted(pg_tx_t *tx, PGresult *r)
{
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) {
        const kw_str_t f[6] = {col_str(r, i, 0), col_str(r, i, 1), col_str(r, i, 2),
                               col_str(r, i, 3), col_str(r, i, 4), col_str(r, i, 5)};
        int rc = kw__store_tx_record(&tx->base, KW_OP_DELETE, f);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

/* Runs one of the ST_REL_DEL_* statements and records what it removed. */
static int delete_rels(pg_tx_t *tx, int st, const pg_params_t *p)
{
    PGresult *r;
    int rc = tx_exec(tx, st, p, &r);
    if (rc != KW_OK)
        return rc;
    rc = record_deleted(tx, r);
    PQclear(r);
    return rc;
}

/* Deletes every relationship naming type:id as its resource, then as its subject. */
static int delete_rels_of(pg_tx_t *tx, kw_str_t type, kw_str_t id)
{
    pg_params_t p = {0};
    pp_text(&p, type);
    pp_text(&p, id);
    int rc = delete_rels(tx, ST_REL_DEL_RESOURCE, &p);
    if (rc == KW_OK)
        rc = delete_rels(tx, ST_REL_DEL_SUBJECT, &p);
    return rc;
}

static int pg_tx_agent_delete(kw_store_tx_t *base, kw_str_t id)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    pg_params_t p = {0};
    pp_text(&p, id);
    if (p.bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = tx_exec(tx, ST_AGENT_LOCK, &p, &r);
    if (rc != KW_OK)
        return rc;
    int found = PQntuples(r);
    PQclear(r);
    if (!found)
        return KW_ENOTFOUND;
    pg_params_t q = {0};
    pp_text(&q, id);
    pp_text(&q, KW_STR(KW__STORE_TYPE_KEY));
    rc = delete_rels(tx, ST_REL_DEL_RESOURCE_KEYS, &q);
    if (rc == KW_OK)
        rc = delete_rels(tx, ST_REL_DEL_SUBJECT_KEYS, &q);
    if (rc == KW_OK)
        rc = delete_rels_of(tx, KW_STR(KW__STORE_TYPE_AGENT), id);
    if (rc == KW_OK)
        rc = tx_exec(tx, ST_AGENT_KEYS_DELETE, &p, &r);
    if (rc != KW_OK)
        return rc == KW_ENOMEM ? rc : KW_EDB;
    PQclear(r);
    rc = tx_exec(tx, ST_AGENT_DELETE, &p, &r);
    if (rc != KW_OK)
        return rc == KW_ENOMEM ? rc : KW_EDB; /* after deletes: must poison the tx */
    rc = PQntuples(r) == 1 ? KW_OK : KW_EDB;
    PQclear(r);
    return rc;
}

static int pg_tx_key_insert(kw_store_tx_t *base, const kw_apikey_t *key)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    pg_params_t p = {0};
    pp_cstr(&p, key->id);
    pp_cstr(&p, key->agent_id);
    pp_cstr(&p, key->name);
    pp_cstr(&p, key->type);
    pp_i64(&p, key->created_at_us);
    if (key->hash_len)
        pp_bytes(&p, key->hash, key->hash_len);
    else
        pp_null(&p);
    if (key->secret_enc_len)
        pp_bytes(&p, key->secret_enc, key->secret_enc_len);
    else
        pp_null(&p);
    if (p.bad_text)
        return KW_EINVAL;
    PGresult *r;
    int rc = tx_exec(tx, ST_KEY_INSERT, &p, &r);
    if (rc != KW_OK)
        return rc;
    int inserted = PQntuples(r);
    PQclear(r);
    if (inserted)
        return KW_OK;
    pg_params_t q = {0};
    pp_cstr(&q, key->agent_id);
    rc = tx_exec(tx, ST_AGENT_EXISTS, &q, &r);
    if (rc != KW_OK)
        return rc;
    rc = PQntuples(r) ? KW_ECONFLICT : KW_ENOTFOUND;
    PQclear(r);
    return rc;
}

static int pg_tx_key_delete(kw_store_tx_t *base, kw_str_t id)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    pg_params_t p = {0};
    pp_text(&p, id);
    if (p.bad_text)
        return KW_ENOTFOUND;
    PGresult *r;
    int rc = tx_exec(tx, ST_KEY_DELETE, &p, &r);
    if (rc != KW_OK)
        return rc;
    int found = PQntuples(r);
    PQclear(r);
    if (!found)
        return KW_ENOTFOUND;
    return delete_rels_of(tx, KW_STR(KW__STORE_TYPE_KEY), id);
}

static void rel_params(pg_params_t *p, const kw_rel_t *rel, kw_str_t f[6])
{
    f[0] = rel->resource.type;
    f[1] = rel->resource.id;
    f[2] = rel->relation;
    f[3] = rel->subject.type;
    f[4] = rel->subject.id;
    f[5] = rel->subject.relation;
    for (int k = 0; k < 6; k++)
        pp_text(p, f[k]);
}

/* The same message as the SQLite backend's (the API passes it to the client). */
static int conflict_diag(const kw_rel_t *rel, size_t i, kw_diag_t *diag)
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(rel, &b);
    int rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                         "could not CREATE relationship `%.*s` (update %zu), as it already exists",
                         b.failed || !b.ptr ? 0 : (int)b.len, b.ptr ? b.ptr : "", i);
    kw_buf_free(&b);
    return rc;
}

static int pg_tx_rel_write(kw_store_tx_t *base, const kw_update_t *ups, size_t n, kw_diag_t *diag)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    for (size_t i = 0; i < n; i++) {
        const kw_update_t *u = &ups[i];
        pg_params_t p = {0};
        kw_str_t f[6];
        rel_params(&p, &u->rel, f);
        if (p.bad_text)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "relationship is not valid UTF-8");
        PGresult *r;
        int rc = tx_exec(tx, u->op == KW_OP_DELETE ? ST_REL_DELETE : ST_REL_INSERT, &p, &r);
        if (rc != KW_OK)
            return kw_diag_set(diag, rc, 0, 0, "database unavailable");
        int hit = PQntuples(r);
        PQclear(r);
        if (u->op == KW_OP_CREATE && !hit)
            return conflict_diag(&u->rel, i, diag);
        if (u->op == KW_OP_DELETE && !hit)
            continue; /* deleting an absent relationship changes nothing: not recorded */
        rc = kw__store_tx_record(&tx->base, u->op == KW_OP_DELETE ? KW_OP_DELETE : KW_OP_TOUCH, f);
        if (rc != KW_OK) /* the row is written but not recorded: poisons the tx */
            return kw_diag_set(diag, rc, 0, 0, "out of memory");
    }
    return KW_OK;
}

static int pg_tx_rel_delete_matching(kw_store_tx_t *base, const kw_filter_t *f, size_t *n_deleted,
                                     kw_diag_t *diag)
{
    pg_tx_t *tx = (pg_tx_t *)base;
    pg_params_t p = {0};
    kw_buf_t sql;
    kw_buf_init(&sql);
    kw_buf_puts(&sql, "WITH d AS (DELETE FROM relationships WHERE resource_type = $1");
    pp_text(&p, f->resource_type);
    struct {
        kw_str_t v;
        bool use;
        const char *col;
    } conds[] = {
        {f->resource_id, f->resource_id.len > 0, "resource_id"},
        {f->relation, f->relation.len > 0, "relation"},
        {f->subject_type, f->has_subject && f->subject_type.len > 0, "subject_type"},
        {f->subject_id, f->has_subject && f->subject_id.len > 0, "subject_id"},
        {f->subject_relation, f->has_subject && f->subject_relation_set, "subject_relation"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(conds); i++) {
        if (!conds[i].use)
            continue;
        pp_text(&p, conds[i].v);
        kw_buf_printf(&sql, " AND %s = $%d", conds[i].col, p.n);
    }
    kw_buf_puts(&sql, " RETURNING " REL_COLS ") SELECT * FROM d " REL_ORDER);
    if (sql.failed) {
        kw_buf_free(&sql);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    }
    if (p.bad_text) { /* matches nothing that could be stored */
        kw_buf_free(&sql);
        if (n_deleted)
            *n_deleted = 0;
        return KW_OK;
    }
    Oid types[PG_MAX_PARAMS];
    for (int i = 0; i < p.n; i++)
        types[i] = OID_TEXT;
    PGresult *r = PQexecParams(tx->c->conn, sql.ptr, p.n, types, p.vals, p.lens, p.fmts, 1);
    kw_buf_free(&sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = r ? result_error(tx->c->conn, r, "delete matching") : KW_ENOMEM;
        PQclear(r);
        return kw_diag_set(diag, rc, 0, 0, "database unavailable");
    }
    int rc = record_deleted(tx, r);
    size_t n = (size_t)PQntuples(r);
    PQclear(r);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "out of memory");
    if (n_deleted)
        *n_deleted = n;
    return KW_OK;
}

/* ---- followers: changelog and wakeups ---- */

/* Streams the first n rows of a changelog result through cb (non-zero stops). */
static int emit_changes(PGresult *r, int n, kw_rel_change_cb cb, void *ud)
{
    for (int i = 0; i < n; i++) {
        kw_rel_t rel;
        row_rel(r, i, 2, &rel);
        int op = (int)col_i64(r, i, 1);
        int rc = cb((kw_revision_t)col_i64(r, i, 0), (kw_op_t)op, &rel, ud);
        if (rc != 0)
            return rc;
    }
    return KW_OK;
}

static int pg_changes_since(kw_store_t *base, kw_revision_t after, size_t limit,
                            kw_rel_change_cb cb, void *ud, kw_revision_t *upto)
{
    pg_store_t *s = to_pg(base);
    pg_conn_t *c;
    if (limit == 0 || limit > (size_t)INT32_MAX)
        limit = (size_t)INT32_MAX;
    int rc = begin_on(s, SNAPSHOT_BEGIN, &c);
    if (rc != KW_OK)
        return rc;
    kw_revision_t cur = 0, done = after;
    PGresult *r = NULL;
    rc = read_revision(c, &cur);
    if (rc == KW_OK && cur > after) {
        pg_params_t p = {0};
        pp_i64(&p, (int64_t)after);
        pp_i64(&p, (int64_t)cur);
        pp_i64(&p, (int64_t)limit + 1);
        rc = run(c, ST_CHANGES, &p, &r);
    }
    if (rc == KW_OK && r) {
        int n = PQntuples(r);
        if ((size_t)n <= limit) {
            rc = emit_changes(r, n, cb, ud); /* everything up to cur */
            done = cur;
        } else {
            /* More than limit: stop before the last (possibly partial) revision. Revisions
             * are never split, so a follower can apply each one atomically. */
            kw_revision_t last = (kw_revision_t)col_i64(r, n - 1, 0);
            int keep = n;
            while (keep > 0 && (kw_revision_t)col_i64(r, keep - 1, 0) == last)
                keep--;
            if (keep > 0) {
                rc = emit_changes(r, keep, cb, ud);
                done = last - 1;
            } else {
                /* One revision larger than limit: deliver it whole anyway. */
                PQclear(r);
                r = NULL;
                pg_params_t q = {0};
                pp_i64(&q, (int64_t)last);
                rc = run(c, ST_CHANGES_AT, &q, &r);
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
        rc = exec_cmd(c, "COMMIT");
    pool_put(s, c);
    if (rc == KW_OK)
        *upto = done;
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* (Re)connects the LISTEN connection and reads the revision it starts from. */
static int listen_connect(pg_store_t *s, kw_revision_t *latest)
{
    if (s->listen)
        PQfinish(s->listen);
    s->listen = conn_open(s->url);
    if (!s->listen)
        return KW_ENOMEM;
    pg_conn_t c = {.conn = s->listen};
    int rc = PQstatus(s->listen) == CONNECTION_OK ? KW_OK : KW_EDB;
    if (rc == KW_OK)
        rc = conn_setup(&c);
    if (rc == KW_OK)
        rc = exec_cmd(&c, "LISTEN " KW__PG_CHANNEL);
    if (rc == KW_OK)
        rc = read_revision(&c, latest);
    if (rc != KW_OK) {
        const char *m = PQerrorMessage(s->listen);
        kw_log(KW_LOG_WARN, KW_MODULE, "listen: %.*s", (int)strcspn(m, "\n"), m);
        PQfinish(s->listen);
        s->listen = NULL;
    }
    return rc;
}

static int pg_wait_change(kw_store_t *base, int timeout_ms, kw_revision_t *latest)
{
    pg_store_t *s = to_pg(base);
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

static const kw_store_ops_t pg_ops = {
    .name = "postgres",
    .close = pg_close,
    .ping = pg_ping,
    .meta_get = pg_meta_get,
    .meta_init = pg_meta_init,
    .meta_set = pg_meta_set,
    .load_relationships = pg_load_relationships,
    .revision = pg_revision,
    .agent_get = pg_agent_get,
    .agent_get_by_name = pg_agent_get_by_name,
    .agents_by_ids = pg_agents_by_ids,
    .key_get = pg_key_get,
    .key_get_by_name = pg_key_get_by_name,
    .key_find_by_hash = pg_key_find_by_hash,
    .keys_of_agent = pg_keys_of_agent,
    .keys_by_ids = pg_keys_by_ids,
    .tx_begin = pg_tx_begin,
    .tx_commit = pg_tx_commit,
    .tx_rollback = pg_tx_rollback,
    .tx_agent_insert = pg_tx_agent_insert,
    .tx_agent_delete = pg_tx_agent_delete,
    .tx_key_insert = pg_tx_key_insert,
    .tx_key_delete = pg_tx_key_delete,
    .tx_rel_write = pg_tx_rel_write,
    .tx_rel_delete_matching = pg_tx_rel_delete_matching,
    .changes_since = pg_changes_since,
    .wait_change = pg_wait_change,
};
