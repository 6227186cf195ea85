/*
 * tests/unit/vfile/expected_test.c - the expected-relations grammar and the recursive
 * expansion (src/vfile/expected.c).
 */
#include "kw_test.h"

#include "vfile/vfile_int.h"

/* Parses one expected-relation string; returns rc and the canonical subject in out. */
static int subject_of(const char *s, char *out, size_t cap, kw_diag_t *d)
{
    kw_arena_t *a = kw_arena_new(0);
    if (!a)
        return KW_ENOMEM;
    char *t = NULL;
    kw_diag_clear(d);
    int rc = kw__vfile_expected_subject(a, kw_str_c(s), &t, d);
    snprintf(out, cap, "%s", rc == KW_OK ? t : "");
    kw_arena_free(a);
    return rc;
}

KW_TEST(expected_subject_grammar)
{
    char out[256];
    kw_diag_t d;
    KW_ASSERT_EQ(subject_of("[user:tom] is <document:1#viewer>", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "user:tom");
    KW_ASSERT_EQ(subject_of("  [group:eng#member] is <x>  ", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "group:eng#member");
    KW_ASSERT_EQ(subject_of("[user:tom#...]", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "user:tom");
    /* exclusions are sorted and lose their `#...` */
    KW_ASSERT_EQ(subject_of("[user:* - {user:b, user:a#...}] is <d:1#vie>", out, sizeof(out), &d),
                 KW_OK);
    KW_ASSERT_STR_EQ(out, "user:* - {user:a, user:b}");
    KW_ASSERT_EQ(subject_of("[user:*] is <d:1#vie>", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "user:*");
}

KW_TEST(expected_subject_refusals)
{
    char out[256];
    kw_diag_t d;
    KW_ASSERT_EQ(subject_of("user:tom", out, sizeof(out), &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "must start with '[subject]'") != NULL);
    KW_ASSERT_EQ(subject_of("[user:tom", out, sizeof(out), &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "lacks a ']'") != NULL);
    KW_ASSERT_EQ(subject_of("[user:tom - {user:x}]", out, sizeof(out), &d), KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "only a wildcard may have exclusions") != NULL);
    /* SpiceDB marks a caveated subject with `[...]`, never with the caveat's name */
    KW_ASSERT_EQ(subject_of("[user:tom[somecaveat]] is <d:1#vie>", out, sizeof(out), &d),
                 KW_EINVAL);
    KW_ASSERT(strstr(d.msg, "a caveated subject is written `type:id[...]`") != NULL);
    KW_ASSERT_EQ(subject_of("[user:* - {user:a[x]}]", out, sizeof(out), &d), KW_EINVAL);
}

KW_TEST(expected_subject_caveat_markers)
{
    char out[256];
    kw_diag_t d;
    KW_ASSERT_EQ(subject_of("[user:tom[...]] is <document:1#viewer>", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "user:tom[...]");
    KW_ASSERT_EQ(subject_of("[team:eng#member[...]] is <d:1#vie>", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "team:eng#member[...]");
    KW_ASSERT_EQ(subject_of("[user:tom#...[...]]", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "user:tom[...]");
    KW_ASSERT_EQ(
        subject_of("[user:*[...] - {user:b[...], user:a}] is <d:1#vie>", out, sizeof(out), &d),
        KW_OK);
    KW_ASSERT_STR_EQ(out, "user:*[...] - {user:a, user:b[...]}");
    KW_ASSERT_EQ(subject_of("[user:*[...]]", out, sizeof(out), &d), KW_OK);
    KW_ASSERT_STR_EQ(out, "user:*[...]");
}

KW_TEST(expected_key_grammar)
{
    kw_object_t o;
    kw_str_t rel;
    KW_ASSERT_EQ(kw__vfile_parse_key(KW_STR("document:a#ban#view"), &o, &rel), KW_OK);
    KW_ASSERT(kw_str_eq_c(o.type, "document"));
    KW_ASSERT(kw_str_eq_c(o.id, "a#ban"));
    KW_ASSERT(kw_str_eq_c(rel, "view"));
    const char *bad[] = {"document",       "document:a", "document:a#", ":a#view",
                         "document:#view", "doc#view:a", "bad key"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        KW_ASSERT_EQ(kw__vfile_parse_key(kw_str_c(bad[i]), &o, &rel), KW_EINVAL);
}

/* Expands res#rel over a small engine and returns the sorted canonical texts. */
static int expand_text(kw_engine_t *e, const char *type, const char *id, const char *rel, char *out,
                       size_t cap)
{
    kw_vexpand_t x = {.e = e, .arena = kw_arena_new(0)};
    kw_sset_t m = {0};
    kw_strset_t t = {0};
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = x.arena ? KW_OK : KW_ENOMEM;
    if (rc == KW_OK)
        rc = kw__vfile_expand(&x, (kw_object_t){kw_str_c(type), kw_str_c(id)}, kw_str_c(rel), &m,
                              &d);
    if (rc == KW_OK)
        rc = kw__sset_texts(x.arena, &m, &t);
    out[0] = '\0';
    for (size_t i = 1; rc == KW_OK && i < t.n; i++)
        for (size_t j = i; j > 0 && strcmp(t.v[j - 1], t.v[j]) > 0; j--) {
            const char *s = t.v[j];
            t.v[j] = t.v[j - 1];
            t.v[j - 1] = s;
        }
    size_t n = 0;
    for (size_t i = 0; rc == KW_OK && i < t.n; i++)
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", i ? " | " : "", t.v[i]);
    kw__strset_free(&t);
    kw__sset_free(&m);
    kw__strset_free(&x.stack);
    kw_arena_free(x.arena);
    return rc;
}

static kw_engine_t *engine_with(const char *schema, const char *const *rels)
{
    kw_engine_t *e = NULL;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_engine_new(&e) != KW_OK)
        return NULL;
    int rc = kw_engine_set_schema(e, kw_str_c(schema), NULL, &d);
    for (size_t i = 0; rc == KW_OK && rels[i]; i++) {
        kw_update_t up = {.op = KW_OP_TOUCH};
        rc = kw_rel_parse(kw_str_c(rels[i]), &up.rel, &d);
        if (rc == KW_OK)
            rc = kw_engine_write(e, &up, 1, NULL, 0, 0, NULL, &d);
    }
    if (rc != KW_OK) {
        fprintf(stderr, "  engine: %s\n", d.msg);
        kw_engine_free(e);
        return NULL;
    }
    return e;
}

KW_TEST(expected_expansion_follows_subject_sets_and_cycles)
{
    const char *schema = "definition user {}\n"
                         "definition grp { relation mem: user | grp#mem; }\n"
                         "definition doc {\n"
                         "  relation vie: grp#mem | user:*\n"
                         "  relation ban: user\n"
                         "  permission per = vie - ban\n"
                         "}\n";
    const char *rels[] = {"grp:g#mem@grp:h#mem",
                          "grp:h#mem@grp:g#mem",
                          "grp:h#mem@user:u",
                          "doc:a#vie@grp:g#mem",
                          "doc:c#vie@user:*",
                          "doc:c#ban@user:x",
                          NULL};
    kw_engine_t *e = engine_with(schema, rels);
    KW_ASSERT(e != NULL);
    char out[512];
    int rc1 = expand_text(e, "doc", "a", "vie", out, sizeof(out));
    char a_v[512];
    snprintf(a_v, sizeof(a_v), "%s", out);
    int rc2 = expand_text(e, "doc", "c", "per", out, sizeof(out));
    kw_engine_free(e);
    KW_ASSERT_EQ(rc1, KW_OK);
    KW_ASSERT_STR_EQ(a_v, "grp:g#mem | grp:h#mem | user:u");
    KW_ASSERT_EQ(rc2, KW_OK);
    KW_ASSERT_STR_EQ(out, "user:* - {user:x}");
}
