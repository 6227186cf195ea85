/*
 * api/v1svc_rel.c - PermissionsService's relationship RPCs as service functions:
 * ReadRelationships, WriteRelationships, DeleteRelationships (v1svc.h).
 *
 * Writes go through the group-commit write path (kw__api_write). Preconditions, a
 * delete's optionalLimit and a delete by resource id prefix are evaluated against the
 * engine INSIDE the transaction (write_tx), in this order: the transaction is begun, which
 * takes the database's global write order (store.h, tag-kw-store-write-order: on
 * PostgreSQL the revision row lock, across every instance); the graph catches up with
 * every revision committed so far; then the check. Nothing can commit between the
 * catch-up and this transaction's commit, so the check is exact with any number of
 * instances.
 *
 * Read collects the page under the engine's read lock (copies, in the engine's stable
 * order, after the cursor's position), releases it, and only then emits: a slow client
 * never holds the graph.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "v1svc_int.h"

#define KW_MODULE "v1"

/* ---- the order of a relationship stream (the engine's Read order) ---- */

static void rel_fields(const kw_rel_t *r, kw_str_t f[6])
{
    f[0] = r->resource.type;
    f[1] = r->resource.id;
    f[2] = r->relation;
    f[3] = r->subject.type;
    f[4] = r->subject.id;
    f[5] = r->subject.relation;
}

static int rel_cmp_pos(const kw_rel_t *r, const kw__v1_pos_t *pos)
{
    kw_str_t f[6];
    rel_fields(r, f);
    for (size_t i = 0; i < 6; i++) {
        int c = kw__v1_cmp(f[i], pos->f[i]);
        if (c)
            return c;
    }
    return 0;
}

static bool has_prefix(kw_str_t s, kw_str_t p)
{
    return s.len >= p.len && (p.len == 0 || memcmp(s.ptr, p.ptr, p.len) == 0);
}

static void filter_shape(kw__v1_shape_t *s, const kw_filter_t *f, kw_str_t prefix)
{
    kw__v1_shape_str(s, f->resource_type);
    kw__v1_shape_str(s, f->resource_id);
    kw__v1_shape_str(s, prefix);
    kw__v1_shape_str(s, f->relation);
    kw__v1_shape_u32(s, f->has_subject);
    kw__v1_shape_str(s, f->subject_type);
    kw__v1_shape_str(s, f->subject_id);
    kw__v1_shape_u32(s, f->subject_relation_set);
    kw__v1_shape_str(s, f->subject_relation);
}

/* SpiceDB: optionalResourceId and optionalResourceIdPrefix exclude each other. */
static int check_prefix(const kw_filter_t *f, kw_str_t prefix, kw_v1_status_t *st)
{
    if (prefix.len && f->resource_id.len)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                          "optionalResourceId and optionalResourceIdPrefix cannot be used "
                          "together");
    return KW_OK;
}

/* ---- ReadRelationships ---- */

typedef struct read_ctx {
    kw_arena_t *a;
    const kw_v1_read_req_t *req;
    const kw__v1_pos_t *after; /* NULL: from the start */
    kw_rel_t *rels;
    size_t n, cap;
    int rc;
} read_ctx_t;

static int read_collect(const kw_rel_t *rel, void *ud)
{
    read_ctx_t *c = ud;
    if (c->after && rel_cmp_pos(rel, c->after) <= 0)
        return 0;
    if (!has_prefix(rel->resource.id, c->req->resource_id_prefix))
        return 0;
    if (c->req->limit && c->n >= c->req->limit)
        return 1;
    if (c->n == c->cap &&
        (c->rc = kw_grow((void **)&c->rels, &c->cap, c->n + 1, sizeof(kw_rel_t))) != KW_OK)
        return 1;
    if ((c->rc = kw_rel_copy(c->a, rel, &c->rels[c->n])) != KW_OK)
        return 1;
    c->n++;
    return 0;
}

int kw_v1_read_relationships(kw_api_t *svc, const kw_v1_read_req_t *req, kw_v1_read_fn emit,
                             void *ud, kw_v1_status_t *st)
{
    if (kw__v1_names_read(req, st) != KW_OK)
        return KW_EINVAL;
    int rc = kw__v1_limit_check(req->limit, KW_V1_MAX_READ_LIMIT, st);
    if (rc == KW_OK)
        rc = check_prefix(&req->filter, req->resource_id_prefix, st);
    if (rc != KW_OK)
        return rc;
    uint8_t shape[KW__V1_SHAPE_LEN];
    kw__v1_shape_t sh;
    kw__v1_shape_init(&sh, KW__V1_RPC_READ);
    filter_shape(&sh, &req->filter, req->resource_id_prefix);
    if ((rc = kw__v1_shape_done(svc, &sh, shape)) != KW_OK)
        return kw_v1_fail_rc(st, rc, NULL, NULL);
    kw__v1_pos_t pos;
    if (req->cursor.len &&
        (rc = kw__v1_cursor_open(svc, req->cursor, KW__V1_RPC_READ, shape, 6, &pos, st)) != KW_OK)
        return rc;
    read_ctx_t c = {kw_arena_new(0), req, req->cursor.len ? &pos : NULL, NULL, 0, 0, KW_OK};
    if (!c.a)
        return kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
    kw_diag_t d;
    kw_diag_clear(&d);
    kw__v1_read_t hold;
    kw_revision_t rev = 0;
    rc = kw__v1_read_begin(svc, &req->consistency, &hold, &rev, st);
    if (rc != KW_OK)
        goto out;
    rc = kw_engine_read(hold.engine, &req->filter, read_collect, &c, NULL, &d);
    kw__v1_read_end(svc, &hold);
    if (rc == 1)
        rc = c.rc;
    if (rc != KW_OK) {
        kw_v1_fail_rc(st, rc, &d, NULL);
        goto out;
    }
    kw__v1_minter_t m;
    kw__v1_minter_init(svc, &m, KW__V1_RPC_READ, shape, rev);
    for (size_t i = 0; i < c.n && rc == KW_OK; i++) {
        kw_str_t f[6];
        rel_fields(&c.rels[i], f);
        char *cur = kw__v1_mint(&m, c.a, f, 6);
        if (!cur) {
            rc = kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
            break;
        }
        kw_v1_read_result_t r = {rev, &c.rels[i], cur};
        rc = emit(ud, &r);
        if (rc != KW_OK)
            kw_v1_fail(st, rc, KW_GRPC_CANCELLED, NULL, "the client went away");
    }
    kw__v1_minter_wipe(&m);
out:
    kw_free(c.rels);
    kw_arena_free(c.a);
    return rc;
}

/* ---- writes ---- */

typedef struct write_ctx {
    kw_api_t *api;
    const kw_update_t *ups;
    size_t n;
    const kw_precondition_t *pre;
    size_t n_pre;
    const kw_v1_delete_req_t *del; /* a delete: its filter, prefix, limit */
    kw_v1_delete_resp_t *del_resp;
    kw_arena_t *a; /* a delete's collected matches */
    kw_v1_status_t *st;
    const kw_v1_caller_t *caller; /* for the audit event */
} write_ctx_t;

static int first_cb(const kw_rel_t *rel, void *ud)
{
    (void)rel;
    (void)ud;
    return 1;
}

/* Inside the write transaction, after catching up: the engine holds every committed
 * relationship, and nothing else commits until this transaction ends. */
static int check_preconditions(write_ctx_t *c, kw_diag_t *diag)
{
    for (size_t i = 0; i < c->n_pre; i++) {
        int rc = kw_engine_read(c->api->engine, &c->pre[i].filter, first_cb, NULL, NULL, diag);
        bool matched = rc == 1;
        if (rc != KW_OK && rc != 1)
            return rc;
        if (matched != c->pre[i].must_match)
            return kw_diag_set(
                diag, KW_EPRECOND, 0, 0, "unable to satisfy write precondition %zu: %s", i,
                c->pre[i].must_match ? "no relationship matched its filter (MUST_MATCH)"
                                     : "a relationship matched its filter (MUST_NOT_MATCH)");
    }
    return KW_OK;
}

/* A delete's matches, in Read order, for the limited and the prefix deletes: at most
 * `max` are kept (the rest only counted). */
typedef struct del_collect {
    kw_arena_t *a;
    kw_str_t prefix;
    size_t max;
    kw_update_t *ups;
    size_t n, cap;
    size_t matched;
    int rc;
} del_collect_t;

static int del_cb(const kw_rel_t *rel, void *ud)
{
    del_collect_t *c = ud;
    if (!has_prefix(rel->resource.id, c->prefix))
        return 0;
    c->matched++;
    if (c->n >= c->max)
        return 0;
    if (c->n == c->cap &&
        (c->rc = kw_grow((void **)&c->ups, &c->cap, c->n + 1, sizeof(kw_update_t))) != KW_OK)
        return 1;
    c->ups[c->n].op = KW_OP_DELETE;
    if ((c->rc = kw_rel_copy(c->a, rel, &c->ups[c->n].rel)) != KW_OK)
        return 1;
    c->n++;
    return 0;
}

/* A delete the store cannot do by filter alone (a limit, an id prefix, no resource type):
 * its matches are read from the caught-up graph and deleted one by one. */
static bool by_graph(const kw_v1_delete_req_t *r)
{
    return r->limit || r->resource_id_prefix.len || !r->filter.resource_type.len;
}

static int delete_tx(kw_store_tx_t *tx, write_ctx_t *c, kw_diag_t *diag)
{
    const kw_v1_delete_req_t *r = c->del;
    if (!by_graph(r))
        return kw_store_tx_rel_delete_matching(tx, &r->filter, &c->del_resp->n_deleted, diag);
    /* One past the limit tells "more matched" apart; without a limit (a prefix delete)
     * every match is deleted. */
    del_collect_t dc = {
        c->a, r->resource_id_prefix, r->limit ? (size_t)r->limit + 1 : SIZE_MAX, NULL, 0, 0, 0,
        KW_OK};
    int rc = kw_engine_read(c->api->engine, &r->filter, del_cb, &dc, NULL, diag);
    if (rc == 1)
        rc = dc.rc;
    if (rc == KW_OK && r->limit && dc.matched > r->limit) {
        if (!r->allow_partial) {
            kw_free(dc.ups);
            kw_v1_fail(c->st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT,
                       "ERROR_REASON_TOO_MANY_RELATIONSHIPS_FOR_TRANSACTIONAL_DELETE",
                       "found more than %" PRIu32
                       " relationships to be deleted and partial deletion was not requested",
                       r->limit);
            char lim[16];
            snprintf(lim, sizeof(lim), "%" PRIu32, r->limit);
            kw_v1_meta(c->st, "limit", kw_str_c(lim));
            kw_v1_meta(c->st, "filter_resource_type", r->filter.resource_type);
            return KW_ELIMIT;
        }
        dc.n = r->limit;
        c->del_resp->partial = true;
    }
    if (rc == KW_OK && dc.n)
        rc = kw_store_tx_rel_write(tx, dc.ups, dc.n, diag);
    if (rc == KW_OK)
        c->del_resp->n_deleted = dc.n;
    kw_free(dc.ups);
    return rc;
}

static int write_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    write_ctx_t *c = ud;
    int rc = KW_OK;
    bool needs_graph = c->n_pre || (c->del && by_graph(c->del));
    /* tx holds the global write order (kw_store_tx_begin took it): every revision below
     * this transaction's is committed and no other can commit before it. Catching up
     * now brings the engine to exactly the committed state (other instances' commits
     * included; a no-op on SQLite, whose commits all go through this process), so the
     * checks below stay true until our commit. */
    if (needs_graph && (rc = kw__api_catch_up(c->api, diag)) != KW_OK)
        return rc;
    if ((rc = check_preconditions(c, diag)) != KW_OK)
        return rc;
    if (c->del)
        rc = delete_tx(tx, c, diag);
    else if (c->n)
        rc = kw_store_tx_rel_write(tx, c->ups, c->n, diag);
    /* The audit event, in the same transaction as the change (audit.c). */
    if (rc == KW_OK)
        rc = kw__api_audit_v1_rels(tx, c->caller, c->ups, c->n, c->del ? &c->del->filter : NULL,
                                   c->del ? (size_t)c->del_resp->n_deleted : 0, diag);
    return rc;
}

/* Checks against the graph inside the transaction (write_tx) need the write to run
 * alone, where the graph is exactly the committed state. Any other write may share a
 * transaction with others (group commit). */
static unsigned write_flags(const write_ctx_t *c)
{
    bool alone = c->n_pre || (c->del && by_graph(c->del));
    return alone ? KW__WRITE_ALONE : 0;
}

static int check_pre_count(size_t n, kw_v1_status_t *st)
{
    if (n <= KW_MAX_PRECONDITIONS)
        return KW_OK;
    return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT,
                      "ERROR_REASON_TOO_MANY_PRECONDITIONS_IN_REQUEST",
                      "too many preconditions (%zu) (maximum: %d)", n, KW_MAX_PRECONDITIONS);
}

int kw_v1_write_relationships(kw_api_t *svc, const kw_v1_write_req_t *req,
                              kw_revision_t *written_at, kw_v1_status_t *st)
{
    /* optionalTransactionMetadata (req->has_metadata) is accepted, as SpiceDB accepts it,
     * and not kept: keyward's Watch has no transaction metadata to return (docs/API.md).
     * The official Node client's own suite writes with it (tests/authzed-node). */
    if (req->n_updates > KW_MAX_UPDATES_PER_WRITE) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT,
                   "ERROR_REASON_TOO_MANY_UPDATES_IN_REQUEST",
                   "too many updates (%zu) for WriteRelationships call (maximum: %d); consider "
                   "using ImportBulkRelationships API instead",
                   req->n_updates, KW_MAX_UPDATES_PER_WRITE);
        return KW_EINVAL;
    }
    int rc = check_pre_count(req->n_pre, st);
    if (rc != KW_OK)
        return rc;
    kw_diag_t d;
    if ((rc = kw__v1_names_write(req, st)) != KW_OK)
        return rc;
    kw_diag_clear(&d);
    /* Refused before any transaction: 400 naming the relation and type. */
    if (req->n_updates &&
        (rc = kw_engine_validate(svc->engine, req->updates, req->n_updates, &d)) != KW_OK)
        return kw_v1_fail_rc(st, rc, &d, NULL);
    write_ctx_t c = {svc,  req->updates, req->n_updates, req->pre, req->n_pre,
                     NULL, NULL,         NULL,           st,       req->caller};
    kw_revision_t rev = 0;
    rc = kw__api_write(svc, write_tx, &c, write_flags(&c), &rev, &d);
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, &d, NULL);
    *written_at = rev;
    return KW_OK;
}

int kw_v1_delete_relationships(kw_api_t *svc, const kw_v1_delete_req_t *req,
                               kw_v1_delete_resp_t *resp, kw_v1_status_t *st)
{
    /* optionalTransactionMetadata: accepted and not kept, as for a write. */
    if (kw__v1_names_delete(req, st) != KW_OK)
        return KW_EINVAL;
    int rc = check_pre_count(req->n_pre, st);
    if (rc == KW_OK)
        rc = kw__v1_limit_check(req->limit, KW_V1_MAX_DELETE_LIMIT, st);
    if (rc == KW_OK)
        rc = check_prefix(&req->filter, req->resource_id_prefix, st);
    if (rc != KW_OK)
        return rc;
    kw_v1_delete_resp_t out = {0, false, 0};
    write_ctx_t c = {svc, NULL,       0, req->pre, req->n_pre, req, &out, kw_arena_new(0),
                     st,  req->caller};
    if (!c.a)
        return kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_v1_status_clear(st);
    kw_revision_t rev = 0;
    rc = kw__api_write(svc, write_tx, &c, write_flags(&c), &rev, &d);
    kw_arena_free(c.a);
    if (rc != KW_OK)
        return st->code ? rc : kw_v1_fail_rc(st, rc, &d, NULL);
    out.deleted_at = rev;
    *resp = out;
    return KW_OK;
}
