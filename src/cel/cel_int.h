/*
 * cel/cel_int.h - internals shared by the CEL lexer/parser, type checker, evaluator and
 * function library.
 *
 * Pipeline: parse.c turns the expression text into an AST (arena-allocated, owned by the
 * program); check.c resolves identifiers, picks overloads and gives every node a static
 * type (cel-go's checker rules, SpiceDB's environment); eval.c walks the AST over values
 * (value.c) with partial evaluation; funcs.c holds the standard functions; regex.c the
 * `matches` engine (PCRE2 held to RE2's language); time.c timestamps and durations.
 *
 * Ownership: a program owns one arena holding its AST, types and copied text, plus the
 *   PCRE2 codes of constant patterns (freed by kw_cel_program_free). A bound context owns
 *   one arena with its values. An evaluation allocates its temporaries in a scratch arena
 *   freed before kw_cel_eval returns. Values never own memory: they point into one of
 *   those arenas, and nothing mutates a value once made.
 * Threads: programs and contexts are read-only after construction.
 */
#ifndef KW_CEL_CEL_INT_H
#define KW_CEL_CEL_INT_H

#include "cel.h"

/* ---- types and value kinds (one enum: a value's kind is its type's kind) ---- */
typedef enum {
    CK_DYN = 0, /* type only: any value (`any`, and what the checker cannot know) */
    CK_NULL,
    CK_BOOL,
    CK_INT,
    CK_UINT,
    CK_DOUBLE,
    CK_STRING,
    CK_BYTES,
    CK_DURATION,
    CK_TIMESTAMP,
    CK_LIST,
    CK_MAP,
    CK_IP,
    CK_OPT,     /* optional(T): v.opt is the value, NULL for optional.none() */
    CK_TYPE,    /* a type value (`type(x)`, `int`): v.i holds the cel_kind_t it names */
    CK_UNKNOWN, /* value only: depends on parameters not given */
    CK_ERROR,   /* value only: a runtime error (absorbed by && / || as in CEL) */
} cel_kind_t;

typedef struct cel_type {
    cel_kind_t k;
    const struct cel_type *elem; /* LIST: element type; MAP: value type */
    const struct cel_type *key;  /* MAP: key type */
} cel_type_t;

extern const cel_type_t kw__cel_t_dyn, kw__cel_t_null, kw__cel_t_bool, kw__cel_t_int,
    kw__cel_t_uint, kw__cel_t_double, kw__cel_t_string, kw__cel_t_bytes, kw__cel_t_duration,
    kw__cel_t_timestamp, kw__cel_t_ip, kw__cel_t_list_dyn, kw__cel_t_map_dyn, kw__cel_t_type,
    kw__cel_t_opt_dyn;

/* Appends the CEL spelling of t ("list(int)", "map(string, dyn)") to buf. */
void kw__cel_type_str(const cel_type_t *t, char *buf, size_t cap);

/* ---- values ---- */
typedef struct cel_val cel_val_t;

typedef struct cel_list {
    const cel_val_t *items;
    uint32_t n;
} cel_list_t;

typedef struct cel_map {
    const cel_val_t *keys;
    const cel_val_t *vals;
    uint32_t n;
} cel_map_t;

typedef struct cel_ip {
    uint8_t b[16];
    bool v6;
    uint8_t zone_len; /* IPv6 scope zone ("fe80::1%eth0"), as Go's netip keeps it */
    char zone[31];
} cel_ip_t;

struct cel_val {
    cel_kind_t k;
    union {
        bool b;
        int64_t i; /* INT; DURATION in nanoseconds (Go's time.Duration, as cel-go) */
        uint64_t u;
        double d;
        kw_str_t s; /* STRING (valid UTF-8), BYTES */
        struct {
            int64_t sec; /* seconds since the Unix epoch, years 0001..9999 */
            int32_t nsec;
            int32_t off; /* the offset it was written with, seconds east of UTC: kept for
                            string() as Go keeps a time's location; never compared */
        } ts;
        const cel_list_t *list;
        const cel_map_t *map;
        const cel_ip_t *ip;
        const uint64_t *unknown; /* bitset over the program's parameters */
        const char *err;         /* NUL-terminated message */
        const cel_val_t *opt;    /* CK_OPT: the value held, NULL when none */
    } v;
};

/* ---- AST ---- */
typedef enum {
    N_LIT = 1, /* a constant: val */
    N_IDENT,   /* slot >= 0: parameter index; slot < 0: comprehension variable -(slot+1) */
    N_SELECT,  /* a.name; op 1: a.?name (optional) */
    N_HAS,     /* has(a.name) */
    N_INDEX,   /* a[b]; op 1: a[?b] (optional) */
    N_CALL,    /* [a.]name(args...) */
    N_LIST,    /* [args...] */
    N_MAP,     /* {args[0]: args[1], ...} */
    N_AND,     /* args[0] && args[1] && ... */
    N_OR,
    N_NOT,   /* !a */
    N_NEG,   /* -a */
    N_BINOP, /* a op b */
    N_COND,  /* a ? b : c */
    N_COMP,  /* macro over a: all/exists/exists_one/map/filter; b predicate, c transform */
} cel_node_kind_t;

typedef enum {
    OP_ADD = 1,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_MOD,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_EQ,
    OP_NE,
    OP_IN,
} cel_op_t;

typedef enum {
    M_ALL = 1,
    M_EXISTS,
    M_EXISTS_ONE,
    M_MAP, /* b: filter predicate or NULL, c: transform */
    M_FILTER,
} cel_macro_t;

typedef enum {
    F_NONE = 0,
    F_SIZE,
    F_CONTAINS,
    F_STARTS_WITH,
    F_ENDS_WITH,
    F_MATCHES,
    F_INT,
    F_UINT,
    F_DOUBLE,
    F_STRING,
    F_BYTES,
    F_BOOL,
    F_TIMESTAMP,
    F_DURATION,
    F_DYN,
    F_TYPE,
    F_OPT_OF, /* optional.of(x) */
    F_OPT_OF_NON_ZERO,
    F_OPT_NONE,
    F_HAS_VALUE, /* o.hasValue() */
    F_VALUE,
    F_OR,
    F_OR_VALUE,
    F_IN_CIDR,
    F_GET_FULL_YEAR,
    F_GET_MONTH,
    F_GET_DAY_OF_YEAR,
    F_GET_DAY_OF_MONTH,
    F_GET_DATE,
    F_GET_DAY_OF_WEEK,
    F_GET_HOURS,
    F_GET_MINUTES,
    F_GET_SECONDS,
    F_GET_MILLISECONDS,
} cel_fn_t;

typedef struct cel_node {
    cel_node_kind_t kind;
    uint8_t op;             /* cel_op_t for N_BINOP, cel_macro_t for N_COMP, cel_fn_t for N_CALL */
    uint32_t line, col;     /* in the schema text */
    uint32_t depth;         /* height of this subtree (bounded by KW_CEL_MAX_DEPTH) */
    const cel_type_t *type; /* set by the checker */
    cel_val_t val;          /* N_LIT */
    kw_str_t name;          /* IDENT, SELECT, HAS: field; CALL: function; COMP: variable */
    int32_t slot;           /* IDENT: see above; COMP: the variable's slot */
    struct cel_node *a, *b, *c;
    struct cel_node **args; /* CALL args, LIST items, MAP key/value pairs, AND/OR terms */
    uint32_t n_args;
    bool opt_entry;     /* `[?x]` list element / `{?k: v}` map key: kept only when set */
    void *re;           /* CALL matches with a constant pattern: its compiled pcre2_code */
    const char *re_err; /* ... or why that pattern does not compile (reported at evaluation) */
} cel_node_t;

/* The compiled program. */
struct kw_cel_program {
    kw_arena_t *arena;
    kw_cel_param_t *params;    /* names and types copied into the arena */
    const cel_type_t **ptypes; /* as the checker sees them */
    const cel_type_t **btypes; /* as context values convert (uint stays uint) */
    size_t n_params;
    size_t n_words; /* 64-bit words of an unknown-parameter bitset */
    cel_node_t *root;
    uint32_t max_iter; /* comprehension nesting: slots needed at evaluation */
    void **regexes;    /* pcre2 codes to free */
    uint32_t n_regexes, cap_regexes;
    size_t memory;
};

struct kw_cel_ctx {
    kw_arena_t *arena;
    const kw_cel_program_t *p;
    cel_val_t *vals;   /* [n_params] */
    bool *present;     /* [n_params] */
    const char **errs; /* [n_params]: conversion errors kept by KW_CEL_BIND_DEFER (NULL: none) */
};

/* ---- parse.c ---- */
typedef struct cel_parse_in {
    kw_str_t text;
    uint32_t line, col; /* schema position of text's first byte */
    kw_arena_t *a;
    kw_diag_t *diag;
} cel_parse_in_t;
KW_NODISCARD int kw__cel_parse(const cel_parse_in_t *in, cel_node_t **out);
/* Turns a position inside the expression (1-based line/col there) into schema text. */
void kw__cel_pos(const cel_parse_in_t *in, uint32_t l, uint32_t c, uint32_t *line, uint32_t *col);

/* ---- check.c ---- */
KW_NODISCARD int kw__cel_check(kw_cel_program_t *p, kw_diag_t *diag);
/* Parses a declared parameter type ("list<string>") into the program's arena: the type
 * a context value converts to. */
KW_NODISCARD int kw__cel_parse_type(kw_arena_t *a, kw_str_t s, const cel_type_t **out);
/* The type the checker sees for a parameter of that type (uint reads as int). */
KW_NODISCARD int kw__cel_check_type(kw_arena_t *a, const cel_type_t *bind, const cel_type_t **out);

/* ---- value.c ---- */
cel_val_t kw__cel_err(const char *msg);
cel_val_t kw__cel_bool(bool b);
bool kw__cel_is_numeric(cel_kind_t k);
/* Heterogeneous equality (cel-go): numbers compare by value across int/uint/double,
 * values of other different kinds are unequal. Recurses into lists and maps. */
bool kw__cel_equal(const cel_val_t *a, const cel_val_t *b);
/* Ordering of comparable values: -1, 0, 1; 2 when unordered (NaN); -2 when the kinds
 * do not compare (no such overload). */
int kw__cel_compare(const cel_val_t *a, const cel_val_t *b);
/* Converts one JSON value to type t (SpiceDB's rules); on failure writes a message to
 * err (cap bytes) and returns KW_EINVAL. */
struct json_t;
KW_NODISCARD int kw__cel_from_json(kw_arena_t *a, const cel_type_t *t, struct json_t *j, int depth,
                                   cel_val_t *out, char *err, size_t cap);
KW_NODISCARD int kw__cel_parse_ip(kw_str_t s, cel_ip_t *out);

/* ---- time.c ---- */
#define KW_CEL_TS_MIN (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define KW_CEL_TS_MAX (253402300799LL) /* 9999-12-31T23:59:59Z */
/* RFC 3339 (Go's time.RFC3339 parse: fractional seconds allowed, Z or +hh:mm). */
KW_NODISCARD int kw__cel_parse_timestamp(kw_str_t s, int64_t *sec, int32_t *nsec, int32_t *off);
/* Go's time.ParseDuration: "1h30m", "-1.5s", "300ms", "0". */
KW_NODISCARD int kw__cel_parse_duration(kw_str_t s, int64_t *ns);
/* Formats as cel-go does: RFC 3339 at the time's own offset with nanoseconds trimmed
 * ("Z" for offset 0); "<seconds>s". */
void kw__cel_format_timestamp(int64_t sec, int32_t nsec, int32_t off, char *buf, size_t cap);
void kw__cel_format_duration(int64_t ns, char *buf, size_t cap);
/* Civil date of a Unix second shifted by off seconds. */
void kw__cel_civil(int64_t sec, int *year, int *month, int *mday, int *yday, int *wday, int *hour,
                   int *min, int *s);
/* A getter's time zone argument at instant t, as cel-go reads it: with a ':' an offset
 * "[+-]H:M" (each side a Go Atoi), else a zone name ("" and "UTC" are UTC, "Local" is
 * taken as UTC, others are IANA names). Offset in seconds east of UTC. KW_EINVAL for an
 * unknown name or a bad offset, KW_ENOMEM. */
KW_NODISCARD int kw__cel_tz_offset(kw_str_t tz, int64_t t, int64_t *off);

/* ---- tz.c ---- */
/* The UTC offset of IANA zone `name` at instant t, from the system tz database. */
KW_NODISCARD int kw__cel_tz_lookup(kw_str_t name, int64_t t, int64_t *off);

/* ---- regex.c ---- */
/* Compiles `pattern` if it stays inside RE2's language (no backreferences, lookaround,
 * recursion, conditionals, atomic groups, possessive quantifiers, verbs); the message
 * says what was refused. *out is a pcre2_code. */
KW_NODISCARD int kw__cel_regex_compile(kw_str_t pattern, void **out, char *err, size_t cap);
void kw__cel_regex_free(void *re);
/* 1 match, 0 no match, KW_EBUDGET past the match limits, KW_ENOMEM. */
KW_NODISCARD int kw__cel_regex_search(void *re, kw_str_t subject);

/* ---- eval.c / funcs.c ---- */
typedef struct cel_ev {
    const kw_cel_program_t *p;
    const cel_val_t *params; /* [n_params]; CK_UNKNOWN for those not given */
    cel_val_t *iters;        /* comprehension variables */
    kw_arena_t *a;
    uint64_t cost;
    int hard; /* KW_ENOMEM or KW_EBUDGET: stops everything */
    const char *hard_msg;
} cel_ev_t;

/* Scratch memory of the evaluation, from an arena made on first use (most evaluations
 * need none). NULL on OOM (the caller reports it with kw__cel_oom). */
void *kw__cel_alloc(cel_ev_t *ev, size_t n);
kw_arena_t *kw__cel_arena(cel_ev_t *ev);
/* Charges n units; false (and ev->hard set) past the budget. */
bool kw__cel_charge(cel_ev_t *ev, uint64_t n);
cel_val_t kw__cel_oom(cel_ev_t *ev);
/* optional.of(*inner), or optional.none() when inner is NULL. */
cel_val_t kw__cel_opt(cel_ev_t *ev, const cel_val_t *inner);
cel_val_t kw__cel_call(cel_ev_t *ev, const cel_node_t *n, const cel_val_t *args, uint32_t nargs);
cel_val_t kw__cel_binop(cel_ev_t *ev, cel_op_t op, const cel_val_t *l, const cel_val_t *r);

#endif
