/*
 * grpc/frame.c - gRPC's framing over HTTP/2 (the length-prefixed message, grpc-timeout,
 * grpc-message's percent-encoding, binary metadata) and the google.rpc.Status carried in
 * grpc-status-details-bin. Pure functions: unit tested and fuzzed.
 */
#include <stdio.h>
#include <string.h>

#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc_int.h"

int kw__grpc_unframe(const uint8_t *body, size_t n, size_t max, const uint8_t **msg, size_t *len)
{
    if (n < 5)
        return KW_EINVAL;
    if (body[0] != 0)
        return body[0] == 1 ? KW_EUNSUPPORTED : KW_EINVAL;
    size_t l = ((size_t)body[1] << 24) | ((size_t)body[2] << 16) | ((size_t)body[3] << 8) |
               (size_t)body[4];
    if (l > max)
        return KW_ETOOLARGE;
    if (n - 5 != l)
        return KW_EINVAL;
    *msg = body + 5;
    *len = l;
    return KW_OK;
}

void kw__grpc_frame_prefix(uint8_t out[5], size_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

bool kw__grpc_parse_timeout(const char *v, size_t n, int64_t *us)
{
    if (n < 2 || n > 9)
        return false;
    int64_t x = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (v[i] - '0');
    }
    int64_t r;
    switch (v[n - 1]) {
    case 'H':
        r = x * 3600 * 1000000;
        break;
    case 'M':
        r = x * 60 * 1000000;
        break;
    case 'S':
        r = x * 1000000;
        break;
    case 'm':
        r = x * 1000;
        break;
    case 'u':
        r = x;
        break;
    case 'n':
        r = x / 1000;
        break;
    default:
        return false;
    }
    *us = r < 1 ? 1 : r;
    return true;
}

void kw__grpc_pct_encode(const char *msg, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (cap == 0)
        return;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        bool plain = *p >= 0x20 && *p <= 0x7e && *p != '%';
        size_t need = plain ? 1 : 3;
        if (o + need >= cap)
            break;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

bool kw__grpc_b64(const uint8_t *in, size_t n, char *out, size_t cap)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0) + 1;
    if (need > cap)
        return false;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
    }
    out[o] = '\0';
    return true;
}

int kw__grpc_status_pack(const kw_v1_status_t *st, uint8_t **out, size_t *len)
{
    int rc = KW_ENOMEM;
    uint8_t *info_buf = NULL, *buf = NULL;
    Google__Rpc__ErrorInfo info = GOOGLE__RPC__ERROR_INFO__INIT;
    Google__Rpc__ErrorInfo__MetadataEntry ents[KW_V1_MAX_META];
    Google__Rpc__ErrorInfo__MetadataEntry *ent_ptrs[KW_V1_MAX_META];
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Google__Protobuf__Any *anys[1] = {&any};
    Google__Rpc__Status s = GOOGLE__RPC__STATUS__INIT;
    s.code = st->code;
    s.message = (char *)st->msg;
    if (st->reason) {
        info.reason = (char *)st->reason;
        info.domain = (char *)"authzed.com";
        size_t nm = st->n_meta < KW_V1_MAX_META ? st->n_meta : KW_V1_MAX_META;
        for (size_t i = 0; i < nm; i++) {
            google__rpc__error_info__metadata_entry__init(&ents[i]);
            ents[i].key = (char *)st->meta_key[i];
            ents[i].value = (char *)st->meta_val[i];
            ent_ptrs[i] = &ents[i];
        }
        info.n_metadata = nm;
        info.metadata = nm ? ent_ptrs : NULL;
        size_t il = google__rpc__error_info__get_packed_size(&info);
        info_buf = kw_malloc(il ? il : 1);
        if (!info_buf)
            goto out;
        google__rpc__error_info__pack(&info, info_buf);
        any.type_url = (char *)"type.googleapis.com/google.rpc.ErrorInfo";
        any.value.data = info_buf;
        any.value.len = il;
        s.n_details = 1;
        s.details = anys;
    }
    size_t l = google__rpc__status__get_packed_size(&s);
    buf = kw_malloc(l ? l : 1);
    if (!buf)
        goto out;
    google__rpc__status__pack(&s, buf);
    *out = buf;
    *len = l;
    buf = NULL;
    rc = KW_OK;
out:
    kw_free(buf);
    kw_free(info_buf);
    return rc;
}
