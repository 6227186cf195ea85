/*
 * tests/unit/store/watch_feed_test.c - kw_store_watch_changes on SQLite: the changelog a
 * commit writes (store/sqlite_changes.c), read whole, in limited rounds that never split
 * a revision, from a second store handle on the same file (another process's view), and
 * refused below the pruned horizon; and kw_store_export_relationships (ordered, resumable
 * after a key, by resource type), on SQLite and, as pg_*, on PostgreSQL.
 */
#include <sqlite3.h>
#include <unistd.h>

#include "kw_test.h"
#include "store/store.h"

typedef struct feed {
    char text[16][96];
    kw_revision_t rev[16];
    int op[16];
    size_t n;
} feed_t;

static int on_change(kw_revision_t rev, kw_op_t op, const kw_rel_t *r, void *ud)
{
    feed_t *f = ud;
    if (f->n >= KW_ARRAY_LEN(f->text))
        return KW_ELIMIT;
    snprintf(f->text[f->n], sizeof(f->text[0]), "%.*s:%.*s#%.*s@%.*s:%.*s",
             KW_STR_FMT(r->resource.type), KW_STR_FMT(r->resource.id), KW_STR_FMT(r->relation),
             KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.id));
    f->rev[f->n] = rev;
    f->op[f->n] = (int)op;
    f->n++;
    return KW_OK;
}

static int commit(kw_store_t *s, const char *ids, kw_op_t op, kw_revision_t *rev)
{
    kw_update_t ups[4];
    size_t n = 0;
    for (const char *p = ids; *p && n < 4; p++, n++) {
        ups[n] = (kw_update_t){op,
                               {{KW_STR("doc"), {p, 1}},
                                KW_STR("viewer"),
                                {KW_STR("user"), KW_STR("u"), KW_STR_NULL}}};
    }
    kw_store_tx_t *tx = NULL;
    int rc = kw_store_tx_begin(s, &tx, NULL);
    if (rc != KW_OK)
        return rc;
    rc = n ? kw_store_tx_rel_write(tx, ups, n, NULL) : KW_OK;
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    return kw_store_tx_commit(tx, rev, NULL);
}

KW_TEST(watch_feed_sqlite_reads_every_commit_in_order)
{
    char dir[] = "/tmp/kw_watchfeed_XXXXXX";
    KW_ASSERT(mkdtemp(dir));
    char path[96], url[128];
    snprintf(path, sizeof(path), "%s/w.db", dir);
    snprintf(url, sizeof(url), "sqlite:%s", path);
    kw_store_t *s = NULL, *other = NULL;
    KW_ASSERT_EQ(kw_store_open(url, &s, NULL), KW_OK);
    kw_revision_t rev = 0, upto = 0;
    KW_ASSERT_EQ(commit(s, "ab", KW_OP_TOUCH, &rev), KW_OK); /* 1: two changes */
    KW_ASSERT_EQ(commit(s, "", KW_OP_TOUCH, &rev), KW_OK);   /* 2: none */
    KW_ASSERT_EQ(commit(s, "a", KW_OP_DELETE, &rev), KW_OK); /* 3: one delete */
    KW_ASSERT_EQ(rev, 3);

    /* Another handle on the same file (what a second process sees). */
    KW_ASSERT_EQ(kw_store_open(url, &other, NULL), KW_OK);
    feed_t f = {0};
    KW_ASSERT_EQ(kw_store_watch_changes(other, 0, 0, on_change, &f, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(upto, 3);
    KW_ASSERT_EQ(f.n, 3);
    KW_ASSERT_STR_EQ(f.text[0], "doc:a#viewer@user:u");
    KW_ASSERT_EQ(f.rev[0], 1);
    KW_ASSERT_EQ(f.op[0], KW_OP_TOUCH);
    KW_ASSERT_STR_EQ(f.text[1], "doc:b#viewer@user:u");
    KW_ASSERT_EQ(f.rev[2], 3);
    KW_ASSERT_EQ(f.op[2], KW_OP_DELETE);

    /* A limit of 1 never splits revision 1 (two changes): it comes whole, then stops. */
    memset(&f, 0, sizeof(f));
    KW_ASSERT_EQ(kw_store_watch_changes(other, 0, 1, on_change, &f, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(f.n, 2);
    KW_ASSERT_EQ(upto, 1);
    memset(&f, 0, sizeof(f));
    KW_ASSERT_EQ(kw_store_watch_changes(other, 1, 1, on_change, &f, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(f.n, 1); /* revision 2 has no change, revision 3 one */
    KW_ASSERT_EQ(upto, 3);
    /* Nothing new: upto stays where the reader is. */
    memset(&f, 0, sizeof(f));
    KW_ASSERT_EQ(kw_store_watch_changes(other, 3, 0, on_change, &f, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(f.n, 0);
    KW_ASSERT_EQ(upto, 3);

    /* Below the pruned horizon: refused, nothing delivered. */
    sqlite3 *db = NULL;
    KW_ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    KW_ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = 2 WHERE key = 'changelog_horizon'", NULL,
                              NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    memset(&f, 0, sizeof(f));
    kw_diag_t d;
    KW_ASSERT_EQ(kw_store_watch_changes(other, 1, 0, on_change, &f, &upto, &d), KW_EPRUNED);
    KW_ASSERT_EQ(f.n, 0);
    KW_ASSERT_EQ(kw_store_watch_changes(other, 2, 0, on_change, &f, &upto, NULL), KW_OK);
    KW_ASSERT_EQ(f.n, 1);

    /* The followers' feed stays off on SQLite (the sync module tells backends apart). */
    KW_ASSERT_EQ(kw_store_changes_since(s, 0, 0, on_change, &f, &upto, NULL), KW_EUNSUPPORTED);
    kw_store_close(other);
    kw_store_close(s);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* ---- kw_store_export_relationships ---- */

typedef struct exp {
    char text[16][96];
    size_t n;
    size_t stop_at; /* return 7 from the callback at this row (0: never) */
} exp_t;

static int on_export(const kw_rel_t *r, void *ud)
{
    exp_t *e = ud;
    if (e->stop_at && e->n + 1 == e->stop_at)
        return 7;
    if (e->n >= KW_ARRAY_LEN(e->text))
        return KW_ELIMIT;
    snprintf(e->text[e->n++], sizeof(e->text[0]), "%.*s:%.*s#%.*s@%.*s:%.*s%s%.*s",
             KW_STR_FMT(r->resource.type), KW_STR_FMT(r->resource.id), KW_STR_FMT(r->relation),
             KW_STR_FMT(r->subject.type), KW_STR_FMT(r->subject.id),
             r->subject.relation.len ? "#" : "", KW_STR_FMT(r->subject.relation));
    return 0;
}

static void export_suite(int *kw_failed_, const char *url, const char *tag)
{
    kw_store_t *s = NULL;
    KW_ASSERT_EQ(kw_store_open(url, &s, NULL), KW_OK);
    char t1[32], t2[32];
    snprintf(t1, sizeof(t1), "%sa", tag); /* two resource types of this run only */
    snprintf(t2, sizeof(t2), "%sb", tag);
    kw_update_t ups[] = {
        {KW_OP_TOUCH, {{kw_str_c(t2), KW_STR("x")}, KW_STR("r"), {KW_STR("user"), KW_STR("u")}}},
        {KW_OP_TOUCH, {{kw_str_c(t1), KW_STR("b")}, KW_STR("r"), {KW_STR("user"), KW_STR("u")}}},
        {KW_OP_TOUCH,
         {{kw_str_c(t1), KW_STR("a")}, KW_STR("r"), {KW_STR("grp"), KW_STR("g"), KW_STR("m")}}},
        {KW_OP_TOUCH, {{kw_str_c(t1), KW_STR("a")}, KW_STR("r"), {KW_STR("grp"), KW_STR("g")}}},
    };
    kw_store_tx_t *tx = NULL;
    kw_revision_t rev = 0, at = 0;
    KW_ASSERT_EQ(kw_store_tx_begin(s, &tx, NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_rel_write(tx, ups, KW_ARRAY_LEN(ups), NULL), KW_OK);
    KW_ASSERT_EQ(kw_store_tx_commit(tx, &rev, NULL), KW_OK);
    /* One type, in key order: the plain subject ("" relation) before the subject set. */
    exp_t e = {0};
    KW_ASSERT_EQ(kw_store_export_relationships(s, NULL, kw_str_c(t1), on_export, &e, &at), KW_OK);
    KW_ASSERT_EQ(at, rev);
    KW_ASSERT_EQ(e.n, 3);
    char want[96];
    snprintf(want, sizeof(want), "%s:a#r@grp:g", t1);
    KW_ASSERT_STR_EQ(e.text[0], want);
    snprintf(want, sizeof(want), "%s:a#r@grp:g#m", t1);
    KW_ASSERT_STR_EQ(e.text[1], want);
    snprintf(want, sizeof(want), "%s:b#r@user:u", t1);
    KW_ASSERT_STR_EQ(e.text[2], want);
    /* Resumed after the second key: the rest, in order, across types. */
    kw_str_t after[6] = {kw_str_c(t1),  KW_STR("a"), KW_STR("r"),
                         KW_STR("grp"), KW_STR("g"), KW_STR("m")};
    memset(&e, 0, sizeof(e));
    KW_ASSERT_EQ(kw_store_export_relationships(s, after, KW_STR(""), on_export, &e, NULL), KW_OK);
    KW_ASSERT(e.n >= 2);
    snprintf(want, sizeof(want), "%s:b#r@user:u", t1);
    KW_ASSERT_STR_EQ(e.text[0], want);
    snprintf(want, sizeof(want), "%s:x#r@user:u", t2);
    KW_ASSERT_STR_EQ(e.text[1], want);
    /* The callback stops it: its value comes back. */
    memset(&e, 0, sizeof(e));
    e.stop_at = 2;
    KW_ASSERT_EQ(kw_store_export_relationships(s, NULL, kw_str_c(t1), on_export, &e, NULL), 7);
    KW_ASSERT_EQ(e.n, 1);
    kw_store_close(s);
}

KW_TEST(export_sqlite_ordered_resumable_by_type)
{
    char dir[] = "/tmp/kw_export_XXXXXX";
    KW_ASSERT(mkdtemp(dir));
    char path[96], url[128];
    snprintf(path, sizeof(path), "%s/e.db", dir);
    snprintf(url, sizeof(url), "sqlite:%s", path);
    export_suite(kw_failed_, url, "t");
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
        unlink(p);
    }
    rmdir(dir);
}

KW_TEST(pg_export_ordered_resumable_by_type)
{
    const char *url = getenv("KEYWARD_PG_URL");
    if (!url || !*url)
        KW_SKIP("KEYWARD_PG_URL is not set");
    char tag[32];
    snprintf(tag, sizeof(tag), "e%ld_", (long)getpid());
    export_suite(kw_failed_, url, tag);
}
