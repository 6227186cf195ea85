/*
 * cel/lex.c - the CEL lexer: identifiers, numbers (decimal and hex ints, `u` uints,
 * doubles), strings and bytes (quotes ' and ", triple-quoted, r/b prefixes, every CEL
 * escape, decoded here), operators, // comments. The text is a slice, not NUL-terminated:
 * every read is bounds-checked. Positions are 1-based line:col inside the expression;
 * kw__cel_pos maps them into the schema.
 */
#include "parse_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kw__cel_pos(const cel_parse_in_t *in, uint32_t l, uint32_t c, uint32_t *line, uint32_t *col)
{
    *line = in->line + l - 1;
    *col = l == 1 ? in->col + c - 1 : c;
}

int kw__cel_perr(cel_parser_t *p, uint32_t l, uint32_t c, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint32_t line, col;
    kw__cel_pos(p->in, l, c, &line, &col);
    return kw_diag_set(p->in->diag, KW_ESCHEMA, line, col, "caveat expression: %s", msg);
}

/* ---- lexer ---- */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
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

static void put_utf8(kw_buf_t *b, uint32_t cp)
{
    char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    kw_buf_append(b, o, n);
}

/* Reads a quoted literal starting at q (the quote); raw/bytes say the prefixes. */
static int lex_string(cel_parser_t *p, const char *q, bool raw, bool bytes, cel_tok_t *t)
{
    char quote = *q;
    bool triple = p->end - q >= 3 && q[1] == quote && q[2] == quote;
    const char *s = q + (triple ? 3 : 1);
    kw_buf_t b;
    kw_buf_init(&b);
    int rc = KW_OK;
    for (;;) {
        if (s >= p->end) {
            rc = kw__cel_perr(p, t->l, t->c, "this string is never closed");
            goto out;
        }
        char c = *s;
        if (triple && c == quote && p->end - s >= 3 && s[1] == quote && s[2] == quote) {
            s += 3;
            break;
        }
        if (!triple && c == quote) {
            s++;
            break;
        }
        if (!triple && (c == '\n' || c == '\r')) {
            rc = kw__cel_perr(p, t->l, t->c, "a newline inside a single-quoted string");
            goto out;
        }
        if (c == '\n') {
            p->l++;
            p->line_start = s + 1;
        }
        if (c != '\\' || raw) {
            kw_buf_append(&b, s, 1);
            s++;
            continue;
        }
        /* an escape */
        if (p->end - s < 2) {
            rc = kw__cel_perr(p, t->l, t->c, "this string is never closed");
            goto out;
        }
        char e = s[1];
        const char *simple = "abfnrtv\\'\"`?";
        const char *simple_out = "\a\b\f\n\r\t\v\\'\"`?";
        const char *hit = strchr(simple, e);
        if (hit && e) {
            kw_buf_append(&b, &simple_out[hit - simple], 1);
            s += 2;
            continue;
        }
        if (e == 'x' || e == 'X' || e == 'u' || e == 'U') {
            int nd = (e == 'x' || e == 'X') ? 2 : e == 'u' ? 4 : 8;
            if (p->end - s < 2 + nd) {
                rc = kw__cel_perr(p, t->l, t->c, "a \\%c escape needs %d hex digits", e, nd);
                goto out;
            }
            uint32_t v = 0;
            for (int i = 0; i < nd; i++) {
                int h = hexval(s[2 + i]);
                if (h < 0) {
                    rc = kw__cel_perr(p, t->l, t->c, "a \\%c escape needs %d hex digits", e, nd);
                    goto out;
                }
                v = v * 16 + (uint32_t)h;
            }
            s += 2 + nd;
            if (nd == 2 && bytes) {
                char byte = (char)v;
                kw_buf_append(&b, &byte, 1);
            } else {
                if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
                    rc = kw__cel_perr(p, t->l, t->c, "escape \\%c%x is not a Unicode scalar value",
                                      e, v);
                    goto out;
                }
                put_utf8(&b, v);
            }
            continue;
        }
        if (e >= '0' && e <= '3') {
            if (p->end - s < 4 || s[2] < '0' || s[2] > '7' || s[3] < '0' || s[3] > '7') {
                rc = kw__cel_perr(p, t->l, t->c, "an octal escape needs three octal digits");
                goto out;
            }
            uint32_t v = (uint32_t)((e - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
            if (bytes) {
                char byte = (char)v;
                kw_buf_append(&b, &byte, 1);
            } else {
                put_utf8(&b, v);
            }
            continue;
        }
        rc = kw__cel_perr(p, t->l, t->c, "invalid escape sequence '\\%c'", e);
        goto out;
    }
    if (b.failed) {
        rc = KW_ENOMEM;
        goto out;
    }
    if (!bytes && !kw_utf8_valid((kw_str_t){b.ptr ? b.ptr : "", b.len})) {
        rc = kw__cel_perr(p, t->l, t->c, "this string is not valid UTF-8");
        goto out;
    }
    t->kind = bytes ? T_BYTES : T_STRING;
    rc = kw_arena_str_copy(p->in->a, (kw_str_t){b.ptr, b.len}, &t->s);
    p->cur = s;
out:
    kw_buf_free(&b);
    return rc;
}

static int lex_number(cel_parser_t *p, cel_tok_t *t)
{
    const char *s = p->cur;
    if (s[0] == '0' && p->end - s > 2 && (s[1] == 'x' || s[1] == 'X') && hexval(s[2]) >= 0) {
        const char *e = s + 2;
        uint64_t v = 0;
        bool over = false;
        while (e < p->end && hexval(*e) >= 0) {
            if (v > (UINT64_MAX >> 4))
                over = true;
            v = v * 16 + (uint64_t)hexval(*e);
            e++;
        }
        t->u = v;
        t->kind = T_INT;
        if (e < p->end && (*e == 'u' || *e == 'U')) {
            t->kind = T_UINT;
            e++;
        }
        if (over)
            return kw__cel_perr(p, t->l, t->c, "this number does not fit in 64 bits");
        p->cur = e;
        return KW_OK;
    }
    const char *e = s;
    bool is_double = false;
    while (e < p->end && is_digit(*e))
        e++;
    if (e + 1 < p->end && *e == '.' && is_digit(e[1])) {
        is_double = true;
        e++;
        while (e < p->end && is_digit(*e))
            e++;
    }
    if (e < p->end && (*e == 'e' || *e == 'E')) {
        const char *x = e + 1;
        if (x < p->end && (*x == '+' || *x == '-'))
            x++;
        if (x < p->end && is_digit(*x)) {
            is_double = true;
            e = x;
            while (e < p->end && is_digit(*e))
                e++;
        }
    }
    char buf[400];
    size_t len = (size_t)(e - s);
    if (len >= sizeof(buf))
        return kw__cel_perr(p, t->l, t->c, "this number is too long");
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (is_double) {
        t->kind = T_DOUBLE;
        t->d = strtod(buf, NULL);
    } else {
        errno = 0;
        t->u = strtoull(buf, NULL, 10);
        if (errno == ERANGE)
            return kw__cel_perr(p, t->l, t->c, "this number does not fit in 64 bits");
        t->kind = T_INT;
        if (e < p->end && (*e == 'u' || *e == 'U')) {
            t->kind = T_UINT;
            e++;
        }
    }
    if (e < p->end && (is_alpha(*e) || is_digit(*e)))
        return kw__cel_perr(p, t->l, t->c, "a number followed by '%c'", *e);
    p->cur = e;
    return KW_OK;
}

int kw__cel_lex(cel_parser_t *p)
{
    cel_tok_t t;
    memset(&t, 0, sizeof(t));
    for (;;) {
        while (p->cur < p->end && (*p->cur == ' ' || *p->cur == '\t' || *p->cur == '\r' ||
                                   *p->cur == '\n' || *p->cur == '\f')) {
            if (*p->cur == '\n') {
                p->l++;
                p->line_start = p->cur + 1;
            }
            p->cur++;
        }
        if (p->end - p->cur >= 2 && p->cur[0] == '/' && p->cur[1] == '/') {
            while (p->cur < p->end && *p->cur != '\n')
                p->cur++;
            continue;
        }
        break;
    }
    t.l = p->l;
    t.c = (uint32_t)(p->cur - p->line_start) + 1;
    t.text.ptr = p->cur;
    int rc = KW_OK;
    if (p->cur >= p->end) {
        t.kind = T_EOF;
    } else {
        char c = *p->cur;
        size_t left = (size_t)(p->end - p->cur);
        if (is_alpha(c)) {
            /* string prefixes: r, b, rb, br (any case) */
            const char *s = p->cur;
            size_t n = 0;
            bool raw = false, bytes = false;
            bool r0 = c == 'r' || c == 'R', b0 = c == 'b' || c == 'B';
            if ((r0 || b0) && left >= 2 && (s[1] == '"' || s[1] == '\'')) {
                n = 1;
                raw = r0;
                bytes = b0;
            } else if ((r0 || b0) && left >= 3 && (s[2] == '"' || s[2] == '\'')) {
                bool r1 = s[1] == 'r' || s[1] == 'R', b1 = s[1] == 'b' || s[1] == 'B';
                if ((r0 && b1) || (b0 && r1)) {
                    n = 2;
                    raw = bytes = true;
                }
            }
            if (n > 0) {
                rc = lex_string(p, s + n, raw, bytes, &t);
            } else {
                const char *e = p->cur;
                while (e < p->end && (is_alpha(*e) || is_digit(*e)))
                    e++;
                t.kind = T_IDENT;
                p->cur = e;
            }
        } else if (is_digit(c) || (c == '.' && left > 1 && is_digit(p->cur[1]))) {
            rc = lex_number(p, &t);
        } else if (c == '"' || c == '\'') {
            rc = lex_string(p, p->cur, false, false, &t);
        } else {
            static const char *const two[] = {"<=", ">=", "==", "!=", "&&", "||"};
            t.kind = T_PUNCT;
            size_t n = 0;
            for (size_t i = 0; i < KW_ARRAY_LEN(two); i++)
                if (left >= 2 && p->cur[0] == two[i][0] && p->cur[1] == two[i][1])
                    n = 2;
            if (!n && strchr("()[]{}.,:?+-*/%!<>", c) && c)
                n = 1;
            if (!n) {
                if ((unsigned char)c >= 0x21 && (unsigned char)c <= 0x7e)
                    return kw__cel_perr(p, t.l, t.c, "unexpected character '%c'", c);
                return kw__cel_perr(p, t.l, t.c, "unexpected byte 0x%02x",
                                    (unsigned)(unsigned char)c);
            }
            memcpy(t.p, p->cur, n);
            p->cur += n;
        }
    }
    if (rc != KW_OK)
        return rc;
    t.text.len = (size_t)(p->cur - t.text.ptr);
    p->t = t;
    return KW_OK;
}
