/*
 * authz/graph_attr.c - the attribute side table of the graph: the caveat (name, context,
 * the context bound to the caveat's program) and the expiry of the relationships that
 * have them.
 *
 * Why a side table: an edge is 8 bytes and most relationships have no attributes; putting
 * them in the edge would grow every one. Entries live in a dense array indexed by an
 * open-addressing hash (linear probing, backward-shift deletion) keyed by the edge;
 * KW_NODE_ATTR marks the nodes that may be the resource of an entry (set on insertion,
 * cleared when the node loses its last fwd edge), so a query pays one load of a field it
 * already touches when a node has none (tag-kw-edge-attrs).
 * Invariants: one entry per stored attributed edge; n_expiring counts entries with an
 * expiry; the table is mutated only under the engine's write lock (or on a private graph).
 */
#include <string.h>

#include "authz/graph_int.h"

static uint32_t attr_hash(uint32_t node, uint16_t rel, uint32_t snode, uint16_t srel)
{
    uint64_t k = ((uint64_t)node << 32) | snode;
    return (uint32_t)kw_hash_u64(k ^ (((uint64_t)rel << 16 | srel) * 0x9e3779b97f4a7c15ULL));
}

static bool attr_is(const kw_attr_t *a, uint32_t node, uint16_t rel, uint32_t snode, uint16_t srel)
{
    return a->rnode == node && a->snode == snode && a->rel == rel && a->srel == srel;
}

/* The slot holding the entry of the edge, or the empty slot where it would go. */
static uint32_t slot_of(const kw_attrs_t *t, uint32_t node, uint16_t rel, uint32_t snode,
                        uint16_t srel)
{
    uint32_t mask = t->n_slots - 1;
    uint32_t i = attr_hash(node, rel, snode, srel) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t s = t->slots[i];
        if (s == 0 || attr_is(&t->v[s - 1], node, rel, snode, srel))
            return i;
    }
}

const kw_attr_t *kw__attr_find(const kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t snode,
                               uint16_t srel)
{
    const kw_attrs_t *t = &g->attrs;
    if (!(g->nodes[node].flags & KW_NODE_ATTR) || t->n == 0)
        return NULL;
    uint32_t s = t->slots[slot_of(t, node, rel, snode, srel)];
    return s ? &t->v[s - 1] : NULL;
}

static int grow_slots(kw_attrs_t *t, uint32_t want)
{
    uint32_t n = t->n_slots ? t->n_slots : 64;
    while (n < want * 2) {
        if (n > UINT32_MAX / 4)
            return KW_ENOMEM;
        n *= 2;
    }
    if (n == t->n_slots)
        return KW_OK;
    uint32_t *s = kw_calloc(n, sizeof(uint32_t));
    if (!s)
        return KW_ENOMEM;
    for (uint32_t k = 0; k < t->n; k++) {
        const kw_attr_t *a = &t->v[k];
        uint32_t i = attr_hash(a->rnode, a->rel, a->snode, a->srel) & (n - 1);
        while (s[i])
            i = (i + 1) & (n - 1);
        s[i] = k + 1;
    }
    kw_free(t->slots);
    t->slots = s;
    t->n_slots = n;
    return KW_OK;
}

int kw__attr_reserve(kw_graph_t *g, uint32_t more)
{
    kw_attrs_t *t = &g->attrs;
    if (more == 0)
        return KW_OK;
    if (more > UINT32_MAX / 4 - t->n)
        return KW_ENOMEM;
    uint32_t need = t->n + more;
    if (need > t->cap) {
        size_t cap = t->cap;
        if (kw_grow((void **)&t->v, &cap, need, sizeof(kw_attr_t)) != KW_OK)
            return KW_ENOMEM;
        t->cap = cap > UINT32_MAX / 4 ? UINT32_MAX / 4 : (uint32_t)cap;
    }
    return grow_slots(t, need);
}

void kw__attr_release(kw_attr_t *a)
{
    kw_free(a->ctx);
    a->ctx = NULL;
    a->ctx_len = 0;
    kw_cel_ctx_free(a->bound);
    a->bound = NULL;
}

void kw__attr_put(kw_graph_t *g, const kw_attr_t *a)
{
    kw_attrs_t *t = &g->attrs;
    kw_assert(t->n_slots != 0 && (t->n + 1) * 2 <= t->n_slots);
    uint32_t i = slot_of(t, a->rnode, a->rel, a->snode, a->srel);
    if (t->slots[i]) {
        kw_attr_t *old = &t->v[t->slots[i] - 1];
        t->n_expiring -= old->expires_at != 0;
        kw__attr_release(old);
        *old = *a;
    } else {
        kw_assert(t->n < t->cap);
        t->v[t->n] = *a;
        t->slots[i] = ++t->n;
        g->nodes[a->rnode].flags |= KW_NODE_ATTR;
    }
    t->n_expiring += a->expires_at != 0;
}

/* Empties slot i and shifts the entries after it back (no tombstones). */
static void slot_clear(kw_attrs_t *t, uint32_t i)
{
    uint32_t mask = t->n_slots - 1;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t m = t->slots[j];
        if (m == 0)
            break;
        const kw_attr_t *a = &t->v[m - 1];
        uint32_t home = attr_hash(a->rnode, a->rel, a->snode, a->srel) & mask;
        bool in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            t->slots[i] = m;
            i = j;
        }
    }
    t->slots[i] = 0;
}

void kw__attr_del(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t snode, uint16_t srel)
{
    kw_attrs_t *t = &g->attrs;
    if (!(g->nodes[node].flags & KW_NODE_ATTR) || t->n == 0)
        return;
    uint32_t i = slot_of(t, node, rel, snode, srel);
    uint32_t s = t->slots[i];
    if (!s)
        return;
    kw_attr_t *a = &t->v[s - 1];
    t->n_expiring -= a->expires_at != 0;
    kw__attr_release(a);
    slot_clear(t, i);
    /* Keep the array dense: the last entry moves into the hole. */
    uint32_t last = t->n - 1;
    if (s - 1 != last) {
        const kw_attr_t *l = &t->v[last];
        uint32_t li = slot_of(t, l->rnode, l->rel, l->snode, l->srel);
        t->v[s - 1] = *l;
        t->slots[li] = s;
    }
    t->n--;
}

void kw__attr_close(kw_attrs_t *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        kw__attr_release(&t->v[i]);
    kw_free(t->v);
    kw_free(t->slots);
    memset(t, 0, sizeof(*t));
}

size_t kw__attr_memory(const kw_attrs_t *t)
{
    size_t m = (size_t)t->cap * sizeof(kw_attr_t) + (size_t)t->n_slots * sizeof(uint32_t);
    for (uint32_t i = 0; i < t->n; i++)
        if (t->v[i].ctx)
            m += t->v[i].ctx_len + 1 + 16;
    return m;
}
