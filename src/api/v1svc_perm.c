/*
 * api/v1svc_perm.c - PermissionsService's permission RPCs as service functions:
 * CheckPermission, CheckBulkPermissions, LookupResources, LookupSubjects and
 * ExpandPermissionTree (v1svc.h), answered by the in-memory engine at the applied revision
 * (read before the engine is, so a token never claims more than was read).
 *
 * The lookups are streamed in a stable order so that every result can carry a cursor:
 * ids in byte order, which depends on the data alone, so a cursor (the last id sent)
 * resumes exactly after a restart and on any instance of the same database.
 * LookupResources runs in chunks: each asks the engine's ordered lookup
 * (kw_engine_lookup_resources_ordered) for the `chunk` first ids after the last one sent,
 * copies them out under its read lock and emits them with no lock held, then asks again
 * from the last id until a chunk comes back short. One kw_lr_stream_t per request lets
 * the engine keep the answer between chunks while the revision stays, so a chunk costs
 * what it returns. Memory is one chunk whatever the size of the answer, and a slow client
 * never holds the engine's lock. Revisions: every chunk is
 * read at the revision applied when it starts (its results carry that revision), so a
 * long stream moves forward with the data, never backwards, and never repeats an id;
 * with atExactSnapshot every chunk is read at that revision (the live engine while it is
 * current, then a snapshot engine of it: authz/history.c), so writes go on meanwhile and
 * the stream ends with an error only once the revision leaves the snapshot window.
 * LookupSubjects gathers its (smaller) answer in one pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v1svc_int.h"

#define KW_MODULE "v1"

/* A conditional answer is not an allowed one (fail closed). */
static void count_check(kw_api_t *api, int rc, kw_check_result_t r)
{
    atomic_fetch_add_explicit(rc != KW_OK         ? &api->checks_error
                              : r == KW_CHECK_YES ? &api->checks_allowed
                                                  : &api->checks_denied,
                              1, memory_order_relaxed);
}

static kw_v1_permissionship_t perm_of(kw_check_result_t r)
{
    return r == KW_CHECK_YES           ? KW_V1_PERM_HAS
           : r == KW_CHECK_CONDITIONAL ? KW_V1_PERM_CONDITIONAL
                                       : KW_V1_PERM_NO;
}

/* ---- CheckPermission, CheckBulkPermissions ---- */

/* withTracing: the graph is held still for the whole trace (a trace is many checks; a
 * write between them could make its nodes disagree), unless atExactSnapshot holds it
 * already or reads a snapshot (which never changes). The schema text it ran under goes to
 * *schema_used. */
static int trace_begin(kw_api_t *svc, kw__v1_read_t *hold, kw_revision_t *rev, bool *own)
{
    *own = !hold->held && !hold->snap;
    if (*own)
        *rev = kw_sync_hold(svc->sync);
    return KW_OK;
}

static void trace_end(kw_api_t *svc, bool own)
{
    if (own)
        kw_sync_release(svc->sync);
}

static int schema_used(kw_api_t *svc, kw_arena_t *a, kw_str_t *out)
{
    kw_buf_t b;
    kw_buf_init(&b);
    int rc = kw_engine_schema_text(svc->engine, &b);
    if (rc == KW_OK && b.failed)
        rc = KW_ENOMEM;
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, (kw_str_t){b.ptr ? b.ptr : "", b.len}, out);
    kw_buf_free(&b);
    return rc;
}

static int check_traced(kw_api_t *svc, const kw_v1_check_req_t *req, kw_v1_check_resp_t *resp,
                        kw_v1_status_t *st)
{
    if (!req->arena)
        return kw_v1_fail_rc(st, KW_EINVAL, NULL, NULL);
    kw_diag_t d;
    kw_diag_clear(&d);
    kw__v1_read_t hold;
    kw_revision_t rev = 0;
    int rc = kw__v1_read_begin(svc, &req->consistency, &hold, &rev, st);
    if (rc != KW_OK)
        return rc;
    bool own = false;
    trace_begin(svc, &hold, &rev, &own);
    kw_trace_t *t = NULL;
    rc = kw_engine_check_trace(hold.engine, req->resource, req->permission, req->subject,
                               req->context, req->arena, &t, &d);
    if (rc == KW_OK)
        rc = schema_used(svc, req->arena, &resp->schema_used);
    trace_end(svc, own);
    kw__v1_read_end(svc, &hold);
    count_check(svc, rc, t ? t->result : KW_CHECK_NO);
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, &d, NULL);
    resp->checked_at = rev;
    resp->permissionship = perm_of(t->result);
    resp->missing = t->result == KW_CHECK_CONDITIONAL ? t->missing : KW_STR_NULL;
    resp->trace = t;
    return KW_OK;
}

int kw_v1_check(kw_api_t *svc, const kw_v1_check_req_t *req, kw_v1_check_resp_t *resp,
                kw_v1_status_t *st)
{
    resp->trace = NULL;
    resp->schema_used = KW_STR_NULL;
    if (kw__v1_names_check(req, st) != KW_OK)
        return KW_EINVAL;
    if (req->with_tracing)
        return check_traced(svc, req, resp, st);
    kw_diag_t d;
    kw_diag_clear(&d);
    kw__v1_read_t hold;
    kw_revision_t rev = 0;
    int rc = kw__v1_read_begin(svc, &req->consistency, &hold, &rev, st);
    if (rc != KW_OK)
        return rc;
    kw_check_result_t r = KW_CHECK_NO;
    kw_buf_t missing;
    kw_buf_init(&missing);
    rc = kw_engine_check_ctx(hold.engine, req->resource, req->permission, req->subject,
                             req->context, &r, &missing, NULL, &d);
    kw__v1_read_end(svc, &hold);
    count_check(svc, rc, r);
    resp->missing = KW_STR_NULL;
    if (rc == KW_OK && r == KW_CHECK_CONDITIONAL && missing.len &&
        (missing.failed || !req->arena ||
         kw_arena_str_copy(req->arena, (kw_str_t){missing.ptr, missing.len}, &resp->missing) !=
             KW_OK))
        rc = KW_ENOMEM;
    kw_buf_free(&missing);
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, &d, NULL);
    resp->checked_at = rev;
    resp->permissionship = perm_of(r);
    return KW_OK;
}

int kw_v1_check_bulk(kw_api_t *svc, kw_v1_bulk_req_t *req, kw_revision_t *checked_at,
                     kw_v1_status_t *st)
{
    int rc = KW_OK;
    req->schema_used = KW_STR_NULL;
    if (req->n_items > KW_V1_MAX_BULK_ITEMS)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                          "check count of %zu is greater than maximum allowed of %u", req->n_items,
                          KW_V1_MAX_BULK_ITEMS);
    if (kw__v1_names_check_bulk(req, st) != KW_OK)
        return KW_EINVAL;
    size_t n = req->n_items;
    kw_check_item_t *items = n ? kw_arena_alloc(req->arena, n * sizeof(*items)) : NULL;
    if (n && !items)
        return kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        memset(&items[i], 0, sizeof(items[i]));
        items[i].resource = req->items[i].resource;
        items[i].permission = req->items[i].permission;
        items[i].subject = req->items[i].subject;
        items[i].context = req->items[i].context;
        req->items[i].trace = NULL;
    }
    kw__v1_read_t hold;
    kw_revision_t rev = 0, engine_rev = 0;
    if ((rc = kw__v1_read_begin(svc, &req->consistency, &hold, &rev, st)) != KW_OK)
        return rc;
    if (!req->with_tracing) {
        rc = n ? kw_engine_check_bulk_ctx(hold.engine, items, n, req->arena, &engine_rev) : KW_OK;
    } else {
        /* Each item traced on its own (its answer is its trace's root), the graph held. */
        bool own = false;
        trace_begin(svc, &hold, &rev, &own);
        for (size_t i = 0; rc == KW_OK && i < n; i++) {
            kw_trace_t *t = NULL;
            kw_diag_clear(&items[i].diag);
            items[i].rc = kw_engine_check_trace(hold.engine, items[i].resource, items[i].permission,
                                                items[i].subject, items[i].context, req->arena, &t,
                                                &items[i].diag);
            if (items[i].rc == KW_ENOMEM)
                rc = KW_ENOMEM;
            req->items[i].trace = t;
            if (t) {
                items[i].result = t->result;
                items[i].missing = t->missing;
            }
        }
        if (rc == KW_OK)
            rc = schema_used(svc, req->arena, &req->schema_used);
        trace_end(svc, own);
    }
    kw__v1_read_end(svc, &hold);
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        kw_v1_bulk_item_t *it = &req->items[i];
        count_check(svc, items[i].rc, items[i].result);
        it->error = NULL;
        if (items[i].rc == KW_OK) {
            it->permissionship = perm_of(items[i].result);
            it->missing = items[i].result == KW_CHECK_CONDITIONAL ? items[i].missing : KW_STR_NULL;
            continue;
        }
        it->error = kw_arena_alloc(req->arena, sizeof(*it->error));
        if (!it->error)
            return kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
        kw_v1_status_clear(it->error);
        kw_v1_fail_rc(it->error, items[i].rc, &items[i].diag, NULL);
    }
    *checked_at = rev;
    return KW_OK;
}

/* ---- id collections for the lookups ---- */

static int cmp_ids(const void *a, const void *b)
{
    return kw__v1_cmp(*(const kw_str_t *)a, *(const kw_str_t *)b);
}

/* A chunk of LookupResources results, in the engine's (id) order. Each id is kw_malloc'd
 * with its missing-context names after it ("id\0missing"). */
typedef struct ident {
    kw_str_t id;
    kw_str_t missing; /* points into id's allocation */
    bool conditional;
} ident_t;

typedef struct idset {
    ident_t *v;
    size_t n, cap;
    int rc;
} idset_t;

static void ids_free(idset_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        kw_free((void *)s->v[i].id.ptr);
    kw_free(s->v);
}

static bool ident_make(const kw_resource_result_t *r, ident_t *out)
{
    if (r->id.len > SIZE_MAX / 2 - r->missing.len - 2)
        return false;
    char *p = kw_malloc(r->id.len + r->missing.len + 2);
    if (!p)
        return false;
    if (r->id.len)
        memcpy(p, r->id.ptr, r->id.len);
    p[r->id.len] = '\0';
    if (r->missing.len)
        memcpy(p + r->id.len + 1, r->missing.ptr, r->missing.len);
    p[r->id.len + 1 + r->missing.len] = '\0';
    out->id = (kw_str_t){p, r->id.len};
    out->missing = (kw_str_t){p + r->id.len + 1, r->missing.len};
    out->conditional = r->conditional;
    return true;
}

/* Appends r: 0 to go on, 1 to stop the engine (s->rc says why). */
static int ids_add(idset_t *s, const kw_resource_result_t *r)
{
    if (s->n == s->cap &&
        (s->rc = kw_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(ident_t))) != KW_OK)
        return 1;
    if (!ident_make(r, &s->v[s->n])) {
        s->rc = KW_ENOMEM;
        return 1;
    }
    s->n++;
    return 0;
}

/* ---- LookupResources ---- */

static int lr_cb(const kw_resource_result_t *r, void *ud)
{
    return ids_add(ud, r);
}

/* Results per chunk of an unlimited LookupResources at most: the memory bound of a stream
 * (~50 bytes each, ~3 MiB). A chunk costs what it returns (the engine's ordered lookup
 * walks its id index or the answer it kept), so chunks need not be large. */
#define LR_CHUNK 65536u
/* The first chunk is small so that the first lines leave after a few hundred checks. */
#define LR_FIRST_CHUNK 128u

/* Copies id into *last (a kw_malloc'd buffer of *cap bytes). */
static int keep_last(char **last, size_t *cap, kw_str_t id, kw_str_t *out)
{
    if (id.len + 1 > *cap) {
        char *p = kw_malloc(id.len + 1);
        if (!p)
            return KW_ENOMEM;
        kw_free(*last);
        *last = p;
        *cap = id.len + 1;
    }
    if (id.len)
        memcpy(*last, id.ptr, id.len);
    (*last)[id.len] = '\0';
    *out = (kw_str_t){*last, id.len};
    return KW_OK;
}

/* One chunk: the engine's ordered lookup of the `max` first ids after `after` (lock held
 * inside the engine only; `ls` keeps the answer between chunks), then the emission. *n
 * gets how many results it found (at most `max`). */
static int lr_chunk(kw_api_t *svc, const kw_v1_lr_req_t *req, const uint8_t *shape,
                    const kw_str_t *after, size_t max, kw_lr_stream_t *ls, kw_arena_t *a,
                    char **last, size_t *last_cap, kw_str_t *last_id, size_t *n, kw_v1_lr_fn emit,
                    void *ud, kw_v1_status_t *st)
{
    idset_t ids = {NULL, 0, 0, KW_OK};
    kw_diag_t d;
    kw_diag_clear(&d);
    kw__v1_read_t hold;
    kw_revision_t rev = 0, engine_rev = 0;
    int rc = kw__v1_read_begin(svc, &req->consistency, &hold, &rev, st);
    if (rc != KW_OK)
        return rc;
    /* The stream's kept answer (ls) belongs to the live engine only: a snapshot engine of
     * an older revision may be rebuilt between chunks with other node numbers, so its
     * chunks each compute their answer (ls NULL). */
    rc = kw_engine_lookup_resources_ordered(
        hold.engine, req->resource_type, req->permission, req->subject, req->context, after, max,
        hold.engine == svc->engine ? ls : NULL, lr_cb, &ids, &engine_rev, &d);
    kw__v1_read_end(svc, &hold);
    if (rc == 1)
        rc = ids.rc;
    if (rc != KW_OK) {
        kw_v1_fail_rc(st, rc, &d, NULL);
        goto out;
    }
    *n = ids.n;
    kw__v1_minter_t m;
    kw__v1_minter_init(svc, &m, KW__V1_RPC_LOOKUP_RESOURCES, shape, rev);
    for (size_t i = 0; i < ids.n && rc == KW_OK; i++) {
        char *cur = kw__v1_mint(&m, a, &ids.v[i].id, 1);
        if (!cur) {
            rc = kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
            break;
        }
        kw_v1_lr_result_t r = {rev, ids.v[i].id,
                               ids.v[i].conditional ? KW_V1_PERM_CONDITIONAL : KW_V1_PERM_HAS,
                               ids.v[i].missing, cur};
        if ((rc = emit(ud, &r)) != KW_OK)
            kw_v1_fail(st, rc, KW_GRPC_CANCELLED, NULL, "the client went away");
        kw_arena_reset(a); /* one cursor at a time */
    }
    kw__v1_minter_wipe(&m);
    if (rc == KW_OK && ids.n && keep_last(last, last_cap, ids.v[ids.n - 1].id, last_id) != KW_OK)
        rc = kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
out:
    ids_free(&ids);
    return rc;
}

int kw_v1_lookup_resources(kw_api_t *svc, const kw_v1_lr_req_t *req, kw_v1_lr_fn emit, void *ud,
                           kw_v1_status_t *st)
{
    if (kw__v1_names_lr(req, st) != KW_OK)
        return KW_EINVAL;
    int rc = kw__v1_limit_check(req->limit, KW_V1_MAX_LOOKUP_LIMIT, st);
    if (rc != KW_OK)
        return rc;
    uint8_t shape[KW__V1_SHAPE_LEN];
    kw__v1_shape_t sh;
    kw__v1_shape_init(&sh, KW__V1_RPC_LOOKUP_RESOURCES);
    kw__v1_shape_str(&sh, req->resource_type);
    kw__v1_shape_str(&sh, req->permission);
    kw__v1_shape_str(&sh, req->subject.type);
    kw__v1_shape_str(&sh, req->subject.id);
    kw__v1_shape_str(&sh, req->subject.relation);
    kw__v1_shape_str(&sh, req->context);
    if ((rc = kw__v1_shape_done(svc, &sh, shape)) != KW_OK)
        return kw_v1_fail_rc(st, rc, NULL, NULL);
    kw__v1_pos_t pos;
    if (req->cursor.len && (rc = kw__v1_cursor_open(svc, req->cursor, KW__V1_RPC_LOOKUP_RESOURCES,
                                                    shape, 1, &pos, st)) != KW_OK)
        return rc;
    kw_arena_t *a = kw_arena_new(0);
    kw_lr_stream_t *ls = NULL;
    if (!a || kw_lr_stream_new(&ls) != KW_OK) {
        kw_arena_free(a);
        return kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
    }
    char *last = NULL;
    size_t last_cap = 0, n = 0;
    kw_str_t last_id = KW_STR_NULL;
    const kw_str_t *after = req->cursor.len ? &pos.f[0] : NULL;
    /* The first chunk is small so that the first lines go out after a few checks; chunks
     * then grow 4x up to LR_CHUNK. */
    size_t max = req->limit ? req->limit : LR_FIRST_CHUNK;
    do {
        n = 0;
        rc = lr_chunk(svc, req, shape, after, max, ls, a, &last, &last_cap, &last_id, &n, emit, ud,
                      st);
        after = &last_id;
        if (rc != KW_OK || req->limit || n < max)
            break;
        max = max * 4 < LR_CHUNK ? max * 4 : LR_CHUNK;
    } while (true);
    kw_free(last);
    kw_lr_stream_free(ls);
    kw_arena_free(a);
    return rc;
}

/* ---- LookupSubjects ---- */

typedef struct subj {
    kw_str_t id;
    kw_str_t *excluded;
    size_t n_excluded;
    bool conditional;
    kw_str_t missing;
} subj_t;

typedef struct ls_ctx {
    kw_arena_t *a;
    const kw_str_t *after;
    bool no_wildcard;
    subj_t *v;
    size_t n, cap;
    int rc;
} ls_ctx_t;

static int ls_cb(const kw_subject_result_t *r, void *ud)
{
    ls_ctx_t *c = ud;
    if (c->no_wildcard && kw_str_eq_c(r->id, "*"))
        return 0;
    if (c->after && kw__v1_cmp(r->id, *c->after) <= 0)
        return 0;
    if (c->n == c->cap &&
        (c->rc = kw_grow((void **)&c->v, &c->cap, c->n + 1, sizeof(subj_t))) != KW_OK)
        return 1;
    subj_t *s = &c->v[c->n];
    memset(s, 0, sizeof(*s));
    if ((c->rc = kw_arena_str_copy(c->a, r->id, &s->id)) != KW_OK ||
        (r->conditional && (c->rc = kw_arena_str_copy(c->a, r->missing, &s->missing)) != KW_OK))
        return 1;
    s->conditional = r->conditional;
    if (r->n_excluded) {
        s->excluded = kw_arena_alloc(c->a, r->n_excluded * sizeof(kw_str_t));
        if (!s->excluded) {
            c->rc = KW_ENOMEM;
            return 1;
        }
        for (size_t i = 0; i < r->n_excluded; i++)
            if ((c->rc = kw_arena_str_copy(c->a, r->excluded[i], &s->excluded[i])) != KW_OK)
                return 1;
        s->n_excluded = r->n_excluded;
        qsort(s->excluded, s->n_excluded, sizeof(kw_str_t), cmp_ids);
    }
    c->n++;
    return 0;
}

static int cmp_subj(const void *a, const void *b)
{
    return kw__v1_cmp(((const subj_t *)a)->id, ((const subj_t *)b)->id);
}

int kw_v1_lookup_subjects(kw_api_t *svc, const kw_v1_ls_req_t *req, kw_v1_ls_fn emit, void *ud,
                          kw_v1_status_t *st)
{
    if (kw__v1_names_ls(req, st) != KW_OK)
        return KW_EINVAL;
    int rc;
    uint8_t shape[KW__V1_SHAPE_LEN];
    kw__v1_shape_t sh;
    kw__v1_shape_init(&sh, KW__V1_RPC_LOOKUP_SUBJECTS);
    kw__v1_shape_str(&sh, req->resource.type);
    kw__v1_shape_str(&sh, req->resource.id);
    kw__v1_shape_str(&sh, req->permission);
    kw__v1_shape_str(&sh, req->subject_type);
    kw__v1_shape_str(&sh, req->subject_relation);
    kw__v1_shape_str(&sh, req->context);
    kw__v1_shape_u32(&sh, (uint32_t)req->wildcard);
    if ((rc = kw__v1_shape_done(svc, &sh, shape)) != KW_OK)
        return kw_v1_fail_rc(st, rc, NULL, NULL);
    kw__v1_pos_t pos;
    if (req->cursor.len && (rc = kw__v1_cursor_open(svc, req->cursor, KW__V1_RPC_LOOKUP_SUBJECTS,
                                                    shape, 1, &pos, st)) != KW_OK)
        return rc;
    ls_ctx_t c = {kw_arena_new(0),
                  req->cursor.len ? &pos.f[0] : NULL,
                  req->wildcard == KW_V1_WILDCARD_EXCLUDE,
                  NULL,
                  0,
                  0,
                  KW_OK};
    kw_arena_t *cur_a = kw_arena_new(0);
    if (!c.a || !cur_a) {
        rc = kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
        goto out;
    }
    kw_diag_t d;
    kw_diag_clear(&d);
    kw__v1_read_t hold;
    kw_revision_t rev = 0, engine_rev = 0;
    if ((rc = kw__v1_read_begin(svc, &req->consistency, &hold, &rev, st)) != KW_OK)
        goto out;
    rc = kw_engine_lookup_subjects_ctx(hold.engine, req->resource, req->permission,
                                       req->subject_type, req->subject_relation, req->context,
                                       ls_cb, &c, &engine_rev, &d);
    kw__v1_read_end(svc, &hold);
    if (rc == 1)
        rc = c.rc;
    if (rc != KW_OK) {
        kw_v1_fail_rc(st, rc, &d, NULL);
        goto out;
    }
    if (c.n > 1)
        qsort(c.v, c.n, sizeof(subj_t), cmp_subj);
    size_t n = req->concrete_limit && c.n > req->concrete_limit ? req->concrete_limit : c.n;
    kw__v1_minter_t m;
    kw__v1_minter_init(svc, &m, KW__V1_RPC_LOOKUP_SUBJECTS, shape, rev);
    for (size_t i = 0; i < n && rc == KW_OK; i++) {
        char *cur = kw__v1_mint(&m, cur_a, &c.v[i].id, 1);
        if (!cur) {
            rc = kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
            break;
        }
        kw_v1_ls_result_t r = {rev,
                               c.v[i].id,
                               c.v[i].excluded,
                               c.v[i].n_excluded,
                               c.v[i].conditional ? KW_V1_PERM_CONDITIONAL : KW_V1_PERM_HAS,
                               c.v[i].missing,
                               cur};
        if ((rc = emit(ud, &r)) != KW_OK)
            kw_v1_fail(st, rc, KW_GRPC_CANCELLED, NULL, "the client went away");
        kw_arena_reset(cur_a);
    }
    kw__v1_minter_wipe(&m);
out:
    kw_free(c.v);
    kw_arena_free(c.a);
    kw_arena_free(cur_a);
    return rc;
}

/* ---- ExpandPermissionTree ---- */

int kw_v1_expand(kw_api_t *svc, const kw_v1_expand_req_t *req, kw_v1_expand_resp_t *resp,
                 kw_v1_status_t *st)
{
    if (kw__v1_names_expand(req, st) != KW_OK)
        return KW_EINVAL;
    kw_diag_t d;
    kw_diag_clear(&d);
    kw__v1_read_t hold;
    kw_revision_t rev = 0, engine_rev = 0;
    int rc = kw__v1_read_begin(svc, &req->consistency, &hold, &rev, st);
    if (rc != KW_OK)
        return rc;
    kw_expand_t *tree = NULL;
    rc = kw_engine_expand(hold.engine, req->resource, req->permission, req->arena, &tree,
                          &engine_rev, &d);
    kw__v1_read_end(svc, &hold);
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, &d, NULL);
    resp->expanded_at = rev;
    resp->tree = tree;
    return KW_OK;
}
