/*
 * store/sqlite.c - the SQLite backend (the embedded default).
 *
 * This file: the statements, errors, the connection pool, open (path checks; the
 * migrations are migrations_sqlite.c's), metadata and the ops table. The other files, sharing
 * sqlite_int.h: sqlite_read.c (the revision and every read), sqlite_tx.c (transactions and their
 * writes).
 *
 * Connections: a small pool. A thread takes a connection for one read or one whole
 * transaction and gives it back; a connection is only ever used by one thread at a
 * time (SQLITE_OPEN_NOMUTEX), so each keeps its own prepared statements (prepared on
 * first use, SQLITE_PREPARE_PERSISTENT). The pool grows on demand up to SQ_MAX_CONNS,
 * then callers wait for a connection to come back.
 *
 * Files: the database holds secrets (meta: the token secret and the master key unless
 * they come from elsewhere, cli/secrets.h), so open creates it mode 0600 (SQLite gives its
 * -wal and -shm the file's mode) and refuses a file, -wal or -shm that group or others
 * may access unless the caller allows it (kw_store_opts_t.allow_insecure_mode).
 *
 * Settings on every connection: journal_mode=WAL (readers never block the writer nor
 * each other), foreign_keys=ON (api_keys.agent_id cascades), busy_timeout=5000 ms.
 *
 * Durability: synchronous=FULL. With WAL, NORMAL would skip the fsync of the WAL at
 * each commit: still atomic and consistent, and safe against a crash of this process,
 * but a power loss or OS crash could lose the last commits. For keyward that means a
 * deleted (revoked) key could come back to life after a power cut, which is a security
 * regression, so FULL it is. Measured on the 2-core dev VM (ext4, -O2, store_bench_key_tx
 * with KW_STORE_BENCH_N=2000, one key row + 3 relationships per tx, single thread):
 * FULL ~900-1000 tx/s, NORMAL ~5500 tx/s. A thousand key creations a second is far
 * above any real issuance rate; a resurrected key is not acceptable at any rate.
 *
 * Writers (BEGIN IMMEDIATE, the revision bump, the global write order): sqlite_tx.c.
 *
 * No changelog table: one SQLite file has one writer process, which applies its own
 * changes to its in-memory graph after each commit. PostgreSQL, with several instances,
 * has one (migrations_pg.c, pg_changes.c): each instance replays the others' changes.
 *
 * Errors: unique/primary-key violations -> KW_ECONFLICT, a key naming an absent agent
 * (foreign key) -> KW_ENOTFOUND, out of memory -> KW_ENOMEM, anything else -> KW_EDB.
 * The log line names the operation and SQLite's message (which carries column names,
 * never values); the diag says only "database error".
 */
#include "sqlite_int.h"
#include "audit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"

#define KW_MODULE "store"

#define SQ_MAX_CONNS 64
#define SQ_BUSY_TIMEOUT_MS 5000
/* Build-time override for measurements: -DSQ_SYNCHRONOUS=\"NORMAL\". */
#ifndef SQ_SYNCHRONOUS
#define SQ_SYNCHRONOUS "FULL"
#endif

/* ---- statements ---- */

#define AGENT_COLS "id, account_id, name, description, created_at_us, acp_url"
/* The first seven are written at create (with expires_at_us); the rest are the key's
 * lifecycle (migration 2): last use, and the previous secret of a rotation in its grace. */
#define KEY_INSERT_COLS "id, agent_id, name, type, created_at_us, hash, secret_enc, expires_at_us"
#define KEY_COLS KEY_INSERT_COLS ", last_used_at_us, prev_hash, prev_until_us"
/* KEY_COLS of api_keys k, then AGENT_COLS of agents g (kw_store_key_auth's join). */
#define KEY_AGENT_COLS                                                                             \
    "k.id, k.agent_id, k.name, k.type, k.created_at_us, k.hash, k.secret_enc, k.expires_at_us, "   \
    "k.last_used_at_us, k.prev_hash, k.prev_until_us, g.id, g.account_id, g.name, "                \
    "g.description, g.created_at_us, g.acp_url"
#define KEY_AGENT_FROM " FROM api_keys k JOIN agents g ON g.id = k.agent_id WHERE "

static const char *const g_sql[KW__SQ_ST_N] = {
    [KW__SQ_ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [KW__SQ_ST_BEGIN_READ] = "BEGIN",
    [KW__SQ_ST_COMMIT] = "COMMIT",
    [KW__SQ_ST_ROLLBACK] = "ROLLBACK",
    [KW__SQ_ST_PING] = "SELECT 1",
    [KW__SQ_ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [KW__SQ_ST_META_INIT] =
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
    [KW__SQ_ST_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [KW__SQ_ST_REV_GET] = "SELECT value FROM meta WHERE key = 'revision'",
    [KW__SQ_ST_REV_BUMP] =
        "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
    /* The startup load (sqlite_read.c): every row exactly once, those with a caveat or an
     * expiry from their partial indexes (a caveat context alone, which the store refuses
     * to write, would count as none). */
    [KW__SQ_ST_REL_ALL_ATTRS] =
        "SELECT " KW__SQ_REL_XCOLS " FROM relationships WHERE expires_at_us IS NOT NULL "
        "UNION ALL SELECT " KW__SQ_REL_XCOLS " FROM relationships "
        "WHERE caveat_name IS NOT NULL AND expires_at_us IS NULL",
    [KW__SQ_ST_REL_ALL_PLAIN] = "SELECT " KW__SQ_REL_COLS " FROM relationships "
                                "WHERE caveat_name IS NULL AND expires_at_us IS NULL",
    [KW__SQ_ST_AGENT_GET] = "SELECT " AGENT_COLS " FROM agents WHERE id = ?1",
    [KW__SQ_ST_AGENT_BY_NAME] =
        "SELECT " AGENT_COLS " FROM agents WHERE account_id = ?1 AND name = ?2",
    [KW__SQ_ST_AGENT_EXISTS] = "SELECT 1 FROM agents WHERE id = ?1",
    [KW__SQ_ST_AGENT_INSERT] =
        "INSERT INTO agents (" AGENT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [KW__SQ_ST_AGENT_SET_ACP] = "UPDATE agents SET acp_url = ?2 WHERE id = ?1",
    [KW__SQ_ST_AGENT_FORWARD] = "SELECT " AGENT_COLS " FROM agents WHERE name = ?1 "
                                "AND acp_url IS NOT NULL ORDER BY created_at_us, id LIMIT 1",
    [KW__SQ_ST_KEY_FORWARD] =
        "SELECT k.id, k.agent_id, k.name, k.type, k.created_at_us, k.hash, k.secret_enc, "
        "k.expires_at_us, k.last_used_at_us, k.prev_hash, k.prev_until_us "
        "FROM api_keys k JOIN agents a ON a.id = k.agent_id WHERE a.name = ?1 "
        "AND a.acp_url IS NOT NULL AND k.name = ?2 AND k.type = ?3 "
        "ORDER BY a.created_at_us, a.id LIMIT 1",
    [KW__SQ_ST_REPLAY_PRUNE] = "DELETE FROM forward_replay WHERE id IN (SELECT id FROM "
                               "forward_replay WHERE expires_at_us <= ?1 AND id <> ?2 LIMIT 64)",
    [KW__SQ_ST_REPLAY_CLAIM] =
        "INSERT INTO forward_replay (id, expires_at_us) VALUES (?1, ?2) ON CONFLICT (id) "
        "DO UPDATE SET expires_at_us = excluded.expires_at_us "
        "WHERE forward_replay.expires_at_us <= ?3",
    [KW__SQ_ST_AGENT_DELETE] = "DELETE FROM agents WHERE id = ?1",
    [KW__SQ_ST_KEY_GET] = "SELECT " KEY_COLS " FROM api_keys WHERE id = ?1",
    [KW__SQ_ST_KEY_GET_OF_AGENT] =
        "SELECT " KEY_COLS " FROM api_keys WHERE id = ?1 AND agent_id = ?2",
    [KW__SQ_ST_KEY_BY_NAME] = "SELECT " KEY_COLS " FROM api_keys "
                              "WHERE agent_id = ?1 AND name = ?2 AND type = ?3",
    /* The current secret's hash, or the previous one's during a rotation's grace (the
     * caller tells which matched and whether the grace is still running). UNION ALL runs
     * its arms in order and LIMIT stops at the first row: a current hash wins, with two
     * index probes at most and no sort (a MULTI-INDEX OR with ORDER BY costs a temporary
     * B-tree per authentication). */
    [KW__SQ_ST_KEY_BY_HASH] = "SELECT " KEY_COLS " FROM api_keys WHERE hash = ?1 UNION ALL "
                              "SELECT " KEY_COLS " FROM api_keys WHERE prev_hash = ?1 LIMIT 1",
    [KW__SQ_ST_KEY_AUTH] = "SELECT " KEY_AGENT_COLS KEY_AGENT_FROM "k.hash = ?1 UNION ALL "
                           "SELECT " KEY_AGENT_COLS KEY_AGENT_FROM "k.prev_hash = ?1 LIMIT 1",
    [KW__SQ_ST_KEYS_FIRST] = "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = ?1 "
                             "ORDER BY created_at_us, id LIMIT ?2",
    [KW__SQ_ST_KEYS_AFTER] =
        "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = ?1 "
        "AND (created_at_us, id) > (?2, ?3) ORDER BY created_at_us, id LIMIT ?4",
    [KW__SQ_ST_KEY_INSERT] =
        "INSERT INTO api_keys (" KEY_INSERT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [KW__SQ_ST_KEY_DELETE] = "DELETE FROM api_keys WHERE id = ?1",
    /* Compare-and-swap on the secret read before (tag-kw-key-rotate): a rotation that
     * lost a race changes nothing. */
    [KW__SQ_ST_KEY_ROTATE] = "UPDATE api_keys SET hash = ?2, secret_enc = ?3, prev_hash = ?4, "
                             "prev_until_us = ?5 WHERE id = ?1 AND hash IS ?6 AND secret_enc IS ?7",
    [KW__SQ_ST_KEY_EXISTS] = "SELECT 1 FROM api_keys WHERE id = ?1",
    [KW__SQ_ST_KEY_TOUCH] = "UPDATE api_keys SET last_used_at_us = ?2 WHERE id = ?1 "
                            "AND (last_used_at_us IS NULL OR last_used_at_us < ?2)",
    /* tag-kw-store-caveats: a CREATE replaces only a row whose expiry has passed (?10 is
     * now); nothing changed (sqlite3_changes 0) means a live row exists: KW_ECONFLICT. A
     * TOUCH replaces caveat, context and expiry, and leaves an identical row unwritten. */
    [KW__SQ_ST_REL_CREATE] =
        "INSERT INTO relationships (" KW__SQ_REL_XCOLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
        "?9) ON CONFLICT (" KW__SQ_REL_COLS ") DO UPDATE SET caveat_name = excluded.caveat_name, "
        "caveat_context = excluded.caveat_context, expires_at_us = excluded.expires_at_us "
        "WHERE relationships.expires_at_us <= ?10",
    [KW__SQ_ST_REL_TOUCH] =
        "INSERT INTO relationships (" KW__SQ_REL_XCOLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
        "?9) ON CONFLICT (" KW__SQ_REL_COLS ") DO UPDATE SET caveat_name = excluded.caveat_name, "
        "caveat_context = excluded.caveat_context, expires_at_us = excluded.expires_at_us "
        "WHERE relationships.caveat_name IS NOT excluded.caveat_name "
        "OR relationships.caveat_context IS NOT excluded.caveat_context "
        "OR relationships.expires_at_us IS NOT excluded.expires_at_us",
    [KW__SQ_ST_REL_DELETE] =
        "DELETE FROM relationships WHERE resource_type = ?1 AND resource_id = ?2 "
        "AND relation = ?3 AND subject_type = ?4 AND subject_id = ?5 "
        "AND subject_relation = ?6",
    [KW__SQ_ST_REL_DEL_RESOURCE] = "DELETE FROM relationships WHERE resource_type = ?1 "
                                   "AND resource_id = ?2 RETURNING " KW__SQ_REL_COLS,
    [KW__SQ_ST_REL_DEL_SUBJECT] = "DELETE FROM relationships WHERE subject_type = ?1 "
                                  "AND subject_id = ?2 RETURNING " KW__SQ_REL_COLS,
    [KW__SQ_ST_REL_DEL_RESOURCE_KEYS] =
        "DELETE FROM relationships WHERE resource_type = ?2 "
        "AND resource_id IN (SELECT id FROM api_keys WHERE agent_id = ?1) "
        "RETURNING " KW__SQ_REL_COLS,
    [KW__SQ_ST_REL_DEL_SUBJECT_KEYS] =
        "DELETE FROM relationships WHERE subject_type = ?2 "
        "AND subject_id IN (SELECT id FROM api_keys WHERE agent_id = ?1) "
        "RETURNING " KW__SQ_REL_COLS,
    /* The sweep, both on the partial index relationships_by_expiry (migration 2). */
    [KW__SQ_ST_NEXT_EXPIRY] = "SELECT expires_at_us FROM relationships "
                              "WHERE expires_at_us IS NOT NULL ORDER BY expires_at_us LIMIT 1",
    [KW__SQ_ST_REL_DEL_EXPIRED] =
        "DELETE FROM relationships WHERE (" KW__SQ_REL_COLS ") IN (SELECT " KW__SQ_REL_COLS
        " FROM relationships WHERE expires_at_us <= ?1 ORDER BY expires_at_us LIMIT ?2) "
        "RETURNING " KW__SQ_REL_COLS,
    [KW__SQ_ST_CHANGELOG_INSERT] =
        "INSERT INTO changelog (rev, seq, op, " KW__SQ_REL_COLS ", caveat, caveat_ctx, "
        "expires_at_us, at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
};

static const kw_store_ops_t g_sqlite_ops;
static void sq_close(kw_store_t *base);

/* ---- errors ---- */

/* Maps a SQLite result (extended codes are on) to a KW_E* code and logs what failed. */
int kw__sq_err(kw__sq_conn_t *c, int rc, const char *what, kw_diag_t *diag)
{
    int prim = rc & 0xff;
    if (prim == SQLITE_CONSTRAINT) {
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return kw_diag_set(diag, KW_ECONFLICT, 0, 0, "already exists");
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return kw_diag_set(diag, KW_ENOTFOUND, 0, 0, "the referenced agent does not exist");
    }
    if (prim == SQLITE_NOMEM)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    if (prim == SQLITE_FULL && c && c->memory)
        return kw_diag_set(diag, KW_EBUDGET, 0, 0,
                           "the in-memory database is full (its memory bound is reached)");
    kw_log(prim == SQLITE_BUSY || prim == SQLITE_LOCKED ? KW_LOG_WARN : KW_LOG_ERROR, KW_MODULE,
           "sqlite %s failed: %s (%d)", what,
           c && c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc), rc);
    return kw_diag_set(diag, KW_EDB, 0, 0, "database error");
}

/* ---- statements, parameters, columns ---- */

int kw__sq_stmt(kw__sq_conn_t *c, int id, sqlite3_stmt **out)
{
    if (!c->st[id]) {
        int rc =
            sqlite3_prepare_v3(c->db, g_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->st[id], NULL);
        if (rc != SQLITE_OK)
            return kw__sq_err(c, rc, "prepare", NULL);
    }
    *out = c->st[id];
    return KW_OK;
}

void kw__sq_stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Binds a slice as text; the bytes must outlive the statement's step (SQLITE_STATIC). */
int kw__sq_bind_str(sqlite3_stmt *st, int i, kw_str_t s)
{
    return sqlite3_bind_text64(st, i, s.ptr ? s.ptr : "", s.len, SQLITE_STATIC, SQLITE_UTF8);
}

/* Runs a statement that returns no rows (already bound); resets it. */
int kw__sq_exec_done(kw__sq_conn_t *c, sqlite3_stmt *st, const char *what, kw_diag_t *diag)
{
    int rc = sqlite3_step(st);
    kw__sq_stmt_done(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return kw__sq_err(c, rc, what, diag);
    return KW_OK;
}

int kw__sq_exec_id(kw__sq_conn_t *c, int id, const char *what, kw_diag_t *diag)
{
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_stmt(c, id, &st);
    return rc != KW_OK ? rc : kw__sq_exec_done(c, st, what, diag);
}

kw_str_t kw__sq_col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *p = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    return (kw_str_t){p ? (const char *)p : "", p && n > 0 ? (size_t)n : 0};
}

/* ---- connections ---- */

static void conn_free(kw__sq_conn_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < KW__SQ_ST_N; i++)
        sqlite3_finalize(c->st[i]);
    for (int i = 0; i < KW__SQ_N_FILTER_SHAPES; i++)
        sqlite3_finalize(c->filter_st[i]);
    if (c->db && sqlite3_close(c->db) != SQLITE_OK)
        kw_log(KW_LOG_ERROR, KW_MODULE, "sqlite close failed: %s", sqlite3_errmsg(c->db));
    kw_free(c);
}

/* An in-memory database (kw_store_opts_t.memory_bytes) lives in its one connection: no
 * journal file, no WAL, and a page count bound that makes a write past it fail with
 * SQLITE_FULL (kw__sq_err: KW_EBUDGET). */
static int memory_setup(kw__sq_conn_t *c, size_t max_pages)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "PRAGMA page_size = 4096; PRAGMA max_page_count = %zu;", max_pages);
    return sqlite3_exec(c->db, sql, NULL, NULL, NULL);
}

static int conn_open(const kw__sq_store_t *s, kw__sq_conn_t **out, kw_diag_t *diag)
{
    const char *path = s->path;
    kw__sq_conn_t *c = kw_calloc(1, sizeof(*c));
    if (!c)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    c->memory = s->max_pages > 0;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "cannot open SQLite database %s: %s", path,
               c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        conn_free(c);
        return kw_diag_set(diag, rc == SQLITE_NOMEM ? KW_ENOMEM : KW_EDB, 0, 0,
                           "cannot open the SQLite database (see the log)");
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
    rc = sqlite3_exec(c->db,
                      "PRAGMA foreign_keys = ON;"
                      "PRAGMA trusted_schema = OFF;"
                      "PRAGMA synchronous = " SQ_SYNCHRONOUS ";",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    if (c->memory) {
        if ((rc = memory_setup(c, s->max_pages)) != SQLITE_OK)
            goto fail;
        *out = c;
        return KW_OK;
    }
    /* journal_mode answers the mode now in force; anything but "wal" (a file system
     * without shared memory) still works, with readers and the writer serialized. */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *mode = sqlite3_column_text(st, 0);
        if (!mode || strcmp((const char *)mode, "wal") != 0)
            kw_log(KW_LOG_WARN, KW_MODULE, "SQLite journal mode is %s, not wal",
                   mode ? (const char *)mode : "unknown");
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK && rc != SQLITE_DONE)
        goto fail;
    *out = c;
    return KW_OK;
fail:
    rc = kw__sq_err(c, rc, "connection setup", diag);
    conn_free(c);
    return rc;
}

int kw__sq_conn_take(kw__sq_store_t *s, kw__sq_conn_t **out, kw_diag_t *diag)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->idle) {
            kw__sq_conn_t *c = s->idle;
            s->idle = c->next;
            c->next = NULL;
            pthread_mutex_unlock(&s->mu);
            *out = c;
            return KW_OK;
        }
        if (s->n_open < s->max_open)
            break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    s->n_open++; /* reserve the slot, open outside the lock */
    pthread_mutex_unlock(&s->mu);
    int rc = conn_open(s, out, diag);
    if (rc != KW_OK) {
        pthread_mutex_lock(&s->mu);
        s->n_open--;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

void kw__sq_conn_give(kw__sq_store_t *s, kw__sq_conn_t *c)
{
    /* A connection still inside a transaction (a failed ROLLBACK) must not be reused. */
    if (!sqlite3_get_autocommit(c->db)) {
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        /* In memory the connection IS the database: it is kept (its next BEGIN fails,
         * which is an error the caller sees, not an empty database in its place). */
        if (!sqlite3_get_autocommit(c->db) && !c->memory) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "dropping a connection stuck in a transaction");
            conn_free(c);
            pthread_mutex_lock(&s->mu);
            s->n_open--;
            pthread_cond_signal(&s->cv);
            pthread_mutex_unlock(&s->mu);
            return;
        }
    }
    pthread_mutex_lock(&s->mu);
    c->next = s->idle;
    s->idle = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- open: path checks, file modes, then migrations (migrations_sqlite.c) ---- */

/* Clear messages for the usual operator mistakes before SQLite says "unable to open". */
static int check_path(const char *path, kw_diag_t *diag)
{
    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
        return kw_diag_set(
            diag, KW_EINVAL, 0, 0,
            "in-memory and URI SQLite databases are not supported; give a file path");
    char *dir = kw_strndup(path, strlen(path));
    if (!dir)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    struct stat sb;
    int rc = KW_OK;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "database directory %s does not exist", dir);
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0,
                         "the database file's directory does not exist (create it first)");
    } else if (access(dir, W_OK | X_OK) != 0) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "database directory %s is not writable", dir);
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0,
                         "the database file's directory is not writable (SQLite needs to create "
                         "its -wal and -shm files there)");
    } else if (access(path, F_OK) == 0 && access(path, R_OK | W_OK) != 0) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "database file %s is not readable and writable", path);
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0,
                         "the database file is not readable and writable by this user");
    }
    kw_free(dir);
    return rc;
}

/* The database file and its -wal/-shm hold the secrets kept in meta: refuse any that
 * group or others may access (kw_store_opts_t.allow_insecure_mode). Absent files pass. */
static int check_modes(const char *path, bool allow, kw_diag_t *diag)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    size_t n = strlen(path) + sizeof("-wal");
    char *name = kw_malloc(n);
    if (!name)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    int rc = KW_OK;
    for (size_t i = 0; i < KW_ARRAY_LEN(suffix) && rc == KW_OK; i++) {
        snprintf(name, n, "%s%s", path, suffix[i]);
        struct stat sb;
        if (stat(name, &sb) != 0 || (sb.st_mode & 077) == 0)
            continue;
        unsigned mode = (unsigned)(sb.st_mode & 07777);
        if (allow) {
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "database file %s has mode %04o: group or others can access the secrets "
                   "it holds (allowed explicitly)",
                   name, mode);
            continue;
        }
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "database file %s has mode %04o: group or others can access the secrets it "
               "holds; fix it with: chmod 600 %s",
               name, mode, name);
        rc = kw_diag_set(diag, KW_EFORBIDDEN, 0, 0,
                         "database file %s has mode %04o, open to group or others "
                         "(fix: chmod 600 %s)",
                         name, mode, name);
    }
    kw_free(name);
    return rc;
}

/* Creates the database file mode 0600 if it does not exist yet (SQLite would create it
 * 0644 less the umask; its -wal and -shm then take the file's mode). */
static int create_private(const char *path, kw_diag_t *diag)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        kw_log(KW_LOG_INFO, KW_MODULE, "created database file %s (mode 0600)", path);
        return KW_OK;
    }
    if (errno == EEXIST) /* there already, or another process made it just now */
        return KW_OK;
    kw_log(KW_LOG_ERROR, KW_MODULE, "cannot create database file %s: %s", path, strerror(errno));
    return kw_diag_set(diag, KW_EDB, 0, 0, "cannot create the database file (see the log)");
}

int kw__store_sqlite_open(const char *path, const kw_store_opts_t *opts, kw_store_t **out,
                          kw_diag_t *diag)
{
    /* opts->pool_size is PostgreSQL's: this pool grows on demand to SQ_MAX_CONNS. */
    if (!sqlite3_threadsafe())
        return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0,
                           "this SQLite library was built without thread support");
    bool memory = strcmp(path, ":memory:") == 0 && opts->memory_bytes > 0;
    int rc = KW_OK;
    if (memory && opts->memory_bytes < ((size_t)1 << 20))
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "an in-memory database needs at least 1 MiB");
    if (!memory) {
        rc = check_path(path, diag);
        if (rc == KW_OK)
            rc = check_modes(path, opts->allow_insecure_mode, diag);
        if (rc == KW_OK)
            rc = create_private(path, diag);
        if (rc != KW_OK)
            return rc;
    }
    kw__sq_store_t *s = kw_calloc(1, sizeof(*s));
    if (!s)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    s->base.ops = &g_sqlite_ops;
    /* In memory the database exists only inside its connection: the pool holds that one
     * connection and callers take turns (nothing takes a second connection while it holds
     * one: a transaction's reads go through its own). */
    s->max_open = memory ? 1 : SQ_MAX_CONNS;
    s->max_pages = memory ? opts->memory_bytes / 4096 : 0;
    s->path = kw_strndup(path, strlen(path));
    if (!s->path) {
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
        goto fail_path;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        rc = kw_diag_set(diag, KW_EINTERNAL, 0, 0, "cannot create the connection pool's lock");
        goto fail_mutex;
    }
    if (pthread_cond_init(&s->cv, NULL) != 0) {
        rc = kw_diag_set(diag, KW_EINTERNAL, 0, 0, "cannot create the connection pool's lock");
        goto fail_cond;
    }
    kw__sq_conn_t *c = NULL;
    rc = kw__sq_conn_take(s, &c, diag);
    if (rc != KW_OK)
        goto fail_conn;
    rc = kw__sq_migrate(c, diag);
    kw__sq_conn_give(s, c);
    if (rc != KW_OK)
        goto fail_migrate;
    *out = &s->base;
    return KW_OK;

fail_migrate:
    sq_close(&s->base); /* closes the pooled connection, then everything below */
    return rc;
fail_conn:
    pthread_cond_destroy(&s->cv);
fail_cond:
    pthread_mutex_destroy(&s->mu);
fail_mutex:
    kw_free(s->path);
fail_path:
    kw_free(s);
    return rc;
}

static void sq_close(kw_store_t *base)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    pthread_mutex_lock(&s->mu);
    kw__sq_conn_t *c = s->idle;
    size_t n_idle = 0;
    s->idle = NULL;
    pthread_mutex_unlock(&s->mu);
    while (c) {
        kw__sq_conn_t *next = c->next;
        conn_free(c);
        n_idle++;
        c = next;
    }
    if (n_idle != s->n_open)
        kw_log(KW_LOG_ERROR, KW_MODULE, "store closed with %zu connection(s) still in use",
               s->n_open - n_idle);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    kw_free(s->path);
    kw_free(s);
}

/* ---- ping and metadata ---- */

static int sq_ping(kw_store_t *base)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_exec_id(c, KW__SQ_ST_PING, "ping", NULL);
    kw__sq_conn_give(s, c);
    return rc;
}

/* A meta value: bytes plus a NUL, from the arena (kw__sq_row_fn, `out` a meta_val_t). */
typedef struct meta_val {
    char *val;
    size_t len;
} meta_val_t;

static int read_meta(sqlite3_stmt *st, kw_arena_t *a, void *out)
{
    const void *p = sqlite3_column_blob(st, 0);
    int n = sqlite3_column_bytes(st, 0);
    size_t un = p && n > 0 ? (size_t)n : 0;
    char *d = kw_arena_alloc(a, un + 1);
    if (!d)
        return KW_ENOMEM;
    if (un)
        memcpy(d, p, un);
    d[un] = '\0';
    *(meta_val_t *)out = (meta_val_t){d, un};
    return KW_OK;
}

static int sq_meta_get(kw_store_t *base, const char *key, kw_arena_t *a, char **val, size_t *len)
{
    const kw__sq_arg_t args[] = {{key, strlen(key), false}};
    meta_val_t m;
    int rc = kw__sq_query_one((kw__sq_store_t *)base, KW__SQ_ST_META_GET, args, 1, read_meta, a, &m,
                              "meta get");
    if (rc != KW_OK)
        return rc;
    *val = m.val;
    *len = m.len;
    return KW_OK;
}

static int meta_write(kw__sq_store_t *s, int id, const char *key, kw_str_t v)
{
    kw__sq_conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_stmt(c, id, &st);
    if (rc == KW_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_blob64(st, 2, v.ptr ? v.ptr : "", v.len, SQLITE_STATIC);
        rc = kw__sq_exec_done(c, st, "meta write", NULL);
    }
    kw__sq_conn_give(s, c);
    return rc;
}

static int sq_meta_init(kw_store_t *base, const char *key, kw_str_t want, kw_arena_t *a, char **val,
                        size_t *len)
{
    /* INSERT ... DO NOTHING is atomic: of racing writers (threads or processes) exactly
     * one inserts; everyone then reads the stored value back. */
    int rc = meta_write((kw__sq_store_t *)base, KW__SQ_ST_META_INIT, key, want);
    return rc != KW_OK ? rc : sq_meta_get(base, key, a, val, len);
}

static int sq_meta_set(kw_store_t *base, const char *key, kw_str_t v)
{
    return meta_write((kw__sq_store_t *)base, KW__SQ_ST_META_SET, key, v);
}

/* ---- replay refusal (the forward ingress) ---- */

static int64_t wall_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Outside any transaction: each statement is its own (autocommit) write. An entry whose
 * time ran out is taken over by the upsert's WHERE, so pruning is only housekeeping. */
int kw__sq_replay_claim(kw_store_t *base, kw_str_t id, int64_t ttl_us)
{
    kw__sq_store_t *s = (kw__sq_store_t *)base;
    kw__sq_conn_t *c;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_now_us();
    int rc = kw__sq_conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw__sq_stmt(c, KW__SQ_ST_REPLAY_PRUNE, &st);
    if (rc == KW_OK) {
        sqlite3_bind_int64(st, 1, now);
        kw__sq_bind_str(st, 2, id);
        rc = kw__sq_exec_done(c, st, "prune replay ids", NULL);
    }
    if (rc == KW_OK)
        rc = kw__sq_stmt(c, KW__SQ_ST_REPLAY_CLAIM, &st);
    if (rc == KW_OK) {
        kw__sq_bind_str(st, 1, id);
        sqlite3_bind_int64(st, 2, now + ttl_us);
        sqlite3_bind_int64(st, 3, now);
        rc = kw__sq_exec_done(c, st, "claim replay id", NULL);
        if (rc == KW_OK && sqlite3_changes(c->db) == 0)
            rc = KW_ECONFLICT;
    }
    kw__sq_conn_give(s, c);
    return rc;
}

static const kw_store_ops_t g_sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .meta_get = sq_meta_get,
    .meta_init = sq_meta_init,
    .meta_set = sq_meta_set,
    .load_relationships = kw__sq_load_relationships,
    .revision = kw__sq_revision,
    .agent_get = kw__sq_agent_get,
    .agent_get_by_name = kw__sq_agent_get_by_name,
    .agents_by_ids = kw__sq_agents_by_ids,
    .agents_present = kw__sq_agents_present,
    .key_get = kw__sq_key_get,
    .key_get_by_name = kw__sq_key_get_by_name,
    .key_find_by_hash = kw__sq_key_find_by_hash,
    .keys_of_agent = kw__sq_keys_of_agent,
    .keys_by_ids = kw__sq_keys_by_ids,
    .agent_find_forward = kw__sq_agent_find_forward,
    .key_find_forward = kw__sq_key_find_forward,
    .replay_claim = kw__sq_replay_claim,
    .keys_touch = kw__sq_keys_touch,
    .key_auth = kw__sq_key_auth,
    .tx_begin = kw__sq_tx_begin,
    .tx_commit = kw__sq_tx_commit,
    .tx_rollback = kw__sq_tx_rollback,
    .tx_agent_insert = kw__sq_tx_agent_insert,
    .tx_agent_delete = kw__sq_tx_agent_delete,
    .tx_agent_set_acp_url = kw__sq_tx_agent_set_acp_url,
    .tx_key_insert = kw__sq_tx_key_insert,
    .tx_key_delete = kw__sq_tx_key_delete,
    .tx_key_rotate = kw__sq_tx_key_rotate,
    .tx_savepoint = kw__sq_tx_savepoint,
    .tx_rollback_to = kw__sq_tx_rollback_to,
    .tx_release = kw__sq_tx_release,
    .tx_rel_write = kw__sq_tx_rel_write,
    .tx_rel_delete_matching = kw__sq_tx_rel_delete_matching,
    .audit = &kw__sq_audit_ops,
    .next_expiry = kw__sq_next_expiry,
    .tx_rel_delete_expired = kw__sq_tx_rel_delete_expired,
    .watch_changes = kw__sq_watch_changes,
    .export_relationships = kw__sq_export_relationships,
};
