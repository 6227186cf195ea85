/*
 * authz/write.c - mutations of the relationship graph: batch validation
 * (kw_engine_validate), atomic write batches (kw_engine_write) and delete by filter
 * (kw_engine_delete_matching).
 *
 * Both mutations run whole under the engine's write lock, so a reader never sees half a
 * batch, and each gets the next revision (or the store's revision `at`).
 */
#include <stdlib.h>

#include "authz/engine_int.h"

/* ---- validation ---- */

/* A batch entry: the resolved relationship, its identity hash and (later) its nodes. */
typedef struct bent {
    kw_rrel_t rr;
    uint64_t h;
    uint32_t hr, hs; /* kw__graph_hash of the resource and the subject */
    uint32_t idx;
    uint32_t rnode, snode;
    bool exists;
    bool has_attr; /* attr holds this CREATE/TOUCH's caveat and/or expiry (owned) */
    kw_attr_t attr;
} bent_t;

/* The relationship's identity hash, from its nodes' hashes (each id is hashed once per
 * write; equal hashes are compared in full). */
static uint64_t rel_hash(const kw_rrel_t *rr, uint32_t hr, uint32_t hs)
{
    uint64_t x = ((uint64_t)hr << 32 | hs) ^ ((uint64_t)rr->rel << 16 | rr->srel);
    return kw_hash_u64(x);
}

static bool same_rel(const bent_t *a, const bent_t *b, const kw_update_t *ups)
{
    const kw_rel_t *x = &ups[a->idx].rel, *y = &ups[b->idx].rel;
    return a->rr.rtype == b->rr.rtype && a->rr.rel == b->rr.rel && a->rr.stype == b->rr.stype &&
           a->rr.srel == b->rr.srel && kw_str_eq(x->resource.id, y->resource.id) &&
           kw_str_eq(x->subject.id, y->subject.id);
}

/* Resolves every update into ents (in the batch's order) and refuses duplicates: an
 * open-addressing table of entry indexes keyed by identity hash, at most half full. */
static int validate_batch(const kw_schema_t *s, const kw_update_t *ups, size_t n, bent_t *ents,
                          kw_diag_t *diag)
{
    kw_resolve_memo_t memo = {0};
    for (size_t i = 0; i < n; i++) {
        if (ups[i].op != KW_OP_CREATE && ups[i].op != KW_OP_TOUCH && ups[i].op != KW_OP_DELETE)
            return kw_diag_set(diag, KW_EINVAL, 0, 0, "update %zu has an unknown operation", i);
        int rc = kw__resolve_rel_memo(s, &ups[i].rel, &ents[i].rr, &memo, diag);
        if (rc != KW_OK)
            return rc;
        ents[i].idx = (uint32_t)i;
        const kw_rel_t *r = &ups[i].rel;
        ents[i].hr = kw__graph_hash(ents[i].rr.rtype, r->resource.id.ptr, r->resource.id.len);
        ents[i].hs = kw__graph_hash(ents[i].rr.stype, r->subject.id.ptr, r->subject.id.len);
        ents[i].h = rel_hash(&ents[i].rr, ents[i].hr, ents[i].hs);
        ents[i].rnode = ents[i].snode = KW_NODE_NONE;
        ents[i].exists = false;
    }
    if (n < 2)
        return KW_OK;
    if (n > UINT32_MAX / 4)
        return kw_diag_set(diag, KW_ELIMIT, 0, 0, "a write batch holds at most %u updates",
                           UINT32_MAX / 4);
    uint32_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    uint32_t *seen = kw_calloc(cap, sizeof(uint32_t)); /* entry + 1; 0: empty */
    if (!seen)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while checking the batch");
    int rc = KW_OK;
    for (size_t i = 0; i < n && rc == KW_OK; i++) {
        uint32_t k = (uint32_t)ents[i].h & (cap - 1);
        for (; seen[k] != 0; k = (k + 1) & (cap - 1)) {
            const bent_t *o = &ents[seen[k] - 1];
            if (o->h == ents[i].h && same_rel(o, &ents[i], ups)) {
                char buf[200];
                kw__fmt_rel(&ups[i].rel, buf, sizeof(buf));
                rc = kw_diag_set(diag, KW_EINVAL, 0, 0,
                                 "relationship %s appears more than once in the batch", buf);
                break;
            }
        }
        seen[k] = (uint32_t)i + 1;
    }
    kw_free(seen);
    return rc;
}

/* What only a new write is refused for (not a store's or a file's replay): an expiry at
 * or before now, and a caveat context that does not bind to the caveat's parameters. */
static int validate_new(const kw_schema_t *s, const kw_update_t *ups, const bent_t *ents, size_t n,
                        int64_t now, kw_diag_t *diag)
{
    for (size_t i = 0; i < n; i++) {
        const kw_rel_t *r = &ups[ents[i].idx].rel;
        if (ups[ents[i].idx].op == KW_OP_DELETE)
            continue;
        if (r->expires_at != 0 && r->expires_at <= now) {
            char buf[200];
            kw__fmt_rel(r, buf, sizeof(buf));
            return kw_diag_set(diag, KW_EINVAL, 0, 0,
                               "relationship %s has an expiration time in the past", buf);
        }
        kw_attr_t a;
        bool has = false;
        int rc = kw__attr_make(s, &ents[i].rr, r, &a, &has, diag);
        if (rc != KW_OK)
            return rc;
        if (has)
            kw__attr_release(&a);
    }
    return KW_OK;
}

int kw_engine_validate(kw_engine_t *e, const kw_update_t *ups, size_t n, kw_diag_t *diag)
{
    bent_t *ents = kw_calloc(n ? n : 1, sizeof(bent_t));
    if (!ents)
        return KW_ENOMEM;
    int64_t now = kw_engine_now(e);
    kw__engine_rdlock(e);
    int rc = e->model ? validate_batch(e->model->schema, ups, n, ents, diag)
                      : kw__engine_no_schema(diag);
    if (rc == KW_OK)
        rc = validate_new(e->model->schema, ups, ents, n, now, diag);
    kw__engine_unlock(e);
    kw_free(ents);
    return rc;
}

/* ---- write batches ---- */

/* Frees nodes without edges among the ones a failed or finished batch touched. */
static void gc_ents(kw_graph_t *g, const bent_t *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ents[i].rnode != KW_NODE_NONE)
            kw__graph_gc(g, ents[i].rnode);
        if (ents[i].snode != KW_NODE_NONE)
            kw__graph_gc(g, ents[i].snode);
    }
}

/*
 * The phases of one write batch, run in this order under the write lock. Everything that
 * can fail (validation, preconditions, interning, reserving edge capacity, scratch space)
 * happens before any edge changes; the last phase cannot fail.
 *   write_validate  resolve every update, refuse duplicates, check `at` and preconditions;
 *   write_resolve   find the existing nodes and relationships (CREATE of an existing one:
 *                   KW_EEXISTS unless `at` says the store already enforced uniqueness);
 *   write_prepare   intern the endpoints of every relationship to add and reserve room for
 *                   its edges (on failure: drop the nodes this batch created);
 *   write_apply     append, merge, remove, free nodes left without edges.
 */

/* Does entry b add a relationship (CREATE or TOUCH of one not stored yet)? */
static bool adds(const bent_t *b, const kw_update_t *ups)
{
    return ups[b->idx].op != KW_OP_DELETE && !b->exists;
}

/* Frees the attribute records a batch made and did not hand to the graph. */
static void release_attrs(bent_t *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ents[i].has_attr)
            kw__attr_release(&ents[i].attr);
        ents[i].has_attr = false;
    }
}

static int write_validate(const kw_engine_t *e, const kw_update_t *ups, size_t n,
                          const kw_precondition_t *pre, size_t n_pre, kw_revision_t at,
                          bent_t *ents, kw_diag_t *diag)
{
    int rc = validate_batch(e->model->schema, ups, n, ents, diag);
    if (rc == KW_OK)
        rc = kw__engine_check_at(e, at, diag);
    if (rc == KW_OK)
        rc = kw__check_preconditions(e, pre, n_pre, diag);
    return rc;
}

/* Existence against the state before the batch (there are no duplicates inside it). */
static int write_resolve(const kw_graph_t *g, const kw_update_t *ups, size_t n, kw_revision_t at,
                         int64_t now, bent_t *ents, kw_diag_t *diag)
{
    for (size_t i = 0; i < n; i++) {
        bent_t *b = &ents[i];
        const kw_rel_t *r = &ups[b->idx].rel;
        const uint16_t types[2] = {b->rr.rtype, b->rr.stype};
        const kw_str_t ids[2] = {r->resource.id, r->subject.id};
        uint32_t found[2];
        const uint32_t hs[2] = {b->hr, b->hs};
        kw__graph_find2_h(g, types, ids, hs, found);
        uint32_t rn = found[0], sn = found[1];
        b->exists = rn != KW_NODE_NONE && sn != KW_NODE_NONE &&
                    kw__graph_has(g, rn, b->rr.rel, sn, b->rr.srel);
        /* An expired relationship is not there: CREATE replaces it like TOUCH. */
        bool live =
            b->exists && !kw__attr_expired(kw__attr_find(g, rn, b->rr.rel, sn, b->rr.srel), now);
        if (live && ups[b->idx].op == KW_OP_CREATE && at == 0) {
            char buf[200];
            kw__fmt_rel(r, buf, sizeof(buf));
            return kw_diag_set(diag, KW_EEXISTS, 0, 0, "relationship %s already exists", buf);
        }
        /* Remembered for every entry: interning below skips nodes that exist, and gc
         * at the end leaves nodes that still have edges alone. */
        b->rnode = rn;
        b->snode = sn;
    }
    return KW_OK;
}

/* Appends per node in one batch, in an open-addressing table keyed by node. */
typedef struct ncount {
    uint32_t key; /* node + 1; 0: empty */
    uint32_t fwd, rev;
} ncount_t;

/* The entry of `node` (inserted with zero counts when absent; the table is sized to stay
 * at most half full). */
static ncount_t *count_at(ncount_t *t, uint32_t mask, uint32_t node)
{
    uint32_t i = (uint32_t)kw_hash_u64(node) & mask;
    while (t[i].key != 0 && t[i].key != node + 1)
        i = (i + 1) & mask;
    t[i].key = node + 1;
    return &t[i];
}

/* Appends per node: `direct` (fwd, rev per node) or the table `t`. */
typedef struct counts {
    uint32_t *direct;
    ncount_t *t;
    uint32_t mask;
} counts_t;

static int counts_init(counts_t *c, uint32_t n_nodes, size_t n_adds)
{
    if (n_adds > UINT32_MAX / 8)
        return KW_ENOMEM;
    if (n_nodes <= 4 * n_adds) {
        c->direct = kw_calloc((size_t)n_nodes * 2, sizeof(uint32_t));
        return c->direct ? KW_OK : KW_ENOMEM;
    }
    uint32_t cap = 16;
    while (cap < 4 * n_adds)
        cap *= 2;
    c->mask = cap - 1;
    c->t = kw_calloc(cap, sizeof(ncount_t));
    return c->t ? KW_OK : KW_ENOMEM;
}

static uint32_t *count_fwd(counts_t *c, uint32_t node)
{
    return c->direct ? &c->direct[2 * (size_t)node] : &count_at(c->t, c->mask, node)->fwd;
}

static uint32_t *count_rev(counts_t *c, uint32_t node)
{
    return c->direct ? &c->direct[2 * (size_t)node + 1] : &count_at(c->t, c->mask, node)->rev;
}

/* Interns the endpoints of every relationship to add, reserves their edge room and
 * allocates the merge scratch (*scratch, NULL when nothing is added). */
static int write_prepare(kw_graph_t *g, const kw_schema_t *s, const kw_update_t *ups, size_t n,
                         bent_t *ents, kw_edge_t **scratch, kw_diag_t *diag)
{
    int rc = KW_OK;
    /* The caveats and expiries to store: contexts copied and bound first. */
    uint32_t n_attr = 0;
    for (size_t i = 0; i < n; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE)
            continue;
        rc = kw__attr_make(s, &b->rr, &ups[b->idx].rel, &b->attr, &b->has_attr, diag);
        if (rc != KW_OK) {
            release_attrs(ents, n);
            return rc;
        }
        n_attr += b->has_attr;
    }
    if (n_attr && kw__attr_reserve(g, n_attr) != KW_OK) {
        release_attrs(ents, n);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while applying the write");
    }
    for (size_t i = 0; i < n && rc == KW_OK; i++) {
        bent_t *b = &ents[i];
        if (!adds(b, ups))
            continue;
        const kw_rel_t *r = &ups[b->idx].rel;
        if (b->rnode == KW_NODE_NONE)
            rc = kw__graph_intern_h(g, b->rr.rtype, r->resource.id.ptr, r->resource.id.len, b->hr,
                                    &b->rnode);
        if (rc == KW_OK && b->snode == KW_NODE_NONE)
            rc = kw__graph_intern_h(g, b->rr.stype, r->subject.id.ptr, r->subject.id.len, b->hs,
                                    &b->snode);
    }
    /* Count appends per node (entries share nodes), then reserve each node's total: in an
     * array by node when the batch is large against the graph (a load), else in a table. */
    size_t max_tail = 0, n_adds = 0;
    for (size_t i = 0; i < n; i++)
        n_adds += adds(&ents[i], ups);
    counts_t c = {0};
    if (rc == KW_OK && n_adds)
        rc = counts_init(&c, g->n_nodes, n_adds);
    for (size_t i = 0; i < n && rc == KW_OK && n_adds; i++) {
        if (!adds(&ents[i], ups))
            continue;
        uint32_t f = ++*count_fwd(&c, ents[i].rnode);
        uint32_t rv = ++*count_rev(&c, ents[i].snode);
        if (f > max_tail)
            max_tail = f;
        if (rv > max_tail)
            max_tail = rv;
    }
    for (size_t i = 0; i < n && rc == KW_OK && n_adds; i++) {
        const bent_t *b = &ents[i];
        if (!adds(b, ups))
            continue;
        rc = kw__graph_reserve(g, b->rnode, *count_fwd(&c, b->rnode), 0);
        if (rc == KW_OK)
            rc = kw__graph_reserve(g, b->snode, 0, *count_rev(&c, b->snode));
    }
    kw_free(c.t);
    kw_free(c.direct);
    *scratch = NULL;
    if (rc == KW_OK && max_tail) {
        *scratch = kw_calloc(max_tail, sizeof(kw_edge_t));
        if (!*scratch)
            rc = KW_ENOMEM;
    }
    if (rc != KW_OK) {
        release_attrs(ents, n);
        gc_ents(g, ents, n);
        return kw_diag_set(diag, rc, 0, 0, "out of memory while applying the write");
    }
    return KW_OK;
}

/* Cannot fail: everything it needs was reserved by write_prepare. */
static void write_apply(kw_graph_t *g, const kw_update_t *ups, size_t n, bent_t *ents,
                        kw_edge_t *scratch)
{
    for (size_t i = 0; i < n; i++) {
        const bent_t *b = &ents[i];
        if (adds(b, ups))
            kw__graph_append(g, b->rnode, b->rr.rel, b->snode, b->rr.srel);
    }
    for (size_t i = 0; i < n; i++) {
        const bent_t *b = &ents[i];
        if (!adds(b, ups))
            continue;
        uint32_t two[2] = {b->rnode, b->snode};
        kw__graph_finish(g, two, 2, scratch);
    }
    /* Attributes: set (room reserved) or, for a TOUCH without any, cleared. */
    for (size_t i = 0; i < n; i++) {
        bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE)
            continue;
        if (b->has_attr) {
            b->attr.rnode = b->rnode;
            b->attr.snode = b->snode;
            kw__attr_put(g, &b->attr);
            b->has_attr = false; /* the graph owns it now */
        } else if (b->exists) {
            kw__attr_del(g, b->rnode, b->rr.rel, b->snode, b->rr.srel);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE && b->exists)
            kw__graph_remove(g, b->rnode, b->rr.rel, b->snode, b->rr.srel);
    }
    gc_ents(g, ents, n);
}

/* ---- the change log (history.c) ---- */

static const char *const TOO_LARGE = "a change batch larger than the whole window was applied at "
                                     "that revision";

/* Captures what a batch is about to replace, before it is applied: per update its
 * relationship and prior state. false (nothing kept; the log restarts after the batch)
 * when no history is kept, the batch is larger than the window, or memory runs out. */
static bool hist_capture_write(const kw_engine_t *e, const kw_update_t *ups, size_t n,
                               const bent_t *ents, kw_hbatch_t *out, const char **why)
{
    *why = TOO_LARGE;
    if (!kw__hist_on(e) || n > e->hist.max_changes)
        return false;
    kw_hchange_t *v = kw_calloc(n ? n : 1, sizeof(kw_hchange_t));
    size_t m = 0;
    *why = "the change log ran out of memory";
    if (!v)
        return false;
    for (size_t i = 0; i < n; i++) {
        const bent_t *b = &ents[i];
        if (ups[b->idx].op == KW_OP_DELETE && !b->exists)
            continue; /* nothing changes */
        if (b->exists) {
            kw__hist_edge_rel(e, b->rnode, b->rr.rel, b->snode, b->rr.srel, &v[m].rel);
            v[m].had = true;
        } else {
            v[m].rel = ups[b->idx].rel;
            v[m].rel.caveat = v[m].rel.caveat_ctx = KW_STR_NULL;
            v[m].rel.expires_at = 0;
            v[m].had = false;
        }
        m++;
    }
    int rc = kw__hist_batch_make(v, m, out);
    kw_free(v);
    return rc == KW_OK;
}

int kw_engine_write(kw_engine_t *e, const kw_update_t *ups, size_t n, const kw_precondition_t *pre,
                    size_t n_pre, kw_revision_t at, kw_revision_t *rev, kw_diag_t *diag)
{
    bent_t *ents = kw_calloc(n ? n : 1, sizeof(bent_t));
    if (!ents)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while applying the write");
    kw_edge_t *scratch = NULL;
    kw__engine_wrlock(e);
    int rc = e->model ? KW_OK : kw__engine_no_schema(diag);
    if (rc == KW_OK)
        rc = write_validate(e, ups, n, pre, n_pre, at, ents, diag);
    if (rc == KW_OK)
        rc = write_resolve(&e->g, ups, n, at, kw__engine_query_now(e), ents, diag);
    if (rc == KW_OK)
        rc = write_prepare(&e->g, e->model->schema, ups, n, ents, &scratch, diag);
    if (rc == KW_OK) {
        kw_hbatch_t hb;
        const char *why = NULL;
        bool logged = hist_capture_write(e, ups, n, ents, &hb, &why);
        write_apply(&e->g, ups, n, ents, scratch);
        kw__engine_bump(e, at, rev);
        kw__hist_push(e, logged ? &hb : NULL, why);
    }
    kw__engine_unlock(e);
    kw_free(scratch);
    kw_free(ents);
    return rc;
}

/* ---- delete by filter ---- */

int kw_engine_delete_matching(kw_engine_t *e, const kw_filter_t *filter,
                              const kw_precondition_t *pre, size_t n_pre, size_t limit,
                              kw_revision_t at, size_t *n_deleted, kw_revision_t *rev,
                              kw_diag_t *diag)
{
    kw_matches_t col = {0};
    kw__engine_wrlock(e);
    int rc = e->model ? KW_OK : kw__engine_no_schema(diag);
    kw_cfilter_t cf;
    if (rc == KW_OK)
        rc = kw__filter_compile(e, filter, &cf, diag);
    if (rc == KW_OK)
        rc = kw__engine_check_at(e, at, diag);
    if (rc == KW_OK)
        rc = kw__check_preconditions(e, pre, n_pre, diag);
    if (rc == KW_OK && kw__filter_collect(&e->g, &cf, &col) != KW_OK)
        rc = kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while deleting");
    if (rc == KW_OK && limit && col.n > limit)
        rc = kw_diag_set(diag, KW_ELIMIT, 0, 0,
                         "%zu relationships match the filter, more than the limit of %zu", col.n,
                         limit);
    if (rc == KW_OK) {
        /* The change log: every removed relationship, stored before. */
        kw_hbatch_t hb;
        bool logged = kw__hist_on(e) && col.n <= e->hist.max_changes;
        const char *why = TOO_LARGE;
        kw_hchange_t *v = logged ? kw_calloc(col.n ? col.n : 1, sizeof(kw_hchange_t)) : NULL;
        if (logged && v) {
            for (size_t i = 0; i < col.n; i++) {
                kw__hist_edge_rel(e, col.rnodes[i], col.edges[i].rel, col.edges[i].other,
                                  col.edges[i].other_rel, &v[i].rel);
                v[i].had = true;
            }
        }
        if (logged && (!v || kw__hist_batch_make(v, col.n, &hb) != KW_OK)) {
            logged = false;
            why = "the change log ran out of memory";
        }
        kw_free(v);
        for (size_t i = 0; i < col.n; i++)
            kw__graph_remove(&e->g, col.rnodes[i], col.edges[i].rel, col.edges[i].other,
                             col.edges[i].other_rel);
        for (size_t i = 0; i < col.n; i++) {
            kw__graph_gc(&e->g, col.rnodes[i]);
            kw__graph_gc(&e->g, col.edges[i].other);
        }
        kw__engine_bump(e, at, rev);
        kw__hist_push(e, logged ? &hb : NULL, why);
        if (n_deleted)
            *n_deleted = col.n;
    }
    kw__engine_unlock(e);
    kw__matches_free(&col);
    return rc;
}
