/*
 * store/sqlite.c - the SQLite backend (the embedded default).
 *
 * Connections: a small pool. A thread takes a connection for one read or one whole
 * transaction and gives it back; a connection is only ever used by one thread at a
 * time (SQLITE_OPEN_NOMUTEX), so each keeps its own prepared statements (prepared on
 * first use, SQLITE_PREPARE_PERSISTENT). The pool grows on demand up to SQ_MAX_CONNS,
 * then callers wait for a connection to come back.
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
 * Writers: BEGIN IMMEDIATE takes SQLite's single write lock at the start, so two
 * writers never deadlock upgrading a read lock; the second waits up to busy_timeout.
 * The revision lives in meta('revision') and is bumped by the commit inside the same
 * transaction, so revisions are unique, gapless and in commit order. Since the write
 * lock is held from begin, a transaction holds the global write order from begin to
 * commit (tag-kw-store-write-order), as pg_tx.c's revision row lock does.
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

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

#define REL_COLS "resource_type, resource_id, relation, subject_type, subject_id, subject_relation"
#define AGENT_COLS "id, account_id, name, description, created_at_us"
#define KEY_COLS "id, agent_id, name, type, created_at_us, hash, secret_enc"

enum {
    ST_BEGIN_WRITE,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PING,
    ST_META_GET,
    ST_META_INIT,
    ST_META_SET,
    ST_REV_GET,
    ST_REV_BUMP,
    ST_REL_ALL,
    ST_AGENT_GET,
    ST_AGENT_BY_NAME,
    ST_AGENT_EXISTS,
    ST_AGENT_INSERT,
    ST_AGENT_DELETE,
    ST_KEY_GET,
    ST_KEY_GET_OF_AGENT,
    ST_KEY_BY_NAME,
    ST_KEY_BY_HASH,
    ST_KEYS_FIRST,
    ST_KEYS_AFTER,
    ST_KEY_INSERT,
    ST_KEY_DELETE,
    ST_REL_CREATE,
    ST_REL_TOUCH,
    ST_REL_DELETE,
    ST_REL_DEL_RESOURCE,
    ST_REL_DEL_SUBJECT,
    ST_REL_DEL_RESOURCE_KEYS,
    ST_REL_DEL_SUBJECT_KEYS,
    ST__COUNT
};

static const char *const g_sql[ST__COUNT] = {
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PING] = "SELECT 1",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_INIT] = "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
    [ST_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [ST_REV_GET] = "SELECT value FROM meta WHERE key = 'revision'",
    [ST_REV_BUMP] = "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
    [ST_REL_ALL] = "SELECT " REL_COLS " FROM relationships",
    [ST_AGENT_GET] = "SELECT " AGENT_COLS " FROM agents WHERE id = ?1",
    [ST_AGENT_BY_NAME] = "SELECT " AGENT_COLS " FROM agents WHERE account_id = ?1 AND name = ?2",
    [ST_AGENT_EXISTS] = "SELECT 1 FROM agents WHERE id = ?1",
    [ST_AGENT_INSERT] = "INSERT INTO agents (" AGENT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_AGENT_DELETE] = "DELETE FROM agents WHERE id = ?1",
    [ST_KEY_GET] = "SELECT " KEY_COLS " FROM api_keys WHERE id = ?1",
    [ST_KEY_GET_OF_AGENT] = "SELECT " KEY_COLS " FROM api_keys WHERE id = ?1 AND agent_id = ?2",
    [ST_KEY_BY_NAME] = "SELECT " KEY_COLS " FROM api_keys "
                       "WHERE agent_id = ?1 AND name = ?2 AND type = ?3",
    [ST_KEY_BY_HASH] = "SELECT " KEY_COLS " FROM api_keys WHERE hash = ?1",
    [ST_KEYS_FIRST] = "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = ?1 "
                      "ORDER BY created_at_us, id LIMIT ?2",
    [ST_KEYS_AFTER] = "SELECT " KEY_COLS " FROM api_keys WHERE agent_id = ?1 "
                      "AND (created_at_us, id) > (?2, ?3) ORDER BY created_at_us, id LIMIT ?4",
    [ST_KEY_INSERT] = "INSERT INTO api_keys (" KEY_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_KEY_DELETE] = "DELETE FROM api_keys WHERE id = ?1",
    [ST_REL_CREATE] = "INSERT INTO relationships (" REL_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_REL_TOUCH] = "INSERT INTO relationships (" REL_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
                     "ON CONFLICT DO NOTHING",
    [ST_REL_DELETE] = "DELETE FROM relationships WHERE resource_type = ?1 AND resource_id = ?2 "
                      "AND relation = ?3 AND subject_type = ?4 AND subject_id = ?5 "
                      "AND subject_relation = ?6",
    [ST_REL_DEL_RESOURCE] = "DELETE FROM relationships WHERE resource_type = ?1 "
                            "AND resource_id = ?2 RETURNING " REL_COLS,
    [ST_REL_DEL_SUBJECT] = "DELETE FROM relationships WHERE subject_type = ?1 "
                           "AND subject_id = ?2 RETURNING " REL_COLS,
    [ST_REL_DEL_RESOURCE_KEYS] = "DELETE FROM relationships WHERE resource_type = ?2 "
                                 "AND resource_id IN (SELECT id FROM api_keys WHERE agent_id = ?1) "
                                 "RETURNING " REL_COLS,
    [ST_REL_DEL_SUBJECT_KEYS] = "DELETE FROM relationships WHERE subject_type = ?2 "
                                "AND subject_id IN (SELECT id FROM api_keys WHERE agent_id = ?1) "
                                "RETURNING " REL_COLS,
};

/* Filter deletes: one statement per combination of the optional fields (bit i set:
 * optional field i is constrained, in filter_cols order). */
#define N_FILTER_SHAPES 32
static const char *const g_filter_cols[5] = {"resource_id", "relation", "subject_type",
                                             "subject_id", "subject_relation"};

typedef struct conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    sqlite3_stmt *filter_st[N_FILTER_SHAPES];
    struct conn *next;
} conn_t;

typedef struct sq_store {
    kw_store_t base;
    char *path;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    conn_t *idle;  /* free list */
    size_t n_open; /* connections alive, idle or taken */
} sq_store_t;

typedef struct sq_tx {
    kw_store_tx_t base;
    conn_t *c;
} sq_tx_t;

static const kw_store_ops_t g_sqlite_ops;

/* ---- errors ---- */

/* Maps a SQLite result (extended codes are on) to a KW_E* code and logs what failed. */
static int db_err(conn_t *c, int rc, const char *what, kw_diag_t *diag)
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
    kw_log(prim == SQLITE_BUSY || prim == SQLITE_LOCKED ? KW_LOG_WARN : KW_LOG_ERROR, KW_MODULE,
           "sqlite %s failed: %s (%d)", what,
           c && c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc), rc);
    return kw_diag_set(diag, KW_EDB, 0, 0, "database error");
}

/* ---- statements ---- */

static int stmt(conn_t *c, int id, sqlite3_stmt **out)
{
    if (!c->st[id]) {
        int rc =
            sqlite3_prepare_v3(c->db, g_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->st[id], NULL);
        if (rc != SQLITE_OK)
            return db_err(c, rc, "prepare", NULL);
    }
    *out = c->st[id];
    return KW_OK;
}

static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Binds a slice as text; the bytes must outlive the statement's step (SQLITE_STATIC). */
static int bind_str(sqlite3_stmt *st, int i, kw_str_t s)
{
    return sqlite3_bind_text64(st, i, s.ptr ? s.ptr : "", s.len, SQLITE_STATIC, SQLITE_UTF8);
}

static int bind_blob_or_null(sqlite3_stmt *st, int i, const uint8_t *p, size_t n)
{
    if (n == 0)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
}

/* Runs a statement that returns no rows (already bound); resets it. */
static int exec_done(conn_t *c, sqlite3_stmt *st, const char *what, kw_diag_t *diag)
{
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_err(c, rc, what, diag);
    return KW_OK;
}

static int exec_id(conn_t *c, int id, const char *what, kw_diag_t *diag)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, id, &st);
    return rc != KW_OK ? rc : exec_done(c, st, what, diag);
}

static kw_str_t col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *p = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    return (kw_str_t){p ? (const char *)p : "", p && n > 0 ? (size_t)n : 0};
}

/* A NUL-terminated copy of text column i in `a` (NULL for SQL NULL when null_ok). */
static int col_dup(sqlite3_stmt *st, int i, kw_arena_t *a, bool null_ok, const char **out)
{
    if (null_ok && sqlite3_column_type(st, i) == SQLITE_NULL) {
        *out = NULL;
        return KW_OK;
    }
    kw_str_t s = col_str(st, i);
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
    kw_str_t s = col_str(st, i);
    size_t n = s.len > KW__STORE_ID_MAX ? KW__STORE_ID_MAX : s.len;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

static int read_agent(sqlite3_stmt *st, kw_arena_t *a, kw_agent_t *out)
{
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    col_id(st, 0, ag.id);
    int rc = col_dup(st, 1, a, false, &ag.account_id);
    if (rc == KW_OK)
        rc = col_dup(st, 2, a, false, &ag.name);
    if (rc == KW_OK)
        rc = col_dup(st, 3, a, true, &ag.description);
    if (rc != KW_OK)
        return rc;
    ag.created_at_us = sqlite3_column_int64(st, 4);
    *out = ag;
    return KW_OK;
}

static int read_key(sqlite3_stmt *st, kw_arena_t *a, kw_apikey_t *out)
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
    if (rc != KW_OK)
        return rc;
    k.created_at_us = sqlite3_column_int64(st, 4);
    *out = k;
    return KW_OK;
}

/* ---- connections ---- */

static void conn_free(conn_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(c->st[i]);
    for (int i = 0; i < N_FILTER_SHAPES; i++)
        sqlite3_finalize(c->filter_st[i]);
    if (c->db && sqlite3_close(c->db) != SQLITE_OK)
        kw_log(KW_LOG_ERROR, KW_MODULE, "sqlite close failed: %s", sqlite3_errmsg(c->db));
    kw_free(c);
}

static int conn_open(const char *path, conn_t **out, kw_diag_t *diag)
{
    conn_t *c = kw_calloc(1, sizeof(*c));
    if (!c)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
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
    rc = db_err(c, rc, "connection setup", diag);
    conn_free(c);
    return rc;
}

static int conn_take(sq_store_t *s, conn_t **out, kw_diag_t *diag)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->idle) {
            conn_t *c = s->idle;
            s->idle = c->next;
            c->next = NULL;
            pthread_mutex_unlock(&s->mu);
            *out = c;
            return KW_OK;
        }
        if (s->n_open < SQ_MAX_CONNS)
            break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    s->n_open++; /* reserve the slot, open outside the lock */
    pthread_mutex_unlock(&s->mu);
    int rc = conn_open(s->path, out, diag);
    if (rc != KW_OK) {
        pthread_mutex_lock(&s->mu);
        s->n_open--;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

static void conn_give(sq_store_t *s, conn_t *c)
{
    /* A connection still inside a transaction (a failed ROLLBACK) must not be reused. */
    if (!sqlite3_get_autocommit(c->db)) {
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        if (!sqlite3_get_autocommit(c->db)) {
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

/* ---- open: path checks and migrations ---- */

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

static int schema_version(conn_t *c, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db, "SELECT coalesce(max(version), 0) FROM schema_migrations",
                                -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 v = sqlite3_column_int64(st, 0);
        *out = v > INT_MAX ? INT_MAX : (int)v;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? KW_OK : db_err(c, rc, "read schema version", NULL);
}

/* Applies every migration the database lacks, each in its own transaction. Several
 * processes opening the same new file are safe: BEGIN IMMEDIATE serializes them and each
 * re-reads the version inside its transaction. */
static int migrate(conn_t *c, kw_diag_t *diag)
{
    const int known = (int)kw__sqlite_n_migrations;
    int rc = sqlite3_exec(c->db,
                          "CREATE TABLE IF NOT EXISTS schema_migrations ("
                          "version INTEGER PRIMARY KEY NOT NULL, applied_at_us INTEGER NOT NULL)",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_err(c, rc, "create schema_migrations", diag);
    for (;;) {
        int cur = 0;
        rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return db_err(c, rc, "begin migration", diag);
        rc = schema_version(c, &cur);
        if (rc != KW_OK || cur >= known) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            if (rc != KW_OK)
                return kw_diag_set(diag, rc, 0, 0, "cannot read the database schema version");
            if (cur > known) {
                kw_log(KW_LOG_ERROR, KW_MODULE,
                       "database schema version %d is newer than this keyward's (%d)", cur, known);
                return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0,
                                   "the database was written by a newer keyward (schema version "
                                   "%d; this binary knows up to %d): upgrade keyward",
                                   cur, known);
            }
            return KW_OK;
        }
        const kw__sqlite_migration_t *m = &kw__sqlite_migrations[cur];
        kw_assert(m->version == cur + 1);
        rc = sqlite3_exec(c->db, m->sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            char ins[160];
            snprintf(ins, sizeof(ins),
                     "INSERT INTO schema_migrations (version, applied_at_us) VALUES (%d, "
                     "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))",
                     m->version);
            rc = sqlite3_exec(c->db, ins, NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            int err = db_err(c, rc, "migration", NULL);
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            return kw_diag_set(diag, err, 0, 0, "migrating the database to version %d failed",
                               m->version);
        }
        kw_log(KW_LOG_INFO, KW_MODULE, "database migrated to schema version %d", m->version);
    }
}

int kw__store_sqlite_open(const char *path, kw_store_t **out, kw_diag_t *diag)
{
    if (!sqlite3_threadsafe())
        return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0,
                           "this SQLite library was built without thread support");
    int rc = check_path(path, diag);
    if (rc != KW_OK)
        return rc;
    sq_store_t *s = kw_calloc(1, sizeof(*s));
    if (!s)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    s->base.ops = &g_sqlite_ops;
    s->path = kw_strndup(path, strlen(path));
    if (!s->path) {
        kw_free(s);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    conn_t *c = NULL;
    rc = conn_take(s, &c, diag);
    if (rc == KW_OK) {
        rc = migrate(c, diag);
        conn_give(s, c);
    }
    if (rc != KW_OK) {
        g_sqlite_ops.close(&s->base);
        return rc;
    }
    *out = &s->base;
    return KW_OK;
}

static void sq_close(kw_store_t *base)
{
    sq_store_t *s = (sq_store_t *)base;
    pthread_mutex_lock(&s->mu);
    conn_t *c = s->idle;
    size_t n_idle = 0;
    s->idle = NULL;
    pthread_mutex_unlock(&s->mu);
    while (c) {
        conn_t *next = c->next;
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

/* ---- simple reads ---- */

static int sq_ping(kw_store_t *base)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = exec_id(c, ST_PING, "ping", NULL);
    conn_give(s, c);
    return rc;
}

/* Reads meta.value for `key` (already bound as ?1 of a ST_META_GET) into `a`. */
static int meta_read(conn_t *c, const char *key, kw_arena_t *a, char **val, size_t *len)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, ST_META_GET, &st);
    if (rc != KW_OK)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(st, 0);
        int n = sqlite3_column_bytes(st, 0);
        size_t un = p && n > 0 ? (size_t)n : 0;
        char *d = kw_arena_alloc(a, un + 1);
        if (!d) {
            rc = KW_ENOMEM;
        } else {
            if (un)
                memcpy(d, p, un);
            d[un] = '\0';
            *val = d;
            *len = un;
        }
    } else {
        rc = src == SQLITE_DONE ? KW_ENOTFOUND : db_err(c, src, "meta get", NULL);
    }
    stmt_done(st);
    return rc;
}

static int sq_meta_get(kw_store_t *base, const char *key, kw_arena_t *a, char **val, size_t *len)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = meta_read(c, key, a, val, len);
    conn_give(s, c);
    return rc;
}

static int meta_write(sq_store_t *s, int id, const char *key, kw_str_t v)
{
    conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, id, &st);
    if (rc == KW_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_blob64(st, 2, v.ptr ? v.ptr : "", v.len, SQLITE_STATIC);
        rc = exec_done(c, st, "meta write", NULL);
    }
    conn_give(s, c);
    return rc;
}

static int sq_meta_init(kw_store_t *base, const char *key, kw_str_t want, kw_arena_t *a, char **val,
                        size_t *len)
{
    /* INSERT ... DO NOTHING is atomic: of racing writers (threads or processes) exactly
     * one inserts; everyone then reads the stored value back. */
    int rc = meta_write((sq_store_t *)base, ST_META_INIT, key, want);
    return rc != KW_OK ? rc : sq_meta_get(base, key, a, val, len);
}

static int sq_meta_set(kw_store_t *base, const char *key, kw_str_t v)
{
    return meta_write((sq_store_t *)base, ST_META_SET, key, v);
}

static int rev_read(conn_t *c, kw_revision_t *rev)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, ST_REV_GET, &st);
    if (rc != KW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        sqlite3_int64 v = sqlite3_column_int64(st, 0);
        *rev = v > 0 ? (kw_revision_t)v : 0;
    } else {
        rc = src == SQLITE_DONE ? KW_EDB : db_err(c, src, "read revision", NULL);
        if (src == SQLITE_DONE)
            kw_log(KW_LOG_ERROR, KW_MODULE, "meta row 'revision' is missing");
    }
    stmt_done(st);
    return rc;
}

static int sq_revision(kw_store_t *base, kw_revision_t *rev)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = rev_read(c, rev);
    conn_give(s, c);
    return rc;
}

/* One read transaction, so the revision and the rows are the same snapshot. */
static int sq_load_relationships(kw_store_t *base, kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    kw_revision_t r = 0;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = exec_id(c, ST_BEGIN_READ, "begin read", NULL);
    if (rc != KW_OK)
        goto out;
    rc = rev_read(c, &r);
    if (rc == KW_OK)
        rc = stmt(c, ST_REL_ALL, &st);
    if (rc == KW_OK) {
        int src;
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
            kw_rel_t rel = {{col_str(st, 0), col_str(st, 1)},
                            col_str(st, 2),
                            {col_str(st, 3), col_str(st, 4), col_str(st, 5)}};
            rc = cb(&rel, ud);
            if (rc != 0)
                break;
        }
        if (rc == KW_OK && src != SQLITE_DONE)
            rc = db_err(c, src, "load relationships", NULL);
        stmt_done(st);
    }
    (void)exec_id(c, ST_ROLLBACK, "end read", NULL);
    if (rc == KW_OK && rev)
        *rev = r;
out:
    conn_give(s, c);
    return rc;
}

/* Runs a bound single-row SELECT of agents; KW_ENOTFOUND when no row. */
static int one_agent(conn_t *c, sqlite3_stmt *st, kw_arena_t *a, kw_agent_t *out)
{
    int src = sqlite3_step(st);
    int rc = src == SQLITE_ROW    ? read_agent(st, a, out)
             : src == SQLITE_DONE ? KW_ENOTFOUND
                                  : db_err(c, src, "read agent", NULL);
    stmt_done(st);
    return rc;
}

static int one_key(conn_t *c, sqlite3_stmt *st, kw_arena_t *a, kw_apikey_t *out)
{
    int src = sqlite3_step(st);
    int rc = src == SQLITE_ROW    ? read_key(st, a, out)
             : src == SQLITE_DONE ? KW_ENOTFOUND
                                  : db_err(c, src, "read key", NULL);
    stmt_done(st);
    return rc;
}

static int sq_agent_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_agent_t *out)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, ST_AGENT_GET, &st);
    if (rc == KW_OK) {
        bind_str(st, 1, id);
        rc = one_agent(c, st, a, out);
    }
    conn_give(s, c);
    return rc;
}

static int sq_agent_get_by_name(kw_store_t *base, kw_str_t account_id, kw_str_t name, kw_arena_t *a,
                                kw_agent_t *out)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, ST_AGENT_BY_NAME, &st);
    if (rc == KW_OK) {
        bind_str(st, 1, account_id);
        bind_str(st, 2, name);
        rc = one_agent(c, st, a, out);
    }
    conn_give(s, c);
    return rc;
}

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

static int sq_agents_by_ids(kw_store_t *base, const kw_str_t *ids, size_t n, kw_arena_t *a,
                            kw_agent_t **out, size_t *n_out)
{
    sq_store_t *s = (sq_store_t *)base;
    if (n > SIZE_MAX / sizeof(kw_agent_t))
        return KW_ENOMEM;
    kw_agent_t *rows = kw_arena_alloc(a, (n ? n : 1) * sizeof(*rows));
    if (!rows)
        return KW_ENOMEM;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    size_t got = 0;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, ST_AGENT_GET, &st);
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        if (ids[i].len == 0 || ids[i].len > KW__STORE_ID_MAX)
            continue;
        bind_str(st, 1, ids[i]);
        rc = one_agent(c, st, a, &rows[got]);
        if (rc == KW_OK)
            got++;
        else if (rc == KW_ENOTFOUND)
            rc = KW_OK;
    }
    conn_give(s, c);
    if (rc != KW_OK)
        return rc;
    *n_out = sort_unique(rows, got, sizeof(*rows), cmp_agent);
    *out = rows;
    return KW_OK;
}

static int sq_key_get(kw_store_t *base, kw_str_t id, kw_arena_t *a, kw_apikey_t *out)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, ST_KEY_GET, &st);
    if (rc == KW_OK) {
        bind_str(st, 1, id);
        rc = one_key(c, st, a, out);
    }
    conn_give(s, c);
    return rc;
}

static int sq_key_get_by_name(kw_store_t *base, kw_str_t agent_id, kw_str_t name, kw_str_t type,
                              kw_arena_t *a, kw_apikey_t *out)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, ST_KEY_BY_NAME, &st);
    if (rc == KW_OK) {
        bind_str(st, 1, agent_id);
        bind_str(st, 2, name);
        bind_str(st, 3, type);
        rc = one_key(c, st, a, out);
    }
    conn_give(s, c);
    return rc;
}

static int sq_key_find_by_hash(kw_store_t *base, const uint8_t *hash, size_t len, kw_arena_t *a,
                               kw_apikey_t *out)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, ST_KEY_BY_HASH, &st);
    if (rc == KW_OK) {
        sqlite3_bind_blob64(st, 1, hash, len, SQLITE_STATIC);
        rc = one_key(c, st, a, out);
    }
    conn_give(s, c);
    return rc;
}

/* Keyset pagination on the (agent_id, created_at_us, id) index: no OFFSET, so a page
 * costs the same wherever it starts. */
static int sq_keys_of_agent(kw_store_t *base, kw_str_t agent_id, int64_t after_created_us,
                            kw_str_t after_id, size_t limit, kw_arena_t *a, kw_apikey_t **out,
                            size_t *n_out)
{
    sq_store_t *s = (sq_store_t *)base;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    kw_apikey_t *rows = NULL;
    size_t n = 0, cap = 0;
    sqlite3_int64 lim = limit > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)limit;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    bool first = after_id.len == 0;
    rc = stmt(c, first ? ST_KEYS_FIRST : ST_KEYS_AFTER, &st);
    if (rc == KW_OK) {
        bind_str(st, 1, agent_id);
        if (first) {
            sqlite3_bind_int64(st, 2, lim);
        } else {
            sqlite3_bind_int64(st, 2, after_created_us);
            bind_str(st, 3, after_id);
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
            rc = db_err(c, src, "list keys", NULL);
        stmt_done(st);
    }
    conn_give(s, c);
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

static int sq_keys_by_ids(kw_store_t *base, kw_str_t agent_id, const kw_str_t *ids, size_t n,
                          kw_arena_t *a, kw_apikey_t **out, size_t *n_out)
{
    sq_store_t *s = (sq_store_t *)base;
    if (n > SIZE_MAX / sizeof(kw_apikey_t))
        return KW_ENOMEM;
    kw_apikey_t *rows = kw_arena_alloc(a, n * sizeof(*rows));
    if (!rows)
        return KW_ENOMEM;
    conn_t *c;
    sqlite3_stmt *st = NULL;
    size_t got = 0;
    int rc = conn_take(s, &c, NULL);
    if (rc != KW_OK)
        return rc;
    rc = stmt(c, ST_KEY_GET_OF_AGENT, &st);
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        if (ids[i].len == 0 || ids[i].len > KW__STORE_ID_MAX)
            continue;
        bind_str(st, 1, ids[i]);
        bind_str(st, 2, agent_id);
        rc = one_key(c, st, a, &rows[got]);
        if (rc == KW_OK)
            got++;
        else if (rc == KW_ENOTFOUND)
            rc = KW_OK;
    }
    conn_give(s, c);
    if (rc != KW_OK)
        return rc;
    *n_out = sort_unique(rows, got, sizeof(*rows), cmp_key);
    *out = rows;
    return KW_OK;
}

/* ---- transactions ---- */

static void tx_end(sq_tx_t *t)
{
    conn_give((sq_store_t *)t->base.store, t->c);
    kw__store_tx_fini(&t->base);
    kw_free(t);
}

static int sq_tx_begin(kw_store_t *base, kw_store_tx_t **out, kw_diag_t *diag)
{
    sq_store_t *s = (sq_store_t *)base;
    sq_tx_t *t = kw_calloc(1, sizeof(*t));
    if (!t)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    kw__store_tx_init(&t->base, base);
    int rc = conn_take(s, &t->c, diag);
    if (rc != KW_OK) {
        kw_free(t);
        return rc;
    }
    rc = exec_id(t->c, ST_BEGIN_WRITE, "begin", diag);
    if (rc != KW_OK) {
        tx_end(t);
        return rc;
    }
    *out = &t->base;
    return KW_OK;
}

static void sq_tx_rollback(kw_store_tx_t *base)
{
    sq_tx_t *t = (sq_tx_t *)base;
    if (exec_id(t->c, ST_ROLLBACK, "rollback", NULL) != KW_OK)
        kw_log(KW_LOG_ERROR, KW_MODULE, "rollback failed; the connection will be dropped");
    tx_end(t);
}

static int sq_tx_commit(kw_store_tx_t *base, kw_revision_t *rev, kw_diag_t *diag)
{
    sq_tx_t *t = (sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    kw_revision_t r = 0;
    int rc = stmt(t->c, ST_REV_BUMP, &st);
    if (rc == KW_OK) {
        int src = sqlite3_step(st);
        if (src == SQLITE_ROW)
            r = (kw_revision_t)sqlite3_column_int64(st, 0);
        else
            rc = src == SQLITE_DONE ? KW_EDB : db_err(t->c, src, "bump revision", diag);
        stmt_done(st);
    }
    if (rc == KW_OK)
        rc = exec_id(t->c, ST_COMMIT, "commit", diag);
    if (rc != KW_OK) {
        kw_diag_set(diag, rc, 0, 0, "the transaction could not be committed; nothing changed");
        sq_tx_rollback(base);
        return rc;
    }
    tx_end(t);
    if (rev)
        *rev = r;
    return KW_OK;
}

static int sq_tx_agent_insert(kw_store_tx_t *base, const kw_agent_t *ag)
{
    sq_tx_t *t = (sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = stmt(t->c, ST_AGENT_INSERT, &st);
    if (rc != KW_OK)
        return rc;
    sqlite3_bind_text(st, 1, ag->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ag->account_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, ag->name, -1, SQLITE_STATIC);
    if (ag->description)
        sqlite3_bind_text(st, 4, ag->description, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_int64(st, 5, ag->created_at_us);
    return exec_done(t->c, st, "insert agent", NULL);
}

static int sq_tx_key_insert(kw_store_tx_t *base, const kw_apikey_t *k)
{
    sq_tx_t *t = (sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = stmt(t->c, ST_KEY_INSERT, &st);
    if (rc != KW_OK)
        return rc;
    sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, k->type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, k->created_at_us);
    bind_blob_or_null(st, 6, k->hash, k->hash_len);
    bind_blob_or_null(st, 7, k->secret_enc, k->secret_enc_len);
    return exec_done(t->c, st, "insert key", NULL);
}

/* Steps a bound DELETE ... RETURNING <rel cols> to the end, recording each row as a
 * DELETE change. SQLite deletes every row on the first step, so a failure while
 * recording leaves the tx out of step with its change list: the caller's error then
 * poisons the tx (store.c). */
static int delete_recording(sq_tx_t *t, sqlite3_stmt *st, const char *what, size_t *n,
                            kw_diag_t *diag)
{
    int rc = KW_OK, src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        kw_str_t f[6];
        for (int i = 0; i < 6; i++)
            f[i] = col_str(st, i);
        rc = kw__store_tx_record(&t->base, KW_OP_DELETE, f);
        if (rc != KW_OK)
            break;
        if (n)
            (*n)++;
    }
    if (rc == KW_OK && src != SQLITE_DONE)
        rc = db_err(t->c, src, what, diag);
    stmt_done(st);
    if (rc == KW_ENOMEM)
        kw_diag_set(diag, rc, 0, 0, "out of memory");
    return rc;
}

/* Deletes every relationship naming type:id as its resource, then as its subject. */
static int delete_rels_of(sq_tx_t *t, const char *type, kw_str_t id)
{
    const int ids[2] = {ST_REL_DEL_RESOURCE, ST_REL_DEL_SUBJECT};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st = NULL;
        int rc = stmt(t->c, ids[i], &st);
        if (rc != KW_OK)
            return rc;
        sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
        bind_str(st, 2, id);
        rc = delete_recording(t, st, "delete relationships of an object", NULL, NULL);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

static int sq_tx_key_delete(kw_store_tx_t *base, kw_str_t id)
{
    sq_tx_t *t = (sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = stmt(t->c, ST_KEY_DELETE, &st);
    if (rc != KW_OK)
        return rc;
    bind_str(st, 1, id);
    rc = exec_done(t->c, st, "delete key", NULL);
    if (rc != KW_OK)
        return rc;
    if (sqlite3_changes(t->c->db) == 0)
        return KW_ENOTFOUND;
    return delete_rels_of(t, KW__STORE_TYPE_KEY, id);
}

static int sq_tx_agent_delete(kw_store_tx_t *base, kw_str_t id)
{
    sq_tx_t *t = (sq_tx_t *)base;
    sqlite3_stmt *st = NULL;
    int rc = stmt(t->c, ST_AGENT_EXISTS, &st);
    if (rc != KW_OK)
        return rc;
    bind_str(st, 1, id);
    int src = sqlite3_step(st);
    stmt_done(st);
    if (src == SQLITE_DONE)
        return KW_ENOTFOUND;
    if (src != SQLITE_ROW)
        return db_err(t->c, src, "find agent", NULL);
    /* The keys' relationships first: the agent row's cascade removes the key rows the
     * sub-selects need. */
    const int keyed[2] = {ST_REL_DEL_RESOURCE_KEYS, ST_REL_DEL_SUBJECT_KEYS};
    for (int i = 0; i < 2; i++) {
        rc = stmt(t->c, keyed[i], &st);
        if (rc != KW_OK)
            return rc;
        bind_str(st, 1, id);
        sqlite3_bind_text(st, 2, KW__STORE_TYPE_KEY, -1, SQLITE_STATIC);
        rc = delete_recording(t, st, "delete relationships of an agent's keys", NULL, NULL);
        if (rc != KW_OK)
            return rc;
    }
    rc = delete_rels_of(t, KW__STORE_TYPE_AGENT, id);
    if (rc != KW_OK)
        return rc;
    rc = stmt(t->c, ST_AGENT_DELETE, &st);
    if (rc != KW_OK)
        return rc;
    bind_str(st, 1, id);
    rc = exec_done(t->c, st, "delete agent", NULL);
    /* An error here comes after relationship deletes: make it poison the tx. */
    return rc == KW_OK || rc == KW_ENOMEM ? rc : KW_EDB;
}

static void bind_rel(sqlite3_stmt *st, const kw_rel_t *r)
{
    bind_str(st, 1, r->resource.type);
    bind_str(st, 2, r->resource.id);
    bind_str(st, 3, r->relation);
    bind_str(st, 4, r->subject.type);
    bind_str(st, 5, r->subject.id);
    bind_str(st, 6, r->subject.relation);
}

static int conflict_diag(const kw_rel_t *r, size_t i, kw_diag_t *diag)
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(r, &b);
    int rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                         "could not CREATE relationship `%.*s` (update %zu), as it already exists",
                         b.failed || !b.ptr ? 0 : (int)b.len, b.ptr ? b.ptr : "", i);
    kw_buf_free(&b);
    return rc;
}

static int sq_tx_rel_write(kw_store_tx_t *base, const kw_update_t *ups, size_t n, kw_diag_t *diag)
{
    sq_tx_t *t = (sq_tx_t *)base;
    for (size_t i = 0; i < n; i++) {
        const kw_rel_t *r = &ups[i].rel;
        const kw_str_t f[6] = {r->resource.type, r->resource.id, r->relation,
                               r->subject.type,  r->subject.id,  r->subject.relation};
        int id = ups[i].op == KW_OP_CREATE  ? ST_REL_CREATE
                 : ups[i].op == KW_OP_TOUCH ? ST_REL_TOUCH
                                            : ST_REL_DELETE;
        sqlite3_stmt *st = NULL;
        int rc = stmt(t->c, id, &st);
        if (rc != KW_OK)
            return rc;
        /* Record first so an OOM leaves the database untouched by this update. */
        bool del = ups[i].op == KW_OP_DELETE;
        rc = kw__store_tx_record(base, del ? KW_OP_DELETE : KW_OP_TOUCH, f);
        if (rc != KW_OK)
            return kw_diag_set(diag, rc, 0, 0, "out of memory");
        bind_rel(st, r);
        rc = exec_done(t->c, st, "write relationship", NULL);
        if (rc != KW_OK) {
            kw__store_tx_unrecord(base);
            if (rc == KW_ECONFLICT)
                return conflict_diag(r, i, diag);
            return kw_diag_set(diag, rc, 0, 0, "database error");
        }
        if (del && sqlite3_changes(t->c->db) == 0)
            kw__store_tx_unrecord(base);
    }
    return KW_OK;
}

static int filter_stmt(conn_t *c, unsigned mask, sqlite3_stmt **out)
{
    if (!c->filter_st[mask]) {
        char sql[512];
        size_t off = (size_t)snprintf(sql, sizeof(sql),
                                      "DELETE FROM relationships WHERE resource_type = ?1");
        for (unsigned i = 0; i < 5; i++)
            if (mask & (1u << i))
                off += (size_t)snprintf(sql + off, sizeof(sql) - off, " AND %s = ?%u",
                                        g_filter_cols[i], i + 2);
        snprintf(sql + off, sizeof(sql) - off, " RETURNING " REL_COLS);
        int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->filter_st[mask],
                                    NULL);
        if (rc != SQLITE_OK)
            return db_err(c, rc, "prepare filter delete", NULL);
    }
    *out = c->filter_st[mask];
    return KW_OK;
}

static int sq_tx_rel_delete_matching(kw_store_tx_t *base, const kw_filter_t *f, size_t *n_deleted,
                                     kw_diag_t *diag)
{
    sq_tx_t *t = (sq_tx_t *)base;
    const kw_str_t vals[5] = {f->resource_id, f->relation, f->subject_type, f->subject_id,
                              f->subject_relation};
    const bool on[5] = {
        f->resource_id.len > 0, f->relation.len > 0, f->has_subject && f->subject_type.len > 0,
        f->has_subject && f->subject_id.len > 0, f->has_subject && f->subject_relation_set};
    unsigned mask = 0;
    for (unsigned i = 0; i < 5; i++)
        if (on[i])
            mask |= 1u << i;
    sqlite3_stmt *st = NULL;
    int rc = filter_stmt(t->c, mask, &st);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "database error");
    bind_str(st, 1, f->resource_type);
    for (int i = 0; i < 5; i++)
        if (on[i])
            bind_str(st, i + 2, vals[i]);
    *n_deleted = 0;
    return delete_recording(t, st, "delete matching relationships", n_deleted, diag);
}

static const kw_store_ops_t g_sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .meta_get = sq_meta_get,
    .meta_init = sq_meta_init,
    .meta_set = sq_meta_set,
    .load_relationships = sq_load_relationships,
    .revision = sq_revision,
    .agent_get = sq_agent_get,
    .agent_get_by_name = sq_agent_get_by_name,
    .agents_by_ids = sq_agents_by_ids,
    .key_get = sq_key_get,
    .key_get_by_name = sq_key_get_by_name,
    .key_find_by_hash = sq_key_find_by_hash,
    .keys_of_agent = sq_keys_of_agent,
    .keys_by_ids = sq_keys_by_ids,
    .tx_begin = sq_tx_begin,
    .tx_commit = sq_tx_commit,
    .tx_rollback = sq_tx_rollback,
    .tx_agent_insert = sq_tx_agent_insert,
    .tx_agent_delete = sq_tx_agent_delete,
    .tx_key_insert = sq_tx_key_insert,
    .tx_key_delete = sq_tx_key_delete,
    .tx_rel_write = sq_tx_rel_write,
    .tx_rel_delete_matching = sq_tx_rel_delete_matching,
};
