/*
 * api/routes.c - the service's route table, its context (kw_api_t), its extra metrics
 * and the schema requirements of the routes (given to the sync module as its
 * check_schema callback by `serve`).
 *
 * Invariant: every route of docs/API.md appears here exactly once; /openapi.json
 * (ops.c) describes the same set (tag-kw-api-routes: keep the two in step).
 */
#include <inttypes.h>
#include <string.h>

#include "api_int.h"
#include "forward_int.h"

/* The sync module applied a revision or changed freshness: parked requests look again. */
static void on_sync_change(void *ud)
{
    kw_api_t *api = ud;
    kw_watch_hub_poke(api->watch); /* a leaf lock: taken before, never under, http_mu */
    pthread_mutex_lock(&api->http_mu);
    if (api->http)
        kw_http_server_wake(api->http);
    pthread_mutex_unlock(&api->http_mu);
}

int kw_api_new(kw_engine_t *engine, kw_store_t *store, const kw_keyring_t *keyring, kw_sync_t *sync,
               kw_api_t **out)
{
    if (!engine || !store || !keyring || !sync || !out)
        return KW_EINVAL;
    int rc = kw__api_forward_init();
    if (rc != KW_OK)
        return rc;
    kw_api_t *api = kw_calloc(1, sizeof(*api));
    rc = KW_ENOMEM;
    if (!api)
        goto fail_api;
    api->engine = engine;
    api->store = store;
    api->keyring = keyring;
    api->sync = sync;
    if (pthread_mutex_init(&api->http_mu, NULL) != 0)
        goto fail_mu;
    rc = kw__lastused_new(store, &api->lastused);
    if (rc != KW_OK)
        goto fail_lastused;
    rc = kw__ratelimit_new(&api->verify_limits);
    if (rc != KW_OK)
        goto fail_limits;
    rc = kw_watch_hub_new(store, NULL, &api->watch);
    if (rc != KW_OK)
        goto fail_watch;
    kw_sync_on_change(sync, on_sync_change, api);
    *out = api;
    return KW_OK;
fail_watch:
    kw__ratelimit_free(api->verify_limits);
fail_limits:
    kw__lastused_free(api->lastused);
fail_lastused:
    pthread_mutex_destroy(&api->http_mu);
fail_mu:
    kw_free(api);
fail_api:
    kw__api_forward_fini();
    return rc;
}

void kw_api_free(kw_api_t *api)
{
    if (!api)
        return;
    kw_sync_on_change(api->sync, NULL, NULL);
    kw__ratelimit_free(api->verify_limits);
    kw__lastused_free(api->lastused); /* flushes the pending last uses */
    kw_watch_hub_free(api->watch);
    kw_free(api->v1_keys);
    pthread_mutex_destroy(&api->http_mu);
    kw_free(api);
    kw__api_forward_fini();
}

void kw_api_serve_on(kw_api_t *api, kw_http_server_t *srv)
{
    if (!srv) /* the server stops: end every watch, which never ends by itself */
        kw_watch_hub_stop(api->watch);
    pthread_mutex_lock(&api->http_mu);
    api->http = srv;
    pthread_mutex_unlock(&api->http_mu);
}

static const kw_http_route_t routes[] = {
    {"POST", "/agents", kw__api_agents_create, 0},
    {"GET", "/agents", kw__api_agents_list, 0},
    {"GET", "/agents/{id}", kw__api_agents_get, 0},
    {"DELETE", "/agents/{id}", kw__api_agents_delete, 0},
    {"PATCH", "/agents/{id}", kw__api_agents_patch, 0},
    {"GET", "/agents/name/{name}", kw__api_agents_get_by_name, 0},
    {"POST", "/agent_api_keys", kw__api_keys_create, 0},
    {"GET", "/agent_api_keys", kw__api_keys_list, 0},
    {"GET", "/agent_api_keys/{id}", kw__api_keys_get, 0},
    {"DELETE", "/agent_api_keys/{id}", kw__api_keys_delete, 0},
    {"GET", "/agent_api_keys/name/{name}", kw__api_keys_get_by_name, 0},
    {"DELETE", "/agent_api_keys/name/{name}", kw__api_keys_delete_by_name, 0},
    {"POST", "/agent_api_keys/webhook-trigger", kw__api_webhook_trigger, 0},
    /* The forward ingress authenticates deliveries itself (forward.c). */
    {"GET", "/agents/forward/name/{agent_name}/{path...}", kw__api_forward, KW__ROUTE_PUBLIC},
    {"POST", "/agents/forward/name/{agent_name}/{path...}", kw__api_forward, KW__ROUTE_PUBLIC},
    {"POST", "/agent_api_keys/{id}/rotate", kw__api_keys_rotate, 0},
    {"POST", "/auth/verify", kw__api_auth_verify, 0},
    {"GET", "/healthz", kw__api_healthz, KW__ROUTE_PUBLIC},
    {"GET", "/readyz", kw__api_readyz, KW__ROUTE_PUBLIC},
    {"GET", "/metrics", kw__api_metrics_route, KW__ROUTE_PUBLIC},
    {"GET", "/openapi.json", kw__api_openapi, KW__ROUTE_PUBLIC},
    {"POST", "/v1/relationships/write", kw__api_v1_rel_write, 0},
    {"POST", "/v1/relationships/read", kw__api_v1_rel_read, 0},
    {"POST", "/v1/relationships/delete", kw__api_v1_rel_delete, 0},
    {"POST", "/v1/permissions/check", kw__api_v1_check, 0},
    {"POST", "/v1/permissions/checkbulk", kw__api_v1_checkbulk, 0},
    {"POST", "/v1/permissions/resources", kw__api_v1_resources, 0},
    {"POST", "/v1/permissions/subjects", kw__api_v1_subjects, 0},
    {"POST", "/v1/permissions/expand", kw__api_v1_expand, 0},
    {"POST", "/v1/schema/read", kw__api_v1_schema_read, 0},
    {"POST", "/v1/schema/write", kw__api_v1_schema_write, 0},
    {"GET", "/audit_events", kw__api_audit_events, 0},
    {"POST", "/v1/schema/reflectschema", kw__api_v1_reflect, 0},
    {"POST", "/v1/schema/permissions/computable", kw__api_v1_computable, 0},
    {"POST", "/v1/schema/permissions/dependent", kw__api_v1_dependent, 0},
    {"POST", "/v1/schema/diffschema", kw__api_v1_diff, 0},
    {"POST", "/v1/watch", kw__api_v1_watch, 0},
    {"POST", "/v1/relationships/exportbulk", kw__api_v1_export, 0},
    {"POST", "/v1/relationships/importbulk", kw__api_v1_import, KW_HTTP_ROUTE_STREAM_BODY},
    /* ExperimentalService's aliases of the same shapes */
    {"POST", "/v1/experimental/reflectschema", kw__api_v1_reflect, 0},
    {"POST", "/v1/experimental/permissions/computable", kw__api_v1_computable, 0},
    {"POST", "/v1/experimental/permissions/dependent", kw__api_v1_dependent, 0},
    {"POST", "/v1/experimental/diffschema", kw__api_v1_diff, 0},
    {"POST", "/v1/experimental/relationships/bulkexport", kw__api_v1_export, 0},
    {"POST", "/v1/experimental/relationships/bulkimport", kw__api_v1_import,
     KW_HTTP_ROUTE_STREAM_BODY},
};

const kw_http_route_t *kw_api_routes(size_t *n)
{
    *n = KW_ARRAY_LEN(routes);
    return routes;
}

/* One unlabelled sample in the Prometheus text format, with its HELP and TYPE lines. */
static void metric_u64(kw_buf_t *out, const char *name, const char *type, const char *help,
                       uint64_t v)
{
    kw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name,
                  v);
}

static uint64_t relaxed(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

void kw_api_metrics(kw_buf_t *out, void *ud)
{
    kw_api_t *api = ud;
    kw_sync_stats_t st;
    kw_sync_stats(api->sync, &st);
    kw_buf_puts(out, "# HELP keyward_checks_total Permission checks performed by the API.\n"
                     "# TYPE keyward_checks_total counter\n");
    kw_buf_printf(out, "keyward_checks_total{result=\"allowed\"} %" PRIu64 "\n",
                  relaxed(&api->checks_allowed));
    kw_buf_printf(out, "keyward_checks_total{result=\"denied\"} %" PRIu64 "\n",
                  relaxed(&api->checks_denied));
    kw_buf_printf(out, "keyward_checks_total{result=\"error\"} %" PRIu64 "\n",
                  relaxed(&api->checks_error));
    kw_buf_puts(out, "# HELP keyward_list_rows_loaded_total Rows the list routes read from the "
                     "store.\n# TYPE keyward_list_rows_loaded_total counter\n");
    kw_buf_printf(out, "keyward_list_rows_loaded_total{route=\"/agents\"} %" PRIu64 "\n",
                  relaxed(&api->list_rows_agents));
    kw_buf_printf(out, "keyward_list_rows_loaded_total{route=\"/agent_api_keys\"} %" PRIu64 "\n",
                  relaxed(&api->list_rows_keys));
    kw__lastused_metrics(api->lastused, out);
    kw__api_verify_metrics(api, out);
    metric_u64(out, "keyward_relationships", "gauge", "Relationships in the authorization graph.",
               (uint64_t)kw_engine_count(api->engine));
    metric_u64(out, "keyward_revision", "gauge", "Store revision the authorization graph reflects.",
               (uint64_t)st.applied);
    metric_u64(out, "keyward_fresh", "gauge", "1 when the graph is caught up with the database.",
               st.fresh ? 1 : 0);
    /* Group commit (sync/commit.c). */
    metric_u64(out, "keyward_write_batches_total", "counter",
               "Store transactions committed by the write path (group commit: one per batch of "
               "writes).",
               st.write_batches);
    metric_u64(out, "keyward_write_batch_jobs_total", "counter",
               "Writes carried by those transactions (jobs / batches = mean batch size).",
               st.write_jobs);
    metric_u64(out, "keyward_write_batch_max_jobs", "gauge", "The largest batch committed.",
               st.write_max_jobs);
    metric_u64(out, "keyward_write_deferred_total", "counter",
               "Writes moved to a later batch because an earlier write of the batch changed the "
               "same relationship.",
               st.write_deferred);
    /* Changelog retention and the follower (sync/follower.c; stay 0 on SQLite). */
    metric_u64(out, "keyward_changelog_pruned_rows_total", "counter",
               "Changelog rows this instance pruned.", st.changelog_pruned);
    metric_u64(out, "keyward_changelog_horizon", "gauge",
               "Highest revision whose changes may be pruned, as this instance last saw it.",
               st.changelog_horizon);
    metric_u64(out, "keyward_resyncs_total", "counter",
               "Full reloads of the graph after falling behind the pruned changelog.", st.resyncs);
    metric_u64(out, "keyward_follower_wakeups_total", "counter",
               "Times the follower was woken by a change notification (LISTEN/NOTIFY) rather "
               "than its 1 s poll.",
               st.wakeups);
    metric_u64(out, "keyward_expired_relationships_swept_total", "counter",
               "Expired relationships this instance's expiry sweeps deleted.", st.expired_swept);
    kw_buf_puts(out, "# HELP keyward_last_resync_seconds How long the last full reload took.\n"
                     "# TYPE keyward_last_resync_seconds gauge\n");
    kw_buf_printf(out, "keyward_last_resync_seconds %.3f\n", (double)st.last_resync_ms / 1000.0);
    kw__api_forward_metrics(out);
}

/* What the routes check and write (tag-kw-api-schema-needs: agents.c, keys_routes.c,
 * auth.c). A relation the service writes must be a relation; a permission it checks may
 * be either. */
static const struct {
    const char *type;
    const char *name; /* "" = just the definition */
    bool must_be_relation;
} needs[] = {
    {"account", "", false},
    {"account", "create_agent", false},
    {"agent", "", false},
    {"agent", "account", true},
    {"agent", "owner", true},
    {"agent", "self", true},
    {"agent", "read", false},
    {"agent", "update", false},
    {"agent", "delete", false},
    {"agent_api_key", "", false},
    {"agent_api_key", "parent_agent", true},
    {"agent_api_key", "account", true},
    {"agent_api_key", "owner", true},
    {"agent_api_key", "read", false},
    {"agent_api_key", "delete", false},
    {"user", "", false},
};

int kw_api_check_schema(kw_engine_t *engine, kw_diag_t *diag)
{
    for (size_t i = 0; i < KW_ARRAY_LEN(needs); i++) {
        bool is_perm = false;
        if (!kw_engine_has(engine, kw_str_c(needs[i].type), kw_str_c(needs[i].name), &is_perm)) {
            if (needs[i].name[0] == '\0')
                return kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                                   "schema lacks definition '%s', which the API routes need",
                                   needs[i].type);
            return kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                               "schema lacks %s '%s' on definition '%s', which the API routes "
                               "need",
                               needs[i].must_be_relation ? "relation" : "relation or permission",
                               needs[i].name, needs[i].type);
        }
        if (needs[i].must_be_relation && is_perm)
            return kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                               "'%s' on definition '%s' must be a relation (the API writes it), "
                               "not a permission",
                               needs[i].name, needs[i].type);
    }
    /* The subject types the service writes must be allowed on those relations. */
    static const char *const writes[][3] = {
        {"agent", "account", "account"},
        {"agent", "owner", "user"},
        {"agent", "owner", "service_account"},
        {"agent", "self", "agent"},
        {"agent_api_key", "parent_agent", "agent"},
        {"agent_api_key", "account", "account"},
        {"agent_api_key", "owner", "user"},
        {"agent_api_key", "owner", "service_account"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(writes); i++) {
        /* service_account is optional: without it, such tokens simply own nothing */
        if (strcmp(writes[i][2], "service_account") == 0 &&
            !kw_engine_has(engine, KW_STR("service_account"), KW_STR_NULL, NULL))
            continue;
        kw_update_t up = {KW_OP_TOUCH,
                          {{kw_str_c(writes[i][0]), KW_STR("x")},
                           kw_str_c(writes[i][1]),
                           {kw_str_c(writes[i][2]), KW_STR("x"), KW_STR_NULL}}};
        kw_diag_t d;
        kw_diag_clear(&d);
        if (kw_engine_validate(engine, &up, 1, &d) != KW_OK)
            return kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                               "schema does not allow %s#%s@%s, which the API writes: %s",
                               writes[i][0], writes[i][1], writes[i][2], d.msg);
    }
    return KW_OK;
}
