/*
 * cli/secrets.c - resolve the token secret and the master key (env first, then the
 * database, generated on first use). See secrets.h for the contract.
 *
 * Generated values are random bytes written as text (base64url / hex) because the meta
 * table stores text; the keyring uses the text's bytes as the secret, so the encoding is
 * part of the secret and never decoded. Stack copies are wiped before returning.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cli/secrets.h"

#define KW_MODULE "secrets"

#define JWT_SECRET_MIN 16 /* keys.h: kw_keyring_new's minimum for the token secret */
#define MASTER_MIN 32     /* keys.h: kw_keyring_new's minimum for the master */

typedef enum { ENC_B64URL, ENC_HEX } enc_t;

/* One secret: from env `env` if set and non-empty, else from meta `meta_key`, creating it
 * from 32 random bytes (encoded per `enc`) when absent. */
static int load_one(kw_store_t *store, kw_arena_t *a, const char *env, const char *meta_key,
                    size_t min_len, enc_t enc, kw_str_t *out)
{
    const char *ev = getenv(env);
    if (ev && ev[0]) {
        size_t n = strlen(ev);
        if (n < min_len) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "%s is set but shorter than %zu bytes", env, min_len);
            return KW_EINVAL;
        }
        char *copy = kw_arena_strndup(a, ev, n);
        if (!copy)
            return KW_ENOMEM;
        *out = (kw_str_t){copy, n};
        kw_log(KW_LOG_DEBUG, KW_MODULE, "%s from the environment", meta_key);
        return KW_OK;
    }
    if (!store) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "%s is not set and no database was given to keep %s", env,
               meta_key);
        return KW_EINVAL;
    }

    uint8_t raw[32];
    char want[2 * sizeof(raw) + 1]; /* hex is the longer encoding */
    randombytes_buf(raw, sizeof(raw));
    if (enc == ENC_HEX)
        sodium_bin2hex(want, sizeof(want), raw, sizeof(raw));
    else
        sodium_bin2base64(want, sizeof(want), raw, sizeof(raw),
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));

    char *val = NULL;
    size_t len = 0;
    int rc = kw_store_meta_init(store, meta_key, kw_str_c(want), a, &val, &len);
    sodium_memzero(want, sizeof(want));
    if (rc != KW_OK) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "cannot read or create %s in the database: %s", meta_key,
               kw_strerror(rc));
        return rc;
    }
    if (len < min_len) {
        sodium_memzero(val, len);
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "the database's %s is shorter than %zu bytes; set %s or repair the row", meta_key,
               min_len, env);
        return KW_EINTERNAL;
    }
    *out = (kw_str_t){val, len};
    return KW_OK;
}

int kw_cli_load_secrets(kw_store_t *store, kw_arena_t *a, kw_str_t *jwt_secret, kw_str_t *master)
{
    if (!a || !jwt_secret || !master)
        return KW_EINVAL;
    if (sodium_init() < 0)
        return KW_EINTERNAL;
    kw_str_t j = KW_STR_NULL, m = KW_STR_NULL;
    int rc = load_one(store, a, "KEYWARD_JWT_SECRET", "jwt_secret", JWT_SECRET_MIN, ENC_B64URL, &j);
    if (rc != KW_OK)
        return rc;
    rc = load_one(store, a, "KEYWARD_MASTER_KEY", "master_key", MASTER_MIN, ENC_HEX, &m);
    if (rc != KW_OK) {
        kw_cli_wipe_secrets(&j, NULL);
        return rc;
    }
    *jwt_secret = j;
    *master = m;
    return KW_OK;
}

void kw_cli_wipe_secrets(kw_str_t *jwt_secret, kw_str_t *master)
{
    kw_str_t *all[2] = {jwt_secret, master};
    for (size_t i = 0; i < 2; i++) {
        if (!all[i])
            continue;
        if (all[i]->ptr && all[i]->len)
            sodium_memzero((void *)(uintptr_t)all[i]->ptr, all[i]->len);
        *all[i] = KW_STR_NULL;
    }
}
