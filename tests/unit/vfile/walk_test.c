/*
 * tests/unit/vfile/walk_test.c - whole validation files through kw_vfile_run
 * (src/vfile/walk.c): the results delivered, in order, and the totals.
 */
#include "kw_test.h"

#include "vfile/vfile.h"

#include <dirent.h>
#include <unistd.h>

/* Every result of a run, one line each: "<doc> <KIND> <pass|FAIL> <message>". */
typedef struct rec {
    char text[8192];
    size_t len;
    size_t n;
} rec_t;

static const char *kind_name(kw_vfile_kind_t k)
{
    switch (k) {
    case KW_VFILE_ASSERT_TRUE:
        return "TRUE";
    case KW_VFILE_ASSERT_FALSE:
        return "FALSE";
    case KW_VFILE_EXPECTED:
        return "EXPECTED";
    case KW_VFILE_ERROR:
        return "ERROR";
    case KW_VFILE_UNSUPPORTED:
        return "UNSUPPORTED";
    case KW_VFILE_SYNTAX:
        return "SYNTAX";
    case KW_VFILE_ASSERT_CAVEATED:
        return "CAVEATED";
    }
    return "?";
}

static void on_rec(const kw_vfile_result_t *r, void *ud)
{
    rec_t *rec = ud;
    int n = snprintf(rec->text + rec->len, sizeof(rec->text) - rec->len, "%zu %s %s %s\n", r->doc,
                     kind_name(r->kind), r->passed ? "pass" : "FAIL", r->message);
    if (n > 0 && (size_t)n < sizeof(rec->text) - rec->len)
        rec->len += (size_t)n;
    rec->n++;
}

static int run(const char *yaml, rec_t *rec, kw_vfile_stats_t *st)
{
    memset(rec, 0, sizeof(*rec));
    kw_diag_t d;
    kw_diag_clear(&d);
    return kw_vfile_run(kw_str_c(yaml), NULL, on_rec, rec, st, &d);
}

static const char k_doc_schema[] = "schema: |\n"
                                   "  definition user {}\n"
                                   "  definition doc {\n"
                                   "    relation vie: user | user:*\n"
                                   "    relation ban: user\n"
                                   "    permission per = vie - ban\n"
                                   "  }\n";

KW_TEST(walk_assertions_and_expected_relations)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "%s"
             "relationships: |\n"
             "  doc:a#vie@user:*\n"
             "  // a comment\n"
             "\n"
             "  doc:a#ban@user:x\n"
             "assertions:\n"
             "  assertTrue:\n"
             "    - doc:a#per@user:y\n"
             "    - doc:a#per@user:x\n"
             "  assertFalse:\n"
             "    - doc:a#per@user:x\n"
             "validation:\n"
             "  doc:a#per:\n"
             "    - \"[user:* - {user:x}] is <doc:a#vie>\"\n"
             "  doc:a#ban:\n"
             "    - \"[user:z] is <doc:a#ban>\"\n",
             k_doc_schema);
    rec_t rec;
    kw_vfile_stats_t st;
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(rec.text,
                     "1 TRUE pass assertTrue passed: doc:a#per@user:y\n"
                     "1 TRUE FAIL assertTrue failed: doc:a#per@user:x (the check answered no)\n"
                     "1 FALSE pass assertFalse passed: doc:a#per@user:x\n"
                     "1 EXPECTED pass validation of doc:a#per matched\n"
                     "1 EXPECTED FAIL validation failed for doc:a#ban: expected subject [user:z] "
                     "was not found\n"
                     "1 EXPECTED FAIL validation failed for doc:a#ban: found subject [user:x] "
                     "which is not listed\n");
    KW_ASSERT_EQ(st.n_docs, 1);
    KW_ASSERT_EQ(st.n_checks, 5);
    KW_ASSERT_EQ(st.n_expected, 2);
    KW_ASSERT_EQ(st.n_failed, 2); /* one assertion, one expected entry (two subjects) */
    KW_ASSERT(!st.unsupported);
}

/* The structured fields of an expected-relations difference. */
typedef struct diff {
    int n;
    bool missing;
    char subject[64];
    char what[64];
    unsigned long line;
} diff_t;

static void on_diff(const kw_vfile_result_t *r, void *ud)
{
    diff_t *d = ud;
    if (r->kind != KW_VFILE_EXPECTED || r->passed)
        return;
    d->n++;
    d->missing = r->missing;
    d->line = r->line;
    snprintf(d->subject, sizeof(d->subject), "%.*s", KW_STR_FMT(r->subject));
    snprintf(d->what, sizeof(d->what), "%.*s", KW_STR_FMT(r->what));
}

KW_TEST(walk_expected_difference_fields)
{
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "%s"
             "relationships: |\n"
             "  doc:a#ban@user:x\n"
             "validation:\n"
             "  doc:a#ban:\n"
             "    - \"[user:x] is <doc:a#ban>\"\n"
             "    - \"[user:* - {user:q}]\"\n",
             k_doc_schema);
    diff_t d = {0};
    kw_vfile_stats_t st;
    KW_ASSERT_EQ(kw_vfile_run(kw_str_c(yaml), NULL, on_diff, &d, &st, NULL), KW_OK);
    KW_ASSERT_EQ(d.n, 1);
    KW_ASSERT(d.missing);
    KW_ASSERT_STR_EQ(d.subject, "user:* - {user:q}");
    KW_ASSERT_STR_EQ(d.what, "doc:a#ban");
    KW_ASSERT_EQ(d.line, 11);
}

KW_TEST(walk_input_errors)
{
    rec_t rec;
    kw_vfile_stats_t st;
    KW_ASSERT_EQ(run("schema: |\n  definition user {}\nfoo: 1\n", &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(rec.text, "1 ERROR FAIL line 3: unknown key \"foo\" (expected schema, "
                               "schemaFile, relationships, assertions or validation)\n");
    KW_ASSERT_EQ(st.n_failed, 1);

    KW_ASSERT_EQ(run("relationships: \"\"\n", &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(rec.text,
                     "1 ERROR FAIL the document has no schema (a `schema: |` text block)\n");

    KW_ASSERT_EQ(run("schema: |\n  definition user {\n", &rec, &st), KW_OK);
    KW_ASSERT(strncmp(rec.text, "1 ERROR FAIL schema:2:1: ", 25) == 0);

    char yaml[1024];
    snprintf(yaml, sizeof(yaml), "%srelationships: |\n  doc:a#vie@user:x\n  doc:a#zzz@user:x\n",
             k_doc_schema);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    KW_ASSERT(strncmp(rec.text, "1 ERROR FAIL relationship 2 (\"doc:a#zzz@user:x\"): ", 49) == 0);
    KW_ASSERT_EQ(rec.n, 1);
    KW_ASSERT_EQ(st.n_checks, 0);

    /* written twice: refused, as SpiceDB refuses it */
    snprintf(yaml, sizeof(yaml), "%srelationships: |\n  doc:a#vie@user:x\n  doc:a#vie@user:x#...\n",
             k_doc_schema);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(rec.text, "1 ERROR FAIL relationship 2 (\"doc:a#vie@user:x#...\"): found "
                               "repeated relationship\n");
}

KW_TEST(walk_syntax_error_stops)
{
    rec_t rec;
    kw_vfile_stats_t st;
    KW_ASSERT_EQ(run("schema: |\n  definition user {}\n---\nschema: [unclosed\n", &rec, &st),
                 KW_OK);
    KW_ASSERT_STR_EQ(rec.text, "2 SYNTAX FAIL YAML error: did not find expected ',' or ']' while "
                               "parsing a flow sequence\n");
    KW_ASSERT_EQ(st.n_docs, 1);
    KW_ASSERT_EQ(st.n_failed, 1);
}

/* Assertions with a request context and assertCaveated, on a schema without caveats: the
 * context is read (and must be a JSON object) but changes no answer, and no answer is
 * conditional. */
KW_TEST(walk_assertion_context_and_caveated)
{
    rec_t rec;
    kw_vfile_stats_t st;
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "%s"
             "relationships: |\n"
             "  doc:a#vie@user:x\n"
             "assertions:\n"
             "  assertTrue:\n"
             "    - 'doc:a#vie@user:x with {\"a\": [1, {\"b\": null}]}'\n"
             "  assertFalse:\n"
             "    - 'doc:a#vie@user:y   with   {}'\n"
             "  assertCaveated:\n"
             "    - 'doc:a#vie@user:x with {\"a\": 1}'\n"
             "    - doc:a#vie@user:y\n",
             k_doc_schema);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(
        rec.text,
        "1 TRUE pass assertTrue passed: doc:a#vie@user:x with {\"a\": [1, {\"b\": null}]}\n"
        "1 FALSE pass assertFalse passed: doc:a#vie@user:y   with   {}\n"
        "1 CAVEATED FAIL assertCaveated failed: doc:a#vie@user:x with {\"a\": 1} (the check "
        "answered yes)\n"
        "1 CAVEATED FAIL assertCaveated failed: doc:a#vie@user:y (the check answered no)\n");
    KW_ASSERT_EQ(st.n_checks, 4);
    KW_ASSERT_EQ(st.n_failed, 2);
    KW_ASSERT(!st.unsupported);
}

KW_TEST(walk_assertion_errors)
{
    rec_t rec;
    kw_vfile_stats_t st;
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "%s"
             "assertions:\n"
             "  assertTrue:\n"
             "    - 'doc:a#vie@user:x with {\"a\": }'\n"
             "    - 'doc:a#vie@user:x with [1]'\n"
             "    - 'doc:a#vie@user:x with'\n"
             "    - doc:a#vie@user:x[cav]\n"
             "    - doc:a#vie@user:x[expiration:2030-01-01T00:00:00Z]\n"
             "  assertSometimes:\n"
             "    - doc:a#vie@user:x\n",
             k_doc_schema);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(
        rec.text,
        "1 ERROR FAIL assertTrue error: doc:a#vie@user:x with {\"a\": }: the context after ` with "
        "` (column 7): invalid caveat context: expected a JSON value, found '}'\n"
        "1 ERROR FAIL assertTrue error: doc:a#vie@user:x with [1]: the context after ` with ` "
        "(column 1): invalid caveat context: expected a JSON object, found '['\n"
        "1 ERROR FAIL assertTrue error: doc:a#vie@user:x with (column 17): unexpected byte 0x20 "
        "after the subject\n"
        "1 ERROR FAIL assertTrue error: doc:a#vie@user:x[cav]: cannot specify a caveat on an "
        "assertion (give the check's context after ` with `)\n"
        "1 ERROR FAIL assertTrue error: doc:a#vie@user:x[expiration:2030-01-01T00:00:00Z]: cannot "
        "specify an expiration on an assertion (give the check's context after ` with `)\n"
        "1 ERROR FAIL line 15: unknown assertion kind \"assertSometimes\" (use assertTrue, "
        "assertFalse or assertCaveated)\n");
    KW_ASSERT_EQ(st.n_failed, 6);
}

/* Caveats and expiry end to end: caveated and expiring relationships (one already
 * expired, which a validation file may hold), assertions with a request context,
 * assertCaveated with the missing parameter named, and expected relations with SpiceDB's
 * `[...]` markers (a caveated subject set makes its members conditional; a conditional
 * exclusion leaves its subject conditional, even when its context would satisfy it: an
 * expansion shows where caveats apply, it evaluates none, as in SpiceDB). */
static const char k_caveat_doc[] =
    "schema: |\n"
    "  use expiration\n"
    "  definition user {}\n"
    "  caveat cav(n int) { n == 1 }\n"
    "  definition team {\n"
    "    relation member: user | user with cav\n"
    "  }\n"
    "  definition doc {\n"
    "    relation vie: user | user with expiration | user:* with cav | team#member with cav\n"
    "    relation ban: user | user with cav\n"
    "    permission per = vie - ban\n"
    "  }\n"
    "relationships: |\n"
    "  team:t#member@user:ann\n"
    "  team:t#member@user:bob[cav]\n"
    "  doc:a#vie@team:t#member[cav]\n"
    "  doc:a#vie@user:carl\n"
    "  doc:a#vie@user:dan\n"
    "  doc:a#ban@user:dan[cav:{\"n\": 1}]\n"
    "  doc:a#vie@user:old[expiration:2001-01-01T00:00:00Z]\n"
    "  doc:a#vie@user:eve[expiration:2300-01-01T00:00:00Z]\n"
    "  doc:e#vie@user:*[cav]\n"
    "  doc:e#ban@user:ann\n"
    "  doc:e#ban@user:bob[cav]\n";

KW_TEST(walk_caveats_and_expiry)
{
    rec_t rec;
    kw_vfile_stats_t st;
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "%s"
             "assertions:\n"
             "  assertTrue:\n"
             "    - 'doc:a#per@user:ann with {\"n\": 1}'\n"
             "    - doc:a#per@user:carl\n"
             "    - doc:a#per@user:eve\n"
             "  assertFalse:\n"
             "    - doc:a#per@user:dan\n"
             "    - doc:a#per@user:old\n"
             "    - 'doc:e#per@user:zed with {\"n\": 2}'\n"
             "  assertCaveated:\n"
             "    - doc:a#per@user:bob\n"
             "    - doc:e#per@user:zed\n"
             "validation:\n"
             "  doc:a#per:\n"
             "    - '[team:t#member[...]] is <doc:a#vie>'\n"
             "    - '[user:ann[...]] is <team:t#member>'\n"
             "    - '[user:bob[...]] is <team:t#member>'\n"
             "    - '[user:carl] is <doc:a#vie>'\n"
             "    - '[user:dan[...]] is <doc:a#vie>'\n"
             "    - '[user:eve] is <doc:a#vie>'\n"
             "  doc:e#per:\n"
             "    - '[user:*[...] - {user:ann, user:bob[...]}] is <doc:e#vie>'\n",
             k_caveat_doc);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    if (st.n_failed != 0)
        fprintf(stderr, "%s", rec.text);
    KW_ASSERT_EQ(st.n_failed, 0);
    KW_ASSERT_EQ(st.n_checks, 10);

    /* the same file with the markers wrong, and an assertion that is only conditional */
    snprintf(yaml, sizeof(yaml),
             "%s"
             "assertions:\n"
             "  assertTrue:\n"
             "    - doc:a#per@user:ann\n"
             "validation:\n"
             "  doc:e#per:\n"
             "    - '[user:* - {user:ann, user:bob}] is <doc:e#vie>'\n",
             k_caveat_doc);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(
        rec.text, "1 TRUE FAIL assertTrue failed: doc:a#per@user:ann (the check answered "
                  "conditional: missing n)\n"
                  "1 EXPECTED FAIL validation failed for doc:e#per: expected subject [user:* - "
                  "{user:ann, user:bob}] was not found\n"
                  "1 EXPECTED FAIL validation failed for doc:e#per: found subject [user:*[...] - "
                  "{user:ann, user:bob[...]}] which is not listed\n");
    KW_ASSERT_EQ(st.n_failed, 2);
}

/* Through an arrow whose tupleset relationship is caveated, everything found is
 * conditional (the expand tree holds caveats on leaves only: vfile reads the tupleset). */
KW_TEST(walk_caveated_arrow_expected_relations)
{
    rec_t rec;
    kw_vfile_stats_t st;
    static const char yaml[] = "schema: |\n"
                               "  definition user {}\n"
                               "  caveat is_one(n int) { n == 1 }\n"
                               "  definition org {\n"
                               "    relation viewer: user\n"
                               "  }\n"
                               "  definition doc {\n"
                               "    relation parent: org with is_one | org\n"
                               "    permission view = parent->viewer\n"
                               "    permission view_all = parent.all(viewer)\n"
                               "  }\n"
                               "relationships: |\n"
                               "  org:one#viewer@user:tom\n"
                               "  org:two#viewer@user:ann\n"
                               "  org:two#viewer@user:tom\n"
                               "  doc:d#parent@org:one[is_one]\n"
                               "  doc:d#parent@org:two\n"
                               "assertions:\n"
                               "  assertTrue:\n"
                               "    - doc:d#view@user:tom\n"
                               "  assertCaveated:\n"
                               "    - doc:d#view_all@user:tom\n"
                               "validation:\n"
                               "  doc:d#view:\n"
                               "    - '[user:ann] is <org:two#viewer>'\n"
                               "    - '[user:tom] is <org:one#viewer>/<org:two#viewer>'\n"
                               "  doc:d#view_all:\n"
                               "    - '[user:tom[...]] is <org:one#viewer>/<org:two#viewer>'\n"
                               "---\n"
                               "schema: |\n"
                               "  definition user {}\n"
                               "  caveat is_one(n int) { n == 1 }\n"
                               "  definition org {\n"
                               "    relation viewer: user\n"
                               "  }\n"
                               "  definition doc {\n"
                               "    relation parent: org with is_one\n"
                               "    permission view = parent->viewer\n"
                               "  }\n"
                               "relationships: |\n"
                               "  org:one#viewer@user:tom\n"
                               "  doc:d#parent@org:one[is_one]\n"
                               "validation:\n"
                               "  doc:d#view:\n"
                               "    - '[user:tom[...]] is <org:one#viewer>'\n";
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    if (st.n_failed != 0)
        fprintf(stderr, "%s", rec.text);
    KW_ASSERT_EQ(st.n_failed, 0);
    KW_ASSERT_EQ(st.n_expected, 3);
}

KW_TEST(walk_caveat_errors_in_relationships)
{
    rec_t rec;
    kw_vfile_stats_t st;
    char yaml[2048];
    /* a caveat the relation does not allow: the engine's message, the file goes on to
     * nothing (the document stops at a relationship that does not load) */
    snprintf(yaml, sizeof(yaml), "%srelationships: |\n  doc:a#vie@user:x[cav]\n", k_doc_schema);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    static const char pre[] = "1 ERROR FAIL relationship 1 (\"doc:a#vie@user:x[cav]\"): ";
    KW_ASSERT(strncmp(rec.text, pre, sizeof(pre) - 1) == 0);
    KW_ASSERT_EQ(st.n_failed, 1);
    KW_ASSERT(!st.unsupported);
    /* a malformed context: the column of the relationship string */
    snprintf(yaml, sizeof(yaml), "%srelationships: |\n  doc:a#vie@user:x[cav:{\"n\" 1}]\n",
             k_doc_schema);
    KW_ASSERT_EQ(run(yaml, &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(rec.text, "1 ERROR FAIL relationship 1 (\"doc:a#vie@user:x[cav:{\"n\" 1}]\"), "
                               "column 27: invalid caveat context: expected ':' after the key, "
                               "found '1'\n");
}

KW_TEST(walk_empty_and_null_documents)
{
    rec_t rec;
    kw_vfile_stats_t st;
    KW_ASSERT_EQ(run("", &rec, &st), KW_OK);
    KW_ASSERT_EQ(st.n_docs, 0);
    KW_ASSERT_EQ(rec.n, 0);
    KW_ASSERT_EQ(run("---\n---\n", &rec, &st), KW_OK);
    KW_ASSERT_EQ(st.n_docs, 2);
    KW_ASSERT_EQ(st.n_failed, 0);
    KW_ASSERT_EQ(rec.n, 0);
}

KW_TEST(walk_schema_file_relative_to_the_file)
{
    char dir[] = "/tmp/kw_vfile_test.XXXXXX";
    KW_ASSERT(mkdtemp(dir) != NULL);
    char zed[128], yaml[128];
    snprintf(zed, sizeof(zed), "%s/s.zed", dir);
    snprintf(yaml, sizeof(yaml), "%s/v.yaml", dir);
    FILE *f = fopen(zed, "w");
    bool ok = f && fputs("definition user {}\ndefinition doc { relation vie: user; }\n", f) >= 0;
    if (f)
        fclose(f);
    f = ok ? fopen(yaml, "w") : NULL;
    ok = f && fputs("schemaFile: s.zed\nrelationships: |\n  doc:a#vie@user:x\n"
                    "assertions:\n  assertTrue:\n    - doc:a#vie@user:x\n",
                    f) >= 0;
    if (f)
        fclose(f);
    rec_t rec = {0};
    kw_vfile_stats_t st;
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = ok ? kw_vfile_run_file(yaml, on_rec, &rec, &st, &d) : KW_EIO;
    unlink(zed);
    unlink(yaml);
    rmdir(dir);
    KW_ASSERT(ok);
    KW_ASSERT_EQ(rc, KW_OK);
    KW_ASSERT_STR_EQ(rec.text, "1 TRUE pass assertTrue passed: doc:a#vie@user:x\n");
    KW_ASSERT_EQ(st.n_failed, 0);

    /* the same text without a path looks for s.zed in the working directory */
    KW_ASSERT_EQ(run("schemaFile: kw-vfile-test-absent.zed\n", &rec, &st), KW_OK);
    KW_ASSERT_STR_EQ(rec.text, "1 ERROR FAIL schemaFile \"kw-vfile-test-absent.zed\": No such "
                               "file or directory\n");
}

KW_TEST(walk_unreadable_file)
{
    rec_t rec = {0};
    kw_vfile_stats_t st;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_vfile_run_file("/nonexistent/kw.yaml", on_rec, &rec, &st, &d), KW_EIO);
    KW_ASSERT_STR_EQ(d.msg, "cannot read: No such file or directory");
    KW_ASSERT_EQ(rec.n, 0);
}

/* Every allocation of a run with one failing assertion fails once: the run never comes
 * back clean (no failure counted), and nothing leaks (LeakSanitizer). */
/* Fails the n-th allocation of a run of yaml for every n until a run allocates less: a
 * file that fails normally must never come out clean. Returns how many runs had a
 * fault, or -1 when one came out clean. */
static int oom_runs(const char *yaml)
{
    int fired = 0;
    for (long n = 1; n < 100000; n++) {
        rec_t rec;
        kw_vfile_stats_t st;
        kw_fault_arm(n);
        int rc = run(yaml, &rec, &st);
        bool hit = kw_fault_fired();
        kw_fault_arm(0);
        if (!hit)
            break;
        fired++;
        if (rc == KW_OK && st.n_failed == 0)
            return -1;
    }
    return fired;
}

KW_TEST(walk_out_of_memory_never_passes)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "%s"
             "relationships: |\n  doc:a#vie@user:x\n"
             "assertions:\n  assertTrue:\n    - doc:a#vie@user:y\n"
             "validation:\n  doc:a#per:\n    - \"[user:x] is <doc:a#vie>\"\n",
             k_doc_schema);
    KW_ASSERT(oom_runs(yaml) > 10);
    /* caveats: a check that is only conditional asserted true, a wrong [...] marker, an
     * arrow through a caveated relationship (each fails normally) */
    snprintf(yaml, sizeof(yaml),
             "%s"
             "assertions:\n"
             "  assertTrue:\n"
             "    - 'doc:a#per@user:ann with {\"n\": 1}'\n"
             "    - doc:a#per@user:bob\n"
             "validation:\n"
             "  doc:e#per:\n"
             "    - '[user:*[...] - {user:ann, user:bob}] is <doc:e#vie>'\n",
             k_caveat_doc);
    KW_ASSERT(oom_runs(yaml) > 10);
    KW_ASSERT(oom_runs("schema: |\n"
                       "  definition user {}\n"
                       "  caveat is_one(n int) { n == 1 }\n"
                       "  definition org {\n"
                       "    relation viewer: user\n"
                       "  }\n"
                       "  definition doc {\n"
                       "    relation parent: org with is_one\n"
                       "    permission view = parent->viewer\n"
                       "  }\n"
                       "relationships: |\n"
                       "  org:one#viewer@user:tom\n"
                       "  doc:d#parent@org:one[is_one]\n"
                       "validation:\n"
                       "  doc:d#view:\n"
                       "    - '[user:tom] is <org:one#viewer>'\n") > 10);
}

/* SpiceDB's own files (the optional corpus, KW_CONFORMANCE_DIR) through the library:
 * spicedb/, spicedb-exhaustive/ and spicedb-caveats/ all pass. */
static void count_failures(const kw_vfile_result_t *r, void *ud)
{
    if (!r->passed)
        (*(int *)ud)++;
}

static int run_corpus_dir(const char *root, const char *sub, bool want_unsupported, int *n)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/%s", root, sub);
    DIR *dp = opendir(dir);
    if (!dp) {
        fprintf(stderr, "  cannot open %s\n", dir);
        return 1;
    }
    int bad = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 6 || strcmp(de->d_name + nl - 5, ".yaml") != 0)
            continue;
        char path[1400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        kw_vfile_stats_t st;
        int failures = 0;
        int rc = kw_vfile_run_file(path, count_failures, &failures, &st, NULL);
        bool ok = rc == KW_OK && (want_unsupported ? st.unsupported && failures == 1
                                                   : st.n_failed == 0 && failures == 0);
        if (!ok) {
            fprintf(stderr, "  %s: rc %d, %zu failed%s\n", path, rc, st.n_failed,
                    st.unsupported ? " (unsupported)" : "");
            bad++;
        }
        (*n)++;
    }
    closedir(dp);
    return bad;
}

KW_TEST(walk_corpus_files)
{
    const char *root = getenv("KW_CONFORMANCE_DIR");
    if (!root || !*root)
        KW_SKIP("KW_CONFORMANCE_DIR is not set (the SpiceDB corpus is an optional input)");
    int n = 0;
    KW_ASSERT_EQ(run_corpus_dir(root, "spicedb", false, &n), 0);
    KW_ASSERT_EQ(run_corpus_dir(root, "spicedb-exhaustive", false, &n), 0);
    KW_ASSERT_EQ(run_corpus_dir(root, "spicedb-caveats", false, &n), 0);
    KW_ASSERT(n >= 73);
}
