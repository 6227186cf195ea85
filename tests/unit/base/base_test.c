/* tests/unit/base/base_test.c - slices, arena, buffers, hashing, fault injection, UTF-8,
 * files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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

KW_TEST(utf8_decode_and_valid)
{
    static const struct {
        const char *s;
        size_t len;
        size_t want; /* kw_utf8_decode's length */
        uint32_t cp; /* its code point, when want > 0 */
    } cases[] = {
        {"a", 1, 1, 'a'},
        {"\0", 1, 1, 0},
        {"\xc3\xa9", 2, 2, 0xE9},
        {"\xe2\x82\xac", 3, 3, 0x20AC},
        {"\xf0\x9f\x98\x80", 4, 4, 0x1F600},
        {"\xf4\x8f\xbf\xbf", 4, 4, 0x10FFFF},
        {"\xef\xbf\xbf", 3, 3, 0xFFFF},
        {"\x80", 1, 0, 0},             /* stray continuation byte */
        {"\xc0\x80", 2, 0, 0},         /* overlong NUL */
        {"\xc1\xbf", 2, 0, 0},         /* overlong */
        {"\xe0\x9f\xbf", 3, 0, 0},     /* overlong 3-byte */
        {"\xf0\x8f\xbf\xbf", 4, 0, 0}, /* overlong 4-byte */
        {"\xed\xa0\x80", 3, 0, 0},     /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3, 0, 0},     /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 4, 0, 0}, /* U+110000 */
        {"\xf5\x80\x80\x80", 4, 0, 0},
        {"\xff", 1, 0, 0},
        {"\xc3", 1, 0, 0}, /* truncated */
        {"\xe2\x82", 2, 0, 0},
        {"\xf0\x9f\x98", 3, 0, 0},
        {"\xe2\x28\xa1", 3, 0, 0}, /* bad continuation */
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(cases); i++) {
        uint32_t cp = 0xFFFFFFFF;
        size_t n = kw_utf8_decode(cases[i].s, cases[i].len, &cp);
        if (n != cases[i].want || (n && cp != cases[i].cp))
            KW_FAIL_("case %zu: length %zu code point %x", i, n, (unsigned)cp);
        bool valid = kw_utf8_valid((kw_str_t){cases[i].s, cases[i].len});
        if (valid != (cases[i].want == cases[i].len))
            KW_FAIL_("case %zu: kw_utf8_valid says %d", i, valid);
    }
    KW_ASSERT_EQ(kw_utf8_decode("a", 0, NULL), 0);
    KW_ASSERT(kw_utf8_valid(KW_STR("")));
    KW_ASSERT(kw_utf8_valid(KW_STR("plain ascii, \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80 end")));
    KW_ASSERT(!kw_utf8_valid(KW_STR("almost \xc3\xa9t\xc3")));
}

KW_TEST(arena_str_copy)
{
    kw_arena_t *a = kw_arena_new(64);
    KW_ASSERT(a != NULL);
    kw_str_t out = KW_STR("untouched");
    char src[] = "abc\0def";
    KW_ASSERT_EQ(kw_arena_str_copy(a, (kw_str_t){src, 7}, &out), KW_OK);
    KW_ASSERT_EQ(out.len, 7);
    KW_ASSERT(out.ptr != src && memcmp(out.ptr, src, 8) == 0); /* NUL-terminated copy */
    KW_ASSERT_EQ(kw_arena_str_copy(a, KW_STR_NULL, &out), KW_OK);
    KW_ASSERT_EQ(out.len, 0);
    KW_ASSERT_STR_EQ(out.ptr, "");
    kw_str_t keep = KW_STR("keep");
    kw_fault_arm(1);
    int rc = kw_arena_str_copy(a,
                               KW_STR("a string longer than the 64-byte block of the arena, "
                                      "so it needs an allocation"),
                               &keep);
    kw_fault_arm(0);
    kw_arena_free(a);
    KW_ASSERT_EQ(rc, KW_ENOMEM);
    KW_ASSERT_STR_EQ(keep.ptr, "keep");
}

KW_TEST(read_file)
{
    char path[] = "/tmp/kw_base_read_file_XXXXXX";
    int fd = mkstemp(path);
    KW_ASSERT(fd >= 0);
    static char data[40000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7);
    KW_ASSERT_EQ(write(fd, data, sizeof(data)), (ssize_t)sizeof(data));
    close(fd);
    char *text = NULL;
    size_t len = 0;
    int rc_ok = kw_read_file(path, 0, &text, &len);
    bool same =
        rc_ok == KW_OK && len == sizeof(data) && memcmp(text, data, len) == 0 && text[len] == '\0';
    kw_free(text);
    int rc_cap = kw_read_file(path, sizeof(data), &text, &len);
    kw_free(text);
    char *untouched = NULL;
    int rc_big = kw_read_file(path, sizeof(data) - 1, &untouched, &len);
    kw_fault_arm(1);
    int rc_oom = kw_read_file(path, 0, &untouched, &len);
    kw_fault_arm(0);
    FILE *f = fopen(path, "w"); /* truncate: an empty file is a NUL-terminated "" */
    KW_ASSERT(f != NULL);
    fclose(f);
    int rc_empty = kw_read_file(path, 0, &text, &len);
    unlink(path);
    int rc_absent = kw_read_file(path, 0, &untouched, &len);
    int err_absent = errno;
    KW_ASSERT_EQ(rc_ok, KW_OK);
    KW_ASSERT(same);
    KW_ASSERT_EQ(rc_cap, KW_OK);
    KW_ASSERT_EQ(rc_big, KW_ETOOLARGE);
    KW_ASSERT_EQ(rc_oom, KW_ENOMEM);
    KW_ASSERT_EQ(rc_empty, KW_OK);
    KW_ASSERT_EQ(len, 0);
    KW_ASSERT_STR_EQ(text, "");
    kw_free(text);
    KW_ASSERT_EQ(rc_absent, KW_EIO);
    KW_ASSERT_EQ(err_absent, ENOENT);
    KW_ASSERT(untouched == NULL);
}
