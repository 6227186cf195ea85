/*
 * tests/unit/kw_test.h - the in-tree unit test harness.
 *
 * KW_TEST(name) { ... } registers a test; the runner (KW_TEST_MAIN, in one file per
 * module executable) runs all of them, or those selected on the command line, and prints
 * "N passed, N failed, N skipped". Assertions print both sides and fail the current test.
 *
 * Selection: each argument is a name or an fnmatch(3) pattern ("*_corpus_*"); one that
 * starts with '!' excludes what it matches. Without a positive argument every test not
 * excluded runs. A selection that matches no test is an error (exit 1), so a renamed test
 * cannot silently drop out of a ctest entry.
 *
 * KW_SKIP("reason", ...) ends the current test as skipped, for a test whose input is
 * optional and absent (the SpiceDB corpus, KW_CONFORMANCE_DIR). Exit status: 1 when any
 * test failed, KW_TEST_SKIP_CODE (77, ctest's SKIP_RETURN_CODE) when every selected test
 * skipped, else 0.
 */
#ifndef KW_TEST_H
#define KW_TEST_H

#include <fnmatch.h>
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

#define KW_TEST(name)                                                                              \
    static void kw_test_##name(int *kw_failed_);                                                   \
    __attribute__((constructor)) static void kw_test_reg_##name(void)                              \
    {                                                                                              \
        kw_test_register(#name, kw_test_##name);                                                   \
    }                                                                                              \
    static void kw_test_##name(int *kw_failed_)

#define KW_FAIL_(...)                                                                              \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        *kw_failed_ = 1;                                                                           \
        return;                                                                                    \
    } while (0)

/* Ends the current test as skipped (see the header comment); the reason is printed. */
#define KW_SKIP(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "  skipped: ");                                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        *kw_failed_ = -1;                                                                          \
        return;                                                                                    \
    } while (0)

#define KW_TEST_SKIP_CODE 77

#define KW_ASSERT(c)                                                                               \
    do {                                                                                           \
        if (!(c))                                                                                  \
            KW_FAIL_("assertion failed: %s", #c);                                                  \
    } while (0)
#define KW_ASSERT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long kw_a_ = (long long)(a), kw_b_ = (long long)(b);                                  \
        if (kw_a_ != kw_b_)                                                                        \
            KW_FAIL_("%s == %s: %lld != %lld", #a, #b, kw_a_, kw_b_);                              \
    } while (0)
#define KW_ASSERT_STR_EQ(a, b)                                                                     \
    do {                                                                                           \
        const char *kw_a_ = (a), *kw_b_ = (b);                                                     \
        if (!kw_a_ || !kw_b_ || strcmp(kw_a_, kw_b_) != 0)                                         \
            KW_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, kw_a_ ? kw_a_ : "(null)",               \
                     kw_b_ ? kw_b_ : "(null)");                                                    \
    } while (0)

/* Put KW_TEST_MAIN in exactly one .c file of each test executable. */
#define KW_TEST_MAIN                                                                               \
    static kw_test_case_t kw_tests_[1024];                                                         \
    static int kw_n_tests_;                                                                        \
    void kw_test_register(const char *name, kw_test_fn fn)                                         \
    {                                                                                              \
        if (kw_n_tests_ < 1024)                                                                    \
            kw_tests_[kw_n_tests_++] = (kw_test_case_t){name, fn};                                 \
    }                                                                                              \
    static int kw_test_selected_(const char *name, int argc, char **argv)                          \
    {                                                                                              \
        int any_positive = 0, want = 0;                                                            \
        for (int j = 1; j < argc; j++) {                                                           \
            if (argv[j][0] == '!') {                                                               \
                if (fnmatch(argv[j] + 1, name, 0) == 0)                                            \
                    return 0;                                                                      \
                continue;                                                                          \
            }                                                                                      \
            any_positive = 1;                                                                      \
            if (fnmatch(argv[j], name, 0) == 0)                                                    \
                want = 1;                                                                          \
        }                                                                                          \
        return want || !any_positive;                                                              \
    }                                                                                              \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        int passed = 0, failed = 0, skipped = 0;                                                   \
        for (int i = 0; i < kw_n_tests_; i++) {                                                    \
            if (!kw_test_selected_(kw_tests_[i].name, argc, argv))                                 \
                continue;                                                                          \
            int f = 0;                                                                             \
            kw_tests_[i].fn(&f);                                                                   \
            fprintf(stderr, "%s %s\n",                                                             \
                    f > 0   ? "FAIL"                                                               \
                    : f < 0 ? "skip"                                                               \
                            : "ok  ",                                                              \
                    kw_tests_[i].name);                                                            \
            if (f > 0)                                                                             \
                failed++;                                                                          \
            else if (f < 0)                                                                        \
                skipped++;                                                                         \
            else                                                                                   \
                passed++;                                                                          \
        }                                                                                          \
        printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);                     \
        if (passed + failed + skipped == 0) {                                                      \
            fprintf(stderr, "no test matches the selection\n");                                    \
            return 1;                                                                              \
        }                                                                                          \
        if (failed)                                                                                \
            return 1;                                                                              \
        return passed == 0 ? KW_TEST_SKIP_CODE : 0;                                                \
    }

#endif
