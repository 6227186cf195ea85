/*
 * tests/fuzz/fuzz_cursor.c - libFuzzer target for the list cursors (kw_cursor_seal/_open).
 *
 * The first byte picks a mode:
 *   even: the rest is opened as a cursor's text, as a client could send it;
 *   odd:  the rest (up to KW_CURSOR_MAX_PLAIN bytes) is sealed, then its text is changed at
 *         the position and to the character the second byte names (or left as is when that
 *         byte is 0), and opened again.
 * Properties checked: no crash/leak (sanitizers); opening answers only KW_OK or KW_EAUTH;
 * a text sealed here and left alone opens to exactly its plaintext; a text changed in any
 * character, or opened with other associated data, never opens (KW_EAUTH).
 */
#include <stdlib.h>
#include <string.h>

#include "keys/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Process singleton for this fuzzer only: built once, read-only afterwards. */
static kw_keyring_t *g_ring;

static const char g_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ring && kw_keyring_new(KW_STR("fuzz-token-secret-0123456789abcdef"),
                                  KW_STR("fuzz-master-key-0123456789abcdef!!"), &g_ring) != KW_OK)
        abort();
    if (size == 0)
        return 0;
    uint8_t out[KW_CURSOR_MAX_PLAIN];
    size_t n = 0;
    if ((data[0] & 1) == 0) {
        int rc = kw_cursor_open(g_ring, (kw_str_t){(const char *)data + 1, size - 1},
                                KW_STR("/agents\nuser:f"), out, sizeof(out), &n);
        if (rc != KW_OK && rc != KW_EAUTH)
            abort();
        return 0;
    }
    if (size < 2)
        return 0;
    size_t plen = size - 2 > KW_CURSOR_MAX_PLAIN ? KW_CURSOR_MAX_PLAIN : size - 2;
    kw_str_t plain = {(const char *)data + 2, plen};
    char text[KW_CURSOR_MAX_TEXT + 1];
    size_t tlen = 0;
    if (kw_cursor_seal(g_ring, plain, KW_STR("scope"), text, sizeof(text), &tlen) != KW_OK)
        abort();
    if (kw_cursor_open(g_ring, (kw_str_t){text, tlen}, KW_STR("scope!"), out, sizeof(out), &n) !=
        KW_EAUTH)
        abort();
    uint8_t pick = data[1];
    bool changed = false;
    if (pick) {
        size_t at = pick % tlen;
        char c = g_b64[(pick / 7) % 64];
        changed = text[at] != c;
        text[at] = c;
    }
    int rc = kw_cursor_open(g_ring, (kw_str_t){text, tlen}, KW_STR("scope"), out, sizeof(out), &n);
    if (changed) {
        /* The last character of unpadded base64 may carry unused low bits: a change there
         * can decode to the same bytes, which then open like the original. */
        if (rc == KW_OK && (n != plen || memcmp(out, plain.ptr, plen) != 0))
            abort();
        if (rc != KW_OK && rc != KW_EAUTH)
            abort();
    } else if (rc != KW_OK || n != plen || memcmp(out, plain.ptr, plen) != 0) {
        abort();
    }
    return 0;
}
