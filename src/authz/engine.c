/*
 * authz/engine.c - the engine object: lifecycle, the lock, revisions and what can be
 * read off the engine as a whole (count, revision, memory, schema text, names).
 *
 * Locking: one writer-preferring reader-writer lock, a "big reader" lock (brlock.c) whose
 * readers write only their own thread's cache line, so reads scale with cores. Queries
 * hold it shared for their whole run (callbacks included); writes hold it exclusively, so
 * a reader never sees half a batch and every answer carries the revision it read. A swap
 * of the whole state (swap.c) builds without it and takes it only to swap pointers. The
 * other files take the lock through kw__engine_rdlock / _wrlock / _unlock (engine_int.h).
 */
#include <time.h>

#include "authz/engine_int.h"

/* ---- lifecycle ---- */

int kw_engine_new(kw_engine_t **out)
{
    kw_engine_t *e = kw_calloc(1, sizeof(*e));
    if (!e)
        goto fail_alloc;
    if (kw__brlock_init(&e->lock) != KW_OK)
        goto fail_lock;
    if (kw__graph_init(&e->g) != KW_OK)
        goto fail_graph;
    if (pthread_mutex_init(&e->oidx_mu, NULL) != 0)
        goto fail_mu;
    if (kw__hist_init(&e->hist) != KW_OK)
        goto fail_hist;
    *out = e;
    return KW_OK;

fail_hist:
    pthread_mutex_destroy(&e->oidx_mu);
fail_mu:
    kw__graph_close(&e->g);
fail_graph:
    kw__brlock_close(&e->lock);
fail_lock:
    kw_free(e);
fail_alloc:
    return KW_ENOMEM;
}

void kw_engine_free(kw_engine_t *e)
{
    if (!e)
        return;
    kw__hist_close(&e->hist);
    kw__graph_close(&e->g);
    kw__model_free(e->model);
    pthread_mutex_destroy(&e->oidx_mu);
    kw__brlock_close(&e->lock);
    kw_free(e);
}

/* ---- the lock and the revision ---- */

void kw__engine_rdlock(kw_engine_t *e)
{
    kw__brlock_rdlock(&e->lock);
}

void kw__engine_wrlock(kw_engine_t *e)
{
    kw__brlock_wrlock(&e->lock);
}

void kw__engine_unlock(kw_engine_t *e)
{
    kw__brlock_unlock(&e->lock);
}

int kw__engine_no_schema(kw_diag_t *diag)
{
    return kw_diag_set(diag, KW_ESCHEMA, 0, 0, "no schema is installed");
}

int kw__engine_check_at(const kw_engine_t *e, kw_revision_t at, kw_diag_t *diag)
{
    if (at != 0 && at <= e->rev)
        return kw_diag_set(diag, KW_EINVAL, 0, 0,
                           "revision %llu is not newer than the engine's revision %llu",
                           (unsigned long long)at, (unsigned long long)e->rev);
    return KW_OK;
}

void kw__engine_bump(kw_engine_t *e, kw_revision_t at, kw_revision_t *rev)
{
    e->rev = at ? at : e->rev + 1;
    if (rev)
        *rev = e->rev;
}

/* ---- the engine as a whole ---- */

size_t kw_engine_count(kw_engine_t *e)
{
    kw__engine_rdlock(e);
    size_t n = e->g.n_rels;
    kw__engine_unlock(e);
    return n;
}

kw_revision_t kw_engine_revision(kw_engine_t *e)
{
    kw__engine_rdlock(e);
    kw_revision_t r = e->rev;
    kw__engine_unlock(e);
    return r;
}

size_t kw_engine_memory(kw_engine_t *e)
{
    kw__engine_rdlock(e);
    size_t n = sizeof(*e) + kw__brlock_memory(&e->lock) + kw__graph_memory(&e->g) +
               kw__model_memory(e->model) + e->hist.bytes + e->hist.cap * sizeof(kw_hbatch_t);
    kw__engine_unlock(e);
    return n;
}

int kw_engine_schema_text(kw_engine_t *e, kw_buf_t *out)
{
    kw__engine_rdlock(e);
    if (e->model)
        kw_buf_append(out, e->model->schema->text.ptr, e->model->schema->text.len);
    kw__engine_unlock(e);
    return out->failed ? KW_ENOMEM : KW_OK;
}

/* ---- time and expiry ---- */

void kw_engine_set_clock(kw_engine_t *e, kw_clock_fn fn, void *ud)
{
    e->clock = fn;
    e->clock_ud = ud;
}

int64_t kw_engine_now(kw_engine_t *e)
{
    return kw__engine_clock(e);
}

int64_t kw__engine_clock(const kw_engine_t *e)
{
    if (e->clock)
        return e->clock(e->clock_ud);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int kw_engine_sweep_expired(kw_engine_t *e, int64_t now, size_t *n_removed)
{
    size_t n = 0;
    if (now == 0)
        now = kw_engine_now(e);
    kw__engine_wrlock(e);
    kw_graph_t *g = &e->g;
    /* Removing an edge moves the table's last entry into its place: walk from the end. */
    for (uint32_t i = g->attrs.n; i-- > 0 && g->attrs.n_expiring;) {
        if (i >= g->attrs.n)
            continue;
        const kw_attr_t *a = &g->attrs.v[i];
        if (!kw__attr_expired(a, now))
            continue;
        uint32_t rn = a->rnode, sn = a->snode;
        kw__graph_remove(g, rn, a->rel, sn, a->srel);
        kw__graph_gc(g, rn);
        kw__graph_gc(g, sn);
        n++;
    }
    kw__engine_unlock(e);
    if (n_removed)
        *n_removed = n;
    return KW_OK;
}

bool kw_engine_has(kw_engine_t *e, kw_str_t type, kw_str_t name, bool *is_permission)
{
    bool ok = false;
    kw__engine_rdlock(e);
    if (e->model) {
        const kw_schema_t *s = e->model->schema;
        uint16_t t = kw_schema_type_index(s, type);
        if (t != KW_TYPE_NONE && name.len == 0) {
            ok = true;
        } else if (t != KW_TYPE_NONE) {
            uint16_t r = kw_schema_rel_index(s, t, name);
            if (r != KW_REL_NONE) {
                ok = true;
                if (is_permission)
                    *is_permission = s->types[t].rels[r].is_permission;
            }
        }
    }
    kw__engine_unlock(e);
    return ok;
}
