/*
 * cli/serve_testing.c - `keyward serve-testing`, as `spicedb serve-testing`: a server for
 * test suites in which every distinct bearer token gets its own empty in-memory instance
 * (api/testing.h), over gRPC (default 127.0.0.1:50051) and the HTTP/JSON gateway (default
 * 127.0.0.1:8443). Nothing is persisted and no secret is needed: the keys the instances
 * use are random per process.
 *
 * stdout carries one line per listener once it accepts connections,
 * `listening on grpc://HOST:PORT`, `listening on grpc-readonly://HOST:PORT` (the same
 * instances, writes refused) then `listening on http://HOST:PORT`; everything else
 * goes to stderr. A port that is taken is an error at once (exit 1), never a silent
 * fallback. SIGTERM/SIGINT stop it as `serve` stops (blocked in every thread, taken by
 * sigwait here): both servers stop, then the instances are freed; exit 0.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/testing.h"
#include "grpc/grpc.h"
#include "base/log.h"
#include "cli.h"

#define KW_MODULE "serve-testing"

#define TESTING_THREADS 8 /* HTTP event loops: a test suite's requests in flight */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: keyward serve-testing [--grpc-addr HOST:PORT] [--readonly-grpc-addr HOST:PORT]\n"
        "                             [--http-addr HOST:PORT]\n"
        "                             [--http-enabled true|false] [--max-instances N]\n"
        "                             [--instance-memory-mib N] [--evict-lru true|false]\n"
        "                             [--instance-idle-s N]\n"
        "\n"
        "A throwaway server for test suites, as `spicedb serve-testing`: every distinct\n"
        "`authorization: Bearer <token>` gets its own empty in-memory instance (schema and\n"
        "relationships), made on the token's first request; nothing is persisted. The\n"
        "SpiceDB v1 API is served over gRPC (PermissionsService, SchemaService, WatchService,\n"
        "grpc.health.v1) and over the HTTP/JSON gateway (/v1/...), both reaching the same\n"
        "instance for the same token. No other authentication: any token is accepted.\n"
        "\n"
        "  --grpc-addr H:P         gRPC, cleartext HTTP/2 (default 127.0.0.1:50051; \":P\" "
        "listens on\n"
        "                          every interface, as SpiceDB's default \":50051\" does)\n"
        "  --readonly-grpc-addr H:P  gRPC on the same instances where every write is "
        "refused\n"
        "                          (UNAVAILABLE \"service read-only\"; default "
        "127.0.0.1:50052)\n"
        "  --http-addr H:P         the HTTP/JSON gateway (default 127.0.0.1:8443)\n"
        "  --http-enabled B        serve the gateway at all (default true)\n"
        "  --max-instances N       instances (tokens) at most, 1-%u (default %u); a new "
        "token past\n"
        "                          it is refused: gRPC RESOURCE_EXHAUSTED, HTTP 429 (but see\n"
        "                          --evict-lru)\n"
        "  --instance-memory-mib N each instance's store at most N MiB, 1-4096 (default %u);"
        " a write\n"
        "                          past it fails with RESOURCE_EXHAUSTED\n"
        "  --evict-lru B           at --max-instances, a new token drops the least recently\n"
        "                          used instance no request is using (its token comes back\n"
        "                          to a new, empty one) instead of being refused (default false)\n"
        "  --instance-idle-s N     drop instances no request used for N seconds, 1-604800,\n"
        "                          checked when a new token arrives (default: never)\n"
        "\n"
        "stdout: `listening on grpc://HOST:PORT`, `listening on grpc-readonly://HOST:PORT`,\n"
        "then `listening on http://HOST:PORT`.\n"
        "A port already taken is an error (exit 1). SIGTERM or SIGINT stops it (exit 0).\n",
        65536u, KW_TESTING_MAX_INSTANCES, KW_TESTING_INSTANCE_BYTES >> 20);
}

static bool parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || !end || *end || end == s || s[0] == '-' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

typedef struct opts {
    const char *grpc_addr, *ro_grpc_addr, *http_addr, *http_enabled, *max_instances, *memory_mib,
        *evict_lru, *idle_s;
} opts_t;

/* Parses argv into o: 0 go on, 1 help printed, 2 a usage error (printed). */
static int parse_args(int argc, char **argv, opts_t *o)
{
    static const struct {
        const char *flag;
        size_t off;
    } flags[] = {
        {"--grpc-addr", offsetof(opts_t, grpc_addr)},
        {"--readonly-grpc-addr", offsetof(opts_t, ro_grpc_addr)},
        {"--http-addr", offsetof(opts_t, http_addr)},
        {"--http-enabled", offsetof(opts_t, http_enabled)},
        {"--max-instances", offsetof(opts_t, max_instances)},
        {"--instance-memory-mib", offsetof(opts_t, memory_mib)},
        {"--evict-lru", offsetof(opts_t, evict_lru)},
        {"--instance-idle-s", offsetof(opts_t, idle_s)},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        bool taken = false;
        for (size_t k = 0; k < KW_ARRAY_LEN(flags) && !taken; k++) {
            size_t n = strlen(flags[k].flag);
            const char **dst = (const char **)((char *)o + flags[k].off);
            if (strncmp(a, flags[k].flag, n) != 0)
                continue;
            if (a[n] == '=') {
                *dst = a + n + 1;
                taken = true;
            } else if (a[n] == '\0' && i + 1 < argc) {
                *dst = argv[++i];
                taken = true;
            }
        }
        if (!taken) {
            fprintf(stderr, "keyward serve-testing: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* The checked configuration; false after a message. */
static bool config_of(const opts_t *o, kw_api_testing_config_t *tc, bool *http_on)
{
    unsigned long v = 0;
    if (o->max_instances) {
        if (!parse_ulong(o->max_instances, 1, 65536, &v)) {
            fprintf(stderr, "keyward serve-testing: --max-instances wants 1-65536, got '%s'\n",
                    o->max_instances);
            return false;
        }
        tc->max_instances = v;
    }
    if (o->memory_mib) {
        if (!parse_ulong(o->memory_mib, 1, 4096, &v)) {
            fprintf(stderr, "keyward serve-testing: --instance-memory-mib wants 1-4096, got '%s'\n",
                    o->memory_mib);
            return false;
        }
        tc->instance_bytes = (size_t)v << 20;
    }
    if (o->idle_s) {
        if (!parse_ulong(o->idle_s, 1, 604800, &v)) {
            fprintf(stderr, "keyward serve-testing: --instance-idle-s wants 1-604800, got '%s'\n",
                    o->idle_s);
            return false;
        }
        tc->idle_s = (unsigned)v;
    }
    if (o->evict_lru && strcmp(o->evict_lru, "true") != 0 && strcmp(o->evict_lru, "false") != 0) {
        fprintf(stderr, "keyward serve-testing: --evict-lru wants true or false, got '%s'\n",
                o->evict_lru);
        return false;
    }
    tc->evict_lru = o->evict_lru && strcmp(o->evict_lru, "true") == 0;
    if (strcmp(o->http_enabled, "true") == 0) {
        *http_on = true;
    } else if (strcmp(o->http_enabled, "false") == 0) {
        *http_on = false;
    } else {
        fprintf(stderr, "keyward serve-testing: --http-enabled wants true or false, got '%s'\n",
                o->http_enabled);
        return false;
    }
    return true;
}

static void print_listening(const char *scheme, const char *host, uint16_t port)
{
    if (strchr(host, ':'))
        printf("listening on %s://[%s]:%u\n", scheme, host, (unsigned)port);
    else
        printf("listening on %s://%s:%u\n", scheme, host, (unsigned)port);
    fflush(stdout);
}

/* Starts one gRPC server on the registry (resolve: read-write or read-only) and prints
 * its line; KW_OK, or an error printed. */
static int grpc_start(const char *addr, const char *host, uint16_t port,
                      int (*resolve)(void *, const char *, const char *, kw_api_t **,
                                     kw_v1_status_t *),
                      kw_api_testing_t *reg, const char *scheme, kw_grpc_server_t **out)
{
    kw_grpc_config_t cfg = {.host = host,
                            .port = port,
                            .resolve = resolve,
                            .release = kw_api_testing_release_cb,
                            .resolve_ud = reg};
    uint16_t bound = 0;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_grpc_server_start(&cfg, NULL, out, &bound, &d);
    if (rc != KW_OK) {
        fprintf(stderr, "keyward serve-testing: cannot listen for gRPC on %s: %s\n", addr,
                d.msg[0] ? d.msg : kw_strerror(rc));
        return rc;
    }
    print_listening(scheme, host, bound);
    return KW_OK;
}

int kw_cli_serve_testing(int argc, char **argv)
{
    opts_t o = {"127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:8443", "true", NULL, NULL};
    int prc = parse_args(argc, argv, &o);
    if (prc != 0)
        return prc == 1 ? 0 : 2;
    kw_api_testing_config_t tc = {0, 0, false, 0};
    bool http_on = true;
    if (!config_of(&o, &tc, &http_on))
        return 2;
    char *ghost = NULL, *rhost = NULL, *hhost = NULL;
    uint16_t gport = 0, rport = 0, hport = 0;
    const char *bad =
        !kw_cli_parse_addr(o.grpc_addr, true, &ghost, &gport)              ? "--grpc-addr"
        : !kw_cli_parse_addr(o.ro_grpc_addr, true, &rhost, &rport)         ? "--readonly-grpc-addr"
        : http_on && !kw_cli_parse_addr(o.http_addr, true, &hhost, &hport) ? "--http-addr"
                                                                           : NULL;
    if (bad) {
        fprintf(stderr, "keyward serve-testing: %s wants HOST:PORT\n", bad);
        kw_free(ghost);
        kw_free(rhost);
        return 2;
    }

    int status = 1, rc;
    kw_api_testing_t *reg = NULL;
    kw_grpc_server_t *gsrv = NULL, *rsrv = NULL;
    kw_http_server_t *hsrv = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    if ((rc = kw_api_testing_new(&tc, &reg, &d)) != KW_OK) {
        fprintf(stderr, "keyward serve-testing: %s\n", d.msg[0] ? d.msg : kw_strerror(rc));
        goto out;
    }
    /* Before any thread exists, so that every thread inherits the mask (cli/serve.c). */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (grpc_start(o.grpc_addr, ghost, gport, kw_api_testing_resolve, reg, "grpc", &gsrv) !=
            KW_OK ||
        grpc_start(o.ro_grpc_addr, rhost, rport, kw_api_testing_resolve_readonly, reg,
                   "grpc-readonly", &rsrv) != KW_OK)
        goto out;
    if (http_on) {
        kw_http_config_t hcfg;
        memset(&hcfg, 0, sizeof(hcfg));
        hcfg.host = hhost;
        hcfg.port = hport;
        hcfg.threads = TESTING_THREADS;
        hcfg.routes = kw_api_testing_routes(&hcfg.n_routes);
        hcfg.ud = reg;
        hcfg.on_headers = kw_api_testing_on_headers;
        hcfg.error_fn = kw_api_http_error;
        uint16_t hbound = 0;
        kw_diag_clear(&d);
        if ((rc = kw_http_server_start(&hcfg, &hsrv, &hbound, &d)) != KW_OK) {
            fprintf(stderr, "keyward serve-testing: cannot listen on %s: %s\n", o.http_addr,
                    d.msg[0] ? d.msg : kw_strerror(rc));
            goto out;
        }
        kw_api_testing_serve_on(reg, hsrv);
        print_listening("http", hhost, hbound);
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "serving: one in-memory instance per bearer token");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    kw_log(KW_LOG_INFO, KW_MODULE, "signal %d: stopping (%zu instances)", sig,
           kw_api_testing_count(reg));
    status = 0;
out:
    kw_grpc_server_stop(rsrv);
    kw_grpc_server_stop(gsrv);
    if (hsrv) {
        kw_api_testing_serve_on(reg, NULL); /* ends the watches; parked requests answered */
        if (kw_http_server_stop(hsrv) != KW_OK) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "exiting with a request handler still running");
            fflush(stderr);
            _exit(1);
        }
    }
    kw_api_testing_free(reg);
    kw_free(ghost);
    kw_free(rhost);
    kw_free(hhost);
    return status;
}
