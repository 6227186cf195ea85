/*
 * cel/regex.c - `matches` on PCRE2, held to RE2's language as cel-go (and so SpiceDB)
 * has it.
 *
 * RE2 guarantees linear time by leaving out what needs backtracking. PCRE2 has those
 * constructs, so a pattern is scanned before it is compiled and refused when it uses
 * one: backreferences (\1, \g, \k, (?P=...)), lookaround, atomic groups, recursion and
 * subroutine calls, conditionals, callouts, backtracking verbs and option settings such
 * as (*LIMIT_MATCH=...), possessive quantifiers, \C. RE2's group forms (?:...), (?P<n>...),
 * (?<n>...) and flag groups (?imsU-imsU) / (?flags:...) pass. After compiling, PCRE2's own
 * count of backreferences must be zero. Matching runs with match, depth and heap limits:
 * a pattern and subject that still exceed them stop with KW_EBUDGET, never run long.
 * Semantics: an unanchored search (CEL's `matches` is RE2's PartialMatch); `$` matches
 * only at the very end, letter escapes RE2 lacks (\h, \R, \X, \e, \c, \Z ...) and
 * counted repetitions past 1000 are refused, as RE2 refuses them.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "cel_int.h"

#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#define MATCH_LIMIT 100000u
#define DEPTH_LIMIT 1000u
#define HEAP_LIMIT_KIB 4096u

static int refuse(char *err, size_t cap, const char *what)
{
    snprintf(err, cap, "%s is not supported (RE2 syntax)", what);
    return KW_EINVAL;
}

/* Scans the pattern for constructs outside RE2. */
static int scan(kw_str_t pat, char *err, size_t cap)
{
    const char *p = pat.ptr, *end = pat.ptr + pat.len;
    bool in_class = false;
    while (p < end) {
        char c = *p;
        if (c == '\\') {
            if (p + 1 >= end)
                break; /* PCRE2 reports the trailing backslash */
            char e = p[1];
            if (e == 'Q') { /* literal text up to \E */
                const char *q = p + 2;
                while (q + 1 < end && !(q[0] == '\\' && q[1] == 'E'))
                    q++;
                p = q + 1 < end ? q + 2 : end;
                continue;
            }
            if (!in_class) {
                if (e >= '1' && e <= '9')
                    return refuse(err, cap, "a backreference");
                if (e == 'g' || e == 'k')
                    return refuse(err, cap, "a backreference");
                if (e == 'K')
                    return refuse(err, cap, "\\K");
            }
            if (e == 'C')
                return refuse(err, cap, "\\C");
            /* RE2 knows these letter escapes (inside a class only the class ones); any
             * other letter is an invalid escape there, e.g. \h \R \X \e \c \Z \K */
            bool letter = (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z');
            if (letter && !strchr(in_class ? "afnrtvdDsSwWpPx" : "afnrtvdDsSwWpPxbBAzQE", e)) {
                snprintf(err, cap, "invalid escape sequence: \\%c", e);
                return KW_EINVAL;
            }
            p += 2;
            continue;
        }
        if (in_class) {
            if (c == ']')
                in_class = false;
            p++;
            continue;
        }
        if (c == '[') {
            in_class = true;
            p++;
            if (p < end && *p == '^')
                p++;
            if (p < end && *p == ']')
                p++; /* a leading ] is literal */
            continue;
        }
        if (c == '(' && p + 1 < end && p[1] == '*')
            return refuse(err, cap, "a (*VERB)");
        if (c == '(' && p + 1 < end && p[1] == '?') {
            const char *q = p + 2;
            if (q < end && *q == ':') {
                p = q + 1;
                continue;
            }
            if (q + 1 < end && *q == 'P' && q[1] == '<') {
                p = q + 2;
                continue;
            }
            if (q + 1 < end && *q == '<' && q[1] != '=' && q[1] != '!') {
                p = q + 1;
                continue;
            }
            /* flags: [imsU-]+ then ')' or ':' */
            const char *f = q;
            while (f < end && strchr("imsU-", *f) && *f)
                f++;
            if (f > q && f < end && (*f == ')' || *f == ':')) {
                p = f + 1;
                continue;
            }
            return refuse(err, cap, "this (? group (lookaround, atomic, recursion, conditional)");
        }
        if ((c == '*' || c == '+' || c == '?' || c == '}') && p + 1 < end && p[1] == '+')
            return refuse(err, cap, "a possessive quantifier");
        if (c == '{') { /* RE2 caps a counted repetition at 1000 */
            const char *q = p + 1;
            long lo = 0, hi = -1;
            bool any = false;
            while (q < end && *q >= '0' && *q <= '9' && lo <= 100000) {
                lo = lo * 10 + (*q++ - '0');
                any = true;
            }
            if (any && q < end && *q == ',') {
                q++;
                if (q < end && *q >= '0' && *q <= '9') {
                    hi = 0;
                    while (q < end && *q >= '0' && *q <= '9' && hi <= 100000)
                        hi = hi * 10 + (*q++ - '0');
                }
            }
            if (any && q < end && *q == '}' && (lo > 1000 || hi > 1000)) {
                snprintf(err, cap, "invalid repeat count");
                return KW_EINVAL;
            }
        }
        p++;
    }
    return KW_OK;
}

int kw__cel_regex_compile(kw_str_t pattern, void **out, char *err, size_t cap)
{
    int rc = scan(pattern, err, cap);
    if (rc != KW_OK)
        return rc;
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc)
        return KW_ENOMEM;
    pcre2_set_max_pattern_length(cc, 65536);
    pcre2_set_parens_nest_limit(cc, 250);
    int errcode = 0;
    PCRE2_SIZE erroff = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(pattern.ptr ? pattern.ptr : ""), pattern.len,
                                   PCRE2_UTF | PCRE2_NEVER_BACKSLASH_C | PCRE2_DOLLAR_ENDONLY,
                                   &errcode, &erroff, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        if (errcode == PCRE2_ERROR_HEAPLIMIT || errcode == PCRE2_ERROR_NOMEMORY)
            return KW_ENOMEM;
        PCRE2_UCHAR msg[120];
        if (pcre2_get_error_message(errcode, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", errcode);
        snprintf(err, cap, "%s at offset %zu", (const char *)msg, (size_t)erroff);
        return KW_EINVAL;
    }
    uint32_t backrefs = 0;
    if (pcre2_pattern_info(re, PCRE2_INFO_BACKREFMAX, &backrefs) != 0 || backrefs != 0) {
        pcre2_code_free(re);
        return refuse(err, cap, "a backreference");
    }
    *out = re;
    return KW_OK;
}

void kw__cel_regex_free(void *re)
{
    pcre2_code_free(re);
}

int kw__cel_regex_search(void *re, kw_str_t subject)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        return KW_ENOMEM;
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (!mc) {
        pcre2_match_data_free(md);
        return KW_ENOMEM;
    }
    pcre2_set_match_limit(mc, MATCH_LIMIT);
    pcre2_set_depth_limit(mc, DEPTH_LIMIT);
    pcre2_set_heap_limit(mc, HEAP_LIMIT_KIB);
    int r =
        pcre2_match(re, (PCRE2_SPTR)(subject.ptr ? subject.ptr : ""), subject.len, 0, 0, md, mc);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    if (r >= 0)
        return 1;
    if (r == PCRE2_ERROR_NOMATCH)
        return 0;
    if (r == PCRE2_ERROR_NOMEMORY)
        return KW_ENOMEM;
    return KW_EBUDGET; /* match/depth/heap limit (or a subject PCRE2 refuses) */
}
