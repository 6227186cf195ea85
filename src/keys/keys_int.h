/*
 * keys/keys_int.h - internals shared by keys.c and jwt.c (not a public header).
 *
 * The keyring's key material lives in one sodium_malloc'd region (guard pages, mlock'd,
 * made read-only once filled, wiped by sodium_free). The struct around it holds only
 * pointers and lengths and comes from kw_calloc so that allocation failure is testable.
 */
#ifndef KW_KEYS_KEYS_INT_H
#define KW_KEYS_KEYS_INT_H

#include "keys.h"

#define KW__KEY_SUBKEY_LEN 32
/* An HS256 secret longer than this is refused: HMAC hashes long keys down anyway, and a
 * bound keeps a configuration mistake (a whole file as the secret) visible. */
#define KW__TOKEN_SECRET_MAX 4096

struct kw_keyring {
    uint8_t
        *mem; /* sodium_malloc: hash key | seal key | token MAC state | cursor key (read-only) */
    const uint8_t *hash_key; /* KW__KEY_SUBKEY_LEN bytes: keyed BLAKE2b of api keys */
    const uint8_t *seal_key; /* KW__KEY_SUBKEY_LEN bytes: XChaCha20-Poly1305 */
    /* A crypto_auth_hmacsha256_state already keyed with the token secret (its inner and
     * outer pads absorbed), so each token costs no keying; stored as bytes (the region
     * need not be aligned): memcpy it into a local state before use. The raw secret is
     * not kept. */
    const uint8_t *token_mac;
    const uint8_t *cursor_key; /* KW__KEY_SUBKEY_LEN bytes: list cursors (kw_cursor_seal) */
};

#endif
