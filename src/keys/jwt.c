/*
 * keys/jwt.c - HS256 bearer tokens (JWS compact serialization), verified strictly.
 *
 * Why libsodium's HMAC and jansson and not libjwt: Debian's libjwt pulls in gnutls, its
 * API changed across major versions (jwt_decode vs. the checker API), and it accepts more
 * than we want (several algorithms, lenient base64). An HS256 verifier is a hundred lines
 * on top of crypto_auth_hmacsha256 and a JSON parser; owning it lets every rule below be
 * stated and tested. jansson is the JSON library of the rest of keyward, so the token
 * reader and the API read JSON the same way.
 *
 * Verification order (each failure is KW_EAUTH with a log-safe reason in diag; the token
 * itself never appears in a message, nor does jansson's error text, which quotes input):
 *   1. size <= KW__TOKEN_MAX, exactly three non-empty dot-separated segments;
 *   2. each segment is canonical base64url without padding;
 *   3. the header is a JSON object whose "alg" is exactly "HS256" ("none" and every other
 *      algorithm refused; "typ" optional string; "crit" refused: we implement no
 *      extension);
 *   4. the HMAC-SHA256 signature matches, compared in constant time (crypto_verify_32),
 *      BEFORE a single byte of the claims is parsed;
 *   5. the claims: a JSON object; "exp" required and numeric (refused when now >= exp),
 *      "nbf" honoured, "iat" numeric if present, "sub" a non-empty string,
 *      "principal_type" "user"|"service_account", "account" a string, "admin" a boolean.
 *      Unknown claims are ignored.
 *
 * What the JSON of the header and of the claims must be (tag-kw-jwt-json): valid UTF-8
 * (kw_utf8_valid), RFC 8259 (jansson: no trailing data, no raw control characters, paired
 * surrogates, no leading zeros), NO member name twice anywhere in the document
 * (JSON_REJECT_DUPLICATES: two parsers could disagree on which one counts), values nested
 * at most JR_MAX_DEPTH deep, and no number literal of JR_NUM_MAX characters or more.
 * U+0000 is allowed by the parser (JSON_ALLOW_NUL) but refused inside any value we keep,
 * which a C string would silently cut.
 */
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "keys_int.h"

#define KW__TOKEN_MAX 8192
#define HS256_LEN crypto_auth_hmacsha256_BYTES
#define JR_MAX_DEPTH 16
#define JR_NUM_MAX 64
#define JR_FLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)
/* Room for the largest claims object mint can write: sub and account of 255 control
 * characters escaped to 6 bytes each, principal_type, admin and three 64-bit times. */
#define MINT_JSON_MAX 4096

/* The header of every token kw_token_mint writes. */
#define MINT_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

_Static_assert(HS256_LEN == 32, "HMAC-SHA256 is 32 bytes (crypto_verify_32)");

/* ---- JSON ---- */

/* Does every number literal of the document (outside strings) stay under JR_NUM_MAX
 * characters? The token reader before jansson refused longer ones for the time claims
 * (and nothing needs them); jansson keeps no source text, so the rule is checked on the
 * text, for every number. Only called on text that jansson then parses, so an odd input
 * (an unclosed string) only has to be refused by one of the two. */
static bool numbers_short(const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            run = 0;
            continue;
        }
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
            if (++run >= JR_NUM_MAX)
                return false;
        } else {
            run = 0;
        }
    }
    return true;
}

/* Is every value at most JR_MAX_DEPTH deep (a member of the top-level object is at depth
 * 1)? Recursion is bounded by the limit itself. */
static bool depth_ok(const json_t *v, int depth)
{
    if (depth > JR_MAX_DEPTH)
        return false;
    if (json_is_object(v)) {
        const char *key;
        const json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if (!depth_ok(val, depth + 1))
                return false;
        }
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *val;
        json_array_foreach(v, i, val)
        {
            if (!depth_ok(val, depth + 1))
                return false;
        }
    }
    return true;
}

/* Parses the decoded header or claims (`what`) into a JSON object (*out, caller
 * json_decref's) under the rules of tag-kw-jwt-json. */
static int parse_object(const uint8_t *s, size_t n, const char *what, json_t **out, kw_diag_t *diag)
{
    if (!kw_utf8_valid((kw_str_t){(const char *)s, n}))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s is not valid UTF-8", what);
    if (!numbers_short((const char *)s, n))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: a number of %d or more characters",
                           what, JR_NUM_MAX);
    json_error_t err;
    json_t *root = json_loadb((const char *)s, n, JR_FLAGS, &err);
    if (!root) {
        switch (json_error_code(&err)) {
        case json_error_out_of_memory:
            return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory reading a token");
        case json_error_duplicate_key:
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s repeats a member name", what);
        default: /* err.text quotes the input: only its position goes to the log */
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: malformed JSON at byte %d", what,
                               err.position);
        }
    }
    int rc = KW_OK;
    const char *key;
    json_t *val;
    if (!json_is_object(root)) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s is not a JSON object", what);
        goto fail;
    }
    json_object_foreach(root, key, val)
    {
        if (!depth_ok(val, 1)) {
            rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: values nested deeper than %d", what,
                             JR_MAX_DEPTH);
            goto fail;
        }
    }
    *out = root;
    return KW_OK;
fail:
    json_decref(root);
    return rc;
}

/* A string value copied into dst (cap bytes, NUL-terminated); refuses non-strings,
 * overlong values and U+0000. */
static int claim_string(const json_t *v, const char *name, char *dst, size_t cap, kw_diag_t *diag)
{
    if (!json_is_string(v))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' must be a string", name);
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len >= cap)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' is longer than %zu bytes", name,
                           cap - 1);
    if (memchr(s, '\0', len))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' contains U+0000", name);
    memcpy(dst, s, len);
    dst[len] = '\0';
    return KW_OK;
}

/* NumericDate (RFC 7519: seconds, possibly fractional). `round_up` picks the conservative
 * direction: exp rounds down (expires earlier), nbf rounds up (valid later). 1e15 s is
 * ~31 million years: any sane date, and exact in a double. */
static int claim_time(const json_t *v, const char *name, bool round_up, int64_t *out,
                      kw_diag_t *diag)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i > 1000000000000000LL || i < -1000000000000000LL)
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' is out of range", name);
        *out = (int64_t)i;
        return KW_OK;
    }
    if (!json_is_real(v))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' must be a number", name);
    double d = json_real_value(v);
    if (!isfinite(d) || d > 1e15 || d < -1e15)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' is out of range", name);
    /* Rounded by hand: truncation toward zero, then one step; keeps libm out of the link. */
    int64_t t = (int64_t)d;
    if (round_up && (double)t < d)
        t++;
    else if (!round_up && (double)t > d)
        t--;
    *out = t;
    return KW_OK;
}

/* ---- header ---- */

static int check_header(const json_t *h, kw_diag_t *diag)
{
    const json_t *alg = json_object_get(h, "alg");
    const json_t *typ = json_object_get(h, "typ");
    if (!alg)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header has no 'alg'");
    if (!json_is_string(alg))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header 'alg' must be a string");
    if (json_string_length(alg) != 5 || memcmp(json_string_value(alg), "HS256", 5) != 0)
        return kw_diag_set(diag, KW_EAUTH, 0, 0,
                           "token algorithm refused (only HS256 is accepted)");
    if (typ && !json_is_string(typ))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header 'typ' must be a string");
    if (json_object_get(h, "crit"))
        return kw_diag_set(diag, KW_EAUTH, 0, 0,
                           "token header has 'crit' extensions, none are supported");
    return KW_OK;
}

/* ---- claims ---- */

static int read_claims(const json_t *o, kw_token_claims_t *c, kw_diag_t *diag)
{
    const json_t *v;
    int rc = KW_OK;
    memset(c, 0, sizeof(*c));
    if ((v = json_object_get(o, "sub")) && rc == KW_OK)
        rc = claim_string(v, "sub", c->sub, sizeof(c->sub), diag);
    if ((v = json_object_get(o, "principal_type")) && rc == KW_OK) {
        rc = claim_string(v, "principal_type", c->principal_type, sizeof(c->principal_type), diag);
        if (rc == KW_OK && strcmp(c->principal_type, "user") != 0 &&
            strcmp(c->principal_type, "service_account") != 0)
            rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "unknown principal_type");
    }
    if ((v = json_object_get(o, "account")) && rc == KW_OK)
        rc = claim_string(v, "account", c->account, sizeof(c->account), diag);
    if ((v = json_object_get(o, "admin")) && rc == KW_OK) {
        if (json_is_boolean(v))
            c->admin = json_is_true(v);
        else
            rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "claim 'admin' must be a boolean");
    }
    if ((v = json_object_get(o, "exp")) && rc == KW_OK)
        rc = claim_time(v, "exp", false, &c->exp, diag);
    if ((v = json_object_get(o, "nbf")) && rc == KW_OK)
        rc = claim_time(v, "nbf", true, &c->nbf, diag);
    if ((v = json_object_get(o, "iat")) && rc == KW_OK)
        rc = claim_time(v, "iat", false, &c->iat, diag);
    if (rc != KW_OK)
        return rc;
    if (!json_object_get(o, "exp"))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token has no 'exp' claim");
    if (c->sub[0] == '\0')
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token has no (or an empty) 'sub' claim");
    if (!json_object_get(o, "principal_type"))
        memcpy(c->principal_type, "user", sizeof("user"));
    return KW_OK;
}

/* ---- base64url and HMAC ---- */

/* Strict base64url without padding: garbage, '=' or non-zero trailing bits are refused
 * (sodium_base642bin checks all three when no ignore set and no end pointer is given). */
static bool b64url_decode(const char *s, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    if (n == 0)
        return false;
    return sodium_base642bin(out, cap, s, n, NULL, out_len, NULL,
                             sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0;
}

static void hs256(const kw_keyring_t *k, const char *data, size_t len, uint8_t mac[HS256_LEN])
{
    crypto_auth_hmacsha256_state st;
    /* The keyring holds the state keyed with the secret (keys_int.h); update and final
     * cannot fail. */
    memcpy(&st, k->token_mac, sizeof(st));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)data, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st)); /* a keyed state is as secret as the key */
}

/* ---- verify ---- */

int kw_token_verify(const kw_keyring_t *k, kw_str_t token, int64_t now, kw_token_claims_t *out,
                    kw_diag_t *diag)
{
    if (!k || !out || (!token.ptr && token.len))
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "kw_token_verify: bad arguments");
    if (token.len == 0)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "empty token");
    if (token.len > KW__TOKEN_MAX)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token longer than %d bytes", KW__TOKEN_MAX);

    const char *s = token.ptr, *end = token.ptr + token.len;
    const char *dot1 = memchr(s, '.', token.len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        return kw_diag_set(diag, KW_EAUTH, 0, 0,
                           "malformed token (expected three dot-separated segments)");
    size_t h_len = (size_t)(dot1 - s), p_len = (size_t)(dot2 - dot1 - 1);
    size_t sig_len = (size_t)(end - dot2 - 1);
    if (h_len == 0 || p_len == 0 || sig_len == 0)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "malformed token (empty segment)");

    /* One scratch buffer for the decoded header and payload (each shorter than its text). */
    uint8_t *buf = kw_malloc(h_len + p_len);
    if (!buf)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory verifying a token");
    int rc;
    size_t hdr_n = 0, pl_n = 0;
    json_t *hdr = NULL, *claims = NULL;
    if (!b64url_decode(s, h_len, buf, h_len, &hdr_n)) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token header is not base64url");
        goto done;
    }
    /* The header keyward mints (and most issuers send) is accepted without parsing: the
     * rules give a fixed answer for those exact bytes. Anything else is parsed. */
    if (hdr_n != sizeof(MINT_HEADER) - 1 || memcmp(buf, MINT_HEADER, hdr_n) != 0) {
        if ((rc = parse_object(buf, hdr_n, "header", &hdr, diag)) != KW_OK)
            goto done;
        if ((rc = check_header(hdr, diag)) != KW_OK)
            goto done;
    }

    uint8_t sig[HS256_LEN + 3], mac[HS256_LEN];
    size_t sig_n = 0;
    if (!b64url_decode(dot2 + 1, sig_len, sig, sizeof(sig), &sig_n) || sig_n != HS256_LEN) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token signature is malformed");
        goto done;
    }
    hs256(k, s, (size_t)(dot2 - s), mac);
    int differ = crypto_verify_32(mac, sig);
    sodium_memzero(mac, sizeof(mac));
    if (differ != 0) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token signature does not match");
        goto done;
    }

    /* Authentic: now read the claims. */
    if (!b64url_decode(dot1 + 1, p_len, buf, h_len + p_len, &pl_n)) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token payload is not base64url");
        goto done;
    }
    if ((rc = parse_object(buf, pl_n, "claims", &claims, diag)) != KW_OK)
        goto done;
    kw_token_claims_t c;
    if ((rc = read_claims(claims, &c, diag)) != KW_OK)
        goto done;
    if (now >= c.exp) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token expired");
        goto done;
    }
    if (json_object_get(claims, "nbf") && now < c.nbf) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token not valid yet (nbf in the future)");
        goto done;
    }
    *out = c;
    rc = KW_OK;
done:
    json_decref(claims);
    json_decref(hdr);
    sodium_memzero(buf, h_len + p_len);
    kw_free(buf);
    return rc;
}

/* ---- mint ---- */

/* A claims string field: NUL-terminated within its array and valid UTF-8. */
static bool field_ok(const char *f, size_t cap)
{
    size_t n = strnlen(f, cap);
    return n < cap && kw_utf8_valid((kw_str_t){f, n});
}

/* Sets o[key] to a new value (NULL only on OOM); false on OOM. */
static bool put(json_t *o, const char *key, json_t *v)
{
    return v && json_object_set_new(o, key, v) == 0;
}

/* The claims as compact JSON in dst (cap bytes), members in the order keyward has always
 * written them (sub, principal_type, account, admin, iat, nbf, exp). */
static int claims_json(const kw_token_claims_t *c, char *dst, size_t cap, size_t *len)
{
    json_t *o = json_object();
    bool ok = o && put(o, "sub", json_string(c->sub));
    if (ok && c->principal_type[0])
        ok = put(o, "principal_type", json_string(c->principal_type));
    if (ok && c->account[0])
        ok = put(o, "account", json_string(c->account));
    if (ok && c->admin)
        ok = put(o, "admin", json_true());
    if (ok && c->iat)
        ok = put(o, "iat", json_integer(c->iat));
    if (ok && c->nbf)
        ok = put(o, "nbf", json_integer(c->nbf));
    if (ok)
        ok = put(o, "exp", json_integer(c->exp));
    size_t n = ok ? json_dumpb(o, dst, cap, JSON_COMPACT) : 0;
    json_decref(o);
    if (!ok || n == 0) /* every string was checked as UTF-8 first: this is OOM */
        return KW_ENOMEM;
    if (n > cap)
        return KW_ETOOLARGE;
    *len = n;
    return KW_OK;
}

static char *b64url_encode(const void *data, size_t n, char *dst, size_t cap)
{
    return sodium_bin2base64(dst, cap, data, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int kw_token_mint(const kw_keyring_t *k, const kw_token_claims_t *claims, char **out)
{
    if (!k || !claims || !out)
        return KW_EINVAL;
    if (!field_ok(claims->sub, sizeof(claims->sub)) || claims->sub[0] == '\0' ||
        !field_ok(claims->account, sizeof(claims->account)) ||
        !field_ok(claims->principal_type, sizeof(claims->principal_type)))
        return KW_EINVAL;
    const char *ptype = claims->principal_type;
    if (ptype[0] && strcmp(ptype, "user") != 0 && strcmp(ptype, "service_account") != 0)
        return KW_EINVAL;

    char pl[MINT_JSON_MAX];
    size_t pl_len = 0;
    int rc = claims_json(claims, pl, sizeof(pl), &pl_len);
    if (rc != KW_OK)
        return rc;

    static const char header[] = MINT_HEADER;
    size_t h64 =
        sodium_base64_ENCODED_LEN(sizeof(header) - 1, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t p64 = sodium_base64_ENCODED_LEN(pl_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t s64 = sodium_base64_ENCODED_LEN(HS256_LEN, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t cap = h64 + p64 + s64; /* each counts a NUL: room for the two dots and the end */
    char *tok = kw_malloc(cap);
    if (!tok)
        return KW_ENOMEM;
    b64url_encode(header, sizeof(header) - 1, tok, h64);
    size_t n = strlen(tok);
    tok[n++] = '.';
    b64url_encode(pl, pl_len, tok + n, cap - n);
    n += strlen(tok + n);
    uint8_t mac[HS256_LEN];
    hs256(k, tok, n, mac);
    tok[n++] = '.';
    b64url_encode(mac, sizeof(mac), tok + n, cap - n);
    sodium_memzero(mac, sizeof(mac));
    if (strlen(tok) > KW__TOKEN_MAX) { /* would be refused by verify: say so now */
        sodium_memzero(tok, strlen(tok));
        kw_free(tok);
        return KW_ETOOLARGE;
    }
    *out = tok;
    return KW_OK;
}
