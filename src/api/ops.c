/*
 * api/ops.c - operations routes: /healthz, /readyz, /metrics, /openapi.json.
 * None of them needs credentials. /openapi.json is built from one table describing every
 * route (tag-kw-api-routes: routes.c holds the route table itself).
 */
#include <string.h>

#include "api_int.h"

void kw__api_healthz(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)req;
    (void)ud;
    resp->status = 200;
    kw_buf_puts(&resp->body, "{\"status\": \"ok\"}");
}

void kw__api_readyz(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    int rc = kw_store_ping(api->store);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc == KW_ENOMEM ? rc : KW_EDB, "readiness ping");
        return;
    }
    /* Reachable is not enough: the graph must be caught up with it (sync/follower.c). */
    if (!kw_sync_is_fresh(api->sync)) {
        kw_http_resp_error(resp, 503, KW__MSG_DB);
        return;
    }
    resp->status = 200;
    kw_buf_puts(&resp->body, "{\"status\": \"ready\"}");
}

void kw__api_metrics_route(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    /* appends the server's metrics, then kw_api_metrics via the configured metrics_fn */
    kw_http_server_metrics(kw_http_req_server(req), &resp->body);
}

/* ---- OpenAPI ---- */

typedef struct {
    const char *path;
    const char *method;
    const char *summary;
    const char *request;  /* components/schemas name of the body, or NULL */
    const char *response; /* components/schemas name of the 200 body, or NULL (JSON) */
    const char *errors;   /* status codes the route may answer besides 200 */
    const char *params;   /* "id", "name", "list", "keyref", "keyref_type", "" */
} op_t;

static const op_t ops[] = {
    {"/agents", "post", "Create an agent in the selected account", "AgentCreate", "Agent",
     "400 401 403 409 413 422 503", ""},
    {"/agents", "get", "List the agents the caller can read", NULL, "AgentList", "401 422 503",
     "list"},
    {"/agents/{id}", "get", "Get an agent", NULL, "Agent", "401 404 503", "id"},
    {"/agents/{id}", "delete", "Delete an agent, its keys and their relationships", NULL, "Message",
     "401 403 404 503", "id"},
    {"/agents/name/{name}", "get", "Get an agent by name in the selected account", NULL, "Agent",
     "400 401 404 422 503", "name"},
    {"/agent_api_keys", "post", "Create an API key for an agent (the secret is shown once)",
     "AgentAPIKeyCreate", "AgentAPIKeyWithSecret", "400 401 403 404 409 413 422 503", ""},
    {"/agent_api_keys", "get", "List an agent's keys the caller can read", NULL, "AgentAPIKeyList",
     "400 401 404 422 503", "keyref_list"},
    {"/agent_api_keys/{id}", "get", "Get an API key", NULL, "AgentAPIKey", "401 404 503", "id"},
    {"/agent_api_keys/{id}", "delete", "Delete an API key", NULL, "Message", "401 403 404 503",
     "id"},
    {"/agent_api_keys/name/{name}", "get", "Get an agent's API key by name and type", NULL,
     "AgentAPIKey", "400 401 404 422 503", "keyref_type"},
    {"/agent_api_keys/name/{name}", "delete", "Delete an agent's API key by name and type", NULL,
     "Message", "400 401 403 404 422 503", "keyref_type"},
    {"/agent_api_keys/{id}/rotate", "post",
     "Rotate an API key: a new secret for the same id and name (shown once); the previous one "
     "works for grace_period_seconds more",
     "AgentAPIKeyRotate", "AgentAPIKeyRotated", "401 403 404 409 413 422 503", "id"},
    {"/auth/verify", "post",
     "Verify a caller's API key or token and answer its checks (service accounts with "
     "account#verify)",
     "VerifyRequest", "VerifyResponse", "401 403 413 422 429 503", ""},
    {"/healthz", "get", "Liveness", NULL, NULL, "", ""},
    {"/readyz", "get", "Readiness (database reachable and graph caught up)", NULL, NULL, "503", ""},
    {"/metrics", "get", "Prometheus metrics", NULL, "text", "", ""},
    {"/openapi.json", "get", "This document", NULL, NULL, "", ""},
    {"/v1/relationships/write", "post", "SpiceDB WriteRelationships", "V1Object", "V1Object",
     "400 401 403 409 422 503", ""},
    {"/v1/relationships/read", "post", "SpiceDB ReadRelationships (streamed NDJSON)", "V1Object",
     "V1Stream", "400 401 403 422", ""},
    {"/v1/relationships/delete", "post", "SpiceDB DeleteRelationships", "V1Object", "V1Object",
     "400 401 403 422 503", ""},
    {"/v1/permissions/check", "post", "SpiceDB CheckPermission", "V1Object", "V1Object",
     "400 401 403 422", ""},
    {"/v1/permissions/checkbulk", "post", "SpiceDB CheckBulkPermissions", "V1Object", "V1Object",
     "400 401 403 422", ""},
    {"/v1/permissions/resources", "post", "SpiceDB LookupResources (streamed NDJSON)", "V1Object",
     "V1Stream", "400 401 403 422", ""},
    {"/v1/permissions/subjects", "post", "SpiceDB LookupSubjects (streamed NDJSON)", "V1Object",
     "V1Stream", "400 401 403 422", ""},
    {"/v1/permissions/expand", "post", "SpiceDB ExpandPermissionTree", "V1Object", "V1Object",
     "400 401 403 422", ""},
    {"/v1/schema/read", "post", "SpiceDB ReadSchema", "V1Object", "V1Object", "401 403", ""},
    {"/v1/schema/write", "post", "SpiceDB WriteSchema", "V1Object", "V1Object",
     "400 401 403 422 503", ""},
    {"/audit_events", "get", "Read the audit trail (oldest first; X-Next-Cursor when more follow)",
     NULL, "AuditEventList", "400 401 403 422 503", "audit"},
    {"/v1/schema/reflectschema", "post", "SpiceDB ReflectSchema", "V1Object", "V1Object",
     "400 401 403", ""},
    {"/v1/schema/permissions/computable", "post", "SpiceDB ComputablePermissions", "V1Object",
     "V1Object", "400 401 403", ""},
    {"/v1/schema/permissions/dependent", "post", "SpiceDB DependentRelations", "V1Object",
     "V1Object", "400 401 403", ""},
    {"/v1/schema/diffschema", "post", "SpiceDB DiffSchema", "V1Object", "V1Object", "400 401 403",
     ""},
    {"/v1/watch", "post", "SpiceDB Watch (streamed NDJSON)", "V1Object", "V1Stream", "400 401 403",
     ""},
    {"/v1/relationships/exportbulk", "post", "SpiceDB ExportBulkRelationships (streamed NDJSON)",
     "V1Object", "V1Stream", "400 401 403", ""},
    {"/v1/relationships/importbulk", "post",
     "SpiceDB ImportBulkRelationships (NDJSON or array of requests)", "V1Object", "V1Object",
     "400 401 403 409 503", ""},
    {"/v1/experimental/reflectschema", "post", "SpiceDB ExperimentalReflectSchema", "V1Object",
     "V1Object", "400 401 403", ""},
    {"/v1/experimental/permissions/computable", "post", "SpiceDB ExperimentalComputablePermissions",
     "V1Object", "V1Object", "400 401 403", ""},
    {"/v1/experimental/permissions/dependent", "post", "SpiceDB ExperimentalDependentRelations",
     "V1Object", "V1Object", "400 401 403", ""},
    {"/v1/experimental/diffschema", "post", "SpiceDB ExperimentalDiffSchema", "V1Object",
     "V1Object", "400 401 403", ""},
    {"/v1/experimental/relationships/bulkexport", "post",
     "SpiceDB BulkExportRelationships (streamed NDJSON)", "V1Object", "V1Stream", "400 401 403",
     ""},
    {"/v1/experimental/relationships/bulkimport", "post",
     "SpiceDB BulkImportRelationships (NDJSON or array of requests)", "V1Object", "V1Object",
     "400 401 403 409 503", ""},
};

static json_t *ref(const char *name)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "#/components/schemas/%s", name);
    return json_pack("{s:s}", "$ref", buf);
}

static json_t *param(const char *name, const char *in, bool required, json_t *schema)
{
    return json_pack("{s:s, s:s, s:b, s:o}", "name", name, "in", in, "required", required, "schema",
                     schema);
}

static json_t *params_for(const char *kind)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    if (strcmp(kind, "id") == 0)
        json_array_append_new(a, param("id", "path", true, json_pack("{s:s}", "type", "string")));
    if (strcmp(kind, "name") == 0 || strcmp(kind, "keyref_type") == 0)
        json_array_append_new(a, param("name", "path", true, json_pack("{s:s}", "type", "string")));
    if (strncmp(kind, "keyref", 6) == 0) {
        json_array_append_new(a,
                              param("agent_id", "query", false,
                                    json_pack("{s:s, s:s}", "type", "string", "format", "uuid")));
        json_array_append_new(
            a, param("agent_name", "query", false, json_pack("{s:s}", "type", "string")));
    }
    if (strcmp(kind, "keyref_type") == 0)
        json_array_append_new(a, param("api_key_type", "query", false, ref("ApiKeyType")));
    if (strcmp(kind, "audit") == 0)
        kw__api_audit_openapi_params(a); /* audit_routes.c */
    if (strcmp(kind, "list") == 0 || strcmp(kind, "keyref_list") == 0) {
        json_array_append_new(a, param("limit", "query", false,
                                       json_pack("{s:s, s:i, s:i, s:i}", "type", "integer",
                                                 "minimum", 1, "maximum", 1000, "default", 50)));
        json_array_append_new(
            a, param("page_number", "query", false,
                     json_pack("{s:s, s:i, s:i}", "type", "integer", "minimum", 1, "default", 1)));
        /* Issue 14: keyset pages; the next page's cursor comes in X-Next-Cursor. */
        json_array_append_new(
            a, param("cursor", "query", false,
                     json_pack("{s:s, s:i, s:s}", "type", "string", "maxLength", KW_CURSOR_MAX_TEXT,
                               "description",
                               "Opaque; empty for the first page, then the X-Next-Cursor header "
                               "of the page before (absent on the last page). Not with "
                               "page_number.")));
    }
    return a;
}

static json_t *operation(const op_t *op)
{
    json_t *o =
        json_pack("{s:s, s:o}", "summary", op->summary, "parameters", params_for(op->params));
    json_t *responses = json_object();
    if (!o || !responses) {
        json_decref(o);
        json_decref(responses);
        return NULL;
    }
    json_t *ok;
    if (op->response && strcmp(op->response, "text") == 0)
        ok = json_pack("{s:s, s:{s:{s:{s:s}}}}", "description", "OK", "content", "text/plain",
                       "schema", "type", "string");
    else if (op->response && strcmp(op->response, "V1Stream") == 0)
        ok = json_pack("{s:s, s:{s:{s:o}}}", "description",
                       "One JSON object {\"result\": ...} per line; empty when none", "content",
                       "application/x-ndjson", "schema", ref("V1Object"));
    else
        ok = json_pack("{s:s, s:{s:{s:o}}}", "description", "OK", "content", "application/json",
                       "schema",
                       op->response ? ref(op->response) : json_pack("{s:s}", "type", "object"));
    if (ok && (strcmp(op->params, "list") == 0 || strcmp(op->params, "keyref_list") == 0))
        json_object_set_new(ok, "headers",
                            json_pack("{s:{s:s, s:{s:s}}}", "X-Next-Cursor", "description",
                                      "With cursor=: the next page's cursor; absent on the last "
                                      "page",
                                      "schema", "type", "string"));
    json_object_set_new(responses, "200", ok);
    char codes[64];
    snprintf(codes, sizeof(codes), "%s", op->errors);
    for (char *save = NULL, *c = strtok_r(codes, " ", &save); c; c = strtok_r(NULL, " ", &save))
        json_object_set_new(responses, c,
                            json_pack("{s:s, s:{s:{s:o}}}", "description", "Error", "content",
                                      "application/json", "schema", ref("Error")));
    json_object_set_new(o, "responses", responses);
    if (op->request)
        json_object_set_new(o, "requestBody",
                            json_pack("{s:b, s:{s:{s:o}}}", "required", true, "content",
                                      "application/json", "schema", ref(op->request)));
    if (strncmp(op->path, "/v1/", 4) == 0 ||
        (strcmp(op->path, "/healthz") != 0 && strcmp(op->path, "/readyz") != 0 &&
         strcmp(op->path, "/metrics") != 0 && strcmp(op->path, "/openapi.json") != 0))
        json_object_set_new(
            o, "security",
            json_pack("[{s:[]}, {s:[]}, {s:[]}]", "bearer", "agentKeyHeader", "agentKeyAuth"));
    return o;
}

/* Issue 14: the key's lifecycle fields, rotation and /auth/verify (added to the schemas
 * built by components()). -1 on OOM. */
static int lifecycle_schemas(json_t *schemas)
{
    json_t *ts_or_null =
        json_pack("{s:[s,s], s:s}", "type", "string", "null", "format", "date-time");
    json_t *key = json_object_get(json_object_get(schemas, "AgentAPIKey"), "properties");
    json_t *create = json_object_get(json_object_get(schemas, "AgentAPIKeyCreate"), "properties");
    int rc = ts_or_null && key && create ? 0 : -1;
    if (rc == 0)
        rc |= json_object_set(key, "expires_at", ts_or_null);
    if (rc == 0)
        rc |= json_object_set(key, "last_used_at", ts_or_null);
    if (rc == 0)
        rc |= json_object_set_new(
            create, "expires_at",
            json_pack("{s:[s,s], s:s}", "type", "string", "null", "format", "date-time"));
    if (rc == 0)
        rc |= json_object_set_new(create, "ttl_seconds",
                                  json_pack("{s:[s,s], s:i, s:I}", "type", "integer", "null",
                                            "minimum", 1, "maximum",
                                            (json_int_t)KW_MAX_KEY_LIFETIME_S));
    if (rc == 0)
        rc |= json_object_set_new(schemas, "AgentAPIKeyRotate",
                                  json_pack("{s:s, s:{s:{s:[s,s], s:i, s:I, s:i}}}", "type",
                                            "object", "properties", "grace_period_seconds", "type",
                                            "integer", "null", "minimum", 0, "maximum",
                                            (json_int_t)KW_MAX_ROTATE_GRACE_S, "default", 0));
    if (rc == 0)
        rc |= json_object_set_new(schemas, "AgentAPIKeyRotated",
                                  json_pack("{s:[o, {s:s, s:[s,s], s:{s:{s:s}, s:O}}]}", "allOf",
                                            ref("AgentAPIKey"), "type", "object", "required",
                                            "api_key", "previous_api_key_valid_until", "properties",
                                            "api_key", "type", "string",
                                            "previous_api_key_valid_until", ts_or_null));
    if (rc == 0)
        rc |= json_object_set_new(
            schemas, "VerifyRequest",
            json_pack("{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s, s:i, s:{s:s, s:[s,s], s:{s:{s:s}, "
                      "s:{s:s}}}}}}",
                      "type", "object", "properties", "api_key", "type", "string", "token", "type",
                      "string", "checks", "type", "array", "maxItems", KW_MAX_VERIFY_CHECKS,
                      "items", "type", "object", "required", "resource", "permission", "properties",
                      "resource", "type", "string", "permission", "type", "string"));
    if (rc == 0)
        rc |= json_object_set_new(
            schemas, "VerifyResponse",
            json_pack("{s:s, s:[s], s:{s:{s:s}, s:{s:s}, s:{s:s, s:{s:s}}}}", "type", "object",
                      "required", "valid", "properties", "valid", "type", "boolean", "principal",
                      "type", "object", "checks", "type", "array", "items", "type", "object"));
    json_decref(ts_or_null);
    return rc ? -1 : 0;
}

static json_t *components(void)
{
    json_t *str = json_pack("{s:s}", "type", "string");
    json_t *c = json_pack(
        "{s:{"
        "s:{s:s, s:[s], s:{s:{s:s}}},"                             /* Error */
        "s:{s:s, s:[s,s,s,s]},"                                    /* ApiKeyType */
        "s:{s:s, s:[s], s:{s:{s:s, s:i, s:i}, s:{s:[s,s], s:i}}}," /* AgentCreate */
        "s:{s:s, s:[s,s,s,s,s], s:{s:{s:s, s:s}, s:O, s:{s:[s,s]}, s:O, s:{s:s, s:s}}}," /* Agent */
        "s:{s:s, s:o}," /* AgentList */
        "s:{s:s, s:[s], s:{s:O, s:{s:s, s:i, s:i}, s:{s:s, s:i, s:i}, s:o, "
        "s:{s:s, s:i, s:i}}},"                                          /* AgentAPIKeyCreate */
        "s:{s:s, s:[s,s,s,s,s], s:{s:O, s:O, s:{s:s, s:s}, s:O, s:o}}," /* AgentAPIKey */
        "s:{s:[o, {s:s, s:[s], s:{s:O}}]},"                             /* WithSecret */
        "s:{s:s, s:o},"                                                 /* AgentAPIKeyList */
        "s:{s:s},"                                                      /* Message */
        "s:{s:s, s:s}"                                                  /* V1Object */
        "}, s:{"
        "s:{s:s, s:s, s:s},"
        "s:{s:s, s:s, s:s},"
        "s:{s:s, s:s, s:s}"
        "}}",
        "schemas", "Error", "type", "object", "required", "detail", "properties", "detail", "type",
        "string", "ApiKeyType", "type", "string", "enum", "internal", "external", "github", "slack",
        "AgentCreate", "type", "object", "required", "name", "properties", "name", "type", "string",
        "minLength", 1, "maxLength", KW_MAX_NAME_CHARS, "description", "type", "string", "null",
        "maxLength", KW_MAX_DESCRIPTION_CHARS, "Agent", "type", "object", "required", "id", "name",
        "description", "account_id", "created_at", "properties", "id", "type", "string", "format",
        "uuid", "name", str, "description", "type", "string", "null", "account_id", str,
        "created_at", "type", "string", "format", "date-time", "AgentList", "type", "array",
        "items", ref("Agent"), "AgentAPIKeyCreate", "type", "object", "required", "name",
        "properties", "agent_id", str, "agent_name", "type", "string", "minLength", 1, "maxLength",
        KW_MAX_NAME_CHARS, "name", "type", "string", "minLength", 1, "maxLength", KW_MAX_NAME_CHARS,
        "api_key_type", ref("ApiKeyType"), "api_key", "type", "string", "minLength",
        KW_KEY_MIN_SUPPLIED, "maxLength", KW_KEY_MAX_SUPPLIED, "AgentAPIKey", "type", "object",
        "required", "id", "agent_id", "created_at", "name", "api_key_type", "properties", "id", str,
        "agent_id", str, "created_at", "type", "string", "format", "date-time", "name", str,
        "api_key_type", ref("ApiKeyType"), "AgentAPIKeyWithSecret", "allOf", ref("AgentAPIKey"),
        "type", "object", "required", "api_key", "properties", "api_key", str, "AgentAPIKeyList",
        "type", "array", "items", ref("AgentAPIKey"), "Message", "type", "string", "V1Object",
        "type", "object", "description",
        "SpiceDB v1 message in the proto3 JSON mapping (see docs/API.md)", "securitySchemes",
        "bearer", "type", "http", "scheme", "bearer", "bearerFormat", "JWT", "agentKeyHeader",
        "type", "apiKey", "in", "header", "name", "x-agent-api-key", "agentKeyAuth", "type",
        "apiKey", "in", "header", "name", "Authorization");
    json_decref(str);
    if (c && lifecycle_schemas(json_object_get(c, "schemas")) != 0) {
        json_decref(c);
        return NULL;
    }
    return c;
}

void kw__api_openapi(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    (void)ud;
    json_t *paths = json_object();
    json_t *doc = NULL;
    char *text = NULL;
    if (!paths)
        goto fail;
    for (size_t i = 0; i < KW_ARRAY_LEN(ops); i++) {
        json_t *item = json_object_get(paths, ops[i].path);
        if (!item) {
            item = json_object();
            if (!item || json_object_set_new(paths, ops[i].path, item) != 0)
                goto fail;
        }
        json_t *op = operation(&ops[i]);
        if (!op || json_object_set_new(item, ops[i].method, op) != 0)
            goto fail;
    }
    json_t *comps = components();
    if (comps)
        kw__api_audit_openapi_schemas(json_object_get(comps, "schemas")); /* audit_routes.c */
    doc = json_pack("{s:s, s:{s:s, s:s, s:s}, s:O, s:o}", "openapi", "3.1.0", "info", "title",
                    "keyward", "version", "1", "description",
                    "Agent API keys authorized by an embedded SpiceDB-compatible engine", "paths",
                    paths, "components", comps);
    if (!doc)
        goto fail;
    text = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!text)
        goto fail;
    resp->status = 200;
    kw_buf_puts(&resp->body, text);
    free(text);
    json_decref(doc);
    json_decref(paths);
    return;
fail:
    json_decref(doc);
    json_decref(paths);
    kw__api_fail(req, resp, KW_ENOMEM, "openapi");
}
