/*
 * store/audit_int.h - what audit.c (dispatch, hashing, verification) shares with the
 * backends' audit files (sqlite_audit.c, pg_audit.c): their ops table and the base of an
 * import.
 *
 * An append is the backend's: read the head (locking it), kw__audit_seal the event on top
 * of it, insert the event, move the head. A backend embeds `struct kw_store_import` as
 * the first member of its import handle.
 */
#ifndef KW_STORE_AUDIT_INT_H
#define KW_STORE_AUDIT_INT_H

#include "store_int.h"

struct kw_store_import {
    kw_store_t *store;
    int failed; /* sticky: the first error; commit then refuses */
};

typedef struct kw__store_audit_ops {
    int (*append)(kw_store_tx_t *tx, kw_audit_event_t *ev, kw_diag_t *diag);
    int (*tx_meta_set)(kw_store_tx_t *tx, const char *key, kw_str_t val);
    int (*list)(kw_store_t *s, const kw_audit_filter_t *f, int64_t after_seq, size_t limit,
                kw_arena_t *a, kw_audit_event_t **out, size_t *n_out);
    int (*scan)(kw_store_t *s, kw_audit_cb cb, void *ud, kw_audit_head_t *head);
    int (*counts)(kw_store_t *s, kw_store_counts_t *out);
    int (*dump)(kw_store_t *s, const kw_store_sink_t *sink, void *ud, kw_store_counts_t *counts,
                kw_audit_head_t *head, kw_diag_t *diag);
    int (*import_begin)(kw_store_t *s, kw_store_import_t **out, kw_diag_t *diag);
    int (*import_meta)(kw_store_import_t *imp, kw_str_t key, kw_str_t val);
    int (*import_agent)(kw_store_import_t *imp, const kw_agent_t *ag);
    int (*import_key)(kw_store_import_t *imp, const kw_apikey_t *k);
    int (*import_rel)(kw_store_import_t *imp, const kw_rel_t *rel);
    int (*import_audit)(kw_store_import_t *imp, const kw_audit_event_t *ev);
    int (*import_commit)(kw_store_import_t *imp, kw_revision_t rev, const kw_audit_head_t *head,
                         kw_diag_t *diag);
    void (*import_abort)(kw_store_import_t *imp);
} kw__store_audit_ops_t;

extern const kw__store_audit_ops_t kw__sq_audit_ops;
extern const kw__store_audit_ops_t kw__pg_audit_ops;

/* Puts ev on top of `head`: seq = head->seq + 1, prev_hash = head->hash, revision = rev,
 * hash computed; empty detail becomes "{}". */
void kw__audit_seal(kw_audit_event_t *ev, const kw_audit_head_t *head, kw_revision_t rev);

/* The meta keys a copy leaves out: "revision" (a SQLite meta row, the counter itself). */
static inline bool kw__audit_meta_internal(kw_str_t key)
{
    return key.len == 8 && memcmp(key.ptr, "revision", 8) == 0;
}

#endif
