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

int kw__cel_parse_timestamp(kw_str_t s, int64_t *sec, int32_t *nsec)
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
        if (i == start || i - start > 9)
            return KW_EINVAL;
    }
    int64_t off = 0;
    if (i < n && p[i] == 'Z') {
        i++;
    } else if (i + 6 == n && (p[i] == '+' || p[i] == '-')) {
        int oh, om;
        if (digits(p + i + 1, 2, &oh) || p[i + 3] != ':' || digits(p + i + 4, 2, &om) || oh > 23 ||
            om > 59)
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

void kw__cel_format_timestamp(int64_t sec, int32_t nsec, char *buf, size_t cap)
{
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
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", (int)y, m, d, (int)(rem / 3600),
             (int)(rem / 60 % 60), (int)(rem % 60), frac);
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

int kw__cel_tz_offset(kw_str_t tz, int64_t *off)
{
    if (kw_str_eq_c(tz, "UTC") || kw_str_eq_c(tz, "Z") || kw_str_eq_c(tz, "Etc/UTC")) {
        *off = 0;
        return KW_OK;
    }
    const char *p = tz.ptr;
    size_t n = tz.len;
    int sign = 1;
    if (n && (p[0] == '+' || p[0] == '-')) {
        sign = p[0] == '-' ? -1 : 1;
        p++;
        n--;
    }
    int h, m;
    if (n == 5 && digits(p, 2, &h) == KW_OK && p[2] == ':' && digits(p + 3, 2, &m) == KW_OK &&
        h <= 23 && m <= 59) {
        *off = sign * (int64_t)(h * 3600 + m * 60);
        return KW_OK;
    }
    return KW_EINVAL;
}
