/*
 * api/webhook.c - POST /agent_api_keys/webhook-trigger: registers a GitHub or Slack signing
 * key for an agent in one call and answers where the source must deliver (issue 16).
 *
 * Order of answers (docs/API.md): 401; 422 for a malformed body; then 400 for a source
 * other than github/slack; the agent 404 (absent or unreadable, by name in the selected
 * account, with the same check on a decoy id for an absent name); 403 without `update`;
 * 409 for an existing (agent, name, source); 400 for Slack without a secret; 400 for a
 * control character in forward_path. The key row and its relationships are one
 * transaction, as every create.
 *
 * Secrets: a GitHub secret is generated when absent (32 random bytes as 64 hex chars). It
 * exists in clear only in a stack buffer (wiped before returning) and the one response
 * body that shows it; the store gets it sealed (associated data = the key id).
 */
#include <string.h>

#include <sodium.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "api"

#define XSTR(x) STR_(x)
#define STR_(x) #x

/* Webhook signing secrets are whatever the source uses: 1..KW__WEBHOOK_SECRET_MAX bytes. */
#define KW__WEBHOOK_SECRET_MAX 512

/* Percent-encodes s into out: unreserved characters stay; '/' stays when keep_slash. */
static void pct_encode(kw_buf_t *out, kw_str_t s, bool keep_slash)
{
    static const char hx[] = "0123456789ABCDEF";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        bool keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~' ||
                    (keep_slash && ch == '/');
        if (keep) {
            char c = (char)ch;
            kw_buf_append(out, &c, 1);
        } else {
            char e[3] = {'%', hx[ch >> 4], hx[ch & 15]};
            kw_buf_append(out, e, 3);
        }
    }
}

static bool has_control(kw_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch < 0x20 || ch == 0x7f)
            return true;
    }
    return false;
}

void kw__api_webhook_trigger(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    kw_str_t agent_name, source, name, fpath, sec, base;
    bool has_agent, has_source, has_name, has_fpath, has_sec, has_base;
    char secret[KW__WEBHOOK_SECRET_MAX + 1];
    size_t secret_len = 0;
    kw_agent_t ag;
    kw_apikey_t key;
    kw_buf_t path;
    int rc;

    kw_buf_init(&path);
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    json_t *body = kw__api_body(req, resp);
    if (!body)
        return;
    if (!kw__api_json_str(body, "agent_name", &agent_name, &has_agent) || !has_agent ||
        !kw_api_name_valid(agent_name, false)) {
        json_decref(body);
        kw_http_resp_error(resp, 422, "Invalid agent_name.");
        return;
    }
    if (!kw__api_json_str(body, "source", &source, &has_source)) {
        json_decref(body);
        kw_http_resp_error(resp, 422, "source must be a string.");
        return;
    }
    if (!kw__api_json_str(body, "name", &name, &has_name) || !has_name ||
        !kw_api_name_valid(name, true)) {
        json_decref(body);
        kw_http_resp_error(resp, 422,
                           "name is required: 1-" XSTR(KW_MAX_NAME_CHARS) " characters of UTF-8, "
                                                                          "no control "
                                                                          "characters.");
        return;
    }
    if (!kw__api_json_str(body, "forward_path", &fpath, &has_fpath) || !has_fpath ||
        fpath.len > KW__ACP_URL_MAX) {
        json_decref(body);
        kw_http_resp_error(
            resp, 422,
            "forward_path is required: a string of at most " XSTR(KW__ACP_URL_MAX) " bytes.");
        return;
    }
    if (!kw__api_json_str(body, "secret", &sec, &has_sec) ||
        (has_sec && (sec.len == 0 || sec.len > KW__WEBHOOK_SECRET_MAX))) {
        json_decref(body);
        kw_http_resp_error(resp, 422,
                           "secret must be 1-" XSTR(KW__WEBHOOK_SECRET_MAX) " bytes when given.");
        return;
    }
    if (!kw__api_json_str(body, "base_url", &base, &has_base) ||
        (has_base && !kw__api_acp_url_ok(base))) {
        json_decref(body);
        kw_http_resp_error(resp, 422, "base_url must be null or an absolute http(s) URL.");
        return;
    }
    const char *src = "github";
    if (has_source && kw_str_eq_c(source, "slack"))
        src = "slack";
    bool bad_source = has_source && !kw_str_eq_c(source, "github") && !kw_str_eq_c(source, "slack");
    char *agent_c = kw__api_cstr(req->arena, agent_name);
    char *name_c = kw__api_cstr(req->arena, name);
    char *fpath_c = kw__api_cstr(req->arena, fpath);
    char *base_c = has_base ? kw__api_cstr(req->arena, base) : NULL;
    if (has_sec) {
        memcpy(secret, sec.ptr, sec.len);
        secret_len = sec.len;
        secret[secret_len] = '\0';
        sodium_memzero((void *)sec.ptr, sec.len);
    }
    json_decref(body);
    if (!agent_c || !name_c || !fpath_c || (has_base && !base_c)) {
        rc = KW_ENOMEM;
        goto fail;
    }
    agent_name = kw_str_c(agent_c);
    if (bad_source) {
        kw_http_resp_error(resp, 400, "source must be github or slack.");
        goto out;
    }
    if (!p.has_account) {
        kw_http_resp_error(resp, 400,
                           "No account selected: send x-selected-account-id or a token with an "
                           "account claim.");
        goto out;
    }
    /* The agent: absent and unreadable are the same 404 after the same work. */
    rc = kw_store_agent_get_by_name(api->store, p.account, agent_name, req->arena, &ag);
    if (rc != KW_OK && rc != KW_ENOTFOUND)
        goto fail;
    bool found = rc == KW_OK, ok = false;
    rc = kw__api_can(api, &p, "agent", found ? kw_str_c(ag.id) : KW_STR(KW__DECOY_ID), "read", &ok,
                     NULL);
    if (rc != KW_OK)
        goto fail;
    if (!found || !ok) {
        kw_http_resp_error(resp, 404, KW__MSG_AGENT_404);
        goto out;
    }
    rc = kw__api_can(api, &p, "agent", kw_str_c(ag.id), "update", &ok, NULL);
    if (rc != KW_OK)
        goto fail;
    if (!ok) {
        kw_http_resp_error(resp, 403, "Not allowed to add keys to this agent.");
        goto out;
    }
    kw_apikey_t existing;
    rc = kw_store_key_get_by_name(api->store, kw_str_c(ag.id), kw_str_c(name_c), kw_str_c(src),
                                  req->arena, &existing);
    if (rc == KW_OK) {
        kw_http_resp_error(resp, 409,
                           kw_arena_sprintf(req->arena,
                                            "A %s webhook key named '%s' already exists for "
                                            "this agent.",
                                            src, name_c));
        goto out;
    }
    if (rc != KW_ENOTFOUND)
        goto fail;
    if (strcmp(src, "slack") == 0 && !has_sec) {
        kw_http_resp_error(resp, 400,
                           "secret is required for Slack: the Slack app's signing secret.");
        goto out;
    }
    if (has_control(kw_str_c(fpath_c))) {
        kw_http_resp_error(resp, 400, "forward_path must not contain control characters.");
        goto out;
    }
    if (!has_sec) {
        uint8_t rnd[32];
        randombytes_buf(rnd, sizeof(rnd));
        sodium_bin2hex(secret, sizeof(secret), rnd, sizeof(rnd));
        sodium_memzero(rnd, sizeof(rnd));
        secret_len = 64;
    }

    memset(&key, 0, sizeof(key));
    key.created_at_us = kw_api_now_us();
    kw_api_uuid_v7(key.created_at_us, key.id);
    memcpy(key.agent_id, ag.id, sizeof(key.agent_id));
    key.name = name_c;
    key.type = src;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    rc = kw_secret_seal(api->keyring, (kw_str_t){secret, secret_len}, kw_str_c(key.id), req->arena,
                        &sealed, &sealed_len);
    if (rc != KW_OK)
        goto fail;
    key.secret_enc = sealed;
    key.secret_enc_len = sealed_len;
    /* key.create, as POST /agent_api_keys, marked as the trigger's (never the secret). */
    kw__key_new_t kn;
    if (!kw__api_key_new(api, req, &key, ag.account_id, p.subject, &kn)) {
        kw_http_resp_error(resp, 403, "This principal cannot own an API key.");
        goto out;
    }
    kw__api_audit_add(&kn.au, req, "via", json_string("webhook-trigger"));
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_revision_t rev = 0;
    rc = kw__api_key_new_write(api, &kn, &rev, &d);
    if (rc == KW_ECONFLICT || rc == KW_EEXISTS) {
        kw_http_resp_error(resp, 409,
                           kw_arena_sprintf(req->arena,
                                            "A %s webhook key named '%s' already exists for "
                                            "this agent.",
                                            src, name_c));
        goto out;
    }
    if (rc == KW_ENOTFOUND) {
        kw_http_resp_error(resp, 404, KW__MSG_AGENT_404);
        goto out;
    }
    if (rc != KW_OK)
        goto fail;

    kw_buf_puts(&path, "/agents/forward/name/");
    pct_encode(&path, agent_name, false);
    kw_buf_puts(&path, "/");
    kw_str_t fp = kw_str_c(fpath_c);
    while (fp.len && fp.ptr[0] == '/') {
        fp.ptr++;
        fp.len--;
    }
    pct_encode(&path, fp, true);
    const char *pub = base_c ? base_c : getenv("KEYWARD_PUBLIC_URL");
    if (pub && !*pub)
        pub = NULL;
    kw_str_t pubs = pub ? kw_str_c(pub) : KW_STR_NULL;
    while (pubs.len && pubs.ptr[pubs.len - 1] == '/')
        pubs.len--;
    if (path.failed) {
        rc = KW_ENOMEM;
        goto fail;
    }
    kw_buf_t *o = &resp->body;
    resp->status = 200;
    kw_buf_puts(o, "{\"key_id\": ");
    kw_json_escape(o, kw_str_c(key.id));
    kw_buf_puts(o, ", \"agent_name\": ");
    kw_json_escape(o, agent_name);
    kw_buf_puts(o, ", \"source\": ");
    kw_json_escape(o, kw_str_c(src));
    kw_buf_puts(o, ", \"name\": ");
    kw_json_escape(o, kw_str_c(name_c));
    kw_buf_puts(o, ", \"secret\": ");
    kw_json_escape(o, (kw_str_t){secret, secret_len});
    kw_buf_puts(o, ", \"webhook_path\": ");
    kw_json_escape(o, (kw_str_t){path.ptr, path.len});
    kw_buf_puts(o, ", \"webhook_url\": ");
    if (pub) {
        kw_buf_t u;
        kw_buf_init(&u);
        kw_buf_append(&u, pubs.ptr, pubs.len);
        kw_buf_append(&u, path.ptr, path.len);
        kw_json_escape(o, (kw_str_t){u.ptr, u.failed ? 0 : u.len});
        if (u.failed)
            o->failed = true;
        kw_buf_free(&u);
    } else {
        kw_buf_puts(o, "null");
    }
    kw_buf_puts(o, "}");
    kw__api_revision(req, resp, rev);
    kw_http_resp_header(resp, "Cache-Control", "no-store");
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: created %s webhook key %s for agent %s",
           req->request_id, src, key.id, key.agent_id);
    goto out;
fail:
    kw__api_fail(req, resp, rc, "create webhook key");
out:
    kw_buf_free(&path);
    sodium_memzero(secret, sizeof(secret));
}
