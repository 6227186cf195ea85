/* tests/unit/api/lastused_test.c - last uses coalesced in memory and flushed in batches
 * (api/lastused.c, issue 14) against a real SQLite store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api_int.h"
#include "kw_test.h"

#define AG "01900000-0000-7000-8000-00000000000a"
#define K1 "01900000-0000-7000-8000-0000000000b1"
#define K2 "01900000-0000-7000-8000-0000000000b2"

static kw_store_t *open_store(char path[64])
{
    snprintf(path, 64, "/tmp/kw_lastused_%d.db", (int)getpid());
    unlink(path);
    char url[80];
    snprintf(url, sizeof(url), "sqlite:%s", path);
    kw_store_t *s = NULL;
    if (kw_store_open(url, &s, NULL) != KW_OK)
        return NULL;
    kw_store_tx_t *tx = NULL;
    kw_agent_t ag = {.id = AG, .name = "a", .account_id = "acct", .created_at_us = 1};
    kw_apikey_t k1 = {
        .id = K1, .agent_id = AG, .name = "k1", .type = "internal", .created_at_us = 2};
    kw_apikey_t k2 = {
        .id = K2, .agent_id = AG, .name = "k2", .type = "internal", .created_at_us = 3};
    if (kw_store_tx_begin(s, &tx, NULL) != KW_OK || kw_store_tx_agent_insert(tx, &ag) != KW_OK ||
        kw_store_tx_key_insert(tx, &k1) != KW_OK || kw_store_tx_key_insert(tx, &k2) != KW_OK ||
        kw_store_tx_commit(tx, NULL, NULL) != KW_OK) {
        kw_store_close(s);
        return NULL;
    }
    return s;
}

static int64_t stored(kw_store_t *s, const char *id)
{
    kw_arena_t *a = kw_arena_new(0);
    kw_apikey_t k;
    int64_t v = -1;
    if (a && kw_store_key_get(s, kw_str_c(id), a, &k) == KW_OK)
        v = k.last_used_at_us;
    kw_arena_free(a);
    return v;
}

KW_TEST(lastused_coalesces_then_flushes_the_latest)
{
    char path[64];
    kw_store_t *s = open_store(path);
    KW_ASSERT(s != NULL);
    setenv("KEYWARD_LAST_USED_FLUSH_MS", "3600000", 1); /* only explicit flushes here */
    kw__lastused_t *lu = NULL;
    KW_ASSERT_EQ(kw__lastused_new(s, &lu), KW_OK);
    KW_ASSERT_EQ(kw__lastused_pending(lu, K1), 0);
    kw__lastused_record(lu, K1, 100);
    kw__lastused_record(lu, K1, 300);
    kw__lastused_record(lu, K1, 200); /* older: kept the later */
    kw__lastused_record(lu, K2, 50);
    kw__lastused_record(lu, "01900000-0000-7000-8000-0000000000ff", 70); /* no such key */
    KW_ASSERT_EQ(kw__lastused_pending(lu, K1), 300);
    KW_ASSERT_EQ(stored(s, K1), 0); /* nothing written per use */
    KW_ASSERT_EQ(kw__lastused_flush(lu), KW_OK);
    KW_ASSERT_EQ(kw__lastused_pending(lu, K1), 0);
    KW_ASSERT_EQ(stored(s, K1), 300);
    KW_ASSERT_EQ(stored(s, K2), 50);
    /* a later flush never moves a value back */
    kw__lastused_record(lu, K1, 10);
    KW_ASSERT_EQ(kw__lastused_flush(lu), KW_OK);
    KW_ASSERT_EQ(stored(s, K1), 300);
    /* many keys: past one stripe's growth and one flush batch */
    for (int i = 0; i < 3000; i++) {
        char id[40];
        snprintf(id, sizeof(id), "01900000-0000-7000-8000-%012d", i + 1000);
        kw__lastused_record(lu, id, i);
    }
    kw__lastused_record(lu, K2, 999);
    KW_ASSERT_EQ(kw__lastused_pending(lu, K2), 999);
    kw__lastused_free(lu); /* a clean stop flushes */
    KW_ASSERT_EQ(stored(s, K2), 999);
    unsetenv("KEYWARD_LAST_USED_FLUSH_MS");
    kw_store_close(s);
    unlink(path);
}
