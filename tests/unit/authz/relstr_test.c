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

KW_TEST(relstr_caveat_name_and_context)
{
    kw_rel_t r;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@user:tom[only_tuesday]"), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.subject.id, "tom"));
    KW_ASSERT(kw_str_eq_c(r.caveat, "only_tuesday"));
    KW_ASSERT_EQ(r.caveat_ctx.len, 0);
    KW_ASSERT_EQ(r.expires_at, 0);
    const char *s = "document:firstdoc#writer@user:notbanned[another_caveat:{\"anothercondition\":"
                    "\"hello world\"}]";
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.caveat, "another_caveat"));
    KW_ASSERT(kw_str_eq_c(r.caveat_ctx, "{\"anothercondition\":\"hello world\"}"));
    /* nested values, blanks, brackets and braces inside strings, a subject set */
    s = "database:listings#writer@role:premium#member[write_limit:{ \"a\": [1, {\"b\": \"}]\"}], "
        "\"c\": -1.5e+3, \"d\": null, \"e\": true }]";
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.subject.relation, "member"));
    KW_ASSERT(kw_str_eq_c(r.caveat, "write_limit"));
    KW_ASSERT(kw_str_eq_c(r.caveat_ctx, "{ \"a\": [1, {\"b\": \"}]\"}], \"c\": -1.5e+3, \"d\": "
                                        "null, \"e\": true }"));
    /* prefixed caveat names (SpiceDB's multipleslashes.yaml) and a wildcard subject */
    KW_ASSERT_EQ(
        kw_rel_parse(KW_STR("org/res:x#viewer@org/user:*[foo/bar/only_on_tuesday]"), &r, &d),
        KW_OK);
    KW_ASSERT(kw_str_eq_c(r.caveat, "foo/bar/only_on_tuesday"));
    KW_ASSERT(kw_str_eq_c(r.subject.id, "*"));
    /* an empty object is no context (SpiceDB writes such a caveat as `[name]`) */
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@user:tom[cav:{ }]"), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.caveat, "cav"));
    KW_ASSERT_EQ(r.caveat_ctx.len, 0);
    /* `[expiration]` and `[expiration:{...}]` name a caveat called expiration */
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@user:tom[expiration]"), &r, &d), KW_OK);
    KW_ASSERT(kw_str_eq_c(r.caveat, "expiration"));
    KW_ASSERT_EQ(r.expires_at, 0);
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:d#viewer@user:tom[expiration:{\"a\":1}]"), &r, &d),
                 KW_OK);
    KW_ASSERT(kw_str_eq_c(r.caveat, "expiration"));
    KW_ASSERT(kw_str_eq_c(r.caveat_ctx, "{\"a\":1}"));
}

KW_TEST(relstr_expiration)
{
    kw_rel_t r;
    kw_diag_t d;
    KW_ASSERT_EQ(
        kw_rel_parse(KW_STR("document:d#viewer@user:tracy[expiration:2023-12-01T00:00:00Z]"), &r,
                     &d),
        KW_OK);
    KW_ASSERT_EQ(r.caveat.len, 0);
    KW_ASSERT_EQ(r.expires_at, 1701388800LL * 1000000);
    /* a fraction (finer than a microsecond: truncated) and a negative offset */
    KW_ASSERT_EQ(
        kw_rel_parse(KW_STR("doc:x#rel@usr:y[expiration:2024-10-03T07:16:28.068632999-07:00]"), &r,
                     &d),
        KW_OK);
    KW_ASSERT_EQ(r.expires_at, 1727964988LL * 1000000 + 68632);
    /* leap day, far future, the year 9999 */
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("doc:x#rel@usr:y[expiration:2024-02-29T23:59:59.5Z]"), &r, &d),
                 KW_OK);
    KW_ASSERT_EQ(r.expires_at, 1709251199LL * 1000000 + 500000);
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("doc:x#rel@usr:y[expiration:9999-12-31T23:59:59Z]"), &r, &d),
                 KW_OK);
    KW_ASSERT_EQ(r.expires_at, 253402300799LL * 1000000);
    /* both: the caveat first */
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:firstdoc#viewer@user:sarah[somecaveat:{"
                                     "\"somecondition\":42}][expiration:2300-12-01T00:00:00Z]"),
                              &r, &d),
                 KW_OK);
    KW_ASSERT(kw_str_eq_c(r.caveat, "somecaveat"));
    KW_ASSERT(kw_str_eq_c(r.caveat_ctx, "{\"somecondition\":42}"));
    KW_ASSERT_EQ(r.expires_at, 10442649600LL * 1000000);
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("document:firstdoc#viewer@user:tom[somecaveat][expiration:"
                                     "2023-12-01T00:00:00Z]"),
                              &r, &d),
                 KW_OK);
    KW_ASSERT(kw_str_eq_c(r.caveat, "somecaveat"));
    KW_ASSERT_EQ(r.expires_at, 1701388800LL * 1000000);
}

/* Malformed caveats and expirations: KW_EINVAL at the given column, with a message. */
KW_TEST(relstr_caveat_and_expiration_errors)
{
    static const struct {
        const char *s;
        uint32_t col;
        const char *msg_part;
    } cases[] = {
        {"doc:x#rel@usr:y[", 17, "caveat name"},
        {"doc:x#rel@usr:y[]", 17, "caveat name"},
        {"doc:x#rel@usr:y[Cav]", 17, "caveat name"},
        {"doc:x#rel@usr:y[cav", 20, "']'"},
        {"doc:x#rel@usr:y[cav:]", 21, "JSON object"},
        {"doc:x#rel@usr:y[cav:1]", 21, "JSON object"},
        {"doc:x#rel@usr:y[cav:{}", 23, "']'"},
        {"doc:x#rel@usr:y[cav:{\"a\":1]", 27, "',' or '}'"},
        {"doc:x#rel@usr:y[cav:{a:1}]", 22, "string key"},
        {"doc:x#rel@usr:y[cav:{\"a\" 1}]", 26, "':'"},
        {"doc:x#rel@usr:y[cav:{\"a\":01}]", 27, "',' or '}'"},
        {"doc:x#rel@usr:y[cav:{\"a\":1.}]", 28, "digit"},
        {"doc:x#rel@usr:y[cav:{\"a\":tru}]", 26, "JSON value"},
        {"doc:x#rel@usr:y[cav:{\"a\":\"\\x\"}]", 28, "escape"},
        {"doc:x#rel@usr:y[cav:{\"a\":\"\\u12g4\"}]", 31, "hex"},
        {"doc:x#rel@usr:y[cav:{\"a\":\"\t\"}]", 27, "control"},
        {"doc:x#rel@usr:y[cav:{\"a\":\"\xff\"}]", 27, "UTF-8"},
        {"doc:x#rel@usr:y[cav:{\"a\":[1,]}]", 29, "JSON value"},
        {"doc:x#rel@usr:y[cav:{\"a\":1,}]", 28, "string key"},
        {"doc:x#rel@usr:y[cav:{\"a\":\"b}]", 30, "unterminated"},
        {"doc:x#rel@usr:y[cav:{\"a\":1}]x", 29, "after the caveat"},
        {"doc:x#rel@usr:y[cav][other]", 21, "only an expiration"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T00:00:00Z][cav]", 49, "caveat must come before"},
        {"doc:x#rel@usr:y[cav][expiration:2023-12-01T00:00:00Z][expiration:2023-12-01T00:00:00Z]",
         54, "nothing may follow"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T00:00:00Z]x", 49, "after the expiration"},
        {"doc:x#rel@usr:y[expiration:]", 28, "expiration"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T00:00:00Z", 48, "']'"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T00:00:00+01:00]", 47, "expiration"},
        {"doc:x#rel@usr:y[expiration:2023-12-01 00:00:00Z]", 38, "expiration"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T00:00:00]", 28, "RFC 3339"},
        {"doc:x#rel@usr:y[expiration:2023-12-01]", 28, "RFC 3339"},
        {"doc:x#rel@usr:y[expiration:23-12-01T00:00:00Z]", 28, "RFC 3339"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T00:00:00.Z]", 28, "RFC 3339"},
        {"doc:x#rel@usr:y[expiration:2023-13-01T00:00:00Z]", 28, "not a valid date"},
        {"doc:x#rel@usr:y[expiration:2023-02-29T00:00:00Z]", 28, "not a valid date"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T24:00:00Z]", 28, "not a valid date"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T23:59:60Z]", 28, "not a valid date"},
        {"doc:x#rel@usr:y[expiration:2023-12-01T00:00:00-24:00]", 28, "not a valid date"},
        {"doc:x#rel@usr:y[expiration:1970-01-01T00:00:00Z]", 28, "not after 1970"},
        {"doc:x#rel@usr:y[expiration:1969-12-31T23:59:59Z]", 28, "not after 1970"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(cases); i++) {
        kw_rel_t r;
        kw_diag_t d;
        kw_diag_clear(&d);
        int rc = kw_rel_parse(kw_str_c(cases[i].s), &r, &d);
        if (rc != KW_EINVAL || d.col != cases[i].col || !strstr(d.msg, cases[i].msg_part))
            KW_FAIL_("case \"%s\": rc %d col %u (%s), want col %u and \"%s\"", cases[i].s, rc,
                     d.col, d.msg, cases[i].col, cases[i].msg_part);
    }
}

KW_TEST(relstr_caveat_context_depth_limit)
{
    char s[400];
    kw_rel_t r;
    kw_diag_t d;
    /* KW_MAX_CAVEAT_CTX_DEPTH levels in all (the object and depth-1 arrays) is fine */
    size_t n = (size_t)snprintf(s, sizeof(s), "doc:x#rel@usr:y[cav:{\"a\":");
    for (int i = 1; i < KW_MAX_CAVEAT_CTX_DEPTH; i++)
        s[n++] = '[';
    for (int i = 1; i < KW_MAX_CAVEAT_CTX_DEPTH; i++)
        s[n++] = ']';
    strcpy(s + n, "}]");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
    n = (size_t)snprintf(s, sizeof(s), "doc:x#rel@usr:y[cav:{\"a\":");
    for (int i = 0; i < KW_MAX_CAVEAT_CTX_DEPTH; i++)
        s[n++] = '[';
    for (int i = 0; i < KW_MAX_CAVEAT_CTX_DEPTH; i++)
        s[n++] = ']';
    strcpy(s + n, "}]");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "nested deeper") != NULL);
}

KW_TEST(relstr_format_caveat_and_expiration)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"document:d#viewer@user:tom[only_tuesday]", NULL},
        {"document:d#viewer@user:tom[cav:{\"a\": [1, 2]}]", NULL},
        {"document:d#viewer@user:tom[expiration:2023-12-01T00:00:00Z]", NULL},
        {"document:d#viewer@user:tom[cav][expiration:2023-12-01T00:00:00.5Z]", NULL},
        {"document:d#viewer@team:t#member[cav:{\"x\":1}][expiration:2300-12-01T00:00:00Z]", NULL},
        {"document:d#viewer@user:tom[cav:{ }]", "document:d#viewer@user:tom[cav]"},
        {"document:d#viewer@user:tom[expiration:2024-10-03T07:16:28.068632999-07:00]",
         "document:d#viewer@user:tom[expiration:2024-10-03T14:16:28.068632Z]"},
        {"document:d#viewer@user:tom[expiration:2023-12-01T00:00:00.000000Z]",
         "document:d#viewer@user:tom[expiration:2023-12-01T00:00:00Z]"},
        {"document:d#viewer@user:tom#...[cav]", "document:d#viewer@user:tom[cav]"},
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(cases); i++) {
        int rc;
        kw_diag_t d;
        char *out = roundtrip(cases[i].in, &rc, &d);
        const char *want = cases[i].out ? cases[i].out : cases[i].in;
        if (!out || strcmp(out, want) != 0)
            KW_FAIL_("case \"%s\": rc %d (%s), got \"%s\", want \"%s\"", cases[i].in, rc, d.msg,
                     out ? out : "(null)", want);
        free(out);
    }
    kw_buf_t b;
    kw_buf_init(&b);
    kw_rel_format_expiration(1, &b);
    kw_rel_format_expiration(-1, &b);
    KW_ASSERT(!b.failed);
    KW_ASSERT_STR_EQ(b.ptr, "1970-01-01T00:00:00.000001Z1969-12-31T23:59:59.999999Z");
    kw_buf_free(&b);
}

KW_TEST(relstr_copy_keeps_caveat_and_expiration)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a != NULL);
    char text[] = "document:d#viewer@user:tom[cav:{\"a\":1}][expiration:2023-12-01T00:00:00Z]";
    kw_rel_t r, cp;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(text), &r, &d), KW_OK);
    KW_ASSERT_EQ(kw_rel_copy(a, &r, &cp), KW_OK);
    memset(text, 'x', sizeof(text) - 1);
    KW_ASSERT(kw_str_eq_c(cp.caveat, "cav"));
    KW_ASSERT(kw_str_eq_c(cp.caveat_ctx, "{\"a\":1}"));
    KW_ASSERT_EQ(cp.expires_at, 1701388800LL * 1000000);
    kw_arena_free(a);
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
        {"doc_:d#viewer@user:tom", 1},          /* trailing underscore */
        {"doc/:d#viewer@user:tom", 1},          /* empty segment after '/' */
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
    /* SpiceDB's patterns: a segment is 3 to 64 bytes, a prefix 63 at most, 128 in all */
    memset(s, 'a', 63);
    s[63] = '/';
    memset(s + 64, 'b', 64);
    strcpy(s + 128, ":d#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
    KW_ASSERT_EQ(r.resource.type.len, 128);
    memset(s, 'a', 64);
    s[64] = '/';
    memset(s + 65, 'b', 63);
    strcpy(s + 128, ":d#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_EINVAL); /* a 64-byte prefix */
    KW_ASSERT(strstr(d.msg, "prefix at most 63") != NULL);
    memset(s, 'a', 65);
    strcpy(s + 65, ":d#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_EINVAL); /* a 65-byte name */
    strcpy(s, "aaa/bbb/ccc:d#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_OK);
    memset(s, 'a', 63);
    s[63] = '/';
    memset(s + 64, 'b', 63);
    s[127] = '/';
    memset(s + 128, 'c', 3);
    strcpy(s + 131, ":d#viewer@user:tom");
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(s), &r, &d), KW_EINVAL); /* 131 bytes in all */
    /* relations: 3 to 64 bytes, ending in a letter or digit */
    memset(s, 'r', 64);
    s[64] = '\0';
    char t[200];
    snprintf(t, sizeof(t), "doc:d#%s@user:tom", s);
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(t), &r, &d), KW_OK);
    snprintf(t, sizeof(t), "doc:d#%sr@user:tom", s);
    KW_ASSERT_EQ(kw_rel_parse(kw_str_c(t), &r, &d), KW_EINVAL);
    static const char *const bad[] = {
        "doc:1#ab@user:u",     "ab:1#rel@user:u",       "doc:1#rel@us:u",    "doc:1#rel@user:u#ab",
        "doc:1#re_@user:u",    "doc:1#9ab@user:u",      "do9_:1#rel@user:u", "doc:1#rel@user:u[ab]",
        "ab/doc:1#rel@user:u", "doc:1#rel@user:u[Cav]",
    };
    for (size_t i = 0; i < KW_ARRAY_LEN(bad); i++) {
        if (kw_rel_parse(kw_str_c(bad[i]), &r, &d) != KW_EINVAL)
            KW_FAIL_("%s: parsed, SpiceDB refuses it", bad[i]);
        KW_ASSERT(strstr(d.msg, "must match") != NULL || strstr(d.msg, "expected a") != NULL);
    }
    KW_ASSERT_EQ(kw_rel_parse(KW_STR("doc:1#re9@user:u#m_1[c_9:{}]"), &r, &d), KW_OK);
}

KW_TEST(relstr_format_roundtrip)
{
    static const char *ok[] = {
        "document:doc1#viewer@user:tom",
        "document:doc1#viewer@group:eng#member",
        "test/resource:first#viewer@test/user:*",
        "aaa/bbb:x_y|z#rel_1@ccc:+=-",
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

KW_TEST(relstr_context_check)
{
    kw_diag_t d;
    KW_ASSERT_EQ(kw_rel_context_check(KW_STR(" {\"a\": [1, \"x\"], \"b\": {}} \n"), &d), KW_OK);
    KW_ASSERT_EQ(kw_rel_context_check(KW_STR("{}"), &d), KW_OK);
    KW_ASSERT_EQ(kw_rel_context_check(KW_STR(""), &d), KW_EINVAL);
    KW_ASSERT_EQ(d.col, 1);
    KW_ASSERT_EQ(kw_rel_context_check(KW_STR("null"), &d), KW_EINVAL);
    KW_ASSERT_EQ(kw_rel_context_check(KW_STR("{\"a\":1} x"), &d), KW_EINVAL);
    KW_ASSERT_EQ(d.col, 9);
    KW_ASSERT(strstr(d.msg, "nothing after the object") != NULL);
    KW_ASSERT_EQ(kw_rel_context_check(KW_STR("{\"a\":1"), &d), KW_EINVAL);
    KW_ASSERT_EQ(d.col, 7);
    KW_ASSERT_EQ(kw_rel_context_check(KW_STR_NULL, &d), KW_EINVAL);
}
