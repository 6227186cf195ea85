/*
 * authz/relstr.c - SpiceDB's relationship string: `type:id#relation@type:id[#relation]`.
 *
 * Grammar (syntax only, no schema involved):
 *   rel      = object "#" relation "@" subject [ caveat ]
 *   object   = type ":" id
 *   subject  = type ":" ( id | "*" ) [ "#" ( relation | "..." ) ]
 *   type     = *( name "/" ) name         (the same prefix rule as the schema compiler)
 *   name     = [a-z] [a-z0-9_]* not ending in "_", at most KW_MAX_NAME_LEN bytes in all
 *   id       = [a-zA-Z0-9/_|\-=+]{1,KW_MAX_OBJECT_ID_LEN}   (SpiceDB's extended ids)
 *   caveat   = "[" ... "]"   -> KW_EUNSUPPORTED (caveats and expiration come later)
 *
 * The parsed kw_rel_t points into the input text. A subject relation of "..." is reported
 * as an empty relation (a plain object). Every error carries the 1-based byte column of
 * the offending character (line is always 1: a relationship string is one line).
 * kw_rel_copy is the one deep copy of a kw_rel_t (into an arena).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "authz/authz.h"

typedef struct cursor {
    const char *p;
    size_t pos;
    size_t len;
    kw_diag_t *diag;
} cursor_t;

static bool is_name_start(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
           c == '_' || c == '|' || c == '-' || c == '=' || c == '+';
}

/* Describes the character at pos for an error message ("end of input" past the end). */
static const char *describe(const cursor_t *c, size_t pos, char buf[16])
{
    if (pos >= c->len)
        return "end of input";
    unsigned char ch = (unsigned char)c->p[pos];
    if (ch >= 0x21 && ch < 0x7f)
        snprintf(buf, 16, "'%c'", ch);
    else
        snprintf(buf, 16, "byte 0x%02x", ch);
    return buf;
}

/* Scans one name (a type, possibly with `/` prefixes, or a relation). */
static int scan_name(cursor_t *c, bool allow_prefix, const char *what, kw_str_t *out)
{
    size_t start = c->pos;
    char buf[16];
    for (;;) {
        if (c->pos >= c->len || !is_name_start(c->p[c->pos])) {
            if (c->pos == start)
                return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                                   "expected a %s name (a lowercase letter first), found %s", what,
                                   describe(c, c->pos, buf));
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                               "expected a name segment after '/' in %s name, found %s", what,
                               describe(c, c->pos, buf));
        }
        while (c->pos < c->len && is_name_char(c->p[c->pos]))
            c->pos++;
        if (c->p[c->pos - 1] == '_')
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)c->pos,
                               "a %s name cannot end with '_'", what);
        if (allow_prefix && c->pos < c->len && c->p[c->pos] == '/') {
            c->pos++;
            continue;
        }
        break;
    }
    if (c->pos - start > KW_MAX_NAME_LEN)
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(start + 1),
                           "this %s name is %zu bytes long; the limit is %d", what, c->pos - start,
                           KW_MAX_NAME_LEN);
    *out = (kw_str_t){c->p + start, c->pos - start};
    return KW_OK;
}

/* Scans an object id; a lone `*` is accepted when allow_wildcard. */
static int scan_id(cursor_t *c, bool allow_wildcard, const char *what, kw_str_t *out)
{
    size_t start = c->pos;
    char buf[16];
    if (allow_wildcard && c->pos < c->len && c->p[c->pos] == '*') {
        c->pos++;
        *out = (kw_str_t){c->p + start, 1};
        return KW_OK;
    }
    while (c->pos < c->len && is_id_char(c->p[c->pos]))
        c->pos++;
    if (c->pos == start) {
        if (c->pos < c->len && c->p[c->pos] == '*')
            return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                               "a wildcard '*' is only allowed as the subject id");
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                           "expected the %s id (letters, digits and /_|-=+), found %s", what,
                           describe(c, c->pos, buf));
    }
    if (c->pos - start > KW_MAX_OBJECT_ID_LEN)
        return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(start + 1),
                           "this %s id is %zu bytes long; the limit is %d", what, c->pos - start,
                           KW_MAX_OBJECT_ID_LEN);
    *out = (kw_str_t){c->p + start, c->pos - start};
    return KW_OK;
}

static int expect(cursor_t *c, char want, const char *after)
{
    char buf[16];
    if (c->pos < c->len && c->p[c->pos] == want) {
        c->pos++;
        return KW_OK;
    }
    return kw_diag_set(c->diag, KW_EINVAL, 1, (uint32_t)(c->pos + 1),
                       "expected '%c' after the %s, found %s", want, after,
                       describe(c, c->pos, buf));
}

int kw_rel_parse(kw_str_t text, kw_rel_t *out, kw_diag_t *diag)
{
    cursor_t c = {text.ptr, 0, text.ptr ? text.len : 0, diag};
    kw_rel_t r;
    memset(&r, 0, sizeof(r));
    char buf[16];
    int rc;

    if (c.len == 0)
        return kw_diag_set(diag, KW_EINVAL, 1, 1, "empty relationship string");
    if ((rc = scan_name(&c, true, "resource type", &r.resource.type)) != KW_OK)
        return rc;
    if ((rc = expect(&c, ':', "resource type")) != KW_OK)
        return rc;
    if ((rc = scan_id(&c, false, "resource", &r.resource.id)) != KW_OK)
        return rc;
    if ((rc = expect(&c, '#', "resource id")) != KW_OK)
        return rc;
    if ((rc = scan_name(&c, false, "relation", &r.relation)) != KW_OK)
        return rc;
    if ((rc = expect(&c, '@', "relation")) != KW_OK)
        return rc;
    if ((rc = scan_name(&c, true, "subject type", &r.subject.type)) != KW_OK)
        return rc;
    if ((rc = expect(&c, ':', "subject type")) != KW_OK)
        return rc;
    if ((rc = scan_id(&c, true, "subject", &r.subject.id)) != KW_OK)
        return rc;
    r.subject.relation = KW_STR_NULL;
    if (c.pos < c.len && c.p[c.pos] == '#') {
        c.pos++;
        if (c.len - c.pos >= 3 && memcmp(c.p + c.pos, "...", 3) == 0) {
            c.pos += 3;
        } else {
            if ((rc = scan_name(&c, false, "subject relation", &r.subject.relation)) != KW_OK)
                return rc;
            if (r.subject.id.len == 1 && r.subject.id.ptr[0] == '*')
                return kw_diag_set(diag, KW_EINVAL, 1,
                                   (uint32_t)(r.subject.relation.ptr - text.ptr + 1),
                                   "a wildcard subject cannot have a relation");
        }
    }
    if (c.pos < c.len && c.p[c.pos] == '[') {
        static const char exp[] = "expiration:";
        size_t rest = c.len - c.pos - 1;
        if (rest >= sizeof(exp) - 1 && memcmp(c.p + c.pos + 1, exp, sizeof(exp) - 1) == 0)
            return kw_diag_set(diag, KW_EUNSUPPORTED, 1, (uint32_t)(c.pos + 1),
                               "expiration is not supported yet");
        return kw_diag_set(diag, KW_EUNSUPPORTED, 1, (uint32_t)(c.pos + 1),
                           "caveats are not supported yet");
    }
    if (c.pos < c.len)
        return kw_diag_set(diag, KW_EINVAL, 1, (uint32_t)(c.pos + 1),
                           "unexpected %s after the subject", describe(&c, c.pos, buf));
    *out = r;
    return KW_OK;
}

void kw_rel_format(const kw_rel_t *rel, kw_buf_t *out)
{
    kw_buf_append(out, rel->resource.type.ptr, rel->resource.type.len);
    kw_buf_append(out, ":", 1);
    kw_buf_append(out, rel->resource.id.ptr, rel->resource.id.len);
    kw_buf_append(out, "#", 1);
    kw_buf_append(out, rel->relation.ptr, rel->relation.len);
    kw_buf_append(out, "@", 1);
    kw_buf_append(out, rel->subject.type.ptr, rel->subject.type.len);
    kw_buf_append(out, ":", 1);
    kw_buf_append(out, rel->subject.id.ptr, rel->subject.id.len);
    if (rel->subject.relation.len > 0 && !kw_str_eq_c(rel->subject.relation, "...")) {
        kw_buf_append(out, "#", 1);
        kw_buf_append(out, rel->subject.relation.ptr, rel->subject.relation.len);
    }
    if (rel->caveat.len > 0) {
        kw_buf_append(out, "[", 1);
        kw_buf_append(out, rel->caveat.ptr, rel->caveat.len);
        if (rel->caveat_ctx.len > 0) {
            kw_buf_append(out, ":", 1);
            kw_buf_append(out, rel->caveat_ctx.ptr, rel->caveat_ctx.len);
        }
        kw_buf_append(out, "]", 1);
    }
    if (rel->expires_at != 0) {
        /* RFC 3339 in UTC, with microseconds only when there are any. */
        int64_t us = rel->expires_at;
        time_t secs = (time_t)(us / 1000000);
        long frac = (long)(us % 1000000);
        if (frac < 0) {
            frac += 1000000;
            secs--;
        }
        struct tm tm;
        char ts[64];
        if (gmtime_r(&secs, &tm) && strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm) > 0) {
            kw_buf_printf(out, "[expiration:%s", ts);
            if (frac)
                kw_buf_printf(out, ".%06ld", frac);
            kw_buf_append(out, "Z]", 2);
        }
    }
}

int kw_rel_copy(kw_arena_t *a, const kw_rel_t *src, kw_rel_t *out)
{
    kw_rel_t r;
    int rc = kw_arena_str_copy(a, src->resource.type, &r.resource.type);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->resource.id, &r.resource.id);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->relation, &r.relation);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->subject.type, &r.subject.type);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->subject.id, &r.subject.id);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->subject.relation, &r.subject.relation);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat, &r.caveat);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat_ctx, &r.caveat_ctx);
    r.expires_at = src->expires_at;
    if (rc == KW_OK)
        *out = r;
    return rc;
}
