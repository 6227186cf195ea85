/*
 * cli/backup.c - `keyward backup`: a consistent copy of a live SQLite database.
 *
 *   keyward backup --db PATH --out FILE [--allow-insecure-db-mode]
 *
 * --db takes sqlite:PATH or a bare PATH (PostgreSQL has its own tools: pg_dump, or
 * `keyward migrate` into a new SQLite file). The copy is made with SQLite's online backup
 * API in one step (store/audit.h, kw_store_sqlite_backup): the state of one committed
 * transaction while the server goes on writing. FILE must not exist; it is created mode
 * 0600 (it holds the same secrets). The copy then passes PRAGMA quick_check and its audit
 * chain is verified. Exit status: 0 done, 1 failed (FILE is removed), 2 usage.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/secrets.h"
#include "store/store.h"

#define WHO "keyward backup"

static void usage(FILE *f)
{
    fprintf(f, "usage: keyward backup --db PATH --out FILE [--allow-insecure-db-mode]\n"
               "\n"
               "Copies a live SQLite database consistently (SQLite's online backup API).\n"
               "  --db PATH   the database: sqlite:PATH or PATH (default: env KEYWARD_DB,\n"
               "              else sqlite:keyward.db)\n"
               "  --out FILE  the new copy (must not exist; created mode 0600)\n");
}

static void remove_copy(const char *out)
{
    char p[4200];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", out, suffix[i]);
        unlink(p);
    }
}

/* The copy opens as a keyward database and its audit chain is intact. */
static bool check_copy(const char *out, bool insecure, long long *n_events)
{
    char url[4200];
    snprintf(url, sizeof(url), "sqlite:%s", out);
    kw_store_t *s = NULL;
    if (kw_cli_open_store(WHO " (copy)", url, (kw_store_opts_t){0}, insecure, &s) != KW_OK)
        return false;
    kw_audit_report_t rep;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_store_audit_verify(s, &rep, &d);
    kw_store_close(s);
    if (rc == KW_ECONFLICT)
        fprintf(stderr, WHO ": the copy's audit trail is broken at event %lld: %s\n",
                (long long)rep.bad_seq, rep.why);
    else if (rc != KW_OK)
        fprintf(stderr, WHO ": cannot verify the copy's audit trail: %s\n",
                d.msg[0] ? d.msg : kw_strerror(rc));
    *n_events = rep.n_events;
    return rc == KW_OK;
}

int kw_cli_backup(int argc, char **argv)
{
    const char *db_env = getenv("KEYWARD_DB");
    const char *db = db_env && db_env[0] ? db_env : "sqlite:keyward.db";
    const char *out = NULL;
    bool insecure = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--allow-insecure-db-mode") == 0) {
            insecure = true;
        } else if (strncmp(argv[i], "--db=", 5) == 0) {
            db = argv[i] + 5;
        } else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            db = argv[++i];
        } else if (strncmp(argv[i], "--out=", 6) == 0) {
            out = argv[i] + 6;
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else {
            fprintf(stderr, WHO ": unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!out || !out[0]) {
        fprintf(stderr, WHO ": --out is required\n");
        usage(stderr);
        return 2;
    }
    if (strncmp(db, "postgres://", 11) == 0 || strncmp(db, "postgresql://", 13) == 0) {
        fprintf(stderr, WHO ": --db must be a SQLite database; for PostgreSQL use pg_dump, or "
                            "`keyward migrate` into a new SQLite file\n");
        return 2;
    }
    const char *path = db;
    if (strncmp(path, "sqlite://", 9) == 0)
        path += 9;
    else if (strncmp(path, "sqlite:", 7) == 0)
        path += 7;
    if (strlen(out) > 4000 || strlen(path) > 4000) {
        fprintf(stderr, WHO ": path too long\n");
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, WHO ": libsodium failed to initialize\n");
        return 1;
    }
    int pages = 0;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_store_sqlite_backup(path, out, &pages, &d);
    if (rc != KW_OK) {
        fprintf(stderr, WHO ": %s\n", d.msg[0] ? d.msg : kw_strerror(rc));
        return 1;
    }
    long long n_events = 0;
    if (!check_copy(out, insecure, &n_events)) {
        remove_copy(out);
        return 1;
    }
    printf("backed up %s to %s: %d pages, integrity ok, audit chain intact (%lld events)\n", path,
           out, pages, n_events);
    return 0;
}
