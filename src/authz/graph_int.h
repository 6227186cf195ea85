/*
 * authz/graph_int.h - the relationship graph and the check context. Internal to
 * src/authz; the engine object is in engine_int.h, the public surface is authz.h.
 *
 * Graph: every object `type:id` (including the wildcard `type:*`, a node with id "*") is
 *   interned to a dense uint32 node id through an open-addressing hash table (linear
 *   probing, backward-shift deletion; each slot carries the key's 32-bit hash so probes
 *   past other keys never touch their nodes). Each node has two sorted edge arrays:
 *     fwd: this node as resource  {other = subject node,  rel = relation,
 *                                  other_rel = subject relation or KW_REL_NONE}
 *          sorted by (rel, other_rel, other);
 *     rev: this node as subject   {other = resource node, rel = relation on the resource,
 *                                  other_rel = this node's subject relation}
 *          sorted by (other_rel, rel, other).
 *   Layout (tag-kw-node-layout): the node record is one 64-byte cache line (the array is
 *   64-byte aligned) holding the type, flags, the id (up to 36 bytes in place, a UUID
 *   fits) and the fwd edges: up to KW_NODE_FWD_INLINE of them in place, more in a heap
 *   array described in the same place. A Check that finds an object through the hash
 *   slot therefore pays one more miss for its id and its edges together. The rev edges,
 *   which only lookups and writes use, live in a block per node reached through the
 *   parallel array `revs` (NULL for the many nodes that are never a subject). Read the
 *   edges only through kw__fwd / kw__rev (slices valid until the graph changes).
 *   A node without edges is freed and its id recycled (free list through the id field).
 * Ownership: the graph owns node id strings and edge arrays. It is mutated only under
 *   the engine's write lock, read under the shared lock.
 */
#ifndef KW_AUTHZ_GRAPH_INT_H
#define KW_AUTHZ_GRAPH_INT_H

#include <string.h>

#include "authz/authz.h"
#include "authz/schema.h"
#include "cel/cel.h"

#define KW_NODE_NONE UINT32_MAX

typedef struct kw_edge {
    uint32_t other;
    uint16_t rel;
    uint16_t other_rel;
} kw_edge_t;

/* A read-only view of a node's fwd or rev edges (valid until the graph changes). */
typedef struct kw_eslice {
    const kw_edge_t *v;
    uint32_t n;
} kw_eslice_t;

/* Ids up to KW_NODE_ID_INLINE bytes (UUIDs are 36) live inside the node record, without a
 * terminating NUL; longer ids are a heap block {uint32_t len; char id[len + 1]}. */
#define KW_NODE_ID_INLINE 36
/* fwd edges kept inside the node record (an API key has three). */
#define KW_NODE_FWD_INLINE 3

/* The fwd edges of a node with more than KW_NODE_FWD_INLINE of them (KW_NODE_FWD_HEAP). */
typedef struct kw_fwd_heap {
    kw_edge_t *v;
    uint32_t n, cap;
    uint32_t sorted; /* during a batch: length of the sorted prefix */
} kw_fwd_heap_t;

/* 64 bytes, one cache line: everything a Check reads of a node. */
typedef struct kw_node {
    union {
        kw_edge_t inl[KW_NODE_FWD_INLINE]; /* the first kw__node_ninl() edges */
        kw_fwd_heap_t heap;                /* KW_NODE_FWD_HEAP */
    } fwd;
    union {
        char inl[KW_NODE_ID_INLINE]; /* id_len bytes, no NUL; with KW_NODE_HEAP_ID the
                                        first bytes hold the heap block's address */
        uint32_t next_free;          /* a free node: the next free node or KW_NODE_NONE */
    } id;
    uint16_t type;  /* KW_TYPE_NONE when free */
    uint8_t flags;  /* KW_NODE_* below; bits 6-7: count of in-place fwd edges */
    uint8_t id_len; /* in-place id length (0 with KW_NODE_HEAP_ID) */
} kw_node_t;

_Static_assert(sizeof(kw_node_t) == 64, "kw_node_t is one cache line");

#define KW_NODE_LIVE 1u
#define KW_NODE_HEAP_ID 2u
#define KW_NODE_FWD_HEAP 4u
/* The node may be the resource of relationships with attributes (graph_attr.c): set when
 * one is stored, cleared when the node loses its last fwd edge. A stale bit only costs
 * an attribute-table probe. */
#define KW_NODE_ATTR 8u
#define KW_NODE_DIRTY_FWD 16u /* batch bookkeeping: fwd tail needs merging */
#define KW_NODE_DIRTY_REV 32u /* batch bookkeeping: rev tail needs merging */
#define KW_NODE_NINL_SHIFT 6

/* The rev edges of a node: one heap block. */
typedef struct kw_revblk {
    uint32_t n, cap;
    uint32_t sorted; /* during a batch: length of the sorted prefix */
    uint32_t pad_;
    kw_edge_t v[];
} kw_revblk_t;

static inline bool kw__node_live(const kw_node_t *nd)
{
    return (nd->flags & KW_NODE_LIVE) != 0;
}
/* The number of in-place fwd edges (without KW_NODE_FWD_HEAP). */
static inline uint32_t kw__node_ninl(const kw_node_t *nd)
{
    return (uint32_t)nd->flags >> KW_NODE_NINL_SHIFT;
}
/* The id of a live node (not NUL-terminated when in place: print it with %.*s). */
static inline kw_str_t kw__node_str(const kw_node_t *nd)
{
    if (nd->flags & KW_NODE_HEAP_ID) {
        const char *p;
        uint32_t len;
        memcpy(&p, nd->id.inl, sizeof(p));
        memcpy(&len, p, sizeof(len));
        return (kw_str_t){p + sizeof(uint32_t), len};
    }
    return (kw_str_t){nd->id.inl, nd->id_len};
}
static inline kw_eslice_t kw__node_fwd(const kw_node_t *nd)
{
    if (nd->flags & KW_NODE_FWD_HEAP)
        return (kw_eslice_t){nd->fwd.heap.v, nd->fwd.heap.n};
    return (kw_eslice_t){nd->fwd.inl, kw__node_ninl(nd)};
}

/* Hash slot: the node's 32-bit key hash (high half) beside its node id (low half), so a
 * probe that meets another key's slot never touches that node record. */
#define KW_SLOT_EMPTY UINT64_MAX
static inline uint32_t kw__slot_node(uint64_t s)
{
    return (uint32_t)s;
}
static inline uint32_t kw__slot_hash(uint64_t s)
{
    return (uint32_t)(s >> 32);
}

/*
 * Relationship attributes (graph_attr.c): a caveat (name index + JSON context, bound to
 * the caveat's program) and/or an expiry. They live in a side table keyed by the edge
 * (resource node, rel, subject node, subject rel), never in the 8-byte edge, so
 * relationships without them cost nothing; KW_NODE_ATTR marks the resources that may
 * have attributed fwd edges, so a query looks the table up only on such nodes.
 */
typedef struct kw_attr {
    uint32_t rnode, snode;
    uint16_t rel, srel;
    uint16_t caveat; /* index into the schema's caveats, or KW_CAVEAT_NONE */
    /* KW_CEL_TRUE / KW_CEL_FALSE when the relationship's own context decides the caveat
     * (the relationship's context wins per field, so no request context can change it:
     * evaluated once, when bound); -1 when the answer depends on parameters it lacks. */
    int8_t fixed;
    int64_t expires_at; /* microseconds since the epoch (UTC), 0: never */
    char *ctx;          /* the caveat context as JSON (NUL-terminated copy), or NULL */
    size_t ctx_len;
    kw_cel_ctx_t *bound; /* ctx bound to the caveat's program (NULL without a caveat) */
} kw_attr_t;

typedef struct kw_attrs {
    kw_attr_t *v; /* dense */
    uint32_t n, cap;
    uint32_t *slots; /* index into v plus one; 0 = empty; power of two (or 0) */
    uint32_t n_slots;
    uint32_t n_expiring; /* entries with an expiry */
} kw_attrs_t;

/* The id-ordered index of one object type (graph_oidx.c, tag-kw-oidx). */
#define KW_OIDX_TOMB UINT32_MAX
typedef struct kw_oidx {
    struct kw_oidx *next;
    uint16_t type;
    uint32_t *main; /* node indices sorted by id; KW_OIDX_TOMB where a node was freed */
    uint32_t n_main, n_tomb;
    uint32_t *delta; /* nodes created since the last merge, sorted by id */
    uint32_t n_delta, cap_delta;
    uint32_t n_changes; /* nodes added or removed since the build */
} kw_oidx_t;

typedef struct kw_graph {
    kw_node_t *nodes;   /* 64-byte aligned inside nodes_mem */
    void *nodes_mem;    /* the allocation holding nodes */
    kw_revblk_t **revs; /* per node: its rev edges, or NULL without any */
    uint32_t n_nodes;   /* slots used (live + free) */
    uint32_t cap_nodes;
    uint32_t free_head; /* KW_NODE_NONE when empty */
    uint32_t n_live;
    uint64_t *slots;             /* hash table: hash << 32 | node; KW_SLOT_EMPTY = empty */
    uint32_t n_slots;            /* power of two */
    size_t n_rels;               /* relationships stored */
    size_t id_bytes;             /* bytes held by heap id strings */
    uint32_t wild[KW_MAX_TYPES]; /* wildcard node `type:*` per type, or KW_NODE_NONE */
    kw_attrs_t attrs;            /* caveats and expiries of the edges that have them */
    kw_oidx_t *oidx; /* id-ordered indices built so far (graph_oidx.c): readers load it with
                        acquire, the builder publishes with release */
} kw_graph_t;

/* The fwd edges of `node` (as resource), sorted by kw__fwd_key. */
static inline kw_eslice_t kw__fwd(const kw_graph_t *g, uint32_t node)
{
    return kw__node_fwd(&g->nodes[node]);
}
/* The rev edges of `node` (as subject), sorted by kw__rev_key. */
static inline kw_eslice_t kw__rev(const kw_graph_t *g, uint32_t node)
{
    const kw_revblk_t *b = g->revs[node];
    return b ? (kw_eslice_t){b->v, b->n} : (kw_eslice_t){NULL, 0};
}

/* Sort keys (tag-kw-edge-order). */
static inline uint64_t kw__fwd_key(uint16_t rel, uint16_t other_rel, uint32_t other)
{
    return ((uint64_t)rel << 48) | ((uint64_t)other_rel << 32) | other;
}
static inline uint64_t kw__rev_key(uint16_t rel, uint16_t other_rel, uint32_t other)
{
    return ((uint64_t)other_rel << 48) | ((uint64_t)rel << 32) | other;
}

/* ---- graph.c ---- */
KW_NODISCARD int kw__graph_init(kw_graph_t *g);
void kw__graph_close(kw_graph_t *g);
uint32_t kw__graph_find(const kw_graph_t *g, uint16_t type, const char *id, size_t len);
/* Two independent lookups with their cache misses overlapped (Check's resource and
 * subject). out[i] is KW_NODE_NONE when (type[i], id[i]) is not in the graph. */
void kw__graph_find2(const kw_graph_t *g, const uint16_t type[2], const kw_str_t id[2],
                     uint32_t out[2]);
/* Finds or creates the node; KW_ENOMEM leaves the graph unchanged. */
KW_NODISCARD int kw__graph_intern(kw_graph_t *g, uint16_t type, const char *id, size_t len,
                                  uint32_t *out);
/* The hash the node table keys (type, id) by, and the two calls above taking it, so a
 * write hashes each id once. h must be kw__graph_hash(type[i], id[i]). */
uint32_t kw__graph_hash(uint16_t type, const char *id, size_t len);
void kw__graph_find2_h(const kw_graph_t *g, const uint16_t type[2], const kw_str_t id[2],
                       const uint32_t h[2], uint32_t out[2]);
KW_NODISCARD int kw__graph_intern_h(kw_graph_t *g, uint16_t type, const char *id, size_t len,
                                    uint32_t h, uint32_t *out);
/* Frees `node` if it has no edges (and is not free already). */
void kw__graph_gc(kw_graph_t *g, uint32_t node);
/* Index range [*lo, *hi) of the fwd edges of `node` with relation `rel`. */
void kw__graph_fwd_range(const kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t *lo,
                         uint32_t *hi);
/* First index in v[0..n) whose fwd (or rev) key is >= key. */
uint32_t kw__graph_lower(const kw_edge_t *v, uint32_t n, uint64_t key, bool fwd);
/* Is the relationship node#rel@other#other_rel stored? */
bool kw__graph_has(const kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                   uint16_t other_rel);
/* Batch protocol: reserve room (fallible), then append (infallible), then finish (merges
 * the appended tails into the sorted arrays; needs a scratch buffer sized by reserve). */
KW_NODISCARD int kw__graph_reserve(kw_graph_t *g, uint32_t node, uint32_t n_fwd, uint32_t n_rev);
void kw__graph_append(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                      uint16_t other_rel);
/* Merges every dirty node in `touched` (duplicates allowed); `scratch` must hold
 * max tail length edges. Does not gc (the caller does, after its deletions). */
void kw__graph_finish(kw_graph_t *g, const uint32_t *touched, size_t n_touched, kw_edge_t *scratch);
/* Ends a bulk build made of kw__graph_reserve + kw__graph_append alone, on a graph no
 * reader can see yet (kw_engine_replace_graph): sorts every node's edge arrays, drops
 * repeated relationships (n_rels counts each once) and clears the batch bookkeeping.
 * Cannot fail. */
void kw__graph_seal(kw_graph_t *g);
/* Removes one relationship (must exist); does not gc. */
void kw__graph_remove(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t other,
                      uint16_t other_rel);
size_t kw__graph_memory(const kw_graph_t *g);

/* ---- graph_oidx.c: the id-ordered index per type (tag-kw-oidx) ---- */

/* The id order of the index and of LookupResources cursors (memcmp, then length). */
int kw__oidx_cmp(kw_str_t a, kw_str_t b);
/* The index of `type`, or NULL when none was built (any lock). */
kw_oidx_t *kw__oidx_find(const kw_graph_t *g, uint16_t type);
/* Builds the index of `type` (graph held still by the caller). KW_ENOMEM. */
KW_NODISCARD int kw__oidx_build(const kw_graph_t *g, uint16_t type, kw_oidx_t **out);
/* Makes a built index visible to readers (one builder at a time). */
void kw__oidx_publish(kw_graph_t *g, kw_oidx_t *x);
/* First position in main (or delta) whose entries are all >= key (> key with after);
 * in main, every live entry before it is < key (<= key). */
uint32_t kw__oidx_main_lower(const kw_graph_t *g, const kw_oidx_t *x, kw_str_t key, bool after);
uint32_t kw__oidx_delta_lower(const kw_graph_t *g, const kw_oidx_t *x, kw_str_t key, bool after);
/* Writer hooks: a node was created (id set) / is about to be freed (id still there). */
void kw__oidx_added(kw_graph_t *g, uint32_t node);
void kw__oidx_removed(kw_graph_t *g, uint32_t node);
void kw__oidx_close(kw_graph_t *g);
size_t kw__oidx_memory(const kw_graph_t *g);

/* ---- graph_attr.c: the attribute side table ---- */

/* The attributes of node#rel@snode#srel, or NULL (fast when node has none). The pointer
 * is valid until the next change of the table. */
static inline bool kw__attr_maybe(const kw_graph_t *g, uint32_t node)
{
    return (g->nodes[node].flags & KW_NODE_ATTR) != 0;
}
const kw_attr_t *kw__attr_find(const kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t snode,
                               uint16_t srel);
/* Is an attribute record expired at `now` (microseconds)? From its expiry instant on. */
static inline bool kw__attr_expired(const kw_attr_t *a, int64_t now)
{
    return a && a->expires_at != 0 && now >= a->expires_at;
}
/* Makes room for `more` new entries (fallible); kw__attr_put of that many then cannot
 * fail. KW_ENOMEM leaves the table as it was. */
KW_NODISCARD int kw__attr_reserve(kw_graph_t *g, uint32_t more);
/* Inserts or replaces the attributes of (a->rnode, a->rel, a->snode, a->srel), taking
 * ownership of a->ctx and a->bound (the replaced ones are freed). Room reserved. */
void kw__attr_put(kw_graph_t *g, const kw_attr_t *a);
/* Removes and frees the attributes of the edge, if any. */
void kw__attr_del(kw_graph_t *g, uint32_t node, uint16_t rel, uint32_t snode, uint16_t srel);
/* Frees what one record owns (not the record). */
void kw__attr_release(kw_attr_t *a);
/* Frees the whole table. */
void kw__attr_close(kw_attrs_t *t);
/* Heap bytes held by the table and its contexts. */
size_t kw__attr_memory(const kw_attrs_t *t);

/* ---- check.c ---- */

typedef struct kw_memo_ent {
    uint64_t k1;   /* node << 32 | rel << 16 | srel */
    uint32_t k2;   /* subject node */
    uint16_t k3;   /* subject type */
    uint8_t state; /* 0 empty, then MEMO_* (check.c) */
    uint8_t depth;
    uint64_t miss; /* MEMO_COND: the missing caveat parameters (bits of kw_ck_t.names) */
} kw_memo_ent_t;

#define KW_MEMO_INLINE 64
/* Distinct missing caveat parameter names one check can report (bits of a uint64_t). */
#define KW_CK_MAX_NAMES 64
/* Caveats of a schema whose bound request contexts live inside the check context. */
#define KW_CK_REQ_INLINE 8

/* The three values of a check (tag-kw-check-3v): a caveat whose parameters are missing
 * makes a result conditional, and a conditional never becomes a yes. */
#define KW_CK_NO 0
#define KW_CK_YES 1
#define KW_CK_COND 2

/* One check context: the subject plus the memo table, reusable across checks of the
 * same request (bulk, lookups) as long as the request context and the time stay. */
typedef struct kw_ck {
    const kw_graph_t *g;
    const kw_schema_t *s;
    uint32_t snode; /* KW_NODE_NONE when the subject object is not in the graph */
    uint16_t stype, srel;
    uint32_t swild; /* wildcard node of the subject type, or KW_NODE_NONE */
    int depth, neg;
    int frame_neg[KW_MAX_CHECK_DEPTH + 1];
    kw_memo_ent_t *memo;
    uint32_t memo_cap, memo_used;
    kw_memo_ent_t inline_memo[KW_MEMO_INLINE];
    kw_diag_t *diag;
    uint32_t steps; /* (node, rel) evaluations of the current kw__ck_check */
    /* Caveats and expiry. */
    const uint8_t *rel_attrs; /* per (type, rel) of the model: may its edges have attributes?
                                 (NULL: assume so) */
    const uint32_t *rel_base; /* index of (type, 0) into rel_attrs */
    int64_t now;        /* the query's instant (microseconds); expiries at or before it hide */
    kw_str_t req_json;  /* the request context (len 0: none) */
    kw_cel_ctx_t **req; /* per caveat of s: req_json bound to its program (lazily), or NULL */
    uint8_t *req_done;  /* per caveat: bound already */
    kw_cel_ctx_t *req_inline[KW_CK_REQ_INLINE]; /* req and req_done for small schemas */
    uint8_t req_done_inline[KW_CK_REQ_INLINE];
    kw_buf_t scratch;                /* kw_cel_eval's missing names */
    kw_str_t names[KW_CK_MAX_NAMES]; /* missing parameter names met (bits of miss masks) */
    uint32_t n_names;
    uint64_t miss; /* after kw__ck_check answered KW_CK_COND: its missing names */
} kw_ck_t;

void kw__ck_init(kw_ck_t *c, const kw_graph_t *g, const kw_schema_t *s, kw_diag_t *diag);
void kw__ck_close(kw_ck_t *c);
/* Sets the query's instant and request context (JSON object text, len 0: none; borrowed
 * until kw__ck_close or the next call). A change forgets the memo. */
void kw__ck_context(kw_ck_t *c, int64_t now, kw_str_t req_json);
void kw__ck_subject(kw_ck_t *c, uint32_t snode, uint16_t stype, uint16_t srel);
/* KW_CK_YES, KW_CK_NO, KW_CK_COND (c->miss says which parameters are missing), or a
 * negative KW_E* (never "yes" on error): KW_EDEPTH, KW_ECYCLE, KW_ENOMEM, KW_EINVAL (a
 * caveat that fails to evaluate or a request context that does not bind), or KW_EBUDGET
 * past KW_MAX_CHECK_STEPS evaluations (c->steps counts those of this call). */
KW_NODISCARD int kw__ck_check(kw_ck_t *c, uint32_t node, uint16_t rel);
/* Appends the names of `mask` to out, comma-separated, in the order they were met. */
void kw__ck_missing(const kw_ck_t *c, uint64_t mask, kw_buf_t *out);

/* For an object with no relationships at all: does it have `rel` for the subject set
 * (same object)#srel? Only "a subject set has itself" can make it true, reached through
 * same-object references. 1 yes, 0 no, or KW_EBUDGET (diag set) when the schema walk
 * passes KW_MAX_CHECK_STEPS paths. */
KW_NODISCARD int kw__ck_absent(const kw_schema_t *s, uint16_t type, uint16_t rel, uint16_t srel,
                               kw_diag_t *diag);

#endif
