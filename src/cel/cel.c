/*
 * cel/cel.c - the public entry points: compile a caveat over its parameters, bind a JSON
 * context to a program, free both. (Evaluation is in eval.c.)
 */
#include "cel_int.h"

#include <jansson.h>
#include <string.h>

static bool name_ok(kw_str_t s)
{
    if (s.len == 0 || s.len > KW_MAX_NAME_LEN)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static size_t count_nodes(const cel_node_t *n)
{
    if (!n)
        return 0;
    size_t c = 1 + count_nodes(n->a) + count_nodes(n->b) + count_nodes(n->c);
    for (uint32_t i = 0; i < n->n_args; i++)
        c += count_nodes(n->args[i]);
    return c;
}

void kw_cel_program_free(kw_cel_program_t *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->n_regexes; i++)
        kw__cel_regex_free(p->regexes[i]);
    kw_free(p->regexes);
    kw_arena_free(p->arena);
    kw_free(p);
}

int kw_cel_compile(const kw_cel_param_t *params, size_t n_params, kw_str_t expr, uint32_t line,
                   uint32_t col, kw_cel_program_t **out, kw_diag_t *diag)
{
    if (n_params > 0xFFFF)
        return kw_diag_set(diag, KW_ELIMIT, line, col, "a caveat takes at most 65535 parameters");
    kw_cel_program_t *p = kw_calloc(1, sizeof(*p));
    if (!p)
        return KW_ENOMEM;
    int rc = KW_ENOMEM;
    p->arena = kw_arena_new(0);
    if (!p->arena)
        goto fail;
    p->n_params = n_params;
    p->n_words = n_params / 64 + 1;
    if (n_params) {
        p->params = kw_arena_alloc(p->arena, n_params * sizeof(*p->params));
        p->ptypes = kw_arena_alloc(p->arena, n_params * sizeof(*p->ptypes));
        p->btypes = kw_arena_alloc(p->arena, n_params * sizeof(*p->btypes));
        if (!p->params || !p->ptypes || !p->btypes)
            goto fail;
    }
    for (size_t i = 0; i < n_params; i++) {
        const kw_cel_param_t *in = &params[i];
        kw_cel_param_t *pp = &p->params[i];
        pp->line = in->line;
        pp->col = in->col;
        if (!name_ok(in->name)) {
            rc = kw_diag_set(
                diag, KW_ESCHEMA, in->line, in->col, "invalid caveat parameter name \"%.*s\"",
                (int)(in->name.len > 64 ? 64 : in->name.len), in->name.ptr ? in->name.ptr : "");
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (kw_str_eq(params[j].name, in->name)) {
                rc = kw_diag_set(diag, KW_ESCHEMA, in->line, in->col,
                                 "caveat parameter \"%.*s\" is declared twice", (int)in->name.len,
                                 in->name.ptr);
                goto fail;
            }
        if ((rc = kw_arena_str_copy(p->arena, in->name, &pp->name)) != KW_OK ||
            (rc = kw_arena_str_copy(p->arena, in->type, &pp->type)) != KW_OK)
            goto fail;
        rc = kw__cel_parse_type(p->arena, pp->type, &p->btypes[i]);
        if (rc == KW_ESCHEMA) {
            rc = kw_diag_set(diag, KW_ESCHEMA, in->line, in->col,
                             "unknown type `%.*s` for caveat parameter \"%.*s\"",
                             (int)(pp->type.len > 64 ? 64 : pp->type.len), pp->type.ptr,
                             (int)pp->name.len, pp->name.ptr);
            goto fail;
        }
        if (rc != KW_OK ||
            (rc = kw__cel_check_type(p->arena, p->btypes[i], &p->ptypes[i])) != KW_OK)
            goto fail;
    }
    kw_str_t text;
    if ((rc = kw_arena_str_copy(p->arena, expr, &text)) != KW_OK)
        goto fail;
    cel_parse_in_t in = {text, line ? line : 1, col ? col : 1, p->arena, diag};
    if ((rc = kw__cel_parse(&in, &p->root)) != KW_OK)
        goto fail;
    if ((rc = kw__cel_check(p, diag)) != KW_OK)
        goto fail;
    p->memory = sizeof(*p) + text.len + count_nodes(p->root) * sizeof(cel_node_t) +
                n_params * (sizeof(kw_cel_param_t) + sizeof(void *) + 32) + p->n_regexes * 1024;
    *out = p;
    return KW_OK;
fail:
    kw_cel_program_free(p);
    return rc;
}

size_t kw_cel_program_n_params(const kw_cel_program_t *p)
{
    return p ? p->n_params : 0;
}

kw_str_t kw_cel_program_param(const kw_cel_program_t *p, size_t i)
{
    if (!p || i >= p->n_params)
        return KW_STR_NULL;
    return p->params[i].name;
}

size_t kw_cel_program_memory(const kw_cel_program_t *p)
{
    return p ? p->memory : 0;
}

void kw_cel_ctx_free(kw_cel_ctx_t *c)
{
    if (!c)
        return;
    kw_arena_free(c->arena);
    kw_free(c);
}

int kw_cel_ctx_bind(const kw_cel_program_t *p, kw_str_t json, kw_cel_ctx_t **out, kw_diag_t *diag)
{
    return kw_cel_ctx_bind_ex(p, json, 0, out, diag);
}

/* Is `key` (len bytes) the name of one of p's parameters? */
static bool is_param(const kw_cel_program_t *p, const char *key, size_t len)
{
    for (size_t i = 0; i < p->n_params; i++)
        if (p->params[i].name.len == len && memcmp(p->params[i].name.ptr, key, len) == 0)
            return true;
    return false;
}

int kw_cel_ctx_bind_ex(const kw_cel_program_t *p, kw_str_t json, unsigned flags, kw_cel_ctx_t **out,
                       kw_diag_t *diag)
{
    if (!p)
        return KW_EINVAL;
    kw_cel_ctx_t *c = kw_calloc(1, sizeof(*c));
    if (!c)
        return KW_ENOMEM;
    int rc = KW_ENOMEM;
    json_t *root = NULL;
    c->p = p;
    c->arena = kw_arena_new(0);
    if (!c->arena)
        goto fail;
    size_t np = p->n_params ? p->n_params : 1;
    c->vals = kw_arena_alloc(c->arena, np * sizeof(*c->vals));
    c->present = kw_arena_alloc(c->arena, np * sizeof(*c->present));
    c->errs = kw_arena_alloc(c->arena, np * sizeof(*c->errs));
    if (!c->vals || !c->present || !c->errs)
        goto fail;
    memset(c->present, 0, np * sizeof(*c->present));
    memset(c->errs, 0, np * sizeof(*c->errs));
    if (json.len > 0) {
        json_error_t jerr;
        /* Numbers decode as doubles: SpiceDB receives a context as a protobuf Struct,
         * whose numbers are all float64; the conversions below then apply its rules. */
        root = json_loadb(json.ptr, json.len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
        if (!root) {
            rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "the caveat context is not valid JSON: %s",
                             jerr.text);
            goto fail;
        }
        if (!json_is_object(root)) {
            rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "the caveat context must be a JSON object");
            goto fail;
        }
        if (flags & KW_CEL_BIND_STRICT) {
            const char *key;
            size_t klen;
            json_t *v;
            json_object_keylen_foreach(root, key, klen, v)
            {
                (void)v;
                if (!is_param(p, key, klen)) {
                    rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "unknown parameter `%.*s`",
                                     (int)(klen > 64 ? 64 : klen), key);
                    goto fail;
                }
            }
        }
        for (size_t i = 0; i < p->n_params; i++) {
            kw_str_t name = p->params[i].name;
            json_t *v = json_object_getn(root, name.ptr, name.len);
            if (!v)
                continue;
            char err[200];
            rc = kw__cel_from_json(c->arena, p->btypes[i], v, 0, &c->vals[i], err, sizeof(err));
            if (rc == KW_EINVAL && (flags & KW_CEL_BIND_DEFER)) {
                c->errs[i] = kw_arena_sprintf(c->arena, "caveat context field \"%.*s\": %s",
                                              (int)name.len, name.ptr, err);
                if (!c->errs[i]) {
                    rc = KW_ENOMEM;
                    goto fail;
                }
                c->present[i] = true;
                continue;
            }
            if (rc == KW_EINVAL) {
                rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "caveat context field \"%.*s\": %s",
                                 (int)name.len, name.ptr, err);
                goto fail;
            }
            if (rc != KW_OK)
                goto fail;
            c->present[i] = true;
        }
        json_decref(root);
        root = NULL;
    }
    *out = c;
    return KW_OK;
fail:
    if (root)
        json_decref(root);
    kw_cel_ctx_free(c);
    return rc;
}
