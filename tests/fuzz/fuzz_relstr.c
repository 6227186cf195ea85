/*
 * tests/fuzz/fuzz_relstr.c - libFuzzer target for kw_rel_parse / kw_rel_format.
 *
 * Property: whatever the input, parsing never reads outside the slice and never crashes;
 * when it succeeds, every field points inside the input (a caveat context is a `{...}`
 * object, an expiry after the epoch), and the canonical form parses again to the same
 * relationship, caveat, context and expiry included (format/parse round trip), and is
 * never longer than the input.
 */
#include <stdlib.h>
#include <string.h>

#include "authz/authz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inside(kw_str_t s, const uint8_t *data, size_t size)
{
    if (s.len == 0)
        return;
    kw_assert((const uint8_t *)s.ptr >= data && (const uint8_t *)s.ptr + s.len <= data + size);
}

static bool rel_eq(const kw_rel_t *a, const kw_rel_t *b)
{
    return kw_str_eq(a->resource.type, b->resource.type) &&
           kw_str_eq(a->resource.id, b->resource.id) && kw_str_eq(a->relation, b->relation) &&
           kw_str_eq(a->subject.type, b->subject.type) && kw_str_eq(a->subject.id, b->subject.id) &&
           kw_str_eq(a->subject.relation, b->subject.relation) && kw_str_eq(a->caveat, b->caveat) &&
           kw_str_eq(a->caveat_ctx, b->caveat_ctx) && a->expires_at == b->expires_at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so reading one byte past the slice is caught by ASan. */
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    kw_rel_t r;
    kw_diag_t d;
    int rc = kw_rel_parse((kw_str_t){copy, size}, &r, &d);
    if (rc != KW_OK) {
        kw_assert(rc == KW_EINVAL);
        kw_assert(d.code == rc && d.col >= 1 && d.col <= size + 1);
        kw_assert(memchr(d.msg, '\0', sizeof(d.msg)) != NULL);
        free(copy);
        return 0;
    }
    const uint8_t *base = (const uint8_t *)copy;
    check_inside(r.resource.type, base, size);
    check_inside(r.resource.id, base, size);
    check_inside(r.relation, base, size);
    check_inside(r.subject.type, base, size);
    check_inside(r.subject.id, base, size);
    check_inside(r.subject.relation, base, size);
    check_inside(r.caveat, base, size);
    check_inside(r.caveat_ctx, base, size);
    kw_assert(r.caveat_ctx.len == 0 || (r.caveat.len > 0 && r.caveat_ctx.ptr[0] == '{' &&
                                        r.caveat_ctx.ptr[r.caveat_ctx.len - 1] == '}'));
    kw_assert(r.expires_at >= 0);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(&r, &b);
    if (!b.failed) {
        kw_rel_t r2;
        kw_assert(kw_rel_parse((kw_str_t){b.ptr, b.len}, &r2, &d) == KW_OK);
        kw_assert(rel_eq(&r, &r2));
        kw_assert(b.len <= size);
    }
    kw_buf_free(&b);
    free(copy);
    return 0;
}
