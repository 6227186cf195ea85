/*
 * tests/fuzz/fuzz_schema.c - libFuzzer target: compile arbitrary bytes as a schema.
 *
 * Any input must end in KW_OK (then the IR is walked through every public reader) or
 * a KW_E* code with a diag message; never a crash, leak, hang or sanitizer report.
 */
#include "authz/schema.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
