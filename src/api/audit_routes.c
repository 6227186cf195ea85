/*
 * api/audit_routes.c - GET /audit_events: the audit trail (store/audit.h), filtered and
 * paged with an opaque cursor.
 *
 * Who reads what (docs/API.md): a caller with `audit` on account:<selected account> (the
 * built-in schema: the account's admins) reads the events of that account, including
 * those of agents and keys deleted since; a /v1 administrator (token claim admin: true)
 * reads every event when no account is selected, else that account's. Everyone else: 403
 * (the account is named by the caller's own token or header; there is nothing to hide).
 *
 * Query: resource, actor, action (exact), since/until (RFC 3339; since inclusive, until
 * exclusive), limit (1..1000, default 50), cursor. Events come oldest first. When more
 * follow, X-Next-Cursor carries the cursor of the next page: base64url of (version,
 * last seq, MAC), the MAC (the keyring's keyed hash under a tag of its own) binding it to
 * the same filters and scope, so a forged or edited cursor, or one replayed with other
 * filters, is a 422. `cursor=` (empty) asks for the first page.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api_int.h"

#define KW_MODULE "api"

#define CURSOR_VERSION 1
#define CURSOR_MAC_LEN 16
#define CURSOR_RAW_LEN (1 + 8 + CURSOR_MAC_LEN)

static const char MSG_CURSOR[] = "cursor is not valid for this query.";

/* ---- RFC 3339 ---- */

static bool digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

/* "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" -> microseconds since the epoch. */
static bool parse_time(kw_str_t s, int64_t *out)
{
    char b[64];
    if (s.len < 20 || s.len >= sizeof(b))
        return false;
    memcpy(b, s.ptr, s.len);
    b[s.len] = '\0';
    int Y, M, D, h, m, sec;
    if (!digits(b, 4, &Y) || b[4] != '-' || !digits(b + 5, 2, &M) || b[7] != '-' ||
        !digits(b + 8, 2, &D) || (b[10] != 'T' && b[10] != 't') || !digits(b + 11, 2, &h) ||
        b[13] != ':' || !digits(b + 14, 2, &m) || b[16] != ':' || !digits(b + 17, 2, &sec))
        return false;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return false;
    const char *p = b + 19;
    int64_t frac = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 6)
                frac = frac * 10 + (*p - '0');
        if (n == 0)
            return false;
        for (; n < 6; n++)
            frac *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p)
        return false;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != D) /* 31 February moved on: refused */
        return false;
    *out = ((int64_t)t - off) * 1000000 + frac;
    return *out > 0;
}

/* ---- the request ---- */

typedef struct query {
    kw_audit_filter_t f;
    long limit;
    bool has_cursor;
    kw_str_t cursor;
} query_t;

/* One optional query argument; false -> 422 written. */
static bool arg(kw_http_req_t *req, kw_http_resp_t *resp, const char *name, kw_str_t *out,
                bool *found)
{
    bool bad = false;
    *found = false;
    *out = kw_http_query(req, name, found, &bad);
    if (bad || (*found && (out->len > KW_AUDIT_FIELD_MAX || !kw_utf8_valid(*out)))) {
        char *msg = kw_arena_sprintf(req->arena, "%s must be at most %d bytes of UTF-8.", name,
                                     KW_AUDIT_FIELD_MAX);
        kw_http_resp_error(resp, 422, msg ? msg : "Invalid query parameter.");
        return false;
    }
    return true;
}

static bool parse_query(kw_http_req_t *req, kw_http_resp_t *resp, query_t *q)
{
    memset(q, 0, sizeof(*q));
    kw_str_t *strs[] = {&q->f.resource, &q->f.actor, &q->f.action};
    const char *names[] = {"resource", "actor", "action"};
    bool found;
    for (size_t i = 0; i < KW_ARRAY_LEN(strs); i++)
        if (!arg(req, resp, names[i], strs[i], &found))
            return false;
    const char *tnames[] = {"since", "until"};
    int64_t *times[] = {&q->f.since_us, &q->f.until_us};
    for (size_t i = 0; i < 2; i++) {
        kw_str_t v;
        if (!arg(req, resp, tnames[i], &v, &found))
            return false;
        if (found && !parse_time(v, times[i])) {
            kw_http_resp_error(resp, 422,
                               i == 0 ? "since must be an RFC 3339 time, e.g. 2026-12-02T10:00:00Z."
                                      : "until must be an RFC 3339 time, e.g. "
                                        "2026-12-02T10:00:00Z.");
            return false;
        }
    }
    q->limit = 50;
    kw_str_t v;
    if (!arg(req, resp, "limit", &v, &found))
        return false;
    if (found && !kw_api_parse_bounded(v, 1, 1000, &q->limit)) {
        kw_http_resp_error(resp, 422, "limit must be an integer between 1 and 1000.");
        return false;
    }
    if (!arg(req, resp, "cursor", &q->cursor, &q->has_cursor))
        return false;
    return true;
}

/* ---- the cursor ---- */

/* MAC of (seq, filters, scope) under the keyring's keyed hash, with a tag of its own. */
static int cursor_mac(kw_api_t *api, const kw_audit_filter_t *f, int64_t seq,
                      uint8_t mac[CURSOR_MAC_LEN])
{
    kw_buf_t b;
    kw_buf_init(&b);
    kw_buf_append(&b, "keyward-audit-cursor", sizeof("keyward-audit-cursor"));
    const kw_str_t strs[] = {f->account, f->resource, f->actor, f->action};
    kw_buf_printf(&b, "%d|%lld|%lld|%lld", f->by_account ? 1 : 0, (long long)seq,
                  (long long)f->since_us, (long long)f->until_us);
    for (size_t i = 0; i < KW_ARRAY_LEN(strs); i++) {
        kw_buf_printf(&b, "|%zu:", strs[i].len);
        kw_buf_append(&b, strs[i].ptr ? strs[i].ptr : "", strs[i].len);
    }
    if (b.failed) {
        kw_buf_free(&b);
        return KW_ENOMEM;
    }
    uint8_t h[KW_KEY_HASH_LEN];
    kw_key_hash(api->keyring, (kw_str_t){b.ptr, b.len}, h);
    kw_buf_free(&b);
    memcpy(mac, h, CURSOR_MAC_LEN);
    return KW_OK;
}

static char *cursor_make(kw_api_t *api, kw_arena_t *a, const kw_audit_filter_t *f, int64_t seq)
{
    uint8_t raw[CURSOR_RAW_LEN];
    raw[0] = CURSOR_VERSION;
    for (int i = 0; i < 8; i++)
        raw[1 + i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    if (cursor_mac(api, f, seq, raw + 9) != KW_OK)
        return NULL;
    size_t n = sodium_base64_encoded_len(sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = kw_arena_alloc(a, n);
    if (out)
        sodium_bin2base64(out, n, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/* KW_OK with *seq; KW_EINVAL for a cursor that is not one of ours for these filters. */
static int cursor_read(kw_api_t *api, const kw_audit_filter_t *f, kw_str_t c, int64_t *seq)
{
    uint8_t raw[CURSOR_RAW_LEN + 1];
    size_t n = 0;
    if (c.len == 0 || c.len > 64 ||
        sodium_base642bin(raw, sizeof(raw), c.ptr, c.len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != CURSOR_RAW_LEN || raw[0] != CURSOR_VERSION)
        return KW_EINVAL;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = (u << 8) | raw[1 + i];
    if (u > INT64_MAX)
        return KW_EINVAL;
    uint8_t mac[CURSOR_MAC_LEN];
    int rc = cursor_mac(api, f, (int64_t)u, mac);
    if (rc != KW_OK)
        return rc;
    if (sodium_memcmp(mac, raw + 9, CURSOR_MAC_LEN) != 0)
        return KW_EINVAL;
    *seq = (int64_t)u;
    return KW_OK;
}

/* ---- the answer ---- */

static void event_json(kw_buf_t *out, const kw_audit_event_t *ev)
{
    char ts[32], hex[2 * KW_AUDIT_HASH_LEN + 1];
    size_t n = kw_api_format_time(ev->at_us, ts);
    kw_buf_printf(out, "{\"seq\": %lld, \"time\": ", (long long)ev->seq);
    kw_json_escape(out, (kw_str_t){ts, n});
    kw_buf_printf(out, ", \"revision\": %llu, \"actor\": ", (unsigned long long)ev->revision);
    kw_json_escape(out, ev->actor);
    kw_buf_puts(out, ", \"action\": ");
    kw_json_escape(out, ev->action);
    kw_buf_puts(out, ", \"resource\": ");
    kw_json_escape(out, ev->resource);
    kw_buf_puts(out, ", \"account_id\": ");
    if (ev->account.len)
        kw_json_escape(out, ev->account);
    else
        kw_buf_puts(out, "null");
    kw_buf_puts(out, ", \"request_id\": ");
    kw_json_escape(out, ev->request_id);
    kw_buf_puts(out, ", \"detail\": ");
    /* Written by keyward as a JSON object; anything else (an edited row) is shown as a
     * string rather than breaking the answer. */
    json_t *d = json_loadb(ev->detail.ptr, ev->detail.len, JSON_REJECT_DUPLICATES, NULL);
    char *txt = json_is_object(d) ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (txt)
        kw_buf_puts(out, txt);
    else
        kw_json_escape(out, ev->detail);
    free(txt);
    json_decref(d);
    sodium_bin2hex(hex, sizeof(hex), ev->prev_hash, KW_AUDIT_HASH_LEN);
    kw_buf_printf(out, ", \"prev_hash\": \"%s\"", hex);
    sodium_bin2hex(hex, sizeof(hex), ev->hash, KW_AUDIT_HASH_LEN);
    kw_buf_printf(out, ", \"hash\": \"%s\"}", hex);
}

/* Decides the scope: false -> answered (400/403/5xx). */
static bool scope(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, const kw__principal_t *p,
                  kw_audit_filter_t *f)
{
    if (p->has_account) {
        f->by_account = true;
        f->account = p->account;
    }
    if (p->admin)
        return true;
    if (!p->has_account) {
        kw_http_resp_error(resp, 400,
                           "No account selected: send x-selected-account-id or a token with an "
                           "account claim.");
        return false;
    }
    bool ok = false;
    int rc = KW_OK;
    bool is_perm = false;
    /* A schema without `audit` on account lets only administrators read the trail. */
    if (kw_engine_has(api->engine, KW_STR("account"), KW_STR("audit"), &is_perm))
        rc = kw__api_can(api, p, "account", p->account, "audit", &ok, NULL);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "check account audit");
        return false;
    }
    if (!ok) {
        kw_http_resp_error(resp, 403, "Not allowed to read this account's audit events.");
        return false;
    }
    return true;
}

void kw__api_audit_events(kw_http_req_t *req, kw_http_resp_t *resp, void *ud)
{
    kw_api_t *api = kw__api_of(ud);
    kw__principal_t p;
    query_t q;
    if (!kw__api_auth(api, req, resp, &p) || !kw__api_fresh(api, req, resp))
        return;
    if (!parse_query(req, resp, &q) || !scope(api, req, resp, &p, &q.f))
        return;
    int64_t after = 0;
    if (q.has_cursor && q.cursor.len > 0) {
        int rc = cursor_read(api, &q.f, q.cursor, &after);
        if (rc == KW_EINVAL) {
            kw_http_resp_error(resp, 422, MSG_CURSOR);
            return;
        }
        if (rc != KW_OK) {
            kw__api_fail(req, resp, rc, "audit cursor");
            return;
        }
    }
    kw_revision_t rev = kw__api_applied(api);
    kw_audit_event_t *evs = NULL;
    size_t n = 0;
    /* One more than the page: whether a next page exists. */
    int rc =
        kw_store_audit_list(api->store, &q.f, after, (size_t)q.limit + 1, req->arena, &evs, &n);
    if (rc != KW_OK) {
        kw__api_fail(req, resp, rc, "list audit events");
        return;
    }
    bool more = n > (size_t)q.limit;
    if (more) {
        n = (size_t)q.limit;
        char *next = cursor_make(api, req->arena, &q.f, evs[n - 1].seq);
        if (!next) {
            kw__api_fail(req, resp, KW_ENOMEM, "audit cursor");
            return;
        }
        kw_http_resp_header(resp, "X-Next-Cursor", next);
    }
    resp->status = 200;
    kw_buf_puts(&resp->body, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            kw_buf_puts(&resp->body, ", ");
        event_json(&resp->body, &evs[i]);
    }
    kw_buf_puts(&resp->body, "]");
    kw__api_revision(req, resp, rev);
}

/* ---- OpenAPI (ops.c builds the document) ---- */

void kw__api_audit_openapi_params(json_t *params)
{
    static const struct {
        const char *name, *format, *description;
    } q[] = {
        {"resource", NULL, "exact: \"agent:<id>\", \"agent_api_key:<id>\", \"schema\", ..."},
        {"actor", NULL, "exact: \"user:alice\", \"agent:<id>\", ..."},
        {"action", NULL, "exact: agent.create, agent.delete, key.create, key.delete, ..."},
        {"since", "date-time", "events at or after this time (RFC 3339)"},
        {"until", "date-time", "events before this time (RFC 3339)"},
        {"cursor", NULL, "X-Next-Cursor of the previous page; empty: the first page"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(q); i++) {
        json_t *schema = q[i].format
                             ? json_pack("{s:s, s:s}", "type", "string", "format", q[i].format)
                             : json_pack("{s:s}", "type", "string");
        json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:s, s:o}", "name", q[i].name,
                                                "in", "query", "required", 0, "description",
                                                q[i].description, "schema", schema));
    }
    json_array_append_new(params,
                          json_pack("{s:s, s:s, s:b, s:{s:s, s:i, s:i, s:i}}", "name", "limit",
                                    "in", "query", "required", 0, "schema", "type", "integer",
                                    "minimum", 1, "maximum", 1000, "default", 50));
}

void kw__api_audit_openapi_schemas(json_t *schemas)
{
    if (!schemas)
        return;
    json_t *ev = json_pack(
        "{s:s, s:[s,s,s,s,s,s,s,s,s,s,s], s:{s:{s:s}, s:{s:s, s:s}, s:{s:s}, s:{s:s}, s:{s:s}, "
        "s:{s:s}, s:{s:[s,s]}, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}}}",
        "type", "object", "required", "seq", "time", "revision", "actor", "action", "resource",
        "account_id", "request_id", "detail", "prev_hash", "hash", "properties", "seq", "type",
        "integer", "time", "type", "string", "format", "date-time", "revision", "type", "integer",
        "actor", "type", "string", "action", "type", "string", "resource", "type", "string",
        "account_id", "type", "string", "null", "request_id", "type", "string", "detail", "type",
        "object", "prev_hash", "type", "string", "hash", "type", "string");
    json_object_set_new(schemas, "AuditEvent", ev);
    json_object_set_new(schemas, "AuditEventList",
                        json_pack("{s:s, s:s, s:{s:s}}", "type", "array", "description",
                                  "Oldest first. Header X-Next-Cursor: the next page's cursor, "
                                  "absent on the last page.",
                                  "items", "$ref", "#/components/schemas/AuditEvent"));
}
