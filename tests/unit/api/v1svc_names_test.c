/*
 * tests/unit/api/v1svc_names_test.c - SpiceDB's name and id patterns as v1svc_names.c
 * matches them by hand, against the same patterns compiled by POSIX regcomp, on random
 * strings; and the fast path of a valid relationship (kw__v1_names_rel_ok) against the
 * general one (violations collected with their paths).
 */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/v1svc_int.h"
#include "kw_test.h"

/* The protos' patterns in POSIX ERE ('-' first in a bracket instead of "\-"). */
#define RE_TYPE "^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$"
#define RE_REL "^[a-z][a-z0-9_]{1,62}[a-z0-9]$"
#define RE_ID "^(([-a-zA-Z0-9/_|=+]{1,})|\\*)$"
#define RE_CAVEAT "^([a-zA-Z0-9_][-a-zA-Z0-9/_|]{0,127})$"

static uint64_t g_rs = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    g_rs ^= g_rs << 13;
    g_rs ^= g_rs >> 7;
    g_rs ^= g_rs << 17;
    return g_rs;
}

/* A random string: mostly name-like, sometimes with the characters that break a pattern. */
static void rand_str(char *out, size_t cap)
{
    static const char common[] = "abcdefghijklmnopqrstuvwxyz0123456789_/";
    static const char rare[] = "ABZ|-=+*. :#@\x01\xc3";
    if (rnd() % 4 != 0) { /* most: a valid name (also a valid id), 3 to 20 bytes */
        size_t len = 3 + rnd() % 18;
        for (size_t i = 0; i < len; i++)
            out[i] = (char)('a' + rnd() % 26);
        out[len] = '\0';
        return;
    }
    size_t len = rnd() % 8 == 0 ? rnd() % (cap - 1) : rnd() % 70;
    for (size_t i = 0; i < len; i++)
        out[i] = rnd() % 10 == 0 ? rare[rnd() % (sizeof(rare) - 1)]
                                 : common[rnd() % (sizeof(common) - 1)];
    out[len] = '\0';
}

static bool rx_match(const regex_t *re, const char *s)
{
    return regexec(re, s, 0, NULL, 0) == 0;
}

KW_TEST(v1_names_match_the_protos_patterns_on_random_strings)
{
    regex_t type, rel, id, cav;
    KW_ASSERT_EQ(regcomp(&type, RE_TYPE, REG_EXTENDED | REG_NOSUB), 0);
    KW_ASSERT_EQ(regcomp(&rel, RE_REL, REG_EXTENDED | REG_NOSUB), 0);
    KW_ASSERT_EQ(regcomp(&id, RE_ID, REG_EXTENDED | REG_NOSUB), 0);
    KW_ASSERT_EQ(regcomp(&cav, RE_CAVEAT, REG_EXTENDED | REG_NOSUB), 0);
    static char a[1100], b[1100], c[1100], d[1100], e[1100], f[1100];
    int valid = 0;
    for (int round = 0; round < 20000; round++) {
        rand_str(a, sizeof(a));
        rand_str(b, sizeof(b));
        rand_str(c, sizeof(c));
        rand_str(d, sizeof(d));
        rand_str(e, sizeof(e));
        rand_str(f, sizeof(f));
        /* one top-level name of each kind */
        kw__v1_names_t v;
        kw__v1_names_init(&v);
        kw__v1_names_str(&v, "t", kw_str_c(a), KW__V1_NAME_TYPE);
        bool want = strlen(a) <= 128 && rx_match(&type, a);
        KW_ASSERT_EQ(v.n == 0, want);
        kw__v1_names_init(&v);
        kw__v1_names_str(&v, "r", kw_str_c(a), KW__V1_NAME_REL_OPT);
        KW_ASSERT_EQ(v.n == 0, a[0] == '\0' || (strlen(a) <= 64 && rx_match(&rel, a)));
        /* a relationship: the general path's verdict, the fast path's, and the regexes' */
        kw_rel_t r;
        memset(&r, 0, sizeof(r));
        r.resource = (kw_object_t){kw_str_c(a), kw_str_c(b)};
        r.relation = kw_str_c(c);
        r.subject = (kw_subject_t){kw_str_c(d), kw_str_c(e), KW_STR_NULL};
        if (round % 3 == 0)
            r.subject.relation = kw_str_c(c);
        if (round % 4 == 0)
            r.caveat = kw_str_c(f);
        want = strlen(a) <= 128 && rx_match(&type, a) && strlen(b) <= 1024 && rx_match(&id, b) &&
               strlen(c) <= 64 && rx_match(&rel, c) && strlen(d) <= 128 && rx_match(&type, d) &&
               strlen(e) <= 1024 && rx_match(&id, e) && (r.caveat.len == 0 || rx_match(&cav, f));
        kw__v1_names_init(&v);
        kw__v1_names_rel(&v, "x.", &r);
        KW_ASSERT_EQ(v.n == 0, want);
        KW_ASSERT_EQ(kw__v1_names_rel_ok(&r), want);
        valid += want;
    }
    KW_ASSERT(valid > 1000 && valid < 19000); /* both verdicts well represented */
    regfree(&type);
    regfree(&rel);
    regfree(&id);
    regfree(&cav);
}

KW_TEST(v1_names_messages_list_every_violation_in_field_order)
{
    kw_v1_check_req_t c;
    memset(&c, 0, sizeof(c));
    c.resource = (kw_object_t){KW_STR("Doc"), KW_STR("d 1")};
    c.permission = KW_STR("view");
    c.subject = (kw_subject_t){KW_STR("user"), KW_STR("u1"), KW_STR("X")};
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw__v1_names_check(&c, &st), KW_EINVAL);
    KW_ASSERT_EQ(st.code, KW_GRPC_INVALID_ARGUMENT);
    KW_ASSERT_STR_EQ(st.msg, "validation errors:\n"
                             " - resource.object_type: does not match regex pattern "
                             "`^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$`\n"
                             " - resource.object_id: does not match regex pattern "
                             "`^(([a-zA-Z0-9/_|\\-=+]{1,})|\\*)$`\n"
                             " - subject.optional_relation: does not match regex pattern "
                             "`^([a-z][a-z0-9_]{1,62}[a-z0-9])?$`");
    /* 1,000 bad updates: the list ends with " - ..." and stays within the status. */
    static kw_update_t ups[1000];
    for (size_t i = 0; i < 1000; i++) {
        memset(&ups[i], 0, sizeof(ups[i]));
        ups[i].rel.resource = (kw_object_t){KW_STR("doc"), KW_STR("d1")};
        ups[i].rel.relation = KW_STR("V");
        ups[i].rel.subject = (kw_subject_t){KW_STR("user"), KW_STR("u1"), KW_STR_NULL};
    }
    kw_v1_write_req_t w = {ups, 1000, NULL, 0, false, NULL};
    kw_v1_status_clear(&st);
    KW_ASSERT_EQ(kw__v1_names_write(&w, &st), KW_EINVAL);
    KW_ASSERT(strncmp(st.msg, "validation errors:\n - updates[0].relationship.relation: ", 56) ==
              0);
    size_t n = strlen(st.msg);
    KW_ASSERT(n < sizeof(st.msg));
    KW_ASSERT_STR_EQ(st.msg + n - 7, "\n - ...");
}
