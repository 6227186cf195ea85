/*
 * vfile/subjects.c - sets of strings and SpiceDB-style subject sets: union, intersection
 * and exclusion with wildcards and their exclusions, and the canonical text of a set.
 *
 * A subject set is a list of groups, one per (type, relation); a group holds concrete
 * ids and optionally a wildcard `type:*` minus excluded ids. The arithmetic follows
 * SpiceDB's (its developer validation of expected relations), so `(* - A) - (* - B)` is
 * `B - A` and `(* - A) | (* - B)` is `* - (A & B)`.
 */
#include <stdlib.h>
#include <string.h>

#include "vfile/vfile_int.h"

bool kw__strset_has(const kw_strset_t *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return true;
    return false;
}

int kw__strset_add(kw_strset_t *s, const char *x)
{
    if (kw__strset_has(s, x))
        return KW_OK;
    if (kw_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)) != KW_OK)
        return KW_ENOMEM;
    s->v[s->n++] = x;
    return KW_OK;
}

void kw__strset_free(kw_strset_t *s)
{
    kw_free(s->v);
    memset(s, 0, sizeof(*s));
}

void kw__sset_free(kw_sset_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        kw__strset_free(&m->v[i].excl);
        kw__strset_free(&m->v[i].conc);
    }
    kw_free(m->v);
    memset(m, 0, sizeof(*m));
}

kw_sgroup_t *kw__sset_find(const kw_sset_t *m, kw_str_t type, kw_str_t rel)
{
    for (size_t i = 0; i < m->n; i++)
        if (kw_str_eq(m->v[i].type, type) && kw_str_eq(m->v[i].rel, rel))
            return &m->v[i];
    return NULL;
}

kw_sgroup_t *kw__sset_get(kw_sset_t *m, kw_str_t type, kw_str_t rel)
{
    kw_sgroup_t *k = kw__sset_find(m, type, rel);
    if (k)
        return k;
    if (kw_grow((void **)&m->v, &m->cap, m->n + 1, sizeof(*m->v)) != KW_OK)
        return NULL;
    k = &m->v[m->n++];
    memset(k, 0, sizeof(*k));
    k->type = type;
    k->rel = rel;
    return k;
}

int kw__sset_union_into(kw_sset_t *dst, const kw_sset_t *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const kw_sgroup_t *s = &src->v[i];
        kw_sgroup_t *d = kw__sset_get(dst, s->type, s->rel);
        if (!d)
            return KW_ENOMEM;
        kw_strset_t excl = {0};
        int rc = KW_OK;
        if (d->wild && s->wild) {
            for (size_t j = 0; rc == KW_OK && j < d->excl.n; j++)
                if (kw__strset_has(&s->excl, d->excl.v[j]))
                    rc = kw__strset_add(&excl, d->excl.v[j]);
        } else if (d->wild) {
            for (size_t j = 0; rc == KW_OK && j < d->excl.n; j++)
                if (!kw__strset_has(&s->conc, d->excl.v[j]))
                    rc = kw__strset_add(&excl, d->excl.v[j]);
        } else if (s->wild) {
            for (size_t j = 0; rc == KW_OK && j < s->excl.n; j++)
                if (!kw__strset_has(&d->conc, s->excl.v[j]))
                    rc = kw__strset_add(&excl, s->excl.v[j]);
        }
        for (size_t j = 0; rc == KW_OK && j < s->conc.n; j++)
            rc = kw__strset_add(&d->conc, s->conc.v[j]);
        if (rc != KW_OK) {
            kw__strset_free(&excl);
            return rc;
        }
        kw__strset_free(&d->excl);
        d->excl = excl;
        d->wild = d->wild || s->wild;
    }
    return KW_OK;
}

/* Does group k include concrete id x (directly or through its wildcard)? */
static bool includes(const kw_sgroup_t *k, const char *x)
{
    return kw__strset_has(&k->conc, x) || (k->wild && !kw__strset_has(&k->excl, x));
}

int kw__sset_intersect(const kw_sset_t *a, const kw_sset_t *b, kw_sset_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < a->n; i++) {
        const kw_sgroup_t *x = &a->v[i];
        const kw_sgroup_t *y = kw__sset_find(b, x->type, x->rel);
        if (!y)
            continue;
        kw_sgroup_t *o = kw__sset_get(out, x->type, x->rel);
        if (!o)
            return KW_ENOMEM;
        int rc = KW_OK;
        for (size_t j = 0; rc == KW_OK && j < x->conc.n; j++)
            if (includes(y, x->conc.v[j]))
                rc = kw__strset_add(&o->conc, x->conc.v[j]);
        for (size_t j = 0; rc == KW_OK && j < y->conc.n; j++)
            if (includes(x, y->conc.v[j]))
                rc = kw__strset_add(&o->conc, y->conc.v[j]);
        if (x->wild && y->wild) {
            o->wild = true;
            for (size_t j = 0; rc == KW_OK && j < x->excl.n; j++)
                rc = kw__strset_add(&o->excl, x->excl.v[j]);
            for (size_t j = 0; rc == KW_OK && j < y->excl.n; j++)
                rc = kw__strset_add(&o->excl, y->excl.v[j]);
        }
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

int kw__sset_subtract(const kw_sset_t *a, const kw_sset_t *b, kw_sset_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < a->n; i++) {
        const kw_sgroup_t *x = &a->v[i];
        const kw_sgroup_t *y = kw__sset_find(b, x->type, x->rel);
        kw_sgroup_t *o = kw__sset_get(out, x->type, x->rel);
        if (!o)
            return KW_ENOMEM;
        int rc = KW_OK;
        for (size_t j = 0; rc == KW_OK && j < x->conc.n; j++)
            if (!y || !includes(y, x->conc.v[j]))
                rc = kw__strset_add(&o->conc, x->conc.v[j]);
        if (x->wild && y && y->wild) {
            /* (* - A) - (* - B) = B - A */
            for (size_t j = 0; rc == KW_OK && j < y->excl.n; j++)
                if (!kw__strset_has(&x->excl, y->excl.v[j]))
                    rc = kw__strset_add(&o->conc, y->excl.v[j]);
        } else if (x->wild) {
            o->wild = true;
            for (size_t j = 0; rc == KW_OK && j < x->excl.n; j++)
                rc = kw__strset_add(&o->excl, x->excl.v[j]);
            for (size_t j = 0; rc == KW_OK && y && j < y->conc.n; j++)
                rc = kw__strset_add(&o->excl, y->conc.v[j]);
        }
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *kw__wild_text(kw_arena_t *a, kw_str_t type, kw_strset_t *excl_full)
{
    if (excl_full->n == 0)
        return kw_arena_sprintf(a, "%.*s:*", KW_STR_FMT(type));
    qsort(excl_full->v, excl_full->n, sizeof(*excl_full->v), cmp_cstr);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_buf_printf(&b, "%.*s:* - {", KW_STR_FMT(type));
    for (size_t i = 0; i < excl_full->n; i++)
        kw_buf_printf(&b, "%s%s", i ? ", " : "", excl_full->v[i]);
    kw_buf_puts(&b, "}");
    char *r = b.failed ? NULL : kw_arena_strndup(a, b.ptr, b.len);
    kw_buf_free(&b);
    return r;
}

int kw__sset_texts(kw_arena_t *a, const kw_sset_t *m, kw_strset_t *out)
{
    int rc = KW_OK;
    for (size_t i = 0; rc == KW_OK && i < m->n; i++) {
        const kw_sgroup_t *k = &m->v[i];
        for (size_t j = 0; rc == KW_OK && j < k->conc.n; j++) {
            char *s = k->rel.len
                          ? kw_arena_sprintf(a, "%.*s:%s#%.*s", KW_STR_FMT(k->type), k->conc.v[j],
                                             KW_STR_FMT(k->rel))
                          : kw_arena_sprintf(a, "%.*s:%s", KW_STR_FMT(k->type), k->conc.v[j]);
            rc = s ? kw__strset_add(out, s) : KW_ENOMEM;
        }
        if (rc == KW_OK && k->wild) {
            kw_strset_t full = {0};
            for (size_t j = 0; rc == KW_OK && j < k->excl.n; j++) {
                char *s = kw_arena_sprintf(a, "%.*s:%s", KW_STR_FMT(k->type), k->excl.v[j]);
                rc = s ? kw__strset_add(&full, s) : KW_ENOMEM;
            }
            char *w = rc == KW_OK ? kw__wild_text(a, k->type, &full) : NULL;
            kw__strset_free(&full);
            if (rc == KW_OK)
                rc = w ? kw__strset_add(out, w) : KW_ENOMEM;
        }
    }
    return rc;
}
