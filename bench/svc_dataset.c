/*
 * bench/svc_dataset.c - the agents-1M dataset as a keyward SQLite database, for the HTTP
 * service benchmark (bench/svc_bench.sh).
 *
 * Layout (the same as bench/authz_bench.c, written the way the service writes it):
 *   1,000 accounts x 20 members: member 0 is account:A#admin, 1..19 are account:A#member
 *     (one admin write per account);
 *   10 agents per account: agent:X#account@account:A, agent:X#owner@user:O,
 *     agent:X#self@agent:X (O = member 1 + j % 19; one transaction per agent);
 *   100 keys per agent: agent_api_key:K#parent_agent@agent:X, #account@account:A,
 *     #owner@user:O (the agent's owner made them; one transaction per key).
 *   => 1,000,000 keys, 3,050,000 relationships. meta 'revision' = the number of commits
 *   the service would have made (1,000 + 10,000 + 1,000,000).
 * Ids: account, agent and key ids are UUIDv7 (kw_api_uuid_v7) of strictly increasing
 * created_at microseconds, as the service makes them. Users are "uAAAAAAmMM".
 * Keys: 90% external, 10% internal, plaintext from kw_key_generate, stored as the keyed
 * hash of the server's keyring: the dataset writes its own jwt_secret and master_key into
 * meta (same encodings as cli/secrets.c), so `keyward serve` on the file uses them.
 *
 * Method: kw_store_open runs the real migrations and stores the secrets through
 * kw_store_meta_init; then one direct sqlite3 connection inserts rows and relationships
 * with prepared statements in big transactions (synchronous=OFF while building: a crash
 * means rebuilding the benchmark file, nothing more), then checkpoints the WAL.
 *
 * Side files in OUTDIR (for the load test, not secrets of any real deployment):
 *   svc_agents.tsv  agent_id TAB owner TAB account_id   (a random sample of agents)
 *   svc_keys.tsv    key_id TAB owner                    (every key of those agents)
 *   svc_secrets.txt jwt_secret=..., then "key ID AGENT PLAINTEXT" for a few keys (0600)
 *
 * Usage: svc_dataset DB_PATH OUTDIR [--accounts N] [--sample N]
 */
#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "keys/keys.h"
#include "store/store.h"

#define MEMBERS 20
#define AGENTS_PER_ACCOUNT 10
#define KEYS_PER_AGENT 100
#define COMMIT_EVERY 50000 /* keys per SQLite transaction */
#define N_PLAINTEXT 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die_sql(sqlite3 *db, const char *what)
{
    fprintf(stderr, "svc_dataset: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
}

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "svc_dataset: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die_sql(db, sql);
    return st;
}

static void step_done(sqlite3 *db, sqlite3_stmt *st, const char *what)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die_sql(db, what);
    sqlite3_reset(st);
}

static sqlite3_stmt *g_rel;
static sqlite3 *g_db;
static uint64_t g_n_rels;

static void rel(const char *rt, const char *rid, const char *relation, const char *st,
                const char *sid)
{
    sqlite3_bind_text(g_rel, 1, rt, -1, SQLITE_STATIC);
    sqlite3_bind_text(g_rel, 2, rid, -1, SQLITE_STATIC);
    sqlite3_bind_text(g_rel, 3, relation, -1, SQLITE_STATIC);
    sqlite3_bind_text(g_rel, 4, st, -1, SQLITE_STATIC);
    sqlite3_bind_text(g_rel, 5, sid, -1, SQLITE_STATIC);
    sqlite3_bind_text(g_rel, 6, "", 0, SQLITE_STATIC);
    step_done(g_db, g_rel, "insert relationship");
    g_n_rels++;
}

static FILE *open_out(const char *dir, const char *name, int mode)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        perror(path);
        exit(1);
    }
    return f;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: svc_dataset DB_PATH OUTDIR [--accounts N] [--sample N]\n");
        return 2;
    }
    const char *path = argv[1], *outdir = argv[2];
    long n_accounts = 1000, n_sample = 256;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--accounts") == 0)
            n_accounts = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--sample") == 0)
            n_sample = atol(argv[i + 1]);
    }
    long n_agents = n_accounts * AGENTS_PER_ACCOUNT;
    if (n_accounts <= 0 || n_sample <= 0 || n_sample > n_agents) {
        fprintf(stderr, "svc_dataset: bad --accounts/--sample\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    if (access(path, F_OK) == 0) {
        fprintf(stderr, "svc_dataset: %s exists; remove it first\n", path);
        return 1;
    }
    double t0 = now_s();

    /* 1. The real migrations, and the server's secrets through the store. */
    char url[4200];
    snprintf(url, sizeof(url), "sqlite:%s", path);
    kw_store_t *store = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_store_open(url, &store, &d) != KW_OK) {
        fprintf(stderr, "svc_dataset: open %s: %s\n", path, d.msg);
        return 1;
    }
    uint8_t raw[32];
    char jwt[64], master[65];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(jwt, sizeof(jwt), raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(master, sizeof(master), raw, sizeof(raw));
    kw_arena_t *a = kw_arena_new(0);
    char *v1 = NULL, *v2 = NULL;
    size_t l1 = 0, l2 = 0;
    if (!a || kw_store_meta_init(store, "jwt_secret", kw_str_c(jwt), a, &v1, &l1) != KW_OK ||
        kw_store_meta_init(store, "master_key", kw_str_c(master), a, &v2, &l2) != KW_OK ||
        strcmp(v1, jwt) != 0 || strcmp(v2, master) != 0) {
        fprintf(stderr, "svc_dataset: cannot store the secrets\n");
        return 1;
    }
    kw_store_close(store);
    kw_keyring_t *ring = NULL;
    if (kw_keyring_new(kw_str_c(jwt), kw_str_c(master), &ring) != KW_OK) {
        fprintf(stderr, "svc_dataset: keyring\n");
        return 1;
    }

    /* 2. Rows and relationships, directly. */
    if (sqlite3_open(path, &g_db) != SQLITE_OK)
        die_sql(g_db, "open");
    exec_sql(g_db, "PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;"
                   "PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = OFF;");
    g_rel = prep(g_db, "INSERT INTO relationships (resource_type, resource_id, relation, "
                       "subject_type, subject_id, subject_relation) VALUES (?1,?2,?3,?4,?5,?6)");
    sqlite3_stmt *ins_agent = prep(g_db, "INSERT INTO agents (id, account_id, name, description, "
                                         "created_at_us) VALUES (?1,?2,?3,?4,?5)");
    sqlite3_stmt *ins_key = prep(g_db, "INSERT INTO api_keys (id, agent_id, name, type, "
                                       "created_at_us, hash, secret_enc) "
                                       "VALUES (?1,?2,?3,?4,?5,?6,NULL)");

    /* the sample: n_sample distinct agents (partial Fisher-Yates over agent indices) */
    uint32_t *perm = malloc((size_t)n_agents * sizeof(*perm));
    uint8_t *sampled = calloc((size_t)n_agents, 1);
    if (!perm || !sampled)
        return 1;
    for (long i = 0; i < n_agents; i++)
        perm[i] = (uint32_t)i;
    for (long i = 0; i < n_sample; i++) {
        long j = i + (long)randombytes_uniform((uint32_t)(n_agents - i));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        sampled[perm[i]] = 1;
    }
    free(perm);
    FILE *f_agents = open_out(outdir, "svc_agents.tsv", 0644);
    FILE *f_keys = open_out(outdir, "svc_keys.tsv", 0644);
    FILE *f_sec = open_out(outdir, "svc_secrets.txt", 0600);
    fprintf(f_sec, "jwt_secret=%s\n", jwt);
    int plain_written = 0;

    /* created_at: strictly increasing microseconds, ending about now */
    int64_t total_us = (int64_t)n_accounts * (1 + AGENTS_PER_ACCOUNT * (1 + KEYS_PER_AGENT));
    int64_t us = (int64_t)time(NULL) * 1000000 - total_us * 10;
    uint64_t commits = 0, n_keys = 0;
    char acct[37], agent[37], key[37], user[32], owner[32], name[32];
    char secret[KW_KEY_GEN_LEN + 1];
    uint8_t hash[KW_KEY_HASH_LEN];

    exec_sql(g_db, "BEGIN");
    for (long ai = 0; ai < n_accounts; ai++) {
        kw_api_uuid_v7(us += 10, acct);
        for (int m = 0; m < MEMBERS; m++) {
            snprintf(user, sizeof(user), "u%06ldm%02d", ai, m);
            rel("account", acct, m == 0 ? "admin" : "member", "user", user);
        }
        commits++; /* the administrator's membership write */
        for (int j = 0; j < AGENTS_PER_ACCOUNT; j++) {
            long gi = ai * AGENTS_PER_ACCOUNT + j;
            kw_api_uuid_v7(us += 10, agent);
            snprintf(owner, sizeof(owner), "u%06ldm%02d", ai, 1 + j % (MEMBERS - 1));
            snprintf(name, sizeof(name), "agent-%02d", j);
            sqlite3_bind_text(ins_agent, 1, agent, -1, SQLITE_STATIC);
            sqlite3_bind_text(ins_agent, 2, acct, -1, SQLITE_STATIC);
            sqlite3_bind_text(ins_agent, 3, name, -1, SQLITE_STATIC);
            sqlite3_bind_null(ins_agent, 4);
            sqlite3_bind_int64(ins_agent, 5, us);
            step_done(g_db, ins_agent, "insert agent");
            rel("agent", agent, "account", "account", acct);
            rel("agent", agent, "owner", "user", owner);
            rel("agent", agent, "self", "agent", agent);
            commits++;
            if (sampled[gi])
                fprintf(f_agents, "%s\t%s\t%s\n", agent, owner, acct);
            for (int k = 0; k < KEYS_PER_AGENT; k++) {
                kw_api_uuid_v7(us += 10, key);
                bool internal = k % 10 == 9;
                snprintf(name, sizeof(name), "key-%03d", k);
                if (kw_key_generate(secret, sizeof(secret)) != KW_OK)
                    return 1;
                kw_key_hash(ring, (kw_str_t){secret, KW_KEY_GEN_LEN}, hash);
                sqlite3_bind_text(ins_key, 1, key, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins_key, 2, agent, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins_key, 3, name, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins_key, 4, internal ? "internal" : "external", -1,
                                  SQLITE_STATIC);
                sqlite3_bind_int64(ins_key, 5, us);
                sqlite3_bind_blob(ins_key, 6, hash, sizeof(hash), SQLITE_STATIC);
                step_done(g_db, ins_key, "insert key");
                rel("agent_api_key", key, "parent_agent", "agent", agent);
                rel("agent_api_key", key, "account", "account", acct);
                rel("agent_api_key", key, "owner", "user", owner);
                commits++;
                if (sampled[gi]) {
                    fprintf(f_keys, "%s\t%s\n", key, owner);
                    if (plain_written < N_PLAINTEXT && k == 0) {
                        fprintf(f_sec, "key %s %s %s\n", key, agent, secret);
                        plain_written++;
                    }
                }
                if (++n_keys % COMMIT_EVERY == 0)
                    exec_sql(g_db, "COMMIT; BEGIN");
            }
        }
    }
    sodium_memzero(secret, sizeof(secret));
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE meta SET value = %llu WHERE key = 'revision'",
             (unsigned long long)commits);
    exec_sql(g_db, sql);
    exec_sql(g_db, "COMMIT");
    sqlite3_finalize(g_rel);
    sqlite3_finalize(ins_agent);
    sqlite3_finalize(ins_key);
    double t_ins = now_s() - t0;
    exec_sql(g_db, "PRAGMA wal_checkpoint(TRUNCATE)");
    if (sqlite3_close(g_db) != SQLITE_OK)
        die_sql(g_db, "close");
    fclose(f_agents);
    fclose(f_keys);
    fclose(f_sec);
    free(sampled);

    /* 3. Verify through the store: the revision and a sampled key. */
    store = NULL;
    if (kw_store_open(url, &store, &d) != KW_OK) {
        fprintf(stderr, "svc_dataset: reopen: %s\n", d.msg);
        return 1;
    }
    kw_revision_t rev = 0;
    if (kw_store_revision(store, &rev) != KW_OK || rev != commits) {
        fprintf(stderr, "svc_dataset: revision %llu, want %llu\n", (unsigned long long)rev,
                (unsigned long long)commits);
        return 1;
    }
    kw_store_close(store);
    kw_keyring_free(ring);
    sodium_memzero(jwt, sizeof(jwt));
    sodium_memzero(master, sizeof(master));
    kw_arena_free(a);
    struct stat sb;
    stat(path, &sb);
    printf("{\"bench\":\"svc_dataset\",\"accounts\":%ld,\"agents\":%ld,\"keys\":%llu,"
           "\"relationships\":%llu,\"revision\":%llu,\"insert_s\":%.1f,\"total_s\":%.1f,"
           "\"db_mib\":%.0f}\n",
           n_accounts, n_agents, (unsigned long long)n_keys, (unsigned long long)g_n_rels,
           (unsigned long long)commits, t_ins, now_s() - t0, (double)sb.st_size / 1048576.0);
    return 0;
}
