/*
 * authz/graph_oidx.c - the id-ordered index of an object type (tag-kw-oidx): the live
 * nodes of the type sorted by their id bytes (memcmp order, a shorter id before the
 * longer one it prefixes: the order of a LookupResources cursor), so an ordered lookup
 * can start at any id and walk forward (lookup_ordered.c).
 *
 * Layout: a big sorted array `main` plus a small sorted array `delta` (the nodes created
 *   since main was last merged), LSM-style. A node freed while in main leaves a tombstone
 *   (KW_OIDX_TOMB) at its place, found by binary search on its id before the id is freed;
 *   a node freed while in delta is removed from it. A freed node index reused for a new
 *   object therefore never sits at a stale place. delta is merged into main (tombstones
 *   dropped) when it passes max(KW_OIDX_DELTA_MIN, n_main / 64) entries. A creation costs
 *   a binary search and a move in delta plus its share of the merges (a few us on a 1M
 *   index, against ~0.3 us per id for a build), so when the changes since the build pass
 *   n_main / 8 + KW_OIDX_DELTA_MIN (a bulk write), or an allocation fails, the index is
 *   dropped and built again by the next ordered lookup of the type.
 * Lifetime and locking: built lazily by the first ordered lookup of the type, under the
 *   engine's read lock (the graph cannot change) and the engine's oidx mutex (one builder;
 *   other readers keep walking the indices already there), then published at the head of
 *   the graph's list with a release store (readers load it with acquire). Maintained by
 *   the graph's writers (kw__graph_intern_h, kw__graph_gc) under the engine's write lock,
 *   when no reader walks. Freed with the graph (a swap replaces the graph and its list).
 * Cost: 4 bytes per node of an indexed type (plus the delta), nothing for types no
 *   ordered lookup has asked for.
 */
#include <stdlib.h>
#include <string.h>

#include "authz/graph_int.h"

#define KW_OIDX_DELTA_MIN 4096u

static int id_cmp(kw_str_t a, kw_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return a.len < b.len ? -1 : a.len > b.len;
}

int kw__oidx_cmp(kw_str_t a, kw_str_t b)
{
    return id_cmp(a, b);
}

static kw_str_t node_id(const kw_graph_t *g, uint32_t n)
{
    return kw__node_str(&g->nodes[n]);
}

kw_oidx_t *kw__oidx_find(const kw_graph_t *g, uint16_t type)
{
    for (kw_oidx_t *x = __atomic_load_n(&g->oidx, __ATOMIC_ACQUIRE); x; x = x->next)
        if (x->type == type)
            return x;
    return NULL;
}

static void oidx_free(kw_oidx_t *x)
{
    kw_free(x->main);
    kw_free(x->delta);
    kw_free(x);
}

void kw__oidx_close(kw_graph_t *g)
{
    kw_oidx_t *x = g->oidx;
    while (x) {
        kw_oidx_t *next = x->next;
        oidx_free(x);
        x = next;
    }
    g->oidx = NULL;
}

/* Unlinks and frees x (write lock held: no reader walks). */
static void oidx_drop(kw_graph_t *g, kw_oidx_t *x)
{
    kw_oidx_t **p = &g->oidx;
    while (*p && *p != x)
        p = &(*p)->next;
    if (*p)
        *p = x->next;
    oidx_free(x);
}

/* First position p of main such that every live entry before p has an id < key (or
 * <= key with `after`). Tombstones are stepped over. */
uint32_t kw__oidx_main_lower(const kw_graph_t *g, const kw_oidx_t *x, kw_str_t key, bool after)
{
    uint32_t lo = 0, hi = x->n_main;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2, m = mid;
        while (m < hi && x->main[m] == KW_OIDX_TOMB)
            m++;
        if (m == hi) {
            hi = mid;
            continue;
        }
        int c = id_cmp(node_id(g, x->main[m]), key);
        if (c < 0 || (after && c == 0))
            lo = m + 1;
        else
            hi = mid;
    }
    return lo;
}

uint32_t kw__oidx_delta_lower(const kw_graph_t *g, const kw_oidx_t *x, kw_str_t key, bool after)
{
    uint32_t lo = 0, hi = x->n_delta;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = id_cmp(node_id(g, x->delta[mid]), key);
        if (c < 0 || (after && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Merges delta into main, dropping tombstones. KW_ENOMEM leaves x as it was. */
static int oidx_merge(const kw_graph_t *g, kw_oidx_t *x)
{
    size_t n = (size_t)x->n_main - x->n_tomb + x->n_delta;
    uint32_t *nm = kw_malloc((n ? n : 1) * sizeof(uint32_t));
    if (!nm)
        return KW_ENOMEM;
    size_t o = 0;
    uint32_t from = 0;
    for (uint32_t i = 0; i <= x->n_delta; i++) {
        uint32_t to =
            i < x->n_delta ? kw__oidx_main_lower(g, x, node_id(g, x->delta[i]), false) : x->n_main;
        if (to < from)
            to = from;
        for (uint32_t k = from; k < to; k++)
            if (x->main[k] != KW_OIDX_TOMB)
                nm[o++] = x->main[k];
        from = to;
        if (i < x->n_delta)
            nm[o++] = x->delta[i];
    }
    kw_free(x->main);
    x->main = nm;
    x->n_main = (uint32_t)o;
    x->n_tomb = 0;
    x->n_delta = 0;
    return KW_OK;
}

void kw__oidx_added(kw_graph_t *g, uint32_t node)
{
    kw_oidx_t *x = kw__oidx_find(g, g->nodes[node].type);
    if (!x)
        return;
    x->n_changes++;
    if (x->n_changes > x->n_main / 8 + KW_OIDX_DELTA_MIN) {
        oidx_drop(g, x); /* cheaper to build again when next asked for */
        return;
    }
    if (x->n_delta == x->cap_delta) {
        size_t cap = x->cap_delta;
        if (kw_grow((void **)&x->delta, &cap, (size_t)x->n_delta + 1, sizeof(uint32_t)) != KW_OK) {
            oidx_drop(g, x);
            return;
        }
        x->cap_delta = (uint32_t)cap;
    }
    uint32_t p = kw__oidx_delta_lower(g, x, node_id(g, node), false);
    memmove(&x->delta[p + 1], &x->delta[p], (size_t)(x->n_delta - p) * sizeof(uint32_t));
    x->delta[p] = node;
    x->n_delta++;
    uint32_t lim = x->n_main / 64 > KW_OIDX_DELTA_MIN ? x->n_main / 64 : KW_OIDX_DELTA_MIN;
    if (x->n_delta > lim && oidx_merge(g, x) != KW_OK)
        oidx_drop(g, x);
}

void kw__oidx_removed(kw_graph_t *g, uint32_t node)
{
    kw_oidx_t *x = kw__oidx_find(g, g->nodes[node].type);
    if (!x)
        return;
    x->n_changes++;
    kw_str_t id = node_id(g, node);
    uint32_t p = kw__oidx_delta_lower(g, x, id, false);
    if (p < x->n_delta && x->delta[p] == node) {
        memmove(&x->delta[p], &x->delta[p + 1], (size_t)(x->n_delta - p - 1) * sizeof(uint32_t));
        x->n_delta--;
        return;
    }
    p = kw__oidx_main_lower(g, x, id, false);
    while (p < x->n_main && x->main[p] == KW_OIDX_TOMB)
        p++;
    if (p < x->n_main && x->main[p] == node) {
        x->main[p] = KW_OIDX_TOMB;
        x->n_tomb++;
        return;
    }
    oidx_drop(g, x); /* not where it must be: never walk a wrong index */
}

/* Build: the ids' first 16 bytes as two big-endian words sort most pairs without
 * touching the nodes again. */
typedef struct oent {
    uint64_t a, b;
    const char *p;
    uint32_t len, node;
} oent_t;

static int oent_cmp(const void *pa, const void *pb)
{
    const oent_t *x = pa, *y = pb;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    if (x->b != y->b)
        return x->b < y->b ? -1 : 1;
    if (x->len <= 16 && y->len <= 16)
        return x->len < y->len ? -1 : x->len > y->len;
    return id_cmp((kw_str_t){x->p, x->len}, (kw_str_t){y->p, y->len});
}

/* Writes the nodes of v[0..n) into out in oent_cmp order (v may be reordered): an LSD
 * radix sort (16-bit digits) of (first word, position) pairs, then the runs sharing a first
 * word by qsort (most runs are one entry). Transient memory: 32 bytes per id
 * here, beside the caller's 32 of v. */
typedef struct okey {
    uint64_t a;
    uint64_t i;
} okey_t;

static int sort_entries(oent_t *v, size_t n, uint32_t *out)
{
    if (n < 4096) {
        if (n > 1)
            qsort(v, n, sizeof(oent_t), oent_cmp);
        for (size_t i = 0; i < n; i++)
            out[i] = v[i].node;
        return KW_OK;
    }
    okey_t *k = kw_malloc(n * sizeof(okey_t)), *t = kw_malloc(n * sizeof(okey_t));
    size_t *cnt = kw_malloc(65536 * sizeof(size_t));
    if (!k || !t || !cnt) {
        kw_free(k);
        kw_free(t);
        kw_free(cnt);
        return KW_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        k[i] = (okey_t){v[i].a, i};
    for (int shift = 0; shift < 64; shift += 16) {
        memset(cnt, 0, 65536 * sizeof(size_t));
        for (size_t i = 0; i < n; i++)
            cnt[(k[i].a >> shift) & 0xffff]++;
        size_t sum = 0;
        for (size_t d = 0; d < 65536; d++) {
            size_t c = cnt[d];
            cnt[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            t[cnt[(k[i].a >> shift) & 0xffff]++] = k[i];
        okey_t *sw = k;
        k = t;
        t = sw;
    }
    kw_free(cnt);
    /* t is free now: a run of equal first words is copied there (as oent_t, packed), sorted
     * and written out. */
    oent_t *run = (oent_t *)t;
    size_t run_cap = n * sizeof(okey_t) / sizeof(oent_t);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && k[j].a == k[i].a)
            j++;
        if (j - i == 1) {
            out[i] = v[k[i].i].node;
        } else if (j - i <= run_cap) {
            for (size_t m = i; m < j; m++)
                run[m - i] = v[k[m].i];
            qsort(run, j - i, sizeof(oent_t), oent_cmp);
            for (size_t m = i; m < j; m++)
                out[m] = run[m - i].node;
        } else {
            /* a run longer than half the ids: sort it in place in v's order of positions */
            oent_t *big = kw_malloc((j - i) * sizeof(oent_t));
            if (!big) {
                kw_free(k);
                kw_free(t);
                return KW_ENOMEM;
            }
            for (size_t m = i; m < j; m++)
                big[m - i] = v[k[m].i];
            qsort(big, j - i, sizeof(oent_t), oent_cmp);
            for (size_t m = i; m < j; m++)
                out[m] = big[m - i].node;
            kw_free(big);
        }
        i = j;
    }
    kw_free(k);
    kw_free(t);
    return KW_OK;
}

static uint64_t be_word(const char *p, size_t len)
{
    uint64_t w = 0;
    for (size_t i = 0; i < 8; i++)
        w = (w << 8) | (i < len ? (uint8_t)p[i] : 0u);
    return w;
}

int kw__oidx_build(const kw_graph_t *g, uint16_t type, kw_oidx_t **out)
{
    kw_oidx_t *x = kw_calloc(1, sizeof(*x));
    if (!x)
        return KW_ENOMEM;
    x->type = type;
    size_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        n += g->nodes[i].type == type && kw__node_live(&g->nodes[i]);
    oent_t *v = kw_malloc((n ? n : 1) * sizeof(oent_t));
    x->main = kw_malloc((n ? n : 1) * sizeof(uint32_t));
    if (!v || !x->main) {
        kw_free(v);
        oidx_free(x);
        return KW_ENOMEM;
    }
    size_t k = 0;
    for (uint32_t i = 0; i < g->n_nodes && k < n; i++) {
        const kw_node_t *nd = &g->nodes[i];
        if (nd->type != type || !kw__node_live(nd))
            continue;
        kw_str_t id = kw__node_str(nd);
        v[k].a = be_word(id.ptr, id.len);
        v[k].b = id.len > 8 ? be_word(id.ptr + 8, id.len - 8) : 0;
        v[k].p = id.ptr;
        v[k].len = (uint32_t)id.len;
        v[k].node = i;
        k++;
    }
    int rc = sort_entries(v, k, x->main);
    if (rc != KW_OK) {
        kw_free(v);
        oidx_free(x);
        return rc;
    }
    x->n_main = (uint32_t)k;
    kw_free(v);
    *out = x;
    return KW_OK;
}

void kw__oidx_publish(kw_graph_t *g, kw_oidx_t *x)
{
    x->next = g->oidx;
    __atomic_store_n(&g->oidx, x, __ATOMIC_RELEASE);
}

size_t kw__oidx_memory(const kw_graph_t *g)
{
    size_t b = 0;
    for (const kw_oidx_t *x = __atomic_load_n(&g->oidx, __ATOMIC_ACQUIRE); x; x = x->next)
        b += sizeof(*x) + (size_t)x->n_main * sizeof(uint32_t) +
             (size_t)x->cap_delta * sizeof(uint32_t);
    return b;
}
