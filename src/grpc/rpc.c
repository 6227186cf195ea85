/*
 * grpc/rpc.c - the method table (one row per method: path, request descriptor, handler,
 * streaming kind; kw__grpc_invoke decodes the request with the row's descriptor) and the
 * handlers of PermissionsService's relationship and permission RPCs, SchemaService's
 * read and write, WatchService and grpc.health.v1 (rpc_more.c and reflect.c have the
 * rest). A handler converts the request, waits for its consistency, calls the service
 * layer (api/v1svc.h) and packs what comes back. No RPC logic lives here
 * (tag-kw-grpc-codec): answers, limits and errors are the service layer's, exactly as for
 * the HTTP/JSON gateway.
 */
#include <string.h>
#include <time.h>

#include "api/v1svc_more.h"
#include "authzed/api/v1/experimental_service.pb-c.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "rpc_int.h"

#define KW_MODULE "grpc"

void kw__grpc_finish(int rc, kw_v1_status_t *st)
{
    if (rc == KW_OK || st->code != KW_GRPC_OK)
        return;
    if (rc == KW_ETIMEOUT)
        kw_v1_fail(st, rc, KW_GRPC_DEADLINE_EXCEEDED, NULL, "deadline exceeded");
    else if (rc == KW_EIO)
        kw_v1_fail(st, rc, KW_GRPC_CANCELLED, NULL, "cancelled");
    else if (rc == KW_ENOMEM)
        kw_v1_fail(st, rc, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "out of memory");
    else
        kw_v1_fail(st, rc, KW_GRPC_INTERNAL, NULL, "internal error");
}

void kw__grpc_oom(kw_v1_status_t *st)
{
    kw_v1_fail(st, KW_ENOMEM, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "out of memory");
}

/* Decodes the consistency and waits for it (this thread blocks; a call answered on the
 * connection's thread is handed to a thread of its own first, st left clear). */
bool kw__grpc_await(kw__grpc_call_t *c, const Authzed__Api__V1__Consistency *pc,
                    kw_v1_consistency_t *cons, kw_v1_status_t *st)
{
    if (!kw__grpc_consistency(pc, cons, st))
        return false;
    kw_revision_t min = 0;
    bool full = false;
    kw_v1_consistency_wait(cons, &min, &full);
    if (min == 0 && !full)
        return true;
    if (!full && kw_api_v1_applied(kw__grpc_api(c), min))
        return true; /* a revision already applied: no wait, the answer stays where it is */
    if (!kw__grpc_may_block(c))
        return false; /* on the connection's thread: the server runs it again on its own */
    int rc = kw_api_v1_await(kw__grpc_api(c), min, full);
    if (rc == KW_OK)
        return true;
    if (rc == KW_EINVAL)
        kw_v1_fail(st, rc, KW_GRPC_OUT_OF_RANGE, NULL,
                   "invalid zedtoken: revision is in the future");
    else
        kw_v1_fail(st, rc, KW_GRPC_UNAVAILABLE, NULL,
                   rc == KW_ETIMEOUT ? "the instance did not reach the requested revision in time"
                                     : "database unavailable");
    return false;
}

/* ---- PermissionsService ---- */

void kw__grpc_rpc_check(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__CheckPermissionRequest *req = (Authzed__Api__V1__CheckPermissionRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_check_req_t r = {.arena = a};
    kw_v1_check_resp_t resp;
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st) ||
        !kw__grpc_object(req->resource, "CheckPermissionRequest.Resource", &r.resource, st) ||
        !kw__grpc_subject(req->subject, "CheckPermissionRequest.Subject", &r.subject, st) ||
        !kw__grpc_struct_text(req->context, a, &r.context, st))
        goto out;
    r.permission = kw_str_c(req->permission);
    r.with_tracing = req->with_tracing;
    int rc = kw_v1_check(kw__grpc_api(c), &r, &resp, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__CheckPermissionResponse m = AUTHZED__API__V1__CHECK_PERMISSION_RESPONSE__INIT;
    m.checked_at = kw__grpc_token(resp.checked_at, a);
    m.permissionship =
        (Authzed__Api__V1__CheckPermissionResponse__Permissionship)resp.permissionship;
    m.partial_caveat_info = kw__grpc_partial(resp.permissionship, resp.missing, a);
    if (resp.trace)
        m.debug_trace = kw__grpc_debug(resp.trace, &r.subject, resp.schema_used, a);
    if (!m.checked_at ||
        (resp.permissionship == KW_V1_PERM_CONDITIONAL && !m.partial_caveat_info) ||
        (resp.trace && !m.debug_trace)) {
        kw__grpc_oom(st);
        goto out;
    }
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_arena_free(a);
}

void kw__grpc_rpc_check_bulk(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__CheckBulkPermissionsRequest *req =
        (Authzed__Api__V1__CheckBulkPermissionsRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_bulk_req_t r = {.arena = a, .with_tracing = req->with_tracing};
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st))
        goto out;
    if (req->n_items > KW_V1_MAX_BULK_ITEMS) {
        /* the service refuses it too; the array is not built for nothing */
        kw_v1_fail(st, KW_ELIMIT, KW_GRPC_INVALID_ARGUMENT,
                   "ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT",
                   "check bulk permissions request has %zu items, more than the %u allowed",
                   req->n_items, KW_V1_MAX_BULK_ITEMS);
        goto out;
    }
    r.n_items = req->n_items;
    r.items = r.n_items ? kw_arena_alloc(a, r.n_items * sizeof(*r.items)) : NULL;
    if (r.n_items && !r.items) {
        kw__grpc_oom(st);
        goto out;
    }
    for (size_t i = 0; i < r.n_items; i++) {
        const Authzed__Api__V1__CheckBulkPermissionsRequestItem *it = req->items[i];
        kw_v1_bulk_item_t *o = &r.items[i];
        memset(o, 0, sizeof(*o));
        if (!kw__grpc_object(it->resource, "CheckBulkPermissionsRequestItem.Resource", &o->resource,
                             st) ||
            !kw__grpc_subject(it->subject, "CheckBulkPermissionsRequestItem.Subject", &o->subject,
                              st) ||
            !kw__grpc_struct_text(it->context, a, &o->context, st))
            goto out;
        o->permission = kw_str_c(it->permission);
    }
    kw_revision_t at = 0;
    int rc = kw_v1_check_bulk(kw__grpc_api(c), &r, &at, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__CheckBulkPermissionsResponse m =
        AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_RESPONSE__INIT;
    m.checked_at = kw__grpc_token(at, a);
    m.n_pairs = r.n_items;
    m.pairs = r.n_items ? kw_arena_alloc(a, r.n_items * sizeof(*m.pairs)) : NULL;
    Authzed__Api__V1__CheckBulkPermissionsPair *pairs =
        r.n_items ? kw_arena_alloc(a, r.n_items * sizeof(*pairs)) : NULL;
    Authzed__Api__V1__CheckBulkPermissionsResponseItem *items =
        r.n_items ? kw_arena_alloc(a, r.n_items * sizeof(*items)) : NULL;
    if (!m.checked_at || (r.n_items && (!m.pairs || !pairs || !items))) {
        kw__grpc_oom(st);
        goto out;
    }
    for (size_t i = 0; i < r.n_items; i++) {
        const kw_v1_bulk_item_t *it = &r.items[i];
        Authzed__Api__V1__CheckBulkPermissionsPair *p = &pairs[i];
        authzed__api__v1__check_bulk_permissions_pair__init(p);
        p->request = req->items[i]; /* the item as asked */
        if (it->error) {
            uint8_t *bin = NULL;
            size_t blen = 0;
            if (kw__grpc_status_pack(it->error, &bin, &blen) != KW_OK) {
                kw__grpc_oom(st);
                m.n_pairs = i; /* the pairs built so far hold unpacked errors */
                goto unwind;
            }
            p->error = google__rpc__status__unpack(NULL, blen, bin);
            kw_free(bin);
            if (!p->error) {
                kw__grpc_oom(st);
                m.n_pairs = i; /* the pairs built so far hold unpacked errors */
                goto unwind;
            }
            p->response_case = AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR;
        } else {
            Authzed__Api__V1__CheckBulkPermissionsResponseItem *ri = &items[i];
            authzed__api__v1__check_bulk_permissions_response_item__init(ri);
            ri->permissionship =
                (Authzed__Api__V1__CheckPermissionResponse__Permissionship)it->permissionship;
            ri->partial_caveat_info = kw__grpc_partial(it->permissionship, it->missing, a);
            if (it->trace)
                ri->debug_trace = kw__grpc_debug(it->trace, &it->subject, r.schema_used, a);
            if ((it->permissionship == KW_V1_PERM_CONDITIONAL && !ri->partial_caveat_info) ||
                (it->trace && !ri->debug_trace)) {
                kw__grpc_oom(st);
                m.n_pairs = i; /* the pairs built so far hold unpacked errors */
                goto unwind;
            }
            p->item = ri;
            p->response_case = AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ITEM;
        }
        m.pairs[i] = p;
    }
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
unwind:
    for (size_t i = 0; i < m.n_pairs; i++)
        if (pairs[i].response_case == AUTHZED__API__V1__CHECK_BULK_PERMISSIONS_PAIR__RESPONSE_ERROR)
            google__rpc__status__free_unpacked(pairs[i].error, NULL);
out:
    kw_arena_free(a);
}

void kw__grpc_rpc_write(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__WriteRelationshipsRequest *req =
        (Authzed__Api__V1__WriteRelationshipsRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_write_req_t r = {.has_metadata = req->optional_transaction_metadata &&
                                           req->optional_transaction_metadata->n_fields > 0,
                           .caller = kw__grpc_caller(c)};
    kw_update_t *ups = req->n_updates ? kw_arena_alloc(a, req->n_updates * sizeof(*ups)) : NULL;
    if (req->n_updates && !ups) {
        kw__grpc_oom(st);
        goto out;
    }
    for (size_t i = 0; i < req->n_updates; i++) {
        const Authzed__Api__V1__RelationshipUpdate *u = req->updates[i];
        switch (u->operation) {
        case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE:
            ups[i].op = KW_OP_CREATE;
            break;
        case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH:
            ups[i].op = KW_OP_TOUCH;
            break;
        case AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE:
            ups[i].op = KW_OP_DELETE;
            break;
        default:
            kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                       "invalid RelationshipUpdate.Operation: value must be one of the defined "
                       "enum values and not OPERATION_UNSPECIFIED");
            goto out;
        }
        if (!kw__grpc_rel(u->relationship, a, &ups[i].rel, st))
            goto out;
    }
    r.updates = ups;
    r.n_updates = req->n_updates;
    kw_precondition_t *pre = NULL;
    if (!kw__grpc_preconditions(req->optional_preconditions, req->n_optional_preconditions, a, &pre,
                                &r.n_pre, st))
        goto out;
    r.pre = pre;
    kw_revision_t at = 0;
    int rc = kw_v1_write_relationships(kw__grpc_api(c), &r, &at, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__WriteRelationshipsResponse m =
        AUTHZED__API__V1__WRITE_RELATIONSHIPS_RESPONSE__INIT;
    if (!(m.written_at = kw__grpc_token(at, a))) {
        kw__grpc_oom(st);
        goto out;
    }
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_arena_free(a);
}

void kw__grpc_rpc_delete(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__DeleteRelationshipsRequest *req =
        (Authzed__Api__V1__DeleteRelationshipsRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_delete_req_t r = {.limit = req->optional_limit,
                            .allow_partial = req->optional_allow_partial_deletions,
                            .has_metadata = req->optional_transaction_metadata &&
                                            req->optional_transaction_metadata->n_fields > 0,
                            .caller = kw__grpc_caller(c)};
    kw_precondition_t *pre = NULL;
    if (!kw__grpc_filter(req->relationship_filter, &r.filter, &r.resource_id_prefix, st) ||
        !kw__grpc_preconditions(req->optional_preconditions, req->n_optional_preconditions, a, &pre,
                                &r.n_pre, st))
        goto out;
    r.pre = pre;
    kw_v1_delete_resp_t resp;
    int rc = kw_v1_delete_relationships(kw__grpc_api(c), &r, &resp, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__DeleteRelationshipsResponse m =
        AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__INIT;
    m.deleted_at = kw__grpc_token(resp.deleted_at, a);
    m.deletion_progress =
        resp.partial
            ? AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__DELETION_PROGRESS__DELETION_PROGRESS_PARTIAL
            : AUTHZED__API__V1__DELETE_RELATIONSHIPS_RESPONSE__DELETION_PROGRESS__DELETION_PROGRESS_COMPLETE;
    m.relationships_deleted_count = resp.n_deleted;
    if (!m.deleted_at) {
        kw__grpc_oom(st);
        goto out;
    }
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_arena_free(a);
}

typedef struct {
    kw__grpc_call_t *c;
    kw_arena_t *a; /* reset per result */
} emit_ctx_t;

static int emit_read(void *ud, const kw_v1_read_result_t *r)
{
    emit_ctx_t *e = ud;
    kw_arena_reset(e->a);
    Authzed__Api__V1__ReadRelationshipsResponse m =
        AUTHZED__API__V1__READ_RELATIONSHIPS_RESPONSE__INIT;
    m.read_at = kw__grpc_token(r->read_at, e->a);
    m.relationship = kw__grpc_rel_msg(r->rel, e->a);
    m.after_result_cursor = kw__grpc_cursor(r->cursor, e->a);
    if (!m.read_at || !m.relationship || (r->cursor && !m.after_result_cursor))
        return KW_ENOMEM;
    return kw__grpc_send(e->c, &m.base);
}

void kw__grpc_rpc_read(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__ReadRelationshipsRequest *req =
        (Authzed__Api__V1__ReadRelationshipsRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_read_req_t r = {.limit = req->optional_limit};
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st) ||
        !kw__grpc_filter(req->relationship_filter, &r.filter, &r.resource_id_prefix, st))
        goto out;
    if (req->optional_cursor && req->optional_cursor->token)
        r.cursor = kw_str_c(req->optional_cursor->token);
    emit_ctx_t e = {c, a};
    kw__grpc_finish(kw_v1_read_relationships(kw__grpc_api(c), &r, emit_read, &e, st), st);
out:
    kw_arena_free(a);
}

static int emit_lr(void *ud, const kw_v1_lr_result_t *r)
{
    emit_ctx_t *e = ud;
    if (r->permissionship == KW_V1_PERM_HAS && r->cursor) { /* the common result, by hand */
        uint8_t buf[512];
        size_t n = kw__grpc_lr_encode(buf, sizeof(buf), r->looked_up_at, r->resource_id, r->cursor);
        if (n)
            return kw__grpc_send_packed(e->c, buf, n);
    }
    kw_arena_reset(e->a);
    Authzed__Api__V1__LookupResourcesResponse m = AUTHZED__API__V1__LOOKUP_RESOURCES_RESPONSE__INIT;
    m.looked_up_at = kw__grpc_token(r->looked_up_at, e->a);
    m.resource_object_id = kw_arena_strndup(e->a, r->resource_id.ptr, r->resource_id.len);
    m.permissionship =
        r->permissionship == KW_V1_PERM_CONDITIONAL
            ? AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION
            : AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_HAS_PERMISSION;
    m.partial_caveat_info = kw__grpc_partial(r->permissionship, r->missing, e->a);
    m.after_result_cursor = kw__grpc_cursor(r->cursor, e->a);
    if (!m.looked_up_at || !m.resource_object_id)
        return KW_ENOMEM;
    return kw__grpc_send(e->c, &m.base);
}

void kw__grpc_rpc_lookup_resources(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__LookupResourcesRequest *req = (Authzed__Api__V1__LookupResourcesRequest *)in;
    kw_arena_t *a = kw_arena_new(0), *ctx = kw_arena_new(0);
    if (!a || !ctx) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_lr_req_t r = {.limit = req->optional_limit};
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st) ||
        !kw__grpc_subject(req->subject, "LookupResourcesRequest.Subject", &r.subject, st) ||
        !kw__grpc_struct_text(req->context, ctx, &r.context, st))
        goto out;
    r.resource_type = kw_str_c(req->resource_object_type);
    r.permission = kw_str_c(req->permission);
    if (req->optional_cursor && req->optional_cursor->token)
        r.cursor = kw_str_c(req->optional_cursor->token);
    emit_ctx_t e = {c, a};
    kw__grpc_finish(kw_v1_lookup_resources(kw__grpc_api(c), &r, emit_lr, &e, st), st);
out:
    kw_arena_free(a);
    kw_arena_free(ctx);
}

static int emit_ls(void *ud, const kw_v1_ls_result_t *r)
{
    emit_ctx_t *e = ud;
    kw_arena_reset(e->a);
    Authzed__Api__V1__LookupSubjectsResponse m = AUTHZED__API__V1__LOOKUP_SUBJECTS_RESPONSE__INIT;
    Authzed__Api__V1__ResolvedSubject subj = AUTHZED__API__V1__RESOLVED_SUBJECT__INIT;
    Authzed__Api__V1__LookupPermissionship p =
        r->permissionship == KW_V1_PERM_CONDITIONAL
            ? AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION
            : AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_HAS_PERMISSION;
    m.looked_up_at = kw__grpc_token(r->looked_up_at, e->a);
    m.subject_object_id = kw_arena_strndup(e->a, r->subject_id.ptr, r->subject_id.len);
    m.permissionship = p;
    m.partial_caveat_info = kw__grpc_partial(r->permissionship, r->missing, e->a);
    subj.subject_object_id = m.subject_object_id;
    subj.permissionship = p;
    subj.partial_caveat_info = m.partial_caveat_info;
    m.subject = &subj;
    m.after_result_cursor = kw__grpc_cursor(r->cursor, e->a);
    if (r->n_excluded) {
        m.excluded_subject_ids = kw_arena_alloc(e->a, r->n_excluded * sizeof(char *));
        m.excluded_subjects = kw_arena_alloc(e->a, r->n_excluded * sizeof(*m.excluded_subjects));
        if (!m.excluded_subject_ids || !m.excluded_subjects)
            return KW_ENOMEM;
        for (size_t i = 0; i < r->n_excluded; i++) {
            Authzed__Api__V1__ResolvedSubject *x = kw_arena_alloc(e->a, sizeof(*x));
            if (!x)
                return KW_ENOMEM;
            authzed__api__v1__resolved_subject__init(x);
            x->subject_object_id = kw_arena_strndup(e->a, r->excluded[i].ptr, r->excluded[i].len);
            if (!x->subject_object_id)
                return KW_ENOMEM;
            x->permissionship =
                AUTHZED__API__V1__LOOKUP_PERMISSIONSHIP__LOOKUP_PERMISSIONSHIP_HAS_PERMISSION;
            m.excluded_subject_ids[i] = x->subject_object_id;
            m.excluded_subjects[i] = x;
        }
        m.n_excluded_subject_ids = m.n_excluded_subjects = r->n_excluded;
    }
    if (!m.looked_up_at || !m.subject_object_id)
        return KW_ENOMEM;
    return kw__grpc_send(e->c, &m.base);
}

void kw__grpc_rpc_lookup_subjects(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__LookupSubjectsRequest *req = (Authzed__Api__V1__LookupSubjectsRequest *)in;
    kw_arena_t *a = kw_arena_new(0), *ctx = kw_arena_new(0);
    if (!a || !ctx) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_ls_req_t r = {.concrete_limit = req->optional_concrete_limit};
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st) ||
        !kw__grpc_object(req->resource, "LookupSubjectsRequest.Resource", &r.resource, st) ||
        !kw__grpc_struct_text(req->context, ctx, &r.context, st))
        goto out;
    r.permission = kw_str_c(req->permission);
    r.subject_type = kw_str_c(req->subject_object_type);
    r.subject_relation = kw_str_c(req->optional_subject_relation);
    switch (req->wildcard_option) {
    case AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__WILDCARD_OPTION__WILDCARD_OPTION_UNSPECIFIED:
    case AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__WILDCARD_OPTION__WILDCARD_OPTION_INCLUDE_WILDCARDS:
        r.wildcard = KW_V1_WILDCARD_INCLUDE;
        break;
    case AUTHZED__API__V1__LOOKUP_SUBJECTS_REQUEST__WILDCARD_OPTION__WILDCARD_OPTION_EXCLUDE_WILDCARDS:
        r.wildcard = KW_V1_WILDCARD_EXCLUDE;
        break;
    default:
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                   "invalid LookupSubjectsRequest.WildcardOption: value must be one of the "
                   "defined enum values");
        goto out;
    }
    if (req->optional_cursor && req->optional_cursor->token)
        r.cursor = kw_str_c(req->optional_cursor->token);
    emit_ctx_t e = {c, a};
    kw__grpc_finish(kw_v1_lookup_subjects(kw__grpc_api(c), &r, emit_ls, &e, st), st);
out:
    kw_arena_free(a);
    kw_arena_free(ctx);
}

static Authzed__Api__V1__PermissionRelationshipTree *tree_msg(const kw_expand_t *t, kw_arena_t *a,
                                                              int depth)
{
    if (depth > 100)
        return NULL;
    Authzed__Api__V1__PermissionRelationshipTree *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__permission_relationship_tree__init(m);
    m->expanded_object = kw__grpc_object_msg(t->object, a);
    m->expanded_relation = kw_arena_strndup(a, t->relation.ptr, t->relation.len);
    if (!m->expanded_object || !m->expanded_relation)
        return NULL;
    if (t->kind == KW_EXPAND_LEAF) {
        Authzed__Api__V1__DirectSubjectSet *d = kw_arena_alloc(a, sizeof(*d));
        if (!d)
            return NULL;
        authzed__api__v1__direct_subject_set__init(d);
        d->subjects =
            t->n_subjects ? kw_arena_alloc(a, t->n_subjects * sizeof(*d->subjects)) : NULL;
        if (t->n_subjects && !d->subjects)
            return NULL;
        for (size_t i = 0; i < t->n_subjects; i++)
            if (!(d->subjects[i] = kw__grpc_subject_msg(&t->subjects[i], a)))
                return NULL;
        d->n_subjects = t->n_subjects;
        m->tree_type_case = AUTHZED__API__V1__PERMISSION_RELATIONSHIP_TREE__TREE_TYPE_LEAF;
        m->leaf = d;
        return m;
    }
    Authzed__Api__V1__AlgebraicSubjectSet *s = kw_arena_alloc(a, sizeof(*s));
    if (!s)
        return NULL;
    authzed__api__v1__algebraic_subject_set__init(s);
    s->operation = t->kind == KW_EXPAND_INTERSECTION
                       ? AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_INTERSECTION
                   : t->kind == KW_EXPAND_EXCLUSION
                       ? AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_EXCLUSION
                       : AUTHZED__API__V1__ALGEBRAIC_SUBJECT_SET__OPERATION__OPERATION_UNION;
    s->children = t->n_children ? kw_arena_alloc(a, t->n_children * sizeof(*s->children)) : NULL;
    if (t->n_children && !s->children)
        return NULL;
    for (size_t i = 0; i < t->n_children; i++)
        if (!(s->children[i] = tree_msg(t->children[i], a, depth + 1)))
            return NULL;
    s->n_children = t->n_children;
    m->tree_type_case = AUTHZED__API__V1__PERMISSION_RELATIONSHIP_TREE__TREE_TYPE_INTERMEDIATE;
    m->intermediate = s;
    return m;
}

void kw__grpc_rpc_expand(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__ExpandPermissionTreeRequest *req =
        (Authzed__Api__V1__ExpandPermissionTreeRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_expand_req_t r = {.arena = a};
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st) ||
        !kw__grpc_object(req->resource, "ExpandPermissionTreeRequest.Resource", &r.resource, st))
        goto out;
    r.permission = kw_str_c(req->permission);
    kw_v1_expand_resp_t resp;
    int rc = kw_v1_expand(kw__grpc_api(c), &r, &resp, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__ExpandPermissionTreeResponse m =
        AUTHZED__API__V1__EXPAND_PERMISSION_TREE_RESPONSE__INIT;
    m.expanded_at = kw__grpc_token(resp.expanded_at, a);
    m.tree_root = resp.tree ? tree_msg(resp.tree, a, 0) : NULL;
    if (!m.expanded_at || (resp.tree && !m.tree_root)) {
        kw__grpc_oom(st);
        goto out;
    }
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_arena_free(a);
}

/* ---- SchemaService ---- */

void kw__grpc_rpc_read_schema(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    (void)in; /* ReadSchemaRequest has no field */
    kw_arena_t *a = kw_arena_new(0);
    kw_buf_t text;
    kw_buf_init(&text);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_revision_t at = 0;
    int rc = kw_v1_read_schema(kw__grpc_api(c), &text, &at, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__ReadSchemaResponse m = AUTHZED__API__V1__READ_SCHEMA_RESPONSE__INIT;
    m.schema_text = text.ptr ? text.ptr : (char *)"";
    m.read_at = kw__grpc_token(at, a);
    if (text.failed || !m.read_at) {
        kw__grpc_oom(st);
        goto out;
    }
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_buf_free(&text);
    kw_arena_free(a);
}

void kw__grpc_rpc_write_schema(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__WriteSchemaRequest *req = (Authzed__Api__V1__WriteSchemaRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_revision_t at = 0;
    int rc =
        kw_v1_write_schema(kw__grpc_api(c), kw__grpc_caller(c), kw_str_c(req->schema), &at, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__WriteSchemaResponse m = AUTHZED__API__V1__WRITE_SCHEMA_RESPONSE__INIT;
    if (!(m.written_at = kw__grpc_token(at, a))) {
        kw__grpc_oom(st);
        goto out;
    }
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_arena_free(a);
}

/* ---- WatchService ---- */

static int emit_watch(void *ud, const kw_v1_watch_event_t *ev)
{
    emit_ctx_t *e = ud;
    if (ev->n_updates == 0 && !ev->is_checkpoint)
        return kw__grpc_alive(e->c); /* nothing to send: is the client still there? */
    kw_arena_reset(e->a);
    Authzed__Api__V1__WatchResponse m = AUTHZED__API__V1__WATCH_RESPONSE__INIT;
    m.changes_through = kw__grpc_token(ev->changes_through, e->a);
    m.is_checkpoint = ev->is_checkpoint;
    if (!m.changes_through)
        return KW_ENOMEM;
    if (ev->n_updates) {
        m.updates = kw_arena_alloc(e->a, ev->n_updates * sizeof(*m.updates));
        if (!m.updates)
            return KW_ENOMEM;
        for (size_t i = 0; i < ev->n_updates; i++) {
            Authzed__Api__V1__RelationshipUpdate *u = kw_arena_alloc(e->a, sizeof(*u));
            if (!u)
                return KW_ENOMEM;
            authzed__api__v1__relationship_update__init(u);
            u->operation = ev->updates[i].op == KW_OP_DELETE
                               ? AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE
                           : ev->updates[i].op == KW_OP_CREATE
                               ? AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_CREATE
                               : AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
            if (!(u->relationship = kw__grpc_rel_msg(&ev->updates[i].rel, e->a)))
                return KW_ENOMEM;
            m.updates[i] = u;
        }
        m.n_updates = ev->n_updates;
    }
    return kw__grpc_send(e->c, &m.base);
}

void kw__grpc_rpc_watch(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    Authzed__Api__V1__WatchRequest *req = (Authzed__Api__V1__WatchRequest *)in;
    kw_arena_t *a = kw_arena_new(0), *ra = kw_arena_new(0);
    if (!a || !ra) {
        kw__grpc_oom(st);
        goto out;
    }
    kw_v1_watch_req_t r = {.n_object_types = req->n_optional_object_types,
                           .n_filters = req->n_optional_relationship_filters};
    kw_str_t *types =
        r.n_object_types ? kw_arena_alloc(ra, r.n_object_types * sizeof(*types)) : NULL;
    kw_filter_t *filters = r.n_filters ? kw_arena_alloc(ra, r.n_filters * sizeof(*filters)) : NULL;
    kw_str_t *prefixes = r.n_filters ? kw_arena_alloc(ra, r.n_filters * sizeof(*prefixes)) : NULL;
    if ((r.n_object_types && !types) || (r.n_filters && (!filters || !prefixes))) {
        kw__grpc_oom(st);
        goto out;
    }
    for (size_t i = 0; i < r.n_object_types; i++)
        types[i] = kw_str_c(req->optional_object_types[i]);
    for (size_t i = 0; i < r.n_filters; i++)
        if (!kw__grpc_filter(req->optional_relationship_filters[i], &filters[i], &prefixes[i], st))
            goto out;
    r.object_types = types;
    r.filters = filters;
    r.id_prefixes = prefixes;
    if (req->optional_start_cursor) {
        r.has_start = true;
        if (!req->optional_start_cursor->token ||
            !kw_api_parse_revision(kw_str_c(req->optional_start_cursor->token), &r.start)) {
            kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                       "invalid zedtoken: not a token this server minted");
            goto out;
        }
    }
    r.relationship_kinds = req->n_optional_update_kinds == 0;
    for (size_t i = 0; i < req->n_optional_update_kinds; i++) {
        switch (req->optional_update_kinds[i]) {
        case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_UNSPECIFIED:
        case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES:
            r.relationship_kinds = true;
            break;
        case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_SCHEMA_UPDATES:
            r.schema_updates = true;
            break;
        case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_CHECKPOINTS:
            r.checkpoints = true;
            break;
        default:
            kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                       "invalid WatchRequest.OptionalUpdateKinds: not a defined WatchKind");
            goto out;
        }
    }
    emit_ctx_t e = {c, a};
    kw__grpc_finish(kw_v1_watch(kw__grpc_api(c), &r, emit_watch, &e, st), st);
out:
    kw_arena_free(a);
    kw_arena_free(ra);
}

/* ---- grpc.health.v1 ---- */

/* "" (the server) and the services served are SERVING; anything else NOT_FOUND. */
static bool health_known(const char *svc)
{
    static const char *const known[] = {"",
                                        "authzed.api.v1.PermissionsService",
                                        "authzed.api.v1.SchemaService",
                                        "authzed.api.v1.WatchService",
                                        "authzed.api.v1.ExperimentalService",
                                        "grpc.reflection.v1.ServerReflection",
                                        "grpc.reflection.v1alpha.ServerReflection"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(svc ? svc : "", known[i]) == 0)
            return true;
    return false;
}

static void health(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st, bool watch)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (Grpc__Health__V1__HealthCheckRequest *)in;
    bool known = health_known(req->service);
    Grpc__Health__V1__HealthCheckResponse m = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    if (!known && !watch) {
        kw_v1_fail(st, KW_ENOTFOUND, KW_GRPC_NOT_FOUND, NULL, "unknown service");
        return;
    }
    m.status = known ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    int rc = kw__grpc_send(c, &m.base);
    /* Watch: the status never changes while the server runs; the stream stays open until
     * the client cancels or the deadline passes. */
    while (watch && rc == KW_OK) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        rc = kw__grpc_alive(c);
    }
    kw__grpc_finish(rc, st);
}

void kw__grpc_rpc_health_check(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    health(c, in, st, false);
}

void kw__grpc_rpc_health_watch(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
{
    health(c, in, st, true);
}

/* ---- the table: one row per method ---- */

#define PS "/authzed.api.v1.PermissionsService/"
#define SS "/authzed.api.v1.SchemaService/"
#define ES "/authzed.api.v1.ExperimentalService/"
#define D(m) (&m##__descriptor)
#define COUNTERS                                                                                   \
    "keyward does not implement relationship counters (ExperimentalService's "                     \
    "RegisterRelationshipCounter, CountRelationships, UnregisterRelationshipCounter)"
/* ExperimentalService's rows decode their requests with the PermissionsService /
 * SchemaService descriptor of the same wire shape (experimental_service.proto) and share
 * its handler: an alias is only a row. kw_test_grpc's
 * grpc_experimental_messages_are_wire_identical holds the shapes together. */
static const kw__grpc_rpc_t rpcs[] = {
    {PS "CheckPermission", D(authzed__api__v1__check_permission_request), kw__grpc_rpc_check,
     KW__GRPC_UNARY, false, NULL},
    {PS "CheckBulkPermissions", D(authzed__api__v1__check_bulk_permissions_request),
     kw__grpc_rpc_check_bulk, KW__GRPC_UNARY, false, NULL},
    {PS "WriteRelationships", D(authzed__api__v1__write_relationships_request), kw__grpc_rpc_write,
     KW__GRPC_UNARY, false, NULL},
    {PS "DeleteRelationships", D(authzed__api__v1__delete_relationships_request),
     kw__grpc_rpc_delete, KW__GRPC_UNARY, false, NULL},
    {PS "ReadRelationships", D(authzed__api__v1__read_relationships_request), kw__grpc_rpc_read,
     KW__GRPC_SERVER_STREAM, false, NULL},
    {PS "LookupResources", D(authzed__api__v1__lookup_resources_request),
     kw__grpc_rpc_lookup_resources, KW__GRPC_SERVER_STREAM, false, NULL},
    {PS "LookupSubjects", D(authzed__api__v1__lookup_subjects_request),
     kw__grpc_rpc_lookup_subjects, KW__GRPC_SERVER_STREAM, false, NULL},
    {PS "ExpandPermissionTree", D(authzed__api__v1__expand_permission_tree_request),
     kw__grpc_rpc_expand, KW__GRPC_UNARY, false, NULL},
    {PS "ImportBulkRelationships", D(authzed__api__v1__import_bulk_relationships_request),
     kw__grpc_rpc_import_bulk, KW__GRPC_CLIENT_STREAM, false, NULL},
    {PS "ExportBulkRelationships", D(authzed__api__v1__export_bulk_relationships_request),
     kw__grpc_rpc_export_bulk, KW__GRPC_SERVER_STREAM, false, NULL},
    {SS "ReadSchema", D(authzed__api__v1__read_schema_request), kw__grpc_rpc_read_schema,
     KW__GRPC_UNARY, false, NULL},
    {SS "WriteSchema", D(authzed__api__v1__write_schema_request), kw__grpc_rpc_write_schema,
     KW__GRPC_UNARY, false, NULL},
    {SS "ReflectSchema", D(authzed__api__v1__reflect_schema_request), kw__grpc_rpc_reflect_schema,
     KW__GRPC_UNARY, false, NULL},
    {SS "ComputablePermissions", D(authzed__api__v1__computable_permissions_request),
     kw__grpc_rpc_computable_permissions, KW__GRPC_UNARY, false, NULL},
    {SS "DependentRelations", D(authzed__api__v1__dependent_relations_request),
     kw__grpc_rpc_dependent_relations, KW__GRPC_UNARY, false, NULL},
    {SS "DiffSchema", D(authzed__api__v1__diff_schema_request), kw__grpc_rpc_diff_schema,
     KW__GRPC_UNARY, false, NULL},
    {"/authzed.api.v1.WatchService/Watch", D(authzed__api__v1__watch_request), kw__grpc_rpc_watch,
     KW__GRPC_SERVER_STREAM, false, NULL},
    {ES "BulkImportRelationships", D(authzed__api__v1__import_bulk_relationships_request),
     kw__grpc_rpc_import_bulk, KW__GRPC_CLIENT_STREAM, false, NULL},
    {ES "BulkExportRelationships", D(authzed__api__v1__export_bulk_relationships_request),
     kw__grpc_rpc_export_bulk, KW__GRPC_SERVER_STREAM, false, NULL},
    {ES "BulkCheckPermission", D(authzed__api__v1__check_bulk_permissions_request),
     kw__grpc_rpc_check_bulk, KW__GRPC_UNARY, false, NULL},
    {ES "ExperimentalReflectSchema", D(authzed__api__v1__reflect_schema_request),
     kw__grpc_rpc_reflect_schema, KW__GRPC_UNARY, false, NULL},
    {ES "ExperimentalComputablePermissions", D(authzed__api__v1__computable_permissions_request),
     kw__grpc_rpc_computable_permissions, KW__GRPC_UNARY, false, NULL},
    {ES "ExperimentalDependentRelations", D(authzed__api__v1__dependent_relations_request),
     kw__grpc_rpc_dependent_relations, KW__GRPC_UNARY, false, NULL},
    {ES "ExperimentalDiffSchema", D(authzed__api__v1__diff_schema_request),
     kw__grpc_rpc_diff_schema, KW__GRPC_UNARY, false, NULL},
    {ES "ExperimentalRegisterRelationshipCounter",
     D(authzed__api__v1__experimental_register_relationship_counter_request), NULL, KW__GRPC_UNARY,
     false, COUNTERS},
    {ES "ExperimentalCountRelationships",
     D(authzed__api__v1__experimental_count_relationships_request), NULL, KW__GRPC_UNARY, false,
     COUNTERS},
    {ES "ExperimentalUnregisterRelationshipCounter",
     D(authzed__api__v1__experimental_unregister_relationship_counter_request), NULL,
     KW__GRPC_UNARY, false, COUNTERS},
    {"/grpc.health.v1.Health/Check", D(grpc__health__v1__health_check_request),
     kw__grpc_rpc_health_check, KW__GRPC_UNARY, true, NULL},
    {"/grpc.health.v1.Health/Watch", D(grpc__health__v1__health_check_request),
     kw__grpc_rpc_health_watch, KW__GRPC_SERVER_STREAM, true, NULL},
    /* v1alpha is v1's wire under another package: one handler, v1's messages. */
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
     D(grpc__reflection__v1__server_reflection_request), kw__grpc_rpc_reflection, KW__GRPC_BIDI,
     true, NULL},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
     D(grpc__reflection__v1__server_reflection_request), kw__grpc_rpc_reflection, KW__GRPC_BIDI,
     true, NULL},
};

const kw__grpc_rpc_t *kw__grpc_rpcs(size_t *n)
{
    *n = sizeof(rpcs) / sizeof(rpcs[0]);
    return rpcs;
}

const kw__grpc_rpc_t *kw__grpc_find(const char *path, size_t n)
{
    for (size_t i = 0; i < sizeof(rpcs) / sizeof(rpcs[0]); i++)
        if (strlen(rpcs[i].path) == n && memcmp(rpcs[i].path, path, n) == 0)
            return &rpcs[i];
    return NULL;
}

void kw__grpc_invoke(const kw__grpc_rpc_t *rpc, kw__grpc_call_t *c, const uint8_t *msg, size_t len,
                     kw_v1_status_t *st)
{
    if (!rpc->fn) {
        kw_v1_fail(st, KW_EUNSUPPORTED, KW_GRPC_UNIMPLEMENTED, NULL, "%s", rpc->unimplemented);
        return;
    }
    if (kw__grpc_streams_in(rpc)) {
        rpc->fn(c, NULL, st);
        return;
    }
    /* Decoded into the call's arena: no malloc per field (see kw__grpc_allocator). */
    ProtobufCMessage *req = protobuf_c_message_unpack(rpc->in, kw__grpc_allocator(c), len, msg);
    if (!req) {
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL, "cannot decode %s",
                   rpc->in->short_name);
        return;
    }
    rpc->fn(c, req, st);
    /* No free_unpacked: it would walk the message to free nothing; the arena goes with the
     * call. */
}

ProtobufCMessage *kw__grpc_recv_msg(kw__grpc_call_t *c, const ProtobufCMessageDescriptor *d,
                                    int *rc, kw_v1_status_t *st)
{
    const uint8_t *msg = NULL;
    size_t len = 0;
    *rc = kw__grpc_recv(c, &msg, &len);
    if (*rc == KW_ENOTFOUND)
        return NULL;
    if (*rc == KW_EUNSUPPORTED)
        kw_v1_fail(st, *rc, KW_GRPC_UNIMPLEMENTED, NULL, "compressed messages are not supported");
    else if (*rc == KW_ETOOLARGE)
        kw_v1_fail(st, *rc, KW_GRPC_RESOURCE_EXHAUSTED, NULL,
                   "request message larger than %u bytes", KW_GRPC_MAX_MSG);
    else if (*rc == KW_EINVAL)
        kw_v1_fail(st, *rc, KW_GRPC_INTERNAL, NULL, "the request stream ended inside a message");
    else if (*rc == KW_ELIMIT)
        kw_v1_fail(st, *rc, KW_GRPC_DEADLINE_EXCEEDED, NULL,
                   "no request message for %d s: the stream is closed", KW_GRPC_STALL_MS / 1000);
    else if (*rc != KW_OK)
        kw__grpc_finish(*rc, st);
    if (*rc != KW_OK)
        return NULL;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, msg);
    if (!m) {
        *rc = KW_EINVAL;
        kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL, "cannot decode %s",
                   d->short_name);
    }
    return m;
}
