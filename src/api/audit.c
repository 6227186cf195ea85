/*
 * api/audit.c - the audit event of every mutation the routes make (tag-kw-api-audit):
 * built by the handler BEFORE the write (who, what, which resource, its account, what
 * changed), appended by the write's transaction callback AFTER its change
 * (kw__api_audit_append), so the event commits with the change or neither does. A write
 * whose event cannot be built or appended fails: nothing is changed without its event.
 *
 * Sites: agents.c (agent.create, agent.update: PATCH's acp_url, agent.delete),
 * keys_routes.c (key.create, key.delete; key.rotate is built with kw__api_audit_for_key by
 * the rotation route), webhook.c (key.create of the webhook trigger's key),
 * v1_relationships.c (relationships.write, relationships.delete), v1_schema.c
 * (schema.write). Details never hold a secret: key events name the key's id, name, type
 * and agent, never its value, hash or sealed form.
 *
 * Events of an agent or key carry its account, read from its row before the write, so
 * the account's auditors read them after the object is gone. /v1 events carry no account
 * (the administration API is not scoped to one): only /v1 administrators read them.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "api_int.h"
#include "v1svc.h"
#include "base/log.h"

#define KW_MODULE "api"

/* /v1 write details list at most this many updates, and stop earlier once their
 * relationship strings pass AUDIT_UPDATES_BYTES (an id may be 1024 bytes): with the total
 * count and "truncated", the detail stays well under KW_AUDIT_DETAIL_MAX. */
#define AUDIT_MAX_UPDATES 100
#define AUDIT_UPDATES_BYTES 32768

static void audit_start_as(kw__audit_t *au, kw_str_t actor, kw_str_t request_id, const char *action)
{
    memset(au, 0, sizeof(*au));
    au->action = action;
    au->actor = actor;
    au->request_id = request_id;
    au->account = KW_STR("");
}

static void audit_start(kw__audit_t *au, kw_http_req_t *req, const char *action)
{
    audit_start_as(au, kw_str_c(req->log_subject), kw_str_c(req->request_id), action);
}

/* Sets au->resource to "type:id" in the request arena. */
static void audit_resource(kw__audit_t *au, kw_http_req_t *req, const char *type, kw_str_t id)
{
    char *r = kw_arena_sprintf(req->arena, "%s:%.*s", type, KW_STR_FMT(id));
    if (!r)
        au->rc = KW_ENOMEM;
    else
        au->resource = kw_str_c(r);
}

static void audit_account(kw__audit_t *au, kw_http_req_t *req, const char *account)
{
    char *a = kw_arena_strndup(req->arena, account ? account : "", account ? strlen(account) : 0);
    if (!a)
        au->rc = KW_ENOMEM;
    else
        au->account = kw_str_c(a);
}

/* detail (stolen) as compact JSON in arena `a`. */
static void audit_detail_in(kw__audit_t *au, kw_arena_t *a, json_t *detail)
{
    if (!detail) {
        au->rc = KW_ENOMEM;
        return;
    }
    char *s = json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(detail);
    char *copy = s ? kw_arena_strndup(a, s, strlen(s)) : NULL;
    free(s);
    if (!copy)
        au->rc = KW_ENOMEM;
    else
        au->detail = kw_str_c(copy);
}

void kw__api_audit_detail(kw__audit_t *au, kw_http_req_t *req, json_t *detail)
{
    audit_detail_in(au, req->arena, detail);
}

void kw__api_audit_add(kw__audit_t *au, kw_http_req_t *req, const char *name, json_t *value)
{
    json_t *d = NULL;
    if (au->rc == KW_OK && value)
        d = json_loadb(au->detail.ptr, au->detail.len, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        json_decref(value);
        if (au->rc == KW_OK)
            au->rc = KW_ENOMEM;
        return;
    }
    if (json_object_set_new(d, name, value) != 0) { /* value is released either way */
        json_decref(d);
        au->rc = KW_ENOMEM;
        return;
    }
    kw__api_audit_detail(au, req, d);
}

void kw__api_audit_key_cascade(kw__audit_t *au, kw_http_req_t *req, const kw__audit_t *parent,
                               kw_str_t key_id, kw_str_t agent_id)
{
    audit_start_as(au, parent->actor, parent->request_id, "key.delete");
    au->account = parent->account;
    audit_resource(au, req, "agent_api_key", key_id);
    json_t *d = json_pack("{s:s%, s:s%, s:s}", "id", key_id.ptr, key_id.len, "agent_id",
                          agent_id.ptr, agent_id.len, "via", parent->action);
    audit_detail_in(au, req->arena, d);
}

void kw__api_audit_agent(kw__audit_t *au, kw_http_req_t *req, const char *action,
                         const kw_agent_t *ag)
{
    audit_start(au, req, action);
    audit_resource(au, req, "agent", kw_str_c(ag->id));
    audit_account(au, req, ag->account_id);
    json_t *d = json_pack("{s:s, s:s, s:s?}", "id", ag->id, "name", ag->name ? ag->name : "",
                          "description", ag->description);
    if (d && ag->acp_url && json_object_set_new(d, "acp_url", json_string(ag->acp_url)) != 0) {
        json_decref(d);
        d = NULL;
    }
    kw__api_audit_detail(au, req, d);
}

void kw__api_audit_key(kw__audit_t *au, kw_http_req_t *req, const char *action,
                       const kw_apikey_t *k, const char *account)
{
    audit_start(au, req, action);
    audit_resource(au, req, "agent_api_key", kw_str_c(k->id));
    audit_account(au, req, account);
    json_t *d = json_pack("{s:s, s:s, s:s, s:s}", "id", k->id, "agent_id", k->agent_id, "name",
                          k->name ? k->name : "", "api_key_type", k->type ? k->type : "");
    if (d && k->expires_at_us) {
        char ts[32];
        size_t n = kw_api_format_time(k->expires_at_us, ts);
        if (json_object_set_new(d, "expires_at", json_stringn(ts, n)) != 0) {
            json_decref(d);
            d = NULL;
        }
    }
    kw__api_audit_detail(au, req, d);
}

int kw__api_audit_for_agent(kw_api_t *api, kw_http_req_t *req, const char *action, kw_str_t id,
                            kw__audit_t *au)
{
    kw_agent_t ag;
    int rc = kw_store_agent_get(api->store, id, req->arena, &ag);
    if (rc != KW_OK)
        return rc;
    kw__api_audit_agent(au, req, action, &ag);
    return au->rc;
}

int kw__api_audit_for_key(kw_api_t *api, kw_http_req_t *req, const char *action, kw_str_t id,
                          kw__audit_t *au)
{
    kw_apikey_t k;
    kw_agent_t ag;
    int rc = kw_store_key_get(api->store, id, req->arena, &k);
    if (rc == KW_OK)
        rc = kw_store_agent_get(api->store, kw_str_c(k.agent_id), req->arena, &ag);
    if (rc != KW_OK)
        return rc;
    kw__api_audit_key(au, req, action, &k, ag.account_id);
    return au->rc;
}

int kw__api_audit_append(kw_store_tx_t *tx, const kw__audit_t *au, kw_diag_t *diag)
{
    if (!au || au->rc != KW_OK)
        return kw_diag_set(diag, au ? au->rc : KW_EINTERNAL, 0, 0, "cannot build the audit event");
    kw_audit_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.at_us = kw_api_now_us();
    ev.actor = au->actor;
    ev.action = kw_str_c(au->action);
    ev.resource = au->resource;
    ev.account = au->account;
    ev.request_id = au->request_id;
    ev.detail = au->detail;
    int rc = kw_store_tx_audit_append(tx, &ev, diag);
    if (rc != KW_OK)
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %.*s: audit event %s not appended: %s",
               KW_STR_FMT(au->request_id), au->action, kw_err_name(rc));
    return rc;
}

int kw__api_audit_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    return kw__api_audit_append(tx, ud, diag);
}

/* ---- /v1 ---- */

static json_t *rel_text(const kw_rel_t *rel)
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(rel, &b);
    json_t *s = b.failed || !b.ptr ? NULL : json_stringn(b.ptr, b.len);
    kw_buf_free(&b);
    return s;
}

static const char *op_name(kw_op_t op)
{
    return op == KW_OP_CREATE  ? "OPERATION_CREATE"
           : op == KW_OP_TOUCH ? "OPERATION_TOUCH"
                               : "OPERATION_DELETE";
}

/* "type:id" when every update names the same resource, else "relationships". */
static void v1_resource(kw__audit_t *au, kw_arena_t *a, const kw_update_t *ups, size_t n)
{
    if (n == 0) { /* an empty write (proto3 allows it) */
        au->resource = KW_STR("relationships");
        return;
    }
    for (size_t i = 1; i < n; i++)
        if (!kw_str_eq(ups[i].rel.resource.type, ups[0].rel.resource.type) ||
            !kw_str_eq(ups[i].rel.resource.id, ups[0].rel.resource.id)) {
            au->resource = KW_STR("relationships");
            return;
        }
    char *r = kw_arena_sprintf(a, "%.*s:%.*s", KW_STR_FMT(ups[0].rel.resource.type),
                               KW_STR_FMT(ups[0].rel.resource.id));
    if (!r)
        au->rc = KW_ENOMEM;
    else
        au->resource = kw_str_c(r);
}

static json_t *filter_json(const kw_filter_t *f)
{
    json_t *o = json_pack("{s:s%}", "resourceType",
                          f->resource_type.ptr ? f->resource_type.ptr : "", f->resource_type.len);
    if (!o)
        return NULL;
    if (f->resource_id.len)
        json_object_set_new(o, "optionalResourceId",
                            json_stringn(f->resource_id.ptr, f->resource_id.len));
    if (f->relation.len)
        json_object_set_new(o, "optionalRelation", json_stringn(f->relation.ptr, f->relation.len));
    if (f->has_subject) {
        json_t *s = json_pack("{s:s%}", "subjectType",
                              f->subject_type.ptr ? f->subject_type.ptr : "", f->subject_type.len);
        if (s && f->subject_id.len)
            json_object_set_new(s, "optionalSubjectId",
                                json_stringn(f->subject_id.ptr, f->subject_id.len));
        if (s && f->subject_relation_set)
            json_object_set_new(s, "optionalRelation",
                                json_pack("{s:s%}", "relation",
                                          f->subject_relation.ptr ? f->subject_relation.ptr : "",
                                          f->subject_relation.len));
        json_object_set_new(o, "optionalSubjectFilter", s);
    }
    return o;
}

int kw__api_audit_v1_rels(kw_store_tx_t *tx, const kw_v1_caller_t *who, const kw_update_t *ups,
                          size_t n, const kw_filter_t *del, size_t n_deleted, kw_diag_t *diag)
{
    if (!who)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "a write without a caller has no audit event");
    kw__audit_t au;
    audit_start_as(&au, who->actor, who->request_id,
                   del ? "relationships.delete" : "relationships.write");
    json_t *d = NULL;
    if (del) {
        /* A filter without a resource type (SpiceDB allows one with a subject filter)
         * names no resource: the event's resource is then "relationships". */
        char *r = del->resource_type.len == 0 ? kw_arena_sprintf(who->arena, "relationships")
                  : del->resource_id.len
                      ? kw_arena_sprintf(who->arena, "%.*s:%.*s", KW_STR_FMT(del->resource_type),
                                         KW_STR_FMT(del->resource_id))
                      : kw_arena_sprintf(who->arena, "%.*s", KW_STR_FMT(del->resource_type));
        if (!r)
            au.rc = KW_ENOMEM;
        else
            au.resource = kw_str_c(r);
        d = json_pack("{s:o, s:I}", "filter", filter_json(del), "deleted", (json_int_t)n_deleted);
    } else {
        v1_resource(&au, who->arena, ups, n);
        json_t *arr = json_array();
        size_t listed = 0, bytes = 0;
        for (; arr && listed < n && listed < AUDIT_MAX_UPDATES; listed++) {
            const kw_rel_t *r = &ups[listed].rel;
            bytes += r->resource.type.len + r->resource.id.len + r->relation.len +
                     r->subject.type.len + r->subject.id.len + r->subject.relation.len + 48;
            if (bytes > AUDIT_UPDATES_BYTES)
                break;
            if (json_array_append_new(arr,
                                      json_pack("{s:s, s:o}", "operation", op_name(ups[listed].op),
                                                "relationship", rel_text(r))) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        d = arr ? json_pack("{s:o, s:I, s:b}", "updates", arr, "count", (json_int_t)n, "truncated",
                            listed < n)
                : NULL;
    }
    audit_detail_in(&au, who->arena, d);
    return kw__api_audit_append(tx, &au, diag);
}

void kw__api_audit_schema(kw__audit_t *au, const kw_v1_caller_t *who, kw_str_t text)
{
    if (!who) {
        memset(au, 0, sizeof(*au));
        au->rc = KW_EINVAL; /* a write without a caller has no audit event: refused */
        return;
    }
    audit_start_as(au, who->actor, who->request_id, "schema.write");
    au->resource = KW_STR("schema");
    unsigned char h[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    crypto_hash_sha256(h, (const unsigned char *)(text.ptr ? text.ptr : ""), text.len);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    audit_detail_in(au, who->arena,
                    json_pack("{s:s, s:I}", "schema_sha256", hex, "bytes", (json_int_t)text.len));
}
