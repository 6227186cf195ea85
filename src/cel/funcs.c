/*
 * cel/funcs.c - CEL's operators and the standard functions SpiceDB enables, on values
 * already evaluated (neither unknown nor error: eval.c settles those first).
 *
 * Arithmetic follows cel-go: int and uint overflow, division and modulus by zero are
 * errors; doubles follow IEEE 754; durations are Go's int64 nanoseconds and timestamps
 * stay in years 0001..9999, past which arithmetic is an error. Operands of kinds an
 * operator has no overload for give "no such overload" (only `dyn` values get here).
 * Every operation charges the evaluation's budget in proportion to the bytes or elements
 * it touches.
 */
#include "cel_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char E_OVERLOAD[] = "no such overload";
static const char E_OVERFLOW[] = "integer overflow";
static const char E_RANGE[] = "timestamp out of range";

kw_arena_t *kw__cel_arena(cel_ev_t *ev)
{
    if (!ev->a)
        ev->a = kw_arena_new(0);
    return ev->a;
}

void *kw__cel_alloc(cel_ev_t *ev, size_t n)
{
    kw_arena_t *a = kw__cel_arena(ev);
    return a ? kw_arena_alloc(a, n) : NULL;
}

cel_val_t kw__cel_opt(cel_ev_t *ev, const cel_val_t *inner)
{
    cel_val_t v;
    v.k = CK_OPT;
    v.v.opt = NULL;
    if (inner) {
        cel_val_t *copy = kw__cel_alloc(ev, sizeof(*copy));
        if (!copy)
            return kw__cel_oom(ev);
        *copy = *inner;
        v.v.opt = copy;
    }
    return v;
}

/* The zero value of its type (optional.ofNonZeroValue). */
static bool is_zero(const cel_val_t *x)
{
    switch (x->k) {
    case CK_NULL:
        return true;
    case CK_BOOL:
        return !x->v.b;
    case CK_INT:
    case CK_DURATION:
        return x->v.i == 0;
    case CK_UINT:
        return x->v.u == 0;
    case CK_DOUBLE:
        return x->v.d == 0;
    case CK_STRING:
    case CK_BYTES:
        return x->v.s.len == 0;
    case CK_LIST:
        return x->v.list->n == 0;
    case CK_MAP:
        return x->v.map->n == 0;
    case CK_TIMESTAMP:
        return x->v.ts.sec == 0 && x->v.ts.nsec == 0;
    case CK_OPT:
        return x->v.opt == NULL;
    default:
        return false;
    }
}

cel_val_t kw__cel_oom(cel_ev_t *ev)
{
    if (!ev->hard)
        ev->hard = KW_ENOMEM;
    return kw__cel_err("out of memory");
}

bool kw__cel_charge(cel_ev_t *ev, uint64_t n)
{
    ev->cost += n;
    if (ev->cost > KW_CEL_MAX_COST) {
        if (!ev->hard) {
            ev->hard = KW_EBUDGET;
            ev->hard_msg = "the caveat expression exceeded its evaluation budget";
        }
        return false;
    }
    return true;
}

static cel_val_t ival(int64_t i)
{
    cel_val_t v;
    v.k = CK_INT;
    v.v.i = i;
    return v;
}

static cel_val_t uval(uint64_t u)
{
    cel_val_t v;
    v.k = CK_UINT;
    v.v.u = u;
    return v;
}

static cel_val_t dval(double d)
{
    cel_val_t v;
    v.k = CK_DOUBLE;
    v.v.d = d;
    return v;
}

static cel_val_t durval(int64_t ns)
{
    cel_val_t v;
    v.k = CK_DURATION;
    v.v.i = ns;
    return v;
}

static cel_val_t tsval(int64_t sec, int32_t nsec, int32_t off)
{
    if (sec < KW_CEL_TS_MIN || sec > KW_CEL_TS_MAX)
        return kw__cel_err(E_RANGE);
    cel_val_t v;
    v.k = CK_TIMESTAMP;
    v.v.ts.sec = sec;
    v.v.ts.nsec = nsec;
    v.v.ts.off = off;
    return v;
}

static cel_val_t strval(cel_ev_t *ev, cel_kind_t k, const char *s, size_t n)
{
    cel_val_t v;
    v.k = k;
    kw_arena_t *a = kw__cel_arena(ev);
    if (!a || kw_arena_str_copy(a, (kw_str_t){s, n}, &v.v.s) != KW_OK)
        return kw__cel_oom(ev);
    return v;
}

/* timestamp + duration (ns), exactly; the result keeps the timestamp's offset. */
static cel_val_t ts_add(int64_t sec, int32_t nsec, int32_t off, int64_t ns)
{
    int64_t dsec = ns / 1000000000, dn = ns % 1000000000;
    int64_t s = sec + dsec, n = nsec + dn;
    if (n < 0) {
        n += 1000000000;
        s--;
    } else if (n >= 1000000000) {
        n -= 1000000000;
        s++;
    }
    return tsval(s, (int32_t)n, off);
}

static cel_val_t concat(cel_ev_t *ev, const cel_val_t *l, const cel_val_t *r)
{
    if (l->k == CK_LIST) {
        uint64_t n = (uint64_t)l->v.list->n + r->v.list->n;
        if (!kw__cel_charge(ev, n + 1))
            return kw__cel_err("budget");
        cel_list_t *out = kw__cel_alloc(ev, sizeof(*out));
        cel_val_t *items = n ? kw__cel_alloc(ev, n * sizeof(*items)) : NULL;
        if (!out || (n && !items))
            return kw__cel_oom(ev);
        if (l->v.list->n)
            memcpy(items, l->v.list->items, l->v.list->n * sizeof(*items));
        if (r->v.list->n)
            memcpy(items + l->v.list->n, r->v.list->items, r->v.list->n * sizeof(*items));
        out->items = items;
        out->n = (uint32_t)n;
        cel_val_t v;
        v.k = CK_LIST;
        v.v.list = out;
        return v;
    }
    size_t n = l->v.s.len + r->v.s.len;
    if (!kw__cel_charge(ev, n / 64 + 1))
        return kw__cel_err("budget");
    char *buf = kw__cel_alloc(ev, n + 1);
    if (!buf)
        return kw__cel_oom(ev);
    if (l->v.s.len)
        memcpy(buf, l->v.s.ptr, l->v.s.len);
    if (r->v.s.len)
        memcpy(buf + l->v.s.len, r->v.s.ptr, r->v.s.len);
    buf[n] = '\0';
    cel_val_t v;
    v.k = l->k;
    v.v.s = (kw_str_t){buf, n};
    return v;
}

static cel_val_t arith(cel_ev_t *ev, cel_op_t op, const cel_val_t *l, const cel_val_t *r)
{
    if (l->k == CK_INT && r->k == CK_INT) {
        int64_t a = l->v.i, b = r->v.i, x;
        switch (op) {
        case OP_ADD:
            return __builtin_add_overflow(a, b, &x) ? kw__cel_err(E_OVERFLOW) : ival(x);
        case OP_SUB:
            return __builtin_sub_overflow(a, b, &x) ? kw__cel_err(E_OVERFLOW) : ival(x);
        case OP_MUL:
            return __builtin_mul_overflow(a, b, &x) ? kw__cel_err(E_OVERFLOW) : ival(x);
        case OP_DIV:
            if (b == 0)
                return kw__cel_err("division by zero");
            if (a == INT64_MIN && b == -1)
                return kw__cel_err(E_OVERFLOW);
            return ival(a / b);
        case OP_MOD:
            if (b == 0)
                return kw__cel_err("modulus by zero");
            if (a == INT64_MIN && b == -1)
                return kw__cel_err(E_OVERFLOW);
            return ival(a % b);
        default:
            break;
        }
    }
    if (l->k == CK_UINT && r->k == CK_UINT) {
        uint64_t a = l->v.u, b = r->v.u, x;
        switch (op) {
        case OP_ADD:
            return __builtin_add_overflow(a, b, &x) ? kw__cel_err(E_OVERFLOW) : uval(x);
        case OP_SUB:
            return __builtin_sub_overflow(a, b, &x) ? kw__cel_err(E_OVERFLOW) : uval(x);
        case OP_MUL:
            return __builtin_mul_overflow(a, b, &x) ? kw__cel_err(E_OVERFLOW) : uval(x);
        case OP_DIV:
            return b == 0 ? kw__cel_err("division by zero") : uval(a / b);
        case OP_MOD:
            return b == 0 ? kw__cel_err("modulus by zero") : uval(a % b);
        default:
            break;
        }
    }
    if (l->k == CK_DOUBLE && r->k == CK_DOUBLE) {
        switch (op) {
        case OP_ADD:
            return dval(l->v.d + r->v.d);
        case OP_SUB:
            return dval(l->v.d - r->v.d);
        case OP_MUL:
            return dval(l->v.d * r->v.d);
        case OP_DIV:
            return dval(l->v.d / r->v.d);
        default:
            break;
        }
    }
    if (op == OP_ADD && l->k == r->k && (l->k == CK_STRING || l->k == CK_BYTES || l->k == CK_LIST))
        return concat(ev, l, r);
    int64_t x;
    if (l->k == CK_DURATION && r->k == CK_DURATION && (op == OP_ADD || op == OP_SUB)) {
        bool over = op == OP_ADD ? __builtin_add_overflow(l->v.i, r->v.i, &x)
                                 : __builtin_sub_overflow(l->v.i, r->v.i, &x);
        return over ? kw__cel_err(E_OVERFLOW) : durval(x);
    }
    if (op == OP_ADD && l->k == CK_TIMESTAMP && r->k == CK_DURATION)
        return ts_add(l->v.ts.sec, l->v.ts.nsec, l->v.ts.off, r->v.i);
    if (op == OP_ADD && l->k == CK_DURATION && r->k == CK_TIMESTAMP)
        return ts_add(r->v.ts.sec, r->v.ts.nsec, r->v.ts.off, l->v.i);
    if (op == OP_SUB && l->k == CK_TIMESTAMP && r->k == CK_DURATION) {
        if (r->v.i == INT64_MIN)
            return kw__cel_err(E_OVERFLOW);
        return ts_add(l->v.ts.sec, l->v.ts.nsec, l->v.ts.off, -r->v.i);
    }
    if (op == OP_SUB && l->k == CK_TIMESTAMP && r->k == CK_TIMESTAMP) {
        /* the difference must fit Go's Duration */
        int64_t ds = l->v.ts.sec - r->v.ts.sec; /* years 1..9999: no overflow */
        int64_t dn = (int64_t)l->v.ts.nsec - r->v.ts.nsec;
        if (__builtin_mul_overflow(ds, (int64_t)1000000000, &x) ||
            __builtin_add_overflow(x, dn, &x))
            return kw__cel_err(E_OVERFLOW);
        return durval(x);
    }
    return kw__cel_err(E_OVERLOAD);
}

cel_val_t kw__cel_binop(cel_ev_t *ev, cel_op_t op, const cel_val_t *l, const cel_val_t *r)
{
    int c;
    switch (op) {
    case OP_ADD:
    case OP_SUB:
    case OP_MUL:
    case OP_DIV:
    case OP_MOD:
        return arith(ev, op, l, r);
    case OP_LT:
    case OP_LE:
    case OP_GT:
    case OP_GE:
        c = kw__cel_compare(l, r);
        if (c == -2)
            return kw__cel_err(E_OVERLOAD);
        if (c == 2)
            return kw__cel_bool(false);
        return kw__cel_bool(op == OP_LT   ? c < 0
                            : op == OP_LE ? c <= 0
                            : op == OP_GT ? c > 0
                                          : c >= 0);
    case OP_EQ:
    case OP_NE: {
        uint64_t n = 1;
        if (l->k == CK_LIST && r->k == CK_LIST)
            n += l->v.list->n;
        if (l->k == CK_MAP && r->k == CK_MAP)
            n += (uint64_t)l->v.map->n * r->v.map->n;
        if ((l->k == CK_STRING || l->k == CK_BYTES) && r->k == l->k)
            n += l->v.s.len / 64;
        if (!kw__cel_charge(ev, n))
            return kw__cel_err("budget");
        bool eq = kw__cel_equal(l, r);
        return kw__cel_bool(op == OP_EQ ? eq : !eq);
    }
    case OP_IN:
        if (r->k == CK_LIST) {
            if (!kw__cel_charge(ev, (uint64_t)r->v.list->n + 1))
                return kw__cel_err("budget");
            for (uint32_t i = 0; i < r->v.list->n; i++)
                if (kw__cel_equal(l, &r->v.list->items[i]))
                    return kw__cel_bool(true);
            return kw__cel_bool(false);
        }
        if (r->k == CK_MAP) {
            if (!kw__cel_charge(ev, (uint64_t)r->v.map->n + 1))
                return kw__cel_err("budget");
            for (uint32_t i = 0; i < r->v.map->n; i++)
                if (kw__cel_equal(l, &r->v.map->keys[i]))
                    return kw__cel_bool(true);
            return kw__cel_bool(false);
        }
        return kw__cel_err(E_OVERLOAD);
    }
    return kw__cel_err(E_OVERLOAD);
}

/* ---- conversions ---- */

static cel_val_t to_int(const cel_val_t *x)
{
    switch (x->k) {
    case CK_INT:
        return *x;
    case CK_UINT:
        return x->v.u > (uint64_t)INT64_MAX ? kw__cel_err("int overflow") : ival((int64_t)x->v.u);
    case CK_DOUBLE:
        if (!(x->v.d > -9223372036854775808.0 && x->v.d < 9223372036854775808.0))
            return kw__cel_err("int overflow");
        return ival((int64_t)x->v.d);
    case CK_STRING: {
        char buf[32];
        if (x->v.s.len == 0 || x->v.s.len >= sizeof(buf))
            return kw__cel_err("string is not an int");
        memcpy(buf, x->v.s.ptr, x->v.s.len);
        buf[x->v.s.len] = '\0';
        char *end;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (*end || errno || !(buf[0] == '-' || buf[0] == '+' || (buf[0] >= '0' && buf[0] <= '9')))
            return kw__cel_err("string is not an int");
        return ival(v);
    }
    case CK_TIMESTAMP:
        return ival(x->v.ts.sec);
    case CK_DURATION:
        return ival(x->v.i); /* nanoseconds */
    default:
        return kw__cel_err(E_OVERLOAD);
    }
}

static cel_val_t to_uint(const cel_val_t *x)
{
    switch (x->k) {
    case CK_INT:
        return x->v.i < 0 ? kw__cel_err("uint overflow") : uval((uint64_t)x->v.i);
    case CK_UINT:
        return *x;
    case CK_DOUBLE:
        if (!(x->v.d >= 0.0 && x->v.d < 18446744073709551616.0))
            return kw__cel_err("unsigned integer overflow");
        return uval((uint64_t)x->v.d);
    case CK_STRING: {
        char buf[32];
        if (x->v.s.len == 0 || x->v.s.len >= sizeof(buf) || x->v.s.ptr[0] < '0' ||
            x->v.s.ptr[0] > '9')
            return kw__cel_err("string is not a uint");
        memcpy(buf, x->v.s.ptr, x->v.s.len);
        buf[x->v.s.len] = '\0';
        char *end;
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        if (*end || errno)
            return kw__cel_err("string is not a uint");
        return uval(v);
    }
    default:
        return kw__cel_err(E_OVERLOAD);
    }
}

static cel_val_t to_double(const cel_val_t *x)
{
    switch (x->k) {
    case CK_INT:
        return dval((double)x->v.i);
    case CK_UINT:
        return dval((double)x->v.u);
    case CK_DOUBLE:
        return *x;
    case CK_STRING: {
        char buf[400];
        if (x->v.s.len == 0 || x->v.s.len >= sizeof(buf) || x->v.s.ptr[0] == ' ')
            return kw__cel_err("string is not a double");
        memcpy(buf, x->v.s.ptr, x->v.s.len);
        buf[x->v.s.len] = '\0';
        char *end;
        double d = strtod(buf, &end);
        if (*end || strpbrk(buf, "xX"))
            return kw__cel_err("string is not a double");
        return dval(d);
    }
    default:
        return kw__cel_err(E_OVERLOAD);
    }
}

/* Go's fmt %g (cel-go's string(double)): the shortest digits that read back as d, in
 * exponent form when the decimal exponent is below -4 or at least 6. */
static void format_double(double d, char *buf, size_t cap)
{
    if (isnan(d)) {
        snprintf(buf, cap, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, cap, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    int prec = 1;
    char e[64];
    for (; prec <= 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec - 1, d);
        if (strtod(e, NULL) == d)
            break;
    }
    const char *x = strchr(e, 'e');
    int exp = x ? atoi(x + 1) : 0;
    if (exp < -4 || exp >= 6) {
        snprintf(buf, cap, "%s", e);
        return;
    }
    int decimals = prec - 1 - exp;
    snprintf(buf, cap, "%.*f", decimals > 0 ? decimals : 0, d);
}

static cel_val_t to_string(cel_ev_t *ev, const cel_val_t *x)
{
    char buf[64];
    switch (x->k) {
    case CK_STRING:
        return *x;
    case CK_INT:
        snprintf(buf, sizeof(buf), "%lld", (long long)x->v.i);
        break;
    case CK_UINT:
        snprintf(buf, sizeof(buf), "%llu", (unsigned long long)x->v.u);
        break;
    case CK_DOUBLE:
        format_double(x->v.d, buf, sizeof(buf));
        break;
    case CK_BOOL:
        snprintf(buf, sizeof(buf), "%s", x->v.b ? "true" : "false");
        break;
    case CK_BYTES:
        if (!kw_utf8_valid(x->v.s))
            return kw__cel_err("invalid UTF-8 in bytes, cannot convert to string");
        return strval(ev, CK_STRING, x->v.s.ptr, x->v.s.len);
    case CK_TIMESTAMP:
        kw__cel_format_timestamp(x->v.ts.sec, x->v.ts.nsec, x->v.ts.off, buf, sizeof(buf));
        break;
    case CK_DURATION:
        kw__cel_format_duration(x->v.i, buf, sizeof(buf));
        break;
    default:
        return kw__cel_err(E_OVERLOAD);
    }
    return strval(ev, CK_STRING, buf, strlen(buf));
}

static cel_val_t to_bool(const cel_val_t *x)
{
    if (x->k == CK_BOOL)
        return *x;
    if (x->k != CK_STRING)
        return kw__cel_err(E_OVERLOAD);
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < KW_ARRAY_LEN(t); i++) {
        if (kw_str_eq_c(x->v.s, t[i]))
            return kw__cel_bool(true);
        if (kw_str_eq_c(x->v.s, f[i]))
            return kw__cel_bool(false);
    }
    return kw__cel_err("string is not a bool");
}

/* ---- strings ---- */

static bool has_sub(kw_str_t s, kw_str_t sub)
{
    if (sub.len == 0)
        return true;
    if (sub.len > s.len)
        return false;
    return memmem(s.ptr, s.len, sub.ptr, sub.len) != NULL;
}

static size_t utf8_len(kw_str_t s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++)
        if (((unsigned char)s.ptr[i] & 0xC0) != 0x80)
            n++;
    return n;
}

static cel_val_t matches(cel_ev_t *ev, const cel_node_t *n, const cel_val_t *s,
                         const cel_val_t *pat)
{
    if (s->k != CK_STRING || pat->k != CK_STRING)
        return kw__cel_err(E_OVERLOAD);
    if (!kw__cel_charge(ev, (s->v.s.len + pat->v.s.len) / 16 + 1))
        return kw__cel_err("budget");
    void *re = n->re;
    bool own = false;
    if (n->re_err)
        return kw__cel_err(n->re_err);
    if (!re) {
        char err[160];
        int rc = kw__cel_regex_compile(pat->v.s, &re, err, sizeof(err));
        if (rc == KW_ENOMEM)
            return kw__cel_oom(ev);
        if (rc != KW_OK) {
            kw_arena_t *a = kw__cel_arena(ev);
            char *msg = a ? kw_arena_sprintf(a, "invalid regular expression: %s", err) : NULL;
            return msg ? kw__cel_err(msg) : kw__cel_oom(ev);
        }
        own = true;
    }
    int r = kw__cel_regex_search(re, s->v.s);
    if (own)
        kw__cel_regex_free(re);
    if (r == KW_ENOMEM)
        return kw__cel_oom(ev);
    if (r == KW_EBUDGET) {
        if (!ev->hard) {
            ev->hard = KW_EBUDGET;
            ev->hard_msg = "a regular expression match exceeded its budget";
        }
        return kw__cel_err("budget");
    }
    return kw__cel_bool(r == 1);
}

/* ---- ip ---- */

static cel_val_t in_cidr(const cel_val_t *ip, const cel_val_t *cidr)
{
    if (ip->k != CK_IP || cidr->k != CK_STRING)
        return kw__cel_err(E_OVERLOAD);
    kw_str_t s = cidr->v.s;
    const char *slash = memchr(s.ptr, '/', s.len);
    if (!slash)
        return kw__cel_err("invalid CIDR string");
    cel_ip_t net;
    if (kw__cel_parse_ip((kw_str_t){s.ptr, (size_t)(slash - s.ptr)}, &net) != KW_OK)
        return kw__cel_err("invalid CIDR string");
    const char *b = slash + 1, *end = s.ptr + s.len;
    int bits = 0;
    if (b == end || end - b > 3 || (*b == '0' && end - b > 1))
        return kw__cel_err("invalid CIDR string");
    for (; b < end; b++) {
        if (*b < '0' || *b > '9')
            return kw__cel_err("invalid CIDR string");
        bits = bits * 10 + (*b - '0');
    }
    if (bits > (net.v6 ? 128 : 32))
        return kw__cel_err("invalid CIDR string");
    if (net.zone_len) /* Go's netip.ParsePrefix refuses a zone */
        return kw__cel_err("invalid CIDR string");
    if (net.v6 != ip->v.ip->v6 || ip->v.ip->zone_len) /* a zoned address is in no prefix */
        return kw__cel_bool(false);
    for (int i = 0; i < bits; i++) {
        int byte = i / 8, bit = 7 - i % 8;
        if (((net.b[byte] >> bit) & 1) != ((ip->v.ip->b[byte] >> bit) & 1))
            return kw__cel_bool(false);
    }
    return kw__cel_bool(true);
}

/* ---- time getters ---- */

static cel_val_t getter(cel_ev_t *ev, cel_fn_t fn, const cel_val_t *x, const cel_val_t *tz)
{
    if (x->k == CK_DURATION) {
        int64_t ns = x->v.i;
        switch (fn) {
        case F_GET_HOURS:
            return ival(ns / 3600000000000LL);
        case F_GET_MINUTES:
            return ival(ns / 60000000000LL);
        case F_GET_SECONDS:
            return ival(ns / 1000000000LL);
        case F_GET_MILLISECONDS:
            return ival(ns / 1000000LL); /* the total, as Go's Duration.Milliseconds */
        default:
            return kw__cel_err(E_OVERLOAD);
        }
    }
    if (x->k != CK_TIMESTAMP)
        return kw__cel_err(E_OVERLOAD);
    int64_t off = 0;
    if (tz) {
        if (tz->k != CK_STRING)
            return kw__cel_err(E_OVERLOAD);
        if (!kw__cel_charge(ev, 1000)) /* a zone name reads a file */
            return kw__cel_err("budget");
        int rc = kw__cel_tz_offset(tz->v.s, x->v.ts.sec, &off);
        if (rc == KW_ENOMEM)
            return kw__cel_oom(ev);
        if (rc != KW_OK)
            return kw__cel_err("unknown time zone");
    }
    int y, mo, md, yd, wd, h, mi, s;
    kw__cel_civil(x->v.ts.sec + off, &y, &mo, &md, &yd, &wd, &h, &mi, &s);
    switch (fn) {
    case F_GET_FULL_YEAR:
        return ival(y);
    case F_GET_MONTH:
        return ival(mo - 1);
    case F_GET_DAY_OF_YEAR:
        return ival(yd);
    case F_GET_DAY_OF_MONTH:
        return ival(md - 1);
    case F_GET_DATE:
        return ival(md);
    case F_GET_DAY_OF_WEEK:
        return ival(wd);
    case F_GET_HOURS:
        return ival(h);
    case F_GET_MINUTES:
        return ival(mi);
    case F_GET_SECONDS:
        return ival(s);
    case F_GET_MILLISECONDS:
        return ival(x->v.ts.nsec / 1000000);
    default:
        return kw__cel_err(E_OVERLOAD);
    }
}

cel_val_t kw__cel_call(cel_ev_t *ev, const cel_node_t *n, const cel_val_t *args, uint32_t nargs)
{
    const cel_val_t *x = &args[0];
    switch ((cel_fn_t)n->op) {
    case F_SIZE:
        if (x->k == CK_STRING)
            return ival((int64_t)utf8_len(x->v.s));
        if (x->k == CK_BYTES)
            return ival((int64_t)x->v.s.len);
        if (x->k == CK_LIST)
            return ival(x->v.list->n);
        if (x->k == CK_MAP)
            return ival(x->v.map->n);
        return kw__cel_err(E_OVERLOAD);
    case F_CONTAINS:
    case F_STARTS_WITH:
    case F_ENDS_WITH: {
        if (nargs != 2 || x->k != CK_STRING || args[1].k != CK_STRING)
            return kw__cel_err(E_OVERLOAD);
        kw_str_t s = x->v.s, sub = args[1].v.s;
        if (!kw__cel_charge(ev, s.len / 64 + 1))
            return kw__cel_err("budget");
        if ((cel_fn_t)n->op == F_CONTAINS)
            return kw__cel_bool(has_sub(s, sub));
        if (sub.len > s.len)
            return kw__cel_bool(false);
        if ((cel_fn_t)n->op == F_STARTS_WITH)
            return kw__cel_bool(sub.len == 0 || memcmp(s.ptr, sub.ptr, sub.len) == 0);
        return kw__cel_bool(sub.len == 0 || memcmp(s.ptr + s.len - sub.len, sub.ptr, sub.len) == 0);
    }
    case F_MATCHES:
        if (nargs != 2)
            return kw__cel_err(E_OVERLOAD);
        return matches(ev, n, &args[0], &args[1]);
    case F_INT:
        return to_int(x);
    case F_UINT:
        return to_uint(x);
    case F_DOUBLE:
        return to_double(x);
    case F_STRING:
        return to_string(ev, x);
    case F_BYTES:
        if (x->k == CK_BYTES)
            return *x;
        if (x->k == CK_STRING)
            return strval(ev, CK_BYTES, x->v.s.ptr, x->v.s.len);
        return kw__cel_err(E_OVERLOAD);
    case F_BOOL:
        return to_bool(x);
    case F_TIMESTAMP:
        if (x->k == CK_TIMESTAMP)
            return *x;
        if (x->k == CK_INT)
            return tsval(x->v.i, 0, 0);
        if (x->k == CK_STRING) {
            int64_t sec;
            int32_t nsec, off;
            if (kw__cel_parse_timestamp(x->v.s, &sec, &nsec, &off) != KW_OK)
                return kw__cel_err("timestamp conversion error: not an RFC 3339 timestamp");
            return tsval(sec, nsec, off);
        }
        return kw__cel_err(E_OVERLOAD);
    case F_DURATION:
        if (x->k == CK_DURATION)
            return *x;
        if (x->k == CK_STRING) {
            int64_t ns;
            if (kw__cel_parse_duration(x->v.s, &ns) != KW_OK)
                return kw__cel_err("duration conversion error: not a duration such as \"1h30m\"");
            return durval(ns);
        }
        return kw__cel_err(E_OVERLOAD);
    case F_DYN:
        return *x;
    case F_TYPE: {
        cel_val_t t;
        t.k = CK_TYPE;
        t.v.i = x->k;
        return t;
    }
    case F_OPT_OF:
    case F_OPT_OF_NON_ZERO:
        if ((cel_fn_t)n->op == F_OPT_OF_NON_ZERO && is_zero(x))
            return kw__cel_opt(ev, NULL);
        return kw__cel_opt(ev, x);
    case F_OPT_NONE:
        return kw__cel_opt(ev, NULL);
    case F_HAS_VALUE:
        return x->k == CK_OPT ? kw__cel_bool(x->v.opt != NULL) : kw__cel_err(E_OVERLOAD);
    case F_VALUE:
        if (x->k != CK_OPT)
            return kw__cel_err(E_OVERLOAD);
        return x->v.opt ? *x->v.opt : kw__cel_err("optional.none() dereference");
    case F_OR: /* eval.c has already returned a receiver that holds a value */
        return nargs == 2 && x->k == CK_OPT && args[1].k == CK_OPT ? args[1]
                                                                   : kw__cel_err(E_OVERLOAD);
    case F_OR_VALUE:
        return nargs == 2 && x->k == CK_OPT ? args[1] : kw__cel_err(E_OVERLOAD);
    case F_IN_CIDR:
        if (nargs != 2)
            return kw__cel_err(E_OVERLOAD);
        return in_cidr(x, &args[1]);
    case F_GET_FULL_YEAR:
    case F_GET_MONTH:
    case F_GET_DAY_OF_YEAR:
    case F_GET_DAY_OF_MONTH:
    case F_GET_DATE:
    case F_GET_DAY_OF_WEEK:
    case F_GET_HOURS:
    case F_GET_MINUTES:
    case F_GET_SECONDS:
    case F_GET_MILLISECONDS:
        return getter(ev, (cel_fn_t)n->op, x, nargs > 1 ? &args[1] : NULL);
    case F_NONE:
        break;
    }
    return kw__cel_err(E_OVERLOAD);
}
