/*
 * authz/schema.h - compiled schema: SpiceDB's schema language -> an immutable IR.
 *
 * This header is internal to the authz module (the engine's public surface is
 * authz.h); the graph and the validate tooling read the IR directly.
 *
 * Ownership: kw_schema_compile returns a kw_schema_t that owns all of its memory
 *   (names point into copies it holds); kw_schema_free releases it. The IR is
 *   immutable after compile, so any number of threads may read it.
 * Errors: KW_ESCHEMA with diag->line/col and a message a person can act on (caveat
 *   bodies included: CEL errors point into the schema text).
 *
 * Caveats and expiration (the IR contract the engine reads): kw_schema_t lists the
 *   `caveat name(params) { expr }` definitions with their compiled CEL programs, and
 *   whether the schema says `use expiration`. Each allowed subject type carries its
 *   traits: `caveat` (an index into schema->caveats, KW_CAVEAT_NONE for none) and
 *   `expiration` (`with expiration`). `user`, `user with c`, `user with expiration` and
 *   `user with c and expiration` are four distinct allowed entries, as in SpiceDB: a
 *   relationship must match one of them exactly (see kw_schema_allows_traits).
 */
#ifndef KW_AUTHZ_SCHEMA_H
#define KW_AUTHZ_SCHEMA_H

#include "base/base.h"
#include "cel/cel.h"

#define KW_REL_NONE 0xFFFFu /* "no relation" (the `...` ellipsis) in a subject */
#define KW_TYPE_NONE 0xFFFFu
#define KW_CAVEAT_NONE 0xFFFFu /* an allowed subject type without `with <caveat>` */

typedef enum {
    KW_EXPR_NIL = 1, /* nil: nobody */
    KW_EXPR_REF,     /* a relation or permission of the same object: `viewer` */
    KW_EXPR_ARROW,   /* `tupleset->target` and `tupleset.any(target)` */
    KW_EXPR_ALL,     /* `tupleset.all(target)`: every tupleset subject has target (false if none) */
    KW_EXPR_UNION,   /* `a + b + ...` */
    KW_EXPR_INTERSECT, /* `a & b & ...` */
    KW_EXPR_EXCLUDE,   /* `a - b` (exactly two children; `a - b - c` nests left) */
} kw_expr_kind_t;

typedef struct kw_expr {
    kw_expr_kind_t kind;
    uint32_t line, col; /* where the expression starts in the schema text */
    /* REF: index of the relation/permission on the same type.
     * ARROW/ALL: index of the tupleset relation (always a relation, never a permission). */
    uint16_t rel;
    /* ARROW/ALL: the target name, and per subject type of the schema the index of the
     * relation/permission named `target` on that type (KW_REL_NONE where that type lacks
     * it, which makes that branch "no"). Length: schema->n_types. */
    kw_str_t target;
    uint16_t *target_by_type;
    /* UNION/INTERSECT/EXCLUDE: children in source order (n_children >= 2). */
    struct kw_expr **children;
    uint32_t n_children;
    /* INTERSECT: the order Check evaluates the children in (indexes into children), the
     * cheapest by a static estimate first so a "no" ends the walk early
     * (tag-kw-check-order); NULL: source order. Set by kw_schema_compile (its arena). */
    const uint32_t *check_order;
} kw_expr_t;

/* One allowed subject type of a relation: `type`, `type#rel` or `type:*`, each optionally
 * `with <caveat>`, `with expiration` or `with <caveat> and expiration`. */
typedef struct kw_allowed {
    uint16_t type;     /* index into schema->types */
    uint16_t relation; /* KW_REL_NONE for a plain object or wildcard */
    bool wildcard;     /* `type:*` */
    bool expiration;   /* `with expiration` (the schema then says `use expiration`) */
    uint16_t caveat;   /* index into schema->caveats; KW_CAVEAT_NONE when none */
} kw_allowed_t;

typedef struct kw_relation {
    kw_str_t name;
    bool is_permission;
    uint32_t line, col;
    kw_str_t doc; /* the doc comment (slash-star-star ... star-slash) before it, verbatim;
                     len 0 if none */
    /* Relation: allowed subject types. */
    kw_allowed_t *allowed;
    uint32_t n_allowed;
    /* Permission: its expression. */
    kw_expr_t *expr;
} kw_relation_t;

typedef struct kw_type {
    kw_str_t name; /* including any `prefix/` */
    uint32_t line, col;
    kw_str_t doc;
    kw_relation_t *rels; /* relations and permissions in source order */
    uint32_t n_rels;
} kw_type_t;

/* `caveat name(p1 type1, ...) { expr }`. */
typedef struct kw_caveat {
    kw_str_t name; /* including any `prefix/` */
    uint32_t line, col;
    kw_str_t doc;
    kw_cel_param_t *params; /* in declaration order; names and types point into the IR */
    uint32_t n_params;
    kw_str_t expr;                /* the body's text, verbatim (between the braces, trimmed) */
    uint32_t expr_line, expr_col; /* where expr starts */
    kw_cel_program_t *program;    /* compiled over params; owned by the schema */
} kw_caveat_t;

typedef struct kw_schema {
    kw_type_t *types; /* definitions in source order */
    uint32_t n_types;
    kw_caveat_t *caveats; /* caveat definitions in source order */
    uint32_t n_caveats;
    bool use_expiration; /* the schema says `use expiration` */
    kw_str_t text;       /* a copy of the source text */
    /* private: owned allocations (see schema.c) */
    void *priv;
} kw_schema_t;

/* Parses and type-checks `text`. On success *out owns a new schema. */
KW_NODISCARD int kw_schema_compile(kw_str_t text, kw_schema_t **out, kw_diag_t *diag);
void kw_schema_free(kw_schema_t *s);

/* Index lookups (linear or hashed; O(1) amortized expected). KW_TYPE_NONE/KW_REL_NONE
 * when absent. */
uint16_t kw_schema_type_index(const kw_schema_t *s, kw_str_t name);
uint16_t kw_schema_rel_index(const kw_schema_t *s, uint16_t type, kw_str_t name);
/* The caveat named `name`, or KW_CAVEAT_NONE. */
uint16_t kw_schema_caveat_index(const kw_schema_t *s, kw_str_t name);

/* Is (subject type, subject relation, wildcard) allowed on type.rel, with any traits? */
bool kw_schema_allows(const kw_schema_t *s, uint16_t type, uint16_t rel, uint16_t subj_type,
                      uint16_t subj_rel, bool wildcard);
/* Is a relationship with exactly these traits allowed on type.rel: an allowed entry with
 * the same subject type/relation/wildcard, the same caveat (KW_CAVEAT_NONE: an entry
 * without one) and the same expiration trait (SpiceDB's write-time rule). */
bool kw_schema_allows_traits(const kw_schema_t *s, uint16_t type, uint16_t rel, uint16_t subj_type,
                             uint16_t subj_rel, bool wildcard, uint16_t caveat, bool expiration);

/* Appends a canonical dump of the IR (one line per relation/permission, fully
 * parenthesized expressions) to out: used by golden tests. */
void kw_schema_dump(const kw_schema_t *s, kw_buf_t *out);

#endif
