/*
 * tests/unit/authz/engine_helpers.h - small helpers for the engine tests: build an engine
 * from schema text, write relationships given as strings, check a relationship string.
 */
#ifndef KW_TEST_ENGINE_HELPERS_H
#define KW_TEST_ENGINE_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/authz.h"

/* A new engine with `schema` installed, or NULL (printing the diag). */
static inline kw_engine_t *th_engine(const char *schema)
{
    kw_engine_t *e = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_engine_new(&e) != KW_OK)
        return NULL;
    if (kw_engine_set_schema(e, kw_str_c(schema), NULL, &d) != KW_OK) {
        fprintf(stderr, "  schema: %u:%u: %s\n", d.line, d.col, d.msg);
        kw_engine_free(e);
        return NULL;
    }
    return e;
}

/* Applies one batch of up to 64 relationship strings with operation `op`; returns rc. */
static inline int th_write_op(kw_engine_t *e, kw_op_t op, const char *const *rels, size_t n,
                              kw_diag_t *d)
{
    kw_update_t ups[64];
    if (n > 64)
        return KW_ELIMIT;
    for (size_t i = 0; i < n; i++) {
        ups[i].op = op;
        int rc = kw_rel_parse(kw_str_c(rels[i]), &ups[i].rel, d);
        if (rc != KW_OK)
            return rc;
    }
    return kw_engine_write(e, ups, n, NULL, 0, 0, NULL, d);
}

/* TOUCHes every string of a NULL-terminated list, one batch; returns rc. */
static inline int th_touch(kw_engine_t *e, const char *const *rels)
{
    size_t n = 0;
    while (rels[n])
        n++;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = th_write_op(e, KW_OP_TOUCH, rels, n, &d);
    if (rc != KW_OK)
        fprintf(stderr, "  write: %s\n", d.msg);
    return rc;
}

static inline int th_touch1(kw_engine_t *e, const char *rel)
{
    const char *v[2] = {rel, NULL};
    return th_touch(e, v);
}

/* Checks `resource#perm@subject`: 1 yes, 0 no, or the negative error code. */
static inline int th_check_d(kw_engine_t *e, const char *q, kw_diag_t *d)
{
    kw_rel_t r;
    int rc = kw_rel_parse(kw_str_c(q), &r, d);
    if (rc != KW_OK)
        return rc;
    kw_check_result_t res = KW_CHECK_YES;
    rc = kw_engine_check(e, r.resource, r.relation, r.subject, &res, NULL, d);
    if (rc != KW_OK)
        return rc;
    return res == KW_CHECK_YES ? 1 : 0;
}

static inline int th_check(kw_engine_t *e, const char *q)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    return th_check_d(e, q, &d);
}

/* Collects lookup results into a sorted, comma-joined string. */
typedef struct th_ids {
    char items[256][64];
    int n;
} th_ids_t;

static inline int th_ids_cb(kw_str_t id, void *ud)
{
    th_ids_t *ids = ud;
    if (ids->n < 256)
        snprintf(ids->items[ids->n++], 64, "%.*s", (int)id.len, id.ptr);
    return 0;
}

static inline int th_cmp_s(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static inline const char *th_ids_join(th_ids_t *ids, char *buf, size_t cap)
{
    qsort(ids->items, (size_t)ids->n, sizeof(ids->items[0]), th_cmp_s);
    buf[0] = 0;
    for (int i = 0; i < ids->n; i++) {
        if (i)
            strncat(buf, ",", cap - strlen(buf) - 1);
        strncat(buf, ids->items[i], cap - strlen(buf) - 1);
    }
    return buf;
}

#endif
