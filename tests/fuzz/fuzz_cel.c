/*
 * tests/fuzz/fuzz_cel.c - libFuzzer target: compile, bind and evaluate CEL.
 *
 * Input: a caveat expression, then (after the first newline) a JSON context. The
 * expression is compiled over the parameters (one of every type a caveat may declare)
 * whose names its text contains (a caveat must use every parameter it declares); the
 * context is bound and the program evaluated with it as the relationship context, as the
 * request context, and with none (all unknown: partial evaluation). Every step must end
 * in KW_OK or a KW_E* code with a message; never a crash, leak, hang or sanitizer report.
 */
#include "cel/cel.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const kw_cel_param_t params[] = {
    {KW_STR("i"), KW_STR("int"), 1, 1},        {KW_STR("u"), KW_STR("uint"), 1, 1},
    {KW_STR("d"), KW_STR("double"), 1, 1},     {KW_STR("b"), KW_STR("bool"), 1, 1},
    {KW_STR("s"), KW_STR("string"), 1, 1},     {KW_STR("y"), KW_STR("bytes"), 1, 1},
    {KW_STR("du"), KW_STR("duration"), 1, 1},  {KW_STR("t"), KW_STR("timestamp"), 1, 1},
    {KW_STR("l"), KW_STR("list<int>"), 1, 1},  {KW_STR("ls"), KW_STR("list<string>"), 1, 1},
    {KW_STR("m"), KW_STR("map<any>"), 1, 1},   {KW_STR("ml"), KW_STR("map<list<int>>"), 1, 1},
    {KW_STR("ip"), KW_STR("ipaddress"), 1, 1}, {KW_STR("a"), KW_STR("any"), 1, 1},
};

static void eval_once(const kw_cel_program_t *p, const kw_cel_ctx_t *rel, const kw_cel_ctx_t *req)
{
    kw_cel_result_t r;
    kw_buf_t missing;
    kw_diag_t d;
    kw_buf_init(&missing);
    int rc = kw_cel_eval(p, rel, req, &r, &missing, &d);
    kw_assert(rc == KW_OK || rc == KW_EINVAL || rc == KW_EBUDGET || rc == KW_ENOMEM);
    if (rc == KW_OK)
        kw_assert(r == KW_CEL_TRUE || r == KW_CEL_FALSE || (r == KW_CEL_PARTIAL && missing.len));
    kw_buf_free(&missing);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nl = memchr(text, '\n', size);
    size_t expr_len = nl ? (size_t)(nl - text) : size;
    kw_str_t expr = {text, expr_len};
    kw_str_t ctx = nl ? (kw_str_t){nl + 1, size - expr_len - 1} : KW_STR_NULL;
    kw_cel_param_t mine[KW_ARRAY_LEN(params)];
    size_t n = 0;
    for (size_t i = 0; i < KW_ARRAY_LEN(params); i++)
        if (memmem(expr.ptr, expr.len, params[i].name.ptr, params[i].name.len))
            mine[n++] = params[i];
    kw_cel_program_t *p = NULL;
    kw_diag_t d;
    int rc = kw_cel_compile(mine, n, expr, 1, 1, &p, &d);
    if (rc != KW_OK) {
        kw_assert(rc < 0 && memchr(d.msg, '\0', sizeof(d.msg)) != NULL && d.msg[0] != '\0');
        return 0;
    }
    eval_once(p, NULL, NULL);
    kw_cel_ctx_t *c = NULL;
    if (kw_cel_ctx_bind_ex(p, ctx, KW_CEL_BIND_DEFER, &c, &d) == KW_OK) {
        eval_once(p, c, NULL);
        eval_once(p, NULL, c);
        kw_cel_ctx_free(c);
    }
    kw_cel_program_free(p);
    return 0;
}
