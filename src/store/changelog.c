/*
 * store/changelog.c - dispatch of the follower calls (kw_store_changes_since,
 * kw_store_wait_change, kw_store_prune_changelog): what lets several instances over one
 * database keep their in-memory graphs current, and what keeps the changelog bounded.
 * Only backends with a changelog implement them (PostgreSQL); for the others (SQLite: one
 * instance per file) the ops are NULL and the calls answer KW_EUNSUPPORTED. Also the
 * dispatch of the two feeds of /v1 that every backend serves: kw_store_watch_changes
 * (Watch) and kw_store_export_relationships (ExportBulkRelationships).
 */
#include "store_int.h"

#include "base/log.h"

#define KW_MODULE "store"

int kw_store_changes_since(kw_store_t *s, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                           void *ud, kw_revision_t *upto, kw_diag_t *diag)
{
    if (!s || !cb || !upto)
        return KW_EINVAL;
    if (!s->ops->changes_since) {
        kw_log(KW_LOG_DEBUG, KW_MODULE, "changelog needs PostgreSQL (%s)", s->ops->name);
        return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0, "the %s backend keeps no changelog",
                           s->ops->name);
    }
    return s->ops->changes_since(s, after, limit, cb, ud, upto, diag);
}

int kw_store_prune_changelog(kw_store_t *s, int64_t older_than_us, size_t max_rows,
                             size_t *n_deleted, kw_revision_t *pruned_through, kw_diag_t *diag)
{
    if (!s)
        return KW_EINVAL;
    if (older_than_us <= 0)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "changelog retention must be positive (got %lld us)",
                           (long long)older_than_us);
    if (!s->ops->prune_changelog)
        return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0, "the %s backend keeps no changelog",
                           s->ops->name);
    if (max_rows == 0 || max_rows > (size_t)INT32_MAX)
        max_rows = KW_STORE_PRUNE_MAX_ROWS;
    return s->ops->prune_changelog(s, older_than_us, max_rows, n_deleted, pruned_through, diag);
}

int kw_store_wait_change(kw_store_t *s, int timeout_ms, kw_revision_t *latest)
{
    if (!s || !latest || timeout_ms < 0)
        return KW_EINVAL;
    if (!s->ops->wait_change) {
        kw_log(KW_LOG_DEBUG, KW_MODULE, "change notifications need PostgreSQL (%s)", s->ops->name);
        return KW_EUNSUPPORTED;
    }
    return s->ops->wait_change(s, timeout_ms, latest);
}

int kw_store_watch_changes(kw_store_t *s, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                           void *ud, kw_revision_t *upto, kw_diag_t *diag)
{
    if (!s || !cb || !upto)
        return KW_EINVAL;
    if (!s->ops->watch_changes)
        return kw_diag_set(diag, KW_EUNSUPPORTED, 0, 0, "the %s backend keeps no changelog",
                           s->ops->name);
    return s->ops->watch_changes(s, after, limit, cb, ud, upto, diag);
}

int kw_store_export_relationships(kw_store_t *s, const kw_str_t *after, kw_str_t resource_type,
                                  kw_rel_cb cb, void *ud, kw_revision_t *rev)
{
    if (!s || !cb)
        return KW_EINVAL;
    if (!s->ops->export_relationships)
        return KW_EUNSUPPORTED;
    return s->ops->export_relationships(s, after, resource_type, cb, ud, rev);
}
