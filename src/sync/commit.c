/*
 * sync/commit.c - the write path, with group commit (concurrent writes share one store
 * transaction, one commit and one revision), and the schema write.
 *
 * Invariants: the engine is written only after the store committed, with the exact
 * changes the transaction reports, in commit order, under the write mutex. On PostgreSQL
 * the write path does not apply its own changes blindly: it catches up through the
 * changelog (catchup.c), which includes them, so revisions of other instances are never
 * skipped. Revisions reported are STORE revisions (applied_rev), not the engine's.
 *
 * Threads: write_mu (lock 1 of sync.h) is taken by the leader of a batch and by the schema
 * write; group_mu (lock 3) guards the queue, and a leader takes it only after write_mu.
 */
#include <inttypes.h>
#include <string.h>

#include "base/log.h"
#include "sync_int.h"

#define KW_MODULE "sync"

/* ---- the write path ---- */

/* Deep-copies the transaction's changes (valid only until commit) into `a`, caveats and
 * expiry included. */
static int copy_changes(kw_store_tx_t *tx, kw_arena_t *a, kw_update_t **out, size_t *n_out)
{
    const kw_update_t *ups = NULL;
    size_t n = 0;
    kw_store_tx_changes(tx, &ups, &n);
    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return KW_OK;
    if (n > SIZE_MAX / sizeof(kw_update_t))
        return KW_ENOMEM;
    kw_update_t *c = kw_arena_alloc(a, n * sizeof(*c));
    if (!c)
        return KW_ENOMEM;
    memset(c, 0, n * sizeof(*c)); /* no caveat, context or expiry unless copied */
    for (size_t i = 0; i < n; i++) {
        c[i].op = ups[i].op;
        if (kw__sync_rel_copy(a, &ups[i].rel, &c[i].rel) != KW_OK)
            return KW_ENOMEM;
    }
    *out = c;
    *n_out = n;
    return KW_OK;
}

/* ---- group commit (tag-kw-api-group-commit) ----
 *
 * Leader/follower: every writer queues a job under group_mu. A writer that finds no
 * leader becomes it: it takes write_mu, takes up to KW_SYNC_GROUP_MAX_JOBS jobs from the head
 * of the queue (a KW_SYNC_WRITE_ALONE job only as the first and only one), runs them in one
 * store transaction (run_batch), marks them done and wakes their writers. A leader whose
 * own job is still queued (the batch was full, or its job was deferred) leads again;
 * otherwise, on the way out, it wakes the writer at the head of the queue, which leads
 * next. While a batch commits (one fsync), the writers arriving queue up for the next
 * one: the batch size follows the load, and a lone writer commits at once, as before.
 */

struct kw__write_job {
    kw_sync_tx_fn fn;
    void *ud;
    kw_diag_t *diag; /* the caller's (may be NULL) */
    bool alone;
    bool done;     /* under group_mu: rc/rev are final */
    bool deferred; /* run_batch: rolled back, to run in a later batch */
    bool own_err;  /* run_batch: fn failed, rc is its own error */
    bool kept;     /* run_batch: in the transaction being committed */
    int rc;
    kw_revision_t rev;
    pthread_cond_t cv; /* signalled when done, or to hand over the lead */
    kw__write_job_t *next;
};

/* The batch's relationships, to keep one revision free of a relationship named twice
 * (the engine refuses such a batch, and a follower applies a revision as one batch): an
 * open-addressing set of indices into the transaction's change list. */
typedef struct {
    uint32_t *slot; /* index + 1; 0 = empty */
    size_t cap, n;  /* cap: a power of two */
} relset_t;

static uint64_t rel_hash(const kw_rel_t *r)
{
    const kw_str_t f[6] = {r->resource.type, r->resource.id, r->relation,
                           r->subject.type,  r->subject.id,  r->subject.relation};
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < 6; i++) {
        for (size_t k = 0; k < f[i].len; k++)
            h = (h ^ (unsigned char)f[i].ptr[k]) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* field separator */
    }
    return h;
}

static bool rel_same(const kw_rel_t *a, const kw_rel_t *b)
{
    return kw_str_eq(a->resource.type, b->resource.type) &&
           kw_str_eq(a->resource.id, b->resource.id) && kw_str_eq(a->relation, b->relation) &&
           kw_str_eq(a->subject.type, b->subject.type) && kw_str_eq(a->subject.id, b->subject.id) &&
           kw_str_eq(a->subject.relation, b->subject.relation);
}

/* Is ups[i]'s relationship in the set? */
static bool relset_has(const relset_t *s, const kw_update_t *ups, size_t i)
{
    if (s->n == 0)
        return false;
    size_t mask = s->cap - 1;
    for (size_t h = (size_t)rel_hash(&ups[i].rel) & mask;; h = (h + 1) & mask) {
        uint32_t v = s->slot[h];
        if (v == 0)
            return false;
        if (rel_same(&ups[v - 1].rel, &ups[i].rel))
            return true;
    }
}

static void relset_put(relset_t *s, const kw_update_t *ups, size_t i)
{
    size_t mask = s->cap - 1;
    size_t h = (size_t)rel_hash(&ups[i].rel) & mask;
    while (s->slot[h] != 0)
        h = (h + 1) & mask;
    s->slot[h] = (uint32_t)(i + 1);
    s->n++;
}

/* Adds ups[from..to) (the caller checked none is present). KW_OK or KW_ENOMEM. */
static int relset_add(relset_t *s, const kw_update_t *ups, size_t from, size_t to)
{
    size_t need = s->n + (to - from);
    if (to > UINT32_MAX - 1)
        return KW_ENOMEM;
    if (need * 2 > s->cap) { /* load <= 1/2: rebuild larger */
        size_t cap = s->cap ? s->cap : 64;
        while (need * 2 > cap)
            cap *= 2;
        uint32_t *old = s->slot;
        size_t old_cap = s->cap;
        s->slot = kw_calloc(cap, sizeof(*s->slot));
        if (!s->slot) {
            s->slot = old;
            return KW_ENOMEM;
        }
        s->cap = cap;
        s->n = 0;
        for (size_t k = 0; k < old_cap; k++)
            if (old[k])
                relset_put(s, ups, old[k] - 1);
        kw_free(old);
    }
    for (size_t i = from; i < to; i++)
        relset_put(s, ups, i);
    return KW_OK;
}

/* After a commit at r: the graph gets the batch's changes (existing rules: on PostgreSQL
 * through the changelog, which holds them at r, so other instances' revisions are never
 * skipped). The result is every kept job's. */
static int apply_committed(kw_sync_t *s, const kw_update_t *changes, size_t n, kw_revision_t r,
                           kw_diag_t *diag)
{
    if (s->follows) {
        /* Another instance's R-1 may not be applied yet: catch up through the changelog,
         * which delivers every revision up to >= r, ours included, in order. */
        kw_diag_t cd;
        kw_diag_clear(&cd);
        int crc = kw_sync_catch_up(s, &cd);
        if (kw_sync_applied(s) < r && kw_sync_applied(s) == r - 1 && crc != KW_ENOMEM) {
            /* The changelog was unreachable right after our commit, but nothing is
             * missing before it: our own changes are exactly revision r. */
            crc = kw_sync_apply(s->engine, changes, n, r, &cd);
            if (crc == KW_OK)
                kw__sync_advance(s, r);
        }
        if (kw_sync_applied(s) < r) {
            /* Committed and durable; the graph will get it when the follower catches
             * up. Until then this instance is not fresh (503 on graph routes). */
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "committed revision %" PRIu64 " but could not catch up to it (%s)", (uint64_t)r,
                   kw_err_name(crc));
            atomic_store(&s->fresh, false);
            /* KW_EPRUNED: this instance is behind the pruned changelog; the follower
             * reloads the whole graph (catchup.c), which includes this commit. */
            if (crc != KW_EDB && crc != KW_ETIMEOUT && crc != KW_EPRUNED && crc != KW_OK)
                return KW_EINTERNAL;
        }
        return KW_OK;
    }
    int rc = kw_sync_apply(s->engine, changes, n, r, diag);
    if (rc != KW_OK) {
        /* The rows are durable but the graph missed the change: loud, and a 500. */
        kw_log(KW_LOG_ERROR, KW_MODULE,
               "committed revision %" PRIu64 " but the engine refused its %zu changes: %s",
               (uint64_t)r, n, kw_err_name(rc));
        return KW_EINTERNAL;
    }
    kw__sync_advance(s, r);
    return KW_OK;
}

/* Gives every job of the batch that has no result of its own yet (not failed alone,
 * not deferred unless `all`) the code rc and the message in d. */
static void batch_fail(kw__write_job_t **jobs, size_t n, int rc, const kw_diag_t *d, bool all)
{
    for (size_t i = 0; i < n; i++) {
        kw__write_job_t *j = jobs[i];
        if (j->own_err || (j->deferred && !all))
            continue;
        j->deferred = false;
        j->kept = false;
        j->rc = rc;
        if (j->diag && d && d->msg[0])
            *j->diag = *d;
        else if (j->diag)
            kw_diag_set(j->diag, rc, 0, 0, "%s", kw_err_name(rc));
    }
}

static void count_batch(kw_sync_t *s, uint64_t kept)
{
    atomic_fetch_add_explicit(&s->group_batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->group_jobs, kept, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&s->group_max_jobs, memory_order_relaxed);
    while (kept > max &&
           !atomic_compare_exchange_weak_explicit(&s->group_max_jobs, &max, kept,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Under write_mu: one transaction for jobs[0..n). Each job ends with rc/rev set, or
 * deferred (to run again in a later batch). A single job runs as it always did: no
 * savepoint, its error rolls the transaction back. */
static void run_batch(kw_sync_t *s, kw__write_job_t **jobs, size_t n)
{
    kw_store_tx_t *tx = NULL;
    kw_diag_t bd;
    kw_diag_clear(&bd);
    relset_t set = {NULL, 0, 0};
    kw_arena_t *scratch = NULL;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        jobs[i]->deferred = jobs[i]->own_err = jobs[i]->kept = false;
        jobs[i]->rc = KW_OK;
        jobs[i]->rev = 0;
    }
    int rc = kw_store_tx_begin(s->store, &tx, &bd);
    if (rc != KW_OK) {
        batch_fail(jobs, n, rc, &bd, true);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        kw__write_job_t *j = jobs[i];
        const kw_update_t *ups = NULL;
        size_t n_ups = 0;
        kw_store_tx_changes(tx, &ups, &n_ups);
        if (i > 0 && n_ups >= KW_SYNC_GROUP_MAX_CHANGES) {
            j->deferred = true; /* the batch is big enough: the next one */
            continue;
        }
        if (n == 1) {
            rc = j->fn(tx, j->ud, j->diag);
            if (rc != KW_OK) {
                kw_store_tx_rollback(tx);
                j->rc = rc;
                j->own_err = true;
                return;
            }
            j->kept = true;
            kept = 1;
            break;
        }
        kw_store_savepoint_t sp;
        rc = kw_store_tx_savepoint(tx, &sp, &bd);
        if (rc != KW_OK)
            goto broken;
        int jrc = j->fn(tx, j->ud, j->diag);
        kw_store_tx_changes(tx, &ups, &n_ups);
        bool dup = false;
        for (size_t k = sp.n_changes; jrc == KW_OK && k < n_ups && !dup; k++)
            dup = relset_has(&set, ups, k);
        if (jrc == KW_OK && !dup) {
            rc = kw_store_tx_release_savepoint(tx, &sp, &bd);
            if (rc != KW_OK)
                goto broken;
            jrc = relset_add(&set, ups, sp.n_changes, n_ups);
            if (jrc == KW_OK) {
                j->kept = true;
                kept++;
                continue;
            }
            /* Out of memory for the set: this job cannot be checked; the tx is still
             * consistent up to here, but its work is released: fail the batch. */
            rc = jrc;
            kw_diag_set(&bd, rc, 0, 0, "out of memory");
            goto broken;
        }
        rc = kw_store_tx_rollback_to_savepoint(tx, &sp, &bd);
        if (dup) {
            j->deferred = true;
            atomic_fetch_add_explicit(&s->group_deferred, 1, memory_order_relaxed);
        } else {
            j->rc = jrc;
            j->own_err = true;
        }
        if (rc != KW_OK)
            goto broken;
    }
    kw_free(set.slot);
    set.slot = NULL;
    if (kept == 0) {
        kw_store_tx_rollback(tx); /* every job failed or was deferred: no revision */
        return;
    }
    kw_update_t *changes = NULL;
    size_t n_changes = 0;
    kw_revision_t r = 0;
    scratch = kw_arena_new(0);
    rc = scratch ? copy_changes(tx, scratch, &changes, &n_changes) : KW_ENOMEM;
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        kw_diag_set(&bd, rc, 0, 0, "out of memory");
        batch_fail(jobs, n, rc, &bd, false);
        kw_arena_free(scratch);
        return;
    }
    /* KW_EDB here = outcome unknown (a lost COMMIT): the graph is not touched; if it did
     * commit, the follower applies it from the changelog. */
    rc = kw_store_tx_commit(tx, &r, &bd);
    if (rc == KW_OK) {
        count_batch(s, kept);
        rc = apply_committed(s, changes, n_changes, r, &bd);
    }
    kw_arena_free(scratch);
    if (rc != KW_OK) {
        batch_fail(jobs, n, rc, &bd, false);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->kept)
            jobs[i]->rev = r;
    return;
broken:
    /* A savepoint could not be set, released or rolled back to: the transaction is in
     * an unknown state. Nothing of it commits; every job without its own error fails. */
    kw_free(set.slot);
    kw_store_tx_rollback(tx);
    batch_fail(jobs, n, rc, &bd, true);
}

/* Under write_mu and group_mu: takes the next batch off the queue. */
static size_t take_batch(kw_sync_t *s, kw__write_job_t *self, kw__write_job_t **jobs)
{
    size_t n = 0;
    while (s->group_head && n < KW_SYNC_GROUP_MAX_JOBS) {
        kw__write_job_t *j = s->group_head;
        if (j->alone && (n > 0 || j != self)) /* an ALONE job runs on its writer's thread */
            break;
        s->group_head = j->next;
        if (!s->group_head)
            s->group_tail = NULL;
        j->next = NULL;
        jobs[n++] = j;
        if (j->alone)
            break;
    }
    return n;
}

/* The leader's turn: one batch. Called without any lock, with group_leading set. */
static void lead_one_batch(kw_sync_t *s, kw__write_job_t *self)
{
    kw__write_job_t *jobs[KW_SYNC_GROUP_MAX_JOBS];
    pthread_mutex_lock(&s->write_mu);
    /* Taken after write_mu: the writers that arrived while it was held join this batch. */
    pthread_mutex_lock(&s->group_mu);
    size_t n = take_batch(s, self, jobs);
    pthread_mutex_unlock(&s->group_mu);
    if (n > 0)
        run_batch(s, jobs, n);
    pthread_mutex_unlock(&s->write_mu);
    pthread_mutex_lock(&s->group_mu);
    /* Deferred jobs go back to the head of the queue, in their order: they run first in
     * the next batch (where the first job never meets an earlier change). */
    for (size_t i = n; i-- > 0;) {
        kw__write_job_t *j = jobs[i];
        if (j->deferred) {
            j->next = s->group_head;
            s->group_head = j;
            if (!s->group_tail)
                s->group_tail = j;
        } else {
            j->done = true;
            pthread_cond_signal(&j->cv);
        }
    }
    pthread_mutex_unlock(&s->group_mu);
}

size_t kw_sync_write_queued(kw_sync_t *s)
{
    size_t n = 0;
    pthread_mutex_lock(&s->group_mu);
    for (const kw__write_job_t *j = s->group_head; j; j = j->next)
        n++;
    pthread_mutex_unlock(&s->group_mu);
    return n;
}

int kw_sync_write(kw_sync_t *s, kw_sync_tx_fn fn, void *ud, unsigned flags, kw_revision_t *rev,
                  kw_diag_t *diag)
{
    kw__write_job_t job;
    memset(&job, 0, sizeof(job));
    job.fn = fn;
    job.ud = ud;
    job.diag = diag;
    job.alone = (flags & KW_SYNC_WRITE_ALONE) != 0;
    if (pthread_cond_init(&job.cv, NULL) != 0)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
    pthread_mutex_lock(&s->group_mu);
    if (s->group_tail)
        s->group_tail->next = &job;
    else
        s->group_head = &job;
    s->group_tail = &job;
    while (!job.done) {
        /* Someone else's ALONE job at the head is run by its own writer: wake it to lead. */
        kw__write_job_t *h = s->group_head;
        bool foreign_alone = h && h->alone && h != &job;
        if (!s->group_leading && foreign_alone)
            pthread_cond_signal(&h->cv);
        if (!s->group_leading && !foreign_alone) {
            s->group_leading = true;
            pthread_mutex_unlock(&s->group_mu);
            lead_one_batch(s, &job);
            pthread_mutex_lock(&s->group_mu);
            s->group_leading = false;
            continue;
        }
        pthread_cond_wait(&job.cv, &s->group_mu);
    }
    /* Hand the lead over to the next writer in line (it may be asleep). */
    if (!s->group_leading && s->group_head)
        pthread_cond_signal(&s->group_head->cv);
    pthread_mutex_unlock(&s->group_mu);
    pthread_cond_destroy(&job.cv);
    if (rev && job.rc == KW_OK)
        *rev = job.rev;
    return job.rc;
}

/* ---- holding the graph still ---- */

kw_revision_t kw_sync_hold(kw_sync_t *s)
{
    /* Every change of the graph (a commit's apply, the follower's catch-up, a resync, a
     * schema swap) runs under write_mu, and applied_rev moves only under it: while it is
     * held the graph is exactly the state at applied_rev. */
    pthread_mutex_lock(&s->write_mu);
    return kw_sync_applied(s);
}

void kw_sync_release(kw_sync_t *s)
{
    pthread_mutex_unlock(&s->write_mu);
}

/* ---- the schema write ---- */

/* After the live swap: ONE store transaction stores the text in meta "schema", runs the
 * caller's `fn` (the audit event, kw_sync_write_schema_with) and commits, so text, event
 * and revision are durable together or not at all. The transaction adds no relationship
 * change: its revision is the change's (the writtenAt token), and on PostgreSQL its
 * NOTIFY makes every other instance's follower cross it and re-read the stored schema
 * (schema.c). Under the write mutex. */
static int announce_schema(kw_sync_t *s, kw_str_t text, kw_sync_tx_fn fn, void *ud,
                           kw_revision_t *rev, kw_diag_t *d)
{
    kw_store_tx_t *tx = NULL;
    kw_revision_t r = 0;
    int rc = kw_store_tx_begin(s->store, &tx, d);
    if (rc != KW_OK)
        return rc;
    rc = kw_store_tx_meta_set(tx, "schema", text);
    if (rc == KW_OK && fn)
        rc = fn(tx, ud, d);
    if (rc != KW_OK) {
        kw_store_tx_rollback(tx);
        return rc;
    }
    rc = kw_store_tx_commit(tx, &r, d);
    if (rc != KW_OK) {
        /* A lost COMMIT on PostgreSQL: the outcome is unknown here; if it did commit, the
         * follower installs the stored text when it crosses the revision. The caller gets
         * 503 and may simply retry. */
        kw_log(KW_LOG_WARN, KW_MODULE, "the schema's revision could not be committed: %s",
               kw_err_name(rc));
        return rc;
    }
    if (kw__sync_remember_schema(s, text) != KW_OK)
        kw_log(KW_LOG_WARN, KW_MODULE,
               "out of memory remembering the schema text; the "
               "follower will re-read it");
    if (s->follows) {
        kw_diag_t cd;
        kw_diag_clear(&cd);
        if (kw_sync_catch_up(s, &cd) != KW_OK)
            kw_log(KW_LOG_WARN, KW_MODULE,
                   "schema at revision %" PRIu64 " committed; the follower will catch up",
                   (uint64_t)r);
    } else {
        kw__sync_advance(s, r);
    }
    *rev = r;
    return KW_OK;
}

int kw_sync_write_schema(kw_sync_t *s, kw_str_t text, kw_revision_t *rev, kw_diag_t *diag)
{
    return kw_sync_write_schema_with(s, text, NULL, NULL, rev, diag);
}

int kw_sync_write_schema_with(kw_sync_t *s, kw_str_t text, kw_sync_tx_fn fn, void *ud,
                              kw_revision_t *rev, kw_diag_t *diag)
{
    kw_buf_t old;
    kw_buf_init(&old);
    kw_revision_t r = 0;
    pthread_mutex_lock(&s->write_mu);
    /* The live swap is judged against every relationship committed so far (other
     * instances' too). */
    int rc = kw_sync_catch_up(s, diag);
    if (rc == KW_OK)
        rc = kw_engine_schema_text(s->engine, &old);
    if (rc == KW_OK && old.failed)
        rc = KW_ENOMEM;
    if (rc == KW_OK)
        rc = kw_engine_set_schema(s->engine, text, NULL, diag);
    if (rc == KW_OK) {
        rc = announce_schema(s, text, fn, ud, &r, diag);
        if (rc != KW_OK) {
            /* Not committed: the live schema goes back, so memory and disk agree. */
            int rb = kw_engine_set_schema(s->engine, (kw_str_t){old.ptr ? old.ptr : "", old.len},
                                          NULL, NULL);
            if (rb != KW_OK)
                kw_log(KW_LOG_ERROR, KW_MODULE, "could not restore the previous schema: %s",
                       kw_err_name(rb));
        }
    }
    pthread_mutex_unlock(&s->write_mu);
    kw_buf_free(&old);
    if (rc == KW_OK && rev)
        *rev = r;
    return rc;
}
