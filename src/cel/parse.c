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
#include "parse_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_punct(const cel_parser_t *p, const char *s)
{
    return p->t.kind == T_PUNCT && strcmp(p->t.p, s) == 0;
}

static bool is_ident(const cel_parser_t *p, const char *s)
{
    return p->t.kind == T_IDENT && kw_str_eq_c(p->t.text, s);
}

static int unexpected(cel_parser_t *p, const char *what)
{
    if (p->t.kind == T_EOF)
        return kw__cel_perr(p, p->t.l, p->t.c, "expected %s, but the expression ended", what);
    return kw__cel_perr(p, p->t.l, p->t.c, "expected %s, but found '%.*s'", what,
                        (int)(p->t.text.len > 40 ? 40 : p->t.text.len), p->t.text.ptr);
}

static int expect(cel_parser_t *p, const char *s)
{
    if (!is_punct(p, s)) {
        char what[8];
        snprintf(what, sizeof(what), "'%s'", s);
        return unexpected(p, what);
    }
    return kw__cel_lex(p);
}

/* ---- nodes ---- */

static cel_node_t *node(cel_parser_t *p, cel_node_kind_t kind, uint32_t l, uint32_t c)
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
static int adopt(cel_parser_t *p, cel_node_t *parent, const cel_node_t *child)
{
    if (child && child->depth + 1 > parent->depth)
        parent->depth = child->depth + 1;
    if (parent->depth > KW_CEL_MAX_DEPTH)
        return kw_diag_set(p->in->diag, KW_ESCHEMA, parent->line, parent->col,
                           "caveat expression: nested more than %d deep", KW_CEL_MAX_DEPTH);
    return KW_OK;
}

static int set_children(cel_parser_t *p, cel_node_t *n, cel_node_t *a, cel_node_t *b, cel_node_t *c)
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

static int nlist_push(cel_parser_t *p, nlist_t *l, cel_node_t *x)
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

static int set_args(cel_parser_t *p, cel_node_t *n, const nlist_t *l)
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

static int parse_expr(cel_parser_t *p, cel_node_t **out);

static const char *const reserved[] = {
    "as",  "break", "const",   "continue",  "else",   "for", "function", "if",    "import",
    "let", "loop",  "package", "namespace", "return", "var", "void",     "while",
};

static int check_ident(cel_parser_t *p)
{
    for (size_t i = 0; i < KW_ARRAY_LEN(reserved); i++)
        if (kw_str_eq_c(p->t.text, reserved[i]))
            return kw__cel_perr(p, p->t.l, p->t.c, "'%s' is a reserved word", reserved[i]);
    return KW_OK;
}

/* `(` args `)`, the opening paren already current. */
static int parse_args(cel_parser_t *p, nlist_t *l, const char *close)
{
    int rc = kw__cel_lex(p);
    if (rc != KW_OK)
        return rc;
    while (!is_punct(p, close)) {
        cel_node_t *x = NULL;
        bool opt = close[0] == ']' && is_punct(p, "?"); /* [?x]: an optional element */
        if (opt && (rc = kw__cel_lex(p)) != KW_OK)
            return rc;
        rc = parse_expr(p, &x);
        if (rc == KW_OK) {
            x->opt_entry = opt;
            rc = nlist_push(p, l, x);
        }
        if (rc != KW_OK)
            return rc;
        if (is_punct(p, ",")) {
            rc = kw__cel_lex(p);
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
    return kw__cel_lex(p);
}

/* Builds a macro node from a call `target.name(args)` when name is a macro. */
static int make_macro(cel_parser_t *p, cel_node_t *target, kw_str_t name, nlist_t *args, uint32_t l,
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
            return kw__cel_perr(p, l, c, "%s() takes %u or %u arguments", macros[i].name,
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

static int parse_primary(cel_parser_t *p, cel_node_t **out)
{
    cel_tok_t t = p->t;
    int rc;
    cel_node_t *n = NULL;
    switch (t.kind) {
    case T_INT:
        if (t.u > INT64_MAX)
            return kw__cel_perr(p, t.l, t.c, "this integer does not fit in a 64-bit int");
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
            return kw__cel_perr(p, t.l, t.c, "'in' is an operator, not a name");
        if ((rc = check_ident(p)) != KW_OK)
            return rc;
        if ((rc = kw__cel_lex(p)) != KW_OK)
            return rc;
        if (is_punct(p, "(")) {
            nlist_t args = {0};
            if ((rc = parse_args(p, &args, ")")) != KW_OK)
                return rc;
            if (kw_str_eq_c(t.text, "has")) {
                if (args.n != 1 || args.items[0]->kind != N_SELECT)
                    return kw__cel_perr(p, t.l, t.c,
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
            return kw__cel_perr(p, t.l, t.c, "message construction is not available in caveats");
        n = node(p, N_IDENT, t.l, t.c);
        if (!n)
            return KW_ENOMEM;
        n->name = t.text;
        *out = n;
        return KW_OK;
    }
    case T_PUNCT:
        if (is_punct(p, "(")) {
            if ((rc = kw__cel_lex(p)) != KW_OK || (rc = parse_expr(p, &n)) != KW_OK ||
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
            if ((rc = kw__cel_lex(p)) != KW_OK)
                return rc;
            while (!is_punct(p, "}")) {
                cel_node_t *k = NULL, *v = NULL;
                bool opt = is_punct(p, "?"); /* {?k: v}: an optional entry */
                if (opt && (rc = kw__cel_lex(p)) != KW_OK)
                    return rc;
                if ((rc = parse_expr(p, &k)) != KW_OK || (k->opt_entry = opt, false) ||
                    (rc = expect(p, ":")) != KW_OK || (rc = parse_expr(p, &v)) != KW_OK ||
                    (rc = nlist_push(p, &kv, k)) != KW_OK || (rc = nlist_push(p, &kv, v)) != KW_OK)
                    return rc;
                if (is_punct(p, ",")) {
                    if ((rc = kw__cel_lex(p)) != KW_OK)
                        return rc;
                } else if (!is_punct(p, "}")) {
                    return unexpected(p, "',' or '}'");
                }
            }
            if ((rc = kw__cel_lex(p)) != KW_OK)
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
            return kw__cel_perr(p, t.l, t.c,
                                "a leading '.' names a package, which caveats do not have");
        return unexpected(p, "an expression");
    case T_EOF:
        return unexpected(p, "an expression");
    }
    if ((rc = kw__cel_lex(p)) != KW_OK)
        return rc;
    *out = n;
    return KW_OK;
}

static int parse_member(cel_parser_t *p, cel_node_t **out)
{
    cel_node_t *n = NULL;
    int rc = parse_primary(p, &n);
    if (rc != KW_OK)
        return rc;
    for (;;) {
        cel_tok_t t = p->t;
        if (is_punct(p, ".")) {
            if ((rc = kw__cel_lex(p)) != KW_OK)
                return rc;
            bool opt = is_punct(p, "?"); /* a.?f: optional field selection */
            if (opt && (rc = kw__cel_lex(p)) != KW_OK)
                return rc;
            if (p->t.kind != T_IDENT)
                return unexpected(p, "a field or method name");
            cel_tok_t name = p->t;
            if ((rc = kw__cel_lex(p)) != KW_OK)
                return rc;
            if (!opt && is_punct(p, "(")) {
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
                s->op = opt;
                if ((rc = set_children(p, s, n, NULL, NULL)) != KW_OK)
                    return rc;
                n = s;
            }
        } else if (is_punct(p, "[")) {
            cel_node_t *idx = NULL;
            if ((rc = kw__cel_lex(p)) != KW_OK)
                return rc;
            bool opt = is_punct(p, "?"); /* a[?k]: optional index */
            if ((opt && (rc = kw__cel_lex(p)) != KW_OK) || (rc = parse_expr(p, &idx)) != KW_OK ||
                (rc = expect(p, "]")) != KW_OK)
                return rc;
            cel_node_t *x = node(p, N_INDEX, t.l, t.c);
            if (!x)
                return KW_ENOMEM;
            x->op = opt;
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

static int parse_unary(cel_parser_t *p, cel_node_t **out)
{
    cel_tok_t t = p->t;
    int rc;
    if (is_punct(p, "!") || is_punct(p, "-")) {
        bool neg = is_punct(p, "-");
        if (++p->depth > KW_CEL_MAX_DEPTH)
            return kw__cel_perr(p, t.l, t.c, "nested more than %d deep", KW_CEL_MAX_DEPTH);
        if ((rc = kw__cel_lex(p)) != KW_OK)
            return rc;
        /* -9223372036854775808 is a literal, not the negation of an overflowing one. */
        if (neg && p->t.kind == T_INT) {
            cel_tok_t num = p->t;
            if (num.u > (uint64_t)INT64_MAX + 1)
                return kw__cel_perr(p, num.l, num.c, "this integer does not fit in a 64-bit int");
            if ((rc = kw__cel_lex(p)) != KW_OK)
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

static int binop(cel_parser_t *p, cel_op_t op, const cel_tok_t *t, cel_node_t *l, cel_node_t *r,
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

static int parse_mul(cel_parser_t *p, cel_node_t **out)
{
    cel_node_t *l = NULL;
    int rc = parse_unary(p, &l);
    while (rc == KW_OK && (is_punct(p, "*") || is_punct(p, "/") || is_punct(p, "%"))) {
        cel_tok_t t = p->t;
        cel_op_t op = t.p[0] == '*' ? OP_MUL : t.p[0] == '/' ? OP_DIV : OP_MOD;
        cel_node_t *r = NULL;
        if ((rc = kw__cel_lex(p)) == KW_OK && (rc = parse_unary(p, &r)) == KW_OK)
            rc = binop(p, op, &t, l, r, &l);
    }
    if (rc == KW_OK)
        *out = l;
    return rc;
}

static int parse_add(cel_parser_t *p, cel_node_t **out)
{
    cel_node_t *l = NULL;
    int rc = parse_mul(p, &l);
    while (rc == KW_OK && (is_punct(p, "+") || is_punct(p, "-"))) {
        cel_tok_t t = p->t;
        cel_node_t *r = NULL;
        if ((rc = kw__cel_lex(p)) == KW_OK && (rc = parse_mul(p, &r)) == KW_OK)
            rc = binop(p, t.p[0] == '+' ? OP_ADD : OP_SUB, &t, l, r, &l);
    }
    if (rc == KW_OK)
        *out = l;
    return rc;
}

static int rel_op(const cel_parser_t *p)
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

static int parse_rel(cel_parser_t *p, cel_node_t **out)
{
    cel_node_t *l = NULL;
    int rc = parse_add(p, &l);
    int op;
    while (rc == KW_OK && (op = rel_op(p)) != 0) {
        cel_tok_t t = p->t;
        cel_node_t *r = NULL;
        if ((rc = kw__cel_lex(p)) == KW_OK && (rc = parse_add(p, &r)) == KW_OK)
            rc = binop(p, (cel_op_t)op, &t, l, r, &l);
    }
    if (rc == KW_OK)
        *out = l;
    return rc;
}

/* and := rel { "&&" rel }; or := and { "||" and }: one n-ary node per chain. */
static int parse_chain(cel_parser_t *p, bool is_or, cel_node_t **out)
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
        if ((rc = kw__cel_lex(p)) != KW_OK)
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

static int parse_expr(cel_parser_t *p, cel_node_t **out)
{
    cel_tok_t start = p->t;
    if (++p->depth > KW_CEL_MAX_DEPTH)
        return kw__cel_perr(p, start.l, start.c, "nested more than %d deep", KW_CEL_MAX_DEPTH);
    cel_node_t *cond = NULL;
    int rc = parse_chain(p, true, &cond);
    if (rc == KW_OK && is_punct(p, "?")) {
        cel_tok_t q = p->t;
        cel_node_t *yes = NULL, *no = NULL;
        if ((rc = kw__cel_lex(p)) != KW_OK || (rc = parse_chain(p, true, &yes)) != KW_OK ||
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
    cel_parser_t p;
    memset(&p, 0, sizeof(p));
    p.in = in;
    p.src = in->text.ptr ? in->text.ptr : "";
    p.cur = p.src;
    p.end = p.src + in->text.len;
    p.line_start = p.src;
    p.l = 1;
    int rc = kw__cel_lex(&p);
    if (rc != KW_OK)
        return rc;
    if (p.t.kind == T_EOF)
        return kw__cel_perr(&p, p.t.l, p.t.c, "the caveat has no expression");
    cel_node_t *root = NULL;
    if ((rc = parse_expr(&p, &root)) != KW_OK)
        return rc;
    if (p.t.kind != T_EOF)
        return unexpected(&p, "the end of the expression");
    *out = root;
    return KW_OK;
}
