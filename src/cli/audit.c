/*
 * cli/audit.c - `keyward audit verify`: recompute the audit trail's hash chain.
 *
 *   keyward audit verify [--db URL] [--allow-insecure-db-mode]
 *
 * Reads every event from one snapshot (store/audit.h, kw_store_audit_verify) and checks
 * that each hash matches its event, each event follows the previous one's hash, the
 * numbering has no gap, and the chain head matches the last event. Exit status: 0 intact
 * (prints the event count and the head hash, worth keeping elsewhere as an anchor), 1
 * broken (names the first bad event and what is wrong with it), 2 usage, 3 the database
 * could not be read.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/secrets.h"
#include "store/store.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: keyward audit verify [--db URL] [--allow-insecure-db-mode]\n"
               "\n"
               "Recomputes the audit trail's hash chain. Exit status: 0 intact, 1 broken\n"
               "(the first bad event is named), 2 usage, 3 the database could not be read.\n"
               "  --db URL   the database (default: env KEYWARD_DB, else sqlite:keyward.db)\n"
               "  --allow-insecure-db-mode\n"
               "             open a SQLite file that group or others may access\n");
}

int kw_cli_audit(int argc, char **argv)
{
    const char *db_env = getenv("KEYWARD_DB");
    const char *db = db_env && db_env[0] ? db_env : "sqlite:keyward.db";
    bool insecure = false;
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "verify") != 0) {
        fprintf(stderr, "keyward audit: unknown action '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--allow-insecure-db-mode") == 0) {
            insecure = true;
        } else if (strncmp(argv[i], "--db=", 5) == 0) {
            db = argv[i] + 5;
        } else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            db = argv[++i];
        } else {
            fprintf(stderr, "keyward audit verify: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "keyward audit verify: libsodium failed to initialize\n");
        return 3;
    }
    kw_store_t *s = NULL;
    if (kw_cli_open_store("keyward audit verify", db, (kw_store_opts_t){0}, insecure, &s) != KW_OK)
        return 3;
    kw_audit_report_t rep;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_store_audit_verify(s, &rep, &d);
    kw_store_close(s);
    if (rc == KW_ECONFLICT) {
        printf("audit trail BROKEN at event %lld: %s (%lld events before it are intact)\n",
               (long long)rep.bad_seq, rep.why, (long long)rep.n_events);
        return 1;
    }
    if (rc != KW_OK) {
        fprintf(stderr, "keyward audit verify: cannot read the audit trail: %s\n",
                d.msg[0] ? d.msg : kw_strerror(rc));
        return 3;
    }
    char hex[2 * KW_AUDIT_HASH_LEN + 1];
    sodium_bin2hex(hex, sizeof(hex), rep.head.hash, KW_AUDIT_HASH_LEN);
    printf("audit trail intact: %lld events; head %lld %s\n", (long long)rep.n_events,
           (long long)rep.head.seq, hex);
    return 0;
}
