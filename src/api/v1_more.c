/*
 * api/v1_more.c - the JSON codec of the RPCs of v1svc_more.h: SchemaService's
 * ReflectSchema (/v1/schema/reflectschema), ComputablePermissions
 * (/v1/schema/permissions/computable), DependentRelations (/v1/schema/permissions/dependent)
 * and DiffSchema (/v1/schema/diffschema); WatchService's Watch (/v1/watch, streamed);
 * PermissionsService's ExportBulkRelationships (/v1/relationships/exportbulk, streamed) and
 * ImportBulkRelationships (/v1/relationships/importbulk). The experimental service's
 * aliases of the same shapes (/v1/experimental/...) are the same handlers (routes.c).
 * Each handler decodes, calls the service and encodes; nothing else.
 *
 * ImportBulkRelationships is client-streaming in gRPC; over the gateway its body is a
 * sequence of ImportBulkRelationshipsRequest messages, newline-delimited (or any
 * whitespace), or one JSON array of them. The route streams its body
 * (KW_HTTP_ROUTE_STREAM_BODY): messages are cut out of it as it arrives and fed to the
 * import one relationship at a time, so an import of any size (up to the server's
 * KW_MAX_STREAM_BODY_BYTES) is one request, one transaction, in bounded memory.
 */
#include <inttypes.h>
#include <string.h>

#include "v1_int.h"
#include "v1svc_more.h"

#define KW_MODULE "v1"

/* ---- schema reflection ---- */

static const char *const FILTER_FIELDS[] = {
    "optionalDefinitionNameFilter", "optionalCaveatNameFilter", "optionalRelationNameFilter",
    "optionalPermissionNameFilter", NULL};
static const char *const REFLECT_FIELDS[] = {"consistency", "optionalFilters", NULL};
static const kw__v1_msg_t REFLECT_MSG = {"ReflectSchemaRequest", REFLECT_FIELDS};
static const char *const COMPUTABLE_FIELDS[] = {"consistency", "definitionName", "relationName",
                                                "optionalDefinitionNameFilter", NULL};
static const kw__v1_msg_t COMPUTABLE_MSG = {"ComputablePermissionsRequest", COMPUTABLE_FIELDS};
static const char *const DEPENDENT_FIELDS[] = {"consistency", "definitionName", "permissionName",
                                               NULL};
static const kw__v1_msg_t DEPENDENT_MSG = {"DependentRelationsRequest", DEPENDENT_FIELDS};
static const char *const DIFF_FIELDS[] = {"consistency", "comparisonSchema", NULL};
static const kw__v1_msg_t DIFF_MSG = {"DiffSchemaRequest", DIFF_FIELDS};

static json_t *type_json(const kw_reflect_type_t *t)
{
    json_t *o = json_pack("{s:o, s:o}", "subjectDefinitionName", kw__v1_strj(t->def),
                          "optionalCaveatName", kw__v1_strj(t->caveat));
    if (!o)
        return NULL;
    int rc;
    if (t->wildcard)
        rc = json_object_set_new(o, "isPublicWildcard", json_true());
    else if (t->rel.len)
        rc = json_object_set_new(o, "optionalRelationName", kw__v1_strj(t->rel));
    else
        rc = json_object_set_new(o, "isTerminalSubject", json_true());
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *rel_json(const kw_reflect_rel_t *r)
{
    json_t *o = json_pack("{s:o, s:o, s:o}", "name", kw__v1_strj(r->name), "comment",
                          kw__v1_strj(r->comment), "parentDefinitionName", kw__v1_strj(r->parent));
    if (!o || r->is_permission)
        return o;
    json_t *types = json_array();
    for (size_t i = 0; types && i < r->n_types; i++)
        if (json_array_append_new(types, type_json(&r->types[i])) != 0) {
            json_decref(types);
            types = NULL;
        }
    if (!types || json_object_set_new(o, "subjectTypes", types) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *rels_json(const kw_reflect_rel_t *r, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, rel_json(&r[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *def_json(const kw_reflect_def_t *d)
{
    return json_pack("{s:o, s:o, s:o, s:o}", "name", kw__v1_strj(d->name), "comment",
                     kw__v1_strj(d->comment), "relations", rels_json(d->rels, d->n_rels),
                     "permissions", rels_json(d->perms, d->n_perms));
}

static json_t *param_json(const kw_reflect_param_t *p)
{
    return json_pack("{s:o, s:o, s:o}", "name", kw__v1_strj(p->name), "type", kw__v1_strj(p->type),
                     "parentCaveatName", kw__v1_strj(p->parent));
}

static json_t *caveat_json(const kw_reflect_caveat_t *c)
{
    json_t *params = json_array();
    for (size_t i = 0; params && i < c->n_params; i++)
        if (json_array_append_new(params, param_json(&c->params[i])) != 0) {
            json_decref(params);
            params = NULL;
        }
    return params ? json_pack("{s:o, s:o, s:o, s:o}", "name", kw__v1_strj(c->name), "comment",
                              kw__v1_strj(c->comment), "parameters", params, "expression",
                              kw__v1_strj(c->expression))
                  : NULL;
}

static bool parse_filters(json_t *arr, kw_arena_t *a, kw_reflect_filter_t **out, size_t *n,
                          kw__v1_perr_t *e)
{
    *out = NULL;
    *n = 0;
    if (!arr || json_is_null(arr))
        return true;
    if (!json_is_array(arr))
        return kw__v1_bad(e, "optionalFilters must be an array");
    size_t len = json_array_size(arr);
    kw_reflect_filter_t *f = len ? kw_arena_alloc(a, len * sizeof(*f)) : NULL;
    if (len && !f)
        return kw__v1_bad(e, "out of memory");
    for (size_t i = 0; i < len; i++) {
        json_t *o = json_array_get(arr, i);
        memset(&f[i], 0, sizeof(f[i]));
        if (!json_is_object(o))
            return kw__v1_bad(e, "optionalFilters[] must be objects");
        if (!kw__v1_known(o, "ReflectionSchemaFilter", FILTER_FIELDS, e) ||
            !kw__v1_opt_str(o, "optionalDefinitionNameFilter", &f[i].def, e) ||
            !kw__v1_opt_str(o, "optionalCaveatNameFilter", &f[i].caveat, e) ||
            !kw__v1_opt_str(o, "optionalRelationNameFilter", &f[i].rel, e) ||
            !kw__v1_opt_str(o, "optionalPermissionNameFilter", &f[i].perm, e))
            return false;
    }
    *out = f;
    *n = len;
    return true;
}

void kw__api_v1_reflect(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_reflect_req_t r;
    memset(&r, 0, sizeof(r));
    json_t *body = kw__v1_begin(api, req, resp, &REFLECT_MSG, &r.consistency);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    kw_reflect_filter_t *f = NULL;
    if (!parse_filters(kw__v1_get(body, "optionalFilters"), req->arena, &f, &r.n_filters, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    r.filters = f;
    r.arena = req->arena;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_reflect_resp_t out;
    int rc = kw_v1_reflect_schema(api, &r, &out, &st);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_status_answer(resp, &st);
        return;
    }
    json_t *defs = json_array();
    for (size_t i = 0; defs && i < out.n_defs; i++)
        if (json_array_append_new(defs, def_json(&out.defs[i])) != 0) {
            json_decref(defs);
            defs = NULL;
        }
    json_t *cavs = json_array();
    for (size_t i = 0; cavs && i < out.n_caveats; i++)
        if (json_array_append_new(cavs, caveat_json(&out.caveats[i])) != 0) {
            json_decref(cavs);
            cavs = NULL;
        }
    json_t *root = NULL;
    if (defs && cavs) /* json_pack steals both, also when it fails */
        root = json_pack("{s:o, s:o, s:o}", "definitions", defs, "caveats", cavs, "readAt",
                         kw__v1_token_json(out.read_at));
    else {
        json_decref(defs);
        json_decref(cavs);
    }
    kw__v1_answer(req, resp, root, out.read_at);
}

static json_t *refs_json(const kw_reflect_ref_t *r, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *o =
            json_pack("{s:o, s:o, s:b}", "definitionName", kw__v1_strj(r[i].def), "relationName",
                      kw__v1_strj(r[i].rel), "isPermission", r[i].is_permission);
        if (json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* ComputablePermissions (dependent false) and DependentRelations (true). */
static void relref(kw_http_req_t *req, kw_http_resp_t *resp, void *ud, bool dependent)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_relref_req_t r;
    memset(&r, 0, sizeof(r));
    json_t *body =
        kw__v1_begin(api, req, resp, dependent ? &DEPENDENT_MSG : &COMPUTABLE_MSG, &r.consistency);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    bool ok = kw__v1_req_str(body, "definitionName", &r.definition, &e);
    if (dependent)
        ok = ok && kw__v1_req_str(body, "permissionName", &r.relation, &e);
    else
        ok = ok && kw__v1_opt_str(body, "relationName", &r.relation, &e) &&
             kw__v1_opt_str(body, "optionalDefinitionNameFilter", &r.definition_filter, &e);
    if (!ok) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    r.arena = req->arena;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_relref_resp_t out;
    int rc = dependent ? kw_v1_dependent_relations(api, &r, &out, &st)
                       : kw_v1_computable_permissions(api, &r, &out, &st);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_status_answer(resp, &st);
        return;
    }
    json_t *root =
        json_pack("{s:o, s:o}", dependent ? "relations" : "permissions",
                  refs_json(out.refs, out.n_refs), "readAt", kw__v1_token_json(out.read_at));
    kw__v1_answer(req, resp, root, out.read_at);
}

void kw__api_v1_computable(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    relref(req, resp, ud, false);
}

void kw__api_v1_dependent(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    relref(req, resp, ud, true);
}

static json_t *diff_json(const kw_schema_diff_t *d)
{
    static const char *const keys[] = {
        [KW_DIFF_DEF_ADDED] = "definitionAdded",
        [KW_DIFF_DEF_REMOVED] = "definitionRemoved",
        [KW_DIFF_DEF_DOC_CHANGED] = "definitionDocCommentChanged",
        [KW_DIFF_REL_ADDED] = "relationAdded",
        [KW_DIFF_REL_REMOVED] = "relationRemoved",
        [KW_DIFF_REL_DOC_CHANGED] = "relationDocCommentChanged",
        [KW_DIFF_REL_TYPE_ADDED] = "relationSubjectTypeAdded",
        [KW_DIFF_REL_TYPE_REMOVED] = "relationSubjectTypeRemoved",
        [KW_DIFF_PERM_ADDED] = "permissionAdded",
        [KW_DIFF_PERM_REMOVED] = "permissionRemoved",
        [KW_DIFF_PERM_DOC_CHANGED] = "permissionDocCommentChanged",
        [KW_DIFF_PERM_EXPR_CHANGED] = "permissionExprChanged",
        [KW_DIFF_CAVEAT_ADDED] = "caveatAdded",
        [KW_DIFF_CAVEAT_REMOVED] = "caveatRemoved",
        [KW_DIFF_CAVEAT_DOC_CHANGED] = "caveatDocCommentChanged",
        [KW_DIFF_CAVEAT_EXPR_CHANGED] = "caveatExprChanged",
        [KW_DIFF_CAVEAT_PARAM_ADDED] = "caveatParameterAdded",
        [KW_DIFF_CAVEAT_PARAM_REMOVED] = "caveatParameterRemoved",
        [KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED] = "caveatParameterTypeChanged",
    };
    json_t *v;
    if (d->kind == KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED)
        v = json_pack("{s:o, s:o}", "parameter", param_json(d->param), "previousType",
                      kw__v1_strj(d->previous_type));
    else if (d->param)
        v = param_json(d->param);
    else if (d->caveat)
        v = caveat_json(d->caveat);
    else if (d->def)
        v = def_json(d->def);
    else if (d->kind == KW_DIFF_REL_TYPE_ADDED || d->kind == KW_DIFF_REL_TYPE_REMOVED)
        v = json_pack("{s:o, s:o}", "relation", rel_json(d->rel), "changedSubjectType",
                      type_json(&d->type));
    else
        v = rel_json(d->rel);
    return v ? json_pack("{s:o}", keys[d->kind], v) : NULL;
}

void kw__api_v1_diff(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_diff_req_t r;
    memset(&r, 0, sizeof(r));
    json_t *body = kw__v1_begin(api, req, resp, &DIFF_MSG, &r.consistency);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    if (!kw__v1_opt_str(body, "comparisonSchema", &r.comparison_schema, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    r.arena = req->arena;
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_diff_resp_t out;
    int rc = kw_v1_diff_schema(api, &r, &out, &st);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_status_answer(resp, &st);
        return;
    }
    json_t *diffs = json_array();
    for (size_t i = 0; diffs && i < out.n_diffs; i++)
        if (json_array_append_new(diffs, diff_json(&out.diffs[i])) != 0) {
            json_decref(diffs);
            diffs = NULL;
        }
    json_t *root =
        diffs ? json_pack("{s:o, s:o}", "diffs", diffs, "readAt", kw__v1_token_json(out.read_at))
              : NULL;
    kw__v1_answer(req, resp, root, out.read_at);
}

/* ---- Watch ---- */

static const char *const WATCH_FIELDS[] = {"optionalObjectTypes", "optionalStartCursor",
                                           "optionalRelationshipFilters", "optionalUpdateKinds",
                                           NULL};
static const kw__v1_msg_t WATCH_MSG = {"WatchRequest", WATCH_FIELDS};
static const char *const WATCH_KINDS[] = {
    "WATCH_KIND_UNSPECIFIED", "WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES",
    "WATCH_KIND_INCLUDE_SCHEMA_UPDATES", "WATCH_KIND_INCLUDE_CHECKPOINTS"};
static const char *const TOKEN_FIELDS[] = {"token", NULL};

static bool parse_watch(json_t *body, kw_arena_t *a, kw_v1_watch_req_t *w, kw__v1_perr_t *e)
{
    json_t *types = kw__v1_get(body, "optionalObjectTypes");
    if (types && !json_is_null(types)) {
        if (!json_is_array(types))
            return kw__v1_bad(e, "optionalObjectTypes must be an array of strings");
        size_t n = json_array_size(types);
        kw_str_t *t = n ? kw_arena_alloc(a, n * sizeof(*t)) : NULL;
        if (n && !t)
            return kw__v1_bad(e, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(types, i);
            if (!json_is_string(s) || json_string_length(s) == 0)
                return kw__v1_bad(e, "optionalObjectTypes[] must be non-empty strings");
            t[i] = (kw_str_t){json_string_value(s), json_string_length(s)};
        }
        w->object_types = t;
        w->n_object_types = n;
    }
    json_t *start = kw__v1_get(body, "optionalStartCursor");
    if (start && !json_is_null(start)) {
        json_t *tok = json_is_object(start) ? json_object_get(start, "token") : NULL;
        if (!json_is_object(start) || !kw__v1_known(start, "optionalStartCursor", TOKEN_FIELDS, e))
            return kw__v1_bad(e, "optionalStartCursor must be a ZedToken {\"token\": ...}");
        if (tok && !json_is_null(tok)) {
            if (!json_is_string(tok) ||
                !kw_api_parse_revision((kw_str_t){json_string_value(tok), json_string_length(tok)},
                                       &w->start))
                return kw__v1_bad(e, "failed to decode start revision: not a ZedToken of this "
                                     "server");
            w->has_start = true;
        }
    }
    json_t *filters = kw__v1_get(body, "optionalRelationshipFilters");
    if (filters && !json_is_null(filters)) {
        if (!json_is_array(filters))
            return kw__v1_bad(e, "optionalRelationshipFilters must be an array");
        size_t n = json_array_size(filters);
        kw_filter_t *f = n ? kw_arena_alloc(a, n * sizeof(*f)) : NULL;
        kw_str_t *p = n ? kw_arena_alloc(a, n * sizeof(*p)) : NULL;
        if (n && (!f || !p))
            return kw__v1_bad(e, "out of memory");
        for (size_t i = 0; i < n; i++)
            if (!kw__v1_parse_filter(json_array_get(filters, i), "optionalRelationshipFilters[]",
                                     &f[i], &p[i], e))
                return false;
        w->filters = f;
        w->id_prefixes = p;
        w->n_filters = n;
    }
    json_t *kinds = kw__v1_get(body, "optionalUpdateKinds");
    w->relationship_kinds = true;
    if (kinds && !json_is_null(kinds)) {
        if (!json_is_array(kinds))
            return kw__v1_bad(e, "optionalUpdateKinds must be an array");
        size_t n = json_array_size(kinds);
        w->relationship_kinds = n == 0;
        for (size_t i = 0; i < n; i++) {
            json_t *holder = json_pack("{s:O}", "k", json_array_get(kinds, i));
            int k = 0;
            bool ok = holder && kw__v1_opt_enum(holder, "k", WATCH_KINDS, 4, &k, e);
            json_decref(holder);
            if (!ok)
                return kw__v1_bad(e, "optionalUpdateKinds[] must be WatchKind names or numbers");
            if (k == 0 || k == 1)
                w->relationship_kinds = true;
            else if (k == 2)
                w->schema_updates = true;
            else if (k == 3)
                w->checkpoints = true;
        }
    }
    return true;
}

typedef struct watch_out {
    kw__v1_stream_t s;
    kw_http_req_t *req;
} watch_out_t;

static json_t *update_json(const kw_update_t *u)
{
    return json_pack("{s:s, s:o}", "operation",
                     u->op == KW_OP_DELETE ? "OPERATION_DELETE" : "OPERATION_TOUCH", "relationship",
                     kw__v1_rel_json(&u->rel));
}

static int watch_emit(void *ud, const kw_v1_watch_event_t *ev)
{
    watch_out_t *o = ud;
    if (ev->checkpoint && !ev->is_checkpoint) /* liveness only: nothing to send */
        return kw_http_stream_cancelled(o->req) ? KW_EIO : KW_OK;
    json_t *ups = json_array();
    for (size_t i = 0; ups && i < ev->n_updates; i++)
        if (json_array_append_new(ups, update_json(&ev->updates[i])) != 0) {
            json_decref(ups);
            ups = NULL;
        }
    if (!ups)
        return KW_ENOMEM;
    json_t *res =
        json_pack("{s:o, s:o, s:n, s:b, s:b, s:[]}", "updates", ups, "changesThrough",
                  kw__v1_token_json(ev->changes_through), "optionalTransactionMetadata",
                  "schemaUpdated", 0, "isCheckpoint", ev->is_checkpoint, "fullRevisionMetadata");
    int rc = kw__v1_stream_result(&o->s, res, ev->changes_through);
    return rc == KW_OK ? kw__v1_stream_flush(&o->s) : rc; /* every change at once */
}

void kw__api_v1_watch(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_v1_consistency_t cons;
    kw_api_t *api = NULL;
    json_t *body = kw__v1_stream_begin(req, resp, ud, &WATCH_MSG, &cons, &api);
    if (!body)
        return;
    kw_v1_watch_req_t w;
    memset(&w, 0, sizeof(w));
    kw__v1_perr_t e = {0, ""};
    if (!parse_watch(body, req->arena, &w, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    watch_out_t o;
    o.req = req;
    kw__v1_stream_init(&o.s, req, resp);
    /* The headers go out now: a watch may be quiet for long, and its client must know it
     * is being served (and the server that the client is still there). */
    if (!w.has_start) { /* fixed before the headers go out: see kw_v1_watch_now */
        w.start = kw_v1_watch_now(api);
        w.has_start = true;
    }
    kw_revision_t at = w.start;
    resp->status = 200;
    resp->content_type = "application/json";
    kw__api_revision(req, resp, at);
    int rc = kw_http_stream_begin(req, resp);
    if (rc == KW_OK) {
        o.s.begun = true;
        o.s.rev = at;
        rc = kw_v1_watch(api, &w, watch_emit, &o, &st);
    } else {
        kw_v1_fail(&st, rc, KW_GRPC_CANCELLED, NULL, "the client went away");
    }
    kw__v1_stream_end(&o.s, rc, &st);
    json_decref(body);
}

/* ---- ExportBulkRelationships ---- */

static const char *const EXPORT_FIELDS[] = {"consistency", "optionalLimit", "optionalCursor",
                                            "optionalRelationshipFilter", NULL};
static const kw__v1_msg_t EXPORT_MSG = {"ExportBulkRelationshipsRequest", EXPORT_FIELDS};

static int export_emit(void *ud, const kw_v1_export_batch_t *b)
{
    kw__v1_stream_t *s = ud;
    json_t *rels = json_array();
    for (size_t i = 0; rels && i < b->n_rels; i++)
        if (json_array_append_new(rels, kw__v1_rel_json(&b->rels[i])) != 0) {
            json_decref(rels);
            rels = NULL;
        }
    if (!rels)
        return KW_ENOMEM;
    json_t *res = json_pack("{s:o, s:o}", "afterResultCursor", kw__v1_cursor_json(b->cursor),
                            "relationships", rels);
    return kw__v1_stream_result(s, res, b->read_at);
}

void kw__api_v1_export(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_v1_export_req_t r;
    memset(&r, 0, sizeof(r));
    kw_api_t *api = NULL;
    json_t *body = kw__v1_stream_begin(req, resp, ud, &EXPORT_MSG, &r.consistency, &api);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    json_t *f = kw__v1_get(body, "optionalRelationshipFilter");
    r.has_filter = f && !json_is_null(f);
    if ((r.has_filter && !kw__v1_parse_filter(f, "optionalRelationshipFilter", &r.filter,
                                              &r.resource_id_prefix, &e)) ||
        !kw__v1_opt_u32(body, "optionalLimit", &r.limit, &e) ||
        !kw__v1_opt_cursor(body, "optionalCursor", &r.cursor, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw__v1_stream_t s;
    kw__v1_stream_init(&s, req, resp);
    int rc = kw_v1_export_bulk(api, &r, export_emit, &s, &st);
    kw__v1_stream_end(&s, rc, &st);
    json_decref(body);
}

/* ---- ImportBulkRelationships ---- */

static const char *const IMPORT_FIELDS[] = {"relationships", NULL};

/* Where the scanner is between messages: before the first value (which decides the
 * framing), among messages one after another (grpc-gateway's framing: its JSON decoder
 * reads values one after another, whitespace between them), or inside one JSON array of
 * messages (keyward also takes that) expecting an element, a separator or nothing more. */
enum { IN_START = 0, IN_SEQ, IN_ARR_FIRST, IN_ARR_ELEM, IN_ARR_SEP, IN_ARR_DONE };

/* The request messages of the body, cut out of it as it arrives (kw_http_body_next) and
 * parsed one at a time: memory is one message (<= KW_MAX_STREAM_MSG_BYTES) plus the body
 * piece being read, whatever the body's size. */
typedef struct import_in {
    kw_http_req_t *req;
    kw_str_t piece; /* the body piece being scanned */
    size_t off;     /* how far */
    bool body_end;  /* kw_http_body_next said the body ended */
    bool body_failed;
    int framing;  /* IN_* */
    kw_buf_t msg; /* the message being cut out */
    int depth;    /* of its brackets (outside strings) */
    bool in_str, esc;
    json_t *cur;  /* the current message */
    json_t *rels; /* its relationships */
    size_t next_rel;
    size_t n_msgs;
    kw_arena_t *arena; /* the caveats' contexts */
} import_in_t;

static int import_fail(kw_diag_t *diag, const char *what, size_t msg)
{
    return kw_diag_set(diag, KW_EINVAL, 0, 0, "ImportBulkRelationshipsRequest %zu: %s", msg, what);
}

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t';
}

/* Scans p[0..n) of a message that has begun: returns how many bytes belong to it and
 * sets *done when its closing bracket is among them. */
static size_t msg_scan(import_in_t *in, const char *p, size_t n, bool *done)
{
    *done = false;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (in->in_str) {
            if (in->esc)
                in->esc = false;
            else if (ch == '\\')
                in->esc = true;
            else if (ch == '"')
                in->in_str = false;
            continue;
        }
        if (ch == '"') {
            in->in_str = true;
        } else if (ch == '{' || ch == '[') {
            in->depth++;
        } else if ((ch == '}' || ch == ']') && --in->depth == 0) {
            *done = true;
            return i + 1;
        }
    }
    return n;
}

/* The next message, or NULL at the end (*rc KW_OK) or on an error (*rc set). */
static json_t *next_msg(import_in_t *in, int *rc, kw_diag_t *diag)
{
    *rc = KW_OK;
    for (;;) {
        if (in->off == in->piece.len) {
            if (in->body_end) {
                if (in->msg.len)
                    *rc = import_fail(diag, "is not valid JSON (the body ended inside it)",
                                      in->n_msgs);
                else if (in->framing >= IN_ARR_FIRST && in->framing != IN_ARR_DONE)
                    *rc = import_fail(diag, "the array of messages is not closed", in->n_msgs);
                return NULL;
            }
            kw_str_t piece;
            if (kw_http_body_next(in->req, &piece) != KW_OK) {
                in->body_failed = true;
                *rc = kw_diag_set(diag, KW_EIO, 0, 0, "the request body could not be read");
                return NULL;
            }
            in->piece = piece;
            in->off = 0;
            in->body_end = piece.len == 0;
            continue;
        }
        const char *p = in->piece.ptr + in->off;
        size_t n = in->piece.len - in->off;
        if (in->msg.len == 0) { /* between messages */
            char ch = *p;
            in->off++;
            if (is_ws(ch))
                continue;
            if (in->framing == IN_START && ch == '[') {
                in->framing = IN_ARR_FIRST;
                continue;
            }
            if ((in->framing == IN_ARR_FIRST || in->framing == IN_ARR_SEP) && ch == ']') {
                in->framing = IN_ARR_DONE;
                continue;
            }
            if (in->framing == IN_ARR_SEP) {
                if (ch != ',') {
                    *rc = import_fail(diag, "is not valid JSON (expected , or ])", in->n_msgs);
                    return NULL;
                }
                in->framing = IN_ARR_ELEM;
                continue;
            }
            if (ch != '{' || in->framing == IN_ARR_DONE) {
                *rc = import_fail(diag,
                                  in->framing == IN_ARR_DONE
                                      ? "is not valid JSON (data after the array)"
                                      : "must be an object {relationships}",
                                  in->n_msgs);
                return NULL;
            }
            if (in->framing == IN_START)
                in->framing = IN_SEQ;
            in->depth = 1;
            in->in_str = in->esc = false;
            kw_buf_puts(&in->msg, "{");
            continue;
        }
        bool done;
        size_t used = msg_scan(in, p, n, &done);
        if (used > KW_MAX_STREAM_MSG_BYTES - in->msg.len) {
            *rc = import_fail(diag, "is larger than 4 MiB", in->n_msgs);
            return NULL;
        }
        kw_buf_append(&in->msg, p, used);
        in->off += used;
        if (in->msg.failed) {
            *rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
            return NULL;
        }
        if (!done)
            continue;
        json_error_t err;
        json_t *m = json_loadb(in->msg.ptr, in->msg.len, JSON_REJECT_DUPLICATES, &err);
        in->msg.len = 0;
        if (!m) {
            *rc = import_fail(diag, "is not valid JSON", in->n_msgs);
            return NULL;
        }
        if (in->framing != IN_SEQ)
            in->framing = IN_ARR_SEP;
        return m;
    }
}

static int import_next(void *ud, kw_rel_t *rel, kw_diag_t *diag)
{
    import_in_t *in = ud;
    while (!in->rels || in->next_rel >= json_array_size(in->rels)) {
        json_decref(in->cur);
        in->cur = NULL;
        in->rels = NULL;
        int rc;
        json_t *m = next_msg(in, &rc, diag);
        if (!m)
            return rc == KW_OK ? KW_ENOTFOUND : rc;
        in->cur = m;
        kw__v1_perr_t e = {0, ""};
        if (!json_is_object(m) ||
            !kw__v1_known(m, "ImportBulkRelationshipsRequest", IMPORT_FIELDS, &e))
            return import_fail(diag, e.msg[0] ? e.msg : "must be an object {relationships}",
                               in->n_msgs);
        json_t *rels = kw__v1_get(m, "relationships");
        if (rels && !json_is_null(rels) && !json_is_array(rels))
            return import_fail(diag, "relationships must be an array", in->n_msgs);
        in->rels = json_is_array(rels) ? rels : NULL;
        in->next_rel = 0;
        in->n_msgs++;
    }
    kw__v1_perr_t e = {0, ""};
    if (!kw__v1_parse_rel_in(json_array_get(in->rels, in->next_rel), in->arena, rel, &e)) {
        char what[300];
        snprintf(what, sizeof(what), "relationships[%zu]: %s", in->next_rel, e.msg);
        return import_fail(diag, what, in->n_msgs - 1);
    }
    in->next_rel++;
    return KW_OK;
}

void kw__api_v1_import(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    if (!kw__v1_on_worker(req)) /* a long transaction: not on an event loop */
        return;
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    if (!kw__api_auth(api, req, resp, &p)) {
        kw__v1_error(resp, resp->status == 401 ? KW_GRPC_UNAUTHENTICATED : KW_GRPC_UNAVAILABLE,
                     resp->status == 401 ? KW__MSG_UNAUTH : KW__MSG_DB);
        return;
    }
    if (!p.admin) {
        kw__v1_error(resp, KW_GRPC_PERMISSION_DENIED,
                     "The administration API needs a token with admin: true or a preshared "
                     "key.");
        return;
    }
    import_in_t in;
    memset(&in, 0, sizeof(in));
    in.req = req;
    in.arena = req->arena;
    kw_buf_init(&in.msg);
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    uint64_t n = 0;
    kw_revision_t rev = 0;
    int rc = kw_v1_import_bulk(api, import_next, NULL, &in, &n, &rev, &st);
    json_decref(in.cur);
    kw_buf_free(&in.msg);
    if (rc != KW_OK) {
        /* A body that failed is answered by the server itself (http.h). */
        kw__v1_status_answer(resp, &st);
        return;
    }
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, n);
    kw__v1_answer(req, resp, json_pack("{s:s}", "numLoaded", num), rev);
}
