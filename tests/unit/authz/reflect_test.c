/*
 * tests/unit/authz/reflect_test.c - ReflectSchema, ComputablePermissions,
 * DependentRelations and DiffSchema over schema text (authz/reflect.c). The expected
 * answers of the reachability walks are SpiceDB's for the same schemas.
 */
#include "kw_test.h"

#include "authz/authz.h"

/* A document/folder/group schema with doc comments, subject sets, arrows and a wildcard. */
static const char SCHEMA[] = "/** a user */\n"
                             "definition user {}\n"
                             "\n"
                             "definition group {\n"
                             "    relation member: user | group#member\n"
                             "}\n"
                             "\n"
                             "definition folder {\n"
                             "    relation parent: folder\n"
                             "    relation viewer: user | group#member\n"
                             "    permission view = viewer + parent->view\n"
                             "}\n"
                             "\n"
                             "/**\n"
                             "   * a document\n"
                             "   */\n"
                             "definition document {\n"
                             "    relation folder: folder\n"
                             "    /** who edits */\n"
                             "    relation editor: user\n"
                             "    relation viewer: user | user:*\n"
                             "    relation banned: user\n"
                             "    permission edit = editor\n"
                             "    /** who views */\n"
                             "    permission view = (viewer + edit + folder->view) - banned\n"
                             "}\n";

static kw_str_t S(const char *s)
{
    return kw_str_c(s);
}

/* "def#rel[P] def#rel ..." for comparisons. */
static void refs_text(const kw_reflect_ref_t *r, size_t n, kw_buf_t *out)
{
    for (size_t i = 0; i < n; i++)
        kw_buf_printf(out, "%s%.*s#%.*s%s", i ? " " : "", KW_STR_FMT(r[i].def),
                      KW_STR_FMT(r[i].rel), r[i].is_permission ? "[P]" : "");
    kw_buf_puts(out, "");
}

KW_TEST(reflect_all_definitions_with_comments_and_types)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_reflect_def_t *defs = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), NULL, 0, a, &defs, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 4);
    KW_ASSERT_STR_EQ(defs[0].name.ptr, "user");
    KW_ASSERT_STR_EQ(defs[0].comment.ptr, "/** a user */");
    KW_ASSERT_EQ(defs[1].comment.len, 0);
    const kw_reflect_def_t *doc = &defs[3];
    KW_ASSERT_STR_EQ(doc->name.ptr, "document");
    KW_ASSERT_STR_EQ(doc->comment.ptr, "/**\n* a document\n*/");
    KW_ASSERT_EQ(doc->n_rels, 4);
    KW_ASSERT_EQ(doc->n_perms, 2);
    KW_ASSERT_STR_EQ(doc->rels[1].name.ptr, "editor");
    KW_ASSERT_STR_EQ(doc->rels[1].comment.ptr, "/** who edits */");
    KW_ASSERT_STR_EQ(doc->rels[1].parent.ptr, "document");
    KW_ASSERT(!doc->rels[1].is_permission);
    KW_ASSERT_EQ(doc->rels[2].n_types, 2);
    KW_ASSERT_STR_EQ(doc->rels[2].types[1].def.ptr, "user");
    KW_ASSERT(doc->rels[2].types[1].wildcard);
    KW_ASSERT_STR_EQ(doc->perms[1].name.ptr, "view");
    KW_ASSERT_STR_EQ(doc->perms[1].comment.ptr, "/** who views */");
    KW_ASSERT(doc->perms[1].is_permission);
    const kw_reflect_def_t *group = &defs[1];
    KW_ASSERT_EQ(group->rels[0].n_types, 2);
    KW_ASSERT_STR_EQ(group->rels[0].types[1].def.ptr, "group");
    KW_ASSERT_STR_EQ(group->rels[0].types[1].rel.ptr, "member");
    KW_ASSERT(!group->rels[0].types[1].wildcard);
    KW_ASSERT_EQ(group->rels[0].types[0].rel.len, 0);
    kw_arena_free(a);
}

KW_TEST(reflect_filters_as_spicedb_applies_them)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_reflect_def_t *defs = NULL;
    size_t n = 0;
    /* A definition prefix keeps the matching definitions whole. */
    kw_reflect_filter_t f1 = {.def = S("fo")};
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), &f1, 1, a, &defs, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_STR_EQ(defs[0].name.ptr, "folder");
    KW_ASSERT_EQ(defs[0].n_rels, 2);
    KW_ASSERT_EQ(defs[0].n_perms, 1);
    /* A relation filter keeps only matching relations; permissions stay (no perm filter). */
    kw_reflect_filter_t f2 = {.def = S("document"), .rel = S("v")};
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), &f2, 1, a, &defs, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_EQ(defs[0].n_rels, 1);
    KW_ASSERT_STR_EQ(defs[0].rels[0].name.ptr, "viewer");
    KW_ASSERT_EQ(defs[0].n_perms, 2);
    /* A caveat-only filter lets no definition through. */
    kw_reflect_filter_t f3 = {.caveat = S("x")};
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), &f3, 1, a, &defs, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    /* Refused combinations, with SpiceDB's messages. */
    kw_diag_t d;
    kw_reflect_filter_t bad1 = {.rel = S("viewer")};
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), &bad1, 1, a, &defs, &n, &d), KW_EINVAL);
    KW_ASSERT_STR_EQ(d.msg, "the relationship filter provided is not valid: relation name "
                            "match requires definition name match");
    kw_reflect_filter_t bad2 = {.def = S("a"), .caveat = S("b")};
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), &bad2, 1, a, &defs, &n, &d), KW_EINVAL);
    kw_reflect_filter_t bad3 = {.def = S("a"), .rel = S("b"), .perm = S("c")};
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), &bad3, 1, a, &defs, &n, &d), KW_EINVAL);
    kw_reflect_filter_t bad4 = {.perm = S("c")};
    KW_ASSERT_EQ(kw_schema_reflect(S(SCHEMA), &bad4, 1, a, &defs, &n, &d), KW_EINVAL);
    /* No schema: nothing, not an error. */
    KW_ASSERT_EQ(kw_schema_reflect(KW_STR(""), NULL, 0, a, &defs, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    kw_arena_free(a);
}

KW_TEST(reflect_dependent_relations_walk_arrows_and_subject_sets)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_reflect_ref_t *r = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(
        kw_schema_dependent_relations(S(SCHEMA), S("document"), S("view"), a, &r, &n, NULL), KW_OK);
    refs_text(r, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "document#banned document#edit[P] document#editor document#folder "
                            "document#viewer folder#parent folder#view[P] folder#viewer "
                            "group#member");
    /* A relation is refused; unknown names say which. */
    kw_diag_t d;
    KW_ASSERT_EQ(
        kw_schema_dependent_relations(S(SCHEMA), S("document"), S("viewer"), a, &r, &n, &d),
        KW_EINVAL);
    KW_ASSERT_STR_EQ(d.msg, "the relation `viewer` is not a permission");
    KW_ASSERT_EQ(kw_schema_dependent_relations(S(SCHEMA), S("nope"), S("view"), a, &r, &n, &d),
                 KW_ENOTFOUND);
    KW_ASSERT_STR_EQ(d.msg, "object definition `nope` not found");
    KW_ASSERT_EQ(kw_schema_dependent_relations(S(SCHEMA), S("document"), S("nope"), a, &r, &n, &d),
                 KW_ENOTFOUND);
    KW_ASSERT_STR_EQ(d.msg, "relation/permission `nope` not found under definition `document`");
    kw_buf_free(&b);
    kw_arena_free(a);
}

KW_TEST(reflect_computable_permissions_reach_through_arrows)
{
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_reflect_ref_t *r = NULL;
    size_t n = 0;
    /* A group's members feed group#member itself, folder viewers, and what they reach. */
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(SCHEMA), S("group"), S("member"), KW_STR(""), a,
                                                  &r, &n, NULL),
                 KW_OK);
    refs_text(r, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "document#view[P] folder#view[P] folder#viewer");
    /* A folder's viewers feed folder#view and, through document's arrow, document#view;
     * the definition filter keeps only folder's. */
    b.len = 0;
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(SCHEMA), S("folder"), S("viewer"), KW_STR(""),
                                                  a, &r, &n, NULL),
                 KW_OK);
    refs_text(r, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "document#view[P] folder#view[P]");
    b.len = 0;
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(SCHEMA), S("folder"), S("viewer"), S("fold"), a,
                                                  &r, &n, NULL),
                 KW_OK);
    refs_text(r, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "folder#view[P]");
    /* An arrow's tupleset is no entrypoint in SpiceDB's reachability graph: nothing. */
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(SCHEMA), S("folder"), S("parent"), KW_STR(""),
                                                  a, &r, &n, NULL),
                 KW_OK);
    KW_ASSERT_EQ(n, 0);
    /* No relation: the definition itself as a subject (user, through every relation that
     * allows it, the wildcard included). */
    b.len = 0;
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(SCHEMA), S("user"), KW_STR(""), KW_STR(""), a,
                                                  &r, &n, NULL),
                 KW_OK);
    refs_text(r, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "document#banned document#edit[P] document#editor document#view[P] "
                            "document#viewer folder#view[P] folder#viewer group#member");
    kw_diag_t d;
    KW_ASSERT_EQ(
        kw_schema_computable_permissions(S(SCHEMA), S("user"), S("x"), KW_STR(""), a, &r, &n, &d),
        KW_ENOTFOUND);
    kw_buf_free(&b);
    kw_arena_free(a);
}

/* SpiceDB's own cases (internal/services/v1 TestExperimentalComputablePermissions). */
KW_TEST(reflect_computable_permissions_spicedb_cases)
{
    static const char BASIC[] = "definition user {}\n"
                                "definition document {\n"
                                "    relation unused: user\n"
                                "    relation editor: user\n"
                                "    relation viewer: user\n"
                                "    permission view = viewer + editor\n"
                                "    permission only_view = viewer\n"
                                "    permission another = unused\n"
                                "    permission empty = nil\n"
                                "}\n";
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_reflect_ref_t *r = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(BASIC), S("user"), KW_STR(""), KW_STR(""), a,
                                                  &r, &n, NULL),
                 KW_OK);
    refs_text(r, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "document#another[P] document#editor document#only_view[P] "
                            "document#unused document#view[P] document#viewer");
    b.len = 0;
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(BASIC), S("document"), S("viewer"), KW_STR(""),
                                                  a, &r, &n, NULL),
                 KW_OK);
    refs_text(r, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "document#only_view[P] document#view[P]");
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(BASIC), S("document"), S("empty"), KW_STR(""),
                                                  a, &r, &n, NULL),
                 KW_OK);
    KW_ASSERT_EQ(n, 0);
    kw_diag_t d;
    KW_ASSERT_EQ(kw_schema_computable_permissions(S(BASIC), S("invalid"), KW_STR(""), KW_STR(""), a,
                                                  &r, &n, &d),
                 KW_ENOTFOUND);
    KW_ASSERT_STR_EQ(d.msg, "object definition `invalid` not found");
    kw_buf_free(&b);
    kw_arena_free(a);
}

/* "KIND name[:type]" per diff, for comparisons. */
static void diffs_text(const kw_schema_diff_t *d, size_t n, kw_buf_t *out)
{
    static const char *const kinds[] = {
        "?",     "def+",  "def-",  "def-doc", "rel+",     "rel-",      "rel-doc",
        "type+", "type-", "perm+", "perm-",   "perm-doc", "perm-expr",
    };
    for (size_t i = 0; i < n; i++) {
        kw_buf_printf(out, "%s%s ", i ? "; " : "", kinds[d[i].kind]);
        if (d[i].def)
            kw_buf_printf(out, "%.*s", KW_STR_FMT(d[i].def->name));
        else
            kw_buf_printf(out, "%.*s#%.*s", KW_STR_FMT(d[i].rel->parent),
                          KW_STR_FMT(d[i].rel->name));
        if (d[i].kind == KW_DIFF_REL_TYPE_ADDED || d[i].kind == KW_DIFF_REL_TYPE_REMOVED)
            kw_buf_printf(out, ":%.*s%s%.*s%s", KW_STR_FMT(d[i].type.def),
                          d[i].type.rel.len ? "#" : "", KW_STR_FMT(d[i].type.rel),
                          d[i].type.wildcard ? ":*" : "");
    }
    kw_buf_puts(out, "");
}

KW_TEST(reflect_diff_every_kind)
{
    static const char NEW[] = "/** a user, renamed */\n"
                              "definition user {}\n"
                              "definition team {}\n"
                              "definition folder {\n"
                              "    relation parent: folder\n"
                              "    relation viewer: user | group#member\n"
                              "    permission view = viewer + parent->view\n"
                              "}\n"
                              "definition document {\n"
                              "    relation folder: folder\n"
                              "    /** who edits, really */\n"
                              "    relation editor: user | team\n"
                              "    relation viewer: user\n"
                              "    relation owner: user\n"
                              "    permission edit = editor + owner\n"
                              "    /** who views */\n"
                              "    permission view = (viewer + edit + folder->view) - banned2\n"
                              "    relation banned2: user\n"
                              "    permission admin = owner\n"
                              "}\n"
                              "definition group {\n"
                              "    relation member: user | group#member\n"
                              "}\n";
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_buf_t b;
    kw_buf_init(&b);
    kw_schema_diff_t *d = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_schema_diff(S(SCHEMA), S(NEW), a, &d, &n, NULL), KW_OK);
    diffs_text(d, n, &b);
    KW_ASSERT_STR_EQ(b.ptr, "def+ team; def-doc user; def-doc document; rel- document#banned; "
                            "rel+ document#owner; rel+ document#banned2; perm+ document#admin; "
                            "perm-expr document#edit; perm-expr document#view; rel-doc "
                            "document#editor; type+ document#editor:team; type- "
                            "document#viewer:user:*");
    /* The same text: no difference; against no schema: every definition added. */
    KW_ASSERT_EQ(kw_schema_diff(S(SCHEMA), S(SCHEMA), a, &d, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    KW_ASSERT_EQ(kw_schema_diff(KW_STR(""), S(SCHEMA), a, &d, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 4);
    KW_ASSERT_EQ(d[3].kind, KW_DIFF_DEF_ADDED);
    KW_ASSERT_EQ(d[3].def->n_perms, 2);
    /* A comparison that does not compile is refused with line:col. */
    kw_diag_t dg;
    KW_ASSERT_EQ(kw_schema_diff(S(SCHEMA), S("definition x { relation }"), a, &d, &n, &dg),
                 KW_ESCHEMA);
    KW_ASSERT(dg.line == 1);
    kw_buf_free(&b);
    kw_arena_free(a);
}

/* Every allocation failing once: an error, never a crash or a partial answer. */
KW_TEST(reflect_fails_cleanly_on_oom)
{
    for (long i = 1; i < 400; i++) {
        kw_arena_t *a = kw_arena_new(0);
        KW_ASSERT(a);
        kw_reflect_ref_t *r = NULL;
        kw_schema_diff_t *d = NULL;
        kw_reflect_def_t *defs = NULL;
        size_t n = 0;
        kw_fault_arm(i);
        int rc1 =
            kw_schema_dependent_relations(S(SCHEMA), S("document"), S("view"), a, &r, &n, NULL);
        kw_fault_arm(i);
        int rc2 = kw_schema_computable_permissions(S(SCHEMA), S("user"), KW_STR(""), KW_STR(""), a,
                                                   &r, &n, NULL);
        kw_fault_arm(i);
        int rc3 = kw_schema_diff(KW_STR("definition aaa {}"), S(SCHEMA), a, &d, &n, NULL);
        kw_fault_arm(i);
        int rc4 = kw_schema_reflect(S(SCHEMA), NULL, 0, a, &defs, &n, NULL);
        kw_fault_arm(0);
        kw_arena_free(a);
        KW_ASSERT(rc1 == KW_OK || rc1 == KW_ENOMEM);
        KW_ASSERT(rc2 == KW_OK || rc2 == KW_ENOMEM);
        KW_ASSERT(rc3 == KW_OK || rc3 == KW_ENOMEM);
        KW_ASSERT(rc4 == KW_OK || rc4 == KW_ENOMEM);
    }
}

/* Caveats: reflected (parameters sorted by name, the body as written), named on allowed
 * types, and diffed with SpiceDB's caveat kinds. */
KW_TEST(reflect_caveats_and_their_diffs)
{
    static const char CAV[] = "use expiration\n"
                              "/** within range */\n"
                              "caveat in_range(limit int, amount int) {\n"
                              "    amount < limit\n"
                              "}\n"
                              "caveat on_ip(ip string) {\n"
                              "    ip == \"1.2.3.4\"\n"
                              "}\n"
                              "definition user {}\n"
                              "definition doc {\n"
                              "    relation viewer: user with in_range | user with expiration\n"
                              "}\n";
    static const char CAV2[] = "use expiration\n"
                               "caveat in_range(limit int, amount uint, extra string) {\n"
                               "    amount < limit && extra != \"\"\n"
                               "}\n"
                               "caveat new_one(x int) {\n"
                               "    x > 1\n"
                               "}\n"
                               "definition user {}\n"
                               "definition doc {\n"
                               "    relation viewer: user with in_range | user\n"
                               "}\n";
    kw_arena_t *a = kw_arena_new(0);
    KW_ASSERT(a);
    kw_reflect_caveat_t *cv = NULL;
    size_t n = 0;
    KW_ASSERT_EQ(kw_schema_reflect_caveats(S(CAV), NULL, 0, a, &cv, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 2);
    KW_ASSERT_STR_EQ(cv[0].name.ptr, "in_range");
    KW_ASSERT_STR_EQ(cv[0].comment.ptr, "/** within range */");
    KW_ASSERT_STR_EQ(cv[0].expression.ptr, "amount < limit");
    KW_ASSERT_EQ(cv[0].n_params, 2);
    KW_ASSERT_STR_EQ(cv[0].params[0].name.ptr, "amount"); /* sorted by name */
    KW_ASSERT_STR_EQ(cv[0].params[0].type.ptr, "int");
    KW_ASSERT_STR_EQ(cv[0].params[0].parent.ptr, "in_range");
    /* A caveat filter keeps matching caveats and no definition; a definition filter no
     * caveat. */
    kw_reflect_filter_t f = {.caveat = S("on")};
    KW_ASSERT_EQ(kw_schema_reflect_caveats(S(CAV), &f, 1, a, &cv, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 1);
    KW_ASSERT_STR_EQ(cv[0].name.ptr, "on_ip");
    kw_reflect_filter_t fd = {.def = S("doc")};
    KW_ASSERT_EQ(kw_schema_reflect_caveats(S(CAV), &fd, 1, a, &cv, &n, NULL), KW_OK);
    KW_ASSERT_EQ(n, 0);
    kw_reflect_def_t *defs = NULL;
    KW_ASSERT_EQ(kw_schema_reflect(S(CAV), NULL, 0, a, &defs, &n, NULL), KW_OK);
    KW_ASSERT_STR_EQ(defs[1].rels[0].types[0].caveat.ptr, "in_range");
    KW_ASSERT(defs[1].rels[0].types[1].expiration);
    KW_ASSERT_EQ(defs[1].rels[0].types[1].caveat.len, 0);

    kw_schema_diff_t *d = NULL;
    KW_ASSERT_EQ(kw_schema_diff(S(CAV), S(CAV2), a, &d, &n, NULL), KW_OK);
    kw_buf_t b;
    kw_buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        kw_buf_printf(&b, "%s%d", i ? " " : "", (int)d[i].kind);
        if (d[i].caveat)
            kw_buf_printf(&b, ":%.*s", KW_STR_FMT(d[i].caveat->name));
        if (d[i].param)
            kw_buf_printf(&b, ":%.*s.%.*s", KW_STR_FMT(d[i].param->parent),
                          KW_STR_FMT(d[i].param->name));
        if (d[i].kind == KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED)
            kw_buf_printf(&b, "(%.*s)", KW_STR_FMT(d[i].previous_type));
        if (d[i].rel)
            kw_buf_printf(&b, ":%.*s", KW_STR_FMT(d[i].rel->name));
    }
    /* caveat added, caveat removed, then doc's viewer loses `user with expiration` and
     * gains plain `user`, then in_range: comment, added parameter, retyped one, body. */
    char want[400];
    snprintf(want, sizeof(want),
             "%d:new_one %d:on_ip %d:viewer %d:viewer %d:in_range %d:in_range.extra "
             "%d:in_range.amount(int) %d:in_range",
             KW_DIFF_CAVEAT_ADDED, KW_DIFF_CAVEAT_REMOVED, KW_DIFF_REL_TYPE_REMOVED,
             KW_DIFF_REL_TYPE_ADDED, KW_DIFF_CAVEAT_DOC_CHANGED, KW_DIFF_CAVEAT_PARAM_ADDED,
             KW_DIFF_CAVEAT_PARAM_TYPE_CHANGED, KW_DIFF_CAVEAT_EXPR_CHANGED);
    KW_ASSERT_STR_EQ(b.ptr, want);
    kw_buf_free(&b);
    kw_arena_free(a);
}
