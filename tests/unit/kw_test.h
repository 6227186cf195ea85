/*
 * tests/unit/kw_test.h - the in-tree unit test harness.
 *
 * KW_TEST(name) { ... } registers a test; the runner (KW_TEST_MAIN, in one file per
 * module executable) runs all of them, or those named on the command line, and prints
 * "N passed, N failed". Assertions print both sides and fail the current test.
 */
#ifndef KW_TEST_H
#define KW_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*kw_test_fn)(int *failed);
typedef struct kw_test_case {
    const char *name;
    kw_test_fn fn;
} kw_test_case_t;

void kw_test_register(const char *name, kw_test_fn fn);

#define KW_TEST(name)                                                                          \
    static void kw_test_##name(int *kw_failed_);                                               \
    __attribute__((constructor)) static void kw_test_reg_##name(void)                          \
    {                                                                                          \
        kw_test_register(#name, kw_test_##name);                                               \
    }                                                                                          \
    static void kw_test_##name(int *kw_failed_)

#define KW_FAIL_(...)                                                                          \
    do {                                                                                       \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                      \
        fprintf(stderr, __VA_ARGS__);                                                          \
        fprintf(stderr, "\n");                                                                 \
        *kw_failed_ = 1;                                                                       \
        return;                                                                                \
    } while (0)

#define KW_ASSERT(c)                                                                           \
    do {                                                                                       \
        if (!(c))                                                                              \
            KW_FAIL_("assertion failed: %s", #c);                                              \
    } while (0)
#define KW_ASSERT_EQ(a, b)                                                                     \
    do {                                                                                       \
        long long kw_a_ = (long long)(a), kw_b_ = (long long)(b);                              \
        if (kw_a_ != kw_b_)                                                                    \
            KW_FAIL_("%s == %s: %lld != %lld", #a, #b, kw_a_, kw_b_);                          \
    } while (0)
#define KW_ASSERT_STR_EQ(a, b)                                                                 \
    do {                                                                                       \
        const char *kw_a_ = (a), *kw_b_ = (b);                                                 \
        if (!kw_a_ || !kw_b_ || strcmp(kw_a_, kw_b_) != 0)                                     \
            KW_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, kw_a_ ? kw_a_ : "(null)",           \
                     kw_b_ ? kw_b_ : "(null)");                                                \
    } while (0)

/* Put KW_TEST_MAIN in exactly one .c file of each test executable. */
#define KW_TEST_MAIN                                                                           \
    static kw_test_case_t kw_tests_[1024];                                                     \
    static int kw_n_tests_;                                                                    \
    void kw_test_register(const char *name, kw_test_fn fn)                                     \
    {                                                                                          \
        if (kw_n_tests_ < 1024)                                                                \
            kw_tests_[kw_n_tests_++] = (kw_test_case_t){name, fn};                             \
    }                                                                                          \
    int main(int argc, char **argv)                                                            \
    {                                                                                          \
        int passed = 0, failed = 0;                                                            \
        for (int i = 0; i < kw_n_tests_; i++) {                                                \
            int want = argc < 2;                                                               \
            for (int j = 1; j < argc; j++)                                                     \
                if (strcmp(argv[j], kw_tests_[i].name) == 0)                                   \
                    want = 1;                                                                  \
            if (!want)                                                                         \
                continue;                                                                      \
            int f = 0;                                                                         \
            kw_tests_[i].fn(&f);                                                               \
            fprintf(stderr, "%s %s\n", f ? "FAIL" : "ok  ", kw_tests_[i].name);                \
            if (f)                                                                             \
                failed++;                                                                      \
            else                                                                               \
                passed++;                                                                      \
        }                                                                                      \
        printf("%d passed, %d failed\n", passed, failed);                                      \
        return failed ? 1 : 0;                                                                 \
    }

#endif
