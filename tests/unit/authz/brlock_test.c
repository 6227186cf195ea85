/*
 * tests/unit/authz/brlock_test.c - the engine's big-reader lock (src/authz/brlock.c):
 * mutual exclusion on plain data, readers never seeing half a write batch through the
 * engine, threads created and destroyed past the slot count, and progress for readers
 * under a writer that never pauses (and for a writer under readers that never pause).
 * Run under -fsanitize=thread too: the plain data below is only ordered by the lock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "authz/brlock_int.h"
#include "engine_helpers.h"
#include "kw_test.h"

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the lock alone, on plain data ---- */

/* Widens a critical section so a broken lock is caught in the act. */
static void dawdle(int n)
{
    for (volatile int i = 0; i < n; i++)
        ;
}

/* The writer sets every word of `v` to the same new value, one at a time, with the lock
 * held; a reader that ever sees two different words saw half a write. `inside` counts
 * readers in their critical section and `writing` marks the writer in its own: neither
 * may be seen non-zero by the other side. */
typedef struct plain {
    kw_brlock_t l;
    uint64_t v[16]; /* plain on purpose */
    atomic_int inside, writing;
    atomic_int bad, stop;
    atomic_long reads;
} plain_t;

static void *plain_reader(void *p)
{
    plain_t *s = p;
    while (!atomic_load(&s->stop)) {
        kw__brlock_rdlock(&s->l);
        atomic_fetch_add(&s->inside, 1);
        if (atomic_load(&s->writing))
            atomic_fetch_add(&s->bad, 1);
        dawdle(50);
        for (int i = 1; i < 16; i++)
            if (s->v[i] != s->v[0])
                atomic_fetch_add(&s->bad, 1);
        atomic_fetch_sub(&s->inside, 1);
        kw__brlock_unlock(&s->l);
        atomic_fetch_add(&s->reads, 1);
    }
    return NULL;
}

static void plain_write(plain_t *s, uint64_t x)
{
    kw__brlock_wrlock(&s->l);
    atomic_store(&s->writing, 1);
    if (atomic_load(&s->inside))
        atomic_fetch_add(&s->bad, 1);
    for (int i = 0; i < 16; i++) {
        s->v[i] = x;
        if (i == 7)
            dawdle(50);
    }
    atomic_store(&s->writing, 0);
    kw__brlock_unlock(&s->l);
}

KW_TEST(brlock_readers_and_writer_exclude_each_other)
{
    plain_t *s = kw_calloc(1, sizeof(*s));
    KW_ASSERT(s);
    KW_ASSERT_EQ(kw__brlock_init(&s->l), KW_OK);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, plain_reader, s), 0);
    /* Writes go on until the readers have overlapped with them a while, even when the
     * machine is busy (bounded: 30 s). */
    uint64_t x = 0;
    double t0 = mono_s();
    while ((x < 2000 || atomic_load(&s->reads) < 20000) && mono_s() - t0 < 30)
        plain_write(s, ++x);
    atomic_store(&s->stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    KW_ASSERT_EQ(atomic_load(&s->bad), 0);
    KW_ASSERT(atomic_load(&s->reads) >= 20000);
    KW_ASSERT_EQ(s->v[15], x);
    kw__brlock_close(&s->l);
    kw_free(s);
}

/* A writer that never pauses must not starve readers: each reader gets its reads in
 * while the writer keeps writing (it stops only when they are done, or after 60 s, which
 * fails the test). And readers that never pause must not starve a writer. */
typedef struct race {
    plain_t *s;
    atomic_int done;
} race_t;

static void *counted_reader(void *p)
{
    race_t *r = p;
    for (int i = 0; i < 2000; i++) {
        kw__brlock_rdlock(&r->s->l);
        for (int k = 1; k < 16; k++)
            if (r->s->v[k] != r->s->v[0])
                atomic_fetch_add(&r->s->bad, 1);
        kw__brlock_unlock(&r->s->l);
    }
    atomic_fetch_add(&r->done, 1);
    return NULL;
}

KW_TEST(brlock_neither_side_starves)
{
    plain_t *s = kw_calloc(1, sizeof(*s));
    KW_ASSERT(s);
    KW_ASSERT_EQ(kw__brlock_init(&s->l), KW_OK);
    race_t r = {s, 0};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, counted_reader, &r), 0);
    double t0 = mono_s();
    uint64_t x = 0;
    while (atomic_load(&r.done) < 3 && mono_s() - t0 < 60)
        plain_write(s, ++x);
    KW_ASSERT_EQ(atomic_load(&r.done), 3);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);

    /* Now the other way round: readers loop until the writer has done its 500 writes. */
    atomic_store(&s->stop, 0);
    for (int i = 0; i < 3; i++)
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, plain_reader, s), 0);
    t0 = mono_s();
    for (int i = 0; i < 500 && mono_s() - t0 < 60; i++)
        plain_write(s, ++x);
    atomic_store(&s->stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    KW_ASSERT_EQ(s->v[0], x);
    KW_ASSERT_EQ(atomic_load(&s->bad), 0);
    kw__brlock_close(&s->l);
    kw_free(s);
}

/* ---- through the engine: a batch that moves a relationship is seen whole ---- */

#define MOVE_DOCS 8
#define MOVE_SCHEMA                                                                                \
    "definition user {}\n"                                                                         \
    "definition doc {\n"                                                                           \
    "    relation viewer: user\n"                                                                  \
    "    permission view = viewer\n"                                                               \
    "}\n"

/* user:u views exactly one doc: after move j (revision base + j) it is doc:d(j % 8). */
typedef struct move {
    kw_engine_t *e;
    kw_revision_t base;
    atomic_int stop, bad, errors;
    atomic_long reads;
} move_t;

static void move_check(move_t *m)
{
    char ids[MOVE_DOCS][8];
    kw_check_item_t it[MOVE_DOCS];
    memset(it, 0, sizeof(it));
    for (int d = 0; d < MOVE_DOCS; d++) {
        snprintf(ids[d], sizeof(ids[d]), "d%d", d);
        it[d].resource = (kw_object_t){KW_STR("doc"), kw_str_c(ids[d])};
        it[d].permission = KW_STR("view");
        it[d].subject = (kw_subject_t){KW_STR("user"), KW_STR("u"), KW_STR_NULL};
    }
    kw_revision_t rev = 0;
    if (kw_engine_check_bulk(m->e, it, MOVE_DOCS, &rev) != KW_OK) {
        atomic_fetch_add(&m->errors, 1);
        return;
    }
    int yes = 0, at = -1;
    for (int d = 0; d < MOVE_DOCS; d++) {
        if (it[d].rc != KW_OK)
            atomic_fetch_add(&m->errors, 1);
        if (it[d].result == KW_CHECK_YES) {
            yes++;
            at = d;
        }
    }
    /* Exactly one doc, and the one the reported revision says. */
    if (yes != 1 || rev < m->base || at != (int)((rev - m->base) % MOVE_DOCS))
        atomic_fetch_add(&m->bad, 1);
}

static int move_count_id(kw_str_t id, void *ud)
{
    (void)id;
    (*(int *)ud)++;
    return 0;
}

static void *move_reader(void *p)
{
    move_t *m = p;
    kw_subject_t u = {KW_STR("user"), KW_STR("u"), KW_STR_NULL};
    while (!atomic_load(&m->stop)) {
        move_check(m);
        int n = 0;
        kw_diag_t d;
        if (kw_engine_lookup_resources(m->e, KW_STR("doc"), KW_STR("view"), u, move_count_id, &n,
                                       NULL, &d) != KW_OK)
            atomic_fetch_add(&m->errors, 1);
        else if (n != 1)
            atomic_fetch_add(&m->bad, 1);
        if (kw_engine_count(m->e) != MOVE_DOCS * 2 + 1)
            atomic_fetch_add(&m->bad, 1);
        atomic_fetch_add(&m->reads, 1);
    }
    return NULL;
}

/* Moves user:u from doc:d(j-1) to doc:d(j) in one batch (DELETE + TOUCH). */
static int move_once(move_t *m, int j)
{
    char from[64], to[64];
    snprintf(from, sizeof(from), "doc:d%d#viewer@user:u", (j + MOVE_DOCS - 1) % MOVE_DOCS);
    snprintf(to, sizeof(to), "doc:d%d#viewer@user:u", j % MOVE_DOCS);
    kw_update_t ups[2];
    memset(ups, 0, sizeof(ups));
    ups[0].op = KW_OP_DELETE;
    ups[1].op = KW_OP_TOUCH;
    kw_diag_t d;
    if (kw_rel_parse(kw_str_c(from), &ups[0].rel, &d) != KW_OK ||
        kw_rel_parse(kw_str_c(to), &ups[1].rel, &d) != KW_OK)
        return KW_EINVAL;
    return kw_engine_write(m->e, ups, 2, NULL, 0, 0, NULL, &d);
}

/* The engine with doc:d0#viewer@user:u and, so the graph is not trivial, two other
 * viewers on every doc. */
static int move_setup(move_t *m)
{
    m->e = th_engine(MOVE_SCHEMA);
    if (!m->e)
        return KW_ENOMEM;
    char buf[MOVE_DOCS * 2 + 1][64];
    const char *rels[MOVE_DOCS * 2 + 2];
    size_t n = 0;
    for (int d = 0; d < MOVE_DOCS; d++)
        for (int k = 0; k < 2; k++) {
            snprintf(buf[n], sizeof(buf[n]), "doc:d%d#viewer@user:o%d", d, k);
            rels[n] = buf[n];
            n++;
        }
    snprintf(buf[n], sizeof(buf[n]), "doc:d0#viewer@user:u");
    rels[n] = buf[n];
    rels[++n] = NULL;
    int rc = th_touch(m->e, rels);
    m->base = kw_engine_revision(m->e);
    return rc;
}

KW_TEST(brlock_engine_moves_are_atomic)
{
    move_t m = {0};
    KW_ASSERT_EQ(move_setup(&m), KW_OK);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, move_reader, &m), 0);
    int j = 1;
    for (; j <= 3000; j++)
        KW_ASSERT_EQ(move_once(&m, j), KW_OK);
    /* Keep moving (bounded) until the readers have overlapped with the writer a while. */
    double t0 = mono_s();
    for (; atomic_load(&m.reads) < 400 && mono_s() - t0 < 30; j++)
        KW_ASSERT_EQ(move_once(&m, j), KW_OK);
    atomic_store(&m.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    KW_ASSERT_EQ(atomic_load(&m.errors), 0);
    KW_ASSERT_EQ(atomic_load(&m.bad), 0);
    KW_ASSERT(atomic_load(&m.reads) >= 400);
    KW_ASSERT_EQ(kw_engine_revision(m.e), m.base + (kw_revision_t)(j - 1));
    kw_engine_free(m.e);
}

/* ---- thread churn: more threads than slots, live at once and over time ---- */

#define CHURN_LIVE (KW_BRLOCK_SLOTS + 24)

typedef struct churn {
    move_t *m;
    pthread_barrier_t *all_in; /* every thread of a wave has read once */
    atomic_int slotless;       /* threads of the wave that read without a slot */
} churn_t;

static void *churn_thread(void *p)
{
    churn_t *c = p;
    move_check(c->m);
    if (kw__brlock_thread_slot() < 0)
        atomic_fetch_add(&c->slotless, 1);
    if (c->all_in)
        pthread_barrier_wait(c->all_in);
    for (int i = 0; i < 20; i++)
        move_check(c->m);
    return NULL;
}

KW_TEST(brlock_thread_churn_past_the_slots)
{
    move_t m = {0};
    KW_ASSERT_EQ(move_setup(&m), KW_OK);
    static pthread_t th[CHURN_LIVE];
    int j = 1;

    /* One wave of CHURN_LIVE threads alive together: the slots run out and the rest read
     * through the shared count, while the engine keeps being written. */
    pthread_barrier_t all_in;
    KW_ASSERT_EQ(pthread_barrier_init(&all_in, NULL, CHURN_LIVE), 0);
    churn_t c = {&m, &all_in, 0};
    for (int i = 0; i < CHURN_LIVE; i++) {
        KW_ASSERT_EQ(pthread_create(&th[i], NULL, churn_thread, &c), 0);
        if (i % 8 == 0)
            KW_ASSERT_EQ(move_once(&m, j++), KW_OK);
    }
    for (int i = 0; i < CHURN_LIVE; i++) {
        pthread_join(th[i], NULL);
        KW_ASSERT_EQ(move_once(&m, j++), KW_OK);
    }
    pthread_barrier_destroy(&all_in);
    KW_ASSERT(atomic_load(&c.slotless) >= CHURN_LIVE - KW_BRLOCK_SLOTS);

    /* Then waves of short-lived threads, many more than the slots in total: exited
     * threads hand their slots back, so every one of these finds a slot. */
    churn_t w = {&m, NULL, 0};
    for (int wave = 0; wave < 40; wave++) {
        for (int i = 0; i < 16; i++)
            KW_ASSERT_EQ(pthread_create(&th[i], NULL, churn_thread, &w), 0);
        KW_ASSERT_EQ(move_once(&m, j++), KW_OK);
        for (int i = 0; i < 16; i++)
            pthread_join(th[i], NULL);
    }
    KW_ASSERT_EQ(atomic_load(&w.slotless), 0);
    KW_ASSERT_EQ(atomic_load(&m.errors), 0);
    KW_ASSERT_EQ(atomic_load(&m.bad), 0);
    kw_engine_free(m.e);
}
