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
    const kw_eslice_t fs = kw__fwd(&g, doc), *f = &fs;
    for (uint32_t i = 1; i < f->n; i++)
        KW_ASSERT(kw__fwd_key(f->v[i - 1].rel, f->v[i - 1].other_rel, f->v[i - 1].other) <
                  kw__fwd_key(f->v[i].rel, f->v[i].other_rel, f->v[i].other));
    uint32_t lo, hi;
    kw__graph_fwd_range(&g, doc, 2, &lo, &hi);
    KW_ASSERT_EQ(hi - lo, 3);
    KW_ASSERT_EQ(f->v[lo].other_rel, 0); /* subject sets first within a relation */
    KW_ASSERT(kw__graph_has(&g, doc, 2, u[1], 0));
    KW_ASSERT(!kw__graph_has(&g, doc, 2, u[1], KW_REL_NONE));
    KW_ASSERT_EQ(kw__rev(&g, u[1]).n, 1);
    kw__graph_remove(&g, doc, 2, u[1], 0);
    KW_ASSERT(!kw__graph_has(&g, doc, 2, u[1], 0));
    KW_ASSERT_EQ(kw__rev(&g, u[1]).n, 0);
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
        kw_str_t s = kw__node_str(nd);
        KW_ASSERT_EQ(s.len, lens[i]);
        KW_ASSERT_EQ((nd->flags & KW_NODE_HEAP_ID) != 0, lens[i] > KW_NODE_ID_INLINE);
        KW_ASSERT_EQ((uintptr_t)g.nodes % 64, 0); /* one cache line per record */
        KW_ASSERT(memcmp(s.ptr, id, lens[i]) == 0);
        if (nd->flags & KW_NODE_HEAP_ID)
            KW_ASSERT_EQ(s.ptr[s.len], '\0');
    }
    for (int i = 0; i < 6; i++) {
        KW_ASSERT_EQ(kw__graph_find(&g, 1, id, lens[i]), n[i]);
        KW_ASSERT_EQ(kw__graph_find(&g, 2, id, lens[i]), KW_NODE_NONE);
        id[lens[i] - 1] = 'y';
        KW_ASSERT_EQ(kw__graph_find(&g, 1, id, lens[i]), KW_NODE_NONE);
        id[lens[i] - 1] = 'x';
    }
    KW_ASSERT_EQ(g.id_bytes, (KW_NODE_ID_INLINE + 2) + (KW_MAX_OBJECT_ID_LEN + 1));
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

/* ---- the node layout (tag-kw-node-layout) against a plain model on random graphs ---- */

#define RG_NODES 10
#define RG_RELS 3
/* A relationship a#rel@b#brel of the random graphs; brel KW_REL_NONE or 0. */
typedef struct rg_rel {
    uint32_t a, b;
    uint16_t rel, brel;
} rg_rel_t;

static uint64_t rg_state;
static uint32_t rg_next(uint32_t n)
{
    rg_state ^= rg_state << 13;
    rg_state ^= rg_state >> 7;
    rg_state ^= rg_state << 17;
    return (uint32_t)(rg_state % n);
}

/* model[a][rel][b][brel == 0]: is a#rel@b#brel stored? */
typedef bool rg_model_t[RG_NODES][RG_RELS][RG_NODES][2];

/* Every node's fwd and rev slices hold exactly the model's edges, in key order. */
static void rg_verify(const kw_graph_t *g, const uint32_t *node, rg_model_t m, int *kw_failed_)
{
    size_t total = 0;
    for (uint32_t x = 0; x < RG_NODES; x++) {
        uint32_t nf = 0, nr = 0;
        for (uint32_t r = 0; r < RG_RELS; r++)
            for (uint32_t y = 0; y < RG_NODES; y++)
                for (int s = 0; s < 2; s++) {
                    nf += m[x][r][y][s];
                    nr += m[y][r][x][s];
                }
        total += nf;
        if (node[x] == KW_NODE_NONE) {
            KW_ASSERT_EQ(nf + nr, 0);
            continue;
        }
        kw_eslice_t f = kw__fwd(g, node[x]), v = kw__rev(g, node[x]);
        KW_ASSERT_EQ(f.n, nf);
        KW_ASSERT_EQ(v.n, nr);
        const kw_node_t *nd = &g->nodes[node[x]];
        KW_ASSERT_EQ((nd->flags & KW_NODE_FWD_HEAP) == 0, f.v == nd->fwd.inl);
        for (uint32_t i = 0; i < f.n; i++) {
            uint32_t y = UINT32_MAX;
            for (uint32_t k = 0; k < RG_NODES; k++)
                if (node[k] == f.v[i].other)
                    y = k;
            KW_ASSERT(y != UINT32_MAX);
            KW_ASSERT(m[x][f.v[i].rel][y][f.v[i].other_rel == 0]);
            if (i)
                KW_ASSERT(kw__fwd_key(f.v[i - 1].rel, f.v[i - 1].other_rel, f.v[i - 1].other) <
                          kw__fwd_key(f.v[i].rel, f.v[i].other_rel, f.v[i].other));
        }
        for (uint32_t i = 0; i < v.n; i++) {
            uint32_t y = UINT32_MAX;
            for (uint32_t k = 0; k < RG_NODES; k++)
                if (node[k] == v.v[i].other)
                    y = k;
            KW_ASSERT(y != UINT32_MAX);
            KW_ASSERT(m[y][v.v[i].rel][x][v.v[i].other_rel == 0]);
            if (i)
                KW_ASSERT(kw__rev_key(v.v[i - 1].rel, v.v[i - 1].other_rel, v.v[i - 1].other) <
                          kw__rev_key(v.v[i].rel, v.v[i].other_rel, v.v[i].other));
        }
    }
    KW_ASSERT_EQ(g->n_rels, total);
}

/* Random batches of adds (several per node, so arrays move from in place to the heap in
 * the middle of a batch) and removes (back in place, freed), checked after each batch. */
KW_TEST(graph_layout_matches_model_random)
{
    for (uint64_t seed = 1; seed <= 40; seed++) {
        rg_state = seed * 0x9e3779b97f4a7c15ULL;
        kw_graph_t g;
        KW_ASSERT_EQ(kw__graph_init(&g), KW_OK);
        static rg_model_t m;
        memset(m, 0, sizeof(m));
        uint32_t node[RG_NODES];
        for (int i = 0; i < RG_NODES; i++)
            node[i] = KW_NODE_NONE;
        char id[64];
        for (int round = 0; round < 60; round++) {
            rg_rel_t batch[24];
            size_t nb = 0;
            bool del = rg_next(3) == 0;
            size_t want = 1 + rg_next(24);
            for (size_t k = 0; k < want * 4 && nb < want; k++) {
                rg_rel_t r = {rg_next(RG_NODES), rg_next(RG_NODES), (uint16_t)rg_next(RG_RELS),
                              rg_next(2) ? KW_REL_NONE : 0};
                bool stored = m[r.a][r.rel][r.b][r.brel == 0];
                bool dup = false;
                for (size_t j = 0; j < nb; j++)
                    dup |= batch[j].a == r.a && batch[j].b == r.b && batch[j].rel == r.rel &&
                           batch[j].brel == r.brel;
                if (stored == del && !dup)
                    batch[nb++] = r;
            }
            if (del) {
                for (size_t j = 0; j < nb; j++) {
                    const rg_rel_t *r = &batch[j];
                    kw__graph_remove(&g, node[r->a], r->rel, node[r->b], r->brel);
                    m[r->a][r->rel][r->b][r->brel == 0] = false;
                }
                for (size_t j = 0; j < nb; j++) {
                    uint32_t ends[2] = {batch[j].a, batch[j].b};
                    for (int e = 0; e < 2; e++) {
                        if (node[ends[e]] == KW_NODE_NONE)
                            continue;
                        kw__graph_gc(&g, node[ends[e]]);
                        if (!kw__node_live(&g.nodes[node[ends[e]]]))
                            node[ends[e]] = KW_NODE_NONE;
                    }
                }
            } else {
                uint32_t nf[RG_NODES] = {0}, nr[RG_NODES] = {0};
                for (size_t j = 0; j < nb; j++) {
                    uint32_t ends[2] = {batch[j].a, batch[j].b};
                    for (int e = 0; e < 2; e++)
                        if (node[ends[e]] == KW_NODE_NONE) {
                            snprintf(id, sizeof(id), "%s%u", ends[e] % 3 ? "n" : "long-id-",
                                     ends[e]);
                            if (ends[e] % 3 == 0) /* some ids on the heap */
                                memset(id + strlen(id), 'x', 40), id[60] = '\0';
                            node[ends[e]] = intern(&g, 1, id);
                        }
                    nf[batch[j].a]++;
                    nr[batch[j].b]++;
                }
                size_t max_tail = 1;
                for (int x = 0; x < RG_NODES; x++) {
                    if (nf[x])
                        KW_ASSERT_EQ(kw__graph_reserve(&g, node[x], nf[x], 0), KW_OK);
                    if (nr[x])
                        KW_ASSERT_EQ(kw__graph_reserve(&g, node[x], 0, nr[x]), KW_OK);
                    max_tail = nf[x] > max_tail ? nf[x] : max_tail;
                    max_tail = nr[x] > max_tail ? nr[x] : max_tail;
                }
                kw_edge_t scratch[24];
                KW_ASSERT(max_tail <= 24);
                uint32_t touched[48];
                size_t nt = 0;
                for (size_t j = 0; j < nb; j++) {
                    const rg_rel_t *r = &batch[j];
                    kw__graph_append(&g, node[r->a], r->rel, node[r->b], r->brel);
                    m[r->a][r->rel][r->b][r->brel == 0] = true;
                    touched[nt++] = node[r->a];
                    touched[nt++] = node[r->b];
                }
                kw__graph_finish(&g, touched, nt, scratch);
            }
            rg_verify(&g, node, m, kw_failed_);
            if (*kw_failed_)
                return;
        }
        kw__graph_close(&g);
    }
}

/* A bulk build with repeats, sealed: sorted, unique, exact size, in place when it fits. */
KW_TEST(graph_seal_matches_model_random)
{
    for (uint64_t seed = 1; seed <= 40; seed++) {
        rg_state = seed * 0xd1b54a32d192ed03ULL;
        kw_graph_t g;
        KW_ASSERT_EQ(kw__graph_init(&g), KW_OK);
        static rg_model_t m;
        memset(m, 0, sizeof(m));
        uint32_t node[RG_NODES];
        char id[16];
        for (int i = 0; i < RG_NODES; i++) {
            snprintf(id, sizeof(id), "s%d", i);
            node[i] = intern(&g, 2, id);
        }
        size_t n = rg_next(120);
        for (size_t k = 0; k < n; k++) {
            rg_rel_t r = {rg_next(RG_NODES), rg_next(RG_NODES), (uint16_t)rg_next(RG_RELS),
                          rg_next(2) ? KW_REL_NONE : 0};
            KW_ASSERT_EQ(kw__graph_reserve(&g, node[r.a], 1, 0), KW_OK);
            KW_ASSERT_EQ(kw__graph_reserve(&g, node[r.b], 0, 1), KW_OK);
            kw__graph_append(&g, node[r.a], r.rel, node[r.b], r.brel);
            m[r.a][r.rel][r.b][r.brel == 0] = true;
        }
        kw__graph_seal(&g);
        for (int i = 0; i < RG_NODES; i++) {
            const kw_node_t *nd = &g.nodes[node[i]];
            KW_ASSERT_EQ((nd->flags & KW_NODE_FWD_HEAP) != 0,
                         kw__fwd(&g, node[i]).n > KW_NODE_FWD_INLINE);
            if (nd->flags & KW_NODE_FWD_HEAP)
                KW_ASSERT_EQ(nd->fwd.heap.cap, nd->fwd.heap.n);
            KW_ASSERT_EQ(nd->flags & (KW_NODE_DIRTY_FWD | KW_NODE_DIRTY_REV), 0);
        }
        bool alive[RG_NODES];
        for (int i = 0; i < RG_NODES; i++) {
            kw__graph_gc(&g, node[i]);
            alive[i] = kw__node_live(&g.nodes[node[i]]);
        }
        for (int i = 0; i < RG_NODES; i++)
            if (!alive[i])
                node[i] = KW_NODE_NONE;
        rg_verify(&g, node, m, kw_failed_);
        if (*kw_failed_)
            return;
        kw__graph_close(&g);
    }
}
