/*
 * http/router.c - compiles (method, path template) routes and matches request paths.
 *
 * Templates are absolute paths of literal segments and {param} segments. Matching works
 * on the RAW path (still percent-encoded): literal segments compare byte-exact, so an
 * encoded slash (%2F) stays inside one segment and only a {param} can absorb it; params
 * are decoded afterwards (kw__router_decode_params). Decoding after splitting is what
 * makes `/agent_api_keys/name/team%2Fci` name the key "team/ci".
 *
 * The router is immutable after init; matching allocates nothing.
 */
#include <string.h>

#include "http_int.h"

static const char unmatched_label[] = "unmatched";

/* Splits an absolute path into segments (views into `path`). Returns the count, or -1
 * if the path is not absolute, has too many segments, an empty segment (except that
 * "/" alone is zero segments) or a "." / ".." segment. */
static int split_path(kw_str_t path, kw_str_t *segs, bool reject_dots)
{
    if (path.len == 0 || path.ptr[0] != '/')
        return -1;
    if (path.len == 1)
        return 0;
    int n = 0;
    size_t i = 1;
    for (;;) {
        size_t start = i;
        while (i < path.len && path.ptr[i] != '/')
            i++;
        kw_str_t seg = {path.ptr + start, i - start};
        if (seg.len == 0 || n == KW__HTTP_MAX_SEGS)
            return -1;
        if (reject_dots && (kw_str_eq_c(seg, ".") || kw_str_eq_c(seg, "..")))
            return -1;
        segs[n++] = seg;
        if (i == path.len)
            return n;
        i++; /* skip '/'; a trailing '/' yields an empty segment and is rejected */
    }
}

static int compile_route(kw__route_t *rt, const kw_http_route_t *def, kw_diag_t *diag)
{
    memset(rt, 0, sizeof(*rt));
    rt->def = def;
    if (!def->method || !def->pattern || !def->fn)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "route %s %s: method, pattern and handler "
                           "are required",
                           def->method ? def->method : "(null)",
                           def->pattern ? def->pattern : "(null)");
    kw_str_t segs[KW__HTTP_MAX_SEGS];
    int n = split_path(kw_str_c(def->pattern), segs, true);
    if (n < 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "route %s %s: pattern must be an absolute "
                           "path of at most %d non-empty segments",
                           def->method, def->pattern, KW__HTTP_MAX_SEGS);
    for (int i = 0; i < n; i++) {
        kw_str_t s = segs[i];
        bool open = memchr(s.ptr, '{', s.len) != NULL, close = memchr(s.ptr, '}', s.len) != NULL;
        if (open || close) {
            if (s.len < 3 || s.ptr[0] != '{' || s.ptr[s.len - 1] != '}' ||
                memchr(s.ptr + 1, '{', s.len - 2) || memchr(s.ptr + 1, '}', s.len - 2))
                return kw_diag_set(diag, KW_EINVAL, 0, 0,
                                   "route %s %s: a {param} must be a "
                                   "whole non-empty segment",
                                   def->method, def->pattern);
            if (rt->n_params == KW_HTTP_MAX_PARAMS)
                return kw_diag_set(diag, KW_EINVAL, 0, 0, "route %s %s: more than %d params",
                                   def->method, def->pattern, KW_HTTP_MAX_PARAMS);
            rt->segs[i] = (kw_str_t){s.ptr + 1, s.len - 2};
            if (rt->segs[i].len > 3 && memcmp(s.ptr + s.len - 4, "...", 3) == 0) {
                if (i != n - 1 || rt->segs[i].len == 3)
                    return kw_diag_set(diag, KW_EINVAL, 0, 0,
                                       "route %s %s: a {name...} tail must be the last segment",
                                       def->method, def->pattern);
                rt->segs[i].len -= 3;
                rt->rest = true;
            }
            rt->is_param[i] = true;
            rt->n_params++;
        } else {
            rt->segs[i] = s;
            rt->n_literals++;
        }
    }
    rt->n_segs = (size_t)n;
    return KW_OK;
}

/* Two compiled templates are the same shape if they match exactly the same paths. */
static bool same_shape(const kw__route_t *a, const kw__route_t *b)
{
    if (a->n_segs != b->n_segs || a->rest != b->rest)
        return false;
    for (size_t i = 0; i < a->n_segs; i++) {
        if (a->is_param[i] != b->is_param[i])
            return false;
        if (!a->is_param[i] && !kw_str_eq(a->segs[i], b->segs[i]))
            return false;
    }
    return true;
}

int kw__router_init(kw__router_t *r, const kw_http_route_t *routes, size_t n, kw_diag_t *diag)
{
    memset(r, 0, sizeof(*r));
    r->routes = kw_calloc(n ? n : 1, sizeof(*r->routes));
    r->labels = kw_calloc(n + 1, sizeof(*r->labels));
    if (!r->routes || !r->labels) {
        kw__router_close(r);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory compiling routes");
    }
    for (size_t i = 0; i < n; i++) {
        kw__route_t *rt = &r->routes[i];
        int rc = compile_route(rt, &routes[i], diag);
        if (rc != KW_OK) {
            kw__router_close(r);
            return rc;
        }
        rt->label = r->n_labels;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(r->routes[j].def->pattern, routes[i].pattern) == 0)
                rt->label = r->routes[j].label;
            if (same_shape(&r->routes[j], rt) &&
                strcmp(r->routes[j].def->method, routes[i].method) == 0) {
                kw_diag_set(diag, KW_EINVAL, 0, 0, "route %s %s: duplicates %s %s",
                            routes[i].method, routes[i].pattern, routes[j].method,
                            routes[j].pattern);
                kw__router_close(r);
                return KW_EINVAL;
            }
        }
        if (rt->label == r->n_labels)
            r->labels[r->n_labels++] = routes[i].pattern;
    }
    r->labels[r->n_labels++] = unmatched_label;
    r->n_routes = n;
    return KW_OK;
}

void kw__router_close(kw__router_t *r)
{
    kw_free(r->routes);
    kw_free((void *)r->labels);
    memset(r, 0, sizeof(*r));
}

static bool path_fits(const kw__route_t *rt, const kw_str_t *segs, size_t n)
{
    if (rt->rest ? n + 1 < rt->n_segs : rt->n_segs != n)
        return false;
    for (size_t i = 0; i < n && i < rt->n_segs; i++)
        if (!rt->is_param[i] && !kw_str_eq(rt->segs[i], segs[i]))
            return false;
    return true;
}

/* Appends method to the comma-separated Allow list unless it is already there. */
static void allow_add(char *allow, size_t cap, const char *method)
{
    size_t mlen = strlen(method), alen = strlen(allow);
    for (const char *p = allow; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == mlen && memcmp(p, method, mlen) == 0)
            return;
        p = e ? e + 2 : p + l;
    }
    if (alen + (alen ? 2 : 0) + mlen + 1 > cap)
        return; /* cannot happen with the standard methods; a long list is truncated */
    if (alen) {
        memcpy(allow + alen, ", ", 2);
        alen += 2;
    }
    memcpy(allow + alen, method, mlen + 1);
}

void kw__router_match(const kw__router_t *r, kw_str_t method, kw_str_t path, kw__match_t *m)
{
    memset(m, 0, sizeof(*m));
    m->kind = KW__MATCH_NOT_FOUND;
    kw_str_t segs[KW__HTTP_MAX_SEGS];
    int n = split_path(path, segs, true);
    if (n < 0)
        return;
    bool is_head = kw_str_eq_c(method, "HEAD");
    const kw__route_t *best = NULL, *first_path = NULL;
    for (size_t i = 0; i < r->n_routes; i++) {
        const kw__route_t *rt = &r->routes[i];
        if (!path_fits(rt, segs, (size_t)n))
            continue;
        if (!first_path)
            first_path = rt;
        allow_add(m->allow, sizeof(m->allow), rt->def->method);
        bool method_ok = kw_str_eq_c(method, rt->def->method) ||
                         (is_head && strcmp(rt->def->method, "GET") == 0);
        if (method_ok && (!best || rt->n_literals > best->n_literals))
            best = rt;
    }
    if (best) {
        m->kind = KW__MATCH_OK;
        m->route = best;
        for (size_t i = 0; i < best->n_segs; i++) {
            if (!best->is_param[i])
                continue;
            if (best->rest && i == best->n_segs - 1) {
                /* the raw tail: from this segment to the end of the path, or empty */
                const char *from = (size_t)n > i ? segs[i].ptr : path.ptr + path.len;
                m->raw_params[m->n_params++] =
                    (kw_str_t){from, (size_t)(path.ptr + path.len - from)};
                m->rest = true;
            } else {
                m->raw_params[m->n_params++] = segs[i];
            }
        }
        m->allow[0] = '\0';
    } else if (first_path) {
        m->kind = KW__MATCH_BAD_METHOD;
        m->route = first_path;
    }
}

bool kw__router_decode_params(const kw__match_t *m, kw_http_req_t *req)
{
    req->n_params = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        if (m->rest && i == m->n_params - 1) {
            req->params[req->n_params++] = m->raw_params[i]; /* kept raw */
            break;
        }
        kw_str_t d;
        if (!kw_http_pct_decode(req->arena, m->raw_params[i], false, &d))
            return false;
        if (d.len == 0 || memchr(d.ptr, '\0', d.len) || kw_str_eq_c(d, ".") || kw_str_eq_c(d, ".."))
            return false;
        req->params[req->n_params++] = d;
    }
    return true;
}
