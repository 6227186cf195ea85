/*
 * cli/cli.h - the subcommands of the one `keyward` binary.
 *
 * Each returns the process exit status (0 ok, 1 failure, 2 usage). They print to
 * stdout/stderr (the only code besides main.c allowed to). argv[0] is the subcommand.
 */
#ifndef KW_CLI_CLI_H
#define KW_CLI_CLI_H

#include <stdbool.h>
#include <stdint.h>

int kw_cli_validate(int argc, char **argv);
int kw_cli_serve(int argc, char **argv);
/* `keyward serve-testing` (serve_testing.c): one in-memory instance per bearer token. */
int kw_cli_serve_testing(int argc, char **argv);
int kw_cli_token(int argc, char **argv);
int kw_cli_audit(int argc, char **argv);   /* `keyward audit verify` */
int kw_cli_migrate(int argc, char **argv); /* copy a database to another backend */
int kw_cli_backup(int argc, char **argv);  /* consistent copy of a live SQLite file */

/* A listening flag's "HOST:PORT" or "[V6]:PORT" (addr.c) -> *host (kw_malloc'd, the
 * caller frees it) and *port; with empty_host_any, ":PORT" is every interface (0.0.0.0).
 * false when malformed (nothing allocated). */
bool kw_cli_parse_addr(const char *s, bool empty_host_any, char **host, uint16_t *port);

#endif
