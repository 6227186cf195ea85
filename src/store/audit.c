/*
 * store/audit.c - the audit trail's backend-independent half: the canonical hash, argument
 * checks and dispatch (audit_int.h), chain verification, and the checks of an import.
 *
 * Invariant (audit.h): event n's prev_hash is event n-1's hash (zeros for n = 1), its hash
 * is kw_audit_hash of its fields, seq runs 1..N without a gap, and the head row holds
 * (N, hash of N). verify checks exactly these, in seq order, and names the first event
 * where one fails.
 */
#include "audit_int.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"

#define KW_MODULE "store"

static const kw__store_audit_ops_t *aops(kw_store_t *s)
{
    return s->ops->audit;
}

/* ---- the canonical encoding ---- */

static void put_u64(crypto_hash_sha256_state *st, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (56 - 8 * i));
    crypto_hash_sha256_update(st, b, sizeof(b));
}

static void put_str(crypto_hash_sha256_state *st, kw_str_t s)
{
    unsigned char b[4];
    uint32_t n = (uint32_t)s.len;
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(n >> (24 - 8 * i));
    crypto_hash_sha256_update(st, b, sizeof(b));
    if (s.len)
        crypto_hash_sha256_update(st, (const unsigned char *)s.ptr, s.len);
}

void kw_audit_hash(const kw_audit_event_t *ev, uint8_t out[KW_AUDIT_HASH_LEN])
{
    static const char tag[] = "keyward-audit-1";
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)tag, sizeof(tag)); /* with its NUL */
    put_u64(&st, (uint64_t)ev->seq);
    put_u64(&st, (uint64_t)ev->at_us);
    put_u64(&st, (uint64_t)ev->revision);
    put_str(&st, ev->actor);
    put_str(&st, ev->action);
    put_str(&st, ev->resource);
    put_str(&st, ev->account);
    put_str(&st, ev->request_id);
    put_str(&st, ev->detail);
    crypto_hash_sha256_update(&st, ev->prev_hash, KW_AUDIT_HASH_LEN);
    crypto_hash_sha256_final(&st, out);
}

void kw__audit_seal(kw_audit_event_t *ev, const kw_audit_head_t *head, kw_revision_t rev)
{
    if (ev->detail.len == 0)
        ev->detail = KW_STR("{}");
    ev->seq = head->seq + 1;
    ev->revision = rev;
    memcpy(ev->prev_hash, head->hash, KW_AUDIT_HASH_LEN);
    kw_audit_hash(ev, ev->hash);
}

/* ---- appends ---- */

static bool field_ok(kw_str_t s, size_t max)
{
    return (s.ptr || s.len == 0) && s.len <= max && kw_utf8_valid(s) &&
           !memchr(s.ptr ? s.ptr : "", '\0', s.len);
}

static int event_ok(const kw_audit_event_t *ev)
{
    const kw_str_t small[] = {ev->actor, ev->action, ev->resource, ev->account, ev->request_id};
    for (size_t i = 0; i < KW_ARRAY_LEN(small); i++)
        if (!field_ok(small[i], KW_AUDIT_FIELD_MAX))
            return KW_EINVAL;
    if (!field_ok(ev->detail, KW_AUDIT_DETAIL_MAX) || ev->action.len == 0 || ev->resource.len == 0)
        return KW_EINVAL;
    return KW_OK;
}

int kw_store_tx_audit_append(kw_store_tx_t *tx, kw_audit_event_t *ev, kw_diag_t *diag)
{
    if (!tx || !ev)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no transaction or event");
    if (tx->failed)
        return kw_diag_set(diag, tx->failed, 0, 0, "the transaction failed earlier");
    if (event_ok(ev) != KW_OK)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "audit event field missing, too long or not UTF-8");
    int rc = aops(tx->store)->append(tx, ev, diag);
    if (rc != KW_OK && !tx->failed)
        tx->failed = rc; /* the head may have moved without its event, or the reverse */
    return rc;
}

int kw_store_tx_meta_set(kw_store_tx_t *tx, const char *key, kw_str_t val)
{
    if (!tx || !key || !key[0] || (!val.ptr && val.len))
        return KW_EINVAL;
    if (tx->failed)
        return tx->failed;
    int rc = aops(tx->store)->tx_meta_set(tx, key, val);
    if (rc != KW_OK && !tx->failed)
        tx->failed = rc;
    return rc;
}

/* ---- reads ---- */

int kw_store_audit_list(kw_store_t *s, const kw_audit_filter_t *f, int64_t after_seq, size_t limit,
                        kw_arena_t *a, kw_audit_event_t **out, size_t *n_out)
{
    if (!s || !f || !a || !out || !n_out || limit == 0 || limit > 1000 || after_seq < 0)
        return KW_EINVAL;
    const kw_str_t strs[] = {f->account, f->resource, f->actor, f->action};
    for (size_t i = 0; i < KW_ARRAY_LEN(strs); i++)
        if (!field_ok(strs[i], KW_AUDIT_FIELD_MAX))
            return KW_EINVAL;
    return aops(s)->list(s, f, after_seq, limit, a, out, n_out);
}

int kw_store_audit_scan(kw_store_t *s, kw_audit_cb cb, void *ud, kw_audit_head_t *head)
{
    if (!s || !cb)
        return KW_EINVAL;
    kw_audit_head_t h;
    int rc = aops(s)->scan(s, cb, ud, &h);
    if (rc == KW_OK && head)
        *head = h;
    return rc;
}

/* ---- verification ---- */

typedef struct verify_ctx {
    kw_audit_report_t *rep;
    kw_audit_head_t prev; /* the last good event */
} verify_ctx_t;

static int broken(kw_audit_report_t *rep, int64_t seq, const char *fmt, ...) KW_PRINTF(3, 4);
static int broken(kw_audit_report_t *rep, int64_t seq, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rep->bad_seq = seq;
    vsnprintf(rep->why, sizeof(rep->why), fmt, ap);
    va_end(ap);
    return KW_ECONFLICT;
}

static int verify_one(const kw_audit_event_t *ev, void *ud)
{
    verify_ctx_t *c = ud;
    int64_t want = c->prev.seq + 1;
    uint8_t h[KW_AUDIT_HASH_LEN];
    if (ev->seq != want)
        return broken(c->rep, want,
                      ev->seq > want ? "missing: the next event stored is %lld (deleted events)"
                                     : "out of order: found event %lld after it",
                      (long long)ev->seq);
    if (sodium_memcmp(ev->prev_hash, c->prev.hash, KW_AUDIT_HASH_LEN) != 0)
        return broken(c->rep, want,
                      "its prev_hash is not the hash of event %lld (an earlier event was "
                      "replaced, or events were reordered)",
                      (long long)c->prev.seq);
    kw_audit_hash(ev, h);
    if (sodium_memcmp(h, ev->hash, KW_AUDIT_HASH_LEN) != 0)
        return broken(c->rep, want, "its content does not match its hash (the event was edited)");
    c->prev.seq = ev->seq;
    memcpy(c->prev.hash, ev->hash, KW_AUDIT_HASH_LEN);
    c->rep->n_events++;
    return 0;
}

int kw_store_audit_verify(kw_store_t *s, kw_audit_report_t *rep, kw_diag_t *diag)
{
    if (!s || !rep)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no store or report");
    memset(rep, 0, sizeof(*rep));
    verify_ctx_t c;
    memset(&c, 0, sizeof(c));
    c.rep = rep;
    kw_audit_head_t head;
    int rc = aops(s)->scan(s, verify_one, &c, &head);
    if (rc == KW_ECONFLICT)
        return rc;
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "cannot read the audit trail");
    if (head.seq != c.prev.seq)
        return broken(rep, head.seq > c.prev.seq ? c.prev.seq + 1 : head.seq + 1,
                      head.seq > c.prev.seq
                          ? "missing: the chain head says %lld events (events were cut off "
                            "the end)"
                          : "the chain head says %lld events, fewer than are stored",
                      (long long)head.seq);
    if (sodium_memcmp(head.hash, c.prev.hash, KW_AUDIT_HASH_LEN) != 0)
        return broken(rep, head.seq, "the chain head's hash is not this event's (it was edited)");
    rep->head = head;
    return KW_OK;
}

/* ---- copies ---- */

int kw_store_counts(kw_store_t *s, kw_store_counts_t *out)
{
    if (!s || !out)
        return KW_EINVAL;
    return aops(s)->counts(s, out);
}

int kw_store_dump(kw_store_t *s, const kw_store_sink_t *sink, void *ud, kw_store_counts_t *counts,
                  kw_audit_head_t *head, kw_diag_t *diag)
{
    if (!s || !sink || !sink->meta || !sink->agent || !sink->key || !sink->rel || !sink->audit ||
        !counts || !head)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "incomplete dump sink");
    memset(counts, 0, sizeof(*counts));
    memset(head, 0, sizeof(*head));
    return aops(s)->dump(s, sink, ud, counts, head, diag);
}

int kw_store_import_begin(kw_store_t *s, kw_store_import_t **imp, kw_diag_t *diag)
{
    if (!s || !imp)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no store");
    return aops(s)->import_begin(s, imp, diag);
}

/* Every import call: a failed import refuses more work; an error fails it. */
static int imp_result(kw_store_import_t *imp, int rc)
{
    if (rc != KW_OK && !imp->failed)
        imp->failed = rc;
    return rc;
}

int kw_store_import_meta(kw_store_import_t *imp, kw_str_t key, kw_str_t val)
{
    if (!imp || key.len == 0 || (!val.ptr && val.len))
        return imp ? imp_result(imp, KW_EINVAL) : KW_EINVAL;
    if (imp->failed)
        return imp->failed;
    if (kw__audit_meta_internal(key))
        return KW_OK;
    return imp_result(imp, aops(imp->store)->import_meta(imp, key, val));
}

int kw_store_import_agent(kw_store_import_t *imp, const kw_agent_t *ag)
{
    if (!imp || !ag || !ag->name || !ag->account_id)
        return imp ? imp_result(imp, KW_EINVAL) : KW_EINVAL;
    if (imp->failed)
        return imp->failed;
    return imp_result(imp, aops(imp->store)->import_agent(imp, ag));
}

int kw_store_import_key(kw_store_import_t *imp, const kw_apikey_t *k)
{
    if (!imp || !k || !k->name || !k->type || (k->hash_len && !k->hash) ||
        (k->secret_enc_len && !k->secret_enc))
        return imp ? imp_result(imp, KW_EINVAL) : KW_EINVAL;
    if (imp->failed)
        return imp->failed;
    return imp_result(imp, aops(imp->store)->import_key(imp, k));
}

int kw_store_import_rel(kw_store_import_t *imp, const kw_rel_t *rel)
{
    if (!imp || !rel)
        return imp ? imp_result(imp, KW_EINVAL) : KW_EINVAL;
    if (imp->failed)
        return imp->failed;
    return imp_result(imp, aops(imp->store)->import_rel(imp, rel));
}

int kw_store_import_audit(kw_store_import_t *imp, const kw_audit_event_t *ev)
{
    if (!imp || !ev || event_ok(ev) != KW_OK || ev->seq <= 0)
        return imp ? imp_result(imp, KW_EINVAL) : KW_EINVAL;
    if (imp->failed)
        return imp->failed;
    return imp_result(imp, aops(imp->store)->import_audit(imp, ev));
}

int kw_store_import_commit(kw_store_import_t *imp, kw_revision_t rev, const kw_audit_head_t *head,
                           kw_diag_t *diag)
{
    if (!imp)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "no import");
    if (!head || imp->failed) {
        int rc = imp->failed ? imp->failed : KW_EINVAL;
        kw_store_import_abort(imp);
        return kw_diag_set(diag, rc, 0, 0, "the import failed earlier; nothing was written");
    }
    return aops(imp->store)->import_commit(imp, rev, head, diag);
}

void kw_store_import_abort(kw_store_import_t *imp)
{
    if (imp)
        aops(imp->store)->import_abort(imp);
}
