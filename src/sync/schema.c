/*
 * sync/schema.c - the schema's lifecycle: the text stored in meta "schema", the trial
 * install of a candidate text, and the text last seen (what a follower compares with).
 *
 * Schema changes across instances: kw_sync_write_schema (commit.c) stores meta "schema"
 * and then commits an EMPTY store transaction, i.e. a revision without relationship
 * changes. A follower that crosses such a revision (a gap in the changelog's revision
 * sequence, or revisions beyond the last change up to `upto`, catchup.c) re-reads meta
 * "schema" before applying anything after it, and swaps the engine's schema when the text
 * differs from the one it last saw (kw__sync_schema_follow). Since the text is stored
 * before the empty revision commits, an instance that has applied revision R has the
 * schema that was stored when R committed (or a newer one). The schema of a revision is
 * not versioned: a follower far behind installs the latest stored text, not the one in
 * force at each intermediate revision. If the new schema rejects the graph (a concurrent
 * write on another instance added relationships it does not allow), the swap fails and
 * the instance stays not fresh (fail closed) and logs it.
 *
 * The text last seen starts as the stored one (kw_sync_start), so an instance started
 * with --schema FILE keeps its file's schema until someone writes a new one.
 */
#include <inttypes.h>
#include <string.h>

#include "base/log.h"
#include "sync_int.h"

#define KW_MODULE "sync"

int kw_sync_stored_schema(kw_sync_t *s, kw_buf_t *out)
{
    kw_arena_t *a = kw_arena_new(0);
    char *val = NULL;
    size_t len = 0;
    if (!a)
        return KW_ENOMEM;
    int rc = kw_store_meta_get(s->store, "schema", a, &val, &len);
    if (rc == KW_ENOTFOUND) {
        rc = KW_OK;
        len = 0;
    }
    out->len = 0;
    if (rc == KW_OK && len > 0)
        kw_buf_append(out, val, len);
    kw_arena_free(a);
    if (rc == KW_OK && out->failed)
        rc = KW_ENOMEM;
    return rc;
}

bool kw__sync_same_text(const kw_buf_t *a, const kw_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

int kw__sync_remember_schema(kw_sync_t *s, kw_str_t text)
{
    s->schema_seen.len = 0;
    if (text.len > 0)
        kw_buf_append(&s->schema_seen, text.ptr, text.len);
    return s->schema_seen.failed ? KW_ENOMEM : KW_OK;
}

int kw_sync_schema_try(kw_sync_t *s, kw_str_t text, kw_diag_t *diag)
{
    kw_engine_t *probe = NULL;
    int rc = kw_engine_new(&probe);
    if (rc == KW_OK)
        rc = kw_engine_set_schema(probe, text, NULL, diag);
    if (rc == KW_OK && s->check_schema)
        rc = s->check_schema(probe, diag);
    if (probe)
        kw_engine_free(probe);
    return rc;
}

int kw__sync_schema_follow(kw_sync_t *s, kw_diag_t *diag)
{
    kw_buf_t text;
    kw_buf_init(&text);
    int rc = kw_sync_stored_schema(s, &text);
    if (rc == KW_OK && text.len > 0 && !kw__sync_same_text(&text, &s->schema_seen)) {
        kw_revision_t applied = kw_sync_applied(s);
        kw_str_t t = {text.ptr, text.len};
        rc = kw_engine_set_schema(s->engine, t, NULL, diag);
        if (rc == KW_OK && s->check_schema)
            rc = s->check_schema(s->engine, diag);
        if (rc == KW_OK)
            rc = kw__sync_remember_schema(s, t);
        if (rc == KW_OK)
            kw_log(KW_LOG_INFO, KW_MODULE,
                   "installed the schema stored by another instance (after store revision "
                   "%" PRIu64 ")",
                   (uint64_t)applied);
        else
            kw_log(KW_LOG_ERROR, KW_MODULE,
                   "cannot install the stored schema (after store revision %" PRIu64
                   "): %s: %s; staying not fresh",
                   (uint64_t)applied, kw_err_name(rc), diag && diag->msg[0] ? diag->msg : "");
    }
    kw_buf_free(&text);
    return rc;
}
