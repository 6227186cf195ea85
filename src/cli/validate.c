/*
 * cli/validate.c - `keyward validate FILE...`: run SpiceDB validation files.
 *
 * The files are run by the vfile library (vfile/vfile.h: the format, the semantics of
 * assertions and expected relations); this file keeps the arguments and the printing.
 *
 * Output: every failure as `FILE: ...` on stdout (a YAML error as `FILE:LINE:COL: ...`),
 * then one summary line per file. Exit 0 when every file passes, 1 on any failure
 * (including a feature keyward lacks, reported as "not supported yet"), 2 on a usage
 * error.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "vfile/vfile.h"

/* Prints each failure of one file; passes are counted by the library, not printed. */
static void on_result(const kw_vfile_result_t *r, void *ud)
{
    const char *path = ud;
    if (r->passed)
        return;
    if (r->kind == KW_VFILE_SYNTAX)
        printf("%s:%lu:%lu: %s\n", path, r->line, r->col, r->message);
    else
        printf("%s: %s\n", path, r->message);
}

/* Validates one file; returns 0 when everything passed. */
static int validate_file(const char *path)
{
    kw_vfile_stats_t st;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_vfile_run_file(path, on_result, (void *)path, &st, &d);
    if (rc != KW_OK) {
        printf("%s: %s\n", path, d.msg[0] ? d.msg : kw_strerror(rc));
        return 1;
    }
    if (st.n_docs == 0 && st.n_failed == 0) {
        printf("%s: no validation document found\n", path);
        return 1;
    }
    if (st.n_failed > 0) {
        if (!st.unsupported)
            printf("%s: FAILED (%zu of %zu checks failed)\n", path, st.n_failed,
                   st.n_checks > st.n_failed ? st.n_checks : st.n_failed);
        return 1;
    }
    if (st.n_expected > 0)
        printf("%s: %zu assertions passed, %zu expected relations matched\n", path,
               st.n_checks - st.n_expected, st.n_expected);
    else
        printf("%s: %zu assertions passed\n", path, st.n_checks);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: keyward validate FILE...\n"
               "\n"
               "Runs SpiceDB validation files (YAML: schema, relationships, assertions,\n"
               "validation) against keyward's engine. Prints each failed assertion and one\n"
               "summary line per file. Exit status: 0 all passed, 1 a failure, 2 usage.\n");
}

int kw_cli_validate(int argc, char **argv)
{
    int first = 1;
    for (; first < argc; first++) {
        const char *a = argv[first];
        if (strcmp(a, "--") == 0) {
            first++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "keyward validate: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        break;
    }
    if (first >= argc) {
        usage(stderr);
        return 2;
    }
    int status = 0;
    for (int i = first; i < argc; i++)
        if (validate_file(argv[i]) != 0)
            status = 1;
    fflush(stdout);
    return status;
}
