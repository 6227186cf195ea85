/*
 * tests/unit/authz/schema_test.c - the schema lexer, parser and compiler.
 *
 * Golden files: tests/fixtures/schema/<case>.zed with <case>.expected holding either
 * kw_schema_dump's output or, for a failing case, exactly "line:col: message\n". The
 * case name fixes the expected code: err_* -> KW_ESCHEMA, limit_* -> KW_ELIMIT,
 * unsupported_* -> KW_EUNSUPPORTED, anything else must compile.
 * KW_SCHEMA_REGEN=1 rewrites the .expected files (review the diff before committing).
 */
#include "kw_test.h"

#include "authz/schema.h"

#include <dirent.h>

/* The file's text (kw_free it), or NULL when it cannot be read. */
static char *read_file(const char *path, size_t *len)
{
    char *text = NULL;
    if (kw_read_file(path, 0, &text, len) != KW_OK) {
        kw_free(text);
        return NULL;
    }
    return text;
}

static void dir_path(char *out, size_t cap, const char *env, const char *rel, const char *fb)
{
    const char *root = getenv(env);
    if (root && *root)
        snprintf(out, cap, "%s/%s", root, rel);
    else
        snprintf(out, cap, "%s", fb);
}

static void fixtures_dir(char *out, size_t cap)
{
    dir_path(out, cap, "KW_SOURCE_DIR", "tests/fixtures/schema", "../tests/fixtures/schema");
}

/* The folder `sub` of the optional SpiceDB corpus (KW_CONFORMANCE_DIR); false when the
 * variable is unset or empty, and the corpus tests then skip. */
static bool corpus_dir(char *out, size_t cap, const char *sub)
{
    const char *root = getenv("KW_CONFORMANCE_DIR");
    if (!root || !*root)
        return false;
    snprintf(out, cap, "%s/%s", root, sub);
    return true;
}

/* Compiles text; on success appends the dump to out, else "line:col: msg\n". */
static int compile_to_text(const char *text, size_t len, kw_buf_t *out)
{
    kw_schema_t *s = NULL;
    kw_diag_t d;
    int rc = kw_schema_compile((kw_str_t){text, len}, &s, &d);
    if (rc == KW_OK) {
        kw_schema_dump(s, out);
        kw_schema_free(s);
    } else {
        kw_buf_printf(out, "%u:%u: %s\n", d.line, d.col, d.msg);
    }
    return rc;
}

static int expected_code(const char *name)
{
    if (strncmp(name, "err_", 4) == 0)
        return KW_ESCHEMA;
    if (strncmp(name, "limit_", 6) == 0)
        return KW_ELIMIT;
    if (strncmp(name, "unsupported_", 12) == 0)
        return KW_EUNSUPPORTED;
    return KW_OK;
}

KW_TEST(schema_golden)
{
    char dir[1024];
    fixtures_dir(dir, sizeof(dir));
    DIR *d = opendir(dir);
    KW_ASSERT(d != NULL);
    bool regen = getenv("KW_SCHEMA_REGEN") != NULL;
    int n_cases = 0, n_bad = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".zed") != 0)
            continue;
        char name[256], path[1400];
        snprintf(name, sizeof(name), "%.*s", (int)(nl - 4), de->d_name);
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        size_t len = 0;
        char *text = read_file(path, &len);
        if (!text) {
            fprintf(stderr, "  cannot read %s\n", path);
            n_bad++;
            continue;
        }
        kw_buf_t out;
        kw_buf_init(&out);
        int rc = compile_to_text(text, len, &out);
        kw_free(text);
        n_cases++;
        snprintf(path, sizeof(path), "%s/%s.expected", dir, name);
        if (rc != expected_code(name)) {
            fprintf(stderr, "  %s: code %s, want %s: %s", name, kw_err_name(rc),
                    kw_err_name(expected_code(name)), out.ptr ? out.ptr : "");
            n_bad++;
        }
        if (regen) {
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(out.ptr ? out.ptr : "", 1, out.len, f);
                fclose(f);
            }
        } else {
            size_t elen = 0;
            char *want = read_file(path, &elen);
            if (!want || elen != out.len || memcmp(want, out.ptr ? out.ptr : "", elen) != 0) {
                fprintf(stderr, "  %s: dump differs from %s\n--- got\n%s--- want\n%s", name, path,
                        out.ptr ? out.ptr : "", want ? want : "(missing)\n");
                n_bad++;
            }
            kw_free(want);
        }
        kw_buf_free(&out);
    }
    closedir(d);
    KW_ASSERT(n_cases >= 40);
    KW_ASSERT_EQ(n_bad, 0);
}

/* Extracts the `schema:` block scalar of a SpiceDB validation YAML file without a YAML
 * parser: the lines after `schema: |` / `schema: >-` indented deeper than the key. Folded
 * scalars (`>`) join lines of equal indentation with a space in YAML, and a line break can
 * end a statement (tag-kw-schema-semicolon), so keeping the newlines is only right for
 * the corpus because its folded schemas indent every statement under its `{` (YAML keeps
 * the breaks around more-indented lines); the vfile tests read the same files with
 * libyaml's folding. */
static char *extract_schema(const char *yaml, size_t *len)
{
    const char *p = strstr(yaml, "\nschema:");
    if (!p && strncmp(yaml, "schema:", 7) == 0)
        p = yaml;
    else if (p)
        p++;
    if (!p)
        return NULL;
    p = strchr(p, '\n');
    if (!p)
        return NULL;
    p++;
    size_t cap = strlen(p) + 1, n = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > 0 && p[0] != ' ' && p[0] != '\t')
            break; /* the next top-level key */
        size_t skip = ll >= 2 ? 2 : ll;
        memcpy(out + n, p + skip, ll - skip);
        n += ll - skip;
        out[n++] = '\n';
        if (!eol)
            break;
        p = eol + 1;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

/* Compiles the schema of every *.yaml in the corpus folder `dir`; counts the files whose
 * result is not want_rc. */
static int for_each_conformance(const char *dir, int want_rc, int *n_files)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "  cannot open %s\n", dir);
        return 1;
    }
    int bad = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 6 || strcmp(de->d_name + nl - 5, ".yaml") != 0)
            continue;
        char path[1400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        size_t ylen = 0, slen = 0;
        char *yaml = read_file(path, &ylen);
        char *schema = yaml ? extract_schema(yaml, &slen) : NULL;
        kw_free(yaml);
        if (!schema) {
            fprintf(stderr, "  %s: no schema block\n", path);
            bad++;
            continue;
        }
        kw_schema_t *s = NULL;
        kw_diag_t diag;
        int rc = kw_schema_compile((kw_str_t){schema, slen}, &s, &diag);
        if (rc != want_rc) {
            fprintf(stderr, "  %s: %s %u:%u: %s\n", de->d_name, kw_err_name(rc), diag.line,
                    diag.col, diag.msg);
            bad++;
        }
        if (rc == KW_OK)
            kw_schema_free(s);
        free(schema);
        (*n_files)++;
    }
    closedir(d);
    return bad;
}

#define NO_CORPUS "KW_CONFORMANCE_DIR is not set (the SpiceDB corpus is an optional input)"

KW_TEST(schema_corpus_schemas_compile)
{
    char dir[1024];
    int n = 0;
    if (!corpus_dir(dir, sizeof(dir), "spicedb"))
        KW_SKIP(NO_CORPUS);
    KW_ASSERT_EQ(for_each_conformance(dir, KW_OK, &n), 0);
    KW_ASSERT(n >= 20);
    n = 0;
    KW_ASSERT(corpus_dir(dir, sizeof(dir), "spicedb-exhaustive"));
    KW_ASSERT_EQ(for_each_conformance(dir, KW_OK, &n), 0);
    KW_ASSERT(n >= 20);
}

/* Every schema of the caveat and expiration corpus compiles (caveats, `use expiration`,
 * `with` traits). */
KW_TEST(schema_corpus_caveat_schemas_compile)
{
    char dir[1024];
    int n = 0;
    if (!corpus_dir(dir, sizeof(dir), "spicedb-caveats"))
        KW_SKIP(NO_CORPUS);
    KW_ASSERT_EQ(for_each_conformance(dir, KW_OK, &n), 0);
    KW_ASSERT(n >= 20);
}

static kw_schema_t *compile_ok(const char *text)
{
    kw_schema_t *s = NULL;
    kw_diag_t d;
    int rc = kw_schema_compile(kw_str_c(text), &s, &d);
    if (rc != KW_OK) {
        fprintf(stderr, "  unexpected %s %u:%u: %s\n", kw_err_name(rc), d.line, d.col, d.msg);
        return NULL;
    }
    return s;
}

static const char *const k_arrows =
    "definition user {}\n"
    "definition team { relation member: user\n permission view = member; }\n"
    "definition folder { relation viewer: user; }\n"
    "definition doc {\n"
    "  relation parent: team | folder\n"
    "  relation viewer: user | user:* | team#member\n"
    "  permission view = parent->view + parent.all(viewer) + viewer\n"
    "}\n";

KW_TEST(schema_ir_indices_and_targets)
{
    kw_schema_t *s = compile_ok(k_arrows);
    KW_ASSERT(s != NULL);
    KW_ASSERT_EQ(s->n_types, 4);
    uint16_t user = kw_schema_type_index(s, KW_STR("user"));
    uint16_t team = kw_schema_type_index(s, KW_STR("team"));
    uint16_t folder = kw_schema_type_index(s, KW_STR("folder"));
    uint16_t doc = kw_schema_type_index(s, KW_STR("doc"));
    KW_ASSERT_EQ(user, 0);
    KW_ASSERT_EQ(team, 1);
    KW_ASSERT_EQ(folder, 2);
    KW_ASSERT_EQ(doc, 3);
    KW_ASSERT_EQ(kw_schema_type_index(s, KW_STR("usr")), KW_TYPE_NONE);
    KW_ASSERT_EQ(kw_schema_type_index(s, KW_STR("")), KW_TYPE_NONE);
    KW_ASSERT_EQ(kw_schema_rel_index(s, doc, KW_STR("parent")), 0);
    KW_ASSERT_EQ(kw_schema_rel_index(s, doc, KW_STR("viewer")), 1);
    KW_ASSERT_EQ(kw_schema_rel_index(s, doc, KW_STR("view")), 2);
    KW_ASSERT_EQ(kw_schema_rel_index(s, doc, KW_STR("member")), KW_REL_NONE);
    KW_ASSERT_EQ(kw_schema_rel_index(s, team, KW_STR("member")), 0);
    KW_ASSERT_EQ(kw_schema_rel_index(s, 999, KW_STR("member")), KW_REL_NONE);
    KW_ASSERT_EQ(kw_schema_rel_index(s, KW_TYPE_NONE, KW_STR("member")), KW_REL_NONE);

    const kw_relation_t *view = &s->types[doc].rels[2];
    KW_ASSERT(view->is_permission);
    KW_ASSERT_EQ(view->expr->kind, KW_EXPR_UNION);
    KW_ASSERT_EQ(view->expr->n_children, 3);
    const kw_expr_t *arrow = view->expr->children[0];
    KW_ASSERT_EQ(arrow->kind, KW_EXPR_ARROW);
    KW_ASSERT_EQ(arrow->rel, 0);
    KW_ASSERT(kw_str_eq_c(arrow->target, "view"));
    KW_ASSERT_EQ(arrow->target_by_type[user], KW_REL_NONE);
    KW_ASSERT_EQ(arrow->target_by_type[team], 1);
    KW_ASSERT_EQ(arrow->target_by_type[folder], KW_REL_NONE);
    KW_ASSERT_EQ(arrow->target_by_type[doc], KW_REL_NONE); /* doc is not a subject type of parent */
    const kw_expr_t *all = view->expr->children[1];
    KW_ASSERT_EQ(all->kind, KW_EXPR_ALL);
    KW_ASSERT_EQ(all->target_by_type[folder], 0);
    KW_ASSERT_EQ(all->target_by_type[team], KW_REL_NONE);
    KW_ASSERT_EQ(all->target_by_type[doc], KW_REL_NONE);
    const kw_expr_t *ref = view->expr->children[2];
    KW_ASSERT_EQ(ref->kind, KW_EXPR_REF);
    KW_ASSERT_EQ(ref->rel, 1);
    KW_ASSERT_EQ(ref->line, 8);
    KW_ASSERT_EQ(ref->col, 57);

    /* allowed subjects */
    const kw_relation_t *viewer = &s->types[doc].rels[1];
    KW_ASSERT_EQ(viewer->n_allowed, 3);
    KW_ASSERT_EQ(viewer->allowed[1].type, user);
    KW_ASSERT(viewer->allowed[1].wildcard);
    KW_ASSERT_EQ(viewer->allowed[2].relation, 0);
    KW_ASSERT(kw_schema_allows(s, doc, 1, user, KW_REL_NONE, false));
    KW_ASSERT(kw_schema_allows(s, doc, 1, user, KW_REL_NONE, true));
    KW_ASSERT(kw_schema_allows(s, doc, 1, team, 0, false));
    KW_ASSERT(!kw_schema_allows(s, doc, 1, team, KW_REL_NONE, false));
    KW_ASSERT(!kw_schema_allows(s, doc, 1, team, 1, false));
    KW_ASSERT(!kw_schema_allows(s, doc, 1, team, 0, true));
    KW_ASSERT(!kw_schema_allows(s, doc, 0, user, KW_REL_NONE, false));
    KW_ASSERT(kw_schema_allows(s, doc, 0, folder, KW_REL_NONE, false));
    KW_ASSERT(!kw_schema_allows(s, doc, 0, folder, KW_REL_NONE, true));
    KW_ASSERT(!kw_schema_allows(s, doc, 2, user, KW_REL_NONE, false)); /* a permission */
    KW_ASSERT(!kw_schema_allows(s, doc, 9, user, KW_REL_NONE, false));
    KW_ASSERT(!kw_schema_allows(s, 77, 0, user, KW_REL_NONE, false));
    KW_ASSERT(!kw_schema_allows(s, doc, 0, 77, KW_REL_NONE, false));

    /* names point into the schema's own copy of the text */
    KW_ASSERT(s->text.len == strlen(k_arrows));
    KW_ASSERT(s->types[doc].name.ptr >= s->text.ptr &&
              s->types[doc].name.ptr < s->text.ptr + s->text.len);
    kw_schema_free(s);
}

KW_TEST(schema_precedence_structure)
{
    kw_schema_t *s = compile_ok("definition user {}\n"
                                "definition ddd { relation aaa: user\n relation bbb: user\n"
                                " relation ccc: user\n relation eee: user\n"
                                " permission ppp = aaa - bbb & ccc + eee - aaa\n}");
    KW_ASSERT(s != NULL);
    const kw_expr_t *p = s->types[1].rels[4].expr;
    /* ((a - (b & (c + e))) - a) */
    KW_ASSERT_EQ(p->kind, KW_EXPR_EXCLUDE);
    KW_ASSERT_EQ(p->n_children, 2);
    KW_ASSERT_EQ(p->children[1]->kind, KW_EXPR_REF);
    KW_ASSERT_EQ(p->children[1]->rel, 0);
    const kw_expr_t *inner = p->children[0];
    KW_ASSERT_EQ(inner->kind, KW_EXPR_EXCLUDE);
    KW_ASSERT_EQ(inner->children[0]->rel, 0);
    const kw_expr_t *and = inner->children[1];
    KW_ASSERT_EQ(and->kind, KW_EXPR_INTERSECT);
    KW_ASSERT_EQ(and->n_children, 2);
    KW_ASSERT_EQ(and->children[0]->rel, 1);
    KW_ASSERT_EQ(and->children[1]->kind, KW_EXPR_UNION);
    KW_ASSERT_EQ(and->children[1]->n_children, 2);
    KW_ASSERT_EQ(and->children[1]->children[0]->rel, 2);
    KW_ASSERT_EQ(and->children[1]->children[1]->rel, 3);
    kw_schema_free(s);
}

/* Check evaluates an intersection cheapest child first (tag-kw-check-order); the
 * expression itself keeps its source order (Expand, the schema text). */
KW_TEST(schema_check_order_cheapest_first)
{
    kw_schema_t *s =
        compile_ok("definition user {}\n"
                   "definition account { relation admin: user\n"
                   " relation member: user\n permission gate = admin + member\n}\n"
                   "definition key { relation account: account\n"
                   " relation owner: user\n relation editor: user\n"
                   " relation parent: key\n permission gate = account->gate\n"
                   " permission read = (owner + editor + parent->read) & gate & owner\n"
                   " permission plain = owner & editor & gate\n}");
    KW_ASSERT(s != NULL);
    const kw_type_t *key = &s->types[2];
    const kw_expr_t *read = key->rels[5].expr, *plain = key->rels[6].expr;
    KW_ASSERT_EQ(read->kind, KW_EXPR_INTERSECT);
    KW_ASSERT_EQ(read->n_children, 3);
    KW_ASSERT_EQ(read->children[0]->kind, KW_EXPR_UNION); /* source order kept */
    KW_ASSERT(read->check_order != NULL);
    /* owner (a relation of the key: 1), gate (an arrow to a union of two: 11), then the
     * union with the recursive arrow */
    KW_ASSERT_EQ(read->check_order[0], 2);
    KW_ASSERT_EQ(read->check_order[1], 1);
    KW_ASSERT_EQ(read->check_order[2], 0);
    KW_ASSERT(plain->check_order == NULL); /* already cheapest first */
    kw_schema_free(s);
}

KW_TEST(schema_doc_comments)
{
    kw_schema_t *s = compile_ok("/** file */\n/** the user */\ndefinition user {}\n"
                                "definition doc {\n /** r */ relation rrr: user\n"
                                " relation qqq: user\n /** p */\n permission ppp = rrr\n}");
    KW_ASSERT(s != NULL);
    KW_ASSERT(kw_str_eq_c(s->types[0].doc, "/** the user */"));
    KW_ASSERT_EQ(s->types[1].doc.len, 0);
    KW_ASSERT(kw_str_eq_c(s->types[1].rels[0].doc, "/** r */"));
    KW_ASSERT_EQ(s->types[1].rels[1].doc.len, 0);
    KW_ASSERT(kw_str_eq_c(s->types[1].rels[2].doc, "/** p */"));
    kw_schema_free(s);
}

KW_TEST(schema_agentex_compiles)
{
    char path[1100];
    fixtures_dir(path, sizeof(path));
    strncat(path, "/agentex.zed", sizeof(path) - strlen(path) - 1);
    size_t len = 0;
    char *text = read_file(path, &len);
    KW_ASSERT(text != NULL);
    kw_schema_t *s = NULL;
    kw_diag_t d;
    int rc = kw_schema_compile((kw_str_t){text, len}, &s, &d);
    kw_free(text);
    KW_ASSERT_EQ(rc, KW_OK);
    uint16_t key = kw_schema_type_index(s, KW_STR("agent_api_key"));
    KW_ASSERT(key != KW_TYPE_NONE);
    uint16_t read = kw_schema_rel_index(s, key, KW_STR("read"));
    KW_ASSERT(read != KW_REL_NONE);
    KW_ASSERT(s->types[key].rels[read].is_permission);
    KW_ASSERT_EQ(s->types[key].rels[read].expr->kind, KW_EXPR_INTERSECT);
    KW_ASSERT_EQ(s->types[key].rels[read].expr->n_children, 3);
    kw_schema_free(s);
}

/* Every allocation of a full compile fails once, in turn: KW_ENOMEM each time, never a
 * crash or a leak (LeakSanitizer checks the latter), then a clean success. */
KW_TEST(schema_fault_injection)
{
    char path[1100];
    fixtures_dir(path, sizeof(path));
    strncat(path, "/agentex.zed", sizeof(path) - strlen(path) - 1);
    size_t len = 0;
    char *text = read_file(path, &len);
    KW_ASSERT(text != NULL);
    long n;
    int failures = 0;
    for (n = 1; n < 100000; n++) {
        kw_schema_t *s = NULL;
        kw_diag_t d;
        kw_fault_arm(n);
        int rc = kw_schema_compile((kw_str_t){text, len}, &s, &d);
        bool fired = kw_fault_fired();
        kw_fault_arm(0);
        if (!fired) {
            if (rc != KW_OK)
                failures++;
            kw_schema_free(s);
            break;
        }
        if (rc != KW_ENOMEM) {
            fprintf(stderr, "  allocation %ld: got %s\n", n, kw_err_name(rc));
            failures++;
            if (rc == KW_OK)
                kw_schema_free(s);
        }
    }
    kw_free(text);
    KW_ASSERT_EQ(failures, 0);
    KW_ASSERT(n > 3 && n < 100000);
}

static int compile_rc(const char *text, size_t len, kw_diag_t *d)
{
    kw_schema_t *s = NULL;
    int rc = kw_schema_compile((kw_str_t){text, len}, &s, d);
    if (rc == KW_OK)
        kw_schema_free(s);
    return rc;
}

KW_TEST(schema_limits_no_stack_overflow)
{
    /* 100k open parentheses: a clear error, not a crash. */
    size_t n = 100000;
    const char *head = "definition uuu { relation aaa: uuu\n permission ppp = ";
    size_t hl = strlen(head);
    char *text = malloc(hl + 4 * n + 8);
    KW_ASSERT(text != NULL);
    memcpy(text, head, hl);
    memset(text + hl, '(', n);
    kw_diag_t d;
    int rc = compile_rc(text, hl + n, &d);
    KW_ASSERT_EQ(rc, KW_ELIMIT);
    KW_ASSERT_EQ(d.line, 2);
    /* A long left-nested exclusion chain: the tree depth is capped too. */
    size_t len = hl;
    for (size_t i = 0; i < 20000; i++) {
        memcpy(text + len, "aaa-", 4);
        len += 4;
    }
    memcpy(text + len, "aaa\n}", 5);
    len += 5;
    rc = compile_rc(text, len, &d);
    KW_ASSERT_EQ(rc, KW_ELIMIT);
    /* A long flat union is fine (one n-ary node). */
    len = hl;
    for (size_t i = 0; i < 20000; i++) {
        memcpy(text + len, "aaa+", 4);
        len += 4;
    }
    memcpy(text + len, "aaa\n}", 5);
    len += 5;
    rc = compile_rc(text, len, &d);
    KW_ASSERT_EQ(rc, KW_OK);
    kw_free(text);

    /* Arrows x definitions is capped, so target_by_type memory stays bounded. */
    kw_buf_t b;
    kw_buf_init(&b);
    kw_buf_puts(&b, "definition ttt { relation xxx: ttt\n permission ppp = xxx");
    for (int i = 0; i < 8200; i++)
        kw_buf_puts(&b, " + xxx->xxx");
    kw_buf_puts(&b, "\n}\n");
    for (int i = 0; i < 4095; i++)
        kw_buf_printf(&b, "definition ttt%d {}\n", i);
    KW_ASSERT(!b.failed);
    rc = compile_rc(b.ptr, b.len, &d);
    kw_buf_free(&b);
    KW_ASSERT_EQ(rc, KW_ELIMIT);
    KW_ASSERT_EQ(d.line, 2);

    /* Over the byte limit. */
    size_t big = KW_MAX_SCHEMA_BYTES + 1;
    char *huge = malloc(big);
    KW_ASSERT(huge != NULL);
    memset(huge, ' ', big);
    rc = compile_rc(huge, big, &d);
    free(huge);
    KW_ASSERT_EQ(rc, KW_ETOOLARGE);
}

KW_TEST(schema_misc_inputs)
{
    kw_diag_t d;
    kw_schema_free(NULL);
    KW_ASSERT_EQ(compile_rc(NULL, 0, &d), KW_OK);
    KW_ASSERT_EQ(compile_rc("", 0, NULL), KW_OK);
    KW_ASSERT_EQ(compile_rc("definition user {", 17, NULL), KW_ESCHEMA);
    /* Embedded NUL bytes are rejected, not treated as an end. */
    KW_ASSERT_EQ(compile_rc("definition user {}\0definition x {}", 34, &d), KW_ESCHEMA);
    KW_ASSERT_EQ(d.line, 1);
    KW_ASSERT_EQ(d.col, 19);
    KW_ASSERT_STR_EQ(d.msg, "unexpected byte 0x00");
    kw_schema_t *s = NULL;
    KW_ASSERT_EQ(kw_schema_compile(KW_STR("definition xxx {}"), NULL, &d), KW_EINVAL);
    KW_ASSERT_EQ(kw_schema_compile(KW_STR("definition xxx {}"), &s, &d), KW_OK);
    KW_ASSERT_EQ(kw_schema_type_index(s, KW_STR("xxx")), 0);
    KW_ASSERT_EQ(kw_schema_rel_index(s, 0, KW_STR("xxx")), KW_REL_NONE);
    kw_schema_free(s);
    KW_ASSERT_EQ(kw_schema_type_index(NULL, KW_STR("xxx")), KW_TYPE_NONE);
}

/* Many definitions and relations: the hash tables resolve every one of them. */
KW_TEST(schema_many_names)
{
    kw_buf_t b;
    kw_buf_init(&b);
    for (int t = 0; t < 300; t++) {
        kw_buf_printf(&b, "definition ns%d/type_%d {\n", t % 7, t);
        for (int r = 0; r < 20; r++)
            kw_buf_printf(&b, "  relation rel_%d: ns%d/type_%d\n", r, t % 7, t);
        kw_buf_printf(&b, "  permission all_of_them = rel_0 + rel_19 + rel_0->rel_3\n}\n");
    }
    KW_ASSERT(!b.failed);
    kw_schema_t *s = NULL;
    kw_diag_t d;
    int rc = kw_schema_compile((kw_str_t){b.ptr, b.len}, &s, &d);
    kw_buf_free(&b);
    KW_ASSERT_EQ(rc, KW_OK);
    KW_ASSERT_EQ(s->n_types, 300);
    int bad = 0;
    for (int t = 0; t < 300; t++) {
        char name[64];
        snprintf(name, sizeof(name), "ns%d/type_%d", t % 7, t);
        if (kw_schema_type_index(s, kw_str_c(name)) != t)
            bad++;
        for (int r = 0; r < 20; r++) {
            snprintf(name, sizeof(name), "rel_%d", r);
            if (kw_schema_rel_index(s, (uint16_t)t, kw_str_c(name)) != r)
                bad++;
        }
        if (kw_schema_rel_index(s, (uint16_t)t, KW_STR("all_of_them")) != 20)
            bad++;
    }
    kw_schema_free(s);
    KW_ASSERT_EQ(bad, 0);
}

/* Caveats and traits in the IR: the caveat list, lookups, trait-exact allows, and the
 * compiled program evaluating through the CEL contract. */
KW_TEST(schema_caveat_ir)
{
    kw_schema_t *s = compile_ok("use expiration\n"
                                "caveat only_on(day string) {\n  day == 'tuesday'\n}\n"
                                "caveat big(n int, limit int) { n > limit }\n"
                                "definition user {}\n"
                                "definition group { relation member: user; }\n"
                                "definition doc {\n"
                                "  relation viewer: user | user with only_on | user:* with big"
                                " | group#member with big and expiration | user with expiration\n"
                                "}\n");
    KW_ASSERT(s != NULL);
    KW_ASSERT(s->use_expiration);
    KW_ASSERT_EQ(s->n_caveats, 2);
    KW_ASSERT(kw_str_eq_c(s->caveats[0].name, "only_on"));
    KW_ASSERT_EQ(s->caveats[0].line, 2);
    KW_ASSERT_EQ(s->caveats[0].col, 8);
    KW_ASSERT_EQ(s->caveats[0].expr_line, 3);
    KW_ASSERT_EQ(s->caveats[0].expr_col, 3);
    KW_ASSERT(kw_str_eq_c(s->caveats[0].expr, "day == 'tuesday'"));
    KW_ASSERT_EQ(s->caveats[1].n_params, 2);
    KW_ASSERT(kw_str_eq_c(s->caveats[1].params[1].name, "limit"));
    KW_ASSERT(kw_str_eq_c(s->caveats[1].params[1].type, "int"));
    KW_ASSERT_EQ(kw_schema_caveat_index(s, KW_STR("big")), 1);
    KW_ASSERT_EQ(kw_schema_caveat_index(s, KW_STR("nope")), KW_CAVEAT_NONE);
    uint16_t user = kw_schema_type_index(s, KW_STR("user"));
    uint16_t group = kw_schema_type_index(s, KW_STR("group"));
    uint16_t doc = kw_schema_type_index(s, KW_STR("doc"));
    uint16_t viewer = kw_schema_rel_index(s, doc, KW_STR("viewer"));
    uint16_t member = kw_schema_rel_index(s, group, KW_STR("member"));
    const kw_relation_t *r = &s->types[doc].rels[viewer];
    KW_ASSERT_EQ(r->n_allowed, 5);
    KW_ASSERT_EQ(r->allowed[0].caveat, KW_CAVEAT_NONE);
    KW_ASSERT(!r->allowed[0].expiration);
    KW_ASSERT_EQ(r->allowed[1].caveat, 0);
    KW_ASSERT(r->allowed[2].wildcard && r->allowed[2].caveat == 1);
    KW_ASSERT(r->allowed[3].relation == member && r->allowed[3].caveat == 1 &&
              r->allowed[3].expiration);
    KW_ASSERT(r->allowed[4].caveat == KW_CAVEAT_NONE && r->allowed[4].expiration);
    /* exact trait matching */
    KW_ASSERT(
        kw_schema_allows_traits(s, doc, viewer, user, KW_REL_NONE, false, KW_CAVEAT_NONE, false));
    KW_ASSERT(kw_schema_allows_traits(s, doc, viewer, user, KW_REL_NONE, false, 0, false));
    KW_ASSERT(!kw_schema_allows_traits(s, doc, viewer, user, KW_REL_NONE, false, 1, false));
    KW_ASSERT(!kw_schema_allows_traits(s, doc, viewer, user, KW_REL_NONE, false, 0, true));
    KW_ASSERT(
        kw_schema_allows_traits(s, doc, viewer, user, KW_REL_NONE, false, KW_CAVEAT_NONE, true));
    KW_ASSERT(kw_schema_allows_traits(s, doc, viewer, user, KW_REL_NONE, true, 1, false));
    KW_ASSERT(
        !kw_schema_allows_traits(s, doc, viewer, user, KW_REL_NONE, true, KW_CAVEAT_NONE, false));
    KW_ASSERT(kw_schema_allows_traits(s, doc, viewer, group, member, false, 1, true));
    KW_ASSERT(!kw_schema_allows_traits(s, doc, viewer, group, member, false, 1, false));
    /* kw_schema_allows ignores traits */
    KW_ASSERT(kw_schema_allows(s, doc, viewer, user, KW_REL_NONE, true));
    KW_ASSERT(kw_schema_allows(s, doc, viewer, group, member, false));
    /* the program evaluates with a context */
    const kw_cel_program_t *prog = s->caveats[1].program;
    KW_ASSERT(prog != NULL);
    kw_cel_ctx_t *c = NULL;
    kw_diag_t d;
    KW_ASSERT_EQ(kw_cel_ctx_bind(prog, KW_STR("{\"n\": 5}"), &c, &d), KW_OK);
    kw_cel_result_t res;
    kw_buf_t missing;
    kw_buf_init(&missing);
    KW_ASSERT_EQ(kw_cel_eval(prog, c, NULL, &res, &missing, &d), KW_OK);
    KW_ASSERT_EQ(res, KW_CEL_PARTIAL);
    KW_ASSERT(missing.ptr && strcmp(missing.ptr, "limit") == 0);
    kw_buf_free(&missing);
    kw_cel_ctx_free(c);
    kw_buf_t dump;
    kw_buf_init(&dump);
    kw_schema_dump(s, &dump);
    KW_ASSERT(dump.ptr && strstr(dump.ptr, "group#member with big and expiration | user with "
                                           "expiration\n") != NULL);
    kw_buf_free(&dump);
    kw_schema_free(s);
}

/* Every allocation of a caveated compile fails once: KW_ENOMEM, nothing leaked (the CEL
 * programs compiled before the failure are freed too). */
KW_TEST(schema_caveat_oom)
{
    const char *text =
        "caveat a(x int) { x == 1 }\ncaveat b(l list<string>) { 'q' in l }\n"
        "definition user {}\ndefinition doc { relation vvv: user with a | user with b; }\n";
    for (long i = 1; i < 2000; i++) {
        kw_schema_t *s = NULL;
        kw_diag_t d;
        kw_fault_arm(i);
        int rc = kw_schema_compile(kw_str_c(text), &s, &d);
        bool fired = kw_fault_fired();
        kw_fault_arm(0);
        if (rc == KW_OK)
            kw_schema_free(s);
        if (!fired) {
            KW_ASSERT_EQ(rc, KW_OK);
            return;
        }
        if (rc != KW_ENOMEM)
            KW_FAIL_("allocation %ld: %s %s", i, kw_err_name(rc), d.msg);
    }
    KW_FAIL_("the compile never finished without a fault");
}
