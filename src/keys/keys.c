/*
 * keys/keys.c - the keyring, API-key generation and hashing, secrets at rest.
 *
 * Invariants:
 * - Key material (derived subkeys, the HMAC state keyed with the token secret) exists only
 *   inside the keyring's sodium_malloc region, which is read-only after kw_keyring_new and
 *   wiped by sodium_free.
 *   Intermediate copies on the stack are wiped with sodium_memzero before returning.
 * - `master` never keys anything directly: it is first compressed with BLAKE2b-256 into a
 *   crypto_kdf root (so any master length >= 32 works), and two subkeys are derived from
 *   that root under distinct contexts, one for hashing API keys and one for sealing
 *   github/slack secrets. The token secret is independent of both, so rotating it never
 *   invalidates stored key hashes or sealed secrets.
 * - Sealed secrets are nonce(24) || ciphertext || tag(16); the associated data binds a
 *   sealed value to its row, so a ciphertext copied onto another row does not open.
 * - Nothing here logs key material; the only log line is about a failed decryption.
 */
#include <sodium.h>
#include <string.h>

#include "base/log.h"
#include "keys_int.h"

#define KW_MODULE "keys"

/* crypto_kdf contexts are exactly 8 characters; distinct per purpose (tag-kw-kdf-ctx:
 * changing either string invalidates every stored hash or sealed secret). */
static const char kdf_ctx_hash[crypto_kdf_CONTEXTBYTES + 1] = "kwkeyhsh";
static const char kdf_ctx_seal[crypto_kdf_CONTEXTBYTES + 1] = "kwsecenc";
static const char kdf_ctx_cursor[crypto_kdf_CONTEXTBYTES + 1] = "kwcursor";
#define KDF_ID_HASH 1
#define KDF_ID_SEAL 2
#define KDF_ID_CURSOR 3
/* The region: hash key | seal key | token MAC state | cursor key. */
#define CURSOR_KEY_AT (2 * KW__KEY_SUBKEY_LEN + sizeof(crypto_auth_hmacsha256_state))

#define SEAL_NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define SEAL_TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES

/* libsodium must be initialized before use; sodium_init is idempotent and thread-safe. */
static int sodium_ready(void)
{
    return sodium_init() < 0 ? KW_EINTERNAL : KW_OK;
}

int kw_keyring_new(kw_str_t token_secret, kw_str_t master, kw_keyring_t **out)
{
    int rc = sodium_ready();
    if (rc != KW_OK)
        return rc;
    if (!out || (!token_secret.ptr && token_secret.len) || (!master.ptr && master.len))
        return KW_EINVAL;
    if (token_secret.len < 16 || token_secret.len > KW__TOKEN_SECRET_MAX || master.len < 32)
        return KW_EINVAL;

    kw_keyring_t *k = kw_calloc(1, sizeof(*k));
    if (!k)
        return KW_ENOMEM;
    size_t mem_len = 3 * KW__KEY_SUBKEY_LEN + sizeof(crypto_auth_hmacsha256_state);
    k->mem = sodium_malloc(mem_len);
    if (!k->mem) {
        kw_free(k);
        return KW_ENOMEM;
    }

    uint8_t root[crypto_kdf_KEYBYTES];
    /* The generic hash cannot fail for these sizes; check anyway to fail closed. */
    if (crypto_generichash(root, sizeof(root), (const unsigned char *)master.ptr, master.len, NULL,
                           0) != 0 ||
        crypto_kdf_derive_from_key(k->mem, KW__KEY_SUBKEY_LEN, KDF_ID_HASH, kdf_ctx_hash, root) !=
            0 ||
        crypto_kdf_derive_from_key(k->mem + KW__KEY_SUBKEY_LEN, KW__KEY_SUBKEY_LEN, KDF_ID_SEAL,
                                   kdf_ctx_seal, root) != 0 ||
        crypto_kdf_derive_from_key(k->mem + CURSOR_KEY_AT, KW__KEY_SUBKEY_LEN, KDF_ID_CURSOR,
                                   kdf_ctx_cursor, root) != 0) {
        sodium_memzero(root, sizeof(root));
        sodium_free(k->mem);
        kw_free(k);
        return KW_EINTERNAL;
    }
    sodium_memzero(root, sizeof(root));
    crypto_auth_hmacsha256_state st; /* cannot fail for any key length */
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)token_secret.ptr, token_secret.len);
    memcpy(k->mem + 2 * KW__KEY_SUBKEY_LEN, &st, sizeof(st));
    sodium_memzero(&st, sizeof(st));
    k->hash_key = k->mem;
    k->seal_key = k->mem + KW__KEY_SUBKEY_LEN;
    k->token_mac = k->mem + 2 * KW__KEY_SUBKEY_LEN;
    k->cursor_key = k->mem + CURSOR_KEY_AT;
    /* Immutable from here on: a stray write faults instead of corrupting a key. */
    (void)sodium_mprotect_readonly(k->mem);
    *out = k;
    return KW_OK;
}

void kw_keyring_free(kw_keyring_t *k)
{
    if (!k)
        return;
    sodium_free(k->mem); /* makes the region writable again, wipes it, unmaps it */
    kw_free(k);
}

int kw_key_generate(char *out, size_t out_size)
{
    int rc = sodium_ready();
    if (rc != KW_OK)
        return rc;
    if (!out || out_size < KW_KEY_GEN_LEN + 1)
        return KW_EINVAL;
    uint8_t raw[32];
    randombytes_buf(raw, sizeof(raw));
    memcpy(out, KW_KEY_PREFIX, sizeof(KW_KEY_PREFIX) - 1);
    sodium_bin2base64(out + sizeof(KW_KEY_PREFIX) - 1, out_size - (sizeof(KW_KEY_PREFIX) - 1), raw,
                      sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
    kw_assert(strlen(out) == KW_KEY_GEN_LEN);
    return KW_OK;
}

bool kw_key_supplied_ok(kw_str_t key)
{
    if (!key.ptr || key.len < KW_KEY_MIN_SUPPLIED || key.len > KW_KEY_MAX_SUPPLIED)
        return false;
    for (size_t i = 0; i < key.len; i++) {
        unsigned char c = (unsigned char)key.ptr[i];
        if (c < 0x21 || c > 0x7E)
            return false;
    }
    return true;
}

void kw_key_hash(const kw_keyring_t *k, kw_str_t key, uint8_t out[KW_KEY_HASH_LEN])
{
    kw_assert(k != NULL);
    /* crypto_generichash only fails for out/key lengths outside its bounds, which are
     * fixed here; the assert documents that rather than silently returning garbage. */
    int rc = crypto_generichash(out, KW_KEY_HASH_LEN, (const unsigned char *)key.ptr, key.len,
                                k->hash_key, KW__KEY_SUBKEY_LEN);
    kw_assert(rc == 0);
}

bool kw_key_hash_eq(const uint8_t a[KW_KEY_HASH_LEN], const uint8_t b[KW_KEY_HASH_LEN])
{
    return sodium_memcmp(a, b, KW_KEY_HASH_LEN) == 0;
}

int kw_secret_seal(const kw_keyring_t *k, kw_str_t secret, kw_str_t ad, kw_arena_t *a,
                   uint8_t **out, size_t *out_len)
{
    if (!k || !a || !out || !out_len || (!secret.ptr && secret.len) || (!ad.ptr && ad.len))
        return KW_EINVAL;
    if (secret.len > crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX ||
        secret.len > SIZE_MAX - SEAL_NONCE_LEN - SEAL_TAG_LEN)
        return KW_ETOOLARGE;
    size_t total = SEAL_NONCE_LEN + secret.len + SEAL_TAG_LEN;
    uint8_t *buf = kw_arena_alloc(a, total);
    if (!buf)
        return KW_ENOMEM;
    randombytes_buf(buf, SEAL_NONCE_LEN);
    unsigned long long clen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(
            buf + SEAL_NONCE_LEN, &clen, (const unsigned char *)secret.ptr, secret.len,
            (const unsigned char *)ad.ptr, ad.len, NULL, buf, k->seal_key) != 0 ||
        clen != secret.len + SEAL_TAG_LEN)
        return KW_EINTERNAL;
    *out = buf;
    *out_len = total;
    return KW_OK;
}

int kw_secret_open(const kw_keyring_t *k, const uint8_t *sealed, size_t len, kw_str_t ad,
                   char **out, size_t *out_len)
{
    if (!k || !out || !out_len || (!sealed && len) || (!ad.ptr && ad.len))
        return KW_EINVAL;
    if (len < SEAL_NONCE_LEN + SEAL_TAG_LEN)
        return KW_EINVAL;
    size_t plen = len - SEAL_NONCE_LEN - SEAL_TAG_LEN;
    char *plain = sodium_malloc(plen + 1);
    if (!plain)
        return KW_ENOMEM;
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            (unsigned char *)plain, &mlen, NULL, sealed + SEAL_NONCE_LEN, len - SEAL_NONCE_LEN,
            (const unsigned char *)ad.ptr, ad.len, sealed, k->seal_key) != 0) {
        sodium_free(plain);
        kw_log(KW_LOG_WARN, KW_MODULE,
               "a sealed secret failed authentication (tampered row, moved row, or a "
               "different master key)");
        return KW_EAUTH;
    }
    kw_assert(mlen == plen);
    plain[plen] = '\0';
    *out = plain;
    *out_len = plen;
    return KW_OK;
}

void kw_secret_wipe(char *p)
{
    if (p)
        sodium_free(p); /* zeroes before unmapping */
}

/* ---- list cursors ---- */

int kw_cursor_seal(const kw_keyring_t *k, kw_str_t plain, kw_str_t ad, char *out, size_t cap,
                   size_t *out_len)
{
    uint8_t raw[SEAL_NONCE_LEN + KW_CURSOR_MAX_PLAIN + SEAL_TAG_LEN];
    if (!k || !out || !out_len || (!plain.ptr && plain.len) || (!ad.ptr && ad.len) ||
        plain.len > KW_CURSOR_MAX_PLAIN)
        return KW_EINVAL;
    size_t raw_len = SEAL_NONCE_LEN + plain.len + SEAL_TAG_LEN;
    if (cap < sodium_base64_ENCODED_LEN(raw_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING))
        return KW_ETOOLARGE;
    randombytes_buf(raw, SEAL_NONCE_LEN);
    unsigned long long clen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(
            raw + SEAL_NONCE_LEN, &clen, (const unsigned char *)plain.ptr, plain.len,
            (const unsigned char *)ad.ptr, ad.len, NULL, raw, k->cursor_key) != 0)
        return KW_EINTERNAL;
    sodium_bin2base64(out, cap, raw, raw_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *out_len = strlen(out);
    return KW_OK;
}

int kw_cursor_open(const kw_keyring_t *k, kw_str_t text, kw_str_t ad, uint8_t *out, size_t cap,
                   size_t *out_len)
{
    uint8_t raw[SEAL_NONCE_LEN + KW_CURSOR_MAX_PLAIN + SEAL_TAG_LEN];
    size_t raw_len = 0;
    if (!k || !out || !out_len || (!text.ptr && text.len) || (!ad.ptr && ad.len))
        return KW_EINVAL;
    if (text.len == 0 || text.len > KW_CURSOR_MAX_TEXT ||
        sodium_base642bin(raw, sizeof(raw), text.ptr, text.len, NULL, &raw_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        raw_len < SEAL_NONCE_LEN + SEAL_TAG_LEN || raw_len - SEAL_NONCE_LEN - SEAL_TAG_LEN > cap)
        return KW_EAUTH;
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            out, &mlen, NULL, raw + SEAL_NONCE_LEN, raw_len - SEAL_NONCE_LEN,
            (const unsigned char *)ad.ptr, ad.len, raw, k->cursor_key) != 0)
        return KW_EAUTH;
    *out_len = (size_t)mlen;
    return KW_OK;
}
