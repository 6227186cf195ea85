/*
 * authz/swap.c - replacing the engine's whole state: a schema swap
 * (kw_engine_set_schema: the stored relationships re-resolved under the new schema) and a
 * whole-graph replacement (kw_engine_replace_graph: relationships from a feed, maybe
 * under a new schema).
 *
 * Both go through build_then_swap (tag-kw-engine-swap): the new graph is built privately,
 * without the write lock, then swapped in under it with its model, or nothing changes.
 */
#include "authz/engine_int.h"

/* Fills the private graph `ng` under schema `s`, without the engine's write lock. Sets
 * *base to the engine revision its source reflects (the swap happens only if the engine
 * is still there) and *fed to the revision the new state reflects (0: none). */
typedef int (*build_fn)(kw_engine_t *e, const kw_schema_t *s, kw_graph_t *ng, void *ud,
                        kw_revision_t *base, kw_revision_t *fed, kw_diag_t *diag);

/*
 * tag-kw-engine-swap: the one way a whole new state replaces the engine's. `build` fills
 * a new graph under (*m)'s schema; then, under the write lock, the graph and *m are swapped
 * in if the engine is still at the build's base revision (else KW_ECONFLICT and nothing
 * changes). The new state is visible at the build's fed revision when that is above the
 * engine's, else at the engine's next one. On KW_OK *m is the old model; either way the
 * caller frees *m. The graph left over (the old one, or the unused new one) is freed
 * outside the lock. `oom` is the message of an allocation failure here.
 */
static int build_then_swap(kw_engine_t *e, kw_model_t **m, build_fn build, void *ud,
                           const char *oom, kw_revision_t *rev, kw_diag_t *diag)
{
    kw_graph_t ng;
    if (kw__graph_init(&ng) != KW_OK)
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "%s", oom);
    kw_revision_t base = 0, fed = 0;
    int rc = build(e, (*m)->schema, &ng, ud, &base, &fed, diag);
    if (rc == KW_OK) {
        kw__engine_wrlock(e);
        if (e->rev != base) {
            rc = kw_diag_set(diag, KW_ECONFLICT, 0, 0,
                             "the engine changed while the new graph was built (revision "
                             "%llu, now %llu): nothing was replaced",
                             (unsigned long long)base, (unsigned long long)e->rev);
        } else {
            kw_graph_t old = e->g;
            e->g = ng;
            ng = old;
            kw_model_t *om = e->model;
            e->model = *m;
            *m = om;
            kw__engine_bump(e, fed > e->rev ? fed : 0, rev);
            /* The change log cannot undo a whole new state (history.c). */
            kw__hist_reset(e, "the schema was written or the whole graph was reloaded at "
                              "that revision");
        }
        kw__engine_unlock(e);
    }
    kw__graph_close(&ng);
    return rc;
}

/* ---- the schema swap ---- */

/* Copies every relationship of `old` (under schema `os`) into `ng` under schema `ns`,
 * refusing the first one the new schema does not accept. Node by node: each node is
 * interned once and its edges, already sorted, are merged in one pass per node. */
static int rebuild_graph(const kw_graph_t *old, const kw_schema_t *os, const kw_schema_t *ns,
                         kw_graph_t *ng, kw_diag_t *diag)
{
    uint32_t *map = kw_calloc(old->n_nodes ? old->n_nodes : 1, sizeof(uint32_t));
    if (!map)
        return KW_ENOMEM;
    int rc = KW_OK;
    size_t max_tail = 0;
    /* 1. validate every relationship, intern its endpoints */
    for (uint32_t n = 0; n < old->n_nodes && rc == KW_OK; n++) {
        map[n] = KW_NODE_NONE;
        const kw_node_t *nd = &old->nodes[n];
        if (!kw__node_live(nd))
            continue;
        uint16_t t = kw_schema_type_index(ns, os->types[nd->type].name);
        if (t == KW_TYPE_NONE) {
            rc = kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                             "cannot remove definition \"%.*s\": relationships still use it "
                             "(e.g. %.*s:%.*s)",
                             KW_STR_FMT(os->types[nd->type].name),
                             KW_STR_FMT(os->types[nd->type].name), KW_STR_FMT(kw__node_str(nd)));
            break;
        }
        kw_str_t id = kw__node_str(nd);
        rc = kw__graph_intern(ng, t, id.ptr, id.len, &map[n]);
    }
    for (uint32_t n = 0; n < old->n_nodes && rc == KW_OK; n++) {
        const kw_node_t *nd = &old->nodes[n];
        if (!kw__node_live(nd))
            continue;
        const kw_eslice_t fwd = kw__node_fwd(nd), rev = kw__rev(old, n);
        if (fwd.n > max_tail)
            max_tail = fwd.n;
        if (rev.n > max_tail)
            max_tail = rev.n;
        rc = kw__graph_reserve(ng, map[n], fwd.n, rev.n);
        for (uint32_t i = 0; i < fwd.n && rc == KW_OK; i++) {
            const kw_edge_t *ed = &fwd.v[i];
            const kw_node_t *sn = &old->nodes[ed->other];
            kw_rel_t r = {
                .resource = {os->types[nd->type].name, kw__node_str(nd)},
                .relation = os->types[nd->type].rels[ed->rel].name,
                .subject = {os->types[sn->type].name, kw__node_str(sn),
                            kw__rel_name(os, sn->type, ed->other_rel)},
            };
            const kw_attr_t *oa = kw__attr_find(old, n, ed->rel, ed->other, ed->other_rel);
            if (oa) {
                if (oa->caveat != KW_CAVEAT_NONE)
                    r.caveat = os->caveats[oa->caveat].name;
                r.caveat_ctx = (kw_str_t){oa->ctx, oa->ctx_len};
                r.expires_at = oa->expires_at;
            }
            kw_rrel_t rr;
            kw_diag_t d2;
            kw_diag_clear(&d2);
            char buf[200];
            if (r.caveat.len && kw_schema_caveat_index(ns, r.caveat) == KW_CAVEAT_NONE) {
                kw__fmt_rel(&r, buf, sizeof(buf));
                rc = kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                                 "cannot remove caveat \"%.*s\": relationships still use it "
                                 "(e.g. %s)",
                                 KW_STR_FMT(r.caveat), buf);
            } else if (kw__resolve_rel(ns, &r, &rr, &d2) != KW_OK) {
                kw__fmt_rel(&r, buf, sizeof(buf));
                rc = kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                                 "the new schema does not accept the existing relationship %s: %s",
                                 buf, d2.msg);
            } else if (oa) {
                /* The context bound again, to the new schema's program of the caveat. */
                kw_attr_t na;
                bool has = false;
                rc = kw__attr_make(ns, &rr, &r, &na, &has, &d2);
                if (rc == KW_EINVAL) {
                    kw__fmt_rel(&r, buf, sizeof(buf));
                    rc = kw_diag_set(diag, KW_ESCHEMA, 0, 0,
                                     "the new schema does not accept the existing relationship "
                                     "%s: %s",
                                     buf, d2.msg);
                } else if (rc == KW_OK && has) {
                    na.rnode = map[n];
                    na.snode = map[ed->other];
                    rc = kw__attr_reserve(ng, 1);
                    if (rc == KW_OK)
                        kw__attr_put(ng, &na);
                    else
                        kw__attr_release(&na);
                }
            }
        }
    }
    kw_edge_t *scratch = NULL;
    if (rc == KW_OK && max_tail) {
        scratch = kw_calloc(max_tail, sizeof(kw_edge_t));
        if (!scratch)
            rc = KW_ENOMEM;
    }
    if (rc == KW_OK) {
        for (uint32_t n = 0; n < old->n_nodes; n++) {
            const kw_node_t *nd = &old->nodes[n];
            if (!kw__node_live(nd))
                continue;
            uint16_t t = ng->nodes[map[n]].type;
            const kw_eslice_t fwd = kw__node_fwd(nd);
            for (uint32_t i = 0; i < fwd.n; i++) {
                const kw_edge_t *ed = &fwd.v[i];
                uint16_t st = ng->nodes[map[ed->other]].type;
                uint16_t rel = kw_schema_rel_index(ns, t, os->types[nd->type].rels[ed->rel].name);
                uint16_t srel =
                    ed->other_rel == KW_REL_NONE
                        ? KW_REL_NONE
                        : kw_schema_rel_index(
                              ns, st,
                              os->types[old->nodes[ed->other].type].rels[ed->other_rel].name);
                kw__graph_append(ng, map[n], rel, map[ed->other], srel);
            }
        }
        for (uint32_t n = 0; n < ng->n_nodes; n++)
            kw__graph_finish(ng, &n, 1, scratch);
    }
    kw_free(scratch);
    kw_free(map);
    return rc;
}

/* The build of a schema swap: the installed relationships, read under the read lock
 * (queries go on; a write waits until the copy is made). */
static int build_from_engine(kw_engine_t *e, const kw_schema_t *s, kw_graph_t *ng, void *ud,
                             kw_revision_t *base, kw_revision_t *fed, kw_diag_t *diag)
{
    (void)ud;
    *fed = 0;
    kw__engine_rdlock(e);
    *base = e->rev;
    int rc = KW_OK;
    if (e->model && e->g.n_rels)
        rc = rebuild_graph(&e->g, e->model->schema, s, ng, diag);
    kw__engine_unlock(e);
    if (rc == KW_ENOMEM)
        kw_diag_set(diag, rc, 0, 0, "out of memory while installing the schema");
    return rc;
}

int kw_engine_set_schema(kw_engine_t *e, kw_str_t text, kw_revision_t *rev, kw_diag_t *diag)
{
    kw_schema_t *s = NULL;
    int rc = kw_schema_compile(text, &s, diag);
    if (rc != KW_OK)
        return rc;
    kw_model_t *m = NULL;
    rc = kw__model_new(s, &m);
    if (rc != KW_OK)
        return kw_diag_set(diag, rc, 0, 0, "out of memory while installing the schema");
    /* A write between the copy and the swap makes the copy stale: copy again. (In the
     * server every engine mutation runs under the API's write mutex, so it does not.) */
    for (;;) {
        rc = build_then_swap(e, &m, build_from_engine, NULL,
                             "out of memory while installing the schema", rev, diag);
        if (rc != KW_ECONFLICT)
            break;
        kw_diag_clear(diag);
    }
    kw__model_free(m);
    return rc;
}

/* ---- replacing the whole graph ---- */

/* The state of one kw_engine_replace_graph build: the private schema and graph the feed's
 * relationships go into. Nothing here is visible to readers until the swap. */
typedef struct rebuild {
    const kw_schema_t *s;
    kw_graph_t *g;
    int rc; /* the first error of on_feed (the feed then returns the stop value) */
    kw_diag_t *diag;
} rebuild_t;

static int on_feed(const kw_rel_t *r, void *ud)
{
    rebuild_t *b = ud;
    kw_rrel_t rr;
    kw_diag_t d2;
    kw_diag_clear(&d2);
    if (kw__resolve_rel(b->s, r, &rr, &d2) != KW_OK) {
        char buf[200];
        kw__fmt_rel(r, buf, sizeof(buf));
        b->rc = kw_diag_set(b->diag, KW_ESCHEMA, 0, 0,
                            "the schema does not accept the relationship %s: %s", buf, d2.msg);
        return 1;
    }
    /* A private graph: a failure below leaves it half built, and it is thrown away whole. */
    kw_attr_t a;
    bool has = false;
    int rc = kw__attr_make(b->s, &rr, r, &a, &has, &d2);
    if (rc == KW_EINVAL) {
        char buf[200];
        kw__fmt_rel(r, buf, sizeof(buf));
        b->rc = kw_diag_set(b->diag, KW_ESCHEMA, 0, 0,
                            "the schema does not accept the relationship %s: %s", buf, d2.msg);
        return 1;
    }
    uint32_t rn, sn;
    if (rc == KW_OK)
        rc = kw__graph_intern(b->g, rr.rtype, r->resource.id.ptr, r->resource.id.len, &rn);
    if (rc == KW_OK)
        rc = kw__graph_intern(b->g, rr.stype, r->subject.id.ptr, r->subject.id.len, &sn);
    if (rc == KW_OK)
        rc = kw__graph_reserve(b->g, rn, 1, 0);
    if (rc == KW_OK)
        rc = kw__graph_reserve(b->g, sn, 0, 1);
    if (rc == KW_OK && has)
        rc = kw__attr_reserve(b->g, 1);
    if (rc != KW_OK) {
        if (has)
            kw__attr_release(&a);
        b->rc = kw_diag_set(b->diag, KW_ENOMEM, 0, 0, "out of memory while building the graph");
        return 1;
    }
    kw__graph_append(b->g, rn, rr.rel, sn, rr.srel);
    if (has) {
        a.rnode = rn;
        a.snode = sn;
        kw__attr_put(b->g, &a); /* a repeated relationship: the last one's attributes win */
    } else {
        kw__attr_del(b->g, rn, rr.rel, sn, rr.srel);
    }
    return 0;
}

typedef struct feed_build {
    kw_rel_feed_fn feed;
    void *ud;
    kw_revision_t base; /* the engine's revision when the replacement began */
} feed_build_t;

/* The build of a replacement: every relationship of the feed, without any engine lock
 * (the feed may query the engine). */
static int build_from_feed(kw_engine_t *e, const kw_schema_t *s, kw_graph_t *ng, void *ud,
                           kw_revision_t *base, kw_revision_t *fed, kw_diag_t *diag)
{
    (void)e;
    feed_build_t *fb = ud;
    rebuild_t b = {s, ng, KW_OK, diag};
    *base = fb->base;
    int rc = fb->feed(fb->ud, on_feed, &b, fed);
    if (b.rc != KW_OK)
        rc = b.rc;
    else if (rc > 0)
        rc = kw_diag_set(diag, KW_EINTERNAL, 0, 0, "the relationship feed stopped with %d", rc);
    else if (rc != KW_OK)
        rc = kw_diag_set(diag, rc, 0, 0, "reading the relationships failed: %s", kw_strerror(rc));
    if (rc == KW_OK)
        kw__graph_seal(ng);
    return rc;
}

int kw_engine_replace_graph(kw_engine_t *e, kw_str_t schema, kw_rel_feed_fn feed, void *ud,
                            kw_revision_t *rev, kw_diag_t *diag)
{
    if (!e || !feed)
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "kw_engine_replace_graph needs a feed");
    /* The schema to build under, compiled privately: the installed model may be swapped
     * and freed while we build. `base` tells at the end whether anything changed. */
    kw_buf_t text;
    kw_buf_init(&text);
    kw__engine_rdlock(e);
    feed_build_t fb = {feed, ud, e->rev};
    bool installed = e->model != NULL;
    if (schema.len == 0 && installed)
        kw_buf_append(&text, e->model->schema->text.ptr, e->model->schema->text.len);
    kw__engine_unlock(e);
    if (schema.len == 0 && !installed)
        return kw__engine_no_schema(diag);
    if (text.failed) {
        kw_buf_free(&text);
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while building the graph");
    }
    kw_schema_t *s = NULL;
    int rc = kw_schema_compile(schema.len ? schema : (kw_str_t){text.ptr, text.len}, &s, diag);
    kw_buf_free(&text);
    if (rc != KW_OK)
        return rc;
    kw_model_t *m = NULL;
    if (kw__model_new(s, &m) != KW_OK) /* frees s on failure */
        return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory while building the graph");
    rc = build_then_swap(e, &m, build_from_feed, &fb, "out of memory while building the graph", rev,
                         diag);
    kw__model_free(m);
    return rc;
}
