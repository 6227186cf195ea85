/*
 * cli/token.c - `keyward token`: mint an HS256 bearer token for the service.
 *
 *   keyward token --sub ID [--type user|service_account] [--account ACCOUNT] [--admin]
 *                 [--ttl SECONDS] [--db URL] [--allow-insecure-db-mode]
 *
 * Prints the token and a newline on stdout, nothing else. The secret is env
 * KEYWARD_JWT_SECRET or the file named by KEYWARD_JWT_SECRET_FILE, else the one the server
 * keeps in the database (created there on first use, see cli/secrets.h). With a secret
 * from the environment or a file the database is not opened at all:
 * minting needs no master key, so the keyring gets a throwaway random one (never used).
 * Options also accept the --name=value form.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/secrets.h"
#include "keys/keys.h"
#include "store/store.h"

#define DEFAULT_TTL 3600
#define MAX_TTL (10LL * 366 * 24 * 3600)

typedef struct token_opts {
    const char *sub;
    const char *type;
    const char *account;
    bool admin;
    long long ttl;
    const char *db;
    bool allow_insecure_db; /* --allow-insecure-db-mode (secrets.h) */
} token_opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keyward token --sub ID [--type user|service_account] [--account ACCOUNT]\n"
            "                     [--admin] [--ttl SECONDS] [--db URL] [--allow-insecure-db-mode]\n"
            "\n"
            "Prints a signed HS256 bearer token for the keyward service.\n"
            "  --sub ID        the principal's id (claim sub; required)\n"
            "  --type T        user (default) or service_account (claim principal_type)\n"
            "  --account ID    the caller's selected account (claim account)\n"
            "  --admin         make the caller an administrator of the /v1 API\n"
            "  --ttl SECONDS   lifetime, 1..%lld (default %d)\n"
            "  --db URL        database holding the server's secret (default: env\n"
            "                  KEYWARD_DB, else sqlite:keyward.db); not opened when\n"
            "                  KEYWARD_JWT_SECRET or KEYWARD_JWT_SECRET_FILE is set\n"
            "  --allow-insecure-db-mode\n"
            "                  open a SQLite database file that group or others may\n"
            "                  access (env KEYWARD_ALLOW_INSECURE_DB_MODE=1)\n",
            MAX_TTL, DEFAULT_TTL);
}

/* Matches "--name VALUE" and "--name=VALUE"; advances *i past what it consumed. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *val = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "keyward token: %s needs a value\n", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

/* Returns 0 on success, else the exit status (2 usage, 0 after --help). */
static int parse_args(int argc, char **argv, token_opts_t *o, bool *help)
{
    const char *ttl = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int m;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            *help = true;
            return 0;
        }
        if (strcmp(argv[i], "--admin") == 0) {
            o->admin = true;
            continue;
        }
        if (strcmp(argv[i], "--allow-insecure-db-mode") == 0) {
            o->allow_insecure_db = true;
            continue;
        }
        if ((m = opt_value(argc, argv, &i, "--sub", &v)) != 0)
            o->sub = v;
        else if ((m = opt_value(argc, argv, &i, "--type", &v)) != 0)
            o->type = v;
        else if ((m = opt_value(argc, argv, &i, "--account", &v)) != 0)
            o->account = v;
        else if ((m = opt_value(argc, argv, &i, "--ttl", &v)) != 0)
            ttl = v;
        else if ((m = opt_value(argc, argv, &i, "--db", &v)) != 0)
            o->db = v;
        else {
            fprintf(stderr, "keyward token: unknown option '%s'\n", argv[i]);
            return 2;
        }
        if (m < 0)
            return 2;
    }
    if (!o->sub || !o->sub[0]) {
        fprintf(stderr, "keyward token: --sub is required\n");
        return 2;
    }
    if (strlen(o->sub) >= sizeof(((kw_token_claims_t *)0)->sub)) {
        fprintf(stderr, "keyward token: --sub is longer than 255 bytes\n");
        return 2;
    }
    if (o->account && strlen(o->account) >= sizeof(((kw_token_claims_t *)0)->account)) {
        fprintf(stderr, "keyward token: --account is longer than 255 bytes\n");
        return 2;
    }
    if (strcmp(o->type, "user") != 0 && strcmp(o->type, "service_account") != 0) {
        fprintf(stderr, "keyward token: --type must be user or service_account\n");
        return 2;
    }
    if (ttl) {
        char *end = NULL;
        long long t = strtoll(ttl, &end, 10);
        if (!ttl[0] || *end || t < 1 || t > MAX_TTL) {
            fprintf(stderr, "keyward token: --ttl must be a whole number of seconds, 1..%lld\n",
                    MAX_TTL);
            return 2;
        }
        o->ttl = t;
    }
    return 0;
}

/* Builds the keyring: a secret from the environment or a file without touching the
 * database, else the stored one. */
static int make_keyring(const token_opts_t *o, kw_keyring_t **ring)
{
    kw_arena_t *env_arena = kw_arena_new(0);
    if (!env_arena)
        return KW_ENOMEM;
    kw_str_t env = KW_STR_NULL;
    int rc = kw_cli_secret_from_env("KEYWARD_JWT_SECRET", KW_CLI_JWT_SECRET_MIN, env_arena, &env);
    if (rc == KW_OK) {
        uint8_t throwaway[32];
        randombytes_buf(throwaway, sizeof(throwaway));
        rc = kw_keyring_new(env, (kw_str_t){(const char *)throwaway, 32}, ring);
        sodium_memzero(throwaway, sizeof(throwaway));
    }
    kw_cli_wipe_secrets(&env, NULL);
    kw_arena_free(env_arena);
    if (rc == KW_EINVAL)
        fprintf(stderr, "keyward token: cannot use the token secret from KEYWARD_JWT_SECRET or "
                        "KEYWARD_JWT_SECRET_FILE (the line above says why)\n");
    if (rc != KW_ENOTFOUND)
        return rc;

    kw_store_t *store = NULL;
    rc = kw_cli_open_store("keyward token", o->db, (kw_store_opts_t){0}, o->allow_insecure_db,
                           &store);
    if (rc != KW_OK)
        return rc;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw_store_close(store);
        return KW_ENOMEM;
    }
    kw_str_t jwt = KW_STR_NULL, master = KW_STR_NULL;
    rc = kw_cli_load_secrets(store, a, &jwt, &master);
    if (rc == KW_OK) {
        rc = kw_keyring_new(jwt, master, ring);
        kw_cli_wipe_secrets(&jwt, &master);
    }
    if (rc != KW_OK)
        fprintf(stderr, "keyward token: cannot load the token secret: %s\n", kw_strerror(rc));
    kw_arena_free(a);
    kw_store_close(store);
    return rc;
}

int kw_cli_token(int argc, char **argv)
{
    const char *db_env = getenv("KEYWARD_DB");
    token_opts_t o = {
        .type = "user",
        .ttl = DEFAULT_TTL,
        .db = db_env && db_env[0] ? db_env : "sqlite:keyward.db",
    };
    bool help = false;
    int st = parse_args(argc, argv, &o, &help);
    if (help) {
        usage(stdout);
        return 0;
    }
    if (st != 0) {
        usage(stderr);
        return st;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "keyward token: libsodium failed to initialize\n");
        return 1;
    }

    kw_keyring_t *ring = NULL;
    if (make_keyring(&o, &ring) != KW_OK)
        return 1;

    kw_token_claims_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", o.sub);
    snprintf(c.principal_type, sizeof(c.principal_type), "%s", o.type);
    if (o.account)
        snprintf(c.account, sizeof(c.account), "%s", o.account);
    c.admin = o.admin;
    c.iat = (int64_t)time(NULL);
    c.exp = c.iat + o.ttl;

    char *tok = NULL;
    int rc = kw_token_mint(ring, &c, &tok);
    kw_keyring_free(ring);
    if (rc != KW_OK) {
        fprintf(stderr, "keyward token: cannot mint the token: %s\n", kw_strerror(rc));
        return 1;
    }
    size_t n = strlen(tok);
    int ok = fwrite(tok, 1, n, stdout) == n && fputc('\n', stdout) != EOF && fflush(stdout) == 0;
    sodium_memzero(tok, n);
    kw_free(tok);
    if (!ok) {
        fprintf(stderr, "keyward token: cannot write the token to stdout\n");
        return 1;
    }
    return 0;
}
