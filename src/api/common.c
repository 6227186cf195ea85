/*
 * api/common.c - helpers every route shares: ids, timestamps, names, pagination, JSON
 * bodies, the exact error bodies, the permission check with its counters, and the
 * write path (store transaction, then engine apply, under the write mutex), with group
 * commit: concurrent writes share one transaction, one commit and one revision.
 *
 * Invariants: an error body is always the contract's {"detail": ...}; a failed check
 * never allows; the engine is written only after the store committed, with the exact
 * changes the transaction reports, in commit order. On PostgreSQL the write path does
 * not apply its own changes blindly: it catches up through the changelog (follow.c),
 * which includes them, so revisions of other instances are never skipped. Revisions
 * reported (X-Keyward-Revision) are STORE revisions (applied_rev), not the engine's.
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

bool kw_api_is_uuid(kw_str_t s)
{
    if (s.len != 36 || !s.ptr)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char c = s.ptr[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                     (c >= 'A' && c <= 'F'))) {
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
    const unsigned char *p = (const unsigned char *)s.ptr;
    size_t i = 0, n_cp = 0;
    if (!p || s.len == 0)
        return false;
    while (i < s.len) {
        uint32_t cp;
        unsigned char c = p[i];
        size_t need;
        if (c < 0x80) {
            cp = c;
            need = 1;
        } else if (c >= 0xc2 && c <= 0xdf) {
            cp = c & 0x1f;
            need = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            cp = c & 0x0f;
            need = 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            cp = c & 0x07;
            need = 4;
        } else {
            return false;
        }
        if (i + need > s.len)
            return false;
        for (size_t j = 1; j < need; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        /* overlong forms, surrogates and > U+10FFFF are not valid UTF-8 */
        if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
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
        kw_log(KW_LOG_WARN, KW_MODULE, "request %s: %s: database unavailable (%s)",
               req->request_id, what, kw_err_name(rc));
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
    if (secret.ptr) {
        kw_buf_puts(out, ", \"api_key\": ");
        kw_json_escape(out, secret);
    }
    kw_buf_puts(out, "}");
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

/* ---- the write path ---- */

/* Deep-copies the transaction's changes (valid only until commit) into `a`. */
static int copy_changes(kw_store_tx_t *tx, kw_arena_t *a, kw_update_t **out, size_t *n_out)
{
    const kw_update_t *ups = NULL;
    size_t n = 0;
    kw_store_tx_changes(tx, &ups, &n);
    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return KW_OK;
    if (n > SIZE_MAX / sizeof(kw_update_t))
        return KW_ENOMEM;
    kw_update_t *c = kw_arena_alloc(a, n * sizeof(*c));
    if (!c)
        return KW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const kw_rel_t *r = &ups[i].rel;
        kw_str_t *dst[] = {&c[i].rel.resource.type, &c[i].rel.resource.id, &c[i].rel.relation,
                           &c[i].rel.subject.type, &c[i].rel.subject.id,
                           &c[i].rel.subject.relation};
        const kw_str_t src[] = {r->resource.type, r->resource.id, r->relation,
                                r->subject.type,  r->subject.id,  r->subject.relation};
        c[i].op = ups[i].op;
        for (size_t j = 0; j < KW_ARRAY_LEN(src); j++) {
            char *p = kw_arena_strndup(a, src[j].ptr ? src[j].ptr : "", src[j].len);
            if (!p)
                return KW_ENOMEM;
            *dst[j] = (kw_str_t){p, src[j].len};
        }
    }
    *out = c;
    *n_out = n;
    return KW_OK;
}

int kw_api_apply(kw_engine_t *engine, const kw_update_t *ups, size_t n, kw_revision_t rev,
                 kw_diag_t *diag)
{
    if (n == 0)
        return KW_OK;
    /* One engine batch for the whole revision, however large (an agent delete can remove
     * thousands of relationships): readers see all of a commit or none of it, never a
     * half-applied revision (which, under a schema with exclusions, could say yes).
     * The engine's revision follows the store's when it can; a schema swap may have moved
     * it past the store's, then it assigns its own next revision (ordering is still the
     * commit order: the caller holds the write mutex). */
    kw_revision_t at = rev > kw_engine_revision(engine) ? rev : 0;
    return kw_engine_write(engine, ups, n, NULL, 0, at, NULL, diag);
}

/* ---- group commit (tag-kw-api-group-commit) ----
 *
 * Leader/follower: every writer queues a job under group_mu. A writer that finds no
 * leader becomes it: it takes write_mu, takes up to KW__GROUP_MAX_JOBS jobs from the head
 * of the queue (a KW__WRITE_ALONE job only as the first and only one), runs them in one
 * store transaction (run_batch), marks them done and wakes their writers. A leader whose
 * own job is still queued (the batch was full, or its job was deferred) leads again;
 * otherwise, on the way out, it wakes the writer at the head of the queue, which leads
 * next. While a batch commits (one fsync), the writers arriving queue up for the next
 * one: the batch size follows the load, and a lone writer commits at once, as before.
 */

struct kw__write_job {
    kw__api_tx_fn fn;
    void *ud;
    kw_diag_t *diag; /* the caller's (may be NULL) */
    bool alone;
    bool done;     /* under group_mu: rc/rev are final */
    bool deferred; /* run_batch: rolled back, to run in a later batch */
    bool own_err;  /* run_batch: fn failed, rc is its own error */
    bool kept;     /* run_batch: in the transaction being committed */
    int rc;
    kw_revision_t rev;
    pthread_cond_t cv; /* signalled when done, or to hand over the lead */
    kw__write_job_t *next;
};

/* The batch's relationships, to keep one revision free of a relationship named twice
 * (the engine refuses such a batch, and a follower applies a revision as one batch): an
 * open-addressing set of indices into the transaction's change list. */
typedef struct {
    uint32_t *slot; /* index + 1; 0 = empty */
    size_t cap, n;  /* cap: a power of two */
} relset_t;

static uint64_t rel_hash(const kw_rel_t *r)
{
    const kw_str_t f[6] = {r->resource.type, r->resource.id, r->relation,
                           r->subject.type,  r->subject.id,  r->subject.relation};
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < 6; i++) {
        for (size_t k = 0; k < f[i].len; k++)
            h = (h ^ (unsigned char)f[i].ptr[k]) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* field separator */
    }
    return h;
}

static bool rel_same(const kw_rel_t *a, const kw_rel_t *b)
{
    return kw_str_eq(a->resource.type, b->resource.type) &&
           kw_str_eq(a->resource.id, b->resource.id) && kw_str_eq(a->relation, b->relation) &&
           kw_str_eq(a->subject.type, b->subject.type) && kw_str_eq(a->subject.id, b->subject.id) &&
           kw_str_eq(a->subject.relation, b->subject.relation);
}

/* Is ups[i]'s relationship in the set? */
static bool relset_has(const relset_t *s, const kw_update_t *ups, size_t i)
{
    if (s->n == 0)
        return false;
    size_t mask = s->cap - 1;
    for (size_t h = (size_t)rel_hash(&ups[i].rel) & mask;; h = (h + 1) & mask) {
        uint32_t v = s->slot[h];
        if (v == 0)
            return false;
        if (rel_same(&ups[v - 1].rel, &ups[i].rel))
            return true;
    }
}

static void relset_put(relset_t *s, const kw_update_t *ups, size_t i)
{
    size_t mask = s->cap - 1;
    size_t h = (size_t)rel_hash(&ups[i].rel) & mask;
    while (s->slot[h] != 0)
        h = (h + 1) & mask;
    s->slot[h] = (uint32_t)(i + 1);
    s->n++;
}

/* Adds ups[from..to) (the caller checked none is present). KW_OK or KW_ENOMEM. */
static int relset_add(relset_t *s, const kw_update_t *ups, size_t from, size_t to)
{
    size_t need = s->n + (to - from);
    if (to > UINT32_MAX - 1)
        return KW_ENOMEM;
    if (need * 2 > s->cap) { /* load <= 1/2: rebuild larger */
        size_t cap = s->cap ? s->cap : 64;
        while (need * 2 > cap)
            cap *= 2;
        uint32_t *old = s->slot;
        size_t old_cap = s->cap;
        s->slot = kw_calloc(cap, sizeof(*s->slot));
        if (!s->slot) {
            s->slot = old;
            return KW_ENOMEM;
        }
        s->cap = cap;
        s->n = 0;
        for (size_t k = 0; k < old_cap; k++)
            if (old[k])
                relset_put(s, ups, old[k] - 1);
        kw_free(old);
    }
    for (size_t i = from; i < to; i++)
        relset_put(s, ups, i);
    return KW_OK;
}

/* After a commit at r: the graph gets the batch's changes (existing rules: on PostgreSQL
 * through the changelog, which holds them at r, so other instances' revisions are never
 * skipped). The result is every kept job's. */
static int apply_committed(kw_api_t *api, const kw_update_t *changes, size_t n, kw_revision_t r,
                           kw_diag_t *diag)
{
    if (api->follows) {
        /* Another instance's R-1 may not be applied yet: catch up through the changelog,
         * which delivers every revision up to >= r, ours included, in order. */
        kw_diag_t cd;
        kw_diag_clear(&cd);
        int crc = kw__api_catch_up(api, &cd);
        if (kw__api_applied(api) < r && kw__api_applied(api) == r - 1 && crc != KW_ENOMEM) {
            /* The changelog was unreachable right after our commit, but nothing is
             * missing before it: our own changes are exactly revision r. */
            crc = kw_api_apply(api->engine, changes, n, r, &cd);
            if (crc == KW_OK)
                kw__api_advance(api, r);
        }
        if (kw__api_applied(api) < r) {
            /* Committed and durable; the graph will get it when the follower catches
             * up. Until then this instance is not fresh (503 on graph routes). */
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "committed revision %" PRIu64 " but could not catch up to it (%s)",
                   (uint64_t)r, kw_err_name(crc));
            atomic_store(&api->fresh, false);
            /* KW_EPRUNED: this instance is behind the pruned changelog; the follower
             * reloads the whole graph (follow.c), which includes this commit. */
            if (crc != KW_EDB && crc != KW_ETIMEOUT && crc != KW_EPRUNED && crc != KW_OK)
                return KW_EINTERNAL;
        }
        return KW_OK;
    }
    int rc = kw_api_apply(api->engine, changes, n, r, diag);
    if (rc != KW_OK) {
        /* The rows are durable but the graph missed the change: loud, and a 500. */
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "committed revision %" PRIu64 " but the engine refused its %zu changes: %s",
               (uint64_t)r, n, kw_err_name(rc));
        return KW_EINTERNAL;
    }
    kw__api_advance(api, r);
    return KW_OK;
}

/* Gives every job of the batch that has no result of its own yet (not failed alone,
 * not deferred unless `all`) the code rc and the message in d. */
static void batch_fail(kw__write_job_t **jobs, size_t n, int rc, const kw_diag_t *d, bool all)
{
    for (size_t i = 0; i < n; i++) {
        kw__write_job_t *j = jobs[i];
        if (j->own_err || (j->deferred && !all))
            continue;
        j->deferred = false;
        j->kept = false;
        j->rc = rc;
        if (j->diag && d && d->msg[0])
            *j->diag = *d;
        else if (j->diag)
            kw_diag_set(j->diag, rc, 0, 0, "%s", kw_err_name(rc));
    }
}

static void count_batch(kw_api_t *api, uint64_t kept)
{
    atomic_fetch_add_explicit(&api->group_batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&api->group_jobs, kept, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&api->group_max_jobs, memory_order_relaxed);
    while (kept > max &&
           !atomic_compare_exchange_weak_explicit(&api->group_max_jobs, &max, kept,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Under write_mu: one transaction for jobs[0..n). Each job ends with rc/rev set, or
 * deferred (to run again in a later batch). A single job runs as it always did: no
 * savepoint, its error rolls the transaction back. */
static void run_batch(kw_api_t *api, kw__write_job_t **jobs, size_t n)
{
    kw_store_tx_t *tx = NULL;
    kw_diag_t bd;
    kw_diag_clear(&bd);
    relset_t set = {NULL, 0, 0};
    kw_arena_t *scratch = NULL;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        jobs[i]->deferred = jobs[i]->own_err = jobs[i]->kept = false;
        jobs[i]->rc = KW_OK;
        jobs[i]->rev = 0;
    }
    int rc = kw_store_tx_begin(api->store, &tx, &bd);
    if (rc != KW_OK) {
        batch_fail(jobs, n, rc, &bd, true);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        kw__write_job_t *j = jobs[i];
        const kw_update_t *ups = NULL;
        size_t n_ups = 0;
        kw_store_tx_changes(tx, &ups, &n_ups);
        if (i > 0 && n_ups >= KW__GROUP_MAX_CHANGES) {
            j->deferred = true; /* the batch is big enough: the next one */
            continue;
        }
        if (n == 1) {
            rc = j->fn(tx, j->ud, j->diag);
            if (rc != KW_OK) {
                kw_store_tx_rollback(tx);
                j->rc = rc;
                j->own_err = true;
                return;
            }
            j->kept = true;
            kept = 1;
            break;
        }
        kw_store_savepoint_t sp;
        rc = kw_store_tx_savepoint(tx, &sp, &bd);
        if (rc != KW_OK)
            goto broken;
        int jrc = j->fn(tx, j->ud, j->diag);
        kw_store_tx_changes(tx, &ups, &n_ups);
        bool dup = false;
        for (size_t k = sp.n_changes; jrc == KW_OK && k < n_ups && !dup; k++)
            dup = relset_has(&set, ups, k);
        if (jrc == KW_OK && !dup) {
            rc = kw_store_tx_release_savepoint(tx, &sp, &bd);
            if (rc != KW_OK)
                goto broken;
            jrc = relset_add(&set, ups, sp.n_changes, n_ups);
            if (jrc == KW_OK) {
                j->kept = true;
                kept++;
                continue;
            }
            /* Out of memory for the set: this job cannot be checked; the tx is still
             * consistent up to here, but its work is released: fail the batch. */
            rc = jrc;
            kw_diag_set(&bd, rc, 0, 0, "out of memory");
            goto broken;
        }
        rc = kw_store_tx_rollback_to_savepoint(tx, &sp, &bd);
        if (dup) {
            j->deferred = true;
            atomic_fetch_add_explicit(&api->group_deferred, 1, memory_order_relaxed);
        } else {
            j->rc = jrc;
            j->own_err = true;
        }
        if (rc != KW_OK)
            goto broken;
    }
    kw_free(set.slot);
    set.slot = NULL;
    if (kept == 0) {
        kw_store_tx_rollback(tx); /* every job failed or was deferred: no revision */
        return;
    }
    kw_update_t *changes = NULL;
    size_t n_changes = 0;
    kw_revision_t r = 0;
    scratch = kw_arena_new(0);
    rc = scratch ? copy_changes(tx, scratch, &changes, &n_changes) : KW_ENOMEM;
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        kw_diag_set(&bd, rc, 0, 0, "out of memory");
        batch_fail(jobs, n, rc, &bd, false);
        kw_arena_free(scratch);
        return;
    }
    /* KW_EDB here = outcome unknown (a lost COMMIT): the graph is not touched; if it did
     * commit, the follower applies it from the changelog. */
    rc = kw_store_tx_commit(tx, &r, &bd);
    if (rc == KW_OK) {
        count_batch(api, kept);
        rc = apply_committed(api, changes, n_changes, r, &bd);
    }
    kw_arena_free(scratch);
    if (rc != KW_OK) {
        batch_fail(jobs, n, rc, &bd, false);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->kept)
            jobs[i]->rev = r;
    return;
broken:
    /* A savepoint could not be set, released or rolled back to: the transaction is in
     * an unknown state. Nothing of it commits; every job without its own error fails. */
    kw_free(set.slot);
    kw_store_tx_rollback(tx);
    batch_fail(jobs, n, rc, &bd, true);
}

/* Under write_mu and group_mu: takes the next batch off the queue. */
static size_t take_batch(kw_api_t *api, kw__write_job_t **jobs)
{
    size_t n = 0;
    while (api->group_head && n < KW__GROUP_MAX_JOBS) {
        kw__write_job_t *j = api->group_head;
        if (j->alone && n > 0)
            break;
        api->group_head = j->next;
        if (!api->group_head)
            api->group_tail = NULL;
        j->next = NULL;
        jobs[n++] = j;
        if (j->alone)
            break;
    }
    return n;
}

/* The leader's turn: one batch. Called without any lock, with group_leading set. */
static void lead_one_batch(kw_api_t *api)
{
    kw__write_job_t *jobs[KW__GROUP_MAX_JOBS];
    pthread_mutex_lock(&api->write_mu);
    /* Taken after write_mu: the writers that arrived while it was held join this batch. */
    pthread_mutex_lock(&api->group_mu);
    size_t n = take_batch(api, jobs);
    pthread_mutex_unlock(&api->group_mu);
    if (n > 0)
        run_batch(api, jobs, n);
    pthread_mutex_unlock(&api->write_mu);
    pthread_mutex_lock(&api->group_mu);
    /* Deferred jobs go back to the head of the queue, in their order: they run first in
     * the next batch (where the first job never meets an earlier change). */
    for (size_t i = n; i-- > 0;) {
        kw__write_job_t *j = jobs[i];
        if (j->deferred) {
            j->next = api->group_head;
            api->group_head = j;
            if (!api->group_tail)
                api->group_tail = j;
        } else {
            j->done = true;
            pthread_cond_signal(&j->cv);
        }
    }
    pthread_mutex_unlock(&api->group_mu);
}

size_t kw__api_write_queued(kw_api_t *api)
{
    size_t n = 0;
    pthread_mutex_lock(&api->group_mu);
    for (const kw__write_job_t *j = api->group_head; j; j = j->next)
        n++;
    pthread_mutex_unlock(&api->group_mu);
    return n;
}

int kw__api_write(kw_api_t *api, kw__api_tx_fn fn, void *ud, unsigned flags, kw_revision_t *rev,
                  kw_diag_t *diag)
{
    kw__write_job_t job;
    memset(&job, 0, sizeof(job));
    job.fn = fn;
    job.ud = ud;
    job.diag = diag;
    job.alone = (flags & KW__WRITE_ALONE) != 0;
    if (pthread_cond_init(&job.cv, NULL) != 0)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    pthread_mutex_lock(&api->group_mu);
    if (api->group_tail)
        api->group_tail->next = &job;
    else
        api->group_head = &job;
    api->group_tail = &job;
    while (!job.done) {
        if (!api->group_leading) {
            api->group_leading = true;
            pthread_mutex_unlock(&api->group_mu);
            lead_one_batch(api);
            pthread_mutex_lock(&api->group_mu);
            api->group_leading = false;
            continue;
        }
        pthread_cond_wait(&job.cv, &api->group_mu);
    }
    /* Hand the lead over to the next writer in line (it may be asleep). */
    if (!api->group_leading && api->group_head)
        pthread_cond_signal(&api->group_head->cv);
    pthread_mutex_unlock(&api->group_mu);
    pthread_cond_destroy(&job.cv);
    if (rev && job.rc == KW_OK)
        *rev = job.rev;
    return job.rc;
}
