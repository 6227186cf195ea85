/*
 * grpc/rpc_more.c - the handlers of PermissionsService's ImportBulkRelationships (client
 * streaming) and ExportBulkRelationships (server streaming), and SchemaService's
 * ReflectSchema, ComputablePermissions, DependentRelations and DiffSchema; the
 * ExperimentalService aliases are rows of rpc.c's table that name these same handlers.
 * As everywhere in the codec (tag-kw-grpc-codec): decode, call the service layer
 * (api/v1svc_more.h), encode. No answer is decided here.
 */
#include <string.h>

#include "api/v1svc_more.h"
#include "authzed/api/v1/schema_service.pb-c.h"
#include "rpc_int.h"

#define KW_MODULE "grpc"

/* ---- ImportBulkRelationships ---- */

/* The service layer pulls relationships with `next`; each comes from the request message
 * being read, the next message is read (and the previous freed) when one is used up. The
 * service copies a relationship before it asks for the next, so only one message is held. */
typedef struct import_ctx {
    kw__grpc_call_t *c;
    Authzed__Api__V1__ImportBulkRelationshipsRequest *msg;
    size_t i;
    kw_arena_t *a; /* conversions of the message being read */
    bool failed;   /* the stream or a message failed: err says how */
    kw_v1_status_t err;
} import_ctx_t;

static int import_next(void *ud, kw_rel_t *rel, kw_diag_t *diag)
{
    import_ctx_t *x = ud;
    while (!x->msg || x->i == x->msg->n_relationships) {
        if (x->msg)
            protobuf_c_message_free_unpacked(&x->msg->base, NULL);
        x->msg = NULL;
        kw_arena_reset(x->a);
        int rc;
        x->msg = (Authzed__Api__V1__ImportBulkRelationshipsRequest *)kw__grpc_recv_msg(
            x->c, &authzed__api__v1__import_bulk_relationships_request__descriptor, &rc, &x->err);
        if (rc == KW_ENOTFOUND)
            return KW_ENOTFOUND;
        if (rc != KW_OK) {
            x->failed = true;
            return kw_diag_set(diag, rc, 0, 0, "%s", x->err.msg);
        }
        x->i = 0;
    }
    if (!kw__grpc_rel(x->msg->relationships[x->i], x->a, rel, &x->err)) {
        x->failed = true;
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "%s", x->err.msg);
    }
    x->i++;
    return KW_OK;
}

/* Right before the import commits: a stream the client cancelled (or whose deadline
 * passed) after sending its last message rolls the import back. */
static int import_alive(void *ud)
{
    import_ctx_t *x = ud;
    return kw__grpc_alive(x->c);
}

KW__GRPC_HANDLER(import_bulk)
{
    (void)in; /* the requests stream in */
    import_ctx_t x = {c, NULL, 0, kw_arena_new(0), false, {0}};
    kw_v1_status_clear(&x.err);
    if (!x.a) {
        kw__grpc_oom(st);
        return;
    }
    uint64_t n = 0;
    kw_revision_t at = 0;
    int rc = kw_v1_import_bulk(kw__grpc_api(c), import_next, import_alive, &x, &n, &at, st);
    if (rc != KW_OK && x.failed && x.err.code != KW_GRPC_OK) {
        /* The transport's own failure (a cancelled stream, a message that does not
         * decode, a deadline) says more than the service's generic one. */
        *st = x.err;
    } else if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
    } else {
        Authzed__Api__V1__ImportBulkRelationshipsResponse m =
            AUTHZED__API__V1__IMPORT_BULK_RELATIONSHIPS_RESPONSE__INIT;
        m.num_loaded = n;
        kw__grpc_finish(kw__grpc_send(c, &m.base), st);
    }
    if (x.msg)
        protobuf_c_message_free_unpacked(&x.msg->base, NULL);
    kw_arena_free(x.a);
}

/* ---- ExportBulkRelationships ---- */

typedef struct export_ctx {
    kw__grpc_call_t *c;
    kw_arena_t *a; /* reset per batch */
} export_ctx_t;

static int emit_export(void *ud, const kw_v1_export_batch_t *b)
{
    export_ctx_t *e = ud;
    kw_arena_reset(e->a);
    Authzed__Api__V1__ExportBulkRelationshipsResponse m =
        AUTHZED__API__V1__EXPORT_BULK_RELATIONSHIPS_RESPONSE__INIT;
    m.after_result_cursor = kw__grpc_cursor(b->cursor, e->a);
    m.relationships = b->n_rels ? kw_arena_alloc(e->a, b->n_rels * sizeof(*m.relationships)) : NULL;
    if ((b->cursor && !m.after_result_cursor) || (b->n_rels && !m.relationships))
        return KW_ENOMEM;
    for (size_t i = 0; i < b->n_rels; i++)
        if (!(m.relationships[i] = kw__grpc_rel_msg(&b->rels[i], e->a)))
            return KW_ENOMEM;
    m.n_relationships = b->n_rels;
    return kw__grpc_send(e->c, &m.base);
}

KW__GRPC_HANDLER(export_bulk)
{
    const Authzed__Api__V1__ExportBulkRelationshipsRequest *req =
        (Authzed__Api__V1__ExportBulkRelationshipsRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        return;
    }
    kw_v1_export_req_t r;
    memset(&r, 0, sizeof(r));
    r.limit = req->optional_limit;
    r.has_filter = req->optional_relationship_filter != NULL;
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st) ||
        (r.has_filter &&
         !kw__grpc_filter(req->optional_relationship_filter, &r.filter, &r.resource_id_prefix, st)))
        goto out;
    if (req->optional_cursor && req->optional_cursor->token)
        r.cursor = kw_str_c(req->optional_cursor->token);
    export_ctx_t e = {c, a};
    kw__grpc_finish(kw_v1_export_bulk(kw__grpc_api(c), &r, emit_export, &e, st), st);
out:
    kw_arena_free(a);
}

/* ---- SchemaService: reflection ---- */

/* An arena copy of s, NUL-terminated ("" for none); NULL when out of memory. */
static char *str(kw_arena_t *a, kw_str_t s)
{
    return kw_arena_strndup(a, s.ptr ? s.ptr : "", s.len);
}

static Authzed__Api__V1__ReflectionTypeReference *type_msg(const kw_reflect_type_t *t,
                                                           kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionTypeReference *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__reflection_type_reference__init(m);
    if (!(m->subject_definition_name = str(a, t->def)) ||
        !(m->optional_caveat_name = str(a, t->caveat)))
        return NULL;
    if (t->wildcard) {
        m->typeref_case = AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_IS_PUBLIC_WILDCARD;
        m->is_public_wildcard = true;
    } else if (t->rel.len) {
        m->typeref_case =
            AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_OPTIONAL_RELATION_NAME;
        if (!(m->optional_relation_name = str(a, t->rel)))
            return NULL;
    } else {
        m->typeref_case = AUTHZED__API__V1__REFLECTION_TYPE_REFERENCE__TYPEREF_IS_TERMINAL_SUBJECT;
        m->is_terminal_subject = true;
    }
    return m;
}

static Authzed__Api__V1__ReflectionRelation *rel_msg(const kw_reflect_rel_t *r, kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionRelation *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__reflection_relation__init(m);
    if (!(m->name = str(a, r->name)) || !(m->comment = str(a, r->comment)) ||
        !(m->parent_definition_name = str(a, r->parent)))
        return NULL;
    m->subject_types =
        r->n_types ? kw_arena_alloc(a, r->n_types * sizeof(*m->subject_types)) : NULL;
    if (r->n_types && !m->subject_types)
        return NULL;
    for (size_t i = 0; i < r->n_types; i++)
        if (!(m->subject_types[i] = type_msg(&r->types[i], a)))
            return NULL;
    m->n_subject_types = r->n_types;
    return m;
}

static Authzed__Api__V1__ReflectionPermission *perm_msg(const kw_reflect_rel_t *r, kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionPermission *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__reflection_permission__init(m);
    if (!(m->name = str(a, r->name)) || !(m->comment = str(a, r->comment)) ||
        !(m->parent_definition_name = str(a, r->parent)))
        return NULL;
    return m;
}

static Authzed__Api__V1__ReflectionDefinition *def_msg(const kw_reflect_def_t *d, kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionDefinition *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__reflection_definition__init(m);
    if (!(m->name = str(a, d->name)) || !(m->comment = str(a, d->comment)))
        return NULL;
    m->relations = d->n_rels ? kw_arena_alloc(a, d->n_rels * sizeof(*m->relations)) : NULL;
    m->permissions = d->n_perms ? kw_arena_alloc(a, d->n_perms * sizeof(*m->permissions)) : NULL;
    if ((d->n_rels && !m->relations) || (d->n_perms && !m->permissions))
        return NULL;
    for (size_t i = 0; i < d->n_rels; i++)
        if (!(m->relations[i] = rel_msg(&d->rels[i], a)))
            return NULL;
    for (size_t i = 0; i < d->n_perms; i++)
        if (!(m->permissions[i] = perm_msg(&d->perms[i], a)))
            return NULL;
    m->n_relations = d->n_rels;
    m->n_permissions = d->n_perms;
    return m;
}

static Authzed__Api__V1__ReflectionCaveatParameter *param_msg(const kw_reflect_param_t *p,
                                                              kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionCaveatParameter *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__reflection_caveat_parameter__init(m);
    if (!(m->name = str(a, p->name)) || !(m->type = str(a, p->type)) ||
        !(m->parent_caveat_name = str(a, p->parent)))
        return NULL;
    return m;
}

static Authzed__Api__V1__ReflectionCaveat *caveat_msg(const kw_reflect_caveat_t *cv, kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionCaveat *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__reflection_caveat__init(m);
    if (!(m->name = str(a, cv->name)) || !(m->comment = str(a, cv->comment)) ||
        !(m->expression = str(a, cv->expression)))
        return NULL;
    m->parameters = cv->n_params ? kw_arena_alloc(a, cv->n_params * sizeof(*m->parameters)) : NULL;
    if (cv->n_params && !m->parameters)
        return NULL;
    for (size_t i = 0; i < cv->n_params; i++)
        if (!(m->parameters[i] = param_msg(&cv->params[i], a)))
            return NULL;
    m->n_parameters = cv->n_params;
    return m;
}

KW__GRPC_HANDLER(reflect_schema)
{
    const Authzed__Api__V1__ReflectSchemaRequest *req =
        (Authzed__Api__V1__ReflectSchemaRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        return;
    }
    kw_v1_reflect_req_t r = {.arena = a, .n_filters = req->n_optional_filters};
    kw_reflect_filter_t *f = r.n_filters ? kw_arena_alloc(a, r.n_filters * sizeof(*f)) : NULL;
    if (r.n_filters && !f) {
        kw__grpc_oom(st);
        goto out;
    }
    for (size_t i = 0; i < r.n_filters; i++) {
        const Authzed__Api__V1__ReflectionSchemaFilter *pf = req->optional_filters[i];
        f[i] = (kw_reflect_filter_t){kw_str_c(pf->optional_definition_name_filter),
                                     kw_str_c(pf->optional_relation_name_filter),
                                     kw_str_c(pf->optional_permission_name_filter),
                                     kw_str_c(pf->optional_caveat_name_filter)};
    }
    r.filters = f;
    kw_v1_reflect_resp_t resp;
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st))
        goto out;
    int rc = kw_v1_reflect_schema(kw__grpc_api(c), &r, &resp, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__ReflectSchemaResponse m = AUTHZED__API__V1__REFLECT_SCHEMA_RESPONSE__INIT;
    m.read_at = kw__grpc_token(resp.read_at, a);
    m.definitions = resp.n_defs ? kw_arena_alloc(a, resp.n_defs * sizeof(*m.definitions)) : NULL;
    m.caveats = resp.n_caveats ? kw_arena_alloc(a, resp.n_caveats * sizeof(*m.caveats)) : NULL;
    bool ok = m.read_at && (!resp.n_defs || m.definitions) && (!resp.n_caveats || m.caveats);
    for (size_t i = 0; ok && i < resp.n_defs; i++)
        ok = (m.definitions[i] = def_msg(&resp.defs[i], a)) != NULL;
    for (size_t i = 0; ok && i < resp.n_caveats; i++)
        ok = (m.caveats[i] = caveat_msg(&resp.caveats[i], a)) != NULL;
    if (!ok) {
        kw__grpc_oom(st);
        goto out;
    }
    m.n_definitions = resp.n_defs;
    m.n_caveats = resp.n_caveats;
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_arena_free(a);
}

/* The references of ComputablePermissions / DependentRelations (same wire shape). */
static Authzed__Api__V1__ReflectionRelationReference **refs_msg(const kw_v1_relref_resp_t *resp,
                                                                kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionRelationReference **out =
        kw_arena_alloc(a, (resp->n_refs ? resp->n_refs : 1) * sizeof(*out));
    if (!out)
        return NULL;
    for (size_t i = 0; i < resp->n_refs; i++) {
        Authzed__Api__V1__ReflectionRelationReference *m = kw_arena_alloc(a, sizeof(*m));
        if (!m)
            return NULL;
        authzed__api__v1__reflection_relation_reference__init(m);
        if (!(m->definition_name = str(a, resp->refs[i].def)) ||
            !(m->relation_name = str(a, resp->refs[i].rel)))
            return NULL;
        m->is_permission = resp->refs[i].is_permission;
        out[i] = m;
    }
    return out;
}

static void relref(kw__grpc_call_t *c, const Authzed__Api__V1__Consistency *cons, const char *def,
                   const char *rel, const char *filter, bool dependent, kw_v1_status_t *st)
{
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        return;
    }
    kw_v1_relref_req_t r = {.definition = kw_str_c(def),
                            .relation = kw_str_c(rel),
                            .definition_filter = kw_str_c(filter),
                            .arena = a};
    kw_v1_relref_resp_t resp;
    if (!kw__grpc_await(c, cons, &r.consistency, st))
        goto out;
    int rc = dependent ? kw_v1_dependent_relations(kw__grpc_api(c), &r, &resp, st)
                       : kw_v1_computable_permissions(kw__grpc_api(c), &r, &resp, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__ReflectionRelationReference **refs = refs_msg(&resp, a);
    Authzed__Api__V1__ZedToken *at = kw__grpc_token(resp.read_at, a);
    if (!refs || !at) {
        kw__grpc_oom(st);
        goto out;
    }
    if (dependent) {
        Authzed__Api__V1__DependentRelationsResponse m =
            AUTHZED__API__V1__DEPENDENT_RELATIONS_RESPONSE__INIT;
        m.relations = refs;
        m.n_relations = resp.n_refs;
        m.read_at = at;
        kw__grpc_finish(kw__grpc_send(c, &m.base), st);
    } else {
        Authzed__Api__V1__ComputablePermissionsResponse m =
            AUTHZED__API__V1__COMPUTABLE_PERMISSIONS_RESPONSE__INIT;
        m.permissions = refs;
        m.n_permissions = resp.n_refs;
        m.read_at = at;
        kw__grpc_finish(kw__grpc_send(c, &m.base), st);
    }
out:
    kw_arena_free(a);
}

KW__GRPC_HANDLER(computable_permissions)
{
    const Authzed__Api__V1__ComputablePermissionsRequest *req =
        (Authzed__Api__V1__ComputablePermissionsRequest *)in;
    relref(c, req->consistency, req->definition_name, req->relation_name,
           req->optional_definition_name_filter, false, st);
}

KW__GRPC_HANDLER(dependent_relations)
{
    const Authzed__Api__V1__DependentRelationsRequest *req =
        (Authzed__Api__V1__DependentRelationsRequest *)in;
    relref(c, req->consistency, req->definition_name, req->permission_name, "", true, st);
}

/* One ReflectionSchemaDiff: the oneof's field numbers are kw_schema_diff_kind_t's values
 * (authz.h lists the kinds in SpiceDB's order, 1 to 19). */
static Authzed__Api__V1__ReflectionSchemaDiff *diff_msg(const kw_schema_diff_t *d, kw_arena_t *a)
{
    Authzed__Api__V1__ReflectionSchemaDiff *m = kw_arena_alloc(a, sizeof(*m));
    if (!m)
        return NULL;
    authzed__api__v1__reflection_schema_diff__init(m);
    m->diff_case = (Authzed__Api__V1__ReflectionSchemaDiff__DiffCase)d->kind;
    void *v = NULL;
    switch (d->kind) {
    case KW_DIFF_DEF_ADDED:
    case KW_DIFF_DEF_REMOVED:
    case KW_DIFF_DEF_DOC_CHANGED:
        v = m->definition_added = def_msg(d->def, a);
        break;
    case KW_DIFF_REL_ADDED:
    case KW_DIFF_REL_REMOVED:
    case KW_DIFF_REL_DOC_CHANGED:
        v = m->relation_added = rel_msg(d->rel, a);
        break;
    case KW_DIFF_REL_TYPE_ADDED:
    case KW_DIFF_REL_TYPE_REMOVED: {
        Authzed__Api__V1__ReflectionRelationSubjectTypeChange *t = kw_arena_alloc(a, sizeof(*t));
        if (!t)
            return NULL;
        authzed__api__v1__reflection_relation_subject_type_change__init(t);
        if (!(t->relation = rel_msg(d->rel, a)) ||
            !(t->changed_subject_type = type_msg(&d->type, a)))
            return NULL;
        v = m->relation_subject_type_added = t;
        break;
    }
    case KW_DIFF_PERM_ADDED:
    case KW_DIFF_PERM_REMOVED:
    case KW_DIFF_PERM_DOC_CHANGED:
    case KW_DIFF_PERM_EXPR_CHANGED:
        v = m->permission_added = perm_msg(d->rel, a);
        break;
    case KW_DIFF_CAVEAT_ADDED:
    case KW_DIFF_CAVEAT_REMOVED:
    case KW_DIFF_CAVEAT_DOC_CHANGED:
    case KW_DIFF_CAVEAT_EXPR_CHANGED:
        v = m->caveat_added = caveat_msg(d->caveat, a);
        break;
    case KW_DIFF_CAVEAT_PARAM_ADDED:
    case KW_DIFF_CAVEAT_PARAM_REMOVED:
        v = m->caveat_parameter_added = param_msg(d->param, a);
        break;
    case KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED: {
        Authzed__Api__V1__ReflectionCaveatParameterTypeChange *t = kw_arena_alloc(a, sizeof(*t));
        if (!t)
            return NULL;
        authzed__api__v1__reflection_caveat_parameter_type_change__init(t);
        if (!(t->parameter = param_msg(d->param, a)) ||
            !(t->previous_type = str(a, d->previous_type)))
            return NULL;
        v = m->caveat_parameter_type_changed = t;
        break;
    }
    }
    return v ? m : NULL;
}

KW__GRPC_HANDLER(diff_schema)
{
    const Authzed__Api__V1__DiffSchemaRequest *req = (Authzed__Api__V1__DiffSchemaRequest *)in;
    kw_arena_t *a = kw_arena_new(0);
    if (!a) {
        kw__grpc_oom(st);
        return;
    }
    kw_v1_diff_req_t r = {.comparison_schema = kw_str_c(req->comparison_schema), .arena = a};
    kw_v1_diff_resp_t resp;
    if (!kw__grpc_await(c, req->consistency, &r.consistency, st))
        goto out;
    int rc = kw_v1_diff_schema(kw__grpc_api(c), &r, &resp, st);
    if (rc != KW_OK) {
        kw__grpc_finish(rc, st);
        goto out;
    }
    Authzed__Api__V1__DiffSchemaResponse m = AUTHZED__API__V1__DIFF_SCHEMA_RESPONSE__INIT;
    m.read_at = kw__grpc_token(resp.read_at, a);
    m.diffs = resp.n_diffs ? kw_arena_alloc(a, resp.n_diffs * sizeof(*m.diffs)) : NULL;
    bool ok = m.read_at && (!resp.n_diffs || m.diffs);
    for (size_t i = 0; ok && i < resp.n_diffs; i++)
        ok = (m.diffs[i] = diff_msg(&resp.diffs[i], a)) != NULL;
    if (!ok) {
        kw__grpc_oom(st);
        goto out;
    }
    m.n_diffs = resp.n_diffs;
    kw__grpc_finish(kw__grpc_send(c, &m.base), st);
out:
    kw_arena_free(a);
}
