/*
 * authz/schema_parse.c - recursive-descent parser for SpiceDB's schema language.
 *
 * Grammar (`;` is a ';' or a line break that ends a statement, see schema_lex.c and
 * tag-kw-schema-semicolon):
 *   schema     := { [ ";" ] ( use | definition | caveat ) } [ ";" ]
 *   use        := "use" ( "expiration" | "typechecking" | "self" | "partial" | "import" )
 *   caveat     := "caveat" PATH "(" param { "," param } ")" "{" CEL "}"
 *   param      := NAME ptype
 *   ptype      := NAME [ "<" ptype { "," ptype } ">" ]
 *   definition := "definition" PATH "{" { [ relation | permission ] ";" } "}"
 *   relation   := "relation" NAME ":" allowed { "|" allowed }
 *   allowed    := PATH [ "#" NAME | "#" "..." | ":" "*" ] [ traits ]
 *   traits     := "with" PATH [ "and" "expiration" ] | "with" "expiration"
 *   permission := "permission" NAME "=" exclude
 *   exclude    := intersect { "-" intersect }      (binary, nests left)
 *   intersect  := union { "&" union }              (one n-ary node per chain)
 *   union      := term { "+" term }                (one n-ary node per chain)
 *   term       := "nil" | NAME | NAME "->" NAME | NAME "." ("any"|"all") "(" NAME ")"
 *               | "(" exclude ")"
 *   PATH       := NAME { "/" NAME }
 * So `+` binds tightest, then `&`, then `-` (SpiceDB's precedence). As in SpiceDB's
 * parser, the top level takes at most one terminator before each statement (`;;` there is
 * an error), while inside a definition every statement, the empty one included, needs its
 * own: `{ relation a: user }` on one line is refused (nothing ends the relation before the
 * '}'), `{ relation a: user; }` is not. A NAME is an identifier that is not a keyword:
 * definition, caveat, relation, permission, nil, with, and the words a `use` flag turns
 * into keywords (expiration and `and`, typechecking, self, partial, import).
 * As in SpiceDB, `expiration` is a keyword only after `use expiration` (before it,
 * `with expiration` names a caveat called "expiration"), `use` comes before every
 * definition and caveat, and a caveat comes before expiration in a trait list. The CEL
 * body of a caveat is located here (kw__schema_lex_caveat_body) and compiled by
 * schema_compile.c; parameter types are kept as written. The other `use` flags SpiceDB
 * knows (typechecking, self, partial, import) are accepted and change nothing by
 * themselves; composable schemas (import, partial statements) stop the parse with
 * KW_EUNSUPPORTED at their position.
 *
 * Names are checked after the whole text has parsed, in SpiceDB's order (its compiler
 * validates each definition once parsing succeeded; tag-kw-names): per definition, each
 * relation's subject types then its name, each permission's name and the names in its
 * expression, then the definition's name; errors point where SpiceDB's do (the type
 * written, or the relation, permission or definition keyword). Caveat and parameter
 * names are not checked beyond being names: SpiceDB does not either (CEL does).
 *
 * Recursion is bounded: parentheses nest at most KW_MAX_EXPR_DEPTH deep, and every
 * expression tree (including long left-nested `a - b - c ...` chains) is at most
 * KW_MAX_EXPR_DEPTH deep, so later passes may recurse over trees freely.
 */
#include "schema_int.h"

#include "authz/authz.h"

#include <string.h>

/* `use` flags seen (each turns words into keywords) */
enum { F_EXPIRATION = 1, F_TYPECHECKING = 2, F_SELF = 4, F_PARTIAL = 8, F_IMPORT = 16 };

typedef struct parser {
    kw__lexer_t lx;
    kw__tok_t cur;
    kw_arena_t *a;
    kw_diag_t *diag;
    bool use_expiration; /* `use expiration` seen: `expiration` is a keyword */
    unsigned flags;      /* F_* */
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

/* The keyword `t` is (SpiceDB's lexer keywords, and those of the `use` flags seen), or
 * NULL for a plain identifier or another token. */
static const char *keyword_of(const parser_t *p, const kw__tok_t *t)
{
    /* flag 0: always a keyword; lengths first, since every name passes through here */
    static const struct {
        unsigned flag;
        size_t len;
        const char *word;
    } words[] = {
        {0, 10, "definition"},
        {0, 6, "caveat"},
        {0, 8, "relation"},
        {0, 10, "permission"},
        {0, 3, "nil"},
        {0, 4, "with"},
        {F_EXPIRATION, 10, "expiration"},
        {F_EXPIRATION, 3, "and"},
        {F_TYPECHECKING, 12, "typechecking"},
        {F_SELF, 4, "self"},
        {F_PARTIAL, 7, "partial"},
        {F_IMPORT, 6, "import"},
    };
    if (t->kind != KW__TK_IDENT || t->text.len < 3 || t->text.len > 12)
        return NULL;
    for (size_t i = 0; i < KW_ARRAY_LEN(words); i++)
        if (t->text.len == words[i].len && (!words[i].flag || (p->flags & words[i].flag)) &&
            memcmp(t->text.ptr, words[i].word, words[i].len) == 0)
            return words[i].word;
    return NULL;
}

/* The current token must be a name: an identifier that is not a keyword. */
static int expect_name(parser_t *p, const char *expected)
{
    if (p->cur.kind != KW__TK_IDENT)
        return unexpected(p, expected);
    const char *kw = keyword_of(p, &p->cur);
    if (kw)
        return kw_diag_set(p->diag, KW_ESCHEMA, p->cur.line, p->cur.col,
                           "expected %s, but found the keyword \"%s\"", expected, kw);
    return KW_OK;
}

/* PATH := NAME { "/" NAME }, blanks and line breaks allowed after a '/' (SpiceDB's
 * consumeTypePath). *out is the path as one IDENT token at its first segment: its text is
 * the source bytes when written without blanks (the usual `org/user`), else a copy in the
 * arena with the blanks left out. The parser stands after the last segment. */
static int parse_path(parser_t *p, const char *expected, kw__tok_t *out)
{
    int rc = expect_name(p, expected);
    if (rc != KW_OK)
        return rc;
    kw__tok_t first = p->cur;
    kw_str_t *segs = NULL;
    uint32_t n = 0, cap = 0;
    size_t total = 0;
    bool contiguous = true;
    const char *end = first.text.ptr + first.text.len;
    for (;;) {
        if ((rc = kw__schema_vec_reserve(p->a, (void **)&segs, n, &cap, n + 1, sizeof(*segs))) !=
            KW_OK)
            return rc;
        segs[n++] = p->cur.text;
        total += p->cur.text.len;
        end = p->cur.text.ptr + p->cur.text.len;
        if ((rc = advance(p)) != KW_OK)
            return rc;
        if (p->cur.kind != KW__TK_SLASH)
            break;
        contiguous = contiguous && p->cur.text.ptr == end;
        const char *slash = p->cur.text.ptr;
        if ((rc = advance(p)) != KW_OK || (rc = expect_name(p, "a name after '/'")) != KW_OK)
            return rc;
        contiguous = contiguous && p->cur.text.ptr == slash + 1;
        total++;
    }
    *out = first;
    if (contiguous) {
        out->text.len = (size_t)(end - first.text.ptr);
        return KW_OK;
    }
    char *buf = kw_arena_alloc(p->a, total);
    if (!buf)
        return KW_ENOMEM;
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0)
            buf[off++] = '/';
        memcpy(buf + off, segs[i].ptr, segs[i].len);
        off += segs[i].len;
    }
    out->text = (kw_str_t){buf, total};
    return KW_OK;
}

/* The end of a statement: a ';' or a line break (the lexer's SEMI); `empty` when the
 * statement was (the message then lists what it could have been). */
static int expect_terminator(parser_t *p, bool empty)
{
    if (p->cur.kind == KW__TK_SEMI)
        return advance(p);
    if (p->cur.kind == KW__TK_EOF)
        return unexpected(p, "'}' to close the definition");
    return unexpected(p, empty ? "\"relation\", \"permission\", ';' or '}'"
                               : "the end of the statement (a line break or ';')");
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
    int rc = expect_name(p, "a relation, a permission, \"nil\" or '('");
    if (rc == KW_OK)
        rc = advance(p);
    if (rc != KW_OK)
        return rc;
    kw_expr_kind_t kind = KW_EXPR_REF;
    kw__tok_t target = {0};
    if (p->cur.kind == KW__TK_ARROW) {
        kind = KW_EXPR_ARROW;
        if ((rc = advance(p)) != KW_OK ||
            (rc = expect_name(p, "a relation or permission name after '->'")) != KW_OK)
            return rc;
        target = p->cur;
        if ((rc = advance(p)) != KW_OK)
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
            (rc = expect_name(p, "a relation or permission name")) != KW_OK)
            return rc;
        target = p->cur;
        if ((rc = advance(p)) != KW_OK || (rc = expect(p, KW__TK_RPAREN, "')'")) != KW_OK ||
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
                    kw__allowed_src_t *allowed_src, kw__pos_t kw)
{
    if (b->t.n_rels >= KW_MAX_RELATIONS)
        return kw_diag_set(p->diag, KW_ELIMIT, r->line, r->col,
                           "definition \"%.*s\" has more than %d relations and permissions",
                           KW_STR_FMT(b->t.name), KW_MAX_RELATIONS);
    uint32_t n = b->t.n_rels, cap = b->cap_rels, cap2 = b->src.cap_rels, cap3 = b->src.cap_rels;
    int rc = kw__schema_vec_reserve(p->a, (void **)&b->t.rels, n, &cap, n + 1, sizeof(*b->t.rels));
    if (rc == KW_OK)
        rc = kw__schema_vec_reserve(p->a, (void **)&b->src.allowed, n, &cap2, n + 1,
                                    sizeof(*b->src.allowed));
    if (rc == KW_OK)
        rc = kw__schema_vec_reserve(p->a, (void **)&b->src.kw, n, &cap3, n + 1, sizeof(*b->src.kw));
    if (rc != KW_OK)
        return rc;
    b->cap_rels = cap;
    b->src.cap_rels = cap2;
    b->t.rels[n] = *r;
    b->src.allowed[n] = allowed_src;
    b->src.kw[n] = kw;
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
        kw__tok_t cav;
        if ((rc = parse_path(p, "a caveat name or \"expiration\" after \"with\"", &cav)) != KW_OK)
            return rc;
        src->caveat_name = cav.text;
        src->caveat_line = cav.line;
        src->caveat_col = cav.col;
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
    kw__pos_t kw = {p->cur.line, p->cur.col};
    int rc;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect_name(p, "a relation name after \"relation\"")) != KW_OK)
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
        kw__tok_t type;
        if ((rc = parse_path(p, "a subject type (a definition name)", &type)) != KW_OK)
            return rc;
        kw__allowed_src_t s;
        memset(&s, 0, sizeof(s));
        kw_allowed_t al = {KW_TYPE_NONE, KW_REL_NONE, false, false, KW_CAVEAT_NONE};
        s.type_name = type.text;
        s.line = type.line;
        s.col = type.col;
        if (p->cur.kind == KW__TK_HASH) {
            if ((rc = advance(p)) != KW_OK)
                return rc;
            s.rel_line = p->cur.line;
            s.rel_col = p->cur.col;
            if (p->cur.kind == KW__TK_ELLIPSIS) {
                s.rel_name = p->cur.text;
            } else {
                if ((rc = expect_name(p, "a relation name or \"...\" after '#'")) != KW_OK)
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
    return push_rel(p, b, &r, srcs, kw);
}

static int parse_permission(parser_t *p, type_builder_t *b)
{
    kw_relation_t r;
    memset(&r, 0, sizeof(r));
    r.doc = p->cur.doc;
    r.is_permission = true;
    kw__pos_t kw = {p->cur.line, p->cur.col};
    int rc;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect_name(p, "a permission name after \"permission\"")) != KW_OK)
        return rc;
    r.name = p->cur.text;
    r.line = p->cur.line;
    r.col = p->cur.col;
    uint32_t depth;
    if ((rc = advance(p)) != KW_OK ||
        (rc = expect(p, KW__TK_EQ, "'=' and the permission's expression")) != KW_OK ||
        (rc = advance(p)) != KW_OK || (rc = parse_exclude(p, 0, &r.expr, &depth)) != KW_OK)
        return rc;
    return push_rel(p, b, &r, NULL, kw);
}

static int parse_definition(parser_t *p, kw__parsed_t *out)
{
    type_builder_t b;
    memset(&b, 0, sizeof(b));
    b.t.doc = p->cur.doc;
    b.src.def_kw = (kw__pos_t){p->cur.line, p->cur.col};
    int rc;
    kw__tok_t name;
    if ((rc = advance(p)) != KW_OK ||
        (rc = parse_path(p, "a definition name after \"definition\"", &name)) != KW_OK)
        return rc;
    b.t.name = name.text;
    b.t.line = name.line;
    b.t.col = name.col;
    if (out->n_types >= KW_MAX_TYPES)
        return kw_diag_set(p->diag, KW_ELIMIT, b.t.line, b.t.col,
                           "the schema has more than %d definitions", KW_MAX_TYPES);
    if ((rc = expect(p, KW__TK_LBRACE, "'{'")) != KW_OK || (rc = advance(p)) != KW_OK)
        return rc;
    /* SpiceDB's loop: a statement (possibly empty), then its terminator, until '}' */
    for (;;) {
        if (p->cur.kind == KW__TK_RBRACE)
            break;
        bool empty = false;
        if (is_word(&p->cur, "relation"))
            rc = parse_relation(p, &b);
        else if (is_word(&p->cur, "permission"))
            rc = parse_permission(p, &b);
        else
            empty = true;
        if (rc == KW_OK)
            rc = expect_terminator(p, empty);
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
    int rc = expect_name(p, "a parameter type such as int or list<string>");
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

/* caveat := "caveat" PATH "(" param { "," param } ")" "{" CEL "}" */
static int parse_caveat(parser_t *p, kw__parsed_t *out)
{
    kw_caveat_t cv;
    memset(&cv, 0, sizeof(cv));
    cv.doc = p->cur.doc;
    int rc;
    kw__tok_t name;
    if ((rc = advance(p)) != KW_OK ||
        (rc = parse_path(p, "a caveat name after \"caveat\"", &name)) != KW_OK)
        return rc;
    /* any name: SpiceDB validates no pattern or length here (a caveat whose name a
     * relationship cannot spell, over 128 bytes or with capitals, is merely unusable) */
    cv.name = name.text;
    cv.line = name.line;
    cv.col = name.col;
    if ((rc = expect(p, KW__TK_LPAREN, "'(' and the caveat's parameters")) != KW_OK ||
        (rc = advance(p)) != KW_OK)
        return rc;
    uint32_t cap = 0;
    for (;;) {
        if (p->cur.kind == KW__TK_RPAREN && cv.n_params == 0)
            return kw_diag_set(p->diag, KW_ESCHEMA, cv.line, cv.col,
                               "caveat `%.*s` must have at least one parameter defined",
                               KW_STR_FMT(cv.name));
        if ((rc = expect_name(p, "a parameter name")) != KW_OK)
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

/* `use FLAG`; at the `use`. */
static int parse_use(parser_t *p, kw__parsed_t *out, bool seen_definition)
{
    static const struct {
        const char *name;
        unsigned flag;
    } flags[] = {
        {"expiration", F_EXPIRATION},
        {"typechecking", F_TYPECHECKING},
        {"self", F_SELF},
        {"partial", F_PARTIAL},
        {"import", F_IMPORT},
    };
    kw__tok_t use = p->cur;
    int rc = advance(p);
    if (rc != KW_OK)
        return rc;
    if (p->cur.kind != KW__TK_IDENT)
        return unexpected(p, "a flag name after \"use\"");
    for (size_t i = 0; i < KW_ARRAY_LEN(flags); i++) {
        if (!kw_str_eq_c(p->cur.text, flags[i].name))
            continue;
        /* SpiceDB accepts every flag; typechecking, self, partial and import each only
         * enable syntax of their own (type annotations, `self`, partials, imports) that
         * this parser still refuses where it is used, so those flags alone change nothing
         * but the words they make keywords */
        if (seen_definition)
            return kw_diag_set(p->diag, KW_ESCHEMA, use.line, use.col,
                               "`use` expressions must be declared before any definition");
        p->flags |= flags[i].flag;
        if (flags[i].flag == F_EXPIRATION)
            p->use_expiration = out->use_expiration = true;
        return advance(p);
    }
    return kw_diag_set(p->diag, KW_ESCHEMA, p->cur.line, p->cur.col,
                       "unknown use flag: `%.*s`. Options are: expiration, import, partial, self, "
                       "typechecking",
                       (int)(p->cur.text.len > 64 ? 64 : p->cur.text.len), p->cur.text.ptr);
}

/* ---- names (tag-kw-names) ---- */

static int bad_name(parser_t *p, kw__pos_t at, const char *what, kw_str_t name, kw_name_kind_t kind)
{
    return kw_diag_set(p->diag, KW_ESCHEMA, at.line, at.col, "invalid %s name \"%.*s%s\": %s", what,
                       (int)(name.len > 64 ? 64 : name.len), name.ptr, name.len > 64 ? "..." : "",
                       kw_name_rule(kind));
}

/* The names a permission's expression refers to (depth-bounded by the parser). */
static int check_expr_names(parser_t *p, const kw_expr_t *e, kw__pos_t at)
{
    const kw__pexpr_t *n = (const kw__pexpr_t *)e;
    int rc = KW_OK;
    switch (e->kind) {
    case KW_EXPR_REF:
        if (!kw_name_ok(n->name, KW_NAME_RELATION))
            rc = bad_name(p, at, "relation or permission", n->name, KW_NAME_RELATION);
        break;
    case KW_EXPR_ARROW:
    case KW_EXPR_ALL:
        if (!kw_name_ok(n->name, KW_NAME_RELATION))
            rc = bad_name(p, at, "relation", n->name, KW_NAME_RELATION);
        else if (!kw_name_ok(e->target, KW_NAME_RELATION))
            rc = bad_name(p, at, "relation or permission", e->target, KW_NAME_RELATION);
        break;
    default:
        for (uint32_t i = 0; rc == KW_OK && i < e->n_children; i++)
            rc = check_expr_names(p, e->children[i], at);
        break;
    }
    return rc;
}

/* Every name of a parsed schema against SpiceDB's patterns, in the order its compiler
 * validates them (see the top of this file). */
static int check_names(parser_t *p, const kw__parsed_t *ps)
{
    for (uint32_t t = 0; t < ps->n_types; t++) {
        const kw_type_t *ty = &ps->types[t];
        const kw__type_src_t *src = &ps->srcs[t];
        for (uint32_t r = 0; r < ty->n_rels; r++) {
            const kw_relation_t *rel = &ty->rels[r];
            int rc = KW_OK;
            if (rel->is_permission) {
                if (!kw_name_ok(rel->name, KW_NAME_RELATION))
                    rc = bad_name(p, src->kw[r], "permission", rel->name, KW_NAME_RELATION);
                else
                    rc = check_expr_names(p, rel->expr, src->kw[r]);
                if (rc != KW_OK)
                    return rc;
                continue;
            }
            for (uint32_t i = 0; i < rel->n_allowed; i++) {
                const kw__allowed_src_t *al = &src->allowed[r][i];
                kw__pos_t at = {al->line, al->col};
                if (!kw_name_ok(al->type_name, KW_NAME_TYPE))
                    return bad_name(p, at, "subject type", al->type_name, KW_NAME_TYPE);
                if (al->rel_name.len && !kw_str_eq_c(al->rel_name, "...") &&
                    !kw_name_ok(al->rel_name, KW_NAME_RELATION))
                    return bad_name(p, at, "subject relation", al->rel_name, KW_NAME_RELATION);
            }
            if (!kw_name_ok(rel->name, KW_NAME_RELATION))
                return bad_name(p, src->kw[r], "relation", rel->name, KW_NAME_RELATION);
        }
        if (!kw_name_ok(ty->name, KW_NAME_DEFINITION))
            return bad_name(p, src->def_kw, "definition", ty->name, KW_NAME_DEFINITION);
    }
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
        /* at most one terminator before each top-level statement, as in SpiceDB */
        if (p.cur.kind == KW__TK_SEMI) {
            if ((rc = advance(&p)) != KW_OK || p.cur.kind == KW__TK_EOF)
                break;
        }
        if (is_word(&p.cur, "definition")) {
            seen_definition = true;
            rc = parse_definition(&p, out);
        } else if (is_word(&p.cur, "caveat")) {
            seen_definition = true;
            rc = parse_caveat(&p, out);
        } else if (is_word(&p.cur, "use")) {
            rc = parse_use(&p, out, seen_definition);
        } else if ((is_word(&p.cur, "import") && (p.flags & F_IMPORT)) ||
                   (is_word(&p.cur, "partial") && (p.flags & F_PARTIAL))) {
            rc = kw_diag_set(diag, KW_EUNSUPPORTED, p.cur.line, p.cur.col,
                             "composable schemas (\"%.*s\") are not supported yet",
                             KW_STR_FMT(p.cur.text));
        } else {
            rc = unexpected(&p, "\"definition\" or \"caveat\"");
        }
    }
    if (rc == KW_OK)
        rc = check_names(&p, out);
    return rc;
}
