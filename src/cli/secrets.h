/*
 * cli/secrets.h - where the server's and `keyward token`'s secrets come from, and opening
 * the database that may keep them.
 *
 * The HS256 token secret is env KEYWARD_JWT_SECRET (raw bytes of the string, >= 16
 * bytes), else the contents of the file named by KEYWARD_JWT_SECRET_FILE, else the store's
 * meta key "jwt_secret" (43 base64url characters of 32 random bytes). The master key (key
 * hashing, secrets at rest) is env KEYWARD_MASTER_KEY (>= 32 bytes), else the file named
 * by KEYWARD_MASTER_KEY_FILE, else meta key "master_key" (64 hex characters of 32 random
 * bytes). A value missing from the store is created with kw_store_meta_init, so instances
 * starting at once against one database agree on it (first writer wins, everyone reads it
 * back). An empty environment variable counts as unset; setting both NAME and NAME_FILE is
 * an error. A secret file must be a regular file that group and others cannot access
 * (mode 0600 or 0400), at most 4096 bytes, without NUL bytes; one trailing newline ("\n"
 * or "\r\n") is not part of the secret.
 *
 * Ownership: the returned slices point into `a` (store values and copies of the env and
 *   file values alike). They are secrets: build the keyring, then kw_cli_wipe_secrets,
 *   then reset/free the arena. Nothing is logged but which source was used.
 * Errors: KW_OK; KW_EINVAL (an env or file value too short, both NAME and NAME_FILE set, a
 *   secret file unreadable or open to group/others, or `store` NULL while a secret must
 *   come from the database); KW_EINTERNAL (a stored value too short to be one we wrote);
 *   KW_EDB / KW_ENOMEM from the store. The reason is logged (kw_log), never the value.
 */
#ifndef KW_CLI_SECRETS_H
#define KW_CLI_SECRETS_H

#include "base/base.h"
#include "store/store.h"

KW_NODISCARD int kw_cli_load_secrets(kw_store_t *store, kw_arena_t *a, kw_str_t *jwt_secret,
                                     kw_str_t *master);
/* Zeroes the bytes the slices point to (they live in the caller's arena) and clears them. */
void kw_cli_wipe_secrets(kw_str_t *jwt_secret, kw_str_t *master);

/* The shortest token secret kw_keyring_new takes (keys.h). */
#define KW_CLI_JWT_SECRET_MIN 16

/* One secret from outside the database: env `name`, else the file named by env
 * `name`_FILE (rules above), copied into `a`. KW_OK (*out set), KW_ENOTFOUND (neither is
 * set; *out untouched), KW_EINVAL (see above; logged), KW_ENOMEM. */
KW_NODISCARD int kw_cli_secret_from_env(const char *name, size_t min_len, kw_arena_t *a,
                                        kw_str_t *out);

/* Opens the store at `url` for a subcommand (`who`: "keyward", "keyward token"). A SQLite
 * file that group or others may access is refused (kw_store_opts_t.allow_insecure_mode)
 * unless `allow_insecure` (the command's --allow-insecure-db-mode) or env
 * KEYWARD_ALLOW_INSECURE_DB_MODE is "1" (or "true", "yes", "on"). On failure prints
 * "<who>: cannot open the database: <reason>" to stderr, and for a refused file mode the
 * fix and the override, and returns the store's error. */
KW_NODISCARD int kw_cli_open_store(const char *who, const char *url, kw_store_opts_t opts,
                                   bool allow_insecure, kw_store_t **out);

#endif
