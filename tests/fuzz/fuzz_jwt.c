/*
 * tests/fuzz/fuzz_jwt.c - libFuzzer target for kw_token_verify.
 *
 * Random bytes almost never carry a valid HMAC, so most inputs would stop at the
 * signature check. The first byte therefore picks a mode:
 *   even: the rest is verified as a token, as is (the pre-signature path);
 *   odd:  the rest is split at its first '\n' into header JSON and claims JSON, which are
 *         base64url-encoded and signed with the fuzzer's secret, so the claims reader and
 *         every check after the signature are reached.
 * Properties checked: no crash/leak (sanitizers), only KW_OK/KW_EAUTH/KW_ENOMEM come back,
 * and an accepted token has a non-empty NUL-terminated sub, a known principal_type, and
 * exp > now.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "keys/keys.h"

#define SECRET "fuzz-token-secret-0123456789abcdef"
#define NOW 1800000000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Process singleton for this fuzzer only: built once, read-only afterwards. */
static kw_keyring_t *g_ring;

static void check(const char *tok, size_t len)
{
    kw_token_claims_t c;
    kw_diag_t d;
    int rc = kw_token_verify(g_ring, (kw_str_t){tok, len}, NOW, &c, &d);
    if (rc != KW_OK && rc != KW_EAUTH && rc != KW_ENOMEM)
        abort();
    if (rc == KW_OK) {
        if (c.sub[0] == '\0' || strnlen(c.sub, sizeof(c.sub)) == sizeof(c.sub))
            abort();
        if (strcmp(c.principal_type, "user") != 0 &&
            strcmp(c.principal_type, "service_account") != 0)
            abort();
        if (c.exp <= NOW || (c.nbf && c.nbf > NOW))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ring && kw_keyring_new(KW_STR(SECRET), KW_STR("fuzz-master-key-0123456789abcdef!!"),
                                  &g_ring) != KW_OK)
        abort();
    if (size == 0)
        return 0;
    if ((data[0] & 1) == 0) {
        check((const char *)data + 1, size - 1);
        return 0;
    }
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    const uint8_t *nl = memchr(rest, '\n', n);
    size_t hn = nl ? (size_t)(nl - rest) : 0;
    const uint8_t *pl = nl ? nl + 1 : rest;
    size_t pn = nl ? n - hn - 1 : n;
    static const char def_hdr[] = "{\"alg\":\"HS256\"}";
    const uint8_t *hdr = nl ? rest : (const uint8_t *)def_hdr;
    if (!nl)
        hn = sizeof(def_hdr) - 1;
    const int v = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    size_t cap = sodium_base64_ENCODED_LEN(hn, v) + sodium_base64_ENCODED_LEN(pn, v) +
                 sodium_base64_ENCODED_LEN(32, v);
    char *tok = malloc(cap);
    if (!tok)
        return 0;
    sodium_bin2base64(tok, cap, hdr, hn, v);
    size_t len = strlen(tok);
    tok[len++] = '.';
    sodium_bin2base64(tok + len, cap - len, pl, pn, v);
    len += strlen(tok + len);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)SECRET, strlen(SECRET));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tok, len);
    crypto_auth_hmacsha256_final(&st, mac);
    tok[len++] = '.';
    sodium_bin2base64(tok + len, cap - len, mac, sizeof(mac), v);
    len += strlen(tok + len);
    check(tok, len);
    free(tok);
    return 0;
}
