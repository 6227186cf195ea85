/*
 * cel/cel.h - the Common Expression Language as SpiceDB's caveats use it: compile
 * (parse + type check against the caveat's declared parameters) and evaluate, with
 * partial evaluation when parameters are missing.
 *
 * Contract shared by the CEL module (owner) and the authz engine (consumer); the CEL
 * module may extend it but keeps these entry points and their meaning.
 *
 * Ownership: kw_cel_compile returns a program that owns all of its memory (it copies
 *   the names and the expression text); kw_cel_program_free releases it. A program is
 *   immutable after compile: any number of threads may evaluate it at once.
 *   kw_cel_ctx_bind returns a bound context owned by the caller (kw_cel_ctx_free); it is
 *   immutable too. Strings passed in are borrowed for the call.
 * Errors: KW_OK or a negative KW_E*; diag gets a message a user can act on. Compile
 *   errors carry line:col (of the schema text: the caller passes where the expression
 *   starts). Evaluation never runs unbounded: past a fixed cost budget it returns
 *   KW_EBUDGET; a runtime error (division by zero, overflow, a bad conversion) returns
 *   KW_EINVAL with a message, which the engine turns into an error, never a "yes".
 */
#ifndef KW_CEL_CEL_H
#define KW_CEL_CEL_H

#include "base/base.h"

typedef struct kw_cel_program kw_cel_program_t;
typedef struct kw_cel_ctx kw_cel_ctx_t;

/* A declared caveat parameter: `name type`, the type as written in the schema, e.g.
 * "int", "list<string>", "map<any>", "ipaddress". */
typedef struct kw_cel_param {
    kw_str_t name;
    kw_str_t type;
    uint32_t line, col; /* where the parameter is declared (for messages) */
} kw_cel_param_t;

/* Compiles `expr` (the caveat body) over `params`. The expression must type-check to
 * bool. `line`, `col`: position of expr's first byte in the schema (1-based), so errors
 * point into the schema. KW_ESCHEMA on a syntax or type error, KW_ENOMEM. */
KW_NODISCARD int kw_cel_compile(const kw_cel_param_t *params, size_t n_params, kw_str_t expr,
                                uint32_t line, uint32_t col, kw_cel_program_t **out,
                                kw_diag_t *diag);
void kw_cel_program_free(kw_cel_program_t *p);
/* Number of parameters and the i-th one's name (valid while p lives). */
size_t kw_cel_program_n_params(const kw_cel_program_t *p);
kw_str_t kw_cel_program_param(const kw_cel_program_t *p, size_t i);
/* Approximate heap bytes held by p. */
size_t kw_cel_program_memory(const kw_cel_program_t *p);

/* Binds a context (a JSON object text, as written on a relationship or sent with a
 * request) to p's parameters: each field naming a parameter is converted to the
 * parameter's type (SpiceDB's rules: e.g. a timestamp from an RFC 3339 string, a
 * duration from "1h30m", an ipaddress from its string form; numbers are read as the
 * doubles of a protobuf Struct); fields naming no parameter are ignored, as SpiceDB
 * ignores them when it evaluates. KW_EINVAL with a message naming the field on a
 * value that does not convert; json.len == 0 binds an empty context. */
KW_NODISCARD int kw_cel_ctx_bind(const kw_cel_program_t *p, kw_str_t json, kw_cel_ctx_t **out,
                                 kw_diag_t *diag);
/* kw_cel_ctx_bind with flags (0: exactly kw_cel_ctx_bind):
 * KW_CEL_BIND_STRICT: a field naming no parameter is an error, "unknown parameter `x`"
 *   (SpiceDB's check of a relationship's context at write).
 * KW_CEL_BIND_DEFER: a value that does not convert does not fail the bind; it is kept, and
 *   kw_cel_eval fails with KW_EINVAL and its message only when that value is the one the
 *   evaluation uses (SpiceDB converts the request context per caveat after the
 *   relationship's context has overridden it). The JSON text itself must still parse. */
#define KW_CEL_BIND_STRICT 1u
#define KW_CEL_BIND_DEFER 2u
KW_NODISCARD int kw_cel_ctx_bind_ex(const kw_cel_program_t *p, kw_str_t json, unsigned flags,
                                    kw_cel_ctx_t **out, kw_diag_t *diag);
void kw_cel_ctx_free(kw_cel_ctx_t *c);

typedef enum {
    KW_CEL_FALSE = 0,
    KW_CEL_TRUE = 1,
    KW_CEL_PARTIAL = 2, /* the answer depends on parameters neither context gives */
} kw_cel_result_t;

/* Evaluates p. A parameter's value comes from `rel_ctx` first (the relationship's
 * context wins, as in SpiceDB), else from `req_ctx`; either may be NULL. Parameters in
 * neither are unknown: evaluation is partial (CEL's commutative && and || let a known
 * side decide), and when the answer depends on unknowns the result is KW_CEL_PARTIAL
 * and, when `missing` is non-NULL, the names of the unknown parameters it depends on
 * are appended to it, comma-separated, in parameter declaration order. A parameter
 * declared but used by no expression is refused at compile (as SpiceDB does), so every
 * name listed is one the expression reads. KW_EINVAL when the value used for a parameter
 * was bound with KW_CEL_BIND_DEFER and does not convert. */
KW_NODISCARD int kw_cel_eval(const kw_cel_program_t *p, const kw_cel_ctx_t *rel_ctx,
                             const kw_cel_ctx_t *req_ctx, kw_cel_result_t *out, kw_buf_t *missing,
                             kw_diag_t *diag);

#endif
