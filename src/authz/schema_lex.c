/*
 * authz/schema_lex.c - tokenizer for SpiceDB's schema language.
 *
 * Statements end as in SpiceDB (tag-kw-schema-semicolon): with a ';', or with a line
 * break ('\n' or '\r') that follows a name, a keyword, '}', ')' or '*'; such a break
 * becomes a SEMI token (`synthetic`), every other one is whitespace. So `relation a: user
 * |` may continue on the next line while `relation a: user` ends there, and `user#...` at
 * the end of a line does not end its statement (an ellipsis is not on the list). A line
 * break inside a block comment is part of the comment and ends nothing; comments and
 * blanks between a token and the break do not matter. Blanks are ' ' and '\t' only.
 * Comments: line comments (two slashes) and block comments (slash-star ... star-slash);
 * a block comment opening with two stars is a doc comment and is attached to the next token (the
 * parser gives it to the definition, relation or permission that token starts). A lone '/'
 * is a SLASH token: the parser joins `org/user` (blanks allowed around it, as in SpiceDB).
 * The text is a kw_str_t (not NUL-terminated): every read is bounds-checked, since the
 * fuzzer feeds arbitrary bytes.
 */
#include "schema_int.h"

#include <stdio.h>
#include <string.h>

void kw__schema_lex_init(kw__lexer_t *lx, kw_str_t text)
{
    lx->src = text.ptr ? text.ptr : "";
    lx->p = lx->src;
    lx->end = lx->src + text.len;
    lx->line_start = lx->src;
    lx->line = 1;
}

static uint32_t col_of(const kw__lexer_t *lx, const char *p)
{
    return (uint32_t)(p - lx->line_start) + 1;
}

static bool is_ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static void newline(kw__lexer_t *lx, const char *after)
{
    lx->line++;
    lx->line_start = after;
}

/* Skips blanks and comments; records the last doc comment seen in *doc. Stops at a line
 * break that ends a statement (the lexer is armed), leaving it unread. */
static int skip_trivia(kw__lexer_t *lx, kw_str_t *doc, kw_diag_t *diag)
{
    while (lx->p < lx->end) {
        char c = *lx->p;
        if (c == '\n' || c == '\r') {
            if (lx->semi_armed)
                break;
            lx->p++;
            if (c == '\n')
                newline(lx, lx->p);
        } else if (c == ' ' || c == '\t') {
            lx->p++;
        } else if (c == '/' && lx->end - lx->p >= 2 && lx->p[1] == '/') {
            while (lx->p < lx->end && *lx->p != '\n' && *lx->p != '\r')
                lx->p++;
        } else if (c == '/' && lx->end - lx->p >= 2 && lx->p[1] == '*') {
            const char *start = lx->p;
            uint32_t line = lx->line, col = col_of(lx, start);
            lx->p += 2;
            bool closed = false;
            while (lx->p < lx->end) {
                if (*lx->p == '*' && lx->end - lx->p >= 2 && lx->p[1] == '/') {
                    lx->p += 2;
                    closed = true;
                    break;
                }
                if (*lx->p == '\n')
                    newline(lx, lx->p + 1);
                lx->p++;
            }
            if (!closed)
                return kw_diag_set(diag, KW_ESCHEMA, line, col,
                                   "this comment is never closed (missing \"*/\")");
            /* Two stars open a doc comment; the empty comment (slash-star-star-slash) is not one.
             */
            size_t len = (size_t)(lx->p - start);
            if (len >= 5 && start[2] == '*') {
                doc->ptr = start;
                doc->len = len;
            }
        } else {
            break;
        }
    }
    return KW_OK;
}

int kw__schema_lex(kw__lexer_t *lx, kw__tok_t *out, kw_diag_t *diag)
{
    kw_str_t doc = {NULL, 0};
    int rc = skip_trivia(lx, &doc, diag);
    if (rc != KW_OK)
        return rc;
    kw__tok_t t;
    memset(&t, 0, sizeof(t));
    t.doc = doc;
    t.line = lx->line;
    t.col = col_of(lx, lx->p);
    t.text.ptr = lx->p;
    if (lx->p >= lx->end) {
        t.kind = KW__TK_EOF;
        *out = t;
        return KW_OK;
    }
    if (*lx->p == '\n' || *lx->p == '\r') {
        /* the statement ends at this line break (skip_trivia stopped here) */
        t.kind = KW__TK_SEMI;
        t.synthetic = true;
        t.text.len = 1;
        lx->p++;
        if (t.text.ptr[0] == '\n')
            newline(lx, lx->p);
        lx->semi_armed = false;
        *out = t;
        return KW_OK;
    }
    const char *p = lx->p;
    char c = *p;
    size_t left = (size_t)(lx->end - p);
    size_t n = 1;
    if (is_ident_char(c)) {
        t.kind = KW__TK_IDENT;
        n = 0;
        while (n < left && is_ident_char(p[n]))
            n++;
    } else {
        switch (c) {
        case '{':
            t.kind = KW__TK_LBRACE;
            break;
        case '}':
            t.kind = KW__TK_RBRACE;
            break;
        case '(':
            t.kind = KW__TK_LPAREN;
            break;
        case ')':
            t.kind = KW__TK_RPAREN;
            break;
        case ':':
            t.kind = KW__TK_COLON;
            break;
        case '|':
            t.kind = KW__TK_PIPE;
            break;
        case '#':
            t.kind = KW__TK_HASH;
            break;
        case '*':
            t.kind = KW__TK_STAR;
            break;
        case '=':
            t.kind = KW__TK_EQ;
            break;
        case '+':
            t.kind = KW__TK_PLUS;
            break;
        case '&':
            t.kind = KW__TK_AMP;
            break;
        case ',':
            t.kind = KW__TK_COMMA;
            break;
        case '<':
            t.kind = KW__TK_LT;
            break;
        case '>':
            t.kind = KW__TK_GT;
            break;
        case ';':
            t.kind = KW__TK_SEMI;
            break;
        case '/': /* not a comment: skip_trivia took those */
            t.kind = KW__TK_SLASH;
            break;
        case '-':
            if (left >= 2 && p[1] == '>') {
                t.kind = KW__TK_ARROW;
                n = 2;
            } else {
                t.kind = KW__TK_MINUS;
            }
            break;
        case '.':
            if (left >= 3 && p[1] == '.' && p[2] == '.') {
                t.kind = KW__TK_ELLIPSIS;
                n = 3;
            } else {
                t.kind = KW__TK_DOT;
            }
            break;
        default:
            if ((unsigned char)c >= 0x21 && (unsigned char)c <= 0x7e)
                return kw_diag_set(diag, KW_ESCHEMA, t.line, t.col, "unexpected character '%c'", c);
            return kw_diag_set(diag, KW_ESCHEMA, t.line, t.col, "unexpected byte 0x%02x",
                               (unsigned)(unsigned char)c);
        }
    }
    t.text.len = n;
    lx->p += n;
    lx->semi_armed = t.kind == KW__TK_IDENT || t.kind == KW__TK_RBRACE || t.kind == KW__TK_RPAREN ||
                     t.kind == KW__TK_STAR;
    *out = t;
    return KW_OK;
}

/* Skips a string literal in a caveat body the way SpiceDB's schema lexer does (the
 * body's tokens pass through it before CEL sees the text): a quote runs to the next same
 * quote on the same line, with no escapes; three double quotes run to the next three, across
 * lines; and three single quotes also run to the next three double quotes (SpiceDB's lexer
 * ends them there). Returns the byte after the literal, or NULL when it never ends. */
static const char *skip_caveat_string(kw__lexer_t *lx, const char *p)
{
    bool triple = lx->end - p >= 3 && p[1] == p[0] && p[2] == p[0];
    char q = triple ? '"' : p[0];
    p += triple ? 3 : 1;
    while (p < lx->end) {
        if (triple && lx->end - p >= 3 && p[0] == '"' && p[1] == '"' && p[2] == '"')
            return p + 3;
        if (!triple && *p == q)
            return p + 1;
        if (*p == '\n' || *p == '\r') {
            if (!triple)
                return NULL;
            if (*p == '\n')
                newline(lx, p + 1);
        }
        p++;
    }
    return NULL;
}

int kw__schema_lex_caveat_body(kw__lexer_t *lx, const kw__tok_t *open, kw_str_t *body,
                               uint32_t *line, uint32_t *col, kw_diag_t *diag)
{
    const char *p = lx->p;
    const char *first = NULL, *last = NULL;
    uint32_t first_line = 0, first_col = 0;
    int depth = 1;
    while (p < lx->end) {
        char c = *p;
        if (c == '\n') {
            newline(lx, p + 1);
            p++;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r') {
            p++;
            continue;
        }
        if (c == '\f' || c == '\v') /* SpiceDB's lexer knows no other blanks */
            return kw_diag_set(diag, KW_ESCHEMA, lx->line, col_of(lx, p), "unexpected byte 0x%02x",
                               (unsigned)(unsigned char)c);
        if (c == '}' && --depth == 0)
            break;
        if (c == '/' && lx->end - p >= 2 && p[1] == '/') {
            /* a comment neither starts nor ends the expression's text (SpiceDB's parser
             * skips it), so a body of comments alone is a missing expression */
            while (p < lx->end && *p != '\n')
                p++;
            continue;
        }
        if (!first) {
            first = p;
            first_line = lx->line;
            first_col = col_of(lx, p);
        }
        if (c == '{') {
            depth++;
        } else if (c == '"' || c == '\'') {
            uint32_t sline = lx->line, scol = col_of(lx, p);
            const char *after = skip_caveat_string(lx, p);
            if (!after)
                return kw_diag_set(diag, KW_ESCHEMA, sline, scol,
                                   "unterminated string in the caveat expression (as SpiceDB "
                                   "reads a caveat body: no escaped quotes, and a string in "
                                   "triple quotes ends at three double quotes)");
            last = after - 1;
            p = after;
            continue;
        }
        last = p;
        p++;
    }
    if (p >= lx->end)
        return kw_diag_set(diag, KW_ESCHEMA, open->line, open->col,
                           "this caveat's expression is never closed (missing '}')");
    if (!first)
        return kw_diag_set(diag, KW_ESCHEMA, open->line, open->col, "missing caveat expression");
    body->ptr = first;
    body->len = (size_t)(last - first) + 1;
    *line = first_line;
    *col = first_col;
    lx->p = p + 1;         /* past the '}' */
    lx->semi_armed = true; /* a '}' was the last token */
    return KW_OK;
}

static const char *punct_text(kw__tok_kind_t k)
{
    switch (k) {
    case KW__TK_LBRACE:
        return "{";
    case KW__TK_RBRACE:
        return "}";
    case KW__TK_LPAREN:
        return "(";
    case KW__TK_RPAREN:
        return ")";
    case KW__TK_COLON:
        return ":";
    case KW__TK_PIPE:
        return "|";
    case KW__TK_HASH:
        return "#";
    case KW__TK_STAR:
        return "*";
    case KW__TK_EQ:
        return "=";
    case KW__TK_PLUS:
        return "+";
    case KW__TK_AMP:
        return "&";
    case KW__TK_MINUS:
        return "-";
    case KW__TK_ARROW:
        return "->";
    case KW__TK_DOT:
        return ".";
    case KW__TK_ELLIPSIS:
        return "...";
    case KW__TK_COMMA:
        return ",";
    case KW__TK_LT:
        return "<";
    case KW__TK_GT:
        return ">";
    case KW__TK_SLASH:
        return "/";
    case KW__TK_SEMI:
        return ";";
    case KW__TK_EOF:
    case KW__TK_IDENT:
        break;
    }
    return "?";
}

void kw__schema_tok_describe(const kw__tok_t *t, char *buf, size_t cap)
{
    if (t->kind == KW__TK_EOF)
        snprintf(buf, cap, "the end of the schema");
    else if (t->kind == KW__TK_SEMI && t->synthetic)
        snprintf(buf, cap, "the end of the line");
    else if (t->kind == KW__TK_IDENT)
        snprintf(buf, cap, "\"%.*s\"", (int)(t->text.len > 64 ? 64 : t->text.len), t->text.ptr);
    else
        snprintf(buf, cap, "'%s'", punct_text(t->kind));
}
