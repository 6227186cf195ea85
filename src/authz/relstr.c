/*
 * authz/relstr.c - SpiceDB's relationship string:
 *   `type:id#relation@type:id[#relation][caveat[:{context}]][expiration:time]`.
 *
 * Grammar (syntax only, no schema involved; SpiceDB's pkg/tuple grammar):
 *   rel        = object "#" relation "@" subject [ caveat ] [ expiration ]
 *   object     = type ":" id
 *   subject    = type ":" ( id | "*" ) [ "#" ( relation | "..." ) ]
 *   type       = *( prefix "/" ) name                        (kw_name_ok, KW_NAME_TYPE)
 *   prefix     = [a-z][a-z0-9_]{1,61}[a-z0-9]
 *   relation   = name = [a-z][a-z0-9_]{1,62}[a-z0-9]         (KW_NAME_RELATION)
 *   id         = [a-zA-Z0-9/_|\-=+]{1,KW_MAX_OBJECT_ID_LEN}   (SpiceDB's extended ids)
 *   caveat     = "[" type [ ":" json-object ] "]"   (a caveat is named like a type here,
 *                                                   though a schema's caveat may not be)
 *   expiration = "[expiration:" [0-9.:TZ-]+ "]"    (RFC 3339, UTC or a '-HH:MM' offset)
 *
 * The caveat context is checked to be one well-formed JSON object (RFC 8259, UTF-8,
 * nesting bounded by KW_MAX_CAVEAT_CTX_DEPTH) and kept verbatim; what its fields mean is
 * for the caveat's parameters to say (cel/cel.h). SpiceDB reads the context with a
 * greedy pattern up to the last `}]`; since a JSON value ends where it ends, scanning the
 * object and then expecting ']' accepts the same strings. `[expiration:{...}]` is a
 * caveat named "expiration" with a context, as in SpiceDB.
 *
 * The parsed kw_rel_t points into the input text. A subject relation of "..." is reported
 * as an empty relation (a plain object). Every error carries the 1-based byte column of
 * the offending character (line is always 1: a relationship string is one line).
 * kw_rel_copy is the one deep copy of a kw_rel_t (into an arena).
 */
#include <stdio.h>
#include <string.h>

#include "authz/authz.h"

typedef struct cursor {
    const char *p;
    size_t pos;
    size_t len;
    kw_diag_t *diag;
} cursor_t;

static bool is_name_start(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
           c == '_' || c == '|' || c == '-' || c == '=' || c == '+';
}

/* Describes the character at pos for an error message ("end of input" past the end). */
static const char *describe(const cursor_t *c, size_t pos, char buf[16])
{
    if (pos >= c->len)
        return "end of input";
    unsigned char ch = (unsigned char)c->p[pos];
    if (ch >= 0x21 && ch < 0x7f)
        snprintf(buf, 16, "'%c'", ch);
    else
        snprintf(buf, 16, "byte 0x%02x", ch);
    return buf;
}

/* One segment of a name: [a-z][a-z0-9_]{1,max-2}[a-z0-9], i.e. 3 to max bytes. */
static bool segment_ok(const char *s, size_t len, size_t max)
{
    if (len < 3 || len > max || !is_name_start(s[0]) || s[len - 1] == '_')
        return false;
    for (size_t i = 1; i < len; i++)
        if (!is_name_char(s[i]))
            return false;
    return true;
}

/* SpiceDB's patterns (tag-kw-names): its core and v1 protos' validation rules, and
 * pkg/tuple's relationship grammar, which uses the same expressions. */
bool kw_name_ok(kw_str_t name, kw_name_kind_t kind)
{
    if (kind == KW_NAME_RELATION)
        return segment_ok(name.ptr, name.len, 64);
    if (name.len > KW_MAX_NAME_LEN)
        return false;
    size_t prefix_max = kind == KW_NAME_DEFINITION ? 64 : 63;
    size_t seg = 0;
    for (size_t i = 0; i <= name.len; i++) {
        if (i < name.len && name.ptr[i] != '/')
            continue;
        if (!segment_ok(name.ptr + seg, i - seg, i == name.len ? 64 : prefix_max))
            return false;
        seg = i + 1;
    }
    return true;
}

const char *kw_name_rule(kw_name_kind_t kind)
{
    switch (kind) {
    case KW_NAME_RELATION:
        return "it must match [a-z][a-z0-9_]{1,62}[a-z0-9] (3 to 64 characters)";
    case KW_NAME_DEFINITION:
        return "each '/'-separated part must match [a-z][a-z0-9_]{1,62}[a-z0-9] (3 to 64 "
               "characters), 128 bytes in all";
    case KW_NAME_TYPE:
        break;
    }
    return "each '/'-separated part must match [a-z][a-z0-9_]{1,62}[a-z0-9] (3 to 64 "
           "characters, a prefix at most 63), 128 bytes in all";
}

/* Scans one name: a type or caveat (KW_NAME_TYPE: '/' prefixes allowed) or a relation.
 * Its characters are taken greedily (no valid name is followed by one of them), then the
 * whole is checked against SpiceDB's pattern. */
static int scan_name(cursor_t *c, kw_name_kind_t kind, const char *what, kw_str_t *out)
{
    size_t start = c->pos;
    char buf[16];
    while (c->pos < c->len &&
           (is_name_char(c->p[c->pos]) || (kind != KW_NAME_RELATION && c->p[c->pos] == '/')))
        c->pos++;
    kw_str_t name = {c->p + start, c->pos - start};
    if (name.len == 0)
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                           "expected a %s name (a lowercase letter first), found %s", what,
                           describe(c, c->pos, buf));
    if (!kw_name_ok(name, kind))
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(start + 1),
                           "invalid %s name \"%.*s%s\": %s", what,
                           (int)(name.len > 64 ? 64 : name.len), name.ptr,
                           name.len > 64 ? "..." : "", kw_name_rule(kind));
    *out = name;
    return KW_OK;
}

/* Scans an object id; a lone `*` is accepted when allow_wildcard. */
static int scan_id(cursor_t *c, bool allow_wildcard, const char *what, kw_str_t *out)
{
    size_t start = c->pos;
    char buf[16];
    if (allow_wildcard && c->pos < c->len && c->p[c->pos] == '*') {
        c->pos++;
        *out = (kw_str_t){c->p + start, 1};
        return KW_OK;
    }
    while (c->pos < c->len && is_id_char(c->p[c->pos]))
        c->pos++;
    if (c->pos == start) {
        if (c->pos < c->len && c->p[c->pos] == '*')
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                               "a wildcard '*' is only allowed as the subject id");
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                           "expected the %s id (letters, digits and /_|-=+), found %s", what,
                           describe(c, c->pos, buf));
    }
    if (c->pos - start > KW_MAX_OBJECT_ID_LEN)
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(start + 1),
                           "this %s id is %zu bytes long; the limit is %d", what, c->pos - start,
                           KW_MAX_OBJECT_ID_LEN);
    *out = (kw_str_t){c->p + start, c->pos - start};
    return KW_OK;
}

static int expect(cursor_t *c, char want, const char *after)
{
    char buf[16];
    if (c->pos < c->len && c->p[c->pos] == want) {
        c->pos++;
        return KW_OK;
    }
    return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                       "expected '%c' after the %s, found %s", want, after,
                       describe(c, c->pos, buf));
}

/* ---- the caveat context: one JSON object (RFC 8259) ---- */

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_json_space(cursor_t *c)
{
    while (c->pos < c->len && is_json_space(c->p[c->pos]))
        c->pos++;
}

static int json_error(cursor_t *c, const char *what)
{
    char buf[16];
    return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                       "invalid caveat context: %s, found %s", what, describe(c, c->pos, buf));
}

static bool is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A JSON string; c->pos is at its opening quote and ends past the closing one. Raw
 * control characters and malformed UTF-8 are refused; escapes are checked, not decoded. */
static int scan_json_string(cursor_t *c)
{
    c->pos++;
    while (c->pos < c->len) {
        unsigned char ch = (unsigned char)c->p[c->pos];
        if (ch == '"') {
            c->pos++;
            return KW_OK;
        }
        if (ch < 0x20)
            return json_error(c, "a control character inside a string must be escaped");
        if (ch == '\\') {
            c->pos++;
            char e = c->pos < c->len ? c->p[c->pos] : '\0';
            if (e == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (c->pos + (size_t)k >= c->len || !is_hex(c->p[c->pos + (size_t)k])) {
                        c->pos += (size_t)k;
                        return json_error(c, "expected 4 hex digits after \\u");
                    }
                c->pos += 5;
            } else if (e && strchr("\"\\/bfnrt", e)) {
                c->pos++;
            } else {
                return json_error(c, "unknown escape in a string");
            }
            continue;
        }
        size_t n = ch < 0x80 ? 1 : kw_utf8_decode(c->p + c->pos, c->len - c->pos, NULL);
        if (n == 0)
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                               "invalid caveat context: malformed UTF-8 in a string");
        c->pos += n;
    }
    return json_error(c, "unterminated string");
}

static size_t scan_digits(cursor_t *c)
{
    size_t start = c->pos;
    while (c->pos < c->len && c->p[c->pos] >= '0' && c->p[c->pos] <= '9')
        c->pos++;
    return c->pos - start;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_json_number(cursor_t *c)
{
    if (c->p[c->pos] == '-')
        c->pos++;
    if (c->pos < c->len && c->p[c->pos] == '0')
        c->pos++;
    else if (scan_digits(c) == 0)
        return json_error(c, "expected a digit");
    if (c->pos < c->len && c->p[c->pos] == '.') {
        c->pos++;
        if (scan_digits(c) == 0)
            return json_error(c, "expected a digit after '.'");
    }
    if (c->pos < c->len && (c->p[c->pos] == 'e' || c->p[c->pos] == 'E')) {
        c->pos++;
        if (c->pos < c->len && (c->p[c->pos] == '+' || c->p[c->pos] == '-'))
            c->pos++;
        if (scan_digits(c) == 0)
            return json_error(c, "expected a digit in the exponent");
    }
    return KW_OK;
}

static int scan_json_scalar(cursor_t *c)
{
    static const char *const words[] = {"true", "false", "null"};
    char ch = c->pos < c->len ? c->p[c->pos] : '\0';
    if (ch == '"')
        return scan_json_string(c);
    if (ch == '-' || (ch >= '0' && ch <= '9'))
        return scan_json_number(c);
    for (size_t i = 0; i < KW_ARRAY_LEN(words); i++) {
        size_t n = strlen(words[i]);
        if (c->len - c->pos >= n && memcmp(c->p + c->pos, words[i], n) == 0) {
            c->pos += n;
            return KW_OK;
        }
    }
    return json_error(c, "expected a JSON value");
}

/* An object key and its ':' (c->pos at the key after blanks). */
static int scan_json_key(cursor_t *c)
{
    if (c->pos >= c->len || c->p[c->pos] != '"')
        return json_error(c, "expected a string key");
    int rc = scan_json_string(c);
    if (rc != KW_OK)
        return rc;
    skip_json_space(c);
    if (c->pos >= c->len || c->p[c->pos] != ':')
        return json_error(c, "expected ':' after the key");
    c->pos++;
    return KW_OK;
}

/* One JSON object; c->pos is at its '{' and ends just past its '}'. Iterative, with the
 * open containers on a bounded stack ('{' or '['), so no input can recurse deeply. The
 * whole object must be well-formed JSON: it is handed on verbatim (to the store, to CEL). */
static int scan_json_object(cursor_t *c)
{
    char stack[KW_MAX_CAVEAT_CTX_DEPTH];
    size_t depth = 0;
    bool want_value = true;
    int rc;
    for (;;) {
        if (want_value) {
            skip_json_space(c);
            char ch = c->pos < c->len ? c->p[c->pos] : '\0';
            if (ch == '{' || ch == '[') {
                if (depth == KW_MAX_CAVEAT_CTX_DEPTH)
                    return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                                       "invalid caveat context: nested deeper than %d levels",
                                       KW_MAX_CAVEAT_CTX_DEPTH);
                stack[depth++] = ch;
                c->pos++;
                skip_json_space(c);
                char close = ch == '{' ? '}' : ']';
                if (c->pos < c->len && c->p[c->pos] == close) {
                    c->pos++;
                    depth--;
                    want_value = false;
                } else if (ch == '{' && (rc = scan_json_key(c)) != KW_OK) {
                    return rc;
                }
                continue;
            }
            if ((rc = scan_json_scalar(c)) != KW_OK)
                return rc;
            want_value = false;
            continue;
        }
        if (depth == 0)
            return KW_OK;
        skip_json_space(c);
        char ch = c->pos < c->len ? c->p[c->pos] : '\0';
        char top = stack[depth - 1];
        if (ch == ',') {
            c->pos++;
            want_value = true;
            if (top == '{') {
                skip_json_space(c);
                if ((rc = scan_json_key(c)) != KW_OK)
                    return rc;
            }
        } else if (ch == (top == '{' ? '}' : ']')) {
            c->pos++;
            depth--;
        } else {
            return json_error(c, top == '{' ? "expected ',' or '}' in an object"
                                            : "expected ',' or ']' in an array");
        }
    }
}

/* Is the object text at ctx (a well-formed JSON object) empty, `{` blanks `}`? */
static bool json_object_empty(kw_str_t ctx)
{
    for (size_t i = 1; i + 1 < ctx.len; i++)
        if (!is_json_space(ctx.ptr[i]))
            return false;
    return true;
}

int kw_rel_context_check(kw_str_t json, kw_diag_t *diag)
{
    cursor_t c = {json.ptr, 0, json.ptr ? json.len : 0, diag};
    skip_json_space(&c);
    if (c.pos >= c.len || c.p[c.pos] != '{')
        return json_error(&c, "expected a JSON object");
    int rc = scan_json_object(&c);
    if (rc != KW_OK)
        return rc;
    skip_json_space(&c);
    if (c.pos < c.len)
        return json_error(&c, "expected nothing after the object");
    return KW_OK;
}

/* ---- expiration: RFC 3339 in UTC or with a negative offset, as SpiceDB reads it ---- */

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of the civil date y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* n decimal digits at s into *out; false unless all n are digits. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* `YYYY-MM-DDTHH:MM:SS[.fraction](Z|-HH:MM)` (the text SpiceDB's grammar admits: digits,
 * '-', '.', ':', 'T', 'Z') into microseconds since the Unix epoch, UTC. A fraction finer
 * than a microsecond is truncated. The instant must be after the epoch (0 means "never"). */
static int parse_expiration(cursor_t *c, size_t start, size_t end, int64_t *out)
{
    const char *s = c->p + start;
    size_t n = end - start;
    int year, mon, day, hh, mm, ss, oh = 0, om = 0;
    bool shape = n >= 20 && digits(s, 4, &year) && s[4] == '-' && digits(s + 5, 2, &mon) &&
                 s[7] == '-' && digits(s + 8, 2, &day) && s[10] == 'T' && digits(s + 11, 2, &hh) &&
                 s[13] == ':' && digits(s + 14, 2, &mm) && s[16] == ':' && digits(s + 17, 2, &ss);
    size_t i = 19;
    int64_t frac_us = 0;
    if (shape && i < n && s[i] == '.') {
        size_t f = ++i;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            if (i - f < 6)
                frac_us = frac_us * 10 + (s[i] - '0');
        for (size_t k = i - f; k < 6; k++)
            frac_us *= 10;
        shape = i > f;
    }
    int64_t sign = 0;
    if (shape && i + 1 == n && s[i] == 'Z') {
        sign = 0;
    } else if (shape && i + 6 == n && s[i] == '-' && digits(s + i + 1, 2, &oh) && s[i + 3] == ':' &&
               digits(s + i + 4, 2, &om)) {
        sign = -1;
    } else {
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(start + 1),
                           "the expiration must be an RFC 3339 time such as "
                           "2025-12-31T23:59:59Z (UTC, or a '-HH:MM' offset)");
    }
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hh > 23 || mm > 59 ||
        ss > 59 || oh > 23 || om > 59)
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(start + 1),
                           "the expiration %.*s is not a valid date and time", (int)n, s);
    int64_t secs = days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
    secs -= sign * (oh * 3600 + om * 60);
    int64_t us = secs * 1000000 + frac_us;
    if (us <= 0)
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(start + 1),
                           "the expiration %.*s is not after 1970-01-01T00:00:00Z", (int)n, s);
    *out = us;
    return KW_OK;
}

static bool is_expiration_char(char ch)
{
    return (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == ':' || ch == 'T' ||
           ch == 'Z';
}

/* `[expiration:...]`; c->pos is just past "[expiration:". */
static int scan_expiration(cursor_t *c, int64_t *out)
{
    size_t start = c->pos;
    while (c->pos < c->len && is_expiration_char(c->p[c->pos]))
        c->pos++;
    if (c->pos == start || c->pos >= c->len || c->p[c->pos] != ']') {
        char buf[16];
        if (c->pos == start || c->pos < c->len)
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                               "unexpected %s in the expiration (an RFC 3339 time such as "
                               "2025-12-31T23:59:59Z)",
                               describe(c, c->pos, buf));
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                           "expected ']' after the expiration, found end of input");
    }
    int rc = parse_expiration(c, start, c->pos, out);
    if (rc == KW_OK)
        c->pos++;
    return rc;
}

static bool at_expiration(const cursor_t *c)
{
    static const char exp[] = "[expiration:";
    return c->len - c->pos >= sizeof(exp) - 1 && memcmp(c->p + c->pos, exp, sizeof(exp) - 1) == 0 &&
           !(c->len - c->pos > sizeof(exp) - 1 && c->p[c->pos + sizeof(exp) - 1] == '{');
}

/* `[name]` or `[name:{json}]`; c->pos is at the '['. */
static int scan_caveat(cursor_t *c, kw_rel_t *r)
{
    c->pos++;
    int rc = scan_name(c, KW_NAME_TYPE, "caveat", &r->caveat);
    if (rc != KW_OK)
        return rc;
    if (c->pos < c->len && c->p[c->pos] == ':') {
        c->pos++;
        if (c->pos >= c->len || c->p[c->pos] != '{')
            return json_error(c, "expected a JSON object after the caveat name and ':'");
        size_t start = c->pos;
        if ((rc = scan_json_object(c)) != KW_OK)
            return rc;
        kw_str_t ctx = {c->p + start, c->pos - start};
        r->caveat_ctx = json_object_empty(ctx) ? KW_STR_NULL : ctx;
    }
    return expect(c, ']', "caveat");
}

/* The optional suffixes, in SpiceDB's order: `[caveat[:{context}]]` then
 * `[expiration:time]`. */
static int scan_suffixes(cursor_t *c, kw_rel_t *r)
{
    int rc;
    char buf[16];
    if (c->pos < c->len && c->p[c->pos] == '[' && !at_expiration(c)) {
        if ((rc = scan_caveat(c, r)) != KW_OK)
            return rc;
    }
    if (c->pos < c->len && c->p[c->pos] == '[') {
        if (!at_expiration(c))
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                               "only an expiration `[expiration:...]` may follow the caveat");
        c->pos += sizeof("[expiration:") - 1;
        if ((rc = scan_expiration(c, &r->expires_at)) != KW_OK)
            return rc;
        if (c->pos < c->len && c->p[c->pos] == '[')
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                               r->caveat.len ? "nothing may follow the expiration"
                                             : "the caveat must come before the expiration");
    }
    if (c->pos < c->len)
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1), "unexpected %s after %s",
                           describe(c, c->pos, buf),
                           r->expires_at   ? "the expiration"
                           : r->caveat.len ? "the caveat"
                                           : "the subject");
    return KW_OK;
}

int kw_rel_parse(kw_str_t text, kw_rel_t *out, kw_diag_t *diag)
{
    cursor_t c = {text.ptr, 0, text.ptr ? text.len : 0, diag};
    kw_rel_t r;
    memset(&r, 0, sizeof(r));
    int rc;

    if (c.len == 0)
        return kw_diag_set(diag, KW_EINVAL, 1, 1, "empty relationship string");
    if ((rc = scan_name(&c, KW_NAME_TYPE, "resource type", &r.resource.type)) != KW_OK)
        return rc;
    if ((rc = expect(&c, ':', "resource type")) != KW_OK)
        return rc;
    if ((rc = scan_id(&c, false, "resource", &r.resource.id)) != KW_OK)
        return rc;
    if ((rc = expect(&c, '#', "resource id")) != KW_OK)
        return rc;
    if ((rc = scan_name(&c, KW_NAME_RELATION, "relation", &r.relation)) != KW_OK)
        return rc;
    if ((rc = expect(&c, '@', "relation")) != KW_OK)
        return rc;
    if ((rc = scan_name(&c, KW_NAME_TYPE, "subject type", &r.subject.type)) != KW_OK)
        return rc;
    if ((rc = expect(&c, ':', "subject type")) != KW_OK)
        return rc;
    if ((rc = scan_id(&c, true, "subject", &r.subject.id)) != KW_OK)
        return rc;
    r.subject.relation = KW_STR_NULL;
    if (c.pos < c.len && c.p[c.pos] == '#') {
        c.pos++;
        if (c.len - c.pos >= 3 && memcmp(c.p + c.pos, "...", 3) == 0) {
            c.pos += 3;
        } else {
            if ((rc = scan_name(&c, KW_NAME_RELATION, "subject relation", &r.subject.relation)) !=
                KW_OK)
                return rc;
            if (r.subject.id.len == 1 && r.subject.id.ptr[0] == '*')
                return kw_diag_set(diag, KW_EINVAL, 1,
                                   (uint32_t)(r.subject.relation.ptr - text.ptr + 1),
                                   "a wildcard subject cannot have a relation");
        }
    }
    if ((rc = scan_suffixes(&c, &r)) != KW_OK)
        return rc;
    *out = r;
    return KW_OK;
}

void kw_rel_format_expiration(int64_t us, kw_buf_t *out)
{
    int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    int64_t frac = us - secs * 1000000;
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t sod = secs - days * 86400;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    kw_buf_printf(out, "%04lld-%02d-%02dT%02d:%02d:%02d", (long long)y, m, d, (int)(sod / 3600),
                  (int)(sod / 60 % 60), (int)(sod % 60));
    if (frac > 0) {
        char f[8];
        snprintf(f, sizeof(f), "%06d", (int)frac);
        size_t n = 6;
        while (n > 0 && f[n - 1] == '0')
            n--;
        kw_buf_append(out, ".", 1);
        kw_buf_append(out, f, n);
    }
    kw_buf_append(out, "Z", 1);
}

void kw_rel_format(const kw_rel_t *rel, kw_buf_t *out)
{
    kw_buf_append(out, rel->resource.type.ptr, rel->resource.type.len);
    kw_buf_append(out, ":", 1);
    kw_buf_append(out, rel->resource.id.ptr, rel->resource.id.len);
    kw_buf_append(out, "#", 1);
    kw_buf_append(out, rel->relation.ptr, rel->relation.len);
    kw_buf_append(out, "@", 1);
    kw_buf_append(out, rel->subject.type.ptr, rel->subject.type.len);
    kw_buf_append(out, ":", 1);
    kw_buf_append(out, rel->subject.id.ptr, rel->subject.id.len);
    if (rel->subject.relation.len > 0 && !kw_str_eq_c(rel->subject.relation, "...")) {
        kw_buf_append(out, "#", 1);
        kw_buf_append(out, rel->subject.relation.ptr, rel->subject.relation.len);
    }
    if (rel->caveat.len > 0) {
        kw_buf_append(out, "[", 1);
        kw_buf_append(out, rel->caveat.ptr, rel->caveat.len);
        if (rel->caveat_ctx.len > 0) {
            kw_buf_append(out, ":", 1);
            kw_buf_append(out, rel->caveat_ctx.ptr, rel->caveat_ctx.len);
        }
        kw_buf_append(out, "]", 1);
    }
    if (rel->expires_at != 0) {
        kw_buf_append(out, "[expiration:", 12);
        kw_rel_format_expiration(rel->expires_at, out);
        kw_buf_append(out, "]", 1);
    }
}

int kw_rel_copy(kw_arena_t *a, const kw_rel_t *src, kw_rel_t *out)
{
    kw_rel_t r;
    int rc = kw_arena_str_copy(a, src->resource.type, &r.resource.type);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->resource.id, &r.resource.id);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->relation, &r.relation);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->subject.type, &r.subject.type);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->subject.id, &r.subject.id);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->subject.relation, &r.subject.relation);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat, &r.caveat);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat_ctx, &r.caveat_ctx);
    r.expires_at = src->expires_at;
    if (rc == KW_OK)
        *out = r;
    return rc;
}
