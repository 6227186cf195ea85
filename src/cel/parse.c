/*
 * cel/parse.c - lexer and recursive-descent parser for CEL expressions.
 *
 * Grammar (the CEL spec's, with SpiceDB's macros):
 *   expr    := or [ "?" or ":" expr ]
 *   or      := and { "||" and }          (one n-ary node per chain)
 *   and     := rel { "&&" rel }
 *   rel     := add { ("<"|"<="|">"|">="|"=="|"!="|"in") add }
 *   add     := mul { ("+"|"-") mul }
 *   mul     := unary { ("*"|"/"|"%") unary }
 *   unary   := member | "!"+ member | "-"+ member
 *   member  := primary { "." IDENT [ "(" args ")" ] | "[" expr "]" }
 *   primary := IDENT [ "(" args ")" ] | "(" expr ")" | "[" args [","] "]"
 *            | "{" [ expr ":" expr { "," expr ":" expr } ] [","] "}" | literal
 * Macros: has(a.f), r.all(x, p), r.exists(x, p), r.exists_one(x, p), r.map(x, t),
 * r.map(x, p, t), r.filter(x, p). Message construction (`T{...}`) and leading-dot names
 * have no use in a caveat and are refused.
 *
 * Bounds: the recursion of the parser and the height of every tree it builds are at most
 * KW_CEL_MAX_DEPTH (left-nested chains such as a+b+c+... included), so the checker and the
 * evaluator may recurse freely; the text is at most KW_CEL_MAX_EXPR_BYTES.
 */
#include "cel_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    T_EOF = 0,
    T_IDENT,
    T_INT, /* magnitude in u; `neg_ok` when it is exactly 2^63 */
    T_UINT,
    T_DOUBLE,
    T_STRING, /* decoded in s */
    T_BYTES,
    T_PUNCT, /* p holds the operator text, 1 or 2 bytes */
} tk_kind_t;

typedef struct tok {
    tk_kind_t kind;
    uint32_t l, c; /* position inside the expression */
    kw_str_t text;
    uint64_t u;
    double d;
    kw_str_t s;
    char p[3];
} tok_t;

typedef struct parser {
    const cel_parse_in_t *in;
    const char *src, *cur, *end, *line_start;
    uint32_t l;
    tok_t t;
    uint32_t depth; /* recursion depth */
} parser_t;

void kw__cel_pos(const cel_parse_in_t *in, uint32_t l, uint32_t c, uint32_t *line, uint32_t *col)
{
    *line = in->line + l - 1;
    *col = l == 1 ? in->col + c - 1 : c;
}

static int perr(parser_t *p, uint32_t l, uint32_t c, const char *fmt, ...) KW_PRINTF(4, 5);
static int perr(parser_t *p, uint32_t l, uint32_t c, const char *fmt, ...)
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
static int lex_string(parser_t *p, const char *q, bool raw, bool bytes, tok_t *t)
{
    char quote = *q;
    bool triple = p->end - q >= 3 && q[1] == quote && q[2] == quote;
    const char *s = q + (triple ? 3 : 1);
    kw_buf_t b;
    kw_buf_init(&b);
    int rc = KW_OK;
    for (;;) {
        if (s >= p->end) {
            rc = perr(p, t->l, t->c, "this string is never closed");
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
            rc = perr(p, t->l, t->c, "a newline inside a single-quoted string");
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
            rc = perr(p, t->l, t->c, "this string is never closed");
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
                rc = perr(p, t->l, t->c, "a \\%c escape needs %d hex digits", e, nd);
                goto out;
            }
            uint32_t v = 0;
            for (int i = 0; i < nd; i++) {
                int h = hexval(s[2 + i]);
                if (h < 0) {
                    rc = perr(p, t->l, t->c, "a \\%c escape needs %d hex digits", e, nd);
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
                    rc = perr(p, t->l, t->c, "escape \\%c%x is not a Unicode scalar value", e, v);
                    goto out;
                }
                put_utf8(&b, v);
            }
            continue;
        }
        if (e >= '0' && e <= '3') {
            if (p->end - s < 4 || s[2] < '0' || s[2] > '7' || s[3] < '0' || s[3] > '7') {
                rc = perr(p, t->l, t->c, "an octal escape needs three octal digits");
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
        rc = perr(p, t->l, t->c, "invalid escape sequence '\\%c'", e);
        goto out;
    }
    if (b.failed) {
        rc = KW_ENOMEM;
        goto out;
    }
    if (!bytes && !kw_utf8_valid((kw_str_t){b.ptr ? b.ptr : "", b.len})) {
        rc = perr(p, t->l, t->c, "this string is not valid UTF-8");
        goto out;
    }
    t->kind = bytes ? T_BYTES : T_STRING;
    rc = kw_arena_str_copy(p->in->a, (kw_str_t){b.ptr, b.len}, &t->s);
    p->cur = s;
out:
    kw_buf_free(&b);
    return rc;
}

static int lex_number(parser_t *p, tok_t *t)
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
            return perr(p, t->l, t->c, "this number does not fit in 64 bits");
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
        return perr(p, t->l, t->c, "this number is too long");
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (is_double) {
        t->kind = T_DOUBLE;
        t->d = strtod(buf, NULL);
    } else {
        errno = 0;
        t->u = strtoull(buf, NULL, 10);
        if (errno == ERANGE)
            return perr(p, t->l, t->c, "this number does not fit in 64 bits");
        t->kind = T_INT;
        if (e < p->end && (*e == 'u' || *e == 'U')) {
            t->kind = T_UINT;
            e++;
        }
    }
    if (e < p->end && (is_alpha(*e) || is_digit(*e)))
        return perr(p, t->l, t->c, "a number followed by '%c'", *e);
    p->cur = e;
    return KW_OK;
}

static int lex(parser_t *p)
{
    tok_t t;
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
                    return perr(p, t.l, t.c, "unexpected character '%c'", c);
                return perr(p, t.l, t.c, "unexpected byte 0x%02x", (unsigned)(unsigned char)c);
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

static bool is_punct(const parser_t *p, const char *s)
{
    return p->t.kind == T_PUNCT && strcmp(p->t.p, s) == 0;
}

static bool is_ident(const parser_t *p, const char *s)
{
    return p->t.kind == T_IDENT && kw_str_eq_c(p->t.text, s);
}

static int unexpected(parser_t *p, const char *what)
{
    if (p->t.kind == T_EOF)
        return perr(p, p->t.l, p->t.c, "expected %s, but the expression ended", what);
    return perr(p, p->t.l, p->t.c, "expected %s, but found '%.*s'", what,
                (int)(p->t.text.len > 40 ? 40 : p->t.text.len), p->t.text.ptr);
}

static int expect(parser_t *p, const char *s)
{
    if (!is_punct(p, s)) {
        char what[8];
        snprintf(what, sizeof(what), "'%s'", s);
        return unexpected(p, what);
    }
    return lex(p);
}

/* ---- nodes ---- */

static cel_node_t *node(parser_t *p, cel_node_kind_t kind, uint32_t l, uint32_t c)
{
    cel_node_t *n = kw_arena_alloc(p->in->a, sizeof(*n));
    if (!n)
        return NULL;
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    kw__cel_pos(p->in, l, c, &n->line, &n->col);
    n->depth = 1;
    return n;
}

/* Records child's height in parent; KW_ESCHEMA past the cap. */
static int adopt(parser_t *p, cel_node_t *parent, const cel_node_t *child)
{
    if (child && child->depth + 1 > parent->depth)
        parent->depth = child->depth + 1;
    if (parent->depth > KW_CEL_MAX_DEPTH)
        return kw_diag_set(p->in->diag, KW_ESCHEMA, parent->line, parent->col,
                           "caveat expression: nested more than %d deep", KW_CEL_MAX_DEPTH);
    return KW_OK;
}

static int set_children(parser_t *p, cel_node_t *n, cel_node_t *a, cel_node_t *b, cel_node_t *c)
{
    n->a = a;
    n->b = b;
    n->c = c;
    int rc = adopt(p, n, a);
    if (rc == KW_OK)
        rc = adopt(p, n, b);
    if (rc == KW_OK)
        rc = adopt(p, n, c);
    return rc;
}

/* A growable node list in the arena. */
typedef struct nlist {
    cel_node_t **items;
    uint32_t n, cap;
} nlist_t;

static int nlist_push(parser_t *p, nlist_t *l, cel_node_t *x)
{
    if (l->n == l->cap) {
        uint32_t ncap = l->cap ? l->cap * 2 : 4;
        cel_node_t **ni = kw_arena_alloc(p->in->a, ncap * sizeof(*ni));
        if (!ni)
            return KW_ENOMEM;
        if (l->n)
            memcpy(ni, l->items, l->n * sizeof(*ni));
        l->items = ni;
        l->cap = ncap;
    }
    l->items[l->n++] = x;
    return KW_OK;
}

static int set_args(parser_t *p, cel_node_t *n, const nlist_t *l)
{
    n->args = l->items;
    n->n_args = l->n;
    for (uint32_t i = 0; i < l->n; i++) {
        int rc = adopt(p, n, l->items[i]);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

static int parse_expr(parser_t *p, cel_node_t **out);

static const char *const reserved[] = {
    "as",  "break", "const",   "continue",  "else",   "for", "function", "if",    "import",
    "let", "loop",  "package", "namespace", "return", "var", "void",     "while",
};

static int check_ident(parser_t *p)
{
    for (size_t i = 0; i < KW_ARRAY_LEN(reserved); i++)
        if (kw_str_eq_c(p->t.text, reserved[i]))
            return perr(p, p->t.l, p->t.c, "'%s' is a reserved word", reserved[i]);
    return KW_OK;
}

/* `(` args `)`, the opening paren already current. */
static int parse_args(parser_t *p, nlist_t *l, const char *close)
{
    int rc = lex(p);
    if (rc != KW_OK)
        return rc;
    while (!is_punct(p, close)) {
        cel_node_t *x = NULL;
        rc = parse_expr(p, &x);
        if (rc == KW_OK)
            rc = nlist_push(p, l, x);
        if (rc != KW_OK)
            return rc;
        if (is_punct(p, ",")) {
            rc = lex(p);
            if (rc != KW_OK)
                return rc;
            if (close[0] == ')' && is_punct(p, close))
                return unexpected(p, "an argument");
            continue;
        }
        if (!is_punct(p, close)) {
            char what[16];
            snprintf(what, sizeof(what), "',' or '%s'", close);
            return unexpected(p, what);
        }
    }
    return lex(p);
}

/* Builds a macro node from a call `target.name(args)` when name is a macro. */
static int make_macro(parser_t *p, cel_node_t *target, kw_str_t name, nlist_t *args, uint32_t l,
                      uint32_t c, cel_node_t **out)
{
    static const struct {
        const char *name;
        cel_macro_t m;
        uint32_t min_args, max_args;
    } macros[] = {
        {"all", M_ALL, 2, 2},
        {"exists", M_EXISTS, 2, 2},
        {"exists_one", M_EXISTS_ONE, 2, 2},
        {"existsOne", M_EXISTS_ONE, 2, 2},
        {"map", M_MAP, 2, 3},
        {"filter", M_FILTER, 2, 2},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(macros); i++) {
        if (!kw_str_eq_c(name, macros[i].name))
            continue;
        if (args->n < macros[i].min_args || args->n > macros[i].max_args)
            return perr(p, l, c, "%s() takes %u or %u arguments", macros[i].name,
                        macros[i].min_args, macros[i].max_args);
        cel_node_t *var = args->items[0];
        if (var->kind != N_IDENT)
            return kw_diag_set(p->in->diag, KW_ESCHEMA, var->line, var->col,
                               "caveat expression: %s()'s first argument must be a variable "
                               "name",
                               macros[i].name);
        cel_node_t *n = node(p, N_COMP, l, c);
        if (!n)
            return KW_ENOMEM;
        n->op = (uint8_t)macros[i].m;
        n->name = var->name;
        int rc;
        if (macros[i].m == M_MAP && args->n == 2)
            rc = set_children(p, n, target, NULL, args->items[1]);
        else if (macros[i].m == M_MAP)
            rc = set_children(p, n, target, args->items[1], args->items[2]);
        else
            rc = set_children(p, n, target, args->items[1], NULL);
        if (rc != KW_OK)
            return rc;
        *out = n;
        return KW_OK;
    }
    *out = NULL;
    return KW_OK;
}

static int parse_primary(parser_t *p, cel_node_t **out)
{
    tok_t t = p->t;
    int rc;
    cel_node_t *n = NULL;
    switch (t.kind) {
    case T_INT:
        if (t.u > INT64_MAX)
            return perr(p, t.l, t.c, "this integer does not fit in a 64-bit int");
        n = node(p, N_LIT, t.l, t.c);
        if (!n)
            return KW_ENOMEM;
        n->val.k = CK_INT;
        n->val.v.i = (int64_t)t.u;
        break;
    case T_UINT:
        n = node(p, N_LIT, t.l, t.c);
        if (!n)
            return KW_ENOMEM;
        n->val.k = CK_UINT;
        n->val.v.u = t.u;
        break;
    case T_DOUBLE:
        n = node(p, N_LIT, t.l, t.c);
        if (!n)
            return KW_ENOMEM;
        n->val.k = CK_DOUBLE;
        n->val.v.d = t.d;
        break;
    case T_STRING:
    case T_BYTES:
        n = node(p, N_LIT, t.l, t.c);
        if (!n)
            return KW_ENOMEM;
        n->val.k = t.kind == T_STRING ? CK_STRING : CK_BYTES;
        n->val.v.s = t.s;
        break;
    case T_IDENT: {
        if (is_ident(p, "true") || is_ident(p, "false") || is_ident(p, "null")) {
            n = node(p, N_LIT, t.l, t.c);
            if (!n)
                return KW_ENOMEM;
            if (is_ident(p, "null")) {
                n->val.k = CK_NULL;
            } else {
                n->val.k = CK_BOOL;
                n->val.v.b = is_ident(p, "true");
            }
            break;
        }
        if (is_ident(p, "in"))
            return perr(p, t.l, t.c, "'in' is an operator, not a name");
        if ((rc = check_ident(p)) != KW_OK)
            return rc;
        if ((rc = lex(p)) != KW_OK)
            return rc;
        if (is_punct(p, "(")) {
            nlist_t args = {0};
            if ((rc = parse_args(p, &args, ")")) != KW_OK)
                return rc;
            if (kw_str_eq_c(t.text, "has")) {
                if (args.n != 1 || args.items[0]->kind != N_SELECT)
                    return perr(p, t.l, t.c,
                                "has() takes one field selection, such as has(m.field)");
                n = node(p, N_HAS, t.l, t.c);
                if (!n)
                    return KW_ENOMEM;
                n->name = args.items[0]->name;
                if ((rc = set_children(p, n, args.items[0]->a, NULL, NULL)) != KW_OK)
                    return rc;
                *out = n;
                return KW_OK;
            }
            n = node(p, N_CALL, t.l, t.c);
            if (!n)
                return KW_ENOMEM;
            n->name = t.text;
            if ((rc = set_args(p, n, &args)) != KW_OK)
                return rc;
            *out = n;
            return KW_OK;
        }
        if (is_punct(p, "{"))
            return perr(p, t.l, t.c, "message construction is not available in caveats");
        n = node(p, N_IDENT, t.l, t.c);
        if (!n)
            return KW_ENOMEM;
        n->name = t.text;
        *out = n;
        return KW_OK;
    }
    case T_PUNCT:
        if (is_punct(p, "(")) {
            if ((rc = lex(p)) != KW_OK || (rc = parse_expr(p, &n)) != KW_OK ||
                (rc = expect(p, ")")) != KW_OK)
                return rc;
            *out = n;
            return KW_OK;
        }
        if (is_punct(p, "[")) {
            nlist_t items = {0};
            if ((rc = parse_args(p, &items, "]")) != KW_OK)
                return rc;
            n = node(p, N_LIST, t.l, t.c);
            if (!n)
                return KW_ENOMEM;
            if ((rc = set_args(p, n, &items)) != KW_OK)
                return rc;
            *out = n;
            return KW_OK;
        }
        if (is_punct(p, "{")) {
            nlist_t kv = {0};
            if ((rc = lex(p)) != KW_OK)
                return rc;
            while (!is_punct(p, "}")) {
                cel_node_t *k = NULL, *v = NULL;
                if ((rc = parse_expr(p, &k)) != KW_OK || (rc = expect(p, ":")) != KW_OK ||
                    (rc = parse_expr(p, &v)) != KW_OK || (rc = nlist_push(p, &kv, k)) != KW_OK ||
                    (rc = nlist_push(p, &kv, v)) != KW_OK)
                    return rc;
                if (is_punct(p, ",")) {
                    if ((rc = lex(p)) != KW_OK)
                        return rc;
                } else if (!is_punct(p, "}")) {
                    return unexpected(p, "',' or '}'");
                }
            }
            if ((rc = lex(p)) != KW_OK)
                return rc;
            n = node(p, N_MAP, t.l, t.c);
            if (!n)
                return KW_ENOMEM;
            if ((rc = set_args(p, n, &kv)) != KW_OK)
                return rc;
            *out = n;
            return KW_OK;
        }
        if (is_punct(p, "."))
            return perr(p, t.l, t.c, "a leading '.' names a package, which caveats do not have");
        return unexpected(p, "an expression");
    case T_EOF:
        return unexpected(p, "an expression");
    }
    if ((rc = lex(p)) != KW_OK)
        return rc;
    *out = n;
    return KW_OK;
}

static int parse_member(parser_t *p, cel_node_t **out)
{
    cel_node_t *n = NULL;
    int rc = parse_primary(p, &n);
    if (rc != KW_OK)
        return rc;
    for (;;) {
        tok_t t = p->t;
        if (is_punct(p, ".")) {
            if ((rc = lex(p)) != KW_OK)
                return rc;
            if (p->t.kind != T_IDENT)
                return unexpected(p, "a field or method name");
            tok_t name = p->t;
            if ((rc = lex(p)) != KW_OK)
                return rc;
            if (is_punct(p, "(")) {
                nlist_t args = {0};
                if ((rc = parse_args(p, &args, ")")) != KW_OK)
                    return rc;
                cel_node_t *m = NULL;
                if ((rc = make_macro(p, n, name.text, &args, name.l, name.c, &m)) != KW_OK)
                    return rc;
                if (!m) {
                    m = node(p, N_CALL, name.l, name.c);
                    if (!m)
                        return KW_ENOMEM;
                    m->name = name.text;
                    if ((rc = set_children(p, m, n, NULL, NULL)) != KW_OK ||
                        (rc = set_args(p, m, &args)) != KW_OK)
                        return rc;
                }
                n = m;
            } else {
                cel_node_t *s = node(p, N_SELECT, name.l, name.c);
                if (!s)
                    return KW_ENOMEM;
                s->name = name.text;
                if ((rc = set_children(p, s, n, NULL, NULL)) != KW_OK)
                    return rc;
                n = s;
            }
        } else if (is_punct(p, "[")) {
            cel_node_t *idx = NULL;
            if ((rc = lex(p)) != KW_OK || (rc = parse_expr(p, &idx)) != KW_OK ||
                (rc = expect(p, "]")) != KW_OK)
                return rc;
            cel_node_t *x = node(p, N_INDEX, t.l, t.c);
            if (!x)
                return KW_ENOMEM;
            if ((rc = set_children(p, x, n, idx, NULL)) != KW_OK)
                return rc;
            n = x;
        } else {
            break;
        }
    }
    *out = n;
    return KW_OK;
}

static int parse_unary(parser_t *p, cel_node_t **out)
{
    tok_t t = p->t;
    int rc;
    if (is_punct(p, "!") || is_punct(p, "-")) {
        bool neg = is_punct(p, "-");
        if (++p->depth > KW_CEL_MAX_DEPTH)
            return perr(p, t.l, t.c, "nested more than %d deep", KW_CEL_MAX_DEPTH);
        if ((rc = lex(p)) != KW_OK)
            return rc;
        /* -9223372036854775808 is a literal, not the negation of an overflowing one. */
        if (neg && p->t.kind == T_INT) {
            tok_t num = p->t;
            if (num.u > (uint64_t)INT64_MAX + 1)
                return perr(p, num.l, num.c, "this integer does not fit in a 64-bit int");
            if ((rc = lex(p)) != KW_OK)
                return rc;
            cel_node_t *n = node(p, N_LIT, t.l, t.c);
            if (!n)
                return KW_ENOMEM;
            n->val.k = CK_INT;
            n->val.v.i = num.u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)num.u;
            p->depth--;
            /* A member access on the literal still applies: -1.foo is an error later. */
            *out = n;
            return KW_OK;
        }
        cel_node_t *operand = NULL;
        if ((rc = parse_unary(p, &operand)) != KW_OK)
            return rc;
        p->depth--;
        cel_node_t *n = node(p, neg ? N_NEG : N_NOT, t.l, t.c);
        if (!n)
            return KW_ENOMEM;
        if ((rc = set_children(p, n, operand, NULL, NULL)) != KW_OK)
            return rc;
        *out = n;
        return KW_OK;
    }
    return parse_member(p, out);
}

static int binop(parser_t *p, cel_op_t op, const tok_t *t, cel_node_t *l, cel_node_t *r,
                 cel_node_t **out)
{
    cel_node_t *n = node(p, N_BINOP, t->l, t->c);
    if (!n)
        return KW_ENOMEM;
    n->op = (uint8_t)op;
    int rc = set_children(p, n, l, r, NULL);
    if (rc == KW_OK)
        *out = n;
    return rc;
}

static int parse_mul(parser_t *p, cel_node_t **out)
{
    cel_node_t *l = NULL;
    int rc = parse_unary(p, &l);
    while (rc == KW_OK && (is_punct(p, "*") || is_punct(p, "/") || is_punct(p, "%"))) {
        tok_t t = p->t;
        cel_op_t op = t.p[0] == '*' ? OP_MUL : t.p[0] == '/' ? OP_DIV : OP_MOD;
        cel_node_t *r = NULL;
        if ((rc = lex(p)) == KW_OK && (rc = parse_unary(p, &r)) == KW_OK)
            rc = binop(p, op, &t, l, r, &l);
    }
    if (rc == KW_OK)
        *out = l;
    return rc;
}

static int parse_add(parser_t *p, cel_node_t **out)
{
    cel_node_t *l = NULL;
    int rc = parse_mul(p, &l);
    while (rc == KW_OK && (is_punct(p, "+") || is_punct(p, "-"))) {
        tok_t t = p->t;
        cel_node_t *r = NULL;
        if ((rc = lex(p)) == KW_OK && (rc = parse_mul(p, &r)) == KW_OK)
            rc = binop(p, t.p[0] == '+' ? OP_ADD : OP_SUB, &t, l, r, &l);
    }
    if (rc == KW_OK)
        *out = l;
    return rc;
}

static int rel_op(const parser_t *p)
{
    static const struct {
        const char *s;
        cel_op_t op;
    } ops[] = {{"<", OP_LT},  {"<=", OP_LE}, {">", OP_GT},
               {">=", OP_GE}, {"==", OP_EQ}, {"!=", OP_NE}};
    for (size_t i = 0; i < KW_ARRAY_LEN(ops); i++)
        if (is_punct(p, ops[i].s))
            return ops[i].op;
    if (is_ident(p, "in"))
        return OP_IN;
    return 0;
}

static int parse_rel(parser_t *p, cel_node_t **out)
{
    cel_node_t *l = NULL;
    int rc = parse_add(p, &l);
    int op;
    while (rc == KW_OK && (op = rel_op(p)) != 0) {
        tok_t t = p->t;
        cel_node_t *r = NULL;
        if ((rc = lex(p)) == KW_OK && (rc = parse_add(p, &r)) == KW_OK)
            rc = binop(p, (cel_op_t)op, &t, l, r, &l);
    }
    if (rc == KW_OK)
        *out = l;
    return rc;
}

/* and := rel { "&&" rel }; or := and { "||" and }: one n-ary node per chain. */
static int parse_chain(parser_t *p, bool is_or, cel_node_t **out)
{
    cel_node_t *first = NULL;
    int rc = is_or ? parse_chain(p, false, &first) : parse_rel(p, &first);
    if (rc != KW_OK)
        return rc;
    const char *sym = is_or ? "||" : "&&";
    if (!is_punct(p, sym)) {
        *out = first;
        return KW_OK;
    }
    cel_node_t *n = node(p, is_or ? N_OR : N_AND, p->t.l, p->t.c);
    if (!n)
        return KW_ENOMEM;
    nlist_t terms = {0};
    if ((rc = nlist_push(p, &terms, first)) != KW_OK)
        return rc;
    while (is_punct(p, sym)) {
        cel_node_t *x = NULL;
        if ((rc = lex(p)) != KW_OK)
            return rc;
        rc = is_or ? parse_chain(p, false, &x) : parse_rel(p, &x);
        if (rc == KW_OK)
            rc = nlist_push(p, &terms, x);
        if (rc != KW_OK)
            return rc;
    }
    if ((rc = set_args(p, n, &terms)) != KW_OK)
        return rc;
    n->line = first->line;
    n->col = first->col;
    *out = n;
    return KW_OK;
}

static int parse_expr(parser_t *p, cel_node_t **out)
{
    tok_t start = p->t;
    if (++p->depth > KW_CEL_MAX_DEPTH)
        return perr(p, start.l, start.c, "nested more than %d deep", KW_CEL_MAX_DEPTH);
    cel_node_t *cond = NULL;
    int rc = parse_chain(p, true, &cond);
    if (rc == KW_OK && is_punct(p, "?")) {
        tok_t q = p->t;
        cel_node_t *yes = NULL, *no = NULL;
        if ((rc = lex(p)) != KW_OK || (rc = parse_chain(p, true, &yes)) != KW_OK ||
            (rc = expect(p, ":")) != KW_OK || (rc = parse_expr(p, &no)) != KW_OK)
            return rc;
        cel_node_t *n = node(p, N_COND, q.l, q.c);
        if (!n)
            return KW_ENOMEM;
        if ((rc = set_children(p, n, cond, yes, no)) != KW_OK)
            return rc;
        cond = n;
    }
    p->depth--;
    if (rc == KW_OK)
        *out = cond;
    return rc;
}

int kw__cel_parse(const cel_parse_in_t *in, cel_node_t **out)
{
    if (in->text.len > KW_CEL_MAX_EXPR_BYTES)
        return kw_diag_set(in->diag, KW_ESCHEMA, in->line, in->col,
                           "caveat expression: %zu bytes long; the limit is %u", in->text.len,
                           (unsigned)KW_CEL_MAX_EXPR_BYTES);
    parser_t p;
    memset(&p, 0, sizeof(p));
    p.in = in;
    p.src = in->text.ptr ? in->text.ptr : "";
    p.cur = p.src;
    p.end = p.src + in->text.len;
    p.line_start = p.src;
    p.l = 1;
    int rc = lex(&p);
    if (rc != KW_OK)
        return rc;
    if (p.t.kind == T_EOF)
        return perr(&p, p.t.l, p.t.c, "the caveat has no expression");
    cel_node_t *root = NULL;
    if ((rc = parse_expr(&p, &root)) != KW_OK)
        return rc;
    if (p.t.kind != T_EOF)
        return unexpected(&p, "the end of the expression");
    *out = root;
    return KW_OK;
}
