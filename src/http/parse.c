/*
 * http/parse.c - the HTTP/1.x request parser: request line + header fields, and the
 * chunked transfer coding of request bodies. Pure functions over bytes (no sockets, no
 * allocation), so tests/fuzz/fuzz_http.c can drive them directly.
 *
 * Strict by design (RFC 9112): every line ends in CRLF (a bare LF is a 400), no
 * whitespace between a field name and its colon, no obs-fold, no control characters in
 * values. The message framing is decided here once, so the server cannot be talked into
 * two readings of one byte stream (request smuggling): two different Content-Length
 * values, Content-Length together with Transfer-Encoding, or a Transfer-Encoding that is
 * not exactly `chunked` are refused before any body byte is looked at.
 */
#include <string.h>
#include <strings.h>

#include "http_int.h"

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Field-value bytes: HTAB, SP, VCHAR, obs-text. */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

size_t kw__http_head_end(const char *buf, size_t len, size_t *scan)
{
    size_t i = *scan;
    for (; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 >= len)
            break;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] != '\r')
            continue;
        if (i + 2 >= len)
            break;
        if (buf[i + 2] == '\n')
            return i + 3;
    }
    *scan = i;
    return 0;
}

static int fail(const char **msg, int status, const char *m)
{
    *msg = m;
    return status;
}

/* The request line, "METHOD SP target SP HTTP/x.y", ending at `eol` (the CR). */
static int parse_request_line(char *p, char *eol, kw__http_head_t *h, const char **msg)
{
    char *m = p;
    while (p < eol && is_tchar((unsigned char)*p))
        p++;
    if (p == m || p == eol || *p != ' ')
        return fail(msg, 400, "Malformed request line.");
    h->method = (kw_str_t){m, (size_t)(p - m)};
    *p++ = '\0';
    char *t = p;
    while (p < eol && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7F)
        p++;
    if (p == t || p == eol || *p != ' ')
        return fail(msg, 400, "Malformed request line.");
    h->target = (kw_str_t){t, (size_t)(p - t)};
    *p++ = '\0';
    size_t vlen = (size_t)(eol - p);
    if (vlen != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
        p[7] < '0' || p[7] > '9')
        return fail(msg, 400, "Malformed request line.");
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return fail(msg, 505, "HTTP Version Not Supported");
    h->minor = p[7] - '0';
    return 0;
}

/* Splits the target into path and query. Origin-form ("/p?q") is the norm; absolute-form
 * ("http://host/p?q", RFC 9112 3.2.2) is reduced to its path; "*" stays as it is (the
 * router finds nothing for it). */
static void split_target(kw__http_head_t *h)
{
    kw_str_t t = h->target;
    if (t.ptr[0] != '/' && !(t.len == 1 && t.ptr[0] == '*')) {
        size_t skip = 0;
        if (t.len > 7 && strncasecmp(t.ptr, "http://", 7) == 0)
            skip = 7;
        else if (t.len > 8 && strncasecmp(t.ptr, "https://", 8) == 0)
            skip = 8;
        if (skip) {
            const char *slash = memchr(t.ptr + skip, '/', t.len - skip);
            const char *q = memchr(t.ptr + skip, '?', t.len - skip);
            if (slash && (!q || slash < q))
                t = (kw_str_t){slash, t.len - (size_t)(slash - t.ptr)};
            else
                t = KW_STR("/"); /* "http://host" or "http://host?q": the root */
        }
    }
    const char *q = memchr(t.ptr, '?', t.len);
    if (q) {
        h->path = (kw_str_t){t.ptr, (size_t)(q - t.ptr)};
        h->query = (kw_str_t){q + 1, t.len - (size_t)(q - t.ptr) - 1};
    } else {
        h->path = t;
        h->query = KW_STR("");
    }
}

/* A Content-Length value: 1*DIGIT. Past 2^63 it is recorded as an overflow (413). */
static bool parse_length(const char *v, uint64_t *out, bool *overflow)
{
    if (!*v)
        return false;
    uint64_t n = 0;
    *overflow = false;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return false;
        if (n > (UINT64_MAX >> 1) / 10)
            *overflow = true;
        else
            n = n * 10 + (uint64_t)(*v - '0');
    }
    *out = n;
    return true;
}

/* Connection: comma-separated tokens; only close and keep-alive mean anything here. */
static void parse_connection(const char *v, bool *close, bool *keep)
{
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *s = v;
        while (*v && *v != ',' && *v != ' ' && *v != '\t')
            v++;
        size_t n = (size_t)(v - s);
        if (n == 5 && strncasecmp(s, "close", 5) == 0)
            *close = true;
        else if (n == 10 && strncasecmp(s, "keep-alive", 10) == 0)
            *keep = true;
    }
}

/* Decides the framing and connection semantics from the fields (see the file comment). */
static int check_fields(kw__http_head_t *h, const char **msg)
{
    size_t n_host = 0, n_auth = 0, n_te = 0;
    const char *te = NULL;
    bool close = false, keep = false;
    for (size_t i = 0; i < h->n_hdrs; i++) {
        const char *name = h->hdrs[i].name, *v = h->hdrs[i].value;
        if (strcasecmp(name, "content-length") == 0) {
            uint64_t n = 0;
            bool over = false;
            if (!parse_length(v, &n, &over))
                return fail(msg, 400, "Malformed Content-Length.");
            if (h->has_length && (n != h->length || over != h->length_overflow))
                return fail(msg, 400, "Conflicting Content-Length values.");
            h->has_length = true;
            h->length = n;
            h->length_overflow = over;
        } else if (strcasecmp(name, "transfer-encoding") == 0) {
            n_te++;
            te = v;
        } else if (strcasecmp(name, "host") == 0) {
            n_host++;
        } else if (strcasecmp(name, "authorization") == 0) {
            n_auth++;
        } else if (strcasecmp(name, "connection") == 0) {
            parse_connection(v, &close, &keep);
        } else if (strcasecmp(name, "expect") == 0) {
            if (strcasecmp(v, "100-continue") != 0)
                return fail(msg, 417, "Expectation Failed");
            h->expect_continue = true;
        }
    }
    if (n_te) {
        if (h->has_length)
            return fail(msg, 400, "Content-Length and Transfer-Encoding together.");
        if (h->minor == 0)
            return fail(msg, 400, "Transfer-Encoding in an HTTP/1.0 request.");
        if (n_te > 1 || strcasecmp(te, "chunked") != 0)
            return fail(msg, 501, "Transfer-Encoding other than chunked is not supported.");
        h->chunked = true;
    }
    if (h->minor == 1 && n_host != 1)
        return fail(msg, 400, n_host ? "More than one Host header." : "Host header required.");
    if (n_host > 1)
        return fail(msg, 400, "More than one Host header.");
    if (n_auth > 1)
        return fail(msg, 400, "More than one Authorization header.");
    h->keep_alive = h->minor == 1 ? !close : keep && !close;
    return 0;
}

int kw__http_parse_head(char *buf, size_t len, kw__http_head_t *h, const char **msg)
{
    memset(h, 0, sizeof(*h));
    h->method = KW_STR("");
    h->target = h->path = h->query = KW_STR("");
    char *end = buf + len, *p = buf;
    char *nl = memchr(p, '\n', len);
    if (!nl || nl == p || nl[-1] != '\r')
        return fail(msg, 400, "Malformed request line.");
    int st = parse_request_line(p, nl - 1, h, msg);
    if (st)
        return st;
    split_target(h);
    p = nl + 1;
    for (;;) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl || nl == p || nl[-1] != '\r')
            return fail(msg, 400, "Malformed header line.");
        char *eol = nl - 1;
        if (eol == p)
            break; /* the empty line: end of the head */
        if (*p == ' ' || *p == '\t')
            return fail(msg, 400, "Obsolete header line folding.");
        char *name = p;
        while (p < eol && is_tchar((unsigned char)*p))
            p++;
        if (p == name || p == eol || *p != ':')
            return fail(msg, 400, "Malformed header field name.");
        *p++ = '\0';
        while (p < eol && (*p == ' ' || *p == '\t'))
            p++;
        char *v = p, *ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (char *c = v; c < ve; c++)
            if (!is_value_char((unsigned char)*c))
                return fail(msg, 400, "Malformed header field value.");
        if (h->n_hdrs == KW_MAX_HEADERS)
            return fail(msg, 431, "Too many header fields.");
        *ve = '\0';
        h->hdrs[h->n_hdrs].name = name;
        h->hdrs[h->n_hdrs].value = v;
        h->n_hdrs++;
        p = nl + 1;
    }
    if (nl + 1 != end)
        return fail(msg, 400, "Malformed request head.");
    return check_fields(h, msg);
}

const char *kw__http_head_get(const kw__http_head_t *h, const char *name)
{
    for (size_t i = 0; i < h->n_hdrs; i++)
        if (strcasecmp(h->hdrs[i].name, name) == 0)
            return h->hdrs[i].value;
    return NULL;
}

/* ---- chunked bodies ---- */

enum {
    CH_SIZE = 0, /* hex digits */
    CH_EXT,      /* ;chunk-ext up to CR */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER, /* start or middle of a trailer line */
    CH_TRAILER_LF,
    CH_END_LF, /* the empty line closing the trailer section */
    CH_DONE,
};

/* Caps on what a chunked body may carry besides its data. */
#define CHUNK_EXT_MAX 1024u
#define CHUNK_TRAILER_MAX 8192u

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int kw__http_chunk_step(kw__chunked_t *c, const char *in, size_t len, size_t *used, kw_str_t *data)
{
    *data = (kw_str_t){NULL, 0};
    size_t i = 0;
    for (; i < len; i++) {
        unsigned char b = (unsigned char)in[i];
        switch (c->state) {
        case CH_SIZE: {
            int d = hexval(b);
            if (d >= 0) {
                if (c->digits == 16)
                    goto bad;
                c->left = c->left << 4 | (uint64_t)d;
                c->digits++;
            } else if (c->digits && (b == ';' || b == ' ' || b == '\t')) {
                c->state = CH_EXT;
                c->aux = 1;
            } else if (c->digits && b == '\r') {
                c->state = CH_SIZE_LF;
            } else {
                goto bad;
            }
            break;
        }
        case CH_EXT:
            if (b == '\r')
                c->state = CH_SIZE_LF;
            else if (!is_value_char(b) || ++c->aux > CHUNK_EXT_MAX)
                goto bad;
            break;
        case CH_SIZE_LF:
            if (b != '\n')
                goto bad;
            c->state = c->left ? CH_DATA : CH_TRAILER;
            c->aux = 0;
            c->digits = 0;
            break;
        case CH_DATA: {
            size_t n = len - i;
            if ((uint64_t)n > c->left)
                n = (size_t)c->left;
            c->left -= n;
            if (c->left == 0)
                c->state = CH_DATA_CR;
            *data = (kw_str_t){in + i, n};
            *used = i + n;
            return KW__CHUNK_MORE;
        }
        case CH_DATA_CR:
            if (b != '\r')
                goto bad;
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (b != '\n')
                goto bad;
            c->state = CH_SIZE;
            c->digits = 0;
            c->left = 0;
            break;
        case CH_TRAILER:
            /* c->aux: bytes of trailer so far; c->digits: bytes on the current line. */
            if (b == '\r') {
                c->state = c->digits ? CH_TRAILER_LF : CH_END_LF;
            } else if (!is_value_char(b) || ++c->aux > CHUNK_TRAILER_MAX) {
                goto bad;
            } else {
                c->digits++;
            }
            break;
        case CH_TRAILER_LF:
            if (b != '\n')
                goto bad;
            c->state = CH_TRAILER;
            c->digits = 0;
            break;
        case CH_END_LF:
            if (b != '\n')
                goto bad;
            c->state = CH_DONE;
            *used = i + 1;
            return KW__CHUNK_DONE;
        default:
            goto bad;
        }
    }
    *used = i;
    return KW__CHUNK_MORE;
bad:
    *used = i;
    return KW__CHUNK_ERR;
}
