/*
 * tests/unit/cel/spicedb_answers_test.c - kw_cel against answers recorded from real
 * SpiceDB v1.54 (tests/fixtures/cel/spicedb_answers.tsv: see its header).
 *
 * Each row compiles the expression over its parameters, binds the context as a request
 * context (KW_CEL_BIND_DEFER: SpiceDB converts it when the caveat runs) and evaluates;
 * the outcome letter must be SpiceDB's: T, F, P (conditional), C (schema refused: compile
 * error), E (check failed: a bind or evaluation error).
 */
#include "cel/cel.h"
#include "kw_test.h"

static size_t params_of(char *spec, kw_cel_param_t *out, size_t cap)
{
    size_t n = 0;
    char *p = spec;
    while (*p && n < cap) {
        while (*p == ' ')
            p++;
        char *name = p;
        while (*p && *p != ' ')
            p++;
        size_t name_len = (size_t)(p - name);
        while (*p == ' ')
            p++;
        char *type = p;
        int depth = 0;
        while (*p && !(*p == ',' && depth == 0)) {
            depth += *p == '<';
            depth -= *p == '>';
            p++;
        }
        out[n] = (kw_cel_param_t){{name, name_len}, {type, (size_t)(p - type)}, 1, 1};
        n++;
        if (*p == ',')
            p++;
    }
    return n;
}

static char answer(char *params, const char *expr, const char *ctx)
{
    kw_cel_param_t ps[16];
    size_t n = params_of(params, ps, 16);
    kw_cel_program_t *p = NULL;
    kw_cel_ctx_t *c = NULL;
    kw_diag_t d;
    int rc = kw_cel_compile(ps, n, kw_str_c(expr), 2, 1, &p, &d);
    if (rc != KW_OK)
        return rc == KW_ESCHEMA ? 'C' : '!';
    char res = '!';
    if (strcmp(ctx, "-") != 0) {
        rc = kw_cel_ctx_bind_ex(p, kw_str_c(ctx), KW_CEL_BIND_DEFER, &c, &d);
        if (rc != KW_OK) {
            res = rc == KW_EINVAL ? 'E' : '!';
            goto out;
        }
    }
    kw_cel_result_t r;
    rc = kw_cel_eval(p, NULL, c, &r, NULL, &d);
    if (rc == KW_OK)
        res = r == KW_CEL_TRUE ? 'T' : r == KW_CEL_FALSE ? 'F' : 'P';
    else
        res = rc == KW_EINVAL ? 'E' : '!';
out:
    kw_cel_ctx_free(c);
    kw_cel_program_free(p);
    return res;
}

KW_TEST(cel_spicedb_answers)
{
    const char *src = getenv("KW_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/cel/spicedb_answers.tsv", src ? src : "..");
    char *text = NULL;
    size_t len = 0;
    KW_ASSERT_EQ(kw_read_file(path, 0, &text, &len), KW_OK);
    int rows = 0, bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *f[4];
        int nf = 0;
        for (char *q = line; nf < 4; nf++) {
            f[nf] = q;
            char *tab = strchr(q, '\t');
            if (!tab) {
                nf++;
                break;
            }
            *tab = '\0';
            q = tab + 1;
        }
        if (nf != 4) {
            fprintf(stderr, "  malformed row %d\n", rows + 1);
            bad++;
            continue;
        }
        char want = f[3][0];
        char got = answer(f[0], f[1], f[2]);
        rows++;
        if (got != want) {
            fprintf(stderr, "  (%s) %s with %s: got %c, SpiceDB %c\n", f[0], f[1], f[2], got, want);
            bad++;
        }
    }
    kw_free(text);
    KW_ASSERT(rows >= 400);
    KW_ASSERT_EQ(bad, 0);
}
