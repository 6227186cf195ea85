/*
 * api/common.c - helpers every route shares: ids, timestamps, names, pagination, JSON
 * bodies, the exact error bodies, the permission check with its counters, and the
 * freshness answer of every data route (X-Keyward-Revision, over the sync module's
 * kw_sync_await).
 *
 * Invariants: an error body is always the contract's {"detail": ...}; a failed check
 * never allows. Revisions reported (X-Keyward-Revision) are STORE revisions (the sync
 * module's applied revision), not the engine's.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api_int.h"
#include "base/log.h"

#define KW_MODULE "api"

/* ---- ids and time ---- */

void kw_api_uuid_v7(int64_t us, char out[37])
{
    uint8_t b[16];
    uint64_t ms = (uint64_t)(us / 1000);
    randombytes_buf(b, sizeof(b));
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    /* rand_a carries the sub-millisecond fraction (RFC 9562 method 3) so ids made in
     * one millisecond still increase with time. */
    uint32_t frac = (uint32_t)(((us % 1000) * 4096) / 1000);
    b[6] = (uint8_t)(0x70 | ((frac >> 8) & 0x0f));
    b[7] = (uint8_t)(frac & 0xff);
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

/* n decimal digits at s[at..] within [lo, hi]. */
static bool digits(kw_str_t s, size_t at, size_t n, int lo, int hi, int *out)
{
    int v = 0;
    if (at + n > s.len)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s.ptr[at + i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil algorithm,
 * restated). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool kw_api_parse_time(kw_str_t s, int64_t *us)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    if (!s.ptr || s.len < 20 || !digits(s, 0, 4, 1970, 9999, &y) || s.ptr[4] != '-' ||
        !digits(s, 5, 2, 1, 12, &mo) || s.ptr[7] != '-' || !digits(s, 8, 2, 1, mdays[mo - 1], &d) ||
        (s.ptr[10] != 'T' && s.ptr[10] != 't') || !digits(s, 11, 2, 0, 23, &h) ||
        s.ptr[13] != ':' || !digits(s, 14, 2, 0, 59, &mi) || s.ptr[16] != ':' ||
        !digits(s, 17, 2, 0, 59, &sec))
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return false;
    size_t i = 19;
    int64_t frac = 0;
    if (i < s.len && s.ptr[i] == '.') {
        size_t start = ++i;
        while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9') {
            if (i - start < 6)
                frac = frac * 10 + (s.ptr[i] - '0');
            i++;
        }
        if (i == start || i - start > 9)
            return false;
        for (size_t k = i - start; k < 6; k++)
            frac *= 10;
    }
    int sign = 0;
    if (i + 1 == s.len && (s.ptr[i] == 'Z' || s.ptr[i] == 'z')) {
        i++;
    } else if (i + 6 == s.len && (s.ptr[i] == '+' || s.ptr[i] == '-') &&
               digits(s, i + 1, 2, 0, 23, &oh) && s.ptr[i + 3] == ':' &&
               digits(s, i + 4, 2, 0, 59, &om)) {
        sign = s.ptr[i] == '+' ? 1 : -1;
        i += 6;
    } else {
        return false;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    secs -= sign * (oh * 3600 + om * 60);
    if (secs < 0)
        return false;
    *us = secs * 1000000 + frac;
    return true;
}

bool kw_api_is_uuid(kw_str_t s)
{
    if (s.len != 36 || !s.ptr)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char c = s.ptr[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

size_t kw_api_format_time(int64_t us, char out[32])
{
    int64_t sec = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        memset(&tm, 0, sizeof(tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
    }
    int n = snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    return n < 0 ? 0 : (size_t)n;
}

/* Process singleton: the last timestamp handed out (atomic, see kw_api_now_us). */
static _Atomic int64_t last_us;

int64_t kw_api_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    int64_t prev = atomic_load_explicit(&last_us, memory_order_relaxed);
    for (;;) {
        int64_t next = now > prev ? now : prev + 1;
        if (atomic_compare_exchange_weak_explicit(&last_us, &prev, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return next;
    }
}

/* ---- names and numbers ---- */

bool kw_api_name_valid(kw_str_t s, bool allow_slash)
{
    size_t i = 0, n_cp = 0;
    if (!s.ptr || s.len == 0)
        return false;
    while (i < s.len) {
        uint32_t cp;
        size_t need = kw_utf8_decode(s.ptr + i, s.len - i, &cp);
        if (need == 0) /* not UTF-8: stray, truncated, overlong, surrogate, > U+10FFFF */
            return false;
        if (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f))
            return false;
        if (cp == '/' && !allow_slash)
            return false;
        i += need;
        if (++n_cp > KW_MAX_NAME_CHARS)
            return false;
    }
    return true;
}

bool kw_api_parse_bounded(kw_str_t s, long min, long max, long *out)
{
    if (!s.ptr || s.len == 0 || s.len > 18)
        return false;
    long v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9')
            return false;
        v = v * 10 + (s.ptr[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* ---- responses ---- */

void kw__api_fail(kw_http_req_t *req, kw_http_resp_t *resp, int rc, const char *what)
{
    if (rc == KW_EDB || rc == KW_ETIMEOUT || rc == KW_EPRUNED) {
        kw_log(KW_LOG_WARN, KW_MODULE, "request %s: %s: database unavailable (%s)", req->request_id,
               what, kw_err_name(rc));
        kw_http_resp_error(resp, 503, KW__MSG_DB);
        return;
    }
    kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: %s failed: %s", req->request_id, what,
           kw_err_name(rc));
    kw_http_resp_error(resp, 500, KW__MSG_INTERNAL);
}

json_t *kw__api_body(kw_http_req_t *req, kw_http_resp_t *resp)
{
    json_error_t err;
    json_t *root = NULL;
    if (req->body.len > 0)
        root = json_loadb(req->body.ptr, req->body.len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        kw_http_resp_error(resp, 422, "Request body is not valid JSON.");
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        kw_http_resp_error(resp, 422, "Request body must be a JSON object.");
        return NULL;
    }
    return root;
}

bool kw__api_json_str(json_t *obj, const char *key, kw_str_t *out, bool *present)
{
    json_t *v = json_object_get(obj, key);
    *present = false;
    *out = KW_STR_NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return false;
    *present = true;
    out->ptr = json_string_value(v);
    out->len = json_string_length(v);
    return true;
}

bool kw__api_page(kw_http_req_t *req, kw_http_resp_t *resp, long *limit, long *page)
{
    bool found = false, bad = false;
    *limit = 50;
    *page = 1;
    kw_str_t v = kw_http_query(req, "limit", &found, &bad);
    if (bad || (found && !kw_api_parse_bounded(v, 1, 1000, limit))) {
        kw_http_resp_error(resp, 422, "limit must be an integer between 1 and 1000.");
        return false;
    }
    found = bad = false;
    v = kw_http_query(req, "page_number", &found, &bad);
    if (bad || (found && !kw_api_parse_bounded(v, 1, 1000000000L, page))) {
        kw_http_resp_error(resp, 422, "page_number must be an integer >= 1.");
        return false;
    }
    return true;
}

int kw__api_can(kw_api_t *api, const kw__principal_t *p, const char *type, kw_str_t id,
                const char *perm, bool *allowed, kw_revision_t *rev)
{
    kw_check_result_t res = KW_CHECK_NO;
    kw_object_t obj = {kw_str_c(type), id};
    *allowed = false;
    /* The store revision the graph reflects, read BEFORE the check: the answer is at
     * least that fresh (the engine's own counter is not a store revision). */
    if (rev)
        *rev = kw__api_applied(api);
    int rc = kw_engine_check(api->engine, obj, kw_str_c(perm), p->subject, &res, NULL, NULL);
    if (rc != KW_OK) {
        atomic_fetch_add_explicit(&api->checks_error, 1, memory_order_relaxed);
        /* An id the engine cannot even represent names nothing: a denial. */
        return rc == KW_EINVAL ? KW_OK : rc;
    }
    if (res == KW_CHECK_YES) {
        atomic_fetch_add_explicit(&api->checks_allowed, 1, memory_order_relaxed);
        *allowed = true;
    } else {
        atomic_fetch_add_explicit(&api->checks_denied, 1, memory_order_relaxed);
    }
    return KW_OK;
}

void kw__api_revision(kw_http_req_t *req, kw_http_resp_t *resp, kw_revision_t rev)
{
    char *v = kw_arena_sprintf(req->arena, "%" PRIu64, (uint64_t)rev);
    if (v)
        kw_http_resp_header(resp, "X-Keyward-Revision", v);
}

void kw__api_agent_json(kw_buf_t *out, const kw_agent_t *ag)
{
    char ts[32];
    size_t n = kw_api_format_time(ag->created_at_us, ts);
    kw_buf_puts(out, "{\"id\": ");
    kw_json_escape(out, kw_str_c(ag->id));
    kw_buf_puts(out, ", \"name\": ");
    kw_json_escape(out, kw_str_c(ag->name));
    kw_buf_puts(out, ", \"description\": ");
    if (ag->description)
        kw_json_escape(out, kw_str_c(ag->description));
    else
        kw_buf_puts(out, "null");
    kw_buf_puts(out, ", \"account_id\": ");
    kw_json_escape(out, kw_str_c(ag->account_id));
    kw_buf_puts(out, ", \"created_at\": ");
    kw_json_escape(out, (kw_str_t){ts, n});
    kw_buf_puts(out, "}");
}

void kw__api_key_json(kw_buf_t *out, const kw_apikey_t *k, kw_str_t secret)
{
    char ts[32];
    size_t n = kw_api_format_time(k->created_at_us, ts);
    kw_buf_puts(out, "{\"id\": ");
    kw_json_escape(out, kw_str_c(k->id));
    kw_buf_puts(out, ", \"agent_id\": ");
    kw_json_escape(out, kw_str_c(k->agent_id));
    kw_buf_puts(out, ", \"created_at\": ");
    kw_json_escape(out, (kw_str_t){ts, n});
    kw_buf_puts(out, ", \"name\": ");
    kw_json_escape(out, kw_str_c(k->name));
    kw_buf_puts(out, ", \"api_key_type\": ");
    kw_json_escape(out, kw_str_c(k->type));
    /* Issue 14: null when the key never expires / was never used (as flushed). */
    kw_buf_puts(out, ", \"expires_at\": ");
    if (k->expires_at_us) {
        n = kw_api_format_time(k->expires_at_us, ts);
        kw_json_escape(out, (kw_str_t){ts, n});
    } else {
        kw_buf_puts(out, "null");
    }
    kw_buf_puts(out, ", \"last_used_at\": ");
    if (k->last_used_at_us) {
        n = kw_api_format_time(k->last_used_at_us, ts);
        kw_json_escape(out, (kw_str_t){ts, n});
    } else {
        kw_buf_puts(out, "null");
    }
    if (secret.ptr) {
        kw_buf_puts(out, ", \"api_key\": ");
        kw_json_escape(out, secret);
    }
    kw_buf_puts(out, "}");
}

void kw__api_key_json_live(kw_api_t *api, kw_buf_t *out, const kw_apikey_t *k, kw_str_t secret)
{
    kw_apikey_t live = *k;
    int64_t pending = kw__lastused_pending(api->lastused, k->id);
    if (pending > live.last_used_at_us)
        live.last_used_at_us = pending;
    kw__api_key_json(out, &live, secret);
}

/* ---- list cursors ---- */

#define MSG_CURSOR "cursor is not valid for this list: pass the X-Next-Cursor of its last page."

bool kw__api_cursor_in(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, kw_str_t scope,
                       bool *has, uint8_t *pos, size_t cap, size_t *pos_len)
{
    bool bad = false, has_page = false, bad_page = false;
    *has = false;
    *pos_len = 0;
    kw_str_t v = kw_http_query(req, "cursor", has, &bad);
    if (!*has && !bad)
        return true;
    (void)kw_http_query(req, "page_number", &has_page, &bad_page);
    if (has_page || bad_page) {
        kw_http_resp_error(resp, 422, "Give cursor or page_number, not both.");
        return false;
    }
    if (bad || (v.len > 0 && kw_cursor_open(api->keyring, v, scope, pos, cap, pos_len) != KW_OK)) {
        kw_http_resp_error(resp, 422, MSG_CURSOR);
        return false;
    }
    *has = true;
    return true;
}

int kw__api_cursor_out(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp, kw_str_t scope,
                       kw_str_t pos)
{
    char *text = kw_arena_alloc(req->arena, KW_CURSOR_MAX_TEXT + 1);
    size_t n = 0;
    if (!text)
        return KW_ENOMEM;
    int rc = kw_cursor_seal(api->keyring, pos, scope, text, KW_CURSOR_MAX_TEXT + 1, &n);
    if (rc == KW_OK)
        kw_http_resp_header(resp, "X-Next-Cursor", text);
    return rc;
}

void kw__api_string_body(kw_http_resp_t *resp, const char *msg)
{
    resp->status = 200;
    resp->body.len = 0;
    kw_json_escape(&resp->body, kw_str_c(msg));
}

bool kw__api_reserved_id(kw_http_req_t *req, kw_http_resp_t *resp)
{
    if (req->n_params < 1 || !kw_str_eq_c(req->params[0], "name"))
        return false;
    kw_http_resp_error(resp, 404, "Not Found");
    return true;
}

char *kw__api_cstr(kw_arena_t *a, kw_str_t str)
{
    return kw_arena_strndup(a, str.ptr ? str.ptr : "", str.len);
}

/* ---- id lists ---- */

int kw__api_ids_add(kw__api_ids_t *l, kw_str_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        kw_str_t *ids = kw_realloc(l->ids, cap * sizeof(*ids));
        if (!ids) {
            l->rc = KW_ENOMEM;
            return 1;
        }
        l->ids = ids;
        l->cap = cap;
    }
    char *c = kw_arena_strndup(l->a, id.ptr, id.len);
    if (!c) {
        l->rc = KW_ENOMEM;
        return 1;
    }
    l->ids[l->n++] = (kw_str_t){c, id.len};
    return 0;
}

/* ---- freshness (the sync module's state, over HTTP) ---- */

bool kw_api_parse_revision(kw_str_t s, kw_revision_t *out)
{
    if (!s.ptr || s.len == 0 || s.len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.ptr[i] - '0'); /* 19 digits < 2^64: no overflow */
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = (kw_revision_t)v;
    return true;
}

bool kw__api_presented(kw_http_req_t *req, kw_revision_t *min)
{
    const char *h = kw_http_header(req, "X-Keyward-Revision");
    *min = 0;
    if (!h)
        return true;
    return kw_api_parse_revision(kw_str_c(h), min);
}

int kw__api_await_parked(kw_api_t *api, kw_http_req_t *req, kw_revision_t min, bool full)
{
    /* fullyConsistent's catch-up is done on the first run only: a re-run waits for what
     * that catch-up found committed. */
    int rc = kw_sync_poll(api->sync, min, full && req->run == KW_HTTP_RUN_FIRST);
    if (rc != KW_EAGAIN)
        return rc;
    if (req->run == KW_HTTP_RUN_DEADLINE)
        return kw_sync_is_fresh(api->sync) ? KW_ETIMEOUT : KW_EDB;
    uint64_t deadline = kw_http_req_park_deadline(req);
    if (deadline == 0) { /* first wait */
        int ms = kw_sync_freshness_ms(api->sync);
        if (ms <= 0)
            return kw_sync_is_fresh(api->sync) ? KW_ETIMEOUT : KW_EDB;
        deadline = kw_http_now_ns() + (uint64_t)ms * 1000000ull;
    }
    kw_http_req_park(req, deadline);
    return KW_EAGAIN;
}

bool kw__api_fresh(kw_api_t *api, kw_http_req_t *req, kw_http_resp_t *resp)
{
    kw_revision_t min = 0;
    if (!kw__api_presented(req, &min)) {
        kw_http_resp_error(resp, 422, KW__MSG_REV_BAD);
        return false;
    }
    int rc = kw__api_await_parked(api, req, min, false);
    if (rc == KW_OK)
        return true;
    if (rc == KW_EAGAIN) /* parked: no answer now, the handler runs again */
        return false;
    if (rc == KW_EINVAL) {
        kw_http_resp_error(resp, 422, KW__MSG_REV_AHEAD);
        return false;
    }
    if (rc == KW_ETIMEOUT) {
        kw_log(KW_LOG_INFO, KW_MODULE,
               "request %s: presented revision %" PRIu64 " not reached (at %" PRIu64 ")",
               req->request_id, (uint64_t)min, (uint64_t)kw__api_applied(api));
        kw_http_resp_error(resp, 503, KW__MSG_REV_LATE);
    } else {
        kw_http_resp_error(resp, 503, KW__MSG_DB);
    }
    return false;
}
