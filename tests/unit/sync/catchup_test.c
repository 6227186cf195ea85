/* tests/unit/sync/catchup_test.c - kw_sync_apply (src/sync/catchup.c): one commit is one
 * engine batch, whatever its size. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kw_test.h"
#include "sync/sync.h"

/* ---- kw_sync_apply: one commit is one engine batch ---- */

#define BIG_REVISION 2500 /* more than KW_MAX_UPDATES_PER_WRITE */

typedef struct {
    kw_engine_t *e;
    atomic_int stop;
    atomic_int torn; /* reads that saw neither none nor all of the revision */
    atomic_int reads;
} torn_reader_t;

static int count_rel(const kw_rel_t *rel, void *ud)
{
    (void)rel;
    (*(size_t *)ud)++;
    return 0;
}

static void *torn_reader(void *arg)
{
    torn_reader_t *t = arg;
    kw_filter_t f = {.resource_type = KW_STR("doc")};
    while (!atomic_load(&t->stop)) {
        size_t n = 0;
        if (kw_engine_read(t->e, &f, count_rel, &n, NULL, NULL) == KW_OK && n != 0 &&
            n != BIG_REVISION)
            atomic_fetch_add(&t->torn, 1);
        atomic_fetch_add(&t->reads, 1);
    }
    return NULL;
}

KW_TEST(apply_makes_a_large_revision_visible_at_once_and_at_its_revision)
{
    kw_engine_t *e = NULL;
    KW_ASSERT_EQ(kw_engine_new(&e), KW_OK);
    KW_ASSERT_EQ(kw_engine_set_schema(e,
                                      KW_STR("definition user {}\n"
                                             "definition doc { relation viewer: user; }"),
                                      NULL, NULL),
                 KW_OK);
    kw_update_t *ups = calloc(BIG_REVISION, sizeof(*ups));
    char(*ids)[16] = calloc(BIG_REVISION, sizeof(*ids));
    KW_ASSERT(ups && ids);
    for (int i = 0; i < BIG_REVISION; i++) {
        snprintf(ids[i], sizeof(ids[i]), "d%d", i);
        ups[i].op = KW_OP_TOUCH;
        ups[i].rel = (kw_rel_t){{KW_STR("doc"), kw_str_c(ids[i])},
                                KW_STR("viewer"),
                                {KW_STR("user"), KW_STR("u"), KW_STR_NULL}};
    }
    torn_reader_t t = {.e = e};
    pthread_t th;
    KW_ASSERT_EQ(pthread_create(&th, NULL, torn_reader, &t), 0);
    while (atomic_load(&t.reads) == 0)
        sched_yield();
    kw_revision_t rev = kw_engine_revision(e) + 5;
    int rc1 = kw_sync_apply(e, ups, BIG_REVISION, rev, NULL);
    kw_revision_t after_write = kw_engine_revision(e);
    for (int i = 0; i < BIG_REVISION; i++)
        ups[i].op = KW_OP_DELETE;
    int rc2 = kw_sync_apply(e, ups, BIG_REVISION, rev + 1, NULL);
    kw_revision_t after_delete = kw_engine_revision(e);
    int reads_before = atomic_load(&t.reads);
    while (atomic_load(&t.reads) < reads_before + 10) /* a few reads of the final state */
        sched_yield();
    atomic_store(&t.stop, 1);
    pthread_join(th, NULL);
    free(ups);
    free(ids);
    kw_engine_free(e);
    KW_ASSERT_EQ(rc1, KW_OK);
    KW_ASSERT_EQ(rc2, KW_OK);
    /* the engine is at the commit's revision, not at one revision per piece */
    KW_ASSERT_EQ(after_write, rev);
    KW_ASSERT_EQ(after_delete, rev + 1);
    KW_ASSERT_EQ(atomic_load(&t.torn), 0);
}
