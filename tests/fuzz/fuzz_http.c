/*
 * tests/fuzz/fuzz_http.c - libFuzzer target for the HTTP/1.x request parser
 * (kw__http_head_end, kw__http_parse_head) and the chunked body decoder
 * (kw__http_chunk_step), src/http/parse.c.
 *
 * Property: whatever the bytes, nothing is read outside the input (a private heap copy,
 * so ASan sees one byte too far) and nothing crashes; a parsed head has every view
 * inside its buffer, a status of 0 or one of the documented refusals, and framing that
 * is never ambiguous (chunked XOR Content-Length); the chunk decoder's data spans lie
 * inside what it was fed, in order, and never add up to more than that.
 */
#include <stdlib.h>
#include <string.h>

#include "http/http_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inside(const char *p, size_t len, const char *base, size_t size)
{
    if (len == 0)
        return;
    kw_assert(p >= base && p + len <= base + size);
}

static void fuzz_chunks(const char *in, size_t len)
{
    kw__chunked_t c;
    memset(&c, 0, sizeof(c));
    size_t off = 0, total = 0;
    while (off < len) {
        size_t used = 0;
        kw_str_t d;
        int rc = kw__http_chunk_step(&c, in + off, len - off, &used, &d);
        kw_assert(used <= len - off);
        if (d.len) {
            check_inside(d.ptr, d.len, in + off, used);
            total += d.len;
        }
        off += used;
        if (rc != KW__CHUNK_MORE)
            break;
        if (used == 0 && d.len == 0)
            break; /* no progress is only possible at the end of the input */
    }
    kw_assert(total <= len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    size_t scan = 0;
    size_t hlen = kw__http_head_end(copy, size, &scan);
    kw_assert(hlen <= size && scan <= size);
    if (hlen == 0) {
        /* Not a complete head: the bytes are still worth a run through the decoder. */
        fuzz_chunks(copy, size);
        free(copy);
        return 0;
    }
    kw__http_head_t *h = malloc(sizeof(*h));
    if (!h) {
        free(copy);
        return 0;
    }
    const char *msg = NULL;
    int st = kw__http_parse_head(copy, hlen, h, &msg);
    if (st != 0) {
        kw_assert(st == 400 || st == 417 || st == 431 || st == 501 || st == 505);
        kw_assert(msg != NULL && msg[0] != '\0');
    } else {
        check_inside(h->method.ptr, h->method.len, copy, hlen);
        check_inside(h->target.ptr, h->target.len, copy, hlen);
        kw_assert(h->method.len > 0 && h->target.len > 0);
        kw_assert(h->minor == 0 || h->minor == 1);
        kw_assert(!(h->chunked && h->has_length));
        kw_assert(h->n_hdrs <= KW_MAX_HEADERS);
        for (size_t i = 0; i < h->n_hdrs; i++) {
            size_t nl = strlen(h->hdrs[i].name), vl = strlen(h->hdrs[i].value);
            check_inside(h->hdrs[i].name, nl + 1, copy, hlen);
            check_inside(h->hdrs[i].value, vl + 1, copy, hlen);
            kw_assert(nl > 0);
            kw_assert(!strchr(h->hdrs[i].value, '\r') && !strchr(h->hdrs[i].value, '\n'));
        }
        if (h->minor == 1)
            kw_assert(kw__http_head_get(h, "host") != NULL);
        if (h->chunked)
            fuzz_chunks(copy + hlen, size - hlen);
    }
    free(h);
    free(copy);
    return 0;
}
