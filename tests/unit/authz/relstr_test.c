/*
 * tests/unit/authz/relstr_test.c - kw_rel_parse / kw_rel_format.
 */
#include "authz/authz.h"
#include "kw_test.h"

/* Parses s, formats it back and returns the formatted copy (caller frees), or NULL. */
static char *roundtrip(const char *s, int *rc_out, kw_diag_t *d)
{
    kw_rel_t r;
    int rc = kw_rel_parse(kw_str_c(s), &r, d);
    *rc_out = rc;
    if (rc != KW_OK)
        return NULL;
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format(&r, &b);
    if (b.failed) {
        kw_buf_free(&b);
        return NULL;
    }
    return b.ptr;
}

KW_TEST(relstr_basic)
{
    kw_rel_t r;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:doc1#viewer@user:tom"), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.resource.type, "document"));
    KW_ASSERT(kw_str_eq_c(r.resource.id, "doc1"));
    KW_ASSERT(kw_str_eq_c(r.relation, "viewer"));
    KW_ASSERT(kw_str_eq_c(r.subject.type, "user"));
    KW_ASSERT(kw_str_eq_c(r.subject.id, "tom"));
    KW_ASSERT_EQ(r.subject.relation.len, 0);
}

KW_TEST(relstr_subject_set_and_ellipsis)
{
    kw_rel_t r;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@group:eng#member"), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.subject.type, "group"));
    KW_ASSERT(kw_str_eq_c(r.subject.id, "eng"));
    KW_ASSERT(kw_str_eq_c(r.subject.relation, "member"));
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@user:tom#..."), &r, &d), KW_OK);
    KW_ASSERT_EQ(r.subject.relation.len, 0);
    KW_ASSERT(kw_str_eq_c(r.subject.id, "tom"));
}

KW_TEST(relstr_prefix_and_wildcard)
{
    kw_rel_t r;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("test/resource:first#viewer@test/user:*"), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.resource.type, "test/resource"));
    KW_ASSERT(kw_str_eq_c(r.subject.type, "test/user"));
    KW_ASSERT(kw_str_eq_c(r.subject.id, "*"));
    /* several prefix segments, like the schema compiler accepts */
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("org/team/res:x#viewer@org/team/user:y"), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.resource.type, "org/team/res"));
}

KW_TEST(relstr_extended_ids)
{
    kw_rel_t r;
    kw_diag_t d;
    const char *s = "document:--=base64YWZzZGZh-ZHNmZHPwn5iK8J+YivC/fmIrwn5iK==#writer@user:"
                    "a|b_c/d-e=f+g#...";
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.resource.id, "--=base64YWZzZGZh-ZHNmZHPwn5iK8J+YivC/fmIrwn5iK=="));
    KW_ASSERT(kw_str_eq_c(r.subject.id, "a|b_c/d-e=f+g"));
}

/* SpiceDB's extendedids.yaml from the optional corpus (KW_CONFORMANCE_DIR). */
KW_TEST(relstr_corpus_extendedids_parse)
{
    const char *dir = getenv("KW_CONFORMANCE_DIR");
    if (!dir || !*dir)
        KW_SKIP("KW_CONFORMANCE_DIR is not set (the SpiceDB corpus is an optional input)");
    char path[1024];
    snprintf(path, sizeof(path), "%s/spicedb/extendedids.yaml", dir);
    FILE *f = fopen(path, "r");
    KW_ASSERT(f != NULL);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int parsed = 0, bad = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *s = line;
        while (*s == ' ' || *s == '-')
            s++;
        if (*s == '"')
            s++;
        size_t len = strlen(s);
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '"' || s[len - 1] == ' '))
            len--;
        if (len == 0 || strncmp(s, "document:", 9) != 0)
            continue;
        kw_rel_t r;
        kw_diag_t d;
        if (kw_rel_parse((kw_str_t){s, len}, &r, &d) == KW_OK)
            parsed++;
        else
            bad++;
    }
    free(line);
    fclose(f);
    KW_ASSERT_EQ(bad, 0);
    KW_ASSERT_EQ(parsed, 9); /* 3 relationships, 4 assertTrue, 2 assertFalse */
}

KW_TEST(relstr_long_id_limit)
{
    char s[1200];
    kw_rel_t r;
    kw_diag_t d;
    strcpy(s, "document:");
    memset(s + 9, 'a', 1024);
    strcpy(s + 9 + 1024, "#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
    KW_ASSERT_EQ(r.resource.id.len, 1024);
    strcpy(s, "document:");
    memset(s + 9, 'a', 1025);
    strcpy(s + 9 + 1025, "#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_EINVAL);
    KW_ASSERT_EQ(d.col, 10);
}

KW_TEST(relstr_caveat_and_expiration_unsupported)
{
    kw_rel_t r;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@user:tom[only_tuesday]"), &r, &d),
                 KW_EUNSUPPORTED);
    KW_ASSERT_STR_EQ(d.msg, "caveats are not supported yet");
    KW_ASSERT_EQ(d.col, 27);
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@user:tom[c:{\"a\":1}]"), &r, &d),
                 KW_EUNSUPPORTED);
    KW_ASSERT_STR_EQ(d.msg, "caveats are not supported yet");
    KW_ASSERT_EQ(
        kw_rel_parse(KW_STR("document:d#viewer@user:tom[expiration:2023-12-01T00:00:00Z]"), &r, &d),
        KW_EUNSUPPORTED);
    KW_ASSERT_STR_EQ(d.msg, "expiration is not supported yet");
}

/* Each malformed string must fail with KW_EINVAL at the given 1-based column. */
KW_TEST(relstr_errors_carry_column)
{
    static const struct {
        const char *s;
        uint32_t col;
    } cases[] = {
        {"", 1},
        {"document", 9},                        /* missing ':' */
        {"document:", 10},                      /* missing id */
        {"document:d", 11},                     /* missing '#' */
        {"document:d#", 12},                    /* missing relation */
        {"document:d#viewer", 18},              /* missing '@' */
        {"document:d#viewer@", 19},             /* missing subject type */
        {"document:d#viewer@user", 23},         /* missing ':' */
        {"document:d#viewer@user:", 24},        /* missing subject id */
        {"Document:d#viewer@user:tom", 1},      /* uppercase type */
        {"1doc:d#viewer@user:tom", 1},          /* digit first */
        {"doc_:d#viewer@user:tom", 4},          /* trailing underscore */
        {"doc/:d#viewer@user:tom", 5},          /* empty segment after '/' */
        {"doc:d d#viewer@user:tom", 6},         /* space in id */
        {"doc:*#viewer@user:tom", 5},           /* wildcard resource */
        {"doc:d#view/er@user:tom", 11},         /* '/' in relation */
        {"doc:d#viewer@user:tom#", 23},         /* empty subject relation */
        {"doc:d#viewer@user:tom#..", 23},       /* bad ellipsis */
        {"doc:d#viewer@user:*#member", 21},     /* wildcard with relation */
        {"doc:d#viewer@user:tom ", 22},         /* trailing junk */
        {"doc:d#viewer@user:*x", 20},           /* junk after wildcard */
        {"doc:d#viewer@user:t\xc3\xa9", 20},    /* non-ASCII */
        {"doc:d#viewer@user:tom#member#x", 29}, /* junk after relation */
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(cases); i++) {
        kw_rel_t r;
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc = kw_rel_parse(kw_str_c(cases[i].s), &r, &d);
        if (rc != KW_EINVAL || d.col != cases[i].col)
            KW_FAIL_("case \"%s\": rc %d col %u (%s), want col %u", cases[i].s, rc, d.col, d.msg,
                     cases[i].col);
        KW_ASSERT(d.msg[0] != '\0');
    }
}

KW_TEST(relstr_name_length_limit)
{
    char s[400];
    kw_rel_t r;
    kw_diag_t d;
    memset(s, 'a', KW_MAX_NAME_LEN + 1);
    strcpy(s + KW_MAX_NAME_LEN + 1, ":d#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_EINVAL);
    memset(s, 'a', KW_MAX_NAME_LEN);
    strcpy(s + KW_MAX_NAME_LEN, ":d#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
}

KW_TEST(relstr_format_roundtrip)
{
    static const char *ok[] = {
        "document:doc1#viewer@user:tom",
        "document:doc1#viewer@group:eng#member",
        "test/resource:first#viewer@test/user:*",
        "a/b:x_y|z#rel_1@c:+=-",
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(ok); i++) {
        int rc;
        kw_diag_t d;
        char *out = roundtrip(ok[i], &rc, &d);
        KW_ASSERT_EQ(rc, KW_OK);
        KW_ASSERT(out != NULL);
        int same = strcmp(out, ok[i]) == 0;
        if (!same)
            fprintf(stderr, "  got %s\n", out);
        free(out);
        KW_ASSERT(same);
    }
    /* "#..." is the canonical absence of a subject relation: formatting drops it */
    int rc;
    kw_diag_t d;
    char *out = roundtrip("document:d#viewer@user:tom#...", &rc, &d);
    KW_ASSERT(out != NULL);
    int same = strcmp(out, "document:d#viewer@user:tom") == 0;
    free(out);
    KW_ASSERT(same);
}

KW_TEST(relstr_null_and_not_terminated)
{
    kw_rel_t r;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR_NULL, &r, &d), KW_EINVAL);
    /* a slice shorter than the buffer: only the slice is read */
    const char *s = "doc:d#viewer@user:tomXXXX";
    KW_ASSERT_EQ(kw_rel_parse((kw_str_t){s, 21}, &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.subject.id, "tom"));
    /* diag may be NULL */
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("doc"), &r, NULL), KW_EINVAL);
}
