/*
 * cel/parse_int.h - what the CEL lexer (lex.c) and parser (parse.c) share: tokens and
 * the parser state. Internal to those two files.
 */
#ifndef KW_CEL_PARSE_INT_H
#define KW_CEL_PARSE_INT_H

#include "cel_int.h"

typedef enum {
    T_EOF = 0,
    T_IDENT,
    T_INT, /* magnitude in u; `neg_ok` when it is exactly 2^63 */
    T_UINT,
    T_DOUBLE,
    T_STRING, /* decoded in s */
    T_BYTES,
    T_PUNCT, /* p holds the operator text, 1 or 2 bytes */
} cel_tk_kind_t;

typedef struct cel_tok {
    cel_tk_kind_t kind;
    uint32_t l, c; /* position inside the expression */
    kw_str_t text;
    uint64_t u;
    double d;
    kw_str_t s;
    char p[3];
} cel_tok_t;

typedef struct cel_parser {
    const cel_parse_in_t *in;
    const char *src, *cur, *end, *line_start;
    uint32_t l;
    cel_tok_t t;
    uint32_t depth; /* recursion depth */
} cel_parser_t;

/* A KW_ESCHEMA diag at expression position l:c (translated into the schema). */
int kw__cel_perr(cel_parser_t *p, uint32_t l, uint32_t c, const char *fmt, ...) KW_PRINTF(4, 5);
/* Reads the next token into p->t. KW_OK, KW_ESCHEMA (bad literal or byte), KW_ENOMEM. */
KW_NODISCARD int kw__cel_lex(cel_parser_t *p);

#endif
