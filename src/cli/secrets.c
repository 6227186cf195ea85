/*
 * cli/secrets.c - resolve the token secret and the master key (env, then a file named by
 * env, then the database, generated on first use), and open the database that keeps them.
 * See secrets.h for the contract.
 *
 * Generated values are random bytes written as text (base64url / hex) because the meta
 * table stores text; the keyring uses the text's bytes as the secret, so the encoding is
 * part of the secret and never decoded. Stack copies are wiped before returning.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "cli/secrets.h"

#define KW_MODULE "secrets"

#define JWT_SECRET_MIN KW_CLI_JWT_SECRET_MIN
#define MASTER_MIN 32 /* keys.h: kw_keyring_new's minimum for the master */
#define SECRET_FILE_MAX 4096

typedef enum { ENC_B64URL, ENC_HEX } enc_t;

/* Reads the secret file `path` (named by env `var`) into `a`; secrets.h gives the rules.
 * The stack copy is wiped whatever happens. */
static int read_secret_file(const char *var, const char *path, size_t min_len, kw_arena_t *a,
                            kw_str_t *out)
{
    unsigned char buf[SECRET_FILE_MAX + 1];
    size_t n = 0;
    int rc = KW_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "%s: cannot open %s: %s", var, path, strerror(errno));
        return KW_EINVAL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "%s: %s is not a regular file", var, path);
        goto out;
    }
    if (sb.st_mode & 077) {
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "%s: %s has mode %04o: group or others can read the secret; fix it with: "
               "chmod 600 %s",
               var, path, (unsigned)(sb.st_mode & 07777), path);
        goto out;
    }
    for (;;) {
        ssize_t got = read(fd, buf + n, sizeof(buf) - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            kw_log(KW_LOG_ERROR, KW_MODULE, "%s: cannot read %s: %s", var, path, strerror(errno));
            goto out;
        }
        if (got == 0 || (n += (size_t)got) == sizeof(buf))
            break;
    }
    if (n > SECRET_FILE_MAX) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "%s: %s is longer than %d bytes", var, path,
               SECRET_FILE_MAX);
        goto out;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (memchr(buf, '\0', n)) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "%s: %s holds a NUL byte", var, path);
        goto out;
    }
    if (n < min_len) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "%s: the secret in %s is shorter than %zu bytes", var, path,
               min_len);
        goto out;
    }
    char *copy = kw_arena_strndup(a, (const char *)buf, n);
    if (!copy) {
        rc = KW_ENOMEM;
        goto out;
    }
    *out = (kw_str_t){copy, n};
    rc = KW_OK;
out:
    sodium_memzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

int kw_cli_secret_from_env(const char *name, size_t min_len, kw_arena_t *a, kw_str_t *out)
{
    char file_var[64];
    snprintf(file_var, sizeof(file_var), "%s_FILE", name);
    const char *ev = getenv(name);
    const char *fv = getenv(file_var);
    bool has_env = ev && ev[0], has_file = fv && fv[0];
    if (has_env && has_file) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "both %s and %s are set: set one", name, file_var);
        return KW_EINVAL;
    }
    if (has_file) {
        int rc = read_secret_file(file_var, fv, min_len, a, out);
        if (rc == KW_OK)
            kw_log(KW_LOG_DEBUG, KW_MODULE, "%s from the file named by %s", name, file_var);
        return rc;
    }
    if (!has_env)
        return KW_ENOTFOUND;
    size_t n = strlen(ev);
    if (n < min_len) {
        kw_log(KW_LOG_ERROR, KW_MODULE, "%s is set but shorter than %zu bytes", name, min_len);
        return KW_EINVAL;
    }
    char *copy = kw_arena_strndup(a, ev, n);
    if (!copy)
        return KW_ENOMEM;
    *out = (kw_str_t){copy, n};
    kw_log(KW_LOG_DEBUG, KW_MODULE, "%s from the environment", name);
    return KW_OK;
}

/* One secret: from env `env` or the file named by env `env`_FILE, else from meta
 * `meta_key`, creating it from 32 random bytes (encoded per `enc`) when absent. */
static int load_one(kw_store_t *store, kw_arena_t *a, const char *env, const char *meta_key,
                    size_t min_len, enc_t enc, kw_str_t *out)
{
    int rc = kw_cli_secret_from_env(env, min_len, a, out);
    if (rc != KW_ENOTFOUND)
        return rc;
    if (!store) {
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "neither %s nor %s_FILE is set and no database was given to keep %s", env, env,
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
    rc = kw_store_meta_init(store, meta_key, kw_str_c(want), a, &val, &len);
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

/* KEYWARD_ALLOW_INSECURE_DB_MODE: on for "1", "true", "yes", "on" (any case). */
static bool env_allows_insecure_db(void)
{
    const char *v = getenv("KEYWARD_ALLOW_INSECURE_DB_MODE");
    static const char *const on[] = {"1", "true", "yes", "on"};
    for (size_t i = 0; v && i < KW_ARRAY_LEN(on); i++)
        if (strcasecmp(v, on[i]) == 0)
            return true;
    return false;
}

int kw_cli_open_store(const char *who, const char *url, kw_store_opts_t opts, bool allow_insecure,
                      kw_store_t **out)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    opts.allow_insecure_mode = allow_insecure || env_allows_insecure_db();
    int rc = kw_store_open_with(url, &opts, out, &d);
    if (rc == KW_OK)
        return KW_OK;
    fprintf(stderr, "%s: cannot open the database: %s\n", who, d.msg[0] ? d.msg : kw_strerror(rc));
    if (rc == KW_EFORBIDDEN)
        fprintf(stderr,
                "%s: the database keeps the token secret and the master key unless they come "
                "from KEYWARD_JWT_SECRET(_FILE) / KEYWARD_MASTER_KEY(_FILE); make it private "
                "(chmod 600 on the file and any -wal/-shm beside it), or accept the risk with "
                "--allow-insecure-db-mode or KEYWARD_ALLOW_INSECURE_DB_MODE=1\n",
                who);
    return rc;
}
