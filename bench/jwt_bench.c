/*
 * bench/jwt_bench.c - bearer-token verification speed (kw_token_verify), for the trend.
 *
 * Mints one token of the shape `keyward token` issues (sub, principal_type, account,
 * admin, iat, exp) and one with a few unknown claims (as third-party issuers add: aud,
 * jti, a nested object), then verifies each N times in a tight loop and prints the mean
 * time per verification. Every verification must succeed; a failure aborts (a benchmark
 * of a broken verifier measures nothing).
 *
 * Usage: jwt_bench [N [minted|foreign]]   (default 200000, both tokens; one kind alone
 * serves instruction counts under valgrind --tool=callgrind, steadier than time on a
 * shared machine)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "keys/keys.h"

#define SECRET "bench-token-secret-0123456789abcdef"
#define MASTER "bench-master-key-0123456789abcdef!!!"
#define NOW 1800000000LL

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* header.payload.signature over raw JSON texts, signed with SECRET (HMAC-SHA256). */
static char *sign_raw(const char *header, const char *payload)
{
    const int v = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    size_t hn = strlen(header), pn = strlen(payload);
    size_t cap = sodium_base64_ENCODED_LEN(hn, v) + sodium_base64_ENCODED_LEN(pn, v) +
                 sodium_base64_ENCODED_LEN(32, v);
    char *tok = malloc(cap);
    if (!tok)
        return NULL;
    sodium_bin2base64(tok, cap, (const unsigned char *)header, hn, v);
    size_t n = strlen(tok);
    tok[n++] = '.';
    sodium_bin2base64(tok + n, cap - n, (const unsigned char *)payload, pn, v);
    n += strlen(tok + n);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)SECRET, strlen(SECRET));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tok, n);
    crypto_auth_hmacsha256_final(&st, mac);
    tok[n++] = '.';
    sodium_bin2base64(tok + n, cap - n, mac, sizeof(mac), v);
    return tok;
}

static double run(const kw_keyring_t *k, const char *tok, long n)
{
    kw_token_claims_t c;
    kw_diag_t d;
    kw_str_t t = kw_str_c(tok);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        if (kw_token_verify(k, t, NOW, &c, &d) != KW_OK) {
            fprintf(stderr, "jwt_bench: verification failed: %s\n", d.msg);
            exit(1);
        }
    }
    return (now_s() - t0) / (double)n * 1e9;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    const char *only = argc > 2 ? argv[2] : "";
    if (n <= 0 || (only[0] && strcmp(only, "minted") != 0 && strcmp(only, "foreign") != 0)) {
        fprintf(stderr, "usage: jwt_bench [N [minted|foreign]]\n");
        return 2;
    }
    kw_keyring_t *k = NULL;
    if (kw_keyring_new(KW_STR(SECRET), KW_STR(MASTER), &k) != KW_OK) {
        fprintf(stderr, "jwt_bench: keyring\n");
        return 1;
    }
    kw_token_claims_t c;
    memset(&c, 0, sizeof(c));
    strcpy(c.sub, "alice");
    strcpy(c.principal_type, "user");
    strcpy(c.account, "acme");
    c.iat = NOW - 10;
    c.exp = NOW + 3600;
    char *minted = NULL;
    if (kw_token_mint(k, &c, &minted) != KW_OK) {
        fprintf(stderr, "jwt_bench: mint\n");
        return 1;
    }
    char *foreign = sign_raw("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
                             "{\"iss\":\"https://issuer.example\",\"aud\":[\"keyward\",\"x\"],"
                             "\"sub\":\"svc-42\",\"principal_type\":\"service_account\","
                             "\"jti\":\"2f1c7a9e-93d1-4f7b-8a51-0c2b8c0d6e11\",\"ctx\":{\"a\":"
                             "[1,2,3],\"b\":null},\"iat\":1799999990,\"exp\":1800003600}");
    if (!foreign) {
        fprintf(stderr, "jwt_bench: out of memory\n");
        return 1;
    }
    printf("jwt_bench: %ld verifications each\n", n);
    if (strcmp(only, "foreign") != 0) {
        run(k, minted, n / 10 + 1); /* warm-up */
        printf("  minted token  (%4zu bytes): %8.0f ns/verify\n", strlen(minted),
               run(k, minted, n));
    }
    if (strcmp(only, "minted") != 0)
        printf("  foreign token (%4zu bytes): %8.0f ns/verify\n", strlen(foreign),
               run(k, foreign, n));
    free(foreign);
    kw_free(minted);
    kw_keyring_free(k);
    return 0;
}
