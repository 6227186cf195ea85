/*
 * authz/schema_int.h - internals shared by the schema lexer, parser and compiler.
 *
 * Pipeline: schema_lex.c turns the text into tokens on demand (one token of
 * lookahead); schema_parse.c builds the IR of schema.h with names still
 * unresolved (indices are filled in later); schema_compile.c resolves names,
 * type-checks, builds the lookup tables and owns the public entry points.
 *
 * Ownership: every allocation made while compiling comes from one arena (the
 *   schema's), so an error anywhere is cleaned up by freeing that arena, and
 *   kw_schema_free is a single kw_arena_free.
 */
#ifndef KW_AUTHZ_SCHEMA_INT_H
#define KW_AUTHZ_SCHEMA_INT_H

#include "schema.h"

/* ---- tokens ---- */
typedef enum {
    KW__TK_EOF = 0,
    KW__TK_IDENT,    /* [A-Za-z0-9_]+ (a `/`-separated path is IDENT { SLASH IDENT }) */
    KW__TK_LBRACE,   /* { */
    KW__TK_RBRACE,   /* } */
    KW__TK_LPAREN,   /* ( */
    KW__TK_RPAREN,   /* ) */
    KW__TK_COLON,    /* : */
    KW__TK_PIPE,     /* | */
    KW__TK_HASH,     /* # */
    KW__TK_STAR,     /* * */
    KW__TK_EQ,       /* = */
    KW__TK_PLUS,     /* + */
    KW__TK_AMP,      /* & */
    KW__TK_MINUS,    /* - */
    KW__TK_ARROW,    /* -> */
    KW__TK_DOT,      /* . */
    KW__TK_ELLIPSIS, /* ... */
    KW__TK_COMMA,    /* , */
    KW__TK_LT,       /* < (caveat parameter types: list<int>) */
    KW__TK_GT,       /* > */
    KW__TK_SLASH,    /* / between the segments of a definition or caveat name */
    KW__TK_SEMI,     /* ; or a line break that ends a statement (`synthetic`) */
} kw__tok_kind_t;

typedef struct kw__tok {
    kw__tok_kind_t kind;
    kw_str_t text; /* the token's bytes in the source */
    uint32_t line, col;
    /* The last doc comment (slash-star-star) between the previous token and this one, verbatim
     * (len 0 if none). */
    kw_str_t doc;
    bool synthetic; /* SEMI: a line break, not a ';' written out */
} kw__tok_t;

typedef struct kw__lexer {
    const char *src; /* start of the text */
    const char *p;   /* next unread byte */
    const char *end; /* one past the last byte */
    const char *line_start;
    uint32_t line;
    /* The last token read was a name, '}', ')' or '*': the next line break ends the
     * statement (SpiceDB's synthetic semicolon, tag-kw-schema-semicolon). */
    bool semi_armed;
} kw__lexer_t;

void kw__schema_lex_init(kw__lexer_t *lx, kw_str_t text);
/* Reads the next token into *out. KW_OK, or KW_ESCHEMA (bad byte, unterminated
 * comment) with diag at the offending position. */
KW_NODISCARD int kw__schema_lex(kw__lexer_t *lx, kw__tok_t *out, kw_diag_t *diag);
/* Reads a caveat's CEL body. The lexer stands just after the body's '{' (`open`); the
 * bytes up to the matching '}' are the expression (braces inside CEL string literals and
 * comments do not count). On KW_OK *body is that text without surrounding whitespace,
 * line and col the position of its first byte, and the lexer stands after the '}'.
 * KW_ESCHEMA when the body is empty or never closed. */
KW_NODISCARD int kw__schema_lex_caveat_body(kw__lexer_t *lx, const kw__tok_t *open, kw_str_t *body,
                                            uint32_t *line, uint32_t *col, kw_diag_t *diag);
/* A short human description of a token for messages: `"viewer"`, `'{'`, `end of input`. */
void kw__schema_tok_describe(const kw__tok_t *t, char *buf, size_t cap);

/* ---- parse-time side data ---- */

/* An expression node as the parser allocates it: the public node plus the names the
 * compiler resolves. `e` must stay first (the compiler casts kw_expr_t * back). */
typedef struct kw__pexpr {
    kw_expr_t e;
    kw_str_t name; /* REF: the referenced name; ARROW/ALL: the tupleset relation */
    uint32_t target_line, target_col; /* ARROW/ALL: where the target name is */
} kw__pexpr_t;

/* Where an allowed subject type was written, and its unresolved names. */
typedef struct kw__allowed_src {
    kw_str_t type_name;
    kw_str_t rel_name; /* len 0 for a plain type or wildcard; "..." for `type#...` */
    uint32_t line, col, rel_line, rel_col;
    kw_str_t caveat_name; /* `with <caveat>`; len 0 when none */
    uint32_t caveat_line, caveat_col;
} kw__allowed_src_t;

/* Where a keyword was written (name errors point there, as SpiceDB's do). */
typedef struct kw__pos {
    uint32_t line, col;
} kw__pos_t;

/* Per type: per relation, the sources of its allowed list (parallel to rels[i].allowed). */
typedef struct kw__type_src {
    kw__allowed_src_t **allowed; /* [n_rels] */
    kw__pos_t *kw;               /* [n_rels]: its `relation` or `permission` keyword */
    uint32_t cap_rels;
    kw__pos_t def_kw; /* the `definition` keyword */
} kw__type_src_t;

typedef struct kw__parsed {
    kw_type_t *types;
    kw__type_src_t *srcs; /* [n_types] */
    uint32_t n_types, cap_types;
    /* Caveat definitions: params and expr point into the text; program is NULL until the
     * compiler compiles it (and then must be freed with the schema, or on failure). */
    kw_caveat_t *caveats;
    uint32_t n_caveats, cap_caveats;
    bool use_expiration;
} kw__parsed_t;

/* Parses `text` (which must stay alive as long as the result) into *out, allocating
 * from `a`. KW_OK, KW_ESCHEMA, KW_ELIMIT, KW_EUNSUPPORTED (`use` flags other than
 * expiration, composable schemas) or KW_ENOMEM. Caveat bodies are located, not compiled. */
KW_NODISCARD int kw__schema_parse(kw_str_t text, kw_arena_t *a, kw__parsed_t *out, kw_diag_t *diag);

/* Grows an arena-backed array so that it holds at least need elements of size esz. */
KW_NODISCARD int kw__schema_vec_reserve(kw_arena_t *a, void **items, uint32_t n, uint32_t *cap,
                                        uint32_t need, size_t esz);

#endif
