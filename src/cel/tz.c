/*
 * cel/tz.c - IANA time zone names for the timestamp getters (`t.getHours("Europe/Paris")`),
 * read from the system's tz database as Go's time.LoadLocation reads it.
 *
 * A TZif file (RFC 8536) lists transitions and their UTC offsets; past the last one, its
 * footer's POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3") gives the offset. The file is
 * read for each lookup: no cache, so no shared mutable state; the evaluation's budget
 * charges the lookup. Names are checked before they become a path: letters, digits and
 * "_+-" in '/'-separated segments, none empty or starting with '.', at most 128 bytes.
 */
#include "cel_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZONEINFO_DIR "/usr/share/zoneinfo/"
#define TZIF_MAX_BYTES (256u * 1024u)

static bool name_ok(kw_str_t n)
{
    if (n.len == 0 || n.len > 128)
        return false;
    size_t seg = 0;
    for (size_t i = 0; i <= n.len; i++) {
        if (i == n.len || n.ptr[i] == '/') {
            if (i == seg || n.ptr[seg] == '.' || n.ptr[seg] == '-')
                return false;
            seg = i + 1;
            continue;
        }
        char c = n.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-'))
            return false;
    }
    return true;
}

static int64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    if (n == 4)
        return (int32_t)(uint32_t)v;
    return (int64_t)v;
}

/* ---- POSIX TZ rules (the TZif footer) ---- */

typedef struct rule {
    char kind; /* 'M' month.week.day, 'J' julian 1..365 without Feb 29, 'D' zero-based day */
    int m, w, d, n;
    int64_t time; /* seconds after local midnight (may be negative or past 24h) */
} rule_t;

static const char *skip_name(const char *p, const char *end)
{
    if (p < end && *p == '<') {
        while (p < end && *p != '>')
            p++;
        return p < end ? p + 1 : NULL;
    }
    const char *s = p;
    while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        p++;
    return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] -> seconds; NULL on error. */
static const char *parse_hms(const char *p, const char *end, int64_t *out)
{
    int sign = 1;
    if (p < end && (*p == '+' || *p == '-'))
        sign = *p++ == '-' ? -1 : 1;
    int64_t total = 0;
    for (int part = 0; part < 3; part++) {
        if (part && (p >= end || *p != ':'))
            break;
        if (part)
            p++;
        int64_t v = 0;
        const char *s = p;
        while (p < end && *p >= '0' && *p <= '9' && p - s < 3)
            v = v * 10 + (*p++ - '0');
        if (p == s)
            return NULL;
        total += v * (part == 0 ? 3600 : part == 1 ? 60 : 1);
    }
    *out = sign * total;
    return p;
}

static const char *parse_num(const char *p, const char *end, int *out)
{
    const char *s = p;
    int v = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - s < 4)
        v = v * 10 + (*p++ - '0');
    *out = v;
    return p == s ? NULL : p;
}

static const char *parse_rule(const char *p, const char *end, rule_t *r)
{
    memset(r, 0, sizeof(*r));
    r->time = 7200;
    if (p < end && *p == 'M') {
        r->kind = 'M';
        if (!(p = parse_num(p + 1, end, &r->m)) || p >= end || *p != '.' ||
            !(p = parse_num(p + 1, end, &r->w)) || p >= end || *p != '.' ||
            !(p = parse_num(p + 1, end, &r->d)))
            return NULL;
        if (r->m < 1 || r->m > 12 || r->w < 1 || r->w > 5 || r->d > 6)
            return NULL;
    } else if (p < end && *p == 'J') {
        r->kind = 'J';
        if (!(p = parse_num(p + 1, end, &r->n)) || r->n < 1 || r->n > 365)
            return NULL;
    } else {
        r->kind = 'D';
        if (!(p = parse_num(p, end, &r->n)) || r->n > 365)
            return NULL;
    }
    if (p < end && *p == '/' && !(p = parse_hms(p + 1, end, &r->time)))
        return NULL;
    return p;
}

static bool leap_year(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since the epoch of 1 Jan of year y. */
static int64_t year_start(int64_t y)
{
    int64_t days = 0;
    /* years 0001..9999 only: a short loop from 1970 in 400-year strides would do; the
     * closed form below is exact for the proleptic Gregorian calendar */
    int64_t yy = y - 1;
    days = yy * 365 + yy / 4 - yy / 100 + yy / 400 - 719162;
    return days;
}

/* Local midnight-based second of the rule's day in year y (seconds since the epoch, as
 * if local time were UTC). */
static int64_t rule_local(const rule_t *r, int64_t y)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t day = year_start(y);
    if (r->kind == 'J') {
        day += r->n - 1 + (leap_year(y) && r->n > 59 ? 1 : 0);
    } else if (r->kind == 'D') {
        day += r->n;
    } else {
        int64_t first = day;
        for (int m = 1; m < r->m; m++)
            first += mdays[m - 1] + (m == 2 && leap_year(y));
        int64_t wd = (first + 4) % 7; /* weekday of the 1st (1970-01-01 was a Thursday) */
        if (wd < 0)
            wd += 7;
        int64_t dd = (r->d - wd + 7) % 7 + (int64_t)(r->w - 1) * 7;
        int len = mdays[r->m - 1] + (r->m == 2 && leap_year(y));
        while (dd >= len)
            dd -= 7;
        day = first + dd;
    }
    return day * 86400 + r->time;
}

/* Offset at t from a POSIX TZ string; KW_EINVAL when it does not parse. */
static int posix_offset(const char *p, const char *end, int64_t t, int64_t *off)
{
    int64_t std, dst;
    if (!(p = skip_name(p, end)) || !(p = parse_hms(p, end, &std)))
        return KW_EINVAL;
    std = -std; /* POSIX offsets are west-positive */
    if (p >= end) {
        *off = std;
        return KW_OK;
    }
    if (!(p = skip_name(p, end)))
        return KW_EINVAL;
    dst = std + 3600;
    if (p < end && *p != ',') {
        if (!(p = parse_hms(p, end, &dst)))
            return KW_EINVAL;
        dst = -dst;
    }
    rule_t start, stop;
    if (p >= end || *p != ',' || !(p = parse_rule(p + 1, end, &start)) || p >= end || *p != ',' ||
        !(p = parse_rule(p + 1, end, &stop)))
        return KW_EINVAL;
    int y, mo, md, yd, wd, h, mi, s;
    kw__cel_civil(t + std, &y, &mo, &md, &yd, &wd, &h, &mi, &s);
    int64_t on = rule_local(&start, y) - std;  /* start: given in standard time */
    int64_t offt = rule_local(&stop, y) - dst; /* end: given in daylight time */
    bool in_dst = on < offt ? (t >= on && t < offt) : !(t >= offt && t < on);
    *off = in_dst ? dst : std;
    return KW_OK;
}

/* ---- TZif ---- */

static int tzif_offset(const unsigned char *b, size_t len, int64_t t, int64_t *off)
{
    if (len < 44 || memcmp(b, "TZif", 4) != 0)
        return KW_EINVAL;
    int version = b[4];
    size_t pos = 0;
    int tsize = 4;
    for (int pass = 0; pass < 2; pass++) {
        if (pos + 44 > len || memcmp(b + pos, "TZif", 4) != 0)
            return KW_EINVAL;
        const unsigned char *h = b + pos + 20;
        uint64_t isut = (uint32_t)be(h, 4), isstd = (uint32_t)be(h + 4, 4),
                 leap = (uint32_t)be(h + 8, 4), timecnt = (uint32_t)be(h + 12, 4),
                 typecnt = (uint32_t)be(h + 16, 4), charcnt = (uint32_t)be(h + 20, 4);
        uint64_t data = timecnt * (uint64_t)tsize + timecnt + typecnt * 6 + charcnt +
                        leap * (uint64_t)(tsize + 4) + isstd + isut;
        if (typecnt == 0 || pos + 44 + data > len)
            return KW_EINVAL;
        if (pass == 0 && version >= '2') {
            pos += 44 + data; /* skip the 32-bit block for the 64-bit one */
            tsize = 8;
            continue;
        }
        const unsigned char *times = b + pos + 44;
        const unsigned char *idx = times + timecnt * (uint64_t)tsize;
        const unsigned char *types = idx + timecnt;
        const unsigned char *after = b + pos + 44 + data;
        /* the last transition at or before t */
        uint64_t lo = 0, hi = timecnt;
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (be(times + mid * (uint64_t)tsize, tsize) <= t)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == timecnt && tsize == 8 && after < b + len && *after == '\n') {
            const char *f = (const char *)after + 1;
            const char *fe = memchr(f, '\n', (size_t)(b + len - (const unsigned char *)f));
            if (fe && fe > f)
                return posix_offset(f, fe, t, off);
        }
        uint64_t type = lo == 0 ? 0 : idx[lo - 1];
        if (type >= typecnt)
            return KW_EINVAL;
        *off = be(types + type * 6, 4);
        return KW_OK;
    }
    return KW_EINVAL;
}

int kw__cel_tz_lookup(kw_str_t name, int64_t t, int64_t *off)
{
    if (!name_ok(name))
        return KW_EINVAL;
    char path[sizeof(ZONEINFO_DIR) + 130];
    snprintf(path, sizeof(path), "%s%.*s", ZONEINFO_DIR, (int)name.len, name.ptr);
    char *data = NULL;
    size_t len = 0;
    int rc = kw_read_file(path, TZIF_MAX_BYTES, &data, &len);
    if (rc == KW_ENOMEM)
        return rc;
    if (rc != KW_OK)
        return KW_EINVAL;
    rc = tzif_offset((const unsigned char *)data, len, t, off);
    kw_free(data);
    return rc;
}
