/*
 * api/v1_schema.c - SpiceDB SchemaService: ReadSchema (/v1/schema/read) and WriteSchema
 * (/v1/schema/write). A written schema is proven on a scratch engine, swapped in under the
 * write mutex after catching up, stored in meta "schema" and announced to the other
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

/* After meta "schema" is stored: an EMPTY store transaction gives the change a store
 * revision (the writtenAt token) and, on PostgreSQL, the NOTIFY that makes every other
 * instance's follower cross an empty revision and re-read the stored schema (follow.c).
 * Under the write mutex. */
static int announce_schema(kw_api_t *api, kw_str_t text, kw_revision_t *rev, kw_diag_t *d)
{
    api->schema_seen.len = 0;
    kw_buf_append(&api->schema_seen, text.ptr, text.len);
    if (api->schema_seen.failed)
        return KW_ENOMEM;
    kw_store_tx_t *tx = NULL;
    kw_revision_t r = 0;
    int rc = kw_store_tx_begin(api->store, &tx, d);
    if (rc == KW_OK)
        rc = kw_store_tx_commit(tx, &r, d);
    if (rc != KW_OK) {
        /* Stored and installed here; the others install it when they next cross an
         * empty revision. The caller gets 503 and may simply retry. */
        kw_log(KW_LOG_WARN, KW_MODULE, "schema stored but its revision could not be committed: %s",
               kw_err_name(rc));
        return rc;
    }
    if (api->follows) {
        kw_diag_t cd;
        kw_diag_clear(&cd);
        if (kw__api_catch_up(api, &cd) != KW_OK)
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "schema at revision %" PRIu64 " committed; the follower will catch up",
                   (uint64_t)r);
    } else {
        kw__api_advance(api, r);
    }
    *rev = r;
    return KW_OK;
}

/* The schema swap: a scratch engine proves the text compiles and serves the routes; the
 * live swap (under the write mutex, after catching up) proves every stored relationship
 * fits; the text is then persisted in meta "schema" (restored on failure so memory and
 * disk agree) and announced to the other instances (announce_schema). */
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
    kw_engine_t *probe = NULL;
    int rc = kw_engine_new(&probe);
    if (rc == KW_OK)
        rc = kw_engine_set_schema(probe, text, NULL, &d);
    if (rc == KW_OK)
        rc = kw_api_check_schema(probe, &d);
    if (probe)
        kw_engine_free(probe);
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
    kw_buf_t old;
    kw_buf_init(&old);
    kw_revision_t rev = 0;
    pthread_mutex_lock(&api->write_mu);
    /* The live swap is judged against every relationship committed so far (other
     * instances' too). */
    rc = kw__api_catch_up(api, &d);
    if (rc == KW_OK)
        rc = kw_engine_schema_text(api->engine, &old);
    if (rc == KW_OK && old.failed)
        rc = KW_ENOMEM;
    if (rc == KW_OK)
        rc = kw_engine_set_schema(api->engine, text, NULL, &d);
    if (rc == KW_OK) {
        rc = kw_store_meta_set(api->store, "schema", text);
        if (rc != KW_OK) {
            int rb = kw_engine_set_schema(api->engine, (kw_str_t){old.ptr ? old.ptr : "", old.len},
                                          NULL, NULL);
            if (rb != KW_OK)
                kw_log(KW_LOG_ERROR, KW_MODULE, "could not restore the previous schema: %s",
                       kw_err_name(rb));
        } else {
            rc = announce_schema(api, text, &rev, &d);
        }
    }
    pthread_mutex_unlock(&api->write_mu);
    kw_buf_free(&old);
    json_decref(body);
    if (rc != KW_OK) {
        kw__v1_fail(req, resp, rc, &d);
        return;
    }
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: schema replaced (revision %" PRIu64 ")",
           req->request_id, (uint64_t)rev);
    kw__v1_answer(req, resp, json_pack("{s:o}", "writtenAt", kw__v1_token_json(rev)), rev);
}
