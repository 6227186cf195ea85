/*
 * api/v1svc_schema.c - SchemaService's ReadSchema and WriteSchema as service functions
 * (v1svc.h). The schema write itself is the sync module's (sync/commit.c): a trial
 * install on a scratch engine, then the swap under the write mutex after catching up, the
 * text stored in meta "schema" and announced to the other instances through an empty
 * store revision.
 */
#include <inttypes.h>
#include <stdio.h>

#include "v1svc_int.h"
#include "base/log.h"

#define KW_MODULE "v1"

int kw_v1_read_schema(kw_api_t *svc, kw_buf_t *text, kw_revision_t *read_at, kw_v1_status_t *st)
{
    kw_revision_t rev = kw__api_applied(svc);
    size_t before = text->len;
    int rc = kw_engine_schema_text(svc->engine, text);
    if (rc == KW_OK && text->failed)
        rc = KW_ENOMEM;
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, NULL, NULL);
    if (text->len == before)
        return kw_v1_fail(st, KW_ENOTFOUND, KW_GRPC_NOT_FOUND, NULL, "No schema has been defined.");
    *read_at = rev;
    return KW_OK;
}

/* A trial install proves the text compiles and serves the routes (INVALID_ARGUMENT
 * otherwise, kw_sync_schema_try); the live swap proves every stored relationship fits,
 * and the text is stored and announced (kw_sync_write_schema). */
int kw_v1_write_schema(kw_api_t *svc, const kw_v1_caller_t *caller, kw_str_t schema,
                       kw_revision_t *written_at, kw_v1_status_t *st)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    if (schema.len == 0)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL, "schema is required");
    int rc = kw_sync_schema_try(svc->sync, schema, &d);
    if (rc != KW_OK) {
        if (d.line) {
            kw_v1_fail(st, KW_ESCHEMA, KW_GRPC_INVALID_ARGUMENT, "ERROR_REASON_SCHEMA_PARSE_ERROR",
                       "%u:%u: %s", d.line, d.col, d.msg);
            char n[16];
            snprintf(n, sizeof(n), "%u", d.line);
            kw_v1_meta(st, "start_line_number", kw_str_c(n));
            snprintf(n, sizeof(n), "%u", d.col);
            kw_v1_meta(st, "start_column_position", kw_str_c(n));
            return KW_ESCHEMA;
        }
        return kw_v1_fail_rc(st, rc == KW_ENOMEM ? rc : KW_ESCHEMA, &d, NULL);
    }
    kw_revision_t rev = 0;
    /* The text, its audit event and its revision commit together. */
    kw__audit_t au;
    kw__api_audit_schema(&au, caller, schema);
    rc = kw_sync_write_schema_with(svc->sync, schema, kw__api_audit_tx, &au, &rev, &d);
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, &d, NULL);
    kw_log(KW_LOG_INFO, KW_MODULE, "schema replaced (revision %" PRIu64 ")", (uint64_t)rev);
    *written_at = rev;
    return KW_OK;
}
