/*
 * api/v1svc_bulk.c - PermissionsService's ExportBulkRelationships and
 * ImportBulkRelationships as service functions (v1svc_more.h).
 *
 * Export reads the STORE, not the graph: kw_store_export_relationships streams the rows in
 * key order from one snapshot as the client takes them, so a million relationships cost
 * one batch of memory and no engine lock is held while a slow client reads. Each batch
 * carries a cursor (v1svc.c's MAC'd cursors) naming its last key; a request with it
 * resumes strictly after that key, at the store's state of that moment (keyward keeps no
 * older snapshot: docs/API.md).
 *
 * Import runs alone in ONE store transaction (the group-commit write path with
 * KW_SYNC_WRITE_ALONE): relationships are pulled from the transport's decoder in chunks,
 * each chunk validated against the schema and written as CREATEs; the graph gets them
 * all at the commit's revision, or nothing happens.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "v1svc_int.h"
#include "v1svc_more.h"

#define KW_MODULE "v1"

/* The cursor's RPC tag (v1svc_int.h's enum names the others; a value of its own here so
 * that an export cursor is never accepted by another RPC, nor theirs by export). */
#define RPC_EXPORT 16
#define IMPORT_CHUNK 1000

/* ---- ExportBulkRelationships ---- */

typedef struct export_ctx {
    kw_api_t *svc;
    const kw_v1_export_req_t *req;
    const kw_watch_filter_t *filter; /* NULL: every relationship */
    const uint8_t *shape;
    kw_revision_t rev; /* the revision the cursors name */
    kw_v1_export_fn emit;
    void *ud;
    kw_arena_t *a; /* the batch's copies, reset after each batch */
    kw_rel_t *rels;
    size_t n, limit;
    int rc;
    kw_v1_status_t *st;
} export_ctx_t;

/* kw_rel_copy, caveat and expiry included whatever that function copies (it copied only
 * the six key strings before caveats existed). */
static int rel_copy_all(kw_arena_t *a, const kw_rel_t *src, kw_rel_t *out)
{
    int rc = kw_rel_copy(a, src, out);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat, &out->caveat);
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, src->caveat_ctx, &out->caveat_ctx);
    out->expires_at = src->expires_at;
    return rc;
}

static void rel_key(const kw_rel_t *r, kw_str_t f[6])
{
    f[0] = r->resource.type;
    f[1] = r->resource.id;
    f[2] = r->relation;
    f[3] = r->subject.type;
    f[4] = r->subject.id;
    f[5] = r->subject.relation;
}

static int flush_batch(export_ctx_t *c)
{
    if (c->n == 0)
        return KW_OK;
    kw_str_t f[6];
    rel_key(&c->rels[c->n - 1], f);
    char *cur = kw__v1_cursor_make(c->svc, c->a, RPC_EXPORT, c->shape, c->rev, f, 6);
    if (!cur)
        return kw_v1_fail_rc(c->st, KW_ENOMEM, NULL, NULL);
    kw_v1_export_batch_t b = {c->rev, c->rels, c->n, cur};
    int rc = c->emit(c->ud, &b);
    if (rc != KW_OK)
        return kw_v1_fail(c->st, rc, KW_GRPC_CANCELLED, NULL, "the client went away");
    c->n = 0;
    kw_arena_reset(c->a);
    return KW_OK;
}

static int on_export_row(const kw_rel_t *rel, void *ud)
{
    export_ctx_t *c = ud;
    if (c->filter && !kw_watch_filter_passes(c->filter, rel))
        return 0;
    int rc = rel_copy_all(c->a, rel, &c->rels[c->n]);
    if (rc != KW_OK) {
        c->rc = kw_v1_fail_rc(c->st, rc, NULL, NULL);
        return 1;
    }
    /* The store gives "" for no subject relation; so does the engine's Read. */
    if (++c->n == c->limit && (c->rc = flush_batch(c)) != KW_OK)
        return 1;
    return 0;
}

static void export_shape(kw__v1_shape_t *sh, const kw_v1_export_req_t *req)
{
    kw__v1_shape_init(sh, RPC_EXPORT);
    kw__v1_shape_u32(sh, req->has_filter);
    kw__v1_shape_str(sh, req->filter.resource_type);
    kw__v1_shape_str(sh, req->filter.resource_id);
    kw__v1_shape_str(sh, req->resource_id_prefix);
    kw__v1_shape_str(sh, req->filter.relation);
    kw__v1_shape_u32(sh, req->filter.has_subject);
    kw__v1_shape_str(sh, req->filter.subject_type);
    kw__v1_shape_str(sh, req->filter.subject_id);
    kw__v1_shape_u32(sh, req->filter.subject_relation_set);
    kw__v1_shape_str(sh, req->filter.subject_relation);
}

int kw_v1_export_bulk(kw_api_t *svc, const kw_v1_export_req_t *req, kw_v1_export_fn emit, void *ud,
                      kw_v1_status_t *st)
{
    if (kw__v1_names_export(req, st) != KW_OK)
        return KW_EINVAL;
    int rc = kw__v1_limit_check(req->limit, KW_V1_MAX_EXPORT_LIMIT, st);
    if (rc != KW_OK)
        return rc;
    if (req->has_filter && req->resource_id_prefix.len && req->filter.resource_id.len)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                          "optionalResourceId and optionalResourceIdPrefix cannot be used "
                          "together");
    uint8_t shape[KW__V1_SHAPE_LEN];
    kw__v1_shape_t sh;
    export_shape(&sh, req);
    if ((rc = kw__v1_shape_done(svc, &sh, shape)) != KW_OK)
        return kw_v1_fail_rc(st, rc, NULL, NULL);
    kw__v1_pos_t pos;
    if (req->cursor.len &&
        (rc = kw__v1_cursor_open(svc, req->cursor, RPC_EXPORT, shape, 6, &pos, st)) != KW_OK)
        return rc;
    /* Consistency: the store is the committed state itself, which keeps no older
     * revision: an exact snapshot must be the current one (docs/API.md). */
    kw__v1_read_t hold;
    kw_revision_t rev = 0;
    if ((rc = kw__v1_read_begin_for(svc, &req->consistency, &hold, &rev, KW__V1_AT_CURRENT, st)) !=
        KW_OK)
        return rc;
    kw__v1_read_end(svc, &hold);

    kw_str_t prefixes[1] = {req->resource_id_prefix};
    kw_watch_filter_t wf = {NULL, 0, &req->filter, prefixes, 1};
    export_ctx_t c = {svc,
                      req,
                      req->has_filter ? &wf : NULL,
                      shape,
                      rev,
                      emit,
                      ud,
                      kw_arena_new(0),
                      NULL,
                      0,
                      req->limit ? req->limit : KW_V1_MAX_EXPORT_LIMIT,
                      KW_OK,
                      st};
    c.rels = kw_calloc(c.limit, sizeof(*c.rels));
    if (!c.a || !c.rels) {
        rc = kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
        goto out;
    }
    kw_str_t type = req->has_filter ? req->filter.resource_type : KW_STR("");
    rc = kw_store_export_relationships(svc->store, req->cursor.len ? pos.f : NULL, type,
                                       on_export_row, &c, NULL);
    if (rc == 1)
        rc = c.rc;
    else if (rc != KW_OK)
        rc = kw_v1_fail_rc(st, rc, NULL, NULL);
    else
        rc = flush_batch(&c);
out:
    kw_free(c.rels);
    kw_arena_free(c.a);
    return rc;
}

/* ---- ImportBulkRelationships ---- */

typedef struct import_ctx {
    kw_api_t *svc;
    kw_v1_import_next_fn next;
    kw_v1_import_alive_fn alive;
    void *ud;
    uint64_t n_loaded;
    bool ran;
    kw_arena_t *a;
    kw_update_t *chunk;
    int decode_rc;        /* the transport's own error (a malformed message) */
    int gone_rc;          /* the client went away before the commit (KW_EIO, KW_ETIMEOUT) */
    kw_v1_status_t names; /* a relationship's names broke SpiceDB's patterns (code != 0) */
} import_ctx_t;

static int import_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    import_ctx_t *c = ud;
    /* The request stream can be read once: a second run (sync.h allows re-runs of
     * grouped writes; an ALONE write is never grouped) could only import nothing. */
    if (c->ran)
        return kw_diag_set(diag, KW_EINTERNAL, 0, 0, "the import ran twice");
    c->ran = true;
    c->n_loaded = 0;
    for (bool more = true; more;) {
        size_t n = 0;
        kw_arena_reset(c->a);
        while (n < IMPORT_CHUNK) {
            kw_rel_t rel;
            memset(&rel, 0, sizeof(rel));
            int rc = c->next(c->ud, &rel, diag);
            if (rc == KW_ENOTFOUND) {
                more = false;
                break;
            }
            if (rc != KW_OK) {
                c->decode_rc = rc;
                return rc;
            }
            /* SpiceDB's validation of each relationship's names (v1svc_names.c); the index
             * counts the relationships of the whole stream. */
            if (!kw__v1_names_rel_ok(&rel)) {
                kw__v1_names_t v;
                kw__v1_names_init(&v);
                char path[48];
                snprintf(path, sizeof(path), "relationships[%" PRIu64 "].", c->n_loaded + n);
                kw__v1_names_rel(&v, path, &rel);
                if (kw__v1_names_done(&v, &c->names) != KW_OK)
                    return kw_diag_set(diag, KW_EINVAL, 0, 0, "%s", c->names.msg);
            }
            c->chunk[n].op = KW_OP_CREATE;
            if ((rc = rel_copy_all(c->a, &rel, &c->chunk[n].rel)) != KW_OK)
                return kw_diag_set(diag, rc, 0, 0, "out of memory");
            n++;
        }
        if (n == 0)
            break;
        int rc = kw_engine_validate(c->svc->engine, c->chunk, n, diag);
        if (rc == KW_OK)
            rc = kw_store_tx_rel_write(tx, c->chunk, n, diag);
        if (rc != KW_OK)
            return rc;
        c->n_loaded += n;
    }
    /* The last moment the import can still be undone: a client that cancelled while the
     * last chunk was written must not find it committed (returning an error rolls the
     * transaction back). */
    int rc = c->alive ? c->alive(c->ud) : KW_OK;
    if (rc != KW_OK) {
        c->gone_rc = rc;
        return kw_diag_set(diag, rc, 0, 0, "%s",
                           rc == KW_ETIMEOUT ? "deadline exceeded" : "cancelled");
    }
    return KW_OK;
}

int kw_v1_import_bulk(kw_api_t *svc, kw_v1_import_next_fn next, kw_v1_import_alive_fn alive,
                      void *ud, uint64_t *n_loaded, kw_revision_t *written_at, kw_v1_status_t *st)
{
    import_ctx_t c = {svc, next, alive, ud, 0, false, kw_arena_new(0), NULL, KW_OK, KW_OK, {0}};
    kw_v1_status_clear(&c.names);
    c.chunk = kw_calloc(IMPORT_CHUNK, sizeof(*c.chunk));
    int rc = KW_OK;
    if (!c.a || !c.chunk) {
        rc = kw_v1_fail_rc(st, KW_ENOMEM, NULL, NULL);
        goto out;
    }
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_revision_t rev = 0;
    rc = kw__api_write(svc, import_tx, &c, KW_SYNC_WRITE_ALONE, &rev, &d);
    if (rc != KW_OK) {
        if (c.names.code != 0)
            *st = c.names;
        else if (c.gone_rc != KW_OK)
            kw_v1_fail(st, rc,
                       c.gone_rc == KW_ETIMEOUT ? KW_GRPC_DEADLINE_EXCEEDED : KW_GRPC_CANCELLED,
                       NULL, "%s", c.gone_rc == KW_ETIMEOUT ? "deadline exceeded" : "cancelled");
        else if (c.decode_rc != KW_OK)
            kw_v1_fail(st, rc, KW_GRPC_INVALID_ARGUMENT, NULL, "%s",
                       d.msg[0] ? d.msg : "malformed request message");
        else
            kw_v1_fail_rc(st, rc, &d, NULL);
        goto out;
    }
    *n_loaded = c.n_loaded;
    *written_at = rev;
out:
    kw_free(c.chunk);
    kw_arena_free(c.a);
    return rc;
}
