/*
 * vfile/vfile_int.h - what the files of vfile share: subject sets and their arithmetic
 * (subjects.c), the expected-relations grammar and the recursive expansion (expected.c).
 * walk.c walks the YAML and reports through the public callback (vfile.h).
 *
 * Ownership: a kw_strset_t holds borrowed C strings (arena or static) in a kw_malloc'd
 *   array; a kw_sset_t owns its groups' arrays, never their strings. Both are zeroed by
 *   `= {0}` and released with their _free. Strings made here come from the caller's arena.
 * Errors: KW_OK or a negative KW_E*; on KW_ENOMEM an output set may hold part of the
 *   result and must still be freed.
 */
#ifndef KW_VFILE_VFILE_INT_H
#define KW_VFILE_VFILE_INT_H

#include "authz/authz.h"
#include "base/base.h"

/* ---- subjects.c: sets of strings and SpiceDB-style subject sets ---- */

typedef struct kw_strset {
    const char **v;
    size_t n, cap;
} kw_strset_t;

bool kw__strset_has(const kw_strset_t *s, const char *x);
/* Adds x unless present (x is borrowed). */
KW_NODISCARD int kw__strset_add(kw_strset_t *s, const char *x);
/* Removes x if present (the order of the others may change). */
void kw__strset_remove(kw_strset_t *s, const char *x);
void kw__strset_free(kw_strset_t *s);

/* The subjects of one (type, relation) found by an expansion: concrete ids and possibly
 * a wildcard `type:*` minus some excluded ids. Each may hold only under a caveat
 * (SpiceDB's `[...]` marker): the *_cav sets list the caveated members of conc and excl,
 * wild_cav says the wildcard is caveated. Only whether a caveat applies is tracked, not
 * which: the arithmetic follows SpiceDB's, where a caveat expression is absent exactly
 * when these flags are false (a union is conditional only when both sides are, an
 * intersection when either is, a conditional subtraction leaves a conditional member). */
typedef struct kw_sgroup {
    kw_str_t type;
    kw_str_t rel; /* len 0 for plain objects */
    bool wild;
    bool wild_cav;
    kw_strset_t excl;
    kw_strset_t excl_cav;
    kw_strset_t conc;
    kw_strset_t conc_cav;
} kw_sgroup_t;

typedef struct kw_sset {
    kw_sgroup_t *v;
    size_t n, cap;
} kw_sset_t;

void kw__sset_free(kw_sset_t *m);
kw_sgroup_t *kw__sset_find(const kw_sset_t *m, kw_str_t type, kw_str_t rel);
/* The group of (type, rel), added empty when absent; NULL on OOM. type and rel are
 * borrowed for the set's lifetime. */
kw_sgroup_t *kw__sset_get(kw_sset_t *m, kw_str_t type, kw_str_t rel);
/* dst |= src. A wildcard's exclusions shrink to what neither side includes. */
KW_NODISCARD int kw__sset_union_into(kw_sset_t *dst, const kw_sset_t *src);
/* *out = a & b (SpiceDB's subject-set intersection); *out is initialised here. */
KW_NODISCARD int kw__sset_intersect(const kw_sset_t *a, const kw_sset_t *b, kw_sset_t *out);
/* *out = a - b (SpiceDB's exclusion, wildcard minus wildcard included); *out is
 * initialised here. */
KW_NODISCARD int kw__sset_subtract(const kw_sset_t *a, const kw_sset_t *b, kw_sset_t *out);
/* Canonical text of a wildcard: `type:*` or `type:* - {type:a, type:b[...]}` (`type:*[...]`
 * when caveated); excl_full holds whole `type:id` strings (with their markers) and is
 * sorted in place. NULL on OOM. */
char *kw__wild_text(kw_arena_t *a, kw_str_t type, bool caveated, kw_strset_t *excl_full);
/* Adds the canonical text of every subject of m to out (strings from a). */
KW_NODISCARD int kw__sset_texts(kw_arena_t *a, const kw_sset_t *m, kw_strset_t *out);

/* ---- expected.c: the expected-relations grammar and the expansion ---- */

kw_str_t kw__vfile_trim(kw_str_t s);
/* Parses one expected-relation string "[subject] is <...>" into canonical subject text.
 * `[...]` caveat markers kept (expected.c); KW_EINVAL (diag says why) when malformed. */
KW_NODISCARD int kw__vfile_expected_subject(kw_arena_t *a, kw_str_t s, char **out, kw_diag_t *diag);
/* Parses an expected-relations key `type:id#relation`; KW_EINVAL when it is not one. */
KW_NODISCARD int kw__vfile_parse_key(kw_str_t s, kw_object_t *obj, kw_str_t *rel);

/* State of the recursive expansion of one document. */
typedef struct kw_vexpand {
    kw_engine_t *e;
    kw_arena_t *arena; /* strings and expand trees */
    kw_strset_t stack; /* subject sets being expanded (cycle guard) */
    size_t expansions; /* reset per expected-relations entry */
} kw_vexpand_t;

/* *out = the subjects reachable from obj#rel, subject sets expanded recursively (at most
 * KW_MAX_VFILE_EXPANSIONS of them, else KW_ELIMIT). *out is initialised here. */
KW_NODISCARD int kw__vfile_expand(kw_vexpand_t *x, kw_object_t obj, kw_str_t rel, kw_sset_t *out,
                                  kw_diag_t *diag);

#endif
