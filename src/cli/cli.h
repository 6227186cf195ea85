/*
 * cli/cli.h - the subcommands of the one `keyward` binary.
 *
 * Each returns the process exit status (0 ok, 1 failure, 2 usage). They print to
 * stdout/stderr (the only code besides main.c allowed to). argv[0] is the subcommand.
 */
#ifndef KW_CLI_CLI_H
#define KW_CLI_CLI_H

int kw_cli_validate(int argc, char **argv);
int kw_cli_serve(int argc, char **argv);
/* `keyward serve-testing` (serve_testing.c): one in-memory instance per bearer token. */
int kw_cli_serve_testing(int argc, char **argv);
int kw_cli_token(int argc, char **argv);
int kw_cli_audit(int argc, char **argv);   /* `keyward audit verify` */
int kw_cli_migrate(int argc, char **argv); /* copy a database to another backend */
int kw_cli_backup(int argc, char **argv);  /* consistent copy of a live SQLite file */

#endif
