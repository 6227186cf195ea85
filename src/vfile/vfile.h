/*
 * vfile/vfile.h - SpiceDB validation files, run against keyward's engine.
 *
 * A validation file is a YAML stream; each document may hold
 *   schema:        the schema text (or schemaFile: a path relative to the file)
 *   relationships: newline-separated relationship strings (blank and `//` lines ignored)
 *   assertions:    assertTrue / assertFalse / assertCaveated lists of `res#perm@subject`
 *                  strings, each optionally followed by ` with {context}` (the request's
 *                  caveat context, a JSON object); assertCaveated wants a conditional answer
 *   validation:    expected relations: `res#perm` -> list of "[subject] is <...>" strings
 * Each document is loaded into a fresh engine through the public API (authz/authz.h) and
 * checked. Expected relations compare only the SET of bracketed subjects with the subjects
 * and subject sets reachable when res#perm is fully expanded (SpiceDB's recursive Expand,
 * with its wildcard/exclusion arithmetic), each subject with SpiceDB's `[...]` marker when
 * it holds only under a caveat (`[user:tom[...]]`, compared exactly); the `<...>` parts are
 * not compared. Relationships may carry a caveat (with context) and an expiry; one that
 * expired already loads and is invisible, as in SpiceDB. A feature keyward lacks (e.g.
 * composable schemas) is reported once as unsupported and ends the walk of the file.
 *
 * Every outcome reaches the caller through a callback, in file order: each assertion and
 * each expected-relations entry that passed, each failure, each error in the input. The
 * library prints nothing (cli/validate.c does).
 *
 * Ownership: text, path and ud are borrowed for the call. Every pointer inside a
 *   kw_vfile_result_t is valid only during the callback. *stats belongs to the caller.
 * Threads: no shared state; concurrent runs on different inputs are independent. The
 *   callback runs on the calling thread.
 * Errors: KW_OK when the input was walked: its failures are results, counted in
 *   stats->n_failed. KW_EIO (kw_vfile_run_file: the file cannot be read; diag says
 *   "cannot read: <reason>") or KW_ENOMEM (diag "out of memory") when it could not be
 *   walked at all; then no result was delivered. diag may be NULL.
 */
#ifndef KW_VFILE_VFILE_H
#define KW_VFILE_VFILE_H

#include "base/base.h"

typedef enum kw_vfile_kind {
    KW_VFILE_ASSERT_TRUE = 1, /* one assertTrue entry was checked */
    KW_VFILE_ASSERT_FALSE,    /* one assertFalse entry was checked */
    KW_VFILE_EXPECTED,        /* one expected-relations entry was compared */
    KW_VFILE_ERROR,           /* input that cannot be run as written (never passed) */
    KW_VFILE_UNSUPPORTED,     /* a feature keyward lacks; the walk of the file stops */
    KW_VFILE_SYNTAX,          /* malformed YAML at line:col; the walk of the file stops */
    KW_VFILE_ASSERT_CAVEATED, /* one assertCaveated entry was checked */
} kw_vfile_kind_t;

typedef struct kw_vfile_result {
    kw_vfile_kind_t kind;
    bool passed;        /* ASSERT_* and EXPECTED only */
    size_t doc;         /* 1-based document of the stream */
    unsigned long line; /* 1-based YAML line when known, else 0 */
    unsigned long col;  /* SYNTAX: 1-based column; else 0 */
    kw_str_t what;      /* ASSERT_*: the assertion text (with its context, if any);
                         * EXPECTED: `type:id#relation` */
    /* EXPECTED and not passed: one result per differing subject, in canonical text
     * (`type:id`, `type:id#rel`, `type:*` or `type:* - {type:a, type:b}`); missing says
     * whether it was listed but not found (else found but not listed). */
    kw_str_t subject;
    bool missing;
    /* The whole outcome as one line of text, e.g. "assertTrue failed: doc:d#view@user:x"
     * (SYNTAX: "YAML error: ..." without the position). */
    const char *message;
} kw_vfile_result_t;

/* Totals of one run (kw_vfile_run overwrites the whole struct). */
typedef struct kw_vfile_stats {
    size_t n_docs;     /* documents of the stream that were not empty */
    size_t n_checks;   /* assertions and expected-relations entries run */
    size_t n_expected; /* of which expected-relations entries */
    size_t n_failed;   /* failures: failed checks, errors, unsupported features */
    bool unsupported;  /* a feature keyward lacks ended the walk */
} kw_vfile_stats_t;

typedef void (*kw_vfile_on_result)(const kw_vfile_result_t *r, void *ud);

/* Runs the validation file `text`. `path` (may be NULL) is its name: a `schemaFile` is
 * read relative to its folder (NULL: the working directory). */
KW_NODISCARD int kw_vfile_run(kw_str_t text, const char *path, kw_vfile_on_result on_result,
                              void *ud, kw_vfile_stats_t *stats, kw_diag_t *diag);
/* Reads the file at `path`, then kw_vfile_run. */
KW_NODISCARD int kw_vfile_run_file(const char *path, kw_vfile_on_result on_result, void *ud,
                                   kw_vfile_stats_t *stats, kw_diag_t *diag);

#endif
