/*
 * api/v1svc_names.c - SpiceDB's request validation of names and ids (tag-kw-v1-names):
 * every field of a /v1 request that carries an object type, a relation or permission, a
 * caveat name or an object id must match the pattern (and byte bound) SpiceDB's protos
 * give it, or the RPC is INVALID_ARGUMENT before anything looks at the schema. SpiceDB
 * (v1.54, protovalidate) answers, checked with the real-SpiceDB oracle:
 *   validation error: resource.object_type: does not match regex pattern `^...$`
 * and with several violations, in the fields' declaration order,
 *   validation errors:\n - <one>\n - <two>
 * with a byte bound first ("must be at most 1024 bytes") when both fail. Without this a
 * malformed type was answered as an unknown definition (FAILED_PRECONDITION), which is
 * the wrong code and leaks which names the schema has.
 * The patterns are matched by hand (no regex engine); each one is written out below next
 * to its matcher. Both transports reach this through the service layer's RPC functions.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "v1svc_int.h"

#define P_TYPE "^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$"
#define P_TYPE_OPT "^(([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9])?$"
#define P_REL "^[a-z][a-z0-9_]{1,62}[a-z0-9]$"
#define P_REL_OPT "^([a-z][a-z0-9_]{1,62}[a-z0-9])?$"
#define P_ID "^(([a-zA-Z0-9/_|\\-=+]{1,})|\\*)$"
#define P_ID_OPT "^([a-zA-Z0-9/_|\\-=+]{1,})?$"
#define P_SUBJ_ID_OPT "^(([a-zA-Z0-9/_|\\-=+]{1,})|\\*)?$"
#define P_CAVEAT "^([a-zA-Z0-9_][a-zA-Z0-9/_|-]{0,127})$"
/* WatchRequest.optional_object_types: its prefixes may be 64 bytes, as a definition's. */
#define P_WATCH_TYPE "^([a-z][a-z0-9_]{1,62}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$"

/* Character classes, one table lookup per byte (ids are checked on every request). */
enum { C_LOWER = 1, C_NAME = 2, C_ID = 4, C_CAVEAT = 8 };
/* Process singleton: filled once (class_init), read-only afterwards. */
static uint8_t g_class[256];
static pthread_once_t g_class_once = PTHREAD_ONCE_INIT;

static void class_init(void)
{
    for (int c = 0; c < 256; c++) {
        bool lo = c >= 'a' && c <= 'z', digit = c >= '0' && c <= '9';
        bool alnum = lo || digit || (c >= 'A' && c <= 'Z');
        g_class[c] = (uint8_t)((lo ? C_LOWER : 0) | (lo || digit || c == '_' ? C_NAME : 0) |
                               (alnum || (c && strchr("/_|-=+", c)) ? C_ID : 0) |
                               (alnum || (c && strchr("/_|-", c)) ? C_CAVEAT : 0));
    }
}

static bool is(char c, unsigned cls)
{
    return (g_class[(unsigned char)c] & cls) != 0;
}

static bool lower(char c)
{
    return is(c, C_LOWER);
}

/* [a-z][a-z0-9_]{1,max-2}[a-z0-9] */
static bool segment(const char *s, size_t len, size_t max)
{
    if (len < 3 || len > max || !lower(s[0]) || s[len - 1] == '_')
        return false;
    for (size_t i = 1; i < len; i++)
        if (!is(s[i], C_NAME))
            return false;
    return true;
}

/* P_TYPE: prefixes of at most 63 bytes, the last part at most 64; no total bound (that is
 * the field's max_bytes, reported on its own). */
static bool type_ok(kw_str_t s, size_t prefix_max)
{
    size_t seg = 0;
    for (size_t i = 0; i <= s.len; i++) {
        if (i < s.len && s.ptr[i] != '/')
            continue;
        if (!segment(s.ptr + seg, i - seg, i == s.len ? 64 : prefix_max))
            return false;
        seg = i + 1;
    }
    return true;
}

static bool id_chars(kw_str_t s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is(s.ptr[i], C_ID))
            return false;
    return true;
}

static bool caveat_ok(kw_str_t s)
{
    /* first [a-zA-Z0-9_]: a caveat character but '/', '|' and '-' */
    if (s.len == 0 || s.len > 128 || !is(s.ptr[0], C_CAVEAT) || s.ptr[0] == '/' ||
        s.ptr[0] == '|' || s.ptr[0] == '-')
        return false;
    for (size_t i = 1; i < s.len; i++)
        if (!is(s.ptr[i], C_CAVEAT))
            return false;
    return true;
}

typedef enum {
    K_TYPE,
    K_TYPE_OPT,
    K_REL,
    K_REL_OPT,
    K_ID,
    K_ID_OPT,
    K_SUBJ_ID_OPT,
    K_CAVEAT,
    K_WATCH_TYPE
} kind_t;

static const char *pattern_of(kind_t k)
{
    static const char *const p[] = {P_TYPE,   P_TYPE_OPT,    P_REL,    P_REL_OPT,   P_ID,
                                    P_ID_OPT, P_SUBJ_ID_OPT, P_CAVEAT, P_WATCH_TYPE};
    return p[k];
}

static bool matches(kind_t k, kw_str_t s)
{
    bool star = s.len == 1 && s.ptr[0] == '*';
    switch (k) {
    case K_TYPE:
        return type_ok(s, 63);
    case K_TYPE_OPT:
        return s.len == 0 || type_ok(s, 63);
    case K_REL:
        return segment(s.ptr, s.len, 64);
    case K_REL_OPT:
        return s.len == 0 || segment(s.ptr, s.len, 64);
    case K_ID:
        return star || id_chars(s);
    case K_ID_OPT:
        return s.len == 0 || id_chars(s);
    case K_SUBJ_ID_OPT:
        return s.len == 0 || star || id_chars(s);
    case K_CAVEAT:
        return caveat_ok(s);
    case K_WATCH_TYPE:
        return type_ok(s, 64);
    }
    return false;
}

static size_t max_of(kind_t k)
{
    switch (k) {
    case K_REL:
    case K_REL_OPT:
        return 64;
    case K_ID:
    case K_ID_OPT:
    case K_SUBJ_ID_OPT:
        return 1024;
    default:
        return 128;
    }
}

void kw__v1_names_init(kw__v1_names_t *v)
{
    pthread_once(&g_class_once, class_init);
    v->n = 0;
    v->len = 0;
    v->full = false;
    v->text[0] = '\0';
}

static void add(kw__v1_names_t *v, const char *path, const char *field, const char *what)
{
    v->n++;
    if (v->full)
        return;
    char line[320];
    int w = snprintf(line, sizeof(line), "\n - %s%s: %s", path, field, what);
    /* keep room for the header ("validation errors:") and a last "\n - ..." */
    if (w < 0 || v->len + (size_t)w + 8 >= sizeof(v->text) - 20) {
        memcpy(v->text + v->len, "\n - ...", 8);
        v->len += 7;
        v->full = true;
        return;
    }
    memcpy(v->text + v->len, line, (size_t)w + 1);
    v->len += (size_t)w;
}

/* One string field: its byte bound, then its pattern (SpiceDB's order). */
static void field(kw__v1_names_t *v, const char *path, const char *name, kw_str_t s, kind_t k)
{
    if (s.len > max_of(k)) {
        char what[48];
        snprintf(what, sizeof(what), "must be at most %zu bytes", max_of(k));
        add(v, path, name, what);
    }
    if (!matches(k, s)) {
        char what[160];
        snprintf(what, sizeof(what), "does not match regex pattern `%s`", pattern_of(k));
        add(v, path, name, what);
    }
}

/* out = a + b, cut to fit (paths are short: a cut one only shortens a message). */
static void join(char *out, size_t cap, const char *a, const char *b)
{
    size_t n = 0;
    for (const char *p = a; *p && n + 1 < cap; p++)
        out[n++] = *p;
    for (const char *p = b; *p && n + 1 < cap; p++)
        out[n++] = *p;
    out[n] = '\0';
}

/* The fast path: every request that is valid (nearly all) builds no path at all. */
static bool ok(kind_t k, kw_str_t s)
{
    return s.len <= max_of(k) && matches(k, s);
}

static bool subject_ok(const kw_subject_t *s)
{
    return ok(K_TYPE, s->type) && ok(K_ID, s->id) && ok(K_REL_OPT, s->relation);
}

bool kw__v1_names_rel_ok(const kw_rel_t *r)
{
    pthread_once(&g_class_once, class_init);
    return ok(K_TYPE, r->resource.type) && ok(K_ID, r->resource.id) && ok(K_REL, r->relation) &&
           subject_ok(&r->subject) && (r->caveat.len == 0 || ok(K_CAVEAT, r->caveat));
}

void kw__v1_names_object(kw__v1_names_t *v, const char *path, kw_object_t o)
{
    field(v, path, "object_type", o.type, K_TYPE);
    field(v, path, "object_id", o.id, K_ID);
}

void kw__v1_names_subject(kw__v1_names_t *v, const char *path, const kw_subject_t *s)
{
    if (subject_ok(s))
        return;
    char p[160];
    join(p, sizeof(p), path, "object.");
    kw__v1_names_object(v, p, (kw_object_t){s->type, s->id});
    field(v, path, "optional_relation", s->relation, K_REL_OPT);
}

void kw__v1_names_str(kw__v1_names_t *v, const char *path, kw_str_t s, kw__v1_name_kind_t kind)
{
    static const kind_t map[] = {K_TYPE, K_TYPE_OPT, K_REL, K_REL_OPT};
    field(v, "", path, s, map[kind]);
}

void kw__v1_names_rel(kw__v1_names_t *v, const char *path, const kw_rel_t *r)
{
    if (kw__v1_names_rel_ok(r))
        return;
    char p[160];
    join(p, sizeof(p), path, "resource.");
    kw__v1_names_object(v, p, r->resource);
    field(v, path, "relation", r->relation, K_REL);
    join(p, sizeof(p), path, "subject.");
    kw__v1_names_subject(v, p, &r->subject);
    if (r->caveat.len > 0) {
        join(p, sizeof(p), path, "optional_caveat.");
        field(v, p, "caveat_name", r->caveat, K_CAVEAT);
    }
}

void kw__v1_names_filter(kw__v1_names_t *v, const char *path, const kw_filter_t *f,
                         kw_str_t id_prefix)
{
    field(v, path, "resource_type", f->resource_type, K_TYPE_OPT);
    field(v, path, "optional_resource_id", f->resource_id, K_ID_OPT);
    field(v, path, "optional_resource_id_prefix", id_prefix, K_ID_OPT);
    field(v, path, "optional_relation", f->relation, K_REL_OPT);
    if (!f->has_subject || (ok(K_TYPE, f->subject_type) && ok(K_SUBJ_ID_OPT, f->subject_id) &&
                            (!f->subject_relation_set || ok(K_REL_OPT, f->subject_relation))))
        return;
    char p[160];
    join(p, sizeof(p), path, "optional_subject_filter.");
    field(v, p, "subject_type", f->subject_type, K_TYPE);
    field(v, p, "optional_subject_id", f->subject_id, K_SUBJ_ID_OPT);
    if (f->subject_relation_set) {
        char q[200];
        join(q, sizeof(q), p, "optional_relation.");
        field(v, q, "relation", f->subject_relation, K_REL_OPT);
    }
}

void kw__v1_names_pre(kw__v1_names_t *v, const kw_precondition_t *pre, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char p[64];
        snprintf(p, sizeof(p), "optional_preconditions[%zu].filter.", i);
        kw__v1_names_filter(v, p, &pre[i].filter, KW_STR_NULL);
    }
}

int kw__v1_names_done(const kw__v1_names_t *v, kw_v1_status_t *st)
{
    if (v->n == 0)
        return KW_OK;
    if (v->n == 1)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL, "validation error: %s",
                          v->text + 4);
    return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL, "validation errors:%s",
                      v->text);
}

/* ---- per request, in each message's field order ---- */

int kw__v1_names_check(const kw_v1_check_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    kw__v1_names_object(&v, "resource.", r->resource);
    kw__v1_names_str(&v, "permission", r->permission, KW__V1_NAME_REL_OPT);
    kw__v1_names_subject(&v, "subject.", &r->subject);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_check_bulk(const kw_v1_bulk_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    for (size_t i = 0; i < r->n_items && !v.full; i++) {
        const kw_v1_bulk_item_t *it = &r->items[i];
        if (ok(K_TYPE, it->resource.type) && ok(K_ID, it->resource.id) &&
            ok(K_REL_OPT, it->permission) && subject_ok(&it->subject))
            continue;
        char p[64], q[64];
        snprintf(p, sizeof(p), "items[%zu].resource.", i);
        kw__v1_names_object(&v, p, it->resource);
        snprintf(p, sizeof(p), "items[%zu].", i);
        field(&v, p, "permission", it->permission, K_REL_OPT);
        snprintf(q, sizeof(q), "items[%zu].subject.", i);
        kw__v1_names_subject(&v, q, &it->subject);
    }
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_expand(const kw_v1_expand_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    kw__v1_names_object(&v, "resource.", r->resource);
    kw__v1_names_str(&v, "permission", r->permission, KW__V1_NAME_REL_OPT);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_lr(const kw_v1_lr_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    kw__v1_names_str(&v, "resource_object_type", r->resource_type, KW__V1_NAME_TYPE);
    kw__v1_names_str(&v, "permission", r->permission, KW__V1_NAME_REL);
    kw__v1_names_subject(&v, "subject.", &r->subject);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_ls(const kw_v1_ls_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    kw__v1_names_object(&v, "resource.", r->resource);
    kw__v1_names_str(&v, "permission", r->permission, KW__V1_NAME_REL_OPT);
    kw__v1_names_str(&v, "subject_object_type", r->subject_type, KW__V1_NAME_TYPE);
    kw__v1_names_str(&v, "optional_subject_relation", r->subject_relation, KW__V1_NAME_REL_OPT);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_read(const kw_v1_read_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    kw__v1_names_filter(&v, "relationship_filter.", &r->filter, r->resource_id_prefix);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_write(const kw_v1_write_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    for (size_t i = 0; i < r->n_updates && !v.full; i++) {
        if (kw__v1_names_rel_ok(&r->updates[i].rel))
            continue;
        char p[64];
        snprintf(p, sizeof(p), "updates[%zu].relationship.", i);
        kw__v1_names_rel(&v, p, &r->updates[i].rel);
    }
    kw__v1_names_pre(&v, r->pre, r->n_pre);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_delete(const kw_v1_delete_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    kw__v1_names_filter(&v, "relationship_filter.", &r->filter, r->resource_id_prefix);
    kw__v1_names_pre(&v, r->pre, r->n_pre);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_export(const kw_v1_export_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    if (r->has_filter)
        kw__v1_names_filter(&v, "optional_relationship_filter.", &r->filter, r->resource_id_prefix);
    return kw__v1_names_done(&v, st);
}

int kw__v1_names_watch(const kw_v1_watch_req_t *r, kw_v1_status_t *st)
{
    kw__v1_names_t v;
    kw__v1_names_init(&v);
    for (size_t i = 0; i < r->n_object_types && !v.full; i++) {
        char p[64];
        snprintf(p, sizeof(p), "optional_object_types[%zu]", i);
        field(&v, "", p, r->object_types[i], K_WATCH_TYPE);
    }
    for (size_t i = 0; i < r->n_filters && !v.full; i++) {
        char p[64];
        snprintf(p, sizeof(p), "optional_relationship_filters[%zu].", i);
        kw__v1_names_filter(&v, p, &r->filters[i],
                            r->id_prefixes ? r->id_prefixes[i] : KW_STR_NULL);
    }
    return kw__v1_names_done(&v, st);
}
