/*
 * cli/migrate.c - `keyward migrate`: copy a whole database to another backend.
 *
 *   keyward migrate --from URL --to URL [--allow-insecure-db-mode]
 *
 * e.g. --from sqlite:keyward.db --to postgres://host/keyward, or back. Copies every row
 * (settings, agents, keys with their hashes and sealed secrets exactly as stored,
 * relationships, the audit trail), the revision and the audit chain head, read from ONE
 * snapshot of the source (store/audit.h, kw_store_dump) and written in ONE transaction
 * into the target (kw_store_import_*), which must be empty: a target holding anything is
 * refused and left alone. Writes made to the source after its snapshot are not in the
 * copy: stop the servers first (docs/DEPLOYMENT.md). Afterwards the target's counts and
 * revision are compared with what was read, and its audit chain is verified and compared
 * with the source's head. The secrets at rest stay sealed under the same master key: the
 * target needs the same KEYWARD_MASTER_KEY (or the copied meta row, when it came from the
 * database). Progress: a bar on stderr when it is a terminal; one summary line on stdout.
 * Exit status: 0 copied and verified, 1 failed (nothing written, or the verification
 * failed: the message says which), 2 usage.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/secrets.h"
#include "store/store.h"

#define WHO "keyward migrate"

static void usage(FILE *f)
{
    fprintf(f, "usage: keyward migrate --from URL --to URL [--allow-insecure-db-mode]\n"
               "\n"
               "Copies a whole keyward database (sqlite:PATH or postgres://...) into an EMPTY\n"
               "one, then verifies the counts and the audit chain of the copy.\n"
               "  --from URL  the source database\n"
               "  --to URL    the target (created if it is a new SQLite file; refused if it\n"
               "              holds anything)\n"
               "  --allow-insecure-db-mode\n"
               "              open SQLite files that group or others may access\n");
}

typedef struct progress {
    kw_store_import_t *imp;
    uint64_t done, total;
    bool tty;
    int shown; /* permille last drawn */
} progress_t;

static void draw(progress_t *p, bool last)
{
    if (!p->tty)
        return;
    uint64_t total = p->total > p->done ? p->total : p->done;
    int permille = total ? (int)(p->done * 1000 / total) : 1000;
    if (!last && permille == p->shown)
        return;
    p->shown = permille;
    char bar[41];
    int fill = permille * 40 / 1000;
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "\r[%s] %5.1f%% %llu/%llu rows%s", bar, permille / 10.0,
            (unsigned long long)p->done, (unsigned long long)total, last ? "\n" : "");
}

static int step(progress_t *p, int rc)
{
    if (rc == KW_OK) {
        p->done++;
        draw(p, false);
    }
    return rc;
}

static int on_meta(void *ud, kw_str_t key, kw_str_t val)
{
    progress_t *p = ud;
    return step(p, kw_store_import_meta(p->imp, key, val));
}
static int on_agent(void *ud, const kw_agent_t *ag)
{
    progress_t *p = ud;
    return step(p, kw_store_import_agent(p->imp, ag));
}
static int on_key(void *ud, const kw_apikey_t *k)
{
    progress_t *p = ud;
    return step(p, kw_store_import_key(p->imp, k));
}
static int on_rel(void *ud, const kw_rel_t *rel)
{
    progress_t *p = ud;
    return step(p, kw_store_import_rel(p->imp, rel));
}
static int on_audit(void *ud, const kw_audit_event_t *ev)
{
    progress_t *p = ud;
    return step(p, kw_store_import_audit(p->imp, ev));
}

static const kw_store_sink_t sink = {on_meta, on_agent, on_key, on_rel, on_audit};

static uint64_t rows_of(const kw_store_counts_t *n)
{
    return n->meta + n->agents + n->keys + n->relationships + n->audit_events;
}

/* Compares the copy with what was read; false (printed) on any difference. */
static bool verify(kw_store_t *dst, const kw_store_counts_t *want, const kw_audit_head_t *head)
{
    kw_store_counts_t got;
    int rc = kw_store_counts(dst, &got);
    if (rc != KW_OK) {
        fprintf(stderr, WHO ": cannot count the target's rows: %s\n", kw_strerror(rc));
        return false;
    }
    const struct {
        const char *what;
        uint64_t want, got;
    } cmp[] = {
        {"settings", want->meta, got.meta},
        {"agents", want->agents, got.agents},
        {"keys", want->keys, got.keys},
        {"relationships", want->relationships, got.relationships},
        {"audit events", want->audit_events, got.audit_events},
        {"revision", want->revision, got.revision},
    };
    bool ok = true;
    for (size_t i = 0; i < sizeof(cmp) / sizeof(cmp[0]); i++)
        if (cmp[i].want != cmp[i].got) {
            fprintf(stderr, WHO ": verification failed: %s: source %llu, target %llu\n",
                    cmp[i].what, (unsigned long long)cmp[i].want, (unsigned long long)cmp[i].got);
            ok = false;
        }
    kw_audit_report_t rep;
    kw_diag_t d;
    kw_diag_clear(&d);
    rc = kw_store_audit_verify(dst, &rep, &d);
    if (rc == KW_ECONFLICT) {
        fprintf(stderr,
                WHO ": verification failed: the copied audit trail is broken at event "
                    "%lld: %s\n",
                (long long)rep.bad_seq, rep.why);
        return false;
    }
    if (rc != KW_OK) {
        fprintf(stderr, WHO ": cannot verify the copied audit trail: %s\n",
                d.msg[0] ? d.msg : kw_strerror(rc));
        return false;
    }
    if (rep.head.seq != head->seq ||
        sodium_memcmp(rep.head.hash, head->hash, KW_AUDIT_HASH_LEN) != 0) {
        fprintf(stderr, WHO ": verification failed: the copy's audit head differs from the "
                            "source's\n");
        ok = false;
    }
    return ok;
}

/* The source's own chain must be intact: copying a broken one would launder it. */
static bool source_chain_ok(kw_store_t *src)
{
    kw_audit_report_t rep;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_store_audit_verify(src, &rep, &d);
    if (rc == KW_ECONFLICT)
        fprintf(stderr,
                WHO ": the source's audit trail is broken at event %lld: %s; nothing copied "
                    "(run `keyward audit verify`)\n",
                (long long)rep.bad_seq, rep.why);
    else if (rc != KW_OK)
        fprintf(stderr, WHO ": cannot verify the source's audit trail: %s\n",
                d.msg[0] ? d.msg : kw_strerror(rc));
    return rc == KW_OK;
}

static int copy(kw_store_t *src, kw_store_t *dst, kw_store_counts_t *counts, kw_audit_head_t *head)
{
    progress_t p;
    memset(&p, 0, sizeof(p));
    p.tty = isatty(STDERR_FILENO) == 1;
    p.shown = -1;
    kw_store_counts_t before;
    if (kw_store_counts(src, &before) == KW_OK)
        p.total = rows_of(&before);
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_store_import_begin(dst, &p.imp, &d);
    if (rc != KW_OK) {
        fprintf(stderr, WHO ": %s; nothing written\n",
                rc == KW_ECONFLICT ? d.msg : "cannot start writing the target");
        return rc;
    }
    kw_diag_clear(&d);
    rc = kw_store_dump(src, &sink, &p, counts, head, &d);
    if (rc != KW_OK) {
        if (p.tty)
            fputc('\n', stderr);
        kw_store_import_abort(p.imp);
        fprintf(stderr, WHO ": copying failed after %llu rows: %s; nothing written\n",
                (unsigned long long)p.done, d.msg[0] ? d.msg : kw_strerror(rc));
        return rc;
    }
    p.total = p.done;
    draw(&p, true);
    kw_diag_clear(&d);
    rc = kw_store_import_commit(p.imp, counts->revision, head, &d);
    if (rc != KW_OK)
        fprintf(stderr, WHO ": %s; nothing written\n",
                d.msg[0] ? d.msg : "the target could not be committed");
    return rc;
}

int kw_cli_migrate(int argc, char **argv)
{
    const char *from = NULL, *to = NULL;
    bool insecure = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--allow-insecure-db-mode") == 0) {
            insecure = true;
        } else if (strncmp(argv[i], "--from=", 7) == 0) {
            from = argv[i] + 7;
        } else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
            from = argv[++i];
        } else if (strncmp(argv[i], "--to=", 5) == 0) {
            to = argv[i] + 5;
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
            to = argv[++i];
        } else {
            fprintf(stderr, WHO ": unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!from || !from[0] || !to || !to[0]) {
        fprintf(stderr, WHO ": --from and --to are required\n");
        usage(stderr);
        return 2;
    }
    if (strcmp(from, to) == 0) {
        fprintf(stderr, WHO ": --from and --to name the same database\n");
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, WHO ": libsodium failed to initialize\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kw_store_t *src = NULL, *dst = NULL;
    if (kw_cli_open_store(WHO " (source)", from, (kw_store_opts_t){0}, insecure, &src) != KW_OK)
        return 1;
    if (kw_cli_open_store(WHO " (target)", to, (kw_store_opts_t){0}, insecure, &dst) != KW_OK) {
        kw_store_close(src);
        return 1;
    }
    kw_store_counts_t counts;
    kw_audit_head_t head;
    int st = 1;
    if (source_chain_ok(src) && copy(src, dst, &counts, &head) == KW_OK) {
        if (verify(dst, &counts, &head)) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
            printf("migrated %s -> %s: %llu agents, %llu keys, %llu relationships, %llu audit "
                   "events, %llu settings, revision %llu in %.2f s; counts and audit chain "
                   "verified\n",
                   kw_store_backend(src), kw_store_backend(dst), (unsigned long long)counts.agents,
                   (unsigned long long)counts.keys, (unsigned long long)counts.relationships,
                   (unsigned long long)counts.audit_events, (unsigned long long)counts.meta,
                   (unsigned long long)counts.revision, secs);
            st = 0;
        }
    }
    kw_store_close(dst);
    kw_store_close(src);
    return st;
}
