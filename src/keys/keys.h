/*
 * keys/keys.h - API-key secrets, bearer tokens and secrets at rest.
 *
 * Ownership: a kw_keyring_t (process lifetime) holds the server's key material in
 *   sodium_malloc'd memory: the HS256 token secret, the key-hashing key, and the
 *   encryption key for github/slack secrets. Generated plaintext keys are written to a
 *   caller buffer that the caller must wipe (sodium_memzero) after use; they are never
 *   logged or stored.
 * Threads: a keyring is immutable after kw_keyring_new; use from any thread.
 * Errors: KW_OK, KW_EAUTH (bad/expired token; diag says why, for the log only),
 *   KW_EINVAL, KW_ENOMEM.
 */
#ifndef KW_KEYS_KEYS_H
#define KW_KEYS_KEYS_H

#include "base/base.h"

#define KW_KEY_PREFIX "kw_"
#define KW_KEY_GEN_LEN 46      /* "kw_" + 43 base64url characters (256 random bits) */
#define KW_KEY_HASH_LEN 32     /* keyed BLAKE2b-256 */
#define KW_KEY_MIN_SUPPLIED 16 /* a supplied api_key: 16..512 chars in 0x21..0x7E */
#define KW_KEY_MAX_SUPPLIED 512

typedef struct kw_keyring kw_keyring_t;

/* Initializes libsodium (idempotent). `token_secret`: the HS256 secret, used as the raw
 * bytes of the string (KEYWARD_JWT_SECRET or the one kept in the database). `master`: at
 * least 32 bytes from which the key-hashing and secret-sealing subkeys are derived with
 * distinct contexts (crypto_kdf), so rotating the token secret never invalidates stored
 * key hashes and no key serves two purposes. KW_EINVAL if either is too short
 * (token_secret < 16 bytes, master < 32 bytes). */
KW_NODISCARD int kw_keyring_new(kw_str_t token_secret, kw_str_t master, kw_keyring_t **out);
void kw_keyring_free(kw_keyring_t *k);

/* Fills out[0..KW_KEY_GEN_LEN) with a fresh key and NUL-terminates (out must have room for
 * KW_KEY_GEN_LEN + 1). */
KW_NODISCARD int kw_key_generate(char *out, size_t out_size);
/* Is `key` an acceptable supplied api_key (length and character rules)? */
bool kw_key_supplied_ok(kw_str_t key);
/* Keyed hash of a key for storage and lookup (deterministic under one keyring). */
void kw_key_hash(const kw_keyring_t *k, kw_str_t key, uint8_t out[KW_KEY_HASH_LEN]);
/* Constant-time comparison of two hashes. */
bool kw_key_hash_eq(const uint8_t a[KW_KEY_HASH_LEN], const uint8_t b[KW_KEY_HASH_LEN]);

/* Encrypts a secret for storage (XChaCha20-Poly1305, random nonce, associated data `ad`
 * binds it to its row). *out is allocated from `a`. */
KW_NODISCARD int kw_secret_seal(const kw_keyring_t *k, kw_str_t secret, kw_str_t ad, kw_arena_t *a,
                                uint8_t **out, size_t *out_len);
/* Decrypts into sodium_malloc'd memory (*out, NUL-terminated; free with kw_secret_wipe). */
KW_NODISCARD int kw_secret_open(const kw_keyring_t *k, const uint8_t *sealed, size_t len,
                                kw_str_t ad, char **out, size_t *out_len);
void kw_secret_wipe(char *p);

/* ---- list cursors ----
 * An opaque, tamper-evident continuation token: `plain` (at most KW_CURSOR_MAX_PLAIN bytes)
 * sealed with XChaCha20-Poly1305 under a subkey of its own (derived from the master key, so
 * every instance over one database accepts every other's cursors), bound to `ad` (the
 * route, the listed object, the caller), as unpadded base64url text (at most
 * KW_CURSOR_MAX_TEXT characters). kw_cursor_open answers KW_EAUTH for anything it did not
 * seal with that `ad` (edited, truncated, for another list or caller). */
#define KW_CURSOR_MAX_PLAIN 96
#define KW_CURSOR_MAX_TEXT 200
KW_NODISCARD int kw_cursor_seal(const kw_keyring_t *k, kw_str_t plain, kw_str_t ad, char *out,
                                size_t cap, size_t *out_len);
KW_NODISCARD int kw_cursor_open(const kw_keyring_t *k, kw_str_t text, kw_str_t ad, uint8_t *out,
                                size_t cap, size_t *out_len);

/* ---- bearer tokens (JWT, HS256) ---- */
typedef struct kw_token_claims {
    char sub[256];
    char principal_type[32]; /* "user" (default) or "service_account" */
    char account[256];       /* "" when absent */
    bool admin;
    int64_t exp; /* required */
    int64_t nbf; /* 0 when absent */
    int64_t iat;
} kw_token_claims_t;

/* Verifies signature (HS256 only; `alg` none and others refused), `exp` (required, with
 * `now`), `nbf`, and claim types; an unknown principal_type is KW_EAUTH. */
KW_NODISCARD int kw_token_verify(const kw_keyring_t *k, kw_str_t token, int64_t now,
                                 kw_token_claims_t *out, kw_diag_t *diag);
/* Mints a token with the given claims (exp = now + ttl). Result heap-allocated (*out,
 * NUL-terminated; caller frees with kw_free). */
KW_NODISCARD int kw_token_mint(const kw_keyring_t *k, const kw_token_claims_t *claims, char **out);

#endif
