/*
 * tests/unit/sync/schema_test.c - the schema's lifecycle (sync/schema.c, catchup.c's load,
 * commit.c's schema write) on SQLite: the trial install runs the caller's requirements and
 * changes nothing live; a load or a schema write that a stored relationship does not fit
 * changes nothing; a schema write stores, installs and remembers the text at a revision of
 * its own.
 */
#include <stdio.h>

#include "kw_test.h"
#include "test_inst.h"

/* The requirement of these tests: an "account" definition with a "member" relation. */
static int needs_account_member(kw_engine_t *engine, kw_diag_t *diag)
{
    bool is_perm = false;
    if (!kw_engine_has(engine, KW_STR("account"), KW_STR("member"), &is_perm) || is_perm)
        return kw_diag_set(diag, KW_ESCHEMA, 0, 0, "account#member is needed");
    return KW_OK;
}

static const char no_member[] = "definition user {}\n"
                                "definition account {\n"
                                "    relation admin: user\n"
                                "}\n";
static const char with_doc[] = "definition user {}\n"
                               "definition account {\n"
                               "    relation member: user\n"
                               "}\n"
                               "definition doc {\n"
                               "    relation viewer: user\n"
                               "}\n";

static int one_member(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    (void)ud;
    kw_update_t u = {KW_OP_TOUCH,
                     {{KW_STR("account"), KW_STR("acme")},
                      KW_STR("member"),
                      {KW_STR("user"), KW_STR("alice"), KW_STR_NULL}}};
    return kw_store_tx_rel_write(tx, &u, 1, diag);
}

/* Is the engine's schema text `want`? */
static bool live_schema_is(kw_ti_t *in, const char *want)
{
    kw_buf_t t;
    kw_buf_init(&t);
    bool same = kw_engine_schema_text(in->engine, &t) == KW_OK && t.len == strlen(want) &&
                memcmp(t.ptr, want, t.len) == 0;
    kw_buf_free(&t);
    return same;
}

static bool stored_schema_is(kw_ti_t *in, const char *want)
{
    kw_buf_t t;
    kw_buf_init(&t);
    bool same = kw_sync_stored_schema(in->sync, &t) == KW_OK && t.len == strlen(want) &&
                (t.len == 0 || memcmp(t.ptr, want, t.len) == 0);
    kw_buf_free(&t);
    return same;
}

KW_TEST(schema_try_runs_the_requirements_and_changes_nothing_live)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite(&in, "schema_test"));
    in.sync->check_schema = needs_account_member;
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_sync_schema_try(in.sync, kw_str_c(with_doc), &d), KW_OK);
    KW_ASSERT_EQ(kw_sync_schema_try(in.sync, kw_str_c(no_member), &d), KW_ESCHEMA);
    KW_ASSERT_STR_EQ(d.msg, "account#member is needed");
    kw_diag_clear(&d);
    KW_ASSERT(kw_sync_schema_try(in.sync, KW_STR("definition user {"), &d) != KW_OK);
    KW_ASSERT(d.line > 0); /* a compile error says where */
    KW_ASSERT(live_schema_is(&in, kw_ti_schema));
    KW_ASSERT(stored_schema_is(&in, ""));
    kw_ti_close(&in);
}

KW_TEST(load_that_a_stored_relationship_does_not_fit_changes_nothing)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite(&in, "schema_test"));
    kw_revision_t rev = 0;
    KW_ASSERT_EQ(kw_sync_write(in.sync, one_member, NULL, 0, &rev, NULL), KW_OK);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_sync_load(in.sync, kw_str_c(no_member), &d), KW_ESCHEMA);
    KW_ASSERT(d.msg[0] != '\0');
    KW_ASSERT(live_schema_is(&in, kw_ti_schema));
    KW_ASSERT_EQ(kw_engine_count(in.engine), 1);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), rev);
    /* the same load under a schema it fits: the graph is the store's, at its revision */
    KW_ASSERT_EQ(kw_sync_load(in.sync, kw_str_c(with_doc), &d), KW_OK);
    KW_ASSERT(live_schema_is(&in, with_doc));
    KW_ASSERT_EQ(kw_engine_count(in.engine), 1);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), rev);
    kw_ti_close(&in);
}

KW_TEST(schema_write_stores_installs_and_remembers_at_a_revision_of_its_own)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite(&in, "schema_test"));
    kw_revision_t rev = 0, srev = 0;
    KW_ASSERT_EQ(kw_sync_write(in.sync, one_member, NULL, 0, &rev, NULL), KW_OK);
    kw_diag_t d;
    kw_diag_clear(&d);
    /* refused: the stored relationship does not fit; nothing changes */
    KW_ASSERT_EQ(kw_sync_write_schema(in.sync, kw_str_c(no_member), &srev, &d), KW_ESCHEMA);
    KW_ASSERT_EQ(srev, 0);
    KW_ASSERT(live_schema_is(&in, kw_ti_schema));
    KW_ASSERT(stored_schema_is(&in, ""));
    KW_ASSERT_EQ(kw_sync_applied(in.sync), rev);
    /* accepted: stored, installed, remembered, at the next revision */
    KW_ASSERT_EQ(kw_sync_write_schema(in.sync, kw_str_c(with_doc), &srev, &d), KW_OK);
    KW_ASSERT_EQ(srev, rev + 1);
    KW_ASSERT_EQ(kw_sync_applied(in.sync), srev);
    KW_ASSERT(live_schema_is(&in, with_doc));
    KW_ASSERT(stored_schema_is(&in, with_doc));
    KW_ASSERT_EQ(in.sync->schema_seen.len, strlen(with_doc));
    KW_ASSERT_EQ(kw_engine_count(in.engine), 1);
    kw_ti_close(&in);
}

/* The caller's step of a schema write (its audit event) runs in the schema's transaction:
 * it fails -> nothing stored, the live schema restored, no revision; it succeeds -> its
 * change commits at the schema's revision. */
static int fail_step(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    (void)tx;
    (void)ud;
    return kw_diag_set(diag, KW_EDB, 0, 0, "the step failed");
}

static int event_step(kw_store_tx_t *tx, void *ud, kw_diag_t *diag)
{
    (void)ud;
    kw_audit_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.at_us = 1;
    ev.action = KW_STR("schema.write");
    ev.resource = KW_STR("schema");
    return kw_store_tx_audit_append(tx, &ev, diag);
}

KW_TEST(schema_write_with_runs_the_step_in_its_transaction)
{
    kw_ti_t in;
    KW_ASSERT(kw_ti_sqlite(&in, "schema_with_test"));
    kw_revision_t rev = 0, srev = 0;
    KW_ASSERT_EQ(kw_sync_write(in.sync, one_member, NULL, 0, &rev, NULL), KW_OK);
    kw_diag_t d;
    kw_diag_clear(&d);
    KW_ASSERT_EQ(kw_sync_write_schema_with(in.sync, kw_str_c(with_doc), fail_step, NULL, &srev, &d),
                 KW_EDB);
    KW_ASSERT_EQ(srev, 0);
    KW_ASSERT(live_schema_is(&in, kw_ti_schema));
    KW_ASSERT(stored_schema_is(&in, ""));
    kw_revision_t now = 0;
    KW_ASSERT_EQ(kw_store_revision(in.store, &now), KW_OK);
    KW_ASSERT_EQ(now, rev);
    KW_ASSERT_EQ(
        kw_sync_write_schema_with(in.sync, kw_str_c(with_doc), event_step, NULL, &srev, &d), KW_OK);
    KW_ASSERT_EQ(srev, rev + 1);
    KW_ASSERT(live_schema_is(&in, with_doc));
    KW_ASSERT(stored_schema_is(&in, with_doc));
    kw_audit_report_t r;
    KW_ASSERT_EQ(kw_store_audit_verify(in.store, &r, NULL), KW_OK);
    KW_ASSERT_EQ(r.n_events, 1);
    kw_ti_close(&in);
}
