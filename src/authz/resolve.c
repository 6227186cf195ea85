/*
 * authz/resolve.c - names and ids against the schema: SpiceDB's object id grammar, a
 * relationship resolved for writing (tag-kw-validate), a query's resource permission and
 * subject, and the relationship text used in messages.
 *
 * Messages name the offending type, relation or id (ids cut at 64 or 80 bytes) and are
 * client-safe.
 */
#include <stdio.h>
#include <string.h>

#include "authz/engine_int.h"

bool kw__is_ellipsis(kw_str_t rel)
{
    return rel.len == 0 || kw_str_eq(rel, KW_STR("..."));
}

/* SpiceDB's id charset [a-zA-Z0-9/_|\-=+] as a table: ids are checked on every call. */
static const unsigned char id_chars[256] = {
    ['/'] = 1, ['_'] = 1, ['|'] = 1, ['-'] = 1, ['='] = 1, ['+'] = 1, ['0'] = 1, ['1'] = 1,
    ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1,
    ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
};

/* SpiceDB's object id grammar: [a-zA-Z0-9/_|\-=+]{1,1024}, or `*` where a wildcard is
 * meant (checked by the caller). */
bool kw__id_ok(kw_str_t id)
{
    if (id.len == 0 || id.len > KW_MAX_OBJECT_ID_LEN)
        return false;
    /* Eight table loads per step, no branch per byte (an id is usually 20-40 bytes). */
    const unsigned char *p = (const unsigned char *)id.ptr;
    unsigned ok = 1;
    size_t i = 0;
    for (; i + 8 <= id.len; i += 8)
        ok &= (unsigned)(id_chars[p[i]] & id_chars[p[i + 1]] & id_chars[p[i + 2]] &
                         id_chars[p[i + 3]] & id_chars[p[i + 4]] & id_chars[p[i + 5]] &
                         id_chars[p[i + 6]] & id_chars[p[i + 7]]);
    for (; i < id.len; i++)
        ok &= id_chars[p[i]];
    return ok != 0;
}

static bool is_star(kw_str_t id)
{
    return id.len == 1 && id.ptr[0] == '*';
}

int kw__bad_id(kw_diag_t *diag, const char *what, kw_str_t id)
{
    if (id.len == 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "%s id is empty", what);
    if (id.len > KW_MAX_OBJECT_ID_LEN)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "%s id is longer than %d bytes", what,
                           KW_MAX_OBJECT_ID_LEN);
    return kw_diag_set(diag, KW_EINVAL, 0, 0,
                       "%s id \"%.*s\" has a character outside [a-zA-Z0-9/_|-=+]", what,
                       (int)(id.len > 64 ? 64 : id.len), id.ptr);
}

/* Resolves and validates one relationship for writing (tag-kw-validate). */
int kw__resolve_rel(const kw_schema_t *s, const kw_rel_t *r, kw_rrel_t *out, kw_diag_t *diag)
{
    out->rtype = kw_schema_type_index(s, r->resource.type);
    if (out->rtype == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(r->resource.type));
    if (is_star(r->resource.id))
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "a resource id cannot be the wildcard \"*\" (%.*s:*)",
                           KW_STR_FMT(r->resource.type));
    if (!kw__id_ok(r->resource.id))
        return kw__bad_id(diag, "resource", r->resource.id);
    out->rel = kw_schema_rel_index(s, out->rtype, r->relation);
    if (out->rel == KW_REL_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "relation \"%.*s#%.*s\" not found",
                           KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation));
    if (s->types[out->rtype].rels[out->rel].is_permission)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "\"%.*s#%.*s\" is a permission; relationships can only be written "
                           "to relations",
                           KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation));
    out->stype = kw_schema_type_index(s, r->subject.type);
    if (out->stype == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(r->subject.type));
    out->wild = is_star(r->subject.id);
    if (!out->wild && !kw__id_ok(r->subject.id))
        return kw__bad_id(diag, "subject", r->subject.id);
    out->srel = KW_REL_NONE;
    if (!kw__is_ellipsis(r->subject.relation)) {
        if (out->wild)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "a wildcard subject cannot have a relation (%.*s:*#%.*s)",
                               KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.relation));
        out->srel = kw_schema_rel_index(s, out->stype, r->subject.relation);
        if (out->srel == KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "relation \"%.*s#%.*s\" not found",
                               KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.relation));
    }
    out->caveat = KW_CAVEAT_NONE;
    if (r->caveat.len) {
        out->caveat = kw_schema_caveat_index(s, r->caveat);
        if (out->caveat == KW_CAVEAT_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "caveat \"%.*s\" not found",
                               KW_STR_FMT(r->caveat));
    } else if (r->caveat_ctx.len) {
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "a caveat context needs a caveat name");
    }
    if (r->expires_at < 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "expiration time is before the Unix epoch");
    bool expiring = r->expires_at != 0;
    if (!kw_schema_allows_traits(s, out->rtype, out->rel, out->stype, out->srel, out->wild,
                                 out->caveat, expiring)) {
        /* SpiceDB's rule: the subject type must be allowed with exactly these traits. */
        char traits[KW_MAX_NAME_LEN + 40] = "";
        if (out->caveat != KW_CAVEAT_NONE && expiring)
            snprintf(traits, sizeof(traits), " with %.*s and expiration", KW_STR_FMT(r->caveat));
        else if (out->caveat != KW_CAVEAT_NONE)
            snprintf(traits, sizeof(traits), " with %.*s", KW_STR_FMT(r->caveat));
        else if (expiring)
            snprintf(traits, sizeof(traits), " with expiration");
        if (out->wild)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relation \"%.*s#%.*s\" does not allow subject type \"%.*s:*%s\"",
                               KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation),
                               KW_STR_FMT(r->subject.type), traits);
        if (out->srel != KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relation \"%.*s#%.*s\" does not allow subject type \"%.*s#%.*s%s\"",
                               KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation),
                               KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.relation),
                               traits);
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "relation \"%.*s#%.*s\" does not allow subject type \"%.*s%s\"",
                           KW_STR_FMT(r->resource.type), KW_STR_FMT(r->relation),
                           KW_STR_FMT(r->subject.type), traits);
    }
    return KW_OK;
}

/* Equal names: the same bytes (usually the same pointer in a batch). */
static inline bool name_eq(kw_str_t a, kw_str_t b)
{
    return a.len == b.len && (a.ptr == b.ptr || a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline bool is_plain(const kw_rel_t *r)
{
    return r->caveat.len == 0 && r->caveat_ctx.len == 0 && r->expires_at == 0;
}

int kw__resolve_rel_memo(const kw_schema_t *s, const kw_rel_t *r, kw_rrel_t *out,
                         kw_resolve_memo_t *memo, kw_diag_t *diag)
{
    /* A plain relationship with remembered names resolves to the remembered indexes: the
     * names passed every schema check, and with no caveat, expiry or wildcard the traits
     * are the same. Ids are still checked; a bad one ("*" included) takes the full path
     * for its message. */
    if (is_plain(r)) {
        for (unsigned i = 0; i < memo->n; i++) {
            if (name_eq(r->relation, memo->e[i].rel) &&
                name_eq(r->resource.type, memo->e[i].rtype) &&
                name_eq(r->subject.type, memo->e[i].stype) &&
                name_eq(r->subject.relation, memo->e[i].srel)) {
                if (!kw__id_ok(r->resource.id) || !kw__id_ok(r->subject.id))
                    break;
                *out = memo->e[i].rr;
                return KW_OK;
            }
        }
    }
    int rc = kw__resolve_rel(s, r, out, diag);
    if (rc == KW_OK && is_plain(r) && !out->wild) {
        unsigned i = memo->next;
        memo->next = (memo->next + 1) % KW_RESOLVE_MEMO_N;
        if (memo->n < KW_RESOLVE_MEMO_N)
            memo->n++;
        memo->e[i].rtype = r->resource.type;
        memo->e[i].rel = r->relation;
        memo->e[i].stype = r->subject.type;
        memo->e[i].srel = r->subject.relation;
        memo->e[i].rr = *out;
    }
    return rc;
}

int kw__attr_make(const kw_schema_t *s, const kw_rrel_t *rr, const kw_rel_t *r, kw_attr_t *out,
                  bool *has, kw_diag_t *diag)
{
    *has = false; /* set only once *out holds something to free */
    if (rr->caveat == KW_CAVEAT_NONE && r->expires_at == 0)
        return KW_OK;
    kw_attr_t a = {.rnode = KW_NODE_NONE,
                   .snode = KW_NODE_NONE,
                   .rel = rr->rel,
                   .srel = rr->srel,
                   .caveat = rr->caveat,
                   .fixed = -1,
                   .expires_at = r->expires_at};
    if (rr->caveat != KW_CAVEAT_NONE) {
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc = kw_cel_ctx_bind(s->caveats[rr->caveat].program, r->caveat_ctx, &a.bound, &d);
        if (rc != KW_OK) {
            char buf[200];
            kw__fmt_rel(r, buf, sizeof(buf));
            return kw_diag_set(diag, rc, 0, 0, "the context of relationship %s: %s", buf, d.msg);
        }
        /* Partial evaluation decides && and || commutatively: a definite answer from the
         * relationship's context alone holds whatever a request adds. An error is not
         * kept: queries evaluate again and report it. */
        kw_cel_result_t res = KW_CEL_PARTIAL;
        kw_diag_clear(&d);
        if (kw_cel_eval(s->caveats[rr->caveat].program, a.bound, NULL, &res, NULL, &d) == KW_OK &&
            res != KW_CEL_PARTIAL)
            a.fixed = (int8_t)res;
        if (r->caveat_ctx.len) {
            a.ctx = kw_strndup(r->caveat_ctx.ptr, r->caveat_ctx.len);
            if (!a.ctx) {
                kw_cel_ctx_free(a.bound);
                return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while writing");
            }
            a.ctx_len = r->caveat_ctx.len;
        }
    }
    *out = a;
    *has = true;
    return KW_OK;
}

void kw__fmt_rel(const kw_rel_t *r, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%.*s:%.*s#%.*s@%.*s:%.*s", KW_STR_FMT(r->resource.type),
                     (int)(r->resource.id.len > 80 ? 80 : r->resource.id.len), r->resource.id.ptr,
                     KW_STR_FMT(r->relation), KW_STR_FMT(r->subject.type),
                     (int)(r->subject.id.len > 80 ? 80 : r->subject.id.len), r->subject.id.ptr);
    if (n > 0 && (size_t)n < cap && !kw__is_ellipsis(r->subject.relation))
        snprintf(buf + n, cap - (size_t)n, "#%.*s", KW_STR_FMT(r->subject.relation));
}

/* The name of relation `rel` of `type`, "" for KW_REL_NONE (a plain subject). */
kw_str_t kw__rel_name(const kw_schema_t *s, uint16_t type, uint16_t rel)
{
    return rel == KW_REL_NONE ? KW_STR("") : s->types[type].rels[rel].name;
}

int kw__resolve_perm(const kw_engine_t *e, kw_str_t type, kw_str_t perm, uint16_t *t, uint16_t *r,
                     kw_diag_t *diag)
{
    const kw_schema_t *s = e->model->schema;
    *t = kw_schema_type_index(s, type);
    if (*t == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(type));
    *r = kw_schema_rel_index(s, *t, perm);
    if (*r == KW_REL_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "relation or permission \"%.*s#%.*s\" not found",
                           KW_STR_FMT(type), KW_STR_FMT(perm));
    return KW_OK;
}

int kw__resolve_subject(const kw_engine_t *e, kw_subject_t subj, uint16_t *stype, uint16_t *srel,
                        uint32_t *snode, kw_diag_t *diag)
{
    const kw_schema_t *s = e->model->schema;
    *stype = kw_schema_type_index(s, subj.type);
    if (*stype == KW_TYPE_NONE)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "object definition \"%.*s\" not found",
                           KW_STR_FMT(subj.type));
    *srel = KW_REL_NONE;
    if (!kw__is_ellipsis(subj.relation)) {
        *srel = kw_schema_rel_index(s, *stype, subj.relation);
        if (*srel == KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relation or permission \"%.*s#%.*s\" not found",
                               KW_STR_FMT(subj.type), KW_STR_FMT(subj.relation));
    }
    if (is_star(subj.id)) {
        if (*srel != KW_REL_NONE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "a wildcard subject cannot have a relation");
    } else if (!kw__id_ok(subj.id)) {
        return kw__bad_id(diag, "subject", subj.id);
    }
    if (snode)
        *snode = kw__graph_find(&e->g, *stype, subj.id.ptr, subj.id.len);
    return KW_OK;
}
