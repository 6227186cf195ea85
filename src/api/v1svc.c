/*
 * api/v1svc.c - the common parts of the v1 service layer (v1svc.h): gRPC statuses with
 * SpiceDB's ErrorInfo, the mapping of engine/store errors onto them, grpc-gateway's
 * code-to-HTTP table, consistency (atExactSnapshot's hold), and cursors.
 *
 * Cursor bytes, before base64url (no padding; the one canonical text: unused low bits of
 * the last character are zero):
 *   [0] version 2, [1] the RPC, [2..10) the revision (big-endian), [10..26) the request's
 *   shape hash, then each position field as a 2-byte big-endian length and its bytes,
 *   then a 16-byte MAC: SipHash-2-4 with a 128-bit output (libsodium's
 *   crypto_shorthash_siphashx24) of everything before it, under a 128-bit cursor key.
 *
 * The cursor key is the first 16 bytes of the keyring's keyed BLAKE2b (kw_key_hash) of
 * "kw-v1-cursor-mac-key\0": a PRF of the key-hashing subkey (itself derived from the
 * master key in the database), so every instance and restart over one database derives
 * the same key. Key separation: the NUL keeps that input apart from every API-key and
 * preshared-key hash of the same keyring (a key never contains a NUL), and the hashes a
 * client gets to see are of inputs with other prefixes ("kw-v1-shape\0" + fields, whose
 * first 16 bytes every cursor carries; "keyward-audit-cursor\0" + filters), so no output
 * a client can obtain is the cursor key; the key is used for nothing but this MAC.
 * Forgery: SipHash is a PRF under a secret 128-bit key, so without the key a client's best
 * chance that a cursor it made or altered verifies is 2^-128 per try (each try is a
 * request the server answers), and recovering the key takes ~2^128 work; the key never
 * leaves the process.
 * Version 1 cursors (BLAKE2b of the whole cursor per result, ~3,300 instructions per
 * streamed result) are refused as invalid cursors: a client restarts its stream.
 *
 * Per result the cost is SipHash over the bytes after the first 24 and base64 of them: a
 * stream's kw__v1_minter_t derives the key, encodes the constant head (version, RPC,
 * revision, shape) once and keeps SipHash's state after the head's first 24 bytes (three
 * whole 8-byte blocks; SipHash's state after a block depends on the key and the blocks
 * before it only, the message length enters with the last block), so the MAC is the same
 * crypto_shorthash_siphashx24 of the whole cursor, which is what kw__v1_cursor_open checks
 * (libsodium's, so the two implementations are compared on every cursor a test opens). The shape
 * hash is the keyring's keyed hash over the request's fields, so a cursor says nothing about the
 * request that a client did not already know.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "v1svc_int.h"
#include "base/log.h"

#define KW_MODULE "v1"

/* ---- status ---- */

void kw_v1_status_clear(kw_v1_status_t *st)
{
    st->code = KW_GRPC_OK;
    st->reason = NULL;
    st->msg[0] = '\0';
    st->n_meta = 0;
}

int kw_v1_fail(kw_v1_status_t *st, int rc, int code, const char *reason, const char *fmt, ...)
{
    va_list ap;
    st->code = code;
    st->reason = reason;
    st->n_meta = 0;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
    va_end(ap);
    return rc;
}

void kw_v1_meta(kw_v1_status_t *st, const char *key, kw_str_t value)
{
    if (st->n_meta >= KW_V1_MAX_META)
        return;
    size_t n = value.len < sizeof(st->meta_val[0]) - 1 ? value.len : sizeof(st->meta_val[0]) - 1;
    st->meta_key[st->n_meta] = key;
    if (n)
        memcpy(st->meta_val[st->n_meta], value.ptr, n);
    st->meta_val[st->n_meta][n] = '\0';
    st->n_meta++;
}

int kw_v1_http_status(int code)
{
    switch (code) {
    case KW_GRPC_OK:
        return 200;
    case KW_GRPC_CANCELLED:
        return 499;
    case KW_GRPC_INVALID_ARGUMENT:
    case KW_GRPC_FAILED_PRECONDITION:
    case KW_GRPC_OUT_OF_RANGE:
        return 400;
    case KW_GRPC_DEADLINE_EXCEEDED:
        return 504;
    case KW_GRPC_NOT_FOUND:
        return 404;
    case KW_GRPC_ALREADY_EXISTS:
    case KW_GRPC_ABORTED:
        return 409;
    case KW_GRPC_PERMISSION_DENIED:
        return 403;
    case KW_GRPC_UNAUTHENTICATED:
        return 401;
    case KW_GRPC_RESOURCE_EXHAUSTED:
        return 429;
    case KW_GRPC_UNIMPLEMENTED:
        return 501;
    case KW_GRPC_UNAVAILABLE:
        return 503;
    default: /* UNKNOWN, INTERNAL, DATA_LOSS and anything else */
        return 500;
    }
}

static bool starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool ends_with(const char *s, const char *p)
{
    size_t n = strlen(s), m = strlen(p);
    return n >= m && strcmp(s + n - m, p) == 0;
}

/* The engine names unknown schema elements in these words (authz/resolve.c, read.c:
 * tag-kw-v1-unknown-names); SpiceDB answers them FAILED_PRECONDITION with a reason. */
static const char *unknown_reason(const char *msg)
{
    if (!ends_with(msg, "not found"))
        return NULL;
    if (starts_with(msg, "object definition "))
        return "ERROR_REASON_UNKNOWN_DEFINITION";
    if (starts_with(msg, "relation "))
        return "ERROR_REASON_UNKNOWN_RELATION_OR_PERMISSION";
    return NULL;
}

int kw_v1_fail_rc(kw_v1_status_t *st, int rc, const kw_diag_t *d, const char *request_id)
{
    const char *msg = d && d->msg[0] ? d->msg : kw_strerror(rc);
    const char *reason;
    switch (rc) {
    case KW_EINVAL:
        if ((reason = unknown_reason(msg)) != NULL)
            return kw_v1_fail(st, rc, KW_GRPC_FAILED_PRECONDITION, reason, "%s", msg);
        return kw_v1_fail(st, rc, KW_GRPC_INVALID_ARGUMENT, NULL, "%s", msg);
    case KW_ESCHEMA: /* parse errors (with a position) get their reason in v1svc_schema.c */
        /* No schema written yet (an empty serve-testing instance): no definition exists,
         * which SpiceDB answers as an unknown definition. tag-kw-v1-unknown-names */
        if (strcmp(msg, "no schema is installed") == 0)
            return kw_v1_fail(st, rc, KW_GRPC_FAILED_PRECONDITION,
                              "ERROR_REASON_UNKNOWN_DEFINITION",
                              "no schema has been written: no object definition exists");
        return kw_v1_fail(st, rc, KW_GRPC_INVALID_ARGUMENT, NULL, "%s", msg);
    case KW_EUNSUPPORTED:
        return kw_v1_fail(st, rc, KW_GRPC_UNIMPLEMENTED, NULL, "%s", msg);
    case KW_ELIMIT:
        return kw_v1_fail(st, rc, KW_GRPC_INVALID_ARGUMENT, NULL, "%s", msg);
    case KW_EPRECOND:
        return kw_v1_fail(st, rc, KW_GRPC_FAILED_PRECONDITION,
                          "ERROR_REASON_WRITE_OR_DELETE_PRECONDITION_FAILURE", "%s", msg);
    case KW_EEXISTS:
    case KW_ECONFLICT:
        return kw_v1_fail(st, rc, KW_GRPC_ALREADY_EXISTS,
                          "ERROR_REASON_ATTEMPT_TO_RECREATE_RELATIONSHIP", "%s", msg);
    case KW_EDB:
    case KW_ETIMEOUT:
    case KW_EPRUNED: /* behind the pruned changelog: resyncing (sync/catchup.c) */
        return kw_v1_fail(st, rc, KW_GRPC_UNAVAILABLE, NULL, "%s", KW__MSG_DB);
    case KW_EDEPTH:
        return kw_v1_fail(st, rc, KW_GRPC_RESOURCE_EXHAUSTED, "ERROR_REASON_MAXIMUM_DEPTH_EXCEEDED",
                          "%s", msg);
    case KW_ECYCLE:
        return kw_v1_fail(st, rc, KW_GRPC_FAILED_PRECONDITION, NULL, "%s", msg);
    case KW_EBUDGET: /* the query's budget (base/limits.h) */
        return kw_v1_fail(st, rc, KW_GRPC_RESOURCE_EXHAUSTED, NULL, "%s", msg);
    default:
        kw_log(KW_LOG_ERROR, KW_MODULE, "request %s: %s", request_id ? request_id : "-",
               kw_err_name(rc));
        return kw_v1_fail(st, rc, KW_GRPC_INTERNAL, NULL, "%s", KW__MSG_INTERNAL);
    }
}

int kw__v1_limit_check(uint32_t limit, uint32_t max, kw_v1_status_t *st)
{
    if (limit <= max)
        return KW_OK;
    kw_v1_fail(
        st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, "ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT",
        "provided limit %" PRIu32 " is greater than maximum allowed of %" PRIu32, limit, max);
    char a[16], b[16];
    snprintf(a, sizeof(a), "%" PRIu32, limit);
    snprintf(b, sizeof(b), "%" PRIu32, max);
    kw_v1_meta(st, "limit_provided", kw_str_c(a));
    kw_v1_meta(st, "maximum_limit_allowed", kw_str_c(b));
    return KW_EINVAL;
}

int kw__v1_unimplemented(kw_v1_status_t *st, const char *what, const char *why)
{
    return kw_v1_fail(st, KW_EUNSUPPORTED, KW_GRPC_UNIMPLEMENTED, NULL, "%s is not supported: %s",
                      what, why);
}

/* ---- consistency ---- */

void kw_v1_consistency_wait(const kw_v1_consistency_t *c, kw_revision_t *min, bool *full)
{
    *min = 0;
    *full = false;
    switch (c->kind) {
    case KW_V1_AT_LEAST_AS_FRESH:
    case KW_V1_AT_EXACT_SNAPSHOT: /* waited for, then kw__v1_read_begin requires it exactly */
        *min = c->rev;
        break;
    case KW_V1_FULLY_CONSISTENT:
        *full = true;
        break;
    case KW_V1_MINIMIZE_LATENCY:
        break;
    }
}

int kw__v1_read_begin(kw_api_t *svc, const kw_v1_consistency_t *c, kw__v1_read_t *r,
                      kw_revision_t *rev, kw_v1_status_t *st)
{
    return kw__v1_read_begin_for(svc, c, r, rev, KW__V1_AT_GRAPH, st);
}

int kw__v1_read_begin_for(kw_api_t *svc, const kw_v1_consistency_t *c, kw__v1_read_t *r,
                          kw_revision_t *rev, int need, kw_v1_status_t *st)
{
    r->held = false;
    r->snap = NULL;
    r->engine = svc->engine;
    if (c->kind != KW_V1_AT_EXACT_SNAPSHOT) {
        *rev = kw__api_applied(svc);
        return KW_OK;
    }
    /* Nothing changes the graph while it is held (sync/commit.c, kw_sync_hold). */
    kw_revision_t cur = kw_sync_hold(svc->sync);
    if (cur == c->rev) {
        r->held = true;
        *rev = cur;
        return KW_OK;
    }
    kw_sync_release(svc->sync);
    if (need == KW__V1_AT_CURRENT)
        return kw_v1_fail(st, KW_EEXPIRED, KW_GRPC_OUT_OF_RANGE, NULL,
                          "invalid revision: revision has expired: consistency.atExactSnapshot "
                          "names revision %" PRIu64 ", and this RPC reads the store, which "
                          "keeps only the current revision %" PRIu64,
                          (uint64_t)c->rev, (uint64_t)cur);
    /* An older revision (a newer one cannot get here: the consistency wait refuses or
     * waits for it): a snapshot engine as of it, from the change log (authz/history.c);
     * for the schema alone, the current one (a schema write restarts the window). */
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = need == KW__V1_AT_SCHEMA ? kw_engine_history_covers(svc->engine, c->rev, &d)
                                      : kw_engine_snapshot(svc->engine, c->rev, &r->snap, &d);
    if (rc == KW_EEXPIRED)
        /* SpiceDB's OUT_OF_RANGE for a revision past its window (no ErrorInfo reason). */
        return kw_v1_fail(st, KW_EEXPIRED, KW_GRPC_OUT_OF_RANGE, NULL,
                          "invalid revision: revision has expired: consistency.atExactSnapshot "
                          "names revision %" PRIu64 " (current %" PRIu64 "): %s",
                          (uint64_t)c->rev, (uint64_t)cur, d.msg);
    if (rc != KW_OK)
        return kw_v1_fail_rc(st, rc, &d, NULL);
    if (r->snap)
        r->engine = kw_snapshot_engine(r->snap);
    *rev = c->rev;
    return KW_OK;
}

void kw__v1_read_end(kw_api_t *svc, kw__v1_read_t *r)
{
    if (r->snap) {
        kw_snapshot_release(r->snap);
        r->snap = NULL;
    }
    r->engine = NULL;
    if (!r->held)
        return;
    r->held = false;
    kw_sync_release(svc->sync);
}

/* ---- order ---- */

int kw__v1_cmp(kw_str_t a, kw_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* ---- cursors ---- */

#define CURSOR_VERSION 2
#define CURSOR_HEAD 26 /* version, rpc, revision, shape */
#define CURSOR_MAC KW__V1_MAC_LEN
#define HEAD_B64_BYTES 24 /* the head's bytes encoded once per stream: a multiple of 3 */
static const char KEY_DOMAIN[] = "kw-v1-cursor-mac-key"; /* + its NUL */

_Static_assert(KW__V1_MAC_LEN == crypto_shorthash_siphashx24_BYTES, "the MAC is 128 bits");
_Static_assert(KW__V1_MAC_KEY_LEN == crypto_shorthash_siphashx24_KEYBYTES, "a SipHash key");
_Static_assert(KW__V1_HEAD_B64 == HEAD_B64_BYTES / 3 * 4, "the head's text");
_Static_assert(KW__V1_SHAPE_LEN + 10 == CURSOR_HEAD, "the head's layout");

static void put_u32(kw_buf_t *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    kw_buf_append(b, x, 4);
}

void kw__v1_shape_init(kw__v1_shape_t *s, int rpc)
{
    kw_buf_init(&s->buf);
    kw_buf_puts(&s->buf, "kw-v1-shape");
    kw_buf_append(&s->buf, "", 1);
    put_u32(&s->buf, (uint32_t)rpc);
}

void kw__v1_shape_str(kw__v1_shape_t *s, kw_str_t v)
{
    put_u32(&s->buf, (uint32_t)v.len);
    if (v.len)
        kw_buf_append(&s->buf, v.ptr, v.len);
}

void kw__v1_shape_u32(kw__v1_shape_t *s, uint32_t v)
{
    put_u32(&s->buf, v);
}

int kw__v1_shape_done(kw_api_t *svc, kw__v1_shape_t *s, uint8_t out[KW__V1_SHAPE_LEN])
{
    int rc = s->buf.failed ? KW_ENOMEM : KW_OK;
    if (rc == KW_OK) {
        uint8_t h[KW_KEY_HASH_LEN];
        kw_key_hash(svc->keyring, (kw_str_t){s->buf.ptr, s->buf.len}, h);
        memcpy(out, h, KW__V1_SHAPE_LEN);
    }
    kw_buf_free(&s->buf);
    return rc;
}

/* The cursor key (see the top of this file). */
static void cursor_key(kw_api_t *svc, uint8_t key[KW__V1_MAC_KEY_LEN])
{
    uint8_t h[KW_KEY_HASH_LEN];
    kw_key_hash(svc->keyring, (kw_str_t){KEY_DOMAIN, sizeof(KEY_DOMAIN)}, h);
    memcpy(key, h, KW__V1_MAC_KEY_LEN);
    sodium_memzero(h, sizeof(h));
}

static void mac(const uint8_t key[KW__V1_MAC_KEY_LEN], const uint8_t *p, size_t n,
                uint8_t out[CURSOR_MAC])
{
    /* crypto_shorthash_siphashx24 cannot fail. */
    (void)crypto_shorthash_siphashx24(out, p, n, key);
}

/* SipHash-2-4 with a 128-bit output, as libsodium's crypto_shorthash_siphashx24 (its
 * reference code: same constants, rounds and finalization), split so that a minter hashes
 * the cursor head's first SIP_HEAD bytes once per stream. */
#define SIP_HEAD 24
#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND(v0, v1, v2, v3)                                                                  \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = SIP_ROTL(v1, 13);                                                                     \
        v1 ^= v0;                                                                                  \
        v0 = SIP_ROTL(v0, 32);                                                                     \
        v2 += v3;                                                                                  \
        v3 = SIP_ROTL(v3, 16);                                                                     \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = SIP_ROTL(v3, 21);                                                                     \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = SIP_ROTL(v1, 17);                                                                     \
        v1 ^= v2;                                                                                  \
        v2 = SIP_ROTL(v2, 32);                                                                     \
    } while (0)

_Static_assert(SIP_HEAD % 8 == 0 && SIP_HEAD <= CURSOR_HEAD, "whole blocks of the head");

static inline uint64_t sip_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void sip_put64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* The state after the key and the first SIP_HEAD bytes of head. */
static void sip_start(const uint8_t key[KW__V1_MAC_KEY_LEN], const uint8_t *head, uint64_t st[4])
{
    uint64_t k0 = sip_le64(key), k1 = sip_le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ull ^ k0;
    uint64_t v1 = 0x646f72616e646f83ull ^ k1; /* ...6d ^ 0xee: the 128-bit output variant */
    uint64_t v2 = 0x6c7967656e657261ull ^ k0;
    uint64_t v3 = 0x7465646279746573ull ^ k1;
    for (size_t i = 0; i < SIP_HEAD; i += 8) {
        uint64_t m = sip_le64(head + i);
        v3 ^= m;
        SIP_ROUND(v0, v1, v2, v3);
        SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    st[0] = v0, st[1] = v1, st[2] = v2, st[3] = v3;
}

/* The MAC of p[0..n) (n >= SIP_HEAD) from the state after its first SIP_HEAD bytes. */
static void sip_finish(const uint64_t st[4], const uint8_t *p, size_t n, uint8_t out[CURSOR_MAC])
{
    uint64_t v0 = st[0], v1 = st[1], v2 = st[2], v3 = st[3];
    const uint8_t *q = p + SIP_HEAD, *end = p + SIP_HEAD + (n - SIP_HEAD) / 8 * 8;
    for (; q != end; q += 8) {
        uint64_t m = sip_le64(q);
        v3 ^= m;
        SIP_ROUND(v0, v1, v2, v3);
        SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    uint8_t tail[8] = {0};
    memcpy(tail, q, (n - SIP_HEAD) % 8);
    uint64_t b = ((uint64_t)n << 56) | sip_le64(tail);
    v3 ^= b;
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xee;
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    sip_put64(out, v0 ^ v1 ^ v2 ^ v3);
    v1 ^= 0xdd;
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    sip_put64(out + 8, v0 ^ v1 ^ v2 ^ v3);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* base64url of p[0..n) into out (no padding, no NUL); returns the characters written. */
static size_t b64_encode(const uint8_t *p, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (n - i == 1) {
        out[o++] = B64[p[i] >> 2];
        out[o++] = B64[(p[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 8) | p[i + 1];
        out[o++] = B64[v >> 10];
        out[o++] = B64[(v >> 4) & 63];
        out[o++] = B64[(v & 15) << 2];
    }
    return o;
}

void kw__v1_minter_init(kw_api_t *svc, kw__v1_minter_t *m, int rpc,
                        const uint8_t shape[KW__V1_SHAPE_LEN], kw_revision_t rev)
{
    cursor_key(svc, m->key);
    size_t len = 0;
    m->head[len++] = CURSOR_VERSION;
    m->head[len++] = (uint8_t)rpc;
    for (int i = 7; i >= 0; i--)
        m->head[len++] = (uint8_t)(rev >> (8 * i));
    memcpy(m->head + len, shape, KW__V1_SHAPE_LEN);
    (void)b64_encode(m->head, HEAD_B64_BYTES, m->head_b64);
    sip_start(m->key, m->head, m->sip);
}

void kw__v1_minter_wipe(kw__v1_minter_t *m)
{
    sodium_memzero(m->key, sizeof(m->key));
    sodium_memzero(m->sip, sizeof(m->sip));
}

char *kw__v1_mint(const kw__v1_minter_t *m, kw_arena_t *a, const kw_str_t *f, size_t n)
{
    uint8_t raw[KW__V1_CURSOR_RAW_MAX];
    size_t len = CURSOR_HEAD;
    memcpy(raw, m->head, CURSOR_HEAD);
    for (size_t i = 0; i < n; i++) {
        if (f[i].len > 0xFFFF || len + 2 + f[i].len + CURSOR_MAC > sizeof(raw))
            return NULL;
        raw[len++] = (uint8_t)(f[i].len >> 8);
        raw[len++] = (uint8_t)f[i].len;
        if (f[i].len)
            memcpy(raw + len, f[i].ptr, f[i].len);
        len += f[i].len;
    }
    sip_finish(m->sip, raw, len, raw + len);
    len += CURSOR_MAC;
    char *out = kw_arena_alloc(a, (len * 4 + 2) / 3 + 1);
    if (!out)
        return NULL;
    memcpy(out, m->head_b64, KW__V1_HEAD_B64);
    size_t o = KW__V1_HEAD_B64 +
               b64_encode(raw + HEAD_B64_BYTES, len - HEAD_B64_BYTES, out + KW__V1_HEAD_B64);
    out[o] = '\0';
    return out;
}

char *kw__v1_cursor_make(kw_api_t *svc, kw_arena_t *a, int rpc,
                         const uint8_t shape[KW__V1_SHAPE_LEN], kw_revision_t rev,
                         const kw_str_t *f, size_t n)
{
    kw__v1_minter_t m;
    kw__v1_minter_init(svc, &m, rpc, shape, rev);
    char *out = kw__v1_mint(&m, a, f, n);
    kw__v1_minter_wipe(&m);
    return out;
}

static int bad_cursor(kw_v1_status_t *st, const char *why)
{
    return kw_v1_fail(st, KW_EINVAL, KW_GRPC_INVALID_ARGUMENT, "ERROR_REASON_INVALID_CURSOR",
                      "error decoding cursor: %s", why);
}

int kw__v1_cursor_open(kw_api_t *svc, kw_v1_cursor_t cursor, int rpc,
                       const uint8_t shape[KW__V1_SHAPE_LEN], size_t n, kw__v1_pos_t *pos,
                       kw_v1_status_t *st)
{
    uint8_t *raw = pos->raw;
    size_t len = 0;
    uint32_t acc = 0;
    int bits = 0;
    /* Unpadded base64url of at most sizeof(raw) bytes: ceil(8 * bytes / 6) characters. */
    if (cursor.len > (sizeof(pos->raw) * 8 + 5) / 6)
        return bad_cursor(st, "the cursor is too long");
    if (cursor.len % 4 == 1)
        return bad_cursor(st, "the cursor is not base64url text");
    for (size_t i = 0; i < cursor.len; i++) {
        int v = b64_val((unsigned char)cursor.ptr[i]);
        if (v < 0)
            return bad_cursor(st, "the cursor is not base64url text");
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            raw[len++] = (uint8_t)(acc >> bits);
        }
    }
    /* One text per cursor: the last character's unused low bits are zero. */
    if (bits && (acc & ((1u << bits) - 1)) != 0)
        return bad_cursor(st, "the cursor is not base64url text");
    if (len < CURSOR_HEAD + CURSOR_MAC || raw[0] != CURSOR_VERSION)
        return bad_cursor(st, "the cursor is not one keyward made");
    uint8_t key[KW__V1_MAC_KEY_LEN], want[CURSOR_MAC];
    cursor_key(svc, key);
    mac(key, raw, len - CURSOR_MAC, want);
    sodium_memzero(key, sizeof(key));
    if (sodium_memcmp(want, raw + len - CURSOR_MAC, CURSOR_MAC) != 0)
        return bad_cursor(st, "the cursor is not one keyward made (or it was altered)");
    /* Authentic: now it either fits this request or was made for another one. */
    if (raw[1] != (uint8_t)rpc || memcmp(raw + 10, shape, KW__V1_SHAPE_LEN) != 0)
        return kw_v1_fail(st, KW_EINVAL, KW_GRPC_FAILED_PRECONDITION, "ERROR_REASON_INVALID_CURSOR",
                          "the cursor provided does not have the same arguments as the original "
                          "API call; please ensure you are making the same API call, with the "
                          "exact same parameters (besides the cursor)");
    pos->rev = 0;
    for (int i = 0; i < 8; i++)
        pos->rev = (pos->rev << 8) | raw[2 + i];
    size_t off = CURSOR_HEAD, end = len - CURSOR_MAC;
    pos->n = 0;
    while (off < end) {
        if (pos->n >= KW__V1_POS_MAX || end - off < 2)
            return bad_cursor(st, "malformed position");
        size_t fl = ((size_t)raw[off] << 8) | raw[off + 1];
        off += 2;
        if (fl > end - off)
            return bad_cursor(st, "malformed position");
        pos->f[pos->n++] = (kw_str_t){(const char *)raw + off, fl};
        off += fl;
    }
    if (pos->n != n)
        return bad_cursor(st, "malformed position");
    return KW_OK;
}
