/*
 * cli/secrets.h - where the server's and `keyward token`'s secrets come from.
 *
 * The HS256 token secret is env KEYWARD_JWT_SECRET (raw bytes of the string, >= 16
 * bytes), else the store's meta key "jwt_secret" (43 base64url characters of 32 random
 * bytes). The master key (key hashing, secrets at rest) is env KEYWARD_MASTER_KEY
 * (>= 32 bytes), else meta key "master_key" (64 hex characters of 32 random bytes). A
 * value missing from the store is created with kw_store_meta_init, so instances starting
 * at once against one database agree on it (first writer wins, everyone reads it back).
 * An empty environment variable counts as unset.
 *
 * Ownership: the returned slices point into `a` (store values and copies of the env
 *   values alike). They are secrets: build the keyring, then kw_cli_wipe_secrets, then
 *   reset/free the arena. Nothing is logged but which source was used.
 * Errors: KW_OK; KW_EINVAL (an env value too short, or `store` NULL while a secret must
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

#endif
