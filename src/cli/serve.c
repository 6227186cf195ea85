/*
 * cli/serve.c - `keyward serve`: open the store, load the secrets and the schema, rebuild
 * the authorization graph, serve the API until SIGTERM/SIGINT.
 *
 * stdout carries exactly one line, `listening on http://HOST:PORT`, once the server
 * accepts connections; everything else goes to stderr. Signals: SIGTERM and SIGINT are
 * blocked in every thread (the mask is set before the server's threads exist) and taken
 * with sigwait here, so shutdown runs in plain thread context: stop accepting, finish
 * in-flight requests, close the database, exit 0.
 *
 * Several instances (PostgreSQL): after the graph is loaded at store revision R0 (one
 * snapshot, kw_sync_load), kw_sync_start catches up and starts the follower that applies
 * other instances' commits; it is stopped after the server and before the store closes.
 * The sync module's configuration comes from the environment, read here (sync_config).
 *
 * Schema choice (docs/API.md): --schema/KEYWARD_SCHEMA (a file) wins; else the schema an
 * administrator stored with /v1/schema/write (meta "schema"); else the built-in agentex.zed.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "grpc/grpc.h"
#include "sync/sync.h"
#include "base/log.h"
#include "cli.h"
#include "secrets.h"

#define KW_MODULE "serve"

/* HTTP worker threads when neither --threads nor KEYWARD_THREADS says (docs/DEPLOYMENT.md,
 * "Threads"): handlers block (a write waits for its batch's fsync, a read for the
 * database), so one thread per core leaves at most that many requests in flight and
 * group commit nothing to batch. */
#define SERVE_DEFAULT_THREADS 16
#define SERVE_MAX_THREADS 256

static void usage(FILE *f)
{
    fprintf(f, "usage: keyward serve [--db URL] [--listen HOST:PORT] [--schema FILE] "
               "[--threads N]\n"
               "                     [--allow-insecure-db-mode]\n"
               "\n"
               "  --db URL          sqlite:PATH, a bare PATH, or postgres://... "
               "(env KEYWARD_DB; default sqlite:keyward.db)\n"
               "  --listen H:P      address to listen on; port 0 picks a free one "
               "(env KEYWARD_LISTEN; default 127.0.0.1:8080)\n"
               "  --schema FILE     authorization schema (env KEYWARD_SCHEMA; default: the one "
               "stored by /v1/schema/write, else the built-in agentex.zed)\n"
               "  --threads N       HTTP worker threads, 1-256: requests in flight at once, "
               "among which concurrent writes share commits (env KEYWARD_THREADS; default 16)\n"
               "\n"
               "  --allow-insecure-db-mode\n"
               "                    open a SQLite database file that group or others may access "
               "(env\n"
               "                    KEYWARD_ALLOW_INSECURE_DB_MODE=1; default: refuse, as it "
               "keeps secrets)\n"
               "\n"
               "  KEYWARD_JWT_SECRET: HS256 secret for bearer tokens (default: generated and kept "
               "in the database)\n"
               "  KEYWARD_MASTER_KEY: key for API-key hashes and sealed secrets (likewise)\n"
               "  KEYWARD_JWT_SECRET_FILE, KEYWARD_MASTER_KEY_FILE: the same, read from a file "
               "of mode 0600\n");
    fprintf(f, "\n  HTTP limits (docs/DEPLOYMENT.md, \"Security\"): --max-conns N (4096), "
               "--max-conns-per-addr N (256),\n  --header-timeout S (10), --body-timeout S (30), "
               "--idle-timeout S (30), --drain-timeout S (10),\n  --body-memory BYTES (64 MiB); "
               "env KEYWARD_MAX_CONNS, KEYWARD_MAX_CONNS_PER_ADDR,\n  KEYWARD_HEADER_TIMEOUT_S, "
               "KEYWARD_BODY_TIMEOUT_S, KEYWARD_IDLE_TIMEOUT_S, KEYWARD_DRAIN_TIMEOUT_S,\n"
               "  KEYWARD_BODY_MEMORY\n");
    fprintf(f, "\n  /v1 atExactSnapshot at older revisions (docs/API.md): "
               "KEYWARD_SNAPSHOT_WINDOW_S (300; 0: the\n  current revision only), "
               "KEYWARD_SNAPSHOT_MAX_CHANGES (100000), KEYWARD_SNAPSHOT_CACHE (2),\n"
               "  KEYWARD_SNAPSHOT_CACHE_MB (1024)\n");
    fprintf(f, "\n  gRPC (SpiceDB's authzed.api.v1 Permissions, Schema, Watch and Experimental "
               "services,\n  grpc.health.v1, server reflection v1/v1alpha; docs/API.md):\n"
               "  --grpc-listen H:P  also serve gRPC (HTTP/2 cleartext, prior knowledge) on "
               "H:P (env\n"
               "                    KEYWARD_GRPC_LISTEN; default: no gRPC). Auth: "
               "authorization: Bearer <key of\n"
               "                    KEYWARD_V1_PRESHARED_KEYS or admin JWT>. stderr names the "
               "bound address.\n"
               "  --grpc-tls-cert FILE, --grpc-tls-key FILE\n"
               "                    serve gRPC over TLS (ALPN h2) with this PEM certificate "
               "chain and key (env\n"
               "                    KEYWARD_GRPC_TLS_CERT, KEYWARD_GRPC_TLS_KEY; default: "
               "cleartext)\n");
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

/* Picks the schema: --schema FILE, else the stored one, else the built-in; *source names
 * it for the messages. Prints why it could not. */
static int pick_schema(kw_sync_t *sync, const char *schema_path, kw_buf_t *text,
                       const char **source)
{
    int rc;
    if (schema_path) {
        *source = schema_path;
        char *file = NULL;
        size_t len = 0;
        rc = kw_read_file(schema_path, KW_MAX_SCHEMA_BYTES, &file, &len);
        if (rc != KW_OK) {
            fprintf(stderr, "keyward: cannot read schema %s: %s\n", schema_path,
                    rc == KW_EIO ? strerror(errno) : kw_strerror(rc));
            return rc;
        }
        kw_buf_append(text, file, len);
        kw_free(file);
        return text->failed ? KW_ENOMEM : KW_OK;
    }
    rc = kw_sync_stored_schema(sync, text);
    if (rc != KW_OK) {
        fprintf(stderr, "keyward: cannot read the stored schema: %s\n", kw_strerror(rc));
        return rc;
    }
    if (text->len > 0) {
        *source = "the schema stored by /v1/schema/write";
        return KW_OK;
    }
    *source = "the built-in agentex.zed";
    kw_buf_puts(text, kw_api_default_schema);
    return text->failed ? KW_ENOMEM : KW_OK;
}

/* Picks the schema, refuses it if the routes cannot work with it (the trial install),
 * then loads the whole graph under it from one store snapshot (kw_sync_load, the way a
 * resync reloads it). */
static int load_graph(kw_sync_t *sync, kw_engine_t *engine, const char *schema_path)
{
    kw_buf_t text;
    kw_diag_t d;
    const char *source = NULL;
    kw_buf_init(&text);
    kw_diag_clear(&d);
    int rc = pick_schema(sync, schema_path, &text, &source);
    if (rc != KW_OK)
        goto out;
    kw_str_t t = {text.ptr ? text.ptr : "", text.len};
    rc = kw_sync_schema_try(sync, t, &d);
    if (rc != KW_OK) {
        if (d.line)
            fprintf(stderr, "keyward: schema (%s): %u:%u: %s\n", source, d.line, d.col, d.msg);
        else
            fprintf(stderr, "keyward: schema (%s): %s\n", source,
                    d.msg[0] ? d.msg : kw_strerror(rc));
        goto out;
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "schema: %s", source);
    rc = kw_sync_load(sync, t, &d);
    if (rc != KW_OK) {
        fprintf(stderr, "keyward: rebuilding the authorization graph failed: %s%s%s\n",
                kw_strerror(rc), d.msg[0] ? ": " : "", d.msg);
        goto out;
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "graph: %zu relationships (store revision %llu)",
           kw_engine_count(engine), (unsigned long long)kw_sync_applied(sync));
out:
    kw_buf_free(&text);
    return rc;
}

/* An integer from the environment within [min, max], else `dflt` (with a WARN naming
 * the bounds when set but invalid). */
static long env_bounded(const char *name, long min, long max, long dflt, const char *unit)
{
    const char *env = getenv(name);
    long v = 0;
    if (!env || !env[0])
        return dflt;
    if (kw_api_parse_bounded(kw_str_c(env), min, max, &v))
        return v;
    kw_log(KW_LOG_WARN, KW_MODULE, "%s must be %ld..%ld (%s); using %ld", name, min, max, unit,
           dflt);
    return dflt;
}

/* The sync module's configuration (docs/DEPLOYMENT.md): the environment, and the routes'
 * schema requirements. */
static void sync_config(kw_sync_config_t *cfg)
{
    kw_sync_config_default(cfg);
    cfg->freshness_ms = (int)env_bounded("KEYWARD_FRESHNESS_TIMEOUT_MS", 0,
                                         KW_SYNC_FRESHNESS_MS_MAX, KW_SYNC_FRESHNESS_MS, "ms");
    cfg->prune_interval_s = env_bounded("KEYWARD_CHANGELOG_PRUNE_INTERVAL_S", 1,
                                        KW_SYNC_SECONDS_MAX, KW_SYNC_PRUNE_INTERVAL_S, "seconds");
    cfg->retain_s = env_bounded("KEYWARD_CHANGELOG_RETAIN_S", 1, KW_SYNC_SECONDS_MAX,
                                KW_SYNC_RETAIN_S, "seconds");
    cfg->sweep_interval_s = env_bounded("KEYWARD_EXPIRY_SWEEP_INTERVAL_S", 0, KW_SYNC_SECONDS_MAX,
                                        KW_SYNC_SWEEP_INTERVAL_S, "seconds; 0 disables");
    cfg->check_schema = kw_api_check_schema;
}

/* atExactSnapshot's window (docs/API.md "atExactSnapshot"): the engine's change log and
 * its snapshot cache. */
static void snapshot_config(kw_engine_t *engine)
{
    long window_s = env_bounded("KEYWARD_SNAPSHOT_WINDOW_S", 0, KW_SYNC_SECONDS_MAX,
                                KW_HISTORY_WINDOW_S, "seconds; 0: only the current revision");
    long changes = env_bounded("KEYWARD_SNAPSHOT_MAX_CHANGES", 1, 100000000, KW_HISTORY_MAX_CHANGES,
                               "relationship changes");
    long snaps = env_bounded("KEYWARD_SNAPSHOT_CACHE", 0, 64, KW_HISTORY_SNAPSHOTS,
                             "snapshots; 0: none cached");
    long mb = env_bounded("KEYWARD_SNAPSHOT_CACHE_MB", 1, 1048576, KW_HISTORY_SNAPSHOT_MB, "MiB");
    kw_engine_set_history(engine, (int64_t)window_s * 1000000, (size_t)changes, (size_t)snaps,
                          (size_t)mb << 20);
}

static int load_keyring(kw_store_t *store, kw_keyring_t **out)
{
    kw_arena_t *a = kw_arena_new(0);
    kw_str_t jwt = KW_STR_NULL, master = KW_STR_NULL;
    if (!a)
        return KW_ENOMEM;
    int rc = kw_cli_load_secrets(store, a, &jwt, &master);
    if (rc == KW_OK)
        rc = kw_keyring_new(jwt, master, out);
    kw_cli_wipe_secrets(&jwt, &master);
    kw_arena_free(a);
    if (rc != KW_OK)
        fprintf(stderr,
                "keyward: cannot set up secrets: %s (KEYWARD_JWT_SECRET needs >= 16 "
                "bytes, KEYWARD_MASTER_KEY >= 32)\n",
                kw_strerror(rc));
    return rc;
}

/* The HTTP server's limits (kw_http_config_t; unset = the server's default). */
static const struct {
    const char *flag, *env;
} http_opts[] = {
    {"--max-conns", "KEYWARD_MAX_CONNS"},
    {"--max-conns-per-addr", "KEYWARD_MAX_CONNS_PER_ADDR"},
    {"--header-timeout", "KEYWARD_HEADER_TIMEOUT_S"},
    {"--body-timeout", "KEYWARD_BODY_TIMEOUT_S"},
    {"--idle-timeout", "KEYWARD_IDLE_TIMEOUT_S"},
    {"--drain-timeout", "KEYWARD_DRAIN_TIMEOUT_S"},
    {"--body-memory", "KEYWARD_BODY_MEMORY"},
};
#define N_HTTP_OPTS KW_ARRAY_LEN(http_opts)

/* Takes argv[*i] if it is one of http_opts ("--flag V" or "--flag=V"). */
static bool http_opt_arg(int argc, char **argv, int *i, const char **vals)
{
    for (size_t k = 0; k < N_HTTP_OPTS; k++) {
        size_t n = strlen(http_opts[k].flag);
        if (strncmp(argv[*i], http_opts[k].flag, n) != 0)
            continue;
        if (argv[*i][n] == '=') {
            vals[k] = argv[*i] + n + 1;
            return true;
        }
        if (argv[*i][n] == '\0' && *i + 1 < argc) {
            vals[k] = argv[++*i];
            return true;
        }
    }
    return false;
}

/* Fills the limits into cfg; false (after a message) for a value that is not 1..max. */
static bool http_opts_apply(const char **vals, kw_http_config_t *cfg)
{
    unsigned *u[] = {&cfg->conn_limit,     &cfg->conn_per_addr,  &cfg->header_timeout_s,
                     &cfg->body_timeout_s, &cfg->conn_timeout_s, &cfg->drain_timeout_s};
    for (size_t k = 0; k < N_HTTP_OPTS; k++) {
        if (!vals[k])
            continue;
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(vals[k], &end, 10);
        unsigned long long max = k < KW_ARRAY_LEN(u) ? 1000000ull : (1ull << 40);
        if (errno || !end || *end || end == vals[k] || vals[k][0] == '-' || v < 1 || v > max) {
            fprintf(stderr, "keyward serve: %s (or %s) wants 1-%llu, got '%s'\n", http_opts[k].flag,
                    http_opts[k].env, max, vals[k]);
            return false;
        }
        if (k < KW_ARRAY_LEN(u))
            *u[k] = (unsigned)v;
        else
            cfg->body_budget = (size_t)v;
    }
    return true;
}

/* "N" with 1 <= N <= SERVE_MAX_THREADS. */
static bool parse_threads(const char *s, unsigned *out)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || !end || *end || end == s || n < 1 || n > SERVE_MAX_THREADS)
        return false;
    *out = (unsigned)n;
    return true;
}

int kw_cli_serve(int argc, char **argv)
{
    const char *db = env_or("KEYWARD_DB", "sqlite:keyward.db");
    const char *listen = env_or("KEYWARD_LISTEN", "127.0.0.1:8080");
    const char *schema = env_or("KEYWARD_SCHEMA", NULL);
    const char *threads_arg = env_or("KEYWARD_THREADS", NULL);
    const char *grpc_listen = env_or("KEYWARD_GRPC_LISTEN", NULL);
    const char *grpc_cert = env_or("KEYWARD_GRPC_TLS_CERT", NULL);
    const char *grpc_key = env_or("KEYWARD_GRPC_TLS_KEY", NULL);
    const char *http_vals[N_HTTP_OPTS];
    for (size_t k = 0; k < N_HTTP_OPTS; k++)
        http_vals[k] = env_or(http_opts[k].env, NULL);
    bool allow_insecure_db = false; /* or env KEYWARD_ALLOW_INSECURE_DB_MODE (secrets.h) */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = strcmp(a, "--db") == 0              ? &db
                           : strcmp(a, "--listen") == 0        ? &listen
                           : strcmp(a, "--schema") == 0        ? &schema
                           : strcmp(a, "--threads") == 0       ? &threads_arg
                           : strcmp(a, "--grpc-listen") == 0   ? &grpc_listen
                           : strcmp(a, "--grpc-tls-cert") == 0 ? &grpc_cert
                           : strcmp(a, "--grpc-tls-key") == 0  ? &grpc_key
                                                               : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--allow-insecure-db-mode") == 0) {
            allow_insecure_db = true;
            continue;
        }
        if (dst && i + 1 < argc) {
            *dst = argv[++i];
            continue;
        }
        if (http_opt_arg(argc, argv, &i, http_vals))
            continue;
        if (strncmp(a, "--db=", 5) == 0)
            db = a + 5;
        else if (strncmp(a, "--listen=", 9) == 0)
            listen = a + 9;
        else if (strncmp(a, "--schema=", 9) == 0)
            schema = a + 9;
        else if (strncmp(a, "--grpc-listen=", 14) == 0)
            grpc_listen = a + 14;
        else if (strncmp(a, "--grpc-tls-cert=", 16) == 0)
            grpc_cert = a + 16;
        else if (strncmp(a, "--grpc-tls-key=", 15) == 0)
            grpc_key = a + 15;
        else if (strncmp(a, "--threads=", 10) == 0)
            threads_arg = a + 10;
        else {
            fprintf(stderr, "keyward serve: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    unsigned threads = SERVE_DEFAULT_THREADS;
    if (threads_arg && !parse_threads(threads_arg, &threads)) {
        fprintf(stderr, "keyward serve: --threads (or KEYWARD_THREADS) wants 1-%d, got '%s'\n",
                SERVE_MAX_THREADS, threads_arg);
        return 2;
    }
    kw_http_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    if (!http_opts_apply(http_vals, &cfg))
        return 2;
    char *host = NULL;
    uint16_t port = 0;
    if (!kw_cli_parse_addr(listen, false, &host, &port)) {
        fprintf(stderr, "keyward serve: --listen wants HOST:PORT, got '%s'\n", listen);
        return 2;
    }

    char *grpc_host = NULL;
    uint16_t grpc_port = 0;
    if ((grpc_cert || grpc_key) && !(grpc_cert && grpc_key && grpc_listen)) {
        fprintf(stderr, "keyward serve: --grpc-tls-cert and --grpc-tls-key go together, with "
                        "--grpc-listen\n");
        kw_free(host);
        return 2;
    }
    if (grpc_listen && !kw_cli_parse_addr(grpc_listen, false, &grpc_host, &grpc_port)) {
        fprintf(stderr, "keyward serve: --grpc-listen wants HOST:PORT, got '%s'\n", grpc_listen);
        kw_free(host);
        return 2;
    }

    int status = 1, rc;
    kw_grpc_server_t *gsrv = NULL;
    kw_store_t *store = NULL;
    kw_keyring_t *keyring = NULL;
    kw_engine_t *engine = NULL;
    kw_sync_t *sync = NULL;
    kw_api_t *api = NULL;
    kw_http_server_t *srv = NULL;
    kw_sync_config_t sync_cfg;
    kw_diag_t d;
    kw_diag_clear(&d);

    /* PostgreSQL: one connection per request in flight unless pool=N or KEYWARD_PG_POOL
     * says otherwise (measured: GET by id 12k/s with 2 x cores = 4 connections, 16-19k/s
     * with 16, docs/BENCHMARKS.md). Connections open lazily. */
    const kw_store_opts_t store_opts = {.pool_size = threads};
    if (kw_cli_open_store("keyward", db, store_opts, allow_insecure_db, &store) != KW_OK)
        goto out;
    if (load_keyring(store, &keyring) != KW_OK)
        goto out;
    sync_config(&sync_cfg);
    if (kw_engine_new(&engine) != KW_OK || kw_sync_new(engine, store, &sync_cfg, &sync) != KW_OK) {
        fprintf(stderr, "keyward: out of memory\n");
        goto out;
    }
    if (load_graph(sync, engine, schema) != KW_OK)
        goto out;
    snapshot_config(engine);
    if (kw_api_new(engine, store, keyring, sync, &api) != KW_OK ||
        kw_api_set_v1_preshared_keys(api, getenv("KEYWARD_V1_PRESHARED_KEYS")) != KW_OK) {
        fprintf(stderr, "keyward: out of memory\n");
        goto out;
    }

    /* Block the shutdown signals before any thread (follower, server) exists: they
     * inherit the mask and only sigwait below receives them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The graph is at the loaded store revision; on PostgreSQL the follower keeps it
     * current with the other instances from here on (stopped by kw_sync_free, before the
     * store closes). Started before serving. */
    kw_diag_clear(&d);
    rc = kw_sync_start(sync, &d);
    if (rc != KW_OK) {
        fprintf(stderr, "keyward: cannot follow the database: %s\n",
                d.msg[0] ? d.msg : kw_strerror(rc));
        goto out;
    }

    cfg.host = host;
    cfg.port = port;
    cfg.threads = threads;
    cfg.routes = kw_api_routes(&cfg.n_routes);
    cfg.ud = api;
    cfg.metrics_fn = kw_api_metrics;
    cfg.on_headers = kw_api_on_headers;
    cfg.error_fn = kw_api_http_error;
    uint16_t bound = 0;
    kw_diag_clear(&d);
    rc = kw_http_server_start(&cfg, &srv, &bound, &d);
    if (rc != KW_OK) {
        fprintf(stderr, "keyward: cannot listen on %s: %s\n", listen,
                d.msg[0] ? d.msg : kw_strerror(rc));
        goto out;
    }
    kw_api_serve_on(api, srv);
    if (grpc_host) {
        kw_grpc_config_t gcfg = {
            .host = grpc_host, .port = grpc_port, .tls_cert = grpc_cert, .tls_key = grpc_key};
        uint16_t gbound = 0;
        kw_diag_clear(&d);
        rc = kw_grpc_server_start(&gcfg, api, &gsrv, &gbound, &d);
        if (rc != KW_OK) {
            fprintf(stderr, "keyward: cannot listen for gRPC on %s: %s\n", grpc_listen,
                    d.msg[0] ? d.msg : kw_strerror(rc));
            goto out;
        }
        kw_log(KW_LOG_INFO, KW_MODULE, "gRPC listening on %s:%u (%s)", grpc_host, (unsigned)gbound,
               grpc_cert ? "TLS" : "cleartext h2c");
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "serving (%s database)", kw_store_backend(store));
    if (strchr(host, ':'))
        printf("listening on http://[%s]:%u\n", host, (unsigned)bound);
    else
        printf("listening on http://%s:%u\n", host, (unsigned)bound);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    kw_log(KW_LOG_INFO, KW_MODULE, "signal %d: stopping", sig);
    kw_grpc_server_stop(gsrv); /* before the HTTP server: both use the api */
    gsrv = NULL;
    kw_api_serve_on(api, NULL); /* parked requests are answered by the stop (run = deadline) */
    if (kw_http_server_stop(srv) != KW_OK) {
        /* A handler is stuck past the drain timeout: it may still use the api, engine
         * and store, so nothing is torn down; the process just ends. */
        kw_log(KW_LOG_ERROR, KW_MODULE, "exiting with a request handler still running");
        fflush(stderr);
        _exit(1);
    }
    srv = NULL;
    kw_sync_stop(sync); /* before the store closes */
    status = 0;
out:
    kw_grpc_server_stop(gsrv);
    if (srv) {
        kw_api_serve_on(api, NULL);
        kw_http_server_stop(srv);
    }
    kw_api_free(api);
    kw_sync_free(sync);
    if (engine)
        kw_engine_free(engine);
    if (keyring)
        kw_keyring_free(keyring);
    if (store)
        kw_store_close(store);
    kw_free(host);
    kw_free(grpc_host);
    return status;
}
