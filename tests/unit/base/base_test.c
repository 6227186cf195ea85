/* tests/unit/base/base_test.c - slices, arena, buffers, hashing, fault injection. */
#include "base/base.h"
#include "kw_test.h"



KW_TEST(str_eq)
{
    KW_ASSERT(kw_str_eq(KW_STR("abc"), kw_str_c("abc")));
    KW_ASSERT(!kw_str_eq(KW_STR("abc"), KW_STR("abd")));
    KW_ASSERT(kw_str_eq(KW_STR(""), kw_str_c(NULL)));
}

KW_TEST(arena_alloc_and_reset)
{
    kw_arena_t *a = kw_arena_new(64);
    KW_ASSERT(a != NULL);
    char *big = kw_arena_alloc(a, 1000); /* larger than a block */
    KW_ASSERT(big != NULL);
    memset(big, 'x', 1000);
    for (int i = 0; i < 100; i++) {
        char *s = kw_arena_sprintf(a, "item-%d", i);
        KW_ASSERT(s != NULL);
        KW_ASSERT(((uintptr_t)s & 15) == 0);
    }
    kw_arena_reset(a);
    KW_ASSERT_STR_EQ(kw_arena_strndup(a, "hello", 5), "hello");
    kw_arena_free(a);
}

KW_TEST(buf_printf)
{
    kw_buf_t b;
    kw_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        kw_buf_printf(&b, "%d,", i);
    KW_ASSERT(!b.failed);
    KW_ASSERT(strncmp(b.ptr, "0,1,2,", 6) == 0);
    KW_ASSERT_EQ(b.len, strlen(b.ptr));
    kw_buf_free(&b);
}

KW_TEST(hash_differs)
{
    KW_ASSERT(kw_hash("a", 1, 0) != kw_hash("b", 1, 0));
    KW_ASSERT(kw_hash("abcdefghij", 10, 0) == kw_hash("abcdefghij", 10, 0));
    KW_ASSERT(kw_hash("abcdefghij", 10, 0) != kw_hash("abcdefghij", 10, 1));
}

KW_TEST(fault_injection_fails_nth_allocation)
{
    kw_fault_arm(2);
    void *p1 = kw_malloc(8);
    void *p2 = kw_malloc(8);
    void *p3 = kw_malloc(8);
    kw_fault_arm(0);
    KW_ASSERT(p1 != NULL);
    KW_ASSERT(p2 == NULL);
    KW_ASSERT(p3 != NULL);
    KW_ASSERT(kw_fault_fired());
    kw_free(p1);
    kw_free(p3);
}

KW_TEST(errors_map)
{
    KW_ASSERT_EQ(kw_err_http_status(KW_ENOTFOUND), 404);
    KW_ASSERT_STR_EQ(kw_err_name(KW_EDEPTH), "KW_EDEPTH");
    KW_ASSERT_STR_EQ(kw_strerror(KW_ENOMEM), "out of memory");
}
