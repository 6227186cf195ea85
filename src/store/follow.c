/*
 * store/follow.c - dispatch of the follower calls (kw_store_changes_since,
 * kw_store_wait_change): what lets several instances over one database keep their
 * in-memory graphs current. Only backends with a changelog implement them (PostgreSQL);
 * for the others (SQLite: one instance per file) the ops are NULL and the calls answer
 * KW_EUNSUPPORTED.
 */
#include "store_int.h"

#include "base/log.h"

#define KW_MODULE "store"

int kw_store_changes_since(kw_store_t *s, kw_revision_t after, size_t limit, kw_rel_change_cb cb,
                           void *ud, kw_revision_t *upto)
{
    if (!s || !cb || !upto)
        return KW_EINVAL;
    if (!s->ops->changes_since) {
        kw_log(KW_LOG_DEBUG, KW_MODULE, "changelog needs PostgreSQL (%s)", s->ops->name);
        return KW_EUNSUPPORTED;
    }
    return s->ops->changes_since(s, after, limit, cb, ud, upto);
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
