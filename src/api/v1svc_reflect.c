/*
 * api/v1svc_reflect.c - SchemaService's ReflectSchema, ComputablePermissions,
 * DependentRelations and DiffSchema as service functions (v1svc_more.h), over the pure
 * functions of authz/reflect.c applied to the installed schema's text.
 *
 * The answer is at the revision the instance has applied (read before the schema text,
 * so it is at least that fresh); atExactSnapshot at the current revision holds the graph
 * still meanwhile, at an older one within the snapshot window answers with the current
 * schema, which was already the schema then (a schema write restarts the window).
 */
#include <string.h>

#include "v1svc_int.h"
#include "v1svc_more.h"

#define KW_MODULE "v1"

/* The installed schema's text into a (NUL-terminated, may be empty) at *rev. */
static int current_schema(kw_api_t *svc, const kw_v1_consistency_t *c, kw_arena_t *a,
                          kw_str_t *text, kw_revision_t *rev, kw_v1_status_t *st)
{
    kw__v1_read_t hold;
    int rc = kw__v1_read_begin_for(svc, c, &hold, rev, KW__V1_AT_SCHEMA, st);
    if (rc != KW_OK)
        return rc;
    kw_buf_t b;
    kw_buf_init(&b);
    rc = kw_engine_schema_text(svc->engine, &b);
    kw__v1_read_end(svc, &hold);
    if (rc == KW_OK && b.failed)
        rc = KW_ENOMEM;
    if (rc == KW_OK)
        rc = kw_arena_str_copy(a, (kw_str_t){b.ptr ? b.ptr : "", b.len}, text);
    kw_buf_free(&b);
    return rc == KW_OK ? KW_OK : kw_v1_fail_rc(st, rc, NULL, NULL);
}

/* authz/reflect.c's errors as SpiceDB answers them. */
static int reflect_fail(kw_v1_status_t *st, int rc, const kw_diag_t *d)
{
    if (rc == KW_ENOTFOUND) {
        const char *reason = strncmp(d->msg, "object definition", 17) == 0
                                 ? "ERROR_REASON_UNKNOWN_DEFINITION"
                                 : "ERROR_REASON_UNKNOWN_RELATION_OR_PERMISSION";
        return kw_v1_fail(st, rc, KW_GRPC_FAILED_PRECONDITION, reason, "%s", d->msg);
    }
    if (rc == KW_EINVAL)
        return kw_v1_fail(st, rc, KW_GRPC_INVALID_ARGUMENT, NULL, "%s", d->msg);
    return kw_v1_fail_rc(st, rc, d, NULL);
}

int kw_v1_reflect_schema(kw_api_t *svc, const kw_v1_reflect_req_t *req, kw_v1_reflect_resp_t *resp,
                         kw_v1_status_t *st)
{
    kw_str_t text;
    kw_revision_t rev = 0;
    int rc = current_schema(svc, &req->consistency, req->arena, &text, &rev, st);
    if (rc != KW_OK)
        return rc;
    kw_diag_t d;
    kw_diag_clear(&d);
    rc = kw_schema_reflect(text, req->filters, req->n_filters, req->arena, &resp->defs,
                           &resp->n_defs, &d);
    if (rc == KW_OK)
        rc = kw_schema_reflect_caveats(text, req->filters, req->n_filters, req->arena,
                                       &resp->caveats, &resp->n_caveats, &d);
    if (rc != KW_OK)
        return reflect_fail(st, rc, &d);
    resp->read_at = rev;
    return KW_OK;
}

int kw_v1_computable_permissions(kw_api_t *svc, const kw_v1_relref_req_t *req,
                                 kw_v1_relref_resp_t *resp, kw_v1_status_t *st)
{
    kw_str_t text;
    kw_revision_t rev = 0;
    int rc = current_schema(svc, &req->consistency, req->arena, &text, &rev, st);
    if (rc != KW_OK)
        return rc;
    kw_diag_t d;
    kw_diag_clear(&d);
    rc = kw_schema_computable_permissions(text, req->definition, req->relation,
                                          req->definition_filter, req->arena, &resp->refs,
                                          &resp->n_refs, &d);
    if (rc != KW_OK)
        return reflect_fail(st, rc, &d);
    resp->read_at = rev;
    return KW_OK;
}

int kw_v1_dependent_relations(kw_api_t *svc, const kw_v1_relref_req_t *req,
                              kw_v1_relref_resp_t *resp, kw_v1_status_t *st)
{
    kw_str_t text;
    kw_revision_t rev = 0;
    int rc = current_schema(svc, &req->consistency, req->arena, &text, &rev, st);
    if (rc != KW_OK)
        return rc;
    kw_diag_t d;
    kw_diag_clear(&d);
    rc = kw_schema_dependent_relations(text, req->definition, req->relation, req->arena,
                                       &resp->refs, &resp->n_refs, &d);
    if (rc != KW_OK)
        return reflect_fail(st, rc, &d);
    resp->read_at = rev;
    return KW_OK;
}

int kw_v1_diff_schema(kw_api_t *svc, const kw_v1_diff_req_t *req, kw_v1_diff_resp_t *resp,
                      kw_v1_status_t *st)
{
    kw_str_t text;
    kw_revision_t rev = 0;
    int rc = current_schema(svc, &req->consistency, req->arena, &text, &rev, st);
    if (rc != KW_OK)
        return rc;
    kw_diag_t d;
    kw_diag_clear(&d);
    rc = kw_schema_diff(text, req->comparison_schema, req->arena, &resp->diffs, &resp->n_diffs, &d);
    if (rc == KW_ESCHEMA) {
        /* The comparison did not compile (the installed text always does): SpiceDB's
         * INVALID_ARGUMENT with the position. */
        return kw_v1_fail(st, rc, KW_GRPC_INVALID_ARGUMENT, "ERROR_REASON_SCHEMA_PARSE_ERROR",
                          "%u:%u: %s", d.line, d.col, d.msg);
    }
    if (rc != KW_OK)
        return reflect_fail(st, rc, &d);
    resp->read_at = rev;
    return KW_OK;
}
