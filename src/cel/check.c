/*
 * cel/check.c - the type checker: cel-go's rules over SpiceDB's environment.
 *
 * Every node gets a static type; `dyn` (an `any` parameter, a map<any> value, a mixed
 * list literal) matches every overload here and is checked again at evaluation. Errors
 * follow cel-go's wording ("undeclared reference to 'x'", "found no matching overload
 * for '_+_' applied to '(int, string)'") with the schema line:col of the node.
 * Identifiers resolve to a parameter or to an enclosing macro's variable (innermost
 * first); each macro variable gets the slot it occupies at evaluation.
 * A `matches` whose pattern is a string literal compiles the pattern here and evaluation
 * reuses the compiled code; an invalid or non-RE2 pattern is, as in SpiceDB, not a schema
 * error but an error of every evaluation that reaches the match.
 * As SpiceDB, every declared parameter must be used by the expression, and the
 * ipaddress type has its in_cidr method but no ipaddress() constructor.
 */
#include "cel_int.h"

#include <stdio.h>
#include <string.h>

const cel_type_t kw__cel_t_dyn = {CK_DYN, NULL, NULL};
const cel_type_t kw__cel_t_null = {CK_NULL, NULL, NULL};
const cel_type_t kw__cel_t_bool = {CK_BOOL, NULL, NULL};
const cel_type_t kw__cel_t_int = {CK_INT, NULL, NULL};
const cel_type_t kw__cel_t_uint = {CK_UINT, NULL, NULL};
const cel_type_t kw__cel_t_double = {CK_DOUBLE, NULL, NULL};
const cel_type_t kw__cel_t_string = {CK_STRING, NULL, NULL};
const cel_type_t kw__cel_t_bytes = {CK_BYTES, NULL, NULL};
const cel_type_t kw__cel_t_duration = {CK_DURATION, NULL, NULL};
const cel_type_t kw__cel_t_timestamp = {CK_TIMESTAMP, NULL, NULL};
const cel_type_t kw__cel_t_ip = {CK_IP, NULL, NULL};
const cel_type_t kw__cel_t_type = {CK_TYPE, NULL, NULL};
const cel_type_t kw__cel_t_opt_dyn = {CK_OPT, &kw__cel_t_dyn, NULL};
const cel_type_t kw__cel_t_list_dyn = {CK_LIST, &kw__cel_t_dyn, NULL};
const cel_type_t kw__cel_t_map_dyn = {CK_MAP, &kw__cel_t_dyn, &kw__cel_t_dyn};

/* A type name for messages, cut to cap: truncation is the intent, which gcc's
 * -Wformat-truncation (at -O3, once inlined with a known cap) cannot know. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
static size_t type_str(const cel_type_t *t, char *buf, size_t cap)
{
    static const char *const names[] = {
        [CK_DYN] = "dyn",
        [CK_NULL] = "null_type",
        [CK_BOOL] = "bool",
        [CK_INT] = "int",
        [CK_UINT] = "uint",
        [CK_DOUBLE] = "double",
        [CK_STRING] = "string",
        [CK_BYTES] = "bytes",
        [CK_DURATION] = "google.protobuf.Duration",
        [CK_TIMESTAMP] = "google.protobuf.Timestamp",
        [CK_LIST] = "list",
        [CK_MAP] = "map",
        [CK_IP] = "IPAddress",
        [CK_TYPE] = "type",
        [CK_UNKNOWN] = "unknown",
        [CK_ERROR] = "error",
    };
    if (cap == 0)
        return 0;
    int n;
    char a[120], b[120];
    if (t->k == CK_OPT) {
        type_str(t->elem, a, sizeof(a));
        n = snprintf(buf, cap, "optional_type(%s)", a);
    } else if (t->k == CK_LIST) {
        type_str(t->elem, a, sizeof(a));
        n = snprintf(buf, cap, "list(%s)", a);
    } else if (t->k == CK_MAP) {
        type_str(t->key, a, sizeof(a));
        type_str(t->elem, b, sizeof(b));
        n = snprintf(buf, cap, "map(%s, %s)", a, b);
    } else {
        n = snprintf(buf, cap, "%s", names[t->k]);
    }
    return n < 0 ? 0 : (size_t)n;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

void kw__cel_type_str(const cel_type_t *t, char *buf, size_t cap)
{
    type_str(t, buf, cap);
}

static kw_str_t trim(kw_str_t s)
{
    while (s.len && (s.ptr[0] == ' ' || s.ptr[0] == '\t' || s.ptr[0] == '\n' || s.ptr[0] == '\r')) {
        s.ptr++;
        s.len--;
    }
    while (s.len && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t' ||
                     s.ptr[s.len - 1] == '\n' || s.ptr[s.len - 1] == '\r'))
        s.len--;
    return s;
}

static int parse_type_rec(kw_arena_t *a, kw_str_t s, int depth, const cel_type_t **out)
{
    static const struct {
        const char *name;
        const cel_type_t *t;
    } basic[] = {
        {"any", &kw__cel_t_dyn},
        {"bool", &kw__cel_t_bool},
        {"int", &kw__cel_t_int},
        {"uint", &kw__cel_t_uint},
        {"double", &kw__cel_t_double},
        {"string", &kw__cel_t_string},
        {"bytes", &kw__cel_t_bytes},
        {"duration", &kw__cel_t_duration},
        {"timestamp", &kw__cel_t_timestamp},
        {"ipaddress", &kw__cel_t_ip},
    };
    if (depth > 16)
        return KW_ESCHEMA;
    s = trim(s);
    for (size_t i = 0; i < KW_ARRAY_LEN(basic); i++)
        if (kw_str_eq_c(s, basic[i].name)) {
            *out = basic[i].t;
            return KW_OK;
        }
    bool is_list = s.len > 5 && memcmp(s.ptr, "list", 4) == 0;
    bool is_map = s.len > 4 && memcmp(s.ptr, "map", 3) == 0;
    if (!is_list && !is_map)
        return KW_ESCHEMA;
    kw_str_t rest = trim((kw_str_t){s.ptr + (is_list ? 4 : 3), s.len - (is_list ? 4 : 3)});
    if (rest.len < 2 || rest.ptr[0] != '<' || rest.ptr[rest.len - 1] != '>')
        return KW_ESCHEMA;
    const cel_type_t *elem;
    int rc = parse_type_rec(a, (kw_str_t){rest.ptr + 1, rest.len - 2}, depth + 1, &elem);
    if (rc != KW_OK)
        return rc;
    cel_type_t *t = kw_arena_alloc(a, sizeof(*t));
    if (!t)
        return KW_ENOMEM;
    t->k = is_list ? CK_LIST : CK_MAP;
    t->elem = elem;
    t->key = is_map ? &kw__cel_t_string : NULL;
    *out = t;
    return KW_OK;
}

int kw__cel_parse_type(kw_arena_t *a, kw_str_t s, const cel_type_t **out)
{
    return parse_type_rec(a, s, 0, out);
}

/* SpiceDB declares a `uint` parameter to cel-go as an int (its values stay unsigned at
 * evaluation), so `n > 5` type-checks where n is a uint. The same holds inside lists and
 * maps. */
int kw__cel_check_type(kw_arena_t *a, const cel_type_t *bind, const cel_type_t **out)
{
    if (bind->k == CK_UINT) {
        *out = &kw__cel_t_int;
        return KW_OK;
    }
    if (bind->k != CK_LIST && bind->k != CK_MAP) {
        *out = bind;
        return KW_OK;
    }
    const cel_type_t *elem;
    int rc = kw__cel_check_type(a, bind->elem, &elem);
    if (rc != KW_OK)
        return rc;
    if (elem == bind->elem) {
        *out = bind;
        return KW_OK;
    }
    cel_type_t *t = kw_arena_alloc(a, sizeof(*t));
    if (!t)
        return KW_ENOMEM;
    *t = *bind;
    t->elem = elem;
    *out = t;
    return KW_OK;
}

/* ---- the checker ---- */

typedef struct scope {
    kw_str_t name;
    const cel_type_t *type;
} scope_t;

typedef struct checker {
    kw_cel_program_t *p;
    kw_diag_t *diag;
    bool *used;          /* [n_params] */
    uint32_t in_map_key; /* > 0 while checking a map literal's key */
    scope_t vars[KW_CEL_MAX_DEPTH + 1];
    uint32_t n_vars;
} checker_t;

static bool is_dyn(const cel_type_t *t)
{
    return t->k == CK_DYN;
}

/* Can a value of type b be used where a is expected (and vice versa): dyn matches all. */
static bool assignable(const cel_type_t *a, const cel_type_t *b)
{
    if (is_dyn(a) || is_dyn(b))
        return true;
    if (a->k != b->k)
        return false;
    if (a->k == CK_LIST || a->k == CK_OPT)
        return assignable(a->elem, b->elem);
    if (a->k == CK_MAP)
        return assignable(a->key, b->key) && assignable(a->elem, b->elem);
    return true;
}

static bool same_type(const cel_type_t *a, const cel_type_t *b)
{
    if (a->k != b->k)
        return false;
    if (a->k == CK_LIST || a->k == CK_OPT)
        return same_type(a->elem, b->elem);
    if (a->k == CK_MAP)
        return same_type(a->key, b->key) && same_type(a->elem, b->elem);
    return true;
}

static int cerr(checker_t *c, const cel_node_t *n, const char *fmt, ...) KW_PRINTF(3, 4);
static int cerr(checker_t *c, const cel_node_t *n, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return kw_diag_set(c->diag, KW_ESCHEMA, n->line, n->col, "caveat expression: %s", msg);
}

static int no_overload(checker_t *c, const cel_node_t *n, const char *fn,
                       const cel_type_t *const *args, uint32_t nargs)
{
    char list[160] = "", one[64];
    size_t used = 0;
    for (uint32_t i = 0; i < nargs; i++) {
        type_str(args[i], one, sizeof(one));
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", one);
        if (w < 0 || (size_t)w >= sizeof(list) - used)
            break;
        used += (size_t)w;
    }
    return cerr(c, n, "found no matching overload for '%s' applied to '(%s)'", fn, list);
}

static const cel_type_t *new_type(checker_t *c, cel_kind_t k, const cel_type_t *elem,
                                  const cel_type_t *key)
{
    cel_type_t *t = kw_arena_alloc(c->p->arena, sizeof(*t));
    if (!t)
        return NULL;
    t->k = k;
    t->elem = elem;
    t->key = key;
    return t;
}

static int check(checker_t *c, cel_node_t *n);

static bool numeric(const cel_type_t *t)
{
    return t->k == CK_INT || t->k == CK_UINT || t->k == CK_DOUBLE;
}

static int check_binop(checker_t *c, cel_node_t *n)
{
    static const char *const names[] = {
        [OP_ADD] = "_+_", [OP_SUB] = "_-_", [OP_MUL] = "_*_", [OP_DIV] = "_/_",
        [OP_MOD] = "_%_", [OP_LT] = "_<_",  [OP_LE] = "_<=_", [OP_GT] = "_>_",
        [OP_GE] = "_>=_", [OP_EQ] = "_==_", [OP_NE] = "_!=_", [OP_IN] = "@in",
    };
    const cel_type_t *l = n->a->type, *r = n->b->type;
    const cel_type_t *args[2] = {l, r};
    cel_op_t op = (cel_op_t)n->op;
    bool any_dyn = is_dyn(l) || is_dyn(r);
    switch (op) {
    case OP_ADD:
    case OP_SUB:
    case OP_MUL:
    case OP_DIV:
    case OP_MOD:
        if (any_dyn) {
            n->type = is_dyn(l) ? r : l;
            /* dyn + x: the result has x's type, except where time arithmetic changes it */
            if (n->type->k == CK_TIMESTAMP || n->type->k == CK_DURATION || is_dyn(n->type))
                n->type = &kw__cel_t_dyn;
            return KW_OK;
        }
        if (l->k == r->k && (l->k == CK_INT || l->k == CK_UINT)) {
            n->type = l;
            return KW_OK;
        }
        if (l->k == r->k && l->k == CK_DOUBLE && op != OP_MOD) {
            n->type = l;
            return KW_OK;
        }
        if (op == OP_ADD && l->k == r->k &&
            (l->k == CK_STRING || l->k == CK_BYTES || l->k == CK_DURATION)) {
            n->type = l;
            return KW_OK;
        }
        if (op == OP_ADD && l->k == CK_LIST && r->k == CK_LIST && assignable(l, r)) {
            n->type = same_type(l, r) ? l : &kw__cel_t_list_dyn;
            return KW_OK;
        }
        if (op == OP_ADD && ((l->k == CK_TIMESTAMP && r->k == CK_DURATION) ||
                             (l->k == CK_DURATION && r->k == CK_TIMESTAMP))) {
            n->type = &kw__cel_t_timestamp;
            return KW_OK;
        }
        if (op == OP_SUB && l->k == CK_DURATION && r->k == CK_DURATION) {
            n->type = l;
            return KW_OK;
        }
        if (op == OP_SUB && l->k == CK_TIMESTAMP && r->k == CK_TIMESTAMP) {
            n->type = &kw__cel_t_duration;
            return KW_OK;
        }
        if (op == OP_SUB && l->k == CK_TIMESTAMP && r->k == CK_DURATION) {
            n->type = &kw__cel_t_timestamp;
            return KW_OK;
        }
        break;
    case OP_LT:
    case OP_LE:
    case OP_GT:
    case OP_GE:
        n->type = &kw__cel_t_bool;
        /* SpiceDB's environment leaves cel-go's cross-type numeric comparisons off: both
         * sides of an ordering have one type (a dyn side is checked at evaluation) */
        if (any_dyn)
            return KW_OK;
        if (l->k == r->k && (numeric(l) || l->k == CK_STRING || l->k == CK_BYTES ||
                             l->k == CK_BOOL || l->k == CK_TIMESTAMP || l->k == CK_DURATION))
            return KW_OK;
        break;
    case OP_EQ:
    case OP_NE:
        n->type = &kw__cel_t_bool;
        if (assignable(l, r))
            return KW_OK;
        break;
    case OP_IN:
        n->type = &kw__cel_t_bool;
        if (is_dyn(r))
            return KW_OK;
        if (r->k == CK_LIST && assignable(l, r->elem))
            return KW_OK;
        if (r->k == CK_MAP && assignable(l, r->key))
            return KW_OK;
        break;
    }
    return no_overload(c, n, names[op], args, 2);
}

/* Compiles a literal pattern now (refusing non-RE2 syntax with the pattern's position). */
static int precompile_regex(checker_t *c, cel_node_t *call, const cel_node_t *pat)
{
    if (pat->kind != N_LIT || pat->val.k != CK_STRING)
        return KW_OK;
    char err[160];
    void *re = NULL;
    int rc = kw__cel_regex_compile(pat->val.v.s, &re, err, sizeof(err));
    if (rc == KW_ENOMEM)
        return rc;
    if (rc != KW_OK) {
        /* SpiceDB accepts the schema and fails the evaluation that reaches the match */
        call->re_err = kw_arena_sprintf(c->p->arena, "invalid regular expression: %s", err);
        return call->re_err ? KW_OK : KW_ENOMEM;
    }
    kw_cel_program_t *p = c->p;
    if (p->n_regexes == p->cap_regexes) {
        uint32_t ncap = p->cap_regexes ? p->cap_regexes * 2 : 4;
        void **nr = kw_reallocarray(p->regexes, ncap, sizeof(*nr));
        if (!nr) {
            kw__cel_regex_free(re);
            return KW_ENOMEM;
        }
        p->regexes = nr;
        p->cap_regexes = ncap;
    }
    p->regexes[p->n_regexes++] = re;
    call->re = re;
    return KW_OK;
}

static const struct {
    const char *name;
    cel_fn_t fn;
} fn_names[] = {
    {"size", F_SIZE},
    {"contains", F_CONTAINS},
    {"startsWith", F_STARTS_WITH},
    {"endsWith", F_ENDS_WITH},
    {"matches", F_MATCHES},
    {"int", F_INT},
    {"uint", F_UINT},
    {"double", F_DOUBLE},
    {"string", F_STRING},
    {"bytes", F_BYTES},
    {"bool", F_BOOL},
    {"timestamp", F_TIMESTAMP},
    {"duration", F_DURATION},
    {"dyn", F_DYN},
    {"type", F_TYPE},
    {"hasValue", F_HAS_VALUE},
    {"value", F_VALUE},
    {"or", F_OR},
    {"orValue", F_OR_VALUE},
    {"in_cidr", F_IN_CIDR},
    {"getFullYear", F_GET_FULL_YEAR},
    {"getMonth", F_GET_MONTH},
    {"getDayOfYear", F_GET_DAY_OF_YEAR},
    {"getDayOfMonth", F_GET_DAY_OF_MONTH},
    {"getDate", F_GET_DATE},
    {"getDayOfWeek", F_GET_DAY_OF_WEEK},
    {"getHours", F_GET_HOURS},
    {"getMinutes", F_GET_MINUTES},
    {"getSeconds", F_GET_SECONDS},
    {"getMilliseconds", F_GET_MILLISECONDS},
};

/* Is t one of the kinds (dyn always is)? kinds ends with CK_ERROR. */
static bool kind_in(const cel_type_t *t, const cel_kind_t *kinds)
{
    if (is_dyn(t))
        return true;
    for (; *kinds != CK_ERROR; kinds++)
        if (t->k == *kinds)
            return true;
    return false;
}

static int check_call(checker_t *c, cel_node_t *n)
{
    cel_fn_t fn = F_NONE;
    for (size_t i = 0; i < KW_ARRAY_LEN(fn_names); i++)
        if (kw_str_eq_c(n->name, fn_names[i].name))
            fn = fn_names[i].fn;
    if (n->slot == 1) { /* optional.of / optional.ofNonZeroValue / optional.none */
        fn = kw_str_eq_c(n->name, "of")               ? F_OPT_OF
             : kw_str_eq_c(n->name, "ofNonZeroValue") ? F_OPT_OF_NON_ZERO
             : kw_str_eq_c(n->name, "none")           ? F_OPT_NONE
                                                      : F_NONE;
        if (fn == F_NONE)
            return cerr(c, n, "undeclared reference to 'optional.%.*s'",
                        (int)(n->name.len > 60 ? 60 : n->name.len), n->name.ptr);
    }
    bool member = n->a != NULL;
    /* all argument types, receiver first */
    const cel_type_t *at[4] = {NULL, NULL, NULL, NULL};
    uint32_t na = 0;
    if (member)
        at[na++] = n->a->type;
    for (uint32_t i = 0; i < n->n_args && na < KW_ARRAY_LEN(at); i++)
        at[na++] = n->args[i]->type;
    uint32_t total = (member ? 1u : 0u) + n->n_args;
    char fname[80];
    snprintf(fname, sizeof(fname), "%.*s", (int)(n->name.len > 60 ? 60 : n->name.len), n->name.ptr);
    if (fn == F_NONE)
        return cerr(c, n, "undeclared reference to '%s'", fname);
    n->op = (uint8_t)fn;
    static const cel_kind_t k_sized[] = {CK_STRING, CK_BYTES, CK_LIST, CK_MAP, CK_ERROR};
    static const cel_kind_t k_str[] = {CK_STRING, CK_ERROR};
    static const cel_kind_t k_int_from[] = {CK_INT,       CK_UINT,     CK_DOUBLE, CK_STRING,
                                            CK_TIMESTAMP, CK_DURATION, CK_ERROR};
    static const cel_kind_t k_num_from[] = {CK_INT, CK_UINT, CK_DOUBLE, CK_STRING, CK_ERROR};
    static const cel_kind_t k_string_from[] = {CK_INT,       CK_UINT,     CK_DOUBLE,
                                               CK_BOOL,      CK_STRING,   CK_BYTES,
                                               CK_TIMESTAMP, CK_DURATION, CK_ERROR};
    static const cel_kind_t k_bytes_from[] = {CK_STRING, CK_BYTES, CK_ERROR};
    static const cel_kind_t k_bool_from[] = {CK_BOOL, CK_STRING, CK_ERROR};
    static const cel_kind_t k_ts_from[] = {CK_STRING, CK_INT, CK_TIMESTAMP, CK_ERROR};
    static const cel_kind_t k_dur_from[] = {CK_STRING, CK_DURATION, CK_ERROR};
    static const cel_kind_t k_ts[] = {CK_TIMESTAMP, CK_ERROR};
    static const cel_kind_t k_time[] = {CK_TIMESTAMP, CK_DURATION, CK_ERROR};
    static const cel_kind_t k_ip[] = {CK_IP, CK_ERROR};
    bool ok = false;
    const cel_type_t *res = &kw__cel_t_bool;
    switch (fn) {
    case F_SIZE:
        ok = total == 1 && kind_in(at[0], k_sized);
        res = &kw__cel_t_int;
        break;
    case F_CONTAINS:
    case F_STARTS_WITH:
    case F_ENDS_WITH:
        ok = member && total == 2 && kind_in(at[0], k_str) && kind_in(at[1], k_str);
        break;
    case F_MATCHES:
        ok = total == 2 && kind_in(at[0], k_str) && kind_in(at[1], k_str);
        if (ok) {
            int rc = precompile_regex(c, n, n->args[n->n_args - 1]);
            if (rc != KW_OK)
                return rc;
        }
        break;
    case F_INT:
    case F_UINT:
    case F_DOUBLE:
        ok = !member && total == 1 && kind_in(at[0], fn == F_INT ? k_int_from : k_num_from);
        res = fn == F_INT ? &kw__cel_t_int : fn == F_UINT ? &kw__cel_t_uint : &kw__cel_t_double;
        break;
    case F_STRING:
        ok = !member && total == 1 && kind_in(at[0], k_string_from);
        res = &kw__cel_t_string;
        break;
    case F_BYTES:
        ok = !member && total == 1 && kind_in(at[0], k_bytes_from);
        res = &kw__cel_t_bytes;
        break;
    case F_BOOL:
        ok = !member && total == 1 && kind_in(at[0], k_bool_from);
        break;
    case F_TIMESTAMP:
        ok = !member && total == 1 && kind_in(at[0], k_ts_from);
        res = &kw__cel_t_timestamp;
        break;
    case F_DURATION:
        ok = !member && total == 1 && kind_in(at[0], k_dur_from);
        res = &kw__cel_t_duration;
        break;
    case F_DYN:
        ok = !member && total == 1;
        res = &kw__cel_t_dyn;
        break;
    case F_TYPE:
        ok = !member && total == 1;
        res = &kw__cel_t_type;
        break;
    case F_OPT_OF:
    case F_OPT_OF_NON_ZERO:
        ok = !member && total == 1;
        res = ok ? new_type(c, CK_OPT, at[0], NULL) : NULL;
        if (ok && !res)
            return KW_ENOMEM;
        break;
    case F_OPT_NONE:
        ok = !member && total == 0;
        res = &kw__cel_t_opt_dyn;
        break;
    case F_HAS_VALUE:
    case F_VALUE:
        ok = member && total == 1 && (at[0]->k == CK_OPT || is_dyn(at[0]));
        if (ok)
            res = fn == F_HAS_VALUE ? &kw__cel_t_bool
                  : is_dyn(at[0])   ? &kw__cel_t_dyn
                                    : at[0]->elem;
        break;
    case F_OR:
        ok = member && total == 2 && (at[0]->k == CK_OPT || is_dyn(at[0])) &&
             (at[1]->k == CK_OPT || is_dyn(at[1])) && assignable(at[0], at[1]);
        if (ok)
            res = at[0];
        break;
    case F_OR_VALUE:
        ok = member && total == 2 && (at[0]->k == CK_OPT || is_dyn(at[0])) &&
             (is_dyn(at[0]) || assignable(at[0]->elem, at[1]));
        if (ok)
            res = is_dyn(at[0]) ? at[1] : at[0]->elem;
        break;
    case F_IN_CIDR:
        ok = member && total == 2 && kind_in(at[0], k_ip) && kind_in(at[1], k_str);
        break;
    case F_GET_FULL_YEAR:
    case F_GET_MONTH:
    case F_GET_DAY_OF_YEAR:
    case F_GET_DAY_OF_MONTH:
    case F_GET_DATE:
    case F_GET_DAY_OF_WEEK:
        ok = member && (total == 1 || total == 2) && kind_in(at[0], k_ts) &&
             (total == 1 || kind_in(at[1], k_str));
        res = &kw__cel_t_int;
        break;
    case F_GET_HOURS:
    case F_GET_MINUTES:
    case F_GET_SECONDS:
    case F_GET_MILLISECONDS:
        /* on a timestamp (optionally in a time zone), or a duration's total */
        ok = member && kind_in(at[0], k_time) &&
             (total == 1 || (total == 2 && at[0]->k != CK_DURATION && kind_in(at[1], k_str)));
        res = &kw__cel_t_int;
        break;
    case F_NONE:
        break;
    }
    if (!ok) {
        if (total > KW_ARRAY_LEN(at))
            return cerr(c, n, "too many arguments to '%s'", fname);
        return no_overload(c, n, fname, at, na);
    }
    n->type = res;
    return KW_OK;
}

static int check_comp(checker_t *c, cel_node_t *n)
{
    const cel_type_t *r = n->a->type;
    const cel_type_t *var;
    if (r->k == CK_LIST)
        var = r->elem;
    else if (r->k == CK_MAP)
        var = r->key;
    else if (is_dyn(r))
        var = &kw__cel_t_dyn;
    else {
        char ts[64];
        type_str(r, ts, sizeof(ts));
        return cerr(c, n, "expression of type '%s' cannot be the range of a comprehension", ts);
    }
    if (c->n_vars >= KW_ARRAY_LEN(c->vars))
        return cerr(c, n, "macros nested too deeply");
    n->slot = (int32_t)c->n_vars;
    c->vars[c->n_vars].name = n->name;
    c->vars[c->n_vars].type = var;
    c->n_vars++;
    if (c->n_vars > c->p->max_iter)
        c->p->max_iter = c->n_vars;
    int rc = KW_OK;
    if (n->b && (rc = check(c, n->b)) == KW_OK && n->b->type->k != CK_BOOL && !is_dyn(n->b->type))
        rc = cerr(c, n->b, "a macro's predicate must be bool");
    if (rc == KW_OK && n->c)
        rc = check(c, n->c);
    c->n_vars--;
    if (rc != KW_OK)
        return rc;
    switch ((cel_macro_t)n->op) {
    case M_ALL:
    case M_EXISTS:
    case M_EXISTS_ONE:
        n->type = &kw__cel_t_bool;
        break;
    case M_MAP:
        n->type = new_type(c, CK_LIST, n->c->type, NULL);
        break;
    case M_FILTER:
        n->type = new_type(c, CK_LIST, var, NULL);
        break;
    }
    return n->type ? KW_OK : KW_ENOMEM;
}

static const cel_type_t *join(checker_t *c, cel_node_t **items, uint32_t n, uint32_t stride,
                              uint32_t off)
{
    const cel_type_t *t = NULL;
    (void)c;
    for (uint32_t i = off; i < n; i += stride) {
        const cel_type_t *x = items[i]->type;
        /* [?x] and {?k: v} hold x's and v's value, not the optional */
        const cel_node_t *marker = stride == 2 ? items[i - off] : items[i];
        if (marker->opt_entry && (stride == 1 || off == 1) && x->k == CK_OPT)
            x = x->elem;
        if (!t)
            t = x;
        else if (!same_type(t, x))
            return &kw__cel_t_dyn;
    }
    return t ? t : &kw__cel_t_dyn;
}

/* google.protobuf.Timestamp and google.protobuf.Duration name the time types. */
static bool qualified_type(const cel_node_t *n, cel_kind_t *k)
{
    if (n->kind != N_SELECT || n->a->kind != N_SELECT || n->a->a->kind != N_IDENT ||
        !kw_str_eq_c(n->a->a->name, "google") || !kw_str_eq_c(n->a->name, "protobuf"))
        return false;
    if (kw_str_eq_c(n->name, "Timestamp"))
        *k = CK_TIMESTAMP;
    else if (kw_str_eq_c(n->name, "Duration"))
        *k = CK_DURATION;
    else
        return false;
    return true;
}

static bool declared(const checker_t *c, const char *name)
{
    for (size_t i = 0; i < c->p->n_params; i++)
        if (kw_str_eq_c(c->p->params[i].name, name))
            return true;
    for (uint32_t i = 0; i < c->n_vars; i++)
        if (kw_str_eq_c(c->vars[i].name, name))
            return true;
    return false;
}

static int check(checker_t *c, cel_node_t *n)
{
    int rc;
    cel_kind_t qk;
    if (n->kind == N_CALL && n->a && n->a->kind == N_IDENT && kw_str_eq_c(n->a->name, "optional") &&
        !declared(c, "optional")) {
        n->a = NULL; /* optional.of(x) and friends: functions of the optional namespace */
        n->slot = 1;
    }
    if (qualified_type(n, &qk)) {
        bool shadowed = false; /* a parameter named google wins */
        for (size_t i = 0; i < c->p->n_params; i++)
            shadowed = shadowed || kw_str_eq_c(c->p->params[i].name, "google");
        for (uint32_t i = 0; i < c->n_vars; i++)
            shadowed = shadowed || kw_str_eq_c(c->vars[i].name, "google");
        if (!shadowed) {
            n->kind = N_LIT;
            n->val.k = CK_TYPE;
            n->val.v.i = qk;
            n->type = &kw__cel_t_type;
            return KW_OK;
        }
    }
    /* children first (macros bind a variable for theirs) */
    if (n->kind != N_COMP) {
        if (n->a && (rc = check(c, n->a)) != KW_OK)
            return rc;
        if (n->b && (rc = check(c, n->b)) != KW_OK)
            return rc;
        if (n->c && (rc = check(c, n->c)) != KW_OK)
            return rc;
        for (uint32_t i = 0; i < n->n_args; i++) {
            /* SpiceDB's unused-parameter walk skips map literal keys */
            bool key = n->kind == N_MAP && i % 2 == 0;
            c->in_map_key += key;
            rc = check(c, n->args[i]);
            c->in_map_key -= key;
            if (rc != KW_OK)
                return rc;
        }
    } else if ((rc = check(c, n->a)) != KW_OK) {
        return rc;
    }
    char ts[96];
    switch (n->kind) {
    case N_LIT:
        switch (n->val.k) {
        case CK_NULL:
            n->type = &kw__cel_t_null;
            break;
        case CK_BOOL:
            n->type = &kw__cel_t_bool;
            break;
        case CK_INT:
            n->type = &kw__cel_t_int;
            break;
        case CK_UINT:
            n->type = &kw__cel_t_uint;
            break;
        case CK_DOUBLE:
            n->type = &kw__cel_t_double;
            break;
        case CK_STRING:
            n->type = &kw__cel_t_string;
            break;
        case CK_BYTES:
            n->type = &kw__cel_t_bytes;
            break;
        default:
            return KW_EINTERNAL;
        }
        return KW_OK;
    case N_IDENT:
        for (size_t i = 0; i < c->p->n_params && !c->in_map_key; i++)
            if (kw_str_eq(c->p->params[i].name, n->name))
                c->used[i] = true; /* by name, as SpiceDB counts references */
        for (uint32_t i = c->n_vars; i-- > 0;)
            if (kw_str_eq(c->vars[i].name, n->name)) {
                n->slot = -(int32_t)i - 1;
                n->type = c->vars[i].type;
                return KW_OK;
            }
        for (size_t i = 0; i < c->p->n_params; i++)
            if (kw_str_eq(c->p->params[i].name, n->name)) {
                n->slot = (int32_t)i;
                n->type = c->p->ptypes[i];
                return KW_OK;
            }
        {
            /* the names of types are type values: type(x) == int */
            static const struct {
                const char *name;
                cel_kind_t k;
            } types[] = {{"int", CK_INT},   {"uint", CK_UINT},     {"double", CK_DOUBLE},
                         {"bool", CK_BOOL}, {"string", CK_STRING}, {"bytes", CK_BYTES},
                         {"list", CK_LIST}, {"map", CK_MAP},       {"null_type", CK_NULL},
                         {"type", CK_TYPE}};
            for (size_t i = 0; i < KW_ARRAY_LEN(types); i++)
                if (kw_str_eq_c(n->name, types[i].name)) {
                    n->kind = N_LIT;
                    n->val.k = CK_TYPE;
                    n->val.v.i = types[i].k;
                    n->type = &kw__cel_t_type;
                    return KW_OK;
                }
        }
        return cerr(c, n, "undeclared reference to '%.*s'",
                    (int)(n->name.len > 64 ? 64 : n->name.len), n->name.ptr);
    case N_SELECT:
    case N_HAS: {
        const cel_type_t *t = n->a->type;
        bool wrap = n->kind == N_SELECT && (n->op || t->k == CK_OPT);
        if (n->kind == N_SELECT && t->k == CK_OPT)
            t = t->elem; /* selection through an optional stays optional */
        if (wrap) {
            const cel_type_t *f = NULL;
            if (is_dyn(t))
                f = &kw__cel_t_dyn;
            else if (t->k == CK_MAP && (is_dyn(t->key) || t->key->k == CK_STRING))
                f = t->elem;
            if (!f) {
                type_str(t, ts, sizeof(ts));
                return cerr(c, n, "type '%s' does not support field selection", ts);
            }
            n->type = new_type(c, CK_OPT, f, NULL);
            return n->type ? KW_OK : KW_ENOMEM;
        }
        if (is_dyn(t)) {
            n->type = n->kind == N_HAS ? &kw__cel_t_bool : &kw__cel_t_dyn;
            return KW_OK;
        }
        if (t->k == CK_MAP && (is_dyn(t->key) || t->key->k == CK_STRING)) {
            n->type = n->kind == N_HAS ? &kw__cel_t_bool : t->elem;
            return KW_OK;
        }
        type_str(t, ts, sizeof(ts));
        return cerr(c, n, "type '%s' does not support field selection", ts);
    }
    case N_INDEX: {
        const cel_type_t *t = n->a->type, *i = n->b->type;
        const cel_type_t *args[2] = {t, i};
        if (n->op || t->k == CK_OPT) {
            if (t->k == CK_OPT)
                t = t->elem;
            const cel_type_t *e = NULL;
            if (is_dyn(t))
                e = &kw__cel_t_dyn;
            else if (t->k == CK_LIST && (i->k == CK_INT || is_dyn(i)))
                e = t->elem;
            else if (t->k == CK_MAP && assignable(t->key, i))
                e = t->elem;
            if (!e)
                return no_overload(c, n, n->op ? "_[?_]" : "_[_]", args, 2);
            n->type = new_type(c, CK_OPT, e, NULL);
            return n->type ? KW_OK : KW_ENOMEM;
        }
        if (is_dyn(t)) {
            n->type = &kw__cel_t_dyn;
            return KW_OK;
        }
        if (t->k == CK_LIST && (i->k == CK_INT || is_dyn(i))) {
            n->type = t->elem;
            return KW_OK;
        }
        if (t->k == CK_MAP && assignable(t->key, i)) {
            n->type = t->elem;
            return KW_OK;
        }
        return no_overload(c, n, "_[_]", args, 2);
    }
    case N_CALL:
        return check_call(c, n);
    case N_LIST: {
        for (uint32_t i = 0; i < n->n_args; i++) {
            const cel_type_t *t = n->args[i]->type;
            if (n->args[i]->opt_entry && t->k != CK_OPT && !is_dyn(t)) {
                type_str(t, ts, sizeof(ts));
                return cerr(c, n->args[i], "an optional element must be optional, not '%s'", ts);
            }
        }
        const cel_type_t *e = join(c, n->args, n->n_args, 1, 0);
        n->type = new_type(c, CK_LIST, e, NULL);
        return n->type ? KW_OK : KW_ENOMEM;
    }
    case N_MAP: {
        for (uint32_t i = 0; i < n->n_args; i += 2) {
            cel_kind_t k = n->args[i]->type->k;
            if (k != CK_INT && k != CK_UINT && k != CK_BOOL && k != CK_STRING && k != CK_DYN) {
                type_str(n->args[i]->type, ts, sizeof(ts));
                return cerr(c, n->args[i], "unsupported map key type: %s", ts);
            }
        }
        for (uint32_t i = 0; i < n->n_args; i += 2) {
            const cel_type_t *t = n->args[i + 1]->type;
            if (n->args[i]->opt_entry && t->k != CK_OPT && !is_dyn(t)) {
                type_str(t, ts, sizeof(ts));
                return cerr(c, n->args[i + 1],
                            "an optional entry's value must be optional, not '%s'", ts);
            }
        }
        const cel_type_t *k = join(c, n->args, n->n_args, 2, 0);
        const cel_type_t *v = join(c, n->args, n->n_args, 2, 1);
        n->type = new_type(c, CK_MAP, v, k);
        return n->type ? KW_OK : KW_ENOMEM;
    }
    case N_AND:
    case N_OR:
        for (uint32_t i = 0; i < n->n_args; i++) {
            const cel_type_t *t = n->args[i]->type;
            if (t->k != CK_BOOL && !is_dyn(t)) {
                const cel_type_t *args[2] = {n->args[i > 0 ? i - 1 : 0]->type, t};
                return no_overload(c, n->args[i], n->kind == N_AND ? "_&&_" : "_||_", args, 2);
            }
        }
        n->type = &kw__cel_t_bool;
        return KW_OK;
    case N_NOT:
        if (n->a->type->k != CK_BOOL && !is_dyn(n->a->type))
            return no_overload(c, n, "!_", &n->a->type, 1);
        n->type = &kw__cel_t_bool;
        return KW_OK;
    case N_NEG: {
        cel_kind_t k = n->a->type->k;
        if (k != CK_INT && k != CK_DOUBLE && k != CK_DYN)
            return no_overload(c, n, "-_", &n->a->type, 1);
        n->type = n->a->type;
        return KW_OK;
    }
    case N_BINOP:
        return check_binop(c, n);
    case N_COND: {
        const cel_type_t *args[3] = {n->a->type, n->b->type, n->c->type};
        if ((n->a->type->k != CK_BOOL && !is_dyn(n->a->type)) ||
            !assignable(n->b->type, n->c->type))
            return no_overload(c, n, "_?_:_", args, 3);
        n->type = is_dyn(n->b->type) ? n->c->type : n->b->type;
        if (!same_type(n->b->type, n->c->type))
            n->type = &kw__cel_t_dyn;
        return KW_OK;
    }
    case N_COMP:
        return check_comp(c, n);
    }
    return KW_EINTERNAL;
}

int kw__cel_check(kw_cel_program_t *p, kw_diag_t *diag)
{
    checker_t *c = kw_calloc(1, sizeof(*c));
    bool *used = kw_calloc(p->n_params ? p->n_params : 1, sizeof(*used));
    if (!c || !used) {
        kw_free(c);
        kw_free(used);
        return KW_ENOMEM;
    }
    c->p = p;
    c->diag = diag;
    c->used = used;
    int rc = check(c, p->root);
    if (rc == KW_OK && p->root->type->k != CK_BOOL) {
        char ts[96];
        type_str(p->root->type, ts, sizeof(ts));
        rc = kw_diag_set(diag, KW_ESCHEMA, p->root->line, p->root->col,
                         "caveat expression must result in a boolean value: found `%s`", ts);
    }
    for (size_t i = 0; rc == KW_OK && i < p->n_params; i++)
        if (!used[i])
            rc = kw_diag_set(diag, KW_ESCHEMA, p->params[i].line, p->params[i].col,
                             "parameter `%.*s` is unused", KW_STR_FMT(p->params[i].name));
    kw_free(used);
    kw_free(c);
    return rc;
}
