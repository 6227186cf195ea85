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
        kw__strset_free(&m->v[i].excl_cav);
        kw__strset_free(&m->v[i].conc);
        kw__strset_free(&m->v[i].conc_cav);
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

void kw__strset_remove(kw_strset_t *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0) {
            s->v[i] = s->v[--s->n];
            return;
        }
}

/* Marks x caveated in `cav` (on) or not (off). */
static int set_cav(kw_strset_t *cav, const char *x, bool on)
{
    if (on)
        return kw__strset_add(cav, x);
    kw__strset_remove(cav, x);
    return KW_OK;
}

/* Puts concrete x into group k, caveated or not (replacing what k had for x). */
static int put_conc(kw_sgroup_t *k, const char *x, bool cav)
{
    int rc = kw__strset_add(&k->conc, x);
    return rc == KW_OK ? set_cav(&k->conc_cav, x, cav) : rc;
}

static int put_excl(kw_sgroup_t *k, const char *x, bool cav)
{
    int rc = kw__strset_add(&k->excl, x);
    return rc == KW_OK ? set_cav(&k->excl_cav, x, cav) : rc;
}

static void drop_conc(kw_sgroup_t *k, const char *x)
{
    kw__strset_remove(&k->conc, x);
    kw__strset_remove(&k->conc_cav, x);
}

static void drop_excl(kw_sgroup_t *k, const char *x)
{
    kw__strset_remove(&k->excl, x);
    kw__strset_remove(&k->excl_cav, x);
}

static void drop_wild(kw_sgroup_t *k)
{
    k->wild = false;
    k->wild_cav = false;
    kw__strset_free(&k->excl);
    kw__strset_free(&k->excl_cav);
}

/* A copy of the strings of s (borrowed) into a new set *out. */
static int strset_copy(const kw_strset_t *s, kw_strset_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < s->n; i++)
        if (kw__strset_add(out, s->v[i]) != KW_OK)
            return KW_ENOMEM;
    return KW_OK;
}

/* A concrete x (caveated or not) joins a group whose wildcard may exclude it: an
 * unconditional x lifts the exclusion, a conditional one makes it conditional. */
static int lift_exclusion(kw_sgroup_t *k, const char *x, bool cav)
{
    if (!k->wild || !kw__strset_has(&k->excl, x))
        return KW_OK;
    if (!cav) {
        drop_excl(k, x);
        return KW_OK;
    }
    return set_cav(&k->excl_cav, x, true);
}

/* dst |= src for one group d (SpiceDB: a concrete in both is conditional only when both
 * are; wildcards union their conditions and intersect their exclusions). */
static int union_group(kw_sgroup_t *d, const kw_sgroup_t *s)
{
    int rc = KW_OK;
    for (size_t j = 0; rc == KW_OK && j < s->conc.n; j++) {
        const char *x = s->conc.v[j];
        bool cav = kw__strset_has(&s->conc_cav, x);
        if (kw__strset_has(&d->conc, x))
            cav = cav && kw__strset_has(&d->conc_cav, x);
        rc = put_conc(d, x, cav);
        if (rc == KW_OK && !s->wild)
            rc = lift_exclusion(d, x, kw__strset_has(&s->conc_cav, x));
    }
    if (rc != KW_OK || !s->wild)
        return rc;
    if (!d->wild) {
        d->wild = true;
        d->wild_cav = s->wild_cav;
        for (size_t j = 0; rc == KW_OK && j < s->excl.n; j++)
            rc = put_excl(d, s->excl.v[j], kw__strset_has(&s->excl_cav, s->excl.v[j]));
    } else {
        d->wild_cav = d->wild_cav && s->wild_cav;
        kw_strset_t old;
        rc = strset_copy(&d->excl, &old);
        for (size_t j = 0; rc == KW_OK && j < old.n; j++) {
            const char *x = old.v[j];
            if (!kw__strset_has(&s->excl, x))
                drop_excl(d, x);
            else if (kw__strset_has(&s->excl_cav, x))
                rc = set_cav(&d->excl_cav, x, true);
        }
        kw__strset_free(&old);
    }
    /* every concrete of the union now meets the merged wildcard */
    for (size_t j = 0; rc == KW_OK && j < d->conc.n; j++)
        rc = lift_exclusion(d, d->conc.v[j], kw__strset_has(&d->conc_cav, d->conc.v[j]));
    return rc;
}

int kw__sset_union_into(kw_sset_t *dst, const kw_sset_t *src)
{
    for (size_t i = 0; i < src->n; i++) {
        kw_sgroup_t *d = kw__sset_get(dst, src->v[i].type, src->v[i].rel);
        if (!d)
            return KW_ENOMEM;
        int rc = union_group(d, &src->v[i]);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

/* Does wildcard group w hold concrete x, and only conditionally? (x's own caveat `cav`
 * included.) */
static bool wild_holds(const kw_sgroup_t *w, const char *x, bool cav, bool *out_cav)
{
    if (!w->wild)
        return false;
    if (!kw__strset_has(&w->excl, x)) {
        *out_cav = cav || w->wild_cav;
        return true;
    }
    if (!kw__strset_has(&w->excl_cav, x))
        return false;
    *out_cav = true;
    return true;
}

/* o gets concrete x from the intersection of x's side with the other side's concrete
 * (other_has/other_cav) and wildcard w. */
static int intersect_conc(kw_sgroup_t *o, const char *x, bool cav, bool other_has, bool other_cav,
                          const kw_sgroup_t *w)
{
    bool present = false, rcav = false, wcav;
    if (other_has) {
        present = true;
        rcav = cav || other_cav;
    }
    if (wild_holds(w, x, cav, &wcav)) {
        rcav = present ? rcav && wcav : wcav;
        present = true;
    }
    if (!present)
        return KW_OK;
    if (kw__strset_has(&o->conc, x))
        rcav = rcav && kw__strset_has(&o->conc_cav, x);
    return put_conc(o, x, rcav);
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
        if (x->wild && y->wild) {
            /* conditions AND, exclusions union (one in both is conditional if both are) */
            o->wild = true;
            o->wild_cav = x->wild_cav || y->wild_cav;
            for (size_t j = 0; rc == KW_OK && j < x->excl.n; j++)
                rc = put_excl(o, x->excl.v[j], kw__strset_has(&x->excl_cav, x->excl.v[j]));
            for (size_t j = 0; rc == KW_OK && j < y->excl.n; j++) {
                const char *e = y->excl.v[j];
                bool cav = kw__strset_has(&y->excl_cav, e);
                if (kw__strset_has(&o->excl, e))
                    cav = cav && kw__strset_has(&o->excl_cav, e);
                rc = put_excl(o, e, cav);
            }
        }
        for (size_t j = 0; rc == KW_OK && j < x->conc.n; j++) {
            const char *c = x->conc.v[j];
            rc = intersect_conc(o, c, kw__strset_has(&x->conc_cav, c), kw__strset_has(&y->conc, c),
                                kw__strset_has(&y->conc_cav, c), y);
        }
        for (size_t j = 0; rc == KW_OK && x->wild && j < y->conc.n; j++) {
            const char *c = y->conc.v[j];
            rc = intersect_conc(o, c, kw__strset_has(&y->conc_cav, c), false, false, x);
        }
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

/* o -= y's concretes: an unconditional one removes, a conditional one makes conditional;
 * each joins o's wildcard's exclusions. */
static int subtract_concretes(kw_sgroup_t *o, const kw_sgroup_t *y)
{
    int rc = KW_OK;
    for (size_t j = 0; rc == KW_OK && j < y->conc.n; j++) {
        const char *c = y->conc.v[j];
        bool ycav = kw__strset_has(&y->conc_cav, c);
        if (kw__strset_has(&o->conc, c)) {
            if (!ycav)
                drop_conc(o, c);
            else
                rc = set_cav(&o->conc_cav, c, true);
        }
        if (rc == KW_OK && o->wild) {
            bool cav = ycav;
            if (kw__strset_has(&o->excl, c))
                cav = cav && kw__strset_has(&o->excl_cav, c);
            rc = put_excl(o, c, cav);
        }
    }
    return rc;
}

/* o -= y's wildcard (SpiceDB's subtraction of a wildcard from concretes and from a
 * wildcard: what y's exclusions spare becomes concrete). */
static int subtract_wildcard(kw_sgroup_t *o, const kw_sgroup_t *y)
{
    kw_strset_t conc;
    int rc = strset_copy(&o->conc, &conc);
    for (size_t j = 0; rc == KW_OK && j < conc.n; j++) {
        const char *c = conc.v[j];
        if (!kw__strset_has(&y->excl, c)) {
            if (!y->wild_cav)
                drop_conc(o, c);
            else
                rc = set_cav(&o->conc_cav, c, true);
        } else if (kw__strset_has(&y->excl_cav, c)) {
            rc = set_cav(&o->conc_cav, c, true);
        }
    }
    kw__strset_free(&conc);
    if (rc != KW_OK || !o->wild)
        return rc;
    if (!y->wild_cav && y->excl.n == 0) {
        drop_wild(o);
        return KW_OK;
    }
    for (size_t j = 0; rc == KW_OK && j < y->excl.n; j++) {
        const char *e = y->excl.v[j];
        bool excluded = kw__strset_has(&o->excl, e);
        bool excl_cav = kw__strset_has(&o->excl_cav, e);
        if (!excluded || excl_cav)
            rc = put_conc(
                o, e, o->wild_cav || y->wild_cav || kw__strset_has(&y->excl_cav, e) || excluded);
    }
    if (rc == KW_OK) {
        if (o->wild_cav || y->wild_cav)
            o->wild_cav = true;
        else
            drop_wild(o);
    }
    return rc;
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
        int rc = union_group(o, x);
        if (rc == KW_OK && y)
            rc = subtract_concretes(o, y);
        if (rc == KW_OK && y && y->wild)
            rc = subtract_wildcard(o, y);
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *kw__wild_text(kw_arena_t *a, kw_str_t type, bool caveated, kw_strset_t *excl_full)
{
    const char *mark = caveated ? "[...]" : "";
    if (excl_full->n == 0)
        return kw_arena_sprintf(a, "%.*s:*%s", KW_STR_FMT(type), mark);
    qsort(excl_full->v, excl_full->n, sizeof(*excl_full->v), cmp_cstr);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_buf_printf(&b, "%.*s:*%s - {", KW_STR_FMT(type), mark);
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
            const char *mark = kw__strset_has(&k->conc_cav, k->conc.v[j]) ? "[...]" : "";
            char *s = k->rel.len ? kw_arena_sprintf(a, "%.*s:%s#%.*s%s", KW_STR_FMT(k->type),
                                                    k->conc.v[j], KW_STR_FMT(k->rel), mark)
                                 : kw_arena_sprintf(a, "%.*s:%s%s", KW_STR_FMT(k->type),
                                                    k->conc.v[j], mark);
            rc = s ? kw__strset_add(out, s) : KW_ENOMEM;
        }
        if (rc == KW_OK && k->wild) {
            kw_strset_t full = {0};
            for (size_t j = 0; rc == KW_OK && j < k->excl.n; j++) {
                const char *mark = kw__strset_has(&k->excl_cav, k->excl.v[j]) ? "[...]" : "";
                char *s = kw_arena_sprintf(a, "%.*s:%s%s", KW_STR_FMT(k->type), k->excl.v[j], mark);
                rc = s ? kw__strset_add(&full, s) : KW_ENOMEM;
            }
            char *w = rc == KW_OK ? kw__wild_text(a, k->type, k->wild_cav, &full) : NULL;
            kw__strset_free(&full);
            if (rc == KW_OK)
                rc = w ? kw__strset_add(out, w) : KW_ENOMEM;
        }
    }
    return rc;
}
