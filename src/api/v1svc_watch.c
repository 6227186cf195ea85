/*
 * api/v1svc_watch.c - WatchService's Watch as a service function (v1svc_more.h), over the
 * sync module's watch hub (sync/watch.c): the api owns one hub (kw_api_new), pokes it from
 * the sync change hook (a local commit, or another instance's that the follower applied)
 * and stops it before the server drains (kw_api_stop_streams), since a watch never ends
 * by itself.
 */
#include <inttypes.h>
#include <stdio.h>

#include "v1svc_int.h"
#include "v1svc_more.h"

#define KW_MODULE "v1"

typedef struct watch_ctx {
    kw_v1_watch_fn emit;
    void *ud;
    bool checkpoints;
    int emit_rc; /* what emit refused with */
} watch_ctx_t;

static int on_watch_event(void *ud, const kw_watch_event_t *ev)
{
    watch_ctx_t *c = ud;
    kw_v1_watch_event_t out = {ev->rev, ev->changes, ev->n_changes, ev->checkpoint,
                               ev->checkpoint && c->checkpoints};
    int rc = c->emit(c->ud, &out);
    if (rc != KW_OK)
        c->emit_rc = rc;
    return rc;
}

/* No start: what the store has committed now (the instance's applied revision may lag it:
 * a second SQLite process never applies the first's commits). */
kw_revision_t kw_v1_watch_now(kw_api_t *svc)
{
    kw_revision_t after = kw__api_applied(svc), cur = 0;
    if (kw_store_revision(svc->store, &cur) == KW_OK && cur > after)
        after = cur;
    return after;
}

int kw_v1_watch(kw_api_t *svc, const kw_v1_watch_req_t *req, kw_v1_watch_fn emit, void *ud,
                kw_v1_status_t *st)
{
    if (kw__v1_names_watch(req, st) != KW_OK)
        return KW_EINVAL;
    if (req->relationship_kinds && req->n_object_types && req->n_filters)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, NULL,
                          "cannot specify both object types and relationship filters");
    if (req->schema_updates)
        return kw__v1_unimplemented(st, "WATCH_KIND_INCLUDE_SCHEMA_UPDATES",
                                    "keyward's changelog records relationship changes only");
    if (!svc->watch)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_UNAVAILABLE, NULL, "watch is not available");
    kw_revision_t after = req->has_start ? req->start : kw_v1_watch_now(svc);
    kw_watch_filter_t f = {req->object_types, req->n_object_types, req->filters, req->id_prefixes,
                           req->n_filters};
    watch_ctx_t c = {emit, ud, req->checkpoints, KW_OK};
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_watch_run(svc->watch, after, &f, on_watch_event, &c, &d);
    if (c.emit_rc != KW_OK && rc == c.emit_rc)
        return kw_v1_fail(st, rc, KW_GRPC_CANCELLED, NULL, "watch canceled by user");
    switch (rc) {
    case KW_ELIMIT:
        return kw_v1_fail(st, rc, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "watch disconnected: %s",
                          d.msg);
    case KW_EPRUNED:
        return kw_v1_fail(st, rc, KW_GRPC_OUT_OF_RANGE, NULL, "invalid zedtoken: %s", d.msg);
    case KW_EAGAIN:
    case KW_EDB:
        return kw_v1_fail(st, rc, KW_GRPC_UNAVAILABLE, NULL, "%s", d.msg);
    default:
        return kw_v1_fail_rc(st, rc, &d, NULL);
    }
}
