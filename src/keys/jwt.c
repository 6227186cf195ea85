/*
 * keys/jwt.c - HS256 bearer tokens (JWS compact serialization), verified strictly.
 *
 * Why OpenSSL's HMAC and not libjwt: Debian's libjwt pulls in jansson and gnutls (the
 * kw_keys layer links only kw_base, libsodium and libcrypto), its API changed across
 * major versions (jwt_decode vs. the checker API), and it accepts more than we want
 * (several algorithms, lenient base64). An HS256 verifier is a hundred lines on top of
 * HMAC(); owning it lets every rule below be stated and tested.
 *
 * Verification order (each failure is KW_EAUTH with a log-safe reason in diag; the token
 * itself never appears in a message):
 *   1. size <= KW__TOKEN_MAX, exactly three non-empty dot-separated segments;
 *   2. each segment is canonical base64url without padding;
 *   3. the header is a JSON object whose "alg" is exactly "HS256" ("none" and every other
 *      algorithm refused; "typ" optional string; "crit" refused: we implement no
 *      extension);
 *   4. the HMAC-SHA256 signature matches, compared in constant time (CRYPTO_memcmp),
 *      BEFORE a single byte of the claims is parsed;
 *   5. the claims: a flat JSON object; "exp" required and numeric (refused when
 *      now >= exp), "nbf" honoured, "iat" numeric if present, "sub" a non-empty string,
 *      "principal_type" "user"|"service_account", "account" a string, "admin" a boolean.
 *      A duplicate of any of these claims is refused (two parsers could disagree on which
 *      one counts); unknown claims are skipped, nested values up to JR_MAX_DEPTH.
 *
 * The JSON reader is deliberately small and strict (RFC 8259 grammar, UTF-8 validated,
 * \uXXXX with surrogate pairs, control characters refused) because kw_keys must not link
 * jansson.
 */
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "keys_int.h"

#define KW__TOKEN_MAX 8192
#define HS256_LEN 32
#define JR_MAX_DEPTH 16
#define JR_NUM_MAX 64

/* ---- small strict JSON reader ---- */

typedef struct jr {
    const char *p;
    const char *end;
} jr_t;

static void jr_ws(jr_t *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

/* Validates UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (size_t j = 1; j <= need; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool read_u4(jr_t *r, uint32_t *out)
{
    if (r->end - r->p < 4)
        return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->p[i]);
        if (h < 0)
            return false;
        v = (v << 4) | (uint32_t)h;
    }
    r->p += 4;
    *out = v;
    return true;
}

/* Appends one byte to dst if there is room (keeping one byte for the NUL); otherwise marks
 * the string as too long but keeps validating. */
static void put_byte(char *dst, size_t cap, size_t *len, bool *trunc, unsigned char b)
{
    if (dst && *len + 1 < cap)
        dst[*len] = (char)b;
    else
        *trunc = true;
    (*len)++;
}

/* Reads a JSON string at r->p (which must be '"'), decoding into dst (cap bytes, NUL-
 * terminated when it fits; dst may be NULL to only validate). *len is the decoded
 * length; *trunc when it did not fit; *has_nul when it contains U+0000 (which a C string
 * would silently cut, so kept values refuse it). Input is already UTF-8 validated. */
static bool read_string(jr_t *r, char *dst, size_t cap, size_t *len, bool *trunc, bool *has_nul)
{
    *len = 0;
    *trunc = false;
    *has_nul = false;
    if (r->p >= r->end || *r->p != '"')
        return false;
    r->p++;
    while (r->p < r->end) {
        unsigned char c = (unsigned char)*r->p++;
        if (c == '"') {
            if (dst && cap)
                dst[*len < cap ? *len : cap - 1] = '\0';
            return true;
        }
        if (c < 0x20)
            return false;
        if (c != '\\') {
            put_byte(dst, cap, len, trunc, c);
            continue;
        }
        if (r->p >= r->end)
            return false;
        char e = *r->p++;
        uint32_t cp;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            put_byte(dst, cap, len, trunc, (unsigned char)e);
            continue;
        case 'b':
            put_byte(dst, cap, len, trunc, '\b');
            continue;
        case 'f':
            put_byte(dst, cap, len, trunc, '\f');
            continue;
        case 'n':
            put_byte(dst, cap, len, trunc, '\n');
            continue;
        case 'r':
            put_byte(dst, cap, len, trunc, '\r');
            continue;
        case 't':
            put_byte(dst, cap, len, trunc, '\t');
            continue;
        case 'u':
            if (!read_u4(r, &cp))
                return false;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return false; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
                    return false;
                r->p += 2;
                if (!read_u4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0)
                *has_nul = true;
            if (cp < 0x80) {
                put_byte(dst, cap, len, trunc, (unsigned char)cp);
            } else if (cp < 0x800) {
                put_byte(dst, cap, len, trunc, (unsigned char)(0xC0 | (cp >> 6)));
                put_byte(dst, cap, len, trunc, (unsigned char)(0x80 | (cp & 0x3F)));
            } else if (cp < 0x10000) {
                put_byte(dst, cap, len, trunc, (unsigned char)(0xE0 | (cp >> 12)));
                put_byte(dst, cap, len, trunc, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
                put_byte(dst, cap, len, trunc, (unsigned char)(0x80 | (cp & 0x3F)));
            } else {
                put_byte(dst, cap, len, trunc, (unsigned char)(0xF0 | (cp >> 18)));
                put_byte(dst, cap, len, trunc, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
                put_byte(dst, cap, len, trunc, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
                put_byte(dst, cap, len, trunc, (unsigned char)(0x80 | (cp & 0x3F)));
            }
            continue;
        default:
            return false;
        }
    }
    return false;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads a JSON number (RFC 8259 grammar). *out is its value when it is short enough to
 * convert (JR_NUM_MAX), else *too_long. */
static bool read_number(jr_t *r, double *out, bool *too_long)
{
    const char *s = r->p;
    *too_long = false;
    if (r->p < r->end && *r->p == '-')
        r->p++;
    if (r->p >= r->end)
        return false;
    if (*r->p == '0') {
        r->p++;
    } else if (*r->p >= '1' && *r->p <= '9') {
        while (r->p < r->end && is_digit(*r->p))
            r->p++;
    } else {
        return false;
    }
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (r->p >= r->end || !is_digit(*r->p))
            return false;
        while (r->p < r->end && is_digit(*r->p))
            r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
            r->p++;
        if (r->p >= r->end || !is_digit(*r->p))
            return false;
        while (r->p < r->end && is_digit(*r->p))
            r->p++;
    }
    size_t n = (size_t)(r->p - s);
    if (n >= JR_NUM_MAX) {
        *too_long = true;
        *out = 0;
        return true;
    }
    char tmp[JR_NUM_MAX];
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL); /* the grammar above is a subset of strtod's in any locale
                                 whose decimal point is '.', i.e. the C locale we run in */
    return true;
}

static bool read_lit(jr_t *r, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
        return false;
    r->p += n;
    return true;
}

/* Skips any JSON value; nesting deeper than JR_MAX_DEPTH is refused (no unbounded
 * recursion on attacker input). */
static bool skip_value(jr_t *r, int depth)
{
    if (depth > JR_MAX_DEPTH)
        return false;
    jr_ws(r);
    if (r->p >= r->end)
        return false;
    size_t len;
    bool trunc, has_nul, too_long;
    double d;
    switch (*r->p) {
    case '"':
        return read_string(r, NULL, 0, &len, &trunc, &has_nul);
    case 't':
        return read_lit(r, "true");
    case 'f':
        return read_lit(r, "false");
    case 'n':
        return read_lit(r, "null");
    case '{':
    case '[': {
        char close = *r->p == '{' ? '}' : ']';
        bool obj = close == '}';
        r->p++;
        jr_ws(r);
        if (r->p < r->end && *r->p == close) {
            r->p++;
            return true;
        }
        for (;;) {
            if (obj) {
                jr_ws(r);
                if (!read_string(r, NULL, 0, &len, &trunc, &has_nul))
                    return false;
                jr_ws(r);
                if (r->p >= r->end || *r->p != ':')
                    return false;
                r->p++;
            }
            if (!skip_value(r, depth + 1))
                return false;
            jr_ws(r);
            if (r->p >= r->end)
                return false;
            if (*r->p == ',') {
                r->p++;
                continue;
            }
            if (*r->p == close) {
                r->p++;
                return true;
            }
            return false;
        }
    }
    default:
        return read_number(r, &d, &too_long);
    }
}

/* One member of the top-level object: the decoded key, and r positioned at the value.
 * The handler consumes the value (or skips it) and returns KW_OK or KW_EAUTH with diag. */
typedef int (*member_fn)(jr_t *r, const char *key, size_t key_len, void *ctx, kw_diag_t *diag);

static int parse_object(jr_t *r, const char *what, member_fn fn, void *ctx, kw_diag_t *diag)
{
    if (!utf8_valid((const unsigned char *)r->p, (size_t)(r->end - r->p)))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s is not valid UTF-8", what);
    jr_ws(r);
    if (r->p >= r->end || *r->p != '{')
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s is not a JSON object", what);
    r->p++;
    jr_ws(r);
    bool first = true;
    for (;;) {
        jr_ws(r);
        if (first && r->p < r->end && *r->p == '}') {
            r->p++;
            break;
        }
        first = false;
        char key[32];
        size_t key_len;
        bool trunc, has_nul;
        if (!read_string(r, key, sizeof(key), &key_len, &trunc, &has_nul))
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: malformed JSON member name", what);
        jr_ws(r);
        if (r->p >= r->end || *r->p != ':')
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: malformed JSON (expected ':')",
                               what);
        r->p++;
        jr_ws(r);
        int rc;
        if (trunc || has_nul) /* longer than any name we read: an unknown member */
            rc = skip_value(r, 1)
                     ? KW_OK
                     : kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: malformed JSON value", what);
        else
            rc = fn(r, key, key_len, ctx, diag);
        if (rc != KW_OK)
            return rc;
        jr_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            break;
        }
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: malformed JSON (expected ',' or '}')",
                           what);
    }
    jr_ws(r);
    if (r->p != r->end)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token %s: trailing data after the JSON object",
                           what);
    return KW_OK;
}

static bool key_is(const char *key, size_t key_len, const char *name)
{
    return strlen(name) == key_len && memcmp(key, name, key_len) == 0;
}

/* Reads a string value into dst (cap bytes); refuses non-strings, overlong and NUL. */
static int member_string(jr_t *r, const char *name, char *dst, size_t cap, size_t *len,
                         kw_diag_t *diag)
{
    bool trunc, has_nul;
    if (r->p >= r->end || *r->p != '"')
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' must be a string", name);
    if (!read_string(r, dst, cap, len, &trunc, &has_nul))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s': malformed JSON string", name);
    if (trunc)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' is longer than %zu bytes", name,
                           cap - 1);
    if (has_nul)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' contains U+0000", name);
    return KW_OK;
}

/* NumericDate (RFC 7519: seconds, possibly fractional). `round_up` picks the conservative
 * direction: exp rounds down (expires earlier), nbf rounds up (valid later). */
static int member_time(jr_t *r, const char *name, bool round_up, int64_t *out, kw_diag_t *diag)
{
    double d;
    bool too_long;
    if (r->p >= r->end || !(*r->p == '-' || is_digit(*r->p)))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s' must be a number", name);
    if (!read_number(r, &d, &too_long))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim '%s': malformed JSON number", name);
    /* 1e15 s is ~31 million years: any sane date, and exact in a double. */
    if (too_long || !isfinite(d) || d > 1e15 || d < -1e15)
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

typedef struct hdr_ctx {
    bool have_alg;
    bool alg_ok;
    bool have_typ;
} hdr_ctx_t;

static int on_header_member(jr_t *r, const char *key, size_t key_len, void *ctx, kw_diag_t *diag)
{
    hdr_ctx_t *h = ctx;
    char val[16];
    size_t len;
    if (key_is(key, key_len, "alg")) {
        if (h->have_alg)
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header repeats 'alg'");
        h->have_alg = true;
        bool trunc, has_nul;
        if (r->p >= r->end || *r->p != '"')
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header 'alg' must be a string");
        if (!read_string(r, val, sizeof(val), &len, &trunc, &has_nul))
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header: malformed 'alg'");
        h->alg_ok = !trunc && !has_nul && len == 5 && memcmp(val, "HS256", 5) == 0;
        if (!h->alg_ok)
            return kw_diag_set(diag, KW_EAUTH, 0, 0,
                               "token algorithm refused (only HS256 is accepted)");
        return KW_OK;
    }
    if (key_is(key, key_len, "typ")) {
        if (h->have_typ)
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header repeats 'typ'");
        h->have_typ = true;
        bool trunc, has_nul;
        if (r->p >= r->end || *r->p != '"' || !read_string(r, NULL, 0, &len, &trunc, &has_nul))
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header 'typ' must be a string");
        return KW_OK;
    }
    if (key_is(key, key_len, "crit"))
        return kw_diag_set(diag, KW_EAUTH, 0, 0,
                           "token header has 'crit' extensions, none are supported");
    if (!skip_value(r, 1))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token header: malformed JSON value");
    return KW_OK;
}

/* ---- claims ---- */

enum {
    SEEN_SUB = 1 << 0,
    SEEN_EXP = 1 << 1,
    SEEN_NBF = 1 << 2,
    SEEN_IAT = 1 << 3,
    SEEN_PTYPE = 1 << 4,
    SEEN_ACCOUNT = 1 << 5,
    SEEN_ADMIN = 1 << 6,
};

typedef struct claims_ctx {
    kw_token_claims_t c;
    unsigned seen;
} claims_ctx_t;

static int seen_once(claims_ctx_t *cc, unsigned bit, const char *name, kw_diag_t *diag)
{
    if (cc->seen & bit)
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token repeats claim '%s'", name);
    cc->seen |= bit;
    return KW_OK;
}

static int on_claim_member(jr_t *r, const char *key, size_t key_len, void *ctx, kw_diag_t *diag)
{
    claims_ctx_t *cc = ctx;
    size_t len;
    int rc;
    if (key_is(key, key_len, "sub")) {
        if ((rc = seen_once(cc, SEEN_SUB, "sub", diag)) != KW_OK)
            return rc;
        return member_string(r, "sub", cc->c.sub, sizeof(cc->c.sub), &len, diag);
    }
    if (key_is(key, key_len, "principal_type")) {
        if ((rc = seen_once(cc, SEEN_PTYPE, "principal_type", diag)) != KW_OK)
            return rc;
        rc = member_string(r, "principal_type", cc->c.principal_type, sizeof(cc->c.principal_type),
                           &len, diag);
        if (rc != KW_OK)
            return rc;
        if (strcmp(cc->c.principal_type, "user") != 0 &&
            strcmp(cc->c.principal_type, "service_account") != 0)
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "unknown principal_type");
        return KW_OK;
    }
    if (key_is(key, key_len, "account")) {
        if ((rc = seen_once(cc, SEEN_ACCOUNT, "account", diag)) != KW_OK)
            return rc;
        return member_string(r, "account", cc->c.account, sizeof(cc->c.account), &len, diag);
    }
    if (key_is(key, key_len, "admin")) {
        if ((rc = seen_once(cc, SEEN_ADMIN, "admin", diag)) != KW_OK)
            return rc;
        if (read_lit(r, "true"))
            cc->c.admin = true;
        else if (read_lit(r, "false"))
            cc->c.admin = false;
        else
            return kw_diag_set(diag, KW_EAUTH, 0, 0, "claim 'admin' must be a boolean");
        return KW_OK;
    }
    if (key_is(key, key_len, "exp")) {
        if ((rc = seen_once(cc, SEEN_EXP, "exp", diag)) != KW_OK)
            return rc;
        return member_time(r, "exp", false, &cc->c.exp, diag);
    }
    if (key_is(key, key_len, "nbf")) {
        if ((rc = seen_once(cc, SEEN_NBF, "nbf", diag)) != KW_OK)
            return rc;
        return member_time(r, "nbf", true, &cc->c.nbf, diag);
    }
    if (key_is(key, key_len, "iat")) {
        if ((rc = seen_once(cc, SEEN_IAT, "iat", diag)) != KW_OK)
            return rc;
        return member_time(r, "iat", false, &cc->c.iat, diag);
    }
    if (!skip_value(r, 1))
        return kw_diag_set(diag, KW_EAUTH, 0, 0, "token claims: malformed JSON value");
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

static int hs256(const kw_keyring_t *k, const char *data, size_t len, uint8_t mac[HS256_LEN])
{
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha256(), k->token_secret, (int)k->token_secret_len, (const unsigned char *)data,
              len, mac, &mac_len) ||
        mac_len != HS256_LEN)
        return KW_EINTERNAL;
    return KW_OK;
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
    int rc = KW_OK;
    size_t hdr_n = 0, pl_n = 0;
    if (!b64url_decode(s, h_len, buf, h_len, &hdr_n)) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token header is not base64url");
        goto done;
    }
    hdr_ctx_t hc = {0};
    jr_t r = {(const char *)buf, (const char *)buf + hdr_n};
    if ((rc = parse_object(&r, "header", on_header_member, &hc, diag)) != KW_OK)
        goto done;
    if (!hc.have_alg || !hc.alg_ok) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token header has no 'alg'");
        goto done;
    }

    uint8_t sig[HS256_LEN + 3], mac[HS256_LEN];
    size_t sig_n = 0;
    if (!b64url_decode(dot2 + 1, sig_len, sig, sizeof(sig), &sig_n) || sig_n != HS256_LEN) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token signature is malformed");
        goto done;
    }
    if ((rc = hs256(k, s, (size_t)(dot2 - s), mac)) != KW_OK) {
        kw_diag_set(diag, rc, 0, 0, "HMAC-SHA256 failed");
        goto done;
    }
    if (CRYPTO_memcmp(mac, sig, HS256_LEN) != 0) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token signature does not match");
        goto done;
    }

    /* Authentic: now read the claims. */
    if (!b64url_decode(dot1 + 1, p_len, buf, h_len + p_len, &pl_n)) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token payload is not base64url");
        goto done;
    }
    claims_ctx_t cc;
    memset(&cc, 0, sizeof(cc));
    r = (jr_t){(const char *)buf, (const char *)buf + pl_n};
    if ((rc = parse_object(&r, "claims", on_claim_member, &cc, diag)) != KW_OK)
        goto done;
    if (!(cc.seen & SEEN_EXP)) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token has no 'exp' claim");
        goto done;
    }
    if (!(cc.seen & SEEN_SUB) || cc.c.sub[0] == '\0') {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token has no (or an empty) 'sub' claim");
        goto done;
    }
    if (now >= cc.c.exp) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token expired");
        goto done;
    }
    if ((cc.seen & SEEN_NBF) && now < cc.c.nbf) {
        rc = kw_diag_set(diag, KW_EAUTH, 0, 0, "token not valid yet (nbf in the future)");
        goto done;
    }
    if (!(cc.seen & SEEN_PTYPE))
        memcpy(cc.c.principal_type, "user", sizeof("user"));
    *out = cc.c;
    rc = KW_OK;
done:
    sodium_memzero(buf, h_len + p_len);
    kw_free(buf);
    return rc;
}

/* ---- mint ---- */

/* Appends s as a JSON string literal (quotes included). */
static void json_str(kw_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    kw_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            kw_buf_append(b, e, 2);
        } else if (*p < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            kw_buf_append(b, e, 6);
        } else {
            kw_buf_append(b, p, 1);
        }
    }
    kw_buf_append(b, "\"", 1);
}

/* A claims string field: NUL-terminated within its array and valid UTF-8. */
static bool field_ok(const char *f, size_t cap)
{
    size_t n = strnlen(f, cap);
    return n < cap && utf8_valid((const unsigned char *)f, n);
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

    kw_buf_t pl;
    kw_buf_init(&pl);
    kw_buf_puts(&pl, "{\"sub\":");
    json_str(&pl, claims->sub);
    if (ptype[0]) {
        kw_buf_puts(&pl, ",\"principal_type\":");
        json_str(&pl, ptype);
    }
    if (claims->account[0]) {
        kw_buf_puts(&pl, ",\"account\":");
        json_str(&pl, claims->account);
    }
    if (claims->admin)
        kw_buf_puts(&pl, ",\"admin\":true");
    if (claims->iat)
        kw_buf_printf(&pl, ",\"iat\":%lld", (long long)claims->iat);
    if (claims->nbf)
        kw_buf_printf(&pl, ",\"nbf\":%lld", (long long)claims->nbf);
    kw_buf_printf(&pl, ",\"exp\":%lld}", (long long)claims->exp);
    if (pl.failed) {
        kw_buf_free(&pl);
        return KW_ENOMEM;
    }

    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    size_t h64 =
        sodium_base64_ENCODED_LEN(sizeof(header) - 1, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t p64 = sodium_base64_ENCODED_LEN(pl.len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t s64 = sodium_base64_ENCODED_LEN(HS256_LEN, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t cap = h64 + p64 + s64; /* each counts a NUL: room for the two dots and the end */
    char *tok = kw_malloc(cap);
    if (!tok) {
        kw_buf_free(&pl);
        return KW_ENOMEM;
    }
    b64url_encode(header, sizeof(header) - 1, tok, h64);
    size_t n = strlen(tok);
    tok[n++] = '.';
    b64url_encode(pl.ptr, pl.len, tok + n, cap - n);
    n += strlen(tok + n);
    kw_buf_free(&pl);
    uint8_t mac[HS256_LEN];
    int rc = hs256(k, tok, n, mac);
    if (rc != KW_OK) {
        kw_free(tok);
        return rc;
    }
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
