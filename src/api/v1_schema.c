/*
 * api/v1_schema.c - the JSON codec of SchemaService: ReadSchema (/v1/schema/read) and
 * WriteSchema (/v1/schema/write). Each handler decodes, calls the service
 * (v1svc_schema.c) and encodes; nothing else.
 */
#include "v1_int.h"

#define KW_MODULE "v1"

static const char *const READ_SCHEMA_FIELDS[] = {NULL};
static const kw__v1_msg_t READ_SCHEMA_MSG = {"ReadSchemaRequest", READ_SCHEMA_FIELDS};
static const char *const WRITE_SCHEMA_FIELDS[] = {"schema", NULL};
static const kw__v1_msg_t WRITE_SCHEMA_MSG = {"WriteSchemaRequest", WRITE_SCHEMA_FIELDS};

void kw__api_v1_schema_read(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_consistency_t cons;
    json_t *body = kw__v1_begin(api, req, resp, &READ_SCHEMA_MSG, &cons);
    if (!body)
        return;
    json_decref(body);
    kw_buf_t text;
    kw_buf_init(&text);
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t rev = 0;
    if (kw_v1_read_schema(api, &text, &rev, &st) != KW_OK) {
        kw_buf_free(&text);
        kw__v1_status_answer(resp, &st);
        return;
    }
    json_t *root = json_pack("{s:s%, s:o}", "schemaText", text.ptr, text.len, "readAt",
                             kw__v1_token_json(rev));
    kw_buf_free(&text);
    kw__v1_answer(req, resp, root, rev);
}

void kw__api_v1_schema_write(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw_v1_consistency_t cons;
    json_t *body = kw__v1_begin(api, req, resp, &WRITE_SCHEMA_MSG, &cons);
    if (!body)
        return;
    kw__v1_perr_t e = {0, ""};
    kw_str_t text;
    if (!kw__v1_opt_str(body, "schema", &text, &e)) {
        kw__v1_perr_answer(resp, &e);
        json_decref(body);
        return;
    }
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_revision_t rev = 0;
    kw_v1_caller_t who = kw__v1_caller(req);
    int rc = kw_v1_write_schema(api, &who, text, &rev, &st);
    json_decref(body);
    if (rc != KW_OK)
        kw__v1_status_answer(resp, &st);
    else
        kw__v1_answer(req, resp, json_pack("{s:o}", "writtenAt", kw__v1_token_json(rev)), rev);
}
