/*
 * authz/graph.c - the in-memory relationship graph: node interning and sorted edge arrays.
 *
 * Invariants (outside a write batch): every live node has at least one edge; fwd arrays
 * are sorted by kw__fwd_key, rev arrays by kw__rev_key, without duplicates; every fwd
 * edge node#rel@other#orel has the mirror rev edge on `other`. Writers follow the
 * reserve/append/finish protocol so a batch never fails half-applied: everything that
 * allocates happens in reserve, append and finish cannot fail.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "authz/graph_int.h"

#define HASH_SEED 0x6b77677261706821ULL

static uint32_t node_hash(uint16_t type, const char *id, size_t len)
{
    return (uint32_t)kw_hash(id, len, HASH_SEED ^ ((uint64_t)type * 0x9e3779b97f4a7c15ULL));
}

/* Asks for transparent huge pages on a big table (the node table and the hash slots):
 * Check touches them at random, and with 4 KiB pages nearly every lookup also missed the
 * TLB. Advice only: failure or a kernel without THP changes nothing but speed. */
static void advise_huge(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    const uintptr_t page = 4096;
    if (bytes < ((size_t)4 << 20))
        return;
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)p + bytes) & ~(page - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

int kw__graph_init(kw_graph_t *g)
{
    memset(g, 0, sizeof(*g));
    g->free_head = KW_NODE_NONE;
    memset(g->wild, 0xff, sizeof(g->wild));
    g->n_slots = 1024;
    g->slots = kw_malloc(sizeof(uint64_t) * g->n_slots);
    if (!g->slots)
        return KW_ENOMEM;
    memset(g->slots, 0xff, sizeof(uint64_t) * g->n_slots);
    return KW_OK;
}

static void node_free_id(kw_node_t *nd)
{
    if (nd->flags & KW_NODE_HEAP_ID)
        kw_free(nd->id.heap);
}

void kw__graph_close(kw_graph_t *g)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        node_free_id(&g->nodes[i]);
        kw_free(g->nodes[i].fwd.v);
        kw_free(g->nodes[i].rev.v);
    }
    kw_free(g->nodes);
    kw_free(g->slots);
    kw__attr_close(&g->attrs);
    memset(g, 0, sizeof(*g));
}

static inline bool node_is(const kw_node_t *nd, uint16_t type, const char *id, size_t len)
{
    return nd->type == type && nd->id_len == len && memcmp(kw__node_id(nd), id, len) == 0;
}

static inline void prefetch_node(const kw_node_t *nd)
{
    __builtin_prefetch(nd);
    __builtin_prefetch((const char *)nd + sizeof(*nd) - 1);
}

/* Continues a probe at slot i for hash h (the first candidate already failed or was
 * never tried). */
static uint32_t probe_from(const kw_graph_t *g, uint32_t i, uint32_t h, uint16_t type,
                           const char *id, size_t len)
{
    uint32_t mask = g->n_slots - 1;
    for (;; i = (i + 1) & mask) {
        uint64_t s = g->slots[i];
        if (s == KW_SLOT_EMPTY)
            return KW_NODE_NONE;
        if (kw__slot_hash(s) == h && node_is(&g->nodes[kw__slot_node(s)], type, id, len))
            return kw__slot_node(s);
    }
}

uint32_t kw__graph_find(const kw_graph_t *g, uint16_t type, const char *id, size_t len)
{
    uint32_t h = node_hash(type, id, len);
    return probe_from(g, h & (g->n_slots - 1), h, type, id, len);
}

/* The first slot index at or after h's home whose entry is empty or carries tag h. */
static inline uint32_t first_candidate(const kw_graph_t *g, uint32_t h)
{
    uint32_t mask = g->n_slots - 1;
    uint32_t i = h & mask;
    for (;; i = (i + 1) & mask) {
        uint64_t s = g->slots[i];
        if (s == KW_SLOT_EMPTY || kw__slot_hash(s) == h)
            return i;
    }
}

void kw__graph_find2(const kw_graph_t *g, const uint16_t type[2], const kw_str_t id[2],
                     uint32_t out[2])
{
    uint32_t mask = g->n_slots - 1;
    uint32_t h[2], i[2];
    for (int k = 0; k < 2; k++) {
        h[k] = node_hash(type[k], id[k].ptr, id[k].len);
        __builtin_prefetch(&g->slots[h[k] & mask]);
    }
    for (int k = 0; k < 2; k++) {
        i[k] = first_candidate(g, h[k]);
        uint64_t s = g->slots[i[k]];
        if (s != KW_SLOT_EMPTY)
            prefetch_node(&g->nodes[kw__slot_node(s)]);
    }
    for (int k = 0; k < 2; k++) {
        uint64_t s = g->slots[i[k]];
        if (s == KW_SLOT_EMPTY)
            out[k] = KW_NODE_NONE;
        else if (node_is(&g->nodes[kw__slot_node(s)], type[k], id[k].ptr, id[k].len))
            out[k] = kw__slot_node(s);
        else /* a 32-bit tag collision: rare, keep probing */
            out[k] = probe_from(g, (i[k] + 1) & mask, h[k], type[k], id[k].ptr, id[k].len);
    }
}

static void slot_insert(uint64_t *slots, uint32_t mask, uint32_t h, uint32_t node)
{
    uint32_t i = h & mask;
    while (slots[i] != KW_SLOT_EMPTY)
        i = (i + 1) & mask;
    slots[i] = ((uint64_t)h << 32) | node;
}

static int grow_slots(kw_graph_t *g)
{
    uint32_t n = g->n_slots * 2;
    uint64_t *s = kw_malloc(sizeof(uint64_t) * (size_t)n);
    if (!s)
        return KW_ENOMEM;
    advise_huge(s, sizeof(uint64_t) * (size_t)n);
    memset(s, 0xff, sizeof(uint64_t) * (size_t)n);
    for (uint32_t i = 0; i < g->n_slots; i++)
        if (g->slots[i] != KW_SLOT_EMPTY)
            slot_insert(s, n - 1, kw__slot_hash(g->slots[i]), kw__slot_node(g->slots[i]));
    kw_free(g->slots);
    g->slots = s;
    g->n_slots = n;
    return KW_OK;
}

int kw__graph_intern(kw_graph_t *g, uint16_t type, const char *id, size_t len, uint32_t *out)
{
    uint32_t found = kw__graph_find(g, type, id, len);
    if (found != KW_NODE_NONE) {
        *out = found;
        return KW_OK;
    }
    if (len > KW_MAX_OBJECT_ID_LEN)
        return KW_EINVAL;
    /* Keep the table at most half full so probes stay short. */
    if ((size_t)(g->n_live + 1) * 2 > g->n_slots && grow_slots(g) != KW_OK)
        return KW_ENOMEM;
    if (g->free_head == KW_NODE_NONE && g->n_nodes == g->cap_nodes) {
        size_t cap = g->cap_nodes;
        if (kw_grow((void **)&g->nodes, &cap, (size_t)g->n_nodes + 1, sizeof(kw_node_t)) != KW_OK)
            return KW_ENOMEM;
        if (cap > UINT32_MAX - 1)
            cap = UINT32_MAX - 1;
        g->cap_nodes = (uint32_t)cap;
        advise_huge(g->nodes, cap * sizeof(kw_node_t));
    }
    char *copy = NULL;
    if (len >= KW_NODE_ID_INLINE && !(copy = kw_strndup(id, len)))
        return KW_ENOMEM;
    uint32_t n;
    if (g->free_head != KW_NODE_NONE) {
        n = g->free_head;
        g->free_head = g->nodes[n].hash;
    } else {
        n = g->n_nodes++;
    }
    kw_node_t *nd = &g->nodes[n];
    memset(nd, 0, sizeof(*nd));
    nd->flags = KW_NODE_LIVE;
    if (copy) {
        nd->flags |= KW_NODE_HEAP_ID;
        nd->id.heap = copy;
        g->id_bytes += len + 1;
    } else {
        memcpy(nd->id.inl, id, len);
        nd->id.inl[len] = '\0';
    }
    nd->id_len = (uint32_t)len;
    nd->type = type;
    nd->hash = node_hash(type, id, len);
    slot_insert(g->slots, g->n_slots - 1, nd->hash, n);
    g->n_live++;
    if (len == 1 && id[0] == '*')
        g->wild[type] = n;
    *out = n;
    return KW_OK;
}

/* Backward-shift deletion keeps linear probing correct without tombstones. */
static void slot_delete(kw_graph_t *g, uint32_t node)
{
    uint32_t mask = g->n_slots - 1;
    uint32_t i = g->nodes[node].hash & mask;
    while (kw__slot_node(g->slots[i]) != node)
        i = (i + 1) & mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        uint64_t m = g->slots[j];
        if (m == KW_SLOT_EMPTY)
            break;
        uint32_t home = kw__slot_hash(m) & mask;
        /* Move m into the hole at i unless its home lies cyclically in (i, j]. */
        bool in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            g->slots[i] = m;
            i = j;
        }
    }
    g->slots[i] = KW_SLOT_EMPTY;
}

void kw__graph_gc(kw_graph_t *g, uint32_t node)
{
    kw_node_t *nd = &g->nodes[node];
    if (!kw__node_live(nd) || nd->fwd.n || nd->rev.n)
        return;
    slot_delete(g, node);
    if (nd->id_len == 1 && kw__node_id(nd)[0] == '*')
        g->wild[nd->type] = KW_NODE_NONE;
    if (nd->flags & KW_NODE_HEAP_ID)
        g->id_bytes -= nd->id_len + 1;
    node_free_id(nd);
    kw_free(nd->fwd.v);
    kw_free(nd->rev.v);
    memset(nd, 0, sizeof(*nd));
    nd->type = KW_TYPE_NONE;
    nd->hash = g->free_head;
    g->free_head = node;
    g->n_live--;
}

uint32_t kw__graph_lower(const kw_edge_t *v, uint32_t n, uint64_t key, bool fwd)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint64_t k = fwd ? kw__fwd_key(v[mid].rel, v[mid].other_rel, v[mid].other)
                         : kw__rev_key(v[mid].rel, v[mid].other_rel, v[mid].other);
        if (k < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void kw__graph_fwd_range(const kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t *lo,
                         uint32_t *hi)
{
    const kw_edges_t *es = &g->nodes[node].fwd;
    *lo = kw__graph_lower(es->v, es->n, kw__fwd_key(rel, 0, 0), true);
    *hi =
        rel == UINT16_MAX ? es->n : kw__graph_lower(es->v, es->n, kw__fwd_key(rel + 1, 0, 0), true);
}

bool kw__graph_has(const kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                   uint16_t other_rel)
{
    const kw_edges_t *es = &g->nodes[node].fwd;
    uint64_t key = kw__fwd_key(rel, other_rel, other);
    uint32_t i = kw__graph_lower(es->v, es->n, key, true);
    return i < es->n && es->v[i].rel == rel && es->v[i].other == other &&
           es->v[i].other_rel == other_rel;
}

static int reserve_edges(kw_edges_t *es, uint32_t more)
{
    size_t need = (size_t)es->n + more;
    if (need <= es->cap)
        return KW_OK;
    if (need > UINT32_MAX / 2)
        return KW_ENOMEM;
    size_t cap = es->cap;
    /* Small arrays grow tightly (most objects have a handful of edges); big ones double. */
    size_t want = need < 8 ? need : need + need / 2;
    if (cap < want)
        cap = want;
    kw_edge_t *v = kw_reallocarray(es->v, cap, sizeof(kw_edge_t));
    if (!v)
        return KW_ENOMEM;
    es->v = v;
    es->cap = (uint32_t)cap;
    return KW_OK;
}

int kw__graph_reserve(kw_graph_t *g, uint32_t node, uint32_t n_fwd, uint32_t n_rev)
{
    kw_node_t *nd = &g->nodes[node];
    if (n_fwd && reserve_edges(&nd->fwd, n_fwd) != KW_OK)
        return KW_ENOMEM;
    if (n_rev && reserve_edges(&nd->rev, n_rev) != KW_OK)
        return KW_ENOMEM;
    return KW_OK;
}

/* Appends node#rel@other#other_rel to node's fwd tail and its mirror to other's rev tail;
 * room was reserved. The first append in a batch records the sorted prefix length. */
void kw__graph_append(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                      uint16_t other_rel)
{
    kw_node_t *a = &g->nodes[node];
    if (!(a->dirty & 1)) {
        a->dirty |= 1;
        a->fwd_sorted = a->fwd.n;
    }
    kw_assert(a->fwd.n < a->fwd.cap);
    a->fwd.v[a->fwd.n++] = (kw_edge_t){other, rel, other_rel};
    kw_node_t *b = &g->nodes[other];
    if (!(b->dirty & 2)) {
        b->dirty |= 2;
        b->rev_sorted = b->rev.n;
    }
    kw_assert(b->rev.n < b->rev.cap);
    b->rev.v[b->rev.n++] = (kw_edge_t){node, rel, other_rel};
    g->n_rels++;
}

static int cmp_fwd(const void *pa, const void *pb)
{
    const kw_edge_t *a = pa, *b = pb;
    uint64_t x = kw__fwd_key(a->rel, a->other_rel, a->other);
    uint64_t y = kw__fwd_key(b->rel, b->other_rel, b->other);
    return x < y ? -1 : x > y;
}

static int cmp_rev(const void *pa, const void *pb)
{
    const kw_edge_t *a = pa, *b = pb;
    uint64_t x = kw__rev_key(a->rel, a->other_rel, a->other);
    uint64_t y = kw__rev_key(b->rel, b->other_rel, b->other);
    return x < y ? -1 : x > y;
}

/* Sorts the tail [sorted, n) and merges it into the sorted prefix from the back. */
static void merge_tail(kw_edges_t *es, uint32_t sorted, bool fwd, kw_edge_t *scratch)
{
    uint32_t nt = es->n - sorted;
    if (nt == 0)
        return;
    qsort(es->v + sorted, nt, sizeof(kw_edge_t), fwd ? cmp_fwd : cmp_rev);
    if (sorted == 0)
        return;
    int (*cmp)(const void *, const void *) = fwd ? cmp_fwd : cmp_rev;
    if (cmp(&es->v[sorted - 1], &es->v[sorted]) <= 0)
        return; /* appended in order (the common case for bulk loads) */
    memcpy(scratch, es->v + sorted, nt * sizeof(kw_edge_t));
    int64_t i = (int64_t)sorted - 1, j = (int64_t)nt - 1, k = (int64_t)es->n - 1;
    while (j >= 0) {
        if (i >= 0 && cmp(&es->v[i], &scratch[j]) > 0)
            es->v[k--] = es->v[i--];
        else
            es->v[k--] = scratch[j--];
    }
}

void kw__graph_finish(kw_graph_t *g, const uint32_t *touched, size_t n_touched, kw_edge_t *scratch)
{
    for (size_t t = 0; t < n_touched; t++) {
        kw_node_t *nd = &g->nodes[touched[t]];
        if (!kw__node_live(nd))
            continue;
        if (nd->dirty & 1)
            merge_tail(&nd->fwd, nd->fwd_sorted, true, scratch);
        if (nd->dirty & 2)
            merge_tail(&nd->rev, nd->rev_sorted, false, scratch);
        nd->dirty = 0;
    }
}

/* Sorts a whole edge array and drops repeated edges; returns how many were dropped. Gives
 * back the growth slack of big arrays (optional: a failed shrink keeps the block). */
static uint32_t sort_unique(kw_edges_t *es, bool fwd)
{
    if (es->n > 1)
        qsort(es->v, es->n, sizeof(kw_edge_t), fwd ? cmp_fwd : cmp_rev);
    uint32_t w = es->n ? 1 : 0;
    for (uint32_t i = 1; i < es->n; i++) {
        const kw_edge_t *a = &es->v[w - 1], *b = &es->v[i];
        if (a->other != b->other || a->rel != b->rel || a->other_rel != b->other_rel)
            es->v[w++] = *b;
    }
    uint32_t dropped = es->n - w;
    es->n = w;
    if (es->n > 0 && es->cap >= 8 && es->cap > es->n + es->n / 8) {
        kw_edge_t *v = kw_reallocarray(es->v, es->n, sizeof(kw_edge_t));
        if (v) {
            es->v = v;
            es->cap = es->n;
        }
    }
    return dropped;
}

void kw__graph_seal(kw_graph_t *g)
{
    for (uint32_t n = 0; n < g->n_nodes; n++) {
        kw_node_t *nd = &g->nodes[n];
        if (!kw__node_live(nd))
            continue;
        g->n_rels -= sort_unique(&nd->fwd, true);
        (void)sort_unique(&nd->rev, false); /* the mirrors of the same duplicates */
        nd->dirty = 0;
        nd->fwd_sorted = nd->rev_sorted = 0;
    }
}

static void remove_one(kw_edges_t *es, uint64_t key, bool fwd)
{
    uint32_t i = kw__graph_lower(es->v, es->n, key, fwd);
    kw_assert(i < es->n);
    memmove(es->v + i, es->v + i + 1, (es->n - i - 1) * sizeof(kw_edge_t));
    es->n--;
    /* Give memory back when an array shrinks a lot (keys deleted forever must not leak). */
    if (es->n == 0) {
        kw_free(es->v);
        es->v = NULL;
        es->cap = 0;
    } else if (es->cap > 16 && es->n < es->cap / 4) {
        kw_edge_t *v = kw_reallocarray(es->v, es->cap / 2, sizeof(kw_edge_t));
        if (v) { /* shrinking is optional: on failure keep the bigger block */
            es->v = v;
            es->cap /= 2;
        }
    }
}

void kw__graph_remove(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                      uint16_t other_rel)
{
    kw__attr_del(g, node, rel, other, other_rel);
    remove_one(&g->nodes[node].fwd, kw__fwd_key(rel, other_rel, other), true);
    remove_one(&g->nodes[other].rev, kw__rev_key(rel, other_rel, node), false);
    g->n_rels--;
}

size_t kw__graph_memory(const kw_graph_t *g)
{
    /* malloc keeps ~16 bytes of bookkeeping per block; count it so the estimate is honest. */
    const size_t overhead = 16;
    size_t m = sizeof(*g) + (size_t)g->cap_nodes * sizeof(kw_node_t) +
               (size_t)g->n_slots * sizeof(uint64_t) + kw__attr_memory(&g->attrs);
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const kw_node_t *nd = &g->nodes[i];
        if (!kw__node_live(nd))
            continue;
        if (nd->flags & KW_NODE_HEAP_ID)
            m += ((nd->id_len + 1 + overhead + 15) & ~(size_t)15);
        if (nd->fwd.cap)
            m += nd->fwd.cap * sizeof(kw_edge_t) + overhead;
        if (nd->rev.cap)
            m += nd->rev.cap * sizeof(kw_edge_t) + overhead;
    }
    return m;
}
