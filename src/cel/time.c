/*
 * cel/time.c - timestamps and durations as cel-go has them: RFC 3339 parsing (Go's
 * time.RFC3339 layout), Go's duration syntax, the canonical string forms, and civil
 * dates (proleptic Gregorian, days-from-civil arithmetic) for the getters.
 */
#include "cel_int.h"

#include <stdio.h>
#include <string.h>

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return KW_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return KW_OK;
}

/* Days since 1970-01-01 of a civil date (valid for all years here). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

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

static bool leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int kw__cel_parse_timestamp(kw_str_t s, int64_t *sec, int32_t *nsec, int32_t *offset)
{
    /* YYYY-MM-DDTHH:MM:SS[.f+](Z|+hh:mm|-hh:mm) */
    const char *p = s.ptr;
    size_t n = s.len;
    int Y, M, D, h, mi, se;
    if (n < 20 || digits(p, 4, &Y) || p[4] != '-' || digits(p + 5, 2, &M) || p[7] != '-' ||
        digits(p + 8, 2, &D) || p[10] != 'T' || digits(p + 11, 2, &h) || p[13] != ':' ||
        digits(p + 14, 2, &mi) || p[16] != ':' || digits(p + 17, 2, &se))
        return KW_EINVAL;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] + (M == 2 && leap(Y)) || h > 23 || mi > 59 ||
        se > 59)
        return KW_EINVAL;
    size_t i = 19;
    int32_t frac = 0;
    if (i < n && p[i] == '.') {
        i++;
        size_t start = i;
        int scale = 100000000;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            frac += (p[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start)
            return KW_EINVAL; /* Go reads any number of digits and keeps nanoseconds */
    }
    int64_t off = 0;
    if (i < n && p[i] == 'Z') {
        i++;
    } else if (i + 6 == n && (p[i] == '+' || p[i] == '-')) {
        int oh, om;
        if (digits(p + i + 1, 2, &oh) || p[i + 3] != ':' || digits(p + i + 4, 2, &om) || oh > 24 ||
            om > 60) /* Go's bounds */
            return KW_EINVAL;
        off = (int64_t)(oh * 3600 + om * 60) * (p[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return KW_EINVAL;
    }
    if (i != n)
        return KW_EINVAL;
    int64_t t = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + se - off;
    if (t < KW_CEL_TS_MIN || t > KW_CEL_TS_MAX)
        return KW_EINVAL;
    *sec = t;
    *nsec = frac;
    *offset = (int32_t)off;
    return KW_OK;
}

int kw__cel_parse_duration(kw_str_t s, int64_t *out)
{
    static const struct {
        const char *u;
        uint64_t ns;
    } units[] = {
        {"ns", 1},       {"us", 1000},         {"\xc2\xb5s", 1000},   {"\xce\xbcs", 1000},
        {"ms", 1000000}, {"s", 1000000000ULL}, {"m", 60000000000ULL}, {"h", 3600000000000ULL}};
    const char *p = s.ptr, *end = s.ptr + s.len;
    bool neg = false;
    if (p < end && (*p == '-' || *p == '+'))
        neg = *p++ == '-';
    if (end - p == 1 && *p == '0') {
        *out = 0;
        return KW_OK;
    }
    if (p >= end)
        return KW_EINVAL;
    /* Accumulate in unsigned nanoseconds; the bound is 2^63 (Go's range). */
    uint64_t total = 0;
    const uint64_t limit = (uint64_t)INT64_MAX + 1;
    while (p < end) {
        uint64_t whole = 0;
        bool any = false, over = false;
        while (p < end && *p >= '0' && *p <= '9') {
            if (whole > (limit - 9) / 10)
                over = true;
            whole = whole * 10 + (uint64_t)(*p - '0');
            p++;
            any = true;
        }
        double frac = 0, scale = 1;
        if (p < end && *p == '.') {
            p++;
            while (p < end && *p >= '0' && *p <= '9') {
                scale /= 10;
                frac += (*p - '0') * scale;
                p++;
                any = true;
            }
        }
        if (!any || over)
            return KW_EINVAL;
        const char *u = p;
        while (p < end && !(*p >= '0' && *p <= '9') && *p != '.')
            p++;
        size_t ulen = (size_t)(p - u);
        uint64_t mult = 0;
        for (size_t i = 0; i < KW_ARRAY_LEN(units); i++)
            if (strlen(units[i].u) == ulen && memcmp(units[i].u, u, ulen) == 0)
                mult = units[i].ns;
        if (!mult)
            return KW_EINVAL;
        if (whole > limit / mult)
            return KW_EINVAL;
        uint64_t v = whole * mult + (uint64_t)(frac * (double)mult);
        if (v > limit || total > limit - v)
            return KW_EINVAL;
        total += v;
    }
    if (!neg && total > (uint64_t)INT64_MAX)
        return KW_EINVAL;
    *out = neg ? (int64_t)(0 - total) : (int64_t)total;
    return KW_OK;
}

void kw__cel_format_timestamp(int64_t sec, int32_t nsec, int32_t off, char *buf, size_t cap)
{
    sec += off;
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    char frac[16] = "";
    if (nsec) {
        snprintf(frac, sizeof(frac), ".%09d", (int)nsec);
        size_t l = strlen(frac);
        while (l > 1 && frac[l - 1] == '0')
            frac[--l] = '\0';
    }
    char zone[24] = "Z";
    if (off) {
        int a = off < 0 ? -off : off;
        snprintf(zone, sizeof(zone), "%c%02d:%02d", off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
    }
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d%s%s", (int)y, m, d, (int)(rem / 3600),
             (int)(rem / 60 % 60), (int)(rem % 60), frac, zone);
}

void kw__cel_format_duration(int64_t ns, char *buf, size_t cap)
{
    uint64_t a = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    char frac[16] = "";
    if (a % 1000000000ULL) {
        snprintf(frac, sizeof(frac), ".%09llu", (unsigned long long)(a % 1000000000ULL));
        size_t l = strlen(frac);
        while (l > 1 && frac[l - 1] == '0')
            frac[--l] = '\0';
    }
    snprintf(buf, cap, "%s%llu%ss", ns < 0 ? "-" : "", (unsigned long long)(a / 1000000000ULL),
             frac);
}

void kw__cel_civil(int64_t sec, int *year, int *month, int *mday, int *yday, int *wday, int *hour,
                   int *min, int *s)
{
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t y;
    civil_from_days(days, &y, month, mday);
    *year = (int)y;
    *yday = (int)(days - days_from_civil(y, 1, 1));
    int64_t w = (days + 4) % 7; /* 1970-01-01 was a Thursday */
    *wday = (int)(w < 0 ? w + 7 : w);
    *hour = (int)(rem / 3600);
    *min = (int)(rem / 60 % 60);
    *s = (int)(rem % 60);
}

/* Go's strconv.Atoi on s[0..n): optional sign, decimal digits, nothing else. */
static int atoi_go(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (n && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n || n - i > 9)
        return KW_EINVAL;
    int64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return KW_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return KW_OK;
}

int kw__cel_tz_offset(kw_str_t tz, int64_t t, int64_t *off)
{
    const char *colon = tz.len ? memchr(tz.ptr, ':', tz.len) : NULL;
    if (!colon) {
        /* a zone name, as Go's time.LoadLocation: "" and "UTC" are UTC; "Local" is the
         * server's zone, which keyward takes as UTC (deterministic across hosts) */
        if (tz.len == 0 || kw_str_eq_c(tz, "UTC") || kw_str_eq_c(tz, "Local")) {
            *off = 0;
            return KW_OK;
        }
        return kw__cel_tz_lookup(tz, t, off);
    }
    /* cel-go: "[+-]H:M" with each side read by strconv.Atoi */
    int64_t h, m;
    size_t hl = (size_t)(colon - tz.ptr);
    if (atoi_go(tz.ptr, hl, &h) != KW_OK || atoi_go(colon + 1, tz.len - hl - 1, &m) != KW_OK)
        return KW_EINVAL;
    int64_t minutes = tz.ptr[0] == '-' ? h * 60 - m : h * 60 + m;
    *off = minutes * 60;
    return KW_OK;
}
