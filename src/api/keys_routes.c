/*
 * api/keys_routes.c - the /agent_api_keys routes.
 *
 * Every route that names an agent (agent_id | agent_name) resolves it first: absent or
 * unreadable -> the agent 404. Keys themselves collapse to the key 404. Secrets: a
 * generated or supplied key exists in clear only in a stack buffer and the one response
 * body that shows it; the buffer is wiped with sodium_memzero before returning. The
 * store gets internal/external keys as keyed hashes and github/slack secrets sealed
 * (associated data = the key id).
 */
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "api"

#define KEY_BATCH 256

#define XSTR(x) STR_(x)
#define STR_(x) #x

/* The 422 of a bad key name names the cap. */
static const char msg_name[] =
    "name is required: 1-" XSTR(KW_MAX_NAME_CHARS) " characters of UTF-8, no control characters.";

/* A supplied internal/external api_key that some key already has (whose agent or tenant
 * ever): refused with a message that says nothing about where the secret is in use. */
#define MSG_KEY_UNUSABLE                                                                           \
    "api_key cannot be used: supply another value, or leave api_key out to have one "              \
    "generated."

static void agent_404(kw_http_resp_t *resp)
{
    kw_http_resp_error(resp, 404, KW__MSG_AGENT_404);
}

static void key_404(kw_http_resp_t *resp)
{
    kw_http_resp_error(resp, 404, KW__MSG_KEY_404);
}

static const char *key_type_of(kw_str_t t)
{
    static const char *const types[] = {"internal", "external", "github", "slack"};
    for (size_t i = 0; i < KW_ARRAY_LEN(types); i++)
        if (kw_str_eq_c(t, types[i]))
            return types[i];
    return NULL;
}

/* Which agent a request names: from the JSON body or the query. */
typedef struct {
    bool has_id, has_name;
    kw_str_t id, name;
} agent_ref_t;

/* Query form: 422 for an invalid agent_name or undecodable value; false -> answered. */
static bool ref_from_query(kw_http_req_t *req, kw_http_resp_t *resp, agent_ref_t *r)
{
    bool bad1 = false, bad2 = false;
    memset(r, 0, sizeof(*r));
    r->id = kw_http_query(req, "agent_id", &r->has_id, &bad1);
    r->name = kw_http_query(req, "agent_name", &r->has_name, &bad2);
    if (bad2 || (r->has_name && !kw_api_name_valid(r->name, false))) {
        kw_http_resp_error(resp, 422, "Invalid agent_name.");
        return false;
    }
    if (bad1) { /* an undecodable id is not a UUID: simply absent, like any other */
        r->has_id = true;
        r->id = KW_STR("-");
    }
    return true;
}

/* The 400 rules: exactly one of agent_id/agent_name; agent_name needs an account. */
static bool ref_rules(kw_http_resp_t *resp, const agent_ref_t *r, const kw__principal_t *p)
{
    if (r->has_id == r->has_name) {
        kw_http_resp_error(resp, 400, "Give exactly one of agent_id and agent_name.");
        return false;
    }
    if (r->has_name && !p->has_account) {
        kw_http_resp_error(resp, 400,
                           "No account selected: send x-selected-account-id or a token with an "
                           "account claim.");
        return false;
    }
    return true;
}

/* Resolves the agent and checks `read` (agent 404 otherwise). false -> answered. */
static bool resolve_agent(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                          const kw__principal_t *p, const agent_ref_t *r, kw_agent_t *ag,
                          kw_revision_t *rev)
{
    int rc;
    if (r->has_id) {
        if (!kw_api_is_uuid(r->id)) {
            agent_404(resp);
            return false;
        }
        bool ok = false;
        rc = kw__api_can(api, p, "agent", r->id, "read", &ok, rev);
        if (rc == KW_OK && !ok) {
            agent_404(resp);
            return false;
        }
        if (rc == KW_OK)
            rc = kw_store_agent_get(api->store, r->id, req->arena, ag);
    } else {
        rc = kw_store_agent_get_by_name(api->store, p->account, r->name, req->arena, ag);
        if (rc == KW_OK || rc == KW_ENOTFOUND) {
            /* The same check for an absent name (on the decoy) as for an unreadable one. */
            bool found = rc == KW_OK, ok = false;
            rc = kw__api_can(api, p, "agent", found ? kw_str_c(ag->id) : KW_STR(KW__DECOY_ID),
                             "read", &ok, rev);
            if (rc == KW_OK && (!found || !ok)) {
                agent_404(resp);
                return false;
            }
        }
    }
    if (rc == KW_ENOTFOUND) {
        agent_404(resp);
        return false;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "resolve agent");
        return false;
    }
    return true;
}

/* ---- create ---- */

/* Does a key with this keyed hash exist? KW_OK + *used, or the store's error. */
static int hash_in_use(kw_api_t *api, kw_arena_t *a, const uint8_t *hash, bool *used)
{
    kw_apikey_t row;
    int rc = kw_store_key_find_by_hash(api->store, hash, KW_KEY_HASH_LEN, a, &row);
    *used = rc == KW_OK;
    return rc == KW_ENOTFOUND ? KW_OK : rc;
}

bool kw__api_key_new(kw_api_t *api, kw_http_req_t *req, const kw_apikey_t *key,
                     const char *account_id, kw_subject_t owner, kw__key_new_t *kn)
{
    kw_str_t kid = kw_str_c(key->id);
    kn->key = key;
    kn->ups[0] = (kw_update_t){KW_OP_TOUCH,
                               {{KW_STR("agent_api_key"), kid},
                                KW_STR("parent_agent"),
                                {KW_STR("agent"), kw_str_c(key->agent_id), KW_STR_NULL}}};
    kn->ups[1] = (kw_update_t){KW_OP_TOUCH,
                               {{KW_STR("agent_api_key"), kid},
                                KW_STR("account"),
                                {KW_STR("account"), kw_str_c(account_id), KW_STR_NULL}}};
    kn->ups[2] =
        (kw_update_t){KW_OP_TOUCH, {{KW_STR("agent_api_key"), kid}, KW_STR("owner"), owner}};
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_engine_validate(api->engine, kn->ups, 3, &d) != KW_OK)
        return false;
    kw__api_audit_key(&kn->au, req, "key.create", key, account_id);
    return true;
}

static int key_new_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    kw__key_new_t *kn = ud;
    int rc = kw_store_tx_key_insert(tx, kn->key);
    if (rc == KW_OK)
        rc = kw_store_tx_rel_write(tx, kn->ups, 3, diag);
    if (rc == KW_OK)
        rc = kw__api_audit_append(tx, &kn->au, diag);
    return rc;
}

int kw__api_key_new_write(kw_api_t *api, kw__key_new_t *kn, kw_revision_t *rev, kw_diag_t *diag)
{
    return kw__api_write(api, key_new_tx, kn, 0, rev, diag);
}

/* Wall-clock microseconds (no ordering needed, unlike kw_api_now_us's ids). */
static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* An optional integer member in [min, max]: absent or null -> *present = false. A wrong
 * type or a value out of range -> false. */
static bool json_int_in(json_t *obj, const char *key, long min, long max, long *out, bool *present)
{
    json_t *v = json_object_get(obj, key);
    *present = v && !json_is_null(v);
    if (!*present)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return false;
    *out = (long)json_integer_value(v);
    return true;
}

#define MSG_EXPIRY                                                                                 \
    "Give at most one of expires_at (an RFC 3339 date-time in the future) and ttl_seconds "        \
    "(1-" XSTR(KW_MAX_KEY_LIFETIME_S) "); a key lives at most " XSTR(                              \
        KW_MAX_KEY_LIFETIME_S) " seconds."

/* expires_at (RFC 3339) or ttl_seconds, both optional, not both (tag-kw-key-lifecycle):
 * *expires_us = 0 for a key that never expires. false -> 422 written. */
static bool parse_expiry(kw_http_resp_t *resp, json_t *body, int64_t *expires_us)
{
    kw_str_t at;
    bool has_at = false, has_ttl = false;
    long ttl = 0;
    int64_t now = wall_us(), when = 0;
    *expires_us = 0;
    if (!kw__api_json_str(body, "expires_at", &at, &has_at) ||
        (has_at && !kw_api_parse_time(at, &when)) ||
        !json_int_in(body, "ttl_seconds", 1, KW_MAX_KEY_LIFETIME_S, &ttl, &has_ttl) ||
        (has_at && has_ttl) ||
        (has_at && (when <= now || when - now > (int64_t)KW_MAX_KEY_LIFETIME_S * 1000000))) {
        kw_http_resp_error(resp, 422, MSG_EXPIRY);
        return false;
    }
    if (has_ttl)
        when = now + (int64_t)ttl * 1000000;
    *expires_us = has_at || has_ttl ? when : 0;
    return true;
}

/* Parses the create body (422s). false -> answered. */
static bool parse_create(kw_http_resp_t *resp, json_t *body, agent_ref_t *r, kw_str_t *name,
                         const char **type, kw_str_t *supplied, bool *has_supplied,
                         int64_t *expires_us)
{
    bool has_name, has_type;
    kw_str_t t;
    memset(r, 0, sizeof(*r));
    if (!kw__api_json_str(body, "agent_id", &r->id, &r->has_id)) {
        kw_http_resp_error(resp, 422, "agent_id must be a string.");
        return false;
    }
    if (!kw__api_json_str(body, "agent_name", &r->name, &r->has_name) ||
        (r->has_name && !kw_api_name_valid(r->name, false))) {
        kw_http_resp_error(resp, 422, "Invalid agent_name.");
        return false;
    }
    if (!kw__api_json_str(body, "name", name, &has_name) || !has_name ||
        !kw_api_name_valid(*name, true)) {
        kw_http_resp_error(resp, 422, msg_name);
        return false;
    }
    if (!kw__api_json_str(body, "api_key_type", &t, &has_type) || (has_type && !key_type_of(t))) {
        kw_http_resp_error(resp, 422,
                           "api_key_type must be one of internal, external, github, slack.");
        return false;
    }
    *type = has_type ? key_type_of(t) : "external";
    if (!kw__api_json_str(body, "api_key", supplied, has_supplied) ||
        (*has_supplied && !kw_key_supplied_ok(*supplied))) {
        kw_http_resp_error(resp, 422,
                           "api_key must be 16-512 printable ASCII characters without spaces.");
        return false;
    }
    return parse_expiry(resp, body, expires_us);
}

void kw__api_keys_create(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    agent_ref_t r;
    kw_str_t name, supplied;
    const char *type = NULL;
    bool has_supplied = false;
    char secret[KW_KEY_MAX_SUPPLIED + 1];
    size_t secret_len = 0;
    kw_agent_t ag;
    kw_apikey_t key;
    int rc;

    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    json_t *body = kw__api_body(req, resp);
    if (!body)
        return;
    int64_t expires_us = 0;
    if (!parse_create(resp, body, &r, &name, &type, &supplied, &has_supplied, &expires_us)) {
        json_decref(body);
        return;
    }
    /* Copy what outlives the JSON tree; the supplied secret only to the stack buffer. */
    char *name_c = kw__api_cstr(req->arena, name);
    r.id.ptr = r.has_id ? kw__api_cstr(req->arena, r.id) : NULL;
    r.name.ptr = r.has_name ? kw__api_cstr(req->arena, r.name) : NULL;
    if (has_supplied) {
        memcpy(secret, supplied.ptr, supplied.len);
        secret_len = supplied.len;
        secret[secret_len] = '\0';
        /* jansson's copy of the secret: wipe it before the tree is freed */
        sodium_memzero((void *)supplied.ptr, supplied.len);
    }
    json_decref(body);
    if (!name_c || (r.has_id && !r.id.ptr) || (r.has_name && !r.name.ptr)) {
        rc = KW_ENOMEM;
        goto fail;
    }
    bool hashed = strcmp(type, "internal") == 0 || strcmp(type, "external") == 0;
    uint8_t hash[KW_KEY_HASH_LEN];
    if (has_supplied && hashed) {
        /* A live secret of any key, this tenant's or another's: the same neutral 422 (with
         * the other bad api_key values), never "exists". The unique index on the hash
         * still decides a race (below). */
        bool used = false;
        kw_key_hash(api->keyring, (kw_str_t){secret, secret_len}, hash);
        rc = hash_in_use(api, req->arena, hash, &used);
        if (rc != KW_OK)
            goto fail;
        if (used) {
            kw_http_resp_error(resp, 422, MSG_KEY_UNUSABLE);
            goto out;
        }
    }
    if (!ref_rules(resp, &r, &p))
        goto out;
    if (!resolve_agent(api, req, resp, &p, &r, &ag, NULL))
        goto out;
    bool ok = false;
    rc = kw__api_can(api, &p, "agent", kw_str_c(ag.id), "update", &ok, NULL);
    if (rc != KW_OK)
        goto fail;
    if (!ok) {
        /* Readable a moment ago (resolve_agent) but not updatable now: if it is no longer
         * readable either, the agent was deleted in between, and the answer is its 404. */
        bool readable = false;
        rc = kw__api_can(api, &p, "agent", kw_str_c(ag.id), "read", &readable, NULL);
        if (rc != KW_OK)
            goto fail;
        if (!readable)
            agent_404(resp);
        else
            kw_http_resp_error(resp, 403, "Not allowed to add keys to this agent.");
        goto out;
    }
    if (!has_supplied) {
        rc = kw_key_generate(secret, sizeof(secret));
        if (rc != KW_OK)
            goto fail;
        secret_len = KW_KEY_GEN_LEN;
    }

    memset(&key, 0, sizeof(key));
    key.created_at_us = kw_api_now_us();
    kw_api_uuid_v7(key.created_at_us, key.id);
    memcpy(key.agent_id, ag.id, sizeof(key.agent_id));
    key.agent_id[sizeof(key.agent_id) - 1] = '\0';
    key.name = name_c;
    key.type = type;
    key.expires_at_us = expires_us;
    if (hashed) {
        kw_key_hash(api->keyring, (kw_str_t){secret, secret_len}, hash);
        key.hash = hash;
        key.hash_len = sizeof(hash);
    } else {
        uint8_t *sealed = NULL;
        size_t sealed_len = 0;
        rc = kw_secret_seal(api->keyring, (kw_str_t){secret, secret_len}, kw_str_c(key.id),
                            req->arena, &sealed, &sealed_len);
        if (rc != KW_OK)
            goto fail;
        key.secret_enc = sealed;
        key.secret_enc_len = sealed_len;
    }

    kw__key_new_t kn;
    if (!kw__api_key_new(api, req, &key, ag.account_id, p.subject, &kn)) {
        kw_http_resp_error(resp, 403, "This principal cannot own an API key.");
        goto out;
    }
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_revision_t rev = 0;
    rc = kw__api_key_new_write(api, &kn, &rev, &d);
    if ((rc == KW_ECONFLICT || rc == KW_EEXISTS) && has_supplied && hashed) {
        /* Which unique index refused it: the secret's (a concurrent create with the same
         * supplied key won) answers as above, a name's the 409. */
        bool used = false;
        int hrc = hash_in_use(api, req->arena, hash, &used);
        if (hrc != KW_OK) {
            rc = hrc;
            goto fail;
        }
        if (used) {
            kw_http_resp_error(resp, 422, MSG_KEY_UNUSABLE);
            goto out;
        }
    }
    if (rc == KW_ECONFLICT || rc == KW_EEXISTS) {
        kw_http_resp_error(resp, 409,
                           "A key with this name and type already exists for the agent.");
        goto out;
    }
    if (rc == KW_ENOTFOUND) {
        /* The agent was deleted between the check and the insert (the row's foreign key
         * refused the key): the same 404 as for an agent that never existed. */
        agent_404(resp);
        goto out;
    }
    if (rc != KW_OK)
        goto fail;
    resp->status = 200;
    kw__api_key_json(&resp->body, &key, (kw_str_t){secret, secret_len});
    kw__api_revision(req, resp, rev);
    /* The one response that shows the secret: no cache (browser, proxy) may keep it. */
    kw_http_resp_header(resp, "Cache-Control", "no-store");
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: created %s key %s for agent %s", req->request_id,
           type, key.id, key.agent_id);
    goto out;
fail:
    kw__api_fail(req, resp, rc, "create key");
out:
    sodium_memzero(secret, sizeof(secret));
}

/* ---- list ---- */

/* A key list cursor's position: the last key shown, (created_at_us big-endian, id). */
#define KEY_POS_LEN (8 + 36)

static void key_pos(const kw_apikey_t *k, uint8_t pos[KEY_POS_LEN])
{
    uint64_t v = (uint64_t)k->created_at_us;
    for (int i = 7; i >= 0; i--, v >>= 8)
        pos[i] = (uint8_t)v;
    memcpy(pos + 8, k->id, 36);
}

/* What a cursor is bound to: this route, this agent, this caller (tag-kw-api-cursor). */
static kw_str_t key_scope(kw_http_req_t *req, const kw_agent_t *ag, const kw__principal_t *p)
{
    char *s = kw_arena_sprintf(req->arena, "/agent_api_keys\n%s\n%s", ag->id, p->subject_text);
    return s ? kw_str_c(s) : KW_STR_NULL;
}

void kw__api_keys_list(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    agent_ref_t r;
    kw_agent_t ag;
    long limit, page;
    kw_revision_t rev = 0;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    if (!kw__api_page(req, resp, &limit, &page) || !ref_from_query(req, resp, &r))
        return;
    /* A cursor's 422 comes with the other query 422s: its scope needs the agent's id, so it
     * is opened once the agent is resolved, but a cursor beside page_number fails now. */
    bool cursor_given = false, bad_cursor = false;
    (void)kw_http_query(req, "cursor", &cursor_given, &bad_cursor);
    if (cursor_given || bad_cursor) {
        bool has_page = false, bad_page = false;
        (void)kw_http_query(req, "page_number", &has_page, &bad_page);
        if (has_page || bad_page) {
            kw_http_resp_error(resp, 422, "Give cursor or page_number, not both.");
            return;
        }
    }
    if (!ref_rules(resp, &r, &p))
        return;
    if (!resolve_agent(api, req, resp, &p, &r, &ag, &rev))
        return;
    kw_str_t scope = KW_STR_NULL;
    bool has_cursor = false;
    uint8_t pos[KEY_POS_LEN];
    size_t pos_len = 0;
    int64_t after_us = 0;
    char after_id[37] = "";
    if (cursor_given || bad_cursor) {
        scope = key_scope(req, &ag, &p);
        if (!scope.ptr) {
            kw__api_fail(req, resp, KW_ENOMEM, "list keys");
            return;
        }
        if (!kw__api_cursor_in(api, req, resp, scope, &has_cursor, pos, sizeof(pos), &pos_len))
            return;
        if (pos_len != 0 && pos_len != KEY_POS_LEN) {
            kw_http_resp_error(resp, 422, "cursor is not valid for this list.");
            return;
        }
        if (pos_len) {
            uint64_t v = 0;
            for (int i = 0; i < 8; i++)
                v = (v << 8) | pos[i];
            after_us = (int64_t)v;
            memcpy(after_id, pos + 8, 36);
            after_id[36] = '\0';
        }
    }

    /* Walk the agent's keys in (created_at, id) order, keep the readable ones, skip the
     * earlier pages' worth, stop once a page is full: pagination AFTER the filter.
     * The walk beats LookupResources + intersect in every case measured (docs/BENCHMARKS.md,
     * "Listing an agent's keys"; bench/list_bench.c). The first batch asks for exactly
     * skip + limit rows (all a caller who reads every key needs), later ones KEY_BATCH.
     * With a cursor the walk starts after the cursor's key (keyset: no rows before it are
     * read, whatever the page) and looks one readable key past the page, so that the last
     * page carries no X-Next-Cursor. */
    kw_arena_t *scratch = kw_arena_new(0);
    kw_check_item_t *items = kw_calloc(KEY_BATCH, sizeof(*items));
    if (!scratch || !items) {
        kw_arena_free(scratch);
        kw_free(items);
        kw__api_fail(req, resp, KW_ENOMEM, "list keys");
        return;
    }
    size_t skip = has_cursor ? 0 : (size_t)(page - 1) * (size_t)limit, out = 0;
    size_t want = (size_t)limit + (has_cursor ? 1 : 0);
    bool more = false;
    uint8_t last_pos[KEY_POS_LEN];
    int rc = KW_OK;
    kw_buf_puts(&resp->body, "[");
    size_t batch = skip + want < KEY_BATCH ? skip + want : KEY_BATCH;
    while (!more && (out < (size_t)limit || has_cursor)) {
        kw_apikey_t *rows = NULL;
        size_t n = 0;
        kw_arena_reset(scratch);
        rc = kw_store_keys_of_agent(api->store, kw_str_c(ag.id), after_us, kw_str_c(after_id),
                                    batch, scratch, &rows, &n);
        if (rc != KW_OK || n == 0)
            break;
        atomic_fetch_add_explicit(&api->list_rows_keys, n, memory_order_relaxed);
        for (size_t i = 0; i < n; i++)
            items[i] = (kw_check_item_t){{KW_STR("agent_api_key"), kw_str_c(rows[i].id)},
                                         KW_STR("read"),
                                         p.subject,
                                         KW_CHECK_NO,
                                         KW_OK,
                                         {0}};
        kw_revision_t engine_rev = 0; /* rev stays the store revision read before */
        rc = kw_engine_check_bulk(api->engine, items, n, &engine_rev);
        if (rc != KW_OK)
            break;
        for (size_t i = 0; i < n && !more; i++) {
            bool yes = items[i].rc == KW_OK && items[i].result == KW_CHECK_YES;
            atomic_fetch_add_explicit(items[i].rc != KW_OK ? &api->checks_error
                                      : yes                ? &api->checks_allowed
                                                           : &api->checks_denied,
                                      1, memory_order_relaxed);
            if (!yes)
                continue;
            if (skip > 0) {
                skip--;
                continue;
            }
            if (out == (size_t)limit) { /* a readable key past the page: there is more */
                more = true;
                break;
            }
            if (out++)
                kw_buf_puts(&resp->body, ", ");
            kw__api_key_json_live(api, &resp->body, &rows[i], KW_STR_NULL);
            key_pos(&rows[i], last_pos);
        }
        after_us = rows[n - 1].created_at_us;
        memcpy(after_id, rows[n - 1].id, sizeof(after_id));
        after_id[sizeof(after_id) - 1] = '\0';
        if (n < batch)
            break;
        batch = KEY_BATCH;
    }
    kw_arena_free(scratch);
    kw_free(items);
    if (rc == KW_OK && has_cursor && more)
        rc = kw__api_cursor_out(api, req, resp, scope,
                                (kw_str_t){(const char *)last_pos, sizeof(last_pos)});
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "list keys");
        return;
    }
    kw_buf_puts(&resp->body, "]");
    resp->status = 200;
    kw__api_revision(req, resp, rev);
}

/* ---- get ---- */

/* Checks `read` on the key (id already known to be a UUID): KW_OK + *ok. */
static int key_readable(kw_api_t *api, const kw__principal_t *p, kw_str_t id, bool *ok,
                        kw_revision_t *rev)
{
    return kw__api_can(api, p, "agent_api_key", id, "read", ok, rev);
}

void kw__api_keys_get(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_apikey_t key;
    kw_revision_t rev = 0;
    bool ok = false;
    if (kw__api_reserved_id(req, resp))
        return;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    kw_str_t id = req->params[0];
    if (!kw_api_is_uuid(id)) {
        key_404(resp);
        return;
    }
    int rc = key_readable(api, &p, id, &ok, &rev);
    if (rc == KW_OK && !ok) {
        key_404(resp);
        return;
    }
    if (rc == KW_OK)
        rc = kw_store_key_get(api->store, id, req->arena, &key);
    if (rc == KW_ENOTFOUND) {
        key_404(resp);
        return;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "get key");
        return;
    }
    resp->status = 200;
    kw__api_key_json_live(api, &resp->body, &key, KW_STR_NULL);
    kw__api_revision(req, resp, rev);
}

/* The by-name routes: 422 name/type, 400 rules, agent 404, then the key row by
 * (agent, name, type). false -> answered. */
static bool resolve_key_by_name(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                                const kw__principal_t *p, kw_apikey_t *key)
{
    agent_ref_t r;
    kw_agent_t ag;
    bool found = false, bad = false;
    kw_str_t name = req->params[0];
    if (!kw_api_name_valid(name, true)) {
        kw_http_resp_error(resp, 422, "Invalid key name.");
        return false;
    }
    kw_str_t t = kw_http_query(req, "api_key_type", &found, &bad);
    const char *type = found ? key_type_of(t) : "external";
    if (bad || !type) {
        kw_http_resp_error(resp, 422,
                           "api_key_type must be one of internal, external, github, slack.");
        return false;
    }
    if (!ref_from_query(req, resp, &r) || !ref_rules(resp, &r, p))
        return false;
    if (!resolve_agent(api, req, resp, p, &r, &ag, NULL))
        return false;
    int rc = kw_store_key_get_by_name(api->store, kw_str_c(ag.id), name, kw_str_c(type), req->arena,
                                      key);
    if (rc == KW_ENOTFOUND) {
        /* The callers check `read` on the key they found; an absent one costs the same
         * check (on the decoy), then the same 404. */
        bool ok = false;
        rc = key_readable(api, p, KW_STR(KW__DECOY_ID), &ok, NULL);
        if (rc == KW_OK) {
            key_404(resp);
            return false;
        }
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "get key by name");
        return false;
    }
    return true;
}

void kw__api_keys_get_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_apikey_t key;
    kw_revision_t rev = 0;
    bool ok = false;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    if (!resolve_key_by_name(api, req, resp, &p, &key))
        return;
    int rc = key_readable(api, &p, kw_str_c(key.id), &ok, &rev);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check key read");
        return;
    }
    if (!ok) {
        key_404(resp);
        return;
    }
    resp->status = 200;
    kw__api_key_json_live(api, &resp->body, &key, KW_STR_NULL);
    kw__api_revision(req, resp, rev);
}

/* ---- delete ---- */

typedef struct {
    kw_str_t id;
    const kw__audit_t *au;
} delete_ctx_t;

static int delete_tx(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    const delete_ctx_t *c = ud;
    int rc = kw_store_tx_key_delete(tx, c->id);
    return rc == KW_OK ? kw__api_audit_append(tx, c->au, diag) : rc;
}

/* read (else key 404), delete (else 403), then delete by id. true -> deleted. */
static bool delete_key_id(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp,
                          const kw__principal_t *p, kw_str_t id, kw_revision_t *rev)
{
    bool ok = false;
    int rc = key_readable(api, p, id, &ok, NULL);
    if (rc == KW_OK && !ok) {
        key_404(resp);
        return false;
    }
    if (rc == KW_OK)
        rc = kw__api_can(api, p, "agent_api_key", id, "delete", &ok, NULL);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check key delete");
        return false;
    }
    if (!ok) {
        kw_http_resp_error(resp, 403, "Not allowed to delete this API key.");
        return false;
    }
    kw__audit_t au;
    rc = kw__api_audit_for_key(api, req, "key.delete", id, &au);
    delete_ctx_t c = {id, &au};
    if (rc == KW_OK)
        rc = kw__api_write(api, delete_tx, &c, 0, rev, NULL);
    if (rc == KW_ENOTFOUND) {
        key_404(resp);
        return false;
    }
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "delete key");
        return false;
    }
    return true;
}

void kw__api_keys_delete(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_revision_t rev = 0;
    if (kw__api_reserved_id(req, resp))
        return;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    kw_str_t id = req->params[0];
    if (!kw_api_is_uuid(id)) {
        key_404(resp);
        return;
    }
    if (!delete_key_id(api, req, resp, &p, id, &rev))
        return;
    char *msg = kw_arena_sprintf(req->arena, "Agent API key with ID %.*s deleted", KW_STR_FMT(id));
    if (!msg) {
        kw__api_fail(req, resp, KW_ENOMEM, "delete key");
        return;
    }
    kw__api_string_body(resp, msg);
    kw__api_revision(req, resp, rev);
}

void kw__api_keys_delete_by_name(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_apikey_t key;
    kw_revision_t rev = 0;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    if (!resolve_key_by_name(api, req, resp, &p, &key))
        return;
    if (!delete_key_id(api, req, resp, &p, kw_str_c(key.id), &rev))
        return;
    char *msg =
        kw_arena_sprintf(req->arena, "Agent api_key '%.*s' deleted", KW_STR_FMT(req->params[0]));
    if (!msg) {
        kw__api_fail(req, resp, KW_ENOMEM, "delete key");
        return;
    }
    kw__api_string_body(resp, msg);
    kw__api_revision(req, resp, rev);
}
