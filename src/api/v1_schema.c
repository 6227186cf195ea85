/*
 * api/v1_schema.c - SpiceDB SchemaService: ReadSchema (/v1/schema/read) and WriteSchema
 * (/v1/schema/write): the JSON of both. The schema write itself is the sync module's
 * (sync/commit.c): a trial install on a scratch engine, then the swap under the write
 * mutex after catching up, the text stored in meta "schema" and announced to the other
 * instances through an empty store revision.
 */
#include <inttypes.h>

#include "v1_int.h"
#include "base/log.h"

#define KW_MODULE "v1"

static const char *const READ_SCHEMA_FIELDS[] = {NULL};
static const kw__v1_msg_t READ_SCHEMA_MSG = {"ReadSchemaRequest", READ_SCHEMA_FIELDS};
static const char *const WRITE_SCHEMA_FIELDS[] = {"schema", NULL};
static const kw__v1_msg_t WRITE_SCHEMA_MSG = {"WriteSchemaRequest", WRITE_SCHEMA_FIELDS};

void kw__api_v1_schema_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &READ_SCHEMA_MSG, &snap);
    if (!body)
        return;
    json_decref(body);
    kw_buf_t text;
    kw_buf_init(&text);
    kw_revision_t rev = kw__api_applied(api);
    int rc = kw_engine_schema_text(api->engine, &text);
    if (rc == KW_OK && text.failed)
        rc = KW_ENOMEM;
    if (rc != KW_OK) {
        kw_buf_free(&text);
        kw__v1_fail(req, resp, rc, NULL);
        return;
    }
    if (text.len == 0) {
        kw_buf_free(&text);
        kw__v1_error(resp, 404, KW__GRPC_NOT_FOUND, "No schema has been defined.");
        return;
    }
    json_t *root = json_pack("{s:s%, s:o}", "schemaText", text.ptr, text.len, "readAt",
                             kw__v1_token_json(rev));
    kw_buf_free(&text);
    kw__v1_answer(req, resp, root, rev);
}

/* The schema swap: a trial install proves the text compiles and serves the routes (400
 * otherwise, kw_sync_schema_try); the live swap proves every stored relationship fits, and
 * the text is stored and announced (kw_sync_write_schema). */
void kw__api_v1_schema_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__v1_snap_t snap;
    json_t *body = kw__v1_begin(api, req, resp, &WRITE_SCHEMA_MSG, &snap);
    kw__v1_perr_t e = {0, ""};
    kw_str_t text;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (!body)
        return;
    if (!kw__v1_req_str(body, "schema", &text, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    int rc = kw_sync_schema_try(api->sync, text, &d);
    if (rc != KW_OK) {
        if (d.line) {
            char msg[300];
            snprintf(msg, sizeof(msg), "%u:%u: %s", d.line, d.col, d.msg);
            kw__v1_error(resp, 400, KW__GRPC_INVALID_ARGUMENT, msg);
        } else {
            kw__v1_fail(req, resp, rc == KW_ENOMEM ? rc : KW_ESCHEMA, &d);
        }
        json_decref(body);
        return;
    }
    kw_revision_t rev = 0;
    kw__audit_t au;
    kw__api_audit_schema(&au, req, text);
    rc = kw_sync_write_schema_with(api->sync, text, kw__api_audit_tx, &au, &rev, &d);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: schema replaced (revision %" PRIu64 ")",
           req->request_id, (uint64_t)rev);
    kw__v1_answer(req, resp, json_pack("{s:o}", "writtenAt", kw__v1_token_json(rev)), rev);
}
