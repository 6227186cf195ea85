/*
 * tests/fuzz/fuzz_v1cursor.c - libFuzzer target for the /v1 cursors' decoder
 * (kw__v1_cursor_open, src/api/v1svc.c), the one /v1 input that is opaque binary a client
 * sends back: every ReadRelationships, LookupResources, LookupSubjects and
 * ExportBulkRelationships request may carry one.
 *
 * The first byte picks a mode:
 *   mode 0 (byte % 3 == 0): the rest is a cursor's text, as a client could send it, opened
 *          for the RPC (byte 1) and the number of position fields (byte 2) of a real stream;
 *   mode 1: the rest is split at 0xFF bytes into up to KW__V1_POS_MAX position fields (the
 *          first 8 bytes before them give the revision); they are minted into a cursor,
 *          which must open to exactly them, and a copy changed at the position and to the
 *          character bytes 1 and 2 name must never open;
 *   mode 2: as mode 1, opened for another RPC or request shape: FAILED_PRECONDITION.
 * Properties: no crash/leak/UB (sanitizers); opening answers KW_OK or KW_EINVAL only, an
 * error always INVALID_ARGUMENT or FAILED_PRECONDITION with ERROR_REASON_INVALID_CURSOR, a
 * KW_OK position has exactly the fields asked for, each inside the decoded bytes.
 * The seeds (corpus/v1cursor/) are valid cursors minted with this harness's keys.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/v1svc_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Process singletons for this fuzzer only: built once, read-only afterwards. */
static kw_api_t *g_api;
static uint8_t g_shape[KW__V1_SHAPE_LEN];
static uint8_t g_other[KW__V1_SHAPE_LEN];

static const char g_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void setup(void)
{
    kw_keyring_t *ring = NULL;
    g_api = kw_calloc(1, sizeof(*g_api));
    if (!g_api || kw_keyring_new(KW_STR("fuzz-token-secret-0123456789abcdef"),
                                 KW_STR("fuzz-master-key-0123456789abcdef!!"), &ring) != KW_OK)
        abort();
    g_api->keyring = ring;
    kw__v1_shape_t sh;
    kw__v1_shape_init(&sh, KW__V1_RPC_READ);
    kw__v1_shape_str(&sh, KW_STR("document"));
    if (kw__v1_shape_done(g_api, &sh, g_shape) != KW_OK)
        abort();
    kw__v1_shape_init(&sh, KW__V1_RPC_READ);
    kw__v1_shape_str(&sh, KW_STR("folder"));
    if (kw__v1_shape_done(g_api, &sh, g_other) != KW_OK)
        abort();
}

/* Opens and checks the answer's invariants; returns the rc. */
static int open_checked(kw_str_t text, int rpc, const uint8_t *shape, size_t n, kw__v1_pos_t *pos)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    int rc = kw__v1_cursor_open(g_api, text, rpc, shape, n, pos, &st);
    if (rc == KW_OK) {
        if (pos->n != n || st.code != 0)
            abort();
        for (size_t i = 0; i < pos->n; i++)
            if ((const uint8_t *)pos->f[i].ptr < pos->raw ||
                (const uint8_t *)pos->f[i].ptr + pos->f[i].len > pos->raw + sizeof(pos->raw))
                abort();
        return rc;
    }
    if (rc != KW_EINVAL ||
        (st.code != KW_GRPC_INVALID_ARGUMENT && st.code != KW_GRPC_FAILED_PRECONDITION) ||
        !st.reason || strcmp(st.reason, "ERROR_REASON_INVALID_CURSOR") != 0 || !st.msg[0])
        abort();
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_api)
        setup();
    if (size < 3)
        return 0;
    static kw__v1_pos_t pos; /* 4 KiB: off the stack */
    int mode = data[0] % 3;
    if (mode == 0) {
        int rpc = 1 + data[1] % 3;
        size_t n = data[2] % (KW__V1_POS_MAX + 1);
        (void)open_checked((kw_str_t){(const char *)data + 3, size - 3}, rpc, g_shape, n, &pos);
        return 0;
    }
    /* Mint the fields the rest of the input gives. */
    size_t off = 3;
    kw_revision_t rev = 0;
    for (int i = 0; i < 8 && off < size; i++)
        rev = (rev << 8) | data[off++];
    kw_str_t f[KW__V1_POS_MAX];
    size_t n = 0, start = off;
    for (size_t i = off; i <= size && n < KW__V1_POS_MAX; i++)
        if (i == size || data[i] == 0xFF) {
            f[n++] = (kw_str_t){(const char *)data + start, i - start};
            start = i + 1;
        }
    kw_arena_t *a = kw_arena_new(0);
    if (!a)
        abort();
    char *cur = kw__v1_cursor_make(g_api, a, KW__V1_RPC_LOOKUP_RESOURCES, g_shape, rev, f, n);
    if (!cur) { /* only a position too long for a cursor */
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += 2 + f[i].len;
        if (total + 26 + KW__V1_MAC_LEN <= KW__V1_CURSOR_RAW_MAX)
            abort();
        kw_arena_free(a);
        return 0;
    }
    kw_str_t text = kw_str_c(cur);
    if (mode == 2) {
        if (open_checked(text, KW__V1_RPC_READ, g_shape, n, &pos) != KW_EINVAL ||
            open_checked(text, KW__V1_RPC_LOOKUP_RESOURCES, g_other, n, &pos) != KW_EINVAL)
            abort();
        kw_arena_free(a);
        return 0;
    }
    if (open_checked(text, KW__V1_RPC_LOOKUP_RESOURCES, g_shape, n, &pos) != KW_OK ||
        pos.rev != rev)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!kw_str_eq(pos.f[i], f[i]))
            abort();
    /* Any single changed character: never opens. */
    size_t at = data[1] % text.len;
    char to = g_b64[data[2] % 64];
    if (cur[at] != to) {
        cur[at] = to;
        if (open_checked(text, KW__V1_RPC_LOOKUP_RESOURCES, g_shape, n, &pos) == KW_OK)
            abort();
    }
    kw_arena_free(a);
    return 0;
}
