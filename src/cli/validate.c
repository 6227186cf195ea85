/*
 * cli/validate.c - `keyward validate FILE...`: run SpiceDB validation files.
 *
 * A validation file is a YAML stream; each document may hold
 *   schema:        the schema text (or schemaFile: a path relative to the file)
 *   relationships: newline-separated relationship strings (blank and `//` lines ignored)
 *   assertions:    assertTrue / assertFalse lists of `res#perm@subject` strings
 *   validation:    expected relations: `res#perm` -> list of "[subject] is <...>" strings
 * Each document is loaded into a fresh engine through the public API (authz.h) and
 * checked. Expected relations compare only the SET of bracketed subjects with the
 * subjects and subject sets reachable when res#perm is fully expanded (SpiceDB's
 * recursive Expand, with its wildcard/exclusion arithmetic); the `<...>` parts are not
 * compared.
 *
 * Output: every failure as `FILE: ...` on stdout, then one summary line per file.
 * Exit 0 when every file passes, 1 on any failure (including caveats, which are "not
 * supported yet"), 2 on a usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "authz/authz.h"
#include "cli/cli.h"

/* Upper bound on subject-set expansions for one expected-relations entry. */
#define VALIDATE_MAX_EXPANSIONS 100000

/* ---- string sets and SpiceDB-style subject sets ---- */

typedef struct strset {
    const char **v;
    size_t n, cap;
} strset_t;

/* The subjects of one (type, relation) found by an expansion: concrete ids and possibly
 * a wildcard `type:*` minus some excluded ids. */
typedef struct mkey {
    kw_str_t type;
    kw_str_t rel; /* len 0 for plain objects */
    bool wild;
    strset_t excl;
    strset_t conc;
} mkey_t;

typedef struct mset {
    mkey_t *v;
    size_t n, cap;
} mset_t;

typedef struct vctx {
    const char *file;
    kw_engine_t *e;
    kw_arena_t *arena; /* strings and expand trees for one document */
    strset_t stack;    /* subject sets being expanded (cycle guard) */
    size_t expansions;
    size_t n_checks;   /* assertions and expected-relations entries run */
    size_t n_expected; /* of which expected-relations entries */
    size_t n_failed;
    bool unsupported;
} vctx_t;

static bool ss_has(const strset_t *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return true;
    return false;
}

static int ss_add(strset_t *s, const char *x)
{
    if (ss_has(s, x))
        return KW_OK;
    if (kw_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)) != KW_OK)
        return KW_ENOMEM;
    s->v[s->n++] = x;
    return KW_OK;
}

static void ss_free(strset_t *s)
{
    kw_free(s->v);
    memset(s, 0, sizeof(*s));
}

static void ms_free(mset_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        ss_free(&m->v[i].excl);
        ss_free(&m->v[i].conc);
    }
    kw_free(m->v);
    memset(m, 0, sizeof(*m));
}

static mkey_t *ms_find(mset_t *m, kw_str_t type, kw_str_t rel)
{
    for (size_t i = 0; i < m->n; i++)
        if (kw_str_eq(m->v[i].type, type) && kw_str_eq(m->v[i].rel, rel))
            return &m->v[i];
    return NULL;
}

static mkey_t *ms_get(mset_t *m, kw_str_t type, kw_str_t rel)
{
    mkey_t *k = ms_find(m, type, rel);
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

/* dst |= src. A wildcard's exclusions shrink to what neither side includes. */
static int ms_union_into(mset_t *dst, const mset_t *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const mkey_t *s = &src->v[i];
        mkey_t *d = ms_get(dst, s->type, s->rel);
        if (!d)
            return KW_ENOMEM;
        strset_t excl = {0};
        int rc = KW_OK;
        if (d->wild && s->wild) {
            for (size_t j = 0; rc == KW_OK && j < d->excl.n; j++)
                if (ss_has(&s->excl, d->excl.v[j]))
                    rc = ss_add(&excl, d->excl.v[j]);
        } else if (d->wild) {
            for (size_t j = 0; rc == KW_OK && j < d->excl.n; j++)
                if (!ss_has(&s->conc, d->excl.v[j]))
                    rc = ss_add(&excl, d->excl.v[j]);
        } else if (s->wild) {
            for (size_t j = 0; rc == KW_OK && j < s->excl.n; j++)
                if (!ss_has(&d->conc, s->excl.v[j]))
                    rc = ss_add(&excl, s->excl.v[j]);
        }
        for (size_t j = 0; rc == KW_OK && j < s->conc.n; j++)
            rc = ss_add(&d->conc, s->conc.v[j]);
        if (rc != KW_OK) {
            ss_free(&excl);
            return rc;
        }
        ss_free(&d->excl);
        d->excl = excl;
        d->wild = d->wild || s->wild;
    }
    return KW_OK;
}

/* Does key k include concrete id x (directly or through its wildcard)? */
static bool mk_includes(const mkey_t *k, const char *x)
{
    return ss_has(&k->conc, x) || (k->wild && !ss_has(&k->excl, x));
}

/* *out = a & b (SpiceDB's subject-set intersection). */
static int ms_intersect(const mset_t *a, const mset_t *b, mset_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < a->n; i++) {
        const mkey_t *x = &a->v[i];
        mkey_t *y = ms_find((mset_t *)b, x->type, x->rel);
        if (!y)
            continue;
        mkey_t *o = ms_get(out, x->type, x->rel);
        if (!o)
            return KW_ENOMEM;
        int rc = KW_OK;
        for (size_t j = 0; rc == KW_OK && j < x->conc.n; j++)
            if (mk_includes(y, x->conc.v[j]))
                rc = ss_add(&o->conc, x->conc.v[j]);
        for (size_t j = 0; rc == KW_OK && j < y->conc.n; j++)
            if (mk_includes(x, y->conc.v[j]))
                rc = ss_add(&o->conc, y->conc.v[j]);
        if (x->wild && y->wild) {
            o->wild = true;
            for (size_t j = 0; rc == KW_OK && j < x->excl.n; j++)
                rc = ss_add(&o->excl, x->excl.v[j]);
            for (size_t j = 0; rc == KW_OK && j < y->excl.n; j++)
                rc = ss_add(&o->excl, y->excl.v[j]);
        }
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

/* *out = a - b (SpiceDB's subject-set exclusion, including wildcard minus wildcard). */
static int ms_subtract(const mset_t *a, const mset_t *b, mset_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < a->n; i++) {
        const mkey_t *x = &a->v[i];
        const mkey_t *y = ms_find((mset_t *)b, x->type, x->rel);
        mkey_t *o = ms_get(out, x->type, x->rel);
        if (!o)
            return KW_ENOMEM;
        int rc = KW_OK;
        for (size_t j = 0; rc == KW_OK && j < x->conc.n; j++)
            if (!y || !mk_includes(y, x->conc.v[j]))
                rc = ss_add(&o->conc, x->conc.v[j]);
        if (x->wild && y && y->wild) {
            /* (* - A) - (* - B) = B - A */
            for (size_t j = 0; rc == KW_OK && j < y->excl.n; j++)
                if (!ss_has(&x->excl, y->excl.v[j]))
                    rc = ss_add(&o->conc, y->excl.v[j]);
        } else if (x->wild) {
            o->wild = true;
            for (size_t j = 0; rc == KW_OK && j < x->excl.n; j++)
                rc = ss_add(&o->excl, x->excl.v[j]);
            for (size_t j = 0; rc == KW_OK && y && j < y->conc.n; j++)
                rc = ss_add(&o->excl, y->conc.v[j]);
        }
        if (rc != KW_OK)
            return rc;
    }
    return KW_OK;
}

/* ---- recursive expansion ---- */

static char *arena_str(kw_arena_t *a, kw_str_t s)
{
    return kw_arena_strndup(a, s.ptr ? s.ptr : "", s.len);
}

static bool has_relation(kw_str_t rel)
{
    return rel.len > 0 && !kw_str_eq_c(rel, "...");
}

static int expand_onr(vctx_t *c, kw_object_t obj, kw_str_t rel, mset_t *out, kw_diag_t *diag);

static int tree_to_set(vctx_t *c, const kw_expand_t *t, mset_t *out, kw_diag_t *diag)
{
    int rc = KW_OK;
    memset(out, 0, sizeof(*out));
    switch (t->kind) {
    case KW_EXPAND_LEAF:
        for (size_t i = 0; rc == KW_OK && i < t->n_subjects; i++) {
            const kw_subject_t *s = &t->subjects[i];
            kw_str_t rel = has_relation(s->relation) ? s->relation : KW_STR_NULL;
            char *type = arena_str(c->arena, s->type);
            char *id = arena_str(c->arena, s->id);
            char *rels = arena_str(c->arena, rel);
            if (!type || !id || !rels)
                return KW_ENOMEM;
            mkey_t *k = ms_get(out, (kw_str_t){type, s->type.len}, (kw_str_t){rels, rel.len});
            if (!k)
                return KW_ENOMEM;
            if (rel.len == 0 && kw_str_eq_c(s->id, "*")) {
                k->wild = true;
                ss_free(&k->excl);
            } else {
                rc = ss_add(&k->conc, id);
            }
            if (rc == KW_OK && rel.len > 0) {
                mset_t sub;
                rc = expand_onr(c, (kw_object_t){s->type, s->id}, rel, &sub, diag);
                if (rc == KW_OK)
                    rc = ms_union_into(out, &sub);
                ms_free(&sub);
            }
        }
        return rc;
    case KW_EXPAND_UNION:
        for (size_t i = 0; rc == KW_OK && i < t->n_children; i++) {
            mset_t sub;
            rc = tree_to_set(c, t->children[i], &sub, diag);
            if (rc == KW_OK)
                rc = ms_union_into(out, &sub);
            ms_free(&sub);
        }
        return rc;
    case KW_EXPAND_INTERSECTION:
    case KW_EXPAND_EXCLUSION:
        if (t->n_children == 0)
            return KW_OK;
        rc = tree_to_set(c, t->children[0], out, diag);
        for (size_t i = 1; rc == KW_OK && i < t->n_children; i++) {
            mset_t sub, res;
            rc = tree_to_set(c, t->children[i], &sub, diag);
            if (rc == KW_OK) {
                rc = t->kind == KW_EXPAND_INTERSECTION ? ms_intersect(out, &sub, &res)
                                                       : ms_subtract(out, &sub, &res);
                ms_free(out);
                *out = res;
            }
            ms_free(&sub);
        }
        return rc;
    }
    return kw_diag_set(diag, KW_EINTERNAL, 0, 0, "unknown expand node kind %d", (int)t->kind);
}

/* The set of subjects reachable from obj#rel, subject sets expanded recursively. A subject
 * set already being expanded higher up contributes nothing more (its members are already
 * collected there). */
static int expand_onr(vctx_t *c, kw_object_t obj, kw_str_t rel, mset_t *out, kw_diag_t *diag)
{
    memset(out, 0, sizeof(*out));
    char *key = kw_arena_sprintf(c->arena, "%.*s:%.*s#%.*s", KW_STR_FMT(obj.type),
                                 KW_STR_FMT(obj.id), KW_STR_FMT(rel));
    if (!key)
        return KW_ENOMEM;
    if (ss_has(&c->stack, key))
        return KW_OK;
    if (++c->expansions > VALIDATE_MAX_EXPANSIONS)
        return kw_diag_set(diag, KW_ELIMIT, 0, 0,
                           "more than %d subject sets to expand; the graph is too large to "
                           "validate expected relations",
                           VALIDATE_MAX_EXPANSIONS);
    kw_expand_t *tree = NULL;
    int rc = kw_engine_expand(c->e, obj, rel, c->arena, &tree, NULL, diag);
    if (rc != KW_OK)
        return rc;
    if ((rc = ss_add(&c->stack, key)) != KW_OK)
        return rc;
    rc = tree_to_set(c, tree, out, diag);
    c->stack.n--;
    return rc;
}

/* ---- small text helpers ---- */

static kw_str_t trim(kw_str_t s)
{
    while (s.len > 0 &&
           (s.ptr[0] == ' ' || s.ptr[0] == '\t' || s.ptr[0] == '\r' || s.ptr[0] == '\n'))
        s.ptr++, s.len--;
    while (s.len > 0 && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t' ||
                         s.ptr[s.len - 1] == '\r' || s.ptr[s.len - 1] == '\n'))
        s.len--;
    return s;
}

static kw_str_t strip_ellipsis(kw_str_t s)
{
    if (s.len > 4 && memcmp(s.ptr + s.len - 4, "#...", 4) == 0)
        s.len -= 4;
    return s;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Canonical text of a wildcard: `type:*` or `type:* - {type:a, type:b}` (sorted). */
static char *wild_text(kw_arena_t *a, kw_str_t type, strset_t *excl_full)
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

/* Flattens a found set into canonical subject strings. */
static int mset_texts(kw_arena_t *a, const mset_t *m, strset_t *out)
{
    int rc = KW_OK;
    for (size_t i = 0; rc == KW_OK && i < m->n; i++) {
        const mkey_t *k = &m->v[i];
        for (size_t j = 0; rc == KW_OK && j < k->conc.n; j++) {
            char *s = k->rel.len
                          ? kw_arena_sprintf(a, "%.*s:%s#%.*s", KW_STR_FMT(k->type), k->conc.v[j],
                                             KW_STR_FMT(k->rel))
                          : kw_arena_sprintf(a, "%.*s:%s", KW_STR_FMT(k->type), k->conc.v[j]);
            rc = s ? ss_add(out, s) : KW_ENOMEM;
        }
        if (rc == KW_OK && k->wild) {
            strset_t full = {0};
            for (size_t j = 0; rc == KW_OK && j < k->excl.n; j++) {
                char *s = kw_arena_sprintf(a, "%.*s:%s", KW_STR_FMT(k->type), k->excl.v[j]);
                rc = s ? ss_add(&full, s) : KW_ENOMEM;
            }
            char *w = rc == KW_OK ? wild_text(a, k->type, &full) : NULL;
            ss_free(&full);
            if (rc == KW_OK)
                rc = w ? ss_add(out, w) : KW_ENOMEM;
        }
    }
    return rc;
}

/* Parses one expected-relation string "[subject] is <...>" into canonical subject text.
 * Returns KW_EUNSUPPORTED for a caveated subject, KW_EINVAL for a malformed string. */
static int expected_text(kw_arena_t *a, kw_str_t s, char **out, kw_diag_t *diag)
{
    s = trim(s);
    if (s.len == 0 || s.ptr[0] != '[')
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "expected relation \"%.*s\" must start with '[subject]'", KW_STR_FMT(s));
    size_t depth = 0, end = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.ptr[i] == '[') {
            depth++;
        } else if (s.ptr[i] == ']' && --depth == 0) {
            end = i;
            break;
        }
    }
    if (end == 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "expected relation \"%.*s\" lacks a ']'",
                           KW_STR_FMT(s));
    kw_str_t subj = trim((kw_str_t){s.ptr + 1, end - 1});
    if (memchr(subj.ptr, '[', subj.len))
        return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0, "caveats are not supported yet");
    const char *dash = NULL;
    for (size_t i = 0; i + 1 < subj.len; i++)
        if (subj.ptr[i] == '-' && (i == 0 || subj.ptr[i - 1] == ' ' || subj.ptr[i - 1] == '*')) {
            kw_str_t rest = trim((kw_str_t){subj.ptr + i + 1, subj.len - i - 1});
            if (rest.len > 0 && rest.ptr[0] == '{') {
                dash = subj.ptr + i;
                break;
            }
        }
    if (!dash) {
        subj = strip_ellipsis(subj);
        *out = kw_arena_strndup(a, subj.ptr, subj.len);
        return *out ? KW_OK : KW_ENOMEM;
    }
    kw_str_t base = strip_ellipsis(trim((kw_str_t){subj.ptr, (size_t)(dash - subj.ptr)}));
    kw_str_t set = trim((kw_str_t){dash + 1, subj.len - (size_t)(dash + 1 - subj.ptr)});
    if (base.len < 2 || memcmp(base.ptr + base.len - 2, ":*", 2) != 0 || set.len < 2 ||
        set.ptr[set.len - 1] != '}')
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "expected relation \"%.*s\": only a wildcard may have exclusions, "
                           "written `type:* - {type:a, type:b}`",
                           KW_STR_FMT(s));
    strset_t items = {0};
    int rc = KW_OK;
    size_t p = 1;
    while (rc == KW_OK && p < set.len - 1) {
        size_t q = p;
        while (q < set.len - 1 && set.ptr[q] != ',')
            q++;
        kw_str_t item = strip_ellipsis(trim((kw_str_t){set.ptr + p, q - p}));
        if (item.len > 0) {
            char *it = kw_arena_strndup(a, item.ptr, item.len);
            rc = it ? ss_add(&items, it) : KW_ENOMEM;
        }
        p = q + 1;
    }
    kw_str_t type = {base.ptr, base.len - 2};
    if (rc == KW_OK) {
        *out = wild_text(a, type, &items);
        rc = *out ? KW_OK : KW_ENOMEM;
    }
    ss_free(&items);
    return rc;
}

/* ---- YAML access ---- */

static kw_str_t scalar(yaml_node_t *n)
{
    return (kw_str_t){(const char *)n->data.scalar.value, n->data.scalar.length};
}

static bool is_null(yaml_node_t *n)
{
    if (!n)
        return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    kw_str_t s = scalar(n);
    return s.len == 0 || kw_str_eq_c(s, "~") || kw_str_eq_c(s, "null") || kw_str_eq_c(s, "Null") ||
           kw_str_eq_c(s, "NULL");
}

static unsigned long node_line(yaml_node_t *n)
{
    return (unsigned long)n->start_mark.line + 1;
}

/* Reports a failure (counted) as `FILE: message`. */
static void report(vctx_t *c, const char *fmt, ...) KW_PRINTF(2, 3);
static void report(vctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", c->file);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    c->n_failed++;
}

/* Reports an error from an engine/parse call; caveat/expiration errors become the one
 * "not supported yet" line per document. */
static void report_err(vctx_t *c, int rc, const kw_diag_t *d, const char *fmt, ...) KW_PRINTF(4, 5);
static void report_err(vctx_t *c, int rc, const kw_diag_t *d, const char *fmt, ...)
{
    if (rc == KW_EUNSUPPORTED) {
        if (!c->unsupported)
            printf("%s: %s\n", c->file, d->msg[0] ? d->msg : "caveats are not supported yet");
        c->unsupported = true;
        c->n_failed++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", c->file);
    vprintf(fmt, ap);
    printf(": %s\n", d->msg[0] ? d->msg : kw_strerror(rc));
    va_end(ap);
    c->n_failed++;
}

static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    kw_buf_t b;
    kw_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        kw_buf_append(&b, chunk, n);
    int err = ferror(f) ? EIO : 0;
    fclose(f);
    if (b.failed)
        err = ENOMEM;
    if (err) {
        kw_buf_free(&b);
        return -err;
    }
    kw_buf_append(&b, "", 0);
    *out = b.ptr ? b.ptr : kw_strndup("", 0);
    *len = b.len;
    return *out ? 0 : -ENOMEM;
}

/* ---- the document ---- */

static int load_schema(vctx_t *c, kw_str_t text)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_engine_set_schema(c->e, text, NULL, &d);
    if (rc == KW_EUNSUPPORTED) {
        report_err(c, rc, &d, "schema");
    } else if (rc != KW_OK) {
        printf("%s: schema:%u:%u: %s\n", c->file, d.line, d.col,
               d.msg[0] ? d.msg : kw_strerror(rc));
        c->n_failed++;
    }
    return rc;
}

static int load_relationships(vctx_t *c, kw_str_t text)
{
    size_t line = 0, p = 0;
    while (p < text.len) {
        size_t q = p;
        while (q < text.len && text.ptr[q] != '\n')
            q++;
        kw_str_t raw = {text.ptr + p, q - p};
        kw_str_t s = trim(raw);
        line++;
        p = q + 1;
        if (s.len == 0 || (s.len >= 2 && s.ptr[0] == '/' && s.ptr[1] == '/'))
            continue;
        kw_diag_t d;
        kw_diag_clear(&d);
        kw_update_t up = {.op = KW_OP_TOUCH};
        int rc = kw_rel_parse(s, &up.rel, &d);
        if (rc != KW_OK) {
            report_err(c, rc, &d, "relationship %lu (\"%.*s\"), column %u", line, KW_STR_FMT(s),
                       d.col);
            return rc;
        }
        rc = kw_engine_write(c->e, &up, 1, NULL, 0, 0, NULL, &d);
        if (rc != KW_OK) {
            report_err(c, rc, &d, "relationship %lu (\"%.*s\")", line, KW_STR_FMT(s));
            return rc;
        }
    }
    return KW_OK;
}

static int run_assertion(vctx_t *c, const char *kind, bool want, yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE) {
        report(c, "line %lu: each %s entry must be a string", node_line(n), kind);
        return KW_EINVAL;
    }
    kw_str_t s = trim(scalar(n));
    kw_diag_t d;
    kw_diag_clear(&d);
    /* `res#perm@subject with {context}`: caveat context */
    for (size_t i = 0; i + 5 < s.len; i++)
        if (memcmp(s.ptr + i, " with ", 6) == 0) {
            kw_diag_set(&d, KW_EUNSUPPORTED, 0, 0, "caveats are not supported yet");
            report_err(c, KW_EUNSUPPORTED, &d, "%s", kind);
            return KW_EUNSUPPORTED;
        }
    kw_rel_t r;
    int rc = kw_rel_parse(s, &r, &d);
    c->n_checks++;
    if (rc != KW_OK) {
        report_err(c, rc, &d, "%s error: %.*s (column %u)", kind, KW_STR_FMT(s), d.col);
        return rc;
    }
    kw_check_result_t res;
    rc = kw_engine_check(c->e, r.resource, r.relation, r.subject, &res, NULL, &d);
    if (rc != KW_OK) {
        report_err(c, rc, &d, "%s error: %.*s", kind, KW_STR_FMT(s));
        return rc;
    }
    if ((res == KW_CHECK_YES) != want)
        report(c, "%s failed: %.*s", kind, KW_STR_FMT(s));
    return KW_OK;
}

static int run_assertions(vctx_t *c, yaml_document_t *doc, yaml_node_t *n)
{
    if (is_null(n))
        return KW_OK;
    if (n->type != YAML_MAPPING_NODE) {
        report(c, "line %lu: assertions must be a map with assertTrue / assertFalse lists",
               node_line(n));
        return KW_EINVAL;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) {
            report(c, "line %lu: assertions keys must be strings", node_line(n));
            return KW_EINVAL;
        }
        kw_str_t key = scalar(k);
        bool want;
        if (kw_str_eq_c(key, "assertTrue")) {
            want = true;
        } else if (kw_str_eq_c(key, "assertFalse")) {
            want = false;
        } else if (kw_str_eq_c(key, "assertCaveated")) {
            kw_diag_t d;
            kw_diag_set(&d, KW_EUNSUPPORTED, 0, 0, "caveats are not supported yet");
            report_err(c, KW_EUNSUPPORTED, &d, "assertCaveated");
            return KW_EUNSUPPORTED;
        } else {
            report(c,
                   "line %lu: unknown assertion kind \"%.*s\" (use assertTrue or "
                   "assertFalse)",
                   node_line(k), KW_STR_FMT(key));
            return KW_EINVAL;
        }
        if (is_null(v))
            continue;
        if (v->type != YAML_SEQUENCE_NODE) {
            report(c, "line %lu: %.*s must be a list", node_line(v), KW_STR_FMT(key));
            return KW_EINVAL;
        }
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            yaml_node_t *a = yaml_document_get_node(doc, *it);
            if (!a)
                continue;
            int rc = run_assertion(c, want ? "assertTrue" : "assertFalse", want, a);
            if (rc == KW_EUNSUPPORTED || rc == KW_ENOMEM)
                return rc;
        }
    }
    return KW_OK;
}

/* Parses `type:id#relation` (an expected-relations key). */
static int parse_onr(kw_str_t s, kw_object_t *obj, kw_str_t *rel)
{
    const char *colon = memchr(s.ptr, ':', s.len);
    const char *hash = NULL;
    for (size_t i = s.len; i > 0; i--)
        if (s.ptr[i - 1] == '#') {
            hash = s.ptr + i - 1;
            break;
        }
    if (!colon || !hash || hash < colon || colon == s.ptr || hash == colon + 1 ||
        hash + 1 == s.ptr + s.len)
        return KW_EINVAL;
    obj->type = (kw_str_t){s.ptr, (size_t)(colon - s.ptr)};
    obj->id = (kw_str_t){colon + 1, (size_t)(hash - colon - 1)};
    *rel = (kw_str_t){hash + 1, (size_t)(s.ptr + s.len - hash - 1)};
    return KW_OK;
}

static int run_expected(vctx_t *c, yaml_document_t *doc, yaml_node_t *k, yaml_node_t *v)
{
    kw_str_t key = trim(scalar(k));
    kw_object_t obj;
    kw_str_t rel;
    kw_diag_t d;
    kw_diag_clear(&d);
    c->n_checks++;
    c->n_expected++;
    if (parse_onr(key, &obj, &rel) != KW_OK) {
        report(c, "line %lu: validation key \"%.*s\" must be `type:id#relation`", node_line(k),
               KW_STR_FMT(key));
        return KW_EINVAL;
    }
    strset_t want = {0}, got = {0};
    mset_t found = {0};
    int rc = KW_OK;
    if (!is_null(v) && v->type != YAML_SEQUENCE_NODE) {
        report(c, "line %lu: the expected relations of %.*s must be a list", node_line(v),
               KW_STR_FMT(key));
        return KW_EINVAL;
    }
    for (yaml_node_item_t *it = is_null(v) ? NULL : v->data.sequence.items.start;
         rc == KW_OK && it && it < v->data.sequence.items.top; it++) {
        yaml_node_t *e = yaml_document_get_node(doc, *it);
        if (!e || e->type != YAML_SCALAR_NODE) {
            report(c, "line %lu: expected relations must be strings", node_line(v));
            rc = KW_EINVAL;
            break;
        }
        char *t = NULL;
        rc = expected_text(c->arena, scalar(e), &t, &d);
        if (rc == KW_OK)
            rc = ss_add(&want, t);
        else
            report_err(c, rc, &d, "validation of %.*s (line %lu)", KW_STR_FMT(key), node_line(e));
    }
    if (rc == KW_OK) {
        c->expansions = 0;
        rc = expand_onr(c, obj, rel, &found, &d);
        if (rc == KW_OK)
            rc = mset_texts(c->arena, &found, &got);
        if (rc != KW_OK)
            report_err(c, rc, &d, "validation of %.*s", KW_STR_FMT(key));
    }
    if (rc == KW_OK) {
        bool ok = true;
        for (size_t i = 0; i < want.n; i++)
            if (!ss_has(&got, want.v[i])) {
                if (ok)
                    c->n_failed++;
                ok = false;
                printf("%s: validation failed for %.*s: expected subject [%s] was not found\n",
                       c->file, KW_STR_FMT(key), want.v[i]);
            }
        for (size_t i = 0; i < got.n; i++)
            if (!ss_has(&want, got.v[i])) {
                if (ok)
                    c->n_failed++;
                ok = false;
                printf("%s: validation failed for %.*s: found subject [%s] which is not "
                       "listed\n",
                       c->file, KW_STR_FMT(key), got.v[i]);
            }
    }
    ss_free(&want);
    ss_free(&got);
    ms_free(&found);
    return rc;
}

static int run_validation(vctx_t *c, yaml_document_t *doc, yaml_node_t *n)
{
    if (is_null(n))
        return KW_OK;
    if (n->type != YAML_MAPPING_NODE) {
        report(c, "line %lu: validation must be a map from `type:id#relation` to a list",
               node_line(n));
        return KW_EINVAL;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) {
            report(c, "line %lu: validation keys must be strings", node_line(n));
            return KW_EINVAL;
        }
        int rc = run_expected(c, doc, k, v);
        if (rc == KW_EUNSUPPORTED || rc == KW_ENOMEM)
            return rc;
    }
    return KW_OK;
}

/* Reads `schemaFile` relative to the validation file's folder. */
static int read_schema_file(vctx_t *c, kw_str_t name, char **out, size_t *len)
{
    const char *slash = strrchr(c->file, '/');
    char *path =
        name.len > 0 && name.ptr[0] == '/'
            ? kw_arena_sprintf(c->arena, "%.*s", KW_STR_FMT(name))
            : kw_arena_sprintf(c->arena, "%.*s%.*s", slash ? (int)(slash - c->file + 1) : 0,
                               c->file, KW_STR_FMT(name));
    if (!path)
        return -ENOMEM;
    return read_file(path, out, len);
}

static void run_document(vctx_t *c, yaml_document_t *doc, yaml_node_t *root)
{
    if (is_null(root))
        return;
    if (root->type != YAML_MAPPING_NODE) {
        report(c,
               "line %lu: a validation document must be a map (schema, relationships, "
               "assertions, validation)",
               node_line(root));
        return;
    }
    yaml_node_t *schema = NULL, *schema_file = NULL, *rels = NULL, *asserts = NULL, *valid = NULL;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        kw_str_t key = k && k->type == YAML_SCALAR_NODE ? scalar(k) : KW_STR_NULL;
        if (kw_str_eq_c(key, "schema"))
            schema = v;
        else if (kw_str_eq_c(key, "schemaFile"))
            schema_file = v;
        else if (kw_str_eq_c(key, "relationships"))
            rels = v;
        else if (kw_str_eq_c(key, "assertions"))
            asserts = v;
        else if (kw_str_eq_c(key, "validation"))
            valid = v;
        else {
            report(c,
                   "line %lu: unknown key \"%.*s\" (expected schema, schemaFile, "
                   "relationships, assertions or validation)",
                   k ? node_line(k) : 0UL, KW_STR_FMT(key));
            return;
        }
    }
    if (kw_engine_new(&c->e) != KW_OK) {
        report(c, "out of memory");
        return;
    }
    char *owned = NULL;
    kw_str_t text = KW_STR_NULL;
    if (schema && schema->type == YAML_SCALAR_NODE) {
        text = scalar(schema);
    } else if (schema_file && schema_file->type == YAML_SCALAR_NODE) {
        size_t len = 0;
        int err = read_schema_file(c, scalar(schema_file), &owned, &len);
        if (err != 0) {
            report(c, "schemaFile \"%.*s\": %s", KW_STR_FMT(scalar(schema_file)), strerror(-err));
            goto done;
        }
        text = (kw_str_t){owned, len};
    } else {
        report(c, "%s", "the document has no schema (a `schema: |` text block)");
        goto done;
    }
    if (load_schema(c, text) != KW_OK)
        goto done;
    if (rels && !is_null(rels)) {
        if (rels->type != YAML_SCALAR_NODE) {
            report(c, "line %lu: relationships must be a text block, one per line",
                   node_line(rels));
            goto done;
        }
        if (load_relationships(c, scalar(rels)) != KW_OK)
            goto done;
    }
    if (run_assertions(c, doc, asserts) == KW_EUNSUPPORTED)
        goto done;
    (void)run_validation(c, doc, valid);
done:
    kw_free(owned);
    kw_engine_free(c->e);
    c->e = NULL;
}

/* Validates one file; returns 0 when everything passed. */
static int validate_file(const char *path)
{
    vctx_t c;
    memset(&c, 0, sizeof(c));
    c.file = path;
    char *text = NULL;
    size_t len = 0;
    int err = read_file(path, &text, &len);
    if (err != 0) {
        printf("%s: cannot read: %s\n", path, strerror(-err));
        return 1;
    }
    c.arena = kw_arena_new(0);
    yaml_parser_t parser;
    if (!c.arena || !yaml_parser_initialize(&parser)) {
        printf("%s: out of memory\n", path);
        kw_arena_free(c.arena);
        kw_free(text);
        return 1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    size_t n_docs = 0;
    for (;;) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            printf("%s:%lu:%lu: YAML error: %s%s%s\n", path,
                   (unsigned long)parser.problem_mark.line + 1,
                   (unsigned long)parser.problem_mark.column + 1,
                   parser.problem ? parser.problem : "malformed document",
                   parser.context ? " " : "", parser.context ? parser.context : "");
            c.n_failed++;
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) {
            yaml_document_delete(&doc);
            break;
        }
        n_docs++;
        run_document(&c, &doc, root);
        yaml_document_delete(&doc);
        kw_arena_reset(c.arena);
        if (c.unsupported)
            break;
    }
    yaml_parser_delete(&parser);
    ss_free(&c.stack);
    kw_arena_free(c.arena);
    kw_free(text);
    if (n_docs == 0 && c.n_failed == 0) {
        printf("%s: no validation document found\n", path);
        return 1;
    }
    if (c.n_failed > 0) {
        if (!c.unsupported)
            printf("%s: FAILED (%zu of %zu checks failed)\n", path, c.n_failed,
                   c.n_checks > c.n_failed ? c.n_checks : c.n_failed);
        return 1;
    }
    if (c.n_expected > 0)
        printf("%s: %zu assertions passed, %zu expected relations matched\n", path,
               c.n_checks - c.n_expected, c.n_expected);
    else
        printf("%s: %zu assertions passed\n", path, c.n_checks);
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
