/*
 * authz/graph.c - the in-memory relationship graph: node interning and sorted edge arrays.
 *
 * Invariants (outside a write batch): every live node has at least one edge; fwd arrays
 * are sorted by kw__fwd_key, rev arrays by kw__rev_key, without duplicates; every fwd
 * edge node#rel@other#orel has the mirror rev edge on `other`. Writers follow the
 * reserve/append/finish protocol so a batch never fails half-applied: everything that
 * allocates happens in reserve, append and finish cannot fail.
 * Storage (tag-kw-node-layout in graph_int.h): 64-byte node records with the id and up
 * to KW_NODE_FWD_INLINE fwd edges in place; bigger fwd arrays and every rev array on the
 * heap. Arrays grow with slack while written; kw__graph_seal gives it back.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "authz/graph_int.h"

#define HASH_SEED 0x6b77677261706821ULL

__extension__ typedef unsigned __int128 u128_t;

static inline uint64_t rd64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Multiplies and folds the 128-bit product: every input bit reaches every output bit. */
static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
    u128_t r = (u128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* The hash of an object key (tag 32 bits in the slot, low bits its home). Check hashes
 * two ids per call, so this reads 16 bytes per step and the last 16 (or 8, 4) bytes with
 * overlapping loads instead of byte loops: a 36-byte UUID costs three multiplies. */
static uint32_t node_hash(uint16_t type, const char *id, size_t len)
{
    const uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL;
    uint64_t h = HASH_SEED ^ ((uint64_t)type << 48) ^ (len * k1);
    uint64_t a = 0, b = 0;
    if (len > 16) {
        const char *p = id;
        size_t n = len;
        while (n > 16) {
            h = fold_mul(rd64(p) ^ k0, rd64(p + 8) ^ h);
            p += 16;
            n -= 16;
        }
        a = rd64(id + len - 16);
        b = rd64(id + len - 8);
    } else if (len >= 8) {
        a = rd64(id);
        b = rd64(id + len - 8);
    } else if (len >= 4) {
        a = rd32(id);
        b = rd32(id + len - 4);
    } else if (len > 0) {
        a = ((uint64_t)(unsigned char)id[0] << 16) | ((uint64_t)(unsigned char)id[len >> 1] << 8) |
            (unsigned char)id[len - 1];
    }
    h = fold_mul(a ^ k0, b ^ h ^ k1);
    return (uint32_t)(h ^ (h >> 32));
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

/* The heap id block of a node with KW_NODE_HEAP_ID. */
static char *heap_id(const kw_node_t *nd)
{
    char *p;
    memcpy(&p, nd->id.inl, sizeof(p));
    return p;
}

static void node_free_id(kw_node_t *nd)
{
    if (nd->flags & KW_NODE_HEAP_ID)
        kw_free(heap_id(nd));
}

void kw__graph_close(kw_graph_t *g)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        kw_node_t *nd = &g->nodes[i];
        node_free_id(nd);
        if (nd->flags & KW_NODE_FWD_HEAP)
            kw_free(nd->fwd.heap.v);
        kw_free(g->revs[i]);
    }
    kw_free(g->nodes_mem);
    kw_free(g->revs);
    kw_free(g->slots);
    kw__attr_close(&g->attrs);
    kw__oidx_close(g);
    memset(g, 0, sizeof(*g));
}

static inline bool node_is(const kw_node_t *nd, uint16_t type, const char *id, size_t len)
{
    if (nd->type != type)
        return false;
    kw_str_t s = kw__node_str(nd);
    return s.len == len && memcmp(s.ptr, id, len) == 0;
}

static inline void prefetch_node(const kw_node_t *nd)
{
    __builtin_prefetch(nd); /* one cache line: the array is 64-byte aligned */
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

uint32_t kw__graph_hash(uint16_t type, const char *id, size_t len)
{
    return node_hash(type, id, len);
}

void kw__graph_find2(const kw_graph_t *g, const uint16_t type[2], const kw_str_t id[2],
                     uint32_t out[2])
{
    const uint32_t h[2] = {node_hash(type[0], id[0].ptr, id[0].len),
                           node_hash(type[1], id[1].ptr, id[1].len)};
    kw__graph_find2_h(g, type, id, h, out);
}

void kw__graph_find2_h(const kw_graph_t *g, const uint16_t type[2], const kw_str_t id[2],
                       const uint32_t h[2], uint32_t out[2])
{
    uint32_t mask = g->n_slots - 1;
    uint32_t i[2];
    for (int k = 0; k < 2; k++)
        __builtin_prefetch(&g->slots[h[k] & mask]);
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

/* Grows the node table (64-byte aligned, so a record is one cache line) and the parallel
 * rev array to hold at least `need` nodes. */
static int grow_nodes(kw_graph_t *g, size_t need)
{
    size_t cap = g->cap_nodes ? (size_t)g->cap_nodes * 2 : 64;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX - 1)
        cap = UINT32_MAX - 1;
    if (cap < need)
        return KW_ENOMEM;
    kw_revblk_t **revs = kw_reallocarray(g->revs, cap, sizeof(*revs));
    if (!revs)
        return KW_ENOMEM;
    g->revs = revs; /* a bigger block than needed is harmless if the nodes fail below */
    if (cap > SIZE_MAX / sizeof(kw_node_t) - 1)
        return KW_ENOMEM;
    size_t bytes = cap * sizeof(kw_node_t);
    void *mem = kw_malloc(bytes + 63);
    if (!mem)
        return KW_ENOMEM;
    kw_node_t *nodes = (kw_node_t *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    advise_huge(nodes, bytes);
    if (g->n_nodes)
        memcpy(nodes, g->nodes, (size_t)g->n_nodes * sizeof(kw_node_t));
    kw_free(g->nodes_mem);
    g->nodes_mem = mem;
    g->nodes = nodes;
    g->cap_nodes = (uint32_t)cap;
    return KW_OK;
}

int kw__graph_intern(kw_graph_t *g, uint16_t type, const char *id, size_t len, uint32_t *out)
{
    return kw__graph_intern_h(g, type, id, len, node_hash(type, id, len), out);
}

int kw__graph_intern_h(kw_graph_t *g, uint16_t type, const char *id, size_t len, uint32_t h,
                       uint32_t *out)
{
    uint32_t found = probe_from(g, h & (g->n_slots - 1), h, type, id, len);
    if (found != KW_NODE_NONE) {
        *out = found;
        return KW_OK;
    }
    if (len > KW_MAX_OBJECT_ID_LEN)
        return KW_EINVAL;
    /* Keep the table at most half full so probes stay short. */
    if ((size_t)(g->n_live + 1) * 2 > g->n_slots && grow_slots(g) != KW_OK)
        return KW_ENOMEM;
    if (g->free_head == KW_NODE_NONE && g->n_nodes == g->cap_nodes &&
        grow_nodes(g, (size_t)g->n_nodes + 1) != KW_OK)
        return KW_ENOMEM;
    char *copy = NULL;
    if (len > KW_NODE_ID_INLINE) {
        uint32_t len32 = (uint32_t)len;
        if (!(copy = kw_malloc(sizeof(uint32_t) + len + 1)))
            return KW_ENOMEM;
        memcpy(copy, &len32, sizeof(len32));
        memcpy(copy + sizeof(uint32_t), id, len);
        copy[sizeof(uint32_t) + len] = '\0';
    }
    uint32_t n;
    if (g->free_head != KW_NODE_NONE) {
        n = g->free_head;
        g->free_head = g->nodes[n].id.next_free;
    } else {
        n = g->n_nodes++;
    }
    kw_node_t *nd = &g->nodes[n];
    memset(nd, 0, sizeof(*nd));
    g->revs[n] = NULL;
    nd->flags = KW_NODE_LIVE;
    if (copy) {
        nd->flags |= KW_NODE_HEAP_ID;
        memcpy(nd->id.inl, &copy, sizeof(copy));
        g->id_bytes += len + 1;
    } else {
        memcpy(nd->id.inl, id, len);
        nd->id_len = (uint8_t)len;
    }
    nd->type = type;
    slot_insert(g->slots, g->n_slots - 1, h, n);
    g->n_live++;
    if (len == 1 && id[0] == '*')
        g->wild[type] = n;
    if (g->oidx)
        kw__oidx_added(g, n);
    *out = n;
    return KW_OK;
}

/* Backward-shift deletion keeps linear probing correct without tombstones. */
static void slot_delete(kw_graph_t *g, uint32_t node)
{
    uint32_t mask = g->n_slots - 1;
    kw_str_t id = kw__node_str(&g->nodes[node]);
    uint32_t i = node_hash(g->nodes[node].type, id.ptr, id.len) & mask;
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
    if (!kw__node_live(nd) || kw__node_fwd(nd).n || (g->revs[node] && g->revs[node]->n))
        return;
    if (g->oidx)
        kw__oidx_removed(g, node);
    slot_delete(g, node);
    kw_str_t id = kw__node_str(nd);
    if (id.len == 1 && id.ptr[0] == '*')
        g->wild[nd->type] = KW_NODE_NONE;
    if (nd->flags & KW_NODE_HEAP_ID)
        g->id_bytes -= id.len + 1;
    node_free_id(nd);
    if (nd->flags & KW_NODE_FWD_HEAP)
        kw_free(nd->fwd.heap.v);
    kw_free(g->revs[node]);
    g->revs[node] = NULL;
    memset(nd, 0, sizeof(*nd));
    nd->type = KW_TYPE_NONE;
    nd->id.next_free = g->free_head;
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
    kw_eslice_t es = kw__fwd(g, node);
    if (es.n <= 8) { /* a scan of one or two cache lines beats two binary searches */
        uint32_t i = 0;
        while (i < es.n && es.v[i].rel < rel)
            i++;
        *lo = i;
        while (i < es.n && es.v[i].rel == rel)
            i++;
        *hi = i;
        return;
    }
    *lo = kw__graph_lower(es.v, es.n, kw__fwd_key(rel, 0, 0), true);
    *hi = rel == UINT16_MAX ? es.n : kw__graph_lower(es.v, es.n, kw__fwd_key(rel + 1, 0, 0), true);
}

bool kw__graph_has(const kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                   uint16_t other_rel)
{
    kw_eslice_t es = kw__fwd(g, node);
    uint64_t key = kw__fwd_key(rel, other_rel, other);
    uint32_t i = kw__graph_lower(es.v, es.n, key, true);
    return i < es.n && es.v[i].rel == rel && es.v[i].other == other &&
           es.v[i].other_rel == other_rel;
}

/* The capacity to grow an array to when it must hold `need` edges: small arrays grow
 * tightly (most objects have a handful of edges), big ones by an eighth. A batch reserves
 * all it appends to a node at once, so growth is per batch, not per edge: an eighth keeps
 * the copying amortized (each edge is copied about eight times over an array's life)
 * while the slack stays near 6% of the edges (half measured 44% on agents-1M). */
static size_t grown_cap(size_t need)
{
    return need < 8 ? need : need + need / 8;
}

static int reserve_fwd(kw_node_t *nd, uint32_t more)
{
    if (!(nd->flags & KW_NODE_FWD_HEAP)) {
        uint32_t n = kw__node_ninl(nd);
        size_t need = (size_t)n + more;
        if (need <= KW_NODE_FWD_INLINE)
            return KW_OK;
        if (need > UINT32_MAX / 2)
            return KW_ENOMEM;
        size_t cap = grown_cap(need);
        kw_edge_t *v = kw_reallocarray(NULL, cap, sizeof(kw_edge_t));
        if (!v)
            return KW_ENOMEM;
        memcpy(v, nd->fwd.inl, n * sizeof(kw_edge_t));
        nd->fwd.heap.v = v;
        nd->fwd.heap.n = n;
        nd->fwd.heap.cap = (uint32_t)cap;
        /* In-place edges appended in this batch have no known sorted prefix. */
        nd->fwd.heap.sorted = (nd->flags & KW_NODE_DIRTY_FWD) ? 0 : n;
        nd->flags = (uint8_t)((nd->flags & ((1u << KW_NODE_NINL_SHIFT) - 1)) | KW_NODE_FWD_HEAP);
        return KW_OK;
    }
    kw_fwd_heap_t *h = &nd->fwd.heap;
    size_t need = (size_t)h->n + more;
    if (need <= h->cap)
        return KW_OK;
    if (need > UINT32_MAX / 2)
        return KW_ENOMEM;
    size_t cap = grown_cap(need);
    kw_edge_t *v = kw_reallocarray(h->v, cap, sizeof(kw_edge_t));
    if (!v)
        return KW_ENOMEM;
    h->v = v;
    h->cap = (uint32_t)cap;
    return KW_OK;
}

static int reserve_rev(kw_graph_t *g, uint32_t node, uint32_t more)
{
    kw_revblk_t *b = g->revs[node];
    size_t n = b ? b->n : 0;
    size_t need = n + more;
    if (b && need <= b->cap)
        return KW_OK;
    if (need > UINT32_MAX / 2)
        return KW_ENOMEM;
    size_t cap = grown_cap(need);
    kw_revblk_t *nb = kw_realloc(b, sizeof(kw_revblk_t) + cap * sizeof(kw_edge_t));
    if (!nb)
        return KW_ENOMEM;
    if (!b) {
        nb->n = 0;
        nb->sorted = 0;
        nb->pad_ = 0;
    }
    nb->cap = (uint32_t)cap;
    g->revs[node] = nb;
    return KW_OK;
}

int kw__graph_reserve(kw_graph_t *g, uint32_t node, uint32_t n_fwd, uint32_t n_rev)
{
    if (n_fwd && reserve_fwd(&g->nodes[node], n_fwd) != KW_OK)
        return KW_ENOMEM;
    if (n_rev && reserve_rev(g, node, n_rev) != KW_OK)
        return KW_ENOMEM;
    return KW_OK;
}

/* Appends node#rel@other#other_rel to node's fwd tail and its mirror to other's rev tail;
 * room was reserved. The first append in a batch records the sorted prefix length. */
void kw__graph_append(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                      uint16_t other_rel)
{
    kw_node_t *a = &g->nodes[node];
    const kw_edge_t fe = {other, rel, other_rel};
    if (a->flags & KW_NODE_FWD_HEAP) {
        kw_fwd_heap_t *h = &a->fwd.heap;
        if (!(a->flags & KW_NODE_DIRTY_FWD))
            h->sorted = h->n;
        kw_assert(h->n < h->cap);
        h->v[h->n++] = fe;
    } else {
        uint32_t n = kw__node_ninl(a);
        kw_assert(n < KW_NODE_FWD_INLINE);
        a->fwd.inl[n] = fe;
        a->flags = (uint8_t)((a->flags & ((1u << KW_NODE_NINL_SHIFT) - 1)) |
                             ((n + 1) << KW_NODE_NINL_SHIFT));
    }
    a->flags |= KW_NODE_DIRTY_FWD;
    kw_node_t *bn = &g->nodes[other];
    kw_revblk_t *b = g->revs[other];
    kw_assert(b && b->n < b->cap);
    if (!(bn->flags & KW_NODE_DIRTY_REV)) {
        bn->flags |= KW_NODE_DIRTY_REV;
        b->sorted = b->n;
    }
    b->v[b->n++] = (kw_edge_t){node, rel, other_rel};
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

/* Sorts v[sorted, n) and merges it into the sorted prefix from the back. */
static void merge_tail(kw_edge_t *v, uint32_t n, uint32_t sorted, bool fwd, kw_edge_t *scratch)
{
    uint32_t nt = n - sorted;
    if (nt == 0)
        return;
    int (*cmp)(const void *, const void *) = fwd ? cmp_fwd : cmp_rev;
    qsort(v + sorted, nt, sizeof(kw_edge_t), cmp);
    if (sorted == 0)
        return;
    if (cmp(&v[sorted - 1], &v[sorted]) <= 0)
        return; /* appended in order (the common case for bulk loads) */
    memcpy(scratch, v + sorted, nt * sizeof(kw_edge_t));
    int64_t i = (int64_t)sorted - 1, j = (int64_t)nt - 1, k = (int64_t)n - 1;
    while (j >= 0) {
        if (i >= 0 && cmp(&v[i], &scratch[j]) > 0)
            v[k--] = v[i--];
        else
            v[k--] = scratch[j--];
    }
}

/* Insertion sort of the (at most KW_NODE_FWD_INLINE) in-place fwd edges. */
static void sort_inline(kw_edge_t *v, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        kw_edge_t x = v[i];
        uint32_t j = i;
        for (; j > 0 && cmp_fwd(&v[j - 1], &x) > 0; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

void kw__graph_finish(kw_graph_t *g, const uint32_t *touched, size_t n_touched, kw_edge_t *scratch)
{
    for (size_t t = 0; t < n_touched; t++) {
        uint32_t node = touched[t];
        kw_node_t *nd = &g->nodes[node];
        if (!kw__node_live(nd))
            continue;
        if (nd->flags & KW_NODE_DIRTY_FWD) {
            if (nd->flags & KW_NODE_FWD_HEAP)
                merge_tail(nd->fwd.heap.v, nd->fwd.heap.n, nd->fwd.heap.sorted, true, scratch);
            else
                sort_inline(nd->fwd.inl, kw__node_ninl(nd));
        }
        if ((nd->flags & KW_NODE_DIRTY_REV) && g->revs[node])
            merge_tail(g->revs[node]->v, g->revs[node]->n, g->revs[node]->sorted, false, scratch);
        nd->flags &= (uint8_t) ~(KW_NODE_DIRTY_FWD | KW_NODE_DIRTY_REV);
    }
}

/* Sorts v[0, n) and drops repeated edges; returns the new length. */
static uint32_t sort_unique(kw_edge_t *v, uint32_t n, bool fwd)
{
    if (n > 1)
        qsort(v, n, sizeof(kw_edge_t), fwd ? cmp_fwd : cmp_rev);
    uint32_t w = n ? 1 : 0;
    for (uint32_t i = 1; i < n; i++) {
        const kw_edge_t *a = &v[w - 1], *b = &v[i];
        if (a->other != b->other || a->rel != b->rel || a->other_rel != b->other_rel)
            v[w++] = *b;
    }
    return w;
}

/* Seals a node's fwd edges: sorted, unique, exact size (in place when they fit). Returns
 * how many repeats were dropped. */
static uint32_t seal_fwd(kw_node_t *nd)
{
    if (!(nd->flags & KW_NODE_FWD_HEAP)) {
        uint32_t n = kw__node_ninl(nd);
        uint32_t w = sort_unique(nd->fwd.inl, n, true);
        nd->flags =
            (uint8_t)((nd->flags & ((1u << KW_NODE_NINL_SHIFT) - 1)) | (w << KW_NODE_NINL_SHIFT));
        return n - w;
    }
    kw_fwd_heap_t *h = &nd->fwd.heap;
    uint32_t w = sort_unique(h->v, h->n, true), dropped = h->n - w;
    h->n = w;
    if (w <= KW_NODE_FWD_INLINE) {
        kw_edge_t *v = h->v;
        memcpy(nd->fwd.inl, v, w * sizeof(kw_edge_t));
        kw_free(v);
        nd->flags = (uint8_t)(((nd->flags & ((1u << KW_NODE_NINL_SHIFT) - 1)) & ~KW_NODE_FWD_HEAP) |
                              (w << KW_NODE_NINL_SHIFT));
    } else if (h->cap > w) {
        kw_edge_t *v = kw_reallocarray(h->v, w, sizeof(kw_edge_t));
        if (v) { /* optional: a failed shrink keeps the block */
            h->v = v;
            h->cap = w;
        }
    }
    return dropped;
}

static void seal_rev(kw_graph_t *g, uint32_t node)
{
    kw_revblk_t *b = g->revs[node];
    if (!b)
        return;
    b->n = sort_unique(b->v, b->n, false); /* the mirrors of the fwd repeats */
    b->sorted = 0;
    if (b->n == 0) {
        kw_free(b);
        g->revs[node] = NULL;
    } else if (b->cap > b->n) {
        kw_revblk_t *nb = kw_realloc(b, sizeof(kw_revblk_t) + (size_t)b->n * sizeof(kw_edge_t));
        if (nb) {
            nb->cap = nb->n;
            g->revs[node] = nb;
        }
    }
}

void kw__graph_seal(kw_graph_t *g)
{
    for (uint32_t n = 0; n < g->n_nodes; n++) {
        kw_node_t *nd = &g->nodes[n];
        if (!kw__node_live(nd))
            continue;
        g->n_rels -= seal_fwd(nd);
        seal_rev(g, n);
        nd->flags &= (uint8_t) ~(KW_NODE_DIRTY_FWD | KW_NODE_DIRTY_REV);
    }
}

/* Removes v[i] from an array of n; returns n - 1. */
static uint32_t remove_at(kw_edge_t *v, uint32_t n, uint32_t i)
{
    memmove(v + i, v + i + 1, (n - i - 1) * sizeof(kw_edge_t));
    return n - 1;
}

static void remove_fwd(kw_node_t *nd, uint64_t key)
{
    kw_eslice_t es = kw__node_fwd(nd);
    uint32_t i = kw__graph_lower(es.v, es.n, key, true);
    kw_assert(i < es.n);
    if (!(nd->flags & KW_NODE_FWD_HEAP)) {
        uint32_t n = remove_at(nd->fwd.inl, es.n, i);
        nd->flags =
            (uint8_t)((nd->flags & ((1u << KW_NODE_NINL_SHIFT) - 1)) | (n << KW_NODE_NINL_SHIFT));
    } else {
        kw_fwd_heap_t *h = &nd->fwd.heap;
        h->n = remove_at(h->v, h->n, i);
        /* Give memory back when an array shrinks a lot (keys deleted forever must not
         * leak): back in place once it fits, halved when a quarter full. */
        if (h->n <= KW_NODE_FWD_INLINE) {
            kw_edge_t *v = h->v;
            uint32_t n = h->n;
            memcpy(nd->fwd.inl, v, n * sizeof(kw_edge_t));
            kw_free(v);
            nd->flags =
                (uint8_t)(((nd->flags & ((1u << KW_NODE_NINL_SHIFT) - 1)) & ~KW_NODE_FWD_HEAP) |
                          (n << KW_NODE_NINL_SHIFT));
        } else if (h->cap > 16 && h->n < h->cap / 4) {
            kw_edge_t *v = kw_reallocarray(h->v, h->cap / 2, sizeof(kw_edge_t));
            if (v) { /* shrinking is optional: on failure keep the bigger block */
                h->v = v;
                h->cap /= 2;
            }
        }
    }
    if (kw__node_fwd(nd).n == 0)
        nd->flags &= (uint8_t)~KW_NODE_ATTR; /* no fwd edge, so no attributed one */
}

static void remove_rev(kw_graph_t *g, uint32_t node, uint64_t key)
{
    kw_revblk_t *b = g->revs[node];
    kw_assert(b != NULL);
    uint32_t i = kw__graph_lower(b->v, b->n, key, false);
    kw_assert(i < b->n);
    b->n = remove_at(b->v, b->n, i);
    if (b->n == 0) {
        kw_free(b);
        g->revs[node] = NULL;
    } else if (b->cap > 16 && b->n < b->cap / 4) {
        kw_revblk_t *nb =
            kw_realloc(b, sizeof(kw_revblk_t) + (size_t)(b->cap / 2) * sizeof(kw_edge_t));
        if (nb) {
            nb->cap /= 2;
            g->revs[node] = nb;
        }
    }
}

void kw__graph_remove(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                      uint16_t other_rel)
{
    kw__attr_del(g, node, rel, other, other_rel);
    remove_fwd(&g->nodes[node], kw__fwd_key(rel, other_rel, other));
    remove_rev(g, other, kw__rev_key(rel, other_rel, node));
    g->n_rels--;
}

size_t kw__graph_memory(const kw_graph_t *g)
{
    /* malloc keeps ~16 bytes of bookkeeping per block; count it so the estimate is honest. */
    const size_t overhead = 16;
    size_t m = sizeof(*g) + (size_t)g->cap_nodes * (sizeof(kw_node_t) + sizeof(kw_revblk_t *)) +
               (size_t)g->n_slots * sizeof(uint64_t) + kw__attr_memory(&g->attrs) +
               kw__oidx_memory(g);
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const kw_node_t *nd = &g->nodes[i];
        if (!kw__node_live(nd))
            continue;
        if (nd->flags & KW_NODE_HEAP_ID)
            m += ((sizeof(uint32_t) + kw__node_str(nd).len + 1 + overhead + 15) & ~(size_t)15);
        if (nd->flags & KW_NODE_FWD_HEAP)
            m += nd->fwd.heap.cap * sizeof(kw_edge_t) + overhead;
        if (g->revs[i])
            m += sizeof(kw_revblk_t) + g->revs[i]->cap * sizeof(kw_edge_t) + overhead;
    }
    return m;
}
