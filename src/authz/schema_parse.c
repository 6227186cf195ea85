/*
 * authz/schema_parse.c - recursive-descent parser for SpiceDB's schema language.
 *
 * Grammar (newlines are whitespace; see schema_lex.c):
 *   schema     := { use } { definition | caveat }
 *   use        := "use" ( "expiration" | "typechecking" | "self" | "partial" | "import" )
 *   caveat     := "caveat" NAME "(" param { "," param } ")" "{" CEL "}"
 *   param      := NAME ptype
 *   ptype      := NAME [ "<" ptype { "," ptype } ">" ]
 *   definition := "definition" NAME "{" { relation | permission } "}"
 *   relation   := "relation" NAME ":" allowed { "|" allowed }
 *   allowed    := TYPE [ "#" NAME | "#" "..." | ":" "*" ] [ traits ]
 *   traits     := "with" NAME [ "and" "expiration" ] | "with" "expiration"
 *   permission := "permission" NAME "=" exclude
 *   exclude    := intersect { "-" intersect }      (binary, nests left)
 *   intersect  := union { "&" union }              (one n-ary node per chain)
 *   union      := term { "+" term }                (one n-ary node per chain)
 *   term       := "nil" | NAME | NAME "->" NAME | NAME "." ("any"|"all") "(" NAME ")"
 *               | "(" exclude ")"
 * So `+` binds tightest, then `&`, then `-` (SpiceDB's precedence).
 * As in SpiceDB, `expiration` is a keyword only after `use expiration` (before it,
 * `with expiration` names a caveat called "expiration"), `use` comes before every
 * definition and caveat, and a caveat comes before expiration in a trait list. The CEL
 * body of a caveat is located here (kw__schema_lex_caveat_body) and compiled by
 * schema_compile.c; parameter types are kept as written. The other `use` flags SpiceDB
 * knows (typechecking, self, partial, import) are accepted and change nothing by
 * themselves; composable schemas (import, partial statements) stop the parse with
 * KW_EUNSUPPORTED at their position.
 *
 * Recursion is bounded: parentheses nest at most KW_MAX_EXPR_DEPTH deep, and every
 * expression tree (including long left-nested `a - b - c ...` chains) is at most
 * KW_MAX_EXPR_DEPTH deep, so later passes may recurse over trees freely.
 */
#include "schema_int.h"

#include <string.h>

typedef struct parser {
    kw__lexer_t lx;
    kw__tok_t cur;
    kw_arena_t *a;
    kw_diag_t *diag;
    bool use_expiration; /* `use expiration` seen: `expiration` is a keyword */
} parser_t;

int kw__schema_vec_reserve(kw_arena_t *a, void **items, uint32_t n, uint32_t *cap, uint32_t need,
                           size_t esz)
{
    if (need <= *cap)
        return KW_OK;
    uint32_t ncap = *cap ? *cap : 4;
    while (ncap < need) {
        if (ncap > UINT32_MAX / 2)
            return KW_ENOMEM;
        ncap *= 2;
    }
    if (esz && (size_t)ncap > SIZE_MAX / esz)
        return KW_ENOMEM;
    void *np = kw_arena_alloc(a, (size_t)ncap * esz);
    if (!np)
        return KW_ENOMEM;
    if (n)
        memcpy(np, *items, (size_t)n * esz);
    *items = np;
    *cap = ncap;
    return KW_OK;
}

static int advance(parser_t *p)
{
    return kw__schema_lex(&p->lx, &p->cur, p->diag);
}

static bool is_word(const kw__tok_t *t, const char *w)
{
    return t->kind == KW__TK_IDENT && kw_str_eq_c(t->text, w);
}

static int unexpected(parser_t *p, const char *expected)
{
    char found[96];
    kw__schema_tok_describe(&p->cur, found, sizeof(found));
    return kw_diag_set(p->diag, KW_ESCHEMA, p->cur.line, p->cur.col, "expected %s, but found %s",
                       expected, found);
}

static int expect(parser_t *p, kw__tok_kind_t kind, const char *expected)
{
    if (p->cur.kind != kind)
        return unexpected(p, expected);
    return KW_OK;
}

static const char *const reserved_words[] = {
    "definition", "caveat", "relation", "permission", "nil", "with", "use", "import", "partial",
};

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* SpiceDB's naming rules, relaxed on length: every `/`-separated segment starts with a
 * lowercase letter, uses [a-z0-9_] and does not end in `_`. Relations take no prefix. */
static int check_name(parser_t *p, const kw__tok_t *t, bool allow_prefix, const char *what)
{
    kw_str_t s = t->text;
    if (s.len > KW_MAX_NAME_LEN)
        return kw_diag_set(p->diag, KW_ELIMIT, t->line, t->col,
                           "this %s name is %zu bytes long; the limit is %d", what, s.len,
                           KW_MAX_NAME_LEN);
    for (size_t i = 0; i < KW_ARRAY_LEN(reserved_words); i++)
        if (kw_str_eq_c(s, reserved_words[i]))
            return kw_diag_set(p->diag, KW_ESCHEMA, t->line, t->col,
                               "\"%s\" is a keyword and cannot be used as a %s name",
                               reserved_words[i], what);
    size_t seg = 0;
    for (size_t i = 0; i <= s.len; i++) {
        if (i == s.len || s.ptr[i] == '/') {
            if (i < s.len && !allow_prefix)
                return kw_diag_set(p->diag, KW_ESCHEMA, t->line, t->col,
                                   "%s name \"%.*s\" cannot contain '/'; only definition "
                                   "names take a prefix",
                                   what, KW_STR_FMT(s));
            bool ok = i > seg && s.ptr[seg] >= 'a' && s.ptr[seg] <= 'z' && s.ptr[i - 1] != '_';
            for (size_t j = seg; ok && j < i; j++)
                ok = name_char(s.ptr[j]);
            if (!ok)
                return kw_diag_set(p->diag, KW_ESCHEMA, t->line, t->col,
                                   "\"%.*s\" is not a valid %s name: use lowercase letters, "
                                   "digits and underscores, start with a letter and do not "
                                   "end with '_'",
                                   KW_STR_FMT(s), what);
            seg = i + 1;
        }
    }
    return KW_OK;
}

/* Caveat and parameter names: SpiceDB checks them less strictly than definition names.
 * A caveat name matches its proto's pattern (letters of either case, digits, '_', '/'
 * between segments, at most 128 bytes); a parameter is any identifier. Neither may be a
 * keyword. */
static int check_loose_name(parser_t *p, const kw__tok_t *t, bool allow_prefix, const char *what)
{
    kw_str_t s = t->text;
    if (s.len > 128)
        return kw_diag_set(p->diag, KW_ELIMIT, t->line, t->col,
                           "this %s name is %zu bytes long; the limit is 128", what, s.len);
    static const char *const keywords[] = {"definition", "caveat", "relation",
                                           "permission", "nil",    "with"};
    for (size_t i = 0; i < KW_ARRAY_LEN(keywords); i++)
        if (kw_str_eq_c(s, keywords[i]))
            return kw_diag_set(p->diag, KW_ESCHEMA, t->line, t->col,
                               "\"%s\" is a keyword and cannot be used as a %s name", keywords[i],
                               what);
    if (!allow_prefix && memchr(s.ptr, '/', s.len))
        return kw_diag_set(p->diag, KW_ESCHEMA, t->line, t->col,
                           "%s name \"%.*s\" cannot contain '/'", what, KW_STR_FMT(s));
    return KW_OK;
}

/* ---- expressions ---- */

static kw__pexpr_t *new_node(parser_t *p, kw_expr_kind_t kind, uint32_t line, uint32_t col)
{
    kw__pexpr_t *n = kw_arena_alloc(p->a, sizeof(*n));
    if (!n)
        return NULL;
    memset(n, 0, sizeof(*n));
    n->e.kind = kind;
    n->e.line = line;
    n->e.col = col;
    n->e.rel = KW_REL_NONE;
    return n;
}

static int check_depth(parser_t *p, const kw_expr_t *e, uint32_t depth)
{
    if (depth > KW_MAX_EXPR_DEPTH)
        return kw_diag_set(p->diag, KW_ELIMIT, e->line, e->col,
                           "this expression nests more than %d operations deep; split it "
                           "into several permissions",
                           KW_MAX_EXPR_DEPTH);
    return KW_OK;
}

static int parse_exclude(parser_t *p, uint32_t parens, kw_expr_t **out, uint32_t *depth);

/* NAME, NAME->NAME, NAME.any(NAME), NAME.all(NAME) */
static int parse_name_term(parser_t *p, kw_expr_t **out)
{
    kw__tok_t name = p->cur;
    int rc = check_name(p, &name, false, "relation");
    if (rc == KW_OK)
        rc = advance(p);
    if (rc != KW_OK)
        return rc;
    kw_expr_kind_t kind = KW_EXPR_REF;
    kw__tok_t target = {0};
    if (p->cur.kind == KW__TK_ARROW) {
        kind = KW_EXPR_ARROW;
        if ((rc = advance(p)) != KW_OK ||
            (rc = expect(p, KW__TK_IDENT, "a relation or permission name after '->'")) != KW_OK)
            return rc;
        target = p->cur;
        if ((rc = check_name(p, &target, false, "permission")) != KW_OK ||
            (rc = advance(p)) != KW_OK)
            return rc;
    } else if (p->cur.kind == KW__TK_DOT) {
        if ((rc = advance(p)) != KW_OK)
            return rc;
        if (is_word(&p->cur, "any"))
            kind = KW_EXPR_ARROW;
        else if (is_word(&p->cur, "all"))
            kind = KW_EXPR_ALL;
        else
            return unexpected(p, "\"any\" or \"all\" after '.'");
        if ((rc = advance(p)) != KW_OK || (rc = expect(p, KW__TK_LPAREN, "'('")) != KW_OK ||
            (rc = advance(p)) != KW_OK ||
            (rc = expect(p, KW__TK_IDENT, "a relation or permission name")) != KW_OK)
            return rc;
        target = p->cur;
        if ((rc = check_name(p, &target, false, "permission")) != KW_OK ||
            (rc = advance(p)) != KW_OK || (rc = expect(p, KW__TK_RPAREN, "')'")) != KW_OK ||
            (rc = advance(p)) != KW_OK)
            return rc;
    }
    if (kind != KW_EXPR_REF && (p->cur.kind == KW__TK_ARROW || p->cur.kind == KW__TK_DOT))
        return kw_diag_set(p->diag, KW_ESCHEMA, p->cur.line, p->cur.col,
                           "arrows cannot be chained: define a permission for the first "
                           "step and arrow to it");
    kw__pexpr_t *n = new_node(p, kind, name.line, name.col);
    if (!n)
        return KW_ENOMEM;
    n->name = name.text;
    if (kind != KW_EXPR_REF) {
        n->e.target = target.text;
        n->target_line = target.line;
        n->target_col = target.col;
    }
    *out = &n->e;
    return KW_OK;
}

static int parse_term(parser_t *p, uint32_t parens, kw_expr_t **out, uint32_t *depth)
{
    int rc;
    if (p->cur.kind == KW__TK_LPAREN) {
        if (parens >= KW_MAX_EXPR_DEPTH)
            return kw_diag_set(p->diag, KW_ELIMIT, p->cur.line, p->cur.col,
                               "parentheses nest more than %d deep here", KW_MAX_EXPR_DEPTH);
        if ((rc = advance(p)) != KW_OK ||
            (rc = parse_exclude(p, parens + 1, out, depth)) != KW_OK ||
            (rc = expect(p, KW__TK_RPAREN, "an operator or ')'")) != KW_OK)
            return rc;
        return advance(p);
    }
    if (is_word(&p->cur, "nil")) {
        kw__pexpr_t *n = new_node(p, KW_EXPR_NIL, p->cur.line, p->cur.col);
        if (!n)
            return KW_ENOMEM;
        *out = &n->e;
        *depth = 1;
        return advance(p);
    }
    if (p->cur.kind == KW__TK_IDENT) {
        *depth = 1;
        return parse_name_term(p, out);
    }
    return unexpected(p, "a relation, a permission, \"nil\" or '('");
}

typedef int (*sub_fn)(parser_t *p, uint32_t parens, kw_expr_t **out, uint32_t *depth);

/* One n-ary node for a chain `x op y op z`, children in source order. */
static int parse_chain(parser_t *p, uint32_t parens, kw__tok_kind_t op, kw_expr_kind_t kind,
                       sub_fn sub, kw_expr_t **out, uint32_t *depth)
{
    kw_expr_t *first;
    uint32_t d;
    int rc = sub(p, parens, &first, &d);
    if (rc != KW_OK)
        return rc;
    if (p->cur.kind != op) {
        *out = first;
        *depth = d;
        return KW_OK;
    }
    kw_expr_t **kids = NULL;
    uint32_t n = 0, cap = 0, maxd = d;
    if ((rc = kw__schema_vec_reserve(p->a, (void **)&kids, n, &cap, 4, sizeof(*kids))) != KW_OK)
        return rc;
    kids[n++] = first;
    while (p->cur.kind == op) {
        kw_expr_t *next;
        if ((rc = advance(p)) != KW_OK || (rc = sub(p, parens, &next, &d)) != KW_OK)
            return rc;
        if ((rc = kw__schema_vec_reserve(p->a, (void **)&kids, n, &cap, n + 1, sizeof(*kids))) !=
            KW_OK)
            return rc;
        kids[n++] = next;
        if (d > maxd)
            maxd = d;
    }
    kw__pexpr_t *node = new_node(p, kind, first->line, first->col);
    if (!node)
        return KW_ENOMEM;
    node->e.children = kids;
    node->e.n_children = n;
    *out = &node->e;
    *depth = maxd + 1;
    return check_depth(p, *out, *depth);
}

static int parse_union(parser_t *p, uint32_t parens, kw_expr_t **out, uint32_t *depth)
{
    return parse_chain(p, parens, KW__TK_PLUS, KW_EXPR_UNION, parse_term, out, depth);
}

static int parse_intersect(parser_t *p, uint32_t parens, kw_expr_t **out, uint32_t *depth)
{
    return parse_chain(p, parens, KW__TK_AMP, KW_EXPR_INTERSECT, parse_union, out, depth);
}

static int parse_exclude(parser_t *p, uint32_t parens, kw_expr_t **out, uint32_t *depth)
{
    kw_expr_t *left;
    uint32_t dl;
    int rc = parse_intersect(p, parens, &left, &dl);
    if (rc != KW_OK)
        return rc;
    while (p->cur.kind == KW__TK_MINUS) {
        kw_expr_t *right;
        uint32_t dr;
        if ((rc = advance(p)) != KW_OK || (rc = parse_intersect(p, parens, &right, &dr)) != KW_OK)
            return rc;
        kw__pexpr_t *node = new_node(p, KW_EXPR_EXCLUDE, left->line, left->col);
        kw_expr_t **kids = kw_arena_alloc(p->a, 2 * sizeof(*kids));
        if (!node || !kids)
            return KW_ENOMEM;
        kids[0] = left;
        kids[1] = right;
        node->e.children = kids;
        node->e.n_children = 2;
        left = &node->e;
        dl = (dl > dr ? dl : dr) + 1;
        if ((rc = check_depth(p, left, dl)) != KW_OK)
            return rc;
    }
    *out = left;
    *depth = dl;
    return KW_OK;
}

/* ---- definitions ---- */

typedef struct type_builder {
    kw_type_t t;
    kw__type_src_t src;
    uint32_t cap_rels;
} type_builder_t;

static int push_rel(parser_t *p, type_builder_t *b, const kw_relation_t *r,
                    kw__allowed_src_t *allowed_src)
{
    if (b->t.n_rels >= KW_MAX_RELATIONS)
        return kw_diag_set(p->diag, KW_ELIMIT, r->line, r->col,
                           "definition \"%.*s\" has more than %d relations and permissions",
                           KW_STR_FMT(b->t.name), KW_MAX_RELATIONS);
    uint32_t cap = b->cap_rels;
    int rc = kw__schema_vec_reserve(p->a, (void **)&b->t.rels, b->t.n_rels, &cap, b->t.n_rels + 1,
                                    sizeof(*b->t.rels));
    if (rc == KW_OK) {
        uint32_t cap2 = b->src.cap_rels;
        rc = kw__schema_vec_reserve(p->a, (void **)&b->src.allowed, b->t.n_rels, &cap2,
                                    b->t.n_rels + 1, sizeof(*b->src.allowed));
        b->src.cap_rels = cap2;
    }
    if (rc != KW_OK)
        return rc;
    b->cap_rels = cap;
    b->t.rels[b->t.n_rels] = *r;
    b->src.allowed[b->t.n_rels] = allowed_src;
    b->t.n_rels++;
    return KW_OK;
}

/* `with <caveat>`, `with expiration`, `with <caveat> and expiration`; at the `with`. */
static int parse_traits(parser_t *p, kw_allowed_t *al, kw__allowed_src_t *src)
{
    int rc = advance(p);
    if (rc != KW_OK)
        return rc;
    bool exp_kw = p->use_expiration && is_word(&p->cur, "expiration");
    if (!exp_kw) {
        if ((rc = expect(p, KW__TK_IDENT, "a caveat name or \"expiration\" after \"with\"")) !=
                KW_OK ||
            (rc = check_loose_name(p, &p->cur, true, "caveat")) != KW_OK)
            return rc;
        src->caveat_name = p->cur.text;
        src->caveat_line = p->cur.line;
        src->caveat_col = p->cur.col;
        if ((rc = advance(p)) != KW_OK)
            return rc;
        if (!is_word(&p->cur, "and"))
            return KW_OK;
        if ((rc = advance(p)) != KW_OK)
            return rc;
        if (!is_word(&p->cur, "expiration"))
            return unexpected(p, "\"expiration\" after \"and\"");
        if (!p->use_expiration)
            return kw_diag_set(p->diag, KW_ESCHEMA, p->cur.line, p->cur.col,
                               "expiration trait is not allowed: add `use expiration` at the top "
                               "of the schema to use expiring relationships");
    }
    al->expiration = true;
    if ((rc = advance(p)) != KW_OK)
        return rc;
    if (is_word(&p->cur, "and"))
        return kw_diag_set(p->diag, KW_ESCHEMA, p->cur.line, p->cur.col,
                           "unexpected keyword after expiration: the caveat must come before "
                           "expiration, e.g. `with <caveat_name> and expiration`");
    return KW_OK;
}

static int parse_relation(parser_t *p, type_builder_t *b)
{
    kw_relation_t r;
    memset(&r, 0, sizeof(r));
    r.doc = p->cur.doc;
    int rc;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_IDENT, "a relation name after \"relation\"")) != KW_OK ||
        (rc = check_name(p, &p->cur, false, "relation")) != KW_OK)
        return rc;
    r.name = p->cur.text;
    r.line = p->cur.line;
    r.col = p->cur.col;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_COLON, "':' and the allowed subject types")) != KW_OK ||
        (rc = advance(p)) != KW_OK)
        return rc;
    kw__allowed_src_t *srcs = NULL;
    uint32_t cap = 0, scap = 0;
    for (;;) {
        if ((rc = expect(p, KW__TK_IDENT, "a subject type (a definition name)")) != KW_OK ||
            (rc = check_name(p, &p->cur, true, "definition")) != KW_OK)
            return rc;
        kw__allowed_src_t s;
        memset(&s, 0, sizeof(s));
        kw_allowed_t al = {KW_TYPE_NONE, KW_REL_NONE, false, false, KW_CAVEAT_NONE};
        s.type_name = p->cur.text;
        s.line = p->cur.line;
        s.col = p->cur.col;
        if ((rc = advance(p)) != KW_OK)
            return rc;
        if (p->cur.kind == KW__TK_HASH) {
            if ((rc = advance(p)) != KW_OK)
                return rc;
            s.rel_line = p->cur.line;
            s.rel_col = p->cur.col;
            if (p->cur.kind == KW__TK_ELLIPSIS) {
                s.rel_name = p->cur.text;
            } else {
                if ((rc = expect(p, KW__TK_IDENT, "a relation name or \"...\" after '#'")) !=
                        KW_OK ||
                    (rc = check_name(p, &p->cur, false, "relation")) != KW_OK)
                    return rc;
                s.rel_name = p->cur.text;
            }
            if ((rc = advance(p)) != KW_OK)
                return rc;
        } else if (p->cur.kind == KW__TK_COLON) {
            if ((rc = advance(p)) != KW_OK || (rc = expect(p, KW__TK_STAR, "'*'")) != KW_OK ||
                (rc = advance(p)) != KW_OK)
                return rc;
            al.wildcard = true;
        }
        if (is_word(&p->cur, "with") && (rc = parse_traits(p, &al, &s)) != KW_OK)
            return rc;
        if ((rc = kw__schema_vec_reserve(p->a, (void **)&r.allowed, r.n_allowed, &cap,
                                         r.n_allowed + 1, sizeof(*r.allowed))) != KW_OK)
            return rc;
        if ((rc = kw__schema_vec_reserve(p->a, (void **)&srcs, r.n_allowed, &scap, r.n_allowed + 1,
                                         sizeof(*srcs))) != KW_OK)
            return rc;
        r.allowed[r.n_allowed] = al;
        srcs[r.n_allowed] = s;
        r.n_allowed++;
        if (p->cur.kind != KW__TK_PIPE)
            break;
        if ((rc = advance(p)) != KW_OK)
            return rc;
    }
    return push_rel(p, b, &r, srcs);
}

static int parse_permission(parser_t *p, type_builder_t *b)
{
    kw_relation_t r;
    memset(&r, 0, sizeof(r));
    r.doc = p->cur.doc;
    r.is_permission = true;
    int rc;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_IDENT, "a permission name after \"permission\"")) != KW_OK ||
        (rc = check_name(p, &p->cur, false, "permission")) != KW_OK)
        return rc;
    r.name = p->cur.text;
    r.line = p->cur.line;
    r.col = p->cur.col;
    uint32_t depth;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_EQ, "'=' and the permission's expression")) != KW_OK ||
        (rc = advance(p)) != KW_OK || (rc = parse_exclude(p, 0, &r.expr, &depth)) != KW_OK)
        return rc;
    return push_rel(p, b, &r, NULL);
}

static int parse_definition(parser_t *p, kw__parsed_t *out)
{
    type_builder_t b;
    memset(&b, 0, sizeof(b));
    b.t.doc = p->cur.doc;
    int rc;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_IDENT, "a definition name after \"definition\"")) != KW_OK ||
        (rc = check_name(p, &p->cur, true, "definition")) != KW_OK)
        return rc;
    b.t.name = p->cur.text;
    b.t.line = p->cur.line;
    b.t.col = p->cur.col;
    if (out->n_types >= KW_MAX_TYPES)
        return kw_diag_set(p->diag, KW_ELIMIT, b.t.line, b.t.col,
                           "the schema has more than %d definitions", KW_MAX_TYPES);
    if ((rc = advance(p)) != KW_OK || (rc = expect(p, KW__TK_LBRACE, "'{'")) != KW_OK ||
        (rc = advance(p)) != KW_OK)
        return rc;
    for (;;) {
        if (p->cur.kind == KW__TK_RBRACE)
            break;
        if (is_word(&p->cur, "relation"))
            rc = parse_relation(p, &b);
        else if (is_word(&p->cur, "permission"))
            rc = parse_permission(p, &b);
        else
            rc = unexpected(p, "\"relation\", \"permission\" or '}'");
        if (rc != KW_OK)
            return rc;
    }
    if ((rc = advance(p)) != KW_OK)
        return rc;
    uint32_t cap = out->cap_types;
    if ((rc = kw__schema_vec_reserve(p->a, (void **)&out->types, out->n_types, &cap,
                                     out->n_types + 1, sizeof(*out->types))) != KW_OK)
        return rc;
    uint32_t cap2 = out->cap_types;
    if ((rc = kw__schema_vec_reserve(p->a, (void **)&out->srcs, out->n_types, &cap2,
                                     out->n_types + 1, sizeof(*out->srcs))) != KW_OK)
        return rc;
    out->cap_types = cap;
    out->types[out->n_types] = b.t;
    out->srcs[out->n_types] = b.src;
    out->n_types++;
    return KW_OK;
}

/* ptype := NAME [ "<" ptype { "," ptype } ">" ]; *end is one past its last byte. */
static int parse_param_type(parser_t *p, uint32_t depth, const char **end)
{
    int rc = expect(p, KW__TK_IDENT, "a parameter type such as int or list<string>");
    if (rc != KW_OK)
        return rc;
    if (depth > 16)
        return kw_diag_set(p->diag, KW_ESCHEMA, p->cur.line, p->cur.col,
                           "this parameter type nests too deeply");
    *end = p->cur.text.ptr + p->cur.text.len;
    if ((rc = advance(p)) != KW_OK || p->cur.kind != KW__TK_LT)
        return rc;
    do {
        if ((rc = advance(p)) != KW_OK || (rc = parse_param_type(p, depth + 1, end)) != KW_OK)
            return rc;
    } while (p->cur.kind == KW__TK_COMMA);
    if ((rc = expect(p, KW__TK_GT, "',' or '>'")) != KW_OK)
        return rc;
    *end = p->cur.text.ptr + 1;
    return advance(p);
}

/* caveat := "caveat" NAME "(" param { "," param } ")" "{" CEL "}" */
static int parse_caveat(parser_t *p, kw__parsed_t *out)
{
    kw_caveat_t cv;
    memset(&cv, 0, sizeof(cv));
    cv.doc = p->cur.doc;
    int rc;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_IDENT, "a caveat name after \"caveat\"")) != KW_OK ||
        (rc = check_loose_name(p, &p->cur, true, "caveat")) != KW_OK)
        return rc;
    cv.name = p->cur.text;
    cv.line = p->cur.line;
    cv.col = p->cur.col;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_LPAREN, "'(' and the caveat's parameters")) != KW_OK ||
        (rc = advance(p)) != KW_OK)
        return rc;
    uint32_t cap = 0;
    for (;;) {
        if (p->cur.kind == KW__TK_RPAREN && cv.n_params == 0)
            return kw_diag_set(p->diag, KW_ESCHEMA, cv.line, cv.col,
                               "caveat `%.*s` must have at least one parameter defined",
                               KW_STR_FMT(cv.name));
        if ((rc = expect(p, KW__TK_IDENT, "a parameter name")) != KW_OK ||
            (rc = check_loose_name(p, &p->cur, false, "parameter")) != KW_OK)
            return rc;
        if (cv.n_params >= 1024)
            return kw_diag_set(p->diag, KW_ELIMIT, p->cur.line, p->cur.col,
                               "a caveat takes at most 1024 parameters");
        if ((rc = kw__schema_vec_reserve(p->a, (void **)&cv.params, cv.n_params, &cap,
                                         cv.n_params + 1, sizeof(*cv.params))) != KW_OK)
            return rc;
        kw_cel_param_t *pm = &cv.params[cv.n_params];
        pm->name = p->cur.text;
        pm->line = p->cur.line;
        pm->col = p->cur.col;
        if ((rc = advance(p)) != KW_OK)
            return rc;
        const char *type_start = p->cur.text.ptr, *type_end = type_start;
        if ((rc = parse_param_type(p, 0, &type_end)) != KW_OK)
            return rc;
        pm->type = (kw_str_t){type_start, (size_t)(type_end - type_start)};
        cv.n_params++;
        if (p->cur.kind != KW__TK_COMMA)
            break;
        if ((rc = advance(p)) != KW_OK)
            return rc;
    }
    if ((rc = expect(p, KW__TK_RPAREN, "',' or ')'")) != KW_OK || (rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_LBRACE, "'{' and the caveat's expression")) != KW_OK)
        return rc;
    if ((rc = kw__schema_lex_caveat_body(&p->lx, &p->cur, &cv.expr, &cv.expr_line, &cv.expr_col,
                                         p->diag)) != KW_OK ||
        (rc = advance(p)) != KW_OK)
        return rc;
    cv.program = NULL; /* compiled by schema_compile.c */
    uint32_t ccap = out->cap_caveats;
    if ((rc = kw__schema_vec_reserve(p->a, (void **)&out->caveats, out->n_caveats, &ccap,
                                     out->n_caveats + 1, sizeof(*out->caveats))) != KW_OK)
        return rc;
    out->cap_caveats = ccap;
    out->caveats[out->n_caveats] = cv;
    out->n_caveats++;
    return KW_OK;
}

int kw__schema_parse(kw_str_t text, kw_arena_t *a, kw__parsed_t *out, kw_diag_t *diag)
{
    parser_t p;
    memset(&p, 0, sizeof(p));
    memset(out, 0, sizeof(*out));
    p.a = a;
    p.diag = diag;
    kw__schema_lex_init(&p.lx, text);
    int rc = advance(&p);
    bool seen_definition = false;
    while (rc == KW_OK && p.cur.kind != KW__TK_EOF) {
        if (is_word(&p.cur, "definition")) {
            seen_definition = true;
            rc = parse_definition(&p, out);
        } else if (is_word(&p.cur, "caveat")) {
            seen_definition = true;
            rc = parse_caveat(&p, out);
        } else if (is_word(&p.cur, "use")) {
            kw__tok_t use = p.cur;
            if ((rc = advance(&p)) != KW_OK)
                break;
            if (p.cur.kind != KW__TK_IDENT) {
                rc = unexpected(&p, "a flag name after \"use\"");
            } else if (kw_str_eq_c(p.cur.text, "expiration")) {
                if (seen_definition)
                    rc = kw_diag_set(diag, KW_ESCHEMA, use.line, use.col,
                                     "`use` expressions must be declared before any definition");
                else if ((rc = advance(&p)) == KW_OK)
                    p.use_expiration = out->use_expiration = true;
            } else if (kw_str_eq_c(p.cur.text, "typechecking") || kw_str_eq_c(p.cur.text, "self") ||
                       kw_str_eq_c(p.cur.text, "partial") || kw_str_eq_c(p.cur.text, "import")) {
                /* SpiceDB accepts these flags; each only enables syntax of its own
                 * (type annotations, `self`, partials, imports) that this parser still
                 * refuses where it is used, so the flag alone changes nothing */
                if (seen_definition)
                    rc = kw_diag_set(diag, KW_ESCHEMA, use.line, use.col,
                                     "`use` expressions must be declared before any definition");
                else
                    rc = advance(&p);
            } else {
                rc = kw_diag_set(diag, KW_ESCHEMA, p.cur.line, p.cur.col,
                                 "unknown use flag: `%.*s`. Options are: expiration, import, "
                                 "partial, self, typechecking",
                                 (int)(p.cur.text.len > 64 ? 64 : p.cur.text.len), p.cur.text.ptr);
            }
        } else if (is_word(&p.cur, "import") || is_word(&p.cur, "partial")) {
            rc = kw_diag_set(diag, KW_EUNSUPPORTED, p.cur.line, p.cur.col,
                             "composable schemas (\"%.*s\") are not supported yet",
                             KW_STR_FMT(p.cur.text));
        } else {
            rc = unexpected(&p, "\"definition\" or \"caveat\"");
        }
    }
    return rc;
}
