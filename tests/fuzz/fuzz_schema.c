/*
 * tests/fuzz/fuzz_schema.c - libFuzzer target: compile arbitrary bytes as a schema.
 *
 * Any input must end in KW_OK (then the IR is walked through every public reader, and
 * every intersection's evaluation order checked to be a permutation) or
 * a KW_E* code with a diag message; never a crash, leak, hang or sanitizer report.
 */
#include "authz/schema.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An intersection's check_order (tag-kw-check-order) is a permutation of its children. */
static void check_orders(const kw_expr_t *e)
{
    if (e->kind != KW_EXPR_UNION && e->kind != KW_EXPR_INTERSECT && e->kind != KW_EXPR_EXCLUDE) {
        kw_assert(e->check_order == NULL);
        return;
    }
    kw_assert(e->check_order == NULL || e->kind == KW_EXPR_INTERSECT);
    if (e->check_order) {
        uint64_t seen = 0;
        for (uint32_t i = 0; i < e->n_children; i++) {
            uint32_t k = e->check_order[i];
            kw_assert(k < e->n_children);
            if (k < 64) {
                kw_assert(!(seen & ((uint64_t)1 << k)));
                seen |= (uint64_t)1 << k;
            }
        }
    }
    for (uint32_t i = 0; i < e->n_children; i++)
        check_orders(e->children[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kw_schema_t *s = NULL;
    kw_diag_t d;
    int rc = kw_schema_compile((kw_str_t){(const char *)data, size}, &s, &d);
    if (rc != KW_OK) {
        kw_assert(rc < 0 && memchr(d.msg, '\0', sizeof(d.msg)) != NULL && d.msg[0] != '\0');
        return 0;
    }
    /* Exercise the readers the graph uses: every name resolves back to its own index. */
    for (uint32_t t = 0; t < s->n_types; t++) {
        const kw_type_t *ty = &s->types[t];
        kw_assert(kw_schema_type_index(s, ty->name) == t);
        for (uint32_t r = 0; r < ty->n_rels; r++) {
            const kw_relation_t *rel = &ty->rels[r];
            kw_assert(kw_schema_rel_index(s, (uint16_t)t, rel->name) == r);
            if (rel->expr)
                check_orders(rel->expr);
            for (uint32_t i = 0; i < rel->n_allowed; i++) {
                const kw_allowed_t *al = &rel->allowed[i];
                kw_assert(kw_schema_allows(s, (uint16_t)t, (uint16_t)r, al->type, al->relation,
                                           al->wildcard));
            }
        }
    }
    kw_buf_t out;
    kw_buf_init(&out);
    kw_schema_dump(s, &out);
    kw_buf_free(&out);
    kw_schema_free(s);
    return 0;
}
