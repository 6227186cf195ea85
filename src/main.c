/*
 * main.c - wiring only: dispatch to a subcommand in src/cli/.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keyward <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve     run the API-key service (default: sqlite:keyward.db on 127.0.0.1:8080)\n"
            "  serve-testing  a throwaway server for test suites: one empty in-memory instance\n"
            "            per bearer token, gRPC on 127.0.0.1:50051 (as spicedb serve-testing)\n"
            "  token     mint a bearer token for the service\n"
            "  validate  check SpiceDB validation files (schema, relationships, assertions)\n"
            "  audit     audit verify: recompute the audit trail's hash chain\n"
            "  migrate   copy a whole database into an empty one (SQLite <-> PostgreSQL)\n"
            "  backup    consistent copy of a live SQLite database\n"
            "\n"
            "Run 'keyward <command> --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return kw_cli_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "serve-testing") == 0)
        return kw_cli_serve_testing(argc - 1, argv + 1);
    if (strcmp(cmd, "token") == 0)
        return kw_cli_token(argc - 1, argv + 1);
    if (strcmp(cmd, "validate") == 0)
        return kw_cli_validate(argc - 1, argv + 1);
    if (strcmp(cmd, "audit") == 0)
        return kw_cli_audit(argc - 1, argv + 1);
    if (strcmp(cmd, "migrate") == 0)
        return kw_cli_migrate(argc - 1, argv + 1);
    if (strcmp(cmd, "backup") == 0)
        return kw_cli_backup(argc - 1, argv + 1);
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "keyward: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
