/*
 * cel/value.c - CEL values: equality and ordering as cel-go defines them (heterogeneous
 * numeric comparison), IP addresses, and the conversion of a context's JSON values to
 * the declared parameter types (SpiceDB's rules: a JSON number becomes an int or uint
 * only when it is integral, a string may carry a number, a timestamp is an RFC 3339
 * string, a duration Go's "1h30m" form, bytes base64, an ipaddress its text; `any`
 * keeps JSON's shape, every number a double as protobuf's Struct has it).
 */
#include "cel_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cel_val_t kw__cel_err(const char *msg)
{
    cel_val_t v;
    v.k = CK_ERROR;
    v.v.err = msg;
    return v;
}

cel_val_t kw__cel_bool(bool b)
{
    cel_val_t v;
    v.k = CK_BOOL;
    v.v.b = b;
    return v;
}

bool kw__cel_is_numeric(cel_kind_t k)
{
    return k == CK_INT || k == CK_UINT || k == CK_DOUBLE;
}

/* Compares two numbers of any numeric kinds exactly: -1, 0, 1, or 2 for NaN. */
static int num_cmp(const cel_val_t *a, const cel_val_t *b)
{
    if (a->k == CK_DOUBLE || b->k == CK_DOUBLE) {
        if (a->k == CK_DOUBLE && b->k == CK_DOUBLE)
            return isnan(a->v.d) || isnan(b->v.d) ? 2 : (a->v.d > b->v.d) - (a->v.d < b->v.d);
        /* one double, one integer: compare without rounding the integer */
        bool flip = b->k == CK_DOUBLE;
        const cel_val_t *d = flip ? b : a, *x = flip ? a : b;
        double dv = d->v.d;
        int r;
        if (isnan(dv))
            return 2;
        if (x->k == CK_INT) {
            if (dv >= 9223372036854775808.0)
                r = 1;
            else if (dv < -9223372036854775808.0)
                r = -1;
            else {
                double t = trunc(dv);
                int64_t ti = (int64_t)t;
                if (ti != x->v.i)
                    r = ti > x->v.i ? 1 : -1;
                else
                    r = dv > t ? 1 : dv < t ? -1 : 0;
            }
        } else {
            if (dv >= 18446744073709551616.0)
                r = 1;
            else if (dv < 0)
                r = -1;
            else {
                double t = trunc(dv);
                uint64_t tu = (uint64_t)t;
                if (tu != x->v.u)
                    r = tu > x->v.u ? 1 : -1;
                else
                    r = dv > t ? 1 : 0;
            }
        }
        return flip ? -r : r;
    }
    if (a->k == b->k) {
        if (a->k == CK_INT)
            return (a->v.i > b->v.i) - (a->v.i < b->v.i);
        return (a->v.u > b->v.u) - (a->v.u < b->v.u);
    }
    if (a->k == CK_INT) /* int vs uint */
        return a->v.i < 0 ? -1 : ((uint64_t)a->v.i > b->v.u) - ((uint64_t)a->v.i < b->v.u);
    return b->v.i < 0 ? 1 : (a->v.u > (uint64_t)b->v.i) - (a->v.u < (uint64_t)b->v.i);
}

static int bytes_cmp(kw_str_t a, kw_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int r = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (r)
        return r < 0 ? -1 : 1;
    return (a.len > b.len) - (a.len < b.len);
}

int kw__cel_compare(const cel_val_t *a, const cel_val_t *b)
{
    if (kw__cel_is_numeric(a->k) && kw__cel_is_numeric(b->k))
        return num_cmp(a, b);
    if (a->k != b->k)
        return -2;
    switch (a->k) {
    case CK_BOOL:
        return (a->v.b > b->v.b) - (a->v.b < b->v.b);
    case CK_STRING:
    case CK_BYTES:
        return bytes_cmp(a->v.s, b->v.s);
    case CK_DURATION:
        return (a->v.i > b->v.i) - (a->v.i < b->v.i);
    case CK_TIMESTAMP:
        if (a->v.ts.sec != b->v.ts.sec)
            return a->v.ts.sec > b->v.ts.sec ? 1 : -1;
        return (a->v.ts.nsec > b->v.ts.nsec) - (a->v.ts.nsec < b->v.ts.nsec);
    default:
        return -2;
    }
}

bool kw__cel_equal(const cel_val_t *a, const cel_val_t *b)
{
    if (kw__cel_is_numeric(a->k) && kw__cel_is_numeric(b->k))
        return num_cmp(a, b) == 0;
    if (a->k != b->k)
        return false;
    switch (a->k) {
    case CK_NULL:
        return true;
    case CK_TYPE:
        return a->v.i == b->v.i;
    case CK_OPT:
        if (!a->v.opt || !b->v.opt)
            return a->v.opt == b->v.opt;
        return kw__cel_equal(a->v.opt, b->v.opt);
    case CK_BOOL:
    case CK_STRING:
    case CK_BYTES:
    case CK_DURATION:
    case CK_TIMESTAMP:
        return kw__cel_compare(a, b) == 0;
    case CK_IP:
        return a->v.ip->v6 == b->v.ip->v6 &&
               memcmp(a->v.ip->b, b->v.ip->b, a->v.ip->v6 ? 16 : 4) == 0 &&
               a->v.ip->zone_len == b->v.ip->zone_len &&
               memcmp(a->v.ip->zone, b->v.ip->zone, a->v.ip->zone_len) == 0;
    case CK_LIST:
        if (a->v.list->n != b->v.list->n)
            return false;
        for (uint32_t i = 0; i < a->v.list->n; i++)
            if (!kw__cel_equal(&a->v.list->items[i], &b->v.list->items[i]))
                return false;
        return true;
    case CK_MAP:
        if (a->v.map->n != b->v.map->n)
            return false;
        for (uint32_t i = 0; i < a->v.map->n; i++) {
            bool found = false;
            for (uint32_t j = 0; j < b->v.map->n && !found; j++)
                if (kw__cel_equal(&a->v.map->keys[i], &b->v.map->keys[j])) {
                    if (!kw__cel_equal(&a->v.map->vals[i], &b->v.map->vals[j]))
                        return false;
                    found = true;
                }
            if (!found)
                return false;
        }
        return true;
    default:
        return false;
    }
}

int kw__cel_parse_ip(kw_str_t s, cel_ip_t *out)
{
    char buf[64];
    if (s.len == 0 || s.len >= sizeof(buf) || memchr(s.ptr, '\0', s.len))
        return KW_EINVAL;
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = '\0';
    memset(out, 0, sizeof(*out));
    char *pct = strchr(buf, '%');
    if (pct) { /* an IPv6 scope zone: non-empty, kept for equality */
        size_t zl = strlen(pct + 1);
        if (!strchr(buf, ':') || zl == 0 || zl > sizeof(out->zone))
            return KW_EINVAL;
        memcpy(out->zone, pct + 1, zl);
        out->zone_len = (uint8_t)zl;
        *pct = '\0';
    }
    if (strchr(buf, ':')) {
        if (inet_pton(AF_INET6, buf, out->b) != 1)
            return KW_EINVAL;
        out->v6 = true;
    } else if (inet_pton(AF_INET, buf, out->b) != 1) {
        return KW_EINVAL;
    }
    return KW_OK;
}

/* ---- JSON -> values ---- */

static int fail(char *err, size_t cap, const char *fmt, ...) KW_PRINTF(3, 4);
static int fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return KW_EINVAL;
}

static int str_val(kw_arena_t *a, const char *s, size_t n, cel_kind_t k, cel_val_t *out)
{
    out->k = k;
    return kw_arena_str_copy(a, (kw_str_t){s, n}, &out->v.s);
}

/* A JSON number or numeric string as int/uint/double, SpiceDB's convertNumericType. */
static int numeric(const cel_type_t *t, json_t *j, cel_val_t *out, char *err, size_t cap)
{
    const char *want = t->k == CK_INT ? "int" : t->k == CK_UINT ? "uint" : "double";
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (t->k == CK_INT) {
            out->k = CK_INT;
            out->v.i = v;
        } else if (t->k == CK_UINT) {
            if (v < 0)
                return fail(err, cap, "a uint value is required, but found %lld", (long long)v);
            out->k = CK_UINT;
            out->v.u = (uint64_t)v;
        } else {
            out->k = CK_DOUBLE;
            out->v.d = (double)v;
        }
        return KW_OK;
    }
    double d;
    if (json_is_real(j)) {
        d = json_real_value(j);
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end = NULL;
        errno = 0;
        if (t->k != CK_DOUBLE && s[0] && !strpbrk(s, ".eEnNiIxX")) {
            /* an integer string converts exactly */
            if (t->k == CK_INT) {
                long long v = strtoll(s, &end, 10);
                if (*end == '\0' && errno == 0) {
                    out->k = CK_INT;
                    out->v.i = v;
                    return KW_OK;
                }
            } else if (s[0] != '-') {
                unsigned long long v = strtoull(s, &end, 10);
                if (*end == '\0' && errno == 0) {
                    out->k = CK_UINT;
                    out->v.u = v;
                    return KW_OK;
                }
            }
            errno = 0;
        }
        if (s[0] == '\0' || strpbrk(s, "xXnNiI") || s[0] == ' ')
            return fail(err, cap, "a %s value is required, but found an invalid string value",
                        want);
        d = strtod(s, &end);
        if (*end != '\0')
            return fail(err, cap, "a %s value is required, but found an invalid string value",
                        want);
    } else {
        return fail(err, cap, "a %s value is required, but found a %s", want,
                    json_is_boolean(j)  ? "bool"
                    : json_is_null(j)   ? "null"
                    : json_is_array(j)  ? "list"
                    : json_is_object(j) ? "map"
                                        : "string");
    }
    if (t->k == CK_DOUBLE) {
        out->k = CK_DOUBLE;
        out->v.d = d;
        return KW_OK;
    }
    if (!isfinite(d) || d != trunc(d))
        return fail(err, cap, "a %s value is required, but found numeric value `%g`", want, d);
    /* SpiceDB converts through big.Float.Int64, which saturates: an integral value past
     * the int64 range becomes its nearest end (for uint too, whose values go through it) */
    int64_t v = d <= -9223372036854775808.0  ? INT64_MIN
                : d >= 9223372036854775808.0 ? INT64_MAX
                                             : (int64_t)d;
    if (t->k == CK_INT) {
        out->k = CK_INT;
        out->v.i = v;
        return KW_OK;
    }
    if (v < 0)
        return fail(err, cap, "a uint value is required, but found `%g`", d);
    out->k = CK_UINT;
    out->v.u = (uint64_t)v;
    return KW_OK;
}

static int base64_decode(kw_arena_t *a, const char *s, size_t n, kw_str_t *out)
{
    if (n % 4)
        return KW_EINVAL;
    char *buf = kw_arena_alloc(a, n / 4 * 3 + 1);
    if (!buf)
        return KW_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[i + (size_t)k];
            int x;
            if (c >= 'A' && c <= 'Z')
                x = c - 'A';
            else if (c >= 'a' && c <= 'z')
                x = c - 'a' + 26;
            else if (c >= '0' && c <= '9')
                x = c - '0' + 52;
            else if (c == '+')
                x = 62;
            else if (c == '/')
                x = 63;
            else if (c == '=' && i + 4 == n && k >= 2) {
                x = 0;
                pad++;
            } else
                return KW_EINVAL;
            if (pad && c != '=')
                return KW_EINVAL;
            v = v << 6 | (uint32_t)x;
        }
        buf[o++] = (char)(v >> 16);
        if (pad < 2)
            buf[o++] = (char)(v >> 8);
        if (pad < 1)
            buf[o++] = (char)v;
    }
    buf[o] = '\0';
    *out = (kw_str_t){buf, o};
    return KW_OK;
}

int kw__cel_from_json(kw_arena_t *a, const cel_type_t *t, json_t *j, int depth, cel_val_t *out,
                      char *err, size_t cap)
{
    if (depth > 64)
        return fail(err, cap, "the value is nested more than 64 deep");
    int rc;
    switch (t->k) {
    case CK_DYN:
        if (json_is_null(j)) {
            out->k = CK_NULL;
            return KW_OK;
        }
        if (json_is_boolean(j)) {
            *out = kw__cel_bool(json_is_true(j));
            return KW_OK;
        }
        if (json_is_number(j)) {
            out->k = CK_DOUBLE;
            out->v.d = json_number_value(j);
            return KW_OK;
        }
        if (json_is_string(j))
            return str_val(a, json_string_value(j), json_string_length(j), CK_STRING, out);
        if (json_is_array(j))
            return kw__cel_from_json(a, &kw__cel_t_list_dyn, j, depth, out, err, cap);
        return kw__cel_from_json(a, &kw__cel_t_map_dyn, j, depth, out, err, cap);
    case CK_BOOL:
        if (!json_is_boolean(j))
            return fail(err, cap, "a bool value is required");
        *out = kw__cel_bool(json_is_true(j));
        return KW_OK;
    case CK_STRING:
        if (!json_is_string(j))
            return fail(err, cap, "a string value is required");
        return str_val(a, json_string_value(j), json_string_length(j), CK_STRING, out);
    case CK_INT:
    case CK_UINT:
    case CK_DOUBLE:
        return numeric(t, j, out, err, cap);
    case CK_BYTES:
        if (!json_is_string(j))
            return fail(err, cap, "bytes requires a base64 unicode string");
        out->k = CK_BYTES;
        rc = base64_decode(a, json_string_value(j), json_string_length(j), &out->v.s);
        if (rc == KW_EINVAL)
            return fail(err, cap, "bytes requires a base64 encoded string");
        return rc;
    case CK_DURATION: {
        if (!json_is_string(j))
            return fail(err, cap, "a duration requires a duration string such as \"1h30m\"");
        kw_str_t s = {json_string_value(j), json_string_length(j)};
        out->k = CK_DURATION;
        if (kw__cel_parse_duration(s, &out->v.i) != KW_OK)
            return fail(err, cap, "could not parse duration string `%.*s`",
                        (int)(s.len > 64 ? 64 : s.len), s.ptr);
        return KW_OK;
    }
    case CK_TIMESTAMP: {
        if (!json_is_string(j))
            return fail(err, cap, "a timestamp requires an RFC 3339 formatted timestamp string");
        kw_str_t s = {json_string_value(j), json_string_length(j)};
        out->k = CK_TIMESTAMP;
        if (kw__cel_parse_timestamp(s, &out->v.ts.sec, &out->v.ts.nsec, &out->v.ts.off) != KW_OK)
            return fail(err, cap, "could not parse RFC 3339 formatted timestamp string `%.*s`",
                        (int)(s.len > 64 ? 64 : s.len), s.ptr);
        return KW_OK;
    }
    case CK_IP: {
        if (!json_is_string(j))
            return fail(err, cap, "an ipaddress requires an ipaddress string");
        kw_str_t s = {json_string_value(j), json_string_length(j)};
        cel_ip_t *ip = kw_arena_alloc(a, sizeof(*ip));
        if (!ip)
            return KW_ENOMEM;
        if (kw__cel_parse_ip(s, ip) != KW_OK)
            return fail(err, cap, "could not parse ip address string `%.*s`",
                        (int)(s.len > 64 ? 64 : s.len), s.ptr);
        out->k = CK_IP;
        out->v.ip = ip;
        return KW_OK;
    }
    case CK_LIST: {
        if (!json_is_array(j))
            return fail(err, cap, "a list is required");
        size_t n = json_array_size(j);
        cel_list_t *l = kw_arena_alloc(a, sizeof(*l));
        cel_val_t *items = n ? kw_arena_alloc(a, n * sizeof(*items)) : NULL;
        if (!l || (n && !items))
            return KW_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            char inner[200];
            rc = kw__cel_from_json(a, t->elem, json_array_get(j, i), depth + 1, &items[i], inner,
                                   sizeof(inner));
            if (rc == KW_EINVAL)
                return fail(err, cap, "found an invalid value for item at index %zu: %s", i, inner);
            if (rc != KW_OK)
                return rc;
        }
        l->items = items;
        l->n = (uint32_t)n;
        out->k = CK_LIST;
        out->v.list = l;
        return KW_OK;
    }
    case CK_MAP: {
        if (!json_is_object(j))
            return fail(err, cap, "a map is required");
        size_t n = json_object_size(j);
        cel_map_t *m = kw_arena_alloc(a, sizeof(*m));
        cel_val_t *keys = n ? kw_arena_alloc(a, n * sizeof(*keys)) : NULL;
        cel_val_t *vals = n ? kw_arena_alloc(a, n * sizeof(*vals)) : NULL;
        if (!m || (n && (!keys || !vals)))
            return KW_ENOMEM;
        size_t i = 0;
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
        {
            char inner[200];
            if ((rc = str_val(a, key, strlen(key), CK_STRING, &keys[i])) != KW_OK)
                return rc;
            rc = kw__cel_from_json(a, t->elem, v, depth + 1, &vals[i], inner, sizeof(inner));
            if (rc == KW_EINVAL)
                return fail(err, cap, "found an invalid value for key `%.*s`: %s",
                            (int)(strlen(key) > 64 ? 64 : strlen(key)), key, inner);
            if (rc != KW_OK)
                return rc;
            i++;
        }
        m->keys = keys;
        m->vals = vals;
        m->n = (uint32_t)i;
        out->k = CK_MAP;
        out->v.map = m;
        return KW_OK;
    }
    default:
        return KW_EINTERNAL;
    }
}
