/*
 * api/agents.c - the /agents routes.
 *
 * Order of answers (docs/API.md): 401, then 422, then 400, then 404/403, then 409.
 * 404 collapse: an absent agent, an unreadable one and a non-UUID id all answer the same
 * bytes ({"detail": "Agent not found."}, no extra headers). 403 only when `read` holds.
 * The by-name route does the same work for an absent name as for an unreadable one: the
 * store lookup, then a `read` check (on a decoy id when there is no row), then the 404.
 * Field limits (base/limits.h): names KW_MAX_NAME_CHARS, descriptions
 * KW_MAX_DESCRIPTION_CHARS code points; longer is a 422 naming the field and the cap.
 * The list pages BEFORE it loads rows (tag-kw-api-id-order): a page costs `limit` rows.
 */
#include <stdlib.h>
#include <string.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "api"

#define XSTR(x) STR_(x)
#define STR_(x) #x
/* The 422s of the create body name the field and its cap. */
static const char msg_name[] =
    "name is required: 1-" XSTR(KW_MAX_NAME_CHARS) " characters of UTF-8, no control characters "
                                                   "and no '/'.";
static const char msg_description[] =
    "description must be null or at most " XSTR(KW_MAX_DESCRIPTION_CHARS) " characters.";

static const char msg_acp_url[] =
    "acp_url must be null or an absolute http(s) URL of at most " XSTR(
        KW__ACP_URL_MAX) " characters.";

static void agent_404(kw_http_resp_t *resp)
{
    kw_http_resp_error(resp, 404, KW__MSG_AGENT_404);
}

/* Code points of valid UTF-8 (jansson hands over nothing else): the bytes that do not
 * continue a sequence. */
static size_t utf8_chars(kw_str_t s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++)
        n += ((unsigned char)s.ptr[i] & 0xc0) != 0x80;
    return n;
}

typedef struct {
    const kw_agent_t *ag;
    const kw_update_t *ups;
    size_t n;
    const kw__audit_t *au;
} create_ctx_t;

static int create_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    create_ctx_t *c = ud;
    int rc = kw_store_tx_agent_insert(tx, c->ag);
    if (rc == KW_OK)
        rc = kw_store_tx_rel_write(tx, c->ups, c->n, diag);
    if (rc == KW_OK)
        rc = kw__api_audit_append(tx, c->au, diag);
    return rc;
}

void kw__api_agents_create(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_str_t name, desc;
    bool has_name, has_desc;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    json_t *body = kw__api_body(req, resp);
    if (!body)
        return;
    if (!kw__api_json_str(body, "name", &name, &has_name) || !has_name ||
        !kw_api_name_valid(name, false)) {
        json_decref(body);
        kw_http_resp_error(resp, 422, msg_name);
        return;
    }
    if (!kw__api_json_str(body, "description", &desc, &has_desc) ||
        (has_desc && utf8_chars(desc) > KW_MAX_DESCRIPTION_CHARS)) {
        json_decref(body);
        kw_http_resp_error(resp, 422, msg_description);
        return;
    }
    kw_str_t acp;
    bool has_acp;
    if (!kw__api_json_str(body, "acp_url", &acp, &has_acp) ||
        (has_acp && !kw__api_acp_url_ok(acp))) {
        json_decref(body);
        kw_http_resp_error(resp, 422, msg_acp_url);
        return;
    }
    kw_agent_t ag;
    memset(&ag, 0, sizeof(ag));
    ag.name = kw__api_cstr(req->arena, name);
    ag.description = has_desc ? kw__api_cstr(req->arena, desc) : NULL;
    ag.acp_url = has_acp ? kw__api_cstr(req->arena, acp) : NULL;
    json_decref(body);
    if (!ag.name || (has_desc && !ag.description) || (has_acp && !ag.acp_url)) {
        kw__api_fail(req, resp, KW_ENOMEM, "create agent");
        return;
    }
    if (!p.has_account) {
        kw_http_resp_error(resp, 400,
                           "No account selected: send x-selected-account-id or a token with an "
                           "account claim.");
        return;
    }
    bool ok = false;
    int rc = kw__api_can(api, &p, "account", p.account, "create_agent", &ok, NULL);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check create_agent");
        return;
    }
    if (!ok) {
        kw_http_resp_error(resp, 403, "Not allowed to create agents in this account.");
        return;
    }
    ag.account_id = kw__api_cstr(req->arena, p.account);
    if (!ag.account_id) {
        kw__api_fail(req, resp, KW_ENOMEM, "create agent");
        return;
    }
    ag.created_at_us = kw_api_now_us();
    kw_api_uuid_v7(ag.created_at_us, ag.id);
    kw_str_t id = kw_str_c(ag.id);
    kw_update_t ups[3] = {
        {KW_OP_TOUCH,
         {{KW_STR("agent"), id}, KW_STR("account"), {KW_STR("account"), p.account, KW_STR_NULL}}},
        {KW_OP_TOUCH, {{KW_STR("agent"), id}, KW_STR("owner"), p.subject}},
        {KW_OP_TOUCH, {{KW_STR("agent"), id}, KW_STR("self"), {KW_STR("agent"), id, KW_STR_NULL}}},
    };
    kw_diag_t d;
    kw_diag_clear(&d);
    rc = kw_engine_validate(api->engine, ups, 3, &d);
    if (rc != KW_OK) {
        /* e.g. an agent principal cannot own an agent under agentex.zed */
        kw_http_resp_error(resp, 403, "This principal cannot own an agent.");
        return;
    }
    kw__audit_t au;
    kw__api_audit_agent(&au, req, "agent.create", &ag);
    create_ctx_t c = {&ag, ups, 3, &au};
    kw_revision_t rev = 0;
    rc = kw__api_write(api, create_tx, &c, 0, &rev, &d);
    if (rc == KW_ECONFLICT || rc == KW_EEXISTS) {
        kw_http_resp_error(resp, 409, "An agent with this name already exists in the account.");
        return;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "create agent");
        return;
    }
    resp->status = 200;
    kw__api_agent_json(&resp->body, &ag);
    kw__api_revision(req, resp, rev);
}

/* Answers the agent `id` if readable (200) or the agent 404. */
static void answer_agent(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                         const kw__principal_t *p, kw_str_t id)
{
    bool ok = false;
    kw_revision_t rev = 0;
    kw_agent_t ag;
    if (!kw_api_is_uuid(id)) {
        agent_404(resp);
        return;
    }
    int rc = kw__api_can(api, p, "agent", id, "read", &ok, &rev);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check agent read");
        return;
    }
    if (!ok) {
        agent_404(resp);
        return;
    }
    rc = kw_store_agent_get(api->store, id, req->arena, &ag);
    if (rc == KW_ENOTFOUND) {
        agent_404(resp);
        return;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "get agent");
        return;
    }
    resp->status = 200;
    kw__api_agent_json(&resp->body, &ag);
    kw__api_revision(req, resp, rev);
}

void kw__api_agents_get(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    if (kw__api_reserved_id(req, resp))
        return;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    answer_agent(api, req, resp, &p, req->params[0]);
}

void kw__api_agents_get_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_agent_t ag;
    bool ok = false;
    kw_revision_t rev = 0;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    if (!kw_api_name_valid(req->params[0], false)) {
        kw_http_resp_error(resp, 422, "Invalid agent name.");
        return;
    }
    if (!p.has_account) {
        kw_http_resp_error(resp, 400,
                           "No account selected: send x-selected-account-id or a token with an "
                           "account claim.");
        return;
    }
    int rc = kw_store_agent_get_by_name(api->store, p.account, req->params[0], req->arena, &ag);
    if (rc != KW_OK && rc != KW_ENOTFOUND) {
        kw__api_fail(req, resp, rc, "get agent by name");
        return;
    }
    /* The same check whether the name exists or not (the decoy when it does not), so an
     * absent name does not answer measurably sooner than an unreadable one. The row is
     * the one just read: agents are never updated in place. */
    bool found = rc == KW_OK;
    rc = kw__api_can(api, &p, "agent", found ? kw_str_c(ag.id) : KW_STR(KW__DECOY_ID), "read", &ok,
                     &rev);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check agent read");
        return;
    }
    if (!found || !ok) {
        agent_404(resp);
        return;
    }
    resp->status = 200;
    kw__api_agent_json(&resp->body, &ag);
    kw__api_revision(req, resp, rev);
}

static int collect_id(kw_str_t id, void *ud)
{
    if (!kw_api_is_uuid(id))
        return 0; /* not a row the API made: cannot be listed */
    return kw__api_ids_add(ud, id);
}

static int cmp_id(const void *x, const void *y)
{
    const kw_str_t *a = x, *b = y;
    int c = memcmp(a->ptr, b->ptr, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Sorts ids[0..n) as bytes and drops repeats; returns the new count. */
static size_t sort_ids(kw_str_t *ids, size_t n)
{
    if (n < 2)
        return n;
    qsort(ids, n, sizeof(*ids), cmp_id);
    size_t w = 1;
    for (size_t i = 1; i < n; i++)
        if (cmp_id(&ids[w - 1], &ids[i]) != 0)
            ids[w++] = ids[i];
    return w;
}

/* Ids asked of the id index at a time while looking for a page. */
#define PRESENT_BATCH 256

/* The rows of one page: the readable ids (sorted) are walked through the id index
 * (kw_store_agents_present: no row is read) to pass over the first `skip` agents that have
 * a row and pick the next `limit`; only those rows are loaded. An id without a row (an
 * agent being deleted, or relationships an administrator wrote for an agent that does not
 * exist) is on no page, so pages never repeat or skip an agent. Rows come back in
 * (created_at, id) order. */
static int load_page(kw_api_t *api, kw_arena_t *a, const kw_str_t *ids, size_t n, size_t skip,
                     size_t limit, bool peek, kw_agent_t **out, size_t *n_out, kw_str_t *last,
                     bool *more)
{
    /* peek: one present id past the page is looked for (never loaded): *more says whether
     * there is one, *last is the page's last id (list cursors). */
    size_t take = limit + (peek ? 1 : 0);
    kw_str_t *pick = kw_arena_alloc(a, take * sizeof(*pick));
    bool present[PRESENT_BATCH];
    size_t seen = 0, got = 0;
    if (!pick)
        return KW_ENOMEM;
    for (size_t next = 0; got < take && next < n;) {
        size_t need = (skip - seen) + (take - got); /* ids that may still be needed */
        size_t want = n - next;
        if (want > PRESENT_BATCH)
            want = PRESENT_BATCH;
        if (want > need)
            want = need;
        int rc = kw_store_agents_present(api->store, ids + next, want, a, present);
        if (rc != KW_OK)
            return rc;
        for (size_t i = 0; i < want && got < take; i++) {
            if (!present[i])
                continue;
            if (seen < skip)
                seen++;
            else
                pick[got++] = ids[next + i];
        }
        next += want;
    }
    *more = got > limit;
    if (got > limit)
        got = limit;
    *last = got ? pick[got - 1] : KW_STR_NULL;
    kw_agent_t *rows = NULL;
    size_t n_rows = 0;
    if (got > 0) {
        int rc = kw_store_agents_by_ids(api->store, pick, got, a, &rows, &n_rows);
        if (rc != KW_OK)
            return rc;
        atomic_fetch_add_explicit(&api->list_rows_agents, n_rows, memory_order_relaxed);
    }
    *out = rows;
    *n_out = n_rows;
    return KW_OK;
}

void kw__api_agents_list(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    long limit, page;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    if (!kw__api_page(req, resp, &limit, &page))
        return;
    /* A cursor (tag-kw-api-cursor) is bound to this route and this caller and holds the
     * last id of the page it follows: the page starts after it in the sorted readable ids
     * (a binary search), so page 20 costs what page 1 costs. */
    bool has_cursor = false;
    uint8_t pos[64];
    size_t pos_len = 0;
    char *scope_c = kw_arena_sprintf(req->arena, "/agents\n%s", p.subject_text);
    if (!scope_c) {
        kw__api_fail(req, resp, KW_ENOMEM, "list agents");
        return;
    }
    kw_str_t scope = kw_str_c(scope_c);
    if (!kw__api_cursor_in(api, req, resp, scope, &has_cursor, pos, sizeof(pos), &pos_len))
        return;
    kw__api_ids_t l = {req->arena, NULL, 0, 0, KW_OK};
    kw_revision_t rev = kw__api_applied(api), engine_rev = 0; /* store revision, read first */
    int rc = kw_engine_lookup_resources(api->engine, KW_STR("agent"), KW_STR("read"), p.subject,
                                        collect_id, &l, &engine_rev, NULL);
    if (rc == KW_OK)
        rc = l.rc;
    if (rc != KW_OK && rc != KW_EINVAL) {
        kw_free(l.ids);
        kw__api_fail(req, resp, rc, "lookup agents");
        return;
    }
    /* Page first, then load (tag-kw-api-id-order): an agent's id is the UUIDv7 of its
     * created_at microsecond (kw_api_uuid_v7 of kw_api_now_us: 48 bits of milliseconds,
     * then the sub-millisecond fraction, so distinct microseconds give increasing ids),
     * and stored ids are lowercase hex: ordering the ids as bytes orders the agents by
     * (created_at, id). So the page is picked among the readable ids (through the id index)
     * and only its rows are read: a page costs `limit` rows, whatever the caller can read. */
    size_t n = sort_ids(l.ids, l.n);
    size_t skip = has_cursor ? 0 : (size_t)(page - 1) * (size_t)limit, from = 0;
    if (pos_len) { /* the first id after the cursor's */
        kw_str_t after = {(const char *)pos, pos_len};
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cmp_id(&l.ids[mid], &after) <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        from = lo;
    }
    kw_agent_t *rows = NULL;
    size_t n_rows = 0;
    kw_str_t last = KW_STR_NULL;
    bool more = false;
    /* l.ids is NULL when nothing is readable (no offset on a null pointer) */
    rc = load_page(api, req->arena, l.ids ? l.ids + from : NULL, n - from, skip, (size_t)limit,
                   has_cursor, &rows, &n_rows, &last, &more);
    if (rc == KW_OK && has_cursor && more)
        rc = kw__api_cursor_out(api, req, resp, scope, last);
    kw_free(l.ids);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "list agents");
        return;
    }
    resp->status = 200;
    kw_buf_puts(&resp->body, "[");
    for (size_t i = 0; i < n_rows; i++) {
        if (i)
            kw_buf_puts(&resp->body, ", ");
        kw__api_agent_json(&resp->body, &rows[i]);
    }
    kw_buf_puts(&resp->body, "]");
    kw__api_revision(req, resp, rev);
}

typedef struct {
    kw_str_t id;
    const kw__audit_t *au;
    kw_http_req_t *req;
} delete_ctx_t;

/* The agent's row, its keys and every relationship of either go in one transaction with
 * the agent.delete event and one key.delete event per key it took with it: each key's own
 * history ends with its deletion. The keys are those whose parent_agent relationship the
 * delete removed (read from the transaction, so a key created a moment before is not
 * missed). */
static int delete_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    const delete_ctx_t *c = ud;
    int rc = kw_store_tx_agent_delete(tx, c->id);
    if (rc == KW_OK)
        rc = kw__api_audit_append(tx, c->au, diag);
    const kw_update_t *ups = NULL;
    size_t n = 0;
    if (rc == KW_OK)
        kw_store_tx_changes(tx, &ups, &n);
    for (size_t i = 0; rc == KW_OK && i < n; i++) {
        const kw_rel_t *r = &ups[i].rel;
        if (ups[i].op != KW_OP_DELETE || !kw_str_eq(r->resource.type, KW_STR("agent_api_key")) ||
            !kw_str_eq(r->relation, KW_STR("parent_agent")))
            continue;
        kw__audit_t ka;
        kw__api_audit_key_cascade(&ka, c->req, c->au, r->resource.id, c->id);
        rc = kw__api_audit_append(tx, &ka, diag);
    }
    return rc;
}

void kw__api_agents_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    bool ok = false;
    if (kw__api_reserved_id(req, resp))
        return;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    kw_str_t id = req->params[0];
    if (!kw_api_is_uuid(id)) {
        agent_404(resp);
        return;
    }
    int rc = kw__api_can(api, &p, "agent", id, "read", &ok, NULL);
    if (rc == KW_OK && !ok) {
        agent_404(resp);
        return;
    }
    if (rc == KW_OK)
        rc = kw__api_can(api, &p, "agent", id, "delete", &ok, NULL);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check agent delete");
        return;
    }
    if (!ok) {
        kw_http_resp_error(resp, 403, "Not allowed to delete this agent.");
        return;
    }
    kw_revision_t rev = 0;
    kw__audit_t au;
    rc = kw__api_audit_for_agent(api, req, "agent.delete", id, &au);
    delete_ctx_t c = {id, &au, req};
    if (rc == KW_OK)
        rc = kw__api_write(api, delete_tx, &c, 0, &rev, NULL);
    if (rc == KW_ENOTFOUND) {
        agent_404(resp);
        return;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "delete agent");
        return;
    }
    char *msg = kw_arena_sprintf(req->arena, "Agent with ID %.*s deleted", KW_STR_FMT(id));
    if (!msg) {
        kw__api_fail(req, resp, KW_ENOMEM, "delete agent");
        return;
    }
    kw__api_string_body(resp, msg);
    kw__api_revision(req, resp, rev);
}

/* ---- PATCH /agents/{id}: the agent's acp_url (`update` on the agent) ---- */

typedef struct {
    kw_str_t id;
    const char *acp_url;
    const kw__audit_t *au;
} patch_ctx_t;

static int patch_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    patch_ctx_t *c = ud;
    int rc = kw_store_tx_agent_set_acp_url(tx, c->id, c->acp_url);
    return rc == KW_OK ? kw__api_audit_append(tx, c->au, diag) : rc;
}

void kw__api_agents_patch(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    bool ok = false;
    if (kw__api_reserved_id(req, resp))
        return;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    json_t *body = kw__api_body(req, resp);
    if (!body)
        return;
    kw_str_t acp;
    bool has_acp;
    if (!json_object_get(body, "acp_url") || !kw__api_json_str(body, "acp_url", &acp, &has_acp) ||
        (has_acp && !kw__api_acp_url_ok(acp))) {
        json_decref(body);
        kw_http_resp_error(resp, 422, msg_acp_url);
        return;
    }
    patch_ctx_t c = {req->params[0], has_acp ? kw__api_cstr(req->arena, acp) : NULL, NULL};
    json_decref(body);
    if (has_acp && !c.acp_url) {
        kw__api_fail(req, resp, KW_ENOMEM, "update agent");
        return;
    }
    if (!kw_api_is_uuid(c.id)) {
        agent_404(resp);
        return;
    }
    int rc = kw__api_can(api, &p, "agent", c.id, "read", &ok, NULL);
    if (rc == KW_OK && !ok) {
        agent_404(resp);
        return;
    }
    if (rc == KW_OK)
        rc = kw__api_can(api, &p, "agent", c.id, "update", &ok, NULL);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check agent update");
        return;
    }
    if (!ok) {
        kw_http_resp_error(resp, 403, "Not allowed to update this agent.");
        return;
    }
    kw_revision_t rev = 0;
    /* agent.update: the agent as it was, with the acp_url it gets (null: cleared). */
    kw__audit_t au;
    rc = kw__api_audit_for_agent(api, req, "agent.update", c.id, &au);
    if (rc == KW_OK) {
        kw__api_audit_add(&au, req, "acp_url", c.acp_url ? json_string(c.acp_url) : json_null());
        rc = au.rc;
    }
    c.au = &au;
    if (rc == KW_OK)
        rc = kw__api_write(api, patch_tx, &c, 0, &rev, NULL);
    if (rc == KW_ENOTFOUND) {
        agent_404(resp);
        return;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "update agent");
        return;
    }
    kw_agent_t ag;
    rc = kw_store_agent_get(api->store, c.id, req->arena, &ag);
    if (rc == KW_ENOTFOUND) {
        agent_404(resp);
        return;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "update agent");
        return;
    }
    resp->status = 200;
    kw__api_agent_json(&resp->body, &ag);
    kw__api_revision(req, resp, rev);
}
