/*
 * tests/unit/store/store_test.c - the SQLite store on a real temporary database file.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "kw_test.h"
#include "store/store.h"

/* ---- fixtures ---- */

typedef struct tmpdb {
    char dir[64];
    char path[128];
    char url[160];
} tmpdb_t;

static bool tmpdb_make(tmpdb_t *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/kw_store_XXXXXX");
    if (!mkdtemp(t->dir))
        return false;
    snprintf(t->path, sizeof(t->path), "%s/keyward.db", t->dir);
    snprintf(t->url, sizeof(t->url), "sqlite:%s", t->path);
    return true;
}

static void tmpdb_remove(tmpdb_t *t)
{
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < KW_ARRAY_LEN(suffix); i++) {
        char p[160];
        snprintf(p, sizeof(p), "%s%s", t->path, suffix[i]);
        unlink(p);
    }
    rmdir(t->dir);
}

/* Runs one SQL statement on the file directly (outside the store) and returns the first
 * column of the first row as an integer (or -1). */
static long long raw_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    long long v = -1;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        sqlite3_close(db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        else if (rc == SQLITE_DONE)
            v = 0;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static kw_agent_t mk_agent(const char *id, const char *account, const char *name)
{
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    size_t n = strlen(id) < sizeof(ag.id) - 1 ? strlen(id) : sizeof(ag.id) - 1;
    memcpy(ag.id, id, n);
    ag.account_id = account;
    ag.name = name;
    ag.description = "an agent";
    ag.created_at_us = 1700000000000000LL;
    return ag;
}

static kw_apikey_t mk_key(const char *id, const char *agent_id, const char *name,
                          const uint8_t *hash, size_t hash_len)
{
    kw_apikey_t k;
    memset(&k, 0, sizeof(k));
    snprintf(k.id, sizeof(k.id), "%.36s", id);
    snprintf(k.agent_id, sizeof(k.agent_id), "%.36s", agent_id);
    k.name = name;
    k.type = "internal";
    k.created_at_us = 1700000000000001LL;
    k.hash = hash;
    k.hash_len = hash_len;
    return k;
}

static kw_update_t mk_up(kw_op_t op, const char *rt, const char *rid, const char *rel,
                         const char *st, const char *sid, const char *srel)
{
    kw_update_t u = {op,
                     {{kw_str_c(rt), kw_str_c(rid)},
                      kw_str_c(rel),
                      {kw_str_c(st), kw_str_c(sid), srel ? kw_str_c(srel) : KW_STR_NULL}}};
    return u;
}

/* Canonical "rt:rid#rel@st:sid[#srel]" text of a relationship into buf. */
static void rel_text(const kw_rel_t *r, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.*s:%.*s#%.*s@%.*s:%.*s%s%.*s", KW_STR_FMT(r->resource.type),
             KW_STR_FMT(r->resource.id), KW_STR_FMT(r->relation), KW_STR_FMT(r->subject.type),
             KW_STR_FMT(r->subject.id), r->subject.relation.len ? "#" : "",
             KW_STR_FMT(r->subject.relation));
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects every stored relationship as sorted text. */
typedef struct relset {
    char *items[256];
    size_t n;
} relset_t;

static int collect_rel(const kw_rel_t *r, void *ud)
{
    relset_t *s = ud;
    if (s->n >= KW_ARRAY_LEN(s->items))
        return 99;
    char buf[512];
    rel_text(r, buf, sizeof(buf));
    s->items[s->n++] = strdup(buf);
    return 0;
}

static void relset_free(relset_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i]);
    s->n = 0;
}

static int load_all(kw_store_t *s, relset_t *out, kw_revision_t *rev)
{
    out->n = 0;
    int rc = kw_store_load_relationships(s, collect_rel, out, rev);
    qsort(out->items, out->n, sizeof(char *), cmp_cstr);
    return rc;
}

/* Writes `n` updates in one committed tx. */
static int write_rels(kw_store_t *s, const kw_update_t *ups, size_t n, kw_revision_t *rev)
{
    kw_store_tx_t *tx = NULL;
    int rc = kw_store_tx_begin(s, &tx, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw_store_tx_rel_write(tx, ups, n, NULL);
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    return kw_store_tx_commit(tx, rev, NULL);
}

static int insert_agent(kw_store_t *s, const kw_agent_t *ag)
{
    kw_store_tx_t *tx = NULL;
    int rc = kw_store_tx_begin(s, &tx, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw_store_tx_agent_insert(tx, ag);
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    return kw_store_tx_commit(tx, NULL, NULL);
}

#define AG1 "11111111-1111-4111-8111-111111111111"
#define AG2 "22222222-2222-4222-8222-222222222222"
#define K1 "aaaaaaaa-0000-4000-8000-000000000001"
#define K2 "aaaaaaaa-0000-4000-8000-000000000002"
#define K3 "aaaaaaaa-0000-4000-8000-000000000003"

/* ---- open, URLs, migrations ---- */

KW_TEST(store_open_migrations_idempotent)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    kw_diag_t d = {0};
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_OK);
    KW_ASSERT_STR_EQ(kw_store_backend(s), "sqlite");
    KW_ASSERT_EQ(kw_store_ping(s), KW_OK);
    kw_revision_t rev = 99;
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, 0);
    kw_store_close(s);
    long long n1 = raw_sql(t.path, "SELECT count(*) FROM schema_migrations");
    KW_ASSERT(n1 >= 1);
    /* Reopen twice: nothing re-applied, data intact, WAL in force. */
    for (int i = 0; i < 2; i++) {
        KW_ASSERT_EQ(kw_store_open(t.path, &s, &d), KW_OK); /* bare path this time */
        kw_store_close(s);
    }
    KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM schema_migrations"), n1);
    KW_ASSERT_EQ(raw_sql(t.path, "SELECT max(version) FROM schema_migrations"), n1);
    KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM pragma_journal_mode WHERE "
                                 "journal_mode = 'wal'"),
                 1);
    tmpdb_remove(&t);
}

KW_TEST(store_open_refuses_newer_database)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    kw_diag_t d = {0};
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_OK);
    kw_store_close(s);
    KW_ASSERT_EQ(raw_sql(t.path, "INSERT INTO schema_migrations VALUES (9999, 0)"), 0);
    s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_EUNSUPPORTED);
    KW_ASSERT(s == NULL);
    KW_ASSERT(strstr(d.msg, "newer keyward") != NULL);
    KW_ASSERT(strstr(d.msg, "9999") != NULL);
    tmpdb_remove(&t);
}

KW_TEST(store_open_urls_and_bad_paths)
{
    kw_store_t *s = NULL;
    kw_diag_t d = {0};
    /* postgres URLs go to the PostgreSQL backend, never to a file named "postgres:...":
     * with nothing listening on port 1 that is a database error. */
    KW_ASSERT_EQ(kw_store_open("postgres://u@127.0.0.1:1/db?connect_timeout=2", &s, &d), KW_EDB);
    KW_ASSERT_EQ(kw_store_open("postgresql://u@127.0.0.1:1/db?connect_timeout=2", &s, &d), KW_EDB);
    KW_ASSERT(access("postgres:", F_OK) != 0);
    KW_ASSERT_EQ(kw_store_open("sqlite:/nonexistent-kw-dir/x/keyward.db", &s, &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "does not exist") != NULL);
    KW_ASSERT_EQ(kw_store_open("sqlite:", &s, &d), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_open("", &s, &d), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_open("mysql://x/y", &s, &d), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_open(":memory:", &s, &d), KW_EINVAL);
    KW_ASSERT(s == NULL);
    if (geteuid() != 0) { /* root writes anywhere: the check cannot fail for it */
        tmpdb_t t;
        KW_ASSERT(tmpdb_make(&t));
        KW_ASSERT_EQ(chmod(t.dir, 0500), 0);
        KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_EINVAL);
        KW_ASSERT(strstr(d.msg, "not writable") != NULL);
        KW_ASSERT_EQ(chmod(t.dir, 0700), 0);
        tmpdb_remove(&t);
    }
    /* sqlite:///abs and a relative bare file name both work. */
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    char url[200];
    snprintf(url, sizeof(url), "sqlite://%s", t.path);
    KW_ASSERT_EQ(kw_store_open(url, &s, &d), KW_OK);
    kw_store_close(s);
    char cwd[512];
    KW_ASSERT(getcwd(cwd, sizeof(cwd)) != NULL);
    KW_ASSERT_EQ(chdir(t.dir), 0);
    int rc = kw_store_open("keyward.db", &s, &d);
    KW_ASSERT_EQ(chdir(cwd), 0);
    KW_ASSERT_EQ(rc, KW_OK);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- file modes: the database holds secrets ---- */

static unsigned file_mode(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (unsigned)(sb.st_mode & 07777) : 0xffffu;
}

KW_TEST(store_open_creates_private_files)
{
    mode_t old_umask = umask(022); /* the usual one: SQLite alone would make 0644 files */
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    kw_diag_t d = {0};
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_OK);
    kw_agent_t ag = {.id = AG1, .name = "a", .account_id = "acct", .created_at_us = 1};
    KW_ASSERT_EQ(insert_agent(s, &ag), KW_OK);
    /* While the store is open the -wal and -shm files exist; all three are 0600. */
    char wal[160], shm[160];
    snprintf(wal, sizeof(wal), "%s-wal", t.path);
    snprintf(shm, sizeof(shm), "%s-shm", t.path);
    KW_ASSERT_EQ(file_mode(t.path), 0600);
    KW_ASSERT_EQ(file_mode(wal), 0600);
    KW_ASSERT_EQ(file_mode(shm), 0600);
    kw_store_close(s);
    umask(old_umask);
    tmpdb_remove(&t);
}

KW_TEST(store_open_refuses_files_open_to_group_or_others)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    kw_diag_t d = {0};
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_OK);
    kw_store_close(s);
    s = NULL;
    /* A file made by an older keyward (0644) or loosened by hand: refused, untouched. */
    KW_ASSERT_EQ(chmod(t.path, 0644), 0);
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_EFORBIDDEN);
    KW_ASSERT(s == NULL);
    KW_ASSERT(strstr(d.msg, t.path) != NULL);
    KW_ASSERT(strstr(d.msg, "0644") != NULL);
    KW_ASSERT(strstr(d.msg, "chmod 600") != NULL);
    KW_ASSERT_EQ(file_mode(t.path), 0644);
    /* Group access alone is enough to refuse; so is a NULL options pointer's default. */
    KW_ASSERT_EQ(chmod(t.path, 0620), 0);
    KW_ASSERT_EQ(kw_store_open_with(t.url, NULL, &s, &d), KW_EFORBIDDEN);
    /* Allowed explicitly, it opens (and the mode is left as the operator set it). */
    const kw_store_opts_t allow = {.allow_insecure_mode = true};
    KW_ASSERT_EQ(kw_store_open_with(t.url, &allow, &s, &d), KW_OK);
    kw_store_close(s);
    KW_ASSERT_EQ(file_mode(t.path), 0620);
    /* The fix the message names works. */
    KW_ASSERT_EQ(chmod(t.path, 0600), 0);
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_OK);
    kw_store_close(s);
    /* A leftover -wal readable by others is refused too (it holds recent writes). */
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", t.path);
    FILE *f = fopen(wal, "w");
    KW_ASSERT(f != NULL);
    fclose(f);
    KW_ASSERT_EQ(chmod(wal, 0604), 0);
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_EFORBIDDEN);
    KW_ASSERT(strstr(d.msg, "-wal") != NULL);
    KW_ASSERT_EQ(unlink(wal), 0);
    KW_ASSERT_EQ(kw_store_open(t.url, &s, &d), KW_OK);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- CRUD ---- */

KW_TEST(store_agent_key_crud)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);

    kw_agent_t ag1 = mk_agent(AG1, "acct", "alpha");
    kw_agent_t ag2 = mk_agent(AG2, "acct", "beta");
    ag2.description = NULL;
    ag2.created_at_us = ag1.created_at_us - 5; /* older: sorts first */
    KW_ASSERT_EQ(insert_agent(s, &ag1), KW_OK);
    KW_ASSERT_EQ(insert_agent(s, &ag2), KW_OK);

    kw_agent_t got;
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR(AG1), a, &got), KW_OK);
    KW_ASSERT_STR_EQ(got.id, AG1);
    KW_ASSERT_STR_EQ(got.name, "alpha");
    KW_ASSERT_STR_EQ(got.account_id, "acct");
    KW_ASSERT_STR_EQ(got.description, "an agent");
    KW_ASSERT_EQ(got.created_at_us, ag1.created_at_us);
    KW_ASSERT_EQ(kw_store_agent_get_by_name(s, KW_STR("acct"), KW_STR("beta"), a, &got), KW_OK);
    KW_ASSERT_STR_EQ(got.id, AG2);
    KW_ASSERT(got.description == NULL);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR("not-a-uuid"), a, &got), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_agent_get_by_name(s, KW_STR("other"), KW_STR("beta"), a, &got),
                 KW_ENOTFOUND);

    kw_str_t ids[] = {KW_STR(AG1), KW_STR("absent"), KW_STR(AG2), KW_STR(AG1)};
    kw_agent_t *rows = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_store_agents_by_ids(s, ids, 4, a, &rows, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_STR_EQ(rows[0].id, AG2);
    KW_ASSERT_STR_EQ(rows[1].id, AG1);
    bool present[4] = {false, true, false, false};
    KW_ASSERT_EQ(kw_store_agents_present(s, ids, 4, a, present), KW_OK);
    KW_ASSERT(present[0] && !present[1] && present[2] && present[3]);

    uint8_t h1[32], h2[32], enc[48];
    memset(h1, 0xA1, sizeof(h1));
    memset(h2, 0xB2, sizeof(h2));
    memset(enc, 0x5E, sizeof(enc));
    kw_apikey_t k1 = mk_key(K1, AG1, "ci", h1, sizeof(h1));
    kw_apikey_t k2 = mk_key(K2, AG1, "gh", NULL, 0);
    k2.type = "github";
    k2.secret_enc = enc;
    k2.secret_enc_len = sizeof(enc);
    k2.created_at_us = k1.created_at_us - 1;
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k2), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);

    kw_apikey_t kg;
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &kg), KW_OK);
    KW_ASSERT_STR_EQ(kg.agent_id, AG1);
    KW_ASSERT_STR_EQ(kg.name, "ci");
    KW_ASSERT_STR_EQ(kg.type, "internal");
    KW_ASSERT_EQ(kg.hash_len, 32);
    KW_ASSERT(memcmp(kg.hash, h1, 32) == 0);
    KW_ASSERT_EQ(kg.secret_enc_len, 0);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h1, sizeof(h1), a, &kg), KW_OK);
    KW_ASSERT_STR_EQ(kg.id, K1);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h2, sizeof(h2), a, &kg), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_get_by_name(s, KW_STR(AG1), KW_STR("gh"), KW_STR("github"), a, &kg),
                 KW_OK);
    KW_ASSERT_STR_EQ(kg.id, K2);
    KW_ASSERT_EQ(kg.hash_len, 0);
    KW_ASSERT_EQ(kg.secret_enc_len, sizeof(enc));
    KW_ASSERT(memcmp(kg.secret_enc, enc, sizeof(enc)) == 0);
    KW_ASSERT_EQ(kw_store_key_get_by_name(s, KW_STR(AG1), KW_STR("gh"), KW_STR("slack"), a, &kg),
                 KW_ENOTFOUND);

    kw_str_t kids[] = {KW_STR(K1), KW_STR(K2), KW_STR(K3)};
    kw_apikey_t *krows = NULL;
    KW_ASSERT_EQ(kw_store_keys_by_ids(s, KW_STR(AG1), kids, 3, a, &krows, &n), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_STR_EQ(krows[0].id, K2);
    KW_ASSERT_STR_EQ(krows[1].id, K1);
    KW_ASSERT_EQ(kw_store_keys_by_ids(s, KW_STR(AG2), kids, 3, a, &krows, &n), KW_OK);
    KW_ASSERT_EQ(n, 0);

    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_delete(tx, KW_STR(K1)), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_delete(tx, KW_STR(K1)), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_tx_key_delete(tx, KW_STR("zzz")), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &kg), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h1, sizeof(h1), a, &kg), KW_ENOTFOUND);

    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

KW_TEST(store_unique_conflicts_change_nothing)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_agent_t ag1 = mk_agent(AG1, "acct", "alpha");
    KW_ASSERT_EQ(insert_agent(s, &ag1), KW_OK);
    uint8_t h1[32];
    memset(h1, 7, sizeof(h1));
    kw_apikey_t k1 = mk_key(K1, AG1, "ci", h1, sizeof(h1));
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    kw_update_t r1 = mk_up(KW_OP_TOUCH, "agent", AG1, "owner", "user", "u1", NULL);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &r1, 1, NULL), KW_OK);
    kw_revision_t rev0 = 0;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev0, NULL), KW_OK);

    /* Same (account, name), new id: conflict; the tx's earlier work goes with it. */
    kw_agent_t dup = mk_agent(AG2, "acct", "alpha");
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    kw_update_t r2 = mk_up(KW_OP_TOUCH, "agent", AG2, "owner", "user", "u2", NULL);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &r2, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &dup), KW_ECONFLICT);
    kw_store_tx_rollback(tx);
    /* Same id: conflict too. */
    dup = mk_agent(AG1, "acct2", "other");
    KW_ASSERT_EQ(insert_agent(s, &dup), KW_ECONFLICT);

    /* Keys: same (agent, name, type); same hash; absent agent. */
    kw_apikey_t kd = mk_key(K2, AG1, "ci", NULL, 0);
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &kd), KW_ECONFLICT);
    kd = mk_key(K2, AG1, "other", h1, sizeof(h1));
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &kd), KW_ECONFLICT);
    kd = mk_key(K2, AG2, "other", NULL, 0);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &kd), KW_ENOTFOUND);
    /* CREATE of an existing relationship. */
    kw_diag_t d = {0};
    kw_update_t c1 = mk_up(KW_OP_CREATE, "agent", AG1, "owner", "user", "u1", "...");
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &c1, 1, &d), KW_ECONFLICT);
    KW_ASSERT(strstr(d.msg, "already exists") != NULL);
    const kw_update_t *ch = NULL;
    size_t n_ch = 9;
    kw_store_tx_changes(tx, &ch, &n_ch);
    KW_ASSERT_EQ(n_ch, 0);
    kw_store_tx_rollback(tx);

    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, rev0); /* no commit since */
    kw_agent_t got;
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR(AG2), a, &got), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR(AG1), a, &got), KW_OK);
    KW_ASSERT_STR_EQ(got.account_id, "acct");
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K2), a, &(kw_apikey_t){0}), KW_ENOTFOUND);
    relset_t rs;
    KW_ASSERT_EQ(load_all(s, &rs, NULL), KW_OK);
    size_t n_rels = rs.n;
    relset_free(&rs);
    KW_ASSERT_EQ(n_rels, 1);
    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- deletes and change lists ---- */

static bool change_set_eq(const kw_update_t *ups, size_t n, const char *const *want, size_t n_want)
{
    if (n != n_want)
        return false;
    char *got[64];
    if (n > 64)
        return false;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        char buf[512];
        rel_text(&ups[i].rel, buf, sizeof(buf));
        got[i] = strdup(buf);
        if (ups[i].op != KW_OP_DELETE)
            ok = false;
    }
    qsort(got, n, sizeof(char *), cmp_cstr);
    const char *w[64];
    memcpy(w, want, n * sizeof(char *));
    qsort(w, n, sizeof(char *), cmp_cstr);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(got[i], w[i]) != 0) {
            fprintf(stderr, "  change %zu: got %s want %s\n", i, got[i], w[i]);
            ok = false;
        }
        free(got[i]);
    }
    return ok;
}

KW_TEST(store_agent_delete_cascades_and_reports)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_agent_t ag1 = mk_agent(AG1, "acct", "alpha"), ag2 = mk_agent(AG2, "acct", "beta");
    KW_ASSERT_EQ(insert_agent(s, &ag1), KW_OK);
    KW_ASSERT_EQ(insert_agent(s, &ag2), KW_OK);
    kw_apikey_t k1 = mk_key(K1, AG1, "a", NULL, 0), k2 = mk_key(K2, AG1, "b", NULL, 0);
    kw_apikey_t k3 = mk_key(K3, AG2, "c", NULL, 0);
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k2), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k3), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    const kw_update_t ups[] = {
        mk_up(KW_OP_TOUCH, "agent", AG1, "account", "account", "acct", NULL),
        mk_up(KW_OP_TOUCH, "agent", AG1, "owner", "user", "u1", NULL),
        mk_up(KW_OP_TOUCH, "agent", AG1, "self", "agent", AG1, NULL),
        mk_up(KW_OP_TOUCH, "doc", "d1", "viewer", "agent", AG1, NULL),
        mk_up(KW_OP_TOUCH, "group", "g", "member", "agent", AG1, "self"),
        mk_up(KW_OP_TOUCH, "agent_api_key", K1, "parent_agent", "agent", AG1, NULL),
        mk_up(KW_OP_TOUCH, "agent_api_key", K2, "owner", "user", "u1", NULL),
        mk_up(KW_OP_TOUCH, "doc", "d2", "viewer", "agent_api_key", K2, NULL),
        /* survivors: the other agent, its key, an unrelated object with the same id */
        mk_up(KW_OP_TOUCH, "agent", AG2, "self", "agent", AG2, NULL),
        mk_up(KW_OP_TOUCH, "agent_api_key", K3, "parent_agent", "agent", AG2, NULL),
        mk_up(KW_OP_TOUCH, "doc", AG1, "viewer", "user", "u1", NULL),
    };
    KW_ASSERT_EQ(write_rels(s, ups, KW_ARRAY_LEN(ups), NULL), KW_OK);

    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_delete(tx, KW_STR(AG1)), KW_OK);
    const kw_update_t *ch = NULL;
    size_t n_ch = 0;
    kw_store_tx_changes(tx, &ch, &n_ch);
    const char *want[] = {
        ("agent:" AG1 "#account@account:acct"), ("agent:" AG1 "#owner@user:u1"),
        ("agent:" AG1 "#self@agent:" AG1),      ("doc:d1#viewer@agent:" AG1),
        ("group:g#member@agent:" AG1 "#self"),  ("agent_api_key:" K1 "#parent_agent@agent:" AG1),
        ("agent_api_key:" K2 "#owner@user:u1"), ("doc:d2#viewer@agent_api_key:" K2),
    };
    KW_ASSERT(change_set_eq(ch, n_ch, want, KW_ARRAY_LEN(want)));
    KW_ASSERT_EQ(kw_store_tx_agent_delete(tx, KW_STR(AG1)), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);

    kw_apikey_t kg;
    kw_agent_t ag;
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR(AG1), a, &ag), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &kg), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K2), a, &kg), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K3), a, &kg), KW_OK);
    relset_t rs;
    KW_ASSERT_EQ(load_all(s, &rs, NULL), KW_OK);
    bool ok = rs.n == 3 && strcmp(rs.items[0], "agent:" AG2 "#self@agent:" AG2) == 0 &&
              strcmp(rs.items[1], "agent_api_key:" K3 "#parent_agent@agent:" AG2) == 0 &&
              strcmp(rs.items[2], "doc:" AG1 "#viewer@user:u1") == 0;
    relset_free(&rs);
    KW_ASSERT(ok);

    /* Key delete: the key's relationships both ways, nothing else. */
    const kw_update_t more[] = {
        mk_up(KW_OP_TOUCH, "agent_api_key", K3, "owner", "user", "u9", NULL),
        mk_up(KW_OP_TOUCH, "doc", "d3", "viewer", "agent_api_key", K3, NULL),
    };
    KW_ASSERT_EQ(write_rels(s, more, 2, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_delete(tx, KW_STR(K3)), KW_OK);
    kw_store_tx_changes(tx, &ch, &n_ch);
    const char *want_k[] = {
        ("agent_api_key:" K3 "#parent_agent@agent:" AG2),
        ("agent_api_key:" K3 "#owner@user:u9"),
        ("doc:d3#viewer@agent_api_key:" K3),
    };
    KW_ASSERT(change_set_eq(ch, n_ch, want_k, 3));
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(load_all(s, &rs, NULL), KW_OK);
    n_ch = rs.n;
    relset_free(&rs);
    KW_ASSERT_EQ(n_ch, 2);
    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

KW_TEST(store_rel_write_changes_and_delete_matching)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    const kw_update_t ups[] = {
        mk_up(KW_OP_CREATE, "doc", "1", "viewer", "user", "a", NULL),
        mk_up(KW_OP_TOUCH, "doc", "1", "viewer", "user", "a", NULL), /* already there */
        mk_up(KW_OP_TOUCH, "doc", "1", "editor", "group", "g", "member"),
        mk_up(KW_OP_DELETE, "doc", "9", "viewer", "user", "nobody", NULL), /* absent */
        mk_up(KW_OP_TOUCH, "doc", "2", "viewer", "user", "a", "..."),
        mk_up(KW_OP_TOUCH, "folder", "f", "viewer", "user", "a", NULL),
    };
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, ups, KW_ARRAY_LEN(ups), NULL), KW_OK);
    const kw_update_t *ch = NULL;
    size_t n = 0;
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 5);                  /* the DELETE of an absent row is not recorded */
    KW_ASSERT_EQ(ch[0].op, KW_OP_TOUCH); /* CREATE is reported as TOUCH */
    KW_ASSERT_EQ(ch[4].rel.subject.relation.len, 0);
    KW_ASSERT_EQ(ch[2].rel.subject.relation.len, 6);
    KW_ASSERT(memcmp(ch[2].rel.subject.relation.ptr, "member", 6) == 0);
    kw_update_t bad = mk_up(KW_OP_TOUCH, "doc", "", "viewer", "user", "a", NULL);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &bad, 1, NULL), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);

    /* "..." and "" are the same plain subject. */
    kw_update_t del = mk_up(KW_OP_DELETE, "doc", "2", "viewer", "user", "a", NULL);
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &del, 1, NULL), KW_OK);
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(ch[0].op, KW_OP_DELETE);
    /* Filter: resource type doc, subject type user (any relation of the subject). */
    kw_filter_t f = {0};
    f.resource_type = KW_STR("doc");
    f.has_subject = true;
    f.subject_type = KW_STR("user");
    size_t n_del = 0;
    KW_ASSERT_EQ(kw_store_tx_rel_delete_matching(tx, &f, &n_del, NULL), KW_OK);
    KW_ASSERT_EQ(n_del, 1); /* doc:1#viewer@user:a */
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 2);
    /* Exact subject relation "member". */
    memset(&f, 0, sizeof(f));
    f.resource_type = KW_STR("doc");
    f.has_subject = true;
    f.subject_relation_set = true;
    f.subject_relation = KW_STR("...");
    KW_ASSERT_EQ(kw_store_tx_rel_delete_matching(tx, &f, &n_del, NULL), KW_OK);
    KW_ASSERT_EQ(n_del, 0); /* only the #member subject set is left on doc */
    f.subject_relation = KW_STR("member");
    KW_ASSERT_EQ(kw_store_tx_rel_delete_matching(tx, &f, &n_del, NULL), KW_OK);
    KW_ASSERT_EQ(n_del, 1);
    f.resource_type = KW_STR("");
    KW_ASSERT_EQ(kw_store_tx_rel_delete_matching(tx, &f, &n_del, NULL), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    relset_t rs;
    KW_ASSERT_EQ(load_all(s, &rs, NULL), KW_OK);
    bool ok = rs.n == 1 && strcmp(rs.items[0], "folder:f#viewer@user:a") == 0;
    relset_free(&rs);
    KW_ASSERT(ok);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- transactions and revisions ---- */

KW_TEST(store_rollback_leaves_nothing)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    kw_agent_t ag = mk_agent(AG1, "acct", "alpha");
    kw_apikey_t k = mk_key(K1, AG1, "k", NULL, 0);
    kw_update_t u = mk_up(KW_OP_TOUCH, "agent", AG1, "owner", "user", "u", NULL);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &ag), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &u, 1, NULL), KW_OK);
    kw_store_tx_rollback(tx);
    kw_revision_t rev = 9;
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, 0);
    kw_agent_t got;
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR(AG1), a, &got), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &(kw_apikey_t){0}), KW_ENOTFOUND);
    relset_t rs;
    KW_ASSERT_EQ(load_all(s, &rs, &rev), KW_OK);
    KW_ASSERT_EQ(rs.n, 0);
    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

static int no_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *rel, void *ud)
{
    (void)rev, (void)op, (void)rel, (void)ud;
    return 1;
}

KW_TEST(store_revision_per_commit_survives_reopen)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    for (int i = 1; i <= 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "d%d", i);
        kw_update_t u = mk_up(KW_OP_TOUCH, "doc", id, "viewer", "user", "u", NULL);
        kw_revision_t rev = 0;
        KW_ASSERT_EQ(write_rels(s, &u, 1, &rev), KW_OK);
        KW_ASSERT_EQ(rev, i);
    }
    /* An empty commit is still a commit. */
    kw_store_tx_t *tx = NULL;
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(rev, 6);
    /* One instance per SQLite file: no changelog for followers. */
    kw_revision_t upto = 0;
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 0, no_change, NULL, &upto, NULL), KW_EUNSUPPORTED);
    KW_ASSERT_EQ(kw_store_wait_change(s, 0, &upto), KW_EUNSUPPORTED);
    KW_ASSERT_EQ(kw_store_prune_changelog(s, 1000, 0, NULL, NULL, NULL), KW_EUNSUPPORTED);
    kw_store_close(s);
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, 6);
    relset_t rs;
    rev = 0;
    KW_ASSERT_EQ(load_all(s, &rs, &rev), KW_OK);
    size_t n = rs.n;
    relset_free(&rs);
    KW_ASSERT_EQ(n, 5);
    KW_ASSERT_EQ(rev, 6);
    kw_update_t u = mk_up(KW_OP_TOUCH, "doc", "d6", "viewer", "user", "u", NULL);
    KW_ASSERT_EQ(write_rels(s, &u, 1, &rev), KW_OK);
    KW_ASSERT_EQ(rev, 7);
    kw_store_close(s);
    tmpdb_remove(&t);
}

KW_TEST(store_keys_of_agent_keyset_pagination)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_agent_t ag = mk_agent(AG1, "acct", "alpha");
    kw_agent_t ag2 = mk_agent(AG2, "acct", "beta");
    KW_ASSERT_EQ(insert_agent(s, &ag), KW_OK);
    KW_ASSERT_EQ(insert_agent(s, &ag2), KW_OK);
    enum { N = 1000 };
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    for (int i = 0; i < N; i++) {
        char id[48], name[16];
        /* ids in a scrambled order relative to created_at; 4 keys share each timestamp */
        unsigned x = (unsigned)(i * 7919) % N;
        snprintf(id, sizeof(id), "%08u-0000-4000-8000-000000000000", x);
        snprintf(name, sizeof(name), "k%d", i);
        kw_apikey_t k = mk_key(id, AG1, name, NULL, 0);
        k.created_at_us = 1000 + (N - i) / 4;
        KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k), KW_OK);
    }
    kw_apikey_t other = mk_key("ffffffff-0000-4000-8000-000000000000", AG2, "x", NULL, 0);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &other), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);

    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    int64_t after_us = 0, prev_us = INT64_MIN;
    char after_id[37] = "", prev_id[37] = "";
    size_t total = 0, pages = 0;
    for (;;) {
        kw_apikey_t *rows = NULL;
        size_t n = 0;
        kw_arena_reset(a);
        KW_ASSERT_EQ(
            kw_store_keys_of_agent(s, KW_STR(AG1), after_us, kw_str_c(after_id), 37, a, &rows, &n),
            KW_OK);
        if (n == 0)
            break;
        KW_ASSERT(n <= 37);
        pages++;
        for (size_t i = 0; i < n; i++) {
            KW_ASSERT_STR_EQ(rows[i].agent_id, AG1);
            bool after = rows[i].created_at_us > prev_us ||
                         (rows[i].created_at_us == prev_us && strcmp(rows[i].id, prev_id) > 0);
            KW_ASSERT(after); /* strictly increasing (created_at, id): no dup, no gap */
            prev_us = rows[i].created_at_us;
            snprintf(prev_id, sizeof(prev_id), "%s", rows[i].id);
        }
        total += n;
        after_us = rows[n - 1].created_at_us;
        snprintf(after_id, sizeof(after_id), "%s", rows[n - 1].id);
    }
    KW_ASSERT_EQ(total, N);
    KW_ASSERT_EQ(pages, (N + 36) / 37);
    kw_apikey_t *rows = NULL;
    size_t n = 9;
    KW_ASSERT_EQ(kw_store_keys_of_agent(s, KW_STR(AG1), 0, KW_STR(""), 0, a, &rows, &n), KW_OK);
    KW_ASSERT_EQ(n, 0);
    kw_arena_free(a);
    /* The query uses the (agent_id, created_at_us, id) index, no sort step. */
    /* The query uses the (agent_id, created_at_us, id) index, no sort step. */
    sqlite3 *db = NULL;
    KW_ASSERT_EQ(sqlite3_open(t.path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    KW_ASSERT_EQ(sqlite3_prepare_v2(db,
                                    "EXPLAIN QUERY PLAN SELECT id FROM api_keys WHERE agent_id = "
                                    "?1 AND (created_at_us, id) > (?2, ?3) ORDER BY "
                                    "created_at_us, id LIMIT 5",
                                    -1, &st, NULL),
                 SQLITE_OK);
    bool uses_index = false, sorts = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(st, 3);
        if (detail && strstr(detail, "api_keys_by_agent"))
            uses_index = true;
        if (detail && strstr(detail, "TEMP B-TREE"))
            sorts = true;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    KW_ASSERT(uses_index);
    KW_ASSERT(!sorts);
    kw_store_close(s);
    tmpdb_remove(&t);
}

KW_TEST(store_meta_init_first_writer_wins)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    char *v = NULL;
    size_t len = 0;
    KW_ASSERT_EQ(kw_store_meta_get(s, "jwt_secret", a, &v, &len), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_meta_init(s, "jwt_secret", KW_STR("first"), a, &v, &len), KW_OK);
    KW_ASSERT_STR_EQ(v, "first");
    KW_ASSERT_EQ(len, 5);
    KW_ASSERT_EQ(kw_store_meta_init(s, "jwt_secret", KW_STR("second"), a, &v, &len), KW_OK);
    KW_ASSERT_STR_EQ(v, "first");
    /* Binary-safe values. */
    KW_ASSERT_EQ(kw_store_meta_set(s, "schema", (kw_str_t){"a\0b", 3}), KW_OK);
    KW_ASSERT_EQ(kw_store_meta_get(s, "schema", a, &v, &len), KW_OK);
    KW_ASSERT_EQ(len, 3);
    KW_ASSERT(memcmp(v, "a\0b", 4) == 0);
    KW_ASSERT_EQ(kw_store_meta_set(s, "schema", KW_STR("")), KW_OK);
    KW_ASSERT_EQ(kw_store_meta_get(s, "schema", a, &v, &len), KW_OK);
    KW_ASSERT_EQ(len, 0);
    KW_ASSERT_STR_EQ(v, "");
    /* The revision counter is the store's own. */
    KW_ASSERT_EQ(kw_store_meta_set(s, "revision", KW_STR("7")), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_meta_init(s, "revision", KW_STR("7"), a, &v, &len), KW_EINVAL);
    kw_store_close(s);
    /* A second opener (another instance) sees the first writer's value. */
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_meta_init(s, "jwt_secret", KW_STR("third"), a, &v, &len), KW_OK);
    KW_ASSERT_STR_EQ(v, "first");
    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- concurrency ---- */

enum { CT_THREADS = 4, CT_TXS = 40 };

typedef struct ct_arg {
    kw_store_t *s;
    int thread;
    kw_revision_t revs[CT_TXS];
    int rc;
} ct_arg_t;

static void *ct_main(void *p)
{
    ct_arg_t *c = p;
    for (int i = 0; i < CT_TXS; i++) {
        char id[48], name[32], rid[16];
        snprintf(id, sizeof(id), "%08d-0000-4000-8000-%012d", c->thread, i);
        snprintf(name, sizeof(name), "t%d-%d", c->thread, i);
        snprintf(rid, sizeof(rid), "r%d", i % 5); /* rows shared across threads */
        kw_agent_t ag = mk_agent(id, "acct", name);
        kw_update_t u[2] = {mk_up(KW_OP_TOUCH, "agent", id, "self", "agent", id, NULL),
                            mk_up(KW_OP_TOUCH, "doc", rid, "viewer", "user", "shared", NULL)};
        kw_store_tx_t *tx = NULL;
        int rc = kw_store_tx_begin(c->s, &tx, NULL);
        if (rc == KW_OK) {
            rc = kw_store_tx_agent_insert(tx, &ag);
            if (rc == KW_OK)
                rc = kw_store_tx_rel_write(tx, u, 2, NULL);
            if (rc == KW_OK)
                rc = kw_store_tx_commit(tx, &c->revs[i], NULL);
            else
                kw_store_tx_rollback(tx);
        }
        if (rc != KW_OK) {
            c->rc = rc;
            return NULL;
        }
    }
    return NULL;
}

static int cmp_rev(const void *a, const void *b)
{
    kw_revision_t x = *(const kw_revision_t *)a, y = *(const kw_revision_t *)b;
    return x < y ? -1 : x > y;
}

KW_TEST(store_concurrent_transactions_4_threads)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    ct_arg_t args[CT_THREADS];
    pthread_t th[CT_THREADS];
    for (int i = 0; i < CT_THREADS; i++) {
        args[i] = (ct_arg_t){.s = s, .thread = i, .rc = KW_OK};
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, ct_main, &args[i]), 0);
    }
    for (int i = 0; i < CT_THREADS; i++)
        pthread_join(th[i], NULL);
    kw_revision_t all[CT_THREADS * CT_TXS];
    for (int i = 0; i < CT_THREADS; i++) {
        KW_ASSERT_EQ(args[i].rc, KW_OK);
        memcpy(&all[i * CT_TXS], args[i].revs, sizeof(args[i].revs));
    }
    qsort(all, KW_ARRAY_LEN(all), sizeof(all[0]), cmp_rev);
    for (size_t i = 0; i < KW_ARRAY_LEN(all); i++)
        KW_ASSERT_EQ(all[i], i + 1); /* unique and gapless */
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, CT_THREADS * CT_TXS);
    KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM agents"), CT_THREADS * CT_TXS);
    KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM relationships"), CT_THREADS * CT_TXS + 5);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- load_relationships ---- */

static int stop_after_two(const kw_rel_t *r, void *ud)
{
    (void)r;
    int *n = ud;
    return ++*n == 2 ? 42 : 0;
}

KW_TEST(store_load_relationships_streams_all)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_update_t ups[100];
    char ids[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%03d", i);
        ups[i] = mk_up(KW_OP_TOUCH, "doc", ids[i], "viewer", i % 2 ? "group" : "user", ids[i],
                       i % 2 ? "member" : NULL);
    }
    kw_revision_t wrote = 0;
    KW_ASSERT_EQ(write_rels(s, ups, 100, &wrote), KW_OK);
    relset_t rs;
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(load_all(s, &rs, &rev), KW_OK);
    KW_ASSERT_EQ(rev, wrote);
    bool ok = rs.n == 100 && strcmp(rs.items[0], "doc:000#viewer@user:000") == 0 &&
              strcmp(rs.items[1], "doc:001#viewer@group:001#member") == 0 &&
              strcmp(rs.items[99], "doc:099#viewer@group:099#member") == 0;
    relset_free(&rs);
    KW_ASSERT(ok);
    int n = 0;
    KW_ASSERT_EQ(kw_store_load_relationships(s, stop_after_two, &n, NULL), 42);
    KW_ASSERT_EQ(n, 2);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- fault injection ---- */

/* One transaction that allocates on every path: an agent, a key, relationships, an agent
 * delete that records changes, commit. */
static int fault_tx(kw_store_t *s, int round)
{
    char id[48], kid[48];
    snprintf(id, sizeof(id), "%08d-1111-4111-8111-111111111111", round);
    snprintf(kid, sizeof(kid), "%08d-2222-4222-8222-222222222222", round);
    kw_agent_t ag = mk_agent(id, "acct", id);
    kw_apikey_t k = mk_key(kid, id, "k", NULL, 0);
    kw_update_t u[3] = {mk_up(KW_OP_TOUCH, "agent", id, "self", "agent", id, NULL),
                        mk_up(KW_OP_TOUCH, "agent_api_key", kid, "parent_agent", "agent", id, NULL),
                        mk_up(KW_OP_TOUCH, "keep", id, "viewer", "user", "u", NULL)};
    kw_store_tx_t *tx = NULL;
    int rc = kw_store_tx_begin(s, &tx, NULL);
    if (rc != KW_OK)
        return rc;
    rc = kw_store_tx_agent_insert(tx, &ag);
    if (rc == KW_OK)
        rc = kw_store_tx_key_insert(tx, &k);
    if (rc == KW_OK)
        rc = kw_store_tx_rel_write(tx, u, 3, NULL);
    if (rc == KW_OK)
        rc = kw_store_tx_key_delete(tx, kw_str_c(kid));
    if (rc == KW_OK)
        rc = kw_store_tx_agent_delete(tx, kw_str_c(id));
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    return kw_store_tx_commit(tx, NULL, NULL);
}

KW_TEST(store_fault_injection_over_a_tx)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_ping(s), KW_OK); /* warm the pooled connection */
    int failures = 0;
    for (int n = 1; n < 1000; n++) {
        kw_revision_t before = 0, after = 0;
        KW_ASSERT_EQ(kw_store_revision(s, &before), KW_OK);
        kw_fault_arm(n);
        int rc = fault_tx(s, n);
        bool fired = kw_fault_fired();
        kw_fault_arm(0);
        KW_ASSERT_EQ(kw_store_revision(s, &after), KW_OK);
        if (!fired) {
            KW_ASSERT_EQ(rc, KW_OK);
            KW_ASSERT_EQ(after, before + 1);
            break;
        }
        failures++;
        KW_ASSERT_EQ(rc, KW_ENOMEM);
        KW_ASSERT_EQ(after, before); /* nothing committed */
        KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM agents"), 0);
        KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM relationships"), 0);
    }
    KW_ASSERT(failures > 3);
    /* The store still works after all that. */
    KW_ASSERT_EQ(fault_tx(s, 5000), KW_OK);
    KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM relationships"), 2); /* the "keep" rows */
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- throughput (reported, not gated) ---- */

KW_TEST(store_bench_key_tx)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_agent_t ag = mk_agent(AG1, "acct", "alpha");
    KW_ASSERT_EQ(insert_agent(s, &ag), KW_OK);
    const char *env = getenv("KW_STORE_BENCH_N");
    int n = env ? atoi(env) : 300;
    if (n <= 0)
        n = 300;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        char kid[48], name[16];
        uint8_t hash[32] = {0};
        memcpy(hash, &i, sizeof(i));
        snprintf(kid, sizeof(kid), "%08d-2222-4222-8222-222222222222", i);
        snprintf(name, sizeof(name), "k%d", i);
        kw_apikey_t k = mk_key(kid, AG1, name, hash, sizeof(hash));
        kw_update_t u[3] = {
            mk_up(KW_OP_TOUCH, "agent_api_key", kid, "parent_agent", "agent", AG1, NULL),
            mk_up(KW_OP_TOUCH, "agent_api_key", kid, "account", "account", "acct", NULL),
            mk_up(KW_OP_TOUCH, "agent_api_key", kid, "owner", "user", "u1", NULL)};
        kw_store_tx_t *tx = NULL;
        KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
        KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k), KW_OK);
        KW_ASSERT_EQ(kw_store_tx_rel_write(tx, u, 3, NULL), KW_OK);
        KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "  key tx (row + 3 relationships): %d in %.3f s = %.0f tx/s\n", n, sec,
            n / sec);
    KW_ASSERT_EQ(raw_sql(t.path, "SELECT count(*) FROM api_keys"), n);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- savepoints (store.h, tag-kw-store-savepoint) ---- */

/* Several units of work in one transaction, as the API's group commit runs them: a unit
 * that fails (a failed statement, a conflict) is rolled back to its savepoint with its
 * recorded changes, the others commit; nesting is checked; a failed tx refuses one. */
KW_TEST(store_savepoints_undo_one_unit)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    /* A statement that fails on demand: inserting an agent named "boom". */
    KW_ASSERT_EQ(raw_sql(t.path, "CREATE TRIGGER kw_test_boom BEFORE INSERT ON agents "
                                 "WHEN NEW.name = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"),
                 0);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_agent_t ag1 = mk_agent(AG1, "acct", "alpha");
    kw_agent_t boom = mk_agent(AG2, "acct", "boom");
    kw_agent_t dup = mk_agent(AG2, "acct", "alpha");
    kw_apikey_t k1 = mk_key(K1, AG1, "k1", NULL, 0);
    kw_apikey_t k2 = mk_key(K2, AG1, "k2", NULL, 0);
    kw_update_t u1 = mk_up(KW_OP_TOUCH, "agent", AG1, "owner", "user", "u", NULL);
    kw_update_t uk1 = mk_up(KW_OP_TOUCH, "agent_api_key", K1, "parent_agent", "agent", AG1, NULL);
    kw_update_t uk2 = mk_up(KW_OP_TOUCH, "agent_api_key", K2, "parent_agent", "agent", AG1, NULL);
    kw_store_tx_t *tx = NULL;
    kw_store_savepoint_t sp1, sp2, sp3, sp4;
    const kw_update_t *ch = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);

    /* unit 1: kept */
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &ag1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &u1, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_release_savepoint(tx, &sp1, NULL), KW_OK);

    /* unit 2: a key and its relationship, then a failing statement (poisons the tx) */
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp2, NULL), KW_OK);
    KW_ASSERT_EQ(sp2.n_changes, 1);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &uk1, 1, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &boom), KW_EDB);
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_EQ(kw_store_tx_release_savepoint(tx, &sp2, NULL), KW_EDB); /* failed: keep none */
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp2, NULL), KW_OK);
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 1); /* truncated back: only unit 1's change */

    /* unit 3: a key, then a duplicate agent name (a clean conflict); undone */
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp3, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k2), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &uk2, 1, NULL), KW_OK);
    /* nesting: only the innermost savepoint may end */
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp4, NULL), KW_OK);
    KW_ASSERT_EQ(sp4.depth, 2);
    KW_ASSERT_EQ(kw_store_tx_release_savepoint(tx, &sp3, NULL), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &dup), KW_ECONFLICT);
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp4, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp4, NULL), KW_EINVAL); /* ended */
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 2); /* k2's relationship is still in unit 3 */
    KW_ASSERT_EQ(kw_store_tx_rollback_to_savepoint(tx, &sp3, NULL), KW_OK);
    kw_store_tx_changes(tx, &ch, &n);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(ch[0].op, KW_OP_TOUCH);
    KW_ASSERT(kw_str_eq_c(ch[0].rel.resource.id, AG1));

    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    KW_ASSERT_EQ(rev, 1);
    kw_agent_t got;
    kw_apikey_t gk;
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR(AG1), a, &got), KW_OK);
    KW_ASSERT_EQ(kw_store_agent_get(s, KW_STR(AG2), a, &got), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &gk), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K2), a, &gk), KW_ENOTFOUND);
    relset_t rs;
    KW_ASSERT_EQ(load_all(s, &rs, NULL), KW_OK);
    char want[128];
    snprintf(want, sizeof(want), "agent:%s#owner@user:u", AG1);
    bool ok = rs.n == 1 && strcmp(rs.items[0], want) == 0;
    relset_free(&rs);
    KW_ASSERT(ok);

    /* A failed transaction refuses a savepoint and stays failed. */
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_agent_insert(tx, &boom), KW_EDB);
    KW_ASSERT_EQ(kw_store_tx_savepoint(tx, &sp1, NULL), KW_EDB);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_EDB);
    KW_ASSERT_EQ(kw_store_revision(s, &rev), KW_OK);
    KW_ASSERT_EQ(rev, 1);
    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* Issue 14: expiry stored at create, rotation as a compare-and-swap with the previous
 * secret findable during its grace, and last uses that only move forward. */
KW_TEST(store_key_lifecycle_rotate_touch)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_agent_t ag1 = mk_agent(AG1, "acct", "alpha");
    KW_ASSERT_EQ(insert_agent(s, &ag1), KW_OK);
    uint8_t h1[32], h2[32], h3[32];
    memset(h1, 0x11, sizeof(h1));
    memset(h2, 0x22, sizeof(h2));
    memset(h3, 0x33, sizeof(h3));
    kw_apikey_t k1 = mk_key(K1, AG1, "ci", h1, sizeof(h1));
    k1.expires_at_us = 1900000000000000LL;
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    kw_apikey_t kg;
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &kg), KW_OK);
    KW_ASSERT_EQ(kg.expires_at_us, 1900000000000000LL);
    KW_ASSERT_EQ(kg.last_used_at_us, 0);
    KW_ASSERT_EQ(kg.prev_hash_len, 0);

    /* h1 -> h2, h1 kept until T; then a rotation from a stale h1 loses (409 material). */
    kw_key_rotation_t r = {KW_STR(K1), h1,   32, NULL, 0,  h2,
                           32,         NULL, 0,  h1,   32, 1800000000000000LL};
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_rotate(tx, &r), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h2, 32, a, &kg), KW_OK);
    KW_ASSERT_STR_EQ(kg.id, K1);
    KW_ASSERT(memcmp(kg.hash, h2, 32) == 0);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h1, 32, a, &kg), KW_OK);
    KW_ASSERT_EQ(kg.prev_hash_len, 32);
    KW_ASSERT(memcmp(kg.prev_hash, h1, 32) == 0);
    KW_ASSERT_EQ(kg.prev_until_us, 1800000000000000LL);
    kw_key_rotation_t stale = {KW_STR(K1), h1, 32, NULL, 0, h3, 32, NULL, 0, NULL, 0, 0};
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_rotate(tx, &stale), KW_ECONFLICT);
    kw_key_rotation_t gone = {KW_STR(K2), h2, 32, NULL, 0, h3, 32, NULL, 0, NULL, 0, 0};
    KW_ASSERT_EQ(kw_store_tx_key_rotate(tx, &gone), KW_ENOTFOUND);
    /* Without a grace: the previous secret is forgotten at once. */
    kw_key_rotation_t now = {KW_STR(K1), h2, 32, NULL, 0, h3, 32, NULL, 0, NULL, 0, 0};
    KW_ASSERT_EQ(kw_store_tx_key_rotate(tx, &now), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h1, 32, a, &kg), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h2, 32, a, &kg), KW_ENOTFOUND);
    KW_ASSERT_EQ(kw_store_key_find_by_hash(s, h3, 32, a, &kg), KW_OK);

    /* Last uses move forward only; an absent key is skipped. */
    kw_key_use_t uses[3] = {{K1, 1750000000000000LL}, {K2, 5}, {K1, 1740000000000000LL}};
    KW_ASSERT_EQ(kw_store_keys_touch(s, uses, 3), KW_OK);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &kg), KW_OK);
    KW_ASSERT_EQ(kg.last_used_at_us, 1750000000000000LL);
    KW_ASSERT_EQ(kw_store_keys_touch(s, uses + 2, 1), KW_OK);
    KW_ASSERT_EQ(kw_store_key_get(s, KW_STR(K1), a, &kg), KW_OK);
    KW_ASSERT_EQ(kg.last_used_at_us, 1750000000000000LL);

    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* Authentication's one read: key and agent together, by the current or previous hash. */
KW_TEST(store_key_auth_joins_the_agent)
{
    tmpdb_t t;
    KW_ASSERT(tmpdb_make(&t));
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(t.url, &s, NULL), KW_OK);
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    kw_agent_t ag1 = mk_agent(AG1, "acct", "alpha");
    KW_ASSERT_EQ(insert_agent(s, &ag1), KW_OK);
    uint8_t h1[32], h2[32];
    memset(h1, 0x41, sizeof(h1));
    memset(h2, 0x42, sizeof(h2));
    kw_apikey_t k1 = mk_key(K1, AG1, "ci", h1, sizeof(h1));
    kw_store_tx_t *tx = NULL;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_insert(tx, &k1), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    kw_apikey_t kg;
    kw_agent_t gg;
    KW_ASSERT_EQ(kw_store_key_auth(s, h1, 32, a, &kg, &gg), KW_OK);
    KW_ASSERT_STR_EQ(kg.id, K1);
    KW_ASSERT_STR_EQ(gg.id, AG1);
    KW_ASSERT_STR_EQ(gg.account_id, "acct");
    KW_ASSERT_STR_EQ(gg.name, "alpha");
    KW_ASSERT_EQ(kw_store_key_auth(s, h2, 32, a, &kg, &gg), KW_ENOTFOUND);
    kw_key_rotation_t r = {KW_STR(K1), h1, 32, NULL, 0, h2, 32, NULL, 0, h1, 32, 5};
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_key_rotate(tx, &r), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, NULL, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_key_auth(s, h1, 32, a, &kg, &gg), KW_OK); /* the previous hash */
    KW_ASSERT(memcmp(kg.hash, h2, 32) == 0 && kg.prev_until_us == 5);
    KW_ASSERT_EQ(kw_store_key_auth(s, h2, 32, a, &kg, &gg), KW_OK);
    KW_ASSERT_STR_EQ(gg.account_id, "acct");
    kw_arena_free(a);
    kw_store_close(s);
    tmpdb_remove(&t);
}

/* ---- in memory (kw_store_opts_t.memory_bytes: serve-testing's instances) ---- */

KW_TEST(store_in_memory_is_private_and_bounded)
{
    kw_store_t *a = NULL, *b = NULL;
    kw_diag_t d = {0};
    kw_store_opts_t o = {.memory_bytes = (size_t)1 << 20};
    kw_store_opts_t tiny = {.memory_bytes = 4096};
    KW_ASSERT_EQ(kw_store_open_with("sqlite::memory:", &tiny, &a, &d), KW_EINVAL);
    /* ":memory:" without memory_bytes is refused (serve and the CLI never open one) */
    KW_ASSERT_EQ(kw_store_open_with("sqlite::memory:", NULL, &a, &d), KW_EINVAL);
    KW_ASSERT_EQ(kw_store_open_with("sqlite::memory:", &o, &a, &d), KW_OK);
    KW_ASSERT_EQ(kw_store_open_with("sqlite::memory:", &o, &b, &d), KW_OK);
    KW_ASSERT_STR_EQ(kw_store_backend(a), "sqlite");
    KW_ASSERT(access(":memory:", F_OK) != 0);
    /* Two in-memory stores are two databases: a write to one is not in the other. */
    kw_store_tx_t *tx = NULL;
    kw_update_t u;
    memset(&u, 0, sizeof(u));
    u.op = KW_OP_TOUCH;
    u.rel.resource = (kw_object_t){KW_STR("doc"), KW_STR("d1")};
    u.rel.relation = KW_STR("viewer");
    u.rel.subject = (kw_subject_t){KW_STR("user"), KW_STR("ann"), KW_STR_NULL};
    KW_ASSERT_EQ(kw_store_tx_begin(a, &tx, &d), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, &u, 1, &d), KW_OK);
    kw_revision_t rev = 0, rb = 0;
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, &d), KW_OK);
    KW_ASSERT(rev > 0);
    KW_ASSERT_EQ(kw_store_revision(b, &rb), KW_OK);
    KW_ASSERT_EQ(rb, 0);
    /* Past the bound: KW_EBUDGET with its words, the transaction gone, the store usable. */
    static kw_update_t ups[1000];
    static char ids[1000][80];
    int rc = KW_OK;
    for (int round = 0; round < 100 && rc == KW_OK; round++) {
        KW_ASSERT_EQ(kw_store_tx_begin(a, &tx, &d), KW_OK);
        for (size_t i = 0; i < 1000; i++) {
            snprintf(ids[i], sizeof(ids[i]), "d-%03d-%04zu-padding-padding-padding", round, i);
            ups[i] = u;
            ups[i].rel.resource.id = kw_str_c(ids[i]);
        }
        rc = kw_store_tx_rel_write(tx, ups, 1000, &d);
        if (rc == KW_OK)
            rc = kw_store_tx_commit(tx, NULL, &d);
        else
            kw_store_tx_rollback(tx);
    }
    KW_ASSERT_EQ(rc, KW_EBUDGET);
    KW_ASSERT(strstr(d.msg, "in-memory database is full") != NULL);
    kw_revision_t after = 0;
    KW_ASSERT_EQ(kw_store_revision(a, &after), KW_OK);
    KW_ASSERT(after >= rev);
    kw_store_close(a);
    kw_store_close(b);
}
