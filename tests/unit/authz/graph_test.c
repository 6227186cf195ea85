/*
 * tests/unit/authz/graph_test.c - the relationship graph: interning, hash deletion,
 * node recycling, sorted edge arrays, batch merge.
 */
#include <stdlib.h>

#include "authz/graph_int.h"
#include "engine_helpers.h"
#include "kw_test.h"

static uint32_t intern(kw_graph_t *g, uint16_t t, const char *id)
{
    uint32_t n = KW_NODE_NONE;
    kw_assert(kw__graph_intern(g, t, id, strlen(id), &n) == KW_OK);
    return n;
}

/* Adds one relationship through the batch protocol. */
static void add(kw_graph_t *g, uint32_t a, uint16_t rel, uint32_t b, uint16_t brel)
{
    kw_edge_t scratch[4];
    kw_assert(kw__graph_reserve(g, a, 1, 0) == KW_OK);
    kw_assert(kw__graph_reserve(g, b, 0, 1) == KW_OK);
    kw__graph_append(g, a, rel, b, brel);
    uint32_t two[2] = {a, b};
    kw__graph_finish(g, two, 2, scratch);
}

KW_TEST(graph_intern_find_recycle)
{
    kw_graph_t g;
    KW_ASSERT_EQ(kw__graph_init(&g), KW_OK);
    uint32_t a = intern(&g, 0, "a"), b = intern(&g, 0, "b"), a1 = intern(&g, 1, "a");
    KW_ASSERT(a != b && a != a1);
    KW_ASSERT_EQ(intern(&g, 0, "a"), a);
    KW_ASSERT_EQ(kw__graph_find(&g, 1, "a", 1), a1);
    KW_ASSERT_EQ(kw__graph_find(&g, 2, "a", 1), KW_NODE_NONE);
    /* a node without edges is freed by gc and its id reused */
    kw__graph_gc(&g, b);
    KW_ASSERT_EQ(kw__graph_find(&g, 0, "b", 1), KW_NODE_NONE);
    KW_ASSERT_EQ(kw__graph_find(&g, 0, "a", 1), a);
    uint32_t c = intern(&g, 0, "c");
    KW_ASSERT_EQ(c, b);
    /* wildcard table */
    uint32_t w = intern(&g, 3, "*");
    KW_ASSERT_EQ(g.wild[3], w);
    kw__graph_gc(&g, w);
    KW_ASSERT_EQ(g.wild[3], KW_NODE_NONE);
    kw__graph_close(&g);
}

KW_TEST(graph_hash_delete_keeps_probes_valid)
{
    kw_graph_t g;
    KW_ASSERT_EQ(kw__graph_init(&g), KW_OK);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "n%d", i);
        intern(&g, (uint16_t)(i % 3), id);
    }
    /* delete every other node (they have no edges), then all others must still be found */
    for (int i = 0; i < 5000; i += 2) {
        snprintf(id, sizeof(id), "n%d", i);
        uint32_t n = kw__graph_find(&g, (uint16_t)(i % 3), id, strlen(id));
        KW_ASSERT(n != KW_NODE_NONE);
        kw__graph_gc(&g, n);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "n%d", i);
        uint32_t n = kw__graph_find(&g, (uint16_t)(i % 3), id, strlen(id));
        if ((i % 2 == 0) != (n == KW_NODE_NONE))
            KW_FAIL_("node %s: found=%d", id, n != KW_NODE_NONE);
    }
    KW_ASSERT_EQ(g.n_live, 2500);
    kw__graph_close(&g);
}

KW_TEST(graph_edges_sorted_and_removed)
{
    kw_graph_t g;
    KW_ASSERT_EQ(kw__graph_init(&g), KW_OK);
    uint32_t doc = intern(&g, 0, "doc");
    uint32_t u[8];
    char id[8];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof(id), "u%d", i);
        u[i] = intern(&g, 1, id);
    }
    /* out of order, several relations, subject sets */
    add(&g, doc, 2, u[5], KW_REL_NONE);
    add(&g, doc, 1, u[3], KW_REL_NONE);
    add(&g, doc, 2, u[1], 0);
    add(&g, doc, 2, u[0], KW_REL_NONE);
    add(&g, doc, 1, u[7], KW_REL_NONE);
    KW_ASSERT_EQ(g.n_rels, 5);
    const kw_edges_t *f = &g.nodes[doc].fwd;
    for (uint32_t i = 1; i < f->n; i++)
        KW_ASSERT(kw__fwd_key(f->v[i - 1].rel, f->v[i - 1].other_rel, f->v[i - 1].other) <
                  kw__fwd_key(f->v[i].rel, f->v[i].other_rel, f->v[i].other));
    uint32_t lo, hi;
    kw__graph_fwd_range(&g, doc, 2, &lo, &hi);
    KW_ASSERT_EQ(hi - lo, 3);
    KW_ASSERT_EQ(f->v[lo].other_rel, 0); /* subject sets first within a relation */
    KW_ASSERT(kw__graph_has(&g, doc, 2, u[1], 0));
    KW_ASSERT(!kw__graph_has(&g, doc, 2, u[1], KW_REL_NONE));
    KW_ASSERT_EQ(g.nodes[u[1]].rev.n, 1);
    kw__graph_remove(&g, doc, 2, u[1], 0);
    KW_ASSERT(!kw__graph_has(&g, doc, 2, u[1], 0));
    KW_ASSERT_EQ(g.nodes[u[1]].rev.n, 0);
    kw__graph_gc(&g, u[1]);
    KW_ASSERT_EQ(kw__graph_find(&g, 1, "u1", 2), KW_NODE_NONE);
    KW_ASSERT_EQ(g.n_rels, 4);
    kw__graph_close(&g);
}

/* Keys created and deleted forever must not grow the node table or the memory. */
KW_TEST(graph_churn_does_not_leak_nodes)
{
    kw_engine_t *e = th_engine("definition user {}\n"
                               "definition key { relation owner: user; }\n");
    KW_ASSERT(e);
    char rel[64];
    size_t mem_after_warmup = 0;
    for (int i = 0; i < 3000; i++) {
        snprintf(rel, sizeof(rel), "key:k%d#owner@user:u%d", i, i % 7);
        KW_ASSERT_EQ(th_touch1(e, rel), KW_OK);
        kw_diag_t d;
        const char *one[1] = {rel};
        KW_ASSERT_EQ(th_write_op(e, KW_OP_DELETE, one, 1, &d), KW_OK);
        if (i == 100)
            mem_after_warmup = kw_engine_memory(e);
    }
    KW_ASSERT_EQ(kw_engine_count(e), 0);
    KW_ASSERT(kw_engine_memory(e) <= mem_after_warmup);
    kw_engine_free(e);
}

/* Ids shorter than KW_NODE_ID_INLINE live in the node, longer ones on the heap; both
 * compare exactly (same prefix, different length or last byte never match). */
KW_TEST(graph_inline_and_heap_ids)
{
    kw_graph_t g;
    KW_ASSERT_EQ(kw__graph_init(&g), KW_OK);
    char id[KW_MAX_OBJECT_ID_LEN + 1];
    memset(id, 'x', sizeof(id));
    static const size_t lens[] = {1,
                                  KW_NODE_ID_INLINE - 2,
                                  KW_NODE_ID_INLINE - 1,
                                  KW_NODE_ID_INLINE,
                                  KW_NODE_ID_INLINE + 1,
                                  KW_MAX_OBJECT_ID_LEN};
    uint32_t n[6];
    for (int i = 0; i < 6; i++) {
        KW_ASSERT_EQ(kw__graph_intern(&g, 1, id, lens[i], &n[i]), KW_OK);
        const kw_node_t *nd = &g.nodes[n[i]];
        KW_ASSERT_EQ(nd->id_len, lens[i]);
        KW_ASSERT_EQ((nd->flags & KW_NODE_HEAP_ID) != 0, lens[i] >= KW_NODE_ID_INLINE);
        KW_ASSERT_EQ(strlen(kw__node_id(nd)), lens[i]);
        KW_ASSERT(memcmp(kw__node_id(nd), id, lens[i]) == 0);
    }
    for (int i = 0; i < 6; i++) {
        KW_ASSERT_EQ(kw__graph_find(&g, 1, id, lens[i]), n[i]);
        KW_ASSERT_EQ(kw__graph_find(&g, 2, id, lens[i]), KW_NODE_NONE);
        id[lens[i] - 1] = 'y';
        KW_ASSERT_EQ(kw__graph_find(&g, 1, id, lens[i]), KW_NODE_NONE);
        id[lens[i] - 1] = 'x';
    }
    KW_ASSERT_EQ(g.id_bytes,
                 (KW_NODE_ID_INLINE + 1) + (KW_NODE_ID_INLINE + 2) + (KW_MAX_OBJECT_ID_LEN + 1));
    for (int i = 0; i < 6; i++)
        kw__graph_gc(&g, n[i]);
    KW_ASSERT_EQ(g.id_bytes, 0);
    KW_ASSERT_EQ(g.n_live, 0);
    kw__graph_close(&g);
}

/* find2 answers exactly like two finds, for present and absent keys in every mix, across
 * a table big enough to have long probe runs. */
KW_TEST(graph_find2_matches_find)
{
    kw_graph_t g;
    KW_ASSERT_EQ(kw__graph_init(&g), KW_OK);
    char a[32], b[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(a, sizeof(a), "o%d", i);
        uint32_t n;
        KW_ASSERT_EQ(kw__graph_intern(&g, (uint16_t)(i % 4), a, strlen(a), &n), KW_OK);
    }
    for (int i = 0; i < 30000; i += 7) {
        int j = (i * 31 + 5) % 30000;
        snprintf(a, sizeof(a), "o%d", i);
        snprintf(b, sizeof(b), "o%d", j);
        const uint16_t types[2] = {(uint16_t)(i % 4), (uint16_t)((j + (i & 1)) % 4)};
        const kw_str_t ids[2] = {kw_str_c(a), kw_str_c(b)};
        uint32_t out[2];
        kw__graph_find2(&g, types, ids, out);
        KW_ASSERT_EQ(out[0], kw__graph_find(&g, types[0], a, strlen(a)));
        KW_ASSERT_EQ(out[1], kw__graph_find(&g, types[1], b, strlen(b)));
        KW_ASSERT_EQ(out[0] != KW_NODE_NONE, i < 20000);
    }
    kw__graph_close(&g);
}
