/*
 * api/v1svc_int.h - what the files of the v1 service layer share (not a header for codecs:
 * they include v1svc.h): the read gate that honours atExactSnapshot, and cursors.
 *
 * Ownership: a kw__v1_pos_t holds a decoded cursor position in its own bytes; its
 *   strings point into it. kw__v1_shape_t is a scratch buffer the caller frees.
 * Threads: reentrant.
 * Errors: as v1svc.h (KW_OK or a negative KW_E* with the status filled).
 */
#ifndef KW_API_V1SVC_INT_H
#define KW_API_V1SVC_INT_H

#include "api_int.h"
#include "v1svc.h"
#include "v1svc_more.h"

/* ---- reading the engine at the request's consistency (v1svc.c) ---- */

typedef struct kw__v1_read {
    bool held;           /* the sync write mutex is held (atExactSnapshot at the current one) */
    kw_snapshot_t *snap; /* atExactSnapshot at an older revision: its snapshot engine */
    kw_engine_t *engine; /* the engine to read: svc->engine or the snapshot's */
} kw__v1_read_t;

/* Right before a read of the engine: r->engine is the engine to ask and *rev gets the
 * revision the answer is at. Without atExactSnapshot that is the live engine at the applied
 * revision, read before the engine is. With it: at the applied revision, the sync write
 * mutex is taken (no write or catch-up can move the graph during the one engine call) and
 * the live engine answers; at an older revision within the engine's snapshot window
 * (authz.h, kw_engine_snapshot), a snapshot engine of that revision answers, with nothing of
 * the live engine held; older than the window: OUT_OF_RANGE "invalid revision: revision has
 * expired", SpiceDB's answer, saying where the window starts and why (nothing held). Pair
 * every KW_OK with kw__v1_read_end right after the engine call(s). */
KW_NODISCARD int kw__v1_read_begin(kw_api_t *svc, const kw_v1_consistency_t *c, kw__v1_read_t *r,
                                   kw_revision_t *rev, kw_v1_status_t *st);
/* What a read needs of an older revision: the graph (a snapshot engine), the schema only
 * (the same within the window: nothing is built; r->engine is the live one), or the
 * current revision only (a read of the store, which keeps no older state: an older one is
 * refused with OUT_OF_RANGE saying so). */
enum { KW__V1_AT_GRAPH = 0, KW__V1_AT_SCHEMA, KW__V1_AT_CURRENT };
KW_NODISCARD int kw__v1_read_begin_for(kw_api_t *svc, const kw_v1_consistency_t *c,
                                       kw__v1_read_t *r, kw_revision_t *rev, int need,
                                       kw_v1_status_t *st);
void kw__v1_read_end(kw_api_t *svc, kw__v1_read_t *r);

/* ---- cursors (v1svc.c) ---- */

/* Which RPC minted a cursor (part of what it binds). */
enum {
    KW__V1_RPC_READ = 1,
    KW__V1_RPC_LOOKUP_RESOURCES = 2,
    KW__V1_RPC_LOOKUP_SUBJECTS = 3,
};

#define KW__V1_SHAPE_LEN 16
#define KW__V1_POS_MAX 6
#define KW__V1_CURSOR_RAW_MAX 4096
#define KW__V1_MAC_LEN 16
#define KW__V1_MAC_KEY_LEN 16
#define KW__V1_HEAD_B64 32

/* The request's shape: its fields but the cursor, the limit and the consistency, each
 * added length-prefixed, then hashed under the keyring. */
typedef struct kw__v1_shape {
    kw_buf_t buf;
} kw__v1_shape_t;
void kw__v1_shape_init(kw__v1_shape_t *s, int rpc);
void kw__v1_shape_str(kw__v1_shape_t *s, kw_str_t v);
void kw__v1_shape_u32(kw__v1_shape_t *s, uint32_t v);
/* Hashes the shape into out (and frees its buffer). KW_ENOMEM when building it failed. */
KW_NODISCARD int kw__v1_shape_done(kw_api_t *svc, kw__v1_shape_t *s, uint8_t out[KW__V1_SHAPE_LEN]);

/* A position in an RPC's order: up to KW__V1_POS_MAX strings. */
typedef struct kw__v1_pos {
    kw_str_t f[KW__V1_POS_MAX];
    size_t n;
    kw_revision_t rev;
    uint8_t raw[KW__V1_CURSOR_RAW_MAX];
} kw__v1_pos_t;

/* Mints the cursors of one stream (one RPC, request shape and revision): init derives the
 * cursor key, encodes the constant head once and runs SipHash over the head's first 24
 * bytes once (sip: the state after them), so kw__v1_mint hashes only the head's last 2
 * bytes and the position, and base64-encodes the position, per result. It holds key
 * material (key, sip): wipe it when done. */
typedef struct kw__v1_minter {
    uint8_t key[KW__V1_MAC_KEY_LEN];
    uint64_t sip[4];
    uint8_t head[KW__V1_SHAPE_LEN + 10];
    char head_b64[KW__V1_HEAD_B64];
} kw__v1_minter_t;
void kw__v1_minter_init(kw_api_t *svc, kw__v1_minter_t *m, int rpc,
                        const uint8_t shape[KW__V1_SHAPE_LEN], kw_revision_t rev);
void kw__v1_minter_wipe(kw__v1_minter_t *m);
/* The cursor's text (base64url, NUL-terminated) for position f[0..n), into `a`. NULL on
 * OOM (or a position too long to fit, which ids never are). */
char *kw__v1_mint(const kw__v1_minter_t *m, kw_arena_t *a, const kw_str_t *f, size_t n);
/* The same for one cursor (init, mint, wipe): for a cursor per batch, not per result. */
char *kw__v1_cursor_make(kw_api_t *svc, kw_arena_t *a, int rpc,
                         const uint8_t shape[KW__V1_SHAPE_LEN], kw_revision_t rev,
                         const kw_str_t *f, size_t n);
/* Decodes and verifies `cursor` for `rpc` and `shape` into *pos (which must expect
 * exactly `n` fields): KW_OK, or KW_EINVAL with SpiceDB's answer in st. */
KW_NODISCARD int kw__v1_cursor_open(kw_api_t *svc, kw_v1_cursor_t cursor, int rpc,
                                    const uint8_t shape[KW__V1_SHAPE_LEN], size_t n,
                                    kw__v1_pos_t *pos, kw_v1_status_t *st);

/* Bytewise order of two strings (a shorter prefix first): the order of every stream. */
int kw__v1_cmp(kw_str_t a, kw_str_t b);

/* A limit over its maximum: INVALID_ARGUMENT / ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT. */
KW_NODISCARD int kw__v1_limit_check(uint32_t limit, uint32_t max, kw_v1_status_t *st);
/* A feature keyward does not implement: UNIMPLEMENTED naming it and why. */
KW_NODISCARD int kw__v1_unimplemented(kw_v1_status_t *st, const char *what, const char *why);

/* ---- names and ids against SpiceDB's patterns (v1svc_names.c) ---- */

/* Collects the violations of one request, in field order; kw__v1_names_done turns them
 * into SpiceDB's INVALID_ARGUMENT ("validation error: <path>: ..." or "validation
 * errors:" and one " - " line each). Paths are proto field names; `path` arguments are
 * prefixes ending in '.' (or ""). Too many violations end the list with " - ...". */
typedef struct kw__v1_names {
    size_t n;
    size_t len;
    bool full;
    char text[KW_V1_STATUS_MSG - 24];
} kw__v1_names_t;

typedef enum {
    KW__V1_NAME_TYPE,     /* an object type (required) */
    KW__V1_NAME_TYPE_OPT, /* an object type or "" */
    KW__V1_NAME_REL,      /* a relation or permission (required) */
    KW__V1_NAME_REL_OPT,  /* a relation or permission or "" */
} kw__v1_name_kind_t;

void kw__v1_names_init(kw__v1_names_t *v);
/* A top-level string field named `name`. */
void kw__v1_names_str(kw__v1_names_t *v, const char *name, kw_str_t s, kw__v1_name_kind_t kind);
void kw__v1_names_object(kw__v1_names_t *v, const char *path, kw_object_t o);
void kw__v1_names_subject(kw__v1_names_t *v, const char *path, const kw_subject_t *s);
void kw__v1_names_rel(kw__v1_names_t *v, const char *path, const kw_rel_t *r);
/* Does every name of r match (no message built: the fast path of a valid relationship)? */
bool kw__v1_names_rel_ok(const kw_rel_t *r);
/* A RelationshipFilter (and its optional_resource_id_prefix, which the service layer keeps
 * beside the filter). */
void kw__v1_names_filter(kw__v1_names_t *v, const char *path, const kw_filter_t *f,
                         kw_str_t id_prefix);
/* optional_preconditions[i].filter of a write or delete. */
void kw__v1_names_pre(kw__v1_names_t *v, const kw_precondition_t *pre, size_t n);
/* KW_OK when nothing was collected, else KW_EINVAL with st filled. */
KW_NODISCARD int kw__v1_names_done(const kw__v1_names_t *v, kw_v1_status_t *st);
/* Each RPC's request, first thing in the RPC: KW_OK or KW_EINVAL with st filled. */
KW_NODISCARD int kw__v1_names_check(const kw_v1_check_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_check_bulk(const kw_v1_bulk_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_expand(const kw_v1_expand_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_lr(const kw_v1_lr_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_ls(const kw_v1_ls_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_read(const kw_v1_read_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_write(const kw_v1_write_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_delete(const kw_v1_delete_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_export(const kw_v1_export_req_t *r, kw_v1_status_t *st);
KW_NODISCARD int kw__v1_names_watch(const kw_v1_watch_req_t *r, kw_v1_status_t *st);

#endif
