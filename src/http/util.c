/*
 * http/util.c - JSON string escaping, percent-decoding and response helpers.
 *
 * These are pure functions over bytes: no sockets, no global state. kw_json_escape is the
 * one place that turns untrusted bytes into JSON text, so it never emits a raw control
 * character or an invalid UTF-8 sequence (each offending byte becomes U+FFFD).
 */
#include <string.h>

#include "http.h"

static const char hex_digits[] = "0123456789abcdef";

void kw_json_escape(kw_buf_t *out, kw_str_t s)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    size_t i = 0, run = 0; /* run: bytes from i - run that need no escaping */
    kw_buf_append(out, "\"", 1);
    while (i < s.len) {
        unsigned char c = p[i];
        size_t n = 1;
        const char *esc = NULL;
        char ubuf[6];
        if (c >= 0x80) {
            n = kw_utf8_decode((const char *)p + i, s.len - i, NULL);
            if (n == 0) {
                esc = "\\ufffd";
                n = 1;
            }
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else if (c == '\b') {
            esc = "\\b";
        } else if (c == '\f') {
            esc = "\\f";
        } else if (c < 0x20 || c == 0x7F) {
            memcpy(ubuf, "\\u00", 4);
            ubuf[4] = hex_digits[c >> 4];
            ubuf[5] = hex_digits[c & 0xF];
            esc = ubuf;
        }
        if (esc) {
            if (run)
                kw_buf_append(out, p + i - run, run);
            run = 0;
            kw_buf_append(out, esc, esc == ubuf ? sizeof(ubuf) : strlen(esc));
        } else {
            run += n;
        }
        i += n;
    }
    if (run)
        kw_buf_append(out, p + i - run, run);
    kw_buf_append(out, "\"", 1);
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool kw_http_pct_decode(kw_arena_t *a, kw_str_t in, bool plus_is_space, kw_str_t *out)
{
    /* Decoding never lengthens, so in.len + 1 bytes always suffice. */
    char *d = kw_arena_alloc(a, in.len + 1);
    if (!d)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < in.len; i++) {
        unsigned char c = (unsigned char)in.ptr[i];
        if (c == '%') {
            if (in.len - i < 3)
                return false;
            int hi = hex_val((unsigned char)in.ptr[i + 1]);
            int lo = hex_val((unsigned char)in.ptr[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            d[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            d[o++] = ' ';
        } else {
            d[o++] = (char)c;
        }
    }
    d[o] = '\0';
    out->ptr = d;
    out->len = o;
    return true;
}

void kw_http_resp_header(kw_http_resp_t *resp, const char *name, const char *value)
{
    /* Four slots is the contract; a fifth header is a programming error in a handler. */
    kw_assert(resp->n_hdrs < KW_ARRAY_LEN(resp->hdr_names));
    resp->hdr_names[resp->n_hdrs] = name;
    resp->hdr_values[resp->n_hdrs] = value;
    resp->n_hdrs++;
}

void kw_http_resp_error(kw_http_resp_t *resp, int status, const char *msg)
{
    resp->status = status;
    resp->content_type = "application/json";
    resp->body.len = 0; /* replace whatever the handler had started */
    if (resp->body.ptr)
        resp->body.ptr[0] = '\0';
    kw_buf_puts(&resp->body, "{\"detail\": ");
    kw_json_escape(&resp->body, kw_str_c(msg));
    kw_buf_puts(&resp->body, "}");
}
